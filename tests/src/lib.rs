//! Helpers for Lanepay's end-to-end tests: find the built binaries, run a lane in a data
//! directory of its own, and drive it over its local API the way POS software does.

pub mod binary;
pub mod client;
pub mod lane;
pub mod money;
