//! Cross-signing: the master, self-signing and user-signing keys, and the signatures users
//! upload for devices and keys.

use std::collections::{BTreeMap, BTreeSet};

use ruma::encryption::{CrossSigningKey, KeyUsage};
use ruma::serde::Raw;
use ruma::{CanonicalJsonObject, OwnedUserId, UserId};
use serde_json::json;
use serde_json::value::RawValue as RawJsonValue;

use super::device_lists::write_device_list_changes;
use super::keys::{canonical_object, device_ed25519};
use super::tables::{CROSS_SIGNING_KEYS, DEVICE_KEYS, SIGNATURES};
use super::verify::{check_given_signature, check_signature, object_field, signature_of};
use super::{E2ee, E2eeError, MASTER, SELF_SIGNING, USER_SIGNING, lock};
use crate::rooms::graph::Rooms;
use crate::storage::{Json, WriteBatch};

/// Cross-signing keys uploaded with `/keys/device_signing/upload`.
#[derive(Debug, Default)]
pub struct CrossSigningUpload {
    /// The new master key.
    pub master_key: Option<Raw<CrossSigningKey>>,
    /// The new self-signing key (signed by the master key).
    pub self_signing_key: Option<Raw<CrossSigningKey>>,
    /// The new user-signing key (signed by the master key).
    pub user_signing_key: Option<Raw<CrossSigningKey>>,
}

/// Why one uploaded signature was refused, by signed user and key id: the body of a
/// `failures` entry (`errcode`, `error`).
pub type SignatureFailures = BTreeMap<OwnedUserId, BTreeMap<String, serde_json::Value>>;

/// The public key (unpadded base64) of a stored cross-signing key: its only `ed25519:` entry.
pub(super) fn cross_signing_public(object: &CanonicalJsonObject) -> Option<String> {
    let keys = object_field(object, "keys")?;
    let mut entries = keys.iter();
    let (_, value) = entries.next()?;
    if entries.next().is_some() {
        return None;
    }
    match value {
        ruma::CanonicalJsonValue::String(public) => Some(public.clone()),
        _ => None,
    }
}

/// Checks an uploaded cross-signing key: its shape, its owner, its usage, exactly one
/// `ed25519:<public key>` entry. Returns it as canonical JSON with its public key.
fn check_cross_signing_key(
    user: &UserId,
    raw: &Raw<CrossSigningKey>,
    usage: &str,
) -> Result<(CanonicalJsonObject, String), E2eeError> {
    let parsed: CrossSigningKey = raw
        .deserialize()
        .map_err(|err| E2eeError::InvalidParam(format!("malformed {usage} key: {err}")))?;
    if parsed.user_id != user {
        return Err(E2eeError::InvalidParam(format!(
            "the {usage} key is for {}, not for the uploader",
            parsed.user_id
        )));
    }
    let wanted = KeyUsage::from(usage);
    if !parsed.usage.contains(&wanted) {
        return Err(E2eeError::InvalidParam(format!(
            "the {usage} key lacks the usage {usage}"
        )));
    }
    let mut object = canonical_object(raw.json(), "cross-signing key")?;
    object.remove("unsigned");
    let public = cross_signing_public(&object).ok_or_else(|| {
        E2eeError::InvalidParam(format!("the {usage} key must hold exactly one key"))
    })?;
    let expected_id = format!("ed25519:{public}");
    if object_field(&object, "keys").is_none_or(|keys| !keys.contains_key(&expected_id)) {
        return Err(E2eeError::InvalidParam(format!(
            "the {usage} key's id must be ed25519:<its public key>"
        )));
    }
    Ok((object, public))
}

fn failure(errcode: &str, error: impl Into<String>) -> serde_json::Value {
    json!({ "errcode": errcode, "error": error.into() })
}

impl E2ee {
    /// The stored cross-signing key of `user` for `usage`.
    pub(super) fn cross_signing_key(
        &self,
        user: &UserId,
        usage: &str,
    ) -> Result<Option<CanonicalJsonObject>, E2eeError> {
        Ok(CROSS_SIGNING_KEYS
            .get(self.store(), &(user.to_owned(), usage.to_owned()))?
            .map(|Json(key)| key))
    }

    /// Whether `user` has a master key: the first upload needs no user-interactive auth.
    pub fn has_master_key(&self, user: &UserId) -> Result<bool, E2eeError> {
        Ok(self.cross_signing_key(user, MASTER)?.is_some())
    }

    /// Whether every key in `upload` is already stored as it is (a client retrying an
    /// upload that succeeded need not authenticate again).
    pub fn cross_signing_unchanged(
        &self,
        user: &UserId,
        upload: &CrossSigningUpload,
    ) -> Result<bool, E2eeError> {
        for (raw, usage) in [
            (&upload.master_key, MASTER),
            (&upload.self_signing_key, SELF_SIGNING),
            (&upload.user_signing_key, USER_SIGNING),
        ] {
            let Some(raw) = raw else { continue };
            let Ok(mut object) = canonical_object(raw.json(), "cross-signing key") else {
                return Ok(false);
            };
            object.remove("unsigned");
            if self.cross_signing_key(user, usage)?.as_ref() != Some(&object) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Stores new cross-signing keys of `user`. The self-signing and user-signing keys must
    /// be signed by the master key (the one uploaded with them, or the stored one). The
    /// change is announced in the user's device list. Synchronous: call it from
    /// `spawn_blocking`.
    pub fn upload_cross_signing_keys(
        &self,
        rooms: &Rooms,
        user: &UserId,
        upload: CrossSigningUpload,
    ) -> Result<(), E2eeError> {
        let _guard = lock(&self.keys_lock);
        let master = match &upload.master_key {
            Some(raw) => Some(check_cross_signing_key(user, raw, MASTER)?),
            None => self
                .cross_signing_key(user, MASTER)?
                .and_then(|object| cross_signing_public(&object).map(|public| (object, public))),
        };
        let mut batch = WriteBatch::new();
        for (raw, usage) in [
            (&upload.self_signing_key, SELF_SIGNING),
            (&upload.user_signing_key, USER_SIGNING),
        ] {
            let Some(raw) = raw else { continue };
            let (object, _) = check_cross_signing_key(user, raw, usage)?;
            let Some((_, master_public)) = &master else {
                return Err(E2eeError::InvalidParam(format!(
                    "a {usage} key needs a master key"
                )));
            };
            check_signature(
                &object,
                user,
                &format!("ed25519:{master_public}"),
                master_public,
            )
            .map_err(|reason| {
                E2eeError::InvalidSignature(format!(
                    "the {usage} key is not signed by the master key: {reason}"
                ))
            })?;
            CROSS_SIGNING_KEYS.put(
                &mut batch,
                &(user.to_owned(), usage.to_owned()),
                &Json(object),
            );
        }
        if let (Some(_), Some((object, _))) = (&upload.master_key, master) {
            CROSS_SIGNING_KEYS.put(
                &mut batch,
                &(user.to_owned(), MASTER.to_owned()),
                &Json(object),
            );
        }
        if batch.is_empty() {
            return Ok(());
        }
        write_device_list_changes(rooms, &BTreeSet::from([user.to_owned()]), batch)?;
        Ok(())
    }

    /// Stores the signatures `signer` uploads: of its own devices by its self-signing key, of
    /// its own master key by its devices, and of other users' master keys by its user-signing
    /// key. Each signature is checked against the stored key it signs; the refused ones are
    /// returned as failures, the others stored and announced as a device list change (of the
    /// signed user, and of the signer for signatures of other users).
    pub fn upload_signatures(
        &self,
        rooms: &Rooms,
        signer: &UserId,
        signed: &BTreeMap<OwnedUserId, BTreeMap<String, Box<RawJsonValue>>>,
    ) -> Result<SignatureFailures, E2eeError> {
        self.upload_signatures_with(rooms, signer, signed, &BTreeMap::new())
    }

    /// [`E2ee::upload_signatures`], where the master keys of users of other servers (which
    /// this server does not store) are given in `remote_masters`, as their servers serve
    /// them. A signature of such a key is stored here and shown only to its signer: the
    /// signed user's server never learns it, as with a signature of a local user's key.
    pub fn upload_signatures_with(
        &self,
        rooms: &Rooms,
        signer: &UserId,
        signed: &BTreeMap<OwnedUserId, BTreeMap<String, Box<RawJsonValue>>>,
        remote_masters: &BTreeMap<OwnedUserId, CanonicalJsonObject>,
    ) -> Result<SignatureFailures, E2eeError> {
        let _guard = lock(&self.keys_lock);
        let mut failures = SignatureFailures::new();
        let mut batch = WriteBatch::new();
        let mut changed = BTreeSet::new();
        for (target, keys) in signed {
            for (key_id, json) in keys {
                let outcome = if target == signer {
                    self.own_signature(signer, key_id, json, &mut batch)
                } else {
                    let remote = remote_masters.get(target);
                    self.other_user_signature(signer, target, key_id, json, remote, &mut batch)
                };
                match outcome {
                    Ok(()) => {
                        // The signed user's keys now look different to the signer, whose
                        // clients refetch them on this change; the signer's own change
                        // tells its other devices.
                        changed.insert(target.clone());
                        changed.insert(signer.to_owned());
                    }
                    Err(error) => {
                        failures
                            .entry(target.clone())
                            .or_default()
                            .insert(key_id.clone(), error);
                    }
                }
            }
        }
        if !batch.is_empty() {
            write_device_list_changes(rooms, &changed, batch)?;
        }
        Ok(failures)
    }

    /// `object` (the master key of `target`, a user of another server, as its server serves
    /// it) with the signatures `viewer` made of it and stored here added, so the viewer sees
    /// its own verification of a remote user.
    pub fn with_own_signatures(
        &self,
        viewer: &UserId,
        target: &UserId,
        mut object: CanonicalJsonObject,
    ) -> Result<CanonicalJsonObject, E2eeError> {
        if let Some(public) = cross_signing_public(&object) {
            self.attach_signatures(&mut object, target, &public, &[viewer])?;
        }
        Ok(object)
    }

    /// A signature of one of `signer`'s own keys: a device (by the self-signing key) or the
    /// master key (by a device).
    fn own_signature(
        &self,
        signer: &UserId,
        key_id: &str,
        json: &RawJsonValue,
        batch: &mut WriteBatch,
    ) -> Result<(), serde_json::Value> {
        let uploaded = canonical_object(json, "signed key")
            .map_err(|err| failure("M_INVALID_PARAM", err.to_string()))?;
        let stored_err = |err: E2eeError| failure("M_UNKNOWN", err.to_string());
        let master = self.cross_signing_key(signer, MASTER).map_err(stored_err)?;
        let master_public = master.as_ref().and_then(cross_signing_public);
        if master_public.as_deref() == Some(key_id) {
            // The master key, signed by one of the user's devices.
            let master = master.unwrap_or_default();
            let mut stored_any = false;
            for (signing_key_id, signature) in signatures_by(&uploaded, signer) {
                let Some(device) = signing_key_id.strip_prefix("ed25519:") else {
                    continue;
                };
                if Some(device) == master_public.as_deref() {
                    continue;
                }
                let device_keys = DEVICE_KEYS
                    .get(self.store(), &(signer.to_owned(), device.into()))
                    .map_err(|err| stored_err(err.into()))?;
                let Some(device_public) =
                    device_keys.and_then(|Json(keys)| device_ed25519(&keys, device.into()))
                else {
                    continue;
                };
                check_given_signature(&master, &signature, &device_public)
                    .map_err(|reason| failure("M_INVALID_SIGNATURE", reason))?;
                SIGNATURES.put(
                    batch,
                    &(
                        signer.to_owned(),
                        key_id.to_owned(),
                        signer.to_owned(),
                        signing_key_id.clone(),
                    ),
                    &Json(signature),
                );
                stored_any = true;
            }
            return if stored_any {
                Ok(())
            } else {
                Err(failure(
                    "M_INVALID_SIGNATURE",
                    "no signature by a known device of the user",
                ))
            };
        }
        // One of the user's devices, signed by the self-signing key.
        let device_keys = DEVICE_KEYS
            .get(self.store(), &(signer.to_owned(), key_id.into()))
            .map_err(|err| stored_err(err.into()))?
            .map(|Json(keys)| keys)
            .ok_or_else(|| failure("M_NOT_FOUND", format!("no device or key {key_id}")))?;
        let device_public = device_ed25519(&device_keys, key_id.into())
            .ok_or_else(|| failure("M_INVALID_PARAM", "the device has no ed25519 key"))?;
        let ssk = self
            .cross_signing_key(signer, SELF_SIGNING)
            .map_err(stored_err)?
            .and_then(|object| cross_signing_public(&object))
            .ok_or_else(|| failure("M_INVALID_SIGNATURE", "the user has no self-signing key"))?;
        let ssk_id = format!("ed25519:{ssk}");
        let signature = signature_of(&uploaded, signer, &ssk_id)
            .ok_or_else(|| {
                failure(
                    "M_INVALID_SIGNATURE",
                    "no signature by the self-signing key",
                )
            })?
            .to_owned();
        check_given_signature(&device_keys, &signature, &ssk)
            .map_err(|reason| failure("M_INVALID_SIGNATURE", reason))?;
        SIGNATURES.put(
            batch,
            &(signer.to_owned(), device_public, signer.to_owned(), ssk_id),
            &Json(signature),
        );
        Ok(())
    }

    /// A signature of `target`'s master key by `signer`'s user-signing key.
    fn other_user_signature(
        &self,
        signer: &UserId,
        target: &UserId,
        key_id: &str,
        json: &RawJsonValue,
        remote_master: Option<&CanonicalJsonObject>,
        batch: &mut WriteBatch,
    ) -> Result<(), serde_json::Value> {
        let uploaded = canonical_object(json, "signed key")
            .map_err(|err| failure("M_INVALID_PARAM", err.to_string()))?;
        let stored_err = |err: E2eeError| failure("M_UNKNOWN", err.to_string());
        let stored = self.cross_signing_key(target, MASTER).map_err(stored_err)?;
        let master = stored
            .or_else(|| remote_master.cloned())
            .filter(|object| cross_signing_public(object).as_deref() == Some(key_id))
            .ok_or_else(|| {
                failure(
                    "M_NOT_FOUND",
                    format!("{target} has no master key {key_id}"),
                )
            })?;
        let usk = self
            .cross_signing_key(signer, USER_SIGNING)
            .map_err(stored_err)?
            .and_then(|object| cross_signing_public(&object))
            .ok_or_else(|| failure("M_INVALID_SIGNATURE", "the signer has no user-signing key"))?;
        let usk_id = format!("ed25519:{usk}");
        let signature = signature_of(&uploaded, signer, &usk_id)
            .ok_or_else(|| {
                failure(
                    "M_INVALID_SIGNATURE",
                    "no signature by the user-signing key",
                )
            })?
            .to_owned();
        check_given_signature(&master, &signature, &usk)
            .map_err(|reason| failure("M_INVALID_SIGNATURE", reason))?;
        SIGNATURES.put(
            batch,
            &(
                target.to_owned(),
                key_id.to_owned(),
                signer.to_owned(),
                usk_id,
            ),
            &Json(signature),
        );
        Ok(())
    }
}

/// The `(key id, signature)` pairs `signer` made on `object`.
fn signatures_by(object: &CanonicalJsonObject, signer: &UserId) -> Vec<(String, String)> {
    object_field(object, "signatures")
        .and_then(|signers| object_field(signers, signer.as_str()))
        .map(|keys| {
            keys.iter()
                .filter_map(|(id, value)| match value {
                    ruma::CanonicalJsonValue::String(signature) => {
                        Some((id.clone(), signature.clone()))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}
