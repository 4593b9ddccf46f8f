// What RoomStateChannelHandler needs from Flutter, as plain interfaces: the adapter
// (../RoomStatePlugin.kt) implements them over the Flutter embedding, the JVM tests over a
// single-thread executor standing in for the main thread. The format: flutter/roomstate/CHANNELS.md.
package io.roomstate.flutter.core

/** A method call's reply (MethodChannel.Result): the handler calls exactly one, once, on the main thread. */
interface MethodResult {
    fun success(value: Any?)
    fun error(code: String, message: String?, details: Any?)
    fun notImplemented()
}

/** One listener's end of an event channel (EventChannel.EventSink); called on the main thread. */
interface EventSink {
    fun success(event: Any?)
    fun error(code: String, message: String?, details: Any?)
    fun endOfStream()
}

/** Told when Dart listens to an event channel and when it cancels (EventChannel.StreamHandler). */
interface StreamHandler {
    fun onListen(arguments: Any?, sink: EventSink)
    fun onCancel(arguments: Any?)
}

/**
 * Registers and unregisters event channels by name (the adapter sets or clears an
 * EventChannel's stream handler). The handler calls both on the main thread only.
 */
interface EventChannels {
    fun open(name: String, handler: StreamHandler)
    fun close(name: String)
}

/** Runs a block on the platform's main thread, after what was posted before it. */
fun interface MainThread {
    fun post(block: () -> Unit)
}
