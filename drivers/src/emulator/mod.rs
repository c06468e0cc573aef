//! Protocol-faithful software devices (behind the `emulator` feature): tests, demos and
//! training lanes run the real drivers against them.

#[cfg(feature = "camera")]
pub mod camera;
pub mod display;
pub mod nfc;
pub mod printer;
pub mod pty;
pub mod scanner;
