// What the tests share: a real `roomstate serve` process, tokens minted by the roomstate CLI
// (as an app backend would mint them), other participants joined through the RoomState
// Swift package directly (another device), and waiting for a condition with a generous
// bound. As bindings/swift/Tests/RoomStateTests/Fixtures.swift, and the Android side's
// android/src/test/kotlin/io/roomstate/flutter/core/Fixtures.kt.
import Foundation
import RoomState
@testable import roomstate
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let apiKey = "flutterkey"
let apiSecret = "fluttersecret"
let roomName = "flutter-room"

/// The roomstate binary: ROOMSTATE_BIN, set by ios/test.sh.
func roomstateBinary() throws -> String {
    guard let binary = ProcessInfo.processInfo.environment["ROOMSTATE_BIN"], !binary.isEmpty else {
        throw XCTSkip("set ROOMSTATE_BIN to the roomstate binary (flutter/roomstate/ios/test.sh does)")
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
        throw CLIFailed(description: "roomstate \(arguments.joined(separator: " ")) exited with \(process.terminationStatus): \(text)")
    }
    return text
}

struct CLIFailed: Error, CustomStringConvertible {
    let description: String
}

/// An access token minted by `roomstate token create`.
func token(_ identity: String, canUpdateMetadata: Bool = true, secret: String = apiSecret) throws -> String {
    var arguments = ["token", "create", "--room", roomName, "--identity", identity]
    if canUpdateMetadata { arguments.append("--can-update-metadata") }
    return try roomstateCLI(arguments, apiSecret: secret)
}

/// A real `roomstate serve` process on a free port.
final class TestServer: @unchecked Sendable {
    private let process: Process
    /// `ws://127.0.0.1:PORT`, for clients.
    let url: String
    /// `http://127.0.0.1:PORT`, for the CLI's server API calls.
    var httpURL: String { url.replacingOccurrences(of: "ws://", with: "http://") }

    init(_ extraArguments: [String] = []) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: try roomstateBinary())
        process.arguments = ["serve", "--bind", "127.0.0.1:0", "--keys", "\(apiKey):\(apiSecret)"] + extraArguments
        var environment = ProcessInfo.processInfo.environment
        environment["ROOMSTATE_LOG"] = "warn"
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        // Not this process's stderr: a server left behind by a crashed test run would keep
        // `swift test` waiting for the end of it.
        process.standardError = FileHandle.nullDevice
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

    /// The server API through the `roomstate` command line, as an operator would use it.
    func admin(_ arguments: [String]) throws {
        try roomstateCLI(arguments + ["--url", httpURL])
    }

    /// Freezes or thaws the server process (SIGSTOP, SIGCONT), as an overloaded or
    /// unreachable server would be.
    func freeze(_ frozen: Bool) {
        kill(process.processIdentifier, frozen ? SIGSTOP : SIGCONT)
        if frozen { waitUntilStopped() }
    }

    /// `kill` returns before every thread of the server has stopped (Linux: waits on /proc,
    /// at most 5 s, until all have).
    private func waitUntilStopped() {
        #if os(Linux)
        let task = "/proc/\(process.processIdentifier)/task"
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            let threads = (try? FileManager.default.contentsOfDirectory(atPath: task)) ?? []
            let stopped = !threads.isEmpty && threads.allSatisfy { thread in
                guard let stat = try? String(contentsOfFile: "\(task)/\(thread)/stat", encoding: .utf8),
                      let comm = stat.lastIndex(of: ")") else { return false }
                return stat[stat.index(after: comm)...].trimmingCharacters(in: .whitespaces).first == "T"
            }
            if stopped { return }
            usleep(1_000)
        }
        #endif
    }

    func stop() {
        // SIGKILL: a child Foundation's Process starts on Linux inherits a signal mask that
        // blocks SIGTERM, so terminate() would not end it.
        if process.isRunning {
            kill(process.processIdentifier, SIGCONT)
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

/// `connect`'s options as Dart sends them: fast reconnects, a request timeout to choose.
func fastOptions(requestTimeoutMs: Int = 10_000) -> [String: Any] {
    ["requestTimeoutMs": requestTimeoutMs, "reconnectBackoffMinMs": 20, "reconnectBackoffMaxMs": 200]
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

    @discardableResult
    func update<T>(_ change: (inout Value) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return change(&value)
    }
}

/// Another participant, joined through the RoomState Swift package directly (another device).
final class Peer: DefaultRoomListener, @unchecked Sendable {
    private let heardEvents = Locked<[String]>([])
    private let joined = Locked<RoomConnection?>(nil)
    var heard: [String] { heardEvents() }
    var room: RoomConnection { joined()! }

    static func join(_ server: TestServer, _ identity: String) async throws -> Peer {
        let peer = Peer()
        let options = RoomConnectOptions(reconnectBackoffMinMs: 20, reconnectBackoffMaxMs: 200)
        let room = try await RoomConnection.connect(url: server.url, token: try token(identity), listener: peer, options: options)
        peer.joined.update { $0 = room }
        return peer
    }

    override func onParticipantJoined(participant: RoomParticipant) throws { heardEvents.update { $0.append("joined:\(participant.identity)") } }
    override func onParticipantLeft(participant: RoomParticipant) throws { heardEvents.update { $0.append("left:\(participant.identity)") } }

    func awaitHeard(_ event: String, file: StaticString = #filePath, line: UInt = #line) async throws {
        try await eventually("\(event) in \(heard)", file: file, line: line) { self.heard.contains(event) }
    }

    func leave() async {
        await joined()?.disconnect()
    }
}

struct ConditionNotMet: Error, CustomStringConvertible {
    let description: String
}

/// Polls `condition` until it holds; fails with `what` after 20 s. Not a timing assertion.
func eventually(
    _ what: @autoclosure () -> String,
    seconds: TimeInterval = 20,
    file: StaticString = #filePath,
    line: UInt = #line,
    _ condition: () async throws -> Bool
) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while try await !condition() {
        if Date() > deadline {
            XCTFail("not met within \(Int(seconds)) s: \(what())", file: file, line: line)
            throw ConditionNotMet(description: what())
        }
        try await Task.sleep(nanoseconds: 5_000_000)
    }
}

func sleep(ms: UInt64) async throws {
    try await Task.sleep(nanoseconds: ms * 1_000_000)
}

/// The names of this process's threads that belong to the engine (Linux: /proc).
func engineThreads() -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.compactMap { task in
        (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }.filter { $0.hasPrefix("roomstate-") }
}

// MARK: Reading channel values in assertions

/// Two channel values are the same: NSNull is nil, every integer type is one, maps and lists
/// element by element; a Bool is only ever a Bool.
func same(_ a: Any?, _ b: Any?) -> Bool {
    guard let a = plain(a), let b = plain(b) else { return plain(a) == nil && plain(b) == nil }
    if let x = integer(a) { return integer(b) == x }
    if type(of: a) == Bool.self || type(of: b) == Bool.self {
        return type(of: a) == type(of: b) && (a as? Bool) == (b as? Bool)
    }
    if let x = a as? String { return (b as? String) == x }
    if let x = a as? [String: Any] {
        guard let y = b as? [String: Any] else { return false }
        return Set(x.keys) == Set(y.keys) && x.keys.allSatisfy { same(x[$0], y[$0]) }
    }
    if let x = a as? [Any] {
        guard let y = b as? [Any] else { return false }
        return x.count == y.count && zip(x, y).allSatisfy { same($0, $1) }
    }
    return false
}



/// An integer channel value (Int, Int64, Int32), nil for anything else.
func integer(_ value: Any?) -> Int64? {
    guard let value = plain(value) else { return nil }
    switch value {
    case let int as Int where type(of: value) == Int.self: return Int64(int)
    case let int as Int64 where type(of: value) == Int64.self: return int
    case let int as Int32 where type(of: value) == Int32.self: return Int64(int)
    default: return nil
    }
}

func assertSame(_ actual: Any?, _ expected: Any?, _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertTrue(same(actual, expected), "\(describe(actual)) is not \(describe(expected)) \(message)", file: file, line: line)
}

func describe(_ value: Any?) -> String {
    guard let value = plain(value) else { return "null" }
    return "\(value)"
}

extension Optional where Wrapped == Any {
    /// This channel value as a map (empty if it is none), a list of maps, a string, an integer.
    var asMap: [String: Any] { (plain(self) as? [String: Any]) ?? [:] }
    var asList: [[String: Any]] { (plain(self) as? [Any])?.compactMap { $0 as? [String: Any] } ?? [] }
    var asString: String? { plain(self) as? String }
    var asInt: Int64? { integer(self) }
    var isNull: Bool { plain(self) == nil }
}

/// The identities of a list of participants.
func identities(_ value: Any?) -> [String] {
    value.asList.compactMap { $0["identity"].asString }
}

// XCTest's assertions take autoclosures, which cannot await: these take values.

func assertNil(_ value: Any?, _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertTrue(plain(value) == nil, "\(describe(value)) is not null \(message)", file: file, line: line)
}

func assertTrue(_ value: Bool, _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertTrue(value, message, file: file, line: line)
}

func assertEqual<T: Equatable>(_ actual: T, _ expected: T, _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual, expected, message, file: file, line: line)
}
