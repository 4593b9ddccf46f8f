// What the engine holds after a room ends, `updateToken(token:)` and `reconnectNow()`:
// the Swift side of crates/server/tests/e2e/lifetimes.rs.
import Foundation
import RoomStateTesting
import RoomState
import XCTest

/// The pattern 100ms's docs show: a room listener that keeps the store it is given. With
/// the store it holds the engine, which holds it: a loop only the engine can break.
final class KeepsTheStore: DefaultRoomListener, @unchecked Sendable {
    let store = Locked<SessionStore?>(nil)

    override func onSessionStoreAvailable(store: SessionStore) throws {
        self.store.update { $0 = store }
    }
}

/// A key change listener that keeps the store it observes: the same loop.
final class KeyListenerKeepingTheStore: KeyChangeListener, @unchecked Sendable {
    let store: SessionStore
    let calls = Locked<[String]>([])

    init(_ store: SessionStore) {
        self.store = store
    }

    func onKeyChanged(key: String, entry: StoreEntry?) throws {
        calls.update { $0.append("\(key)=\(entry?.valueJson ?? "nil")") }
    }
}

final class LifetimeTests: ServerTestCase, @unchecked Sendable {
    /// Joins with a listener that keeps the store and adds a key listener that keeps it
    /// too, and returns the room with weak references to both: from then on only the
    /// engine holds them.
    private func joinKeepingTheStore(
        _ identity: String
    ) async throws -> (RoomConnection, Weak<KeepsTheStore>, Weak<KeyListenerKeepingTheStore>) {
        let listener = KeepsTheStore()
        let room = try await join(identity, listener: listener)
        try await eventually("\(identity)'s listener given the store") { listener.store() != nil }
        let keyListener = KeyListenerKeepingTheStore(room.sessionStore())
        _ = try room.sessionStore().addKeyChangeListener(keys: ["pinned"], listener: keyListener)
        try await eventually("the key listener's first call: \(keyListener.calls())") { keyListener.calls() == ["pinned=nil"] }
        return (room, Weak(listener), Weak(keyListener))
    }

    /// While the room lives the engine holds both listeners and calls them.
    private func assertHeldByTheEngine(
        _ room: RoomConnection,
        _ listener: Weak<KeepsTheStore>,
        _ keyListener: Weak<KeyListenerKeepingTheStore>,
        file: StaticString = #filePath,
        line: UInt = #line
    ) async throws {
        XCTAssertNotNil(listener.object, "the engine holds the room listener", file: file, line: line)
        XCTAssertNotNil(keyListener.object, "the engine holds the key listener", file: file, line: line)
        _ = try await room.sessionStore().set(key: "pinned", valueJson: "1")
        try await eventually("the key listener hears the change", file: file, line: line) {
            keyListener.object?.calls() == ["pinned=nil", "pinned=1"]
        }
    }

    /// How many connection states `heard` has heard once it heard `.connected`: joining
    /// returns before the listener's first calls have run.
    private func statesHeardOnceConnected(_ heard: Recorder, file: StaticString = #filePath, line: UInt = #line) async throws -> Int {
        try await eventually("connected: \(heard.states)", file: file, line: line) { heard.states.last == .connected }
        return heard.states.count
    }

    func testTheEngineLetsGoOfListenersThatKeepTheStoreWhenTheRoomIsLeft() async throws {
        let (alice, listener, keyListener) = try await joinKeepingTheStore("alice")
        try await assertHeldByTheEngine(alice, listener, keyListener)
        await alice.disconnect()
        try await eventually("the engine lets go of the room listener") { listener.object == nil }
        try await eventually("the engine lets go of the key listener") { keyListener.object == nil }
        // The room object is still here (the app keeps it), and answers as ended.
        XCTAssertEqual(alice.connectionState(), .disconnected(reason: .clientRequested))
        let closed = await thrown { try await alice.sessionStore().set(key: "pinned", valueJson: "2") }
        guard case RoomError.NotConnected? = closed else {
            return XCTFail("expected NotConnected, got \(String(describing: closed))")
        }
    }

    func testTheEngineLetsGoOfListenersThatKeepTheStoreWhenTheParticipantIsRemoved() async throws {
        let (bob, listener, keyListener) = try await joinKeepingTheStore("bob")
        try await assertHeldByTheEngine(bob, listener, keyListener)
        // Removed by the server API; the app never calls disconnect() and keeps the room.
        try roomstateCLI(["participant", "remove", "swift-room", "bob", "--url", server.httpURL])
        try await eventually("the engine lets go of the room listener") { listener.object == nil }
        try await eventually("the engine lets go of the key listener") { keyListener.object == nil }
        XCTAssertEqual(bob.connectionState(), .disconnected(reason: .removed))
        let reason = await bob.sessionStore().ended()
        XCTAssertEqual(reason, .removed)
        let observeClosed = await thrown { try bob.sessionStore().observeChanges(forKeys: ["pinned"]) { _, _ in } }
        guard case RoomError.NotConnected? = observeClosed else {
            return XCTFail("expected NotConnected, got \(String(describing: observeClosed))")
        }
    }

    func testUpdateTokenGivesTheTokenForTheNextConnection() async throws {
        // A token the server refuses: the reconnect after it ends the room.
        let aliceHeard = Recorder()
        let alice = try await join("alice", listener: aliceHeard)
        _ = try await alice.sessionStore().set(key: "k", valueJson: "1")
        let aliceBefore = try await statesHeardOnceConnected(aliceHeard)
        alice.updateToken(token: "not-a-jwt")
        alice.reconnectNow()
        try await eventually("alice disconnected: \(alice.connectionState())") {
            if case .disconnected = alice.connectionState() { return true }
            return false
        }
        guard case .disconnected(let reason) = alice.connectionState(), case .tokenRefused(let detail) = reason else {
            return XCTFail("expected Disconnected(TokenRefused), got \(alice.connectionState())")
        }
        XCTAssertFalse(detail.isEmpty)
        try await eventually("alice's listener hears reconnecting then the end: \(aliceHeard.states)") {
            Array(aliceHeard.states.dropFirst(aliceBefore)) == [.reconnecting, .disconnected(reason: reason)]
        }
        let ended = await alice.sessionStore().ended()
        XCTAssertEqual(ended, reason)
        let closed = await thrown { try await alice.sessionStore().set(key: "k", valueJson: "2") }
        guard case RoomError.NotConnected? = closed else {
            return XCTFail("expected NotConnected, got \(String(describing: closed))")
        }

        // A fresh token for the same identity: the reconnect resumes with it.
        let bobHeard = Recorder()
        let bob = try await join("bob", listener: bobHeard)
        let sid = try XCTUnwrap(bob.localParticipant().info()?.sid)
        let bobBefore = try await statesHeardOnceConnected(bobHeard)
        bob.updateToken(token: try token("bob"))
        bob.reconnectNow()
        try await eventually("bob's listener hears reconnecting then connected: \(bobHeard.states)") {
            Array(bobHeard.states.dropFirst(bobBefore)) == [.reconnecting, .connected]
        }
        XCTAssertEqual(bob.connectionState(), .connected)
        XCTAssertEqual(bob.localParticipant().info()?.sid, sid)
        _ = try await bob.sessionStore().set(key: "k", valueJson: "2")
        let entry = try await bob.sessionStore().get(key: "k")
        XCTAssertEqual(entry?.valueJson, "2")
        XCTAssertEqual(entry?.updatedBy, "bob")
    }

    func testReconnectNowResumesAHealthyConnectionAtOnce() async throws {
        // A backoff far longer than `eventually` waits: the reconnect must not wait for it.
        let heard = Recorder()
        let options = RoomConnectOptions(reconnectBackoffMinMs: 120_000, reconnectBackoffMaxMs: 120_000)
        let alice = try await join("alice", listener: heard, options: options)
        try await heard.wait(for: "store-available")
        let sid = try XCTUnwrap(alice.localParticipant().info()?.sid)
        let session = try XCTUnwrap(alice.sessionId())
        _ = try await alice.sessionStore().set(key: "k", valueJson: "1")
        let before = try await statesHeardOnceConnected(heard)
        alice.reconnectNow()
        try await eventually("reconnecting then connected: \(heard.states)") {
            Array(heard.states.dropFirst(before)) == [.reconnecting, .connected]
        }
        XCTAssertEqual(alice.localParticipant().info()?.sid, sid, "resumed, not joined anew")
        XCTAssertEqual(alice.sessionId(), session)
        XCTAssertEqual(heard.count("store-available"), 1, "a resume does not announce the store again")
        _ = try await alice.sessionStore().set(key: "k", valueJson: "2")
        let entry = try await alice.sessionStore().get(key: "k")
        XCTAssertEqual(entry?.valueJson, "2")
    }
}
