//! The client-server API, one module per endpoint group.

use axon_api::{ApiError, AppState, RumaRouterExt};
use axon_core::Services;
use axon_core::accounts::AccountError;
use axum::Router;
use ruma::api::client::space;
use ruma::api::client::{account, device, discovery, profile, session};
use ruma::api::client::{alias, context, directory, membership, message, redact, room, state};
use ruma::api::client::{knock, relations, threads};

mod account_handlers;
mod backup;
mod dehydrated;
pub(crate) mod delayed_events;
mod devices;
pub(crate) mod discovery_handlers;
mod initial_sync;
mod keys;
pub(crate) mod media;
mod openid;
mod profile_handlers;
mod push;
mod register;
mod rooms;
mod search;
mod session_handlers;
mod sync;
mod to_device;
mod uiaa;
mod user_data;
mod user_directory;
mod voip;

/// Every client-server route.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .ruma_route::<discovery::get_supported_versions::Request, _, _>(
            discovery_handlers::versions,
        )
        .ruma_route::<discovery::discover_homeserver::Request, _, _>(
            discovery_handlers::well_known_client,
        )
        .ruma_route::<discovery::get_capabilities::v3::Request, _, _>(
            discovery_handlers::capabilities,
        )
        .ruma_route::<account::register::v3::Request, _, _>(register::register)
        .ruma_route::<account::get_username_availability::v3::Request, _, _>(
            register::username_available,
        )
        .ruma_route::<account::check_registration_token_validity::v1::Request, _, _>(
            register::registration_token_validity,
        )
        .ruma_route::<session::get_login_types::v3::Request, _, _>(session_handlers::login_types)
        .ruma_route::<session::login::v3::Request, _, _>(session_handlers::login)
        .ruma_route::<session::refresh_token::v3::Request, _, _>(session_handlers::refresh)
        .ruma_route::<session::logout::v3::Request, _, _>(session_handlers::logout)
        .ruma_route::<session::logout_all::v3::Request, _, _>(session_handlers::logout_all)
        .ruma_route::<session::get_login_token::v1::Request, _, _>(
            session_handlers::get_login_token,
        )
        .ruma_route::<account::whoami::v3::Request, _, _>(session_handlers::whoami)
        .ruma_route::<device::get_devices::v3::Request, _, _>(devices::list)
        .ruma_route::<device::get_device::v3::Request, _, _>(devices::get)
        .ruma_route::<device::update_device::v3::Request, _, _>(devices::update)
        .ruma_route::<device::delete_device::v3::Request, _, _>(devices::delete)
        .ruma_route::<device::delete_devices::v3::Request, _, _>(devices::delete_many)
        .ruma_route::<account::change_password::v3::Request, _, _>(
            account_handlers::change_password,
        )
        .ruma_route::<account::deactivate::v3::Request, _, _>(account_handlers::deactivate)
        .ruma_route::<profile::get_profile::v3::Request, _, _>(profile_handlers::get_profile)
        .ruma_route::<profile::get_profile_field::v3::Request, _, _>(profile_handlers::get_field)
        .ruma_route::<profile::set_profile_field::v3::Request, _, _>(profile_handlers::set_field)
        .ruma_route::<profile::delete_profile_field::v3::Request, _, _>(
            profile_handlers::delete_field,
        )
        .ruma_route::<room::create_room::v3::Request, _, _>(rooms::create::create_room)
        .ruma_route::<message::send_message_event::v3::Request, _, _>(rooms::send::send_message)
        .ruma_route::<state::send_state_event::v3::Request, _, _>(rooms::send::send_state)
        .ruma_route::<redact::redact_event::v3::Request, _, _>(rooms::send::redact)
        .ruma_route::<state::get_state_event_for_key::v3::Request, _, _>(rooms::read::state_event)
        .ruma_route::<state::get_state_events::v3::Request, _, _>(rooms::read::state)
        .ruma_route::<room::get_room_event::v3::Request, _, _>(rooms::read::event)
        .ruma_route::<message::get_message_events::v3::Request, _, _>(rooms::messages::messages)
        .ruma_route::<membership::joined_rooms::v3::Request, _, _>(rooms::members::joined_rooms)
        .ruma_route::<membership::get_member_events::v3::Request, _, _>(rooms::members::members)
        .ruma_route::<membership::joined_members::v3::Request, _, _>(rooms::members::joined_members)
        .ruma_route::<membership::join_room_by_id::v3::Request, _, _>(rooms::membership::join_by_id)
        .ruma_route::<membership::join_room_by_id_or_alias::v3::Request, _, _>(
            rooms::membership::join_by_id_or_alias,
        )
        .ruma_route::<membership::leave_room::v3::Request, _, _>(rooms::membership::leave)
        .ruma_route::<membership::invite_user::v3::Request, _, _>(rooms::membership::invite)
        .ruma_route::<membership::kick_user::v3::Request, _, _>(rooms::membership::kick)
        .ruma_route::<membership::ban_user::v3::Request, _, _>(rooms::membership::ban)
        .ruma_route::<membership::unban_user::v3::Request, _, _>(rooms::membership::unban)
        .ruma_route::<membership::forget_room::v3::Request, _, _>(rooms::membership::forget)
        .ruma_route::<knock::knock_room::v3::Request, _, _>(rooms::knock::knock)
        .ruma_route::<room::report_content::v3::Request, _, _>(rooms::report::report_event)
        .ruma_route::<room::report_room::v3::Request, _, _>(rooms::report::report_room)
        .ruma_route::<room::upgrade_room::v3::Request, _, _>(rooms::upgrade::upgrade)
        .ruma_route::<context::get_context::v3::Request, _, _>(rooms::context::context)
        .ruma_route::<alias::create_alias::v3::Request, _, _>(rooms::aliases::create)
        .ruma_route::<alias::get_alias::v3::Request, _, _>(rooms::aliases::get)
        .ruma_route::<alias::delete_alias::v3::Request, _, _>(rooms::aliases::delete)
        .ruma_route::<room::aliases::v3::Request, _, _>(rooms::aliases::room_aliases)
        .ruma_route::<directory::get_room_visibility::v3::Request, _, _>(
            rooms::directory::get_visibility,
        )
        .ruma_route::<directory::set_room_visibility::v3::Request, _, _>(
            rooms::directory::set_visibility,
        )
        .ruma_route::<directory::get_public_rooms::v3::Request, _, _>(
            rooms::directory::public_rooms,
        )
        .ruma_route::<directory::get_public_rooms_filtered::v3::Request, _, _>(
            rooms::directory::public_rooms_filtered,
        )
        .ruma_route::<relations::get_relating_events::v1::Request, _, _>(rooms::relations::relations)
        .ruma_route::<relations::get_relating_events_with_rel_type::v1::Request, _, _>(
            rooms::relations::relations_with_rel_type,
        )
        .ruma_route::<relations::get_relating_events_with_rel_type_and_event_type::v1::Request, _, _>(
            rooms::relations::relations_with_rel_type_and_event_type,
        )
        .ruma_route::<threads::get_threads::v1::Request, _, _>(rooms::threads::threads)
        .ruma_route::<room::get_event_by_timestamp::v1::Request, _, _>(
            rooms::timestamp::timestamp_to_event,
        )
        .ruma_route::<space::get_hierarchy::v1::Request, _, _>(rooms::hierarchy::hierarchy)
        .ruma_route::<room::get_summary::v1::Request, _, _>(rooms::summary::summary)
        .merge(rooms::empty_state_key_routes())
        .merge(sync::routes())
        .merge(user_data::routes())
        .merge(keys::routes())
        .merge(to_device::routes())
        .merge(backup::routes())
        .merge(dehydrated::routes())
        .merge(media::routes())
        .merge(voip::routes())
        .merge(delayed_events::routes())
        .merge(search::routes())
        .merge(user_directory::routes())
        .merge(openid::routes())
        .merge(initial_sync::routes())
        .merge(push::routes())
}

/// Runs accounts work that may hash a password (or otherwise block) on the blocking pool.
pub(crate) async fn blocking<T, F>(state: &AppState, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Services) -> Result<T, AccountError> + Send + 'static,
{
    let services = state.services_arc();
    tokio::task::spawn_blocking(move || work(&services))
        .await
        .map_err(|err| ApiError::internal(format!("blocking task failed: {err}")))?
        .map_err(ApiError::from)
}
