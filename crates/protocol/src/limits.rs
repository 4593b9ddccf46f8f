use serde::{Deserialize, Serialize};

/// Size limits the server enforces. Defaults follow 100ms (store) and LiveKit
/// (participants); every one is configurable on the server, and the server tells each
/// client its limits when it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct Limits {
    /// One store value, as serialized JSON.
    pub value_bytes: usize,
    /// Keys in one room's store.
    pub keys: usize,
    /// All keys and values of one room's store together.
    pub store_bytes: usize,
    /// One store key or attribute key.
    pub key_bytes: usize,
    /// All attribute keys and values of one participant, after merging an update.
    pub attributes_bytes: usize,
    pub metadata_bytes: usize,
    pub name_bytes: usize,
    /// One WebSocket frame, either way.
    pub frame_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            value_bytes: 1024,
            keys: 100,
            store_bytes: 64 * 1024,
            key_bytes: 256,
            attributes_bytes: 64 * 1024,
            metadata_bytes: 64 * 1024,
            name_bytes: 256,
            frame_bytes: 1024 * 1024,
        }
    }
}

/// Names one of [`Limits`]' fields, in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    ValueBytes,
    Keys,
    StoreBytes,
    KeyBytes,
    AttributesBytes,
    MetadataBytes,
    NameBytes,
    FrameBytes,
}

impl Limit {
    pub fn describe(self) -> &'static str {
        match self {
            Limit::ValueBytes => "the value's size in bytes",
            Limit::Keys => "the number of keys in the store",
            Limit::StoreBytes => "the store's total size in bytes",
            Limit::KeyBytes => "the key's size in bytes",
            Limit::AttributesBytes => "the participant's attributes' total size in bytes",
            Limit::MetadataBytes => "the metadata's size in bytes",
            Limit::NameBytes => "the name's size in bytes",
            Limit::FrameBytes => "the frame's size in bytes",
        }
    }
}
