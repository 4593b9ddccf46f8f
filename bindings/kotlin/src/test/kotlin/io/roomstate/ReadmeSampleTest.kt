package io.roomstate

import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test

/** The README's Kotlin block (between the markers), run against a real server. */
suspend fun readmeSample(url: String, token: String) = coroutineScope {
    // README:begin
    RoomState.connect(url, token, object : DefaultRoomListener() {
        override fun onSessionStoreAvailable(store: SessionStore) { /* keep it, or start observing here */ }
    }, ConnectOptions()).use { room ->
        val store = room.sessionStore()
        val handle = store.addKeyChangeListener(listOf("pinned"), keyChangeListener { _, entry ->
            println("pinned: ${entry?.decode<Pinned>()}")
        })
        store.setValue("pinned", Pinned("Welcome!", "alice"))       // kotlinx.serialization

        // A Flow: the current value, then every change. Collect it in a coroutine of its
        // own (on Android: viewModelScope or lifecycleScope) and cancel that when done.
        val spotlight = launch { store.values<String>("spotlight").collect { println("spotlight: $it") } }
        store.setValue("spotlight", "alice")
        spotlight.cancel()

        store.removeKeyChangeListener(handle)
        room.disconnect()
    }
    // README:end
}

class ReadmeSampleTest {
    @Test
    fun `the README's Kotlin sample runs and its writes reach another participant`() = runBlocking<Unit> {
        TestServer().use { server ->
            val bobHeard = Recorder()
            RoomState.connect(server.url, token("bob"), bobHeard, fastOptions()).use { bob ->
                val values = Recorder()
                bob.sessionStore().addKeyChangeListener(listOf("pinned", "spotlight"), values)
                values.awaitEvent("spotlight=null")
                readmeSample(server.url, token("alice"))
                values.awaitEvent("""pinned={"by":"alice","text":"Welcome!"}""")  // the engine gives keys sorted
                values.awaitEvent("spotlight=\"alice\"")
                bobHeard.awaitEvent("left:alice")
                bob.disconnect()
            }
        }
    }
}
