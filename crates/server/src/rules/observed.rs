//! What one participant observes, and since when: a resume replays each logged event to
//! the keys the participant observed *when the event happened*, so a key observed after
//! some changes does not get them again (the `observe` reply already held its value),
//! and a key observed until some point gets what it missed up to there.

use std::collections::{HashSet, VecDeque};

use roomstate_protocol::{Seq, WILDCARD_KEY};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
pub struct Observed {
    all: bool,
    keys: HashSet<String>,
    /// Net changes, oldest first, one per sequence number: events after `after_seq` saw
    /// them, events up to it did not. Pruned with the room's replay log, so it holds at
    /// most one change per logged event.
    #[serde(default)]
    history: VecDeque<Change>,
}

/// One net change: apply it (while replaying) before the first event past `after_seq`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Change {
    after_seq: Seq,
    /// Keys that began (`*`: every key) or stopped being observed.
    added: Vec<String>,
    removed: Vec<String>,
}

/// Which keys are observed at one moment.
pub struct View {
    all: bool,
    keys: HashSet<String>,
}

impl View {
    pub fn contains(&self, key: &str) -> bool {
        self.all || self.keys.contains(key)
    }

    fn set(&mut self, key: &str, observed: bool) {
        match (key == WILDCARD_KEY, observed) {
            (true, on) => self.all = on,
            (false, true) => {
                self.keys.insert(key.to_string());
            }
            (false, false) => {
                self.keys.remove(key);
            }
        }
    }

    fn apply(&mut self, change: &Change) {
        change.added.iter().for_each(|key| self.set(key, true));
        change.removed.iter().for_each(|key| self.set(key, false));
    }

    fn undo(&mut self, change: &Change) {
        change.added.iter().for_each(|key| self.set(key, false));
        change.removed.iter().for_each(|key| self.set(key, true));
    }
}

impl Observed {
    pub fn contains(&self, key: &str) -> bool {
        self.all || self.keys.contains(key)
    }

    /// Observed keys (`*` aside).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn is_observing(&self, key: &str) -> bool {
        if key == WILDCARD_KEY {
            self.all
        } else {
            self.keys.contains(key)
        }
    }

    /// The observed keys, `*` last if every key is.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.keys.iter().cloned().collect();
        if self.all {
            keys.push(WILDCARD_KEY.to_string());
        }
        keys
    }

    /// Starts (`observe`) or stops observing `keys`, as of sequence number `seq` (the
    /// session's last event). `oldest_logged` is the replay log's first event: older
    /// history can no longer matter to a resume.
    pub fn change(&mut self, keys: &[String], observe: bool, seq: Seq, oldest_logged: Seq) {
        let changed: Vec<String> = keys
            .iter()
            .filter(|key| self.is_observing(key) != observe)
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if changed.is_empty() {
            return;
        }
        let mut view = View {
            all: self.all,
            keys: std::mem::take(&mut self.keys),
        };
        for key in &changed {
            view.set(key, observe);
        }
        (self.all, self.keys) = (view.all, view.keys);
        // Changes between the same two events merge into one net change.
        let change = match self.history.back_mut() {
            Some(last) if last.after_seq == seq => last,
            _ => {
                self.history.push_back(Change {
                    after_seq: seq,
                    ..Change::default()
                });
                self.history.back_mut().expect("just pushed")
            }
        };
        for key in changed {
            let (into, from) = if observe {
                (&mut change.added, &mut change.removed)
            } else {
                (&mut change.removed, &mut change.added)
            };
            match from.iter().position(|other| *other == key) {
                Some(at) => {
                    from.swap_remove(at); // undoes an earlier change between the same events
                }
                None => into.push(key),
            }
        }
        if change.added.is_empty() && change.removed.is_empty() {
            self.history.pop_back();
        }
        // A resume's last_seq is at least oldest_logged - 1, and it undoes only changes
        // after it.
        let needed_from = oldest_logged.saturating_sub(1);
        while self
            .history
            .front()
            .is_some_and(|change| change.after_seq < needed_from)
        {
            self.history.pop_front();
        }
    }

    /// What was observed for the event after `seq`, and the changes since, oldest first:
    /// apply each before the first event past its `after_seq`.
    pub fn since(&self, seq: Seq) -> (View, Vec<&Change>) {
        let mut view = View {
            all: self.all,
            keys: self.keys.clone(),
        };
        let later: Vec<&Change> = self
            .history
            .iter()
            .filter(|change| change.after_seq > seq)
            .collect();
        for change in later.iter().rev() {
            view.undo(change);
        }
        (view, later)
    }
}

impl Change {
    /// Events after this one see the change.
    pub fn after_seq(&self) -> Seq {
        self.after_seq
    }

    pub fn apply_to(&self, view: &mut View) {
        view.apply(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    /// Which of `events` (seq, key) a resume from `last_seq` replays.
    fn replayed(observed: &Observed, last_seq: Seq, events: &[(Seq, &str)]) -> Vec<Seq> {
        let (mut view, changes) = observed.since(last_seq);
        let mut changes = changes.into_iter().peekable();
        let mut out = Vec::new();
        for &(seq, key) in events.iter().filter(|(seq, _)| *seq > last_seq) {
            while let Some(change) = changes.next_if(|change| change.after_seq() < seq) {
                change.apply_to(&mut view);
            }
            if view.contains(key) {
                out.push(seq);
            }
        }
        out
    }

    #[test]
    fn a_key_observed_late_gets_only_the_changes_after_its_observe() {
        let mut observed = Observed::default();
        // k changed at 3..=7 while unobserved; observed after 7; changed at 8..=10.
        observed.change(&keys(&["k"]), true, 7, 1);
        let events: Vec<(Seq, &str)> = (3..=10).map(|seq| (seq, "k")).collect();
        assert_eq!(replayed(&observed, 2, &events), vec![8, 9, 10]);
        assert_eq!(replayed(&observed, 7, &events), vec![8, 9, 10]);
        assert_eq!(replayed(&observed, 8, &events), vec![9, 10]);
    }

    #[test]
    fn observe_unobserve_observe_replays_only_the_observed_stretches() {
        let mut observed = Observed::default();
        observed.change(&keys(&["k"]), true, 2, 1);
        observed.change(&keys(&["k"]), false, 4, 1);
        observed.change(&keys(&["k"]), true, 6, 1);
        let events: Vec<(Seq, &str)> = (1..=8).map(|seq| (seq, "k")).collect();
        assert_eq!(replayed(&observed, 0, &events), vec![3, 4, 7, 8]);
        assert!(observed.contains("k"));
    }

    #[test]
    fn changes_between_two_events_merge_and_cancel() {
        let mut observed = Observed::default();
        observed.change(&keys(&["a", "b"]), true, 5, 1);
        observed.change(&keys(&["a"]), false, 5, 1);
        observed.change(&keys(&["b"]), false, 5, 1);
        assert!(observed.history.is_empty(), "{:?}", observed.history);
        observed.change(&keys(&["*"]), true, 6, 1);
        let events = [(6, "x"), (7, "x")];
        assert_eq!(replayed(&observed, 5, &events), vec![7]);
    }

    #[test]
    fn history_is_pruned_with_the_replay_log() {
        let mut observed = Observed::default();
        for seq in 0..1000 {
            observed.change(&keys(&["k"]), seq % 2 == 0, seq, seq.saturating_sub(10));
        }
        assert!(observed.history.len() <= 12, "{}", observed.history.len());
    }
}
