//! In a cluster: this node's entries of a room on their way to the room's log in Redis.
//!
//! One append call at a time per room and node; the entries submitted meanwhile go in
//! the next call, together, in the order they were submitted. So a connection does not
//! wait for Redis before its next request (its requests still reach the log in the
//! order it sent them), and a busy room pays Redis' cost per call (the script, the
//! publish, a wakeup of every node) once per batch rather than once per entry.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch, Semaphore};

use super::{Pending, Room};
use crate::cluster::{Cluster, NotAppended, Serialized};
use crate::rules::command::LogEntry;

/// Entries one append call carries at most...
const MAX_BATCH_ENTRIES: usize = 256;
/// ...and bytes, unless its first entry alone is larger: a call holds Redis' one thread.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Bytes of entries a room may have queued on this node; past it, submitters wait (a
/// reader stops reading its connection, and TCP pushes back on the client). The node's
/// rooms together may queue `queue_bytes` of its Redis settings ([`NodeQueue`]).
const MAX_QUEUED_BYTES: usize = 8 << 20;

/// Room for entries queued on this node, all its rooms together: a permit per byte.
pub struct NodeQueue {
    space: Semaphore,
    bytes: usize,
}

impl NodeQueue {
    pub fn new(bytes: usize) -> Self {
        let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS);
        NodeQueue {
            space: Semaphore::new(bytes),
            bytes,
        }
    }

    /// The permits an entry that holds `room_permits` in its room's queue holds here:
    /// one larger than the node's whole queue waits for it to empty.
    fn permits(&self, room_permits: u32) -> u32 {
        room_permits.min(self.bytes.min(u32::MAX as usize) as u32)
    }
}

/// A room's queue of entries to append, on this node.
pub(super) struct Appends {
    queue: Mutex<Queue>,
    /// A permit per byte that may still be queued.
    room_for: Semaphore,
    /// How many queued entries are done with: applied, or refused.
    finished: watch::Sender<u64>,
}

impl Default for Appends {
    fn default() -> Self {
        Appends {
            queue: Mutex::default(),
            room_for: Semaphore::new(MAX_QUEUED_BYTES),
            finished: watch::Sender::new(0),
        }
    }
}

/// The permits an entry of `bytes` holds while queued: an entry larger than the whole
/// queue (a frame limit above 8 MiB) waits for an empty queue rather than for ever.
fn permits(bytes: usize) -> u32 {
    bytes.min(MAX_QUEUED_BYTES) as u32
}

#[derive(Default)]
struct Queue {
    entries: Vec<Queued>,
    /// Whether a task is appending (and will take what is queued next).
    appending: bool,
    /// How many entries were ever queued.
    queued: u64,
    /// How many entries the task took for the call under way, not yet finished.
    taken: u64,
    /// What those entries hold in the queues, until the call is over; kept here so that
    /// a panic during the call does not lose it.
    taken_footprint: Footprint,
}

/// Room that entries hold in their room's queue and in the node's.
#[derive(Default, Clone, Copy)]
struct Footprint {
    in_room: usize,
    in_node: usize,
    bytes: usize,
}

struct Queued {
    entry: LogEntry,
    serialized: Serialized,
    then: Then,
}

/// What happens once Redis stored an entry, or did not.
pub(super) enum Then {
    /// Someone waits for the outcome.
    Tell(oneshot::Sender<Result<(), NotAppended>>),
    /// Nobody waits: only a failure needs doing something (answering the request).
    OnFailure(Box<dyn FnOnce(NotAppended) + Send>),
}

impl Then {
    fn done(self, outcome: Result<(), NotAppended>) {
        match (self, outcome) {
            (Then::Tell(waiter), outcome) => {
                let _ = waiter.send(outcome);
            }
            (Then::OnFailure(failed), Err(not_appended)) => failed(not_appended),
            (Then::OnFailure(_), Ok(())) => {}
        }
    }
}

impl Room {
    /// Queues `entry` for the room's log (waiting only while the queue is full), and
    /// starts appending if no append is under way. `then` learns whether Redis stored it.
    pub(super) async fn queue_append(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        entry: LogEntry,
        pending: Option<Pending>,
        then: Then,
    ) {
        let appends = &self.appends;
        let serialized = Serialized::new(&entry);
        let footprint = self.footprint([&serialized]);
        // Both held before either is given up for good: a caller that stops waiting
        // for the second returns the first.
        let in_room = appends
            .room_for
            .acquire_many(footprint.in_room as u32)
            .await;
        let in_node = (self.node.append_queue.space)
            .acquire_many(footprint.in_node as u32)
            .await;
        let (Ok(in_room), Ok(in_node)) = (in_room, in_node) else {
            unreachable!("the semaphores are never closed");
        };
        in_room.forget();
        in_node.forget();
        self.node
            .metrics
            .append_queue_bytes
            .inc_by(footprint.bytes as i64);
        {
            let mut state = self.lock_state();
            if state.removed {
                // A stale handle (a connection whose participant is gone): nobody here
                // is in this room any more.
                drop(state);
                self.release(footprint);
                then.done(Ok(()));
                return;
            }
            if let Some(pending) = pending {
                state.pending.insert(entry.ticket, pending);
            }
        }
        let start = {
            let mut queue = appends.queue.lock();
            queue.entries.push(Queued {
                entry,
                serialized,
                then,
            });
            queue.queued += 1;
            !std::mem::replace(&mut queue.appending, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).append_queued(Arc::clone(cluster)));
        }
    }

    /// Waits until the entries this node queued for the room so far are applied (or
    /// refused, and their requests answered); at most two Redis timeouts, one for the
    /// call in flight and one for the rest. A connection that ends waits for this, so
    /// the answers to its last requests go out before its close frame. Nothing to wait
    /// for on a single node.
    pub async fn settle(&self) {
        let Some(cluster) = &self.node.cluster else {
            return;
        };
        let queued = self.appends.queue.lock().queued;
        let mut finished = self.appends.finished.subscribe();
        let all_done = finished.wait_for(|&done| done >= queued);
        let _ = tokio::time::timeout(cluster.timeout() * 2, all_done).await;
    }

    /// Appends what is queued, a batch at a time, until the queue is empty.
    async fn append_queued(self: Arc<Self>, cluster: Arc<Cluster>) {
        // If applying a batch panics, what is queued is refused and the next entry
        // starts a new task: the room does not stop appending on this node.
        let mut unfinished = Unfinished(Some(&self));
        loop {
            let batch = {
                let mut queue = self.appends.queue.lock();
                queue.taken = 0; // The last batch is counted as finished.
                if queue.entries.is_empty() {
                    queue.appending = false;
                    unfinished.0 = None;
                    return;
                }
                let count = batch_len(queue.entries.iter().map(|queued| queued.serialized.bytes()));
                let batch: Vec<Queued> = queue.entries.drain(..count).collect();
                queue.taken = count as u64;
                queue.taken_footprint =
                    self.footprint(batch.iter().map(|queued| &queued.serialized));
                batch
            };
            let serialized: Vec<&Serialized> =
                batch.iter().map(|queued| &queued.serialized).collect();
            let appended = cluster.append(&self.name, &serialized).await;
            drop(serialized);
            match appended {
                Ok(positions) => {
                    self.release_taken();
                    let count = batch.len() as u64;
                    for (position, queued) in positions.into_iter().zip(batch) {
                        self.offer(position, queued.entry);
                        queued.then.done(Ok(()));
                    }
                    self.appends.finished.send_modify(|done| *done += count);
                }
                Err(failure) => {
                    self.release_taken();
                    self.tell_refused(batch, &failure);
                    // What queued behind the batch would wait a timeout per batch for
                    // the same Redis: it is refused now, and its requests answered.
                    let behind = {
                        let mut queue = self.appends.queue.lock();
                        queue.taken = 0;
                        std::mem::take(&mut queue.entries)
                    };
                    let not_sent = format!(
                        "not sent, after an append failed ({}); nothing was changed",
                        failure.problem()
                    );
                    self.refused(behind, &NotAppended::NotSent(not_sent));
                }
            }
        }
    }

    /// What `entries` hold in the room's queue and in the node's.
    fn footprint<'a>(&self, entries: impl IntoIterator<Item = &'a Serialized>) -> Footprint {
        let mut footprint = Footprint::default();
        for serialized in entries {
            let permits = permits(serialized.bytes());
            footprint.in_room += permits as usize;
            footprint.in_node += self.node.append_queue.permits(permits) as usize;
            footprint.bytes += serialized.bytes();
        }
        footprint
    }

    /// Frees the room in the queues that entries held.
    fn release(&self, footprint: Footprint) {
        // The gauge first: once the permits are back, others may fill the room at once.
        let metrics = &self.node.metrics;
        metrics.append_queue_bytes.dec_by(footprint.bytes as i64);
        self.appends.room_for.add_permits(footprint.in_room);
        self.node.append_queue.space.add_permits(footprint.in_node);
    }

    /// Frees the room that the batch of the call under way held.
    fn release_taken(&self) {
        let footprint = std::mem::take(&mut self.appends.queue.lock().taken_footprint);
        self.release(footprint);
    }

    /// Frees the room `entries` (taken from the queue) held, and tells whoever waits on
    /// them that Redis did not store them.
    fn refused(self: &Arc<Self>, entries: Vec<Queued>, why: &NotAppended) {
        self.release(self.footprint(entries.iter().map(|queued| &queued.serialized)));
        self.tell_refused(entries, why);
    }

    /// Tells whoever waits on `entries` that Redis did not store them.
    fn tell_refused(self: &Arc<Self>, entries: Vec<Queued>, why: &NotAppended) {
        let count = entries.len() as u64;
        {
            let mut state = self.lock_state();
            for queued in &entries {
                state.pending.remove(&queued.entry.ticket);
            }
        }
        self.release_if_unused();
        for queued in entries {
            queued.then.done(Err(why.clone()));
        }
        self.appends.finished.send_modify(|done| *done += count);
    }
}

/// Set while an append task may leave entries queued with `appending` set: dropped so
/// (a panic), it refuses them and lets the next entry start a new task.
struct Unfinished<'a>(Option<&'a Arc<Room>>);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        let Some(room) = self.0 else { return };
        let (stranded, lost) = {
            let mut queue = room.appends.queue.lock();
            queue.appending = false;
            let lost = std::mem::take(&mut queue.taken);
            (std::mem::take(&mut queue.entries), lost)
        };
        let failed = NotAppended::NotSent("not sent: this node failed while appending".into());
        room.release_taken();
        room.refused(stranded, &failed);
        // The batch under way is done with too: `settle` does not wait for it.
        room.appends.finished.send_modify(|done| *done += lost);
    }
}

/// How many of the queued entries, of these serialized lengths, the next call carries.
fn batch_len(lengths: impl Iterator<Item = usize>) -> usize {
    let mut bytes = 0;
    let mut count = 0;
    for len in lengths.take(MAX_BATCH_ENTRIES) {
        bytes += len;
        if count > 0 && bytes > MAX_BATCH_BYTES {
            break;
        }
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_bounded_in_entries_and_bytes_but_carries_at_least_one() {
        assert_eq!(batch_len([10; 3].into_iter()), 3);
        assert_eq!(batch_len([10; 1000].into_iter()), MAX_BATCH_ENTRIES);
        assert_eq!(batch_len([MAX_BATCH_BYTES * 2, 1].into_iter()), 1);
        assert_eq!(
            batch_len([MAX_BATCH_BYTES / 2, MAX_BATCH_BYTES / 2, 1].into_iter()),
            2
        );
        assert_eq!(batch_len(std::iter::empty()), 0);
    }

    #[test]
    fn an_entry_larger_than_the_queue_waits_for_it_to_empty_rather_than_for_ever() {
        assert_eq!(permits(100), 100);
        assert_eq!(permits(MAX_QUEUED_BYTES * 3) as usize, MAX_QUEUED_BYTES);
    }
}
