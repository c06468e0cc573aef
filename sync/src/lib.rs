//! The wire protocol between a lane and the gateway.
//!
//! Both sides link this crate, so there is exactly one definition of the bytes that are
//! hashed and signed: the canonical JSON encoding ([`canonical`]), the signed, hash-chained
//! journal entry ([`journal`]) and the payload types that entries carry ([`payload`]).
//! The format is written down for other implementations in `docs/journal.md`.

pub mod auth;
pub mod canonical;
#[cfg(feature = "client")]
pub mod client;
pub mod config;
pub mod ingest;
pub mod journal;
pub mod payload;
pub mod payment;
pub mod wire;
