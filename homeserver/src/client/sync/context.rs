//! What one sync computation knows: who syncs, with which filter, from where to where, and
//! the per-user data read once for all rooms (ignored users, account data changes).

use std::collections::{HashMap, HashSet};

use axon_api::ApiError;
use axon_core::Services;
use axon_core::accounts::AuthenticatedUser;
use axon_core::rooms::graph::StreamPosition;
use axon_core::rooms::pdu::Pdu;
use axon_core::sync::AccountDataEntry;
use ruma::api::client::filter::FilterDefinition;
use ruma::{CanonicalJsonValue, OwnedRoomId, OwnedUserId, UserId};
use serde_json::{Value, json};

use super::filter::{apply_event_fields, federation_format, lazy_members};
use super::lazy_members::SentMembers;
use super::token::SyncToken;
use crate::client::rooms::client_event_value;
use crate::client::rooms::format::{Serving, client_event_json};

/// The global account data type listing the users whose events a user does not want.
pub(crate) const IGNORED_USER_LIST: &str = "m.ignored_user_list";

/// One sync computation, from `since` (none: an initial sync) to `upto`.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    pub(crate) services: &'a Services,
    pub(crate) user: &'a AuthenticatedUser,
    pub(crate) filter: &'a FilterDefinition,
    pub(crate) since: Option<SyncToken>,
    pub(crate) full_state: bool,
    /// The stream position the response is complete up to (the `next_batch` stream part).
    pub(crate) upto: StreamPosition,
    /// Users whose events and invites are not delivered.
    pub(crate) ignored: HashSet<OwnedUserId>,
    /// Global account data to deliver.
    pub(crate) global_account_data: Vec<AccountDataEntry>,
    /// Room account data to deliver, by room.
    pub(crate) room_account_data: HashMap<OwnedRoomId, Vec<AccountDataEntry>>,
    /// The membership events lazy-loading syncs sent to each device.
    pub(crate) sent_members: &'a SentMembers,
}

impl<'a> Context<'a> {
    /// Reads the per-user data of a sync: the account data to deliver and the ignored users.
    /// A lazy-loading sync also starts the device's record of sent members here: afresh for
    /// an initial or full-state sync, else without what was recorded after `since`.
    pub(crate) fn new(
        services: &'a Services,
        user: &'a AuthenticatedUser,
        filter: &'a FilterDefinition,
        since: Option<SyncToken>,
        full_state: bool,
        upto: StreamPosition,
        sent_members: &'a SentMembers,
    ) -> Result<Self, ApiError> {
        if lazy_members(filter).is_some() {
            let since = since.filter(|_| !full_state).map(|since| since.stream);
            sent_members.start(&user.user_id, &user.device_id, since);
        }
        let account_data = &services.account_data;
        let entries = match since {
            Some(since) if !full_state => account_data.changes(&user.user_id, since.stream, upto),
            _ => account_data.all(&user.user_id, upto),
        }
        .map_err(ApiError::internal)?;
        let mut global_account_data = Vec::new();
        let mut room_account_data: HashMap<OwnedRoomId, Vec<AccountDataEntry>> = HashMap::new();
        for entry in entries {
            match entry.room_id.clone() {
                Some(room_id) => room_account_data.entry(room_id).or_default().push(entry),
                None => global_account_data.push(entry),
            }
        }
        let ignored = account_data
            .get(&user.user_id, None, IGNORED_USER_LIST)
            .map_err(ApiError::internal)?
            .map(|content| ignored_users(&content))
            .unwrap_or_default();
        Ok(Self {
            services,
            user,
            filter,
            since,
            full_state,
            upto,
            ignored,
            global_account_data,
            room_account_data,
            sent_members,
        })
    }

    /// The stream position of `since`, for incremental syncs.
    pub(crate) fn since_stream(&self) -> Option<StreamPosition> {
        self.since.map(|since| since.stream)
    }

    /// Whether the sync sends full state (initial sync or `full_state`).
    pub(crate) fn wants_full_state(&self) -> bool {
        self.since.is_none() || self.full_state
    }

    /// Whether `sender` is ignored by the syncing user.
    pub(crate) fn is_ignored(&self, sender: &UserId) -> bool {
        self.ignored.contains(sender)
    }

    /// A timeline event as the client asked for it (format and fields).
    pub(crate) fn timeline_event(&self, pdu: &Pdu) -> Result<Value, ApiError> {
        let event = if federation_format(self.filter) {
            federation_event(pdu)
        } else {
            client_event_value(self.services, pdu, self.user)?
        };
        Ok(apply_event_fields(
            event,
            self.filter.event_fields.as_deref(),
        ))
    }

    /// A state event as the client asked for it (format and fields).
    pub(crate) fn state_event(&self, pdu: &Pdu) -> Value {
        let event = if federation_format(self.filter) {
            federation_event(pdu)
        } else {
            client_event_json(pdu, Serving::default())
        };
        apply_event_fields(event, self.filter.event_fields.as_deref())
    }
}

/// The event as servers exchange it, with its id (not part of the PDU from room v3 on).
fn federation_event(pdu: &Pdu) -> Value {
    let mut event = Value::from(CanonicalJsonValue::Object(pdu.json().clone()));
    if let Some(object) = event.as_object_mut() {
        object.insert("event_id".to_owned(), json!(pdu.event_id()));
        if let Some(unsigned) = pdu.unsigned() {
            object.insert(
                "unsigned".to_owned(),
                Value::from(CanonicalJsonValue::Object(unsigned.clone())),
            );
        }
    }
    event
}

/// The users of an `m.ignored_user_list` content (`{"ignored_users": {"@u:x": {}}}`).
pub(crate) fn ignored_users(content: &Value) -> HashSet<OwnedUserId> {
    content
        .get("ignored_users")
        .and_then(Value::as_object)
        .map(|users| {
            users
                .keys()
                .filter_map(|user| OwnedUserId::try_from(user.as_str()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_user_lists_are_read_leniently() {
        let users = ignored_users(&json!({ "ignored_users": { "@a:x": {}, "not a user": {} } }));
        assert_eq!(users.len(), 1);
        assert!(users.contains(&OwnedUserId::try_from("@a:x").unwrap()));
        assert!(ignored_users(&json!({})).is_empty());
        assert!(ignored_users(&json!({ "ignored_users": [] })).is_empty());
    }
}
