//! The catalogue: every column family Axon uses, declared once with its tuning.
//!
//! A table names its column family through one of these statics; nothing opens a column
//! family by a string picked at a call site.

/// How a column family is read, which decides its RocksDB tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Mostly point lookups by whole key (bloom filters pay off).
    PointLookup,
    /// Ordered scans over key ranges or prefixes.
    Ordered,
    /// Tiny and read all the time (kept in the block cache with high priority).
    SmallHot,
}

/// One column family: a name and how it is used.
#[derive(Debug, PartialEq, Eq)]
pub struct ColumnFamily {
    /// The name in the database (never change it: it is the on-disk identity).
    pub name: &'static str,
    /// Access pattern, for tuning.
    pub access: Access,
}

macro_rules! column_families {
    ($($(#[$doc:meta])* $ident:ident = ($name:literal, $access:ident);)+) => {
        $(
            $(#[$doc])*
            pub static $ident: ColumnFamily = ColumnFamily { name: $name, access: Access::$access };
        )+

        /// Every column family, in declaration order.
        pub static ALL: &[&ColumnFamily] = &[$(&$ident),+];
    };
}

column_families! {
    /// Database-wide facts: schema version, creation time.
    META = ("meta", SmallHot);
    /// Local users by user id: the account record (password hash, flags, profile).
    USERS = ("users", PointLookup);
    /// Devices by (user id, device id).
    DEVICES = ("devices", Ordered);
    /// Access tokens by their SHA-256 hash.
    ACCESS_TOKENS = ("access_tokens", PointLookup);
    /// Refresh tokens by their SHA-256 hash.
    REFRESH_TOKENS = ("refresh_tokens", PointLookup);
    /// Short-lived login tokens (`m.login.token`) by their SHA-256 hash.
    LOGIN_TOKENS = ("login_tokens", PointLookup);
    /// Registration tokens by token string.
    REGISTRATION_TOKENS = ("registration_tokens", Ordered);
    /// Global monotonic counters (stream positions, id allocators).
    COUNTERS = ("counters", SmallHot);
    /// Interned `(event type, state key)` pairs -> their short id (`ShortStateKey`).
    SHORT_STATE_KEYS = ("short_state_keys", PointLookup);
    /// Short state key -> its `(event type, state key)` pair.
    SHORT_STATE_KEYS_REVERSE = ("short_state_keys_reverse", PointLookup);
    /// Interned event ids -> their short id (`ShortEventId`).
    SHORT_EVENT_IDS = ("short_event_ids", PointLookup);
    /// Short event id -> its event id.
    SHORT_EVENT_IDS_REVERSE = ("short_event_ids_reverse", PointLookup);
    /// Room state snapshots by snapshot id: a full base map or a delta over a parent.
    STATE_SNAPSHOTS = ("state_snapshots", PointLookup);
    /// Content hash of a snapshot's full state -> a snapshot id holding that state (dedup).
    STATE_SNAPSHOT_BY_HASH = ("state_snapshot_by_hash", PointLookup);
    /// Rooms by room id: version, creator, creation time and the room's short id.
    ROOMS = ("rooms", PointLookup);
    /// Room events by short event id: the PDU as stored, its status, stream position, depth
    /// and state snapshots.
    ROOM_EVENTS = ("room_events", PointLookup);
    /// Per-room timeline: (short room id, stream position) -> short event id.
    ROOM_TIMELINE = ("room_timeline", Ordered);
    /// Per-room topological order: (short room id, depth, stream position) -> short event id.
    ROOM_TOPOLOGY = ("room_topology", Ordered);
    /// The server-wide event stream: stream position -> short event id, for the consumers
    /// that follow every new event in order (push, search, federation senders).
    STREAM_EVENTS = ("stream_events", Ordered);
    /// Forward extremities: (short room id, short event id) -> the event's depth.
    ROOM_EXTREMITIES = ("room_forward_extremities", Ordered);
    /// Current state of each room: short room id -> state snapshot id.
    ROOM_CURRENT_STATE = ("room_current_state", PointLookup);
    /// Current memberships by user: (user id, room id) -> membership and its event.
    USER_MEMBERSHIPS = ("user_memberships", Ordered);
    /// Current memberships by room: (room id, user id) -> membership and its event.
    ROOM_MEMBERSHIPS = ("room_memberships", Ordered);
    /// Client transaction ids: (user id, device id, transaction id) -> the event id it sent.
    ROOM_TRANSACTIONS = ("room_transactions", PointLookup);
    /// Event relations: (room id, parent event id, stream position) -> the child's id, rel_type,
    /// type and sender.
    ROOM_RELATIONS = ("room_relations", Ordered);
    /// Threads by latest activity: (room id, stream position of the latest reply) -> root id.
    ROOM_THREADS = ("room_threads", Ordered);
    /// Latest activity of each thread: (room id, root event id) -> stream position.
    ROOM_THREAD_LATEST = ("room_thread_latest", PointLookup);
    /// Local room aliases: alias -> the room and the user who created the alias.
    ROOM_ALIASES = ("room_aliases", PointLookup);
    /// The aliases of each room: (room id, alias) -> nothing.
    ROOM_ALIASES_BY_ROOM = ("room_aliases_by_room", Ordered);
    /// Rooms published in the room directory: room id -> nothing.
    ROOM_DIRECTORY = ("room_directory", Ordered);
    /// Reports of rooms and events by users: (received time in ms, report id) -> the report.
    ROOM_REPORTS = ("room_reports", Ordered);
    /// Device identity keys: (user id, device id) -> the signed `DeviceKeys` JSON.
    E2EE_DEVICE_KEYS = ("e2ee_device_keys", Ordered);
    /// One-time keys: (user id, device id, algorithm, key id) -> the key JSON.
    E2EE_ONE_TIME_KEYS = ("e2ee_one_time_keys", Ordered);
    /// Fallback keys: (user id, device id, algorithm) -> the key, its id and whether it was used.
    E2EE_FALLBACK_KEYS = ("e2ee_fallback_keys", Ordered);
    /// Cross-signing keys: (user id, usage) -> the signed `CrossSigningKey` JSON.
    E2EE_CROSS_SIGNING_KEYS = ("e2ee_cross_signing_keys", Ordered);
    /// Signatures uploaded for keys: (target user, signed public key, signer user, signing key
    /// id) -> the signature.
    E2EE_SIGNATURES = ("e2ee_signatures", Ordered);
    /// Device list changes in stream order: (stream position, user id) -> nothing.
    E2EE_DEVICE_LIST_STREAM = ("e2ee_device_list_stream", Ordered);
    /// Device list changes by user: (user id, stream position) -> nothing.
    E2EE_DEVICE_LIST_BY_USER = ("e2ee_device_list_by_user", Ordered);
    /// Devices deleted by the accounts service whose keys and inbox are still to be removed:
    /// (user id, device id) -> nothing.
    E2EE_DEVICE_REMOVALS = ("e2ee_device_removals", Ordered);
    /// To-device inboxes: (user id, device id, stream position, index) -> the event.
    E2EE_TO_DEVICE = ("e2ee_to_device", Ordered);
    /// To-device transaction ids: (user id, device id, transaction id) -> stream position.
    E2EE_TO_DEVICE_TXNS = ("e2ee_to_device_txns", PointLookup);
    /// Key backup versions: (user id, version) -> algorithm, etag, key count.
    E2EE_BACKUP_VERSIONS = ("e2ee_backup_versions", Ordered);
    /// Backed-up room keys: (user id, version, room id, session id) -> `KeyBackupData` JSON.
    E2EE_BACKUP_KEYS = ("e2ee_backup_keys", Ordered);
    /// Dehydrated devices: user id -> the device id and its data.
    E2EE_DEHYDRATED_DEVICES = ("e2ee_dehydrated_devices", PointLookup);
    /// Stored sync filters: (user id, filter id) -> the filter definition as JSON.
    SYNC_FILTERS = ("sync_filters", Ordered);
    /// Account data: (user id, room id or "" for global data, type) -> content and the stream
    /// position it was written at.
    ACCOUNT_DATA = ("account_data", Ordered);
    /// Account data changes by stream position: (user id, stream position) -> (room, type).
    ACCOUNT_DATA_STREAM = ("account_data_stream", Ordered);
    /// Receipts: (room id, user id, receipt type, thread) -> event, timestamp, positions.
    RECEIPTS = ("receipts", Ordered);
    /// Receipt changes by stream position: (room id, stream position) -> (user, type, thread).
    RECEIPTS_STREAM = ("receipts_stream", Ordered);
    /// Presence of users: user id -> state, status message, last activity, stream position.
    PRESENCE = ("presence", PointLookup);
    /// Presence changes by stream position: stream position -> user id.
    PRESENCE_STREAM = ("presence_stream", Ordered);
    /// Media of this server: media id -> content hash, type, file name, size, uploader, time.
    MEDIA = ("media", PointLookup);
    /// Stored media content: content hash -> its size and how many media and thumbnails use it.
    MEDIA_BLOBS = ("media_blobs", PointLookup);
    /// Bytes each user has uploaded: user id -> total, for the quota.
    MEDIA_USAGE = ("media_usage", PointLookup);
    /// Reserved, not yet uploaded media ids: (user id, media id) -> expiry time in ms.
    MEDIA_PENDING = ("media_pending", Ordered);
    /// Thumbnails: (media id, width, height, method) -> the thumbnail's content and size.
    MEDIA_THUMBNAILS = ("media_thumbnails", Ordered);
    /// URL previews: URL -> the OpenGraph data and when it was fetched.
    MEDIA_PREVIEWS = ("media_previews", PointLookup);
    /// OpenID tokens for other services, by their SHA-256 hash: the user and the expiry.
    OPENID_TOKENS = ("openid_tokens", PointLookup);
    /// User directory: user id -> the display name and avatar seen in their member events.
    USER_DIRECTORY = ("user_directory", Ordered);
    /// User directory: the rooms whose join rule is `public`: room id -> nothing.
    USER_DIRECTORY_PUBLIC_ROOMS = ("user_directory_public_rooms", Ordered);
    /// Server notices rooms: user id -> the room the system user reaches them in.
    SERVER_NOTICE_ROOMS = ("server_notice_rooms", PointLookup);
    /// Other servers' signing keys: server name -> current and retired keys and the latest
    /// signed key response.
    REMOTE_SERVER_KEYS = ("remote_server_keys", PointLookup);
    /// Push rules of each user: user id -> the ruleset and the stream position it changed at.
    PUSH_RULES = ("push_rules", PointLookup);
    /// Notifications by user in stream order: (user id, position written at, event position)
    /// -> the notification.
    PUSH_NOTIFICATIONS = ("push_notifications", Ordered);
    /// Notifications by room, for unread counts: (user id, room id, event position) ->
    /// whether it highlights and its thread.
    PUSH_NOTIFICATIONS_BY_ROOM = ("push_notifications_by_room", Ordered);
    /// Pushers: (user id, app id, pushkey) -> the pusher.
    PUSHERS = ("pushers", Ordered);
    /// Pushers by their key, to find other users' pushers of a pushkey: (app id, pushkey,
    /// user id) -> nothing.
    PUSHERS_BY_KEY = ("pushers_by_key", Ordered);
    /// Notifications waiting for delivery to a push gateway: (user id, app id, pushkey, event
    /// position) -> what to send.
    PUSH_QUEUE = ("push_queue", Ordered);
    /// Delayed events (MSC4140): delay id -> the scheduled event.
    DELAYED_EVENTS = ("delayed_events", PointLookup);
    /// Delayed events by due time: (due time in ms, delay id) -> nothing.
    DELAYED_EVENTS_DUE = ("delayed_events_due", Ordered);
    /// Delayed events by user: (user id, delay id) -> nothing.
    DELAYED_EVENTS_BY_USER = ("delayed_events_by_user", Ordered);
    /// Delayed state events: (room id, event type, state key, delay id) -> nothing.
    DELAYED_EVENTS_BY_STATE = ("delayed_events_by_state", Ordered);
    /// Transactions that scheduled delayed events: (user, device, txn id) -> delay id.
    DELAYED_EVENT_TRANSACTIONS = ("delayed_event_transactions", PointLookup);
    /// Events named as a prev event by an accepted received event: event id -> a child's
    /// short id (an event that arrives after its child is no forward extremity).
    ROOM_PREV_REFERENCES = ("room_prev_references", PointLookup);
    /// Outbound federation PDUs waiting for a destination: (destination, sequence number) ->
    /// the room and event to send.
    FEDERATION_QUEUE_PDUS = ("federation_queue_pdus", Ordered);
    /// Outbound federation EDUs waiting for a destination: (destination, sequence number) ->
    /// the EDU.
    FEDERATION_QUEUE_EDUS = ("federation_queue_edus", Ordered);
    /// The transaction being sent to each destination (kept so a retry reuses its id and
    /// contents): destination -> the transaction.
    FEDERATION_QUEUE_TXNS = ("federation_queue_txns", PointLookup);
    /// The outbound federation queue's counters: the event stream position it has read and
    /// its next sequence number.
    FEDERATION_QUEUE_META = ("federation_queue_meta", SmallHot);
    /// Inbound federation transactions already processed: (origin, txn id) -> when, and the
    /// response sent, so a retried transaction gets the same answer without reprocessing.
    FEDERATION_INBOUND_TXNS = ("federation_inbound_txns", PointLookup);
    /// The same transactions by age, for their expiry: (received at ms, origin, txn id) ->
    /// nothing.
    FEDERATION_INBOUND_TXNS_BY_AGE = ("federation_inbound_txns_by_age", Ordered);
    /// The last device list `stream_id` received from a remote user's server: user id ->
    /// stream id, to notice gaps in `m.device_list_update` chains.
    FEDERATION_REMOTE_DEVICE_STREAMS = ("federation_remote_device_streams", PointLookup);
    /// Other servers' media cached here: (server name, media id) -> content hash, type, file
    /// name, size, when fetched and last served.
    MEDIA_REMOTE = ("media_remote", PointLookup);
    /// Cached remote media by last access, for the cache's expiry: (last access in ms, server
    /// name, media id) -> nothing.
    MEDIA_REMOTE_BY_ACCESS = ("media_remote_by_access", Ordered);
    /// Finalised (sent, cancelled or failed) delayed events: delay id -> the event and its
    /// outcome, kept for a while for the user to look up.
    DELAYED_EVENTS_FINALISED = ("delayed_events_finalised", PointLookup);
    /// Finalised delayed events by user, oldest first: (user id, finalised at ms, delay id) ->
    /// nothing.
    DELAYED_EVENTS_FINALISED_BY_USER = ("delayed_events_finalised_by_user", Ordered);
    /// The federation EDU feeder's counters: the stream position up to which local users'
    /// presence and device list changes were queued for other servers.
    FEDERATION_EDU_FEED = ("federation_edu_feed", SmallHot);
    /// What other servers were last told of each local user's devices and cross-signing keys:
    /// (user, kind, id) -> the announced JSON, and the user's last device list `stream_id`.
    FEDERATION_DEVICE_LISTS_SENT = ("federation_device_lists_sent", Ordered);
    /// Local users' memberships in rooms this server is not in (invites from other servers,
    /// knocks through them, their rejections): (user id, room id) -> the member event, the
    /// stripped state, the servers of the room and the stream position.
    ROOM_OUT_OF_ROOM_MEMBERSHIPS = ("room_out_of_room_memberships", Ordered);
}

/// The column family called `name`, if the catalogue has one.
pub fn by_name(name: &str) -> Option<&'static ColumnFamily> {
    ALL.iter().copied().find(|cf| cf.name == name)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_and_findable() {
        let mut seen = HashSet::new();
        for cf in ALL {
            assert!(seen.insert(cf.name), "duplicate column family {}", cf.name);
            assert_eq!(by_name(cf.name), Some(*cf));
        }
        assert_eq!(by_name("no such family"), None);
    }
}
