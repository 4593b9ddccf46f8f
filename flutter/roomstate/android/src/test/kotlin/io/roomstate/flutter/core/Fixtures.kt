package io.roomstate.flutter.core

import com.auth0.jwt.JWT
import com.auth0.jwt.algorithms.Algorithm
import io.roomstate.ConnectOptions
import io.roomstate.ConnectionState
import io.roomstate.DefaultRoomListener
import io.roomstate.Participant
import io.roomstate.Room
import io.roomstate.RoomState
import java.io.File
import java.nio.file.Files
import java.util.Date
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.delay
import kotlinx.coroutines.withTimeout

const val API_KEY = "flutterkey"
const val API_SECRET = "fluttersecret"
const val ROOM = "flutter-room"

/** A real `roomstate serve` process on a free port (as bindings/kotlin's tests start it). */
class TestServer(extraConfig: String = "") : AutoCloseable {
    private val dir = Files.createTempDirectory("roomstate-flutter-test").toFile()
    private val binary = System.getProperty("roomstate.bin") ?: error("run through Maven: roomstate.bin is not set")
    val process: Process
    val url: String

    init {
        val config = File(dir, "roomstate.toml")
        config.writeText("bind = \"127.0.0.1:0\"\n$extraConfig\n[keys]\n$API_KEY = \"$API_SECRET\"\n")
        process = ProcessBuilder(binary, "serve", "--config", config.path)
            .redirectError(ProcessBuilder.Redirect.INHERIT)
            .apply { environment()["ROOMSTATE_LOG"] = "warn" }
            .start()
        val line = process.inputStream.bufferedReader().readLine() ?: error("the server printed nothing")
        url = line.removePrefix("roomstate listening on ").also {
            check(it.startsWith("ws://")) { "unexpected first line: $line" }
        }
    }

    /** Freezes or thaws the server process, as an overloaded or unreachable server would be. */
    fun freeze(frozen: Boolean) {
        ProcessBuilder("kill", if (frozen) "-STOP" else "-CONT", process.pid().toString()).start().waitFor()
    }

    /** The server API through the `roomstate` command line, as an operator would use it. */
    fun admin(vararg args: String) {
        val command = listOf(binary, *args, "--url", url.replace("ws://", "http://"), "--api-key", API_KEY, "--api-secret", API_SECRET)
        val run = ProcessBuilder(command).redirectErrorStream(true).start()
        val output = run.inputStream.bufferedReader().readText()
        check(run.waitFor(15, TimeUnit.SECONDS) && run.exitValue() == 0) { "$command failed: $output" }
    }

    override fun close() {
        freeze(false)
        process.destroy()
        process.waitFor(5, TimeUnit.SECONDS)
        dir.deleteRecursively()
    }
}

/** An access token, as an app backend would mint it. */
fun token(identity: String, canUpdateMetadata: Boolean = true, secret: String = API_SECRET): String {
    val video = mapOf("room" to ROOM, "roomJoin" to true, "canUpdateOwnMetadata" to canUpdateMetadata)
    return JWT.create()
        .withIssuer(API_KEY)
        .withSubject(identity)
        .withExpiresAt(Date(System.currentTimeMillis() + 3_600_000))
        .withClaim("video", video)
        .sign(Algorithm.HMAC256(secret))
}

/** `connect`'s options as Dart sends them (ints that fit 32 bits arrive as Integers). */
fun fastOptions(requestTimeoutMs: Int = 10_000): Map<String, Any?> = mapOf(
    "requestTimeoutMs" to requestTimeoutMs,
    "reconnectBackoffMinMs" to 20,
    "reconnectBackoffMaxMs" to 200,
)

/** Another participant, joined through the Kotlin bindings directly (another device). */
class Peer private constructor(val room: Room, val heard: CopyOnWriteArrayList<String>) {
    companion object {
        suspend fun join(server: TestServer, identity: String): Peer {
            val heard = CopyOnWriteArrayList<String>()
            val listener = object : DefaultRoomListener() {
                override fun onParticipantJoined(participant: Participant) { heard += "joined:${participant.identity}" }
                override fun onParticipantLeft(participant: Participant) { heard += "left:${participant.identity}" }
                override fun onConnectionStateChanged(state: ConnectionState) { heard += "state:${state::class.simpleName}" }
            }
            val options = ConnectOptions(reconnectBackoffMinMs = 20u, reconnectBackoffMaxMs = 200u)
            return Peer(RoomState.connect(server.url, token(identity), listener, options), heard)
        }
    }

    suspend fun awaitHeard(event: String) = awaitUntil("$event in $heard") { event in heard }

    suspend fun leave() {
        room.disconnect()
        room.close()
    }
}

/** Polls `condition` until it holds; fails with `what` after 15 s. Not a timing assertion. */
suspend fun awaitUntil(what: String, condition: () -> Boolean) {
    try {
        withTimeout(15_000) { while (!condition()) delay(10) }
    } catch (timeout: kotlinx.coroutines.TimeoutCancellationException) {
        throw AssertionError("timed out waiting for: $what", timeout)
    }
}

/** The names of this process's native threads that belong to the engine. */
fun engineThreads(): List<String> =
    File("/proc/self/task").listFiles().orEmpty()
        .mapNotNull { runCatching { File(it, "comm").readText().trim() }.getOrNull() }
        .filter { it.startsWith("roomstate-") }
