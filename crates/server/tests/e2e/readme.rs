//! The README's code, compiled and run: every ```rust, ```kotlin and ```swift block in
//! README.md and docs/ must be a marked region of a source file that the suite builds
//! (`README:begin` .. `README:end`), and the Rust quickstart runs here against a server.

use std::path::{Path, PathBuf};

use roomstate::RoomError;
use serde_json::json;

use crate::harness::{Client, Heard, TestServer, Token};

/// The README's "Using the engine (Rust)" block is the body of this function.
async fn readme_quickstart(url: &str, token: String) -> Result<(), RoomError> {
    // README:begin
    use std::collections::HashMap;
    use std::sync::Arc;

    use roomstate::{ConnectOptions, Room, RoomError, RoomListener, SessionStore, StoreEntry};
    use serde_json::json;

    struct MyRoomListener;

    impl RoomListener for MyRoomListener {
        fn on_session_store_available(&self, _store: SessionStore) {
            println!("the session store is ready");
        }
    }

    // `token` comes from your backend, or from `roomstate token create --room class-7
    // --identity alice --can-update-metadata` (set_attributes needs that grant).
    let room = Room::connect(
        url,
        &token,
        Arc::new(MyRoomListener),
        ConnectOptions::default(),
    )
    .await?;
    let store = room.session_store();

    // The current value first, then every change.
    let handle = store.add_key_change_listener(
        vec!["pinned".into()],
        Arc::new(|key: String, entry: Option<StoreEntry>| {
            println!("{key}: {:?}", entry.map(|e| e.value));
        }),
    )?;
    store.set("pinned", json!({"text": "Welcome!"})).await?;

    // A lock-free counter: compare-and-set by version (0 = "must not exist").
    let version = loop {
        let current = store.get("votes").await?;
        let (version, n) = current.map_or((0, 0), |e| (e.version, e.value.as_u64().unwrap_or(0)));
        match store
            .compare_and_set("votes", version, Some(json!(n + 1)))
            .await
        {
            Err(RoomError::Conflict { .. }) => continue, // another writer won this round
            result => break result?,
        }
    };
    println!("votes counted, now at version {version}");

    // Per-participant flags that don't overwrite each other; "" deletes.
    let hand = HashMap::from([("hand".to_string(), "up".to_string())]);
    room.local_participant().set_attributes(hand).await?;
    store.remove_key_change_listener(handle);
    room.disconnect().await;
    // README:end
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quickstart_runs_against_a_server() {
    let server = TestServer::start();
    let bob = Client::join(&server.url(), &Token::new("class-7", "bob")).await;
    let bob_sees = bob.observe(&["pinned", "votes"]);
    let alice = Token::new("class-7", "alice").sign();
    readme_quickstart(&server.url(), alice).await.unwrap();
    bob_sees
        .wait_for(Heard::Key(
            "pinned".into(),
            Some(json!({"text": "Welcome!"})),
        ))
        .await;
    bob_sees
        .wait_for(Heard::Key("votes".into(), Some(json!(1))))
        .await;
    bob.heard
        .wait_for(Heard::Attributes("alice".into(), vec!["hand".into()]))
        .await;
    bob.heard.wait_for(Heard::Left("alice".into())).await;
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file of the repository that git would keep (no build output).
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || ["target", "node_modules", ".build"].contains(&name.as_ref()) {
            continue;
        }
        if path.is_dir() {
            sources(&path, found);
        } else if ["rs", "kt", "swift"]
            .iter()
            .any(|ext| path.extension().is_some_and(|e| e == *ext))
        {
            found.push(path);
        }
    }
}

/// Lines with their common indentation removed and trailing spaces dropped.
fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|line| line.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The regions between `README:begin` and `README:end` comment lines.
fn marked_regions(text: &str) -> Vec<String> {
    let mut regions = Vec::new();
    let mut region: Option<Vec<&str>> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("// README:begin") {
            region = Some(Vec::new());
        } else if trimmed.starts_with("// README:end") {
            regions.extend(region.take().map(|lines| dedent(&lines)));
        } else if let Some(lines) = region.as_mut() {
            lines.push(line);
        }
    }
    regions
}

/// The code blocks in `language` of a Markdown text.
fn code_blocks(markdown: &str, languages: &[&str]) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match (&mut block, line.trim_start().strip_prefix("```")) {
            (None, Some(language)) if languages.contains(&language.trim()) => {
                block = Some(Vec::new())
            }
            (Some(lines), Some("")) => {
                blocks.push(dedent(lines));
                block = None;
            }
            (Some(lines), _) => lines.push(line),
            _ => {}
        }
    }
    blocks
}

#[test]
fn every_code_block_of_the_readme_and_docs_is_compiled_by_the_tests() {
    let root = repository();
    let mut files = Vec::new();
    sources(&root, &mut files);
    let regions: Vec<String> = files
        .iter()
        .flat_map(|file| marked_regions(&std::fs::read_to_string(file).unwrap()))
        .collect();
    let mut documents = vec![root.join("README.md")];
    for dir in ["docs", "bindings/swift", "bindings/kotlin"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        documents.extend(
            entries
                .map_while(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "md")),
        );
    }
    let mut checked = 0;
    for document in documents {
        let text = std::fs::read_to_string(&document).unwrap();
        for block in code_blocks(&text, &["rust", "kotlin", "swift"]) {
            checked += 1;
            assert!(
                regions.contains(&block),
                "{} has a code block that no test compiles; put it between `// README:begin` \
                 and `// README:end` in a source the suite builds, or copy the region that \
                 changed. The block:\n{block}",
                document.display()
            );
        }
    }
    assert!(
        checked >= 2,
        "found only {checked} code blocks: is the parser right?"
    );
}

/// docs/protocol.schema.json is what the protocol's types say today.
#[test]
fn the_protocol_schema_in_docs_matches_the_types() {
    let path = repository().join("docs/protocol.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == roomstate_protocol::schema::document(),
        "{} is stale: run scripts/generate-schema.sh and commit it",
        path.display()
    );
}
