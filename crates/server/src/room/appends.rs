//! In a cluster: this node's entries of a room on their way to the room's log in Redis.
//!
//! One append call at a time per room and node; the entries submitted meanwhile go in
//! the next call, together, in the order they were submitted. So a connection does not
//! wait for Redis before its next request (its requests still reach the log in the
//! order it sent them), and a busy room pays Redis' cost per call (the script, the
//! publish, a wakeup of every node) once per batch rather than once per entry.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{oneshot, Semaphore};

use super::{Pending, Room};
use crate::cluster::{Cluster, Serialized, Unavailable};
use crate::rules::command::LogEntry;

/// Entries one append call carries at most...
const MAX_BATCH_ENTRIES: usize = 256;
/// ...and bytes, unless its first entry alone is larger: a call holds Redis' one thread.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Bytes of entries a room may have queued on this node; past it, submitters wait (a
/// reader stops reading its connection, and TCP pushes back on the client).
const MAX_QUEUED_BYTES: usize = 8 << 20;

/// A room's queue of entries to append, on this node.
pub(super) struct Appends {
    queue: Mutex<Queue>,
    /// A permit per byte that may still be queued.
    room_for: Semaphore,
}

impl Default for Appends {
    fn default() -> Self {
        Appends {
            queue: Mutex::default(),
            room_for: Semaphore::new(MAX_QUEUED_BYTES),
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
}

struct Queued {
    entry: LogEntry,
    serialized: Serialized,
    then: Then,
}

/// What happens once Redis stored an entry, or did not.
pub(super) enum Then {
    /// Someone waits for the outcome.
    Tell(oneshot::Sender<Result<(), Unavailable>>),
    /// Nobody waits: only a failure needs doing something (answering the request).
    OnFailure(Box<dyn FnOnce(Unavailable) + Send>),
}

impl Then {
    fn done(self, outcome: Result<(), Unavailable>) {
        match (self, outcome) {
            (Then::Tell(waiter), outcome) => {
                let _ = waiter.send(outcome);
            }
            (Then::OnFailure(failed), Err(unavailable)) => failed(unavailable),
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
        let permits = permits(serialized.bytes());
        appends
            .room_for
            .acquire_many(permits)
            .await
            .expect("the semaphore is never closed")
            .forget();
        {
            let mut state = self.lock_state();
            if state.removed {
                // A stale handle (a connection whose participant is gone): nobody here
                // is in this room any more.
                appends.room_for.add_permits(permits as usize);
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
            !std::mem::replace(&mut queue.appending, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).append_queued(Arc::clone(cluster)));
        }
    }

    /// Appends what is queued, a batch at a time, until the queue is empty.
    async fn append_queued(self: Arc<Self>, cluster: Arc<Cluster>) {
        loop {
            let batch = {
                let mut queue = self.appends.queue.lock();
                if queue.entries.is_empty() {
                    queue.appending = false;
                    return;
                }
                let count = batch_len(queue.entries.iter().map(|queued| queued.serialized.bytes()));
                queue.entries.drain(..count).collect::<Vec<_>>()
            };
            let serialized: Vec<&Serialized> =
                batch.iter().map(|queued| &queued.serialized).collect();
            let appended = cluster.append(&self.name, &serialized).await;
            drop(serialized);
            match appended {
                Ok(positions) => {
                    self.dequeued(&batch);
                    for (position, queued) in positions.into_iter().zip(batch) {
                        self.offer(position, queued.entry);
                        queued.then.done(Ok(()));
                    }
                }
                Err(unavailable) => {
                    // What queued behind the batch would wait a timeout per batch for
                    // the same Redis: it is refused now, and its requests answered.
                    let behind = std::mem::take(&mut self.appends.queue.lock().entries);
                    for failed in [batch, behind] {
                        self.dequeued(&failed);
                        self.refused(failed, &unavailable);
                    }
                }
            }
        }
    }

    /// Frees the room in the queue that `entries` held.
    fn dequeued(&self, entries: &[Queued]) {
        let permits: usize = entries
            .iter()
            .map(|queued| permits(queued.serialized.bytes()) as usize)
            .sum();
        self.appends.room_for.add_permits(permits);
    }

    /// Tells whoever waits on `entries` that Redis did not store them.
    fn refused(self: &Arc<Self>, entries: Vec<Queued>, unavailable: &Unavailable) {
        {
            let mut state = self.lock_state();
            for queued in &entries {
                state.pending.remove(&queued.entry.ticket);
            }
        }
        self.release_if_unused();
        for queued in entries {
            queued.then.done(Err(unavailable.clone()));
        }
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
