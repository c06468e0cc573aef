//! Checkout hardware for the lane: one trait per device class, a real driver for each, and
//! (behind the `emulator` feature) a software device that speaks the same protocol on the
//! other end of a pseudo-terminal, so the same driver code runs in tests, demos, training
//! lanes and stores.

#[cfg(feature = "camera")]
pub mod camera;
pub mod display;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod error;
pub mod nfc;
pub mod printer;
pub mod scanner;
pub mod serial;
pub mod text;

pub use error::{DeviceError, DeviceStatus, ErrorKind};
