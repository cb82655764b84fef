//! Who holds power in a room: its creators and its current power levels, under the room
//! version's rules. One place for the API layer and for core code that must ask "may this
//! user do that?" outside the auth rules themselves (alias deletion, upgrades, restricted
//! joins).

use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent};
use ruma::{CanonicalJsonValue, OwnedUserId, RoomId, UserId};

use crate::rooms::graph::{RoomError, Rooms};

/// The creators of `room_id` by its create event and version: the sender (v11+) or the
/// `creator` field, and from v12 the `additional_creators`.
pub fn creators(rooms: &Rooms, room_id: &RoomId) -> Result<Vec<OwnedUserId>, RoomError> {
    let Some(version) = rooms.room_version(room_id)? else {
        return Err(RoomError::NotFound("room"));
    };
    let rules = &version.rules().authorization;
    let Some(create) = rooms.state_event(room_id, &StateEventType::RoomCreate, "")? else {
        return Ok(Vec::new());
    };
    let content = create.content_object();
    let mut creators = Vec::new();
    if rules.use_room_create_sender {
        creators.push(create.sender().to_owned());
    } else if let Some(CanonicalJsonValue::String(creator)) = content.get("creator")
        && let Ok(creator) = OwnedUserId::try_from(creator.as_str())
    {
        creators.push(creator);
    }
    if rules.additional_room_creators
        && let Some(CanonicalJsonValue::Array(additional)) = content.get("additional_creators")
    {
        creators.extend(additional.iter().filter_map(|user| match user {
            CanonicalJsonValue::String(user) => OwnedUserId::try_from(user.as_str()).ok(),
            _ => None,
        }));
    }
    Ok(creators)
}

/// The current power levels of `room_id` under its version's rules (the defaults when the
/// room has no power levels event); `None` when the event cannot be read, which grants
/// nothing.
pub fn power_levels(rooms: &Rooms, room_id: &RoomId) -> Result<Option<RoomPowerLevels>, RoomError> {
    let Some(version) = rooms.room_version(room_id)? else {
        return Err(RoomError::NotFound("room"));
    };
    let creators = creators(rooms, room_id)?;
    let content = match rooms.state_event(room_id, &StateEventType::RoomPowerLevels, "")? {
        Some(levels) => {
            match serde_json::from_str::<RoomPowerLevelsEventContent>(levels.content().get()) {
                Ok(content) => Some(content),
                Err(_) => return Ok(None),
            }
        }
        None => None,
    };
    Ok(Some(RoomPowerLevels::new(
        content.into(),
        &version.rules().authorization,
        creators,
    )))
}

/// Whether `user_id`, joined to `room_id`, may send state events of `kind` there now.
/// Unknown rooms, non-members and unreadable power levels grant nothing.
pub fn may_send_state(
    rooms: &Rooms,
    room_id: &RoomId,
    user_id: &UserId,
    kind: StateEventType,
) -> Result<bool, RoomError> {
    if rooms.membership(room_id, user_id)? != Some(MembershipState::Join) {
        return Ok(false);
    }
    Ok(power_levels(rooms, room_id)?
        .is_some_and(|levels| levels.user_can_send_state(user_id, kind)))
}
