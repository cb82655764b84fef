//! The two measurements, after the untimed set-up.
//!
//! - Set-up: a local user of the target creates a public room; the peer's
//!   user joins it through `make_join`/`send_join`.
//! - Throughput: every transaction is built and signed first (the peer's
//!   own CPU time is not measured); the warm-up transactions are sent
//!   untimed, then the timed ones one after another, each as soon as the
//!   previous one is answered, as a server sends to one destination. Every
//!   PDU must be reported accepted. A server may answer before it has
//!   processed every PDU of a transaction (Synapse does, and fetches what
//!   it dropped through `get_missing_events`), so the wall time runs from
//!   the first timed request until the last PDU can be read by the local
//!   user (`GET /rooms/{roomId}/event/{eventId}`, asked again each time the
//!   user's long-polled `/sync` wakes); the time to the last answer is
//!   reported too.
//!   Afterwards the local user's `/messages` must hold every PDU.
//! - Latency: the local user long-polls `/sync` in a loop; the peer sends
//!   one PDU per transaction, each after the local user has seen the
//!   previous one and issued its next poll. An event's latency runs from
//!   the start of the peer's `/send` to the moment the local user has read
//!   the whole sync answer that contains it; answers without it are
//!   counted as other wake-ups.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bench::error::BenchError;
use crate::bench::federation::chain::{RoomChain, rules_of};
use crate::bench::federation::peer::Peer;
use crate::bench::federation::signing::event_id_of;
use crate::bench::federation::target::{self, FederationTarget};
use crate::bench::matrix;
use crate::bench::sync_client::{self, Answer, Device, encode_query_value, next_batch};
use axon_complement_tests::{encode_path_segment, now_ms};

/// The local user's long-poll timeout, the one clients use.
const POLL_TIMEOUT_MS: u64 = 30_000;
/// How long one event may take to reach the local user before the run
/// fails: longer than a long poll, so a server that never wakes it is
/// caught.
const EVENT_DEADLINE: Duration = Duration::from_secs(2 * POLL_TIMEOUT_MS / 1000);
/// Events per `/messages` page when checking the target has every PDU.
const MESSAGES_PAGE: usize = 500;
/// A bound on `/messages` pages, so a server that never ends pagination
/// cannot loop the check forever.
const MAX_PAGES: usize = 1000;
/// How many times the local user reads the whole room back, at most.
const MAX_MESSAGES_ROUNDS: usize = 20;
/// The long poll of the local user's `/sync` while it waits for the last PDU.
const VISIBLE_SYNC_TIMEOUT_MS: u64 = 30_000;
/// How long the last PDU may take to become visible after the last answer.
const VISIBLE_DEADLINE: Duration = Duration::from_secs(600);

/// The room both sides are in, and how to reach the target.
#[derive(Debug)]
pub(crate) struct Setup {
    /// The target's server name.
    pub(crate) server_name: String,
    pub(crate) room_id: String,
    local: Device,
    chain: RoomChain,
    federation: FederationTarget,
    setup_http: reqwest::Client,
}

impl Setup {
    /// The room's version.
    pub(crate) fn room_version(&self) -> String {
        self.chain.version().to_string()
    }
}

/// Registers the local user, creates the room (of `room_version`) and joins
/// the peer's user to it.
pub(crate) async fn setup(
    base_url: &str,
    run_id: &str,
    room_version: &str,
    peer: &Peer,
) -> Result<Setup, BenchError> {
    // Refused before anything is created if the peer cannot build its events.
    rules_of(room_version)?;
    let setup_http = sync_client::setup_http_client()?;
    let server_name = target::server_name(&setup_http, base_url).await?;
    let account = sync_client::register(&setup_http, base_url, &format!("fb_{run_id}")).await?;
    let local = account.device;
    let room_id = sync_client::create_room(
        &setup_http,
        base_url,
        &local,
        &json!({
            "preset": "public_chat",
            "name": format!("federation_bench {run_id}"),
            "room_version": room_version,
        }),
    )
    .await?;

    let signer = peer.signer();
    let peer_user = format!("@fb_{run_id}:{}", signer.server_name());
    let federation = FederationTarget::new(
        matrix::http_client()?,
        base_url,
        server_name.clone(),
        signer.clone(),
    );
    let (version, mut template) = federation.make_join(&room_id, &peer_user).await?;
    let (_, rules) = rules_of(&version)?;
    template["origin"] = json!(signer.server_name());
    template["origin_server_ts"] = json!(now_ms());
    let join_depth = template["depth"].as_u64().ok_or_else(|| {
        BenchError::Unsupported(format!("make_join {room_id}: the template has no depth"))
    })?;
    let (join_id, join) = signer.sign_event(&rules, template)?;
    let (state, auth_chain) = federation.send_join(&room_id, &join_id, &join).await?;
    peer.remember(&join_id, &join);
    // The peer answers for the room as a member would: the state at each of
    // its events, and those events themselves.
    let mut state_ids = Vec::with_capacity(state.len());
    for pdu in &state {
        let id = event_id_of(pdu, &rules)?;
        peer.remember(&id, pdu);
        state_ids.push(id);
    }
    let mut auth_chain_ids = Vec::with_capacity(auth_chain.len());
    for pdu in &auth_chain {
        let id = event_id_of(pdu, &rules)?;
        peer.remember(&id, pdu);
        auth_chain_ids.push(id);
    }
    peer.set_room_state(&join_id, state_ids, auth_chain_ids);
    let chain =
        RoomChain::after_join(&room_id, &version, &peer_user, &state, &join_id, join_depth)?;
    Ok(Setup {
        server_name,
        room_id,
        local,
        chain,
        federation,
        setup_http,
    })
}

/// One transaction, built and signed before it is sent.
#[derive(Debug)]
struct Transaction {
    id: String,
    pdus: Vec<Value>,
    event_ids: Vec<String>,
}

/// Builds `count` transactions of `per_transaction` messages each, chained.
fn build_transactions(
    setup: &mut Setup,
    peer: &Peer,
    run_id: &str,
    label: &str,
    count: usize,
    per_transaction: usize,
) -> Result<Vec<Transaction>, BenchError> {
    let signer = peer.signer();
    (0..count)
        .map(|t| {
            let mut txn = Transaction {
                id: format!("{run_id}-{label}{t}"),
                pdus: Vec::with_capacity(per_transaction),
                event_ids: Vec::with_capacity(per_transaction),
            };
            for p in 0..per_transaction {
                let body = format!("federation_bench {run_id} {label}{t}.{p}");
                let (id, pdu) = setup.chain.next_message(&signer, &body, now_ms())?;
                peer.remember(&id, &pdu);
                txn.pdus.push(pdu);
                txn.event_ids.push(id);
            }
            Ok(txn)
        })
        .collect()
}

/// What the throughput workload measured.
#[derive(Debug)]
pub(crate) struct ThroughputOutcome {
    pub(crate) transactions: usize,
    pub(crate) pdus: usize,
    /// From the first timed request until the last PDU is visible to the
    /// local user.
    pub(crate) wall: Duration,
    /// From the first timed request to the last answer.
    pub(crate) answered: Duration,
    /// One per timed transaction: request start to answer read.
    pub(crate) transaction_latencies: Vec<Duration>,
    /// The peer's messages the local user's `/messages` shows (warm-up
    /// included), all of them checked present.
    pub(crate) seen_in_messages: usize,
}

/// Runs the throughput workload.
pub(crate) async fn throughput(
    setup: &mut Setup,
    peer: &Peer,
    base_url: &str,
    run_id: &str,
    warmup: usize,
    transactions: usize,
    per_transaction: usize,
) -> Result<ThroughputOutcome, BenchError> {
    let warm = build_transactions(setup, peer, run_id, "w", warmup, per_transaction)?;
    let timed = build_transactions(setup, peer, run_id, "t", transactions, per_transaction)?;
    let refused = |e: String| BenchError::Unsupported(format!("the target refused PDUs: {e}"));
    for txn in &warm {
        setup
            .federation
            .send_transaction(&txn.id, &txn.pdus, &txn.event_ids)
            .await
            .map_err(refused)?;
    }
    let mut transaction_latencies = Vec::with_capacity(timed.len());
    let start = Instant::now();
    for txn in &timed {
        let sent = Instant::now();
        setup
            .federation
            .send_transaction(&txn.id, &txn.pdus, &txn.event_ids)
            .await
            .map_err(refused)?;
        transaction_latencies.push(sent.elapsed());
    }
    let answered = start.elapsed();
    if let Some(last) = timed.last().and_then(|txn| txn.event_ids.last()) {
        wait_visible(
            &setup.setup_http,
            base_url,
            &setup.local,
            &setup.room_id,
            last,
        )
        .await?;
    }
    let wall = start.elapsed();

    let expected: Vec<&String> = warm
        .iter()
        .chain(&timed)
        .flat_map(|txn| &txn.event_ids)
        .collect();
    // A server that left gaps fills them from the peer as the client pages
    // back (Synapse backfills a bounded number per request): page again
    // while that makes progress.
    let mut missing = expected.len() + 1;
    for _ in 0..MAX_MESSAGES_ROUNDS {
        let seen =
            room_event_ids(&setup.setup_http, base_url, &setup.local, &setup.room_id).await?;
        let now_missing: Vec<&&String> =
            expected.iter().filter(|id| !seen.contains(**id)).collect();
        let Some(first) = now_missing.first() else {
            missing = 0;
            break;
        };
        if now_missing.len() >= missing {
            return Err(BenchError::Unsupported(format!(
                "{} of {} accepted PDUs are not in the local user's /messages (first: {first})",
                now_missing.len(),
                expected.len()
            )));
        }
        missing = now_missing.len();
    }
    if missing > 0 {
        return Err(BenchError::Unsupported(format!(
            "{missing} of {} accepted PDUs are still not in the local user's /messages after \
             {MAX_MESSAGES_ROUNDS} readings",
            expected.len()
        )));
    }
    Ok(ThroughputOutcome {
        transactions: timed.len(),
        pdus: timed.iter().map(|txn| txn.pdus.len()).sum(),
        wall,
        answered,
        transaction_latencies,
        seen_in_messages: expected.len(),
    })
}

/// Waits until `device` can read `event_id` in `room_id`.
async fn wait_visible(
    http: &reqwest::Client,
    base_url: &str,
    device: &Device,
    room_id: &str,
    event_id: &str,
) -> Result<(), BenchError> {
    let url = format!(
        "{base_url}/_matrix/client/v3/rooms/{}/event/{}",
        encode_path_segment(room_id),
        encode_path_segment(event_id)
    );
    let deadline = Instant::now() + VISIBLE_DEADLINE;
    // Taken before the first look, so whatever lands after it wakes the long poll below.
    let mut since = next_batch(&sync_client::sync(http, base_url, device, "timeout=0").await?)?;
    loop {
        let response = http
            .get(&url)
            .header(
                reqwest::header::AUTHORIZATION,
                device.authorization().clone(),
            )
            .send()
            .await
            .map_err(|source| BenchError::Http {
                what: format!("reading {event_id}"),
                source,
            })?;
        let status = response.status().as_u16();
        // The body is read so the connection can be reused.
        let text = response.text().await.unwrap_or_default();
        match status {
            200 => return Ok(()),
            // Not there yet.
            404 => {}
            _ => {
                return Err(BenchError::Status {
                    what: format!("reading {event_id}"),
                    status,
                    body: matrix::excerpt(&text),
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Unsupported(format!(
                "the last PDU {event_id} was not visible to the local user within \
                 {VISIBLE_DEADLINE:?} of the last answer"
            )));
        }
        // Every event the server persists moves the user's sync stream: wait for the next
        // change, then look again.
        let query = format!(
            "since={}&timeout={VISIBLE_SYNC_TIMEOUT_MS}",
            encode_query_value(&since)
        );
        since = next_batch(&sync_client::sync(http, base_url, device, &query).await?)?;
    }
}

/// Every event id of the room's history as `device` reads it through
/// `/messages`, newest first.
async fn room_event_ids(
    http: &reqwest::Client,
    base_url: &str,
    device: &Device,
    room_id: &str,
) -> Result<HashSet<String>, BenchError> {
    let mut ids = HashSet::new();
    let mut from: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut url = format!(
            "{base_url}/_matrix/client/v3/rooms/{}/messages?dir=b&limit={MESSAGES_PAGE}",
            encode_path_segment(room_id)
        );
        if let Some(token) = &from {
            url.push_str(&format!("&from={}", encode_query_value(token)));
        }
        let answer = sync_client::call(
            http,
            reqwest::Method::GET,
            &url,
            Some(device),
            None,
            &format!("reading {room_id} through /messages"),
        )
        .await?;
        let chunk = answer.json["chunk"].as_array().cloned().unwrap_or_default();
        ids.extend(
            chunk
                .iter()
                .filter_map(|event| event["event_id"].as_str().map(str::to_owned)),
        );
        match answer.json["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => return Ok(ids),
        }
    }
    Err(BenchError::Unsupported(format!(
        "/messages of {room_id} did not end within {MAX_PAGES} pages"
    )))
}

/// What the latency workload measured.
#[derive(Debug, Default)]
pub(crate) struct LatencyOutcome {
    /// Send start to sync answer read, one per timed event.
    pub(crate) latencies: Vec<Duration>,
    /// Send start to the `/send` answer, one per timed event.
    pub(crate) send_latencies: Vec<Duration>,
    /// Sync answers that did not contain the awaited event.
    pub(crate) other_wakeups: u64,
}

/// Aborts a task when dropped, so no long poll outlives the workload.
#[derive(Debug)]
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the latency workload: `warmup` untimed events, then `events`.
pub(crate) async fn latency(
    setup: &mut Setup,
    peer: &Peer,
    base_url: &str,
    run_id: &str,
    warmup: usize,
    events: usize,
) -> Result<LatencyOutcome, BenchError> {
    let http = sync_client::http_client()?;
    let first = sync_client::sync(&http, base_url, &setup.local, "timeout=0").await?;
    let since = next_batch(&first)?;
    let (answers, mut received) = mpsc::unbounded_channel();
    let _poller = AbortOnDrop(tokio::spawn(poll_forever(
        http,
        base_url.to_owned(),
        setup.local.clone(),
        since,
        answers,
    )));

    let signer = peer.signer();
    let mut outcome = LatencyOutcome::default();
    for seq in 0..warmup + events {
        let body = format!("federation_bench {run_id} latency {seq}");
        let (event_id, pdu) = setup.chain.next_message(&signer, &body, now_ms())?;
        peer.remember(&event_id, &pdu);
        let txn_id = format!("{run_id}-l{seq}");
        let ids = [event_id.clone()];
        let sent = Instant::now();
        setup
            .federation
            .send_transaction(&txn_id, &[pdu], &ids)
            .await
            .map_err(|e| BenchError::Unsupported(format!("the target refused a PDU: {e}")))?;
        let answered = sent.elapsed();
        let arrived = loop {
            let answer: Answer =
                tokio::time::timeout_at((sent + EVENT_DEADLINE).into(), received.recv())
                    .await
                    .map_err(|_| {
                        BenchError::Unsupported(format!(
                            "event {seq} did not reach the waiting sync within {EVENT_DEADLINE:?}"
                        ))
                    })?
                    .ok_or_else(|| {
                        BenchError::Unsupported("the polling task stopped".to_owned())
                    })??;
            if timeline_has_event(&answer.json, &setup.room_id, &event_id) {
                break answer.received;
            }
            outcome.other_wakeups += 1;
        };
        if seq >= warmup {
            outcome
                .latencies
                .push(arrived.saturating_duration_since(sent));
            outcome.send_latencies.push(answered);
        }
    }
    Ok(outcome)
}

/// The local user's loop: long-poll, hand each answer over, poll again. The
/// next request is spawned before the answer is handed over, so it has been
/// issued by the time the peer sends its next event.
async fn poll_forever(
    http: reqwest::Client,
    base_url: String,
    device: Device,
    mut since: String,
    answers: mpsc::UnboundedSender<Result<Answer, BenchError>>,
) {
    let spawn_poll = |since: &str| {
        let (http, base_url, device) = (http.clone(), base_url.clone(), device.clone());
        let query = format!(
            "since={}&timeout={POLL_TIMEOUT_MS}",
            encode_query_value(since)
        );
        AbortOnDrop(tokio::spawn(async move {
            sync_client::sync(&http, &base_url, &device, &query).await
        }))
    };
    let mut pending = spawn_poll(&since);
    loop {
        let answer = match (&mut pending.0).await {
            Ok(answer) => answer,
            Err(e) => Err(BenchError::Unsupported(format!("a sync task died: {e}"))),
        };
        let answer = match answer.and_then(|answer| Ok((next_batch(&answer)?, answer))) {
            Ok((next, answer)) => {
                since = next;
                pending = spawn_poll(&since);
                Ok(answer)
            }
            Err(e) => Err(e),
        };
        let failed = answer.is_err();
        if answers.send(answer).is_err() || failed {
            return;
        }
    }
}

/// Whether `room_id`'s timeline in a sync answer has the event `event_id`.
fn timeline_has_event(sync: &Value, room_id: &str, event_id: &str) -> bool {
    sync["rooms"]["join"][room_id]["timeline"]["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|event| event["event_id"] == event_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_is_found_only_in_its_rooms_timeline() {
        let answer = json!({
            "next_batch": "s1",
            "rooms": { "join": {
                "!a:x": { "timeline": { "events": [
                    { "event_id": "$other" }, { "event_id": "$one" },
                ] } },
                "!b:x": { "timeline": { "events": [ { "event_id": "$two" } ] } },
            } },
        });
        assert!(timeline_has_event(&answer, "!a:x", "$one"));
        assert!(!timeline_has_event(&answer, "!a:x", "$two"));
        assert!(!timeline_has_event(&answer, "!c:x", "$one"));
        assert!(!timeline_has_event(
            &json!({ "next_batch": "s2" }),
            "!a:x",
            "$one"
        ));
    }
}
