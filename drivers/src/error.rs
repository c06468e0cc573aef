//! What can go wrong with a device, in terms the lane can act on: one error type shared by
//! every device class (after embedded-hal's `ErrorKind`).

use std::fmt;

/// The class of a device failure. The lane decides what to do from this, never from a
/// device-specific message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The device is gone (unplugged, port closed); the driver reopens it when it returns.
    Disconnected,
    /// The device did not answer in time.
    Timeout,
    /// The device answered with bytes that break its protocol.
    Protocol,
    /// The device reported a condition that needs a person (paper out, cover open).
    NeedsAttention,
    /// Anything else (configuration, operating system).
    Other,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Disconnected => "disconnected",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::NeedsAttention => "needs attention",
            ErrorKind::Other => "error",
        })
    }
}

/// A device error: its kind and a message a store technician can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{device}: {kind}: {message}")]
pub struct DeviceError {
    pub device: &'static str,
    pub kind: ErrorKind,
    pub message: String,
}

impl DeviceError {
    pub fn new(device: &'static str, kind: ErrorKind, message: impl Into<String>) -> DeviceError {
        DeviceError {
            device,
            kind,
            message: message.into(),
        }
    }
}

/// A device's state as the lane shows it in its status bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Not configured: the lane runs without it and says so.
    NotConfigured,
    Ready,
    /// Ready but a person should look (paper low).
    Warning(String),
    /// Configured but not usable now; the reason says what to do.
    Unavailable {
        kind: ErrorKind,
        reason: String,
    },
}
