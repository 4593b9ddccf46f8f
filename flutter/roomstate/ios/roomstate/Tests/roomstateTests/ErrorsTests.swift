// Every error code of CHANNELS.md that a real server can produce, and the mapping of the
// rest. As the Android side's ErrorsTest.kt.
import Foundation
import RoomStateTesting
import RoomState
@testable import roomstate
import XCTest

final class ErrorsTests: ChannelTestCase, @unchecked Sendable {
    func testNotConnectedForARoomNeverJoinedAndForOneThatWasLeft() async throws {
        let unknown = try await flutter.fails("NOT_CONNECTED", "get", ["room": 77, "key": "k"])
        XCTAssertNil(unknown.details)
        let alice = try await flutter.join(server, "alice")
        try await flutter.ok("disconnect", ["room": alice.id])
        try await flutter.fails("NOT_CONNECTED", "set", ["room": alice.id, "key": "k", "valueJson": "1"])
        try await flutter.fails("NOT_CONNECTED", "addKeyChangeListener", ["room": alice.id, "keys": ["k"]])
    }

    func testTimeoutWhenTheServerDoesNotAnswerWithinRequestTimeoutMs() async throws {
        let alice = try await flutter.join(server, "alice", options: fastOptions(requestTimeoutMs: 300))
        server.freeze(true)
        defer { server.freeze(false) }
        let timeout = try await flutter.fails("TIMEOUT", "set", ["room": alice.id, "key": "k", "valueJson": "1"])
        assertSame(timeout.details, ["sent": true])
        XCTAssertEqual(timeout.message, "timed out (request sent: true)")
    }

    func testLimitExceededWithTheLimitItsMaximumAndTheActualSize() async throws {
        let alice = try await flutter.join(server, "alice")
        let value = "\"\(String(repeating: "x", count: 2000))\""
        let limit = try await flutter.fails("LIMIT_EXCEEDED", "set", ["room": alice.id, "key": "big", "valueJson": value])
        assertSame(limit.details, ["limit": "valueBytes", "max": 1024, "actual": 2002])
    }

    func testNotAllowedForATokenThatMayNotUpdateItsOwnMetadata() async throws {
        let viewer = try await flutter.join(server, "viewer", canUpdateMetadata: false)
        try await flutter.fails("NOT_ALLOWED", "setMetadata", ["room": viewer.id, "metadata": "x"])
        try await flutter.fails("NOT_ALLOWED", "setAttributes", ["room": viewer.id, "attributes": ["hand": "up"]])
        try await flutter.fails("NOT_ALLOWED", "setName", ["room": viewer.id, "name": "Viewer"])
    }

    func testConflictCarriesTheCurrentEntryOrNullWhenTheKeyIsAbsent() async throws {
        let room = try await flutter.join(server, "alice").id
        let version = try await flutter.ok("compareAndSet", ["room": room, "key": "lock", "expectedVersion": 0, "valueJson": "\"alice\""])
        let present = try await flutter.fails("CONFLICT", "compareAndSet", ["room": room, "key": "lock", "expectedVersion": 0, "valueJson": "\"bob\""])
        let current = (present.details as? [String: Any])?["current"].asMap ?? [:]
        assertSame(current["valueJson"], "\"alice\"")
        assertSame(current["version"], version)
        assertSame(current["key"], "lock")
        let absent = try await flutter.fails("CONFLICT", "compareAndSet", ["room": room, "key": "nothing", "expectedVersion": 5, "valueJson": "1"])
        assertSame(absent.details, ["current": NSNull()])
        XCTAssertTrue((absent.details as? [String: Any])?["current"] is NSNull, "null inside a map crosses as NSNull")
    }

    func testInvalidValueForTextThatIsNotJSONAndForAnEmptyKey() async throws {
        let room = try await flutter.join(server, "alice").id
        try await flutter.fails("INVALID_VALUE", "set", ["room": room, "key": "k", "valueJson": "{not json"])
        try await flutter.fails("INVALID_VALUE", "get", ["room": room, "key": ""])
    }

    func testAKeyTheEngineRefusesFailsTheListenersStream() async throws {
        let alice = try await flutter.join(server, "alice")
        let keys = try await flutter.addListener(alice.id, "").stream!
        guard case .failure(let failure) = try await keys.next() else { return XCTFail("the stream fails") }
        XCTAssertEqual(failure.code, "INVALID_VALUE")
        assertTrue(try await keys.next().isDone)
        try await eventually("the channel closed") { !self.flutter.channels.isOpen(keys.name) }
    }

    func testInvalidTokenWithTheServersCode() async throws {
        let refused = try await flutter.fails(
            "INVALID_TOKEN", "connect", ["url": server.url, "token": try token("mallory", secret: "wrong"), "options": fastOptions()]
        )
        assertSame(refused.details, ["code": "invalid_token"])
        XCTAssertTrue(refused.message?.hasPrefix("token refused (invalid_token): ") == true, refused.message ?? "")
        XCTAssertEqual(flutter.channels.opened(), [], "no channel for a room never joined")
    }

    func testConnectWhenNothingListens() async throws {
        let refused = try await flutter.fails("CONNECT", "connect", ["url": "ws://127.0.0.1:1", "token": try token("nobody"), "options": fastOptions()])
        XCTAssertTrue(refused.message?.hasPrefix("cannot connect: ") == true, refused.message ?? "")
        // With a fallback (another node of the cluster), the dead address is skipped.
        var options = fastOptions()
        options["fallbackUrls"] = [server.url]
        let moved = try await flutter.ok("connect", ["url": "ws://127.0.0.1:1", "token": try token("mover"), "options": options]).asMap
        assertSame(try await flutter.ok("connectionState", ["room": moved["room"]]), ["state": "connected"])
    }

    func testBadArgumentsForMissingOrWronglyTypedArguments() async throws {
        let room = try await flutter.join(server, "alice").id
        let url = server.url
        let good = try token("x")
        let bad: [(String, [String: Any?]?)] = [
            ("set", ["room": room, "valueJson": "1"]),
            ("set", ["room": room, "key": 5, "valueJson": "1"]),
            ("set", ["room": room, "key": "k", "valueJson": nil]),
            ("get", ["room": "1", "key": "k"]),
            ("get", ["room": true, "key": "k"]),
            ("get", ["key": "k"]),
            ("get", nil),
            ("compareAndSet", ["room": room, "key": "k", "expectedVersion": -1, "valueJson": "1"]),
            ("compareAndSet", ["room": room, "key": "k", "expectedVersion": 1.0, "valueJson": "1"]),
            ("compareAndSet", ["room": room, "key": "k", "expectedVersion": 0, "valueJson": 1]),
            ("addKeyChangeListener", ["room": room, "keys": "k"]),
            ("addKeyChangeListener", ["room": room, "keys": ["k", 2]]),
            ("setAttributes", ["room": room, "attributes": ["hand": 1]]),
            ("setAttributes", ["room": room, "attributes": ["hand"]]),
            ("setMetadata", ["room": room]),
            ("setName", ["room": room, "name": nil]),
            ("updateToken", ["room": room]),
            ("disconnect", ["room": nil]),
            ("connect", ["url": url]),
            ("connect", ["url": url, "token": good, "options": ["requestTimeoutMs": "10"]]),
            ("connect", ["url": url, "token": good, "options": ["requestTimeoutMs": -5]]),
            ("connect", ["url": url, "token": good, "options": ["fallbackUrls": [1]]]),
            ("connect", ["url": url, "token": good, "options": ["requestTimeout": 10]]),
            ("connect", ["url": url, "token": good, "options": "fast"]),
        ]
        for (method, arguments) in bad {
            let failure = try await flutter.fails("BAD_ARGUMENTS", method, arguments)
            let message = failure.message ?? ""
            XCTAssertTrue(message.hasPrefix("\(method) needs") || message.hasPrefix("\(method) has no"), message)
            XCTAssertNil(failure.details)
        }
        assertEqual(try await flutter.fails("BAD_ARGUMENTS", "set", ["room": room]).message, "set needs a string 'key'")
        // Checked before the room: a plugin bug shows even on a room that is gone.
        try await flutter.fails("BAD_ARGUMENTS", "set", ["room": 999, "key": "k"])
        // Arguments that are not a map read as none.
        let notAMap = try await flutter.send("get", nil).outcome()
        guard case .failure(let failure) = notAMap else { return XCTFail("\(notAMap)") }
        XCTAssertEqual(failure.code, "BAD_ARGUMENTS")
    }

    func testRoomEndedOnTheStreamsWhenThisParticipantIsRemoved() async throws {
        let alice = try await flutter.join(server, "alice")
        let keys = try await flutter.addListener(alice.id, "k").stream!
        _ = try await keys.nextEvent()
        let neverListened = try await flutter.addListener(alice.id, "k", listen: false).id
        try server.admin(["participant", "remove", roomName, "alice"])

        guard case .failure(let ended) = try await keys.next() else { return XCTFail("the key stream fails") }
        XCTAssertEqual(ended.code, "ROOM_ENDED")
        assertSame(ended.details, ["reason": "removed"])
        XCTAssertEqual(ended.message, "the room ended: removed")
        assertTrue(try await keys.next().isDone)
        let events = alice.events!
        let last = try await events.awaitEvent("the end") { $0["type"].asString == "connectionState" && $0["state"].asMap["state"].asString == "disconnected" }
        assertSame(last["state"], ["state": "disconnected", "reason": ["reason": "removed"]])
        assertTrue(try await events.next().isDone)
        // Listened channels close when Dart cancels after endOfStream, the other one at the end.
        try await eventually("every channel of the room closed: \(flutter.channels.openNames)") { self.flutter.channels.openNames.isEmpty }
        XCTAssertTrue(flutter.channels.closed().contains("\(keysChannelPrefix)\(neverListened)"))
        try await flutter.fails("NOT_CONNECTED", "get", ["room": alice.id, "key": "k"])
    }

    func testRoomEndedWhenAnotherConnectionTakesTheIdentity() async throws {
        let first = try await flutter.join(server, "alice")
        let keys = try await flutter.addListener(first.id, "k").stream!
        _ = try await keys.nextEvent()
        let second = try await flutter.join(server, "alice")
        guard case .failure(let ended) = try await keys.next() else { return XCTFail("the key stream fails") }
        XCTAssertEqual(ended.code, "ROOM_ENDED")
        assertSame(ended.details, ["reason": "duplicateIdentity"])
        assertTrue(try await keys.next().isDone)
        try await first.events!.awaitDone()
        try await flutter.fails("NOT_CONNECTED", "get", ["room": first.id, "key": "k"])
        assertSame(try await flutter.ok("connectionState", ["room": second.id]), ["state": "connected"])
    }
}

/// The mapping of every engine error, as a unit test: CONNECTION_LOST, UNAVAILABLE,
/// OUTCOME_UNKNOWN and INTERNAL cannot be made to happen on purpose against a healthy server.
final class ErrorMappingTests: XCTestCase {
    func testEveryEngineErrorMapsToItsCodeMessageAndDetails() {
        let entry = StoreEntry(key: "spotlight", valueJson: #"{"identity":"bob"}"#, version: 1, updatedBy: "bob", updatedAtMs: 1_796_134_273_582)
        struct Oops: Error {}
        let cases: [(any Error, String, String, Any?)] = [
            (RoomError.NotConnected(detail: "the room is disconnected"), "NOT_CONNECTED", "not connected: the room is disconnected", nil),
            (RoomError.Timeout(sent: true), "TIMEOUT", "timed out (request sent: true)", ["sent": true]),
            (RoomError.Timeout(sent: false), "TIMEOUT", "timed out (request sent: false)", ["sent": false]),
            (RoomError.ConnectionLost, "CONNECTION_LOST", "connection lost before the server answered", nil),
            (RoomError.LimitExceeded(limit: .attributesBytes, max: 65_536, actual: 70_000, detail: "too big"),
             "LIMIT_EXCEEDED", "limit exceeded: too big", ["limit": "attributesBytes", "max": 65_536, "actual": 70_000]),
            (RoomError.NotAllowed(detail: "no"), "NOT_ALLOWED", "not allowed: no", nil),
            (RoomError.Conflict(current: entry), "CONFLICT", "conflict: the key changed", ["current": entry.channelValue]),
            (RoomError.Conflict(current: nil), "CONFLICT", "conflict: the key changed", ["current": NSNull()]),
            (RoomError.InvalidValue(detail: "keys are non-empty"), "INVALID_VALUE", "invalid value: keys are non-empty", nil),
            (RoomError.InvalidToken(code: "token_expired", detail: "expired"), "INVALID_TOKEN", "token refused (token_expired): expired", ["code": "token_expired"]),
            (RoomError.Unavailable(detail: "the room's shared state cannot be reached"),
             "UNAVAILABLE", "unavailable: the room's shared state cannot be reached", nil),
            (RoomError.OutcomeUnknown(detail: "the room's shared state stopped answering; the change may still have been stored"),
             "OUTCOME_UNKNOWN", "outcome unknown: the room's shared state stopped answering; the change may still have been stored", nil),
            (RoomError.Connect(detail: "Connection refused"), "CONNECT", "cannot connect: Connection refused", nil),
            (RoomError.Internal(detail: "bug"), "INTERNAL", "internal error: bug", nil),
            (Oops(), "INTERNAL", "internal error: Oops()", nil),
            (ChannelError.badArguments("set needs a string 'key'"), "BAD_ARGUMENTS", "set needs a string 'key'", nil),
        ]
        for (error, code, message, details) in cases {
            let actual = channelError(error)
            XCTAssertEqual(actual.code, code, "\(error)")
            XCTAssertEqual(actual.message, message, "\(error)")
            assertSame(actual.details, details, "\(error)")
            var name = code
            if code == "CONFLICT" { name = (actual.details as? [String: Any])?["current"].isNull ?? true ? "CONFLICT.absent" : "CONFLICT.present" }
            let shape: [String: Any] = ["code": actual.code, "message": actual.message, "details": actual.details ?? NSNull()]
            XCTAssertNil(Vectors.mismatch(Vectors.error(name)!, shape), "\(name): \(shape)")
        }
        // Every way a room ends, as ROOM_ENDED's details.
        let reasons: [RoomDisconnectReason] = [.removed, .duplicateIdentity, .sessionEnded, .clientRequested, .tokenRefused(detail: "the access token has expired")]
        for reason in reasons {
            let ended = ChannelError.roomEnded(reason)
            XCTAssertEqual(ended.message, "the room ended: \(reason.channelName)")
            let shape: [String: Any] = ["code": ended.code, "message": ended.message, "details": ended.details ?? NSNull()]
            XCTAssertNil(Vectors.mismatch(Vectors.error("ROOM_ENDED")!, shape), "\(shape)")
        }
        assertSame(
            RoomDisconnectReason.tokenRefused(detail: "the access token has expired").channelValue,
            ["reason": "tokenRefused", "detail": "the access token has expired"]
        )
        let limits: [RoomLimit] = [.valueBytes, .keys, .storeBytes, .keyBytes, .attributesBytes, .metadataBytes, .nameBytes, .frameBytes]
        XCTAssertEqual(limits.map(\.channelName), ["valueBytes", "keys", "storeBytes", "keyBytes", "attributesBytes", "metadataBytes", "nameBytes", "frameBytes"])
    }

    /// Arguments as the iOS codec decodes them: an NSNumber is an integer only when made
    /// from one (objCType), not from a Bool or a Double.
    func testIntegersFromTheCodecAreToldFromBooleansAndDoubles() {
        XCTAssertEqual(Arguments.integerValue(NSNumber(value: Int32(7))), 7)
        XCTAssertEqual(Arguments.integerValue(NSNumber(value: Int64(1) << 40)), 1 << 40)
        XCTAssertEqual(Arguments.integerValue(7), 7)
        XCTAssertEqual(Arguments.integerValue(Int64(7)), 7)
        XCTAssertNil(Arguments.integerValue(NSNumber(value: true)))
        XCTAssertNil(Arguments.integerValue(NSNumber(value: 1.0)))
        XCTAssertNil(Arguments.integerValue(true))
        XCTAssertNil(Arguments.integerValue(1.0))
        XCTAssertNil(Arguments.integerValue(NSString(string: "1")))
    }
}
