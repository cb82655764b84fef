//! Other servers' media for local users: served from the local cache, or fetched over
//! federation ([`axon_federation::media::fetch_media`]) and cached, content-addressed like
//! local media, so the next download makes no request.
//!
//! Concurrent requests for the same item wait on one fetch ([`Media::lock_remote`]) and then
//! find it cached. A `Location` answer is followed with the URL preview's fetcher, which
//! checks every hop's address after resolution. The client's `timeout_ms` bounds the wait
//! for the other server's answer: past it the request is a 504, and an unreachable server
//! is a 502.
//!
//! [`Media::lock_remote`]: axon_core::media::Media::lock_remote

use std::sync::Arc;
use std::time::Duration;

use axon_api::{ApiError, ApiResult, AppState};
use axon_core::media::{RemoteMedia, RemoteMediaRecord, Thumbnail, ThumbnailRequest, remote};
use axon_federation::Federation;
use axon_federation::media::{
    FetchLimits, FetchedMedia, MediaFetchError, MediaRequest, fetch_media,
};
use http::StatusCode;
use ruma::ServerName;
use ruma::api::error::ErrorKind;
use url::Url;

use super::blocking;
use super::preview::{FetchError, Fetcher};

/// Longest a fetch waits for the other server to start answering, whatever `timeout_ms` says.
const MAX_ANSWER_WAIT: Duration = Duration::from_secs(60);

/// Longest a whole fetch may take, content included.
const MAX_FETCH_TIME: Duration = Duration::from_secs(120);

/// What a request for remote media asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteRequest<'a> {
    /// The media's server.
    pub(crate) server: &'a ServerName,
    /// Its id there.
    pub(crate) media_id: &'a str,
    /// The client's `timeout_ms`.
    pub(crate) timeout: Duration,
    /// Whether the media may be fetched (the legacy endpoints' `allow_remote`).
    pub(crate) allow_remote: bool,
}

fn not_found() -> ApiError {
    ApiError::not_found("Media not found")
}

/// The cached original of the remote item, fetched now if it is not cached.
pub(crate) async fn original(
    state: &AppState,
    federation: &Arc<Federation>,
    request: RemoteRequest<'_>,
) -> ApiResult<RemoteMediaRecord> {
    if let Some(record) = cached(state, request).await? {
        return Ok(record);
    }
    if !request.allow_remote {
        return Err(not_found());
    }
    let media = &state.services().media;
    let _fetching = media.lock_remote(request.server, request.media_id).await;
    // Whoever held the lock before may have cached it.
    if let Some(record) = cached(state, request).await? {
        return Ok(record);
    }
    let fetched = fetch(state, federation, request, MediaRequest::Download).await?;
    let server = request.server.to_owned();
    let media_id = request.media_id.to_owned();
    blocking(state, move |services| {
        services.media.store_remote(
            &server,
            &media_id,
            RemoteMedia {
                content: &fetched.content,
                content_type: fetched.content_type.as_deref(),
                filename: fetched.filename.as_deref(),
            },
        )
    })
    .await
}

/// A thumbnail of the remote item: made here from the cached original, served from the
/// thumbnail cache, or fetched from the other server and cached.
pub(crate) async fn thumbnail(
    state: &AppState,
    federation: &Arc<Federation>,
    request: RemoteRequest<'_>,
    thumbnail: ThumbnailRequest,
) -> ApiResult<Thumbnail> {
    if let Some(found) = cached_thumbnail(state, request, thumbnail).await? {
        return Ok(found);
    }
    if !request.allow_remote {
        return Err(not_found());
    }
    let media = &state.services().media;
    let _fetching = media.lock_remote(request.server, request.media_id).await;
    if let Some(found) = cached_thumbnail(state, request, thumbnail).await? {
        return Ok(found);
    }
    let what = MediaRequest::Thumbnail {
        width: thumbnail.width,
        height: thumbnail.height,
        method: thumbnail.method,
        animated: thumbnail.animated,
    };
    let fetched = fetch(state, federation, request, what).await?;
    let found = Thumbnail {
        content: fetched.content,
        content_type: fetched
            .content_type
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
    };
    if thumbnail.animated {
        // An animated answer may be the original itself, not the size it would be filed
        // under: served, not cached.
        return Ok(found);
    }
    let server = request.server.to_owned();
    let media_id = request.media_id.to_owned();
    blocking(state, move |services| {
        services.media.store_remote_thumbnail(
            &server,
            &media_id,
            thumbnail.width,
            thumbnail.height,
            thumbnail.method,
            &found,
        )?;
        Ok(found)
    })
    .await
}

async fn cached(
    state: &AppState,
    request: RemoteRequest<'_>,
) -> ApiResult<Option<RemoteMediaRecord>> {
    let server = request.server.to_owned();
    let media_id = request.media_id.to_owned();
    let record = blocking(state, move |services| {
        services.media.remote(&server, &media_id)
    })
    .await?;
    Ok(record.filter(|record| record.content.is_some()))
}

async fn cached_thumbnail(
    state: &AppState,
    request: RemoteRequest<'_>,
    thumbnail: ThumbnailRequest,
) -> ApiResult<Option<Thumbnail>> {
    let server = request.server.to_owned();
    let media_id = request.media_id.to_owned();
    blocking(state, move |services| {
        let media = &services.media;
        let Some(record) = media.remote(&server, &media_id)? else {
            return Ok(None);
        };
        if let Some(content) = &record.content {
            let key = remote::cache_key(&server, &media_id);
            return media.thumbnail_for(&key, content, thumbnail).map(Some);
        }
        if thumbnail.animated {
            return Ok(None);
        }
        media.cached_remote_thumbnail(
            &server,
            &media_id,
            thumbnail.width,
            thumbnail.height,
            thumbnail.method,
        )
    })
    .await
}

/// Content fetched from another server.
struct Fetched {
    content: Vec<u8>,
    content_type: Option<String>,
    filename: Option<String>,
}

/// Asks the other server, following a `Location` answer.
async fn fetch(
    state: &AppState,
    federation: &Arc<Federation>,
    request: RemoteRequest<'_>,
    what: MediaRequest,
) -> ApiResult<Fetched> {
    let max_bytes = state.config().media.max_upload_bytes;
    let limits = FetchLimits::new(
        max_bytes,
        request.timeout.min(MAX_ANSWER_WAIT),
        MAX_FETCH_TIME,
    );
    let answer = fetch_media(federation, request.server, request.media_id, what, limits)
        .await
        .map_err(|error| {
            match &error {
                MediaFetchError::NotFound => {}
                other => tracing::info!(
                    server = %request.server,
                    media_id = request.media_id,
                    error = %other,
                    "cannot fetch remote media"
                ),
            }
            ApiError::from(error)
        })?;
    match answer {
        FetchedMedia::File {
            content,
            content_type,
            filename,
        } => Ok(Fetched {
            content,
            content_type,
            filename,
        }),
        FetchedMedia::Location(location) => {
            follow_location(state, &location, max_bytes, request.timeout).await
        }
    }
}

/// Fetches a `Location` answer's URL with the outbound address checks of URL previews.
async fn follow_location(
    state: &AppState,
    location: &str,
    max_bytes: u64,
    timeout: Duration,
) -> ApiResult<Fetched> {
    let url =
        Url::parse(location).map_err(|error| bad_gateway(format!("bad Location: {error}")))?;
    // The configuration that lets federation reach private addresses (test rigs) lets these
    // fetches reach them too.
    let allow_private = state.config().federation.allow_private_addresses;
    let fetcher = Fetcher::with_limits(allow_private, max_bytes, timeout.min(MAX_FETCH_TIME))?;
    let fetched = match fetcher.fetch(url).await {
        Ok(fetched) => fetched,
        Err(FetchError::TooLarge) => {
            return Err(ApiError::with_status(
                StatusCode::BAD_GATEWAY,
                ErrorKind::TooLarge,
                "The remote media is larger than this server serves",
            ));
        }
        Err(error) => return Err(bad_gateway(error.to_string())),
    };
    let filename = fetched
        .url
        .path_segments()
        .and_then(|mut segments| segments.next_back().map(str::to_owned))
        .filter(|name| !name.is_empty());
    Ok(Fetched {
        content: fetched.body,
        content_type: fetched.content_type,
        filename,
    })
}

fn bad_gateway(reason: String) -> ApiError {
    tracing::info!(%reason, "cannot follow a remote media Location");
    ApiError::with_status(
        StatusCode::BAD_GATEWAY,
        ErrorKind::Unknown,
        "The remote media could not be fetched",
    )
}
