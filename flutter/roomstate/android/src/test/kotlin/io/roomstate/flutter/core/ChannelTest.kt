package io.roomstate.flutter.core

import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.BeforeEach

/** A real server, the handler in a [FlutterHarness], and other participants; checked after each test. */
abstract class ChannelTest {
    lateinit var server: TestServer
    lateinit var flutter: FlutterHarness
    private val peers = mutableListOf<Peer>()

    /** More lines for the server's configuration file. */
    open val serverConfig: String = ""

    open fun harness() = FlutterHarness()

    @BeforeEach
    fun start() {
        server = TestServer(serverConfig)
        flutter = harness()
    }

    @AfterEach
    fun stop() {
        try {
            flutter.close()
        } finally {
            runBlocking { peers.forEach { runCatching { it.leave() } } }
            server.close()
        }
    }

    suspend fun peer(identity: String): Peer = Peer.join(server, identity).also { peers += it }

    @Suppress("UNCHECKED_CAST")
    fun Any?.asMap(): Map<String, Any?> = this as Map<String, Any?>

    @Suppress("UNCHECKED_CAST")
    fun Any?.asList(): List<Map<String, Any?>> = this as List<Map<String, Any?>>

    fun Any?.identities(): List<Any?> = asList().map { it["identity"] }
}
