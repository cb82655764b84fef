//! Measures what room state snapshots cost in storage.
//!
//! Simulates one room: the creation events, 1,000 members joining one by one, then 10,000
//! messages with 500 state changes (topic and power levels) among them. Every event gets its
//! short id and the snapshot of the state after it, each in its own batch, as the persist path
//! does. Prints the bytes in the snapshot column families (logical key + value bytes, and
//! RocksDB's files after a flush) and compares them with storing every snapshot in full.
//!
//! `cargo run -p axon-core --example state_snapshot_size`

#![allow(clippy::print_stdout, reason = "an example reports its figures")]

use std::error::Error;

use axon_core::rooms::short_ids::{ShortIds, SnapshotId};
use axon_core::rooms::state::{MAX_CHAIN, StateStore};
use axon_core::storage::catalogue::{
    self, ColumnFamily, SHORT_EVENT_IDS, SHORT_EVENT_IDS_REVERSE, SHORT_STATE_KEYS,
    SHORT_STATE_KEYS_REVERSE, STATE_SNAPSHOT_BY_HASH, STATE_SNAPSHOTS,
};
use axon_core::storage::{KeyCodec as _, KvStore, MemoryStore, RocksOptions, RocksStore};
use base64::Engine as _;
use ruma::OwnedEventId;
use ruma::events::StateEventType;
use sha2::{Digest as _, Sha256};

const MEMBERS: u64 = 1_000;
const MESSAGES: u64 = 10_000;
const STATE_CHANGES: u64 = 500;

/// What the simulation produced.
struct Outcome {
    /// Distinct snapshots (state after each event, deduplicated).
    snapshots: Vec<SnapshotId>,
    events: u64,
}

/// A realistic event id: `$` and 43 characters of unpadded URL-safe base64 of a hash.
fn event_id(n: u64) -> Result<OwnedEventId, Box<dyn Error>> {
    let hash = Sha256::digest(n.to_be_bytes());
    let text = format!(
        "${}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash)
    );
    Ok(OwnedEventId::try_from(text)?)
}

fn simulate(store: &dyn KvStore) -> Result<Outcome, Box<dyn Error>> {
    let ids = ShortIds::new();
    let states = StateStore::default();
    let mut snapshots = Vec::new();
    let mut current: Option<SnapshotId> = None;
    let mut events = 0_u64;

    // One event: intern it, save the state after it (same snapshot when it changes nothing).
    let mut send = |state: Option<(StateEventType, String)>| -> Result<(), Box<dyn Error>> {
        let mut batch = ids.begin();
        let event = ids.get_or_create_event(store, &mut batch, &event_id(events)?)?;
        events += 1;
        let changes = match &state {
            Some((kind, key)) => {
                let key = ids.get_or_create_state_key(store, &mut batch, kind, key)?;
                vec![(key, Some(event))]
            }
            None => Vec::new(),
        };
        let after = states.save_delta(store, &mut batch, current, &changes)?;
        if state.is_none() && Some(after) != current {
            return Err("a message created a snapshot".into());
        }
        if Some(after) != current {
            snapshots.push(after);
        }
        current = Some(after);
        batch.commit(store)?;
        Ok(())
    };

    let creator = "@creator:example.org".to_owned();
    for (kind, key) in [
        (StateEventType::RoomCreate, String::new()),
        (StateEventType::RoomMember, creator),
        (StateEventType::RoomPowerLevels, String::new()),
        (StateEventType::RoomJoinRules, String::new()),
        (StateEventType::RoomHistoryVisibility, String::new()),
    ] {
        send(Some((kind, key)))?;
    }
    for member in 0..MEMBERS {
        let user = format!("@user{member}:example.org");
        send(Some((StateEventType::RoomMember, user)))?;
    }
    let every = MESSAGES / STATE_CHANGES;
    for message in 0..MESSAGES {
        send(None)?;
        if message % every == every - 1 {
            let kind = if (message / every).is_multiple_of(2) {
                StateEventType::RoomTopic
            } else {
                StateEventType::RoomPowerLevels
            };
            send(Some((kind, String::new())))?;
        }
    }

    // Check the last state end to end, and describe how snapshots are stored.
    let last = current.ok_or("no snapshot")?;
    let full = states.load(store, last)?;
    if full.len() as u64 != MEMBERS + 6 {
        return Err(format!("final state has {} entries", full.len()).into());
    }
    Ok(Outcome { snapshots, events })
}

fn bytes(store: &dyn KvStore, families: &[&'static ColumnFamily]) -> Result<u64, Box<dyn Error>> {
    let mut total = 0;
    for cf in families {
        total += store.stats(cf)?.bytes;
    }
    Ok(total)
}

fn main() -> Result<(), Box<dyn Error>> {
    let snapshot_families = [&STATE_SNAPSHOTS, &STATE_SNAPSHOT_BY_HASH];
    let id_families = [
        &SHORT_STATE_KEYS,
        &SHORT_STATE_KEYS_REVERSE,
        &SHORT_EVENT_IDS,
        &SHORT_EVENT_IDS_REVERSE,
    ];

    let memory = MemoryStore::new();
    let outcome = simulate(&memory)?;
    let count = outcome.snapshots.len() as u64;
    let states = StateStore::new(0);
    let (mut bases, mut base_bytes, mut full_entries, mut longest) = (0_u64, 0_u64, 0_u64, 0_u32);
    for id in &outcome.snapshots {
        let info = states.info(&memory, *id)?;
        if info.depth == 0 {
            bases += 1;
            let record = memory.get(&STATE_SNAPSHOTS, &id.to_key_bytes())?;
            base_bytes += record.map_or(0, |record| record.len() as u64 + 8);
        }
        longest = longest.max(info.depth);
        full_entries += info.len;
    }
    let records = bytes(&memory, &[&STATE_SNAPSHOTS])?;
    let snapshot_bytes = bytes(&memory, &snapshot_families)?;
    // Storing every snapshot in full at the same 8 + 8 bytes per entry, no overhead.
    let naive = full_entries * 16;

    println!(
        "room: {MEMBERS} joins, {MESSAGES} messages, {STATE_CHANGES} state changes ({} events)",
        outcome.events
    );
    println!(
        "snapshots: {count} ({bases} bases, {} deltas; longest chain {longest} of at most {MAX_CHAIN})",
        count - bases
    );
    println!("logical bytes (key + value, as written):");
    println!(
        "  {}: {records} B, {:.1} B per snapshot",
        catalogue::STATE_SNAPSHOTS.name,
        records as f64 / count as f64
    );
    println!(
        "    of which bases: {base_bytes} B; deltas: {:.1} B each",
        (records - base_bytes) as f64 / (count - bases) as f64
    );
    println!(
        "  snapshots + hash index: {snapshot_bytes} B, {:.1} B per snapshot",
        snapshot_bytes as f64 / count as f64
    );
    println!(
        "  short id tables: {} B for {} events",
        bytes(&memory, &id_families)?,
        outcome.events
    );
    println!(
        "  every snapshot in full (16 B per entry): {naive} B, {:.0}x more",
        naive as f64 / snapshot_bytes as f64
    );

    let dir = tempfile::tempdir()?;
    let rocks = RocksStore::open(
        dir.path(),
        RocksOptions {
            sync_writes: false,
            ..RocksOptions::default()
        },
    )?;
    simulate(&rocks)?;
    rocks.flush()?;
    let on_disk = bytes(&rocks, &snapshot_families)?;
    println!(
        "RocksDB files after a flush (compressed, with per-file overhead): snapshots + hash index {on_disk} B, {:.1} B per snapshot",
        on_disk as f64 / count as f64
    );
    Ok(())
}
