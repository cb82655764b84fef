//! The sections of a sync that other services fill: to-device messages, device list changes
//! and key counts (end-to-end encryption), unread notification counts and the push rules
//! (push). Each is one small function over its service.

use std::collections::{BTreeMap, BTreeSet};

use axon_api::ApiError;
use axon_core::Services;
use axon_core::accounts::AuthenticatedUser;
use axon_core::rooms::graph::StreamPosition;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::Value;

use super::response::{DeviceLists, SyncResponse, UnreadCounts};
use crate::client::keys::e2ee_error;
use crate::client::sync::sync_error;

/// The global account data type of the push rules, which the push service keeps.
pub(crate) const PUSH_RULES: &str = "m.push_rules";

/// The encryption sections for one device: to-device messages in `(since, upto]` (every
/// pending one on an initial sync), device list changes (incremental syncs only), one-time
/// key counts and unused fallback key types. Messages at or before `since` were delivered by
/// the response that named it, so they are deleted now.
pub(crate) fn fill_device_sections(
    services: &Services,
    device: &AuthenticatedUser,
    since: Option<StreamPosition>,
    upto: StreamPosition,
    response: &mut SyncResponse,
) -> Result<(), ApiError> {
    let e2ee = &services.e2ee;
    let (user_id, device_id) = (&device.user_id, &device.device_id);
    if let Some(since) = since {
        e2ee.delete_to_device_up_to(user_id, device_id, since)
            .map_err(e2ee_error)?;
    }
    // All of them: the token moves to `upto`, so a message left out would be skipped.
    let messages = e2ee
        .to_device_between(
            user_id,
            device_id,
            since.unwrap_or_default(),
            upto,
            usize::MAX,
        )
        .map_err(e2ee_error)?;
    response.to_device.events = messages
        .into_iter()
        .map(|(_, raw)| {
            serde_json::from_str::<Value>(raw.json().get())
                .map_err(|err| ApiError::internal(format!("stored to-device message: {err}")))
        })
        .collect::<Result<_, _>>()?;
    if let Some(since) = since {
        let changes = e2ee
            .device_list_changes(&services.rooms, user_id, since, upto)
            .map_err(e2ee_error)?;
        response.device_lists = DeviceLists {
            changed: changes.changed,
            left: changes.left,
        };
    }
    response.device_one_time_keys_count = e2ee
        .one_time_key_counts(user_id, device_id)
        .map_err(e2ee_error)?
        .into_iter()
        .map(|(algorithm, count)| (algorithm.to_string(), u64::from(count)))
        .collect();
    response.device_unused_fallback_key_types = e2ee
        .unused_fallback_key_types(user_id, device_id)
        .map_err(e2ee_error)?
        .into_iter()
        .map(|algorithm| algorithm.to_string())
        .collect();
    Ok(())
}

/// The unread counts of a room for the user, from the push notifications after their read
/// receipts: for the room as a whole and, when `per_thread`, separately per thread (keyed by
/// thread root id; the room's counts then cover the main timeline only).
pub(crate) fn unread_counts(
    services: &Services,
    user: &AuthenticatedUser,
    room_id: &RoomId,
    per_thread: bool,
    upto: StreamPosition,
) -> Result<(UnreadCounts, Option<BTreeMap<String, UnreadCounts>>), ApiError> {
    let receipts = &services.receipts;
    let main = receipts
        .read_position(&user.user_id, room_id, None)
        .map_err(sync_error)?;
    let threads = receipts
        .thread_read_positions(&user.user_id, room_id)
        .map_err(sync_error)?;
    let counts = services
        .push
        .unread_counts(&user.user_id, room_id, main, &threads, upto)
        .map_err(ApiError::internal)?;
    if !per_thread {
        let (notification_count, highlight_count) = counts.total();
        return Ok((
            UnreadCounts {
                highlight_count,
                notification_count,
            },
            None,
        ));
    }
    let threads = counts
        .threads
        .into_iter()
        .map(|(root, (notification_count, highlight_count))| {
            (
                root.to_string(),
                UnreadCounts {
                    highlight_count,
                    notification_count,
                },
            )
        })
        .collect();
    Ok((
        UnreadCounts {
            highlight_count: counts.highlight_count,
            notification_count: counts.notification_count,
        },
        Some(threads),
    ))
}

/// The rooms whose unread counts changed after `since` (up to `upto`), which a sync
/// includes even when its filter hides the events that changed them.
pub(crate) fn rooms_with_changed_counts(
    services: &Services,
    user_id: &UserId,
    since: Option<StreamPosition>,
    upto: StreamPosition,
) -> Result<BTreeSet<OwnedRoomId>, ApiError> {
    match since {
        Some(since) => services
            .push
            .rooms_with_notifications_since(user_id, since, upto)
            .map_err(ApiError::internal),
        None => Ok(BTreeSet::new()),
    }
}

/// The `m.push_rules` account data event: on an initial sync, and when the rules changed
/// after `since`.
pub(crate) fn push_rules_event(
    services: &Services,
    user_id: &UserId,
    since: Option<StreamPosition>,
) -> Result<Option<Value>, ApiError> {
    let push = &services.push;
    if let Some(since) = since
        && !push
            .rules_changed_since(user_id, since)
            .map_err(ApiError::internal)?
    {
        return Ok(None);
    }
    let event = push.rules_event(user_id).map_err(ApiError::internal)?;
    serde_json::from_str(event.json().get())
        .map(Some)
        .map_err(|err| ApiError::internal(format!("push rules event: {err}")))
}
