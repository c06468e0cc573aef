//! The lane's checkout hardware at work: scanner codes go to the cart, the pole display
//! mirrors the cart, a completed sale prints its receipt (and opens the drawer for cash).
//! Devices the configuration names "emulator" are software devices on pseudo-terminals, driven
//! through the same serial drivers. A missing or failing device is reported, never fatal.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use lanepay_config::{
    DevicesConfig, DisplayDriver, PrinterDriver, ScannerDriver, ScannerTerminator,
};
use lanepay_drivers::display::{
    CustomerDisplay, DisplayLabels, SerialDisplay, SerialDisplaySettings,
};
use lanepay_drivers::emulator::display::{DisplayEmulator, DisplayEmulatorSettings};
use lanepay_drivers::emulator::printer::{PrinterEmulator, PrinterEmulatorSettings};
use lanepay_drivers::emulator::scanner::{ScannerEmulator, ScannerEmulatorSettings};
use lanepay_drivers::printer::{ReceiptJob, ReceiptPrinter, SerialPrinter, SerialPrinterSettings};
use lanepay_drivers::scanner::{
    ScannerEvent, ScannerFormat, ScannerThread, SerialScanner, SerialScannerSettings, Terminator,
    spawn_scanner,
};
use lanepay_drivers::serial::SerialSettings;
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
}

impl std::fmt::Debug for Emulators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulators")
            .field("scanner", &self.scanner.is_some())
            .field("display", &self.display.is_some())
            .field("printer", &self.printer.is_some())
            .finish()
    }
}

/// The running devices; dropping it stops their threads.
pub struct Devices {
    // Fields drop in order: the scanner thread stops before its emulator's pty goes away.
    _scanner: Option<ScannerThread>,
    pub emulators: Emulators,
    statuses: Arc<Mutex<BTreeMap<&'static str, DeviceStatusView>>>,
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

fn scanner_format(config: &lanepay_config::ScannerConfig) -> ScannerFormat {
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

/// Starts the configured devices and wires them to the lane.
pub fn start(config: &DevicesConfig, lane: &LaneHandle, store_name: &str) -> Devices {
    let statuses = Arc::new(Mutex::new(BTreeMap::new()));
    let mut emulators = Emulators::default();
    let scanner = start_scanner(config, lane, &statuses, &mut emulators);
    let display = open_display(config, &mut emulators);
    let printer = open_printer(config, &mut emulators);
    for (device, opened) in [
        ("display", display.as_ref().map(|_| ())),
        ("printer", printer.as_ref().map(|_| ())),
    ] {
        match opened {
            Ok(()) => report(lane, &statuses, device, &DeviceStatus::Ready),
            Err(Some(error)) => report(
                lane,
                &statuses,
                device,
                &DeviceStatus::Unavailable {
                    kind: error.kind,
                    reason: error.message.clone(),
                },
            ),
            Err(None) => report(lane, &statuses, device, &DeviceStatus::NotConfigured),
        }
    }
    let (display, printer) = (display.ok(), printer.ok());
    if display.is_some() || printer.is_some() {
        spawn_followers(
            lane.clone(),
            Arc::clone(&statuses),
            display,
            printer,
            store_name.to_string(),
        );
    }
    Devices {
        _scanner: scanner,
        emulators,
        statuses,
    }
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
    let scanner = match SerialScanner::new(SerialScannerSettings {
        serial: SerialSettings::new(path, config.scanner.baud),
        format,
    }) {
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

/// `Err(None)`: not configured; `Err(Some(_))`: configured but could not be opened.
fn open_display(
    config: &DevicesConfig,
    emulators: &mut Emulators,
) -> Result<SerialDisplay, Option<DeviceError>> {
    let encoding = encoding(config.display.encoding);
    let path = match config.display.driver {
        DisplayDriver::None => return Err(None),
        DisplayDriver::Serial => config.display.port.clone().unwrap_or_default(),
        DisplayDriver::Emulator => {
            let (path, emulator) = DisplayEmulator::spawn(
                DisplayEmulatorSettings {
                    encoding,
                    link: None,
                },
                |_| {},
            )
            .map_err(Some)?;
            emulators.display = Some(emulator);
            path
        }
    };
    let labels = if encoding == TextEncoding::Gb18030 {
        DisplayLabels::chinese()
    } else {
        DisplayLabels::english()
    };
    let mut display = SerialDisplay::new(SerialDisplaySettings {
        serial: SerialSettings::new(path, config.display.baud),
        encoding,
        labels,
    });
    display.show_welcome().map_err(Some)?;
    Ok(display)
}

fn open_printer(
    config: &DevicesConfig,
    emulators: &mut Emulators,
) -> Result<SerialPrinter, Option<DeviceError>> {
    let encoding = encoding(config.printer.encoding);
    let path = match config.printer.driver {
        PrinterDriver::None => return Err(None),
        PrinterDriver::Serial => config.printer.port.clone().unwrap_or_default(),
        PrinterDriver::Emulator => {
            let settings = PrinterEmulatorSettings {
                encoding,
                condition: Default::default(),
                link: None,
                paper_columns: Some(lanepay_drivers::printer::RECEIPT_COLUMNS_80MM),
            };
            let (path, emulator) = PrinterEmulator::spawn(settings, |_| {}).map_err(Some)?;
            emulators.printer = Some(emulator);
            path
        }
    };
    let mut printer = SerialPrinter::new(SerialPrinterSettings {
        serial: SerialSettings::new(path, config.printer.baud),
        encoding,
        query_status: true,
    });
    match printer.status() {
        DeviceStatus::Unavailable { kind, reason } => {
            Err(Some(DeviceError::new("printer", kind, reason)))
        }
        _ => Ok(printer),
    }
}

/// A thread that follows the lane's events: the display mirrors the cart, the printer prints
/// completed sales. Device trouble is reported and the sale stands.
fn spawn_followers(
    lane: LaneHandle,
    statuses: Arc<Mutex<BTreeMap<&'static str, DeviceStatusView>>>,
    mut display: Option<SerialDisplay>,
    mut printer: Option<SerialPrinter>,
    store_name: String,
) {
    let mut events = lane.subscribe();
    let spawned = std::thread::Builder::new()
        .name("devices".into())
        .spawn(move || {
            loop {
                let event = match events.blocking_recv() {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                if let Some(display) = display.as_mut() {
                    let shown = match &event {
                        Event::CartChanged(cart) => cart.lines.last().map(|line| {
                            display.show_line_item_and_total(
                                &line.name_zh,
                                &line.total,
                                &cart.total,
                            )
                        }),
                        Event::SaleCompleted(sale) => Some(display.show_thank_you(
                            (sale.change != "0.00").then_some(sale.change.as_str()),
                        )),
                        Event::SaleVoided { .. } => Some(display.show_welcome()),
                        _ => None,
                    };
                    if let Some(result) = shown {
                        let status = result
                            .map(|()| DeviceStatus::Ready)
                            .unwrap_or_else(|e| unavailable(&e));
                        report(&lane, &statuses, "display", &status);
                    }
                }
                if let (Some(printer), Event::SaleCompleted(sale)) = (printer.as_mut(), &event) {
                    let lines = match lane.execute_blocking(Command::Receipt {
                        receipt_no: sale.receipt_no.clone(),
                    }) {
                        Ok(Reply::Receipt { lines }) => lines,
                        _ => continue,
                    };
                    let job = ReceiptJob {
                        title: Some(store_name.clone()),
                        lines,
                        qr_payload: Some(format!("LANEPAY-RECEIPT:{}", sale.receipt_no)),
                        cut: true,
                        kick_drawer: sale.method == "cash",
                    };
                    let status = printer
                        .print(&job)
                        .map(|()| DeviceStatus::Ready)
                        .unwrap_or_else(|e| unavailable(&e));
                    report(&lane, &statuses, "printer", &status);
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "device thread did not start");
    }
}
