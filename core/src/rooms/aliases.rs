//! Room aliases: `#name:server` -> room id, for the aliases of this server.
//!
//! Two tables in two column families: the alias map (`room_aliases`: alias -> room and the
//! user who created the alias) and its reverse index (`room_aliases_by_room`: `(room, alias)`),
//! for `GET /rooms/{roomId}/aliases`. Both change in one atomic batch.
//!
//! Creating and deleting aliases check and write under the rooms service's allocation lock
//! ([`ShortIds::begin`](crate::rooms::short_ids::ShortIds::begin)), so two requests racing
//! for one alias cannot both win.
//!
//! Remote aliases (another server's name) are not stored here: resolving them is a
//! federation query.

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use crate::rooms::graph::Rooms;
use crate::storage::{Json, KvStore, StorageError, Table, catalogue};

/// alias -> what it points to.
const ALIASES: Table<OwnedRoomAliasId, Json<AliasRecord>> = Table::new(&catalogue::ROOM_ALIASES);
/// `(room, alias)`: the aliases of each room.
const ALIASES_BY_ROOM: Table<(OwnedRoomId, OwnedRoomAliasId), ()> =
    Table::new(&catalogue::ROOM_ALIASES_BY_ROOM);

/// What a local alias points to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    /// The room.
    pub room_id: OwnedRoomId,
    /// The user who created the alias (who may always delete it).
    pub creator: OwnedUserId,
}

/// What can go wrong creating or deleting an alias.
///
/// The comment on each variant names the errcode the client API answers with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AliasError {
    /// The alias already exists. `M_UNKNOWN` 409 (`M_ROOM_IN_USE` 400 from `createRoom`).
    #[error("room alias {0} already exists")]
    InUse(OwnedRoomAliasId),
    /// The alias does not exist. `M_NOT_FOUND` 404.
    #[error("room alias {0} not found")]
    NotFound(OwnedRoomAliasId),
    /// The alias names another server. `M_INVALID_PARAM` 400.
    #[error("room alias {0} is not on this server")]
    NotLocal(OwnedRoomAliasId),
    /// The store failed. 500.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The room a local alias points to, if the alias exists.
pub fn resolve(
    store: &dyn KvStore,
    alias: &RoomAliasId,
) -> Result<Option<AliasRecord>, StorageError> {
    Ok(ALIASES
        .get(store, &alias.to_owned())?
        .map(|Json(record)| record))
}

/// The local aliases of `room_id`, in alias order.
pub fn aliases_of(
    store: &dyn KvStore,
    room_id: &RoomId,
) -> Result<Vec<OwnedRoomAliasId>, StorageError> {
    Ok(ALIASES_BY_ROOM
        .scan_prefix(store, &(room_id.to_owned(),))?
        .into_iter()
        .map(|((_, alias), ())| alias)
        .collect())
}

/// Creates the local alias `alias` for `room_id`, made by `creator`. The caller checks that
/// the room exists.
pub fn create(
    rooms: &Rooms,
    alias: &RoomAliasId,
    room_id: &RoomId,
    creator: &UserId,
) -> Result<(), AliasError> {
    check_local(rooms, alias)?;
    let store = rooms.store();
    let mut batch = rooms.short_ids().begin();
    if ALIASES.contains(store, &alias.to_owned())? {
        return Err(AliasError::InUse(alias.to_owned()));
    }
    let record = AliasRecord {
        room_id: room_id.to_owned(),
        creator: creator.to_owned(),
    };
    ALIASES.put(batch.write_batch(), &alias.to_owned(), &Json(record));
    ALIASES_BY_ROOM.put(
        batch.write_batch(),
        &(room_id.to_owned(), alias.to_owned()),
        &(),
    );
    batch.commit(store)?;
    Ok(())
}

/// Deletes the local alias `alias` if `allowed` accepts what it points to, and returns that.
/// `allowed` runs under the lock, so the record it judges is the one deleted.
pub fn delete<F>(rooms: &Rooms, alias: &RoomAliasId, allowed: F) -> Result<AliasRecord, AliasError>
where
    F: FnOnce(&AliasRecord) -> Result<(), AliasError>,
{
    check_local(rooms, alias)?;
    let store = rooms.store();
    let mut batch = rooms.short_ids().begin();
    let Some(Json(record)) = ALIASES.get(store, &alias.to_owned())? else {
        return Err(AliasError::NotFound(alias.to_owned()));
    };
    allowed(&record)?;
    ALIASES.delete(batch.write_batch(), &alias.to_owned());
    ALIASES_BY_ROOM.delete(
        batch.write_batch(),
        &(record.room_id.clone(), alias.to_owned()),
    );
    batch.commit(store)?;
    Ok(record)
}

/// Moves every local alias of `old` to `new`, each keeping its creator, in one batch (a room
/// upgrade must not lose an alias halfway). Returns the aliases moved.
pub fn move_all(
    rooms: &Rooms,
    old: &RoomId,
    new: &RoomId,
) -> Result<Vec<OwnedRoomAliasId>, AliasError> {
    let store = rooms.store();
    let mut batch = rooms.short_ids().begin();
    let mut moved = Vec::new();
    for alias in aliases_of(store, old)? {
        let Some(Json(mut record)) = ALIASES.get(store, &alias)? else {
            continue;
        };
        ALIASES_BY_ROOM.delete(batch.write_batch(), &(old.to_owned(), alias.clone()));
        if record.room_id != old {
            // A stale index entry: drop it, leave the alias where it points.
            continue;
        }
        record.room_id = new.to_owned();
        ALIASES.put(batch.write_batch(), &alias, &Json(record));
        ALIASES_BY_ROOM.put(batch.write_batch(), &(new.to_owned(), alias.clone()), &());
        moved.push(alias);
    }
    batch.commit(store)?;
    Ok(moved)
}

fn check_local(rooms: &Rooms, alias: &RoomAliasId) -> Result<(), AliasError> {
    if alias.server_name() == rooms.server_name() {
        Ok(())
    } else {
        Err(AliasError::NotLocal(alias.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{room_alias_id, room_id, server_name, user_id};

    use super::*;
    use crate::keys::ServerKeys;
    use crate::storage::MemoryStore;

    fn rooms() -> (Rooms, tempfile::TempDir) {
        let store: Arc<dyn KvStore> = Arc::new(MemoryStore::new());
        let key_dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(
            ServerKeys::load_or_create(key_dir.path(), server_name!("example.org")).unwrap(),
        );
        (Rooms::new(store, keys).unwrap(), key_dir)
    }

    #[test]
    fn aliases_are_created_once_listed_and_deleted() {
        let (rooms, _keys) = rooms();
        let alias = room_alias_id!("#lobby:example.org");
        let room = room_id!("!a:example.org");
        let alice = user_id!("@alice:example.org");
        assert_eq!(resolve(rooms.store(), alias).unwrap(), None);
        create(&rooms, alias, room, alice).unwrap();
        assert!(matches!(
            create(&rooms, alias, room_id!("!b:example.org"), alice),
            Err(AliasError::InUse(_))
        ));
        let record = resolve(rooms.store(), alias).unwrap().unwrap();
        assert_eq!(record.room_id, room);
        assert_eq!(record.creator, alice);
        assert_eq!(
            aliases_of(rooms.store(), room).unwrap(),
            vec![alias.to_owned()]
        );

        let refused = delete(&rooms, alias, |_| {
            Err(AliasError::NotFound(alias.to_owned()))
        });
        assert!(refused.is_err());
        assert!(resolve(rooms.store(), alias).unwrap().is_some());
        delete(&rooms, alias, |_| Ok(())).unwrap();
        assert_eq!(resolve(rooms.store(), alias).unwrap(), None);
        assert!(aliases_of(rooms.store(), room).unwrap().is_empty());
        assert!(matches!(
            delete(&rooms, alias, |_| Ok(())),
            Err(AliasError::NotFound(_))
        ));
    }

    #[test]
    fn move_all_moves_every_alias_with_its_creator() {
        let (rooms, _keys) = rooms();
        let old = room_id!("!old:example.org");
        let new = room_id!("!new:example.org");
        let alice = user_id!("@alice:example.org");
        let bob = user_id!("@bob:example.org");
        create(&rooms, room_alias_id!("#a:example.org"), old, alice).unwrap();
        create(&rooms, room_alias_id!("#b:example.org"), old, bob).unwrap();
        create(&rooms, room_alias_id!("#other:example.org"), new, bob).unwrap();

        let moved = move_all(&rooms, old, new).unwrap();
        assert_eq!(moved.len(), 2);
        assert!(aliases_of(rooms.store(), old).unwrap().is_empty());
        assert_eq!(aliases_of(rooms.store(), new).unwrap().len(), 3);
        let b = resolve(rooms.store(), room_alias_id!("#b:example.org"))
            .unwrap()
            .unwrap();
        assert_eq!((b.room_id.as_ref(), b.creator.as_ref()), (new, bob));
        assert!(move_all(&rooms, old, new).unwrap().is_empty());
    }

    #[test]
    fn foreign_aliases_are_refused() {
        let (rooms, _keys) = rooms();
        let alias = room_alias_id!("#lobby:elsewhere.org");
        let alice = user_id!("@alice:example.org");
        assert!(matches!(
            create(&rooms, alias, room_id!("!a:example.org"), alice),
            Err(AliasError::NotLocal(_))
        ));
        assert!(matches!(
            delete(&rooms, alias, |_| Ok(())),
            Err(AliasError::NotLocal(_))
        ));
    }
}
