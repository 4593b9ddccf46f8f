//! The connections of a room's participants that this node holds, and queueing frames
//! to them.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use roomstate_protocol::CloseReason;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use crate::rules::{Audience, Frame};

/// The room's handle on one WebSocket connection: its outbox.
#[derive(Clone)]
pub struct Connection {
    outbox: Arc<Outbox>,
}

/// What is waiting to be written to one connection, shared by whoever queues (the room,
/// the connection's reader) and the connection's writer. Bounded in frames and in bytes,
/// so a client that does not read cannot make the server hold more; empty, it holds no
/// allocation.
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the writer.
    ready: Notify,
    max_frames: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Queue {
    /// Encoded frames (text or control), in order.
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// Set when the connection is to be closed: the writer says goodbye once the frames
    /// queued before are written (a reply to a write the client made just before its
    /// `leave`, the events before a removal), and stops. A slow consumer's goodbye goes
    /// at once: its backlog is the problem.
    closing: Option<Closing>,
    /// Nothing more will be queued: the writer stops once the queue is written.
    ended: bool,
    /// The capacity the queue had when it last emptied (at most a writer's batch): its
    /// next burst gets that much at once, rather than growing to it again step by step.
    last_burst: u32,
}

/// Frames a connection's writer takes per system call at most, so one busy connection
/// cannot starve the rest.
pub const WRITE_BATCH: usize = 64;

/// Bytes a writer takes per system call at most (a frame larger than this goes alone).
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// What the writer is to do next.
pub enum Outgoing {
    /// Write these frames (encoded), in order.
    Frames(Vec<Bytes>),
    /// Say goodbye and close.
    Close(Closing),
    /// Everything is written, the close frame last: hang up.
    End,
}

impl Outbox {
    pub fn new(max_frames: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(Outbox {
            queue: Mutex::default(),
            ready: Notify::new(),
            max_frames,
            max_bytes,
        })
    }

    /// Queues an encoded frame; `false` (nothing queued) when the queue is full, in
    /// frames or in bytes, except that one frame always fits an empty queue.
    pub fn push(&self, wire: Bytes) -> bool {
        let mut queue = self.queue.lock();
        if queue.ended || queue.closing.is_some() {
            // The connection is on its way out; the reader reports it closed.
            return true;
        }
        let empty = queue.frames.is_empty();
        if !empty
            && (queue.frames.len() >= self.max_frames || queue.bytes + wire.len() > self.max_bytes)
        {
            return false;
        }
        queue.bytes += wire.len();
        if queue.frames.capacity() == 0 {
            let burst = queue.last_burst as usize;
            queue.frames.reserve_exact(burst);
        }
        queue.frames.push_back(wire);
        drop(queue);
        if empty {
            self.ready.notify_one();
        }
        true
    }

    /// Asks the writer to close the connection, saying why (in place of an earlier
    /// reason, if it has not been acted on), after the frames queued so far.
    pub fn close(&self, closing: Closing) {
        self.queue.lock().closing = Some(closing);
        self.ready.notify_one();
    }

    /// Like [`Outbox::close`], unless a reason was given already: that one stands.
    pub fn close_unless_closing(&self, closing: Closing) {
        self.queue.lock().closing.get_or_insert(closing);
        self.ready.notify_one();
    }

    /// Nothing more will be queued but `farewell` (the close frame), written last, past
    /// the bounds: the writer then hangs up. Nothing, if the connection is closing
    /// already (its goodbye carries the close frame).
    pub fn end(&self, farewell: Bytes) {
        let mut queue = self.queue.lock();
        if !queue.ended && queue.closing.is_none() {
            queue.bytes += farewell.len();
            queue.frames.push_back(farewell);
        }
        queue.ended = true;
        drop(queue);
        self.ready.notify_one();
    }

    /// The next thing to write: up to `max_frames` queued frames (fewer if they pass
    /// `max_bytes`, at least one), waiting until there is something.
    pub async fn next(&self, max_frames: usize, max_bytes: usize) -> Outgoing {
        loop {
            let notified = self.ready.notified();
            if let Some(outgoing) = self.take(max_frames, max_bytes) {
                return outgoing;
            }
            notified.await;
        }
    }

    /// Like [`Outbox::next`], without waiting: `None` when there is nothing to do.
    pub fn take(&self, max_frames: usize, max_bytes: usize) -> Option<Outgoing> {
        let mut queue = self.queue.lock();
        let drained = queue.frames.is_empty();
        if let Some(closing) = queue
            .closing
            .take_if(|closing| drained || closing.reason == CloseReason::SlowConsumer)
        {
            queue.frames = VecDeque::new();
            queue.bytes = 0;
            queue.ended = true;
            return Some(Outgoing::Close(closing));
        }
        if queue.frames.is_empty() {
            return queue.ended.then_some(Outgoing::End);
        }
        let mut count = 0;
        let mut bytes = 0;
        for frame in &queue.frames {
            if count == max_frames || (count > 0 && bytes + frame.len() > max_bytes) {
                break;
            }
            count += 1;
            bytes += frame.len();
        }
        queue.bytes -= bytes;
        if count < queue.frames.len() {
            return Some(Outgoing::Frames(queue.frames.drain(..count).collect()));
        }
        // All of it: the writer takes the queue's buffer along (and frees it once it is
        // written), so an idle connection keeps none.
        queue.last_burst = queue.frames.capacity().min(WRITE_BATCH) as u32;
        Some(Outgoing::Frames(std::mem::take(&mut queue.frames).into()))
    }
}

/// Why the room closes a connection, as the client is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Closing {
    pub reason: CloseReason,
    pub message: String,
}

impl Connection {
    pub fn new(outbox: Arc<Outbox>) -> Self {
        Connection { outbox }
    }

    /// Queues a frame; `false` when the queue is full, in frames or in bytes (the
    /// connection is too slow).
    pub fn send(&self, frame: &Frame) -> bool {
        self.outbox.push(frame.wire().clone())
    }

    /// Queues a control frame (a pong), if the queue has room.
    pub fn send_control(&self, wire: Bytes) {
        self.outbox.push(wire);
    }

    pub fn close(&self, reason: CloseReason, message: impl Into<String>) {
        let closing = Closing {
            reason,
            message: message.into(),
        };
        self.outbox.close(closing);
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
                if let Some((sid, attached)) = self.by_sid.get_key_value(&**only) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    fn closing(reason: CloseReason) -> Closing {
        Closing {
            reason,
            message: "why".into(),
        }
    }

    /// Everything the writer would do, in order, until it stops.
    fn drain(outbox: &Outbox) -> Vec<String> {
        let mut done = Vec::new();
        while let Some(outgoing) = outbox.take(2, 1024) {
            match outgoing {
                Outgoing::Frames(frames) => done.extend(
                    frames
                        .iter()
                        .map(|frame| String::from_utf8_lossy(frame).into_owned()),
                ),
                Outgoing::Close(closing) => {
                    done.push(format!("goodbye {:?}", closing.reason));
                    break;
                }
                Outgoing::End => {
                    done.push("end".into());
                    break;
                }
            }
        }
        done
    }

    #[test]
    fn a_goodbye_follows_the_frames_queued_before_it() {
        let outbox = Outbox::new(16, 1 << 20);
        for text in ["reply", "event", "another"] {
            assert!(outbox.push(frame(text)));
        }
        outbox.close(closing(CloseReason::Left));
        assert!(outbox.push(frame("after")), "taken, and dropped");
        assert_eq!(
            drain(&outbox),
            ["reply", "event", "another", "goodbye Left"]
        );
        assert!(
            matches!(outbox.take(2, 1024), Some(Outgoing::End)),
            "nothing after the goodbye"
        );
    }

    #[test]
    fn a_slow_consumer_is_told_at_once_and_its_backlog_dropped() {
        let outbox = Outbox::new(16, 1 << 20);
        outbox.push(frame("backlog"));
        outbox.close(closing(CloseReason::SlowConsumer));
        assert_eq!(drain(&outbox), ["goodbye SlowConsumer"]);
    }

    #[test]
    fn the_first_reason_stands_for_the_reader_and_the_room_may_replace_it() {
        let outbox = Outbox::new(16, 1 << 20);
        outbox.close(closing(CloseReason::Removed));
        outbox.close_unless_closing(closing(CloseReason::IdleTimeout));
        assert_eq!(drain(&outbox), ["goodbye Removed"]);
        let outbox = Outbox::new(16, 1 << 20);
        outbox.close(closing(CloseReason::IdleTimeout));
        outbox.close(closing(CloseReason::SlowConsumer));
        assert_eq!(drain(&outbox), ["goodbye SlowConsumer"]);
    }

    #[test]
    fn the_end_writes_the_queue_then_the_farewell_then_hangs_up() {
        let outbox = Outbox::new(16, 1 << 20);
        outbox.push(frame("last event"));
        outbox.end(frame("close frame"));
        assert!(outbox.push(frame("too late")));
        assert_eq!(drain(&outbox), ["last event", "close frame", "end"]);
    }

    #[test]
    fn the_queue_is_bounded_in_frames_and_bytes_but_one_frame_always_fits() {
        let outbox = Outbox::new(2, 10);
        assert!(outbox.push(frame("twelve bytes")), "alone, past the bytes");
        assert!(!outbox.push(frame("x")), "nothing more fits with it");
        assert_eq!(drain(&outbox)[0], "twelve bytes");
        assert!(outbox.push(frame("a")));
        assert!(outbox.push(frame("b")));
        assert!(!outbox.push(frame("c")), "two frames at most");
    }

    #[test]
    fn an_emptied_queue_keeps_no_buffer_and_its_next_burst_gets_the_last_ones_size() {
        let outbox = Outbox::new(1000, 1 << 20);
        let capacity = || outbox.queue.lock().frames.capacity();
        for _ in 0..40 {
            outbox.push(frame("event"));
        }
        let first_burst = capacity();
        assert!(first_burst >= 40);
        let taken = |max_frames| match outbox.take(max_frames, 1 << 20) {
            Some(Outgoing::Frames(frames)) => frames,
            _ => panic!("frames to write"),
        };
        assert_eq!(taken(10).len(), 10, "a part: the queue keeps its buffer");
        assert_eq!(capacity(), first_burst);
        assert_eq!(taken(1000).len(), 30, "the rest: the buffer goes with it");
        assert_eq!(capacity(), 0, "nothing kept while idle");
        outbox.push(frame("next burst"));
        assert_eq!(capacity(), first_burst.min(WRITE_BATCH));
        assert_eq!(taken(1000).len(), 1);

        for _ in 0..500 {
            outbox.push(frame("a large burst"));
        }
        assert_eq!(taken(1000).len(), 500);
        outbox.push(frame("after it"));
        assert_eq!(capacity(), WRITE_BATCH, "at most a writer's batch");
    }
}
