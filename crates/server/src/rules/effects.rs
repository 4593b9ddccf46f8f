//! What applying an entry asks of the node that applied it: the rules decide, the room
//! around them (`crate::room`) carries it out.

use std::sync::Arc;

use roomstate_protocol::{
    CloseReason, Entry, ErrorBody, ErrorCode, Millis, ParticipantInfo, ServerMessage,
};
use serde::{Deserialize, Serialize};

pub use crate::websocket::Frame;

/// A server message as the frame every recipient gets.
pub fn frame(message: &ServerMessage) -> Frame {
    Frame::json(message)
}

/// A room as the server API lists it (and webhooks describe it).
#[derive(Debug, Clone, PartialEq)]
pub struct RoomSummary {
    pub name: String,
    pub session_id: String,
    pub started_at: Millis,
    pub metadata: String,
    pub participants: usize,
}

/// Effects in the order they must be carried out: a connection closed before an event
/// does not get that event, as the participant it belonged to had left.
pub type Effects = Vec<Effect>;

#[derive(Debug)]
pub enum Effect {
    /// A session event (it has a sequence number and is kept for replay): queue it to
    /// the connections of its audience held by this node.
    Event {
        audience: Audience,
        frame: Frame,
    },
    /// Queue a frame (a reply, a rejection) to participant `sid`'s connection, if this
    /// node holds it.
    Send {
        sid: String,
        frame: Frame,
    },
    /// Close participant `sid`'s connection, if this node holds it.
    Close {
        sid: String,
        reason: CloseReason,
        message: &'static str,
    },
    /// Entry `ticket` admitted participant `sid` as `epoch`: its connection, if it waits
    /// on this node, takes `sid` over and writes `frames` first. Nobody waiting: the
    /// participant gets the reconnect grace period to show up.
    Admitted {
        ticket: u64,
        sid: String,
        epoch: u64,
        frames: Vec<Frame>,
    },
    /// Entry `ticket` did not admit its connection.
    Refused {
        ticket: u64,
        reason: CloseReason,
        message: &'static str,
    },
    /// The outcome of the server API call that appended entry `ticket`.
    Answer {
        ticket: u64,
        outcome: Result<AdminOutcome, AdminError>,
    },
    /// A LiveKit-style webhook.
    Webhook {
        event: &'static str,
        room: RoomSummary,
        participant: Option<ParticipantInfo>,
    },
    /// The room has a session now (or no longer has one): list it in (or drop it from)
    /// the cluster's index of rooms.
    Listed(bool),
    Count(Counter),
}

/// Counters the appending node bumps, once per entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Counter {
    StoreWrite,
    SessionStarted,
    SessionEnded,
    /// A request refused, by error code.
    Error(ErrorCode),
}

/// Who hears about an event. Its strings are shared: an event's audience is kept in
/// the replay log as well as handed to the fan-out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Audience {
    Everyone,
    AllBut(Arc<str>),
    Only(Arc<str>),
    /// The participants observing this key.
    Observers(Arc<str>),
}

impl Audience {
    /// Whether participant `sid`, observing what `observes` says, hears the event.
    pub fn includes(&self, sid: &str, observes: impl FnOnce(&str) -> bool) -> bool {
        match self {
            Audience::Everyone => true,
            Audience::AllBut(excluded) => **excluded != *sid,
            Audience::Only(only) => **only == *sid,
            Audience::Observers(key) => observes(key),
        }
    }
}

/// What a server API change did.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminOutcome {
    Participant(ParticipantInfo),
    Removed,
    Room(RoomSummary),
    Entry(Entry),
}

/// Why a server API operation could not be done.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminError {
    NoSuchRoom(String),
    NoSuchParticipant(String),
    Refused(ErrorBody),
    /// Nothing was changed: the room's shared state could not be reached.
    Unavailable(String),
    /// The change may or may not have been made: the room's shared state stopped
    /// answering while storing it, or this node did not apply it in time to tell.
    OutcomeUnknown(String),
}
