// The Swift layer over the generated bindings (Generated/, produced by
// scripts/bindings.sh): Codable values, closure observers and AsyncSequences.
import Foundation

public extension RoomConnection {
    /// Joins the room the token grants and returns once joined: the session store and the
    /// participants are known by then. `url` is the server's, like `ws://127.0.0.1:7880`.
    static func connect(
        url: String,
        token: String,
        listener: RoomListener,
        options: RoomConnectOptions = RoomConnectOptions()
    ) async throws -> RoomConnection {
        try await connectRoom(url: url, token: token, listener: listener, options: options)
    }
}

public extension StoreEntry {
    /// Decodes this entry's JSON value.
    func decode<T: Decodable>(_ type: T.Type = T.self, using decoder: JSONDecoder = JSONDecoder()) throws -> T {
        try decoder.decode(T.self, from: Data(valueJson.utf8))
    }
}

/// How a stream of `SessionStore.changes(forKey:)` or `values(forKey:as:)` ends when the
/// room ends for any reason but leaving it (`disconnect()`, after which they just finish):
/// this participant was removed, the session ended, another connection took the identity,
/// or the token was refused.
public struct RoomEndedError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: RoomDisconnectReason

    public init(reason: RoomDisconnectReason) {
        self.reason = reason
    }

    public var description: String { "the room ended: \(reason)" }
}

public extension SessionStore {
    /// Writes `value` as JSON under `key`; returns the new version.
    @discardableResult
    func set<T: Encodable>(_ value: T, forKey key: String) async throws -> UInt64 {
        try await set(key: key, valueJson: try Self.json(value))
    }

    /// Writes `value` as JSON only if `key` is at `expectedVersion` (0: it must not exist);
    /// nil deletes. Fails with `RoomError.Conflict(current:)` otherwise.
    @discardableResult
    func compareAndSet<T: Encodable>(_ value: T?, forKey key: String, expectedVersion: UInt64) async throws -> UInt64 {
        let json: String? = if let value { try Self.json(value) } else { nil }
        return try await compareAndSet(key: key, expectedVersion: expectedVersion, valueJson: json)
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

    /// The entries of `key`: the current one first (nil: absent), then every change.
    ///
    /// The observer is removed when the consuming task is cancelled or stops iterating.
    /// The stream finishes when the room ends: normally after `disconnect()`, throwing
    /// `RoomEndedError` otherwise (removed, session ended...). On a room that has ended
    /// already it throws `RoomError.NotConnected`.
    func changes(forKey key: String) -> AsyncThrowingStream<StoreEntry?, any Error> {
        stream(of: key) { $0 }
    }

    /// The values of `key`, decoded, as `changes(forKey:)`. A value that does not decode
    /// as `T` ends the stream with the decoding error.
    func values<T: Decodable & Sendable>(forKey key: String, as type: T.Type = T.self) -> AsyncThrowingStream<T?, any Error> {
        stream(of: key) { try $0?.decode(T.self) }
    }

    private static func json<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }

    private func stream<Element: Sendable>(
        of key: String,
        _ transform: @escaping @Sendable (StoreEntry?) throws -> Element
    ) -> AsyncThrowingStream<Element, any Error> {
        // `self`, not a weak reference: `RoomConnection.sessionStore()` makes a new
        // SessionStore each time, so the caller's may be gone long before the stream.
        let store = self
        return AsyncThrowingStream(bufferingPolicy: .unbounded) { continuation in
            let observer = StreamObserver(store)
            continuation.onTermination = { _ in observer.end() }
            do {
                observer.registered(try store.observeChanges(forKeys: [key]) { _, entry in
                    do {
                        continuation.yield(try transform(entry))
                    } catch {
                        continuation.finish(throwing: error)
                    }
                })
            } catch {
                continuation.finish(throwing: error)
                return
            }
            // `ended()` resolves after the listener calls queued before the end ran, so
            // every change is yielded before the stream finishes. (UniFFI's Swift cannot
            // cancel the call: after a cancelled stream it waits on for the room's end.)
            Task {
                let reason = await store.ended()
                continuation.finish(throwing: reason == .clientRequested ? nil : RoomEndedError(reason: reason))
            }
        }
    }
}

/// A stream's observer: removed once the stream has ended and the observer is
/// registered, in whichever order those happen (the first call may end the stream).
private final class StreamObserver: @unchecked Sendable {
    private let store: SessionStore
    private let lock = NSLock()
    private var handle: ObserverHandle?
    private var ended = false

    init(_ store: SessionStore) {
        self.store = store
    }

    func registered(_ handle: ObserverHandle) {
        lock.lock()
        let remove = ended
        if !ended { self.handle = handle }
        lock.unlock()
        if remove { store.removeObserver(handle) }
    }

    func end() {
        lock.lock()
        ended = true
        let registered = handle
        handle = nil
        lock.unlock()
        if let registered { store.removeObserver(registered) }
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
/// The engine calls it on the room's listener thread, one call at a time.
open class DefaultRoomListener: RoomListener, @unchecked Sendable {
    public init() {}
    open func onSessionStoreAvailable(store: SessionStore) throws {}
    open func onConnectionStateChanged(state: RoomConnectionState) throws {}
    open func onParticipantJoined(participant: RoomParticipant) throws {}
    open func onParticipantLeft(participant: RoomParticipant) throws {}
    open func onAttributesChanged(participant: RoomParticipant, changedKeys: [String]) throws {}
    open func onMetadataChanged(participant: RoomParticipant, oldMetadata: String, newMetadata: String) throws {}
    open func onNameChanged(participant: RoomParticipant, oldName: String, newName: String) throws {}
    open func onRoomMetadataChanged(oldMetadata: String, newMetadata: String) throws {}
}
