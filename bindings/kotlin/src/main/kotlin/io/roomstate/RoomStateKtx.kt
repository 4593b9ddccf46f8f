// The idiomatic Kotlin layer over the generated bindings: typed values through
// kotlinx.serialization, Flows of a key's values, and listeners with defaults.
package io.roomstate

import java.io.File
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.ensureActive
import kotlinx.coroutines.launch
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.flow.map
import kotlinx.serialization.json.Json

/**
 * Where an app starts: joins rooms. Before the first call it loads the engine with
 * `System.loadLibrary`, so that the JVM hands the engine its `JavaVM` (`JNI_OnLoad`) and the
 * engine's two threads join the JVM once, as named daemon threads, on every Android version.
 * `Room.connect` works too, but without this the engine finds the JVM only on Android 12+
 * (API 31), and elsewhere JNA attaches a new thread for each listener call.
 */
object RoomState {
    private const val LIBRARY = "roomstate"

    init {
        loadEngine()
    }

    /** Joins the room the token grants and returns once joined. */
    suspend fun connect(
        url: String,
        token: String,
        listener: RoomListener = DefaultRoomListener(),
        options: ConnectOptions = ConnectOptions(),
    ): Room = Room.connect(url, token, listener, options)

    private fun loadEngine() {
        try {
            System.loadLibrary(LIBRARY)
        } catch (notOnLibraryPath: UnsatisfiedLinkError) {
            // A desktop JVM may have the library only where JNA looks for it.
            val library = System.getProperty("jna.library.path").orEmpty()
                .split(File.pathSeparator)
                .filter { it.isNotEmpty() }
                .map { File(it, System.mapLibraryName(LIBRARY)) }
                .firstOrNull { it.isFile }
                ?: throw notOnLibraryPath
            System.load(library.absolutePath)
        }
    }
}

/** How store values are encoded: unknown keys are ignored, so older apps read newer values. */
val RoomStateJson: Json = Json { ignoreUnknownKeys = true }

/** Decodes this entry's JSON value. */
inline fun <reified T> StoreEntry.decode(json: Json = RoomStateJson): T = json.decodeFromString(valueJson)

/** Writes `value` as JSON under `key`; returns the new version. */
suspend inline fun <reified T> SessionStore.setValue(key: String, value: T, json: Json = RoomStateJson): ULong =
    set(key, json.encodeToString(value))

/** The value under `key`, decoded; null when the key does not exist. */
suspend inline fun <reified T> SessionStore.getValue(key: String, json: Json = RoomStateJson): T? =
    get(key)?.decode<T>(json)

/**
 * Writes `value` only if `key` is still at `expectedVersion` (0: it must not exist); null deletes.
 * Throws [RoomException.Conflict] with the current entry when someone wrote first.
 */
suspend inline fun <reified T> SessionStore.compareAndSetValue(
    key: String,
    expectedVersion: ULong,
    value: T?,
    json: Json = RoomStateJson,
): ULong = compareAndSet(key, expectedVersion, value?.let { json.encodeToString(it) })

/** A listener from a lambda. */
fun keyChangeListener(onChange: (key: String, entry: StoreEntry?) -> Unit): KeyChangeListener =
    object : KeyChangeListener {
        override fun onKeyChanged(key: String, entry: StoreEntry?) = onChange(key, entry)
    }

/**
 * How a [changes] or [values] Flow ends when its room ends for any reason but leaving it
 * (`disconnect()`, after which the Flow just completes): this participant was removed, the
 * session ended, another connection took the identity, or the token was refused.
 */
class RoomEndedException(val reason: DisconnectReason) : Exception("the room ended: $reason")

/**
 * The entries of `key`: the current one first (null: absent), then every change, in order.
 * The listener is removed when collection stops. The Flow completes when the room is left
 * and fails with [RoomEndedException] when it ends otherwise, after every change before the
 * end was emitted; collected after the room has ended, it fails with
 * [RoomException.NotConnected], and a collector cancelled first just ends cancelled.
 * Buffered without bound, so a slow collector never holds up the room's
 * listener thread.
 */
fun SessionStore.changes(key: String): Flow<StoreEntry?> = callbackFlow {
    // callbackFlow starts this block even when its collector was cancelled first (an
    // ATOMIC start): by then the room may be gone, and a collector that was cancelled
    // must end cancelled, not with the NotConnected of a listener it no longer wants.
    ensureActive()
    val handle = addKeyChangeListener(listOf(key), keyChangeListener { _, entry -> trySend(entry) })
    // `ended()` resolves on the listener thread after the calls queued before the end ran.
    val end = launch {
        when (val reason = ended()) {
            DisconnectReason.ClientRequested -> channel.close()
            else -> channel.close(RoomEndedException(reason))
        }
    }
    awaitClose {
        end.cancel()
        removeKeyChangeListener(handle)
    }
}.buffer(Channel.UNLIMITED)

/** The decoded values of `key`, as [changes]. */
inline fun <reified T> SessionStore.values(key: String, json: Json = RoomStateJson): Flow<T?> =
    changes(key).map { entry -> entry?.decode<T>(json) }

/** A [RoomListener] whose methods do nothing: override the ones you need. */
open class DefaultRoomListener : RoomListener {
    override fun onSessionStoreAvailable(store: SessionStore) {}
    override fun onConnectionStateChanged(state: ConnectionState) {}
    override fun onParticipantJoined(participant: Participant) {}
    override fun onParticipantLeft(participant: Participant) {}
    override fun onAttributesChanged(participant: Participant, changedKeys: List<String>) {}
    override fun onMetadataChanged(participant: Participant, oldMetadata: String, newMetadata: String) {}
    override fun onNameChanged(participant: Participant, oldName: String, newName: String) {}
    override fun onRoomMetadataChanged(oldMetadata: String, newMetadata: String) {}
}
