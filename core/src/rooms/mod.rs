//! Rooms: the room event graph and its state.

pub mod auth;
pub mod graph;
pub mod pdu;
pub mod resolve;
pub mod room_version;
pub mod short_ids;
pub mod state;
pub mod transactions;

#[cfg(test)]
mod fixtures;
