//! Single-use nonces for shared-secret registration.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;

/// How long a nonce may be used after it was issued (what Synapse allows).
const NONCE_LIFETIME: Duration = Duration::from_secs(60);
/// Outstanding nonces kept at most; an unauthenticated caller can ask for nonces, so their
/// number is bounded.
const MAX_NONCES: usize = 10_000;

/// Issued, unused nonces and when they expire.
#[derive(Debug, Default)]
pub(crate) struct Nonces {
    issued: Mutex<HashMap<String, Instant>>,
}

impl Nonces {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A fresh nonce.
    pub(crate) fn issue(&self, now: Instant) -> String {
        let nonce: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let mut issued = self
            .issued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        issued.retain(|_, expiry| *expiry > now);
        if issued.len() >= MAX_NONCES {
            // Dropping the oldest keeps the map bounded; its holder just asks again.
            if let Some(oldest) = issued
                .iter()
                .min_by_key(|(_, expiry)| **expiry)
                .map(|(n, _)| n.clone())
            {
                issued.remove(&oldest);
            }
        }
        issued.insert(nonce.clone(), now + NONCE_LIFETIME);
        nonce
    }

    /// Uses up `nonce`: true if it was issued and had not expired.
    pub(crate) fn consume(&self, nonce: &str, now: Instant) -> bool {
        let mut issued = self
            .issued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        issued.remove(nonce).is_some_and(|expiry| expiry > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_works_once_and_only_before_it_expires() {
        let nonces = Nonces::new();
        let now = Instant::now();
        let nonce = nonces.issue(now);
        assert!(nonces.consume(&nonce, now));
        assert!(!nonces.consume(&nonce, now), "second use must fail");
        let late = nonces.issue(now);
        assert!(!nonces.consume(&late, now + NONCE_LIFETIME + Duration::from_secs(1)));
        assert!(!nonces.consume("never issued", now));
    }

    #[test]
    fn outstanding_nonces_are_bounded() {
        let nonces = Nonces::new();
        let now = Instant::now();
        for _ in 0..MAX_NONCES + 50 {
            nonces.issue(now);
        }
        assert!(nonces.issued.lock().unwrap().len() <= MAX_NONCES);
    }
}
