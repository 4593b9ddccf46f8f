// The engine through its Swift bindings against a real `roomstate serve` process: what
// bindings/kotlin's JUnit suite covers (RoomStateTest.kt), and more.
import Foundation
import RoomStateTesting
import RoomState
import XCTest

/// Starts a server per test and leaves every room it joined afterwards.
class ServerTestCase: XCTestCase, @unchecked Sendable {
    private(set) var server: TestServer!
    private let joined = Locked<[RoomConnection]>([])

    override func setUp() async throws {
        server = try TestServer()
    }

    override func tearDown() async throws {
        for room in joined.update({ rooms in defer { rooms.removeAll() }; return rooms }) {
            await room.disconnect()
        }
        server?.stop()
        server = nil
    }

    func join(
        _ identity: String,
        listener: RoomListener = Recorder(),
        canUpdateMetadata: Bool = true,
        readOnlyStore: Bool = false,
        hidden: Bool = false,
        options: RoomConnectOptions = fastOptions()
    ) async throws -> RoomConnection {
        let token = try token(identity, canUpdateMetadata: canUpdateMetadata, readOnlyStore: readOnlyStore, hidden: hidden)
        let room = try await RoomConnection.connect(url: server.url, token: token, listener: listener, options: options)
        joined.update { $0.append(room) }
        return room
    }
}

final class RoomStateTests: ServerTestCase, @unchecked Sendable {
    func testSessionStoreAvailableFiresWithAUsableStore() async throws {
        let heard = Recorder()
        let room = try await join("alice", listener: heard)
        try await heard.wait(for: "store-available")
        _ = try await room.sessionStore().set(key: "k", valueJson: "1")
        let entry = try await room.sessionStore().get(key: "k")
        XCTAssertEqual(entry?.valueJson, "1")
        XCTAssertTrue(room.sessionId()?.hasPrefix("SE_") == true)
        XCTAssertEqual(room.connectionState(), .connected)
    }

    func testSessionStoreAvailableAgainForANewSession() async throws {
        let heard = Recorder()
        let room = try await join("alice", listener: heard)
        try await heard.wait(for: "store-available")
        let firstSession = try XCTUnwrap(room.sessionId())
        _ = try await room.sessionStore().set(key: "k", valueJson: "1")
        // A restarted in-memory server forgot the session: the engine reconnects, cannot
        // resume, joins afresh, and the new session's store is announced.
        try server.restart()
        try await eventually("a second store-available: \(heard.events)") { heard.count("store-available") == 2 }
        let secondSession = try XCTUnwrap(room.sessionId())
        XCTAssertNotEqual(firstSession, secondSession)
        let gone = try await room.sessionStore().get(key: "k")
        XCTAssertNil(gone, "the new session's store starts empty")
        _ = try await room.sessionStore().set(key: "k", valueJson: "2")
        let entry = try await room.sessionStore().get(key: "k")
        XCTAssertEqual(entry?.valueJson, "2")
    }

    func testEveryListenerGetsTheCurrentValueFirstThenEachChangeOnce() async throws {
        let alice = try await join("alice")
        let bob = try await join("bob")
        _ = try await alice.sessionStore().set(key: "pinned", valueJson: #"{"text":"hi"}"#)
        let first = Recorder(), second = Recorder()
        _ = try bob.sessionStore().addKeyChangeListener(keys: ["pinned"], listener: first)
        try await first.wait(for: #"pinned={"text":"hi"}"#)
        // A second listener on a key already observed still gets the current value.
        _ = try bob.sessionStore().addKeyChangeListener(keys: ["pinned"], listener: second)
        try await second.wait(for: #"pinned={"text":"hi"}"#)
        _ = try await alice.sessionStore().set(key: "pinned", valueJson: #"{"text":"bye"}"#)
        for listener in [first, second] {
            try await listener.wait(for: #"pinned={"text":"bye"}"#)
            XCTAssertEqual(listener.keyEvents("pinned"), [#"pinned={"text":"hi"}"#, #"pinned={"text":"bye"}"#])
        }
        #if os(Linux)
        XCTAssertEqual(Set(first.threads), ["roomstate-liste"], "one engine thread calls every listener (comm is 15 bytes)")
        #endif
    }

    func testARemovedObserverIsNotCalledAgain() async throws {
        let alice = try await join("alice")
        let store = alice.sessionStore()
        let removed = Recorder(), kept = Recorder()
        let handle = try store.addKeyChangeListener(keys: ["k"], listener: removed)
        _ = try store.addKeyChangeListener(keys: ["k"], listener: kept)
        let closureCalls = Locked<[String]>([])
        let closure = try store.observeChanges(forKeys: ["k"]) { key, entry in
            closureCalls.update { $0.append("\(key)=\(entry?.valueJson ?? "nil")") }
        }
        try await removed.wait(for: "k=nil")
        try await eventually("the closure observer's first call: \(closureCalls())") { closureCalls() == ["k=nil"] }
        store.removeKeyChangeListener(handle: handle)
        store.removeObserver(closure)
        for n in 1...20 {
            _ = try await store.set(key: "k", valueJson: "\(n)")
        }
        try await kept.wait(for: "k=20")
        XCTAssertEqual(removed.keyEvents("k"), ["k=nil"])
        XCTAssertEqual(closureCalls(), ["k=nil"])
        XCTAssertEqual(kept.keyEvents("k"), ["k=nil"] + (1...20).map { "k=\($0)" })
    }

    func testSetGetDeleteAndCodableValues() async throws {
        let alice = try await join("alice")
        let bob = try await join("bob")
        let version = try await alice.sessionStore().set(Pinned(text: "Welcome", by: "alice"), forKey: "pinned")
        let entry = try await bob.sessionStore().get(key: "pinned")
        let found = try XCTUnwrap(entry)
        XCTAssertEqual(found.version, version)
        XCTAssertEqual(found.updatedBy, "alice")
        XCTAssertEqual(try found.decode(Pinned.self), Pinned(text: "Welcome", by: "alice"))
        let value = try await bob.sessionStore().value(forKey: "pinned", as: Pinned.self)
        XCTAssertEqual(value, Pinned(text: "Welcome", by: "alice"))
        let read = try await bob.sessionStore().read(key: "pinned")
        XCTAssertEqual(read.entry?.version, version)
        XCTAssertFalse(read.mayBeStale, "a connected engine reading from one node")
        // Codable compare-and-set: by version, nil deletes.
        let next = try await bob.sessionStore().compareAndSet(Pinned(text: "Bye", by: "bob"), forKey: "pinned", expectedVersion: version)
        XCTAssertGreaterThan(next, version)
        let changed = try await alice.sessionStore().value(forKey: "pinned", as: Pinned.self)
        XCTAssertEqual(changed, Pinned(text: "Bye", by: "bob"))
        try await bob.sessionStore().delete(key: "pinned")
        let deleted = try await alice.sessionStore().get(key: "pinned")
        XCTAssertNil(deleted)
        let missing = try await alice.sessionStore().value(forKey: "pinned", as: Pinned.self)
        XCTAssertNil(missing)
        let again = try await alice.sessionStore().compareAndSet(Pinned(text: "again", by: "alice"), forKey: "pinned", expectedVersion: 0)
        _ = try await alice.sessionStore().compareAndSet(Pinned?.none, forKey: "pinned", expectedVersion: again)
        let deletedAgain = try await bob.sessionStore().get(key: "pinned")
        XCTAssertNil(deletedAgain)
        // A value that is not a Pinned does not decode as one.
        _ = try await alice.sessionStore().set(key: "pinned", valueJson: "42")
        let notPinned = await thrown { try await bob.sessionStore().value(forKey: "pinned", as: Pinned.self) }
        XCTAssertTrue(notPinned is DecodingError, "\(String(describing: notPinned))")
    }

    func testCompareAndSetFromConcurrentTasksHasExactlyOneWinner() async throws {
        var clients: [RoomConnection] = []
        for n in 0..<5 {
            clients.append(try await join("p\(n)"))
        }
        let outcomes = await withTaskGroup(of: (Int, Result<UInt64, any Error>).self) { group in
            for (n, client) in clients.enumerated() {
                group.addTask {
                    do {
                        return (n, .success(try await client.sessionStore().compareAndSet(key: "lock", expectedVersion: 0, valueJson: "\"p\(n)\"")))
                    } catch {
                        return (n, .failure(error))
                    }
                }
            }
            var outcomes: [(Int, Result<UInt64, any Error>)] = []
            for await outcome in group { outcomes.append(outcome) }
            return outcomes
        }
        let winners = outcomes.compactMap { n, result in (try? result.get()).map { (n, $0) } }
        XCTAssertEqual(winners.count, 1, "exactly one winner: \(outcomes)")
        let (winner, version) = try XCTUnwrap(winners.first)
        for (n, result) in outcomes where n != winner {
            guard case .failure(RoomError.Conflict(let current)) = result else {
                XCTFail("p\(n) expected Conflict, got \(result)")
                continue
            }
            XCTAssertEqual(current?.valueJson, "\"p\(winner)\"")
            XCTAssertEqual(current?.version, version)
        }
    }

    func testCompareAndSetUnderContentionLosesNothing() async throws {
        var clients: [RoomConnection] = []
        for n in 0..<4 {
            clients.append(try await join("p\(n)"))
        }
        let increments = 15
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in clients {
                group.addTask {
                    let store = client.sessionStore()
                    for _ in 0..<increments {
                        while true {
                            let current = try await store.get(key: "counter")
                            let next = (current.flatMap { Int($0.valueJson) } ?? 0) + 1
                            do {
                                _ = try await store.compareAndSet(key: "counter", expectedVersion: current?.version ?? 0, valueJson: "\(next)")
                                break
                            } catch RoomError.Conflict(let now) {
                                XCTAssertGreaterThan(now?.version ?? 0, current?.version ?? 0)
                            }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let total = try await clients[0].sessionStore().get(key: "counter")
        XCTAssertEqual(total?.valueJson, "\(clients.count * increments)")
    }

    func testAttributesAndMetadataReachASecondClient() async throws {
        let alice = try await join("alice")
        let bobHeard = Recorder()
        _ = try await join("bob", listener: bobHeard)
        _ = try await alice.localParticipant().setAttributes(attributes: ["hand": "up", "brb": "yes"])
        try await bobHeard.wait(for: #"attributes:alice:["brb", "hand"]"#)
        let updated = try await alice.localParticipant().setAttributes(attributes: ["hand": ""])
        XCTAssertEqual(updated.attributes, ["brb": "yes"])
        try await bobHeard.wait(for: #"attributes:alice:["hand"]"#)
        _ = try await alice.localParticipant().setMetadata(metadata: "presenting")
        try await bobHeard.wait(for: "metadata:alice:->presenting")
        XCTAssertEqual(alice.localParticipant().info()?.metadata, "presenting")
        let carol = try await join("carol")
        let aliceAtCarol = try XCTUnwrap(carol.remoteParticipants().first { $0.identity == "alice" })
        XCTAssertEqual(aliceAtCarol.attributes, ["brb": "yes"])
        XCTAssertEqual(aliceAtCarol.metadata, "presenting")
        XCTAssertFalse(aliceAtCarol.isLocal)
    }

    func testEveryErrorIsTyped() async throws {
        let alice = try await join("alice")
        let store = alice.sessionStore()

        let limit = await thrown { try await store.set(key: "big", valueJson: "\"\(String(repeating: "x", count: 2000))\"") }
        guard case RoomError.LimitExceeded(let which, let max, let actual, _)? = limit else {
            return XCTFail("expected LimitExceeded, got \(String(describing: limit))")
        }
        XCTAssertEqual(which, .valueBytes)
        XCTAssertEqual(max, 1024)
        XCTAssertEqual(actual, 2002)

        _ = try await store.compareAndSet(key: "lock", expectedVersion: 0, valueJson: #""alice""#)
        let conflict = await thrown { try await store.compareAndSet(key: "lock", expectedVersion: 0, valueJson: #""bob""#) }
        guard case RoomError.Conflict(let current)? = conflict else {
            return XCTFail("expected Conflict, got \(String(describing: conflict))")
        }
        XCTAssertEqual(current?.valueJson, #""alice""#)

        let invalid = await thrown { try await store.set(key: "k", valueJson: "{not json") }
        guard case RoomError.InvalidValue? = invalid else {
            return XCTFail("expected InvalidValue, got \(String(describing: invalid))")
        }

        let viewer = try await join("viewer", canUpdateMetadata: false)
        let metadataRefused = await thrown { try await viewer.localParticipant().setMetadata(metadata: "x") }
        guard case RoomError.NotAllowed? = metadataRefused else {
            return XCTFail("expected NotAllowed, got \(String(describing: metadataRefused))")
        }
        let reader = try await join("reader", readOnlyStore: true)
        let writeRefused = await thrown { try await reader.sessionStore().set(key: "k", valueJson: "1") }
        guard case RoomError.NotAllowed? = writeRefused else {
            return XCTFail("expected NotAllowed, got \(String(describing: writeRefused))")
        }
        let readable = try await reader.sessionStore().get(key: "lock")
        XCTAssertEqual(readable?.valueJson, #""alice""#, "read-only still reads")

        let badToken = try token("mallory", secret: "wrong")
        let refused = await thrown {
            try await RoomConnection.connect(url: self.server.url, token: badToken, listener: Recorder(), options: fastOptions())
        }
        guard case RoomError.InvalidToken(let code, _)? = refused else {
            return XCTFail("expected InvalidToken, got \(String(describing: refused))")
        }
        XCTAssertEqual(code, "invalid_token")

        let nobody = try token("nobody")
        let unreachable = await thrown {
            try await RoomConnection.connect(url: "ws://127.0.0.1:1", token: nobody, listener: Recorder(), options: fastOptions())
        }
        guard case RoomError.Connect? = unreachable else {
            return XCTFail("expected Connect, got \(String(describing: unreachable))")
        }
        // With fallbacks (other nodes of a cluster), a dead first address is skipped.
        let moved = try await RoomConnection.connect(
            url: "ws://127.0.0.1:1", token: try token("mover"), listener: Recorder(), options: fastOptions(fallbackUrls: [server.url])
        )
        XCTAssertEqual(moved.connectionState(), .connected)
        await moved.disconnect()

        let impatient = try await join("impatient", options: fastOptions(requestTimeoutMs: 1_000))
        server.freeze(true)
        let timedOut = await thrown { try await impatient.sessionStore().set(key: "k", valueJson: "1") }
        server.freeze(false)
        guard case RoomError.Timeout(let sent)? = timedOut else {
            return XCTFail("expected Timeout, got \(String(describing: timedOut))")
        }
        XCTAssertTrue(sent)

        await alice.disconnect()
        let closed = await thrown { try await store.set(key: "k", valueJson: "1") }
        guard case RoomError.NotConnected? = closed else {
            return XCTFail("expected NotConnected, got \(String(describing: closed))")
        }
        XCTAssertEqual(alice.connectionState(), .disconnected(reason: .clientRequested))
        let observeClosed = await thrown { try store.observeChanges(forKeys: ["k"]) { _, _ in } }
        guard case RoomError.NotConnected? = observeClosed else {
            return XCTFail("expected NotConnected, got \(String(describing: observeClosed))")
        }
    }

    func testAListenerMayCallBackIntoTheEngine() async throws {
        let alice = try await join("alice")
        let store = alice.sessionStore()
        let seen = Recorder()
        // On the listener thread, the callback waits for a write of its own (as Kotlin's
        // runBlocking does), reads the engine's state, and at zero removes itself.
        let own = Locked<ObserverHandle?>(nil)
        let handle = try store.observeChanges(forKeys: ["countdown"]) { key, entry in
            guard let n = entry.flatMap({ Int($0.valueJson) }) else { return }
            _ = alice.connectionState()
            _ = alice.localParticipant().info()
            if n > 0 {
                let done = DispatchSemaphore(value: 0)
                Task {
                    _ = try? await store.set(key: key, valueJson: "\(n - 1)")
                    done.signal()
                }
                done.wait()
            } else if let handle = own() {
                store.removeObserver(handle)
            }
        }
        own.update { $0 = handle }
        _ = try store.addKeyChangeListener(keys: ["countdown"], listener: seen)
        _ = try await store.set(key: "countdown", valueJson: "5")
        try await seen.wait(for: "countdown=0")
        XCTAssertEqual(seen.keyEvents("countdown"), ["nil", "5", "4", "3", "2", "1", "0"].map { "countdown=\($0)" })
    }

    func testAListenerThatThrowsIsLoggedAndTheOthersGoOn() async throws {
        let logged = Locked<[String]>([])
        initLogging(level: .warn, logger: AppLogger(logged))
        defer { initLogging(level: .info, logger: nil) }
        let alice = try await join("alice")
        let store = alice.sessionStore()
        _ = try store.addKeyChangeListener(keys: ["k"], listener: ThrowingListener())
        let after = Recorder()
        _ = try store.addKeyChangeListener(keys: ["k"], listener: after)
        _ = try await store.set(key: "k", valueJson: "1")
        _ = try await store.set(key: "k", valueJson: "2")
        try await after.wait(for: "k=2")
        try await eventually("the error logged: \(logged())") { logged().contains { $0.contains("app bug") } }
        XCTAssertTrue(logged().contains { $0.hasPrefix("error") && $0.contains("onKeyChanged") }, "\(logged())")
    }

    #if os(Linux)
    func testLeavingEveryRoomLeavesNoEngineThreads() async throws {
        try await eventually("no engine threads from earlier tests: \(engineThreads())") { engineThreads().isEmpty }
        let alice = try await join("alice")
        let bob = try await join("bob")
        _ = try await alice.sessionStore().set(key: "k", valueJson: "1")
        XCTAssertFalse(engineThreads().isEmpty)
        await alice.disconnect()
        await bob.disconnect()
        try await eventually("the engine's threads to end: \(engineThreads())") { engineThreads().isEmpty }
    }
    #endif
}

struct AppBug: Error, CustomStringConvertible {
    var description: String { "app bug" }
}

final class ThrowingListener: KeyChangeListener {
    func onKeyChanged(key: String, entry: StoreEntry?) throws {
        if entry != nil { throw AppBug() }
    }
}

final class AppLogger: RoomStateLogger {
    let logged: Locked<[String]>
    init(_ logged: Locked<[String]>) { self.logged = logged }

    func log(level: RoomStateLogLevel, target: String, message: String) throws {
        logged.update { $0.append("\(level) \(message)") }
    }
}
