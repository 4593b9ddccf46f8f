//! A room on this node: the rules (`crate::rules`) run under the room's lock, fed with
//! the room's log and carrying out what they ask.
//!
//! - `registry`: every room this node holds, and joining one;
//! - `log`: the order of a room's entries (this lock on one node, a Redis stream in a
//!   cluster), catching up, and handing each entry to the rules;
//! - `appends`: in a cluster, this node's entries queued and appended in batches;
//! - `apply`: one entry applied, and its effects carried out on this node;
//! - `delivery`: the connections this node holds, and queueing frames to them;
//! - `presence`: the reconnect grace period of a connection that went away;
//! - `admin`: the server API's operations.
//!
//! An entry is applied and its frames queued to every local connection that should see
//! them before the lock is released, so every connection gets events in sequence order.
//! Queues are bounded and never waited on: a connection whose queue is full is cut (it
//! may resume), so one slow reader never slows the room.

mod admin;
mod appends;
mod apply;
mod delivery;
mod log;
mod presence;
mod registry;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::cluster::{Cluster, Position};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::rules::command::LogEntry;
pub use crate::rules::command::{ParticipantChange, ResumeRequest};
pub use crate::rules::RoomSummary;
pub use crate::rules::{AdminError, Frame};
use crate::rules::{AdminOutcome, Replica, Settings};
use crate::webhook::Webhooks;
pub use appends::NodeQueue;
use delivery::Connections;
pub use delivery::{Closing, Connection, Outbox, Outgoing, WRITE_BATCH, WRITE_BATCH_BYTES};
pub use registry::{Admission, Admitted, NotAdmitted, RoomUse, Rooms};

/// What every room of a node shares.
pub struct Node {
    /// This node's name in the cluster (and in log entries it appends).
    pub id: Arc<str>,
    pub config: ServerConfig,
    pub metrics: Metrics,
    pub webhooks: Option<Webhooks>,
    /// `None`: a single node holding every room in memory.
    pub cluster: Option<Arc<Cluster>>,
    /// In a cluster: room for the entries this node's rooms queue for Redis.
    pub append_queue: NodeQueue,
}

impl Node {
    /// What the rules of each room take from this node's configuration.
    fn settings(&self) -> Settings {
        let config = &self.config;
        Settings {
            limits: config.limits,
            replay_log_events: config.replay_log_events,
            reply_cache_bytes: config.reply_cache_bytes,
            reconnect_grace_ms: config.reconnect_grace_ms,
            webhooks: self.webhooks.is_some(),
        }
    }
}

pub struct Room {
    name: String,
    node: Arc<Node>,
    registry: Weak<Mutex<HashMap<String, Arc<Room>>>>,
    state: Mutex<RoomState>,
    /// Held while catching up with the log, so there is one catch-up at a time.
    syncing: tokio::sync::Mutex<()>,
    /// In a cluster: this node's entries on their way to Redis.
    appends: appends::Appends,
}

struct RoomState {
    /// Set when the room left the registry; a new `Room` takes its name.
    removed: bool,
    /// Whether the copy was read from the cluster (always, on a single node).
    loaded: bool,
    /// The last log entry applied.
    applied: Position,
    /// In a cluster: this node's own entry from this one on saves a snapshot.
    next_snapshot: u64,
    replica: Replica,
    /// The connections of the room's participants that this node holds.
    connections: Connections,
    /// Entries that arrived before ones they follow (another node's entry published
    /// while this node's own append was answered): applied once the gap fills.
    ahead: BTreeMap<u64, (Position, LogEntry)>,
    /// Whether a check that the gap filled is scheduled.
    gap_check: bool,
    /// Set when Redis numbered entries again from below this copy (it lost the log):
    /// the next catch-up starts over from what Redis has.
    log_reset: bool,
    /// Who on this node waits for an entry it appended, by the entry's ticket.
    pending: HashMap<u64, Pending>,
    /// Open `RoomUse`s.
    users: usize,
    /// Set by entries that may leave this node with no use for the room (someone left,
    /// moved to another node, or stopped waiting): checked once the lock is released,
    /// not after every store write.
    release_check: bool,
}

impl RoomState {
    /// Whether an entry of the cluster's log at `position` is nothing to this copy: the
    /// copy was let go of (its node's late entries must not rebuild it, nor save it as
    /// the room's snapshot), is not loaded yet (loading reads the entry), or applied the
    /// entry already, unless the entry shows that Redis lost the log and numbered it
    /// again (and this copy has not started over yet).
    fn ignores(&self, position: &Position) -> bool {
        let renumbered = position.renumbered_since(&self.applied) && !self.log_reset;
        self.removed || !self.loaded || (position.n <= self.applied.n && !renumbered)
    }
}

/// Someone on this node waiting for an entry it appended to be applied.
enum Pending {
    Admit {
        connection: Connection,
        admitted: oneshot::Sender<AdmittedHere>,
    },
    Admin(oneshot::Sender<Result<AdminOutcome, AdminError>>),
}

/// What the joining connection learns.
enum AdmittedHere {
    /// Its participant, epoch and first frames.
    Attached(String, u64, Vec<Frame>),
    /// It may not be in the room: the goodbye to say.
    Refused(Closing),
}

impl Room {
    fn new(name: &str, node: Arc<Node>, registry: Weak<Mutex<HashMap<String, Arc<Room>>>>) -> Self {
        let loaded = node.cluster.is_none();
        Room {
            name: name.to_string(),
            state: Mutex::new(RoomState {
                removed: false,
                loaded,
                applied: Position::default(),
                next_snapshot: log::next_snapshot(0, 0),
                replica: Replica::new(name, node.settings()),
                connections: Connections::default(),
                ahead: BTreeMap::new(),
                gap_check: false,
                log_reset: false,
                pending: HashMap::new(),
                users: 0,
                release_check: false,
            }),
            node,
            registry,
            syncing: tokio::sync::Mutex::new(()),
            appends: appends::Appends::default(),
        }
    }

    /// The room's state, taken without stalling the runtime worker (crate::lock).
    fn lock_state(&self) -> parking_lot::MutexGuard<'_, RoomState> {
        crate::lock::lock_without_stalling(&self.state)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> &ServerConfig {
        &self.node.config
    }

    /// Keeps the `rooms` gauge (rooms with a session on this node) in step with this
    /// room's replica, whose session came or went.
    fn count_session(&self, had: bool, has: bool) {
        match (had, has) {
            (false, true) => {
                self.node.metrics.rooms.inc();
            }
            (true, false) => {
                self.node.metrics.rooms.dec();
            }
            _ => {}
        }
    }
}
