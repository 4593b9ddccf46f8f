// What the tests share: a real `roomstate serve` process, tokens minted by the roomstate
// CLI (as an app's backend would mint them), a log of every state a model produced, and
// waiting for a condition with a generous bound. Adapted from
// bindings/swift/Tests/RoomStateTests/Fixtures.swift.
import Foundation
import RoomExampleModel
import RoomState
import RoomStateTesting
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let apiKey = "examplekey"
let apiSecret = "examplesecret"
let room = "example"

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

/// An access token for `identity` in the test room, minted by `roomstate token create`.
func token(_ identity: String, secret: String = apiSecret) throws -> String {
    try roomstateCLI(["token", "create", "--room", room, "--identity", identity, "--can-update-metadata"], apiSecret: secret)
}

/// Engine options for tests: reconnects without waiting long.
func fastOptions(pingIntervalMs: UInt64 = 5_000, pingTimeoutMs: UInt64 = 15_000) -> RoomConnectOptions {
    RoomConnectOptions(
        connectTimeoutMs: 3_000,
        pingIntervalMs: pingIntervalMs,
        pingTimeoutMs: pingTimeoutMs,
        reconnectBackoffMinMs: 20,
        reconnectBackoffMaxMs: 200
    )
}

/// Every state a model produced from now on, in order (its `stateChanges()`).
@MainActor
final class StateLog {
    private(set) var states: [RoomUIState] = []
    private var task: Task<Void, Never>?
    private let model: RoomModel

    init(_ model: RoomModel) {
        self.model = model
        let changes = model.stateChanges()
        task = Task { [weak self] in
            for await state in changes {
                self?.states.append(state)
            }
        }
    }

    /// Waits until the log has caught up with the model's current state, then stops it.
    func stop() async throws {
        try await eventually("the log catches up: \(states.last.map(String.init(describing:)) ?? "nothing")") {
            states.last == model.state
        }
        task?.cancel()
    }

    /// The connection states, with repeats in a row folded into one.
    var connections: [ConnectionStatus] {
        states.map(\.connection).reduce(into: []) { folded, connection in
            if folded.last != connection { folded.append(connection) }
        }
    }
}

/// A flag set from another thread (an Observation `onChange`).
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var raised = false

    func raise() {
        lock.lock()
        raised = true
        lock.unlock()
    }

    var isRaised: Bool {
        lock.lock()
        defer { lock.unlock() }
        return raised
    }
}

