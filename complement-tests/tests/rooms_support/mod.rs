//! Helpers shared by the `rooms_*` tests: creating rooms, sending events, reading state and
//! paginating `/messages`, so each test reads as the scenario it checks.
#![allow(
    dead_code,
    reason = "each rooms_* test binary uses a different subset of the helpers"
)]

use axon_complement_tests::{Client, Homeserver, Response, encode_path_segment, random_string};
use serde_json::{Value, json};

/// The password every test user gets.
pub(crate) const PASSWORD: &str = "correct-horse-battery-staple";

/// `/_matrix/client/v3` followed by `rest`.
pub(crate) fn v3(rest: &str) -> String {
    format!("/_matrix/client/v3{rest}")
}

/// `/_matrix/client/v3/rooms/{room_id}{rest}`.
pub(crate) fn room_path(room_id: &str, rest: &str) -> String {
    v3(&format!("/rooms/{}{rest}", encode_path_segment(room_id)))
}

/// A registered user's client and full user id.
#[derive(Debug, Clone)]
pub(crate) struct User {
    /// The client, authenticated as this user.
    pub(crate) client: Client,
    /// `@name:server`.
    pub(crate) user_id: String,
    /// The device of this session.
    pub(crate) device_id: String,
}

/// Registers `name` on `hs`.
pub(crate) async fn user(hs: &Homeserver, name: &str) -> User {
    let client = hs.client();
    let session = client.register(name, PASSWORD).await;
    User {
        client: client.as_session(&session),
        user_id: session.user_id,
        device_id: session.device_id,
    }
}

/// Logs `user` in again, on a new device.
pub(crate) async fn second_device(hs: &Homeserver, user: &User) -> User {
    let session = hs.client().login_password(&user.user_id, PASSWORD).await;
    User {
        client: hs.client().as_session(&session),
        user_id: session.user_id,
        device_id: session.device_id,
    }
}

impl User {
    /// `POST /createRoom` with `body`, returning the raw response.
    pub(crate) async fn create_room_with(&self, body: Value) -> Response {
        self.client.post(&v3("/createRoom"), body).await
    }

    /// Creates a room with `body` and returns its id, failing the test otherwise.
    pub(crate) async fn create_room(&self, body: Value) -> String {
        let resp = self.create_room_with(body).await;
        resp.assert_ok();
        let room_id = resp.str_at("/room_id").to_owned();
        assert!(room_id.starts_with('!'), "{}", resp.describe());
        room_id
    }

    /// `PUT /rooms/{room}/send/{type}/{txn}`.
    pub(crate) async fn send_with_txn(
        &self,
        room_id: &str,
        event_type: &str,
        txn: &str,
        content: Value,
    ) -> Response {
        let path = room_path(
            room_id,
            &format!(
                "/send/{}/{}",
                encode_path_segment(event_type),
                encode_path_segment(txn)
            ),
        );
        self.client.put(&path, content).await
    }

    /// Sends an `m.room.message` with `body` under a fresh transaction id; returns the event id.
    pub(crate) async fn send_text(&self, room_id: &str, body: &str) -> String {
        let resp = self
            .send_with_txn(
                room_id,
                "m.room.message",
                &random_string(12),
                json!({ "msgtype": "m.text", "body": body }),
            )
            .await;
        resp.assert_ok();
        resp.str_at("/event_id").to_owned()
    }

    /// Sends a text message and returns the raw response.
    pub(crate) async fn try_send_text(&self, room_id: &str, body: &str) -> Response {
        self.send_with_txn(
            room_id,
            "m.room.message",
            &random_string(12),
            json!({ "msgtype": "m.text", "body": body }),
        )
        .await
    }

    /// `PUT /rooms/{room}/state/{type}/{state_key}`.
    pub(crate) async fn put_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> Response {
        self.client
            .put(&state_path(room_id, event_type, state_key), content)
            .await
    }

    /// `GET /rooms/{room}/state/{type}/{state_key}`.
    pub(crate) async fn get_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Response {
        self.client
            .get(&state_path(room_id, event_type, state_key))
            .await
    }

    /// `GET /rooms/{room}/state/{type}/{state_key}`, asserting success; returns the content.
    pub(crate) async fn state_content(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Value {
        let resp = self.get_state(room_id, event_type, state_key).await;
        resp.assert_ok();
        resp.body
    }

    /// `GET /rooms/{room}/event/{event_id}`.
    pub(crate) async fn get_event(&self, room_id: &str, event_id: &str) -> Response {
        self.client
            .get(&room_path(
                room_id,
                &format!("/event/{}", encode_path_segment(event_id)),
            ))
            .await
    }

    /// `POST /rooms/{room}/{action}` (join, leave, invite, kick, ban, unban, forget).
    pub(crate) async fn membership(&self, room_id: &str, action: &str, body: Value) -> Response {
        self.client
            .post(&room_path(room_id, &format!("/{action}")), body)
            .await
    }

    /// Joins `room_id` through `POST /rooms/{room}/join`, asserting success.
    pub(crate) async fn join(&self, room_id: &str) {
        let resp = self.membership(room_id, "join", json!({})).await;
        resp.assert_ok();
        assert_eq!(resp.str_at("/room_id"), room_id);
    }

    /// Invites `invitee` into `room_id`, asserting success.
    pub(crate) async fn invite(&self, room_id: &str, invitee: &str) {
        self.membership(room_id, "invite", json!({ "user_id": invitee }))
            .await
            .assert_ok();
    }

    /// Leaves `room_id`, asserting success.
    pub(crate) async fn leave(&self, room_id: &str) {
        self.membership(room_id, "leave", json!({}))
            .await
            .assert_ok();
    }

    /// `GET /rooms/{room}/messages?{query}`.
    pub(crate) async fn messages(&self, room_id: &str, query: &str) -> Response {
        self.client
            .get(&room_path(room_id, &format!("/messages?{query}")))
            .await
    }

    /// Every event visible through `/messages` in direction `dir`, following `end` tokens with
    /// pages of `limit` events until the server says there is no more. Fails the test on an
    /// error, or on more pages than events could fill (a token that does not advance).
    pub(crate) async fn all_messages(&self, room_id: &str, dir: &str, limit: usize) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        for _ in 0..10_000 {
            let mut query = format!("dir={dir}&limit={limit}");
            if let Some(from) = &from {
                query.push_str(&format!("&from={}", encode_path_segment(from)));
            }
            let resp = self.messages(room_id, &query).await;
            resp.assert_ok();
            let chunk = resp.body["chunk"]
                .as_array()
                .unwrap_or_else(|| panic!("no chunk: {}", resp.describe()));
            assert!(
                chunk.len() <= limit,
                "page over the limit: {}",
                resp.describe()
            );
            assert!(
                resp.body["start"].is_string(),
                "no start: {}",
                resp.describe()
            );
            events.extend(chunk.iter().cloned());
            match resp.body["end"].as_str() {
                Some(end) => from = Some(end.to_owned()),
                None => return events,
            }
        }
        panic!("/messages never stopped paginating");
    }

    /// `GET /joined_rooms`, sorted.
    pub(crate) async fn joined_rooms(&self) -> Vec<String> {
        let resp = self.client.get(&v3("/joined_rooms")).await;
        resp.assert_ok();
        let mut rooms: Vec<String> = resp.body["joined_rooms"]
            .as_array()
            .unwrap_or_else(|| panic!("no joined_rooms: {}", resp.describe()))
            .iter()
            .map(|room| room.as_str().unwrap_or_default().to_owned())
            .collect();
        rooms.sort();
        rooms
    }

    /// The `(user id, membership)` pairs of `GET /rooms/{room}/members?{query}`, sorted.
    pub(crate) async fn members(&self, room_id: &str, query: &str) -> Vec<(String, String)> {
        let resp = self
            .client
            .get(&room_path(room_id, &format!("/members?{query}")))
            .await;
        resp.assert_ok();
        let mut members: Vec<(String, String)> = resp.body["chunk"]
            .as_array()
            .unwrap_or_else(|| panic!("no chunk: {}", resp.describe()))
            .iter()
            .map(|event| {
                assert_eq!(event["type"], "m.room.member", "{event}");
                (
                    event["state_key"].as_str().unwrap_or_default().to_owned(),
                    event["content"]["membership"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        members.sort();
        members
    }
}

/// The path of a state event; an empty state key gives the `.../{eventType}` form too.
pub(crate) fn state_path(room_id: &str, event_type: &str, state_key: &str) -> String {
    room_path(
        room_id,
        &format!(
            "/state/{}/{}",
            encode_path_segment(event_type),
            encode_path_segment(state_key)
        ),
    )
}

/// The event ids of `events`, in order.
pub(crate) fn event_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["event_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The bodies of the `m.room.message` events among `events`, in order.
pub(crate) fn message_bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .map(|event| {
            event["content"]["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Asserts that `event` is in the client format: the client fields are there and the
/// federation-only fields are not.
pub(crate) fn assert_client_format(event: &Value, room_id: &str) {
    for field in ["event_id", "type", "sender", "room_id"] {
        assert!(event[field].is_string(), "no {field}: {event}");
    }
    assert!(event["content"].is_object(), "no content: {event}");
    assert!(
        event["origin_server_ts"].is_u64(),
        "no origin_server_ts: {event}"
    );
    assert_eq!(event["room_id"], room_id, "{event}");
    for field in [
        "hashes",
        "signatures",
        "auth_events",
        "prev_events",
        "depth",
        "origin",
    ] {
        assert!(
            event.get(field).is_none(),
            "federation field {field}: {event}"
        );
    }
}
