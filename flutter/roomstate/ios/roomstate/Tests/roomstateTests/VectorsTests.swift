// The shape matcher the other tests apply to every delivery: it must tell a wrong shape.
// As the Android side's VectorsTest.kt.
import Foundation
import RoomStateTesting
import RoomState
@testable import roomstate
import XCTest

final class VectorsTests: XCTestCase {
    private let participant: [String: Any] = [
        "sid": "PA_1", "identity": "alice", "name": "", "metadata": "", "attributes": ["hand": "up"], "isLocal": true,
    ]

    private func with(_ map: [String: Any], _ key: String, _ value: Any?) -> [String: Any] {
        var changed = map
        changed[key] = value
        return changed
    }

    func testTheMatcherAcceptsTheShapesOfCHANNELSmdAndRefusesOthers() throws {
        let vector = try XCTUnwrap(Vectors.type("Participant"))
        XCTAssertNil(Vectors.mismatch(vector, participant))
        XCTAssertNil(Vectors.mismatch(vector, with(participant, "attributes", [String: String]())))
        XCTAssertNotNil(Vectors.mismatch(vector, with(participant, "sid", nil)), "a missing key")
        XCTAssertNotNil(Vectors.mismatch(vector, with(participant, "extra", 1)), "an extra key")
        XCTAssertNotNil(Vectors.mismatch(vector, with(participant, "isLocal", "true")), "a string for a boolean")
        XCTAssertNotNil(Vectors.mismatch(vector, with(participant, "isLocal", 1)), "an integer for a boolean")
        XCTAssertNotNil(Vectors.mismatch(vector, with(participant, "attributes", ["hand": 1])), "a map's value")

        let entry = try XCTUnwrap(Vectors.type("Entry"))
        let good: [String: Any] = ["key": "k", "valueJson": "1", "version": Int64(1), "updatedBy": "a", "updatedAtMs": Int64(2)]
        XCTAssertNil(Vectors.mismatch(entry, good))
        XCTAssertNil(Vectors.mismatch(entry, with(good, "version", 1)), "an Int")
        XCTAssertNotNil(Vectors.mismatch(entry, with(good, "version", UInt64(1))), "a UInt64 is not what the codec carries")
        XCTAssertNotNil(Vectors.mismatch(entry, with(good, "version", 1.0)), "a double for an integer")
        XCTAssertNotNil(Vectors.mismatch(entry, with(good, "version", true)), "a boolean for an integer")
        XCTAssertNotNil(Vectors.mismatch(entry, nil))

        let list = try XCTUnwrap(Vectors.result("remoteParticipants"))
        XCTAssertNil(Vectors.mismatch(list, [participant, participant]))
        XCTAssertNil(Vectors.mismatch(list, [Any]()))
        XCTAssertNotNil(Vectors.mismatch(list, [participant, with(participant, "name", nil)]), "every element")

        // Optional fields: reason only when disconnected, detail only for tokenRefused.
        let state = try XCTUnwrap(Vectors.result("connectionState"))
        XCTAssertNil(Vectors.mismatch(state, ["state": "connected"]))
        XCTAssertNil(Vectors.mismatch(state, ["state": "disconnected", "reason": ["reason": "removed"]]))
        XCTAssertNil(Vectors.mismatch(state, ["state": "disconnected", "reason": ["reason": "tokenRefused", "detail": "x"]]))
        XCTAssertNotNil(Vectors.mismatch(state, ["state": "disconnected", "reason": "removed"]))
        XCTAssertNotNil(Vectors.mismatch(try XCTUnwrap(Vectors.type("DisconnectReason")), ["detail": "x"]), "reason is required")

        // Null: NSNull inside a map; an Optional there is refused (the codec wants NSNull).
        let absent = try XCTUnwrap(Vectors.error("CONFLICT.absent"))
        XCTAssertNil(Vectors.mismatch(absent, ["code": "CONFLICT", "message": "m", "details": ["current": NSNull()]]))
        let optional: [String: Any?] = ["current": nil]
        XCTAssertNotNil(Vectors.mismatch(absent, ["code": "CONFLICT", "message": "m", "details": optional]))
        XCTAssertNotNil(Vectors.mismatch(absent, ["code": "CONFLICT", "message": "m", "details": ["current": good]]))
        XCTAssertNotNil(Vectors.mismatch(try XCTUnwrap(Vectors.error("NOT_CONNECTED")), ["code": "NOT_CONNECTED", "message": NSNull(), "details": NSNull()]))
    }

    func testEveryValueTheCodecProducesHasItsVectorsShape() throws {
        let state = RoomConnectionState.disconnected(reason: .tokenRefused(detail: "the access token has expired"))
        XCTAssertNil(Vectors.mismatch(try XCTUnwrap(Vectors.type("ConnectionState.disconnected")), state.channelValue))
        XCTAssertNil(Vectors.mismatch(try XCTUnwrap(Vectors.type("ConnectionState.connected")), RoomConnectionState.connected.channelValue))
        let participant = RoomParticipant(sid: "PA_1", identity: "bob", name: "", metadata: "", attributes: ["hand": "up"], isLocal: false)
        XCTAssertNil(Vectors.mismatch(try XCTUnwrap(Vectors.type("Participant")), participant.channelValue))
        // Values cross as the JSON text given, untouched.
        let entry = StoreEntry(key: "k", valueJson: #"{"a":[1,null,2.50]}"#, version: 3, updatedBy: "alice", updatedAtMs: 4)
        XCTAssertNil(Vectors.mismatch(try XCTUnwrap(Vectors.type("Entry")), entry.channelValue))
        XCTAssertEqual(entry.channelValue["valueJson"] as? String, #"{"a":[1,null,2.50]}"#)
        XCTAssertNil(Vectors.mismatch(try XCTUnwrap(Vectors.keyEvent("absent")), ["key": "k", "entry": channelValue(nil)]))
    }
}
