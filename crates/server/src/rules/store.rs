//! One session's key-value store: versions, compare-and-set and limits. Knows nothing of
//! connections; the room decides who hears about a change.

use std::collections::HashMap;

use roomstate_protocol::{Entry, ErrorBody, ErrorCode, Limit, Limits, Millis, Seq, WILDCARD_KEY};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Store {
    entries: HashMap<String, Stored>,
    /// Sum of key and serialized value lengths over all entries.
    total_bytes: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    value: Value,
    value_bytes: usize,
    version: u64,
    updated_by: String,
    updated_at: Millis,
}

impl Stored {
    /// The entry it is under `key`, as clients see it.
    fn entry(&self, key: &str) -> Entry {
        Entry {
            key: key.to_string(),
            value: Some(self.value.clone()),
            version: self.version,
            updated_by: self.updated_by.clone(),
            updated_at: self.updated_at,
        }
    }
}

/// One write the store accepted: the entry after it (no value: deleted).
pub type Written = Entry;

/// A write to apply: `value` None (or JSON null) deletes; with `if_version`, only if
/// the key is at that version (0: absent).
pub struct Change<'a> {
    pub key: &'a str,
    pub value: Option<Value>,
    pub if_version: Option<u64>,
    pub author: &'a str,
    pub at: Millis,
    /// The sequence number this change gets if it is applied.
    pub seq: Seq,
}

impl Store {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    pub fn get(&self, key: &str) -> Entry {
        match self.entries.get(key) {
            Some(stored) => stored.entry(key),
            None => Entry::absent(key),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn all(&self) -> Vec<Entry> {
        let mut keys: Vec<&String> = self.entries.keys().collect();
        keys.sort();
        keys.into_iter().map(|key| self.get(key)).collect()
    }

    fn version(&self, key: &str) -> u64 {
        self.entries.get(key).map_or(0, |stored| stored.version)
    }

    /// Applies `change`. Returns `Ok(None)` when it changes nothing (deleting an absent
    /// key); on error, nothing changed.
    pub fn write(&mut self, change: Change, limits: &Limits) -> Result<Option<Written>, ErrorBody> {
        let Change {
            key,
            value,
            if_version,
            author,
            at: now,
            seq,
        } = change;
        validate_key(key, limits)?;
        let value = value.filter(|value| !value.is_null());
        if let Some(expected) = if_version {
            if self.version(key) != expected {
                return Err(ErrorBody::conflict(self.get(key), expected));
            }
        }
        let old_bytes = self
            .entries
            .get(key)
            .map_or(0, |stored| key.len() + stored.value_bytes);
        let Some(value) = value else {
            if self.entries.remove(key).is_none() {
                return Ok(None);
            }
            self.total_bytes -= old_bytes;
            return Ok(Some(Entry {
                key: key.to_string(),
                value: None,
                version: seq,
                updated_by: author.to_string(),
                updated_at: now,
            }));
        };
        let value_bytes = serialized_len(&value);
        ErrorBody::within(Limit::ValueBytes, limits.value_bytes, value_bytes)?;
        if old_bytes == 0 && self.entries.len() >= limits.keys {
            return Err(ErrorBody::limit(
                Limit::Keys,
                limits.keys,
                self.entries.len() + 1,
            ));
        }
        let new_total = self.total_bytes - old_bytes + key.len() + value_bytes;
        ErrorBody::within(Limit::StoreBytes, limits.store_bytes, new_total)?;
        self.total_bytes = new_total;
        let stored = Stored {
            value,
            value_bytes,
            version: seq,
            updated_by: author.to_string(),
            updated_at: now,
        };
        let written = stored.entry(key);
        // An update keeps the key it has: most writes are to keys that exist.
        match self.entries.get_mut(key) {
            Some(old) => *old = stored,
            None => {
                self.entries.insert(key.to_string(), stored);
            }
        }
        Ok(Some(written))
    }
}

/// The length of `value` as JSON, counted rather than written out.
fn serialized_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).expect("a JSON value serializes");
    counter.0
}

/// A key names one entry: not empty, not the wildcard, within the key size limit.
pub fn validate_key(key: &str, limits: &Limits) -> Result<(), ErrorBody> {
    if key.is_empty() || key == WILDCARD_KEY {
        return Err(ErrorBody::new(
            ErrorCode::InvalidRequest,
            format!("{key:?} is not a valid key: keys are non-empty and \"*\" is reserved"),
        ));
    }
    ErrorBody::within(Limit::KeyBytes, limits.key_bytes, key.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(
        store: &mut Store,
        key: &str,
        value: Value,
        if_version: Option<u64>,
        seq: Seq,
        limits: &Limits,
    ) -> Result<Option<Written>, ErrorBody> {
        store.write(change(key, Some(value), if_version, seq), limits)
    }

    fn change(key: &str, value: Option<Value>, if_version: Option<u64>, seq: Seq) -> Change<'_> {
        Change {
            key,
            value,
            if_version,
            author: "alice",
            at: 1,
            seq,
        }
    }

    #[test]
    fn versions_are_the_sequence_of_the_last_write() {
        let limits = Limits::default();
        let mut store = Store::default();
        let first = write(&mut store, "k", json!(1), Some(0), 1, &limits)
            .unwrap()
            .unwrap();
        assert_eq!(first.version, 1);
        let conflict = write(&mut store, "k", json!(2), Some(0), 2, &limits).unwrap_err();
        assert_eq!(conflict.code, ErrorCode::Conflict);
        assert_eq!(conflict.current.unwrap().value, Some(json!(1)));
        let second = write(&mut store, "k", json!(2), Some(1), 3, &limits)
            .unwrap()
            .unwrap();
        assert_eq!(second.version, 3);
        let deleted = store
            .write(change("k", None, None, 4), &limits)
            .unwrap()
            .unwrap();
        assert_eq!((deleted.value, deleted.version), (None, 4));
        assert_eq!(store.get("k"), Entry::absent("k"));
        assert_eq!(
            store.write(change("k", None, None, 5), &limits).unwrap(),
            None
        );
        assert_eq!(store.total_bytes(), 0);
    }

    #[test]
    fn limits_refuse_and_change_nothing() {
        let limits = Limits {
            value_bytes: 10,
            keys: 2,
            store_bytes: 20,
            key_bytes: 4,
            ..Limits::default()
        };
        let mut store = Store::default();
        let too_big = write(&mut store, "a", json!("0123456789"), None, 1, &limits).unwrap_err();
        assert_eq!(too_big.limit.unwrap().limit, Limit::ValueBytes);
        assert_eq!(too_big.limit.unwrap().actual, 12);
        write(&mut store, "a", json!("01234567"), None, 1, &limits).unwrap();
        write(&mut store, "b", json!(1), None, 2, &limits).unwrap();
        let third = write(&mut store, "c", json!(1), None, 3, &limits).unwrap_err();
        assert_eq!(third.limit.unwrap().limit, Limit::Keys);
        let total = write(&mut store, "b", json!("0123456"), None, 3, &limits).unwrap_err();
        assert_eq!(total.limit.unwrap().limit, Limit::StoreBytes);
        let long_key = write(&mut store, "abcde", json!(1), None, 3, &limits).unwrap_err();
        assert_eq!(long_key.limit.unwrap().limit, Limit::KeyBytes);
        assert_eq!(
            write(&mut store, "*", json!(1), None, 3, &limits)
                .unwrap_err()
                .code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("b").value, Some(json!(1)));
        assert_eq!(store.total_bytes(), 1 + 10 + 1 + 1);
    }

    #[test]
    fn null_deletes() {
        let limits = Limits::default();
        let mut store = Store::default();
        write(&mut store, "k", json!({"a": 1}), None, 1, &limits).unwrap();
        let deleted = write(&mut store, "k", Value::Null, None, 2, &limits)
            .unwrap()
            .unwrap();
        assert_eq!(deleted.value, None);
        assert!(store.is_empty());
    }

    #[test]
    fn a_value_counts_as_its_json_and_an_update_replaces_it_all() {
        let limits = Limits::default();
        let mut store = Store::default();
        let values = [
            json!("plain"),
            json!("quote \" backslash \\ newline \n tab \t nul \u{0} é 🙂"),
            json!({"nested": [1, 2.5, -3, null, true, {"deep": "x"}], "": ""}),
            json!(12345678901234567u64),
        ];
        for (seq, value) in (1..).zip(values) {
            let expected = "k".len() + serde_json::to_string(&value).unwrap().len();
            let author = format!("author-{seq}");
            let change = Change {
                author: &author,
                ..change("k", Some(value.clone()), None, seq)
            };
            store.write(change, &limits).unwrap();
            assert_eq!(store.total_bytes(), expected, "{value}");
            let entry = store.get("k");
            assert_eq!(entry.value, Some(value));
            assert_eq!(entry.version, seq);
            assert_eq!(entry.updated_by, author);
        }
        assert_eq!(store.len(), 1);
    }
}
