//! `[passwords]`: password policy and Argon2id hashing cost.

use crate::error::Issues;
use crate::schema::raw_section;

/// Argon2id memory cost recommended by OWASP (19 MiB), the default.
const RECOMMENDED_MEMORY_KIB: u32 = 19456;
/// Argon2id iterations recommended together with [`RECOMMENDED_MEMORY_KIB`].
const RECOMMENDED_ITERATIONS: u32 = 2;
/// Largest parallelism Argon2 allows (2^24 - 1).
const MAX_PARALLELISM: u32 = 0x00FF_FFFF;

raw_section! {
    /// Passwords: the length policy and the cost of Argon2id hashing. The defaults follow
    /// the OWASP recommendation; lower costs make logins faster and offline guessing
    /// cheaper, so use them only in tests.
    RawPasswords {
        /// Shortest password accepted when registering or changing a password, in
        /// characters. Must be at least 1.
        minimum_length: usize = 8;
        /// Argon2id memory cost in KiB. Must be at least 8 times `argon2_parallelism`.
        argon2_memory_kib: u32 = RECOMMENDED_MEMORY_KIB;
        /// Argon2id iterations (time cost). Must be at least 1.
        argon2_iterations: u32 = RECOMMENDED_ITERATIONS;
        /// Argon2id lanes (parallelism), from 1 to 16777215.
        argon2_parallelism: u32 = 1;
    }
}

/// The validated `[passwords]` section. The Argon2 values are accepted by the `argon2`
/// crate's `Params::new`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PasswordsConfig {
    /// Shortest password accepted, in characters; at least 1.
    pub minimum_length: usize,
    /// Argon2id memory cost in KiB; at least `8 * argon2_parallelism`.
    pub argon2_memory_kib: u32,
    /// Argon2id iterations; at least 1.
    pub argon2_iterations: u32,
    /// Argon2id parallelism; 1 to 16777215.
    pub argon2_parallelism: u32,
}

impl PasswordsConfig {
    /// Whether the hashing cost is below the recommended one.
    pub(crate) fn is_weak(&self) -> bool {
        self.argon2_memory_kib < RECOMMENDED_MEMORY_KIB
            || self.argon2_iterations < RECOMMENDED_ITERATIONS
    }
}

pub(crate) fn validate(raw: RawPasswords, issues: &mut Issues) -> PasswordsConfig {
    if raw.minimum_length == 0 {
        issues.invalid(
            "passwords.minimum_length",
            "0",
            "a number of characters of at least 1",
        );
    }
    if raw.argon2_iterations == 0 {
        issues.invalid(
            "passwords.argon2_iterations",
            "0",
            "a number of iterations of at least 1",
        );
    }
    let parallelism_ok = (1..=MAX_PARALLELISM).contains(&raw.argon2_parallelism);
    if !parallelism_ok {
        issues.invalid(
            "passwords.argon2_parallelism",
            &raw.argon2_parallelism.to_string(),
            "a number of lanes from 1 to 16777215",
        );
    }
    let min_memory = u64::from(raw.argon2_parallelism.max(1)) * 8;
    if u64::from(raw.argon2_memory_kib) < min_memory {
        issues.invalid(
            "passwords.argon2_memory_kib",
            &raw.argon2_memory_kib.to_string(),
            &format!("at least 8 KiB per lane of passwords.argon2_parallelism, here {min_memory}"),
        );
    }
    PasswordsConfig {
        minimum_length: raw.minimum_length,
        argon2_memory_kib: raw.argon2_memory_kib,
        argon2_iterations: raw.argon2_iterations,
        argon2_parallelism: raw.argon2_parallelism,
    }
}
