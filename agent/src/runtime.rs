//! A running lane: the lane thread, its devices, its uplink and its payments runtime, started
//! in the order they depend on each other and stopped in the reverse order. Used by
//! `lanepay agent`, the headless demo and the cashier screen's demo, so the three start a lane
//! the same way.

use std::sync::Arc;

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use lanepay_config::AgentConfig;

use crate::api::Event;
use crate::clock::Clock;
use crate::devices::Devices;
use crate::payments::PaymentsRuntime;
use crate::service::{self, LaneHandle};
use crate::uplink::UplinkHandle;

/// A lane whose thread and devices run; [`LaneRuntime::connect`] adds the gateway side.
pub struct LaneRuntime {
    pub handle: LaneHandle,
    /// Kept alive until the lane stops; a missing device is reported, not fatal.
    pub devices: Devices,
    key: SigningKey,
    clock: Arc<dyn Clock>,
    stop_uplink: tokio::sync::watch::Sender<bool>,
    uplink: Option<UplinkHandle>,
    payments: Option<PaymentsRuntime>,
}

impl std::fmt::Debug for LaneRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneRuntime")
            .field("connected", &self.payments.is_some())
            .finish_non_exhaustive()
    }
}

impl LaneRuntime {
    /// Opens the lane of `config` (key, database, checks) on its own thread and starts its
    /// devices; each device's state is published as an event. Nothing talks to the network
    /// yet, so a caller can subscribe (or serve the local API) before the first link event.
    pub fn open(
        config: &AgentConfig,
        clock: Arc<dyn Clock>,
        store_name: &str,
    ) -> anyhow::Result<LaneRuntime> {
        let (lane, key) = crate::open_lane(config)?;
        let handle = service::start(lane, clock.clone())?;
        let devices = crate::devices::start(&config.devices, &handle, store_name);
        for status in devices.statuses() {
            handle.publish(Event::DeviceStatus(status));
        }
        let (stop_uplink, _) = tokio::sync::watch::channel(false);
        Ok(LaneRuntime {
            handle,
            devices,
            key,
            clock,
            stop_uplink,
            uplink: None,
            payments: None,
        })
    }

    /// The terminal's signing key (the journal check and enrollment use it).
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Starts the uplink (when the lane is enrolled) and the payments runtime, which first
    /// resumes the attempts a crash left unresolved. Payment results then arrive by push on
    /// the live channel; query polling stays the fallback.
    pub async fn connect(&mut self, config: &AgentConfig) -> anyhow::Result<()> {
        self.uplink = match crate::uplink_settings(config)? {
            Some(settings) => Some(crate::uplink::spawn(
                settings,
                self.key.clone(),
                self.clock.clone(),
                self.handle.clone(),
                self.stop_uplink.subscribe(),
            )),
            None => {
                tracing::warn!(
                    "this lane is not enrolled with a gateway: sales stay on the lane (run `lanepay enroll`)"
                );
                None
            }
        };
        let payments = crate::payments::start_with_card_reader(
            config,
            self.devices.nfc_connstring(),
            self.handle.clone(),
            self.key.clone(),
            self.clock.clone(),
            self.uplink.as_ref().map(UplinkHandle::pushes),
        )
        .await;
        match payments {
            Ok(payments) => {
                self.payments = Some(payments);
                Ok(())
            }
            Err(error) => {
                // Not half connected: the uplink stops with the failed start.
                let _ = self.stop_uplink.send(true);
                if let Some(uplink) = self.uplink.take()
                    && let Err(uplink_error) = uplink.join().await
                {
                    tracing::warn!("the uplink stopped with an error: {uplink_error:#}");
                }
                Err(error.context("cannot start the lane's payments"))
            }
        }
    }

    /// The payments runtime, once connected.
    pub fn payments(&self) -> Option<&PaymentsRuntime> {
        self.payments.as_ref()
    }

    /// Stops payments, then the uplink, then the devices (nothing above uses them any more).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(payments) = self.payments.take() {
            payments.stop().await;
        }
        let _ = self.stop_uplink.send(true);
        let uplink = match self.uplink.take() {
            Some(uplink) => uplink.join().await,
            None => Ok(()),
        };
        drop(self.devices);
        uplink.context("the uplink stopped with an error")
    }
}

/// Emulates every device the configuration leaves out (driver `none`), so a demo or training
/// lane has a scanner, display, printer and card reader; configured devices are kept.
pub fn emulate_missing_devices(config: &mut AgentConfig) {
    use lanepay_config::{DisplayDriver, NfcDriver, PrinterDriver, ScannerDriver};
    let devices = &mut config.devices;
    if devices.scanner.driver == ScannerDriver::None {
        devices.scanner.driver = ScannerDriver::Emulator;
    }
    if devices.display.driver == DisplayDriver::None {
        devices.display.driver = DisplayDriver::Emulator;
    }
    if devices.printer.driver == PrinterDriver::None {
        devices.printer.driver = PrinterDriver::Emulator;
    }
    if devices.nfc.driver == NfcDriver::None {
        devices.nfc.driver = NfcDriver::Emulator;
    }
}

/// Emulates all four devices, whatever the configuration says: the scripted demo plays the
/// scanner, the card and the printer's reader itself.
pub fn emulate_all_devices(config: &mut AgentConfig) {
    use lanepay_config::{DisplayDriver, NfcDriver, PrinterDriver, ScannerDriver};
    let devices = &mut config.devices;
    devices.scanner.driver = ScannerDriver::Emulator;
    devices.display.driver = DisplayDriver::Emulator;
    devices.printer.driver = PrinterDriver::Emulator;
    devices.nfc.driver = NfcDriver::Emulator;
}

/// Returns at the first SIGTERM (a service manager's stop) or SIGINT (Ctrl+C). Without a
/// SIGTERM handler it waits for Ctrl+C alone, and says so.
pub async fn stop_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "no SIGTERM handler; stop with ctrl-c");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
