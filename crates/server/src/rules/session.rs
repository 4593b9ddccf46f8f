//! A session's data: who is in it, its store, and the recent events a resuming
//! connection may have missed. Read by the rules (`super`) and, through the read-only
//! methods here, by the server API.

use std::collections::VecDeque;

use roomstate_protocol::{
    Claims, Entry, Millis, ParticipantInfo, ParticipantPermission, RequestId, ResumeInfo, Seq,
    ServerMessage, Snapshot, WILDCARD_KEY,
};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::command::ResumeRequest;
use super::effects::{frame, Audience, Frame, RoomSummary};
use super::observed::Observed;
use super::store::Store;

/// One session: from the first participant's join to the last one's departure.
#[derive(Serialize, Deserialize)]
pub struct Session {
    pub(super) id: String,
    pub(super) started_at: Millis,
    /// Whether a participant that is not hidden has joined: only they start a session
    /// (and `room_started`), and the last of them to leave ends it.
    pub(super) announced: bool,
    pub(super) seq: Seq,
    pub(super) store: Store,
    pub(super) metadata: String,
    /// By sid. Sids are the server's random ids, so a fast hash is safe here: no client
    /// chooses a key.
    pub(super) participants: FxHashMap<String, Participant>,
    /// Recent events, oldest first, with contiguous sequence numbers.
    pub(super) log: VecDeque<Logged>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct Logged {
    pub seq: Seq,
    pub audience: Audience,
    #[serde(with = "frame_text")]
    pub frame: Frame,
}

#[derive(Serialize, Deserialize)]
pub(super) struct Participant {
    pub info: ParticipantInfo,
    pub claims: Claims,
    pub resume_token: String,
    /// The node the participant is connected through.
    pub node: String,
    /// Bumped on every resume: messages and departures name the epoch they belong to.
    pub epoch: u64,
    pub observed: Observed,
    pub last_request_id: RequestId,
    pub replies: VecDeque<CachedReply>,
    /// The bytes of `replies`' frames, kept under `reply_cache_bytes`.
    #[serde(default)]
    pub reply_bytes: usize,
}

#[derive(Serialize, Deserialize)]
pub(super) struct CachedReply {
    pub id: RequestId,
    /// The session's sequence number when the reply was queued: it follows every event
    /// up to this one.
    pub after_seq: Seq,
    #[serde(with = "frame_text")]
    pub frame: Frame,
}

mod frame_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Frame;

    pub fn serialize<S: Serializer>(frame: &Frame, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(frame.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Frame, D::Error> {
        String::deserialize(deserializer).map(|text| Frame::text(&text))
    }
}

/// The read-only view the server API and the room around the rules get.
impl Session {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn seq(&self) -> Seq {
        self.seq
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metadata(&self) -> &str {
        &self.metadata
    }

    /// Every participant, hidden ones too, in the order they joined.
    pub fn participant_infos(&self) -> Vec<ParticipantInfo> {
        let mut all: Vec<ParticipantInfo> = self
            .participants
            .values()
            .map(|participant| participant.info.clone())
            .collect();
        all.sort_by(|a, b| (a.joined_at, &a.sid).cmp(&(b.joined_at, &b.sid)));
        all
    }

    pub fn participant_with_identity(&self, identity: &str) -> Option<&ParticipantInfo> {
        self.participants
            .values()
            .map(|participant| &participant.info)
            .find(|info| info.identity == identity)
    }

    /// Participant `sid`'s epoch and the node it is connected through.
    pub fn attachment(&self, sid: &str) -> Option<(u64, &str)> {
        self.participants
            .get(sid)
            .map(|participant| (participant.epoch, participant.node.as_str()))
    }

    /// Whether participant `sid` observes `key` now.
    pub fn observes(&self, sid: &str, key: &str) -> bool {
        self.participants
            .get(sid)
            .is_some_and(|participant| participant.observed.contains(key))
    }

    /// The participants connected through `node`, with their epochs.
    pub fn connected_through<'a>(&'a self, node: &'a str) -> impl Iterator<Item = (&'a str, u64)> {
        self.participants
            .iter()
            .filter(move |(_, participant)| participant.node == node)
            .map(|(sid, participant)| (sid.as_str(), participant.epoch))
    }

    pub(super) fn new(id: String, started_at: Millis) -> Self {
        Session {
            id,
            started_at,
            announced: false,
            seq: 0,
            store: Store::default(),
            metadata: String::new(),
            participants: FxHashMap::default(),
            log: VecDeque::new(),
        }
    }

    pub(super) fn next_seq(&mut self) -> Seq {
        self.seq += 1;
        self.seq
    }

    pub fn summary(&self, room: &str) -> RoomSummary {
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

    pub(super) fn sid_of(&self, identity: &str) -> Option<String> {
        self.participants
            .iter()
            .find(|(_, participant)| participant.info.identity == identity)
            .map(|(sid, _)| sid.clone())
    }

    /// The replay log's first event (the next one when the log is empty).
    pub(super) fn oldest_logged(&self) -> Seq {
        self.log.front().map_or(self.seq + 1, |logged| logged.seq)
    }

    pub(super) fn visible_participants(&self, except: &str) -> Vec<ParticipantInfo> {
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
    pub fn entries(&self, keys: &[String]) -> Vec<Entry> {
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
    pub(super) fn may_resume(&self, request: &ResumeRequest, claims: &Claims) -> bool {
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
    pub(super) fn resume_frames(&self, request: &ResumeRequest) -> Vec<Frame> {
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
    /// A participant joining with `claims` as `sid`, through `node`, at `at`.
    pub fn new(claims: &Claims, sid: &str, resume_token: &str, node: &str, at: Millis) -> Self {
        let permission = ParticipantPermission {
            can_update_metadata: claims.can_update_own_metadata(),
            can_write_store: claims.can_write_store(),
            hidden: claims.video.hidden,
        };
        Participant {
            info: ParticipantInfo {
                sid: sid.to_string(),
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
            claims: claims.clone(),
            resume_token: resume_token.to_string(),
            node: node.to_string(),
            epoch: 0,
            observed: Observed::default(),
            last_request_id: 0,
            replies: VecDeque::new(),
            reply_bytes: 0,
        }
    }
}
