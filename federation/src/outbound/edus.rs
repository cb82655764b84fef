//! The EDUs this server sends, as the JSON the queue stores (`edu_type` and `content`).

use std::fmt::Write as _;

use ruma::{DeviceId, EventId, RoomId, ServerName, UserId};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The longest `message_id` of an `m.direct_to_device` the specification allows.
const MAX_MESSAGE_ID_CHARS: usize = 32;

/// `m.typing`: whether `user_id` is typing in `room_id`.
pub fn typing_edu(room_id: &RoomId, user_id: &UserId, typing: bool) -> Value {
    json!({
        "edu_type": "m.typing",
        "content": {"room_id": room_id, "user_id": user_id, "typing": typing},
    })
}

/// `m.receipt`: `user_id` has read `room_id` up to `event_id` (a public `m.read` receipt;
/// private ones never leave the server). `thread_id` is `main` or a thread root, absent for
/// an unthreaded receipt; `ts` is when it was sent, in milliseconds since the Unix epoch.
pub fn read_receipt_edu(
    room_id: &RoomId,
    user_id: &UserId,
    event_id: &EventId,
    thread_id: Option<&str>,
    ts: u64,
) -> Value {
    let mut data = json!({ "ts": ts });
    if let (Some(thread), Some(object)) = (thread_id, data.as_object_mut()) {
        object.insert("thread_id".to_owned(), Value::from(thread));
    }
    json!({
        "edu_type": "m.receipt",
        "content": {
            room_id.as_str(): {
                "m.read": {
                    user_id.as_str(): {"event_ids": [event_id], "data": data},
                },
            },
        },
    })
}

/// One user's presence, as an `m.presence` EDU carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceUpdate<'a> {
    /// Whose presence.
    pub user_id: &'a UserId,
    /// `online`, `unavailable` or `offline`.
    pub presence: &'a str,
    /// The status message, if any.
    pub status_msg: Option<&'a str>,
    /// Milliseconds since the user was last active, if ever.
    pub last_active_ago: Option<u64>,
    /// Whether the user is active right now.
    pub currently_active: bool,
}

/// `m.presence`: the presence of some local users.
pub fn presence_edu(updates: &[PresenceUpdate<'_>]) -> Value {
    let push: Vec<Value> = updates
        .iter()
        .map(|update| {
            let mut entry = Map::new();
            entry.insert("user_id".to_owned(), Value::from(update.user_id.as_str()));
            entry.insert("presence".to_owned(), Value::from(update.presence));
            entry.insert(
                "currently_active".to_owned(),
                Value::from(update.currently_active),
            );
            // The specification requires `last_active_ago`; a user never active reads 0 ago
            // only together with `offline`, which receivers show as offline anyway.
            entry.insert(
                "last_active_ago".to_owned(),
                Value::from(update.last_active_ago.unwrap_or(0)),
            );
            if let Some(status) = update.status_msg {
                entry.insert("status_msg".to_owned(), Value::from(status));
            }
            Value::Object(entry)
        })
        .collect();
    json!({"edu_type": "m.presence", "content": {"push": push}})
}

/// `m.direct_to_device`: to-device messages of `sender` for users of one server, as
/// `{user_id: {device_id or "*": content}}`. `message_id` identifies the EDU for the
/// receiver's deduplication.
pub fn direct_to_device_edu(
    sender: &UserId,
    event_type: &str,
    message_id: &str,
    messages: &Value,
) -> Value {
    json!({
        "edu_type": "m.direct_to_device",
        "content": {
            "sender": sender,
            "type": event_type,
            "message_id": message_id,
            "messages": messages,
        },
    })
}

/// The `message_id` of the `m.direct_to_device` EDU that carries a client's to-device
/// transaction `txn_id` (sent from `sender`'s `device`) to `destination`.
///
/// Derived from those, not random: a client retrying the transaction (after a crash, or a
/// lost response) queues an EDU with the same id, which the receiver drops as a duplicate.
/// Receivers deduplicate per origin server, so the sender is part of the hash. 128 bits of
/// SHA-256 in hex: within the specification's 32 characters.
pub fn to_device_message_id(
    sender: &UserId,
    device: &DeviceId,
    txn_id: &str,
    destination: &ServerName,
) -> String {
    let mut hasher = Sha256::new();
    // Each part is length-prefixed, so no two different tuples hash the same input.
    for part in [
        sender.as_str(),
        device.as_str(),
        txn_id,
        destination.as_str(),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut id = String::with_capacity(MAX_MESSAGE_ID_CHARS);
    for byte in digest.iter().take(MAX_MESSAGE_ID_CHARS / 2) {
        let _infallible = write!(id, "{byte:02x}");
    }
    id
}

/// `m.device_list_update`: a change of one of `user_id`'s devices. `stream_id` orders the
/// user's updates and `prev_id` names the updates the receiver must have seen before this one,
/// so it can tell that it missed some and refetch the list. `keys` is the device's current
/// keys, `None` with `deleted` for a removed device.
pub fn device_list_update_edu(
    user_id: &UserId,
    device_id: &str,
    stream_id: u64,
    prev_id: &[u64],
    deleted: bool,
    keys: Option<&Value>,
) -> Value {
    device_update(user_id, device_id, stream_id, prev_id, deleted, keys, None)
}

/// A device as other servers see it: its keys and display name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnnouncedDevice<'a> {
    /// The device's identity keys (without `unsigned`); `None` for a deleted device.
    pub keys: Option<&'a Value>,
    /// Its display name, if it has one.
    pub display_name: Option<&'a str>,
}

/// `m.device_list_update` with the device's display name: see [`device_list_update_edu`].
pub fn device_update_edu(
    user_id: &UserId,
    device_id: &str,
    stream_id: u64,
    prev_id: &[u64],
    device: AnnouncedDevice<'_>,
) -> Value {
    device_update(
        user_id,
        device_id,
        stream_id,
        prev_id,
        device.keys.is_none(),
        device.keys,
        device.display_name,
    )
}

fn device_update(
    user_id: &UserId,
    device_id: &str,
    stream_id: u64,
    prev_id: &[u64],
    deleted: bool,
    keys: Option<&Value>,
    display_name: Option<&str>,
) -> Value {
    let mut content = json!({
        "user_id": user_id,
        "device_id": device_id,
        "stream_id": stream_id,
        "prev_id": prev_id,
        "deleted": deleted,
    });
    if let Some(object) = content.as_object_mut() {
        if let Some(keys) = keys {
            object.insert("keys".to_owned(), keys.clone());
        }
        if let Some(name) = display_name {
            object.insert("device_display_name".to_owned(), Value::from(name));
        }
    }
    json!({"edu_type": "m.device_list_update", "content": content})
}

/// `m.signing_key_update`: `user_id`'s current master and self-signing keys (the
/// user-signing key is private to the user's own server).
pub fn signing_key_update_edu(
    user_id: &UserId,
    master_key: Option<&Value>,
    self_signing_key: Option<&Value>,
) -> Value {
    let mut content = Map::new();
    content.insert("user_id".to_owned(), Value::from(user_id.as_str()));
    if let Some(master) = master_key {
        content.insert("master_key".to_owned(), master.clone());
    }
    if let Some(self_signing) = self_signing_key {
        content.insert("self_signing_key".to_owned(), self_signing.clone());
    }
    json!({"edu_type": "m.signing_key_update", "content": content})
}

#[cfg(test)]
mod tests {
    use ruma::{device_id, event_id, server_name};

    use super::*;

    fn room() -> &'static RoomId {
        <&RoomId>::try_from("!r:a.test").unwrap()
    }

    fn user() -> &'static UserId {
        <&UserId>::try_from("@u:a.test").unwrap()
    }

    #[test]
    fn edus_carry_their_type_and_content() {
        let edu = typing_edu(room(), user(), true);
        assert_eq!(edu["edu_type"], "m.typing");
        assert_eq!(edu["content"]["typing"], true);
        let edu = device_list_update_edu(user(), "D", 3, &[2], false, None);
        assert_eq!(edu["content"]["prev_id"], json!([2]));
        assert!(edu["content"].get("keys").is_none());
    }

    #[test]
    fn receipts_name_their_thread_only_when_threaded() {
        let edu = read_receipt_edu(room(), user(), event_id!("$e"), None, 7);
        let receipt = &edu["content"]["!r:a.test"]["m.read"]["@u:a.test"];
        assert_eq!(receipt["event_ids"], json!(["$e"]));
        assert_eq!(receipt["data"], json!({"ts": 7}));
        let edu = read_receipt_edu(room(), user(), event_id!("$e"), Some("main"), 7);
        assert_eq!(
            edu["content"]["!r:a.test"]["m.read"]["@u:a.test"]["data"]["thread_id"],
            "main"
        );
    }

    #[test]
    fn presence_lists_each_user() {
        let edu = presence_edu(&[PresenceUpdate {
            user_id: user(),
            presence: "online",
            status_msg: Some("here"),
            last_active_ago: Some(5),
            currently_active: true,
        }]);
        assert_eq!(edu["edu_type"], "m.presence");
        assert_eq!(
            edu["content"]["push"],
            json!([{"user_id": "@u:a.test", "presence": "online", "status_msg": "here",
                    "last_active_ago": 5, "currently_active": true}])
        );
    }

    #[test]
    fn device_updates_mark_deletions_and_carry_names() {
        let keys = json!({"device_id": "D"});
        let edu = device_update_edu(
            user(),
            "D",
            9,
            &[],
            AnnouncedDevice {
                keys: Some(&keys),
                display_name: Some("phone"),
            },
        );
        assert_eq!(edu["content"]["deleted"], false);
        assert_eq!(edu["content"]["keys"], keys);
        assert_eq!(edu["content"]["device_display_name"], "phone");
        let edu = device_update_edu(
            user(),
            "D",
            10,
            &[9],
            AnnouncedDevice {
                keys: None,
                display_name: None,
            },
        );
        assert_eq!(edu["content"]["deleted"], true);
        assert!(edu["content"].get("keys").is_none());
    }

    #[test]
    fn signing_key_updates_leave_out_missing_keys() {
        let master = json!({"usage": ["master"]});
        let edu = signing_key_update_edu(user(), Some(&master), None);
        assert_eq!(
            edu,
            json!({"edu_type": "m.signing_key_update", "content": {
                "user_id": "@u:a.test", "master_key": master}})
        );
    }

    #[test]
    fn message_ids_are_stable_short_and_distinct() {
        let id = |txn: &str, server: &str| {
            to_device_message_id(
                user(),
                device_id!("DEV"),
                txn,
                <&ServerName>::try_from(server).unwrap(),
            )
        };
        let first = id("t1", "b.test");
        assert_eq!(first, id("t1", "b.test"));
        assert_eq!(first.chars().count(), MAX_MESSAGE_ID_CHARS);
        assert_ne!(first, id("t2", "b.test"));
        assert_ne!(first, id("t1", "c.test"));
        // The parts are delimited: moving a character between them changes the id.
        let shifted = to_device_message_id(user(), device_id!("DEVt"), "1", server_name!("b.test"));
        assert_ne!(first, shifted);
    }
}
