//! End-to-end tests: a real `roomstate serve` process, real WebSocket clients (the
//! engine, and raw sockets where a test must misbehave on the wire).

mod hardening;
mod harness;

mod auth_and_limits;
mod cli;
mod cluster;
mod keepalive;
mod lifetimes;
mod participants;
mod readme;
mod resume;
mod server_api;
mod sessions;
mod store;
mod tls;
mod websocket;
