//! Lanes at the gateway: enrollment with one-time tokens, signed terminal requests, exactly-once
//! ingestion of journal entries with the ledger they move, and HQ's view of the fleet.
//!
//! Kept in its own SQLite file (`terminals.sqlite`), so that an entry and its ledger update
//! commit in one transaction without contending with the payment API's writer. Protocol types
//! and the ingestion verdicts come from `lanepay-sync`; `docs/sync.md` is the reference.

pub mod http;
pub mod keys;
pub mod payments;
pub mod service;
pub mod store;

pub use service::{TerminalError, TerminalService};
