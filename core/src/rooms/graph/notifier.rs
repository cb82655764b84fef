//! The stream notifier: the latest persisted stream position, for waiters, and what the
//! recent positions concern.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use ruma::{OwnedRoomId, OwnedUserId};
use tokio::sync::watch;

use super::tables::StreamPosition;

/// How many recent positions keep their [`Audience`]. A waiter that slept through more
/// positions than this simply looks (as for a position without one).
const AUDIENCE_LOG: usize = 8192;

/// Whom a stream position concerns, so that a waiting sync can tell without reading anything
/// whether to look. Positions written without one concern everyone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// An event of the room: its members (and those who were).
    Room(OwnedRoomId),
    /// A membership event: the room's members and the user whose membership it sets.
    Member {
        /// The room.
        room_id: OwnedRoomId,
        /// The user whose membership changed.
        user_id: OwnedUserId,
    },
    /// Data of one user alone (account data, to-device messages, push rules).
    User(OwnedUserId),
    /// Data of each of these users alone (to-device messages sent to several users).
    Users(Vec<OwnedUserId>),
    /// A change of one user that everyone sharing one of `rooms` with them sees (presence).
    UserAndRoomMates {
        /// The user.
        user_id: OwnedUserId,
        /// The rooms whose members see the change.
        rooms: Vec<OwnedRoomId>,
    },
}

/// What a span of stream positions concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamAudience {
    /// A position of the span has no recorded audience (or fell out of the log): whoever
    /// waits must look.
    Everyone,
    /// The audience of every position of the span.
    Listed(Vec<Audience>),
}

/// Carries the latest persisted [`StreamPosition`] to whoever waits for new events (sync
/// long-polls, the federation and appservice senders).
///
/// A waiter costs a receiver and no CPU until the position moves. Every persisted event moves
/// it; waiters then check whether anything concerns them.
#[derive(Debug)]
pub struct StreamNotifier {
    sender: watch::Sender<StreamPosition>,
    /// The audience of recent positions, in position order (recorded under the allocation
    /// lock, which hands positions out in order).
    audiences: Mutex<VecDeque<(StreamPosition, Audience)>>,
}

impl StreamNotifier {
    /// A notifier starting at `current` (the last position persisted before start-up).
    pub fn new(current: StreamPosition) -> Self {
        Self {
            sender: watch::Sender::new(current),
            audiences: Mutex::new(VecDeque::with_capacity(AUDIENCE_LOG)),
        }
    }

    /// Records whom `position` concerns. Call it when the position is allocated, before it
    /// can be published.
    pub(crate) fn record(&self, position: StreamPosition, audience: Audience) {
        let mut log = self
            .audiences
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if log.len() == AUDIENCE_LOG {
            log.pop_front();
        }
        log.push_back((position, audience));
    }

    /// Whom the positions after `after` up to `upto` concern.
    pub fn audience(&self, after: StreamPosition, upto: StreamPosition) -> StreamAudience {
        if upto <= after {
            return StreamAudience::Listed(Vec::new());
        }
        let log = self
            .audiences
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let start = log.partition_point(|(position, _)| *position <= after);
        let mut listed = Vec::new();
        let mut expected = after.0 + 1;
        for (position, audience) in log.range(start..) {
            if *position > upto {
                break;
            }
            // A gap is a position written without an audience.
            if position.0 != expected {
                return StreamAudience::Everyone;
            }
            listed.push(audience.clone());
            expected += 1;
        }
        if expected == upto.0 + 1 {
            StreamAudience::Listed(listed)
        } else {
            StreamAudience::Everyone
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

    #[test]
    fn a_span_is_listed_only_when_every_position_has_an_audience() {
        let notifier = StreamNotifier::new(StreamPosition(0));
        let room = OwnedRoomId::try_from("!r:example.org").unwrap();
        let user = OwnedUserId::try_from("@u:example.org").unwrap();
        notifier.record(StreamPosition(1), Audience::Room(room.clone()));
        notifier.record(StreamPosition(2), Audience::User(user.clone()));
        // Position 3 is written without an audience.
        let mates = Audience::UserAndRoomMates {
            user_id: user.clone(),
            rooms: Vec::new(),
        };
        notifier.record(StreamPosition(4), mates.clone());
        assert_eq!(
            notifier.audience(StreamPosition(0), StreamPosition(2)),
            StreamAudience::Listed(vec![Audience::Room(room), Audience::User(user.clone())])
        );
        assert_eq!(
            notifier.audience(StreamPosition(3), StreamPosition(4)),
            StreamAudience::Listed(vec![mates])
        );
        for (after, upto) in [(1, 3), (2, 4), (4, 5)] {
            assert_eq!(
                notifier.audience(StreamPosition(after), StreamPosition(upto)),
                StreamAudience::Everyone,
                "({after}, {upto}]"
            );
        }
        assert_eq!(
            notifier.audience(StreamPosition(4), StreamPosition(4)),
            StreamAudience::Listed(Vec::new())
        );
    }

    #[test]
    fn positions_that_left_the_log_concern_everyone() {
        let notifier = StreamNotifier::new(StreamPosition(0));
        let user = OwnedUserId::try_from("@u:example.org").unwrap();
        let last = AUDIENCE_LOG as u64 + 10;
        for position in 1..=last {
            notifier.record(StreamPosition(position), Audience::User(user.clone()));
        }
        assert_eq!(
            notifier.audience(StreamPosition(0), StreamPosition(last)),
            StreamAudience::Everyone
        );
        assert!(matches!(
            notifier.audience(StreamPosition(last - 5), StreamPosition(last)),
            StreamAudience::Listed(listed) if listed.len() == 5
        ));
    }
}
