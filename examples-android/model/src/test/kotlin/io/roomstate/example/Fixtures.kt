package io.roomstate.example

import io.roomstate.ConnectOptions
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.test.fail
import kotlinx.coroutines.CoroutineExceptionHandler
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeoutOrNull

const val ROOM = "example"

/** A real `roomstate serve` process (bindings/kotlin's fixture, from its test jar). */
typealias TestServer = io.roomstate.TestServer

/** Removes a participant through the server API, with the roomstate CLI. */
fun TestServer.remove(identity: String) = admin("participant", "remove", ROOM, identity)

/** An access token, as an app backend would mint it (`roomstate token create` makes the same). */
fun token(identity: String, secret: String = io.roomstate.API_SECRET): String =
    io.roomstate.token(identity, room = ROOM, secret = secret, name = identity.replaceFirstChar { it.uppercase() })

/** Reconnects quickly in tests (the defaults back off up to 5 s). */
fun testOptions() = ConnectOptions(reconnectBackoffMinMs = 20u, reconnectBackoffMaxMs = 200u)

/**
 * One app: a RoomModel on a scope of its own, as the ViewModel's viewModelScope would be.
 * Records any exception that escaped the model (there must be none).
 */
class App(val identity: String, options: ConnectOptions = testOptions()) : AutoCloseable {
    val escaped = CopyOnWriteArrayList<Throwable>()
    val scope = CoroutineScope(
        SupervisorJob() + Dispatchers.Default + CoroutineExceptionHandler { _, e -> escaped += e },
    )
    val model = RoomModel(scope, options)
    val state: RoomUiState get() = model.state.value

    /** Connects with `token` and waits for the connect call to finish (joined or not). */
    suspend fun connect(server: TestServer, token: String = token(identity)) {
        model.connect(server.url, token).join()
    }

    /** Connects and waits until connected. */
    suspend fun join(server: TestServer) {
        connect(server)
        awaitState("connected") { it.connection == Connection.Connected && it.localIdentity == identity }
    }

    /** Waits until the state matches; fails after a generous 15 s (not a timing assertion). */
    suspend fun awaitState(what: String, predicate: (RoomUiState) -> Boolean): RoomUiState =
        withTimeoutOrNull(15_000) { model.state.first(predicate) }
            ?: fail("$identity: waited 15 s for $what; the state is $state")

    override fun close() {
        runBlocking { model.disconnect().join() }
        scope.cancel()
        if (escaped.isNotEmpty()) throw AssertionError("$identity: exceptions escaped the model: $escaped", escaped.first())
    }
}

fun RoomUiState.participant(identity: String): ParticipantUi? = participants.find { it.identity == identity }
