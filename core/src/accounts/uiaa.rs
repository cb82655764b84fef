//! User-interactive authentication (UIAA) sessions, in memory.
//!
//! A session remembers which flows the server offered, which stages the client completed, and
//! small data the stages leave behind (such as a reserved registration token). It is tied to
//! the request that started it (a fingerprint such as method and path) and, when started by a
//! logged-in user, to that user: the spec forbids reusing a session for a different request.
//!
//! Sessions die with the process, which only makes a client restart its auth. They expire
//! after a period without activity, and their number is capped. Expired sessions are never
//! dropped silently: [`UiaaSessions::take_expired`] hands them over so that what they hold (a
//! reserved token use) can be given back.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng as _;
use rand::distr::Alphanumeric;
use ruma::{OwnedUserId, UserId};
use serde_json::Value;

use super::error::AccountError;

/// Inactivity after which a session expires.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(15 * 60);
/// Default cap on sessions held at once.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// One session's state.
#[derive(Clone, Debug, PartialEq)]
pub struct UiaaSession {
    /// The session id sent to the client.
    pub id: String,
    /// The flows offered: each a list of stage types.
    pub flows: Vec<Vec<String>>,
    /// The `params` object sent with the flows.
    pub params: Value,
    /// Stages completed so far, in completion order.
    pub completed: Vec<String>,
    /// The user the session belongs to, when started by an authenticated request.
    pub bound_to: Option<OwnedUserId>,
    /// What request the session authorises (such as `"POST /register"`).
    pub fingerprint: String,
    /// Data the stages left (by key).
    pub data: BTreeMap<String, Value>,
    expires_at: Instant,
}

impl UiaaSession {
    /// Whether every stage of some offered flow is completed.
    pub fn is_complete(&self) -> bool {
        self.flows
            .iter()
            .any(|flow| flow.iter().all(|stage| self.completed.contains(stage)))
    }

    fn offers(&self, stage: &str) -> bool {
        self.flows.iter().flatten().any(|offered| offered == stage)
    }
}

/// The live UIAA sessions.
#[derive(Debug)]
pub struct UiaaSessions {
    ttl: Duration,
    max_sessions: usize,
    sessions: Mutex<HashMap<String, UiaaSession>>,
}

impl Default for UiaaSessions {
    fn default() -> Self {
        Self::new()
    }
}

impl UiaaSessions {
    /// Sessions with the default lifetime and cap.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_SESSION_TTL, DEFAULT_MAX_SESSIONS)
    }

    /// Sessions expiring after `ttl` without activity, at most `max_sessions` at once.
    pub fn with_limits(ttl: Duration, max_sessions: usize) -> Self {
        Self {
            ttl,
            max_sessions: max_sessions.max(1),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UiaaSession>> {
        // A panic mid-update leaves at worst one session half-changed; keep serving.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a session and returns its id.
    ///
    /// At the cap, fails with [`AccountError::RateLimited`] until a session ends or expires;
    /// call [`take_expired`](Self::take_expired) first so expired ones do not count.
    pub fn start(
        &self,
        flows: Vec<Vec<String>>,
        params: Value,
        bound_to: Option<OwnedUserId>,
        fingerprint: impl Into<String>,
        now: Instant,
    ) -> Result<String, AccountError> {
        let mut sessions = self.lock();
        if sessions.len() >= self.max_sessions {
            let retry_after = sessions
                .values()
                .map(|session| session.expires_at.saturating_duration_since(now))
                .min()
                .unwrap_or_default();
            tracing::warn!(
                sessions = sessions.len(),
                "too many user-interactive auth sessions"
            );
            return Err(AccountError::RateLimited { retry_after });
        }
        let id = loop {
            let candidate: String = rand::rng()
                .sample_iter(&Alphanumeric)
                .take(32)
                .map(char::from)
                .collect();
            if !sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        sessions.insert(
            id.clone(),
            UiaaSession {
                id: id.clone(),
                flows,
                params,
                completed: Vec::new(),
                bound_to,
                fingerprint: fingerprint.into(),
                data: BTreeMap::new(),
                expires_at: now + self.ttl,
            },
        );
        Ok(id)
    }

    /// Runs `f` on a live session, extending its life.
    fn with_session<T>(
        &self,
        id: &str,
        now: Instant,
        f: impl FnOnce(&mut UiaaSession) -> Result<T, AccountError>,
    ) -> Result<T, AccountError> {
        let mut sessions = self.lock();
        let session = sessions
            .get_mut(id)
            .filter(|session| session.expires_at > now)
            .ok_or(AccountError::UiaaSessionUnknown)?;
        session.expires_at = now + self.ttl;
        f(session)
    }

    /// The session `id`, checked against the request continuing it: the same `fingerprint`,
    /// and the same user when the session is bound to one.
    pub fn resume(
        &self,
        id: &str,
        fingerprint: &str,
        user: Option<&UserId>,
        now: Instant,
    ) -> Result<UiaaSession, AccountError> {
        self.with_session(id, now, |session| {
            if session.fingerprint != fingerprint {
                return Err(AccountError::UiaaSessionMismatch);
            }
            if let Some(bound) = &session.bound_to
                && user != Some(bound.as_ref())
            {
                return Err(AccountError::UiaaSessionMismatch);
            }
            Ok(session.clone())
        })
    }

    /// Marks `stage` completed; it must be part of an offered flow. Returns the completed
    /// stages.
    pub fn complete_stage(
        &self,
        id: &str,
        stage: &str,
        now: Instant,
    ) -> Result<Vec<String>, AccountError> {
        self.with_session(id, now, |session| {
            if !session.offers(stage) {
                return Err(AccountError::UiaaStageNotOffered(stage.to_owned()));
            }
            if !session.completed.iter().any(|done| done == stage) {
                session.completed.push(stage.to_owned());
            }
            Ok(session.completed.clone())
        })
    }

    /// The completed stages.
    pub fn completed(&self, id: &str, now: Instant) -> Result<Vec<String>, AccountError> {
        self.with_session(id, now, |session| Ok(session.completed.clone()))
    }

    /// Whether every stage of some offered flow is completed.
    pub fn is_complete(&self, id: &str, now: Instant) -> Result<bool, AccountError> {
        self.with_session(id, now, |session| Ok(session.is_complete()))
    }

    /// Stores `value` under `key`.
    pub fn set_data(
        &self,
        id: &str,
        key: &str,
        value: Value,
        now: Instant,
    ) -> Result<(), AccountError> {
        self.with_session(id, now, |session| {
            session.data.insert(key.to_owned(), value);
            Ok(())
        })
    }

    /// The value under `key`.
    pub fn get_data(
        &self,
        id: &str,
        key: &str,
        now: Instant,
    ) -> Result<Option<Value>, AccountError> {
        self.with_session(id, now, |session| Ok(session.data.get(key).cloned()))
    }

    /// Ends a session (expired or not) and returns it.
    pub fn finish(&self, id: &str) -> Option<UiaaSession> {
        self.lock().remove(id)
    }

    /// Removes and returns the sessions expired at `now`.
    pub fn take_expired(&self, now: Instant) -> Vec<UiaaSession> {
        let mut sessions = self.lock();
        let expired: Vec<String> = sessions
            .values()
            .filter(|session| session.expires_at <= now)
            .map(|session| session.id.clone())
            .collect();
        expired
            .iter()
            .filter_map(|id| sessions.remove(id))
            .collect()
    }

    /// Number of sessions held (expired ones not yet taken included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn flows() -> Vec<Vec<String>> {
        vec![
            vec![
                "m.login.registration_token".to_owned(),
                "m.login.dummy".to_owned(),
            ],
            vec!["m.login.password".to_owned()],
        ]
    }

    fn user(name: &str) -> OwnedUserId {
        OwnedUserId::try_from(format!("@{name}:example.org")).unwrap()
    }

    #[test]
    fn a_flow_completes_when_all_its_stages_are_done() {
        let sessions = UiaaSessions::new();
        let now = Instant::now();
        let id = sessions
            .start(flows(), json!({}), None, "POST /register", now)
            .unwrap();
        assert_eq!(id.len(), 32);
        assert!(!sessions.is_complete(&id, now).unwrap());
        sessions.complete_stage(&id, "m.login.dummy", now).unwrap();
        assert!(!sessions.is_complete(&id, now).unwrap());
        // Completing twice records it once.
        let done = sessions.complete_stage(&id, "m.login.dummy", now).unwrap();
        assert_eq!(done, ["m.login.dummy"]);
        sessions
            .complete_stage(&id, "m.login.registration_token", now)
            .unwrap();
        assert!(sessions.is_complete(&id, now).unwrap());
        assert_eq!(
            sessions.completed(&id, now).unwrap(),
            ["m.login.dummy", "m.login.registration_token"]
        );
        // The other flow alone completes too.
        let other = sessions
            .start(flows(), json!({}), None, "POST /register", now)
            .unwrap();
        sessions
            .complete_stage(&other, "m.login.password", now)
            .unwrap();
        assert!(sessions.is_complete(&other, now).unwrap());
    }

    #[test]
    fn stages_outside_the_flows_are_refused() {
        let sessions = UiaaSessions::new();
        let now = Instant::now();
        let id = sessions
            .start(flows(), json!({}), None, "POST /register", now)
            .unwrap();
        assert!(matches!(
            sessions.complete_stage(&id, "m.login.sso", now),
            Err(AccountError::UiaaStageNotOffered(stage)) if stage == "m.login.sso"
        ));
        assert!(sessions.completed(&id, now).unwrap().is_empty());
    }

    #[test]
    fn a_session_serves_only_its_own_request_and_user() {
        let sessions = UiaaSessions::new();
        let now = Instant::now();
        let alice = user("alice");
        let id = sessions
            .start(
                flows(),
                json!({}),
                Some(alice.clone()),
                "POST /account/password",
                now,
            )
            .unwrap();
        let session = sessions
            .resume(&id, "POST /account/password", Some(&alice), now)
            .unwrap();
        assert_eq!(session.bound_to.as_ref(), Some(&alice));
        assert!(matches!(
            sessions.resume(&id, "POST /delete_devices", Some(&alice), now),
            Err(AccountError::UiaaSessionMismatch)
        ));
        assert!(matches!(
            sessions.resume(&id, "POST /account/password", Some(&user("mallory")), now),
            Err(AccountError::UiaaSessionMismatch)
        ));
        assert!(matches!(
            sessions.resume(&id, "POST /account/password", None, now),
            Err(AccountError::UiaaSessionMismatch)
        ));
        assert!(matches!(
            sessions.resume("nosuch", "POST /account/password", Some(&alice), now),
            Err(AccountError::UiaaSessionUnknown)
        ));
        // An unbound session accepts any (or no) user.
        let open = sessions
            .start(flows(), json!({}), None, "POST /register", now)
            .unwrap();
        sessions.resume(&open, "POST /register", None, now).unwrap();
        sessions
            .resume(&open, "POST /register", Some(&alice), now)
            .unwrap();
    }

    #[test]
    fn data_round_trips_and_finish_ends_the_session() {
        let sessions = UiaaSessions::new();
        let now = Instant::now();
        let id = sessions
            .start(flows(), json!({"k": 1}), None, "POST /register", now)
            .unwrap();
        assert_eq!(
            sessions.get_data(&id, "registration_token", now).unwrap(),
            None
        );
        sessions
            .set_data(&id, "registration_token", json!("abc"), now)
            .unwrap();
        assert_eq!(
            sessions.get_data(&id, "registration_token", now).unwrap(),
            Some(json!("abc"))
        );
        let finished = sessions.finish(&id).unwrap();
        assert_eq!(finished.params, json!({"k": 1}));
        assert_eq!(finished.data.get("registration_token"), Some(&json!("abc")));
        assert!(sessions.finish(&id).is_none());
        assert!(matches!(
            sessions.completed(&id, now),
            Err(AccountError::UiaaSessionUnknown)
        ));
    }

    #[test]
    fn sessions_expire_after_inactivity_and_are_handed_over() {
        let ttl = Duration::from_secs(60);
        let sessions = UiaaSessions::with_limits(ttl, 10);
        let t0 = Instant::now();
        let idle = sessions
            .start(flows(), json!({}), None, "POST /register", t0)
            .unwrap();
        let busy = sessions
            .start(flows(), json!({}), None, "POST /register", t0)
            .unwrap();
        // Activity at 50s extends the busy session to 110s.
        sessions
            .set_data(&busy, "x", json!(1), t0 + Duration::from_secs(50))
            .unwrap();
        let at = t0 + ttl;
        assert!(matches!(
            sessions.completed(&idle, at),
            Err(AccountError::UiaaSessionUnknown)
        ));
        sessions.completed(&busy, at).unwrap();
        // Expired but not yet taken: still held, so its data can be given back.
        assert_eq!(sessions.len(), 2);
        let expired = sessions.take_expired(at);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].id, idle);
        assert_eq!(sessions.len(), 1);
        assert!(sessions.take_expired(at).is_empty());
    }

    #[test]
    fn the_cap_refuses_new_sessions_until_one_ends() {
        let ttl = Duration::from_secs(60);
        let sessions = UiaaSessions::with_limits(ttl, 2);
        let t0 = Instant::now();
        let first = sessions.start(flows(), json!({}), None, "a", t0).unwrap();
        sessions
            .start(flows(), json!({}), None, "a", t0 + Duration::from_secs(10))
            .unwrap();
        let at = t0 + Duration::from_secs(20);
        match sessions.start(flows(), json!({}), None, "a", at) {
            Err(AccountError::RateLimited { retry_after }) => {
                assert_eq!(retry_after, Duration::from_secs(40));
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        sessions.finish(&first);
        sessions.start(flows(), json!({}), None, "a", at).unwrap();
        assert_eq!(sessions.len(), 2);
    }
}
