//! Sessions, reconnects and resumes, and convergence under chaos.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roomstate::{ConnectOptions, ConnectionState, Room, RoomError};
use serde_json::{json, Value};

use crate::harness::{
    block_on_without_a_runtime, fast_options, Client, Heard, Proxy, Recorder, TestServer, Token,
};

#[tokio::test]
async fn the_store_lives_for_one_session() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let first_session = alice.room.session_id().unwrap();
    assert_eq!(bob.room.session_id().unwrap(), first_session);
    alice.store().set("pinned", json!("hello")).await.unwrap();
    alice.room.disconnect().await;
    // Bob is still there: the session and its store go on.
    assert_eq!(
        bob.store().get("pinned").await.unwrap().unwrap().value,
        json!("hello")
    );
    bob.room.disconnect().await;

    let carol = Client::join(&server.url(), &Token::new("r", "carol")).await;
    assert_ne!(
        carol.room.session_id().unwrap(),
        first_session,
        "a new session starts"
    );
    assert_eq!(
        carol.store().get("pinned").await.unwrap(),
        None,
        "and starts clean"
    );
    // Other rooms are other stores.
    let other = Client::join(&server.url(), &Token::new("elsewhere", "dave")).await;
    carol.store().set("k", json!(1)).await.unwrap();
    assert_eq!(other.store().get("k").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_resumes_with_nothing_lost_or_duplicated() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr).await;
    let writer = Client::join(&server.url(), &Token::new("r", "writer")).await;
    let reader = Client::join(&proxy.url(), &Token::new("r", "reader")).await;
    let seen = reader.observe(&["counter"]);
    seen.wait_for(Heard::Key("counter".into(), None)).await;
    let reader_sid = reader.room.local_participant().info().unwrap().sid;

    let writes = tokio::spawn(async move {
        for n in 1..=300 {
            writer.store().set("counter", json!(n)).await.unwrap();
        }
        writer
    });
    // Cut the reader's connection again and again while the writes stream.
    let mut cuts = 0;
    while !writes.is_finished() {
        tokio::time::sleep(Duration::from_millis(15)).await;
        proxy.cut();
        cuts += 1;
    }
    let writer = writes.await.unwrap();
    seen.wait_for(Heard::Key("counter".into(), Some(json!(300))))
        .await;
    let expected: Vec<Option<Value>> = std::iter::once(None)
        .chain((1..=300).map(|n| Some(json!(n))))
        .collect();
    assert_eq!(
        seen.values("counter"),
        expected,
        "every change once, in order, across {cuts} cuts"
    );
    assert_eq!(
        reader.room.local_participant().info().unwrap().sid,
        reader_sid,
        "resumed, not rejoined"
    );
    assert!(reader
        .heard
        .heard()
        .contains(&Heard::Connection(ConnectionState::Reconnecting)));
    // The writer never saw the reader leave.
    assert!(!writer
        .heard
        .heard()
        .iter()
        .any(|heard| matches!(heard, Heard::Left(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_while_cut_off_are_sent_on_resume() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr).await;
    let alice = Client::join(&proxy.url(), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let bob_sees = bob.observe(&["k"]);
    bob_sees.wait_for(Heard::Key("k".into(), None)).await;
    let alice_sees = alice.observe(&["k"]);
    alice_sees.wait_for(Heard::Key("k".into(), None)).await;
    assert!(!alice.store().read("k").await.unwrap().may_be_stale);

    proxy.refuse(true);
    proxy.cut();
    let store = alice.store();
    let pending = tokio::spawn(async move {
        let mut versions = Vec::new();
        for n in 1..=5 {
            versions.push(store.set("k", json!(n)).await.unwrap());
        }
        versions
    });
    alice
        .heard
        .wait_for(Heard::Connection(ConnectionState::Reconnecting))
        .await;
    // Cut off, the engine's copy may be behind, and its reads say so.
    assert!(alice.store().read("k").await.unwrap().may_be_stale);
    tokio::time::sleep(Duration::from_millis(200)).await; // let the writes queue up behind the outage
    proxy.refuse(false);
    let versions = pending.await.unwrap();
    assert!(versions.windows(2).all(|pair| pair[0] < pair[1]));
    bob_sees
        .wait_for(Heard::Key("k".into(), Some(json!(5))))
        .await;
    assert_eq!(
        bob_sees.values("k"),
        vec![
            None,
            Some(json!(1)),
            Some(json!(2)),
            Some(json!(3)),
            Some(json!(4)),
            Some(json!(5))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_wait_for_the_connection_then_time_out_without_being_sent() {
    let server = TestServer::start();
    let proxy = Proxy::start(server.addr).await;
    let options = ConnectOptions {
        request_timeout: Duration::from_millis(300),
        ..fast_options()
    };
    let heard = Recorder::new();
    let room = Room::connect(
        &proxy.url(),
        &Token::new("r", "alice").sign(),
        heard.clone(),
        options,
    )
    .await
    .unwrap();
    proxy.refuse(true);
    proxy.cut();
    heard
        .wait_for(Heard::Connection(ConnectionState::Reconnecting))
        .await;
    let error = room.session_store().set("k", json!(1)).await.unwrap_err();
    assert_eq!(error, RoomError::Timeout { sent: false });
    proxy.refuse(false);
    // Once back, the timed-out write was never applied.
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let store = room.session_store();
    let mut reconnected = false;
    for _ in 0..100 {
        if room.connection_state() == ConnectionState::Connected {
            reconnected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reconnected);
    // A write through the resumed connection: had "k" been kept and sent on resuming, it
    // would have been applied before this one. Tried again on a timeout: 300 ms is this
    // test's timeout for the write above, not a promise of a loaded machine.
    let mut timeouts = 0;
    loop {
        match store.set("other", json!(2)).await {
            Ok(_) => break,
            Err(RoomError::Timeout { .. }) if timeouts < 20 => timeouts += 1,
            Err(error) => panic!("the write after reconnecting failed: {error:?}"),
        }
    }
    assert_eq!(bob.store().get("k").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_cut_by_the_server_and_resumes_without_loss() {
    // Values of 8 KB: more than the kernel's socket buffers hold, so the stall reaches
    // the server's queue.
    let server = TestServer::with_config("outbound_queue = 16\n[limits]\nvalue_bytes = 9000");
    let proxy = Proxy::start(server.addr).await;
    let writer = Client::join(&server.url(), &Token::new("r", "writer")).await;
    let reader = Client::join(&proxy.url(), &Token::new("r", "reader")).await;
    let seen = reader.observe(&["k"]);
    seen.wait_for(Heard::Key("k".into(), None)).await;

    // The reader stops reading; the server's queue for it fills and it is cut.
    proxy.stall(true);
    let payload = "p".repeat(8000);
    const WRITES: usize = 2000;
    for n in 1..=WRITES {
        writer
            .store()
            .set("k", json!(format!("{n}:{payload}")))
            .await
            .unwrap();
    }
    proxy.stall(false);
    // On failure, say what the reader's connection went through, not only its values.
    let deadline = tokio::time::Instant::now() + crate::harness::PATIENCE;
    while seen.heard().len() < WRITES + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reader heard {} of {} values; its room events: {:?}",
            seen.heard().len(),
            WRITES + 1,
            reader.heard.heard()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let values = seen.values("k");
    for (n, value) in values.iter().enumerate().skip(1) {
        let text = value.as_ref().unwrap().as_str().unwrap();
        assert!(
            text.starts_with(&format!("{n}:")),
            "write {n} arrived as {}",
            &text[..8]
        );
    }
    assert!(
        reader
            .heard
            .heard()
            .contains(&Heard::Connection(ConnectionState::Reconnecting)),
        "the server cut the reader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_away_past_the_session_sees_the_new_session() {
    let server = TestServer::with_config("reconnect_grace_ms = 300");
    let proxy = Proxy::start(server.addr).await;
    let alice = Client::join(&proxy.url(), &Token::new("r", "alice")).await;
    let old_session = alice.room.session_id().unwrap();
    alice.store().set("pinned", json!("old")).await.unwrap();
    let seen = alice.observe(&["pinned", "spotlight"]);
    seen.wait_for(Heard::Key("pinned".into(), Some(json!("old"))))
        .await;

    proxy.refuse(true);
    proxy.cut();
    // Alice was the only one: once her grace period ends, the session ends. Ask the
    // server API until the room is gone.
    let rooms = server.room_service();
    let deadline = tokio::time::Instant::now() + crate::harness::PATIENCE;
    while !rooms.list_rooms(vec![]).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    assert_ne!(bob.room.session_id().unwrap(), old_session);
    bob.store().set("spotlight", json!("bob")).await.unwrap();
    proxy.refuse(false);

    seen.wait_for(Heard::Key("spotlight".into(), Some(json!("bob"))))
        .await;
    seen.wait_for(Heard::Key("pinned".into(), None)).await;
    assert_eq!(
        alice.room.session_id().unwrap(),
        bob.room.session_id().unwrap()
    );
    let available = alice
        .heard
        .heard()
        .iter()
        .filter(|heard| **heard == Heard::StoreAvailable)
        .count();
    assert_eq!(
        available, 2,
        "on_session_store_available fires again for the new session"
    );
    assert_eq!(alice.store().get("pinned").await.unwrap(), None);
    assert_eq!(alice.room.remote_participants().len(), 1);
}

/// What one client's listener says the store is.
fn state_heard(recorder: &Recorder) -> BTreeMap<String, Value> {
    let mut state = BTreeMap::new();
    for heard in recorder.heard() {
        if let Heard::Key(key, value) = heard {
            match value {
                Some(value) => state.insert(key, value),
                None => state.remove(&key),
            };
        }
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_with_random_disconnects_converge() {
    const CLIENTS: usize = 5;
    const OPERATIONS: usize = 80;
    const KEYS: usize = 6;
    let seed: u64 = std::env::var("ROOMSTATE_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(20261122);
    println!("seed {seed} (set ROOMSTATE_TEST_SEED to replay)");
    let server = TestServer::start();
    let mut clients = Vec::new();
    let mut proxies = Vec::new();
    let mut watchers = Vec::new();
    for n in 0..CLIENTS {
        let proxy = Proxy::start(server.addr).await;
        let client = Client::join(&proxy.url(), &Token::new("r", &format!("p{n}"))).await;
        watchers.push(client.observe(&["*"]));
        clients.push(Arc::new(client));
        proxies.push(Arc::new(proxy));
    }
    // Chaos: cut random clients' connections while they work.
    let chaos = {
        let proxies = proxies.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ 0xc4a05);
            loop {
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
                proxies[rng.random_range(0..proxies.len())].cut();
            }
        })
    };
    let workers = clients.iter().enumerate().map(|(n, client)| {
        let client = Arc::clone(client);
        let mut rng = StdRng::seed_from_u64(seed + n as u64);
        tokio::spawn(async move {
            // (key, version, value) of every write the server acknowledged.
            let mut acknowledged = Vec::new();
            let store = client.store();
            for op in 0..OPERATIONS {
                let key = format!("k{}", rng.random_range(0..KEYS));
                match rng.random_range(0..10) {
                    0..=4 => {
                        let value = json!({"by": n, "op": op});
                        let version = store.set(&key, value.clone()).await.unwrap();
                        acknowledged.push((key, version, Some(value)));
                    }
                    5 => {
                        let version = store.compare_and_set(&key, 0, None).await;
                        if let Ok(version) = version {
                            acknowledged.push((key, version, None));
                        }
                    }
                    6 | 7 => {
                        let current = store.get(&key).await.unwrap();
                        let expected = current.as_ref().map_or(0, |entry| entry.version);
                        let value = json!({"cas": n, "op": op});
                        match store
                            .compare_and_set(&key, expected, Some(value.clone()))
                            .await
                        {
                            Ok(version) => acknowledged.push((key, version, Some(value))),
                            Err(RoomError::Conflict { .. }) => {}
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                    8 => {
                        store.delete(&key).await.unwrap();
                    }
                    _ => {
                        let attribute = format!("a{}", rng.random_range(0..3));
                        let value = if rng.random_bool(0.3) {
                            String::new()
                        } else {
                            format!("{op}")
                        };
                        client
                            .room
                            .local_participant()
                            .set_attributes(HashMap::from([(attribute, value)]))
                            .await
                            .unwrap();
                    }
                }
            }
            acknowledged
        })
    });
    let mut acknowledged = Vec::new();
    for worker in workers {
        acknowledged.extend(worker.await.unwrap());
    }
    chaos.abort();

    // The truth, from a client that was never cut.
    let judge = Client::join(&server.url(), &Token::new("r", "judge")).await;
    let truth_recorder = judge.observe(&["*"]);
    let mut truth = BTreeMap::new();
    for n in 0..KEYS {
        let key = format!("k{n}");
        if let Some(entry) = judge.store().get(&key).await.unwrap() {
            truth.insert(key, entry.value);
        }
    }
    // Every acknowledged write is there unless a later one replaced it.
    let mut latest: BTreeMap<String, (u64, Option<Value>)> = BTreeMap::new();
    for (key, version, value) in acknowledged {
        let slot = latest.entry(key).or_insert((0, None));
        if version > slot.0 {
            *slot = (version, value);
        }
    }
    for (key, (version, value)) in &latest {
        match judge.store().get(key).await.unwrap() {
            Some(entry) if entry.version == *version => {
                assert_eq!(Some(&entry.value), value.as_ref())
            }
            Some(entry) => assert!(
                entry.version > *version,
                "{key}: acknowledged v{version} lost"
            ),
            None => assert!(
                value.is_none() || !truth.contains_key(key),
                "{key}: acknowledged v{version} lost"
            ),
        }
    }
    truth_recorder
        .wait_until("the judge's view", |_| {
            state_heard(&truth_recorder) == truth
        })
        .await;
    for (n, watcher) in watchers.iter().enumerate() {
        watcher
            .wait_until(&format!("p{n} converging on {truth:?}"), |_| {
                state_heard(watcher) == truth
            })
            .await;
    }
    // Everyone agrees on everyone's attributes.
    let attributes_of = |client: &Client| -> BTreeMap<String, BTreeMap<String, String>> {
        client
            .room
            .remote_participants()
            .into_iter()
            .filter(|participant| participant.identity != "judge")
            .map(|participant| {
                (
                    participant.identity,
                    participant.attributes.into_iter().collect(),
                )
            })
            .collect()
    };
    let deadline = tokio::time::Instant::now() + crate::harness::PATIENCE;
    for client in &clients {
        let me = client.room.local_participant().info().unwrap();
        loop {
            let seen = attributes_of(&judge);
            let mine: BTreeMap<String, String> = me.attributes.clone().into_iter().collect();
            if seen.get(&me.identity) == Some(&mine) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: {mine:?} vs {seen:?}",
                me.identity
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let reference = attributes_of(&judge);
    for client in &clients {
        let me = client.room.local_participant().info().unwrap().identity;
        let mut theirs = attributes_of(client);
        let mut expected = reference.clone();
        expected.remove(&me);
        theirs.remove(&me);
        assert_eq!(
            theirs, expected,
            "{me} sees the others' attributes as they are"
        );
    }
}

/// On the first change, stalls the connection and waits for a write that cannot be
/// answered.
struct WaitsDuringDisconnect {
    store: roomstate::SessionStore,
    proxy: Arc<Proxy>,
    runtime: tokio::runtime::Handle,
    entered: std::sync::mpsc::Sender<()>,
    result: Arc<parking_lot::Mutex<Option<Result<u64, RoomError>>>>,
}

impl roomstate::KeyChangeListener for WaitsDuringDisconnect {
    fn on_key_changed(&self, _key: String, entry: Option<roomstate::StoreEntry>) {
        if entry.is_none() || self.result.lock().is_some() {
            return;
        }
        self.proxy.stall(true);
        let _ = self.entered.send(());
        let store = self.store.clone();
        let result = self
            .runtime
            .block_on(async move { store.set("echo", json!(1)).await });
        *self.result.lock() = Some(result);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_completes_while_a_listener_waits_on_a_call() {
    let server = TestServer::start();
    let proxy = Arc::new(Proxy::start(server.addr).await);
    let alice = Client::join(&proxy.url(), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let (entered, listener_entered) = std::sync::mpsc::channel();
    let result = Arc::new(parking_lot::Mutex::new(None));
    alice
        .store()
        .add_key_change_listener(
            vec!["k".into()],
            Arc::new(WaitsDuringDisconnect {
                store: alice.store(),
                proxy: proxy.clone(),
                runtime: tokio::runtime::Handle::current(),
                entered,
                result: result.clone(),
            }),
        )
        .unwrap();
    let witness = alice.observe(&["k"]);
    witness.wait_for(Heard::Key("k".into(), None)).await;
    let echo = bob.observe(&["echo"]);
    echo.wait_for(Heard::Key("echo".into(), None)).await;
    bob.store().set("k", json!(1)).await.unwrap();
    tokio::task::spawn_blocking(move || {
        listener_entered
            .recv_timeout(crate::harness::PATIENCE)
            .unwrap()
    })
    .await
    .unwrap();
    // Left once the listener's write has reached the server (its answer is stalled).
    echo.wait_for(Heard::Key("echo".into(), Some(json!(1))))
        .await;
    tokio::time::timeout(crate::harness::PATIENCE, alice.room.disconnect())
        .await
        .expect("disconnect returns while a listener waits on a call");
    let deadline = tokio::time::Instant::now() + crate::harness::PATIENCE;
    while result.lock().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener's call never returned"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The server applied the write and its answer never came: the call says the link was
    // lost (`NotConnected` would say the write was not applied).
    let outcome = result.lock().take().unwrap();
    assert!(
        matches!(outcome, Err(RoomError::ConnectionLost)),
        "{outcome:?}"
    );
}

/// The bindings poll the engine's futures on threads where no tokio runtime is: every
/// call must work there, the request's timer included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_work_on_a_thread_without_a_tokio_runtime() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let on_a_plain_thread = |store: roomstate::SessionStore, value: Value| {
        let thread = std::thread::spawn(move || {
            assert!(
                tokio::runtime::Handle::try_current().is_err(),
                "no runtime here"
            );
            let set = block_on_without_a_runtime(store.set("k", value));
            let got = block_on_without_a_runtime(store.get("k"));
            (set, got)
        });
        tokio::task::spawn_blocking(move || thread.join().expect("no panic on the thread"))
    };
    let (set, got) = on_a_plain_thread(alice.store(), json!(1)).await.unwrap();
    set.expect("a write from a thread without a runtime");
    assert_eq!(got.unwrap().map(|entry| entry.value), Some(json!(1)));

    alice.room.disconnect().await;
    let (set, _) = on_a_plain_thread(alice.store(), json!(2)).await.unwrap();
    assert!(
        matches!(set, Err(RoomError::NotConnected { .. })),
        "{set:?}"
    );
}
