//! The accounts domain's error type.

use std::time::Duration;

use crate::storage::StorageError;

/// What can go wrong in an accounts operation.
///
/// Each variant maps to one Matrix errcode in the API layer; the mapping noted on a variant is
/// the intended one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The requested localpart breaks the user id grammar or is reserved
    /// (`M_INVALID_USERNAME`, 400).
    #[error("invalid username: {0}")]
    InvalidUsername(String),
    /// The user id is taken (`M_USER_IN_USE`, 400).
    #[error("user id already taken")]
    UserInUse,
    /// No such local user (`M_NOT_FOUND`, 404, where the endpoint reveals existence).
    #[error("no such user")]
    UserNotFound,
    /// The account is deactivated (`M_USER_DEACTIVATED`, 403).
    #[error("this account has been deactivated")]
    UserDeactivated,
    /// Wrong user or password, or the account has no password (`M_FORBIDDEN`, 403).
    #[error("invalid username or password")]
    InvalidPassword,
    /// The new password breaks the password policy (`M_WEAK_PASSWORD`, 400).
    #[error("password too weak: {0}")]
    WeakPassword(String),
    /// The token is unknown or revoked (`M_UNKNOWN_TOKEN`, 401, `soft_logout: false`).
    #[error("unknown or revoked token")]
    UnknownToken,
    /// The access token expired; the client may refresh it
    /// (`M_UNKNOWN_TOKEN`, 401, `soft_logout: true`).
    #[error("access token expired")]
    TokenExpired,
    /// No such device for this user (`M_NOT_FOUND`, 404).
    #[error("no such device")]
    DeviceNotFound,
    /// The registration token does not exist, expired or is used up (`M_UNAUTHORIZED`, 401,
    /// inside the user-interactive auth flow).
    #[error("invalid registration token")]
    RegistrationTokenInvalid,
    /// An administrator asked for a registration token that does not exist (`M_NOT_FOUND`, 404).
    #[error("no such registration token")]
    RegistrationTokenNotFound,
    /// An administrator tried to create a registration token that exists
    /// (`M_INVALID_PARAM`, 400).
    #[error("registration token already exists")]
    RegistrationTokenExists,
    /// A parameter is malformed (`M_INVALID_PARAM`, 400).
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
    /// Too many attempts; retry later (`M_LIMIT_EXCEEDED`, 429).
    #[error("too many attempts, retry in {retry_after:?}")]
    RateLimited {
        /// How long until an attempt may succeed.
        retry_after: Duration,
    },
    /// The user-interactive auth session is unknown or expired (`M_UNKNOWN`, 400).
    #[error("unknown user-interactive auth session")]
    UiaaSessionUnknown,
    /// The session was started for a different request or user (`M_FORBIDDEN`, 403).
    #[error("the request changed during the user-interactive auth session")]
    UiaaSessionMismatch,
    /// The stage is not part of any flow offered in this session (`M_UNRECOGNIZED`, 400).
    #[error("auth stage {0} is not offered in this session")]
    UiaaStageNotOffered(String),
    /// Password hashing failed: bad parameters or an internal argon2 error (500).
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// The store failed (500).
    #[error(transparent)]
    Storage(#[from] StorageError),
}
