//! `[rooms]`: room defaults.

use crate::error::{Issues, quoted};
use crate::schema::raw_section;

raw_section! {
    /// Rooms.
    RawRooms {
        /// Room version of rooms created without an explicit `room_version`.
        default_room_version: String = "11".to_owned();
    }
}

/// The validated `[rooms]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomsConfig {
    /// Room version for new rooms. Its syntax is checked here; whether the server
    /// implements it is checked by the server at start-up.
    pub default_room_version: String,
}

pub(crate) fn validate(raw: RawRooms, issues: &mut Issues) -> RoomsConfig {
    // The spec's room version grammar: at most 32 of [a-z0-9.-].
    let version = &raw.default_room_version;
    let valid = (1..=32).contains(&version.len())
        && version
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !valid {
        issues.invalid(
            "rooms.default_room_version",
            &quoted(version),
            "a room version identifier such as \"10\" or \"11\"",
        );
    }
    RoomsConfig {
        default_room_version: raw.default_room_version,
    }
}
