//! The server API's operations on rooms.

use roomstate_protocol::{Entry, ParticipantInfo};
use tokio::sync::oneshot;

use super::{Pending, RoomSummary, Rooms};
use crate::cluster::{NotAppended, Unavailable};
use crate::rules::command::{Command, ParticipantChange};
use crate::rules::session::Session;
use crate::rules::store::validate_key;
use crate::rules::{AdminError, AdminOutcome};

impl From<Unavailable> for AdminError {
    fn from(Unavailable(message): Unavailable) -> Self {
        AdminError::Unavailable(message)
    }
}

impl From<NotAppended> for AdminError {
    fn from(not_appended: NotAppended) -> Self {
        match &not_appended {
            NotAppended::NotSent(problem) => AdminError::Unavailable(problem.clone()),
            NotAppended::Unknown(_) => {
                AdminError::OutcomeUnknown(not_appended.error_body().message)
            }
        }
    }
}

/// The server API's operations: what a backend may do to a room without being in it.
/// On any node of a cluster: the node loads the room for the call.
impl Rooms {
    /// Runs `read` on `room`'s session. In a cluster whose Redis cannot be reached, a
    /// room this node holds is read anyway, and the second value says it may be stale.
    async fn read<R>(
        &self,
        room: &str,
        read: impl FnOnce(&Session) -> Result<R, AdminError>,
    ) -> Result<(R, bool), AdminError> {
        let (found, stale, _in_use) = match self.open(room).await {
            Ok(opened) => (opened.room.clone(), false, Some(opened)),
            Err(unavailable) => match self.rooms.lock().get(room) {
                Some(found) if found.lock_state().loaded => (found.clone(), true, None),
                _ => return Err(unavailable.into()),
            },
        };
        let state = found.lock_state();
        let session = state
            .replica
            .session()
            .ok_or_else(|| AdminError::NoSuchRoom(room.to_string()))?;
        read(session).map(|value| (value, stale))
    }

    /// Appends a server API change to `room`'s log and waits for its outcome.
    async fn change(&self, room: &str, command: Command) -> Result<AdminOutcome, AdminError> {
        let found = self.open(room).await?;
        if found.lock_state().replica.session().is_none() {
            return Err(AdminError::NoSuchRoom(room.to_string()));
        }
        let (answer, outcome) = oneshot::channel();
        let ticket = found.submit(command, Some(Pending::Admin(answer))).await?;
        match tokio::time::timeout(self.wait_limit(), outcome).await {
            Ok(Ok(outcome)) => outcome,
            _ => {
                found.forget(ticket);
                Err(AdminError::OutcomeUnknown(
                    "the change was stored, but this node did not apply it in time to tell how it went"
                        .into(),
                ))
            }
        }
    }

    pub async fn list(&self, names: &[String]) -> Result<Vec<RoomSummary>, AdminError> {
        let candidates: Vec<String> = match &self.node.cluster {
            Some(cluster) => cluster.room_names().await?,
            None => self.rooms.lock().keys().cloned().collect(),
        };
        let mut listed = Vec::new();
        for name in candidates {
            if !names.is_empty() && !names.contains(&name) {
                continue;
            }
            match self.read(&name, |session| Ok(session.summary(&name))).await {
                Ok((summary, _)) => listed.push(summary),
                Err(AdminError::NoSuchRoom(_)) => {}
                Err(error) => return Err(error),
            }
        }
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }

    pub async fn participants(&self, room: &str) -> Result<Vec<ParticipantInfo>, AdminError> {
        self.read(room, |session| Ok(session.participant_infos()))
            .await
            .map(|(all, _)| all)
    }

    pub async fn participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<ParticipantInfo, AdminError> {
        self.read(room, |session| {
            session
                .participant_with_identity(identity)
                .cloned()
                .ok_or_else(|| AdminError::NoSuchParticipant(identity.to_string()))
        })
        .await
        .map(|(info, _)| info)
    }

    pub async fn update_participant(
        &self,
        room: &str,
        identity: &str,
        change: ParticipantChange,
    ) -> Result<ParticipantInfo, AdminError> {
        let command = Command::UpdateParticipant {
            identity: identity.to_string(),
            change,
        };
        match self.change(room, command).await? {
            AdminOutcome::Participant(info) => Ok(info),
            _ => unreachable!("an update answers with the participant"),
        }
    }

    pub async fn remove_participant(&self, room: &str, identity: &str) -> Result<(), AdminError> {
        let command = Command::RemoveParticipant {
            identity: identity.to_string(),
        };
        self.change(room, command).await.map(|_| ())
    }

    pub async fn set_room_metadata(
        &self,
        room: &str,
        metadata: String,
    ) -> Result<RoomSummary, AdminError> {
        match self
            .change(room, Command::SetRoomMetadata { metadata })
            .await?
        {
            AdminOutcome::Room(summary) => Ok(summary),
            _ => unreachable!("room metadata answers with the room"),
        }
    }

    /// One key's entry (absent or not); the key is checked as a write's would be, so
    /// `*`, an empty key or an oversize one is refused.
    pub async fn store_entry(&self, room: &str, key: &str) -> Result<(Entry, bool), AdminError> {
        validate_key(key, &self.config().limits).map_err(AdminError::Refused)?;
        self.read(room, |session| Ok(session.store().get(key)))
            .await
    }

    /// Every entry of the room's store.
    pub async fn store_list(&self, room: &str) -> Result<(Vec<Entry>, bool), AdminError> {
        self.read(room, |session| Ok(session.store().all())).await
    }

    /// A store write by the server API: `author` names the caller.
    pub async fn store_write(
        &self,
        room: &str,
        author: &str,
        key: &str,
        value: Option<serde_json::Value>,
        if_version: Option<u64>,
    ) -> Result<Entry, AdminError> {
        let command = Command::StoreWrite {
            author: author.to_string(),
            key: key.to_string(),
            value,
            if_version,
        };
        match self.change(room, command).await? {
            AdminOutcome::Entry(entry) => Ok(entry),
            _ => unreachable!("a write answers with the entry"),
        }
    }
}
