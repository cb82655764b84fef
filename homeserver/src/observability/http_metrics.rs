//! HTTP request metrics and the `/metrics` endpoint.

use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use http::StatusCode;
use http::header::CONTENT_TYPE;

use super::{Metrics, method_label, route_label};

/// Content type of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Middleware: counts the request in `http_requests_in_flight` while it runs, then in
/// `http_requests_total` and `http_request_duration_seconds` (up to the response head).
///
/// Add it with `Router::layer(axum::middleware::from_fn_with_state(metrics, track_metrics))`,
/// or through [`super::instrument`]. A request dropped before it answers (client gone) leaves
/// the in-flight gauge but is not counted, as it has no status.
pub async fn track_metrics(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let method = method_label(request.method());
    let route = route_label(&request);
    let _in_flight = metrics.start_request();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe_request(method, route, response.status().as_u16(), started.elapsed());
    response
}

/// A router serving `GET /metrics`, meant for its own listener (the `metrics.address`
/// setting) so the numbers are not public.
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

/// # `GET /metrics`
async fn serve_metrics(State(metrics): State<Metrics>) -> Response {
    // Scrape-time gauges may read storage synchronously; keep that off the async workers.
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(Ok(text)) => ([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(err) => {
            tracing::error!(error = %err, "metrics encoding task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::routing::{get, post};
    use http::{Request, StatusCode};
    use tokio::sync::Notify;
    use tower::ServiceExt as _;

    use super::{OPENMETRICS_CONTENT_TYPE, metrics_router};
    use crate::observability::test_support::sample;
    use crate::observability::{Metrics, instrument};

    fn app(metrics: &Metrics) -> Router {
        let rooms = Router::new().route(
            "/rooms/{room_id}/send/{txn_id}",
            post(|| async { StatusCode::CREATED }),
        );
        let router = Router::new()
            .route("/versions", get(|| async { "{}" }))
            .route(
                "/broken",
                get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .nest("/_matrix/client/v3", rooms);
        instrument(router, metrics.clone())
    }

    async fn send(router: Router, method: &str, uri: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        router.oneshot(request).await.unwrap().status()
    }

    async fn scrape(metrics: &Metrics) -> String {
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        let response = metrics_router(metrics.clone())
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], OPENMETRICS_CONTENT_TYPE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template() {
        let metrics = Metrics::new();
        let app = app(&metrics);
        assert_eq!(send(app.clone(), "GET", "/versions").await, StatusCode::OK);
        assert_eq!(send(app.clone(), "GET", "/versions").await, StatusCode::OK);
        for room in ["!a:x", "!b:y"] {
            let uri = format!("/_matrix/client/v3/rooms/{room}/send/t{room}");
            assert_eq!(send(app.clone(), "POST", &uri).await, StatusCode::CREATED);
        }
        assert_eq!(
            send(app.clone(), "GET", "/broken").await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            send(app.clone(), "GET", "/no/such/path").await,
            StatusCode::NOT_FOUND
        );

        let text = scrape(&metrics).await;
        let total = |labels: &str| sample(&text, &format!("http_requests_total{{{labels}}}"));
        assert_eq!(
            total(r#"method="GET",route="/versions",status="200""#),
            Some(2.0)
        );
        let send_route = "/_matrix/client/v3/rooms/{room_id}/send/{txn_id}";
        let send_labels = format!(r#"method="POST",route="{send_route}",status="201""#);
        assert_eq!(total(&send_labels), Some(2.0));
        assert_eq!(
            total(r#"method="GET",route="/broken",status="500""#),
            Some(1.0)
        );
        assert_eq!(
            total(r#"method="GET",route="unmatched",status="404""#),
            Some(1.0)
        );
        assert!(
            !text.contains("!a:x") && !text.contains("no/such"),
            "raw paths leaked:\n{text}"
        );

        let count = |labels: &str| {
            sample(
                &text,
                &format!("http_request_duration_seconds_count{{{labels}}}"),
            )
        };
        assert_eq!(
            count(&format!(r#"method="POST",route="{send_route}""#)),
            Some(2.0)
        );
        assert_eq!(count(r#"method="GET",route="/versions""#), Some(2.0));
        assert_eq!(sample(&text, "http_requests_in_flight"), Some(0.0));
        for family in [
            "# TYPE http_requests counter",
            "# TYPE http_request_duration_seconds histogram",
            "# UNIT http_request_duration_seconds seconds",
            "# TYPE http_requests_in_flight gauge",
            "# TYPE process_resident_memory_bytes gauge",
        ] {
            assert!(text.contains(family), "{family} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn in_flight_counts_running_requests_and_returns_to_zero() {
        let metrics = Metrics::new();
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (entered_by_handler, released_for_handler) =
            (Arc::clone(&entered), Arc::clone(&release));
        let slow = move || {
            let (entered, release) = (
                Arc::clone(&entered_by_handler),
                Arc::clone(&released_for_handler),
            );
            async move {
                entered.notify_one();
                release.notified().await;
                "done"
            }
        };
        let router = instrument(Router::new().route("/slow", get(slow)), metrics.clone());

        let request = tokio::spawn(send(router, "GET", "/slow"));
        entered.notified().await;
        assert_eq!(
            sample(&scrape(&metrics).await, "http_requests_in_flight"),
            Some(1.0)
        );
        release.notify_one();
        assert_eq!(request.await.unwrap(), StatusCode::OK);
        assert_eq!(
            sample(&scrape(&metrics).await, "http_requests_in_flight"),
            Some(0.0)
        );
    }

    #[tokio::test]
    async fn a_dropped_request_leaves_the_in_flight_gauge() {
        let metrics = Metrics::new();
        let router = instrument(
            Router::new().route("/hang", get(std::future::pending::<&'static str>)),
            metrics.clone(),
        );
        let request = tokio::spawn(send(router, "GET", "/hang"));
        // Wait (with a deadline) until the request is inside the handler.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while sample(&scrape(&metrics).await, "http_requests_in_flight") != Some(1.0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "request never started"
            );
            tokio::task::yield_now().await;
        }
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        assert_eq!(
            sample(&scrape(&metrics).await, "http_requests_in_flight"),
            Some(0.0)
        );
    }
}
