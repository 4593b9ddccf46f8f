//! The roomstate room server: holds each room's session store and participants and fans
//! out their changes over WebSocket.

pub mod auth;
pub mod config;
mod connection;
mod http;
pub mod room;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::ServerConfig;

/// Binds `config.bind` and serves until the process ends. `on_listening` is told the
/// bound address (useful with port 0).
pub async fn serve(
    config: ServerConfig,
    on_listening: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let state = http::AppState {
        rooms: Arc::new(room::Rooms::new(config.clone())),
        auth: Arc::new(auth::Authenticator::new(config.keys.clone())),
    };
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    on_listening(listener.local_addr()?);
    axum::serve(listener, http::router(state)).await
}
