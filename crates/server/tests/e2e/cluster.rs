//! Many nodes on one real `redis-server`: what only a cluster can get wrong. (The
//! whole suite also runs against three nodes: `ROOMSTATE_TEST_NODES=3`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use roomstate::{ConnectOptions, ConnectionState, RoomError};
use roomstate_protocol::{ErrorCode, Limit, Outcome, ServerMessage};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::auth_and_limits::{next, raw_join_at, raw_join_room_at, RawSocket};
use crate::harness::{
    fast_options, metric, Client, Heard, RedisServer, TestServer, Token, KEY, PATIENCE, SECRET,
};
use crate::server_api::{admin_token, event, post_json_to, start_receiver};

/// `roomstate serve --redis URL --node-id ID` (flags, no config file) joins the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_the_cluster_from_the_command_line() {
    let server = TestServer::cluster(2, "");
    let redis_url = server.redis.as_ref().unwrap().url();
    let mut flagged = std::process::Command::new(env!("CARGO_BIN_EXE_roomstate"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--keys",
            &format!("{KEY}:{SECRET}"),
        ])
        .args(["--redis", &redis_url, "--node-id", "from-flags"])
        .env("ROOMSTATE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(flagged.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line.trim().replace("roomstate listening on ", "");
    let alice = Client::join(&server.node_url(0), &Token::new("r", "alice")).await;
    let bob = Client::join(&url, &Token::new("r", "bob")).await;
    alice.store().set("k", json!("from node 0")).await.unwrap();
    assert_eq!(
        bob.store().get("k").await.unwrap().unwrap().value,
        json!("from node 0")
    );
    drop(bob);
    flagged.kill().unwrap();
    flagged.wait().unwrap();
}

/// A node that let a room go and loads it again replays entries it appended long ago:
/// their webhooks must not go out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_reloads_a_room_does_not_repeat_its_webhooks() {
    let (url, receiver) = start_receiver(0).await;
    let server = TestServer::cluster(
        2,
        &format!("[webhook]\nurls = [\"{url}\"]\napi_key = \"{KEY}\"\n"),
    );
    let alice = Client::join(&server.node_url(0), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.node_url(1), &Token::new("r", "bob")).await;
    alice.room.disconnect().await;
    bob.heard.wait_for(Heard::Left("alice".into())).await;
    // Node 0 holds nobody in the room now and lets it go (its room gauge drops to 0);
    // carol makes it load the room again, replaying the log.
    let metrics_url = format!("{}/metrics", server.node_http_url(0));
    let deadline = Instant::now() + PATIENCE;
    while !reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains("roomstate_rooms 0")
    {
        assert!(Instant::now() < deadline, "node 0 never let the room go");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _carol = Client::join(&server.node_url(0), &Token::new("r", "carol")).await;
    // Node 0 sends its events in order, and a repeat from the replay would have been
    // queued before carol's join: once that is here, any repeat is here too.
    let mut events = receiver
        .wait_for_event(event("participant_joined", "carol"))
        .await;
    events.sort();
    let mut expected = vec![
        event("room_started", ""),
        event("participant_joined", "alice"),
        event("participant_joined", "bob"),
        event("participant_left", "alice"),
        event("participant_joined", "carol"),
    ];
    expected.sort();
    assert_eq!(events, expected, "no event went out twice");
}

/// Redis restarted empty (no persistence): the nodes notice that the room's log starts
/// over below their copies, drop the copies, and the clients join the new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_start_over_when_redis_loses_the_log() {
    let mut server = TestServer::cluster(2, "");
    let alice = Client::join(&server.node_url(0), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.node_url(1), &Token::new("r", "bob")).await;
    alice.store().set("k", json!(1)).await.unwrap();
    let old_session = alice.room.session_id();

    let redis = server.redis.as_mut().unwrap();
    redis.stop();
    redis.resume(); // empty: it saved nothing
                    // The first write after the restart is numbered from 1 again. Its outcome depends on
                    // when the node noticed; what matters is what follows.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let _ = alice.store().set("k", json!(2)).await;
        let (a, b) = (alice.room.session_id(), bob.room.session_id());
        if a.is_some() && a == b && a != old_session {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice ({a:?}) and bob ({b:?}) never met in a new session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice.store().set("after", json!(3)).await.unwrap();
    assert_eq!(
        bob.store().get("after").await.unwrap().unwrap().value,
        json!(3)
    );
}

async fn store_api(node_http_url: &str, method: &str, body: Value) -> Value {
    let token = admin_token(body["room"].as_str().unwrap());
    let path = format!("roomstate.SessionStore/{method}");
    post_json_to(node_http_url, &path, &token, body).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_spans_nodes_and_ends_with_its_last_participant() {
    let server = TestServer::cluster(2, "");
    let alice = Client::join(&server.node_url(0), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.node_url(1), &Token::new("r", "bob")).await;
    let session = alice.room.session_id();
    assert_eq!(bob.room.session_id(), session, "one session on both nodes");
    let bob_sees = bob.observe(&["pinned"]);
    alice.store().set("pinned", json!("hello")).await.unwrap();
    bob_sees
        .wait_for(Heard::Key("pinned".into(), Some(json!("hello"))))
        .await;

    alice.room.disconnect().await;
    bob.heard.wait_for(Heard::Left("alice".into())).await;
    assert_eq!(
        bob.store().get("pinned").await.unwrap().unwrap().value,
        json!("hello"),
        "the session lives while anyone remains, on any node"
    );
    bob.room.disconnect().await;

    // The last participant left: on either node, a new session starts empty.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let carol = Client::join(&server.node_url(0), &Token::new("r", "carol")).await;
        if carol.room.session_id() != session {
            assert_eq!(carol.store().get("pinned").await.unwrap(), None);
            break;
        }
        // bob's leave may still be on its way to node 0.
        carol.room.disconnect().await;
        assert!(Instant::now() < deadline, "the session never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_under_concurrent_writers_on_different_nodes() {
    const LIMIT: usize = 10;
    let server = TestServer::cluster(3, &format!("[limits]\nkeys = {LIMIT}"));
    let mut clients = Vec::new();
    for node in 0..3 {
        let token = Token::new("r", &format!("p{node}"));
        clients.push(Client::join(&server.node_url(node), &token).await);
    }
    let writes = clients.iter().enumerate().map(|(node, client)| {
        let store = client.store();
        async move {
            let mut written = 0;
            for n in 0..LIMIT {
                match store.set(&format!("k{node}-{n}"), json!(n)).await {
                    Ok(_) => written += 1,
                    Err(RoomError::LimitExceeded {
                        limit: Limit::Keys, ..
                    }) => {}
                    Err(other) => panic!("unexpected error {other}"),
                }
            }
            written
        }
    });
    let written: usize = join_all(writes).await.into_iter().sum();
    assert_eq!(
        written, LIMIT,
        "exactly the limit's worth of keys was accepted"
    );
    let listed = store_api(&server.node_http_url(1), "List", json!({"room": "r"})).await;
    assert_eq!(listed["entries"].as_array().unwrap().len(), LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_participants_leave_and_its_clients_resume_elsewhere() {
    let mut server = TestServer::cluster(3, "");
    let alice = Client::join(&server.node_url(0), &Token::new("r", "alice")).await;
    // bob knows only node 1; carol may move on to node 2.
    let bob = Client::join(&server.node_url(1), &Token::new("r", "bob")).await;
    let carol = Client::join_with_options(
        &server.node_url(1),
        &Token::new("r", "carol").sign(),
        ConnectOptions {
            fallback_urls: vec![server.node_url(2)],
            ..fast_options()
        },
    )
    .await
    .unwrap();
    let session = carol.room.session_id();
    let carol_sees = carol.observe(&["spotlight"]);
    carol_sees
        .wait_for(Heard::Key("spotlight".into(), None))
        .await;
    alice
        .store()
        .set("spotlight", json!("alice"))
        .await
        .unwrap();
    carol_sees
        .wait_for(Heard::Key("spotlight".into(), Some(json!("alice"))))
        .await;

    let killed = Instant::now();
    server.kill_node(1);
    alice.heard.wait_for(Heard::Left("bob".into())).await;
    println!(
        "bob's departure reached alice {:?} after node 1 died",
        killed.elapsed()
    );

    carol
        .heard
        .wait_until("carol to be connected again", |heard| {
            heard
                .iter()
                .rev()
                .find_map(|heard| match heard {
                    Heard::Connection(state) => Some(state.clone()),
                    _ => None,
                })
                .is_some_and(|state| state == ConnectionState::Connected)
                && heard.contains(&Heard::Connection(ConnectionState::Reconnecting))
        })
        .await;
    assert_eq!(
        carol.room.session_id(),
        session,
        "carol resumed on node 2, in the same session"
    );
    alice
        .store()
        .set("spotlight", json!("carol"))
        .await
        .unwrap();
    carol_sees
        .wait_for(Heard::Key("spotlight".into(), Some(json!("carol"))))
        .await;
    assert_eq!(
        carol_sees.values("spotlight"),
        vec![None, Some(json!("alice")), Some(json!("carol"))],
        "every change exactly once across the move"
    );
    carol.store().set("hand", json!(true)).await.unwrap();
    assert_eq!(
        alice.store().get("hand").await.unwrap().unwrap().value,
        json!(true)
    );
    assert!(
        !alice.heard.heard().contains(&Heard::Left("carol".into())),
        "carol resumed, she did not leave"
    );
    drop(bob);
}

/// A node frozen past the timeout is taken for dead and its participants are removed.
/// When it thaws it learns so from the room's log: its participant, removed meanwhile,
/// is closed with `unavailable`, joins again and hears what is written after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_taken_for_dead_while_frozen_closes_its_participants_when_it_thaws() {
    let server = TestServer::cluster(2, "");
    let alice = Client::join(&server.node_url(0), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.node_url(1), &Token::new("r", "bob")).await;
    let bob_sees = bob.observe(&["k"]);
    bob_sees.wait_for(Heard::Key("k".into(), None)).await;
    server.freeze(1, true);
    alice.heard.wait_for(Heard::Left("bob".into())).await;
    let joins_before = alice
        .heard
        .heard()
        .iter()
        .filter(|heard| **heard == Heard::Joined("bob".into()))
        .count();
    server.freeze(1, false);
    bob.heard
        .wait_for(Heard::Connection(ConnectionState::Reconnecting))
        .await;
    alice
        .heard
        .wait_until("bob to join again", |heard| {
            heard
                .iter()
                .filter(|heard| **heard == Heard::Joined("bob".into()))
                .count()
                > joins_before
        })
        .await;
    alice.store().set("k", json!("after")).await.unwrap();
    bob_sees
        .wait_for(Heard::Key("k".into(), Some(json!("after"))))
        .await;
}

/// Snapshots are spaced by their size, but a small room still gets one every 256 entries:
/// its log in Redis does not grow for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_trim_a_busy_room_s_log() {
    const WRITES: usize = 300;
    let server = TestServer::cluster(2, "");
    let writer = Client::join(&server.node_url(0), &Token::new("r", "writer")).await;
    let redis = redis::Client::open(server.redis.as_ref().unwrap().url()).unwrap();
    let mut redis = redis.get_multiplexed_async_connection().await.unwrap();
    let mut logged = async || -> usize {
        redis::cmd("XLEN")
            .arg("roomstate:{room:r}:log")
            .query_async(&mut redis)
            .await
            .unwrap()
    };
    for n in 0..WRITES {
        writer.store().set("n", json!(n)).await.unwrap();
        if n == 10 {
            assert!(
                logged().await > 10,
                "the log holds the writes until a snapshot"
            );
        }
    }
    // The snapshot is saved in the background.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let logged = logged().await;
        if logged < WRITES {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{logged} entries still logged after {WRITES} writes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection's requests do not wait for each other's trip to Redis: sent back to
/// back, they are appended together (a few script calls for hundreds of writes), and
/// still applied, answered and delivered in the order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_are_appended_together_in_the_order_sent() {
    const WRITES: u64 = 300;
    let (server, mut writer, mut redis) = pipelining_writer(PATIENT_REDIS_CALLS).await;
    let reader = Client::join(&server.node_url(1), &Token::new("r", "reader")).await;
    let seen = reader.observe(&["n"]);
    seen.wait_for(Heard::Key("n".into(), None)).await;
    let script_calls_before = script_calls(&mut redis).await;
    // Redis holds writes for a moment (well within the nodes' timeout): the first
    // append waits, and the writes that follow queue behind it.
    pause_writes(&mut redis, 200).await;
    send_sets(&mut writer, WRITES).await;
    let mut answered = Vec::new();
    while answered.len() < WRITES as usize {
        if let ServerMessage::Reply(reply) = next(&mut writer).await {
            assert!(matches!(reply.outcome, Outcome::Ok(_)), "{reply:?}");
            answered.push(reply.id);
        }
    }
    assert_eq!(
        answered,
        (1..=WRITES).collect::<Vec<_>>(),
        "answered in order"
    );
    seen.wait_for(Heard::Key("n".into(), Some(json!(WRITES))))
        .await;
    let expected: Vec<Option<Value>> = std::iter::once(None)
        .chain((1..=WRITES).map(|n| Some(json!(n))))
        .collect();
    assert_eq!(seen.values("n"), expected, "in order, exactly once");
    let calls = script_calls(&mut redis).await - script_calls_before;
    assert!(
        calls < WRITES / 10,
        "{WRITES} writes took {calls} script calls (appends and snapshots)"
    );
}

/// When Redis stops answering, a room's queued writes are refused after one timeout,
/// not one timeout per batch: the batch in flight is answered `outcome_unknown`, every
/// write queued behind it `unavailable`, and only the former can have been stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_behind_a_failed_append_are_refused_with_it() {
    const WRITES: u64 = 600; // the first batch, then at least two more of 256
    let (server, mut writer, mut redis) = pipelining_writer("").await;
    // Longer than two of the nodes' 500 ms timeouts, shorter than three: were the writes
    // behind a failed call not refused with it, the batch after it would time out too,
    // and the one after that would be stored and acknowledged.
    pause_writes(&mut redis, 1200).await;
    send_sets(&mut writer, WRITES).await;
    // Each answer says whether that write may still have been stored.
    let mut maybe_stored = std::collections::HashMap::new();
    while (maybe_stored.len() as u64) < WRITES {
        if let ServerMessage::Reply(reply) = next(&mut writer).await {
            let Outcome::Error(error) = reply.outcome else {
                panic!("write {} stored while Redis was paused", reply.id);
            };
            let unknown = match error.code {
                ErrorCode::OutcomeUnknown => {
                    assert!(
                        error.message.contains("may still have been stored"),
                        "{error:?}"
                    );
                    true
                }
                ErrorCode::Unavailable => {
                    assert!(error.message.contains("nothing was changed"), "{error:?}");
                    false
                }
                other => panic!("write {}: {other:?}", reply.id),
            };
            maybe_stored.insert(reply.id, unknown);
        }
    }
    // Once Redis is back, at most the batch that was in flight may have been stored.
    wait_for_writes(&mut redis).await;
    let reader = Client::join(&server.node_url(1), &Token::new("r", "reader")).await;
    let read = reader.store().read("n").await.unwrap();
    assert!(!read.may_be_stale);
    if let Some(entry) = read.entry {
        let id = entry.value.as_u64().unwrap();
        assert!(
            maybe_stored[&id],
            "write {id} was stored but its answer said nothing was changed"
        );
    }
    let unknown = maybe_stored.values().filter(|&&unknown| unknown).count();
    assert!(
        (1..=256).contains(&unknown),
        "{unknown} answers say the write may have been stored: the batch in flight was 1 to 256"
    );
}

/// A node's rooms together queue at most `queue_bytes` for Redis: while Redis holds
/// writes, connections pipelining more in two rooms are not read past it, and once
/// Redis is back every write is stored and answered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_s_rooms_together_queue_at_most_its_queue_bytes() {
    const QUEUE_BYTES: u64 = 64 << 10;
    const WRITES: u64 = 150; // in each of two rooms, of about 1 KiB each
    let server = TestServer::cluster_with_redis_settings(
        2,
        "client_requests_per_second = 100000\n[limits]\nframe_bytes = 16384",
        &format!("queue_bytes = {QUEUE_BYTES}\n{PATIENT_REDIS_CALLS}"),
    );
    let node = server.node_url(0);
    let writers = [
        raw_join_room_at(&node, "a", "writer").await,
        raw_join_room_at(&node, "b", "writer").await,
    ];
    let redis = redis::Client::open(server.redis.as_ref().unwrap().url()).unwrap();
    let mut redis = redis.get_multiplexed_async_connection().await.unwrap();
    // Held well within the nodes' timeout (Redis ends a pause on its next event-loop
    // pass, up to 100 ms late): the first appends wait, the rest queue.
    pause_writes(&mut redis, 250).await;
    let writers = writers.map(|mut socket| {
        tokio::spawn(async move {
            let pad = "x".repeat(1000);
            for n in 1..=WRITES {
                let value = json!({ "n": n, "pad": pad });
                let set = json!({"type": "set", "id": n, "key": "n", "value": value});
                socket.feed(Message::text(set.to_string())).await.unwrap();
            }
            socket.flush().await.unwrap();
            let mut answered = Vec::new();
            while answered.len() < WRITES as usize {
                if let ServerMessage::Reply(reply) = next(&mut socket).await {
                    assert!(matches!(reply.outcome, Outcome::Ok(_)), "{reply:?}");
                    answered.push(reply.id);
                }
            }
            answered
        })
    });
    // The queue, watched for as long as writes are outstanding.
    let node_http = server.node_http_url(0);
    let mut most_queued = 0;
    while !writers.iter().all(|writer| writer.is_finished()) {
        let queued = metric(&node_http, "roomstate_append_queue_bytes").await;
        most_queued = most_queued.max(queued);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        most_queued <= QUEUE_BYTES,
        "{most_queued} bytes queued; at most {QUEUE_BYTES}"
    );
    assert!(
        most_queued >= QUEUE_BYTES / 2,
        "only {most_queued} bytes queued: the writes did not fill the queue"
    );
    for writer in writers {
        assert_eq!(
            writer.await.unwrap(),
            (1..=WRITES).collect::<Vec<_>>(),
            "every write answered Ok, in order"
        );
    }
}

/// A write whose append Redis holds past the node's timeout fails `OutcomeUnknown`,
/// in the engine and on the server API; once Redis runs it, the change is there for
/// everyone, and the writer's later requests are answered as usual (the late reply to
/// the failed one is ignored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_redis_holds_past_the_timeout_has_an_unknown_outcome_and_may_land() {
    let server = TestServer::cluster(2, "");
    let alice = Client::join(&server.node_url(0), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.node_url(1), &Token::new("r", "bob")).await;
    let bob_sees = bob.observe(&["pinned", "api"]);
    bob_sees.wait_for(Heard::Key("pinned".into(), None)).await;
    let redis = redis::Client::open(server.redis.as_ref().unwrap().url()).unwrap();
    let mut redis = redis.get_multiplexed_async_connection().await.unwrap();

    let writes_before = [
        store_writes(&server.node_http_url(0)).await,
        store_writes(&server.node_http_url(1)).await,
    ];
    // Held for longer than the nodes' 500 ms timeout: the append times out, then runs.
    pause_writes(&mut redis, 1200).await;
    let failed = alice.store().set("pinned", json!("held")).await;
    assert!(
        matches!(failed, Err(RoomError::OutcomeUnknown { .. })),
        "{failed:?}"
    );
    bob_sees
        .wait_for(Heard::Key("pinned".into(), Some(json!("held"))))
        .await;
    // The node that appended it applies it as its own, late: it counts it (and would
    // send its webhooks, or start a joiner's grace period), once in the cluster.
    let deadline = Instant::now() + PATIENCE;
    while store_writes(&server.node_http_url(0)).await == writes_before[0] {
        assert!(
            Instant::now() < deadline,
            "the held write was never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        [
            store_writes(&server.node_http_url(0)).await,
            store_writes(&server.node_http_url(1)).await
        ],
        [writes_before[0] + 1, writes_before[1]]
    );
    alice.store().set("pinned", json!("next")).await.unwrap();
    assert_eq!(
        alice.store().get("pinned").await.unwrap().unwrap().value,
        json!("next")
    );

    // The node's heartbeat may be paused ahead of the call's catch-up read, which then
    // times out: 503, nothing changed. Tried again after the pause.
    let mut attempts = 0;
    let (status, body, response_headers) = loop {
        attempts += 1;
        assert!(attempts <= 5, "the catch-up read timed out every time");
        pause_writes(&mut redis, 1200).await;
        let response = reqwest::Client::new()
            .post(format!(
                "{}/twirp/roomstate.SessionStore/Set",
                server.node_http_url(1)
            ))
            .bearer_auth(admin_token("r"))
            .json(&json!({"room": "r", "key": "api", "value": 1}))
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let body: Value = response.json().await.unwrap();
        if status.as_u16() != 503 {
            break (status, body, headers);
        }
        assert_eq!(
            body["meta"]["roomstate_code"],
            json!("unavailable"),
            "{body}"
        );
        wait_for_writes(&mut redis).await;
    };
    assert_eq!(status.as_u16(), 408, "{body}");
    assert_eq!(
        response_headers
            .get("retry-after")
            .map(|value| value.as_bytes()),
        Some(&b"1"[..]),
        "so that HTTP clients do not repeat it by themselves"
    );
    assert_eq!(body["code"], json!("deadline_exceeded"), "{body}");
    assert_eq!(
        body["meta"]["roomstate_code"],
        json!("outcome_unknown"),
        "{body}"
    );
    bob_sees
        .wait_for(Heard::Key("api".into(), Some(json!(1))))
        .await;
    assert_eq!(
        bob_sees.values("pinned"),
        vec![None, Some(json!("held")), Some(json!("next"))],
        "each change heard once"
    );
}

/// A client that sends requests and closes at once still gets every answer before the
/// server's close frame, although in a cluster the requests were still on their way to
/// Redis when the close arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_just_before_a_close_are_answered_before_the_close_frame() {
    const WRITES: u64 = 50;
    let (_server, mut writer, mut redis) = pipelining_writer(PATIENT_REDIS_CALLS).await;
    pause_writes(&mut redis, 200).await;
    send_sets(&mut writer, WRITES).await;
    writer.send(Message::Close(None)).await.unwrap();
    let mut answered = 0;
    loop {
        let frame = tokio::time::timeout(PATIENCE, writer.next()).await.unwrap();
        match frame {
            Some(Ok(Message::Text(text))) => {
                if let ServerMessage::Reply(reply) = serde_json::from_str(text.as_str()).unwrap() {
                    assert!(matches!(reply.outcome, Outcome::Ok(_)), "{reply:?}");
                    answered += 1;
                }
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }
    assert_eq!(answered, WRITES, "answers before the close frame");
}

/// The nodes' timeout of a Redis call in tests that pause Redis for a moment and expect
/// every write through: the suite's 500 ms would leave a loaded machine little margin
/// over a 200 ms pause that Redis may end 100 ms late.
const PATIENT_REDIS_CALLS: &str = "timeout_ms = 5000";

/// Two nodes, a raw client "writer" in room "r" on the first (read as fast as it
/// sends: the default budget of 200 requests a second would space its writes), and a
/// connection to their Redis.
async fn pipelining_writer(
    redis_settings: &str,
) -> (TestServer, RawSocket, redis::aio::MultiplexedConnection) {
    let server = TestServer::cluster_with_redis_settings(
        2,
        "client_requests_per_second = 100000",
        redis_settings,
    );
    let writer = raw_join_at(&server.node_url(0), "writer").await;
    let redis = redis::Client::open(server.redis.as_ref().unwrap().url()).unwrap();
    let redis = redis.get_multiplexed_async_connection().await.unwrap();
    (server, writer, redis)
}

/// Makes Redis hold every write command (scripts included) for `ms`.
async fn pause_writes(redis: &mut redis::aio::MultiplexedConnection, ms: u64) {
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query_async::<()>(redis)
        .await
        .unwrap();
}

/// A node's count of store writes it appended.
async fn store_writes(node_http_url: &str) -> u64 {
    metric(node_http_url, "roomstate_store_writes_total").await
}

/// Waits until Redis runs writes again (a write of ours waits for that).
async fn wait_for_writes(redis: &mut redis::aio::MultiplexedConnection) {
    let deadline = Instant::now() + PATIENCE;
    while let Err(error) = redis::cmd("SET")
        .arg("unpaused")
        .arg(1)
        .query_async::<()>(redis)
        .await
    {
        assert!(Instant::now() < deadline, "redis still paused: {error}");
    }
}

/// Sends `count` writes of key "n" back to back, without waiting for answers: request
/// `i` (from 1) sets the value `i`.
async fn send_sets(socket: &mut RawSocket, count: u64) {
    for n in 1..=count {
        let set = format!(r#"{{"type":"set","id":{n},"key":"n","value":{n}}}"#);
        socket.feed(Message::text(set)).await.unwrap();
    }
    socket.flush().await.unwrap();
}

/// How many scripts Redis has run (appends, snapshots).
async fn script_calls(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .unwrap();
    stats
        .lines()
        .filter_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_misses_published_entries_catches_up_from_the_log() {
    const WRITES: u64 = 300; // past a snapshot, so the log is trimmed on the way
    let server = TestServer::cluster(2, "");
    let writer = Client::join(&server.node_url(0), &Token::new("r", "writer")).await;
    let reader = Client::join(&server.node_url(1), &Token::new("r", "reader")).await;
    let seen = reader.observe(&["n"]);
    seen.wait_for(Heard::Key("n".into(), None)).await;
    let redis = redis::Client::open(server.redis.as_ref().unwrap().url()).unwrap();
    let mut redis = redis.get_multiplexed_async_connection().await.unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    // Cuts every subscription connection, again and again, while the writes go on.
    let cutter = tokio::spawn(async move {
        let mut cuts = 0;
        while !*stopped.borrow_and_update() {
            let killed: u64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut redis)
                .await
                .unwrap();
            cuts += killed;
            let _ = tokio::time::timeout(Duration::from_millis(30), stopped.changed()).await;
        }
        cuts
    });
    for n in 0..WRITES {
        writer.store().set("n", json!(n)).await.unwrap();
    }
    seen.wait_for(Heard::Key("n".into(), Some(json!(WRITES - 1))))
        .await;
    stop.send(true).unwrap();
    let cuts = cutter.await.unwrap();
    let expected: Vec<Option<Value>> = std::iter::once(None)
        .chain((0..WRITES).map(|n| Some(json!(n))))
        .collect();
    assert_eq!(seen.values("n"), expected, "in order, exactly once");
    assert!(cuts > 1, "the subscriptions were cut {cuts} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_during_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start_durable(dir.path());
    let mut server = TestServer::cluster_on(2, "[limits]\nkeys = 1000", redis);
    let alice = Client::join(&server.node_url(0), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.node_url(1), &Token::new("r", "bob")).await;
    alice.store().set("before", json!(1)).await.unwrap();

    // Each writer writes a new key every 10 ms until told to stop, counting refusals.
    let refused: Arc<[AtomicUsize; 2]> = Arc::default();
    let acknowledged_count: Arc<[AtomicUsize; 2]> = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writers = [&alice, &bob].into_iter().enumerate().map(|(w, client)| {
        let store = client.store();
        let name = client.room.local_participant().info().unwrap().identity;
        let (refused, acknowledged_count, stopped) =
            (refused.clone(), acknowledged_count.clone(), stopped.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0.. {
                if *stopped.borrow() {
                    break;
                }
                let key = format!("{name}-{n}");
                match store.set(&key, json!(n)).await {
                    Ok(_) => {
                        acknowledged.push(key);
                        acknowledged_count[w].fetch_add(1, Ordering::SeqCst);
                    }
                    // Not acknowledged: Redis was down, or went down during the call.
                    Err(RoomError::Unavailable { .. } | RoomError::OutcomeUnknown { .. }) => {
                        refused[w].fetch_add(1, Ordering::SeqCst);
                    }
                    Err(other) => panic!("{key}: unexpected error {other}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acknowledged
        })
    });
    let writers: Vec<_> = writers.collect();
    let both = |counts: &Arc<[AtomicUsize; 2]>, at_least: usize| {
        counts
            .iter()
            .all(|count| count.load(Ordering::SeqCst) >= at_least)
    };
    wait_until("writes before the outage", &|| {
        both(&acknowledged_count, 20)
    })
    .await;

    let fresh = bob.store().read("before").await.unwrap();
    assert!(!fresh.may_be_stale, "{fresh:?}");

    server.redis.as_mut().unwrap().stop();
    wait_until("both nodes to refuse writes", || both(&refused, 3)).await;
    // The engine's read says so too: bob's node answered from its copy.
    let read = bob.store().read("before").await.unwrap();
    assert_eq!(read.entry.unwrap().value, json!(1));
    assert!(read.may_be_stale, "a read while Redis is down may be stale");
    // Meanwhile a node answers reads from its own copy, and says so.
    let read = store_api(
        &server.node_http_url(1),
        "Get",
        json!({"room": "r", "key": "before"}),
    )
    .await;
    assert_eq!(read["entry"]["value"], json!(1), "{read}");
    assert_eq!(read["stale"], json!(true), "{read}");

    server.redis.as_mut().unwrap().resume();
    let after_outage: Vec<usize> = acknowledged_count
        .iter()
        .map(|count| count.load(Ordering::SeqCst))
        .collect();
    wait_until("writes to succeed again once Redis is back", || {
        acknowledged_count
            .iter()
            .zip(&after_outage)
            .all(|(count, before)| count.load(Ordering::SeqCst) >= before + 20)
    })
    .await;
    stop.send(true).unwrap();
    let mut all_acknowledged = Vec::new();
    for writer in writers {
        all_acknowledged.extend(writer.await.unwrap());
    }
    for node in 0..2 {
        let listed = store_api(&server.node_http_url(node), "List", json!({"room": "r"})).await;
        let keys: Vec<&str> = listed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["key"].as_str().unwrap())
            .collect();
        for key in &all_acknowledged {
            assert!(
                keys.contains(&key.as_str()),
                "{key} was acknowledged and lost on node {node}"
            );
        }
        assert!(keys.contains(&"before"));
    }
    // Both clients stayed in the room through the outage.
    assert!(!alice.heard.heard().contains(&Heard::Left("bob".into())));
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
