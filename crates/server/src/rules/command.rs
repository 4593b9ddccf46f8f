//! What changes a room, as entries of one ordered log.
//!
//! Every node that holds a copy of a room applies the same entries in the same order,
//! and applying is deterministic: whatever could differ between nodes (the time, new
//! ids and tokens) is chosen once, by the node that appends the entry, and travels in
//! it. So versions, compare-and-set, limits and who is in the session are decided the
//! same way on every node, in the order the log gives. On one node without Redis the
//! log is just the order in which the room's lock is taken.

use std::collections::BTreeMap;
use std::sync::Arc;

use roomstate_protocol::{Claims, ClientMessage, Millis, RequestId, Seq};
use serde::{Deserialize, Serialize};

/// A new ticket, unique within this process.
pub fn next_ticket() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    /// The node that appended the entry: only it answers the caller and sends webhooks.
    /// Shared, not copied: every request builds an entry.
    pub origin: Arc<str>,
    /// The origin's name for whoever waits on this entry (a joining connection, a
    /// server API call).
    pub ticket: u64,
    /// When the origin appended the entry; the time every node records for it.
    pub at: Millis,
    pub command: Command,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// A connection joins, or resumes `resume.sid` if that still can be done.
    /// `sid`, `resume_token` and `session_id` are used if it joins anew.
    Admit {
        claims: Box<Claims>,
        resume: Option<ResumeRequest>,
        /// The token may resume but not join anew (see `Admission::token_expired`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        token_expired: bool,
        sid: String,
        resume_token: String,
        session_id: String,
    },
    /// A message from participant `sid`'s connection, attached as `epoch`. Messages of
    /// a connection that was replaced (its epoch is old) are ignored.
    Client {
        sid: String,
        epoch: u64,
        message: ClientMessage,
    },
    /// `sid`'s connection `epoch` did not come back within the reconnect grace period.
    Depart {
        sid: String,
        epoch: u64,
    },
    /// The node stopped heartbeating: everyone connected through it has left.
    NodeGone {
        node: String,
    },
    /// The server API's changes.
    UpdateParticipant {
        identity: String,
        change: ParticipantChange,
    },
    RemoveParticipant {
        identity: String,
    },
    SetRoomMetadata {
        metadata: String,
    },
    StoreWrite {
        author: String,
        key: String,
        value: Option<serde_json::Value>,
        if_version: Option<u64>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeRequest {
    pub sid: String,
    pub token: String,
    pub session_id: String,
    pub last_seq: Seq,
    pub last_reply_id: RequestId,
}

/// What a server API call changes in a participant; absent fields stay.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ParticipantChange {
    pub metadata: Option<String>,
    pub name: Option<String>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub can_update_metadata: Option<bool>,
}
