//! Axon federating with Synapse, the reference homeserver, over TLS on loopback: rooms of
//! either server joined from the other (by alias, by room id), messages both ways in order,
//! moderation (power levels, redactions, kicks, bans) seen on the other side, typing and read
//! receipts, remote profiles, events sent while the other server is down, concurrent power
//! level changes resolved to the same state on both servers, invites both ways (shown with
//! the room's stripped state, accepted, rejected through `make_leave`/`send_leave`), leaves,
//! and history from before a join backfilled from the other server, both ways.
//!
//! Each test starts its own Synapse and `axon` on free ports with their own directories, so the
//! tests run in parallel. Synapse must be installed (see `synapse_support`).
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod federation_support;
mod rooms_support;
mod synapse_support;

use std::sync::Mutex;

use axon_complement_tests::{encode_path_segment, try_wait_until, wait_until};
use rooms_support::{message_bodies, room_path, user, v3};
use serde_json::{Value, json};
use synapse_support::peers::{
    CROSSING, assert_invite_state, assert_rejected_in_sync, bodies, change_power_levels,
    join_by_alias, join_via, numbered, power_levels_event_id, profile, redact, server_of,
    set_displayname, start, synapse_user, sync_now, sync_timeline_bodies, try_join_via,
    wait_for_ephemeral, wait_for_event, wait_for_member_list, wait_for_membership,
    wait_for_messages, wait_for_own_membership_in_sync, wait_for_redaction, wait_for_section,
    wait_for_state,
};

#[tokio::test]
async fn a_synapse_room_is_joined_from_axon_by_alias_and_the_conversation_flows_both_ways() {
    let peers = start().await;
    let bob = synapse_user(&peers.synapse, "bob").await;
    let alice = user(&peers.axon, "alice").await;
    set_displayname(&bob, "Bob of Synapse").await;
    set_displayname(&alice, "Alice of Axon").await;
    let room_id = bob
        .create_room(json!({ "preset": "public_chat", "room_alias_name": "lobby" }))
        .await;
    bob.send_text(&room_id, "before the join").await;

    // Axon resolves Synapse's alias by asking Synapse, then joins through it.
    let alias = format!("#lobby:{}", peers.synapse.server_name());
    let resp = alice
        .client
        .get(&v3(&format!(
            "/directory/room/{}",
            encode_path_segment(&alias)
        )))
        .await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/room_id"), room_id);
    assert_eq!(
        resp.body["servers"][0],
        peers.synapse.server_name(),
        "{}",
        resp.describe()
    );
    assert_eq!(join_by_alias(&alice, &alias).await, room_id);
    wait_for_membership(&bob, &room_id, &alice.user_id, "join").await;

    // Several in a row each way: they arrive in order, on both sides.
    for text in ["b1", "b2", "b3"] {
        bob.send_text(&room_id, text).await;
    }
    wait_for_messages(&alice, &room_id, &["b1", "b2", "b3"]).await;
    let mut last_from_alice = String::new();
    for text in ["a1", "a2", "a3"] {
        last_from_alice = alice.send_text(&room_id, text).await;
    }
    wait_for_messages(&bob, &room_id, &["a1", "a2", "a3"]).await;
    assert_eq!(
        bodies(&bob, &room_id).await,
        ["before the join", "b1", "b2", "b3", "a1", "a2", "a3"]
    );
    let synced = sync_timeline_bodies(&alice, &room_id).await;
    assert!(
        synced.ends_with(&["b1", "b2", "b3", "a1", "a2", "a3"].map(str::to_owned)),
        "Axon's /sync timeline: {synced:?}"
    );

    // Typing and a read receipt from Synapse reach Axon's /sync.
    let typing_path = room_path(
        &room_id,
        &format!("/typing/{}", encode_path_segment(&bob.user_id)),
    );
    bob.client
        .put(&typing_path, json!({ "typing": true, "timeout": 30_000 }))
        .await
        .assert_ok();
    let since = wait_for_ephemeral(
        &alice,
        &room_id,
        None,
        "m.typing",
        "Bob typing",
        |content| {
            content["user_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|id| *id == bob.user_id))
        },
    )
    .await;
    bob.client
        .put(&typing_path, json!({ "typing": false }))
        .await
        .assert_ok();
    let typing_stopped = |content: &Value| {
        content["user_ids"]
            .as_array()
            .is_some_and(|ids| ids.iter().all(|id| *id != bob.user_id))
    };
    wait_for_ephemeral(
        &alice,
        &room_id,
        Some(since),
        "m.typing",
        "Bob not typing",
        typing_stopped,
    )
    .await;
    bob.client
        .post(
            &room_path(
                &room_id,
                &format!("/receipt/m.read/{}", encode_path_segment(&last_from_alice)),
            ),
            json!({}),
        )
        .await
        .assert_ok();
    wait_for_ephemeral(
        &alice,
        &room_id,
        None,
        "m.receipt",
        "Bob's read receipt",
        |content| content[&last_from_alice]["m.read"][&bob.user_id]["ts"].is_u64(),
    )
    .await;

    // Profiles, each asked of the other server.
    let resp = profile(&alice, &bob.user_id).await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/displayname"), "Bob of Synapse");
    let resp = profile(&bob, &alice.user_id).await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/displayname"), "Alice of Axon");
    let resp = profile(&alice, &peers.synapse.user_id("nobody")).await;
    assert_eq!(resp.status, 404, "{}", resp.describe());
    let nobody_of_axon = format!("@nobody:{}", server_of(&alice.user_id));
    let resp = profile(&bob, &nobody_of_axon).await;
    assert_eq!(resp.status, 404, "{}", resp.describe());
}

#[tokio::test]
async fn typing_and_read_receipts_from_axon_reach_synapse_sync() {
    let peers = start().await;
    let bob = synapse_user(&peers.synapse, "bob").await;
    let alice = user(&peers.axon, "alice").await;
    let room_id = bob
        .create_room(json!({ "preset": "public_chat", "room_alias_name": "ephemeral" }))
        .await;
    let alias = format!("#ephemeral:{}", peers.synapse.server_name());
    join_by_alias(&alice, &alias).await;
    wait_for_membership(&bob, &room_id, &alice.user_id, "join").await;
    let from_bob = bob.send_text(&room_id, "read me").await;
    wait_for_messages(&alice, &room_id, &["read me"]).await;

    let typing_path = room_path(
        &room_id,
        &format!("/typing/{}", encode_path_segment(&alice.user_id)),
    );
    alice
        .client
        .put(&typing_path, json!({ "typing": true, "timeout": 30_000 }))
        .await
        .assert_ok();
    let since = wait_for_ephemeral(
        &bob,
        &room_id,
        None,
        "m.typing",
        "Alice typing",
        |content| {
            content["user_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|id| *id == alice.user_id))
        },
    )
    .await;
    alice
        .client
        .put(&typing_path, json!({ "typing": false }))
        .await
        .assert_ok();
    let typing_stopped = |content: &Value| {
        content["user_ids"]
            .as_array()
            .is_some_and(|ids| ids.iter().all(|id| *id != alice.user_id))
    };
    wait_for_ephemeral(
        &bob,
        &room_id,
        Some(since),
        "m.typing",
        "Alice not typing",
        typing_stopped,
    )
    .await;

    alice
        .client
        .post(
            &room_path(
                &room_id,
                &format!("/receipt/m.read/{}", encode_path_segment(&from_bob)),
            ),
            json!({}),
        )
        .await
        .assert_ok();
    wait_for_ephemeral(
        &bob,
        &room_id,
        None,
        "m.receipt",
        "Alice's read receipt",
        |content| content[&from_bob]["m.read"][&alice.user_id]["ts"].is_u64(),
    )
    .await;
}

#[tokio::test]
async fn an_axon_room_is_joined_from_synapse_by_id_and_its_moderation_reaches_synapse() {
    let peers = start().await;
    let alice = user(&peers.axon, "alice").await;
    let bob = synapse_user(&peers.synapse, "bob").await;
    let axon_name = server_of(&alice.user_id).to_owned();
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    let from_alice = alice.send_text(&room_id, "hello from Axon").await;

    // Synapse joins through Axon (make_join/send_join served by Axon).
    join_via(&bob, &room_id, &axon_name).await;
    wait_for_membership(&alice, &room_id, &bob.user_id, "join").await;
    wait_for_messages(&bob, &room_id, &["hello from Axon"]).await;
    let from_bob = bob.send_text(&room_id, "hello from Synapse").await;
    wait_for_messages(&alice, &room_id, &["hello from Axon", "hello from Synapse"]).await;

    // A power level change on Axon: Bob becomes a moderator on Synapse too.
    let bob_id = bob.user_id.clone();
    change_power_levels(&alice, &room_id, |levels| {
        levels["users"][&bob_id] = json!(50);
    })
    .await;
    wait_for_state(
        &bob,
        &room_id,
        "m.room.power_levels",
        "",
        "Bob at 50",
        |c| c["users"][&bob.user_id] == 50,
    )
    .await;

    // Redactions both ways: Bob (moderator) redacts Alice's message, Alice redacts Bob's.
    redact(&bob, &room_id, &from_alice).await;
    wait_for_redaction(&alice, &room_id, &from_alice).await;
    redact(&alice, &room_id, &from_bob).await;
    wait_for_redaction(&bob, &room_id, &from_bob).await;

    // A kick reaches Synapse; Bob joins again through Axon; a ban reaches Synapse and holds.
    alice
        .membership(
            &room_id,
            "kick",
            json!({ "user_id": bob.user_id, "reason": "out" }),
        )
        .await
        .assert_ok();
    wait_for_membership(&bob, &room_id, &bob.user_id, "leave").await;
    join_via(&bob, &room_id, &axon_name).await;
    wait_for_membership(&alice, &room_id, &bob.user_id, "join").await;
    alice
        .membership(&room_id, "ban", json!({ "user_id": bob.user_id }))
        .await
        .assert_ok();
    // Synapse does not let a banned user read the room's state, so the ban is looked for
    // where a client learns of it: the room among the left rooms of its /sync.
    wait_for_own_membership_in_sync(&bob, &room_id, "ban").await;
    let resp = try_join_via(&bob, &room_id, &axon_name).await;
    assert_eq!(resp.status, 403, "{}", resp.describe());
}

#[tokio::test]
async fn moderation_in_a_synapse_room_reaches_axon() {
    let peers = start().await;
    let bob = synapse_user(&peers.synapse, "bob").await;
    let alice = user(&peers.axon, "alice").await;
    let room_id = bob
        .create_room(json!({ "preset": "public_chat", "room_alias_name": "moderated" }))
        .await;
    let alias = format!("#moderated:{}", peers.synapse.server_name());
    join_by_alias(&alice, &alias).await;
    wait_for_membership(&bob, &room_id, &alice.user_id, "join").await;
    let from_bob = bob.send_text(&room_id, "hello from Synapse").await;
    let from_alice = alice.send_text(&room_id, "hello from Axon").await;
    wait_for_messages(&bob, &room_id, &["hello from Synapse", "hello from Axon"]).await;

    // A power level change on Synapse: Alice becomes a moderator on Axon too.
    let alice_id = alice.user_id.clone();
    change_power_levels(&bob, &room_id, |levels| {
        levels["users"][&alice_id] = json!(50);
    })
    .await;
    wait_for_state(
        &alice,
        &room_id,
        "m.room.power_levels",
        "",
        "Alice at 50",
        |c| c["users"][&alice.user_id] == 50,
    )
    .await;

    // Redactions both ways.
    redact(&bob, &room_id, &from_alice).await;
    wait_for_redaction(&alice, &room_id, &from_alice).await;
    redact(&alice, &room_id, &from_bob).await;
    wait_for_redaction(&bob, &room_id, &from_bob).await;

    // A kick reaches Axon; Alice joins again by alias; a ban reaches Axon and holds.
    bob.membership(
        &room_id,
        "kick",
        json!({ "user_id": alice.user_id, "reason": "out" }),
    )
    .await
    .assert_ok();
    wait_for_membership(&alice, &room_id, &alice.user_id, "leave").await;
    assert_eq!(join_by_alias(&alice, &alias).await, room_id);
    wait_for_membership(&bob, &room_id, &alice.user_id, "join").await;
    bob.membership(&room_id, "ban", json!({ "user_id": alice.user_id }))
        .await
        .assert_ok();
    wait_for_membership(&alice, &room_id, &alice.user_id, "ban").await;
    let resp = alice
        .client
        .post(
            &v3(&format!("/join/{}", encode_path_segment(&alias))),
            json!({}),
        )
        .await;
    assert_eq!(resp.status, 403, "{}", resp.describe());
}

#[tokio::test]
async fn messages_sent_while_the_other_server_is_down_arrive_after_it_restarts() {
    let mut peers = start().await;
    let bob = synapse_user(&peers.synapse, "bob").await;
    let alice = user(&peers.axon, "alice").await;
    let room_id = bob
        .create_room(json!({ "preset": "public_chat", "room_alias_name": "outage" }))
        .await;
    join_by_alias(&alice, &format!("#outage:{}", peers.synapse.server_name())).await;
    wait_for_membership(&bob, &room_id, &alice.user_id, "join").await;
    bob.send_text(&room_id, "hi").await;
    wait_for_messages(&alice, &room_id, &["hi"]).await;
    alice.send_text(&room_id, "hi back").await;
    wait_for_messages(&bob, &room_id, &["hi", "hi back"]).await;

    // Axon down: Synapse keeps what it could not deliver and sends it once Axon is back.
    peers.axon.stop().await;
    for text in ["while Axon was down 1", "while Axon was down 2"] {
        bob.send_text(&room_id, text).await;
    }
    peers.axon.restart().await;
    bob.send_text(&room_id, "Axon is back").await;
    wait_for_messages(
        &alice,
        &room_id,
        &[
            "while Axon was down 1",
            "while Axon was down 2",
            "Axon is back",
        ],
    )
    .await;

    // Synapse down: Axon's queue holds Alice's messages until Synapse is back.
    peers.synapse.stop().await;
    for text in ["while Synapse was down 1", "while Synapse was down 2"] {
        alice.send_text(&room_id, text).await;
    }
    peers.synapse.restart().await;
    wait_for_messages(
        &bob,
        &room_id,
        &["while Synapse was down 1", "while Synapse was down 2"],
    )
    .await;
}

#[tokio::test]
async fn concurrent_power_level_changes_resolve_to_the_same_state_on_both_servers() {
    let mut peers = start().await;
    let alice = user(&peers.axon, "alice").await;
    let bob = synapse_user(&peers.synapse, "bob").await;
    let axon_name = server_of(&alice.user_id).to_owned();
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    join_via(&bob, &room_id, &axon_name).await;
    wait_for_membership(&alice, &room_id, &bob.user_id, "join").await;
    let bob_id = bob.user_id.clone();
    change_power_levels(&alice, &room_id, |levels| {
        levels["users"][&bob_id] = json!(100);
    })
    .await;
    wait_for_state(
        &bob,
        &room_id,
        "m.room.power_levels",
        "",
        "Bob at 100",
        |c| c["users"][&bob.user_id] == 100,
    )
    .await;
    // Synapse catches a server up after an outage only from the last event it delivered
    // there by `/send`: one message sets that mark.
    bob.send_text(&room_id, "hello from Synapse").await;
    wait_for_messages(&alice, &room_id, &["hello from Synapse"]).await;

    // A fork: each change is made while the other server is down, so neither has seen the
    // other's when it is made.
    peers.axon.stop().await;
    let from_synapse = change_power_levels(&bob, &room_id, |levels| {
        levels["events"]["m.room.topic"] = json!(70);
    })
    .await;
    peers.synapse.stop().await;
    peers.axon.restart().await;
    let from_axon = change_power_levels(&alice, &room_id, |levels| {
        levels["events"]["m.room.topic"] = json!(60);
    })
    .await;
    peers.synapse.restart().await;
    wait_for_event(&alice, &room_id, &from_synapse).await;
    wait_for_event(&bob, &room_id, &from_axon).await;

    // A message from each side merges the fork.
    alice.send_text(&room_id, "merge from Axon").await;
    bob.send_text(&room_id, "merge from Synapse").await;
    for reader in [&alice, &bob] {
        wait_until(
            &format!("{} to see both merge messages", reader.user_id),
            CROSSING,
            || async {
                let seen = bodies(reader, &room_id).await;
                (seen.contains(&"merge from Axon".to_owned())
                    && seen.contains(&"merge from Synapse".to_owned()))
                .then_some(())
            },
        )
        .await;
    }

    // Whatever the resolution picks, both servers must pick the same.
    let seen = Mutex::new((String::new(), String::new()));
    let agreed = try_wait_until(
        "Axon and Synapse to agree on the power levels",
        CROSSING,
        || async {
            let on_axon = power_levels_event_id(&alice, &room_id).await;
            let on_synapse = power_levels_event_id(&bob, &room_id).await;
            let same = (on_axon == on_synapse).then(|| on_axon.clone());
            if let Ok(mut seen) = seen.lock() {
                *seen = (on_axon, on_synapse);
            }
            same
        },
    )
    .await;
    let agreed = agreed.unwrap_or_else(|timeout| {
        let (on_axon, on_synapse) = seen.lock().map(|s| s.clone()).unwrap_or_default();
        panic!(
            "{timeout}: the current m.room.power_levels is {on_axon} on Axon and {on_synapse} \
             on Synapse (Axon's change {from_axon}, Synapse's change {from_synapse})"
        )
    });
    let topic_level = if agreed == from_axon {
        60
    } else {
        assert_eq!(agreed, from_synapse, "neither change won");
        70
    };
    for reader in [&alice, &bob] {
        let levels = reader
            .state_content(&room_id, "m.room.power_levels", "")
            .await;
        assert_eq!(levels["events"]["m.room.topic"], topic_level, "{levels}");
        assert_eq!(levels["users"][&bob.user_id], 100, "{levels}");
    }
}

#[tokio::test]
async fn a_synapse_user_invited_to_an_axon_room_joins_leaves_and_rejects() {
    let peers = start().await;
    let alice = user(&peers.axon, "alice").await;
    let bob = synapse_user(&peers.synapse, "bob").await;

    // Synapse signs the invite (`/invite` v2) before Axon appends it.
    let garden = alice
        .create_room(json!({ "name": "Garden", "preset": "private_chat" }))
        .await;
    alice.invite(&garden, &bob.user_id).await;
    let member = alice
        .state_content(&garden, "m.room.member", &bob.user_id)
        .await;
    assert_eq!(member["membership"], "invite", "{member}");
    let (invited, _) = wait_for_section(&bob, "invite", &garden).await;
    assert_invite_state(&invited, "Garden", &bob.user_id, &alice.user_id);

    // Accepting: Synapse joins through the inviter's server, Axon.
    bob.join(&garden).await;
    wait_for_membership(&alice, &garden, &bob.user_id, "join").await;
    alice.send_text(&garden, "welcome").await;
    wait_for_messages(&bob, &garden, &["welcome"]).await;
    bob.send_text(&garden, "thanks").await;
    wait_for_messages(&alice, &garden, &["welcome", "thanks"]).await;

    // Leaving: Axon's member list shows it.
    bob.leave(&garden).await;
    wait_for_member_list(&alice, &garden, &bob.user_id, "leave").await;

    // Rejecting an invite made by createRoom: the leave goes back to Axon through
    // make_leave/send_leave, and Bob's sync moves the room from `invite` to `leave`.
    let porch = alice
        .create_room(json!({ "name": "Porch", "invite": [bob.user_id] }))
        .await;
    let (invited, since) = wait_for_section(&bob, "invite", &porch).await;
    assert_invite_state(&invited, "Porch", &bob.user_id, &alice.user_id);
    bob.leave(&porch).await;
    wait_for_membership(&alice, &porch, &bob.user_id, "leave").await;
    wait_for_member_list(&alice, &porch, &bob.user_id, "leave").await;
    assert_rejected_in_sync(&bob, &porch, &since).await;
}

#[tokio::test]
async fn an_axon_user_invited_to_a_synapse_room_joins_leaves_and_rejects() {
    let peers = start().await;
    let bob = synapse_user(&peers.synapse, "bob").await;
    let alice = user(&peers.axon, "alice").await;

    // Axon is not in the room, yet Alice sees the invite with the room's stripped state.
    let garden = bob
        .create_room(json!({ "name": "Garden", "preset": "private_chat" }))
        .await;
    bob.invite(&garden, &alice.user_id).await;
    let (invited, _) = wait_for_section(&alice, "invite", &garden).await;
    assert_invite_state(&invited, "Garden", &alice.user_id, &bob.user_id);

    // Accepting: the join goes through the inviter's server without any `server_name`.
    alice.join(&garden).await;
    wait_for_membership(&bob, &garden, &alice.user_id, "join").await;
    bob.send_text(&garden, "welcome").await;
    wait_for_messages(&alice, &garden, &["welcome"]).await;
    alice.send_text(&garden, "thanks").await;
    wait_for_messages(&bob, &garden, &["welcome", "thanks"]).await;
    let initial = sync_now(&alice, None).await;
    assert!(initial["rooms"]["join"].get(&garden).is_some(), "{initial}");
    assert!(
        initial["rooms"]["invite"].get(&garden).is_none(),
        "{initial}"
    );

    // Leaving: Synapse's member list shows it.
    alice.leave(&garden).await;
    wait_for_member_list(&bob, &garden, &alice.user_id, "leave").await;

    // Rejecting: the leave goes to Synapse through make_leave/send_leave, and Alice's sync
    // moves the room from `invite` to `leave`.
    let porch = bob
        .create_room(json!({ "name": "Porch", "invite": [alice.user_id] }))
        .await;
    let (invited, since) = wait_for_section(&alice, "invite", &porch).await;
    assert_invite_state(&invited, "Porch", &alice.user_id, &bob.user_id);
    alice.leave(&porch).await;
    wait_for_membership(&bob, &porch, &alice.user_id, "leave").await;
    assert_rejected_in_sync(&alice, &porch, &since).await;
}

#[tokio::test]
async fn history_of_a_synapse_room_from_before_the_join_is_backfilled_by_axon() {
    let peers = start().await;
    let bob = synapse_user(&peers.synapse, "bob").await;
    let alice = user(&peers.axon, "alice").await;
    let room_id = bob
        .create_room(json!({ "preset": "public_chat", "room_alias_name": "history" }))
        .await;
    let sent = numbered(30);
    for body in &sent {
        bob.send_text(&room_id, body).await;
    }
    join_by_alias(&alice, &format!("#history:{}", peers.synapse.server_name())).await;

    // Backwards from the join, in pages: everything before it comes from Synapse, newest
    // first, down to the room's creation.
    let events = alice.all_messages(&room_id, "b", 10).await;
    let mut expected = sent.clone();
    expected.reverse();
    assert_eq!(message_bodies(&events), expected);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds.last(), Some(&"m.room.create"), "{kinds:?}");
    assert_eq!(
        message_bodies(&alice.all_messages(&room_id, "f", 10).await),
        sent
    );
}

#[tokio::test]
async fn history_of_an_axon_room_from_before_the_join_is_backfilled_by_synapse() {
    let peers = start().await;
    let alice = user(&peers.axon, "alice").await;
    let bob = synapse_user(&peers.synapse, "bob").await;
    let axon_name = server_of(&alice.user_id).to_owned();
    let room_id = alice.create_room(json!({ "preset": "public_chat" })).await;
    let sent = numbered(30);
    for body in &sent {
        alice.send_text(&room_id, body).await;
    }
    join_via(&bob, &room_id, &axon_name).await;

    // Synapse has only the state from the join: every message it shows before the join came
    // from Axon's `/backfill`.
    let expected: Vec<&str> = sent.iter().map(String::as_str).collect();
    wait_for_messages(&bob, &room_id, &expected).await;
    assert_eq!(bodies(&bob, &room_id).await, sent);
}
