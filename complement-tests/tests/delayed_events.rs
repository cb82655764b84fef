//! Delayed events (MSC4140): scheduling through `/send` and `/state` with
//! `org.matrix.msc4140.delay` and through the `delayed_event` endpoint, sending when due,
//! the management actions, limits, surviving a restart, and cancellation by another user's
//! state change.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod rooms_support;

use std::time::Duration;

use axon_complement_tests::{
    Homeserver, Response, ServerOptions, assert_matrix_error, encode_path_segment, now_ms,
    random_string, wait_until,
};
use rooms_support::{User, room_path, state_path, user};
use serde_json::{Value, json};

const UNSTABLE: &str = "/_matrix/client/unstable/org.matrix.msc4140";
const CALL_MEMBER: &str = "org.matrix.msc3401.call.member";
/// Long enough that an event scheduled with it never comes due during a test.
const LONG_DELAY_MS: u64 = 600_000;
/// Deadline for what the server does by itself (sending a due event).
const DEADLINE: Duration = Duration::from_secs(20);

impl User {
    /// `PUT /send` of a message with a delay; returns the raw response.
    async fn send_delayed(&self, room_id: &str, body: &str, delay_ms: u64) -> Response {
        let path = room_path(
            room_id,
            &format!(
                "/send/m.room.message/{}?org.matrix.msc4140.delay={delay_ms}",
                random_string(12)
            ),
        );
        self.client
            .put(&path, json!({ "msgtype": "m.text", "body": body }))
            .await
    }

    /// `PUT /state` with a delay; returns the delay id.
    async fn state_delayed(
        &self,
        room_id: &str,
        state_key: &str,
        content: Value,
        delay_ms: u64,
    ) -> String {
        let path = format!(
            "{}?org.matrix.msc4140.delay={delay_ms}",
            state_path(room_id, CALL_MEMBER, state_key)
        );
        let resp = self.client.put(&path, content).await;
        resp.assert_ok();
        assert!(resp.body.get("event_id").is_none(), "{}", resp.describe());
        resp.str_at("/delay_id").to_owned()
    }

    /// The user's scheduled delayed events.
    async fn delayed_events(&self) -> Vec<Value> {
        let resp = self.client.get(&format!("{UNSTABLE}/delayed_events")).await;
        resp.assert_ok();
        match resp.body["delayed_events"].as_array() {
            Some(events) => events.clone(),
            None => panic!("no delayed_events list: {}", resp.describe()),
        }
    }

    /// The ids of the user's scheduled delayed events.
    async fn delay_ids(&self) -> Vec<String> {
        self.delayed_events()
            .await
            .iter()
            .map(|event| event["delay_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The bodies of the room's messages, oldest first.
    async fn bodies(&self, room_id: &str) -> Vec<String> {
        rooms_support::message_bodies(&self.all_messages(room_id, "f", 50).await)
    }
}

/// `POST /delayed_events/{delayId}/{action}`: unauthenticated.
async fn act(hs: &Homeserver, delay_id: &str, action: &str) -> Response {
    hs.client()
        .post(
            &format!(
                "{UNSTABLE}/delayed_events/{}/{action}",
                encode_path_segment(delay_id)
            ),
            json!({}),
        )
        .await
}

/// A room of `alice`'s in which `bob`, if given, has joined and may set call state.
async fn call_room(alice: &User, bob: Option<&User>) -> String {
    let mut users = json!({ alice.user_id.clone(): 100 });
    if let Some(bob) = bob {
        users[bob.user_id.as_str()] = json!(50);
    }
    let room_id = alice
        .create_room(json!({
            "preset": "public_chat",
            "power_level_content_override": { "users": users },
        }))
        .await;
    if let Some(bob) = bob {
        bob.join(&room_id).await;
    }
    room_id
}

#[tokio::test]
async fn a_delayed_message_is_listed_then_sent_when_due() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let room_id = call_room(&alice, None).await;
    let before = now_ms();

    let resp = alice.send_delayed(&room_id, "later", 300).await;
    resp.assert_ok();
    assert!(resp.body.get("event_id").is_none(), "{}", resp.describe());
    let delay_id = resp.str_at("/delay_id").to_owned();

    // It is listed until it is sent (unless the machine was slow enough for it to be sent
    // already, which the wait below also covers).
    let listed = alice.delayed_events().await;
    if let Some(event) = listed.first() {
        assert_eq!(event["delay_id"], delay_id.as_str());
        assert_eq!(event["room_id"], room_id.as_str());
        assert_eq!(event["type"], "m.room.message");
        assert_eq!(event["delay"], 300);
        assert_eq!(
            event["content"],
            json!({ "msgtype": "m.text", "body": "later" })
        );
        assert!(event.get("state_key").is_none(), "{event}");
        let running_since = event["running_since"].as_u64().unwrap_or_default();
        assert!(
            running_since >= before && running_since <= now_ms(),
            "{event}"
        );
    }

    wait_until("the delayed message to be sent", DEADLINE, || {
        let alice = alice.clone();
        let room_id = room_id.clone();
        async move {
            alice
                .bodies(&room_id)
                .await
                .contains(&"later".to_owned())
                .then_some(())
        }
    })
    .await;
    let events = alice.all_messages(&room_id, "b", 1).await;
    let sent = events
        .iter()
        .find(|event| event["content"]["body"] == "later")
        .cloned()
        .unwrap_or_default();
    assert_eq!(sent["sender"], alice.user_id.as_str());
    // The sender can tell which delayed event sent it (MSC4140).
    assert_eq!(
        sent["unsigned"]["org.matrix.msc4140.delay_id"],
        delay_id.as_str(),
        "{sent}"
    );
    assert!(
        sent["origin_server_ts"].as_u64().unwrap_or_default() >= before + 300,
        "{sent}"
    );
    assert!(alice.delayed_events().await.is_empty());
    // A retried send of a sent event succeeds (MSC4140) and sends nothing more.
    act(&hs, &delay_id, "send").await.assert_ok();
    assert_eq!(
        alice
            .bodies(&room_id)
            .await
            .iter()
            .filter(|body| *body == "later")
            .count(),
        1
    );
}

#[tokio::test]
async fn restart_cancel_and_send_actions() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = call_room(&alice, Some(&bob)).await;
    let left = json!({});
    let key = format!("_{}_PHONE", alice.user_id);

    // send: the event goes out now, with the scheduled content.
    let to_send = alice
        .state_delayed(&room_id, &key, left.clone(), LONG_DELAY_MS)
        .await;
    let listed = alice.delayed_events().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state_key"], key.as_str());
    assert_eq!(listed[0]["type"], CALL_MEMBER);
    act(&hs, &to_send, "send").await.assert_ok();
    let state = alice.get_state(&room_id, CALL_MEMBER, &key).await;
    state.assert_ok();
    assert_eq!(state.body, left);
    assert!(alice.delayed_events().await.is_empty());

    // restart: the timer runs again from now.
    let to_restart = alice
        .state_delayed(&room_id, &key, json!({ "v": 2 }), LONG_DELAY_MS)
        .await;
    let first_start = alice.delayed_events().await[0]["running_since"]
        .as_u64()
        .unwrap_or_default();
    wait_until("the clock to move on", DEADLINE, || async {
        (now_ms() > first_start).then_some(())
    })
    .await;
    act(&hs, &to_restart, "restart").await.assert_ok();
    let restarted = alice.delayed_events().await;
    assert_eq!(restarted.len(), 1);
    assert!(
        restarted[0]["running_since"].as_u64().unwrap_or_default() > first_start,
        "{restarted:?}"
    );
    assert_eq!(restarted[0]["delay"], LONG_DELAY_MS);

    // cancel, through the earlier form with the action in the body; only the owner may.
    let legacy = format!(
        "{UNSTABLE}/delayed_events/{}",
        encode_path_segment(&to_restart)
    );
    assert_matrix_error(
        &bob.client
            .post(&legacy, json!({ "action": "cancel" }))
            .await,
        404,
        "M_NOT_FOUND",
    );
    assert_matrix_error(
        &hs.client()
            .post(&legacy, json!({ "action": "cancel" }))
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    alice
        .client
        .post(&legacy, json!({ "action": "cancel" }))
        .await
        .assert_ok();
    assert!(alice.delayed_events().await.is_empty());
    // Finalised: restarting conflicts with the cancellation, cancelling again succeeds
    // (MSC4140), and an id never scheduled is unknown.
    assert_matrix_error(&act(&hs, &to_restart, "restart").await, 409, "M_UNKNOWN");
    act(&hs, &to_restart, "cancel").await.assert_ok();
    assert_matrix_error(
        &act(&hs, "NoSuchDelayId", "cancel").await,
        404,
        "M_NOT_FOUND",
    );
    // The cancelled content never reached the room.
    assert_eq!(alice.state_content(&room_id, CALL_MEMBER, &key).await, left);

    // The single-event lookup shows only the user's own events.
    let pending = alice
        .state_delayed(&room_id, &key, json!({ "v": 3 }), LONG_DELAY_MS)
        .await;
    let path = format!(
        "{UNSTABLE}/delayed_events/{}",
        encode_path_segment(&pending)
    );
    let resp = alice.client.get(&path).await;
    resp.assert_ok();
    assert_eq!(resp.body["content"], json!({ "v": 3 }));
    assert_matrix_error(&bob.client.get(&path).await, 404, "M_NOT_FOUND");
    assert_matrix_error(&act(&hs, &pending, "explode").await, 400, "M_INVALID_PARAM");
    assert!(bob.delayed_events().await.is_empty());

    // A send that the auth rules refuse fails like a normal send and stays scheduled.
    let outsider = user(&hs, "carol").await;
    let refused = outsider
        .state_delayed(&room_id, "_carol", json!({}), LONG_DELAY_MS)
        .await;
    assert_matrix_error(&act(&hs, &refused, "send").await, 403, "M_FORBIDDEN");
    assert_eq!(outsider.delay_ids().await, vec![refused]);
}

#[tokio::test]
async fn the_delayed_event_endpoint_is_idempotent_per_transaction() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let room_id = call_room(&alice, None).await;
    let path = format!(
        "{UNSTABLE}/rooms/{}/delayed_event/{}/txn1",
        encode_path_segment(&room_id),
        CALL_MEMBER
    );
    let body = json!({ "delay": LONG_DELAY_MS, "state_key": "_k", "content": { "a": 1 } });
    let first = alice.client.put(&path, body.clone()).await;
    first.assert_ok();
    let again = alice.client.put(&path, body).await;
    again.assert_ok();
    assert_eq!(first.str_at("/delay_id"), again.str_at("/delay_id"));
    let listed = alice.delayed_events().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state_key"], "_k");
    assert_eq!(listed[0]["content"], json!({ "a": 1 }));
}

#[tokio::test]
async fn delays_and_counts_are_limited() {
    let hs = Homeserver::start(
        ServerOptions::new().with_toml("[delayed_events]\nmax_delay_ms = 600000\nmax_per_user = 2"),
    )
    .await;
    let alice = user(&hs, "alice").await;
    let room_id = call_room(&alice, None).await;

    let too_long = alice.send_delayed(&room_id, "x", 600_001).await;
    assert_matrix_error(&too_long, 400, "M_MAX_DELAY_EXCEEDED");
    assert_eq!(too_long.body["max_delay"], 600_000);
    assert_matrix_error(
        &alice.send_delayed(&room_id, "x", 0).await,
        400,
        "M_MAX_DELAY_EXCEEDED",
    );
    let not_a_number = alice
        .client
        .put(
            &room_path(
                &room_id,
                "/send/m.room.message/t1?org.matrix.msc4140.delay=soon",
            ),
            json!({ "msgtype": "m.text", "body": "x" }),
        )
        .await;
    assert_matrix_error(&not_a_number, 400, "M_INVALID_PARAM");

    alice
        .send_delayed(&room_id, "one", LONG_DELAY_MS)
        .await
        .assert_ok();
    alice
        .send_delayed(&room_id, "two", LONG_DELAY_MS)
        .await
        .assert_ok();
    let third = alice.send_delayed(&room_id, "three", LONG_DELAY_MS).await;
    assert_matrix_error(&third, 429, "M_LIMIT_EXCEEDED");
    assert!(
        third.header("retry-after").is_some(),
        "{}",
        third.describe()
    );
    assert_eq!(alice.delayed_events().await.len(), 2);
}

#[tokio::test]
async fn scheduled_events_survive_a_crash_and_are_sent_once_due() {
    let mut hs = Homeserver::start(ServerOptions::new().with_metrics()).await;
    let alice = user(&hs, "alice").await;
    let room_id = call_room(&alice, None).await;

    let pending = alice
        .send_delayed(&room_id, "still waiting", LONG_DELAY_MS)
        .await;
    pending.assert_ok();
    let resp = alice
        .send_delayed(&room_id, "sent after restart", 2000)
        .await;
    resp.assert_ok();
    hs.kill9();
    let killed_at = now_ms();
    let due = killed_at + 2000;
    wait_until("the delayed event to fall due", DEADLINE, || async {
        (now_ms() > due).then_some(())
    })
    .await;
    hs.restart().await;

    wait_until("the overdue event to be sent", DEADLINE, || {
        let alice = alice.clone();
        let room_id = room_id.clone();
        async move {
            let events = alice.all_messages(&room_id, "b", 10).await;
            events
                .into_iter()
                .find(|event| event["content"]["body"] == "sent after restart")
        }
    })
    .await;
    let events = alice.all_messages(&room_id, "f", 50).await;
    let sent: Vec<&Value> = events
        .iter()
        .filter(|event| event["content"]["body"] == "sent after restart")
        .collect();
    assert_eq!(sent.len(), 1, "sent once: {events:?}");
    assert!(
        sent[0]["origin_server_ts"].as_u64().unwrap_or_default() >= killed_at,
        "sent by the restarted server: {:?}",
        sent[0]
    );
    assert_eq!(
        alice.delay_ids().await,
        vec![pending.str_at("/delay_id").to_owned()]
    );
    let metrics = hs.scrape_metrics().await;
    assert!(
        metrics.contains("axon_delayed_events_scheduled 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn another_users_state_change_cancels_a_delayed_state_event() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = call_room(&alice, Some(&bob)).await;

    let own = alice
        .state_delayed(&room_id, "_k1", json!({}), LONG_DELAY_MS)
        .await;
    let overwritten = alice
        .state_delayed(&room_id, "_k2", json!({}), LONG_DELAY_MS)
        .await;
    // Alice's own change of _k1 keeps her delayed event; Bob's change of _k2 cancels hers.
    alice
        .put_state(&room_id, CALL_MEMBER, "_k1", json!({ "by": "alice" }))
        .await
        .assert_ok();
    bob.put_state(&room_id, CALL_MEMBER, "_k2", json!({ "by": "bob" }))
        .await
        .assert_ok();
    wait_until(
        "the overwritten delayed event to be cancelled",
        DEADLINE,
        || {
            let alice = alice.clone();
            let overwritten = overwritten.clone();
            async move { (!alice.delay_ids().await.contains(&overwritten)).then_some(()) }
        },
    )
    .await;
    // Changes are handled in stream order, so Alice's earlier change was handled by now.
    assert_eq!(alice.delay_ids().await, vec![own]);
    assert_eq!(
        alice.state_content(&room_id, CALL_MEMBER, "_k2").await,
        json!({ "by": "bob" })
    );
}

/// The user's finalised delayed events, with extra query parameters (`&...`).
async fn finalised(user: &User, extra: &str) -> Vec<Value> {
    let resp = user
        .client
        .get(&format!(
            "{UNSTABLE}/delayed_events?status=finalised{extra}"
        ))
        .await;
    resp.assert_ok();
    match resp.body["delayed_events"].as_array() {
        Some(events) => events.clone(),
        None => panic!("no delayed_events list: {}", resp.describe()),
    }
}

#[tokio::test]
async fn finalised_delayed_events_stay_queryable_with_their_outcome() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = call_room(&alice, Some(&bob)).await;
    let before = now_ms();

    // Sent by its delay running out.
    let due = alice.send_delayed(&room_id, "due now", 200).await;
    due.assert_ok();
    let due = due.str_at("/delay_id").to_owned();
    // Sent by the send action.
    let pushed = alice
        .state_delayed(&room_id, "_alice", json!({ "v": 1 }), LONG_DELAY_MS)
        .await;
    act(&hs, &pushed, "send").await.assert_ok();
    // Cancelled.
    let dropped = alice
        .send_delayed(&room_id, "never", LONG_DELAY_MS)
        .await
        .str_at("/delay_id")
        .to_owned();
    act(&hs, &dropped, "cancel").await.assert_ok();
    // Failing when due: Bob's power does not reach the power levels.
    let doomed = {
        let path = format!(
            "{}?org.matrix.msc4140.delay=200",
            state_path(&room_id, "m.room.power_levels", "")
        );
        let resp = bob.client.put(&path, json!({ "users": {} })).await;
        resp.assert_ok();
        resp.str_at("/delay_id").to_owned()
    };

    wait_until("both delays to run out", DEADLINE, || {
        let alice = alice.clone();
        let bob = bob.clone();
        async move {
            let mine = finalised(&alice, "").await.len();
            let bobs = finalised(&bob, "").await.len();
            (mine == 3 && bobs == 1).then_some(())
        }
    })
    .await;

    // The scheduled listing no longer shows them; the finalised one does, with outcomes.
    assert!(alice.delayed_events().await.is_empty());
    let done = finalised(&alice, "").await;
    let by_id = |id: &str| {
        done.iter()
            .find(|event| event["delay_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not finalised: {done:?}"))
    };
    let sent = by_id(&due);
    assert_eq!(sent["outcome"], "send");
    assert_eq!(sent["reason"], "delay");
    assert_eq!(
        sent["content"],
        json!({ "msgtype": "m.text", "body": "due now" })
    );
    assert!(
        sent["event_id"]
            .as_str()
            .is_some_and(|id| id.starts_with('$')),
        "{sent}"
    );
    assert!(
        sent["origin_server_ts"].as_u64().unwrap_or_default() >= before + 200,
        "{sent}"
    );
    let pushed_event = by_id(&pushed);
    assert_eq!(pushed_event["outcome"], "send");
    assert_eq!(pushed_event["reason"], "action");
    assert_eq!(pushed_event["state_key"], "_alice");
    let cancelled = by_id(&dropped);
    assert_eq!(cancelled["outcome"], "cancel");
    assert!(cancelled.get("event_id").is_none(), "{cancelled}");

    // The event sent at its due time is the one in the room.
    let event_id = sent["event_id"].as_str().unwrap_or_default();
    let event = alice
        .client
        .get(&room_path(
            &room_id,
            &format!("/event/{}", encode_path_segment(event_id)),
        ))
        .await;
    event.assert_ok();
    assert_eq!(event.body["content"]["body"], "due now");

    // A failed send is kept with its error, and not retried.
    let failed = finalised(&bob, "").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["delay_id"], doomed.as_str());
    assert_eq!(failed[0]["outcome"], "error");
    assert_eq!(failed[0]["error"]["errcode"], "M_FORBIDDEN");
    assert!(failed[0].get("event_id").is_none());
    assert_matrix_error(&act(&hs, &doomed, "send").await, 409, "M_UNKNOWN");

    // Filters: outcome, reason, room and type.
    let only = |events: Vec<Value>| -> Vec<String> {
        let mut ids: Vec<String> = events
            .iter()
            .map(|event| event["delay_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let mut sent_ids = vec![due.clone(), pushed.clone()];
    sent_ids.sort();
    assert_eq!(only(finalised(&alice, "&outcome=send").await), sent_ids);
    assert_eq!(
        only(finalised(&alice, "&outcome=cancel").await),
        vec![dropped.clone()]
    );
    assert_eq!(
        only(finalised(&alice, "&reason=delay").await),
        vec![due.clone()]
    );
    assert_eq!(
        only(finalised(&alice, &format!("&type={CALL_MEMBER}")).await),
        vec![pushed.clone()]
    );
    assert!(
        finalised(&alice, "&room_id=!elsewhere:example.org")
            .await
            .is_empty()
    );
    assert_matrix_error(
        &alice
            .client
            .get(&format!("{UNSTABLE}/delayed_events?status=someday"))
            .await,
        400,
        "M_INVALID_PARAM",
    );

    // One at a time, by id; another user's stays hidden.
    let path = format!(
        "{UNSTABLE}/delayed_events/{}",
        encode_path_segment(&dropped)
    );
    let one = alice.client.get(&path).await;
    one.assert_ok();
    assert_eq!(one.body["outcome"], "cancel");
    assert_matrix_error(&bob.client.get(&path).await, 404, "M_NOT_FOUND");
}
