//! `lanepay devices` lists the configured devices and their state now; `lanepay devices test`
//! walks a technician through them: a test receipt with a QR code and a cut, a test line on the
//! pole display, one scan and one card tap, each step ending in a PASS or FAIL line.
//!
//! Devices configured as "emulator" are started here too, and the scan and tap steps feed them
//! a test code and the default test card themselves, so a training lane's test passes alone.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use lanepay_agent::devices::{
    DeviceProbe, nfc_connstring, probe, serial_display, serial_printer, serial_scanner_settings,
};
use lanepay_config::{
    AgentConfig, DevicesConfig, DisplayDriver, NfcDriver, PrinterDriver, ScannerDriver,
};
use lanepay_drivers::display::CustomerDisplay;
use lanepay_drivers::emulator::display::{DisplayEmulator, DisplayEmulatorSettings};
use lanepay_drivers::emulator::nfc::Pn532Emulator;
use lanepay_drivers::emulator::printer::{PrinterEmulator, PrinterEmulatorSettings};
use lanepay_drivers::emulator::scanner::{ScannerEmulator, ScannerEmulatorSettings};
use lanepay_drivers::nfc::{CardReader, Pn532Reader, TransactionContext};
use lanepay_drivers::printer::{RECEIPT_COLUMNS_80MM, ReceiptJob, ReceiptPrinter};
use lanepay_drivers::scanner::{Scanner, ScannerEvent, SerialScanner};
use lanepay_drivers::text::TextEncoding;
use lanepay_drivers::{DeviceError, DeviceStatus};

/// The code the scanner emulator sends in a test of a training lane (a valid EAN-13).
const EMULATOR_TEST_CODE: &str = "6901234567892";

/// How long each waiting step (scan, tap) waits by default: long enough to walk to the lane
/// with a card, short enough that a forgotten test ends on its own.
const DEFAULT_STEP_TIMEOUT_S: u64 = 30;

/// Longest `--timeout-s` accepted: a test step is a person in front of the lane.
const MAX_STEP_TIMEOUT_S: u64 = 3600;

/// How long one scanner read waits before the step looks at its deadline again.
const SCANNER_READ_SLICE: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub struct DevicesArgs {
    #[command(subcommand)]
    pub command: Option<DevicesCommand>,
    /// The configuration file.
    #[arg(long, conflicts_with = "data", global = true)]
    pub config: Option<PathBuf>,
    /// The data directory (its agent.toml is used).
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    /// Print the list as JSON (one object per device) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum DevicesCommand {
    /// Print a test receipt, write a test line on the display, then wait for a scan and a tap.
    Test {
        /// Seconds each step may take (the scan and the tap wait this long for a person).
        #[arg(long, default_value_t = DEFAULT_STEP_TIMEOUT_S)]
        timeout_s: u64,
    },
}

impl DevicesArgs {
    fn config_path(&self) -> anyhow::Result<PathBuf> {
        match (&self.config, &self.data) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(data)) => Ok(lanepay_agent::config_path(data)),
            (None, None) => anyhow::bail!(
                "give --config FILE or --data DIR (run `lanepay init --data DIR` first)"
            ),
        }
    }
}

pub fn run(args: &DevicesArgs) -> anyhow::Result<ExitCode> {
    let path = args.config_path()?;
    let config = AgentConfig::load(&path)?;
    match &args.command {
        None => {
            list(&config.devices, args.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(DevicesCommand::Test { timeout_s }) => {
            if *timeout_s == 0 || *timeout_s > MAX_STEP_TIMEOUT_S {
                anyhow::bail!("--timeout-s must be 1 to {MAX_STEP_TIMEOUT_S} seconds");
            }
            let terminal = config.terminal.id.clone();
            let failed = test(&config.devices, &terminal, Duration::from_secs(*timeout_s))?;
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn list(config: &DevicesConfig, json: bool) -> anyhow::Result<()> {
    let probes = probe(config);
    let mut out = std::io::stdout().lock();
    if json {
        for probe in &probes {
            writeln!(out, "{}", serde_json::to_string(probe)?)?;
        }
        return Ok(());
    }
    writeln!(out, "{:<8} {:<9} {:<40} STATE", "DEVICE", "DRIVER", "PORT")?;
    for DeviceProbe {
        device,
        driver,
        port,
        state,
        detail,
    } in &probes
    {
        let port = port.as_deref().unwrap_or("-");
        writeln!(out, "{device:<8} {driver:<9} {port:<40} {state}")?;
        if let Some(detail) = detail {
            writeln!(out, "{:<8} {detail}", "")?;
        }
    }
    Ok(())
}

/// The outcome of one step.
enum Outcome {
    Pass(String),
    Fail(String),
    Skip(String),
}

/// Prints a line at once (a person, or a test, waits on it).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn failure(error: &DeviceError) -> Outcome {
    Outcome::Fail(format!("{}: {}", error.kind, error.message))
}

/// Emulators started for devices configured as "emulator"; they live until the test ends.
#[derive(Default)]
struct TestEmulators {
    scanner: Option<ScannerEmulator>,
    _display: Option<DisplayEmulator>,
    _printer: Option<PrinterEmulator>,
    nfc: Option<Pn532Emulator>,
}

fn encoding(config: lanepay_config::TextEncoding) -> TextEncoding {
    match config {
        lanepay_config::TextEncoding::Gb18030 => TextEncoding::Gb18030,
        lanepay_config::TextEncoding::Ascii => TextEncoding::Ascii,
    }
}

/// Runs every step; returns how many failed.
fn test(config: &DevicesConfig, terminal: &str, timeout: Duration) -> anyhow::Result<usize> {
    let mut emulators = TestEmulators::default();
    let outcomes = [
        test_printer(config, terminal, &mut emulators)?,
        test_display(config, &mut emulators)?,
        test_scanner(config, timeout, &mut emulators)?,
        test_nfc(config, timeout, &mut emulators)?,
    ];
    let count = |wanted: fn(&Outcome) -> bool| outcomes.iter().filter(|o| wanted(o)).count();
    let passed = count(|o| matches!(o, Outcome::Pass(_)));
    let failed = count(|o| matches!(o, Outcome::Fail(_)));
    let skipped = count(|o| matches!(o, Outcome::Skip(_)));
    say(&format!(
        "devices test: {passed} passed, {failed} failed, {skipped} skipped"
    ));
    Ok(failed)
}

/// Prints the step's result line and hands the outcome back.
fn finish(device: &str, outcome: Outcome) -> Outcome {
    match &outcome {
        Outcome::Pass(what) => say(&format!("{device}: PASS: {what}")),
        Outcome::Fail(why) => say(&format!("{device}: FAIL: {why}")),
        Outcome::Skip(why) => say(&format!("{device}: SKIP: {why}")),
    }
    outcome
}

fn not_configured(section: &str) -> Outcome {
    Outcome::Skip(format!(
        "not configured (set `driver` and `port` in [devices.{section}] of agent.toml)"
    ))
}

fn test_printer(
    config: &DevicesConfig,
    terminal: &str,
    emulators: &mut TestEmulators,
) -> anyhow::Result<Outcome> {
    let path = match config.printer.driver {
        PrinterDriver::None => return Ok(finish("printer", not_configured("printer"))),
        PrinterDriver::Serial => config.printer.port.clone().unwrap_or_default(),
        PrinterDriver::Emulator => {
            let settings = PrinterEmulatorSettings {
                encoding: encoding(config.printer.encoding),
                condition: Default::default(),
                link: None,
                paper_columns: Some(RECEIPT_COLUMNS_80MM),
            };
            let (path, emulator) = PrinterEmulator::spawn(settings, |_| {})
                .context("starting the printer emulator")?;
            emulators._printer = Some(emulator);
            path
        }
    };
    say(&format!("printer: printing a test receipt on {path}"));
    let mut printer = serial_printer(path, config);
    let job = ReceiptJob {
        title: Some("Lanepay device test".to_string()),
        lines: vec![
            format!("Terminal {terminal}"),
            "Printer OK 打印机正常".to_string(),
            "The QR code below must scan".to_string(),
        ],
        qr_payload: Some(format!("LANEPAY-DEVICE-TEST:{terminal}")),
        cut: true,
        kick_drawer: false,
    };
    let outcome = match printer.print(&job) {
        Ok(()) => match printer.port_mut().status() {
            DeviceStatus::Warning(warning) => Outcome::Pass(format!(
                "test receipt sent with a QR code and a cut ({warning})"
            )),
            _ => Outcome::Pass("test receipt sent with a QR code and a cut".to_string()),
        },
        Err(error) => failure(&error),
    };
    Ok(finish("printer", outcome))
}

fn test_display(config: &DevicesConfig, emulators: &mut TestEmulators) -> anyhow::Result<Outcome> {
    let path = match config.display.driver {
        DisplayDriver::None => return Ok(finish("display", not_configured("display"))),
        DisplayDriver::Serial => config.display.port.clone().unwrap_or_default(),
        DisplayDriver::Emulator => {
            let settings = DisplayEmulatorSettings {
                encoding: encoding(config.display.encoding),
                link: None,
            };
            let (path, emulator) = DisplayEmulator::spawn(settings, |_| {})
                .context("starting the display emulator")?;
            emulators._display = Some(emulator);
            path
        }
    };
    say(&format!("display: writing a test line on {path}"));
    let mut display = serial_display(config, path);
    let outcome = match display.show_lines("Lanepay device test", "Display OK") {
        Ok(()) => Outcome::Pass("\"Lanepay device test\" / \"Display OK\" written".to_string()),
        Err(error) => failure(&error),
    };
    Ok(finish("display", outcome))
}

fn test_scanner(
    config: &DevicesConfig,
    timeout: Duration,
    emulators: &mut TestEmulators,
) -> anyhow::Result<Outcome> {
    let path = match config.scanner.driver {
        ScannerDriver::None => return Ok(finish("scanner", not_configured("scanner"))),
        ScannerDriver::Serial => config.scanner.port.clone().unwrap_or_default(),
        ScannerDriver::Emulator => {
            let settings = ScannerEmulatorSettings {
                format: serial_scanner_settings(config, String::new()).format,
                link: None,
            };
            let (path, emulator) =
                ScannerEmulator::spawn(settings).context("starting the scanner emulator")?;
            emulators.scanner = Some(emulator);
            path
        }
    };
    let mut scanner = match SerialScanner::new(serial_scanner_settings(config, path.clone())) {
        Ok(scanner) => scanner,
        Err(error) => return Ok(finish("scanner", failure(&error))),
    };
    let deadline = Instant::now() + timeout;
    let mut prompted = false;
    let outcome = loop {
        let now = Instant::now();
        if now >= deadline {
            break Outcome::Fail(format!(
                "nothing scanned within {} s: is the scanner set to serial (not keyboard) mode, \
                 with the terminator and speed in agent.toml?",
                timeout.as_secs()
            ));
        }
        match scanner.next_event(SCANNER_READ_SLICE.min(deadline - now)) {
            Ok(Some(ScannerEvent::Status { status })) => match status {
                DeviceStatus::Unavailable { kind, reason } => {
                    break Outcome::Fail(format!("{kind}: {reason}"));
                }
                _ if !prompted => {
                    prompted = true;
                    say(&format!(
                        "scanner: ready on {path}: scan a barcode now (waiting up to {} s)",
                        timeout.as_secs()
                    ));
                    if let Some(emulator) = emulators.scanner.as_mut() {
                        emulator
                            .scan(EMULATOR_TEST_CODE)
                            .context("the scanner emulator did not send its test code")?;
                    }
                }
                _ => {}
            },
            Ok(Some(ScannerEvent::Scanned { code, symbology })) => {
                break Outcome::Pass(format!("read {code} ({symbology:?})"));
            }
            Ok(Some(ScannerEvent::Misread { code, reason })) => say(&format!(
                "scanner: misread {}: {reason}; scan again",
                lanepay_agent::lane::shown_code(&code)
            )),
            Ok(Some(ScannerEvent::Rejected { reason })) => {
                say(&format!("scanner: unreadable line: {reason}; scan again"));
            }
            Ok(None) => {}
            Err(error) => break failure(&error),
        }
    };
    Ok(finish("scanner", outcome))
}

fn test_nfc(
    config: &DevicesConfig,
    timeout: Duration,
    emulators: &mut TestEmulators,
) -> anyhow::Result<Outcome> {
    let connstring = match config.nfc.driver {
        NfcDriver::None => return Ok(finish("nfc", not_configured("nfc"))),
        NfcDriver::Libnfc => nfc_connstring(config),
        NfcDriver::Emulator => {
            let emulator = Pn532Emulator::spawn().context("starting the NFC emulator")?;
            let connstring = emulator.connstring();
            emulators.nfc = Some(emulator);
            connstring
        }
    };
    let mut reader = match Pn532Reader::open(&connstring) {
        Ok(reader) => reader,
        Err(error) => return Ok(finish("nfc", failure(&error))),
    };
    let chip = reader
        .device_information()
        .and_then(|information| information.lines().next())
        .unwrap_or("reader")
        .trim()
        .to_string();
    say(&format!(
        "nfc: ready ({chip}) at {connstring}: tap a contactless card now (waiting up to {} s)",
        timeout.as_secs()
    ));
    if let Some(emulator) = emulators.nfc.as_ref() {
        emulator
            .run_command("tap")
            .map_err(|error| anyhow::anyhow!("the NFC emulator did not tap: {error}"))?;
    }
    let outcome = match reader.wait_for_card(timeout) {
        Err(error) => failure(&error),
        Ok(_) => match reader.read_card(&TransactionContext::default()) {
            // Only the masked number is shown: the clear PAN never leaves the reader's data.
            Ok(card) => Outcome::Pass(format!(
                "read {} {}, expires {}, AID {}",
                card.application_label.as_deref().unwrap_or("card"),
                card.pan.masked(),
                card.expiry,
                card.aid_hex()
            )),
            Err(error) => failure(&error),
        },
    };
    Ok(finish("nfc", outcome))
}
