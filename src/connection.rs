//! The task that keeps a room connected: connects, resumes after drops (with backoff),
//! sends queued requests and applies what the server says.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomstate_protocol::{
    ClientMessage, CloseReason, ConnectParams, ConnectRefusal, ConnectRefusalCode, ErrorBody,
    ErrorCode, Outcome, Reply, ServerMessage, Unreadable, PROTOCOL_VERSION, RTC_PATH,
};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::error::RoomError;
use crate::shared::Shared;
use crate::types::{ConnectionState, DisconnectReason};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How one connection ended.
enum Ended {
    /// Reconnect and resume.
    Lost(String),
    /// The app asked to reconnect: resume at once, without a backoff.
    Dropped,
    /// Stop for good.
    Closed(DisconnectReason),
}

/// Runs until the room is left. `joined` hears how the first join went; if it failed,
/// the task ends without retrying.
pub(crate) async fn run(shared: Arc<Shared>, joined: oneshot::Sender<Result<(), RoomError>>) {
    let mut joined = Some(joined);
    if let Err(message) = shared.options.check() {
        fail_first(&mut joined, RoomError::InvalidRequest { message });
        return;
    }
    let tls = match tls_connector(&shared.options) {
        Ok(tls) => tls,
        Err(message) => {
            fail_first(&mut joined, RoomError::Connect { message });
            return;
        }
    };
    let mut closing = shared.closing.subscribe();
    let mut reconnect_now = shared.reconnect_now.subscribe();
    let mut backoff = Backoff::new(
        shared.options.reconnect_backoff_min,
        shared.options.reconnect_backoff_max,
    );
    let addresses: Vec<&str> = std::iter::once(shared.url.as_str())
        .chain(shared.options.fallback_urls.iter().map(String::as_str))
        .collect();
    let mut address = 0;
    // Failed attempts since the last connection: the first join gives up only after
    // every address failed once.
    let mut failures = 0;
    let reason = loop {
        if *closing.borrow() {
            break DisconnectReason::ClientRequested;
        }
        let url = match connect_url(&shared, addresses[address]) {
            Ok(url) => url,
            Err(error) => {
                fail_first(&mut joined, error);
                return;
            }
        };
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(shared.options.connect_timeout, connect(&url, &tls)) => attempt,
            _ = until_closing(&mut closing) => break DisconnectReason::ClientRequested,
        };
        let problem = match attempt {
            Ok(Ok(socket)) => {
                failures = 0;
                let ended = session(
                    &shared,
                    socket,
                    &mut joined,
                    &mut backoff,
                    &mut reconnect_now,
                )
                .await;
                match ended {
                    Ended::Closed(reason) => break reason,
                    Ended::Lost(problem) => problem,
                    Ended::Dropped => {
                        log::info!("roomstate reconnecting now, as the app asked");
                        shared.update(|state, heard| {
                            state.set_connection(ConnectionState::Reconnecting, heard)
                        });
                        continue;
                    }
                }
            }
            Ok(Err(Refused::Fatal(refusal))) => {
                if joined.is_some() {
                    fail_first(&mut joined, refusal.into());
                    return;
                }
                break DisconnectReason::TokenRefused {
                    message: refusal.message,
                };
            }
            Ok(Err(Refused::Transient(problem))) => {
                failures += 1;
                address = (address + 1) % addresses.len();
                problem
            }
            Err(_) => {
                failures += 1;
                address = (address + 1) % addresses.len();
                "connecting timed out".to_string()
            }
        };
        if joined.is_some() && failures > 0 && failures < addresses.len() {
            continue; // The first join tries every address once before giving up.
        }
        if joined.is_some() {
            fail_first(&mut joined, RoomError::Connect { message: problem });
            return;
        }
        log::info!("roomstate connection lost ({problem}); reconnecting");
        shared.update(|state, heard| state.set_connection(ConnectionState::Reconnecting, heard));
        if reconnect_now.has_changed().unwrap_or(false) {
            // Asked while connected or connecting: no wait at all.
            reconnect_now.borrow_and_update();
            backoff.reset();
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = reconnect_now.changed() => {
                reconnect_now.borrow_and_update();
                backoff.reset();
            }
            _ = until_closing(&mut closing) => break DisconnectReason::ClientRequested,
        }
    };
    shared.update(|state, heard| {
        // A request sent and still unanswered was lost with a link (a server's goodbye
        // fails its own at once, above): it may have been applied, and `NotConnected`
        // (nothing was done) would be a lie the app could act on.
        for pending in state.outbox.drain_in_flight() {
            pending.fail(RoomError::ConnectionLost);
        }
        for pending in state.outbox.drain_unsent() {
            pending.fail(RoomError::NotConnected {
                message: format!("the room disconnected ({reason:?})"),
            });
        }
        let disconnected = ConnectionState::Disconnected {
            reason: reason.clone(),
        };
        state.set_connection(disconnected, heard);
    });
    shared.finish(reason);
}

/// Resolves once the app asked to leave.
async fn until_closing(closing: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await.
    let _ = closing.wait_for(|closing| *closing).await.map(|_| ());
}

fn fail_first(joined: &mut Option<oneshot::Sender<Result<(), RoomError>>>, error: RoomError) {
    if let Some(joined) = joined.take() {
        let _ = joined.send(Err(error));
    }
    // Nothing else can reach this room; the app never got it.
}

/// One connection, from handshake to its end.
async fn session(
    shared: &Arc<Shared>,
    socket: Socket,
    joined: &mut Option<oneshot::Sender<Result<(), RoomError>>>,
    backoff: &mut Backoff,
    reconnect_now: &mut watch::Receiver<u64>,
) -> Ended {
    let (mut sink, mut stream) = socket.split();
    let handshake =
        tokio::time::timeout(shared.options.connect_timeout, next_message(&mut stream)).await;
    let first = match handshake {
        Err(_) => return Ended::Lost("no handshake from the server".into()),
        Ok(Err(ended)) => return ended,
        Ok(Ok(message)) => message,
    };
    // This connection is new: requests to reconnect made before it are answered by it.
    // Marked before `Connected` is announced, so that one made after the app heard it
    // counts.
    reconnect_now.borrow_and_update();
    match first {
        ServerMessage::Joined(info) => shared.update(|state, heard| {
            state.on_joined(info, heard);
            state.set_connection(ConnectionState::Connected, heard);
        }),
        ServerMessage::Resumed(info) => shared.update(|state, heard| {
            state.on_resumed(info, heard);
            state.set_connection(ConnectionState::Connected, heard);
        }),
        ServerMessage::Goodbye { reason, message } => return goodbye(reason, message),
        other => return Ended::Lost(format!("expected joined or resumed, got {other:?}")),
    }
    if let Some(joined) = joined.take() {
        let _ = joined.send(Ok(()));
    }
    backoff.reset();
    let mut closing = shared.closing.subscribe();
    // The first ping one interval after joining, not at once: the `joined` or `resumed`
    // frame has just proved the link alive.
    let mut ping = tokio::time::interval_at(
        Instant::now() + shared.options.ping_interval,
        shared.options.ping_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Any frame from the server, a pong included, proves the link alive: the deadline
    // moves with each one, so a quiet but healthy room never times out, and a link that
    // went silent (half-open, server frozen) is given up exactly `ping_timeout` after
    // its last frame.
    let silence = tokio::time::sleep(shared.options.ping_timeout);
    tokio::pin!(silence);
    loop {
        let frames = shared.state.lock().outbox.take_sendable();
        if !frames.is_empty() {
            let sent = async {
                for frame in frames {
                    sink.feed(Message::text(frame)).await?;
                }
                sink.flush().await
            };
            if let Err(error) = sent.await {
                let problem = format!("send failed: {error}");
                return Box::pin(read_what_arrived(shared, &mut stream, problem)).await;
            }
        }
        tokio::select! {
            biased;
            _ = until_closing(&mut closing) => {
                let _ = tokio::time::timeout(LEAVE_TIMEOUT, leave(shared, &mut sink, &mut stream)).await;
                return Ended::Closed(DisconnectReason::ClientRequested);
            }
            frame = next_frame(&mut stream) => {
                silence.as_mut().reset(Instant::now() + shared.options.ping_timeout);
                if let Err(ended) = apply_frame(shared, frame) {
                    return ended;
                }
            }
            _ = shared.wake.notified() => {}
            _ = reconnect_now.changed() => return Ended::Dropped,
            _ = &mut silence => {
                return Ended::Lost(format!(
                    "no frame from the server for {:?} (the ping timeout)",
                    shared.options.ping_timeout
                ));
            }
            _ = ping.tick() => {
                if let Err(error) = sink.send(Message::Ping(Default::default())).await {
                    let problem = format!("ping failed: {error}");
                    return Box::pin(read_what_arrived(shared, &mut stream, problem)).await;
                }
            }
        }
    }
}

/// How long leaving may take: saying `leave`, the server's goodbye, the closing
/// handshake. The server answers at once; only a dead link waits this long.
pub(crate) const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Says `leave`, then reads until the server has closed the connection: its goodbye comes
/// once the leave is applied (the others told), so `disconnect` returning means the
/// room knows. Reading to the end also matters for the leave itself: a socket closed
/// with frames unread is reset (RST), not closed, and a server may notice the reset
/// before it has read `leave`. Replies that arrive meanwhile still answer their calls;
/// events are no longer applied.
async fn leave(
    shared: &Arc<Shared>,
    sink: &mut futures_util::stream::SplitSink<Socket, Message>,
    stream: &mut futures_util::stream::SplitStream<Socket>,
) {
    let leave = serde_json::to_string(&ClientMessage::Leave {}).expect("serializes");
    if sink.send(Message::text(leave)).await.is_err() {
        return;
    }
    // Ends with the server's close frame (after its goodbye), or the connection's end.
    while let Ok(message) = next_frame(stream).await {
        if let Some(message @ (ServerMessage::Reply(_) | ServerMessage::Rejected { .. })) = message
        {
            shared.update(|state, heard| state.on_message(message, heard));
        }
    }
    // Answers the server's close frame (RFC 6455's closing handshake).
    let _ = sink.close().await;
}

/// At most how long the frames that arrived before a failed send are read.
const READ_AFTER_SEND_FAILURE: Duration = Duration::from_millis(500);

/// After a send failed: what the server sent before still counts. A server that ended
/// the connection (its goodbye, then a close frame) and closed its socket while requests
/// were on their way makes the next send fail with that goodbye unread; taking the
/// failure for a lost link would resume (or join anew) a participant the server removed.
/// So the frames that arrived are read, replies and events applied, and a goodbye
/// honoured; the link counts as lost only without one.
async fn read_what_arrived(
    shared: &Arc<Shared>,
    stream: &mut futures_util::stream::SplitStream<Socket>,
    problem: String,
) -> Ended {
    let reading = async {
        loop {
            if let Err(ended) = apply_frame(shared, next_frame(stream).await) {
                return ended;
            }
        }
    };
    match tokio::time::timeout(READ_AFTER_SEND_FAILURE, reading).await {
        // A goodbye that ends the room; any other end is the lost link the send found.
        Ok(ended @ Ended::Closed(_)) => ended,
        Ok(_) | Err(_) => Ended::Lost(problem),
    }
}

/// Applies one frame read from the server; `Err` with how the connection ended, once it
/// has (a goodbye, the server's close, a failed read).
fn apply_frame(
    shared: &Arc<Shared>,
    frame: Result<Option<ServerMessage>, Ended>,
) -> Result<(), Ended> {
    match frame? {
        None => {}
        Some(ServerMessage::Goodbye { reason, message }) => {
            return Err(goodbye_mid_session(shared, reason, message))
        }
        Some(message) => shared.update(|state, heard| state.on_message(message, heard)),
    }
    Ok(())
}

/// A goodbye on an open connection. The server answers every request it applied before
/// its goodbye, so when it ends the room, one still unanswered was not applied; after a
/// goodbye that asks to reconnect, the resume sorts them out instead.
fn goodbye_mid_session(shared: &Arc<Shared>, reason: CloseReason, message: String) -> Ended {
    if !reason.retry() {
        shared.update(|state, _| {
            for pending in state.outbox.drain_in_flight() {
                pending.fail(RoomError::NotConnected {
                    message: format!(
                        "the server ended the connection ({reason:?}) before applying it"
                    ),
                });
            }
        });
    }
    goodbye(reason, message)
}

fn goodbye(reason: CloseReason, message: String) -> Ended {
    log::info!("the server closed the connection: {reason:?}: {message}");
    match reason {
        _ if reason.retry() => Ended::Lost(message),
        CloseReason::DuplicateIdentity => Ended::Closed(DisconnectReason::DuplicateIdentity),
        CloseReason::Removed => Ended::Closed(DisconnectReason::Removed),
        CloseReason::SessionEnded => Ended::Closed(DisconnectReason::SessionEnded),
        CloseReason::TokenExpired => Ended::Closed(DisconnectReason::TokenRefused { message }),
        _ => Ended::Closed(DisconnectReason::ClientRequested),
    }
}

/// The next frame from the server: a protocol message, or `None` for a ping, pong or
/// other control frame, or a message this engine skips (nothing to apply, but proof
/// that the link is alive).
async fn next_frame(
    stream: &mut futures_util::stream::SplitStream<Socket>,
) -> Result<Option<ServerMessage>, Ended> {
    match stream.next().await {
        Some(Ok(Message::Text(text))) => read_message(text.as_str()),
        Some(Ok(Message::Close(frame))) => {
            Err(Ended::Lost(format!("closed by the server: {frame:?}")))
        }
        Some(Ok(_)) => Ok(None),
        Some(Err(error)) => Err(Ended::Lost(format!("connection error: {error}"))),
        None => Err(Ended::Lost("the connection ended".into())),
    }
}

/// A text frame as a protocol message; `None` for a message of a type this engine does
/// not know (a newer server's), which it skips.
///
/// A reply this engine cannot read (a newer server's error code or body) fails its
/// request rather than the connection: resuming would replay the same reply, and the
/// link would never come back. It fails as `outcome_unknown`: the engine cannot tell
/// whether the request succeeded. A message of a known type that does not parse is a
/// broken frame: the connection is lost.
fn read_message(text: &str) -> Result<Option<ServerMessage>, Ended> {
    let error = match serde_json::from_str(text) {
        Ok(message) => return Ok(Some(message)),
        Err(error) => error,
    };
    match ServerMessage::unreadable(text) {
        Unreadable::Reply(id) => Ok(Some(ServerMessage::Reply(Reply {
            id,
            outcome: Outcome::Error(ErrorBody::new(
                ErrorCode::OutcomeUnknown,
                format!("the server's answer cannot be read (is the server newer than this engine?): {error}"),
            )),
            stale: false,
        }))),
        Unreadable::UnknownType(kind) => {
            // Once per type and process: a newer server's event may come often.
            static WARNED: std::sync::Mutex<BTreeSet<String>> =
                std::sync::Mutex::new(BTreeSet::new());
            let first = WARNED
                .lock()
                .map_or(true, |mut warned| warned.insert(kind.clone()));
            if first {
                log::warn!("skipping messages of a type this engine does not know: {kind:?}");
            }
            Ok(None)
        }
        Unreadable::Broken => Err(Ended::Lost(format!(
            "unreadable frame from the server: {error}"
        ))),
    }
}

/// The next protocol message, skipping control frames (for the handshake).
async fn next_message(
    stream: &mut futures_util::stream::SplitStream<Socket>,
) -> Result<ServerMessage, Ended> {
    loop {
        if let Some(message) = next_frame(stream).await? {
            return Ok(message);
        }
    }
}

enum Refused {
    /// The server said no to this token: retrying will not help.
    Fatal(ConnectRefusal),
    Transient(String),
}

/// The TLS settings for `wss://`: the public web roots plus the app's own CAs, on
/// rustls' ring provider.
fn tls_connector(options: &crate::types::ConnectOptions) -> Result<Connector, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for pem in &options.trusted_certificates_pem {
        for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let certificate = certificate
                .map_err(|error| format!("a trusted certificate is not PEM: {error}"))?;
            roots
                .add(certificate)
                .map_err(|error| format!("a trusted certificate was refused: {error}"))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| format!("TLS setup failed: {error}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

async fn connect(url: &str, tls: &Connector) -> Result<Socket, Refused> {
    match tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(tls.clone())).await
    {
        Ok((socket, _response)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status();
            let refusal = response
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice::<ConnectRefusal>(body).ok());
            match refusal {
                Some(refusal) if status.is_client_error() => Err(Refused::Fatal(refusal)),
                _ if status.is_client_error() => Err(Refused::Fatal(ConnectRefusal {
                    code: ConnectRefusalCode::BadRequest,
                    message: format!("the server answered {status}; is this a roomstate server?"),
                })),
                _ => Err(Refused::Transient(format!("the server answered {status}"))),
            }
        }
        Err(error) => Err(Refused::Transient(error.to_string())),
    }
}

/// The `/rtc` URL, with resume parameters once the engine has a participant to resume.
fn connect_url(shared: &Shared, address: &str) -> Result<String, RoomError> {
    let invalid = |message: String| RoomError::Connect { message };
    let mut url = url::Url::parse(address)
        .map_err(|error| invalid(format!("bad server URL {address:?}: {error}")))?;
    let scheme = match url.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => return Err(invalid(format!("unsupported URL scheme {other:?}"))),
    };
    url.set_scheme(scheme)
        .map_err(|()| invalid("cannot set the URL scheme".into()))?;
    if !url.path().ends_with(RTC_PATH) {
        let path = format!("{}{RTC_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    let state = shared.state.lock();
    let mut params = ConnectParams {
        access_token: Some(shared.token.lock().clone()),
        protocol: PROTOCOL_VERSION,
        ..ConnectParams::default()
    };
    if let Some(link) = &state.link {
        params.resume_sid = Some(link.sid.clone());
        params.resume_token = Some(link.resume_token.clone());
        params.session_id = Some(link.session_id.clone());
        params.last_seq = link.last_seq;
        params.last_reply_id = link.last_reply_id;
    }
    let query = serde_json::to_value(&params).expect("params serialize");
    {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in query.as_object().expect("a struct serializes to an object") {
            match value {
                serde_json::Value::String(text) => pairs.append_pair(name, text),
                other => pairs.append_pair(name, &other.to_string()),
            };
        }
    }
    Ok(url.into())
}

/// Exponential backoff with full jitter.
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    fn reset(&mut self) {
        self.current = self.min;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay.mul_f64(rand::random_range(0.5..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_this_engine_cannot_read_fails_its_request_not_the_connection() {
        let newer = r#"{"type":"reply","id":7,"error":{"code":"from_the_future","message":"x"}}"#;
        let Ok(Some(ServerMessage::Reply(reply))) = read_message(newer) else {
            panic!("not read as a reply");
        };
        assert_eq!(reply.id, 7);
        let Outcome::Error(error) = reply.outcome else {
            panic!("not an error: {:?}", reply.outcome);
        };
        assert_eq!(error.code, ErrorCode::OutcomeUnknown);
        assert!(
            error.message.contains("from_the_future"),
            "{}",
            error.message
        );

        let known = r#"{"type":"reply","id":8,"ok":"done"}"#;
        assert!(
            matches!(read_message(known), Ok(Some(ServerMessage::Reply(_)))),
            "{known}"
        );
    }

    #[test]
    fn a_message_of_a_newer_type_is_skipped_and_a_broken_one_ends_the_connection() {
        let newer = r#"{"type":"poll_started","seq":3,"poll":{"question":"?"}}"#;
        assert!(matches!(read_message(newer), Ok(None)));
        let broken = r#"{"type":"store_changed","key":3}"#;
        assert!(matches!(read_message(broken), Err(Ended::Lost(_))));
        assert!(matches!(read_message("not json"), Err(Ended::Lost(_))));
    }
}
