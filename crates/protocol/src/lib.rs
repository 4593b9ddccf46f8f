//! The roomstate wire protocol, version 1: every message the engine and the server
//! exchange, defined once for both. `docs/protocol.md` is the prose version of this file.
//!
//! Frames are JSON text; every frame is one object whose `"type"` names the message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod limits;
mod token;

pub use limits::{Limit, Limits};
pub use token::{Claims, RoomStateGrant, VideoGrant};

/// Bumped on any change an older peer could misread.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket path of the room endpoint.
pub const RTC_PATH: &str = "/rtc";

/// The most requests a client may have sent and not yet had answered. The server keeps
/// at least this many replies per participant, so that a resuming client gets every
/// reply it missed.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 128;

/// The key that observes every key of the store.
pub const WILDCARD_KEY: &str = "*";

/// Position in a session's room-wide sequence of changes. Starts at 1 for the first
/// change of a session; 0 means "before anything happened".
pub type Seq = u64;

/// Chosen by the client, strictly increasing over the life of one participant
/// (across resumes).
pub type RequestId = u64;

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

// ---------------------------------------------------------------------------------------
// Client to server
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Writes `value` under `key`. A `null` value deletes the key. With `if_version`,
    /// only when the key's current version equals it (0: the key must not exist).
    Set {
        id: RequestId,
        key: String,
        value: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_version: Option<u64>,
    },
    Delete {
        id: RequestId,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_version: Option<u64>,
    },
    /// Reads keys once, without observing them.
    Get {
        id: RequestId,
        keys: Vec<String>,
    },
    /// Adds keys to this participant's observed set; answered with their current entries.
    Observe {
        id: RequestId,
        keys: Vec<String>,
    },
    Unobserve {
        id: RequestId,
        keys: Vec<String>,
    },
    /// Changes the sender's own participant. Absent fields are left as they are;
    /// `attributes` merges, and an empty string value deletes that attribute.
    UpdateParticipant {
        id: RequestId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attributes: Option<BTreeMap<String, String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Leaves the room now instead of after the reconnect grace period.
    Leave {},
}

impl ClientMessage {
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            ClientMessage::Set { id, .. }
            | ClientMessage::Delete { id, .. }
            | ClientMessage::Get { id, .. }
            | ClientMessage::Observe { id, .. }
            | ClientMessage::Unobserve { id, .. }
            | ClientMessage::UpdateParticipant { id, .. } => Some(*id),
            ClientMessage::Leave {} => None,
        }
    }

    /// Sets the request id; clients number requests when they send them, so that ids
    /// rise in the order the server receives them.
    pub fn set_request_id(&mut self, request_id: RequestId) {
        match self {
            ClientMessage::Set { id, .. }
            | ClientMessage::Delete { id, .. }
            | ClientMessage::Get { id, .. }
            | ClientMessage::Observe { id, .. }
            | ClientMessage::Unobserve { id, .. }
            | ClientMessage::UpdateParticipant { id, .. } => *id = request_id,
            ClientMessage::Leave {} => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server to client
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First frame after a fresh join.
    Joined(JoinInfo),
    /// First frame after a successful resume; replayed frames follow when
    /// `snapshot` is absent.
    Resumed(ResumeInfo),
    /// The answer to one request.
    Reply(Reply),
    /// A key's new entry (no `value`: deleted). Its `version` is its sequence number.
    StoreChanged(Entry),
    ParticipantJoined {
        seq: Seq,
        participant: ParticipantInfo,
    },
    /// The participant's whole new state; receivers drop versions older than theirs.
    ParticipantUpdated {
        seq: Seq,
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        seq: Seq,
        sid: String,
        identity: String,
    },
    RoomMetadataChanged {
        seq: Seq,
        metadata: String,
    },
    /// A frame the server could not use (not JSON, unknown type, missing fields, a
    /// request id not above the last). Nothing changed, the connection stays open, and
    /// the request gets no `reply`.
    Rejected {
        /// The frame's `id`, when it had a readable one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        error: ErrorBody,
    },
    /// Sent just before the server closes the connection, saying why.
    Goodbye {
        reason: CloseReason,
        message: String,
    },
}

impl ServerMessage {
    /// Why `text`, which does not parse as a message, does not: read as far as its
    /// `type` and `id` allow. A newer server's frames are the expected cause.
    pub fn unreadable(text: &str) -> Unreadable {
        #[derive(Deserialize)]
        struct Tagged {
            #[serde(rename = "type")]
            kind: String,
            // Any JSON: a newer message may have an `id` that is not a request's.
            id: Option<serde_json::Value>,
        }
        let Ok(Tagged { kind, id }) = serde_json::from_str(text) else {
            return Unreadable::Broken;
        };
        let known = serde_json::from_value::<KnownType>(serde_json::Value::String(kind.clone()));
        let id = id.and_then(|id| serde_json::from_value::<RequestId>(id).ok());
        match (known, id) {
            (Ok(KnownType::Reply), Some(id)) => Unreadable::Reply(id),
            (Ok(_), _) => Unreadable::Broken,
            (Err(_), _) => Unreadable::UnknownType(kind),
        }
    }

    /// The sequence number of an event message; `None` for the others.
    pub fn seq(&self) -> Option<Seq> {
        match self {
            ServerMessage::StoreChanged(entry) => Some(entry.version),
            ServerMessage::ParticipantJoined { seq, .. }
            | ServerMessage::ParticipantUpdated { seq, .. }
            | ServerMessage::ParticipantLeft { seq, .. }
            | ServerMessage::RoomMetadataChanged { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// What can be read of a frame that does not parse as a [`ServerMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// A reply, to this request, with an error code or a body this side does not know
    /// yet.
    Reply(RequestId),
    /// A message of a type this side does not know.
    UnknownType(String),
    /// Not JSON, no `type`, or a known type that does not parse: a broken frame, not a
    /// newer one.
    Broken,
}

/// The `type` of every [`ServerMessage`] (a test holds the two together).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum KnownType {
    Joined,
    Resumed,
    Reply,
    StoreChanged,
    ParticipantJoined,
    ParticipantUpdated,
    ParticipantLeft,
    RoomMetadataChanged,
    Rejected,
    Goodbye,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JoinInfo {
    pub protocol: u32,
    pub room: String,
    pub session_id: String,
    /// The server's position when this snapshot was taken.
    pub seq: Seq,
    /// Present this token (with the access token) to resume this participant.
    pub resume_token: String,
    pub local: ParticipantInfo,
    /// Everyone else in the room, hidden participants excepted.
    pub participants: Vec<ParticipantInfo>,
    pub room_metadata: String,
    pub limits: Limits,
    /// How long the server keeps a participant whose connection dropped.
    pub reconnect_grace_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResumeInfo {
    pub session_id: String,
    /// The highest request id the server has processed for this participant. The
    /// client sends again every request above it that it had sent.
    pub last_request_id: RequestId,
    /// Present when the missed events could not be replayed one by one: the state now.
    /// Replies the client missed are replayed either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Snapshot {
    pub seq: Seq,
    pub local: ParticipantInfo,
    pub participants: Vec<ParticipantInfo>,
    pub room_metadata: String,
    /// The current entries of every observed key (absent keys have no `value`).
    pub entries: Vec<Entry>,
}

/// One key of the session store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Entry {
    pub key: String,
    /// Absent: the key does not exist (never set, or deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The sequence number of the change that wrote this entry; 0 for a key that does
    /// not exist and was not deleted in this session.
    pub version: u64,
    /// Identity of the writer ("" when nobody wrote it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub updated_by: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub updated_at: Millis,
}

impl Entry {
    pub fn absent(key: impl Into<String>) -> Self {
        Entry {
            key: key.into(),
            value: None,
            version: 0,
            updated_by: String::new(),
            updated_at: 0,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ParticipantInfo {
    pub sid: String,
    pub identity: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub metadata: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Grows with every change of this participant; receivers drop older versions.
    pub version: u64,
    pub joined_at: Millis,
    pub permission: ParticipantPermission,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ParticipantPermission {
    pub can_update_metadata: bool,
    pub can_write_store: bool,
    pub hidden: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Reply {
    pub id: RequestId,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Set on a read the node answered from its own copy because the room's shared
    /// state (Redis) was unreachable: the entries may be out of date.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(ReplyBody),
    Error(ErrorBody),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReplyBody {
    /// set, delete: the key's entry after the write.
    Entry(Entry),
    /// get, observe: one entry per requested key (or every key, for the wildcard).
    Entries(Vec<Entry>),
    /// update_participant: the sender's participant after the update.
    Participant(ParticipantInfo),
    /// unobserve.
    Done,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// For `limit_exceeded`: which limit, its value and the size that broke it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitViolation>,
    /// For `conflict`: the key's entry now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Box<Entry>>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            limit: None,
            current: None,
        }
    }

    pub fn limit(limit: Limit, max: usize, actual: usize) -> Self {
        ErrorBody {
            code: ErrorCode::LimitExceeded,
            message: format!("{} is {actual}, the limit is {max}", limit.describe()),
            limit: Some(LimitViolation { limit, max, actual }),
            current: None,
        }
    }

    /// `Ok` while `actual` is within `max`; else `limit_exceeded` on `limit`.
    pub fn within(limit: Limit, max: usize, actual: usize) -> Result<(), Self> {
        if actual > max {
            return Err(Self::limit(limit, max, actual));
        }
        Ok(())
    }

    pub fn conflict(current: Entry, expected: u64) -> Self {
        ErrorBody {
            code: ErrorCode::Conflict,
            message: format!(
                "key {:?} is at version {}, not {expected}",
                current.key, current.version
            ),
            limit: None,
            current: Some(Box::new(current)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LimitViolation {
    pub limit: Limit,
    pub max: usize,
    pub actual: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed: bad key, bad JSON, unknown message, bad request id.
    InvalidRequest,
    /// The token does not allow this.
    NotAllowed,
    LimitExceeded,
    /// `if_version` did not match.
    Conflict,
    /// The node cannot reach the room's shared state (Redis): nothing was changed;
    /// retry later, or on another node.
    Unavailable,
    /// Redis stopped answering while storing the change: it may or may not have been
    /// stored. If it was, its event reaches every observer as usual. Read the key (or
    /// write with `if_version`) before repeating a change that must not happen twice.
    OutcomeUnknown,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::OutcomeUnknown => "outcome_unknown",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Why the server ends a connection. `retry()` says whether the client should
/// reconnect (and resume) or give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The client did not read fast enough; its outbound queue filled up.
    SlowConsumer,
    /// Another connection joined with the same identity.
    DuplicateIdentity,
    /// Removed by the server API.
    Removed,
    /// No frame arrived within the idle timeout.
    IdleTimeout,
    ServerShutdown,
    /// The client said `leave`.
    Left,
    /// Everyone but hidden participants left, which ends the session (hidden ones get this).
    SessionEnded,
    /// The node cannot reach the room's shared state (Redis), or lost its place in the
    /// room's history: reconnect (to this node or another) and resume.
    Unavailable,
    /// The client sent a frame larger than `limits.frame_bytes` (close code 1009).
    FrameTooLarge,
    /// A resume with an expired access token, for a participant the server no longer
    /// knows: joining anew takes a token that has not expired.
    TokenExpired,
}

impl CloseReason {
    /// The WebSocket close code the server sends with this goodbye.
    pub fn close_code(self) -> u16 {
        match self {
            CloseReason::Left => 1000,
            CloseReason::FrameTooLarge => 1009,
            _ => 4000,
        }
    }
}

impl CloseReason {
    /// Whether a client should reconnect after this.
    pub fn retry(self) -> bool {
        matches!(
            self,
            CloseReason::SlowConsumer
                | CloseReason::IdleTimeout
                | CloseReason::ServerShutdown
                | CloseReason::Unavailable
        )
    }
}

/// Why the HTTP upgrade of `/rtc` was refused (status 400, 401 or 403 with this JSON
/// body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConnectRefusal {
    pub code: ConnectRefusalCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConnectRefusalCode {
    /// No token, unreadable token, unknown API key or wrong signature.
    InvalidToken,
    TokenExpired,
    TokenNotYetValid,
    /// The token does not grant joining this room.
    NotAllowed,
    /// The client speaks a protocol version this server does not.
    UnsupportedProtocol,
    /// A malformed query (e.g. resume parameters).
    BadRequest,
}

/// Query parameters of the `/rtc` upgrade request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConnectParams {
    /// The access token (a `Authorization: Bearer` header works as well).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default)]
    pub protocol: u32,
    /// When set, must equal the token's room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Resume: the participant sid from `joined`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
    /// Resume: the session the client was in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Resume: the highest event sequence number the client has applied.
    #[serde(default)]
    pub last_seq: Seq,
    /// Resume: the highest request id the client has a reply for.
    #[serde(default)]
    pub last_reply_id: RequestId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_types_a_client_knows_are_those_of_server_messages() {
        // serde names every type it knows when it meets one it does not.
        fn named_by_serde(error: serde_json::Error) -> Vec<String> {
            let error = error.to_string();
            let expected = error
                .split("expected one of ")
                .nth(1)
                .unwrap_or_else(|| panic!("serde's message changed: {error}"));
            expected
                .split(", ")
                .map(|name| name.split('`').nth(1).expect("a quoted name").to_string())
                .collect()
        }
        let types =
            named_by_serde(serde_json::from_str::<ServerMessage>(r#"{"type":"?"}"#).unwrap_err());
        assert!(
            types.contains(&"store_changed".to_string()),
            "read as {types:?}"
        );
        let known = named_by_serde(serde_json::from_str::<KnownType>(r#""?""#).err().unwrap());
        assert_eq!(known, types, "KnownType lists the types ServerMessage has");
        for kind in types {
            let frame = format!(r#"{{"type":"{kind}","broken":true}}"#);
            assert_eq!(
                ServerMessage::unreadable(&frame),
                Unreadable::Broken,
                "{kind}"
            );
        }
        assert_eq!(
            ServerMessage::unreadable(r#"{"type":"poll_started","seq":3}"#),
            Unreadable::UnknownType("poll_started".into())
        );
        assert_eq!(
            ServerMessage::unreadable(r#"{"seq":3}"#),
            Unreadable::Broken
        );
        assert_eq!(ServerMessage::unreadable("not json"), Unreadable::Broken);
    }

    #[test]
    fn a_reply_that_does_not_parse_still_says_which_request_it_answers() {
        let newer = r#"{"type":"reply","id":7,"error":{"code":"from_the_future","message":"x"}}"#;
        assert!(serde_json::from_str::<ServerMessage>(newer).is_err());
        assert_eq!(ServerMessage::unreadable(newer), Unreadable::Reply(7));
        let event = r#"{"type":"something_new","seq":3}"#;
        assert!(!matches!(
            ServerMessage::unreadable(event),
            Unreadable::Reply(_)
        ));
        assert!(!matches!(
            ServerMessage::unreadable("not json"),
            Unreadable::Reply(_)
        ));
    }

    #[test]
    fn client_messages_have_the_documented_shape() {
        let set: ClientMessage = serde_json::from_value(json!({
            "type": "set", "id": 3, "key": "pinned", "value": {"text": "hi"}, "if_version": 0
        }))
        .unwrap();
        assert_eq!(
            set,
            ClientMessage::Set {
                id: 3,
                key: "pinned".into(),
                value: json!({"text": "hi"}),
                if_version: Some(0)
            }
        );
        assert_eq!(
            serde_json::to_value(ClientMessage::Leave {}).unwrap(),
            json!({"type": "leave"})
        );
        let unknown = serde_json::from_value::<ClientMessage>(
            json!({"type": "set", "id": 1, "key": "k", "value": 1, "extra": 2}),
        );
        assert!(unknown.is_err(), "unknown fields are refused");
    }

    #[test]
    fn replies_carry_ok_or_error() {
        let reply = ServerMessage::Reply(Reply {
            id: 7,
            outcome: Outcome::Error(ErrorBody::limit(Limit::ValueBytes, 1024, 2000)),
            stale: false,
        });
        let text = serde_json::to_value(&reply).unwrap();
        assert_eq!(text["type"], "reply");
        assert_eq!(text["id"], 7);
        assert_eq!(text["error"]["code"], "limit_exceeded");
        assert_eq!(text["error"]["limit"]["limit"], "value_bytes");
        let back: ServerMessage = serde_json::from_value(text).unwrap();
        assert_eq!(back, reply);

        let ok = ServerMessage::Reply(Reply {
            id: 8,
            outcome: Outcome::Ok(ReplyBody::Entry(Entry::absent("k"))),
            stale: false,
        });
        let text = serde_json::to_string(&ok).unwrap();
        assert_eq!(
            text,
            r#"{"type":"reply","id":8,"ok":{"entry":{"key":"k","version":0}}}"#
        );
        assert_eq!(serde_json::from_str::<ServerMessage>(&text).unwrap(), ok);
    }

    /// A value passes through several decoders and encoders on its way (the writer's
    /// engine, the server, Redis' log, every observer's engine), so a number must read
    /// back as the number it was written as, bit for bit. Integers past 64 bits and
    /// decimals become the nearest double; that double must then stay put.
    #[test]
    fn a_number_is_the_same_after_every_hop() {
        for text in [
            "118446744073709551616",
            "0.1",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "5e-324",
            "-9007199254740993",
            "18446744073709551615",
            "-9223372036854775808",
            "3.141592653589793238462643383279",
            "1e23",
            "8.98846567431158e307",
        ] {
            let frame = format!(r#"{{"type":"set","id":1,"key":"n","value":[{text}]}}"#);
            let first: ClientMessage = serde_json::from_str(&frame).unwrap();
            let mut message = first.clone();
            for _hop in 0..3 {
                let again = serde_json::to_string(&message).unwrap();
                message = serde_json::from_str(&again).unwrap();
                assert_eq!(message, first, "{text} changed on its way: {again}");
            }
            let ClientMessage::Set { value, .. } = &first else {
                panic!("{frame} read as {first:?}");
            };
            let number = value[0].as_f64().unwrap();
            let nearest: f64 = text.parse().unwrap();
            assert_eq!(
                number, nearest,
                "{text} read as {number}, not the nearest double"
            );
        }
    }

    #[test]
    fn a_deleted_entry_has_no_value() {
        let deleted = ServerMessage::StoreChanged(Entry {
            key: "k".into(),
            value: None,
            version: 12,
            updated_by: "alice".into(),
            updated_at: 5,
        });
        let text = serde_json::to_string(&deleted).unwrap();
        assert!(!text.contains("value"));
        assert_eq!(deleted.seq(), Some(12));
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&text).unwrap(),
            deleted
        );
    }
}

/// The protocol as JSON Schema, for client authors in other languages.
#[cfg(feature = "schema")]
pub mod schema {
    use schemars::JsonSchema;

    /// Every message both ways, the connect parameters and refusals, and the token
    /// claims, as one JSON Schema document (pretty-printed, with a final newline).
    pub fn document() -> String {
        #[derive(JsonSchema)]
        #[allow(dead_code)]
        struct Protocol {
            /// A frame a client sends.
            client_message: crate::ClientMessage,
            /// A frame the server sends.
            server_message: crate::ServerMessage,
            /// The query of `GET /rtc`.
            connect_params: crate::ConnectParams,
            /// The JSON body of a refused `/rtc` upgrade.
            connect_refusal: crate::ConnectRefusal,
            /// An access token's claims.
            claims: crate::Claims,
        }
        let schema = serde_json::to_value(schemars::schema_for!(Protocol)).expect("serializes");
        let mut text = serde_json::to_string_pretty(&sorted(schema)).expect("a schema serializes");
        text.push('\n');
        text
    }

    /// Keys in sorted order at every level: the same text whether or not another crate
    /// turned on serde_json's `preserve_order`.
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(object) => {
                let mut entries: Vec<(String, serde_json::Value)> = object.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key, sorted(value)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
}
