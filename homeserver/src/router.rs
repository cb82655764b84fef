//! Router assembly: every API crate's routes, the health endpoints, the spec's fallbacks for
//! unknown endpoints and methods, CORS, and the observability layers.

use std::sync::Arc;

use axon_api::{ApiError, AppState};
use axon_core::Services;
use axon_core::storage::catalogue::META;
use axum::Router;
use http::{HeaderName, Method, header};
use tower_http::cors::{Any, CorsLayer};

use crate::client;
use crate::observability::{self, Metrics};

/// The key `/ready` writes and reads back to prove storage is open and writable.
const READINESS_KEY: &[u8] = b"readiness_probe";

/// The whole public application: client, federation and admin APIs plus `/health` and
/// `/ready`.
pub(crate) fn build(state: AppState, metrics: Metrics) -> Router {
    let services = state.services_arc();
    let probe = move || {
        let services = Arc::clone(&services);
        async move {
            tokio::task::spawn_blocking(move || storage_is_writable(&services))
                .await
                .map_err(|_| "readiness check did not finish".to_owned())?
        }
    };

    let app = Router::new()
        .merge(client::routes())
        .merge(axon_federation::routes())
        .merge(axon_admin_api::routes())
        .with_state(state)
        .merge(observability::health_router(probe))
        .fallback(|| async { ApiError::unrecognized() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() });
    observability::instrument(app, metrics).layer(cors())
}

fn storage_is_writable(services: &Services) -> Result<(), String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos().to_be_bytes().to_vec())
        .unwrap_or_default();
    services
        .store
        .put(&META, READINESS_KEY, &stamp)
        .map_err(|err| err.to_string())?;
    match services.store.get(&META, READINESS_KEY) {
        Ok(Some(read)) if read == stamp => Ok(()),
        Ok(_) => Err("storage did not return what was written".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

/// CORS as the client-server spec asks, so browser clients on any origin can call the API.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
        ])
}
