//! The rules of a room alone, with no server process: random sequences of entries
//! (joins, writes, compare-and-set, observes, cuts, resumes, departures, leaves, a node
//! going away, server API calls) applied to two replicas, one as the node that
//! appended every entry and one as another node, and checked after every step against
//! a model a page long:
//! - every reply is the one the model predicts (versions, conflicts, permissions,
//!   limits on merged totals), and the store, the sequence number and the participants
//!   are the model's;
//! - every store change reaches exactly the connections observing its key, once, and
//!   each connection gets events in strictly increasing order; a resumed connection gets
//!   exactly the changes it missed, or a snapshot equal to the model's store;
//! - the session and its store are gone once its last visible participant has left;
//! - both replicas end every step in the same state and deliver the same events.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use roomstate_protocol::{
    Claims, ClientMessage, CloseReason, ErrorCode, Limits, Outcome, ParticipantInfo,
    RoomStateGrant, Seq, ServerMessage, VideoGrant,
};
use roomstate_server::rules::command::{Command, LogEntry, ResumeRequest};
use roomstate_server::rules::{
    AdminError, AdminOutcome, Audience, Effect, Effects, Frame, Replica, Settings,
};
use serde_json::Value;

/// p0 may do anything; p1 may not write the store nor update itself; p2 is hidden;
/// p3 may write only keys starting with "a".
const PEOPLE: usize = 4;
const KEYS: [&str; 4] = ["a1", "a2", "b1", "b2"];
const NODES: [&str; 2] = ["n0", "n1"];

fn limits() -> Limits {
    Limits {
        value_bytes: 40,
        keys: 3,
        store_bytes: 60,
        key_bytes: 8,
        attributes_bytes: 30,
        metadata_bytes: 20,
        name_bytes: 16,
        ..Limits::default()
    }
}

fn settings() -> Settings {
    Settings {
        limits: limits(),
        replay_log_events: 6,
        reply_cache_bytes: 4096,
        reconnect_grace_ms: 1000,
        webhooks: true,
    }
}

fn claims(who: usize) -> Claims {
    let mut claims = Claims {
        sub: format!("p{who}"),
        video: VideoGrant {
            can_update_own_metadata: Some(who != 1),
            hidden: who == 2,
            ..VideoGrant::default()
        },
        ..Claims::default()
    };
    claims.roomstate = match who {
        1 => Some(RoomStateGrant {
            can_write_store: Some(false),
            store_write_prefixes: None,
        }),
        3 => Some(RoomStateGrant {
            can_write_store: None,
            store_write_prefixes: Some(vec!["a".into()]),
        }),
        _ => None,
    };
    claims
}

fn may_write(who: usize, key: &str) -> bool {
    match who {
        1 => false,
        3 => key.starts_with('a'),
        _ => true,
    }
}

#[derive(Debug, Clone, Copy)]
enum Cas {
    None,
    Current,
    Stale,
}

#[derive(Debug, Clone)]
enum Op {
    Join {
        who: usize,
        node: usize,
    },
    Set {
        who: usize,
        key: usize,
        size: usize,
        cas: Cas,
    },
    Delete {
        who: usize,
        key: usize,
        cas: Cas,
    },
    Observe {
        who: usize,
        keys: Vec<usize>,
    },
    Unobserve {
        who: usize,
        keys: Vec<usize>,
    },
    Get {
        who: usize,
        keys: Vec<usize>,
    },
    Update {
        who: usize,
        attribute: usize,
        size: usize,
    },
    Cut {
        who: usize,
    },
    Resume {
        who: usize,
        node: usize,
        expired: bool,
    },
    Depart {
        who: usize,
        stale: bool,
    },
    Leave {
        who: usize,
    },
    NodeGone {
        node: usize,
    },
    ApiWrite {
        key: usize,
        size: usize,
    },
    ApiMetadata {
        size: usize,
    },
    ApiRemove {
        who: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..PEOPLE;
    let key = 0..KEYS.len();
    let node = 0..NODES.len();
    // Index KEYS.len() is the wildcard.
    let keys = proptest::collection::vec(0..=KEYS.len(), 1..4);
    let size = prop_oneof![Just(5usize), Just(18), Just(45)];
    let cas = prop_oneof![Just(Cas::None), Just(Cas::Current), Just(Cas::Stale)];
    prop_oneof![
        3 => (who.clone(), node.clone()).prop_map(|(who, node)| Op::Join { who, node }),
        6 => (who.clone(), key.clone(), size.clone(), cas.clone())
            .prop_map(|(who, key, size, cas)| Op::Set { who, key, size, cas }),
        2 => (who.clone(), key.clone(), cas).prop_map(|(who, key, cas)| Op::Delete { who, key, cas }),
        3 => (who.clone(), keys.clone()).prop_map(|(who, keys)| Op::Observe { who, keys }),
        1 => (who.clone(), keys.clone()).prop_map(|(who, keys)| Op::Unobserve { who, keys }),
        1 => (who.clone(), keys).prop_map(|(who, keys)| Op::Get { who, keys }),
        2 => (who.clone(), 0..3usize, prop_oneof![Just(0usize), Just(4), Just(11)])
            .prop_map(|(who, attribute, size)| Op::Update { who, attribute, size }),
        2 => who.clone().prop_map(|who| Op::Cut { who }),
        2 => (who.clone(), node.clone(), any::<bool>())
            .prop_map(|(who, node, expired)| Op::Resume { who, node, expired }),
        1 => (who.clone(), any::<bool>()).prop_map(|(who, stale)| Op::Depart { who, stale }),
        1 => who.clone().prop_map(|who| Op::Leave { who }),
        1 => node.prop_map(|node| Op::NodeGone { node }),
        1 => (key, size).prop_map(|(key, size)| Op::ApiWrite { key, size }),
        1 => prop_oneof![Just(3usize), Just(25)].prop_map(|size| Op::ApiMetadata { size }),
        1 => who.prop_map(|who| Op::ApiRemove { who }),
    ]
}

/// A participant as its app sees it.
#[derive(Debug)]
struct Client {
    sid: String,
    session_id: String,
    resume_token: String,
    node: usize,
    /// Whether its connection is attached, and as which epoch.
    attached: Option<u64>,
    epoch: u64,
    /// The last event it got.
    last_seq: Seq,
    next_request: u64,
    last_reply: u64,
    /// Store changes it missed while cut off: (seq, key).
    missed: Vec<(Seq, String)>,
}

/// What the model says of one participant.
#[derive(Debug, Default)]
struct Member {
    observing: BTreeSet<String>,
    attributes: BTreeMap<String, String>,
}

impl Member {
    fn observes(&self, key: &str) -> bool {
        self.observing.contains("*") || self.observing.contains(key)
    }
}

/// The model: a session is a store of versioned values, a sequence number, and who is in.
#[derive(Debug, Default)]
struct Model {
    seq: Seq,
    announced: bool,
    store: BTreeMap<String, (Value, Seq)>,
    members: BTreeMap<usize, Member>,
    metadata: String,
}

impl Model {
    fn store_bytes(&self) -> usize {
        self.store
            .iter()
            .map(|(key, (value, _))| key.len() + value.to_string().len())
            .sum()
    }

    fn version(&self, key: &str) -> Seq {
        self.store.get(key).map_or(0, |(_, version)| *version)
    }

    fn over(&self) -> bool {
        self.members.is_empty() || (self.announced && self.members.keys().all(|&who| who == 2))
    }
}

/// What one connection received while an entry was applied.
#[derive(Default)]
struct Received {
    frames: BTreeMap<usize, Vec<ServerMessage>>,
    closed: BTreeMap<usize, CloseReason>,
    admitted: Option<(String, u64, Vec<ServerMessage>)>,
    refused: Option<CloseReason>,
    answer: Option<Result<AdminOutcome, AdminError>>,
}

struct World {
    origin: Replica,
    other: Replica,
    clients: [Option<Client>; PEOPLE],
    model: Option<Model>,
    ticket: u64,
    ids: u64,
    at: u64,
}

fn value(size: usize) -> Value {
    // Serialized, a string of `size` characters takes size + 2 bytes.
    Value::String("v".repeat(size))
}

fn parse(frame: &Frame) -> ServerMessage {
    serde_json::from_str(frame.as_str()).expect("a frame the client can read")
}

/// Sets of strings in a snapshot in a canonical order (a replica's hash sets iterate in
/// an order of their own).
fn canonical(value: &mut Value) {
    match value {
        Value::Array(items) => {
            items.iter_mut().for_each(canonical);
            if items.iter().all(Value::is_string) {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
        Value::Object(map) => map.values_mut().for_each(canonical),
        _ => {}
    }
}

fn events(effects: &Effects) -> Vec<(Audience, String)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Event { audience, frame } => {
                Some((audience.clone(), frame.as_str().to_string()))
            }
            _ => None,
        })
        .collect()
}

impl World {
    fn new() -> Self {
        World {
            origin: Replica::new("room", settings()),
            other: Replica::new("room", settings()),
            clients: Default::default(),
            model: None,
            ticket: 0,
            ids: 0,
            at: 1_000,
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.ids += 1;
        format!("{prefix}_{}", self.ids)
    }

    fn who_is(&self, sid: &str) -> Option<usize> {
        self.clients
            .iter()
            .position(|client| client.as_ref().is_some_and(|client| client.sid == sid))
    }

    /// Appends `command` from `node`, applies it to both replicas, and delivers what the
    /// appending one asks for to the clients.
    fn apply(&mut self, node: usize, command: Command) -> Received {
        self.ticket += 1;
        self.at += 7;
        let entry = LogEntry {
            origin: NODES[node].into(),
            ticket: self.ticket,
            at: self.at,
            command,
        };
        let effects = self.origin.apply(entry.clone(), true);
        let elsewhere = self.other.apply(entry, false);
        assert_eq!(
            events(&effects),
            events(&elsewhere),
            "replicas deliver the same events"
        );
        let (mut a, mut b): (Value, Value) = (
            serde_json::from_str(&self.origin.snapshot()).unwrap(),
            serde_json::from_str(&self.other.snapshot()).unwrap(),
        );
        canonical(&mut a);
        canonical(&mut b);
        assert_eq!(
            a, b,
            "replicas given the same entries are in the same state"
        );
        for effect in &elsewhere {
            assert!(
                matches!(
                    effect,
                    Effect::Event { .. } | Effect::Send { .. } | Effect::Close { .. }
                ),
                "only the appending node answers, counts and sends webhooks: {effect:?}"
            );
        }
        self.deliver(effects)
    }

    fn deliver(&mut self, effects: Effects) -> Received {
        let mut received = Received::default();
        for effect in effects {
            match effect {
                Effect::Event { audience, frame } => {
                    let message = parse(&frame);
                    let seq = message.seq().expect("an event");
                    let session = self.origin.session();
                    for who in 0..PEOPLE {
                        let Some(client) = &mut self.clients[who] else {
                            continue;
                        };
                        if client.attached.is_none() {
                            continue;
                        }
                        let sid = client.sid.clone();
                        let hears = audience.includes(&sid, |key| {
                            session.is_some_and(|session| session.observes(&sid, key))
                        });
                        if hears {
                            assert!(
                                seq > client.last_seq,
                                "p{who} got event {seq} after {}",
                                client.last_seq
                            );
                            client.last_seq = seq;
                            received
                                .frames
                                .entry(who)
                                .or_default()
                                .push(message.clone());
                        }
                    }
                }
                Effect::Send { sid, frame } => {
                    let Some(who) = self.who_is(&sid) else {
                        continue;
                    };
                    let client = self.clients[who].as_mut().unwrap();
                    if client.attached.is_some() {
                        let message = parse(&frame);
                        if let ServerMessage::Reply(reply) = &message {
                            client.last_reply = reply.id;
                        }
                        received.frames.entry(who).or_default().push(message);
                    }
                }
                Effect::Close { sid, reason, .. } => {
                    if let Some(who) = self.who_is(&sid) {
                        let client = self.clients[who].as_mut().unwrap();
                        if client.attached.take().is_some() {
                            received.closed.insert(who, reason);
                        }
                    }
                }
                Effect::Admitted {
                    sid, epoch, frames, ..
                } => {
                    let frames = frames.iter().map(parse).collect();
                    received.admitted = Some((sid, epoch, frames));
                }
                Effect::Refused { reason, .. } => received.refused = Some(reason),
                Effect::Answer { outcome, .. } => received.answer = Some(outcome),
                Effect::Webhook { .. } | Effect::Listed(_) | Effect::Count(_) => {}
            }
        }
        received
    }

    /// Sends a request from `who`'s connection, and returns its outcome and what everyone
    /// received.
    fn request(
        &mut self,
        who: usize,
        message: impl FnOnce(u64) -> ClientMessage,
    ) -> Option<(Outcome, Received)> {
        let client = self.clients[who].as_mut()?;
        let epoch = client.attached?;
        client.next_request += 1;
        let message = message(client.next_request);
        let command = Command::Client {
            sid: client.sid.clone(),
            epoch,
            message,
        };
        let node = client.node;
        let received = self.apply(node, command);
        let reply = received.frames.get(&who).and_then(|frames| {
            frames.iter().find_map(|frame| match frame {
                ServerMessage::Reply(reply) => Some(reply.outcome.clone()),
                _ => None,
            })
        });
        Some((reply.expect("every request is answered"), received))
    }

    /// Who must hear of a change to `key`: the attached participants observing it.
    fn observers(&self, key: &str) -> BTreeSet<usize> {
        let Some(model) = &self.model else {
            return BTreeSet::new();
        };
        model
            .members
            .iter()
            .filter(|(who, member)| {
                member.observes(key)
                    && self.clients[**who]
                        .as_ref()
                        .is_some_and(|c| c.attached.is_some())
            })
            .map(|(who, _)| *who)
            .collect()
    }

    /// Checks a store change the model made against who heard of it, and records it as
    /// missed by observers that are cut off.
    fn check_store_change(&mut self, key: &str, seq: Seq, received: &Received) {
        let heard: BTreeSet<usize> = received
            .frames
            .iter()
            .filter(|(_, frames)| {
                frames.iter().any(|frame| matches!(frame, ServerMessage::StoreChanged(entry) if entry.version == seq && entry.key == key))
            })
            .map(|(who, _)| *who)
            .collect();
        assert_eq!(
            heard,
            self.observers(key),
            "who heard of change {seq} to {key}"
        );
        for (who, frames) in &received.frames {
            let times = frames.iter().filter(|frame| matches!(frame, ServerMessage::StoreChanged(entry) if entry.version == seq)).count();
            assert!(times <= 1, "p{who} heard of change {seq} {times} times");
        }
        let model = self.model.as_ref().unwrap();
        for (who, member) in &model.members {
            if let Some(client) = self.clients[*who].as_mut() {
                if client.attached.is_none() && member.observes(key) {
                    client.missed.push((seq, key.to_string()));
                }
            }
        }
    }

    /// Removes `who` from the model (and the session, if it was the last one).
    fn model_remove(&mut self, who: usize) {
        self.model_forget(who);
        if self.model.as_ref().is_some_and(Model::over) {
            self.model = None;
            for client in self.clients.iter_mut() {
                *client = None; // Hidden participants are closed with the session.
            }
        }
    }

    /// Removes `who` from the model, and nothing else.
    fn model_forget(&mut self, who: usize) {
        let model = self.model.as_mut().unwrap();
        if model.members.remove(&who).is_some() && who != 2 {
            model.seq += 1;
        }
        self.clients[who] = None;
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Join { who, node } => self.join(who, node),
            Op::Resume { who, node, expired } => {
                let Some(client) = &self.clients[who] else {
                    if expired {
                        self.resume_unknown(who, node);
                    }
                    return;
                };
                let resume = ResumeRequest {
                    sid: client.sid.clone(),
                    token: client.resume_token.clone(),
                    session_id: client.session_id.clone(),
                    last_seq: client.last_seq,
                    last_reply_id: client.last_reply,
                };
                self.resume(who, node, resume, expired);
            }
            Op::Set {
                who,
                key,
                size,
                cas,
            } => self.write(who, KEYS[key], Some(value(size)), cas),
            Op::Delete { who, key, cas } => self.write(who, KEYS[key], None, cas),
            Op::Observe { who, ref keys }
            | Op::Unobserve { who, ref keys }
            | Op::Get { who, ref keys } => {
                let names: Vec<String> = keys
                    .iter()
                    .map(|&k| KEYS.get(k).copied().unwrap_or("*").to_string())
                    .collect();
                let observe = matches!(op, Op::Observe { .. });
                let unobserve = matches!(op, Op::Unobserve { .. });
                let request = names.clone();
                let Some((outcome, _)) = self.request(who, |id| {
                    if observe {
                        ClientMessage::Observe { id, keys: request }
                    } else if unobserve {
                        ClientMessage::Unobserve { id, keys: request }
                    } else {
                        ClientMessage::Get { id, keys: request }
                    }
                }) else {
                    return;
                };
                let model = self.model.as_mut().unwrap();
                let distinct: BTreeSet<String> = names.iter().cloned().collect();
                if unobserve {
                    assert!(matches!(outcome, Outcome::Ok(_)));
                    let member = model.members.get_mut(&who).unwrap();
                    member.observing.retain(|key| !distinct.contains(key));
                    return;
                }
                let named = distinct.iter().filter(|key| *key != "*").count();
                if named > limits().keys {
                    assert!(
                        matches!(&outcome, Outcome::Error(error) if error.code == ErrorCode::LimitExceeded),
                        "{outcome:?}"
                    );
                    return;
                }
                let named_after: BTreeSet<&String> = model.members[&who]
                    .observing
                    .iter()
                    .chain(&distinct)
                    .filter(|key| *key != "*")
                    .collect();
                if observe && named_after.len() > limits().keys {
                    assert!(
                        matches!(&outcome, Outcome::Error(error) if error.code == ErrorCode::LimitExceeded),
                        "{outcome:?}"
                    );
                    return;
                }
                let Outcome::Ok(roomstate_protocol::ReplyBody::Entries(entries)) = outcome else {
                    panic!("a read answers with entries: {outcome:?}")
                };
                for entry in &entries {
                    let expected = model.store.get(&entry.key);
                    assert_eq!(
                        entry.value.as_ref(),
                        expected.map(|(value, _)| value),
                        "{}",
                        entry.key
                    );
                    assert_eq!(entry.version, model.version(&entry.key));
                }
                if distinct.contains("*") {
                    let listed: BTreeSet<&String> = entries
                        .iter()
                        .filter(|e| e.value.is_some())
                        .map(|e| &e.key)
                        .collect();
                    assert_eq!(
                        listed,
                        model.store.keys().collect(),
                        "a wildcard read lists every key"
                    );
                }
                if observe {
                    model
                        .members
                        .get_mut(&who)
                        .unwrap()
                        .observing
                        .extend(distinct);
                }
            }
            Op::Update {
                who,
                attribute,
                size,
            } => {
                let name = ["x", "y", "z"][attribute].to_string();
                let text = "u".repeat(size);
                let attributes = BTreeMap::from([(name.clone(), text.clone())]);
                let Some((outcome, received)) =
                    self.request(who, |id| ClientMessage::UpdateParticipant {
                        id,
                        attributes: Some(attributes),
                        metadata: None,
                        name: None,
                    })
                else {
                    return;
                };
                let model = self.model.as_mut().unwrap();
                let member = model.members.get_mut(&who).unwrap();
                let mut merged = member.attributes.clone();
                if text.is_empty() {
                    merged.remove(&name);
                } else {
                    merged.insert(name, text);
                }
                let total: usize = merged.iter().map(|(k, v)| k.len() + v.len()).sum();
                if who == 1 {
                    assert!(
                        matches!(&outcome, Outcome::Error(e) if e.code == ErrorCode::NotAllowed),
                        "{outcome:?}"
                    );
                } else if total > limits().attributes_bytes {
                    assert!(
                        matches!(&outcome, Outcome::Error(e) if e.code == ErrorCode::LimitExceeded),
                        "{outcome:?}"
                    );
                } else {
                    let Outcome::Ok(roomstate_protocol::ReplyBody::Participant(info)) = outcome
                    else {
                        panic!("an update answers with the participant: {outcome:?}")
                    };
                    assert_eq!(info.attributes, merged);
                    member.attributes = merged;
                    model.seq += 1;
                    // Everyone attached hears of a visible participant; only itself of a hidden one.
                    let heard: BTreeSet<usize> = received
                        .frames
                        .iter()
                        .filter(|(_, frames)| {
                            frames
                                .iter()
                                .any(|f| matches!(f, ServerMessage::ParticipantUpdated { .. }))
                        })
                        .map(|(w, _)| *w)
                        .collect();
                    let attached: BTreeSet<usize> = (0..PEOPLE)
                        .filter(|&w| {
                            self.clients[w]
                                .as_ref()
                                .is_some_and(|c| c.attached.is_some())
                                && (who != 2 || w == who)
                        })
                        .collect();
                    assert_eq!(heard, attached, "who heard of p{who}'s update");
                }
            }
            Op::Cut { who } => {
                if let Some(client) = self.clients[who].as_mut() {
                    client.attached = None;
                }
            }
            Op::Depart { who, stale } => {
                let Some(client) = &self.clients[who] else {
                    return;
                };
                if client.attached.is_some() {
                    return; // The node appends a departure only for a connection gone.
                }
                let (sid, node) = (client.sid.clone(), client.node);
                let epoch = if stale {
                    client.epoch.wrapping_sub(1)
                } else {
                    client.epoch
                };
                self.apply(node, Command::Depart { sid, epoch });
                if !stale {
                    self.model_remove(who);
                }
            }
            Op::Leave { who } => {
                let Some(client) = &self.clients[who] else {
                    return;
                };
                let Some(epoch) = client.attached else { return };
                let (sid, node) = (client.sid.clone(), client.node);
                let received = self.apply(
                    node,
                    Command::Client {
                        sid,
                        epoch,
                        message: ClientMessage::Leave {},
                    },
                );
                assert_eq!(received.closed.get(&who), Some(&CloseReason::Left));
                assert!(
                    !received.frames.contains_key(&who),
                    "a leaver hears nothing after leaving"
                );
                self.model_remove(who);
            }
            Op::NodeGone { node } => {
                self.apply(
                    1 - node,
                    Command::NodeGone {
                        node: NODES[node].into(),
                    },
                );
                let gone: Vec<usize> = (0..PEOPLE)
                    .filter(|&w| self.clients[w].as_ref().is_some_and(|c| c.node == node))
                    .collect();
                for who in gone {
                    if self.model.is_some() {
                        self.model_remove(who);
                    }
                }
            }
            Op::ApiWrite { key, size } => {
                let key = KEYS[key];
                let command = Command::StoreWrite {
                    author: "api".into(),
                    key: key.into(),
                    value: Some(value(size)),
                    if_version: None,
                };
                let received = self.apply(0, command);
                let answer = received.answer.clone().expect("the server API is answered");
                if self.model.is_none() {
                    assert_eq!(answer, Err(AdminError::NoSuchRoom("room".into())));
                    return;
                }
                match self.model_write(key, Some(value(size)), None) {
                    Ok(Some(seq)) => {
                        assert!(
                            matches!(&answer, Ok(AdminOutcome::Entry(entry)) if entry.version == seq && entry.updated_by == "api"),
                            "{answer:?}"
                        );
                        self.check_store_change(key, seq, &received);
                    }
                    Ok(None) => unreachable!("a set always changes the store"),
                    Err(code) => {
                        assert!(
                            matches!(&answer, Err(AdminError::Refused(e)) if e.code == code),
                            "{answer:?}"
                        );
                    }
                }
            }
            Op::ApiMetadata { size } => {
                let metadata = "m".repeat(size);
                let received = self.apply(
                    1,
                    Command::SetRoomMetadata {
                        metadata: metadata.clone(),
                    },
                );
                let answer = received.answer.expect("answered");
                match &mut self.model {
                    None => assert!(matches!(answer, Err(AdminError::NoSuchRoom(_)))),
                    Some(_) if size > limits().metadata_bytes => {
                        assert!(
                            matches!(answer, Err(AdminError::Refused(e)) if e.code == ErrorCode::LimitExceeded)
                        )
                    }
                    Some(model) => {
                        model.seq += 1;
                        model.metadata = metadata;
                        assert!(
                            matches!(answer, Ok(AdminOutcome::Room(summary)) if summary.metadata == model.metadata)
                        );
                    }
                }
            }
            Op::ApiRemove { who } => {
                let received = self.apply(
                    0,
                    Command::RemoveParticipant {
                        identity: format!("p{who}"),
                    },
                );
                let answer = received.answer.clone().expect("answered");
                let present = self
                    .model
                    .as_ref()
                    .is_some_and(|model| model.members.contains_key(&who));
                if self.model.is_none() {
                    assert!(matches!(answer, Err(AdminError::NoSuchRoom(_))));
                } else if !present {
                    assert_eq!(
                        answer,
                        Err(AdminError::NoSuchParticipant(format!("p{who}")))
                    );
                } else {
                    assert_eq!(answer, Ok(AdminOutcome::Removed));
                    if self.clients[who]
                        .as_ref()
                        .is_some_and(|c| c.attached.is_some())
                    {
                        assert_eq!(received.closed.get(&who), Some(&CloseReason::Removed));
                    }
                    self.model_remove(who);
                }
            }
        }
    }

    /// The model's answer to a write: the new version, nothing changed, or an error.
    fn model_write(
        &mut self,
        key: &str,
        value: Option<Value>,
        if_version: Option<Seq>,
    ) -> Result<Option<Seq>, ErrorCode> {
        let limits = limits();
        let model = self.model.as_mut().unwrap();
        if let Some(expected) = if_version {
            if model.version(key) != expected {
                return Err(ErrorCode::Conflict);
            }
        }
        let Some(value) = value else {
            if model.store.remove(key).is_none() {
                return Ok(None);
            }
            model.seq += 1;
            return Ok(Some(model.seq));
        };
        let bytes = value.to_string().len();
        if bytes > limits.value_bytes {
            return Err(ErrorCode::LimitExceeded);
        }
        if !model.store.contains_key(key) && model.store.len() >= limits.keys {
            return Err(ErrorCode::LimitExceeded);
        }
        let old = model
            .store
            .get(key)
            .map_or(0, |(value, _)| key.len() + value.to_string().len());
        if model.store_bytes() - old + key.len() + bytes > limits.store_bytes {
            return Err(ErrorCode::LimitExceeded);
        }
        model.seq += 1;
        model.store.insert(key.to_string(), (value, model.seq));
        Ok(Some(model.seq))
    }

    fn write(&mut self, who: usize, key: &str, value: Option<Value>, cas: Cas) {
        let Some(model) = &self.model else { return };
        let if_version = match cas {
            Cas::None => None,
            Cas::Current => Some(model.version(key)),
            Cas::Stale => Some(model.version(key) + 1),
        };
        let request = value.clone();
        let Some((outcome, received)) = self.request(who, |id| match request {
            Some(value) => ClientMessage::Set {
                id,
                key: key.into(),
                value,
                if_version,
            },
            None => ClientMessage::Delete {
                id,
                key: key.into(),
                if_version,
            },
        }) else {
            return;
        };
        let expected = if may_write(who, key) {
            self.model_write(key, value, if_version)
        } else {
            Err(ErrorCode::NotAllowed)
        };
        match (expected, &outcome) {
            (Ok(Some(seq)), Outcome::Ok(roomstate_protocol::ReplyBody::Entry(entry))) => {
                assert_eq!(entry.version, seq);
                assert_eq!(entry.updated_by, format!("p{who}"));
                self.check_store_change(key, seq, &received);
            }
            (Ok(None), Outcome::Ok(roomstate_protocol::ReplyBody::Entry(entry))) => {
                assert_eq!(entry.version, 0, "deleting an absent key changes nothing");
            }
            (Err(code), Outcome::Error(error)) => assert_eq!(error.code, code, "{error:?}"),
            (expected, outcome) => {
                panic!("p{who} writing {key}: the model says {expected:?}, the rules {outcome:?}")
            }
        }
    }

    /// A resume with an expired token for a participant the room no longer knows: refused,
    /// and nothing changes.
    fn resume_unknown(&mut self, who: usize, node: usize) {
        let gone = ResumeRequest {
            sid: "PA_gone".into(),
            token: "gone".into(),
            session_id: "SE_gone".into(),
            last_seq: 0,
            last_reply_id: 0,
        };
        let (_, _, admit) = self.admit_command(who, Some(gone), true);
        let received = self.apply(node, admit);
        assert_eq!(received.refused, Some(CloseReason::TokenExpired));
        assert!(received.admitted.is_none() && received.frames.is_empty());
    }

    /// An `Admit` with fresh ids, and the sid and resume token it would join with.
    fn admit_command(
        &mut self,
        who: usize,
        resume: Option<ResumeRequest>,
        token_expired: bool,
    ) -> (String, String, Command) {
        let (sid, resume_token, session_id) =
            (self.fresh("PA"), self.fresh("RT"), self.fresh("SE"));
        let admit = Command::Admit {
            claims: Box::new(claims(who)),
            resume,
            token_expired,
            sid: sid.clone(),
            resume_token: resume_token.clone(),
            session_id,
        };
        (sid, resume_token, admit)
    }

    fn join(&mut self, who: usize, node: usize) {
        let (sid, resume_token, admit) = self.admit_command(who, None, false);
        let received = self.apply(node, admit);
        if let Some(old) = &self.clients[who] {
            if old.attached.is_some() {
                assert_eq!(
                    received.closed.get(&who),
                    Some(&CloseReason::DuplicateIdentity)
                );
            }
        }
        // The participant with the same identity leaves first (without ending the session).
        if self
            .model
            .as_ref()
            .is_some_and(|m| m.members.contains_key(&who))
        {
            self.model_forget(who);
        }
        let model = self.model.get_or_insert_with(Model::default);
        model.members.insert(who, Member::default());
        if who != 2 {
            model.announced = true;
            model.seq += 1;
        }
        let (admitted_sid, epoch, frames) = received.admitted.expect("admitted");
        assert_eq!((admitted_sid.as_str(), epoch), (sid.as_str(), 0));
        let [ServerMessage::Joined(info)] = frames.as_slice() else {
            panic!("{frames:?}")
        };
        assert_eq!(info.seq, model.seq);
        assert_eq!(info.local.identity, format!("p{who}"));
        let visible: BTreeSet<String> = info
            .participants
            .iter()
            .map(|p: &ParticipantInfo| p.identity.clone())
            .collect();
        let expected: BTreeSet<String> = model
            .members
            .keys()
            .filter(|&&w| w != who && w != 2)
            .map(|w| format!("p{w}"))
            .collect();
        assert_eq!(
            visible, expected,
            "who a joining participant is told is here"
        );
        self.clients[who] = Some(Client {
            sid,
            session_id: info.session_id.clone(),
            resume_token,
            node,
            attached: Some(0),
            epoch: 0,
            last_seq: info.seq,
            next_request: 0,
            last_reply: 0,
            missed: Vec::new(),
        });
    }

    fn resume(&mut self, who: usize, node: usize, resume: ResumeRequest, expired: bool) {
        let was_attached = self.clients[who].as_ref().unwrap().attached.is_some();
        // A participant the room still knows resumes even with an expired token.
        let (_, _, admit) = self.admit_command(who, Some(resume.clone()), expired);
        let received = self.apply(node, admit);
        if was_attached {
            assert_eq!(
                received.closed.get(&who),
                Some(&CloseReason::DuplicateIdentity)
            );
        }
        let (sid, epoch, frames) = received.admitted.expect("resumed");
        let client = self.clients[who].as_mut().unwrap();
        assert_eq!(sid, client.sid);
        assert_eq!(epoch, client.epoch + 1);
        client.epoch = epoch;
        client.attached = Some(epoch);
        client.node = node;
        let model = self.model.as_ref().unwrap();
        let ServerMessage::Resumed(info) = &frames[0] else {
            panic!("{frames:?}")
        };
        let missed = std::mem::take(&mut client.missed);
        match &info.snapshot {
            Some(snapshot) => {
                assert_eq!(snapshot.seq, model.seq);
                let member = &model.members[&who];
                for entry in &snapshot.entries {
                    assert!(member.observes(&entry.key) || entry.value.is_none());
                    assert_eq!(
                        entry.value.as_ref(),
                        model.store.get(&entry.key).map(|(v, _)| v)
                    );
                }
                client.last_seq = snapshot.seq;
            }
            None => {
                let mut changes = Vec::new();
                for frame in &frames[1..] {
                    if let Some(seq) = frame.seq() {
                        assert!(
                            seq > client.last_seq,
                            "replayed event {seq} after {}",
                            client.last_seq
                        );
                        client.last_seq = seq;
                    }
                    if let ServerMessage::StoreChanged(entry) = frame {
                        changes.push((entry.version, entry.key.clone()));
                    }
                    if let ServerMessage::Reply(reply) = frame {
                        assert!(reply.id > resume.last_reply_id);
                    }
                }
                assert_eq!(
                    changes, missed,
                    "a resumed connection gets exactly the changes it missed"
                );
            }
        }
    }

    /// What every step must leave true.
    fn check(&self) {
        let limits = limits();
        match (&self.model, self.origin.session()) {
            (None, None) => {}
            (Some(model), Some(session)) => {
                assert_eq!(session.seq(), model.seq, "sequence number");
                let store = session.store();
                assert!(store.len() <= limits.keys && store.total_bytes() <= limits.store_bytes);
                assert_eq!(store.total_bytes(), model.store_bytes());
                let entries: BTreeMap<String, (Value, Seq)> = store
                    .all()
                    .into_iter()
                    .map(|entry| (entry.key, (entry.value.unwrap(), entry.version)))
                    .collect();
                assert_eq!(entries, model.store, "the store is the model's");
                let infos = session.participant_infos();
                let identities: BTreeSet<String> =
                    infos.iter().map(|info| info.identity.clone()).collect();
                let expected: BTreeSet<String> =
                    model.members.keys().map(|w| format!("p{w}")).collect();
                assert_eq!(identities, expected, "who is in the session");
                for info in infos {
                    let total: usize = info.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
                    assert!(total <= limits.attributes_bytes);
                }
                assert_eq!(session.metadata(), model.metadata);
            }
            (model, session) => panic!(
                "the model has a session: {}, the rules: {}",
                model.is_some(),
                session.is_some()
            ),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("ROOMSTATE_RULES_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000),
        // A failure prints its smallest case; nothing is written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_rules_agree_with_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut world = World::new();
        for op in ops {
            world.run(op);
            world.check();
        }
    }
}
