//! The server API and webhooks, driven by LiveKit's official Rust server SDK.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use livekit_api::access_token::{AccessToken, TokenVerifier, VideoGrants};
use livekit_api::services::room::{RoomClient, UpdateParticipantOptions};
use livekit_api::services::ServiceError;
use livekit_api::webhooks::WebhookReceiver;
use parking_lot::Mutex;
use roomstate::{ConnectionState, DisconnectReason};
use roomstate_protocol::{Claims, VideoGrant};
use roomstate_server::auth::{mint_token, unix_now};
use serde_json::{json, Value};

use crate::harness::{Client, Heard, TestServer, Token, KEY, PATIENCE, SECRET};

/// A participant token minted by LiveKit's SDK.
fn livekit_token(identity: &str, room: &str) -> String {
    AccessToken::with_api_key(KEY, SECRET)
        .with_identity(identity)
        .with_name(&identity.to_uppercase())
        .with_grants(VideoGrants {
            room_join: true,
            room: room.into(),
            can_update_own_metadata: Some(true),
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}

fn twirp_code(error: ServiceError) -> String {
    match error {
        ServiceError::Twirp(livekit_api::services::TwirpError::Twirp(code)) => code.code,
        other => panic!("expected a Twirp error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_room_service_works_against_roomstate() {
    let server = TestServer::start();
    let alice = Client::join_with_jwt(&server.url(), &livekit_token("alice", "r"))
        .await
        .unwrap();
    let bob = Client::join_with_jwt(&server.url(), &livekit_token("bob", "r"))
        .await
        .unwrap();
    assert_eq!(
        alice.room.local_participant().info().unwrap().name,
        "ALICE",
        "LiveKit's name claim"
    );
    let rooms = server.room_service();

    let listed = rooms.list_rooms(vec![]).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].num_participants),
        ("r", 2)
    );
    assert_eq!(listed[0].sid, alice.room.session_id().unwrap());

    let participants = rooms.list_participants("r").await.unwrap();
    let mut identities: Vec<&str> = participants.iter().map(|p| p.identity.as_str()).collect();
    identities.sort();
    assert_eq!(identities, ["alice", "bob"]);
    assert_eq!(
        rooms.get_participant("r", "alice").await.unwrap().name,
        "ALICE"
    );

    let updated = rooms
        .update_participant(
            "r",
            "alice",
            UpdateParticipantOptions {
                metadata: "set by the backend".into(),
                attributes: HashMap::from([
                    ("hand".into(), "up".into()),
                    ("brb".into(), "yes".into()),
                ]),
                name: "Alice A.".into(),
                permission: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.metadata, "set by the backend");
    bob.heard
        .wait_for(Heard::Metadata(
            "alice".into(),
            "".into(),
            "set by the backend".into(),
        ))
        .await;
    bob.heard
        .wait_for(Heard::Attributes(
            "alice".into(),
            vec!["brb".into(), "hand".into()],
        ))
        .await;
    bob.heard
        .wait_for(Heard::Name(
            "alice".into(),
            "ALICE".into(),
            "Alice A.".into(),
        ))
        .await;
    // The participant sees its own change, and a later own update keeps it.
    alice
        .heard
        .wait_for(Heard::Metadata(
            "alice".into(),
            "".into(),
            "set by the backend".into(),
        ))
        .await;

    // An empty value deletes; metadata left empty is left alone.
    let options = UpdateParticipantOptions {
        attributes: HashMap::from([("hand".into(), String::new())]),
        ..Default::default()
    };
    let updated = rooms
        .update_participant("r", "alice", options)
        .await
        .unwrap();
    assert_eq!(
        updated.attributes,
        HashMap::from([("brb".into(), "yes".into())])
    );
    assert_eq!(updated.metadata, "set by the backend");
    bob.heard
        .wait_for(Heard::Attributes("alice".into(), vec!["hand".into()]))
        .await;

    // Permission: the backend takes away alice's right to change her own metadata.
    let options = UpdateParticipantOptions {
        permission: Some(livekit_protocol::ParticipantPermission {
            can_update_metadata: false,
            ..Default::default()
        }),
        ..Default::default()
    };
    rooms
        .update_participant("r", "alice", options)
        .await
        .unwrap();
    let refused = alice
        .room
        .local_participant()
        .set_metadata("mine".into())
        .await;
    assert!(
        matches!(refused, Err(roomstate::RoomError::NotAllowed { .. })),
        "{refused:?}"
    );

    rooms.update_room_metadata("r", "quiz at 3").await.unwrap();
    alice
        .heard
        .wait_for(Heard::RoomMetadata("quiz at 3".into()))
        .await;
    bob.heard
        .wait_for(Heard::RoomMetadata("quiz at 3".into()))
        .await;
    assert_eq!(bob.room.room_metadata(), "quiz at 3");

    rooms.remove_participant("r", "bob").await.unwrap();
    bob.heard
        .wait_for(Heard::Connection(ConnectionState::Disconnected {
            reason: DisconnectReason::Removed,
        }))
        .await;
    alice.heard.wait_for(Heard::Left("bob".into())).await;

    // Errors, in Twirp's shape.
    assert_eq!(
        twirp_code(rooms.get_participant("r", "nobody").await.unwrap_err()),
        "not_found"
    );
    assert_eq!(
        twirp_code(rooms.list_participants("no-such-room").await.unwrap_err()),
        "not_found"
    );
    let impostor = RoomClient::with_api_key(&server.http_url(), KEY, "wrong-secret");
    assert_eq!(
        twirp_code(impostor.list_rooms(vec![]).await.unwrap_err()),
        "unauthenticated"
    );
    let too_big = UpdateParticipantOptions {
        metadata: "m".repeat(70_000),
        ..Default::default()
    };
    assert_eq!(
        twirp_code(
            rooms
                .update_participant("r", "alice", too_big)
                .await
                .unwrap_err()
        ),
        "resource_exhausted"
    );
}

/// Calls the server API with JSON, as LiveKit's JS SDK and curl do.
pub(crate) async fn post_json(
    server: &TestServer,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    post_json_to(&server.http_url(), path, token, body).await
}

/// Posts a Twirp call to the node at `http_url`.
pub(crate) async fn post_json_to(
    http_url: &str,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{http_url}/twirp/{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) fn admin_token(room: &str) -> String {
    let claims = Claims {
        iss: KEY.into(),
        exp: Some(unix_now() + 600),
        video: VideoGrant {
            room: room.into(),
            room_admin: true,
            ..Default::default()
        },
        ..Default::default()
    };
    mint_token(&claims, SECRET)
}

#[tokio::test]
async fn the_json_encoding_and_the_session_store_api() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let seen = alice.observe(&["poll"]);
    seen.wait_for(Heard::Key("poll".into(), None)).await;
    let admin = admin_token("r");

    let (status, body) = post_json(
        &server,
        "livekit.RoomService/ListParticipants",
        &admin,
        json!({"room": "r"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["participants"][0]["identity"], "alice");
    assert!(
        body["participants"][0]["joinedAt"].is_string(),
        "protobuf JSON mapping: int64 as a string: {body}"
    );

    let (status, body) = post_json(
        &server,
        "roomstate.SessionStore/Set",
        &admin,
        json!({"room": "r", "key": "poll", "value": {"q": "lunch?"}, "expected_version": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["entry"]["updated_by"], "api:testkey");
    let version = body["entry"]["version"].as_u64().unwrap();
    seen.wait_for(Heard::Key("poll".into(), Some(json!({"q": "lunch?"}))))
        .await;
    assert_eq!(
        alice.store().get("poll").await.unwrap().unwrap().updated_by,
        "api:testkey"
    );

    let (status, body) = post_json(
        &server,
        "roomstate.SessionStore/Set",
        &admin,
        json!({"room": "r", "key": "poll", "value": 1, "expected_version": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "aborted");
    assert_eq!(body["meta"]["current_version"], version.to_string());

    let (_, body) = post_json(
        &server,
        "roomstate.SessionStore/Get",
        &admin,
        json!({"room": "r", "key": "poll"}),
    )
    .await;
    assert_eq!(body["entry"]["value"], json!({"q": "lunch?"}));
    alice.store().set("other", json!(2)).await.unwrap();
    let (_, body) = post_json(
        &server,
        "roomstate.SessionStore/List",
        &admin,
        json!({"room": "r"}),
    )
    .await;
    let keys: Vec<&str> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["other", "poll"]);
    let (status, _) = post_json(
        &server,
        "roomstate.SessionStore/Delete",
        &admin,
        json!({"room": "r", "key": "poll"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    seen.wait_for(Heard::Key("poll".into(), None)).await;

    // Limits and permissions hold here too.
    let counted = |code: &str| format!("roomstate_errors_total{{code=\"{code}\"}}");
    let limit_errors = server.metric_total(&counted("limit_exceeded")).await;
    let (status, body) = post_json(
        &server,
        "roomstate.SessionStore/Set",
        &admin,
        json!({"room": "r", "key": "big", "value": "x".repeat(2000)}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("resource_exhausted"))
    );
    assert_eq!(body["meta"]["limit"], "value_bytes");
    // Counted under the protocol's code, as the same refusal on a WebSocket is.
    assert_eq!(
        server.metric_total(&counted("limit_exceeded")).await,
        limit_errors + 1
    );
    assert_eq!(server.metric_total(&counted("resource_exhausted")).await, 0);
    let (status, body) = post_json(
        &server,
        "roomstate.SessionStore/Get",
        &admin_token("elsewhere"),
        json!({"room": "r", "key": "poll"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("permission_denied"))
    );
    let (status, body) = post_json(
        &server,
        "roomstate.SessionStore/Get",
        &admin_token("empty"),
        json!({"room": "empty", "key": "k"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body) =
        post_json(&server, "livekit.RoomService/ListRooms", &admin, json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("permission_denied")),
        "ListRooms needs roomList"
    );
    let (status, _) = post_json(&server, "livekit.RoomService/Nope", &admin, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Records webhook deliveries, refusing the first `fail_first`.
pub(crate) struct Receiver {
    pub(crate) deliveries: Mutex<Vec<(String, String)>>,
    refused: Mutex<usize>,
    fail_first: usize,
}

pub(crate) async fn start_receiver(fail_first: usize) -> (String, Arc<Receiver>) {
    let receiver = Arc::new(Receiver {
        deliveries: Mutex::default(),
        refused: Mutex::new(0),
        fail_first,
    });
    let state = receiver.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let mut refused = state.refused.lock();
                if *refused < state.fail_first {
                    *refused += 1;
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let auth = headers
                    .get("authorization")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                state.deliveries.lock().push((auth, body));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, receiver)
}

impl Receiver {
    /// The events delivered so far, each verified by LiveKit's webhook receiver.
    fn events(&self) -> Vec<(String, String)> {
        let verifier = WebhookReceiver::new(TokenVerifier::with_api_key(KEY, SECRET));
        self.deliveries
            .lock()
            .iter()
            .map(|(auth, body)| {
                let event = verifier
                    .receive(body, auth)
                    .expect("a LiveKit-verifiable webhook");
                let who = event.participant.map(|p| p.identity).unwrap_or_default();
                (event.event, who)
            })
            .collect()
    }

    /// Waits until `event` arrived; returns every event so far.
    pub(crate) async fn wait_for_event(&self, event: (String, String)) -> Vec<(String, String)> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let events = self.events();
            if events.contains(&event) {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {event:?} in {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn wait_for(&self, count: usize) -> Vec<(String, String)> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.deliveries.lock().len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.events()
    }
}

pub(crate) fn event(name: &str, who: &str) -> (String, String) {
    (name.to_string(), who.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_livekit_verifiable_ordered_and_retried() {
    let (url, receiver) = start_receiver(2).await;
    let server = TestServer::with_config(&format!(
        "[webhook]\nurls = [\"{url}\"]\napi_key = \"{KEY}\"\n"
    ));
    // A hidden participant neither starts a session nor is announced.
    let watcher = Client::join(
        &server.url(),
        &Token::new("r", "watcher").with(|c| c.video.hidden = true),
    )
    .await;
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    bob.room.disconnect().await;
    // Leaves travel on separate connections: let bob's be done before alice's.
    alice.heard.wait_for(Heard::Left("bob".into())).await;
    alice.room.disconnect().await;
    let mut events = receiver.wait_for(6).await;
    let expected = vec![
        event("room_started", ""),
        event("participant_joined", "alice"),
        event("participant_joined", "bob"),
        event("participant_left", "bob"),
        event("participant_left", "alice"),
        event("room_finished", ""),
    ];
    if server.node_count() == 1 {
        assert_eq!(events, expected);
    } else {
        // Each node sends the events of the changes it made, in order; the queues of
        // different nodes (one of them retrying) do not wait for each other.
        for who in ["alice", "bob"] {
            let joined = events
                .iter()
                .position(|e| *e == event("participant_joined", who));
            let left = events
                .iter()
                .position(|e| *e == event("participant_left", who));
            assert!(joined < left, "{who} joined before leaving in {events:?}");
        }
        events.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(events, expected);
    }
    assert_eq!(
        *receiver.refused.lock(),
        2,
        "the first delivery was retried past two failures"
    );
    // The last visible participant leaving ended the session for the hidden one too.
    watcher
        .heard
        .wait_for(Heard::Connection(ConnectionState::Disconnected {
            reason: DisconnectReason::SessionEnded,
        }))
        .await;
}

#[tokio::test]
async fn health_and_metrics() {
    let server = TestServer::start();
    // Metrics are each node's own: ask the node alice is on.
    let alice = Client::join(&server.node_url(0), &Token::new("r", "alice")).await;
    for n in 0..3 {
        alice.store().set("k", json!(n)).await.unwrap();
    }
    let _ = alice.store().set("", json!(1)).await;
    let get = |path: &str| reqwest::get(format!("{}{path}", server.node_http_url(0)));
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok");
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for expected in [
        "roomstate_connections 1",
        "roomstate_rooms 1",
        "roomstate_sessions_started_total 1",
        "roomstate_store_writes_total 3",
        "roomstate_errors_total{code=\"invalid_request\"} 1",
        "roomstate_fanout_seconds_count",
        "roomstate_messages_in_total",
        "roomstate_messages_out_total",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from\n{metrics}"
        );
    }
    alice.room.disconnect().await;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let metrics = get("/metrics").await.unwrap().text().await.unwrap();
        if metrics.contains("roomstate_connections 0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the connection is still counted after it closed:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs tests/sdk-js/livekit-sdk.mjs (LiveKit's Node server SDK); `scripts/test.sh`
/// installs its node_modules.
fn node_sdk(args: &[&str]) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk-js");
    assert!(
        dir.join("node_modules/livekit-server-sdk").exists(),
        "LiveKit's Node SDK is not installed: run scripts/test.sh, or npm ci in {}",
        dir.display()
    );
    let output = std::process::Command::new("node")
        .arg("livekit-sdk.mjs")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "node {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_node_sdk_works_against_roomstate() {
    let server = TestServer::start();
    let http = server.http_url();
    let token = node_sdk(&["token", &http, KEY, SECRET, "r", "js-minted"]);
    let minted = Client::join_with_jwt(&server.url(), token.trim())
        .await
        .unwrap();
    let me = minted.room.local_participant().info().unwrap();
    assert_eq!(
        (me.name.as_str(), me.attributes["origin"].as_str()),
        ("Made in JS", "node")
    );
    let rust_side = Client::join(&server.url(), &Token::new("r", "rust-side")).await;

    let out: Value = serde_json::from_str(&node_sdk(&["calls", &http, KEY, SECRET, "r"])).unwrap();
    assert_eq!(out["rooms"], json!([{"name": "r", "numParticipants": 2}]));
    assert_eq!(out["participants"], json!(["js-minted", "rust-side"]));
    assert_eq!(out["got"], "Made in JS");
    assert_eq!(
        out["updated"],
        json!({"metadata": "from node", "attributes": {"hand": "up"}, "name": "Renamed in JS"})
    );
    assert_eq!(out["roomMetadata"], "set from node");
    assert_eq!(
        (out["removed"].as_bool(), out["notFoundStatus"].as_u64()),
        (Some(true), Some(404))
    );

    // The engine's clients saw it all as events.
    minted
        .heard
        .wait_for(Heard::Metadata(
            "js-minted".into(),
            "".into(),
            "from node".into(),
        ))
        .await;
    minted
        .heard
        .wait_for(Heard::Attributes(
            "js-minted".into(),
            vec!["hand".into(), "origin".into()],
        ))
        .await;
    minted
        .heard
        .wait_for(Heard::RoomMetadata("set from node".into()))
        .await;
    minted.heard.wait_for(Heard::Left("rust-side".into())).await;
    rust_side
        .heard
        .wait_for(Heard::Name(
            "js-minted".into(),
            "Made in JS".into(),
            "Renamed in JS".into(),
        ))
        .await;
    rust_side
        .heard
        .wait_for(Heard::Connection(ConnectionState::Disconnected {
            reason: DisconnectReason::Removed,
        }))
        .await;
}
