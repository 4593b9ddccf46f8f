// The Flutter side of the iOS plugin: channels in, RoomStateChannelHandler (plain Swift,
// tested on Linux against a real server) does the work. Nothing else lives here. Built only
// where Flutter can be imported (an app's Xcode build), not by `swift build` on Linux.
#if canImport(Flutter)
// @preconcurrency: Flutter's Objective-C API predates Sendable, and its two sentinels below
// are declared `extern NSObject const*` (a const pointee, not a const pointer), so Swift
// imports them as mutable globals, which Swift 6 refuses to read without it.
@preconcurrency import Flutter
import Foundation

/// Flutter's sentinels, read once: the engine sets them when it loads and never again.
private nonisolated(unsafe) let methodNotImplemented: NSObject = FlutterMethodNotImplemented
private nonisolated(unsafe) let endOfEventStream: NSObject = FlutterEndOfEventStream

public final class RoomStatePlugin: NSObject, FlutterPlugin {
    private let methods: FlutterMethodChannel
    private let handler: RoomStateChannelHandler

    private init(messenger: FlutterBinaryMessenger) {
        methods = FlutterMethodChannel(name: methodChannelName, binaryMessenger: messenger)
        handler = RoomStateChannelHandler(channels: FlutterEventChannels(messenger), mainThread: MainQueue())
        super.init()
    }

    public static func register(with registrar: FlutterPluginRegistrar) {
        let plugin = RoomStatePlugin(messenger: registrar.messenger())
        registrar.addMethodCallDelegate(plugin, channel: plugin.methods)
        // The engine calls detachFromEngine(for:) only on a published plugin instance.
        registrar.publish(plugin)
    }

    public func handle(_ call: FlutterMethodCall, result: @escaping FlutterResult) {
        // A call's arguments are a map (CHANNELS.md); anything else reads as no arguments,
        // which the handler answers with BAD_ARGUMENTS.
        handler.handle(method: call.method, arguments: call.arguments, result: FlutterMethodResult(result))
    }

    public func detachFromEngine(for registrar: FlutterPluginRegistrar) {
        methods.setMethodCallHandler(nil)
        // Leaves every room, removes every listener, closes every channel; does not block.
        handler.dispose()
    }
}

/// The main thread: Flutter wants results and events there.
private struct MainQueue: MainThread {
    func post(_ block: @escaping @Sendable () -> Void) {
        DispatchQueue.main.async(execute: block)
    }
}

/// A method call's reply; the handler calls it once, on the main thread.
private final class FlutterMethodResult: MethodResult, @unchecked Sendable {
    private let result: FlutterResult

    init(_ result: @escaping FlutterResult) {
        self.result = result
    }

    func success(_ value: Any?) { result(value) }
    func error(code: String, message: String?, details: Any?) { result(FlutterError(code: code, message: message, details: details)) }
    func notImplemented() { result(methodNotImplemented) }
}

/// Event channels by name; the handler calls this on the main thread only.
private final class FlutterEventChannels: EventChannels, @unchecked Sendable {
    private let messenger: FlutterBinaryMessenger
    private var open: [String: FlutterEventChannel] = [:]

    init(_ messenger: FlutterBinaryMessenger) {
        self.messenger = messenger
    }

    func open(name: String, handler: StreamHandler) {
        // Names are never reused: ids come from counters.
        let channel = FlutterEventChannel(name: name, binaryMessenger: messenger)
        channel.setStreamHandler(FlutterStreamBridge(handler))
        open[name] = channel
    }

    func close(name: String) {
        open.removeValue(forKey: name)?.setStreamHandler(nil)
    }
}

/// A FlutterStreamHandler over the handler's StreamHandler.
private final class FlutterStreamBridge: NSObject, FlutterStreamHandler {
    private let handler: StreamHandler

    init(_ handler: StreamHandler) {
        self.handler = handler
    }

    func onListen(withArguments arguments: Any?, eventSink events: @escaping FlutterEventSink) -> FlutterError? {
        handler.onListen(arguments: arguments, sink: FlutterSink(events))
        return nil
    }

    func onCancel(withArguments arguments: Any?) -> FlutterError? {
        handler.onCancel(arguments: arguments)
        return nil
    }
}

/// One listen's FlutterEventSink; called on the main thread.
private final class FlutterSink: EventSink, @unchecked Sendable {
    private let events: FlutterEventSink

    init(_ events: @escaping FlutterEventSink) {
        self.events = events
    }

    func success(_ event: Any?) { events(event) }
    func error(code: String, message: String?, details: Any?) { events(FlutterError(code: code, message: message, details: details)) }
    func endOfStream() { events(endOfEventStream) }
}
#endif
