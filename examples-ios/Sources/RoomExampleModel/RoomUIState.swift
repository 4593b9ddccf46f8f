// What the screens show: one value, replaced as a whole on every change (RoomModel.state).
// No UI imports: the same value drives the SwiftUI screens (App/) and the terminal example.

/// The session store value under "pinned": `{"text": ..., "by": identity}`.
public struct Pinned: Codable, Equatable, Sendable {
    public let text: String
    /// The identity of who pinned it ("" if the writer did not say).
    public let by: String

    public init(text: String, by: String) {
        self.text = text
        self.by = by
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        text = try container.decode(String.self, forKey: .text)
        by = try container.decodeIfPresent(String.self, forKey: .by) ?? ""
    }
}

/// The session store value under "spotlight": `{"identity": ...}`.
public struct Spotlight: Codable, Equatable, Sendable {
    public let identity: String

    public init(identity: String) {
        self.identity = identity
    }
}

/// The connection, as the banner shows it.
public enum ConnectionStatus: Equatable, Sendable {
    /// Not in a room, nothing to report: the connect screen.
    case idle
    /// Joining the room (the connect screen, with a banner).
    case connecting
    case connected
    /// The link dropped and the engine is resuming: the room's last known state stays shown.
    case reconnecting
    /// The room ended or could not be joined; `reason` says why (the connect screen again).
    case disconnected(reason: String)
}

/// One row of the participant list: a remote participant, or this one (`isLocal`).
public struct ParticipantUI: Equatable, Sendable, Identifiable {
    public let identity: String
    /// The display name (the identity when the token gave none).
    public let name: String
    public let handRaised: Bool
    public let isLocal: Bool
    /// The engine's id of this participant's current connection to the room.
    public let sid: String

    public var id: String { identity }

    public init(identity: String, name: String, handRaised: Bool, isLocal: Bool, sid: String) {
        self.identity = identity
        self.name = name
        self.handRaised = handRaised
        self.isLocal = isLocal
        self.sid = sid
    }
}

/// Everything the screens show. Only RoomModel makes new ones; views read them.
public struct RoomUIState: Equatable, Sendable {
    public internal(set) var connection: ConnectionStatus = .idle
    /// This participant's identity (from the token); nil when not in a room.
    public internal(set) var localIdentity: String?
    /// The pinned message; nil: nothing pinned.
    public internal(set) var pinned: Pinned?
    /// Who has the spotlight; nil: nobody.
    public internal(set) var spotlightHolder: String?
    /// The version of the "spotlight" entry this state shows; 0: absent.
    public internal(set) var spotlightVersion: UInt64 = 0
    /// Everyone in the room, this participant included, sorted by identity.
    public internal(set) var participants: [ParticipantUI] = []
    /// Something to tell the user once (a lost race, a failed call); nil: nothing.
    public internal(set) var notice: String?

    public init() {}

    init(connection: ConnectionStatus, notice: String? = nil) {
        self.connection = connection
        self.notice = notice
    }

    /// Whether the room screen is shown (also while reconnecting).
    public var inRoom: Bool { connection == .connected || connection == .reconnecting }

    /// The banner's text; nil: no banner.
    public var banner: String? {
        switch connection {
        case .idle, .connected: nil
        case .connecting: "Connecting…"
        case .reconnecting: "Reconnecting…"
        case .disconnected(let reason): "Disconnected: \(reason)"
        }
    }

    /// Whether this participant has the spotlight.
    public var hasSpotlight: Bool { spotlightHolder != nil && spotlightHolder == localIdentity }

    /// Whether this participant's hand is raised.
    public var handRaised: Bool { participants.contains { $0.isLocal && $0.handRaised } }
}
