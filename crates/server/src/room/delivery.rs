//! The connections of a room's participants that this node holds, and queueing frames
//! to them.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use roomstate_protocol::CloseReason;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, watch};

use crate::rules::{Audience, Frame};

/// The room's handle on one WebSocket connection.
#[derive(Clone)]
pub struct Connection {
    frames: mpsc::Sender<Frame>,
    close: Arc<watch::Sender<Option<Closing>>>,
    queued: QueuedBytes,
}

/// The bytes of a connection's frames queued but not yet written, shared by the room
/// (which adds) and the connection's writer (which takes away): with the queue's frame
/// count, this bounds what a client that does not read can make the server hold.
#[derive(Clone)]
pub struct QueuedBytes {
    bytes: Arc<AtomicUsize>,
    max: usize,
}

impl QueuedBytes {
    pub fn new(max: usize) -> Self {
        QueuedBytes {
            bytes: Arc::default(),
            max,
        }
    }

    /// Counts `len` more bytes in; false (nothing counted) past the budget, unless the
    /// queue is empty: one frame always fits.
    fn admit(&self, len: usize) -> bool {
        let queued = self.bytes.load(Relaxed);
        if queued > 0 && queued + len > self.max {
            return false;
        }
        self.bytes.fetch_add(len, Relaxed);
        true
    }

    /// `len` bytes were written (or dropped).
    pub fn written(&self, len: usize) {
        self.bytes.fetch_sub(len, Relaxed);
    }
}

/// Why the room closes a connection, as the client is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Closing {
    pub reason: CloseReason,
    pub message: String,
}

impl Connection {
    pub fn new(
        frames: mpsc::Sender<Frame>,
        close: Arc<watch::Sender<Option<Closing>>>,
        queued: QueuedBytes,
    ) -> Self {
        Connection {
            frames,
            close,
            queued,
        }
    }

    /// Queues a frame; `false` when the queue is full, in frames or in bytes (the
    /// connection is too slow).
    pub fn send(&self, frame: &Frame) -> bool {
        if !self.queued.admit(frame.len()) {
            return false;
        }
        match self.frames.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued.written(frame.len());
                false
            }
            // The writer is gone; the reader will report the connection closed.
            Err(mpsc::error::TrySendError::Closed(_)) => true,
        }
    }

    pub fn close(&self, reason: CloseReason, message: impl Into<String>) {
        self.close.send_replace(Some(Closing {
            reason,
            message: message.into(),
        }));
    }
}

/// The connections this node holds for a room, by participant.
#[derive(Default)]
pub(super) struct Connections {
    /// By sid (the server's random ids: a fast hash is safe).
    by_sid: FxHashMap<String, Attached>,
}

struct Attached {
    /// The participant's epoch when this connection took it over.
    epoch: u64,
    connection: Connection,
}

impl Connections {
    pub fn attach(&mut self, sid: String, epoch: u64, connection: Connection) {
        self.by_sid.insert(sid, Attached { epoch, connection });
    }

    /// The epoch of `sid`'s connection, if this node holds one.
    pub fn epoch_of(&self, sid: &str) -> Option<u64> {
        self.by_sid.get(sid).map(|attached| attached.epoch)
    }

    /// Lets go of `sid`'s connection, returning it and its epoch.
    pub fn detach(&mut self, sid: &str) -> Option<(u64, Connection)> {
        self.by_sid
            .remove(sid)
            .map(|attached| (attached.epoch, attached.connection))
    }

    /// Lets go of every connection, closing each.
    pub fn close_all(&mut self, reason: CloseReason, message: &str) {
        for (_, attached) in self.by_sid.drain() {
            attached.connection.close(reason, message);
        }
    }

    /// Queues `frame` to `sid`'s connection; false if that connection is too slow.
    pub fn send(&self, sid: &str, frame: &Frame) -> bool {
        self.by_sid
            .get(sid)
            .is_none_or(|attached| attached.connection.send(frame))
    }

    /// Queues `frame` to every connection whose participant is in `audience`
    /// (`observes(sid, key)`: whether `sid` observes `key`), and returns the
    /// participants whose connections were too slow to take it.
    pub fn deliver(
        &self,
        audience: &Audience,
        frame: &Frame,
        observes: impl Fn(&str, &str) -> bool,
    ) -> Vec<String> {
        let mut too_slow = Vec::new();
        let mut deliver = |sid: &String, attached: &Attached| {
            if !attached.connection.send(frame) {
                too_slow.push(sid.clone());
            }
        };
        match audience {
            Audience::Only(only) => {
                if let Some((sid, attached)) = self.by_sid.get_key_value(only) {
                    deliver(sid, attached);
                }
            }
            audience => {
                for (sid, attached) in &self.by_sid {
                    if audience.includes(sid, |key| observes(sid, key)) {
                        deliver(sid, attached);
                    }
                }
            }
        }
        too_slow
    }
}
