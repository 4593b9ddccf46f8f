//! The hostile-participant load test: one participant sends the worst frames the
//! default limits allow (a full store read back with `*` and the most distinct keys a
//! request may name, ~1 MB frames of duplicate keys, maximum-size writes, observes
//! against the cap, oversize frames, pipelined without reading), while a prober times
//! `/healthz` and the server's resident memory is sampled. The goal (docs/benchmarks.md):
//! memory bounded by the configured limits, `/healthz` p99 under 50 ms throughout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::clients::token;
use crate::fuzz::Server;
use crate::stats::{histogram, Percentiles};

#[derive(Debug, Serialize)]
pub struct Hostile {
    pub seconds: u64,
    pub frames_sent: u64,
    pub connections_cut: u64,
    pub healthz: Percentiles,
    pub rss_before_bytes: u64,
    pub rss_max_bytes: u64,
    pub rss_after_bytes: u64,
}

/// The frames one attack round sends, from cheap to worst.
fn attack_frames(round: u64, first_id: u64) -> Vec<String> {
    let value = "v".repeat(1000);
    let long_keys: Vec<String> = (0..100)
        .map(|n| format!("{n:03}{}", "k".repeat(250)))
        .collect();
    let mut star: Vec<&str> = long_keys.iter().map(String::as_str).collect();
    star.push("*");
    let duplicates: Vec<&str> = std::iter::repeat_n("k00", 200_000).collect();
    let mut frames = Vec::new();
    let mut id = first_id;
    let mut next = |frame: serde_json::Value| {
        let mut frame = frame;
        frame["id"] = id.into();
        id += 1;
        frame.to_string()
    };
    // A store at its limit: 63 values of 1,000 bytes (64 KiB in all).
    for n in 0..63 {
        frames.push(next(serde_json::json!({"type": "set", "key": format!("k{n:02}"), "value": format!("{value}{round}")})));
    }
    for _ in 0..20 {
        frames.push(next(serde_json::json!({"type": "get", "keys": star})));
    }
    frames.push(next(serde_json::json!({"type": "get", "keys": duplicates})));
    frames.push(next(
        serde_json::json!({"type": "observe", "keys": long_keys}),
    ));
    frames.push(next(serde_json::json!({"type": "observe", "keys": ["*"]})));
    frames
}

async fn join(addr: SocketAddr, identity: &str) -> Option<crate::fuzz::Socket> {
    let url = format!(
        "ws://{addr}/rtc?protocol=1&access_token={}",
        token("hostile", identity)
    );
    let (socket, _) = tokio_tungstenite::connect_async(url).await.ok()?;
    Some(socket)
}

/// Attacks until `until`; returns (frames sent, connections the server cut).
async fn attack(addr: SocketAddr, until: Instant, reads: bool) -> (u64, u64) {
    let (mut sent, mut cut, mut round) = (0u64, 0u64, 0u64);
    let name = if reads { "reader" } else { "sloth" };
    while Instant::now() < until {
        let Some(socket) = join(addr, &format!("{name}-{round}")).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (mut sink, mut stream) = socket.split();
        let drain = tokio::spawn(async move {
            // The sloth reads nothing, so its replies back up into the server.
            if reads {
                while let Some(Ok(_)) = stream.next().await {}
            } else {
                let _keep = stream;
                std::future::pending::<()>().await;
            }
        });
        let mut id = 1;
        'connection: while Instant::now() < until {
            round += 1;
            let frames = attack_frames(round, id);
            id += frames.len() as u64;
            for frame in frames {
                let send =
                    tokio::time::timeout(Duration::from_secs(2), sink.send(Message::text(frame)));
                if !matches!(send.await, Ok(Ok(()))) {
                    cut += 1;
                    break 'connection;
                }
                sent += 1;
            }
            // A frame over the 1 MiB limit: the server says goodbye (1009).
            if round % 10 == 0 {
                let _ = sink.send(Message::text("x".repeat(1_100_000))).await;
                sent += 1;
                cut += 1;
                break 'connection;
            }
        }
        drain.abort();
    }
    (sent, cut)
}

/// `GET /healthz` over a fresh connection, timed from before connecting.
async fn probe(addr: SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    tcp.set_nodelay(true).ok()?;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.ok()?;
    response
        .starts_with(b"HTTP/1.1 200")
        .then(|| started.elapsed())
}

/// How long after the attack the server's memory is measured again.
const SETTLE: Duration = Duration::from_secs(16);

pub async fn run(roomstate_bin: &std::path::Path, seconds: u64) -> Hostile {
    let server = Server::start_pinned(roomstate_bin);
    let addr = server.addr;
    let pid = server.pid();
    let rss_before = crate::target::rss_of(pid);
    let until = Instant::now() + Duration::from_secs(seconds);
    let attackers = [
        tokio::spawn(attack(addr, until, true)),
        tokio::spawn(attack(addr, until, false)),
    ];
    let mut latencies = histogram();
    let mut rss_max = rss_before;
    let mut failed_probes = 0u64;
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_secs(5), probe(addr)).await {
            Ok(Some(latency)) => {
                latencies.record(latency.as_micros().max(1) as u64).unwrap();
            }
            _ => failed_probes += 1,
        }
        rss_max = rss_max.max(crate::target::rss_of(pid));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut frames_sent, mut connections_cut) = (0, 0);
    for attacker in attackers {
        let (sent, cut) = attacker.await.unwrap_or((0, 0));
        frames_sent += sent;
        connections_cut += cut;
    }
    // Measured again once everything the attack held is gone: a sloth's last write may
    // take the default write timeout (10 s), then the server's next trim (every 5 s)
    // gives the freed memory back.
    tokio::time::sleep(SETTLE).await;
    let rss_after = crate::target::rss_of(pid);
    assert_eq!(
        failed_probes, 0,
        "/healthz failed {failed_probes} times under attack"
    );
    let panics = server.panics();
    assert!(panics.is_empty(), "the server panicked: {panics:?}");
    Hostile {
        seconds,
        frames_sent,
        connections_cut,
        healthz: Percentiles::of(&latencies),
        rss_before_bytes: rss_before,
        rss_max_bytes: rss_max,
        rss_after_bytes: rss_after,
    }
}
