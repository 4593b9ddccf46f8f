// The 100ms Flutter bridge's defects (../shared/ANCHORS.md), each one avoided, one test
// each. As the Android side's DefectsTest.kt.
import Foundation
import RoomStateTesting
@testable import roomstate
import XCTest

final class DefectsTests: ChannelTestCase, @unchecked Sendable {
    private let roomMethods = [
        "updateToken", "reconnectNow", "connectionState", "remoteParticipants", "get", "set", "delete",
        "compareAndSet", "addKeyChangeListener", "setAttributes", "setMetadata", "setName",
    ]

    private func arguments(_ room: Int64) -> [String: Any?] {
        [
            "room": room, "token": "t", "key": "k", "valueJson": "1", "expectedVersion": 0,
            "keys": ["k"], "attributes": ["a": "b"], "metadata": "m", "name": "n",
        ]
    }

    /// 100ms: a call made before the store exists never completes (the Dart future hangs).
    func testA_EveryCallCompletesBeforeConnectOnARoomThatIsGoneAndWhenThePluginIsDetached() async throws {
        // Before any connect.
        let before = roomMethods.map { flutter.send($0, arguments(1)) }
        for result in before {
            guard case .failure(let failure) = try await result.outcome() else { return XCTFail("\(result.method) answered a value") }
            XCTAssertEqual(failure.code, "NOT_CONNECTED", result.method)
        }
        assertNil(try await flutter.ok("disconnect", arguments(1)))

        // On a room that was left.
        let alice = try await flutter.join(server, "alice")
        try await flutter.ok("disconnect", ["room": alice.id])
        let after = roomMethods.map { flutter.send($0, arguments(alice.id)) }
        for result in after {
            guard case .failure(let failure) = try await result.outcome() else { return XCTFail("\(result.method) answered a value") }
            XCTAssertEqual(failure.code, "NOT_CONNECTED", result.method)
        }

        // In flight when the engine detaches: answered, not dropped.
        let bob = try await flutter.join(server, "bob", options: fastOptions(requestTimeoutMs: 60_000))
        server.freeze(true)
        defer { server.freeze(false) }
        let pending = flutter.send("set", ["room": bob.id, "key": "k", "valueJson": "1"])
        try await sleep(ms: 300)
        XCTAssertFalse(pending.isAnswered, "waiting for the frozen server")
        flutter.detach()
        guard case .failure(let failure) = try await pending.outcome() else { return XCTFail("the pending call answered a value") }
        XCTAssertEqual(failure.code, "NOT_CONNECTED")
        // And after it.
        try await flutter.fails("NOT_CONNECTED", "get", ["room": bob.id, "key": "k"])
        try await flutter.fails("NOT_CONNECTED", "initialize")
        try await flutter.fails("NOT_CONNECTED", "connect", ["url": server.url, "token": "t"])
        server.freeze(false)
        // Exactly once: nothing answers a second time later (the harness counts every answer).
        try await sleep(ms: 300)
        flutter.flush()
        let answers = flutter.results().map { "\($0.method):\($0.answers)" }
        XCTAssertTrue(flutter.results().allSatisfy { $0.answers == 1 }, "\(answers)")
    }

    /// 100ms: an initial value that arrives before the listener is registered is dropped.
    func testB_NoEventBeforeListenIsLostAKeysCurrentValueAndTheRoomsSnapshotComeFirst() async throws {
        let alice = try await flutter.join(server, "alice")
        try await flutter.ok("set", ["room": alice.id, "key": "pinned", "valueJson": #"{"text":"hi"}"#])
        try await sleep(ms: 300)  // set long before
        let listener = try await flutter.addListener(alice.id, "pinned", listen: false).id
        try await sleep(ms: 300)  // the 100ms bridge dropped an initial value that came before its listener
        let keys = try flutter.listen("\(keysChannelPrefix)\(listener)")
        let current = try await flutter.ok("get", ["room": alice.id, "key": "pinned"])
        assertSame(try await keys.nextEvent(), ["key": "pinned", "entry": current])

        // The room channel: changes made before Dart listens are in the snapshot.
        let bob = try await flutter.join(server, "bob", listen: false)
        let carol = try await peer("carol")
        try await flutter.ok("setAttributes", ["room": alice.id, "attributes": ["hand": "up"]])
        _ = try await carol.room.localParticipant().setMetadata(metadata: "away")
        try await eventually("bob's engine has carol's metadata") {
            try await self.flutter.ok("remoteParticipants", ["room": bob.id]).asList.contains { $0["metadata"].asString == "away" }
        }
        let events = try flutter.listen(bob.channel)
        let snapshot = try await events.nextEvent()
        assertSame(snapshot["type"], "snapshot")
        let people = Dictionary(uniqueKeysWithValues: snapshot["participants"].asList.map { ($0["identity"].asString ?? "", $0) })
        XCTAssertEqual(Set(people.keys), ["alice", "carol"])
        assertSame(people["alice"]?["attributes"], ["hand": "up"])
        assertSame(people["carol"]?["metadata"], "away")
    }

    /// 100ms: listener ids made from the current millisecond collide.
    func testC_IdsComeFromCountersTwoListenersAddedAtOnceDiffer() async throws {
        let alice = try await flutter.join(server, "alice")
        let bob = try await flutter.join(server, "bob")
        XCTAssertNotEqual(alice.id, bob.id)
        let twins = flutter.onMain {
            [
                flutter.send("addKeyChangeListener", ["room": alice.id, "keys": ["k"]]),
                flutter.send("addKeyChangeListener", ["room": alice.id, "keys": ["k"]]),
            ]
        }
        var added: [[String: Any]] = []
        for twin in twins {
            guard case .success(let value) = try await twin.outcome() else { return XCTFail("addKeyChangeListener failed") }
            added.append(value.asMap)
        }
        let first = try XCTUnwrap(added[0]["listener"].asInt), second = try XCTUnwrap(added[1]["listener"].asInt)
        XCTAssertEqual(second, first + 1)
        XCTAssertNotEqual(added[0]["channel"].asString, added[1]["channel"].asString)
        // Both work, separately.
        let one = try flutter.listen(try XCTUnwrap(added[0]["channel"].asString))
        let two = try flutter.listen(try XCTUnwrap(added[1]["channel"].asString))
        assertTrue(try await one.nextEvent()["entry"].isNull)
        assertTrue(try await two.nextEvent()["entry"].isNull)
    }

    /// 100ms (Android): a second listener on an already-observed key gets no initial value;
    /// (React Native) two subscriptions on one key receive each other's callbacks.
    func testD_TheSecondListenerOfAKeyGetsItsInitialValueAndEachListenerOnlyItsOwnEvents() async throws {
        let alice = try await flutter.join(server, "alice")
        let bob = try await flutter.join(server, "bob")
        try await flutter.ok("set", ["room": bob.id, "key": "hand", "valueJson": "\"up\""])
        let first = try await flutter.addListener(alice.id, "hand").stream!
        assertSame(try await first.nextEvent()["entry"].asMap["valueJson"], "\"up\"")
        // The key is observed already: 100ms's Android SDK sent the second listener nothing.
        let second = try await flutter.addListener(alice.id, "hand").stream!
        assertSame(try await second.nextEvent()["entry"].asMap["valueJson"], "\"up\"")

        try await flutter.ok("set", ["room": bob.id, "key": "hand", "valueJson": "\"down\""])
        for stream in [first, second] { assertSame(try await stream.nextEvent()["entry"].asMap["valueJson"], "\"down\"") }
        try await first.assertQuiet()
        try await second.assertQuiet()
        // Removing one leaves the other: no cross-talk between subscriptions of one key.
        first.cancel()
        try await flutter.ok("delete", ["room": bob.id, "key": "hand"])
        assertTrue(try await second.nextEvent()["entry"].isNull)
        try await second.assertQuiet()
        try await first.assertQuiet()
    }

    /// 100ms: nothing is released when the engine goes away.
    func testE_DisposeReleasesEveryRoomAndListener() async throws {
        let bob = try await peer("bob")
        let alice = try await flutter.join(server, "alice")
        let dave = try await flutter.join(server, "dave", listen: false)
        _ = try await flutter.addListener(alice.id, "k").stream!.nextEvent()
        _ = try await flutter.addListener(dave.id, "k", listen: false)
        _ = try await flutter.addListener(alice.id, "other")
        XCTAssertEqual(flutter.channels.openNames.count, 5)

        await flutter.detach().value
        try await bob.awaitHeard("left:alice")
        try await bob.awaitHeard("left:dave")
        flutter.flush()
        XCTAssertEqual(flutter.channels.openNames, [], "every channel closed")
        XCTAssertEqual(Set(flutter.channels.opened()), Set(flutter.channels.closed()))
        try await flutter.fails("NOT_CONNECTED", "get", ["room": alice.id, "key": "k"])

        await bob.leave()
        try await eventually("no engine thread left: \(engineThreads())") { engineThreads().isEmpty }
    }

    /// 100ms: nothing is released on a hot restart (a new Dart isolate, the same engine).
    func testE_InitializeAfterAHotRestartReleasesWhatThePreviousIsolateLeft() async throws {
        let bob = try await peer("bob")
        let alice = try await flutter.join(server, "alice")
        _ = try await flutter.addListener(alice.id, "k").stream!.nextEvent()
        _ = try await flutter.addListener(alice.id, "other", listen: false)

        assertNil(try await flutter.ok("initialize"))
        // Answered once alice has left.
        XCTAssertFalse(alice.events!.received.contains { $0.isDone }, "released: nothing more is sent to the old isolate, not even the end")
        try await bob.awaitHeard("left:alice")
        flutter.flush()
        XCTAssertEqual(flutter.channels.openNames, [], "every channel closed")
        try await flutter.fails("NOT_CONNECTED", "get", ["room": alice.id, "key": "k"])

        // The new isolate joins again: ids go on from the counter, never reused.
        let again = try await flutter.join(server, "alice")
        XCTAssertGreaterThan(again.id, alice.id)
        try await bob.awaitHeard("joined:alice")
        try await flutter.ok("set", ["room": again.id, "key": "k", "valueJson": "1"])
        assertSame(try await flutter.ok("get", ["room": again.id, "key": "k"]).asMap["valueJson"], "1")
        try await flutter.ok("disconnect", ["room": again.id])
        await bob.leave()
        try await eventually("no engine thread left: \(engineThreads())") { engineThreads().isEmpty }
    }

    /// 100ms: callbacks on a background thread. Every result and event is delivered through
    /// MainThread: the harness records the thread of each delivery.
    func testF_EveryResultAndEventIsDeliveredOnTheMainThread() async throws {
        let alice = try await flutter.join(server, "alice")
        let bob = try await flutter.join(server, "bob")
        let keys = try await flutter.addListener(alice.id, "k").stream!
        _ = try await keys.nextEvent()
        try await flutter.ok("set", ["room": bob.id, "key": "k", "valueJson": "1"])
        _ = try await keys.nextEvent()
        try await flutter.ok("setAttributes", ["room": bob.id, "attributes": ["hand": "up"]])
        _ = try await alice.events!.awaitEvent("attributes") { $0["type"].asString == "attributesChanged" }
        try await flutter.fails("CONFLICT", "compareAndSet", ["room": alice.id, "key": "k", "expectedVersion": 0, "valueJson": "2"])
        try await flutter.ok("disconnect", ["room": bob.id])
        _ = try await alice.events!.awaitEvent("bob left") { $0["type"].asString == "participantLeft" }
        try await bob.events!.awaitDone()

        flutter.flush()
        let threads = flutter.deliveryThreads()
        XCTAssertGreaterThanOrEqual(threads.count, 15, "\(threads)")
        XCTAssertEqual(Set(threads), ["flutter-main"])
        XCTAssertEqual(flutter.violations(), [])
    }
}
