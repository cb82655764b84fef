//! Room upgrades: the replacement room, its copied state, the tombstone, the old room's
//! silenced power levels, and the aliases and directory listing that move along.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod rooms_support;

use axon_complement_tests::{Homeserver, ServerOptions, assert_matrix_error, encode_path_segment};
use rooms_support::{User, room_path, user, v3};
use serde_json::json;

async fn upgrade(user: &User, room_id: &str, new_version: &str) -> axon_complement_tests::Response {
    user.client
        .post(
            &room_path(room_id, "/upgrade"),
            json!({ "new_version": new_version }),
        )
        .await
}

#[tokio::test]
async fn an_upgrade_replaces_the_room_and_carries_its_state() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let alias = format!("#upgraded:{}", hs.server_name());
    let old = alice
        .create_room(json!({
            "room_version": "10",
            "preset": "public_chat",
            "visibility": "public",
            "name": "Old name",
            "topic": "Old topic",
            "room_alias_name": "upgraded",
            "initial_state": [{
                "type": "m.room.history_visibility", "state_key": "",
                "content": { "history_visibility": "joined" },
            }],
        }))
        .await;
    alice
        .put_state(
            &old,
            "m.room.canonical_alias",
            "",
            json!({ "alias": alias }),
        )
        .await
        .assert_ok();
    bob.join(&old).await;
    carol.join(&old).await;
    alice
        .membership(
            &old,
            "ban",
            json!({ "user_id": carol.user_id, "reason": "troll" }),
        )
        .await
        .assert_ok();

    let resp = upgrade(&alice, &old, "11").await;
    resp.assert_ok();
    let new = resp.str_at("/replacement_room").to_owned();
    assert_ne!(new, old);

    // The create event names its predecessor and the version asked for.
    let create = alice.state_content(&new, "m.room.create", "").await;
    assert_eq!(create["room_version"], "11");
    assert_eq!(create["predecessor"]["room_id"], old);
    // The state came along.
    assert_eq!(
        alice.state_content(&new, "m.room.name", "").await["name"],
        "Old name"
    );
    assert_eq!(
        alice.state_content(&new, "m.room.topic", "").await["topic"],
        "Old topic"
    );
    assert_eq!(
        alice.state_content(&new, "m.room.join_rules", "").await["join_rule"],
        "public"
    );
    assert_eq!(
        alice
            .state_content(&new, "m.room.history_visibility", "")
            .await["history_visibility"],
        "joined"
    );
    assert_eq!(
        alice
            .state_content(&new, "m.room.canonical_alias", "")
            .await["alias"],
        alias
    );
    let levels = alice.state_content(&new, "m.room.power_levels", "").await;
    assert_eq!(levels["users"][&alice.user_id], 100);
    // And the ban.
    let ban = alice
        .state_content(&new, "m.room.member", &carol.user_id)
        .await;
    assert_eq!(ban["membership"], "ban");
    assert_eq!(ban["reason"], "troll");
    // Only the upgrading user is in the new room; the others follow the tombstone.
    assert_eq!(alice.joined_rooms().await.len(), 2);
    bob.join(&new).await;
    assert_matrix_error(
        &carol.membership(&new, "join", json!({})).await,
        403,
        "M_FORBIDDEN",
    );

    // The old room points to the new one and falls silent.
    let tombstone = alice.state_content(&old, "m.room.tombstone", "").await;
    assert_eq!(tombstone["replacement_room"], new);
    let old_levels = alice.state_content(&old, "m.room.power_levels", "").await;
    assert_eq!(old_levels["events_default"], 50);
    assert_eq!(old_levels["invite"], 50);
    assert_matrix_error(
        &bob.try_send_text(&old, "still here?").await,
        403,
        "M_FORBIDDEN",
    );

    // The alias and the directory listing moved.
    let resp = hs
        .client()
        .get(&v3(&format!(
            "/directory/room/{}",
            encode_path_segment(&alias)
        )))
        .await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/room_id"), new);
    let resp = hs.client().get(&v3("/publicRooms")).await;
    resp.assert_ok();
    let listed: Vec<&str> = resp.body["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunk: {}", resp.describe()))
        .iter()
        .filter_map(|room| room["room_id"].as_str())
        .collect();
    assert_eq!(listed, vec![new.as_str()]);
}

#[tokio::test]
async fn a_moderator_is_raised_for_the_copy_and_restored() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let old = alice
        .create_room(json!({ "room_version": "10", "preset": "public_chat" }))
        .await;
    bob.join(&old).await;
    alice
        .put_state(
            &old,
            "m.room.power_levels",
            "",
            json!({
                "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 50 },
                // Copying the history visibility needs more than Bob has.
                "events": {
                    "m.room.tombstone": 50,
                    "m.room.power_levels": 100,
                    "m.room.history_visibility": 100,
                },
                "state_default": 50,
            }),
        )
        .await
        .assert_ok();

    let resp = upgrade(&bob, &old, "10").await;
    resp.assert_ok();
    let new = resp.str_at("/replacement_room").to_owned();
    let levels = bob.state_content(&new, "m.room.power_levels", "").await;
    assert_eq!(levels["users"][&bob.user_id], 50);
    assert_eq!(levels["users"][&alice.user_id], 100);
    assert_eq!(levels["events"]["m.room.tombstone"], 50);
    assert_eq!(
        bob.state_content(&new, "m.room.history_visibility", "")
            .await["history_visibility"],
        "shared"
    );
    assert_eq!(
        bob.state_content(&new, "m.room.create", "").await["predecessor"]["room_id"],
        old
    );
}

#[tokio::test]
async fn upgrades_need_power_and_a_known_version() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let old = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&old).await;

    assert_matrix_error(&upgrade(&bob, &old, "11").await, 403, "M_FORBIDDEN");
    assert_matrix_error(
        &upgrade(&alice, &old, "999").await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    // Nothing happened to the room.
    assert_matrix_error(
        &alice.get_state(&old, "m.room.tombstone", "").await,
        404,
        "M_NOT_FOUND",
    );
    assert_eq!(alice.joined_rooms().await, vec![old.clone()]);

    // Version 12: the upgrading user is a creator, so not listed in the power levels.
    let resp = upgrade(&alice, &old, "12").await;
    resp.assert_ok();
    let new = resp.str_at("/replacement_room").to_owned();
    let levels = alice.state_content(&new, "m.room.power_levels", "").await;
    assert!(levels["users"].get(&alice.user_id).is_none(), "{levels}");
    alice.send_text(&new, "hello").await;
}
