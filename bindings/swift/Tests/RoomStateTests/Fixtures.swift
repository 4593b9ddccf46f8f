// What the tests share: a real `roomstate serve` process, tokens minted by the roomstate
// CLI (as an app backend would mint them; no CryptoKit, so this runs on Linux too), a
// listener that records what it hears, and waiting for a condition with a generous bound.
// Mirrors bindings/kotlin/src/test/kotlin/io/roomstate/Fixtures.kt.
import Foundation
import RoomState
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let apiKey = "swiftkey"
let apiSecret = "swiftsecret"

/// The roomstate binary: ROOMSTATE_BIN, set by scripts/test-swift.sh.
func roomstateBinary() throws -> String {
    guard let binary = ProcessInfo.processInfo.environment["ROOMSTATE_BIN"], !binary.isEmpty else {
        throw XCTSkip("set ROOMSTATE_BIN to the roomstate binary (scripts/test-swift.sh does)")
    }
    return binary
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
        throw CLIFailed(arguments: arguments, status: process.terminationStatus, output: text)
    }
    return text
}

struct CLIFailed: Error, CustomStringConvertible {
    let arguments: [String]
    let status: Int32
    let output: String
    var description: String { "roomstate \(arguments.joined(separator: " ")) exited with \(status): \(output)" }
}

/// An access token minted by `roomstate token create`.
func token(
    _ identity: String,
    room: String = "swift-room",
    canUpdateMetadata: Bool = true,
    readOnlyStore: Bool = false,
    hidden: Bool = false,
    secret: String = apiSecret
) throws -> String {
    var arguments = ["token", "create", "--room", room, "--identity", identity]
    if canUpdateMetadata { arguments.append("--can-update-metadata") }
    if readOnlyStore { arguments.append("--read-only-store") }
    if hidden { arguments.append("--hidden") }
    return try roomstateCLI(arguments, apiSecret: secret)
}

/// A real `roomstate serve` process on a free port.
final class TestServer: @unchecked Sendable {
    private var process: Process
    /// `ws://127.0.0.1:PORT`, for clients.
    let url: String
    /// `http://127.0.0.1:PORT`, for the CLI's server API calls.
    var httpURL: String { url.replacingOccurrences(of: "ws://", with: "http://") }

    init() throws {
        (process, url) = try Self.start(bind: "127.0.0.1:0")
    }

    private static func start(bind: String) throws -> (Process, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try roomstateBinary())
        process.arguments = ["serve", "--bind", bind, "--keys", "\(apiKey):\(apiSecret)"]
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
            process.terminate()
            throw CLIFailed(arguments: ["serve"], status: -1, output: "unexpected first line: \(text)")
        }
        return (process, String(text.dropFirst(prefix.count)))
    }

    /// Freezes or thaws the server process (SIGSTOP, SIGCONT), as an overloaded or
    /// unreachable server would be.
    func freeze(_ frozen: Bool) {
        kill(process.processIdentifier, frozen ? SIGSTOP : SIGCONT)
        if frozen { waitUntilStopped() }
    }

    /// `kill` returns before every thread of the server has stopped: each stops when it
    /// next runs, and on a busy machine one may first answer a request. Waits (Linux:
    /// /proc, at most 5 s) until all have.
    private func waitUntilStopped() {
        #if os(Linux)
        let task = "/proc/\(process.processIdentifier)/task"
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            let threads = (try? FileManager.default.contentsOfDirectory(atPath: task)) ?? []
            let stopped = !threads.isEmpty && threads.allSatisfy { thread in
                // `PID (COMM) STATE ...`: T when stopped.
                guard let stat = try? String(contentsOfFile: "\(task)/\(thread)/stat", encoding: .utf8),
                      let comm = stat.lastIndex(of: ")") else { return false }
                return stat[stat.index(after: comm)...].trimmingCharacters(in: .whitespaces).first == "T"
            }
            if stopped { return }
            usleep(1_000)
        }
        #endif
    }

    /// Stops the server and starts a new one on the same address: rooms, sessions and
    /// resume tokens are gone, as after a restart of a server that keeps rooms in memory.
    func restart() throws {
        stop()
        (process, _) = try Self.start(bind: String(url.dropFirst("ws://".count)))
    }

    func stop() {
        // SIGKILL: a child Foundation's Process starts on Linux inherits a signal mask
        // that blocks SIGTERM (and SIGINT), so terminate() would not end it.
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

/// Options that reconnect fast; `requestTimeoutMs` shorter for the timeout test.
func fastOptions(requestTimeoutMs: UInt64 = 10_000, fallbackUrls: [String] = []) -> RoomConnectOptions {
    RoomConnectOptions(
        requestTimeoutMs: requestTimeoutMs, reconnectBackoffMinMs: 20, reconnectBackoffMaxMs: 200, fallbackUrls: fallbackUrls
    )
}

/// A value shared between a test and the callbacks or tasks it starts.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func callAsFunction() -> Value {
        lock.lock()
        defer { lock.unlock() }
        return value
    }

    func update<T>(_ change: (inout Value) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return change(&value)
    }
}

/// Records every call, for assertions.
final class Recorder: DefaultRoomListener, KeyChangeListener, @unchecked Sendable {
    private let recorded = Locked<[String]>([])
    private let threadNames = Locked<[String]>([])
    private let connectionStates = Locked<[RoomConnectionState]>([])
    var events: [String] { recorded() }
    /// Every connection state heard, in order.
    var states: [RoomConnectionState] { connectionStates() }
    var threads: [String] { threadNames() }

    private func record(_ event: String) { recorded.update { $0.append(event) } }

    func onKeyChanged(key: String, entry: StoreEntry?) throws {
        threadNames.update { $0.append(currentThreadName()) }
        record("\(key)=\(entry?.valueJson ?? "nil")")
    }

    override func onSessionStoreAvailable(store: SessionStore) throws { record("store-available") }
    override func onConnectionStateChanged(state: RoomConnectionState) throws {
        connectionStates.update { $0.append(state) }
        record("state:\(state)")
    }
    override func onParticipantJoined(participant: RoomParticipant) throws { record("joined:\(participant.identity)") }
    override func onParticipantLeft(participant: RoomParticipant) throws { record("left:\(participant.identity)") }
    override func onAttributesChanged(participant: RoomParticipant, changedKeys: [String]) throws {
        record("attributes:\(participant.identity):\(changedKeys.sorted())")
    }
    override func onMetadataChanged(participant: RoomParticipant, oldMetadata: String, newMetadata: String) throws {
        record("metadata:\(participant.identity):\(oldMetadata)->\(newMetadata)")
    }

    /// Waits until `event` was recorded; fails after a generous bound.
    func wait(for event: String, file: StaticString = #filePath, line: UInt = #line) async throws {
        try await eventually("\(event) in \(events)", file: file, line: line) { self.events.contains(event) }
    }

    func keyEvents(_ key: String) -> [String] { events.filter { $0.hasPrefix("\(key)=") } }
    func count(_ event: String) -> Int { events.filter { $0 == event }.count }
}

/// A weak reference, for checking that nothing holds an object any more.
struct Weak<Object: AnyObject> {
    weak var object: Object?

    init(_ object: Object) { self.object = object }
}

struct ConditionNotMet: Error, CustomStringConvertible {
    let description: String
}

/// Polls `condition` until it holds; fails with `what` after 20 s. Not a timing assertion.
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

func currentThreadName() -> String {
    #if os(Linux)
    let comm = try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)
    return comm?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    #else
    return Thread.current.name ?? ""
    #endif
}

/// The names of this process's threads that belong to the engine (Linux: /proc).
func engineThreads() -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.compactMap { task in
        (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }.filter { $0.hasPrefix("roomstate-") }
}

/// Codable, as an app's values would be.
struct Pinned: Codable, Equatable, Sendable {
    let text: String
    let by: String
}

/// Runs `body` and returns the error it threw, or fails if it threw none.
func thrown<T>(
    file: StaticString = #filePath,
    line: UInt = #line,
    _ body: () async throws -> T
) async -> (any Error)? {
    do {
        _ = try await body()
        XCTFail("expected an error", file: file, line: line)
        return nil
    } catch {
        return error
    }
}
