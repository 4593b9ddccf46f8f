//! roomstate engine: joins a room on a roomstate server and keeps its shared state, the
//! session store and the participants, calling the app's listeners as it changes.
//!
//! ```no_run
//! # async fn example() -> Result<(), roomstate::RoomError> {
//! use std::sync::Arc;
//! use roomstate::{ConnectOptions, NoRoomListener, Room};
//!
//! let room = Room::connect("ws://127.0.0.1:7880", "<token>", Arc::new(NoRoomListener), ConnectOptions::default()).await?;
//! let store = room.session_store();
//! store.add_key_change_listener(vec!["pinned".into()], Arc::new(|key: String, entry: Option<roomstate::StoreEntry>| {
//!     println!("{key} is now {:?}", entry.map(|entry| entry.value));
//! }))?;
//! store.set("pinned", serde_json::json!({"text": "Welcome!"})).await?;
//! # Ok(()) }
//! ```
//!
//! Threading: listeners are called on one thread per room, in the order the changes
//! happened, never while the engine holds a lock. Calls from one room reach the server
//! in the order they were made. See `docs/threading.md`.

uniffi::setup_scaffolding!();

mod connection;
mod dispatch;
mod error;
pub mod ffi;
mod listener;
mod outbox;
mod room;
mod shared;
mod state;
mod types;

pub use error::RoomError;
pub use listener::{KeyChangeListener, RoomListener};
pub use room::{KeyListenerHandle, LocalParticipant, Room, SessionStore};
pub use roomstate_protocol::{ConnectRefusalCode, Limit};
pub use types::{
    ConnectOptions, ConnectionState, DisconnectReason, Participant, StoreEntry, StoreRead,
    ThreadStartHook,
};

/// A room listener that ignores everything, for apps that only use key listeners.
pub struct NoRoomListener;

impl RoomListener for NoRoomListener {}
