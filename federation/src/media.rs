//! Media over federation: serving this server's media to other servers
//! (`GET /_matrix/federation/v1/media/download/{mediaId}` and `/thumbnail/{mediaId}`, both
//! behind `X-Matrix`), and fetching other servers' media for local users.
//!
//! Both answers are `multipart/mixed`: a JSON metadata part (`{}`) and the content part. The
//! body is built and parsed by ruma's types for these endpoints (random boundary, headers of
//! each part), so nothing here writes multipart by hand.
//!
//! Fetching streams the answer under a size limit and a deadline, so a hostile server cannot
//! make this one buffer more than the limit or wait forever. A server that does not know the
//! federation endpoints (404 `M_UNRECOGNIZED`, or 400) is asked through the legacy
//! `/_matrix/media/v3/download` with `allow_remote=false`. A `Location` answer is returned as
//! it is: following it is a fetch of an arbitrary URL, which the caller makes with its
//! outbound address checks.

use std::time::Duration;

use axon_api::{ApiError, ApiResult, AppState, Ruma, RumaResponse};
use axon_core::Services;
use axon_core::media::disposition::is_inline;
use axon_core::media::{MediaError, ThumbnailError, ThumbnailMethod, is_valid_media_id};
use axum::extract::State;
use http::StatusCode;
use http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use ruma::api::IncomingResponse;
use ruma::api::error::ErrorKind;
use ruma::api::federation::authenticated_media::{
    Content, ContentMetadata, FileOrLocation, get_content, get_content_thumbnail,
};
use ruma::http_headers::{ContentDisposition, ContentDispositionType};
use ruma::media::Method;
use ruma::{ServerName, UInt};
use tokio::time::Instant;

use crate::Federation;
use crate::error::FederationError;

/// Room for the multipart framing and the metadata part around the content, on top of the
/// content's own limit.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------

/// The federation API's answer to a media error.
fn serve_error(error: MediaError) -> ApiError {
    match error {
        MediaError::NotFound => ApiError::not_found("Media not found"),
        MediaError::NotYetUploaded => ApiError::with_status(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::NotYetUploaded,
            "The media has not been uploaded yet",
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

async fn blocking<T, F>(state: &AppState, work: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Services) -> Result<T, MediaError> + Send + 'static,
{
    let services = state.services_arc();
    tokio::task::spawn_blocking(move || work(&services))
        .await
        .map_err(|err| ApiError::internal(format!("blocking task failed: {err}")))?
        .map_err(serve_error)
}

/// The disposition this server gives its media: inline only for types browsers merely
/// display, as on the client download endpoints.
fn disposition(content_type: &str, filename: Option<String>) -> ContentDisposition {
    let kind = if is_inline(content_type) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    ContentDisposition::new(kind).with_filename(filename)
}

/// # `GET /_matrix/federation/v1/media/download/{mediaId}`
pub(crate) async fn download(
    State(state): State<AppState>,
    request: Ruma<get_content::v1::Request>,
) -> ApiResult<RumaResponse<get_content::v1::Response>> {
    let media_id = request.body.media_id;
    if !is_valid_media_id(&media_id) {
        return Err(serve_error(MediaError::NotFound));
    }
    let (record, file) = blocking(&state, move |services| {
        let record = services.media.get(&media_id)?;
        let file = services.media.read(&record)?;
        Ok((record, file))
    })
    .await?;
    let content_type = record
        .content_type
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let disposition = disposition(&content_type, record.filename);
    let content = Content::new(file, content_type, disposition);
    Ok(
        get_content::v1::Response::new(ContentMetadata::new(), FileOrLocation::File(content))
            .into(),
    )
}

/// # `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
pub(crate) async fn thumbnail(
    State(state): State<AppState>,
    request: Ruma<get_content_thumbnail::v1::Request>,
) -> ApiResult<RumaResponse<get_content_thumbnail::v1::Response>> {
    let body = request.body;
    let media_id = body.media_id;
    if !is_valid_media_id(&media_id) {
        return Err(serve_error(MediaError::NotFound));
    }
    let width = dimension(body.width, "width")?;
    let height = dimension(body.height, "height")?;
    let method = match body.method {
        Some(Method::Crop) => ThumbnailMethod::Crop,
        _ => ThumbnailMethod::Scale,
    };
    let animated = body.animated.unwrap_or(false);
    let thumbnail = blocking(&state, move |services| {
        services
            .media
            .thumbnail(&media_id, width, height, method, animated)
    })
    .await?;
    let disposition = disposition(&thumbnail.content_type, None);
    let content = Content::new(thumbnail.content, thumbnail.content_type, disposition);
    Ok(get_content_thumbnail::v1::Response::new(
        ContentMetadata::new(),
        FileOrLocation::File(content),
    )
    .into())
}

fn dimension(value: UInt, name: &str) -> ApiResult<u32> {
    match u32::try_from(u64::from(value)) {
        Ok(0) => Err(ApiError::invalid_param(format!(
            "{name} must be at least 1"
        ))),
        Ok(value) => Ok(value),
        Err(_) => Ok(u32::MAX),
    }
}

// ---------------------------------------------------------------------------------------
// Fetching
// ---------------------------------------------------------------------------------------

/// Why another server's media could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaFetchError {
    /// The server says it has no such media.
    #[error("the remote server has no such media")]
    NotFound,
    /// The media is larger than this server accepts.
    #[error("the remote media is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The deadline passed before the server answered.
    #[error("the remote server did not answer in time")]
    Timeout,
    /// The server could not be reached, refused the request, or answered nonsense.
    #[error(transparent)]
    Federation(#[from] FederationError),
}

impl From<MediaFetchError> for ApiError {
    fn from(error: MediaFetchError) -> Self {
        match error {
            MediaFetchError::NotFound => ApiError::not_found("Media not found"),
            MediaFetchError::TooLarge { limit } => ApiError::with_status(
                StatusCode::BAD_GATEWAY,
                ErrorKind::TooLarge,
                format!("The remote media is larger than this server serves ({limit} bytes)"),
            ),
            MediaFetchError::Timeout => ApiError::with_status(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorKind::NotYetUploaded,
                "The remote server did not provide the media in time",
            ),
            MediaFetchError::Federation(error) => error.into(),
        }
    }
}

/// Limits of one fetch.
#[derive(Clone, Copy, Debug)]
pub struct FetchLimits {
    /// The largest content accepted, in bytes.
    pub max_bytes: u64,
    /// When the server must have started answering (the client's `timeout_ms`).
    pub answer_by: Instant,
    /// When the whole content must have arrived.
    pub complete_by: Instant,
}

impl FetchLimits {
    /// Limits of `max_bytes`, an answer within `timeout` and the whole content within
    /// `total` from now.
    pub fn new(max_bytes: u64, timeout: Duration, total: Duration) -> Self {
        let now = Instant::now();
        Self {
            max_bytes,
            answer_by: now + timeout,
            complete_by: now + total.max(timeout),
        }
    }
}

/// What a server answered for a media item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchedMedia {
    /// The content itself.
    File {
        /// The bytes.
        content: Vec<u8>,
        /// The content type the server gave.
        content_type: Option<String>,
        /// The file name from the server's `Content-Disposition`.
        filename: Option<String>,
    },
    /// The content is at this URL, to fetch without authentication.
    Location(String),
}

/// What is fetched: the original or a thumbnail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaRequest {
    /// The original content.
    Download,
    /// A thumbnail.
    Thumbnail {
        /// Width asked for.
        width: u32,
        /// Height asked for.
        height: u32,
        /// How it fits.
        method: ThumbnailMethod,
        /// Whether an animated thumbnail is wanted.
        animated: bool,
    },
}

/// Fetches `server`'s `media_id` (or a thumbnail of it) under `limits`: through the
/// federation endpoint, or the legacy one for servers that lack it.
pub async fn fetch_media(
    federation: &Federation,
    server: &ServerName,
    media_id: &str,
    what: MediaRequest,
    limits: FetchLimits,
) -> Result<FetchedMedia, MediaFetchError> {
    if !is_valid_media_id(media_id) {
        return Err(MediaFetchError::NotFound);
    }
    let remaining = limits
        .answer_by
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let client = federation.client();
    let answer = match what {
        MediaRequest::Download => {
            let mut request = get_content::v1::Request::new(media_id.to_owned());
            request.timeout_ms = remaining;
            let sent = Box::pin(client.send_streaming(server, request));
            answered(server, sent, limits, |head, body| {
                let response = parse_multipart::<get_content::v1::Response>(server, head, body)?;
                from_content(server, response.content)
            })
            .await
        }
        MediaRequest::Thumbnail {
            width,
            height,
            method,
            animated,
        } => {
            let mut request = get_content_thumbnail::v1::Request::new(
                media_id.to_owned(),
                UInt::from(width),
                UInt::from(height),
            );
            request.method = Some(ruma_method(method));
            request.animated = Some(animated);
            request.timeout_ms = remaining;
            let sent = Box::pin(client.send_streaming(server, request));
            answered(server, sent, limits, |head, body| {
                let response =
                    parse_multipart::<get_content_thumbnail::v1::Response>(server, head, body)?;
                from_content(server, response.content)
            })
            .await
        }
    };
    match answer {
        Answer::Done(result) => result,
        Answer::Unrecognized => fetch_legacy(federation, server, media_id, what, limits).await,
    }
}

/// The outcome of asking the federation endpoint: an answer, or a sign that the server lacks
/// the endpoint.
enum Answer {
    Done(Result<FetchedMedia, MediaFetchError>),
    Unrecognized,
}

type Sent<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<reqwest::Response, FederationError>> + Send + 'a>>;

/// Waits for the federation endpoint's answer and reads it under `limits`.
async fn answered(
    server: &ServerName,
    sent: Sent<'_>,
    limits: FetchLimits,
    parse: impl FnOnce(&http::response::Parts, &[u8]) -> Result<FetchedMedia, MediaFetchError>,
) -> Answer {
    let response = match started(sent, limits).await {
        Ok(response) => response,
        Err(error) => return Answer::Done(Err(error)),
    };
    let status = response.status();
    if status.is_success() {
        let (parts, body) = match read_limited(server, response, limits, MULTIPART_OVERHEAD).await {
            Ok(read) => read,
            Err(error) => return Answer::Done(Err(error)),
        };
        let fetched = parse(&parts, &body).and_then(|fetched| check_size(fetched, limits));
        return Answer::Done(fetched);
    }
    let (_, body) = match read_limited(server, response, limits, 0).await {
        Ok(read) => read,
        // An error answer larger than any error: not worth telling apart.
        Err(_) => (http::Response::new(()).into_parts().0, Vec::new()),
    };
    let errcode = errcode(&body);
    match (status.as_u16(), errcode.as_deref()) {
        (404, Some("M_NOT_FOUND")) => Answer::Done(Err(MediaFetchError::NotFound)),
        // A server without the endpoint: its router's 404 (with or without a Matrix body),
        // a 400 from one that parsed the path as something else, or 405.
        (404 | 400 | 405, _) => Answer::Unrecognized,
        (code, _) => Answer::Done(Err(remote_error(server, code, errcode))),
    }
}

/// The legacy download (`/_matrix/media/v3/download/{server}/{id}?allow_remote=false`, or
/// `/thumbnail`), for servers without the federation endpoints.
async fn fetch_legacy(
    federation: &Federation,
    server: &ServerName,
    media_id: &str,
    what: MediaRequest,
    limits: FetchLimits,
) -> Result<FetchedMedia, MediaFetchError> {
    let server_segment: String =
        url::form_urlencoded::byte_serialize(server.as_str().as_bytes()).collect();
    let path = match what {
        MediaRequest::Download => {
            format!("/_matrix/media/v3/download/{server_segment}/{media_id}?allow_remote=false")
        }
        MediaRequest::Thumbnail {
            width,
            height,
            method,
            animated,
        } => format!(
            "/_matrix/media/v3/thumbnail/{server_segment}/{media_id}?width={width}&height={height}\
             &method={}&animated={animated}&allow_remote=false",
            method.as_str()
        ),
    };
    let sent = federation.client().get_streaming(server, &path);
    let response = started(Box::pin(sent), limits).await?;
    let status = response.status();
    if status.is_redirection()
        && let Some(location) = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
    {
        return Ok(FetchedMedia::Location(location.to_owned()));
    }
    if status.is_success() {
        let (parts, body) = read_limited(server, response, limits, 0).await?;
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|value: &http::HeaderValue| value.to_str().ok())
                .map(str::to_owned)
        };
        let filename = parts
            .headers
            .get(CONTENT_DISPOSITION)
            .and_then(|value| ContentDisposition::try_from(value.as_bytes()).ok())
            .and_then(|disposition| disposition.filename);
        return Ok(FetchedMedia::File {
            content: body,
            content_type: header(CONTENT_TYPE),
            filename,
        });
    }
    let (_, body) = read_limited(server, response, limits, 0)
        .await
        .unwrap_or_else(|_| (http::Response::new(()).into_parts().0, Vec::new()));
    let errcode = errcode(&body);
    if status == StatusCode::NOT_FOUND {
        return Err(MediaFetchError::NotFound);
    }
    Err(remote_error(server, status.as_u16(), errcode))
}

/// Waits for the answer's head until `limits.answer_by`.
async fn started(
    sent: Sent<'_>,
    limits: FetchLimits,
) -> Result<reqwest::Response, MediaFetchError> {
    match tokio::time::timeout_at(limits.answer_by, sent).await {
        Err(_) => Err(MediaFetchError::Timeout),
        Ok(result) => Ok(result?),
    }
}

/// Reads `response`'s body: at most the content limit plus `overhead` bytes, by
/// `limits.complete_by`. Stops as soon as the limit is passed, so an oversized answer is
/// never held whole.
async fn read_limited(
    server: &ServerName,
    mut response: reqwest::Response,
    limits: FetchLimits,
    overhead: u64,
) -> Result<(http::response::Parts, Vec<u8>), MediaFetchError> {
    let limit = limits.max_bytes.saturating_add(overhead);
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(MediaFetchError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let mut head = http::Response::builder().status(response.status());
    if let Some(headers) = head.headers_mut() {
        headers.clone_from(response.headers());
    }
    let (parts, ()) = head
        .body(())
        .map_err(|err| FederationError::invalid(server, err))?
        .into_parts();
    let mut body = Vec::new();
    loop {
        let chunk = match tokio::time::timeout_at(limits.complete_by, response.chunk()).await {
            Err(_) => return Err(MediaFetchError::Timeout),
            Ok(Err(err)) => return Err(FederationError::transport(server, err).into()),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        if u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX) > limit {
            return Err(MediaFetchError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((parts, body))
}

/// Parses a `multipart/mixed` media answer with ruma's parser.
fn parse_multipart<R: IncomingResponse>(
    server: &ServerName,
    head: &http::response::Parts,
    body: &[u8],
) -> Result<R, MediaFetchError> {
    let mut response = http::Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers.clone();
    R::try_from_http_response_inner(response)
        .map_err(|err| FederationError::invalid(server, format!("bad media answer: {err}")).into())
}

fn from_content(
    server: &ServerName,
    content: FileOrLocation,
) -> Result<FetchedMedia, MediaFetchError> {
    match content {
        FileOrLocation::Location(url) => Ok(FetchedMedia::Location(url)),
        FileOrLocation::File(content) => Ok(FetchedMedia::File {
            content: content.file,
            content_type: content.content_type,
            filename: content
                .content_disposition
                .and_then(|disposition| disposition.filename),
        }),
        // A form a later ruma may parse; nothing here can use it.
        _ => Err(FederationError::invalid(server, "unknown media answer").into()),
    }
}

fn check_size(fetched: FetchedMedia, limits: FetchLimits) -> Result<FetchedMedia, MediaFetchError> {
    if let FetchedMedia::File { content, .. } = &fetched
        && u64::try_from(content.len()).unwrap_or(u64::MAX) > limits.max_bytes
    {
        return Err(MediaFetchError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    Ok(fetched)
}

fn errcode(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("errcode")?
        .as_str()
        .map(str::to_owned)
}

fn remote_error(server: &ServerName, status: u16, errcode: Option<String>) -> MediaFetchError {
    MediaFetchError::Federation(FederationError::Remote {
        server: server.to_owned(),
        status,
        errcode: errcode.unwrap_or_else(|| "M_UNKNOWN".to_owned()),
        message: String::new(),
    })
}

fn ruma_method(method: ThumbnailMethod) -> Method {
    match method {
        ThumbnailMethod::Crop => Method::Crop,
        ThumbnailMethod::Scale => Method::Scale,
    }
}

#[cfg(test)]
mod tests {
    use ruma::api::OutgoingResponseExt as _;

    use super::*;

    fn multipart(content: FileOrLocation) -> (http::response::Parts, Vec<u8>) {
        let response = get_content::v1::Response::new(ContentMetadata::new(), content)
            .try_into_http_response::<Vec<u8>>()
            .unwrap();
        response.into_parts()
    }

    #[test]
    fn a_served_answer_parses_back_with_its_type_and_name() {
        let content = Content::new(
            b"\x89PNG bytes".to_vec(),
            "image/png".to_owned(),
            disposition("image/png", Some("cat.png".to_owned())),
        );
        let (parts, body) = multipart(FileOrLocation::File(content));
        let content_type = parts.headers[CONTENT_TYPE].to_str().unwrap();
        assert!(
            content_type.starts_with("multipart/mixed; boundary="),
            "{content_type}"
        );
        let server = ruma::server_name!("remote.test");
        let parsed = parse_multipart::<get_content::v1::Response>(server, &parts, &body).unwrap();
        assert_eq!(
            from_content(server, parsed.content).unwrap(),
            FetchedMedia::File {
                content: b"\x89PNG bytes".to_vec(),
                content_type: Some("image/png".to_owned()),
                filename: Some("cat.png".to_owned()),
            }
        );
    }

    #[test]
    fn a_location_part_is_returned_for_the_caller_to_follow() {
        let (parts, body) = multipart(FileOrLocation::Location(
            "https://cdn.example/abc".to_owned(),
        ));
        let server = ruma::server_name!("remote.test");
        let parsed = parse_multipart::<get_content::v1::Response>(server, &parts, &body).unwrap();
        assert_eq!(
            from_content(server, parsed.content).unwrap(),
            FetchedMedia::Location("https://cdn.example/abc".to_owned())
        );
    }

    #[test]
    fn garbage_is_an_invalid_answer() {
        let (mut parts, _) = multipart(FileOrLocation::Location(String::new()));
        parts
            .headers
            .insert(CONTENT_TYPE, "text/plain".parse().unwrap());
        let server = ruma::server_name!("remote.test");
        let error =
            parse_multipart::<get_content::v1::Response>(server, &parts, b"nope").unwrap_err();
        assert!(matches!(
            error,
            MediaFetchError::Federation(FederationError::InvalidResponse { .. })
        ));
    }

    #[test]
    fn content_over_the_limit_is_refused() {
        let limits = FetchLimits::new(4, Duration::from_secs(1), Duration::from_secs(1));
        let file = FetchedMedia::File {
            content: b"12345".to_vec(),
            content_type: None,
            filename: None,
        };
        assert!(matches!(
            check_size(file, limits),
            Err(MediaFetchError::TooLarge { limit: 4 })
        ));
        let small = FetchedMedia::File {
            content: b"1234".to_vec(),
            content_type: None,
            filename: None,
        };
        assert!(check_size(small, limits).is_ok());
    }

    #[test]
    fn disposition_is_inline_only_for_display_only_types() {
        assert_eq!(
            disposition("image/png", None).disposition_type,
            ContentDispositionType::Inline
        );
        assert_eq!(
            disposition("text/html", Some("x.html".to_owned())).disposition_type,
            ContentDispositionType::Attachment
        );
    }
}
