package io.roomstate.flutter.core

import io.roomstate.awaitUntil
import io.roomstate.engineThreads
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertNotEquals
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Test

/** The 100ms Flutter bridge's defects (../shared/ANCHORS.md), each one avoided. */
class DefectsTest : ChannelTest() {
    private val roomMethods = listOf(
        "updateToken", "reconnectNow", "connectionState", "remoteParticipants", "get", "set", "delete",
        "compareAndSet", "addKeyChangeListener", "setAttributes", "setMetadata", "setName",
    )

    private fun arguments(room: Long) = mapOf(
        "room" to room, "token" to "t", "key" to "k", "valueJson" to "1", "expectedVersion" to 0,
        "keys" to listOf("k"), "attributes" to mapOf("a" to "b"), "metadata" to "m", "name" to "n",
    )

    @Test
    fun `(a) every call completes, before connect, on a room that is gone, and when the plugin is detached`() = runBlocking<Unit> {
        // Before any connect (100ms: calls before the store exists never complete).
        val before = roomMethods.map { flutter.send(it, arguments(1)) }
        for (result in before) assertEquals("NOT_CONNECTED", (result.await() as Outcome.Failure).code, result.method)
        assertNull(flutter.ok("disconnect", arguments(1)))

        // On a room that was left.
        val alice = flutter.join(server, "alice")
        flutter.ok("disconnect", mapOf("room" to alice.id))
        val after = roomMethods.map { flutter.send(it, arguments(alice.id)) }
        for (result in after) assertEquals("NOT_CONNECTED", (result.await() as Outcome.Failure).code, result.method)

        // In flight when the engine detaches: answered, not dropped.
        val bob = flutter.join(server, "bob", options = fastOptions(requestTimeoutMs = 60_000))
        server.freeze(true)
        try {
            val pending = flutter.send("set", mapOf("room" to bob.id, "key" to "k", "valueJson" to "1"))
            delay(300)
            assertFalse(pending.isAnswered, "waiting for the frozen server")
            flutter.detach()
            assertEquals("NOT_CONNECTED", (pending.await() as Outcome.Failure).code)
            // And after it.
            flutter.fails("NOT_CONNECTED", "get", mapOf("room" to bob.id, "key" to "k"))
            flutter.fails("NOT_CONNECTED", "initialize")
        } finally {
            server.freeze(false)
        }
        // Exactly once: nothing answers a second time later (the harness counts every answer).
        delay(300)
        flutter.flush()
        assertTrue(flutter.results.all { it.answers.get() == 1 }, flutter.results.map { "${it.method}:${it.answers}" }.toString())
    }

    @Test
    fun `(b) no event before listen is lost - a key's current value and the room's snapshot come first`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        flutter.ok("set", mapOf("room" to alice.id, "key" to "pinned", "valueJson" to """{"text":"hi"}"""))
        delay(300) // set long before
        val (listener, _) = flutter.addListener(alice.id, "pinned", listen = false)
        delay(300) // the 100ms bridge dropped an initial value that came before its listener
        val keys = flutter.listen("$KEYS_CHANNEL_PREFIX$listener")
        assertEquals(mapOf("key" to "pinned", "entry" to (flutter.ok("get", mapOf("room" to alice.id, "key" to "pinned")))), keys.nextEvent())

        // The room channel: changes made before Dart listens are in the snapshot.
        val bob = flutter.join(server, "bob", listen = false)
        val carol = peer("carol")
        flutter.ok("setAttributes", mapOf("room" to alice.id, "attributes" to mapOf("hand" to "up")))
        carol.room.localParticipant().setMetadata("away")
        withTimeout(15_000) {
            // Until bob's engine has both changes.
            while (true) {
                val people = flutter.remotes(bob.id).associateBy { it["identity"] }
                if (people["carol"]?.get("metadata") == "away" && people["alice"]?.get("attributes") == mapOf("hand" to "up")) break
                delay(20)
            }
        }
        val events = flutter.listen(bob.channel)
        val snapshot = events.nextEvent()
        assertEquals("snapshot", snapshot["type"])
        val people = snapshot["participants"].asList().associateBy { it["identity"] }
        assertEquals(setOf("alice", "carol"), people.keys)
        assertEquals(mapOf("hand" to "up"), people.getValue("alice")["attributes"])
        assertEquals("away", people.getValue("carol")["metadata"])
    }

    private suspend fun FlutterHarness.remotes(room: Long) = ok("remoteParticipants", mapOf("room" to room)).asList()

    @Test
    fun `(c) ids come from counters - two listeners added in the same millisecond differ`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val bob = flutter.join(server, "bob")
        assertNotEquals(alice.id, bob.id)
        val twins = flutter.onMain {
            listOf(
                flutter.send("addKeyChangeListener", mapOf("room" to alice.id, "keys" to listOf("k"))),
                flutter.send("addKeyChangeListener", mapOf("room" to alice.id, "keys" to listOf("k"))),
            )
        }
        val (first, second) = twins.map { (it.await() as Outcome.Success).value.asMap() }
        assertEquals((first["listener"] as Long) + 1, second["listener"])
        assertNotEquals(first["channel"], second["channel"])
        // Both work, separately.
        val one = flutter.listen(first["channel"] as String)
        val two = flutter.listen(second["channel"] as String)
        assertNull(one.nextEvent()["entry"])
        assertNull(two.nextEvent()["entry"])
    }

    @Test
    fun `(d) the second listener of a key gets its initial value, and each listener only its own events`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val bob = flutter.join(server, "bob")
        flutter.ok("set", mapOf("room" to bob.id, "key" to "hand", "valueJson" to "\"up\""))
        val (_, first) = flutter.addListener(alice.id, "hand")
        assertEquals("\"up\"", first!!.nextEvent()["entry"].asMap()["valueJson"])
        // The key is observed already: 100ms's Android SDK sent the second listener nothing.
        val (_, second) = flutter.addListener(alice.id, "hand")
        assertEquals("\"up\"", second!!.nextEvent()["entry"].asMap()["valueJson"])

        flutter.ok("set", mapOf("room" to bob.id, "key" to "hand", "valueJson" to "\"down\""))
        for (stream in listOf(first, second)) assertEquals("\"down\"", stream.nextEvent()["entry"].asMap()["valueJson"])
        first.assertQuiet()
        second.assertQuiet()
        // Removing one leaves the other: no cross-talk between subscriptions of one key.
        first.cancel()
        flutter.ok("delete", mapOf("room" to bob.id, "key" to "hand"))
        assertNull(second.nextEvent()["entry"])
        second.assertQuiet()
    }

    @Test
    fun `(e) dispose releases every room and listener`() = runBlocking<Unit> {
        val bob = peer("bob")
        val alice = flutter.join(server, "alice")
        val dave = flutter.join(server, "dave", listen = false)
        val (_, keys) = flutter.addListener(alice.id, "k")
        keys!!.nextEvent()
        flutter.addListener(dave.id, "k", listen = false)
        flutter.addListener(alice.id, "other")
        assertTrue(flutter.channels.handlers.size == 5)

        flutter.detach().join()
        bob.awaitHeard("left:alice")
        bob.awaitHeard("left:dave")
        flutter.flush()
        assertEquals(emptySet(), flutter.channels.handlers.keys, "every channel closed")
        assertEquals(flutter.channels.opened.toSet(), flutter.channels.closed.toSet())
        flutter.fails("NOT_CONNECTED", "get", mapOf("room" to alice.id, "key" to "k"))

        bob.leave()
        awaitUntil("no engine thread left: ${engineThreads()}") { engineThreads().isEmpty() }
    }

    @Test
    fun `(e) initialize after a hot restart releases what the previous isolate left`() = runBlocking<Unit> {
        val bob = peer("bob")
        val alice = flutter.join(server, "alice")
        val (_, keys) = flutter.addListener(alice.id, "k")
        keys!!.nextEvent()
        flutter.addListener(alice.id, "other", listen = false)

        assertNull(flutter.ok("initialize"))
        // Answered once alice has left.
        bob.awaitHeard("left:alice")
        flutter.flush()
        assertEquals(emptySet(), flutter.channels.handlers.keys, "every channel closed")
        flutter.fails("NOT_CONNECTED", "get", mapOf("room" to alice.id, "key" to "k"))

        // The new isolate joins again: ids go on from the counter, never reused.
        val again = flutter.join(server, "alice")
        assertTrue(again.id > alice.id)
        bob.awaitHeard("joined:alice")
        flutter.ok("set", mapOf("room" to again.id, "key" to "k", "valueJson" to "1"))
        assertEquals("1", flutter.ok("get", mapOf("room" to again.id, "key" to "k")).asMap()["valueJson"])
        flutter.ok("disconnect", mapOf("room" to again.id))
        bob.leave()
        awaitUntil("no engine thread left: ${engineThreads()}") { engineThreads().isEmpty() }
    }

    @Test
    fun `(f) every result and event is delivered on the main thread`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val bob = flutter.join(server, "bob")
        val (_, keys) = flutter.addListener(alice.id, "k")
        keys!!.nextEvent()
        flutter.ok("set", mapOf("room" to bob.id, "key" to "k", "valueJson" to "1"))
        keys.nextEvent()
        flutter.ok("setAttributes", mapOf("room" to bob.id, "attributes" to mapOf("hand" to "up")))
        alice.events!!.awaitEvent("attributes") { it["type"] == "attributesChanged" }
        flutter.fails("CONFLICT", "compareAndSet", mapOf("room" to alice.id, "key" to "k", "expectedVersion" to 0, "valueJson" to "2"))
        flutter.ok("disconnect", mapOf("room" to bob.id))
        alice.events.awaitEvent("bob left") { it["type"] == "participantLeft" }
        bob.events!!.awaitDone()

        flutter.flush()
        val threads = flutter.deliveryThreads.toList()
        assertTrue(threads.size >= 15, "$threads")
        assertEquals(setOf("flutter-main"), threads.toSet())
        assertEquals(emptyList(), flutter.violations.toList())
    }
}
