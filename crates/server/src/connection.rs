//! One WebSocket connection: a reader that hands requests to the room, and a writer that
//! drains the connection's bounded queue onto the socket.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use roomstate_protocol::{ClientMessage, CloseReason, ErrorBody, ErrorCode, ServerMessage};
use tokio::sync::{mpsc, watch};

use crate::cluster::Unavailable;
use crate::room::{Admission, Closing, Connection, Rooms};

/// Frames written per flush at most, so one busy connection cannot starve the rest.
const WRITE_BATCH: usize = 64;

pub async fn serve(socket: WebSocket, rooms: Arc<Rooms>, admission: Admission) {
    let (frames_tx, frames_rx) = mpsc::channel(rooms.config().outbound_queue);
    let (close_tx, close_rx) = watch::channel(None);
    let close_tx = Arc::new(close_tx);
    let connection = Connection::new(frames_tx.clone(), close_tx.clone());
    let (mut sink, stream) = socket.split();
    // Boxed: the join's future is large, and this one lives as long as the connection.
    let admitted = match Box::pin(rooms.admit(admission, connection)).await {
        Ok(admitted) => admitted,
        Err(Unavailable(problem)) => {
            tracing::warn!(%problem, "cannot admit a connection: the cluster is unavailable");
            let closing = Closing {
                reason: CloseReason::Unavailable,
                message: "the room's shared state cannot be reached; try again".into(),
            };
            say_goodbye(&mut sink, closing).await;
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
    ));
    let idle_timeout = rooms.config().idle_timeout();
    let ended_by_client = tokio::select! {
        _ = &mut writer => false,
        reason = read_frames(stream, &rooms, &admitted.room, &admitted.sid, epoch, &frames_tx, idle_timeout) => {
            if let Some(reason) = reason {
                close_tx.send_replace(Some(Closing { reason, message: "no frame within the idle timeout".into() }));
            }
            true
        }
    };
    admitted.room.connection_closed(&admitted.sid, epoch);
    drop(frames_tx);
    if ended_by_client {
        // The room no longer holds a sender, so the writer ends once its queue is out.
        let _ = writer.await;
    }
    rooms.metrics().connections.dec();
}

/// Reads until the client goes away; returns the reason to close with, if the server
/// decides to.
async fn read_frames(
    mut stream: SplitStream<WebSocket>,
    rooms: &Rooms,
    room: &Arc<crate::room::Room>,
    sid: &str,
    epoch: u64,
    frames: &mpsc::Sender<Utf8Bytes>,
    idle_timeout: std::time::Duration,
) -> Option<CloseReason> {
    loop {
        let message = match tokio::time::timeout(idle_timeout, stream.next()).await {
            Err(_) => return Some(CloseReason::IdleTimeout),
            Ok(None) => return None,
            Ok(Some(Err(error))) => {
                tracing::debug!(%sid, %error, "websocket read failed");
                return None;
            }
            Ok(Some(Ok(message))) => message,
        };
        rooms.metrics().messages_in.inc();
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                reject(
                    frames,
                    "binary frames are not part of the protocol; send JSON text",
                );
                continue;
            }
            Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match serde_json::from_str::<ClientMessage>(text.as_str()) {
            Ok(message) => room.handle(sid, epoch, message, frames).await,
            Err(error) => reject(frames, &format!("malformed frame: {error}")),
        }
    }
}

fn reject(frames: &mpsc::Sender<Utf8Bytes>, message: &str) {
    let rejected = ServerMessage::Rejected {
        error: ErrorBody::new(ErrorCode::InvalidRequest, message),
    };
    let text = serde_json::to_string(&rejected).expect("server messages serialize");
    // A client that floods bad frames and does not read loses the notices, not memory.
    let _ = frames.try_send(text.into());
}

async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    initial: Vec<Utf8Bytes>,
    mut frames: mpsc::Receiver<Utf8Bytes>,
    mut close: watch::Receiver<Option<Closing>>,
    rooms: Arc<Rooms>,
) {
    let sent = |count: usize| rooms.metrics().messages_out.inc_by(count as u64);
    sent(initial.len());
    for frame in initial {
        if sink.feed(Message::Text(frame)).await.is_err() {
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
                    say_goodbye(&mut sink, closing).await;
                    tracing::debug!("said goodbye");
                }
                return;
            }
            frame = frames.recv() => {
                let Some(frame) = frame else {
                    let _ = sink.close().await;
                    return;
                };
                if sink.feed(Message::Text(frame)).await.is_err() {
                    return;
                }
                let mut batch = 1;
                for _ in 1..WRITE_BATCH {
                    match frames.try_recv() {
                        Ok(frame) => {
                            batch += 1;
                            if sink.feed(Message::Text(frame)).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
                sent(batch);
                if sink.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn say_goodbye(sink: &mut SplitSink<WebSocket, Message>, closing: Closing) {
    let goodbye = ServerMessage::Goodbye {
        reason: closing.reason,
        message: closing.message.clone(),
    };
    let text = serde_json::to_string(&goodbye).expect("server messages serialize");
    let _ = sink.send(Message::Text(text.into())).await;
    let code = if closing.reason == CloseReason::Left {
        1000
    } else {
        4000
    };
    let mut reason = closing.message;
    reason.truncate(120); // close frame reasons are at most 123 bytes
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}
