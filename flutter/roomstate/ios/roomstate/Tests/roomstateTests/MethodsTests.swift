// Every method of CHANNELS.md, and every room event, against a real server. As the
// Android side's MethodsTest.kt.
import Foundation
import RoomStateTesting
@testable import roomstate
import XCTest

final class MethodsTests: ChannelTestCase, @unchecked Sendable {
    func testConnectAnswersTheRoomItsSessionThisParticipantAndTheOthersSortedByIdentity() async throws {
        assertNil(try await flutter.ok("initialize", nil))
        _ = try await peer("carol")
        _ = try await peer("bob")
        let alice = try await flutter.join(server, "alice")
        let result = alice.result
        XCTAssertTrue(result["sessionId"].asString?.hasPrefix("SE_") == true, "\(result)")
        let local = result["local"].asMap
        assertSame(local["identity"], "alice")
        assertSame(local["isLocal"], true)
        XCTAssertEqual(identities(result["participants"]), ["bob", "carol"])
        XCTAssertTrue(result["participants"].asList.allSatisfy { same($0["isLocal"], false) })

        let snapshot = try await alice.events!.nextEvent()
        assertSame(snapshot["type"], "snapshot")
        assertSame(snapshot["state"], ["state": "connected"])
        assertSame(snapshot["local"], local)
        XCTAssertEqual(identities(snapshot["participants"]), ["bob", "carol"])
        assertSame(snapshot["storeAvailable"], true)
    }

    func testDisconnectLeavesIsIdempotentAndEndsTheRoomsChannel() async throws {
        let bob = try await peer("bob")
        let alice = try await flutter.join(server, "alice")
        let keys = try await flutter.addListener(alice.id, "k").stream!
        assertTrue(try await keys.nextEvent()["entry"].isNull)
        let events = alice.events!
        _ = try await events.nextEvent()  // the snapshot

        assertNil(try await flutter.ok("disconnect", ["room": alice.id]))
        try await bob.awaitHeard("left:alice")
        // The last event is the state, disconnected, then the stream ends; the key stream just ends.
        let last = try await events.awaitEvent("the final state") { $0["type"].asString == "connectionState" && $0["state"].asMap["state"].asString == "disconnected" }
        assertSame(last["state"], ["state": "disconnected", "reason": ["reason": "clientRequested"]])
        assertTrue(try await events.next().isDone)
        assertTrue(try await keys.next().isDone)
        // Dart cancels after endOfStream; the channels are closed then, not before.
        try await eventually("the channels closed") { !self.flutter.channels.isOpen(alice.channel) && !self.flutter.channels.isOpen(keys.name) }

        assertNil(try await flutter.ok("disconnect", ["room": alice.id]))
        assertNil(try await flutter.ok("disconnect", ["room": 12_345]))
        try await flutter.fails("NOT_CONNECTED", "get", ["room": alice.id, "key": "k"])
    }

    func testConnectionStateAndRemoteParticipantsFollowTheRoom() async throws {
        let alice = try await flutter.join(server, "alice")
        let events = alice.events!
        assertSame(try await flutter.ok("connectionState", ["room": alice.id]), ["state": "connected"])
        assertSame(try await flutter.ok("remoteParticipants", ["room": alice.id]), [Any]())
        let dave = try await peer("dave")
        _ = try await peer("bob")
        _ = try await events.awaitEvent("bob joined") { $0["type"].asString == "participantJoined" && $0["participant"].asMap["identity"].asString == "bob" }
        assertEqual(identities(try await flutter.ok("remoteParticipants", ["room": alice.id])), ["bob", "dave"])
        await dave.leave()
        _ = try await events.awaitEvent("dave left") { $0["type"].asString == "participantLeft" }
        assertEqual(identities(try await flutter.ok("remoteParticipants", ["room": alice.id])), ["bob"])
    }

    func testGetSetDeleteAndCompareAndSetKeepEveryJSONValuesForm() async throws {
        let room = try await flutter.join(server, "alice").id
        assertNil(try await flutter.ok("get", ["room": room, "key": "pinned"]))
        let value = #"{"text":"Welcome!","by":"alice","n":[1,2.5,null,true],"big":9007199254740993}"#
        let set = try await flutter.ok("set", ["room": room, "key": "pinned", "valueJson": value]).asInt
        let version = try XCTUnwrap(set)
        XCTAssertGreaterThan(version, 0)
        let entry = try await flutter.ok("get", ["room": room, "key": "pinned"]).asMap
        // The same JSON value (the server writes its keys in order), every number exact.
        XCTAssertEqual(try JSON.parse(try XCTUnwrap(entry["valueJson"].asString)), try JSON.parse(value))
        XCTAssertTrue(entry["valueJson"].asString?.contains("9007199254740993") == true, "\(entry)")
        XCTAssertEqual(entry["version"].asInt, version)
        assertSame(entry["updatedBy"], "alice")
        XCTAssertGreaterThan(entry["updatedAtMs"].asInt ?? 0, 1_700_000_000_000)

        let next = try await flutter.ok("compareAndSet", ["room": room, "key": "pinned", "expectedVersion": version, "valueJson": "\"two\""]).asInt
        XCTAssertEqual(next, version + 1)
        // valueJson null deletes; absent deletes too.
        try await flutter.ok("compareAndSet", ["room": room, "key": "pinned", "expectedVersion": next, "valueJson": nil])
        assertNil(try await flutter.ok("get", ["room": room, "key": "pinned"]))
        let created = try await flutter.ok("compareAndSet", ["room": room, "key": "lock", "expectedVersion": 0, "valueJson": "\"alice\""]).asInt
        try await flutter.ok("compareAndSet", ["room": room, "key": "lock", "expectedVersion": created])
        assertNil(try await flutter.ok("get", ["room": room, "key": "lock"]))

        try await flutter.ok("set", ["room": room, "key": "k", "valueJson": "1"])
        assertNil(try await flutter.ok("delete", ["room": room, "key": "k"]))
        assertNil(try await flutter.ok("get", ["room": room, "key": "k"]))
        assertNil(try await flutter.ok("delete", ["room": room, "key": "never-set"]))
    }

    func testAKeyListenerGetsTheCurrentValueThenEveryChangeOnceUntilCancelled() async throws {
        let alice = try await flutter.join(server, "alice")
        let bob = try await flutter.join(server, "bob")
        try await flutter.ok("set", ["room": bob.id, "key": "k", "valueJson": "1"])
        let keys = try await flutter.addListener(alice.id, "k", "other").stream!
        var first: [String: Any] = [:]
        for _ in 0..<2 {
            let event = try await keys.nextEvent()
            first[event["key"].asString ?? ""] = event["entry"] ?? NSNull()
        }
        assertSame(first["k"].asMap["valueJson"], "1")
        XCTAssertTrue(first["other"].isNull)

        try await flutter.ok("set", ["room": bob.id, "key": "k", "valueJson": "2"])
        assertSame(try await keys.nextEvent()["entry"].asMap["valueJson"], "2")
        try await flutter.ok("delete", ["room": bob.id, "key": "k"])
        assertSame(try await keys.nextEvent(), ["key": "k", "entry": NSNull()])
        // Own writes come back too.
        try await flutter.ok("set", ["room": alice.id, "key": "other", "valueJson": "\"mine\""])
        assertSame(try await keys.nextEvent()["entry"].asMap["valueJson"], "\"mine\"")

        keys.cancel()
        flutter.flush()
        XCTAssertFalse(flutter.channels.isOpen(keys.name), "cancelling closes the channel")
        try await flutter.ok("set", ["room": bob.id, "key": "k", "valueJson": "3"])
        try await keys.assertQuiet()  // and the harness fails any delivery after a cancel
    }

    func testTheWildcardKeyObservesEveryKey() async throws {
        let alice = try await flutter.join(server, "alice")
        try await flutter.ok("set", ["room": alice.id, "key": "a", "valueJson": "1"])
        let keys = try await flutter.addListener(alice.id, "*").stream!
        try await flutter.ok("set", ["room": alice.id, "key": "b", "valueJson": "2"])
        _ = try await keys.awaitEvent("b") { $0["key"].asString == "b" && !$0["entry"].isNull }
    }

    func testSetAttributesSetMetadataAndSetNameAnswerTheParticipantAndTheOthersHearOfIt() async throws {
        let alice = try await flutter.join(server, "alice")
        let bob = try await flutter.join(server, "bob")
        let bobEvents = bob.events!
        let updated = try await flutter.ok("setAttributes", ["room": alice.id, "attributes": ["hand": "up", "brb": "yes"]]).asMap
        assertSame(updated["attributes"], ["hand": "up", "brb": "yes"])
        assertSame(updated["isLocal"], true)
        let heard = try await bobEvents.awaitEvent("attributes") { $0["type"].asString == "attributesChanged" }
        XCTAssertEqual((heard["changedKeys"] as? [String])?.sorted(), ["brb", "hand"])
        assertSame(heard["participant"].asMap["identity"], "alice")
        // An empty value deletes its key; the others stay.
        let deleted = try await flutter.ok("setAttributes", ["room": alice.id, "attributes": ["hand": ""]]).asMap
        assertSame(deleted["attributes"], ["brb": "yes"])

        assertSame(try await flutter.ok("setMetadata", ["room": alice.id, "metadata": "presenting"]).asMap["metadata"], "presenting")
        let metadata = try await bobEvents.awaitEvent("metadata") { $0["type"].asString == "metadataChanged" }
        assertSame([metadata["old"], metadata["new"]], ["", "presenting"])

        assertSame(try await flutter.ok("setName", ["room": alice.id, "name": "Alice"]).asMap["name"], "Alice")
        let name = try await bobEvents.awaitEvent("name") { $0["type"].asString == "nameChanged" }
        assertSame([name["old"], name["new"]], ["", "Alice"])
        assertSame(name["participant"].asMap["name"], "Alice")

        // Alice's own channel hears her changes as well, with isLocal set.
        let own = try await alice.events!.awaitEvent("own name") { $0["type"].asString == "nameChanged" }
        assertSame(own["participant"].asMap["isLocal"], true)
    }

    func testRoomEventsJoinedLeftRoomMetadataAndTheConnectionStateThroughReconnectNow() async throws {
        let alice = try await flutter.join(server, "alice")
        let events = alice.events!
        assertSame(try await events.nextEvent()["type"], "snapshot")
        let carol = try await peer("carol")
        assertSame(try await events.awaitEvent("joined") { $0["type"].asString == "participantJoined" }["participant"].asMap["identity"], "carol")
        await carol.leave()
        assertSame(try await events.awaitEvent("left") { $0["type"].asString == "participantLeft" }["participant"].asMap["identity"], "carol")

        try server.admin(["room", "metadata", "set", roomName, #"{"topic":"math"}"#])
        let metadata = try await events.awaitEvent("room metadata") { $0["type"].asString == "roomMetadataChanged" }
        assertSame([metadata["old"], metadata["new"]], ["", #"{"topic":"math"}"#])

        assertNil(try await flutter.ok("reconnectNow", ["room": alice.id]))
        _ = try await events.awaitEvent("reconnecting") { $0["type"].asString == "connectionState" && same($0["state"], ["state": "reconnecting"]) }
        _ = try await events.awaitEvent("connected") { $0["type"].asString == "connectionState" && same($0["state"], ["state": "connected"]) }
        assertSame(try await flutter.ok("connectionState", ["room": alice.id]), ["state": "connected"])
    }

    func testUpdateTokenIsTheTokenOfTheNextConnection() async throws {
        let alice = try await flutter.join(server, "alice")
        let events = alice.events!
        let keys = try await flutter.addListener(alice.id, "k").stream!
        _ = try await keys.nextEvent()
        // A good token: the room resumes.
        assertNil(try await flutter.ok("updateToken", ["room": alice.id, "token": try token("alice")]))
        try await flutter.ok("reconnectNow", ["room": alice.id])
        _ = try await events.awaitEvent("reconnecting") { $0["type"].asString == "connectionState" && same($0["state"], ["state": "reconnecting"]) }
        _ = try await events.awaitEvent("connected") { $0["type"].asString == "connectionState" && same($0["state"], ["state": "connected"]) }
        try await flutter.ok("set", ["room": alice.id, "key": "k", "valueJson": "1"])
        assertSame(try await keys.nextEvent()["entry"].asMap["valueJson"], "1")

        // A token the server refuses: the room ends with that reason.
        try await flutter.ok("updateToken", ["room": alice.id, "token": "not-a-jwt"])
        try await flutter.ok("reconnectNow", ["room": alice.id])
        let last = try await events.awaitEvent("the end") { $0["type"].asString == "connectionState" && $0["state"].asMap["state"].asString == "disconnected" }
        let reason = last["state"].asMap["reason"].asMap
        assertSame(reason["reason"], "tokenRefused")
        XCTAssertNotNil(reason["detail"].asString)
        assertTrue(try await events.next().isDone)
        guard case .failure(let ended) = try await keys.next() else { return XCTFail("the key stream fails") }
        XCTAssertEqual(ended.code, "ROOM_ENDED")
        assertSame(ended.details, reason)
        assertTrue(try await keys.next().isDone)
        try await flutter.fails("NOT_CONNECTED", "updateToken", ["room": alice.id, "token": try token("alice")])
    }

    func testAnUnknownMethodIsNotImplemented() async throws {
        for method in ["removeEverything", "removeKeyChangeListener"] {
            guard case .notImplemented = try await flutter.call(method, ["room": 1]) else { return XCTFail("\(method) is not implemented") }
        }
    }

    func testCallsOnOneRoomReachTheServerInTheOrderTheyWereMade() async throws {
        let room = try await flutter.join(server, "alice").id
        // Sent back to back, as Dart sends them, without waiting for answers.
        let writes = flutter.onMain {
            (1...50).map { n in flutter.send("set", ["room": room, "key": "counter", "valueJson": "\(n)"]) }
        }
        var versions: [Int64] = []
        for write in writes {
            guard case .success(let version) = try await write.outcome(), let version = integer(version) else { return XCTFail("\(write.method) failed") }
            versions.append(version)
        }
        XCTAssertEqual(versions, Array(versions[0]..<versions[0] + 50), "each write's version, in the order sent")
        assertSame(try await flutter.ok("get", ["room": room, "key": "counter"]).asMap["valueJson"], "50")
    }
}

/// A server that forgets a participant the moment its connection drops: every reconnect joins anew.
final class FreshJoinTests: ChannelTestCase, @unchecked Sendable {
    override var serverArguments: [String] { ["--reconnect-grace-ms", "0"] }

    func testSessionStoreAvailableAfterAFreshJoin() async throws {
        let alice = try await flutter.join(server, "alice")
        let events = alice.events!
        assertSame(try await events.nextEvent()["type"], "snapshot")
        // A resume that reaches the server before it saw the old connection drop is still
        // a resume (about one reconnectNow in six here): reconnect until the server forgot us.
        var freshJoin = false
        for _ in 1...10 where !freshJoin {
            try await flutter.ok("reconnectNow", ["room": alice.id])
            _ = try await events.awaitEvent("reconnecting") { same($0["state"], ["state": "reconnecting"]) }
            let next = try await events.awaitEvent("the store or connected") {
                $0["type"].asString == "sessionStoreAvailable" || same($0["state"], ["state": "connected"])
            }
            freshJoin = next["type"].asString == "sessionStoreAvailable"
        }
        XCTAssertTrue(freshJoin, "sessionStoreAvailable after a fresh join")
        assertSame(try await flutter.ok("connectionState", ["room": alice.id]), ["state": "connected"])
        try await flutter.ok("set", ["room": alice.id, "key": "k", "valueJson": "1"])
    }
}
