package io.roomstate.flutter.core

import io.roomstate.awaitUntil
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.serialization.json.Json
import org.junit.jupiter.api.Test

/** Every method of CHANNELS.md, and every room event, against a real server. */
class MethodsTest : ChannelTest() {

    @Test
    fun `connect answers the room, its session, this participant and the others sorted by identity`() = runBlocking<Unit> {
        assertNull(flutter.ok("initialize", null))
        peer("carol")
        peer("bob")
        val alice = flutter.join(server, "alice")
        val result = alice.result
        assertTrue((result["sessionId"] as String).startsWith("SE_"), "$result")
        val local = result["local"].asMap()
        assertEquals("alice", local["identity"])
        assertEquals(true, local["isLocal"])
        assertEquals(listOf("bob", "carol"), result["participants"].identities())
        assertTrue(result["participants"].asList().none { it["isLocal"] == true })

        val snapshot = alice.events!!.nextEvent()
        assertEquals("snapshot", snapshot["type"])
        assertEquals(mapOf("state" to "connected"), snapshot["state"])
        assertEquals(local, snapshot["local"])
        assertEquals(listOf("bob", "carol"), snapshot["participants"].identities())
        assertEquals(true, snapshot["storeAvailable"])
    }

    @Test
    fun `disconnect leaves once, is idempotent, and ends the room's channel`() = runBlocking<Unit> {
        val bob = peer("bob")
        val alice = flutter.join(server, "alice")
        val (_, keys) = flutter.addListener(alice.id, "k")
        assertEquals(null, keys!!.nextEvent()["entry"])
        alice.events!!.nextEvent() // the snapshot

        assertNull(flutter.ok("disconnect", mapOf("room" to alice.id)))
        bob.awaitHeard("left:alice")
        // The last event is the state, disconnected, then the stream ends; the key stream just ends.
        val last = alice.events.awaitEvent("the final state") { it["type"] == "connectionState" && (it["state"].asMap())["state"] == "disconnected" }
        assertEquals(mapOf("state" to "disconnected", "reason" to mapOf("reason" to "clientRequested")), last["state"])
        assertEquals(Item.Done, alice.events.next())
        assertEquals(Item.Done, keys.next())
        // Dart cancels after endOfStream; the channels are closed then, not before.
        awaitUntil("the channels closed") { !flutter.channels.isOpen(alice.channel) && !flutter.channels.isOpen(keys.name) }

        assertNull(flutter.ok("disconnect", mapOf("room" to alice.id)))
        assertNull(flutter.ok("disconnect", mapOf("room" to 12_345)))
        flutter.fails("NOT_CONNECTED", "get", mapOf("room" to alice.id, "key" to "k"))
    }

    @Test
    fun `a room that ended before Dart listened still tells how it ended`() = runBlocking<Unit> {
        val first = flutter.join(server, "alice", listen = false)
        flutter.join(server, "alice") // takes the identity: the first room ends
        withTimeout(15_000) {
            while (flutter.call("connectionState", mapOf("room" to first.id)) is Outcome.Success) delay(20)
        }
        assertTrue(flutter.channels.isOpen(first.channel), "kept for Dart to listen")
        val events = flutter.listen(first.channel)
        val snapshot = events.nextEvent()
        assertEquals("snapshot", snapshot["type"])
        val last = events.nextEvent()
        assertEquals(mapOf("type" to "connectionState", "state" to mapOf("state" to "disconnected", "reason" to mapOf("reason" to "duplicateIdentity"))), last)
        assertEquals(Item.Done, events.next())
        awaitUntil("closed after Dart's cancel") { !flutter.channels.isOpen(first.channel) }
    }

    @Test
    fun `connectionState and remoteParticipants follow the room`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        assertEquals(mapOf("state" to "connected"), flutter.ok("connectionState", mapOf("room" to alice.id)))
        assertEquals(emptyList<Any?>(), flutter.ok("remoteParticipants", mapOf("room" to alice.id)))
        val dave = peer("dave")
        peer("bob")
        alice.events!!.awaitEvent("bob joined") { it["type"] == "participantJoined" && it["participant"].asMap()["identity"] == "bob" }
        assertEquals(listOf("bob", "dave"), flutter.ok("remoteParticipants", mapOf("room" to alice.id)).identities())
        dave.leave()
        alice.events.awaitEvent("dave left") { it["type"] == "participantLeft" }
        assertEquals(listOf("bob"), flutter.ok("remoteParticipants", mapOf("room" to alice.id)).identities())
    }

    @Test
    fun `get, set, delete and compareAndSet keep every JSON value's form`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val room = alice.id
        assertNull(flutter.ok("get", mapOf("room" to room, "key" to "pinned")))
        val value = """{"text":"Welcome!","by":"alice","n":[1,2.5,null,true],"big":9007199254740993}"""
        val version = flutter.ok("set", mapOf("room" to room, "key" to "pinned", "valueJson" to value)) as Long
        assertTrue(version > 0)
        val entry = flutter.ok("get", mapOf("room" to room, "key" to "pinned")).asMap()
        assertEquals(Json.parseToJsonElement(value), Json.parseToJsonElement(entry["valueJson"] as String))
        assertEquals(version, entry["version"])
        assertEquals("alice", entry["updatedBy"])
        assertTrue(entry["updatedAtMs"] as Long > 1_700_000_000_000)

        val next = flutter.ok("compareAndSet", mapOf("room" to room, "key" to "pinned", "expectedVersion" to version, "valueJson" to "\"two\""))
        assertEquals(version + 1, next)
        // valueJson null deletes; absent deletes too.
        flutter.ok("compareAndSet", mapOf("room" to room, "key" to "pinned", "expectedVersion" to next, "valueJson" to null))
        assertNull(flutter.ok("get", mapOf("room" to room, "key" to "pinned")))
        val created = flutter.ok("compareAndSet", mapOf("room" to room, "key" to "lock", "expectedVersion" to 0, "valueJson" to "\"alice\"")) as Long
        flutter.ok("compareAndSet", mapOf("room" to room, "key" to "lock", "expectedVersion" to created))
        assertNull(flutter.ok("get", mapOf("room" to room, "key" to "lock")))

        flutter.ok("set", mapOf("room" to room, "key" to "k", "valueJson" to "1"))
        assertNull(flutter.ok("delete", mapOf("room" to room, "key" to "k")))
        assertNull(flutter.ok("get", mapOf("room" to room, "key" to "k")))
        assertNull(flutter.ok("delete", mapOf("room" to room, "key" to "never-set")))
    }

    @Test
    fun `a key listener gets the current value, then every change once, until cancelled`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val bob = flutter.join(server, "bob")
        flutter.ok("set", mapOf("room" to bob.id, "key" to "k", "valueJson" to "1"))
        val (_, keys) = flutter.addListener(alice.id, "k", "other")
        val first = listOf(keys!!.nextEvent(), keys.nextEvent()).associate { it["key"] to it["entry"] }
        assertEquals("1", first.getValue("k").asMap()["valueJson"])
        assertNull(first.getValue("other"))

        flutter.ok("set", mapOf("room" to bob.id, "key" to "k", "valueJson" to "2"))
        assertEquals("2", keys.nextEvent()["entry"].asMap()["valueJson"])
        flutter.ok("delete", mapOf("room" to bob.id, "key" to "k"))
        assertEquals(mapOf("key" to "k", "entry" to null), keys.nextEvent())
        // Own writes come back too.
        flutter.ok("set", mapOf("room" to alice.id, "key" to "other", "valueJson" to "\"mine\""))
        assertEquals("\"mine\"", keys.nextEvent()["entry"].asMap()["valueJson"])

        keys.cancel()
        flutter.flush()
        assertFalse(flutter.channels.isOpen(keys.name), "cancelling closes the channel")
        flutter.ok("set", mapOf("room" to bob.id, "key" to "k", "valueJson" to "3"))
        keys.assertQuiet() // and the harness fails any delivery after a cancel
    }

    @Test
    fun `the wildcard key observes every key`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        flutter.ok("set", mapOf("room" to alice.id, "key" to "a", "valueJson" to "1"))
        val (_, keys) = flutter.addListener(alice.id, "*")
        flutter.ok("set", mapOf("room" to alice.id, "key" to "b", "valueJson" to "2"))
        keys!!.awaitEvent("b") { it["key"] == "b" && it["entry"] != null }
    }

    @Test
    fun `setAttributes, setMetadata and setName answer the participant, and the others hear of it`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val bob = flutter.join(server, "bob")
        val bobEvents = bob.events!!
        val updated = flutter.ok("setAttributes", mapOf("room" to alice.id, "attributes" to mapOf("hand" to "up", "brb" to "yes"))).asMap()
        assertEquals(mapOf("hand" to "up", "brb" to "yes"), updated["attributes"])
        assertEquals(true, updated["isLocal"])
        val heard = bobEvents.awaitEvent("attributes") { it["type"] == "attributesChanged" }
        assertEquals(listOf("brb", "hand"), (heard["changedKeys"] as List<*>).sortedBy { it as String })
        assertEquals("alice", heard["participant"].asMap()["identity"])
        // An empty value deletes its key; the others stay.
        val deleted = flutter.ok("setAttributes", mapOf("room" to alice.id, "attributes" to mapOf("hand" to ""))).asMap()
        assertEquals(mapOf("brb" to "yes"), deleted["attributes"])

        assertEquals("presenting", flutter.ok("setMetadata", mapOf("room" to alice.id, "metadata" to "presenting")).asMap()["metadata"])
        val metadata = bobEvents.awaitEvent("metadata") { it["type"] == "metadataChanged" }
        assertEquals(listOf("", "presenting"), listOf(metadata["old"], metadata["new"]))

        assertEquals("Alice", flutter.ok("setName", mapOf("room" to alice.id, "name" to "Alice")).asMap()["name"])
        val name = bobEvents.awaitEvent("name") { it["type"] == "nameChanged" }
        assertEquals(listOf("", "Alice"), listOf(name["old"], name["new"]))
        assertEquals("Alice", name["participant"].asMap()["name"])

        // Alice's own channel hears her changes as well, with isLocal set.
        val own = alice.events!!.awaitEvent("own name") { it["type"] == "nameChanged" }
        assertEquals(true, own["participant"].asMap()["isLocal"])
    }

    @Test
    fun `room events - joined, left, room metadata, and the connection state through reconnectNow`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val events = alice.events!!
        assertEquals("snapshot", events.nextEvent()["type"])
        val carol = peer("carol")
        assertEquals("carol", events.awaitEvent("joined") { it["type"] == "participantJoined" }["participant"].asMap()["identity"])
        carol.leave()
        assertEquals("carol", events.awaitEvent("left") { it["type"] == "participantLeft" }["participant"].asMap()["identity"])

        server.admin("room", "metadata", "set", ROOM, """{"topic":"math"}""")
        val metadata = events.awaitEvent("room metadata") { it["type"] == "roomMetadataChanged" }
        assertEquals(listOf("", """{"topic":"math"}"""), listOf(metadata["old"], metadata["new"]))

        assertNull(flutter.ok("reconnectNow", mapOf("room" to alice.id)))
        events.awaitEvent("reconnecting") { it["type"] == "connectionState" && it["state"] == mapOf("state" to "reconnecting") }
        events.awaitEvent("connected") { it["type"] == "connectionState" && it["state"] == mapOf("state" to "connected") }
        assertEquals(mapOf("state" to "connected"), flutter.ok("connectionState", mapOf("room" to alice.id)))
    }

    @Test
    fun `updateToken is the token of the next connection`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val events = alice.events!!
        val (_, keys) = flutter.addListener(alice.id, "k")
        keys!!.nextEvent()
        // A good token: the room resumes.
        assertNull(flutter.ok("updateToken", mapOf("room" to alice.id, "token" to token("alice"))))
        flutter.ok("reconnectNow", mapOf("room" to alice.id))
        events.awaitEvent("reconnecting") { it["type"] == "connectionState" && it["state"] == mapOf("state" to "reconnecting") }
        events.awaitEvent("connected") { it["type"] == "connectionState" && it["state"] == mapOf("state" to "connected") }
        flutter.ok("set", mapOf("room" to alice.id, "key" to "k", "valueJson" to "1"))
        assertEquals("1", keys.nextEvent()["entry"].asMap()["valueJson"])

        // A token the server refuses: the room ends with that reason.
        flutter.ok("updateToken", mapOf("room" to alice.id, "token" to "not-a-jwt"))
        flutter.ok("reconnectNow", mapOf("room" to alice.id))
        val last = events.awaitEvent("the end") { it["type"] == "connectionState" && it["state"].asMap()["state"] == "disconnected" }
        val reason = last["state"].asMap()["reason"].asMap()
        assertEquals("tokenRefused", reason["reason"])
        assertTrue(reason["detail"] is String)
        assertEquals(Item.Done, events.next())
        val ended = keys.next() as Item.Failure
        assertEquals("ROOM_ENDED", ended.code)
        assertEquals(reason, ended.details)
        assertEquals(Item.Done, keys.next())
        flutter.fails("NOT_CONNECTED", "updateToken", mapOf("room" to alice.id, "token" to token("alice")))
    }

    @Test
    fun `an unknown method is not implemented`() = runBlocking<Unit> {
        assertEquals(Outcome.NotImplemented, flutter.call("removeEverything", mapOf("room" to 1)))
        assertEquals(Outcome.NotImplemented, flutter.call("removeKeyChangeListener", mapOf("listener" to 1)))
    }

    @Test
    fun `calls on one room reach the server in the order they were made`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        // Sent back to back, as Dart sends them, without waiting for answers.
        val writes = flutter.onMain {
            (1..50).map { n -> flutter.send("set", mapOf("room" to alice.id, "key" to "counter", "valueJson" to "$n")) }
        }
        val versions = writes.map { (it.await() as Outcome.Success).value as Long }
        assertEquals((versions[0] until versions[0] + 50).toList(), versions, "each write's version, in the order sent")
        assertEquals("50", flutter.ok("get", mapOf("room" to alice.id, "key" to "counter")).asMap()["valueJson"])
    }
}
