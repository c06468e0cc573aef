//! Receipt printers speaking ESC/POS over a serial line (RS-232 or USB-serial): the driver
//! turns a receipt (lines, an optional QR code, cut, drawer kick) into ESC/POS bytes and reads
//! the printer's real-time status (`DLE EOT`) into a [`DeviceStatus`]; the command parser here
//! is shared with the emulator, which turns the bytes back into a receipt.
//!
//! Commands used by the driver: `ESC @` initialise, `FS &` Chinese (GB18030) mode, `ESC a n`
//! alignment, `ESC E n` bold, `GS ! n` character size, text + `LF`, `GS ( k` QR code (model 2,
//! module size, error correction M, store, print), `ESC d n` feed, `GS V 66 0` feed-and-cut,
//! `ESC p 0 25 250` drawer kick on pin 2, `DLE EOT 1/2/4` status.

use std::time::{Duration, Instant};

use crate::error::{DeviceError, DeviceStatus, ErrorKind};
use crate::serial::{SerialSettings, SupervisedPort};
use crate::text::{self, TextEncoding};

const DEVICE: &str = "printer";

/// How long the printer has to answer a `DLE EOT` status request; ESC/POS printers answer
/// real-time commands within milliseconds even while printing.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// Largest QR payload sent: what a version 40 QR code holds in byte mode with error
/// correction M (the level the driver uses).
pub const MAX_QR_PAYLOAD_BYTES: usize = 2331;

/// Most receipt lines in one job; a longer receipt is a bug upstream, not a long sale.
pub const MAX_RECEIPT_LINES: usize = 2000;

/// QR module size in dots (1-16); 6 dots on a 203 dpi head is about 0.75 mm, which phone
/// cameras read easily at arm's length.
pub const QR_MODULE_DOTS: u8 = 6;

/// Characters per line on 80 mm paper with font A (12 × 24 dots), the common lane printer.
pub const RECEIPT_COLUMNS_80MM: usize = 48;
/// Characters per line on 58 mm paper with font A.
pub const RECEIPT_COLUMNS_58MM: usize = 32;

/// Lines fed before the cut, so the last printed line clears the cutter.
pub const FEED_BEFORE_CUT_LINES: u8 = 4;

const LF: u8 = 0x0A;
const ESC: u8 = 0x1B;
const GS: u8 = 0x1D;
const FS: u8 = 0x1C;
const DLE: u8 = 0x10;
const EOT: u8 = 0x04;

/// Line alignment (`ESC a n`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Alignment {
    #[default]
    Left,
    Center,
    Right,
}

/// A `GS ( k` function for QR codes (`cn` = 49).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "function", rename_all = "snake_case")]
pub enum QrFunction {
    /// fn 65: model 1 or 2.
    Model { model: u8 },
    /// fn 67: module size in dots.
    ModuleSize { dots: u8 },
    /// fn 69: error correction level `L`, `M`, `Q` or `H`.
    ErrorCorrection { level: char },
    /// fn 80: store the symbol data.
    Store { data: Vec<u8> },
    /// fn 81: print the stored symbol.
    Print,
    /// Any other function (size information, ...): accepted, no effect.
    Other { code: u8 },
}

/// One ESC/POS command as the parser reads it off the wire.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum PrinterCommand {
    /// `ESC @`.
    Initialize,
    /// `LF`: print the line buffer and feed one line.
    LineFeed,
    /// `CR`: ignored (serial printers with auto line feed off).
    CarriageReturn,
    /// `HT`.
    Tab,
    /// `ESC d n`: print and feed `n` lines.
    FeedLines { lines: u8 },
    /// `ESC J n`: print and feed `n` dots.
    FeedDots { dots: u8 },
    /// `ESC E n`.
    Bold { on: bool },
    /// `ESC - n`.
    Underline { dots: u8 },
    /// `ESC a n`.
    Align { alignment: Alignment },
    /// `ESC ! n`: font, bold, double height/width, underline bits.
    PrintMode { bits: u8 },
    /// `GS ! n`: width and height magnification (1-8).
    CharacterSize { width: u8, height: u8 },
    /// `ESC 2` (default) / `ESC 3 n`.
    LineSpacing { dots: Option<u8> },
    /// `ESC t n` / `ESC R n`.
    CodeTable { table: u8 },
    /// `FS &` / `FS .`.
    ChineseMode { on: bool },
    /// `GS V`: cut (after feeding `feed` lines for the feed-and-cut forms).
    Cut { partial: bool, feed: u8 },
    /// `ESC p m t1 t2`: pulse on connector pin 2 (m = 0) or 5 (m = 1).
    DrawerKick { pin: u8, on_ms: u16, off_ms: u16 },
    /// `DLE EOT n`: real-time status request.
    StatusRequest { kind: u8 },
    /// `GS ( k` for QR codes.
    Qr(QrFunction),
    /// Another `GS ( x` command with its length: accepted, no effect.
    Block { function: u8, length: usize },
    /// A raster or bit image whose `bytes` of data follow the header and are skipped.
    Image { bytes: u64 },
    /// Printable bytes (complete characters).
    Text { bytes: Vec<u8> },
    /// Bytes that are no command the parser knows; skipped.
    Unknown { bytes: Vec<u8> },
}

/// Reads one command from the front of `buf`: `None` when `buf` holds only the start of a
/// command; otherwise the command and how many bytes it took (at least one). For
/// [`PrinterCommand::Image`], only the header is taken: the caller skips the data itself, so
/// an image never has to fit in memory.
pub fn parse_printer_command(
    buf: &[u8],
    encoding: TextEncoding,
    chinese_mode: bool,
) -> Option<(PrinterCommand, usize)> {
    let first = *buf.first()?;
    let need = |n: usize| if buf.len() >= n { Some(()) } else { None };
    let unknown = |n: usize| {
        (
            PrinterCommand::Unknown {
                bytes: buf[..n].to_vec(),
            },
            n,
        )
    };
    let command = match first {
        LF => (PrinterCommand::LineFeed, 1),
        0x0D => (PrinterCommand::CarriageReturn, 1),
        0x09 => (PrinterCommand::Tab, 1),
        DLE => {
            need(2)?;
            if buf[1] == EOT {
                need(3)?;
                (PrinterCommand::StatusRequest { kind: buf[2] }, 3)
            } else {
                unknown(1)
            }
        }
        ESC => {
            need(2)?;
            match buf[1] {
                b'@' => (PrinterCommand::Initialize, 2),
                b'2' => (PrinterCommand::LineSpacing { dots: None }, 2),
                b'd' | b'J' | b'E' | b'-' | b'a' | b'!' | b'3' | b't' | b'R' => {
                    need(3)?;
                    let n = buf[2];
                    let command = match buf[1] {
                        b'd' => PrinterCommand::FeedLines { lines: n },
                        b'J' => PrinterCommand::FeedDots { dots: n },
                        b'E' => PrinterCommand::Bold { on: n & 1 == 1 },
                        b'-' => PrinterCommand::Underline { dots: n & 0x03 },
                        b'a' => PrinterCommand::Align {
                            alignment: match n {
                                1 | b'1' => Alignment::Center,
                                2 | b'2' => Alignment::Right,
                                _ => Alignment::Left,
                            },
                        },
                        b'!' => PrinterCommand::PrintMode { bits: n },
                        b'3' => PrinterCommand::LineSpacing { dots: Some(n) },
                        _ => PrinterCommand::CodeTable { table: n },
                    };
                    (command, 3)
                }
                b'p' => {
                    need(5)?;
                    let pin = if buf[2] & 1 == 1 { 5 } else { 2 };
                    let on_ms = u16::from(buf[3]) * 2;
                    let off_ms = u16::from(buf[4]) * 2;
                    (PrinterCommand::DrawerKick { pin, on_ms, off_ms }, 5)
                }
                b'*' => {
                    need(5)?;
                    let columns = u64::from(buf[3]) + u64::from(buf[4]) * 256;
                    match buf[2] {
                        0 | 1 => (PrinterCommand::Image { bytes: columns }, 5),
                        32 | 33 => (PrinterCommand::Image { bytes: columns * 3 }, 5),
                        _ => unknown(3),
                    }
                }
                _ => unknown(2),
            }
        }
        FS => {
            need(2)?;
            match buf[1] {
                b'&' => (PrinterCommand::ChineseMode { on: true }, 2),
                b'.' => (PrinterCommand::ChineseMode { on: false }, 2),
                _ => unknown(2),
            }
        }
        GS => {
            need(2)?;
            match buf[1] {
                b'!' => {
                    need(3)?;
                    let n = buf[2];
                    (
                        PrinterCommand::CharacterSize {
                            width: (n >> 4 & 0x07) + 1,
                            height: (n & 0x07) + 1,
                        },
                        3,
                    )
                }
                b'V' => {
                    need(3)?;
                    match buf[2] {
                        0 | 48 => (
                            PrinterCommand::Cut {
                                partial: false,
                                feed: 0,
                            },
                            3,
                        ),
                        1 | 49 => (
                            PrinterCommand::Cut {
                                partial: true,
                                feed: 0,
                            },
                            3,
                        ),
                        m @ (65 | 66 | 97 | 98 | 103 | 104) => {
                            need(4)?;
                            (
                                PrinterCommand::Cut {
                                    partial: m % 2 == 0,
                                    feed: buf[3],
                                },
                                4,
                            )
                        }
                        _ => unknown(3),
                    }
                }
                b'v' => {
                    // GS v 0 m xL xH yL yH: raster image of (xL + xH*256) * (yL + yH*256) bytes.
                    need(8)?;
                    if buf[2] != b'0' {
                        return Some(unknown(3));
                    }
                    let width = u64::from(buf[4]) + u64::from(buf[5]) * 256;
                    let height = u64::from(buf[6]) + u64::from(buf[7]) * 256;
                    (
                        PrinterCommand::Image {
                            bytes: width * height,
                        },
                        8,
                    )
                }
                b'(' => {
                    need(5)?;
                    let function = buf[2];
                    let length = usize::from(buf[3]) + usize::from(buf[4]) * 256;
                    need(5 + length)?;
                    let body = &buf[5..5 + length];
                    let command = if function == b'k' && body.len() >= 2 && body[0] == 49 {
                        PrinterCommand::Qr(parse_qr_function(body))
                    } else {
                        PrinterCommand::Block { function, length }
                    };
                    (command, 5 + length)
                }
                _ => unknown(2),
            }
        }
        0x00..=0x1F | 0x7F => unknown(1),
        _ => {
            let double_byte = encoding == TextEncoding::Gb18030 && chinese_mode;
            let length = crate::display::text_run(buf, double_byte)?;
            (
                PrinterCommand::Text {
                    bytes: buf[..length].to_vec(),
                },
                length,
            )
        }
    };
    Some(command)
}

/// `body` is `cn fn parameters` of a `GS ( k` with cn = 49 (at least two bytes).
fn parse_qr_function(body: &[u8]) -> QrFunction {
    let function = body[1];
    let parameter = body.get(2).copied();
    match (function, parameter) {
        (65, Some(n)) => QrFunction::Model {
            model: if n == 49 { 1 } else { 2 },
        },
        (67, Some(n)) => QrFunction::ModuleSize { dots: n },
        (69, Some(n)) => QrFunction::ErrorCorrection {
            level: match n {
                48 => 'L',
                49 => 'M',
                50 => 'Q',
                _ => 'H',
            },
        },
        (80, Some(_)) => QrFunction::Store {
            data: body[3..].to_vec(),
        },
        (81, _) => QrFunction::Print,
        _ => QrFunction::Other { code: function },
    }
}

fn gs_k_qr(out: &mut Vec<u8>, function: u8, parameters: &[u8]) {
    // pL pH count cn, fn and the parameters; MAX_QR_PAYLOAD_BYTES keeps it below 65536.
    let length = parameters.len() + 2;
    out.extend_from_slice(&[
        GS,
        b'(',
        b'k',
        (length & 0xFF) as u8,
        (length >> 8) as u8,
        49,
        function,
    ]);
    out.extend_from_slice(parameters);
}

/// The QR commands for `payload`: model 2, module size, error correction M, store, print.
pub fn qr_bytes(payload: &[u8], out: &mut Vec<u8>) {
    gs_k_qr(out, 65, &[50, 0]);
    gs_k_qr(out, 67, &[QR_MODULE_DOTS]);
    gs_k_qr(out, 69, &[49]);
    let mut store = vec![48];
    store.extend_from_slice(payload);
    gs_k_qr(out, 80, &store);
    gs_k_qr(out, 81, &[48]);
}

/// What needs a person at the printer, as the `DLE EOT` answers report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrinterCondition {
    pub paper_out: bool,
    pub paper_near_end: bool,
    pub cover_open: bool,
    /// The drawer-open switch (connector pin 3).
    pub drawer_open: bool,
}

impl PrinterCondition {
    /// Whether the printer stops printing (it goes offline for these).
    pub fn offline(&self) -> bool {
        self.paper_out || self.cover_open
    }

    /// The status byte answering `DLE EOT kind` (bits as in the ESC/POS reference: bit 1 and
    /// bit 4 always set, bit 0 and bit 7 always clear).
    pub fn status_byte(&self, kind: u8) -> u8 {
        let base = 0x12;
        let bit = |on: bool, mask: u8| if on { mask } else { 0 };
        match kind {
            1 => base | bit(self.drawer_open, 0x04) | bit(self.offline(), 0x08),
            2 => {
                base | bit(self.cover_open, 0x04)
                    | bit(self.paper_out, 0x20)
                    | bit(self.offline(), 0x40)
            }
            3 => base,
            4 => {
                base | bit(self.paper_near_end || self.paper_out, 0x0C) | bit(self.paper_out, 0x60)
            }
            _ => base,
        }
    }

    /// The status for the lane's status bar.
    pub fn device_status(&self) -> DeviceStatus {
        if self.cover_open {
            DeviceStatus::Unavailable {
                kind: ErrorKind::NeedsAttention,
                reason: "printer cover open: close the cover".to_owned(),
            }
        } else if self.paper_out {
            DeviceStatus::Unavailable {
                kind: ErrorKind::NeedsAttention,
                reason: "printer out of paper: load a new roll".to_owned(),
            }
        } else if self.paper_near_end {
            DeviceStatus::Warning("printer paper low: have a new roll ready".to_owned())
        } else {
            DeviceStatus::Ready
        }
    }
}

/// Checks the fixed bits of a status byte (bit 1 and 4 set, bit 0 and 7 clear).
pub fn valid_status_byte(byte: u8) -> bool {
    byte & 0x93 == 0x12
}

/// A receipt to print. Lines come formatted (the agent lays out items, totals, tenders, change
/// and the masked card number); amounts in them are preformatted, never floats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiptJob {
    /// Printed centred, bold and double size (the store's name).
    pub title: Option<String>,
    pub lines: Vec<String>,
    /// Printed as a QR code after the lines (byte mode; UTF-8 as given).
    pub qr_payload: Option<String>,
    pub cut: bool,
    pub kick_drawer: bool,
}

/// The ESC/POS bytes for `job`.
pub fn receipt_bytes(job: &ReceiptJob, encoding: TextEncoding) -> Result<Vec<u8>, DeviceError> {
    if job.lines.len() > MAX_RECEIPT_LINES {
        return Err(DeviceError::new(
            DEVICE,
            ErrorKind::Other,
            format!(
                "{} lines is more than the {MAX_RECEIPT_LINES} a receipt may have",
                job.lines.len()
            ),
        ));
    }
    let mut out = vec![ESC, b'@'];
    if encoding == TextEncoding::Gb18030 {
        out.extend_from_slice(&[FS, b'&']);
    }
    if let Some(title) = &job.title {
        out.extend_from_slice(&[ESC, b'a', 1, ESC, b'E', 1, GS, b'!', 0x11]);
        out.extend(text::encode(title, encoding));
        out.extend_from_slice(&[LF, GS, b'!', 0, ESC, b'E', 0, ESC, b'a', 0]);
    }
    for line in &job.lines {
        out.extend(text::encode(line, encoding));
        out.push(LF);
    }
    if let Some(payload) = &job.qr_payload {
        if payload.len() > MAX_QR_PAYLOAD_BYTES {
            return Err(DeviceError::new(
                DEVICE,
                ErrorKind::Other,
                format!(
                    "QR payload of {} bytes; at most {MAX_QR_PAYLOAD_BYTES}",
                    payload.len()
                ),
            ));
        }
        out.extend_from_slice(&[ESC, b'a', 1]);
        qr_bytes(payload.as_bytes(), &mut out);
        out.extend_from_slice(&[LF, ESC, b'a', 0]);
    }
    if job.cut {
        out.extend_from_slice(&[ESC, b'd', FEED_BEFORE_CUT_LINES, GS, b'V', 66, 0]);
    }
    if job.kick_drawer {
        out.extend_from_slice(&DRAWER_KICK);
    }
    Ok(out)
}

/// `ESC p 0 25 250`: pin 2, 50 ms on, 500 ms off (what most drawers need).
const DRAWER_KICK: [u8; 5] = [ESC, b'p', 0, 25, 250];

/// A receipt printer.
pub trait ReceiptPrinter: Send {
    /// Prints `job`. Refuses with `NeedsAttention` when the printer reports paper out or cover
    /// open, so the lane can say so instead of losing the receipt.
    fn print(&mut self, job: &ReceiptJob) -> Result<(), DeviceError>;
    /// Opens the cash drawer connected to the printer.
    fn kick_drawer(&mut self) -> Result<(), DeviceError>;
    /// Asks the printer (reopening a replugged one) and reports its state.
    fn status(&mut self) -> DeviceStatus;
}

/// Settings of a serial receipt printer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialPrinterSettings {
    pub serial: SerialSettings,
    pub encoding: TextEncoding,
    /// Whether the printer answers `DLE EOT`; without it, status is only "connected".
    pub query_status: bool,
}

/// An ESC/POS printer on a serial port.
#[derive(Debug)]
pub struct SerialPrinter {
    port: SupervisedPort,
    encoding: TextEncoding,
    query_status: bool,
}

impl SerialPrinter {
    /// The port is opened by the first call (a printer switched on later is picked up then).
    pub fn new(settings: SerialPrinterSettings) -> SerialPrinter {
        SerialPrinter {
            port: SupervisedPort::new(DEVICE, settings.serial),
            encoding: settings.encoding,
            query_status: settings.query_status,
        }
    }

    pub fn port_mut(&mut self) -> &mut SupervisedPort {
        &mut self.port
    }

    /// Sends `DLE EOT kind` and returns the printer's status byte.
    pub fn query(&mut self, kind: u8) -> Result<u8, DeviceError> {
        self.port.ensure_open()?;
        self.port.clear_input();
        self.port.write_all(&[DLE, EOT, kind])?;
        let deadline = Instant::now() + STATUS_TIMEOUT;
        let mut byte = [0u8; 1];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(DeviceError::new(
                    DEVICE,
                    ErrorKind::Timeout,
                    "printer does not answer status requests: is it on, and is the baud rate right?",
                ));
            }
            if self.port.read(&mut byte, deadline - now)? == 1 {
                return if valid_status_byte(byte[0]) {
                    Ok(byte[0])
                } else {
                    Err(DeviceError::new(
                        DEVICE,
                        ErrorKind::Protocol,
                        format!(
                            "status answer 0x{:02X} is not an ESC/POS status byte",
                            byte[0]
                        ),
                    ))
                };
            }
        }
    }

    /// Reads the printer's condition with `DLE EOT 1`, `2` and `4`.
    pub fn condition(&mut self) -> Result<PrinterCondition, DeviceError> {
        let printer = self.query(1)?;
        let offline_cause = self.query(2)?;
        let paper = self.query(4)?;
        Ok(PrinterCondition {
            paper_out: offline_cause & 0x20 != 0 || paper & 0x60 != 0,
            paper_near_end: paper & 0x0C != 0,
            cover_open: offline_cause & 0x04 != 0,
            drawer_open: printer & 0x04 != 0,
        })
    }

    /// Checks the printer and records its status; the error says why it cannot print.
    fn check(&mut self) -> Result<(), DeviceError> {
        if !self.query_status {
            return self.port.ensure_open().map(|_| ());
        }
        match self.condition() {
            Ok(condition) => {
                let status = condition.device_status();
                self.port.set_status(status.clone());
                match status {
                    DeviceStatus::Unavailable { kind, reason } => {
                        Err(DeviceError::new(DEVICE, kind, reason))
                    }
                    _ => Ok(()),
                }
            }
            Err(error) => {
                if error.kind != ErrorKind::Disconnected {
                    self.port.set_status(DeviceStatus::Unavailable {
                        kind: error.kind,
                        reason: error.message.clone(),
                    });
                }
                Err(error)
            }
        }
    }
}

impl ReceiptPrinter for SerialPrinter {
    fn print(&mut self, job: &ReceiptJob) -> Result<(), DeviceError> {
        let bytes = receipt_bytes(job, self.encoding)?;
        self.check()?;
        self.port.write_all(&bytes)
    }

    fn kick_drawer(&mut self) -> Result<(), DeviceError> {
        self.port.write_all(&DRAWER_KICK)
    }

    fn status(&mut self) -> DeviceStatus {
        let _ = self.check();
        self.port.status().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(wire: &[u8]) -> Vec<PrinterCommand> {
        let mut commands = Vec::new();
        let mut at = 0;
        while let Some((command, used)) =
            parse_printer_command(&wire[at..], TextEncoding::Gb18030, true)
        {
            commands.push(command);
            at += used;
        }
        assert_eq!(at, wire.len());
        commands
    }

    #[test]
    fn a_receipt_parses_back_into_its_commands() {
        let job = ReceiptJob {
            title: Some("小店".to_owned()),
            lines: vec!["可乐 3.50".to_owned()],
            qr_payload: Some("https://pay.example/q/1".to_owned()),
            cut: true,
            kick_drawer: true,
        };
        let commands = parse_all(&receipt_bytes(&job, TextEncoding::Gb18030).unwrap());
        assert_eq!(commands[0], PrinterCommand::Initialize);
        assert_eq!(commands[1], PrinterCommand::ChineseMode { on: true });
        assert!(commands.contains(&PrinterCommand::Qr(QrFunction::Store {
            data: b"https://pay.example/q/1".to_vec()
        })));
        assert!(
            commands.contains(&PrinterCommand::Qr(QrFunction::ErrorCorrection {
                level: 'M'
            }))
        );
        assert!(commands.contains(&PrinterCommand::Cut {
            partial: true,
            feed: 0
        }));
        assert_eq!(
            commands.last(),
            Some(&PrinterCommand::DrawerKick {
                pin: 2,
                on_ms: 50,
                off_ms: 500
            })
        );
    }

    #[test]
    fn status_bytes_follow_the_reference_and_read_back() {
        let condition = PrinterCondition {
            paper_out: true,
            cover_open: true,
            ..Default::default()
        };
        assert_eq!(condition.status_byte(2), 0x12 | 0x04 | 0x20 | 0x40);
        assert_eq!(condition.status_byte(4), 0x7E);
        for kind in 1..=4 {
            assert!(valid_status_byte(condition.status_byte(kind)));
            assert!(valid_status_byte(
                PrinterCondition::default().status_byte(kind)
            ));
        }
        assert!(!valid_status_byte(0x00));
    }

    #[test]
    fn an_image_takes_only_its_header_and_reports_its_size() {
        let wire = [GS, b'v', b'0', 0, 2, 0, 3, 0, 0xAA];
        assert_eq!(
            parse_printer_command(&wire, TextEncoding::Gb18030, true),
            Some((PrinterCommand::Image { bytes: 6 }, 8))
        );
        assert_eq!(
            parse_printer_command(&[GS, b'(', b'k', 4, 0, 49], TextEncoding::Gb18030, true),
            None
        );
    }
}
