//! The app's handles: `Room`, its `SessionStore` and its `LocalParticipant`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared as SharedFuture};
use parking_lot::Mutex;
use roomstate_protocol::{ClientMessage, ReplyBody, WILDCARD_KEY};
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, watch};

use crate::connection;
use crate::dispatch::{Dispatcher, ListenerSlot};
use crate::error::RoomError;
use crate::listener::{KeyChangeListener, RoomListener};
use crate::outbox::ReplyTarget;
pub use crate::shared::SessionStore;
use crate::shared::Shared;
use crate::state::{EngineState, ListenerId};
use crate::types::{
    ConnectOptions, ConnectionState, DisconnectReason, Participant, StoreEntry, StoreRead,
};

/// A connection to one room. Dropping it leaves the room.
pub struct Room {
    shared: Arc<Shared>,
    /// The connection task's end, which every `disconnect` waits for.
    task: SharedFuture<BoxFuture<'static, ()>>,
    /// Taken by whoever shuts it down first: the connection task when the room ends,
    /// `disconnect`, or `drop`.
    runtime: Arc<Mutex<Option<Runtime>>>,
}

impl Room {
    /// Joins the room the token grants, and returns once joined: the session store and
    /// the participants are known by then. `url` is the server's address, like
    /// `ws://127.0.0.1:7880` (`http(s)` works too).
    pub async fn connect(
        url: &str,
        token: &str,
        listener: Arc<dyn RoomListener>,
        options: ConnectOptions,
    ) -> Result<Room, RoomError> {
        let io_error = |error: std::io::Error| RoomError::Internal {
            message: format!("cannot start the engine: {error}"),
        };
        const ENGINE_THREAD: &str = "roomstate-engine";
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(1)
            .thread_name(ENGINE_THREAD)
            .enable_all();
        if let Some(on_start) = options.on_thread_start.clone() {
            builder.on_thread_start(move || on_start(ENGINE_THREAD));
        }
        let runtime = builder.build().map_err(io_error)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(EngineState::new()),
            wake: tokio::sync::Notify::new(),
            closing: watch::channel(false).0,
            ended: watch::channel(None).0,
            dispatcher: Dispatcher::start(options.on_thread_start.clone()).map_err(io_error)?,
            room_listener: Mutex::new(Some(listener)),
            options,
            url: url.to_string(),
            token: Mutex::new(token.to_string()),
            reconnect_now: watch::channel(0).0,
            runtime: runtime.handle().clone(),
        });
        let (joined, first_result) = oneshot::channel();
        let ended = EndedGuard(Arc::clone(&shared));
        let connection = connection::run(Arc::clone(&shared), joined);
        let handle = runtime.handle().clone();
        let runtime = Arc::new(Mutex::new(Some(runtime)));
        let task = handle.spawn({
            let runtime = Arc::clone(&runtime);
            async move {
                let _ended = ended; // Dropped when the task ends, or is dropped itself.
                connection.await;
                // The room has ended, whether or not the app calls `disconnect`: its
                // thread has nothing left to do.
                shut_down(runtime.lock().take());
            }
        });
        let room = Room {
            shared,
            task: task.map(drop).boxed().shared(),
            runtime,
        };
        match first_result.await {
            Ok(Ok(())) => Ok(room),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(RoomError::Internal {
                message: "the connection task ended before joining".into(),
            }),
        }
    }

    pub fn connection_state(&self) -> ConnectionState {
        self.shared.state.lock().connection.clone()
    }

    /// The current session's id; it changes when the room empties and fills again.
    pub fn session_id(&self) -> Option<String> {
        let state = self.shared.state.lock();
        state.link.as_ref().map(|link| link.session_id.clone())
    }

    pub fn session_store(&self) -> SessionStore {
        SessionStore {
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn local_participant(&self) -> LocalParticipant {
        LocalParticipant {
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn remote_participants(&self) -> Vec<Participant> {
        let state = self.shared.state.lock();
        let mut participants: Vec<Participant> = state
            .remotes
            .values()
            .map(|info| Participant::from_info(info, false))
            .collect();
        participants.sort_by(|a, b| a.identity.cmp(&b.identity));
        participants
    }

    pub fn room_metadata(&self) -> String {
        self.shared.state.lock().room_metadata.clone()
    }

    /// Leaves the room, and returns once the server has applied the leave (the others are
    /// told) or `LEAVE_TIMEOUT` (2 s) passed on a dead link. Calls answered meanwhile get
    /// their answers; those not yet sent fail with `NotConnected`, and those sent but not
    /// answered (only on a dead link) with `ConnectionLost`; listener calls already
    /// queued still run. Idempotent: concurrent calls all wait for the same leave.
    pub async fn disconnect(&self) {
        self.shared.closing.send_replace(true);
        // Every caller waits for the task to have left: one that shut the runtime down
        // while another still waited would cut the leave short.
        self.task.clone().await;
        shut_down(self.runtime.lock().take());
    }

    /// The access token for the next connection the engine makes. A resume works with
    /// an expired token; joining anew (after `reconnect_grace_ms` away) does not, so an
    /// app whose tokens expire during a session gives a fresh one before then.
    pub fn update_token(&self, token: &str) {
        *self.shared.token.lock() = token.to_string();
    }

    /// Reconnects at once: drops the current connection (it may be dead without anyone
    /// knowing yet, as after a network change) and resumes, or cuts a reconnect
    /// backoff short. Does nothing once the room has ended.
    pub fn reconnect_now(&self) {
        self.shared
            .reconnect_now
            .send_modify(|requests| *requests += 1);
    }
}

/// Shuts a room's runtime down on a thread of its own: a runtime may not be dropped on
/// one of its own threads, nor on an async one.
fn shut_down(runtime: Option<Runtime>) {
    if let Some(runtime) = runtime {
        let _ = std::thread::Builder::new()
            .name("roomstate-shutdown".into())
            .spawn(move || runtime.shutdown_timeout(Duration::from_secs(1)));
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.shared.closing.send_replace(true);
        // Give the connection task a moment to say goodbye before its runtime stops.
        if let Some(runtime) = self.runtime.lock().take() {
            let task = self.task.clone();
            let _ = std::thread::Builder::new()
                .name("roomstate-shutdown".into())
                .spawn(move || {
                    let _ = runtime.block_on(async {
                        tokio::time::timeout(connection::LEAVE_TIMEOUT, task).await
                    });
                    runtime.shutdown_timeout(Duration::from_secs(1));
                });
        }
    }
}

/// Makes `SessionStore::ended` resolve when the connection task ends or is dropped
/// without saying how the room ended (its first join failed, or its runtime shut down
/// first): then as `ClientRequested`. Else the reason is on its way (`set_connection`).
struct EndedGuard(Arc<Shared>);

impl Drop for EndedGuard {
    fn drop(&mut self) {
        let said = matches!(
            self.0.state.lock().connection,
            ConnectionState::Disconnected { .. }
        );
        if !said {
            self.0.finish(DisconnectReason::ClientRequested);
        }
    }
}

/// Returned by `add_key_change_listener`; pass it to `remove_key_change_listener`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyListenerHandle(ListenerId);

impl SessionStore {
    /// Resolves once the room has ended with the reason: left (`ClientRequested`),
    /// removed, the session ended... At once if it has. It resolves after the listener
    /// calls queued before the end have run, so no change is heard after it.
    pub async fn ended(&self) -> DisconnectReason {
        let mut ended = self.shared.ended.subscribe();
        let reason = ended
            .wait_for(Option::is_some)
            .await
            .map(|reason| reason.clone());
        // The sender lives in `shared`, which `self` holds: it is never dropped first.
        reason
            .ok()
            .flatten()
            .unwrap_or(DisconnectReason::ClientRequested)
    }

    /// Calls `listener` with the current value of each key, then with every change.
    /// `"*"` observes every key. Several listeners may observe one key; each gets the
    /// current value first.
    pub fn add_key_change_listener(
        &self,
        keys: Vec<String>,
        listener: Arc<dyn KeyChangeListener>,
    ) -> Result<KeyListenerHandle, RoomError> {
        self.shared.update(|state, heard| {
            if let ConnectionState::Disconnected { .. } = state.connection {
                return Err(RoomError::NotConnected {
                    message: "the room is disconnected".into(),
                });
            }
            if keys.is_empty() {
                return Err(RoomError::InvalidRequest {
                    message: "observe at least one key".into(),
                });
            }
            for key in &keys {
                if key != WILDCARD_KEY {
                    check_key(key, state.limits.key_bytes)?;
                }
            }
            let (id, observe) = state
                .keys
                .add_listener(keys, ListenerSlot::new(listener), heard);
            if let Some(observe) = observe {
                let (message, target) = observe.into_request();
                state.outbox.push(message, target);
                self.shared.wake.notify_one();
            }
            Ok(KeyListenerHandle(id))
        })
    }

    /// After this returns, the listener is not running and is not called again (from
    /// inside a listener: not called again). Removing twice is harmless.
    pub fn remove_key_change_listener(&self, handle: KeyListenerHandle) {
        let removed = {
            let mut state = self.shared.state.lock();
            let removed = state.keys.remove_listener(handle.0);
            if let Some((_, unobserved)) = &removed {
                if !unobserved.is_empty() {
                    state.outbox.push(
                        ClientMessage::Unobserve {
                            id: 0,
                            keys: unobserved.clone(),
                        },
                        ReplyTarget::Nobody,
                    );
                    self.shared.wake.notify_one();
                }
            }
            removed
        };
        // Outside the state lock: this may wait for the listener to return.
        if let Some((slot, _)) = removed {
            slot.deactivate(&self.shared.dispatcher);
        }
    }

    /// The key's entry: from the engine's copy when the key is observed, else from the
    /// server.
    pub async fn get(&self, key: &str) -> Result<Option<StoreEntry>, RoomError> {
        self.read(key).await.map(|read| read.entry)
    }

    /// Like [`get`](Self::get), and says whether the entry may be out of date: the
    /// engine's copy while it is not connected, or a cluster node's copy while that node
    /// cannot reach Redis.
    pub async fn read(&self, key: &str) -> Result<StoreRead, RoomError> {
        {
            let state = self.shared.state.lock();
            if let Some(cached) = state.keys.cached(key) {
                return Ok(StoreRead {
                    entry: cached,
                    may_be_stale: state.connection != ConnectionState::Connected,
                });
            }
        }
        let answer = self
            .shared
            .request(ClientMessage::Get {
                id: 0,
                keys: vec![key.to_string()],
            })
            .await?;
        match answer.body {
            ReplyBody::Entries(entries) => Ok(StoreRead {
                entry: entries
                    .into_iter()
                    .find(|entry| entry.key == key)
                    .and_then(StoreEntry::from_wire),
                may_be_stale: answer.stale,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Writes `value` under `key` (last writer wins); returns the new version.
    /// A `null` value deletes the key.
    pub async fn set(&self, key: &str, value: Value) -> Result<u64, RoomError> {
        self.write(key, Some(value), None).await
    }

    /// Deletes `key`. Deleting a key that does not exist succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), RoomError> {
        self.write(key, None, None).await.map(|_| ())
    }

    /// Writes only if the key is still at `expected_version` (0: the key must not
    /// exist); else fails with `RoomError::Conflict` carrying the current entry. `None`
    /// deletes. Returns the new version.
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected_version: u64,
        value: Option<Value>,
    ) -> Result<u64, RoomError> {
        self.write(key, value, Some(expected_version)).await
    }

    async fn write(
        &self,
        key: &str,
        value: Option<Value>,
        if_version: Option<u64>,
    ) -> Result<u64, RoomError> {
        let message = match value {
            Some(value) => ClientMessage::Set {
                id: 0,
                key: key.to_string(),
                value,
                if_version,
            },
            None => ClientMessage::Delete {
                id: 0,
                key: key.to_string(),
                if_version,
            },
        };
        match self.shared.request(message).await?.body {
            ReplyBody::Entry(entry) => Ok(entry.version),
            other => Err(unexpected(other)),
        }
    }
}

/// This client's own participant.
#[derive(Clone)]
pub struct LocalParticipant {
    shared: Arc<Shared>,
}

impl LocalParticipant {
    pub fn info(&self) -> Option<Participant> {
        let state = self.shared.state.lock();
        state
            .local
            .as_ref()
            .map(|info| Participant::from_info(info, true))
    }

    /// Merges `attributes` into this participant's: only the keys given change, and an
    /// empty value deletes its key.
    pub async fn set_attributes(
        &self,
        attributes: HashMap<String, String>,
    ) -> Result<Participant, RoomError> {
        self.update(ClientMessage::UpdateParticipant {
            id: 0,
            attributes: Some(attributes.into_iter().collect()),
            metadata: None,
            name: None,
        })
        .await
    }

    pub async fn set_metadata(&self, metadata: String) -> Result<Participant, RoomError> {
        self.update(ClientMessage::UpdateParticipant {
            id: 0,
            attributes: None,
            metadata: Some(metadata),
            name: None,
        })
        .await
    }

    pub async fn set_name(&self, name: String) -> Result<Participant, RoomError> {
        self.update(ClientMessage::UpdateParticipant {
            id: 0,
            attributes: None,
            metadata: None,
            name: Some(name),
        })
        .await
    }

    async fn update(&self, message: ClientMessage) -> Result<Participant, RoomError> {
        match self.shared.request(message).await?.body {
            ReplyBody::Participant(info) => Ok(self
                .shared
                .state
                .lock()
                .participant(&info.sid)
                .unwrap_or_else(|| Participant::from_info(&info, true))),
            other => Err(unexpected(other)),
        }
    }
}

fn check_key(key: &str, max: usize) -> Result<(), RoomError> {
    if key.is_empty() {
        return Err(RoomError::InvalidRequest {
            message: "keys are non-empty".into(),
        });
    }
    if key.len() > max {
        return Err(RoomError::LimitExceeded {
            limit: roomstate_protocol::Limit::KeyBytes,
            max: max as u64,
            actual: key.len() as u64,
            message: format!(
                "the key's size in bytes is {}, the limit is {max}",
                key.len()
            ),
        });
    }
    Ok(())
}

fn unexpected(body: ReplyBody) -> RoomError {
    RoomError::Internal {
        message: format!("unexpected reply from the server: {body:?}"),
    }
}
