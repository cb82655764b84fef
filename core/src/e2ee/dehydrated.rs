//! Dehydrated devices (MSC3814): one offline device per user that receives to-device
//! messages while every real device is away.

use std::collections::BTreeSet;

use ruma::events::AnyToDeviceEvent;
use ruma::serde::Raw;
use ruma::{DeviceId, OwnedDeviceId, UserId};
use serde_json::Value;

use super::device_lists::write_device_list_changes;
use super::keys::{KeyUpload, check_device_keys};
use super::tables::{DEHYDRATED, DehydratedRecord, append_batch};
use super::{E2ee, E2eeError, lock};
use crate::rooms::graph::{Audience, Rooms, StreamPosition};
use crate::storage::{Json, WriteBatch};

/// A user's dehydrated device.
#[derive(Clone, Debug, PartialEq)]
pub struct DehydratedDevice {
    /// Its device id.
    pub device_id: OwnedDeviceId,
    /// The encrypted device data the client stored.
    pub device_data: Value,
}

/// A page of a dehydrated device's to-device messages.
#[derive(Debug)]
pub struct DehydratedEvents {
    /// The messages.
    pub events: Vec<Raw<AnyToDeviceEvent>>,
    /// The token for the next page (none when this page is empty).
    pub next_batch: Option<String>,
}

/// How many messages one page of a dehydrated device's inbox holds.
const EVENTS_PAGE: usize = 100;

impl E2ee {
    /// The user's dehydrated device record.
    pub(super) fn dehydrated_record(
        &self,
        user: &UserId,
    ) -> Result<Option<DehydratedRecord>, E2eeError> {
        Ok(DEHYDRATED
            .get(self.store(), &user.to_owned())?
            .map(|Json(record)| record))
    }

    /// Stores a new dehydrated device for `user` with its keys, replacing (and removing the
    /// keys and inbox of) the previous one. Its device id may not be one of the user's real
    /// devices. Synchronous: call it from `spawn_blocking`.
    pub fn put_dehydrated_device(
        &self,
        rooms: &Rooms,
        user: &UserId,
        device_id: &DeviceId,
        device_data: Value,
        display_name: Option<String>,
        upload: KeyUpload,
    ) -> Result<(), E2eeError> {
        let Some(device_keys) = &upload.device_keys else {
            return Err(E2eeError::InvalidParam(
                "a dehydrated device needs device keys".to_owned(),
            ));
        };
        check_device_keys(user, device_id, device_keys)?;
        if crate::accounts::devices::get(self.store(), user, device_id)?.is_some() {
            return Err(E2eeError::InvalidParam(format!(
                "{device_id} is already a device of the user"
            )));
        }
        {
            let _guard = lock(&self.keys_lock);
            let previous = self.dehydrated_record(user)?;
            let mut batch = WriteBatch::new();
            let mut removed = 0;
            if let Some(previous) = &previous {
                removed = self.remove_device_keys_into(&mut batch, user, &previous.device_id)?;
            }
            let record = DehydratedRecord {
                device_id: device_id.to_owned(),
                device_data,
                display_name,
            };
            DEHYDRATED.put(&mut batch, &user.to_owned(), &Json(record));
            if previous.is_some() {
                write_device_list_changes(rooms, &BTreeSet::from([user.to_owned()]), batch)?;
            } else {
                // No device went: nothing any sync shows changed.
                let audience = Audience::User(user.to_owned());
                rooms.write_at_next_position_for(audience, |into, _| {
                    append_batch(into, batch);
                    Ok(())
                })?;
            }
            self.note_to_device_removed(removed);
        }
        self.upload_keys(rooms, user, device_id, upload)?;
        Ok(())
    }

    /// The user's dehydrated device.
    pub fn dehydrated_device(&self, user: &UserId) -> Result<Option<DehydratedDevice>, E2eeError> {
        Ok(self
            .dehydrated_record(user)?
            .map(|record| DehydratedDevice {
                device_id: record.device_id,
                device_data: record.device_data,
            }))
    }

    /// Deletes the user's dehydrated device with its keys and inbox; returns its id.
    pub fn delete_dehydrated_device(
        &self,
        rooms: &Rooms,
        user: &UserId,
    ) -> Result<OwnedDeviceId, E2eeError> {
        let _guard = lock(&self.keys_lock);
        let record = self
            .dehydrated_record(user)?
            .ok_or(E2eeError::NotFound("dehydrated device"))?;
        let mut batch = WriteBatch::new();
        let removed = self.remove_device_keys_into(&mut batch, user, &record.device_id)?;
        DEHYDRATED.delete(&mut batch, &user.to_owned());
        write_device_list_changes(rooms, &BTreeSet::from([user.to_owned()]), batch)?;
        self.note_to_device_removed(removed);
        Ok(record.device_id)
    }

    /// A page of the dehydrated device's to-device messages. `next_batch` (from the previous
    /// page) acknowledges, and deletes, everything up to it.
    pub fn dehydrated_events(
        &self,
        user: &UserId,
        device_id: &DeviceId,
        next_batch: Option<&str>,
    ) -> Result<DehydratedEvents, E2eeError> {
        let record = self
            .dehydrated_record(user)?
            .filter(|record| record.device_id == device_id)
            .ok_or(E2eeError::NotFound("dehydrated device"))?;
        let since = match next_batch {
            Some(token) => {
                let position = token.parse().map(StreamPosition).map_err(|_| {
                    E2eeError::InvalidParam(format!("bad next_batch token {token:?}"))
                })?;
                self.delete_to_device_up_to(user, &record.device_id, position)?;
                position
            }
            None => StreamPosition(0),
        };
        let messages = self.to_device_since(user, &record.device_id, since, EVENTS_PAGE)?;
        let next_batch = messages.last().map(|(position, _)| position.0.to_string());
        Ok(DehydratedEvents {
            events: messages.into_iter().map(|(_, event)| event).collect(),
            next_batch,
        })
    }
}
