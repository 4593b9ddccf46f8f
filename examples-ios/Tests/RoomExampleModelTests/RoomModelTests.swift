// The example app's model, two of them (alice and bob) in one room on a real
// `roomstate serve` process: what each screen would show, state by state.
import Foundation
import RoomStateTesting
import Observation
import RoomExampleModel
import RoomState
import XCTest

@MainActor
final class RoomModelTests: XCTestCase {
    /// A model joined to `server`'s room as `identity`, its room screen shown.
    private func joined(_ identity: String, _ server: TestServer, options: RoomConnectOptions = fastOptions()) async throws -> RoomModel {
        let model = RoomModel(options: options)
        await model.connect(url: server.url, token: try token(identity))
        XCTAssertEqual(model.state.connection, .connected, "\(identity): \(model.state)")
        XCTAssertEqual(model.state.localIdentity, identity)
        return model
    }

    /// alice and bob, each seeing both in the participant list.
    private func aliceAndBob(_ server: TestServer, options: RoomConnectOptions = fastOptions()) async throws -> (RoomModel, RoomModel) {
        let alice = try await joined("alice", server, options: options)
        let bob = try await joined("bob", server, options: options)
        try await eventually("both see both: \(alice.state.participants), \(bob.state.participants)") {
            alice.state.participants.map(\.identity) == ["alice", "bob"] && bob.state.participants.map(\.identity) == ["alice", "bob"]
        }
        return (alice, bob)
    }

    private func hand(of identity: String, in model: RoomModel) -> Bool? {
        model.state.participants.first { $0.identity == identity }?.handRaised
    }

    func testPinnedMessageSetByOneIsSeenByBothFromTheFirstFrame() async throws {
        let server = try TestServer()
        let alice = try await joined("alice", server)
        await alice.pin("Welcome!")
        try await eventually("alice sees her message: \(alice.state)") {
            alice.state.pinned == Pinned(text: "Welcome!", by: "alice")
        }

        // bob joins after: no state that shows the room lacks the message.
        let bob = RoomModel(options: fastOptions())
        let bobLog = StateLog(bob)
        await bob.connect(url: server.url, token: try token("bob"))
        XCTAssertEqual(bob.state.connection, .connected)
        XCTAssertEqual(bob.state.pinned, Pinned(text: "Welcome!", by: "alice"))
        try await bobLog.stop()
        XCTAssertEqual(bobLog.connections, [.idle, .connecting, .connected])
        let shown = bobLog.states.filter(\.inRoom)
        XCTAssertFalse(shown.isEmpty)
        for state in shown {
            XCTAssertEqual(state.pinned, Pinned(text: "Welcome!", by: "alice"), "a frame without the pinned message: \(state)")
        }

        // bob pins; alice sees it, and Observation tells SwiftUI to redraw.
        let redraw = Flag()
        withObservationTracking { _ = alice.state } onChange: { redraw.raise() }
        await bob.pin("  Bob here  ")
        try await eventually("both see bob's message: \(alice.state), \(bob.state)") {
            alice.state.pinned == Pinned(text: "Bob here", by: "bob") && bob.state.pinned == Pinned(text: "Bob here", by: "bob")
        }
        XCTAssertTrue(redraw.isRaised, "Observation reported the change")

        // Cleared by either, for both.
        await alice.unpin()
        try await eventually("both see nothing pinned") { alice.state.pinned == nil && bob.state.pinned == nil }
        XCTAssertNil(alice.state.notice)
        XCTAssertNil(bob.state.notice)
        await alice.disconnect()
        await bob.disconnect()
    }

    func testSpotlightRaceHasExactlyOneWinnerAndTheLoserIsTold() async throws {
        let server = try TestServer()
        let (alice, bob) = try await aliceAndBob(server)
        XCTAssertNil(alice.state.spotlightHolder)
        XCTAssertEqual(alice.state.spotlightVersion, 0)

        // Both claim at once, each at the version it saw (0: nobody has it): both tasks are
        // queued on the main actor before either claim can hear of the other's.
        let aliceClaims = Task { await alice.claimSpotlight() }
        let bobClaims = Task { await bob.claimSpotlight() }
        await aliceClaims.value
        await bobClaims.value

        // Once both calls returned, both show the winner: the winner from its write's reply
        // (or the store's stream), the loser from the entry its Conflict carried.
        let winner = try XCTUnwrap(alice.state.spotlightHolder, "\(alice.state)")
        XCTAssertEqual(bob.state.spotlightHolder, winner, "\(bob.state)")
        XCTAssertEqual(alice.state.spotlightVersion, bob.state.spotlightVersion)
        XCTAssertGreaterThan(alice.state.spotlightVersion, 0)
        let (won, lost) = winner == "alice" ? (alice, bob) : (bob, alice)
        XCTAssertTrue(won.state.hasSpotlight)
        XCTAssertFalse(lost.state.hasSpotlight)
        XCTAssertNil(won.state.notice, "the winner is told nothing")
        XCTAssertEqual(lost.state.notice, "\(winner) took the spotlight first")
        lost.dismissNotice()
        XCTAssertNil(lost.state.notice)

        // Only the holder can release it.
        await lost.releaseSpotlight()
        XCTAssertEqual(lost.state.notice, "You don't have the spotlight")
        XCTAssertEqual(lost.state.spotlightHolder, winner)
        await won.releaseSpotlight()
        try await eventually("both show nobody") { alice.state.spotlightHolder == nil && bob.state.spotlightHolder == nil }

        // Free again: the other takes it, and then it can be taken from them at the version seen.
        let loser = try XCTUnwrap(lost.state.localIdentity)
        await lost.claimSpotlight()
        try await eventually("both show \(loser)") {
            alice.state.spotlightHolder == loser && bob.state.spotlightHolder == loser
        }
        await won.claimSpotlight()
        try await eventually("both show \(winner) again") {
            alice.state.spotlightHolder == winner && bob.state.spotlightHolder == winner
        }
        XCTAssertNil(won.state.notice)
        await alice.disconnect()
        await bob.disconnect()
    }

    func testRaisedHandIsSeenInTheOthersParticipantList() async throws {
        let server = try TestServer()
        let (alice, bob) = try await aliceAndBob(server)
        XCTAssertEqual(bob.state.participants.map(\.isLocal), [false, true], "alice, then bob (this one)")
        XCTAssertEqual(hand(of: "alice", in: bob), false)

        await alice.raiseHand(true)
        try await eventually("bob sees alice's hand up: \(bob.state.participants)") { self.hand(of: "alice", in: bob) == true }
        try await eventually("alice sees her own hand up") { alice.state.handRaised }
        XCTAssertEqual(hand(of: "bob", in: bob), false)
        XCTAssertEqual(bob.state.participants.map(\.identity), ["alice", "bob"])

        await alice.raiseHand(false)
        try await eventually("bob sees alice's hand down: \(bob.state.participants)") { self.hand(of: "alice", in: bob) == false }
        try await eventually("alice sees her own hand down") { !alice.state.handRaised }

        // bob leaves: alice's list has only her.
        await bob.disconnect()
        XCTAssertEqual(bob.state, RoomUIState(), "bob is back on the connect screen")
        try await eventually("alice sees bob leave: \(alice.state.participants)") {
            alice.state.participants.map(\.identity) == ["alice"]
        }
        await alice.disconnect()
    }

    func testReconnectThroughACutKeepsTheRoomShownWithoutFlicker() async throws {
        let server = try TestServer()
        // Pings every 200 ms, a silent link given up after 1 s.
        let options = fastOptions(pingIntervalMs: 200, pingTimeoutMs: 1_000)
        let (alice, bob) = try await aliceAndBob(server, options: options)
        await alice.pin("Stay put")
        await alice.claimSpotlight()
        await bob.raiseHand(true)
        for model in [alice, bob] {
            try await eventually("the room as set up: \(model.state)") {
                model.state.pinned == Pinned(text: "Stay put", by: "alice") && model.state.spotlightHolder == "alice"
                    && self.hand(of: "bob", in: model) == true
            }
        }
        let expected = alice.state

        let logs = [StateLog(alice), StateLog(bob)]
        server.freeze(true)
        try await eventually("both notice the cut: \(alice.state.connection), \(bob.state.connection)") {
            alice.state.connection == .reconnecting && bob.state.connection == .reconnecting
        }
        server.freeze(false)
        // What the app does when NWPathMonitor reports a path change: resume at once.
        alice.networkChanged()
        try await eventually("both back: \(alice.state.connection), \(bob.state.connection)") {
            alice.state.connection == .connected && bob.state.connection == .connected
        }

        for (name, log) in zip(["alice", "bob"], logs) {
            try await log.stop()
            XCTAssertGreaterThan(log.states.count, 2, name)
            for state in log.states {
                // Never reset, never empty: the last known room stays shown.
                XCTAssertEqual(state.pinned, expected.pinned, "\(name): \(state)")
                XCTAssertEqual(state.spotlightHolder, "alice", "\(name): \(state)")
                XCTAssertEqual(state.spotlightVersion, expected.spotlightVersion, "\(name): \(state)")
                XCTAssertEqual(state.participants.map(\.identity), ["alice", "bob"], "\(name): \(state)")
                XCTAssertEqual(state.participants.map(\.handRaised), [false, true], "\(name): \(state)")
                XCTAssertTrue(state.inRoom, "\(name): \(state)")
                XCTAssertNil(state.notice, "\(name): \(state)")
            }
            // The banner: Reconnecting, then gone (Connected); nothing else in between.
            let connections = log.connections
            XCTAssertEqual(connections.first, .connected, name)
            XCTAssertEqual(connections.dropFirst().first, .reconnecting, name)
            XCTAssertEqual(connections.last, .connected, name)
            XCTAssertEqual(Set(connections.map { "\($0)" }), ["connected", "reconnecting"], name)
            XCTAssertEqual(log.states.first(where: { $0.connection == .reconnecting })?.banner, "Reconnecting…")
        }

        // And it works on: a write after the cut reaches the other.
        await bob.pin("after the cut")
        try await eventually("alice sees bob's message") { alice.state.pinned == Pinned(text: "after the cut", by: "bob") }
        await alice.disconnect()
        await bob.disconnect()
    }

    func testErrorsBecomeADisconnectedStateOrANoticeNotACrash() async throws {
        let server = try TestServer()
        let model = RoomModel(options: fastOptions())

        // Actions before joining: a notice.
        await model.pin("nobody hears this")
        XCTAssertEqual(model.state.notice, "Pinning failed: not in a room")
        await model.claimSpotlight()
        XCTAssertEqual(model.state.notice, "Claiming the spotlight failed: not in a room")
        XCTAssertEqual(model.state.connection, .idle)

        // A token signed with the wrong secret: refused.
        let log = StateLog(model)
        await model.connect(url: server.url, token: try token("mallory", secret: "not-the-secret"))
        guard case .disconnected(let reason) = model.state.connection else {
            return XCTFail("expected disconnected: \(model.state)")
        }
        XCTAssertTrue(reason.hasPrefix("the token was refused"), reason)
        XCTAssertEqual(model.state.notice, "Could not join: \(reason)")
        XCTAssertEqual(model.state.banner, "Disconnected: \(reason)")
        XCTAssertFalse(model.state.inRoom)
        XCTAssertEqual(model.state.participants, [])
        try await log.stop()
        XCTAssertEqual(log.connections, [.idle, .connecting, .disconnected(reason: reason)])

        // Not a token at all, and nothing listening: the same.
        await model.connect(url: server.url, token: "not-a-jwt")
        guard case .disconnected = model.state.connection else { return XCTFail("\(model.state)") }
        XCTAssertNotNil(model.state.notice)
        await model.connect(url: "ws://127.0.0.1:1", token: try token("alice"))
        guard case .disconnected(let unreachable) = model.state.connection else { return XCTFail("\(model.state)") }
        XCTAssertTrue(unreachable.hasPrefix("could not reach the server"), unreachable)

        // And the model still joins with a good one.
        await model.connect(url: server.url, token: try token("alice"))
        XCTAssertEqual(model.state.connection, .connected)
        XCTAssertNil(model.state.notice)
        XCTAssertEqual(model.state.participants.map(\.identity), ["alice"])
        await model.disconnect()
        XCTAssertEqual(model.state, RoomUIState())
    }

    func testRemovalByTheServerShowsTheReason() async throws {
        let server = try TestServer()
        let (alice, bob) = try await aliceAndBob(server)
        await alice.pin("bye bob")
        try roomstateCLI(["participant", "remove", room, "bob", "--url", server.httpURL])
        try await eventually("bob is told: \(bob.state)") {
            bob.state.connection == .disconnected(reason: "you were removed from the room")
        }
        XCTAssertFalse(bob.state.inRoom)
        XCTAssertEqual(bob.state.banner, "Disconnected: you were removed from the room")
        try await eventually("alice sees bob leave") { alice.state.participants.map(\.identity) == ["alice"] }
        await bob.pin("too late")
        XCTAssertEqual(bob.state.notice, "Pinning failed: not in a room")
        await alice.disconnect()
    }

    func testNetworkChangeOnAHealthyLinkResumesAtOnceWithoutFlicker() async throws {
        let server = try TestServer()
        // A backoff far longer than the test waits: the resume must not wait for it.
        let options = RoomConnectOptions(reconnectBackoffMinMs: 120_000, reconnectBackoffMaxMs: 120_000)
        let (alice, bob) = try await aliceAndBob(server, options: options)
        await bob.pin("still here")
        try await eventually("alice sees the message") { alice.state.pinned?.text == "still here" }

        let log = StateLog(alice)
        alice.networkChanged() // NWPathMonitor reported a new path, or the scene became active
        try await eventually("reconnecting then connected: \(log.connections)") {
            log.connections == [.connected, .reconnecting, .connected]
        }
        try await log.stop()
        for state in log.states {
            XCTAssertEqual(state.pinned?.text, "still here", "\(state)")
            XCTAssertEqual(state.participants.map(\.identity), ["alice", "bob"], "\(state)")
        }
        try await eventually("bob saw nothing: alice is still there") { bob.state.participants.map(\.identity) == ["alice", "bob"] }
        await alice.disconnect()
        await bob.disconnect()
    }
}
