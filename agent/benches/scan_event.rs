//! Scan-to-event benchmark (issue 5): from the bytes of a scan written on the scanner's
//! pseudo-terminal to the `CartChanged` event on the lane runtime's stream.
//! `cargo bench -p lanepay-agent --bench scan_event`; see `docs/benchmarks.md`.
//!
//! (a) the baseline: the scanner emulator writes the frame on the pty master, the real serial
//!     driver (`SerialScanner` on its own thread, as the lane runs it) reads and decodes it and
//!     hands the `Scanned` event to a channel. The kernel's pty and the driver, nothing else.
//! (b) the lane: the same emulator and driver started by `devices::start_with_polling`, whose
//!     scanner thread sends `Command::Scan` to the lane thread; the lane looks the product up
//!     in the catalog (SQLite), changes the cart (in memory: a sale is written to the database
//!     and the journal when it is paid or voided) and publishes `CartChanged`, which a subscriber of
//!     the runtime's event stream (what the local API and the cashier screen read) receives.
//!     The clock stops when that subscriber has the event.
//!
//! (a) and (b) run interleaved in rounds so both see the same load; the ratio (b)/(a) says
//! what the lane adds to the device path. Every 50 scans the sale is voided (untimed) so carts
//! stay the size of real ones. `BENCH_SCALE` multiplies the scan count. This is a benchmark,
//! not a test: a missed target is reported, never asserted.

use std::path::Path;
use std::process::Command as Process;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lanepay_agent::api::{Command, Event};
use lanepay_agent::clock::SystemClock;
use lanepay_agent::devices::{self, StatusPolling};
use lanepay_agent::service;
use lanepay_config::{AgentConfig, DisplayDriver, NfcDriver, PrinterDriver, ScannerDriver};
use lanepay_drivers::emulator::scanner::{ScannerEmulator, ScannerEmulatorSettings};
use lanepay_drivers::scanner::{ScannerEvent, SerialScanner, spawn_scanner};
use rust_decimal::Decimal;
use support::{Scale, load_average, percentile};
use tokio::sync::broadcast;

mod support;

const LANEPAY: &str = env!("CARGO_BIN_EXE_lanepay");
const SCRATCH_ROOT: &str = env!("CARGO_TARGET_TMPDIR");

/// Timed scans of each kind.
const SCANS: u64 = 2_000;
/// Scans of each kind per round; rounds alternate (a) and (b).
const SCANS_PER_ROUND: u64 = 100;
/// Untimed scans of each kind first.
const WARM_UP_SCANS: u64 = 50;
/// The lane's sale is voided after this many scans (untimed).
const SCANS_PER_SALE: u64 = 50;
/// Demo-catalog products scanned in turn (cola, water, bread, gum).
const CODES: [&str; 4] = [
    "6901234567892",
    "6920000000012",
    "6930000000011",
    "96385074",
];
/// Longest wait for one event before the bench gives up (a lost scan, not a slow one).
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Issue 5: p99 of (b) at most 10 ms.
const SCAN_EVENT_P99_TARGET: Duration = Duration::from_millis(10);

fn main() -> anyhow::Result<()> {
    let scans = Scale::from_env()?.apply(SCANS);
    let scratch = tempfile::Builder::new()
        .prefix("lanepay-scan-bench-")
        .tempdir_in(SCRATCH_ROOT)
        .with_context(|| format!("cannot make a scratch directory in {SCRATCH_ROOT}"))?;
    println!("Scan-to-event benchmark");
    println!("  scratch: {}", scratch.path().display());
    println!("  scans:   {scans} of each kind, interleaved in rounds of {SCANS_PER_ROUND}");
    println!("  load average at start: {}", load_average());

    let runtime = tokio::runtime::Runtime::new()?;
    let _entered = runtime.enter();
    let config = init_lane(&scratch.path().join("lane"))?;
    let mut driver_only = DriverOnly::start(&config)?;
    let mut lane = LanePath::start(config)?;
    for index in 0..WARM_UP_SCANS {
        driver_only.scan(code(index))?;
        lane.scan(index)?;
    }
    let (mut baseline, mut measured) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < scans {
        let round = SCANS_PER_ROUND.min(scans - done);
        for index in done..done + round {
            baseline.push(driver_only.scan(code(index))?);
        }
        for index in done..done + round {
            measured.push(lane.scan(WARM_UP_SCANS + index)?);
        }
        done += round;
    }
    println!("  load average at end: {}", load_average());
    print_table(&baseline, &measured);
    Ok(())
}

fn code(index: u64) -> &'static str {
    CODES[(index % CODES.len() as u64) as usize]
}

/// (a): emulator → pty → `SerialScanner` thread → channel.
struct DriverOnly {
    emulator: ScannerEmulator,
    events: mpsc::Receiver<ScannerEvent>,
    _thread: lanepay_drivers::scanner::ScannerThread,
}

impl DriverOnly {
    fn start(config: &AgentConfig) -> anyhow::Result<DriverOnly> {
        let format = devices::scanner_format(&config.devices.scanner);
        let (path, emulator) =
            ScannerEmulator::spawn(ScannerEmulatorSettings { format, link: None })?;
        let scanner = SerialScanner::new(devices::serial_scanner_settings(&config.devices, path))?;
        let (sender, events) = mpsc::channel();
        let thread = spawn_scanner(scanner, move |event| {
            let _ = sender.send(event);
        })?;
        Ok(DriverOnly {
            emulator,
            events,
            _thread: thread,
        })
    }

    fn scan(&mut self, code: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.emulator.scan(code)?;
        loop {
            match self.events.recv_timeout(EVENT_TIMEOUT)? {
                ScannerEvent::Scanned { code: read, .. } if read == code => {
                    return Ok(started.elapsed());
                }
                ScannerEvent::Status { .. } => {}
                other => bail!("the driver answered {code} with {other:?}"),
            }
        }
    }
}

/// (b): emulator → pty → driver → lane thread (catalog lookup, cart) → event stream.
struct LanePath {
    handle: service::LaneHandle,
    devices: devices::Devices,
    events: broadcast::Receiver<Event>,
}

impl LanePath {
    fn start(config: AgentConfig) -> anyhow::Result<LanePath> {
        let (lane, _key) = lanepay_agent::open_lane(&config)?;
        let handle = service::start(lane, Arc::new(SystemClock))?;
        let events = handle.subscribe();
        let devices = devices::start_with_polling(
            &config.devices,
            &handle,
            "bench store",
            StatusPolling::Manual,
        );
        if devices.emulators.scanner.is_none() {
            bail!(
                "the scanner emulator did not start: {:?}",
                devices.statuses()
            );
        }
        Ok(LanePath {
            handle,
            devices,
            events,
        })
    }

    fn scan(&mut self, index: u64) -> anyhow::Result<Duration> {
        if index > 0 && index.is_multiple_of(SCANS_PER_SALE) {
            self.handle
                .execute_blocking(Command::VoidSale)
                .map_err(|error| anyhow::anyhow!("void: {}", error.message))?;
        }
        // Events of the void (and device statuses) are not this scan's.
        while self.events.try_recv().is_ok() {}
        let scanner = self
            .devices
            .emulators
            .scanner
            .as_mut()
            .context("no scanner emulator")?;
        let started = Instant::now();
        scanner.scan(code(index))?;
        let deadline = started + EVENT_TIMEOUT;
        loop {
            match self.events.blocking_recv() {
                Ok(Event::CartChanged(_)) => return Ok(started.elapsed()),
                Ok(Event::ScanRejected { code, reason }) => bail!("{code} refused: {reason}"),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => bail!("the lane stopped"),
            }
            if Instant::now() > deadline {
                bail!("no CartChanged within {EVENT_TIMEOUT:?}");
            }
        }
    }
}

/// `lanepay init --demo-catalog` into `dir`; its configuration with only the scanner, emulated.
fn init_lane(dir: &Path) -> anyhow::Result<AgentConfig> {
    let output = Process::new(LANEPAY)
        .args([
            "init",
            "--demo-catalog",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(dir)
        .output()
        .context("cannot run lanepay init")?;
    if !output.status.success() {
        bail!(
            "lanepay init failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut config = AgentConfig::load(&lanepay_agent::config_path(dir))?;
    config.devices.scanner.driver = ScannerDriver::Emulator;
    config.devices.display.driver = DisplayDriver::None;
    config.devices.printer.driver = PrinterDriver::None;
    config.devices.nfc.driver = NfcDriver::None;
    Ok(config)
}

fn ms(duration: Duration) -> String {
    let micros = duration.as_micros();
    format!("{}.{:03} ms", micros / 1000, micros % 1000)
}

fn print_table(baseline: &[Duration], measured: &[Duration]) {
    let (a50, a99) = (percentile(baseline, 500), percentile(baseline, 990));
    let (b50, b99) = (percentile(measured, 500), percentile(measured, 990));
    let max = measured.iter().max().copied().unwrap_or_default();
    let ratio = |b: Duration, a: Duration| {
        if a.as_micros() == 0 {
            "—".to_string()
        } else {
            let ratio = Decimal::from(b.as_micros() as u64) / Decimal::from(a.as_micros() as u64);
            ratio.round_dp(2).to_string()
        }
    };
    let met = if b99 <= SCAN_EVENT_P99_TARGET {
        "met"
    } else {
        "NOT MET"
    };
    println!("\n| figure | value | target | met |");
    println!("|---|---|---|---|");
    println!(
        "| (a) pty → driver event: scans | {} | — |  |",
        baseline.len()
    );
    println!("| (a) pty → driver event: p50 | {} | — |  |", ms(a50));
    println!("| (a) pty → driver event: p99 | {} | — |  |", ms(a99));
    println!(
        "| (b) pty → lane CartChanged: scans | {} | — |  |",
        measured.len()
    );
    println!("| (b) pty → lane CartChanged: p50 | {} | — |  |", ms(b50));
    println!(
        "| (b) pty → lane CartChanged: p99 | {} | ≤ {} | {met} |",
        ms(b99),
        ms(SCAN_EVENT_P99_TARGET)
    );
    println!("| (b) pty → lane CartChanged: max | {} | — |  |", ms(max));
    println!("| ratio (b)/(a) at p50 | {} | — |  |", ratio(b50, a50));
    println!("| ratio (b)/(a) at p99 | {} | — |  |", ratio(b99, a99));
}
