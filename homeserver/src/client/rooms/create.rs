//! `POST /createRoom`.

use std::sync::Arc;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::rooms::aliases::{self, AliasError};
use axon_core::rooms::directory;
use axon_core::rooms::graph::{CreateRoom, InitialStateEvent, RoomError, RoomPreset};
use axon_core::rooms::room_version::{RoomVersion, default_room_version};
use axon_federation::Federation;
use axum::Extension;
use axum::extract::State;
use ruma::api::client::room::Visibility;
use ruma::api::client::room::create_room;
use ruma::api::client::room::create_room::v3::RoomPreset as ApiPreset;
use ruma::api::error::ErrorKind;
use ruma::events::StateEventType;
use ruma::serde::Raw;
use ruma::{OwnedRoomAliasId, RoomAliasId};
use serde_json::Value;

use super::{blocking, canonical_content};

/// # `POST /_matrix/client/v3/createRoom`
pub(crate) async fn create_room(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<create_room::v3::Request>,
) -> ApiResult<RumaResponse<create_room::v3::Response>> {
    let creator = request.identity.user_id;
    let inviter = creator.clone();
    let is_direct = request.body.is_direct;
    let body = request.body;
    let room_version = match &body.room_version {
        Some(version) => RoomVersion::new(version),
        None => default_room_version(&state.config().rooms.default_room_version),
    }
    .map_err(RoomError::from)?;
    let preset = match &body.preset {
        Some(preset) => preset_of(preset)?,
        None => RoomPreset::for_visibility(body.visibility == Visibility::Public),
    };
    let initial_state = body
        .initial_state
        .iter()
        .map(initial_state_event)
        .collect::<Result<Vec<_>, _>>()?;
    let power_level_content_override = body
        .power_level_content_override
        .as_ref()
        .map(canonical_content)
        .transpose()?;
    let creation_content = body
        .creation_content
        .as_ref()
        .map(canonical_content)
        .transpose()?;
    let alias = body
        .room_alias_name
        .as_deref()
        .map(|name| local_alias(&state, name))
        .transpose()?;
    let profile = state.services().accounts.profile(&creator)?;

    let mut create = CreateRoom::new(creator, room_version);
    create.preset = preset;
    create.name = body.name;
    create.topic = body.topic;
    // Users of other servers are invited through their servers once the room exists.
    let (local_invites, remote_invites): (Vec<_>, Vec<_>) = body
        .invite
        .into_iter()
        .partition(|user| user.server_name().as_str() == state.config().server_name);
    create.invites = local_invites;
    create.initial_state = initial_state;
    create.power_level_content_override = power_level_content_override;
    create.creation_content = creation_content;
    create.is_direct = body.is_direct;
    create.creator_displayname = profile.displayname;
    create.creator_avatar_url = profile.avatar_url;
    if !create
        .initial_state
        .iter()
        .any(|event| event.kind == StateEventType::RoomCanonicalAlias && event.state_key.is_empty())
    {
        create.canonical_alias.clone_from(&alias);
    }
    let publish = body.visibility == Visibility::Public;
    let room_id = blocking(&state, move |services| {
        if let Some(alias) = &alias
            && aliases::resolve(&*services.store, alias)
                .map_err(ApiError::internal)?
                .is_some()
        {
            return Err(alias_in_use(alias));
        }
        let creator = create.creator.clone();
        let room_id = services.rooms.create_room(create)?;
        if let Some(alias) = &alias {
            // Taken between the check and now by a concurrent request: the room exists but
            // the alias is someone else's.
            aliases::create(&services.rooms, alias, &room_id, &creator).map_err(
                |err| match err {
                    AliasError::InUse(_) => alias_in_use(alias),
                    other => ApiError::internal(other),
                },
            )?;
        }
        if publish {
            directory::set_published(&*services.store, &room_id, true)
                .map_err(ApiError::internal)?;
        }
        Ok(room_id)
    })
    .await?;
    for invitee in remote_invites {
        // The room exists for the client whatever other servers answer: a failed invite is
        // logged, not an error of the creation.
        if let Err(error) = super::membership::invite_remote(
            &state,
            &federation,
            &room_id,
            &inviter,
            &invitee,
            None,
            is_direct,
        )
        .await
        {
            tracing::info!(%room_id, %invitee, error = %error.message(), "remote invite failed");
        }
    }
    Ok(create_room::v3::Response::new(room_id).into())
}

/// `#{name}:{our server}`, for `room_alias_name` (`M_INVALID_PARAM` when not a valid alias).
fn local_alias(state: &AppState, name: &str) -> Result<OwnedRoomAliasId, ApiError> {
    let server = state.services().rooms.server_name().to_owned();
    OwnedRoomAliasId::try_from(format!("#{name}:{server}"))
        .map_err(|err| ApiError::invalid_param(format!("Invalid room_alias_name {name:?}: {err}")))
}

fn alias_in_use(alias: &RoomAliasId) -> ApiError {
    ApiError::new(
        ErrorKind::RoomInUse,
        format!("Room alias {alias} already exists"),
    )
}

fn preset_of(preset: &ApiPreset) -> Result<RoomPreset, ApiError> {
    match preset {
        ApiPreset::PrivateChat => Ok(RoomPreset::PrivateChat),
        ApiPreset::TrustedPrivateChat => Ok(RoomPreset::TrustedPrivateChat),
        ApiPreset::PublicChat => Ok(RoomPreset::PublicChat),
        other => Err(ApiError::bad_json(format!(
            "unknown preset {:?}",
            other.as_str()
        ))),
    }
}

fn initial_state_event<T>(raw: &Raw<T>) -> Result<InitialStateEvent, ApiError> {
    let entry: Value = serde_json::from_str(raw.json().get())
        .map_err(|err| ApiError::bad_json(format!("invalid initial_state event: {err}")))?;
    let kind = entry["type"]
        .as_str()
        .ok_or_else(|| ApiError::bad_json("initial_state event without a `type`"))?;
    let state_key = match &entry["state_key"] {
        Value::Null => "",
        Value::String(key) => key.as_str(),
        _ => {
            return Err(ApiError::bad_json(
                "initial_state `state_key` is not a string",
            ));
        }
    };
    let content = serde_json::from_value(entry["content"].clone()).map_err(|err| {
        ApiError::bad_json(format!(
            "initial_state content is not canonical JSON: {err}"
        ))
    })?;
    Ok(InitialStateEvent {
        kind: StateEventType::from(kind),
        state_key: state_key.to_owned(),
        content,
    })
}
