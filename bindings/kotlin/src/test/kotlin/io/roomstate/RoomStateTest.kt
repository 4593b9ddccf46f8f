package io.roomstate

import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.CountDownLatch
import java.util.concurrent.Executors
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.serialization.Serializable
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

@Serializable
data class Pinned(val text: String, val by: String)

class RoomStateTest {
    private lateinit var server: TestServer
    private val rooms = mutableListOf<Room>()

    @BeforeEach
    fun start() { server = TestServer() }

    @AfterEach
    fun stop() {
        runBlocking { rooms.forEach { it.disconnect() } }
        rooms.forEach { it.close() }
        server.close()
    }

    private suspend fun join(identity: String, listener: RoomListener = Recorder(), canUpdateMetadata: Boolean = true): Room =
        RoomState.connect(server.url, token(identity, canUpdateMetadata = canUpdateMetadata), listener, fastOptions()).also { rooms += it }

    @Test
    fun `onSessionStoreAvailable fires with a usable store`() = runBlocking<Unit> {
        val heard = Recorder()
        val room = join("alice", heard)
        heard.awaitEvent("store-available")
        room.sessionStore().set("k", "1")
        assertEquals("1", room.sessionStore().get("k")?.valueJson)
        assertTrue(room.sessionId()!!.startsWith("SE_"))
    }

    @Test
    fun `every listener gets the current value first, then each change once`() = runBlocking<Unit> {
        val alice = join("alice")
        val bob = join("bob")
        alice.sessionStore().set("pinned", """{"text":"hi"}""")
        val first = Recorder()
        val second = Recorder()
        bob.sessionStore().addKeyChangeListener(listOf("pinned"), first)
        first.awaitEvent("""pinned={"text":"hi"}""")
        // A second listener on a key already observed still gets the current value.
        bob.sessionStore().addKeyChangeListener(listOf("pinned"), second)
        second.awaitEvent("""pinned={"text":"hi"}""")
        alice.sessionStore().set("pinned", """{"text":"bye"}""")
        for (listener in listOf(first, second)) {
            listener.awaitEvent("""pinned={"text":"bye"}""")
            assertEquals(listOf("""pinned={"text":"hi"}""", """pinned={"text":"bye"}"""), listener.keyEvents("pinned"))
        }
        assertEquals(setOf("roomstate-listeners"), first.threads.toSet(), "one named JVM thread calls every listener")
    }

    @Test
    fun `removeKeyChangeListener stops callbacks`() = runBlocking<Unit> {
        val alice = join("alice")
        val removed = Recorder()
        val kept = Recorder()
        val store = alice.sessionStore()
        val handle = store.addKeyChangeListener(listOf("k"), removed)
        store.addKeyChangeListener(listOf("k"), kept)
        removed.awaitEvent("k=null")
        store.removeKeyChangeListener(handle)
        for (n in 1..20) store.set("k", "$n")
        kept.awaitEvent("k=20")
        assertEquals(listOf("k=null"), removed.keyEvents("k"))
    }

    @Test
    fun `set, get, delete and typed values`() = runBlocking<Unit> {
        val alice = join("alice")
        val bob = join("bob")
        val version = alice.sessionStore().setValue("pinned", Pinned("Welcome", "alice"))
        val entry = bob.sessionStore().get("pinned")!!
        assertEquals(version, entry.version)
        assertEquals("alice", entry.updatedBy)
        assertEquals(Pinned("Welcome", "alice"), entry.decode<Pinned>())
        assertEquals(Pinned("Welcome", "alice"), bob.sessionStore().getValue<Pinned>("pinned"))
        val read = bob.sessionStore().read("pinned")
        assertEquals(version, read.entry?.version)
        assertFalse(read.mayBeStale, "a connected engine reading from one node")
        bob.sessionStore().delete("pinned")
        assertNull(alice.sessionStore().get("pinned"))
    }

    @Test
    fun `a Flow of a key's values`() = runBlocking<Unit> {
        val alice = join("alice")
        val bob = join("bob")
        val values = Channel<Pinned?>(Channel.UNLIMITED)
        val collecting = launch { bob.sessionStore().values<Pinned>("pinned").collect { values.send(it) } }
        // The current value comes first: after it, the listener is in place.
        assertNull(values.receive())
        alice.sessionStore().setValue("pinned", Pinned("one", "alice"))
        alice.sessionStore().setValue("pinned", Pinned("two", "alice"))
        assertEquals(Pinned("one", "alice"), values.receive())
        assertEquals(Pinned("two", "alice"), values.receive())
        alice.sessionStore().delete("pinned")
        assertNull(values.receive())
        collecting.cancel()
    }

    @Test
    fun `a Flow completes when the room is left and fails with the reason when it ends otherwise`() = runBlocking<Unit> {
        val alice = join("alice")
        val bob = join("bob")
        val seen = CopyOnWriteArrayList<String?>()
        // Left: the Flow completes normally, after every change before the end.
        val bobSees = Channel<String?>(Channel.UNLIMITED)
        val leaving = async {
            runCatching { bob.sessionStore().changes("k").collect { bobSees.send(it?.valueJson) } }
        }
        assertNull(bobSees.receive()) // the listener is in place
        alice.sessionStore().set("k", "1")
        assertEquals("1", bobSees.receive())
        bob.disconnect()
        val left = withTimeout(15_000) { leaving.await() }
        assertTrue(left.isSuccess, "completed normally: $left")

        // Another connection takes alice's identity: her Flow fails with the reason.
        val failing = async {
            runCatching { alice.sessionStore().changes("k").collect { seen += it?.valueJson } }.exceptionOrNull()
        }
        awaitUntil("alice heard k") { seen.isNotEmpty() }
        join("alice")
        val error = withTimeout(15_000) { failing.await() }
        assertTrue(error is RoomEndedException, "$error")
        assertEquals(DisconnectReason.DuplicateIdentity, (error as RoomEndedException).reason)
    }

    @Test
    fun `a Flow cancelled before its listener is in place ends cancelled, even after the room has ended`() = runBlocking<Unit> {
        val alice = join("alice")
        // The Flow's producer starts on `flowThread`, held until the collector was cancelled
        // and the room left: the order the README's sample met by chance in CI.
        val flowThread = Executors.newSingleThreadExecutor()
        try {
            val release = CountDownLatch(1)
            flowThread.execute { release.await() }
            val collecting = async(flowThread.asCoroutineDispatcher() + SupervisorJob(), CoroutineStart.UNDISPATCHED) {
                alice.sessionStore().changes("k").collect {}
            }
            collecting.cancel()
            alice.disconnect()
            release.countDown()
            val outcome = runCatching { collecting.await() }.exceptionOrNull()
            assertTrue(outcome is CancellationException, "ended with $outcome")
            // Collected for real after the end, the Flow says why it has nothing to give.
            assertThrows<RoomException.NotConnected> { runBlocking { alice.sessionStore().changes("k").collect {} } }
        } finally {
            flowThread.shutdown()
        }
    }

    @Test
    fun `compareAndSet under contention from coroutines loses nothing`() = runBlocking<Unit> {
        val clients = (0 until 4).map { join("p$it") }
        val increments = 15
        clients.map { room ->
            async(Dispatchers.Default) {
                val store = room.sessionStore()
                repeat(increments) {
                    while (true) {
                        val current = store.get("counter")
                        val next = (current?.valueJson?.toInt() ?: 0) + 1
                        try {
                            store.compareAndSet("counter", current?.version ?: 0u, "$next")
                            break
                        } catch (conflict: RoomException.Conflict) {
                            assertTrue(conflict.current!!.version > (current?.version ?: 0u))
                        }
                    }
                }
            }
        }.awaitAll()
        assertEquals("${clients.size * increments}", clients[0].sessionStore().get("counter")?.valueJson)
    }

    @Test
    fun `attributes and metadata changes reach a second client`() = runBlocking<Unit> {
        val alice = join("alice")
        val bobHeard = Recorder()
        join("bob", bobHeard)
        alice.localParticipant().setAttributes(mapOf("hand" to "up", "brb" to "yes"))
        bobHeard.awaitEvent("attributes:alice:[brb, hand]")
        val updated = alice.localParticipant().setAttributes(mapOf("hand" to ""))
        assertEquals(mapOf("brb" to "yes"), updated.attributes)
        bobHeard.awaitEvent("attributes:alice:[hand]")
        alice.localParticipant().setMetadata("presenting")
        bobHeard.awaitEvent("metadata:alice:->presenting")
        val carol = join("carol")
        val aliceAtCarol = carol.remoteParticipants().single { it.identity == "alice" }
        assertEquals(mapOf("brb" to "yes"), aliceAtCarol.attributes)
        assertEquals("presenting", aliceAtCarol.metadata)
    }

    @Test
    fun `every error is a typed exception`() = runBlocking<Unit> {
        val alice = join("alice")
        val store = alice.sessionStore()

        val limit = assertThrows<RoomException.LimitExceeded> { runBlocking { store.set("big", "\"${"x".repeat(2000)}\"") } }
        assertEquals(Limit.VALUE_BYTES, limit.limit)
        assertEquals(1024uL, limit.max)
        assertEquals(2002uL, limit.actual)

        store.compareAndSet("lock", 0u, "\"alice\"")
        val conflict = assertThrows<RoomException.Conflict> { runBlocking { store.compareAndSet("lock", 0u, "\"bob\"") } }
        assertEquals("\"alice\"", conflict.current?.valueJson)

        assertThrows<RoomException.InvalidValue> { runBlocking { store.set("k", "{not json") } }

        val viewer = join("viewer", canUpdateMetadata = false)
        assertThrows<RoomException.NotAllowed> { runBlocking { viewer.localParticipant().setMetadata("x") } }

        val badToken = assertThrows<RoomException.InvalidToken> {
            runBlocking { RoomState.connect(server.url, token("mallory", secret = "wrong"), Recorder(), fastOptions()) }
        }
        assertEquals("invalid_token", badToken.code)

        assertThrows<RoomException.Connect> {
            runBlocking { RoomState.connect("ws://127.0.0.1:1", token("nobody"), Recorder(), fastOptions()) }
        }
        // With fallbacks (other nodes of a cluster), a dead first address is skipped.
        val moved = RoomState.connect(
            "ws://127.0.0.1:1", token("mover"), Recorder(),
            fastOptions().copy(fallbackUrls = listOf(server.url)),
        ).also { rooms += it }
        assertEquals(ConnectionState.Connected, moved.connectionState())

        val impatient = RoomState.connect(server.url, token("impatient"), Recorder(), fastOptions(requestTimeoutMs = 300u)).also { rooms += it }
        server.freeze(true)
        try {
            val timeout = assertThrows<RoomException.Timeout> { runBlocking { impatient.sessionStore().set("k", "1") } }
            assertTrue(timeout.sent)
        } finally {
            server.freeze(false)
        }

        alice.disconnect()
        assertThrows<RoomException.NotConnected> { runBlocking { store.set("k", "1") } }
    }

    @Test
    fun `a listener may call back into the engine`() = runBlocking<Unit> {
        val alice = join("alice")
        val store = alice.sessionStore()
        val seen = Recorder()
        store.addKeyChangeListener(listOf("countdown"), keyChangeListener { key, entry ->
            val n = entry?.valueJson?.toInt() ?: return@keyChangeListener
            if (n > 0) runBlocking { store.set(key, "${n - 1}") }
        })
        store.addKeyChangeListener(listOf("countdown"), seen)
        store.set("countdown", "5")
        seen.awaitEvent("countdown=0")
        assertEquals(listOf("null", "5", "4", "3", "2", "1", "0").map { "countdown=$it" }, seen.keyEvents("countdown"))
    }

    @Test
    fun `a listener that throws is logged and the others go on`() = runBlocking<Unit> {
        val logged = CopyOnWriteArrayList<String>()
        initLogging(LogLevel.WARN, object : Logger {
            override fun log(level: LogLevel, target: String, message: String) { logged += "$level $message" }
        })
        try {
            val alice = join("alice")
            val store = alice.sessionStore()
            store.addKeyChangeListener(listOf("k"), keyChangeListener { _, entry ->
                if (entry != null) throw IllegalStateException("app bug")
            })
            val after = Recorder()
            store.addKeyChangeListener(listOf("k"), after)
            store.set("k", "1")
            store.set("k", "2")
            after.awaitEvent("k=2")
            awaitUntil("the exception logged: $logged") { logged.any { "app bug" in it } }
            assertTrue(logged.any { it.startsWith("ERROR") && "onKeyChanged" in it })
        } finally {
            initLogging(LogLevel.INFO, null)
        }
    }

    @Test
    fun `closing everything leaves no engine threads`() = runBlocking<Unit> {
        awaitUntil("no engine threads from earlier tests: ${engineThreads()}") { engineThreads().isEmpty() }
        val alice = join("alice")
        val bob = join("bob")
        alice.sessionStore().set("k", "1")
        assertTrue(engineThreads().isNotEmpty())
        for (room in listOf(alice, bob)) {
            room.disconnect()
            room.close()
        }
        rooms.clear()
        awaitUntil("the engine's threads to end: ${engineThreads()}") { engineThreads().isEmpty() }
    }
}
