package io.roomstate.flutter.core

import kotlin.test.assertEquals
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Test

/** A server that forgets a participant the moment its connection drops: every reconnect joins anew. */
class FreshJoinTest : ChannelTest() {
    override val serverConfig = "reconnect_grace_ms = 0"

    @Test
    fun `sessionStoreAvailable after a fresh join`() = runBlocking<Unit> {
        val alice = flutter.join(server, "alice")
        val events = alice.events!!
        assertEquals("snapshot", events.nextEvent()["type"])
        // A resume races the server noticing the dropped connection: try until a join is fresh.
        fun storeAvailable() = events.received.any { (it as? Item.Event)?.value.let { e -> (e as? Map<*, *>)?.get("type") } == "sessionStoreAvailable" }
        withTimeout(30_000) {
            while (!storeAvailable()) {
                flutter.ok("reconnectNow", mapOf("room" to alice.id))
                delay(300)
            }
        }
        withTimeout(15_000) {
            while (flutter.ok("connectionState", mapOf("room" to alice.id)) != mapOf("state" to "connected")) delay(20)
        }
        flutter.ok("set", mapOf("room" to alice.id, "key" to "k", "valueJson" to "1"))
    }
}
