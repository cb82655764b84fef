//! Liveness and readiness endpoints.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use http::StatusCode;
use serde_json::json;

/// How long `/ready` waits for the probe before answering 503: a stalled dependency must
/// read as "not ready", not as a hung health check.
pub const DEFAULT_READINESS_TIMEOUT: Duration = Duration::from_secs(5);

/// Decides whether the server can take traffic (for example: a storage write and read
/// succeed). `Err` carries a short reason for the 503 body; it is shown to whoever can reach
/// `/ready`, so it should not contain secrets.
///
/// Any `Fn() -> impl Future<Output = Result<(), String>>` closure is a probe.
pub trait ReadinessProbe: Send + Sync + 'static {
    /// Runs one check.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

impl<F, Fut> ReadinessProbe for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self())
    }
}

#[derive(Clone)]
struct HealthState {
    probe: Arc<dyn ReadinessProbe>,
    timeout: Duration,
}

/// `GET /health` and `GET /ready`, with [`DEFAULT_READINESS_TIMEOUT`].
pub fn health_router(probe: impl ReadinessProbe) -> Router {
    health_router_with_timeout(probe, DEFAULT_READINESS_TIMEOUT)
}

/// `GET /health` and `GET /ready`; `/ready` answers 503 when the probe takes longer than
/// `timeout`.
pub fn health_router_with_timeout(probe: impl ReadinessProbe, timeout: Duration) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(HealthState {
            probe: Arc::new(probe),
            timeout,
        })
}

/// # `GET /health`
///
/// 200 `{"status":"ok"}` whenever the process can answer at all.
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// # `GET /ready`
///
/// 200 `{"status":"ok"}` when the readiness probe succeeds in time, else 503
/// `{"status":"unavailable","reason":...}`.
async fn ready(State(state): State<HealthState>) -> Response {
    let reason = match tokio::time::timeout(state.timeout, state.probe.check()).await {
        Ok(Ok(())) => return Json(json!({ "status": "ok" })).into_response(),
        Ok(Err(reason)) => reason,
        Err(_elapsed) => format!("readiness probe timed out after {:?}", state.timeout),
    };
    tracing::warn!(%reason, "readiness probe failed");
    let body = json!({ "status": "unavailable", "reason": reason });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use futures::future::BoxFuture;
    use http::{Request, StatusCode};
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

    use super::{ReadinessProbe, health_router, health_router_with_timeout};

    async fn get(router: Router, uri: &str) -> (StatusCode, Value) {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn health_is_ok_even_when_not_ready() {
        let router = health_router(|| async { Err("storage down".to_owned()) });
        let (status, body) = get(router, "/health").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({ "status": "ok" }));
    }

    #[tokio::test]
    async fn ready_follows_the_probe() {
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&healthy);
        let router = health_router(move || {
            let healthy = flag.load(Ordering::SeqCst);
            async move {
                if healthy {
                    Ok(())
                } else {
                    Err("storage write failed".to_owned())
                }
            }
        });
        let (status, body) = get(router.clone(), "/ready").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({ "status": "ok" }));

        healthy.store(false, Ordering::SeqCst);
        let (status, body) = get(router, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({ "status": "unavailable", "reason": "storage write failed" })
        );
    }

    #[tokio::test]
    async fn a_hung_probe_reads_as_unavailable() {
        let router = health_router_with_timeout(
            std::future::pending::<Result<(), String>>,
            Duration::from_millis(20),
        );
        let (status, body) = get(router, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "unavailable");
        assert!(
            body["reason"].as_str().unwrap().contains("timed out"),
            "{body}"
        );
    }

    /// A probe can also be a type of its own, e.g. one holding a storage handle.
    struct Down;
    impl ReadinessProbe for Down {
        fn check(&self) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async { Err("down".to_owned()) })
        }
    }

    #[tokio::test]
    async fn a_probe_type_works_too() {
        let (status, body) = get(health_router(Down), "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "down");
    }
}
