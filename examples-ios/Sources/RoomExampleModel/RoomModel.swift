// The example app's logic: joins a room and turns what the engine reports into one
// RoomUIState. No UI imports: the SwiftUI app keeps one in @State, the terminal example
// and the tests drive it directly.
import Foundation
import Observation
import RoomState

/// A room as the screens see it: `state`, and actions that never throw (a failure becomes
/// `RoomUIState.notice`).
///
/// Session store keys: "pinned" (`Pinned`) and "spotlight" (`Spotlight`), observed with the
/// package's `changes(forKey:)` streams (the current value first, then every change).
/// Participant attribute: "hand" = "raised". Participants come from the room listener.
///
/// While the engine reconnects, only the banner changes: the pinned message, the spotlight
/// and the participants stay as last known.
@Observable
@MainActor
public final class RoomModel {
    /// What the screens show, replaced as a whole. `stateChanges()` yields every one.
    public private(set) var state = RoomUIState()

    @ObservationIgnored private let options: RoomConnectOptions
    @ObservationIgnored private var session: Session?
    @ObservationIgnored private let watchers = StateWatchers()

    /// How many "spotlight" values the store's stream delivered, and what to skip of it; see
    /// `showSpotlightReply`.
    @ObservationIgnored private var spotlightUpdates = 0
    @ObservationIgnored private var spotlightSkip: SpotlightSkip?

    /// `options`: the engine's (timeouts, pings, reconnect backoff); the defaults suit an app.
    public init(options: RoomConnectOptions = RoomConnectOptions()) {
        self.options = options
    }

    /// Every state from now on, the current one first: for code that is not a SwiftUI view
    /// (the terminal example, tests). The stream ends when its consumer stops.
    public func stateChanges() -> AsyncStream<RoomUIState> {
        watchers.add(first: state)
    }

    // MARK: Actions

    /// Joins the room the token grants (`url` like `ws://127.0.0.1:7880`). Returns once the
    /// room screen can show the room (connected, the pinned message and the spotlight known),
    /// or once joining failed (`state.connection` is then `.disconnected` and `notice` says why).
    /// Leaves the room joined before, if any.
    public func connect(url: String, token: String) async {
        let previous = session
        let (events, sink) = AsyncStream.makeStream(of: RoomEvent.self)
        let joining = Session(sink: sink)
        session = joining
        spotlightUpdates = 0
        spotlightSkip = nil
        show(RoomUIState(connection: .connecting))
        if let previous { await previous.leave() }
        // One consumer, on the main actor, in the order the engine called the listener.
        joining.tasks.append(Task { [weak self] in
            for await event in events {
                self?.handle(event, from: joining)
            }
        })
        let room: RoomConnection
        do {
            room = try await RoomConnection.connect(
                url: url.trimmingCharacters(in: .whitespacesAndNewlines),
                token: token.trimmingCharacters(in: .whitespacesAndNewlines),
                listener: RoomEventListener(sink),
                options: options
            )
        } catch {
            guard !joining.left else { return } // disconnect() or another connect() came first
            if session === joining { session = nil }
            joining.finish()
            show(RoomUIState(connection: .disconnected(reason: Self.describe(error)), notice: "Could not join: \(Self.describe(error))"))
            return
        }
        guard session === joining else { // left, or the room ended already (the state says why)
            await room.disconnect()
            return
        }
        joining.room = room
        let local = room.localParticipant().info()
        update {
            $0.localIdentity = local?.identity
            $0.participants = Self.sorted(room.remoteParticipants().map(Self.row) + [local].compactMap { $0.map(Self.row) })
        }
        let store = room.sessionStore()
        observe(.pinned, of: store, for: joining)
        observe(.spotlight, of: store, for: joining)
        await joining.untilShown()
    }

    /// Pins `text` for everyone (a session store write; everyone's stream shows it).
    public func pin(_ text: String) async {
        let text = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else {
            notice("Type a message to pin")
            return
        }
        await act("Pinning") { _, room in
            let by = self.state.localIdentity ?? ""
            try await room.sessionStore().set(Pinned(text: text, by: by), forKey: StoreKey.pinned.rawValue)
        }
    }

    /// Clears the pinned message for everyone.
    public func unpin() async {
        await act("Unpinning") { _, room in
            try await room.sessionStore().delete(key: StoreKey.pinned.rawValue)
        }
    }

    /// Takes the spotlight, from nobody or from whoever this state shows holding it: a
    /// compare-and-set at the version last seen (0 when absent). When two people claim at
    /// once, exactly one wins; the other gets `RoomError.Conflict` with the entry as it is
    /// now, shows it, and is told who was first.
    public func claimSpotlight() async {
        await act("Claiming the spotlight") { _, room in
            let state = self.state
            guard !state.hasSpotlight, let me = state.localIdentity else { return }
            let seen = self.spotlightUpdates
            do {
                let version = try await room.sessionStore().compareAndSet(
                    Spotlight(identity: me), forKey: StoreKey.spotlight.rawValue, expectedVersion: state.spotlightVersion
                )
                self.showSpotlightReply(holder: me, version: version, seenBefore: seen)
            } catch RoomError.Conflict(let current) {
                self.showSpotlightReply(holder: current.map(Self.holder), version: current?.version ?? 0, seenBefore: seen)
                if let winner = current.map(Self.holder) {
                    self.notice("\(winner) took the spotlight first")
                } else {
                    self.notice("The spotlight changed meanwhile: try again")
                }
            }
        }
    }

    /// Gives the spotlight back (a compare-and-set to nothing), if this participant has it.
    public func releaseSpotlight() async {
        await act("Releasing the spotlight") { _, room in
            let state = self.state
            guard state.hasSpotlight else {
                self.notice("You don't have the spotlight")
                return
            }
            let seen = self.spotlightUpdates
            do {
                let version = try await room.sessionStore().compareAndSet(
                    key: StoreKey.spotlight.rawValue, expectedVersion: state.spotlightVersion, valueJson: nil
                )
                self.showSpotlightReply(holder: nil, version: version, seenBefore: seen)
            } catch RoomError.Conflict(let current) {
                self.showSpotlightReply(holder: current.map(Self.holder), version: current?.version ?? 0, seenBefore: seen)
                if let holder = current.map(Self.holder) { self.notice("\(holder) has the spotlight now") }
            }
        }
    }

    /// Raises or lowers this participant's hand: the participant attribute "hand" ("" deletes
    /// it). Everyone's list shows it, this one's too, from the listener's attribute change.
    public func raiseHand(_ raised: Bool) async {
        await act(raised ? "Raising your hand" : "Lowering your hand") { _, room in
            _ = try await room.localParticipant().setAttributes(attributes: [handAttribute: raised ? handRaised : ""])
        }
    }

    /// Call when the OS reports a network change (iOS: NWPathMonitor) and when the app
    /// returns to the foreground: the old socket may be dead without anyone knowing yet, and
    /// this resumes at once instead of after the ping timeout. Cheap when the link was fine
    /// (the banner shows Reconnecting for a moment; nothing else changes).
    public func networkChanged() {
        session?.room?.reconnectNow()
    }

    /// Leaves the room (the others see this participant leave at once) and shows the
    /// connect screen.
    public func disconnect() async {
        let leaving = session
        session = nil
        show(RoomUIState())
        await leaving?.leave()
    }

    /// Clears the notice once the user saw it.
    public func dismissNotice() {
        update { $0.notice = nil }
    }

    // MARK: What the engine reports

    private func handle(_ event: RoomEvent, from source: Session) {
        guard session === source else { return } // a room left since
        switch event {
        case .connection(.disconnected(let reason)):
            session = nil
            source.finish()
            show(RoomUIState(connection: .disconnected(reason: Self.describe(reason))))
        case .connection(let connection):
            source.engineState = connection
            if source.shown {
                // Only the banner changes: the room's last known state stays shown.
                update { $0.connection = Self.status(connection) }
            } else {
                showIfReady(source)
            }
        case .joined(let participant), .changed(let participant):
            update { state in
                state.participants.removeAll { $0.identity == participant.identity }
                state.participants = Self.sorted(state.participants + [Self.row(participant)])
            }
        case .left(let participant):
            update { $0.participants.removeAll { $0.sid == participant.sid } }
        case .storeAvailable:
            // After the first: joined anew (away longer than the server's grace period, or a
            // new session). The streams go on and hear what changed; versions may restart.
            source.storeAnnouncements += 1
            if source.storeAnnouncements > 1 { spotlightSkip = nil }
        }
    }

    private func observe(_ key: StoreKey, of store: SessionStore, for source: Session) {
        source.tasks.append(Task { [weak self] in
            do {
                for try await entry in store.changes(forKey: key.rawValue) {
                    guard let self, self.session === source else { return }
                    switch key {
                    case .pinned: self.update { $0.pinned = try? entry?.decode(Pinned.self) }
                    case .spotlight: self.showSpotlightFromStore(entry)
                    }
                    source.unseen.remove(key)
                    self.showIfReady(source)
                }
            } catch is RoomEndedError {
                // The room listener reports the end, with its reason.
            } catch {
                guard let self, self.session === source else { return }
                self.notice("Stopped following \(key.rawValue): \(Self.describe(error))")
                source.unseen.remove(key)
                self.showIfReady(source)
            }
        })
    }

    /// Shows the room once it is connected and both keys' first values are in: the room screen
    /// never shows a frame without the pinned message or spotlight it has.
    private func showIfReady(_ source: Session) {
        guard !source.shown, source.room != nil, source.unseen.isEmpty, source.engineState != .connecting else { return }
        source.shown = true
        update { $0.connection = Self.status(source.engineState) }
        source.resumeWaiters()
    }

    private func showSpotlightFromStore(_ entry: StoreEntry?) {
        spotlightUpdates += 1
        switch spotlightSkip {
        case .olderThan(let version)?:
            guard let entry, entry.version >= version else { return }
        case .untilDeletion?:
            guard entry == nil else { return }
        case nil:
            break
        }
        spotlightSkip = nil
        update {
            $0.spotlightHolder = entry.map(Self.holder)
            $0.spotlightVersion = entry?.version ?? 0
        }
    }

    /// Shows the spotlight a reply reported (a write's new version, or a Conflict's current
    /// entry) at once, unless the store's stream delivered something since the call was made
    /// (it is then at least as new, and goes on in order). The stream still has the changes
    /// up to that reply queued (the engine applies them before the reply); those older ones
    /// are skipped, so the spotlight never goes back to an older holder for a moment.
    private func showSpotlightReply(holder: String?, version: UInt64, seenBefore: Int) {
        guard spotlightUpdates == seenBefore else { return }
        let shown = state.spotlightHolder == nil ? nil : state.spotlightVersion
        let reported = holder == nil ? nil : version
        guard shown != reported else { return }
        spotlightSkip = holder == nil ? .untilDeletion : .olderThan(version)
        update {
            $0.spotlightHolder = holder
            $0.spotlightVersion = holder == nil ? 0 : version
        }
    }

    // MARK: Helpers

    /// Runs `body` on the room shown; whatever fails becomes a notice.
    private func act(_ what: String, _ body: @MainActor (Session, RoomConnection) async throws -> Void) async {
        guard let current = session, current.shown, let room = current.room else {
            notice("\(what) failed: not in a room")
            return
        }
        do {
            try await body(current, room)
        } catch {
            notice("\(what) failed: \(Self.describe(error))")
        }
    }

    private func notice(_ text: String) {
        update { $0.notice = text }
    }

    private func update(_ change: (inout RoomUIState) -> Void) {
        var next = state
        change(&next)
        show(next)
    }

    private func show(_ next: RoomUIState) {
        guard next != state else { return }
        state = next
        watchers.yield(next)
    }

    private static func row(_ participant: RoomParticipant) -> ParticipantUI {
        ParticipantUI(
            identity: participant.identity,
            name: participant.name.isEmpty ? participant.identity : participant.name,
            handRaised: participant.attributes[handAttribute] == handRaised,
            isLocal: participant.isLocal,
            sid: participant.sid
        )
    }

    private static func sorted(_ rows: [ParticipantUI]) -> [ParticipantUI] {
        rows.sorted { $0.identity < $1.identity }
    }

    /// The identity in a "spotlight" entry (its writer's, if the value is not a `Spotlight`).
    private static func holder(_ entry: StoreEntry) -> String {
        (try? entry.decode(Spotlight.self))?.identity ?? entry.updatedBy
    }

    private static func status(_ connection: RoomConnectionState) -> ConnectionStatus {
        switch connection {
        case .connecting: .connecting
        case .connected: .connected
        case .reconnecting: .reconnecting
        case .disconnected(let reason): .disconnected(reason: describe(reason))
        }
    }

    static func describe(_ reason: RoomDisconnectReason) -> String {
        switch reason {
        case .clientRequested: "you left the room"
        case .duplicateIdentity: "you joined from another device"
        case .removed: "you were removed from the room"
        case .sessionEnded: "the session ended"
        case .tokenRefused(let detail): "the token was refused (\(detail))"
        }
    }

    static func describe(_ error: any Error) -> String {
        guard let error = error as? RoomError else { return String(describing: error) }
        return switch error {
        case .InvalidToken(let code, let detail): "the token was refused (\(code): \(detail))"
        case .Connect(let detail): "could not reach the server (\(detail))"
        case .NotAllowed(let detail): "not allowed (\(detail))"
        case .NotConnected: "not connected"
        case .Timeout(let sent): sent ? "no answer from the server (it may have been applied)" : "not sent: the connection is not back"
        case .ConnectionLost: "the connection was lost (it may have been applied)"
        case .LimitExceeded(let limit, let max, let actual, _): "too large (\(limit): \(actual) > \(max))"
        case .InvalidValue(let detail): "invalid (\(detail))"
        case .Unavailable: "the server is busy, try again"
        case .OutcomeUnknown: "the server stopped answering (it may have been applied)"
        case .Conflict: "changed meanwhile, try again"
        case .Internal(let detail): "internal error (\(detail))"
        }
    }
}

private enum StoreKey: String {
    case pinned
    case spotlight
}

private let handAttribute = "hand"
private let handRaised = "raised"

/// What to skip of the "spotlight" stream after a reply showed a newer value.
private enum SpotlightSkip {
    /// Entries older than this version (and deletions before it).
    case olderThan(UInt64)
    /// Everything until the deletion the reply reported.
    case untilDeletion
}

/// One joined (or joining) room and what observes it. Main actor only.
@MainActor
private final class Session {
    let sink: AsyncStream<RoomEvent>.Continuation
    var room: RoomConnection?
    var tasks: [Task<Void, Never>] = []
    /// The engine's connection state, from the listener.
    var engineState: RoomConnectionState = .connecting
    /// Keys whose first value has not arrived yet.
    var unseen: Set<StoreKey> = [.pinned, .spotlight]
    var storeAnnouncements = 0
    /// Whether the state shows this room (connect() has returned).
    var shown = false
    /// Left by the app (disconnect(), or connect() to another room).
    var left = false
    private var finished = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(sink: AsyncStream<RoomEvent>.Continuation) {
        self.sink = sink
    }

    func untilShown() async {
        guard !shown, !finished else { return }
        await withCheckedContinuation { waiters.append($0) }
    }

    func resumeWaiters() {
        let waiting = waiters
        waiters = []
        waiting.forEach { $0.resume() }
    }

    /// Stops observing; the room, if any, is left to end (or has ended).
    func finish() {
        finished = true
        tasks.forEach { $0.cancel() }
        sink.finish()
        resumeWaiters()
    }

    func leave() async {
        left = true
        finish()
        await room?.disconnect()
    }
}

/// What the room listener heard, in the engine's order.
private enum RoomEvent: Sendable {
    case connection(RoomConnectionState)
    case joined(RoomParticipant)
    case changed(RoomParticipant)
    case left(RoomParticipant)
    case storeAvailable
}

/// Called on the room's listener thread: passes each call on, in order, to the main actor.
private final class RoomEventListener: DefaultRoomListener, @unchecked Sendable {
    private let sink: AsyncStream<RoomEvent>.Continuation

    init(_ sink: AsyncStream<RoomEvent>.Continuation) {
        self.sink = sink
    }

    override func onSessionStoreAvailable(store: SessionStore) throws { sink.yield(.storeAvailable) }
    override func onConnectionStateChanged(state: RoomConnectionState) throws { sink.yield(.connection(state)) }
    override func onParticipantJoined(participant: RoomParticipant) throws { sink.yield(.joined(participant)) }
    override func onParticipantLeft(participant: RoomParticipant) throws { sink.yield(.left(participant)) }
    override func onAttributesChanged(participant: RoomParticipant, changedKeys: [String]) throws {
        sink.yield(.changed(participant))
    }
    override func onNameChanged(participant: RoomParticipant, oldName: String, newName: String) throws {
        sink.yield(.changed(participant))
    }
}

/// The consumers of `stateChanges()`.
private final class StateWatchers: @unchecked Sendable {
    private let lock = NSLock()
    private var next = 0
    private var continuations: [Int: AsyncStream<RoomUIState>.Continuation] = [:]

    func add(first: RoomUIState) -> AsyncStream<RoomUIState> {
        let (stream, continuation) = AsyncStream.makeStream(of: RoomUIState.self)
        lock.lock()
        let id = next
        next += 1
        continuations[id] = continuation
        lock.unlock()
        continuation.onTermination = { [weak self] _ in self?.remove(id) }
        continuation.yield(first)
        return stream
    }

    func yield(_ state: RoomUIState) {
        lock.lock()
        let all = Array(continuations.values)
        lock.unlock()
        all.forEach { $0.yield(state) }
    }

    private func remove(_ id: Int) {
        lock.lock()
        continuations[id] = nil
        lock.unlock()
    }
}
