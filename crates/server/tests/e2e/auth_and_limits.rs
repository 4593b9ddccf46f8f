//! Bad tokens, every store limit, malformed frames: each gets a clear, typed error and
//! changes nothing.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomstate::{ConnectOptions, ConnectRefusalCode, Limit, NoRoomListener, Room, RoomError};
use roomstate_protocol::ServerMessage;
use roomstate_server::auth::unix_now;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{rtc_url, Client, TestServer, Token};

async fn refusal(url: &str, token: &Token) -> (ConnectRefusalCode, String) {
    match Client::try_join(url, token).await {
        Err(RoomError::InvalidToken { code, message }) => (code, message),
        Err(other) => panic!("expected a token refusal, got {other:?}"),
        Ok(_) => panic!("{} joined with a bad token", token.claims.sub),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_a_reason() {
    let server = TestServer::start();
    let url = server.url();
    let now = unix_now();
    let good = Token::new("r", "alice");

    let (code, message) = refusal(&url, &good.clone().secret("wrong")).await;
    assert_eq!(code, ConnectRefusalCode::InvalidToken);
    assert!(message.contains("signature"), "{message}");
    let (code, _) = refusal(&url, &good.clone().with(|c| c.exp = Some(now - 120))).await;
    assert_eq!(code, ConnectRefusalCode::TokenExpired);
    let (code, _) = refusal(&url, &good.clone().with(|c| c.nbf = Some(now + 600))).await;
    assert_eq!(code, ConnectRefusalCode::TokenNotYetValid);
    let (code, message) = refusal(&url, &good.clone().with(|c| c.iss = "nobody".into())).await;
    assert_eq!(code, ConnectRefusalCode::InvalidToken);
    assert!(message.contains("unknown API key"), "{message}");
    let (code, _) = refusal(&url, &good.clone().with(|c| c.video.room_join = false)).await;
    assert_eq!(code, ConnectRefusalCode::NotAllowed);
    let (code, message) = refusal(&format!("{url}/rtc?room=other"), &good).await;
    assert_eq!(code, ConnectRefusalCode::NotAllowed);
    assert!(message.contains("other"), "{message}");

    let garbage = Room::connect(
        &url,
        "not-a-token",
        std::sync::Arc::new(NoRoomListener),
        ConnectOptions::default(),
    )
    .await;
    assert!(matches!(
        garbage,
        Err(RoomError::InvalidToken {
            code: ConnectRefusalCode::InvalidToken,
            ..
        })
    ));
    // Nothing joined: a good client is alone.
    let alice = Client::join(&url, &good).await;
    assert!(alice.room.remote_participants().is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error() {
    let server = TestServer::start();
    let url = server.url();
    drop(server);
    let result = Client::try_join(&url, &Token::new("r", "alice")).await;
    assert!(
        matches!(result, Err(RoomError::Connect { .. })),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn every_store_limit_refuses_and_changes_nothing() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let store = alice.store();

    let too_big = json!("v".repeat(1023)); // 1025 bytes serialized
    match store.set("big", too_big).await.unwrap_err() {
        RoomError::LimitExceeded {
            limit, max, actual, ..
        } => assert_eq!((limit, max, actual), (Limit::ValueBytes, 1024, 1025)),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get("big").await.unwrap(), None);
    let long_key = "k".repeat(257);
    assert!(matches!(
        store.set(&long_key, json!(1)).await,
        Err(RoomError::LimitExceeded {
            limit: Limit::KeyBytes,
            ..
        })
    ));
    assert!(matches!(
        store.set("", json!(1)).await,
        Err(RoomError::InvalidRequest { .. })
    ));
    assert!(matches!(
        store.set("*", json!(1)).await,
        Err(RoomError::InvalidRequest { .. })
    ));

    // Total size: 63 keys of ~1 KiB fit in 64 KiB, the 64th does not.
    let value = json!("v".repeat(1000));
    let mut written = 0;
    let error = loop {
        match store.set(&format!("key{written:03}"), value.clone()).await {
            Ok(_) => written += 1,
            Err(error) => break error,
        }
    };
    match error {
        RoomError::LimitExceeded {
            limit, max, actual, ..
        } => {
            assert_eq!((limit, max), (Limit::StoreBytes, 64 * 1024));
            assert!(actual > max);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(written, 64 * 1024 / (6 + 1002));
    assert_eq!(store.get(&format!("key{written:03}")).await.unwrap(), None);

    // Key count, with small values.
    for key in 0..written {
        store.delete(&format!("key{key:03}")).await.unwrap();
    }
    for key in 0..100 {
        store.set(&format!("n{key}"), json!(key)).await.unwrap();
    }
    match store.set("n100", json!(100)).await.unwrap_err() {
        RoomError::LimitExceeded {
            limit, max, actual, ..
        } => assert_eq!((limit, max, actual), (Limit::Keys, 100, 101)),
        other => panic!("{other:?}"),
    }
    // Replacing an existing key is not a new key.
    store.set("n5", json!("five")).await.unwrap();
}

#[tokio::test]
async fn limits_are_configurable() {
    let server = TestServer::with_config("[limits]\nvalue_bytes = 8\nkeys = 2");
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    assert!(matches!(
        alice.store().set("a", json!("123456789")).await,
        Err(RoomError::LimitExceeded { max: 8, .. })
    ));
    alice.store().set("a", json!(1)).await.unwrap();
    alice.store().set("b", json!(2)).await.unwrap();
    assert!(matches!(
        alice.store().set("c", json!(3)).await,
        Err(RoomError::LimitExceeded {
            limit: Limit::Keys,
            max: 2,
            ..
        })
    ));
}

pub type RawSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn raw_join(server: &TestServer, identity: &str) -> RawSocket {
    raw_join_at(&server.url(), identity).await
}

/// Joins room "r" at the node of `url` (a `ws://` URL).
pub async fn raw_join_at(url: &str, identity: &str) -> RawSocket {
    raw_join_room_at(url, "r", identity).await
}

/// Joins `room` at the node of `url` (a `ws://` URL).
pub async fn raw_join_room_at(url: &str, room: &str, identity: &str) -> RawSocket {
    let (mut socket, _) = tokio_tungstenite::connect_async(rtc_url(url, room, identity))
        .await
        .unwrap();
    assert!(matches!(next(&mut socket).await, ServerMessage::Joined(_)));
    socket
}

pub async fn next(socket: &mut RawSocket) -> ServerMessage {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn malformed_frames_are_rejected_and_the_connection_goes_on() {
    let server = TestServer::start();
    let mut socket = raw_join(&server, "mallory").await;
    // Each is refused with the request id when the frame had a readable one, so a
    // client can tell which request will get no reply.
    let bad_frames = [
        (Message::text("not json"), None),
        (Message::text(r#"{"type":"set","id":1}"#), Some(1)),
        (
            Message::text(r#"{"type":"launch_missiles","id":1}"#),
            Some(1),
        ),
        (
            Message::text(r#"{"type":"set","id":1,"key":"k","value":1,"sneaky":true}"#),
            Some(1),
        ),
        (Message::binary(vec![0u8, 1, 2]), None),
    ];
    for (frame, expected_id) in bad_frames {
        socket.send(frame).await.unwrap();
        match next(&mut socket).await {
            ServerMessage::Rejected { id, error } => {
                assert_eq!(error.code, roomstate_protocol::ErrorCode::InvalidRequest);
                assert_eq!(id, expected_id);
            }
            other => panic!("{other:?}"),
        }
    }
    socket
        .send(Message::text(
            r#"{"type":"set","id":1,"key":"k","value":1}"#,
        ))
        .await
        .unwrap();
    assert!(matches!(next(&mut socket).await, ServerMessage::Reply(reply) if reply.id == 1));
    // Request ids must rise.
    socket
        .send(Message::text(
            r#"{"type":"set","id":1,"key":"k","value":2}"#,
        ))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut socket).await,
        ServerMessage::Rejected { id: Some(1), .. }
    ));
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    assert_eq!(
        alice.store().get("k").await.unwrap().unwrap().value,
        json!(1),
        "only the good frame changed the store"
    );
    assert_eq!(
        server
            .metric_total("roomstate_errors_total{code=\"invalid_request\"}")
            .await,
        6,
        "each rejected frame is counted once, on the node that read it"
    );
}

#[tokio::test]
async fn an_oversize_frame_closes_the_connection() {
    let server = TestServer::with_config("[limits]\nframe_bytes = 4096");
    let mut socket = raw_join(&server, "mallory").await;
    let huge = format!(
        r#"{{"type":"set","id":1,"key":"k","value":"{}"}}"#,
        "x".repeat(10_000)
    );
    let _ = socket.send(Message::text(huge)).await;
    // A goodbye that says why, then close code 1009 (message too big).
    match next(&mut socket).await {
        ServerMessage::Goodbye { reason, message } => {
            assert_eq!(reason, roomstate_protocol::CloseReason::FrameTooLarge);
            assert!(message.contains("4096"), "{message}");
        }
        other => panic!("expected goodbye, got {other:?}"),
    }
    let close = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("the close frame in time");
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected a close frame with code 1009, got {other:?}"),
    }
    // The server is fine.
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    assert_eq!(alice.store().get("k").await.unwrap(), None);
}

#[tokio::test]
async fn calls_after_disconnect_fail_with_not_connected() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let store = alice.store();
    alice.room.disconnect().await;
    assert!(matches!(
        store.set("k", json!(1)).await,
        Err(RoomError::NotConnected { .. })
    ));
    assert!(matches!(
        store.add_key_change_listener(
            vec!["k".into()],
            std::sync::Arc::new(|_: String, _: Option<roomstate::StoreEntry>| {})
        ),
        Err(RoomError::NotConnected { .. })
    ));
    assert!(matches!(
        alice.room.connection_state(),
        roomstate::ConnectionState::Disconnected {
            reason: roomstate::DisconnectReason::ClientRequested
        }
    ));
    alice.room.disconnect().await; // twice is harmless
}
