// The Android side of the plugin, without Flutter: every method of CHANNELS.md, the room
// and key listener event channels, and the plugin's lifecycle. RoomStatePlugin only hands
// it method calls and gives it the main thread and the event channels.
package io.roomstate.flutter.core

import io.roomstate.ConnectOptions
import io.roomstate.ConnectionState
import io.roomstate.DisconnectReason
import io.roomstate.LocalParticipant
import io.roomstate.ObserverHandle
import io.roomstate.Participant
import io.roomstate.Room
import io.roomstate.RoomException
import io.roomstate.RoomListener
import io.roomstate.RoomState
import io.roomstate.SessionStore
import io.roomstate.keyChangeListener
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.atomic.AtomicLong
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CompletableJob
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.launch

const val METHOD_CHANNEL = "io.roomstate/methods"
const val ROOM_CHANNEL_PREFIX = "io.roomstate/room/"
const val KEYS_CHANNEL_PREFIX = "io.roomstate/keys/"

/**
 * Answers the method calls of `io.roomstate/methods` and runs the event channels, as
 * CHANNELS.md says. Threads: [onMethodCall] and the stream handlers are called on the main
 * thread (as Flutter does); every result, event, and [EventChannels] call is posted
 * through [mainThread]; engine calls run in a scope this handler owns, and the engine's
 * listeners run on its listener thread. Nothing here waits for the main thread.
 *
 * Every call is answered exactly once: a value, a typed error, or notImplemented. Calls on
 * one room reach the engine in the order they were made: each starts on the calling thread
 * and is queued by the engine before [onMethodCall] returns.
 */
class RoomStateChannelHandler(
    private val channels: EventChannels,
    private val mainThread: MainThread,
    private val connect: suspend (url: String, token: String, listener: RoomListener, options: ConnectOptions) -> Room =
        { url, token, listener, options -> RoomState.connect(url, token, listener, options) },
) {
    private val lock = Any()

    /** Cancelled by [dispose]: every call runs under it. */
    private val root = SupervisorJob()

    /** The calls of the current Dart isolate; `initialize` cancels them and starts anew. Guarded by [lock]. */
    private var calls: CompletableJob = SupervisorJob(root)

    /** Counts `initialize`s: a room that finishes joining in an older generation is left at once. Guarded by [lock]. */
    private var generation = 0L
    private var disposed = false

    /** Rooms by id, from `connect` until they ended and their channels are closed. Guarded by [lock]. */
    private val sessions = HashMap<Long, RoomSession>()

    /** Leaves rooms; outlives [dispose], which must not cancel the leaving it starts. */
    private val leaving = CoroutineScope(SupervisorJob() + Dispatchers.Default)

    private val roomIds = AtomicLong()
    private val listenerIds = AtomicLong()

    fun onMethodCall(method: String, arguments: Map<String, Any?>?, result: MethodResult) {
        val reply = Reply(result)
        val args = Arguments(method, arguments)
        when (method) {
            "initialize" -> initialize(reply)
            "connect" -> call(reply, ordered = false) { connectRoom(args) }
            "disconnect" -> call(reply) { disconnect(args) }
            "updateToken" -> call(reply) {
                val token = args.string("token")
                live(args).room.updateToken(token)
                null
            }
            "reconnectNow" -> call(reply) {
                live(args).room.reconnectNow()
                null
            }
            "connectionState" -> call(reply) { live(args).room.connectionState().toChannel() }
            "remoteParticipants" -> call(reply) { live(args).room.remoteParticipants().toChannel() }
            "get" -> call(reply) {
                val key = args.string("key")
                live(args).store.get(key)?.toChannel()
            }
            "set" -> call(reply) {
                val key = args.string("key")
                val valueJson = args.string("valueJson")
                live(args).store.set(key, valueJson).toLong()
            }
            "delete" -> call(reply) {
                val key = args.string("key")
                live(args).store.delete(key)
                null
            }
            "compareAndSet" -> call(reply) {
                val key = args.string("key")
                val expectedVersion = args.unsigned("expectedVersion")
                val valueJson = args.optionalString("valueJson")
                live(args).store.compareAndSet(key, expectedVersion, valueJson).toLong()
            }
            "addKeyChangeListener" -> call(reply) {
                val keys = args.stringList("keys")
                sessionOf(args).addKeyListener(keys)
            }
            "setAttributes" -> call(reply) {
                val attributes = args.stringMap("attributes")
                live(args).local.setAttributes(attributes).toChannel()
            }
            "setMetadata" -> call(reply) {
                val metadata = args.string("metadata")
                live(args).local.setMetadata(metadata).toChannel()
            }
            "setName" -> call(reply) {
                val name = args.string("name")
                live(args).local.setName(name).toChannel()
            }
            else -> reply.notImplemented()
        }
    }

    /**
     * onDetachedFromEngine: cancels the calls in flight (answered NOT_CONNECTED), removes
     * every key listener, closes every channel and leaves every room. Returns at once; the
     * returned job completes when every room was left.
     */
    fun dispose(): Job {
        val released = synchronized(lock) {
            if (disposed) return Job().apply { complete() }
            disposed = true
            sessions.values.toList().also { sessions.clear() }
        }
        root.cancel()
        return leave(released.mapNotNull { it.release() })
    }

    /** `initialize`: the same as [dispose] for what a previous Dart isolate left; answered once every room was left. */
    private fun initialize(reply: Reply) {
        val (previousCalls, released) = synchronized(lock) {
            if (disposed) return reply.error(DETACHED)
            generation++
            val previous = calls
            calls = SupervisorJob(root)
            previous to sessions.values.toList().also { sessions.clear() }
        }
        previousCalls.cancel()
        val left = leave(released.mapNotNull { it.release() })
        call(reply) {
            left.join()
            null
        }
    }

    /**
     * Runs a call in the current isolate's scope and answers it once. An ordered call starts
     * on this thread, so the engine queues its request before [onMethodCall] returns; the
     * others (connect: a new room, nothing to order it with) start on a background thread.
     */
    private fun call(reply: Reply, ordered: Boolean = true, block: suspend () -> Any?) {
        val job = synchronized(lock) { if (disposed) null else calls } ?: return reply.error(DETACHED)
        val start = if (ordered) CoroutineStart.UNDISPATCHED else CoroutineStart.DEFAULT
        CoroutineScope(job + Dispatchers.Default).launch(start = start) {
            try {
                reply.success(block())
            } catch (cancelled: CancellationException) {
                reply.error(CANCELLED)
                throw cancelled
            } catch (failure: Throwable) {
                reply.error(failure.toChannelError())
            }
        }.invokeOnCompletion {
            // Answers a call cancelled before it started; otherwise answered already, and dropped.
            reply.error(CANCELLED)
        }
    }

    private suspend fun connectRoom(args: Arguments): Map<String, Any?> {
        val url = args.string("url")
        val token = args.string("token")
        val options = args.connectOptions("options")
        val joinedIn = synchronized(lock) { generation }
        val session = RoomSession(roomIds.incrementAndGet())
        val room = connect(url, token, session, options)
        val kept = synchronized(lock) {
            (!disposed && generation == joinedIn).also { if (it) sessions[session.id] = session }
        }
        val result = if (kept) {
            try {
                session.joined(room)
            } catch (failure: Throwable) {
                session.release()
                forget(session)
                leave(listOf(room))
                throw failure
            }
        } else {
            null
        }
        if (result == null) {
            leave(listOf(room))
            throw notConnected("the plugin was reset while the room was joining")
        }
        return result
    }

    private suspend fun disconnect(args: Arguments): Any? {
        val id = args.long("room")
        synchronized(lock) { sessions[id] }?.leave()
        return null
    }

    private fun sessionOf(args: Arguments): RoomSession {
        val id = args.long("room")
        return synchronized(lock) { sessions[id] } ?: throw notConnected("room $id is unknown, left or ended")
    }

    /** The room of a call: NOT_CONNECTED for an unknown room, one that was left, or one that ended. */
    private fun live(args: Arguments): Joined = sessionOf(args).live()

    private fun forget(session: RoomSession) = synchronized(lock) {
        if (sessions[session.id] === session) sessions.remove(session.id)
    }

    private fun leave(rooms: List<Room>): Job = leaving.launch {
        for (room in rooms) {
            launch {
                try {
                    room.disconnect()
                } catch (_: Exception) {
                    // Left anyway: a room that cannot say goodbye is dropped by the server.
                }
            }
        }
    }

    private fun openChannel(name: String, handler: StreamHandler) = mainThread.post { channels.open(name, handler) }

    private fun closeChannel(name: String) = mainThread.post { channels.close(name) }

    /** A method call's answer: the first one is posted to the main thread, any later one dropped. */
    private inner class Reply(private val result: MethodResult) {
        private val answered = AtomicBoolean()

        fun success(value: Any?) {
            if (answered.compareAndSet(false, true)) mainThread.post { result.success(value) }
        }

        fun error(error: ChannelError) {
            if (answered.compareAndSet(false, true)) {
                mainThread.post { result.error(error.code, error.message, error.details) }
            }
        }

        fun notImplemented() {
            if (answered.compareAndSet(false, true)) mainThread.post { result.notImplemented() }
        }
    }

    /** One listen of an event channel: what is posted after it is cancelled is not delivered. */
    private inner class Subscription(private val sink: EventSink) {
        @Volatile
        var active = true

        fun send(event: Any?) = mainThread.post { if (active) sink.success(event) }

        fun fail(error: ChannelError) = mainThread.post { if (active) sink.error(error.code, error.message, error.details) }

        fun endOfStream() = mainThread.post { if (active) sink.endOfStream() }
    }

    /** A joined room's objects, fetched once. */
    private class Joined(val room: Room, val store: SessionStore, val local: LocalParticipant)

    /**
     * One room: its engine listener (on the engine's listener thread), its event channel,
     * and its key listeners. Its lock is never held while waiting for the listener thread.
     */
    private inner class RoomSession(val id: Long) : RoomListener, StreamHandler {
        val channel = "$ROOM_CHANNEL_PREFIX$id"
        val lock = Any()

        // Guarded by lock.
        private var joined: Joined? = null
        private var lastLocal: Participant? = null
        private var subscription: Subscription? = null
        private var listened = false
        var ended: DisconnectReason? = null
            private set
        private var left = false
        private var released = false
        private var open = false
        val keyListeners = LinkedHashMap<Long, KeyListener>()

        /** After `connect`: opens the channel (posted before the result) and returns the result; null once released. */
        fun joined(room: Room): Map<String, Any?>? {
            val joined = Joined(room, room.sessionStore(), room.localParticipant())
            val local = joined.local.info() ?: error("joined without a local participant")
            val result = mapOf(
                "room" to id,
                "sessionId" to room.sessionId().orEmpty(),
                "local" to local.toChannel(),
                "participants" to room.remoteParticipants().toChannel(),
            )
            synchronized(lock) {
                if (released) return null
                this.joined = joined
                lastLocal = local
                open = true
                openChannel(channel, this)
            }
            return result
        }

        fun live(): Joined = synchronized(lock) {
            joined.takeIf { ended == null && !left && !released }
        } ?: throw notConnected("room $id is unknown, left or ended")

        /** `disconnect`: leaves, then forgets the room; the end reaches the channels from the engine's listener. */
        suspend fun leave() {
            val room = synchronized(lock) { joined?.room.takeIf { !released && ended == null } }
            room?.disconnect()
            synchronized(lock) { left = true }
        }

        fun addKeyListener(keys: List<String>): Map<String, Any?> {
            val listener = KeyListener(listenerIds.incrementAndGet(), this, keys)
            synchronized(lock) {
                val joined = joined?.takeIf { ended == null && !left && !released }
                    ?: throw notConnected("room $id is unknown, left or ended")
                listener.store = joined.store
                keyListeners[listener.id] = listener
                listener.open()
            }
            return mapOf("listener" to listener.id, "channel" to listener.channel)
        }

        /** Dispose or initialize: nothing more is sent; returns the room to leave, if it has not ended. */
        fun release(): Room? {
            val handles = mutableListOf<ObserverHandle>()
            val room = synchronized(lock) {
                if (released) return null
                released = true
                subscription?.active = false
                subscription = null
                if (open) {
                    open = false
                    closeChannel(channel)
                }
                keyListeners.values.forEach { listener -> listener.releaseLocked()?.let(handles::add) }
                keyListeners.clear()
                joined?.room.takeIf { ended == null }
            }
            val store = synchronized(lock) { joined?.store }
            if (store != null) handles.forEach(store::removeKeyChangeListener)
            return room
        }

        /** Forgets this room once it ended and holds no channel. Called holding [lock]. */
        fun maybeForget() {
            if (joined != null && ended != null && !open && keyListeners.isEmpty()) forget(this)
        }

        // The room channel. Dart listens on the main thread.

        override fun onListen(arguments: Any?, sink: EventSink) {
            synchronized(lock) {
                val joined = joined ?: return
                if (released) return
                subscription?.active = false
                val listening = Subscription(sink)
                listened = true
                // Under the lock that the engine's listener calls take: every change is in
                // this snapshot or sent after it (a change applied just before may be in both).
                listening.send(
                    mapOf(
                        "type" to "snapshot",
                        "state" to joined.room.connectionState().toChannel(),
                        "local" to (joined.local.info() ?: lastLocal)?.toChannel(),
                        "participants" to joined.room.remoteParticipants().toChannel(),
                        "storeAvailable" to true,
                    ),
                )
                val reason = ended
                if (reason == null) {
                    subscription = listening
                } else {
                    sendEnd(listening, reason)
                    subscription = null
                }
            }
        }

        override fun onCancel(arguments: Any?) {
            synchronized(lock) {
                subscription?.active = false
                subscription = null
                // After the end, Dart's EventChannel cancels as soon as it saw endOfStream:
                // only now is the channel closed, so Dart's cancel finds its handler.
                if (ended != null && open) {
                    open = false
                    closeChannel(channel)
                }
                maybeForget()
            }
        }

        private fun sendEnd(listening: Subscription, reason: DisconnectReason) {
            listening.send(connectionStateEvent(ConnectionState.Disconnected(reason)))
            listening.endOfStream()
        }

        private fun emit(event: () -> Map<String, Any?>) {
            synchronized(lock) {
                if (ended == null) subscription?.send(event())
            }
        }

        private fun seen(participant: Participant) {
            if (participant.isLocal) synchronized(lock) { lastLocal = participant }
        }

        // The engine's listener: called on its listener thread, in order.

        override fun onConnectionStateChanged(state: ConnectionState) {
            if (state is ConnectionState.Disconnected) end(state.reason) else emit { connectionStateEvent(state) }
        }

        private fun end(reason: DisconnectReason) {
            val keys = synchronized(lock) {
                if (ended != null) return
                ended = reason
                if (released) return
                val listening = subscription
                if (listening != null) {
                    // The last event, then endOfStream; closed when Dart cancels.
                    sendEnd(listening, reason)
                    subscription = null
                } else if (listened && open) {
                    // Listened to, then cancelled: nobody listens again.
                    open = false
                    closeChannel(channel)
                }
                // Never listened to (the room ended before Dart listened): kept until Dart
                // listens (the snapshot, then the end) or the plugin is disposed.
                keyListeners.values.toList()
            }
            keys.forEach { it.roomEnded(reason) }
            synchronized(lock) { maybeForget() }
        }

        override fun onSessionStoreAvailable(store: SessionStore) = emit { mapOf("type" to "sessionStoreAvailable") }

        override fun onParticipantJoined(participant: Participant) =
            emit { mapOf("type" to "participantJoined", "participant" to participant.toChannel()) }

        override fun onParticipantLeft(participant: Participant) =
            emit { mapOf("type" to "participantLeft", "participant" to participant.toChannel()) }

        override fun onAttributesChanged(participant: Participant, changedKeys: List<String>) {
            seen(participant)
            emit {
                mapOf("type" to "attributesChanged", "participant" to participant.toChannel(), "changedKeys" to changedKeys.toList())
            }
        }

        override fun onMetadataChanged(participant: Participant, oldMetadata: String, newMetadata: String) {
            seen(participant)
            emit {
                mapOf("type" to "metadataChanged", "participant" to participant.toChannel(), "old" to oldMetadata, "new" to newMetadata)
            }
        }

        override fun onNameChanged(participant: Participant, oldName: String, newName: String) {
            seen(participant)
            emit { mapOf("type" to "nameChanged", "participant" to participant.toChannel(), "old" to oldName, "new" to newName) }
        }

        override fun onRoomMetadataChanged(oldMetadata: String, newMetadata: String) =
            emit { mapOf("type" to "roomMetadataChanged", "old" to oldMetadata, "new" to newMetadata) }
    }

    /**
     * One key change listener's channel. The engine's listener is added when Dart listens
     * (its first event is then the current value) and removed when Dart cancels. State is
     * guarded by the room's lock; the engine's calls of the listener take no lock.
     */
    private inner class KeyListener(val id: Long, private val room: RoomSession, private val keys: List<String>) : StreamHandler {
        val channel = "$KEYS_CHANNEL_PREFIX$id"
        lateinit var store: SessionStore

        private var subscription: Subscription? = null
        private var handle: ObserverHandle? = null
        private var open = false
        private var released = false

        /** Holding the room's lock. */
        fun open() {
            open = true
            openChannel(channel, this)
        }

        override fun onListen(arguments: Any?, sink: EventSink) {
            // Flutter cancels a listening sink before a second listen; should it not, the
            // previous engine listener is removed here.
            val previous = synchronized(room.lock) { listen(sink) }
            previous?.let(store::removeKeyChangeListener)
        }

        /** Holding the room's lock; returns the previous engine listener to remove. */
        private fun listen(sink: EventSink): ObserverHandle? {
            if (released) return null
            subscription?.active = false
            subscription = null
            val previous = handle.also { handle = null }
            val listening = Subscription(sink)
            val reason = room.ended
            if (reason != null) {
                // Also when Dart listened just as the room ended: the stream ends, never hangs.
                sendEnd(listening, reason)
                return previous
            }
            if (!open) {
                // Listened to again after a cancel, which removed this listener.
                listening.endOfStream()
                return previous
            }
            subscription = listening
            try {
                handle = store.addKeyChangeListener(
                    keys,
                    keyChangeListener { key, entry -> listening.send(mapOf("key" to key, "entry" to entry?.toChannel())) },
                )
            } catch (_: RoomException.NotConnected) {
                // The room is ending: its end, queued on the engine's listener thread, ends this stream.
            } catch (failure: Exception) {
                // A key the engine refuses (too long, empty): the stream fails and ends.
                listening.fail(failure.toChannelError())
                listening.endOfStream()
                subscription = null
            }
            return previous
        }

        override fun onCancel(arguments: Any?) {
            val removed = synchronized(room.lock) {
                subscription?.active = false
                subscription = null
                close()
                handle.also { handle = null }
            }
            // Outside the lock: it waits for a running call of this listener, which takes none.
            removed?.let(store::removeKeyChangeListener)
        }

        /** On the engine's listener thread, after every call of this listener. */
        fun roomEnded(reason: DisconnectReason) {
            synchronized(room.lock) {
                if (released) return
                handle = null // the engine lets go of its listeners when the room ends
                val listening = subscription
                if (listening != null) {
                    sendEnd(listening, reason) // closed when Dart cancels after endOfStream
                    subscription = null
                } else {
                    close() // never listened to: released with its room
                }
            }
        }

        /** Holding the room's lock: stops everything; returns the engine listener to remove. */
        fun releaseLocked(): ObserverHandle? {
            released = true
            subscription?.active = false
            subscription = null
            if (open) {
                open = false
                closeChannel(channel)
            }
            return handle.also { handle = null }
        }

        private fun close() {
            if (open) {
                open = false
                closeChannel(channel)
            }
            room.keyListeners.remove(id)
            room.maybeForget()
        }

        private fun sendEnd(listening: Subscription, reason: DisconnectReason) {
            if (reason != DisconnectReason.ClientRequested) listening.fail(roomEndedError(reason))
            listening.endOfStream()
        }
    }

    private companion object {
        val DETACHED = ChannelError("NOT_CONNECTED", "not connected: the plugin is detached from the engine", null)
        val CANCELLED = ChannelError("NOT_CONNECTED", "not connected: the plugin was reset or detached during the call", null)

        fun connectionStateEvent(state: ConnectionState) = mapOf("type" to "connectionState", "state" to state.toChannel())
    }
}
