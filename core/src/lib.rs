//! Axon's core: everything a homeserver knows without HTTP.
//!
//! Storage (the key-value trait and its backends), the server's signing keys, accounts
//! (users, devices, tokens), and later the room event graph and the streams. No axum, no
//! reqwest: the API crates above translate HTTP into calls on these services.

pub mod accounts;
pub mod keys;
pub mod rooms;
mod services;
pub mod storage;

pub use services::Services;
