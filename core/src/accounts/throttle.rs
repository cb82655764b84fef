//! Failed-login throttling, in memory.
//!
//! A sliding window of failure times per user id and per client address: after
//! `max_failures` failures within `window` for one of them, attempts are refused until the
//! oldest of those failures leaves the window. Only the latest `max_failures` times are kept
//! per key, and the number of keys is capped, so an attacker spraying user ids or addresses
//! cannot grow memory without bound. IPv6 clients are tracked by their /64 network, since a
//! single host usually controls a whole one.
//!
//! The state is per process and lost on restart, which is acceptable for a brake on guessing.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ruma::{OwnedUserId, UserId};

use super::settings::ThrottleSettings;

/// Default cap on tracked users plus addresses.
pub const DEFAULT_MAX_TRACKED_KEYS: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    User(OwnedUserId),
    Address(IpAddr),
}

/// The address a client is tracked under: IPv4 as is (IPv4-mapped IPv6 folded to IPv4), IPv6
/// by its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1_u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

/// The failed-login throttle.
#[derive(Debug)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
    max_keys: usize,
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// A throttle with the default key cap.
    pub fn new(settings: ThrottleSettings) -> Self {
        Self::with_max_keys(settings, DEFAULT_MAX_TRACKED_KEYS)
    }

    /// A throttle tracking at most `max_keys` users plus addresses.
    pub fn with_max_keys(settings: ThrottleSettings, max_keys: usize) -> Self {
        Self {
            settings,
            max_keys: max_keys.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: Option<&UserId>, ip: IpAddr) -> impl Iterator<Item = Key> {
        user.map(|user| Key::User(user.to_owned()))
            .into_iter()
            .chain(std::iter::once(Key::Address(address_key(ip))))
    }

    fn max_failures(&self) -> usize {
        usize::try_from(self.settings.max_failures).unwrap_or(usize::MAX)
    }

    /// Drops the failures of `times` that have left the window.
    fn prune(&self, times: &mut VecDeque<Instant>, now: Instant) {
        while times
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.settings.window)
        {
            times.pop_front();
        }
    }

    /// Whether an attempt for `user` from `ip` may go ahead now; if not, how long until it may.
    pub fn check(&self, user: Option<&UserId>, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let max = self.max_failures();
        if max == 0 {
            return Ok(());
        }
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let mut retry_after = None;
        for key in Self::keys(user, ip) {
            let Some(times) = failures.get_mut(&key) else {
                continue;
            };
            self.prune(times, now);
            if times.len() >= max {
                // Only the latest `max` failures are kept, so once the oldest of them leaves
                // the window the count drops below the limit.
                let wait = times
                    .front()
                    .map(|&oldest| (oldest + self.settings.window).saturating_duration_since(now))
                    .unwrap_or_default();
                retry_after = retry_after.max(Some(wait));
            }
            if times.is_empty() {
                failures.remove(&key);
            }
        }
        match retry_after {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Records a failed attempt for `user` from `ip`.
    pub fn record_failure(&self, user: Option<&UserId>, ip: IpAddr, now: Instant) {
        let max = self.max_failures();
        tracing::warn!(user = ?user.map(UserId::as_str), %ip, "failed login attempt");
        if max == 0 {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        for key in Self::keys(user, ip) {
            if !failures.contains_key(&key) && failures.len() >= self.max_keys {
                self.make_room(&mut failures, now);
            }
            let times = failures.entry(key).or_default();
            self.prune(times, now);
            times.push_back(now);
            while times.len() > max {
                times.pop_front();
            }
            if times.len() == max {
                tracing::warn!(
                    user = ?user.map(UserId::as_str),
                    %ip,
                    window = ?self.settings.window,
                    "too many failed login attempts: throttling"
                );
            }
        }
    }

    /// Records a successful login: the user's failures are forgotten (the address's stay, so
    /// one good account does not reset guessing against others from the same client).
    pub fn record_success(&self, user: &UserId) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.remove(&Key::User(user.to_owned()));
    }

    /// Number of users plus addresses currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Frees room for a new key: drops keys whose failures all left the window, and if that is
    /// not enough, the tenth of keys whose latest failure is oldest (amortising the scan).
    fn make_room(&self, failures: &mut HashMap<Key, VecDeque<Instant>>, now: Instant) {
        failures.retain(|_, times| {
            self.prune(times, now);
            !times.is_empty()
        });
        if failures.len() < self.max_keys {
            return;
        }
        let mut by_latest: Vec<(Instant, Key)> = failures
            .iter()
            .filter_map(|(key, times)| times.back().map(|&latest| (latest, key.clone())))
            .collect();
        let evict = (self.max_keys / 10).max(1).min(by_latest.len());
        if evict < by_latest.len() {
            by_latest.select_nth_unstable_by_key(evict, |(latest, _)| *latest);
        }
        for (_, key) in by_latest.into_iter().take(evict) {
            failures.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_failures: u32, window_secs: u64) -> LoginThrottle {
        LoginThrottle::new(ThrottleSettings {
            max_failures,
            window: Duration::from_secs(window_secs),
        })
    }

    fn user(name: &str) -> OwnedUserId {
        OwnedUserId::try_from(format!("@{name}:example.org")).unwrap()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn refuses_after_max_failures_until_the_oldest_leaves_the_window() {
        let throttle = throttle(3, 60);
        let alice = user("alice");
        let t0 = Instant::now();
        throttle.record_failure(Some(&alice), IP, t0);
        throttle.record_failure(Some(&alice), IP, t0 + secs(10));
        assert_eq!(throttle.check(Some(&alice), IP, t0 + secs(20)), Ok(()));
        throttle.record_failure(Some(&alice), IP, t0 + secs(20));
        // Three failures at 0, 10, 20: refused until 60, when the one at 0 leaves.
        assert_eq!(
            throttle.check(Some(&alice), IP, t0 + secs(20)),
            Err(secs(40))
        );
        assert_eq!(
            throttle.check(Some(&alice), IP, t0 + secs(59)),
            Err(secs(1))
        );
        assert_eq!(throttle.check(Some(&alice), IP, t0 + secs(60)), Ok(()));
        // One more failure at 60 refills the window: the next opening is when 10 leaves.
        throttle.record_failure(Some(&alice), IP, t0 + secs(60));
        assert_eq!(
            throttle.check(Some(&alice), IP, t0 + secs(61)),
            Err(secs(9))
        );
    }

    #[test]
    fn user_and_address_are_limited_independently() {
        let throttle = throttle(2, 60);
        let alice = user("alice");
        let bob = user("bob");
        let t0 = Instant::now();
        // Failures for alice from two addresses: alice is throttled everywhere...
        throttle.record_failure(Some(&alice), IP, t0);
        throttle.record_failure(Some(&alice), OTHER_IP, t0);
        assert!(
            throttle
                .check(Some(&alice), "198.51.100.7".parse().unwrap(), t0)
                .is_err()
        );
        // ...but neither address is, for another user.
        assert_eq!(throttle.check(Some(&bob), IP, t0), Ok(()));
        // Spraying users from one address throttles the address.
        throttle.record_failure(Some(&bob), IP, t0);
        assert_eq!(throttle.check(Some(&user("carol")), IP, t0), Err(secs(60)));
        assert_eq!(throttle.check(None, IP, t0), Err(secs(60)));
        assert_eq!(throttle.check(Some(&user("carol")), OTHER_IP, t0), Ok(()));
    }

    #[test]
    fn success_clears_the_user_but_not_the_address() {
        let throttle = throttle(2, 60);
        let alice = user("alice");
        let t0 = Instant::now();
        throttle.record_failure(Some(&alice), IP, t0);
        throttle.record_failure(Some(&alice), OTHER_IP, t0);
        throttle.record_failure(Some(&user("bob")), IP, t0);
        throttle.record_success(&alice);
        assert_eq!(throttle.check(Some(&alice), OTHER_IP, t0), Ok(()));
        assert!(throttle.check(Some(&alice), IP, t0).is_err());
    }

    #[test]
    fn ipv6_is_tracked_by_its_64_network() {
        let throttle = throttle(2, 60);
        let t0 = Instant::now();
        throttle.record_failure(None, "2001:db8:1:2::1".parse().unwrap(), t0);
        throttle.record_failure(None, "2001:db8:1:2:ffff::9".parse().unwrap(), t0);
        assert!(
            throttle
                .check(None, "2001:db8:1:2::abcd".parse().unwrap(), t0)
                .is_err()
        );
        assert_eq!(
            throttle.check(None, "2001:db8:1:3::1".parse().unwrap(), t0),
            Ok(())
        );
        // IPv4-mapped addresses count as the IPv4 address.
        throttle.record_failure(None, IP, t0);
        throttle.record_failure(None, "::ffff:192.0.2.1".parse().unwrap(), t0);
        assert!(throttle.check(None, IP, t0).is_err());
    }

    #[test]
    fn zero_max_failures_disables_throttling() {
        let throttle = throttle(0, 60);
        let t0 = Instant::now();
        for _ in 0..10 {
            throttle.record_failure(Some(&user("alice")), IP, t0);
        }
        assert_eq!(throttle.check(Some(&user("alice")), IP, t0), Ok(()));
        assert_eq!(throttle.tracked_keys(), 0);
    }

    #[test]
    fn expired_keys_are_pruned_and_memory_is_capped() {
        let throttle = LoginThrottle::with_max_keys(
            ThrottleSettings {
                max_failures: 3,
                window: secs(60),
            },
            20,
        );
        let t0 = Instant::now();
        for i in 0..10 {
            throttle.record_failure(Some(&user(&format!("u{i}"))), IP, t0);
        }
        // Ten users and one address.
        assert_eq!(throttle.tracked_keys(), 11);
        // Past the window, a check forgets the keys it looks at.
        assert_eq!(throttle.check(Some(&user("u0")), IP, t0 + secs(60)), Ok(()));
        assert_eq!(throttle.tracked_keys(), 9);
        // A spray of new users never grows past the cap; expired ones go first.
        let spray_start = t0 + secs(61);
        for i in 0..100 {
            let at = spray_start + Duration::from_millis(i);
            throttle.record_failure(Some(&user(&format!("spray{i}"))), OTHER_IP, at);
        }
        assert!(throttle.tracked_keys() <= 20, "{}", throttle.tracked_keys());
        // The spraying address, the most recent offender, is never the one evicted.
        assert!(
            throttle
                .check(Some(&user("fresh")), OTHER_IP, spray_start + secs(1))
                .is_err()
        );
        // Only the latest max_failures times are kept per key, however many failures come.
        let failures = throttle.failures.lock().unwrap();
        assert!(failures.values().all(|times| times.len() <= 3));
    }

    #[test]
    fn eviction_keeps_the_most_recent_offenders() {
        let throttle = LoginThrottle::with_max_keys(
            ThrottleSettings {
                max_failures: 1,
                window: secs(600),
            },
            10,
        );
        let t0 = Instant::now();
        for i in 0..10 {
            throttle.record_failure(
                None,
                IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i)),
                t0 + secs(u64::from(i)),
            );
        }
        throttle.record_failure(
            None,
            IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 0)),
            t0 + secs(20),
        );
        assert_eq!(throttle.tracked_keys(), 10);
        let at = t0 + secs(21);
        // The oldest (10.0.0.0) was evicted; the newest are still throttled.
        assert_eq!(
            throttle.check(None, IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 0)), at),
            Ok(())
        );
        assert!(
            throttle
                .check(None, IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)), at)
                .is_err()
        );
        assert!(
            throttle
                .check(None, IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 0)), at)
                .is_err()
        );
    }
}
