//! Webhooks in LiveKit's format: a JSON `WebhookEvent` body, and an `Authorization`
//! header holding a JWT signed with an API secret whose `sha256` claim is the body's
//! SHA-256 (base64), so LiveKit's `WebhookReceiver`s verify them.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use livekit_protocol as lk;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

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
}

fn default_attempts() -> u32 {
    6
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
    endpoints: Vec<mpsc::UnboundedSender<lk::WebhookEvent>>,
}

impl Webhooks {
    pub fn start(config: WebhookConfig, secret: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client without TLS builds");
        let endpoints = config
            .urls
            .iter()
            .map(|url| {
                let (queue, events) = mpsc::unbounded_channel();
                tokio::spawn(deliver(
                    client.clone(),
                    url.clone(),
                    config.api_key.clone(),
                    secret.clone(),
                    config.attempts.max(1),
                    events,
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
            let _ = endpoint.send(event.clone());
        }
    }
}

async fn deliver(
    client: reqwest::Client,
    url: String,
    api_key: String,
    secret: String,
    attempts: u32,
    mut events: mpsc::UnboundedReceiver<lk::WebhookEvent>,
) {
    while let Some(event) = events.recv().await {
        let body = serde_json::to_string(&event).expect("webhook events serialize");
        let mut backoff = Duration::from_millis(250);
        for attempt in 1..=attempts {
            let sent = client
                .post(&url)
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
