//! Customer pole displays: serial VFDs of 2 lines × 20 columns speaking the ESC/POS
//! customer-display command set (Epson DM-D and the Chinese clones). The driver lays out what
//! the customer sees (last item, total, thank you and change) and sends it; the command
//! encoder and parser here are shared with the emulator, which keeps a virtual screen.
//!
//! Commands used by the driver: `ESC @` initialise, `US MD1` (0x1F 0x01) overwrite mode,
//! `US C 0` cursor off, `US X n` brightness 1-4, `CLR` (0x0C) clear, `US $ x y` cursor to
//! column x, row y (1-based), then the line's text padded to exactly 20 columns. Chinese is
//! sent in GB18030 and a hanzi takes two columns (see [`crate::text`]).

use crate::error::{DeviceError, DeviceStatus};
use crate::serial::{SerialSettings, SupervisedPort};
use crate::text::{self, TextEncoding};

const DEVICE: &str = "display";

/// Columns per line of the display.
pub const DISPLAY_COLUMNS: usize = 20;
/// Lines of the display.
pub const DISPLAY_ROWS: usize = 2;
/// Brightness levels of `US X n` (1 darkest to 4 brightest).
pub const MAX_BRIGHTNESS: u8 = 4;
/// Longest `ESC Q A`/`ESC Q B` line-write payload the parser buffers before giving up on the
/// closing CR: 20 columns of GB18030 take at most 40 bytes; the rest is slack for noise.
pub const MAX_LINE_WRITE_BYTES: usize = 80;

const ESC: u8 = 0x1B;
const US: u8 = 0x1F;
const FS: u8 = 0x1C;

/// One command of the customer-display command set, as the parser reads it off the wire.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum DisplayCommand {
    /// `ESC @`: clear, cursor home, modes and brightness back to default.
    Initialize,
    /// `CLR` (0x0C): clear the screen, cursor home.
    Clear,
    /// `CAN` (0x18): clear the cursor's line, cursor to its start.
    ClearLine,
    /// `US $ x y`: cursor to column `x`, row `y` (1-based).
    MoveCursor { column: u8, row: u8 },
    /// `HOM` (0x0B).
    Home,
    /// `US B` (0x1F 0x42): cursor to the start of the bottom line.
    Bottom,
    /// `BS` (0x08).
    Left,
    /// `HT` (0x09).
    Right,
    /// `US LF` (0x1F 0x0A).
    Up,
    /// `LF` (0x0A).
    Down,
    /// `CR` (0x0D): to the start of the line.
    LineStart,
    /// `US CR` (0x1F 0x0D): to the end of the line.
    LineEnd,
    /// `US MD1`/`MD2`/`MD3` (0x1F 0x01..0x03): overwrite, vertical scroll, horizontal scroll.
    Mode { mode: u8 },
    /// `US X n`.
    Brightness { level: u8 },
    /// `US C n`.
    Cursor { visible: bool },
    /// `US E n`: blink interval (0 = off).
    Blink { interval: u8 },
    /// `ESC = n`: which device on a shared line listens (1 printer, 2 display, 3 both).
    SelectPeripheral { device: u8 },
    /// `ESC t n` / `ESC R n`: code table and international set (accepted, no effect here).
    CodeTable { table: u8 },
    /// `FS &` / `FS .`: Chinese (double-byte) mode on or off.
    ChineseMode { on: bool },
    /// `ESC Q A text CR` / `ESC Q B text CR`: write a whole line (1 upper, 2 lower).
    WriteLine { row: u8, text: Vec<u8> },
    /// Printable bytes (complete characters) written at the cursor.
    Text { bytes: Vec<u8> },
    /// Bytes that are no command of the set; skipped.
    Unknown { bytes: Vec<u8> },
}

/// Reads one command from the front of `buf`. `None` when `buf` holds only the start of a
/// command (read more and call again); otherwise the command and how many bytes it took (at
/// least one, so a caller always makes progress).
pub fn parse_display_command(
    buf: &[u8],
    encoding: TextEncoding,
    chinese_mode: bool,
) -> Option<(DisplayCommand, usize)> {
    let first = *buf.first()?;
    let need = |n: usize| if buf.len() >= n { Some(()) } else { None };
    let command = match first {
        ESC => {
            need(2)?;
            match buf[1] {
                b'@' => (DisplayCommand::Initialize, 2),
                b'=' => {
                    need(3)?;
                    (DisplayCommand::SelectPeripheral { device: buf[2] }, 3)
                }
                b't' | b'R' => {
                    need(3)?;
                    (DisplayCommand::CodeTable { table: buf[2] }, 3)
                }
                b'Q' => {
                    need(3)?;
                    let row = match buf[2] {
                        b'A' => 1,
                        b'B' => 2,
                        _ => {
                            return Some((
                                DisplayCommand::Unknown {
                                    bytes: buf[..3].to_vec(),
                                },
                                3,
                            ));
                        }
                    };
                    let body = &buf[3..];
                    match body
                        .iter()
                        .take(MAX_LINE_WRITE_BYTES + 1)
                        .position(|&b| b == b'\r')
                    {
                        Some(end) => (
                            DisplayCommand::WriteLine {
                                row,
                                text: body[..end].to_vec(),
                            },
                            3 + end + 1,
                        ),
                        None if body.len() > MAX_LINE_WRITE_BYTES => (
                            DisplayCommand::Unknown {
                                bytes: buf[..3].to_vec(),
                            },
                            3,
                        ),
                        None => return None,
                    }
                }
                _ => (
                    DisplayCommand::Unknown {
                        bytes: buf[..2].to_vec(),
                    },
                    2,
                ),
            }
        }
        US => {
            need(2)?;
            match buf[1] {
                b'$' => {
                    need(4)?;
                    (
                        DisplayCommand::MoveCursor {
                            column: buf[2],
                            row: buf[3],
                        },
                        4,
                    )
                }
                b'X' => {
                    need(3)?;
                    (DisplayCommand::Brightness { level: buf[2] }, 3)
                }
                b'C' => {
                    need(3)?;
                    (
                        DisplayCommand::Cursor {
                            visible: buf[2] & 1 == 1,
                        },
                        3,
                    )
                }
                b'E' => {
                    need(3)?;
                    (DisplayCommand::Blink { interval: buf[2] }, 3)
                }
                b'B' => (DisplayCommand::Bottom, 2),
                0x0A => (DisplayCommand::Up, 2),
                0x0D => (DisplayCommand::LineEnd, 2),
                mode @ 0x01..=0x03 => (DisplayCommand::Mode { mode }, 2),
                _ => (
                    DisplayCommand::Unknown {
                        bytes: buf[..2].to_vec(),
                    },
                    2,
                ),
            }
        }
        FS => {
            need(2)?;
            match buf[1] {
                b'&' => (DisplayCommand::ChineseMode { on: true }, 2),
                b'.' => (DisplayCommand::ChineseMode { on: false }, 2),
                _ => (
                    DisplayCommand::Unknown {
                        bytes: buf[..2].to_vec(),
                    },
                    2,
                ),
            }
        }
        0x0C => (DisplayCommand::Clear, 1),
        0x18 => (DisplayCommand::ClearLine, 1),
        0x0B => (DisplayCommand::Home, 1),
        0x08 => (DisplayCommand::Left, 1),
        0x09 => (DisplayCommand::Right, 1),
        0x0A => (DisplayCommand::Down, 1),
        0x0D => (DisplayCommand::LineStart, 1),
        0x00..=0x1F | 0x7F => (DisplayCommand::Unknown { bytes: vec![first] }, 1),
        _ => {
            let double_byte = encoding == TextEncoding::Gb18030 && chinese_mode;
            let length = text_run(buf, double_byte)?;
            (
                DisplayCommand::Text {
                    bytes: buf[..length].to_vec(),
                },
                length,
            )
        }
    };
    Some(command)
}

/// Length of the run of complete printable characters at the front of `buf`; `None` when the
/// only character there is incomplete.
pub(crate) fn text_run(buf: &[u8], double_byte: bool) -> Option<usize> {
    let mut at = 0;
    while at < buf.len() {
        let length = match char_length(&buf[at..], double_byte) {
            CharLength::Complete(length) => length,
            CharLength::NotText => break,
            CharLength::Incomplete if at == 0 => return None,
            CharLength::Incomplete => break,
        };
        at += length;
    }
    Some(at)
}

enum CharLength {
    Complete(usize),
    Incomplete,
    NotText,
}

/// GB18030 character length at the front of `bytes`: one byte below 0x80, two bytes for a lead
/// byte 0x81-0xFE followed by 0x40-0xFE, four bytes for lead, 0x30-0x39, lead, 0x30-0x39.
/// A malformed sequence counts as one (invalid) byte so the stream moves on.
fn char_length(bytes: &[u8], double_byte: bool) -> CharLength {
    let Some(&first) = bytes.first() else {
        return CharLength::Incomplete;
    };
    if first < 0x20 || first == 0x7F {
        return CharLength::NotText;
    }
    if first < 0x80 || !double_byte || !(0x81..=0xFE).contains(&first) {
        return CharLength::Complete(1);
    }
    let Some(&second) = bytes.get(1) else {
        return CharLength::Incomplete;
    };
    match second {
        0x40..=0x7E | 0x80..=0xFE => CharLength::Complete(2),
        0x30..=0x39 => match (bytes.get(2), bytes.get(3)) {
            (Some(0x81..=0xFE), Some(0x30..=0x39)) => CharLength::Complete(4),
            (None, _) | (Some(0x81..=0xFE), None) => CharLength::Incomplete,
            _ => CharLength::Complete(1),
        },
        _ => CharLength::Complete(1),
    }
}

/// Splits text bytes into characters with their column widths (the emulator's view of what
/// the driver counted with [`text::char_columns`]).
pub fn split_characters(
    bytes: &[u8],
    encoding: TextEncoding,
    chinese_mode: bool,
) -> Vec<(char, usize)> {
    let double_byte = encoding == TextEncoding::Gb18030 && chinese_mode;
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let length = match char_length(&bytes[at..], double_byte) {
            CharLength::Complete(length) => length,
            CharLength::Incomplete | CharLength::NotText => 1,
        };
        let piece = &bytes[at..(at + length).min(bytes.len())];
        at += length;
        if length == 1 {
            let b = piece[0];
            let c = if (0x20..0x7F).contains(&b) {
                b as char
            } else {
                char::REPLACEMENT_CHARACTER
            };
            out.push((c, 1));
        } else {
            let decoded = text::decode(piece, TextEncoding::Gb18030);
            let c = decoded
                .chars()
                .next()
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            out.push((c, 2));
        }
    }
    out
}

/// Encodes commands for the wire (the driver's side of [`parse_display_command`]).
pub fn encode_display_command(command: &DisplayCommand, out: &mut Vec<u8>) {
    match command {
        DisplayCommand::Initialize => out.extend_from_slice(&[ESC, b'@']),
        DisplayCommand::Clear => out.push(0x0C),
        DisplayCommand::ClearLine => out.push(0x18),
        DisplayCommand::MoveCursor { column, row } => {
            out.extend_from_slice(&[US, b'$', *column, *row])
        }
        DisplayCommand::Home => out.push(0x0B),
        DisplayCommand::Bottom => out.extend_from_slice(&[US, b'B']),
        DisplayCommand::Left => out.push(0x08),
        DisplayCommand::Right => out.push(0x09),
        DisplayCommand::Up => out.extend_from_slice(&[US, 0x0A]),
        DisplayCommand::Down => out.push(0x0A),
        DisplayCommand::LineStart => out.push(0x0D),
        DisplayCommand::LineEnd => out.extend_from_slice(&[US, 0x0D]),
        DisplayCommand::Mode { mode } => out.extend_from_slice(&[US, *mode]),
        DisplayCommand::Brightness { level } => out.extend_from_slice(&[US, b'X', *level]),
        DisplayCommand::Cursor { visible } => {
            out.extend_from_slice(&[US, b'C', u8::from(*visible)])
        }
        DisplayCommand::Blink { interval } => out.extend_from_slice(&[US, b'E', *interval]),
        DisplayCommand::SelectPeripheral { device } => out.extend_from_slice(&[ESC, b'=', *device]),
        DisplayCommand::CodeTable { table } => out.extend_from_slice(&[ESC, b't', *table]),
        DisplayCommand::ChineseMode { on } => {
            out.extend_from_slice(&[FS, if *on { b'&' } else { b'.' }])
        }
        DisplayCommand::WriteLine { row, text } => {
            out.extend_from_slice(&[ESC, b'Q', if *row == 2 { b'B' } else { b'A' }]);
            out.extend_from_slice(text);
            out.push(b'\r');
        }
        DisplayCommand::Text { bytes } | DisplayCommand::Unknown { bytes } => {
            out.extend_from_slice(bytes)
        }
    }
}

/// Words the display shows around the amounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayLabels {
    pub total: String,
    pub change: String,
    pub thank_you: String,
    pub welcome: String,
}

impl DisplayLabels {
    pub fn english() -> DisplayLabels {
        DisplayLabels {
            total: "Total".to_owned(),
            change: "Change".to_owned(),
            thank_you: "Thank you".to_owned(),
            welcome: "Welcome".to_owned(),
        }
    }

    pub fn chinese() -> DisplayLabels {
        DisplayLabels {
            total: "合计".to_owned(),
            change: "找零".to_owned(),
            thank_you: "谢谢惠顾".to_owned(),
            welcome: "欢迎光临".to_owned(),
        }
    }
}

impl Default for DisplayLabels {
    fn default() -> Self {
        DisplayLabels::english()
    }
}

/// The two lines for each moment of a sale, exactly [`DISPLAY_COLUMNS`] columns each. Pure, so
/// the layout is tested without a device. Amounts come preformatted (see
/// [`text::format_fen`]); money is never a float here.
#[derive(Clone, Debug)]
pub struct DisplayLayout {
    pub labels: DisplayLabels,
    pub encoding: TextEncoding,
}

impl DisplayLayout {
    fn line(&self, left: &str, right: &str) -> String {
        text::left_right(left, right, DISPLAY_COLUMNS, self.encoding)
    }

    pub fn lines(&self, upper: &str, lower: &str) -> [String; 2] {
        [self.line(upper, ""), self.line(lower, "")]
    }

    /// Item name above, its amount flush right below.
    pub fn line_item(&self, name: &str, amount: &str) -> [String; 2] {
        [self.line(name, ""), self.line("", amount)]
    }

    /// Item and amount above, the running total below.
    pub fn line_item_and_total(&self, name: &str, amount: &str, total: &str) -> [String; 2] {
        [
            self.line(name, amount),
            self.line(&self.labels.total, total),
        ]
    }

    pub fn total(&self, total: &str) -> [String; 2] {
        [self.line(&self.labels.total, ""), self.line("", total)]
    }

    /// "Thank you" and, when there is change, the change flush right.
    pub fn thank_you(&self, change: Option<&str>) -> [String; 2] {
        match change {
            Some(change) => [
                self.line(&self.labels.thank_you, ""),
                self.line(&self.labels.change, change),
            ],
            None => [self.line(&self.labels.thank_you, ""), self.line("", "")],
        }
    }

    pub fn welcome(&self) -> [String; 2] {
        [self.line(&self.labels.welcome, ""), self.line("", "")]
    }
}

/// A customer-facing display. Every method sends the whole screen, so a display that missed
/// an update (replugged) is right again after the next one.
pub trait CustomerDisplay: Send {
    /// Shows two lines as given (each fitted to the display's width).
    fn show_lines(&mut self, upper: &str, lower: &str) -> Result<(), DeviceError>;
    fn show_line_item(&mut self, name: &str, amount: &str) -> Result<(), DeviceError>;
    fn show_line_item_and_total(
        &mut self,
        name: &str,
        amount: &str,
        total: &str,
    ) -> Result<(), DeviceError>;
    fn show_total(&mut self, total: &str) -> Result<(), DeviceError>;
    fn show_thank_you(&mut self, change: Option<&str>) -> Result<(), DeviceError>;
    fn show_welcome(&mut self) -> Result<(), DeviceError>;
    fn clear(&mut self) -> Result<(), DeviceError>;
    /// Brightness 1 (dim) to [`MAX_BRIGHTNESS`].
    fn set_brightness(&mut self, level: u8) -> Result<(), DeviceError>;
    /// Current state; reopens a replugged display and shows the last screen again.
    fn status(&mut self) -> DeviceStatus;
}

/// Settings of a serial pole display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialDisplaySettings {
    pub serial: SerialSettings,
    pub encoding: TextEncoding,
    pub labels: DisplayLabels,
}

/// A pole display on a serial port.
#[derive(Debug)]
pub struct SerialDisplay {
    port: SupervisedPort,
    layout: DisplayLayout,
    /// What the customer should be seeing: sent again after a replug.
    shown: [String; 2],
    brightness: u8,
}

impl SerialDisplay {
    /// The port is opened by the first command (a display plugged in later is picked up then).
    pub fn new(settings: SerialDisplaySettings) -> SerialDisplay {
        SerialDisplay {
            port: SupervisedPort::new(DEVICE, settings.serial),
            layout: DisplayLayout {
                labels: settings.labels,
                encoding: settings.encoding,
            },
            shown: [String::new(), String::new()],
            brightness: MAX_BRIGHTNESS,
        }
    }

    pub fn port_mut(&mut self) -> &mut SupervisedPort {
        &mut self.port
    }

    /// The bytes that put `lines` on the screen.
    pub fn screen_bytes(lines: &[String; 2], encoding: TextEncoding) -> Vec<u8> {
        let mut out = Vec::new();
        for (row, line) in (1u8..).zip(lines) {
            encode_display_command(&DisplayCommand::MoveCursor { column: 1, row }, &mut out);
            out.extend(text::encode(
                &text::pad_columns(line, DISPLAY_COLUMNS, encoding),
                encoding,
            ));
        }
        out
    }

    fn setup_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for command in [
            DisplayCommand::Initialize,
            DisplayCommand::Mode { mode: 1 },
            DisplayCommand::Cursor { visible: false },
            DisplayCommand::Brightness {
                level: self.brightness,
            },
        ] {
            encode_display_command(&command, &mut out);
        }
        out
    }

    fn send(&mut self, body: Vec<u8>) -> Result<(), DeviceError> {
        let mut bytes = Vec::new();
        if self.port.ensure_open()? {
            bytes = self.setup_bytes();
            bytes.extend(Self::screen_bytes(&self.shown, self.layout.encoding));
        }
        bytes.extend(body);
        self.port.write_all(&bytes)
    }

    fn show(&mut self, lines: [String; 2]) -> Result<(), DeviceError> {
        let body = Self::screen_bytes(&lines, self.layout.encoding);
        self.shown = lines;
        self.send(body)
    }
}

impl CustomerDisplay for SerialDisplay {
    fn show_lines(&mut self, upper: &str, lower: &str) -> Result<(), DeviceError> {
        let lines = self.layout.lines(upper, lower);
        self.show(lines)
    }

    fn show_line_item(&mut self, name: &str, amount: &str) -> Result<(), DeviceError> {
        let lines = self.layout.line_item(name, amount);
        self.show(lines)
    }

    fn show_line_item_and_total(
        &mut self,
        name: &str,
        amount: &str,
        total: &str,
    ) -> Result<(), DeviceError> {
        let lines = self.layout.line_item_and_total(name, amount, total);
        self.show(lines)
    }

    fn show_total(&mut self, total: &str) -> Result<(), DeviceError> {
        let lines = self.layout.total(total);
        self.show(lines)
    }

    fn show_thank_you(&mut self, change: Option<&str>) -> Result<(), DeviceError> {
        let lines = self.layout.thank_you(change);
        self.show(lines)
    }

    fn show_welcome(&mut self) -> Result<(), DeviceError> {
        let lines = self.layout.welcome();
        self.show(lines)
    }

    fn clear(&mut self) -> Result<(), DeviceError> {
        self.shown = [String::new(), String::new()];
        let mut body = Vec::new();
        encode_display_command(&DisplayCommand::Clear, &mut body);
        self.send(body)
    }

    fn set_brightness(&mut self, level: u8) -> Result<(), DeviceError> {
        self.brightness = level.clamp(1, MAX_BRIGHTNESS);
        let mut body = Vec::new();
        encode_display_command(
            &DisplayCommand::Brightness {
                level: self.brightness,
            },
            &mut body,
        );
        self.send(body)
    }

    fn status(&mut self) -> DeviceStatus {
        // A display never answers, so an unplug shows only as a hang-up on the open port.
        self.port.check_connection();
        // A closed port whose backoff is due gets a reopen attempt, which redraws the screen.
        if !self.port.is_open() && self.port.time_until_retry().is_zero() {
            let _ = self.send(Vec::new());
        }
        self.port.status().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_round_trips_through_the_parser() {
        let commands = vec![
            DisplayCommand::Initialize,
            DisplayCommand::Clear,
            DisplayCommand::ClearLine,
            DisplayCommand::MoveCursor { column: 3, row: 2 },
            DisplayCommand::Home,
            DisplayCommand::Bottom,
            DisplayCommand::Left,
            DisplayCommand::Right,
            DisplayCommand::Up,
            DisplayCommand::Down,
            DisplayCommand::LineStart,
            DisplayCommand::LineEnd,
            DisplayCommand::Mode { mode: 2 },
            DisplayCommand::Brightness { level: 3 },
            DisplayCommand::Cursor { visible: true },
            DisplayCommand::Blink { interval: 5 },
            DisplayCommand::SelectPeripheral { device: 2 },
            DisplayCommand::CodeTable { table: 0 },
            DisplayCommand::ChineseMode { on: false },
            DisplayCommand::WriteLine {
                row: 2,
                text: b"hello".to_vec(),
            },
            DisplayCommand::Text {
                bytes: text::encode("可乐", TextEncoding::Gb18030),
            },
        ];
        let mut wire = Vec::new();
        for command in &commands {
            encode_display_command(command, &mut wire);
        }
        let mut parsed = Vec::new();
        let mut at = 0;
        while let Some((command, used)) =
            parse_display_command(&wire[at..], TextEncoding::Gb18030, true)
        {
            parsed.push(command);
            at += used;
        }
        assert_eq!(parsed, commands);
    }

    #[test]
    fn an_incomplete_command_or_character_waits_for_more_bytes() {
        assert_eq!(
            parse_display_command(&[US, b'$', 1], TextEncoding::Gb18030, true),
            None
        );
        assert_eq!(
            parse_display_command(&[0xBF], TextEncoding::Gb18030, true),
            None
        );
        assert_eq!(
            parse_display_command(&[b'a', 0xBF], TextEncoding::Gb18030, true),
            Some((DisplayCommand::Text { bytes: vec![b'a'] }, 1))
        );
    }

    #[test]
    fn layouts_fill_both_lines_exactly() {
        let layout = DisplayLayout {
            labels: DisplayLabels::chinese(),
            encoding: TextEncoding::Gb18030,
        };
        let [upper, lower] = layout.line_item_and_total("可口可乐 330ml", "3.50", "12.00");
        assert_eq!(upper, "可口可乐 330ml  3.50");
        assert_eq!(lower, "合计           12.00");
        for line in layout.thank_you(Some("7.50")) {
            assert_eq!(text::columns(&line, TextEncoding::Gb18030), DISPLAY_COLUMNS);
        }
    }
}
