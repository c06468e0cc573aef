//! The pseudo-terminal under every serial emulator (scanner, display, printer): the device
//! end a driver opens like a real port, an optional stable symlink to it, and the waiting
//! helper tests use instead of sleeping.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};

use crate::error::{DeviceError, ErrorKind};

/// How long an emulator thread waits for bytes before it looks at its stop flag again: bounds
/// how long dropping an emulator takes.
pub const EMULATOR_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The device end of a pseudo-terminal. The driver opens [`PtyDevice::path`] (or the stable
/// link) like any serial port; the emulator reads and writes the master side.
///
/// The emulator keeps its own handle on the driver's side too, so the master never sees a
/// hang-up while the driver closes and reopens the port. Dropping the `PtyDevice` closes both,
/// which the driver sees as an unplugged device.
#[derive(Debug)]
pub struct PtyDevice {
    master: TTYPort,
    guard: PtyGuard,
}

impl PtyDevice {
    /// Creates a pseudo-terminal. With `link`, also points a symbolic link at it (replacing
    /// an older link atomically), which gives the device a stable path across restarts: that
    /// is how an unplug/replug is simulated and how a training lane keeps its configuration.
    pub fn create(device: &'static str, link: Option<&Path>) -> Result<PtyDevice, DeviceError> {
        let (master, slave) = TTYPort::pair().map_err(|error| {
            DeviceError::new(
                device,
                ErrorKind::Other,
                format!("cannot create a pseudo-terminal: {error}"),
            )
        })?;
        let path = slave.name().ok_or_else(|| {
            DeviceError::new(device, ErrorKind::Other, "pseudo-terminal has no name")
        })?;
        if let Some(link) = link {
            replace_symlink(device, Path::new(&path), link)?;
        }
        let guard = PtyGuard {
            _slave: slave,
            path,
            link: link.map(Path::to_path_buf),
        };
        Ok(PtyDevice { master, guard })
    }

    /// The path a driver opens: the link when there is one, else the pseudo-terminal itself.
    pub fn path(&self) -> String {
        match &self.guard.link {
            Some(link) => link.to_string_lossy().into_owned(),
            None => self.guard.path.clone(),
        }
    }

    /// The pseudo-terminal's own path (`/dev/pts/N`).
    pub fn pty_path(&self) -> &str {
        &self.guard.path
    }

    pub fn master(&mut self) -> &mut TTYPort {
        &mut self.master
    }

    /// Splits into the master (for the emulator thread) and a guard that keeps the device
    /// alive and removes the link when dropped.
    pub fn into_parts(self) -> (TTYPort, PtyGuard) {
        (self.master, self.guard)
    }
}

/// Keeps the driver side of a pseudo-terminal open and owns its link (see [`PtyDevice`]).
#[derive(Debug)]
pub struct PtyGuard {
    // Held open on purpose (see [`PtyDevice`]); never read.
    _slave: TTYPort,
    path: String,
    link: Option<PathBuf>,
}

impl Drop for PtyGuard {
    fn drop(&mut self) {
        // A newer emulator may already have taken the link over; leave its link alone.
        if let Some(link) = &self.link
            && std::fs::read_link(link).is_ok_and(|current| current == Path::new(&self.path))
        {
            let _ = std::fs::remove_file(link);
        }
    }
}

#[cfg(unix)]
fn replace_symlink(device: &'static str, target: &Path, link: &Path) -> Result<(), DeviceError> {
    let file_name = link
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    let temporary = link.with_file_name(format!(
        ".{}.{}.tmp",
        file_name.unwrap_or_else(|| "device".to_owned()),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(target, &temporary)
        .and_then(|()| std::fs::rename(&temporary, link))
        .map_err(|error| {
            DeviceError::new(
                device,
                ErrorKind::Other,
                format!(
                    "cannot link {} to {}: {error}",
                    link.display(),
                    target.display()
                ),
            )
        })
}

#[cfg(not(unix))]
fn replace_symlink(device: &'static str, _target: &Path, _link: &Path) -> Result<(), DeviceError> {
    Err(DeviceError::new(
        device,
        ErrorKind::Other,
        "emulator links need a Unix system",
    ))
}

/// Waits until `condition` holds on the state behind `shared`, or `deadline` passes; returns
/// what the condition produced. Tests and tools wait on an emulator this way instead of
/// sleeping blindly.
pub(crate) fn wait_on<S, T>(
    shared: &(std::sync::Mutex<S>, std::sync::Condvar),
    deadline: Instant,
    mut condition: impl FnMut(&S) -> Option<T>,
) -> Option<T> {
    let (lock, changed) = shared;
    let mut state = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        if let Some(value) = condition(&state) {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        state = match changed.wait_timeout(state, deadline - now) {
            Ok((state, _)) => state,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}
