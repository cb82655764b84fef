//! State resolution: ruma's implementation of state resolution v2 (and v2.1 for v12 rooms),
//! wrapped, with the auth chain and conflicted-subgraph computations it needs from the caller.
//!
//! Room version 1 uses state resolution v1, which ruma does not implement. [`resolve_state`]
//! resolves v1 state sets that agree (all algorithms give the same answer then) and returns
//! [`ResolveError::UnsupportedAlgorithm`] for v1 forks that conflict.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet, VecDeque};

use ruma::room_version_rules::StateResolutionVersion;
use ruma::state_res::Event;
use ruma::state_res::utils::event_id_set::EventIdSet;
use ruma::{EventId, OwnedEventId, RoomVersionId};

pub use ruma::state_res::StateMap;

use super::room_version::RoomVersion;

/// Why state could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The room version's state resolution algorithm is not implemented (version 1) and the
    /// state sets conflict.
    #[error("state resolution for room version {0} is not implemented and the state sets conflict")]
    UnsupportedAlgorithm(RoomVersionId),
    /// An event the computation needs is not available.
    #[error("event {0} is needed for state resolution but is missing")]
    MissingEvent(OwnedEventId),
    /// ruma's resolution failed (an auth event it needed is missing or malformed).
    #[error("state resolution failed: {0}")]
    Failed(String),
}

/// Resolves the state of a room from the state sets of the forks being merged (the states after
/// each prev event), through ruma's `resolve`.
///
/// `auth_chains` holds the full auth chain of each state set (the union of the auth chains of its
/// events; [`state_set_auth_chain`] computes one). `fetch_event` finds any event of the room by
/// id; it is called often, so make it cheap (return `&Pdu` or `Arc<Pdu>`). For v12 rooms the
/// conflicted state subgraph (state resolution v2.1) is computed here through `fetch_event`.
pub fn resolve_state<E>(
    room_version: &RoomVersion,
    state_sets: &[StateMap<OwnedEventId>],
    auth_chains: Vec<HashSet<OwnedEventId>>,
    fetch_event: impl Fn(&EventId) -> Option<E>,
) -> Result<StateMap<OwnedEventId>, ResolveError>
where
    E: Event<Id = OwnedEventId> + Clone,
{
    let rules = room_version.rules();
    let StateResolutionVersion::V2(v2_rules) = &rules.state_res else {
        return agreed_state(room_version, state_sets);
    };
    let auth_chains = auth_chains
        .into_iter()
        .map(|chain| chain.into_iter().collect::<EventIdSet<OwnedEventId>>())
        .collect();
    ruma::state_res::resolve(
        &rules.authorization,
        v2_rules,
        state_sets,
        auth_chains,
        &fetch_event,
        |conflicted| Some(conflicted_state_subgraph(conflicted, &fetch_event)),
    )
    .map_err(|err| match err {
        ruma::state_res::Error::NotFound(event_id) => ResolveError::MissingEvent(event_id),
        other => ResolveError::Failed(other.to_string()),
    })
}

/// [`resolve_state`] with the auth chains computed from `fetch_event` (for callers without an
/// auth chain index).
pub fn resolve_state_computing_auth_chains<E>(
    room_version: &RoomVersion,
    state_sets: &[StateMap<OwnedEventId>],
    fetch_event: impl Fn(&EventId) -> Option<E>,
) -> Result<StateMap<OwnedEventId>, ResolveError>
where
    E: Event<Id = OwnedEventId> + Clone,
{
    let auth_chains = state_sets
        .iter()
        .map(|state_set| state_set_auth_chain(state_set, &fetch_event))
        .collect::<Result<Vec<_>, _>>()?;
    resolve_state(room_version, state_sets, auth_chains, fetch_event)
}

/// The auth chain of a state set for the auth difference: every event reachable through
/// `auth_events` from its events, and the events themselves.
///
/// The spec's wording leaves the set's own events out, but Synapse counts them (an event is
/// in a set's chain when it is reachable from the set, itself included), and every server in
/// a room must compute the same difference or the room's state splits. Counting them keeps a
/// state event that every fork holds out of the difference: unconflicted state is never
/// resolved again.
pub fn state_set_auth_chain<E: Event>(
    state_set: &StateMap<OwnedEventId>,
    fetch_event: impl Fn(&EventId) -> Option<E>,
) -> Result<HashSet<OwnedEventId>, ResolveError> {
    let mut chain = auth_chain(state_set.values().cloned(), fetch_event)?;
    chain.extend(state_set.values().cloned());
    Ok(chain)
}

/// The auth chain of `event_ids`: the transitive closure of their `auth_events`, walked
/// breadth-first with a visited set (no recursion, so deep rooms cannot overflow the stack, and
/// each event is fetched once). The starting events are included only if they are in the chain
/// of another.
pub fn auth_chain<E: Event>(
    event_ids: impl IntoIterator<Item = OwnedEventId>,
    fetch_event: impl Fn(&EventId) -> Option<E>,
) -> Result<HashSet<OwnedEventId>, ResolveError> {
    let mut chain = HashSet::new();
    let mut queue: VecDeque<OwnedEventId> = event_ids.into_iter().collect();
    let mut expanded: HashSet<OwnedEventId> = HashSet::new();
    while let Some(event_id) = queue.pop_front() {
        if !expanded.insert(event_id.clone()) {
            continue;
        }
        let event =
            fetch_event(&event_id).ok_or_else(|| ResolveError::MissingEvent(event_id.clone()))?;
        for auth_event_id in event.auth_events() {
            let auth_event_id: &EventId = auth_event_id.borrow();
            if chain.insert(auth_event_id.to_owned()) {
                queue.push_back(auth_event_id.to_owned());
            }
        }
    }
    Ok(chain)
}

/// State resolution of rooms whose algorithm ruma lacks (v1): the state sets must agree.
fn agreed_state(
    room_version: &RoomVersion,
    state_sets: &[StateMap<OwnedEventId>],
) -> Result<StateMap<OwnedEventId>, ResolveError> {
    let Some((first, rest)) = state_sets.split_first() else {
        return Ok(StateMap::new());
    };
    if rest.iter().all(|state_set| state_set == first) {
        Ok(first.clone())
    } else {
        Err(ResolveError::UnsupportedAlgorithm(
            room_version.id().clone(),
        ))
    }
}

/// The conflicted state subgraph of state resolution v2.1: the events on an `auth_events` path
/// from one conflicted state event to another, i.e. the ancestors of conflicted events that are
/// also descendants of conflicted events (the conflicted events themselves included).
///
/// Computed iteratively: collect the ancestors with their auth edges, then walk the reversed
/// edges from the conflicted events. Events that cannot be fetched are left out, as ruma leaves
/// out unknown events of the full conflicted set.
fn conflicted_state_subgraph<E: Event>(
    conflicted: &StateMap<Vec<OwnedEventId>>,
    fetch_event: impl Fn(&EventId) -> Option<E>,
) -> EventIdSet<OwnedEventId> {
    let conflicted_ids: Vec<OwnedEventId> = conflicted.values().flatten().cloned().collect();

    // The ancestors (inclusive) and, for each, the events that list it in `auth_events`.
    let mut children: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
    let mut seen: HashSet<OwnedEventId> = conflicted_ids.iter().cloned().collect();
    let mut queue: VecDeque<OwnedEventId> = conflicted_ids.iter().cloned().collect();
    while let Some(event_id) = queue.pop_front() {
        let Some(event) = fetch_event(&event_id) else {
            continue;
        };
        for parent in event.auth_events() {
            let parent: &EventId = parent.borrow();
            children
                .entry(parent.to_owned())
                .or_default()
                .push(event_id.clone());
            if seen.insert(parent.to_owned()) {
                queue.push_back(parent.to_owned());
            }
        }
    }

    // Descendants (inclusive) of conflicted events among those ancestors.
    let mut subgraph = EventIdSet::new();
    let mut queue: VecDeque<OwnedEventId> = conflicted_ids.into_iter().collect();
    while let Some(event_id) = queue.pop_front() {
        if subgraph.contains(&event_id) {
            continue;
        }
        if let Some(event_children) = children.get(&event_id) {
            queue.extend(event_children.iter().cloned());
        }
        subgraph.insert(event_id);
    }
    subgraph
}

#[cfg(test)]
mod tests {
    use ruma::CanonicalJsonObject;
    use serde_json::json;

    use super::*;
    use crate::rooms::pdu::Pdu;

    /// A room v1 event (whose id is any string, so graphs can have cycles) listing `auth`.
    fn v1_event(id: &str, auth: &[String]) -> Pdu {
        let references: Vec<_> = auth
            .iter()
            .map(|auth_id| json!([auth_id, { "sha256": "aGFzaA" }]))
            .collect();
        let json: CanonicalJsonObject = serde_json::from_value(json!({
            "event_id": id,
            "room_id": "!room:example.org",
            "sender": "@alice:example.org",
            "type": "m.room.member",
            "state_key": "@alice:example.org",
            "content": { "membership": "join" },
            "prev_events": [],
            "auth_events": references,
            "depth": 1,
            "origin_server_ts": 1,
            "hashes": { "sha256": "aGFzaA" },
            "signatures": {},
        }))
        .unwrap();
        Pdu::from_canonical(json, &RoomVersion::parse("1").unwrap()).unwrap()
    }

    fn graph(events: Vec<Pdu>) -> HashMap<OwnedEventId, Pdu> {
        events
            .into_iter()
            .map(|pdu| (pdu.event_id().to_owned(), pdu))
            .collect()
    }

    #[test]
    fn a_deep_auth_chain_is_walked_without_recursion() {
        let depth = 10_000;
        let id = |n: usize| format!("$e{n}:example.org");
        let events = graph(
            (0..depth)
                .map(|n| {
                    let auth = if n == 0 { vec![] } else { vec![id(n - 1)] };
                    v1_event(&id(n), &auth)
                })
                .collect(),
        );
        let top = OwnedEventId::try_from(id(depth - 1)).unwrap();
        let chain = auth_chain([top.clone()], |event_id: &EventId| events.get(event_id)).unwrap();
        assert_eq!(chain.len(), depth - 1);
        assert!(!chain.contains(&top));
    }

    #[test]
    fn cycles_in_the_auth_graph_terminate() {
        let a = "$a:example.org".to_owned();
        let b = "$b:example.org".to_owned();
        let c = "$c:example.org".to_owned();
        let events = graph(vec![
            v1_event(&a, std::slice::from_ref(&b)),
            v1_event(&b, &[c.clone(), a.clone()]),
            v1_event(&c, std::slice::from_ref(&a)),
        ]);
        let start = OwnedEventId::try_from(a.as_str()).unwrap();
        let chain = auth_chain([start], |event_id: &EventId| events.get(event_id)).unwrap();
        let want: HashSet<OwnedEventId> = [a, b, c]
            .into_iter()
            .map(|id| OwnedEventId::try_from(id).unwrap())
            .collect();
        assert_eq!(chain, want);
    }

    #[test]
    fn the_conflicted_subgraph_holds_the_paths_between_conflicted_events() {
        // create <- power1 <- member <- power2, and an unrelated branch create <- other.
        let ids = ["create", "power1", "member", "power2", "other"]
            .map(|name| format!("${name}:example.org"));
        let [create, power1, member, power2, other] = ids.clone();
        let events = graph(vec![
            v1_event(&create, &[]),
            v1_event(&power1, std::slice::from_ref(&create)),
            v1_event(&member, std::slice::from_ref(&power1)),
            v1_event(&power2, std::slice::from_ref(&member)),
            v1_event(&other, std::slice::from_ref(&create)),
        ]);
        let id = |name: &str| OwnedEventId::try_from(name).unwrap();
        let conflicted: StateMap<Vec<OwnedEventId>> = StateMap::from([(
            ("m.room.power_levels".into(), String::new()),
            vec![id(&power1), id(&power2)],
        )]);
        let subgraph =
            conflicted_state_subgraph(&conflicted, |event_id: &EventId| events.get(event_id));
        let mut found: Vec<String> = subgraph.into_iter().map(|id| id.to_string()).collect();
        found.sort();
        let mut want = vec![power1, member, power2];
        want.sort();
        assert_eq!(found, want);
    }
}
