//! The server's Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub rooms: Gauge,
    /// Bytes of log entries this node has queued for Redis (a cluster node).
    pub append_queue_bytes: Gauge,
    pub sessions_started: Counter,
    pub sessions_ended: Counter,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub store_writes: Counter,
    pub errors: Family<CodeLabel, Counter>,
    /// Time to queue one change to every connection that receives it.
    pub fanout_seconds: Histogram,
    /// Webhook events dropped because an endpoint's queue was full.
    pub webhooks_dropped: Counter,
    /// TCP connections closed at once because their address had too many open.
    pub connections_refused: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("roomstate");
        let metrics = Metrics {
            connections: Gauge::default(),
            rooms: Gauge::default(),
            append_queue_bytes: Gauge::default(),
            sessions_started: Counter::default(),
            sessions_ended: Counter::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            store_writes: Counter::default(),
            errors: Family::default(),
            // 1 µs .. ~1 s
            fanout_seconds: Histogram::new(exponential_buckets(1e-6, 4.0, 11)),
            webhooks_dropped: Counter::default(),
            connections_refused: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register("rooms", "Rooms with a session", metrics.rooms.clone());
        registry.register(
            "append_queue_bytes",
            "Bytes of log entries queued for Redis, not yet stored (a cluster node)",
            metrics.append_queue_bytes.clone(),
        );
        registry.register(
            "sessions_started",
            "Sessions started",
            metrics.sessions_started.clone(),
        );
        registry.register(
            "sessions_ended",
            "Sessions ended",
            metrics.sessions_ended.clone(),
        );
        registry.register(
            "messages_in",
            "WebSocket messages received from clients, control frames included",
            metrics.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "WebSocket messages sent to clients, control frames (pongs, close frames) included",
            metrics.messages_out.clone(),
        );
        registry.register(
            "store_writes",
            "Store changes applied",
            metrics.store_writes.clone(),
        );
        registry.register(
            "errors",
            "Requests answered with an error, by the protocol's code (the server API's Twirp code where the protocol has none)",
            metrics.errors.clone(),
        );
        registry.register(
            "fanout_seconds",
            "Time to queue one change to every receiving connection",
            metrics.fanout_seconds.clone(),
        );
        registry.register(
            "webhooks_dropped",
            "Webhook events dropped, oldest first, because an endpoint's queue was full",
            metrics.webhooks_dropped.clone(),
        );
        registry.register(
            "connections_refused",
            "TCP connections closed at once: their address had max_connections_per_address open",
            metrics.connections_refused.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn error(&self, code: &str) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
