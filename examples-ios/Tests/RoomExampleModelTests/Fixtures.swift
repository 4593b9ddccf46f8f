// What the tests share: a real `roomstate serve` process, tokens minted by the roomstate
// CLI (as an app's backend would mint them), a log of every state a model produced, and
// waiting for a condition with a generous bound. Adapted from
// bindings/swift/Tests/RoomStateTests/Fixtures.swift.
import Foundation
import RoomExampleModel
import RoomState
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let apiKey = "examplekey"
let apiSecret = "examplesecret"
let room = "example"

/// The roomstate binary: ROOMSTATE_BIN (test.sh sets it), else the cargo build's
/// target/debug/roomstate next to this package.
func roomstateBinary() throws -> String {
    if let binary = ProcessInfo.processInfo.environment["ROOMSTATE_BIN"], !binary.isEmpty {
        return binary
    }
    let built = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("target/debug/roomstate").path
    guard FileManager.default.isExecutableFile(atPath: built) else {
        throw XCTSkip("set ROOMSTATE_BIN to the roomstate binary (examples-ios/test.sh does)")
    }
    return built
}

/// Runs the roomstate CLI and returns what it printed; fails unless it succeeded.
@discardableResult
func roomstateCLI(_ arguments: [String], apiSecret secret: String = apiSecret) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try roomstateBinary())
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    environment["ROOMSTATE_API_KEY"] = apiKey
    environment["ROOMSTATE_API_SECRET"] = secret
    process.environment = environment
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let printed = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: printed, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    guard process.terminationStatus == 0 else {
        throw CLIFailed(description: "roomstate \(arguments.joined(separator: " ")) exited with \(process.terminationStatus): \(text)")
    }
    return text
}

struct CLIFailed: Error, CustomStringConvertible {
    let description: String
}

/// An access token for `identity` in the test room, minted by `roomstate token create`.
func token(_ identity: String, secret: String = apiSecret) throws -> String {
    try roomstateCLI(["token", "create", "--room", room, "--identity", identity, "--can-update-metadata"], apiSecret: secret)
}

/// A real `roomstate serve` process on a free port, stopped when released.
final class TestServer: @unchecked Sendable {
    private let process = Process()
    /// `ws://127.0.0.1:PORT`, for clients.
    let url: String
    /// `http://127.0.0.1:PORT`, for the CLI's server API calls.
    var httpURL: String { url.replacingOccurrences(of: "ws://", with: "http://") }

    init() throws {
        process.executableURL = URL(fileURLWithPath: try roomstateBinary())
        process.arguments = ["serve", "--bind", "127.0.0.1:0", "--keys", "\(apiKey):\(apiSecret)"]
        var environment = ProcessInfo.processInfo.environment
        environment["ROOMSTATE_LOG"] = "warn"
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        // The first line on stdout is `roomstate listening on ws://ADDRESS`.
        var line = Data()
        while let byte = try output.fileHandleForReading.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8) {
            line.append(byte)
        }
        let text = String(decoding: line, as: UTF8.self)
        let prefix = "roomstate listening on "
        guard text.hasPrefix(prefix + "ws://") else {
            kill(process.processIdentifier, SIGKILL)
            throw CLIFailed(description: "roomstate serve: unexpected first line: \(text)")
        }
        url = String(text.dropFirst(prefix.count))
    }

    /// Freezes or thaws the server (SIGSTOP, SIGCONT), as a link that went silent would be:
    /// the clients hear nothing, and notice only by their ping timeout.
    func freeze(_ frozen: Bool) {
        kill(process.processIdentifier, frozen ? SIGSTOP : SIGCONT)
        if frozen { waitUntilStopped() }
    }

    /// `kill` returns before every thread of the server has stopped: each stops when it next
    /// runs, and on a busy machine one may first answer a ping. Waits (Linux: /proc, at most
    /// 5 s) until all have.
    private func waitUntilStopped() {
        #if os(Linux)
        let tasks = "/proc/\(process.processIdentifier)/task"
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            let threads = (try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? []
            let stopped = !threads.isEmpty && threads.allSatisfy { thread in
                // `PID (COMM) STATE ...`: T when stopped.
                guard let stat = try? String(contentsOfFile: "\(tasks)/\(thread)/stat", encoding: .utf8),
                      let comm = stat.lastIndex(of: ")") else { return false }
                return stat[stat.index(after: comm)...].trimmingCharacters(in: .whitespaces).first == "T"
            }
            if stopped { return }
            usleep(1_000)
        }
        #endif
    }

    func stop() {
        // SIGKILL: a child that Foundation's Process starts on Linux inherits a signal mask
        // that blocks SIGTERM, so terminate() would not end it. SIGCONT in case it is frozen.
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            kill(process.processIdentifier, SIGCONT)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
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

struct ConditionNotMet: Error, CustomStringConvertible {
    let description: String
}

/// Polls `condition` until it holds; fails with `what` after 20 s. Not a timing assertion:
/// the bound is generous, for a busy machine.
@MainActor
func eventually(
    _ what: @autoclosure () -> String,
    file: StaticString = #filePath,
    line: UInt = #line,
    _ condition: () async throws -> Bool
) async throws {
    let deadline = Date().addingTimeInterval(20)
    while try await !condition() {
        if Date() > deadline {
            XCTFail("not met within 20 s: \(what())", file: file, line: line)
            throw ConditionNotMet(description: what())
        }
        try await Task.sleep(nanoseconds: 10_000_000)
    }
}
