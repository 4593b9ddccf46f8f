//! The order of a room's entries. On one node it is the order in which the room's lock
//! is taken; in a cluster it is the room's Redis stream, which every node holding the
//! room reads (by subscription, or by catching up after a gap) and applies in order.

use std::sync::Arc;
use std::time::Duration;

use roomstate_protocol::{
    ClientMessage, CloseReason, Outcome, Reply, ReplyBody, RequestId, ServerMessage,
};
use tokio::sync::oneshot;

use super::appends::Then;
use super::{Connection, Pending, Room, RoomState};
use crate::clock::now_millis;
use crate::cluster::{published_entries, Cluster, NotAppended, Position, Unavailable};
use crate::rules::command::{Command, LogEntry};
use crate::rules::{self, requested_keys};

/// In a cluster, a node saves a snapshot of a room (and trims the log before it) with
/// its own entry at least this many entries after the last snapshot it saved or loaded...
const SNAPSHOT_EVERY: u64 = 256;

/// ...and more as snapshots grow: one entry per this many bytes of that snapshot. A
/// snapshot is the whole session (a replay log of up to 4,096 events, every
/// participant's reply cache), serialized under the room's lock; every 256 entries, a
/// busy room's snapshots cost the cluster more than the entries themselves. Spaced by
/// their size, they cost about a byte per entry for every byte this constant is; an
/// entry (origin, ticket, time, command) is over 100 bytes of JSON.
const SNAPSHOT_BYTES_PER_ENTRY: u64 = 128;

/// The entry from which a node's own entries save a snapshot again, after one of
/// `snapshot_bytes` at entry `n` (saved, or loaded; `0, 0` for a new room).
pub(super) fn next_snapshot(n: u64, snapshot_bytes: usize) -> u64 {
    n + SNAPSHOT_EVERY.max(snapshot_bytes as u64 / SNAPSHOT_BYTES_PER_ENTRY)
}

/// Log entries read per request while catching up.
const CATCH_UP_BATCH: usize = 512;

/// How long an entry that skipped ahead waits for the ones before it to arrive by
/// subscription, before the room reads them from the log.
const GAP_WAIT: Duration = Duration::from_millis(25);

impl Room {
    /// Appends `command` to the room's log; it is applied before this returns on a
    /// single node, and when it comes back from the log in a cluster. Fails only in a
    /// cluster, when Redis did not store the entry or may not have.
    /// Returns the entry's ticket, under which `pending` waits.
    pub(super) async fn submit(
        self: &Arc<Self>,
        command: Command,
        pending: Option<Pending>,
    ) -> Result<u64, NotAppended> {
        let entry = self.entry(command);
        let ticket = entry.ticket;
        match &self.node.cluster {
            None => self.apply_here(entry, pending),
            Some(cluster) => {
                let (stored, outcome) = oneshot::channel();
                // Boxed: every connection's futures would otherwise carry the size of
                // the wait for room in the queue, on a single node too.
                Box::pin(self.queue_append(cluster, entry, pending, Then::Tell(stored))).await;
                // Dropped unanswered: the append task failed, perhaps after Redis
                // stored the entry.
                outcome.await.unwrap_or_else(|_| {
                    Err(NotAppended::Unknown("the append was dropped".into()))
                })?;
            }
        }
        Ok(ticket)
    }

    fn entry(&self, command: Command) -> LogEntry {
        LogEntry {
            origin: self.node.id.clone(),
            ticket: crate::rules::command::next_ticket(),
            at: now_millis(),
            command,
        }
    }

    /// Stops waiting on the entry `ticket`: whoever waited gave up. (A join applied
    /// later finds no connection, and its participant departs after the grace period.)
    pub(super) fn forget(self: &Arc<Self>, ticket: u64) {
        self.lock_state().pending.remove(&ticket);
        self.release_if_unused();
    }

    /// A single node's log: the entry is next, by this lock.
    fn apply_here(self: &Arc<Self>, entry: LogEntry, pending: Option<Pending>) {
        let mut state = self.lock_state();
        if state.removed {
            // A stale handle (a connection whose participant is gone): nobody here is in
            // this room any more.
            return;
        }
        if let Some(pending) = pending {
            state.pending.insert(entry.ticket, pending);
        }
        state.applied = Position {
            n: state.applied.n + 1,
            id: String::new(),
        };
        self.apply(&mut state, entry);
        self.finish(state);
    }

    /// Applies the entries of a published batch that this copy still needs. Those it
    /// applied already (its own, applied when Redis answered) are not even parsed.
    pub(super) fn offer_published(self: &Arc<Self>, payload: &str) {
        for published in published_entries(payload) {
            // An unreadable entry leaves a gap, which the room reads from the log.
            let Some((position, text)) = published else {
                tracing::error!(room = %self.name, "unreadable published entry");
                continue;
            };
            // Most of what a node hears are its own entries, applied when Redis answered
            // their append: those are not parsed. The lock is taken again to apply:
            // parsing under it would hold up the room's other connections for as long
            // as an entry of up to `frame_bytes` takes to parse.
            if self.lock_state().ignores(&position) {
                continue;
            }
            match serde_json::from_str(text) {
                Ok(entry) => self.offer(position, entry),
                Err(error) => {
                    tracing::error!(room = %self.name, %error, "unreadable published entry")
                }
            }
        }
    }

    /// Applies an entry of the cluster's log if it is the next one; a gap means
    /// entries were missed, and the room catches up from the log first.
    pub(super) fn offer(self: &Arc<Self>, position: Position, entry: LogEntry) {
        let mut state = self.lock_state();
        if state.ignores(&position) {
            return;
        }
        if position.n <= state.applied.n {
            // Numbered at or below this copy, yet appended later.
            tracing::error!(room = %self.name, "Redis lost this room's log (restarted without persistence?); starting over from what it has");
            state.log_reset = true;
            drop(state);
            self.spawn_sync();
            return;
        }
        if position.n > state.applied.n + 1 {
            state.ahead.insert(position.n, (position, entry));
            if !state.gap_check {
                state.gap_check = true;
                let room = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep(GAP_WAIT).await;
                    let stuck = {
                        let mut state = room.lock_state();
                        state.gap_check = false;
                        !state.ahead.is_empty()
                    };
                    if stuck {
                        room.spawn_sync();
                    }
                });
            }
            return;
        }
        self.apply_logged(&mut state, position, entry);
        self.apply_ahead(&mut state);
        self.finish(state);
    }

    /// Releases the room's lock, then forgets the room if what was applied may have
    /// left this node with no use for it.
    fn finish(self: &Arc<Self>, mut state: parking_lot::MutexGuard<'_, RoomState>) {
        let check = std::mem::take(&mut state.release_check);
        drop(state);
        if check {
            self.release_if_unused();
        }
    }

    /// Applies the entries that waited for a gap that is now filled.
    fn apply_ahead(self: &Arc<Self>, state: &mut RoomState) {
        while let Some(entry) = state.ahead.first_entry() {
            let n = *entry.key();
            if n > state.applied.n + 1 {
                break;
            }
            let (position, entry) = entry.remove();
            if n == state.applied.n + 1 {
                self.apply_logged(state, position, entry);
            }
        }
    }

    fn apply_logged(self: &Arc<Self>, state: &mut RoomState, position: Position, entry: LogEntry) {
        let n = position.n;
        // Only with its own entries: each node keeps its own count, and any copy would
        // save the same snapshot.
        let snapshot_due = entry.origin == self.node.id && n >= state.next_snapshot;
        state.applied = position;
        let ended = self.apply(state, entry);
        if let Some(cluster) = &self.node.cluster {
            // After a session ends its log is worth nothing: a snapshot lets Redis drop it.
            if snapshot_due || ended {
                let snapshot = state.replica.snapshot();
                state.next_snapshot = next_snapshot(n, snapshot.len());
                cluster.save_snapshot(&self.name, state.applied.clone(), snapshot);
            }
        }
    }

    pub(crate) fn spawn_sync(self: &Arc<Self>) {
        let Some(cluster) = self.node.cluster.clone() else {
            return;
        };
        let room = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(Unavailable(problem)) = room.sync(&cluster).await {
                tracing::warn!(room = %room.name, %problem, "cannot catch up with the room's log; will retry when Redis is back");
            }
        });
    }

    /// Loads the room from the cluster if it is not loaded, then applies every entry
    /// of its log this node has not applied yet.
    pub(super) async fn sync(self: &Arc<Self>, cluster: &Cluster) -> Result<(), Unavailable> {
        let _one_at_a_time = self.syncing.lock().await;
        if self.lock_state().removed {
            return Ok(()); // A copy let go of: a new one reads the log for itself.
        }
        if !self.lock_state().loaded {
            // Subscribed first: whatever is appended after the snapshot is read either
            // from the log below or from the subscription.
            cluster.subscribe(&self.name).await?;
            let snapshot = cluster.load_snapshot(&self.name).await?;
            let mut state = self.lock_state();
            self.install(&mut state, snapshot, false);
        }
        if self.lock_state().log_reset {
            let snapshot = cluster.load_snapshot(&self.name).await?;
            let mut state = self.lock_state();
            self.install(&mut state, snapshot, true);
        }
        loop {
            let after = self.lock_state().applied.clone();
            let batch = cluster
                .read_after(&self.name, &after, CATCH_UP_BATCH)
                .await?;
            let Some((first, _)) = batch.first() else {
                break;
            };
            let reset = first.renumbered_since(&after);
            if reset || first.n > after.n + 1 {
                // Trimmed past this copy, or lost by Redis: start again from the
                // snapshot Redis has.
                let snapshot = cluster.load_snapshot(&self.name).await?;
                let mut state = self.lock_state();
                self.install(&mut state, snapshot, reset);
                continue;
            }
            let full = batch.len() == CATCH_UP_BATCH;
            {
                let mut state = self.lock_state();
                if state.removed {
                    return Ok(());
                }
                for (position, entry) in batch {
                    if position.n == state.applied.n + 1 {
                        self.apply_logged(&mut state, position, entry);
                    }
                }
                self.apply_ahead(&mut state);
            }
            if !full {
                break;
            }
        }
        self.release_if_unused();
        Ok(())
    }

    /// Replaces this copy with a snapshot. Local connections missed what happened in
    /// between, so they are closed, to resume.
    /// `over`: replace the copy even if the snapshot is older (Redis lost the log).
    fn install(
        self: &Arc<Self>,
        state: &mut RoomState,
        snapshot: Option<(Position, String)>,
        over: bool,
    ) {
        let position = snapshot
            .as_ref()
            .map_or_else(Position::default, |(position, _)| position.clone());
        if state.loaded && position.n <= state.applied.n && !over {
            return;
        }
        state.log_reset = false;
        state.ahead.clear();
        let had_session = state.replica.session().is_some();
        state.connections.close_all(
            CloseReason::Unavailable,
            "this node fell behind the room's history; resume to catch up",
        );
        let text = snapshot.as_ref().map(|(_, text)| text.as_str());
        if let Err(error) = state.replica.restore(text) {
            tracing::error!(room = %self.name, %error, "unreadable snapshot; starting the room over");
            state.replica.clear();
        }
        state.next_snapshot = next_snapshot(position.n, text.map_or(0, str::len));
        state.applied = position;
        state.loaded = true;
        self.count_session(had_session, state.replica.session().is_some());
        let Some(session) = state.replica.session() else {
            return;
        };
        // Participants of this node wait to resume; if they do not, they depart.
        for (sid, epoch) in session.connected_through(&self.node.id) {
            self.start_grace(sid, epoch);
        }
    }

    /// Hands one message from participant `sid`'s connection `epoch` to the room. In a
    /// cluster it returns once the entry is queued for Redis, so the connection reads
    /// its next request meanwhile; the answer comes when the entry is applied.
    pub async fn handle(
        self: &Arc<Self>,
        sid: &str,
        epoch: u64,
        message: ClientMessage,
        connection: &Connection,
    ) {
        let id = message.request_id();
        // Kept to answer from this node's copy if Redis cannot be reached.
        let read = match (&message, &self.node.cluster) {
            (ClientMessage::Get { keys, .. }, Some(_)) => Some(keys.clone()),
            _ => None,
        };
        let entry = self.entry(Command::Client {
            sid: sid.to_string(),
            epoch,
            message,
        });
        let Some(cluster) = &self.node.cluster else {
            return self.apply_here(entry, None);
        };
        let room = Arc::clone(self);
        let connection = connection.clone();
        let failed = move |not_appended: NotAppended| {
            // Without an id it was `leave`: the connection closes anyway, and the
            // participant departs.
            if let Some(id) = id {
                room.answer_not_appended(id, read, &not_appended, &connection);
            }
        };
        // Boxed: every connection's futures would otherwise carry the size of the wait
        // for room in the queue, on a single node too.
        Box::pin(self.queue_append(cluster, entry, None, Then::OnFailure(Box::new(failed)))).await;
    }

    /// Answers request `id`, which Redis did not confirm: with this node's copy, marked
    /// stale, if it was a read; else with `unavailable` (nothing was changed) or
    /// `outcome_unknown` (the change may still have been stored).
    fn answer_not_appended(
        &self,
        id: RequestId,
        read: Option<Vec<String>>,
        not_appended: &NotAppended,
        connection: &Connection,
    ) {
        let stale = read.and_then(|keys| {
            let keys = requested_keys(&keys, &self.config().limits).ok()?;
            let state = self.lock_state();
            state
                .replica
                .session()
                .map(|session| session.entries(&keys))
        });
        let reply = match stale {
            Some(entries) => Reply {
                id,
                outcome: Outcome::Ok(ReplyBody::Entries(entries)),
                stale: true,
            },
            None => {
                let error = not_appended.error_body();
                self.node.metrics.error(error.code.as_str());
                Reply {
                    id,
                    outcome: Outcome::Error(error),
                    stale: false,
                }
            }
        };
        // A reply the client may wait for: worth a slow consumer's queue slot.
        let _ = connection.send(&rules::frame(&ServerMessage::Reply(reply)));
    }
}
