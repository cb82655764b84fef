//! Backfill for local clients: history of a room from before the earliest event this server
//! has (a room joined through another server), asked of the room's other servers with
//! `/backfill`, each event verified ([`verify_pdu`]) and checked by the core before it is
//! stored as history (`Rooms::append_backfilled`: in `/messages`, never in `/sync`).
//!
//! An event whose prev events are not here gets the state before it from the same server
//! (`/state_ids`, then the events not stored here); auth events not stored here are fetched
//! (`/event`) and stored as outliers first. Every fetch is bounded.

use std::sync::Arc;

use axon_core::Services;
use axon_core::rooms::graph::{EventStatus, RoomError};
use axon_core::rooms::pdu::Pdu;
use axon_core::rooms::room_version::RoomVersion;
use ruma::api::federation::backfill::get_backfill;
use ruma::api::federation::event::{get_event, get_room_state_ids};
use ruma::{EventId, OwnedEventId, OwnedServerName, RoomId, UInt};

use super::verify::{canonical_object, verify_pdu};
use crate::Federation;
use crate::error::FederationError;
use crate::outbound::servers_in_room;

/// The most events asked of a server in one `/backfill`.
const BACKFILL_LIMIT: u32 = 100;
/// The most events fetched one by one while storing one backfilled event.
const MAX_FETCHED_PER_EVENT: usize = 500;
/// Rounds of fetching what an event still misses before it is given up.
const MAX_ROUNDS: usize = 5;

/// Backfills `room_id` from the first of its other servers that answers: returns how many
/// events were stored as history (0 when the room's history is complete here, no other
/// server is in the room, or none answers).
pub async fn backfill_room(
    federation: &Federation,
    services: &Arc<Services>,
    room_id: &RoomId,
) -> Result<usize, FederationError> {
    let lookup = room_id.to_owned();
    let worker = Arc::clone(services);
    let (edge, servers, version) = tokio::task::spawn_blocking(move || {
        let rooms = &worker.rooms;
        let version = rooms
            .room_version(&lookup)?
            .ok_or(RoomError::NotFound("room"))?;
        let edge = rooms.backward_extremities(&lookup)?;
        let servers = servers_in_room(&worker, &lookup)?;
        Ok::<_, FederationError>((edge, servers, version))
    })
    .await
    .map_err(|err| FederationError::BuildRequest(err.to_string()))??;
    if edge.is_empty() {
        return Ok(0);
    }
    for server in servers {
        let request = get_backfill::v1::Request::new(
            room_id.to_owned(),
            edge.clone(),
            UInt::from(BACKFILL_LIMIT),
        );
        let response = match federation.client().send(&server, request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(%server, %room_id, %error, "backfill request failed");
                continue;
            }
        };
        let mut events = Vec::with_capacity(response.pdus.len());
        for raw in response.pdus.iter().take(BACKFILL_LIMIT as usize) {
            let verified = match canonical_object(raw) {
                Ok(json) => verify_pdu(federation, &version, json)
                    .await
                    .map_err(|err| err.to_string()),
                Err(err) => Err(err.to_string()),
            };
            match verified {
                Ok(pdu) if pdu.room_id() == room_id => events.push(pdu),
                Ok(_) => tracing::info!(%server, "dropping a backfilled event of another room"),
                Err(error) => tracing::info!(%server, %error, "dropping a backfilled event"),
            }
        }
        // Oldest first, so each event's prev events are stored before it where possible.
        events.sort_by(|a, b| (a.depth(), a.event_id()).cmp(&(b.depth(), b.event_id())));
        let mut stored = 0;
        for pdu in events {
            let event_id = pdu.event_id().to_owned();
            let room = RemoteRoom {
                federation,
                services,
                server: &server,
                room_id,
                version: &version,
            };
            match room.store(pdu).await {
                Ok(true) => stored += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::info!(%server, %event_id, %error, "a backfilled event was not stored");
                }
            }
        }
        return Ok(stored);
    }
    Ok(0)
}

/// A room as one of its servers serves it, for what a backfilled event misses.
struct RemoteRoom<'a> {
    federation: &'a Federation,
    services: &'a Arc<Services>,
    server: &'a OwnedServerName,
    room_id: &'a RoomId,
    version: &'a RoomVersion,
}

impl RemoteRoom<'_> {
    /// Stores `pdu` as history, fetching what it misses; whether it was stored now (not a
    /// duplicate, not rejected).
    async fn store(&self, pdu: Pdu) -> Result<bool, FederationError> {
        let mut state: Option<Vec<Pdu>> = None;
        let mut fetched = 0;
        for _ in 0..MAX_ROUNDS {
            let attempt = {
                let (pdu, state) = (pdu.clone(), state.clone());
                self.locked(move |services, guard| {
                    services.rooms.append_backfilled(guard, pdu, state)
                })
                .await?
            };
            let missing = match attempt {
                Ok(outcome) => {
                    return Ok(!outcome.duplicate && outcome.status == EventStatus::Normal);
                }
                Err(RoomError::MissingEvents(missing)) => missing,
                Err(other) => return Err(other.into()),
            };
            let prev_missing = missing
                .iter()
                .any(|id| pdu.prev_events().iter().any(|prev| prev == id));
            if prev_missing && state.is_none() {
                state = Some(self.state_before(pdu.event_id(), &mut fetched).await?);
            } else {
                self.store_outliers(&missing, &mut fetched).await?;
            }
        }
        Err(FederationError::invalid(
            self.server,
            format!("{} still misses events", pdu.event_id()),
        ))
    }

    /// The state before `event_id` as the server has it.
    async fn state_before(
        &self,
        event_id: &EventId,
        fetched: &mut usize,
    ) -> Result<Vec<Pdu>, FederationError> {
        let request =
            get_room_state_ids::v1::Request::new(event_id.to_owned(), self.room_id.to_owned());
        let ids = self
            .federation
            .client()
            .send(self.server, request)
            .await?
            .pdu_ids;
        let mut state = Vec::with_capacity(ids.len());
        for id in ids {
            let lookup = id.clone();
            let stored = self
                .blocking(move |services| Ok(services.rooms.get_event(&lookup)?))
                .await?;
            match stored {
                Some(stored) => state.push(stored.pdu),
                None => state.push(self.event(&id, fetched).await?),
            }
        }
        Ok(state)
    }

    /// Fetches `ids` and stores them as outliers, with the auth events they miss in turn.
    async fn store_outliers(
        &self,
        ids: &[OwnedEventId],
        fetched: &mut usize,
    ) -> Result<(), FederationError> {
        let mut wanted = ids.to_vec();
        let mut pending: Vec<Pdu> = Vec::new();
        for _ in 0..MAX_ROUNDS {
            for id in std::mem::take(&mut wanted) {
                if !pending.iter().any(|pdu| pdu.event_id() == id) {
                    pending.push(self.event(&id, fetched).await?);
                }
            }
            let batch = pending.clone();
            let result = self
                .locked(move |services, guard| services.rooms.persist_outliers(guard, batch))
                .await?;
            match result {
                Ok(_) => return Ok(()),
                Err(RoomError::MissingEvents(missing)) => wanted = missing,
                Err(other) => return Err(other.into()),
            }
        }
        Err(FederationError::invalid(
            self.server,
            "auth events could not be had",
        ))
    }

    /// `/event/{eventId}`, verified and checked to be the event of this room asked for.
    async fn event(&self, event_id: &EventId, fetched: &mut usize) -> Result<Pdu, FederationError> {
        *fetched += 1;
        if *fetched > MAX_FETCHED_PER_EVENT {
            return Err(FederationError::invalid(
                self.server,
                "too many events to fetch for one backfilled event",
            ));
        }
        let response = self
            .federation
            .client()
            .send(
                self.server,
                get_event::v1::Request::new(event_id.to_owned()),
            )
            .await?;
        let json = canonical_object(&response.pdu)
            .map_err(|err| FederationError::invalid(self.server, err))?;
        let pdu = verify_pdu(self.federation, self.version, json)
            .await
            .map_err(|err| FederationError::invalid(self.server, err))?;
        if pdu.event_id() != event_id || pdu.room_id() != self.room_id {
            return Err(FederationError::invalid(
                self.server,
                format!("asked for {event_id}, got {}", pdu.event_id()),
            ));
        }
        Ok(pdu)
    }

    /// Runs `work` on the blocking pool holding the room's lock.
    async fn locked<T, F>(&self, work: F) -> Result<Result<T, RoomError>, FederationError>
    where
        T: Send + 'static,
        F: FnOnce(&Services, &axon_core::rooms::graph::RoomGuard) -> Result<T, RoomError>
            + Send
            + 'static,
    {
        let guard = self.services.rooms.lock(self.room_id).await;
        let services = Arc::clone(self.services);
        tokio::task::spawn_blocking(move || work(&services, &guard))
            .await
            .map_err(|err| FederationError::BuildRequest(err.to_string()))
    }

    /// Runs `work` on the blocking pool.
    async fn blocking<T, F>(&self, work: F) -> Result<T, FederationError>
    where
        T: Send + 'static,
        F: FnOnce(&Services) -> Result<T, FederationError> + Send + 'static,
    {
        let services = Arc::clone(self.services);
        tokio::task::spawn_blocking(move || work(&services))
            .await
            .map_err(|err| FederationError::BuildRequest(err.to_string()))?
    }
}
