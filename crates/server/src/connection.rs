//! One WebSocket connection: a reader that hands requests to the room, and a writer that
//! drains the connection's bounded queue onto the socket.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use roomstate_protocol::{
    ClientMessage, CloseReason, ErrorBody, ErrorCode, RequestId, ServerMessage,
};
use tokio::sync::{mpsc, watch};

use crate::budget::{AddressBudget, InboundBudget};
use crate::room::{Admission, Closing, Connection, NotAdmitted, QueuedBytes, Rooms};

/// Frames written per flush at most, so one busy connection cannot starve the rest.
const WRITE_BATCH: usize = 64;

/// Bytes written per flush at most (a frame larger than this goes alone).
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// A client frame above this many bytes is heavy: it is parsed off the runtime's
/// workers, and the reader yields after it.
const HEAVY_FRAME_BYTES: usize = 8 * 1024;

/// Serves one admitted WebSocket; `address` is the budget its IP address shares with
/// its other connections (none when the per-address budget is off).
pub async fn serve(
    socket: WebSocket,
    rooms: Arc<Rooms>,
    admission: Admission,
    address: Option<AddressBudget>,
) {
    let (frames_tx, frames_rx) = mpsc::channel(rooms.config().outbound_queue);
    let (close_tx, close_rx) = watch::channel(None);
    let close_tx = Arc::new(close_tx);
    let queued = QueuedBytes::new(rooms.config().outbound_queue_bytes);
    // The reader's own handle, for frames it answers itself: every frame queued to this
    // connection is counted against its byte budget, whoever queues it.
    let own = Connection::new(frames_tx, close_tx.clone(), queued.clone());
    let (mut sink, stream) = socket.split();
    // Boxed: the join's future is large, and this one lives as long as the connection.
    let admitted = match Box::pin(rooms.admit(admission, own.clone())).await {
        Ok(admitted) => admitted,
        Err(NotAdmitted::Unavailable(problem)) => {
            tracing::warn!(%problem, "cannot admit a connection: the cluster is unavailable");
            let closing = Closing {
                reason: CloseReason::Unavailable,
                message: "the room's shared state cannot be reached; try again".into(),
            };
            let _ = say_goodbye(&mut sink, closing, rooms.config().write_timeout()).await;
            return;
        }
        Err(NotAdmitted::Refused(closing)) => {
            let _ = say_goodbye(&mut sink, closing, rooms.config().write_timeout()).await;
            return;
        }
    };
    let epoch = admitted.epoch;
    rooms.metrics().connections.inc();
    let metrics_rooms = rooms.clone();
    let mut writer = tokio::spawn(write_frames(
        sink,
        admitted.initial,
        frames_rx,
        close_rx,
        metrics_rooms,
        queued,
    ));
    let ended_by_client = tokio::select! {
        _ = &mut writer => false,
        closing = read_frames(stream, &rooms, &admitted.room, &admitted.sid, epoch, &own, address.as_ref()) => {
            if let Some(closing) = closing {
                // The first reason stands: a slow consumer cut by the room stays one,
                // even if its reads then time out too.
                close_tx.send_if_modified(|current| {
                    current.is_none().then(|| *current = Some(closing)).is_some()
                });
            }
            true
        }
    };
    admitted.room.connection_closed(&admitted.sid, epoch);
    drop(own);
    if ended_by_client {
        // The room no longer holds a sender, so the writer ends once its queue is out.
        let _ = writer.await;
    }
    rooms.metrics().connections.dec();
}

/// Reads until the client goes away; returns how to close, if the server decides to.
async fn read_frames(
    mut stream: SplitStream<WebSocket>,
    rooms: &Rooms,
    room: &Arc<crate::room::Room>,
    sid: &str,
    epoch: u64,
    own: &Connection,
    address: Option<&AddressBudget>,
) -> Option<Closing> {
    let idle_timeout = rooms.config().idle_timeout();
    let mut budget = InboundBudget::new(rooms.config().client_rate());
    loop {
        let message = match tokio::time::timeout(idle_timeout, stream.next()).await {
            Err(_) => {
                return Some(Closing {
                    reason: CloseReason::IdleTimeout,
                    message: format!("no frame for {idle_timeout:?} (the idle timeout)"),
                })
            }
            Ok(None) => return None,
            Ok(Some(Err(error))) => {
                tracing::debug!(%sid, %error, "websocket read failed");
                return too_large(error, rooms.config().limits.frame_bytes);
            }
            Ok(Some(Ok(message))) => message,
        };
        rooms.metrics().messages_in.inc();
        // Past its budget a connection is simply read later: TCP pushes back on the
        // client, and no one connection (or address) can take a worker for itself.
        let len = frame_len(&message);
        budget.spend(len).await;
        if let Some(address) = address {
            address.spend(len).await;
        }
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                reject(
                    own,
                    None,
                    "binary frames are not part of the protocol; send JSON text",
                );
                continue;
            }
            Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) => continue,
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
                readable_id(text.as_str()),
                &format!("malformed frame: {error}"),
            ),
        }
    }
}

fn frame_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        Message::Close(_) => 0,
    }
}

/// A read that failed because the client's frame was over `frame_bytes` ends with a
/// goodbye saying so (close code 1009); other read errors end the connection silently.
fn too_large(error: axum::Error, frame_bytes: usize) -> Option<Closing> {
    let inner = error.into_inner();
    let capacity = matches!(
        inner.downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    );
    capacity.then(|| Closing {
        reason: CloseReason::FrameTooLarge,
        message: format!("a frame was larger than {frame_bytes} bytes (limits.frame_bytes)"),
    })
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

fn reject(own: &Connection, id: Option<RequestId>, message: &str) {
    let rejected = ServerMessage::Rejected {
        id,
        error: ErrorBody::new(ErrorCode::InvalidRequest, message),
    };
    let text = serde_json::to_string(&rejected).expect("server messages serialize");
    // A client that floods bad frames and does not read loses the notices, not memory.
    let _ = own.send(&text.into());
}

/// Writes the connection's frames in order. Every write is bounded by the server's
/// `write_timeout`: a client that stops reading is dropped then, with its queue, instead
/// of holding its socket and memory.
async fn write_frames(
    sink: SplitSink<WebSocket, Message>,
    initial: Vec<Utf8Bytes>,
    mut frames: mpsc::Receiver<Utf8Bytes>,
    mut close: watch::Receiver<Option<Closing>>,
    rooms: Arc<Rooms>,
    queued: QueuedBytes,
) {
    let mut sink = TimedSink {
        sink,
        timeout: rooms.config().write_timeout(),
    };
    let sent = |count: usize| rooms.metrics().messages_out.inc_by(count as u64);
    sent(initial.len());
    for frame in initial {
        if sink.feed(frame).await.is_err() {
            return;
        }
    }
    if sink.flush().await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            biased;
            changed = close.changed() => {
                let closing = if changed.is_ok() { close.borrow().clone() } else { None };
                if let Some(closing) = closing {
                    tracing::debug!(reason = ?closing.reason, "saying goodbye");
                    sink.goodbye(closing).await;
                }
                return;
            }
            frame = frames.recv() => {
                let Some(frame) = frame else {
                    let _ = sink.close().await;
                    return;
                };
                let mut batch = Batch::default();
                if batch.feed(&mut sink, frame, &queued).await.is_err()
                    || batch.take_queued(&mut frames, &mut sink, &queued).await.is_err()
                {
                    return;
                }
                if batch.has_room() {
                    // A room's fan-out reaches this queue from the tasks of other
                    // connections, a few scheduler turns apart: one turn for them
                    // before writing lets one write carry the frames of several events,
                    // for the price of a task switch.
                    tokio::task::yield_now().await;
                    if batch.take_queued(&mut frames, &mut sink, &queued).await.is_err() {
                        return;
                    }
                }
                let batch = batch.frames;
                sent(batch);
                if sink.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Why a write was given up.
struct WriteFailed;

/// The frames fed to the socket since its last flush.
#[derive(Default)]
struct Batch {
    frames: usize,
    bytes: usize,
}

impl Batch {
    /// Whether more frames may join before the flush.
    fn has_room(&self) -> bool {
        // The socket's buffer holds a copy of each frame until it is written: large
        // frames are flushed a few at a time, not 64 at once.
        self.frames < WRITE_BATCH && self.bytes <= WRITE_BATCH_BYTES
    }

    async fn feed(
        &mut self,
        sink: &mut TimedSink,
        frame: Utf8Bytes,
        queued: &QueuedBytes,
    ) -> Result<(), WriteFailed> {
        self.frames += 1;
        self.bytes += frame.len();
        queued.written(frame.len());
        sink.feed(frame).await
    }

    /// Feeds what is queued already, while the batch has room.
    async fn take_queued(
        &mut self,
        frames: &mut mpsc::Receiver<Utf8Bytes>,
        sink: &mut TimedSink,
        queued: &QueuedBytes,
    ) -> Result<(), WriteFailed> {
        while self.has_room() {
            let Ok(frame) = frames.try_recv() else {
                break;
            };
            self.feed(sink, frame, queued).await?;
        }
        Ok(())
    }
}

/// The socket's sending half, every operation bounded in time.
struct TimedSink {
    sink: SplitSink<WebSocket, Message>,
    timeout: std::time::Duration,
}

impl TimedSink {
    async fn bounded(
        timeout: std::time::Duration,
        operation: impl std::future::Future<Output = Result<(), axum::Error>>,
    ) -> Result<(), WriteFailed> {
        match tokio::time::timeout(timeout, operation).await {
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

    async fn feed(&mut self, frame: Utf8Bytes) -> Result<(), WriteFailed> {
        Self::bounded(self.timeout, self.sink.feed(Message::Text(frame))).await
    }

    async fn flush(&mut self) -> Result<(), WriteFailed> {
        Self::bounded(self.timeout, self.sink.flush()).await
    }

    async fn close(&mut self) -> Result<(), WriteFailed> {
        Self::bounded(self.timeout, self.sink.close()).await
    }

    async fn goodbye(&mut self, closing: Closing) {
        let _ = say_goodbye(&mut self.sink, closing, self.timeout).await;
    }
}

/// Sends `goodbye` and the close frame, within `timeout` in all.
async fn say_goodbye(
    sink: &mut SplitSink<WebSocket, Message>,
    closing: Closing,
    timeout: std::time::Duration,
) -> Result<(), WriteFailed> {
    let goodbye = ServerMessage::Goodbye {
        reason: closing.reason,
        message: closing.message.clone(),
    };
    let text = serde_json::to_string(&goodbye).expect("server messages serialize");
    let mut reason = closing.message;
    // A close frame's reason is at most 123 bytes; cut on a character boundary.
    let mut cut = reason.len().min(120);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    reason.truncate(cut);
    let close = Message::Close(Some(CloseFrame {
        code: closing.reason.close_code(),
        reason: reason.into(),
    }));
    TimedSink::bounded(timeout, async {
        sink.send(Message::Text(text.into())).await?;
        sink.send(close).await
    })
    .await
}
