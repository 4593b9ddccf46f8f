//! What the engine knows of the room, and how each server message changes it: a plain
//! state machine, with no sockets, tasks or threads. Each change returns what the app
//! should hear of it (`Notification`s); the room (`crate::shared`) applies changes under
//! its lock and queues their notifications on the listener thread before releasing it,
//! so listeners hear of changes in the order they were applied.

use std::collections::{BTreeSet, HashMap, HashSet};

use roomstate_protocol::{
    ClientMessage, Entry, JoinInfo, Limits, Outcome, ParticipantInfo, Reply, ReplyBody, RequestId,
    ResumeInfo, Seq, ServerMessage, Snapshot, WILDCARD_KEY,
};

use crate::error::RoomError;
use crate::outbox::{Outbox, ReplyTarget};
use crate::types::{ConnectionState, Participant, StoreEntry};

/// What the app hears of, in the order it happened. The state produces them; the room
/// (`crate::shared`) turns each into a call on the app's listener thread. `S` is how
/// the engine holds a key listener.
#[derive(Debug)]
pub(crate) enum Notification<S> {
    ConnectionState(ConnectionState),
    SessionStoreAvailable,
    ParticipantJoined(Participant),
    ParticipantLeft(Participant),
    AttributesChanged(Participant, Vec<String>),
    MetadataChanged(Participant, String, String),
    NameChanged(Participant, String, String),
    RoomMetadataChanged(String, String),
    KeyChanged {
        listener: S,
        key: String,
        entry: Option<StoreEntry>,
    },
}

/// The notifications of one change, in order.
pub(crate) type Notifications<S> = Vec<Notification<S>>;

/// The participant this engine is in the server's current session.
pub(crate) struct Link {
    pub session_id: String,
    pub sid: String,
    pub resume_token: String,
    /// The last event applied: a resume asks for what came after.
    pub last_seq: Seq,
    pub last_reply_id: RequestId,
}

pub(crate) struct EngineState<S> {
    pub connection: ConnectionState,
    pub link: Option<Link>,
    pub local: Option<ParticipantInfo>,
    pub remotes: HashMap<String, ParticipantInfo>,
    pub room_metadata: String,
    pub limits: Limits,
    pub keys: KeyRegistry<S>,
    pub outbox: Outbox,
}

impl<S: Clone> EngineState<S> {
    pub fn new() -> Self {
        EngineState {
            connection: ConnectionState::Connecting,
            link: None,
            local: None,
            remotes: HashMap::new(),
            room_metadata: String::new(),
            limits: Limits::default(),
            keys: KeyRegistry::default(),
            outbox: Outbox::default(),
        }
    }

    pub fn set_connection(&mut self, state: ConnectionState, notify: &mut Notifications<S>) {
        if self.connection != state {
            self.connection = state.clone();
            notify.push(Notification::ConnectionState(state));
        }
    }

    /// A fresh join: the first, or after the server forgot this participant.
    pub fn on_joined(&mut self, info: JoinInfo, notify: &mut Notifications<S>) {
        let first_join = self.link.is_none();
        let new_session = self
            .link
            .as_ref()
            .is_none_or(|link| link.session_id != info.session_id);
        // Whatever was in flight went to a participant that no longer exists.
        for pending in self.outbox.drain_in_flight() {
            pending.fail(RoomError::ConnectionLost);
        }
        self.link = Some(Link {
            session_id: info.session_id,
            sid: info.local.sid.clone(),
            resume_token: info.resume_token,
            last_seq: info.seq,
            last_reply_id: 0,
        });
        self.limits = info.limits;
        if first_join {
            // Who is already here is part of what `connect` returns, not news.
            self.local = Some(info.local);
            self.remotes = info
                .participants
                .into_iter()
                .map(|participant| (participant.sid.clone(), participant))
                .collect();
            self.room_metadata = info.room_metadata;
        } else {
            self.apply_snapshot_of_people(
                info.local,
                info.participants,
                info.room_metadata,
                notify,
            );
        }
        if new_session {
            self.keys.new_session();
        }
        if let Some(observe) = self.keys.resync_all() {
            let (message, target) = observe.into_request();
            self.outbox.push_front(message, target);
        }
        // Every fresh join, not only a new session: the server forgot this participant
        // (away longer than its grace period), and the app may want to read afresh.
        notify.push(Notification::SessionStoreAvailable);
    }

    pub fn on_resumed(&mut self, info: ResumeInfo, notify: &mut Notifications<S>) {
        self.outbox.requeue_unprocessed(info.last_request_id);
        if let Some(Snapshot {
            seq,
            local,
            participants,
            room_metadata,
            entries,
        }) = info.snapshot
        {
            if let Some(link) = self.link.as_mut() {
                link.last_seq = seq;
            }
            self.apply_snapshot_of_people(local, participants, room_metadata, notify);
            self.keys.reconcile_snapshot(entries, notify);
        }
    }

    /// Applies one message after the handshake. Replies are answered here too.
    pub fn on_message(&mut self, message: ServerMessage, notify: &mut Notifications<S>) {
        if let Some(seq) = message.seq() {
            let Some(link) = self.link.as_mut() else {
                return;
            };
            if seq <= link.last_seq {
                return; // Already applied: a replay overlapped what had arrived.
            }
            link.last_seq = seq;
        }
        match message {
            ServerMessage::Reply(reply) => self.on_reply(reply, notify),
            ServerMessage::StoreChanged(entry) => self.keys.on_change(entry, notify),
            ServerMessage::ParticipantJoined { participant, .. }
            | ServerMessage::ParticipantUpdated { participant, .. } => {
                self.upsert_participant(participant, notify)
            }
            ServerMessage::ParticipantLeft { sid, .. } => {
                if let Some(info) = self.remotes.remove(&sid) {
                    let participant = Participant::from_info(&info, false);
                    notify.push(Notification::ParticipantLeft(participant));
                }
            }
            ServerMessage::RoomMetadataChanged { metadata, .. } => {
                self.set_room_metadata(metadata, notify)
            }
            ServerMessage::Rejected { id, error } => {
                log::warn!("the server rejected a frame: {}", error.message);
                // The request gets no reply: its caller hears the refusal instead.
                if let Some(pending) = id.and_then(|id| self.outbox.answered(id)) {
                    pending.fail(RoomError::InvalidRequest {
                        message: error.message,
                    });
                }
            }
            ServerMessage::Joined(_)
            | ServerMessage::Resumed(_)
            | ServerMessage::Goodbye { .. } => {
                log::warn!("unexpected handshake message mid-connection; ignored")
            }
        }
    }

    fn on_reply(&mut self, reply: Reply, notify: &mut Notifications<S>) {
        if let Some(link) = self.link.as_mut() {
            link.last_reply_id = link.last_reply_id.max(reply.id);
        }
        let Some(pending) = self.outbox.answered(reply.id) else {
            return; // Its caller gave up waiting.
        };
        let stale = reply.stale;
        match (pending.target, reply.outcome) {
            (ReplyTarget::Caller(caller), outcome) => {
                let _ = caller.send(match outcome {
                    Outcome::Ok(body) => Ok(crate::outbox::Answer { body, stale }),
                    Outcome::Error(error) => Err(error.into()),
                });
            }
            (ReplyTarget::Observe { token, keys }, Outcome::Ok(ReplyBody::Entries(entries))) => {
                self.keys.on_observed(token, &keys, entries, notify)
            }
            (ReplyTarget::Observe { keys, .. }, outcome) => {
                log::error!("observing {keys:?} failed: {outcome:?}")
            }
            (ReplyTarget::Nobody, _) => {}
        }
    }

    /// Replaces what we know of people with a snapshot, telling listeners what differs.
    fn apply_snapshot_of_people(
        &mut self,
        local: ParticipantInfo,
        participants: Vec<ParticipantInfo>,
        room_metadata: String,
        notify: &mut Notifications<S>,
    ) {
        match self.local.take() {
            Some(old) if old.sid == local.sid => {
                self.local = Some(old);
                self.upsert_participant(local, notify);
            }
            _ => self.local = Some(local),
        }
        let current: HashSet<&str> = participants.iter().map(|p| p.sid.as_str()).collect();
        let gone: Vec<String> = self
            .remotes
            .keys()
            .filter(|sid| !current.contains(sid.as_str()))
            .cloned()
            .collect();
        for sid in gone {
            let info = self.remotes.remove(&sid).expect("listed above");
            let participant = Participant::from_info(&info, false);
            notify.push(Notification::ParticipantLeft(participant));
        }
        for info in participants {
            self.upsert_participant(info, notify);
        }
        self.set_room_metadata(room_metadata, notify);
    }

    fn upsert_participant(&mut self, new: ParticipantInfo, notify: &mut Notifications<S>) {
        let is_local = self
            .local
            .as_ref()
            .is_some_and(|local| local.sid == new.sid);
        let slot = if is_local {
            self.local.as_mut()
        } else {
            self.remotes.get_mut(&new.sid)
        };
        let Some(old) = slot else {
            let participant = Participant::from_info(&new, false);
            self.remotes.insert(new.sid.clone(), new);
            notify.push(Notification::ParticipantJoined(participant));
            return;
        };
        if new.version <= old.version {
            return;
        }
        let old = std::mem::replace(old, new.clone());
        let participant = Participant::from_info(&new, is_local);
        let changed_keys: Vec<String> = old
            .attributes
            .keys()
            .chain(new.attributes.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|key| old.attributes.get(*key) != new.attributes.get(*key))
            .cloned()
            .collect();
        if !changed_keys.is_empty() {
            let participant = participant.clone();
            notify.push(Notification::AttributesChanged(participant, changed_keys));
        }
        if old.metadata != new.metadata {
            let participant = participant.clone();
            let (old, new) = (old.metadata.clone(), new.metadata.clone());
            notify.push(Notification::MetadataChanged(participant, old, new));
        }
        if old.name != new.name {
            let (old, new) = (old.name, new.name);
            notify.push(Notification::NameChanged(participant, old, new));
        }
    }

    fn set_room_metadata(&mut self, metadata: String, notify: &mut Notifications<S>) {
        if self.room_metadata != metadata {
            let old = std::mem::replace(&mut self.room_metadata, metadata.clone());
            notify.push(Notification::RoomMetadataChanged(old, metadata));
        }
    }

    /// A participant's current info, local included.
    pub fn participant(&self, sid: &str) -> Option<Participant> {
        match &self.local {
            Some(local) if local.sid == sid => Some(Participant::from_info(local, true)),
            _ => self
                .remotes
                .get(sid)
                .map(|info| Participant::from_info(info, false)),
        }
    }
}

pub(crate) type ListenerId = u64;

/// An observe the registry needs sent.
pub(crate) struct ObserveRequest {
    token: ObserveToken,
    keys: Vec<String>,
}

impl ObserveRequest {
    pub fn into_request(self) -> (ClientMessage, ReplyTarget) {
        (
            ClientMessage::Observe {
                id: 0,
                keys: self.keys.clone(),
            },
            ReplyTarget::Observe {
                token: self.token,
                keys: self.keys,
            },
        )
    }
}

/// Observed keys, their cached entries, and the listeners on them.
///
/// A key is *live* when the engine holds the server's current entry for it and applies
/// every change: after its observe was answered (or while the wildcard is live). Changes
/// to keys that are not live are dropped: the observe answer that makes them live is
/// newer.
pub(crate) struct KeyRegistry<S> {
    keys: HashMap<String, KeyState>,
    cache: HashMap<String, Cached>,
    listeners: HashMap<ListenerId, ListenerRecord<S>>,
    next_listener: ListenerId,
    next_observe: ObserveToken,
    /// Bumped when a new session starts: cached entries of older epochs are compared by
    /// value, since versions restart with the session.
    epoch: u64,
}

impl<S> Default for KeyRegistry<S> {
    fn default() -> Self {
        KeyRegistry {
            keys: HashMap::new(),
            cache: HashMap::new(),
            listeners: HashMap::new(),
            next_listener: 0,
            next_observe: 0,
            epoch: 0,
        }
    }
}

#[derive(Default)]
struct KeyState {
    /// The observe request that will make this key live; `None` once it is.
    awaiting: Option<ObserveToken>,
    listeners: BTreeSet<ListenerId>,
}

/// Names one observe request of the engine's, so that only its own answer makes a key
/// live (an older answer may predate an unobserve).
pub(crate) type ObserveToken = u64;

struct Cached {
    entry: StoreEntry,
    epoch: u64,
}

struct ListenerRecord<S> {
    keys: Vec<String>,
    /// The app's listener, as the engine holds it.
    slot: S,
    /// Keys whose initial value this listener has had ("*": the whole store).
    initialized: HashSet<String>,
}

impl<S: Clone> KeyRegistry<S> {
    fn is_live(&self, key: &str) -> bool {
        let live = |key: &str| {
            self.keys
                .get(key)
                .is_some_and(|state| state.awaiting.is_none())
        };
        live(key) || live(WILDCARD_KEY)
    }

    /// The cached entry of a live key: `Some(None)` when it does not exist; `None` when
    /// the key is not live and only the server knows.
    pub fn cached(&self, key: &str) -> Option<Option<StoreEntry>> {
        self.is_live(key)
            .then(|| self.cache.get(key).map(|cached| cached.entry.clone()))
    }

    /// Registers a listener. Returns its id and, when some keys were observed by nobody
    /// before, the observe request to send for them.
    pub fn add_listener(
        &mut self,
        keys: Vec<String>,
        slot: S,
        notify: &mut Notifications<S>,
    ) -> (ListenerId, Option<ObserveRequest>) {
        self.next_listener += 1;
        let id = self.next_listener;
        self.next_observe += 1;
        let token = self.next_observe;
        let mut unique = Vec::new();
        for key in keys {
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
        let mut new_keys = Vec::new();
        for key in &unique {
            let state = self.keys.entry(key.clone()).or_insert_with(|| {
                new_keys.push(key.clone());
                KeyState {
                    awaiting: Some(token),
                    listeners: BTreeSet::new(),
                }
            });
            state.listeners.insert(id);
        }
        self.listeners.insert(
            id,
            ListenerRecord {
                keys: unique.clone(),
                slot,
                initialized: HashSet::new(),
            },
        );
        for key in &unique {
            self.give_initial(id, key, notify);
        }
        let observe = (!new_keys.is_empty()).then_some(ObserveRequest {
            token,
            keys: new_keys,
        });
        (id, observe)
    }

    /// Forgets every listener, for good: the room has ended. Returns them, to be
    /// dropped outside the state lock.
    pub fn release_listeners(&mut self) -> Vec<S> {
        self.keys.clear();
        self.cache.clear();
        self.listeners
            .drain()
            .map(|(_, record)| record.slot)
            .collect()
    }

    /// Removes a listener; returns the keys nobody observes any more.
    pub fn remove_listener(&mut self, id: ListenerId) -> Option<(S, Vec<String>)> {
        let record = self.listeners.remove(&id)?;
        let mut unobserved = Vec::new();
        for key in &record.keys {
            if let Some(state) = self.keys.get_mut(key) {
                state.listeners.remove(&id);
                if state.listeners.is_empty() {
                    self.keys.remove(key);
                    unobserved.push(key.clone());
                }
            }
        }
        if !unobserved.is_empty() {
            let keys = &self.keys;
            let wildcard = keys.contains_key(WILDCARD_KEY);
            self.cache
                .retain(|key, _| wildcard || keys.contains_key(key));
        }
        Some((record.slot, unobserved))
    }

    /// Gives listener `id` the initial value(s) of `key` if the key is live and it has
    /// not had them.
    fn give_initial(&mut self, id: ListenerId, key: &str, notify: &mut Notifications<S>) {
        if !self.is_live(key) {
            return;
        }
        let Some(record) = self.listeners.get_mut(&id) else {
            return;
        };
        if !record.initialized.insert(key.to_string()) {
            return;
        }
        if key == WILDCARD_KEY {
            let mut keys: Vec<&String> = self.cache.keys().collect();
            keys.sort();
            for key in keys {
                let entry = self.cache[key].entry.clone();
                notify.push(Notification::KeyChanged {
                    listener: record.slot.clone(),
                    key: key.clone(),
                    entry: Some(entry),
                });
            }
        } else {
            let entry = self.cache.get(key).map(|cached| cached.entry.clone());
            notify.push(Notification::KeyChanged {
                listener: record.slot.clone(),
                key: key.to_string(),
                entry,
            });
        }
    }

    /// A change from the server, for a key that may or may not be live.
    fn on_change(&mut self, entry: Entry, notify: &mut Notifications<S>) {
        if self.is_live(&entry.key) {
            self.reconcile(entry, notify);
        }
    }

    /// Brings a key's cache to `entry`, telling initialized listeners if it changed.
    fn reconcile(&mut self, entry: Entry, notify: &mut Notifications<S>) {
        let key = entry.key.clone();
        let new = StoreEntry::from_wire(entry);
        let changed = match (self.cache.get(&key), &new) {
            (None, None) => false,
            (Some(old), Some(new)) if old.epoch == self.epoch => {
                if new.version < old.entry.version {
                    return; // older than what we have
                }
                new.version != old.entry.version
            }
            (Some(old), Some(new)) => old.entry.value != new.value,
            _ => true,
        };
        match &new {
            Some(entry) => {
                self.cache.insert(
                    key.clone(),
                    Cached {
                        entry: entry.clone(),
                        epoch: self.epoch,
                    },
                );
            }
            None => {
                self.cache.remove(&key);
            }
        }
        if !changed {
            return;
        }
        let mut told = HashSet::new();
        for scope in [key.as_str(), WILDCARD_KEY] {
            let Some(state) = self.keys.get(scope) else {
                continue;
            };
            for id in &state.listeners {
                let record = &self.listeners[id];
                if record.initialized.contains(scope) && told.insert(*id) {
                    notify.push(Notification::KeyChanged {
                        listener: record.slot.clone(),
                        key: key.clone(),
                        entry: new.clone(),
                    });
                }
            }
        }
    }

    /// The answer to an observe of `keys`.
    fn on_observed(
        &mut self,
        token: ObserveToken,
        keys: &[String],
        entries: Vec<Entry>,
        notify: &mut Notifications<S>,
    ) {
        let mut now_live = Vec::new();
        for key in keys {
            if let Some(state) = self.keys.get_mut(key) {
                if state.awaiting == Some(token) {
                    state.awaiting = None;
                    now_live.push(key.clone());
                }
            }
        }
        if now_live.is_empty() {
            return; // Every key was unobserved (or re-observed) since.
        }
        let whole_store = now_live.iter().any(|key| key == WILDCARD_KEY);
        if whole_store {
            self.reconcile_whole_store(entries, notify);
        } else {
            for entry in entries {
                if now_live.contains(&entry.key) {
                    self.reconcile(entry, notify);
                }
            }
        }
        let waiting: Vec<(ListenerId, String)> = now_live
            .iter()
            .flat_map(|key| {
                self.keys[key]
                    .listeners
                    .iter()
                    .map(move |id| (*id, key.clone()))
            })
            .collect();
        for (id, key) in waiting {
            self.give_initial(id, &key, notify);
        }
    }

    /// Entries that are the whole store: cached keys missing from them were deleted.
    fn reconcile_whole_store(&mut self, entries: Vec<Entry>, notify: &mut Notifications<S>) {
        let present: HashSet<String> = entries.iter().map(|entry| entry.key.clone()).collect();
        let missing: Vec<String> = self
            .cache
            .keys()
            .filter(|key| !present.contains(*key))
            .cloned()
            .collect();
        for entry in entries {
            self.reconcile(entry, notify);
        }
        for key in missing {
            self.reconcile(Entry::absent(key), notify);
        }
    }

    fn reconcile_snapshot(&mut self, entries: Vec<Entry>, notify: &mut Notifications<S>) {
        if self.is_live(WILDCARD_KEY) {
            self.reconcile_whole_store(entries, notify);
        } else {
            for entry in entries {
                if self.is_live(&entry.key) {
                    self.reconcile(entry, notify);
                }
            }
        }
    }

    fn new_session(&mut self) {
        self.epoch += 1;
    }

    /// After a fresh join every observed key must be observed again.
    fn resync_all(&mut self) -> Option<ObserveRequest> {
        if self.keys.is_empty() {
            return None;
        }
        self.next_observe += 1;
        let token = self.next_observe;
        let mut keys: Vec<String> = self.keys.keys().cloned().collect();
        keys.sort();
        for state in self.keys.values_mut() {
            state.awaiting = Some(token);
        }
        Some(ObserveRequest { token, keys })
    }
}
