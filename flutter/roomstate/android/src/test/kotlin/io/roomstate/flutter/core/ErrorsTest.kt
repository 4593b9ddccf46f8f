package io.roomstate.flutter.core

import io.roomstate.awaitUntil
import io.roomstate.DisconnectReason
import io.roomstate.InternalException
import io.roomstate.Limit
import io.roomstate.RoomException
import io.roomstate.StoreEntry
import kotlin.test.assertEquals
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test

/** Every error code of CHANNELS.md that a real server can produce, and the mapping of the rest. */
class ErrorsTest : ChannelTest() {

    @Test
    fun `NOT_CONNECTED for a room never joined, and for one that was left`() = runBlocking<Unit> {
        val unknown = flutter.fails("NOT_CONNECTED", "get", mapOf("room" to 77, "key" to "k"))
        assertNull(unknown.details)
        val alice = flutter.join(server, "alice")
        flutter.ok("disconnect", mapOf("room" to alice.id))
        flutter.fails("NOT_CONNECTED", "set", mapOf("room" to alice.id, "key" to "k", "valueJson" to "1"))
        flutter.fails("NOT_CONNECTED", "addKeyChangeListener", mapOf("room" to alice.id, "keys" to listOf("k")))
    }

    @Test
    fun `TIMEOUT when the server does not answer within requestTimeoutMs`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice", options = fastOptions(requestTimeoutMs = 300))
        server.freeze(true)
        try {
            val timeout = flutter.fails("TIMEOUT", "set", mapOf("room" to alice.id, "key" to "k", "valueJson" to "1"))
            assertEquals(mapOf("sent" to true), timeout.details)
        } finally {
            server.freeze(false)
        }
    }

    @Test
    fun `LIMIT_EXCEEDED with the limit, its maximum and the actual size`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val value = "\"${"x".repeat(2000)}\""
        val limit = flutter.fails("LIMIT_EXCEEDED", "set", mapOf("room" to alice.id, "key" to "big", "valueJson" to value))
        assertEquals(mapOf("limit" to "valueBytes", "max" to 1024L, "actual" to 2002L), limit.details)
    }

    @Test
    fun `NOT_ALLOWED for a token that may not update its own metadata`() = runBlocking<Unit> {
        val viewer = flutter.join(server, "viewer", canUpdateMetadata = false)
        flutter.fails("NOT_ALLOWED", "setMetadata", mapOf("room" to viewer.id, "metadata" to "x"))
        flutter.fails("NOT_ALLOWED", "setAttributes", mapOf("room" to viewer.id, "attributes" to mapOf("hand" to "up")))
    }

    @Test
    fun `CONFLICT carries the current entry, or null when the key is absent`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val version = flutter.ok("compareAndSet", mapOf("room" to alice.id, "key" to "lock", "expectedVersion" to 0, "valueJson" to "\"alice\""))
        val present = flutter.fails("CONFLICT", "compareAndSet", mapOf("room" to alice.id, "key" to "lock", "expectedVersion" to 0, "valueJson" to "\"bob\""))
        val current = (present.details as Map<*, *>)["current"] as Map<*, *>
        assertEquals("\"alice\"", current["valueJson"])
        assertEquals(version, current["version"])
        val absent = flutter.fails("CONFLICT", "compareAndSet", mapOf("room" to alice.id, "key" to "nothing", "expectedVersion" to 5, "valueJson" to "1"))
        assertEquals(mapOf("current" to null), absent.details)
    }

    @Test
    fun `INVALID_VALUE for text that is not JSON and for an empty key`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        flutter.fails("INVALID_VALUE", "set", mapOf("room" to alice.id, "key" to "k", "valueJson" to "{not json"))
        flutter.fails("INVALID_VALUE", "get", mapOf("room" to alice.id, "key" to ""))
    }

    @Test
    fun `a key the engine refuses fails the listener's stream`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val (_, keys) = flutter.addListener(alice.id, "")
        val failure = keys!!.next() as Item.Failure
        assertEquals("INVALID_VALUE", failure.code)
        assertEquals(Item.Done, keys.next())
        awaitUntil("the channel closed") { !flutter.channels.isOpen(keys.name) }
    }

    @Test
    fun `INVALID_TOKEN with the server's code`() = runBlocking<Unit> {
        val refused = flutter.fails(
            "INVALID_TOKEN", "connect",
            mapOf("url" to server.url, "token" to token("mallory", secret = "wrong"), "options" to fastOptions()),
        )
        assertEquals(mapOf("code" to "invalid_token"), refused.details)
        assertTrue(flutter.channels.opened.isEmpty(), "no channel for a room never joined")
    }

    @Test
    fun `CONNECT when nothing listens`() = runBlocking<Unit> {
        flutter.fails("CONNECT", "connect", mapOf("url" to "ws://127.0.0.1:1", "token" to token("nobody"), "options" to fastOptions()))
        // With a fallback (another node of the cluster), the dead address is skipped.
        val moved = flutter.ok(
            "connect",
            mapOf("url" to "ws://127.0.0.1:1", "token" to token("mover"), "options" to fastOptions() + ("fallbackUrls" to listOf(server.url))),
        ) as Map<*, *>
        assertEquals(mapOf("state" to "connected"), flutter.ok("connectionState", mapOf("room" to moved["room"])))
    }

    @Test
    fun `BAD_ARGUMENTS for missing or wrongly typed arguments`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val room = alice.id
        val bad = listOf(
            "set" to mapOf("room" to room, "valueJson" to "1"),
            "set" to mapOf("room" to room, "key" to 5, "valueJson" to "1"),
            "set" to mapOf("room" to room, "key" to "k", "valueJson" to null),
            "get" to mapOf("room" to "1", "key" to "k"),
            "get" to mapOf("key" to "k"),
            "get" to null,
            "compareAndSet" to mapOf("room" to room, "key" to "k", "expectedVersion" to -1, "valueJson" to "1"),
            "compareAndSet" to mapOf("room" to room, "key" to "k", "expectedVersion" to 1.0, "valueJson" to "1"),
            "compareAndSet" to mapOf("room" to room, "key" to "k", "expectedVersion" to 0, "valueJson" to 1),
            "addKeyChangeListener" to mapOf("room" to room, "keys" to "k"),
            "addKeyChangeListener" to mapOf("room" to room, "keys" to listOf("k", 2)),
            "setAttributes" to mapOf("room" to room, "attributes" to mapOf("hand" to 1)),
            "setAttributes" to mapOf("room" to room, "attributes" to listOf("hand")),
            "setMetadata" to mapOf("room" to room),
            "setName" to mapOf("room" to room, "name" to null),
            "updateToken" to mapOf("room" to room),
            "disconnect" to mapOf("room" to null),
            "connect" to mapOf("url" to server.url),
            "connect" to mapOf("url" to server.url, "token" to token("x"), "options" to mapOf("requestTimeoutMs" to "10")),
            "connect" to mapOf("url" to server.url, "token" to token("x"), "options" to mapOf("requestTimeoutMs" to -5)),
            "connect" to mapOf("url" to server.url, "token" to token("x"), "options" to mapOf("fallbackUrls" to listOf(1))),
            "connect" to mapOf("url" to server.url, "token" to token("x"), "options" to mapOf("requestTimeout" to 10)),
        )
        for ((method, arguments) in bad) {
            val failure = flutter.fails("BAD_ARGUMENTS", method, arguments)
            assertTrue(failure.message!!.startsWith("$method needs") || failure.message!!.startsWith("$method has no"), failure.message)
        }
        assertEquals("set needs a string 'key'", flutter.fails("BAD_ARGUMENTS", "set", mapOf("room" to room)).message)
        // Checked before the room: a plugin bug shows even on a room that is gone.
        flutter.fails("BAD_ARGUMENTS", "set", mapOf("room" to 999, "key" to "k"))
    }

    @Test
    fun `ROOM_ENDED on the key streams when this participant is removed`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val (_, keys) = flutter.addListener(alice.id, "k")
        keys!!.nextEvent()
        val (neverListened, _) = flutter.addListener(alice.id, "k", listen = false)
        server.admin("participant", "remove", ROOM, "alice")

        val ended = keys.next() as Item.Failure
        assertEquals("ROOM_ENDED", ended.code)
        assertEquals(mapOf("reason" to "removed"), ended.details)
        assertEquals("the room ended: removed", ended.message)
        assertEquals(Item.Done, keys.next())
        val last = alice.events!!.awaitEvent("the end") { it["type"] == "connectionState" && it["state"].asMap()["state"] == "disconnected" }
        assertEquals(mapOf("state" to "disconnected", "reason" to mapOf("reason" to "removed")), last["state"])
        assertEquals(Item.Done, alice.events.next())
        // Listened channels close when Dart cancels after endOfStream, the other one at the end.
        awaitUntil("every channel of the room closed: ${flutter.channels.handlers.keys}") { flutter.channels.handlers.isEmpty() }
        assertTrue("$KEYS_CHANNEL_PREFIX$neverListened" in flutter.channels.closed)
        flutter.fails("NOT_CONNECTED", "get", mapOf("room" to alice.id, "key" to "k"))
    }

    @Test
    fun `ROOM_ENDED when another connection takes the identity`() = runBlocking<Unit> {
        val first = flutter.join(server, "alice")
        val (_, keys) = flutter.addListener(first.id, "k")
        keys!!.nextEvent()
        val second = flutter.join(server, "alice")
        val ended = keys.next() as Item.Failure
        assertEquals("ROOM_ENDED", ended.code)
        assertEquals(mapOf("reason" to "duplicateIdentity"), ended.details)
        assertEquals(Item.Done, keys.next())
        first.events!!.awaitDone()
        flutter.fails("NOT_CONNECTED", "get", mapOf("room" to first.id, "key" to "k"))
        assertEquals(mapOf("state" to "connected"), flutter.ok("connectionState", mapOf("room" to second.id)))
    }

    @Test
    fun `every engine error maps to its code, message and details`() {
        val entry = StoreEntry("spotlight", """{"identity":"bob"}""", 1u, "bob", 1_796_134_273_582u)
        val cases = listOf(
            RoomException.NotConnected("the room is disconnected") to ChannelError("NOT_CONNECTED", "not connected: the room is disconnected", null),
            RoomException.Timeout(true) to ChannelError("TIMEOUT", "timed out (request sent: true)", mapOf("sent" to true)),
            RoomException.Timeout(false) to ChannelError("TIMEOUT", "timed out (request sent: false)", mapOf("sent" to false)),
            RoomException.ConnectionLost() to ChannelError("CONNECTION_LOST", "connection lost before the server answered", null),
            RoomException.LimitExceeded(Limit.ATTRIBUTES_BYTES, 65_536u, 70_000u, "too big") to
                ChannelError("LIMIT_EXCEEDED", "limit exceeded: too big", mapOf("limit" to "attributesBytes", "max" to 65_536L, "actual" to 70_000L)),
            RoomException.NotAllowed("no") to ChannelError("NOT_ALLOWED", "not allowed: no", null),
            RoomException.Conflict(entry) to ChannelError("CONFLICT", "conflict: the key changed", mapOf("current" to entry.toChannel())),
            RoomException.Conflict(null) to ChannelError("CONFLICT", "conflict: the key changed", mapOf("current" to null)),
            RoomException.InvalidValue("keys are non-empty") to ChannelError("INVALID_VALUE", "invalid value: keys are non-empty", null),
            RoomException.InvalidToken("token_expired", "expired") to ChannelError("INVALID_TOKEN", "token refused (token_expired): expired", mapOf("code" to "token_expired")),
            RoomException.Unavailable("the room's shared state cannot be reached") to
                ChannelError("UNAVAILABLE", "unavailable: the room's shared state cannot be reached", null),
            RoomException.OutcomeUnknown("the room's shared state stopped answering; the change may still have been stored") to
                ChannelError("OUTCOME_UNKNOWN", "outcome unknown: the room's shared state stopped answering; the change may still have been stored", null),
            RoomException.Connect("Connection refused") to ChannelError("CONNECT", "cannot connect: Connection refused", null),
            RoomException.Internal("bug") to ChannelError("INTERNAL", "internal error: bug", null),
            InternalException("uniffi") to ChannelError("INTERNAL", "internal error: io.roomstate.InternalException: uniffi", null),
            IllegalStateException("oops") to ChannelError("INTERNAL", "internal error: java.lang.IllegalStateException: oops", null),
            badArguments("set needs a string 'key'") to ChannelError("BAD_ARGUMENTS", "set needs a string 'key'", null),
        )
        for ((exception, expected) in cases) {
            val actual = exception.toChannelError()
            assertEquals(expected, actual, "$exception")
            val name = if (actual.code == "CONFLICT") {
                if ((actual.details as Map<*, *>)["current"] == null) "CONFLICT.absent" else "CONFLICT.present"
            } else {
                actual.code
            }
            val shape = mapOf("code" to actual.code, "message" to actual.message, "details" to actual.details)
            assertNull(Vectors.mismatch(Vectors.error(name)!!, shape), "$name: $shape")
        }
        // Every way a room ends, as ROOM_ENDED's details.
        val reasons = listOf(
            DisconnectReason.Removed, DisconnectReason.DuplicateIdentity, DisconnectReason.SessionEnded,
            DisconnectReason.ClientRequested, DisconnectReason.TokenRefused("the access token has expired"),
        )
        for (reason in reasons) {
            val ended = roomEndedError(reason)
            assertEquals("the room ended: ${reason.channelName()}", ended.message)
            val shape = mapOf("code" to ended.code, "message" to ended.message, "details" to ended.details)
            assertNull(Vectors.mismatch(Vectors.error("ROOM_ENDED")!!, shape), "$shape")
        }
        assertEquals(
            mapOf("reason" to "tokenRefused", "detail" to "the access token has expired"),
            DisconnectReason.TokenRefused("the access token has expired").toChannel(),
        )
        assertEquals(Limit.entries.map { it.channelName() }.toSet(), setOf("valueBytes", "keys", "storeBytes", "keyBytes", "attributesBytes", "metadataBytes", "nameBytes", "frameBytes"))
    }
}
