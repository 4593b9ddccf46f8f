//! roomstate's rooms and participants in LiveKit's protobuf types, for the server API
//! and webhooks.

use livekit_protocol as lk;
use roomstate_protocol::ParticipantInfo;

use crate::rules::RoomSummary;

pub fn room(name: &str, summary: &RoomSummary) -> lk::Room {
    lk::Room {
        sid: summary.session_id.clone(),
        name: name.to_string(),
        creation_time: (summary.started_at / 1000) as i64,
        creation_time_ms: summary.started_at as i64,
        metadata: summary.metadata.clone(),
        num_participants: summary.participants as u32,
        ..Default::default()
    }
}

pub fn participant(info: &ParticipantInfo) -> lk::ParticipantInfo {
    lk::ParticipantInfo {
        sid: info.sid.clone(),
        identity: info.identity.clone(),
        name: info.name.clone(),
        metadata: info.metadata.clone(),
        attributes: info
            .attributes
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        version: info.version as u32,
        joined_at: (info.joined_at / 1000) as i64,
        joined_at_ms: info.joined_at as i64,
        state: lk::participant_info::State::Active as i32,
        permission: Some(lk::ParticipantPermission {
            can_subscribe: true,
            can_publish_data: true,
            can_update_metadata: info.permission.can_update_metadata,
            hidden: info.permission.hidden,
            ..Default::default()
        }),
        ..Default::default()
    }
}
