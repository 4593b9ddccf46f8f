//! Test fixtures: a real `roomstate serve` process, tokens, a recording listener and a
//! TCP proxy that can cut connections.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use roomstate::{
    ConnectOptions, ConnectionState, KeyChangeListener, Participant, Room, RoomError, RoomListener,
    SessionStore, StoreEntry,
};
use roomstate_protocol::{Claims, RoomStateGrant, VideoGrant};
use roomstate_server::auth::{mint_token, unix_now};
use serde_json::Value;
use tokio::net::TcpListener;

pub const KEY: &str = "testkey";
pub const SECRET: &str = "testsecret";

/// How long a test waits for something that should happen at once before it fails.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The server under test: one node, or (with `ROOMSTATE_TEST_NODES=3`, or
/// [`TestServer::cluster`]) several nodes sharing rooms through a real `redis-server`.
/// `url()` hands out the nodes in turn, so the clients of one test spread over them.
pub struct TestServer {
    nodes: Vec<Option<Child>>,
    addrs: Vec<SocketAddr>,
    /// The first node.
    pub addr: SocketAddr,
    next: std::sync::atomic::AtomicUsize,
    pub redis: Option<RedisServer>,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// How many nodes `TestServer::start` runs: `ROOMSTATE_TEST_NODES`, 1 by default.
pub fn suite_nodes() -> usize {
    std::env::var("ROOMSTATE_TEST_NODES")
        .ok()
        .and_then(|nodes| nodes.parse().ok())
        .unwrap_or(1)
}

/// Runs `roomstate serve --config config`, as `adjust` changes the command, until it
/// says where it listens.
pub fn spawn_node(
    config: &std::path::Path,
    adjust: impl FnOnce(&mut Command),
) -> (Child, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomstate"));
    command
        .args(["serve", "--config"])
        .arg(config)
        // ROOMSTATE_TEST_LOG=roomstate_server=debug shows what the nodes do.
        .env(
            "ROOMSTATE_LOG",
            std::env::var("ROOMSTATE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    adjust(&mut command);
    let mut child = command.spawn().expect("start roomstate serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("roomstate listening on ws://")
        .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

impl TestServer {
    pub fn start() -> Self {
        Self::with_config("")
    }

    /// Starts the suite's topology with extra TOML config lines.
    pub fn with_config(extra: &str) -> Self {
        Self::cluster(suite_nodes(), extra)
    }

    /// Starts `nodes` nodes: one holds rooms in memory; more share a new redis-server.
    pub fn cluster(nodes: usize, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let redis = (nodes > 1).then(|| RedisServer::start(dir.path()));
        Self::nodes(nodes, extra, redis, "", dir)
    }

    /// Starts `nodes` nodes on a new redis-server, with extra lines for their `[redis]`
    /// settings.
    pub fn cluster_with_redis_settings(nodes: usize, extra: &str, redis_settings: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let redis = Some(RedisServer::start(dir.path()));
        Self::nodes(nodes, extra, redis, redis_settings, dir)
    }

    /// Starts `nodes` nodes on `redis`.
    pub fn cluster_on(nodes: usize, extra: &str, redis: RedisServer) -> Self {
        Self::nodes(nodes, extra, Some(redis), "", tempfile::tempdir().unwrap())
    }

    fn nodes(
        nodes: usize,
        extra: &str,
        redis: Option<RedisServer>,
        redis_settings: &str,
        dir: tempfile::TempDir,
    ) -> Self {
        let config = dir.path().join("roomstate.toml");
        let mut text = format!("bind = \"127.0.0.1:0\"\n{extra}\n[keys]\n{KEY} = \"{SECRET}\"\n");
        if let Some(redis) = &redis {
            let mut settings: toml::Table = redis_settings.parse().expect("[redis] settings");
            settings.insert("url".into(), redis.url().into());
            // The suite's short timings, each unless `redis_settings` sets its own.
            for (name, value) in [
                ("heartbeat_ms", 200),
                ("node_timeout_ms", 3000),
                ("timeout_ms", 500),
            ] {
                settings.entry(name).or_insert(value.into());
            }
            text.push_str(&format!("[redis]\n{settings}"));
        }
        std::fs::write(&config, text).unwrap();
        let mut server = TestServer {
            nodes: Vec::new(),
            addrs: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            next: Default::default(),
            redis,
            config,
            _dir: dir,
        };
        for _ in 0..nodes {
            server.add_node();
        }
        server.addr = server.addrs[0];
        server
    }

    /// Starts one more node with the same config; returns its index.
    pub fn add_node(&mut self) -> usize {
        let (child, addr) = spawn_node(&self.config, |_| {});
        self.nodes.push(Some(child));
        self.addrs.push(addr);
        self.addrs.len() - 1
    }

    pub fn node_count(&self) -> usize {
        self.addrs.len()
    }

    /// The next node's WebSocket URL, in turn.
    pub fn url(&self) -> String {
        format!("ws://{}", self.next_addr())
    }

    /// The next node's HTTP URL, in turn (the server API works from any node).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.next_addr())
    }

    /// LiveKit's server SDK client for the room service, with the test's API key, at the
    /// next node.
    pub fn room_service(&self) -> livekit_api::services::room::RoomClient {
        livekit_api::services::room::RoomClient::with_api_key(&self.http_url(), KEY, SECRET)
    }

    fn next_addr(&self) -> SocketAddr {
        let next = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.addrs[next % self.addrs.len()]
    }

    pub fn node_url(&self, node: usize) -> String {
        format!("ws://{}", self.addrs[node])
    }

    pub fn node_http_url(&self, node: usize) -> String {
        format!("http://{}", self.addrs[node])
    }

    /// The metric `name` (with its labels, if it has any) summed over the running
    /// nodes; a labelled counter no node has counted yet is 0.
    pub async fn metric_total(&self, name: &str) -> u64 {
        let mut total = 0;
        for (node, addr) in self.addrs.iter().enumerate() {
            if self.nodes[node].is_some() {
                total += metric_or_none(&format!("http://{addr}"), name)
                    .await
                    .unwrap_or(0);
            }
        }
        total
    }

    /// Freezes node `node` with SIGSTOP (or thaws it with SIGCONT): its sockets stay
    /// open and silent, as an overloaded or half-open server's would.
    pub fn freeze(&self, node: usize, frozen: bool) {
        let child = self.nodes[node].as_ref().expect("the node runs");
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
        if frozen {
            wait_until_stopped(child.id());
        }
    }

    /// Kills node `node` with SIGKILL: no goodbye, no cleanup.
    pub fn kill_node(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

/// `kill` returns before every thread of the process has stopped: each stops when it next
/// runs, and on a busy machine one may first answer a request. Waits (at most 5 s) until
/// /proc shows all of them stopped.
fn wait_until_stopped(pid: u32) {
    // `PID (COMM) STATE ...` in each thread's stat: T when stopped.
    let thread_states = || -> Vec<bool> {
        let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        threads
            .flatten()
            .map(|thread| {
                std::fs::read_to_string(thread.path().join("stat")).is_ok_and(|stat| {
                    stat.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
                })
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let stopped = thread_states();
        if !stopped.is_empty() && stopped.iter().all(|&stopped| stopped) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().flatten() {
            // A frozen process takes SIGKILL too; thawing first lets it be reaped at once.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A real `redis-server` on a Unix socket in the test's folder (no port for another
/// test to take in between), with nothing saved to disk unless durable.
pub struct RedisServer {
    child: Option<Child>,
    socket: std::path::PathBuf,
    dir: std::path::PathBuf,
    durable: bool,
}

impl RedisServer {
    pub fn start(dir: &std::path::Path) -> Self {
        Self::start_with(dir, false)
    }

    /// Writes everything to its append-only file before answering (`appendfsync
    /// always`), as a production Redis that must not lose acknowledged data does.
    pub fn start_durable(dir: &std::path::Path) -> Self {
        Self::start_with(dir, true)
    }

    fn start_with(dir: &std::path::Path, durable: bool) -> Self {
        let mut redis = RedisServer {
            child: None,
            socket: dir.join("redis.sock"),
            dir: dir.to_path_buf(),
            durable,
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// Stops it (SIGKILL): every connection to it drops, and unsaved data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts it (again) on the same socket.
    pub fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(&self.socket)
            .args(["--save", ""])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds access tokens the way an app backend would.
#[derive(Clone)]
pub struct Token {
    pub claims: Claims,
    secret: String,
}

impl Token {
    /// A token for `identity` in `room` that may update its own metadata.
    pub fn new(room: &str, identity: &str) -> Self {
        Token {
            claims: Claims {
                iss: KEY.into(),
                sub: identity.into(),
                exp: Some(unix_now() + 3600),
                video: VideoGrant {
                    room: room.into(),
                    room_join: true,
                    can_update_own_metadata: Some(true),
                    ..Default::default()
                },
                ..Default::default()
            },
            secret: SECRET.into(),
        }
    }

    pub fn with(mut self, change: impl FnOnce(&mut Claims)) -> Self {
        change(&mut self.claims);
        self
    }

    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = secret.into();
        self
    }

    pub fn store_grant(self, grant: RoomStateGrant) -> Self {
        self.with(|claims| claims.roomstate = Some(grant))
    }

    pub fn sign(&self) -> String {
        mint_token(&self.claims, &self.secret)
    }
}

/// Everything a listener heard, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    Key(String, Option<Value>),
    StoreAvailable,
    Connection(ConnectionState),
    Joined(String),
    Left(String),
    Attributes(String, Vec<String>),
    Metadata(String, String, String),
    Name(String, String, String),
    RoomMetadata(String),
}

#[derive(Default)]
pub struct Recorder {
    heard: Mutex<Vec<Heard>>,
    changed: tokio::sync::Notify,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn push(&self, heard: Heard) {
        self.heard.lock().push(heard);
        self.changed.notify_waiters();
    }

    pub fn heard(&self) -> Vec<Heard> {
        self.heard.lock().clone()
    }

    /// The values heard for `key`, in order.
    pub fn values(&self, key: &str) -> Vec<Option<Value>> {
        self.heard()
            .into_iter()
            .filter_map(|heard| match heard {
                Heard::Key(k, value) if k == key => Some(value),
                _ => None,
            })
            .collect()
    }

    /// Waits until `done` holds for what was heard; fails the test after `PATIENCE`.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Heard]) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let changed = self.changed.notified();
            if done(&self.heard()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("waited {PATIENCE:?} for {what}; heard {:#?}", self.heard());
            }
        }
    }

    pub async fn wait_for(&self, heard: Heard) {
        let what = format!("{heard:?}");
        self.wait_until(&what, |all| all.contains(&heard)).await
    }
}

impl KeyChangeListener for Recorder {
    fn on_key_changed(&self, key: String, entry: Option<StoreEntry>) {
        self.push(Heard::Key(key, entry.map(|entry| entry.value)));
    }
}

impl RoomListener for Recorder {
    fn on_session_store_available(&self, _store: SessionStore) {
        self.push(Heard::StoreAvailable);
    }
    fn on_connection_state_changed(&self, state: ConnectionState) {
        self.push(Heard::Connection(state));
    }
    fn on_participant_joined(&self, participant: Participant) {
        self.push(Heard::Joined(participant.identity));
    }
    fn on_participant_left(&self, participant: Participant) {
        self.push(Heard::Left(participant.identity));
    }
    fn on_attributes_changed(&self, participant: Participant, changed_keys: Vec<String>) {
        self.push(Heard::Attributes(participant.identity, changed_keys));
    }
    fn on_metadata_changed(&self, participant: Participant, old: String, new: String) {
        self.push(Heard::Metadata(participant.identity, old, new));
    }
    fn on_name_changed(&self, participant: Participant, old: String, new: String) {
        self.push(Heard::Name(participant.identity, old, new));
    }
    fn on_room_metadata_changed(&self, _old: String, new: String) {
        self.push(Heard::RoomMetadata(new));
    }
}

pub fn fast_options() -> ConnectOptions {
    ConnectOptions {
        request_timeout: Duration::from_secs(10),
        reconnect_backoff_min: Duration::from_millis(20),
        reconnect_backoff_max: Duration::from_millis(200),
        ..ConnectOptions::default()
    }
}

/// A client: a room and the recorder that hears it.
pub struct Client {
    pub room: Room,
    pub heard: Arc<Recorder>,
}

impl Client {
    pub async fn join(url: &str, token: &Token) -> Client {
        Self::try_join(url, token)
            .await
            .unwrap_or_else(|error| panic!("{} could not join: {error}", token.claims.sub))
    }

    pub async fn try_join(url: &str, token: &Token) -> Result<Client, RoomError> {
        Self::join_with_jwt(url, &token.sign()).await
    }

    /// Joins with a token minted elsewhere (LiveKit's SDKs, the CLI).
    pub async fn join_with_jwt(url: &str, jwt: &str) -> Result<Client, RoomError> {
        Self::join_with_options(url, jwt, fast_options()).await
    }

    pub async fn join_with_options(
        url: &str,
        jwt: &str,
        options: ConnectOptions,
    ) -> Result<Client, RoomError> {
        let heard = Recorder::new();
        let room = Room::connect(url, jwt, heard.clone(), options).await?;
        Ok(Client { room, heard })
    }

    pub fn store(&self) -> SessionStore {
        self.room.session_store()
    }

    /// Observes `keys` with a new recorder.
    pub fn observe(&self, keys: &[&str]) -> Arc<Recorder> {
        let recorder = Recorder::new();
        self.store()
            .add_key_change_listener(
                keys.iter().map(|key| key.to_string()).collect(),
                recorder.clone(),
            )
            .unwrap();
        recorder
    }
}

/// A TCP proxy in front of the server whose connections a test can cut, or stall (stop
/// passing server frames on, as a client that does not read would), as a network would.
pub struct Proxy {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    stalled: Arc<tokio::sync::watch::Sender<bool>>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let stalled = Arc::new(tokio::sync::watch::channel(false).0);
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tracked, stall, refuse) = (connections.clone(), stalled.clone(), refusing.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if refuse.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection fail
                }
                let stall = stall.subscribe();
                let task = tokio::spawn(async move {
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    // A small window, so that a stall backs up into the server quickly; not
                    // below an MSS of loopback (64 KiB), or the window never reopens by a
                    // whole segment and the server waits on TCP's persist timer, for
                    // seconds, after the stall ends.
                    socket.set_recv_buffer_size(65536).unwrap();
                    let Ok(outbound) = socket.connect(target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = inbound.into_split();
                    let (mut server_read, mut server_write) = outbound.into_split();
                    let upstream = tokio::io::copy(&mut client_read, &mut server_write);
                    let downstream =
                        forward_unless_stalled(&mut server_read, &mut client_write, stall);
                    tokio::select! { _ = upstream => {}, _ = downstream => {} }
                });
                tracked.lock().push(task.abort_handle());
            }
        });
        Proxy {
            addr,
            connections,
            stalled,
            refusing,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Drops every connection through the proxy, both ways.
    pub fn cut(&self) {
        for connection in self.connections.lock().drain(..) {
            connection.abort();
        }
    }

    /// Stops passing the server's bytes on (or starts again).
    pub fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// Refuses new connections (or accepts them again).
    pub fn refuse(&self, refusing: bool) {
        self.refusing
            .store(refusing, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn forward_unless_stalled(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 4096];
    loop {
        if stalled.wait_for(|stalled| !*stalled).await.is_err() {
            return;
        }
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                // A read may have been waiting when the stall began: hold what it got.
                if stalled.wait_for(|stalled| !*stalled).await.is_err() {
                    return;
                }
                if to.write_all(&buffer[..read]).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A node's value of the metric `name` (with its labels, if it has any), from its
/// `/metrics`.
pub async fn metric(node_http_url: &str, name: &str) -> u64 {
    metric_or_none(node_http_url, name)
        .await
        .unwrap_or_else(|| panic!("no metric {name}"))
}

async fn metric_or_none(node_http_url: &str, name: &str) -> Option<u64> {
    let metrics = reqwest::get(format!("{node_http_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}

/// The WebSocket URL that joins `identity` to `room` at `base` (a node's `ws://` or
/// `http://` URL), the token in the query.
pub fn rtc_url(base: &str, room: &str, identity: &str) -> String {
    format!(
        "{base}/rtc?protocol=1&access_token={}",
        Token::new(room, identity).sign()
    )
}

/// Runs `future` to its end on the calling thread, outside any tokio runtime: as Kotlin's
/// coroutines and Swift's tasks poll the engine's futures, on threads of their own.
pub fn block_on_without_a_runtime<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}
