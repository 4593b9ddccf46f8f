//! The HTTP side: the `/rtc` WebSocket upgrade (authentication happens here, before
//! upgrading, so a refused client gets a status and a reason) and health.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use roomstate_protocol::{
    ConnectParams, ConnectRefusal, ConnectRefusalCode, PROTOCOL_VERSION, RTC_PATH,
};

use crate::api::{self, ApiState};
use crate::auth::Authenticator;
use crate::budget::AddressBudget;
use crate::connection;
use crate::room::{Admission, ResumeRequest, Rooms};
use crate::websocket::Upgrade;

#[derive(Clone)]
pub struct AppState {
    pub rooms: Arc<Rooms>,
    pub auth: Arc<Authenticator>,
}

pub fn router(state: AppState) -> Router {
    let api = ApiState {
        rooms: state.rooms.clone(),
        auth: state.auth.clone(),
    };
    let metrics_rooms = state.rooms.clone();
    Router::new()
        .route(RTC_PATH, get(rtc))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics_rooms.metrics().render(),
                )
            }),
        )
        .route(
            "/twirp/{service}/{method}",
            post(api::twirp)
                .with_state(api)
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    read_body_in_time,
                )),
        )
        .with_state(state)
}

/// Reads a request's whole body within `http_timeout`, before anything looks at it: a
/// client trickling a body holds no handler, and is answered 408.
async fn read_body_in_time(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let config = state.rooms.config();
    let (parts, body) = request.into_parts();
    // Bodies are small JSON requests; the frame limit bounds them as it bounds frames.
    let limit = config.limits.frame_bytes;
    match tokio::time::timeout(config.http_timeout(), axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(error)) => api::TwirpError::new(
            "malformed",
            format!("the request body could not be read (at most {limit} bytes): {error}"),
        )
        .into_response(),
        Err(_) => api::TwirpError::new(
            "deadline_exceeded",
            format!(
                "the request body did not arrive within {:?} (http_timeout_ms)",
                config.http_timeout()
            ),
        )
        .into_response(),
    }
}

async fn rtc(
    State(state): State<AppState>,
    params: Result<Query<ConnectParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    address: Option<Extension<AddressBudget>>,
    upgrade: Upgrade,
) -> Response {
    let admission = match admit(&state, params.map(|Query(params)| params), &headers) {
        Ok(admission) => admission,
        Err(refusal) => {
            let status = match refusal.code {
                ConnectRefusalCode::InvalidToken
                | ConnectRefusalCode::TokenExpired
                | ConnectRefusalCode::TokenNotYetValid => StatusCode::UNAUTHORIZED,
                ConnectRefusalCode::NotAllowed => StatusCode::FORBIDDEN,
                ConnectRefusalCode::UnsupportedProtocol | ConnectRefusalCode::BadRequest => {
                    StatusCode::BAD_REQUEST
                }
            };
            tracing::info!(code = ?refusal.code, message = %refusal.message, "connection refused");
            return (status, Json(refusal)).into_response();
        }
    };
    let frame_bytes = state.rooms.config().limits.frame_bytes;
    let rooms = state.rooms.clone();
    // Boxed: the connection's task would otherwise keep room for the admission (the
    // token's claims) for the connection's whole life, in this closure and in `serve`.
    let admission = Box::new(admission);
    upgrade.accept(frame_bytes, move |socket| {
        connection::serve(
            socket,
            rooms,
            admission,
            address.map(|Extension(budget)| budget),
        )
    })
}

fn admit(
    state: &AppState,
    params: Result<ConnectParams, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
) -> Result<Admission, ConnectRefusal> {
    let params = params.map_err(|rejection| ConnectRefusal {
        code: ConnectRefusalCode::BadRequest,
        message: format!("bad query: {rejection}"),
    })?;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let token = params
        .access_token
        .as_deref()
        .or(bearer)
        .ok_or(ConnectRefusal {
            code: ConnectRefusalCode::InvalidToken,
            message:
                "no access token: pass access_token in the query or an Authorization: Bearer header"
                    .into(),
        })?;
    if params.protocol != PROTOCOL_VERSION {
        return Err(ConnectRefusal {
            code: ConnectRefusalCode::UnsupportedProtocol,
            message: format!(
                "this server speaks protocol {PROTOCOL_VERSION}, the client asked for {}",
                params.protocol
            ),
        });
    }
    let resuming = params.resume_sid.is_some();
    let (claims, token_expired) = if resuming {
        let verified = state.auth.verify_resuming(token)?;
        (verified.claims, verified.expired)
    } else {
        (state.auth.verify(token)?, false)
    };
    Authenticator::check_claims(&claims, &state.rooms.config().limits)?;
    let room = Authenticator::room_to_join(&claims, params.room.as_deref())?;
    let resume = match (params.resume_sid, params.resume_token, params.session_id) {
        (None, None, None) => None,
        (Some(sid), Some(token), Some(session_id)) => Some(ResumeRequest {
            sid,
            token,
            session_id,
            last_seq: params.last_seq,
            last_reply_id: params.last_reply_id,
        }),
        _ => {
            return Err(ConnectRefusal {
                code: ConnectRefusalCode::BadRequest,
                message: "resuming takes resume_sid, resume_token and session_id together".into(),
            })
        }
    };
    Ok(Admission {
        claims,
        room,
        resume,
        token_expired,
    })
}
