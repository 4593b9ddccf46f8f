//! One entry of a room's log applied on this node: the rules decide, and what they ask
//! for is carried out here, under the room's lock, before the next entry.

use std::sync::Arc;

use roomstate_protocol::CloseReason;

use super::{AdmittedHere, Closing, Pending, Room, RoomState};
use crate::livekit;
use crate::rules::command::{Command, LogEntry};
use crate::rules::{Counter, Effect, Effects};

impl Room {
    /// Applies one entry of the room's log. Returns whether it ended the session.
    pub(super) fn apply(self: &Arc<Self>, state: &mut RoomState, entry: LogEntry) -> bool {
        // In a cluster, a copy loaded from Redis replays entries this node appended
        // long ago: only entries this process appended and has not applied yet are its
        // own (answers, webhooks, counters happen once).
        let own = entry.origin == self.node.id
            && self
                .node
                .cluster
                .as_ref()
                .is_none_or(|cluster| cluster.take_own(entry.ticket));
        let ticket = entry.ticket;
        state.release_check |= match &entry.command {
            Command::Client { message, .. } => message.request_id().is_none(),
            _ => true,
        };
        let had_session = state.replica.session().is_some();
        let effects = state.replica.apply(entry, own);
        let has_session = state.replica.session().is_some();
        self.count_session(had_session, has_session);
        self.carry_out(state, effects);
        if own {
            // Whoever waited and got no answer (the room was gone) stops waiting.
            state.pending.remove(&ticket);
        }
        had_session && !has_session
    }

    fn carry_out(self: &Arc<Self>, state: &mut RoomState, effects: Effects) {
        for effect in effects {
            match effect {
                Effect::Event { audience, frame } => {
                    let started = std::time::Instant::now();
                    let session = state.replica.session();
                    let too_slow = state.connections.deliver(&audience, &frame, |sid, key| {
                        session.is_some_and(|session| session.observes(sid, key))
                    });
                    self.node
                        .metrics
                        .fanout_seconds
                        .observe(started.elapsed().as_secs_f64());
                    for sid in too_slow {
                        self.cut_slow_consumer(state, &sid);
                    }
                }
                Effect::Send { sid, frame } => {
                    if !state.connections.send(&sid, &frame) {
                        self.cut_slow_consumer(state, &sid);
                    }
                }
                Effect::Close {
                    sid,
                    reason,
                    message,
                } => {
                    if let Some((_, connection)) = state.connections.detach(&sid) {
                        connection.close(reason, message);
                    }
                }
                Effect::Admitted {
                    ticket,
                    sid,
                    epoch,
                    frames,
                } => match state.pending.remove(&ticket) {
                    Some(Pending::Admit {
                        connection,
                        admitted,
                    }) => {
                        state.connections.attach(sid.clone(), epoch, connection);
                        let _ = admitted.send(AdmittedHere::Attached(sid, epoch, frames));
                    }
                    // The connection gave up waiting: it departs unless it resumes again.
                    _ => self.start_grace(&sid, epoch),
                },
                Effect::Refused {
                    ticket,
                    reason,
                    message,
                } => {
                    if let Some(Pending::Admit { admitted, .. }) = state.pending.remove(&ticket) {
                        let _ = admitted.send(AdmittedHere::Refused(Closing {
                            reason,
                            message: message.into(),
                        }));
                    }
                }
                Effect::Answer { ticket, outcome } => {
                    if let Some(Pending::Admin(answer)) = state.pending.remove(&ticket) {
                        let _ = answer.send(outcome);
                    }
                }
                Effect::Webhook {
                    event,
                    room,
                    participant,
                } => {
                    if let Some(webhooks) = &self.node.webhooks {
                        webhooks.send(
                            event,
                            livekit::room(&self.name, &room),
                            participant.as_ref().map(livekit::participant),
                        );
                    }
                }
                Effect::Listed(listed) => {
                    if let Some(cluster) = &self.node.cluster {
                        cluster.index(&self.name, listed);
                    }
                }
                Effect::Count(counter) => {
                    let metrics = &self.node.metrics;
                    match counter {
                        Counter::StoreWrite => {
                            metrics.store_writes.inc();
                        }
                        Counter::SessionStarted => {
                            metrics.sessions_started.inc();
                        }
                        Counter::SessionEnded => {
                            metrics.sessions_ended.inc();
                        }
                        Counter::Error(code) => metrics.error(code.as_str()),
                    }
                }
            }
        }
    }

    /// Closes a connection whose queue is full; its participant may resume within the
    /// grace period.
    fn cut_slow_consumer(self: &Arc<Self>, state: &mut RoomState, sid: &str) {
        tracing::warn!(room = %self.name, %sid, "slow consumer: outbound queue full, disconnecting");
        if let Some((epoch, connection)) = state.connections.detach(sid) {
            connection.close(
                CloseReason::SlowConsumer,
                "the connection did not keep up with the room; resume to catch up",
            );
            self.start_grace(sid, epoch);
        }
    }
}
