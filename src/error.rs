use roomstate_protocol::{ConnectRefusal, ConnectRefusalCode, ErrorBody, ErrorCode, Limit};

use crate::types::StoreEntry;

/// Everything a room call can fail with. Each variant says whether the change happened:
/// only `Timeout { sent: true }`, `ConnectionLost` and `OutcomeUnknown` leave that open.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoomError {
    /// The room is disconnected for good (or was never connected), and the request was
    /// not applied: it was never sent, or the server ended the room before applying it.
    #[error("not connected: {message}")]
    NotConnected { message: String },
    /// No answer in time. With `sent: false` the request never left and never will;
    /// with `sent: true` the server may have applied it.
    #[error("timed out waiting for the server (request sent: {sent})")]
    Timeout { sent: bool },
    /// The connection was lost after sending and the server could not be asked what
    /// became of the request: it may or may not have been applied.
    #[error("the connection was lost before the server answered; the change may or may not have been applied")]
    ConnectionLost,
    #[error("limit exceeded: {message}")]
    LimitExceeded {
        limit: Limit,
        max: u64,
        actual: u64,
        message: String,
    },
    #[error("not allowed: {message}")]
    NotAllowed { message: String },
    /// `compare_and_set` lost: someone wrote first. `current` is the key's entry now
    /// (`None`: the key does not exist).
    #[error("conflict: the key's version is {}", current.as_ref().map_or(0, |entry| entry.version))]
    Conflict { current: Option<StoreEntry> },
    /// The request itself is wrong (bad key, value that is not JSON, ...).
    #[error("invalid request: {message}")]
    InvalidRequest { message: String },
    /// The server refused the access token.
    #[error("token refused ({code:?}): {message}")]
    InvalidToken {
        code: ConnectRefusalCode,
        message: String,
    },
    /// The server is up but cannot reach the room's shared state (a cluster whose Redis
    /// is down): nothing was changed. Retry later.
    #[error("unavailable: {message}")]
    Unavailable { message: String },
    /// The room's shared state stopped answering while storing the change: it may or
    /// may not have been made (if it was, listeners hear of it as usual).
    #[error("outcome unknown: {message}")]
    OutcomeUnknown { message: String },
    /// The server could not be reached, or did not speak the protocol.
    #[error("cannot connect: {message}")]
    Connect { message: String },
    #[error("server error: {message}")]
    Internal { message: String },
}

impl From<ErrorBody> for RoomError {
    fn from(error: ErrorBody) -> Self {
        match error.code {
            ErrorCode::LimitExceeded => match error.limit {
                Some(violation) => RoomError::LimitExceeded {
                    limit: violation.limit,
                    max: violation.max as u64,
                    actual: violation.actual as u64,
                    message: error.message,
                },
                None => RoomError::Internal {
                    message: error.message,
                },
            },
            ErrorCode::NotAllowed => RoomError::NotAllowed {
                message: error.message,
            },
            ErrorCode::Conflict => RoomError::Conflict {
                current: error
                    .current
                    .and_then(|entry| StoreEntry::from_wire(*entry)),
            },
            ErrorCode::InvalidRequest => RoomError::InvalidRequest {
                message: error.message,
            },
            ErrorCode::Unavailable => RoomError::Unavailable {
                message: error.message,
            },
            ErrorCode::OutcomeUnknown => RoomError::OutcomeUnknown {
                message: error.message,
            },
            ErrorCode::Internal => RoomError::Internal {
                message: error.message,
            },
        }
    }
}

impl From<ConnectRefusal> for RoomError {
    fn from(refusal: ConnectRefusal) -> Self {
        match refusal.code {
            ConnectRefusalCode::UnsupportedProtocol | ConnectRefusalCode::BadRequest => {
                RoomError::Connect {
                    message: refusal.message,
                }
            }
            code => RoomError::InvalidToken {
                code,
                message: refusal.message,
            },
        }
    }
}
