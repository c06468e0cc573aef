//! Measures the driver's half of the scan-to-cart latency: from the moment the emulated
//! scanner writes a frame on its pseudo-terminal to the moment `SerialScanner::next_event`
//! returns the `Scanned` event. Prints p50/p99/max in microseconds.
//!
//! `cargo run --release -p lanepay-drivers --example scan_latency [-- SCANS]`

use std::time::{Duration, Instant};

use lanepay_drivers::emulator::scanner::{ScannerEmulator, ScannerEmulatorSettings};
use lanepay_drivers::scanner::{
    Scanner, ScannerEvent, ScannerFormat, SerialScanner, SerialScannerSettings,
};
use lanepay_drivers::serial::SerialSettings;

/// Scans measured when no count is given.
const DEFAULT_SCANS: usize = 1000;
/// How long one scan may take before the run is declared broken.
const SCAN_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scans: usize = match std::env::args().nth(1) {
        Some(count) => count.parse()?,
        None => DEFAULT_SCANS,
    };
    let format = ScannerFormat {
        aim_ids: true,
        ..ScannerFormat::default()
    };
    let (path, mut emulator) = ScannerEmulator::spawn(ScannerEmulatorSettings {
        format: format.clone(),
        link: None,
    })?;
    let mut scanner = SerialScanner::new(SerialScannerSettings {
        serial: SerialSettings::new(path, 115_200),
        format,
    })?;
    let mut latencies = Vec::with_capacity(scans);
    for _ in 0..scans {
        let started = Instant::now();
        emulator.scan("4006381333931")?;
        loop {
            match scanner.next_event(SCAN_TIMEOUT)? {
                Some(ScannerEvent::Scanned { .. }) => break,
                Some(_) => {}
                None => return Err("no scan event within the timeout".into()),
            }
        }
        latencies.push(started.elapsed());
    }
    latencies.sort_unstable();
    let percentile =
        |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)].as_micros();
    println!(
        "{scans} scans, pty write to Scanned event: p50 {} µs, p99 {} µs, max {} µs",
        percentile(50),
        percentile(99),
        latencies.last().map_or(0, Duration::as_micros)
    );
    Ok(())
}
