//! Memberships of local users in rooms this server is not in, changed through a resident
//! server: knocking (`make_knock`/`send_knock`), and leaving a room we were only invited to or
//! knocked on (`make_leave`/`send_leave` v2), which rejects the invite or withdraws the knock.
//!
//! The outcome is recorded as the user's out-of-room membership
//! ([`axon_core::rooms::graph::OutOfRoomMembership`]), which their `/sync` shows. A rejection
//! that no resident server accepts (all unreachable) is still recorded here, with a leave
//! signed by us that is never sent: the user is done with the invite either way.

use std::sync::Arc;

use axon_core::Services;
use axon_core::rooms::graph::{NewOutOfRoomMembership, OutOfRoomMembership, StreamPosition};
use axon_core::rooms::pdu::Pdu;
use axon_core::rooms::room_version::{RoomVersion, supported_room_versions};
use ruma::api::federation::membership::{
    create_knock_event, create_leave_event, prepare_knock_event, prepare_leave_event,
};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, RoomId, UserId};
use serde_json::value::to_raw_value;

use super::invite::stripped_json;
use super::remote::event_from_template;
use super::verify::canonical_object;
use crate::Federation;
use crate::error::FederationError;

/// Why a membership change through a resident server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteMembershipError {
    /// No server was given or could be asked.
    #[error("no server to reach the room through")]
    NoServers,
    /// Every server was tried; the last error is kept.
    #[error("going through {server} failed: {reason}")]
    Failed {
        /// The last server tried.
        server: OwnedServerName,
        /// Why it failed.
        reason: String,
    },
    /// A resident server refused (forbidden, incompatible version).
    #[error("{0}")]
    Refused(FederationError),
    /// Recording the outcome here failed.
    #[error(transparent)]
    Local(FederationError),
}

/// Knocks on `room_id` for `user_id` (a local user) through the first of `servers` that
/// answers, with `reason`, and records the knock with the room's stripped state. Returns its
/// stream position.
pub async fn knock_remote(
    federation: &Federation,
    services: &Arc<Services>,
    room_id: &RoomId,
    user_id: &UserId,
    servers: &[OwnedServerName],
    reason: Option<String>,
) -> Result<StreamPosition, RemoteMembershipError> {
    let own = services.rooms.server_name().to_owned();
    let mut last = None;
    for server in servers.iter().filter(|server| **server != own) {
        match knock_through(
            federation,
            services,
            server,
            room_id,
            user_id,
            reason.clone(),
        )
        .await
        {
            Ok(knocked) => {
                return record(
                    services,
                    knocked.0,
                    knocked.1,
                    knocked.2,
                    servers_from(server, servers),
                )
                .await;
            }
            Err(error) => {
                tracing::info!(%server, %room_id, %error, "remote knock attempt failed");
                if refused(&error) {
                    return Err(RemoteMembershipError::Refused(error));
                }
                last = Some((server.clone(), error.to_string()));
            }
        }
    }
    Err(match last {
        Some((server, reason)) => RemoteMembershipError::Failed { server, reason },
        None => RemoteMembershipError::NoServers,
    })
}

/// Leaves a room this server is not in, where the user's membership is `previous` (an invite
/// or a knock): through the servers of the room (those recorded with it first), else, when
/// none of them takes the leave, here only. Returns the leave's stream position and whether a
/// resident server took it.
pub async fn leave_out_of_room(
    federation: &Federation,
    services: &Arc<Services>,
    previous: OutOfRoomMembership,
    extra_servers: &[OwnedServerName],
    reason: Option<String>,
) -> Result<(StreamPosition, bool), RemoteMembershipError> {
    let own = services.rooms.server_name().to_owned();
    let mut servers = previous.servers.clone();
    let sender_server = previous.event.sender().server_name().to_owned();
    for server in std::iter::once(sender_server).chain(extra_servers.iter().cloned()) {
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    for server in servers.iter().filter(|server| **server != own) {
        match leave_through(
            federation,
            services,
            server,
            &previous.room_id,
            &previous.user_id,
            reason.clone(),
        )
        .await
        {
            Ok((leave, version)) => {
                let position = record(
                    services,
                    leave,
                    version,
                    previous.stripped_state.clone(),
                    servers.clone(),
                )
                .await?;
                return Ok((position, true));
            }
            Err(error) => {
                tracing::info!(
                    %server, room_id = %previous.room_id, %error,
                    "remote leave attempt failed"
                );
            }
        }
    }
    // Nobody took it: the user is still done with the invite or knock, here.
    let leave = services
        .rooms
        .local_out_of_room_leave(&previous, reason)
        .map_err(|err| RemoteMembershipError::Local(err.into()))?;
    let position = record(
        services,
        leave,
        previous.room_version.clone(),
        previous.stripped_state.clone(),
        servers,
    )
    .await?;
    Ok((position, false))
}

/// `server` first, then the others of `servers`.
fn servers_from(server: &OwnedServerName, servers: &[OwnedServerName]) -> Vec<OwnedServerName> {
    let mut out = vec![server.clone()];
    out.extend(servers.iter().filter(|other| *other != server).cloned());
    out
}

fn refused(error: &FederationError) -> bool {
    matches!(
        error,
        FederationError::Remote { errcode, .. }
            if errcode == "M_FORBIDDEN" || errcode == "M_INCOMPATIBLE_ROOM_VERSION"
    )
}

/// Records `event` as its user's out-of-room membership, under the room's lock.
async fn record(
    services: &Arc<Services>,
    event: Pdu,
    room_version: RoomVersion,
    stripped_state: Vec<serde_json::Value>,
    servers: Vec<OwnedServerName>,
) -> Result<StreamPosition, RemoteMembershipError> {
    let guard = services.rooms.lock(event.room_id()).await;
    let worker = Arc::clone(services);
    tokio::task::spawn_blocking(move || {
        worker.rooms.record_out_of_room_membership(
            &guard,
            NewOutOfRoomMembership {
                event,
                room_version,
                stripped_state,
                servers,
            },
        )
    })
    .await
    .map_err(|err| RemoteMembershipError::Local(FederationError::BuildRequest(err.to_string())))?
    .map_err(|err| RemoteMembershipError::Local(err.into()))
}

fn reason_content(reason: Option<String>) -> CanonicalJsonObject {
    let mut content = CanonicalJsonObject::new();
    if let Some(reason) = reason {
        content.insert("reason".to_owned(), CanonicalJsonValue::String(reason));
    }
    content
}

/// `make_knock` then `send_knock` through `server`: the knock, the room's version and the
/// stripped state it answered with.
async fn knock_through(
    federation: &Federation,
    services: &Arc<Services>,
    server: &OwnedServerName,
    room_id: &RoomId,
    user_id: &UserId,
    reason: Option<String>,
) -> Result<(Pdu, RoomVersion, Vec<serde_json::Value>), FederationError> {
    let mut make = prepare_knock_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
    make.ver = supported_room_versions()
        .map(|version| version.id().clone())
        .collect();
    let made = federation.client().send(server, make).await?;
    let version = RoomVersion::new(&made.room_version)
        .map_err(|err| FederationError::invalid(server, err))?;
    let template =
        canonical_object(&made.event).map_err(|err| FederationError::invalid(server, err))?;
    let knock = event_from_template(
        services,
        &template,
        &version,
        room_id,
        user_id,
        reason_content(reason),
    )
    .map_err(|err| FederationError::invalid(server, err))?;
    check_membership(&knock, "knock").map_err(|reason| FederationError::invalid(server, reason))?;
    let send = create_knock_event::v1::Request::new(
        room_id.to_owned(),
        knock.event_id().to_owned(),
        to_raw_value(knock.json()).map_err(|err| FederationError::BuildRequest(err.to_string()))?,
    );
    let answer = federation.client().send(server, send).await?;
    let stripped = answer
        .knock_room_state
        .iter()
        .filter_map(stripped_json)
        .collect();
    Ok((knock, version, stripped))
}

/// `make_leave` then `send_leave` v2 through `server`: the leave and the room's version.
async fn leave_through(
    federation: &Federation,
    services: &Arc<Services>,
    server: &OwnedServerName,
    room_id: &RoomId,
    user_id: &UserId,
    reason: Option<String>,
) -> Result<(Pdu, RoomVersion), FederationError> {
    let make = prepare_leave_event::v1::Request::new(room_id.to_owned(), user_id.to_owned());
    let made = federation.client().send(server, make).await?;
    let version_id = made.room_version.unwrap_or(ruma::RoomVersionId::V1);
    let version =
        RoomVersion::new(&version_id).map_err(|err| FederationError::invalid(server, err))?;
    let template =
        canonical_object(&made.event).map_err(|err| FederationError::invalid(server, err))?;
    let leave = event_from_template(
        services,
        &template,
        &version,
        room_id,
        user_id,
        reason_content(reason),
    )
    .map_err(|err| FederationError::invalid(server, err))?;
    check_membership(&leave, "leave").map_err(|reason| FederationError::invalid(server, reason))?;
    let send = create_leave_event::v2::Request::new(
        room_id.to_owned(),
        leave.event_id().to_owned(),
        to_raw_value(leave.json()).map_err(|err| FederationError::BuildRequest(err.to_string()))?,
    );
    federation.client().send(server, send).await?;
    Ok((leave, version))
}

/// Whether a template made the event with `membership` (a resident could hand a join for a
/// leave).
fn check_membership(pdu: &Pdu, membership: &str) -> Result<(), String> {
    match pdu.content_object().get("membership") {
        Some(CanonicalJsonValue::String(value)) if value == membership => Ok(()),
        _ => Err(format!("the template is not a {membership}")),
    }
}
