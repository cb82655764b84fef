//! Membership: join, leave, invite, kick, ban, unban, forget; the member lists.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod rooms_support;

use axon_complement_tests::{Homeserver, ServerOptions, assert_matrix_error, encode_path_segment};
use rooms_support::{room_path, user, v3};
use serde_json::json;

fn pair(user_id: &str, membership: &str) -> (String, String) {
    (user_id.to_owned(), membership.to_owned())
}

#[tokio::test]
async fn anyone_can_join_a_public_room_and_leave_it() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;

    // The room-id-or-alias form, with a room id.
    let resp = bob
        .client
        .post(
            &v3(&format!("/join/{}", encode_path_segment(&room_id))),
            json!({}),
        )
        .await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/room_id"), room_id);
    assert_eq!(bob.joined_rooms().await, vec![room_id.clone()]);
    // Joining again is fine.
    bob.join(&room_id).await;

    let resp = alice
        .client
        .get(&room_path(&room_id, "/joined_members"))
        .await;
    resp.assert_ok();
    let mut joined: Vec<&String> = resp.body["joined"]
        .as_object()
        .unwrap_or_else(|| panic!("no joined: {}", resp.describe()))
        .keys()
        .collect();
    joined.sort();
    let mut expected = vec![&alice.user_id, &bob.user_id];
    expected.sort();
    assert_eq!(joined, expected);

    bob.leave(&room_id).await;
    assert!(bob.joined_rooms().await.is_empty());
    assert_eq!(
        alice
            .state_content(&room_id, "m.room.member", &bob.user_id)
            .await["membership"],
        "leave"
    );
}

#[tokio::test]
async fn invite_only_rooms_need_an_invite() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = alice.create_room(json!({ "preset": "private_chat" })).await;

    let resp = bob.membership(&room_id, "join", json!({})).await;
    assert_matrix_error(&resp, 403, "M_FORBIDDEN");

    alice.invite(&room_id, &bob.user_id).await;
    // Inviting someone already invited is not an error in the spec's sense, but a joined
    // user cannot be invited.
    assert_matrix_error(
        &alice
            .membership(&room_id, "invite", json!({ "user_id": alice.user_id }))
            .await,
        403,
        "M_FORBIDDEN",
    );
    bob.join(&room_id).await;
    assert_eq!(bob.joined_rooms().await, vec![room_id]);
}

#[tokio::test]
async fn an_invite_can_be_rejected_by_leaving() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = alice.create_room(json!({ "preset": "private_chat" })).await;
    alice.invite(&room_id, &bob.user_id).await;
    bob.leave(&room_id).await;
    assert_eq!(
        alice
            .state_content(&room_id, "m.room.member", &bob.user_id)
            .await["membership"],
        "leave"
    );
    assert_matrix_error(
        &bob.membership(&room_id, "join", json!({})).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn members_lists_filter_by_membership() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let dave = user(&hs, "dave").await;
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room_id).await;
    alice.invite(&room_id, &carol.user_id).await;
    dave.join(&room_id).await;
    dave.leave(&room_id).await;

    let mut all = vec![
        pair(&alice.user_id, "join"),
        pair(&bob.user_id, "join"),
        pair(&carol.user_id, "invite"),
        pair(&dave.user_id, "leave"),
    ];
    all.sort();
    assert_eq!(alice.members(&room_id, "").await, all);
    let joined: Vec<_> = all.iter().filter(|(_, m)| m == "join").cloned().collect();
    assert_eq!(alice.members(&room_id, "membership=join").await, joined);
    let not_left: Vec<_> = all.iter().filter(|(_, m)| m != "leave").cloned().collect();
    assert_eq!(
        alice.members(&room_id, "not_membership=leave").await,
        not_left
    );
    assert_eq!(
        alice.members(&room_id, "membership=invite").await,
        vec![pair(&carol.user_id, "invite")]
    );

    // A stranger sees nothing.
    let eve = user(&hs, "eve").await;
    assert_matrix_error(
        &eve.client.get(&room_path(&room_id, "/members")).await,
        403,
        "M_FORBIDDEN",
    );
    assert_matrix_error(
        &eve.client
            .get(&room_path(&room_id, "/joined_members"))
            .await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn kick_needs_power_and_removes_the_member() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let room_id = alice
        .create_room(json!({ "preset": "public_chat", "room_version": "11" }))
        .await;
    bob.join(&room_id).await;
    carol.join(&room_id).await;

    let resp = bob
        .membership(&room_id, "kick", json!({ "user_id": carol.user_id }))
        .await;
    assert_matrix_error(&resp, 403, "M_FORBIDDEN");

    alice
        .membership(
            &room_id,
            "kick",
            json!({ "user_id": carol.user_id, "reason": "testing" }),
        )
        .await
        .assert_ok();
    let member = alice
        .state_content(&room_id, "m.room.member", &carol.user_id)
        .await;
    assert_eq!(member["membership"], "leave", "{member}");
    assert_eq!(member["reason"], "testing", "{member}");
    assert!(carol.joined_rooms().await.is_empty());
    assert_matrix_error(
        &carol.try_send_text(&room_id, "x").await,
        403,
        "M_FORBIDDEN",
    );
    // A kicked user may come back into a public room.
    carol.join(&room_id).await;
}

#[tokio::test]
async fn banned_users_cannot_rejoin_until_unbanned() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let room_id = alice
        .create_room(json!({ "preset": "public_chat", "room_version": "11" }))
        .await;
    bob.join(&room_id).await;
    carol.join(&room_id).await;

    assert_matrix_error(
        &bob.membership(&room_id, "ban", json!({ "user_id": carol.user_id }))
            .await,
        403,
        "M_FORBIDDEN",
    );
    alice
        .membership(
            &room_id,
            "ban",
            json!({ "user_id": carol.user_id, "reason": "spam" }),
        )
        .await
        .assert_ok();
    let member = alice
        .state_content(&room_id, "m.room.member", &carol.user_id)
        .await;
    assert_eq!(member["membership"], "ban", "{member}");
    assert_eq!(member["reason"], "spam", "{member}");

    assert_matrix_error(
        &carol.membership(&room_id, "join", json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    // An invite does not get around a ban.
    assert_matrix_error(
        &alice
            .membership(&room_id, "invite", json!({ "user_id": carol.user_id }))
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Users can ban someone who never joined.
    let dave = user(&hs, "dave").await;
    alice
        .membership(&room_id, "ban", json!({ "user_id": dave.user_id }))
        .await
        .assert_ok();
    assert_matrix_error(
        &dave.membership(&room_id, "join", json!({})).await,
        403,
        "M_FORBIDDEN",
    );

    assert_matrix_error(
        &bob.membership(&room_id, "unban", json!({ "user_id": carol.user_id }))
            .await,
        403,
        "M_FORBIDDEN",
    );
    alice
        .membership(&room_id, "unban", json!({ "user_id": carol.user_id }))
        .await
        .assert_ok();
    assert_eq!(
        alice
            .state_content(&room_id, "m.room.member", &carol.user_id)
            .await["membership"],
        "leave"
    );
    carol.join(&room_id).await;
}

#[tokio::test]
async fn forget_requires_having_left() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room_id).await;

    let resp = bob.membership(&room_id, "forget", json!({})).await;
    assert_matrix_error(&resp, 400, "M_UNKNOWN");
    bob.leave(&room_id).await;
    bob.membership(&room_id, "forget", json!({}))
        .await
        .assert_ok();
    // Forgetting is about the user's view: the room and its members carry on.
    alice.send_text(&room_id, "still here").await;
    // And the user can come back.
    bob.join(&room_id).await;
    assert_eq!(bob.joined_rooms().await, vec![room_id]);
}

#[tokio::test]
async fn membership_endpoints_reject_unknown_rooms_and_bad_user_ids() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let room_id = alice.create_room(json!({})).await;
    let resp = alice
        .membership(&room_id, "invite", json!({ "user_id": "not a user id" }))
        .await;
    assert_eq!(resp.status, 400, "{}", resp.describe());
    let nowhere = format!("!nosuchroom:{}", hs.server_name());
    let resp = alice.membership(&nowhere, "join", json!({})).await;
    assert!(
        matches!(resp.status, 403 | 404),
        "joining an unknown room: {}",
        resp.describe()
    );
    assert!(resp.body["errcode"].is_string(), "{}", resp.describe());
}

#[tokio::test]
async fn a_former_member_sees_the_state_as_it_was_when_they_left() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let room_id = alice
        .create_room(json!({ "preset": "public_chat", "topic": "old topic" }))
        .await;
    bob.join(&room_id).await;
    bob.leave(&room_id).await;
    carol.join(&room_id).await;
    alice
        .put_state(
            &room_id,
            "m.room.topic",
            "",
            json!({ "topic": "new topic" }),
        )
        .await
        .assert_ok();

    assert_eq!(
        bob.state_content(&room_id, "m.room.topic", "").await["topic"],
        "old topic"
    );
    let mut expected = vec![pair(&alice.user_id, "join"), pair(&bob.user_id, "leave")];
    expected.sort();
    assert_eq!(bob.members(&room_id, "").await, expected);
    // The list of who is joined now is for members only.
    assert_matrix_error(
        &bob.client
            .get(&room_path(&room_id, "/joined_members"))
            .await,
        403,
        "M_FORBIDDEN",
    );
}
