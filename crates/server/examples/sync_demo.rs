//! Two clients in one room, printing what each hears: run `scripts/demo.sh`, or start
//! `roomstate serve --dev` yourself and `cargo run -p roomstate-server --example sync_demo`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use roomstate::{ConnectOptions, KeyChangeListener, Participant, Room, RoomListener, StoreEntry};
use roomstate_protocol::{Claims, VideoGrant};
use roomstate_server::auth::{mint_token, unix_now};
use roomstate_server::config::{DEV_API_KEY, DEV_API_SECRET};
use serde_json::json;

struct Printer(&'static str);

impl KeyChangeListener for Printer {
    fn on_key_changed(&self, key: String, entry: Option<StoreEntry>) {
        match entry {
            Some(entry) => println!(
                "  [{}] store {key:?} = {} (v{}, by {})",
                self.0, entry.value, entry.version, entry.updated_by
            ),
            None => println!("  [{}] store {key:?} is empty", self.0),
        }
    }
}

impl RoomListener for Printer {
    fn on_participant_joined(&self, participant: Participant) {
        println!("  [{}] {} joined", self.0, participant.identity);
    }
    fn on_attributes_changed(&self, participant: Participant, changed: Vec<String>) {
        let attributes: BTreeMap<_, _> = participant.attributes.into_iter().collect();
        println!(
            "  [{}] {} changed {changed:?}: now {attributes:?}",
            self.0, participant.identity
        );
    }
    fn on_participant_left(&self, participant: Participant) {
        println!("  [{}] {} left", self.0, participant.identity);
    }
}

fn token(identity: &str) -> String {
    let claims = Claims {
        iss: DEV_API_KEY.into(),
        sub: identity.into(),
        exp: Some(unix_now() + 600),
        video: VideoGrant {
            room: "demo".into(),
            room_join: true,
            can_update_own_metadata: Some(true),
            ..Default::default()
        },
        ..Default::default()
    };
    mint_token(&claims, DEV_API_SECRET)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("ROOMSTATE_URL").unwrap_or_else(|_| "ws://127.0.0.1:7880".into());
    // Another node of the same cluster, for bob; the same server by default.
    let bob_url = std::env::var("ROOMSTATE_URL_2").unwrap_or_else(|_| url.clone());
    let pause = || tokio::time::sleep(Duration::from_millis(300));
    println!("alice joins room \"demo\" at {url}");
    let alice = Room::connect(
        &url,
        &token("alice"),
        Arc::new(Printer("alice")),
        ConnectOptions::default(),
    )
    .await?;
    println!("bob joins at {bob_url}, and observes \"pinned\" and \"spotlight\"");
    let bob = Room::connect(
        &bob_url,
        &token("bob"),
        Arc::new(Printer("bob")),
        ConnectOptions::default(),
    )
    .await?;
    bob.session_store().add_key_change_listener(
        vec!["pinned".into(), "spotlight".into()],
        Arc::new(Printer("bob")),
    )?;
    pause().await;

    println!("alice pins a message");
    alice
        .session_store()
        .set(
            "pinned",
            json!({"text": "Welcome to the class!", "by": "alice"}),
        )
        .await?;
    pause().await;
    println!("alice spotlights bob");
    let bob_sid = bob
        .local_participant()
        .info()
        .map(|info| info.sid)
        .unwrap_or_default();
    alice
        .session_store()
        .set("spotlight", json!(bob_sid))
        .await?;
    pause().await;
    println!("bob raises his hand (a participant attribute)");
    bob.local_participant()
        .set_attributes(HashMap::from([("hand".into(), "raised".into())]))
        .await?;
    pause().await;
    println!("alice and bob both try to take the spotlight with compare-and-set; one wins");
    let current = alice
        .session_store()
        .get("spotlight")
        .await?
        .map_or(0, |entry| entry.version);
    let (alice_store, bob_store) = (alice.session_store(), bob.session_store());
    let (a, b) = tokio::join!(
        alice_store.compare_and_set("spotlight", current, Some(json!("alice"))),
        bob_store.compare_and_set("spotlight", current, Some(json!("bob"))),
    );
    println!(
        "  alice: {:?}\n  bob:   {:?}",
        a.map(|v| format!("won, v{v}")),
        b.map(|v| format!("won, v{v}"))
    );
    pause().await;
    println!("alice unpins");
    alice.session_store().delete("pinned").await?;
    pause().await;
    alice.disconnect().await;
    pause().await;
    bob.disconnect().await;
    println!("done: the last one out ended the session, and its store with it");
    Ok(())
}
