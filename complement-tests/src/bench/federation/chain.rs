//! The peer's view of the room it joined, and the chain of messages it
//! sends into it: each `m.room.message` follows the previous event through
//! `prev_events`, one deeper, with the auth events the spec selects for it
//! (the create event unless the room version drops it, the power levels,
//! the sender's membership), hashed and signed for the room's version.

use ruma::RoomVersionId;
use ruma::room_version_rules::{EventIdFormatVersion, RoomVersionRules};
use serde_json::{Value, json};

use crate::bench::error::BenchError;
use crate::bench::federation::signing::{Signer, event_id_of};

/// A room the peer has joined, and where its next event goes.
#[derive(Debug, Clone)]
pub(crate) struct RoomChain {
    room_id: String,
    version: RoomVersionId,
    rules: RoomVersionRules,
    sender: String,
    auth_events: Vec<String>,
    /// The event the next one follows, and its depth.
    last: String,
    depth: u64,
}

fn failed(message: String) -> BenchError {
    BenchError::Unsupported(message)
}

/// The rules of `version`, refusing versions whose event ids are not
/// hashes (1 and 2), which this peer does not build events for.
pub(crate) fn rules_of(version: &str) -> Result<(RoomVersionId, RoomVersionRules), BenchError> {
    let id = RoomVersionId::try_from(version)
        .map_err(|e| failed(format!("room version {version:?}: {e}")))?;
    let rules = id
        .rules()
        .ok_or_else(|| failed(format!("room version {version} is unknown to this tool")))?;
    if rules.event_id_format == EventIdFormatVersion::V1 {
        return Err(failed(format!(
            "room version {version} has `$id:server` event ids, which this tool does not build"
        )));
    }
    Ok((id, rules))
}

impl RoomChain {
    /// The room after the peer's join `join_id` (at `join_depth`), with
    /// `state` the room state `send_join` returned.
    pub(crate) fn after_join(
        room_id: &str,
        version: &str,
        sender: &str,
        state: &[Value],
        join_id: &str,
        join_depth: u64,
    ) -> Result<RoomChain, BenchError> {
        let (version, rules) = rules_of(version)?;
        let find = |kind: &str| -> Result<String, BenchError> {
            let event = state
                .iter()
                .find(|event| event["type"] == kind && event["state_key"] == "")
                .ok_or_else(|| failed(format!("the joined room's state has no {kind}")))?;
            event_id_of(event, &rules)
        };
        let mut auth_events = Vec::with_capacity(3);
        // From room version 12 the create event is implied by the room id.
        if !rules.authorization.room_create_event_id_as_room_id {
            auth_events.push(find("m.room.create")?);
        }
        auth_events.push(find("m.room.power_levels")?);
        auth_events.push(join_id.to_owned());
        Ok(RoomChain {
            room_id: room_id.to_owned(),
            version,
            rules,
            sender: sender.to_owned(),
            auth_events,
            last: join_id.to_owned(),
            depth: join_depth,
        })
    }

    /// The room's version.
    pub(crate) fn version(&self) -> &RoomVersionId {
        &self.version
    }

    /// The next message, with `body` and timestamp `ts`, signed by
    /// `signer`; the chain moves on to it. Returns its id and the PDU.
    pub(crate) fn next_message(
        &mut self,
        signer: &Signer,
        body: &str,
        ts: u64,
    ) -> Result<(String, Value), BenchError> {
        let event = json!({
            "room_id": self.room_id,
            "sender": self.sender,
            "origin": signer.server_name(),
            "origin_server_ts": ts,
            "type": "m.room.message",
            "content": { "msgtype": "m.text", "body": body },
            "auth_events": self.auth_events,
            "prev_events": [self.last],
            "depth": self.depth + 1,
        });
        let (event_id, pdu) = signer.sign_event(&self.rules, event)?;
        self.last = event_id.clone();
        self.depth += 1;
        Ok((event_id, pdu))
    }
}

#[cfg(test)]
mod tests {
    use ruma::CanonicalJsonObject;

    use super::*;

    fn signer() -> Signer {
        Signer::generate("127.0.0.1:1".to_owned()).unwrap()
    }

    /// A create, power levels and join rules event of a room of `version`.
    fn state(signer: &Signer, version: &str) -> Vec<Value> {
        let (_, rules) = rules_of(version).unwrap();
        ["m.room.create", "m.room.power_levels", "m.room.join_rules"]
            .into_iter()
            .enumerate()
            .map(|(depth, kind)| {
                let event = json!({
                    "room_id": "!r:hs", "sender": "@a:hs", "type": kind, "state_key": "",
                    "content": {}, "auth_events": [], "prev_events": [], "depth": depth + 1,
                    "origin_server_ts": 1,
                });
                signer.sign_event(&rules, event).unwrap().1
            })
            .collect()
    }

    #[test]
    fn messages_chain_on_each_other_with_the_auth_events_of_the_version() {
        let signer = signer();
        let state = state(&signer, "10");
        let (_, rules) = rules_of("10").unwrap();
        let create_id = event_id_of(&state[0], &rules).unwrap();
        let power_id = event_id_of(&state[1], &rules).unwrap();
        let mut chain =
            RoomChain::after_join("!r:hs", "10", "@p:127.0.0.1:1", &state, "$join", 7).unwrap();

        let (first_id, first) = chain.next_message(&signer, "one", 100).unwrap();
        let (second_id, second) = chain.next_message(&signer, "two", 101).unwrap();
        assert_eq!(first["prev_events"], json!(["$join"]));
        assert_eq!(first["depth"], 8);
        assert_eq!(second["prev_events"], json!([first_id]));
        assert_eq!(second["depth"], 9);
        assert_eq!(first["auth_events"], json!([create_id, power_id, "$join"]));
        assert_eq!(second["content"]["body"], "two");
        assert_ne!(first_id, second_id);

        // Each is correctly hashed and signed, and its id is its reference hash.
        for (id, pdu) in [(&first_id, &first), (&second_id, &second)] {
            let object: CanonicalJsonObject = serde_json::from_value(pdu.clone()).unwrap();
            let verified =
                ruma::signatures::verify_event(&signer.public_key_map(), &object, &rules).unwrap();
            assert_eq!(verified, ruma::signatures::Verified::All);
            assert_eq!(&event_id_of(pdu, &rules).unwrap(), id);
            // Version 4 and later: URL-safe base64, no padding.
            assert!(!id.contains(['+', '/', '=']), "{id}");
        }
    }

    #[test]
    fn tampered_content_no_longer_matches_its_hash() {
        let signer = signer();
        let state = state(&signer, "11");
        let mut chain =
            RoomChain::after_join("!r:hs", "11", "@p:127.0.0.1:1", &state, "$join", 1).unwrap();
        let (_, mut pdu) = chain.next_message(&signer, "one", 100).unwrap();
        pdu["content"]["body"] = json!("changed");
        let object: CanonicalJsonObject = serde_json::from_value(pdu).unwrap();
        let (_, rules) = rules_of("11").unwrap();
        let verified =
            ruma::signatures::verify_event(&signer.public_key_map(), &object, &rules).unwrap();
        assert_eq!(verified, ruma::signatures::Verified::Signatures);
    }

    #[test]
    fn version_12_leaves_the_create_event_out() {
        let signer = signer();
        let state = state(&signer, "12");
        let (_, rules) = rules_of("12").unwrap();
        let power_id = event_id_of(&state[1], &rules).unwrap();
        let mut chain =
            RoomChain::after_join("!r", "12", "@p:127.0.0.1:1", &state, "$join", 1).unwrap();
        let (_, pdu) = chain.next_message(&signer, "one", 100).unwrap();
        assert_eq!(pdu["auth_events"], json!([power_id, "$join"]));
    }

    #[test]
    fn unusable_rooms_are_refused() {
        assert!(rules_of("1").is_err());
        assert!(rules_of("2").is_err());
        assert!(rules_of("999").is_err());
        let err = RoomChain::after_join("!r:hs", "10", "@p:x", &[], "$join", 1).unwrap_err();
        assert!(err.to_string().contains("m.room.create"), "{err}");
    }
}
