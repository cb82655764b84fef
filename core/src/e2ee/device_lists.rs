//! Device list changes: who must refetch whose keys, for sync and `/keys/changes`.

use std::collections::{BTreeSet, HashSet};

use ruma::api::Direction;
use ruma::events::StateEventType;
use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::tables::{DEVICE_LIST_STREAM, append_batch, record_device_list_change};
use super::{E2ee, E2eeError};
use crate::accounts::devices::DEVICE_REMOVALS;
use crate::rooms::graph::{Audience, Rooms, StreamPosition};
use crate::storage::{Direction as ScanDirection, KeyCodec, KeyRange, WriteBatch};

/// Timeline events read per page when looking for membership changes.
const TIMELINE_PAGE: usize = 200;
/// The most rooms the audience of a device list change lists (as for presence): the changes
/// of users in more rooms wake every waiting sync, which keeps the notifier's log of recent
/// audiences small.
const MAX_AUDIENCE_ROOMS: usize = 64;

/// The users whose device lists a client must refetch (`changed`) or may forget (`left`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceListChanges {
    /// Users sharing a room with the client's user (or that user) whose devices or keys
    /// changed, or who newly share an encrypted room with them.
    pub changed: Vec<OwnedUserId>,
    /// Users who no longer share any room with the client's user.
    pub left: Vec<OwnedUserId>,
}

/// A membership change found in a room's timeline.
struct MembershipChange {
    user: OwnedUserId,
    membership: MembershipState,
}

impl E2ee {
    /// The device list changes for `user_id` between `since` (exclusive) and `until`
    /// (inclusive):
    /// - `changed`: users who currently share a joined room with `user_id` (and `user_id`
    ///   itself) whose devices or keys changed in the range, users who joined one of its
    ///   encrypted rooms in the range, and every member of an encrypted room `user_id` joined
    ///   in the range;
    /// - `left`: users who left (or were removed from) one of `user_id`'s rooms, or whose
    ///   room `user_id` left, in the range, and share no room with it any more.
    pub fn device_list_changes(
        &self,
        rooms: &Rooms,
        user_id: &UserId,
        since: StreamPosition,
        until: StreamPosition,
    ) -> Result<DeviceListChanges, E2eeError> {
        if until <= since {
            return Ok(DeviceListChanges::default());
        }
        let joined = rooms.joined_rooms(user_id)?;
        let mut shared: HashSet<OwnedUserId> = HashSet::new();
        shared.insert(user_id.to_owned());
        for room in &joined {
            for (member, _) in rooms.members(room, Some(&MembershipState::Join))? {
                shared.insert(member);
            }
        }

        let mut changed = BTreeSet::new();
        for user in self.users_with_changes(since, until)? {
            if shared.contains(&user) {
                changed.insert(user);
            }
        }

        let mut left_candidates = BTreeSet::new();
        for (room, _) in rooms.rooms_of_user(user_id)? {
            let changes = membership_changes(rooms, &room, since, until)?;
            if changes.is_empty() {
                continue;
            }
            let is_joined = joined.contains(&room);
            let encrypted = is_joined && is_encrypted(rooms, &room)?;
            for change in changes {
                let own = change.user == user_id;
                match change.membership {
                    MembershipState::Join if encrypted => {
                        if own {
                            for (member, _) in rooms.members(&room, Some(&MembershipState::Join))? {
                                changed.insert(member);
                            }
                        } else {
                            changed.insert(change.user);
                        }
                    }
                    MembershipState::Leave | MembershipState::Ban => {
                        if own {
                            for (member, _) in rooms.members(&room, None)? {
                                left_candidates.insert(member);
                            }
                        } else {
                            left_candidates.insert(change.user);
                        }
                    }
                    _ => {}
                }
            }
        }
        let left: Vec<OwnedUserId> = left_candidates
            .into_iter()
            .filter(|user| !shared.contains(user))
            .collect();
        changed.retain(|user| shared.contains(user));
        Ok(DeviceListChanges {
            changed: changed.into_iter().collect(),
            left,
        })
    }

    /// Every user whose device list changed in `(since, until]`.
    fn users_with_changes(
        &self,
        since: StreamPosition,
        until: StreamPosition,
    ) -> Result<BTreeSet<OwnedUserId>, E2eeError> {
        let range = KeyRange::half_open(
            StreamPosition(since.0.saturating_add(1)).to_key_bytes(),
            StreamPosition(until.0.saturating_add(1)).to_key_bytes(),
        );
        Ok(DEVICE_LIST_STREAM
            .collect(self.store(), range, ScanDirection::Forward, None)?
            .into_iter()
            .map(|((_, user), ())| user)
            .collect())
    }

    /// The device list changes after `after`, in stream order, at most `limit`: what the
    /// federation sender follows to tell other servers about local users' devices.
    pub fn device_list_changes_after(
        &self,
        after: StreamPosition,
        limit: usize,
    ) -> Result<Vec<(StreamPosition, OwnedUserId)>, E2eeError> {
        let range = KeyRange {
            // Keys are `(position, user)`: every key of a later position sorts after this.
            start: std::ops::Bound::Included(
                StreamPosition(after.0.saturating_add(1)).to_key_bytes(),
            ),
            end: std::ops::Bound::Unbounded,
        };
        Ok(DEVICE_LIST_STREAM
            .collect(self.store(), range, ScanDirection::Forward, Some(limit))?
            .into_iter()
            .map(|(key, ())| key)
            .collect())
    }

    /// Records a change of `user`'s devices that touched no key (a device renamed), so
    /// syncs and other servers learn of it. Synchronous: call it from `spawn_blocking`.
    pub fn record_device_change(&self, rooms: &Rooms, user: &UserId) -> Result<(), E2eeError> {
        write_device_list_changes(rooms, &BTreeSet::from([user.to_owned()]), WriteBatch::new())?;
        Ok(())
    }

    /// Removes the keys and inboxes of the devices the accounts service deleted, and
    /// announces each user's change at one stream position. Returns how many devices were
    /// handled. Synchronous: call it from `spawn_blocking`, after
    /// `Accounts::device_removals` is notified and once at start-up.
    pub fn process_device_removals(&self, rooms: &Rooms) -> Result<usize, E2eeError> {
        let pending: Vec<(OwnedUserId, OwnedDeviceId)> = DEVICE_REMOVALS
            .collect(
                self.store(),
                KeyRange::all(),
                ScanDirection::Forward,
                Some(1000),
            )?
            .into_iter()
            .map(|(key, ())| key)
            .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        let _guard = super::lock(&self.keys_lock);
        let mut batch = WriteBatch::new();
        let mut removed_messages = 0;
        let mut users = BTreeSet::new();
        for (user, device) in &pending {
            DEVICE_REMOVALS.delete(&mut batch, &(user.clone(), device.clone()));
            users.insert(user.clone());
            // A device created again with the same id keeps what it uploaded since.
            if crate::accounts::devices::get(self.store(), user, device)?.is_some() {
                continue;
            }
            removed_messages += self.remove_device_keys_into(&mut batch, user, device)?;
        }
        write_device_list_changes(rooms, &users, batch)?;
        self.note_to_device_removed(removed_messages);
        tracing::debug!(
            devices = pending.len(),
            "removed the keys of deleted devices"
        );
        Ok(pending.len())
    }
}

/// Writes `batch` at the next stream position with a device list change of each of `users`,
/// for the syncs those changes concern (see [`device_list_audience`]). Synchronous: call it
/// from `spawn_blocking`.
pub(super) fn write_device_list_changes(
    rooms: &Rooms,
    users: &BTreeSet<OwnedUserId>,
    batch: WriteBatch,
) -> Result<StreamPosition, E2eeError> {
    let planned = device_list_audience(rooms, users)?;
    write_planned_device_list_changes(rooms, users, batch, planned)
}

/// [`write_device_list_changes`] with the audience read beforehand.
///
/// The audience is read before the position is allocated, so a membership written in
/// between (a join of one of `users`, at an earlier position that the new room mates may
/// already have been answered with) can be missing from it. The rooms are read again once
/// the change is written, and if they are no longer covered, the change is recorded once more
/// at a position that wakes every sync.
pub(super) fn write_planned_device_list_changes(
    rooms: &Rooms,
    users: &BTreeSet<OwnedUserId>,
    batch: WriteBatch,
    planned: Option<(Audience, BTreeSet<OwnedRoomId>)>,
) -> Result<StreamPosition, E2eeError> {
    let write = |into: &mut WriteBatch, position| {
        append_batch(into, batch);
        for user in users {
            record_device_list_change(into, user, position);
        }
        Ok(())
    };
    let Some((audience, listed)) = planned else {
        return Ok(rooms.write_at_next_position(write)?);
    };
    let position = rooms.write_at_next_position_for(audience, write)?;
    let still_covered =
        device_list_audience(rooms, users)?.is_some_and(|(_, now)| now.is_subset(&listed));
    if !still_covered {
        rooms.write_at_next_position(|into, position| {
            for user in users {
                record_device_list_change(into, user, position);
            }
            Ok(())
        })?;
    }
    Ok(position)
}

/// Whom a device list change of `users` concerns, as [`E2ee::device_list_changes`] decides:
/// each of them that is a user of this server (their own syncs list themselves), and every
/// user joined to a room one of them is joined to. One audience names one user: the others
/// of this server are reached through their joined rooms, so `None` (everyone) when one of
/// them has none, or when the rooms are too many. Returned with the rooms it lists.
pub(super) fn device_list_audience(
    rooms: &Rooms,
    users: &BTreeSet<OwnedUserId>,
) -> Result<Option<(Audience, BTreeSet<OwnedRoomId>)>, E2eeError> {
    let local = |user: &UserId| user.server_name() == rooms.server_name();
    let Some(subject) = users
        .iter()
        .find(|user| local(user))
        .or_else(|| users.iter().next())
    else {
        return Ok(None);
    };
    let mut listed = BTreeSet::new();
    for user in users {
        let joined = rooms.joined_rooms(user)?;
        if user != subject && local(user) && joined.is_empty() {
            return Ok(None);
        }
        listed.extend(joined);
    }
    if listed.len() > MAX_AUDIENCE_ROOMS {
        return Ok(None);
    }
    let audience = Audience::UserAndRoomMates {
        user_id: subject.clone(),
        rooms: listed.iter().cloned().collect(),
    };
    Ok(Some((audience, listed)))
}

/// Whether the room's current state has an `m.room.encryption` event.
fn is_encrypted(rooms: &Rooms, room: &RoomId) -> Result<bool, E2eeError> {
    Ok(rooms
        .state_event(room, &StateEventType::RoomEncryption, "")?
        .is_some())
}

/// The membership events of the room in `(since, until]`, in stream order.
fn membership_changes(
    rooms: &Rooms,
    room: &OwnedRoomId,
    since: StreamPosition,
    until: StreamPosition,
) -> Result<Vec<MembershipChange>, E2eeError> {
    let mut out = Vec::new();
    let mut from = since;
    loop {
        let page = rooms.timeline(room, Some(from), Direction::Forward, TIMELINE_PAGE)?;
        let full = page.len() == TIMELINE_PAGE;
        for (position, pdu) in page {
            if position > until {
                return Ok(out);
            }
            from = position;
            if *pdu.kind() != TimelineEventType::RoomMember {
                continue;
            }
            let Some(user) = pdu.state_key().and_then(|key| UserId::parse(key).ok()) else {
                continue;
            };
            let membership = pdu
                .content_object()
                .get("membership")
                .and_then(|value| match value {
                    ruma::CanonicalJsonValue::String(membership) => {
                        Some(MembershipState::from(membership.as_str()))
                    }
                    _ => None,
                });
            if let Some(membership) = membership {
                out.push(MembershipChange { user, membership });
            }
        }
        if !full {
            return Ok(out);
        }
    }
}
