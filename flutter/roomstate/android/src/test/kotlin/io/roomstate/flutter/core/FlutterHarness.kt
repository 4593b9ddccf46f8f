package io.roomstate.flutter.core

import io.roomstate.awaitUntil
import io.roomstate.ConnectOptions
import io.roomstate.Room
import io.roomstate.RoomListener
import io.roomstate.RoomState
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlin.test.assertEquals
import kotlin.test.assertTrue
import kotlin.test.fail
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Job
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout

/** What a method call was answered with. */
sealed interface Outcome {
    data class Success(val value: Any?) : Outcome
    data class Failure(val code: String, val message: String?, val details: Any?) : Outcome
    data object NotImplemented : Outcome
}

/** What an event channel delivered to Dart. */
sealed interface Item {
    data class Event(val value: Any?) : Item
    data class Failure(val code: String, val message: String?, val details: Any?) : Item
    data object Done : Item
}

/**
 * Stands in for the Flutter embedding: a single thread named "flutter-main" is the main
 * thread (calls arrive on it, as Flutter makes them), event channels are registered by
 * name, and Dart's side of each EventChannel is modelled as Flutter's is (after
 * endOfStream, Dart cancels the subscription; a listen or cancel on a channel without a
 * handler is what Dart reports as MissingPluginException; an isolate that is gone, after
 * a detach or a hot restart, cancels nothing). Every delivery is checked: on the main
 * thread, answered once, shaped as the vector of the same name.
 */
class FlutterHarness(
    connect: suspend (String, String, RoomListener, ConnectOptions) -> Room =
        { url, token, listener, options -> RoomState.connect(url, token, listener, options) },
) : AutoCloseable {
    private val executor = Executors.newSingleThreadExecutor { Thread(it, "flutter-main").apply { isDaemon = true } }
    val mainThread: Thread = executor.submit<Thread> { Thread.currentThread() }.get()

    /** Whatever broke a rule: reported by [close] (and by tests that look). */
    val violations = CopyOnWriteArrayList<String>()

    /** The thread of every result and event delivered, in order. */
    val deliveryThreads = CopyOnWriteArrayList<String>()

    /** How many deliveries of each vector name were checked. */
    val shapesChecked = ConcurrentHashMap<String, AtomicInteger>()

    val results = CopyOnWriteArrayList<RecordingResult>()
    val channels = FakeEventChannels()
    val main = MainThread { block -> executor.execute { guarded("a posted block", block) } }
    val handler = RoomStateChannelHandler(channels, main, connect)

    /**
     * Counts the Dart isolates that went away: a [DartStream] of an earlier one sends no
     * cancel, as Dart does not once the engine detached or a hot restart ended it.
     * Changed on the main thread only.
     */
    @Volatile private var isolate = 0

    /** onDetachedFromEngine, called on the main thread as Flutter calls it: Dart is gone from then on. */
    fun detach(): Job = onMain {
        isolate++
        handler.dispose()
    }

    private fun guarded(what: String, block: () -> Unit) {
        try {
            block()
        } catch (failure: Throwable) {
            violations += "$what threw $failure"
        }
    }

    /** Runs `block` on the main thread after everything posted before; returns its value. */
    fun <T> onMain(block: () -> T): T = executor.submit<T> { block() }.get(20, TimeUnit.SECONDS)

    /** Waits until everything posted so far ran, twice (a posted block may post again). */
    fun flush() {
        onMain {}
        onMain {}
    }

    private fun delivered(what: String) {
        deliveryThreads += Thread.currentThread().name
        if (Thread.currentThread() !== mainThread) violations += "$what delivered on ${Thread.currentThread().name}"
    }

    fun checkShape(name: String, vector: kotlinx.serialization.json.JsonElement?, value: Any?) {
        shapesChecked.computeIfAbsent(name) { AtomicInteger() }.incrementAndGet()
        if (vector == null) {
            violations += "no vector named $name for $value"
            return
        }
        Vectors.mismatch(vector, value)?.let { violations += "$name: $it (value: $value)" }
    }

    private fun checkError(code: String, message: String?, details: Any?) {
        val name = when {
            code == "CONFLICT" -> if ((details as? Map<*, *>)?.get("current") == null) "CONFLICT.absent" else "CONFLICT.present"
            else -> code
        }
        checkShape(name, Vectors.error(name), mapOf("code" to code, "message" to message, "details" to details))
    }

    /** A method call's answer, recorded: exactly once, on the main thread, shaped as its vector. */
    inner class RecordingResult(val method: String) : MethodResult {
        val answers = AtomicInteger()
        private val outcome = CompletableDeferred<Outcome>()
        @Volatile private var first: Outcome? = null

        private fun answer(value: Outcome) {
            delivered("the answer to $method")
            if (answers.incrementAndGet() > 1) violations += "$method answered again: $value after $first"
            if (first == null) first = value
            outcome.complete(value)
        }

        override fun success(value: Any?) {
            val name = when (method) {
                "get" -> if (value == null) "get.absent" else "get.present"
                "setMetadata", "setName" -> "setAttributes"
                "initialize", "disconnect", "updateToken", "reconnectNow" -> "delete" // null, as delete's
                else -> method
            }
            checkShape(name, Vectors.result(name), value)
            answer(Outcome.Success(value))
        }

        override fun error(code: String, message: String?, details: Any?) {
            checkError(code, message, details)
            answer(Outcome.Failure(code, message, details))
        }

        override fun notImplemented() = answer(Outcome.NotImplemented)

        val isAnswered get() = outcome.isCompleted

        suspend fun await(): Outcome = try {
            withTimeout(20_000) { outcome.await() }
        } catch (timeout: kotlinx.coroutines.TimeoutCancellationException) {
            throw AssertionError("$method was never answered", timeout)
        }
    }

    /** Sends a call as Flutter does, on the main thread, without waiting for its answer. */
    fun send(method: String, arguments: Map<String, Any?>? = emptyMap()): RecordingResult {
        val result = RecordingResult(method)
        results += result
        main.post {
            // A hot restart: the isolate that listened until now is gone before the new one calls.
            if (method == "initialize") isolate++
            handler.onMethodCall(method, arguments?.let(::asDecoded), result)
        }
        return result
    }

    suspend fun call(method: String, arguments: Map<String, Any?>? = emptyMap()): Outcome = send(method, arguments).await()

    /** A call that must succeed: its value. */
    suspend fun ok(method: String, arguments: Map<String, Any?>? = emptyMap()): Any? =
        when (val outcome = call(method, arguments)) {
            is Outcome.Success -> outcome.value
            else -> fail("$method($arguments) answered $outcome")
        }

    /** A call that must fail with `code`: the failure. */
    suspend fun fails(code: String, method: String, arguments: Map<String, Any?>? = emptyMap()): Outcome.Failure {
        val outcome = call(method, arguments)
        if (outcome !is Outcome.Failure || outcome.code != code) fail("$method($arguments): expected $code, got $outcome")
        return outcome
    }

    /** The event channels, registered by name as the adapter registers EventChannels. */
    inner class FakeEventChannels : EventChannels {
        val handlers = ConcurrentHashMap<String, StreamHandler>()
        val opened = CopyOnWriteArrayList<String>()
        val closed = CopyOnWriteArrayList<String>()

        override fun open(name: String, handler: StreamHandler) {
            if (Thread.currentThread() !== mainThread) violations += "open($name) on ${Thread.currentThread().name}"
            if (handlers.put(name, handler) != null) violations += "$name opened twice"
            opened += name
        }

        override fun close(name: String) {
            if (Thread.currentThread() !== mainThread) violations += "close($name) on ${Thread.currentThread().name}"
            if (handlers.remove(name) == null) violations += "$name closed but not open"
            closed += name
        }

        fun isOpen(name: String) = handlers.containsKey(name)
    }

    /** Listens to an event channel as Dart's EventChannel.receiveBroadcastStream().listen does. */
    fun listen(name: String): DartStream {
        val stream = DartStream(name)
        onMain {
            val handler = channels.handlers[name] ?: fail("listen to $name, which has no handler: Dart reports MissingPluginException")
            handler.onListen(null, stream.sink)
        }
        return stream
    }

    /** Dart's end of one event channel subscription. */
    inner class DartStream(val name: String) {
        private val listenedIn = isolate
        private val items = Channel<Item>(Channel.UNLIMITED)
        val received = CopyOnWriteArrayList<Item>()
        @Volatile var cancelled = false
        @Volatile var done = false

        private fun receive(item: Item) {
            delivered("$item on $name")
            if (cancelled) violations += "$item on $name after it was cancelled"
            if (done) violations += "$item on $name after endOfStream"
            received += item
            items.trySend(item)
        }

        val sink = object : EventSink {
            override fun success(event: Any?) {
                checkEvent(event)
                receive(Item.Event(event))
            }

            override fun error(code: String, message: String?, details: Any?) {
                checkError(code, message, details)
                receive(Item.Failure(code, message, details))
            }

            override fun endOfStream() {
                receive(Item.Done)
                done = true
                // Dart's broadcast stream closes and cancels its subscription: 'cancel' arrives next.
                main.post { cancelOnMain() }
            }
        }

        private fun checkEvent(event: Any?) {
            val map = event as? Map<*, *>
            when {
                name.startsWith(ROOM_CHANNEL_PREFIX) -> {
                    val type = map?.get("type") as? String ?: "(no type)"
                    checkShape("roomEvents.$type", Vectors.roomEvent(type), event)
                }
                else -> {
                    val which = if (map?.get("entry") == null) "absent" else "present"
                    checkShape("keyEvents.$which", Vectors.keyEvent(which), event)
                }
            }
        }

        private fun cancelOnMain() {
            if (cancelled || listenedIn != isolate) return
            cancelled = true
            val handler = channels.handlers[name]
            if (handler == null) {
                violations += "cancel on $name, which has no handler: Dart reports MissingPluginException"
            } else {
                handler.onCancel(null)
            }
        }

        /** Cancels the subscription (removeKeyChangeListener, or a Dart subscription's cancel()). */
        fun cancel() = onMain { cancelOnMain() }

        suspend fun next(): Item = try {
            withTimeout(15_000) { items.receive() }
        } catch (timeout: kotlinx.coroutines.TimeoutCancellationException) {
            throw AssertionError("nothing more on $name after $received", timeout)
        }

        @Suppress("UNCHECKED_CAST")
        suspend fun nextEvent(): Map<String, Any?> = when (val item = next()) {
            is Item.Event -> item.value as Map<String, Any?>
            else -> fail("expected an event on $name, got $item")
        }

        /** Skips events until one matches; fails on an error or the end. */
        suspend fun awaitEvent(what: String, matches: (Map<String, Any?>) -> Boolean): Map<String, Any?> {
            while (true) {
                val event = try {
                    nextEvent()
                } catch (missing: AssertionError) {
                    throw AssertionError("waiting for $what: ${missing.message}", missing)
                }
                if (matches(event)) return event
            }
        }

        suspend fun awaitDone() {
            while (true) {
                if (next() == Item.Done) return
            }
        }

        /** Nothing more arrives within `ms`. */
        suspend fun assertQuiet(ms: Long = 300) {
            delay(ms)
            flush()
            val more = items.tryReceive().getOrNull()
            assertTrue(more == null, "nothing more on $name: $more")
        }
    }

    /** Joins through the channel as the Dart side does: `connect`, then listen to the room's channel at once. */
    suspend fun join(
        server: TestServer,
        identity: String,
        options: Map<String, Any?> = fastOptions(),
        canUpdateMetadata: Boolean = true,
        listen: Boolean = true,
    ): JoinedRoom {
        @Suppress("UNCHECKED_CAST")
        val result = ok("connect", mapOf("url" to server.url, "token" to token(identity, canUpdateMetadata), "options" to options)) as Map<String, Any?>
        val id = result["room"] as Long
        val channel = "$ROOM_CHANNEL_PREFIX$id"
        assertTrue(channels.isOpen(channel), "the room's channel is open when connect answers")
        return JoinedRoom(id, result, if (listen) listen(channel) else null)
    }

    class JoinedRoom(val id: Long, val result: Map<String, Any?>, val events: DartStream?) {
        val channel = "$ROOM_CHANNEL_PREFIX$id"
    }

    /** Adds a key change listener and (by default) listens to its channel. */
    suspend fun addListener(room: Long, vararg keys: String, listen: Boolean = true): Pair<Long, DartStream?> {
        val result = ok("addKeyChangeListener", mapOf("room" to room, "keys" to keys.toList())) as Map<*, *>
        val id = result["listener"] as Long
        assertEquals("$KEYS_CHANNEL_PREFIX$id", result["channel"])
        return id to if (listen) listen(result["channel"] as String) else null
    }

    /** Disposes the handler (onDetachedFromEngine), then checks every rule held for the whole test. */
    override fun close() {
        try {
            runBlocking {
                withTimeout(20_000) { detach().join() }
                awaitUntil("every call answered: ${results.filter { !it.isAnswered }.map { it.method }}") {
                    results.all { it.isAnswered }
                }
            }
            flush()
            for (result in results) {
                if (result.answers.get() != 1) violations += "${result.method} answered ${result.answers.get()} times"
            }
            assertEquals(emptyList(), violations.toList(), "every delivery on the main thread, once, shaped as its vector")
            assertTrue(channels.handlers.isEmpty(), "every channel closed after dispose: ${channels.handlers.keys}")
        } finally {
            executor.shutdownNow()
        }
    }
}

/** As StandardMessageCodec decodes what Dart sent: an int that fits 32 bits is an Integer. */
@Suppress("UNCHECKED_CAST")
private fun asDecoded(map: Map<String, Any?>): Map<String, Any?> = decoded(map) as Map<String, Any?>

private fun decoded(value: Any?): Any? = when (value) {
    is Long -> if (value in Int.MIN_VALUE..Int.MAX_VALUE) value.toInt() else value
    is Map<*, *> -> value.entries.associate { (key, entry) -> key to decoded(entry) }
    is List<*> -> value.map(::decoded)
    else -> value
}
