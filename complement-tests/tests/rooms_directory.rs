//! The room directory: `/directory/list/room/{roomId}` and `/publicRooms` (GET and POST).
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod rooms_support;

use axon_complement_tests::{
    Homeserver, Response, ServerOptions, assert_matrix_error, encode_path_segment,
};
use rooms_support::{User, user, v3};
use serde_json::{Value, json};

fn list_path(room_id: &str) -> String {
    v3(&format!(
        "/directory/list/room/{}",
        encode_path_segment(room_id)
    ))
}

async fn set_visibility(user: &User, room_id: &str, visibility: &str) -> Response {
    user.client
        .put(&list_path(room_id), json!({ "visibility": visibility }))
        .await
}

fn room_ids(resp: &Response) -> Vec<String> {
    resp.assert_ok();
    resp.body["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunk: {}", resp.describe()))
        .iter()
        .map(|room| room["room_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn search(user: &User, body: Value) -> Response {
    user.client.post(&v3("/publicRooms"), body).await
}

#[tokio::test]
async fn visibility_is_private_until_published_by_a_room_admin() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let anonymous = hs.client().anonymous();
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    bob.join(&room_id).await;

    let visibility = |resp: Response| {
        resp.assert_ok();
        resp.str_at("/visibility").to_owned()
    };
    assert_eq!(
        visibility(anonymous.get(&list_path(&room_id)).await),
        "private"
    );
    // Bob is a member without the power to change the canonical alias.
    assert_matrix_error(
        &set_visibility(&bob, &room_id, "public").await,
        403,
        "M_FORBIDDEN",
    );
    set_visibility(&alice, &room_id, "public").await.assert_ok();
    assert_eq!(
        visibility(anonymous.get(&list_path(&room_id)).await),
        "public"
    );
    assert_eq!(
        room_ids(&anonymous.get(&v3("/publicRooms")).await),
        vec![room_id.clone()]
    );
    set_visibility(&alice, &room_id, "private")
        .await
        .assert_ok();
    assert_eq!(
        visibility(anonymous.get(&list_path(&room_id)).await),
        "private"
    );
    assert!(room_ids(&anonymous.get(&v3("/publicRooms")).await).is_empty());

    let unknown = format!("!unknown:{}", hs.server_name());
    assert_matrix_error(
        &anonymous.get(&list_path(&unknown)).await,
        404,
        "M_NOT_FOUND",
    );
    assert_matrix_error(
        &set_visibility(&alice, &unknown, "public").await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn public_rooms_describe_published_rooms() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let room_id = alice
        .create_room(json!({
            "visibility": "public",
            "name": "The Town Square",
            "topic": "Everything and nothing",
            "room_alias_name": "square",
        }))
        .await;
    let _private = alice.create_room(json!({})).await;

    let resp = hs.client().anonymous().get(&v3("/publicRooms")).await;
    assert_eq!(room_ids(&resp), vec![room_id.clone()]);
    assert_eq!(resp.u64_at("/total_room_count_estimate"), 1);
    let room = &resp.body["chunk"][0];
    assert_eq!(room["name"], json!("The Town Square"));
    assert_eq!(room["topic"], json!("Everything and nothing"));
    assert_eq!(
        room["canonical_alias"],
        json!(format!("#square:{}", hs.server_name()))
    );
    assert_eq!(room["num_joined_members"], json!(1));
    assert_eq!(room["world_readable"], json!(false));
    assert_eq!(room["guest_can_join"], json!(false));
    // An absent join rule means `public`.
    assert!(
        room.get("join_rule").is_none_or(|rule| rule == "public"),
        "{}",
        resp.describe()
    );
    assert!(resp.body.get("next_batch").is_none(), "{}", resp.describe());
    assert!(resp.body.get("prev_batch").is_none(), "{}", resp.describe());

    // A world-readable room that guests may join says so.
    alice
        .put_state(
            &room_id,
            "m.room.history_visibility",
            "",
            json!({ "history_visibility": "world_readable" }),
        )
        .await
        .assert_ok();
    alice
        .put_state(
            &room_id,
            "m.room.guest_access",
            "",
            json!({ "guest_access": "can_join" }),
        )
        .await
        .assert_ok();
    alice
        .put_state(
            &room_id,
            "m.room.join_rules",
            "",
            json!({ "join_rule": "invite" }),
        )
        .await
        .assert_ok();
    let resp = hs.client().anonymous().get(&v3("/publicRooms")).await;
    resp.assert_ok();
    assert_eq!(resp.body["chunk"][0]["join_rule"], json!("invite"));
    assert_eq!(resp.body["chunk"][0]["world_readable"], json!(true));
    assert_eq!(resp.body["chunk"][0]["guest_can_join"], json!(true));
}

#[tokio::test]
async fn public_rooms_are_ordered_by_members_and_paginated() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let one = alice.create_room(json!({ "visibility": "public" })).await;
    let three = alice.create_room(json!({ "visibility": "public" })).await;
    let two = alice.create_room(json!({ "visibility": "public" })).await;
    bob.join(&three).await;
    carol.join(&three).await;
    bob.join(&two).await;

    let anonymous = hs.client().anonymous();
    let all = anonymous.get(&v3("/publicRooms")).await;
    assert_eq!(
        room_ids(&all),
        vec![three.clone(), two.clone(), one.clone()]
    );
    assert_eq!(all.body["chunk"][0]["num_joined_members"], json!(3));

    let first = anonymous.get(&v3("/publicRooms?limit=2")).await;
    assert_eq!(room_ids(&first), vec![three.clone(), two.clone()]);
    assert_eq!(first.u64_at("/total_room_count_estimate"), 3);
    assert!(first.body.get("prev_batch").is_none());
    let next = first.str_at("/next_batch").to_owned();
    let second = anonymous
        .get(&v3(&format!(
            "/publicRooms?limit=2&since={}",
            encode_path_segment(&next)
        )))
        .await;
    assert_eq!(room_ids(&second), vec![one.clone()]);
    assert!(second.body.get("next_batch").is_none());
    let prev = second.str_at("/prev_batch").to_owned();

    // The same pages through POST, and back.
    let back = search(&alice, json!({ "limit": 2, "since": prev })).await;
    assert_eq!(room_ids(&back), vec![three, two]);
    let forward = search(&alice, json!({ "limit": 2, "since": next })).await;
    assert_eq!(room_ids(&forward), vec![one]);

    assert_matrix_error(
        &anonymous.get(&v3("/publicRooms?since=garbage")).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_matrix_error(
        &search(&alice, json!({ "since": "garbage" })).await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn public_rooms_filter_by_search_term_and_network() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let by_name = alice
        .create_room(json!({ "visibility": "public", "name": "Rust Lovers" }))
        .await;
    let by_topic = alice
        .create_room(json!({ "visibility": "public", "topic": "all about rustaceans" }))
        .await;
    let by_alias = alice
        .create_room(json!({ "visibility": "public", "room_alias_name": "rusty" }))
        .await;
    let _other = alice
        .create_room(json!({ "visibility": "public", "name": "Gardening" }))
        .await;

    let found = search(
        &alice,
        json!({ "filter": { "generic_search_term": "RUST" } }),
    )
    .await;
    let mut found_ids = room_ids(&found);
    found_ids.sort();
    let mut expected = vec![by_name, by_topic, by_alias];
    expected.sort();
    assert_eq!(found_ids, expected);
    assert_eq!(found.u64_at("/total_room_count_estimate"), 3);

    let everything = search(&alice, json!({ "include_all_networks": true })).await;
    assert_eq!(room_ids(&everything).len(), 4);
    let third_party = search(&alice, json!({ "third_party_instance_id": "irc" })).await;
    assert!(room_ids(&third_party).is_empty());

    assert_matrix_error(
        &hs.client()
            .anonymous()
            .post(&v3("/publicRooms"), json!({}))
            .await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_matrix_error(
        &alice
            .client
            .get(&v3("/publicRooms?server=elsewhere.example"))
            .await,
        400,
        "M_INVALID_PARAM",
    );
}
