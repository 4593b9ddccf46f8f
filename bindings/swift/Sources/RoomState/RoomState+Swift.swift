// The Swift layer over the generated bindings (Generated/, produced by
// scripts/build-xcframework.sh): Codable values, closure observers and AsyncStreams.
import Foundation

public extension StoreEntry {
    /// Decodes this entry's JSON value.
    func decode<T: Decodable>(_ type: T.Type = T.self, using decoder: JSONDecoder = JSONDecoder()) throws -> T {
        try decoder.decode(T.self, from: Data(valueJson.utf8))
    }
}

public extension SessionStore {
    /// Writes `value` as JSON under `key`; returns the new version.
    @discardableResult
    func set<T: Encodable>(_ value: T, forKey key: String, using encoder: JSONEncoder = JSONEncoder()) async throws -> UInt64 {
        try await set(key: key, valueJson: String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    /// The value under `key`, decoded; nil when the key does not exist.
    func value<T: Decodable>(forKey key: String, as type: T.Type = T.self) async throws -> T? {
        try await get(key: key)?.decode(T.self)
    }

    /// Calls `onChange` with each key's current entry (nil: absent), then with every change,
    /// on the room's listener thread. Keep the observer and pass it to `removeObserver(_:)`.
    func observeChanges(
        forKeys keys: [String],
        _ onChange: @escaping @Sendable (_ key: String, _ entry: StoreEntry?) -> Void
    ) throws -> ObserverHandle {
        try addKeyChangeListener(keys: keys, listener: ClosureKeyChangeListener(onChange))
    }

    /// Stops an observer: when this returns it is not running and will not be called again.
    func removeObserver(_ observer: ObserverHandle) {
        removeKeyChangeListener(handle: observer)
    }

    /// The entries of `key`: the current one first, then every change. The observer is
    /// removed when the stream ends or its consumer is cancelled.
    func changes(forKey key: String) -> AsyncThrowingStream<StoreEntry?, Error> {
        AsyncThrowingStream(bufferingPolicy: .unbounded) { continuation in
            do {
                let observer = try observeChanges(forKeys: [key]) { _, entry in continuation.yield(entry) }
                continuation.onTermination = { [weak self] _ in self?.removeObserver(observer) }
            } catch {
                continuation.finish(throwing: error)
            }
        }
    }

    /// The decoded values of `key`, as `changes(forKey:)`.
    func values<T: Decodable & Sendable>(forKey key: String, as type: T.Type = T.self) -> AsyncThrowingStream<T?, Error> {
        let entries = changes(forKey: key)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await entry in entries {
                        continuation.yield(try entry?.decode(T.self))
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

final class ClosureKeyChangeListener: KeyChangeListener {
    private let onChange: @Sendable (String, StoreEntry?) -> Void

    init(_ onChange: @escaping @Sendable (String, StoreEntry?) -> Void) {
        self.onChange = onChange
    }

    func onKeyChanged(key: String, entry: StoreEntry?) throws {
        onChange(key, entry)
    }
}

/// A `RoomListener` whose methods do nothing: subclass it and override what you need.
open class DefaultRoomListener: RoomListener, @unchecked Sendable {
    public init() {}
    open func onSessionStoreAvailable(store: SessionStore) throws {}
    open func onConnectionStateChanged(state: ConnectionState) throws {}
    open func onParticipantJoined(participant: Participant) throws {}
    open func onParticipantLeft(participant: Participant) throws {}
    open func onAttributesChanged(participant: Participant, changedKeys: [String]) throws {}
    open func onMetadataChanged(participant: Participant, oldMetadata: String, newMetadata: String) throws {}
    open func onNameChanged(participant: Participant, oldName: String, newName: String) throws {}
    open func onRoomMetadataChanged(oldMetadata: String, newMetadata: String) throws {}
}
