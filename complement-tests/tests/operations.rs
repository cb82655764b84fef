//! Operational endpoints and process lifecycle: health, readiness,
//! metrics, graceful shutdown.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

use axon_complement_tests::{Homeserver, ServerOptions};

#[tokio::test]
async fn health_and_ready_answer() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    client.get("/health").await.assert_ok();
    client.get("/ready").await.assert_ok();
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener() {
    let hs = Homeserver::start(ServerOptions::new().with_metrics()).await;
    let client = hs.client();
    // Some traffic for the counters to count.
    client.get("/_matrix/client/versions").await.assert_ok();
    client.get("/_matrix/client/v3/no_such_endpoint").await;

    let metrics = hs.scrape_metrics().await;
    assert!(
        metrics.contains("http_requests_total"),
        "no http_requests_total in:\n{metrics}"
    );
    // Not on the public listener.
    let public = client.get("/metrics").await;
    assert_eq!(public.status, 404, "{}", public.describe());
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_data_persists() {
    let mut hs = Homeserver::start(ServerOptions::new()).await;
    let client = hs.client();
    let alice = client
        .register("alice", "correct-horse-battery-staple")
        .await;
    let status = hs.stop().await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    hs.restart().await;
    client.as_session(&alice).whoami().await.assert_ok();
}
