//! Rooms on one node: sessions, participants, the store, and the fan-out of changes.
//!
//! Everything that happens in a room happens under that room's lock, in one order: a
//! change is applied, its sequence number assigned, and its frame queued to every
//! connection that should see it before the lock is released. Queues are bounded and
//! never waited on: a connection whose queue is full is cut (it may resume), so one
//! slow reader never slows the room.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use roomstate_protocol::{
    Claims, ClientMessage, CloseReason, Entry, ErrorBody, ErrorCode, JoinInfo, Limit, Limits,
    Millis, Outcome, ParticipantInfo, ParticipantPermission, Reply, ReplyBody, RequestId,
    ResumeInfo, Seq, ServerMessage, Snapshot, MAX_REQUESTS_IN_FLIGHT, PROTOCOL_VERSION,
    WILDCARD_KEY,
};
use tokio::sync::{mpsc, watch};

use crate::config::ServerConfig;
use crate::livekit;
use crate::metrics::Metrics;
use crate::store::{validate_key, Change, Store};
use crate::webhook::Webhooks;

/// Replies kept per participant for replay on resume: more than a client may have in
/// flight, so none it is waiting for can be missing.
const REPLY_CACHE: usize = 2 * MAX_REQUESTS_IN_FLIGHT;

/// What every room of a node shares.
pub struct Node {
    pub config: ServerConfig,
    pub metrics: Metrics,
    pub webhooks: Option<Webhooks>,
}

/// Every room of this node.
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
}

/// A room as the server API lists it.
pub struct RoomSummary {
    pub name: String,
    pub session_id: String,
    pub started_at: Millis,
    pub metadata: String,
    pub participants: usize,
}

/// What a server API call changes in a participant; absent fields stay.
#[derive(Default)]
pub struct ParticipantChange {
    pub metadata: Option<String>,
    pub name: Option<String>,
    pub attributes: Option<std::collections::BTreeMap<String, String>>,
    pub can_update_metadata: Option<bool>,
}

/// What the upgrade handler learned about a connecting client.
pub struct Admission {
    pub claims: Claims,
    pub room: String,
    pub resume: Option<ResumeRequest>,
}

pub struct ResumeRequest {
    pub sid: String,
    pub token: String,
    pub session_id: String,
    pub last_seq: Seq,
    pub last_reply_id: RequestId,
}

/// A connection, admitted: the frames to write before anything else, and where its
/// requests go.
pub struct Admitted {
    pub room: Arc<Room>,
    pub sid: String,
    pub initial: Vec<Utf8Bytes>,
}

/// The room's handle on one WebSocket connection.
#[derive(Clone)]
pub struct Connection {
    id: u64,
    frames: mpsc::Sender<Utf8Bytes>,
    close: Arc<watch::Sender<Option<Closing>>>,
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
    ) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Connection {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            frames,
            close,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues a frame; `false` when the queue is full (the connection is too slow).
    fn send(&self, frame: &Utf8Bytes) -> bool {
        match self.frames.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => false,
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

impl Rooms {
    pub fn new(node: Arc<Node>) -> Self {
        Rooms {
            node,
            rooms: Arc::default(),
        }
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

    /// Joins or resumes a participant, and returns the frames it gets first.
    pub fn admit(&self, admission: Admission, connection: Connection) -> Admitted {
        loop {
            let room = self
                .rooms
                .lock()
                .entry(admission.room.clone())
                .or_insert_with(|| {
                    Arc::new(Room {
                        name: admission.room.clone(),
                        node: self.node.clone(),
                        registry: Arc::downgrade(&self.rooms),
                        state: Mutex::new(RoomState::default()),
                    })
                })
                .clone();
            let mut state = room.state.lock();
            if state.removed {
                // It emptied while we looked it up; forget it and make a new one.
                drop(state);
                room.unregister();
                continue;
            }
            let (sid, initial) = room.admit_locked(&mut state, &admission, connection);
            drop(state);
            return Admitted { room, sid, initial };
        }
    }
}

pub struct Room {
    name: String,
    node: Arc<Node>,
    registry: Weak<Mutex<HashMap<String, Arc<Room>>>>,
    state: Mutex<RoomState>,
}

#[derive(Default)]
struct RoomState {
    /// Set when the room emptied and left the registry; a new `Room` takes its name.
    removed: bool,
    session: Option<Session>,
}

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

struct Logged {
    seq: Seq,
    audience: Audience,
    frame: Utf8Bytes,
}

/// Who hears about an event.
#[derive(Clone)]
enum Audience {
    Everyone,
    AllBut(String),
    Only(String),
    Observers(String),
}

struct Participant {
    info: ParticipantInfo,
    claims: Claims,
    resume_token: String,
    /// `None` while the participant waits to resume.
    connection: Option<Connection>,
    /// Bumped whenever the connection goes away, so a departure timer that fires after
    /// a resume knows it is stale.
    departure: u64,
    observed: Observed,
    last_request_id: RequestId,
    replies: VecDeque<CachedReply>,
}

#[derive(Default)]
struct Observed {
    all: bool,
    keys: HashSet<String>,
}

impl Observed {
    fn contains(&self, key: &str) -> bool {
        self.all || self.keys.contains(key)
    }
}

struct CachedReply {
    id: RequestId,
    /// The session's sequence number when the reply was queued: it follows every event
    /// up to this one.
    after_seq: Seq,
    frame: Utf8Bytes,
}

impl Audience {
    fn includes(&self, sid: &str, participant: &Participant) -> bool {
        match self {
            Audience::Everyone => true,
            Audience::AllBut(excluded) => excluded != sid,
            Audience::Only(only) => only == sid,
            Audience::Observers(key) => participant.observed.contains(key),
        }
    }
}

impl Room {
    pub fn name(&self) -> &str {
        &self.name
    }

    fn limits(&self) -> &Limits {
        &self.node.config.limits
    }

    fn config(&self) -> &ServerConfig {
        &self.node.config
    }

    fn webhook(&self, event: &str, session: &Session, participant: Option<&ParticipantInfo>) {
        if let Some(webhooks) = &self.node.webhooks {
            webhooks.send(
                event,
                livekit::room(&self.name, &session.summary(&self.name)),
                participant.map(livekit::participant),
            );
        }
    }

    fn unregister(self: &Arc<Self>) {
        if let Some(registry) = self.registry.upgrade() {
            let mut rooms = registry.lock();
            if rooms
                .get(&self.name)
                .is_some_and(|room| Arc::ptr_eq(room, self))
            {
                rooms.remove(&self.name);
            }
        }
    }

    fn admit_locked(
        self: &Arc<Self>,
        state: &mut RoomState,
        admission: &Admission,
        connection: Connection,
    ) -> (String, Vec<Utf8Bytes>) {
        if let (Some(resume), Some(session)) = (&admission.resume, state.session.as_mut()) {
            if let Some(frames) = session.resume(resume, &admission.claims, connection.clone()) {
                tracing::debug!(room = %self.name, sid = %resume.sid, "resumed");
                return (resume.sid.clone(), frames);
            }
        }
        let session = state.session.get_or_insert_with(|| {
            self.node.metrics.rooms.inc();
            Session::new()
        });
        let identity = &admission.claims.sub;
        let duplicate = session
            .participants
            .iter()
            .find(|(_, participant)| &participant.info.identity == identity)
            .map(|(sid, _)| sid.clone());
        if let Some(old_sid) = duplicate {
            if let Some(old) = self.remove_participant(session, &old_sid) {
                old.close(
                    CloseReason::DuplicateIdentity,
                    "another connection joined with this identity",
                );
            }
        }
        let participant = Participant::new(&admission.claims, connection);
        let sid = participant.info.sid.clone();
        let hidden = participant.info.permission.hidden;
        let info = participant.info.clone();
        session.participants.insert(sid.clone(), participant);
        if !hidden {
            if !session.announced {
                session.announced = true;
                tracing::info!(room = %self.name, session = %session.id, "session started");
                self.node.metrics.sessions_started.inc();
                self.webhook("room_started", session, None);
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
            self.webhook("participant_joined", session, Some(&info));
        }
        let joined = ServerMessage::Joined(JoinInfo {
            protocol: PROTOCOL_VERSION,
            room: self.name.clone(),
            session_id: session.id.clone(),
            seq: session.seq,
            resume_token: session.participants[&sid].resume_token.clone(),
            participants: session.visible_participants(&sid),
            local: info,
            room_metadata: session.metadata.clone(),
            limits: *self.limits(),
            reconnect_grace_ms: self.config().reconnect_grace_ms,
        });
        tracing::debug!(room = %self.name, %sid, identity = %identity, "joined");
        (sid, vec![frame(&joined)])
    }

    /// Handles one message from the connection `connection_id` of participant `sid`.
    pub fn handle(self: &Arc<Self>, sid: &str, connection_id: u64, message: ClientMessage) {
        let mut state = self.state.lock();
        let Some(session) = state.session.as_mut() else {
            return;
        };
        let Some(participant) = session.participants.get_mut(sid) else {
            return;
        };
        let Some(connection) = participant
            .connection
            .clone()
            .filter(|connection| connection.id == connection_id)
        else {
            return; // A connection that was replaced; its frames no longer count.
        };
        let Some(id) = message.request_id() else {
            // `leave`
            self.remove_participant(session, sid);
            connection.close(CloseReason::Left, "left the room");
            self.end_session_if_empty(&mut state);
            return;
        };
        if id <= participant.last_request_id {
            let rejected = ServerMessage::Rejected {
                error: ErrorBody::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "request id {id} is not above the last one, {}",
                        participant.last_request_id
                    ),
                ),
            };
            connection.send(&frame(&rejected));
            return;
        }
        participant.last_request_id = id;
        let outcome = match self.apply(session, sid, message) {
            Ok(body) => Outcome::Ok(body),
            Err(error) => {
                self.node.metrics.error(error.code.as_str());
                Outcome::Error(error)
            }
        };
        let reply = frame(&ServerMessage::Reply(Reply { id, outcome }));
        let after_seq = session.seq;
        let participant = session
            .participants
            .get_mut(sid)
            .expect("a request does not remove its sender");
        participant.replies.push_back(CachedReply {
            id,
            after_seq,
            frame: reply.clone(),
        });
        if participant.replies.len() > REPLY_CACHE {
            participant.replies.pop_front();
        }
        if !connection.send(&reply) {
            self.cut_slow_consumer(session, sid);
        }
    }

    fn apply(
        self: &Arc<Self>,
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
            } => self.write(session, sid, &key, Some(value), if_version),
            ClientMessage::Delete {
                key, if_version, ..
            } => self.write(session, sid, &key, None, if_version),
            ClientMessage::Get { keys, .. } => {
                validate_keys(&keys, &limits)?;
                Ok(ReplyBody::Entries(session.entries(&keys)))
            }
            ClientMessage::Observe { keys, .. } => {
                validate_keys(&keys, &limits)?;
                let entries = session.entries(&keys);
                let observed = &mut session
                    .participants
                    .get_mut(sid)
                    .expect("checked above")
                    .observed;
                for key in keys {
                    if key == WILDCARD_KEY {
                        observed.all = true;
                    } else {
                        observed.keys.insert(key);
                    }
                }
                Ok(ReplyBody::Entries(entries))
            }
            ClientMessage::Unobserve { keys, .. } => {
                let observed = &mut session
                    .participants
                    .get_mut(sid)
                    .expect("checked above")
                    .observed;
                for key in &keys {
                    if key == WILDCARD_KEY {
                        observed.all = false;
                    } else {
                        observed.keys.remove(key);
                    }
                }
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
        self.write_as(session, &author, key, value, if_version)
            .map(ReplyBody::Entry)
    }

    /// Applies a store write by `author` and tells the key's observers.
    fn write_as(
        self: &Arc<Self>,
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
            at: now_millis(),
            seq,
        };
        match session.store.write(change, &limits)? {
            Some(written) => {
                session.seq = seq;
                self.node.metrics.store_writes.inc();
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

    /// Queues `message` to its audience and keeps it for replay.
    fn emit(self: &Arc<Self>, session: &mut Session, message: &ServerMessage, audience: Audience) {
        let seq = message.seq().expect("only events are emitted");
        debug_assert_eq!(seq, session.seq, "events are emitted in sequence order");
        let started = std::time::Instant::now();
        let frame = frame(message);
        let mut too_slow = Vec::new();
        for (sid, participant) in &session.participants {
            if let Some(connection) = &participant.connection {
                if audience.includes(sid, participant) && !connection.send(&frame) {
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
        participant.departure += 1;
        let departure = participant.departure;
        let room = Arc::clone(self);
        let sid = sid.to_string();
        let grace = self.config().reconnect_grace();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            room.depart_if_still_gone(&sid, departure);
        });
        Some(connection)
    }

    fn depart_if_still_gone(self: &Arc<Self>, sid: &str, departure: u64) {
        let mut state = self.state.lock();
        let Some(session) = state.session.as_mut() else {
            return;
        };
        let gone = session.participants.get(sid).is_some_and(|participant| {
            participant.connection.is_none() && participant.departure == departure
        });
        if gone {
            tracing::debug!(room = %self.name, %sid, "did not resume within the grace period");
            self.remove_participant(session, sid);
            self.end_session_if_empty(&mut state);
        }
    }

    /// Called when connection `connection_id` of `sid` ended.
    pub fn connection_closed(self: &Arc<Self>, sid: &str, connection_id: u64) {
        let mut state = self.state.lock();
        let Some(session) = state.session.as_mut() else {
            return;
        };
        let current = session
            .participants
            .get(sid)
            .and_then(|participant| participant.connection.as_ref())
            .is_some_and(|connection| connection.id == connection_id);
        if current {
            self.detach(session, sid);
        }
    }

    /// Removes a participant, tells the others, and returns its connection.
    fn remove_participant(
        self: &Arc<Self>,
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
            self.webhook("participant_left", session, Some(&participant.info));
        }
        participant.connection
    }

    /// Ends the session once nobody is left, or only hidden participants are (after
    /// someone else was there): the store goes with it, and hidden participants are told.
    fn end_session_if_empty(self: &Arc<Self>, state: &mut RoomState) {
        let over = state.session.as_ref().is_some_and(|session| {
            let visible = session
                .participants
                .values()
                .any(|participant| !participant.info.permission.hidden);
            session.participants.is_empty() || (session.announced && !visible)
        });
        if over {
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
            if session.announced {
                self.node.metrics.sessions_ended.inc();
                self.webhook("room_finished", &session, None);
            }
            state.removed = true;
            let room = Arc::clone(self);
            // Not under this room's lock: the registry's lock comes first.
            tokio::spawn(async move { room.unregister() });
        }
    }
}

impl Session {
    fn new() -> Self {
        Session {
            id: format!("SE_{}", random_id()),
            started_at: now_millis(),
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

    fn visible_participants(&self, except: &str) -> Vec<ParticipantInfo> {
        let mut participants: Vec<ParticipantInfo> = self
            .participants
            .iter()
            .filter(|(sid, participant)| *sid != except && !participant.info.permission.hidden)
            .map(|(_, participant)| participant.info.clone())
            .collect();
        participants.sort_by_key(|info| info.joined_at);
        participants
    }

    fn entries(&self, keys: &[String]) -> Vec<Entry> {
        if keys.iter().any(|key| key == WILDCARD_KEY) {
            let mut entries = self.store.all();
            for key in keys {
                if key != WILDCARD_KEY && !entries.iter().any(|entry| &entry.key == key) {
                    entries.push(Entry::absent(key.as_str()));
                }
            }
            entries
        } else {
            keys.iter().map(|key| self.store.get(key)).collect()
        }
    }

    /// Resumes `request.sid` on `connection` if it is still here and the token matches;
    /// returns the frames to send first.
    fn resume(
        &mut self,
        request: &ResumeRequest,
        claims: &Claims,
        connection: Connection,
    ) -> Option<Vec<Utf8Bytes>> {
        if request.session_id != self.id {
            return None;
        }
        let participant = self.participants.get_mut(&request.sid)?;
        if participant.resume_token != request.token || participant.info.identity != claims.sub {
            return None;
        }
        if let Some(old) = participant.connection.replace(connection) {
            old.close(
                CloseReason::DuplicateIdentity,
                "replaced by a resumed connection",
            );
        }
        participant.departure += 1;
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
            for logged in self
                .log
                .iter()
                .filter(|logged| logged.seq > request.last_seq)
            {
                while let Some(reply) = replies.next_if(|reply| reply.after_seq < logged.seq) {
                    frames.push(reply.frame.clone());
                }
                if logged.audience.includes(&request.sid, participant) {
                    frames.push(logged.frame.clone());
                }
            }
            frames.extend(replies.map(|reply| reply.frame.clone()));
        } else {
            let mut keys: Vec<String> = participant.observed.keys.iter().cloned().collect();
            if participant.observed.all {
                keys.push(WILDCARD_KEY.to_string());
            }
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
        Some(frames)
    }
}

impl Participant {
    fn new(claims: &Claims, connection: Connection) -> Self {
        let permission = ParticipantPermission {
            can_update_metadata: claims.can_update_own_metadata(),
            can_write_store: claims.can_write_store(),
            hidden: claims.video.hidden,
        };
        Participant {
            info: ParticipantInfo {
                sid: format!("PA_{}", random_id()),
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
                joined_at: now_millis(),
                permission,
            },
            claims: claims.clone(),
            resume_token: format!("{:032x}", rand::random::<u128>()),
            connection: Some(connection),
            departure: 0,
            observed: Observed::default(),
            last_request_id: 0,
            replies: VecDeque::new(),
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

fn validate_keys(keys: &[String], limits: &Limits) -> Result<(), ErrorBody> {
    keys.iter()
        .filter(|key| key.as_str() != WILDCARD_KEY)
        .try_for_each(|key| validate_key(key, limits))
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
impl Rooms {
    /// Runs `operation` on `room`'s session, if it has one.
    fn with_session<R>(
        &self,
        room: &str,
        operation: impl FnOnce(&Arc<Room>, &mut RoomState) -> Result<R, AdminError>,
    ) -> Result<R, AdminError> {
        let found = self.rooms.lock().get(room).cloned();
        let Some(found) = found else {
            return Err(AdminError::NoSuchRoom(room.to_string()));
        };
        let mut state = found.state.lock();
        if state.session.is_none() {
            return Err(AdminError::NoSuchRoom(room.to_string()));
        }
        operation(&found, &mut state)
    }

    pub fn list(&self, names: &[String]) -> Vec<RoomSummary> {
        let rooms: Vec<Arc<Room>> = self.rooms.lock().values().cloned().collect();
        let mut listed: Vec<RoomSummary> = rooms
            .iter()
            .filter(|room| names.is_empty() || names.contains(&room.name))
            .filter_map(|room| {
                let state = room.state.lock();
                state
                    .session
                    .as_ref()
                    .map(|session| session.summary(&room.name))
            })
            .collect();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        listed
    }

    pub fn participants(&self, room: &str) -> Result<Vec<ParticipantInfo>, AdminError> {
        self.with_session(room, |_, state| {
            let session = state.session.as_ref().expect("checked");
            let mut all: Vec<ParticipantInfo> = session
                .participants
                .values()
                .map(|participant| participant.info.clone())
                .collect();
            all.sort_by_key(|info| info.joined_at);
            Ok(all)
        })
    }

    pub fn participant(&self, room: &str, identity: &str) -> Result<ParticipantInfo, AdminError> {
        self.with_session(room, |_, state| {
            let session = state.session.as_ref().expect("checked");
            let sid = session.participant_by_identity(identity)?;
            Ok(session.participants[&sid].info.clone())
        })
    }

    pub fn update_participant(
        &self,
        room: &str,
        identity: &str,
        change: ParticipantChange,
    ) -> Result<ParticipantInfo, AdminError> {
        self.with_session(room, |room, state| {
            let session = state.session.as_mut().expect("checked");
            let sid = session.participant_by_identity(identity)?;
            let mut info = session.participants[&sid].info.clone();
            apply_participant_update(
                &mut info,
                change.attributes,
                change.metadata,
                change.name,
                room.limits(),
            )
            .map_err(AdminError::Refused)?;
            if let Some(allowed) = change.can_update_metadata {
                info.permission.can_update_metadata = allowed;
            }
            Ok(room.update_participant(session, &sid, info))
        })
    }

    pub fn remove_participant(&self, room: &str, identity: &str) -> Result<(), AdminError> {
        self.with_session(room, |room, state| {
            let session = state.session.as_mut().expect("checked");
            let sid = session.participant_by_identity(identity)?;
            if let Some(connection) = room.remove_participant(session, &sid) {
                connection.close(CloseReason::Removed, "removed by the server API");
            }
            room.end_session_if_empty(state);
            Ok(())
        })
    }

    pub fn set_room_metadata(
        &self,
        room: &str,
        metadata: String,
    ) -> Result<RoomSummary, AdminError> {
        self.with_session(room, |room, state| {
            let limit = room.limits().metadata_bytes;
            if metadata.len() > limit {
                return Err(AdminError::Refused(ErrorBody::limit(
                    Limit::MetadataBytes,
                    limit,
                    metadata.len(),
                )));
            }
            let session = state.session.as_mut().expect("checked");
            session.metadata = metadata.clone();
            let seq = session.next_seq();
            room.emit(
                session,
                &ServerMessage::RoomMetadataChanged { seq, metadata },
                Audience::Everyone,
            );
            Ok(session.summary(&room.name))
        })
    }

    pub fn store_entries(&self, room: &str, keys: &[String]) -> Result<Vec<Entry>, AdminError> {
        self.with_session(room, |_, state| {
            let session = state.session.as_ref().expect("checked");
            Ok(session.entries(keys))
        })
    }

    /// A store write by the server API: `author` names the caller.
    pub fn store_write(
        &self,
        room: &str,
        author: &str,
        key: &str,
        value: Option<serde_json::Value>,
        if_version: Option<u64>,
    ) -> Result<Entry, AdminError> {
        self.with_session(room, |room, state| {
            let session = state.session.as_mut().expect("checked");
            room.write_as(session, author, key, value, if_version)
                .map_err(AdminError::Refused)
        })
    }
}
