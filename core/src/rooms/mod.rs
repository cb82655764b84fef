//! Rooms: the room event graph and its state.

pub mod aliases;
pub mod auth;
pub mod directory;
pub mod graph;
pub mod hierarchy;
pub mod pdu;
pub mod power;
pub mod relations;
pub mod reports;
pub mod resolve;
pub mod room_version;
pub mod short_ids;
pub mod state;
pub mod transactions;
pub mod upgrade;

#[cfg(test)]
mod fixtures;
