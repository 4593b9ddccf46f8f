// Flutter's iOS API, as far as RoomStatePlugin.swift uses it, as Swift imports it from the
// engine's headers (shell/platform/darwin/ios/framework/Headers: FlutterPlugin.h,
// FlutterChannels.h, FlutterCodecs.h, FlutterBinaryMessenger.h). A stand-in to type-check
// the adapter on Linux, never linked into anything. Objective-C's @optional requirements
// (handleMethodCall:result:, detachFromEngineForRegistrar:) are required here, so that a
// misspelt one fails to build instead of silently never being called.
import Foundation

public typealias FlutterResult = (Any?) -> Void
public typealias FlutterEventSink = (Any?) -> Void

public protocol FlutterBinaryMessenger: NSObjectProtocol {}

open class FlutterMethodCall: NSObject {
    open private(set) var method: String = ""
    open private(set) var arguments: Any?
}

open class FlutterError: NSObject {
    public init(code: String, message: String?, details: Any?) {}
}

// `extern NSObject const* FlutterMethodNotImplemented;`: a const pointee, not a const
// pointer, so Swift imports mutable globals.
public var FlutterMethodNotImplemented: NSObject = NSObject()
public var FlutterEndOfEventStream: NSObject = NSObject()

public protocol FlutterStreamHandler: NSObjectProtocol {
    func onListen(withArguments arguments: Any?, eventSink events: @escaping FlutterEventSink) -> FlutterError?
    func onCancel(withArguments arguments: Any?) -> FlutterError?
}

open class FlutterMethodChannel: NSObject {
    public init(name: String, binaryMessenger messenger: FlutterBinaryMessenger) {}
    open func setMethodCallHandler(_ handler: ((FlutterMethodCall, @escaping FlutterResult) -> Void)?) {}
}

open class FlutterEventChannel: NSObject {
    public init(name: String, binaryMessenger messenger: FlutterBinaryMessenger) {}
    open func setStreamHandler(_ handler: (FlutterStreamHandler & NSObjectProtocol)?) {}
}

public protocol FlutterPlugin: NSObjectProtocol {
    static func register(with registrar: FlutterPluginRegistrar)
    func handle(_ call: FlutterMethodCall, result: @escaping FlutterResult)
    func detachFromEngine(for registrar: FlutterPluginRegistrar)
}

public protocol FlutterPluginRegistrar: NSObjectProtocol {
    func messenger() -> FlutterBinaryMessenger & NSObjectProtocol
    func publish(_ value: NSObject)
    func addMethodCallDelegate(_ delegate: FlutterPlugin & NSObjectProtocol, channel: FlutterMethodChannel)
}
