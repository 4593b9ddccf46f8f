//! What the app implements to hear about the room. Every method is called on the
//! room's one dispatch thread, in the order the changes happened, and never while the
//! engine holds a lock: a listener may call back into the engine.

use crate::shared::SessionStore;
use crate::types::{ConnectionState, Participant, StoreEntry};

pub trait RoomListener: Send + Sync {
    /// The store can be used. Called after connecting, and again after every fresh join:
    /// when the server forgot this participant (away longer than its grace period) or
    /// a new session started (the room emptied while this client was away). The store
    /// then holds what the room holds now, and key listeners have been told what
    /// changed while away.
    fn on_session_store_available(&self, _store: SessionStore) {}
    fn on_connection_state_changed(&self, _state: ConnectionState) {}
    fn on_participant_joined(&self, _participant: Participant) {}
    fn on_participant_left(&self, _participant: Participant) {}
    /// `changed_keys` lists the attributes that changed (set, replaced or deleted); the
    /// participant carries all of them.
    fn on_attributes_changed(&self, _participant: Participant, _changed_keys: Vec<String>) {}
    fn on_metadata_changed(&self, _participant: Participant, _old: String, _new: String) {}
    fn on_name_changed(&self, _participant: Participant, _old: String, _new: String) {}
    fn on_room_metadata_changed(&self, _old: String, _new: String) {}
}

pub trait KeyChangeListener: Send + Sync {
    /// First the key's current value (`None`: it does not exist), then every change,
    /// once each, in order; `None` after a delete.
    fn on_key_changed(&self, key: String, entry: Option<StoreEntry>);
}

impl<F> KeyChangeListener for F
where
    F: Fn(String, Option<StoreEntry>) + Send + Sync,
{
    fn on_key_changed(&self, key: String, entry: Option<StoreEntry>) {
        self(key, entry)
    }
}
