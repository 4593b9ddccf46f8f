//! What a participant or a stranger must not be able to do to the server: stall it,
//! grow it without bound, or crash a request. Each test sends what the adversarial run
//! found and checks the bounded, typed answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use futures_util::SinkExt;
use roomstate_protocol::{ErrorCode, Limit, Outcome, ReplyBody, ServerMessage};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::auth_and_limits::{next, raw_join, raw_join_at};
use crate::harness::{rtc_url, spawn_node, Client, Heard, TestServer, Token, KEY, SECRET};
use crate::server_api::{admin_token, post_json_to};

/// Sends a request and returns its reply's outcome.
async fn ask(
    socket: &mut crate::auth_and_limits::RawSocket,
    request: serde_json::Value,
) -> Outcome {
    socket
        .send(Message::text(request.to_string()))
        .await
        .unwrap();
    loop {
        match next(socket).await {
            ServerMessage::Reply(reply) => return reply.outcome,
            ServerMessage::Rejected { error, .. } => panic!("rejected: {error:?}"),
            _ => continue,
        }
    }
}

fn keys_limit(outcome: &Outcome) -> Option<(usize, usize)> {
    match outcome {
        Outcome::Error(error) if error.code == ErrorCode::LimitExceeded => error
            .limit
            .as_ref()
            .filter(|violation| violation.limit == Limit::Keys)
            .map(|violation| (violation.max, violation.actual)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_names_each_key_once_and_no_more_keys_than_a_store_holds() {
    let server = TestServer::start();
    let mut mallory = raw_join(&server, "mallory").await;
    let value = "v".repeat(1000);
    let set = ask(
        &mut mallory,
        json!({"type": "set", "id": 1, "key": "a", "value": value}),
    )
    .await;
    assert!(matches!(set, Outcome::Ok(_)), "{set:?}");
    // One key a hundred thousand times: one entry back, not a hundred megabytes.
    let many_a: Vec<&str> = std::iter::repeat_n("a", 100_000).collect();
    match ask(
        &mut mallory,
        json!({"type": "get", "id": 2, "keys": many_a}),
    )
    .await
    {
        Outcome::Ok(ReplyBody::Entries(entries)) => assert_eq!(entries.len(), 1),
        other => panic!("{other:?}"),
    }
    // `*` plus 50,000 distinct keys: refused at once, before any work on them.
    let mut distinct: Vec<String> = (0..50_000).map(|n| format!("k{n}")).collect();
    distinct.insert(0, "*".into());
    let refused = ask(
        &mut mallory,
        json!({"type": "get", "id": 3, "keys": distinct}),
    )
    .await;
    assert_eq!(keys_limit(&refused), Some((100, 101)), "{refused:?}");
    // `*` and exactly the limit's worth of names is fine.
    let mut allowed: Vec<String> = (0..100).map(|n| format!("k{n}")).collect();
    allowed.push("*".into());
    match ask(
        &mut mallory,
        json!({"type": "get", "id": 4, "keys": allowed}),
    )
    .await
    {
        Outcome::Ok(ReplyBody::Entries(entries)) => {
            assert_eq!(entries.len(), 101, "a + 100 absent")
        }
        other => panic!("{other:?}"),
    }
    // The room still answers another participant at once.
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    assert!(alice.store().get("a").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observed_keys_are_capped_and_a_refused_observe_changes_nothing() {
    let server = TestServer::start();
    let mut mallory = raw_join(&server, "mallory").await;
    let first: Vec<String> = (0..60).map(|n| format!("k{n}")).collect();
    let more: Vec<String> = (30..90).map(|n| format!("k{n}")).collect();
    let too_many: Vec<String> = (90..150).map(|n| format!("k{n}")).collect();
    assert!(matches!(
        ask(
            &mut mallory,
            json!({"type": "observe", "id": 1, "keys": first})
        )
        .await,
        Outcome::Ok(_)
    ));
    // 30 of these are new: 90 in all, under the 100-key limit.
    assert!(matches!(
        ask(
            &mut mallory,
            json!({"type": "observe", "id": 2, "keys": more})
        )
        .await,
        Outcome::Ok(_)
    ));
    let refused = ask(
        &mut mallory,
        json!({"type": "observe", "id": 3, "keys": too_many}),
    )
    .await;
    assert_eq!(keys_limit(&refused), Some((100, 150)), "{refused:?}");
    // k120 was refused: a change to it does not reach mallory; k10 still does.
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    alice.store().set("k120", json!(1)).await.unwrap();
    alice.store().set("k10", json!(2)).await.unwrap();
    loop {
        match next(&mut mallory).await {
            ServerMessage::StoreChanged(entry) => {
                assert_eq!(entry.key, "k10", "only observed keys arrive");
                break;
            }
            _ => continue,
        }
    }
}

/// Reads from a raw TCP socket until EOF or an error; returns what arrived.
fn read_to_close(mut socket: TcpStream) -> Vec<u8> {
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut received = Vec::new();
    let _ = socket.read_to_end(&mut received);
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_http_clients_are_cut_off() {
    let server = TestServer::with_config("http_timeout_ms = 300");
    let addr = server.addr;
    let outcomes = tokio::task::spawn_blocking(move || {
        // Connects and says nothing.
        let silent = TcpStream::connect(addr).unwrap();
        // Trickles headers, one byte at a time, never finishing.
        let mut slowloris = TcpStream::connect(addr).unwrap();
        let trickle = std::thread::spawn(move || {
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle().take(200) {
                if slowloris.write_all(&[*byte]).is_err() {
                    return true; // the server closed it
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        // Sends a body's first bytes and stops.
        let mut slow_body = TcpStream::connect(addr).unwrap();
        slow_body
            .write_all(b"POST /twirp/livekit.RoomService/ListRooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":")
            .unwrap();
        let silent_got = read_to_close(silent);
        let body_answer = String::from_utf8_lossy(&read_to_close(slow_body)).to_string();
        (silent_got, trickle.join().unwrap(), body_answer)
    })
    .await
    .unwrap();
    let (silent_got, slowloris_cut, body_answer) = outcomes;
    assert!(silent_got.is_empty() || String::from_utf8_lossy(&silent_got).contains("408"));
    assert!(slowloris_cut, "a client trickling headers was cut off");
    assert!(body_answer.starts_with("HTTP/1.1 408"), "{body_answer}");
    assert!(body_answer.contains("deadline_exceeded"), "{body_answer}");
    let health = reqwest::get(format!("{}/healthz", server.http_url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_share_of_connections() {
    let server =
        TestServer::with_config("max_connections_per_address = 4\nhttp_timeout_ms = 60000");
    let addr = server.addr;
    // Four idle sockets fill 127.0.0.1's share.
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let fifth = tokio::task::spawn_blocking(move || {
        let mut fifth = TcpStream::connect(addr).unwrap();
        let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        read_to_close(fifth)
    })
    .await
    .unwrap();
    assert!(
        fifth.is_empty(),
        "the fifth connection was closed unanswered"
    );
    let metrics = {
        drop(idle);
        // Once the idle sockets are gone, the address may connect again.
        let mut answer = None;
        for _ in 0..100 {
            // The node the sockets went to (in a cluster each node counts its own).
            let url = format!("{}/metrics", server.node_http_url(0));
            if let Ok(response) = reqwest::get(url).await {
                answer = Some(response.text().await.unwrap());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        answer.expect("the address can connect again")
    };
    let refused: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("roomstate_connections_refused_total "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0);
    // The fifth, and perhaps a retry above made before the server saw the idle close.
    assert!(refused >= 1, "{metrics}");
}

/// The soft and hard "Max open files" of a process, from /proc.
fn descriptor_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Started under a soft limit of 64 descriptors, as a shell's default 1,024 is to a
/// real node, the server raises it to the hard limit and serves more sockets than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_raises_its_descriptor_limit_and_serves_past_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roomstate.toml");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:0\"\nmax_connections_per_address = 1000\n[keys]\n{KEY} = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    let (child, addr) = spawn_node(&config, |command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec this only calls getrlimit and setrlimit, which
        // are async-signal-safe, on a struct of its own.
        unsafe {
            command.pre_exec(|| {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                limit.rlim_cur = 64;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    // Killed however the test ends, so a failure leaves no server behind.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = KillOnDrop(child);
    let (soft, hard) = descriptor_limits(child.0.id());
    assert_eq!(soft, hard, "the soft limit was raised to the hard one");
    assert!(
        hard >= 300,
        "this machine's hard limit ({hard}) allows the test"
    );
    // 200 open sockets, then a request: more descriptors than the old limit held.
    let held = tokio::task::spawn_blocking(move || {
        let sockets: Vec<TcpStream> = (0..200)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let mut probe = TcpStream::connect(addr).unwrap();
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let answer = String::from_utf8_lossy(&read_to_close(probe)).to_string();
        drop(sockets);
        answer
    })
    .await
    .unwrap();
    drop(child);
    assert!(held.starts_with("HTTP/1.1 200"), "{held}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_stops_reading_is_cut_within_the_write_timeout() {
    // A short queue and write timeout; the grace period is short so the departure shows.
    let server = TestServer::with_config(
        "outbound_queue = 16\nwrite_timeout_ms = 500\nreconnect_grace_ms = 200",
    );
    // On the sloth's node, so that node's connection gauge can be checked exactly.
    let observer = Client::join(&server.node_url(0), &Token::new("r", "observer")).await;
    // A reader whose receive buffer is tiny and who never reads.
    let socket = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(server.addr).await.unwrap()
    };
    let url = rtc_url(&server.node_url(0), "r", "sloth");
    let (mut sloth, _) = tokio_tungstenite::client_async(url, socket).await.unwrap();
    observer.heard.wait_for(Heard::Joined("sloth".into())).await;
    // Requests whose replies the sloth never reads, each reply a kilobyte.
    let value = "v".repeat(1000);
    let write = json!({"type": "set", "id": 1, "key": "big", "value": value});
    sloth.send(Message::text(write.to_string())).await.unwrap();
    for id in 2..=3000u32 {
        let get = json!({"type": "get", "id": id, "keys": ["big"]});
        if sloth.send(Message::text(get.to_string())).await.is_err() {
            break; // the server already let go
        }
    }
    // The server lets go of it, and the others see it leave after the grace period.
    observer.heard.wait_for(Heard::Left("sloth".into())).await;
    // Its connection is gone too (the writer gave up within the write timeout): only
    // the observer's is left on the node.
    let deadline = tokio::time::Instant::now() + crate::harness::PATIENCE;
    loop {
        let metrics = reqwest::get(format!("{}/metrics", server.node_http_url(0)))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("roomstate_connections 1\n") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sloth's connection is gone: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_keys_a_write_would_refuse() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let url = server.http_url();
    let token = admin_token("r");
    for key in ["*", ""] {
        let (status, body) = post_json_to(
            &url,
            "roomstate.SessionStore/Get",
            &token,
            json!({"room": "r", "key": key}),
        )
        .await;
        assert_eq!(status, 400, "{key:?}: {body}");
        assert_eq!(body["code"], "invalid_argument", "{key:?}: {body}");
    }
    // As for a write: an oversize key is over the key_bytes limit.
    let (status, body) = post_json_to(
        &url,
        "roomstate.SessionStore/Get",
        &token,
        json!({"room": "r", "key": "k".repeat(300)}),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["meta"]["limit"], "key_bytes", "{body}");
    alice.store().set("a", json!(1)).await.unwrap();
    let (status, body) = post_json_to(
        &url,
        "roomstate.SessionStore/Get",
        &token,
        json!({"room": "r", "key": "a"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["entry"]["value"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_claims_are_held_to_the_update_limits() {
    // Small limits, so the oversize claims still fit in a URL.
    let server =
        TestServer::with_config("[limits]\nmetadata_bytes = 1000\nattributes_bytes = 1000");
    let cases = [
        Token::new("r", "a").with(|claims| claims.name = "n".repeat(5000)),
        Token::new("r", "b").with(|claims| claims.metadata = "m".repeat(2000)),
        Token::new("r", "c").with(|claims| {
            claims.attributes = [("k".to_string(), "v".repeat(2000))].into_iter().collect()
        }),
        Token::new("r", "d").with(|claims| claims.exp = None),
    ];
    for token in cases {
        let refused = Client::try_join(&server.url(), &token)
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(refused, roomstate::RoomError::InvalidToken { .. }),
            "{}: {refused:?}",
            token.claims.sub
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_its_budget_is_read_later_and_still_answered() {
    // Ten frames a second, a second's worth at once.
    let server = TestServer::with_config("client_requests_per_second = 10");
    let mut mallory = raw_join(&server, "mallory").await;
    let started = tokio::time::Instant::now();
    for id in 1..=30u64 {
        let get = json!({"type": "get", "id": id, "keys": ["k"]});
        mallory.send(Message::text(get.to_string())).await.unwrap();
    }
    let mut answered = 0;
    while answered < 30 {
        if let ServerMessage::Reply(_) = next(&mut mallory).await {
            answered += 1;
        }
    }
    // 10 at once, then 20 more at 10 a second: not before about two seconds.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "30 frames went through in {:?}: no budget",
        started.elapsed()
    );
}

/// Sends `count` gets on `socket` and reads until every one is answered.
async fn get_answered(socket: &mut crate::auth_and_limits::RawSocket, ids: std::ops::Range<u64>) {
    let count = ids.end - ids.start;
    for id in ids {
        let get = json!({"type": "get", "id": id, "keys": ["k"]});
        socket.send(Message::text(get.to_string())).await.unwrap();
    }
    let mut answered = 0;
    while answered < count {
        if let ServerMessage::Reply(_) = next(socket).await {
            answered += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_does_not_refill_the_address_s_budget() {
    // Each connection could send 1,000 frames a second, but its address only ten.
    let server = TestServer::with_config(
        "client_requests_per_second = 1000\naddress_requests_per_second = 10",
    );
    // One node: in a cluster each node keeps its own budgets.
    let url = server.node_url(0);
    let started = tokio::time::Instant::now();
    let mut first = raw_join_at(&url, "mallory").await;
    get_answered(&mut first, 1..11).await;
    first.close(None).await.unwrap();
    drop(first);
    // A new connection, and a second one alongside it: the address's budget is spent.
    let mut again = raw_join_at(&url, "mallory").await;
    let mut alongside = raw_join_at(&url, "mallet").await;
    tokio::join!(
        get_answered(&mut again, 11..21),
        get_answered(&mut alongside, 1..11)
    );
    // 10 at once, then 20 more at 10 a second: not before about two seconds.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "30 frames from one address went through in {:?}",
        started.elapsed()
    );
}
