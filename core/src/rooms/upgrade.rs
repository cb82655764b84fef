//! Room upgrades (the specification's server behaviour for `POST /rooms/{roomId}/upgrade`),
//! and reading a room's power levels as ruma's [`RoomPowerLevels`].
//!
//! An upgrade, under the old room's lock: check that the user may send `m.room.tombstone`;
//! create the replacement room (its create event names the old room as `predecessor` and
//! keeps its `type` and `m.federate`) with the old room's transferable state as initial
//! state, the upgrading user's power raised for the copy if it was too low, and restored
//! after; copy the bans; move the local aliases and the directory listing; send the tombstone;
//! and raise the old room's `events_default` and `invite` so it falls silent. Memberships
//! other than bans are not transferred (a server cannot act for other users): members follow
//! the tombstone themselves.

use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, OwnedUserId, RoomId, UserId};

use crate::rooms::aliases::{self, AliasError};
use crate::rooms::directory;
use crate::rooms::graph::{
    CreateRoom, InitialStateEvent, NewEvent, RoomError, RoomGuard, RoomPreset, Rooms,
};
use crate::rooms::pdu::Pdu;
use crate::rooms::power;
use crate::rooms::room_version::RoomVersion;

/// The state copied to the replacement room: the specification's recommended list, and the
/// canonical alias (whose aliases move along).
const TRANSFERRED: [StateEventType; 10] = [
    StateEventType::RoomServerAcl,
    StateEventType::RoomEncryption,
    StateEventType::RoomName,
    StateEventType::RoomAvatar,
    StateEventType::RoomTopic,
    StateEventType::RoomGuestAccess,
    StateEventType::RoomHistoryVisibility,
    StateEventType::RoomJoinRules,
    StateEventType::RoomPowerLevels,
    StateEventType::RoomCanonicalAlias,
];

/// What an upgrade asks for.
#[derive(Clone, Debug)]
pub struct UpgradeRoom {
    /// The room upgraded.
    pub room_id: OwnedRoomId,
    /// The upgrading user, a local member of the room.
    pub user_id: OwnedUserId,
    /// The version of the replacement room.
    pub new_version: RoomVersion,
    /// From v12, further creators of the replacement room.
    pub additional_creators: Vec<OwnedUserId>,
}

/// Upgrades the room `guard` locks (see the module documentation) and returns the
/// replacement room's id.
///
/// [`RoomError::Forbidden`] when the user may not send `m.room.tombstone`, before anything is
/// written. Synchronous: call it from `spawn_blocking`.
pub fn upgrade_room(
    rooms: &Rooms,
    guard: &RoomGuard,
    request: UpgradeRoom,
) -> Result<OwnedRoomId, RoomError> {
    let old = request.room_id.as_ref();
    if guard.room_id() != old {
        return Err(RoomError::LockMismatch {
            held: guard.room_id().to_owned(),
            wanted: request.room_id.clone(),
        });
    }
    if rooms.room_info(old)?.is_none() {
        return Err(RoomError::NotFound("room"));
    }
    if !power::may_send_state(rooms, old, &request.user_id, StateEventType::RoomTombstone)? {
        return Err(RoomError::Forbidden(
            "you may not send m.room.tombstone in this room".to_owned(),
        ));
    }
    let state = rooms.current_state(old)?;
    let state_of = |kind: &StateEventType| {
        state
            .iter()
            .find(|pdu| pdu.kind().to_string() == kind.to_string() && pdu.state_key() == Some(""))
    };

    let mut creation_content = CanonicalJsonObject::new();
    if let Some(create) = state_of(&StateEventType::RoomCreate) {
        for key in ["type", "m.federate"] {
            if let Some(value) = create.content_object().get(key) {
                creation_content.insert(key.to_owned(), value.clone());
            }
        }
    }
    let mut predecessor = CanonicalJsonObject::new();
    predecessor.insert(
        "room_id".to_owned(),
        CanonicalJsonValue::String(old.to_string()),
    );
    // Deprecated, but still sent for the clients that read it.
    if let Some(latest) = rooms.forward_extremities(old)?.first() {
        predecessor.insert(
            "event_id".to_owned(),
            CanonicalJsonValue::String(latest.to_string()),
        );
    }
    creation_content.insert(
        "predecessor".to_owned(),
        CanonicalJsonValue::Object(predecessor),
    );
    let new_rules = &request.new_version.rules().authorization;
    let mut new_creators = vec![request.user_id.clone()];
    if new_rules.additional_room_creators && !request.additional_creators.is_empty() {
        new_creators.extend(request.additional_creators.iter().cloned());
        creation_content.insert(
            "additional_creators".to_owned(),
            CanonicalJsonValue::Array(
                request
                    .additional_creators
                    .iter()
                    .map(|user| CanonicalJsonValue::String(user.to_string()))
                    .collect(),
            ),
        );
    }

    let mut initial_state = Vec::new();
    let mut restore_power_levels = None;
    for kind in TRANSFERRED {
        let Some(pdu) = state_of(&kind) else {
            continue;
        };
        let mut content = pdu.content_object().clone();
        if kind == StateEventType::RoomPowerLevels {
            let (adjusted, restore) = power_levels_for_copy(
                content,
                &request.user_id,
                &new_creators,
                new_rules.explicitly_privilege_room_creators,
            );
            content = adjusted;
            restore_power_levels = restore;
        }
        initial_state.push(InitialStateEvent {
            kind,
            state_key: String::new(),
            content,
        });
    }
    if state_of(&StateEventType::RoomJoinRules).is_none() {
        // No join rules means invite-only; say so, or the preset's rule would apply.
        initial_state.push(InitialStateEvent {
            kind: StateEventType::RoomJoinRules,
            state_key: String::new(),
            content: string_object("join_rule", "invite"),
        });
    }

    let mut create = CreateRoom::new(request.user_id.clone(), request.new_version.clone());
    // The public chat preset adds no guest access: the old room's, if any, is copied.
    create.preset = RoomPreset::PublicChat;
    create.initial_state = initial_state;
    create.creation_content = Some(creation_content);
    let new_room = rooms.create_room(create)?;

    {
        let new_guard = rooms.locks().try_lock(&new_room).ok_or_else(|| {
            RoomError::Forbidden("the replacement room is busy; try again".to_owned())
        })?;
        let send = |event: NewEvent| rooms.append_local(&new_guard, event).map(drop);
        for pdu in bans(&state) {
            let Some(target) = pdu.state_key() else {
                continue;
            };
            let mut content = string_object("membership", "ban");
            if let Some(reason) = pdu.content_object().get("reason") {
                content.insert("reason".to_owned(), reason.clone());
            }
            let ban = NewEvent::state(
                new_room.clone(),
                request.user_id.clone(),
                StateEventType::RoomMember,
                target,
                content,
            );
            // A ban the upgrading user may not send (of a user above them) is left out.
            match send(ban) {
                Ok(()) | Err(RoomError::Forbidden(_)) => {}
                Err(err) => return Err(err),
            }
        }
        if let Some(original) = restore_power_levels {
            send(NewEvent::state(
                new_room.clone(),
                request.user_id.clone(),
                StateEventType::RoomPowerLevels,
                "",
                original,
            ))?;
        }
    }

    move_aliases(rooms, old, &new_room)?;
    if directory::is_published(rooms.store(), old)? {
        directory::set_published(rooms.store(), &new_room, true)?;
        directory::set_published(rooms.store(), old, false)?;
    }

    let mut tombstone = string_object("body", "This room has been replaced");
    tombstone.insert(
        "replacement_room".to_owned(),
        CanonicalJsonValue::String(new_room.to_string()),
    );
    rooms.append_local(
        guard,
        NewEvent::state(
            request.room_id.clone(),
            request.user_id.clone(),
            StateEventType::RoomTombstone,
            "",
            tombstone,
        ),
    )?;
    if let Some(pdu) = state_of(&StateEventType::RoomPowerLevels)
        && let Some(restricted) = restricted_power_levels(pdu.content_object())
    {
        // "If possible": a user who may replace the room but not edit its power levels
        // leaves them as they are.
        match rooms.append_local(
            guard,
            NewEvent::state(
                request.room_id.clone(),
                request.user_id.clone(),
                StateEventType::RoomPowerLevels,
                "",
                restricted,
            ),
        ) {
            Ok(_) | Err(RoomError::Forbidden(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(new_room)
}

/// The bans of a room's state.
fn bans(state: &[Pdu]) -> impl Iterator<Item = &Pdu> {
    state.iter().filter(|pdu| {
        pdu.kind().to_string() == StateEventType::RoomMember.to_string()
            && matches!(
                pdu.content_object().get("membership"),
                Some(CanonicalJsonValue::String(membership))
                    if *membership == MembershipState::Ban.to_string()
            )
    })
}

/// Moves the local aliases of `old` to `new`, each keeping its creator, in one batch.
fn move_aliases(rooms: &Rooms, old: &RoomId, new: &RoomId) -> Result<(), RoomError> {
    aliases::move_all(rooms, old, new).map_err(alias_error)?;
    Ok(())
}

fn alias_error(error: AliasError) -> RoomError {
    match error {
        AliasError::Storage(err) => RoomError::Storage(err),
        other => RoomError::InvalidParam(other.to_string()),
    }
}

/// The old room's power levels to copy, and the originals to restore once the copy is done
/// when the upgrading user's level had to be raised for it.
///
/// From v12 (creators privileged) the new room's creators must not be listed, so they are
/// taken out; before, the user is raised to the highest level the copy needs.
fn power_levels_for_copy(
    mut content: CanonicalJsonObject,
    user_id: &UserId,
    new_creators: &[OwnedUserId],
    creators_privileged: bool,
) -> (CanonicalJsonObject, Option<CanonicalJsonObject>) {
    if creators_privileged {
        if let Some(CanonicalJsonValue::Object(users)) = content.get_mut("users") {
            for creator in new_creators {
                users.remove(creator.as_str());
            }
        }
        return (content, None);
    }
    let level = |value: Option<&CanonicalJsonValue>, default: i64| match value {
        Some(CanonicalJsonValue::Integer(level)) => i64::from(*level),
        _ => default,
    };
    let mut needed = level(content.get("state_default"), 50)
        .max(level(content.get("ban"), 50))
        .max(100);
    if let Some(CanonicalJsonValue::Object(events)) = content.get("events") {
        for value in events.values() {
            needed = needed.max(level(Some(value), 0));
        }
    }
    let users_default = level(content.get("users_default"), 0);
    let current = match content.get("users") {
        Some(CanonicalJsonValue::Object(users)) => users
            .get(user_id.as_str())
            .map(|value| level(Some(value), users_default)),
        _ => None,
    };
    if current.is_some_and(|current| current >= needed) {
        return (content, None);
    }
    // Listed lower: restore their level afterwards. Not listed (a creator of a v12 room with
    // unlimited power there): they keep the raised level.
    let original = current.map(|_| content.clone());
    let Ok(needed) = ruma::Int::try_from(needed) else {
        return (content, None);
    };
    let users = match content.remove("users") {
        Some(CanonicalJsonValue::Object(users)) => users,
        _ => CanonicalJsonObject::new(),
    };
    let mut users = users;
    users.insert(user_id.to_string(), CanonicalJsonValue::Integer(needed));
    content.insert("users".to_owned(), CanonicalJsonValue::Object(users));
    (content, original)
}

/// The old room's power levels with `events_default` and `invite` raised to the greater of
/// 50 and `users_default + 1`, or `None` when they already are.
fn restricted_power_levels(content: &CanonicalJsonObject) -> Option<CanonicalJsonObject> {
    let level = |key: &str, default: i64| match content.get(key) {
        Some(CanonicalJsonValue::Integer(level)) => i64::from(*level),
        _ => default,
    };
    let floor = level("users_default", 0).saturating_add(1).max(50);
    let floor = ruma::Int::try_from(floor).ok()?;
    let floor_level = i64::from(floor);
    if level("events_default", 0) >= floor_level && level("invite", 0) >= floor_level {
        return None;
    }
    let mut restricted = content.clone();
    for key in ["events_default", "invite"] {
        if level(key, 0) < floor_level {
            restricted.insert(key.to_owned(), CanonicalJsonValue::Integer(floor));
        }
    }
    Some(restricted)
}

fn string_object(key: &str, value: &str) -> CanonicalJsonObject {
    let mut object = CanonicalJsonObject::new();
    object.insert(key.to_owned(), CanonicalJsonValue::String(value.to_owned()));
    object
}

#[cfg(test)]
mod tests {
    use ruma::{owned_user_id, user_id};
    use serde_json::json;

    use super::*;

    fn object(value: serde_json::Value) -> CanonicalJsonObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn restricting_raises_events_default_and_invite() {
        let restricted =
            restricted_power_levels(&object(json!({ "users_default": 60, "invite": 0 }))).unwrap();
        assert_eq!(
            restricted.get("events_default"),
            Some(&CanonicalJsonValue::Integer(61_u32.into()))
        );
        assert_eq!(
            restricted.get("invite"),
            Some(&CanonicalJsonValue::Integer(61_u32.into()))
        );
        assert!(
            restricted_power_levels(&object(json!({ "events_default": 50, "invite": 50 })))
                .is_none()
        );
    }

    #[test]
    fn a_low_upgrader_is_raised_for_the_copy_and_restored() {
        let original = object(json!({
            "users": { "@mod:x": 50 },
            "events": { "m.room.tombstone": 50, "m.room.encryption": 100 },
        }));
        let (copy, restore) =
            power_levels_for_copy(original.clone(), user_id!("@mod:x"), &[], false);
        assert_eq!(
            copy.get("users"),
            Some(&CanonicalJsonValue::Object(object(
                json!({ "@mod:x": 100 })
            )))
        );
        assert_eq!(restore, Some(original));
    }

    #[test]
    fn v12_creators_are_not_listed() {
        let creator = owned_user_id!("@creator:x");
        let (copy, restore) = power_levels_for_copy(
            object(json!({ "users": { "@creator:x": 100, "@other:x": 50 } })),
            &creator,
            std::slice::from_ref(&creator),
            true,
        );
        assert_eq!(
            copy.get("users"),
            Some(&CanonicalJsonValue::Object(object(
                json!({ "@other:x": 50 })
            )))
        );
        assert_eq!(restore, None);
    }
}
