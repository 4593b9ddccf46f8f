//! Resume replays exactly what the client would have received had the link never
//! dropped (docs/protocol.md, Resuming): each event once, in order, to the keys it
//! observed *when the event happened*, with the replies it missed in their places.
//! A raw protocol client, as a third-party client would be, checked against what it
//! received live (the model), on one node and (ROOMSTATE_TEST_NODES=3) across nodes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use roomstate_protocol::{Seq, ServerMessage};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::auth_and_limits::RawSocket;
use crate::harness::{rtc_url, Client, TestServer, Token};

/// One frame as the client received it.
#[derive(Clone, Debug)]
struct Received {
    text: String,
    seq: Option<Seq>,
    reply_id: Option<u64>,
}

/// A client speaking the protocol by hand, remembering everything it received.
struct Raw {
    socket: Option<RawSocket>,
    identity: String,
    room: String,
    sid: String,
    resume_token: String,
    session_id: String,
    next_id: u64,
    /// Every frame received live, in order (replays are not added again).
    received: Vec<Received>,
}

async fn read(socket: &mut RawSocket) -> (String, ServerMessage) {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .expect("no error");
        if let Message::Text(text) = frame {
            let message = serde_json::from_str(text.as_str()).unwrap();
            return (text.to_string(), message);
        }
    }
}

impl Raw {
    async fn join(url: &str, room: &str, identity: &str) -> Raw {
        let (mut socket, _) = tokio_tungstenite::connect_async(rtc_url(url, room, identity))
            .await
            .unwrap();
        let ServerMessage::Joined(joined) = read(&mut socket).await.1 else {
            panic!("expected joined");
        };
        Raw {
            socket: Some(socket),
            identity: identity.into(),
            room: room.into(),
            sid: joined.local.sid,
            resume_token: joined.resume_token,
            session_id: joined.session_id,
            next_id: 1,
            received: vec![Received {
                text: String::new(),
                seq: Some(joined.seq),
                reply_id: None,
            }],
        }
    }

    /// The highest event seq received so far.
    fn last_seq(&self) -> Seq {
        self.received
            .iter()
            .filter_map(|r| r.seq)
            .max()
            .unwrap_or(0)
    }

    fn last_reply_id(&self) -> u64 {
        self.received
            .iter()
            .filter_map(|r| r.reply_id)
            .max()
            .unwrap_or(0)
    }

    /// Sends a request and reads (recording) until its reply.
    async fn request(&mut self, mut request: Value) -> ServerMessage {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = id.into();
        let socket = self.socket.as_mut().expect("connected");
        socket
            .send(Message::text(request.to_string()))
            .await
            .unwrap();
        loop {
            let (text, message) = read(socket).await;
            let reply_id = match &message {
                ServerMessage::Reply(reply) => Some(reply.id),
                _ => None,
            };
            self.received.push(Received {
                text,
                seq: message.seq(),
                reply_id,
            });
            if reply_id == Some(id) {
                return message;
            }
        }
    }

    /// Reads until everything sent to it so far has arrived.
    async fn settle(&mut self) {
        self.request(json!({"type": "get", "keys": ["probe"]}))
            .await;
    }

    /// Drops the connection without a close frame, as a network would.
    fn cut(&mut self) {
        self.socket = None;
    }

    async fn resume_socket(
        &self,
        url: &str,
        last_seq: Seq,
        last_reply_id: u64,
    ) -> (RawSocket, ServerMessage) {
        let address = format!(
            "{url}/rtc?protocol=1&access_token={}&resume_sid={}&resume_token={}&session_id={}&last_seq={last_seq}&last_reply_id={last_reply_id}",
            Token::new(&self.room, &self.identity).sign(),
            self.sid,
            self.resume_token,
            self.session_id,
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(address).await.unwrap();
        let (_, first) = read(&mut socket).await;
        (socket, first)
    }

    /// Resumes as if only the frames up to `last_seq` / `last_reply_id` had arrived;
    /// returns what the server replayed (everything before the reply to a probe).
    async fn resume(&mut self, url: &str, last_seq: Seq, last_reply_id: u64) -> Vec<Received> {
        let (socket, first) = self.resume_socket(url, last_seq, last_reply_id).await;
        let ServerMessage::Resumed(resumed) = first else {
            panic!("expected resumed, got {first:?}");
        };
        assert!(resumed.snapshot.is_none(), "the log covers the gap");
        self.socket = Some(socket);
        let before = self.received.len();
        self.settle().await;
        let replay = self.received[before..self.received.len() - 1].to_vec();
        // The replay repeats frames already in the live list: keep only the probe's reply.
        let probe = self.received.pop().expect("the probe's reply");
        self.received.truncate(before);
        self.received.push(probe);
        replay
    }
}

/// What a resume from `last_seq`/`last_reply_id` must send when nothing happened while
/// the link was down: every event after `last_seq` and every reply above
/// `last_reply_id` the client received live, in the same order.
fn expected(live: &[Received], last_seq: Seq, last_reply_id: u64) -> Vec<String> {
    live.iter()
        .filter(|r| {
            r.seq.is_some_and(|seq| seq > last_seq)
                || r.reply_id.is_some_and(|id| id > last_reply_id)
        })
        .map(|r| r.text.clone())
        .collect()
}

fn texts(frames: &[Received]) -> Vec<String> {
    frames.iter().map(|r| r.text.clone()).collect()
}

fn store_values(frames: &[Received], key: &str) -> Vec<Option<Value>> {
    frames
        .iter()
        .filter_map(
            |r| match serde_json::from_str::<ServerMessage>(&r.text).ok()? {
                ServerMessage::StoreChanged(entry) if entry.key == key => Some(entry.value),
                _ => None,
            },
        )
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_observed_late_is_not_replayed_its_older_changes() {
    let server = TestServer::start();
    let mut alice = Raw::join(&server.url(), "r", "alice").await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    alice.settle().await; // bob's arrival
    let last_seq = alice.last_seq();
    for n in 1..=5 {
        bob.store().set("k", json!(n)).await.unwrap();
    }
    let ServerMessage::Reply(observed) = alice
        .request(json!({"type": "observe", "keys": ["k"]}))
        .await
    else {
        unreachable!()
    };
    assert!(
        format!("{observed:?}").contains("Number(5)"),
        "{observed:?}"
    );
    assert_eq!(alice.last_seq(), last_seq, "she applied no event");
    let last_reply_id = alice.last_reply_id();
    alice.cut();
    for n in 6..=8 {
        bob.store().set("k", json!(n)).await.unwrap();
    }
    let replay = alice.resume(&server.url(), last_seq, last_reply_id).await;
    assert_eq!(
        store_values(&replay, "k"),
        vec![Some(json!(6)), Some(json!(7)), Some(json!(8))],
        "only what she missed, never an older value: {:#?}",
        texts(&replay)
    );
    assert_eq!(replay.len(), 3, "nothing else: {:#?}", texts(&replay));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_unobserve_observe_replays_exactly_what_arrived_live() {
    let server = TestServer::start();
    let mut alice = Raw::join(&server.url(), "r", "alice").await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    alice.settle().await;
    let (last_seq, last_reply_id) = (alice.last_seq(), alice.last_reply_id());
    let live_from = alice.received.len();

    alice
        .request(json!({"type": "observe", "keys": ["k"]}))
        .await;
    bob.store().set("k", json!(1)).await.unwrap();
    bob.store().set("k", json!(2)).await.unwrap();
    alice.settle().await;
    alice
        .request(json!({"type": "unobserve", "keys": ["k"]}))
        .await;
    bob.store().set("k", json!(3)).await.unwrap();
    bob.store().delete("k").await.unwrap();
    alice.settle().await;
    alice
        .request(json!({"type": "observe", "keys": ["k", "other"]}))
        .await;
    bob.store().set("k", json!(5)).await.unwrap();
    bob.store().delete("k").await.unwrap(); // a delete, observed
    bob.room
        .local_participant()
        .set_attributes([("hand".to_string(), "up".to_string())].into())
        .await
        .unwrap();
    alice.settle().await;
    let live = alice.received[live_from..].to_vec();
    assert_eq!(
        store_values(&live, "k"),
        vec![Some(json!(1)), Some(json!(2)), Some(json!(5)), None],
        "the live stream (the model)"
    );

    alice.cut();
    let replay = alice.resume(&server.url(), last_seq, last_reply_id).await;
    assert_eq!(texts(&replay), expected(&live, last_seq, last_reply_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_observes_writes_and_cuts_replay_what_arrived_live() {
    let seed = std::env::var("ROOMSTATE_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(11u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = TestServer::start();
    let mut alice = Raw::join(&server.url(), "r", "alice").await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    alice.settle().await;
    let keys = ["a", "b", "c"];
    for round in 0..6 {
        // Resume from a point the replay log still covers: any earlier event this round.
        let anchors: Vec<(Seq, u64)> = vec![(alice.last_seq(), alice.last_reply_id())];
        let mut anchors = anchors;
        let live_from = alice.received.len();
        for _ in 0..rng.random_range(5..15) {
            let key = keys[rng.random_range(0..keys.len())];
            match rng.random_range(0..6) {
                0 => {
                    alice
                        .request(json!({"type": "observe", "keys": [key]}))
                        .await;
                }
                1 => {
                    alice
                        .request(json!({"type": "unobserve", "keys": [key]}))
                        .await;
                }
                2 => {
                    alice
                        .request(json!({"type": "observe", "keys": ["*"]}))
                        .await;
                }
                3 => {
                    bob.store().delete(key).await.unwrap();
                }
                _ => {
                    bob.store()
                        .set(key, json!(rng.random_range(0..100)))
                        .await
                        .unwrap();
                }
            }
            if rng.random_bool(0.3) {
                alice.settle().await;
                anchors.push((alice.last_seq(), alice.last_reply_id()));
            }
        }
        alice.settle().await;
        let live = alice.received[live_from..].to_vec();
        let (last_seq, last_reply_id) = anchors[rng.random_range(0..anchors.len())];
        alice.cut();
        let replay = alice.resume(&server.url(), last_seq, last_reply_id).await;
        assert_eq!(
            texts(&replay),
            expected(&live, last_seq, last_reply_id),
            "seed {seed}, round {round}, resumed from seq {last_seq}, reply {last_reply_id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_before_the_log_gets_a_snapshot_of_what_it_observes() {
    let server = TestServer::with_config("replay_log_events = 4");
    let mut alice = Raw::join(&server.url(), "r", "alice").await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    alice.settle().await;
    let last_seq = alice.last_seq();
    alice
        .request(json!({"type": "observe", "keys": ["k"]}))
        .await;
    let last_reply_id = alice.last_reply_id();
    alice.cut();
    for n in 1..=10 {
        bob.store().set("k", json!(n)).await.unwrap();
        bob.store().set("unobserved", json!(n)).await.unwrap();
    }
    let (_, first) = alice
        .resume_socket(&server.url(), last_seq, last_reply_id)
        .await;
    let ServerMessage::Resumed(resumed) = first else {
        panic!("expected resumed, got {first:?}");
    };
    let snapshot = resumed.snapshot.expect("past the log: a snapshot");
    let keys: Vec<(&str, Option<&Value>)> = snapshot
        .entries
        .iter()
        .map(|entry| (entry.key.as_str(), entry.value.as_ref()))
        .collect();
    assert_eq!(
        keys,
        vec![("k", Some(&json!(10)))],
        "the observed keys' values now"
    );
    assert_eq!(resumed.last_request_id, 2);
    assert!(snapshot.participants.iter().any(|p| p.identity == "bob"));
}

/// The replies kept for a resume are bounded in bytes (`reply_cache_bytes`): a resume
/// re-sends the newest replies that fit, oldest first, and always the newest one even
/// when it alone is larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_re_sends_the_newest_replies_that_fit_the_reply_cache() {
    let budget = 3000;
    let server = TestServer::with_config(&format!("reply_cache_bytes = {budget}"));
    let mut alice = Raw::join(&server.url(), "r", "alice").await;
    for key in ["a", "b", "c", "d"] {
        alice
            .request(json!({"type": "set", "key": key, "value": "v".repeat(900)}))
            .await;
    }
    // She observes nothing, so the writes send her no event: only replies are replayed.
    let last_seq = alice.last_seq();
    for _ in 0..5 {
        alice.request(json!({"type": "get", "keys": ["a"]})).await;
    }
    let live: Vec<String> = alice
        .received
        .iter()
        .filter(|received| received.reply_id.is_some())
        .map(|received| received.text.clone())
        .collect();
    // The newest replies whose bytes fit the budget.
    let mut fits = Vec::new();
    let mut bytes = 0;
    for reply in live.iter().rev() {
        if !fits.is_empty() && bytes + reply.len() > budget {
            break;
        }
        bytes += reply.len();
        fits.insert(0, reply.clone());
    }
    assert!(
        fits.len() > 1 && fits.len() < live.len(),
        "the test makes the cache drop some replies and keep several: {} of {}",
        fits.len(),
        live.len()
    );
    alice.cut();
    let replay = alice.resume(&server.url(), last_seq, 0).await;
    assert_eq!(texts(&replay), fits);

    // One reply larger than the whole budget is still kept, alone.
    let ServerMessage::Reply(large) = alice
        .request(json!({"type": "get", "keys": ["a", "b", "c", "d"]}))
        .await
    else {
        unreachable!()
    };
    let large_text = alice.received.last().unwrap().text.clone();
    assert!(large_text.len() > budget, "{} bytes", large_text.len());
    alice.cut();
    let replay = alice.resume(&server.url(), last_seq, 0).await;
    assert_eq!(texts(&replay), vec![large_text], "reply {}", large.id);
}
