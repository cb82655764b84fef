//! Login sessions: access, refresh and login tokens.
//!
//! Each login creates (or takes over) a device holding one access token and, if the client
//! asked, one refresh token. Tokens are stored under their SHA-256 hash only.
//!
//! Refresh uses strict rotation: a refresh token works once, and the access and refresh tokens
//! it returns replace the device's old ones in one batch. (The spec lets a server keep the old
//! refresh token valid until the new access token is first used, to survive a lost response;
//! the simpler strict form is safe and spec-compliant, at the price of a client that loses the
//! response having to log in again.)

use std::time::Duration;

use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::counters::{self, CounterDeltas};
use super::devices::{self, DEVICES, DeviceRecord};
use super::error::AccountError;
use super::settings::AccountSettings;
use super::tokens::{TokenHash, TokenKind, generate_token};
use super::{AccountsGuard, users};
use crate::storage::{Direction, Json, KeyRange, KvStore, Table, WriteBatch, catalogue};

pub(super) const ACCESS_TOKENS: Table<TokenHash, Json<AccessTokenRecord>> =
    Table::new(&catalogue::ACCESS_TOKENS);
pub(super) const REFRESH_TOKENS: Table<TokenHash, Json<RefreshTokenRecord>> =
    Table::new(&catalogue::REFRESH_TOKENS);
const LOGIN_TOKENS: Table<TokenHash, Json<LoginTokenRecord>> = Table::new(&catalogue::LOGIN_TOKENS);

/// An access token as stored (under its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenRecord {
    /// Whose token.
    pub user_id: OwnedUserId,
    /// The device it belongs to.
    pub device_id: OwnedDeviceId,
    /// Expiry, milliseconds since the Unix epoch; `None` never expires.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// Issued to a guest.
    #[serde(default)]
    pub is_guest: bool,
}

/// A refresh token as stored (under its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshTokenRecord {
    /// Whose token.
    pub user_id: OwnedUserId,
    /// The device it belongs to.
    pub device_id: OwnedDeviceId,
}

/// A login token (`m.login.token`) as stored (under its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginTokenRecord {
    /// Who it logs in.
    pub user_id: OwnedUserId,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// What to log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRequest {
    /// The (already authenticated) user.
    pub user_id: OwnedUserId,
    /// Reuse this device id; a new id is generated when `None`.
    pub device_id: Option<OwnedDeviceId>,
    /// Display name for a newly created device (ignored when the device exists).
    pub initial_display_name: Option<String>,
    /// Also issue a refresh token (and an expiring access token).
    pub want_refresh: bool,
}

impl LoginRequest {
    /// A login of `user` on a new device, without refresh token.
    pub fn new(user: &UserId) -> Self {
        Self {
            user_id: user.to_owned(),
            device_id: None,
            initial_display_name: None,
            want_refresh: false,
        }
    }

    /// Reuses `device`.
    pub fn device(mut self, device: impl Into<OwnedDeviceId>) -> Self {
        self.device_id = Some(device.into());
        self
    }

    /// Asks for a refresh token.
    pub fn refresh(mut self) -> Self {
        self.want_refresh = true;
        self
    }
}

/// The tokens a login or refresh hands to the client. The strings exist only here: they are
/// stored hashed.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginTokens {
    /// The new access token.
    pub access_token: String,
    /// The new refresh token, if one was asked for.
    pub refresh_token: Option<String>,
    /// How long the access token lives, if it expires.
    pub expires_in: Option<Duration>,
    /// The device the tokens belong to.
    pub device_id: OwnedDeviceId,
}

impl std::fmt::Debug for LoginTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("LoginTokens")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_in", &self.expires_in)
            .field("device_id", &self.device_id)
            .finish()
    }
}

/// Who a valid access token authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// The user.
    pub user_id: OwnedUserId,
    /// The device the token belongs to.
    pub device_id: OwnedDeviceId,
    /// A guest.
    pub is_guest: bool,
    /// A server administrator.
    pub is_admin: bool,
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What a new access token is: whose, and until when.
struct Grant<'a> {
    user: &'a UserId,
    device: &'a OwnedDeviceId,
    is_guest: bool,
    want_refresh: bool,
}

/// Fresh tokens for the grant, put into `batch` and recorded on the device `record`.
fn issue_into(
    batch: &mut WriteBatch,
    deltas: &mut CounterDeltas,
    settings: &AccountSettings,
    grant: &Grant<'_>,
    record: &mut DeviceRecord,
    now_ms: u64,
) -> LoginTokens {
    let lifetime = if grant.want_refresh {
        Some(settings.refresh_access_token_lifetime)
    } else {
        settings.access_token_lifetime
    };
    let access_token = generate_token(TokenKind::Access);
    let access_hash = TokenHash::of(&access_token);
    ACCESS_TOKENS.put(
        batch,
        &access_hash,
        &Json(AccessTokenRecord {
            user_id: grant.user.to_owned(),
            device_id: grant.device.clone(),
            expires_at_ms: lifetime.map(|lifetime| now_ms.saturating_add(duration_ms(lifetime))),
            is_guest: grant.is_guest,
        }),
    );
    deltas.add(counters::ACCESS_TOKENS, 1);
    record.access_token_hash = Some(access_hash);

    let refresh_token = grant
        .want_refresh
        .then(|| generate_token(TokenKind::Refresh));
    record.refresh_token_hash = refresh_token.as_deref().map(TokenHash::of);
    if let Some(hash) = &record.refresh_token_hash {
        REFRESH_TOKENS.put(
            batch,
            hash,
            &Json(RefreshTokenRecord {
                user_id: grant.user.to_owned(),
                device_id: grant.device.clone(),
            }),
        );
    }
    LoginTokens {
        access_token,
        refresh_token,
        expires_in: lifetime,
        device_id: grant.device.clone(),
    }
}

/// Logs in an already authenticated user: creates the device (or takes over an existing one,
/// whose old tokens stop working, as the spec requires) and issues its tokens, in one batch.
pub fn login(
    store: &dyn KvStore,
    guard: &AccountsGuard<'_>,
    settings: &AccountSettings,
    request: LoginRequest,
    now_ms: u64,
) -> Result<LoginTokens, AccountError> {
    let user_record = users::get_active(store, &request.user_id)?;
    let user = request.user_id;
    let device = request
        .device_id
        .unwrap_or_else(devices::generate_device_id);
    let mut batch = WriteBatch::new();
    let mut deltas = CounterDeltas::default();
    let mut record = match devices::get(store, &user, &device)? {
        Some(existing) => {
            devices::remove_tokens_into(&mut batch, &mut deltas, &existing);
            existing
        }
        None => DeviceRecord {
            display_name: request.initial_display_name,
            created_at_ms: now_ms,
            ..DeviceRecord::default()
        },
    };
    let grant = Grant {
        user: &user,
        device: &device,
        is_guest: user_record.is_guest,
        want_refresh: request.want_refresh,
    };
    let tokens = issue_into(
        &mut batch,
        &mut deltas,
        settings,
        &grant,
        &mut record,
        now_ms,
    );
    DEVICES.put(&mut batch, &(user.clone(), device.clone()), &Json(record));
    deltas.write_into(store, guard, &mut batch)?;
    store.write(batch)?;
    tracing::info!(user = %user, device = %device, refresh = request.want_refresh, "logged in");
    Ok(tokens)
}

/// The user an access token authenticates. Read-only: takes no lock.
///
/// An expired token gives [`AccountError::TokenExpired`] (a soft logout: the client may
/// refresh); an unknown one [`AccountError::UnknownToken`].
pub fn authenticate(
    store: &dyn KvStore,
    access_token: &str,
    now_ms: u64,
) -> Result<AuthenticatedUser, AccountError> {
    let Json(token) = ACCESS_TOKENS
        .get(store, &TokenHash::of(access_token))?
        .ok_or(AccountError::UnknownToken)?;
    if token.expires_at_ms.is_some_and(|expiry| expiry <= now_ms) {
        return Err(AccountError::TokenExpired);
    }
    // Deactivation deletes the tokens in the same batch, so a missing or deactivated user here
    // means a damaged database; refuse rather than trust the token.
    let user = match users::get(store, &token.user_id)? {
        Some(user) if !user.deactivated => user,
        _ => return Err(AccountError::UnknownToken),
    };
    Ok(AuthenticatedUser {
        user_id: token.user_id,
        device_id: token.device_id,
        is_guest: token.is_guest,
        is_admin: user.is_admin,
    })
}

/// Exchanges a refresh token for a new access and refresh token pair; the old pair stops
/// working in the same batch (strict rotation).
pub fn refresh(
    store: &dyn KvStore,
    guard: &AccountsGuard<'_>,
    settings: &AccountSettings,
    refresh_token: &str,
    now_ms: u64,
) -> Result<LoginTokens, AccountError> {
    let hash = TokenHash::of(refresh_token);
    let Json(token) = REFRESH_TOKENS
        .get(store, &hash)?
        .ok_or(AccountError::UnknownToken)?;
    let user = users::get_active(store, &token.user_id).map_err(|err| match err {
        AccountError::UserNotFound | AccountError::UserDeactivated => AccountError::UnknownToken,
        other => other,
    })?;
    let mut record = devices::get(store, &token.user_id, &token.device_id)?
        .filter(|record| record.refresh_token_hash == Some(hash))
        .ok_or(AccountError::UnknownToken)?;
    let mut batch = WriteBatch::new();
    let mut deltas = CounterDeltas::default();
    devices::remove_tokens_into(&mut batch, &mut deltas, &record);
    let grant = Grant {
        user: &token.user_id,
        device: &token.device_id,
        is_guest: user.is_guest,
        want_refresh: true,
    };
    let tokens = issue_into(
        &mut batch,
        &mut deltas,
        settings,
        &grant,
        &mut record,
        now_ms,
    );
    DEVICES.put(
        &mut batch,
        &(token.user_id.clone(), token.device_id.clone()),
        &Json(record),
    );
    deltas.write_into(store, guard, &mut batch)?;
    store.write(batch)?;
    Ok(tokens)
}

/// Logs out one device: deletes it with its tokens (the spec's logout deletes the device). A
/// device already gone is not an error.
pub fn logout(
    store: &dyn KvStore,
    guard: &AccountsGuard<'_>,
    user: &UserId,
    device: &ruma::DeviceId,
) -> Result<(), AccountError> {
    match devices::delete(store, guard, user, device) {
        Ok(()) | Err(AccountError::DeviceNotFound) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Logs out every device of `user`, in one batch. Returns how many devices were deleted.
pub fn logout_all(
    store: &dyn KvStore,
    guard: &AccountsGuard<'_>,
    user: &UserId,
) -> Result<usize, AccountError> {
    let mut batch = WriteBatch::new();
    let mut deltas = CounterDeltas::default();
    let removed = devices::remove_all_into(store, &mut batch, &mut deltas, user, None)?;
    deltas.write_into(store, guard, &mut batch)?;
    store.write(batch)?;
    tracing::info!(user = %user, devices = removed, "logged out all devices");
    Ok(removed)
}

/// Number of stored access tokens, including expired ones that can still be refreshed. Read
/// from a counter: no scan.
pub fn count_active_access_tokens(store: &dyn KvStore) -> Result<u64, AccountError> {
    Ok(counters::get(store, counters::ACCESS_TOKENS)?)
}

/// A single-use login token (`m.login.token`) for `user`, valid for `ttl`.
pub fn create_login_token(
    store: &dyn KvStore,
    _guard: &AccountsGuard<'_>,
    user: &UserId,
    ttl: Duration,
    now_ms: u64,
) -> Result<String, AccountError> {
    users::get_active(store, user)?;
    let token = generate_token(TokenKind::Login);
    let record = LoginTokenRecord {
        user_id: user.to_owned(),
        expires_at_ms: now_ms.saturating_add(duration_ms(ttl)),
    };
    let mut batch = WriteBatch::new();
    LOGIN_TOKENS.put(&mut batch, &TokenHash::of(&token), &Json(record));
    store.write(batch)?;
    Ok(token)
}

/// Consumes a login token: it is deleted whatever the outcome, so it works at most once.
/// Unknown, expired, or for a user deactivated since: [`AccountError::UnknownToken`] (the
/// login endpoint answers `M_FORBIDDEN` for all three).
pub fn consume_login_token(
    store: &dyn KvStore,
    _guard: &AccountsGuard<'_>,
    token: &str,
    now_ms: u64,
) -> Result<OwnedUserId, AccountError> {
    let hash = TokenHash::of(token);
    let Json(record) = LOGIN_TOKENS
        .get(store, &hash)?
        .ok_or(AccountError::UnknownToken)?;
    let mut batch = WriteBatch::new();
    LOGIN_TOKENS.delete(&mut batch, &hash);
    store.write(batch)?;
    if record.expires_at_ms <= now_ms {
        return Err(AccountError::UnknownToken);
    }
    match users::get(store, &record.user_id)? {
        Some(user) if !user.deactivated => Ok(record.user_id),
        _ => Err(AccountError::UnknownToken),
    }
}

/// Deletes expired login tokens (a periodic job); returns how many.
pub fn purge_expired_login_tokens(
    store: &dyn KvStore,
    _guard: &AccountsGuard<'_>,
    now_ms: u64,
) -> Result<usize, AccountError> {
    let mut batch = WriteBatch::new();
    for (hash, Json(record)) in
        LOGIN_TOKENS.collect(store, KeyRange::all(), Direction::Forward, None)?
    {
        if record.expires_at_ms <= now_ms {
            LOGIN_TOKENS.delete(&mut batch, &hash);
        }
    }
    let purged = batch.len();
    if purged > 0 {
        store.write(batch)?;
    }
    Ok(purged)
}

#[cfg(test)]
mod tests;
