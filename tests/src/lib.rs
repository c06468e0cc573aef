//! Helpers for Lanepay's end-to-end tests: find the built binaries, run a lane in a data
//! directory of its own, and drive it over its local API the way POS software does; run a
//! gateway, act as a terminal byte by byte, and put a fault-injecting proxy between them.

pub mod binary;
pub mod books;
pub mod client;
pub mod gateway;
pub mod lane;
pub mod money;
pub mod proxy;
pub mod terminal;
