//! A phone's life: what the engine holds after a room ends, cancelled calls, tokens that
//! expire mid-session, links cut for longer than the grace period, and `reconnect_now`.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use roomstate::{
    ConnectionState, DisconnectReason, KeyChangeListener, Room, RoomError, RoomListener,
    SessionStore, StoreEntry,
};
use roomstate_server::auth::unix_now;
use serde_json::json;

use crate::harness::{fast_options, Client, Heard, Proxy, Recorder, TestServer, Token, PATIENCE};
use crate::server_api::{admin_token, post_json};

/// The pattern 100ms's docs show: a listener that keeps the store it was given, and a
/// key listener that keeps it too. Both close a loop through the engine.
#[derive(Default)]
struct KeepsTheStore {
    store: Mutex<Option<SessionStore>>,
    heard: Recorder,
}

impl RoomListener for KeepsTheStore {
    fn on_session_store_available(&self, store: SessionStore) {
        *self.store.lock() = Some(store);
    }
    fn on_connection_state_changed(&self, state: ConnectionState) {
        self.heard.on_connection_state_changed(state);
    }
}

impl KeyChangeListener for KeepsTheStore {
    fn on_key_changed(&self, key: String, entry: Option<StoreEntry>) {
        self.heard.on_key_changed(key, entry);
    }
}

/// Joins with a listener that keeps the store, and a key listener that does too; returns
/// the room and weak references to both listeners.
async fn join_keeping_the_store(
    url: &str,
    token: &Token,
) -> (Room, Weak<KeepsTheStore>, Weak<KeepsTheStore>) {
    let listener = Arc::new(KeepsTheStore::default());
    let room = Room::connect(url, &token.sign(), listener.clone(), fast_options())
        .await
        .unwrap();
    let key_listener = Arc::new(KeepsTheStore::default());
    *key_listener.store.lock() = Some(room.session_store());
    room.session_store()
        .add_key_change_listener(vec!["pinned".into()], key_listener.clone())
        .unwrap();
    key_listener
        .heard
        .wait_for(Heard::Key("pinned".into(), None))
        .await;
    assert!(listener.store.lock().is_some(), "it was given the store");
    (
        room,
        Arc::downgrade(&listener),
        Arc::downgrade(&key_listener),
    )
}

async fn until_released(what: &str, listener: &Weak<KeepsTheStore>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while listener.strong_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the engine still holds the {what} {PATIENCE:?} after the room ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_lets_go_of_the_app_s_listeners_when_the_room_ends() {
    let server = TestServer::start();
    // Left with `disconnect`, and kept by the app afterwards.
    let (alice, alice_listener, alice_key_listener) =
        join_keeping_the_store(&server.url(), &Token::new("r", "alice")).await;
    // Removed by the server API, and never disconnected by the app.
    let (bob, bob_listener, bob_key_listener) =
        join_keeping_the_store(&server.url(), &Token::new("r", "bob")).await;

    alice.disconnect().await;
    until_released("room listener", &alice_listener).await;
    until_released("key listener", &alice_key_listener).await;

    let rooms = server.room_service();
    rooms.remove_participant("r", "bob").await.unwrap();
    until_released("room listener", &bob_listener).await;
    until_released("key listener", &bob_key_listener).await;
    assert_eq!(
        bob.connection_state(),
        ConnectionState::Disconnected {
            reason: DisconnectReason::Removed
        }
    );
    // The room and its store still answer, as ended.
    assert!(alice.session_store().set("pinned", json!(1)).await.is_err());
    assert!(bob
        .session_store()
        .add_key_change_listener(vec!["pinned".into()], Recorder::new())
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_call_a_listener_hears_is_disconnected() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let watcher = alice.observe(&["pinned"]);
    alice.store().set("pinned", json!("bye")).await.unwrap();
    alice.room.disconnect().await;
    alice.store().ended().await;
    let heard = alice.heard.heard();
    assert_eq!(
        heard.last(),
        Some(&Heard::Connection(ConnectionState::Disconnected {
            reason: DisconnectReason::ClientRequested
        }))
    );
    assert_eq!(watcher.values("pinned"), vec![None, Some(json!("bye"))]);
}

/// Leaving is said, not left to the grace period: two `disconnect`s at once both wait
/// for it (before, the second shut the engine down under the first), and a write in
/// flight is answered with what the server did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_says_leave_even_when_called_twice_at_once() {
    // Longer than the test's patience: only alice's `leave` makes bob hear her go.
    let server = TestServer::with_config("reconnect_grace_ms = 600000");
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let times = |heard: &[Heard], event: Heard| heard.iter().filter(|h| **h == event).count();
    for round in 0..5 {
        let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
        bob.heard
            .wait_until("alice joined", |heard| {
                times(heard, Heard::Joined("alice".into())) == round + 1
            })
            .await;
        let store = alice.store();
        let key = format!("k{round}");
        let write = tokio::spawn({
            let key = key.clone();
            async move { store.set(&key, json!(round)).await }
        });
        tokio::join!(alice.room.disconnect(), alice.room.disconnect());
        bob.heard
            .wait_until("alice left", |heard| {
                times(heard, Heard::Left("alice".into())) == round + 1
            })
            .await;
        // Either answer is possible (the write may not have been sent before the
        // leave); whichever it is, it is the truth.
        let stored = bob
            .store()
            .get(&key)
            .await
            .unwrap()
            .map(|entry| entry.value);
        match write.await.unwrap() {
            Ok(_) => assert_eq!(stored, Some(json!(round)), "acknowledged, so applied"),
            Err(RoomError::NotConnected { .. }) => {
                assert_eq!(stored, None, "refused, so not applied")
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// Cuts `client`'s link through `proxy`, refusing new ones, until it knows.
async fn cut_off(proxy: &Proxy, client: &Client) {
    proxy.refuse(true);
    proxy.cut();
    client
        .heard
        .wait_for(Heard::Connection(ConnectionState::Reconnecting))
        .await;
}

/// A server, a proxy in front of it, alice through the proxy and bob straight in.
async fn alice_behind_a_proxy() -> (TestServer, Proxy, Client, Client) {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr).await;
    let alice = Client::join(&proxy.url(), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    (server, proxy, alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_write_that_was_not_sent_is_never_applied() {
    let (_server, proxy, alice, bob) = alice_behind_a_proxy().await;

    cut_off(&proxy, &alice).await;
    // The app gives up on one write (its coroutine or Task is cancelled) and keeps the
    // other; neither could be sent while the link is down.
    let store = alice.store();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        store.set("cancelled", json!("never")),
    )
    .await;
    assert!(cancelled.is_err(), "the write could not finish offline");
    let kept = tokio::spawn({
        let store = alice.store();
        async move { store.set("kept", json!("sent")).await }
    });
    proxy.refuse(false);
    kept.await
        .unwrap()
        .expect("the kept write is sent on resume");
    assert_eq!(
        bob.store()
            .get("kept")
            .await
            .unwrap()
            .map(|entry| entry.value),
        Some(json!("sent"))
    );
    assert_eq!(bob.store().get("cancelled").await.unwrap(), None);
}

/// A write the server applied but whose answer the link lost, when the app leaves before
/// the engine could ask again: the call must not say `NotConnected` (nothing was sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_and_unanswered_when_the_app_leaves_fails_as_connection_lost() {
    let (_server, proxy, alice, bob) = alice_behind_a_proxy().await;
    let watcher = bob.observe(&["sent"]);
    watcher.wait_for(Heard::Key("sent".into(), None)).await;

    // The write reaches the server; its answer does not come back.
    proxy.stall(true);
    let write = tokio::spawn({
        let store = alice.store();
        async move { store.set("sent", json!("applied")).await }
    });
    watcher
        .wait_for(Heard::Key("sent".into(), Some(json!("applied"))))
        .await;
    cut_off(&proxy, &alice).await;
    alice.room.disconnect().await;

    match write.await.unwrap() {
        Err(RoomError::ConnectionLost) => {}
        other => panic!("expected ConnectionLost for a write the server applied, got {other:?}"),
    }
}

/// Writes pipelined while the server API removes their author: each one is answered
/// with the truth. The server answers every write it applied before its goodbye, so one
/// refused as `NotConnected` was not applied, and the link stayed up, so none is left
/// unknown (`ConnectionLost`). Alice's connection is read at 20 requests a second past a
/// first 20, so the removal (milliseconds after the first answer; seconds on a loaded
/// machine) comes while most of the 400 writes are on their way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_flight_when_their_author_is_removed_are_answered_with_the_truth() {
    let server = TestServer::with_config("client_requests_per_second = 20\n[limits]\nkeys = 1000");
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let refused = removed_while_writing(&server, &alice, 400).await;
    assert!(
        refused > 0,
        "the removal came before the last of 400 writes"
    );
}

/// The same through a proxy that closes both ways as soon as the server's side closes,
/// as a load balancer may, with the server reading as fast as alice writes: alice's
/// writes still coming make that close a reset, her next write fails, and the goodbye is
/// still unread in her socket. Every answer must still be the truth, and the room end as
/// removed, not be joined anew as after a lost link. Whether a write comes first is up
/// to timing: in every run before the engine read on after a failed send, one did (this
/// test failed 7 runs of 7 without it), but a run where the goodbye is read first passes
/// without that path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goodbye_behind_a_failed_write_still_ends_the_room() {
    let server = TestServer::with_config("[limits]\nkeys = 5000");
    let proxy = Proxy::start(server.addr).await;
    let alice = Client::join(&proxy.url(), &Token::new("r", "alice")).await;
    removed_while_writing(&server, &alice, 2000).await;
}

/// With bob in the room, alice writes `w0`, then pipelines `w1`, `w2`, ... (`count` writes
/// in all) and is removed by the server API meanwhile. Checks each answer against the
/// store; returns how many were refused.
async fn removed_while_writing(server: &TestServer, alice: &Client, count: usize) -> usize {
    // Bob keeps the session (and its store) alive once alice is gone.
    let _bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    alice
        .store()
        .set("w0", json!(0))
        .await
        .expect("the first write, before the removal");
    let writes: Vec<_> = (1..count)
        .map(|i| {
            let store = alice.store();
            tokio::spawn(async move { store.set(&format!("w{i}"), json!(i)).await })
        })
        .collect();
    let rooms = server.room_service();
    rooms.remove_participant("r", "alice").await.unwrap();

    let mut fates = Vec::new();
    for write in writes {
        fates.push(write.await.unwrap());
    }
    let (_, listed) = post_json(
        server,
        "roomstate.SessionStore/List",
        &admin_token("r"),
        json!({"room": "r"}),
    )
    .await;
    let stored: HashMap<&str, &serde_json::Value> = listed["entries"]
        .as_array()
        .expect("the store's entries")
        .iter()
        .map(|entry| (entry["key"].as_str().unwrap(), &entry["value"]))
        .collect();
    let mut refused = 0;
    for (i, fate) in (1..).zip(fates) {
        let stored = stored.get(format!("w{i}").as_str()).copied().cloned();
        match fate {
            Ok(_) => assert_eq!(stored, Some(json!(i)), "w{i} acknowledged, so applied"),
            Err(RoomError::NotConnected { .. }) => {
                refused += 1;
                assert_eq!(stored, None, "w{i} refused, so not applied")
            }
            Err(other) => panic!("w{i}: unexpected {other:?}"),
        }
    }
    // Removed, not taken for a lost link and joined anew.
    assert_eq!(
        alice.room.connection_state(),
        ConnectionState::Disconnected {
            reason: DisconnectReason::Removed
        }
    );
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_away_longer_than_the_grace_period_comes_back_as_a_new_join() {
    let server = TestServer::with_config("reconnect_grace_ms = 300");
    let proxy = Proxy::start(server.addr).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let alice = Client::join(&proxy.url(), &Token::new("r", "alice")).await;
    let old_sid = alice.room.local_participant().info().unwrap().sid;
    bob.store().set("pinned", json!("before")).await.unwrap();
    let pinned = alice.observe(&["pinned"]);
    pinned
        .wait_for(Heard::Key("pinned".into(), Some(json!("before"))))
        .await;

    proxy.refuse(true);
    proxy.cut();
    bob.heard.wait_for(Heard::Left("alice".into())).await;
    bob.store()
        .set("pinned", json!("while away"))
        .await
        .unwrap();
    proxy.refuse(false);

    pinned
        .wait_for(Heard::Key("pinned".into(), Some(json!("while away"))))
        .await;
    alice
        .heard
        .wait_until("a second on_session_store_available", |heard| {
            heard
                .iter()
                .filter(|h| **h == Heard::StoreAvailable)
                .count()
                == 2
        })
        .await;
    bob.heard.wait_for(Heard::Joined("alice".into())).await;
    assert_ne!(alice.room.local_participant().info().unwrap().sid, old_sid);
    assert_eq!(alice.room.session_id(), bob.room.session_id());
    assert_eq!(
        pinned.values("pinned"),
        vec![Some(json!("before")), Some(json!("while away"))],
        "each value once, the missed one after the rejoin"
    );
}

/// Leeway the server gives `exp` (crates/server/src/auth.rs), plus a second.
const PAST_LEEWAY_SECS: u64 = 11;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_resumes_but_joins_anew_only_once_replaced() {
    let server = TestServer::with_config("reconnect_grace_ms = 300");
    let expires = unix_now() + 1;
    let expiring =
        |identity: &str| Token::new("r", identity).with(|claims| claims.exp = Some(expires));
    let alice_proxy = Proxy::start(server.addr).await;
    let carol_proxy = Proxy::start(server.addr).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let alice = Client::join(&alice_proxy.url(), &expiring("alice")).await;
    let carol = Client::join(&carol_proxy.url(), &expiring("carol")).await;
    let carol_pinned = carol.observe(&["pinned"]);
    let alice_sid = alice.room.local_participant().info().unwrap().sid;
    while unix_now() <= expires + PAST_LEEWAY_SECS {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A short cut: the resume token proves who it is, and the expired token does not
    // matter.
    alice_proxy.cut();
    alice
        .heard
        .wait_until("a resume after the token expired", |heard| {
            heard
                .iter()
                .filter(|h| **h == Heard::Connection(ConnectionState::Connected))
                .count()
                == 2
        })
        .await;
    assert_eq!(
        alice.room.local_participant().info().unwrap().sid,
        alice_sid
    );
    alice.store().set("resumed", json!(true)).await.unwrap();

    // Away past the grace period: joining anew takes a token that has not expired.
    // Carol's app gave the engine one in time; Alice's did not.
    carol.room.update_token(&Token::new("r", "carol").sign());
    for proxy in [&alice_proxy, &carol_proxy] {
        proxy.refuse(true);
        proxy.cut();
    }
    bob.heard.wait_for(Heard::Left("alice".into())).await;
    bob.heard.wait_for(Heard::Left("carol".into())).await;
    bob.store()
        .set("pinned", json!("while away"))
        .await
        .unwrap();
    for proxy in [&alice_proxy, &carol_proxy] {
        proxy.refuse(false);
    }

    let reason = alice.store().ended().await;
    match reason {
        DisconnectReason::TokenRefused { message } => {
            assert!(message.contains("expired"), "{message}")
        }
        other => panic!("expected TokenRefused, got {other:?}"),
    }
    carol_pinned
        .wait_for(Heard::Key("pinned".into(), Some(json!("while away"))))
        .await;
    bob.heard.wait_for(Heard::Joined("carol".into())).await;
    assert_eq!(carol.room.connection_state(), ConnectionState::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_now_skips_the_backoff() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr).await;
    // A backoff far longer than the test waits: only `reconnect_now` can bring it back.
    let mut options = fast_options();
    options.reconnect_backoff_min = Duration::from_secs(120);
    options.reconnect_backoff_max = Duration::from_secs(120);
    let alice = Client::join_with_options(&proxy.url(), &Token::new("r", "alice").sign(), options)
        .await
        .unwrap();
    let sid = alice.room.local_participant().info().unwrap().sid;
    let connected = |count: usize| {
        move |heard: &[Heard]| {
            heard
                .iter()
                .filter(|h| **h == Heard::Connection(ConnectionState::Connected))
                .count()
                == count
        }
    };

    // The network changed and the old link is gone: resume at once.
    proxy.cut();
    alice
        .heard
        .wait_for(Heard::Connection(ConnectionState::Reconnecting))
        .await;
    alice.room.reconnect_now();
    alice.heard.wait_until("a resume", connected(2)).await;

    // The OS says the network changed while the link still looks fine: the engine drops
    // it and resumes, and writes go on.
    alice.room.reconnect_now();
    alice
        .heard
        .wait_until("a second resume", connected(3))
        .await;
    alice.store().set("after", json!(1)).await.unwrap();
    assert_eq!(alice.room.local_participant().info().unwrap().sid, sid);
    assert_eq!(
        alice
            .heard
            .heard()
            .iter()
            .filter(|h| **h == Heard::StoreAvailable)
            .count(),
        1,
        "resumed, not joined anew"
    );
}
