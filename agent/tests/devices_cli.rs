//! `lanepay devices` and `lanepay devices test` run as the real binary against emulated devices
//! on pseudo-terminals (the emulators run in this test process; the binary opens their ptys
//! like hardware), and the lane's once-a-second device status poll driven by hand: unplug and
//! replug of the display and printer, paper out, each seen as a `DeviceStatus` event.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use lanepay_agent::api::{DeviceStatusView, Event};
use lanepay_agent::clock::ManualClock;
use lanepay_agent::devices::{StatusPolling, start_with_polling};
use lanepay_agent::lane::{Lane, LaneSettings};
use lanepay_agent::service;
use lanepay_agent::store::{self, Durability};
use lanepay_config::{
    AgentConfig, DevicesConfig, DisplayDriver, NfcDriver, PrinterDriver, ScannerDriver,
    TextEncoding as ConfigEncoding,
};
use lanepay_drivers::emulator::display::{DisplayEmulator, DisplayEmulatorSettings};
use lanepay_drivers::emulator::nfc::Pn532Emulator;
use lanepay_drivers::emulator::printer::{PrinterEmulator, PrinterEmulatorSettings};
use lanepay_drivers::emulator::scanner::{ScannerEmulator, ScannerEmulatorSettings};
use lanepay_drivers::printer::PrinterCondition;
use lanepay_drivers::text::TextEncoding;

/// Safety net on every wait for an event; reached only when something is broken.
const DEADLINE: Duration = Duration::from_secs(20);

/// The default test card's number: must never be printed in clear.
const TEST_CARD_PAN: &str = "4761739001010010";

fn write_config(dir: &Path, devices: DevicesConfig) -> PathBuf {
    let mut config =
        AgentConfig::new_default("T0042", "S001", "M1001", dir, "test-token-0123456789").unwrap();
    config.devices = devices;
    let path = dir.join("agent.toml");
    std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
    path
}

fn lanepay() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lanepay"));
    command.env_remove("LANEPAY_LOG");
    command
}

fn serial(port: &str) -> (Option<String>, u32) {
    (Some(port.to_string()), 9600)
}

fn ascii_printer(paper_out: bool) -> (String, PrinterEmulator) {
    PrinterEmulator::spawn(
        PrinterEmulatorSettings {
            encoding: TextEncoding::Gb18030,
            condition: PrinterCondition {
                paper_out,
                ..Default::default()
            },
            ..Default::default()
        },
        |_| {},
    )
    .unwrap()
}

#[test]
fn devices_lists_each_device_driver_port_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let (scanner_path, _scanner) =
        ScannerEmulator::spawn(ScannerEmulatorSettings::default()).unwrap();
    let (printer_path, _printer) = ascii_printer(true);
    let absent_display = dir.path().join("absent-display").display().to_string();
    let mut devices = DevicesConfig::default();
    devices.scanner.driver = ScannerDriver::Serial;
    (devices.scanner.port, devices.scanner.baud) = serial(&scanner_path);
    devices.display.driver = DisplayDriver::Serial;
    (devices.display.port, devices.display.baud) = serial(&absent_display);
    devices.printer.driver = PrinterDriver::Serial;
    (devices.printer.port, devices.printer.baud) = serial(&printer_path);
    let config = write_config(dir.path(), devices);

    let output = lanepay()
        .args(["devices", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("DEVICE   DRIVER    PORT"), "{stdout}");
    let row = |device: &str| {
        let at = lines
            .iter()
            .position(|line| line.starts_with(&format!("{device:<8} ")))
            .unwrap_or_else(|| panic!("no {device} row in\n{stdout}"));
        (lines[at], lines.get(at + 1).copied().unwrap_or(""))
    };
    let (scanner, _) = row("scanner");
    assert!(scanner.contains(&scanner_path), "{scanner}");
    assert!(scanner.ends_with(" ready"), "{scanner}");
    let (display, why) = row("display");
    assert!(
        display.contains("serial") && display.ends_with(" unavailable"),
        "{display}"
    );
    assert!(
        why.contains("absent-display does not exist; is the device plugged in"),
        "{why}"
    );
    let (printer, why) = row("printer");
    assert!(printer.ends_with(" unavailable"), "{printer}");
    assert!(why.contains("out of paper: load a new roll"), "{why}");
    let (nfc, why) = row("nfc");
    assert!(
        nfc.starts_with("nfc      none") && nfc.ends_with(" not_configured"),
        "{nfc}"
    );
    assert!(why.contains("[devices.nfc]"), "{why}");

    // The same as JSON lines for scripts.
    let output = lanepay()
        .args(["devices", "--json", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let probes: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let states: Vec<(&str, &str)> = probes
        .iter()
        .map(|probe| {
            (
                probe["device"].as_str().unwrap(),
                probe["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("scanner", "ready"),
            ("display", "unavailable"),
            ("printer", "unavailable"),
            ("nfc", "not_configured")
        ]
    );
}

/// Reads a child's stdout line by line on a thread, so the test can answer prompts.
fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    received
}

/// Waits for a line starting with `prefix`, keeping every line seen in `seen`.
fn wait_for_line(lines: &mpsc::Receiver<String>, prefix: &str, seen: &mut Vec<String>) -> String {
    loop {
        let line = lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no line starting {prefix:?}; saw {seen:#?}"));
        seen.push(line.clone());
        if line.starts_with(prefix) {
            return line;
        }
    }
}

#[test]
fn devices_test_prints_writes_and_reads_a_scan_and_a_tap() {
    let dir = tempfile::tempdir().unwrap();
    let (printer_path, printer) = ascii_printer(false);
    let (display_path, display) = DisplayEmulator::spawn(
        DisplayEmulatorSettings {
            encoding: TextEncoding::Gb18030,
            link: None,
        },
        |_| {},
    )
    .unwrap();
    let (scanner_path, mut scanner) =
        ScannerEmulator::spawn(ScannerEmulatorSettings::default()).unwrap();
    let nfc = Pn532Emulator::spawn().unwrap();
    let mut devices = DevicesConfig::default();
    devices.scanner.driver = ScannerDriver::Serial;
    (devices.scanner.port, devices.scanner.baud) = serial(&scanner_path);
    devices.display.driver = DisplayDriver::Serial;
    (devices.display.port, devices.display.baud) = serial(&display_path);
    devices.display.encoding = ConfigEncoding::Gb18030;
    devices.printer.driver = PrinterDriver::Serial;
    (devices.printer.port, devices.printer.baud) = serial(&printer_path);
    devices.nfc.driver = NfcDriver::Libnfc;
    devices.nfc.port = Some(nfc.connstring());
    let config = write_config(dir.path(), devices);

    let mut child = lanepay()
        .args(["devices", "test", "--timeout-s", "20", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();

    let printed = wait_for_line(&lines, "printer: ", &mut seen);
    assert!(printed.contains(&printer_path), "{printed}");
    let line = wait_for_line(&lines, "printer: PASS", &mut seen);
    assert!(line.contains("QR code and a cut"), "{line}");
    let receipt = printer.wait_for_receipt(1, DEADLINE).unwrap();
    assert_eq!(
        receipt.lines[..4],
        [
            "Lanepay device test",
            "Terminal T0042",
            "Printer OK 打印机正常",
            "The QR code below must scan"
        ]
    );
    assert_eq!(receipt.qr_payloads, ["LANEPAY-DEVICE-TEST:T0042"]);
    assert!(receipt.cut);

    wait_for_line(&lines, "display: PASS", &mut seen);
    display
        .wait_for_lines("Lanepay device test", "Display OK", DEADLINE)
        .unwrap();

    wait_for_line(&lines, "scanner: ready", &mut seen);
    scanner.scan("6901234567892").unwrap();
    let line = wait_for_line(&lines, "scanner: ", &mut seen);
    assert_eq!(line, "scanner: PASS: read 6901234567892 (Ean13)");

    let ready = wait_for_line(&lines, "nfc: ready", &mut seen);
    assert!(ready.contains("PN532"), "{ready}");
    nfc.run_command("tap").unwrap();
    let line = wait_for_line(&lines, "nfc: ", &mut seen);
    assert_eq!(
        line,
        "nfc: PASS: read VISA 476173******0010, expires 12/29, AID A0000000031010"
    );
    let summary = wait_for_line(&lines, "devices test:", &mut seen);
    assert_eq!(summary, "devices test: 4 passed, 0 failed, 0 skipped");

    let status = child.wait().unwrap();
    let mut errors = String::new();
    stderr.read_to_string(&mut errors).unwrap();
    assert!(status.success(), "{seen:#?}\n{errors}");
    let everything = format!("{}\n{errors}", seen.join("\n"));
    assert!(
        !everything.contains(TEST_CARD_PAN),
        "clear PAN shown:\n{everything}"
    );
}

#[test]
fn devices_test_with_the_printer_missing_fails_that_step_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("printer-not-here").display().to_string();
    let mut devices = DevicesConfig::default();
    devices.printer.driver = PrinterDriver::Serial;
    (devices.printer.port, devices.printer.baud) = serial(&absent);
    let config = write_config(dir.path(), devices);

    let output = lanepay()
        .args(["devices", "test", "--timeout-s", "1", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.contains(&format!(
            "printer: FAIL: disconnected: {absent} does not exist; is the device plugged in and the port right?"
        ).as_str()),
        "{stdout}"
    );
    assert!(lines.contains(&"display: SKIP: not configured (set `driver` and `port` in [devices.display] of agent.toml)"), "{stdout}");
    assert_eq!(
        lines.last(),
        Some(&"devices test: 0 passed, 1 failed, 3 skipped")
    );
}

/// The DeviceStatus events published so far (the poll reports before `poll_now` returns).
fn statuses_seen(events: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<DeviceStatusView> {
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::DeviceStatus(status) = event {
            seen.push(status);
        }
    }
    seen
}

/// A lane of its own in `dir` on a manual clock, running on its thread.
fn start_lane(dir: &Path, terminal_id: &str) -> service::LaneHandle {
    let config =
        AgentConfig::new_default(terminal_id, "S001", "M1001", dir, "test-token-0123456789")
            .unwrap();
    let conn = store::open(&store::db_path(dir), Durability::Full).unwrap();
    let lane = Lane::open(
        conn,
        ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        LaneSettings::from_config(&config),
    )
    .unwrap();
    service::start(lane, Arc::new(ManualClock::new(1_795_000_000_000))).unwrap()
}

fn state_of<'a>(seen: &'a [DeviceStatusView], device: &str) -> Option<&'a DeviceStatusView> {
    seen.iter().rev().find(|status| status.device == device)
}

#[test]
fn status_polls_report_unplug_replug_and_paper_out_without_a_sale() {
    let dir = tempfile::tempdir().unwrap();
    let display_link = dir.path().join("display");
    let printer_link = dir.path().join("printer");
    let display_settings = DisplayEmulatorSettings {
        encoding: TextEncoding::Gb18030,
        link: Some(display_link.clone()),
    };
    let printer_settings = PrinterEmulatorSettings {
        link: Some(printer_link.clone()),
        ..Default::default()
    };
    let (_, display) = DisplayEmulator::spawn(display_settings.clone(), |_| {}).unwrap();
    let (_, printer) = PrinterEmulator::spawn(printer_settings.clone(), |_| {}).unwrap();

    let handle = start_lane(dir.path(), "T0042");
    let mut events = handle.subscribe();
    let mut devices_config = DevicesConfig::default();
    devices_config.display.driver = DisplayDriver::Serial;
    devices_config.display.port = Some(display_link.display().to_string());
    devices_config.printer.driver = PrinterDriver::Serial;
    devices_config.printer.port = Some(printer_link.display().to_string());
    let devices = start_with_polling(
        &devices_config,
        &handle,
        "Test store",
        StatusPolling::Manual,
    );
    let seen = statuses_seen(&mut events);
    assert_eq!(state_of(&seen, "display").unwrap().state, "ready");
    assert_eq!(state_of(&seen, "printer").unwrap().state, "ready");

    // Paper runs out: the poll's DLE EOT sees it, no sale needed.
    printer.set_condition(PrinterCondition {
        paper_out: true,
        ..Default::default()
    });
    assert!(devices.poll_now());
    let seen = statuses_seen(&mut events);
    let paper = state_of(&seen, "printer").unwrap();
    assert_eq!(paper.state, "unavailable");
    assert!(
        paper.detail.as_deref().unwrap().contains("out of paper"),
        "{paper:?}"
    );
    assert_eq!(
        state_of(&seen, "display"),
        None,
        "unchanged devices say nothing"
    );
    printer.set_condition(PrinterCondition::default());
    assert!(devices.poll_now());
    assert_eq!(
        state_of(&statuses_seen(&mut events), "printer")
            .unwrap()
            .state,
        "ready"
    );

    // Unplug both.
    drop(display);
    drop(printer);
    assert!(devices.poll_now());
    let seen = statuses_seen(&mut events);
    for device in ["display", "printer"] {
        let status = state_of(&seen, device).unwrap();
        assert_eq!(status.state, "unavailable", "{status:?}");
        assert!(
            status
                .detail
                .as_deref()
                .unwrap()
                .starts_with("disconnected"),
            "{status:?}"
        );
    }
    // Still gone at the next poll: no repeated event.
    assert!(devices.poll_now());
    assert_eq!(statuses_seen(&mut events), []);

    // Replug both: ready again, and the display gets its screen back.
    let (_, display) = DisplayEmulator::spawn(display_settings, |_| {}).unwrap();
    let (_, printer) = PrinterEmulator::spawn(printer_settings, |_| {}).unwrap();
    assert!(devices.poll_now());
    let seen = statuses_seen(&mut events);
    assert_eq!(
        state_of(&seen, "display").unwrap().state,
        "ready",
        "{seen:?}"
    );
    assert_eq!(
        state_of(&seen, "printer").unwrap().state,
        "ready",
        "{seen:?}"
    );
    // The screen it showed when unplugged (the welcome) is drawn again.
    display.wait_for_lines("欢迎光临", "", DEADLINE).unwrap();
    assert!(printer.state().status_queries >= 3);
}

#[test]
fn the_lane_reports_its_card_reader_and_hands_the_emulated_one_to_payments() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start_lane(dir.path(), "T0043");
    let mut events = handle.subscribe();

    // Emulated: the lane makes a software PN532, libnfc opens it, and its path is the one
    // the payments runtime gets.
    let mut emulated = DevicesConfig::default();
    emulated.nfc.driver = NfcDriver::Emulator;
    let devices = start_with_polling(&emulated, &handle, "Test store", StatusPolling::Manual);
    let seen = statuses_seen(&mut events);
    assert_eq!(state_of(&seen, "nfc").unwrap().state, "ready", "{seen:?}");
    let emulator = devices.emulators.nfc.as_ref().unwrap();
    assert_eq!(devices.nfc_connstring(), Some(emulator.connstring()));
    assert!(
        devices
            .nfc_connstring()
            .unwrap()
            .starts_with("pn532_uart:/dev/pts/"),
        "{:?}",
        devices.nfc_connstring()
    );
    drop(devices);

    // A configured reader that is not there: reported with the reason, kept for the next tap.
    let mut missing = DevicesConfig::default();
    missing.nfc.driver = NfcDriver::Libnfc;
    missing.nfc.port = Some(dir.path().join("no-reader").display().to_string());
    let devices = start_with_polling(&missing, &handle, "Test store", StatusPolling::Manual);
    let seen = statuses_seen(&mut events);
    let status = state_of(&seen, "nfc").unwrap();
    assert_eq!(status.state, "unavailable", "{status:?}");
    assert!(devices.emulators.nfc.is_none());
    assert_eq!(
        devices.nfc_connstring().unwrap(),
        format!(
            "pn532_uart:{}:115200",
            dir.path().join("no-reader").display()
        )
    );
}
