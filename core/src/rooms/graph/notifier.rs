//! The stream notifier: the latest persisted stream position, for waiters.

use tokio::sync::watch;

use super::tables::StreamPosition;

/// Carries the latest persisted [`StreamPosition`] to whoever waits for new events (sync
/// long-polls, the federation and appservice senders).
///
/// A waiter costs a receiver and no CPU until the position moves. Every persisted event moves
/// it; waiters then check whether anything concerns them.
#[derive(Debug)]
pub struct StreamNotifier {
    sender: watch::Sender<StreamPosition>,
}

impl StreamNotifier {
    /// A notifier starting at `current` (the last position persisted before start-up).
    pub fn new(current: StreamPosition) -> Self {
        Self {
            sender: watch::Sender::new(current),
        }
    }

    /// The latest persisted position: every event at or below it is readable.
    pub fn current(&self) -> StreamPosition {
        *self.sender.borrow()
    }

    /// A receiver of position changes, for `select!`-style waiting with timeouts
    /// (`receiver.wait_for(|position| *position > since)`).
    pub fn subscribe(&self) -> watch::Receiver<StreamPosition> {
        self.sender.subscribe()
    }

    /// Waits until the position passes `since`, and returns the new position. Put a timeout
    /// around it.
    pub async fn wait_after(&self, since: StreamPosition) -> StreamPosition {
        let mut receiver = self.subscribe();
        match receiver.wait_for(|position| *position > since).await {
            Ok(position) => *position,
            // Only if the sender were dropped, which `self` prevents.
            Err(_) => self.current(),
        }
    }

    /// Announces that everything up to `position` is persisted. Positions can be announced
    /// out of order by concurrent writers; the notifier keeps the highest.
    pub(crate) fn publish(&self, position: StreamPosition) {
        self.sender.send_if_modified(|current| {
            let newer = position > *current;
            if newer {
                *current = position;
            }
            newer
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn waiters_wake_on_newer_positions_only() {
        let notifier = Arc::new(StreamNotifier::new(StreamPosition(5)));
        assert_eq!(notifier.current(), StreamPosition(5));
        let waiter = {
            let notifier = Arc::clone(&notifier);
            tokio::spawn(async move { notifier.wait_after(StreamPosition(6)).await })
        };
        notifier.publish(StreamPosition(6));
        notifier.publish(StreamPosition(4));
        assert_eq!(notifier.current(), StreamPosition(6));
        notifier.publish(StreamPosition(8));
        let woke_at = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(woke_at, StreamPosition(8));
        // Already past: returns at once.
        assert_eq!(
            notifier.wait_after(StreamPosition(7)).await,
            StreamPosition(8)
        );
    }
}
