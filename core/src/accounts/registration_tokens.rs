//! Registration tokens (`m.login.registration_token`), with Synapse's model and admin
//! semantics: a token may limit its uses and expire; `pending` counts registrations that passed
//! the token stage but have not finished, `completed` those that did.
//!
//! Every change is a read-modify-write under the accounts lock (the [`AccountsGuard`]
//! parameter), so two registrations racing for the last use cannot both get it, and completing
//! a use can join the batch that creates the account.

use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::AccountsGuard;
use super::error::AccountError;
use crate::storage::{Direction, Json, KeyRange, KvStore, Table, WriteBatch, catalogue};

const REGISTRATION_TOKENS: Table<String, Json<TokenRecord>> =
    Table::new(&catalogue::REGISTRATION_TOKENS);

/// Characters a token may contain (Synapse's rule, URL-safe without escaping).
const TOKEN_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-";
/// Longest token.
pub const MAX_TOKEN_LENGTH: usize = 64;
/// Length of generated tokens when none is asked for.
pub const DEFAULT_TOKEN_LENGTH: usize = 16;

/// A registration token with its counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationToken {
    /// The token text.
    pub token: String,
    /// How many registrations it allows; `None` is unlimited.
    pub uses_allowed: Option<u32>,
    /// Registrations that passed the token stage and have not finished.
    pub pending: u32,
    /// Registrations completed with it.
    pub completed: u32,
    /// Expiry, milliseconds since the Unix epoch; `None` never expires.
    pub expiry_time: Option<u64>,
}

impl RegistrationToken {
    /// Whether the token can still start a registration at `now_ms`: not expired, and uses
    /// left counting the pending ones.
    pub fn is_valid_at(&self, now_ms: u64) -> bool {
        let expired = self.expiry_time.is_some_and(|expiry| expiry <= now_ms);
        let used = u64::from(self.pending) + u64::from(self.completed);
        let used_up = self
            .uses_allowed
            .is_some_and(|allowed| used >= u64::from(allowed));
        !expired && !used_up
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct TokenRecord {
    uses_allowed: Option<u32>,
    pending: u32,
    completed: u32,
    expiry_time: Option<u64>,
}

impl From<RegistrationToken> for TokenRecord {
    fn from(token: RegistrationToken) -> Self {
        Self {
            uses_allowed: token.uses_allowed,
            pending: token.pending,
            completed: token.completed,
            expiry_time: token.expiry_time,
        }
    }
}

impl TokenRecord {
    fn into_token(self, token: String) -> RegistrationToken {
        RegistrationToken {
            token,
            uses_allowed: self.uses_allowed,
            pending: self.pending,
            completed: self.completed,
            expiry_time: self.expiry_time,
        }
    }
}

/// A token to create (the admin API's request body).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewRegistrationToken {
    /// The token text; generated when `None`.
    pub token: Option<String>,
    /// Length of a generated token (1 to 64, default 16).
    pub length: Option<usize>,
    /// How many registrations it allows; `None` is unlimited.
    pub uses_allowed: Option<u32>,
    /// Expiry, milliseconds since the Unix epoch; must not be in the past.
    pub expiry_time: Option<u64>,
}

/// Changes to a token: an outer `None` leaves a field alone, `Some(None)` makes it unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrationTokenUpdate {
    /// New use limit.
    pub uses_allowed: Option<Option<u32>>,
    /// New expiry.
    pub expiry_time: Option<Option<u64>>,
}

/// Checks a token's text: 1 to 64 characters of `[A-Za-z0-9._~-]`.
pub fn validate_token(token: &str) -> Result<(), AccountError> {
    if token.is_empty() || token.len() > MAX_TOKEN_LENGTH {
        return Err(AccountError::InvalidParam(format!(
            "token must be 1 to {MAX_TOKEN_LENGTH} characters long"
        )));
    }
    if !token.bytes().all(|b| TOKEN_CHARS.contains(&b)) {
        return Err(AccountError::InvalidParam(
            "token may only contain A-Z, a-z, 0-9, '.', '_', '~' and '-'".to_owned(),
        ));
    }
    Ok(())
}

fn generate(length: usize) -> String {
    let mut rng = rand::rng();
    (0..length)
        .map(|_| {
            let index = rng.random_range(0..TOKEN_CHARS.len());
            char::from(TOKEN_CHARS.get(index).copied().unwrap_or(b'A'))
        })
        .collect()
}

fn check_expiry(expiry_time: Option<u64>, now_ms: u64) -> Result<(), AccountError> {
    if expiry_time.is_some_and(|expiry| expiry < now_ms) {
        return Err(AccountError::InvalidParam(
            "expiry_time must not be in the past".to_owned(),
        ));
    }
    Ok(())
}

fn write(store: &dyn KvStore, token: &str, record: &TokenRecord) -> Result<(), AccountError> {
    let mut batch = WriteBatch::new();
    REGISTRATION_TOKENS.put(&mut batch, &token.to_owned(), &Json(record.clone()));
    store.write(batch)?;
    Ok(())
}

fn load(store: &dyn KvStore, token: &str) -> Result<Option<TokenRecord>, AccountError> {
    Ok(REGISTRATION_TOKENS
        .get(store, &token.to_owned())?
        .map(|Json(record)| record))
}

/// Creates a token.
pub fn create(
    store: &dyn KvStore,
    _guard: &AccountsGuard<'_>,
    new: NewRegistrationToken,
    now_ms: u64,
) -> Result<RegistrationToken, AccountError> {
    check_expiry(new.expiry_time, now_ms)?;
    let token = match new.token {
        Some(token) => {
            validate_token(&token)?;
            if load(store, &token)?.is_some() {
                return Err(AccountError::RegistrationTokenExists);
            }
            token
        }
        None => {
            let length = new.length.unwrap_or(DEFAULT_TOKEN_LENGTH);
            if length == 0 || length > MAX_TOKEN_LENGTH {
                return Err(AccountError::InvalidParam(format!(
                    "length must be 1 to {MAX_TOKEN_LENGTH}"
                )));
            }
            // Short generated tokens can collide; retry a few times before giving up.
            let mut attempts = 0;
            loop {
                let candidate = generate(length);
                if load(store, &candidate)?.is_none() {
                    break candidate;
                }
                attempts += 1;
                if attempts >= 8 {
                    return Err(AccountError::RegistrationTokenExists);
                }
            }
        }
    };
    let record = TokenRecord {
        uses_allowed: new.uses_allowed,
        pending: 0,
        completed: 0,
        expiry_time: new.expiry_time,
    };
    write(store, &token, &record)?;
    tracing::info!(token = %token, "created registration token");
    Ok(record.into_token(token))
}

/// Every token, in token order; with `valid`, only the valid (`Some(true)`) or invalid
/// (`Some(false)`) ones at `now_ms`.
pub fn list(
    store: &dyn KvStore,
    valid: Option<bool>,
    now_ms: u64,
) -> Result<Vec<RegistrationToken>, AccountError> {
    Ok(REGISTRATION_TOKENS
        .collect(store, KeyRange::all(), Direction::Forward, None)?
        .into_iter()
        .map(|(token, Json(record))| record.into_token(token))
        .filter(|token| valid.is_none_or(|valid| token.is_valid_at(now_ms) == valid))
        .collect())
}

/// One token.
pub fn get(store: &dyn KvStore, token: &str) -> Result<Option<RegistrationToken>, AccountError> {
    Ok(load(store, token)?.map(|record| record.into_token(token.to_owned())))
}

/// Changes a token's limit or expiry.
pub fn update(
    store: &dyn KvStore,
    _guard: &AccountsGuard<'_>,
    token: &str,
    update: RegistrationTokenUpdate,
    now_ms: u64,
) -> Result<RegistrationToken, AccountError> {
    let mut record = load(store, token)?.ok_or(AccountError::RegistrationTokenNotFound)?;
    if let Some(expiry_time) = update.expiry_time {
        check_expiry(expiry_time, now_ms)?;
        record.expiry_time = expiry_time;
    }
    if let Some(uses_allowed) = update.uses_allowed {
        record.uses_allowed = uses_allowed;
    }
    write(store, token, &record)?;
    Ok(record.into_token(token.to_owned()))
}

/// Deletes a token.
pub fn delete(
    store: &dyn KvStore,
    _guard: &AccountsGuard<'_>,
    token: &str,
) -> Result<(), AccountError> {
    if load(store, token)?.is_none() {
        return Err(AccountError::RegistrationTokenNotFound);
    }
    let mut batch = WriteBatch::new();
    REGISTRATION_TOKENS.delete(&mut batch, &token.to_owned());
    store.write(batch)?;
    Ok(())
}

/// Whether `token` exists and can start a registration at `now_ms`.
pub fn is_valid(store: &dyn KvStore, token: &str, now_ms: u64) -> Result<bool, AccountError> {
    Ok(get(store, token)?.is_some_and(|token| token.is_valid_at(now_ms)))
}

/// Takes one use of a valid token for a registration in progress (`pending += 1`), when the
/// token stage of user-interactive auth succeeds.
pub fn reserve(
    store: &dyn KvStore,
    _guard: &AccountsGuard<'_>,
    token: &str,
    now_ms: u64,
) -> Result<(), AccountError> {
    let mut current = get(store, token)?.ok_or(AccountError::RegistrationTokenInvalid)?;
    if !current.is_valid_at(now_ms) {
        return Err(AccountError::RegistrationTokenInvalid);
    }
    current.pending = current.pending.saturating_add(1);
    write(store, token, &TokenRecord::from(current))
}

/// Gives back a reserved use whose registration was abandoned (`pending -= 1`). A token
/// deleted meanwhile is ignored.
pub fn release(
    store: &dyn KvStore,
    _guard: &AccountsGuard<'_>,
    token: &str,
) -> Result<(), AccountError> {
    let Some(mut record) = load(store, token)? else {
        return Ok(());
    };
    record.pending = record.pending.saturating_sub(1);
    write(store, token, &record)
}

/// Turns a reserved use into a completed one (`pending -= 1`, `completed += 1`).
pub fn complete(
    store: &dyn KvStore,
    guard: &AccountsGuard<'_>,
    token: &str,
) -> Result<(), AccountError> {
    let mut batch = WriteBatch::new();
    complete_into(store, guard, &mut batch, token)?;
    store.write(batch)?;
    Ok(())
}

/// Adds [`complete`]'s change to `batch` (the batch that creates the account). A token deleted
/// since it was reserved adds nothing: the registration it allowed still goes ahead.
pub(super) fn complete_into(
    store: &dyn KvStore,
    _guard: &AccountsGuard<'_>,
    batch: &mut WriteBatch,
    token: &str,
) -> Result<(), AccountError> {
    let Some(mut record) = load(store, token)? else {
        return Ok(());
    };
    record.pending = record.pending.saturating_sub(1);
    record.completed = record.completed.saturating_add(1);
    REGISTRATION_TOKENS.put(batch, &token.to_owned(), &Json(record));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::accounts::AccountsLock;
    use crate::storage::MemoryStore;

    fn named(
        token: &str,
        uses_allowed: Option<u32>,
        expiry_time: Option<u64>,
    ) -> NewRegistrationToken {
        NewRegistrationToken {
            token: Some(token.to_owned()),
            length: None,
            uses_allowed,
            expiry_time,
        }
    }

    #[test]
    fn token_text_rules() {
        validate_token("a").unwrap();
        validate_token(&"Az09._~-".repeat(8)).unwrap();
        assert!(validate_token("").is_err());
        assert!(validate_token(&"a".repeat(65)).is_err());
        for bad in ["a b", "a/b", "a+b", "é", "a\0"] {
            assert!(
                matches!(validate_token(bad), Err(AccountError::InvalidParam(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn create_generates_or_validates_and_refuses_duplicates() {
        let store = MemoryStore::new();
        let lock = AccountsLock::new();
        let guard = lock.lock();
        let generated = create(&store, &guard, NewRegistrationToken::default(), 0).unwrap();
        assert_eq!(generated.token.len(), DEFAULT_TOKEN_LENGTH);
        validate_token(&generated.token).unwrap();
        let short = NewRegistrationToken {
            length: Some(3),
            ..Default::default()
        };
        assert_eq!(create(&store, &guard, short, 0).unwrap().token.len(), 3);
        for length in [0, 65] {
            let bad = NewRegistrationToken {
                length: Some(length),
                ..Default::default()
            };
            assert!(matches!(
                create(&store, &guard, bad, 0),
                Err(AccountError::InvalidParam(_))
            ));
        }

        create(&store, &guard, named("abc", Some(2), None), 0).unwrap();
        assert!(matches!(
            create(&store, &guard, named("abc", None, None), 0),
            Err(AccountError::RegistrationTokenExists)
        ));
        assert!(matches!(
            create(&store, &guard, named("a b", None, None), 0),
            Err(AccountError::InvalidParam(_))
        ));
        assert!(matches!(
            create(&store, &guard, named("past", None, Some(999)), 1_000),
            Err(AccountError::InvalidParam(_))
        ));
        let token = get(&store, "abc").unwrap().unwrap();
        assert_eq!(
            token,
            RegistrationToken {
                token: "abc".to_owned(),
                uses_allowed: Some(2),
                pending: 0,
                completed: 0,
                expiry_time: None
            }
        );
    }

    #[test]
    fn uses_count_pending_and_completed() {
        let store = MemoryStore::new();
        let lock = AccountsLock::new();
        let guard = lock.lock();
        create(&store, &guard, named("two", Some(2), None), 0).unwrap();
        reserve(&store, &guard, "two", 0).unwrap();
        assert!(is_valid(&store, "two", 0).unwrap());
        reserve(&store, &guard, "two", 0).unwrap();
        // Both uses are pending: no third registration may start.
        assert!(!is_valid(&store, "two", 0).unwrap());
        assert!(matches!(
            reserve(&store, &guard, "two", 0),
            Err(AccountError::RegistrationTokenInvalid)
        ));
        // One registration is abandoned: its use comes back.
        release(&store, &guard, "two").unwrap();
        assert!(is_valid(&store, "two", 0).unwrap());
        complete(&store, &guard, "two").unwrap();
        let token = get(&store, "two").unwrap().unwrap();
        assert_eq!((token.pending, token.completed), (0, 1));
        reserve(&store, &guard, "two", 0).unwrap();
        complete(&store, &guard, "two").unwrap();
        assert!(!is_valid(&store, "two", 0).unwrap());
        assert!(!is_valid(&store, "nosuch", 0).unwrap());
        assert!(matches!(
            reserve(&store, &guard, "nosuch", 0),
            Err(AccountError::RegistrationTokenInvalid)
        ));

        // Raising the limit revives it; unlimited never runs out.
        update(
            &store,
            &guard,
            "two",
            RegistrationTokenUpdate {
                uses_allowed: Some(Some(3)),
                expiry_time: None,
            },
            0,
        )
        .unwrap();
        assert!(is_valid(&store, "two", 0).unwrap());
        update(
            &store,
            &guard,
            "two",
            RegistrationTokenUpdate {
                uses_allowed: Some(None),
                expiry_time: None,
            },
            0,
        )
        .unwrap();
        assert_eq!(get(&store, "two").unwrap().unwrap().uses_allowed, None);
        // Zero uses allowed: never valid.
        create(&store, &guard, named("zero", Some(0), None), 0).unwrap();
        assert!(!is_valid(&store, "zero", 0).unwrap());
    }

    #[test]
    fn expiry_is_exclusive_and_updatable() {
        let store = MemoryStore::new();
        let lock = AccountsLock::new();
        let guard = lock.lock();
        create(&store, &guard, named("soon", None, Some(1_000)), 0).unwrap();
        assert!(is_valid(&store, "soon", 999).unwrap());
        assert!(!is_valid(&store, "soon", 1_000).unwrap());
        assert!(matches!(
            reserve(&store, &guard, "soon", 1_000),
            Err(AccountError::RegistrationTokenInvalid)
        ));
        let past = RegistrationTokenUpdate {
            uses_allowed: None,
            expiry_time: Some(Some(500)),
        };
        assert!(matches!(
            update(&store, &guard, "soon", past, 1_000),
            Err(AccountError::InvalidParam(_))
        ));
        let never = RegistrationTokenUpdate {
            uses_allowed: None,
            expiry_time: Some(None),
        };
        update(&store, &guard, "soon", never, 1_000).unwrap();
        assert!(is_valid(&store, "soon", u64::MAX).unwrap());
        assert!(matches!(
            update(
                &store,
                &guard,
                "nosuch",
                RegistrationTokenUpdate::default(),
                0
            ),
            Err(AccountError::RegistrationTokenNotFound)
        ));
    }

    #[test]
    fn list_filters_by_validity_and_delete_removes() {
        let store = MemoryStore::new();
        let lock = AccountsLock::new();
        let guard = lock.lock();
        create(&store, &guard, named("b-valid", None, None), 0).unwrap();
        create(&store, &guard, named("a-expired", None, Some(10)), 0).unwrap();
        create(&store, &guard, named("c-used", Some(0), None), 0).unwrap();
        let names = |valid| -> Vec<String> {
            list(&store, valid, 10)
                .unwrap()
                .into_iter()
                .map(|token| token.token)
                .collect()
        };
        assert_eq!(names(None), ["a-expired", "b-valid", "c-used"]);
        assert_eq!(names(Some(true)), ["b-valid"]);
        assert_eq!(names(Some(false)), ["a-expired", "c-used"]);
        delete(&store, &guard, "b-valid").unwrap();
        assert_eq!(get(&store, "b-valid").unwrap(), None);
        assert!(matches!(
            delete(&store, &guard, "b-valid"),
            Err(AccountError::RegistrationTokenNotFound)
        ));
        // Releasing or completing a deleted token is harmless.
        release(&store, &guard, "b-valid").unwrap();
        complete(&store, &guard, "b-valid").unwrap();
        assert_eq!(get(&store, "b-valid").unwrap(), None);
    }

    #[test]
    fn racing_reservations_for_the_last_use_have_one_winner() {
        let store = MemoryStore::new();
        let lock = AccountsLock::new();
        create(&store, &lock.lock(), named("last", Some(1), None), 0).unwrap();
        let winners = AtomicUsize::new(0);
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    barrier.wait();
                    match reserve(&store, &lock.lock(), "last", 0) {
                        Ok(()) => {
                            winners.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(AccountError::RegistrationTokenInvalid) => {}
                        Err(err) => panic!("unexpected error {err}"),
                    }
                });
            }
        });
        assert_eq!(winners.load(Ordering::SeqCst), 1);
        assert_eq!(get(&store, "last").unwrap().unwrap().pending, 1);
    }
}
