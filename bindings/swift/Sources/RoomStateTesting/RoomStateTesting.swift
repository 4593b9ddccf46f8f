// What the Swift test suites share (this package's, the iOS example's and the Flutter
// plugin's iOS side): a real `roomstate serve` process, the roomstate CLI (which mints
// tokens as an app backend would; no CryptoKit, so this runs on Linux too), waiting for a
// condition with a generous bound, and the engine's threads. A library for tests only.
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The roomstate binary: ROOMSTATE_BIN, set by the test scripts (scripts/lib.sh).
public func roomstateBinary() throws -> String {
    guard let binary = ProcessInfo.processInfo.environment["ROOMSTATE_BIN"], !binary.isEmpty else {
        throw XCTSkip("set ROOMSTATE_BIN to the roomstate binary (scripts/test-swift.sh does)")
    }
    return binary
}

/// Runs the roomstate CLI with an API key and returns what it printed; fails unless it
/// succeeded.
@discardableResult
public func roomstateCLI(_ arguments: [String], apiKey: String, apiSecret: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try roomstateBinary())
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    environment["ROOMSTATE_API_KEY"] = apiKey
    environment["ROOMSTATE_API_SECRET"] = apiSecret
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

public struct CLIFailed: Error, CustomStringConvertible {
    public let arguments: [String]
    public let status: Int32
    public let output: String
    public var description: String { "roomstate \(arguments.joined(separator: " ")) exited with \(status): \(output)" }
}

/// A real `roomstate serve` process on a free port, accepting tokens of one API key.
public final class TestServer: @unchecked Sendable {
    public let apiKey: String
    public let apiSecret: String
    private let extraArguments: [String]
    private var process: Process
    /// `ws://127.0.0.1:PORT`, for clients.
    public let url: String
    /// `http://127.0.0.1:PORT`, for the CLI's server API calls.
    public var httpURL: String { url.replacingOccurrences(of: "ws://", with: "http://") }

    public init(apiKey: String, apiSecret: String, extraArguments: [String] = []) throws {
        self.apiKey = apiKey
        self.apiSecret = apiSecret
        self.extraArguments = extraArguments
        (process, url) = try Self.start(bind: "127.0.0.1:0", apiKey: apiKey, apiSecret: apiSecret, extraArguments: extraArguments)
    }

    private static func start(bind: String, apiKey: String, apiSecret: String, extraArguments: [String]) throws -> (Process, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try roomstateBinary())
        process.arguments = ["serve", "--bind", bind, "--keys", "\(apiKey):\(apiSecret)"] + extraArguments
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

    /// The server API through the CLI, as an operator would call it.
    public func admin(_ arguments: [String]) throws {
        try roomstateCLI(arguments + ["--url", httpURL], apiKey: apiKey, apiSecret: apiSecret)
    }

    /// Freezes or thaws the server process (SIGSTOP, SIGCONT), as an overloaded or
    /// unreachable server would be.
    public func freeze(_ frozen: Bool) {
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
    public func restart() throws {
        stop()
        (process, _) = try Self.start(
            bind: String(url.dropFirst("ws://".count)), apiKey: apiKey, apiSecret: apiSecret, extraArguments: extraArguments
        )
    }

    public func stop() {
        // SIGKILL: a child Foundation's Process starts on Linux inherits a signal mask
        // that blocks SIGTERM (and SIGINT), so terminate() would not end it.
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

public struct ConditionNotMet: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// Polls `condition` until it holds; fails with `what` after `seconds`. Not a timing
/// assertion: the bound is generous. Runs on the caller's actor (the main actor, for a
/// model's tests), so the closures need not be Sendable.
public func eventually(
    _ what: @autoclosure () -> String,
    seconds: TimeInterval = 20,
    isolation: isolated (any Actor)? = #isolation,
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

/// The name of the calling thread (Linux: /proc, where Foundation does not know it).
public func currentThreadName() -> String {
    #if os(Linux)
    let comm = try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)
    return comm?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    #else
    return Thread.current.name ?? ""
    #endif
}

/// The names of this process's threads that belong to the engine (Linux: /proc).
public func engineThreads() -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.compactMap { task in
        (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }.filter { $0.hasPrefix("roomstate-") }
}
