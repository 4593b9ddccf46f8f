//! The server's WebSocket on the wire (its own framing, crates/server/src/websocket):
//! what clients other than the engine may send, and what a broken client gets.

use futures_util::{SinkExt, StreamExt};
use roomstate_protocol::ServerMessage;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::auth_and_limits::raw_join;
use crate::harness::{rtc_url, Client, Heard, TestServer, Token, PATIENCE};

#[tokio::test]
async fn fragments_pings_and_the_closing_handshake_follow_rfc_6455() {
    let server = TestServer::start();
    let mut socket = raw_join(&server, "alice").await;
    // One request in three fragments, a ping between the first two.
    let request = json!({"type": "get", "id": 7, "keys": ["k"]}).to_string();
    let (first, rest) = request.split_at(5);
    let (second, third) = rest.split_at(10);
    let fragment =
        |data: &str, opcode, last| Message::Frame(Frame::message(data.to_owned(), opcode, last));
    let (text, more) = (OpCode::Data(Data::Text), OpCode::Data(Data::Continue));
    for message in [
        fragment(first, text, false),
        Message::Ping("are you there".into()),
        fragment(second, more, false),
        fragment(third, more, true),
    ] {
        socket.send(message).await.unwrap();
    }
    let mut pong = None;
    let reply = loop {
        let frame = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("an answer in time")
            .expect("the connection is open")
            .unwrap();
        match frame {
            Message::Pong(payload) => pong = Some(payload),
            Message::Text(text) => break serde_json::from_str::<ServerMessage>(&text).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        pong.as_deref(),
        Some(&b"are you there"[..]),
        "the ping answered first"
    );
    let ServerMessage::Reply(reply) = reply else {
        panic!("expected the reply, got {reply:?}");
    };
    assert_eq!(reply.id, 7);
    // The client closes; the server answers with its own close frame and hangs up.
    socket
        .send(Message::Close(Some(CloseFrame {
            code: 1000u16.into(),
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    let mut closed_with = None;
    while let Some(Ok(frame)) = tokio::time::timeout(PATIENCE, socket.next()).await.unwrap() {
        if let Message::Close(frame) = frame {
            closed_with = frame.map(|frame| u16::from(frame.code));
        }
    }
    assert_eq!(closed_with, Some(1000));
}

/// Opens a WebSocket by hand (for frames no client library would send) and reads up to
/// and including the `joined` frame.
async fn handshake_by_hand(server: &TestServer, identity: &str) -> TcpStream {
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /rtc?protocol=1&access_token={} HTTP/1.1\r\nHost: localhost\r\n\
         Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        Token::new("r", identity).sign()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"type\":\"joined\"") {
        let mut byte = [0; 1];
        socket.read_exact(&mut byte).await.unwrap();
        seen.push(byte[0]);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 101"), "{seen}");
    // RFC 6455's own example key and accept value.
    assert!(
        seen.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{seen}"
    );
    socket
}

/// Reads until the server hangs up; what it sent meanwhile.
async fn read_to_end(socket: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, socket.read_to_end(&mut rest))
        .await
        .expect("the server hangs up")
        .ok();
    rest
}

/// The code and reason of the close frame `sent` ends with (server frames are not
/// masked; a close frame's payload is under 126 bytes).
fn last_close_frame(sent: &[u8]) -> Option<(u16, String)> {
    (4..=sent.len().min(127)).find_map(|frame_len| {
        let frame = &sent[sent.len() - frame_len..];
        let whole = frame[0] == 0x88 && frame[1] as usize == frame_len - 2;
        whole.then(|| {
            let code = u16::from_be_bytes([frame[2], frame[3]]);
            (code, String::from_utf8_lossy(&frame[4..]).into_owned())
        })
    })
}

#[tokio::test]
async fn a_client_that_breaks_the_framing_is_let_go_and_the_room_goes_on() {
    let server = TestServer::start();
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("unmasked", vec![0x81, 2, b'h', b'i'], "not masked"),
        ("reserved", vec![0x83, 0x80, 0, 0, 0, 0], "reserved opcode"),
        (
            "continuation",
            vec![0x80, 0x80, 0, 0, 0, 0],
            "continuation of nothing",
        ),
    ];
    for (identity, frame, violation) in cases {
        let mut socket = handshake_by_hand(&server, identity).await;
        bob.heard.wait_for(Heard::Joined(identity.into())).await;
        socket.write_all(&frame).await.unwrap();
        // The last thing the server sends is a close frame: 1002 and the violation.
        let sent = read_to_end(&mut socket).await;
        let (code, reason) = last_close_frame(&sent).expect("a close frame last");
        assert_eq!(code, 1002, "{identity}: {reason}");
        assert!(reason.contains(violation), "{identity}: {reason}");
    }
    // The room is intact: bob still reads and writes.
    bob.store().set("k", json!("v")).await.unwrap();
    let entry = bob
        .store()
        .get("k")
        .await
        .unwrap()
        .expect("the value just set");
    assert_eq!(entry.value, json!("v"));
}

/// A client frame carrying `text`, masked as RFC 6455 requires of clients.
fn masked_text(text: &str) -> Vec<u8> {
    let mut frame = Frame::message(text.to_owned(), OpCode::Data(Data::Text), true);
    frame.header_mut().mask = Some([0x5a, 0x11, 0xc3, 0x07]);
    let mut bytes = Vec::new();
    frame.format(&mut bytes).unwrap();
    bytes
}

/// A client may say `leave` and reset its connection straight after (closing a socket
/// with frames unread does that). The server's next write to it then fails, maybe
/// before it has read the `leave`: what arrived before the reset still counts.
#[tokio::test]
async fn a_leave_sent_just_before_the_connection_is_reset_is_applied() {
    // Two frames a second: the server reads the `leave` a second after it arrived, and
    // by then a reply to one of the `get`s has failed to reach the reset connection.
    // The grace period outlasts the wait: only the `leave` can make alice leave in time.
    let server =
        TestServer::with_config("client_requests_per_second = 2\nreconnect_grace_ms = 600000");
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let mut socket = handshake_by_hand(&server, "alice").await;
    bob.heard.wait_for(Heard::Joined("alice".into())).await;
    let mut frames = Vec::new();
    for id in 1..=3 {
        frames.extend(masked_text(
            &json!({"type": "get", "id": id, "keys": ["k"]}).to_string(),
        ));
    }
    frames.extend(masked_text(r#"{"type":"leave"}"#));
    socket.write_all(&frames).await.unwrap();
    // Closed with a zero linger time: reset (RST), not closed.
    socket2::SockRef::from(&socket)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(socket);
    bob.heard.wait_for(Heard::Left("alice".into())).await;
}

/// A client the server ends (here removed by the server API) may still be sending. The
/// server reads and drops what it sends until it closes its side: closing the socket
/// with frames unread would reset the connection, and a reset can destroy the goodbye
/// on its way (the engine would take that for a lost link, and join again).
#[tokio::test]
async fn an_ended_client_still_sending_is_not_reset() {
    let server = TestServer::start();
    let mut socket = handshake_by_hand(&server, "alice").await;
    let rooms = server.room_service();
    rooms.remove_participant("r", "alice").await.unwrap();
    // The goodbye and the close frame, then the server's side closes (FIN).
    let sent = read_to_end(&mut socket).await;
    assert!(
        String::from_utf8_lossy(&sent).contains(r#""reason":"removed""#),
        "{sent:?}"
    );
    assert!(last_close_frame(&sent).is_some(), "a close frame last");
    // Frames sent after that are read and dropped. A reset would fail these writes: the
    // first would draw it, a later one report it, so they are spread over 300 ms, well
    // inside the server's 2 s linger.
    for id in 1..=30 {
        let get = json!({"type": "get", "id": id, "keys": ["k"]}).to_string();
        socket
            .write_all(&masked_text(&get))
            .await
            .unwrap_or_else(|error| panic!("write {id} after the goodbye: {error}"));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// What an ended client still sends during the server's linger is read at its address's
/// pace, not as fast as it comes: a client cut while flooding (and reconnecting to be cut
/// again) would otherwise have every one of its sockets read at full speed for the
/// linger, past the budget that bounds what one address costs the server.
#[tokio::test]
async fn an_ended_client_flooding_the_linger_is_read_at_its_address_s_pace() {
    const BUDGET: usize = 64 * 1024; // bytes a second, for the address
    let server = TestServer::with_config(&format!("address_bytes_per_second = {BUDGET}"));
    let mut socket = handshake_by_hand(&server, "alice").await;
    server
        .room_service()
        .remove_participant("r", "alice")
        .await
        .unwrap();
    let sent = read_to_end(&mut socket).await;
    assert!(last_close_frame(&sent).is_some(), "{sent:?}");
    // Our side buffers little, so what we manage to send is about what the server read
    // (plus its receive buffer, which a slow reader does not make grow).
    socket2::SockRef::from(&socket)
        .set_send_buffer_size(64 * 1024)
        .unwrap();
    let flood = vec![0x5a; 16 * 1024];
    let mut flooded = 0;
    let _ = tokio::time::timeout(std::time::Duration::from_millis(1500), async {
        while socket.write_all(&flood).await.is_ok() {
            flooded += flood.len();
        }
    })
    .await;
    // 1.5 s of budget and a full bucket come to 160 KiB; read unpaced, loopback takes
    // hundreds of MiB in that time.
    assert!(
        flooded < 4 << 20,
        "{} KiB sent in 1.5 s of linger at {} KiB/s",
        flooded >> 10,
        BUDGET >> 10
    );
}

#[tokio::test]
async fn requests_that_are_not_websocket_handshakes_are_refused_plainly() {
    let server = TestServer::start();
    let url = rtc_url(&server.http_url(), "r", "alice");
    let client = reqwest::Client::new();
    let status = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (code, body) = status(client.get(&url)).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Connection"), "{body}");
    let upgrade = |request: reqwest::RequestBuilder| {
        request
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    let (code, body) = status(upgrade(client.get(&url)).header("Sec-WebSocket-Version", "8")).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Version"), "{body}");
    let (code, body) =
        status(upgrade(client.post(&url)).header("Sec-WebSocket-Version", "13")).await;
    assert_eq!(code, 405, "{body}");
}

/// `roomstate_messages_out_total` counts every message the server writes once, control
/// frames included: replies and pongs, a goodbye and its close frame, and the close
/// frame that answers a client's.
#[tokio::test]
async fn every_message_the_server_sends_is_counted_once_close_frames_included() {
    let server = TestServer::start();
    let connect = |identity: &str| {
        let url = rtc_url(&server.node_url(0), "counted", identity);
        async move { tokio_tungstenite::connect_async(url).await.unwrap().0 }
    };
    // Every frame until the server hangs up.
    let received_all = |mut socket: crate::auth_and_limits::RawSocket| async move {
        let mut frames = Vec::new();
        while let Some(Ok(frame)) = tokio::time::timeout(PATIENCE, socket.next()).await.unwrap() {
            frames.push(frame);
        }
        frames
    };

    // Alice asks, pings and leaves: the server says goodbye and closes.
    let mut alice = connect("alice").await;
    for message in [
        Message::text(json!({"type": "get", "id": 1, "keys": ["k"]}).to_string()),
        Message::Ping("are you there".into()),
        Message::text(json!({"type": "leave"}).to_string()),
    ] {
        alice.send(message).await.unwrap();
    }
    let to_alice = received_all(alice).await;
    let goodbye = to_alice.iter().find_map(|frame| match frame {
        Message::Text(text) => match serde_json::from_str(text.as_str()).unwrap() {
            ServerMessage::Goodbye { reason, .. } => Some(reason),
            _ => None,
        },
        _ => None,
    });
    assert_eq!(goodbye, Some(roomstate_protocol::CloseReason::Left));
    assert!(matches!(to_alice.last(), Some(Message::Close(_))));

    // Bob closes: the server answers with its close frame.
    let mut bob = connect("bob").await;
    bob.close(None).await.unwrap();
    let to_bob = received_all(bob).await;
    assert!(matches!(to_bob.last(), Some(Message::Close(_))));

    assert_eq!(
        server.metric_total("roomstate_messages_out_total").await,
        (to_alice.len() + to_bob.len()) as u64,
        "sent to alice: {to_alice:?}\nsent to bob: {to_bob:?}"
    );
}
