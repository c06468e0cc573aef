//! The scripted headless demo: the embedded gateway, a lane enrolled to it with emulated
//! scanner, display, printer and NFC reader, and one sale per payment method driven through the
//! lane's real interfaces (the local API over loopback and the emulated devices), each told in
//! a line a person reads. Called by `lanepay demo --headless` and by `lanepay-ui demo` when
//! there is no display.
//!
//! Nothing is simulated inside the lane or the gateway: the demo is the cashier (local API
//! commands), the customer (the emulated scanner reading a payment code, the emulated card on
//! the PN532, a phone opening the gateway's wallet and offline-QR pages over HTTP) and the
//! network (the gateway suspended and resumed). Every wait is for an event, under a deadline.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use lanepay_config::AgentConfig;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::clock::SystemClock;
use crate::embedded_gateway::{DEMO_MERCHANT_ID, DEMO_STORE_ID, EmbeddedGateway, EmbeddedOptions};
use crate::enrollment::{self, EnrollRequest, InitRequest};
use crate::local_api;
use crate::runtime::{self, LaneRuntime};
use crate::store::{self, journal};

/// The longest any one step may take before the demo gives up with a message.
const STEP_DEADLINE: Duration = Duration::from_secs(30);
/// How often an outcome that has no event of its own (a refund's state in the lane's
/// database, the outbox draining) is looked at again.
const LOOK_AGAIN: Duration = Duration::from_millis(50);
/// Number of sales the demo runs (for the `[n/N]` prefix).
const SALES: usize = 8;
/// The store name the receipts and the pole display show (both demos).
pub const DEMO_STORE_NAME: &str = "Lanepay demo store";

const COLA: &str = "6901234567892";
const WATER: &str = "6920000000012";
const BREAD: &str = "6930000000011";
const MILK: &str = "6940000000010";
const GUM: &str = "96385074";

/// Runs the demo in `data_dir` (the gateway under `gateway/`, the lane under `lane/`; both
/// created when new and reused afterwards) and prints what happens. An error says which step
/// failed and why.
pub fn run_headless(data_dir: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the demo's runtime")?;
    runtime.block_on(run(data_dir))
}

async fn run(data_dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("Lanepay demo (headless)");
    let DemoSetup {
        mut gateway,
        mut config,
        gateway_dir,
        lane_dir,
    } = prepare(data_dir, "Demo lane").await?;
    // The script plays every device itself, so all four are the emulators here.
    runtime::emulate_all_devices(&mut config);
    let mut lane = DemoLane::start(&config).await?;
    let outcome = sell_with_every_method(&mut lane, &mut gateway).await;
    let outcome = match outcome {
        Ok(last_receipt) => lane.finish(&config, &last_receipt).await,
        Err(error) => Err(error),
    };
    lane.stop().await;
    gateway.stop().await?;
    outcome?;
    println!(
        "\nDemo finished in {:.1} s. Lane data: {}; gateway data: {}",
        started.elapsed().as_secs_f64(),
        lane_dir.display(),
        gateway_dir.display()
    );
    Ok(())
}

/// The embedded gateway and the configuration of a lane enrolled to it.
#[derive(Debug)]
pub struct DemoSetup {
    pub gateway: EmbeddedGateway,
    /// The lane's configuration, its local API on a free loopback port.
    pub config: AgentConfig,
    pub gateway_dir: PathBuf,
    pub lane_dir: PathBuf,
}

/// Starts the embedded gateway in `data_dir/gateway` and enrolls a lane named `lane_name` in
/// `data_dir/lane` (both created when new and reused afterwards), saying so on stdout.
pub async fn prepare(data_dir: &Path, lane_name: &str) -> anyhow::Result<DemoSetup> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let data_dir = std::fs::canonicalize(data_dir)?;
    let gateway_dir = data_dir.join("gateway");
    let lane_dir = data_dir.join("lane");
    let gateway = EmbeddedGateway::start(EmbeddedOptions {
        data_dir: gateway_dir.clone(),
        manual_clock_start_ms: None,
    })
    .await
    .context("cannot start the embedded gateway")?;
    println!(
        "Gateway: {} (embedded; merchant {DEMO_MERCHANT_ID}, store {DEMO_STORE_ID}, sandbox channels; data in {})",
        gateway.base_url(),
        gateway_dir.display()
    );
    let config_path = enroll_lane(&gateway, &lane_dir, lane_name).await?;
    let mut config = AgentConfig::load(&config_path)?;
    // A demo always picks a free port for the local API.
    config.local_api.listen = "127.0.0.1:0".parse()?;
    Ok(DemoSetup {
        gateway,
        config,
        gateway_dir,
        lane_dir,
    })
}

/// Enrolls the lane in `lane_dir` with the embedded gateway unless it already is; a lane that
/// is points at this run's gateway address (the port changes from run to run).
async fn enroll_lane(
    gateway: &EmbeddedGateway,
    lane_dir: &Path,
    lane_name: &str,
) -> anyhow::Result<PathBuf> {
    if enrollment::is_enrolled(lane_dir)? {
        let config_path = crate::config_path(lane_dir);
        let lane = enrollment::enrolled_lane(&config_path)?;
        if lane.gateway_key.as_deref() != Some(gateway.public_key_hex().as_str()) {
            bail!(
                "the lane in {} is enrolled with another gateway (its key is not this gateway's): give the demo a new --data directory",
                lane_dir.display()
            );
        }
        enrollment::set_gateway_url(&config_path, gateway.base_url())?;
        println!(
            "Lane: terminal {} of store {}, enrolled in an earlier run (data in {})",
            lane.terminal_id,
            lane.store_id,
            lane_dir.display()
        );
        return Ok(config_path);
    }
    let init = InitRequest {
        data_dir: lane_dir.to_path_buf(),
        terminal_id: "T0000".into(),
        store_id: "S000".into(),
        merchant_id: "M000".into(),
        listen: "127.0.0.1:0".parse()?,
        demo_catalog: true,
    };
    tokio::task::spawn_blocking(move || enrollment::init(&init))
        .await
        .context("the lane's setup task failed")??;
    let config_path = enrollment::enroll(&EnrollRequest {
        gateway_url: gateway.base_url().to_string(),
        token: gateway.enrollment_token()?,
        data_dir: lane_dir.to_path_buf(),
        ca_file: None,
        name: Some(lane_name.into()),
    })
    .await
    .context("cannot enroll the demo lane with the embedded gateway")?;
    let lane = enrollment::enrolled_lane(&config_path)?;
    println!(
        "Lane: terminal {} of store {} (merchant {}), enrolled now with a one-time token (data in {})",
        lane.terminal_id,
        lane.store_id,
        lane.merchant_id,
        lane_dir.display()
    );
    Ok(config_path)
}

/// One sale per method, in order; returns the receipt number of the last sale.
async fn sell_with_every_method(
    lane: &mut DemoLane,
    gateway: &mut EmbeddedGateway,
) -> anyhow::Result<String> {
    lane.wait_online(true).await?;
    println!("Lane online: the live channel to the gateway is up.\n");
    lane.void_leftover_sale().await?;

    // 1. Cash with change.
    let cart = lane.sell(1, &[COLA, COLA, BREAD]).await?;
    let tender = lane
        .client
        .call(json!({"type": "tender_cash", "amount": "50.00"}))
        .await
        .context("cash payment")?;
    if tender["completed"] != true {
        bail!("the cash tender did not complete the sale: {tender}");
    }
    lane.finished_sales.insert(cart.sale_id.clone());
    println!(
        "[1/{SALES}] cash            total {} yuan; customer gave 50.00, change {} -> PAID, receipt {}",
        cart.total,
        text(&tender["change"]),
        text(&tender["receipt_no"])
    );

    // 2. Wallet payment code, paid at once.
    let cart = lane.sell(2, &[MILK, GUM]).await?;
    let code = payment_code("28");
    lane.scan_device(&code)?;
    let paid = lane.wait_payment_final(&cart.sale_id).await?;
    let receipt = lane.wait_sale_completed(&cart.sale_id).await?;
    expect_state(&paid, "paid", "the Alipay code payment")?;
    println!(
        "[2/{SALES}] wallet code     total {} yuan; Alipay code {}… scanned -> PAID at once, receipt {receipt}",
        cart.total,
        &code[..6]
    );

    // 3. Wallet payment code the customer confirms late on the phone.
    let mut cart = lane.sell(3, &[BREAD, GUM]).await?;
    // The sandbox rails pick a scenario by the fen part of the amount: .91 means the customer
    // is asked to confirm on the phone and does so a few seconds later.
    let discount_fen = cart.total_fen - amount_ending_in(cart.total_fen, 91);
    if discount_fen > 0 {
        let reply = lane
            .client
            .call(json!({"type": "order_discount", "discount": {"kind": "amount", "value": yuan(discount_fen)}}))
            .await
            .context("order discount")?;
        cart = CartSummary::from_view(&reply)?;
    }
    let code = payment_code("13");
    let waiting_since = Instant::now();
    lane.scan_device(&code)?;
    let waiting = lane
        .wait_payment(&cart.sale_id, |view| {
            view["state"] == "waiting" && !view["step"].as_str().unwrap_or("").is_empty()
        })
        .await
        .context("the WeChat code payment never waited for the customer")?;
    let paid = lane.wait_payment_final(&cart.sale_id).await?;
    let receipt = lane.wait_sale_completed(&cart.sale_id).await?;
    expect_state(&paid, "paid", "the late-confirmed WeChat code payment")?;
    println!(
        "[3/{SALES}] wallet late     total {} yuan (order discount {}); WeChat code scanned -> PAYING ({}) -> PAID after {:.1} s when the customer confirmed, receipt {receipt}",
        cart.total,
        yuan(discount_fen),
        text(&waiting["step"]),
        waiting_since.elapsed().as_secs_f64()
    );

    // 4. Dynamic QR, paid by the customer on the sandbox wallet page.
    let cart = lane.sell(4, &[COLA, WATER]).await?;
    lane.client
        .call(json!({"type": "start_dynamic_qr", "wallet": "alipay"}))
        .await
        .context("dynamic QR")?;
    let shown = lane
        .wait_payment(&cart.sale_id, |view| view["qr_text"].is_string())
        .await
        .context("the dynamic QR was never shown")?;
    let pay_url = text(&shown["qr_text"]);
    let page = gateway.get_page(&pay_url).await?;
    if !page.contains(&cart.total) {
        bail!(
            "the wallet page at {pay_url} does not show the amount {}",
            cart.total
        );
    }
    let action = between(&page, "<form method=\"post\" action=\"", "\"")
        .context("the wallet page offers no confirm button")?;
    gateway
        .post_page(&format!("{}{action}", gateway.base_url()))
        .await?;
    let paid = lane.wait_payment_final(&cart.sale_id).await?;
    let receipt = lane.wait_sale_completed(&cart.sale_id).await?;
    expect_state(&paid, "paid", "the dynamic QR payment")?;
    println!(
        "[4/{SALES}] dynamic QR      total {} yuan; QR shown, the customer's phone opened {pay_url} and paid -> PAID, receipt {receipt}",
        cart.total
    );

    // 5. Contactless card, authorised online.
    let cart = lane.sell(5, &[BREAD, MILK]).await?;
    let paid = lane.pay_by_card().await?;
    let card_receipt = lane.wait_sale_completed(&cart.sale_id).await?;
    expect_state(&paid, "paid", "the online card payment")?;
    println!(
        "[5/{SALES}] card online     total {} yuan; card {} tapped -> PAID (authorised online), receipt {card_receipt}",
        cart.total,
        text(&paid["masked_pan"])
    );

    // 6. Card while the gateway is unreachable: stored within the offline limits.
    gateway.suspend().await?;
    lane.wait_online(false).await?;
    let cart = lane.sell(6, &[MILK, COLA]).await?;
    let stored = lane.pay_by_card().await?;
    let stored_receipt = lane.wait_sale_completed(&cart.sale_id).await?;
    expect_state(&stored, "stored", "the offline card payment")?;
    let exposure = lane
        .client
        .call(json!({"type": "forward_stored_cards"}))
        .await
        .context("offline exposure")?;
    println!(
        "[6/{SALES}] card offline    gateway unreachable, lane offline; total {} yuan; card {} tapped -> STORED offline (offline exposure {} yuan, {} card), receipt {stored_receipt}",
        cart.total,
        text(&stored["masked_pan"]),
        text(&exposure["offline_exposure"]),
        exposure["stored_count"]
    );

    // 7. Signed offline QR: the lane is offline, the customer's phone is not.
    let cart = lane.sell(7, &[GUM, WATER]).await?;
    let shown = lane
        .client
        .call(json!({"type": "start_offline_qr"}))
        .await
        .context("offline QR")?;
    let order_url = text(&shown["qr_text"]);
    if order_url.is_empty() {
        bail!("the offline QR has no order URL: {shown}");
    }
    // The customer's phone reaches the gateway over its own network; here that is the same
    // loopback, so the gateway serves again (the lane reconnects on its own schedule).
    gateway.resume().await?;
    let (trade_no, confirmation) = pay_offline_order(gateway, &order_url, &cart.total).await?;
    lane.scan_device(&confirmation)?;
    let paid = lane.wait_payment_final(&cart.sale_id).await?;
    let last_receipt = lane.wait_sale_completed(&cart.sale_id).await?;
    expect_state(&paid, "paid", "the offline QR payment")?;
    println!(
        "[7/{SALES}] offline QR      total {} yuan; signed offline QR shown, the customer opened it on the gateway page and paid (trade {trade_no}), the gateway's signed confirmation scanned and verified offline -> PAID, receipt {last_receipt}",
        cart.total
    );
    let forwarded = lane
        .wait_payment_final(stored["sale_id"].as_str().unwrap_or_default())
        .await
        .context("the stored card payment was not forwarded")?;
    expect_state(&forwarded, "paid", "the forwarded card payment")?;
    println!(
        "      the lane reconnected: the card stored in sale 6 ({} yuan) was forwarded -> APPROVED",
        text(&forwarded["amount"])
    );

    // 8. A partial refund of the online card sale, through the gateway.
    let refund = lane
        .client
        .call(json!({"type": "refund", "receipt_no": card_receipt, "amount": "5.00", "reason": "demo: one item returned"}))
        .await
        .context("refund")?;
    let refund_id = text(&refund["refund_id"]);
    let (state, message) = lane.wait_gateway_refund(&refund_id).await?;
    if state != "done" {
        bail!(
            "the gateway refund {refund_id} ended {state}: {}",
            message.unwrap_or_default()
        );
    }
    println!(
        "[8/{SALES}] refund          {} yuan of receipt {card_receipt} (card) refunded online through the gateway -> REFUNDED, refund {refund_id}",
        text(&refund["total"])
    );
    Ok(last_receipt)
}

/// The customer's phone: opens the signed offline-QR URL on the gateway page, pays on the
/// sandbox wallet, opens the order again and reads the gateway's signed confirmation.
async fn pay_offline_order(
    gateway: &EmbeddedGateway,
    order_url: &str,
    total: &str,
) -> anyhow::Result<(String, String)> {
    let page = gateway
        .get_page(order_url)
        .await
        .context("the customer could not open the offline QR page")?;
    if !page.contains(total) {
        bail!("the offline QR page does not show the amount {total}");
    }
    let trade_no = between(&page, "href=\"/sandbox/wallet/", "\"")
        .context("the offline QR page has no link to the wallet")?
        .to_string();
    gateway.wallet_confirm(&trade_no).await?;
    let paid_page = gateway.get_page(order_url).await?;
    let confirmation = between(&paid_page, "<code id=\"confirmation\">", "</code>")
        .context("the paid offline QR page shows no confirmation")?
        .to_string();
    Ok((trade_no, confirmation))
}

/// A cart as the demo needs it.
#[derive(Debug, Clone)]
struct CartSummary {
    sale_id: String,
    total: String,
    total_fen: i64,
}

impl CartSummary {
    fn from_view(view: &Value) -> anyhow::Result<CartSummary> {
        let total = text(&view["total"]);
        Ok(CartSummary {
            sale_id: text(&view["sale_id"]),
            total_fen: fen(&total).with_context(|| format!("a cart total `{total}`"))?,
            total,
        })
    }
}

/// The lane the demo runs: its service, devices, uplink, payments runtime and local API, and
/// a local API client (the cashier).
struct DemoLane {
    lane: LaneRuntime,
    stop_api: Option<tokio::sync::oneshot::Sender<()>>,
    api: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    client: LaneClient,
    db: PathBuf,
    /// Sales completed so far (their late cart events are not a new sale's).
    finished_sales: std::collections::HashSet<String>,
}

impl DemoLane {
    async fn start(config: &AgentConfig) -> anyhow::Result<DemoLane> {
        if crate::uplink_settings(config)?.is_none() {
            bail!(
                "the demo lane is not enrolled (no gateway key recorded): give the demo a new --data directory"
            );
        }
        let mut lane = LaneRuntime::open(config, Arc::new(SystemClock), DEMO_STORE_NAME)?;
        let states: Vec<String> = lane
            .devices
            .statuses()
            .iter()
            .map(|status| {
                format!(
                    "{} {}{}",
                    status.device,
                    status.state,
                    status
                        .detail
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        println!(
            "Devices (emulated): {}; the NFC reader is a software PN532 on a pseudo-terminal",
            states.join(", ")
        );
        let listener = tokio::net::TcpListener::bind(config.local_api.listen).await?;
        let address = listener.local_addr()?;
        let token = config.local_api.token().to_string();
        let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let api = tokio::spawn(local_api::run(
            listener,
            lane.handle.clone(),
            token.clone(),
            async move {
                let _ = api_stopped.await;
            },
        ));
        // The cashier connects before the uplink starts, so no link event is missed.
        let client = LaneClient::connect(&format!("ws://{address}/v1/ws"), &token).await?;
        println!("Lane local API: ws://{address}/v1/ws");
        lane.connect(config).await?;
        Ok(DemoLane {
            lane,
            stop_api: Some(stop_api),
            api: Some(api),
            client,
            db: store::db_path(&config.storage.data_dir),
            finished_sales: std::collections::HashSet::new(),
        })
    }

    /// Waits until the payments runtime sees the gateway link as `online` (the lane takes
    /// online payments only then).
    async fn wait_online(&mut self, online: bool) -> anyhow::Result<()> {
        let what = if online { "online" } else { "offline" };
        self.client
            .wait_for(&format!("the lane to go {what}"), |event| {
                (event["type"] == "sync_status" && event["online"] == online).then_some(())
            })
            .await?;
        // The runtime hears the same event; it flips its flag right after.
        let deadline = Instant::now() + STEP_DEADLINE;
        while self.lane.payments().map(|p| p.is_online()) != Some(online) {
            if Instant::now() > deadline {
                bail!("the payments runtime did not see the lane go {what}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// A sale left open by an interrupted earlier run is voided before the demo sells.
    async fn void_leftover_sale(&mut self) -> anyhow::Result<()> {
        let cart = self.client.call(json!({"type": "get_cart"})).await?;
        if cart["lines"]
            .as_array()
            .is_some_and(|lines| !lines.is_empty())
        {
            self.client
                .call(json!({"type": "void_sale"}))
                .await
                .context("voiding the unfinished sale of an earlier run")?;
            println!("(voided an unfinished sale left by an earlier run)");
        }
        Ok(())
    }

    /// Scans `codes` on the emulated scanner into a new sale; returns the cart. Each scan is
    /// answered by the cart of a sale not finished yet holding one more item (events of the
    /// sale before may still be on their way).
    async fn sell(&mut self, number: usize, codes: &[&str]) -> anyhow::Result<CartSummary> {
        let mut cart = None;
        for (scanned, code) in codes.iter().enumerate() {
            self.scan_device(code)?;
            let finished = &self.finished_sales;
            let view = self
                .client
                .wait_for(
                    &format!("sale {number}: the scan of {code}"),
                    |event| match event["type"].as_str() {
                        Some("cart_changed")
                            if !finished.contains(event["sale_id"].as_str().unwrap_or(""))
                                && item_count(event) == scanned + 1 =>
                        {
                            Some(Ok(event.clone()))
                        }
                        Some("scan_rejected") => Some(Err(text(&event["reason"]))),
                        _ => None,
                    },
                )
                .await?
                .map_err(|reason| anyhow::anyhow!("sale {number}: {code} was refused: {reason}"))?;
            cart = Some(CartSummary::from_view(&view)?);
        }
        let cart = cart.context("a sale needs at least one item")?;
        self.client.forget("cart_changed");
        Ok(cart)
    }

    fn scan_device(&mut self, code: &str) -> anyhow::Result<()> {
        let scanner = self
            .lane
            .devices
            .emulators
            .scanner
            .as_mut()
            .context("the emulated scanner did not start (see the devices line)")?;
        scanner
            .scan(code)
            .with_context(|| format!("the emulated scanner could not send {code}"))?;
        Ok(())
    }

    /// Asks for a card payment, taps the test card on the emulated reader and waits for the
    /// attempt to settle (paid online, or stored offline); the card is taken away after.
    async fn pay_by_card(&mut self) -> anyhow::Result<Value> {
        let asked = self
            .client
            .call(json!({"type": "pay_card"}))
            .await
            .context("card payment")?;
        let sale_id = text(&asked["sale_id"]);
        let reader = self
            .lane
            .devices
            .emulators
            .nfc
            .as_ref()
            .context("the emulated NFC reader did not start (see the devices line)")?;
        reader.tap(lanepay_drivers::emulator::nfc::VirtualCard::default_test_card());
        let settled = self
            .wait_payment(&sale_id, |view| {
                matches!(
                    view["state"].as_str(),
                    Some("paid" | "stored" | "failed" | "declined" | "reversed" | "cancelled")
                )
            })
            .await;
        if let Some(reader) = self.lane.devices.emulators.nfc.as_ref() {
            reader.remove();
        }
        settled
    }

    /// The next `payment_changed` of `sale_id` that `done` accepts.
    async fn wait_payment(
        &mut self,
        sale_id: &str,
        mut done: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        self.client
            .wait_for(&format!("the payment of sale {sale_id}"), |event| {
                (event["type"] == "payment_changed" && event["sale_id"] == sale_id && done(event))
                    .then(|| event.clone())
            })
            .await
    }

    /// The attempt of `sale_id` in a final state (or stored offline).
    async fn wait_payment_final(&mut self, sale_id: &str) -> anyhow::Result<Value> {
        self.wait_payment(sale_id, |view| {
            matches!(
                view["state"].as_str(),
                Some("paid" | "failed" | "reversed" | "closed" | "declined" | "cancelled")
            )
        })
        .await
    }

    /// The receipt number once `sale_id` is completed.
    async fn wait_sale_completed(&mut self, sale_id: &str) -> anyhow::Result<String> {
        let receipt = self
            .client
            .wait_for(&format!("sale {sale_id} to complete"), |event| {
                (event["type"] == "sale_completed" && event["sale_id"] == sale_id)
                    .then(|| text(&event["receipt_no"]))
            })
            .await?;
        self.finished_sales.insert(sale_id.to_string());
        Ok(receipt)
    }

    /// A gateway refund's state once the runtime has sent it (`done` or `failed`). The lane
    /// records it without an event, so its database is looked at until then.
    async fn wait_gateway_refund(
        &mut self,
        refund_id: &str,
    ) -> anyhow::Result<(String, Option<String>)> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            let db = self.db.clone();
            let id = refund_id.to_string();
            let row = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let conn = store::open_read_only(&db)?;
                let row = conn
                    .query_row(
                        "SELECT state, message FROM gateway_refunds WHERE refund_id = ?1",
                        [&id],
                        |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?)),
                    )
                    .map_err(|e| anyhow::anyhow!("no gateway refund for {id}: {e}"))?;
                Ok(row)
            })
            .await??;
            if row.0 == "done" || row.0 == "failed" {
                return Ok(row);
            }
            if Instant::now() > deadline {
                bail!(
                    "the refund {refund_id} was not confirmed by the gateway within {} s (state {})",
                    STEP_DEADLINE.as_secs(),
                    row.0
                );
            }
            tokio::time::sleep(LOOK_AGAIN).await;
        }
    }

    /// The receipt of the last sale as the printer printed it, the journal tail, the journal
    /// check and the backlog.
    async fn finish(&mut self, config: &AgentConfig, last_receipt: &str) -> anyhow::Result<()> {
        let printer = self
            .lane
            .devices
            .emulators
            .printer
            .as_ref()
            .context("the emulated printer did not start")?;
        let wanted = last_receipt.to_string();
        let printed = tokio::task::block_in_place(|| {
            printer.wait_until(Duration::from_secs(10), |state| {
                state
                    .receipts
                    .iter()
                    .any(|receipt| receipt.text().contains(&wanted))
            })
        })
        .map_err(|_| anyhow::anyhow!("the printer never printed receipt {last_receipt}"))?;
        let receipt = printed
            .receipts
            .iter()
            .rev()
            .find(|receipt| receipt.text().contains(last_receipt))
            .context("the printed receipt went missing")?;
        println!("\n== Receipt {last_receipt} as printed (emulated ESC/POS printer) ==");
        for line in &receipt.lines {
            println!("{line}");
        }
        for payload in &receipt.qr_payloads {
            println!("[QR] {payload}");
        }

        println!("\n== Journal tail ==");
        let tail = self
            .client
            .call(json!({"type": "journal_tail", "count": 8}))
            .await?;
        for entry in tail["entries"].as_array().into_iter().flatten() {
            let hash = entry["hash"].as_str().unwrap_or("");
            println!(
                "#{:<5} {:<18} {:<32} hash {}…",
                entry["seq"],
                entry["kind"].as_str().unwrap_or(""),
                entry_summary(&entry["payload"]),
                &hash[..hash.len().min(16)]
            );
        }

        let backlog = self.wait_backlog_empty().await?;
        let db = self.db.clone();
        let terminal_id = config.terminal.id.clone();
        let key_path = crate::key::key_path(&config.storage.data_dir);
        let verification = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let conn = store::open_read_only(&db)?;
            let key = crate::key::load(&key_path)?;
            Ok(journal::verify(
                &conn,
                &terminal_id,
                key.verifying_key(),
                1,
            )?)
        })
        .await??;
        match verification {
            journal::Verification::Intact { entries, .. } => println!(
                "\nJournal verified: {entries} entries, chain and signatures intact. Backlog {backlog}: every entry is acknowledged by the gateway."
            ),
            journal::Verification::Broken { seq, reason } => {
                bail!("the journal is broken at entry {seq}: {reason}")
            }
        }
        Ok(())
    }

    /// Waits until the gateway acknowledged every journal entry; returns the backlog (0).
    async fn wait_backlog_empty(&mut self) -> anyhow::Result<u64> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            let status = self.client.call(json!({"type": "status"})).await?;
            let backlog = status["outbox_len"].as_u64().unwrap_or(u64::MAX);
            if backlog == 0 {
                return Ok(0);
            }
            if Instant::now() > deadline {
                bail!(
                    "{backlog} journal entries were still not acknowledged by the gateway after {} s",
                    STEP_DEADLINE.as_secs()
                );
            }
            tokio::time::sleep(LOOK_AGAIN).await;
        }
    }

    /// Stops the lane's parts in order: API, payments, uplink, devices, lane thread.
    async fn stop(mut self) {
        self.client.close().await;
        if let Some(stop) = self.stop_api.take() {
            let _ = stop.send(());
        }
        if let Some(api) = self.api.take() {
            let _ = api.await;
        }
        if let Err(error) = self.lane.stop().await {
            tracing::warn!("{error:#}");
        }
    }
}

/// The cashier's side of the local API: one request at a time; events are queued until the
/// demo looks for them.
struct LaneClient {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    events: VecDeque<Value>,
}

impl LaneClient {
    async fn connect(url: &str, token: &str) -> anyhow::Result<LaneClient> {
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse()?);
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .context("cannot reach the lane's local API")?;
        Ok(LaneClient {
            socket,
            next_id: 1,
            events: VecDeque::new(),
        })
    }

    /// The next message from the lane, or an error when it closed.
    async fn next_message(&mut self) -> anyhow::Result<Value> {
        while let Some(message) = self.socket.next().await {
            let Message::Text(text) = message? else {
                continue;
            };
            return Ok(serde_json::from_str(text.as_str())?);
        }
        bail!("the lane closed its local API connection")
    }

    /// Sends a command and returns the reply's result, or the lane's words for the refusal.
    async fn call(&mut self, command: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.socket
            .send(Message::text(
                json!({"id": id, "command": command}).to_string(),
            ))
            .await?;
        let reply = tokio::time::timeout(STEP_DEADLINE, async {
            loop {
                let message = self.next_message().await?;
                if message.get("reply_to").and_then(Value::as_u64) == Some(id) {
                    return anyhow::Ok(message);
                }
                if let Some(event) = message.get("event") {
                    self.events.push_back(event.clone());
                }
            }
        })
        .await
        .context("the lane did not answer")??;
        if reply["ok"].as_bool() == Some(true) {
            return Ok(reply["result"].clone());
        }
        bail!(
            "the lane refused it: {}",
            reply["error"]["message"]
                .as_str()
                .unwrap_or("unknown error")
        )
    }

    /// Drops queued events of `kind` (stale ones that must not answer a new wait).
    fn forget(&mut self, kind: &str) {
        self.events.retain(|event| event["type"] != kind);
    }

    /// The first event (queued or arriving) that `pick` accepts, which is taken from the
    /// queue; others stay queued. Fails after [`STEP_DEADLINE`] naming `what`.
    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Value) -> Option<T>,
    ) -> anyhow::Result<T> {
        for index in 0..self.events.len() {
            if let Some(found) = pick(&self.events[index]) {
                self.events.remove(index);
                return Ok(found);
            }
        }
        let waited = tokio::time::timeout(STEP_DEADLINE, async {
            loop {
                let message = self.next_message().await?;
                let Some(event) = message.get("event") else {
                    continue;
                };
                if let Some(found) = pick(event) {
                    return anyhow::Ok(found);
                }
                self.events.push_back(event.clone());
            }
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => bail!(
                "waited {} s for {what} and it did not happen",
                STEP_DEADLINE.as_secs()
            ),
        }
    }

    async fn close(&mut self) {
        let _ = self.socket.close(None).await;
    }
}

fn expect_state(view: &Value, state: &str, what: &str) -> anyhow::Result<()> {
    if view["state"] == state {
        return Ok(());
    }
    bail!(
        "{what} ended {} instead of {state}: {}",
        text(&view["state"]),
        view["message"].as_str().unwrap_or("no reason given")
    )
}

/// A fresh wallet payment code with `prefix` (28: Alipay, 13: WeChat Pay), 18 digits: the
/// sandbox takes each code once, so every run needs new ones.
pub fn payment_code(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    // Without randomness the code is still valid; it would only repeat across runs.
    let _ = getrandom::fill(&mut bytes);
    let digits: String = bytes
        .iter()
        .map(|byte| char::from(b'0' + byte % 10))
        .collect();
    format!("{prefix}{digits}")
}

/// The largest amount not above `total_fen` whose fen part is `fen_part` (the sandbox picks a
/// payment's outcome by its fen part).
pub fn amount_ending_in(total_fen: i64, fen_part: i64) -> i64 {
    let candidate = total_fen - total_fen.rem_euclid(100) + fen_part;
    if candidate <= total_fen {
        candidate
    } else {
        candidate - 100
    }
}

/// A journal entry's payload in a few words: its amount and what it says happened.
fn entry_summary(payload: &Value) -> String {
    let amount = ["total_fen", "amount_fen"]
        .iter()
        .find_map(|field| payload.get(*field).and_then(Value::as_i64))
        .map(|fen| format!("{} yuan", yuan(fen)));
    let detail = match (
        payload.get("method").and_then(Value::as_str),
        payload.get("state").and_then(Value::as_str),
        payload.get("approved").and_then(Value::as_bool),
    ) {
        (Some(method), Some(state), _) => Some(format!("{method} {state}")),
        (_, _, Some(true)) => Some("approved".to_string()),
        (_, _, Some(false)) => Some("declined".to_string()),
        _ => payload
            .get("receipt_no")
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    [amount, detail]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many units a cart view holds (every demo item is sold by the unit).
fn item_count(cart: &Value) -> usize {
    cart["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|line| line["quantity"].as_str())
        .filter_map(|quantity| quantity.split('.').next()?.parse::<usize>().ok())
        .sum()
}

/// A JSON string's text ("" for anything else).
fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// "12.34" as 1234 fen (amounts the lane shows are never negative).
fn fen(yuan: &str) -> Option<i64> {
    let (whole, part) = yuan.split_once('.')?;
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(part) || part.len() != 2 {
        return None;
    }
    Some(whole.parse::<i64>().ok()? * 100 + part.parse::<i64>().ok()?)
}

fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", fen.abs() / 100, fen.abs() % 100)
}

/// The text between `start` and the next `end` in `page` (reading the sandbox's pages).
pub fn between<'a>(page: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = page.find(start)? + start.len();
    let to = page[from..].find(end)? + from;
    Some(&page[from..to])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_amounts_and_yuan_text() {
        assert_eq!(amount_ending_in(1_840, 91), 1_791);
        assert_eq!(amount_ending_in(1_891, 91), 1_891);
        assert_eq!(amount_ending_in(1_895, 91), 1_891);
        assert_eq!(fen("17.91"), Some(1_791));
        assert_eq!(fen("0.05"), Some(5));
        assert_eq!(fen("1.5"), None);
        assert_eq!(yuan(49), "0.49");
        assert_eq!(yuan(-1_205), "-12.05");
        let code = payment_code("28");
        assert_eq!(code.len(), 18);
        assert!(code.starts_with("28") && code.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(between("a<x>b</x>", "<x>", "</x>"), Some("b"));
    }
}
