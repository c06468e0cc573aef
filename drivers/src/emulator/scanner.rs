//! A serial barcode scanner in software: writes `[prefix][AIM id]code<terminator>` frames on a
//! pseudo-terminal exactly as a configured scanner would, and garbage when asked, so the real
//! driver can be tested and demonstrated without hardware (`lanepay emulate scanner`).
//!
//! Commands (one per line, as `lanepay emulate scanner` reads them from stdin):
//! `scan CODE` (symbology inferred from the code), `scan-as AIM CODE` (for example
//! `scan-as ]C1 (01)0950...`), `garbage` (binary noise then a terminator), `long` (a line over
//! the driver's limit).

use std::io::Write;
use std::path::Path;

use serialport::TTYPort;

use super::pty::{PtyDevice, PtyGuard};
use crate::error::{DeviceError, ErrorKind};
use crate::scanner::{MAX_SCAN_LINE_BYTES, ScannerFormat, Symbology};

const DEVICE: &str = "scanner emulator";

/// The noise `garbage` sends before its terminator: NUL, bytes that are not UTF-8, an ESC and
/// DEL, what a scanner with a wrong baud rate or a flaky cable produces.
pub const GARBAGE: &[u8] = &[0x00, 0xFF, 0xFE, 0x1B, 0x80, 0x7F, 0xC3, 0x28, 0x01];

/// How the emulated scanner is configured (the same format the driver is told to expect, or
/// deliberately another to test mismatches).
#[derive(Clone, Debug, Default)]
pub struct ScannerEmulatorSettings {
    pub format: ScannerFormat,
    /// A stable path to link to the pseudo-terminal (see [`PtyDevice::create`]).
    pub link: Option<std::path::PathBuf>,
}

/// A command of the emulator's line interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScannerCommand {
    Scan { code: String },
    ScanAs { aim_id: String, code: String },
    Garbage,
    Long,
}

impl ScannerCommand {
    /// Parses one line of the command interface; the error says what is understood.
    pub fn parse(line: &str) -> Result<ScannerCommand, String> {
        let line = line.trim();
        let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match verb {
            "scan" if !rest.is_empty() => Ok(ScannerCommand::Scan {
                code: rest.to_owned(),
            }),
            "scan-as" => match rest.split_once(char::is_whitespace) {
                Some((aim_id, code))
                    if Symbology::from_aim(aim_id).is_some() && !code.trim().is_empty() =>
                {
                    Ok(ScannerCommand::ScanAs {
                        aim_id: aim_id.to_owned(),
                        code: code.trim().to_owned(),
                    })
                }
                _ => Err("usage: scan-as ]XY CODE".to_owned()),
            },
            "garbage" => Ok(ScannerCommand::Garbage),
            "long" => Ok(ScannerCommand::Long),
            _ => Err("commands: scan CODE | scan-as ]XY CODE | garbage | long".to_owned()),
        }
    }
}

/// The running emulated scanner. Dropping it closes the pseudo-terminal: the driver sees an
/// unplugged scanner.
#[derive(Debug)]
pub struct ScannerEmulator {
    master: TTYPort,
    _guard: PtyGuard,
    format: ScannerFormat,
}

impl ScannerEmulator {
    /// Creates the pseudo-terminal; returns the path the driver should open and the emulator.
    pub fn spawn(
        settings: ScannerEmulatorSettings,
    ) -> Result<(String, ScannerEmulator), DeviceError> {
        let pty = PtyDevice::create(DEVICE, settings.link.as_deref())?;
        let path = pty.path();
        let (master, guard) = pty.into_parts();
        Ok((
            path,
            ScannerEmulator {
                master,
                _guard: guard,
                format: settings.format,
            },
        ))
    }

    /// Same as [`ScannerEmulator::spawn`] with a link at `link`.
    pub fn spawn_linked(
        format: ScannerFormat,
        link: &Path,
    ) -> Result<(String, ScannerEmulator), DeviceError> {
        Self::spawn(ScannerEmulatorSettings {
            format,
            link: Some(link.to_path_buf()),
        })
    }

    /// The frame a scanner configured like this one sends for `code`.
    pub fn frame(&self, code: &str, symbology: &Symbology) -> Vec<u8> {
        let mut frame = self.format.prefix.as_bytes().to_vec();
        if self.format.aim_ids {
            frame.extend_from_slice(symbology.aim_id().as_bytes());
        }
        frame.extend_from_slice(code.as_bytes());
        frame.extend_from_slice(self.format.terminator.bytes());
        frame
    }

    /// Scans `code`, with the AIM identifier a scanner would choose for it.
    pub fn scan(&mut self, code: &str) -> Result<(), DeviceError> {
        let frame = self.frame(code, &symbology_for(code));
        self.send_raw(&frame)
    }

    /// Scans `code` as the symbology of `aim_id` (`]E0`, `]C1`, ...).
    pub fn scan_as(&mut self, aim_id: &str, code: &str) -> Result<(), DeviceError> {
        let symbology = Symbology::from_aim(aim_id).ok_or_else(|| {
            DeviceError::new(
                DEVICE,
                ErrorKind::Other,
                format!("{aim_id} is not an AIM identifier"),
            )
        })?;
        let frame = self.frame(code, &symbology);
        self.send_raw(&frame)
    }

    /// Sends binary noise followed by the terminator.
    pub fn garbage(&mut self) -> Result<(), DeviceError> {
        let mut frame = GARBAGE.to_vec();
        frame.extend_from_slice(self.format.terminator.bytes());
        self.send_raw(&frame)
    }

    /// Sends a printable line longer than the driver accepts, then the terminator.
    pub fn long_line(&mut self) -> Result<(), DeviceError> {
        let mut frame = vec![b'9'; MAX_SCAN_LINE_BYTES * 2];
        frame.extend_from_slice(self.format.terminator.bytes());
        self.send_raw(&frame)
    }

    /// Writes bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), DeviceError> {
        self.master
            .write_all(bytes)
            .and_then(|()| self.master.flush())
            .map_err(|error| DeviceError::new(DEVICE, ErrorKind::Disconnected, error.to_string()))
    }

    /// Runs one command of the line interface.
    pub fn execute(&mut self, command: &ScannerCommand) -> Result<(), DeviceError> {
        match command {
            ScannerCommand::Scan { code } => self.scan(code),
            ScannerCommand::ScanAs { aim_id, code } => self.scan_as(aim_id, code),
            ScannerCommand::Garbage => self.garbage(),
            ScannerCommand::Long => self.long_line(),
        }
    }
}

/// The symbology a scanner would report for `code`: EAN/UPC for 8, 12 and 13 digits, QR for
/// anything long or not plain ASCII, Code 128 otherwise.
pub fn symbology_for(code: &str) -> Symbology {
    let digits = code.bytes().all(|b| b.is_ascii_digit());
    match code.len() {
        8 if digits => Symbology::Ean8,
        12 if digits => Symbology::UpcA,
        13 if digits => Symbology::Ean13,
        len if len <= 48 && code.bytes().all(|b| (0x20..0x7F).contains(&b)) => Symbology::Code128,
        _ => Symbology::Qr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(
            ScannerCommand::parse("scan 4006381333931"),
            Ok(ScannerCommand::Scan {
                code: "4006381333931".into()
            })
        );
        assert_eq!(
            ScannerCommand::parse("scan-as ]C1 (01)123"),
            Ok(ScannerCommand::ScanAs {
                aim_id: "]C1".into(),
                code: "(01)123".into()
            })
        );
        assert_eq!(
            ScannerCommand::parse(" garbage "),
            Ok(ScannerCommand::Garbage)
        );
        assert!(ScannerCommand::parse("scan").is_err());
        assert!(ScannerCommand::parse("tap").is_err());
    }
}
