// The Swift layer's AsyncSequences: the current value then every change; cancelling the
// consumer removes the observer; `for try await` ends when the room ends.
import Foundation
import RoomStateTesting
import RoomState
import XCTest

final class StreamTests: ServerTestCase, @unchecked Sendable {
    /// Collects a stream's elements in a task, as an app's consumer would.
    private final class Consumer<Element: Sendable>: @unchecked Sendable {
        let received = Locked<[Element]>([])
        private(set) var task: Task<Void, any Error>!

        init(_ stream: AsyncThrowingStream<Element, any Error>) {
            task = Task { [received] in
                for try await element in stream {
                    received.update { $0.append(element) }
                }
            }
        }

        func waitForCount(_ count: Int, file: StaticString = #filePath, line: UInt = #line) async throws {
            try await eventually("\(count) elements, have \(received())", file: file, line: line) { self.received().count >= count }
        }

        /// How the stream ended: nil when it finished normally.
        func ending() async -> (any Error)? {
            do {
                try await task.value
                return nil
            } catch {
                return error
            }
        }
    }

    func testValuesGiveTheCurrentValueThenEveryChange() async throws {
        let alice = try await join("alice")
        let bob = try await join("bob")
        try await alice.sessionStore().set(Pinned(text: "zero", by: "alice"), forKey: "pinned")
        let values = Consumer(bob.sessionStore().values(forKey: "pinned", as: Pinned.self))
        // The current value comes first: after it, the observer is in place.
        try await values.waitForCount(1)
        try await alice.sessionStore().set(Pinned(text: "one", by: "alice"), forKey: "pinned")
        try await alice.sessionStore().set(Pinned(text: "two", by: "alice"), forKey: "pinned")
        try await alice.sessionStore().delete(key: "pinned")
        try await values.waitForCount(4)
        XCTAssertEqual(values.received(), [
            Pinned(text: "zero", by: "alice"), Pinned(text: "one", by: "alice"), Pinned(text: "two", by: "alice"), nil,
        ])
        let changes = Consumer(bob.sessionStore().changes(forKey: "pinned"))
        try await changes.waitForCount(1)
        _ = try await alice.sessionStore().set(key: "pinned", valueJson: "3")
        try await changes.waitForCount(2)
        XCTAssertEqual(changes.received().map { $0?.valueJson }, [nil, "3"])
        XCTAssertEqual(changes.received().last??.updatedBy, "alice")
        changes.task.cancel()
        values.task.cancel()
    }

    func testAValueThatDoesNotDecodeEndsTheStreamWithTheError() async throws {
        let alice = try await join("alice")
        _ = try await alice.sessionStore().set(key: "pinned", valueJson: "42")
        let values = Consumer(alice.sessionStore().values(forKey: "pinned", as: Pinned.self))
        let ending = await values.ending()
        XCTAssertTrue(ending is DecodingError, "\(String(describing: ending))")
        XCTAssertEqual(values.received(), [])
    }

    func testCancellingTheConsumerRemovesTheObserver() async throws {
        // A short request timeout: with the server frozen, a get of a key the engine
        // observes answers from the engine's copy, one of a key it no longer observes times out.
        let alice = try await join("alice")
        let bob = try await join("bob", options: fastOptions(requestTimeoutMs: 500))
        // The wrapper `sessionStore()` returns is gone at once: the stream must not need it.
        let values = Consumer(bob.sessionStore().values(forKey: "pinned", as: Pinned.self))
        try await values.waitForCount(1)
        try await alice.sessionStore().set(Pinned(text: "one", by: "alice"), forKey: "pinned")
        try await values.waitForCount(2)

        server.freeze(true)
        let cached = await result { try await bob.sessionStore().get(key: "pinned") }
        server.freeze(false)
        XCTAssertEqual(try cached.get()?.decode(Pinned.self), Pinned(text: "one", by: "alice"), "observed: answered from the engine's copy")

        values.task.cancel()
        let ending = await values.ending()
        XCTAssertNil(ending, "a cancelled AsyncThrowingStream finishes")

        // The observer is gone: a further change does not reach it...
        try await alice.sessionStore().set(Pinned(text: "two", by: "alice"), forKey: "pinned")
        let latest = Recorder()
        _ = try alice.sessionStore().addKeyChangeListener(keys: ["pinned"], listener: latest)
        try await latest.wait(for: #"pinned={"by":"alice","text":"two"}"#)
        XCTAssertEqual(values.received(), [nil, Pinned(text: "one", by: "alice")])
        // ...and the engine no longer observes the key (it told the server to stop sending):
        // with the server frozen, reading it has to ask the server, and times out.
        try await eventually("bob's engine stops observing the key") {
            self.server.freeze(true)
            defer { self.server.freeze(false) }
            return await self.result { try await bob.sessionStore().get(key: "pinned") }.isTimeout
        }
    }

    func testAStreamFinishesWhenTheRoomIsLeft() async throws {
        let alice = try await join("alice")
        let changes = Consumer(alice.sessionStore().changes(forKey: "k"))
        try await changes.waitForCount(1)
        _ = try await alice.sessionStore().set(key: "k", valueJson: "1")
        await alice.disconnect()
        let ending = await changes.ending()
        XCTAssertNil(ending, "leaving finishes the stream normally")
        XCTAssertEqual(changes.received().map { $0?.valueJson }, [nil, "1"], "every change before the end arrives")
        let after = Consumer(alice.sessionStore().changes(forKey: "k"))
        let afterEnding = await after.ending()
        guard case RoomError.NotConnected? = afterEnding else {
            return XCTFail("a stream of a room that has ended: expected NotConnected, got \(String(describing: afterEnding))")
        }
        let reason = await alice.sessionStore().ended()
        XCTAssertEqual(reason, .clientRequested)
    }

    func testAStreamThrowsWhenTheParticipantIsRemoved() async throws {
        let alice = try await join("alice")
        let bob = try await join("bob")
        let values = Consumer(bob.sessionStore().values(forKey: "k", as: Int.self))
        try await values.waitForCount(1)
        try await alice.sessionStore().set(7, forKey: "k")
        try await values.waitForCount(2)
        try roomstateCLI(["participant", "remove", "swift-room", "bob", "--url", server.httpURL])
        let ending = await values.ending()
        XCTAssertEqual(ending as? RoomEndedError, RoomEndedError(reason: .removed))
        XCTAssertEqual(values.received(), [nil, 7])
        XCTAssertEqual(bob.connectionState(), .disconnected(reason: .removed))
    }

    func testAStreamThrowsWhenTheSessionEnds() async throws {
        let alice = try await join("alice")
        // A hidden participant neither starts nor keeps a session: when the last visible
        // one leaves, the session ends for it too.
        let watcher = try await join("watcher", hidden: true)
        let changes = Consumer(watcher.sessionStore().changes(forKey: "k"))
        try await changes.waitForCount(1)
        _ = try await alice.sessionStore().set(key: "k", valueJson: "1")
        try await changes.waitForCount(2)
        await alice.disconnect()
        let ending = await changes.ending()
        XCTAssertEqual(ending as? RoomEndedError, RoomEndedError(reason: .sessionEnded))
        let reason = await watcher.sessionStore().ended()
        XCTAssertEqual(reason, .sessionEnded)
    }

    private func result<T>(_ body: () async throws -> T) async -> Result<T, any Error> {
        do {
            return .success(try await body())
        } catch {
            return .failure(error)
        }
    }
}

private extension Result where Failure == any Error {
    var isTimeout: Bool {
        if case .failure(RoomError.Timeout) = self { return true }
        return false
    }
}
