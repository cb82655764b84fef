//! The stored form of a snapshot, and the content hash used to find identical states.
//!
//! # Format, version 1
//!
//! A value of `STATE_SNAPSHOTS` is:
//!
//! ```text
//! u8        format version (1)
//! u8        kind: 0 = base, 1 = delta
//! [u8; 8]   content hash of the full state (u64, big-endian)
//! varint    number of entries in the full state
//! if delta:
//!   varint  parent snapshot id
//!   varint  base snapshot id (the base the chain ends at)
//!   varint  depth: deltas from this one down to the base, this one included (>= 1)
//! entries   base: the full state; delta: the entries added or changed since the parent
//! if delta:
//!   keys    the keys removed since the parent
//! ```
//!
//! `entries` is a varint count, then per entry, in ascending key order, the key as a varint
//! gap from the previous key (from 0 for the first) and the event as a zigzag varint of its
//! difference from the previous entry's event (wrapping, from 0). `keys` is a varint count and
//! the keys as gaps. Varints are unsigned LEB128. Interned ids grow over time and related
//! state (members who joined one after another) tends to have neighbouring ids on both sides,
//! so most numbers take one or two bytes.

use sha2::{Digest as _, Sha256};

use crate::rooms::short_ids::{ShortEventId, ShortStateKey, SnapshotId};
use crate::storage::{DecodeError, KeyCodec, ValueCodec};

use super::StateMap;

/// The format version written by this build.
const FORMAT_VERSION: u8 = 1;
const KIND_BASE: u8 = 0;
const KIND_DELTA: u8 = 1;

/// An order-independent hash of a full state: the wrapping sum of one hash per entry, so a
/// delta updates it from its parent's without the full map.
///
/// A hash match is only a candidate: the states are compared before a snapshot is reused, so
/// a collision (accidental, or crafted: a sum of 64-bit values is not collision-resistant)
/// costs a missed dedup, never a wrong state. That is why 64 bits are enough, and they keep
/// every record and index entry small.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct ContentHash(pub(super) u64);

impl ContentHash {
    /// The hash of the empty state.
    pub(super) const EMPTY: Self = Self(0);

    fn entry(key: ShortStateKey, event: ShortEventId) -> u64 {
        let mut hasher = Sha256::new();
        hasher.update(key.0.to_be_bytes());
        hasher.update(event.0.to_be_bytes());
        let digest = hasher.finalize();
        let mut first = [0_u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }

    /// The hash of `state`.
    pub(super) fn of(state: &StateMap) -> Self {
        state.iter().fold(Self::EMPTY, |hash, (key, event)| {
            hash.with(*key, None, Some(*event))
        })
    }

    /// The hash after `key` changes from `old` to `new` (`None`: absent).
    pub(super) fn with(
        self,
        key: ShortStateKey,
        old: Option<ShortEventId>,
        new: Option<ShortEventId>,
    ) -> Self {
        let mut sum = self.0;
        if let Some(old) = old {
            sum = sum.wrapping_sub(Self::entry(key, old));
        }
        if let Some(new) = new {
            sum = sum.wrapping_add(Self::entry(key, new));
        }
        Self(sum)
    }
}

impl KeyCodec for ContentHash {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
    }

    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let (head, rest) = input
            .split_first_chunk::<8>()
            .ok_or_else(|| DecodeError("content hash key too short".to_owned()))?;
        *input = rest;
        Ok(Self(u64::from_be_bytes(*head)))
    }
}

/// One stored snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SnapshotRecord {
    /// Content hash of the full state.
    pub(super) hash: ContentHash,
    /// Number of entries in the full state.
    pub(super) len: u64,
    /// The state itself, or how it differs from the parent.
    pub(super) body: Body,
}

/// How a snapshot's state is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Body {
    /// The full state, sorted by key.
    Base {
        entries: Vec<(ShortStateKey, ShortEventId)>,
    },
    /// The difference from `parent`.
    Delta {
        parent: SnapshotId,
        /// The base at the end of the chain (for re-basing without walking it).
        base: SnapshotId,
        /// Deltas from this one down to the base, this one included.
        depth: u32,
        /// Entries added or changed, sorted by key.
        added: Vec<(ShortStateKey, ShortEventId)>,
        /// Keys removed, sorted.
        removed: Vec<ShortStateKey>,
    },
}

impl SnapshotRecord {
    /// Deltas from this snapshot down to its base (0 for a base).
    pub(super) fn depth(&self) -> u32 {
        match self.body {
            Body::Base { .. } => 0,
            Body::Delta { depth, .. } => depth,
        }
    }
}

impl ValueCodec for SnapshotRecord {
    fn encode_value(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(FORMAT_VERSION);
        match &self.body {
            Body::Base { .. } => out.push(KIND_BASE),
            Body::Delta { .. } => out.push(KIND_DELTA),
        }
        out.extend_from_slice(&self.hash.0.to_be_bytes());
        put_varint(&mut out, self.len);
        match &self.body {
            Body::Base { entries } => put_entries(&mut out, entries),
            Body::Delta {
                parent,
                base,
                depth,
                added,
                removed,
            } => {
                put_varint(&mut out, parent.0);
                put_varint(&mut out, base.0);
                put_varint(&mut out, u64::from(*depth));
                put_entries(&mut out, added);
                put_keys(&mut out, removed);
            }
        }
        out
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = bytes;
        let [version, kind] = take::<2>(&mut input)?;
        if version != FORMAT_VERSION {
            return Err(DecodeError(format!(
                "state snapshot format {version} is not known to this build"
            )));
        }
        let hash = ContentHash(u64::from_be_bytes(take::<8>(&mut input)?));
        let len = get_varint(&mut input)?;
        let body = match kind {
            KIND_BASE => {
                let entries = get_entries(&mut input)?;
                if entries.len() as u64 != len {
                    return Err(DecodeError(format!(
                        "base holds {} entries but says {len}",
                        entries.len()
                    )));
                }
                Body::Base { entries }
            }
            KIND_DELTA => {
                let parent = SnapshotId(get_varint(&mut input)?);
                let base = SnapshotId(get_varint(&mut input)?);
                let depth = u32::try_from(get_varint(&mut input)?)
                    .ok()
                    .filter(|depth| *depth >= 1)
                    .ok_or_else(|| DecodeError("bad delta depth".to_owned()))?;
                let added = get_entries(&mut input)?;
                let removed = get_keys(&mut input)?;
                Body::Delta {
                    parent,
                    base,
                    depth,
                    added,
                    removed,
                }
            }
            other => return Err(DecodeError(format!("unknown snapshot kind {other}"))),
        };
        if !input.is_empty() {
            return Err(DecodeError(format!(
                "{} trailing bytes after snapshot",
                input.len()
            )));
        }
        Ok(Self { hash, len, body })
    }
}

fn take<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let (head, rest) = input
        .split_first_chunk::<N>()
        .ok_or_else(|| DecodeError("snapshot truncated".to_owned()))?;
    *input = rest;
    Ok(*head)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(input: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0_u64;
    for (index, byte) in input.iter().enumerate() {
        let shift = 7 * index as u32;
        let bits = u64::from(byte & 0x7F);
        // The tenth byte may only carry the top bit of a u64.
        if shift >= 64 || (shift == 63 && bits > 1) {
            return Err(DecodeError("varint overflows u64".to_owned()));
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            *input = &input[index + 1..];
            return Ok(value);
        }
    }
    Err(DecodeError("snapshot truncated inside a varint".to_owned()))
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn put_entries(out: &mut Vec<u8>, entries: &[(ShortStateKey, ShortEventId)]) {
    put_varint(out, entries.len() as u64);
    let (mut last_key, mut last_event) = (0_u64, 0_u64);
    for (key, event) in entries {
        put_varint(out, key.0 - last_key);
        put_varint(out, zigzag(event.0.wrapping_sub(last_event) as i64));
        (last_key, last_event) = (key.0, event.0);
    }
}

fn put_keys(out: &mut Vec<u8>, keys: &[ShortStateKey]) {
    put_varint(out, keys.len() as u64);
    let mut last_key = 0_u64;
    for key in keys {
        put_varint(out, key.0 - last_key);
        last_key = key.0;
    }
}

/// A count read from the input, checked against the bytes left (each item takes at least
/// `min_bytes`), so a corrupt count cannot ask for a huge allocation.
fn get_count(input: &mut &[u8], min_bytes: usize) -> Result<usize, DecodeError> {
    let count = get_varint(input)?;
    usize::try_from(count)
        .ok()
        .filter(|count| count.saturating_mul(min_bytes) <= input.len())
        .ok_or_else(|| DecodeError(format!("snapshot count {count} exceeds its bytes")))
}

/// The next key from its gap; keys must strictly increase.
fn next_key(input: &mut &[u8], last: Option<u64>) -> Result<u64, DecodeError> {
    let gap = get_varint(input)?;
    match last {
        None => Ok(gap),
        Some(_) if gap == 0 => Err(DecodeError("snapshot keys not increasing".to_owned())),
        Some(last) => last
            .checked_add(gap)
            .ok_or_else(|| DecodeError("snapshot key overflows".to_owned())),
    }
}

fn get_entries(input: &mut &[u8]) -> Result<Vec<(ShortStateKey, ShortEventId)>, DecodeError> {
    let count = get_count(input, 2)?;
    let mut entries = Vec::with_capacity(count);
    let (mut last_key, mut last_event) = (None, 0_u64);
    for _ in 0..count {
        let key = next_key(input, last_key)?;
        let event = last_event.wrapping_add(unzigzag(get_varint(input)?) as u64);
        entries.push((ShortStateKey(key), ShortEventId(event)));
        (last_key, last_event) = (Some(key), event);
    }
    Ok(entries)
}

fn get_keys(input: &mut &[u8]) -> Result<Vec<ShortStateKey>, DecodeError> {
    let count = get_count(input, 1)?;
    let mut keys = Vec::with_capacity(count);
    let mut last_key = None;
    for _ in 0..count {
        let key = next_key(input, last_key)?;
        keys.push(ShortStateKey(key));
        last_key = Some(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(u64, u64)]) -> Vec<(ShortStateKey, ShortEventId)> {
        pairs
            .iter()
            .map(|(key, event)| (ShortStateKey(*key), ShortEventId(*event)))
            .collect()
    }

    #[test]
    fn records_round_trip() {
        let base = SnapshotRecord {
            hash: ContentHash(u64::MAX - 5),
            len: 4,
            body: Body::Base {
                entries: entries(&[(0, u64::MAX), (1, 0), (300, 7), (u64::MAX, 1 << 40)]),
            },
        };
        let delta = SnapshotRecord {
            hash: ContentHash(42),
            len: 1_000,
            body: Body::Delta {
                parent: SnapshotId(9),
                base: SnapshotId(u64::MAX),
                depth: 16,
                added: entries(&[(5, 5), (6, 4)]),
                removed: vec![ShortStateKey(1), ShortStateKey(u64::MAX)],
            },
        };
        for record in [base, delta] {
            let bytes = record.encode_value();
            assert_eq!(bytes[0], FORMAT_VERSION);
            assert_eq!(SnapshotRecord::decode_value(&bytes), Ok(record));
        }
    }

    #[test]
    fn neighbouring_ids_take_few_bytes() {
        let members: Vec<(u64, u64)> = (1_000..2_000).map(|n| (n, n * 3 + 50_000)).collect();
        let record = SnapshotRecord {
            hash: ContentHash::EMPTY,
            len: members.len() as u64,
            body: Body::Base {
                entries: entries(&members),
            },
        };
        // Header (2 + 8 + 2 + 2), the first entry (2 + 3), then two bytes per entry.
        assert!(record.encode_value().len() <= 20 + 2 * members.len());
    }

    #[test]
    fn corrupt_records_are_errors() {
        let record = SnapshotRecord {
            hash: ContentHash(1),
            len: 2,
            body: Body::Base {
                entries: entries(&[(1, 1), (2, 2)]),
            },
        };
        let bytes = record.encode_value();
        for cut in 0..bytes.len() {
            assert!(
                SnapshotRecord::decode_value(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SnapshotRecord::decode_value(&longer).is_err());
        let mut future = bytes.clone();
        future[0] = 2;
        assert!(SnapshotRecord::decode_value(&future).is_err());
        // A repeated key (gap 0 after the first) is rejected.
        let mut repeated = bytes.clone();
        let second_gap = repeated.len() - 2;
        repeated[second_gap] = 0;
        assert!(SnapshotRecord::decode_value(&repeated).is_err());
        // A huge count does not allocate.
        let mut huge = bytes[..10].to_vec();
        put_varint(&mut huge, 2);
        put_varint(&mut huge, u64::MAX);
        assert!(SnapshotRecord::decode_value(&huge).is_err());
        assert!(get_varint(&mut &[0xFF; 11][..]).is_err());
        assert!(
            get_varint(&mut &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02][..])
                .is_err()
        );
    }

    #[test]
    fn varints_and_zigzag_round_trip() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u64::MAX / 3, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut input = &out[..];
            assert_eq!(get_varint(&mut input), Ok(value));
            assert!(input.is_empty());
        }
        for value in [0, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(value)), value);
        }
        assert_eq!(zigzag(-1), 1);
    }

    #[test]
    fn hash_is_order_independent_and_incremental() {
        let a: StateMap = [
            (ShortStateKey(1), ShortEventId(10)),
            (ShortStateKey(2), ShortEventId(20)),
        ]
        .into_iter()
        .collect();
        let mut b = a.clone();
        b.insert(ShortStateKey(2), ShortEventId(21));
        let updated = ContentHash::of(&a).with(
            ShortStateKey(2),
            Some(ShortEventId(20)),
            Some(ShortEventId(21)),
        );
        assert_eq!(updated, ContentHash::of(&b));
        assert_ne!(ContentHash::of(&a), ContentHash::of(&b));
        let removed = ContentHash::of(&a)
            .with(ShortStateKey(1), Some(ShortEventId(10)), None)
            .with(ShortStateKey(2), Some(ShortEventId(20)), None);
        assert_eq!(removed, ContentHash::EMPTY);
        // Swapping values between keys changes the hash.
        let swapped: StateMap = [
            (ShortStateKey(1), ShortEventId(20)),
            (ShortStateKey(2), ShortEventId(10)),
        ]
        .into_iter()
        .collect();
        assert_ne!(ContentHash::of(&a), ContentHash::of(&swapped));
    }
}
