//! Lanepay's end-to-end tests: scenarios that run the real binaries (built beforehand with
//! `cargo build --workspace --bins`). One test binary; each scenario is a module.
#![allow(clippy::unwrap_used)]

mod crash;
mod demo;
mod sync;
mod sync_chaos;
mod sync_config;
mod sync_faults;
