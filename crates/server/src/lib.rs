//! The roomstate room server: holds each room's session store and participants and fans
//! out their changes over WebSocket.

pub mod api;
pub mod auth;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
mod connection;
mod http;
mod listener;
mod livekit;
mod lock;
mod memory;
pub mod metrics;
pub mod room;
pub mod rules;
pub mod webhook;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::ServerConfig;

/// Binds `config.bind` and serves until the process ends. `on_listening` is told the
/// bound address (useful with port 0).
pub async fn serve(
    config: ServerConfig,
    on_listening: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let metrics = metrics::Metrics::new();
    let webhooks = config.webhook.clone().map(|webhook| {
        let secret = config.keys[&webhook.api_key].clone();
        webhook::Webhooks::start(webhook, secret, metrics.webhooks_dropped.clone())
    });
    let (cluster, deliveries) = match &config.redis {
        Some(redis) => {
            let node_id = redis
                .node_id
                .clone()
                .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()));
            let (sender, deliveries) = tokio::sync::mpsc::unbounded_channel();
            // Redis may be starting too: keep trying for a while, saying so.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
            let cluster = loop {
                match cluster::Cluster::connect(redis.clone(), node_id.clone(), sender.clone())
                    .await
                {
                    Ok(cluster) => break cluster,
                    Err(cluster::Unavailable(problem)) => {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(std::io::Error::other(format!(
                                "cannot join the cluster at {}: {problem}",
                                redis.url
                            )));
                        }
                        tracing::warn!(url = %redis.url, %problem, "cannot reach Redis yet; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            };
            tracing::info!(node = %node_id, "joined the cluster");
            (Some((node_id, cluster)), Some(deliveries))
        }
        None => (None, None),
    };
    let rooms = room::Rooms::new(Arc::new(room::Node {
        id: cluster
            .as_ref()
            .map_or_else(|| "local".into(), |(id, _)| id.as_str().into()),
        metrics,
        webhooks,
        config: config.clone(),
        cluster: cluster.map(|(_, cluster)| cluster),
        append_queue: room::NodeQueue::new(
            config.redis.as_ref().map_or(0, |redis| redis.queue_bytes),
        ),
    }));
    if let Some(deliveries) = deliveries {
        rooms.listen(deliveries);
    }
    listener::raise_descriptor_limit();
    memory::trim_periodically();
    let state = http::AppState {
        auth: Arc::new(auth::Authenticator::new(config.keys.clone())),
        rooms,
    };
    // A deep accept queue: after an outage every client reconnects at once, and a full
    // queue drops SYNs, which clients retry only after a second.
    let socket = match config.bind {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(config.bind)?;
    let listener = socket.listen(4096)?;
    on_listening(listener.local_addr()?);
    let refused = state.rooms.metrics().connections_refused.clone();
    listener::serve(listener, http::router(state), &config, refused).await
}
