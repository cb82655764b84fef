//! Scenarios across the accounts modules, through the [`Accounts`] service.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::test_support::settings;
use super::{
    AccountError, Accounts, LoginRequest, NewRegistrationToken, RegisterRequest,
    UIAA_REGISTRATION_TOKEN, UserCounts,
};
use crate::storage::MemoryStore;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn accounts() -> Accounts {
    Accounts::new(Arc::new(MemoryStore::new()), settings())
}

fn register_with_password(
    accounts: &Accounts,
    localpart: &str,
    password: &str,
) -> ruma::OwnedUserId {
    let hash = accounts.hash_password(password).unwrap();
    accounts
        .register(RegisterRequest::user(localpart, Some(hash)))
        .unwrap()
}

#[test]
fn password_check_accepts_the_right_password_only() {
    let accounts = accounts();
    let alice = register_with_password(&accounts, "alice", "correct horse");
    accounts
        .check_password(&alice, "correct horse", IP)
        .unwrap();
    assert!(matches!(
        accounts.check_password(&alice, "wrong", IP),
        Err(AccountError::InvalidPassword)
    ));
    // An unknown user looks the same as a wrong password.
    let nobody = accounts.parse_login_user("nobody").unwrap();
    assert!(matches!(
        accounts.check_password(&nobody, "x", IP),
        Err(AccountError::InvalidPassword)
    ));
    // A user without a password cannot log in by password.
    let sso = accounts
        .register(RegisterRequest::user("sso", None))
        .unwrap();
    assert!(matches!(
        accounts.check_password(&sso, "", IP),
        Err(AccountError::InvalidPassword)
    ));
}

#[test]
fn repeated_failures_throttle_the_user() {
    let mut settings = settings();
    settings.throttle.max_failures = 3;
    settings.throttle.window = Duration::from_secs(600);
    let accounts = Accounts::new(Arc::new(MemoryStore::new()), settings);
    let alice = register_with_password(&accounts, "alice", "correct horse");
    for _ in 0..3 {
        assert!(matches!(
            accounts.check_password(&alice, "guess", IP),
            Err(AccountError::InvalidPassword)
        ));
    }
    // Now even the right password is refused, from anywhere, until the window passes.
    let elsewhere = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
    match accounts.check_password(&alice, "correct horse", elsewhere) {
        Err(AccountError::RateLimited { retry_after }) => {
            assert!(
                retry_after > Duration::from_secs(590) && retry_after <= Duration::from_secs(600)
            );
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[test]
fn set_password_logs_out_other_devices_but_keeps_the_current_one() {
    let accounts = accounts();
    let alice = register_with_password(&accounts, "alice", "old password");
    let current = accounts.login(LoginRequest::new(&alice)).unwrap();
    let other = accounts.login(LoginRequest::new(&alice).refresh()).unwrap();
    let new_hash = accounts.hash_password("new password").unwrap();
    accounts
        .set_password(&alice, Some(new_hash), Some(&current.device_id), true)
        .unwrap();

    accounts.authenticate(&current.access_token).unwrap();
    assert!(matches!(
        accounts.authenticate(&other.access_token),
        Err(AccountError::UnknownToken)
    ));
    assert!(matches!(
        accounts.refresh(other.refresh_token.as_deref().unwrap()),
        Err(AccountError::UnknownToken)
    ));
    assert_eq!(accounts.devices(&alice).unwrap().len(), 1);
    assert_eq!(accounts.count_active_access_tokens().unwrap(), 1);
    accounts.check_password(&alice, "new password", IP).unwrap();
    assert!(matches!(
        accounts.check_password(&alice, "old password", IP),
        Err(AccountError::InvalidPassword)
    ));

    // Without logout, every device stays.
    accounts.login(LoginRequest::new(&alice)).unwrap();
    accounts.set_password(&alice, None, None, false).unwrap();
    assert_eq!(accounts.devices(&alice).unwrap().len(), 2);
}

#[test]
fn deactivation_kills_tokens_and_blocks_login() {
    let accounts = accounts();
    let alice = register_with_password(&accounts, "alice", "password");
    accounts
        .set_avatar_url(&alice, Some("mxc://example.org/a".to_owned()))
        .unwrap();
    let session = accounts.login(LoginRequest::new(&alice).refresh()).unwrap();
    let login_token = accounts
        .create_login_token(&alice, Duration::from_secs(60))
        .unwrap();

    accounts.deactivate(&alice, false).unwrap();
    assert!(matches!(
        accounts.authenticate(&session.access_token),
        Err(AccountError::UnknownToken)
    ));
    assert!(matches!(
        accounts.refresh(session.refresh_token.as_deref().unwrap()),
        Err(AccountError::UnknownToken)
    ));
    assert!(matches!(
        accounts.consume_login_token(&login_token),
        Err(AccountError::UnknownToken)
    ));
    assert!(matches!(
        accounts.check_password(&alice, "password", IP),
        Err(AccountError::UserDeactivated)
    ));
    assert!(matches!(
        accounts.login(LoginRequest::new(&alice)),
        Err(AccountError::UserDeactivated)
    ));
    assert!(accounts.devices(&alice).unwrap().is_empty());
    assert_eq!(accounts.count_active_access_tokens().unwrap(), 0);
    let record = accounts.user(&alice).unwrap().unwrap();
    assert!(record.deactivated && record.password_hash.is_none());
    // Without erase the profile stays; the user id stays taken.
    assert_eq!(
        accounts.profile(&alice).unwrap().avatar_url.as_deref(),
        Some("mxc://example.org/a")
    );
    assert!(!accounts.is_available("alice").unwrap());

    accounts.deactivate(&alice, true).unwrap();
    assert_eq!(accounts.profile(&alice).unwrap(), super::Profile::default());
    assert_eq!(
        accounts.count_users().unwrap(),
        UserCounts {
            total: 1,
            guests: 0,
            deactivated: 1
        }
    );
}

#[test]
fn registration_token_through_uiaa() {
    let accounts = accounts();
    let tokens = accounts.registration_tokens();
    tokens
        .create(NewRegistrationToken {
            token: Some("invite".to_owned()),
            uses_allowed: Some(1),
            ..Default::default()
        })
        .unwrap();
    let flows = vec![vec!["m.login.registration_token".to_owned()]];
    let session = accounts
        .uiaa_start(flows.clone(), json!({}), None, "POST /register")
        .unwrap();
    accounts
        .uiaa_reserve_registration_token(&session, "invite")
        .unwrap();
    // Repeating the stage reserves nothing more.
    accounts
        .uiaa_reserve_registration_token(&session, "invite")
        .unwrap();
    assert_eq!(tokens.get("invite").unwrap().unwrap().pending, 1);
    // The only use is taken: another session cannot reserve it.
    let rival = accounts
        .uiaa_start(flows, json!({}), None, "POST /register")
        .unwrap();
    assert!(matches!(
        accounts.uiaa_reserve_registration_token(&rival, "invite"),
        Err(AccountError::RegistrationTokenInvalid)
    ));
    accounts
        .uiaa()
        .complete_stage(&session, "m.login.registration_token", Instant::now())
        .unwrap();

    let user = accounts
        .register_after_uiaa(&session, RegisterRequest::user("bob", None))
        .unwrap();
    assert_eq!(user.localpart(), "bob");
    let token = tokens.get("invite").unwrap().unwrap();
    assert_eq!((token.pending, token.completed), (0, 1));
    assert!(!tokens.is_valid("invite").unwrap());
    // The session ended with the registration.
    assert!(accounts.uiaa().finish(&session).is_none());
}

#[test]
fn abandoned_and_expired_sessions_give_their_token_use_back() {
    let accounts = accounts();
    let tokens = accounts.registration_tokens();
    tokens
        .create(NewRegistrationToken {
            token: Some("a".to_owned()),
            ..Default::default()
        })
        .unwrap();
    tokens
        .create(NewRegistrationToken {
            token: Some("b".to_owned()),
            ..Default::default()
        })
        .unwrap();
    let flows = vec![vec!["m.login.registration_token".to_owned()]];
    let pending = |token: &str| tokens.get(token).unwrap().unwrap().pending;

    let first = accounts
        .uiaa_start(flows.clone(), json!({}), None, "POST /register")
        .unwrap();
    accounts
        .uiaa_reserve_registration_token(&first, "a")
        .unwrap();
    // Switching tokens gives the first one back.
    accounts
        .uiaa_reserve_registration_token(&first, "b")
        .unwrap();
    assert_eq!((pending("a"), pending("b")), (0, 1));
    accounts.uiaa_abandon(&first).unwrap();
    assert_eq!(pending("b"), 0);

    let second = accounts
        .uiaa_start(flows, json!({}), None, "POST /register")
        .unwrap();
    accounts
        .uiaa_reserve_registration_token(&second, "a")
        .unwrap();
    assert_eq!(pending("a"), 1);
    assert_eq!(accounts.prune_uiaa_sessions(Instant::now()).unwrap(), 0);
    let later = Instant::now() + super::uiaa::DEFAULT_SESSION_TTL;
    assert_eq!(accounts.prune_uiaa_sessions(later).unwrap(), 1);
    assert_eq!(pending("a"), 0);
    assert!(accounts.uiaa().is_empty());
    assert!(matches!(
        accounts.uiaa_reserve_registration_token(&second, "a"),
        Err(AccountError::UiaaSessionUnknown)
    ));
    assert_eq!(pending("a"), 0);
    assert_eq!(
        accounts
            .uiaa()
            .get_data(&second, UIAA_REGISTRATION_TOKEN, Instant::now())
            .ok(),
        None
    );
}

#[test]
fn last_seen_is_recorded_through_the_service() {
    let accounts = accounts();
    let alice = accounts
        .register(RegisterRequest::user("alice", None))
        .unwrap();
    let session = accounts.login(LoginRequest::new(&alice)).unwrap();
    accounts
        .record_last_seen(&alice, &session.device_id, IP)
        .unwrap();
    let device = accounts
        .device(&alice, &session.device_id)
        .unwrap()
        .unwrap();
    assert_eq!(device.last_seen_ip.as_deref(), Some("192.0.2.1"));
    assert!(device.last_seen_ts.is_some());
}
