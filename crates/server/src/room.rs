//! Rooms: sessions, participants, the store, and the fan-out of changes.
//!
//! A room changes only by applying entries of its log (see `command`), one at a time
//! under the room's lock: a change is applied, its sequence number assigned, and its
//! frame queued to every local connection that should see it before the lock is
//! released. On one node the log is the order of that lock; in a cluster it is a Redis
//! stream, and every node that holds a copy of the room applies it in the same order.
//!
//! Queues are bounded and never waited on: a connection whose queue is full is cut (it
//! may resume), so one slow reader never slows the room.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use roomstate_protocol::{
    Claims, ClientMessage, CloseReason, Entry, ErrorBody, ErrorCode, JoinInfo, Limit, Limits,
    Millis, Outcome, ParticipantInfo, ParticipantPermission, Reply, ReplyBody, RequestId,
    ResumeInfo, Seq, ServerMessage, Snapshot, MAX_REQUESTS_IN_FLIGHT, PROTOCOL_VERSION,
    WILDCARD_KEY,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cluster::{Cluster, Delivery, Position, Unavailable};
use crate::command::{Command, LogEntry};
pub use crate::command::{ParticipantChange, ResumeRequest};
use crate::config::ServerConfig;
use crate::livekit;
use crate::metrics::Metrics;
use crate::observed::Observed;
use crate::store::{validate_key, Change, Store};
use crate::webhook::Webhooks;
/// One frame as the room queues it for a connection's writer.
pub use axum::extract::ws::Utf8Bytes as Frame;

/// Replies kept per participant for replay on resume: more than a client may have in
/// flight, so none it is waiting for can be missing.
const REPLY_CACHE: usize = 2 * MAX_REQUESTS_IN_FLIGHT;

/// In a cluster, the node that appends every this-many-th entry of a room saves a
/// snapshot of the room and trims the log before it.
const SNAPSHOT_EVERY: u64 = 256;

/// Log entries read per request while catching up.
const CATCH_UP_BATCH: usize = 512;

/// How long an entry that skipped ahead waits for the ones before it to arrive by
/// subscription, before the room reads them from the log.
const GAP_WAIT: Duration = Duration::from_millis(25);

/// What every room of a node shares.
pub struct Node {
    /// This node's name in the cluster (and in log entries it appends).
    pub id: Arc<str>,
    pub config: ServerConfig,
    pub metrics: Metrics,
    pub webhooks: Option<Webhooks>,
    /// `None`: a single node holding every room in memory.
    pub cluster: Option<Arc<Cluster>>,
}

/// Every room this node holds.
pub struct Rooms {
    node: Arc<Node>,
    rooms: Arc<Mutex<HashMap<String, Arc<Room>>>>,
}

/// Why an admin operation (server API) could not be done.
#[derive(Debug)]
pub enum AdminError {
    NoSuchRoom(String),
    NoSuchParticipant(String),
    Refused(ErrorBody),
    Unavailable(String),
}

impl From<Unavailable> for AdminError {
    fn from(Unavailable(message): Unavailable) -> Self {
        AdminError::Unavailable(message)
    }
}

/// A room as the server API lists it.
#[derive(Debug, Clone)]
pub struct RoomSummary {
    pub name: String,
    pub session_id: String,
    pub started_at: Millis,
    pub metadata: String,
    pub participants: usize,
}

/// What the upgrade handler learned about a connecting client.
pub struct Admission {
    pub claims: Claims,
    pub room: String,
    pub resume: Option<ResumeRequest>,
    /// The token is past its `exp`: good for resuming, not for joining anew.
    pub token_expired: bool,
}

/// A connection, admitted: the frames to write before anything else, and where its
/// messages go.
pub struct Admitted {
    pub room: Arc<Room>,
    pub sid: String,
    /// The participant's attach count when this connection took it over; its messages
    /// carry it, so those of a replaced connection are ignored everywhere.
    pub epoch: u64,
    pub initial: Vec<Utf8Bytes>,
}

/// The room's handle on one WebSocket connection.
#[derive(Clone)]
pub struct Connection {
    frames: mpsc::Sender<Utf8Bytes>,
    close: Arc<watch::Sender<Option<Closing>>>,
    queued: QueuedBytes,
}

/// The bytes of a connection's frames queued but not yet written, shared by the room
/// (which adds) and the connection's writer (which takes away): with the queue's frame
/// count, this bounds what a client that does not read can make the server hold.
#[derive(Clone)]
pub struct QueuedBytes {
    bytes: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

impl QueuedBytes {
    pub fn new(max: usize) -> Self {
        QueuedBytes {
            bytes: Arc::default(),
            max,
        }
    }

    /// Counts `len` more bytes in; false (nothing counted) past the budget, unless the
    /// queue is empty: one frame always fits.
    fn admit(&self, len: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let queued = self.bytes.load(Relaxed);
        if queued > 0 && queued + len > self.max {
            return false;
        }
        self.bytes.fetch_add(len, Relaxed);
        true
    }

    /// `len` bytes were written (or dropped).
    pub fn written(&self, len: usize) {
        self.bytes
            .fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Closing {
    pub reason: CloseReason,
    pub message: String,
}

impl Connection {
    pub fn new(
        frames: mpsc::Sender<Utf8Bytes>,
        close: Arc<watch::Sender<Option<Closing>>>,
        queued: QueuedBytes,
    ) -> Self {
        Connection {
            frames,
            close,
            queued,
        }
    }

    /// Queues a frame; `false` when the queue is full, in frames or in bytes (the
    /// connection is too slow).
    pub fn send(&self, frame: &Utf8Bytes) -> bool {
        if !self.queued.admit(frame.len()) {
            return false;
        }
        match self.frames.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued.written(frame.len());
                false
            }
            // The writer is gone; the reader will report the connection closed.
            Err(mpsc::error::TrySendError::Closed(_)) => true,
        }
    }

    fn close(&self, reason: CloseReason, message: impl Into<String>) {
        self.close.send_replace(Some(Closing {
            reason,
            message: message.into(),
        }));
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
    Attached(String, u64, Vec<Utf8Bytes>),
    /// It may not be in the room: the goodbye to say.
    Refused(Closing),
}

/// Why a connection was not admitted.
pub enum NotAdmitted {
    /// The room's shared state could not be reached: try again.
    Unavailable(String),
    /// The room refused it.
    Refused(Closing),
}

impl From<Unavailable> for NotAdmitted {
    fn from(Unavailable(problem): Unavailable) -> Self {
        NotAdmitted::Unavailable(problem)
    }
}

enum AdminOutcome {
    Participant(ParticipantInfo),
    Removed,
    Room(RoomSummary),
    Entry(Entry),
}

/// A use of a room by this node (a joining connection, a server API call): while one
/// exists, the room stays loaded.
pub struct RoomUse {
    room: Arc<Room>,
}

impl std::ops::Deref for RoomUse {
    type Target = Arc<Room>;
    fn deref(&self) -> &Arc<Room> {
        &self.room
    }
}

impl Drop for RoomUse {
    fn drop(&mut self) {
        self.room.lock_state().users -= 1;
        self.room.release_if_unused();
    }
}

impl Rooms {
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        Arc::new(Rooms {
            node,
            rooms: Arc::default(),
        })
    }

    pub fn config(&self) -> &ServerConfig {
        &self.node.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.node.metrics
    }

    pub fn room_count(&self) -> usize {
        self.rooms.lock().len()
    }

    /// The room `name`, loaded and caught up with its log (in a cluster).
    pub async fn open(&self, name: &str) -> Result<RoomUse, Unavailable> {
        let room = {
            let mut rooms = self.rooms.lock();
            let room = rooms
                .entry(name.to_string())
                .or_insert_with(|| {
                    Arc::new(Room {
                        name: name.to_string(),
                        node: self.node.clone(),
                        registry: Arc::downgrade(&self.rooms),
                        state: Mutex::new(RoomState {
                            loaded: self.node.cluster.is_none(),
                            ..RoomState::default()
                        }),
                        syncing: tokio::sync::Mutex::new(()),
                    })
                })
                .clone();
            // Rooms leave the registry under its lock, so this one is not removed.
            room.lock_state().users += 1;
            room
        };
        let room = RoomUse { room };
        if let Some(cluster) = &self.node.cluster {
            Box::pin(room.sync(cluster)).await?;
        }
        Ok(room)
    }

    /// Joins or resumes a participant, and returns the frames it gets first.
    pub async fn admit(
        &self,
        admission: Admission,
        connection: Connection,
    ) -> Result<Admitted, NotAdmitted> {
        let room = self.open(&admission.room).await?;
        if let Some(cluster) = &self.node.cluster {
            // Recorded before joining, so whoever finds this node dead finds the room.
            cluster.host(&admission.room).await?;
        }
        let (admitted, answer) = oneshot::channel();
        let command = Command::Admit {
            claims: Box::new(admission.claims),
            resume: admission.resume,
            token_expired: admission.token_expired,
            sid: format!("PA_{}", random_id()),
            resume_token: format!("{:032x}", rand::random::<u128>()),
            session_id: format!("SE_{}", random_id()),
        };
        let ticket = room
            .submit(
                command,
                Some(Pending::Admit {
                    connection,
                    admitted,
                }),
            )
            .await?;
        let answer = tokio::time::timeout(self.wait_limit(), answer).await;
        match answer {
            Ok(Ok(AdmittedHere::Attached(sid, epoch, initial))) => Ok(Admitted {
                room: room.room.clone(),
                sid,
                epoch,
                initial,
            }),
            Ok(Ok(AdmittedHere::Refused(closing))) => Err(NotAdmitted::Refused(closing)),
            _ => {
                room.forget(ticket);
                Err(NotAdmitted::Unavailable(
                    "the join was stored but this node could not read it back in time".into(),
                ))
            }
        }
    }

    /// How long a caller waits for its own entry to come back from the log.
    fn wait_limit(&self) -> Duration {
        match &self.node.cluster {
            Some(cluster) => cluster.timeout() * 5,
            None => Duration::from_secs(5),
        }
    }

    /// Takes deliveries from the cluster: entries other nodes appended, resyncs after
    /// the subscription dropped, and dead nodes to clear out.
    pub fn listen(self: &Arc<Self>, mut deliveries: mpsc::UnboundedReceiver<Delivery>) {
        let rooms = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(delivery) = deliveries.recv().await {
                let Some(rooms) = rooms.upgrade() else { return };
                match delivery {
                    Delivery::Entry {
                        room,
                        position,
                        entry,
                    } => {
                        let found = rooms.rooms.lock().get(&room).cloned();
                        if let Some(found) = found {
                            found.offer(position, *entry);
                        }
                    }
                    Delivery::Resubscribed => {
                        let all: Vec<Arc<Room>> = rooms.rooms.lock().values().cloned().collect();
                        for room in all {
                            room.spawn_sync();
                        }
                    }
                    Delivery::Reaped { room } => {
                        let rooms = rooms.clone();
                        // Loading the room applies the entry; the use ends at once.
                        tokio::spawn(async move { drop(rooms.open(&room).await) });
                    }
                }
            }
        });
    }
}

pub struct Room {
    name: String,
    node: Arc<Node>,
    registry: Weak<Mutex<HashMap<String, Arc<Room>>>>,
    state: Mutex<RoomState>,
    /// Held while catching up with the log, so there is one catch-up at a time.
    syncing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct RoomState {
    /// Set when the room left the registry; a new `Room` takes its name.
    removed: bool,
    /// Whether the copy was read from the cluster (always, on a single node).
    loaded: bool,
    /// The last log entry applied.
    applied: Position,
    session: Option<Session>,
    /// Entries that arrived before ones they follow (another node's entry published
    /// while this node's own append was answered): applied once the gap fills.
    ahead: BTreeMap<u64, (Position, LogEntry)>,
    /// Whether a check that the gap filled is scheduled.
    gap_check: bool,
    /// Set when Redis numbered entries again from below this copy (it lost the log):
    /// the next catch-up starts over from what Redis has.
    log_reset: bool,
    pending: HashMap<u64, Pending>,
    /// Open `RoomUse`s.
    users: usize,
    /// Set by entries that may leave this node with no use for the room (someone left,
    /// moved to another node, or stopped waiting): checked once the lock is released,
    /// not after every store write.
    release_check: bool,
}

/// A room's copy as a snapshot in the cluster holds it (connections are skipped: they
/// are each node's own).
#[derive(Serialize, Deserialize)]
struct RoomSnapshot<S> {
    session: Option<S>,
}

#[derive(Serialize, Deserialize)]
struct Session {
    id: String,
    started_at: Millis,
    /// Whether a participant that is not hidden has joined: only they start a session
    /// (and `room_started`), and the last of them to leave ends it.
    announced: bool,
    seq: Seq,
    store: Store,
    metadata: String,
    participants: HashMap<String, Participant>,
    /// Recent events, oldest first, with contiguous sequence numbers.
    log: VecDeque<Logged>,
}

#[derive(Serialize, Deserialize)]
struct Logged {
    seq: Seq,
    audience: Audience,
    #[serde(with = "frame_text")]
    frame: Utf8Bytes,
}

/// Who hears about an event.
#[derive(Clone, Serialize, Deserialize)]
enum Audience {
    Everyone,
    AllBut(String),
    Only(String),
    Observers(String),
}

#[derive(Serialize, Deserialize)]
struct Participant {
    info: ParticipantInfo,
    claims: Claims,
    resume_token: String,
    /// The node the participant is connected through.
    node: String,
    /// Bumped on every resume: messages and departures name the epoch they belong to.
    epoch: u64,
    /// The connection, if it is on this node; `None` elsewhere and while the
    /// participant waits to resume.
    #[serde(skip)]
    connection: Option<Connection>,
    observed: Observed,
    last_request_id: RequestId,
    replies: VecDeque<CachedReply>,
    /// The bytes of `replies`' frames, kept under `reply_cache_bytes`.
    #[serde(default)]
    reply_bytes: usize,
}

#[derive(Serialize, Deserialize)]
struct CachedReply {
    id: RequestId,
    /// The session's sequence number when the reply was queued: it follows every event
    /// up to this one.
    after_seq: Seq,
    #[serde(with = "frame_text")]
    frame: Utf8Bytes,
}

mod frame_text {
    use axum::extract::ws::Utf8Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(frame: &Utf8Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(frame.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Utf8Bytes, D::Error> {
        String::deserialize(deserializer).map(Utf8Bytes::from)
    }
}

impl Audience {
    /// Whether participant `sid`, observing what `observes` says, hears the event.
    fn includes(&self, sid: &str, observes: impl FnOnce(&str) -> bool) -> bool {
        match self {
            Audience::Everyone => true,
            Audience::AllBut(excluded) => excluded != sid,
            Audience::Only(only) => only == sid,
            Audience::Observers(key) => observes(key),
        }
    }
}

/// What applying one entry knows about it.
struct Applying {
    /// Whether this node appended the entry.
    origin: bool,
    at: Millis,
}

impl Room {
    /// The room's state, taken without stalling the runtime worker (crate::lock).
    fn lock_state(&self) -> parking_lot::MutexGuard<'_, RoomState> {
        crate::lock::lock_without_stalling(&self.state)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn limits(&self) -> &Limits {
        &self.node.config.limits
    }

    fn config(&self) -> &ServerConfig {
        &self.node.config
    }

    /// Appends `command` to the room's log; it is applied before this returns on a
    /// single node, and when it comes back from the log in a cluster. Fails only in a
    /// cluster, when Redis did not store the entry.
    /// Returns the entry's ticket, under which `pending` waits.
    async fn submit(
        self: &Arc<Self>,
        command: Command,
        pending: Option<Pending>,
    ) -> Result<u64, Unavailable> {
        let ticket = crate::command::next_ticket();
        let entry = LogEntry {
            origin: self.node.id.clone(),
            ticket,
            at: now_millis(),
            command,
        };
        match &self.node.cluster {
            None => self.apply_here(entry, pending),
            // Boxed: every connection's futures would otherwise carry the size of the
            // Redis calls, on a single node too.
            Some(cluster) => Box::pin(self.append(cluster, entry, pending)).await?,
        }
        Ok(ticket)
    }

    /// Stops waiting on the entry `ticket`: whoever waited gave up. (A join applied
    /// later finds no connection, and its participant departs after the grace period.)
    fn forget(self: &Arc<Self>, ticket: u64) {
        self.lock_state().pending.remove(&ticket);
        self.release_if_unused();
    }

    /// A single node's log: the entry is next, by this lock.
    fn apply_here(self: &Arc<Self>, entry: LogEntry, pending: Option<Pending>) {
        let mut state = self.lock_state();
        if state.removed {
            // A stale handle (a connection whose participant is gone): nobody here is in
            // this room any more.
            return;
        }
        if let Some(pending) = pending {
            state.pending.insert(entry.ticket, pending);
        }
        state.applied = Position {
            n: state.applied.n + 1,
            id: String::new(),
        };
        self.apply(&mut state, entry);
        self.finish(state);
    }

    async fn append(
        self: &Arc<Self>,
        cluster: &Cluster,
        entry: LogEntry,
        pending: Option<Pending>,
    ) -> Result<(), Unavailable> {
        let ticket = entry.ticket;
        {
            let mut state = self.lock_state();
            if state.removed {
                return Ok(());
            }
            if let Some(pending) = pending {
                state.pending.insert(ticket, pending);
            }
        }
        match cluster.append(&self.name, &entry).await {
            Ok(position) => {
                self.offer(position, entry);
                Ok(())
            }
            Err(unavailable) => {
                self.lock_state().pending.remove(&ticket);
                self.release_if_unused();
                Err(unavailable)
            }
        }
    }

    /// Applies an entry of the cluster's log if it is the next one; a gap means
    /// entries were missed, and the room catches up from the log first.
    fn offer(self: &Arc<Self>, position: Position, entry: LogEntry) {
        let mut state = self.lock_state();
        if state.loaded && position.renumbered_since(&state.applied) && !state.log_reset {
            tracing::error!(room = %self.name, "Redis lost this room's log (restarted without persistence?); starting over from what it has");
            state.log_reset = true;
            drop(state);
            self.spawn_sync();
            return;
        }
        if !state.loaded || position.n <= state.applied.n {
            return; // Not loaded yet (loading reads it), or already applied.
        }
        if position.n > state.applied.n + 1 {
            state.ahead.insert(position.n, (position, entry));
            if !state.gap_check {
                state.gap_check = true;
                let room = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep(GAP_WAIT).await;
                    let stuck = {
                        let mut state = room.lock_state();
                        state.gap_check = false;
                        !state.ahead.is_empty()
                    };
                    if stuck {
                        room.spawn_sync();
                    }
                });
            }
            return;
        }
        self.apply_logged(&mut state, position, entry);
        self.apply_ahead(&mut state);
        self.finish(state);
    }

    /// Releases the room's lock, then forgets the room if what was applied may have
    /// left this node with no use for it.
    fn finish(self: &Arc<Self>, mut state: parking_lot::MutexGuard<'_, RoomState>) {
        let check = std::mem::take(&mut state.release_check);
        drop(state);
        if check {
            self.release_if_unused();
        }
    }

    /// Applies the entries that waited for a gap that is now filled.
    fn apply_ahead(self: &Arc<Self>, state: &mut RoomState) {
        while let Some(entry) = state.ahead.first_entry() {
            let n = *entry.key();
            if n > state.applied.n + 1 {
                break;
            }
            let (position, entry) = entry.remove();
            if n == state.applied.n + 1 {
                self.apply_logged(state, position, entry);
            }
        }
    }

    fn apply_logged(self: &Arc<Self>, state: &mut RoomState, position: Position, entry: LogEntry) {
        let n = position.n;
        // Whoever appended it saves the snapshot; any copy would save the same one.
        let snapshot_due = entry.origin == self.node.id && n % SNAPSHOT_EVERY == 0;
        state.applied = position;
        let ended = self.apply(state, entry);
        if let Some(cluster) = &self.node.cluster {
            // After a session ends its log is worth nothing: a snapshot lets Redis drop it.
            if snapshot_due || ended {
                let snapshot = serde_json::to_string(&RoomSnapshot {
                    session: state.session.as_ref(),
                })
                .expect("a room serializes");
                cluster.save_snapshot(&self.name, state.applied.clone(), snapshot);
            }
        }
    }

    pub(crate) fn spawn_sync(self: &Arc<Self>) {
        let Some(cluster) = self.node.cluster.clone() else {
            return;
        };
        let room = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(Unavailable(problem)) = room.sync(&cluster).await {
                tracing::warn!(room = %room.name, %problem, "cannot catch up with the room's log; will retry when Redis is back");
            }
        });
    }

    /// Loads the room from the cluster if it is not loaded, then applies every entry
    /// of its log this node has not applied yet.
    async fn sync(self: &Arc<Self>, cluster: &Cluster) -> Result<(), Unavailable> {
        let _one_at_a_time = self.syncing.lock().await;
        if !self.lock_state().loaded {
            // Subscribed first: whatever is appended after the snapshot is read either
            // from the log below or from the subscription.
            cluster.subscribe(&self.name).await?;
            let snapshot = cluster.load_snapshot(&self.name).await?;
            let mut state = self.lock_state();
            self.install(&mut state, snapshot, false);
        }
        if self.lock_state().log_reset {
            let snapshot = cluster.load_snapshot(&self.name).await?;
            let mut state = self.lock_state();
            self.install(&mut state, snapshot, true);
        }
        loop {
            let after = self.lock_state().applied.clone();
            let batch = cluster
                .read_after(&self.name, &after, CATCH_UP_BATCH)
                .await?;
            let Some((first, _)) = batch.first() else {
                break;
            };
            let reset = first.renumbered_since(&after);
            if reset || first.n > after.n + 1 {
                // Trimmed past this copy, or lost by Redis: start again from the
                // snapshot Redis has.
                let snapshot = cluster.load_snapshot(&self.name).await?;
                let mut state = self.lock_state();
                self.install(&mut state, snapshot, reset);
                continue;
            }
            let full = batch.len() == CATCH_UP_BATCH;
            {
                let mut state = self.lock_state();
                for (position, entry) in batch {
                    if position.n == state.applied.n + 1 {
                        self.apply_logged(&mut state, position, entry);
                    }
                }
                self.apply_ahead(&mut state);
            }
            if !full {
                break;
            }
        }
        self.release_if_unused();
        Ok(())
    }

    /// Replaces this copy with a snapshot. Local connections missed what happened in
    /// between, so they are closed, to resume.
    /// `over`: replace the copy even if the snapshot is older (Redis lost the log).
    fn install(
        self: &Arc<Self>,
        state: &mut RoomState,
        snapshot: Option<(Position, String)>,
        over: bool,
    ) {
        let (position, session) = match snapshot {
            Some((position, text)) => match serde_json::from_str::<RoomSnapshot<Session>>(&text) {
                Ok(snapshot) => (position, snapshot.session),
                Err(error) => {
                    tracing::error!(room = %self.name, %error, "unreadable snapshot; starting the room over");
                    (position, None)
                }
            },
            None => (Position::default(), None),
        };
        if state.loaded && position.n <= state.applied.n && !over {
            return;
        }
        state.log_reset = false;
        state.ahead.clear();
        if let Some(old) = state.session.take() {
            self.node.metrics.rooms.dec();
            for participant in old.participants.values() {
                if let Some(connection) = &participant.connection {
                    connection.close(
                        CloseReason::Unavailable,
                        "this node fell behind the room's history; resume to catch up",
                    );
                }
            }
        }
        if session.is_some() {
            self.node.metrics.rooms.inc();
        }
        state.session = session;
        state.applied = position;
        state.loaded = true;
        // Participants of this node wait to resume; if they do not, they depart.
        let here: Vec<String> = state
            .session
            .iter()
            .flat_map(|session| session.participants.iter())
            .filter(|(_, participant)| *participant.node == *self.node.id)
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in here {
            let epoch = state.session.as_ref().expect("listed above").participants[&sid].epoch;
            self.start_grace(&sid, epoch);
        }
    }

    /// Forgets the room if nothing on this node needs it any more: no participant is
    /// connected through this node and nobody here waits on it.
    fn release_if_unused(self: &Arc<Self>) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut rooms = registry.lock();
        let mut state = self.lock_state();
        let needed = state.removed
            || state.users > 0
            || !state.pending.is_empty()
            || state.session.as_ref().is_some_and(|session| {
                session
                    .participants
                    .values()
                    .any(|participant| *participant.node == *self.node.id)
            });
        if needed {
            return;
        }
        state.removed = true;
        if state.session.take().is_some() {
            self.node.metrics.rooms.dec();
        }
        if rooms
            .get(&self.name)
            .is_some_and(|room| Arc::ptr_eq(room, self))
        {
            rooms.remove(&self.name);
        }
        if let Some(cluster) = &self.node.cluster {
            // Under the registry's lock: a new copy of this room subscribes after this.
            cluster.unsubscribe(&self.name);
        }
    }

    fn webhook(
        &self,
        applying: &Applying,
        event: &str,
        session: &Session,
        participant: Option<&ParticipantInfo>,
    ) {
        if !applying.origin {
            return; // The node that appended the entry sends it, once.
        }
        if let Some(webhooks) = &self.node.webhooks {
            webhooks.send(
                event,
                livekit::room(&self.name, &session.summary(&self.name)),
                participant.map(livekit::participant),
            );
        }
    }

    /// Applies one entry. Returns whether it ended the session.
    fn apply(self: &Arc<Self>, state: &mut RoomState, entry: LogEntry) -> bool {
        let LogEntry {
            origin,
            ticket,
            at,
            command,
        } = entry;
        // In a cluster, a copy loaded from Redis replays entries this node appended
        // long ago: only entries this process appended and has not applied yet are its
        // own (answers, webhooks, counters happen once).
        let own = origin == self.node.id
            && self
                .node
                .cluster
                .as_ref()
                .is_none_or(|cluster| cluster.take_own(ticket));
        let applying = Applying { origin: own, at };
        let pending = if applying.origin {
            state.pending.remove(&ticket)
        } else {
            None
        };
        state.release_check |= match &command {
            Command::Client { message, .. } => message.request_id().is_none(),
            _ => true,
        };
        match command {
            Command::Admit {
                claims,
                resume,
                token_expired,
                sid,
                resume_token,
                session_id,
            } => {
                let local = match pending {
                    Some(Pending::Admit {
                        connection,
                        admitted,
                    }) => Some((connection, admitted)),
                    _ => None,
                };
                self.apply_admit(
                    state,
                    &applying,
                    &origin,
                    Joining {
                        claims,
                        resume,
                        token_expired,
                        sid,
                        resume_token,
                        session_id,
                    },
                    local,
                );
                false
            }
            Command::Client {
                sid,
                epoch,
                message,
            } => self.apply_client(state, &applying, &sid, epoch, message),
            Command::Depart { sid, epoch } => {
                let Some(session) = state.session.as_mut() else {
                    return false;
                };
                let gone = session.participants.get(&sid).is_some_and(|participant| {
                    participant.epoch == epoch && participant.connection.is_none()
                });
                if !gone {
                    return false;
                }
                tracing::debug!(room = %self.name, %sid, "did not resume within the grace period");
                self.remove_participant(&applying, session, &sid);
                self.end_session_if_empty(&applying, state)
            }
            Command::NodeGone { node } => {
                let Some(session) = state.session.as_mut() else {
                    return false;
                };
                let gone: Vec<String> = session
                    .participants
                    .iter()
                    .filter(|(_, participant)| participant.node == node)
                    .map(|(sid, _)| sid.clone())
                    .collect();
                if !gone.is_empty() {
                    tracing::info!(room = %self.name, %node, participants = gone.len(), "removing the participants of a node that stopped");
                }
                for sid in gone {
                    if let Some(connection) = self.remove_participant(&applying, session, &sid) {
                        // This node was taken for dead while cut off from Redis.
                        connection.close(
                            CloseReason::Unavailable,
                            "this node lost touch with the cluster; reconnect",
                        );
                    }
                }
                self.end_session_if_empty(&applying, state)
            }
            command => {
                let (result, ended) = self.apply_admin(state, &applying, command);
                if let Some(Pending::Admin(answer)) = pending {
                    let _ = answer.send(result);
                }
                ended
            }
        }
    }

    fn apply_admin(
        self: &Arc<Self>,
        state: &mut RoomState,
        applying: &Applying,
        command: Command,
    ) -> (Result<AdminOutcome, AdminError>, bool) {
        let Some(session) = state.session.as_mut() else {
            return (Err(AdminError::NoSuchRoom(self.name.clone())), false);
        };
        let result = match command {
            Command::UpdateParticipant { identity, change } => {
                session.participant_by_identity(&identity).and_then(|sid| {
                    let mut info = session.participants[&sid].info.clone();
                    apply_participant_update(
                        &mut info,
                        change.attributes,
                        change.metadata,
                        change.name,
                        self.limits(),
                    )
                    .map_err(AdminError::Refused)?;
                    if let Some(allowed) = change.can_update_metadata {
                        info.permission.can_update_metadata = allowed;
                    }
                    Ok(AdminOutcome::Participant(
                        self.update_participant(session, &sid, info),
                    ))
                })
            }
            Command::RemoveParticipant { identity } => {
                match session.participant_by_identity(&identity) {
                    Ok(sid) => {
                        if let Some(connection) = self.remove_participant(applying, session, &sid) {
                            connection.close(CloseReason::Removed, "removed by the server API");
                        }
                        let ended = self.end_session_if_empty(applying, state);
                        return (Ok(AdminOutcome::Removed), ended);
                    }
                    Err(error) => Err(error),
                }
            }
            Command::SetRoomMetadata { metadata } => {
                let limit = self.limits().metadata_bytes;
                if metadata.len() > limit {
                    Err(AdminError::Refused(ErrorBody::limit(
                        Limit::MetadataBytes,
                        limit,
                        metadata.len(),
                    )))
                } else {
                    session.metadata = metadata.clone();
                    let seq = session.next_seq();
                    self.emit(
                        session,
                        &ServerMessage::RoomMetadataChanged { seq, metadata },
                        Audience::Everyone,
                    );
                    Ok(AdminOutcome::Room(session.summary(&self.name)))
                }
            }
            Command::StoreWrite {
                author,
                key,
                value,
                if_version,
            } => self
                .write_as(applying, session, &author, &key, value, if_version)
                .map(AdminOutcome::Entry)
                .map_err(AdminError::Refused),
            Command::Admit { .. }
            | Command::Client { .. }
            | Command::Depart { .. }
            | Command::NodeGone { .. } => unreachable!("not a server API command"),
        };
        (result, false)
    }

    fn apply_admit(
        self: &Arc<Self>,
        state: &mut RoomState,
        applying: &Applying,
        origin: &str,
        joining: Joining,
        local: Option<(Connection, oneshot::Sender<AdmittedHere>)>,
    ) {
        if let (Some(resume), Some(session)) = (&joining.resume, state.session.as_mut()) {
            if session.may_resume(resume, &joining.claims) {
                let participant = session
                    .participants
                    .get_mut(&resume.sid)
                    .expect("may_resume found it");
                if let Some(old) = participant.connection.take() {
                    old.close(
                        CloseReason::DuplicateIdentity,
                        "replaced by a resumed connection",
                    );
                }
                participant.epoch += 1;
                participant.node = origin.to_string();
                let epoch = participant.epoch;
                match local {
                    Some((connection, admitted)) => {
                        let frames = session.resume_frames(resume);
                        session
                            .participants
                            .get_mut(&resume.sid)
                            .expect("still here")
                            .connection = Some(connection);
                        tracing::debug!(room = %self.name, sid = %resume.sid, "resumed");
                        let _ = admitted.send(AdmittedHere::Attached(
                            resume.sid.clone(),
                            epoch,
                            frames,
                        ));
                    }
                    // The connection gave up waiting: it departs unless it resumes again.
                    None if applying.origin => self.start_grace(&resume.sid, epoch),
                    None => {}
                }
                return;
            }
        }
        if joining.token_expired {
            // It could not resume, and an expired token may not join anew. Nothing
            // changed, so the other nodes have nothing to do.
            if let Some((_, admitted)) = local {
                let _ = admitted.send(AdmittedHere::Refused(Closing {
                    reason: CloseReason::TokenExpired,
                    message: "the access token has expired and this participant can no longer \
                              be resumed: join again with a fresh token"
                        .into(),
                }));
            }
            return;
        }
        if state.session.is_none() {
            self.node.metrics.rooms.inc();
            state.session = Some(Session::new(joining.session_id.clone(), applying.at));
            if let (true, Some(cluster)) = (applying.origin, &self.node.cluster) {
                cluster.index(&self.name, true);
            }
        }
        let session = state.session.as_mut().expect("created above");
        let identity = joining.claims.sub.clone();
        let duplicate = session
            .participants
            .iter()
            .find(|(_, participant)| participant.info.identity == identity)
            .map(|(sid, _)| sid.clone());
        if let Some(old_sid) = duplicate {
            if let Some(old) = self.remove_participant(applying, session, &old_sid) {
                old.close(
                    CloseReason::DuplicateIdentity,
                    "another connection joined with this identity",
                );
            }
        }
        let participant = Participant::new(&joining, origin, applying.at);
        let sid = joining.sid;
        let hidden = participant.info.permission.hidden;
        let info = participant.info.clone();
        session.participants.insert(sid.clone(), participant);
        if !hidden {
            if !session.announced {
                session.announced = true;
                tracing::info!(room = %self.name, session = %session.id, "session started");
                if applying.origin {
                    self.node.metrics.sessions_started.inc();
                }
                self.webhook(applying, "room_started", session, None);
            }
            let seq = session.next_seq();
            self.emit(
                session,
                &ServerMessage::ParticipantJoined {
                    seq,
                    participant: info.clone(),
                },
                Audience::AllBut(sid.clone()),
            );
            self.webhook(applying, "participant_joined", session, Some(&info));
        }
        match local {
            Some((connection, admitted)) => {
                let joined = ServerMessage::Joined(JoinInfo {
                    protocol: PROTOCOL_VERSION,
                    room: self.name.clone(),
                    session_id: session.id.clone(),
                    seq: session.seq,
                    resume_token: joining.resume_token,
                    participants: session.visible_participants(&sid),
                    local: info,
                    room_metadata: session.metadata.clone(),
                    limits: *self.limits(),
                    reconnect_grace_ms: self.config().reconnect_grace_ms,
                });
                session
                    .participants
                    .get_mut(&sid)
                    .expect("inserted above")
                    .connection = Some(connection);
                tracing::debug!(room = %self.name, %sid, %identity, "joined");
                let _ = admitted.send(AdmittedHere::Attached(sid, 0, vec![frame(&joined)]));
            }
            None if applying.origin => self.start_grace(&sid, 0),
            None => {}
        }
    }

    /// Hands one message from participant `sid`'s connection `epoch` to the room.
    pub async fn handle(
        self: &Arc<Self>,
        sid: &str,
        epoch: u64,
        message: ClientMessage,
        connection: &Connection,
    ) {
        let id = message.request_id();
        // Kept to answer from this node's copy if Redis cannot be reached.
        let read = match (&message, &self.node.cluster) {
            (ClientMessage::Get { keys, .. }, Some(_)) => Some(keys.clone()),
            _ => None,
        };
        let command = Command::Client {
            sid: sid.to_string(),
            epoch,
            message,
        };
        let Err(Unavailable(problem)) = self.submit(command, None).await.map(drop) else {
            return;
        };
        let Some(id) = id else {
            return; // `leave`: the connection closes anyway, and the participant departs.
        };
        let stale = read.and_then(|keys| {
            let keys = requested_keys(&keys, self.limits()).ok()?;
            let state = self.lock_state();
            state.session.as_ref().map(|session| session.entries(&keys))
        });
        let reply = match stale {
            Some(entries) => Reply {
                id,
                outcome: Outcome::Ok(ReplyBody::Entries(entries)),
                stale: true,
            },
            None => Reply {
                id,
                outcome: Outcome::Error(ErrorBody::new(
                    ErrorCode::Unavailable,
                    format!(
                        "the room's shared state cannot be reached, nothing was changed: {problem}"
                    ),
                )),
                stale: false,
            },
        };
        self.node.metrics.error(ErrorCode::Unavailable.as_str());
        // A reply the client may wait for: worth a slow consumer's queue slot.
        let _ = connection.send(&frame(&ServerMessage::Reply(reply)));
    }

    /// Applies a client's message. Returns whether it ended the session.
    fn apply_client(
        self: &Arc<Self>,
        state: &mut RoomState,
        applying: &Applying,
        sid: &str,
        epoch: u64,
        message: ClientMessage,
    ) -> bool {
        let Some(session) = state.session.as_mut() else {
            return false;
        };
        let Some(participant) = session.participants.get_mut(sid) else {
            return false;
        };
        if participant.epoch != epoch {
            return false; // From a connection that was replaced; it no longer counts.
        }
        let connection = participant.connection.clone();
        let Some(id) = message.request_id() else {
            // `leave`
            self.remove_participant(applying, session, sid);
            if let Some(connection) = connection {
                connection.close(CloseReason::Left, "left the room");
            }
            return self.end_session_if_empty(applying, state);
        };
        if id <= participant.last_request_id {
            let rejected = ServerMessage::Rejected {
                id: Some(id),
                error: ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "request id {id} is not above the last one, {}",
                        participant.last_request_id
                    ),
                ),
            };
            if let Some(connection) = connection {
                connection.send(&frame(&rejected));
            }
            return false;
        }
        participant.last_request_id = id;
        let outcome = match self.apply_request(applying, session, sid, message) {
            Ok(body) => Outcome::Ok(body),
            Err(error) => {
                if applying.origin {
                    self.node.metrics.error(error.code.as_str());
                }
                Outcome::Error(error)
            }
        };
        let reply = frame(&ServerMessage::Reply(Reply {
            id,
            outcome,
            stale: false,
        }));
        let after_seq = session.seq;
        let participant = session
            .participants
            .get_mut(sid)
            .expect("a request does not remove its sender");
        participant.reply_bytes += reply.len();
        participant.replies.push_back(CachedReply {
            id,
            after_seq,
            frame: reply.clone(),
        });
        // Bounded in count and in bytes; the newest reply always stays.
        let byte_budget = self.node.config.reply_cache_bytes;
        while participant.replies.len() > REPLY_CACHE
            || (participant.reply_bytes > byte_budget && participant.replies.len() > 1)
        {
            let dropped = participant.replies.pop_front().expect("not empty");
            participant.reply_bytes -= dropped.frame.len();
        }
        if let Some(connection) = &participant.connection {
            if !connection.send(&reply) {
                self.cut_slow_consumer(session, sid);
            }
        }
        false
    }

    fn apply_request(
        self: &Arc<Self>,
        applying: &Applying,
        session: &mut Session,
        sid: &str,
        message: ClientMessage,
    ) -> Result<ReplyBody, ErrorBody> {
        let limits = *self.limits();
        let participant = &session.participants[sid];
        match message {
            ClientMessage::Set {
                key,
                value,
                if_version,
                ..
            } => self.write(applying, session, sid, &key, Some(value), if_version),
            ClientMessage::Delete {
                key, if_version, ..
            } => self.write(applying, session, sid, &key, None, if_version),
            ClientMessage::Get { keys, .. } => {
                let keys = requested_keys(&keys, &limits)?;
                Ok(ReplyBody::Entries(session.entries(&keys)))
            }
            ClientMessage::Observe { keys, .. } => {
                let keys = requested_keys(&keys, &limits)?;
                let observed = &participant.observed;
                let added = keys
                    .iter()
                    .filter(|key| key.as_str() != WILDCARD_KEY && !observed.is_observing(key))
                    .count();
                if observed.key_count() + added > limits.keys {
                    return Err(keys_limit(
                        "keys observed by one participant",
                        limits.keys,
                        observed.key_count() + added,
                    ));
                }
                let entries = session.entries(&keys);
                let (seq, oldest) = (session.seq, session.oldest_logged());
                session
                    .participants
                    .get_mut(sid)
                    .expect("checked above")
                    .observed
                    .change(&keys, true, seq, oldest);
                Ok(ReplyBody::Entries(entries))
            }
            ClientMessage::Unobserve { keys, .. } => {
                let (seq, oldest) = (session.seq, session.oldest_logged());
                session
                    .participants
                    .get_mut(sid)
                    .expect("checked above")
                    .observed
                    .change(&keys, false, seq, oldest);
                Ok(ReplyBody::Done)
            }
            ClientMessage::UpdateParticipant {
                attributes,
                metadata,
                name,
                ..
            } => {
                if !participant.info.permission.can_update_metadata {
                    return Err(ErrorBody::new(
                        ErrorCode::NotAllowed,
                        "the access token does not grant canUpdateOwnMetadata",
                    ));
                }
                let mut info = participant.info.clone();
                apply_participant_update(&mut info, attributes, metadata, name, &limits)?;
                Ok(ReplyBody::Participant(
                    self.update_participant(session, sid, info),
                ))
            }
            ClientMessage::Leave {} => unreachable!("leave carries no request id"),
        }
    }

    fn write(
        self: &Arc<Self>,
        applying: &Applying,
        session: &mut Session,
        sid: &str,
        key: &str,
        value: Option<serde_json::Value>,
        if_version: Option<u64>,
    ) -> Result<ReplyBody, ErrorBody> {
        let participant = &session.participants[sid];
        if !participant.claims.may_write_key(key) {
            return Err(ErrorBody::new(
                ErrorCode::NotAllowed,
                format!("the access token does not allow writing key {key:?}"),
            ));
        }
        let author = participant.info.identity.clone();
        self.write_as(applying, session, &author, key, value, if_version)
            .map(ReplyBody::Entry)
    }

    /// Applies a store write by `author` and tells the key's observers.
    fn write_as(
        self: &Arc<Self>,
        applying: &Applying,
        session: &mut Session,
        author: &str,
        key: &str,
        value: Option<serde_json::Value>,
        if_version: Option<u64>,
    ) -> Result<Entry, ErrorBody> {
        let seq = session.seq + 1;
        let limits = *self.limits();
        let change = Change {
            key,
            value,
            if_version,
            author,
            at: applying.at,
            seq,
        };
        match session.store.write(change, &limits)? {
            Some(written) => {
                session.seq = seq;
                if applying.origin {
                    self.node.metrics.store_writes.inc();
                }
                self.emit(
                    session,
                    &ServerMessage::StoreChanged(written.clone()),
                    Audience::Observers(key.to_string()),
                );
                Ok(written)
            }
            None => Ok(Entry::absent(key)),
        }
    }

    /// Replaces a participant's info with `info` as its next version and tells everyone.
    fn update_participant(
        self: &Arc<Self>,
        session: &mut Session,
        sid: &str,
        mut info: ParticipantInfo,
    ) -> ParticipantInfo {
        let participant = session.participants.get_mut(sid).expect("caller checked");
        info.version = participant.info.version + 1;
        participant.info = info.clone();
        let audience = if info.permission.hidden {
            Audience::Only(sid.to_string())
        } else {
            Audience::Everyone
        };
        let seq = session.next_seq();
        self.emit(
            session,
            &ServerMessage::ParticipantUpdated {
                seq,
                participant: info.clone(),
            },
            audience,
        );
        info
    }

    /// Queues `message` to its audience on this node and keeps it for replay.
    fn emit(self: &Arc<Self>, session: &mut Session, message: &ServerMessage, audience: Audience) {
        let seq = message.seq().expect("only events are emitted");
        debug_assert_eq!(seq, session.seq, "events are emitted in sequence order");
        let started = std::time::Instant::now();
        let frame = frame(message);
        let mut too_slow = Vec::new();
        for (sid, participant) in &session.participants {
            if let Some(connection) = &participant.connection {
                if audience.includes(sid, |key| participant.observed.contains(key))
                    && !connection.send(&frame)
                {
                    too_slow.push(sid.clone());
                }
            }
        }
        session.log.push_back(Logged {
            seq,
            audience,
            frame,
        });
        if session.log.len() > self.config().replay_log_events {
            session.log.pop_front();
        }
        self.node
            .metrics
            .fanout_seconds
            .observe(started.elapsed().as_secs_f64());
        for sid in too_slow {
            self.cut_slow_consumer(session, &sid);
        }
    }

    fn cut_slow_consumer(self: &Arc<Self>, session: &mut Session, sid: &str) {
        tracing::warn!(room = %self.name, %sid, "slow consumer: outbound queue full, disconnecting");
        if let Some(connection) = self.detach(session, sid) {
            connection.close(
                CloseReason::SlowConsumer,
                "the connection did not keep up with the room; resume to catch up",
            );
        }
    }

    /// Takes a participant's connection away and starts its reconnect grace period.
    fn detach(self: &Arc<Self>, session: &mut Session, sid: &str) -> Option<Connection> {
        let participant = session.participants.get_mut(sid)?;
        let connection = participant.connection.take()?;
        self.start_grace(sid, participant.epoch);
        Some(connection)
    }

    /// After the grace period, tells the room that `sid`'s connection `epoch` is gone
    /// for good, unless the participant resumed meanwhile.
    fn start_grace(self: &Arc<Self>, sid: &str, epoch: u64) {
        let room = Arc::clone(self);
        let sid = sid.to_string();
        let grace = self.config().reconnect_grace();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            loop {
                let still_gone = {
                    let state = room.lock_state();
                    state.session.as_ref().is_some_and(|session| {
                        session.participants.get(&sid).is_some_and(|participant| {
                            participant.epoch == epoch
                                && participant.connection.is_none()
                                && *participant.node == *room.node.id
                        })
                    })
                };
                if !still_gone {
                    return;
                }
                let depart = Command::Depart {
                    sid: sid.clone(),
                    epoch,
                };
                if room.submit(depart, None).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Called when connection `epoch` of `sid` ended.
    pub fn connection_closed(self: &Arc<Self>, sid: &str, epoch: u64) {
        let mut state = self.lock_state();
        let Some(session) = state.session.as_mut() else {
            return;
        };
        let current = session.participants.get(sid).is_some_and(|participant| {
            participant.epoch == epoch && participant.connection.is_some()
        });
        if current {
            self.detach(session, sid);
        }
    }

    /// Removes a participant, tells the others, and returns its connection.
    fn remove_participant(
        self: &Arc<Self>,
        applying: &Applying,
        session: &mut Session,
        sid: &str,
    ) -> Option<Connection> {
        let participant = session.participants.remove(sid)?;
        if !participant.info.permission.hidden {
            let seq = session.next_seq();
            self.emit(
                session,
                &ServerMessage::ParticipantLeft {
                    seq,
                    sid: sid.to_string(),
                    identity: participant.info.identity.clone(),
                },
                Audience::Everyone,
            );
            self.webhook(
                applying,
                "participant_left",
                session,
                Some(&participant.info),
            );
        }
        participant.connection
    }

    /// Ends the session once nobody is left, or only hidden participants are (after
    /// someone else was there): the store goes with it, and hidden participants are told.
    fn end_session_if_empty(self: &Arc<Self>, applying: &Applying, state: &mut RoomState) -> bool {
        let over = state.session.as_ref().is_some_and(|session| {
            let visible = session
                .participants
                .values()
                .any(|participant| !participant.info.permission.hidden);
            session.participants.is_empty() || (session.announced && !visible)
        });
        if !over {
            return false;
        }
        let session = state.session.take().expect("checked");
        tracing::info!(room = %self.name, session = %session.id, keys = session.store.len(), "session ended");
        for participant in session.participants.values() {
            if let Some(connection) = &participant.connection {
                connection.close(
                    CloseReason::SessionEnded,
                    "the session ended: everyone left",
                );
            }
        }
        self.node.metrics.rooms.dec();
        if let (true, Some(cluster)) = (applying.origin, &self.node.cluster) {
            cluster.index(&self.name, false);
        }
        if session.announced {
            if applying.origin {
                self.node.metrics.sessions_ended.inc();
            }
            self.webhook(applying, "room_finished", &session, None);
        }
        true
    }
}

/// A joining connection's part of an `Admit` entry.
struct Joining {
    claims: Box<Claims>,
    resume: Option<ResumeRequest>,
    token_expired: bool,
    sid: String,
    resume_token: String,
    session_id: String,
}

impl Session {
    fn new(id: String, started_at: Millis) -> Self {
        Session {
            id,
            started_at,
            announced: false,
            seq: 0,
            store: Store::default(),
            metadata: String::new(),
            participants: HashMap::new(),
            log: VecDeque::new(),
        }
    }

    fn next_seq(&mut self) -> Seq {
        self.seq += 1;
        self.seq
    }

    fn summary(&self, room: &str) -> RoomSummary {
        RoomSummary {
            name: room.to_string(),
            session_id: self.id.clone(),
            started_at: self.started_at,
            metadata: self.metadata.clone(),
            participants: self
                .participants
                .values()
                .filter(|participant| !participant.info.permission.hidden)
                .count(),
        }
    }

    fn participant_by_identity(&self, identity: &str) -> Result<String, AdminError> {
        self.participants
            .iter()
            .find(|(_, participant)| participant.info.identity == identity)
            .map(|(sid, _)| sid.clone())
            .ok_or_else(|| AdminError::NoSuchParticipant(identity.to_string()))
    }

    /// The replay log's first event (the next one when the log is empty).
    fn oldest_logged(&self) -> Seq {
        self.log.front().map_or(self.seq + 1, |logged| logged.seq)
    }

    fn visible_participants(&self, except: &str) -> Vec<ParticipantInfo> {
        let mut participants: Vec<ParticipantInfo> = self
            .participants
            .iter()
            .filter(|(sid, participant)| *sid != except && !participant.info.permission.hidden)
            .map(|(_, participant)| participant.info.clone())
            .collect();
        participants.sort_by(|a, b| (a.joined_at, &a.sid).cmp(&(b.joined_at, &b.sid)));
        participants
    }

    /// The entries of `keys` (distinct, from `requested_keys`): every key's for `*`,
    /// plus an absent entry for each named key that does not exist.
    fn entries(&self, keys: &[String]) -> Vec<Entry> {
        if keys.iter().any(|key| key == WILDCARD_KEY) {
            let mut entries = self.store.all();
            let absent: Vec<Entry> = keys
                .iter()
                .filter(|key| key.as_str() != WILDCARD_KEY && !self.store.contains(key))
                .map(|key| Entry::absent(key.as_str()))
                .collect();
            entries.extend(absent);
            entries
        } else {
            keys.iter().map(|key| self.store.get(key)).collect()
        }
    }

    /// Whether `request` names a participant of this session, with its token.
    fn may_resume(&self, request: &ResumeRequest, claims: &Claims) -> bool {
        request.session_id == self.id
            && self
                .participants
                .get(&request.sid)
                .is_some_and(|participant| {
                    participant.resume_token == request.token
                        && participant.info.identity == claims.sub
                })
    }

    /// The frames a resumed connection gets first: what it missed, or a snapshot.
    fn resume_frames(&self, request: &ResumeRequest) -> Vec<Utf8Bytes> {
        let participant = &self.participants[&request.sid];
        let replies: Vec<&CachedReply> = participant
            .replies
            .iter()
            .filter(|reply| reply.id > request.last_reply_id)
            .collect();
        let log_covers_gap = request.last_seq <= self.seq
            && self
                .log
                .front()
                .map_or(request.last_seq == self.seq, |oldest| {
                    oldest.seq <= request.last_seq + 1
                });
        let mut info = ResumeInfo {
            session_id: self.id.clone(),
            last_request_id: participant.last_request_id,
            snapshot: None,
        };
        let mut frames = Vec::new();
        if log_covers_gap {
            frames.push(frame(&ServerMessage::Resumed(info)));
            // Events and replies in the order they were first sent.
            let mut replies = replies.into_iter().peekable();
            // Each event goes to the keys observed when it happened, as it did live.
            let (mut observing, changes) = participant.observed.since(request.last_seq);
            let mut changes = changes.into_iter().peekable();
            for logged in self
                .log
                .iter()
                .filter(|logged| logged.seq > request.last_seq)
            {
                while let Some(reply) = replies.next_if(|reply| reply.after_seq < logged.seq) {
                    frames.push(reply.frame.clone());
                }
                while let Some(change) = changes.next_if(|change| change.after_seq() < logged.seq) {
                    change.apply_to(&mut observing);
                }
                if logged
                    .audience
                    .includes(&request.sid, |key| observing.contains(key))
                {
                    frames.push(logged.frame.clone());
                }
            }
            frames.extend(replies.map(|reply| reply.frame.clone()));
        } else {
            let keys = participant.observed.keys();
            info.snapshot = Some(Snapshot {
                seq: self.seq,
                local: participant.info.clone(),
                participants: self.visible_participants(&request.sid),
                room_metadata: self.metadata.clone(),
                entries: self.entries(&keys),
            });
            frames.push(frame(&ServerMessage::Resumed(info)));
            frames.extend(replies.into_iter().map(|reply| reply.frame.clone()));
        }
        frames
    }
}

impl Participant {
    fn new(joining: &Joining, node: &str, at: Millis) -> Self {
        let claims = &joining.claims;
        let permission = ParticipantPermission {
            can_update_metadata: claims.can_update_own_metadata(),
            can_write_store: claims.can_write_store(),
            hidden: claims.video.hidden,
        };
        Participant {
            info: ParticipantInfo {
                sid: joining.sid.clone(),
                identity: claims.sub.clone(),
                name: claims.name.clone(),
                metadata: claims.metadata.clone(),
                attributes: claims
                    .attributes
                    .iter()
                    .filter(|(_, value)| !value.is_empty())
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
                version: 1,
                joined_at: at,
                permission,
            },
            claims: (**claims).clone(),
            resume_token: joining.resume_token.clone(),
            node: node.to_string(),
            epoch: 0,
            connection: None,
            observed: Observed::default(),
            last_request_id: 0,
            replies: VecDeque::new(),
            reply_bytes: 0,
        }
    }
}

/// Applies a partial update to `info`, checking every limit on the result.
pub fn apply_participant_update(
    info: &mut ParticipantInfo,
    attributes: Option<std::collections::BTreeMap<String, String>>,
    metadata: Option<String>,
    name: Option<String>,
    limits: &Limits,
) -> Result<(), ErrorBody> {
    if let Some(metadata) = metadata {
        if metadata.len() > limits.metadata_bytes {
            return Err(ErrorBody::limit(
                Limit::MetadataBytes,
                limits.metadata_bytes,
                metadata.len(),
            ));
        }
        info.metadata = metadata;
    }
    if let Some(name) = name {
        if name.len() > limits.name_bytes {
            return Err(ErrorBody::limit(
                Limit::NameBytes,
                limits.name_bytes,
                name.len(),
            ));
        }
        info.name = name;
    }
    if let Some(attributes) = attributes {
        for (key, value) in attributes {
            if key.is_empty() {
                return Err(ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    "attribute keys are non-empty",
                ));
            }
            if key.len() > limits.key_bytes {
                return Err(ErrorBody::limit(
                    Limit::KeyBytes,
                    limits.key_bytes,
                    key.len(),
                ));
            }
            if value.is_empty() {
                info.attributes.remove(&key);
            } else {
                info.attributes.insert(key, value);
            }
        }
        // Checked on the merged result: many small updates must not add up past it.
        let total: usize = info
            .attributes
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum();
        if total > limits.attributes_bytes {
            return Err(ErrorBody::limit(
                Limit::AttributesBytes,
                limits.attributes_bytes,
                total,
            ));
        }
    }
    Ok(())
}

/// The distinct keys a `get` or `observe` names, in their order, each valid, and no more
/// of them than one store may hold: the work of a request, and the size of its reply,
/// stay bounded by the limits whatever the frame lists.
fn requested_keys(keys: &[String], limits: &Limits) -> Result<Vec<String>, ErrorBody> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut distinct = Vec::new();
    for key in keys {
        if key != WILDCARD_KEY {
            validate_key(key, limits)?;
        }
        if seen.insert(key.as_str()) {
            distinct.push(key.clone());
            let named = distinct.len() - usize::from(seen.contains(WILDCARD_KEY));
            if named > limits.keys {
                return Err(keys_limit(
                    "distinct keys in one request",
                    limits.keys,
                    named,
                ));
            }
        }
    }
    Ok(distinct)
}

/// `limit_exceeded` on the `keys` limit, for what else it bounds than the store.
fn keys_limit(what: &str, max: usize, actual: usize) -> ErrorBody {
    let mut error = ErrorBody::limit(Limit::Keys, max, actual);
    error.message = format!("{what} would be {actual}, the limit is {max} (limits.keys)");
    error
}

fn frame(message: &ServerMessage) -> Utf8Bytes {
    serde_json::to_string(message)
        .expect("server messages serialize")
        .into()
}

fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// The server API's operations: what a backend may do to a room without being in it.
/// On any node of a cluster: the node loads the room for the call.
impl Rooms {
    /// Runs `read` on `room`'s session. In a cluster whose Redis cannot be reached, a
    /// room this node holds is read anyway, and the second value says it may be stale.
    async fn read<R>(
        &self,
        room: &str,
        read: impl FnOnce(&Session) -> Result<R, AdminError>,
    ) -> Result<(R, bool), AdminError> {
        let (found, stale, _in_use) = match self.open(room).await {
            Ok(opened) => (opened.room.clone(), false, Some(opened)),
            Err(unavailable) => match self.rooms.lock().get(room) {
                Some(found) if found.lock_state().loaded => (found.clone(), true, None),
                _ => return Err(unavailable.into()),
            },
        };
        let state = found.lock_state();
        let session = state
            .session
            .as_ref()
            .ok_or_else(|| AdminError::NoSuchRoom(room.to_string()))?;
        read(session).map(|value| (value, stale))
    }

    /// Appends a server API change to `room`'s log and waits for its outcome.
    async fn change(&self, room: &str, command: Command) -> Result<AdminOutcome, AdminError> {
        let found = self.open(room).await?;
        if found.lock_state().session.is_none() {
            return Err(AdminError::NoSuchRoom(room.to_string()));
        }
        let (answer, outcome) = oneshot::channel();
        let ticket = found.submit(command, Some(Pending::Admin(answer))).await?;
        match tokio::time::timeout(self.wait_limit(), outcome).await {
            Ok(Ok(outcome)) => outcome,
            _ => {
                found.forget(ticket);
                Err(AdminError::Unavailable(
                    "the change was stored but this node could not read it back in time".into(),
                ))
            }
        }
    }

    pub async fn list(&self, names: &[String]) -> Result<Vec<RoomSummary>, AdminError> {
        let candidates: Vec<String> = match &self.node.cluster {
            Some(cluster) => cluster.room_names().await?,
            None => self.rooms.lock().keys().cloned().collect(),
        };
        let mut listed = Vec::new();
        for name in candidates {
            if !names.is_empty() && !names.contains(&name) {
                continue;
            }
            match self.read(&name, |session| Ok(session.summary(&name))).await {
                Ok((summary, _)) => listed.push(summary),
                Err(AdminError::NoSuchRoom(_)) => {}
                Err(error) => return Err(error),
            }
        }
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }

    pub async fn participants(&self, room: &str) -> Result<Vec<ParticipantInfo>, AdminError> {
        self.read(room, |session| {
            let mut all: Vec<ParticipantInfo> = session
                .participants
                .values()
                .map(|participant| participant.info.clone())
                .collect();
            all.sort_by(|a, b| (a.joined_at, &a.sid).cmp(&(b.joined_at, &b.sid)));
            Ok(all)
        })
        .await
        .map(|(all, _)| all)
    }

    pub async fn participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<ParticipantInfo, AdminError> {
        self.read(room, |session| {
            let sid = session.participant_by_identity(identity)?;
            Ok(session.participants[&sid].info.clone())
        })
        .await
        .map(|(info, _)| info)
    }

    pub async fn update_participant(
        &self,
        room: &str,
        identity: &str,
        change: ParticipantChange,
    ) -> Result<ParticipantInfo, AdminError> {
        let command = Command::UpdateParticipant {
            identity: identity.to_string(),
            change,
        };
        match self.change(room, command).await? {
            AdminOutcome::Participant(info) => Ok(info),
            _ => unreachable!("an update answers with the participant"),
        }
    }

    pub async fn remove_participant(&self, room: &str, identity: &str) -> Result<(), AdminError> {
        let command = Command::RemoveParticipant {
            identity: identity.to_string(),
        };
        self.change(room, command).await.map(|_| ())
    }

    pub async fn set_room_metadata(
        &self,
        room: &str,
        metadata: String,
    ) -> Result<RoomSummary, AdminError> {
        match self
            .change(room, Command::SetRoomMetadata { metadata })
            .await?
        {
            AdminOutcome::Room(summary) => Ok(summary),
            _ => unreachable!("room metadata answers with the room"),
        }
    }

    /// The entries for `keys`; the flag says they may be stale (Redis unreachable).
    /// One key's entry (absent or not); the key is checked as a write's would be, so
    /// `*`, an empty key or an oversize one is refused.
    pub async fn store_entry(&self, room: &str, key: &str) -> Result<(Entry, bool), AdminError> {
        validate_key(key, &self.config().limits).map_err(AdminError::Refused)?;
        self.read(room, |session| Ok(session.store.get(key))).await
    }

    /// Every entry of the room's store.
    pub async fn store_list(&self, room: &str) -> Result<(Vec<Entry>, bool), AdminError> {
        self.read(room, |session| Ok(session.store.all())).await
    }

    /// A store write by the server API: `author` names the caller.
    pub async fn store_write(
        &self,
        room: &str,
        author: &str,
        key: &str,
        value: Option<serde_json::Value>,
        if_version: Option<u64>,
    ) -> Result<Entry, AdminError> {
        let command = Command::StoreWrite {
            author: author.to_string(),
            key: key.to_string(),
            value,
            if_version,
        };
        match self.change(room, command).await? {
            AdminOutcome::Entry(entry) => Ok(entry),
            _ => unreachable!("a write answers with the entry"),
        }
    }
}
