//! Membership across servers: joining rooms of other servers for local users ([`remote`]),
//! invites both ways ([`invite`]), knocks and leaves of rooms this server is not in
//! ([`out_of_room`]), the history of rooms joined through another server ([`backfill`]), and
//! serving joins, leaves and knocks for other servers' users in rooms this server is in
//! (`serve`).

pub mod backfill;
pub mod invite;
pub mod out_of_room;
pub mod remote;
mod serve;
pub mod verify;

use axon_api::{AppState, RumaRouterExt};
use axum::Router;
use ruma::api::federation::membership::{
    create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
    prepare_knock_event, prepare_leave_event,
};

pub use self::backfill::backfill_room;
pub use self::invite::{InviteError, invite_remote};
pub use self::out_of_room::{RemoteMembershipError, knock_remote, leave_out_of_room};
pub use self::remote::{
    JoinError, event_from_template, join_candidates, join_remote, query_profile, resolve_alias,
};

/// The membership routes (the caller puts them behind the `X-Matrix` verification layer).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .ruma_route::<prepare_join_event::v1::Request, _, _>(serve::make_join)
        .ruma_route::<create_join_event::v2::Request, _, _>(serve::send_join_v2)
        .ruma_route::<prepare_leave_event::v1::Request, _, _>(serve::make_leave)
        .ruma_route::<create_leave_event::v2::Request, _, _>(serve::send_leave_v2)
        .ruma_route::<prepare_knock_event::v1::Request, _, _>(serve::make_knock)
        .ruma_route::<create_knock_event::v1::Request, _, _>(serve::send_knock)
        .ruma_route::<create_invite::v2::Request, _, _>(invite::invite_v2)
}
