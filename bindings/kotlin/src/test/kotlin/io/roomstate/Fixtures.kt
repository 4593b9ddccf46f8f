package io.roomstate

import com.auth0.jwt.JWT
import com.auth0.jwt.algorithms.Algorithm
import java.io.File
import java.nio.file.Files
import java.util.Date
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.delay
import kotlinx.coroutines.withTimeoutOrNull

const val API_KEY = "jvmkey"
const val API_SECRET = "jvmsecret"

/**
 * A real `roomstate serve` process on a free port. Published in this module's test jar:
 * the Android example's and the Flutter plugin's JVM tests use it too.
 */
class TestServer(extraConfig: String = "") : AutoCloseable {
    private val dir = Files.createTempDirectory("roomstate-test").toFile()
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
        val signal = if (frozen) "-STOP" else "-CONT"
        ProcessBuilder("kill", signal, process.pid().toString()).start().waitFor()
        if (frozen) awaitStopped()
    }

    /**
     * `kill` returns before every thread of the server has stopped: each stops when it
     * next runs, and on a busy machine one may first answer a request. Waits (Linux:
     * /proc, at most 5 s) until all have.
     */
    private fun awaitStopped() {
        val tasks = File("/proc/${process.pid()}/task")
        if (!tasks.isDirectory) return
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5)
        while (System.nanoTime() < deadline) {
            val threads = tasks.listFiles().orEmpty()
            // `PID (COMM) STATE ...`: T when stopped.
            val stopped = threads.isNotEmpty() && threads.all { thread ->
                val stat = runCatching { File(thread, "stat").readText() }.getOrNull()
                stat != null && stat.substringAfterLast(')').trimStart().startsWith('T')
            }
            if (stopped) return
            Thread.sleep(1)
        }
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
fun token(
    identity: String,
    room: String = "jvm-room",
    canUpdateMetadata: Boolean = true,
    secret: String = API_SECRET,
    name: String? = null,
): String {
    val video = mapOf("room" to room, "roomJoin" to true, "canUpdateOwnMetadata" to canUpdateMetadata)
    return JWT.create()
        .withIssuer(API_KEY)
        .withSubject(identity)
        .apply { if (name != null) withClaim("name", name) }
        .withExpiresAt(Date(System.currentTimeMillis() + 3_600_000))
        .withClaim("video", video)
        .sign(Algorithm.HMAC256(secret))
}

/** Records every call, for assertions. */
class Recorder : DefaultRoomListener(), KeyChangeListener {
    val events = CopyOnWriteArrayList<String>()
    val threads = CopyOnWriteArrayList<String>()

    override fun onKeyChanged(key: String, entry: StoreEntry?) {
        threads += Thread.currentThread().name
        events += "$key=${entry?.valueJson}"
    }
    override fun onSessionStoreAvailable(store: SessionStore) { events += "store-available" }
    override fun onConnectionStateChanged(state: ConnectionState) { events += "state:${state::class.simpleName}" }
    override fun onParticipantJoined(participant: Participant) { events += "joined:${participant.identity}" }
    override fun onParticipantLeft(participant: Participant) { events += "left:${participant.identity}" }
    override fun onAttributesChanged(participant: Participant, changedKeys: List<String>) {
        events += "attributes:${participant.identity}:${changedKeys.sorted()}"
    }
    override fun onMetadataChanged(participant: Participant, oldMetadata: String, newMetadata: String) {
        events += "metadata:${participant.identity}:$oldMetadata->$newMetadata"
    }

    /** Waits until `event` was recorded; fails after a generous bound. */
    suspend fun awaitEvent(event: String) = awaitUntil("$event in $events") { event in events }

    fun keyEvents(key: String) = events.filter { it.startsWith("$key=") }
}

/** Polls `condition` until it holds; fails with `what` after 15 s. Not a timing assertion. */
suspend fun awaitUntil(what: String, condition: () -> Boolean) {
    val met = withTimeoutOrNull(15_000) {
        while (!condition()) delay(10)
        true
    }
    check(met == true) { "waited 15 s for $what" }
}

/** The names of this process's native threads that belong to the engine. */
fun engineThreads(): List<String> =
    File("/proc/self/task").listFiles().orEmpty()
        .mapNotNull { runCatching { File(it, "comm").readText().trim() }.getOrNull() }
        .filter { it.startsWith("roomstate-") }

fun fastOptions(requestTimeoutMs: ULong = 10_000u) = ConnectOptions(
    requestTimeoutMs = requestTimeoutMs,
    reconnectBackoffMinMs = 20u,
    reconnectBackoffMaxMs = 200u,
)
