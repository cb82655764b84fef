//! Keeping the index up to date: following the event stream, in batches, one commit each.

use std::sync::Arc;
use std::time::Duration;

use ruma::CanonicalJsonValue;
use ruma::events::TimelineEventType;
use tantivy::{TantivyDocument, Term};

use super::schema::{IndexState, SearchKey};
use super::{SearchError, SearchIndex};
use crate::Services;
use crate::rooms::graph::{EventStatus, Rooms, StoredEvent, StreamPosition};

/// How many events one batch reads (and one commit covers, at most).
const BATCH: usize = 500;

/// The least time between two commits. A commit writes new segment files and reloads the
/// searcher, which costs far more than indexing one message: under a steady flow of events,
/// spacing commits lets one commit cover many events (search results lag by at most this
/// long), while an event after a quiet spell is still committed at once.
const MIN_COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// How long to wait before trying again after indexing failed (a full disk, say), so a
/// lasting failure does not spin.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// What one round of [`SearchIndex::catch_up`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Round {
    /// Events read from the stream.
    pub(super) read: usize,
    /// The position up to which the stream has now been read.
    pub(super) upto: StreamPosition,
    /// Whether the round changed the index and committed.
    pub(super) committed: bool,
}

impl SearchIndex {
    /// Reads up to `batch` events after the last position read, indexes them and commits if
    /// they changed the index. Synchronous (disk I/O): run it on a blocking thread.
    pub(super) fn catch_up(&self, rooms: &Rooms, batch: usize) -> Result<Round, SearchError> {
        let mut writer = self.writer.lock().map_err(|_| SearchError::Poisoned)?;
        let after = writer.read;
        // Read before the events: if fewer than a batch come back, everything up to here was
        // seen, including positions that carry no event (account data, receipts...).
        let published = rooms.current_stream_position();
        let events = rooms.events_after(after, batch)?;
        let last_event = events.last().map_or(after, |(position, _)| *position);
        let upto = if events.len() < batch {
            published.max(last_event)
        } else {
            last_event
        };
        let mut changed = false;
        for (position, event) in &events {
            changed |= self.apply(&writer.writer, *position, event)?;
        }
        if changed {
            let mut commit = writer.writer.prepare_commit()?;
            commit.set_payload(&IndexState::at(upto).to_payload());
            commit.commit()?;
            self.reader.reload()?;
            writer.committed = upto;
        }
        writer.read = writer.read.max(upto);
        Ok(Round {
            read: events.len(),
            upto,
            committed: changed,
        })
    }

    /// Adds the document of `event` or, for a redaction, deletes its target's; whether the
    /// index changed.
    fn apply(
        &self,
        writer: &tantivy::IndexWriter,
        position: StreamPosition,
        event: &StoredEvent,
    ) -> Result<bool, SearchError> {
        if event.status != EventStatus::Normal {
            return Ok(false);
        }
        let pdu = &event.pdu;
        if *pdu.kind() == TimelineEventType::RoomRedaction {
            // Deletes apply to every document added before them, in this batch too.
            return Ok(match pdu.redacts() {
                Some(target) => {
                    writer
                        .delete_term(Term::from_field_text(self.fields.event_id, target.as_str()));
                    true
                }
                None => false,
            });
        }
        let Some((key, field)) = SearchKey::for_event_type(&pdu.kind().to_string()) else {
            return Ok(false);
        };
        if matches!(key, SearchKey::ContentName | SearchKey::ContentTopic)
            && pdu.state_key() != Some("")
        {
            return Ok(false);
        }
        // A redacted event has lost its content: nothing to find.
        let Some(CanonicalJsonValue::String(text)) = pdu.content_object().get(field) else {
            return Ok(false);
        };
        if text.trim().is_empty() {
            return Ok(false);
        }
        let mut document = TantivyDocument::default();
        document.add_text(self.fields.event_id, pdu.event_id().as_str());
        document.add_text(self.fields.room_id, event.room_id.as_str());
        document.add_text(self.fields.sender, pdu.sender().as_str());
        document.add_text(self.fields.key, key.as_str());
        document.add_text(self.fields.text, text);
        document.add_u64(self.fields.stream, position.0);
        writer.add_document(document)?;
        Ok(true)
    }
}

/// Follows the event stream into the search index until the runtime shuts down: catches up
/// in batches, then waits for the stream to move (the notifier, no polling).
pub async fn run_indexer(services: Arc<Services>) {
    let mut positions = services.rooms.subscribe();
    let mut next_round = tokio::time::Instant::now();
    loop {
        // Rate limiting, not waiting for a condition: events arriving meanwhile stay in the
        // stream and are picked up by the next round.
        tokio::time::sleep_until(next_round).await;
        let worker = Arc::clone(&services);
        let round =
            tokio::task::spawn_blocking(move || worker.search.catch_up(&worker.rooms, BATCH)).await;
        let upto = match round {
            // A backlog is read in full batches, one commit each, without pauses.
            Ok(Ok(round)) if round.read == BATCH => continue,
            Ok(Ok(round)) => {
                if round.committed {
                    next_round = tokio::time::Instant::now() + MIN_COMMIT_INTERVAL;
                }
                round.upto
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "indexing events for search failed; retrying");
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "the search indexing task failed; retrying");
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                continue;
            }
        };
        if positions
            .wait_for(|position| *position > upto)
            .await
            .is_err()
        {
            // The rooms service is gone: the server is shutting down.
            return;
        }
    }
}
