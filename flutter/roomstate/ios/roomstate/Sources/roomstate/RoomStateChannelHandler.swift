// The iOS side of the plugin, without Flutter: every method of CHANNELS.md, the room and
// key listener event channels, and the plugin's lifecycle. RoomStatePlugin only hands it
// method calls and gives it the main thread and the event channels. The same design as the
// Android side's core/RoomStateChannelHandler.kt.
import Foundation
#if canImport(RoomState)
import RoomState  // CocoaPods builds the bindings' Swift into this module instead
#endif

/// Answers the method calls of `io.roomstate/methods` and runs the event channels, as
/// CHANNELS.md says.
///
/// Threads: `handle(method:arguments:result:)` and the stream handlers are called on the
/// main thread (as Flutter calls them); every result, event, and `EventChannels` call is
/// posted through `mainThread`; engine calls start on the calling thread and go on in
/// Swift tasks; the engine's listeners run on its listener thread. Nothing here waits for
/// the main thread, and no lock is held while waiting for the engine.
///
/// Every call is answered exactly once: a value, a typed error, or notImplemented. A call
/// still waiting for the engine when `initialize` or `dispose()` releases its room is
/// answered NOT_CONNECTED at once; the engine's later answer is dropped.
///
/// Order: each engine call is made on the calling thread (`Task.immediate`, iOS 26 and
/// later, and Linux), so calls on one room are queued by the engine, and reach the server,
/// in the order they were made. Before iOS 26 a call starts in a new task, and calls made
/// without waiting for the previous answer may reach the engine in another order.
public final class RoomStateChannelHandler: @unchecked Sendable {
    /// Joins a room: `RoomConnection.connect` unless a test gives another.
    public typealias Connect = @Sendable (
        _ url: String, _ token: String, _ listener: RoomListener, _ options: RoomConnectOptions
    ) async throws -> RoomConnection

    private let channels: EventChannels
    private let mainThread: MainThread
    private let connectRoom: Connect

    private let lock = NSLock()
    // Guarded by lock.
    /// Counts `initialize`s: a room that finishes joining in an older generation is left at once.
    private var generation: UInt64 = 0
    private var disposed = false
    /// Rooms by id, from `connect` until they ended and their channels are closed.
    private var sessions: [Int: RoomSession] = [:]
    /// Calls waiting for the engine, with the generation they were made in.
    private var pending: [Int: (generation: UInt64, reply: Reply)] = [:]
    private var callIds = 0
    private var roomIds = 0
    private var listenerIds = 0

    public init(
        channels: EventChannels,
        mainThread: MainThread,
        connect: @escaping Connect = { url, token, listener, options in
            try await RoomConnection.connect(url: url, token: token, listener: listener, options: options)
        }
    ) {
        self.channels = channels
        self.mainThread = mainThread
        self.connectRoom = connect
    }

    // MARK: Method calls

    /// A call of `io.roomstate/methods`, on the main thread. `arguments` is a map (an
    /// NSDictionary from the codec); anything else reads as no arguments.
    public func handle(method: String, arguments: Any?, result: MethodResult) {
        let reply = Reply(result, mainThread)
        let args = Arguments(method: method, arguments)
        switch method {
        case "initialize":
            initialize(reply)
        case "connect":
            call(reply) { try await self.connect(args) }
        case "disconnect":
            call(reply) {
                let id = try args.integer("room")
                await self.session(Int(clamping: id))?.leave()
                return nil
            }
        case "updateToken":
            now(reply) {
                let token = try args.string("token")
                try self.live(args).room.updateToken(token: token)
                return nil
            }
        case "reconnectNow":
            now(reply) {
                try self.live(args).room.reconnectNow()
                return nil
            }
        case "connectionState":
            now(reply) { try self.live(args).room.connectionState().channelValue }
        case "remoteParticipants":
            now(reply) { try self.live(args).room.remoteParticipants().channelValue }
        case "get":
            call(reply) {
                let key = try args.string("key")
                return try await self.live(args).store.get(key: key)?.channelValue
            }
        case "set":
            call(reply) {
                let key = try args.string("key")
                let valueJson = try args.string("valueJson")
                return Int64(clamping: try await self.live(args).store.set(key: key, valueJson: valueJson))
            }
        case "delete":
            call(reply) {
                let key = try args.string("key")
                try await self.live(args).store.delete(key: key)
                return nil
            }
        case "compareAndSet":
            call(reply) {
                let key = try args.string("key")
                let expectedVersion = try args.unsigned("expectedVersion")
                let valueJson = try args.optionalString("valueJson")
                let store = try self.live(args).store
                return Int64(clamping: try await store.compareAndSet(key: key, expectedVersion: expectedVersion, valueJson: valueJson))
            }
        case "addKeyChangeListener":
            now(reply) {
                let keys = try args.stringList("keys")
                return try self.knownSession(args).addKeyListener(keys)
            }
        case "setAttributes":
            call(reply) {
                let attributes = try args.stringMap("attributes")
                return try await self.live(args).local.setAttributes(attributes: attributes).channelValue
            }
        case "setMetadata":
            call(reply) {
                let metadata = try args.string("metadata")
                return try await self.live(args).local.setMetadata(metadata: metadata).channelValue
            }
        case "setName":
            call(reply) {
                let name = try args.string("name")
                return try await self.live(args).local.setName(name: name).channelValue
            }
        default:
            reply.notImplemented()
        }
    }

    /// `onDetachedFromEngine`: answers the calls in flight (NOT_CONNECTED), removes every key
    /// listener, closes every channel and leaves every room; later calls answer NOT_CONNECTED.
    /// Returns at once; the task it returns ends when every room was left.
    @discardableResult
    public func dispose() -> Task<Void, Never> {
        let released: (sessions: [RoomSession], calls: [Reply]) = lock.locked {
            if disposed { return ([], []) }
            disposed = true
            defer {
                sessions.removeAll()
                pending.removeAll()
            }
            return (Array(sessions.values), pending.values.map { $0.reply })
        }
        for reply in released.calls { reply.error(.cancelled) }
        return leave(released.sessions.compactMap { $0.release() })
    }

    /// `initialize`: what `dispose()` does, for what a previous Dart isolate left; answered
    /// once every room was left. The handler goes on serving the new isolate.
    private func initialize(_ reply: Reply) {
        let released: (sessions: [RoomSession], calls: [Reply])? = lock.locked {
            if disposed { return nil }
            generation += 1
            let previous = pending.filter { $0.value.generation < generation }
            for id in previous.keys { pending[id] = nil }
            defer { sessions.removeAll() }
            return (Array(sessions.values), previous.values.map { $0.reply })
        }
        guard let released else { return reply.error(.detached) }
        for call in released.calls { call.error(.cancelled) }
        let left = leave(released.sessions.compactMap { $0.release() })
        call(reply) {
            await left.value
            return nil
        }
    }

    /// Runs a call that waits for the engine: it starts on this thread, and is answered once.
    private func call(_ reply: Reply, _ body: @escaping @Sendable () async throws -> Any?) {
        let id: Int? = lock.locked {
            if disposed { return nil }
            callIds += 1
            pending[callIds] = (generation, reply)
            return callIds
        }
        guard let id else { return reply.error(.detached) }
        let operation: @Sendable () async -> Void = {
            do {
                reply.success(try await body())
            } catch {
                reply.error(channelError(error))
            }
            self.lock.locked { self.pending[id] = nil }
        }
        if #available(iOS 26.0, macOS 26.0, *) {
            Task.immediate(operation: operation)
        } else {
            Task(operation: operation)
        }
    }

    /// Runs a call the engine answers at once, on this thread.
    private func now(_ reply: Reply, _ body: () throws -> Any?) {
        if lock.locked({ disposed }) { return reply.error(.detached) }
        do {
            reply.success(try body())
        } catch {
            reply.error(channelError(error))
        }
    }

    private func connect(_ args: Arguments) async throws -> Any? {
        let url = try args.string("url")
        let token = try args.string("token")
        let options = try args.connectOptions("options")
        let (joinedIn, id): (UInt64, Int) = lock.locked {
            roomIds += 1
            return (generation, roomIds)
        }
        let session = RoomSession(id: id, handler: self)
        let room = try await connectRoom(url, token, session, options)
        let kept: Bool = lock.locked {
            let kept = !disposed && generation == joinedIn
            if kept { sessions[id] = session }
            return kept
        }
        if kept {
            do {
                if let result = try session.joined(room) { return result }
            } catch {
                _ = session.release()
                forget(session)
                leave([room])
                throw error
            }
        }
        leave([room])
        throw ChannelError.notConnected("the plugin was reset while the room was joining")
    }

    private func session(_ id: Int) -> RoomSession? {
        lock.locked { sessions[id] }
    }

    private func knownSession(_ args: Arguments) throws -> RoomSession {
        let id = Int(clamping: try args.integer("room"))
        guard let session = session(id) else { throw ChannelError.notConnected("room \(id) is unknown, left or ended") }
        return session
    }

    /// The room of a call: NOT_CONNECTED for an unknown room, one that was left, or one that ended.
    private func live(_ args: Arguments) throws -> Joined {
        try knownSession(args).live()
    }

    fileprivate func forget(_ session: RoomSession) {
        lock.locked {
            if sessions[session.id] === session { sessions[session.id] = nil }
        }
    }

    fileprivate func nextListenerId() -> Int {
        lock.locked {
            listenerIds += 1
            return listenerIds
        }
    }

    @discardableResult
    private func leave(_ rooms: [RoomConnection]) -> Task<Void, Never> {
        Task {
            await withTaskGroup(of: Void.self) { group in
                for room in rooms {
                    group.addTask { await room.disconnect() }
                }
            }
        }
    }

    fileprivate func openChannel(_ name: String, _ handler: StreamHandler) {
        mainThread.post { [channels] in channels.open(name: name, handler: handler) }
    }

    fileprivate func closeChannel(_ name: String) {
        mainThread.post { [channels] in channels.close(name: name) }
    }

    fileprivate func subscription(_ sink: EventSink) -> Subscription {
        Subscription(sink, mainThread)
    }
}

// MARK: - Replies and subscriptions

/// A method call's answer: the first one is posted to the main thread, any later one dropped.
private final class Reply: @unchecked Sendable {
    private let result: MethodResult
    private let mainThread: MainThread
    private let lock = NSLock()
    private var answered = false

    init(_ result: MethodResult, _ mainThread: MainThread) {
        self.result = result
        self.mainThread = mainThread
    }

    private func first() -> Bool {
        lock.locked {
            defer { answered = true }
            return !answered
        }
    }

    func success(_ value: Any?) {
        guard first() else { return }
        let sent = Sent(value: value)
        mainThread.post { [result] in result.success(sent.value) }
    }

    func error(_ error: ChannelError) {
        guard first() else { return }
        mainThread.post { [result] in result.error(code: error.code, message: error.message, details: error.details) }
    }

    func notImplemented() {
        guard first() else { return }
        mainThread.post { [result] in result.notImplemented() }
    }
}

/// One listen of an event channel: what is posted after it is cancelled is not delivered.
private final class Subscription: @unchecked Sendable {
    private let sink: EventSink
    private let mainThread: MainThread
    private let lock = NSLock()
    private var active = true

    init(_ sink: EventSink, _ mainThread: MainThread) {
        self.sink = sink
        self.mainThread = mainThread
    }

    func deactivate() {
        lock.locked { active = false }
    }

    private var isActive: Bool { lock.locked { active } }

    func send(_ event: ChannelMap) {
        let sent = Sent(value: event)
        mainThread.post { if self.isActive { self.sink.success(sent.value) } }
    }

    func fail(_ error: ChannelError) {
        mainThread.post { if self.isActive { self.sink.error(code: error.code, message: error.message, details: error.details) } }
    }

    func endOfStream() {
        mainThread.post { if self.isActive { self.sink.endOfStream() } }
    }
}

/// A joined room's objects, fetched once.
private struct Joined: Sendable {
    let room: RoomConnection
    let store: SessionStore
    let local: LocalRoomParticipant
}

private func connectionStateEvent(_ state: RoomConnectionState) -> ChannelMap {
    ["type": "connectionState", "state": state.channelValue]
}

// MARK: - A room

/// One room: its engine listener (called on the engine's listener thread), its event
/// channel, and its key listeners. Its lock is never held while waiting for the engine's
/// listener thread: the engine's listener calls take it, and so does the main thread.
private final class RoomSession: RoomListener, StreamHandler, @unchecked Sendable {
    let id: Int
    let channel: String
    let handler: RoomStateChannelHandler
    let lock = NSLock()

    // Guarded by lock.
    private var joined: Joined?
    private var lastLocal: RoomParticipant?
    private var subscription: Subscription?
    private var listened = false
    private(set) var ended: RoomDisconnectReason?
    private var left = false
    private var released = false
    private var open = false
    var keyListeners: [Int: KeyListener] = [:]

    init(id: Int, handler: RoomStateChannelHandler) {
        self.id = id
        self.channel = "\(roomChannelPrefix)\(id)"
        self.handler = handler
    }

    /// After `connect`: opens the channel (posted before the result) and returns the
    /// result; nil once released.
    func joined(_ room: RoomConnection) throws -> ChannelMap? {
        let joined = Joined(room: room, store: room.sessionStore(), local: room.localParticipant())
        guard let local = joined.local.info() else {
            throw ChannelError(code: "INTERNAL", message: "internal error: joined without a local participant", details: nil)
        }
        let result: ChannelMap = [
            "room": id,
            "sessionId": room.sessionId() ?? "",
            "local": local.channelValue,
            "participants": room.remoteParticipants().channelValue,
        ]
        return lock.locked {
            if released { return nil }
            self.joined = joined
            lastLocal = local
            open = true
            handler.openChannel(channel, self)
            return result
        }
    }

    func live() throws -> Joined {
        let joined: Joined? = lock.locked { ended == nil && !left && !released ? self.joined : nil }
        guard let joined else { throw ChannelError.notConnected("room \(id) is unknown, left or ended") }
        return joined
    }

    /// `disconnect`: leaves; the end reaches the channels from the engine's listener, and
    /// the room is forgotten once they are closed.
    func leave() async {
        let room: RoomConnection? = lock.locked { !released && ended == nil ? joined?.room : nil }
        await room?.disconnect()
        lock.locked { left = true }
    }

    func addKeyListener(_ keys: [String]) throws -> ChannelMap {
        let listener = KeyListener(id: handler.nextListenerId(), room: self, keys: keys)
        try lock.locked {
            guard let joined, ended == nil, !left, !released else {
                throw ChannelError.notConnected("room \(id) is unknown, left or ended")
            }
            listener.store = joined.store
            keyListeners[listener.id] = listener
            listener.openLocked()
        }
        return ["listener": listener.id, "channel": listener.channel]
    }

    /// `dispose()` or `initialize`: nothing more is sent, every channel is closed, every key
    /// listener removed; returns the room to leave, if it has not ended.
    func release() -> RoomConnection? {
        var handles: [ObserverHandle] = []
        let (room, store): (RoomConnection?, SessionStore?) = lock.locked {
            if released { return (nil, nil) }
            released = true
            subscription?.deactivate()
            subscription = nil
            if open {
                open = false
                handler.closeChannel(channel)
            }
            for id in keyListeners.keys.sorted() {
                if let handle = keyListeners[id]?.releaseLocked() { handles.append(handle) }
            }
            keyListeners.removeAll()
            return (ended == nil ? joined?.room : nil, joined?.store)
        }
        // Outside the lock: removing waits for a running call of that listener.
        if let store {
            for handle in handles { store.removeKeyChangeListener(handle: handle) }
        }
        return room
    }

    /// Forgets this room once it ended and holds no channel. Holding `lock`.
    func maybeForgetLocked() {
        if joined != nil && ended != nil && !open && keyListeners.isEmpty { handler.forget(self) }
    }

    // The room channel. Dart listens and cancels on the main thread.

    func onListen(arguments: Any?, sink: EventSink) {
        lock.locked {
            guard let joined, !released else { return }
            subscription?.deactivate()
            let listening = handler.subscription(sink)
            listened = true
            // Under the lock the engine's listener calls take: every change is in this
            // snapshot or sent after it (one applied just before may be in both).
            listening.send([
                "type": "snapshot",
                "state": joined.room.connectionState().channelValue,
                "local": (joined.local.info() ?? lastLocal)?.channelValue ?? NSNull(),
                "participants": joined.room.remoteParticipants().channelValue,
                "storeAvailable": true,
            ])
            if let ended {
                sendEnd(listening, ended)
                subscription = nil
            } else {
                subscription = listening
            }
        }
    }

    func onCancel(arguments: Any?) {
        lock.locked {
            subscription?.deactivate()
            subscription = nil
            // After the end, Dart's EventChannel cancels as soon as it saw endOfStream: only
            // then is the channel closed, so that Dart's cancel finds its handler.
            if ended != nil && open {
                open = false
                handler.closeChannel(channel)
            }
            maybeForgetLocked()
        }
    }

    private func sendEnd(_ listening: Subscription, _ reason: RoomDisconnectReason) {
        listening.send(connectionStateEvent(.disconnected(reason: reason)))
        listening.endOfStream()
    }

    private func emit(_ event: () -> ChannelMap) {
        lock.locked {
            if ended == nil, let subscription { subscription.send(event()) }
        }
    }

    private func seen(_ participant: RoomParticipant) {
        if participant.isLocal { lock.locked { lastLocal = participant } }
    }

    private func end(_ reason: RoomDisconnectReason) {
        let keys: [KeyListener] = lock.locked {
            if ended != nil { return [] }
            ended = reason
            if released { return [] }
            if let listening = subscription {
                // The last event, then endOfStream; closed when Dart cancels.
                sendEnd(listening, reason)
                subscription = nil
            } else if listened && open {
                // Listened to, then cancelled: nobody listens again.
                open = false
                handler.closeChannel(channel)
            }
            // Never listened to (the room ended before Dart listened): kept until Dart
            // listens (the snapshot, then the end) or the plugin is disposed.
            return keyListeners.keys.sorted().compactMap { keyListeners[$0] }
        }
        for key in keys { key.roomEnded(reason) }
        lock.locked { maybeForgetLocked() }
    }

    // The engine's listener: called on its listener thread, in order.

    func onConnectionStateChanged(state: RoomConnectionState) {
        if case .disconnected(let reason) = state {
            end(reason)
        } else {
            emit { connectionStateEvent(state) }
        }
    }

    func onSessionStoreAvailable(store: SessionStore) {
        emit { ["type": "sessionStoreAvailable"] }
    }

    func onParticipantJoined(participant: RoomParticipant) {
        emit { ["type": "participantJoined", "participant": participant.channelValue] }
    }

    func onParticipantLeft(participant: RoomParticipant) {
        emit { ["type": "participantLeft", "participant": participant.channelValue] }
    }

    func onAttributesChanged(participant: RoomParticipant, changedKeys: [String]) {
        seen(participant)
        emit { ["type": "attributesChanged", "participant": participant.channelValue, "changedKeys": changedKeys] }
    }

    func onMetadataChanged(participant: RoomParticipant, oldMetadata: String, newMetadata: String) {
        seen(participant)
        emit { ["type": "metadataChanged", "participant": participant.channelValue, "old": oldMetadata, "new": newMetadata] }
    }

    func onNameChanged(participant: RoomParticipant, oldName: String, newName: String) {
        seen(participant)
        emit { ["type": "nameChanged", "participant": participant.channelValue, "old": oldName, "new": newName] }
    }

    func onRoomMetadataChanged(oldMetadata: String, newMetadata: String) {
        emit { ["type": "roomMetadataChanged", "old": oldMetadata, "new": newMetadata] }
    }
}

// MARK: - A key change listener

/// One key change listener's channel. The engine's listener is added when Dart listens (its
/// first event is then each key's current value) and removed when Dart cancels. State is
/// guarded by the room's lock; the engine's calls of the listener take no lock.
private final class KeyListener: StreamHandler, @unchecked Sendable {
    let id: Int
    let channel: String
    private let room: RoomSession
    private let keys: [String]

    // Guarded by the room's lock.
    var store: SessionStore?
    private var subscription: Subscription?
    private var handle: ObserverHandle?
    private var open = false
    private var released = false
    /// endOfStream was sent: the channel closes when Dart cancels.
    private var ending = false

    init(id: Int, room: RoomSession, keys: [String]) {
        self.id = id
        self.channel = "\(keysChannelPrefix)\(id)"
        self.room = room
        self.keys = keys
    }

    /// Holding the room's lock.
    func openLocked() {
        open = true
        room.handler.openChannel(channel, self)
    }

    func onListen(arguments: Any?, sink: EventSink) {
        room.lock.locked {
            guard !released, open, let store else { return }
            subscription?.deactivate()
            let listening = room.handler.subscription(sink)
            subscription = listening
            if let reason = room.ended {
                sendEnd(listening, reason)
                return
            }
            do {
                handle = try store.addKeyChangeListener(keys: keys, listener: KeyForwarder { key, entry in
                    listening.send(["key": key, "entry": channelValue(entry)])
                })
            } catch RoomError.NotConnected {
                // The room is ending: its end, queued on the engine's listener thread, ends this stream.
            } catch {
                // A key the engine refuses (empty, too long): the stream fails and ends.
                listening.fail(channelError(error))
                listening.endOfStream()
                subscription = nil
                ending = true
            }
        }
    }

    func onCancel(arguments: Any?) {
        let removed: ObserverHandle? = room.lock.locked {
            subscription?.deactivate()
            subscription = nil
            closeLocked()
            defer { handle = nil }
            return handle
        }
        // Outside the lock: it waits for a running call of this listener, which takes none.
        if let removed { store?.removeKeyChangeListener(handle: removed) }
    }

    /// On the engine's listener thread, after every call of this listener.
    func roomEnded(_ reason: RoomDisconnectReason) {
        room.lock.locked {
            if released { return }
            handle = nil  // the engine lets go of its listeners when the room ends
            if let listening = subscription {
                sendEnd(listening, reason)  // closed when Dart cancels after endOfStream
            } else if !ending {
                closeLocked()  // never listened to, or cancelled: released with its room
            }
        }
    }

    /// Holding the room's lock: stops everything; returns the engine listener to remove.
    func releaseLocked() -> ObserverHandle? {
        released = true
        subscription?.deactivate()
        subscription = nil
        if open {
            open = false
            room.handler.closeChannel(channel)
        }
        defer { handle = nil }
        return handle
    }

    /// Holding the room's lock.
    private func closeLocked() {
        if open {
            open = false
            room.handler.closeChannel(channel)
        }
        room.keyListeners[id] = nil
        room.maybeForgetLocked()
    }

    /// Holding the room's lock.
    private func sendEnd(_ listening: Subscription, _ reason: RoomDisconnectReason) {
        if reason != .clientRequested { listening.fail(.roomEnded(reason)) }
        listening.endOfStream()
        subscription = nil
        ending = true
    }
}

/// The engine's key change listener of one channel subscription.
private final class KeyForwarder: KeyChangeListener {
    private let forward: @Sendable (String, StoreEntry?) -> Void

    init(_ forward: @escaping @Sendable (String, StoreEntry?) -> Void) {
        self.forward = forward
    }

    func onKeyChanged(key: String, entry: StoreEntry?) throws {
        forward(key, entry)
    }
}

extension NSLock {
    /// Runs `body` holding the lock. (`NSLocking.withLock` needs iOS 16.)
    func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
