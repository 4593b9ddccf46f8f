package io.roomstate

import java.lang.ref.WeakReference
import java.net.URI
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.test.assertEquals
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.async
import kotlinx.coroutines.delay
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test

/** What the engine holds after a room ends, JVM threads, tokens and reconnects. */
class LifetimeTest {
    private lateinit var server: TestServer

    @BeforeEach
    fun start() { server = TestServer() }

    @AfterEach
    fun stop() { server.close() }

    /** 100ms's pattern: a listener that keeps the store it is given. */
    class KeepsTheStore : DefaultRoomListener(), KeyChangeListener {
        @Volatile var store: SessionStore? = null
        val heard = Channel<String?>(Channel.UNLIMITED)
        override fun onSessionStoreAvailable(store: SessionStore) { this.store = store }
        override fun onKeyChanged(key: String, entry: StoreEntry?) { heard.trySend(entry?.valueJson) }
    }

    /** Joins with listeners that keep the store; returns the room and weak references to them. */
    private suspend fun joinKeepingTheStore(identity: String): Triple<Room, WeakReference<KeepsTheStore>, WeakReference<KeepsTheStore>> {
        val listener = KeepsTheStore()
        val room = RoomState.connect(server.url, token(identity), listener, fastOptions())
        val keyListener = KeepsTheStore().also { it.store = room.sessionStore() }
        room.sessionStore().addKeyChangeListener(listOf("pinned"), keyListener)
        assertNull(keyListener.heard.receive()) // the current value: the listener is in place
        return Triple(room, WeakReference(listener), WeakReference(keyListener))
    }

    private suspend fun awaitCollected(what: String, reference: WeakReference<*>) =
        awaitUntil("the $what to be collected after the room ended") {
            System.gc()
            reference.get() == null
        }

    @Test
    fun `the engine lets go of listeners that keep their store when the room ends`() = runBlocking<Unit> {
        val (alice, aliceListener, aliceKeyListener) = joinKeepingTheStore("alice")
        val (bob, bobListener, bobKeyListener) = joinKeepingTheStore("bob")
        // Left with disconnect(); the app still holds the Room.
        alice.disconnect()
        awaitCollected("room listener", aliceListener)
        awaitCollected("key listener", aliceKeyListener)
        // Ended by the server (another connection took the identity), never disconnected.
        val bobAgain = RoomState.connect(server.url, token("bob"), Recorder(), fastOptions())
        awaitCollected("room listener", bobListener)
        awaitCollected("key listener", bobKeyListener)
        assertEquals(ConnectionState.Disconnected(DisconnectReason.DuplicateIdentity), bob.connectionState())
        bobAgain.disconnect()
        listOf(alice, bob, bobAgain).forEach { it.close() }
    }

    @Test
    fun `the engine's threads join the JVM through JNI_OnLoad`() = runBlocking<Unit> {
        val logged = CopyOnWriteArrayList<String>()
        initLogging(LogLevel.DEBUG, object : Logger {
            override fun log(level: LogLevel, target: String, message: String) { logged += message }
        })
        try {
            val heard = Recorder()
            val room = RoomState.connect(server.url, token("alice"), heard, fastOptions())
            room.sessionStore().addKeyChangeListener(listOf("k"), heard)
            room.sessionStore().set("k", "1")
            room.sessionStore().set("k", "2")
            heard.awaitEvent("k=2")
            awaitUntil("both threads attached: $logged") {
                listOf("roomstate-engine", "roomstate-listeners").all { name ->
                    logged.any { "\"$name\" attached to the JVM given to JNI_OnLoad" in it }
                }
            }
            // Attached once: every listener call runs on the same Thread.
            assertEquals(listOf("roomstate-listeners"), heard.threads.distinct())
            room.disconnect()
            room.close()
        } finally {
            initLogging(LogLevel.INFO, null)
        }
    }

    /** Frames the server has sent to all its clients. */
    private fun framesSent(): Long {
        val metrics = URI(server.url.replace("ws://", "http://") + "/metrics").toURL().readText()
        return metrics.lines().first { it.startsWith("roomstate_messages_out_total ") }
            .substringAfter(' ').trim().toDouble().toLong()
    }

    @Test
    fun `cancelling a Flow's collector stops the server sending its key`() = runBlocking<Unit> {
        val alice = RoomState.connect(server.url, token("alice"), Recorder(), fastOptions())
        val bob = RoomState.connect(server.url, token("bob"), Recorder(), fastOptions())
        val values = Channel<String?>(Channel.UNLIMITED)
        val collecting = launch { alice.sessionStore().changes("k").collect { values.send(it?.valueJson) } }
        assertNull(values.receive())
        // While collected, a write of bob's is two frames: bob's reply and alice's change.
        var before = framesSent()
        bob.sessionStore().set("k", "0")
        assertEquals("0", values.receive())
        alice.sessionStore().get("other") // one reply, after any change frame queued before it
        assertEquals(3, framesSent() - before)

        collecting.cancel()
        collecting.join()
        // The collector's unobserve is queued by now, but may not have reached the server:
        // a request queued after it is answered after it, so its reply is not counted below.
        alice.sessionStore().get("other")
        before = framesSent()
        repeat(10) { bob.sessionStore().set("k", "${it + 1}") }
        alice.sessionStore().get("other")
        assertEquals(11, framesSent() - before, "bob's 10 replies and alice's 1, and no change of k to alice")
        listOf(alice, bob).forEach { it.disconnect(); it.close() }
    }

    @Test
    fun `a cancelled coroutine's write that was not sent is never sent`() = runBlocking<Unit> {
        val heard = Recorder()
        val options = fastOptions().copy(pingIntervalMs = 200u, pingTimeoutMs = 1000u)
        val alice = RoomState.connect(server.url, token("alice"), heard, options)
        // A frozen server: the engine gives the link up and cannot connect again, so
        // writes wait in its queue, unsent.
        server.freeze(true)
        heard.awaitEvent("state:Reconnecting")
        val cancelled = launch { alice.sessionStore().set("cancelled", "1") }
        val kept = async { alice.sessionStore().set("kept", "2") }
        delay(200)
        cancelled.cancel()
        cancelled.join()
        server.freeze(false)
        kept.await()
        val bob = RoomState.connect(server.url, token("bob"), Recorder(), fastOptions())
        assertEquals("2", bob.sessionStore().get("kept")?.valueJson)
        assertNull(bob.sessionStore().get("cancelled"), "the cancelled write was never sent")
        listOf(alice, bob).forEach { it.disconnect(); it.close() }
    }

    @Test
    fun `updateToken is the token the next connection uses`() = runBlocking<Unit> {
        val heard = Recorder()
        val alice = RoomState.connect(server.url, token("alice"), heard, fastOptions())
        alice.updateToken("not-a-jwt")
        alice.reconnectNow()
        heard.awaitEvent("state:Disconnected")
        val state = alice.connectionState()
        assertTrue(
            state is ConnectionState.Disconnected && state.reason is DisconnectReason.TokenRefused,
            "the server refused the new token: $state",
        )
        alice.close()

        val bobHeard = Recorder()
        val bob = RoomState.connect(server.url, token("bob"), bobHeard, fastOptions())
        val sid = bob.localParticipant().info()!!.sid
        bob.updateToken(token("bob"))
        bob.reconnectNow()
        awaitUntil("bob resumed: ${bobHeard.events}") { bobHeard.events.count { it == "state:Connected" } == 2 }
        bob.sessionStore().set("k", "\"after\"")
        assertEquals(sid, bob.localParticipant().info()!!.sid, "resumed, not joined anew")
        bob.disconnect()
        bob.close()
    }
}
