//! Tests of the sessions module.

use super::*;
use crate::accounts::AccountsLock;
use crate::accounts::test_support::{register_user, settings};
use crate::storage::{MemoryStore, catalogue};

/// Asserts the counter matches the table.
fn assert_token_count(store: &MemoryStore, expected: u64) {
    assert_eq!(count_active_access_tokens(store).unwrap(), expected);
    assert_eq!(ACCESS_TOKENS.count(store).unwrap(), expected);
}

#[test]
fn login_creates_a_device_and_a_working_token() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let settings = settings();
    let user = register_user(&store, &guard, "alice");
    let mut request = LoginRequest::new(&user);
    request.initial_display_name = Some("Laptop".to_owned());
    let tokens = login(&store, &guard, &settings, request, 1_000).unwrap();
    assert!(tokens.access_token.starts_with("axa_"));
    assert_eq!(
        (tokens.refresh_token.as_ref(), tokens.expires_in),
        (None, None)
    );
    let device = devices::get(&store, &user, &tokens.device_id)
        .unwrap()
        .unwrap();
    assert_eq!(device.display_name.as_deref(), Some("Laptop"));
    assert_eq!(device.created_at_ms, 1_000);
    assert_eq!(
        authenticate(&store, &tokens.access_token, u64::MAX).unwrap(),
        AuthenticatedUser {
            user_id: user.clone(),
            device_id: tokens.device_id.clone(),
            is_guest: false,
            is_admin: false
        }
    );
    assert!(matches!(
        authenticate(&store, "axa_bogus", 0),
        Err(AccountError::UnknownToken)
    ));
    assert_token_count(&store, 1);
    // Debug output never shows the secrets.
    assert!(!format!("{tokens:?}").contains(&tokens.access_token));

    let nobody: OwnedUserId = "@nobody:example.org".try_into().unwrap();
    assert!(matches!(
        login(&store, &guard, &settings, LoginRequest::new(&nobody), 0),
        Err(AccountError::UserNotFound)
    ));
}

#[test]
fn tokens_are_stored_only_as_hashes() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let settings = settings();
    let user = register_user(&store, &guard, "alice");
    let tokens = login(
        &store,
        &guard,
        &settings,
        LoginRequest::new(&user).refresh(),
        0,
    )
    .unwrap();
    let login_token =
        create_login_token(&store, &guard, &user, Duration::from_secs(60), 0).unwrap();
    let secrets = [
        tokens.access_token.clone(),
        tokens.refresh_token.clone().unwrap(),
        login_token,
    ];
    let mut rows = 0;
    for cf in catalogue::ALL {
        for entry in store.iter(cf, KeyRange::all(), Direction::Forward).unwrap() {
            let (key, value) = entry.unwrap();
            rows += 1;
            for secret in &secrets {
                // The random part alone must not appear either.
                let body = &secret.as_bytes()[4..];
                for haystack in [&key, &value] {
                    assert!(
                        !haystack.windows(body.len()).any(|window| window == body),
                        "token found in column family {}",
                        cf.name
                    );
                }
            }
        }
    }
    assert!(rows >= 5, "the scan saw the rows: {rows}");
    assert!(
        ACCESS_TOKENS
            .contains(&store, &TokenHash::of(&tokens.access_token))
            .unwrap()
    );
}

#[test]
fn reusing_a_device_id_replaces_its_tokens() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let settings = settings();
    let user = register_user(&store, &guard, "alice");
    let mut first_request = LoginRequest::new(&user).device("PHONE").refresh();
    first_request.initial_display_name = Some("Phone".to_owned());
    let first = login(&store, &guard, &settings, first_request, 0).unwrap();
    assert_eq!(first.device_id.as_str(), "PHONE");
    let mut second_request = LoginRequest::new(&user).device("PHONE");
    second_request.initial_display_name = Some("Ignored".to_owned());
    let second = login(&store, &guard, &settings, second_request, 0).unwrap();
    assert!(matches!(
        authenticate(&store, &first.access_token, 0),
        Err(AccountError::UnknownToken)
    ));
    assert!(matches!(
        refresh(
            &store,
            &guard,
            &settings,
            first.refresh_token.as_deref().unwrap(),
            0
        ),
        Err(AccountError::UnknownToken)
    ));
    authenticate(&store, &second.access_token, 0).unwrap();
    let devices = devices::list(&store, &user).unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].1.display_name.as_deref(), Some("Phone"));
    assert_token_count(&store, 1);
    assert_eq!(REFRESH_TOKENS.count(&store).unwrap(), 0);
}

#[test]
fn access_tokens_expire_when_configured() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let mut settings = settings();
    settings.access_token_lifetime = Some(Duration::from_secs(60));
    let user = register_user(&store, &guard, "alice");
    let tokens = login(&store, &guard, &settings, LoginRequest::new(&user), 1_000).unwrap();
    assert_eq!(tokens.expires_in, Some(Duration::from_secs(60)));
    authenticate(&store, &tokens.access_token, 60_999).unwrap();
    assert!(matches!(
        authenticate(&store, &tokens.access_token, 61_000),
        Err(AccountError::TokenExpired)
    ));
}

#[test]
fn refresh_rotates_both_tokens_strictly() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let settings = settings();
    let user = register_user(&store, &guard, "alice");
    let first = login(
        &store,
        &guard,
        &settings,
        LoginRequest::new(&user).refresh(),
        0,
    )
    .unwrap();
    assert_eq!(first.expires_in, Some(Duration::from_secs(300)));
    let first_refresh = first.refresh_token.clone().unwrap();
    assert!(first_refresh.starts_with("axr_"));
    // Past its lifetime the access token is a soft logout...
    assert!(matches!(
        authenticate(&store, &first.access_token, 300_000),
        Err(AccountError::TokenExpired)
    ));
    // ...and the refresh token brings the session back.
    let second = refresh(&store, &guard, &settings, &first_refresh, 300_000).unwrap();
    assert_eq!(second.device_id, first.device_id);
    assert_ne!(second.access_token, first.access_token);
    let second_refresh = second.refresh_token.clone().unwrap();
    assert_ne!(second_refresh, first_refresh);
    authenticate(&store, &second.access_token, 300_001).unwrap();
    assert!(matches!(
        authenticate(&store, &first.access_token, 0),
        Err(AccountError::UnknownToken)
    ));
    // The old refresh token works once only.
    assert!(matches!(
        refresh(&store, &guard, &settings, &first_refresh, 300_000),
        Err(AccountError::UnknownToken)
    ));
    // An access token is not a refresh token.
    assert!(matches!(
        refresh(&store, &guard, &settings, &second.access_token, 300_000),
        Err(AccountError::UnknownToken)
    ));
    refresh(&store, &guard, &settings, &second_refresh, 300_000).unwrap();
    assert_token_count(&store, 1);
    assert_eq!(REFRESH_TOKENS.count(&store).unwrap(), 1);
}

#[test]
fn logout_and_logout_all() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let settings = settings();
    let alice = register_user(&store, &guard, "alice");
    let bob = register_user(&store, &guard, "bob");
    let a1 = login(&store, &guard, &settings, LoginRequest::new(&alice), 0).unwrap();
    let a2 = login(
        &store,
        &guard,
        &settings,
        LoginRequest::new(&alice).refresh(),
        0,
    )
    .unwrap();
    let a3 = login(&store, &guard, &settings, LoginRequest::new(&alice), 0).unwrap();
    let b1 = login(&store, &guard, &settings, LoginRequest::new(&bob), 0).unwrap();
    assert_token_count(&store, 4);

    logout(&store, &guard, &alice, &a1.device_id).unwrap();
    assert!(matches!(
        authenticate(&store, &a1.access_token, 0),
        Err(AccountError::UnknownToken)
    ));
    assert!(
        devices::get(&store, &alice, &a1.device_id)
            .unwrap()
            .is_none()
    );
    // Logging out a vanished device is fine.
    logout(&store, &guard, &alice, &a1.device_id).unwrap();
    assert_token_count(&store, 3);

    assert_eq!(logout_all(&store, &guard, &alice).unwrap(), 2);
    for token in [&a2.access_token, &a3.access_token] {
        assert!(matches!(
            authenticate(&store, token, 0),
            Err(AccountError::UnknownToken)
        ));
    }
    assert!(matches!(
        refresh(
            &store,
            &guard,
            &settings,
            a2.refresh_token.as_deref().unwrap(),
            0
        ),
        Err(AccountError::UnknownToken)
    ));
    authenticate(&store, &b1.access_token, 0).unwrap();
    assert!(devices::list(&store, &alice).unwrap().is_empty());
    assert_token_count(&store, 1);
}

#[test]
fn login_tokens_work_once_and_expire() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let user = register_user(&store, &guard, "alice");
    let ttl = Duration::from_secs(120);
    let token = create_login_token(&store, &guard, &user, ttl, 0).unwrap();
    assert!(token.starts_with("axl_"));
    assert_eq!(
        consume_login_token(&store, &guard, &token, 119_999).unwrap(),
        user
    );
    assert!(matches!(
        consume_login_token(&store, &guard, &token, 0),
        Err(AccountError::UnknownToken)
    ));

    let expired = create_login_token(&store, &guard, &user, ttl, 0).unwrap();
    assert!(matches!(
        consume_login_token(&store, &guard, &expired, 120_000),
        Err(AccountError::UnknownToken)
    ));
    // The failed attempt consumed it too.
    assert_eq!(LOGIN_TOKENS.count(&store).unwrap(), 0);
}

#[test]
fn purge_removes_only_expired_login_tokens() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let user = register_user(&store, &guard, "alice");
    create_login_token(&store, &guard, &user, Duration::from_secs(1), 0).unwrap();
    create_login_token(&store, &guard, &user, Duration::from_secs(1), 0).unwrap();
    let live = create_login_token(&store, &guard, &user, Duration::from_secs(10), 0).unwrap();
    assert_eq!(
        purge_expired_login_tokens(&store, &guard, 1_000).unwrap(),
        2
    );
    assert_eq!(
        purge_expired_login_tokens(&store, &guard, 1_000).unwrap(),
        0
    );
    assert_eq!(
        consume_login_token(&store, &guard, &live, 1_000).unwrap(),
        user
    );
}

#[test]
fn guest_tokens_say_so() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let settings = settings();
    let guest = users::register(
        &store,
        &guard,
        &settings,
        users::RegisterRequest::guest(),
        0,
    )
    .unwrap();
    let tokens = login(&store, &guard, &settings, LoginRequest::new(&guest), 0).unwrap();
    assert!(
        authenticate(&store, &tokens.access_token, 0)
            .unwrap()
            .is_guest
    );
}
