//! The lane's checkout hardware at work: scanner codes go to the cart, the pole display
//! mirrors the cart, a completed sale prints its receipt (and opens the drawer for cash).
//! Devices the configuration names "emulator" are software devices on pseudo-terminals, driven
//! through the same serial drivers. A missing or failing device is reported, never fatal, and
//! the display and printer are asked how they are about once a second, so an unplug, a replug
//! or a printer out of paper shows in the status bar without waiting for a sale.
//! [`probe`] answers `lanepay devices` without starting a lane.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanepay_config::{
    DevicesConfig, DisplayDriver, NfcDriver, PrinterDriver, ScannerDriver, ScannerTerminator,
};
use lanepay_drivers::display::{
    CustomerDisplay, DisplayLabels, SerialDisplay, SerialDisplaySettings,
};
use lanepay_drivers::emulator::display::{DisplayEmulator, DisplayEmulatorSettings};
use lanepay_drivers::emulator::nfc::Pn532Emulator;
use lanepay_drivers::emulator::printer::{PrinterEmulator, PrinterEmulatorSettings};
use lanepay_drivers::emulator::scanner::{ScannerEmulator, ScannerEmulatorSettings};
use lanepay_drivers::nfc::{CardReader as _, Pn532Reader};
use lanepay_drivers::printer::{ReceiptJob, ReceiptPrinter, SerialPrinter, SerialPrinterSettings};
use lanepay_drivers::scanner::{
    ScannerEvent, ScannerFormat, ScannerThread, SerialScanner, SerialScannerSettings, Terminator,
    spawn_scanner,
};
use lanepay_drivers::serial::{SerialSettings, open_port};
use lanepay_drivers::text::TextEncoding;
use lanepay_drivers::{DeviceError, DeviceStatus};
use tokio::sync::broadcast::error::RecvError;

use crate::api::{Command, DeviceStatusView, Event, Reply};
use crate::service::LaneHandle;

/// Emulated devices kept alive with the lane (the demo and training lanes drive them).
#[derive(Default)]
pub struct Emulators {
    pub scanner: Option<ScannerEmulator>,
    pub display: Option<DisplayEmulator>,
    pub printer: Option<PrinterEmulator>,
    /// The software PN532 (cards are tapped on it with `tap`).
    pub nfc: Option<Pn532Emulator>,
}

impl std::fmt::Debug for Emulators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulators")
            .field("scanner", &self.scanner.is_some())
            .field("display", &self.display.is_some())
            .field("printer", &self.printer.is_some())
            .field("nfc", &self.nfc.is_some())
            .finish()
    }
}

/// How often the display and printer are asked how they are (the printer with `DLE EOT`):
/// an unplug, a replug or paper running out shows within about a second, and three status
/// bytes a second cost a printer nothing.
pub const STATUS_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Longest wait for the device thread to finish a poll asked for with [`Devices::poll_now`]:
/// a status request takes milliseconds; only a wedged device thread reaches this.
pub const POLL_NOW_TIMEOUT: Duration = Duration::from_secs(10);

/// When the display and printer are polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPolling {
    /// On a timer (the lane uses [`STATUS_POLL_INTERVAL`]).
    Every(Duration),
    /// Only when [`Devices::poll_now`] asks (tests drive the polls).
    Manual,
}

/// What the device thread is asked to do.
enum DeviceWork {
    /// A lane event to follow (cart on the display, receipt on the printer).
    Lane(Box<Event>),
    /// Ask the display and printer for their status now; the sender hears when it is done.
    Poll(Option<mpsc::SyncSender<()>>),
    Stop,
}

/// The running devices; dropping it stops their threads.
pub struct Devices {
    // Fields drop in order: the scanner thread stops before its emulator's pty goes away.
    _scanner: Option<ScannerThread>,
    worker: Option<DeviceWorker>,
    pub emulators: Emulators,
    statuses: Arc<Mutex<BTreeMap<&'static str, DeviceStatusView>>>,
    nfc_connstring: Option<String>,
}

/// The thread that drives the display and printer.
struct DeviceWorker {
    work: mpsc::Sender<DeviceWork>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DeviceWorker {
    fn drop(&mut self) {
        let _ = self.work.send(DeviceWork::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("device thread panicked");
        }
    }
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices")
            .field("emulators", &self.emulators)
            .finish()
    }
}

impl Devices {
    /// Each device's state as the status bar shows it.
    pub fn statuses(&self) -> Vec<DeviceStatusView> {
        self.statuses
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The libnfc connection string of the card reader for the payments runtime: the configured
    /// reader's, or the emulated PN532's (which exists only once the devices started).
    pub fn nfc_connstring(&self) -> Option<String> {
        self.nfc_connstring.clone()
    }

    /// Polls the display and printer now and returns once their status is reported (changes
    /// go out as `DeviceStatus` events first). False when there is no display or printer, or
    /// the device thread did not answer within [`POLL_NOW_TIMEOUT`].
    pub fn poll_now(&self) -> bool {
        let Some(worker) = self.worker.as_ref() else {
            return false;
        };
        let (done, polled) = mpsc::sync_channel(1);
        if worker.work.send(DeviceWork::Poll(Some(done))).is_err() {
            return false;
        }
        polled.recv_timeout(POLL_NOW_TIMEOUT).is_ok()
    }
}

fn status_view(device: &'static str, status: &DeviceStatus) -> DeviceStatusView {
    let (state, detail) = match status {
        DeviceStatus::NotConfigured => ("not_configured", None),
        DeviceStatus::Ready => ("ready", None),
        DeviceStatus::Warning(text) => ("warning", Some(text.clone())),
        DeviceStatus::Unavailable { kind, reason } => {
            ("unavailable", Some(format!("{kind}: {reason}")))
        }
    };
    DeviceStatusView {
        device: device.to_string(),
        state: state.to_string(),
        detail,
    }
}

/// Records and announces a device's state.
fn report(
    lane: &LaneHandle,
    statuses: &Mutex<BTreeMap<&'static str, DeviceStatusView>>,
    device: &'static str,
    status: &DeviceStatus,
) {
    let view = status_view(device, status);
    if let Ok(mut all) = statuses.lock() {
        if all.get(device) == Some(&view) {
            return;
        }
        all.insert(device, view.clone());
    }
    match status {
        DeviceStatus::Unavailable { .. } | DeviceStatus::Warning(_) => {
            tracing::warn!(device, state = %view.state, detail = ?view.detail, "device")
        }
        _ => tracing::info!(device, state = %view.state, "device"),
    }
    lane.publish(Event::DeviceStatus(view));
}

fn encoding(config: lanepay_config::TextEncoding) -> TextEncoding {
    match config {
        lanepay_config::TextEncoding::Gb18030 => TextEncoding::Gb18030,
        lanepay_config::TextEncoding::Ascii => TextEncoding::Ascii,
    }
}

/// The line format the configured scanner sends (its emulator is made to send the same).
pub fn scanner_format(config: &lanepay_config::ScannerConfig) -> ScannerFormat {
    ScannerFormat {
        terminator: match config.terminator {
            ScannerTerminator::Cr => Terminator::Cr,
            ScannerTerminator::Lf => Terminator::Lf,
            ScannerTerminator::Crlf => Terminator::CrLf,
            ScannerTerminator::Tab => Terminator::Tab,
        },
        prefix: config.prefix.clone(),
        aim_ids: config.aim_ids,
    }
}

/// Starts the configured devices and wires them to the lane; the display and printer are
/// polled every [`STATUS_POLL_INTERVAL`].
pub fn start(config: &DevicesConfig, lane: &LaneHandle, store_name: &str) -> Devices {
    start_with_polling(
        config,
        lane,
        store_name,
        StatusPolling::Every(STATUS_POLL_INTERVAL),
    )
}

/// [`start`] with the status polls under the caller's control.
pub fn start_with_polling(
    config: &DevicesConfig,
    lane: &LaneHandle,
    store_name: &str,
    polling: StatusPolling,
) -> Devices {
    let statuses = Arc::new(Mutex::new(BTreeMap::new()));
    let mut emulators = Emulators::default();
    let scanner = start_scanner(config, lane, &statuses, &mut emulators);
    let (display, display_status) = open_display(config, &mut emulators);
    let (printer, printer_status) = open_printer(config, &mut emulators);
    report(lane, &statuses, "display", &display_status);
    report(lane, &statuses, "printer", &printer_status);
    let nfc_connstring = start_nfc(config, lane, &statuses, &mut emulators);
    let worker = if display.is_some() || printer.is_some() {
        spawn_device_worker(
            lane.clone(),
            Arc::clone(&statuses),
            DeviceSet {
                display,
                printer,
                store_name: store_name.to_string(),
            },
            polling,
        )
    } else {
        None
    };
    Devices {
        _scanner: scanner,
        worker,
        emulators,
        statuses,
        nfc_connstring,
    }
}

/// Starts the emulated PN532 when configured, looks at the reader once and reports it; returns
/// its connection string. The payments runtime opens the reader for each tap and reports what
/// goes wrong then, so the reader is not polled (a poll would take it from a card read).
fn start_nfc(
    config: &DevicesConfig,
    lane: &LaneHandle,
    statuses: &Mutex<BTreeMap<&'static str, DeviceStatusView>>,
    emulators: &mut Emulators,
) -> Option<String> {
    let connstring = match config.nfc.driver {
        NfcDriver::None => {
            report(lane, statuses, "nfc", &DeviceStatus::NotConfigured);
            return None;
        }
        NfcDriver::Libnfc => nfc_connstring(config),
        NfcDriver::Emulator => match Pn532Emulator::spawn() {
            Ok(emulator) => {
                let connstring = emulator.connstring();
                emulators.nfc = Some(emulator);
                connstring
            }
            Err(error) => {
                report(lane, statuses, "nfc", &unavailable(&error));
                return None;
            }
        },
    };
    let status = match Pn532Reader::open(&connstring) {
        Ok(mut reader) => reader.status(),
        Err(error) => unavailable(&error),
    };
    report(lane, statuses, "nfc", &status);
    // Kept even when the reader is not there now: the next tap tries again.
    Some(connstring)
}

fn start_scanner(
    config: &DevicesConfig,
    lane: &LaneHandle,
    statuses: &Arc<Mutex<BTreeMap<&'static str, DeviceStatusView>>>,
    emulators: &mut Emulators,
) -> Option<ScannerThread> {
    let format = scanner_format(&config.scanner);
    let path = match config.scanner.driver {
        ScannerDriver::None => {
            report(lane, statuses, "scanner", &DeviceStatus::NotConfigured);
            return None;
        }
        ScannerDriver::Serial => config.scanner.port.clone().unwrap_or_default(),
        ScannerDriver::Emulator => match ScannerEmulator::spawn(ScannerEmulatorSettings {
            format: format.clone(),
            link: None,
        }) {
            Ok((path, emulator)) => {
                emulators.scanner = Some(emulator);
                path
            }
            Err(error) => {
                report(lane, statuses, "scanner", &unavailable(&error));
                return None;
            }
        },
    };
    let scanner = match SerialScanner::new(serial_scanner_settings(config, path)) {
        Ok(scanner) => scanner,
        Err(error) => {
            report(lane, statuses, "scanner", &unavailable(&error));
            return None;
        }
    };
    report(lane, statuses, "scanner", &DeviceStatus::Ready);
    let (lane, statuses) = (lane.clone(), Arc::clone(statuses));
    let forwarded = spawn_scanner(scanner, move |event| match event {
        ScannerEvent::Scanned { code, .. } => {
            // The cart's answer (and any refusal) reaches every screen as events.
            let _ = lane.execute_blocking(Command::Scan { code });
        }
        ScannerEvent::Misread { code, reason } => lane.publish(Event::ScanRejected {
            code: crate::lane::shown_code(&code),
            reason,
        }),
        ScannerEvent::Rejected { reason } => lane.publish(Event::ScanRejected {
            code: String::new(),
            reason,
        }),
        ScannerEvent::Status { status } => report(&lane, &statuses, "scanner", &status),
    });
    match forwarded {
        Ok(thread) => Some(thread),
        Err(error) => {
            tracing::error!(%error, "scanner thread did not start");
            None
        }
    }
}

fn unavailable(error: &DeviceError) -> DeviceStatus {
    DeviceStatus::Unavailable {
        kind: error.kind,
        reason: error.message.clone(),
    }
}

fn display_labels(encoding: TextEncoding) -> DisplayLabels {
    if encoding == TextEncoding::Gb18030 {
        DisplayLabels::chinese()
    } else {
        DisplayLabels::english()
    }
}

/// The display (kept even when it cannot be reached now: the polls pick it up when it comes)
/// and its first status; `None` when none is configured or its emulator did not start.
fn open_display(
    config: &DevicesConfig,
    emulators: &mut Emulators,
) -> (Option<SerialDisplay>, DeviceStatus) {
    let encoding = encoding(config.display.encoding);
    let path = match config.display.driver {
        DisplayDriver::None => return (None, DeviceStatus::NotConfigured),
        DisplayDriver::Serial => config.display.port.clone().unwrap_or_default(),
        DisplayDriver::Emulator => {
            let settings = DisplayEmulatorSettings {
                encoding,
                link: None,
            };
            match DisplayEmulator::spawn(settings, |_| {}) {
                Ok((path, emulator)) => {
                    emulators.display = Some(emulator);
                    path
                }
                Err(error) => return (None, unavailable(&error)),
            }
        }
    };
    let mut display = serial_display(config, path);
    let status = match display.show_welcome() {
        Ok(()) => DeviceStatus::Ready,
        Err(error) => unavailable(&error),
    };
    (Some(display), status)
}

/// The printer (kept even when it cannot be reached now, like the display) and its first
/// status from `DLE EOT`.
fn open_printer(
    config: &DevicesConfig,
    emulators: &mut Emulators,
) -> (Option<SerialPrinter>, DeviceStatus) {
    let encoding = encoding(config.printer.encoding);
    let path = match config.printer.driver {
        PrinterDriver::None => return (None, DeviceStatus::NotConfigured),
        PrinterDriver::Serial => config.printer.port.clone().unwrap_or_default(),
        PrinterDriver::Emulator => {
            let settings = PrinterEmulatorSettings {
                encoding,
                condition: Default::default(),
                link: None,
                paper_columns: Some(lanepay_drivers::printer::RECEIPT_COLUMNS_80MM),
            };
            match PrinterEmulator::spawn(settings, |_| {}) {
                Ok((path, emulator)) => {
                    emulators.printer = Some(emulator);
                    path
                }
                Err(error) => return (None, unavailable(&error)),
            }
        }
    };
    let mut printer = serial_printer(path, config);
    let status = printer.status();
    (Some(printer), status)
}

/// The printer driver for the configured printer on `path` (not opened yet).
pub fn serial_printer(path: String, config: &DevicesConfig) -> SerialPrinter {
    SerialPrinter::new(SerialPrinterSettings {
        serial: SerialSettings::new(path, config.printer.baud),
        encoding: encoding(config.printer.encoding),
        query_status: true,
    })
}

/// What the device thread drives.
struct DeviceSet {
    display: Option<SerialDisplay>,
    printer: Option<SerialPrinter>,
    store_name: String,
}

/// Starts the device thread (and a thread that forwards the lane's events to it): the display
/// mirrors the cart, the printer prints completed sales, and both are polled for their status.
/// Device trouble is reported and the sale stands.
fn spawn_device_worker(
    lane: LaneHandle,
    statuses: Arc<Mutex<BTreeMap<&'static str, DeviceStatusView>>>,
    mut devices: DeviceSet,
    polling: StatusPolling,
) -> Option<DeviceWorker> {
    let (work, work_received) = mpsc::channel();
    let mut events = lane.subscribe();
    let forward = work.clone();
    let forwarder = std::thread::Builder::new()
        .name("device-events".into())
        .spawn(move || {
            loop {
                let event = match events.blocking_recv() {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let followed = matches!(
                    event,
                    Event::CartChanged(_)
                        | Event::SaleCompleted(_)
                        | Event::SaleVoided { .. }
                        | Event::ShiftReportToPrint { .. }
                );
                // A send fails once the device thread stopped: then this thread is done too.
                if followed && forward.send(DeviceWork::Lane(Box::new(event))).is_err() {
                    return;
                }
            }
        });
    if let Err(error) = forwarder {
        tracing::error!(%error, "device event thread did not start");
        return None;
    }
    let spawned = std::thread::Builder::new()
        .name("devices".into())
        .spawn(move || {
            let mut next_poll = match polling {
                StatusPolling::Every(interval) => Some((interval, Instant::now() + interval)),
                StatusPolling::Manual => None,
            };
            loop {
                let received = match next_poll {
                    Some((_, at)) => {
                        match work_received
                            .recv_timeout(at.saturating_duration_since(Instant::now()))
                        {
                            Ok(work) => work,
                            Err(mpsc::RecvTimeoutError::Timeout) => DeviceWork::Poll(None),
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    None => match work_received.recv() {
                        Ok(work) => work,
                        Err(_) => return,
                    },
                };
                match received {
                    DeviceWork::Lane(event) => follow(&lane, &statuses, &mut devices, &event),
                    DeviceWork::Poll(done) => {
                        poll_status(&lane, &statuses, &mut devices);
                        if let Some((interval, at)) = next_poll.as_mut() {
                            *at = Instant::now() + *interval;
                        }
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                    }
                    DeviceWork::Stop => return,
                }
            }
        });
    match spawned {
        Ok(thread) => Some(DeviceWorker {
            work,
            thread: Some(thread),
        }),
        Err(error) => {
            tracing::error!(%error, "device thread did not start");
            None
        }
    }
}

/// One status poll: reopens a replugged display (which redraws it) or printer, notices an
/// unplugged one, and reads the printer's paper and cover sensors.
fn poll_status(
    lane: &LaneHandle,
    statuses: &Mutex<BTreeMap<&'static str, DeviceStatusView>>,
    devices: &mut DeviceSet,
) {
    // The poll interval paces reopen attempts, so the drivers' own backoff need not wait.
    if let Some(display) = devices.display.as_mut() {
        display.port_mut().retry_now();
        let mut status = display.status();
        if is_unavailable(&status) {
            display.port_mut().retry_now();
            status = display.status();
        }
        report(lane, statuses, "display", &status);
    }
    if let Some(printer) = devices.printer.as_mut() {
        printer.port_mut().retry_now();
        let mut status = printer.status();
        if is_unavailable(&status) {
            printer.port_mut().retry_now();
            status = printer.status();
        }
        report(lane, statuses, "printer", &status);
    }
}

/// A port found gone during a poll is tried again at once, so the status reported is the
/// reopen's reason ("… does not exist; is the device plugged in?"), which stays the same from
/// poll to poll, rather than the broken pipe that revealed it, which would be followed by a
/// second event with the new reason one poll later.
fn is_unavailable(status: &DeviceStatus) -> bool {
    matches!(status, DeviceStatus::Unavailable { .. })
}

/// Shows a lane event on the display and prints completed sales.
fn follow(
    lane: &LaneHandle,
    statuses: &Mutex<BTreeMap<&'static str, DeviceStatusView>>,
    devices: &mut DeviceSet,
    event: &Event,
) {
    if let Some(display) = devices.display.as_mut() {
        let shown = match event {
            Event::CartChanged(cart) => cart.lines.last().map(|line| {
                display.show_line_item_and_total(&line.name_zh, &line.total, &cart.total)
            }),
            Event::SaleCompleted(sale) => Some(
                display.show_thank_you((sale.change != "0.00").then_some(sale.change.as_str())),
            ),
            Event::SaleVoided { .. } => Some(display.show_welcome()),
            _ => None,
        };
        if let Some(result) = shown {
            let status = result
                .map(|()| DeviceStatus::Ready)
                .unwrap_or_else(|e| unavailable(&e));
            report(lane, statuses, "display", &status);
        }
    }
    if let (Some(printer), Event::ShiftReportToPrint { lines }) = (devices.printer.as_mut(), event)
    {
        let job = ReceiptJob {
            title: Some(devices.store_name.clone()),
            lines: lines.clone(),
            qr_payload: None,
            cut: true,
            kick_drawer: false,
        };
        let status = match printer.print(&job) {
            Ok(()) => printer.port_mut().status().clone(),
            Err(error) => unavailable(&error),
        };
        report(lane, statuses, "printer", &status);
    }
    if let (Some(printer), Event::SaleCompleted(sale)) = (devices.printer.as_mut(), event) {
        let lines = match lane.execute_blocking(Command::Receipt {
            receipt_no: sale.receipt_no.clone(),
        }) {
            Ok(Reply::Receipt { lines }) => lines,
            _ => return,
        };
        let job = ReceiptJob {
            title: Some(devices.store_name.clone()),
            lines,
            qr_payload: Some(format!("LANEPAY-RECEIPT:{}", sale.receipt_no)),
            cut: true,
            kick_drawer: sale.method == "cash",
        };
        let status = match printer.print(&job) {
            // Printed: the status the printer gave before (ready, or paper low) stands.
            Ok(()) => printer.port_mut().status().clone(),
            Err(error) => unavailable(&error),
        };
        report(lane, statuses, "printer", &status);
    }
}

/// One configured device as `lanepay devices` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeviceProbe {
    /// scanner, display, printer, nfc.
    pub device: &'static str,
    /// none, serial, libnfc, emulator (as in the configuration).
    pub driver: &'static str,
    /// The serial port or libnfc connection string, when the driver uses one.
    pub port: Option<String>,
    /// ready, warning, unavailable or not_configured.
    pub state: &'static str,
    /// What is wrong and what to do; for a ready reader, what it is.
    pub detail: Option<String>,
}

/// What an emulated device's probe says: nothing to plug in, the lane makes it.
const EMULATOR_DETAIL: &str =
    "software emulator: the lane starts it on a pseudo-terminal (no hardware needed)";

impl DeviceProbe {
    fn new(device: &'static str, driver: &'static str, port: Option<String>) -> DeviceProbe {
        DeviceProbe {
            device,
            driver,
            port,
            state: "ready",
            detail: None,
        }
    }

    fn with_status(mut self, status: &DeviceStatus) -> DeviceProbe {
        let view = status_view(self.device, status);
        self.state = match status {
            DeviceStatus::NotConfigured => "not_configured",
            DeviceStatus::Ready => "ready",
            DeviceStatus::Warning(_) => "warning",
            DeviceStatus::Unavailable { .. } => "unavailable",
        };
        self.detail = view.detail;
        self
    }

    fn not_configured(device: &'static str, section: &str) -> DeviceProbe {
        DeviceProbe {
            state: "not_configured",
            detail: Some(format!(
                "the lane runs without it; to use one, set `driver` and `port` in [devices.{section}] of agent.toml"
            )),
            ..DeviceProbe::new(device, "none", None)
        }
    }

    fn emulated(device: &'static str) -> DeviceProbe {
        DeviceProbe {
            detail: Some(EMULATOR_DETAIL.to_string()),
            ..DeviceProbe::new(device, "emulator", None)
        }
    }
}

/// Looks at each configured device once, without starting a lane: a serial scanner or display
/// is opened and closed, the printer answers `DLE EOT`, the NFC reader is opened through
/// libnfc. Nothing is printed or shown. A lane that is running holds the ports, so its devices
/// show as in use.
pub fn probe(config: &DevicesConfig) -> Vec<DeviceProbe> {
    vec![
        probe_scanner(config),
        probe_display(config),
        probe_printer(config),
        probe_nfc(config),
    ]
}

fn probe_serial_port(device: &'static str, port: &Option<String>, baud: u32) -> DeviceProbe {
    let path = port.clone().unwrap_or_default();
    let probe = DeviceProbe::new(device, "serial", port.clone());
    match open_port(device, &SerialSettings::new(path, baud)) {
        Ok(_closed_on_drop) => probe.with_status(&DeviceStatus::Ready),
        Err(error) => probe.with_status(&unavailable(&error)),
    }
}

fn probe_scanner(config: &DevicesConfig) -> DeviceProbe {
    match config.scanner.driver {
        ScannerDriver::None => DeviceProbe::not_configured("scanner", "scanner"),
        ScannerDriver::Emulator => DeviceProbe::emulated("scanner"),
        ScannerDriver::Serial => {
            probe_serial_port("scanner", &config.scanner.port, config.scanner.baud)
        }
    }
}

fn probe_display(config: &DevicesConfig) -> DeviceProbe {
    match config.display.driver {
        DisplayDriver::None => DeviceProbe::not_configured("display", "display"),
        DisplayDriver::Emulator => DeviceProbe::emulated("display"),
        DisplayDriver::Serial => {
            probe_serial_port("display", &config.display.port, config.display.baud)
        }
    }
}

fn probe_printer(config: &DevicesConfig) -> DeviceProbe {
    match config.printer.driver {
        PrinterDriver::None => DeviceProbe::not_configured("printer", "printer"),
        PrinterDriver::Emulator => DeviceProbe::emulated("printer"),
        PrinterDriver::Serial => {
            let port = config.printer.port.clone();
            let mut printer = serial_printer(port.clone().unwrap_or_default(), config);
            DeviceProbe::new("printer", "serial", port).with_status(&printer.status())
        }
    }
}

fn probe_nfc(config: &DevicesConfig) -> DeviceProbe {
    match config.nfc.driver {
        NfcDriver::None => DeviceProbe::not_configured("nfc", "nfc"),
        NfcDriver::Emulator => DeviceProbe::emulated("nfc"),
        NfcDriver::Libnfc => {
            let connstring = nfc_connstring(config);
            let probe = DeviceProbe::new("nfc", "libnfc", Some(connstring.clone()));
            match Pn532Reader::open(&connstring) {
                Ok(reader) => DeviceProbe {
                    detail: reader.device_information().map(first_line),
                    ..probe
                },
                Err(error) => probe.with_status(&unavailable(&error)),
            }
        }
    }
}

/// libnfc's device description runs over several lines; its first names the chip.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// The libnfc connection string: `port` as configured, or, when it is a bare serial path, a
/// PN532 on that port at the configured speed.
pub fn nfc_connstring(config: &DevicesConfig) -> String {
    let port = config.nfc.port.clone().unwrap_or_default();
    if port.contains(':') {
        port
    } else {
        format!("pn532_uart:{port}:{}", config.nfc.baud)
    }
}

/// The scanner driver's settings for the configured scanner on `path`.
pub fn serial_scanner_settings(config: &DevicesConfig, path: String) -> SerialScannerSettings {
    SerialScannerSettings {
        serial: SerialSettings::new(path, config.scanner.baud),
        format: scanner_format(&config.scanner),
    }
}

/// The display driver for the configured display on `path` (not opened yet).
pub fn serial_display(config: &DevicesConfig, path: String) -> SerialDisplay {
    let encoding = encoding(config.display.encoding);
    SerialDisplay::new(SerialDisplaySettings {
        serial: SerialSettings::new(path, config.display.baud),
        encoding,
        labels: display_labels(encoding),
    })
}
