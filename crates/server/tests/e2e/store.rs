//! The session store between several clients.

use std::sync::Arc;

use futures_util::future::join_all;
use roomstate::{KeyChangeListener, RoomError, StoreEntry};
use serde_json::{json, Value};

use crate::harness::{Client, Heard, Recorder, TestServer, Token};

#[tokio::test]
async fn two_clients_see_each_others_writes_and_deletes() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let bob_sees = bob.observe(&["pinned"]);
    bob_sees.wait_for(Heard::Key("pinned".into(), None)).await;

    let version = alice
        .store()
        .set("pinned", json!({"text": "hi"}))
        .await
        .unwrap();
    bob_sees
        .wait_for(Heard::Key("pinned".into(), Some(json!({"text": "hi"}))))
        .await;
    let entry = bob.store().get("pinned").await.unwrap().unwrap();
    assert_eq!(entry.updated_by, "alice");
    assert_eq!(entry.version, version);
    assert!(entry.updated_at_ms > 0);

    let alice_sees = alice.observe(&["pinned"]);
    alice_sees
        .wait_for(Heard::Key("pinned".into(), Some(json!({"text": "hi"}))))
        .await;
    bob.store().delete("pinned").await.unwrap();
    alice_sees.wait_for(Heard::Key("pinned".into(), None)).await;
    bob_sees
        .wait_until("the delete", |heard| heard.len() == 3)
        .await;
    assert_eq!(
        bob_sees.values("pinned"),
        vec![None, Some(json!({"text": "hi"})), None]
    );
    assert_eq!(alice.store().get("pinned").await.unwrap(), None);
}

#[tokio::test]
async fn every_listener_gets_the_current_value_first() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    alice.store().set("spotlight", json!("PA_1")).await.unwrap();

    // Two listeners added back to back, before the server answered either.
    let first = bob.observe(&["spotlight"]);
    let second = bob.observe(&["spotlight"]);
    first
        .wait_for(Heard::Key("spotlight".into(), Some(json!("PA_1"))))
        .await;
    second
        .wait_for(Heard::Key("spotlight".into(), Some(json!("PA_1"))))
        .await;
    // A third, once the key is already observed: answered from the engine's copy.
    let third = bob.observe(&["spotlight"]);
    third
        .wait_for(Heard::Key("spotlight".into(), Some(json!("PA_1"))))
        .await;

    alice.store().set("spotlight", json!("PA_2")).await.unwrap();
    for listener in [&first, &second, &third] {
        listener
            .wait_until("the change", |heard| heard.len() == 2)
            .await;
        assert_eq!(
            listener.values("spotlight"),
            vec![Some(json!("PA_1")), Some(json!("PA_2"))],
            "each listener hears the initial value and the change once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_is_not_called_again() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let kept = alice.observe(&["k"]);
    let removed = Recorder::new();
    let handle = alice
        .store()
        .add_key_change_listener(vec!["k".into()], removed.clone())
        .unwrap();
    removed.wait_for(Heard::Key("k".into(), None)).await;

    // Remove it from this thread while bob's changes stream in.
    let writer = tokio::spawn(async move {
        for value in 1..=200 {
            bob.store().set("k", json!(value)).await.unwrap();
        }
        bob
    });
    removed
        .wait_until("some changes", |heard| heard.len() > 5)
        .await;
    alice.store().remove_key_change_listener(handle);
    let calls_at_removal = removed.heard().len();
    alice.store().remove_key_change_listener(handle); // twice is harmless

    writer.await.unwrap();
    kept.wait_for(Heard::Key("k".into(), Some(json!(200))))
        .await;
    assert_eq!(
        removed.heard().len(),
        calls_at_removal,
        "no call after removal returned"
    );
    assert!(calls_at_removal < 201, "the removal happened mid-stream");
}

/// Removes itself on the first change it hears.
struct RemovesItself {
    store: roomstate::SessionStore,
    handle: parking_lot::Mutex<Option<roomstate::KeyListenerHandle>>,
    calls: parking_lot::Mutex<Vec<Option<Value>>>,
}

impl KeyChangeListener for RemovesItself {
    fn on_key_changed(&self, _key: String, entry: Option<StoreEntry>) {
        self.calls
            .lock()
            .push(entry.clone().map(|entry| entry.value));
        if entry.is_some() {
            if let Some(handle) = self.handle.lock().take() {
                self.store.remove_key_change_listener(handle);
            }
        }
    }
}

#[tokio::test]
async fn a_listener_may_remove_itself() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let listener = Arc::new(RemovesItself {
        store: alice.store(),
        handle: parking_lot::Mutex::new(None),
        calls: parking_lot::Mutex::new(Vec::new()),
    });
    let handle = alice
        .store()
        .add_key_change_listener(vec!["k".into()], listener.clone())
        .unwrap();
    *listener.handle.lock() = Some(handle);
    let witness = alice.observe(&["k"]);
    for value in 1..=5 {
        alice.store().set("k", json!(value)).await.unwrap();
    }
    witness
        .wait_for(Heard::Key("k".into(), Some(json!(5))))
        .await;
    assert_eq!(*listener.calls.lock(), vec![None, Some(json!(1))]);
}

#[tokio::test]
async fn writes_from_one_client_arrive_in_call_order_exactly_once() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let bob_sees = bob.observe(&["counter"]);
    let alice_sees = alice.observe(&["counter"]);
    bob_sees.wait_for(Heard::Key("counter".into(), None)).await;
    alice_sees
        .wait_for(Heard::Key("counter".into(), None))
        .await;

    // Sequential calls, then calls in flight together: both keep call order.
    for value in 1..=30 {
        alice.store().set("counter", json!(value)).await.unwrap();
    }
    let store = alice.store();
    let versions: Vec<u64> = join_all((31..=60).map(|value| {
        let store = store.clone();
        async move { store.set("counter", json!(value)).await.unwrap() }
    }))
    .await;
    assert!(
        versions.windows(2).all(|pair| pair[0] < pair[1]),
        "{versions:?}"
    );

    let expected: Vec<Option<Value>> = std::iter::once(None)
        .chain((1..=60).map(|value| Some(json!(value))))
        .collect();
    for (who, seen) in [("alice", &alice_sees), ("bob", &bob_sees)] {
        seen.wait_for(Heard::Key("counter".into(), Some(json!(60))))
            .await;
        assert_eq!(
            seen.values("counter"),
            expected,
            "{who} hears every write once, in order"
        );
    }
}

#[tokio::test]
async fn a_write_is_visible_locally_when_it_returns() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let seen = alice.observe(&["k"]);
    seen.wait_for(Heard::Key("k".into(), None)).await;
    for value in 0..20 {
        let version = alice.store().set("k", json!(value)).await.unwrap();
        let entry = alice.store().get("k").await.unwrap().unwrap();
        assert_eq!((entry.value, entry.version), (json!(value), version));
    }
}

/// Counts down by writing the key it observes, from inside its own callback.
struct CallsBack {
    store: roomstate::SessionStore,
    runtime: tokio::runtime::Handle,
}

impl KeyChangeListener for CallsBack {
    fn on_key_changed(&self, key: String, entry: Option<StoreEntry>) {
        let Some(n) = entry.and_then(|entry| entry.value.as_i64()) else {
            return;
        };
        if n > 0 {
            // Every kind of call, from the listener thread, waiting for the answer.
            let store = self.store.clone();
            self.runtime.block_on(async move {
                assert_eq!(store.get(&key).await.unwrap().unwrap().value, json!(n));
                let other = store
                    .add_key_change_listener(
                        vec!["other".into()],
                        Arc::new(|_: String, _: Option<StoreEntry>| {}),
                    )
                    .unwrap();
                store.remove_key_change_listener(other);
                store.set(&key, json!(n - 1)).await.unwrap();
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_may_call_back_into_the_engine() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    alice
        .store()
        .add_key_change_listener(
            vec!["countdown".into()],
            Arc::new(CallsBack {
                store: alice.store(),
                runtime: tokio::runtime::Handle::current(),
            }),
        )
        .unwrap();
    let seen = alice.observe(&["countdown"]);
    alice.store().set("countdown", json!(10)).await.unwrap();
    seen.wait_for(Heard::Key("countdown".into(), Some(json!(0))))
        .await;
    let expected: Vec<Option<Value>> = std::iter::once(None)
        .chain((0..=10).rev().map(|n| Some(json!(n))))
        .collect();
    assert_eq!(seen.values("countdown"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_loses_no_increment() {
    const CLIENTS: usize = 6;
    const INCREMENTS: u64 = 25;
    let server = TestServer::start();
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        clients.push(Client::join(&server.url(), &Token::new("r", &format!("p{n}"))).await);
    }
    let tasks = clients.iter().map(|client| {
        let store = client.store();
        async move {
            let mut conflicts = 0;
            for _ in 0..INCREMENTS {
                loop {
                    let current = store.get("counter").await.unwrap();
                    let (version, value) = current.map_or((0, 0), |entry| {
                        (entry.version, entry.value.as_u64().unwrap())
                    });
                    match store
                        .compare_and_set("counter", version, Some(json!(value + 1)))
                        .await
                    {
                        Ok(_) => break,
                        Err(RoomError::Conflict { current }) => {
                            assert!(current.is_some_and(|entry| entry.version > version));
                            conflicts += 1;
                        }
                        Err(other) => panic!("unexpected error {other}"),
                    }
                }
            }
            conflicts
        }
    });
    let conflicts: usize = join_all(tasks).await.into_iter().sum();
    let total = clients[0].store().get("counter").await.unwrap().unwrap();
    assert_eq!(total.value, json!(CLIENTS as u64 * INCREMENTS));
    println!("{conflicts} conflicts retried");

    // Expected version 0 means "must not exist".
    let store = clients[0].store();
    store
        .compare_and_set("lock", 0, Some(json!("p0")))
        .await
        .unwrap();
    let lost = clients[1]
        .store()
        .compare_and_set("lock", 0, Some(json!("p1")))
        .await
        .unwrap_err();
    assert!(
        matches!(lost, RoomError::Conflict { current: Some(ref entry) } if entry.value == json!("p0")),
        "{lost:?}"
    );
    let version = store.get("lock").await.unwrap().unwrap().version;
    store.compare_and_set("lock", version, None).await.unwrap();
    assert_eq!(
        store.get("lock").await.unwrap(),
        None,
        "compare_and_set with no value deletes"
    );
}

#[tokio::test]
async fn the_wildcard_observes_every_key() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    alice.store().set("a", json!(1)).await.unwrap();
    alice.store().set("b", json!(2)).await.unwrap();
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let all = bob.observe(&["*"]);
    all.wait_until("both keys", |heard| heard.len() == 2).await;
    assert_eq!(
        all.heard(),
        vec![
            Heard::Key("a".into(), Some(json!(1))),
            Heard::Key("b".into(), Some(json!(2)))
        ]
    );
    alice.store().set("c", json!(3)).await.unwrap();
    alice.store().delete("a").await.unwrap();
    all.wait_for(Heard::Key("a".into(), None)).await;
    assert_eq!(all.heard()[2], Heard::Key("c".into(), Some(json!(3))));
    assert_eq!(bob.store().get("c").await.unwrap().unwrap().value, json!(3));
}

#[tokio::test]
async fn any_json_value_round_trips() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let values = [
        json!(true),
        json!(-1.5),
        json!("text"),
        json!([1, "two", null]),
        json!({"nested": {"deep": [1, 2]}}),
    ];
    for (n, value) in values.iter().enumerate() {
        alice
            .store()
            .set(&format!("k{n}"), value.clone())
            .await
            .unwrap();
        assert_eq!(
            &bob.store()
                .get(&format!("k{n}"))
                .await
                .unwrap()
                .unwrap()
                .value,
            value
        );
    }
    // Null is "no value": it deletes.
    alice.store().set("k0", Value::Null).await.unwrap();
    assert_eq!(bob.store().get("k0").await.unwrap(), None);
}
