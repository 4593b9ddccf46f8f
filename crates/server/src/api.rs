//! The server API: Twirp over HTTP POST at `/twirp/<package>.<Service>/<Method>`.
//!
//! `livekit.RoomService` follows LiveKit's, so its official server SDKs work unchanged,
//! in both encodings they use: `application/protobuf` and `application/json` (protobuf's
//! JSON mapping). `roomstate.SessionStore` is roomstate's own (JSON). Every call carries
//! `Authorization: Bearer <token>`; errors use Twirp's JSON shape.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use livekit_protocol as lk;
use roomstate_protocol::{Claims, Entry, ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::Authenticator;
use crate::livekit;
use crate::room::{AdminError, ParticipantChange, Rooms};

#[derive(Clone)]
pub struct ApiState {
    pub rooms: Arc<Rooms>,
    pub auth: Arc<Authenticator>,
}

/// A Twirp error: `{"code", "msg", "meta"}` with the status Twirp gives the code.
#[derive(Debug, Serialize, Deserialize)]
pub struct TwirpError {
    pub code: String,
    pub msg: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub meta: HashMap<String, String>,
    /// Sent as `Retry-After`: HTTP clients that repeat a 408 by themselves (OkHttp,
    /// under LiveKit's JVM SDK) do not when told when to retry, and a change that may
    /// have been made is not for a library to repeat.
    #[serde(skip)]
    retry_after: Option<&'static str>,
    /// The protocol's code, where the refusal is one a WebSocket client could get too:
    /// `roomstate_errors_total` counts it under that code, whichever way it was made.
    #[serde(skip)]
    protocol_code: Option<ErrorCode>,
}

impl TwirpError {
    pub fn new(code: &str, msg: impl Into<String>) -> Self {
        TwirpError {
            code: code.to_string(),
            msg: msg.into(),
            meta: HashMap::new(),
            retry_after: None,
            protocol_code: None,
        }
    }

    fn status(&self) -> StatusCode {
        match self.code.as_str() {
            "invalid_argument" | "malformed" | "out_of_range" => StatusCode::BAD_REQUEST,
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "permission_denied" => StatusCode::FORBIDDEN,
            "not_found" | "bad_route" => StatusCode::NOT_FOUND,
            "aborted" | "already_exists" => StatusCode::CONFLICT,
            "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
            "deadline_exceeded" => StatusCode::REQUEST_TIMEOUT,
            "failed_precondition" => StatusCode::PRECONDITION_FAILED,
            "unimplemented" => StatusCode::NOT_IMPLEMENTED,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for TwirpError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(&self)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(seconds),
            );
        }
        response
    }
}

impl From<AdminError> for TwirpError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::NoSuchRoom(room) => {
                TwirpError::new("not_found", format!("room {room:?} has no active session"))
            }
            AdminError::NoSuchParticipant(identity) => TwirpError::new(
                "not_found",
                format!("no participant {identity:?} in the room"),
            ),
            AdminError::Refused(error) => error.into(),
            AdminError::Unavailable(problem) => ErrorBody::new(
                ErrorCode::Unavailable,
                format!("the room's shared state cannot be reached: {problem}"),
            )
            .into(),
            AdminError::OutcomeUnknown(problem) => {
                ErrorBody::new(ErrorCode::OutcomeUnknown, problem).into()
            }
        }
    }
}

impl From<ErrorBody> for TwirpError {
    fn from(error: ErrorBody) -> Self {
        let code = match error.code {
            ErrorCode::InvalidRequest => "invalid_argument",
            ErrorCode::NotAllowed => "permission_denied",
            ErrorCode::LimitExceeded => "resource_exhausted",
            ErrorCode::Conflict => "aborted",
            ErrorCode::Unavailable => "unavailable",
            // Twirp's code for "may have completed even so".
            ErrorCode::OutcomeUnknown => "deadline_exceeded",
            ErrorCode::Internal => "internal",
        };
        let mut twirp = TwirpError::new(code, error.message);
        twirp.protocol_code = Some(error.code);
        if error.code == ErrorCode::OutcomeUnknown {
            twirp.retry_after = Some("1");
        }
        twirp
            .meta
            .insert("roomstate_code".into(), error.code.as_str().into());
        if let Some(limit) = error.limit {
            twirp.meta.insert(
                "limit".into(),
                serde_json::to_value(limit.limit)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or_default()
                    .into(),
            );
            twirp.meta.insert("max".into(), limit.max.to_string());
            twirp.meta.insert("actual".into(), limit.actual.to_string());
        }
        if let Some(current) = error.current {
            twirp
                .meta
                .insert("current_version".into(), current.version.to_string());
            twirp.meta.insert(
                "current".into(),
                serde_json::to_string(&current).unwrap_or_default(),
            );
        }
        twirp
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, TwirpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/protobuf") {
        Ok(Encoding::Protobuf)
    } else if content_type.starts_with("application/json") {
        Ok(Encoding::Json)
    } else {
        Err(TwirpError::new(
            "bad_route",
            format!("unsupported Content-Type {content_type:?}: use application/json or application/protobuf"),
        ))
    }
}

fn decode<T: prost::Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<T, TwirpError> {
    match encoding {
        Encoding::Protobuf => T::decode(body)
            .map_err(|error| TwirpError::new("malformed", format!("bad protobuf body: {error}"))),
        Encoding::Json => decode_json(body),
    }
}

fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, TwirpError> {
    serde_json::from_slice(body)
        .map_err(|error| TwirpError::new("malformed", format!("bad JSON body: {error}")))
}

fn reply<T: prost::Message + Serialize>(encoding: Encoding, message: &T) -> Response {
    match encoding {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/protobuf")],
            message.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => axum::Json(message).into_response(),
    }
}

/// What a call needs from the token.
enum Grant<'a> {
    RoomList,
    RoomAdmin(&'a str),
}

fn authorize(state: &ApiState, headers: &HeaderMap, grant: Grant) -> Result<Claims, TwirpError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(|| {
            TwirpError::new("unauthenticated", "missing Authorization: Bearer <token>")
        })?;
    let claims = state
        .auth
        .verify_signed(token)
        .map_err(|refusal| TwirpError::new("unauthenticated", refusal.message))?;
    let allowed = match grant {
        Grant::RoomList => claims.video.room_list,
        Grant::RoomAdmin(room) => {
            claims.video.room_admin && (claims.video.room.is_empty() || claims.video.room == room)
        }
    };
    if !allowed {
        let needed = match grant {
            Grant::RoomList => "video.roomList".to_string(),
            Grant::RoomAdmin(room) => format!("video.roomAdmin for room {room:?}"),
        };
        return Err(TwirpError::new(
            "permission_denied",
            format!("the token does not grant {needed}"),
        ));
    }
    Ok(claims)
}

pub async fn twirp(
    State(state): State<ApiState>,
    Path((service, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = match service.as_str() {
        "livekit.RoomService" => room_service(&state, &method, &headers, &body).await,
        "roomstate.SessionStore" => session_store(&state, &method, &headers, &body).await,
        _ => Err(TwirpError::new(
            "bad_route",
            format!("no service {service:?}"),
        )),
    };
    result.unwrap_or_else(|error| {
        match error.protocol_code {
            Some(code) => state.rooms.metrics().error(code.as_str()),
            None => state.rooms.metrics().error(&error.code),
        }
        error.into_response()
    })
}

async fn room_service(
    state: &ApiState,
    method: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, TwirpError> {
    let encoding = encoding(headers)?;
    let rooms = &state.rooms;
    match method {
        "ListRooms" => {
            let request: lk::ListRoomsRequest = decode(encoding, body)?;
            authorize(state, headers, Grant::RoomList)?;
            let listed = rooms.list(&request.names).await?;
            let rooms = listed
                .iter()
                .map(|summary| livekit::room(&summary.name, summary))
                .collect();
            Ok(reply(encoding, &lk::ListRoomsResponse { rooms }))
        }
        "ListParticipants" => {
            let request: lk::ListParticipantsRequest = decode(encoding, body)?;
            authorize(state, headers, Grant::RoomAdmin(&request.room))?;
            let participants = rooms
                .participants(&request.room)
                .await?
                .iter()
                .map(livekit::participant)
                .collect();
            Ok(reply(
                encoding,
                &lk::ListParticipantsResponse { participants },
            ))
        }
        "GetParticipant" => {
            let request: lk::RoomParticipantIdentity = decode(encoding, body)?;
            authorize(state, headers, Grant::RoomAdmin(&request.room))?;
            let info = rooms.participant(&request.room, &request.identity).await?;
            Ok(reply(encoding, &livekit::participant(&info)))
        }
        "UpdateParticipant" => {
            let request: lk::UpdateParticipantRequest = decode(encoding, body)?;
            authorize(state, headers, Grant::RoomAdmin(&request.room))?;
            // As in LiveKit: empty metadata or name means "leave as is"; attributes merge,
            // and an empty value deletes.
            let change = ParticipantChange {
                metadata: (!request.metadata.is_empty()).then_some(request.metadata),
                name: (!request.name.is_empty()).then_some(request.name),
                attributes: (!request.attributes.is_empty())
                    .then(|| request.attributes.into_iter().collect()),
                can_update_metadata: request
                    .permission
                    .map(|permission| permission.can_update_metadata),
            };
            let info = rooms
                .update_participant(&request.room, &request.identity, change)
                .await?;
            Ok(reply(encoding, &livekit::participant(&info)))
        }
        "RemoveParticipant" => {
            let request: lk::RoomParticipantIdentity = decode(encoding, body)?;
            authorize(state, headers, Grant::RoomAdmin(&request.room))?;
            rooms
                .remove_participant(&request.room, &request.identity)
                .await?;
            Ok(reply(encoding, &lk::RemoveParticipantResponse {}))
        }
        "UpdateRoomMetadata" => {
            let request: lk::UpdateRoomMetadataRequest = decode(encoding, body)?;
            authorize(state, headers, Grant::RoomAdmin(&request.room))?;
            let summary = rooms
                .set_room_metadata(&request.room, request.metadata)
                .await?;
            Ok(reply(encoding, &livekit::room(&summary.name, &summary)))
        }
        _ => Err(TwirpError::new(
            "bad_route",
            format!("livekit.RoomService has no method {method:?} here"),
        )),
    }
}

/// `roomstate.SessionStore/Get`
#[derive(Debug, Serialize, Deserialize)]
pub struct StoreKeyRequest {
    pub room: String,
    pub key: String,
}

/// `roomstate.SessionStore/List`
#[derive(Debug, Serialize, Deserialize)]
pub struct StoreListRequest {
    pub room: String,
}

/// `roomstate.SessionStore/Set`: `value` is any JSON (`null` deletes); with
/// `expected_version`, only if the key is at that version (0: must not exist).
#[derive(Debug, Serialize, Deserialize)]
pub struct StoreSetRequest {
    pub room: String,
    pub key: String,
    pub value: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

/// `roomstate.SessionStore/Delete`
#[derive(Debug, Serialize, Deserialize)]
pub struct StoreDeleteRequest {
    pub room: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

/// The answer to Get, Set and Delete: the key's entry (no `value`: absent).
#[derive(Debug, Serialize, Deserialize)]
pub struct StoreEntryResponse {
    pub entry: Entry,
    /// Set when the node answered from its own copy because Redis was unreachable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StoreListResponse {
    pub entries: Vec<Entry>,
    /// Set when the node answered from its own copy because Redis was unreachable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

async fn session_store(
    state: &ApiState,
    method: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, TwirpError> {
    if encoding(headers)? != Encoding::Json {
        return Err(TwirpError::new(
            "bad_route",
            "roomstate.SessionStore speaks application/json",
        ));
    }
    let rooms = &state.rooms;
    match method {
        "Get" => {
            let request: StoreKeyRequest = decode_json(body)?;
            authorize(state, headers, Grant::RoomAdmin(&request.room))?;
            let (entry, stale) = rooms.store_entry(&request.room, &request.key).await?;
            Ok(axum::Json(StoreEntryResponse { entry, stale }).into_response())
        }
        "List" => {
            let request: StoreListRequest = decode_json(body)?;
            authorize(state, headers, Grant::RoomAdmin(&request.room))?;
            let (entries, stale) = rooms.store_list(&request.room).await?;
            Ok(axum::Json(StoreListResponse { entries, stale }).into_response())
        }
        "Set" | "Delete" => {
            let (room, key, value, expected_version) = if method == "Set" {
                let request: StoreSetRequest = decode_json(body)?;
                (
                    request.room,
                    request.key,
                    Some(request.value),
                    request.expected_version,
                )
            } else {
                let request: StoreDeleteRequest = decode_json(body)?;
                (request.room, request.key, None, request.expected_version)
            };
            let claims = authorize(state, headers, Grant::RoomAdmin(&room))?;
            let entry = rooms
                .store_write(&room, &api_caller(&claims), &key, value, expected_version)
                .await?;
            Ok(axum::Json(StoreEntryResponse {
                entry,
                stale: false,
            })
            .into_response())
        }
        _ => Err(TwirpError::new(
            "bad_route",
            format!("roomstate.SessionStore has no method {method:?}"),
        )),
    }
}

/// Who a server API write is from, as `updated_by` shows it.
fn api_caller(claims: &Claims) -> String {
    if claims.sub.is_empty() {
        format!("api:{}", claims.iss)
    } else {
        claims.sub.clone()
    }
}
