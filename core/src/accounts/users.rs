//! Local user accounts: user id rules, registration, passwords, deactivation and profile.

use std::fmt;

use rand::Rng as _;
use ruma::{DeviceId, OwnedUserId, ServerName, UserId};
use serde::{Deserialize, Serialize};

use super::counters::{self, CounterDeltas};
use super::error::AccountError;
use super::settings::AccountSettings;
use super::{AccountsGuard, devices, registration_tokens};
use crate::storage::{Json, KvStore, Table, WriteBatch, catalogue};

const USERS: Table<OwnedUserId, Json<UserRecord>> = Table::new(&catalogue::USERS);

/// Longest user id, `@` and domain included, in bytes (spec appendix "User Identifiers").
pub const MAX_USER_ID_BYTES: usize = 255;

/// A local account as stored. Every field has a default so rows written by an older version
/// stay readable after a field is added.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserRecord {
    /// PHC string of the argon2id hash; `None` for accounts that cannot log in by password.
    pub password_hash: Option<String>,
    /// Registration time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Guest account (limited access, numeric localpart).
    pub is_guest: bool,
    /// Server administrator.
    pub is_admin: bool,
    /// Deactivated: cannot log in, holds no devices or tokens.
    pub deactivated: bool,
    /// Global display name.
    pub displayname: Option<String>,
    /// Global avatar (an `mxc://` URI).
    pub avatar_url: Option<String>,
    /// The application service that registered this user, if any.
    pub appservice_id: Option<String>,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash stays out of logs: it is the input of an offline guessing attack.
        f.debug_struct("UserRecord")
            .field("has_password", &self.password_hash.is_some())
            .field("created_at_ms", &self.created_at_ms)
            .field("is_guest", &self.is_guest)
            .field("is_admin", &self.is_admin)
            .field("deactivated", &self.deactivated)
            .field("displayname", &self.displayname)
            .field("avatar_url", &self.avatar_url)
            .field("appservice_id", &self.appservice_id)
            .finish()
    }
}

/// Who an account is for; decides which localparts it may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterKind {
    /// An ordinary user.
    User,
    /// A guest: always gets a generated numeric localpart.
    Guest,
    /// A user in an application service's namespace: may use `_`-prefixed localparts.
    AppService {
        /// The registering application service's id.
        id: String,
    },
}

/// What to register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The wanted localpart; `None` (or any guest) gets a generated numeric one.
    pub localpart: Option<String>,
    /// PHC hash from [`hash_password`](super::hash_password), hashed beforehand on a blocking
    /// thread; `None` for accounts without a password.
    pub password_hash: Option<String>,
    /// Ordinary user, guest or application-service user.
    pub kind: RegisterKind,
    /// Make the user a server administrator.
    pub admin: bool,
    /// Initial display name; defaults to the localpart.
    pub displayname: Option<String>,
    /// A registration token reserved for this registration: its use is completed in the same
    /// batch that creates the account.
    pub registration_token: Option<String>,
}

impl RegisterRequest {
    /// An ordinary user with `localpart` and a password hash, everything else default.
    pub fn user(localpart: impl Into<String>, password_hash: Option<String>) -> Self {
        Self {
            localpart: Some(localpart.into()),
            password_hash,
            kind: RegisterKind::User,
            admin: false,
            displayname: None,
            registration_token: None,
        }
    }

    /// A guest.
    pub fn guest() -> Self {
        Self {
            localpart: None,
            password_hash: None,
            kind: RegisterKind::Guest,
            admin: false,
            displayname: None,
            registration_token: None,
        }
    }
}

/// A user's public profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Display name.
    pub displayname: Option<String>,
    /// Avatar `mxc://` URI.
    pub avatar_url: Option<String>,
}

/// Account counts for metrics, maintained exactly in the batches that change them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserCounts {
    /// Every account ever registered, guests and deactivated ones included.
    pub total: u64,
    /// Guest accounts.
    pub guests: u64,
    /// Deactivated accounts.
    pub deactivated: u64,
}

/// Checks a localpart wanted at registration and builds the user id.
///
/// Beyond the spec grammar (`a-z 0-9 . _ = - / +`, user id at most 255 bytes), two reserved
/// shapes, as Synapse does: a leading `_` belongs to application services, and all-digit
/// localparts to generated (guest) ids.
pub fn validate_localpart(
    server_name: &ServerName,
    localpart: &str,
    kind: &RegisterKind,
) -> Result<OwnedUserId, AccountError> {
    let invalid = |reason: &str| Err(AccountError::InvalidUsername(reason.to_owned()));
    if localpart.is_empty() {
        return invalid("user id cannot be empty");
    }
    if localpart.bytes().any(|b| b.is_ascii_uppercase()) {
        return invalid("user id may not contain upper-case characters");
    }
    let allowed =
        |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+');
    if !localpart.bytes().all(allowed) {
        return invalid("user id can only contain the characters a-z, 0-9 and . _ = - / +");
    }
    if localpart.starts_with('_') && !matches!(kind, RegisterKind::AppService { .. }) {
        return invalid("user ids starting with _ are reserved for application services");
    }
    if localpart.bytes().all(|b| b.is_ascii_digit()) && *kind != RegisterKind::Guest {
        return invalid("numeric user ids are reserved for guest users");
    }
    let user_id = format!("@{localpart}:{server_name}");
    if user_id.len() > MAX_USER_ID_BYTES {
        return invalid("user id may not be longer than 255 bytes");
    }
    OwnedUserId::try_from(user_id).map_err(|err| AccountError::InvalidUsername(err.to_string()))
}

/// Whether `localpart` may be registered: `Err` when it breaks the rules, `Ok(false)` when
/// taken.
pub fn is_available(
    store: &dyn KvStore,
    settings: &AccountSettings,
    localpart: &str,
) -> Result<bool, AccountError> {
    let user_id = validate_localpart(&settings.server_name, localpart, &RegisterKind::User)?;
    Ok(!USERS.contains(store, &user_id)?)
}

/// The user id a login identifier names: a full user id of this server or a bare localpart.
/// Upper case is folded, since registration only creates lower-case localparts.
pub fn parse_login_user(
    settings: &AccountSettings,
    identifier: &str,
) -> Result<OwnedUserId, AccountError> {
    let text = if identifier.starts_with('@') {
        identifier.to_ascii_lowercase()
    } else {
        format!(
            "@{}:{}",
            identifier.to_ascii_lowercase(),
            settings.server_name
        )
    };
    let user_id = OwnedUserId::try_from(text).map_err(|_| AccountError::InvalidPassword)?;
    // Server names are case-insensitive; compare folded.
    if !user_id
        .server_name()
        .as_str()
        .eq_ignore_ascii_case(settings.server_name.as_str())
    {
        return Err(AccountError::InvalidPassword);
    }
    Ok(user_id)
}

fn generated_localpart() -> String {
    // Numeric localparts are reserved for generated ids, so these never collide with a chosen
    // name; random rather than sequential so ids do not reveal how many accounts exist.
    rand::rng()
        .random_range(100_000_000_u64..1_000_000_000_000)
        .to_string()
}

/// Registers a new account and returns its user id.
pub fn register(
    store: &dyn KvStore,
    guard: &AccountsGuard<'_>,
    settings: &AccountSettings,
    request: RegisterRequest,
    now_ms: u64,
) -> Result<OwnedUserId, AccountError> {
    let generate = request.localpart.is_none() || request.kind == RegisterKind::Guest;
    let user_id = if generate {
        let mut attempts = 0;
        loop {
            let candidate = validate_localpart(
                &settings.server_name,
                &generated_localpart(),
                &RegisterKind::Guest,
            )?;
            if !USERS.contains(store, &candidate)? {
                break candidate;
            }
            attempts += 1;
            if attempts >= 16 {
                return Err(AccountError::UserInUse);
            }
        }
    } else {
        let localpart = request.localpart.as_deref().unwrap_or_default();
        let user_id = validate_localpart(&settings.server_name, localpart, &request.kind)?;
        if USERS.contains(store, &user_id)? {
            return Err(AccountError::UserInUse);
        }
        user_id
    };

    let is_guest = request.kind == RegisterKind::Guest;
    let record = UserRecord {
        password_hash: request.password_hash,
        created_at_ms: now_ms,
        is_guest,
        is_admin: request.admin,
        deactivated: false,
        displayname: Some(
            request
                .displayname
                .unwrap_or_else(|| user_id.localpart().to_owned()),
        ),
        avatar_url: None,
        appservice_id: match request.kind {
            RegisterKind::AppService { id } => Some(id),
            RegisterKind::User | RegisterKind::Guest => None,
        },
    };

    let mut batch = WriteBatch::new();
    USERS.put(&mut batch, &user_id, &Json(record));
    if let Some(token) = &request.registration_token {
        registration_tokens::complete_into(store, guard, &mut batch, token)?;
    }
    let mut deltas = CounterDeltas::default();
    deltas.add(counters::USERS, 1);
    if is_guest {
        deltas.add(counters::GUESTS, 1);
    }
    deltas.write_into(store, guard, &mut batch)?;
    store.write(batch)?;
    tracing::info!(user = %user_id, guest = is_guest, "registered user");
    Ok(user_id)
}

/// The account of `user`, if it exists.
pub fn get(store: &dyn KvStore, user: &UserId) -> Result<Option<UserRecord>, AccountError> {
    Ok(USERS
        .get(store, &user.to_owned())?
        .map(|Json(record)| record))
}

/// The account of `user`, which must exist and be active.
pub fn get_active(store: &dyn KvStore, user: &UserId) -> Result<UserRecord, AccountError> {
    let record = get(store, user)?.ok_or(AccountError::UserNotFound)?;
    if record.deactivated {
        return Err(AccountError::UserDeactivated);
    }
    Ok(record)
}

fn write_record(
    store: &dyn KvStore,
    user: &UserId,
    record: UserRecord,
) -> Result<(), AccountError> {
    let mut batch = WriteBatch::new();
    USERS.put(&mut batch, &user.to_owned(), &Json(record));
    store.write(batch)?;
    Ok(())
}

/// Changes `user`'s password hash (`None` removes the password). With `logout_others`, every
/// device except `keep_device` is deleted with its tokens, in the same batch.
pub fn set_password(
    store: &dyn KvStore,
    guard: &AccountsGuard<'_>,
    user: &UserId,
    new_hash: Option<String>,
    keep_device: Option<&DeviceId>,
    logout_others: bool,
) -> Result<(), AccountError> {
    let mut record = get_active(store, user)?;
    record.password_hash = new_hash;
    let mut batch = WriteBatch::new();
    USERS.put(&mut batch, &user.to_owned(), &Json(record));
    let mut deltas = CounterDeltas::default();
    if logout_others {
        devices::remove_all_into(store, &mut batch, &mut deltas, user, keep_device)?;
    }
    deltas.write_into(store, guard, &mut batch)?;
    store.write(batch)?;
    tracing::info!(user = %user, logout_others, "password changed");
    Ok(())
}

/// Deactivates `user`: flags the account, removes its password, and deletes every device and
/// token, all in one batch. With `erase`, the profile is cleared as well (the spec's `erase`
/// request); otherwise it is kept. Deactivating a deactivated account changes nothing.
///
/// Leaving rooms and removing third-party ids belong to the callers that own those domains.
pub fn deactivate(
    store: &dyn KvStore,
    guard: &AccountsGuard<'_>,
    user: &UserId,
    erase: bool,
) -> Result<(), AccountError> {
    let mut record = get(store, user)?.ok_or(AccountError::UserNotFound)?;
    let newly_deactivated = !record.deactivated;
    record.deactivated = true;
    record.password_hash = None;
    if erase {
        record.displayname = None;
        record.avatar_url = None;
    }
    let mut batch = WriteBatch::new();
    USERS.put(&mut batch, &user.to_owned(), &Json(record));
    let mut deltas = CounterDeltas::default();
    devices::remove_all_into(store, &mut batch, &mut deltas, user, None)?;
    if newly_deactivated {
        deltas.add(counters::DEACTIVATED, 1);
    }
    deltas.write_into(store, guard, &mut batch)?;
    store.write(batch)?;
    tracing::info!(user = %user, erase, "deactivated user");
    Ok(())
}

/// Sets (or with `None` removes) `user`'s display name.
pub fn set_displayname(
    store: &dyn KvStore,
    _guard: &AccountsGuard<'_>,
    user: &UserId,
    displayname: Option<String>,
) -> Result<(), AccountError> {
    let mut record = get(store, user)?.ok_or(AccountError::UserNotFound)?;
    record.displayname = displayname;
    write_record(store, user, record)
}

/// Sets (or with `None` removes) `user`'s avatar URL.
pub fn set_avatar_url(
    store: &dyn KvStore,
    _guard: &AccountsGuard<'_>,
    user: &UserId,
    avatar_url: Option<String>,
) -> Result<(), AccountError> {
    let mut record = get(store, user)?.ok_or(AccountError::UserNotFound)?;
    record.avatar_url = avatar_url;
    write_record(store, user, record)
}

/// Grants or revokes server administration.
pub fn set_admin(
    store: &dyn KvStore,
    _guard: &AccountsGuard<'_>,
    user: &UserId,
    is_admin: bool,
) -> Result<(), AccountError> {
    let mut record = get(store, user)?.ok_or(AccountError::UserNotFound)?;
    record.is_admin = is_admin;
    write_record(store, user, record)
}

/// `user`'s profile.
pub fn profile(store: &dyn KvStore, user: &UserId) -> Result<Profile, AccountError> {
    let record = get(store, user)?.ok_or(AccountError::UserNotFound)?;
    Ok(Profile {
        displayname: record.displayname,
        avatar_url: record.avatar_url,
    })
}

/// Account counts, read from the counters (no scan).
pub fn count_users(store: &dyn KvStore) -> Result<UserCounts, AccountError> {
    Ok(UserCounts {
        total: counters::get(store, counters::USERS)?,
        guests: counters::get(store, counters::GUESTS)?,
        deactivated: counters::get(store, counters::DEACTIVATED)?,
    })
}

#[cfg(test)]
mod tests;
