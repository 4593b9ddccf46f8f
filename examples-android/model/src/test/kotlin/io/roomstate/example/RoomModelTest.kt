package io.roomstate.example

import java.util.concurrent.CopyOnWriteArrayList
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.delay
import kotlinx.coroutines.joinAll
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test

/**
 * The example app's model against a real `roomstate serve`, with two apps (alice, bob) in
 * one room, each with its own RoomModel.
 */
class RoomModelTest {
    @Test
    fun `a pinned message set by one is seen by both, from the first frame`() = runBlocking<Unit> {
        TestServer().use { server ->
            App("alice").use { alice ->
                alice.join(server)
                alice.model.pin("Quiz at 3").join()
                alice.awaitState("her pin") { it.pinned == Pinned("Quiz at 3", by = "alice") }

                App("bob").use { bob ->
                    // Bob joins after the pin: he sees it from the first value his Flow gets.
                    bob.join(server)
                    bob.awaitState("alice's pin") { it.pinned == Pinned("Quiz at 3", by = "alice") }

                    bob.model.pin("Room 12 instead").join()
                    for (app in listOf(alice, bob)) {
                        app.awaitState("bob's pin") { it.pinned == Pinned("Room 12 instead", by = "bob") }
                    }

                    alice.model.unpin().join()
                    for (app in listOf(alice, bob)) {
                        app.awaitState("nothing pinned") { it.pinned == null }
                        assertNull(app.state.notice, "${app.identity}: ${app.state.notice}")
                    }
                }
            }
        }
    }

    @Test
    fun `when both claim the spotlight at once, exactly one wins and the other is told who`() = runBlocking<Unit> {
        TestServer().use { server ->
            App("alice").use { alice ->
                App("bob").use { bob ->
                    alice.join(server)
                    bob.join(server)
                    val apps = listOf(alice, bob)
                    for (app in apps) assertNull(app.state.spotlightHolder)

                    // Both claim while the server cannot answer: each claims at the version it
                    // saw (0, absent), neither can have seen the other's claim first.
                    server.freeze(true)
                    val claims = apps.map { it.model.claimSpotlight() }
                    delay(300) // lets both claims reach the wire; the server answers after the thaw
                    server.freeze(false)
                    claims.joinAll()

                    val winner = alice.awaitState("a holder") { it.spotlightHolder != null }.spotlightHolder!!
                    val (won, lost) = if (winner == "alice") alice to bob else bob to alice
                    val seen = lost.awaitState("the winner and a notice") {
                        it.spotlightHolder == winner && it.notice != null
                    }
                    assertEquals("$winner took the spotlight first", seen.notice)
                    val wonState = won.awaitState("holding it") { it.hasSpotlight }
                    assertNull(wonState.notice, "the winner is told nothing")
                    assertFalse(seen.hasSpotlight)
                    assertTrue(wonState.spotlightVersion > 0u)
                    lost.awaitState("the winner's version") { it.spotlightVersion == wonState.spotlightVersion }

                    // Releasing: only the holder can; then everyone sees nobody.
                    lost.model.dismissNotice()
                    lost.model.releaseSpotlight().join()
                    assertEquals("You don't have the spotlight", lost.state.notice)
                    assertEquals(winner, lost.state.spotlightHolder)
                    won.model.releaseSpotlight().join()
                    for (app in apps) {
                        app.awaitState("nobody in the spotlight") { it.spotlightHolder == null && it.spotlightVersion == 0uL }
                    }
                }
            }
        }
    }

    @Test
    fun `a raised hand is seen in the other's participant list, then lowered`() = runBlocking<Unit> {
        TestServer().use { server ->
            App("alice").use { alice ->
                App("bob").use { bob ->
                    alice.join(server)
                    bob.join(server)
                    for (app in listOf(alice, bob)) {
                        val state = app.awaitState("both listed") { it.participants.size == 2 }
                        assertEquals(listOf("alice", "bob"), state.participants.map { it.identity }, "sorted")
                        assertEquals(listOf(app.identity), state.participants.filter { it.isLocal }.map { it.identity })
                        assertTrue(state.participants.none { it.handRaised })
                    }
                    assertEquals("Alice", bob.state.participant("alice")?.name)

                    bob.model.raiseHand(true).join()
                    alice.awaitState("bob's hand up") { it.participant("bob")?.handRaised == true }
                    bob.awaitState("his own hand up") { it.handRaised }

                    bob.model.raiseHand(false).join()
                    alice.awaitState("bob's hand down") { it.participant("bob")?.handRaised == false }
                    bob.awaitState("his own hand down") { !it.handRaised }
                    assertNull(alice.state.notice)
                    assertNull(bob.state.notice)

                    bob.model.disconnect().join()
                    alice.awaitState("bob gone") { it.participants.map { p -> p.identity } == listOf("alice") }
                }
            }
        }
    }

    @Test
    fun `through a reconnect the room stays on screen and only the banner changes`() = runBlocking<Unit> {
        // Pings every 200 ms; a link silent for 1 s is given up and resumed.
        val options = testOptions().copy(pingIntervalMs = 200u, pingTimeoutMs = 1_000u)
        TestServer().use { server ->
            App("alice", options).use { alice ->
                App("bob", options).use { bob ->
                    val apps = listOf(alice, bob)
                    alice.join(server)
                    bob.join(server)
                    alice.model.pin("Quiz at 3").join()
                    bob.model.claimSpotlight().join()
                    alice.model.raiseHand(true).join()
                    val before = apps.map { app ->
                        app.awaitState("the room set up") {
                            it.pinned != null && it.spotlightHolder == "bob" &&
                                it.participant("alice")?.handRaised == true && it.participants.size == 2
                        }
                    }

                    // Every state each app shows from now until it is back.
                    val shown = apps.map { CopyOnWriteArrayList<RoomUiState>() }
                    val recorders = apps.zip(shown).map { (app, states) ->
                        launch(Dispatchers.Unconfined, start = CoroutineStart.UNDISPATCHED) {
                            app.model.state.collect { states += it }
                        }
                    }
                    server.freeze(true)
                    for (app in apps) app.awaitState("reconnecting") { it.connection == Connection.Reconnecting }
                    server.freeze(false)
                    for (app in apps) app.awaitState("connected again") { it.connection == Connection.Connected }
                    recorders.forEach { it.cancel() }

                    for ((index, app) in apps.withIndex()) {
                        val states = shown[index]
                        for (state in states) {
                            assertEquals(before[index].pinned, state.pinned, "${app.identity}: pinned in $state")
                            assertEquals("bob", state.spotlightHolder, "${app.identity}: spotlight in $state")
                            assertEquals(before[index].participants, state.participants, "${app.identity}: people in $state")
                            assertEquals(app.identity, state.localIdentity)
                        }
                        val banners = states.map { it.connection }.distinct()
                        assertEquals(
                            listOf(Connection.Connected, Connection.Reconnecting, Connection.Connected),
                            states.map { it.connection }.fold(listOf<Connection>()) { acc, c -> if (acc.lastOrNull() == c) acc else acc + c },
                            "${app.identity}: banners $banners",
                        )
                        assertTrue(states.any { it.banner == "Reconnecting…" })
                        assertNull(states.last().banner)
                    }

                    // And it goes on working, also after a network change drops the socket on purpose.
                    alice.model.networkChanged()
                    bob.model.pin("Back").join()
                    alice.awaitState("bob's new pin") { it.pinned == Pinned("Back", by = "bob") }
                    alice.awaitState("connected") { it.connection == Connection.Connected }
                    for (app in apps) assertNull(app.state.notice, "${app.identity}: ${app.state.notice}")
                }
            }
        }
    }

    @Test
    fun `a bad token, an unreachable server and a call outside a room become notices, not exceptions`() = runBlocking<Unit> {
        TestServer().use { server ->
            App("mallory").use { app ->
                app.connect(server, token("mallory", secret = "not the secret"))
                val refused = app.state
                val connection = refused.connection
                assertTrue(connection is Connection.Disconnected, "$refused")
                assertTrue(connection.reason.startsWith("the token was refused"), connection.reason)
                assertEquals("Disconnected: ${connection.reason}", refused.banner)
                assertEquals("Could not join: ${connection.reason}", refused.notice)
                assertFalse(refused.inRoom)

                app.model.pin("hello").join()
                assertEquals("Pinning failed: not in a room", app.state.notice)
                app.model.networkChanged() // no room: nothing to do

                app.model.connect("ws://127.0.0.1:1", token("mallory")).join()
                val unreachable = app.state.connection
                assertTrue(unreachable is Connection.Disconnected, "$unreachable")
                assertTrue(unreachable.reason.startsWith("could not reach the server"), unreachable.reason)
            }
        }
    }

    @Test
    fun `removed from the room, the app says why`() = runBlocking<Unit> {
        TestServer().use { server ->
            App("alice").use { alice ->
                alice.join(server)
                alice.model.pin("Quiz at 3").join()
                alice.awaitState("her pin") { it.pinned != null }
                server.remove("alice")
                val removed = alice.awaitState("disconnected") { it.connection is Connection.Disconnected }
                assertEquals("Disconnected: you were removed from the room", removed.banner)
                assertFalse(removed.inRoom)
                assertNull(removed.pinned)

                alice.model.unpin().join()
                assertEquals("Unpinning failed: not in a room", alice.state.notice)
            }
        }
    }
}
