//! Route registration from ruma's endpoint metadata: one call registers every path an
//! endpoint has had (r0, v3, v1, unstable prefixes), so no spec path is typed by hand.

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};
use ruma::api::IncomingRequest;
use ruma::api::path_builder::PathBuilder;

use crate::state::AppState;

/// Adds ruma-described routes to a router.
pub trait RumaRouterExt {
    /// Routes every path of endpoint `R` with `R`'s method to `handler`.
    #[must_use]
    fn ruma_route<R, H, T>(self, handler: H) -> Self
    where
        R: IncomingRequest,
        H: Handler<T, AppState>,
        T: 'static;
}

impl RumaRouterExt for Router<AppState> {
    fn ruma_route<R, H, T>(self, handler: H) -> Self
    where
        R: IncomingRequest,
        H: Handler<T, AppState>,
        T: 'static,
    {
        let Ok(filter) = MethodFilter::try_from(R::METHOD) else {
            tracing::error!(method = %R::METHOD, "endpoint uses a method axum cannot route");
            return self;
        };
        let mut router = self;
        let mut seen = Vec::new();
        for path in R::PATH_BUILDER.all_paths() {
            // Some endpoints list one path under several versions.
            if seen.contains(&path) {
                continue;
            }
            seen.push(path);
            router = router.route(path, on(filter, handler.clone()));
        }
        router
    }
}
