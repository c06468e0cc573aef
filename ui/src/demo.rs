//! The GUI demo's lane: the embedded gateway (its own SQLite under `DIR/gateway`), a lane in
//! `DIR/lane` enrolled to it, running with its uplink, payments runtime and emulated scanner,
//! display, printer and PN532 reader; and the customer the device panel plays (a wallet code
//! shown to the scanner, a card tapped on the reader, the dynamic QR paid on the phone).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use lanepay_agent::api::{Command, DiscountSpec, Event, Reply};
use lanepay_agent::clock::SystemClock;
use lanepay_agent::demo::{DEMO_STORE_NAME, DemoSetup, amount_ending_in, between, payment_code};
use lanepay_agent::embedded_gateway::EmbeddedGateway;
use lanepay_agent::runtime::{self, LaneRuntime};
use lanepay_agent::service::LaneHandle;
use lanepay_checkout::Money;
use lanepay_drivers::emulator::nfc::{Pn532Emulator, VirtualCard};
use lanepay_drivers::emulator::scanner::ScannerEmulator;

/// How long a tapped card stays on the reader waiting for its payment to settle.
const CARD_ON_READER: Duration = Duration::from_secs(60);

/// What the customer does at the device panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerAction {
    /// Shows a wallet payment code to the scanner; the outcome is picked by the sandbox's
    /// trigger amounts (the fen part of the amount), so the demo discounts the sale to one.
    WalletCode(WalletOutcome),
    /// Taps the test card on the PN532 (after the cashier chose card).
    TapCard,
    /// Opens the dynamic QR's wallet page on the "phone" and confirms it.
    PayDynamicQr(String),
    /// Pulls the store's network cable (`false`: the gateway stops answering) or plugs it back.
    Network(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalletOutcome {
    Paid,
    ConfirmsLate,
    Declined,
}

impl WalletOutcome {
    /// The sandbox's trigger fen parts (gateway `channel::Scenario::from_amount`).
    fn fen_part(self) -> Option<i64> {
        match self {
            WalletOutcome::Paid => None,
            WalletOutcome::ConfirmsLate => Some(91),
            WalletOutcome::Declined => Some(94),
        }
    }
}

/// The demo's customer: the emulated scanner and reader, and a phone that reaches the
/// gateway's sandbox wallet pages.
pub struct DemoCustomer {
    /// Locked only for a page or to take the gateway down or up (suspend needs it alone).
    gateway: tokio::sync::Mutex<EmbeddedGateway>,
    handle: LaneHandle,
    scanner: Option<Arc<Mutex<ScannerEmulator>>>,
    nfc: Option<Arc<Pn532Emulator>>,
}

impl std::fmt::Debug for DemoCustomer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoCustomer")
            .field(
                "gateway",
                &self
                    .gateway
                    .try_lock()
                    .map(|g| g.base_url().to_string())
                    .ok(),
            )
            .finish_non_exhaustive()
    }
}

impl DemoCustomer {
    /// Does `action`; the answer is a line for the device panel (what happened, or what to
    /// do first).
    pub async fn act(self: Arc<Self>, action: CustomerAction) -> Result<String, String> {
        let result = match action {
            CustomerAction::WalletCode(outcome) => self.wallet_code(outcome).await,
            CustomerAction::TapCard => self.tap_card().await,
            CustomerAction::PayDynamicQr(url) => self.pay_dynamic_qr(&url).await,
            CustomerAction::Network(up) => self.network(up).await,
        };
        result.map_err(|error| format!("{error:#}"))
    }

    async fn wallet_code(&self, outcome: WalletOutcome) -> anyhow::Result<String> {
        let Ok(Reply::Cart(cart)) = self.handle.execute(Command::GetCart).await else {
            bail!("no sale in progress: scan a product first");
        };
        if cart.lines.is_empty() {
            bail!("no sale in progress: scan a product first");
        }
        let remaining_fen = Money::parse_yuan(&cart.remaining)
            .map_err(|e| anyhow::anyhow!("the cart's amount {}: {e}", cart.remaining))?
            .fen();
        let target_fen = match outcome.fen_part() {
            Some(part) => amount_ending_in(remaining_fen, part),
            // Paid at once: any amount outside the sandbox's trigger range .91-.97.
            None if (91..=97).contains(&remaining_fen.rem_euclid(100)) => {
                remaining_fen - remaining_fen.rem_euclid(100) + 90
            }
            None => remaining_fen,
        };
        if target_fen <= 0 {
            bail!("the sale is too small for this outcome: scan another product");
        }
        if target_fen < remaining_fen {
            // An order discount replaces the one before: with one already on the sale the
            // amount would not be the one the outcome needs.
            if cart.discount != crate::app::ZERO_YUAN {
                bail!(
                    "this sale already has a discount, so the demo cannot set the amount this outcome needs: void it (F12) and scan a new sale"
                );
            }
            let discount = Money::from_fen(remaining_fen - target_fen).to_string();
            self.handle
                .execute(Command::OrderDiscount {
                    discount: Some(DiscountSpec::Amount { value: discount }),
                })
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        }
        let code = payment_code("28");
        let scanner = self
            .scanner
            .clone()
            .context("the emulated scanner did not start")?;
        let shown = code.clone();
        tokio::task::spawn_blocking(move || match scanner.lock() {
            Ok(mut scanner) => scanner.scan(&shown).map_err(|e| anyhow::anyhow!("{e}")),
            Err(_) => Err(anyhow::anyhow!("the emulated scanner stopped")),
        })
        .await??;
        let what = match outcome {
            WalletOutcome::Paid => "pays at once",
            WalletOutcome::ConfirmsLate => "confirms on the phone a few seconds later",
            WalletOutcome::Declined => "is declined (insufficient balance)",
        };
        Ok(format!(
            "Alipay code {}… shown to the scanner for {}: the customer {what}",
            &code[..6],
            Money::from_fen(target_fen)
        ))
    }

    async fn tap_card(&self) -> anyhow::Result<String> {
        let reader = self
            .nfc
            .clone()
            .context("the emulated NFC reader did not start")?;
        let mut events = self.handle.subscribe();
        reader.tap(VirtualCard::default_test_card());
        // The card stays on the reader until a card payment settles (or a minute passes, when
        // the cashier never asked for one), as a customer holds it until the lane beeps.
        let settled = tokio::time::timeout(CARD_ON_READER, async {
            loop {
                match events.recv().await {
                    Ok(Event::PaymentChanged(view))
                        if view.method == "card"
                            && crate::app::FINAL_PAYMENT_STATES.contains(&view.state.as_str()) =>
                    {
                        return Some(view.state);
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .await;
        reader.remove();
        match settled {
            Ok(Some(state)) => Ok(format!(
                "test card tapped: payment {state}; card taken away"
            )),
            _ => bail!(
                "the card was on the reader for a minute and no card payment settled: choose card on the cashier screen first"
            ),
        }
    }

    async fn pay_dynamic_qr(&self, url: &str) -> anyhow::Result<String> {
        let gateway = self.gateway.lock().await;
        let page = gateway.get_page(url).await?;
        let action = between(&page, "<form method=\"post\" action=\"", "\"")
            .context("the wallet page offers no confirm button")?;
        gateway
            .post_page(&format!("{}{action}", gateway.base_url()))
            .await?;
        Ok(format!("the phone opened {url} and confirmed the payment"))
    }
}

impl DemoCustomer {
    async fn network(&self, up: bool) -> anyhow::Result<String> {
        let mut gateway = self.gateway.lock().await;
        if up {
            gateway.resume().await?;
            Ok("network back: the lane goes online and forwards what it stored".into())
        } else {
            gateway.suspend().await?;
            Ok("network cable pulled: the lane goes offline within 5 s; cards are stored within the offline limits".into())
        }
    }
}

/// The running demo lane and gateway.
pub struct DemoLane {
    pub customer: Arc<DemoCustomer>,
    pub scanner: Option<Arc<Mutex<ScannerEmulator>>>,
    pub terminal_id: String,
    lane: LaneRuntime,
}

impl std::fmt::Debug for DemoLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoLane")
            .field("terminal_id", &self.terminal_id)
            .finish_non_exhaustive()
    }
}

impl DemoLane {
    /// Starts the embedded gateway and a lane enrolled to it in `data_dir` (both created when
    /// new, reused after), with emulators for the devices its configuration leaves out. Runs
    /// on a multi-threaded tokio runtime that outlives the screen.
    pub async fn start(data_dir: &Path) -> anyhow::Result<DemoLane> {
        let DemoSetup {
            gateway,
            mut config,
            ..
        } = lanepay_agent::demo::prepare(data_dir, "Demo lane (screen)").await?;
        runtime::emulate_missing_devices(&mut config);
        let mut lane = LaneRuntime::open(&config, Arc::new(SystemClock), DEMO_STORE_NAME)?;
        lane.connect(&config).await?;
        let scanner = lane
            .devices
            .emulators
            .scanner
            .take()
            .map(|s| Arc::new(Mutex::new(s)));
        let nfc = lane.devices.emulators.nfc.take().map(Arc::new);
        let customer = Arc::new(DemoCustomer {
            gateway: tokio::sync::Mutex::new(gateway),
            handle: lane.handle.clone(),
            scanner: scanner.clone(),
            nfc,
        });
        Ok(DemoLane {
            customer,
            scanner,
            terminal_id: config.terminal.id.clone(),
            lane,
        })
    }

    /// The lane's command and event interface (what the screen runs on).
    pub fn handle(&self) -> &LaneHandle {
        &self.lane.handle
    }

    /// The devices' states now (later changes arrive as lane events).
    pub fn device_statuses(&self) -> Vec<lanepay_agent::api::DeviceStatusView> {
        self.lane.devices.statuses()
    }

    /// Stops the lane (payments, uplink, devices) and then the gateway.
    pub async fn stop(self) {
        if let Err(error) = self.lane.stop().await {
            tracing::warn!("{error:#}");
        }
        if let Ok(customer) = Arc::try_unwrap(self.customer)
            && let Err(error) = customer.gateway.into_inner().stop().await
        {
            tracing::warn!("the embedded gateway stopped with an error: {error:#}");
        }
    }
}
