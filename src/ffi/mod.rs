//! The FFI surface that UniFFI exports to Kotlin and Swift: thin wrappers over the engine,
//! which knows nothing of this module.
//!
//! Values cross as JSON text; each language's idiomatic layer (bindings/) turns them into
//! its own types. Listener methods return `Result` so that an exception thrown by an app
//! listener comes back as an error, which is logged, instead of a panic.

#[cfg(any(
    target_os = "android",
    target_os = "linux",
    target_os = "macos",
    target_os = "windows"
))]
mod jvm;
mod logging;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use logging::{init_logging, LogLevel, Logger};

use crate as engine;

/// One key of the session store. `value_json` is the value as JSON text.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct StoreEntry {
    pub key: String,
    pub value_json: String,
    pub version: u64,
    pub updated_by: String,
    pub updated_at_ms: u64,
}

/// What `read` found: the entry (`null`: absent), and whether it may be out of date
/// (the engine is reconnecting, or the server's node cannot reach its Redis).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct StoreRead {
    pub entry: Option<StoreEntry>,
    pub may_be_stale: bool,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Participant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub is_local: bool,
}

#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum ConnectionState {
    Connecting,
    Connected,
    Reconnecting,
    Disconnected { reason: DisconnectReason },
}

#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum DisconnectReason {
    ClientRequested,
    DuplicateIdentity,
    Removed,
    TokenRefused { detail: String },
    SessionEnded,
}

/// Connection tuning, in milliseconds. The defaults suit a phone on a mobile network.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ConnectOptions {
    #[uniffi(default = 10000)]
    pub request_timeout_ms: u64,
    #[uniffi(default = 10000)]
    pub connect_timeout_ms: u64,
    #[uniffi(default = 5000)]
    pub ping_interval_ms: u64,
    #[uniffi(default = 15000)]
    pub ping_timeout_ms: u64,
    #[uniffi(default = 100)]
    pub reconnect_backoff_min_ms: u64,
    #[uniffi(default = 5000)]
    pub reconnect_backoff_max_ms: u64,
    /// CA certificates (PEM) to trust for wss:// besides the public roots.
    #[uniffi(default = [])]
    pub trusted_certificates_pem: Vec<String>,
    /// More nodes of the same cluster: after a failed attempt the engine tries the
    /// next address, so clients of a node that died move to another and resume.
    #[uniffi(default = [])]
    pub fallback_urls: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Limit {
    ValueBytes,
    Keys,
    StoreBytes,
    KeyBytes,
    AttributesBytes,
    MetadataBytes,
    NameBytes,
    FrameBytes,
}

/// Everything a call can fail with; Kotlin sees `RoomException`, Swift `RoomError`.
#[derive(Debug, Clone, PartialEq, thiserror::Error, uniffi::Error)]
pub enum RoomError {
    /// The room has ended (or never joined); the request was not applied.
    #[error("not connected: {detail}")]
    NotConnected { detail: String },
    /// `sent`: whether the request reached the connection (it may have been applied).
    #[error("timed out (request sent: {sent})")]
    Timeout { sent: bool },
    #[error(
        "connection lost before the server answered; the change may or may not have been applied"
    )]
    ConnectionLost,
    #[error("limit exceeded: {detail}")]
    LimitExceeded {
        limit: Limit,
        max: u64,
        actual: u64,
        detail: String,
    },
    #[error("not allowed: {detail}")]
    NotAllowed { detail: String },
    /// `current` is the key's entry now (`null`: it does not exist).
    #[error("conflict: the key changed")]
    Conflict { current: Option<StoreEntry> },
    /// A bad key, or a value that is not JSON.
    #[error("invalid value: {detail}")]
    InvalidValue { detail: String },
    #[error("token refused ({code}): {detail}")]
    InvalidToken { code: String, detail: String },
    /// The server cannot reach the room's shared state right now; nothing changed.
    #[error("unavailable: {detail}")]
    Unavailable { detail: String },
    /// The room's shared state stopped answering while storing the change: it may or
    /// may not have been made. Read the key before repeating a change that must not
    /// happen twice.
    #[error("outcome unknown: {detail}")]
    OutcomeUnknown { detail: String },
    #[error("cannot connect: {detail}")]
    Connect { detail: String },
    #[error("internal error: {detail}")]
    Internal { detail: String },
}

/// What an app listener's exception becomes on the Rust side.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ListenerError {
    #[error("listener failed: {detail}")]
    Failed { detail: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ListenerError {
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> Self {
        ListenerError::Failed {
            detail: error.reason,
        }
    }
}

/// The app's room listener. See `docs/threading.md`: every method is called on the
/// room's listener thread, in order.
#[uniffi::export(foreign)]
pub trait RoomListener: Send + Sync {
    fn on_session_store_available(&self, store: Arc<SessionStore>) -> Result<(), ListenerError>;
    fn on_connection_state_changed(&self, state: ConnectionState) -> Result<(), ListenerError>;
    fn on_participant_joined(&self, participant: Participant) -> Result<(), ListenerError>;
    fn on_participant_left(&self, participant: Participant) -> Result<(), ListenerError>;
    fn on_attributes_changed(
        &self,
        participant: Participant,
        changed_keys: Vec<String>,
    ) -> Result<(), ListenerError>;
    fn on_metadata_changed(
        &self,
        participant: Participant,
        old_metadata: String,
        new_metadata: String,
    ) -> Result<(), ListenerError>;
    fn on_name_changed(
        &self,
        participant: Participant,
        old_name: String,
        new_name: String,
    ) -> Result<(), ListenerError>;
    fn on_room_metadata_changed(
        &self,
        old_metadata: String,
        new_metadata: String,
    ) -> Result<(), ListenerError>;
}

#[uniffi::export(foreign)]
pub trait KeyChangeListener: Send + Sync {
    /// The key's current entry first (`null`: absent), then every change once, in order.
    fn on_key_changed(&self, key: String, entry: Option<StoreEntry>) -> Result<(), ListenerError>;
}

/// A connection to one room.
#[derive(uniffi::Object)]
pub struct Room {
    inner: engine::Room,
}

#[uniffi::export]
impl Room {
    /// Joins the room the token grants and returns once joined.
    #[uniffi::constructor]
    pub async fn connect(
        url: String,
        token: String,
        listener: Arc<dyn RoomListener>,
        options: ConnectOptions,
    ) -> Result<Arc<Room>, RoomError> {
        logging::install_default();
        let inner = engine::Room::connect(
            &url,
            &token,
            Arc::new(RoomListenerAdapter(listener)),
            options.into(),
        )
        .await?;
        Ok(Arc::new(Room { inner }))
    }

    pub fn connection_state(&self) -> ConnectionState {
        self.inner.connection_state().into()
    }

    pub fn session_id(&self) -> Option<String> {
        self.inner.session_id()
    }

    pub fn session_store(&self) -> Arc<SessionStore> {
        Arc::new(SessionStore {
            inner: self.inner.session_store(),
        })
    }

    pub fn local_participant(&self) -> Arc<LocalParticipant> {
        Arc::new(LocalParticipant {
            inner: self.inner.local_participant(),
        })
    }

    pub fn remote_participants(&self) -> Vec<Participant> {
        self.inner
            .remote_participants()
            .into_iter()
            .map(Into::into)
            .collect()
    }

    pub fn room_metadata(&self) -> String {
        self.inner.room_metadata()
    }

    /// Leaves the room, and returns once the server has applied it (the others are told)
    /// or after 2 s on a dead link; the engine's threads end once queued listener calls
    /// ran. Calls from several threads at once all wait for the same leave.
    pub async fn disconnect(&self) {
        self.inner.disconnect().await
    }

    /// The access token for the next connection. A resume works with an expired token;
    /// joining anew (after the server's grace period) needs one that has not expired.
    pub fn update_token(&self, token: String) {
        self.inner.update_token(&token)
    }

    /// Drops the connection and resumes at once, skipping any backoff: call it when the
    /// OS reports a network change or the app returns to the foreground.
    pub fn reconnect_now(&self) {
        self.inner.reconnect_now()
    }
}

/// `Room.connect` as a function, for Swift: UniFFI 0.32.2 does not apply
/// `[bindings.swift.rename]` to a constructor's return type, so uniffi.toml excludes the
/// constructor from Swift and the Swift layer's `RoomConnection.connect` calls this.
/// Kotlin excludes this one.
#[uniffi::export]
pub async fn connect_room(
    url: String,
    token: String,
    listener: Arc<dyn RoomListener>,
    options: ConnectOptions,
) -> Result<Arc<Room>, RoomError> {
    Room::connect(url, token, listener, options).await
}

/// Identifies one key change listener, for `remove_key_change_listener`.
#[derive(uniffi::Object)]
pub struct ObserverHandle {
    handle: engine::KeyListenerHandle,
}

/// The room's shared key-value store.
#[derive(uniffi::Object)]
pub struct SessionStore {
    inner: engine::SessionStore,
}

#[uniffi::export]
impl SessionStore {
    /// `"*"` observes every key.
    pub fn add_key_change_listener(
        &self,
        keys: Vec<String>,
        listener: Arc<dyn KeyChangeListener>,
    ) -> Result<Arc<ObserverHandle>, RoomError> {
        let handle = self
            .inner
            .add_key_change_listener(keys, Arc::new(KeyChangeListenerAdapter(listener)))?;
        Ok(Arc::new(ObserverHandle { handle }))
    }

    /// Returns once the room has ended (left, removed, the session ended...), with the
    /// reason; at once if it has; after the listener calls queued before the end ran.
    /// The Swift layer's streams finish with it.
    pub async fn ended(&self) -> DisconnectReason {
        self.inner.ended().await.into()
    }

    /// When this returns, the listener is not running and will not be called again.
    pub fn remove_key_change_listener(&self, handle: Arc<ObserverHandle>) {
        self.inner.remove_key_change_listener(handle.handle)
    }

    pub async fn get(&self, key: String) -> Result<Option<StoreEntry>, RoomError> {
        Ok(self.inner.get(&key).await?.map(Into::into))
    }

    /// Like `get`, and says whether the entry may be out of date.
    pub async fn read(&self, key: String) -> Result<StoreRead, RoomError> {
        let read = self.inner.read(&key).await?;
        Ok(StoreRead {
            entry: read.entry.map(Into::into),
            may_be_stale: read.may_be_stale,
        })
    }

    /// Writes `value_json` (JSON text; `null` deletes); returns the new version.
    pub async fn set(&self, key: String, value_json: String) -> Result<u64, RoomError> {
        let value = parse_json(&value_json)?;
        Ok(self.inner.set(&key, value).await?)
    }

    pub async fn delete(&self, key: String) -> Result<(), RoomError> {
        Ok(self.inner.delete(&key).await?)
    }

    /// Writes only if the key is at `expected_version` (0: it must not exist); a `null`
    /// value deletes. Fails with `Conflict` carrying the current entry.
    pub async fn compare_and_set(
        &self,
        key: String,
        expected_version: u64,
        value_json: Option<String>,
    ) -> Result<u64, RoomError> {
        let value = value_json.as_deref().map(parse_json).transpose()?;
        Ok(self
            .inner
            .compare_and_set(&key, expected_version, value)
            .await?)
    }
}

/// This client's own participant.
#[derive(uniffi::Object)]
pub struct LocalParticipant {
    inner: engine::LocalParticipant,
}

#[uniffi::export]
impl LocalParticipant {
    pub fn info(&self) -> Option<Participant> {
        self.inner.info().map(Into::into)
    }

    /// Only the keys given change; an empty value deletes its key.
    pub async fn set_attributes(
        &self,
        attributes: HashMap<String, String>,
    ) -> Result<Participant, RoomError> {
        Ok(self.inner.set_attributes(attributes).await?.into())
    }

    pub async fn set_metadata(&self, metadata: String) -> Result<Participant, RoomError> {
        Ok(self.inner.set_metadata(metadata).await?.into())
    }

    pub async fn set_name(&self, name: String) -> Result<Participant, RoomError> {
        Ok(self.inner.set_name(name).await?.into())
    }
}

/// Engine threads join the JVM when there is one, so JNA calls listeners on them
/// without attaching each time.
fn thread_start_hook() -> Option<engine::ThreadStartHook> {
    #[cfg(any(
        target_os = "android",
        target_os = "linux",
        target_os = "macos",
        target_os = "windows"
    ))]
    return Some(Arc::new(jvm::attach_current_thread));
    #[allow(unreachable_code)]
    None
}

fn parse_json(text: &str) -> Result<serde_json::Value, RoomError> {
    serde_json::from_str(text).map_err(|error| RoomError::InvalidValue {
        detail: format!("the value is not JSON: {error}"),
    })
}

/// Logs a listener's error: an app exception must not take the engine down.
fn report(callback: &str, result: Result<(), ListenerError>) {
    if let Err(error) = result {
        log::error!("{callback} threw: {error}");
    }
}

struct RoomListenerAdapter(Arc<dyn RoomListener>);

impl engine::RoomListener for RoomListenerAdapter {
    fn on_session_store_available(&self, store: engine::SessionStore) {
        let store = Arc::new(SessionStore { inner: store });
        report(
            "onSessionStoreAvailable",
            self.0.on_session_store_available(store),
        );
    }
    fn on_connection_state_changed(&self, state: engine::ConnectionState) {
        report(
            "onConnectionStateChanged",
            self.0.on_connection_state_changed(state.into()),
        );
    }
    fn on_participant_joined(&self, participant: engine::Participant) {
        report(
            "onParticipantJoined",
            self.0.on_participant_joined(participant.into()),
        );
    }
    fn on_participant_left(&self, participant: engine::Participant) {
        report(
            "onParticipantLeft",
            self.0.on_participant_left(participant.into()),
        );
    }
    fn on_attributes_changed(&self, participant: engine::Participant, changed_keys: Vec<String>) {
        report(
            "onAttributesChanged",
            self.0
                .on_attributes_changed(participant.into(), changed_keys),
        );
    }
    fn on_metadata_changed(&self, participant: engine::Participant, old: String, new: String) {
        report(
            "onMetadataChanged",
            self.0.on_metadata_changed(participant.into(), old, new),
        );
    }
    fn on_name_changed(&self, participant: engine::Participant, old: String, new: String) {
        report(
            "onNameChanged",
            self.0.on_name_changed(participant.into(), old, new),
        );
    }
    fn on_room_metadata_changed(&self, old: String, new: String) {
        report(
            "onRoomMetadataChanged",
            self.0.on_room_metadata_changed(old, new),
        );
    }
}

struct KeyChangeListenerAdapter(Arc<dyn KeyChangeListener>);

impl engine::KeyChangeListener for KeyChangeListenerAdapter {
    fn on_key_changed(&self, key: String, entry: Option<engine::StoreEntry>) {
        report(
            "onKeyChanged",
            self.0.on_key_changed(key, entry.map(Into::into)),
        );
    }
}

impl From<engine::StoreEntry> for StoreEntry {
    fn from(entry: engine::StoreEntry) -> Self {
        StoreEntry {
            value_json: entry.value.to_string(),
            key: entry.key,
            version: entry.version,
            updated_by: entry.updated_by,
            updated_at_ms: entry.updated_at_ms,
        }
    }
}

impl From<engine::Participant> for Participant {
    fn from(participant: engine::Participant) -> Self {
        Participant {
            sid: participant.sid,
            identity: participant.identity,
            name: participant.name,
            metadata: participant.metadata,
            attributes: participant.attributes,
            is_local: participant.is_local,
        }
    }
}

impl From<engine::ConnectionState> for ConnectionState {
    fn from(state: engine::ConnectionState) -> Self {
        match state {
            engine::ConnectionState::Connecting => ConnectionState::Connecting,
            engine::ConnectionState::Connected => ConnectionState::Connected,
            engine::ConnectionState::Reconnecting => ConnectionState::Reconnecting,
            engine::ConnectionState::Disconnected { reason } => ConnectionState::Disconnected {
                reason: reason.into(),
            },
        }
    }
}

impl From<engine::DisconnectReason> for DisconnectReason {
    fn from(reason: engine::DisconnectReason) -> Self {
        match reason {
            engine::DisconnectReason::ClientRequested => DisconnectReason::ClientRequested,
            engine::DisconnectReason::DuplicateIdentity => DisconnectReason::DuplicateIdentity,
            engine::DisconnectReason::Removed => DisconnectReason::Removed,
            engine::DisconnectReason::TokenRefused { message } => {
                DisconnectReason::TokenRefused { detail: message }
            }
            engine::DisconnectReason::SessionEnded => DisconnectReason::SessionEnded,
        }
    }
}

impl From<ConnectOptions> for engine::ConnectOptions {
    fn from(options: ConnectOptions) -> Self {
        engine::ConnectOptions {
            request_timeout: Duration::from_millis(options.request_timeout_ms),
            connect_timeout: Duration::from_millis(options.connect_timeout_ms),
            ping_interval: Duration::from_millis(options.ping_interval_ms),
            ping_timeout: Duration::from_millis(options.ping_timeout_ms),
            reconnect_backoff_min: Duration::from_millis(options.reconnect_backoff_min_ms),
            reconnect_backoff_max: Duration::from_millis(options.reconnect_backoff_max_ms),
            trusted_certificates_pem: options.trusted_certificates_pem,
            fallback_urls: options.fallback_urls,
            on_thread_start: thread_start_hook(),
        }
    }
}

impl From<engine::Limit> for Limit {
    fn from(limit: engine::Limit) -> Self {
        match limit {
            engine::Limit::ValueBytes => Limit::ValueBytes,
            engine::Limit::Keys => Limit::Keys,
            engine::Limit::StoreBytes => Limit::StoreBytes,
            engine::Limit::KeyBytes => Limit::KeyBytes,
            engine::Limit::AttributesBytes => Limit::AttributesBytes,
            engine::Limit::MetadataBytes => Limit::MetadataBytes,
            engine::Limit::NameBytes => Limit::NameBytes,
            engine::Limit::FrameBytes => Limit::FrameBytes,
        }
    }
}

impl From<engine::RoomError> for RoomError {
    fn from(error: engine::RoomError) -> Self {
        use engine::RoomError as E;
        match error {
            E::NotConnected { message } => RoomError::NotConnected { detail: message },
            E::Timeout { sent } => RoomError::Timeout { sent },
            E::ConnectionLost => RoomError::ConnectionLost,
            E::LimitExceeded {
                limit,
                max,
                actual,
                message,
            } => RoomError::LimitExceeded {
                limit: limit.into(),
                max,
                actual,
                detail: message,
            },
            E::NotAllowed { message } => RoomError::NotAllowed { detail: message },
            E::Conflict { current } => RoomError::Conflict {
                current: current.map(Into::into),
            },
            E::InvalidRequest { message } => RoomError::InvalidValue { detail: message },
            E::InvalidToken { code, message } => RoomError::InvalidToken {
                code: serde_json::to_value(code)
                    .ok()
                    .and_then(|code| code.as_str().map(str::to_string))
                    .unwrap_or_default(),
                detail: message,
            },
            E::Unavailable { message } => RoomError::Unavailable { detail: message },
            E::OutcomeUnknown { message } => RoomError::OutcomeUnknown { detail: message },
            E::Connect { message } => RoomError::Connect { detail: message },
            E::Internal { message } => RoomError::Internal { detail: message },
        }
    }
}
