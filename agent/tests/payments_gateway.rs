//! Lane payments end to end against the real gateway: a real lane (SQLite in a tempdir, the
//! lane service on a manual clock) enrolled through the real enrollment with the real gateway
//! started in process (`EmbeddedGateway`, on its own manual clock moved together with the
//! lane's), the real uplink (WebSocket pushes, journal sync) and the payments runtime with the
//! emulated PN532 on a pseudo-terminal. Each test asserts the outcome in the lane's database and
//! at the gateway (order state, paid and refunded fen, the sandbox channel's ledger).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lanepay_agent::api::{Command, CommandError, DiscountSpec, Event, PaymentAttemptView, Reply};
use lanepay_agent::clock::ManualClock;
use lanepay_agent::embedded_gateway::{EmbeddedGateway, EmbeddedOptions};
use lanepay_agent::enrollment::{self, EnrollRequest, InitRequest};
use lanepay_agent::payments::{self, PaymentsRuntime};
use lanepay_agent::service::{self, LaneHandle};
use lanepay_agent::store;
use lanepay_agent::uplink::{self, UplinkHandle};
use lanepay_checkout::Money;
use lanepay_drivers::emulator::nfc::{Pn532Emulator, card::VirtualCard};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _};
use tokio::sync::{broadcast, watch};

const COLA: &str = "6901234567892";
const COLA_FEN: i64 = 350;
/// Safety net on every wait for an event or a state; never a synchronisation.
const WAIT: Duration = Duration::from_secs(30);
const LOOK_AGAIN: Duration = Duration::from_millis(20);
/// The sandbox customer confirms a code payment within this long (gateway clock).
const SANDBOX_THINK_TIME_MAX_MS: i64 = 20_000;

/// A lane enrolled with an in-process gateway, both on manual clocks that move together.
struct Rig {
    dir: tempfile::TempDir,
    gateway: EmbeddedGateway,
    handle: LaneHandle,
    clock: ManualClock,
    runtime: Option<PaymentsRuntime>,
    uplink: Option<UplinkHandle>,
    stop_uplink: watch::Sender<bool>,
    events: broadcast::Receiver<Event>,
    reader: Pn532Emulator,
    codes_used: u64,
    /// The lane's own signed client to the gateway (to resend a request as the lane would).
    client: lanepay_sync::client::GatewayClient,
}

/// How the rig is started.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pushes {
    /// The runtime hears the gateway's payment pushes.
    Delivered,
    /// Pushes are lost: results come only by query.
    Lost,
}

impl Rig {
    async fn start(pushes: Pushes) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let start_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        let gateway = EmbeddedGateway::start(EmbeddedOptions {
            data_dir: dir.path().join("gateway"),
            manual_clock_start_ms: Some(start_ms),
        })
        .await
        .unwrap();
        let lane_dir = dir.path().join("lane");
        let init = InitRequest {
            data_dir: lane_dir.clone(),
            terminal_id: "T0000".into(),
            store_id: "S000".into(),
            merchant_id: "M000".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            demo_catalog: true,
        };
        tokio::task::spawn_blocking(move || enrollment::init(&init))
            .await
            .unwrap()
            .unwrap();
        let config_path = enrollment::enroll(&EnrollRequest {
            gateway_url: gateway.base_url().to_string(),
            token: gateway.enrollment_token().unwrap(),
            data_dir: lane_dir.clone(),
            ca_file: None,
            name: Some("payments test lane".into()),
        })
        .await
        .unwrap();
        let config = lanepay_config::AgentConfig::load(&config_path).unwrap();
        let (lane, key) = lanepay_agent::open_lane(&config).unwrap();
        let clock = ManualClock::new(start_ms);
        let handle = service::start(lane, Arc::new(clock.clone())).unwrap();
        let events = handle.subscribe();
        let reader = Pn532Emulator::spawn().unwrap();
        let settings = lanepay_agent::uplink_settings(&config).unwrap().unwrap();
        let client = lanepay_sync::client::GatewayClient::new(
            &settings.base_url,
            &settings.terminal_id,
            key.clone(),
            settings.gateway_key,
            settings.tls.clone(),
        )
        .unwrap();
        // The runtime subscribes to the lane's events right after the uplink starts, before
        // the uplink can say the link is up.
        let (stop_uplink, uplink_stopped) = watch::channel(false);
        let uplink = uplink::spawn(
            lanepay_agent::uplink_settings(&config).unwrap().unwrap(),
            key.clone(),
            Arc::new(clock.clone()),
            handle.clone(),
            uplink_stopped,
        );
        let runtime = payments::start_with_card_reader(
            &config,
            Some(reader.connstring()),
            handle.clone(),
            key,
            Arc::new(clock.clone()),
            (pushes == Pushes::Delivered).then(|| uplink.pushes()),
        )
        .await
        .unwrap();
        let rig = Rig {
            dir,
            gateway,
            handle,
            clock,
            runtime: Some(runtime),
            uplink: Some(uplink),
            stop_uplink,
            events,
            reader,
            codes_used: 0,
            client,
        };
        rig.wait_online(true).await;
        rig
    }

    fn runtime(&self) -> &PaymentsRuntime {
        self.runtime
            .as_ref()
            .expect("the payments runtime is running")
    }

    fn lane_db(&self) -> Connection {
        store::open_read_only(&store::db_path(&self.dir.path().join("lane"))).unwrap()
    }

    fn gateway_db(&self, file: &str) -> Connection {
        Connection::open_with_flags(
            self.dir.path().join("gateway").join(file),
            OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    /// Waits until the payments runtime sees the link as `online`.
    async fn wait_online(&self, online: bool) {
        self.eventually(&format!("the lane online = {online}"), || {
            (self.runtime().is_online() == online).then_some(())
        })
        .await;
    }

    /// Looks at `probe` until it gives a value (a state in a database that has no event).
    async fn eventually<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = probe() {
                return found;
            }
            assert!(tokio::time::Instant::now() < deadline, "never saw {what}");
            tokio::time::sleep(LOOK_AGAIN).await;
        }
    }

    /// Moves both clocks and lets the runtime look again.
    fn advance(&self, ms: i64) {
        self.clock.advance_ms(ms);
        self.gateway.advance_ms(ms).unwrap();
        self.runtime().wake();
    }

    async fn run(&self, command: Command) -> Result<Reply, CommandError> {
        self.handle.execute(command).await
    }

    /// Starts a sale of colas discounted to exactly `amount_fen` (the sandbox picks its
    /// scenario by the fen part: .91 confirms late, .92 never confirms, .93 commits without
    /// answering, .94 declines). Returns the sale id.
    async fn sell(&self, amount_fen: i64) -> String {
        let colas = (amount_fen + COLA_FEN - 1) / COLA_FEN;
        let mut cart = None;
        for _ in 0..colas {
            cart = Some(self.run(Command::Scan { code: COLA.into() }).await.unwrap());
        }
        let Some(Reply::Cart(mut cart)) = cart else {
            panic!("not a cart")
        };
        let discount_fen = fen(&cart.total) - amount_fen;
        if discount_fen > 0 {
            let Reply::Cart(discounted) = self
                .run(Command::OrderDiscount {
                    discount: Some(DiscountSpec::Amount {
                        value: Money::from_fen(discount_fen).to_string(),
                    }),
                })
                .await
                .unwrap()
            else {
                panic!("not a cart")
            };
            cart = discounted;
        }
        assert_eq!(fen(&cart.total), amount_fen, "{cart:?}");
        cart.sale_id
    }

    /// A fresh Alipay payment code (codes are single use at the sandbox).
    fn next_code(&mut self) -> String {
        self.codes_used += 1;
        format!("28{:016}", 1_234_567_890_000_000 + self.codes_used)
    }

    async fn wait_event<T>(&mut self, what: &str, mut pred: impl FnMut(&Event) -> Option<T>) -> T {
        let events = &mut self.events;
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if let Some(found) = pred(&event) {
                            return found;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(error) => panic!("events closed: {error}"),
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("never saw {what}"))
    }

    async fn wait_payment(&mut self, sale_id: &str, state: &str) -> PaymentAttemptView {
        let (sale_id, state) = (sale_id.to_string(), state.to_string());
        self.wait_event(
            &format!("payment of {sale_id} {state}"),
            |event| match event {
                Event::PaymentChanged(view) if view.sale_id == sale_id && view.state == state => {
                    Some(view.clone())
                }
                _ => None,
            },
        )
        .await
    }

    async fn wait_sale_completed(&mut self, sale_id: &str) -> String {
        let sale_id = sale_id.to_string();
        self.wait_event(&format!("sale {sale_id} completed"), |event| match event {
            Event::SaleCompleted(tender) if tender.sale_id == sale_id => {
                Some(tender.receipt_no.clone())
            }
            _ => None,
        })
        .await
    }

    /// The lane's row of an attempt: (state, flow).
    fn lane_attempt(&self, attempt_id: &str) -> (String, String) {
        self.lane_db()
            .query_row(
                "SELECT state, flow FROM payment_attempts WHERE attempt_id = ?1",
                [attempt_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }

    /// Waits until the attempt's query due now was made and answered (its next call is due
    /// later than the lane's clock).
    async fn wait_query_answered(&self, attempt_id: &str) {
        let now_ms = lanepay_agent::clock::Clock::now_ms(&self.clock);
        self.eventually(&format!("the query of {attempt_id} answered"), || {
            let next_at_ms: i64 = self
                .lane_db()
                .query_row(
                    "SELECT next_at_ms FROM payment_attempts WHERE attempt_id = ?1",
                    [attempt_id],
                    |r| r.get(0),
                )
                .ok()?;
            (next_at_ms > now_ms).then_some(())
        })
        .await;
    }

    /// The gateway's order for a lane attempt: (state, paid_fen, refunded_fen, trade_no).
    fn gateway_order(&self, out_trade_no: &str) -> Option<GatewayOrder> {
        self.gateway_db("gateway.sqlite")
            .query_row(
                "SELECT state, paid_fen, refunded_fen, trade_no FROM orders WHERE out_trade_no = ?1",
                [out_trade_no],
                |r| {
                    Ok(GatewayOrder {
                        state: r.get(0)?,
                        paid_fen: r.get(1)?,
                        refunded_fen: r.get(2)?,
                        trade_no: r.get(3)?,
                    })
                },
            )
            .optional()
            .unwrap()
    }

    /// Waits until the gateway's order for `out_trade_no` is in `state`.
    async fn wait_gateway_state(&self, out_trade_no: &str, state: &str) -> GatewayOrder {
        self.eventually(&format!("{out_trade_no} {state} at the gateway"), || {
            self.gateway_order(out_trade_no)
                .filter(|o| o.state == state)
        })
        .await
    }

    /// The sandbox channel's ledger for a trade: (kind, amount_fen), in order.
    fn channel_ledger(&self, trade_no: &str) -> Vec<(String, i64)> {
        let conn = self.gateway_db("sandbox.sqlite");
        let mut statement = conn
            .prepare("SELECT kind, amount_fen FROM sandbox_ledger WHERE trade_no = ?1 ORDER BY at_ms, kind")
            .unwrap();
        statement
            .query_map([trade_no], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Stops the uplink so nothing tells the runtime the link changed.
    async fn stop_uplink(&mut self) {
        let _ = self.stop_uplink.send(true);
        if let Some(uplink) = self.uplink.take() {
            let _ = uplink.join().await;
        }
    }

    /// Stops the payments runtime (its state stays in the database).
    async fn stop_payments(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.stop().await;
        }
    }

    /// Moves only the gateway's clock (the sandbox customer's think time passes there; the
    /// lane's next query is not yet due).
    fn advance_gateway(&self, ms: i64) {
        self.gateway.advance_ms(ms).unwrap();
    }

    /// Makes the runtime believe the link is `online` (what the uplink would publish).
    async fn claim_online(&self, online: bool) {
        self.handle
            .publish(Event::SyncStatus(lanepay_agent::api::SyncStatusView {
                online,
                ..Default::default()
            }));
        self.wait_online(online).await;
    }

    /// A card tapped on the reader, then `pay_card`.
    async fn tap_and_pay(&self, card: VirtualCard) {
        self.reader.remove();
        self.reader.tap(card);
        let Reply::Payment(waiting) = self.run(Command::PayCard).await.unwrap() else {
            panic!("not a payment")
        };
        assert_eq!(waiting.step, "tap card");
    }

    /// The refunds the lane owes through the gateway: (state, amount_fen) by refund_no order.
    fn lane_gateway_refunds(&self, out_trade_no: &str) -> Vec<(String, i64)> {
        let conn = self.lane_db();
        let mut statement = conn
            .prepare("SELECT state, amount_fen FROM gateway_refunds WHERE out_trade_no = ?1 ORDER BY refund_no")
            .unwrap();
        statement
            .query_map([out_trade_no], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    async fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.stop().await;
        }
        self.stop_uplink().await;
        self.gateway.stop().await.unwrap();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GatewayOrder {
    state: String,
    paid_fen: i64,
    refunded_fen: i64,
    trade_no: String,
}

fn fen(yuan: &str) -> i64 {
    Money::parse_yuan(yuan).unwrap().fen()
}

/// Every text value of every table of the lane's database, as one string.
fn all_lane_text(db: &Path) -> String {
    let conn = store::open_read_only(db).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut text = String::new();
    for table in tables {
        let mut statement = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = statement.column_count();
        let mut rows = statement.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for column in 0..columns {
                match row.get_ref(column).unwrap() {
                    rusqlite::types::ValueRef::Text(bytes)
                    | rusqlite::types::ValueRef::Blob(bytes) => {
                        text.push_str(&String::from_utf8_lossy(bytes));
                        text.push('\n');
                    }
                    _ => {}
                }
            }
        }
    }
    text
}

fn lane_db_path(rig: &Rig) -> PathBuf {
    store::db_path(&rig.dir.path().join("lane"))
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

// ---- Wallet payment codes ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_code_paid_at_once_is_one_paid_order_at_the_gateway_and_one_channel_pay() {
    let mut rig = Rig::start(Pushes::Delivered).await;
    let sale_id = rig.sell(700).await;
    let code = rig.next_code();
    rig.run(Command::PayWalletCode { code }).await.unwrap();
    let paid = rig.wait_payment(&sale_id, "paid").await;
    rig.wait_sale_completed(&sale_id).await;
    assert_eq!(rig.lane_attempt(&paid.attempt_id).0, "paid");
    let order = rig.gateway_order(&paid.attempt_id).unwrap();
    assert_eq!((order.state.as_str(), order.paid_fen), ("SUCCESS", 700));
    assert_eq!(
        rig.channel_ledger(&order.trade_no),
        vec![("PAY".into(), 700)]
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_confirmation_arrives_by_push_without_moving_the_clock() {
    let mut rig = Rig::start(Pushes::Delivered).await;
    let sale_id = rig.sell(291).await;
    let code = rig.next_code();
    rig.run(Command::PayWalletCode { code }).await.unwrap();
    let waiting = rig.wait_payment(&sale_id, "waiting").await;
    rig.wait_gateway_state(&waiting.attempt_id, "PAYING").await;
    // A second code for the same tender is refused while the first is unresolved.
    let second = rig.next_code();
    assert!(
        rig.run(Command::PayWalletCode { code: second })
            .await
            .is_err()
    );
    // The customer confirms on the phone within the sandbox's think time (3-20 s); only the
    // gateway's clock moves, so the lane hears it by push, not by its own query.
    rig.advance_gateway(SANDBOX_THINK_TIME_MAX_MS);
    rig.wait_payment(&sale_id, "paid").await;
    rig.wait_sale_completed(&sale_id).await;
    let order = rig.gateway_order(&waiting.attempt_id).unwrap();
    assert_eq!((order.state.as_str(), order.paid_fen), ("SUCCESS", 291));
    assert_eq!(
        rig.channel_ledger(&order.trade_no),
        vec![("PAY".into(), 291)]
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_confirmation_whose_push_is_lost_is_found_by_the_5_s_query() {
    let mut rig = Rig::start(Pushes::Lost).await;
    let sale_id = rig.sell(291).await;
    let code = rig.next_code();
    rig.run(Command::PayWalletCode { code }).await.unwrap();
    let waiting = rig.wait_payment(&sale_id, "waiting").await;
    rig.wait_gateway_state(&waiting.attempt_id, "PAYING").await;
    rig.advance_gateway(SANDBOX_THINK_TIME_MAX_MS);
    rig.wait_gateway_state(&waiting.attempt_id, "SUCCESS").await;
    // No push reaches the runtime: the lane still waits until its next query is due.
    assert_eq!(rig.lane_attempt(&waiting.attempt_id).0, "waiting");
    rig.advance(5_000);
    rig.wait_payment(&sale_id, "paid").await;
    rig.wait_sale_completed(&sale_id).await;
    assert_eq!(rig.lane_attempt(&waiting.attempt_id).0, "paid");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_never_confirmed_is_reversed_after_60_s_and_nothing_is_charged() {
    let mut rig = Rig::start(Pushes::Delivered).await;
    let sale_id = rig.sell(292).await;
    let code = rig.next_code();
    rig.run(Command::PayWalletCode { code }).await.unwrap();
    let waiting = rig.wait_payment(&sale_id, "waiting").await;
    rig.wait_gateway_state(&waiting.attempt_id, "PAYING").await;
    // Eleven queries at 5 s steps (55 s): still waiting, nothing reversed.
    for _ in 0..11 {
        rig.advance(5_000);
        rig.wait_query_answered(&waiting.attempt_id).await;
        assert_eq!(rig.lane_attempt(&waiting.attempt_id).0, "waiting");
        assert_eq!(
            rig.gateway_order(&waiting.attempt_id).unwrap().state,
            "PAYING"
        );
    }
    rig.advance(5_000);
    let reversed = rig.wait_payment(&sale_id, "reversed").await;
    assert!(reversed.message.unwrap().contains("nothing was charged"));
    let order = rig.wait_gateway_state(&waiting.attempt_id, "REVOKED").await;
    assert_eq!(order.paid_fen, 0);
    assert!(
        rig.channel_ledger(&order.trade_no)
            .iter()
            .all(|(kind, _)| kind != "PAY")
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cashier_cancels_a_waiting_code_and_the_reverse_waits_15_s_after_pay() {
    let mut rig = Rig::start(Pushes::Delivered).await;
    let sale_id = rig.sell(292).await;
    let code = rig.next_code();
    rig.run(Command::PayWalletCode { code }).await.unwrap();
    let waiting = rig.wait_payment(&sale_id, "waiting").await;
    rig.advance(2_000);
    rig.run(Command::CancelPayment).await.unwrap();
    rig.wait_payment(&sale_id, "reversing").await;
    // Not before 15 s after the pay request: at 14 s no reverse is due, so none is sent (a
    // negative check; the runtime is given a moment to do what it must not).
    rig.advance(12_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.gateway_order(&waiting.attempt_id).unwrap().state,
        "PAYING"
    );
    assert_eq!(rig.lane_attempt(&waiting.attempt_id).0, "reversing");
    rig.advance(1_000);
    let reversed = rig.wait_payment(&sale_id, "reversed").await;
    assert!(reversed.message.unwrap().contains("cancelled"));
    let order = rig.wait_gateway_state(&waiting.attempt_id, "REVOKED").await;
    assert_eq!(order.paid_fen, 0);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pay_left_without_answer_is_resolved_by_query_and_a_resend_never_charges_twice() {
    let mut rig = Rig::start(Pushes::Delivered).await;
    // .93: the channel takes the money but the gateway hears nothing back.
    let sale_id = rig.sell(293).await;
    let code = rig.next_code();
    rig.run(Command::PayWalletCode { code: code.clone() })
        .await
        .unwrap();
    let attempt = rig.wait_payment(&sale_id, "waiting").await;
    rig.advance(5_000);
    rig.wait_payment(&sale_id, "paid").await;
    rig.wait_sale_completed(&sale_id).await;
    let order = rig.gateway_order(&attempt.attempt_id).unwrap();
    assert_eq!((order.state.as_str(), order.paid_fen), ("SUCCESS", 293));
    // The lane's retry of the same pay (same out_trade_no) finds the same order.
    let again = rig
        .client
        .pay_code(
            &lanepay_sync::payment::PayCodeRequest {
                out_trade_no: attempt.attempt_id.clone(),
                amount_fen: 293,
                auth_code: code,
                subject: format!("Lanepay sale {sale_id}"),
            },
            lanepay_agent::clock::Clock::now_ms(&rig.clock),
        )
        .await
        .unwrap();
    assert_eq!(again.trade_no, order.trade_no);
    assert_eq!(again.state, "SUCCESS");
    let orders: i64 = rig
        .gateway_db("gateway.sqlite")
        .query_row(
            "SELECT COUNT(*) FROM orders WHERE out_trade_no = ?1",
            [&attempt.attempt_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orders, 1);
    assert_eq!(
        rig.channel_ledger(&order.trade_no),
        vec![("PAY".into(), 293)]
    );
    rig.stop().await;
}

// ---- Dynamic QR ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_qr_paid_on_the_sandbox_page_completes_the_sale_by_push() {
    let mut rig = Rig::start(Pushes::Delivered).await;
    let sale_id = rig.sell(650).await;
    rig.run(Command::StartDynamicQr {
        wallet: "alipay".into(),
    })
    .await
    .unwrap();
    let shown = rig.wait_payment(&sale_id, "waiting").await;
    let pay_url = shown.qr_text.clone().unwrap();
    let page = rig.gateway.get_page(&pay_url).await.unwrap();
    assert!(page.contains("6.50"), "{page}");
    let action = between(&page, "<form method=\"post\" action=\"", "\"").unwrap();
    rig.gateway
        .post_page(&format!("{}{action}", rig.gateway.base_url()))
        .await
        .unwrap();
    rig.wait_payment(&sale_id, "paid").await;
    rig.wait_sale_completed(&sale_id).await;
    let order = rig.gateway_order(&shown.attempt_id).unwrap();
    assert_eq!((order.state.as_str(), order.paid_fen), ("SUCCESS", 650));
    assert_eq!(
        rig.channel_ledger(&order.trade_no),
        vec![("PAY".into(), 650)]
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_qr_nobody_pays_is_closed_at_the_gateway_on_timeout() {
    let mut rig = Rig::start(Pushes::Delivered).await;
    let sale_id = rig.sell(650).await;
    rig.run(Command::StartDynamicQr {
        wallet: "wechat".into(),
    })
    .await
    .unwrap();
    let shown = rig.wait_payment(&sale_id, "waiting").await;
    let deadline_ms = shown.deadline_ms.unwrap();
    let now_ms = lanepay_agent::clock::Clock::now_ms(&rig.clock);
    rig.advance(deadline_ms - now_ms);
    let closed = rig.wait_payment(&sale_id, "closed").await;
    assert!(closed.message.unwrap().contains("closed"));
    let order = rig.wait_gateway_state(&shown.attempt_id, "CLOSED").await;
    assert_eq!(order.paid_fen, 0);
    // The sale is still open and owes everything.
    let Reply::Cart(cart) = rig.run(Command::GetCart).await.unwrap() else {
        panic!()
    };
    assert_eq!(fen(&cart.remaining), 650);
    rig.stop().await;
}

// ---- Contactless card ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_online_is_approved_or_declined_and_only_its_masked_pan_is_kept() {
    let mut rig = Rig::start(Pushes::Delivered).await;
    let card = VirtualCard::default_test_card();
    let pan = card.pan.clone();
    let sale_id = rig.sell(1_050).await;
    rig.tap_and_pay(card.clone()).await;
    let paid = rig.wait_payment(&sale_id, "paid").await;
    rig.wait_sale_completed(&sale_id).await;
    let masked = paid.masked_pan.clone().unwrap();
    assert_eq!(
        masked,
        format!("{}******{}", &pan[..6], &pan[pan.len() - 4..])
    );
    let order = rig.gateway_order(&paid.attempt_id).unwrap();
    assert_eq!((order.state.as_str(), order.paid_fen), ("SUCCESS", 1_050));
    assert_eq!(
        rig.channel_ledger(&order.trade_no),
        vec![("PAY".into(), 1_050)]
    );
    // .94: the acquirer declines; the tender fails with the reason and the sale stays open.
    let sale_id = rig.sell(394).await;
    rig.tap_and_pay(card).await;
    let declined = rig.wait_payment(&sale_id, "failed").await;
    assert!(declined.message.is_some(), "{declined:?}");
    let order = rig.gateway_order(&declined.attempt_id).unwrap();
    assert_eq!(order.paid_fen, 0);
    assert_ne!(order.state, "SUCCESS");
    let Reply::Cart(cart) = rig.run(Command::GetCart).await.unwrap() else {
        panic!()
    };
    assert_eq!(fen(&cart.remaining), 394);
    rig.stop_payments().await;
    assert!(!all_lane_text(&lane_db_path(&rig)).contains(&pan));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_cards_are_stored_within_the_limits_refused_over_them_and_forwarded_on_reconnect() {
    let mut rig = Rig::start(Pushes::Delivered).await;
    let card = VirtualCard::default_test_card();
    let pan = card.pan.clone();
    rig.gateway.suspend().await.unwrap();
    rig.wait_online(false).await;
    // Within the limits: stored, the sale completes at once.
    let approved_sale = rig.sell(700).await;
    rig.tap_and_pay(card.clone()).await;
    let approved = rig.wait_payment(&approved_sale, "stored").await;
    rig.wait_sale_completed(&approved_sale).await;
    // .94: stored now, declined when forwarded.
    let declined_sale = rig.sell(394).await;
    rig.tap_and_pay(card.clone()).await;
    let declined = rig.wait_payment(&declined_sale, "stored").await;
    rig.wait_sale_completed(&declined_sale).await;
    let Reply::StoredCards(exposure) = rig.run(Command::ForwardStoredCards).await.unwrap() else {
        panic!()
    };
    assert_eq!(exposure.stored_count, 2);
    assert_eq!(fen(&exposure.offline_exposure), 1_094);
    // Over the per-payment limit (500.00 by default): refused with the reason.
    let over_sale = rig.sell(50_050).await;
    rig.tap_and_pay(card.clone()).await;
    let refused = rig.wait_payment(&over_sale, "failed").await;
    assert!(
        refused
            .message
            .as_deref()
            .unwrap()
            .contains("over the offline limit of 500.00 per card payment"),
        "{refused:?}"
    );
    rig.run(Command::VoidSale).await.unwrap();
    // Back online: both are forwarded; the decline is an event and a journal entry.
    rig.gateway.resume().await.unwrap();
    let reason = rig
        .wait_event("the forwarded decline", |event| match event {
            Event::StoredCardDeclined {
                attempt_id, reason, ..
            } if *attempt_id == declined.attempt_id => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.contains("declined after forwarding"), "{reason}");
    let order = rig
        .wait_gateway_state(&approved.attempt_id, "SUCCESS")
        .await;
    assert_eq!(order.paid_fen, 700);
    rig.eventually("the approved card paid in the lane", || {
        (rig.lane_attempt(&approved.attempt_id).0 == "paid").then_some(())
    })
    .await;
    assert_eq!(rig.lane_attempt(&declined.attempt_id).0, "declined");
    assert_eq!(rig.gateway_order(&declined.attempt_id).unwrap().paid_fen, 0);
    let forwarded: Vec<String> = rig
        .lane_db()
        .prepare("SELECT payload FROM journal WHERE kind = 'card_forwarded' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|p| String::from_utf8(p.unwrap()).unwrap())
        .collect();
    assert_eq!(forwarded.len(), 2, "{forwarded:?}");
    assert_eq!(
        forwarded
            .iter()
            .filter(|p| p.contains("\"approved\":false"))
            .count(),
        1
    );
    rig.stop_payments().await;
    assert!(!all_lane_text(&lane_db_path(&rig)).contains(&pan));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_card_that_cannot_reach_the_gateway_is_stored_and_forwarded_instead_of_failing() {
    let mut rig = Rig::start(Pushes::Delivered).await;
    // The lane believes it is online, but the gateway refuses connections.
    rig.stop_uplink().await;
    rig.gateway.suspend().await.unwrap();
    rig.claim_online(true).await;
    let sale_id = rig.sell(800).await;
    rig.tap_and_pay(VirtualCard::default_test_card()).await;
    let stored = rig.wait_payment(&sale_id, "stored").await;
    rig.wait_sale_completed(&sale_id).await;
    assert!(
        stored
            .message
            .as_deref()
            .unwrap()
            .contains("could not be reached"),
        "{stored:?}"
    );
    assert_eq!(
        rig.lane_attempt(&stored.attempt_id),
        ("stored".into(), "card_stored".into())
    );
    // The same attempt (same out_trade_no) is forwarded when the gateway is back.
    rig.gateway.resume().await.unwrap();
    rig.runtime().wake();
    let order = rig.wait_gateway_state(&stored.attempt_id, "SUCCESS").await;
    assert_eq!(order.paid_fen, 800);
    rig.eventually("the forwarded card paid in the lane", || {
        (rig.lane_attempt(&stored.attempt_id).0 == "paid").then_some(())
    })
    .await;
    let stored_at: Option<i64> = rig
        .gateway_db("gateway.sqlite")
        .query_row(
            "SELECT stored_at_ms FROM terminal_orders WHERE trade_no = ?1",
            [&order.trade_no],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        stored_at.is_some(),
        "the gateway knows it was stored offline"
    );
    rig.stop().await;
}

// ---- Signed offline QR ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_qr_paid_on_the_gateway_page_completes_the_sale_is_matched_once_and_not_replayed()
 {
    let mut rig = Rig::start(Pushes::Delivered).await;
    rig.gateway.suspend().await.unwrap();
    rig.wait_online(false).await;
    let sale_id = rig.sell(560).await;
    let Reply::Payment(shown) = rig.run(Command::StartOfflineQr).await.unwrap() else {
        panic!()
    };
    let order_url = shown.qr_text.clone().unwrap();
    // The customer's phone reaches the gateway over its own network.
    rig.gateway.resume().await.unwrap();
    let page = rig.gateway.get_page(&order_url).await.unwrap();
    assert!(page.contains("5.60"), "{page}");
    let trade_no = between(&page, "href=\"/sandbox/wallet/", "\"")
        .unwrap()
        .to_string();
    rig.gateway.wallet_confirm(&trade_no).await.unwrap();
    let paid_page = rig.gateway.get_page(&order_url).await.unwrap();
    let confirmation = between(&paid_page, "<code id=\"confirmation\">", "</code>")
        .unwrap()
        .to_string();
    rig.run(Command::Scan {
        code: confirmation.clone(),
    })
    .await
    .unwrap();
    rig.wait_payment(&sale_id, "paid").await;
    rig.wait_sale_completed(&sale_id).await;
    // Replayed on the next sale's offline QR: refused, nothing paid.
    rig.gateway.suspend().await.unwrap();
    rig.wait_online(false).await;
    let next_sale = rig.sell(560).await;
    rig.run(Command::StartOfflineQr).await.unwrap();
    let replay = rig
        .run(Command::ScanOfflineConfirmation { text: confirmation })
        .await;
    assert!(replay.is_err(), "{replay:?}");
    let Reply::Cart(cart) = rig.run(Command::GetCart).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        (cart.sale_id.as_str(), fen(&cart.remaining)),
        (next_sale.as_str(), 560)
    );
    // On sync the gateway matches the journaled sale to its payment once.
    rig.gateway.resume().await.unwrap();
    rig.wait_online(true).await;
    let order = rig.gateway_order(&shown.attempt_id).unwrap();
    assert_eq!((order.state.as_str(), order.paid_fen), ("SUCCESS", 560));
    let matches = rig
        .eventually("the offline QR sale matched at the gateway", || {
            let count: i64 = rig
                .gateway_db("terminals.sqlite")
                .query_row(
                    "SELECT COUNT(*) FROM offline_qr_matches WHERE trade_no = ?1",
                    [&trade_no],
                    |r| r.get(0),
                )
                .ok()?;
            (count > 0).then_some(count)
        })
        .await;
    assert_eq!(matches, 1);
    rig.stop().await;
}

// ---- Refunds ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_refunds_are_partial_and_multiple_and_never_above_what_was_paid() {
    let mut rig = Rig::start(Pushes::Delivered).await;
    let sale_id = rig.sell(1_000).await;
    let code = rig.next_code();
    rig.run(Command::PayWalletCode { code }).await.unwrap();
    let paid = rig.wait_payment(&sale_id, "paid").await;
    let receipt_no = rig.wait_sale_completed(&sale_id).await;
    for amount in ["3.00", "5.00"] {
        rig.run(Command::Refund {
            receipt_no: receipt_no.clone(),
            lines: Vec::new(),
            amount: Some(amount.into()),
            reason: "returned".into(),
        })
        .await
        .unwrap();
    }
    let over = rig
        .run(Command::Refund {
            receipt_no: receipt_no.clone(),
            lines: Vec::new(),
            amount: Some("2.01".into()),
            reason: "too much".into(),
        })
        .await;
    assert!(over.is_err(), "{over:?}");
    rig.eventually("both refunds done", || {
        let refunds = rig.lane_gateway_refunds(&paid.attempt_id);
        (refunds.len() == 2 && refunds.iter().all(|(state, _)| state == "done")).then_some(())
    })
    .await;
    let order = rig
        .eventually("800 fen refunded at the gateway", || {
            rig.gateway_order(&paid.attempt_id)
                .filter(|o| o.refunded_fen == 800)
        })
        .await;
    assert_eq!(order.paid_fen, 1_000);
    let mut ledger = rig.channel_ledger(&order.trade_no);
    ledger.sort();
    assert_eq!(
        ledger,
        vec![
            ("PAY".into(), 1_000),
            ("REFUND".into(), 300),
            ("REFUND".into(), 500)
        ]
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_refund_requested_offline_is_journaled_and_forwarded_when_online() {
    let mut rig = Rig::start(Pushes::Delivered).await;
    let sale_id = rig.sell(900).await;
    rig.tap_and_pay(VirtualCard::default_test_card()).await;
    let paid = rig.wait_payment(&sale_id, "paid").await;
    let receipt_no = rig.wait_sale_completed(&sale_id).await;
    rig.gateway.suspend().await.unwrap();
    rig.wait_online(false).await;
    let Reply::Refund(refund) = rig
        .run(Command::Refund {
            receipt_no,
            lines: Vec::new(),
            amount: Some("4.00".into()),
            reason: "returned while offline".into(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(fen(&refund.total), 400);
    let journaled: i64 = rig
        .lane_db()
        .query_row(
            "SELECT COUNT(*) FROM journal WHERE seq = ?1",
            [i64::try_from(refund.journal_seq).unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(journaled, 1);
    assert_eq!(
        rig.lane_gateway_refunds(&paid.attempt_id),
        vec![("pending".to_string(), 400)]
    );
    assert_eq!(rig.gateway_order(&paid.attempt_id).unwrap().refunded_fen, 0);
    rig.gateway.resume().await.unwrap();
    rig.wait_online(true).await;
    let order = rig
        .eventually("the refund forwarded to the gateway", || {
            rig.gateway_order(&paid.attempt_id)
                .filter(|o| o.refunded_fen == 400)
        })
        .await;
    assert_eq!(order.paid_fen, 900);
    rig.eventually("the refund done in the lane", || {
        (rig.lane_gateway_refunds(&paid.attempt_id) == vec![("done".to_string(), 400)])
            .then_some(())
    })
    .await;
    rig.stop().await;
}
