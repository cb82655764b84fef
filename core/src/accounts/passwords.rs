//! Password policy and argon2id hashing.
//!
//! Hashing and verifying are deliberately slow (that is the point of argon2): the HTTP layer
//! runs them with `spawn_blocking`, never on the async runtime's threads. The stored form is
//! the PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), which carries its own
//! parameters, so changing [`Argon2Params`] affects new hashes only.

use argon2::password_hash::Error as HashError;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

use super::error::AccountError;
use super::settings::{AccountSettings, Argon2Params};

/// Longest password accepted, in bytes. Longer ones are refused before hashing so a huge
/// request body cannot buy a long hash computation (Synapse has the same limit).
pub const MAX_PASSWORD_BYTES: usize = 512;

/// Checks a new password against the policy (at registration and password change).
pub fn check_password_strength(
    settings: &AccountSettings,
    password: &str,
) -> Result<(), AccountError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::WeakPassword(format!(
            "password must be at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if password.chars().count() < settings.password_min_length {
        return Err(AccountError::WeakPassword(format!(
            "password must be at least {} characters",
            settings.password_min_length
        )));
    }
    Ok(())
}

fn hasher(params: &Argon2Params) -> Result<Argon2<'static>, AccountError> {
    let params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|err| AccountError::Hashing(format!("bad argon2 parameters: {err}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with a fresh random salt into a PHC string. CPU-heavy: call it from a
/// blocking thread.
pub fn hash_password(params: &Argon2Params, password: &str) -> Result<String, AccountError> {
    let hash = hasher(params)?
        .hash_password(password.as_bytes())
        .map_err(|err| AccountError::Hashing(err.to_string()))?;
    Ok(hash.to_string())
}

/// Checks `password` against a stored hash. CPU-heavy: call it from a blocking thread.
///
/// An account without a password (`None`, such as a single-sign-on account or a deactivated
/// one) never matches. The comparison of the hash outputs is constant-time (argon2's).
pub fn verify_password(stored_hash: Option<&str>, password: &str) -> Result<(), AccountError> {
    let Some(stored_hash) = stored_hash else {
        return Err(AccountError::InvalidPassword);
    };
    if password.len() > MAX_PASSWORD_BYTES {
        // Could never have been set, so it cannot match; no need to hash it.
        return Err(AccountError::InvalidPassword);
    }
    let parsed = PasswordHash::new(stored_hash)
        .map_err(|err| AccountError::Hashing(format!("stored password hash unreadable: {err}")))?;
    // The parameters come from the stored hash, not from this instance.
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(()),
        Err(HashError::PasswordInvalid) => Err(AccountError::InvalidPassword),
        Err(err) => Err(AccountError::Hashing(err.to_string())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Cheap parameters so tests do not spend seconds hashing.
    pub(crate) const FAST: Argon2Params = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn settings(min: usize) -> AccountSettings {
        let mut settings = AccountSettings::new("example.org".try_into().unwrap());
        settings.password_min_length = min;
        settings
    }

    #[test]
    fn hash_then_verify_accepts_only_the_same_password() {
        let hash = hash_password(&FAST, "correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        verify_password(Some(&hash), "correct horse").unwrap();
        assert!(matches!(
            verify_password(Some(&hash), "correct horse!"),
            Err(AccountError::InvalidPassword)
        ));
        assert!(matches!(
            verify_password(Some(&hash), ""),
            Err(AccountError::InvalidPassword)
        ));
    }

    #[test]
    fn same_password_gets_a_different_salt_each_time() {
        let first = hash_password(&FAST, "pw").unwrap();
        let second = hash_password(&FAST, "pw").unwrap();
        assert_ne!(first, second);
        verify_password(Some(&second), "pw").unwrap();
    }

    #[test]
    fn verification_uses_the_stored_parameters() {
        let hash = hash_password(
            &Argon2Params {
                memory_kib: 128,
                iterations: 2,
                parallelism: 2,
            },
            "pw",
        )
        .unwrap();
        assert!(hash.contains("m=128,t=2,p=2"), "{hash}");
        verify_password(Some(&hash), "pw").unwrap();
    }

    #[test]
    fn account_without_password_never_matches() {
        assert!(matches!(
            verify_password(None, ""),
            Err(AccountError::InvalidPassword)
        ));
        assert!(matches!(
            verify_password(None, "anything"),
            Err(AccountError::InvalidPassword)
        ));
    }

    #[test]
    fn garbage_stored_hash_is_an_error_not_a_match() {
        assert!(matches!(
            verify_password(Some("not a hash"), "pw"),
            Err(AccountError::Hashing(_))
        ));
        assert!(matches!(
            verify_password(Some(""), ""),
            Err(AccountError::Hashing(_))
        ));
    }

    #[test]
    fn over_long_password_is_refused_without_hashing() {
        let hash = hash_password(&FAST, "pw").unwrap();
        let long = "a".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(
            verify_password(Some(&hash), &long),
            Err(AccountError::InvalidPassword)
        ));
        assert!(matches!(
            check_password_strength(&settings(0), &long),
            Err(AccountError::WeakPassword(_))
        ));
        check_password_strength(&settings(0), &"a".repeat(MAX_PASSWORD_BYTES)).unwrap();
    }

    #[test]
    fn minimum_length_counts_characters() {
        let settings = settings(4);
        assert!(matches!(
            check_password_strength(&settings, "abc"),
            Err(AccountError::WeakPassword(_))
        ));
        check_password_strength(&settings, "abcd").unwrap();
        // Four characters, eight bytes.
        check_password_strength(&settings, "éééé").unwrap();
        assert!(check_password_strength(&settings, "ééé").is_err());
    }

    #[test]
    fn invalid_parameters_are_reported() {
        let bad = Argon2Params {
            memory_kib: 1,
            iterations: 0,
            parallelism: 0,
        };
        assert!(matches!(
            hash_password(&bad, "pw"),
            Err(AccountError::Hashing(_))
        ));
    }
}
