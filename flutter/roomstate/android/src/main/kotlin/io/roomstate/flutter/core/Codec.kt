// The channel format of CHANNELS.md: engine values as StandardMethodCodec values (maps
// with string keys, lists, strings, booleans, Longs, null), errors as (code, message,
// details), and the arguments of method calls read and checked.
package io.roomstate.flutter.core

import io.roomstate.ConnectOptions
import io.roomstate.ConnectionState
import io.roomstate.DisconnectReason
import io.roomstate.Limit
import io.roomstate.Participant
import io.roomstate.RoomException
import io.roomstate.StoreEntry

/** `Participant`: `{sid, identity, name, metadata, attributes, isLocal}`. */
fun Participant.toChannel(): Map<String, Any?> = mapOf(
    "sid" to sid,
    "identity" to identity,
    "name" to name,
    "metadata" to metadata,
    "attributes" to HashMap(attributes),
    "isLocal" to isLocal,
)

/** `[Participant]`, sorted by identity. */
fun List<Participant>.toChannel(): List<Map<String, Any?>> = sortedBy { it.identity }.map { it.toChannel() }

/** `Entry`: `{key, valueJson, version, updatedBy, updatedAtMs}`. */
fun StoreEntry.toChannel(): Map<String, Any?> = mapOf(
    "key" to key,
    "valueJson" to valueJson,
    "version" to version.toLong(),
    "updatedBy" to updatedBy,
    "updatedAtMs" to updatedAtMs.toLong(),
)

/** `ConnectionState`: `{state, reason?}`, `reason` only when disconnected. */
fun ConnectionState.toChannel(): Map<String, Any?> = when (this) {
    ConnectionState.Connecting -> mapOf("state" to "connecting")
    ConnectionState.Connected -> mapOf("state" to "connected")
    ConnectionState.Reconnecting -> mapOf("state" to "reconnecting")
    is ConnectionState.Disconnected -> mapOf("state" to "disconnected", "reason" to reason.toChannel())
}

/** `DisconnectReason`: `{reason, detail?}`. */
fun DisconnectReason.toChannel(): Map<String, Any?> = when (this) {
    is DisconnectReason.TokenRefused -> mapOf("reason" to channelName(), "detail" to detail)
    else -> mapOf("reason" to channelName())
}

fun DisconnectReason.channelName(): String = when (this) {
    DisconnectReason.ClientRequested -> "clientRequested"
    DisconnectReason.DuplicateIdentity -> "duplicateIdentity"
    DisconnectReason.Removed -> "removed"
    is DisconnectReason.TokenRefused -> "tokenRefused"
    DisconnectReason.SessionEnded -> "sessionEnded"
}

fun Limit.channelName(): String = when (this) {
    Limit.VALUE_BYTES -> "valueBytes"
    Limit.KEYS -> "keys"
    Limit.STORE_BYTES -> "storeBytes"
    Limit.KEY_BYTES -> "keyBytes"
    Limit.ATTRIBUTES_BYTES -> "attributesBytes"
    Limit.METADATA_BYTES -> "metadataBytes"
    Limit.NAME_BYTES -> "nameBytes"
    Limit.FRAME_BYTES -> "frameBytes"
}

/** A method or stream error as it crosses: `PlatformException(code, message, details)` in Dart. */
data class ChannelError(val code: String, val message: String, val details: Any?)

/** An error the plugin itself answers (bad arguments, an unknown room), thrown inside a call. */
class ChannelErrorException(val error: ChannelError) : Exception(error.message)

fun badArguments(message: String) = ChannelErrorException(ChannelError("BAD_ARGUMENTS", message, null))

fun notConnected(message: String) = ChannelErrorException(ChannelError("NOT_CONNECTED", "not connected: $message", null))

/** The stream error of a room that ended for another reason than leaving it. */
fun roomEndedError(reason: DisconnectReason) =
    ChannelError("ROOM_ENDED", "the room ended: ${reason.channelName()}", reason.toChannel())

/** Every failure of a call, as the table of CHANNELS.md says. Anything unexpected is INTERNAL. */
fun Throwable.toChannelError(): ChannelError = when (this) {
    is ChannelErrorException -> error
    is RoomException.NotConnected -> ChannelError("NOT_CONNECTED", "not connected: $detail", null)
    is RoomException.Timeout -> ChannelError("TIMEOUT", "timed out (request sent: $sent)", mapOf("sent" to sent))
    is RoomException.ConnectionLost ->
        ChannelError("CONNECTION_LOST", "connection lost before the server answered", null)
    is RoomException.LimitExceeded -> ChannelError(
        "LIMIT_EXCEEDED",
        "limit exceeded: $detail",
        mapOf("limit" to limit.channelName(), "max" to max.toLong(), "actual" to actual.toLong()),
    )
    is RoomException.NotAllowed -> ChannelError("NOT_ALLOWED", "not allowed: $detail", null)
    is RoomException.Conflict ->
        ChannelError("CONFLICT", "conflict: the key changed", mapOf("current" to current?.toChannel()))
    is RoomException.InvalidValue -> ChannelError("INVALID_VALUE", "invalid value: $detail", null)
    is RoomException.InvalidToken ->
        ChannelError("INVALID_TOKEN", "token refused ($code): $detail", mapOf("code" to code))
    is RoomException.Unavailable -> ChannelError("UNAVAILABLE", "unavailable: $detail", null)
    is RoomException.OutcomeUnknown -> ChannelError("OUTCOME_UNKNOWN", "outcome unknown: $detail", null)
    is RoomException.Connect -> ChannelError("CONNECT", "cannot connect: $detail", null)
    is RoomException.Internal -> ChannelError("INTERNAL", "internal error: $detail", null)
    else -> ChannelError("INTERNAL", "internal error: $this", null)
}

/** A method call's arguments, read with the type CHANNELS.md gives each; BAD_ARGUMENTS otherwise. */
class Arguments(private val method: String, private val map: Map<String, Any?>?) {
    private fun raw(name: String): Any? = map?.get(name)

    fun string(name: String): String =
        raw(name) as? String ?: throw badArguments("$method needs a string '$name'")

    fun optionalString(name: String): String? = when (val value = raw(name)) {
        null -> null
        is String -> value
        else -> throw badArguments("$method needs a string or null '$name'")
    }

    fun long(name: String): Long = integer(raw(name)) ?: throw badArguments("$method needs an integer '$name'")

    fun unsigned(name: String): ULong {
        val value = long(name)
        if (value < 0) throw badArguments("$method needs a non-negative integer '$name'")
        return value.toULong()
    }

    fun stringList(name: String): List<String> = asStringList(raw(name)) ?: throw badArguments("$method needs a list of strings '$name'")

    fun stringMap(name: String): Map<String, String> {
        val value = raw(name) as? Map<*, *> ?: throw badArguments("$method needs a map of strings '$name'")
        return value.entries.associate { (key, entry) ->
            if (key !is String || entry !is String) throw badArguments("$method needs a map of strings '$name'")
            key to entry
        }
    }

    /** `options` of `connect`: every field optional, `null` as absent, unknown fields refused. */
    fun connectOptions(name: String): ConnectOptions {
        val options = ConnectOptions()
        val given = when (val value = raw(name)) {
            null -> return options
            is Map<*, *> -> value
            else -> throw badArguments("$method needs a map or null '$name'")
        }
        for ((key, value) in given) {
            if (value == null) continue
            fun millis(): ULong {
                val ms = integer(value)
                if (ms == null || ms < 0) throw badArguments("$method needs a non-negative integer '$name.$key'")
                return ms.toULong()
            }
            when (key) {
                "requestTimeoutMs" -> options.requestTimeoutMs = millis()
                "connectTimeoutMs" -> options.connectTimeoutMs = millis()
                "pingIntervalMs" -> options.pingIntervalMs = millis()
                "pingTimeoutMs" -> options.pingTimeoutMs = millis()
                "reconnectBackoffMinMs" -> options.reconnectBackoffMinMs = millis()
                "reconnectBackoffMaxMs" -> options.reconnectBackoffMaxMs = millis()
                "fallbackUrls" -> options.fallbackUrls =
                    asStringList(value) ?: throw badArguments("$method needs a list of strings '$name.fallbackUrls'")
                else -> throw badArguments("$method has no option '$key'")
            }
        }
        return options
    }

    private fun asStringList(value: Any?): List<String>? {
        val list = value as? List<*> ?: return null
        return list.map { it as? String ?: return null }
    }

    /** StandardMessageCodec sends a Dart int as an Integer when it fits 32 bits, else as a Long. */
    private fun integer(value: Any?): Long? = when (value) {
        is Long -> value
        is Int -> value.toLong()
        is Short -> value.toLong()
        is Byte -> value.toLong()
        else -> null
    }
}
