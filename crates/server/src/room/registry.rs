//! Every room this node holds, and joining one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use roomstate_protocol::{Claims, CloseReason};
use tokio::sync::{mpsc, oneshot};

use super::{AdmittedHere, Closing, Connection, Frame, Node, Pending, Room};
use crate::cluster::{Delivery, NotAppended, Unavailable};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::rules::command::{Command, ResumeRequest};

/// Every room this node holds.
pub struct Rooms {
    pub(super) node: Arc<Node>,
    pub(super) rooms: Arc<Mutex<HashMap<String, Arc<Room>>>>,
}

/// What the upgrade handler learned about a connecting client.
pub struct Admission {
    pub claims: Claims,
    pub room: String,
    pub resume: Option<ResumeRequest>,
    /// The token is past its `exp`: good for resuming, not for joining anew.
    pub token_expired: bool,
}

/// A connection, admitted: the frames to write before anything else, and where its
/// messages go.
pub struct Admitted {
    pub room: Arc<Room>,
    pub sid: String,
    /// The participant's attach count when this connection took it over; its messages
    /// carry it, so those of a replaced connection are ignored everywhere.
    pub epoch: u64,
    pub initial: Vec<Frame>,
}

/// Why a connection was not admitted.
pub enum NotAdmitted {
    /// The room's shared state could not be reached: try again.
    Unavailable(String),
    /// The room refused it.
    Refused(Closing),
}

impl NotAdmitted {
    /// The goodbye the connection is to say.
    pub fn into_closing(self) -> Closing {
        match self {
            NotAdmitted::Unavailable(_) => Closing {
                reason: CloseReason::Unavailable,
                message: "the room's shared state cannot be reached; try again".into(),
            },
            NotAdmitted::Refused(closing) => closing,
        }
    }
}

impl From<Unavailable> for NotAdmitted {
    fn from(Unavailable(problem): Unavailable) -> Self {
        NotAdmitted::Unavailable(problem)
    }
}

/// A join that may have been stored is refused all the same: its connection is closed
/// as `unavailable` and resumes, and a participant admitted without one departs after
/// the reconnect grace period.
impl From<NotAppended> for NotAdmitted {
    fn from(not_appended: NotAppended) -> Self {
        NotAdmitted::Unavailable(not_appended.problem().to_string())
    }
}

/// A use of a room by this node (a joining connection, a server API call): while one
/// exists, the room stays loaded.
pub struct RoomUse {
    pub(super) room: Arc<Room>,
}

impl std::ops::Deref for RoomUse {
    type Target = Arc<Room>;
    fn deref(&self) -> &Arc<Room> {
        &self.room
    }
}

impl Drop for RoomUse {
    fn drop(&mut self) {
        self.room.lock_state().users -= 1;
        self.room.release_if_unused();
    }
}

impl Rooms {
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        Arc::new(Rooms {
            node,
            rooms: Arc::default(),
        })
    }

    pub fn config(&self) -> &ServerConfig {
        &self.node.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.node.metrics
    }

    pub fn room_count(&self) -> usize {
        self.rooms.lock().len()
    }

    /// The room `name`, loaded and caught up with its log (in a cluster).
    pub async fn open(&self, name: &str) -> Result<RoomUse, Unavailable> {
        let room = {
            let mut rooms = self.rooms.lock();
            let room = rooms
                .entry(name.to_string())
                .or_insert_with(|| {
                    Arc::new(Room::new(
                        name,
                        self.node.clone(),
                        Arc::downgrade(&self.rooms),
                    ))
                })
                .clone();
            // Rooms leave the registry under its lock, so this one is not removed.
            room.lock_state().users += 1;
            room
        };
        let room = RoomUse { room };
        if let Some(cluster) = &self.node.cluster {
            Box::pin(room.sync(cluster)).await?;
        }
        Ok(room)
    }

    /// Joins or resumes a participant, and returns the frames it gets first.
    pub async fn admit(
        &self,
        admission: Admission,
        connection: Connection,
    ) -> Result<Admitted, NotAdmitted> {
        let room = self.open(&admission.room).await?;
        if let Some(cluster) = &self.node.cluster {
            // Recorded before joining, so whoever finds this node dead finds the room.
            cluster.host(&admission.room).await?;
        }
        let (admitted, answer) = oneshot::channel();
        let command = Command::Admit {
            claims: Box::new(admission.claims),
            resume: admission.resume,
            token_expired: admission.token_expired,
            sid: format!("PA_{}", random_id()),
            resume_token: format!("{:032x}", rand::random::<u128>()),
            session_id: format!("SE_{}", random_id()),
        };
        let ticket = room
            .submit(
                command,
                Some(Pending::Admit {
                    connection,
                    admitted,
                }),
            )
            .await?;
        let answer = tokio::time::timeout(self.wait_limit(), answer).await;
        match answer {
            Ok(Ok(AdmittedHere::Attached(sid, epoch, initial))) => Ok(Admitted {
                room: room.room.clone(),
                sid,
                epoch,
                initial,
            }),
            Ok(Ok(AdmittedHere::Refused(closing))) => Err(NotAdmitted::Refused(closing)),
            _ => {
                room.forget(ticket);
                Err(NotAdmitted::Unavailable(
                    "the join was stored but this node could not read it back in time".into(),
                ))
            }
        }
    }

    /// How long a caller waits for its own entry to come back from the log.
    pub(super) fn wait_limit(&self) -> Duration {
        match &self.node.cluster {
            Some(cluster) => cluster.timeout() * 5,
            None => Duration::from_secs(5),
        }
    }

    /// Takes deliveries from the cluster: entries other nodes appended, resyncs after
    /// the subscription dropped, and dead nodes to clear out.
    pub fn listen(self: &Arc<Self>, mut deliveries: mpsc::UnboundedReceiver<Delivery>) {
        let rooms = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(delivery) = deliveries.recv().await {
                let Some(rooms) = rooms.upgrade() else { return };
                match delivery {
                    Delivery::Published { room, payload } => {
                        let found = rooms.rooms.lock().get(&room).cloned();
                        if let Some(found) = found {
                            found.offer_published(&payload);
                        }
                    }
                    Delivery::Resubscribed => {
                        let all: Vec<Arc<Room>> = rooms.rooms.lock().values().cloned().collect();
                        for room in all {
                            room.spawn_sync();
                        }
                    }
                    Delivery::Reaped { room } => {
                        let rooms = rooms.clone();
                        // Loading the room applies the entry; the use ends at once.
                        tokio::spawn(async move { drop(rooms.open(&room).await) });
                    }
                }
            }
        });
    }
}

impl Room {
    /// Forgets the room if nothing on this node needs it any more: no participant is
    /// connected through this node and nobody here waits on it.
    pub(super) fn release_if_unused(self: &Arc<Self>) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut rooms = registry.lock();
        let mut state = self.lock_state();
        let needed = state.removed
            || state.users > 0
            || !state.pending.is_empty()
            || state
                .replica
                .session()
                .is_some_and(|session| session.connected_through(&self.node.id).next().is_some());
        if needed {
            return;
        }
        state.removed = true;
        let had_session = state.replica.session().is_some();
        state.replica.clear();
        self.count_session(had_session, false);
        if rooms
            .get(&self.name)
            .is_some_and(|room| Arc::ptr_eq(room, self))
        {
            rooms.remove(&self.name);
        }
        if let Some(cluster) = &self.node.cluster {
            // Under the registry's lock: a new copy of this room subscribes after this.
            cluster.unsubscribe(&self.name);
        }
    }
}

fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
