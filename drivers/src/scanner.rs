//! Barcode scanners: the line protocol that serial (RS-232 or USB-CDC) scanners speak, turned
//! into scan events the lane can trust.
//!
//! A frame is `[prefix][AIM identifier]code<terminator>`. The framing ([`ScanFramer`]) works on
//! the raw byte stream and only splits at terminators, so one bad line (binary garbage, a line
//! longer than [`MAX_SCAN_LINE_BYTES`]) is rejected and the next line is read normally: the
//! stream never desynchronises. Decoding ([`decode_line`]) strips the prefix and the AIM
//! symbology identifier and verifies EAN/UPC check digits: a bad check digit is a
//! [`ScannerEvent::Misread`], never a code that reaches the cart.
//!
//! Keyboard-wedge (evdev) scanners are not implemented yet; they would be a second [`Scanner`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{DeviceError, DeviceStatus, ErrorKind};
use crate::serial::{SerialSettings, SupervisedPort};

const DEVICE: &str = "scanner";

/// Longest line accepted, terminator excluded. Payment codes are 16-24 digits and product codes
/// at most 48 characters; the longest thing a lane scans is a signed QR (offline payment
/// confirmation, a few hundred bytes). Anything longer is garbage or a misconfigured scanner,
/// and the framer drops it up to the next terminator.
pub const MAX_SCAN_LINE_BYTES: usize = 1024;

/// Longest prefix the configuration may set; scanners allow about 10 to 20 characters.
pub const MAX_PREFIX_BYTES: usize = 20;

/// How much is read from the port at once.
const READ_CHUNK_BYTES: usize = 256;

/// What ends each scanned code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Terminator {
    #[default]
    Cr,
    Lf,
    CrLf,
    Tab,
}

impl Terminator {
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Terminator::Cr => b"\r",
            Terminator::Lf => b"\n",
            Terminator::CrLf => b"\r\n",
            Terminator::Tab => b"\t",
        }
    }
}

/// How a serial scanner frames its codes (the agent maps `[devices.scanner]` onto this).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScannerFormat {
    pub terminator: Terminator,
    /// A prefix sent before each code (stripped); empty for none.
    pub prefix: String,
    /// Whether each code starts with an AIM symbology identifier such as `]E0`.
    pub aim_ids: bool,
}

/// The barcode symbology, from the AIM identifier (ISO/IEC 15424) or, without one, inferred
/// from the shape of the code (all digits and 8, 12 or 13 long: EAN/UPC).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Symbology {
    Ean13,
    Ean8,
    UpcA,
    UpcE,
    /// EAN/UPC with a 2- or 5-digit add-on (`]E3`); the main code is checked.
    EanWithAddOn,
    /// An add-on alone (`]E1`, `]E2`).
    EanAddOn,
    /// `]C0`.
    Code128,
    /// `]C1`: Code 128 with FNC1 in first position (GS1-128).
    Gs1_128,
    Code39,
    Interleaved2Of5,
    Codabar,
    Code93,
    Pdf417,
    DataMatrix,
    Qr,
    Aztec,
    Gs1DataBar,
    /// Another AIM identifier, as sent (for example `]X0`).
    Other(String),
    /// No AIM identifier and not EAN/UPC-shaped.
    Unknown,
}

impl Symbology {
    /// Reads a three-byte AIM identifier `]cm`.
    pub fn from_aim(id: &str) -> Option<Symbology> {
        let mut chars = id.chars();
        if chars.next()? != ']' {
            return None;
        }
        let code = chars.next()?;
        let modifier = chars.next()?;
        if chars.next().is_some() || !modifier.is_ascii_alphanumeric() {
            return None;
        }
        Some(match (code, modifier) {
            ('E', '0') => Symbology::Ean13,
            ('E', '4') => Symbology::Ean8,
            ('E', '3') => Symbology::EanWithAddOn,
            ('E', '1' | '2') => Symbology::EanAddOn,
            ('C', '1') => Symbology::Gs1_128,
            ('C', _) => Symbology::Code128,
            ('A', _) => Symbology::Code39,
            ('I', _) => Symbology::Interleaved2Of5,
            ('F', _) => Symbology::Codabar,
            ('G', _) => Symbology::Code93,
            ('L', _) => Symbology::Pdf417,
            ('d', _) => Symbology::DataMatrix,
            ('Q', _) => Symbology::Qr,
            ('z', _) => Symbology::Aztec,
            ('e', _) => Symbology::Gs1DataBar,
            _ => Symbology::Other(id.to_owned()),
        })
    }

    /// The AIM identifier a scanner sends for this symbology (the emulator's side).
    pub fn aim_id(&self) -> &str {
        match self {
            Symbology::Ean13 | Symbology::UpcA | Symbology::UpcE => "]E0",
            Symbology::Ean8 => "]E4",
            Symbology::EanWithAddOn => "]E3",
            Symbology::EanAddOn => "]E1",
            Symbology::Code128 => "]C0",
            Symbology::Gs1_128 => "]C1",
            Symbology::Code39 => "]A0",
            Symbology::Interleaved2Of5 => "]I0",
            Symbology::Codabar => "]F0",
            Symbology::Code93 => "]G0",
            Symbology::Pdf417 => "]L0",
            Symbology::DataMatrix => "]d1",
            Symbology::Qr => "]Q1",
            Symbology::Aztec => "]z0",
            Symbology::Gs1DataBar => "]e0",
            Symbology::Other(id) => id,
            Symbology::Unknown => "]X0",
        }
    }
}

/// What a scanner reports. One closed enum, so the lane's main loop handles every case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScannerEvent {
    /// A code that passed every check: it may go to the cart.
    Scanned { code: String, symbology: Symbology },
    /// A well-framed code that fails its own check (EAN/UPC check digit): ask to scan again.
    Misread { code: String, reason: String },
    /// A line that is not a code (garbage, too long, missing prefix or AIM identifier).
    Rejected { reason: String },
    /// The scanner came or went (unplugged, replugged).
    Status { status: DeviceStatus },
}

/// A raw frame out of the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The bytes between two terminators (terminator excluded, never empty).
    Line(Vec<u8>),
    /// A line grew past [`MAX_SCAN_LINE_BYTES`]; its bytes are dropped up to the next
    /// terminator.
    TooLong,
}

/// Splits the scanner's byte stream into lines (checks before parsing, like mini-redis's
/// `parse_frame`: an incomplete line stays buffered and yields `None`).
#[derive(Clone, Debug)]
pub struct ScanFramer {
    terminator: Terminator,
    buffer: Vec<u8>,
    /// Inside an over-long line: drop bytes until the next terminator.
    discarding: bool,
}

impl ScanFramer {
    pub fn new(terminator: Terminator) -> ScanFramer {
        ScanFramer {
            terminator,
            buffer: Vec::new(),
            discarding: false,
        }
    }

    /// Bytes buffered for the line in progress (bounded by `MAX_SCAN_LINE_BYTES + 1`).
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Adds bytes from the port; call [`ScanFramer::next_frame`] until it returns `None`.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        for &byte in bytes {
            if let Some(frame) = self.push_byte(byte) {
                frames.push(frame);
            }
        }
        frames
    }

    fn push_byte(&mut self, byte: u8) -> Option<Frame> {
        let terminator = self.terminator.bytes();
        self.buffer.push(byte);
        if self.buffer.ends_with(terminator) {
            let end = self.buffer.len() - terminator.len();
            let mut line: Vec<u8> = self.buffer.drain(..).take(end).collect();
            if std::mem::take(&mut self.discarding) {
                return None;
            }
            // Tolerate a scanner that sends CRLF when CR or LF is configured: the other half
            // is stripped where it lands instead of failing every code.
            match self.terminator {
                Terminator::Cr if line.first() == Some(&b'\n') => {
                    line.remove(0);
                }
                Terminator::Lf if line.last() == Some(&b'\r') => {
                    line.pop();
                }
                _ => {}
            }
            return if line.is_empty() {
                None
            } else {
                Some(Frame::Line(line))
            };
        }
        // Keep enough to recognise a terminator that straddles the limit.
        if self.buffer.len() > MAX_SCAN_LINE_BYTES + terminator.len() {
            let keep = terminator.len() - 1;
            let tail = self.buffer.split_off(self.buffer.len() - keep);
            self.buffer = tail;
            if !self.discarding {
                self.discarding = true;
                return Some(Frame::TooLong);
            }
        }
        None
    }
}

/// Turns one frame into an event: strip the prefix and AIM identifier, reject binary garbage,
/// verify EAN/UPC check digits.
pub fn decode_frame(frame: &Frame, format: &ScannerFormat) -> ScannerEvent {
    match frame {
        Frame::Line(line) => decode_line(line, format),
        Frame::TooLong => ScannerEvent::Rejected {
            reason: format!("line longer than {MAX_SCAN_LINE_BYTES} bytes; dropped"),
        },
    }
}

/// See [`decode_frame`].
pub fn decode_line(line: &[u8], format: &ScannerFormat) -> ScannerEvent {
    let rejected = |reason: String| ScannerEvent::Rejected { reason };
    if line.len() > MAX_SCAN_LINE_BYTES {
        return rejected(format!(
            "line longer than {MAX_SCAN_LINE_BYTES} bytes; dropped"
        ));
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return rejected(format!("{} bytes of binary data (not text)", line.len()));
    };
    // GS (0x1D) separates GS1 element strings; every other control character is noise.
    if let Some(bad) = text.chars().find(|&c| c.is_control() && c != '\u{1d}') {
        return rejected(format!(
            "control character U+{:04X} in a code",
            u32::from(bad)
        ));
    }
    let mut rest = text;
    if !format.prefix.is_empty() {
        match rest.strip_prefix(format.prefix.as_str()) {
            Some(stripped) => rest = stripped,
            None => return rejected("line does not start with the configured prefix".to_owned()),
        }
    }
    let symbology = if format.aim_ids {
        let id: String = rest.chars().take(3).collect();
        match Symbology::from_aim(&id) {
            Some(symbology) => {
                rest = &rest[id.len()..];
                Some(symbology)
            }
            None => return rejected("line does not start with an AIM identifier".to_owned()),
        }
    } else {
        None
    };
    if rest.is_empty() {
        return rejected("empty code".to_owned());
    }
    let code = rest.to_owned();
    let symbology = symbology.unwrap_or_else(|| infer_symbology(&code));
    match check_code(&code, &symbology) {
        Ok(symbology) => ScannerEvent::Scanned { code, symbology },
        Err(reason) => ScannerEvent::Misread { code, reason },
    }
}

fn infer_symbology(code: &str) -> Symbology {
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return Symbology::Unknown;
    }
    match code.len() {
        8 => Symbology::Ean8,
        12 => Symbology::UpcA,
        13 => Symbology::Ean13,
        _ => Symbology::Unknown,
    }
}

/// Verifies the code against its symbology's own rules; returns the precise symbology (`]E0`
/// covers EAN-13, UPC-A and UPC-E).
fn check_code(code: &str, symbology: &Symbology) -> Result<Symbology, String> {
    let digits = || -> Result<Vec<u8>, String> {
        code.bytes()
            .map(|b| {
                if b.is_ascii_digit() {
                    Ok(b - b'0')
                } else {
                    Err("non-digit in an EAN/UPC code".to_owned())
                }
            })
            .collect()
    };
    match symbology {
        Symbology::Ean13 | Symbology::UpcA | Symbology::UpcE => {
            let digits = digits()?;
            match digits.len() {
                13 => check_gtin(&digits).map(|()| Symbology::Ean13),
                12 => check_gtin(&digits).map(|()| Symbology::UpcA),
                8 => check_gtin(&expand_upc_e(&digits)?).map(|()| Symbology::UpcE),
                n => Err(format!(
                    "{n} digits is not an EAN-13, UPC-A or UPC-E length"
                )),
            }
        }
        Symbology::Ean8 => {
            let digits = digits()?;
            if digits.len() != 8 {
                return Err(format!("{} digits is not an EAN-8 length", digits.len()));
            }
            check_gtin(&digits).map(|()| Symbology::Ean8)
        }
        Symbology::EanWithAddOn => {
            let digits = digits()?;
            match digits.len() {
                15 | 18 => check_gtin(&digits[..13]).map(|()| Symbology::EanWithAddOn),
                n => Err(format!(
                    "{n} digits is not EAN-13 plus a 2- or 5-digit add-on"
                )),
            }
        }
        Symbology::EanAddOn => {
            let digits = digits()?;
            if digits.len() == 2 || digits.len() == 5 {
                Ok(Symbology::EanAddOn)
            } else {
                Err(format!(
                    "{} digits is not a 2- or 5-digit add-on",
                    digits.len()
                ))
            }
        }
        other => Ok(other.clone()),
    }
}

/// Verifies a GTIN check digit (EAN-8, UPC-A, EAN-13, GTIN-14): weights 3 and 1 from the right,
/// excluding the check digit.
fn check_gtin(digits: &[u8]) -> Result<(), String> {
    let Some((&check, body)) = digits.split_last() else {
        return Err("empty code".to_owned());
    };
    let expected = gtin_check_digit(body);
    if check == expected {
        Ok(())
    } else {
        Err(format!("check digit is {check}, expected {expected}"))
    }
}

/// The GTIN check digit of `body` (the digits before the check digit).
pub fn gtin_check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| u32::from(d) * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Expands an 8-digit UPC-E (number system, six digits, check) to its 12-digit UPC-A.
fn expand_upc_e(digits: &[u8]) -> Result<Vec<u8>, String> {
    let [system, d1, d2, d3, d4, d5, d6, check] = digits else {
        return Err("UPC-E needs 8 digits".to_owned());
    };
    if *system > 1 {
        return Err(format!("UPC-E number system {system} (0 or 1 expected)"));
    }
    let (s, c) = (*system, *check);
    let (d1, d2, d3, d4, d5, d6) = (*d1, *d2, *d3, *d4, *d5, *d6);
    let body = match d6 {
        0..=2 => [s, d1, d2, d6, 0, 0, 0, 0, d3, d4, d5],
        3 => [s, d1, d2, d3, 0, 0, 0, 0, 0, d4, d5],
        4 => [s, d1, d2, d3, d4, 0, 0, 0, 0, 0, d5],
        _ => [s, d1, d2, d3, d4, d5, 0, 0, 0, 0, d6],
    };
    let mut upc_a = body.to_vec();
    upc_a.push(c);
    Ok(upc_a)
}

/// The byte stream to scan events: a framer and the format, with no I/O (the serial driver and
/// the fuzz targets both feed it).
#[derive(Clone, Debug)]
pub struct ScanDecoder {
    framer: ScanFramer,
    format: ScannerFormat,
}

impl ScanDecoder {
    pub fn new(format: ScannerFormat) -> ScanDecoder {
        ScanDecoder {
            framer: ScanFramer::new(format.terminator),
            format,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Vec<ScannerEvent> {
        self.framer
            .push(bytes)
            .iter()
            .map(|frame| decode_frame(frame, &self.format))
            .collect()
    }

    pub fn buffered(&self) -> usize {
        self.framer.buffered()
    }
}

/// A barcode scanner, whatever connects it. Scanners push; the driver turns that into a pull
/// with a timeout so a thread (see [`spawn_scanner`]) or a test can drive it.
pub trait Scanner: Send {
    /// Waits up to `timeout` for the next event; `Ok(None)` when nothing happened. Unplug and
    /// replug come out as [`ScannerEvent::Status`]; `Err` only for what retrying cannot fix.
    fn next_event(&mut self, timeout: Duration) -> Result<Option<ScannerEvent>, DeviceError>;

    /// The scanner's current state for the status bar.
    fn status(&self) -> DeviceStatus;
}

/// Settings of a serial scanner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialScannerSettings {
    pub serial: SerialSettings,
    pub format: ScannerFormat,
}

/// A scanner on a serial port (RS-232 or USB-CDC), reopened when it comes back after an unplug.
#[derive(Debug)]
pub struct SerialScanner {
    port: SupervisedPort,
    decoder: ScanDecoder,
    pending: std::collections::VecDeque<ScannerEvent>,
    status_seen: DeviceStatus,
}

impl SerialScanner {
    /// Checks the settings; the port is opened by the first [`Scanner::next_event`], so a
    /// scanner that is not plugged in yet is reported, not fatal.
    pub fn new(settings: SerialScannerSettings) -> Result<SerialScanner, DeviceError> {
        if settings.format.prefix.len() > MAX_PREFIX_BYTES {
            return Err(DeviceError::new(
                DEVICE,
                ErrorKind::Other,
                format!("prefix longer than {MAX_PREFIX_BYTES} bytes"),
            ));
        }
        if settings.format.prefix.chars().any(char::is_control) {
            return Err(DeviceError::new(
                DEVICE,
                ErrorKind::Other,
                "prefix has control characters",
            ));
        }
        let port = SupervisedPort::new(DEVICE, settings.serial);
        let status_seen = port.status().clone();
        Ok(SerialScanner {
            port,
            decoder: ScanDecoder::new(settings.format),
            pending: Default::default(),
            status_seen,
        })
    }

    /// Queues a status event when the port's status changed since the last one reported.
    fn note_status(&mut self) {
        if self.port.status() != &self.status_seen {
            self.status_seen = self.port.status().clone();
            self.pending.push_back(ScannerEvent::Status {
                status: self.status_seen.clone(),
            });
        }
    }
}

impl Scanner for SerialScanner {
    fn next_event(&mut self, timeout: Duration) -> Result<Option<ScannerEvent>, DeviceError> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; READ_CHUNK_BYTES];
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let remaining = deadline - now;
            if !self.port.is_open() {
                let wait = self.port.time_until_retry();
                if !wait.is_zero() {
                    // Waiting for the backoff is this driver's job; nothing else to do meanwhile.
                    std::thread::sleep(wait.min(remaining));
                    continue;
                }
                let opened = self.port.ensure_open();
                if opened.is_ok() {
                    // A replugged scanner starts a fresh line.
                    self.decoder = ScanDecoder::new(self.decoder.format.clone());
                }
                self.note_status();
                continue;
            }
            match self.port.read(&mut buf, remaining) {
                Ok(read) => {
                    let events = self.decoder.push(&buf[..read]);
                    self.pending.extend(events);
                }
                Err(_) => self.note_status(),
            }
        }
    }

    fn status(&self) -> DeviceStatus {
        self.port.status().clone()
    }
}

/// How often the scanner thread looks at its stop flag.
const SCANNER_THREAD_POLL: Duration = Duration::from_millis(100);

/// A running scanner thread; dropping it (or [`ScannerThread::stop`]) stops and joins it.
#[derive(Debug)]
pub struct ScannerThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ScannerThread {
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("scanner thread panicked");
        }
    }
}

impl Drop for ScannerThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs `scanner` on its own thread and hands every event to `on_event`, for example
/// `move |event| { let _ = tokio_sender.send(event); }` or a `std::sync::mpsc::Sender`.
/// An `Err` from the scanner is delivered as a `Status` event and the thread goes on.
pub fn spawn_scanner(
    mut scanner: impl Scanner + 'static,
    mut on_event: impl FnMut(ScannerEvent) + Send + 'static,
) -> Result<ScannerThread, DeviceError> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("lanepay-scanner".to_owned())
        .spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                match scanner.next_event(SCANNER_THREAD_POLL) {
                    Ok(Some(event)) => on_event(event),
                    Ok(None) => {}
                    Err(error) => {
                        on_event(ScannerEvent::Status {
                            status: DeviceStatus::Unavailable {
                                kind: error.kind,
                                reason: error.message,
                            },
                        });
                        std::thread::sleep(SCANNER_THREAD_POLL);
                    }
                }
            }
        })
        .map_err(|error| {
            DeviceError::new(
                DEVICE,
                ErrorKind::Other,
                format!("cannot start thread: {error}"),
            )
        })?;
    Ok(ScannerThread {
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(terminator: Terminator, prefix: &str, aim_ids: bool) -> ScannerFormat {
        ScannerFormat {
            terminator,
            prefix: prefix.to_owned(),
            aim_ids,
        }
    }

    fn scanned(code: &str, symbology: Symbology) -> ScannerEvent {
        ScannerEvent::Scanned {
            code: code.to_owned(),
            symbology,
        }
    }

    #[test]
    fn lines_split_on_each_terminator_even_across_reads() {
        for terminator in [
            Terminator::Cr,
            Terminator::Lf,
            Terminator::CrLf,
            Terminator::Tab,
        ] {
            let mut decoder = ScanDecoder::new(format(terminator, "", false));
            let mut stream = Vec::new();
            for code in ["4006381333931", "ABC-123"] {
                stream.extend_from_slice(code.as_bytes());
                stream.extend_from_slice(terminator.bytes());
            }
            let mut events = Vec::new();
            for byte in &stream {
                events.extend(decoder.push(std::slice::from_ref(byte)));
            }
            assert_eq!(
                events,
                vec![
                    scanned("4006381333931", Symbology::Ean13),
                    scanned("ABC-123", Symbology::Unknown)
                ],
                "{terminator:?}"
            );
        }
    }

    #[test]
    fn prefix_and_aim_identifiers_are_stripped_and_mapped() {
        let mut decoder = ScanDecoder::new(format(Terminator::Cr, "#", true));
        let events = decoder
            .push(b"#]E04006381333931\r#]E496385074\r#]C1(01)123\r#]Q1hello\r#]E0036000291452\r");
        assert_eq!(
            events,
            vec![
                scanned("4006381333931", Symbology::Ean13),
                scanned("96385074", Symbology::Ean8),
                scanned("(01)123", Symbology::Gs1_128),
                scanned("hello", Symbology::Qr),
                scanned("036000291452", Symbology::UpcA),
            ]
        );
        let missing = decoder.push(b"]E04006381333931\r#4006381333931\r");
        assert!(
            matches!(
                &missing[..],
                [ScannerEvent::Rejected { .. }, ScannerEvent::Rejected { .. }]
            ),
            "{missing:?}"
        );
    }

    #[test]
    fn bad_check_digits_are_misreads() {
        let mut decoder = ScanDecoder::new(format(Terminator::Cr, "", false));
        let events = decoder.push(b"4006381333932\r96385075\r");
        assert!(
            matches!(&events[..], [ScannerEvent::Misread { reason, .. }, ScannerEvent::Misread { .. }] if reason.contains("expected 1")),
            "{events:?}"
        );
        // UPC-E 0425261 expands to 042100005264 (check 4).
        let mut decoder = ScanDecoder::new(format(Terminator::Cr, "", true));
        assert_eq!(
            decoder.push(b"]E004252614\r"),
            vec![scanned("04252614", Symbology::UpcE)]
        );
        assert!(matches!(
            &decoder.push(b"]E004252615\r")[..],
            [ScannerEvent::Misread { .. }]
        ));
    }

    #[test]
    fn garbage_and_over_long_lines_are_rejected_and_the_next_line_is_read() {
        let mut decoder = ScanDecoder::new(format(Terminator::CrLf, "", false));
        let mut stream = vec![0x00, 0xFF, 0x1B, 0x80, b'\r', b'\n'];
        stream.extend(std::iter::repeat_n(b'7', MAX_SCAN_LINE_BYTES * 3));
        stream.extend_from_slice(b"\r\n4006381333931\r\n");
        let events = decoder.push(&stream);
        assert!(
            matches!(&events[0], ScannerEvent::Rejected { reason } if reason.contains("binary")),
            "{events:?}"
        );
        assert!(
            matches!(&events[1], ScannerEvent::Rejected { reason } if reason.contains("longer")),
            "{events:?}"
        );
        assert_eq!(events[2..], [scanned("4006381333931", Symbology::Ean13)]);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        let mut decoder = ScanDecoder::new(format(Terminator::CrLf, "", false));
        let mut stream = vec![b'A'; MAX_SCAN_LINE_BYTES];
        stream.extend_from_slice(b"\r\n");
        let events = decoder.push(&stream);
        assert!(
            matches!(&events[..], [ScannerEvent::Scanned { code, .. }] if code.len() == MAX_SCAN_LINE_BYTES)
        );
    }
}
