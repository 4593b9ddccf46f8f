// The channel format of CHANNELS.md: engine values as what FlutterStandardMethodCodec
// carries (String, Int, Int64, Bool, [Any], [String: Any], NSNull for a null inside a
// collection), errors as (code, message, details), and the arguments of method calls read
// and checked. Mirrors the Android side's core/Codec.kt, message for message.
import Foundation
#if canImport(RoomState)
import RoomState  // CocoaPods builds the bindings' Swift into this module instead
#endif

let methodChannelName = "io.roomstate/methods"
let roomChannelPrefix = "io.roomstate/room/"
let keysChannelPrefix = "io.roomstate/keys/"

/// A map as it crosses the channels.
typealias ChannelMap = [String: Any]

/// A channel value handed to the main thread: built once by the handler, never changed after.
struct Sent: @unchecked Sendable {
    let value: Any?
}

extension RoomParticipant {
    /// `Participant`: `{sid, identity, name, metadata, attributes, isLocal}`.
    var channelValue: ChannelMap {
        ["sid": sid, "identity": identity, "name": name, "metadata": metadata, "attributes": attributes, "isLocal": isLocal]
    }
}

extension Array where Element == RoomParticipant {
    /// `[Participant]`, sorted by identity.
    var channelValue: [Any] {
        sorted { $0.identity < $1.identity }.map { $0.channelValue }
    }
}

extension StoreEntry {
    /// `Entry`: `{key, valueJson, version, updatedBy, updatedAtMs}`.
    var channelValue: ChannelMap {
        [
            "key": key,
            "valueJson": valueJson,
            "version": Int64(clamping: version),
            "updatedBy": updatedBy,
            "updatedAtMs": Int64(clamping: updatedAtMs),
        ]
    }
}

/// An entry, or NSNull when the key is absent (inside a map).
func channelValue(_ entry: StoreEntry?) -> Any {
    entry?.channelValue ?? NSNull()
}

extension RoomConnectionState {
    /// `ConnectionState`: `{state, reason?}`, `reason` only when disconnected.
    var channelValue: ChannelMap {
        switch self {
        case .connecting: ["state": "connecting"]
        case .connected: ["state": "connected"]
        case .reconnecting: ["state": "reconnecting"]
        case .disconnected(let reason): ["state": "disconnected", "reason": reason.channelValue]
        }
    }
}

extension RoomDisconnectReason {
    var channelName: String {
        switch self {
        case .clientRequested: "clientRequested"
        case .duplicateIdentity: "duplicateIdentity"
        case .removed: "removed"
        case .tokenRefused: "tokenRefused"
        case .sessionEnded: "sessionEnded"
        }
    }

    /// `DisconnectReason`: `{reason, detail?}`.
    var channelValue: ChannelMap {
        switch self {
        case .tokenRefused(let detail): ["reason": channelName, "detail": detail]
        default: ["reason": channelName]
        }
    }
}

extension RoomLimit {
    var channelName: String {
        switch self {
        case .valueBytes: "valueBytes"
        case .keys: "keys"
        case .storeBytes: "storeBytes"
        case .keyBytes: "keyBytes"
        case .attributesBytes: "attributesBytes"
        case .metadataBytes: "metadataBytes"
        case .nameBytes: "nameBytes"
        case .frameBytes: "frameBytes"
        }
    }
}

/// A method or stream error as it crosses: `PlatformException(code, message, details)` in Dart.
/// Also thrown inside a call for the errors the plugin itself answers.
struct ChannelError: Error, @unchecked Sendable, CustomStringConvertible {
    let code: String
    let message: String
    let details: Any?

    var description: String { "\(code): \(message) \(details.map { "\($0)" } ?? "nil")" }

    static func badArguments(_ message: String) -> ChannelError {
        ChannelError(code: "BAD_ARGUMENTS", message: message, details: nil)
    }

    static func notConnected(_ message: String) -> ChannelError {
        ChannelError(code: "NOT_CONNECTED", message: "not connected: \(message)", details: nil)
    }

    /// The stream error of a room that ended for another reason than leaving it.
    static func roomEnded(_ reason: RoomDisconnectReason) -> ChannelError {
        ChannelError(code: "ROOM_ENDED", message: "the room ended: \(reason.channelName)", details: reason.channelValue)
    }

    static let detached = notConnected("the plugin is detached from the engine")
    static let cancelled = notConnected("the plugin was reset or detached during the call")
}

/// Every failure of a call, as the table of CHANNELS.md says. Anything unexpected is INTERNAL.
func channelError(_ error: any Error) -> ChannelError {
    if let error = error as? ChannelError { return error }
    guard let error = error as? RoomError else {
        return ChannelError(code: "INTERNAL", message: "internal error: \(error)", details: nil)
    }
    switch error {
    case .NotConnected(let detail):
        return ChannelError(code: "NOT_CONNECTED", message: "not connected: \(detail)", details: nil)
    case .Timeout(let sent):
        return ChannelError(code: "TIMEOUT", message: "timed out (request sent: \(sent))", details: ["sent": sent])
    case .ConnectionLost:
        return ChannelError(code: "CONNECTION_LOST", message: "connection lost before the server answered", details: nil)
    case .LimitExceeded(let limit, let max, let actual, let detail):
        return ChannelError(
            code: "LIMIT_EXCEEDED",
            message: "limit exceeded: \(detail)",
            details: ["limit": limit.channelName, "max": Int64(clamping: max), "actual": Int64(clamping: actual)]
        )
    case .NotAllowed(let detail):
        return ChannelError(code: "NOT_ALLOWED", message: "not allowed: \(detail)", details: nil)
    case .Conflict(let current):
        return ChannelError(code: "CONFLICT", message: "conflict: the key changed", details: ["current": channelValue(current)])
    case .InvalidValue(let detail):
        return ChannelError(code: "INVALID_VALUE", message: "invalid value: \(detail)", details: nil)
    case .InvalidToken(let code, let detail):
        return ChannelError(code: "INVALID_TOKEN", message: "token refused (\(code)): \(detail)", details: ["code": code])
    case .Unavailable(let detail):
        return ChannelError(code: "UNAVAILABLE", message: "unavailable: \(detail)", details: nil)
    case .OutcomeUnknown(let detail):
        return ChannelError(code: "OUTCOME_UNKNOWN", message: "outcome unknown: \(detail)", details: nil)
    case .Connect(let detail):
        return ChannelError(code: "CONNECT", message: "cannot connect: \(detail)", details: nil)
    case .Internal(let detail):
        return ChannelError(code: "INTERNAL", message: "internal error: \(detail)", details: nil)
    }
}

/// A method call's arguments, read with the type CHANNELS.md gives each; BAD_ARGUMENTS
/// otherwise. They come as the codec decodes them on iOS (NSDictionary, NSString, NSNumber,
/// NSNull...), or as Swift values.
struct Arguments: @unchecked Sendable {
    let method: String
    private let map: [String: Any]?

    init(method: String, _ arguments: Any?) {
        self.method = method
        map = plain(arguments) as? [String: Any]
    }

    private func raw(_ name: String) -> Any? { plain(map?[name]) }

    func string(_ name: String) throws -> String {
        guard let value = raw(name) as? String else { throw ChannelError.badArguments("\(method) needs a string '\(name)'") }
        return value
    }

    func optionalString(_ name: String) throws -> String? {
        guard let value = raw(name) else { return nil }
        guard let string = value as? String else { throw ChannelError.badArguments("\(method) needs a string or null '\(name)'") }
        return string
    }

    func integer(_ name: String) throws -> Int64 {
        guard let value = raw(name).flatMap(Arguments.integerValue) else {
            throw ChannelError.badArguments("\(method) needs an integer '\(name)'")
        }
        return value
    }

    func unsigned(_ name: String) throws -> UInt64 {
        let value = try integer(name)
        guard value >= 0 else { throw ChannelError.badArguments("\(method) needs a non-negative integer '\(name)'") }
        return UInt64(value)
    }

    func stringList(_ name: String) throws -> [String] {
        guard let list = Arguments.strings(raw(name)) else {
            throw ChannelError.badArguments("\(method) needs a list of strings '\(name)'")
        }
        return list
    }

    func stringMap(_ name: String) throws -> [String: String] {
        let failure = ChannelError.badArguments("\(method) needs a map of strings '\(name)'")
        guard let given = raw(name) as? [String: Any] else { throw failure }
        var map: [String: String] = [:]
        for (key, value) in given {
            guard let string = plain(value) as? String else { throw failure }
            map[key] = string
        }
        return map
    }

    /// `options` of `connect`: every field optional, null as absent, unknown fields refused.
    func connectOptions(_ name: String) throws -> RoomConnectOptions {
        let defaults = RoomConnectOptions()
        guard let value = raw(name) else { return defaults }
        guard let given = value as? [String: Any] else { throw ChannelError.badArguments("\(method) needs a map or null '\(name)'") }
        var millis: [String: UInt64] = [:]
        var fallbackUrls = defaults.fallbackUrls
        for key in given.keys.sorted() {
            guard let field = plain(given[key]) else { continue }
            switch key {
            case "requestTimeoutMs", "connectTimeoutMs", "pingIntervalMs", "pingTimeoutMs", "reconnectBackoffMinMs", "reconnectBackoffMaxMs":
                guard let ms = Arguments.integerValue(field), ms >= 0 else {
                    throw ChannelError.badArguments("\(method) needs a non-negative integer '\(name).\(key)'")
                }
                millis[key] = UInt64(ms)
            case "fallbackUrls":
                guard let urls = Arguments.strings(field) else {
                    throw ChannelError.badArguments("\(method) needs a list of strings '\(name).fallbackUrls'")
                }
                fallbackUrls = urls
            default:
                throw ChannelError.badArguments("\(method) has no option '\(key)'")
            }
        }
        return RoomConnectOptions(
            requestTimeoutMs: millis["requestTimeoutMs"] ?? defaults.requestTimeoutMs,
            connectTimeoutMs: millis["connectTimeoutMs"] ?? defaults.connectTimeoutMs,
            pingIntervalMs: millis["pingIntervalMs"] ?? defaults.pingIntervalMs,
            pingTimeoutMs: millis["pingTimeoutMs"] ?? defaults.pingTimeoutMs,
            reconnectBackoffMinMs: millis["reconnectBackoffMinMs"] ?? defaults.reconnectBackoffMinMs,
            reconnectBackoffMaxMs: millis["reconnectBackoffMaxMs"] ?? defaults.reconnectBackoffMaxMs,
            trustedCertificatesPem: defaults.trustedCertificatesPem,
            fallbackUrls: fallbackUrls
        )
    }

    private static func strings(_ value: Any?) -> [String]? {
        guard let list = value as? [Any] else { return nil }
        var strings: [String] = []
        for element in list {
            guard let string = plain(element) as? String else { return nil }
            strings.append(string)
        }
        return strings
    }

    /// An integer, as the codec decodes a Dart int on iOS (an NSNumber made from an int or a
    /// long long), or a Swift integer. Not a Bool nor a Double: an NSNumber bridges to Int
    /// from both (`true as? Int` is 1, `1.0 as? Int` is 1), so its objCType decides.
    static func integerValue(_ value: Any) -> Int64? {
        if Swift.type(of: value) is NSNumber.Type, let number = value as? NSNumber {
            switch String(cString: number.objCType) {
            case "s", "i", "l", "q": return number.int64Value
            case "S", "I", "L", "Q": return Int64(exactly: number.uint64Value)
            default: return nil  // "c" and "B": a Bool; "f" and "d": a Double
            }
        }
        switch value {
        case let int as Int where Swift.type(of: value) == Int.self: return Int64(int)
        case let int as Int64 where Swift.type(of: value) == Int64.self: return int
        case let int as Int32 where Swift.type(of: value) == Int32.self: return Int64(int)
        default: return nil
        }
    }
}

/// The value itself: nil for nil, NSNull, and an Optional holding either (a Swift
/// `[String: Any?]` holds Optionals); the wrapped value of any other Optional.
func plain(_ value: Any?) -> Any? {
    guard let value else { return nil }
    if let optional = value as? any AnyOptional { return plain(optional.wrappedAny) }
    if value is NSNull { return nil }
    return value
}

protocol AnyOptional {
    var wrappedAny: Any? { get }
}

extension Optional: AnyOptional {
    var wrappedAny: Any? { map { $0 as Any } }
}
