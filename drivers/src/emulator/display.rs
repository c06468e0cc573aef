//! A 2×20 VFD pole display in software: interprets the ESC/POS customer-display command set
//! arriving on a pseudo-terminal into a virtual screen, so tests assert on the two lines the
//! customer would read and `lanepay emulate display` can print them as JSON lines.
//!
//! Screen model: 20 cells per line. An ASCII character fills one cell; a GB18030 double-byte or
//! four-byte character fills two (its glyph is 16 dots wide). Writing over half of a wide
//! character blanks its other half; a wide character that would start in the last column is
//! moved to the next line (the last column is left blank). The cursor wraps at the end of a
//! line to the start of the other line in overwrite mode (`US MD1`, the default) and scrolls
//! in vertical scroll mode (`US MD2`); horizontal scroll mode (`US MD3`) is treated as
//! overwrite.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serialport::TTYPort;

use super::pty::{EMULATOR_POLL_INTERVAL, PtyDevice, PtyGuard, wait_on};
use crate::display::{
    DISPLAY_COLUMNS, DISPLAY_ROWS, DisplayCommand, MAX_BRIGHTNESS, parse_display_command,
    split_characters,
};
use crate::error::{DeviceError, ErrorKind};
use crate::text::TextEncoding;

const DEVICE: &str = "display emulator";

/// Raw bytes the emulator keeps for byte-level assertions (the most recent ones).
pub const RAW_LOG_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    Narrow(char),
    WideLeft(char),
    WideRight,
}

const BLANK: Cell = Cell::Narrow(' ');

/// What the screen shows, for tests and for the JSON lines of `lanepay emulate display`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScreenSnapshot {
    /// The two lines, trailing spaces removed (leading spaces kept: they show alignment).
    pub lines: [String; 2],
    pub brightness: u8,
    /// Cursor column and row, 1-based like `US $`.
    pub cursor: [u8; 2],
}

/// The display's interpreter: bytes in, screen state out. No I/O, so the fuzz targets and
/// property tests drive it directly.
#[derive(Clone, Debug)]
pub struct DisplayInterpreter {
    encoding: TextEncoding,
    cells: [[Cell; DISPLAY_COLUMNS]; DISPLAY_ROWS],
    column: usize,
    row: usize,
    mode: u8,
    brightness: u8,
    chinese_mode: bool,
    /// `ESC = n` selected another device on a shared line: ignore everything else.
    deselected: bool,
    pending: Vec<u8>,
}

impl DisplayInterpreter {
    pub fn new(encoding: TextEncoding) -> DisplayInterpreter {
        DisplayInterpreter {
            encoding,
            cells: [[BLANK; DISPLAY_COLUMNS]; DISPLAY_ROWS],
            column: 0,
            row: 0,
            mode: 1,
            brightness: MAX_BRIGHTNESS,
            chinese_mode: true,
            deselected: false,
            pending: Vec::new(),
        }
    }

    /// Bytes held for an incomplete command (bounded by the longest command).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds bytes from the wire; returns the commands executed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<DisplayCommand> {
        self.pending.extend_from_slice(bytes);
        let mut commands = Vec::new();
        let mut at = 0;
        while let Some((command, used)) =
            parse_display_command(&self.pending[at..], self.encoding, self.chinese_mode)
        {
            at += used.max(1);
            self.apply(&command);
            commands.push(command);
        }
        self.pending.drain(..at);
        commands
    }

    fn apply(&mut self, command: &DisplayCommand) {
        if let DisplayCommand::SelectPeripheral { device } = command {
            self.deselected = device & 0x02 == 0;
            return;
        }
        if self.deselected {
            return;
        }
        match command {
            DisplayCommand::Initialize => {
                let encoding = self.encoding;
                *self = DisplayInterpreter {
                    pending: std::mem::take(&mut self.pending),
                    ..Self::new(encoding)
                };
            }
            DisplayCommand::Clear => {
                self.cells = [[BLANK; DISPLAY_COLUMNS]; DISPLAY_ROWS];
                (self.column, self.row) = (0, 0);
            }
            DisplayCommand::ClearLine => {
                self.cells[self.row] = [BLANK; DISPLAY_COLUMNS];
                self.column = 0;
            }
            DisplayCommand::MoveCursor { column, row } => {
                let (column, row) = (usize::from(*column), usize::from(*row));
                if (1..=DISPLAY_COLUMNS).contains(&column) && (1..=DISPLAY_ROWS).contains(&row) {
                    (self.column, self.row) = (column - 1, row - 1);
                }
            }
            DisplayCommand::Home => (self.column, self.row) = (0, 0),
            DisplayCommand::Bottom => (self.column, self.row) = (0, DISPLAY_ROWS - 1),
            DisplayCommand::Left => {
                if self.column > 0 {
                    self.column -= 1;
                } else {
                    self.row = (self.row + DISPLAY_ROWS - 1) % DISPLAY_ROWS;
                    self.column = DISPLAY_COLUMNS - 1;
                }
            }
            DisplayCommand::Right => self.advance(1),
            DisplayCommand::Up => self.row = self.row.saturating_sub(1),
            DisplayCommand::Down => self.next_row(),
            DisplayCommand::LineStart => self.column = 0,
            DisplayCommand::LineEnd => self.column = DISPLAY_COLUMNS - 1,
            DisplayCommand::Mode { mode } => self.mode = *mode,
            DisplayCommand::Brightness { level } => {
                if (1..=MAX_BRIGHTNESS).contains(level) {
                    self.brightness = *level;
                }
            }
            DisplayCommand::ChineseMode { on } => self.chinese_mode = *on,
            DisplayCommand::WriteLine { row, text } => {
                let row = usize::from(*row).clamp(1, DISPLAY_ROWS) - 1;
                self.cells[row] = [BLANK; DISPLAY_COLUMNS];
                let mut column = 0;
                for (c, width) in split_characters(text, self.encoding, self.chinese_mode) {
                    if column + width > DISPLAY_COLUMNS {
                        break;
                    }
                    self.put(row, column, c, width);
                    column += width;
                }
            }
            DisplayCommand::Text { bytes } => {
                for (c, width) in split_characters(bytes, self.encoding, self.chinese_mode) {
                    self.write_char(c, width);
                }
            }
            DisplayCommand::Cursor { .. }
            | DisplayCommand::Blink { .. }
            | DisplayCommand::CodeTable { .. }
            | DisplayCommand::SelectPeripheral { .. }
            | DisplayCommand::Unknown { .. } => {}
        }
    }

    fn next_row(&mut self) {
        if self.row + 1 < DISPLAY_ROWS {
            self.row += 1;
        } else if self.mode == 2 {
            self.cells.rotate_left(1);
            self.cells[DISPLAY_ROWS - 1] = [BLANK; DISPLAY_COLUMNS];
        } else {
            self.row = 0;
        }
    }

    fn advance(&mut self, columns: usize) {
        self.column += columns;
        if self.column >= DISPLAY_COLUMNS {
            self.column = 0;
            self.next_row();
        }
    }

    /// Sets cells without moving the cursor, blanking halves of wide characters it breaks.
    fn put(&mut self, row: usize, column: usize, c: char, width: usize) {
        let line = &mut self.cells[row];
        for at in column..column + width {
            match line[at] {
                Cell::WideLeft(_) if at + 1 < DISPLAY_COLUMNS => line[at + 1] = BLANK,
                Cell::WideRight if at > 0 => line[at - 1] = BLANK,
                _ => {}
            }
        }
        if width == 2 {
            line[column] = Cell::WideLeft(c);
            line[column + 1] = Cell::WideRight;
        } else {
            line[column] = Cell::Narrow(c);
        }
    }

    fn write_char(&mut self, c: char, width: usize) {
        if width == 2 && self.column == DISPLAY_COLUMNS - 1 {
            self.put(self.row, self.column, ' ', 1);
            self.advance(1);
        }
        self.put(self.row, self.column, c, width);
        self.advance(width);
    }

    /// The two lines, trailing spaces removed.
    pub fn lines(&self) -> [String; 2] {
        let render = |line: &[Cell; DISPLAY_COLUMNS]| {
            let text: String = line
                .iter()
                .filter_map(|cell| match cell {
                    Cell::Narrow(c) | Cell::WideLeft(c) => Some(*c),
                    Cell::WideRight => None,
                })
                .collect();
            text.trim_end().to_owned()
        };
        [render(&self.cells[0]), render(&self.cells[1])]
    }

    pub fn snapshot(&self) -> ScreenSnapshot {
        ScreenSnapshot {
            lines: self.lines(),
            brightness: self.brightness,
            cursor: [(self.column + 1) as u8, (self.row + 1) as u8],
        }
    }
}

/// What `lanepay emulate display` prints, one JSON object per line: the screen after each
/// chunk of bytes that changed it (the last one is what the customer sees).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DisplayEvent {
    Screen(ScreenSnapshot),
}

/// How the emulated display is set up.
#[derive(Clone, Debug, Default)]
pub struct DisplayEmulatorSettings {
    pub encoding: TextEncoding,
    /// A stable path to link to the pseudo-terminal (see [`PtyDevice::create`]).
    pub link: Option<std::path::PathBuf>,
}

#[derive(Debug)]
struct Shared {
    interpreter: DisplayInterpreter,
    raw: Vec<u8>,
}

type SharedState = Arc<(Mutex<Shared>, Condvar)>;

/// The running emulated display. Dropping it stops its thread and closes the
/// pseudo-terminal (the driver sees an unplugged display).
#[derive(Debug)]
pub struct DisplayEmulator {
    shared: SharedState,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _guard: PtyGuard,
}

impl DisplayEmulator {
    /// Creates the pseudo-terminal and serves it on a thread; `on_event` gets each screen
    /// change (print it as JSON, forward it, or ignore it). Returns the path to open.
    pub fn spawn(
        settings: DisplayEmulatorSettings,
        on_event: impl FnMut(&DisplayEvent) + Send + 'static,
    ) -> Result<(String, DisplayEmulator), DeviceError> {
        let pty = PtyDevice::create(DEVICE, settings.link.as_deref())?;
        let path = pty.path();
        let (master, guard) = pty.into_parts();
        let shared: SharedState = Arc::new((
            Mutex::new(Shared {
                interpreter: DisplayInterpreter::new(settings.encoding),
                raw: Vec::new(),
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("display-emulator".to_owned())
                .spawn(move || serve(master, &shared, &stop, on_event))
                .map_err(|error| DeviceError::new(DEVICE, ErrorKind::Other, error.to_string()))?
        };
        Ok((
            path,
            DisplayEmulator {
                shared,
                stop,
                thread: Some(thread),
                _guard: guard,
            },
        ))
    }

    fn with<T>(&self, read: impl FnOnce(&Shared) -> T) -> T {
        read(&self.shared.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The two lines on the screen now.
    pub fn lines(&self) -> [String; 2] {
        self.with(|shared| shared.interpreter.lines())
    }

    pub fn snapshot(&self) -> ScreenSnapshot {
        self.with(|shared| shared.interpreter.snapshot())
    }

    /// The bytes received so far (the most recent [`RAW_LOG_BYTES`]).
    pub fn received(&self) -> Vec<u8> {
        self.with(|shared| shared.raw.clone())
    }

    /// Waits until the screen satisfies `condition` or `timeout` passes; returns the screen
    /// either way (check it with the condition again, or print it in the failure message).
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&ScreenSnapshot) -> bool,
    ) -> Result<ScreenSnapshot, ScreenSnapshot> {
        let found = wait_on(&self.shared, Instant::now() + timeout, |shared| {
            let snapshot = shared.interpreter.snapshot();
            condition(&snapshot).then_some(snapshot)
        });
        found.ok_or_else(|| self.snapshot())
    }

    /// Waits until the screen shows exactly these two lines (trailing spaces ignored).
    pub fn wait_for_lines(
        &self,
        upper: &str,
        lower: &str,
        timeout: Duration,
    ) -> Result<(), [String; 2]> {
        self.wait_until(timeout, |screen| {
            screen.lines[0] == upper.trim_end() && screen.lines[1] == lower.trim_end()
        })
        .map(|_| ())
        .map_err(|screen| screen.lines)
    }
}

impl Drop for DisplayEmulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    mut master: TTYPort,
    shared: &SharedState,
    stop: &AtomicBool,
    mut on_event: impl FnMut(&DisplayEvent),
) {
    use serialport::SerialPort;
    use std::io::Read;
    let _ = master.set_timeout(EMULATOR_POLL_INTERVAL);
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        let read = match master.read(&mut buf) {
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(error) => {
                tracing::debug!(%error, "display emulator read failed");
                std::thread::sleep(EMULATOR_POLL_INTERVAL);
                continue;
            }
        };
        let (lock, changed) = &**shared;
        let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let before = state.interpreter.snapshot();
        state.interpreter.push(&buf[..read]);
        state.raw.extend_from_slice(&buf[..read]);
        let excess = state.raw.len().saturating_sub(RAW_LOG_BYTES);
        state.raw.drain(..excess);
        let after = state.interpreter.snapshot();
        drop(state);
        // Listeners hear of a change before waiters are woken, so a test that waited on the
        // screen finds the event in its channel too.
        if before.lines != after.lines || before.brightness != after.brightness {
            on_event(&DisplayEvent::Screen(after));
        }
        changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::display::encode_display_command;
    use crate::text::encode;

    #[test]
    fn cursor_positioning_and_wide_characters() {
        let mut display = DisplayInterpreter::new(TextEncoding::Gb18030);
        let mut wire = Vec::new();
        encode_display_command(&DisplayCommand::Initialize, &mut wire);
        encode_display_command(&DisplayCommand::MoveCursor { column: 1, row: 2 }, &mut wire);
        wire.extend(encode("合计 12.00", TextEncoding::Gb18030));
        encode_display_command(
            &DisplayCommand::MoveCursor { column: 19, row: 1 },
            &mut wire,
        );
        wire.extend(encode("可乐", TextEncoding::Gb18030));
        display.push(&wire);
        // "可" fills columns 19-20; the cursor wraps and "乐" lands over "合" below.
        assert_eq!(
            display.lines(),
            ["                  可".to_owned(), "乐计 12.00".to_owned()]
        );
        // A wide character cannot start in column 20: it moves to the next line's start.
        display.push(&[0x1F, b'$', 20, 2]);
        display.push(&encode("好", TextEncoding::Gb18030));
        assert_eq!(
            display.lines(),
            ["好                可".to_owned(), "乐计 12.00".to_owned()]
        );
        display.push(&[0x0C]);
        assert_eq!(display.lines(), [String::new(), String::new()]);
    }

    #[test]
    fn a_narrow_character_over_half_a_wide_one_blanks_the_other_half() {
        let mut display = DisplayInterpreter::new(TextEncoding::Gb18030);
        display.push(&encode("可乐", TextEncoding::Gb18030));
        display.push(&[0x1F, b'$', 2, 1, b'x']);
        assert_eq!(display.lines()[0], " x乐");
    }

    #[test]
    fn vertical_scroll_mode_scrolls() {
        let mut display = DisplayInterpreter::new(TextEncoding::Ascii);
        display.push(&[0x1F, 0x02]);
        display.push(b"first\n\rsecond\n\rthird");
        assert_eq!(display.lines(), ["second".to_owned(), "third".to_owned()]);
    }
}
