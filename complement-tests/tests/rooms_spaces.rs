//! Spaces: `/rooms/{roomId}/hierarchy` and the room summary.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod rooms_support;

use axon_complement_tests::{Homeserver, ServerOptions, assert_matrix_error, encode_path_segment};
use rooms_support::{User, user};
use serde_json::{Value, json};

fn hierarchy_path(room_id: &str, query: &str) -> String {
    format!(
        "/_matrix/client/v1/rooms/{}/hierarchy?{query}",
        encode_path_segment(room_id)
    )
}

/// The room ids of a hierarchy page, in order, and its `next_batch`.
async fn hierarchy(user: &User, room_id: &str, query: &str) -> (Vec<String>, Option<String>) {
    let resp = user.client.get(&hierarchy_path(room_id, query)).await;
    resp.assert_ok();
    let rooms = resp.body["rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("no rooms: {}", resp.describe()))
        .iter()
        .map(|room| room["room_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    (rooms, resp.body["next_batch"].as_str().map(str::to_owned))
}

/// A public join rule may be left out: the spec reads its absence as `public`.
fn assert_public(chunk: &Value) {
    assert!(
        chunk.get("join_rule").is_none_or(|rule| rule == "public"),
        "not public: {chunk}"
    );
}

async fn space(user: &User, name: &str) -> String {
    user.create_room(json!({
        "name": name,
        "preset": "public_chat",
        "creation_content": { "type": "m.space" },
    }))
    .await
}

async fn add_child(user: &User, parent: &str, child: &str, extra: Value) {
    let mut content = json!({ "via": ["localhost"] });
    if let (Some(content), Some(extra)) = (content.as_object_mut(), extra.as_object()) {
        content.extend(extra.clone());
    }
    user.put_state(parent, "m.space.child", child, content)
        .await
        .assert_ok();
}

#[tokio::test]
async fn hierarchy_walks_breadth_first_and_handles_cycles_depth_and_suggestions() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let root = space(&alice, "Root").await;
    let sub = space(&alice, "Sub").await;
    let a = alice
        .create_room(json!({ "name": "A", "topic": "about a", "preset": "public_chat" }))
        .await;
    let b = alice.create_room(json!({ "preset": "public_chat" })).await;
    let deep = alice.create_room(json!({ "preset": "public_chat" })).await;
    let ignored = alice.create_room(json!({ "preset": "public_chat" })).await;
    add_child(&alice, &root, &sub, json!({ "order": "2" })).await;
    add_child(
        &alice,
        &root,
        &a,
        json!({ "order": "1", "suggested": true }),
    )
    .await;
    add_child(&alice, &sub, &b, json!({})).await;
    add_child(&alice, &b, &deep, json!({})).await;
    // A cycle back to the root, and a child without `via`, which does not count.
    add_child(&alice, &sub, &root, json!({})).await;
    alice
        .put_state(&root, "m.space.child", &ignored, json!({ "via": [] }))
        .await
        .assert_ok();

    let resp = alice.client.get(&hierarchy_path(&root, "")).await;
    resp.assert_ok();
    let rooms = resp.body["rooms"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = rooms
        .iter()
        .map(|room| room["room_id"].as_str().unwrap_or_default())
        .collect();
    // Breadth first, children by `order`; the root appears once despite the cycle.
    assert_eq!(
        ids,
        [
            root.as_str(),
            a.as_str(),
            sub.as_str(),
            b.as_str(),
            deep.as_str()
        ],
        "{}",
        resp.describe()
    );
    assert!(resp.body.get("next_batch").is_none(), "{}", resp.describe());

    let root_chunk = &rooms[0];
    assert_eq!(root_chunk["name"], "Root");
    assert_eq!(root_chunk["room_type"], "m.space");
    assert_public(root_chunk);
    assert_eq!(root_chunk["num_joined_members"], 1);
    assert_eq!(root_chunk["world_readable"], false);
    assert_eq!(root_chunk["guest_can_join"], false);
    let children = root_chunk["children_state"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(children.len(), 2, "{root_chunk}");
    for child in &children {
        assert_eq!(child["type"], "m.space.child");
        assert_eq!(child["sender"], alice.user_id.as_str());
        assert!(child["origin_server_ts"].is_u64(), "{child}");
        assert!(child.get("event_id").is_none(), "stripped: {child}");
    }
    assert_eq!(children[0]["state_key"], a.as_str());
    assert_eq!(rooms[1]["topic"], "about a");
    assert_eq!(rooms[1]["children_state"], json!([]));

    // max_depth: 0 is the root alone, 1 its children.
    assert_eq!(
        hierarchy(&alice, &root, "max_depth=0").await.0,
        [root.as_str()]
    );
    assert_eq!(
        hierarchy(&alice, &root, "max_depth=1").await.0,
        [root.as_str(), a.as_str(), sub.as_str()]
    );
    // suggested_only follows only suggested children.
    assert_eq!(
        hierarchy(&alice, &root, "suggested_only=true").await.0,
        [root.as_str(), a.as_str()]
    );

    // Pages of two, following next_batch, give the same walk.
    let mut all = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..10 {
        let query = match &from {
            Some(from) => format!("limit=2&from={}", encode_path_segment(from)),
            None => "limit=2".to_owned(),
        };
        let (page, next) = hierarchy(&alice, &root, &query).await;
        assert!(page.len() <= 2);
        all.extend(page);
        match next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    assert_eq!(
        all,
        [
            root.as_str(),
            a.as_str(),
            sub.as_str(),
            b.as_str(),
            deep.as_str()
        ]
    );

    // A token used with other parameters is refused.
    let (_, next) = hierarchy(&alice, &root, "limit=1").await;
    let next = next.unwrap_or_else(|| panic!("no next_batch"));
    let resp = alice
        .client
        .get(&hierarchy_path(
            &root,
            &format!("limit=1&max_depth=1&from={}", encode_path_segment(&next)),
        ))
        .await;
    assert_matrix_error(&resp, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn hierarchy_leaves_out_rooms_the_user_cannot_see() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let root = space(&alice, "Root").await;
    let private = alice.create_room(json!({ "preset": "private_chat" })).await;
    let under_private = alice.create_room(json!({ "preset": "public_chat" })).await;
    let public = alice.create_room(json!({ "preset": "public_chat" })).await;
    add_child(&alice, &root, &private, json!({})).await;
    add_child(&alice, &root, &public, json!({})).await;
    add_child(&alice, &private, &under_private, json!({})).await;

    // Alice is in everything.
    let (rooms, _) = hierarchy(&alice, &root, "").await;
    assert_eq!(rooms.len(), 4, "{rooms:?}");
    // Bob sees the public rooms only; the private room and what is under it are left out.
    let (rooms, _) = hierarchy(&bob, &root, "").await;
    assert_eq!(rooms, [root.as_str(), public.as_str()]);
    // Once invited, the private room is accessible to him.
    alice.invite(&private, &bob.user_id).await;
    let (rooms, _) = hierarchy(&bob, &root, "").await;
    assert_eq!(rooms.len(), 4, "{rooms:?}");

    // A root the user may not see is 403; an unknown one 404.
    let secret = alice.create_room(json!({ "preset": "private_chat" })).await;
    let resp = bob.client.get(&hierarchy_path(&secret, "")).await;
    assert_matrix_error(&resp, 403, "M_FORBIDDEN");
    let resp = bob
        .client
        .get(&hierarchy_path("!unknown:localhost", ""))
        .await;
    assert_matrix_error(&resp, 404, "M_NOT_FOUND");
    // Unauthenticated callers are refused.
    let resp = hs.client().get(&hierarchy_path(&root, "")).await;
    assert_matrix_error(&resp, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn room_summary_describes_accessible_rooms_by_id_or_alias() {
    let hs = Homeserver::start(ServerOptions::new()).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room = alice
        .create_room(json!({
            "name": "Lobby",
            "topic": "hello",
            "preset": "public_chat",
            "room_alias_name": "lobby",
            "initial_state": [{
                "type": "m.room.encryption",
                "state_key": "",
                "content": { "algorithm": "m.megolm.v1.aes-sha2" },
            }],
        }))
        .await;
    let server = alice
        .user_id
        .split_once(':')
        .map(|(_, server)| server)
        .unwrap_or_default();
    let alias = format!("#lobby:{server}");
    for path in [
        format!(
            "/_matrix/client/v1/room_summary/{}",
            encode_path_segment(&room)
        ),
        format!(
            "/_matrix/client/v1/room_summary/{}",
            encode_path_segment(&alias)
        ),
        format!(
            "/_matrix/client/unstable/im.nheko.summary/rooms/{}/summary",
            encode_path_segment(&room)
        ),
    ] {
        let resp = bob.client.get(&path).await;
        resp.assert_ok();
        let body = &resp.body;
        assert_eq!(body["room_id"], room.as_str(), "{}", resp.describe());
        assert_eq!(body["name"], "Lobby");
        assert_eq!(body["topic"], "hello");
        assert_eq!(body["canonical_alias"], alias.as_str());
        assert_eq!(body["num_joined_members"], 1);
        assert_public(body);
        assert_eq!(body["world_readable"], false);
        assert_eq!(body["guest_can_join"], false);
        assert_eq!(body["encryption"], "m.megolm.v1.aes-sha2");
        assert!(body["room_version"].is_string(), "{}", resp.describe());
        assert_eq!(body["membership"], "leave");
    }
    let resp = alice
        .client
        .get(&format!(
            "/_matrix/client/v1/room_summary/{}",
            encode_path_segment(&room)
        ))
        .await;
    resp.assert_ok();
    assert_eq!(resp.body["membership"], "join");

    // Without a token: the summary of a public room, without membership.
    let resp = hs
        .client()
        .get(&format!(
            "/_matrix/client/v1/room_summary/{}",
            encode_path_segment(&room)
        ))
        .await;
    resp.assert_ok();
    assert!(resp.body.get("membership").is_none(), "{}", resp.describe());

    // A private room is not found for outsiders, and found once they are invited.
    let private = alice.create_room(json!({ "preset": "private_chat" })).await;
    let path = format!(
        "/_matrix/client/v1/room_summary/{}",
        encode_path_segment(&private)
    );
    assert_matrix_error(&bob.client.get(&path).await, 404, "M_NOT_FOUND");
    assert_matrix_error(&hs.client().get(&path).await, 404, "M_NOT_FOUND");
    alice.invite(&private, &bob.user_id).await;
    let resp = bob.client.get(&path).await;
    resp.assert_ok();
    assert_eq!(resp.body["membership"], "invite");
    assert_eq!(resp.body["join_rule"], "invite");
    // Unknown rooms are 404.
    assert_matrix_error(
        &bob.client
            .get("/_matrix/client/v1/room_summary/!nope:localhost")
            .await,
        404,
        "M_NOT_FOUND",
    );
}
