//! The fixed workloads. Each runs against one `Target` and returns what it measured.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{
    delivered, join, nanos_since_epoch, next_text, parse_payload, payload, write_frame,
};
use crate::stats::{histogram, Percentiles};
use crate::target::{System, Target};

/// W1: one writer sets a 64-byte value at 20 Hz; `observers` observe it.
#[derive(Debug, Serialize)]
pub struct Propagation {
    pub system: System,
    pub observers: usize,
    pub writes: u64,
    /// One sample per delivery: intended send time to arrival at one observer.
    pub per_delivery: Percentiles,
    /// One sample per write: intended send time until the last observer had it.
    pub until_all: Percentiles,
    /// Deliveries that did not arrive within 5 s of the last write.
    pub missing: u64,
}

/// Runs the y-websocket driver (Node, on the load core) and reads the JSON it prints last.
fn run_peer_driver<T: serde::de::DeserializeOwned>(args: &[&str]) -> T {
    let output = std::process::Command::new("taskset")
        .args(["-c", &crate::target::LOAD_CORE.to_string(), "node"])
        .arg(crate::target::peer_dir().join("driver.mjs"))
        .args(args)
        .output()
        .expect("run the y-websocket driver");
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|error| {
        panic!(
            "the y-websocket driver said {text:?} ({error}); stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// W1 against y-websocket: its own Node driver (Yjs clients) on the load core.
pub fn propagation_peer(target: &Target, observers: usize, seconds: u64) -> Propagation {
    #[derive(serde::Deserialize)]
    struct Output {
        writes: u64,
        per_delivery: Percentiles,
        until_all: Percentiles,
        missing: u64,
    }
    let parsed: Output = run_peer_driver(&[
        "w1",
        &format!("ws://{}", target.addr),
        &observers.to_string(),
        &seconds.to_string(),
    ]);
    Propagation {
        system: System::YWebsocket,
        observers,
        writes: parsed.writes,
        per_delivery: parsed.per_delivery,
        until_all: parsed.until_all,
        missing: parsed.missing,
    }
}

pub async fn propagation(target: &Target, observers: usize, seconds: u64) -> Propagation {
    const RATE_HZ: u64 = 20;
    let system = target.system;
    let room = format!("w1-{observers}");
    let writes = RATE_HZ * seconds;
    let last_arrival: Arc<Vec<AtomicU64>> =
        Arc::new((0..writes).map(|_| AtomicU64::new(0)).collect());
    let arrivals: Arc<Vec<AtomicU32>> = Arc::new((0..writes).map(|_| AtomicU32::new(0)).collect());
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for n in 0..observers {
        // The writer is on the first node; in a cluster, every other observer is not.
        let (_sink, mut stream) = join(
            system,
            target.addr_for(n + 1),
            &room,
            &format!("o{n}"),
            &["k"],
            source_for(n),
        )
        .await;
        let (last_arrival, arrivals, mut stopped) =
            (last_arrival.clone(), arrivals.clone(), stopped.clone());
        tasks.push(tokio::spawn(async move {
            let _keep = _sink;
            let mut latencies = histogram();
            loop {
                tokio::select! {
                    frame = stream.next() => {
                        let Some(Ok(Message::Text(frame))) = frame else { break };
                        let now = nanos_since_epoch(Instant::now());
                        let Some((index, intended)) = delivered(system, frame.as_str()).and_then(parse_payload) else { continue };
                        latencies.record(now.saturating_sub(intended) / 1000).ok();
                        last_arrival[index as usize].fetch_max(now, Ordering::Relaxed);
                        arrivals[index as usize].fetch_add(1, Ordering::Relaxed);
                    }
                    _ = stopped.changed() => break,
                }
            }
            latencies
        }));
    }
    let (mut writer, mut replies) = join(system, target.addr, &room, "writer", &[], None).await;
    tokio::spawn(async move { while let Some(Ok(_)) = replies.next().await {} });
    // Open loop: each write is due at its own time, whether or not the last one is done.
    let start = Instant::now() + Duration::from_millis(100);
    for index in 0..writes {
        let intended = start + Duration::from_millis(index * 1000 / RATE_HZ);
        send_at(intended).await;
        writer
            .send(write_frame(
                system,
                index + 1,
                "k",
                &payload(index, intended),
            ))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while arrivals
        .iter()
        .any(|count| (count.load(Ordering::Relaxed) as usize) < observers)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send_replace(true);
    let mut per_delivery = histogram();
    for task in tasks {
        per_delivery.add(task.await.unwrap()).unwrap();
    }
    let mut until_all = histogram();
    let mut missing = 0;
    for index in 0..writes {
        let count = arrivals[index as usize].load(Ordering::Relaxed) as u64;
        missing += observers as u64 - count.min(observers as u64);
        if count as usize >= observers {
            let intended = nanos_since_epoch(start + Duration::from_millis(index * 1000 / RATE_HZ));
            until_all
                .record((last_arrival[index as usize].load(Ordering::Relaxed) - intended) / 1000)
                .ok();
        }
    }
    Propagation {
        system,
        observers,
        writes,
        per_delivery: Percentiles::of(&per_delivery),
        until_all: Percentiles::of(&until_all),
        missing,
    }
}

/// W4: many idle connections; memory per connection and idle CPU.
#[derive(Debug, Serialize)]
pub struct IdleConnections {
    pub system: System,
    pub connections: usize,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub bytes_per_connection: u64,
    /// Server CPU over `idle_seconds` with every connection open and quiet.
    pub idle_cpu_percent: f64,
    pub idle_seconds: u64,
    pub connect_seconds: f64,
}

pub async fn idle_connections(
    target: &Target,
    connections: usize,
    room_size: usize,
) -> IdleConnections {
    let system = target.system;
    let rss_before = target.rss_bytes();
    let started = Instant::now();
    let mut held = Vec::with_capacity(connections);
    // A few hundred handshakes at a time.
    for batch in (0..connections).collect::<Vec<_>>().chunks(256) {
        let joins = batch.iter().map(|&n| {
            let room = format!("w4-{}", n / room_size);
            async move {
                let (sink, mut stream) = join(
                    system,
                    target.addr_for(n),
                    &room,
                    &format!("c{n}"),
                    &["k"],
                    source_for(n),
                )
                .await;
                // Read (and answer pings) as a live client does, and say nothing.
                tokio::spawn(async move {
                    let _sink = sink;
                    while let Some(Ok(_)) = stream.next().await {}
                })
                .abort_handle()
            }
        });
        held.extend(futures_util::future::join_all(joins).await);
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    // Let the server settle, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = target.rss_bytes();
    const IDLE_SECONDS: u64 = 10;
    let cpu_before = target.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    let idle_cpu = target.cpu_seconds() - cpu_before;
    for client in held {
        client.abort();
    }
    IdleConnections {
        system,
        connections,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        bytes_per_connection: rss_after.saturating_sub(rss_before) / connections as u64,
        idle_cpu_percent: 100.0 * idle_cpu / IDLE_SECONDS as f64,
        idle_seconds: IDLE_SECONDS,
        connect_seconds,
    }
}

/// W5 (join): a new client until it holds a full 100-key store.
#[derive(Debug, Serialize)]
pub struct Join {
    pub system: System,
    pub keys: usize,
    pub joins: usize,
    /// Connect, authenticate, join, observe everything, receive every entry.
    pub until_full_store: Percentiles,
}

pub async fn join_full_store(target: &Target, keys: usize, joins: usize) -> Join {
    let room = "w5-join";
    let system = target.system;
    let (mut writer, mut stream) =
        join(system, target.addr_for(0), room, "seeder", &[], None).await;
    for key in 0..keys {
        let frame = write_frame(
            system,
            key as u64 + 1,
            &format!("key{key:03}"),
            &payload(key as u64, Instant::now()),
        );
        writer.send(frame).await.unwrap();
        next_text(&mut stream).await;
    }
    let mut samples = histogram();
    for n in 0..joins {
        let started = Instant::now();
        let (sink, mut stream) = join(
            system,
            target.addr_for(n + 1),
            room,
            &format!("j{n}"),
            &[],
            None,
        )
        .await;
        let (mut sink, stream_ref) = (sink, &mut stream);
        sink.send(Message::text(r#"{"type":"observe","id":1,"keys":["*"]}"#))
            .await
            .unwrap();
        let reply = loop {
            let frame = next_text(stream_ref).await;
            if frame.contains("\"type\":\"reply\"") {
                break frame;
            }
        };
        samples.record(started.elapsed().as_micros() as u64).ok();
        assert_eq!(
            reply.matches("\"key\":").count(),
            keys,
            "the whole store arrived"
        );
        let _ = sink.send(Message::text(r#"{"type":"leave"}"#)).await;
    }
    Join {
        system,
        keys,
        joins,
        until_full_store: Percentiles::of(&samples),
    }
}

/// Waits until `at`: the timer (1 ms granularity) gets close, a short spin does the rest,
/// so that late sends are the system's doing, not the timer's.
async fn send_at(at: Instant) {
    tokio::time::sleep_until((at - Duration::from_micros(1500)).into()).await;
    while Instant::now() < at {
        std::hint::spin_loop();
    }
}

/// Spreads clients over 127.0.0.x source addresses: one address has ~28k ports.
fn source_for(n: usize) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (n / 20_000) as u8)))
}

/// One rate step of W2.
#[derive(Debug, Serialize)]
pub struct ThroughputStep {
    pub offered_updates_per_second: u64,
    pub updates_per_second: f64,
    pub deliveries_per_second: f64,
    pub per_delivery: Percentiles,
    /// Server CPU during the step (100 = one core busy).
    pub server_cpu_percent: f64,
    /// The server's system calls during the step, per delivery (where perf can count
    /// them; see `Target::count_syscalls`).
    pub syscalls_per_delivery: Option<SyscallsPerDelivery>,
}

#[derive(Debug, Serialize)]
pub struct SyscallsPerDelivery {
    pub all: f64,
    pub writes: f64,
    pub reads: f64,
}

impl SyscallsPerDelivery {
    fn of(counted: Option<crate::target::Syscalls>, deliveries: u64) -> Option<Self> {
        let counted = counted?;
        let per = |count: u64| count as f64 / deliveries.max(1) as f64;
        Some(SyscallsPerDelivery {
            all: per(counted.all),
            writes: per(counted.writes),
            reads: per(counted.reads),
        })
    }
}

/// W2: `writers` writers, `observers` observers of every key, rising rates.
#[derive(Debug, Serialize)]
pub struct Throughput {
    pub system: System,
    pub one_key: bool,
    pub writers: usize,
    pub observers: usize,
    pub steps: Vec<ThroughputStep>,
    /// Observers whose last value of some key differs from the server's (roomstate).
    pub final_state_mismatches: Option<usize>,
}

pub async fn throughput(
    target: &Target,
    one_key: bool,
    rates: &[u64],
    step_seconds: u64,
) -> Throughput {
    const WRITERS: usize = 10;
    const OBSERVERS: usize = 10;
    let system = target.system;
    let room = format!("w2-{}", if one_key { "one" } else { "distinct" });
    let delivered_count = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let shared_latencies = Arc::new(parking_lot::Mutex::new(histogram()));
    let mut observer_tasks = Vec::new();
    for n in 0..OBSERVERS {
        let (sink, mut stream) = join(
            system,
            target.addr_for(n),
            &room,
            &format!("o{n}"),
            &["*"],
            None,
        )
        .await;
        let (count, latencies, mut stopped) = (
            delivered_count.clone(),
            shared_latencies.clone(),
            stopped.clone(),
        );
        observer_tasks.push(tokio::spawn(async move {
            let _keep = sink;
            let mut last: std::collections::BTreeMap<String, String> = Default::default();
            loop {
                tokio::select! {
                    frame = stream.next() => {
                        let Some(Ok(Message::Text(frame))) = frame else { break };
                        let now = nanos_since_epoch(Instant::now());
                        let Some(value) = delivered(system, frame.as_str()) else { continue };
                        if let Some((_, intended)) = parse_payload(value) {
                            // One thread runs the load generator: this lock is never contended.
                            latencies.lock().record(now.saturating_sub(intended) / 1000).ok();
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        if system.is_roomstate() {
                            if let Some(key) = crate::clients::string_field(frame.as_str(), "key") {
                                last.insert(key.to_string(), value.to_string());
                            }
                        }
                    }
                    _ = stopped.changed() => break,
                }
            }
            last
        }));
    }
    let mut writers = Vec::new();
    for n in 0..WRITERS {
        let (sink, mut replies) = join(
            system,
            target.addr_for(n + 1),
            &room,
            &format!("w{n}"),
            &[],
            None,
        )
        .await;
        tokio::spawn(async move { while let Some(Ok(_)) = replies.next().await {} });
        writers.push(sink);
    }
    let mut steps = Vec::new();
    let mut index = 0u64;
    for &rate in rates {
        shared_latencies.lock().reset();
        let delivered_before = delivered_count.load(Ordering::Relaxed);
        let cpu_before = target.cpu_seconds();
        let counting = target.count_syscalls();
        let start = Instant::now();
        let end = start + Duration::from_secs(step_seconds);
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        // Open loop in 1 ms batches: each write carries the time it was due.
        while Instant::now() < end {
            tick.tick().await;
            let due = ((Instant::now() - start).as_secs_f64() * rate as f64) as u64;
            while sent < due {
                let intended = start + Duration::from_secs_f64(sent as f64 / rate as f64);
                let writer = (sent as usize) % WRITERS;
                let key = if one_key {
                    "k".to_string()
                } else {
                    format!("k{writer}")
                };
                writers[writer]
                    .feed(write_frame(
                        system,
                        index + 1,
                        &key,
                        &payload(index, intended),
                    ))
                    .await
                    .unwrap();
                sent += 1;
                index += 1;
            }
            for writer in &mut writers {
                writer.flush().await.unwrap();
            }
        }
        // Let the step's tail arrive (bounded), then read the numbers.
        let expected = delivered_before + sent * OBSERVERS as u64;
        let drain_deadline = Instant::now() + Duration::from_secs(3);
        while delivered_count.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let cpu = target.cpu_seconds() - cpu_before;
        let syscalls = counting.and_then(|counting| counting.finish());
        let delivered_now = delivered_count.load(Ordering::Relaxed) - delivered_before;
        let percentiles = Percentiles::of(&shared_latencies.lock());
        let over = percentiles.p99_us > 100_000 || delivered_now < sent * OBSERVERS as u64;
        steps.push(ThroughputStep {
            offered_updates_per_second: rate,
            updates_per_second: sent as f64 / step_seconds as f64,
            deliveries_per_second: delivered_now as f64 / step_seconds as f64,
            per_delivery: percentiles,
            server_cpu_percent: 100.0 * cpu / elapsed,
            syscalls_per_delivery: SyscallsPerDelivery::of(syscalls, delivered_now),
        });
        if over {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send_replace(true);
    let mut views = Vec::new();
    for task in observer_tasks {
        views.push(task.await.unwrap());
    }
    let final_state_mismatches = system.is_roomstate().then(|| {
        // Every observer must end on the same last value for every key.
        let reference = &views[0];
        views.iter().filter(|view| *view != reference).count()
    });
    Throughput {
        system,
        one_key,
        writers: WRITERS,
        observers: OBSERVERS,
        steps,
        final_state_mismatches,
    }
}

/// W2 against y-websocket: its Node driver runs each rate (connecting its 20 Yjs
/// clients anew) while this process measures the server's CPU.
pub fn throughput_peer(
    target: &Target,
    one_key: bool,
    rates: &[u64],
    step_seconds: u64,
) -> Throughput {
    #[derive(serde::Deserialize)]
    struct Output {
        sent: u64,
        delivered: u64,
        per_delivery: Percentiles,
        final_state_mismatches: usize,
    }
    let mut steps = Vec::new();
    let mut final_state_mismatches = None;
    for &rate in rates {
        let cpu_before = target.cpu_seconds();
        let counting = target.count_syscalls();
        let parsed: Output = run_peer_driver(&[
            "w2",
            &format!("ws://{}", target.addr),
            if one_key { "one" } else { "distinct" },
            &rate.to_string(),
            &step_seconds.to_string(),
        ]);
        // Connection setup is counted too: it is small next to a step's updates.
        let cpu = target.cpu_seconds() - cpu_before;
        let syscalls = counting.and_then(|counting| counting.finish());
        let over = parsed.per_delivery.p99_us > 100_000 || parsed.delivered < parsed.sent * 10;
        steps.push(ThroughputStep {
            offered_updates_per_second: rate,
            updates_per_second: parsed.sent as f64 / step_seconds as f64,
            deliveries_per_second: parsed.delivered as f64 / step_seconds as f64,
            per_delivery: parsed.per_delivery,
            server_cpu_percent: 100.0 * cpu / step_seconds as f64,
            syscalls_per_delivery: SyscallsPerDelivery::of(syscalls, parsed.delivered),
        });
        final_state_mismatches = Some(parsed.final_state_mismatches);
        if over {
            break;
        }
    }
    Throughput {
        system: System::YWebsocket,
        one_key,
        writers: 10,
        observers: 10,
        steps,
        final_state_mismatches,
    }
}

/// W3: `rooms` rooms of 5 participants, each changing an attribute every 2 s.
#[derive(Debug, Serialize)]
pub struct ManyRooms {
    pub system: System,
    pub rooms: usize,
    pub updates_per_second: f64,
    pub server_cpu_percent: f64,
    /// Server CPU (percent of one core) per 1000 updates/s.
    pub cpu_percent_per_1000_updates: f64,
}

pub async fn many_rooms(target: &Target, rooms: usize, seconds: u64) -> ManyRooms {
    let mut participants = Vec::new();
    for room in 0..rooms {
        for n in 0..5 {
            let (sink, mut stream) = join(
                target.system,
                target.addr_for(n),
                &format!("w3-{room}"),
                &format!("p{n}"),
                &[],
                None,
            )
            .await;
            tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
            participants.push(sink);
        }
    }
    let period = Duration::from_secs(2);
    let count = participants.len();
    let cpu_before = target.cpu_seconds();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        // Participant i updates at i/count of each period: an even spread.
        let due = (start.elapsed().as_secs_f64() / period.as_secs_f64() * count as f64) as u64;
        while sent < due {
            let who = (sent as usize) % count;
            let frame = format!(
                r#"{{"type":"update_participant","id":{},"attributes":{{"status":"s{sent}"}}}}"#,
                sent / count as u64 + 1
            );
            participants[who].send(Message::text(frame)).await.unwrap();
            sent += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = 100.0 * (target.cpu_seconds() - cpu_before) / elapsed;
    let rate = sent as f64 / elapsed;
    ManyRooms {
        system: target.system,
        rooms,
        updates_per_second: rate,
        server_cpu_percent: cpu,
        cpu_percent_per_1000_updates: cpu / (rate / 1000.0),
    }
}

/// W5 (resume): `clients` clients behind a proxy that drops every connection at once;
/// how long until each has reconnected and resumed.
#[derive(Debug, Serialize)]
pub struct Resume {
    pub system: System,
    pub clients: usize,
    /// From the drop until each client had `resumed`.
    pub until_resumed: Percentiles,
    /// Clients that got `joined` (a fresh participant) instead of `resumed`.
    pub not_resumed: usize,
}

pub async fn resume_after_drop(target: &Target, clients: usize) -> Resume {
    let proxy = crate::clients::Proxy::start(target.addr).await;
    let (drop_signal, dropped) = watch::channel(None::<Instant>);
    let mut tasks = Vec::new();
    let ready = Arc::new(AtomicU32::new(0));
    for n in 0..clients {
        let room = format!("w5-resume-{}", n / 50);
        let path = format!(
            "/rtc?protocol=1&access_token={}",
            crate::clients::token(&room, &format!("r{n}"))
        );
        let socket = crate::clients::open(proxy.addr, &path, None).await;
        let (ready, mut dropped, proxy_addr) = (ready.clone(), dropped.clone(), proxy.addr);
        tasks.push(tokio::spawn(async move {
            let (_sink, mut stream) = socket.split();
            let joined: serde_json::Value = serde_json::from_str(&next_text(&mut stream).await).unwrap();
            let mut last_seq = joined["seq"].as_u64().unwrap();
            ready.fetch_add(1, Ordering::Relaxed);
            // Follow the room until the connection drops.
            while let Some(Ok(Message::Text(frame))) = stream.next().await {
                if let Some(seq) = frame.find("\"seq\":").and_then(|at| frame[at + 6..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()) {
                    last_seq = last_seq.max(seq);
                }
            }
            let cut_at = loop {
                if let Some(at) = *dropped.borrow() {
                    break at;
                }
                dropped.changed().await.unwrap();
            };
            let path = format!(
                "/rtc?protocol=1&access_token={}&resume_sid={}&resume_token={}&session_id={}&last_seq={last_seq}&last_reply_id=0",
                crate::clients::token(&room, &format!("r{n}")),
                joined["local"]["sid"].as_str().unwrap(),
                joined["resume_token"].as_str().unwrap(),
                joined["session_id"].as_str().unwrap(),
            );
            let (_sink, mut stream) = crate::clients::open(proxy_addr, &path, None).await.split();
            let first = next_text(&mut stream).await;
            (cut_at.elapsed(), first.contains("\"type\":\"resumed\""), (_sink, stream))
        }));
    }
    while (ready.load(Ordering::Relaxed) as usize) < clients {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop_signal.send_replace(Some(Instant::now()));
    proxy.cut();
    let mut samples = histogram();
    let mut not_resumed = 0;
    let mut keep = Vec::new();
    for task in tasks {
        let (elapsed, resumed, connection) = task.await.unwrap();
        samples.record(elapsed.as_micros() as u64).ok();
        not_resumed += usize::from(!resumed);
        keep.push(connection);
    }
    Resume {
        system: target.system,
        clients,
        until_resumed: Percentiles::of(&samples),
        not_resumed,
    }
}
