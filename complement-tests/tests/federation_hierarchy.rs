//! Rooms seen across two `axon` servers over TLS on loopback: the federation `/hierarchy`
//! served and a client's walk through a space of the other server (with an unreachable server
//! left out), partial-state joins served (`omit_members`), and the room server ACL refusing a
//! barred server on every federation endpoint that concerns the room.
#![allow(
    clippy::panic,
    reason = "test helpers report failures by panicking with context"
)]

mod federation_support;
mod rooms_support;

use std::collections::HashSet;

use axon_complement_tests::{Homeserver, Response, assert_matrix_error, encode_path_segment};
use federation_support::{A, B, ServerSigner, free_port, start_pair};
use reqwest::Method;
use rooms_support::{User, user};
use ruma::{CanonicalJsonObject, RoomVersionId};
use serde_json::{Value, json};

/// Every room version a `make_*` request says it supports.
const ALL_VERSIONS: &str = "ver=1&ver=2&ver=3&ver=4&ver=5&ver=6&ver=7&ver=8&ver=9&ver=10\
     &ver=11&ver=12";

fn fed(path: &str) -> String {
    format!("/_matrix/federation{path}")
}

fn enc(segment: &str) -> String {
    encode_path_segment(segment)
}

/// `GET` from `signer` to `hs` (named `destination`).
async fn fed_get(
    signer: &ServerSigner,
    hs: &Homeserver,
    destination: &str,
    path: &str,
) -> Response {
    signer
        .request(hs, destination, Method::GET, &fed(path), None)
        .await
}

async fn space(owner: &User, name: &str) -> String {
    owner
        .create_room(json!({
            "name": name,
            "preset": "public_chat",
            // A room id naming its server, so another server knows whom to ask.
            "room_version": "11",
            "creation_content": { "type": "m.space" },
        }))
        .await
}

async fn add_child(owner: &User, parent: &str, child: &str, content: Value) {
    owner
        .put_state(parent, "m.space.child", child, content)
        .await
        .assert_ok();
}

fn ids_at(value: &Value, pointer: &str, field: &str) -> Vec<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|entry| {
            if field.is_empty() {
                entry.as_str().unwrap_or_default().to_owned()
            } else {
                entry[field].as_str().unwrap_or_default().to_owned()
            }
        })
        .collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn a_space_of_another_server_is_served_and_walked_through_federation() {
    let (_pki, a, b) = start_pair("").await;
    let bob = user(&b, "bob").await;
    let root = space(&bob, "Remote space").await;
    let sub = space(&bob, "Sub space").await;
    let open = bob
        .create_room(json!({"name": "Open", "preset": "public_chat"}))
        .await;
    let secret = bob
        .create_room(json!({"name": "Secret", "preset": "private_chat"}))
        .await;
    let deep = bob
        .create_room(json!({"name": "Deep", "preset": "public_chat"}))
        .await;
    let via_b = json!({"via": [B]});
    add_child(
        &bob,
        &root,
        &open,
        json!({"via": [B], "suggested": true, "order": "a"}),
    )
    .await;
    add_child(&bob, &root, &secret, json!({"via": [B], "order": "b"})).await;
    add_child(&bob, &root, &sub, json!({"via": [B], "order": "c"})).await;
    add_child(&bob, &sub, &deep, via_b).await;
    // A child only a server that does not answer knows of.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let ghost = format!("!ghost:{nowhere}");
    add_child(&bob, &root, &ghost, json!({"via": [nowhere], "order": "d"})).await;

    // Served to A: the space with every child link, the children A may see, the one it may not.
    let a_signer = ServerSigner::of(&a, A);
    let resp = fed_get(&a_signer, &b, B, &format!("/v1/hierarchy/{}", enc(&root))).await;
    resp.assert_ok();
    assert_eq!(resp.str_at("/room/room_id"), root);
    assert_eq!(
        resp.body["room"]["room_type"],
        "m.space",
        "{}",
        resp.describe()
    );
    assert_eq!(resp.body["room"]["name"], "Remote space");
    assert_eq!(
        sorted(ids_at(&resp.body, "/room/children_state", "state_key")),
        sorted(vec![
            open.clone(),
            secret.clone(),
            sub.clone(),
            ghost.clone()
        ])
    );
    assert_eq!(
        sorted(ids_at(&resp.body, "/children", "room_id")),
        sorted(vec![open.clone(), sub.clone()]),
        "{}",
        resp.describe()
    );
    assert_eq!(
        ids_at(&resp.body, "/inaccessible_children", ""),
        vec![secret.clone()]
    );

    let suggested = fed_get(
        &a_signer,
        &b,
        B,
        &format!("/v1/hierarchy/{}?suggested_only=true", enc(&root)),
    )
    .await;
    suggested.assert_ok();
    assert_eq!(
        ids_at(&suggested.body, "/room/children_state", "state_key"),
        vec![open.clone()]
    );

    // A room B does not know, and a room A may not see, are both not found.
    for hidden in [format!("!unknown:{B}"), secret.clone()] {
        let resp = fed_get(&a_signer, &b, B, &format!("/v1/hierarchy/{}", enc(&hidden))).await;
        assert_matrix_error(&resp, 404, "M_NOT_FOUND");
    }

    // A's user, in none of these rooms, walks the space through B; the unreachable server's
    // room is left out without failing the walk.
    let alice = user(&a, "alice").await;
    let path = format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&root));
    let walk = alice.client.get(&path).await;
    walk.assert_ok();
    assert_eq!(
        ids_at(&walk.body, "/rooms", "room_id"),
        vec![root.clone(), open.clone(), sub.clone(), deep.clone()],
        "{}",
        walk.describe()
    );
    assert_eq!(
        walk.body["rooms"][0]["children_state"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    assert_eq!(walk.body["rooms"][3]["name"], "Deep");

    // Pages of one room each follow the same walk.
    let first = alice.client.get(&format!("{path}?limit=1")).await;
    first.assert_ok();
    let token = first.str_at("/next_batch").to_owned();
    let second = alice
        .client
        .get(&format!("{path}?limit=1&from={}", enc(&token)))
        .await;
    second.assert_ok();
    assert_eq!(
        ids_at(&second.body, "/rooms", "room_id"),
        vec![open.clone()]
    );

    // The summary of a room A is not in comes from B too.
    let summary = alice
        .client
        .get(&format!(
            "/_matrix/client/v1/room_summary/{}?via={B}",
            enc(&sub)
        ))
        .await;
    summary.assert_ok();
    assert_eq!(summary.body["name"], "Sub space", "{}", summary.describe());
    assert_eq!(summary.body["membership"], "leave");
}

/// A PDU's event id (room versions 4 and later): its reference hash.
fn event_id(version: &RoomVersionId, pdu: &Value) -> String {
    let rules = version
        .rules()
        .unwrap_or_else(|| panic!("unknown room version {version}"));
    let object: CanonicalJsonObject =
        serde_json::from_value(pdu.clone()).unwrap_or_else(|e| panic!("not canonical: {e}"));
    let hash = ruma::signatures::reference_hash(&object, &rules)
        .unwrap_or_else(|e| panic!("reference hash: {e}"));
    format!("${hash}")
}

/// Joins `user_id` (of A, played by `signer`) to B's `room_id` through `make_join` and
/// `send_join` v2 with `query` added; returns the room's version and the `send_join` answer.
async fn signed_join(
    signer: &ServerSigner,
    b: &Homeserver,
    room_id: &str,
    user_id: &str,
    query: &str,
) -> (RoomVersionId, Value) {
    let made = fed_get(
        signer,
        b,
        B,
        &format!(
            "/v1/make_join/{}/{}?{ALL_VERSIONS}",
            enc(room_id),
            enc(user_id)
        ),
    )
    .await;
    made.assert_ok();
    let version = RoomVersionId::try_from(made.str_at("/room_version"))
        .unwrap_or_else(|e| panic!("room version: {e}"));
    let (event_id, pdu) = signer.sign_event(&version, &made.body["event"]);
    let joined = signer
        .request(
            b,
            B,
            Method::PUT,
            &fed(&format!(
                "/v2/send_join/{}/{}{query}",
                enc(room_id),
                enc(&event_id)
            )),
            Some(&pdu),
        )
        .await;
    joined.assert_ok();
    (version, joined.body)
}

fn members_in(events: &[Value]) -> Vec<String> {
    sorted(
        events
            .iter()
            .filter(|event| event["type"] == "m.room.member")
            .map(|event| event["state_key"].as_str().unwrap_or_default().to_owned())
            .collect(),
    )
}

fn list(answer: &Value, field: &str) -> Vec<Value> {
    answer[field].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn partial_state_joins_omit_members_and_redundant_auth_events() {
    let (_pki, a, b) = start_pair("").await;
    let bob = user(&b, "bob").await;
    let named = bob
        .create_room(json!({"name": "Named", "preset": "public_chat"}))
        .await;
    let nameless = bob.create_room(json!({"preset": "public_chat"})).await;
    let mut locals = vec![bob.user_id.clone()];
    for name in ["carol", "dave", "erin", "frank", "grace", "heidi"] {
        let member = user(&b, name).await;
        member.join(&named).await;
        member.join(&nameless).await;
        locals.push(member.user_id.clone());
    }
    locals.sort();
    let signer = ServerSigner::of(&a, A);

    let (_, full) = signed_join(&signer, &b, &named, &format!("@full:{A}"), "").await;
    assert_ne!(full["members_omitted"], true, "{full}");
    assert_eq!(members_in(&list(&full, "state")), locals);

    let (version, partial) = signed_join(
        &signer,
        &b,
        &named,
        &format!("@partial:{A}"),
        "?omit_members=true",
    )
    .await;
    assert_eq!(partial["members_omitted"], true, "{partial}");
    let state = list(&partial, "state");
    let chain = list(&partial, "auth_chain");
    // The room has a name: no member is needed to show it.
    assert!(members_in(&state).is_empty(), "{partial}");
    assert!(state.iter().any(|event| event["type"] == "m.room.create"));
    assert!(
        state
            .iter()
            .any(|event| event["type"] == "m.room.power_levels")
    );
    assert!(state.len() < list(&full, "state").len());
    assert!(chain.len() < list(&full, "auth_chain").len());
    let servers: HashSet<&str> = partial["servers_in_room"]
        .as_array()
        .unwrap_or_else(|| panic!("no servers_in_room: {partial}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(servers, HashSet::from([A, B]));
    // The auth chain holds no event of the state, and with it covers every auth event.
    let state_ids: HashSet<String> = state.iter().map(|pdu| event_id(&version, pdu)).collect();
    let chain_ids: HashSet<String> = chain.iter().map(|pdu| event_id(&version, pdu)).collect();
    assert!(state_ids.is_disjoint(&chain_ids), "{partial}");
    for pdu in state.iter().chain(&chain) {
        for auth in pdu["auth_events"].as_array().cloned().unwrap_or_default() {
            let auth = auth.as_str().unwrap_or_default().to_owned();
            assert!(
                state_ids.contains(&auth) || chain_ids.contains(&auth),
                "{auth} missing from {partial}"
            );
        }
    }

    // Without a name, the heroes' memberships come along: five members, by user id.
    let (_, heroes) = signed_join(
        &signer,
        &b,
        &nameless,
        &format!("@partial:{A}"),
        "?omit_members=true",
    )
    .await;
    assert_eq!(heroes["members_omitted"], true);
    assert_eq!(
        members_in(&list(&heroes, "state")),
        locals.iter().take(5).cloned().collect::<Vec<_>>()
    );
}

/// The event a request concerns, and what it sends.
struct Probe {
    method: Method,
    path: String,
    body: Option<Value>,
}

fn probe(method: Method, path: String, body: Option<Value>) -> Probe {
    Probe {
        method,
        path: fed(&path),
        body,
    }
}

#[tokio::test]
async fn a_server_barred_by_the_room_acl_is_refused_everywhere() {
    let (_pki, a, b) = start_pair("").await;
    let alice = user(&a, "alice").await;
    let room = alice
        .create_room(json!({
            "preset": "public_chat",
            "creation_content": { "type": "m.space" },
            "initial_state": [{
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": "world_readable"},
            }],
        }))
        .await;
    let message = alice.send_text(&room, "hello").await;
    let create = alice
        .client
        .get(&rooms_support::room_path(&room, "/state/m.room.create/"))
        .await;
    create.assert_ok();
    let version = RoomVersionId::try_from(create.body["room_version"].as_str().unwrap_or("1"))
        .unwrap_or_else(|e| panic!("room version: {e}"));
    let b_signer = ServerSigner::of(&b, B);
    let (r, e) = (enc(&room), enc(&message));
    let state_ids = format!("/v1/state_ids/{r}?event_id={e}");

    // World readable and public: B may read it and ask to join before the ACL.
    fed_get(&b_signer, &a, A, &state_ids).await.assert_ok();
    let mallory = format!("@mallory:{B}");
    let make_join = format!("/v1/make_join/{r}/{}?{ALL_VERSIONS}", enc(&mallory));
    fed_get(&b_signer, &a, A, &make_join).await.assert_ok();
    fed_get(&b_signer, &a, A, &format!("/v1/hierarchy/{r}"))
        .await
        .assert_ok();

    alice
        .put_state(
            &room,
            "m.room.server_acl",
            "",
            json!({"allow": ["*"], "deny": [B], "allow_ip_literals": true}),
        )
        .await
        .assert_ok();

    let member_event = |membership: &str, state_key: &str| {
        let (_, pdu) = b_signer.sign_event(
            &version,
            &json!({
                "room_id": room,
                "sender": mallory,
                "type": "m.room.member",
                "state_key": state_key,
                "content": {"membership": membership},
                "origin_server_ts": 1_700_000_000_000_u64,
                "depth": 5,
                "prev_events": [],
                "auth_events": [],
            }),
        );
        pdu
    };
    let fake = enc("$barred");
    let probes = [
        probe(Method::GET, format!("/v1/event/{e}"), None),
        probe(Method::GET, format!("/v1/state/{r}?event_id={e}"), None),
        probe(Method::GET, state_ids.clone(), None),
        probe(Method::GET, format!("/v1/event_auth/{r}/{e}"), None),
        probe(Method::GET, format!("/v1/backfill/{r}?v={e}&limit=5"), None),
        probe(
            Method::POST,
            format!("/v1/get_missing_events/{r}"),
            Some(json!({"earliest_events": [], "latest_events": [message], "limit": 5})),
        ),
        probe(Method::GET, make_join.clone(), None),
        probe(
            Method::PUT,
            format!("/v2/send_join/{r}/{fake}"),
            Some(member_event("join", &mallory)),
        ),
        probe(
            Method::GET,
            format!("/v1/make_leave/{r}/{}", enc(&mallory)),
            None,
        ),
        probe(
            Method::PUT,
            format!("/v2/send_leave/{r}/{fake}"),
            Some(member_event("leave", &mallory)),
        ),
        probe(
            Method::GET,
            format!("/v1/make_knock/{r}/{}?{ALL_VERSIONS}", enc(&mallory)),
            None,
        ),
        probe(
            Method::PUT,
            format!("/v1/send_knock/{r}/{fake}"),
            Some(member_event("knock", &mallory)),
        ),
        probe(
            Method::PUT,
            format!("/v2/invite/{r}/{fake}"),
            Some(json!({
                "room_version": version.as_str(),
                "event": member_event("invite", &alice.user_id),
                "invite_room_state": [],
            })),
        ),
        probe(
            Method::GET,
            format!("/v1/timestamp_to_event/{r}?ts=9999999999999&dir=b"),
            None,
        ),
        probe(Method::GET, format!("/v1/hierarchy/{r}"), None),
    ];
    for probe in &probes {
        let resp = b_signer
            .request(
                &a,
                A,
                probe.method.clone(),
                &probe.path,
                probe.body.as_ref(),
            )
            .await;
        assert_eq!(
            resp.status,
            403,
            "{} {}: {}",
            probe.method,
            probe.path,
            resp.describe()
        );
        assert_matrix_error(&resp, 403, "M_FORBIDDEN");
    }

    // A PDU in `/send` is refused for the ACL (the transaction itself succeeds).
    let (pdu_id, pdu) = b_signer.sign_event(
        &version,
        &json!({
            "room_id": room,
            "sender": mallory,
            "type": "m.room.message",
            "content": {"msgtype": "m.text", "body": "barred"},
            "origin_server_ts": 1_700_000_000_000_u64,
            "depth": 5,
            "prev_events": [message],
            "auth_events": [],
        }),
    );
    let sent = b_signer
        .request(
            &a,
            A,
            Method::PUT,
            &fed("/v1/send/acl-1"),
            Some(&json!({
                "origin": B,
                "origin_server_ts": 1_700_000_000_000_u64,
                "pdus": [pdu],
                "edus": [],
            })),
        )
        .await;
    sent.assert_ok();
    let error = sent.body["pdus"][&pdu_id]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error for {pdu_id}: {}", sent.describe()));
    assert!(error.contains("ACL"), "{error}");
}
