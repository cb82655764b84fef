//! Unit tests of the push service: rules, evaluation contexts, counting, listing, pushers,
//! pruning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ruma::api::client::push::{Pusher, PusherIds, PusherInit, PusherKind, RuleKind};
use ruma::events::{StateEventType, TimelineEventType};
use ruma::push::{
    Action, HttpPusherData, NewConditionalPushRule, NewPushRule, NewSimplePushRule, PushCondition,
    Tweak,
};
use ruma::{
    CanonicalJsonObject, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
    server_name,
};
use serde_json::{Value, json};

use super::tables::{NOTIFICATIONS, NOTIFICATIONS_BY_ROOM};
use super::{Push, PushError, PusherKey, RoomRetention, UnreadCounts, reads_from_receipts};
use crate::keys::ServerKeys;
use crate::rooms::graph::{CreateRoom, NewEvent, RoomPreset, Rooms, StreamPosition};
use crate::rooms::room_version::RoomVersion;
use crate::storage::{KvStore, MemoryStore};
use crate::sync::{ReceiptKind, ReceiptThread, Receipts};

const ALICE: &str = "@alice:example.org";
const BOB: &str = "@bob:example.org";
const CAROL: &str = "@carol:example.org";
const REMOTE: &str = "@dave:elsewhere.example";
/// An upper bound that counts every notification.
const ALL: StreamPosition = StreamPosition(u64::MAX);

fn user(id: &str) -> OwnedUserId {
    OwnedUserId::try_from(id).unwrap()
}

fn object(value: Value) -> CanonicalJsonObject {
    serde_json::from_value(value).unwrap()
}

/// Rooms and push on a fresh in-memory store, for `example.org`.
struct Harness {
    rooms: Rooms,
    push: Push,
    store: Arc<dyn KvStore>,
    _key_dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let store: Arc<dyn KvStore> = Arc::new(MemoryStore::new());
        let key_dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(
            ServerKeys::load_or_create(key_dir.path(), server_name!("example.org")).unwrap(),
        );
        Self {
            rooms: Rooms::new(Arc::clone(&store), keys).unwrap(),
            push: Push::new(Arc::clone(&store)).unwrap(),
            store,
            _key_dir: key_dir,
        }
    }

    /// A public room created by alice that `members` joined.
    fn room(&self, members: &[&str]) -> OwnedRoomId {
        let mut request =
            CreateRoom::new(user(ALICE), RoomVersion::new(&RoomVersionId::V11).unwrap());
        request.preset = RoomPreset::PublicChat;
        let room_id = self.rooms.create_room(request).unwrap();
        for member in members {
            self.state(
                &room_id,
                member,
                StateEventType::RoomMember,
                member,
                json!({ "membership": "join" }),
            );
        }
        room_id
    }

    fn send(&self, event: NewEvent) -> OwnedEventId {
        let guard = self.rooms.locks().try_lock(&event.room_id).unwrap();
        self.rooms.append_local(&guard, event).unwrap().event_id
    }

    fn message(&self, room_id: &RoomId, sender: &str, content: Value) -> OwnedEventId {
        self.send(NewEvent::message(
            room_id.to_owned(),
            user(sender),
            TimelineEventType::RoomMessage,
            object(content),
        ))
    }

    fn text(&self, room_id: &RoomId, sender: &str, body: &str) -> OwnedEventId {
        self.message(
            room_id,
            sender,
            json!({ "msgtype": "m.text", "body": body }),
        )
    }

    fn state(
        &self,
        room_id: &RoomId,
        sender: &str,
        kind: StateEventType,
        key: &str,
        content: Value,
    ) -> OwnedEventId {
        self.send(NewEvent::state(
            room_id.to_owned(),
            user(sender),
            kind,
            key,
            object(content),
        ))
    }

    /// Evaluates everything sent so far.
    fn evaluate(&self) {
        while self.push.process_next(&self.rooms, 3).unwrap().read == 3 {}
    }

    /// `(event id, highlight, thread root)` of every notification of `user_id`, oldest first.
    fn notified(&self, user_id: &str) -> Vec<(OwnedEventId, bool, Option<OwnedEventId>)> {
        let page = self
            .push
            .notifications(&user(user_id), None, 100, false)
            .unwrap();
        page.notifications
            .into_iter()
            .rev()
            .map(|record| (record.event_id, record.highlight, record.thread_root))
            .collect()
    }

    fn position_of(&self, event_id: &OwnedEventId) -> StreamPosition {
        self.rooms
            .get_event(event_id)
            .unwrap()
            .unwrap()
            .stream
            .unwrap()
    }
}

fn http_pusher(app_id: &str, pushkey: &str) -> Pusher {
    PusherInit {
        ids: PusherIds::new(pushkey.to_owned(), app_id.to_owned()),
        kind: PusherKind::Http(HttpPusherData::new(
            "https://push.example.org/_matrix/push/v1/notify".to_owned(),
        )),
        app_display_name: "App".to_owned(),
        device_display_name: "Phone".to_owned(),
        profile_tag: None,
        lang: "en".to_owned(),
    }
    .into()
}

#[test]
fn members_but_the_sender_are_notified_and_remote_users_are_not() {
    let h = Harness::new();
    let room = h.room(&[BOB, CAROL]);
    // Remote users (here one invited) are notified by their own server.
    h.state(
        &room,
        ALICE,
        StateEventType::RoomMember,
        REMOTE,
        json!({ "membership": "invite" }),
    );
    let event = h.text(&room, BOB, "hello");
    h.evaluate();
    // A room of more than two members: `.m.rule.message` notifies without highlighting.
    assert_eq!(h.notified(ALICE), vec![(event.clone(), false, None)]);
    assert_eq!(h.notified(CAROL), vec![(event, false, None)]);
    assert!(
        h.notified(BOB).is_empty(),
        "the sender is not notified of its own event"
    );
    assert!(
        h.notified(REMOTE).is_empty(),
        "remote users are notified by their server"
    );
}

#[test]
fn a_user_mention_highlights_only_its_target() {
    let h = Harness::new();
    let room = h.room(&[BOB, CAROL]);
    let event = h.message(
        &room,
        ALICE,
        json!({ "msgtype": "m.text", "body": "bob!", "m.mentions": { "user_ids": [BOB] } }),
    );
    h.evaluate();
    assert_eq!(h.notified(BOB), vec![(event.clone(), true, None)]);
    assert_eq!(h.notified(CAROL), vec![(event, false, None)]);
}

#[test]
fn a_room_mention_needs_the_senders_notification_power_level() {
    let h = Harness::new();
    let room = h.room(&[BOB]);
    let mention = json!({ "msgtype": "m.text", "body": "all", "m.mentions": { "room": true } });
    // Alice created the room (power 100); bob has the default 0, below `notifications.room`.
    let from_alice = h.message(&room, ALICE, mention.clone());
    let from_bob = h.message(&room, BOB, mention);
    h.evaluate();
    assert_eq!(h.notified(BOB), vec![(from_alice, true, None)]);
    // Bob's @room falls through to the one-to-one rule: a notification without highlight.
    assert_eq!(h.notified(ALICE), vec![(from_bob, false, None)]);
}

#[test]
fn display_name_and_member_count_conditions_see_the_room() {
    let h = Harness::new();
    let room = h.room(&[BOB]);
    h.state(
        &room,
        BOB,
        StateEventType::RoomMember,
        BOB,
        json!({ "membership": "join", "displayname": "Bobby" }),
    );
    #[allow(
        deprecated,
        reason = "clients may still define rules with this condition"
    )]
    let condition = PushCondition::ContainsDisplayName;
    let rule = NewConditionalPushRule::new(
        "name".to_owned(),
        vec![condition],
        vec![
            Action::Notify,
            Action::SetTweak(Tweak::Highlight(true.into())),
        ],
    );
    h.push
        .add_rule(
            &h.rooms,
            &user(BOB),
            NewPushRule::Override(rule),
            None,
            None,
        )
        .unwrap();
    let named = h.text(&room, ALICE, "thanks Bobby");
    let unnamed = h.text(&room, ALICE, "thanks Bob");
    h.evaluate();
    // Two members: the unnamed message matches `.m.rule.room_one_to_one`.
    assert_eq!(
        h.notified(BOB),
        vec![(named, true, None), (unnamed, false, None)]
    );
}

#[test]
fn an_invite_notifies_the_local_invitee() {
    let h = Harness::new();
    let room = h.room(&[]);
    let invite = h.state(
        &room,
        ALICE,
        StateEventType::RoomMember,
        CAROL,
        json!({ "membership": "invite" }),
    );
    h.evaluate();
    // `.m.rule.invite_for_me`: a notification with a sound, without highlight.
    assert_eq!(h.notified(CAROL), vec![(invite, false, None)]);
}

#[test]
fn thread_replies_carry_their_root() {
    let h = Harness::new();
    let room = h.room(&[BOB, CAROL]);
    let root = h.text(&room, BOB, "root");
    let reply = h.message(
        &room,
        BOB,
        json!({
            "msgtype": "m.text",
            "body": "reply",
            "m.relates_to": { "rel_type": "m.thread", "event_id": root },
        }),
    );
    h.evaluate();
    assert_eq!(
        h.notified(ALICE),
        vec![(root.clone(), false, None), (reply, false, Some(root))]
    );
}

#[test]
fn unread_counts_follow_the_read_positions_of_each_timeline() {
    let h = Harness::new();
    let room = h.room(&[BOB, CAROL]);
    let first = h.text(&room, BOB, "one");
    let mention = h.message(
        &room,
        BOB,
        json!({ "msgtype": "m.text", "body": "hey", "m.mentions": { "user_ids": [ALICE] } }),
    );
    let in_thread = |body: &str| {
        h.message(
            &room,
            BOB,
            json!({
                "msgtype": "m.text",
                "body": body,
                "m.relates_to": { "rel_type": "m.thread", "event_id": first },
            }),
        )
    };
    let reply_one = in_thread("r1");
    let _reply_two = in_thread("r2");
    h.evaluate();
    let alice = user(ALICE);
    let none = BTreeMap::new();

    let all = h
        .push
        .unread_counts(&alice, &room, None, &none, ALL)
        .unwrap();
    assert_eq!(
        all,
        UnreadCounts {
            notification_count: 2,
            highlight_count: 1,
            threads: BTreeMap::from([(first.clone(), (2, 0))]),
        }
    );
    assert_eq!(all.total(), (4, 1));

    // A sync that covers events up to the mention counts only those.
    let upto_mention = h
        .push
        .unread_counts(&alice, &room, None, &none, h.position_of(&mention))
        .unwrap();
    assert_eq!(
        upto_mention,
        UnreadCounts {
            notification_count: 2,
            highlight_count: 1,
            threads: BTreeMap::new(),
        }
    );

    // Read up to the mention: the main timeline is read; the thread falls back to the same
    // position, and its replies come after it.
    let read = Some(h.position_of(&mention));
    let counts = h
        .push
        .unread_counts(&alice, &room, read, &none, ALL)
        .unwrap();
    assert_eq!((counts.notification_count, counts.highlight_count), (0, 0));
    assert_eq!(counts.threads, BTreeMap::from([(first.clone(), (2, 0))]));

    // The thread's own receipt covers its first reply only.
    let thread_reads = BTreeMap::from([(first.clone(), h.position_of(&reply_one))]);
    let counts = h
        .push
        .unread_counts(&alice, &room, read, &thread_reads, ALL)
        .unwrap();
    assert_eq!(counts.threads, BTreeMap::from([(first, (1, 0))]));

    // Another room's notifications do not count here.
    let other = h.room(&[BOB]);
    h.text(&other, BOB, "elsewhere");
    h.evaluate();
    let counts = h
        .push
        .unread_counts(&alice, &room, read, &thread_reads, ALL)
        .unwrap();
    assert_eq!(counts.total(), (1, 0));
}

#[test]
fn notifications_page_newest_first_and_filter_highlights() {
    let h = Harness::new();
    let room = h.room(&[BOB]);
    let mut sent = Vec::new();
    for i in 0..5 {
        let mentions = if i % 2 == 0 {
            json!({ "user_ids": [ALICE] })
        } else {
            json!({})
        };
        sent.push(h.message(
            &room,
            BOB,
            json!({ "msgtype": "m.text", "body": format!("m{i}"), "m.mentions": mentions }),
        ));
    }
    h.evaluate();
    let alice = user(ALICE);

    let mut seen = Vec::new();
    let mut from = None;
    loop {
        let page = h
            .push
            .notifications(&alice, from.as_deref(), 2, false)
            .unwrap();
        seen.extend(page.notifications.into_iter().map(|record| record.event_id));
        match page.next_token {
            Some(token) => from = Some(token),
            None => break,
        }
    }
    let newest_first: Vec<_> = sent.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let highlights = h.push.notifications(&alice, None, 10, true).unwrap();
    let ids: Vec<_> = highlights
        .notifications
        .into_iter()
        .map(|r| r.event_id)
        .collect();
    assert_eq!(ids, vec![sent[4].clone(), sent[2].clone(), sent[0].clone()]);
    assert!(highlights.next_token.is_none());

    assert!(matches!(
        h.push.notifications(&alice, Some("garbage"), 10, false),
        Err(PushError::InvalidParam(_))
    ));
}

#[test]
fn notifications_take_no_stream_position_and_name_their_rooms() {
    let h = Harness::new();
    let room = h.room(&[BOB]);
    let before = h.rooms.current_stream_position();
    let hi = h.text(&room, BOB, "hi");
    let sent = h.rooms.current_stream_position();
    h.evaluate();
    // Evaluation wakes no sync of its own: a sync covering the event waits for it instead.
    assert_eq!(h.rooms.current_stream_position(), sent);
    assert_eq!(h.push.last_processed(), sent);
    let rooms = h
        .push
        .rooms_with_notifications_since(&user(ALICE), before, sent)
        .unwrap();
    assert_eq!(rooms.into_iter().collect::<Vec<_>>(), vec![room]);
    // Filed under the event's position: a sync ending before the event does not see it,
    // and one starting after it does not either.
    let just_before = StreamPosition(h.position_of(&hi).0 - 1);
    for (since, upto) in [(before, just_before), (sent, StreamPosition(u64::MAX))] {
        assert!(
            h.push
                .rooms_with_notifications_since(&user(ALICE), since, upto)
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn waiting_for_evaluation_returns_once_the_position_is_evaluated() {
    let h = Harness::new();
    let room = h.room(&[BOB]);
    h.text(&room, BOB, "hi");
    let sent = h.rooms.current_stream_position();
    assert!(!h.push.wait_evaluated(sent, Duration::from_millis(20)).await);
    h.evaluate();
    assert!(h.push.wait_evaluated(sent, Duration::from_secs(5)).await);
}

#[test]
fn evaluating_published_events_on_the_callers_thread_releases_blocking_waiters() {
    let h = Harness::new();
    let room = h.room(&[BOB]);
    let before = h.rooms.current_stream_position();
    h.text(&room, BOB, "hi");
    let sent = h.rooms.current_stream_position();
    assert!(
        !h.push
            .wait_evaluated_blocking(sent, Duration::from_millis(20))
    );
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            h.push
                .wait_evaluated_blocking(sent, Duration::from_secs(10))
        });
        h.push.evaluate_published(&h.rooms).unwrap();
        assert!(waiter.join().unwrap());
    });
    assert_eq!(h.push.last_processed(), sent);
    let rooms = h
        .push
        .rooms_with_notifications_since(&user(ALICE), before, sent)
        .unwrap();
    assert_eq!(rooms.into_iter().collect::<Vec<_>>(), vec![room]);
}

#[test]
fn evaluating_published_events_leaves_them_to_a_round_in_progress() {
    let h = Harness::new();
    let room = h.room(&[BOB]);
    h.text(&room, BOB, "hi");
    let sent = h.rooms.current_stream_position();
    {
        // A round holds the progress lock: the caller does not wait for it.
        let _round = h.push.progress.lock().unwrap();
        h.push.evaluate_published(&h.rooms).unwrap();
    }
    assert!(h.push.last_processed() < sent);
    h.push.evaluate_published(&h.rooms).unwrap();
    assert_eq!(h.push.last_processed(), sent);
}

#[test]
fn progress_survives_a_restart_and_events_are_evaluated_once() {
    let h = Harness::new();
    let room = h.room(&[BOB]);
    h.text(&room, BOB, "once");
    h.evaluate();
    let restarted = Push::new(Arc::clone(&h.store)).unwrap();
    assert_eq!(restarted.last_processed(), h.push.last_processed());
    let round = restarted.process_next(&h.rooms, 10).unwrap();
    assert_eq!((round.read, round.notifications), (0, 0));
    assert_eq!(h.notified(ALICE).len(), 1);
}

#[test]
fn rule_changes_are_stored_at_a_stream_position() {
    let h = Harness::new();
    let alice = user(ALICE);
    assert_eq!(h.push.rules_changed_at(&alice).unwrap(), None);
    let before = h.rooms.current_stream_position();
    let rule = NewSimplePushRule::new(user(BOB), vec![]);
    let changed = h
        .push
        .add_rule(&h.rooms, &alice, NewPushRule::Sender(rule), None, None)
        .unwrap();
    assert!(changed > before);
    assert!(h.push.rules_changed_since(&alice, before).unwrap());
    assert!(!h.push.rules_changed_since(&alice, changed).unwrap());

    let event = h.push.rules_event(&alice).unwrap();
    let event: Value = serde_json::from_str(event.json().get()).unwrap();
    assert_eq!(event["type"], "m.push_rules");
    assert_eq!(event["content"]["global"]["sender"][0]["rule_id"], BOB);
    // The defaults are still there.
    assert_eq!(
        event["content"]["global"]["override"][0]["rule_id"],
        ".m.rule.master"
    );
}

#[test]
fn rule_edits_report_the_spec_errors() {
    let h = Harness::new();
    let alice = user(ALICE);
    let master = ".m.rule.master";
    assert!(matches!(
        h.push
            .remove_rule(&h.rooms, &alice, &RuleKind::Override, master),
        Err(PushError::InvalidParam(_))
    ));
    assert!(matches!(
        h.push
            .remove_rule(&h.rooms, &alice, &RuleKind::Override, "missing"),
        Err(PushError::NotFound(_))
    ));
    assert!(matches!(
        h.push
            .set_rule_enabled(&h.rooms, &alice, &RuleKind::Content, "missing", true),
        Err(PushError::NotFound(_))
    ));
    let reserved = NewConditionalPushRule::new(".mine".to_owned(), vec![], vec![]);
    assert!(matches!(
        h.push.add_rule(
            &h.rooms,
            &alice,
            NewPushRule::Override(reserved),
            None,
            None
        ),
        Err(PushError::InvalidParam(_))
    ));
    let placed = NewConditionalPushRule::new("mine".to_owned(), vec![], vec![]);
    assert!(matches!(
        h.push.add_rule(
            &h.rooms,
            &alice,
            NewPushRule::Override(placed),
            None,
            Some("missing")
        ),
        Err(PushError::NotFound(_))
    ));
    assert!(matches!(
        h.push.rule(&alice, &RuleKind::from("bogus"), "x"),
        Err(PushError::InvalidParam(_))
    ));
    // Failed edits stored nothing.
    assert_eq!(h.push.rules_changed_at(&alice).unwrap(), None);

    // Server-default rules can be disabled and given other actions.
    h.push
        .set_rule_enabled(&h.rooms, &alice, &RuleKind::Override, master, true)
        .unwrap();
    assert!(
        h.push
            .rule(&alice, &RuleKind::Override, master)
            .unwrap()
            .enabled
    );
}

#[test]
fn a_disabled_master_rule_silences_everything() {
    let h = Harness::new();
    let room = h.room(&[BOB]);
    h.push
        .set_rule_enabled(
            &h.rooms,
            &user(ALICE),
            &RuleKind::Override,
            ".m.rule.master",
            true,
        )
        .unwrap();
    h.text(&room, BOB, "quiet");
    h.evaluate();
    assert!(h.notified(ALICE).is_empty());
}

#[test]
fn http_pushers_get_queue_entries_and_leave_with_them() {
    let h = Harness::new();
    let alice = user(ALICE);
    h.push
        .set_pusher(&alice, http_pusher("app", "key-a"), false)
        .unwrap();
    let room = h.room(&[BOB]);
    let event = h.text(&room, BOB, "push me");
    let mut announcements = h.push.subscribe_queue();
    h.evaluate();
    let key = PusherKey {
        user_id: alice.clone(),
        app_id: "app".to_owned(),
        pushkey: "key-a".to_owned(),
    };
    assert_eq!(announcements.try_recv().unwrap(), key);
    let queued = h.push.queued(&key, 10).unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].1.event_id, event);
    assert_eq!(h.push.pushers_with_queued().unwrap(), vec![key.clone()]);

    h.push.dequeue(&key, queued[0].0).unwrap();
    assert!(h.push.queued(&key, 10).unwrap().is_empty());

    h.text(&room, BOB, "again");
    h.evaluate();
    assert_eq!(h.push.queued(&key, 10).unwrap().len(), 1);
    assert!(h.push.delete_pusher(&key).unwrap());
    assert!(h.push.queued(&key, 10).unwrap().is_empty());
    assert!(h.push.pushers(&alice).unwrap().is_empty());
    assert!(!h.push.delete_pusher(&key).unwrap());
}

#[test]
fn a_pushkey_moves_between_users_unless_appended() {
    let h = Harness::new();
    let (alice, bob) = (user(ALICE), user(BOB));
    h.push
        .set_pusher(&alice, http_pusher("app", "shared"), false)
        .unwrap();
    h.push
        .set_pusher(&bob, http_pusher("app", "shared"), true)
        .unwrap();
    assert_eq!(h.push.pushers(&alice).unwrap().len(), 1);
    assert_eq!(h.push.pushers(&bob).unwrap().len(), 1);
    h.push
        .set_pusher(&bob, http_pusher("app", "shared"), false)
        .unwrap();
    assert!(h.push.pushers(&alice).unwrap().is_empty());
    assert_eq!(h.push.pushers(&bob).unwrap().len(), 1);
}

#[test]
fn pushers_of_unknown_kinds_or_oversized_ids_are_refused() {
    let h = Harness::new();
    let alice = user(ALICE);
    let mut custom: Value = serde_json::to_value(http_pusher("app", "k")).unwrap();
    custom["kind"] = json!("carrier-pigeon");
    let custom: Pusher = serde_json::from_value(custom).unwrap();
    assert!(matches!(
        h.push.set_pusher(&alice, custom, false),
        Err(PushError::InvalidParam(_))
    ));
    let long_app = "a".repeat(65);
    assert!(matches!(
        h.push
            .set_pusher(&alice, http_pusher(&long_app, "k"), false),
        Err(PushError::InvalidParam(_))
    ));
    assert!(h.push.pushers(&alice).unwrap().is_empty());
}

#[test]
fn counts_kept_from_an_earlier_sync_are_extended_exactly() {
    let h = Harness::new();
    let room = h.room(&[BOB]);
    let alice = user(ALICE);
    let none = BTreeMap::new();
    let mention = |body: &str| {
        h.message(
            &room,
            BOB,
            json!({ "msgtype": "m.text", "body": body, "m.mentions": { "user_ids": [ALICE] } }),
        )
    };
    h.text(&room, BOB, "one");
    mention("two");
    h.evaluate();
    let first = h.rooms.current_stream_position();
    let early = h
        .push
        .unread_counts(&alice, &room, None, &none, first)
        .unwrap();
    assert_eq!(early.total(), (2, 1));

    let three = h.text(&room, BOB, "three");
    mention("four");
    h.evaluate();
    let second = h.rooms.current_stream_position();
    // A service without kept counts (a restarted server) counts from scratch.
    let fresh = Push::new(Arc::clone(&h.store)).unwrap();
    for read in [None, Some(h.position_of(&three))] {
        let extended = h
            .push
            .unread_counts(&alice, &room, read, &none, second)
            .unwrap();
        let counted = fresh
            .unread_counts(&alice, &room, read, &none, second)
            .unwrap();
        assert_eq!(extended, counted, "read up to {read:?}");
    }
    assert_eq!(
        h.push
            .unread_counts(&alice, &room, None, &none, second)
            .unwrap()
            .total(),
        (4, 2)
    );
    // Kept counts never answer for an earlier position.
    assert_eq!(
        h.push
            .unread_counts(&alice, &room, None, &none, first)
            .unwrap(),
        early
    );
}

/// Prunes with `cutoff_ms` in batches of `limit`, taking read positions from `receipts`;
/// returns the deletions of each batch.
fn prune_with_receipts(
    h: &Harness,
    receipts: &Receipts,
    cutoff_ms: u64,
    limit: usize,
) -> Vec<usize> {
    let mut batches = Vec::new();
    let mut cursor = None;
    loop {
        let batch = h
            .push
            .prune_batch(cutoff_ms, cursor.as_ref(), limit, &mut |user, room| {
                reads_from_receipts(receipts, user, room)
            })
            .unwrap();
        batches.push(batch.pruned);
        match batch.next {
            Some(next) => cursor = Some(next),
            None => return batches,
        }
    }
}

/// The unread counts of `user_id` in the room under their receipts: the sync's and the
/// push badge's (which takes the main timeline's position for threads too).
fn counts_under_receipts(
    push: &Push,
    receipts: &Receipts,
    user_id: &str,
    room: &RoomId,
) -> (UnreadCounts, UnreadCounts) {
    let user_id = user(user_id);
    let main = receipts.read_position(&user_id, room, None).unwrap();
    let threads = receipts.thread_read_positions(&user_id, room).unwrap();
    (
        push.unread_counts(&user_id, room, main, &threads, ALL)
            .unwrap(),
        push.unread_counts(&user_id, room, main, &BTreeMap::new(), ALL)
            .unwrap(),
    )
}

const DAY_MS: u64 = 86_400_000;

#[test]
fn old_read_notifications_are_pruned_and_what_remains_counts_and_lists_the_same() {
    let h = Harness::new();
    let receipts = Receipts::new(Arc::clone(&h.store));
    let room = h.room(&[BOB, CAROL]);
    let reply = |root: &OwnedEventId, body: &str| {
        h.message(
            &room,
            BOB,
            json!({
                "msgtype": "m.text",
                "body": body,
                "m.relates_to": { "rel_type": "m.thread", "event_id": root },
            }),
        )
    };
    let root = h.text(&room, BOB, "root");
    let reply_one = reply(&root, "r1");
    let second = h.text(&room, BOB, "two");
    let reply_two = reply(&root, "r2");
    let third = h.message(
        &room,
        BOB,
        json!({ "msgtype": "m.text", "body": "hey", "m.mentions": { "user_ids": [ALICE] } }),
    );
    let fourth = h.text(&room, BOB, "four");
    h.evaluate();
    let alice = user(ALICE);
    // Alice read the main timeline up to the mention, but the thread only up to its first
    // reply: the second reply is unread in its thread although the main position is past it.
    let set = |thread: ReceiptThread, event: &OwnedEventId| {
        receipts
            .set(&h.rooms, &room, &alice, ReceiptKind::Read, &thread, event)
            .unwrap();
    };
    set(ReceiptThread::Main, &third);
    set(ReceiptThread::Thread(root.clone()), &reply_one);

    let before = counts_under_receipts(&h.push, &receipts, ALICE, &room);
    let carol_before = counts_under_receipts(&h.push, &receipts, CAROL, &room);
    assert_eq!(before.0.notification_count, 1);
    assert_eq!(before.0.threads, BTreeMap::from([(root.clone(), (1, 0))]));
    let listed_before = h.notified(ALICE);
    assert_eq!(listed_before.len(), 6);
    let notifications = NOTIFICATIONS.count(&*h.store).unwrap();
    let by_room = NOTIFICATIONS_BY_ROOM.count(&*h.store).unwrap();
    assert_eq!((notifications, by_room), (12, 12));

    // Everything is recent: nothing goes, read or not.
    let now = super::now_ms();
    assert_eq!(
        prune_with_receipts(&h, &receipts, now - DAY_MS, 1000),
        vec![0]
    );
    assert_eq!(NOTIFICATIONS.count(&*h.store).unwrap(), 12);

    // A day later with a day's retention: alice's read ones go from both tables; her unread
    // ones and all of carol's (she has no receipt) stay.
    assert_eq!(
        prune_with_receipts(&h, &receipts, now + DAY_MS, 1000),
        vec![4]
    );
    assert_eq!(NOTIFICATIONS.count(&*h.store).unwrap(), 8);
    assert_eq!(NOTIFICATIONS_BY_ROOM.count(&*h.store).unwrap(), 8);
    let listed_after = h.notified(ALICE);
    let kept = [reply_two.clone(), fourth];
    assert_eq!(
        listed_after,
        listed_before
            .into_iter()
            .filter(|(event, _, _)| kept.contains(event))
            .collect::<Vec<_>>()
    );
    assert!(
        !listed_after
            .iter()
            .any(|(event, _, _)| [&root, &reply_one, &second, &third].contains(&event))
    );
    assert_eq!(h.notified(CAROL).len(), 6);

    // The same counts, from the kept counts and from scratch.
    assert_eq!(
        counts_under_receipts(&h.push, &receipts, ALICE, &room),
        before
    );
    let fresh = Push::new(Arc::clone(&h.store)).unwrap();
    assert_eq!(
        counts_under_receipts(&fresh, &receipts, ALICE, &room),
        before
    );
    assert_eq!(
        counts_under_receipts(&fresh, &receipts, CAROL, &room),
        carol_before
    );
    assert_eq!(h.push.pruned_total(), 4);

    // Once the thread is read as well, its second reply goes too.
    set(ReceiptThread::Thread(root.clone()), &reply_two);
    assert_eq!(
        prune_with_receipts(&h, &receipts, now + DAY_MS, 1000),
        vec![1]
    );
    assert_eq!(
        h.notified(ALICE)
            .into_iter()
            .map(|(event, _, _)| event)
            .collect::<Vec<_>>(),
        vec![kept[1].clone()]
    );
}

#[test]
fn pruning_goes_in_bounded_batches_and_releases_everything_of_a_user_who_is_gone() {
    let h = Harness::new();
    let receipts = Receipts::new(Arc::clone(&h.store));
    let room = h.room(&[BOB, CAROL]);
    let mut last = None;
    for body in ["1", "2", "3", "4", "5"] {
        last = Some(h.text(&room, BOB, body));
    }
    h.evaluate();
    let alice = user(ALICE);
    let last = last.unwrap();
    receipts
        .set(
            &h.rooms,
            &room,
            &alice,
            ReceiptKind::Read,
            &ReceiptThread::Unthreaded,
            &last,
        )
        .unwrap();
    let later = super::now_ms() + DAY_MS;
    let batches = prune_with_receipts(&h, &receipts, later, 2);
    assert_eq!(batches.iter().sum::<usize>(), 5);
    assert!(batches.iter().all(|pruned| *pruned <= 2), "{batches:?}");
    assert!(h.notified(ALICE).is_empty());
    assert_eq!(h.notified(CAROL).len(), 5);

    // Carol is gone: her unread notifications go as well, but only once old.
    let carol = user(CAROL);
    let mut gone = |user: &UserId, _: &RoomId| {
        Ok(if *user == carol {
            RoomRetention::Gone
        } else {
            RoomRetention::Reads {
                main: None,
                threads: BTreeMap::new(),
            }
        })
    };
    let recent = h
        .push
        .prune_batch(later - 2 * DAY_MS, None, 100, &mut gone)
        .unwrap();
    assert_eq!((recent.pruned, recent.next), (0, None));
    let old = h.push.prune_batch(later, None, 100, &mut gone).unwrap();
    assert_eq!((old.pruned, old.next), (5, None));
    assert!(h.notified(CAROL).is_empty());
    assert_eq!(NOTIFICATIONS_BY_ROOM.count(&*h.store).unwrap(), 0);
}
