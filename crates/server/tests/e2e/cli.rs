//! The `roomstate` command line, run as a real process against a real server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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
    // No rooms: one sentence, no empty table under it.
    assert_eq!(
        ok(&url, &["room", "list"]),
        "no rooms with an active session\n"
    );
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

/// A long-running CLI command (`store watch`, `join`) whose stdout lines arrive on a
/// channel and whose stderr is kept for the end.
struct Running {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Running {
    fn start(url: &str, args: &[&str]) -> Running {
        let mut child = command(url, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines_tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        Running { child, lines }
    }

    /// The next JSON line printed.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(PATIENCE, self.lines.recv())
            .await
            .expect("a line in time")
            .expect("the command is running");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"))
    }

    /// Interrupts it as Ctrl-C would; returns its stderr once it exited successfully.
    async fn interrupt(self) -> String {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        let output = tokio::task::spawn_blocking(move || self.child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            output.status.success(),
            "exited with {}: {stderr}",
            output.status
        );
        stderr
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_watch_stays_connected_in_a_quiet_room() {
    // The server closes after 600 ms without a frame; the watcher pings every 100 ms and
    // would reconnect after 400 ms without one.
    let server = TestServer::with_config("idle_timeout_ms = 600");
    let alice = Client::join(&server.url(), &Token::new("quiet", "alice")).await;
    let mut watch = Running::start(
        &server.http_url(),
        &[
            "store",
            "watch",
            "quiet",
            "--json",
            "--ping-interval-ms",
            "100",
            "--ping-timeout-ms",
            "400",
        ],
    );
    alice.store().set("pinned", json!("first")).await.unwrap();
    assert_eq!(watch.next().await["value"], "first");
    tokio::time::sleep(Duration::from_secs(3)).await; // nothing changes
    alice.store().set("pinned", json!("second")).await.unwrap();
    let change = watch.next().await;
    assert_eq!(change["value"], "second");
    assert!(
        watch.lines.try_recv().is_err(),
        "nothing printed twice or replayed"
    );
    let stderr = watch.interrupt().await;
    assert!(
        !stderr.contains("reconnecting"),
        "the watcher reconnected in a quiet room: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_puts_a_visible_participant_in_the_room_that_prints_what_it_sees() {
    let server = TestServer::start();
    let bob = Client::join(&server.url(), &Token::new("class-7", "bob")).await;
    let mut alice = Running::start(
        &server.http_url(),
        &[
            "join",
            "class-7",
            "--identity",
            "alice",
            "--attribute",
            "role=host",
            "--json",
        ],
    );
    let present = alice.next().await;
    assert_eq!(
        (present["event"].as_str(), present["identity"].as_str()),
        (Some("present"), Some("bob")),
        "who was there first"
    );
    bob.heard.wait_for(Heard::Joined("alice".into())).await;
    let others = bob.room.remote_participants();
    assert_eq!(others.len(), 1, "alice is visible: {others:?}");
    assert_eq!(others[0].identity, "alice");
    assert_eq!(
        others[0].attributes["role"], "host",
        "the token's attributes"
    );
    let _carol = Client::join(&server.url(), &Token::new("class-7", "carol")).await;
    let joined = alice.next().await;
    assert_eq!(
        (joined["event"].as_str(), joined["identity"].as_str()),
        (Some("joined"), Some("carol"))
    );

    bob.store()
        .set("pinned", json!({"text": "hi"}))
        .await
        .unwrap();
    let change = alice.next().await;
    assert_eq!(
        (change["key"].as_str(), change["updated_by"].as_str()),
        (Some("pinned"), Some("bob"))
    );
    bob.room
        .local_participant()
        .set_attributes([("hand".to_string(), "up".to_string())].into())
        .await
        .unwrap();
    let attributes = alice.next().await;
    assert_eq!(attributes["event"], "attributes");
    assert_eq!(attributes["attributes"]["hand"], "up");

    let stderr = alice.interrupt().await;
    assert!(stderr.contains("joined room class-7 as alice"), "{stderr}");
    bob.heard.wait_for(Heard::Left("alice".into())).await;
}
