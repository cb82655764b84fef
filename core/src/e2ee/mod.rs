//! End-to-end encryption support: what the server stores and relays for clients' crypto.
//!
//! - [`keys`]: device identity keys (checked against the uploading device and its own
//!   signature), one-time keys (each claimed once, atomically) and fallback keys (handed out
//!   when one-time keys run out, then marked used), and key queries.
//! - [`signing`]: cross-signing keys (self-signing and user-signing keys signed by the master
//!   key) and the signatures users upload for their devices and for other users' master keys,
//!   each checked against the stored key it signs.
//! - [`device_lists`]: every change of a user's devices or keys is recorded at the next
//!   server-wide stream position (`Rooms::write_at_next_position_for`, which wakes the waiting
//!   syncs of the user and their room mates), so one sync token position covers it; [`E2ee::device_list_changes`] turns a range of
//!   positions into the `changed` and `left` lists of a user.
//! - [`to_device`]: per-device inboxes at stream positions, idempotent per sending device and
//!   transaction id; messages are deleted once a client's next sync acknowledges them.
//! - [`backup`]: server-side key backup versions and room keys with the spec's replacement
//!   rules.
//! - [`dehydrated`]: MSC3814 dehydrated devices.
//!
//! Devices deleted by the accounts service leave a row in `e2ee_device_removals` in their own
//! batch; [`E2ee::process_device_removals`] removes their keys and inbox and announces the
//! change.
//!
//! Remote users' device keys, learnt over federation, are stored beside local users' ones
//! ([`remote`]); fetching them is the federation layer's business.

pub mod backup;
pub mod dehydrated;
pub mod device_lists;
mod error;
pub mod keys;
pub mod remote;
pub mod signing;
mod tables;
pub mod to_device;
mod verify;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ruma::{OwnedDeviceId, UserId};
use tokio::sync::watch;

pub use self::backup::{BackupCounts, BackupInfo, BackupKeys, BackupScope, KeyRank};
pub use self::dehydrated::{DehydratedDevice, DehydratedEvents};
pub use self::device_lists::DeviceListChanges;
pub use self::error::E2eeError;
pub use self::keys::{ClaimedKeys, KeyClaims, KeyUpload, QueriedKeys};
pub use self::signing::{CrossSigningUpload, SignatureFailures};
pub use self::to_device::{SendOutcome, ToDeviceMessage};
use crate::rooms::graph::StreamPosition;
use crate::storage::KvStore;

/// The usage name of a master key in storage.
const MASTER: &str = "master";
/// The usage name of a self-signing key in storage.
const SELF_SIGNING: &str = "self_signing";
/// The usage name of a user-signing key in storage.
const USER_SIGNING: &str = "user_signing";

/// The E2EE service: key storage, device lists, to-device inboxes, key backup and dehydrated
/// devices. Constructed once by the server and shared. Writes that clients see through sync
/// take the rooms service, whose stream they are written at.
pub struct E2ee {
    store: Arc<dyn KvStore>,
    /// The latest published stream position (to serve nothing a sync token cannot cover).
    published: watch::Receiver<StreamPosition>,
    /// Serialises the read-modify-write changes of keys (uploads, claims, signatures), so a
    /// one-time key is never handed out twice.
    keys_lock: Mutex<()>,
    /// Serialises changes of key backups (counts and etags are read, then written).
    backup_lock: Mutex<()>,
    /// To-device messages stored and not yet delivered and acknowledged.
    to_device_pending: AtomicI64,
    /// To-device messages queued since start-up.
    to_device_queued: AtomicU64,
}

impl fmt::Debug for E2ee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("E2ee")
            .field("to_device_pending", &self.to_device_pending)
            .finish_non_exhaustive()
    }
}

fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl E2ee {
    /// The service over `store`, following the stream positions `published` announces
    /// (`Rooms::subscribe`).
    pub fn new(store: Arc<dyn KvStore>, published: watch::Receiver<StreamPosition>) -> Self {
        let pending = to_device_pending_at_start(&*store);
        Self {
            store,
            published,
            keys_lock: Mutex::new(()),
            backup_lock: Mutex::new(()),
            to_device_pending: AtomicI64::new(pending),
            to_device_queued: AtomicU64::new(0),
        }
    }

    fn store(&self) -> &dyn KvStore {
        &*self.store
    }

    /// The devices a message to `*` reaches: the user's devices and its dehydrated device.
    pub fn devices_for_fan_out(&self, user: &UserId) -> Result<Vec<OwnedDeviceId>, E2eeError> {
        let mut devices: Vec<OwnedDeviceId> = crate::accounts::devices::list(self.store(), user)?
            .into_iter()
            .map(|(device, _)| device)
            .collect();
        if let Some(record) = self.dehydrated_record(user)? {
            devices.push(record.device_id);
        }
        Ok(devices)
    }
}

fn to_device_pending_at_start(store: &dyn KvStore) -> i64 {
    E2ee::count_to_device(store)
}

/// Removes the keys and inboxes of deleted devices and announces the changes: first what a
/// crash left pending, then after every deletion the accounts service announces. Runs until
/// the server stops.
pub async fn run_device_cleanup(services: Arc<crate::Services>) {
    loop {
        let worker = Arc::clone(&services);
        let round =
            tokio::task::spawn_blocking(move || worker.e2ee.process_device_removals(&worker.rooms))
                .await;
        match round {
            // Something was pending: look again until nothing is.
            Ok(Ok(handled)) if handled > 0 => continue,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "removing the keys of deleted devices failed; retrying");
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "the device cleanup task failed; retrying");
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                continue;
            }
        }
        // A deletion made while the round ran left a permit: this returns at once then.
        services.accounts.device_removals().notified().await;
    }
}

/// How long the device cleanup waits after a failure before trying again.
const RETRY_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(5);
