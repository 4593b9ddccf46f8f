//! The `roomstate` command line, run as a real process against a real server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use roomstate::{ConnectionState, DisconnectReason};
use serde_json::{json, Value};

use crate::harness::{Client, Heard, TestServer, Token, KEY, PATIENCE, SECRET};

/// The binary, pointed at `url` with the test credentials.
fn command(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomstate"));
    command
        .args(args)
        .env("ROOMSTATE_URL", url)
        .env("ROOMSTATE_API_KEY", KEY)
        .env("ROOMSTATE_API_SECRET", SECRET);
    command
}

fn roomstate(url: &str, args: &[&str]) -> Output {
    command(url, args).output().expect("run roomstate")
}

/// Runs a command that must succeed; returns its stdout.
fn ok(url: &str, args: &[&str]) -> String {
    let output = roomstate(url, args);
    assert!(
        output.status.success(),
        "roomstate {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs a command that must fail; returns its stderr.
fn fails(url: &str, args: &[&str]) -> String {
    let output = roomstate(url, args);
    assert!(
        !output.status.success(),
        "roomstate {args:?} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

fn json_out(url: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&ok(url, &args)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_create_mints_tokens_the_server_accepts() {
    let server = TestServer::start();
    let url = server.http_url();
    let token = ok(
        &url,
        &[
            "token",
            "create",
            "--room",
            "r",
            "--identity",
            "carol",
            "--name",
            "Carol",
            "--attribute",
            "role=host",
            "--can-update-metadata",
            "--valid-for",
            "10m",
        ],
    );
    let carol = Client::join_with_jwt(&server.url(), token.trim())
        .await
        .unwrap();
    let me = carol.room.local_participant().info().unwrap();
    assert_eq!(
        (me.name.as_str(), me.attributes["role"].as_str()),
        ("Carol", "host")
    );
    carol
        .room
        .local_participant()
        .set_metadata("allowed".into())
        .await
        .unwrap();

    let viewer = json_out(
        &url,
        &["token", "create", "--room", "r", "--identity", "viewer"],
    );
    let viewer = Client::join_with_jwt(&server.url(), viewer["token"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        viewer
            .room
            .local_participant()
            .set_metadata("x".into())
            .await
            .is_err(),
        "no --can-update-metadata"
    );

    let output = command(&url, &["token", "create", "--room", "r", "--identity", "x"])
        .env_remove("ROOMSTATE_API_KEY")
        .env_remove("ROOMSTATE_API_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--api-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_and_participant_commands() {
    let server = TestServer::start();
    let url = server.http_url();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;

    let rooms = json_out(&url, &["room", "list"]);
    assert_eq!(rooms[0]["name"], "r");
    assert_eq!(rooms[0]["numParticipants"], 2);
    assert!(
        ok(&url, &["room", "list"]).contains("r     2"),
        "a table for people"
    );

    ok(&url, &["room", "metadata", "set", "r", "quiz at 3"]);
    alice
        .heard
        .wait_for(Heard::RoomMetadata("quiz at 3".into()))
        .await;

    let listed = json_out(&url, &["participant", "list", "r"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    ok(
        &url,
        &[
            "participant",
            "update",
            "r",
            "alice",
            "--attribute",
            "hand=up",
            "--metadata",
            "from the cli",
            "--name",
            "Alice",
        ],
    );
    bob.heard
        .wait_for(Heard::Attributes("alice".into(), vec!["hand".into()]))
        .await;
    bob.heard
        .wait_for(Heard::Metadata(
            "alice".into(),
            "".into(),
            "from the cli".into(),
        ))
        .await;
    let shown = json_out(&url, &["participant", "get", "r", "alice"]);
    assert_eq!(shown[0]["attributes"], json!({"hand": "up"}));
    assert_eq!(shown[0]["name"], "Alice");
    ok(
        &url,
        &[
            "participant",
            "update",
            "r",
            "alice",
            "--attribute",
            "hand=",
        ],
    );
    bob.heard
        .wait_until("hand lowered", |_| {
            bob.room.remote_participants()[0].attributes.is_empty()
        })
        .await;

    ok(&url, &["participant", "remove", "r", "bob"]);
    bob.heard
        .wait_for(Heard::Connection(ConnectionState::Disconnected {
            reason: DisconnectReason::Removed,
        }))
        .await;
    assert!(fails(&url, &["participant", "get", "r", "bob"]).contains("no participant \"bob\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_commands() {
    let server = TestServer::start();
    let url = server.http_url();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let seen = alice.observe(&["pinned"]);
    seen.wait_for(Heard::Key("pinned".into(), None)).await;

    let set = json_out(
        &url,
        &[
            "store",
            "set",
            "r",
            "pinned",
            r#"{"text":"hi"}"#,
            "--if-version",
            "0",
        ],
    );
    seen.wait_for(Heard::Key("pinned".into(), Some(json!({"text": "hi"}))))
        .await;
    let version = set[0]["version"].as_u64().unwrap();
    let conflict = fails(
        &url,
        &["store", "set", "r", "pinned", "1", "--if-version", "0"],
    );
    assert!(conflict.contains("aborted"), "{conflict}");
    ok(&url, &["store", "set", "r", "greeting", "hello"]);
    assert_eq!(
        json_out(&url, &["store", "get", "r", "greeting"])[0]["value"],
        "hello",
        "a bare word is a string"
    );
    let listed = json_out(&url, &["store", "list", "r"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(ok(&url, &["store", "list", "r"]).contains(&format!("pinned    {version}")));
    ok(&url, &["store", "delete", "r", "pinned"]);
    seen.wait_for(Heard::Key("pinned".into(), None)).await;
    assert_eq!(
        json_out(&url, &["store", "get", "r", "pinned"])[0]["version"],
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_watch_prints_changes_live_until_the_session_ends() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    alice
        .store()
        .set("before", json!("was here"))
        .await
        .unwrap();
    let mut watch = command(&server.http_url(), &["store", "watch", "r", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    async fn next(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Value {
        let line = tokio::time::timeout(PATIENCE, lines.recv())
            .await
            .expect("a line in time");
        serde_json::from_str(&line.expect("watch is running")).unwrap()
    }
    assert_eq!(
        next(&mut lines).await["value"],
        "was here",
        "the current values first"
    );
    alice
        .store()
        .set("pinned", json!({"text": "live"}))
        .await
        .unwrap();
    let change = next(&mut lines).await;
    assert_eq!(
        (change["key"].as_str(), change["updated_by"].as_str()),
        (Some("pinned"), Some("alice"))
    );
    alice.store().delete("before").await.unwrap();
    assert_eq!(
        next(&mut lines).await,
        json!({"key": "before", "value": null})
    );
    // The watcher is hidden: alice sees nobody else.
    assert!(alice.room.remote_participants().is_empty());
    alice.room.disconnect().await;
    let status = tokio::task::spawn_blocking(move || watch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("session ended"));
}

#[tokio::test]
async fn failures_are_explained() {
    let server = TestServer::start();
    let url = server.http_url();
    let down = fails("http://127.0.0.1:1", &["room", "list"]);
    assert!(
        down.contains("cannot reach the roomstate server at http://127.0.0.1:1"),
        "{down}"
    );
    let output = command(&url, &["room", "list", "--api-secret", "wrong"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("refused the credentials"));
    assert!(fails(&url, &["store", "list", "nowhere"])
        .contains("room \"nowhere\" has no active session"));
    assert!(fails(
        &url,
        &["participant", "update", "r", "x", "--attribute", "novalue"]
    )
    .contains("key=value"));
    let help = ok(&url, &["--help"]);
    assert!(
        help.contains("roomstate serve --dev"),
        "the help teaches: {help}"
    );
}
