//! A mutation fuzzer for what strangers and participants can send: WebSocket frames to
//! a real `roomstate serve` process, Twirp bodies to its server API, and the same
//! frames through the protocol's decoder in this process.
//!
//! The oracle: the decoder never panics and what it accepts survives a round trip; the
//! server answers every frame in bounded time (a WebSocket ping sent after each frame
//! must come back), ends a connection only with a documented `goodbye`, answers every
//! API body with a Twirp error or a result (never a 500 or silence), stays healthy, and
//! never logs a panic. `scripts/test.sh` runs a short, seeded run (a unit test below);
//! `roomstate-bench fuzz` runs as long as asked.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roomstate_protocol::{ClientMessage, CloseReason, ServerMessage};
use roomstate_server::auth::{mint_token, unix_now};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::clients::token;
use crate::target::{API_KEY, API_SECRET};

/// Valid client frames: what the mutations start from. `{id}` is a fresh request id.
pub(crate) const FRAMES: &[&str] = &[
    r#"{"type":"set","id":{id},"key":"pinned","value":{"text":"hi","n":[1,2,3]}}"#,
    r#"{"type":"set","id":{id},"key":"k","value":"x","if_version":0}"#,
    r#"{"type":"delete","id":{id},"key":"pinned","if_version":3}"#,
    r#"{"type":"get","id":{id},"keys":["*","pinned","k"]}"#,
    r#"{"type":"observe","id":{id},"keys":["pinned","*"]}"#,
    r#"{"type":"unobserve","id":{id},"keys":["*"]}"#,
    r#"{"type":"update_participant","id":{id},"attributes":{"hand":"up","brb":""},"metadata":"m","name":"Al"}"#,
];

/// Valid server API calls: method path and body.
const API_CALLS: &[(&str, &str)] = &[
    (
        "roomstate.SessionStore/Get",
        r#"{"room":"fuzz","key":"pinned"}"#,
    ),
    ("roomstate.SessionStore/List", r#"{"room":"fuzz"}"#),
    (
        "roomstate.SessionStore/Set",
        r#"{"room":"fuzz","key":"k","value":{"a":1},"expected_version":0}"#,
    ),
    (
        "roomstate.SessionStore/Delete",
        r#"{"room":"fuzz","key":"k"}"#,
    ),
    ("livekit.RoomService/ListParticipants", r#"{"room":"fuzz"}"#),
    (
        "livekit.RoomService/UpdateParticipant",
        r#"{"room":"fuzz","identity":"fuzz-0","metadata":"m","attributes":{"a":"b"}}"#,
    ),
    (
        "livekit.RoomService/UpdateRoomMetadata",
        r#"{"room":"fuzz","metadata":"x"}"#,
    ),
    ("livekit.RoomService/ListRooms", r#"{}"#),
    (
        "livekit.RoomService/GetParticipant",
        r#"{"room":"fuzz","identity":"nobody"}"#,
    ),
];

/// Tokens a mutation inserts: edge values of every JSON type and of the protocol.
const INTERESTING: &[&str] = &[
    "null",
    "-1",
    "0",
    "1e309",
    "18446744073709551616",
    "9007199254740993",
    "true",
    "[]",
    "{}",
    r#""*""#,
    r#""""#,
    r#""\u0000""#,
    r#""\ud800""#,
    r#","keys":["*","*"]"#,
    r#""type":"leave""#,
    r#","id":0"#,
    r#""set""#,
    r#""get""#,
    "[[[[[[[[[[1]]]]]]]]]]",
];

pub struct Mutator {
    rng: StdRng,
}

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Mutator {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// One to four random mutations of `text`, on characters, so the result stays
    /// valid UTF-8 (a WebSocket text frame must be).
    pub fn mutate(&mut self, text: &str) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for _ in 0..self.rng.random_range(1..=4) {
            let at = self.rng.random_range(0..=chars.len());
            match self.rng.random_range(0..7) {
                0 if !chars.is_empty() => {
                    let at = at.min(chars.len() - 1);
                    chars[at] = char::from(self.rng.random_range(0x20u8..0x7f));
                }
                1 => {
                    let end = (at + self.rng.random_range(1..8)).min(chars.len());
                    chars.drain(at..end);
                }
                2 => {
                    let token = INTERESTING[self.rng.random_range(0..INTERESTING.len())];
                    chars.splice(at..at, token.chars());
                }
                3 => {
                    // Repeat a span many times: long keys, huge arrays, deep nesting.
                    let end = (at + self.rng.random_range(1..16)).min(chars.len());
                    let span: Vec<char> = chars[at..end].to_vec();
                    let times = self.rng.random_range(2..2000);
                    let repeated: Vec<char> = span
                        .iter()
                        .copied()
                        .cycle()
                        .take(span.len() * times)
                        .collect();
                    chars.splice(at..at, repeated);
                }
                4 => {
                    let long = "k".repeat(self.rng.random_range(200..400));
                    chars.splice(at..at, format!("\"{long}\"").chars());
                }
                5 => chars.truncate(at),
                _ => {
                    let extra =
                        char::from_u32(self.rng.random_range(0..0x11000)).unwrap_or('\u{fffd}');
                    chars.insert(at, extra);
                }
            }
        }
        chars.into_iter().collect()
    }

    /// A third of the time text mutations (malformed JSON, broken UTF-16 escapes,
    /// truncation); otherwise JSON-aware ones that keep the frame well-formed so that it
    /// reaches the room's rules: edge values in any field, grown arrays, a changed
    /// `type`, a dropped or an unknown field. Most JSON-aware frames keep a fresh `id`.
    pub fn mutate_frame(&mut self, frame: &str, fresh_id: u64) -> String {
        if self.rng.random_bool(0.3) {
            return self.mutate(frame);
        }
        let mut value: serde_json::Value =
            serde_json::from_str(frame).expect("seed frames are JSON");
        for _ in 0..self.rng.random_range(1..=2) {
            self.mutate_value(&mut value, 0);
        }
        if self.rng.random_bool(0.8) {
            if let Some(object) = value.as_object_mut() {
                object.insert("id".into(), fresh_id.into());
            }
        }
        value.to_string()
    }

    fn edge_value(&mut self) -> serde_json::Value {
        use serde_json::json;
        match self.rng.random_range(0..12) {
            0 => json!(null),
            1 => json!(-1),
            2 => json!(u64::MAX),
            3 => json!(1e300),
            4 => json!(""),
            5 => json!("*"),
            6 => json!("k".repeat(self.rng.random_range(250..300))),
            7 => json!("v".repeat(self.rng.random_range(900..1100))),
            8 => json!([]),
            9 => json!({}),
            10 => json!(["*", "*", "a", "a"]),
            _ => json!({"nested": [[[[{"deep": true}]]]]}),
        }
    }

    fn mutate_value(&mut self, value: &mut serde_json::Value, depth: usize) {
        use serde_json::Value;
        match value {
            Value::Object(object) if !object.is_empty() => {
                let keys: Vec<String> = object.keys().cloned().collect();
                let key = keys[self.rng.random_range(0..keys.len())].clone();
                match self.rng.random_range(0..6) {
                    0 => {
                        object.remove(&key);
                    }
                    1 => {
                        let edge = self.edge_value();
                        object.insert(format!("{key}_extra"), edge);
                    }
                    2 if key == "type" => {
                        let types = [
                            "set",
                            "delete",
                            "get",
                            "observe",
                            "unobserve",
                            "update_participant",
                            "leave",
                            "joined",
                        ];
                        object.insert(key, types[self.rng.random_range(0..types.len())].into());
                    }
                    3 => {
                        let edge = self.edge_value();
                        object.insert(key, edge);
                    }
                    _ if depth < 4 => {
                        self.mutate_value(object.get_mut(&key).expect("listed"), depth + 1)
                    }
                    _ => {}
                }
            }
            Value::Array(items) if !items.is_empty() => match self.rng.random_range(0..3) {
                0 => {
                    // Grow it: many distinct keys, or one key many times.
                    let times = [50, 101, 150, 5000][self.rng.random_range(0..4)];
                    let distinct = self.rng.random_bool(0.5);
                    let first = items[0].clone();
                    for n in 0..times {
                        items.push(match (&first, distinct) {
                            (Value::String(text), true) => Value::String(format!("{text}{n}")),
                            _ => first.clone(),
                        });
                    }
                }
                1 => {
                    let at = self.rng.random_range(0..items.len());
                    items[at] = self.edge_value();
                }
                _ if depth < 4 => {
                    let at = self.rng.random_range(0..items.len());
                    self.mutate_value(&mut items[at], depth + 1);
                }
                _ => {}
            },
            leaf => *leaf = self.edge_value(),
        }
    }

    pub(crate) fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.random_range(0..from.len())]
    }
}

/// What one run found.
#[derive(Debug, Default)]
pub struct Report {
    pub frames: u64,
    pub replies: u64,
    pub rejected: u64,
    pub goodbyes: u64,
    pub api_calls: u64,
    pub decoded: u64,
    pub failures: Vec<String>,
}

/// The protocol's decoder alone: never panics, and every frame it accepts
/// re-encodes to a frame it decodes to the same message.
pub fn fuzz_decoder(iterations: u64, seed: u64, report: &mut Report) {
    let mut mutator = Mutator::new(seed);
    for n in 0..iterations {
        let frame = mutator.pick(FRAMES).replace("{id}", &n.to_string());
        let mutated = mutator.mutate_frame(&frame, n);
        if let Ok(message) = serde_json::from_str::<ClientMessage>(&mutated) {
            report.decoded += 1;
            let again = serde_json::to_string(&message).expect("a decoded message encodes");
            let round_trip: ClientMessage = serde_json::from_str(&again).expect("re-decodes");
            if round_trip != message {
                report
                    .failures
                    .push(format!("round trip changed {mutated}"));
            }
        }
    }
}

/// A server process with default limits, its stderr kept to look for panics.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: std::path::PathBuf,
    _dir: std::path::PathBuf,
}

impl Server {
    pub fn start(roomstate_bin: &std::path::Path, unthrottled: bool) -> Server {
        Self::start_with(Command::new(roomstate_bin), unthrottled)
    }

    /// The same, on the bench's server core (`taskset`), for measurements.
    pub fn start_pinned(roomstate_bin: &std::path::Path) -> Server {
        let program = roomstate_bin.to_str().expect("a UTF-8 path");
        Self::start_with(crate::target::pinned(program), false)
    }

    fn start_with(mut command: Command, unthrottled: bool) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "roomstate-fuzz-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("fuzz.toml");
        // Default limits and timeouts: the fuzzer attacks what ships. Only the inbound
        // rate is raised (it would just slow the run down), when `unthrottled`.
        let rate = if unthrottled {
            "client_requests_per_second = 1000000\nclient_bytes_per_second = 1000000000\naddress_requests_per_second = 0\n"
        } else {
            ""
        };
        std::fs::write(
            &config,
            format!("bind = \"127.0.0.1:0\"\n{rate}[keys]\n{API_KEY} = \"{API_SECRET}\"\n"),
        )
        .unwrap();
        let log = dir.join("stderr.log");
        command
            .args(["serve", "--log", "warn", "--config"])
            .arg(&config)
            .stderr(std::fs::File::create(&log).unwrap());
        let (child, addr) = crate::target::spawn_listening(command, "roomstate serve");
        Server {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics the server logged so far.
    pub fn panics(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("panicked"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn join(addr: SocketAddr, identity: &str) -> Result<Socket, String> {
    let url = format!(
        "ws://{addr}/rtc?protocol=1&access_token={}",
        token("fuzz", identity)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|error| format!("join failed: {error}"))?;
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.contains(r#""type":"joined""#) => Ok(socket),
        other => Err(format!("no joined frame: {other:?}")),
    }
}

/// How waiting for the ping's pong after a frame ended.
enum AfterFrame {
    Answered,
    Closed,
}

/// Reads until the pong for `marker` comes back, counting what arrives on the way.
async fn until_pong(
    socket: &mut Socket,
    marker: &[u8],
    report: &mut Report,
) -> Result<AfterFrame, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .map_err(|_| "no answer within 10 s: the server stalled".to_string())?;
        match frame {
            Some(Ok(Message::Pong(payload))) if payload.as_ref() == marker => {
                return Ok(AfterFrame::Answered)
            }
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage::Reply(_)) => report.replies += 1,
                Ok(ServerMessage::Rejected { .. }) => report.rejected += 1,
                Ok(ServerMessage::Goodbye { reason, .. }) => {
                    report.goodbyes += 1;
                    if !matches!(reason, CloseReason::Left | CloseReason::FrameTooLarge) {
                        return Err(format!("goodbye {reason:?} to a lone fuzzing client"));
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    return Err(format!(
                        "the server sent an unreadable frame ({error}): {text}"
                    ))
                }
            },
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(AfterFrame::Closed),
            Some(Ok(_)) => {}
        }
    }
}

/// Sends `iterations` mutated frames over WebSocket and mutated bodies to the API.
pub async fn fuzz_server(addr: SocketAddr, iterations: u64, seed: u64, report: &mut Report) {
    let mut mutator = Mutator::new(seed);
    let mut identity = 0;
    let mut socket = match join(addr, "fuzz-0").await {
        Ok(socket) => socket,
        Err(failure) => return report.failures.push(failure),
    };
    for n in 0..iterations {
        if n % 4 == 3 {
            api_call(addr, &mut mutator, report).await;
            continue;
        }
        let frame = mutator.pick(FRAMES).replace("{id}", &(n + 1).to_string());
        let mutated = mutator.mutate_frame(&frame, n + 1);
        report.frames += 1;
        let marker = n.to_be_bytes();
        let sent = async {
            socket.send(Message::text(mutated.clone())).await?;
            socket.send(Message::Ping(marker.to_vec().into())).await
        };
        let outcome = match sent.await {
            Ok(()) => until_pong(&mut socket, &marker, report).await,
            Err(_) => Ok(AfterFrame::Closed),
        };
        // A frame that used an id above the next fresh one makes every later request of
        // this participant "not above the last": start over as another, so the run
        // keeps reaching the rules.
        let id_ahead = serde_json::from_str::<serde_json::Value>(&mutated)
            .ok()
            .and_then(|frame| frame.get("id")?.as_u64())
            .is_some_and(|id| id > n + 1);
        match outcome {
            Ok(AfterFrame::Answered) if !id_ahead => {}
            Ok(_) => {
                identity += 1;
                match join(addr, &format!("fuzz-{identity}")).await {
                    Ok(again) => socket = again,
                    Err(failure) => {
                        report
                            .failures
                            .push(format!("after {mutated:.200}: {failure}"));
                        return;
                    }
                }
            }
            Err(failure) => {
                report
                    .failures
                    .push(format!("{failure}; the frame: {mutated:.300}"));
                return;
            }
        }
    }
}

/// One mutated server API call: any answer but a 5xx (503 aside) or silence is fine.
async fn api_call(addr: SocketAddr, mutator: &mut Mutator, report: &mut Report) {
    let (path, body) = API_CALLS[mutator.rng.random_range(0..API_CALLS.len())];
    let body = if mutator.rng.random_bool(0.5) {
        mutator.mutate(body)
    } else {
        let mut value: serde_json::Value =
            serde_json::from_str(body).expect("seed bodies are JSON");
        mutator.mutate_value(&mut value, 0);
        value.to_string()
    };
    report.api_calls += 1;
    let claims = roomstate_protocol::Claims {
        iss: API_KEY.into(),
        exp: Some(unix_now() + 600),
        video: roomstate_protocol::VideoGrant {
            room: "fuzz".into(),
            room_admin: true,
            room_list: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let request = format!(
        "POST /twirp/{path} HTTP/1.1\r\nHost: fuzz\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        mint_token(&claims, API_SECRET),
        body.len()
    );
    let answer = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.ok()?;
        Some(String::from_utf8_lossy(&response).to_string())
    };
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Some(response)) => {
            let status: u16 = response
                .split_whitespace()
                .nth(1)
                .and_then(|status| status.parse().ok())
                .unwrap_or(0);
            if status == 0 || (status >= 500 && status != 503) {
                report.failures.push(format!(
                    "{path} answered {status} to {body:.300}: {response:.300}"
                ));
            }
        }
        _ => report
            .failures
            .push(format!("{path} gave no answer to {body:.300}")),
    }
}

/// A whole run: the decoder, then a server process; the report says what broke.
pub async fn run(roomstate_bin: &std::path::Path, iterations: u64, seed: u64) -> Report {
    let mut report = Report::default();
    fuzz_decoder(iterations * 10, seed, &mut report);
    let server = Server::start(roomstate_bin, true);
    fuzz_server(server.addr, iterations, seed, &mut report).await;
    let healthy = tokio::net::TcpStream::connect(server.addr).await.is_ok()
        && join(server.addr, "after-the-fuzz").await.is_ok();
    if !healthy {
        report
            .failures
            .push("the server is not healthy after the run".into());
    }
    report.failures.extend(server.panics());
    report
}

/// The seed the tests' runs use: ROOMSTATE_FUZZ_SEED, 1 by default.
#[cfg(test)]
pub(crate) fn seed_for_tests() -> u64 {
    std::env::var("ROOMSTATE_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run `scripts/test.sh` makes: seeded (ROOMSTATE_FUZZ_SEED), a bounded number
    /// of frames (ROOMSTATE_FUZZ_ITERATIONS, 2000 by default), against the debug build.
    #[test]
    fn a_short_seeded_fuzz_run_finds_nothing() {
        let seed = seed_for_tests();
        let iterations = std::env::var("ROOMSTATE_FUZZ_ITERATIONS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2000);
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
            });
        let bin = target.join("debug/roomstate");
        assert!(
            bin.exists(),
            "{} is missing: cargo build -p roomstate-server",
            bin.display()
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = runtime.block_on(run(&bin, iterations, seed));
        assert!(
            report.failures.is_empty(),
            "seed {seed}: {:#?}",
            report.failures
        );
        // The run reached the server: frames were answered, some refused, some accepted.
        assert!(
            report.replies > 0 && report.rejected > 0 && report.api_calls > 0,
            "{report:?}"
        );
        assert!(report.decoded > 0, "{report:?}");
    }

    #[test]
    fn mutations_are_deterministic_for_a_seed() {
        let a: Vec<String> = (0..50)
            .map({
                let mut m = Mutator::new(7);
                move |_| m.mutate(FRAMES[0])
            })
            .collect();
        let b: Vec<String> = (0..50)
            .map({
                let mut m = Mutator::new(7);
                move |_| m.mutate(FRAMES[0])
            })
            .collect();
        assert_eq!(a, b);
        assert!(a.iter().any(|frame| frame != FRAMES[0]));
    }
}
