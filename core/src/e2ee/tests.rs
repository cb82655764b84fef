//! Tests of the E2EE service on the in-memory store, with real ed25519 signatures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ruma::events::StateEventType;
use ruma::serde::Raw;
use ruma::signatures::Ed25519KeyPair;
use ruma::{
    CanonicalJsonObject, DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId,
    OwnedRoomId, OwnedUserId, RoomId, UInt, UserId, server_name,
};
use serde_json::{Value, json};

use super::keys::to_raw;
use super::verify::test_keys::{key_pair, public, sign};
use super::*;
use crate::keys::ServerKeys;
use crate::rooms::graph::{CreateRoom, NewEvent, RoomPreset, Rooms, StreamPosition};
use crate::rooms::room_version::RoomVersion;
use crate::storage::MemoryStore;

struct Harness {
    rooms: Rooms,
    e2ee: E2ee,
    _key_dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let store: Arc<dyn KvStore> = Arc::new(MemoryStore::new());
        let key_dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(
            ServerKeys::load_or_create(key_dir.path(), server_name!("example.org")).unwrap(),
        );
        let rooms = Rooms::new(Arc::clone(&store), keys).unwrap();
        let e2ee = E2ee::new(store, rooms.subscribe());
        Self {
            rooms,
            e2ee,
            _key_dir: key_dir,
        }
    }

    fn room(&self, creator: &UserId, encrypted: bool) -> OwnedRoomId {
        let version = RoomVersion::new(&ruma::RoomVersionId::V11).unwrap();
        let mut request = CreateRoom::new(creator.to_owned(), version);
        request.preset = RoomPreset::PublicChat;
        let room = self.rooms.create_room(request).unwrap();
        if encrypted {
            self.state(
                &room,
                creator,
                StateEventType::RoomEncryption,
                "",
                json!({"algorithm": "m.megolm.v1.aes-sha2"}),
            );
        }
        room
    }

    fn state(
        &self,
        room: &RoomId,
        sender: &UserId,
        kind: StateEventType,
        key: &str,
        content: Value,
    ) {
        let event = NewEvent::state(
            room.to_owned(),
            sender.to_owned(),
            kind,
            key,
            serde_json::from_value(content).unwrap(),
        );
        let guard = self.rooms.locks().try_lock(room).unwrap();
        self.rooms.append_local(&guard, event).unwrap();
    }

    fn membership(&self, room: &RoomId, user: &UserId, membership: &str) {
        self.state(
            room,
            user,
            StateEventType::RoomMember,
            user.as_str(),
            json!({ "membership": membership }),
        );
    }

    fn now(&self) -> StreamPosition {
        self.rooms.current_stream_position()
    }

    /// Uploads signed device keys for `device`; returns its key pair.
    fn upload_device(&self, user: &UserId, device: &str) -> Ed25519KeyPair {
        let pair = key_pair(device);
        let upload = KeyUpload {
            device_keys: Some(device_keys(user, device, &pair)),
            ..KeyUpload::default()
        };
        self.e2ee
            .upload_keys(&self.rooms, user, device.into(), upload)
            .unwrap();
        pair
    }
}

fn user(id: &str) -> OwnedUserId {
    OwnedUserId::try_from(id).unwrap()
}

fn object(value: Value) -> CanonicalJsonObject {
    serde_json::from_value(value).unwrap()
}

fn device_keys<T>(user: &UserId, device: &str, pair: &Ed25519KeyPair) -> Raw<T> {
    let mut keys = object(json!({
        "user_id": user,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("ed25519:{device}"): public(pair),
            format!("curve25519:{device}"): "Y3VydmU",
        },
    }));
    sign(&mut keys, user, &format!("ed25519:{device}"), pair);
    to_raw(&keys)
}

fn signed_key<T>(
    user: &UserId,
    device: &str,
    pair: &Ed25519KeyPair,
    key: &str,
    fallback: bool,
) -> Raw<T> {
    let mut value = object(json!({ "key": key }));
    if fallback {
        value.insert("fallback".to_owned(), ruma::CanonicalJsonValue::Bool(true));
    }
    sign(&mut value, user, &format!("ed25519:{device}"), pair);
    to_raw(&value)
}

fn otk_id(name: &str) -> OwnedOneTimeKeyId {
    OwnedOneTimeKeyId::try_from(format!("signed_curve25519:{name}")).unwrap()
}

fn claim_one(e2ee: &E2ee, user: &UserId, device: &DeviceId) -> Option<String> {
    let mut claims = KeyClaims::new();
    claims
        .entry(user.to_owned())
        .or_default()
        .insert(device.to_owned(), OneTimeKeyAlgorithm::SignedCurve25519);
    let claimed = e2ee.claim_keys(&claims).unwrap();
    claimed
        .get(user)
        .and_then(|devices| devices.get(device))
        .and_then(|keys| keys.keys().next())
        .map(|id| id.key_name().as_str().to_owned())
}

#[test]
fn device_keys_must_belong_to_the_uploader_and_be_self_signed() {
    let h = Harness::new();
    let alice = user("@alice:example.org");
    let pair = key_pair("DEV");
    let other = key_pair("DEV");

    let upload = |raw| KeyUpload {
        device_keys: Some(raw),
        ..KeyUpload::default()
    };
    // Another device's keys.
    let result = h.e2ee.upload_keys(
        &h.rooms,
        &alice,
        "OTHER".into(),
        upload(device_keys(&alice, "DEV", &pair)),
    );
    assert!(
        matches!(result, Err(E2eeError::InvalidParam(_))),
        "{result:?}"
    );
    // Signed by a key that is not the one in the keys.
    let mut forged: CanonicalJsonObject =
        serde_json::from_str(device_keys::<Value>(&alice, "DEV", &pair).json().get()).unwrap();
    forged.remove("signatures");
    sign(&mut forged, &alice, "ed25519:DEV", &other);
    let result = h
        .e2ee
        .upload_keys(&h.rooms, &alice, "DEV".into(), upload(to_raw(&forged)));
    assert!(
        matches!(result, Err(E2eeError::InvalidSignature(_))),
        "{result:?}"
    );

    let before = h.now();
    h.e2ee
        .upload_keys(
            &h.rooms,
            &alice,
            "DEV".into(),
            upload(device_keys(&alice, "DEV", &pair)),
        )
        .unwrap();
    assert!(h.now() > before, "a new device announces a change");
    // The same keys again change nothing.
    let before = h.now();
    h.e2ee
        .upload_keys(
            &h.rooms,
            &alice,
            "DEV".into(),
            upload(device_keys(&alice, "DEV", &pair)),
        )
        .unwrap();
    assert_eq!(h.now(), before);
}

#[test]
fn each_one_time_key_is_claimed_once_even_by_concurrent_claims() {
    let h = Arc::new(Harness::new());
    let bob = user("@bob:example.org");
    let pair = h.upload_device(&bob, "BOBDEV");
    let mut upload = KeyUpload::default();
    for index in 0..20 {
        upload.one_time_keys.insert(
            otk_id(&format!("k{index:02}")),
            signed_key(&bob, "BOBDEV", &pair, &format!("key{index}"), false),
        );
    }
    let counts = h
        .e2ee
        .upload_keys(&h.rooms, &bob, "BOBDEV".into(), upload)
        .unwrap();
    assert_eq!(
        counts[&OneTimeKeyAlgorithm::SignedCurve25519],
        UInt::from(20_u32)
    );

    let threads: Vec<_> = (0..4)
        .map(|_| {
            let h = Arc::clone(&h);
            let bob = bob.clone();
            std::thread::spawn(move || {
                (0..8)
                    .filter_map(|_| claim_one(&h.e2ee, &bob, "BOBDEV".into()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let claimed: Vec<String> = threads
        .into_iter()
        .flat_map(|thread| thread.join().unwrap())
        .collect();
    // 32 claims for 20 keys and no fallback key: 20 answers, all different.
    assert_eq!(claimed.len(), 20, "{claimed:?}");
    assert_eq!(claimed.iter().collect::<BTreeSet<_>>().len(), 20);
    let counts = h.e2ee.one_time_key_counts(&bob, "BOBDEV".into()).unwrap();
    assert_eq!(counts[&OneTimeKeyAlgorithm::SignedCurve25519], UInt::MIN);
}

#[test]
fn the_fallback_key_is_used_when_one_time_keys_run_out() {
    let h = Harness::new();
    let bob = user("@bob:example.org");
    let device: &DeviceId = "BOBDEV".into();
    let pair = h.upload_device(&bob, "BOBDEV");
    let mut upload = KeyUpload::default();
    upload.one_time_keys.insert(
        otk_id("one"),
        signed_key(&bob, "BOBDEV", &pair, "k1", false),
    );
    upload
        .fallback_keys
        .insert(otk_id("fb"), signed_key(&bob, "BOBDEV", &pair, "f1", true));
    h.e2ee.upload_keys(&h.rooms, &bob, device, upload).unwrap();
    assert_eq!(
        h.e2ee.unused_fallback_key_types(&bob, device).unwrap(),
        vec![OneTimeKeyAlgorithm::SignedCurve25519]
    );

    assert_eq!(claim_one(&h.e2ee, &bob, device).as_deref(), Some("one"));
    assert_eq!(claim_one(&h.e2ee, &bob, device).as_deref(), Some("fb"));
    // The fallback key is handed out again, and is now marked used.
    assert_eq!(claim_one(&h.e2ee, &bob, device).as_deref(), Some("fb"));
    assert!(
        h.e2ee
            .unused_fallback_key_types(&bob, device)
            .unwrap()
            .is_empty()
    );

    // Uploading the same fallback key again keeps it used; a new one is unused.
    let mut same = KeyUpload::default();
    same.fallback_keys
        .insert(otk_id("fb"), signed_key(&bob, "BOBDEV", &pair, "f1", true));
    h.e2ee.upload_keys(&h.rooms, &bob, device, same).unwrap();
    assert!(
        h.e2ee
            .unused_fallback_key_types(&bob, device)
            .unwrap()
            .is_empty()
    );
    let mut new = KeyUpload::default();
    new.fallback_keys
        .insert(otk_id("fb2"), signed_key(&bob, "BOBDEV", &pair, "f2", true));
    h.e2ee.upload_keys(&h.rooms, &bob, device, new).unwrap();
    assert_eq!(
        h.e2ee
            .unused_fallback_key_types(&bob, device)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(claim_one(&h.e2ee, &bob, device).as_deref(), Some("fb2"));
}

#[test]
fn one_time_keys_are_checked() {
    let h = Harness::new();
    let bob = user("@bob:example.org");
    let device: &DeviceId = "BOBDEV".into();
    let pair = h.upload_device(&bob, "BOBDEV");
    let stranger = key_pair("BOBDEV");
    let mut bad = KeyUpload::default();
    bad.one_time_keys.insert(
        otk_id("x"),
        signed_key(&bob, "BOBDEV", &stranger, "k", false),
    );
    assert!(matches!(
        h.e2ee.upload_keys(&h.rooms, &bob, device, bad),
        Err(E2eeError::InvalidSignature(_))
    ));
    let mut good = KeyUpload::default();
    good.one_time_keys
        .insert(otk_id("x"), signed_key(&bob, "BOBDEV", &pair, "k", false));
    h.e2ee.upload_keys(&h.rooms, &bob, device, good).unwrap();
    // The same id with other content is refused.
    let mut clash = KeyUpload::default();
    clash.one_time_keys.insert(
        otk_id("x"),
        signed_key(&bob, "BOBDEV", &pair, "other", false),
    );
    assert!(matches!(
        h.e2ee.upload_keys(&h.rooms, &bob, device, clash),
        Err(E2eeError::InvalidParam(_))
    ));
}

#[test]
fn backup_keys_follow_the_replacement_rules() {
    let rank = |is_verified, first_message_index, forwarded_count| KeyRank {
        is_verified,
        first_message_index,
        forwarded_count,
    };
    // (new, stored, replaces)
    let table = [
        (rank(true, 10, 5), rank(false, 0, 0), true),
        (rank(false, 0, 0), rank(true, 10, 5), false),
        (rank(false, 3, 9), rank(false, 4, 0), true),
        (rank(false, 5, 0), rank(false, 4, 9), false),
        (rank(true, 4, 1), rank(true, 4, 2), true),
        (rank(true, 4, 2), rank(true, 4, 1), false),
        (rank(true, 4, 1), rank(true, 4, 1), false),
    ];
    for (new, stored, replaces) in table {
        assert_eq!(new.replaces(&stored), replaces, "{new:?} over {stored:?}");
    }

    let h = Harness::new();
    let alice = user("@alice:example.org");
    let room: OwnedRoomId = "!room:example.org".try_into().unwrap();
    let data = |verified: bool, index: u64, forwarded: u64, tag: &str| {
        json!({
            "first_message_index": index,
            "forwarded_count": forwarded,
            "is_verified": verified,
            "session_data": {"ephemeral": "e", "ciphertext": tag, "mac": "m"},
        })
    };
    let put = |version: &str, value: Value| {
        let mut keys = BackupKeys::new();
        keys.entry(room.clone())
            .or_default()
            .insert("session".to_owned(), value);
        h.e2ee.put_backup_keys(&alice, version, keys)
    };
    assert!(matches!(
        put("1", data(false, 0, 0, "a")),
        Err(E2eeError::WrongBackupVersion { current: None, .. })
    ));
    let v1 = h
        .e2ee
        .create_backup_version(&alice, json!({"algorithm": "x", "auth_data": {}}))
        .unwrap();
    let first = put(&v1, data(false, 5, 0, "first")).unwrap();
    assert_eq!(first.count, 1);
    // Worse: kept out, the etag does not move.
    let worse = put(&v1, data(false, 6, 0, "worse")).unwrap();
    assert_eq!(worse, first);
    // Better: replaces, same count, new etag.
    let better = put(&v1, data(true, 9, 9, "better")).unwrap();
    assert_eq!(better.count, 1);
    assert_ne!(better.etag, first.etag);
    let stored = h
        .e2ee
        .backup_keys(&alice, &v1, BackupScope::Session(&room, "session"))
        .unwrap();
    assert_eq!(
        stored[&room]["session"]["session_data"]["ciphertext"],
        "better"
    );
    assert!(matches!(
        put(&v1, json!({"is_verified": true})),
        Err(E2eeError::InvalidParam(_))
    ));

    // A new version becomes current: the old one refuses uploads but can be read.
    let v2 = h
        .e2ee
        .create_backup_version(&alice, json!({"algorithm": "x", "auth_data": {}}))
        .unwrap();
    assert_ne!(v1, v2);
    match put(&v1, data(true, 0, 0, "late")) {
        Err(E2eeError::WrongBackupVersion { current, .. }) => assert_eq!(current, Some(v2.clone())),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.e2ee.backup_info(&alice, None).unwrap().version, v2);
    h.e2ee.delete_backup_version(&alice, &v2).unwrap();
    assert_eq!(
        h.e2ee
            .backup_info(&alice, None)
            .map(|info| info.version)
            .ok(),
        None
    );
    // Numbers are never reused.
    let v3 = h
        .e2ee
        .create_backup_version(&alice, json!({"algorithm": "x", "auth_data": {}}))
        .unwrap();
    assert_ne!(v3, v2);
    let deleted = h
        .e2ee
        .delete_backup_keys(&alice, &v1, BackupScope::Room(&room))
        .unwrap();
    assert_eq!(deleted.count, 0);
}

#[test]
fn device_list_changes_follow_shared_rooms() {
    let h = Harness::new();
    let alice = user("@alice:example.org");
    let bob = user("@bob:example.org");
    let carol = user("@carol:example.org");
    let dave = user("@dave:example.org");
    let room = h.room(&alice, true);
    h.membership(&room, &bob, "join");

    let start = h.now();
    h.upload_device(&bob, "BOBDEV");
    h.upload_device(&carol, "CAROLDEV");
    h.upload_device(&alice, "ALICEDEV");
    let changes = h
        .e2ee
        .device_list_changes(&h.rooms, &alice, start, h.now())
        .unwrap();
    assert_eq!(changes.changed, vec![alice.clone(), bob.clone()]);
    assert!(changes.left.is_empty());
    // Nothing in an empty range, nor in a range before the change.
    assert_eq!(
        h.e2ee
            .device_list_changes(&h.rooms, &alice, h.now(), h.now())
            .unwrap(),
        DeviceListChanges::default()
    );

    // Dave joins the encrypted room: alice must fetch his keys, and he all the members'.
    let before_join = h.now();
    h.membership(&room, &dave, "join");
    let changes = h
        .e2ee
        .device_list_changes(&h.rooms, &alice, before_join, h.now())
        .unwrap();
    assert_eq!(changes.changed, vec![dave.clone()]);
    let changes = h
        .e2ee
        .device_list_changes(&h.rooms, &dave, before_join, h.now())
        .unwrap();
    assert_eq!(
        changes.changed,
        vec![alice.clone(), bob.clone(), dave.clone()]
    );

    // A plain room shares nothing new to track.
    let plain = h.room(&carol, false);
    let before_plain = h.now();
    h.membership(&plain, &alice, "join");
    let changes = h
        .e2ee
        .device_list_changes(&h.rooms, &carol, before_plain, h.now())
        .unwrap();
    assert!(changes.changed.is_empty(), "{changes:?}");

    // Bob leaves: alice shares no room with him any more.
    let before_leave = h.now();
    h.membership(&room, &bob, "leave");
    let changes = h
        .e2ee
        .device_list_changes(&h.rooms, &alice, before_leave, h.now())
        .unwrap();
    assert_eq!(changes.left, vec![bob.clone()]);
    // Alice leaves the plain room: carol shares nothing else with her.
    let before = h.now();
    h.membership(&plain, &alice, "leave");
    let changes = h
        .e2ee
        .device_list_changes(&h.rooms, &alice, before, h.now())
        .unwrap();
    assert_eq!(changes.left, vec![carol.clone()]);
    // Changes of users who share nothing are not shown.
    let before = h.now();
    h.upload_device(&bob, "BOBDEV2");
    let changes = h
        .e2ee
        .device_list_changes(&h.rooms, &alice, before, h.now())
        .unwrap();
    assert!(changes.changed.is_empty(), "{changes:?}");
}

#[test]
fn device_list_changes_are_read_in_stream_order_after_a_position() {
    let h = Harness::new();
    let alice = user("@alice:example.org");
    let bob = user("@bob:example.org");
    let start = h.now();
    h.upload_device(&alice, "ALICEDEV");
    let after_alice = h.now();
    h.upload_device(&bob, "BOBDEV");
    h.e2ee.record_device_change(&h.rooms, &alice).unwrap();
    let changes = h.e2ee.device_list_changes_after(start, 10).unwrap();
    let users: Vec<OwnedUserId> = changes.iter().map(|(_, user)| user.clone()).collect();
    assert_eq!(users, vec![alice.clone(), bob.clone(), alice.clone()]);
    assert!(changes.windows(2).all(|pair| pair[0].0 < pair[1].0));
    assert_eq!(changes[0].0, after_alice);
    // Strictly after the position, and no more than the limit.
    let later = h.e2ee.device_list_changes_after(after_alice, 1).unwrap();
    assert_eq!(later, vec![changes[1].clone()]);
    assert!(
        h.e2ee
            .device_list_changes_after(h.now(), 10)
            .unwrap()
            .is_empty()
    );
    // A renamed device shows in the user's stream id and in local syncs.
    assert_eq!(h.e2ee.device_list_stream_id(&alice).unwrap(), h.now());
}

#[test]
fn to_device_messages_are_idempotent_and_deleted_once_acknowledged() {
    let h = Harness::new();
    let alice = user("@alice:example.org");
    let bob = user("@bob:example.org");
    let message = |device: &str| ToDeviceMessage {
        user_id: bob.clone(),
        device_id: device.into(),
        content: serde_json::value::to_raw_value(&json!({"n": 1})).unwrap(),
    };
    let start = h.now();
    let first = h
        .e2ee
        .send_to_device(
            &h.rooms,
            &alice,
            "ADEV".into(),
            "t1",
            "m.test",
            vec![message("B1"), message("B2")],
        )
        .unwrap();
    let SendOutcome::Queued(position) = first else {
        panic!("{first:?}");
    };
    assert_eq!(
        h.e2ee
            .send_to_device(
                &h.rooms,
                &alice,
                "ADEV".into(),
                "t1",
                "m.test",
                vec![message("B1")]
            )
            .unwrap(),
        SendOutcome::Duplicate
    );
    // Another device of the sender may use the same transaction id.
    h.e2ee
        .send_to_device(
            &h.rooms,
            &alice,
            "ADEV2".into(),
            "t1",
            "m.test",
            vec![message("B1")],
        )
        .unwrap();
    assert_eq!(h.e2ee.to_device_pending(), 3);

    let inbox = h
        .e2ee
        .to_device_since(&bob, "B1".into(), start, 10)
        .unwrap();
    assert_eq!(inbox.len(), 2);
    assert_eq!(inbox[0].0, position);
    let event: Value = serde_json::from_str(inbox[0].1.json().get()).unwrap();
    assert_eq!(
        event,
        json!({"sender": alice, "type": "m.test", "content": {"n": 1}})
    );
    assert_eq!(
        h.e2ee
            .to_device_since(&bob, "B1".into(), position, 10)
            .unwrap()
            .len(),
        1
    );

    assert_eq!(
        h.e2ee
            .delete_to_device_up_to(&bob, "B1".into(), position)
            .unwrap(),
        1
    );
    assert_eq!(
        h.e2ee
            .to_device_since(&bob, "B1".into(), start, 10)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        h.e2ee
            .to_device_since(&bob, "B2".into(), start, 10)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(h.e2ee.to_device_pending(), 2);
}

#[test]
fn cross_signing_signatures_are_checked_and_shown() {
    let h = Harness::new();
    let alice = user("@alice:example.org");
    let bob = user("@bob:example.org");
    let device = h.upload_device(&alice, "ADEV");
    let master = key_pair("m");
    let ssk = key_pair("s");
    let usk = key_pair("u");
    let cross_key =
        |pair: &Ed25519KeyPair, owner: &UserId, usage: &str, signer: Option<&Ed25519KeyPair>| {
            let mut key = object(json!({
                "user_id": owner,
                "usage": [usage],
                "keys": { format!("ed25519:{}", public(pair)): public(pair) },
            }));
            if let Some(signer) = signer {
                sign(
                    &mut key,
                    owner,
                    &format!("ed25519:{}", public(signer)),
                    signer,
                );
            }
            key
        };
    // A self-signing key not signed by the master key is refused.
    let upload = CrossSigningUpload {
        master_key: Some(to_raw(&cross_key(&master, &alice, "master", None))),
        self_signing_key: Some(to_raw(&cross_key(&ssk, &alice, "self_signing", Some(&usk)))),
        user_signing_key: None,
    };
    assert!(matches!(
        h.e2ee.upload_cross_signing_keys(&h.rooms, &alice, upload),
        Err(E2eeError::InvalidSignature(_))
    ));
    assert!(!h.e2ee.has_master_key(&alice).unwrap());
    let upload = CrossSigningUpload {
        master_key: Some(to_raw(&cross_key(&master, &alice, "master", None))),
        self_signing_key: Some(to_raw(&cross_key(
            &ssk,
            &alice,
            "self_signing",
            Some(&master),
        ))),
        user_signing_key: Some(to_raw(&cross_key(
            &usk,
            &alice,
            "user_signing",
            Some(&master),
        ))),
    };
    assert!(!h.e2ee.cross_signing_unchanged(&alice, &upload).unwrap());
    h.e2ee
        .upload_cross_signing_keys(&h.rooms, &alice, upload)
        .unwrap();
    assert!(h.e2ee.has_master_key(&alice).unwrap());

    // Bob's master key, for alice's user-signing key to sign.
    let bob_master = key_pair("bm");
    h.e2ee
        .upload_cross_signing_keys(
            &h.rooms,
            &bob,
            CrossSigningUpload {
                master_key: Some(to_raw(&cross_key(&bob_master, &bob, "master", None))),
                ..CrossSigningUpload::default()
            },
        )
        .unwrap();

    // Alice's device signed by her self-signing key; her master key signed by her device;
    // bob's master key signed by her user-signing key; one forged signature.
    let query = |requester: &UserId, target: &UserId| {
        let mut users = BTreeMap::new();
        users.insert(target.to_owned(), Vec::<OwnedDeviceId>::new());
        h.e2ee.query_keys(requester, &users).unwrap()
    };
    let mut alice_device: CanonicalJsonObject = serde_json::from_str(
        query(&alice, &alice).device_keys[&alice]["ADEV"]
            .json()
            .get(),
    )
    .unwrap();
    alice_device.remove("unsigned");
    let mut signed_device = alice_device.clone();
    sign(
        &mut signed_device,
        &alice,
        &format!("ed25519:{}", public(&ssk)),
        &ssk,
    );
    let mut signed_master = cross_key(&master, &alice, "master", None);
    sign(&mut signed_master, &alice, "ed25519:ADEV", &device);
    let mut signed_bob = cross_key(&bob_master, &bob, "master", None);
    sign(
        &mut signed_bob,
        &alice,
        &format!("ed25519:{}", public(&usk)),
        &usk,
    );
    let mut forged_bob = cross_key(&bob_master, &bob, "master", None);
    sign(
        &mut forged_bob,
        &alice,
        &format!("ed25519:{}", public(&usk)),
        &ssk,
    );

    let raw = |object: &CanonicalJsonObject| serde_json::value::to_raw_value(object).unwrap();
    let mut signed = BTreeMap::new();
    signed.insert(
        alice.clone(),
        BTreeMap::from([
            ("ADEV".to_owned(), raw(&signed_device)),
            (public(&master), raw(&signed_master)),
        ]),
    );
    signed.insert(
        bob.clone(),
        BTreeMap::from([(public(&bob_master), raw(&signed_bob))]),
    );
    let failures = h.e2ee.upload_signatures(&h.rooms, &alice, &signed).unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let mut forged = BTreeMap::new();
    forged.insert(
        bob.clone(),
        BTreeMap::from([(public(&bob_master), raw(&forged_bob))]),
    );
    let failures = h.e2ee.upload_signatures(&h.rooms, &alice, &forged).unwrap();
    assert_eq!(
        failures[&bob][&public(&bob_master)]["errcode"],
        "M_INVALID_SIGNATURE"
    );

    let own = query(&alice, &alice);
    let shown: Value = serde_json::from_str(own.device_keys[&alice]["ADEV"].json().get()).unwrap();
    assert!(shown["signatures"][alice.as_str()][format!("ed25519:{}", public(&ssk))].is_string());
    let shown: Value = serde_json::from_str(own.master_keys[&alice].json().get()).unwrap();
    assert!(shown["signatures"][alice.as_str()]["ed25519:ADEV"].is_string());
    assert!(own.user_signing_keys.contains_key(&alice));
    // Alice sees her signature of bob's master key; bob's own query does not show it to
    // anyone but her, and nobody but alice sees her user-signing key.
    let seen_by_alice: Value =
        serde_json::from_str(query(&alice, &bob).master_keys[&bob].json().get()).unwrap();
    assert!(
        seen_by_alice["signatures"][alice.as_str()].is_object(),
        "{seen_by_alice}"
    );
    let seen_by_bob = query(&bob, &alice);
    assert!(seen_by_bob.user_signing_keys.is_empty());
    let carol = user("@carol:example.org");
    let seen_by_carol: Value =
        serde_json::from_str(query(&carol, &bob).master_keys[&bob].json().get()).unwrap();
    assert!(
        seen_by_carol["signatures"].get(alice.as_str()).is_none(),
        "{seen_by_carol}"
    );
}

#[test]
fn every_queried_user_is_in_the_answer_even_without_keys() {
    let h = Harness::new();
    let alice = user("@alice:example.org");
    let bob = user("@bob:example.org");
    h.upload_device(&alice, "ADEV");
    let users = BTreeMap::from([
        (alice.clone(), Vec::<OwnedDeviceId>::new()),
        (bob.clone(), Vec::new()),
    ]);
    let found = h.e2ee.query_keys(&alice, &users).unwrap();
    assert!(found.device_keys[&alice].contains_key("ADEV"));
    assert!(found.device_keys[&bob].is_empty());
    // A device asked for by id that has no keys: the user is there, the device is not.
    let users = BTreeMap::from([(alice.clone(), vec![OwnedDeviceId::from("NOKEYS")])]);
    let found = h.e2ee.query_keys(&bob, &users).unwrap();
    assert!(found.device_keys[&alice].is_empty());
}

#[test]
fn signatures_of_remote_master_keys_are_checked_kept_and_shown_to_their_signer() {
    let h = Harness::new();
    let alice = user("@alice:example.org");
    let bob = user("@bob:remote.example");
    let (master, usk, bob_master) = (key_pair("m"), key_pair("u"), key_pair("bm"));
    let cross_key = |pair: &Ed25519KeyPair, owner: &UserId, usage: &str| {
        object(json!({
            "user_id": owner,
            "usage": [usage],
            "keys": { format!("ed25519:{}", public(pair)): public(pair) },
        }))
    };
    let mut alice_usk = cross_key(&usk, &alice, "user_signing");
    sign(
        &mut alice_usk,
        &alice,
        &format!("ed25519:{}", public(&master)),
        &master,
    );
    h.e2ee
        .upload_cross_signing_keys(
            &h.rooms,
            &alice,
            CrossSigningUpload {
                master_key: Some(to_raw(&cross_key(&master, &alice, "master"))),
                self_signing_key: None,
                user_signing_key: Some(to_raw(&alice_usk)),
            },
        )
        .unwrap();

    // Bob's master key as his server serves it: not stored here.
    let served = cross_key(&bob_master, &bob, "master");
    let mut signed_bob = served.clone();
    let usk_id = format!("ed25519:{}", public(&usk));
    sign(&mut signed_bob, &alice, &usk_id, &usk);
    let upload = BTreeMap::from([(
        bob.clone(),
        BTreeMap::from([(
            public(&bob_master),
            serde_json::value::to_raw_value(&signed_bob).unwrap(),
        )]),
    )]);

    // Without the key from bob's server there is nothing to check the signature against.
    let failures = h.e2ee.upload_signatures(&h.rooms, &alice, &upload).unwrap();
    assert_eq!(
        failures[&bob][&public(&bob_master)]["errcode"],
        "M_NOT_FOUND"
    );

    let before = h.e2ee.device_list_stream_id(&bob).unwrap();
    let remote = BTreeMap::from([(bob.clone(), served.clone())]);
    let failures = h
        .e2ee
        .upload_signatures_with(&h.rooms, &alice, &upload, &remote)
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    // Announced as a change of bob's keys, so alice's clients fetch them again.
    assert!(h.e2ee.device_list_stream_id(&bob).unwrap() > before);

    // A signature by another key than alice's user-signing key is refused.
    let mut forged = served.clone();
    sign(&mut forged, &alice, &usk_id, &master);
    let forged = BTreeMap::from([(
        bob.clone(),
        BTreeMap::from([(
            public(&bob_master),
            serde_json::value::to_raw_value(&forged).unwrap(),
        )]),
    )]);
    let failures = h
        .e2ee
        .upload_signatures_with(&h.rooms, &alice, &forged, &remote)
        .unwrap();
    assert_eq!(
        failures[&bob][&public(&bob_master)]["errcode"],
        "M_INVALID_SIGNATURE"
    );

    // Alice sees her signature on the key bob's server serves; nobody else does.
    let seen = h
        .e2ee
        .with_own_signatures(&alice, &bob, served.clone())
        .unwrap();
    let seen = serde_json::to_value(&seen).unwrap();
    assert!(
        seen["signatures"][alice.as_str()][&usk_id].is_string(),
        "{seen}"
    );
    let carol = user("@carol:example.org");
    let seen = h.e2ee.with_own_signatures(&carol, &bob, served).unwrap();
    assert!(!seen.contains_key("signatures"), "{seen:?}");
}

/// The audience recorded for the single position after `before`.
fn audience_after(h: &Harness, before: StreamPosition) -> crate::rooms::graph::StreamAudience {
    assert_eq!(h.now().0, before.0 + 1, "one position written");
    h.rooms.notifier().audience(before, h.now())
}

fn listed(audience: crate::rooms::graph::Audience) -> crate::rooms::graph::StreamAudience {
    crate::rooms::graph::StreamAudience::Listed(vec![audience])
}

#[test]
fn device_list_changes_concern_the_user_and_its_room_mates() {
    use crate::rooms::graph::Audience;

    let h = Harness::new();
    let alice = user("@alice:example.org");
    let bob = user("@bob:example.org");
    let carol = user("@carol:example.org");
    let room = h.room(&alice, true);
    h.membership(&room, &bob, "join");
    let mates = |user: &OwnedUserId, rooms: Vec<OwnedRoomId>| Audience::UserAndRoomMates {
        user_id: user.clone(),
        rooms,
    };

    // New device keys, a renamed device: bob and everyone joined to his rooms.
    let before = h.now();
    h.upload_device(&bob, "BOBDEV");
    assert_eq!(
        audience_after(&h, before),
        listed(mates(&bob, vec![room.clone()]))
    );
    let before = h.now();
    h.e2ee.record_device_change(&h.rooms, &carol).unwrap();
    assert_eq!(
        audience_after(&h, before),
        listed(mates(&carol, Vec::new()))
    );

    // A remote user's change: the local users sharing a room with them (none here).
    let remote = user("@dan:elsewhere.org");
    let pair = key_pair("DANDEV");
    let before = h.now();
    h.e2ee
        .apply_remote_device_update(
            &h.rooms,
            &remote,
            "DANDEV".into(),
            Some(&device_keys(&remote, "DANDEV", &pair)),
            false,
        )
        .unwrap();
    assert_eq!(
        audience_after(&h, before),
        listed(mates(&remote, Vec::new()))
    );

    // Several users (a signature of another user's key): one is named, the other local ones
    // are reached through their rooms, so each must have one.
    let audience = |users: &[&OwnedUserId]| {
        let users: BTreeSet<OwnedUserId> = users.iter().map(|user| (*user).clone()).collect();
        device_lists::device_list_audience(&h.rooms, &users)
            .unwrap()
            .map(|(audience, _)| audience)
    };
    assert_eq!(
        audience(&[&bob, &alice]),
        Some(mates(&alice, vec![room.clone()]))
    );
    assert_eq!(audience(&[&alice, &carol]), None);
    assert_eq!(
        audience(&[&remote, &carol]),
        Some(mates(&carol, Vec::new()))
    );
    assert_eq!(audience(&[]), None);
}

#[test]
fn a_join_between_reading_the_audience_and_writing_announces_the_change_to_everyone() {
    let h = Harness::new();
    let alice = user("@alice:example.org");
    let carol = user("@carol:example.org");
    let room = h.room(&alice, true);
    let users = BTreeSet::from([carol.clone()]);
    let planned = device_lists::device_list_audience(&h.rooms, &users).unwrap();
    // Carol joins alice's room after her rooms were read: alice may be answered with the join
    // before the change, and the audience does not name the room.
    h.membership(&room, &carol, "join");
    let before = h.now();
    device_lists::write_planned_device_list_changes(
        &h.rooms,
        &users,
        crate::storage::WriteBatch::new(),
        planned,
    )
    .unwrap();
    assert_eq!(h.now().0, before.0 + 2);
    assert_eq!(
        h.rooms
            .notifier()
            .audience(StreamPosition(before.0 + 1), h.now()),
        crate::rooms::graph::StreamAudience::Everyone
    );
    let changes = h.e2ee.device_list_changes_after(before, 10).unwrap();
    assert_eq!(
        changes
            .into_iter()
            .map(|(_, user)| user)
            .collect::<Vec<_>>(),
        vec![carol.clone(), carol.clone()]
    );
    // Read afresh, the audience names the room, and one position is enough.
    let before = h.now();
    h.e2ee.record_device_change(&h.rooms, &carol).unwrap();
    assert_eq!(
        audience_after(&h, before),
        listed(crate::rooms::graph::Audience::UserAndRoomMates {
            user_id: carol.clone(),
            rooms: vec![room],
        })
    );
}

#[test]
fn to_device_messages_concern_their_recipient() {
    use crate::rooms::graph::{Audience, StreamAudience};

    let h = Harness::new();
    let alice = user("@alice:example.org");
    let bob = user("@bob:example.org");
    let carol = user("@carol:example.org");
    let message = |user: &OwnedUserId| ToDeviceMessage {
        user_id: user.clone(),
        device_id: "DEV".into(),
        content: serde_json::value::to_raw_value(&json!({})).unwrap(),
    };
    let send = |txn: &str, messages: Vec<ToDeviceMessage>| {
        let before = h.now();
        h.e2ee
            .send_to_device(&h.rooms, &alice, "ADEV".into(), txn, "m.test", messages)
            .unwrap();
        audience_after(&h, before)
    };
    assert_eq!(
        send("one", vec![message(&bob), message(&bob)]),
        listed(Audience::User(bob.clone()))
    );
    assert_eq!(
        send("none", Vec::new()),
        listed(Audience::User(alice.clone()))
    );
    assert_eq!(
        send("two", vec![message(&carol), message(&bob), message(&carol)]),
        listed(Audience::Users(vec![bob.clone(), carol.clone()]))
    );
    let crowd: Vec<ToDeviceMessage> = (0..=super::to_device::MAX_AUDIENCE_USERS)
        .map(|n| message(&user(&format!("@u{n}:example.org"))))
        .collect();
    assert_eq!(send("crowd", crowd), StreamAudience::Everyone);
}

#[test]
fn a_first_dehydrated_device_concerns_its_owner_alone() {
    use crate::rooms::graph::Audience;

    let h = Harness::new();
    let alice = user("@alice:example.org");
    let room = h.room(&alice, false);
    let dehydrated = |device: &str| {
        let pair = key_pair(device);
        h.e2ee
            .put_dehydrated_device(
                &h.rooms,
                &alice,
                device.into(),
                json!({"algorithm": "m.dehydration.v1.olm"}),
                None,
                KeyUpload {
                    device_keys: Some(device_keys(&alice, device, &pair)),
                    ..KeyUpload::default()
                },
            )
            .unwrap();
    };
    let start = h.now();
    dehydrated("DEHYDRATED1");
    // The record, then the new device's keys.
    assert_eq!(
        h.rooms.notifier().audience(start, h.now()),
        crate::rooms::graph::StreamAudience::Listed(vec![
            Audience::User(alice.clone()),
            Audience::UserAndRoomMates {
                user_id: alice.clone(),
                rooms: vec![room.clone()],
            },
        ])
    );
    // Replacing it removes a device: a device list change.
    let start = h.now();
    dehydrated("DEHYDRATED2");
    let mates = Audience::UserAndRoomMates {
        user_id: alice.clone(),
        rooms: vec![room],
    };
    assert_eq!(
        h.rooms.notifier().audience(start, h.now()),
        crate::rooms::graph::StreamAudience::Listed(vec![mates.clone(), mates])
    );
}
