//! Access token claims. The layout is LiveKit's, so LiveKit's tooling and server SDKs
//! can mint tokens for roomstate; `roomstate` is a claim of our own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Claims {
    /// The API key whose secret signed the token.
    #[serde(default)]
    pub iss: String,
    /// The participant's identity.
    #[serde(default)]
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub video: VideoGrant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roomstate: Option<RoomStateGrant>,
}

/// The subset of LiveKit's `video` grant that roomstate reads; other fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub room: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub room_join: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub room_admin: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub room_list: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_update_own_metadata: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

/// Store permissions. Without this claim a joined participant may write any key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RoomStateGrant {
    /// `false` makes the participant read-only in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_write_store: Option<bool>,
    /// When present, writes are allowed only to keys starting with one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_write_prefixes: Option<Vec<String>>,
}

impl Claims {
    pub fn can_update_own_metadata(&self) -> bool {
        self.video.can_update_own_metadata.unwrap_or(false)
    }

    pub fn can_write_store(&self) -> bool {
        self.roomstate
            .as_ref()
            .and_then(|grant| grant.can_write_store)
            .unwrap_or(true)
    }

    /// Whether this token may write `key` to the store.
    pub fn may_write_key(&self, key: &str) -> bool {
        if !self.can_write_store() {
            return false;
        }
        match self
            .roomstate
            .as_ref()
            .and_then(|grant| grant.store_write_prefixes.as_ref())
        {
            Some(prefixes) => prefixes
                .iter()
                .any(|prefix| key.starts_with(prefix.as_str())),
            None => true,
        }
    }
}
