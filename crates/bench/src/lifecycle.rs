//! The engine's lifetimes as a phone lives them: rooms joined, observed and left, one
//! after another, in one process. Prints how long a cycle takes and whether the
//! process's threads and resident memory stay flat (the test `lifecycle.rs` asserts a
//! bound; this prints the figures).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use roomstate::{ConnectOptions, KeyChangeListener, Room, RoomListener, SessionStore, StoreEntry};

use crate::clients::token;
use crate::fuzz::Server;
use crate::stats::{histogram, Percentiles};

pub struct Lifecycle {
    pub cycles: u64,
    pub cycle: Percentiles,
    pub rss_before: u64,
    pub rss_after: u64,
    pub threads_before: usize,
    pub threads_after: usize,
}

/// Keeps the store it is given, as apps do: only the engine's release at the end of a
/// room lets it go.
#[derive(Default)]
struct KeepsTheStore {
    store: Mutex<Option<SessionStore>>,
    initial: tokio::sync::Notify,
}

impl RoomListener for KeepsTheStore {
    fn on_session_store_available(&self, store: SessionStore) {
        *self.store.lock() = Some(store);
    }
}

impl KeyChangeListener for KeepsTheStore {
    fn on_key_changed(&self, _key: String, _entry: Option<StoreEntry>) {
        self.initial.notify_one();
    }
}

async fn cycle(url: &str, identity: &str) {
    let listener = Arc::new(KeepsTheStore::default());
    let room = Room::connect(
        url,
        &token("lifecycle", identity),
        listener.clone(),
        ConnectOptions::default(),
    )
    .await
    .expect("join");
    room.session_store()
        .add_key_change_listener(vec!["pinned".into()], listener.clone())
        .expect("observe");
    tokio::time::timeout(Duration::from_secs(10), listener.initial.notified())
        .await
        .expect("the initial value");
    room.disconnect().await;
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count())
}

/// Waits (up to 5 s) for the threads of rooms already left to end.
async fn settle(threads_at_start: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    while threads() > threads_at_start && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    threads()
}

pub async fn run(roomstate_bin: &std::path::Path, cycles: u64) -> Lifecycle {
    let server = Server::start_pinned(roomstate_bin);
    let url = format!("ws://{}", server.addr);
    let own = crate::target::rss_of(std::process::id());
    let threads_at_start = threads();
    for n in 0..50 {
        cycle(&url, &format!("warm-{n}")).await;
    }
    let threads_before = settle(threads_at_start).await;
    let rss_before = crate::target::rss_of(std::process::id()).max(own);
    let mut took = histogram();
    for n in 0..cycles {
        let started = Instant::now();
        cycle(&url, &format!("p{n}")).await;
        took.record(started.elapsed().as_micros().max(1) as u64)
            .expect("within the histogram's bounds");
    }
    let threads_after = settle(threads_before).await;
    Lifecycle {
        cycles,
        cycle: Percentiles::of(&took),
        rss_before,
        rss_after: crate::target::rss_of(std::process::id()),
        threads_before,
        threads_after,
    }
}
