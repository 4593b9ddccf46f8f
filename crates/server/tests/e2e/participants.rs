//! Participant attributes, metadata and names.

use std::collections::{BTreeMap, HashMap};

use roomstate::{Limit, RoomError};
use roomstate_protocol::RoomStateGrant;
use serde_json::json;

use crate::harness::{Client, Heard, TestServer, Token};

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn late_joiners_see_everyone_with_their_state() {
    let server = TestServer::start();
    let alice_token = Token::new("r", "alice").with(|claims| {
        claims.name = "Alice".into();
        claims.metadata = "from token".into();
        claims.attributes = BTreeMap::from([("role".into(), "host".into())]);
    });
    let alice = Client::join(&server.url(), &alice_token).await;
    let local = alice.room.local_participant().info().unwrap();
    assert_eq!(
        (local.name.as_str(), local.metadata.as_str()),
        ("Alice", "from token")
    );
    assert_eq!(local.attributes, map(&[("role", "host")]));

    alice
        .room
        .local_participant()
        .set_attributes(map(&[("hand", "up")]))
        .await
        .unwrap();
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    bob.room
        .local_participant()
        .set_metadata("bob's".into())
        .await
        .unwrap();
    alice.heard.wait_for(Heard::Joined("bob".into())).await;

    let carol = Client::join(&server.url(), &Token::new("r", "carol")).await;
    let seen = carol.room.remote_participants();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].identity, "alice");
    assert_eq!(seen[0].attributes, map(&[("role", "host"), ("hand", "up")]));
    assert_eq!(seen[0].metadata, "from token");
    assert_eq!(seen[1].identity, "bob");
    assert_eq!(seen[1].metadata, "bob's");
    assert!(seen.iter().all(|participant| !participant.is_local));
    assert!(
        !carol
            .heard
            .heard()
            .iter()
            .any(|heard| matches!(heard, Heard::Joined(_))),
        "people already there are in remote_participants, not joined events"
    );

    carol.room.disconnect().await;
    alice.heard.wait_for(Heard::Left("carol".into())).await;
    bob.heard.wait_for(Heard::Left("carol".into())).await;
    assert_eq!(alice.room.remote_participants().len(), 1);
}

#[tokio::test]
async fn attributes_merge_and_an_empty_value_deletes() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let me = alice.room.local_participant();
    me.set_attributes(map(&[("hand", "up"), ("brb", "yes")]))
        .await
        .unwrap();
    // One flag changing does not touch the other (100ms-android #774).
    let after = me
        .set_attributes(map(&[("hand", ""), ("mic", "off")]))
        .await
        .unwrap();
    assert_eq!(after.attributes, map(&[("brb", "yes"), ("mic", "off")]));

    bob.heard
        .wait_for(Heard::Attributes(
            "alice".into(),
            vec!["hand".into(), "mic".into()],
        ))
        .await;
    let alice_at_bob = bob.room.remote_participants().pop().unwrap();
    assert_eq!(
        alice_at_bob.attributes,
        map(&[("brb", "yes"), ("mic", "off")])
    );

    me.set_metadata("m1".into()).await.unwrap();
    me.set_name("Alice".into()).await.unwrap();
    bob.heard
        .wait_for(Heard::Metadata("alice".into(), "".into(), "m1".into()))
        .await;
    bob.heard
        .wait_for(Heard::Name("alice".into(), "".into(), "Alice".into()))
        .await;
    // The local participant hears its own changes too.
    alice
        .heard
        .wait_for(Heard::Metadata("alice".into(), "".into(), "m1".into()))
        .await;
    // Setting the name re-sent neither metadata nor attributes.
    let alice_at_bob = bob.room.remote_participants().pop().unwrap();
    assert_eq!(alice_at_bob.metadata, "m1");
    assert_eq!(alice_at_bob.attributes.len(), 2);
}

#[tokio::test]
async fn updates_need_the_metadata_grant_and_change_nothing_without_it() {
    let server = TestServer::start();
    let token = Token::new("r", "viewer").with(|claims| {
        claims.video.can_update_own_metadata = None;
        claims.metadata = "original".into();
    });
    let viewer = Client::join(&server.url(), &token).await;
    let me = viewer.room.local_participant();
    for result in [
        me.set_attributes(map(&[("a", "b")])).await,
        me.set_metadata("changed".into()).await,
        me.set_name("changed".into()).await,
    ] {
        assert!(
            matches!(result, Err(RoomError::NotAllowed { .. })),
            "{result:?}"
        );
    }
    let other = Client::join(&server.url(), &Token::new("r", "other")).await;
    let viewer_seen = other.room.remote_participants().pop().unwrap();
    assert_eq!(viewer_seen.metadata, "original");
    assert!(viewer_seen.attributes.is_empty());
    // Store writes are allowed by default even without it.
    viewer.store().set("k", json!(1)).await.unwrap();
}

#[tokio::test]
async fn store_grants_limit_writes() {
    let server = TestServer::start();
    let reader = Client::join(
        &server.url(),
        &Token::new("r", "reader").store_grant(RoomStateGrant {
            can_write_store: Some(false),
            ..Default::default()
        }),
    )
    .await;
    let polls = Client::join(
        &server.url(),
        &Token::new("r", "polls").store_grant(RoomStateGrant {
            store_write_prefixes: Some(vec!["poll/".into()]),
            ..Default::default()
        }),
    )
    .await;
    let denied = reader.store().set("k", json!(1)).await.unwrap_err();
    assert!(matches!(denied, RoomError::NotAllowed { .. }), "{denied:?}");
    assert!(matches!(
        reader.store().delete("k").await,
        Err(RoomError::NotAllowed { .. })
    ));
    polls
        .store()
        .set("poll/1", json!({"q": "?"}))
        .await
        .unwrap();
    assert!(matches!(
        polls.store().set("pinned", json!(1)).await,
        Err(RoomError::NotAllowed { .. })
    ));
    // Reading is always allowed.
    assert_eq!(
        reader.store().get("poll/1").await.unwrap().unwrap().value,
        json!({"q": "?"})
    );
    assert_eq!(reader.store().get("k").await.unwrap(), None);
}

#[tokio::test]
async fn participant_limits_hold_on_the_merged_result() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let me = alice.room.local_participant();
    let big = "x".repeat(40 * 1024);
    me.set_attributes(map(&[("a", &big)])).await.unwrap();
    // Each update is under 64 KiB; together they would not be.
    let error = me.set_attributes(map(&[("b", &big)])).await.unwrap_err();
    match error {
        RoomError::LimitExceeded {
            limit, max, actual, ..
        } => {
            assert_eq!((limit, max), (Limit::AttributesBytes, 64 * 1024));
            assert_eq!(actual, 2 * (1 + 40 * 1024));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        me.info().unwrap().attributes.len(),
        1,
        "the refused update changed nothing"
    );

    let error = me
        .set_metadata("m".repeat(64 * 1024 + 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            RoomError::LimitExceeded {
                limit: Limit::MetadataBytes,
                actual: 65537,
                ..
            }
        ),
        "{error:?}"
    );
    let error = me.set_name("n".repeat(257)).await.unwrap_err();
    assert!(
        matches!(
            error,
            RoomError::LimitExceeded {
                limit: Limit::NameBytes,
                ..
            }
        ),
        "{error:?}"
    );
    let error = me
        .set_attributes(map(&[("k".repeat(300).as_str(), "v")]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            RoomError::LimitExceeded {
                limit: Limit::KeyBytes,
                ..
            }
        ),
        "{error:?}"
    );
    let info = me.info().unwrap();
    assert_eq!((info.metadata.as_str(), info.name.as_str()), ("", ""));
}

#[tokio::test]
async fn hidden_participants_are_not_announced() {
    let server = TestServer::start();
    let alice = Client::join(&server.url(), &Token::new("r", "alice")).await;
    let observer = Client::join(
        &server.url(),
        &Token::new("r", "observer").with(|claims| claims.video.hidden = true),
    )
    .await;
    // The hidden one sees the room; the room does not see it.
    assert_eq!(observer.room.remote_participants().len(), 1);
    observer
        .room
        .local_participant()
        .set_metadata("secret".into())
        .await
        .unwrap();
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    assert_eq!(
        bob.room.remote_participants().len(),
        1,
        "only alice is listed"
    );
    observer.room.disconnect().await;
    alice.heard.wait_for(Heard::Joined("bob".into())).await;
    bob.room.disconnect().await;
    alice.heard.wait_for(Heard::Left("bob".into())).await;
    let heard = alice.heard.heard();
    assert!(
        !heard.iter().any(
            |heard| matches!(heard, Heard::Joined(who) | Heard::Left(who) if who == "observer")
        ),
        "{heard:?}"
    );
    assert!(
        !heard
            .iter()
            .any(|heard| matches!(heard, Heard::Metadata(..))),
        "{heard:?}"
    );
}
