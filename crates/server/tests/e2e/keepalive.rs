//! Keep-alive (docs/protocol.md, Keepalive): a quiet room keeps its connection past every
//! timeout, at shortened settings and at the defaults, and a link that goes silent is
//! given up and resumed.

use std::time::Duration;

use roomstate::{ConnectOptions, ConnectionState};
use serde_json::json;

use crate::harness::{fast_options, Client, Heard, Proxy, TestServer, Token, PATIENCE};

/// Pings every 100 ms and gives up after 400 ms of silence; the server closes after
/// 600 ms without a frame.
const SHORT_SERVER: &str = "idle_timeout_ms = 600";

fn short_keepalive() -> ConnectOptions {
    ConnectOptions {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(400),
        ..fast_options()
    }
}

/// The connection states a client went through, after its first `Connected`.
fn state_changes(client: &Client) -> Vec<ConnectionState> {
    client
        .heard
        .heard()
        .into_iter()
        .filter_map(|heard| match heard {
            Heard::Connection(state) => Some(state),
            _ => None,
        })
        .skip_while(|state| *state != ConnectionState::Connected)
        .skip(1)
        .collect()
}

/// Two participants sit in a room where nothing changes for `quiet`, then one writes:
/// neither may have reconnected, and the write must arrive over the same connection.
async fn quiet_room_stays_connected(server: &TestServer, options: ConnectOptions, quiet: Duration) {
    let alice_jwt = Token::new("quiet", "alice").sign();
    let bob_jwt = Token::new("quiet", "bob").sign();
    let alice = Client::join_with_options(&server.url(), &alice_jwt, options.clone())
        .await
        .unwrap();
    let bob = Client::join_with_options(&server.url(), &bob_jwt, options)
        .await
        .unwrap();
    let alice_sees = alice.observe(&["pinned"]);
    alice_sees.wait_for(Heard::Key("pinned".into(), None)).await;
    let alice_sid = alice.room.local_participant().info().unwrap().sid;
    let session = alice.room.session_id();

    tokio::time::sleep(quiet).await;

    assert_eq!(state_changes(&alice), vec![], "alice's connection flapped");
    assert_eq!(state_changes(&bob), vec![], "bob's connection flapped");
    assert_eq!(alice.room.connection_state(), ConnectionState::Connected);
    bob.store()
        .set("pinned", json!("still here"))
        .await
        .unwrap();
    alice_sees
        .wait_for(Heard::Key("pinned".into(), Some(json!("still here"))))
        .await;
    assert_eq!(
        alice_sees.values("pinned"),
        vec![None, Some(json!("still here"))],
        "the listener heard the current value once, then the change: nothing replayed"
    );
    assert_eq!(
        alice.room.local_participant().info().unwrap().sid,
        alice_sid
    );
    assert_eq!(alice.room.session_id(), session);
    assert!(
        !bob.heard
            .heard()
            .iter()
            .any(|heard| matches!(heard, Heard::Left(_))),
        "bob never saw alice leave"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_room_outlasts_every_timeout_at_short_settings() {
    let server = TestServer::with_config(SHORT_SERVER);
    // Eight client ping timeouts and five server idle timeouts without a single change.
    quiet_room_stays_connected(&server, short_keepalive(), Duration::from_secs(3)).await;
}

/// The same at the shipped defaults: the engine's 15 s ping timeout and the server's
/// 30 s idle timeout both pass with nothing said but pings and pongs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_room_outlasts_every_timeout_at_the_defaults() {
    let server = TestServer::start();
    let options = ConnectOptions {
        request_timeout: Duration::from_secs(10),
        ..ConnectOptions::default()
    };
    quiet_room_stays_connected(&server, options, Duration::from_secs(33)).await;
}

/// How long after `since` the client reported `Reconnecting`, waiting at most `PATIENCE`.
async fn reconnecting_after(client: &Client, since: tokio::time::Instant) -> Duration {
    client
        .heard
        .wait_for(Heard::Connection(ConnectionState::Reconnecting))
        .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_given_up_after_the_ping_timeout_and_resumed_when_it_thaws() {
    // One node: the test freezes the process the client is connected to.
    let server = TestServer::cluster(1, SHORT_SERVER);
    let alice = Client::join_with_options(
        &server.url(),
        &Token::new("frozen", "alice").sign(),
        short_keepalive(),
    )
    .await
    .unwrap();
    let alice_sees = alice.observe(&["k"]);
    alice_sees.wait_for(Heard::Key("k".into(), None)).await;
    let sid = alice.room.local_participant().info().unwrap().sid;

    let frozen_at = tokio::time::Instant::now();
    server.freeze(0, true);
    let noticed = reconnecting_after(&alice, frozen_at).await;
    // Not a timing assertion on speed: the link must be given up by the ping timeout,
    // not left hanging; the bound is loose so a loaded machine cannot fail it.
    assert!(
        noticed >= Duration::from_millis(300) && noticed < PATIENCE,
        "gave up {noticed:?} after the freeze"
    );
    // Writes made while the server is frozen wait for the resume.
    let store = alice.store();
    let write = tokio::spawn(async move { store.set("k", json!("after the thaw")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.freeze(0, false);
    write.await.unwrap().unwrap();
    alice
        .heard
        .wait_until("connected again", |heard| {
            heard
                .iter()
                .rev()
                .find_map(|heard| match heard {
                    Heard::Connection(state) => Some(state == &ConnectionState::Connected),
                    _ => None,
                })
                .unwrap_or(false)
        })
        .await;
    alice_sees
        .wait_for(Heard::Key("k".into(), Some(json!("after the thaw"))))
        .await;
    assert_eq!(
        alice.room.local_participant().info().unwrap().sid,
        sid,
        "resumed, not rejoined"
    );
    assert_eq!(
        alice_sees.values("k"),
        vec![None, Some(json!("after the thaw"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_stops_forwarding_is_given_up_and_resumed() {
    let server = TestServer::with_config(SHORT_SERVER);
    let proxy = Proxy::start(server.addr).await;
    let alice = Client::join_with_options(
        &proxy.url(),
        &Token::new("half-open", "alice").sign(),
        short_keepalive(),
    )
    .await
    .unwrap();
    let bob = Client::join(&server.url(), &Token::new("half-open", "bob")).await;
    let alice_sees = alice.observe(&["k"]);
    alice_sees.wait_for(Heard::Key("k".into(), None)).await;

    let stalled_at = tokio::time::Instant::now();
    proxy.stall(true);
    bob.store().set("k", json!(1)).await.unwrap();
    let noticed = reconnecting_after(&alice, stalled_at).await;
    assert!(
        noticed >= Duration::from_millis(300),
        "gave up {noticed:?} after the stall"
    );
    proxy.stall(false);
    proxy.cut(); // the stalled connection is gone for good; the next one is healthy
    alice_sees
        .wait_for(Heard::Key("k".into(), Some(json!(1))))
        .await;
    bob.store().set("k", json!(2)).await.unwrap();
    alice_sees
        .wait_for(Heard::Key("k".into(), Some(json!(2))))
        .await;
    assert_eq!(
        alice_sees.values("k"),
        vec![None, Some(json!(1)), Some(json!(2))],
        "every change once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_whose_ping_timeout_is_not_longer_than_the_interval_are_refused() {
    let server = TestServer::start();
    let options = ConnectOptions {
        ping_interval: Duration::from_secs(5),
        ping_timeout: Duration::from_secs(5),
        ..fast_options()
    };
    let refused = Client::join_with_options(&server.url(), &Token::new("r", "a").sign(), options)
        .await
        .err()
        .expect("the options are refused");
    assert!(
        matches!(&refused, roomstate::RoomError::InvalidRequest { message } if message.contains("ping_timeout")),
        "{refused:?}"
    );
}
