// The Flutter side of the Android plugin: channels in, RoomStateChannelHandler (core/, plain
// Kotlin, tested on the JVM against a real server) does the work. Nothing else lives here.
package io.roomstate.flutter

import android.os.Handler
import android.os.Looper
import io.flutter.embedding.engine.plugins.FlutterPlugin
import io.flutter.plugin.common.BinaryMessenger
import io.flutter.plugin.common.EventChannel
import io.flutter.plugin.common.MethodCall
import io.flutter.plugin.common.MethodChannel
import io.roomstate.flutter.core.EventChannels
import io.roomstate.flutter.core.EventSink
import io.roomstate.flutter.core.MainThread
import io.roomstate.flutter.core.METHOD_CHANNEL
import io.roomstate.flutter.core.MethodResult
import io.roomstate.flutter.core.RoomStateChannelHandler
import io.roomstate.flutter.core.StreamHandler

class RoomStatePlugin : FlutterPlugin, MethodChannel.MethodCallHandler {
    private var methods: MethodChannel? = null
    private var handler: RoomStateChannelHandler? = null

    override fun onAttachedToEngine(binding: FlutterPlugin.FlutterPluginBinding) {
        val main = Handler(Looper.getMainLooper())
        handler = RoomStateChannelHandler(
            channels = FlutterEventChannels(binding.binaryMessenger),
            mainThread = MainThread { block -> main.post { block() } },
        )
        methods = MethodChannel(binding.binaryMessenger, METHOD_CHANNEL).also { it.setMethodCallHandler(this) }
    }

    override fun onMethodCall(call: MethodCall, result: MethodChannel.Result) {
        // A call's arguments are a map (CHANNELS.md); anything else reads as no arguments,
        // which the handler answers with BAD_ARGUMENTS.
        @Suppress("UNCHECKED_CAST")
        val arguments = call.arguments as? Map<String, Any?>
        val current = handler
        if (current == null) {
            result.error("NOT_CONNECTED", "not connected: the plugin is detached from the engine", null)
        } else {
            current.onMethodCall(call.method, arguments, FlutterResult(result))
        }
    }

    override fun onDetachedFromEngine(binding: FlutterPlugin.FlutterPluginBinding) {
        methods?.setMethodCallHandler(null)
        methods = null
        // Leaves every room, removes every listener, closes every channel; does not block.
        handler?.dispose()
        handler = null
    }
}

private class FlutterResult(private val result: MethodChannel.Result) : MethodResult {
    override fun success(value: Any?) = result.success(value)
    override fun error(code: String, message: String?, details: Any?) = result.error(code, message, details)
    override fun notImplemented() = result.notImplemented()
}

/** Event channels by name; the handler calls this on the main thread only. */
private class FlutterEventChannels(private val messenger: BinaryMessenger) : EventChannels {
    private val open = HashMap<String, EventChannel>()

    override fun open(name: String, handler: StreamHandler) {
        // Names are never reused (ids come from counters).
        open[name] = EventChannel(messenger, name).apply { setStreamHandler(FlutterStreamHandler(handler)) }
    }

    override fun close(name: String) {
        open.remove(name)?.setStreamHandler(null)
    }
}

private class FlutterStreamHandler(private val handler: StreamHandler) : EventChannel.StreamHandler {
    override fun onListen(arguments: Any?, events: EventChannel.EventSink) = handler.onListen(arguments, FlutterSink(events))
    override fun onCancel(arguments: Any?) = handler.onCancel(arguments)
}

private class FlutterSink(private val events: EventChannel.EventSink) : EventSink {
    override fun success(event: Any?) = events.success(event)
    override fun error(code: String, message: String?, details: Any?) = events.error(code, message, details)
    override fun endOfStream() = events.endOfStream()
}
