// test_vectors/channels.json, and the shape matcher its "about" describes: the same keys,
// values of the same JSON types (null matches only null, NSNull or nil; an integer is an
// Int, Int64 or Int32, never a Bool, a Double or a UInt64; a boolean only a Bool), an
// example list's first element the shape of every element. As the Android side's
// Shapes.kt: optional fields of CHANNELS.md may be absent or present (`reason` of a
// ConnectionState, an object only when disconnected, and `detail` of a DisconnectReason),
// and `attributes` is a dictionary ({String: String}) whose keys are data, so only its
// values are compared with the example's. An Optional inside a collection is refused: the
// codec wants NSNull there.
import Foundation
import RoomStateTesting
@testable import roomstate

/// A JSON value, with booleans, integers and doubles told apart as the vectors write them.
indirect enum JSON: Decodable, Equatable, Sendable {
    case null
    case bool(Bool)
    case integer(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([String: JSON])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSON].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSON].self))
        }
    }

    /// Parses JSON text.
    static func parse(_ text: String) throws -> JSON {
        try JSONDecoder().decode(JSON.self, from: Data(text.utf8))
    }

    subscript(key: String) -> JSON? {
        if case .object(let fields) = self { return fields[key] }
        return nil
    }
}

enum Vectors {
    /// flutter/roomstate/test_vectors/channels.json, found from this file
    /// (ROOMSTATE_CHANNEL_VECTORS overrides it).
    static let root: JSON = {
        let path = ProcessInfo.processInfo.environment["ROOMSTATE_CHANNEL_VECTORS"]
            ?? URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()
            .appendingPathComponent("../../../../test_vectors/channels.json").standardizedFileURL.path
        do {
            return try JSONDecoder().decode(JSON.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            fatalError("cannot read the channel vectors at \(path): \(error)")
        }
    }()

    static func result(_ name: String) -> JSON? { root["results"]?[name] }
    static func error(_ name: String) -> JSON? { root["errors"]?[name] }
    static func roomEvent(_ name: String) -> JSON? { root["roomEvents"]?[name] }
    static func keyEvent(_ name: String) -> JSON? { root["keyEvents"]?[name] }
    static func type(_ name: String) -> JSON? { root["types"]?[name] }

    private static let disconnectReason: JSON = root["types"]!["ConnectionState.disconnected"]!["reason"]!
    private static let dictionaries: Set<String> = ["attributes"]

    /// Nil when `value` has the shape of `vector`, else where and how it differs.
    static func mismatch(_ vector: JSON, _ value: Any?, _ path: String = "$") -> String? {
        if value.map({ Swift.type(of: $0) is any AnyOptional.Type }) == true, path != "$" {
            return "\(path): an Optional inside a collection (NSNull for null): \(describe(value))"
        }
        let unwrapped = plain(value)
        switch vector {
        case .null:
            return unwrapped == nil ? nil : "\(path): expected null, got \(kind(unwrapped))"
        case .string:
            return unwrapped is String ? nil : "\(path): expected a string, got \(kind(unwrapped))"
        case .bool:
            return unwrapped.map({ Swift.type(of: $0) == Bool.self }) == true ? nil : "\(path): expected a boolean, got \(kind(unwrapped))"
        case .integer:
            return integer(unwrapped) != nil ? nil : "\(path): expected an integer, got \(kind(unwrapped))"
        case .double:
            return unwrapped.map({ Swift.type(of: $0) == Double.self }) == true ? nil : "\(path): expected a double, got \(kind(unwrapped))"
        case .array(let elements):
            guard let list = unwrapped as? [Any] else { return "\(path): expected a list, got \(kind(unwrapped))" }
            guard let first = elements.first else { return nil }
            for (index, element) in list.enumerated() {
                if let mismatch = mismatch(first, element, "\(path)[\(index)]") { return mismatch }
            }
            return nil
        case .object(let fields):
            guard let map = unwrapped as? [String: Any] else { return "\(path): expected a map, got \(kind(unwrapped))" }
            return objectMismatch(fields, map, path)
        }
    }

    private static func objectMismatch(_ vector: [String: JSON], _ value: [String: Any], _ path: String) -> String? {
        for key in vector.keys.sorted() {
            let expected = vector[key]!
            if dictionaries.contains(key), let entry = value[key] {
                if let mismatch = dictionaryMismatch(expected, entry, "\(path).\(key)") { return mismatch }
                continue
            }
            guard let entry = value[key] else {
                var optional = key == "detail"
                if key == "reason", case .object = expected { optional = true }
                if !optional { return "\(path): missing '\(key)'" }
                continue
            }
            if let mismatch = mismatch(expected, entry, "\(path).\(key)") { return mismatch }
        }
        for key in value.keys.sorted() where vector[key] == nil {
            switch key {
            case "reason":
                if let mismatch = mismatch(disconnectReason, value[key], "\(path).reason") { return mismatch }
            case "detail":
                if let mismatch = mismatch(.string(""), value[key], "\(path).detail") { return mismatch }
            default:
                return "\(path): unexpected key '\(key)'"
            }
        }
        return nil
    }

    private static func dictionaryMismatch(_ vector: JSON, _ value: Any, _ path: String) -> String? {
        guard case .object(let fields) = vector else { return mismatch(vector, value, path) }
        guard let map = plain(value) as? [String: Any] else { return "\(path): expected a map, got \(kind(value))" }
        let element = fields.values.first ?? .string("")
        for key in map.keys.sorted() {
            if let mismatch = mismatch(element, map[key], "\(path).\(key)") { return mismatch }
        }
        return nil
    }

    private static func kind(_ value: Any?) -> String {
        guard let value = plain(value) else { return "null" }
        return "\(Swift.type(of: value)) \(value)"
    }
}

