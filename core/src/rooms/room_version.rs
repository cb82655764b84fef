//! The room versions Axon implements, each mapped to ruma's [`RoomVersionRules`].
//!
//! Everything that differs between room versions (event id format, room id format, auth rules,
//! redaction, state resolution) is read from the rules, never from the version string, so that
//! adding a version is one line here once ruma knows it.

use std::fmt;

use ruma::RoomVersionId;
use ruma::room_version_rules::{RoomVersionRules, StateResolutionVersion};

/// Every room version this server can create, join and take part in, oldest first.
///
/// Versions 1 to 12 are all the stable versions of the specification ruma knows. Version 1 is
/// listed but its state resolution algorithm is not implemented (see
/// [`RoomVersion::can_resolve_conflicts`]).
pub const SUPPORTED_ROOM_VERSIONS: [RoomVersionId; 12] = [
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// A room version this server does not implement; maps to `M_UNSUPPORTED_ROOM_VERSION` (and
/// `M_INCOMPATIBLE_ROOM_VERSION` when a remote room is in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("room version {version:?} is not supported by this server")]
pub struct UnsupportedRoomVersion {
    /// The version that was asked for.
    pub version: String,
}

/// A supported room version: its identifier and the rules that come with it.
///
/// Holding a `RoomVersion` proves the version is one we implement, so the functions of
/// [`crate::rooms`] take it instead of a bare [`RoomVersionId`].
#[derive(Clone)]
pub struct RoomVersion {
    id: RoomVersionId,
    rules: RoomVersionRules,
}

impl fmt::Debug for RoomVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The rules are a long constant table; the id says everything.
        f.debug_tuple("RoomVersion")
            .field(&self.id.as_str())
            .finish()
    }
}

impl PartialEq for RoomVersion {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for RoomVersion {}

impl RoomVersion {
    /// The rules of `id`, if this server supports it.
    pub fn new(id: &RoomVersionId) -> Result<Self, UnsupportedRoomVersion> {
        let unsupported = || UnsupportedRoomVersion {
            version: id.as_str().to_owned(),
        };
        if !SUPPORTED_ROOM_VERSIONS.contains(id) {
            return Err(unsupported());
        }
        let rules = id.rules().ok_or_else(unsupported)?;
        Ok(Self {
            id: id.clone(),
            rules,
        })
    }

    /// Parses a room version string such as `"11"` (from a request or the configuration).
    pub fn parse(version: &str) -> Result<Self, UnsupportedRoomVersion> {
        let id = RoomVersionId::try_from(version).map_err(|_| UnsupportedRoomVersion {
            version: version.to_owned(),
        })?;
        Self::new(&id)
    }

    /// The version identifier, e.g. `11`.
    pub fn id(&self) -> &RoomVersionId {
        &self.id
    }

    /// ruma's rules for this version.
    pub fn rules(&self) -> &RoomVersionRules {
        &self.rules
    }

    /// Whether to advertise the version as `stable` in `/capabilities`.
    ///
    /// ruma supports room versions 1 to 5 only on a best-effort basis (their JSON is not
    /// canonical, so some events other servers accept may fail to parse here) and does not
    /// implement the state resolution of version 1, so those are offered as `unstable`: clients
    /// then suggest upgrading such rooms.
    pub fn is_stable(&self) -> bool {
        self.rules.authorization.strict_canonical_json
    }

    /// Whether state resolution can merge conflicting forks in rooms of this version.
    ///
    /// False for version 1: ruma implements only state resolution v2, and a v1 room whose forks
    /// disagree cannot be resolved (see [`crate::rooms::resolve::resolve_state`]).
    pub fn can_resolve_conflicts(&self) -> bool {
        matches!(self.rules.state_res, StateResolutionVersion::V2(_))
    }
}

impl fmt::Display for RoomVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id.as_str())
    }
}

/// The default room version for new rooms, from the `rooms.default_room_version` setting.
///
/// Call it at start-up: an unsupported version in the configuration is a start-up error, not a
/// failure of the first `createRoom`.
pub fn default_room_version(configured: &str) -> Result<RoomVersion, UnsupportedRoomVersion> {
    RoomVersion::parse(configured)
}

/// Every supported version with its rules, for `/capabilities` and version negotiation
/// (`make_join`'s `ver` parameters).
pub fn supported_room_versions() -> impl Iterator<Item = RoomVersion> {
    SUPPORTED_ROOM_VERSIONS
        .iter()
        .filter_map(|id| RoomVersion::new(id).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_version_has_rules() {
        assert_eq!(
            supported_room_versions().count(),
            SUPPORTED_ROOM_VERSIONS.len()
        );
        for version in supported_room_versions() {
            assert_eq!(RoomVersion::parse(version.id().as_str()).unwrap(), version);
        }
    }

    #[test]
    fn unknown_versions_are_unsupported() {
        for version in ["13", "0", "", "org.matrix.msc2870", "v11", "11 "] {
            let err = RoomVersion::parse(version).unwrap_err();
            assert_eq!(err.version, version);
        }
        assert!(default_room_version("banana").is_err());
        assert_eq!(
            default_room_version("11").unwrap().id(),
            &RoomVersionId::V11
        );
    }

    #[test]
    fn stability_and_conflict_resolution_follow_the_rules() {
        let stable: Vec<String> = supported_room_versions()
            .filter(RoomVersion::is_stable)
            .map(|version| version.to_string())
            .collect();
        assert_eq!(stable, ["6", "7", "8", "9", "10", "11", "12"]);
        let unresolvable: Vec<String> = supported_room_versions()
            .filter(|version| !version.can_resolve_conflicts())
            .map(|version| version.to_string())
            .collect();
        assert_eq!(unresolvable, ["1"]);
    }
}
