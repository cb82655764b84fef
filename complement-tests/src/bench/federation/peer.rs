//! The peer's own listener: what the target asks a remote server while the
//! benchmark runs, served over TLS on 127.0.0.1 with the certificate of
//! [`pki`](crate::bench::federation::pki).
//!
//! - `GET /_matrix/key/v2/server` (and `/{keyId}`): the peer's signed key,
//!   which the target fetches to check the peer's requests and events.
//! - `GET /_matrix/federation/v1/event/{eventId}`: the peer's own events,
//!   should the target ask for one.
//! - `POST /_matrix/federation/v1/get_missing_events/{roomId}`: the peer's
//!   events between what the target has and what it was sent. A server may
//!   answer `/send` before it has processed every PDU and drop part of a
//!   large backlog, then fetch what it dropped here (Synapse does both).
//! - `GET /_matrix/federation/v1/backfill/{roomId}`: the peer's events
//!   before and including the given ones, for a server that left a gap
//!   and fills it when a client pages back.
//! - `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`: the room
//!   state at one of the peer's events (the state `send_join` returned,
//!   plus the peer's join after it: its messages change no state), which a
//!   server asks for when it cannot fetch every missing event; and
//!   `/state/{roomId}`, the same as whole events.
//! - `PUT /_matrix/federation/v1/send/{txnId}`: whatever the target sends
//!   (presence, receipts), accepted and counted.
//! - device list queries, answered with no devices;
//! - anything else: `404 M_UNRECOGNIZED`.
//!
//! Requests to the peer are not authenticated: it is a stub serving the
//! measurement, never a server to federate with.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum_server::tls_rustls::RustlsConfig;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::bench::error::BenchError;
use crate::bench::federation::pki::{LOOPBACK, PeerTls};
use crate::bench::federation::signing::Signer;

/// How long the published key is valid: longer than any run.
const KEY_VALIDITY_MS: u64 = 24 * 60 * 60 * 1000;
/// The spec's default `limit` of `get_missing_events`.
const DEFAULT_MISSING_LIMIT: u64 = 10;
/// The most events one `get_missing_events` answer holds, whatever asked.
const MAX_MISSING_LIMIT: usize = 1000;

/// What the handlers share.
#[derive(Debug)]
struct PeerState {
    signer: Arc<Signer>,
    /// The peer's events by id.
    events: Mutex<HashMap<String, Value>>,
    /// Transactions the target sent to the peer.
    inbound_transactions: AtomicU64,
    /// Events the target fetched back through `get_missing_events` and
    /// `/backfill`: PDUs it was sent but did not keep at first.
    fetched_back: AtomicU64,
    /// The room's state and its auth chain, once joined.
    room_state: Mutex<Option<RoomState>>,
}

/// The state of the peer's room at its events.
#[derive(Debug, Clone)]
struct RoomState {
    join_id: String,
    /// Before the join.
    state_ids: Vec<String>,
    auth_chain_ids: Vec<String>,
}

/// The running peer; dropping it stops the listener.
#[derive(Debug)]
pub(crate) struct Peer {
    state: Arc<PeerState>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Peer {
    /// Binds a free port on 127.0.0.1, names the peer `127.0.0.1:<port>`
    /// with a fresh signing key, and serves it over TLS with `tls`.
    pub(crate) async fn start(tls: &PeerTls) -> Result<Peer, BenchError> {
        let failed =
            |what: &str, e: std::io::Error| BenchError::Unsupported(format!("{what}: {e}"));
        let listener = std::net::TcpListener::bind((LOOPBACK, 0))
            .map_err(|e| failed("binding the peer's port", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| failed("setting up the peer's socket", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| failed("reading the peer's port", e))?
            .port();
        let signer = Arc::new(Signer::generate(format!("{LOOPBACK}:{port}"))?);
        let rustls = RustlsConfig::from_pem(tls.cert_pem.clone(), tls.key_pem.clone())
            .await
            .map_err(|e| failed("loading the peer's certificate", e))?;
        let server = axum_server::from_tcp_rustls(listener, rustls)
            .map_err(|e| failed("listening on the peer's port", e))?;
        let state = Arc::new(PeerState {
            signer,
            events: Mutex::new(HashMap::new()),
            inbound_transactions: AtomicU64::new(0),
            fetched_back: AtomicU64::new(0),
            room_state: Mutex::new(None),
        });
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = server
                .serve(app.into_make_service_with_connect_info::<SocketAddr>())
                .await
            {
                eprintln!("federation_bench: the peer's listener stopped: {e}");
            }
        });
        Ok(Peer { state, task })
    }

    /// The peer's signing key (and server name).
    pub(crate) fn signer(&self) -> Arc<Signer> {
        self.state.signer.clone()
    }

    /// Keeps `pdu` so the target can fetch it by `event_id`.
    pub(crate) fn remember(&self, event_id: &str, pdu: &Value) {
        if let Ok(mut events) = self.state.events.lock() {
            events.insert(event_id.to_owned(), pdu.clone());
        }
    }

    /// Records the room state `send_join` returned (`state_ids`, before
    /// the join `join_id`) and its auth chain.
    pub(crate) fn set_room_state(
        &self,
        join_id: &str,
        state_ids: Vec<String>,
        auth_chain_ids: Vec<String>,
    ) {
        if let Ok(mut room_state) = self.state.room_state.lock() {
            *room_state = Some(RoomState {
                join_id: join_id.to_owned(),
                state_ids,
                auth_chain_ids,
            });
        }
    }

    /// How many events the target has fetched back from the peer.
    pub(crate) fn fetched_back(&self) -> u64 {
        self.state.fetched_back.load(Ordering::Relaxed)
    }

    /// How many transactions the target has sent to the peer.
    pub(crate) fn inbound_transactions(&self) -> u64 {
        self.state.inbound_transactions.load(Ordering::Relaxed)
    }
}

fn router(state: Arc<PeerState>) -> Router {
    Router::new()
        .route("/_matrix/key/v2/server", get(server_keys))
        .route("/_matrix/key/v2/server/{key_id}", get(server_keys))
        .route("/_matrix/federation/v1/version", get(version))
        .route("/_matrix/federation/v1/send/{txn_id}", put(transaction))
        .route("/_matrix/federation/v1/state_ids/{room_id}", get(state_ids))
        .route("/_matrix/federation/v1/state/{room_id}", get(state_events))
        .route("/_matrix/federation/v1/event/{event_id}", get(event))
        .route(
            "/_matrix/federation/v1/get_missing_events/{room_id}",
            post(missing_events),
        )
        .route("/_matrix/federation/v1/backfill/{room_id}", get(backfill))
        .route(
            "/_matrix/federation/v1/user/devices/{user_id}",
            get(devices),
        )
        .route("/_matrix/federation/v1/user/keys/query", post(keys_query))
        .fallback(unrecognized)
        .with_state(state)
}

async fn server_keys(State(state): State<Arc<PeerState>>) -> Json<Value> {
    let valid_until = axon_complement_tests::now_ms().saturating_add(KEY_VALIDITY_MS);
    Json(state.signer.key_response(valid_until))
}

async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "federation_bench", "version": "1" } }))
}

async fn transaction(State(state): State<Arc<PeerState>>) -> Json<Value> {
    state.inbound_transactions.fetch_add(1, Ordering::Relaxed);
    // Nothing the target sends matters to the measurement; PDUs would need a
    // result each, but the peer's only room has no local senders.
    Json(json!({ "pdus": {} }))
}

async fn event(State(state): State<Arc<PeerState>>, Path(event_id): Path<String>) -> Response {
    let pdu = state
        .events
        .lock()
        .ok()
        .and_then(|events| events.get(&event_id).cloned());
    match pdu {
        Some(pdu) => Json(json!({
            "origin": state.signer.server_name(),
            "origin_server_ts": axon_complement_tests::now_ms(),
            "pdus": [pdu],
        }))
        .into_response(),
        None => not_found("no such event"),
    }
}

/// The state ids and auth chain ids at the peer's event `event_id`, if the
/// peer has that event.
fn state_at(state: &PeerState, event_id: &str) -> Option<(Vec<String>, Vec<String>)> {
    let known = state
        .events
        .lock()
        .is_ok_and(|events| events.contains_key(event_id));
    let room = state.room_state.lock().ok().and_then(|room| room.clone())?;
    if !known {
        return None;
    }
    let mut pdu_ids = room.state_ids;
    // The join is part of the state at every event after it.
    if event_id != room.join_id {
        pdu_ids.push(room.join_id);
    }
    Some((pdu_ids, room.auth_chain_ids))
}

fn missing_event_id() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "errcode": "M_MISSING_PARAM", "error": "event_id is required" })),
    )
        .into_response()
}

async fn state_ids(
    State(state): State<Arc<PeerState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(event_id) = query.get("event_id") else {
        return missing_event_id();
    };
    match state_at(&state, event_id) {
        Some((pdu_ids, auth_chain_ids)) => {
            Json(json!({ "pdu_ids": pdu_ids, "auth_chain_ids": auth_chain_ids })).into_response()
        }
        None => not_found("no such event"),
    }
}

async fn state_events(
    State(state): State<Arc<PeerState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(event_id) = query.get("event_id") else {
        return missing_event_id();
    };
    let Some((pdu_ids, auth_chain_ids)) = state_at(&state, event_id) else {
        return not_found("no such event");
    };
    let Ok(events) = state.events.lock() else {
        return not_found("no such event");
    };
    let pdus = |ids: &[String]| -> Vec<Value> {
        ids.iter()
            .filter_map(|id| events.get(id).cloned())
            .collect()
    };
    Json(json!({ "pdus": pdus(&pdu_ids), "auth_chain": pdus(&auth_chain_ids) })).into_response()
}

async fn missing_events(
    State(state): State<Arc<PeerState>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "errcode": "M_BAD_JSON", "error": "not a JSON object" })),
        )
            .into_response();
    };
    let ids = |field: &str| -> Vec<String> {
        body[field]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let limit = body["limit"].as_u64().unwrap_or(DEFAULT_MISSING_LIMIT);
    let limit = usize::try_from(limit)
        .unwrap_or(MAX_MISSING_LIMIT)
        .min(MAX_MISSING_LIMIT);
    let min_depth = body["min_depth"].as_u64().unwrap_or(0);
    let events = match state.events.lock() {
        Ok(events) => walk_back(
            &events,
            &ids("earliest_events"),
            &ids("latest_events"),
            false,
            limit,
            min_depth,
        ),
        Err(_) => Vec::new(),
    };
    count_fetched(&state, events.len());
    Json(json!({ "events": events })).into_response()
}

fn count_fetched(state: &PeerState, events: usize) {
    let events = u64::try_from(events).unwrap_or(u64::MAX);
    state.fetched_back.fetch_add(events, Ordering::Relaxed);
}

async fn backfill(State(state): State<Arc<PeerState>>, RawQuery(query): RawQuery) -> Response {
    let pairs = parse_query(query.as_deref().unwrap_or_default());
    let from: Vec<String> = pairs
        .iter()
        .filter(|(key, _)| key == "v")
        .map(|(_, value)| value.clone())
        .collect();
    let limit = pairs
        .iter()
        .find(|(key, _)| key == "limit")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(DEFAULT_MISSING_LIMIT as usize)
        .min(MAX_MISSING_LIMIT);
    let pdus = match state.events.lock() {
        Ok(events) => walk_back(&events, &[], &from, true, limit, 0),
        Err(_) => Vec::new(),
    };
    count_fetched(&state, pdus.len());
    Json(json!({
        "origin": state.signer.server_name(),
        "origin_server_ts": axon_complement_tests::now_ms(),
        "pdus": pdus,
    }))
    .into_response()
}

/// The decoded `key=value` pairs of a query string, repeated keys kept.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+`; a malformed escape is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The events reachable backwards through `prev_events` from `latest`
/// (included only if `include_latest`), stopping at `earliest` and below
/// `min_depth`: the `limit` nearest to `latest`, oldest first.
fn walk_back(
    events: &HashMap<String, Value>,
    earliest: &[String],
    latest: &[String],
    include_latest: bool,
    limit: usize,
    min_depth: u64,
) -> Vec<Value> {
    let mut seen: HashSet<&str> = earliest.iter().map(String::as_str).collect();
    if !include_latest {
        seen.extend(latest.iter().map(String::as_str));
    }
    let prev_of = |id: &str| -> Vec<String> {
        events.get(id).map_or_else(Vec::new, |event| {
            event["prev_events"]
                .as_array()
                .map(|prev| {
                    prev.iter()
                        .filter_map(|id| id.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        })
    };
    let mut queue: std::collections::VecDeque<String> = if include_latest {
        latest.iter().cloned().collect()
    } else {
        latest.iter().flat_map(|id| prev_of(id)).collect()
    };
    let mut found = Vec::new();
    while let Some(id) = queue.pop_front() {
        if found.len() >= limit {
            break;
        }
        let Some((key, event)) = events.get_key_value(&id) else {
            continue;
        };
        if !seen.insert(key.as_str()) || event["depth"].as_u64().unwrap_or(0) < min_depth {
            continue;
        }
        found.push(event.clone());
        queue.extend(prev_of(&id));
    }
    found.sort_by_key(|event| event["depth"].as_u64().unwrap_or(0));
    found
}

async fn devices(Path(user_id): Path<String>) -> Json<Value> {
    Json(json!({ "user_id": user_id, "stream_id": 0, "devices": [] }))
}

async fn keys_query() -> Json<Value> {
    Json(json!({ "device_keys": {} }))
}

async fn unrecognized() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "errcode": "M_UNRECOGNIZED", "error": "not served by federation_bench" })),
    )
        .into_response()
}

fn not_found(error: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "errcode": "M_NOT_FOUND", "error": error })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_events_walk_back_from_the_latest_to_the_earliest() {
        // A chain $0 <- $1 <- ... <- $9.
        let events: HashMap<String, Value> = (0..10)
            .map(|i| {
                let prev = if i == 0 {
                    json!([])
                } else {
                    json!([format!("${}", i - 1)])
                };
                (
                    format!("${i}"),
                    json!({ "depth": i + 1, "prev_events": prev, "n": i }),
                )
            })
            .collect();
        let numbers = |found: Vec<Value>| -> Vec<u64> {
            found.iter().map(|e| e["n"].as_u64().unwrap()).collect()
        };
        let between = |earliest: &[&str], latest: &[&str], limit, min_depth| {
            let owned = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>();
            numbers(walk_back(
                &events,
                &owned(earliest),
                &owned(latest),
                false,
                limit,
                min_depth,
            ))
        };
        assert_eq!(between(&["$3"], &["$8"], 10, 0), [4, 5, 6, 7]);
        // The limit keeps those nearest the latest event.
        assert_eq!(between(&["$0"], &["$9"], 3, 0), [6, 7, 8]);
        assert_eq!(between(&[], &["$4"], 10, 3), [2, 3]);
        assert!(between(&["$7"], &["$8"], 10, 0).is_empty());
        assert!(between(&[], &["$unknown"], 10, 0).is_empty());
        // Backfill includes the events it starts from.
        let backfilled = walk_back(&events, &[], &["$5".to_owned()], true, 3, 0);
        assert_eq!(numbers(backfilled), [3, 4, 5]);
    }

    #[test]
    fn query_strings_keep_repeated_keys_and_decode_escapes() {
        assert_eq!(
            parse_query("v=%24a-b&v=%24c_d&limit=100&x"),
            [
                ("v".to_owned(), "$a-b".to_owned()),
                ("v".to_owned(), "$c_d".to_owned()),
                ("limit".to_owned(), "100".to_owned()),
                ("x".to_owned(), String::new()),
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a+b%2Fc"), "a b/c");
    }

    #[tokio::test]
    async fn the_peer_serves_its_key_over_tls_with_a_certificate_of_its_ca() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        crate::bench::federation::pki::write(dir.path()).unwrap();
        let tls = crate::bench::federation::pki::read(dir.path()).unwrap();
        let peer = Peer::start(&tls).await.unwrap();
        let name = peer.signer().server_name().to_owned();
        peer.remember("$e", &json!({ "type": "m.room.message" }));

        let ca = reqwest::Certificate::from_pem(&std::fs::read(&tls.ca_path).unwrap()).unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .build()
            .unwrap();
        let keys: Value = http
            .get(format!("https://{name}/_matrix/key/v2/server"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(keys["server_name"], name.as_str());
        assert!(keys["verify_keys"][peer.signer().key_id()]["key"].is_string());

        let event = http
            .get(format!("https://{name}/_matrix/federation/v1/event/$e"))
            .send()
            .await
            .unwrap();
        assert_eq!(event.status(), 200);
        let missing = http
            .get(format!("https://{name}/_matrix/federation/v1/event/$nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);

        let sent = http
            .put(format!("https://{name}/_matrix/federation/v1/send/t1"))
            .json(&json!({ "pdus": [], "edus": [] }))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 200);
        assert_eq!(peer.inbound_transactions(), 1);
    }
}
