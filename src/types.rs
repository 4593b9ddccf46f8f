//! The engine's public value types: owned, cloneable, and free of wire details.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use roomstate_protocol::{Entry, ParticipantInfo};
use serde_json::Value;

/// What [`SessionStore::read`](crate::SessionStore::read) found.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreRead {
    /// `None`: the key does not exist.
    pub entry: Option<StoreEntry>,
    /// The answer came from a copy that may be behind: the engine's own while it is not
    /// connected, or a cluster node's while that node cannot reach Redis.
    pub may_be_stale: bool,
}

/// One key of the session store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreEntry {
    pub key: String,
    /// Never JSON `null`: a key whose value is null does not exist.
    pub value: Value,
    /// Grows with every change of the key within a session; pass it to
    /// `compare_and_set` to write only if nobody else wrote first.
    pub version: u64,
    /// Identity of the participant (or API caller) that wrote it.
    pub updated_by: String,
    /// When the server applied the write, in milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

impl StoreEntry {
    /// `None` for an entry that says "no such key".
    pub(crate) fn from_wire(entry: Entry) -> Option<StoreEntry> {
        Some(StoreEntry {
            value: entry.value?,
            key: entry.key,
            version: entry.version,
            updated_by: entry.updated_by,
            updated_at_ms: entry.updated_at,
        })
    }
}

/// A participant as the app sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub is_local: bool,
}

impl Participant {
    pub(crate) fn from_info(info: &ParticipantInfo, is_local: bool) -> Self {
        Participant {
            sid: info.sid.clone(),
            identity: info.identity.clone(),
            name: info.name.clone(),
            metadata: info.metadata.clone(),
            attributes: info
                .attributes
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            is_local,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    Connected,
    /// The connection dropped; the engine is getting it back. Calls wait.
    Reconnecting,
    /// For good: calls fail with `RoomError::NotConnected`.
    Disconnected {
        reason: DisconnectReason,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The app called `disconnect`.
    ClientRequested,
    /// Another connection joined with the same identity.
    DuplicateIdentity,
    /// A server API removed this participant.
    Removed,
    /// The server refused the token when reconnecting (e.g. it expired meanwhile).
    TokenRefused { message: String },
    /// A hidden participant's session ended: everyone else left.
    SessionEnded,
}

/// Called first thing on every thread the engine starts, with the thread's name.
pub type ThreadStartHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Tuning for one connection. The defaults suit a phone on a mobile network.
#[derive(Clone)]
pub struct ConnectOptions {
    /// How long a call waits for its answer, reconnects included.
    pub request_timeout: Duration,
    /// How long the first connection may take.
    pub connect_timeout: Duration,
    /// The engine pings the server this often; the server answers each ping with a pong.
    pub ping_interval: Duration,
    /// A connection from which no frame at all (a pong counts) arrived for this long is
    /// taken as dead, and the engine reconnects. Must be longer than `ping_interval`.
    pub ping_timeout: Duration,
    /// Backoff between reconnect attempts: doubles from min to max, with jitter.
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    /// CA certificates (PEM) to trust for `wss://` besides the public web roots, e.g. a
    /// self-hosted server's private CA.
    pub trusted_certificates_pem: Vec<String>,
    /// Other nodes of the same cluster. After a failed connection attempt the engine
    /// moves on to the next address (the main URL first, then these, round and round),
    /// so the clients of a node that died resume on another one.
    pub fallback_urls: Vec<String>,
    /// Runs on each engine thread as it starts (e.g. to attach it to a JVM).
    pub on_thread_start: Option<ThreadStartHook>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("reconnect_backoff_min", &self.reconnect_backoff_min)
            .field("reconnect_backoff_max", &self.reconnect_backoff_max)
            .field(
                "trusted_certificates_pem",
                &self.trusted_certificates_pem.len(),
            )
            .field("fallback_urls", &self.fallback_urls)
            .field("on_thread_start", &self.on_thread_start.is_some())
            .finish()
    }
}

impl ConnectOptions {
    /// Checks what would make the keep-alive misfire: a ping timeout that does not
    /// leave room for at least one ping and its pong would drop a healthy connection.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.ping_interval.is_zero() {
            return Err("ping_interval must be more than 0".into());
        }
        if self.ping_timeout <= self.ping_interval {
            return Err(format!(
                "ping_timeout ({:?}) must be longer than ping_interval ({:?})",
                self.ping_timeout, self.ping_interval
            ));
        }
        if self.reconnect_backoff_min > self.reconnect_backoff_max {
            return Err(format!(
                "reconnect_backoff_min ({:?}) is above reconnect_backoff_max ({:?})",
                self.reconnect_backoff_min, self.reconnect_backoff_max
            ));
        }
        Ok(())
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(15),
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(5),
            trusted_certificates_pem: Vec::new(),
            fallback_urls: Vec::new(),
            on_thread_start: None,
        }
    }
}
