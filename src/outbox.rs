//! Requests on their way to the server: queued in call order, numbered when sent, kept
//! until answered so that a resumed connection can send again what the server missed.

use std::collections::{BTreeMap, VecDeque};

use roomstate_protocol::{ClientMessage, ReplyBody, RequestId, MAX_REQUESTS_IN_FLIGHT};
use tokio::sync::oneshot;

use crate::error::RoomError;

pub(crate) type ReplySender = oneshot::Sender<Result<Answer, RoomError>>;

/// A successful reply, and whether the server answered from a copy that may be behind
/// (a cluster node that could not reach Redis).
pub(crate) struct Answer {
    pub body: ReplyBody,
    pub stale: bool,
}

/// Who wants the reply.
pub(crate) enum ReplyTarget {
    /// An app call waiting on it.
    Caller(ReplySender),
    /// The engine's own observe: these keys become live when it is answered.
    Observe {
        token: crate::state::ObserveToken,
        keys: Vec<String>,
    },
    /// The engine's own request whose answer changes nothing.
    Nobody,
}

pub(crate) struct Pending {
    /// Identifies the request before it has a wire id.
    ticket: u64,
    message: ClientMessage,
    pub target: ReplyTarget,
}

/// Where a timed-out request was.
pub(crate) enum Withdrawn {
    NotSent,
    Sent,
    Answered,
}

#[derive(Default)]
pub(crate) struct Outbox {
    next_ticket: u64,
    next_request_id: RequestId,
    unsent: VecDeque<Pending>,
    in_flight: BTreeMap<RequestId, Pending>,
}

impl Outbox {
    /// Queues a request behind every other; returns its ticket.
    pub fn push(&mut self, message: ClientMessage, target: ReplyTarget) -> u64 {
        let pending = self.pending(message, target);
        let ticket = pending.ticket;
        self.unsent.push_back(pending);
        ticket
    }

    /// Queues a request ahead of every other (the engine's re-observe after reconnect).
    pub fn push_front(&mut self, message: ClientMessage, target: ReplyTarget) {
        let pending = self.pending(message, target);
        self.unsent.push_front(pending);
    }

    fn pending(&mut self, message: ClientMessage, target: ReplyTarget) -> Pending {
        self.next_ticket += 1;
        Pending {
            ticket: self.next_ticket,
            message,
            target,
        }
    }

    /// Numbers and serializes the requests that may go out now.
    pub fn take_sendable(&mut self) -> Vec<String> {
        let mut frames = Vec::new();
        while self.in_flight.len() < MAX_REQUESTS_IN_FLIGHT {
            let Some(mut pending) = self.unsent.pop_front() else {
                break;
            };
            self.next_request_id += 1;
            pending.message.set_request_id(self.next_request_id);
            frames
                .push(serde_json::to_string(&pending.message).expect("client messages serialize"));
            self.in_flight.insert(self.next_request_id, pending);
        }
        frames
    }

    pub fn answered(&mut self, id: RequestId) -> Option<Pending> {
        self.in_flight.remove(&id)
    }

    /// After a resume: requests the server did not get go out again, first.
    pub fn requeue_unprocessed(&mut self, last_processed: RequestId) {
        let unprocessed = self.in_flight.split_off(&(last_processed + 1));
        for (_, pending) in unprocessed.into_iter().rev() {
            self.unsent.push_front(pending);
        }
    }

    /// Requests sent and not answered. Returns them: after a fresh join, or when the room
    /// ends, for their callers to hear what became of them.
    pub fn drain_in_flight(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.in_flight).into_values().collect()
    }

    /// Requests never sent. Returns them.
    pub fn drain_unsent(&mut self) -> Vec<Pending> {
        self.unsent.drain(..).collect()
    }

    /// Gives up on a request whose caller stopped waiting.
    pub fn withdraw(&mut self, ticket: u64) -> Withdrawn {
        if let Some(index) = self
            .unsent
            .iter()
            .position(|pending| pending.ticket == ticket)
        {
            self.unsent.remove(index);
            return Withdrawn::NotSent;
        }
        let sent = self
            .in_flight
            .iter()
            .find(|(_, pending)| pending.ticket == ticket)
            .map(|(id, _)| *id);
        match sent {
            Some(id) => {
                self.in_flight.remove(&id);
                Withdrawn::Sent
            }
            None => Withdrawn::Answered,
        }
    }
}

impl Pending {
    /// Tells a waiting caller how its request ended.
    pub fn fail(self, error: RoomError) {
        if let ReplyTarget::Caller(reply) = self.target {
            let _ = reply.send(Err(error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observe() -> ClientMessage {
        ClientMessage::Observe {
            id: 0,
            keys: vec!["k".into()],
        }
    }

    #[test]
    fn ids_rise_in_send_order_even_for_requests_queued_in_front() {
        let mut outbox = Outbox::default();
        outbox.push(
            ClientMessage::Get {
                id: 0,
                keys: vec![],
            },
            ReplyTarget::Nobody,
        );
        outbox.push_front(observe(), ReplyTarget::Nobody);
        let frames = outbox.take_sendable();
        assert!(
            frames[0].contains(r#""type":"observe","id":1"#),
            "{frames:?}"
        );
        assert!(frames[1].contains(r#""type":"get","id":2"#), "{frames:?}");
    }

    #[test]
    fn unprocessed_requests_go_out_again_in_order_with_new_ids() {
        let mut outbox = Outbox::default();
        for _ in 0..3 {
            outbox.push(observe(), ReplyTarget::Nobody);
        }
        outbox.take_sendable();
        outbox.requeue_unprocessed(1);
        let again = outbox.take_sendable();
        assert_eq!(again.len(), 2);
        assert!(
            again[0].contains(r#""id":4"#) && again[1].contains(r#""id":5"#),
            "{again:?}"
        );
        assert!(outbox.answered(1).is_some());
    }

    #[test]
    fn a_withdrawn_unsent_request_is_never_sent() {
        let mut outbox = Outbox::default();
        let ticket = outbox.push(observe(), ReplyTarget::Nobody);
        assert!(matches!(outbox.withdraw(ticket), Withdrawn::NotSent));
        assert!(outbox.take_sendable().is_empty());
    }

    #[test]
    fn at_most_the_window_is_in_flight() {
        let mut outbox = Outbox::default();
        for _ in 0..MAX_REQUESTS_IN_FLIGHT + 5 {
            outbox.push(observe(), ReplyTarget::Nobody);
        }
        assert_eq!(outbox.take_sendable().len(), MAX_REQUESTS_IN_FLIGHT);
        assert!(outbox.take_sendable().is_empty());
        outbox.answered(1);
        assert_eq!(outbox.take_sendable().len(), 1);
    }
}
