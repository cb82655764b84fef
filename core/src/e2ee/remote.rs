//! Other servers' users: device keys learnt over federation (`m.device_list_update`, a
//! resync through `/user/devices`), stored beside local users' keys and announced as device
//! list changes so local clients that share a room with them refetch them; and what other
//! servers ask about local users' devices.

use std::collections::BTreeSet;

use ruma::encryption::DeviceKeys;
use ruma::serde::Raw;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

use super::device_lists::write_device_list_changes;
use super::keys::check_device_keys;
use super::tables::{DEVICE_KEYS, DEVICE_LIST_BY_USER};
use super::{E2ee, E2eeError, lock};
use crate::rooms::graph::{Rooms, StreamPosition};
use crate::storage::{Direction, Json, KeyCodec, KeyRange, WriteBatch};

impl E2ee {
    /// Applies one device change of a remote user: `keys` (checked against the device and its
    /// own signature) replace the stored ones, `deleted` removes them; either way the change
    /// is recorded at the next stream position, so local syncs report the user as `changed`.
    /// Synchronous: call it from `spawn_blocking`.
    pub fn apply_remote_device_update(
        &self,
        rooms: &Rooms,
        user: &UserId,
        device: &DeviceId,
        keys: Option<&Raw<DeviceKeys>>,
        deleted: bool,
    ) -> Result<(), E2eeError> {
        let checked = match (deleted, keys) {
            (false, Some(raw)) => Some(check_device_keys(user, device, raw)?),
            _ => None,
        };
        let _guard = lock(&self.keys_lock);
        let mut batch = WriteBatch::new();
        let key = (user.to_owned(), device.to_owned());
        if deleted {
            DEVICE_KEYS.delete(&mut batch, &key);
        } else if let Some(keys) = checked {
            DEVICE_KEYS.put(&mut batch, &key, &Json(keys));
        }
        // Its syncs are elsewhere: the local users sharing a room with it are the audience.
        write_device_list_changes(rooms, &BTreeSet::from([user.to_owned()]), batch)?;
        Ok(())
    }

    /// Replaces every stored device of a remote user with `devices` (a resync through
    /// `/user/devices`); devices whose keys do not check are left out. Recorded as one device
    /// list change. Synchronous: call it from `spawn_blocking`.
    pub fn replace_remote_devices(
        &self,
        rooms: &Rooms,
        user: &UserId,
        devices: &[(OwnedDeviceId, Raw<DeviceKeys>)],
    ) -> Result<(), E2eeError> {
        let _guard = lock(&self.keys_lock);
        let mut batch = WriteBatch::new();
        for (key, _) in DEVICE_KEYS.scan_prefix(self.store(), &(user.to_owned(),))? {
            DEVICE_KEYS.delete(&mut batch, &key);
        }
        for (device, raw) in devices {
            match check_device_keys(user, device, raw) {
                Ok(keys) => {
                    DEVICE_KEYS.put(&mut batch, &(user.to_owned(), device.clone()), &Json(keys))
                }
                Err(error) => {
                    tracing::info!(%user, %device, %error, "ignoring remote device keys");
                }
            }
        }
        // Its syncs are elsewhere: the local users sharing a room with it are the audience.
        write_device_list_changes(rooms, &BTreeSet::from([user.to_owned()]), batch)?;
        Ok(())
    }

    /// The stream position of the latest change of `user`'s devices or keys (0 if none): the
    /// `stream_id` other servers get with the user's devices.
    pub fn device_list_stream_id(&self, user: &UserId) -> Result<StreamPosition, E2eeError> {
        let prefix = (user.to_owned(),).to_key_bytes();
        let latest: Vec<((OwnedUserId, StreamPosition), ())> = DEVICE_LIST_BY_USER.collect(
            self.store(),
            KeyRange::prefix(&prefix),
            Direction::Reverse,
            Some(1),
        )?;
        Ok(latest
            .into_iter()
            .next()
            .map_or(StreamPosition(0), |((_, position), ())| position))
    }
}
