package io.roomstate.example

import com.auth0.jwt.JWT
import com.auth0.jwt.algorithms.Algorithm
import io.roomstate.ConnectOptions
import java.io.File
import java.nio.file.Files
import java.util.Date
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import kotlin.test.fail
import kotlinx.coroutines.CoroutineExceptionHandler
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeoutOrNull

const val API_KEY = "examplekey"
const val API_SECRET = "examplesecret"
const val ROOM = "example"

/** A real `roomstate serve` process on a free port (the binary from -Droomstate.bin). */
class TestServer : AutoCloseable {
    private val dir = Files.createTempDirectory("roomstate-example-test").toFile()
    private val binary = System.getProperty("roomstate.bin") ?: error("run through Maven: roomstate.bin is not set")
    private val process: Process
    val url: String

    init {
        val config = File(dir, "roomstate.toml")
        config.writeText("bind = \"127.0.0.1:0\"\n[keys]\n$API_KEY = \"$API_SECRET\"\n")
        process = ProcessBuilder(binary, "serve", "--config", config.path)
            .redirectError(ProcessBuilder.Redirect.INHERIT)
            .apply { environment()["ROOMSTATE_LOG"] = "warn" }
            .start()
        val line = process.inputStream.bufferedReader().readLine() ?: error("the server printed nothing")
        url = line.removePrefix("roomstate listening on ").also {
            check(it.startsWith("ws://")) { "unexpected first line: $line" }
        }
    }

    /** Freezes (SIGSTOP) or thaws (SIGCONT) the server: a link that goes silent. */
    fun freeze(frozen: Boolean) {
        val signal = if (frozen) "-STOP" else "-CONT"
        ProcessBuilder("kill", signal, process.pid().toString()).start().waitFor()
    }

    /** Removes a participant through the server API, with the roomstate CLI. */
    fun remove(identity: String) {
        val cli = ProcessBuilder(
            binary, "participant", "remove", ROOM, identity,
            "--url", url.replaceFirst("ws://", "http://"), "--api-key", API_KEY, "--api-secret", API_SECRET,
        ).redirectErrorStream(true).start()
        val output = cli.inputStream.bufferedReader().readText()
        check(cli.waitFor() == 0) { "roomstate participant remove failed: $output" }
    }

    override fun close() {
        freeze(false)
        process.destroy()
        process.waitFor(5, TimeUnit.SECONDS)
        dir.deleteRecursively()
    }
}

/** An access token, as an app backend would mint it (`roomstate token create` makes the same). */
fun token(identity: String, secret: String = API_SECRET): String =
    JWT.create()
        .withIssuer(API_KEY)
        .withSubject(identity)
        .withClaim("name", identity.replaceFirstChar { it.uppercase() })
        .withExpiresAt(Date(System.currentTimeMillis() + 3_600_000))
        .withClaim("video", mapOf("room" to ROOM, "roomJoin" to true, "canUpdateOwnMetadata" to true))
        .sign(Algorithm.HMAC256(secret))

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
