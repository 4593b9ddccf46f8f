//! The rules of a room, as a plain state machine: a [`Replica`] takes one entry of the
//! room's log at a time and returns the [`Effect`]s it asks for (frames for audiences,
//! replies, closes, answers, webhooks). Nothing in here takes a lock, reads a clock,
//! touches a socket, spawns a task or talks to Redis: the time and every new id travel
//! in the entry, chosen once by the node that appended it (see `command`), so every
//! replica given the same entries ends in the same state. `crate::room` runs it.

pub mod command;
pub mod effects;
pub mod observed;
pub mod session;
pub mod store;

use std::collections::{BTreeMap, HashSet};

use roomstate_protocol::{
    Claims, ClientMessage, CloseReason, Entry, ErrorBody, ErrorCode, JoinInfo, Limit, Limits,
    Millis, Outcome, ParticipantInfo, Reply, ReplyBody, ServerMessage, MAX_REQUESTS_IN_FLIGHT,
    PROTOCOL_VERSION, WILDCARD_KEY,
};
use serde::{Deserialize, Serialize};

use command::{Command, LogEntry, ResumeRequest};
pub use effects::{
    frame, AdminError, AdminOutcome, Audience, Counter, Effect, Effects, Frame, RoomSummary,
};
use session::{CachedReply, Logged, Participant, Session};
use store::{validate_key, Change};

/// Replies kept per participant for replay on resume: more than a client may have in
/// flight, so none it is waiting for can be missing.
const REPLY_CACHE: usize = 2 * MAX_REQUESTS_IN_FLIGHT;

/// What the rules take from the server's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: Limits,
    /// Events kept for resuming connections.
    pub replay_log_events: usize,
    /// Bytes of replies kept per participant for resuming connections.
    pub reply_cache_bytes: usize,
    /// Told to joining clients; the room around the rules keeps the time.
    pub reconnect_grace_ms: u64,
    /// Whether anyone listens to webhooks: if not, none is built.
    pub webhooks: bool,
}

/// One copy of a room's state.
pub struct Replica {
    room: String,
    settings: Settings,
    session: Option<Session>,
}

/// A replica as the cluster stores it (`Replica::snapshot`).
#[derive(Serialize, Deserialize)]
struct Snapshot<S> {
    session: Option<S>,
}

impl Replica {
    pub fn new(room: impl Into<String>, settings: Settings) -> Self {
        Replica {
            room: room.into(),
            settings,
            session: None,
        }
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The session, while the room has one.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The state, as text another replica can start from.
    pub fn snapshot(&self) -> String {
        serde_json::to_string(&Snapshot {
            session: self.session.as_ref(),
        })
        .expect("a room serializes")
    }

    /// Replaces the state with a snapshot's (`None`: no session).
    pub fn restore(&mut self, snapshot: Option<&str>) -> Result<(), serde_json::Error> {
        self.session = match snapshot {
            Some(text) => serde_json::from_str::<Snapshot<Session>>(text)?.session,
            None => None,
        };
        Ok(())
    }

    /// Forgets the session (the node no longer holds the room).
    pub fn clear(&mut self) {
        self.session = None;
    }

    /// Applies the room's next entry. `origin`: this node appended it, so it answers
    /// whoever waits on it, counts it and sends its webhooks; every other replica only
    /// delivers its events to the connections it holds.
    pub fn apply(&mut self, entry: LogEntry, origin: bool) -> Effects {
        let LogEntry {
            origin: node,
            ticket,
            at,
            command,
        } = entry;
        let mut applying = Applying {
            room: &self.room,
            settings: &self.settings,
            origin,
            ticket,
            at,
            effects: Vec::new(),
        };
        let slot = &mut self.session;
        match command {
            Command::Admit {
                claims,
                resume,
                token_expired,
                sid,
                resume_token,
                session_id,
            } => applying.admit(
                slot,
                &node,
                Joining {
                    claims,
                    resume,
                    token_expired,
                    sid,
                    resume_token,
                    session_id,
                },
            ),
            Command::Client {
                sid,
                epoch,
                message,
            } => applying.client(slot, &sid, epoch, message),
            Command::Depart { sid, epoch } => applying.depart(slot, &sid, epoch),
            Command::NodeGone { node } => applying.node_gone(slot, &node),
            command => {
                let outcome = applying.admin(slot, command);
                if origin {
                    applying.effects.push(Effect::Answer { ticket, outcome });
                }
            }
        }
        applying.effects
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

/// One entry being applied, and the effects it has asked for so far.
struct Applying<'a> {
    room: &'a str,
    settings: &'a Settings,
    origin: bool,
    ticket: u64,
    at: Millis,
    effects: Effects,
}

impl Applying<'_> {
    fn limits(&self) -> &Limits {
        &self.settings.limits
    }

    fn count(&mut self, counter: Counter) {
        if self.origin {
            self.effects.push(Effect::Count(counter));
        }
    }

    fn webhook(&mut self, event: &'static str, session: &Session, who: Option<&ParticipantInfo>) {
        if self.origin && self.settings.webhooks {
            self.effects.push(Effect::Webhook {
                event,
                room: session.summary(self.room),
                participant: who.cloned(),
            });
        }
    }

    fn admit(&mut self, slot: &mut Option<Session>, node: &str, joining: Joining) {
        if let (Some(resume), Some(session)) = (&joining.resume, slot.as_mut()) {
            if session.may_resume(resume, &joining.claims) {
                self.effects.push(Effect::Close {
                    sid: resume.sid.clone(),
                    reason: CloseReason::DuplicateIdentity,
                    message: "replaced by a resumed connection",
                });
                let participant = session
                    .participants
                    .get_mut(&resume.sid)
                    .expect("may_resume found it");
                participant.epoch += 1;
                participant.node = node.to_string();
                let epoch = participant.epoch;
                if self.origin {
                    tracing::debug!(room = %self.room, sid = %resume.sid, "resumed");
                    self.effects.push(Effect::Admitted {
                        ticket: self.ticket,
                        sid: resume.sid.clone(),
                        epoch,
                        frames: session.resume_frames(resume),
                    });
                }
                return;
            }
        }
        if joining.token_expired {
            // It could not resume, and an expired token may not join anew.
            if self.origin {
                self.effects.push(Effect::Refused {
                    ticket: self.ticket,
                    reason: CloseReason::TokenExpired,
                    message: "the access token has expired and this participant can no longer \
                              be resumed: join again with a fresh token",
                });
            }
            return;
        }
        if slot.is_none() {
            *slot = Some(Session::new(joining.session_id.clone(), self.at));
            if self.origin {
                self.effects.push(Effect::Listed(true));
            }
        }
        let session = slot.as_mut().expect("created above");
        let identity = joining.claims.sub.clone();
        if let Some(old_sid) = session.sid_of(&identity) {
            self.remove_participant(
                session,
                &old_sid,
                CloseReason::DuplicateIdentity,
                "another connection joined with this identity",
            );
        }
        let sid = joining.sid;
        let participant =
            Participant::new(&joining.claims, &sid, &joining.resume_token, node, self.at);
        let hidden = participant.info.permission.hidden;
        let info = participant.info.clone();
        session.participants.insert(sid.clone(), participant);
        if !hidden {
            if !session.announced {
                session.announced = true;
                tracing::info!(room = %self.room, session = %session.id, "session started");
                self.count(Counter::SessionStarted);
                self.webhook("room_started", session, None);
            }
            let seq = session.next_seq();
            self.emit(
                session,
                &ServerMessage::ParticipantJoined {
                    seq,
                    participant: info.clone(),
                },
                Audience::AllBut(sid.as_str().into()),
            );
            self.webhook("participant_joined", session, Some(&info));
        }
        if self.origin {
            let joined = ServerMessage::Joined(JoinInfo {
                protocol: PROTOCOL_VERSION,
                room: self.room.to_string(),
                session_id: session.id.clone(),
                seq: session.seq,
                resume_token: joining.resume_token,
                participants: session.visible_participants(&sid),
                local: info,
                room_metadata: session.metadata.clone(),
                limits: *self.limits(),
                reconnect_grace_ms: self.settings.reconnect_grace_ms,
            });
            tracing::debug!(room = %self.room, %sid, %identity, "joined");
            self.effects.push(Effect::Admitted {
                ticket: self.ticket,
                sid,
                epoch: 0,
                frames: vec![frame(&joined)],
            });
        }
    }

    /// `sid`'s connection `epoch` did not come back within the reconnect grace period.
    fn depart(&mut self, slot: &mut Option<Session>, sid: &str, epoch: u64) {
        let Some(session) = slot.as_mut() else {
            return;
        };
        // A connection attaches only as a new epoch, so a participant still at `epoch`
        // has had none since the one that went away.
        if session
            .participants
            .get(sid)
            .is_none_or(|participant| participant.epoch != epoch)
        {
            return;
        }
        tracing::debug!(room = %self.room, %sid, "did not resume within the grace period");
        self.remove_participant(
            session,
            sid,
            CloseReason::Unavailable,
            "did not resume within the reconnect grace period",
        );
        self.end_session_if_empty(slot);
    }

    /// Everyone connected through `node` has left with it.
    fn node_gone(&mut self, slot: &mut Option<Session>, node: &str) {
        let Some(session) = slot.as_mut() else {
            return;
        };
        let mut gone: Vec<String> = session
            .connected_through(node)
            .map(|(sid, _)| sid.to_string())
            .collect();
        // In one order on every replica: each departure takes the next sequence number.
        gone.sort_unstable();
        if !gone.is_empty() {
            tracing::info!(room = %self.room, %node, participants = gone.len(), "removing the participants of a node that stopped");
        }
        for sid in gone {
            // The node itself may still hold them, if it was taken for dead while cut
            // off from Redis.
            self.remove_participant(
                session,
                &sid,
                CloseReason::Unavailable,
                "this node lost touch with the cluster; reconnect",
            );
        }
        self.end_session_if_empty(slot);
    }

    fn admin(
        &mut self,
        slot: &mut Option<Session>,
        command: Command,
    ) -> Result<AdminOutcome, AdminError> {
        let Some(session) = slot.as_mut() else {
            return Err(AdminError::NoSuchRoom(self.room.to_string()));
        };
        let sid_of = |session: &Session, identity: &str| {
            session
                .sid_of(identity)
                .ok_or_else(|| AdminError::NoSuchParticipant(identity.to_string()))
        };
        match command {
            Command::UpdateParticipant { identity, change } => {
                let sid = sid_of(session, &identity)?;
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
            }
            Command::RemoveParticipant { identity } => {
                let sid = sid_of(session, &identity)?;
                self.remove_participant(
                    session,
                    &sid,
                    CloseReason::Removed,
                    "removed by the server API",
                );
                self.end_session_if_empty(slot);
                Ok(AdminOutcome::Removed)
            }
            Command::SetRoomMetadata { metadata } => {
                let limit = self.limits().metadata_bytes;
                ErrorBody::within(Limit::MetadataBytes, limit, metadata.len())
                    .map_err(AdminError::Refused)?;
                session.metadata = metadata.clone();
                let seq = session.next_seq();
                self.emit(
                    session,
                    &ServerMessage::RoomMetadataChanged { seq, metadata },
                    Audience::Everyone,
                );
                Ok(AdminOutcome::Room(session.summary(self.room)))
            }
            Command::StoreWrite {
                author,
                key,
                value,
                if_version,
            } => self
                .write_as(session, &author, &key, value, if_version)
                .map(AdminOutcome::Entry)
                .map_err(AdminError::Refused),
            Command::Admit { .. }
            | Command::Client { .. }
            | Command::Depart { .. }
            | Command::NodeGone { .. } => unreachable!("not a server API command"),
        }
    }

    /// A message from participant `sid`'s connection `epoch`.
    fn client(
        &mut self,
        slot: &mut Option<Session>,
        sid: &str,
        epoch: u64,
        message: ClientMessage,
    ) {
        let Some(session) = slot.as_mut() else {
            return;
        };
        let Some(participant) = session.participants.get_mut(sid) else {
            return;
        };
        if participant.epoch != epoch {
            return; // From a connection that was replaced; it no longer counts.
        }
        let Some(id) = message.request_id() else {
            // `leave`
            self.remove_participant(session, sid, CloseReason::Left, "left the room");
            self.end_session_if_empty(slot);
            return;
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
            self.effects.push(Effect::Send {
                sid: sid.to_string(),
                frame: frame(&rejected),
            });
            self.count(Counter::Error(ErrorCode::InvalidRequest));
            return;
        }
        participant.last_request_id = id;
        let outcome = match self.request(session, sid, message) {
            Ok(body) => Outcome::Ok(body),
            Err(error) => {
                self.count(Counter::Error(error.code));
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
        let byte_budget = self.settings.reply_cache_bytes;
        while participant.replies.len() > REPLY_CACHE
            || (participant.reply_bytes > byte_budget && participant.replies.len() > 1)
        {
            let dropped = participant.replies.pop_front().expect("not empty");
            participant.reply_bytes -= dropped.frame.len();
        }
        self.effects.push(Effect::Send {
            sid: sid.to_string(),
            frame: reply,
        });
    }

    fn request(
        &mut self,
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
        &mut self,
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
        &mut self,
        session: &mut Session,
        author: &str,
        key: &str,
        value: Option<serde_json::Value>,
        if_version: Option<u64>,
    ) -> Result<Entry, ErrorBody> {
        let seq = session.seq + 1;
        let change = Change {
            key,
            value,
            if_version,
            author,
            at: self.at,
            seq,
        };
        match session.store.write(change, &self.settings.limits)? {
            Some(written) => {
                session.seq = seq;
                self.count(Counter::StoreWrite);
                // The event is serialized before its entry goes on to the reply.
                let event = ServerMessage::StoreChanged(written);
                self.emit(session, &event, Audience::Observers(key.into()));
                let ServerMessage::StoreChanged(written) = event else {
                    unreachable!("the event made above")
                };
                Ok(written)
            }
            None => Ok(Entry::absent(key)),
        }
    }

    /// Replaces a participant's info with `info` as its next version and tells everyone.
    fn update_participant(
        &mut self,
        session: &mut Session,
        sid: &str,
        mut info: ParticipantInfo,
    ) -> ParticipantInfo {
        let participant = session.participants.get_mut(sid).expect("caller checked");
        info.version = participant.info.version + 1;
        participant.info = info.clone();
        let audience = if info.permission.hidden {
            Audience::Only(sid.into())
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

    /// Keeps `message` for replay and asks for it to be delivered to its audience.
    fn emit(&mut self, session: &mut Session, message: &ServerMessage, audience: Audience) {
        let seq = message.seq().expect("only events are emitted");
        debug_assert_eq!(seq, session.seq, "events are emitted in sequence order");
        let frame = frame(message);
        session.log.push_back(Logged {
            seq,
            audience: audience.clone(),
            frame: frame.clone(),
        });
        if session.log.len() > self.settings.replay_log_events {
            session.log.pop_front();
        }
        self.effects.push(Effect::Event { audience, frame });
    }

    /// Removes a participant (its connection closed first, so it does not hear of its
    /// own departure) and tells the others.
    fn remove_participant(
        &mut self,
        session: &mut Session,
        sid: &str,
        reason: CloseReason,
        message: &'static str,
    ) {
        let Some(participant) = session.participants.remove(sid) else {
            return;
        };
        self.effects.push(Effect::Close {
            sid: sid.to_string(),
            reason,
            message,
        });
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
    }

    /// Ends the session once nobody is left, or only hidden participants are (after
    /// someone else was there): the store goes with it, and hidden participants are told.
    fn end_session_if_empty(&mut self, slot: &mut Option<Session>) {
        let over = slot.as_ref().is_some_and(|session| {
            let visible = session
                .participants
                .values()
                .any(|participant| !participant.info.permission.hidden);
            session.participants.is_empty() || (session.announced && !visible)
        });
        if !over {
            return;
        }
        let session = slot.take().expect("checked");
        tracing::info!(room = %self.room, session = %session.id, keys = session.store.len(), "session ended");
        for sid in session.participants.keys() {
            self.effects.push(Effect::Close {
                sid: sid.clone(),
                reason: CloseReason::SessionEnded,
                message: "the session ended: everyone left",
            });
        }
        if self.origin {
            self.effects.push(Effect::Listed(false));
        }
        if session.announced {
            self.count(Counter::SessionEnded);
            self.webhook("room_finished", &session, None);
        }
    }
}

/// Applies a partial update to `info`, checking every limit on the result.
pub fn apply_participant_update(
    info: &mut ParticipantInfo,
    attributes: Option<BTreeMap<String, String>>,
    metadata: Option<String>,
    name: Option<String>,
    limits: &Limits,
) -> Result<(), ErrorBody> {
    if let Some(metadata) = metadata {
        ErrorBody::within(Limit::MetadataBytes, limits.metadata_bytes, metadata.len())?;
        info.metadata = metadata;
    }
    if let Some(name) = name {
        ErrorBody::within(Limit::NameBytes, limits.name_bytes, name.len())?;
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
            ErrorBody::within(Limit::KeyBytes, limits.key_bytes, key.len())?;
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
        ErrorBody::within(Limit::AttributesBytes, limits.attributes_bytes, total)?;
    }
    Ok(())
}

/// The distinct keys a `get` or `observe` names, in their order, each valid, and no more
/// of them than one store may hold: the work of a request, and the size of its reply,
/// stay bounded by the limits whatever the frame lists.
pub fn requested_keys(keys: &[String], limits: &Limits) -> Result<Vec<String>, ErrorBody> {
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
