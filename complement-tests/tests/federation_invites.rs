//! Invites, rejections and knocks across two `axon` servers over TLS on loopback: an invite
//! of a user of the other server is signed by that server before it counts, shows in the
//! invitee's `/sync` with the room's stripped state although their server is not in the
//! room, and is accepted by a join through the inviter's server; a rejection goes back
//! through `make_leave`/`send_leave`, or stays local when the inviter's server is down; an
//! invite for a server that does not answer is a 502 that leaves no trace; a knock through
//! the other server shows under `rooms.knock` and is answered by an invite; a forged invite
//! is refused; history from before a join through the other server is backfilled.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod federation_support;
mod rooms_support;

use std::time::Duration;

use axon_complement_tests::{Homeserver, encode_path_segment, wait_until};
use federation_support::{A, B, Pki, ServerSigner, free_port, options};
use reqwest::Method;
use rooms_support::{User, message_bodies, room_path, user, v3};
use ruma::RoomVersionId;
use serde_json::{Value, json};

/// How long a change may take to cross over.
const CROSSING: Duration = Duration::from_secs(30);

/// Quick retries, so a restarted peer is reached again soon.
const SENDER: &str = "[federation_sender]\nretry_initial_ms = 50\nretry_max_ms = 500\n";

/// Servers A and B, each able to reach the other, retrying quickly.
async fn start_pair() -> (Pki, Homeserver, Homeserver) {
    let pki = Pki::new(&[A, B]);
    let (a_port, b_port) = (free_port(), free_port());
    let a = Homeserver::start(options(&pki, A, a_port, &[(B, b_port)], SENDER)).await;
    let b = Homeserver::start(options(&pki, B, b_port, &[(A, a_port)], SENDER)).await;
    (pki, a, b)
}

/// `who`'s sync since `since` (an initial sync when `None`), returning immediately.
async fn sync(who: &User, since: Option<&str>) -> Value {
    let path = match since {
        Some(since) => v3(&format!("/sync?timeout=0&since={since}")),
        None => v3("/sync?timeout=0"),
    };
    let resp = who.client.get(&path).await;
    resp.assert_ok();
    resp.body
}

/// Waits until `who`'s initial sync lists `room_id` under `rooms.{section}`; returns that
/// room's section and the sync's `next_batch`.
async fn wait_for_section(who: &User, section: &str, room_id: &str) -> (Value, String) {
    wait_until(
        &format!("{} to see {room_id} under rooms.{section}", who.user_id),
        CROSSING,
        || async {
            let body = sync(who, None).await;
            let room = body["rooms"][section].get(room_id)?.clone();
            Some((room, body["next_batch"].as_str()?.to_owned()))
        },
    )
    .await
}

/// The `type`s of a stripped state list, and the content of its `m.room.name`.
fn stripped_summary(events: &Value) -> (Vec<String>, Option<String>) {
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

/// Waits until `reader` sees `member`'s membership in `room_id` as `membership`.
async fn wait_for_membership(reader: &User, room_id: &str, member: &str, membership: &str) {
    wait_until(
        &format!("{} to see {member} {membership}", reader.user_id),
        CROSSING,
        || async {
            let resp = reader
                .client
                .get(&room_path(
                    room_id,
                    &format!("/state/m.room.member/{}", encode_path_segment(member)),
                ))
                .await;
            (resp.status == 200 && resp.body["membership"] == membership).then_some(())
        },
    )
    .await;
}

/// Waits until `reader` sees `expected` as the last messages of `room_id`, in this order.
async fn wait_for_messages(reader: &User, room_id: &str, expected: &[&str]) {
    let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    wait_until(
        &format!("{} to see {expected:?}", reader.user_id),
        CROSSING,
        || async {
            let events = reader.all_messages(room_id, "f", 100).await;
            message_bodies(&events).ends_with(&expected).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_remote_invite_is_seen_with_stripped_state_accepted_or_rejected() {
    let (_pki, mut a, b) = start_pair().await;
    let alice = user(&a, "alice").await;
    let bob = user(&b, "bob").await;

    // Invited with /invite: bob's server signs it, and A appends it.
    let garden = alice
        .create_room(json!({ "name": "Garden", "preset": "private_chat" }))
        .await;
    alice.invite(&garden, &bob.user_id).await;
    let member = alice
        .state_content(&garden, "m.room.member", &bob.user_id)
        .await;
    assert_eq!(member["membership"], "invite", "{member}");

    // B is not in the room, yet bob sees the invite with the room's stripped state.
    let (invited, _) = wait_for_section(&bob, "invite", &garden).await;
    let (types, name) = stripped_summary(&invited["invite_state"]["events"]);
    assert_eq!(name.as_deref(), Some("Garden"), "{invited}");
    for expected in ["m.room.create", "m.room.join_rules", "m.room.member"] {
        assert!(types.iter().any(|t| t == expected), "{expected}: {invited}");
    }
    let own = invited["invite_state"]["events"]
        .as_array()
        .and_then(|events| {
            events
                .iter()
                .find(|event| event["state_key"] == bob.user_id.as_str())
        })
        .cloned()
        .unwrap_or_else(|| panic!("no invite event for bob: {invited}"));
    assert_eq!(own["content"]["membership"], "invite", "{own}");
    assert_eq!(own["sender"], alice.user_id.as_str(), "{own}");

    // Accepting: the join goes through the inviter's server without any `via`.
    bob.join(&garden).await;
    wait_for_membership(&alice, &garden, &bob.user_id, "join").await;
    alice.send_text(&garden, "welcome").await;
    wait_for_messages(&bob, &garden, &["welcome"]).await;
    bob.send_text(&garden, "thanks").await;
    wait_for_messages(&alice, &garden, &["welcome", "thanks"]).await;
    let (_, since) = wait_for_section(&bob, "join", &garden).await;
    assert!(
        sync(&bob, None).await["rooms"]["invite"]
            .get(&garden)
            .is_none()
    );

    // B is in the room now: an invite of another of its users arrives through `/send` as well
    // as `/invite`, and counts once.
    let bea = user(&b, "bea").await;
    alice.invite(&garden, &bea.user_id).await;
    let (invited, _) = wait_for_section(&bea, "invite", &garden).await;
    let (_, name) = stripped_summary(&invited["invite_state"]["events"]);
    assert_eq!(name.as_deref(), Some("Garden"), "{invited}");
    wait_until("bob to count one invited member", CROSSING, || async {
        let body = sync(&bob, None).await;
        let summary = &body["rooms"]["join"][&garden]["summary"];
        (summary["m.invited_member_count"] == 1).then_some(())
    })
    .await;

    // Invited through createRoom, then rejected: the leave reaches A through send_leave, and
    // bob's sync moves the room from `invite` to `leave`.
    let porch = alice
        .create_room(json!({ "name": "Porch", "invite": [bob.user_id] }))
        .await;
    wait_for_section(&bob, "invite", &porch).await;
    bob.leave(&porch).await;
    wait_for_membership(&alice, &porch, &bob.user_id, "leave").await;
    let after = sync(&bob, Some(&since)).await;
    let left = &after["rooms"]["leave"][&porch];
    assert_eq!(
        left["timeline"]["events"][0]["content"]["membership"], "leave",
        "{after}"
    );
    assert!(after["rooms"]["invite"].get(&porch).is_none(), "{after}");
    assert!(
        sync(&bob, None).await["rooms"]["invite"]
            .get(&porch)
            .is_none()
    );

    // An invite whose server is down by the time it is rejected: rejected here anyway.
    let shed = alice
        .create_room(json!({ "name": "Shed", "invite": [bob.user_id] }))
        .await;
    let (_, since) = wait_for_section(&bob, "invite", &shed).await;
    a.stop().await;
    bob.leave(&shed).await;
    let after = sync(&bob, Some(&since)).await;
    assert!(after["rooms"]["leave"].get(&shed).is_some(), "{after}");
    assert!(after["rooms"]["invite"].get(&shed).is_none(), "{after}");
    let initial = sync(&bob, None).await;
    assert!(initial["rooms"]["invite"].get(&shed).is_none(), "{initial}");
    // Rejecting again changes nothing.
    bob.leave(&shed).await;
}

#[tokio::test]
async fn an_invite_for_a_server_that_does_not_answer_is_a_bad_gateway() {
    let pki = Pki::new(&[A]);
    // Nothing listens at the address given for `hs-c.test`.
    let silent = "hs-c.test";
    let a = Homeserver::start(options(&pki, A, free_port(), &[(silent, free_port())], "")).await;
    let alice = user(&a, "alice").await;
    let room_id = alice.create_room(json!({ "name": "Lonely" })).await;
    let carol = format!("@carol:{silent}");
    let resp = alice
        .membership(&room_id, "invite", json!({ "user_id": carol }))
        .await;
    assert_eq!(resp.status, 502, "{}", resp.describe());
    // Nothing was appended.
    let resp = alice
        .client
        .get(&room_path(
            &room_id,
            &format!("/state/m.room.member/{}", encode_path_segment(&carol)),
        ))
        .await;
    assert_eq!(resp.status, 404, "{}", resp.describe());
    // createRoom still creates the room, without the invite.
    let other = alice
        .create_room(json!({ "name": "Still here", "invite": [carol] }))
        .await;
    let resp = alice
        .client
        .get(&room_path(
            &other,
            &format!("/state/m.room.member/{}", encode_path_segment(&carol)),
        ))
        .await;
    assert_eq!(resp.status, 404, "{}", resp.describe());
}

#[tokio::test]
async fn a_knock_through_the_other_server_is_answered_by_an_invite() {
    let (_pki, a, b) = start_pair().await;
    let alice = user(&a, "alice").await;
    let bob = user(&b, "bob").await;
    let room_id = bob
        .create_room(json!({
            "room_version": "11",
            "name": "Door",
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": { "join_rule": "knock" },
            }],
        }))
        .await;

    // A is not in the room: the knock goes through B, named in `via`.
    let resp = alice
        .client
        .post(
            &v3(&format!("/knock/{}?via={B}", encode_path_segment(&room_id))),
            json!({ "reason": "may I?" }),
        )
        .await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/room_id"), room_id);
    let (knocked, _) = wait_for_section(&alice, "knock", &room_id).await;
    let (types, name) = stripped_summary(&knocked["knock_state"]["events"]);
    assert_eq!(name.as_deref(), Some("Door"), "{knocked}");
    assert!(types.iter().any(|t| t == "m.room.join_rules"), "{knocked}");
    wait_for_membership(&bob, &room_id, &alice.user_id, "knock").await;

    // Bob lets her in: the invite crosses to A, and she joins.
    bob.invite(&room_id, &alice.user_id).await;
    wait_for_section(&alice, "invite", &room_id).await;
    alice.join(&room_id).await;
    wait_for_membership(&bob, &room_id, &alice.user_id, "join").await;
    assert!(
        sync(&alice, None).await["rooms"]["knock"]
            .get(&room_id)
            .is_none()
    );
}

#[tokio::test]
async fn an_invite_is_accepted_only_with_the_senders_signature() {
    let (_pki, a, b) = start_pair().await;
    let alice = user(&a, "alice").await;
    let b_signer = ServerSigner::of(&b, B);
    let invite_for = |room: &str| {
        json!({
            "room_id": room,
            "sender": format!("@mallory:{B}"),
            "type": "m.room.member",
            "state_key": alice.user_id,
            "content": { "membership": "invite" },
            "origin_server_ts": 1_700_000_000_000_u64,
            "depth": 5,
            "prev_events": [],
            "auth_events": [],
        })
    };
    let put_invite = |signer: &ServerSigner, room: &str| {
        let (event_id, event) = signer.sign_event(&RoomVersionId::V10, &invite_for(room));
        let body = json!({
            "room_version": "10",
            "event": event,
            "invite_room_state": [{
                "type": "m.room.name", "state_key": "", "sender": format!("@mallory:{B}"),
                "content": { "name": "Trap" },
            }],
        });
        let uri = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            encode_path_segment(room),
            encode_path_segment(&event_id)
        );
        (uri, body)
    };

    // An event signed with a key that is not B's, in a request B really signed: refused,
    // and nothing shows.
    let forged_room = format!("!forged:{B}");
    let (uri, body) = put_invite(&b_signer.impostor(), &forged_room);
    let resp = b_signer
        .request(&a, A, Method::PUT, &uri, Some(&body))
        .await;
    assert_eq!(resp.status, 403, "{}", resp.describe());
    let initial = sync(&alice, None).await;
    assert!(
        initial["rooms"]["invite"].get(&forged_room).is_none(),
        "{initial}"
    );

    // The same invite signed by B is countersigned by A and shows in alice's sync.
    let real_room = format!("!real:{B}");
    let (uri, body) = put_invite(&b_signer, &real_room);
    let resp = b_signer
        .request(&a, A, Method::PUT, &uri, Some(&body))
        .await;
    resp.assert_ok();
    assert!(
        resp.body["event"]["signatures"][A].is_object(),
        "{}",
        resp.describe()
    );
    let (invited, _) = wait_for_section(&alice, "invite", &real_room).await;
    let (_, name) = stripped_summary(&invited["invite_state"]["events"]);
    assert_eq!(name.as_deref(), Some("Trap"), "{invited}");

    // A room version A does not support.
    let (uri, mut body) = put_invite(&b_signer, &format!("!future:{B}"));
    body["room_version"] = json!("org.example.future");
    let resp = b_signer
        .request(&a, A, Method::PUT, &uri, Some(&body))
        .await;
    assert_eq!(
        (resp.status, resp.body["errcode"].as_str()),
        (400, Some("M_INCOMPATIBLE_ROOM_VERSION")),
        "{}",
        resp.describe()
    );
}

#[tokio::test]
async fn history_from_before_a_remote_join_is_backfilled_in_order() {
    let (_pki, a, b) = start_pair().await;
    let alice = user(&a, "alice").await;
    let bob = user(&b, "bob").await;
    let room_id = alice
        .create_room(json!({ "preset": "public_chat", "room_alias_name": "history" }))
        .await;
    let sent: Vec<String> = (1..=30).map(|n| format!("m{n}")).collect();
    for body in &sent {
        alice.send_text(&room_id, body).await;
    }
    let alias = encode_path_segment(&format!("#history:{A}"));
    bob.client
        .post(&v3(&format!("/join/{alias}")), json!({}))
        .await
        .assert_ok();
    let since = sync(&bob, None).await["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("no next_batch"))
        .to_owned();

    // Backwards from the join, in pages: everything before it comes from A, newest first.
    let events = bob.all_messages(&room_id, "b", 10).await;
    let mut expected = sent.clone();
    expected.reverse();
    assert_eq!(message_bodies(&events), expected);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds.last(), Some(&"m.room.create"), "{kinds:?}");
    // Forwards, the same history in order.
    assert_eq!(
        message_bodies(&bob.all_messages(&room_id, "f", 10).await),
        sent
    );

    // History is not news: the backfilled events never show in a sync.
    let after = sync(&bob, Some(&since)).await;
    let timeline = after["rooms"]["join"][&room_id]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(message_bodies(&timeline).is_empty(), "{after}");
}
