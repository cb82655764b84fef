//! The media repository API: uploads (`/_matrix/media/v3/upload`, asynchronous uploads via
//! `/_matrix/media/v1/create`), downloads and thumbnails (authenticated under
//! `/_matrix/client/v1/media/`, and the legacy unauthenticated `/_matrix/media/v3/`), the
//! media configuration, and URL previews.
//!
//! Uploads read their body themselves, under `media.max_upload_bytes`, instead of through
//! the `Ruma` extractor and its `http.max_request_bytes` limit; downloads build their own
//! responses, for the headers that keep uploaded files from running as part of this
//! server's origin and for range requests. Both are still routed from ruma's metadata.
//!
//! Another server's media is fetched over federation and cached ([`remote`]); the cache and
//! lapsed reservations are expired by [`run_cleanup`].

mod address;
mod download;
mod opengraph;
mod preview;
mod range;
mod remote;
mod upload;

use axon_api::{ApiError, ApiResult, AppState, RumaRouterExt};
use axon_core::Services;
use axon_core::media::{CleanupReport, MediaError, ThumbnailError};
use axum::Router;
use http::StatusCode;
use ruma::api::client::authenticated_media as authenticated;
use ruma::api::client::media as legacy;
use ruma::api::error::{ErrorKind, LimitExceededErrorData};

/// Every media route.
#[allow(
    deprecated,
    reason = "the legacy unauthenticated endpoints are deprecated but still served"
)]
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .ruma_route::<legacy::create_content::v3::Request, _, _>(upload::upload)
        .ruma_route::<legacy::create_mxc_uri::v1::Request, _, _>(upload::create)
        .ruma_route::<legacy::create_content_async::v3::Request, _, _>(upload::upload_reserved)
        .ruma_route::<authenticated::get_content::v1::Request, _, _>(download::download)
        .ruma_route::<authenticated::get_content_as_filename::v1::Request, _, _>(
            download::download_as,
        )
        .ruma_route::<authenticated::get_content_thumbnail::v1::Request, _, _>(download::thumbnail)
        .ruma_route::<authenticated::get_media_config::v1::Request, _, _>(download::config)
        .ruma_route::<authenticated::get_media_preview::v1::Request, _, _>(preview::preview)
        .ruma_route::<legacy::get_content::v3::Request, _, _>(download::legacy_download)
        .ruma_route::<legacy::get_content_as_filename::v3::Request, _, _>(
            download::legacy_download_as,
        )
        .ruma_route::<legacy::get_content_thumbnail::v3::Request, _, _>(download::legacy_thumbnail)
        .ruma_route::<legacy::get_media_config::v3::Request, _, _>(download::legacy_config)
        .ruma_route::<legacy::get_media_preview::v3::Request, _, _>(preview::legacy_preview)
}

/// The client API's answer to a media error.
pub(crate) fn media_error(error: MediaError) -> ApiError {
    match error {
        MediaError::NotFound => ApiError::not_found("Media not found"),
        MediaError::TooLarge { .. } | MediaError::QuotaExceeded { .. } => {
            ApiError::too_large(error.to_string())
        }
        MediaError::NotCreator => ApiError::forbidden(error.to_string()),
        MediaError::AlreadyUploaded => ApiError::with_status(
            StatusCode::CONFLICT,
            ErrorKind::CannotOverwriteMedia,
            "This media id already has content",
        ),
        MediaError::NotYetUploaded => ApiError::with_status(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::NotYetUploaded,
            "The media has not been uploaded yet",
        ),
        MediaError::TooManyPending { .. } => ApiError::with_status(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::LimitExceeded(LimitExceededErrorData::new()),
            error.to_string(),
        ),
        MediaError::Thumbnail(ThumbnailError::NotAnImage(reason)) => ApiError::with_status(
            StatusCode::BAD_REQUEST,
            ErrorKind::Unknown,
            format!("Cannot generate a thumbnail for this content: {reason}"),
        ),
        MediaError::Thumbnail(ThumbnailError::TooLarge(reason)) => {
            ApiError::too_large(format!("The image is too large to thumbnail: {reason}"))
        }
        other => ApiError::internal(other),
    }
}

/// Runs synchronous media work (store reads and writes, file I/O, image decoding) on the
/// blocking pool.
pub(crate) async fn blocking<T, F>(state: &AppState, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Services) -> Result<T, MediaError> + Send + 'static,
{
    let services = state.services_arc();
    tokio::task::spawn_blocking(move || work(&services))
        .await
        .map_err(|err| ApiError::internal(format!("blocking task failed: {err}")))?
        .map_err(media_error)
}

/// Most items one cleanup step removes before it yields, so a large backlog does not hold
/// a blocking thread for long.
const CLEANUP_BATCH: usize = 256;

/// The media cleanup: every `media.cleanup_interval_secs`, removes cached remote media not
/// downloaded for `media.remote_cache_max_age_days` (when set) and reservations whose
/// upload window lapsed. Runs until the server stops.
pub(crate) async fn run_cleanup(state: AppState) {
    let config = &state.config().media;
    let interval = config.cleanup_interval();
    let max_age = config.remote_cache_max_age();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = cleanup_once(&state, max_age).await {
            tracing::warn!(error = %error.message(), "media cleanup failed; retrying next run");
        }
    }
}

/// One cleanup run, in batches until nothing is left to remove.
async fn cleanup_once(state: &AppState, max_age: Option<std::time::Duration>) -> ApiResult<()> {
    let mut total = CleanupReport::default();
    loop {
        let report = blocking(state, move |services| {
            let now = axon_core::accounts::now_ms();
            let mut report = services
                .media
                .remove_lapsed_reservations(now, CLEANUP_BATCH)?;
            if let Some(max_age) = max_age {
                let age = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
                let remote = services
                    .media
                    .remove_stale_remote(now.saturating_sub(age), CLEANUP_BATCH)?;
                report.remote_removed = remote.remote_removed;
                report.bytes_freed = remote.bytes_freed;
            }
            Ok(report)
        })
        .await?;
        total.remote_removed += report.remote_removed;
        total.reservations_removed += report.reservations_removed;
        total.bytes_freed += report.bytes_freed;
        let batch = u64::try_from(CLEANUP_BATCH).unwrap_or(u64::MAX);
        if report.remote_removed < batch && report.reservations_removed < batch {
            break;
        }
    }
    if total != CleanupReport::default() {
        tracing::info!(
            remote_removed = total.remote_removed,
            reservations_removed = total.reservations_removed,
            bytes_freed = total.bytes_freed,
            "media cleanup"
        );
    }
    Ok(())
}
