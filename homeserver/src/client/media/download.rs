//! Downloads, thumbnails and the media configuration, on the authenticated
//! `/_matrix/client/v1/media/` endpoints and the legacy unauthenticated `/_matrix/media/v3/`.
//!
//! Every media response carries the headers that stop an uploaded file from acting as a
//! page of this server (stored XSS): a sandboxing `Content-Security-Policy`, `nosniff`, and
//! `Content-Disposition: attachment` for every type outside a short list that browsers only
//! display. Downloads honour a single `Range`.

use std::sync::Arc;
use std::time::Duration;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::media::disposition::is_inline;
use axon_core::media::{
    MediaError, MediaRecord, StoredContent, ThumbnailMethod, ThumbnailRequest, is_valid_media_id,
};
use axon_federation::Federation;
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE, HeaderName, HeaderValue, RANGE, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, StatusCode};
use ruma::api::client::authenticated_media as authenticated;
use ruma::api::client::media as legacy;
use ruma::http_headers::{ContentDisposition, ContentDispositionType};
use ruma::media::Method;
use ruma::{ServerName, UInt};
use tokio::time::Instant;

use super::range::ByteRange;
use super::remote::{self, RemoteRequest};
use super::{blocking, media_error};

/// Longest a download waits for the content of a reserved media id, whatever the client
/// asks in `timeout_ms`.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The policy from the spec's advice on serving user content: no scripts, no plugins
/// other than PDF, nothing loaded from elsewhere, and a sandbox around all of it.
const CONTENT_SECURITY_POLICY_VALUE: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; \
     object-src 'self';";

/// `Cross-Origin-Resource-Policy`, which ruma's header constants do not name.
const CROSS_ORIGIN_RESOURCE_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-resource-policy");

/// The headers every media response carries.
fn media_headers(content_type: &str, filename: Option<String>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let content_type_value = HeaderValue::from_str(content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(CONTENT_TYPE, content_type_value);
    let disposition_type = if is_inline(content_type) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    let disposition = ContentDisposition::new(disposition_type.clone()).with_filename(filename);
    let disposition = HeaderValue::from_str(&disposition.to_string()).unwrap_or_else(|_| {
        HeaderValue::from_str(&ContentDisposition::new(disposition_type).to_string())
            .unwrap_or(HeaderValue::from_static("attachment"))
    });
    headers.insert(CONTENT_DISPOSITION, disposition);
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        CROSS_ORIGIN_RESOURCE_POLICY,
        HeaderValue::from_static("cross-origin"),
    );
    headers
}

/// A media item ready to serve: this server's, or another server's from the cache.
struct Found {
    content: StoredContent,
    content_type: Option<String>,
    filename: Option<String>,
    after_freeze: bool,
}

/// The record of this server's `media_id`, waiting up to `timeout` for the content of a
/// reserved id.
async fn find_local(state: &AppState, media_id: &str, timeout: Duration) -> ApiResult<MediaRecord> {
    if !is_valid_media_id(media_id) {
        return Err(ApiError::not_found("Media not found"));
    }
    let deadline = Instant::now() + timeout.min(MAX_WAIT);
    // Subscribed before the first look, so an upload landing between a look and the wait
    // still wakes the wait.
    let mut uploads = state.services().media.subscribe_uploads();
    loop {
        let id = media_id.to_owned();
        let found = blocking(state, move |services| match services.media.get(&id) {
            Ok(record) => Ok(Some(record)),
            Err(MediaError::NotYetUploaded) => Ok(None),
            Err(other) => Err(other),
        })
        .await?;
        if let Some(record) = found {
            return Ok(record);
        }
        match tokio::time::timeout_at(deadline, uploads.changed()).await {
            Ok(Ok(())) => {}
            _ => return Err(media_error(MediaError::NotYetUploaded)),
        }
    }
}

/// The media `server_name`/`media_id`: this server's, or another's through the cache.
async fn find(
    state: &AppState,
    federation: &Arc<Federation>,
    request: &MediaRequest<'_>,
) -> ApiResult<Found> {
    if request.server_name.as_str() != state.config().server_name {
        let record = remote::original(state, federation, request.remote()).await?;
        let content = record
            .content
            .ok_or_else(|| media_error(MediaError::NotFound))?;
        return Ok(Found {
            content,
            content_type: record.content_type,
            filename: record.filename,
            after_freeze: record.after_freeze,
        });
    }
    let record = find_local(state, request.media_id, request.timeout).await?;
    let content = record
        .content
        .ok_or_else(|| media_error(MediaError::NotFound))?;
    Ok(Found {
        content,
        content_type: record.content_type,
        filename: record.filename,
        after_freeze: record.after_freeze,
    })
}

/// Frozen legacy endpoints do not serve media uploaded (or cached) during the freeze.
fn check_legacy(state: &AppState, after_freeze: bool) -> ApiResult<()> {
    if state.services().media.settings().freeze_legacy_media && after_freeze {
        Err(ApiError::not_found(
            "This media is only available through the authenticated media endpoints",
        ))
    } else {
        Ok(())
    }
}

/// Which media a request names, and how.
struct MediaRequest<'a> {
    server_name: &'a ServerName,
    media_id: &'a str,
    timeout: Duration,
    /// Whether the legacy unauthenticated endpoints are serving.
    legacy: bool,
    /// Whether another server's media may be fetched (`allow_remote`, legacy only).
    allow_remote: bool,
}

impl MediaRequest<'_> {
    fn remote(&self) -> RemoteRequest<'_> {
        RemoteRequest {
            server: self.server_name,
            media_id: self.media_id,
            timeout: self.timeout,
            allow_remote: self.allow_remote,
        }
    }
}

async fn serve_download(
    state: &AppState,
    federation: &Arc<Federation>,
    headers: &HeaderMap,
    request: MediaRequest<'_>,
    filename: Option<String>,
) -> ApiResult<Response> {
    let found = find(state, federation, &request).await?;
    if request.legacy {
        check_legacy(state, found.after_freeze)?;
    }
    let size = found.content.size;
    let range = ByteRange::parse(
        headers.get(RANGE).and_then(|value| value.to_str().ok()),
        size,
    );
    let content_type = found
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let mut response_headers = media_headers(&content_type, filename.or(found.filename.clone()));
    response_headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let content = found.content;
    match range {
        ByteRange::Full => {
            let bytes =
                blocking(state, move |services| services.media.read_content(&content)).await?;
            Ok((StatusCode::OK, response_headers, Body::from(bytes)).into_response())
        }
        ByteRange::Partial { start, end } => {
            let bytes = blocking(state, move |services| {
                services
                    .media
                    .read_content_range(&content, start, end - start + 1)
            })
            .await?;
            let content_range = format!("bytes {start}-{end}/{size}");
            if let Ok(value) = HeaderValue::from_str(&content_range) {
                response_headers.insert(CONTENT_RANGE, value);
            }
            Ok((
                StatusCode::PARTIAL_CONTENT,
                response_headers,
                Body::from(bytes),
            )
                .into_response())
        }
        ByteRange::Unsatisfiable => {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                headers.insert(CONTENT_RANGE, value);
            }
            headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
            Ok((StatusCode::RANGE_NOT_SATISFIABLE, headers).into_response())
        }
    }
}

/// The size and form a thumbnail request asks for.
struct ThumbnailParams {
    width: UInt,
    height: UInt,
    method: Option<Method>,
    animated: Option<bool>,
}

fn dimension(value: UInt, name: &str) -> ApiResult<u32> {
    match u32::try_from(u64::from(value)) {
        Ok(0) => Err(ApiError::invalid_param(format!(
            "{name} must be at least 1"
        ))),
        Ok(value) => Ok(value),
        // Anything this large is served the largest thumbnail anyway.
        Err(_) => Ok(u32::MAX),
    }
}

async fn serve_thumbnail(
    state: &AppState,
    federation: &Arc<Federation>,
    request: MediaRequest<'_>,
    params: ThumbnailParams,
) -> ApiResult<Response> {
    let wanted = ThumbnailRequest {
        width: dimension(params.width, "width")?,
        height: dimension(params.height, "height")?,
        method: match params.method {
            Some(Method::Crop) => ThumbnailMethod::Crop,
            _ => ThumbnailMethod::Scale,
        },
        animated: params.animated.unwrap_or(false),
    };
    let thumbnail = if request.server_name.as_str() == state.config().server_name {
        let record = find_local(state, request.media_id, request.timeout).await?;
        if request.legacy {
            check_legacy(state, record.after_freeze)?;
        }
        let media_id = request.media_id.to_owned();
        blocking(state, move |services| {
            let content = record.content.as_ref().ok_or(MediaError::NotFound)?;
            services.media.thumbnail_for(&media_id, content, wanted)
        })
        .await?
    } else {
        let thumbnail = remote::thumbnail(state, federation, request.remote(), wanted).await?;
        if request.legacy {
            let server = request.server_name.to_owned();
            let media_id = request.media_id.to_owned();
            let after_freeze = blocking(state, move |services| {
                Ok(services
                    .media
                    .remote(&server, &media_id)?
                    .is_some_and(|record| record.after_freeze))
            })
            .await?;
            check_legacy(state, after_freeze)?;
        }
        thumbnail
    };
    let headers = media_headers(&thumbnail.content_type, None);
    Ok((StatusCode::OK, headers, Body::from(thumbnail.content)).into_response())
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
pub(crate) async fn download(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    headers: HeaderMap,
    request: Ruma<authenticated::get_content::v1::Request>,
) -> ApiResult<Response> {
    let body = request.body;
    let request = MediaRequest {
        server_name: &body.server_name,
        media_id: &body.media_id,
        timeout: body.timeout_ms,
        legacy: false,
        allow_remote: true,
    };
    serve_download(&state, &federation, &headers, request, None).await
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
pub(crate) async fn download_as(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    headers: HeaderMap,
    request: Ruma<authenticated::get_content_as_filename::v1::Request>,
) -> ApiResult<Response> {
    let body = request.body;
    let request = MediaRequest {
        server_name: &body.server_name,
        media_id: &body.media_id,
        timeout: body.timeout_ms,
        legacy: false,
        allow_remote: true,
    };
    let filename = Some(body.filename.clone());
    serve_download(&state, &federation, &headers, request, filename).await
}

/// # `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
pub(crate) async fn thumbnail(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<authenticated::get_content_thumbnail::v1::Request>,
) -> ApiResult<Response> {
    let body = request.body;
    let request = MediaRequest {
        server_name: &body.server_name,
        media_id: &body.media_id,
        timeout: body.timeout_ms,
        legacy: false,
        allow_remote: true,
    };
    let params = ThumbnailParams {
        width: body.width,
        height: body.height,
        method: body.method.clone(),
        animated: body.animated,
    };
    serve_thumbnail(&state, &federation, request, params).await
}

/// # `GET /_matrix/client/v1/media/config`
pub(crate) async fn config(
    State(state): State<AppState>,
    _request: Ruma<authenticated::get_media_config::v1::Request>,
) -> ApiResult<RumaResponse<authenticated::get_media_config::v1::Response>> {
    let upload_size = UInt::new_saturating(state.config().media.max_upload_bytes);
    Ok(authenticated::get_media_config::v1::Response::new(upload_size).into())
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}`
///
/// Unauthenticated and deprecated; frozen by `media.freeze_legacy_media`.
#[allow(
    deprecated,
    reason = "the legacy endpoint is deprecated but still served"
)]
pub(crate) async fn legacy_download(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    headers: HeaderMap,
    request: Ruma<legacy::get_content::v3::Request>,
) -> ApiResult<Response> {
    let body = request.body;
    let request = MediaRequest {
        server_name: &body.server_name,
        media_id: &body.media_id,
        timeout: body.timeout_ms,
        legacy: true,
        allow_remote: body.allow_remote,
    };
    serve_download(&state, &federation, &headers, request, None).await
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}`
#[allow(
    deprecated,
    reason = "the legacy endpoint is deprecated but still served"
)]
pub(crate) async fn legacy_download_as(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    headers: HeaderMap,
    request: Ruma<legacy::get_content_as_filename::v3::Request>,
) -> ApiResult<Response> {
    let body = request.body;
    let request = MediaRequest {
        server_name: &body.server_name,
        media_id: &body.media_id,
        timeout: body.timeout_ms,
        legacy: true,
        allow_remote: body.allow_remote,
    };
    let filename = Some(body.filename.clone());
    serve_download(&state, &federation, &headers, request, filename).await
}

/// # `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`
#[allow(
    deprecated,
    reason = "the legacy endpoint is deprecated but still served"
)]
pub(crate) async fn legacy_thumbnail(
    State(state): State<AppState>,
    Extension(federation): Extension<Arc<Federation>>,
    request: Ruma<legacy::get_content_thumbnail::v3::Request>,
) -> ApiResult<Response> {
    let body = request.body;
    let request = MediaRequest {
        server_name: &body.server_name,
        media_id: &body.media_id,
        timeout: body.timeout_ms,
        legacy: true,
        allow_remote: body.allow_remote,
    };
    let params = ThumbnailParams {
        width: body.width,
        height: body.height,
        method: body.method.clone(),
        animated: body.animated,
    };
    serve_thumbnail(&state, &federation, request, params).await
}

/// # `GET /_matrix/media/v3/config`
#[allow(
    deprecated,
    reason = "the legacy endpoint is deprecated but still served"
)]
pub(crate) async fn legacy_config(
    State(state): State<AppState>,
    _request: Ruma<legacy::get_media_config::v3::Request>,
) -> ApiResult<RumaResponse<legacy::get_media_config::v3::Response>> {
    let upload_size = UInt::new_saturating(state.config().media.max_upload_bytes);
    Ok(legacy::get_media_config::v3::Response::new(upload_size).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_headers_sandbox_and_encode_the_filename() {
        let headers = media_headers("text/html", Some("naïve <x>.html".to_owned()));
        assert_eq!(headers[CONTENT_TYPE], "text/html");
        let disposition = headers[CONTENT_DISPOSITION].to_str().unwrap();
        assert!(
            disposition.starts_with("attachment; filename*=utf-8''"),
            "{disposition}"
        );
        assert!(
            headers[CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .starts_with("sandbox;")
        );
        assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[CROSS_ORIGIN_RESOURCE_POLICY], "cross-origin");

        let headers = media_headers("image/png", Some("cat.png".to_owned()));
        assert_eq!(headers[CONTENT_DISPOSITION], "inline; filename=cat.png");

        let headers = media_headers("bad\nvalue", None);
        assert_eq!(headers[CONTENT_TYPE], "application/octet-stream");
    }
}
