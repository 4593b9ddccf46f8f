// Mirrors bindings/kotlin's JUnit suite on macOS: a real `roomstate serve` process (set
// ROOMSTATE_BIN), tokens signed with CryptoKit. Not run in this repository's CI, which has
// no Swift toolchain.
import CryptoKit
import Foundation
import XCTest
@testable import RoomState

private let apiKey = "swiftkey"
private let apiSecret = "swiftsecret"

final class TestServer {
    let process = Process()
    let url: String

    init() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config = dir.appendingPathComponent("roomstate.toml")
        try "bind = \"127.0.0.1:0\"\n[keys]\n\(apiKey) = \"\(apiSecret)\"\n".write(to: config, atomically: true, encoding: .utf8)
        guard let binary = ProcessInfo.processInfo.environment["ROOMSTATE_BIN"] else {
            throw XCTSkip("set ROOMSTATE_BIN to the roomstate binary")
        }
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--config", config.path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        var line = Data()
        while let byte = try output.fileHandleForReading.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8) {
            line.append(byte)
        }
        url = String(decoding: line, as: UTF8.self).replacingOccurrences(of: "roomstate listening on ", with: "")
    }

    deinit { process.terminate() }
}

func token(_ identity: String, room: String = "swift-room", canUpdateMetadata: Bool = true) -> String {
    func base64url(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
    let header = base64url(try! JSONSerialization.data(withJSONObject: ["alg": "HS256", "typ": "JWT"]))
    let claims: [String: Any] = [
        "iss": apiKey, "sub": identity, "exp": Int(Date().timeIntervalSince1970) + 3600,
        "video": ["room": room, "roomJoin": true, "canUpdateOwnMetadata": canUpdateMetadata],
    ]
    let payload = base64url(try! JSONSerialization.data(withJSONObject: claims))
    let signature = HMAC<SHA256>.authenticationCode(for: Data("\(header).\(payload)".utf8), using: SymmetricKey(data: Data(apiSecret.utf8)))
    return "\(header).\(payload).\(base64url(Data(signature)))"
}

final class Recorder: DefaultRoomListener, KeyChangeListener, @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [String] = []
    var events: [String] { lock.withLock { recorded } }
    private func record(_ event: String) { lock.withLock { recorded.append(event) } }

    func onKeyChanged(key: String, entry: StoreEntry?) throws { record("\(key)=\(entry?.valueJson ?? "nil")") }
    override func onSessionStoreAvailable(store: SessionStore) throws { record("store-available") }
    override func onAttributesChanged(participant: Participant, changedKeys: [String]) throws {
        record("attributes:\(participant.identity):\(changedKeys.sorted())")
    }

    func wait(for event: String) async throws {
        for _ in 0..<1500 where !events.contains(event) { try await Task.sleep(nanoseconds: 10_000_000) }
        XCTAssertTrue(events.contains(event), "\(event) not in \(events)")
    }
}

struct Pinned: Codable, Equatable, Sendable { let text: String }

private func options() -> ConnectOptions {
    ConnectOptions(requestTimeoutMs: 10_000, connectTimeoutMs: 10_000, pingIntervalMs: 5_000,
                   pingTimeoutMs: 15_000, reconnectBackoffMinMs: 20, reconnectBackoffMaxMs: 200)
}

final class RoomStateTests: XCTestCase {
    func testStoreAvailableAndEveryListenerGetsTheCurrentValue() async throws {
        let server = try TestServer()
        let aliceHeard = Recorder()
        let alice = try await Room.connect(url: server.url, token: token("alice"), listener: aliceHeard, options: options())
        try await aliceHeard.wait(for: "store-available")
        let bob = try await Room.connect(url: server.url, token: token("bob"), listener: Recorder(), options: options())
        try await alice.sessionStore().set(Pinned(text: "hi"), forKey: "pinned")
        let first = Recorder(), second = Recorder()
        _ = try bob.sessionStore().addKeyChangeListener(keys: ["pinned"], listener: first)
        try await first.wait(for: #"pinned={"text":"hi"}"#)
        _ = try bob.sessionStore().addKeyChangeListener(keys: ["pinned"], listener: second)
        try await second.wait(for: #"pinned={"text":"hi"}"#)
        await alice.disconnect()
        await bob.disconnect()
    }

    func testRemovedObserversAreNotCalledAndStreamsDeliverValues() async throws {
        let server = try TestServer()
        let alice = try await Room.connect(url: server.url, token: token("alice"), listener: Recorder(), options: options())
        let store = alice.sessionStore()
        let removed = Recorder()
        let handle = try store.addKeyChangeListener(keys: ["k"], listener: removed)
        try await removed.wait(for: "k=nil")
        store.removeObserver(handle)
        var values = store.values(forKey: "k", as: Pinned.self).makeAsyncIterator()
        XCTAssertNil(try await values.next() ?? nil)
        try await store.set(Pinned(text: "one"), forKey: "k")
        XCTAssertEqual(try await values.next() ?? nil, Pinned(text: "one"))
        XCTAssertEqual(removed.events, ["k=nil"])
        await alice.disconnect()
    }

    func testCompareAndSetAndTypedErrors() async throws {
        let server = try TestServer()
        let alice = try await Room.connect(url: server.url, token: token("alice"), listener: Recorder(), options: options())
        let store = alice.sessionStore()
        _ = try await store.compareAndSet(key: "lock", expectedVersion: 0, valueJson: #""alice""#)
        do {
            _ = try await store.compareAndSet(key: "lock", expectedVersion: 0, valueJson: #""bob""#)
            XCTFail("expected a conflict")
        } catch RoomError.Conflict(let current) {
            XCTAssertEqual(current?.valueJson, #""alice""#)
        }
        do {
            _ = try await store.set(key: "big", valueJson: "\"\(String(repeating: "x", count: 2000))\"")
            XCTFail("expected a limit error")
        } catch RoomError.LimitExceeded(let limit, let max, _, _) {
            XCTAssertEqual(limit, .valueBytes)
            XCTAssertEqual(max, 1024)
        }
        let viewer = try await Room.connect(url: server.url, token: token("viewer", canUpdateMetadata: false), listener: Recorder(), options: options())
        do {
            _ = try await viewer.localParticipant().setMetadata(metadata: "x")
            XCTFail("expected not allowed")
        } catch RoomError.NotAllowed {}
        await alice.disconnect()
        await viewer.disconnect()
    }

    func testAttributesReachASecondClient() async throws {
        let server = try TestServer()
        let alice = try await Room.connect(url: server.url, token: token("alice"), listener: Recorder(), options: options())
        let bobHeard = Recorder()
        let bob = try await Room.connect(url: server.url, token: token("bob"), listener: bobHeard, options: options())
        _ = try await alice.localParticipant().setAttributes(attributes: ["hand": "up"])
        try await bobHeard.wait(for: "attributes:alice:[\"hand\"]")
        await alice.disconnect()
        await bob.disconnect()
    }
}
