// What RoomStateChannelHandler needs from Flutter, as plain protocols: the adapter
// (RoomStatePlugin.swift) implements them over the Flutter iOS embedding, the tests over a
// serial DispatchQueue standing in for the main thread. Mirrors the Android side's
// android/src/main/kotlin/io/roomstate/flutter/core/Platform.kt. The format: ../../../../CHANNELS.md.
import Foundation

/// A method call's reply (`FlutterResult`): the handler calls exactly one, once, on the main thread.
public protocol MethodResult: Sendable {
    func success(_ value: Any?)
    func error(code: String, message: String?, details: Any?)
    func notImplemented()
}

/// One listener's end of an event channel (`FlutterEventSink`); called on the main thread.
public protocol EventSink: Sendable {
    func success(_ event: Any?)
    func error(code: String, message: String?, details: Any?)
    func endOfStream()
}

/// Told when Dart listens to an event channel and when it cancels (`FlutterStreamHandler`).
/// Called on the main thread.
public protocol StreamHandler: AnyObject, Sendable {
    func onListen(arguments: Any?, sink: EventSink)
    func onCancel(arguments: Any?)
}

/// Registers and unregisters event channels by name (the adapter sets or clears a
/// `FlutterEventChannel`'s stream handler). The handler calls both on the main thread only.
public protocol EventChannels: Sendable {
    func open(name: String, handler: StreamHandler)
    func close(name: String)
}

/// Runs a block on the platform's main thread, after what was posted before it.
public protocol MainThread: Sendable {
    func post(_ block: @escaping @Sendable () -> Void)
}
