//! The per-request span and request id.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue};
use tracing::Instrument as _;
use tracing::field::Empty;

use super::{method_label, route_label};

/// Header carrying the request id, read from the request and echoed on the response.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id that is kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The id of the request being handled, in the request's extensions for handlers that want
/// it (`Extension<RequestId>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The id as sent in the `x-request-id` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client-supplied id is kept when it is short and made of characters that are safe in
/// logs and headers, so a client cannot inject log lines or huge values.
fn is_sane_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
}

/// The request's own id when it has a sane one, else a fresh random one (128 bits, hex).
fn request_id(headers: &HeaderMap) -> (String, HeaderValue) {
    if let Some(value) = headers.get(&REQUEST_ID_HEADER)
        && let Ok(id) = value.to_str()
        && is_sane_request_id(id)
    {
        return (id.to_owned(), value.clone());
    }
    let id = format!("{:032x}", rand::random::<u128>());
    // Hex digits are always a valid header value.
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    (id, value)
}

/// Middleware: runs the request inside an `http_request` span (method, route template,
/// request id; status and latency recorded at the end), logs the outcome (5xx at error, the
/// rest at debug) and echoes the request id in the `x-request-id` response header.
///
/// Add it with `Router::layer(axum::middleware::from_fn(trace_request))`, or through
/// [`super::instrument`].
pub async fn trace_request(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let (id, header_value) = request_id(request.headers());
    request
        .headers_mut()
        .insert(REQUEST_ID_HEADER, header_value.clone());
    request.extensions_mut().insert(RequestId(id.clone()));

    let method = method_label(request.method());
    let route = route_label(&request);
    // `otel.*` fields name and classify the span when it is exported over OTLP.
    let span = tracing::info_span!(
        "http_request",
        method,
        route = %route,
        request_id = %id,
        status = Empty,
        latency_ms = Empty,
        // Filled in by authentication, so every log line of the request names its user.
        user_id = Empty,
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
    );
    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.record("status", status.as_u16());
    span.record("latency_ms", latency_ms);
    span.in_scope(|| {
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
            tracing::error!(status = status.as_u16(), latency_ms, "request failed");
        } else if status.is_client_error() {
            tracing::debug!(status = status.as_u16(), latency_ms, "request rejected");
        } else {
            tracing::debug!(status = status.as_u16(), latency_ms, "request completed");
        }
    });
    response
        .headers_mut()
        .insert(REQUEST_ID_HEADER, header_value);
    response
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::extract::Extension;
    use axum::routing::get;
    use axum::{Router, middleware};
    use http::{Request, StatusCode};
    use tower::ServiceExt as _;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::{Context, SubscriberExt as _};
    use tracing_subscriber::registry::LookupSpan;

    use super::{REQUEST_ID_HEADER, RequestId, is_sane_request_id, trace_request};

    fn app() -> Router {
        Router::new()
            .route(
                "/rooms/{room_id}/echo",
                get(|Extension(id): Extension<RequestId>| async move { id.as_str().to_owned() }),
            )
            .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
            .route("/nope", get(|| async { StatusCode::FORBIDDEN }))
            .layer(middleware::from_fn(trace_request))
    }

    async fn call(uri: &str, request_id: Option<&str>) -> (StatusCode, String, String) {
        let mut request = Request::get(uri);
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        let response = app()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let echoed = response.headers()[REQUEST_ID_HEADER]
            .to_str()
            .unwrap()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, echoed, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_sane_request_id_is_kept_and_echoed() {
        let (status, echoed, seen_by_handler) = call("/rooms/!a:b/echo", Some("abc-123")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(echoed, "abc-123");
        assert_eq!(seen_by_handler, "abc-123");
    }

    #[tokio::test]
    async fn a_missing_or_insane_request_id_is_replaced() {
        let long = "a".repeat(129);
        for sent in [None, Some("has space"), Some(long.as_str()), Some("")] {
            let (_, echoed, seen_by_handler) = call("/rooms/!a:b/echo", sent).await;
            assert_eq!(echoed.len(), 32, "{sent:?} -> {echoed}");
            assert!(echoed.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(seen_by_handler, echoed);
        }
        let (_, first, _) = call("/rooms/!a:b/echo", None).await;
        let (_, second, _) = call("/rooms/!a:b/echo", None).await;
        assert_ne!(first, second);
    }

    #[test]
    fn sanity_rules() {
        assert!(is_sane_request_id("0b7c:req/1+2=3_x.y"));
        assert!(!is_sane_request_id("line\nbreak"));
        assert!(!is_sane_request_id("quote\""));
        assert!(is_sane_request_id(&"a".repeat(128)));
    }

    /// One recorded event: its level, its fields, and the names of the spans around it.
    #[derive(Debug)]
    struct Recorded {
        level: Level,
        fields: String,
        spans: String,
    }

    /// Records events, and each span's fields as created and later recorded.
    #[derive(Clone, Default)]
    struct Recorder {
        events: Arc<Mutex<Vec<Recorded>>>,
        span_fields: Arc<Mutex<HashMap<u64, String>>>,
    }

    struct FieldText(String);
    impl Visit for FieldText {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={:?} ", field.name(), value));
        }
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
            let mut fields = FieldText(format!("{}: ", attrs.metadata().name()));
            attrs.record(&mut fields);
            self.span_fields
                .lock()
                .unwrap()
                .insert(id.into_u64(), fields.0);
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
            let mut spans = self.span_fields.lock().unwrap();
            if let Some(text) = spans.get_mut(&id.into_u64()) {
                let mut fields = FieldText(std::mem::take(text));
                values.record(&mut fields);
                *text = fields.0;
            }
        }

        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            let mut fields = FieldText(String::new());
            event.record(&mut fields);
            let spans = ctx
                .event_scope(event)
                .map(|scope| scope.map(|span| span.name()).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            self.events.lock().unwrap().push(Recorded {
                level: *event.metadata().level(),
                fields: fields.0,
                spans,
            });
        }
    }

    /// Runs a request under a recording subscriber (current-thread runtime, so the
    /// thread-local default sees every poll); returns the outcome event and the text of the
    /// request span.
    async fn outcome(uri: &str) -> (Recorded, String) {
        let recorder = Recorder::default();
        let subscriber = tracing_subscriber::registry().with(recorder.clone());
        let _default = tracing::subscriber::set_default(subscriber);
        call(uri, Some("rid-1")).await;
        let mut events = recorder.events.lock().unwrap();
        let index = events
            .iter()
            .position(|e| e.fields.contains("latency_ms"))
            .unwrap();
        let spans = recorder.span_fields.lock().unwrap();
        let request_span = spans
            .values()
            .find(|s| s.starts_with("http_request:"))
            .unwrap();
        (events.remove(index), request_span.clone())
    }

    #[tokio::test]
    async fn outcomes_are_logged_by_status_class_inside_the_request_span() {
        let (failed, span) = outcome("/boom").await;
        assert_eq!(failed.level, Level::ERROR);
        assert!(failed.fields.contains("status=500"), "{failed:?}");
        assert_eq!(failed.spans, "http_request");
        assert!(span.contains("otel.status_code=\"ERROR\""), "{span}");

        let (rejected, _) = outcome("/nope").await;
        assert_eq!(rejected.level, Level::DEBUG);
        assert!(rejected.fields.contains("status=403"), "{rejected:?}");

        let (fine, _) = outcome("/rooms/!r:x/echo").await;
        assert_eq!(fine.level, Level::DEBUG);
        assert!(fine.fields.contains("status=200"), "{fine:?}");
    }

    #[tokio::test]
    async fn the_span_carries_the_route_template_and_the_outcome() {
        let (_, span) = outcome("/rooms/!secret:x/echo").await;
        for expected in [
            "method=\"GET\"",
            "route=/rooms/{room_id}/echo",
            "request_id=rid-1",
            "status=200",
            "latency_ms=",
        ] {
            assert!(span.contains(expected), "{expected} not in {span}");
        }
        assert!(!span.contains("secret"), "the raw path leaked into {span}");
    }
}
