//! The peer's requests to the target's server-server API, signed with
//! `X-Matrix`: joining through `make_join`/`send_join`, and transactions.

use std::sync::Arc;

use axon_complement_tests::encode_path_segment;
use reqwest::Method;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use crate::bench::error::BenchError;
use crate::bench::federation::signing::Signer;
use crate::bench::matrix::excerpt;

/// The room versions the peer offers in `make_join`: those with hash event
/// ids, which it can build events for.
const JOIN_VERSIONS: [&str; 10] = ["3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

/// The target as a remote server sees it.
#[derive(Debug, Clone)]
pub(crate) struct FederationTarget {
    http: reqwest::Client,
    base_url: String,
    /// The target's server name: the `destination` of every request.
    server_name: String,
    signer: Arc<Signer>,
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) json: Value,
}

/// The target's server name, from its own `/_matrix/key/v2/server`.
pub(crate) async fn server_name(
    http: &reqwest::Client,
    base_url: &str,
) -> Result<String, BenchError> {
    let what = "reading the target's server name from /_matrix/key/v2/server";
    let http_error = |source| BenchError::Http {
        what: what.to_owned(),
        source,
    };
    let response = http
        .get(format!("{base_url}/_matrix/key/v2/server"))
        .send()
        .await
        .map_err(http_error)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(http_error)?;
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    match (status, json["server_name"].as_str()) {
        (200, Some(name)) => Ok(name.to_owned()),
        _ => Err(BenchError::Status {
            what: format!("{what} (is the federation API served at {base_url}?)"),
            status,
            body: excerpt(&text),
        }),
    }
}

impl FederationTarget {
    /// Requests to `base_url`, whose server name is `server_name`, from the
    /// server `signer` signs for, over `http` (one connection: a server
    /// sends one transaction at a time to a destination).
    pub(crate) fn new(
        http: reqwest::Client,
        base_url: &str,
        server_name: String,
        signer: Arc<Signer>,
    ) -> FederationTarget {
        FederationTarget {
            http,
            base_url: base_url.to_owned(),
            server_name,
            signer,
        }
    }

    /// Sends a signed request to `uri` (path and query) and returns the
    /// answer if it is a 200 with a JSON body.
    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Answer, BenchError> {
        let authorization = self
            .signer
            .x_matrix(method.as_str(), uri, &self.server_name, body);
        let mut request = self
            .http
            .request(method, format!("{}{uri}", self.base_url))
            .header(AUTHORIZATION, authorization);
        if let Some(body) = body {
            request = request.json(body);
        }
        let http_error = |source| BenchError::Http {
            what: what.to_owned(),
            source,
        };
        let response = request.send().await.map_err(http_error)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(http_error)?;
        let json = serde_json::from_str(&text).ok();
        match (status, json) {
            (200, Some(json)) => Ok(Answer { json }),
            _ => Err(BenchError::Status {
                what: what.to_owned(),
                status,
                body: excerpt(&text),
            }),
        }
    }

    /// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`: the room
    /// version and the join event template.
    pub(crate) async fn make_join(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<(String, Value), BenchError> {
        let versions: Vec<String> = JOIN_VERSIONS.iter().map(|v| format!("ver={v}")).collect();
        let uri = format!(
            "/_matrix/federation/v1/make_join/{}/{}?{}",
            encode_path_segment(room_id),
            encode_path_segment(user_id),
            versions.join("&")
        );
        let answer = self
            .call(Method::GET, &uri, None, &format!("make_join {room_id}"))
            .await?;
        let version = answer.json["room_version"]
            .as_str()
            // The spec's default when a server leaves it out.
            .unwrap_or("1")
            .to_owned();
        let template = answer.json["event"].clone();
        if !template.is_object() {
            return Err(BenchError::Unsupported(format!(
                "make_join {room_id}: no event template in {}",
                excerpt(&answer.json.to_string())
            )));
        }
        Ok((version, template))
    }

    /// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}` with the
    /// signed join; returns the room state before the join and its auth
    /// chain, as the target answered.
    pub(crate) async fn send_join(
        &self,
        room_id: &str,
        event_id: &str,
        pdu: &Value,
    ) -> Result<(Vec<Value>, Vec<Value>), BenchError> {
        let uri = format!(
            "/_matrix/federation/v2/send_join/{}/{}",
            encode_path_segment(room_id),
            encode_path_segment(event_id)
        );
        let answer = self
            .call(
                Method::PUT,
                &uri,
                Some(pdu),
                &format!("send_join {room_id}"),
            )
            .await?;
        let list = |field: &str| {
            answer.json[field]
                .as_array()
                .cloned()
                .ok_or_else(|| BenchError::Unsupported(format!("send_join {room_id}: no {field}")))
        };
        Ok((list("state")?, list("auth_chain")?))
    }

    /// `PUT /_matrix/federation/v1/send/{txnId}` with `pdus`; fails unless
    /// the target accepted every one of `event_ids` (the PDUs' ids).
    pub(crate) async fn send_transaction(
        &self,
        txn_id: &str,
        pdus: &[Value],
        event_ids: &[String],
    ) -> Result<(), String> {
        let body = json!({
            "origin": self.signer.server_name(),
            "origin_server_ts": axon_complement_tests::now_ms(),
            "pdus": pdus,
            "edus": [],
        });
        let uri = format!(
            "/_matrix/federation/v1/send/{}",
            encode_path_segment(txn_id)
        );
        let answer = self
            .call(
                Method::PUT,
                &uri,
                Some(&body),
                &format!("transaction {txn_id}"),
            )
            .await
            .map_err(|e| e.to_string())?;
        check_pdu_results(&answer.json, event_ids).map_err(|e| format!("transaction {txn_id}: {e}"))
    }
}

/// Whether a `/send` answer reports success for every one of `event_ids`:
/// an entry per PDU, with no `error`.
pub(crate) fn check_pdu_results(answer: &Value, event_ids: &[String]) -> Result<(), String> {
    let Some(results) = answer["pdus"].as_object() else {
        return Err(format!("no pdus map in {}", excerpt(&answer.to_string())));
    };
    for id in event_ids {
        match results.get(id) {
            Some(result) if result.get("error").is_none() => {}
            Some(result) => return Err(format!("{id} was refused: {result}")),
            None => return Err(format!("no result for {id}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pdu_needs_a_result_without_an_error() {
        let ids = vec!["$a".to_owned(), "$b".to_owned()];
        assert!(check_pdu_results(&json!({ "pdus": { "$a": {}, "$b": {} } }), &ids).is_ok());
        let refused = check_pdu_results(
            &json!({ "pdus": { "$a": {}, "$b": { "error": "bad auth" } } }),
            &ids,
        )
        .unwrap_err();
        assert!(
            refused.contains("$b was refused") && refused.contains("bad auth"),
            "{refused}"
        );
        let missing = check_pdu_results(&json!({ "pdus": { "$a": {} } }), &ids).unwrap_err();
        assert!(missing.contains("no result for $b"), "{missing}");
        assert!(check_pdu_results(&json!({}), &ids).is_err());
    }
}
