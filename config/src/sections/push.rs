//! `[push]`: delivering notifications to push gateways.

use std::time::Duration;

use crate::checks;
use crate::error::Issues;
use crate::schema::raw_section;

raw_section! {
    /// Push notifications: how notifications reach the push gateways of users' HTTP pushers.
    RawPush {
        /// Whether push gateway URLs may point at loopback, private and link-local addresses.
        /// Keep false on the public internet: a pusher URL must not be able to make this
        /// server probe its own network.
        allow_private_addresses: bool = false;
        /// Whether pushers may use plain http:// gateway URLs. The spec requires https://;
        /// only for test rigs.
        allow_insecure_gateways: bool = false;
        /// Delay before the first retry of a failed delivery, in milliseconds (at least 1).
        /// Each further failure doubles it, up to `retry_max_ms`.
        retry_initial_ms: u64 = 1000;
        /// Longest delay between two delivery attempts, in milliseconds (at least
        /// `retry_initial_ms`).
        retry_max_ms: u64 = 3_600_000;
        /// Attempts at delivering one notification before it is dropped (at least 1), so a
        /// gateway that is gone for good does not hold up a pusher's queue forever.
        max_attempts: u32 = 20;
        /// How long one request to a push gateway may take, in seconds (at least 1).
        request_timeout_secs: u64 = 10;
        /// Days a notification (the `/notifications` listing and the records unread counts
        /// come from) is kept once it is read (at least 1). Unread notifications are kept
        /// whatever their age, since they still count.
        notification_retention_days: u64 = 30;
    }
}

/// The validated `[push]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushConfig {
    /// Whether gateway URLs may reach private and loopback addresses.
    pub allow_private_addresses: bool,
    /// Whether http:// gateway URLs are accepted.
    pub allow_insecure_gateways: bool,
    /// First retry delay in milliseconds; at least 1.
    pub retry_initial_ms: u64,
    /// Retry delay cap in milliseconds; at least `retry_initial_ms`.
    pub retry_max_ms: u64,
    /// Attempts per notification; at least 1.
    pub max_attempts: u32,
    /// Request timeout in seconds; at least 1.
    pub request_timeout_secs: u64,
    /// Days a read notification is kept; at least 1.
    pub notification_retention_days: u64,
}

impl PushConfig {
    /// The delay before attempt `failures + 1` after `failures` failed attempts (at least 1):
    /// `retry_initial_ms` doubled for each failure after the first, capped at `retry_max_ms`.
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        let millis = self
            .retry_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.retry_max_ms);
        Duration::from_millis(millis)
    }

    /// [`PushConfig::request_timeout_secs`] as a [`Duration`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// [`PushConfig::notification_retention_days`] as a [`Duration`].
    pub fn notification_retention(&self) -> Duration {
        Duration::from_secs(self.notification_retention_days.saturating_mul(86_400))
    }
}

pub(crate) fn validate(raw: RawPush, issues: &mut Issues) -> PushConfig {
    checks::positive(
        issues,
        "push.retry_initial_ms",
        raw.retry_initial_ms,
        "a number of milliseconds of at least 1",
    );
    if raw.retry_max_ms < raw.retry_initial_ms {
        issues.invalid(
            "push.retry_max_ms",
            &raw.retry_max_ms.to_string(),
            "a number of milliseconds of at least push.retry_initial_ms",
        );
    }
    checks::positive(
        issues,
        "push.max_attempts",
        u64::from(raw.max_attempts),
        "a number of attempts of at least 1",
    );
    checks::positive(
        issues,
        "push.request_timeout_secs",
        raw.request_timeout_secs,
        "a number of seconds of at least 1",
    );
    checks::positive(
        issues,
        "push.notification_retention_days",
        raw.notification_retention_days,
        "a number of days of at least 1",
    );
    PushConfig {
        allow_private_addresses: raw.allow_private_addresses,
        allow_insecure_gateways: raw.allow_insecure_gateways,
        retry_initial_ms: raw.retry_initial_ms,
        retry_max_ms: raw.retry_max_ms,
        max_attempts: raw.max_attempts,
        request_timeout_secs: raw.request_timeout_secs,
        notification_retention_days: raw.notification_retention_days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(initial: u64, max: u64) -> PushConfig {
        PushConfig {
            allow_private_addresses: false,
            allow_insecure_gateways: false,
            retry_initial_ms: initial,
            retry_max_ms: max,
            max_attempts: 5,
            request_timeout_secs: 1,
            notification_retention_days: 30,
        }
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let push = config(100, 1000);
        let delays: Vec<u128> = (1..=6).map(|n| push.retry_delay(n).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        // Far past the point where doubling would overflow, still the cap.
        assert_eq!(push.retry_delay(u32::MAX).as_millis(), 1000);
    }

    fn problems(raw: RawPush) -> bool {
        let mut issues = Issues::default();
        validate(raw, &mut issues);
        !issues.is_empty()
    }

    #[test]
    fn the_defaults_are_valid_and_bad_values_are_reported() {
        assert!(!problems(RawPush::default()));
        for raw in [
            RawPush {
                retry_initial_ms: 0,
                ..RawPush::default()
            },
            RawPush {
                max_attempts: 0,
                ..RawPush::default()
            },
            RawPush {
                request_timeout_secs: 0,
                ..RawPush::default()
            },
            RawPush {
                notification_retention_days: 0,
                ..RawPush::default()
            },
            RawPush {
                retry_initial_ms: 10,
                retry_max_ms: 5,
                ..RawPush::default()
            },
        ] {
            assert!(problems(raw));
        }
    }
}
