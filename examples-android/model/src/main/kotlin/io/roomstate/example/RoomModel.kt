// The example app's logic: joins a room and turns what the engine reports into one
// RoomUiState. Plain Kotlin (no Android imports): the ViewModel passes viewModelScope, the
// tests a scope of their own.
package io.roomstate.example

import io.roomstate.ConnectOptions
import io.roomstate.ConnectionState
import io.roomstate.DefaultRoomListener
import io.roomstate.DisconnectReason
import io.roomstate.Participant
import io.roomstate.Room
import io.roomstate.RoomEndedException
import io.roomstate.RoomException
import io.roomstate.RoomState
import io.roomstate.SessionStore
import io.roomstate.StoreEntry
import io.roomstate.changes
import io.roomstate.compareAndSetValue
import io.roomstate.decode
import io.roomstate.setValue
import java.util.concurrent.atomic.AtomicInteger
import java.util.concurrent.atomic.AtomicReference
import kotlin.coroutines.cancellation.CancellationException
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.catch
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.launch

/**
 * A room as the screens see it: [state], and actions that never throw (a failure becomes
 * [RoomUiState.notice]). Actions return at once; the [Job] they return is for tests.
 *
 * Store keys: "pinned" ([Pinned]) and "spotlight" ([Spotlight]). Participant attribute:
 * "hand" = "raised".
 */
class RoomModel(
    private val scope: CoroutineScope,
    private val options: ConnectOptions = ConnectOptions(),
) {
    private val mutableState = MutableStateFlow(RoomUiState())
    val state: StateFlow<RoomUiState> = mutableState.asStateFlow()

    /** A joined room and the coroutine observing its store. */
    private class Session(val id: Int, val room: Room, val store: SessionStore, val observing: Job) {
        fun close() {
            observing.cancel()
            room.close() // dropping the room leaves it, if disconnect() did not already
        }
    }

    /** Counts connects: what an older room's listener reports is ignored. */
    private val connects = AtomicInteger()
    private val session = AtomicReference<Session?>(null)

    /** Guards [spotlightUpdates] and the spotlight fields of the state; see [claimSpotlight]. */
    private val spotlightLock = Any()
    private var spotlightUpdates = 0L

    /** Joins the room the token grants. */
    fun connect(url: String, token: String): Job {
        val id = connects.incrementAndGet()
        session.getAndSet(null)?.let { old -> scope.launch { leave(old) } }
        mutableState.value = RoomUiState(connection = Connection.Connecting)
        return scope.launch {
            val room = try {
                RoomState.connect(url.trim(), token.trim(), Listener(id), options)
            } catch (e: CancellationException) {
                throw e
            } catch (e: Exception) {
                if (connects.get() == id) {
                    mutableState.value = RoomUiState(
                        connection = Connection.Disconnected(describe(e)),
                        notice = "Could not join: ${describe(e)}",
                    )
                }
                return@launch
            }
            val store = room.sessionStore()
            val joined = Session(id, room, store, scope.launch { observe(id, store) })
            if (connects.get() != id || !session.compareAndSet(null, joined)) {
                leave(joined) // disconnect() or another connect() came first
                return@launch
            }
            val local = room.localParticipant().info()
            val everyone = room.remoteParticipants() + listOfNotNull(local)
            mutableState.update { current ->
                when (current.connection) {
                    is Connection.Disconnected -> current // the room already ended (the listener said why)
                    else -> current.copy(
                        connection = room.connectionState().toConnection() ?: current.connection,
                        localIdentity = local?.identity,
                        participants = everyone.map { it.toUi() }.sortedBy { it.identity },
                    )
                }
            }
        }
    }

    /** Pins `text` for everyone. */
    fun pin(text: String): Job = action("Pinning") { session ->
        if (text.isBlank()) {
            notice("Type a message to pin")
            return@action
        }
        session.store.setValue(PINNED, Pinned(text.trim(), by = session.localIdentity()))
    }

    fun unpin(): Job = action("Unpinning") { session -> session.store.delete(PINNED) }

    /**
     * Takes the spotlight, from nobody or from whoever this state shows holding it: a
     * compare-and-set at the version last seen (0 when absent), so when two people claim at
     * once, exactly one wins and the other is told who. The version is the one shown when
     * the user asked, read before the action is queued: a claim that runs after someone
     * else's took the spotlight is told so, and does not take it from them.
     */
    fun claimSpotlight(): Job {
        val (seen, shown) = spotlightAsShown()
        return action("Claiming the spotlight") { session ->
            if (shown.hasSpotlight) return@action
            try {
                session.store.compareAndSetValue(SPOTLIGHT, shown.spotlightVersion, Spotlight(session.localIdentity()))
                // The store's Flow shows the new holder: the change arrives before the reply.
            } catch (conflict: RoomException.Conflict) {
                val winner = showConflict(seen, conflict.current)
                notice(if (winner != null) "$winner took the spotlight first" else "The spotlight changed meanwhile: try again")
            }
        }
    }

    /** Gives the spotlight back, if this participant has it. */
    fun releaseSpotlight(): Job {
        val (seen, shown) = spotlightAsShown()
        return action("Releasing the spotlight") { session ->
            if (!shown.hasSpotlight) {
                notice("You don't have the spotlight")
                return@action
            }
            try {
                session.store.compareAndSet(SPOTLIGHT, shown.spotlightVersion, null)
            } catch (conflict: RoomException.Conflict) {
                val holder = showConflict(seen, conflict.current)
                if (holder != null) notice("$holder has the spotlight now")
            }
        }
    }

    /** The state as the user sees it now, and how many spotlight updates it reflects; see [showConflict]. */
    private fun spotlightAsShown(): Pair<Long, RoomUiState> = synchronized(spotlightLock) { spotlightUpdates to state.value }

    /** Raises or lowers this participant's hand (a participant attribute; "" deletes it). */
    fun raiseHand(raised: Boolean): Job = action(if (raised) "Raising your hand" else "Lowering your hand") { session ->
        session.room.localParticipant().setAttributes(mapOf(HAND to if (raised) HAND_RAISED else ""))
        // The list shows it through onAttributesChanged, which the engine calls for this
        // participant too (in order with every other change, unlike this call's result).
    }

    /**
     * Call when the OS reports a network change (Android: ConnectivityManager.NetworkCallback).
     * The old socket may be dead without anyone knowing yet: this resumes at once instead of
     * after the ping timeout. Cheap when the link was fine.
     */
    fun networkChanged() {
        try {
            session.get()?.room?.reconnectNow()
        } catch (e: Exception) {
            notice("Reconnecting failed: ${describe(e)}")
        }
    }

    /** Call when the app returns to the foreground: the socket may have died meanwhile. */
    fun returnedToForeground() = networkChanged()

    /** Leaves the room: the others see this participant leave at once. */
    fun disconnect(): Job {
        connects.incrementAndGet()
        val old = session.getAndSet(null)
        mutableState.value = RoomUiState()
        return scope.launch { old?.let { leave(it) } }
    }

    /** For ViewModel.onCleared, when the scope is already cancelled: drops the room, which leaves it. */
    fun close() {
        connects.incrementAndGet()
        session.getAndSet(null)?.close()
    }

    /** Clears the notice (only if it is still `shown`, when given). */
    fun dismissNotice(shown: String? = null) =
        mutableState.update { if (shown == null || it.notice == shown) it.copy(notice = null) else it }

    // What the store shows, from the first value on.
    private suspend fun observe(id: Int, store: SessionStore) = coroutineScope {
        launch {
            store.changes(PINNED).endQuietly().collect { entry ->
                update(id) { it.copy(pinned = entry?.decodeOrNull<Pinned>()) }
            }
        }
        launch {
            store.changes(SPOTLIGHT).endQuietly().collect { entry ->
                synchronized(spotlightLock) {
                    spotlightUpdates++
                    update(id) { it.withSpotlight(entry) }
                }
            }
        }
    }

    /**
     * Shows the entry a Conflict carried, unless the store's Flow showed something since the
     * call was made (then the Flow is at least as new, and it goes on in order). Returns who
     * holds the spotlight according to that entry.
     */
    private fun showConflict(seenBefore: Long, current: StoreEntry?): String? = synchronized(spotlightLock) {
        if (spotlightUpdates == seenBefore) mutableState.update { it.withSpotlight(current) }
        current?.holder()
    }

    /** The room's end is reported by the listener (with the reason): the Flows just stop. */
    private fun <T> Flow<T>.endQuietly(): Flow<T> = catch { e ->
        if (e !is RoomEndedException) notice("Stopped observing the room: ${describe(e)}")
    }

    private inner class Listener(private val id: Int) : DefaultRoomListener() {
        override fun onConnectionStateChanged(state: ConnectionState) {
            if (connects.get() != id) return
            when (state) {
                is ConnectionState.Disconnected -> ended(id, state.reason)
                // Only the banner changes: the room's last known state stays shown.
                else -> update(id) { it.copy(connection = state.toConnection() ?: it.connection) }
            }
        }

        override fun onParticipantJoined(participant: Participant) = upsert(id, participant)

        override fun onAttributesChanged(participant: Participant, changedKeys: List<String>) = upsert(id, participant)

        override fun onNameChanged(participant: Participant, oldName: String, newName: String) =
            upsert(id, participant)

        override fun onParticipantLeft(participant: Participant) = update(id) { state ->
            state.copy(participants = state.participants.filterNot { it.sid == participant.sid })
        }
    }

    private fun ended(id: Int, reason: DisconnectReason) {
        val ended = session.get()
        if (ended?.id == id && session.compareAndSet(ended, null)) scope.launch { ended.close() }
        mutableState.value = RoomUiState(connection = Connection.Disconnected(describe(reason)))
    }

    private fun upsert(id: Int, participant: Participant) = update(id) { state ->
        val others = state.participants.filterNot { it.identity == participant.identity }
        state.copy(participants = (others + participant.toUi()).sortedBy { it.identity })
    }

    private fun update(id: Int, transform: (RoomUiState) -> RoomUiState) {
        if (connects.get() == id) mutableState.update(transform)
    }

    private fun notice(text: String) = mutableState.update { it.copy(notice = text) }

    /** Runs `block` on the current room; whatever fails becomes a notice. */
    private fun action(what: String, block: suspend (Session) -> Unit): Job = scope.launch {
        val current = session.get()
        if (current == null) {
            notice("$what failed: not in a room")
            return@launch
        }
        try {
            block(current)
        } catch (e: CancellationException) {
            throw e
        } catch (e: Exception) {
            notice("$what failed: ${describe(e)}")
        }
    }

    private suspend fun leave(session: Session) {
        try {
            session.observing.cancel()
            session.room.disconnect()
        } catch (e: Exception) {
            // Leaving a room that already ended: nothing to do.
        } finally {
            session.room.close()
        }
    }

    private fun Session.localIdentity(): String =
        room.localParticipant().info()?.identity ?: state.value.localIdentity.orEmpty()

    private companion object {
        const val PINNED = "pinned"
        const val SPOTLIGHT = "spotlight"
        const val HAND = "hand"
        const val HAND_RAISED = "raised"

        fun Participant.toUi() = ParticipantUi(
            identity = identity,
            name = name.ifEmpty { identity },
            handRaised = attributes[HAND] == HAND_RAISED,
            isLocal = isLocal,
            sid = sid,
        )

        fun RoomUiState.withSpotlight(entry: StoreEntry?) =
            copy(spotlightHolder = entry?.holder(), spotlightVersion = entry?.version ?: 0u)

        /** The identity in a "spotlight" entry (its writer if the value is not a [Spotlight]). */
        fun StoreEntry.holder(): String = decodeOrNull<Spotlight>()?.identity ?: updatedBy

        inline fun <reified T> StoreEntry.decodeOrNull(): T? = runCatching { decode<T>() }.getOrNull()

        fun ConnectionState.toConnection(): Connection? = when (this) {
            ConnectionState.Connecting -> Connection.Connecting
            ConnectionState.Connected -> Connection.Connected
            ConnectionState.Reconnecting -> Connection.Reconnecting
            is ConnectionState.Disconnected -> null
        }

        fun describe(reason: DisconnectReason): String = when (reason) {
            DisconnectReason.ClientRequested -> "you left the room"
            DisconnectReason.DuplicateIdentity -> "you joined from another device"
            DisconnectReason.Removed -> "you were removed from the room"
            DisconnectReason.SessionEnded -> "the session ended"
            is DisconnectReason.TokenRefused -> "the token was refused (${reason.detail})"
        }

        fun describe(e: Throwable): String = when (e) {
            is RoomException.InvalidToken -> "the token was refused (${e.code}: ${e.detail})"
            is RoomException.Connect -> "could not reach the server (${e.detail})"
            is RoomException.NotAllowed -> "not allowed (${e.detail})"
            is RoomException.NotConnected -> "not connected"
            is RoomException.Timeout ->
                if (e.sent) "no answer from the server (it may have been applied)" else "not sent: the connection is not back"
            is RoomException.ConnectionLost -> "the connection was lost (it may have been applied)"
            is RoomException.LimitExceeded -> "too large (${e.limit}: ${e.actual} > ${e.max})"
            is RoomException.InvalidValue -> "invalid (${e.detail})"
            is RoomException.Unavailable -> "the server is busy, try again (${e.detail})"
            is RoomException.OutcomeUnknown -> "the server stopped answering (it may have been applied)"
            else -> e.message ?: e.toString()
        }
    }
}
