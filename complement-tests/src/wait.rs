//! Waiting on a condition with a deadline instead of sleeping.

use std::future::Future;
use std::time::{Duration, Instant};

/// First pause between two polls; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between two polls, so a condition that becomes true is
/// noticed quickly even late in a long wait.
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// A condition did not hold before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}")]
pub struct WaitTimeout {
    /// What was being waited for, as given by the caller.
    pub what: String,
    /// How long the wait lasted.
    pub waited: Duration,
}

/// Polls `condition` until it returns `Some`, with a short exponential
/// backoff between polls, and gives up after `timeout`.
///
/// The condition is always polled at least once, and once more right at the
/// deadline, so a slow machine does not lose the last chance.
pub async fn try_wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut condition: F,
) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut backoff = MIN_BACKOFF;
    loop {
        if let Some(value) = condition().await {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitTimeout {
                what: what.to_owned(),
                waited: now - start,
            });
        }
        tokio::time::sleep(backoff.min(deadline - now)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Like [`try_wait_until`], but panics with the description on timeout.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match try_wait_until(what, timeout, condition).await {
        Ok(value) => value,
        Err(timeout) => panic!("{timeout}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let polls = Arc::new(AtomicU32::new(0));
        let counter = polls.clone();
        let value = wait_until("third poll", Duration::from_secs(10), move || {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                (n == 3).then_some(n)
            }
        })
        .await;
        assert_eq!(value, 3);
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn times_out_and_names_the_condition() {
        let err = try_wait_until("never", Duration::from_millis(50), || async { None::<()> })
            .await
            .unwrap_err();
        assert_eq!(err.what, "never");
        assert!(err.waited >= Duration::from_millis(50), "{err}");
        assert!(err.to_string().contains("waiting for never"), "{err}");
    }
}
