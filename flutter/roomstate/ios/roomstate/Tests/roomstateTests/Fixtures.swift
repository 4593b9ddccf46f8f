// What the tests share: a real `roomstate serve` process, tokens minted by the roomstate CLI
// (as an app backend would mint them), other participants joined through the RoomState
// Swift package directly (another device), and waiting for a condition with a generous
// bound. As bindings/swift/Tests/RoomStateTests/Fixtures.swift, and the Android side's
// android/src/test/kotlin/io/roomstate/flutter/core/Fixtures.kt.
import Foundation
import RoomState
@testable import roomstate
import RoomStateTesting
import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let apiKey = "flutterkey"
let apiSecret = "fluttersecret"
let roomName = "flutter-room"

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

/// An access token minted by `roomstate token create`.
func token(_ identity: String, canUpdateMetadata: Bool = true, secret: String = apiSecret) throws -> String {
    var arguments = ["token", "create", "--room", roomName, "--identity", identity]
    if canUpdateMetadata { arguments.append("--can-update-metadata") }
    return try roomstateCLI(arguments, apiSecret: secret)
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

func sleep(ms: UInt64) async throws {
    try await Task.sleep(nanoseconds: ms * 1_000_000)
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
