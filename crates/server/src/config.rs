//! Server settings: defaults, then a TOML file, then flags and environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use roomstate_protocol::Limits;
use serde::Deserialize;

use crate::budget::Rate;

/// The API key and secret `--dev` installs. Never use them outside a laptop.
pub const DEV_API_KEY: &str = "devkey";
pub const DEV_API_SECRET: &str = "secret";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// API key -> secret. Tokens are signed with a secret and name its key in `iss`.
    pub keys: BTreeMap<String, String>,
    pub limits: Limits,
    /// How long a participant whose connection dropped stays in the room, waiting to
    /// resume, before the others are told it left.
    pub reconnect_grace_ms: u64,
    /// Frames queued for one connection before it counts as a slow consumer and is
    /// disconnected (it may resume).
    pub outbound_queue: usize,
    /// The same queue's bound in bytes (the frames' total size).
    pub outbound_queue_bytes: usize,
    /// Recent events kept per room so that resuming clients get exactly what they missed.
    pub replay_log_events: usize,
    /// A connection that sends nothing (not even a ping) for this long is closed.
    pub idle_timeout_ms: u64,
    /// Replies kept per participant for a resume to re-send, in bytes (the oldest go
    /// first; the newest reply always stays).
    pub reply_cache_bytes: usize,
    /// How long one write to a client (a frame, a flush, the goodbye) may take before
    /// the connection is dropped: a reader that stalls is cut within this.
    pub write_timeout_ms: u64,
    /// How long an HTTP client may take to send a request's headers (the WebSocket
    /// handshake included) and, separately, its body.
    pub http_timeout_ms: u64,
    /// Open TCP connections from one IP address at most; more are closed at once.
    pub max_connections_per_address: usize,
    /// Frames one connection may send per second (a second's worth may come at once);
    /// past it the server reads that connection later.
    pub client_requests_per_second: usize,
    /// Bytes one connection may send per second, likewise.
    pub client_bytes_per_second: usize,
    /// Frames all the connections of one IP address may send per second together, so
    /// that reconnecting or opening more sockets does not buy more; 0 turns it off.
    pub address_requests_per_second: usize,
    /// Bytes likewise; 0 turns it off.
    pub address_bytes_per_second: usize,
    /// Where to send webhooks, if anywhere.
    pub webhook: Option<crate::webhook::WebhookConfig>,
    /// Join a cluster through Redis; without it the node holds every room in memory.
    pub redis: Option<crate::cluster::ClusterConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 7880)),
            keys: BTreeMap::new(),
            limits: Limits::default(),
            reconnect_grace_ms: 20_000,
            outbound_queue: 1024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            replay_log_events: 4096,
            idle_timeout_ms: 30_000,
            reply_cache_bytes: 1024 * 1024,
            write_timeout_ms: 10_000,
            http_timeout_ms: 10_000,
            max_connections_per_address: 1024,
            client_requests_per_second: 200,
            client_bytes_per_second: 1024 * 1024,
            address_requests_per_second: 1000,
            address_bytes_per_second: 4 * 1024 * 1024,
            webhook: None,
            redis: None,
        }
    }
}

impl ServerConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })
    }

    pub fn reconnect_grace(&self) -> Duration {
        Duration::from_millis(self.reconnect_grace_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// How fast one connection is read.
    pub fn client_rate(&self) -> Rate {
        Rate {
            frames_per_second: self.client_requests_per_second,
            bytes_per_second: self.client_bytes_per_second,
        }
    }

    /// How fast the connections of one address are read together; none: unbounded.
    pub fn address_rate(&self) -> Option<Rate> {
        (self.address_requests_per_second > 0 && self.address_bytes_per_second > 0).then_some(
            Rate {
                frames_per_second: self.address_requests_per_second,
                bytes_per_second: self.address_bytes_per_second,
            },
        )
    }

    pub fn http_timeout(&self) -> Duration {
        Duration::from_millis(self.http_timeout_ms)
    }

    /// Parses `key:secret[,key:secret...]`.
    pub fn parse_keys(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        text.split(',')
            .filter(|pair| !pair.trim().is_empty())
            .map(|pair| match pair.trim().split_once(':') {
                Some((key, secret)) if !key.is_empty() && !secret.is_empty() => {
                    Ok((key.to_string(), secret.to_string()))
                }
                _ => Err(ConfigError::Invalid(format!(
                    "keys must look like key:secret[,key:secret], got {pair:?}"
                ))),
            })
            .collect()
    }

    /// Applies `name=value`, a field of [`Limits`] and a whole number.
    pub fn set_limit(&mut self, assignment: &str) -> Result<(), ConfigError> {
        let invalid = || {
            ConfigError::Invalid(format!(
                "a limit looks like name=number (names: value_bytes, keys, store_bytes, \
                 key_bytes, attributes_bytes, metadata_bytes, name_bytes, frame_bytes), \
                 got {assignment:?}"
            ))
        };
        let (name, value) = assignment.split_once('=').ok_or_else(invalid)?;
        let value: usize = value.trim().parse().map_err(|_| invalid())?;
        let limits = &mut self.limits;
        let field = match name.trim() {
            "value_bytes" => &mut limits.value_bytes,
            "keys" => &mut limits.keys,
            "store_bytes" => &mut limits.store_bytes,
            "key_bytes" => &mut limits.key_bytes,
            "attributes_bytes" => &mut limits.attributes_bytes,
            "metadata_bytes" => &mut limits.metadata_bytes,
            "name_bytes" => &mut limits.name_bytes,
            "frame_bytes" => &mut limits.frame_bytes,
            _ => return Err(invalid()),
        };
        *field = value;
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.keys.is_empty() {
            return Err(ConfigError::Invalid(
                "no API keys: pass --keys key:secret, set ROOMSTATE_KEYS, add [keys] to the \
                 config file, or use --dev"
                    .into(),
            ));
        }
        if let Some(webhook) = &self.webhook {
            if !self.keys.contains_key(&webhook.api_key) {
                return Err(ConfigError::Invalid(format!(
                    "webhook.api_key {:?} is not one of the configured keys",
                    webhook.api_key
                )));
            }
        }
        if let Some(redis) = &self.redis {
            if !["redis://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| redis.url.starts_with(scheme))
            {
                return Err(ConfigError::Invalid(format!(
                    "redis.url must look like redis://host:port/db (or redis+unix:///path), got {:?}",
                    redis.url
                )));
            }
            if redis.heartbeat_ms == 0 || redis.node_timeout_ms <= redis.heartbeat_ms {
                return Err(ConfigError::Invalid(
                    "redis.node_timeout_ms must be longer than redis.heartbeat_ms (> 0)".into(),
                ));
            }
            if redis.queue_bytes < self.limits.frame_bytes {
                return Err(ConfigError::Invalid(format!(
                    "redis.queue_bytes must hold at least one frame (limits.frame_bytes, {})",
                    self.limits.frame_bytes
                )));
            }
        }
        if self.outbound_queue == 0 || self.replay_log_events == 0 {
            return Err(ConfigError::Invalid(
                "outbound_queue and replay_log_events must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_overrides_defaults() {
        let config: ServerConfig = toml::from_str(
            "bind = \"127.0.0.1:9000\"\nreconnect_grace_ms = 500\n[keys]\nk = \"s\"\n[limits]\nkeys = 5\n",
        )
        .unwrap();
        assert_eq!(config.bind.port(), 9000);
        assert_eq!(config.reconnect_grace_ms, 500);
        assert_eq!(config.keys["k"], "s");
        assert_eq!(config.limits.keys, 5);
        assert_eq!(
            config.limits.value_bytes, 1024,
            "unset limits keep defaults"
        );
        assert!(
            toml::from_str::<ServerConfig>("bnid = 1").is_err(),
            "typos are errors"
        );
    }

    /// docs/configuration.md shows the defaults of the top-level settings and limits in
    /// its sample file: they must be the defaults the server really has.
    #[test]
    fn the_documented_sample_shows_the_real_defaults() {
        let doc = include_str!("../../../docs/configuration.md");
        let sample = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/configuration.md has a toml sample");
        let documented: ServerConfig = toml::from_str(sample).expect("the sample parses");
        let defaults = ServerConfig::default();
        assert_eq!(documented.bind, defaults.bind);
        assert_eq!(documented.reconnect_grace_ms, defaults.reconnect_grace_ms);
        assert_eq!(documented.outbound_queue, defaults.outbound_queue);
        assert_eq!(
            documented.outbound_queue_bytes,
            defaults.outbound_queue_bytes
        );
        assert_eq!(documented.replay_log_events, defaults.replay_log_events);
        assert_eq!(documented.idle_timeout_ms, defaults.idle_timeout_ms);
        assert_eq!(documented.reply_cache_bytes, defaults.reply_cache_bytes);
        assert_eq!(documented.write_timeout_ms, defaults.write_timeout_ms);
        assert_eq!(documented.http_timeout_ms, defaults.http_timeout_ms);
        assert_eq!(
            documented.max_connections_per_address,
            defaults.max_connections_per_address
        );
        assert_eq!(
            documented.client_requests_per_second,
            defaults.client_requests_per_second
        );
        assert_eq!(
            documented.client_bytes_per_second,
            defaults.client_bytes_per_second
        );
        assert_eq!(
            documented.address_requests_per_second,
            defaults.address_requests_per_second
        );
        assert_eq!(
            documented.address_bytes_per_second,
            defaults.address_bytes_per_second
        );
        assert_eq!(
            serde_json::to_value(documented.limits).unwrap(),
            serde_json::to_value(defaults.limits).unwrap()
        );
        let redis = documented.redis.expect("the sample has a [redis] section");
        assert_eq!(
            redis.queue_bytes,
            crate::cluster::ClusterConfig::default().queue_bytes
        );
        assert_eq!(
            redis.timeout_ms,
            crate::cluster::ClusterConfig::default().timeout_ms
        );
    }

    #[test]
    fn a_node_queue_that_cannot_hold_one_frame_is_refused() {
        let config = |queue_bytes: usize| -> ServerConfig {
            toml::from_str(&format!(
                "[keys]\nk = \"s\"\n[limits]\nframe_bytes = 4096\n[redis]\nurl = \"redis://127.0.0.1/0\"\nqueue_bytes = {queue_bytes}\n"
            ))
            .unwrap()
        };
        assert!(config(4096).validate().is_ok());
        let Err(ConfigError::Invalid(message)) = config(4095).validate() else {
            panic!("a queue smaller than a frame was accepted");
        };
        assert!(message.contains("queue_bytes"), "{message}");
        assert!(config(0).validate().is_err());
    }

    #[test]
    fn keys_and_limits_parse_from_flags() {
        let keys = ServerConfig::parse_keys("a:1, b:2").unwrap();
        assert_eq!(keys.len(), 2);
        assert!(ServerConfig::parse_keys("a").is_err());
        let mut config = ServerConfig::default();
        config.set_limit("value_bytes=10").unwrap();
        assert_eq!(config.limits.value_bytes, 10);
        assert!(config.set_limit("nope=1").is_err());
        assert!(config.set_limit("keys=x").is_err());
    }
}
