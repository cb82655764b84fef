//! Events as clients see them: the PDU without its federation fields.
//!
//! A client event keeps `event_id`, `type`, `sender`, `content`, `origin_server_ts`,
//! `room_id`, `state_key` and `unsigned`; `hashes`, `signatures`, `auth_events`,
//! `prev_events`, `depth` and `origin` exist for servers and are dropped. `unsigned.age` is
//! computed at serving time, and `unsigned.transaction_id` is added only for the device that
//! sent the event, as the spec asks.

use axon_api::ApiError;
use axon_core::rooms::pdu::Pdu;
use ruma::MilliSecondsSinceUnixEpoch;
use ruma::serde::Raw;
use serde_json::{Map, Value};

/// The fields of a PDU that only servers need.
const FEDERATION_ONLY: [&str; 7] = [
    "hashes",
    "signatures",
    "auth_events",
    "prev_events",
    "depth",
    "origin",
    // Old servers put a copy of the membership at the top level; clients read the content.
    "membership",
];

/// Extra facts about the reader, for `unsigned`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Serving<'a> {
    /// The transaction id, when the reader is the device that sent the event.
    pub(crate) transaction_id: Option<&'a str>,
    /// The id of the delayed event (MSC4140) that sent the event, when the reader sent it.
    pub(crate) delay_id: Option<&'a str>,
    /// The bundled aggregations of the event (`unsigned["m.relations"]`), if it has any.
    pub(crate) relations: Option<&'a Value>,
}

/// The client format of `pdu` as a JSON object.
pub(crate) fn client_event_json(pdu: &Pdu, serving: Serving<'_>) -> Value {
    let mut object: Map<String, Value> = Map::new();
    for (key, value) in pdu.json() {
        if FEDERATION_ONLY.contains(&key.as_str()) {
            continue;
        }
        object.insert(key.clone(), Value::from(value.clone()));
    }
    // From room v3 on the event id is a hash and not part of the PDU; clients need it.
    object.insert("event_id".to_owned(), Value::from(pdu.event_id().as_str()));
    // A v12 create event has no `room_id` field: its room id derives from its event id.
    object.insert("room_id".to_owned(), Value::from(pdu.room_id().as_str()));
    // From v11 `redacts` lives in `content`; clients written for older rooms read the top
    // level, so both are served.
    if let Some(redacts) = pdu.redacts() {
        object.insert("redacts".to_owned(), Value::from(redacts.as_str()));
    }

    let mut unsigned = match object.remove("unsigned") {
        Some(Value::Object(unsigned)) => unsigned,
        _ => Map::new(),
    };
    let now = MilliSecondsSinceUnixEpoch::now().get();
    let age = i64::from(now).saturating_sub(i64::from(pdu.origin_server_ts().get()));
    unsigned.insert("age".to_owned(), Value::from(age));
    if let Some(txn) = serving.transaction_id {
        unsigned.insert("transaction_id".to_owned(), Value::from(txn));
    }
    if let Some(delay_id) = serving.delay_id {
        unsigned.insert(
            "org.matrix.msc4140.delay_id".to_owned(),
            Value::from(delay_id),
        );
    }
    if let Some(relations) = serving.relations {
        unsigned.insert("m.relations".to_owned(), relations.clone());
    }
    object.insert("unsigned".to_owned(), Value::Object(unsigned));
    Value::Object(object)
}

/// The client format of `pdu` as a ruma raw event of type `T` (a timeline, state or member
/// event; the JSON is the same).
pub(crate) fn client_event<T>(pdu: &Pdu, serving: Serving<'_>) -> Result<Raw<T>, ApiError> {
    to_raw(&client_event_json(pdu, serving))
}

/// Wraps JSON as a ruma raw value.
pub(crate) fn to_raw<T>(value: &Value) -> Result<Raw<T>, ApiError> {
    serde_json::value::to_raw_value(value)
        .map(Raw::from_json)
        .map_err(|err| ApiError::internal(format!("cannot serialise an event: {err}")))
}

#[cfg(test)]
mod tests {
    use axon_core::rooms::room_version::RoomVersion;
    use ruma::CanonicalJsonObject;
    use serde_json::json;

    use super::*;

    fn pdu(json: Value, version: &str) -> Pdu {
        let object: CanonicalJsonObject = serde_json::from_value(json).unwrap();
        Pdu::from_canonical(object, &RoomVersion::parse(version).unwrap()).unwrap()
    }

    fn message() -> Value {
        json!({
            "auth_events": ["$a"],
            "prev_events": ["$p"],
            "content": { "body": "hi", "msgtype": "m.text" },
            "depth": 7,
            "hashes": { "sha256": "abc" },
            "origin_server_ts": 1_000,
            "room_id": "!room:example.org",
            "sender": "@alice:example.org",
            "signatures": {},
            "type": "m.room.message",
            "unsigned": { "prev_content": { "x": 1 } },
        })
    }

    #[test]
    fn federation_fields_are_dropped_and_client_fields_kept() {
        let pdu = pdu(message(), "11");
        let event = client_event_json(&pdu, Serving::default());
        for field in [
            "hashes",
            "signatures",
            "auth_events",
            "prev_events",
            "depth",
        ] {
            assert!(event.get(field).is_none(), "{field} in {event}");
        }
        assert_eq!(event["event_id"], pdu.event_id().as_str());
        assert_eq!(event["room_id"], "!room:example.org");
        assert_eq!(event["sender"], "@alice:example.org");
        assert_eq!(event["content"]["body"], "hi");
        assert_eq!(event["origin_server_ts"], 1_000);
        assert_eq!(event["unsigned"]["prev_content"], json!({ "x": 1 }));
        assert!(event["unsigned"]["age"].as_i64().unwrap() > 0);
        assert!(event["unsigned"].get("transaction_id").is_none());
    }

    #[test]
    fn the_sending_device_sees_its_transaction_id() {
        let pdu = pdu(message(), "11");
        let event = client_event_json(
            &pdu,
            Serving {
                transaction_id: Some("txn-1"),
                delay_id: None,
                relations: None,
            },
        );
        assert_eq!(event["unsigned"]["transaction_id"], "txn-1");
        assert!(
            event["unsigned"]
                .get("org.matrix.msc4140.delay_id")
                .is_none()
        );
    }

    #[test]
    fn an_event_sent_by_a_delayed_event_names_it_to_its_sender() {
        let pdu = pdu(message(), "11");
        let event = client_event_json(
            &pdu,
            Serving {
                transaction_id: None,
                delay_id: Some("syd_abc"),
                relations: None,
            },
        );
        assert_eq!(event["unsigned"]["org.matrix.msc4140.delay_id"], "syd_abc");
        assert!(event["unsigned"].get("transaction_id").is_none());
    }

    #[test]
    fn redactions_carry_redacts_at_both_levels() {
        let mut json = message();
        json["type"] = json!("m.room.redaction");
        json["content"] = json!({ "redacts": "$target" });
        let event = client_event_json(&pdu(json, "11"), Serving::default());
        assert_eq!(event["redacts"], "$target");
        assert_eq!(event["content"]["redacts"], "$target");
    }
}
