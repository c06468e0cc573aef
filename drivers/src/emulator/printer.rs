//! An ESC/POS receipt printer in software: interprets the bytes arriving on a pseudo-terminal
//! into a receipt (text lines with their formatting, QR payloads decoded from the `GS ( k`
//! store command, cuts, drawer kicks) and answers `DLE EOT` status requests from a condition
//! the test sets (paper out, cover open, ...). `lanepay emulate printer` prints its events as
//! JSON lines.
//!
//! Lines wrap at the paper width when one is set ([`PrinterEmulatorSettings::paper_columns`]:
//! a character takes one column, a GB18030 double-byte one two, times the width
//! magnification), so a receipt laid out too wide shows up as extra lines in tests.
//! Simplifications, on purpose: images are skipped; while the printer is "offline" (paper
//! out or cover open) printable output is reported as [`PrinterEvent::NotPrinted`] instead of
//! being held until the condition clears, as a real printer would.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serialport::TTYPort;

use super::pty::{EMULATOR_POLL_INTERVAL, PtyDevice, PtyGuard, wait_on};
use crate::display::split_characters;
use crate::error::{DeviceError, ErrorKind};
use crate::printer::{
    Alignment, PrinterCommand, PrinterCondition, QrFunction, parse_printer_command,
};
use crate::text::TextEncoding;

const DEVICE: &str = "printer emulator";

/// Longest line the interpreter buffers before printing it anyway (a printer's line buffer is
/// far smaller; this only bounds memory against a stream without line feeds).
pub const MAX_PRINT_LINE_BYTES: usize = 4096;

/// Receipts the emulator keeps; older ones are dropped (a training lane runs all day).
pub const MAX_KEPT_RECEIPTS: usize = 100;

/// Spaces per tab stop (`HT`), the ESC/POS default of 8 columns.
const TAB_COLUMNS: usize = 8;

/// What the printer did, one JSON object per line in `lanepay emulate printer`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PrinterEvent {
    /// `ESC @`.
    Initialize,
    /// A printed line with the formatting it was printed in.
    Line {
        text: String,
        alignment: Alignment,
        bold: bool,
        width: u8,
        height: u8,
    },
    /// Paper fed without printing (`ESC d n`, `ESC J n`).
    Feed {
        lines: u8,
    },
    /// A QR code printed with its payload.
    Qr {
        payload: String,
        model: u8,
        module_dots: u8,
        error_correction: char,
    },
    Cut {
        partial: bool,
    },
    DrawerKick {
        pin: u8,
        on_ms: u16,
        off_ms: u16,
    },
    /// A `DLE EOT` request and the byte answered.
    StatusQuery {
        kind: u8,
        answer: u8,
    },
    /// Output that was not printed because the printer is offline.
    NotPrinted {
        what: String,
        reason: String,
    },
}

/// A receipt as it came out of the printer: up to and including a cut.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrintedReceipt {
    pub lines: Vec<String>,
    pub qr_payloads: Vec<String>,
    pub cut: bool,
}

impl PrintedReceipt {
    /// The text lines joined with newlines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// The ESC/POS interpreter: bytes in, events out. No I/O, so the fuzz targets and property
/// tests drive it directly.
#[derive(Clone, Debug)]
pub struct EscPosInterpreter {
    encoding: TextEncoding,
    /// Columns per printed line; `None` never wraps.
    paper_columns: Option<usize>,
    pending: Vec<u8>,
    /// Image data still to skip.
    skip: u64,
    chinese_mode: bool,
    bold: bool,
    alignment: Alignment,
    width: u8,
    height: u8,
    line: Vec<u8>,
    qr_model: u8,
    qr_module_dots: u8,
    qr_error_correction: char,
    qr_data: Option<Vec<u8>>,
}

impl EscPosInterpreter {
    pub fn new(encoding: TextEncoding) -> EscPosInterpreter {
        EscPosInterpreter {
            encoding,
            paper_columns: None,
            pending: Vec::new(),
            skip: 0,
            chinese_mode: encoding == TextEncoding::Gb18030,
            bold: false,
            alignment: Alignment::Left,
            width: 1,
            height: 1,
            line: Vec::new(),
            qr_model: 2,
            qr_module_dots: 3,
            qr_error_correction: 'L',
            qr_data: None,
        }
    }

    /// Wraps printed lines at `columns` (48 for 80 mm paper with font A, 32 for 58 mm).
    #[must_use]
    pub fn with_paper_columns(mut self, columns: usize) -> EscPosInterpreter {
        self.paper_columns = Some(columns.max(1));
        self
    }

    /// Bytes held for an incomplete command (bounded by the longest command, 65,539 bytes).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds bytes from the wire; `condition` answers status requests and decides whether
    /// anything prints.
    pub fn push(&mut self, bytes: &[u8], condition: &PrinterCondition) -> Vec<PrinterEvent> {
        let mut bytes = bytes;
        if self.skip > 0 {
            let skipped = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            self.skip -= skipped as u64;
            bytes = &bytes[skipped..];
        }
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut at = 0;
        while at < self.pending.len() {
            if self.skip > 0 {
                let skipped = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(self.pending.len() - at);
                self.skip -= skipped as u64;
                at += skipped;
                continue;
            }
            let Some((command, used)) =
                parse_printer_command(&self.pending[at..], self.encoding, self.chinese_mode)
            else {
                break;
            };
            at += used.max(1);
            self.apply(command, condition, &mut events);
        }
        self.pending.drain(..at);
        events
    }

    fn print_line(&mut self, condition: &PrinterCondition, events: &mut Vec<PrinterEvent>) {
        let bytes = std::mem::take(&mut self.line);
        let magnification = usize::from(self.width.max(1));
        let mut lines = vec![String::new()];
        let mut used = 0;
        for (c, columns) in split_characters(&bytes, self.encoding, self.chinese_mode) {
            let columns = columns * magnification;
            if let Some(paper) = self.paper_columns
                && used > 0
                && used + columns > paper
            {
                lines.push(String::new());
                used = 0;
            }
            used += columns;
            if let Some(line) = lines.last_mut() {
                line.push(c);
            }
        }
        for text in lines {
            let event = PrinterEvent::Line {
                text,
                alignment: self.alignment,
                bold: self.bold,
                width: self.width,
                height: self.height,
            };
            emit(event, condition, events);
        }
    }

    fn apply(
        &mut self,
        command: PrinterCommand,
        condition: &PrinterCondition,
        events: &mut Vec<PrinterEvent>,
    ) {
        match command {
            PrinterCommand::Initialize => {
                let (encoding, pending) = (self.encoding, std::mem::take(&mut self.pending));
                *self = EscPosInterpreter {
                    pending,
                    paper_columns: self.paper_columns,
                    ..Self::new(encoding)
                };
                events.push(PrinterEvent::Initialize);
            }
            PrinterCommand::LineFeed => self.print_line(condition, events),
            PrinterCommand::FeedLines { lines } => {
                if !self.line.is_empty() {
                    self.print_line(condition, events);
                }
                emit(PrinterEvent::Feed { lines }, condition, events);
            }
            PrinterCommand::FeedDots { .. } => {
                if !self.line.is_empty() {
                    self.print_line(condition, events);
                }
            }
            PrinterCommand::CarriageReturn => {}
            PrinterCommand::Tab => {
                let spaces = TAB_COLUMNS - self.line.len() % TAB_COLUMNS;
                self.line.extend(std::iter::repeat_n(b' ', spaces));
            }
            PrinterCommand::Bold { on } => self.bold = on,
            PrinterCommand::Align { alignment } => self.alignment = alignment,
            PrinterCommand::PrintMode { bits } => {
                self.bold = bits & 0x08 != 0;
                self.height = if bits & 0x10 != 0 { 2 } else { 1 };
                self.width = if bits & 0x20 != 0 { 2 } else { 1 };
            }
            PrinterCommand::CharacterSize { width, height } => {
                (self.width, self.height) = (width, height)
            }
            PrinterCommand::ChineseMode { on } => self.chinese_mode = on,
            PrinterCommand::Cut { partial, .. } => {
                if !self.line.is_empty() {
                    self.print_line(condition, events);
                }
                emit(PrinterEvent::Cut { partial }, condition, events);
            }
            PrinterCommand::DrawerKick { pin, on_ms, off_ms } => {
                events.push(PrinterEvent::DrawerKick { pin, on_ms, off_ms });
            }
            PrinterCommand::StatusRequest { kind } => {
                events.push(PrinterEvent::StatusQuery {
                    kind,
                    answer: condition.status_byte(kind),
                });
            }
            PrinterCommand::Qr(function) => match function {
                QrFunction::Model { model } => self.qr_model = model,
                QrFunction::ModuleSize { dots } => self.qr_module_dots = dots,
                QrFunction::ErrorCorrection { level } => self.qr_error_correction = level,
                QrFunction::Store { data } => self.qr_data = Some(data),
                QrFunction::Print => {
                    if let Some(data) = &self.qr_data {
                        let event = PrinterEvent::Qr {
                            payload: String::from_utf8_lossy(data).into_owned(),
                            model: self.qr_model,
                            module_dots: self.qr_module_dots,
                            error_correction: self.qr_error_correction,
                        };
                        emit(event, condition, events);
                    }
                }
                QrFunction::Other { .. } => {}
            },
            PrinterCommand::Image { bytes } => self.skip = bytes,
            PrinterCommand::Text { bytes } => {
                self.line.extend_from_slice(&bytes);
                if self.line.len() > MAX_PRINT_LINE_BYTES {
                    self.print_line(condition, events);
                }
            }
            PrinterCommand::Underline { .. }
            | PrinterCommand::LineSpacing { .. }
            | PrinterCommand::CodeTable { .. }
            | PrinterCommand::Block { .. }
            | PrinterCommand::Unknown { .. } => {}
        }
    }
}

/// Adds a printing event, or a `NotPrinted` in its place when the printer is offline.
fn emit(event: PrinterEvent, condition: &PrinterCondition, events: &mut Vec<PrinterEvent>) {
    if condition.offline() {
        let what = match &event {
            PrinterEvent::Line { .. } => "line",
            PrinterEvent::Qr { .. } => "qr",
            PrinterEvent::Cut { .. } => "cut",
            PrinterEvent::Feed { .. } => "feed",
            _ => "output",
        };
        let reason = if condition.cover_open {
            "cover open"
        } else {
            "paper out"
        };
        events.push(PrinterEvent::NotPrinted {
            what: what.to_owned(),
            reason: reason.to_owned(),
        });
    } else {
        events.push(event);
    }
}

/// How the emulated printer is set up.
#[derive(Clone, Debug, Default)]
pub struct PrinterEmulatorSettings {
    pub encoding: TextEncoding,
    /// The condition at start (paper out, cover open, ...); change it with
    /// [`PrinterEmulator::set_condition`].
    pub condition: PrinterCondition,
    /// A stable path to link to the pseudo-terminal (see [`PtyDevice::create`]).
    pub link: Option<std::path::PathBuf>,
    /// Columns per printed line (48 for 80 mm paper with font A, 32 for 58 mm); `None` never
    /// wraps.
    pub paper_columns: Option<usize>,
}

/// Everything the emulated printer has done, for tests.
#[derive(Clone, Debug, Default)]
pub struct PrinterState {
    pub condition: PrinterCondition,
    /// Receipts finished by a cut, oldest first (the last [`MAX_KEPT_RECEIPTS`]).
    pub receipts: Vec<PrintedReceipt>,
    /// What was printed since the last cut.
    pub current: PrintedReceipt,
    pub drawer_kicks: usize,
    pub status_queries: usize,
    /// Every event, oldest first (bounded like the receipts: the last 10,000).
    pub events: Vec<PrinterEvent>,
}

/// Events kept in [`PrinterState::events`].
const MAX_KEPT_EVENTS: usize = 10_000;

impl PrinterState {
    fn record(&mut self, event: &PrinterEvent) {
        match event {
            PrinterEvent::Line { text, .. } => self.current.lines.push(text.clone()),
            PrinterEvent::Qr { payload, .. } => self.current.qr_payloads.push(payload.clone()),
            PrinterEvent::Cut { .. } => {
                let mut receipt = std::mem::take(&mut self.current);
                receipt.cut = true;
                self.receipts.push(receipt);
                let excess = self.receipts.len().saturating_sub(MAX_KEPT_RECEIPTS);
                self.receipts.drain(..excess);
            }
            PrinterEvent::DrawerKick { .. } => self.drawer_kicks += 1,
            PrinterEvent::StatusQuery { .. } => self.status_queries += 1,
            PrinterEvent::Initialize
            | PrinterEvent::Feed { .. }
            | PrinterEvent::NotPrinted { .. } => {}
        }
        self.events.push(event.clone());
        let excess = self.events.len().saturating_sub(MAX_KEPT_EVENTS);
        self.events.drain(..excess);
    }
}

/// A command of the emulator's line interface (`lanepay emulate printer` reads them from
/// stdin): each sets the condition the printer reports from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrinterEmulatorCommand {
    /// `paper-out`: the roll is empty (offline; nothing prints).
    PaperOut,
    /// `paper-low`: the near-end sensor trips (still prints).
    PaperLow,
    /// `cover-open`: the cover is open (offline; nothing prints).
    CoverOpen,
    /// `drawer-open`: the drawer switch reports open.
    DrawerOpen,
    /// `ok`: everything clear.
    Ok,
}

impl PrinterEmulatorCommand {
    /// Parses one line of the command interface; the error says what is understood.
    pub fn parse(line: &str) -> Result<PrinterEmulatorCommand, String> {
        match line.trim() {
            "paper-out" => Ok(PrinterEmulatorCommand::PaperOut),
            "paper-low" => Ok(PrinterEmulatorCommand::PaperLow),
            "cover-open" => Ok(PrinterEmulatorCommand::CoverOpen),
            "drawer-open" => Ok(PrinterEmulatorCommand::DrawerOpen),
            "ok" => Ok(PrinterEmulatorCommand::Ok),
            _ => Err("commands: paper-out | paper-low | cover-open | drawer-open | ok".to_owned()),
        }
    }

    /// The condition the printer reports after this command.
    pub fn condition(self) -> PrinterCondition {
        let clear = PrinterCondition::default();
        match self {
            PrinterEmulatorCommand::PaperOut => PrinterCondition {
                paper_out: true,
                ..clear
            },
            PrinterEmulatorCommand::PaperLow => PrinterCondition {
                paper_near_end: true,
                ..clear
            },
            PrinterEmulatorCommand::CoverOpen => PrinterCondition {
                cover_open: true,
                ..clear
            },
            PrinterEmulatorCommand::DrawerOpen => PrinterCondition {
                drawer_open: true,
                ..clear
            },
            PrinterEmulatorCommand::Ok => clear,
        }
    }
}

type SharedState = Arc<(Mutex<PrinterState>, Condvar)>;

/// The running emulated printer. Dropping it stops its thread and closes the
/// pseudo-terminal (the driver sees an unplugged printer).
#[derive(Debug)]
pub struct PrinterEmulator {
    shared: SharedState,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _guard: PtyGuard,
}

impl PrinterEmulator {
    /// Creates the pseudo-terminal and serves it on a thread; `on_event` gets every event
    /// (print it as JSON, forward it, or ignore it). Returns the path to open.
    pub fn spawn(
        settings: PrinterEmulatorSettings,
        on_event: impl FnMut(&PrinterEvent) + Send + 'static,
    ) -> Result<(String, PrinterEmulator), DeviceError> {
        let pty = PtyDevice::create(DEVICE, settings.link.as_deref())?;
        let path = pty.path();
        let (master, guard) = pty.into_parts();
        let shared: SharedState = Arc::new((
            Mutex::new(PrinterState {
                condition: settings.condition,
                ..PrinterState::default()
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            let mut interpreter = EscPosInterpreter::new(settings.encoding);
            if let Some(columns) = settings.paper_columns {
                interpreter = interpreter.with_paper_columns(columns);
            }
            std::thread::Builder::new()
                .name("printer-emulator".to_owned())
                .spawn(move || serve(master, interpreter, &shared, &stop, on_event))
                .map_err(|error| DeviceError::new(DEVICE, ErrorKind::Other, error.to_string()))?
        };
        Ok((
            path,
            PrinterEmulator {
                shared,
                stop,
                thread: Some(thread),
                _guard: guard,
            },
        ))
    }

    /// Changes what the printer reports (and whether it prints) from now on.
    pub fn set_condition(&self, condition: PrinterCondition) {
        let (lock, changed) = &*self.shared;
        lock.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .condition = condition;
        changed.notify_all();
    }

    /// Runs one command of the line interface.
    pub fn execute(&self, command: PrinterEmulatorCommand) {
        self.set_condition(command.condition());
    }

    /// A copy of everything the printer has done so far.
    pub fn state(&self) -> PrinterState {
        self.shared
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `condition` holds on the printer's state or `timeout` passes; returns the
    /// state either way.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&PrinterState) -> bool,
    ) -> Result<PrinterState, Box<PrinterState>> {
        wait_on(&self.shared, Instant::now() + timeout, |state| {
            condition(state).then(|| state.clone())
        })
        .ok_or_else(|| Box::new(self.state()))
    }

    /// Waits for the `count`-th receipt (1-based) to be cut and returns it.
    pub fn wait_for_receipt(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<PrintedReceipt, Box<PrinterState>> {
        let state = self.wait_until(timeout, |state| state.receipts.len() >= count.max(1))?;
        match state.receipts.get(count.saturating_sub(1)) {
            Some(receipt) => Ok(receipt.clone()),
            None => Err(Box::new(state)),
        }
    }
}

impl Drop for PrinterEmulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    mut master: TTYPort,
    mut interpreter: EscPosInterpreter,
    shared: &SharedState,
    stop: &AtomicBool,
    mut on_event: impl FnMut(&PrinterEvent),
) {
    use serialport::SerialPort;
    use std::io::Read;
    let _ = master.set_timeout(EMULATOR_POLL_INTERVAL);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let read = match master.read(&mut buf) {
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(error) => {
                tracing::debug!(%error, "printer emulator read failed");
                std::thread::sleep(EMULATOR_POLL_INTERVAL);
                continue;
            }
        };
        let condition = shared
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .condition;
        let events = interpreter.push(&buf[..read], &condition);
        // Real-time requests are answered before anything else is recorded.
        for event in &events {
            if let PrinterEvent::StatusQuery { answer, .. } = event
                && let Err(error) = master.write_all(&[*answer]).and_then(|()| master.flush())
            {
                tracing::debug!(%error, "printer emulator cannot answer a status request");
            }
        }
        // Listeners hear of an event before waiters see it in the state, so a test that
        // waited on the state finds the event in its channel too.
        for event in &events {
            on_event(event);
        }
        let (lock, changed) = &**shared;
        let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
        for event in &events {
            state.record(event);
        }
        changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printer::{ReceiptJob, receipt_bytes};

    #[test]
    fn a_receipt_comes_back_as_text_qr_cut_and_kick() {
        let job = ReceiptJob {
            title: Some("便利店".to_owned()),
            lines: vec![
                "可乐         3.50".to_owned(),
                "Card 622588******1234".to_owned(),
            ],
            qr_payload: Some("LP1:order=42".to_owned()),
            cut: true,
            kick_drawer: true,
        };
        let wire = receipt_bytes(&job, TextEncoding::Gb18030).unwrap();
        let mut interpreter = EscPosInterpreter::new(TextEncoding::Gb18030);
        let mut state = PrinterState::default();
        // One byte at a time: every command must survive being split anywhere.
        for byte in &wire {
            for event in interpreter.push(std::slice::from_ref(byte), &PrinterCondition::default())
            {
                state.record(&event);
            }
        }
        assert_eq!(state.receipts.len(), 1);
        let receipt = &state.receipts[0];
        assert_eq!(
            receipt.lines,
            ["便利店", "可乐         3.50", "Card 622588******1234", ""]
        );
        assert_eq!(receipt.qr_payloads, ["LP1:order=42"]);
        assert_eq!(state.drawer_kicks, 1);
        assert!(state.events.contains(&PrinterEvent::Line {
            text: "便利店".to_owned(),
            alignment: Alignment::Center,
            bold: true,
            width: 2,
            height: 2
        }));
        assert_eq!(interpreter.pending(), 0);
    }

    #[test]
    fn an_offline_printer_answers_status_but_prints_nothing() {
        let mut interpreter = EscPosInterpreter::new(TextEncoding::Ascii);
        let condition = PrinterCondition {
            paper_out: true,
            ..Default::default()
        };
        let events = interpreter.push(b"\x10\x04\x04hello\n", &condition);
        assert_eq!(
            events,
            vec![
                PrinterEvent::StatusQuery {
                    kind: 4,
                    answer: 0x7E
                },
                PrinterEvent::NotPrinted {
                    what: "line".to_owned(),
                    reason: "paper out".to_owned()
                }
            ]
        );
    }

    #[test]
    fn lines_wrap_at_the_paper_width_counting_wide_characters_and_magnification() {
        let mut interpreter = EscPosInterpreter::new(TextEncoding::Gb18030).with_paper_columns(8);
        let mut wire = crate::text::encode("可乐可乐x", TextEncoding::Gb18030);
        wire.extend_from_slice(b"\n\x1d\x21\x10ABCDE\n");
        let texts: Vec<String> = interpreter
            .push(&wire, &PrinterCondition::default())
            .into_iter()
            .filter_map(|event| match event {
                PrinterEvent::Line { text, .. } => Some(text),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["可乐可乐", "x", "ABCD", "E"]);
    }

    #[test]
    fn image_data_is_skipped_even_when_it_looks_like_commands() {
        let mut interpreter = EscPosInterpreter::new(TextEncoding::Ascii);
        let mut wire = vec![0x1D, b'v', b'0', 0, 2, 0, 2, 0];
        wire.extend_from_slice(&[0x1B, b'@', 0x0A, 0x0A]);
        wire.extend_from_slice(b"after\n");
        let events = interpreter.push(&wire, &PrinterCondition::default());
        assert!(
            matches!(&events[..], [PrinterEvent::Line { text, .. }] if text == "after"),
            "{events:?}"
        );
    }
}
