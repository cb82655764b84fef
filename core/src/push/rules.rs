//! Push rules: reading a user's ruleset and changing it, one change a stream position.

use ruma::api::client::push::RuleKind;
use ruma::events::AnyGlobalAccountDataEvent;
use ruma::push::{Action, InsertPushRuleError, NewPushRule, RemovePushRuleError, Ruleset};
use ruma::serde::Raw;
use ruma::{OwnedUserId, UserId};

use super::tables::{RULES, RulesRecord};
use super::{Push, PushError, lock};
use crate::rooms::graph::{Audience, Rooms, StreamPosition};
use crate::storage::Json;

impl Push {
    /// The push rules of `user_id`: what they stored, or the server defaults.
    pub fn rules(&self, user_id: &UserId) -> Result<Ruleset, PushError> {
        Ok(match RULES.get(&*self.store, &user_id.to_owned())? {
            Some(Json(record)) => {
                // The stored defaults are those of the version that stored them: take the
                // current ones, keeping the user's enabled flags and actions.
                let mut ruleset = record.ruleset;
                ruleset.update_with_server_default(Ruleset::server_default(user_id));
                ruleset
            }
            None => Ruleset::server_default(user_id),
        })
    }

    /// The stream position at which the rules of `user_id` last changed (`None`: never, they
    /// are the server defaults).
    pub fn rules_changed_at(&self, user_id: &UserId) -> Result<Option<StreamPosition>, PushError> {
        Ok(RULES
            .get(&*self.store, &user_id.to_owned())?
            .map(|Json(record)| record.stream))
    }

    /// Whether the rules of `user_id` changed after `since`: a sync since then must send the
    /// `m.push_rules` account data again.
    pub fn rules_changed_since(
        &self,
        user_id: &UserId,
        since: StreamPosition,
    ) -> Result<bool, PushError> {
        Ok(self
            .rules_changed_at(user_id)?
            .is_some_and(|changed| changed > since))
    }

    /// The rules of `user_id` as the global account data event `m.push_rules` that sync
    /// delivers.
    pub fn rules_event(
        &self,
        user_id: &UserId,
    ) -> Result<Raw<AnyGlobalAccountDataEvent>, PushError> {
        let event = serde_json::json!({
            "type": "m.push_rules",
            "content": { "global": self.rules(user_id)? },
        });
        let raw = serde_json::value::to_raw_value(&event)
            .map_err(|err| PushError::InvalidParam(format!("unserialisable ruleset: {err}")))?;
        Ok(Raw::from_json(raw))
    }

    /// The rule `rule_id` of `kind` of `user_id`, in the shape the client API serves.
    pub fn rule(
        &self,
        user_id: &UserId,
        kind: &RuleKind,
        rule_id: &str,
    ) -> Result<ruma::api::client::push::PushRule, PushError> {
        check_kind(kind)?;
        let ruleset = self.rules(user_id)?;
        let rule = ruleset.get(kind.clone(), rule_id).ok_or_else(not_found)?;
        Ok(rule.into())
    }

    /// Adds or replaces a user-defined rule, placed relative to `before` or `after` as the
    /// spec says. Synchronous, with a synced write: call it from `spawn_blocking`.
    pub fn add_rule(
        &self,
        rooms: &Rooms,
        user_id: &UserId,
        rule: NewPushRule,
        after: Option<&str>,
        before: Option<&str>,
    ) -> Result<StreamPosition, PushError> {
        self.update_rules(rooms, user_id, |ruleset| {
            ruleset
                .insert(rule, after, before)
                .map_err(|err| match err {
                    InsertPushRuleError::UnknownRuleId => {
                        PushError::NotFound("The before or after rule could not be found".into())
                    }
                    other => PushError::InvalidParam(other.to_string()),
                })
        })
    }

    /// Removes a user-defined rule; server-default rules cannot be removed.
    pub fn remove_rule(
        &self,
        rooms: &Rooms,
        user_id: &UserId,
        kind: &RuleKind,
        rule_id: &str,
    ) -> Result<StreamPosition, PushError> {
        check_kind(kind)?;
        self.update_rules(rooms, user_id, |ruleset| {
            ruleset
                .remove(kind.clone(), rule_id)
                .map_err(|err| match err {
                    RemovePushRuleError::NotFound => not_found(),
                    other => PushError::InvalidParam(format!("Cannot delete this rule: {other}")),
                })
        })
    }

    /// Enables or disables a rule (server-default rules too).
    pub fn set_rule_enabled(
        &self,
        rooms: &Rooms,
        user_id: &UserId,
        kind: &RuleKind,
        rule_id: &str,
        enabled: bool,
    ) -> Result<StreamPosition, PushError> {
        check_kind(kind)?;
        self.update_rules(rooms, user_id, |ruleset| {
            ruleset
                .set_enabled(kind.clone(), rule_id, enabled)
                .map_err(|_| not_found())
        })
    }

    /// Replaces the actions of a rule (server-default rules too).
    pub fn set_rule_actions(
        &self,
        rooms: &Rooms,
        user_id: &UserId,
        kind: &RuleKind,
        rule_id: &str,
        actions: Vec<Action>,
    ) -> Result<StreamPosition, PushError> {
        check_kind(kind)?;
        self.update_rules(rooms, user_id, |ruleset| {
            ruleset
                .set_actions(kind.clone(), rule_id, actions)
                .map_err(|_| not_found())
        })
    }

    /// Applies `change` to the ruleset of `user_id` and stores the result at the next stream
    /// position (nothing is stored when `change` fails).
    fn update_rules(
        &self,
        rooms: &Rooms,
        user_id: &UserId,
        change: impl FnOnce(&mut Ruleset) -> Result<(), PushError>,
    ) -> Result<StreamPosition, PushError> {
        let _serialised = lock(&self.rules_lock);
        let mut ruleset = self.rules(user_id)?;
        change(&mut ruleset)?;
        let user: OwnedUserId = user_id.to_owned();
        let audience = Audience::User(user.clone());
        Ok(rooms.write_at_next_position_for(audience, |batch, stream| {
            RULES.put(batch, &user, &Json(RulesRecord { ruleset, stream }));
            Ok(())
        })?)
    }
}

/// Only the five kinds of the spec name rules.
fn check_kind(kind: &RuleKind) -> Result<(), PushError> {
    match kind {
        RuleKind::Override
        | RuleKind::Underride
        | RuleKind::Sender
        | RuleKind::Room
        | RuleKind::Content => Ok(()),
        other => Err(PushError::InvalidParam(format!(
            "Unknown push rule kind {:?}",
            other.as_str()
        ))),
    }
}

fn not_found() -> PushError {
    PushError::NotFound("Unknown push rule".to_owned())
}
