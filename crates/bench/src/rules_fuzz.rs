//! The room's rules fuzzed in this process: the mutated frames of [`crate::fuzz`] go
//! through the protocol's decoder and straight into a node's `Rooms` (no socket, no
//! server process, no other thread), from three participants of one room, with the
//! default limits.
//!
//! The oracle, checked after every frame: the room answers each decoded request of the
//! sender exactly once (a `reply` or a `rejected` carrying its id); everything it sends
//! decodes as a server message; each participant's events arrive with strictly
//! increasing `seq`; no participant is cut; the store holds at most `limits.keys` keys,
//! each within `key_bytes` and `value_bytes`, the total within `store_bytes`, and each
//! key's version never goes back; every participant's attributes, metadata and name
//! stay within their limits.

use std::collections::HashMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roomstate_protocol::{Claims, ClientMessage, Limits, ServerMessage, VideoGrant};
use roomstate_server::room::{Admission, Connection, Frame, Node, Outbox, Outgoing, Room, Rooms};
use roomstate_server::ServerConfig;
use serde_json::json;

use crate::fuzz::{Mutator, Report, FRAMES};

const ROOM: &str = "fuzz";

/// One participant, connected through channels instead of a socket.
pub struct Member {
    pub room: Arc<Room>,
    pub sid: String,
    pub epoch: u64,
    pub connection: Connection,
    pub outbox: Arc<Outbox>,
    /// Set once the room closed the connection.
    cut: Option<roomstate_server::room::Closing>,
    pub next_id: u64,
    last_seq: u64,
}

/// Joins `identity` to the room `fuzz`, with the grants of a participant that may write.
pub async fn join(rooms: &Rooms, identity: &str) -> Result<Member, String> {
    let config = rooms.config();
    let outbox = Outbox::new(config.outbound_queue, config.outbound_queue_bytes);
    let connection = Connection::new(outbox.clone());
    let claims = Claims {
        sub: identity.into(),
        video: VideoGrant {
            room: ROOM.into(),
            room_join: true,
            can_update_own_metadata: Some(true),
            ..Default::default()
        },
        ..Default::default()
    };
    let admission = Admission {
        claims,
        room: ROOM.into(),
        resume: None,
        token_expired: false,
    };
    let admitted = rooms
        .admit(admission, connection.clone())
        .await
        .map_err(|_| format!("{identity} was not admitted"))?;
    let mut member = Member {
        room: admitted.room,
        sid: admitted.sid,
        epoch: admitted.epoch,
        connection,
        outbox,
        cut: None,
        next_id: 1,
        last_seq: 0,
    };
    for frame in admitted.initial {
        if let Ok(ServerMessage::Joined(joined)) = serde_json::from_str(frame.as_str()) {
            member.last_seq = joined.seq;
        }
    }
    Ok(member)
}

/// Takes what the room queued for `member`, as its writer would; checks each frame.
fn drain(member: &mut Member, name: &str, failures: &mut Vec<String>) -> Vec<ServerMessage> {
    let mut received = Vec::new();
    let mut frames = Vec::new();
    while let Some(outgoing) = member.outbox.take(usize::MAX, usize::MAX) {
        match outgoing {
            Outgoing::Frames(wire) => frames.extend(wire),
            Outgoing::Close(closing) => member.cut = Some(closing),
            Outgoing::End => break,
        }
    }
    for wire in frames {
        let Some(frame) = Frame::from_wire(wire) else {
            failures.push(format!("{name} got a frame that is not a text frame"));
            continue;
        };
        match serde_json::from_str::<ServerMessage>(frame.as_str()) {
            Ok(message) => {
                if let Some(seq) = message.seq() {
                    // A store event's seq is its entry's version: other events with
                    // the same seq cannot exist, so strictly increasing holds for all.
                    if seq <= member.last_seq {
                        failures.push(format!(
                            "{name} got seq {seq} after {}: {:.200}",
                            member.last_seq,
                            frame.as_str()
                        ));
                    }
                    member.last_seq = seq;
                }
                received.push(message);
            }
            Err(error) => failures.push(format!(
                "{name} got an undecodable frame ({error}): {:.200}",
                frame.as_str()
            )),
        }
    }
    received
}

/// What the store and the participants must respect at every moment.
async fn check_limits(
    rooms: &Rooms,
    limits: &Limits,
    versions: &mut HashMap<String, u64>,
    failures: &mut Vec<String>,
) {
    let Ok((entries, _)) = rooms.store_list(ROOM).await else {
        return failures.push("the room's store cannot be listed".into());
    };
    if entries.len() > limits.keys {
        failures.push(format!("{} keys, over {}", entries.len(), limits.keys));
    }
    let mut total = 0;
    for entry in &entries {
        let value_len = entry
            .value
            .as_ref()
            .map_or(0, |value| value.to_string().len());
        total += entry.key.len() + value_len;
        if entry.key.is_empty() || entry.key.len() > limits.key_bytes {
            failures.push(format!("a key of {} bytes is stored", entry.key.len()));
        }
        if value_len > limits.value_bytes {
            failures.push(format!("{} holds {value_len} bytes", entry.key));
        }
        let seen = versions.entry(entry.key.clone()).or_default();
        if entry.version < *seen {
            failures.push(format!(
                "{} went back from version {seen} to {}",
                entry.key, entry.version
            ));
        }
        *seen = entry.version;
    }
    if total > limits.store_bytes {
        failures.push(format!(
            "the store holds {total} bytes, over {}",
            limits.store_bytes
        ));
    }
    let Ok(participants) = rooms.participants(ROOM).await else {
        return failures.push("the room's participants cannot be listed".into());
    };
    for participant in participants {
        let attributes: usize = participant
            .attributes
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum();
        if attributes > limits.attributes_bytes
            || participant.metadata.len() > limits.metadata_bytes
            || participant.name.len() > limits.name_bytes
        {
            failures.push(format!(
                "{} holds {attributes} bytes of attributes, {} of metadata, {} of name",
                participant.identity,
                participant.metadata.len(),
                participant.name.len()
            ));
        }
    }
}

/// A valid request on one of 150 keys: writes of 500 to 1,100 bytes (some conditional, some over
/// `value_bytes`), deletes, reads, observes and attribute updates.
fn valid_frame(rng: &mut StdRng, id: u64) -> String {
    let key = format!("key-{}", rng.random_range(0..150));
    let value = "v".repeat(rng.random_range(500..1100));
    let frame = match rng.random_range(0..8) {
        0..=2 => json!({"type": "set", "key": key, "value": value}),
        3 => {
            json!({"type": "set", "key": key, "value": value, "if_version": rng.random_range(0..50u64)})
        }
        4 => json!({"type": "delete", "key": key}),
        5 => json!({"type": "get", "keys": [key, "*"]}),
        6 => {
            json!({"type": if rng.random_bool(0.7) { "observe" } else { "unobserve" }, "keys": [key]})
        }
        _ => json!({"type": "update_participant", "attributes": {key: value}}),
    };
    let mut frame = frame;
    frame["id"] = id.into();
    frame.to_string()
}

/// The rooms of one node in this process, with the default settings: no socket, no
/// webhooks, no cluster.
pub fn single_node(name: &str) -> Arc<Rooms> {
    Rooms::new(Arc::new(Node {
        id: name.into(),
        config: ServerConfig::default(),
        metrics: roomstate_server::metrics::Metrics::new(),
        webhooks: None,
        cluster: None,
        append_queue: roomstate_server::room::NodeQueue::new(0),
    }))
}

/// Runs `iterations` mutated frames through the decoder and the room's rules.
pub async fn fuzz_rules(iterations: u64, seed: u64, report: &mut Report) {
    let rooms = single_node("fuzz");
    let limits = rooms.config().limits;
    let mut mutator = Mutator::new(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut members = Vec::new();
    let mut joined = 0;
    for _ in 0..3 {
        match join(&rooms, &format!("member-{joined}")).await {
            Ok(member) => members.push(member),
            Err(failure) => return report.failures.push(failure),
        }
        joined += 1;
    }
    let mut versions = HashMap::new();
    for n in 0..iterations {
        let who = (n % members.len() as u64) as usize;
        let member = &mut members[who];
        let fresh = member.next_id;
        // Half the frames are valid requests over 150 keys with values up to 1,100
        // bytes, so the store reaches its limits; the other half are mutations.
        let mutated = if n % 2 == 0 {
            valid_frame(&mut rng, fresh)
        } else {
            let frame = mutator.pick(FRAMES).replace("{id}", &fresh.to_string());
            mutator.mutate_frame(&frame, fresh)
        };
        report.frames += 1;
        let Ok(message) = serde_json::from_str::<ClientMessage>(&mutated) else {
            continue; // the connection answers these itself (the decoder is fuzzed apart)
        };
        report.decoded += 1;
        let id = message.request_id();
        let leaving = matches!(message, ClientMessage::Leave { .. });
        // A frame whose id jumped ahead makes every later request of this participant
        // "not above the last": it is replaced below, so the run keeps reaching the rules.
        let id_ahead = id.is_some_and(|id| id > fresh);
        member.next_id = fresh + 1;
        let room = member.room.clone();
        room.handle(&member.sid, member.epoch, message, &member.connection)
            .await;
        let mut failures = Vec::new();
        for (index, other) in members.iter_mut().enumerate() {
            let name = format!("member {index}");
            let received = drain(other, &name, &mut failures);
            if index != who {
                continue;
            }
            if let Some(id) = id {
                let answers = received
                    .iter()
                    .filter(|message| match message {
                        ServerMessage::Reply(reply) => reply.id == id,
                        ServerMessage::Rejected { id: rejected, .. } => *rejected == Some(id),
                        _ => false,
                    })
                    .count();
                report.replies += received
                    .iter()
                    .filter(|message| matches!(message, ServerMessage::Reply(_)))
                    .count() as u64;
                report.rejected += received
                    .iter()
                    .filter(|message| matches!(message, ServerMessage::Rejected { .. }))
                    .count() as u64;
                if answers != 1 {
                    failures.push(format!("request {id} was answered {answers} times"));
                }
            }
            if other.cut.is_some() {
                failures.push(format!("{name} was cut"));
            }
        }
        // The store's limits hold at every step; listing it costs far more than a
        // frame, so it is checked every eighth frame (a breach stays until it is seen).
        if n % 8 == 7 || n + 1 == iterations {
            check_limits(&rooms, &limits, &mut versions, &mut failures).await;
        }
        if !failures.is_empty() {
            report.failures.extend(
                failures
                    .into_iter()
                    .map(|failure| format!("{failure}; after member {who} sent {mutated:.300}")),
            );
            return;
        }
        if leaving || id_ahead {
            // Another participant takes its place. One whose ids ran ahead leaves first,
            // so that the room does not fill with participants waiting out their grace.
            let member = &mut members[who];
            if id_ahead {
                let room = member.room.clone();
                room.handle(
                    &member.sid,
                    member.epoch,
                    ClientMessage::Leave {},
                    &member.connection,
                )
                .await;
            }
            member.room.connection_closed(&member.sid, member.epoch);
            match join(&rooms, &format!("member-{joined}")).await {
                Ok(member) => members[who] = member,
                Err(failure) => return report.failures.push(failure),
            }
            joined += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In-process, so CI runs many more frames than against a server process.
    #[test]
    fn a_seeded_run_of_the_rules_finds_nothing() {
        let seed = crate::fuzz::seed_for_tests();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut report = Report::default();
        runtime.block_on(fuzz_rules(10_000, seed, &mut report));
        assert!(
            report.failures.is_empty(),
            "seed {seed}: {:#?}",
            report.failures
        );
        // The run reached the rules: requests were decoded, answered and refused.
        assert!(
            report.decoded > 1000 && report.replies > 1000 && report.rejected > 0,
            "{report:?}"
        );
    }
}
