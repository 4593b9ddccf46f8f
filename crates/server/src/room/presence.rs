//! A participant whose connection went away keeps its place for the reconnect grace
//! period; if it has not resumed by then, this node appends its departure.

use std::sync::Arc;
use std::time::Duration;

use super::Room;
use crate::rules::command::Command;

impl Room {
    /// After the grace period, tells the room that `sid`'s connection `epoch` is gone
    /// for good, unless the participant resumed meanwhile.
    pub(super) fn start_grace(self: &Arc<Self>, sid: &str, epoch: u64) {
        let room = Arc::clone(self);
        let sid = sid.to_string();
        let grace = self.config().reconnect_grace();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            loop {
                if !room.still_gone(&sid, epoch) {
                    return;
                }
                let depart = Command::Depart {
                    sid: sid.clone(),
                    epoch,
                };
                if room.submit(depart, None).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Whether participant `sid` is still at `epoch`, connected through this node, and
    /// without a connection here.
    fn still_gone(&self, sid: &str, epoch: u64) -> bool {
        let state = self.lock_state();
        let in_room = state.replica.session().is_some_and(|session| {
            session
                .attachment(sid)
                .is_some_and(|(current, node)| current == epoch && *node == *self.node.id)
        });
        in_room && state.connections.epoch_of(sid).is_none()
    }

    /// Called when connection `epoch` of `sid` ended.
    pub fn connection_closed(self: &Arc<Self>, sid: &str, epoch: u64) {
        let mut state = self.lock_state();
        if state.connections.epoch_of(sid) == Some(epoch) {
            state.connections.detach(sid);
            drop(state);
            self.start_grace(sid, epoch);
        }
    }
}
