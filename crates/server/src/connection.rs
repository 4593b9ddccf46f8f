//! One WebSocket connection: a reader that hands requests to the room, and a writer that
//! drains the connection's bounded queue onto the socket.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roomstate_protocol::{
    ClientMessage, CloseReason, ErrorBody, ErrorCode, RequestId, ServerMessage,
};
use tokio::task::JoinHandle;

use crate::budget::{AddressBudget, InboundBudget};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::room::{
    Admission, Closing, Connection, NotAdmitted, Outbox, Outgoing, Rooms, WRITE_BATCH,
    WRITE_BATCH_BYTES,
};
use crate::websocket::{self, Frame, Incoming, ReadError, Reader, Socket, Writer};

/// How long an ended connection's socket is kept open for the client to close it first
/// (reading and dropping what it still sends), so that our last frames reach it. The
/// address's connection slot is held meanwhile: else clients refused by the hundred
/// (bad tokens) would hold sockets past the per-address limit.
const LINGER: Duration = Duration::from_secs(2);

/// Close codes of RFC 6455 (section 7.4.1) the server sends without a goodbye.
const NORMAL_CLOSURE: u16 = 1000;
const PROTOCOL_ERROR: u16 = 1002;

/// A client frame above this many bytes is heavy: it is parsed off the runtime's
/// workers, and the reader yields after it.
const HEAVY_FRAME_BYTES: usize = 8 * 1024;

/// Serves one admitted WebSocket; `address` is the budget its IP address shares with
/// its other connections (none when the per-address budget is off).
///
/// An idle connection costs this future and its writer's, each as large as its largest
/// state: what an idle connection is not doing (being refused, applying a message,
/// saying goodbye, ending) is boxed, so that it does not set the size every connection
/// keeps while it waits (docs/benchmarks.md, W4).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps each argument twice, as passed and as bound in its body, \
              for as long as it runs: the socket's 144 bytes, for every connection's life"
)]
pub fn serve(
    mut socket: Socket,
    rooms: Arc<Rooms>,
    admission: Box<Admission>,
    address: Option<AddressBudget>,
) -> impl Future<Output = ()> + Send {
    async move {
        // Out of its box, and the box freed now: a box moved out of stays allocated
        // until it goes out of scope, which for this one is the connection's end.
        let admission: Admission = *{ admission };
        let config = rooms.config();
        let outbox = Outbox::new(config.outbound_queue, config.outbound_queue_bytes);
        // The reader's own handle, for frames it answers itself: every frame queued to this
        // connection is counted against its budget, whoever queues it.
        let own = Connection::new(outbox.clone());
        // Boxed: the join's future is large, and this one lives as long as the connection.
        let admitted = match Box::pin(rooms.admit(admission, own.clone())).await {
            Ok(admitted) => admitted,
            Err(not_admitted) => {
                if let NotAdmitted::Unavailable(problem) = &not_admitted {
                    tracing::warn!(%problem, "cannot admit a connection: the cluster is unavailable");
                }
                let closing = not_admitted.into_closing();
                let timeout = config.write_timeout();
                Box::pin(async {
                    say_goodbye(&mut socket.writer, closing, timeout, rooms.metrics()).await;
                    linger(&mut socket.reader, address.as_ref(), config).await;
                })
                .await;
                return;
            }
        };
        let epoch = admitted.epoch;
        rooms.metrics().connections.inc();
        let mut writing = tokio::spawn(write_frames(
            socket.writer,
            admitted.initial,
            outbox.clone(),
            rooms.clone(),
        ));
        let reading = Reading {
            rooms: &rooms,
            room: &admitted.room,
            sid: &admitted.sid,
            epoch,
            own: &own,
            address: address.as_ref(),
        };
        let end = reading.read_frames(&mut socket.reader, &mut writing).await;
        if !matches!(end, ReadEnd::WriterGone) {
            // In a cluster the last requests may still be on their way to Redis: their
            // answers go out before the close frame.
            Box::pin(admitted.room.settle()).await;
        }
        // The close frame to end with, once the reader is done; none if the writer gave up.
        let farewell = match end {
            ReadEnd::Gone => Some(websocket::close(NORMAL_CLOSURE, "")),
            ReadEnd::Closing(closing) => {
                // The first reason stands: a slow consumer cut by the room stays one, even
                // if its reads then time out too. Its goodbye carries the close frame.
                outbox.close_unless_closing(closing);
                Some(websocket::close(NORMAL_CLOSURE, ""))
            }
            ReadEnd::Violation(violation) => Some(websocket::close(PROTOCOL_ERROR, violation)),
            ReadEnd::WriterGone => None,
        };
        admitted.room.connection_closed(&admitted.sid, epoch);
        if let Some(farewell) = farewell {
            // Nothing more is queued, so the writer ends once the queue is out.
            outbox.end(farewell);
            let _ = writing.await;
        }
        rooms.metrics().connections.dec();
        Box::pin(linger(&mut socket.reader, address.as_ref(), config)).await;
    }
}

/// Keeps an ended connection's socket open until the client closes its side, at most
/// [`LINGER`], reading and dropping what it still sends. Closing a socket with bytes
/// unread resets it (RST), and a reset can overtake our last frames on their way and
/// destroy them (RFC 6455 has the client close the TCP connection first for this
/// reason): a client removed while it was still sending would lose its `goodbye`, take
/// that for a lost link and reconnect.
///
/// The bytes dropped are paced by the address's read budget like any others: read at
/// full speed, a client cut while flooding would have each of its sockets read as fast
/// as it can send for the whole linger, and the budget would bound nothing.
async fn linger(reader: &mut Reader, address: Option<&AddressBudget>, config: &ServerConfig) {
    let mut own = InboundBudget::new(config.client_rate());
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(dropped @ 1..) = reader.discard().await {
            match address {
                Some(address) => address.spend_bytes(dropped).await,
                None => own.spend_bytes(dropped).await,
            }
        }
    })
    .await;
}

/// How reading a connection ended.
enum ReadEnd {
    /// The client closed, or the connection is gone.
    Gone,
    /// The server closes it, saying why (a goodbye, then a close frame).
    Closing(Closing),
    /// The client broke RFC 6455: a close frame (1002) names the violation.
    Violation(&'static str),
    /// Writing failed (the client reset the connection, or stopped reading), and what
    /// had arrived before was read.
    WriterGone,
}

/// What reading one admitted connection needs.
struct Reading<'a> {
    rooms: &'a Rooms,
    room: &'a Arc<crate::room::Room>,
    sid: &'a str,
    epoch: u64,
    own: &'a Connection,
    address: Option<&'a AddressBudget>,
}

impl Reading<'_> {
    /// Reads until the client goes away, or the server decides to close. If `writing`
    /// ends first, the frames that had arrived are still read and applied, and nothing
    /// more is waited for: a client that says `leave` and closes its socket with our
    /// last frames unread resets the connection, and our next write may fail before
    /// that `leave` is read.
    async fn read_frames(&self, reader: &mut Reader, writing: &mut JoinHandle<()>) -> ReadEnd {
        let Reading { rooms, sid, .. } = *self;
        let idle_timeout = rooms.config().idle_timeout();
        let mut budget = InboundBudget::new(rooms.config().client_rate());
        loop {
            let next = tokio::select! {
                biased;
                next = tokio::time::timeout(idle_timeout, reader.next()) => next,
                _ = &mut *writing => {
                    return Box::pin(self.read_arrived(reader, &mut budget)).await
                }
            };
            let message = match next {
                Err(_) => {
                    return ReadEnd::Closing(Closing {
                        reason: CloseReason::IdleTimeout,
                        message: format!("no frame for {idle_timeout:?} (the idle timeout)"),
                    })
                }
                Ok(Err(error)) => {
                    tracing::debug!(%sid, %error, "websocket read failed");
                    return read_failed(error, rooms.config().limits.frame_bytes);
                }
                Ok(Ok(message)) => message,
            };
            // Boxed: applying takes more room than waiting for the next frame, and an
            // idle connection would keep that room.
            if !Box::pin(self.apply(message, &mut budget)).await {
                return ReadEnd::Gone;
            }
        }
    }

    /// Once writing has failed: applies the frames that had arrived, waiting for none.
    async fn read_arrived(&self, reader: &mut Reader, budget: &mut InboundBudget) -> ReadEnd {
        while let Ok(message) = reader.next_arrived() {
            if !self.apply(message, budget).await {
                break;
            }
        }
        ReadEnd::WriterGone
    }

    /// Applies one message from the client; `false` once it closed the connection.
    async fn apply(&self, message: Incoming, budget: &mut InboundBudget) -> bool {
        let Reading {
            rooms,
            room,
            sid,
            epoch,
            own,
            address,
        } = *self;
        rooms.metrics().messages_in.inc();
        // Past its budget a connection is simply read later: TCP pushes back on the
        // client, and no one connection (or address) can take a worker for itself.
        let len = frame_len(&message);
        budget.spend(len).await;
        if let Some(address) = address {
            address.spend(len).await;
        }
        let text = match message {
            Incoming::Text(text) => text,
            Incoming::Binary(_) => {
                reject(
                    own,
                    rooms.metrics(),
                    None,
                    "binary frames are not part of the protocol; send JSON text",
                );
                return true;
            }
            Incoming::Close(_) => return false,
            Incoming::Ping(payload) => {
                // A client that pings and does not read loses pongs, not memory.
                own.send_control(websocket::pong(&payload));
                return true;
            }
            Incoming::Pong => return true,
        };
        // Reads and large frames cost the most (a reply can hold the whole store):
        // after one, let other tasks run, so one pipelining client cannot hold a worker
        // for a whole coop budget of them while /healthz and other rooms wait.
        let heavy = text.len() > HEAVY_FRAME_BYTES;
        let parsed = if heavy {
            // Up to frame_bytes of JSON: parsed on a blocking thread, so the worker goes
            // on serving other connections (and /healthz) meanwhile.
            let text = text.clone();
            tokio::task::spawn_blocking(move || {
                serde_json::from_str::<ClientMessage>(text.as_str())
            })
            .await
            .expect("parsing does not panic")
        } else {
            serde_json::from_str::<ClientMessage>(text.as_str())
        };
        match parsed {
            Ok(message) => {
                let heavy = heavy
                    || matches!(
                        message,
                        ClientMessage::Get { .. } | ClientMessage::Observe { .. }
                    );
                room.handle(sid, epoch, message, own).await;
                if heavy {
                    tokio::task::yield_now().await;
                }
            }
            Err(error) => reject(
                own,
                rooms.metrics(),
                readable_id(text.as_str()),
                &format!("malformed frame: {error}"),
            ),
        }
        true
    }
}

fn frame_len(message: &Incoming) -> usize {
    match message {
        Incoming::Text(text) => text.len(),
        Incoming::Binary(len) => *len,
        Incoming::Ping(payload) => payload.len(),
        Incoming::Pong | Incoming::Close(_) => 0,
    }
}

/// How a failed read ends the connection: a message over `frame_bytes` with a goodbye
/// saying so (close code 1009), a protocol violation with a close frame naming it (1002),
/// a connection that is gone silently.
fn read_failed(error: ReadError, frame_bytes: usize) -> ReadEnd {
    match error {
        ReadError::TooLarge(_) => ReadEnd::Closing(Closing {
            reason: CloseReason::FrameTooLarge,
            message: format!("a frame was larger than {frame_bytes} bytes (limits.frame_bytes)"),
        }),
        ReadError::Protocol(violation) => ReadEnd::Violation(violation),
        ReadError::Ended | ReadError::Io(_) => ReadEnd::Gone,
    }
}

/// The `id` of a frame that is JSON but not a valid message, so that the client can tell
/// which request was refused.
fn readable_id(text: &str) -> Option<RequestId> {
    #[derive(serde::Deserialize)]
    struct WithId {
        id: Option<RequestId>,
    }
    serde_json::from_str::<WithId>(text).ok()?.id
}

fn reject(own: &Connection, metrics: &Metrics, id: Option<RequestId>, message: &str) {
    let rejected = ServerMessage::Rejected {
        id,
        error: ErrorBody::new(ErrorCode::InvalidRequest, message),
    };
    metrics.error(ErrorCode::InvalidRequest.as_str());
    // A client that floods bad frames and does not read loses the notices, not memory.
    let _ = own.send(&Frame::json(&rejected));
}

/// Writes the connection's frames in order. Every write is bounded by the server's
/// `write_timeout`: a client that stops reading is dropped then, with its queue, instead
/// of holding its socket and memory.
async fn write_frames(
    mut writer: Writer,
    initial: Vec<Frame>,
    outbox: Arc<Outbox>,
    rooms: Arc<Rooms>,
) {
    let timeout = rooms.config().write_timeout();
    let sent = |count: usize| rooms.metrics().messages_out.inc_by(count as u64);
    sent(initial.len());
    // Consumed, not borrowed: the `joined` frame (which lists every participant) is the
    // largest a connection gets, and is not kept for the connection's life.
    let initial: Vec<Bytes> = initial.into_iter().map(Frame::into_wire).collect();
    if write_within(&mut writer, &initial, timeout).await.is_err() {
        return;
    }
    drop(initial);
    // What a look into the queue found after a batch was taken (a goodbye, the end).
    let mut carried = None;
    loop {
        let outgoing = match carried.take() {
            Some(outgoing) => outgoing,
            None => outbox.next(WRITE_BATCH, WRITE_BATCH_BYTES).await,
        };
        match outgoing {
            Outgoing::Frames(mut frames) => {
                if frames.len() < WRITE_BATCH {
                    // A room's fan-out reaches this queue from the tasks of other
                    // connections, a few scheduler turns apart: one turn for them
                    // before writing lets one write carry the frames of several events,
                    // for the price of a task switch.
                    tokio::task::yield_now().await;
                    match outbox.take(WRITE_BATCH - frames.len(), WRITE_BATCH_BYTES) {
                        Some(Outgoing::Frames(more)) => frames.extend(more),
                        other => carried = other,
                    }
                }
                sent(frames.len());
                if write_within(&mut writer, &frames, timeout).await.is_err() {
                    return;
                }
            }
            Outgoing::Close(closing) => {
                tracing::debug!(reason = ?closing.reason, "saying goodbye");
                Box::pin(say_goodbye(&mut writer, closing, timeout, rooms.metrics())).await;
                return;
            }
            Outgoing::End => {
                let _ = writer.shutdown().await;
                return;
            }
        }
    }
}

/// Why a write was given up.
struct WriteFailed;

async fn write_within(
    writer: &mut Writer,
    frames: &[Bytes],
    timeout: Duration,
) -> Result<(), WriteFailed> {
    match tokio::time::timeout(timeout, writer.write(frames)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteFailed),
        Err(_) => {
            tracing::debug!(
                ?timeout,
                "a write to the client timed out; dropping the connection"
            );
            Err(WriteFailed)
        }
    }
}

/// Sends `goodbye` and the close frame, within `timeout` in all.
async fn say_goodbye(writer: &mut Writer, closing: Closing, timeout: Duration, metrics: &Metrics) {
    let goodbye = Frame::json(&ServerMessage::Goodbye {
        reason: closing.reason,
        message: closing.message.clone(),
    });
    let close = websocket::close(closing.reason.close_code(), &closing.message);
    metrics.messages_out.inc_by(2);
    if write_within(writer, &[goodbye.wire().clone(), close], timeout)
        .await
        .is_ok()
    {
        let _ = writer.shutdown().await;
    }
}
