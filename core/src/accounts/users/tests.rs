//! Tests of the users module.

use super::*;
use crate::accounts::AccountsLock;
use crate::accounts::registration_tokens::{self, NewRegistrationToken};
use crate::accounts::test_support::{register_user, settings};
use crate::storage::MemoryStore;

fn server() -> ruma::OwnedServerName {
    "example.org".try_into().unwrap()
}

fn reason(result: Result<OwnedUserId, AccountError>) -> String {
    match result {
        Err(AccountError::InvalidUsername(reason)) => reason,
        other => panic!("expected InvalidUsername, got {other:?}"),
    }
}

#[test]
fn localpart_grammar() {
    let user = RegisterKind::User;
    for ok in ["alice", "a.b_c=d-e/f+g", "0a", "x"] {
        let id = validate_localpart(&server(), ok, &user).unwrap();
        assert_eq!(id.localpart(), ok);
    }
    assert!(reason(validate_localpart(&server(), "", &user)).contains("empty"));
    assert!(reason(validate_localpart(&server(), "Alice", &user)).contains("upper-case"));
    for bad in ["al ice", "al:ice", "alice!", "é", "a#b", "a\0"] {
        assert!(
            reason(validate_localpart(&server(), bad, &user)).contains("only contain"),
            "{bad:?}"
        );
    }
}

#[test]
fn reserved_shapes() {
    let appservice = RegisterKind::AppService {
        id: "irc".to_owned(),
    };
    assert!(
        reason(validate_localpart(
            &server(),
            "_irc_bob",
            &RegisterKind::User
        ))
        .contains("reserved")
    );
    validate_localpart(&server(), "_irc_bob", &appservice).unwrap();
    assert!(reason(validate_localpart(&server(), "12345", &RegisterKind::User)).contains("guest"));
    assert!(reason(validate_localpart(&server(), "12345", &appservice)).contains("guest"));
    validate_localpart(&server(), "12345", &RegisterKind::Guest).unwrap();
    validate_localpart(&server(), "12345a", &RegisterKind::User).unwrap();
}

#[test]
fn user_id_is_at_most_255_bytes() {
    // "@" + localpart + ":example.org" (12 bytes).
    let longest = "a".repeat(MAX_USER_ID_BYTES - 1 - 12);
    let id = validate_localpart(&server(), &longest, &RegisterKind::User).unwrap();
    assert_eq!(id.as_str().len(), 255);
    let too_long = "a".repeat(MAX_USER_ID_BYTES - 12);
    assert!(
        reason(validate_localpart(
            &server(),
            &too_long,
            &RegisterKind::User
        ))
        .contains("255")
    );
}

#[test]
fn register_then_duplicate_is_in_use() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let settings = settings();
    assert!(is_available(&store, &settings, "alice").unwrap());
    let request = RegisterRequest {
        admin: true,
        ..RegisterRequest::user("alice", Some("$hash".to_owned()))
    };
    let user = register(&store, &guard, &settings, request, 1234).unwrap();
    assert_eq!(user.as_str(), "@alice:example.org");
    let record = get(&store, &user).unwrap().unwrap();
    assert_eq!(record.password_hash.as_deref(), Some("$hash"));
    assert_eq!(record.created_at_ms, 1234);
    assert!(record.is_admin && !record.is_guest && !record.deactivated);
    // The display name defaults to the localpart.
    assert_eq!(record.displayname.as_deref(), Some("alice"));

    assert!(!is_available(&store, &settings, "alice").unwrap());
    assert!(matches!(
        register(
            &store,
            &guard,
            &settings,
            RegisterRequest::user("alice", None),
            0
        ),
        Err(AccountError::UserInUse)
    ));
    assert!(matches!(
        is_available(&store, &settings, "Alice"),
        Err(AccountError::InvalidUsername(_))
    ));
    assert_eq!(
        count_users(&store).unwrap(),
        UserCounts {
            total: 1,
            guests: 0,
            deactivated: 0
        }
    );
}

#[test]
fn guests_and_unnamed_users_get_numeric_ids() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let settings = settings();
    let guest = register(&store, &guard, &settings, RegisterRequest::guest(), 0).unwrap();
    assert!(
        guest.localpart().bytes().all(|b| b.is_ascii_digit()),
        "{guest}"
    );
    assert!(get(&store, &guest).unwrap().unwrap().is_guest);
    let unnamed = RegisterRequest {
        localpart: None,
        ..RegisterRequest::user("", None)
    };
    let user = register(&store, &guard, &settings, unnamed, 0).unwrap();
    assert!(
        user.localpart().bytes().all(|b| b.is_ascii_digit()),
        "{user}"
    );
    assert!(!get(&store, &user).unwrap().unwrap().is_guest);
    assert_eq!(
        count_users(&store).unwrap(),
        UserCounts {
            total: 2,
            guests: 1,
            deactivated: 0
        }
    );
}

#[test]
fn appservice_users_record_their_appservice() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let request = RegisterRequest {
        kind: RegisterKind::AppService {
            id: "irc".to_owned(),
        },
        displayname: Some("IRC Bob".to_owned()),
        ..RegisterRequest::user("_irc_bob", None)
    };
    let user = register(&store, &guard, &settings(), request, 0).unwrap();
    let record = get(&store, &user).unwrap().unwrap();
    assert_eq!(record.appservice_id.as_deref(), Some("irc"));
    assert_eq!(record.displayname.as_deref(), Some("IRC Bob"));
}

#[test]
fn registration_completes_its_token_in_the_same_batch() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let new = NewRegistrationToken {
        token: Some("tok".to_owned()),
        uses_allowed: Some(1),
        ..Default::default()
    };
    registration_tokens::create(&store, &guard, new, 0).unwrap();
    registration_tokens::reserve(&store, &guard, "tok", 0).unwrap();
    let request = RegisterRequest {
        registration_token: Some("tok".to_owned()),
        ..RegisterRequest::user("bob", None)
    };
    register(&store, &guard, &settings(), request, 0).unwrap();
    let token = registration_tokens::get(&store, "tok").unwrap().unwrap();
    assert_eq!((token.pending, token.completed), (0, 1));
    // A failed registration leaves the token untouched.
    registration_tokens::update(
        &store,
        &guard,
        "tok",
        registration_tokens::RegistrationTokenUpdate {
            uses_allowed: Some(None),
            expiry_time: None,
        },
        0,
    )
    .unwrap();
    registration_tokens::reserve(&store, &guard, "tok", 0).unwrap();
    let duplicate = RegisterRequest {
        registration_token: Some("tok".to_owned()),
        ..RegisterRequest::user("bob", None)
    };
    assert!(register(&store, &guard, &settings(), duplicate, 0).is_err());
    let token = registration_tokens::get(&store, "tok").unwrap().unwrap();
    assert_eq!((token.pending, token.completed), (1, 1));
}

#[test]
fn login_identifiers() {
    let settings = settings();
    let alice: OwnedUserId = "@alice:example.org".try_into().unwrap();
    assert_eq!(parse_login_user(&settings, "alice").unwrap(), alice);
    assert_eq!(parse_login_user(&settings, "Alice").unwrap(), alice);
    assert_eq!(
        parse_login_user(&settings, "@alice:example.org").unwrap(),
        alice
    );
    assert_eq!(
        parse_login_user(&settings, "@ALICE:Example.org")
            .unwrap()
            .localpart(),
        "alice"
    );
    assert!(matches!(
        parse_login_user(&settings, "@alice:other.org"),
        Err(AccountError::InvalidPassword)
    ));
    assert!(matches!(
        parse_login_user(&settings, "@nonsense"),
        Err(AccountError::InvalidPassword)
    ));
}

#[test]
fn profile_updates() {
    let store = MemoryStore::new();
    let lock = AccountsLock::new();
    let guard = lock.lock();
    let user = register_user(&store, &guard, "alice");
    set_displayname(&store, &guard, &user, Some("Alice".to_owned())).unwrap();
    set_avatar_url(
        &store,
        &guard,
        &user,
        Some("mxc://example.org/a".to_owned()),
    )
    .unwrap();
    assert_eq!(
        profile(&store, &user).unwrap(),
        Profile {
            displayname: Some("Alice".to_owned()),
            avatar_url: Some("mxc://example.org/a".to_owned())
        }
    );
    set_displayname(&store, &guard, &user, None).unwrap();
    assert_eq!(profile(&store, &user).unwrap().displayname, None);
    set_admin(&store, &guard, &user, true).unwrap();
    assert!(get(&store, &user).unwrap().unwrap().is_admin);
    let nobody: OwnedUserId = "@nobody:example.org".try_into().unwrap();
    assert!(matches!(
        profile(&store, &nobody),
        Err(AccountError::UserNotFound)
    ));
    assert!(matches!(
        set_displayname(&store, &guard, &nobody, None),
        Err(AccountError::UserNotFound)
    ));
}

#[test]
fn records_from_older_versions_stay_readable_and_debug_hides_the_hash() {
    let record: UserRecord =
        serde_json::from_str(r#"{"password_hash":"$x","created_at_ms":5}"#).unwrap();
    assert_eq!(record.created_at_ms, 5);
    assert!(!record.is_admin && record.displayname.is_none());
    let debug = format!("{record:?}");
    assert!(
        !debug.contains("$x") && debug.contains("has_password: true"),
        "{debug}"
    );
}
