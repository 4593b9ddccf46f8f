package io.roomstate

import kotlin.test.assertEquals
import kotlin.test.assertTrue
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test

/** docs/protocol.md, Keepalive: a quiet room keeps its connection past every timeout. */
class KeepaliveTest {
    @Test
    fun `a quiet room outlasts every timeout without a reconnect`() = runBlocking<Unit> {
        // The server closes after 600 ms without a frame; the clients ping every 100 ms and
        // would reconnect after 400 ms without one.
        TestServer("idle_timeout_ms = 600").use { server ->
            val options = fastOptions().copy(pingIntervalMs = 100u, pingTimeoutMs = 400u)
            val aliceHeard = Recorder()
            val bobHeard = Recorder()
            RoomState.connect(server.url, token("alice"), aliceHeard, options).use { alice ->
                RoomState.connect(server.url, token("bob"), bobHeard, options).use { bob ->
                    val values = Recorder()
                    alice.sessionStore().addKeyChangeListener(listOf("pinned"), values)
                    values.awaitEvent("pinned=null")
                    val sid = alice.localParticipant().info()!!.sid

                    delay(3_000) // nothing changes: seven ping timeouts, five idle timeouts

                    for (heard in listOf(aliceHeard, bobHeard)) {
                        val states = heard.events.filter { it.startsWith("state:") }
                        assertEquals(listOf("state:Connected"), states, "no reconnect: ${heard.events}")
                    }
                    assertTrue(alice.connectionState() is ConnectionState.Connected)
                    bob.sessionStore().set("pinned", "\"still here\"")
                    values.awaitEvent("pinned=\"still here\"")
                    assertEquals(listOf("pinned=null", "pinned=\"still here\""), values.keyEvents("pinned"))
                    assertEquals(sid, alice.localParticipant().info()!!.sid, "resumed nothing, rejoined nothing")
                    bob.disconnect()
                }
                alice.disconnect()
            }
        }
    }
}
