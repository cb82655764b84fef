//! What the Synapse interop tests do on both sides, so each test reads as its scenario:
//! starting the pair, users of either server, joins, reading messages, state and `/sync`, and
//! waiting, with a deadline, for a change to cross over.
#![allow(
    clippy::panic,
    dead_code,
    reason = "test helpers report failures by panicking with context; not every test uses all"
)]

use std::sync::Mutex;
use std::time::Duration;

use axon_complement_tests::{Homeserver, Response, encode_path_segment, random_string, wait_until};
use serde_json::{Value, json};

use super::{AXON_SENDER, Synapse, axon_options, loopback_pki};
use crate::federation_support::{Pki, free_port};
use crate::rooms_support::{PASSWORD, User, message_bodies, room_path, v3};

/// How long a change may take to cross over (Synapse batches and retries; the machine may be
/// busy building).
pub(crate) const CROSSING: Duration = Duration::from_secs(60);

/// Synapse and an `axon` that federate with each other.
pub(crate) struct Peers {
    pub(crate) axon: Homeserver,
    pub(crate) synapse: Synapse,
    /// Kept for the certificates' files.
    _pki: Pki,
}

/// Starts Synapse and an `axon` named `127.0.0.1:<its TLS port>`.
pub(crate) async fn start() -> Peers {
    let pki = loopback_pki();
    let synapse = Synapse::start(&pki).await;
    let axon = Homeserver::start(axon_options(&pki, free_port(), AXON_SENDER)).await;
    Peers {
        axon,
        synapse,
        _pki: pki,
    }
}

/// Registers `name` on Synapse.
pub(crate) async fn synapse_user(synapse: &Synapse, name: &str) -> User {
    let client = synapse.client();
    let session = client.register(name, PASSWORD).await;
    User {
        client: client.as_session(&session),
        user_id: session.user_id,
        device_id: session.device_id,
    }
}

/// The server part of a user id.
pub(crate) fn server_of(user_id: &str) -> &str {
    user_id
        .split_once(':')
        .map_or_else(|| panic!("not a user id: {user_id}"), |(_, server)| server)
}

/// Sets `user`'s display name on its own server.
pub(crate) async fn set_displayname(user: &User, name: &str) {
    user.client
        .put(
            &v3(&format!(
                "/profile/{}/displayname",
                encode_path_segment(&user.user_id)
            )),
            json!({ "displayname": name }),
        )
        .await
        .assert_ok();
}

/// Joins `joiner` to the room `alias` names, asserting success; returns the room id.
pub(crate) async fn join_by_alias(joiner: &User, alias: &str) -> String {
    let resp = joiner
        .client
        .post(
            &v3(&format!("/join/{}", encode_path_segment(alias))),
            json!({}),
        )
        .await;
    resp.assert_ok();
    resp.str_at("/room_id").to_owned()
}

/// Asks to join `room_id` through `server`, returning the raw response.
pub(crate) async fn try_join_via(joiner: &User, room_id: &str, server: &str) -> Response {
    joiner
        .client
        .post(
            &v3(&format!(
                "/join/{}?server_name={}",
                encode_path_segment(room_id),
                encode_path_segment(server)
            )),
            json!({}),
        )
        .await
}

/// Joins `joiner` to `room_id` through `server`, asserting success.
pub(crate) async fn join_via(joiner: &User, room_id: &str, server: &str) {
    let resp = try_join_via(joiner, room_id, server).await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/room_id"), room_id);
}

/// The bodies of the messages `reader` sees in `room_id`, oldest first. Paginated backwards
/// from the end, as clients do: a server that joined late fetches the history before its join
/// from the other (backfill) only when asked for it this way.
pub(crate) async fn bodies(reader: &User, room_id: &str) -> Vec<String> {
    let mut events = reader.all_messages(room_id, "b", 100).await;
    events.reverse();
    message_bodies(&events)
}

/// Waits until `reader` sees `expected` as the last messages of `room_id`, in this order.
pub(crate) async fn wait_for_messages(reader: &User, room_id: &str, expected: &[&str]) {
    let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    wait_until(
        &format!("{} to see {expected:?} last in {room_id}", reader.user_id),
        CROSSING,
        || async {
            let seen = bodies(reader, room_id).await;
            seen.ends_with(&expected).then_some(())
        },
    )
    .await;
}

/// Waits until `reader` sees `member`'s membership in `room_id` as `membership`.
pub(crate) async fn wait_for_membership(
    reader: &User,
    room_id: &str,
    member: &str,
    membership: &str,
) {
    wait_for_state(
        reader,
        room_id,
        "m.room.member",
        member,
        &format!("{member} {membership}"),
        |content| content["membership"] == membership,
    )
    .await;
}

/// Waits until `member`'s `/sync` (with left rooms) shows its own membership in `room_id` as
/// `membership`, in the room's timeline or state.
pub(crate) async fn wait_for_own_membership_in_sync(
    member: &User,
    room_id: &str,
    membership: &str,
) {
    let filter = json!({ "room": { "rooms": [room_id], "include_leave": true } });
    let path = v3(&format!(
        "/sync?filter={}",
        encode_path_segment(&filter.to_string())
    ));
    wait_until(
        &format!("{} to see its {membership} in /sync", member.user_id),
        CROSSING,
        || async {
            let resp = member.client.get(&path).await;
            resp.assert_ok();
            let rooms = &resp.body["rooms"];
            let found = ["join", "leave"].iter().any(|section| {
                let room = &rooms[*section][room_id];
                ["timeline", "state"].iter().any(|part| {
                    room[*part]["events"].as_array().is_some_and(|events| {
                        events.iter().any(|event| {
                            event["type"] == "m.room.member"
                                && event["state_key"] == member.user_id
                                && event["content"]["membership"] == membership
                        })
                    })
                })
            });
            found.then_some(())
        },
    )
    .await;
}

/// Waits until `reader`'s server answers the state event `(event_type, state_key)` of
/// `room_id` with content that satisfies `holds`; returns that content.
pub(crate) async fn wait_for_state(
    reader: &User,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    what: &str,
    holds: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(
        &format!("{} to see {what} in {room_id}", reader.user_id),
        CROSSING,
        || async {
            let resp = reader.get_state(room_id, event_type, state_key).await;
            (resp.status == 200 && holds(&resp.body)).then_some(resp.body)
        },
    )
    .await
}

/// Waits until `reader` sees `event_id` redacted: its content emptied, as redaction leaves
/// an `m.room.message`.
pub(crate) async fn wait_for_redaction(reader: &User, room_id: &str, event_id: &str) {
    wait_until(
        &format!("{} to see {event_id} redacted", reader.user_id),
        CROSSING,
        || async {
            let resp = reader.get_event(room_id, event_id).await;
            let redacted = resp.status == 200
                && resp.body["content"]
                    .as_object()
                    .is_some_and(|c| c.is_empty())
                && resp.body["unsigned"]["redacted_because"].is_object();
            redacted.then_some(())
        },
    )
    .await;
}

/// Waits until `reader`'s server has `event_id`.
pub(crate) async fn wait_for_event(reader: &User, room_id: &str, event_id: &str) {
    wait_until(
        &format!("{} to have {event_id}", reader.user_id),
        CROSSING,
        || async { (reader.get_event(room_id, event_id).await.status == 200).then_some(()) },
    )
    .await;
}

/// Redacts `event_id` as `redactor`, asserting success.
pub(crate) async fn redact(redactor: &User, room_id: &str, event_id: &str) {
    let path = room_path(
        room_id,
        &format!(
            "/redact/{}/{}",
            encode_path_segment(event_id),
            random_string(12)
        ),
    );
    redactor
        .client
        .put(&path, json!({ "reason": "interop" }))
        .await
        .assert_ok();
}

/// Changes `room_id`'s power levels as `sender`: reads them, lets `change` edit them, sends
/// them back; returns the new event's id.
pub(crate) async fn change_power_levels(
    sender: &User,
    room_id: &str,
    change: impl FnOnce(&mut Value),
) -> String {
    let mut levels = sender
        .state_content(room_id, "m.room.power_levels", "")
        .await;
    change(&mut levels);
    let resp = sender
        .put_state(room_id, "m.room.power_levels", "", levels)
        .await;
    resp.assert_ok();
    resp.str_at("/event_id").to_owned()
}

/// The event id of the current `m.room.power_levels` event of `room_id`, as `reader`'s server
/// has it.
pub(crate) async fn power_levels_event_id(reader: &User, room_id: &str) -> String {
    let resp = reader.client.get(&room_path(room_id, "/state")).await;
    resp.assert_ok();
    resp.body
        .as_array()
        .and_then(|events| {
            events
                .iter()
                .find(|event| event["type"] == "m.room.power_levels")
        })
        .and_then(|event| event["event_id"].as_str())
        .unwrap_or_else(|| panic!("no power levels in {}", resp.describe()))
        .to_owned()
}

/// Follows `reader`'s `/sync` from `since` (from an initial sync if `None`) until it shows an
/// ephemeral event of `kind` in `room_id` for which `holds`; returns the `next_batch` of that
/// response, to follow on from.
pub(crate) async fn wait_for_ephemeral(
    reader: &User,
    room_id: &str,
    since: Option<String>,
    kind: &str,
    what: &str,
    holds: impl Fn(&Value) -> bool,
) -> String {
    let filter = json!({ "room": { "rooms": [room_id], "timeline": { "limit": 1 } } });
    let filter = encode_path_segment(&filter.to_string());
    let since = Mutex::new(since);
    wait_until(
        &format!("{} to see {what} in /sync", reader.user_id),
        CROSSING,
        || async {
            let token = since.lock().ok().and_then(|token| token.clone());
            let query = match token {
                Some(token) => format!(
                    "filter={filter}&timeout=1000&since={}",
                    encode_path_segment(&token)
                ),
                None => format!("filter={filter}"),
            };
            let resp = reader.client.get(&v3(&format!("/sync?{query}"))).await;
            resp.assert_ok();
            let next = resp.str_at("/next_batch").to_owned();
            if let Ok(mut token) = since.lock() {
                *token = Some(next.clone());
            }
            let events = resp.body["rooms"]["join"][room_id]["ephemeral"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            events
                .iter()
                .any(|event| event["type"] == kind && holds(&event["content"]))
                .then_some(next)
        },
    )
    .await
}

/// The bodies of the messages in `room_id`'s timeline of an initial `/sync` of `reader`.
pub(crate) async fn sync_timeline_bodies(reader: &User, room_id: &str) -> Vec<String> {
    let filter = json!({ "room": { "rooms": [room_id], "timeline": { "limit": 50 } } });
    let resp = reader
        .client
        .get(&v3(&format!(
            "/sync?filter={}",
            encode_path_segment(&filter.to_string())
        )))
        .await;
    resp.assert_ok();
    let events = resp.body["rooms"]["join"][room_id]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    message_bodies(&events)
}

/// `GET /profile/{user_id}` as `asker`.
pub(crate) async fn profile(asker: &User, user_id: &str) -> Response {
    asker
        .client
        .get(&v3(&format!("/profile/{}", encode_path_segment(user_id))))
        .await
}

/// `who`'s `/sync` since `since` (an initial sync when `None`), returning at once.
pub(crate) async fn sync_now(who: &User, since: Option<&str>) -> Value {
    let path = match since {
        Some(since) => v3(&format!(
            "/sync?timeout=0&since={}",
            encode_path_segment(since)
        )),
        None => v3("/sync?timeout=0"),
    };
    let resp = who.client.get(&path).await;
    resp.assert_ok();
    resp.body
}

/// Waits until `who`'s initial `/sync` lists `room_id` under `rooms.{section}` (`invite`,
/// `join`, `knock`); returns that room's entry and the sync's `next_batch`.
pub(crate) async fn wait_for_section(who: &User, section: &str, room_id: &str) -> (Value, String) {
    wait_until(
        &format!("{} to see {room_id} under rooms.{section}", who.user_id),
        CROSSING,
        || async {
            let body = sync_now(who, None).await;
            let room = body["rooms"][section].get(room_id)?.clone();
            Some((room, body["next_batch"].as_str()?.to_owned()))
        },
    )
    .await
}

/// The `type`s of a stripped state list, and the name its `m.room.name` gives.
pub(crate) fn stripped_summary(events: &Value) -> (Vec<String>, Option<String>) {
    let events = events.as_array().cloned().unwrap_or_default();
    let types = events
        .iter()
        .filter_map(|event| event["type"].as_str().map(str::to_owned))
        .collect();
    let name = events
        .iter()
        .find(|event| event["type"] == "m.room.name")
        .and_then(|event| event["content"]["name"].as_str().map(str::to_owned));
    (types, name)
}

/// Asserts that an invite's `invite_state` (as a room entry under `rooms.invite` of `/sync`)
/// names the room `name`, carries its create event and join rules, and holds the invite of
/// `invitee` sent by `inviter`.
pub(crate) fn assert_invite_state(invited: &Value, name: &str, invitee: &str, inviter: &str) {
    let events = &invited["invite_state"]["events"];
    let (types, seen_name) = stripped_summary(events);
    assert_eq!(seen_name.as_deref(), Some(name), "{invited}");
    for expected in ["m.room.create", "m.room.join_rules"] {
        assert!(types.iter().any(|t| t == expected), "{expected}: {invited}");
    }
    let own = events
        .as_array()
        .and_then(|events| {
            events
                .iter()
                .find(|event| event["type"] == "m.room.member" && event["state_key"] == invitee)
        })
        .unwrap_or_else(|| panic!("no invite event for {invitee}: {invited}"));
    assert_eq!(own["content"]["membership"], "invite", "{own}");
    assert_eq!(own["sender"], inviter, "{own}");
}

/// Waits until `reader`'s member list of `room_id` (`GET /members`) shows `member` with
/// `membership`.
pub(crate) async fn wait_for_member_list(
    reader: &User,
    room_id: &str,
    member: &str,
    membership: &str,
) {
    wait_until(
        &format!(
            "{} to list {member} as {membership} in {room_id}",
            reader.user_id
        ),
        CROSSING,
        || async {
            let members = reader.members(room_id, "").await;
            members
                .iter()
                .any(|(user, seen)| user == member && seen == membership)
                .then_some(())
        },
    )
    .await;
}

/// The bodies of the `count` messages `m1`..`m{count}` the backfill tests send.
pub(crate) fn numbered(count: usize) -> Vec<String> {
    (1..=count).map(|n| format!("m{n}")).collect()
}

/// Asserts that `who`'s `/sync` since `since` (taken while invited) shows the rejection of the
/// invite to `room_id`: the room under `rooms.leave` with `who`'s leave in its timeline, and
/// no longer under `rooms.invite`, there or in an initial sync.
pub(crate) async fn assert_rejected_in_sync(who: &User, room_id: &str, since: &str) {
    let after = sync_now(who, Some(since)).await;
    let rejection = after["rooms"]["leave"][room_id]["timeline"]["events"]
        .as_array()
        .and_then(|events| {
            events.iter().find(|event| {
                event["type"] == "m.room.member" && event["state_key"] == who.user_id.as_str()
            })
        })
        .unwrap_or_else(|| panic!("no leave of {} in rooms.leave: {after}", who.user_id));
    assert_eq!(rejection["content"]["membership"], "leave", "{after}");
    assert!(after["rooms"]["invite"].get(room_id).is_none(), "{after}");
    let initial = sync_now(who, None).await;
    assert!(
        initial["rooms"]["invite"].get(room_id).is_none(),
        "{initial}"
    );
}
