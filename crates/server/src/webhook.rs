//! Webhooks in LiveKit's format: a JSON `WebhookEvent` body, and an `Authorization`
//! header holding a JWT signed with an API secret whose `sha256` claim is the body's
//! SHA-256 (base64), so LiveKit's `WebhookReceiver`s verify them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use livekit_protocol as lk;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::auth::unix_now;

/// `[webhook]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Endpoints to POST every event to (http:// only in this version).
    pub urls: Vec<String>,
    /// The API key whose secret signs the events.
    pub api_key: String,
    /// Deliveries per event and endpoint before giving up.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Events waiting per endpoint; past it the oldest is dropped, logged and counted
    /// (`roomstate_webhooks_dropped`), so an endpoint that never answers costs bounded memory.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_attempts() -> u32 {
    6
}

fn default_queue() -> usize {
    1000
}

#[derive(Serialize)]
struct WebhookClaims<'a> {
    iss: &'a str,
    nbf: u64,
    exp: u64,
    sha256: String,
}

/// Queues events for delivery; one worker per endpoint keeps each endpoint's order and
/// lets no endpoint hold up another.
#[derive(Clone)]
pub struct Webhooks {
    endpoints: Vec<Arc<Queue>>,
}

/// One endpoint's events, oldest first, bounded.
struct Queue {
    url: String,
    events: Mutex<VecDeque<lk::WebhookEvent>>,
    capacity: usize,
    ready: Notify,
    dropped: Counter,
}

impl Queue {
    fn push(&self, event: lk::WebhookEvent) {
        let dropped = {
            let mut events = self.events.lock();
            events.push_back(event);
            (events.len() > self.capacity)
                .then(|| events.pop_front())
                .flatten()
        };
        if let Some(dropped) = dropped {
            self.dropped.inc();
            tracing::warn!(url = %self.url, event = %dropped.event, id = %dropped.id, capacity = self.capacity,
                "webhook queue full: dropped the oldest event");
        }
        self.ready.notify_one();
    }

    async fn pop(&self) -> lk::WebhookEvent {
        loop {
            if let Some(event) = self.events.lock().pop_front() {
                return event;
            }
            self.ready.notified().await;
        }
    }
}

impl Webhooks {
    /// Starts one delivery worker per endpoint; `dropped` counts events dropped from
    /// full queues.
    pub fn start(config: WebhookConfig, secret: String, dropped: Counter) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client without TLS builds");
        let endpoints = config
            .urls
            .iter()
            .map(|url| {
                let queue = Arc::new(Queue {
                    url: url.clone(),
                    events: Mutex::new(VecDeque::new()),
                    capacity: config.queue.max(1),
                    ready: Notify::new(),
                    dropped: dropped.clone(),
                });
                tokio::spawn(deliver(
                    client.clone(),
                    config.api_key.clone(),
                    secret.clone(),
                    config.attempts.max(1),
                    queue.clone(),
                ));
                queue
            })
            .collect();
        Webhooks { endpoints }
    }

    pub fn send(&self, event: &str, room: lk::Room, participant: Option<lk::ParticipantInfo>) {
        let event = lk::WebhookEvent {
            event: event.to_string(),
            room: Some(room),
            participant,
            id: format!("EV_{:016x}", rand::random::<u64>()),
            created_at: unix_now() as i64,
            ..Default::default()
        };
        for endpoint in &self.endpoints {
            endpoint.push(event.clone());
        }
    }
}

async fn deliver(
    client: reqwest::Client,
    api_key: String,
    secret: String,
    attempts: u32,
    queue: Arc<Queue>,
) {
    let url = &queue.url;
    // Ends with the runtime: the queue lives as long as the server.
    loop {
        let event = queue.pop().await;
        let body = serde_json::to_string(&event).expect("webhook events serialize");
        let mut backoff = Duration::from_millis(250);
        for attempt in 1..=attempts {
            let sent = client
                .post(url)
                .header("Content-Type", "application/webhook+json")
                .header("Authorization", sign(&body, &api_key, &secret))
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => break,
                outcome => {
                    let problem = match outcome {
                        Ok(response) => format!("status {}", response.status()),
                        Err(error) => error.to_string(),
                    };
                    if attempt == attempts {
                        tracing::error!(%url, event = %event.event, %problem, "webhook dropped after {attempts} attempts");
                    } else {
                        tracing::warn!(%url, event = %event.event, %problem, "webhook failed; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
    }
}

fn sign(body: &str, api_key: &str, secret: &str) -> String {
    let now = unix_now();
    let claims = WebhookClaims {
        iss: api_key,
        nbf: now.saturating_sub(10),
        exp: now + 300,
        sha256: base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body.as_bytes())),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> lk::WebhookEvent {
        lk::WebhookEvent {
            event: format!("event-{n}"),
            ..Default::default()
        }
    }

    /// An endpoint that never answers holds at most `queue` events: the oldest go, each
    /// counted, and what stays is the newest, in order.
    #[tokio::test]
    async fn a_full_queue_drops_its_oldest_events_and_counts_them() {
        let dropped = Counter::default();
        let queue = Queue {
            url: "http://127.0.0.1:9/hook".into(),
            events: Mutex::new(VecDeque::new()),
            capacity: 3,
            ready: Notify::new(),
            dropped: dropped.clone(),
        };
        for n in 0..10 {
            queue.push(event(n));
        }
        assert_eq!(dropped.get(), 7);
        assert_eq!(queue.events.lock().len(), 3);
        for n in 7..10 {
            assert_eq!(queue.pop().await.event, format!("event-{n}"));
        }
    }
}
