//! Serial plumbing shared by every serial device (scanner, pole display, receipt printer): open a
//! port from plain settings, read and write with timeouts, turn what the operating system says
//! into a [`DeviceError`] the lane can act on, and reopen a port that disappeared (unplug/replug)
//! with backoff, reporting each status change.
//!
//! Disappearance is detected the way it shows up on Linux for USB-serial adapters and
//! pseudo-terminals alike: a hang-up (`POLLHUP`, reported by `serialport` as `BrokenPipe`), an
//! I/O error, or end of file on read. Modem-line calls (DTR, RTS, carrier detect) fail with
//! "Not a typewriter" on a pseudo-terminal; they are best effort here and never fatal.

use std::io;
use std::time::{Duration, Instant};

use serialport::SerialPort;

use crate::error::{DeviceError, DeviceStatus, ErrorKind};

/// First delay before reopening a port that failed to open or went away. Short, because a
/// cashier who replugs a scanner expects it to work at once.
pub const REOPEN_DELAY_INITIAL: Duration = Duration::from_millis(50);

/// Longest delay between two reopen attempts: a missing device is probed at least this often,
/// which bounds how long a replugged device stays dark, and keeps an absent device from costing
/// more than one `open` every two seconds.
pub const REOPEN_DELAY_MAX: Duration = Duration::from_secs(2);

/// How long one write may block (a printer holding flow control, a stuck adapter) before it is
/// reported as a timeout.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how fast a serial device is connected. The agent maps its configuration onto this;
/// the drivers crate does not know the configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialSettings {
    /// Device path (`/dev/ttyACM0`, `/dev/pts/7`, a stable symlink such as
    /// `/dev/serial/by-id/...`) or `COM3` on Windows.
    pub path: String,
    /// Line speed in bits per second; pseudo-terminals accept and ignore it.
    pub baud: u32,
}

impl SerialSettings {
    pub fn new(path: impl Into<String>, baud: u32) -> SerialSettings {
        SerialSettings {
            path: path.into(),
            baud,
        }
    }
}

/// Opens a serial port: 8 data bits, no parity, one stop bit, no flow control, exclusive.
pub fn open_port(
    device: &'static str,
    settings: &SerialSettings,
) -> Result<Box<dyn SerialPort>, DeviceError> {
    if settings.path.trim().is_empty() {
        return Err(DeviceError::new(
            device,
            ErrorKind::Other,
            "no serial port configured: set the device's `port`",
        ));
    }
    serialport::new(&settings.path, settings.baud)
        .timeout(WRITE_TIMEOUT)
        .open()
        .map_err(|error| open_error(device, &settings.path, error))
}

fn open_error(device: &'static str, path: &str, error: serialport::Error) -> DeviceError {
    let message = error.to_string();
    match error.kind() {
        serialport::ErrorKind::NoDevice => DeviceError::new(
            device,
            ErrorKind::Disconnected,
            format!("{path}: no such device ({message}); is it plugged in?"),
        ),
        serialport::ErrorKind::Io(io::ErrorKind::NotFound) => DeviceError::new(
            device,
            ErrorKind::Disconnected,
            format!("{path} does not exist; is the device plugged in and the port right?"),
        ),
        serialport::ErrorKind::Io(io::ErrorKind::PermissionDenied) => DeviceError::new(
            device,
            ErrorKind::Other,
            format!("{path}: permission denied; add the lane's user to the `dialout` group"),
        ),
        _ if message.contains("Resource busy") || message.contains("EWOULDBLOCK") => {
            DeviceError::new(
                device,
                ErrorKind::Other,
                format!("{path} is in use by another program ({message})"),
            )
        }
        _ => DeviceError::new(
            device,
            ErrorKind::Other,
            format!("{path}: cannot open: {message}"),
        ),
    }
}

/// Classifies an I/O error on an open port. Everything except a timeout means the port is no
/// longer usable and has to be reopened, which is what a disconnect needs.
pub fn io_error(device: &'static str, error: &io::Error) -> DeviceError {
    match error.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => DeviceError::new(
            device,
            ErrorKind::Timeout,
            format!("no answer in time ({error})"),
        ),
        _ => DeviceError::new(
            device,
            ErrorKind::Disconnected,
            format!("port went away ({error}); waiting for it to come back"),
        ),
    }
}

/// Reads what is available within `timeout`. `Ok(0)` means nothing arrived (idle, not an
/// error); end of file and I/O errors are `Disconnected`.
pub fn read_some(
    device: &'static str,
    port: &mut dyn SerialPort,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<usize, DeviceError> {
    if let Err(error) = port.set_timeout(timeout) {
        return Err(DeviceError::new(
            device,
            ErrorKind::Disconnected,
            error.to_string(),
        ));
    }
    match port.read(buf) {
        Ok(0) => Err(DeviceError::new(
            device,
            ErrorKind::Disconnected,
            "port closed (end of file); waiting for it to come back",
        )),
        Ok(read) => Ok(read),
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Ok(0)
        }
        Err(error) if error.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(error) => Err(io_error(device, &error)),
    }
}

/// Writes all of `bytes` and flushes.
pub fn write_all(
    device: &'static str,
    port: &mut dyn SerialPort,
    bytes: &[u8],
) -> Result<(), DeviceError> {
    if let Err(error) = port.set_timeout(WRITE_TIMEOUT) {
        return Err(DeviceError::new(
            device,
            ErrorKind::Disconnected,
            error.to_string(),
        ));
    }
    port.write_all(bytes)
        .map_err(|error| io_error(device, &error))?;
    port.flush().map_err(|error| io_error(device, &error))
}

/// Asserts DTR and RTS, which some printers and displays need before they listen. Best effort:
/// pseudo-terminals and some adapters refuse modem-line calls ("Not a typewriter").
pub fn raise_modem_lines(device: &'static str, port: &mut dyn SerialPort) {
    if let Err(error) = port.write_data_terminal_ready(true) {
        tracing::debug!(device, %error, "cannot set DTR (normal on a pseudo-terminal)");
    }
    if let Err(error) = port.write_request_to_send(true) {
        tracing::debug!(device, %error, "cannot set RTS (normal on a pseudo-terminal)");
    }
}

/// Exponential backoff between reopen attempts, from [`REOPEN_DELAY_INITIAL`] doubling up to
/// [`REOPEN_DELAY_MAX`]; reset by a successful open.
#[derive(Clone, Debug)]
pub struct Backoff {
    next_delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next_delay: REOPEN_DELAY_INITIAL,
        }
    }
}

impl Backoff {
    /// The delay to wait now; the next one is twice as long, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next_delay;
        self.next_delay = (delay * 2).min(REOPEN_DELAY_MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.next_delay = REOPEN_DELAY_INITIAL;
    }
}

/// Called with each new status of a supervised port (only on changes).
pub type StatusCallback = Box<dyn FnMut(&DeviceStatus) + Send>;

/// A serial port that reopens itself: it is opened lazily, dropped on the first error that
/// means the device went away, and reopened (no sooner than the backoff allows) by the next
/// operation. Status changes go to the callback so the lane's status bar follows them.
pub struct SupervisedPort {
    device: &'static str,
    settings: SerialSettings,
    port: Option<Box<dyn SerialPort>>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    status: DeviceStatus,
    on_status: Option<StatusCallback>,
}

impl std::fmt::Debug for SupervisedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisedPort")
            .field("device", &self.device)
            .field("settings", &self.settings)
            .field("open", &self.port.is_some())
            .field("status", &self.status)
            .finish()
    }
}

impl SupervisedPort {
    /// A supervised port that is not opened yet (the first operation opens it).
    pub fn new(device: &'static str, settings: SerialSettings) -> SupervisedPort {
        SupervisedPort {
            device,
            settings,
            port: None,
            backoff: Backoff::default(),
            retry_at: None,
            status: DeviceStatus::Unavailable {
                kind: ErrorKind::Disconnected,
                reason: "not opened yet".to_owned(),
            },
            on_status: None,
        }
    }

    /// Calls `callback` on every status change from now on.
    pub fn on_status_change(&mut self, callback: StatusCallback) {
        self.on_status = Some(callback);
    }

    pub fn device(&self) -> &'static str {
        self.device
    }

    pub fn settings(&self) -> &SerialSettings {
        &self.settings
    }

    pub fn status(&self) -> &DeviceStatus {
        &self.status
    }

    pub fn is_open(&self) -> bool {
        self.port.is_some()
    }

    /// Sets the status and tells the callback if it changed. Drivers use it for what only they
    /// can see (a printer's paper sensor).
    pub fn set_status(&mut self, status: DeviceStatus) {
        if status != self.status {
            match &status {
                DeviceStatus::Ready => tracing::info!(device = self.device, "ready"),
                other => tracing::warn!(device = self.device, status = ?other, "status changed"),
            }
            self.status = status;
            if let Some(callback) = self.on_status.as_mut() {
                callback(&self.status);
            }
        }
    }

    /// How long until the next reopen attempt is allowed (zero when open or due).
    pub fn time_until_retry(&self) -> Duration {
        match (self.port.is_some(), self.retry_at) {
            (false, Some(at)) => at.saturating_duration_since(Instant::now()),
            _ => Duration::ZERO,
        }
    }

    /// Opens the port if it is closed and the backoff allows. Returns `Ok(true)` when it was
    /// just (re)opened, so the driver can initialise the device again.
    pub fn ensure_open(&mut self) -> Result<bool, DeviceError> {
        if self.port.is_some() {
            return Ok(false);
        }
        if let Some(at) = self.retry_at
            && Instant::now() < at
        {
            return Err(self.unavailable_error());
        }
        match open_port(self.device, &self.settings) {
            Ok(port) => {
                self.port = Some(port);
                self.backoff.reset();
                self.retry_at = None;
                self.set_status(DeviceStatus::Ready);
                Ok(true)
            }
            Err(error) => {
                self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                self.set_status(DeviceStatus::Unavailable {
                    kind: error.kind,
                    reason: error.message.clone(),
                });
                Err(error)
            }
        }
    }

    fn unavailable_error(&self) -> DeviceError {
        match &self.status {
            DeviceStatus::Unavailable { kind, reason } => {
                DeviceError::new(self.device, *kind, reason.clone())
            }
            _ => DeviceError::new(self.device, ErrorKind::Disconnected, "port is not open"),
        }
    }

    /// Lets the next operation try to reopen a closed port at once, whatever the backoff says.
    /// For a caller that already paces its attempts (the lane's once-a-second status poll):
    /// the backoff is for operations that may come in bursts.
    pub fn retry_now(&mut self) {
        self.retry_at = None;
    }

    /// Checks an open port for a hang-up without waiting or sending anything: a device that
    /// only listens (a pole display) otherwise goes unnoticed until the next write. Bytes the
    /// device sent are discarded. A hang-up drops the port (status `Unavailable`).
    pub fn check_connection(&mut self) {
        if self.port.is_none() {
            return;
        }
        let mut discarded = [0u8; 64];
        if let Err(error) = self.read(&mut discarded, Duration::ZERO) {
            tracing::debug!(device = self.device, %error, "connection check failed");
        }
    }

    /// Drops the port after an error that means it is gone; the next operation reopens it.
    pub fn mark_lost(&mut self, error: &DeviceError) {
        self.port = None;
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        self.set_status(DeviceStatus::Unavailable {
            kind: ErrorKind::Disconnected,
            reason: error.message.clone(),
        });
    }

    /// Runs `operation` on the open port; a `Disconnected` error drops the port.
    pub fn with_port<T>(
        &mut self,
        operation: impl FnOnce(&'static str, &mut dyn SerialPort) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        self.ensure_open()?;
        let device = self.device;
        let Some(port) = self.port.as_mut() else {
            return Err(self.unavailable_error());
        };
        match operation(device, port.as_mut()) {
            Err(error) if error.kind == ErrorKind::Disconnected => {
                self.mark_lost(&error);
                Err(error)
            }
            other => other,
        }
    }

    /// Writes `bytes` (opening the port first if needed).
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), DeviceError> {
        self.with_port(|device, port| write_all(device, port, bytes))
    }

    /// Reads what arrives within `timeout`; `Ok(0)` when nothing did.
    pub fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, DeviceError> {
        self.with_port(|device, port| read_some(device, port, buf, timeout))
    }

    /// Discards unread input (stale answers) best effort.
    pub fn clear_input(&mut self) {
        if let Some(port) = self.port.as_mut()
            && let Err(error) = port.clear(serialport::ClearBuffer::Input)
        {
            tracing::debug!(device = self.device, %error, "cannot clear input buffer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay(), REOPEN_DELAY_INITIAL);
        assert_eq!(backoff.next_delay(), REOPEN_DELAY_INITIAL * 2);
        for _ in 0..20 {
            backoff.next_delay();
        }
        assert_eq!(backoff.next_delay(), REOPEN_DELAY_MAX);
        backoff.reset();
        assert_eq!(backoff.next_delay(), REOPEN_DELAY_INITIAL);
    }

    #[test]
    fn a_missing_port_is_disconnected_and_says_what_to_check() {
        let error = open_port(
            "scanner",
            &SerialSettings::new("/dev/lanepay-no-such-port", 9600),
        )
        .err()
        .unwrap();
        assert_eq!(error.kind, ErrorKind::Disconnected, "{error}");
        assert!(error.message.contains("plugged in"), "{error}");
    }
}
