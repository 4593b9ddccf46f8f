// What the tests share: a real `roomstate serve` process, tokens minted by the roomstate
// CLI (as an app backend would mint them; no CryptoKit, so this runs on Linux too), a
// listener that records what it hears, and waiting for a condition with a generous bound.
// Mirrors bindings/kotlin/src/test/kotlin/io/roomstate/Fixtures.kt.
import Foundation
import RoomState
import RoomStateTesting
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let apiKey = "swiftkey"
let apiSecret = "swiftsecret"

/// The roomstate CLI with this suite's API key.
@discardableResult
func roomstateCLI(_ arguments: [String], apiSecret secret: String = apiSecret) throws -> String {
    try RoomStateTesting.roomstateCLI(arguments, apiKey: apiKey, apiSecret: secret)
}

/// This suite's key, under a name `TestServer`'s own properties do not hide.
private let suiteKey = (key: apiKey, secret: apiSecret)

extension TestServer {
    /// A server that accepts this suite's API key.
    convenience init(_ extraArguments: [String] = []) throws {
        try self.init(apiKey: suiteKey.key, apiSecret: suiteKey.secret, extraArguments: extraArguments)
    }
}

/// An access token minted by `roomstate token create`.
func token(
    _ identity: String,
    room: String = "swift-room",
    canUpdateMetadata: Bool = true,
    readOnlyStore: Bool = false,
    hidden: Bool = false,
    secret: String = apiSecret
) throws -> String {
    var arguments = ["token", "create", "--room", room, "--identity", identity]
    if canUpdateMetadata { arguments.append("--can-update-metadata") }
    if readOnlyStore { arguments.append("--read-only-store") }
    if hidden { arguments.append("--hidden") }
    return try roomstateCLI(arguments, apiSecret: secret)
}

/// Options that reconnect fast; `requestTimeoutMs` shorter for the timeout test.
func fastOptions(requestTimeoutMs: UInt64 = 10_000, fallbackUrls: [String] = []) -> RoomConnectOptions {
    RoomConnectOptions(
        requestTimeoutMs: requestTimeoutMs, reconnectBackoffMinMs: 20, reconnectBackoffMaxMs: 200, fallbackUrls: fallbackUrls
    )
}

/// A value shared between a test and the callbacks or tasks it starts.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func callAsFunction() -> Value {
        lock.lock()
        defer { lock.unlock() }
        return value
    }

    func update<T>(_ change: (inout Value) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return change(&value)
    }
}

/// Records every call, for assertions.
final class Recorder: DefaultRoomListener, KeyChangeListener, @unchecked Sendable {
    private let recorded = Locked<[String]>([])
    private let threadNames = Locked<[String]>([])
    private let connectionStates = Locked<[RoomConnectionState]>([])
    var events: [String] { recorded() }
    /// Every connection state heard, in order.
    var states: [RoomConnectionState] { connectionStates() }
    var threads: [String] { threadNames() }

    private func record(_ event: String) { recorded.update { $0.append(event) } }

    func onKeyChanged(key: String, entry: StoreEntry?) throws {
        threadNames.update { $0.append(currentThreadName()) }
        record("\(key)=\(entry?.valueJson ?? "nil")")
    }

    override func onSessionStoreAvailable(store: SessionStore) throws { record("store-available") }
    override func onConnectionStateChanged(state: RoomConnectionState) throws {
        connectionStates.update { $0.append(state) }
        record("state:\(state)")
    }
    override func onParticipantJoined(participant: RoomParticipant) throws { record("joined:\(participant.identity)") }
    override func onParticipantLeft(participant: RoomParticipant) throws { record("left:\(participant.identity)") }
    override func onAttributesChanged(participant: RoomParticipant, changedKeys: [String]) throws {
        record("attributes:\(participant.identity):\(changedKeys.sorted())")
    }
    override func onMetadataChanged(participant: RoomParticipant, oldMetadata: String, newMetadata: String) throws {
        record("metadata:\(participant.identity):\(oldMetadata)->\(newMetadata)")
    }

    /// Waits until `event` was recorded; fails after a generous bound.
    func wait(for event: String, file: StaticString = #filePath, line: UInt = #line) async throws {
        try await eventually("\(event) in \(events)", file: file, line: line) { self.events.contains(event) }
    }

    func keyEvents(_ key: String) -> [String] { events.filter { $0.hasPrefix("\(key)=") } }
    func count(_ event: String) -> Int { events.filter { $0 == event }.count }
}

/// A weak reference, for checking that nothing holds an object any more.
struct Weak<Object: AnyObject> {
    weak var object: Object?

    init(_ object: Object) { self.object = object }
}

/// Codable, as an app's values would be.
struct Pinned: Codable, Equatable, Sendable {
    let text: String
    let by: String
}

/// Runs `body` and returns the error it threw, or fails if it threw none.
func thrown<T>(
    file: StaticString = #filePath,
    line: UInt = #line,
    _ body: () async throws -> T
) async -> (any Error)? {
    do {
        _ = try await body()
        XCTFail("expected an error", file: file, line: line)
        return nil
    } catch {
        return error
    }
}
