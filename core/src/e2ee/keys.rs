//! Device keys, one-time keys and fallback keys: upload, counts, claims and queries.

use std::collections::{BTreeMap, BTreeSet};

use ruma::encryption::{DeviceKeys, OneTimeKey};
use ruma::serde::Raw;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId,
    OwnedOneTimeKeyId, OwnedUserId, UInt, UserId,
};
use serde_json::value::RawValue as RawJsonValue;

use super::device_lists::write_device_list_changes;
use super::tables::{DEVICE_KEYS, FALLBACK_KEYS, FallbackKey, ONE_TIME_KEYS, SIGNATURES};
use super::verify::{add_signature, check_signature, object_field, str_field};
use super::{E2ee, E2eeError, lock};
use crate::rooms::graph::Rooms;
use crate::storage::{Json, WriteBatch};

/// What a device uploads with `/keys/upload` (or with its dehydration).
#[derive(Debug, Default)]
pub struct KeyUpload {
    /// Its identity keys, signed by its own ed25519 key.
    pub device_keys: Option<Raw<DeviceKeys>>,
    /// New one-time keys.
    pub one_time_keys: BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    /// New fallback keys (at most one per algorithm).
    pub fallback_keys: BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
}

/// Claims of one key per device, by user and device, with the algorithm wanted.
pub type KeyClaims = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>;

/// Claimed keys by user and device: `{key id: key}` for each device that had one.
pub type ClaimedKeys =
    BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>>>;

/// The answer to a key query for local users.
#[derive(Debug, Default)]
pub struct QueriedKeys {
    /// Device keys by user and device, with `unsigned.device_display_name`.
    pub device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>>,
    /// Master keys by user.
    pub master_keys: BTreeMap<OwnedUserId, Raw<ruma::encryption::CrossSigningKey>>,
    /// Self-signing keys by user.
    pub self_signing_keys: BTreeMap<OwnedUserId, Raw<ruma::encryption::CrossSigningKey>>,
    /// The requesting user's own user-signing key (nobody else sees it).
    pub user_signing_keys: BTreeMap<OwnedUserId, Raw<ruma::encryption::CrossSigningKey>>,
}

fn device_key_id(device: &DeviceId) -> String {
    format!("ed25519:{device}")
}

/// Parses JSON from a client as canonical JSON (no floats, integers in range).
pub(super) fn canonical_object(
    json: &RawJsonValue,
    what: &str,
) -> Result<CanonicalJsonObject, E2eeError> {
    serde_json::from_str(json.get()).map_err(|err| {
        E2eeError::InvalidParam(format!("{what} is not a canonical JSON object: {err}"))
    })
}

/// Raw JSON of a canonical object (serialising canonical JSON cannot fail).
pub(super) fn to_raw<T>(object: &CanonicalJsonObject) -> Raw<T> {
    let json = serde_json::to_string(object).unwrap_or_else(|_| "{}".to_owned());
    let raw = RawJsonValue::from_string(json).unwrap_or_else(|_| empty_raw());
    Raw::from_json(raw)
}

fn empty_raw() -> Box<RawJsonValue> {
    // "{}" is valid JSON.
    RawJsonValue::from_string("{}".to_owned()).unwrap_or_default()
}

/// Checks uploaded device keys: the right shape, the uploader's user and device ids, and a
/// valid signature by the device's own ed25519 key. Returns them without `unsigned`.
pub(super) fn check_device_keys(
    user: &UserId,
    device: &DeviceId,
    raw: &Raw<DeviceKeys>,
) -> Result<CanonicalJsonObject, E2eeError> {
    let parsed: DeviceKeys = raw
        .deserialize()
        .map_err(|err| E2eeError::InvalidParam(format!("malformed device keys: {err}")))?;
    if parsed.user_id != user || parsed.device_id != device {
        return Err(E2eeError::InvalidParam(format!(
            "device keys are for {} {}, not for the uploader {user} {device}",
            parsed.user_id, parsed.device_id
        )));
    }
    let mut object = canonical_object(raw.json(), "device keys")?;
    object.remove("unsigned");
    let key_id = device_key_id(device);
    let public = object_field(&object, "keys")
        .and_then(|keys| str_field(keys, &key_id))
        .ok_or_else(|| E2eeError::InvalidParam(format!("device keys lack the key {key_id}")))?;
    check_signature(&object, user, &key_id, public).map_err(E2eeError::InvalidSignature)?;
    Ok(object)
}

/// The ed25519 public key in stored device keys.
pub(super) fn device_ed25519(object: &CanonicalJsonObject, device: &DeviceId) -> Option<String> {
    object_field(object, "keys")
        .and_then(|keys| str_field(keys, &device_key_id(device)))
        .map(str::to_owned)
}

/// Checks one uploaded one-time or fallback key: a string, or an object with a string `key`
/// whose signature by the device (when the device's key is known) verifies.
fn check_one_time_key(
    user: &UserId,
    device: &DeviceId,
    device_key: Option<&str>,
    id: &OwnedOneTimeKeyId,
    raw: &Raw<OneTimeKey>,
) -> Result<CanonicalJsonValue, E2eeError> {
    let value: CanonicalJsonValue = serde_json::from_str(raw.json().get()).map_err(|err| {
        E2eeError::InvalidParam(format!("one-time key {id} is not canonical JSON: {err}"))
    })?;
    match &value {
        CanonicalJsonValue::String(_) => {}
        CanonicalJsonValue::Object(object) => {
            if str_field(object, "key").is_none() {
                return Err(E2eeError::InvalidParam(format!(
                    "one-time key {id} has no string `key`"
                )));
            }
            if let Some(public) = device_key {
                check_signature(object, user, &device_key_id(device), public).map_err(
                    |reason| E2eeError::InvalidSignature(format!("one-time key {id}: {reason}")),
                )?;
            }
        }
        _ => {
            return Err(E2eeError::InvalidParam(format!(
                "one-time key {id} must be a string or an object"
            )));
        }
    }
    Ok(value)
}

fn key_id(algorithm: &str, name: &str) -> Option<OwnedOneTimeKeyId> {
    OwnedOneTimeKeyId::try_from(format!("{algorithm}:{name}")).ok()
}

fn raw_value(value: &CanonicalJsonValue) -> Raw<OneTimeKey> {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned());
    Raw::from_json(RawJsonValue::from_string(json).unwrap_or_else(|_| empty_raw()))
}

impl E2ee {
    /// Stores what a device uploads: its identity keys (checked, and announced as a device
    /// list change when new or changed), one-time keys (an id already used with other content
    /// is refused) and fallback keys (replacing the previous one of the algorithm). Returns
    /// the device's one-time key counts after the upload. Synchronous: call it from
    /// `spawn_blocking`.
    pub fn upload_keys(
        &self,
        rooms: &Rooms,
        user: &UserId,
        device: &DeviceId,
        upload: KeyUpload,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>, E2eeError> {
        let new_device_keys = upload
            .device_keys
            .as_ref()
            .map(|raw| check_device_keys(user, device, raw))
            .transpose()?;

        let _guard = lock(&self.keys_lock);
        let dev_key = (user.to_owned(), device.to_owned());
        let stored = DEVICE_KEYS
            .get(self.store(), &dev_key)?
            .map(|Json(keys)| keys);
        let device_public = new_device_keys
            .as_ref()
            .or(stored.as_ref())
            .and_then(|keys| device_ed25519(keys, device));

        let mut batch = WriteBatch::new();
        for (id, raw) in &upload.one_time_keys {
            let value = check_one_time_key(user, device, device_public.as_deref(), id, raw)?;
            let key = (
                user.to_owned(),
                device.to_owned(),
                id.algorithm().as_str().to_owned(),
                id.key_name().as_str().to_owned(),
            );
            match ONE_TIME_KEYS.get(self.store(), &key)? {
                Some(Json(existing)) if existing == value => {}
                Some(_) => {
                    return Err(E2eeError::InvalidParam(format!(
                        "one-time key {id} already exists with other content"
                    )));
                }
                None => ONE_TIME_KEYS.put(&mut batch, &key, &Json(value)),
            }
        }
        let mut fallback_algorithms = std::collections::BTreeSet::new();
        for (id, raw) in &upload.fallback_keys {
            let value = check_one_time_key(user, device, device_public.as_deref(), id, raw)?;
            let algorithm = id.algorithm().as_str().to_owned();
            if !fallback_algorithms.insert(algorithm.clone()) {
                return Err(E2eeError::InvalidParam(format!(
                    "more than one fallback key for {algorithm}"
                )));
            }
            let key = (user.to_owned(), device.to_owned(), algorithm);
            let name = id.key_name().as_str().to_owned();
            let unchanged = FALLBACK_KEYS
                .get(self.store(), &key)?
                .is_some_and(|Json(existing)| existing.key_name == name && existing.key == value);
            // Re-uploading the same key keeps whether it was used: the client has not
            // replaced it.
            if !unchanged {
                let record = FallbackKey {
                    key_name: name,
                    key: value,
                    used: false,
                };
                FALLBACK_KEYS.put(&mut batch, &key, &Json(record));
            }
        }

        match new_device_keys.filter(|keys| stored.as_ref() != Some(keys)) {
            Some(keys) => {
                DEVICE_KEYS.put(&mut batch, &dev_key, &Json(keys));
                write_device_list_changes(rooms, &BTreeSet::from([user.to_owned()]), batch)?;
            }
            None if !batch.is_empty() => self.store().write(batch)?,
            None => {}
        }
        self.one_time_key_counts(user, device)
    }

    /// How many unclaimed one-time keys the device has, per algorithm (`signed_curve25519`
    /// always present, as clients expect).
    pub fn one_time_key_counts(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>, E2eeError> {
        let mut counts = BTreeMap::new();
        counts.insert(OneTimeKeyAlgorithm::SignedCurve25519, UInt::MIN);
        let keys =
            ONE_TIME_KEYS.scan_prefix(self.store(), &(user.to_owned(), device.to_owned()))?;
        for ((_, _, algorithm, _), _) in keys {
            let count = counts
                .entry(OneTimeKeyAlgorithm::from(algorithm.as_str()))
                .or_insert(UInt::MIN);
            *count = count.saturating_add(UInt::from(1_u32));
        }
        Ok(counts)
    }

    /// The algorithms for which the device has a fallback key no claim has used yet.
    pub fn unused_fallback_key_types(
        &self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Vec<OneTimeKeyAlgorithm>, E2eeError> {
        Ok(FALLBACK_KEYS
            .scan_prefix(self.store(), &(user.to_owned(), device.to_owned()))?
            .into_iter()
            .filter(|(_, Json(key))| !key.used)
            .map(|((_, _, algorithm), _)| OneTimeKeyAlgorithm::from(algorithm.as_str()))
            .collect())
    }

    /// Claims one key per requested device, atomically: a one-time key is handed out once
    /// and deleted in the same batch; when none is left, the device's fallback key of the
    /// algorithm is handed out (as often as asked) and marked used. Devices without either
    /// are left out. For local users; the caller routes remote users to their servers.
    pub fn claim_keys(&self, claims: &KeyClaims) -> Result<ClaimedKeys, E2eeError> {
        let _guard = lock(&self.keys_lock);
        let mut batch = WriteBatch::new();
        let mut claimed = ClaimedKeys::new();
        for (user, devices) in claims {
            for (device, algorithm) in devices {
                let prefix = (user.clone(), device.clone(), algorithm.as_str().to_owned());
                let one_time = ONE_TIME_KEYS.collect(
                    self.store(),
                    crate::storage::KeyRange::prefix(&crate::storage::KeyCodec::to_key_bytes(
                        &prefix,
                    )),
                    crate::storage::Direction::Forward,
                    Some(1),
                )?;
                let found = if let Some((key, Json(value))) = one_time.into_iter().next() {
                    ONE_TIME_KEYS.delete(&mut batch, &key);
                    key_id(&key.2, &key.3).map(|id| (id, value))
                } else if let Some(Json(mut fallback)) = FALLBACK_KEYS.get(self.store(), &prefix)? {
                    let id = key_id(&prefix.2, &fallback.key_name);
                    let value = fallback.key.clone();
                    if !fallback.used {
                        fallback.used = true;
                        FALLBACK_KEYS.put(&mut batch, &prefix, &Json(fallback));
                    }
                    id.map(|id| (id, value))
                } else {
                    None
                };
                if let Some((id, value)) = found {
                    claimed
                        .entry(user.clone())
                        .or_default()
                        .entry(device.clone())
                        .or_default()
                        .insert(id, raw_value(&value));
                }
            }
        }
        if !batch.is_empty() {
            self.store().write(batch)?;
        }
        Ok(claimed)
    }

    /// The keys of local users for `requester`: each user's device keys (all devices when
    /// the list is empty) with the self-signing key's signatures and the device's display
    /// name, their master and self-signing keys, and the requester's own user-signing key.
    /// Signatures of a master key are shown when made by its owner or by the requester.
    /// Every queried user is in `device_keys`, with no devices if none has keys: clients
    /// (the Rust crypto SDK among them) treat a user missing from the answer as not yet
    /// queried and ask again at once, in a loop, until the user uploads keys.
    pub fn query_keys(
        &self,
        requester: &UserId,
        users: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<QueriedKeys, E2eeError> {
        let mut out = QueriedKeys::default();
        for (user, wanted) in users {
            let names: BTreeMap<OwnedDeviceId, Option<String>> =
                crate::accounts::devices::list(self.store(), user)?
                    .into_iter()
                    .map(|(device, record)| (device, record.display_name))
                    .collect();
            let dehydrated = self.dehydrated_record(user)?;
            let mut devices = BTreeMap::new();
            for ((_, device), Json(mut keys)) in
                DEVICE_KEYS.scan_prefix(self.store(), &(user.clone(),))?
            {
                if !wanted.is_empty() && !wanted.contains(&device) {
                    continue;
                }
                if let Some(public) = device_ed25519(&keys, &device) {
                    self.attach_signatures(&mut keys, user, &public, &[user])?;
                }
                let name = match names.get(&device) {
                    Some(name) => name.clone(),
                    None => dehydrated
                        .as_ref()
                        .filter(|record| record.device_id == device)
                        .and_then(|record| record.display_name.clone()),
                };
                if let Some(name) = name {
                    let mut unsigned = CanonicalJsonObject::new();
                    unsigned.insert(
                        "device_display_name".to_owned(),
                        CanonicalJsonValue::String(name),
                    );
                    keys.insert("unsigned".to_owned(), CanonicalJsonValue::Object(unsigned));
                }
                devices.insert(device, to_raw(&keys));
            }
            out.device_keys.insert(user.clone(), devices);
            if let Some(mut master) = self.cross_signing_key(user, super::MASTER)? {
                if let Some(public) = super::signing::cross_signing_public(&master) {
                    self.attach_signatures(&mut master, user, &public, &[user, requester])?;
                }
                out.master_keys.insert(user.clone(), to_raw(&master));
            }
            if let Some(ssk) = self.cross_signing_key(user, super::SELF_SIGNING)? {
                out.self_signing_keys.insert(user.clone(), to_raw(&ssk));
            }
            if user == requester
                && let Some(usk) = self.cross_signing_key(user, super::USER_SIGNING)?
            {
                out.user_signing_keys.insert(user.clone(), to_raw(&usk));
            }
        }
        Ok(out)
    }

    /// Adds to `object` the stored signatures of the key `public` of `target` made by
    /// `signers`.
    pub(super) fn attach_signatures(
        &self,
        object: &mut CanonicalJsonObject,
        target: &UserId,
        public: &str,
        signers: &[&UserId],
    ) -> Result<(), E2eeError> {
        for signer in signers {
            let prefix = (target.to_owned(), public.to_owned(), (*signer).to_owned());
            for ((_, _, signer, key_id), Json(signature)) in
                SIGNATURES.scan_prefix(self.store(), &prefix)?
            {
                add_signature(object, &signer, &key_id, signature);
            }
        }
        Ok(())
    }

    /// Adds the removal of every key and the inbox of `device` to `batch`; returns how many
    /// to-device messages that drops.
    pub(super) fn remove_device_keys_into(
        &self,
        batch: &mut WriteBatch,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<usize, E2eeError> {
        let prefix = (user.to_owned(), device.to_owned());
        DEVICE_KEYS.delete(batch, &prefix);
        for (key, _) in ONE_TIME_KEYS.scan_prefix(self.store(), &prefix)? {
            ONE_TIME_KEYS.delete(batch, &key);
        }
        for (key, _) in FALLBACK_KEYS.scan_prefix(self.store(), &prefix)? {
            FALLBACK_KEYS.delete(batch, &key);
        }
        self.remove_inbox_into(batch, user, device)
    }
}
