// Stands in for the Flutter iOS embedding, as the Android side's FlutterHarness.kt does: a
// serial DispatchQueue labelled "flutter-main" is the main thread (calls arrive on it, as
// Flutter makes them), arguments arrive as the iOS codec decodes them (NSDictionary,
// NSString, NSNumber, NSNull), event channels are registered by name, and Dart's side of
// each EventChannel is modelled as Flutter's is (after endOfStream, Dart cancels the
// subscription; a listen or cancel on a channel without a handler is what Dart reports as
// MissingPluginException; an isolate that is gone, after a detach or a hot restart, cancels
// nothing). Every delivery is checked: on the main thread, answered once, never after a
// cancel or endOfStream, shaped as the vector of the same name.
import Foundation
import RoomStateTesting
@testable import roomstate
import XCTest

/// What a method call was answered with.
enum Outcome: @unchecked Sendable, CustomStringConvertible {
    case success(Any?)
    case failure(Failure)
    case notImplemented

    var description: String {
        switch self {
        case .success(let value): "success(\(describe(value)))"
        case .failure(let failure): "\(failure)"
        case .notImplemented: "notImplemented"
        }
    }
}

/// An error, as PlatformException(code, message, details) in Dart.
struct Failure: @unchecked Sendable, CustomStringConvertible {
    let code: String
    let message: String?
    let details: Any?

    var description: String { "failure(\(code), \(message ?? "nil"), \(describe(details)))" }
}

/// What an event channel delivered to Dart.
enum Item: @unchecked Sendable, CustomStringConvertible {
    case event(Any?)
    case failure(Failure)
    case done

    var description: String {
        switch self {
        case .event(let value): "event(\(describe(value)))"
        case .failure(let failure): "\(failure)"
        case .done: "done"
        }
    }

    var isDone: Bool {
        if case .done = self { return true }
        return false
    }
}

/// The main thread: a serial queue.
struct TestMainThread: MainThread {
    let queue: DispatchQueue

    func post(_ block: @escaping @Sendable () -> Void) {
        queue.async(execute: block)
    }
}

final class FlutterHarness: @unchecked Sendable {
    let queue = DispatchQueue(label: "flutter-main")
    private let mainKey = DispatchSpecificKey<Bool>()
    /// Whatever broke a rule: reported by `close()` (and by tests that look).
    let violations = Locked<[String]>([])
    /// Where every result and event was delivered ("flutter-main", or another thread's name), in order.
    let deliveryThreads = Locked<[String]>([])
    /// How many deliveries of each vector name were checked.
    let shapesChecked = Locked<[String: Int]>([:])
    let results = Locked<[RecordingResult]>([])
    let channels = FakeEventChannels()
    let main: TestMainThread
    private(set) var handler: RoomStateChannelHandler!
    /// Counts the Dart isolates that went away: a `DartStream` of an earlier one sends no
    /// cancel, as Dart does not once the engine detached or a hot restart ended it.
    let isolate = Locked(0)

    init(connect: RoomStateChannelHandler.Connect? = nil) {
        queue.setSpecific(key: mainKey, value: true)
        main = TestMainThread(queue: queue)
        channels.harness = self
        handler = if let connect {
            RoomStateChannelHandler(channels: channels, mainThread: main, connect: connect)
        } else {
            RoomStateChannelHandler(channels: channels, mainThread: main)
        }
    }

    var isMain: Bool { DispatchQueue.getSpecific(key: mainKey) == true }

    func violation(_ what: String) {
        violations.update { $0.append(what) }
    }

    /// Runs `body` on the main thread after everything posted before; returns its value.
    func onMain<T>(_ body: () throws -> T) rethrows -> T {
        try queue.sync(execute: body)
    }

    /// Waits until everything posted so far ran, twice (a posted block may post again).
    func flush() {
        onMain {}
        onMain {}
    }

    fileprivate func delivered(_ what: String) {
        let thread = isMain ? "flutter-main" : currentThreadName()
        deliveryThreads.update { $0.append(thread) }
        if thread != "flutter-main" { violation("\(what) delivered on \(thread)") }
    }

    func checkShape(_ name: String, _ vector: JSON?, _ value: Any?) {
        shapesChecked.update { $0[name, default: 0] += 1 }
        guard let vector else { return violation("no vector named \(name) for \(describe(value))") }
        if let mismatch = Vectors.mismatch(vector, value) { violation("\(name): \(mismatch) (value: \(describe(value)))") }
    }

    fileprivate func checkError(_ code: String, _ message: String?, _ details: Any?) {
        var name = code
        if code == "CONFLICT" { name = (details as? [String: Any])?["current"].isNull ?? true ? "CONFLICT.absent" : "CONFLICT.present" }
        let shape: [String: Any] = ["code": code, "message": message.map { $0 as Any } ?? NSNull(), "details": details ?? NSNull()]
        checkShape(name, Vectors.error(name), shape)
    }

    /// detachFromEngine, called on the main thread as Flutter calls it: Dart is gone from then on.
    @discardableResult
    func detach() -> Task<Void, Never> {
        onMain {
            isolate.update { $0 += 1 }
            return handler.dispose()
        }
    }

    // MARK: Method calls

    /// Sends a call as Flutter does, on the main thread, without waiting for its answer.
    @discardableResult
    func send(_ method: String, _ arguments: [String: Any?]? = [:]) -> RecordingResult {
        let result = RecordingResult(method, self)
        results.update { $0.append(result) }
        let decoded = Sent(value: arguments.map { asDecoded($0) })
        main.post {
            // A hot restart: the isolate that listened until now is gone before the new one calls.
            if method == "initialize" { self.isolate.update { $0 += 1 } }
            self.handler.handle(method: method, arguments: decoded.value, result: result)
        }
        return result
    }

    func call(_ method: String, _ arguments: [String: Any?]? = [:]) async throws -> Outcome {
        try await send(method, arguments).outcome()
    }

    /// A call that must succeed: its value.
    @discardableResult
    func ok(_ method: String, _ arguments: [String: Any?]? = [:], file: StaticString = #filePath, line: UInt = #line) async throws -> Any? {
        let outcome = try await call(method, arguments)
        guard case .success(let value) = outcome else {
            XCTFail("\(method)(\(describe(arguments))) answered \(outcome)", file: file, line: line)
            throw ConditionNotMet(description: "\(method) failed")
        }
        return value
    }

    /// A call that must fail with `code`: the failure.
    @discardableResult
    func fails(_ code: String, _ method: String, _ arguments: [String: Any?]? = [:], file: StaticString = #filePath, line: UInt = #line) async throws -> Failure {
        let outcome = try await call(method, arguments)
        guard case .failure(let failure) = outcome, failure.code == code else {
            XCTFail("\(method)(\(describe(arguments))): expected \(code), got \(outcome)", file: file, line: line)
            throw ConditionNotMet(description: "\(method) did not fail with \(code)")
        }
        return failure
    }

    // MARK: Event channels

    /// Listens to an event channel as Dart's `EventChannel.receiveBroadcastStream().listen` does.
    func listen(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> DartStream {
        let stream = DartStream(name, self)
        let listened: Bool = onMain {
            guard let handler = channels.handler(name) else { return false }
            handler.onListen(arguments: nil, sink: stream.sink)
            return true
        }
        guard listened else {
            XCTFail("listen to \(name), which has no handler: Dart reports MissingPluginException", file: file, line: line)
            throw ConditionNotMet(description: "\(name) has no handler")
        }
        return stream
    }

    /// Joins through the channel as the Dart side does: `connect`, then listen to the room's channel at once.
    func join(
        _ server: TestServer,
        _ identity: String,
        options: [String: Any] = fastOptions(),
        canUpdateMetadata: Bool = true,
        listen: Bool = true,
        file: StaticString = #filePath,
        line: UInt = #line
    ) async throws -> JoinedRoom {
        let token = try token(identity, canUpdateMetadata: canUpdateMetadata)
        let result = try await ok("connect", ["url": server.url, "token": token, "options": options], file: file, line: line).asMap
        let id = try XCTUnwrap(result["room"].asInt, file: file, line: line)
        let channel = "\(roomChannelPrefix)\(id)"
        XCTAssertTrue(channels.isOpen(channel), "the room's channel is open when connect answers", file: file, line: line)
        return JoinedRoom(id: id, result: result, events: listen ? try self.listen(channel) : nil)
    }

    struct JoinedRoom {
        let id: Int64
        let result: [String: Any]
        let events: DartStream?
        var channel: String { "\(roomChannelPrefix)\(id)" }
    }

    /// Adds a key change listener and (by default) listens to its channel.
    func addListener(_ room: Int64, _ keys: String..., listen: Bool = true, file: StaticString = #filePath, line: UInt = #line) async throws -> (id: Int64, stream: DartStream?) {
        let result = try await ok("addKeyChangeListener", ["room": room, "keys": keys], file: file, line: line).asMap
        let id = try XCTUnwrap(result["listener"].asInt, file: file, line: line)
        XCTAssertEqual(result["channel"].asString, "\(keysChannelPrefix)\(id)", file: file, line: line)
        return (id, listen ? try self.listen("\(keysChannelPrefix)\(id)") : nil)
    }

    /// Disposes the handler (detachFromEngine), then checks every rule held for the whole test.
    func close(file: StaticString = #filePath, line: UInt = #line) async throws {
        await detach().value
        try await eventually("every call answered: \(results().filter { !$0.isAnswered }.map(\.method))") {
            self.results().allSatisfy { $0.isAnswered }
        }
        flush()
        for result in results() where result.answers != 1 {
            violation("\(result.method) answered \(result.answers) times")
        }
        XCTAssertEqual(violations(), [], "every delivery on the main thread, once, shaped as its vector", file: file, line: line)
        XCTAssertEqual(channels.openNames, [], "every channel closed after dispose", file: file, line: line)
    }
}

/// As the iOS StandardMethodCodec decodes what Dart sent: NSString, NSNumber (an int that
/// fits 32 bits made with numberWithInt, else numberWithLongLong), NSArray, NSDictionary, NSNull.
func asDecoded(_ value: Any?) -> Any {
    guard let value = plain(value) else { return NSNull() }
    if let int = integer(value) {
        return Int32(exactly: int).map { NSNumber(value: $0) } ?? NSNumber(value: int)
    }
    switch value {
    case let bool as Bool where type(of: value) == Bool.self: return NSNumber(value: bool)
    case let double as Double where type(of: value) == Double.self: return NSNumber(value: double)
    case let string as String: return NSString(string: string)
    case let map as [String: Any]: return NSDictionary(dictionary: map.mapValues { asDecoded($0) })
    case let list as [Any]: return NSArray(array: list.map { asDecoded($0) })
    default: return value
    }
}


func currentThreadName() -> String {
    #if os(Linux)
    let comm = try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)
    return comm?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
    #else
    return Thread.current.name ?? "?"
    #endif
}

/// A method call's answer, recorded: exactly once, on the main thread, shaped as its vector.
final class RecordingResult: MethodResult, @unchecked Sendable {
    let method: String
    /// Weak: the engine may answer after the test (and its harness) ended.
    private weak var harness: FlutterHarness?
    private let recorded = Locked<[Outcome]>([])

    init(_ method: String, _ harness: FlutterHarness) {
        self.method = method
        self.harness = harness
    }

    var answers: Int { recorded().count }
    var isAnswered: Bool { answers > 0 }

    private func answer(_ outcome: Outcome) {
        guard let harness else { return }
        harness.delivered("the answer to \(method)")
        let earlier = recorded.update { answers -> [Outcome] in
            defer { answers.append(outcome) }
            return answers
        }
        if let first = earlier.first { harness.violation("\(method) answered twice: \(outcome) after \(first)") }
    }

    func success(_ value: Any?) {
        let name = switch method {
        case "get": value == nil ? "get.absent" : "get.present"
        case "setMetadata", "setName": "setAttributes"
        case "initialize", "disconnect", "updateToken", "reconnectNow": "delete"  // null, as delete's
        default: method
        }
        harness?.checkShape(name, Vectors.result(name), value)
        answer(.success(value))
    }

    func error(code: String, message: String?, details: Any?) {
        harness?.checkError(code, message, details)
        answer(.failure(Failure(code: code, message: message, details: details)))
    }

    func notImplemented() {
        answer(.notImplemented)
    }

    func outcome(file: StaticString = #filePath, line: UInt = #line) async throws -> Outcome {
        try await eventually("\(method) answered", file: file, line: line) { self.isAnswered }
        return recorded()[0]
    }
}

/// The event channels, registered by name as the adapter registers FlutterEventChannels.
final class FakeEventChannels: EventChannels, @unchecked Sendable {
    fileprivate weak var harness: FlutterHarness?
    private let handlers = Locked<[String: StreamHandler]>([:])
    let opened = Locked<[String]>([])
    let closed = Locked<[String]>([])

    func open(name: String, handler: StreamHandler) {
        checkMain("open(\(name))")
        let previous = handlers.update { $0.updateValue(handler, forKey: name) }
        if previous != nil { harness?.violation("\(name) opened twice") }
        opened.update { $0.append(name) }
    }

    func close(name: String) {
        checkMain("close(\(name))")
        if handlers.update({ $0.removeValue(forKey: name) }) == nil { harness?.violation("\(name) closed but not open") }
        closed.update { $0.append(name) }
    }

    private func checkMain(_ what: String) {
        if let harness, !harness.isMain { harness.violation("\(what) on \(currentThreadName())") }
    }

    func handler(_ name: String) -> StreamHandler? { handlers()[name] }
    func isOpen(_ name: String) -> Bool { handler(name) != nil }
    var openNames: [String] { handlers().keys.sorted() }
}

/// Dart's end of one event channel subscription.
final class DartStream: @unchecked Sendable {
    let name: String
    /// Weak: the engine may send after the test (and its harness) ended.
    private weak var harness: FlutterHarness?
    private let items = Locked<[Item]>([])
    private let state = Locked<(cancelled: Bool, done: Bool)>((false, false))
    private let listenedIn: Int
    private var cursor = 0
    private(set) lazy var sink: EventSink = StreamSink(self)

    init(_ name: String, _ harness: FlutterHarness) {
        self.name = name
        self.harness = harness
        listenedIn = harness.isolate()
    }

    var received: [Item] { items() }

    fileprivate func receive(_ item: Item) {
        guard let harness else { return }
        harness.delivered("\(item) on \(name)")
        let (cancelled, done) = state()
        if cancelled { harness.violation("\(item) on \(name) after it was cancelled") }
        if done { harness.violation("\(item) on \(name) after endOfStream") }
        switch item {
        case .event(let event):
            let map = event as? [String: Any]
            if name.hasPrefix(roomChannelPrefix) {
                let type = map?["type"].asString ?? "(no type)"
                harness.checkShape("roomEvents.\(type)", Vectors.roomEvent(type), event)
            } else {
                let which = map?["entry"].isNull ?? true ? "absent" : "present"
                harness.checkShape("keyEvents.\(which)", Vectors.keyEvent(which), event)
            }
        case .failure(let failure):
            harness.checkError(failure.code, failure.message, failure.details)
        case .done:
            state.update { $0.done = true }
            // Dart's broadcast stream closes and cancels its subscription: 'cancel' arrives next.
            harness.main.post { self.cancelOnMain() }
        }
        items.update { $0.append(item) }
    }

    private func cancelOnMain() {
        guard let harness, harness.isolate() == listenedIn else { return }
        let already = state.update { state -> Bool in
            defer { state.cancelled = true }
            return state.cancelled
        }
        if already { return }
        guard let handler = harness.channels.handler(name) else {
            return harness.violation("cancel on \(name), which has no handler: Dart reports MissingPluginException")
        }
        handler.onCancel(arguments: nil)
    }

    /// Cancels the subscription (removeKeyChangeListener, or a Dart subscription's cancel()).
    func cancel() {
        harness?.onMain { cancelOnMain() }
    }

    func next(file: StaticString = #filePath, line: UInt = #line) async throws -> Item {
        let wanted = cursor
        try await eventually("something more on \(name) after \(items())", seconds: 15, file: file, line: line) {
            self.items().count > wanted
        }
        cursor += 1
        return items()[wanted]
    }

    func nextEvent(file: StaticString = #filePath, line: UInt = #line) async throws -> [String: Any] {
        let item = try await next(file: file, line: line)
        guard case .event(let value) = item, let map = value as? [String: Any] else {
            XCTFail("expected an event on \(name), got \(item)", file: file, line: line)
            throw ConditionNotMet(description: "not an event")
        }
        return map
    }

    /// Skips events until one matches; fails on an error or the end.
    func awaitEvent(_ what: String, file: StaticString = #filePath, line: UInt = #line, _ matches: ([String: Any]) -> Bool) async throws -> [String: Any] {
        while true {
            let event = try await nextEvent(file: file, line: line)
            if matches(event) { return event }
        }
    }

    func awaitDone(file: StaticString = #filePath, line: UInt = #line) async throws {
        while try await !next(file: file, line: line).isDone {}
    }

    /// Nothing more arrives within `ms`.
    func assertQuiet(ms: UInt64 = 300, file: StaticString = #filePath, line: UInt = #line) async throws {
        try await sleep(ms: ms)
        harness?.flush()
        XCTAssertEqual(items().count, cursor, "nothing more on \(name): \(items().dropFirst(cursor))", file: file, line: line)
    }
}

private final class StreamSink: EventSink, @unchecked Sendable {
    private let stream: DartStream

    init(_ stream: DartStream) {
        self.stream = stream
    }

    func success(_ event: Any?) { stream.receive(.event(event)) }
    func error(code: String, message: String?, details: Any?) { stream.receive(.failure(Failure(code: code, message: message, details: details))) }
    func endOfStream() { stream.receive(.done) }
}

/// A real server, the handler in a FlutterHarness, and other participants; checked after each test.
class ChannelTestCase: XCTestCase, @unchecked Sendable {
    private(set) var server: TestServer!
    private(set) var flutter: FlutterHarness!
    private let peers = Locked<[Peer]>([])

    /// More arguments for `roomstate serve`.
    var serverArguments: [String] { [] }

    override func setUp() async throws {
        server = try TestServer(serverArguments)
        flutter = FlutterHarness()
    }

    override func tearDown() async throws {
        if let flutter { try? await flutter.close() }
        for peer in peers.update({ peers in defer { peers.removeAll() }; return peers }) {
            await peer.leave()
        }
        server?.stop()
        flutter = nil
        server = nil
    }

    func peer(_ identity: String) async throws -> Peer {
        let peer = try await Peer.join(server, identity)
        peers.update { $0.append(peer) }
        return peer
    }
}
