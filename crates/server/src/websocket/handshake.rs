//! The opening handshake (RFC 6455, section 4.2): an HTTP/1.1 `GET` asking to upgrade,
//! answered with `101 Switching Protocols`, after which hyper hands the socket back.
//! axum's `WebSocketUpgrade` does the same but keeps the socket inside tungstenite's
//! stream, whose buffers an idle connection would carry; this hands over the TCP socket
//! itself.

use std::future::Future;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::read::Reader;
use super::write::Writer;
use crate::listener::{Counted, Slot};

/// A request to open a WebSocket, checked.
pub(crate) struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket handshake.
#[derive(Debug, thiserror::Error)]
pub enum NotAnUpgrade {
    #[error("a WebSocket handshake must be a GET")]
    NotGet,
    #[error("the Connection header does not include 'upgrade'")]
    NoConnectionUpgrade,
    #[error("the Upgrade header is not 'websocket'")]
    NotWebSocket,
    #[error("Sec-WebSocket-Version must be 13")]
    UnsupportedVersion,
    #[error("no Sec-WebSocket-Key header")]
    NoKey,
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        let status = match self {
            NotAnUpgrade::NotGet => StatusCode::METHOD_NOT_ALLOWED,
            NotAnUpgrade::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(NotAnUpgrade::NotGet);
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(NotAnUpgrade::NoConnectionUpgrade);
        }
        if !has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(NotAnUpgrade::NotWebSocket);
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13"))
        {
            return Err(NotAnUpgrade::UnsupportedVersion);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(NotAnUpgrade::NoKey)?
            .clone();
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(NotAnUpgrade::NotUpgradable)?;
        Ok(Upgrade { key, on_upgrade })
    }
}

/// Whether `name`'s comma-separated values include `token`, in any case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|value| value.trim().eq_ignore_ascii_case(token))
}

/// An open WebSocket: the TCP socket's two halves, and its address's connection slot.
pub(crate) struct Socket {
    pub reader: Reader,
    pub writer: Writer,
    #[expect(
        dead_code,
        reason = "held for its drop, which frees the address's slot"
    )]
    pub slot: Slot,
}

impl Socket {
    /// The socket hyper upgraded. Not inlined into the task: what it takes apart would
    /// stay in the task's future for the connection's life.
    fn from_upgraded(upgraded: hyper::upgrade::Upgraded, max_message: usize) -> Option<Socket> {
        // The listener serves every connection over this one type.
        let Ok(parts) = upgraded.downcast::<TokioIo<Counted>>() else {
            tracing::error!("an upgraded connection is not a TCP socket of this server");
            return None;
        };
        let (tcp, slot) = parts.io.into_inner().into_parts();
        let (read, write) = tcp.into_split();
        Some(Socket {
            reader: Reader::new(read, parts.read_buf, max_message),
            writer: Writer::new(write),
            slot,
        })
    }
}

impl Upgrade {
    /// Answers `101 Switching Protocols`; once hyper has sent it, `serve` runs with the
    /// socket (messages up to `max_message` bytes).
    pub fn accept<Serve, Served>(self, max_message: usize, serve: Serve) -> Response
    where
        Serve: FnOnce(Socket) -> Served + Send + 'static,
        Served: Future<Output = ()> + Send + 'static,
    {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "the WebSocket upgrade failed");
                    return;
                }
            };
            if let Some(socket) = Socket::from_upgraded(upgraded, max_message) {
                serve(socket).await;
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Body::empty())
            .expect("a valid response")
    }
}
