//! Axon's application service API: registrations (from YAML files), user and alias
//! namespaces, the transaction sender that pushes events to bridges and bots, and the
//! appservice-facing endpoints.
//!
//! Nothing is built here yet; until it is, no application service can authenticate (an
//! appservice token is always refused by the API layer).
