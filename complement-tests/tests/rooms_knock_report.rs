//! Knocking, restricted joins, and reporting rooms and events.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod rooms_support;

use axon_complement_tests::{Homeserver, ServerOptions, assert_matrix_error, encode_path_segment};
use rooms_support::{User, room_path, user, v3};
use serde_json::{Value, json};

fn pair(user_id: &str, membership: &str) -> (String, String) {
    (user_id.to_owned(), membership.to_owned())
}

async fn knock(
    user: &User,
    room_id_or_alias: &str,
    body: Value,
) -> axon_complement_tests::Response {
    user.client
        .post(
            &v3(&format!("/knock/{}", encode_path_segment(room_id_or_alias))),
            body,
        )
        .await
}

#[tokio::test]
async fn a_knock_can_be_answered_by_an_invite_or_rescinded() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let room_id = alice
        .create_room(json!({
            "room_version": "10",
            "room_alias_name": "knockers",
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": { "join_rule": "knock" },
            }],
        }))
        .await;

    // By room id, with a reason.
    let resp = knock(&bob, &room_id, json!({ "reason": "let me in" })).await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/room_id"), room_id);
    let content = alice
        .state_content(&room_id, "m.room.member", &bob.user_id)
        .await;
    assert_eq!(content["membership"], "knock");
    assert_eq!(content["reason"], "let me in");
    // A knock is not a join.
    assert_matrix_error(
        &bob.try_send_text(&room_id, "hello").await,
        403,
        "M_FORBIDDEN",
    );

    // By alias.
    let alias = format!("#knockers:{}", hs.server_name());
    knock(&carol, &alias, json!({})).await.assert_ok();
    assert_eq!(alice.members(&room_id, "").await, {
        let mut expected = vec![
            pair(&alice.user_id, "join"),
            pair(&bob.user_id, "knock"),
            pair(&carol.user_id, "knock"),
        ];
        expected.sort();
        expected
    });
    assert_eq!(alice.members(&room_id, "membership=knock").await, {
        let mut expected = vec![pair(&bob.user_id, "knock"), pair(&carol.user_id, "knock")];
        expected.sort();
        expected
    });

    // A member who may invite answers the knock; the knocker then joins.
    alice.invite(&room_id, &bob.user_id).await;
    bob.join(&room_id).await;
    // The other knocker changes their mind.
    carol.leave(&room_id).await;
    assert_eq!(
        alice
            .state_content(&room_id, "m.room.member", &carol.user_id)
            .await["membership"],
        "leave"
    );
    // A member cannot knock.
    assert_matrix_error(&knock(&bob, &room_id, json!({})).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn knocks_are_refused_where_the_rules_do_not_allow_them() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    // Version 6 knows no knocking, whatever the join rule says.
    let v6 = alice
        .create_room(json!({
            "room_version": "6",
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": { "join_rule": "knock" },
            }],
        }))
        .await;
    assert_matrix_error(&knock(&bob, &v6, json!({})).await, 403, "M_FORBIDDEN");
    // An invite-only room of a recent version does not take knocks.
    let invite_only = alice
        .create_room(json!({ "room_version": "10", "preset": "private_chat" }))
        .await;
    assert_matrix_error(
        &knock(&bob, &invite_only, json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    // An unknown room.
    let unknown = format!("!nowhere:{}", hs.server_name());
    assert_matrix_error(&knock(&bob, &unknown, json!({})).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn a_restricted_room_admits_members_of_the_allowed_room() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let space = alice
        .create_room(json!({ "preset": "public_chat", "room_version": "10" }))
        .await;
    let room_id = alice
        .create_room(json!({
            "room_version": "10",
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{ "type": "m.room_membership", "room_id": space }],
                },
            }],
        }))
        .await;

    // Carol is in no allowed room.
    assert_matrix_error(
        &carol.membership(&room_id, "join", json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    // Bob is, once he joins the space.
    bob.join(&space).await;
    bob.join(&room_id).await;
    let content = alice
        .state_content(&room_id, "m.room.member", &bob.user_id)
        .await;
    assert_eq!(content["membership"], "join");
    // Alice, the only member who may invite, vouched for the join.
    assert_eq!(content["join_authorised_via_users_server"], alice.user_id);
    bob.send_text(&room_id, "in").await;

    // Version 7 knows no restricted rule: the room stays closed.
    let old = alice
        .create_room(json!({
            "room_version": "7",
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{ "type": "m.room_membership", "room_id": space }],
                },
            }],
        }))
        .await;
    assert_matrix_error(
        &bob.membership(&old, "join", json!({})).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn members_can_report_events_they_can_see() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    let event_id = alice.send_text(&room_id, "rude").await;
    let report_path = room_path(
        &room_id,
        &format!("/report/{}", encode_path_segment(&event_id)),
    );

    // Not in the room: the event is not theirs to see.
    assert_matrix_error(
        &bob.client
            .post(&report_path, json!({ "reason": "spam" }))
            .await,
        404,
        "M_NOT_FOUND",
    );
    bob.join(&room_id).await;
    let resp = bob
        .client
        .post(&report_path, json!({ "reason": "spam", "score": -100 }))
        .await;
    resp.assert_ok();
    assert_eq!(resp.body, json!({}));
    // No reason is fine too.
    bob.client.post(&report_path, json!({})).await.assert_ok();
    // Once out of the room, no more reports.
    bob.leave(&room_id).await;
    assert_matrix_error(
        &bob.client.post(&report_path, json!({})).await,
        404,
        "M_NOT_FOUND",
    );
    bob.join(&room_id).await;

    // An unknown event, or an event of another room.
    let missing = room_path(
        &room_id,
        &format!("/report/{}", encode_path_segment("$missing")),
    );
    assert_matrix_error(
        &bob.client.post(&missing, json!({})).await,
        404,
        "M_NOT_FOUND",
    );
    let other_room = bob.create_room(json!({})).await;
    let elsewhere = room_path(
        &other_room,
        &format!("/report/{}", encode_path_segment(&event_id)),
    );
    assert_matrix_error(
        &bob.client.post(&elsewhere, json!({})).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn rooms_can_be_reported() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;

    let resp = bob
        .client
        .post(
            &room_path(&room_id, "/report"),
            json!({ "reason": "abuse" }),
        )
        .await;
    resp.assert_ok();
    assert_eq!(resp.body, json!({}));

    let unknown = format!("!nowhere:{}", hs.server_name());
    assert_matrix_error(
        &bob.client
            .post(
                &room_path(&unknown, "/report"),
                json!({ "reason": "abuse" }),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );
    // Reports need an account.
    let resp = hs
        .client()
        .post(
            &room_path(&room_id, "/report"),
            json!({ "reason": "abuse" }),
        )
        .await;
    assert_matrix_error(&resp, 401, "M_MISSING_TOKEN");
}
