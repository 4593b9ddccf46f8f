//! What the app's handles on one room (`Room`, `SessionStore`, `LocalParticipant`) and
//! its connection task share: the state behind a lock, the listener thread, and the
//! app's listener. Every change to the state goes through `Shared::update`, which
//! turns what the state says the app should hear of into listener calls.

use std::sync::Arc;

use futures_util::future::{select, Either};
use parking_lot::Mutex;
use roomstate_protocol::ClientMessage;
use tokio::sync::{oneshot, watch};

use crate::dispatch::{Dispatcher, ListenerSlot};
use crate::error::RoomError;
use crate::listener::RoomListener;
use crate::outbox::{Answer, ReplyTarget, Withdrawn};
use crate::state::{EngineState, Notification, Notifications};
use crate::types::{ConnectOptions, ConnectionState, DisconnectReason};

/// How the engine holds an app's key listener.
pub(crate) type Slot = Arc<ListenerSlot>;

/// What the engine knows of the room.
pub(crate) type State = EngineState<Slot>;

/// The room's shared key-value store. Cheap to clone; every clone is the same store.
/// Its operations are in `crate::room`.
#[derive(Clone)]
pub struct SessionStore {
    pub(crate) shared: Arc<Shared>,
}

/// What every handle of one room shares.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// Rung when there is something to send.
    pub wake: tokio::sync::Notify,
    /// Set to `true` to leave the room.
    pub closing: watch::Sender<bool>,
    /// How the room ended, once it has and the listener calls queued before ran.
    pub ended: watch::Sender<Option<DisconnectReason>>,
    pub dispatcher: Dispatcher,
    /// The app's listener, until the room has ended and its last call ran: then the
    /// engine lets go of it, so that a listener holding the store or the room (which
    /// hold this) does not keep both alive for ever.
    pub room_listener: Mutex<Option<Arc<dyn RoomListener>>>,
    pub options: ConnectOptions,
    pub url: String,
    /// The access token for the next connection; the app may replace it.
    pub token: Mutex<String>,
    /// Bumped by `reconnect_now`: the connection task drops its connection, or skips
    /// the rest of its backoff.
    pub reconnect_now: watch::Sender<u64>,
    pub runtime: tokio::runtime::Handle,
}

impl Shared {
    /// Changes the state under its lock, and queues what the app should hear of the
    /// change on the listener thread before releasing it: listeners hear of changes in
    /// the order they were made.
    pub fn update<R>(
        self: &Arc<Self>,
        change: impl FnOnce(&mut State, &mut Notifications<Slot>) -> R,
    ) -> R {
        let mut state = self.state.lock();
        let mut heard = Vec::new();
        let result = change(&mut state, &mut heard);
        self.tell(heard);
        drop(state);
        result
    }

    /// Queues a listener call for each notification. Room listener calls are dropped
    /// once the room has let go of its listener.
    fn tell(self: &Arc<Self>, heard: Notifications<Slot>) {
        if heard.is_empty() {
            return;
        }
        let room = self.room_listener.lock().clone();
        for notification in heard {
            match notification {
                Notification::KeyChanged {
                    listener,
                    key,
                    entry,
                } => self.dispatcher.key_changed(&listener, key, entry),
                Notification::ConnectionState(state) => {
                    self.call_room(&room, move |l| l.on_connection_state_changed(state))
                }
                Notification::SessionStoreAvailable => {
                    let store = SessionStore {
                        shared: Arc::clone(self),
                    };
                    self.call_room(&room, move |l| l.on_session_store_available(store))
                }
                Notification::ParticipantJoined(who) => {
                    self.call_room(&room, move |l| l.on_participant_joined(who))
                }
                Notification::ParticipantLeft(who) => {
                    self.call_room(&room, move |l| l.on_participant_left(who))
                }
                Notification::AttributesChanged(who, keys) => {
                    self.call_room(&room, move |l| l.on_attributes_changed(who, keys))
                }
                Notification::MetadataChanged(who, old, new) => {
                    self.call_room(&room, move |l| l.on_metadata_changed(who, old, new))
                }
                Notification::NameChanged(who, old, new) => {
                    self.call_room(&room, move |l| l.on_name_changed(who, old, new))
                }
                Notification::RoomMetadataChanged(old, new) => {
                    self.call_room(&room, move |l| l.on_room_metadata_changed(old, new))
                }
            }
        }
    }

    /// Queues `call` on the listener thread for the app's room listener, if the room
    /// still holds one.
    fn call_room(
        &self,
        listener: &Option<Arc<dyn RoomListener>>,
        call: impl FnOnce(&dyn RoomListener) + Send + 'static,
    ) {
        if let Some(listener) = listener {
            let listener = Arc::clone(listener);
            self.dispatcher.run(move || call(listener.as_ref()));
        }
    }

    /// Lets go of every app object: the room listener and the key listeners. Run on
    /// the listener thread after the last call, so none is cut short.
    fn release_app_objects(&self) {
        let listener = self.room_listener.lock().take();
        let slots = self.state.lock().keys.release_listeners();
        // Dropped outside the state lock: dropping a foreign object may call into its
        // runtime (the JVM, Swift), which must not find the engine locked.
        drop(slots);
        drop(listener);
    }

    /// The room has ended: resolves `SessionStore::ended`, then releases the app's
    /// objects and ends the listener thread, each after the listener calls already
    /// queued.
    pub fn finish(self: &Arc<Self>, reason: DisconnectReason) {
        let shared = Arc::clone(self);
        self.dispatcher.run_or_call(move || {
            shared
                .ended
                .send_if_modified(|ended| ended.is_none().then(|| *ended = Some(reason)).is_some());
            shared.release_app_objects();
        });
        self.dispatcher.stop();
    }

    /// Queues a request and waits for its answer, at most `request_timeout`.
    pub async fn request(&self, message: ClientMessage) -> Result<Answer, RoomError> {
        let (reply, answer) = oneshot::channel();
        let ticket = {
            let mut state = self.state.lock();
            if let ConnectionState::Disconnected { reason } = &state.connection {
                return Err(RoomError::NotConnected {
                    message: format!("the room is disconnected ({reason:?})"),
                });
            }
            state.outbox.push(message, ReplyTarget::Caller(reply))
        };
        self.wake.notify_one();
        // A caller that stops waiting (a cancelled coroutine, a dropped future)
        // withdraws its request if it has not been sent; once sent, it may be applied.
        let mut withdraw_if_cancelled = WithdrawOnDrop {
            shared: self,
            ticket: Some(ticket),
        };
        // The answer is awaited here, on the caller's executor (Kotlin's, Swift's), and
        // only the timer runs on the room's runtime, since a tokio timer cannot even be
        // made outside one. That runtime stops when the room ends: an answer that had
        // come must not be lost with it.
        let timeout = self.options.request_timeout;
        let mut timer = AbortOnDrop(
            self.runtime
                .spawn(async move { tokio::time::sleep(timeout).await }),
        );
        let waited = select(answer, &mut timer.0).await;
        withdraw_if_cancelled.ticket = None;
        match waited {
            Either::Left((answered, _)) => answered.unwrap_or_else(|_| Err(room_closed())),
            Either::Right((timer, mut answer)) => {
                // Timed out, or the room's runtime stopped (the room ended) meanwhile;
                // either way the answer may have come just now.
                let withdrawn = self.state.lock().outbox.withdraw(ticket);
                if let Ok(answered) = answer.try_recv() {
                    return answered;
                }
                match (timer, withdrawn) {
                    (Ok(()), Withdrawn::NotSent) => Err(RoomError::Timeout { sent: false }),
                    (Ok(()), _) => Err(RoomError::Timeout { sent: true }),
                    (Err(_), Withdrawn::Sent) => Err(RoomError::ConnectionLost),
                    (Err(_), _) => Err(room_closed()),
                }
            }
        }
    }
}

/// What a call gets when the room ended without answering it, and nothing says its
/// request was sent.
fn room_closed() -> RoomError {
    RoomError::NotConnected {
        message: "the room was closed".into(),
    }
}

/// A task that ends with its handle: a request's timer, once the request is answered or
/// its caller stopped waiting.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Withdraws a request whose caller stopped waiting for it.
struct WithdrawOnDrop<'a> {
    shared: &'a Shared,
    ticket: Option<u64>,
}

impl Drop for WithdrawOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.shared.state.lock().outbox.withdraw(ticket);
        }
    }
}
