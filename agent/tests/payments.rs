//! Payments at the lane: the real lane on a real SQLite file, its payments runtime on a
//! manual clock, the real PN532 emulator on a pseudo-terminal for cards, signed
//! configuration and signed offline QR confirmations. The gateway is a scripted stand-in
//! implementing `PaymentGateway` (answers queued per test), so each rule of the state
//! machines (late confirm, unknown then reverse, crash and resume, stored card decline) is
//! exercised deterministically.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use lanepay_agent::api::{Command, Event, PaymentAttemptView, Reply, SyncStatusView};
use lanepay_agent::clock::ManualClock;
use lanepay_agent::lane::{Lane, LaneSettings};
use lanepay_agent::payments::{self, GatewayRequest, PaymentGateway, PaymentsSettings};
use lanepay_agent::service::{self, LaneHandle};
use lanepay_agent::store::{self, Durability, catalog};
use lanepay_agent::{remote_config, store::payments as rows};
use lanepay_config::AgentConfig;
use lanepay_sync::payment::{
    OfflineConfirmation, PaymentCallError, PaymentView, TerminalRefundRequest, TerminalRefundView,
    encode_confirmation,
};
use rusqlite::Connection;
use tokio::sync::broadcast;

const NOW: i64 = 1_795_000_000_000;
const COLA: &str = "6901234567892";
/// An Alipay payment code (16-24 digits, prefix 25-30).
const ALIPAY_CODE: &str = "281234567890123456";
const WAIT: Duration = Duration::from_secs(20);

fn settings() -> LaneSettings {
    let config = AgentConfig::new_default(
        "T0001",
        "S001",
        "M1001",
        "/nonexistent",
        "0123456789abcdef0123",
    )
    .unwrap();
    LaneSettings::from_config(&config)
}

fn lane_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn gateway_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

const CARD_SEAL_SECRET: [u8; 32] = [9; 32];

/// Opens the lane; the first time, applies a gateway-signed configuration (card seal key,
/// limits) the way enrollment does.
fn open_lane(dir: &Path, limits: Option<lanepay_sync::config::OfflineCardLimits>) -> Lane {
    let mut conn = store::open(&store::db_path(dir), Durability::Full).unwrap();
    if catalog::count(&conn).unwrap() == 0 {
        catalog::upsert(&conn, &catalog::demo_products()).unwrap();
        let gateway = gateway_key();
        store::set_meta(
            &conn,
            "gateway_keys",
            &hex::encode(gateway.verifying_key().to_bytes()),
        )
        .unwrap();
        let seal_public = lanepay_sync::payment::card_seal_public_key(&CARD_SEAL_SECRET);
        let mut config = lanepay_sync::config::TerminalConfig::with_defaults(
            1,
            NOW,
            "S001",
            &hex::encode(seal_public),
        );
        if let Some(limits) = limits {
            config.offline_card = limits;
        }
        let signed = lanepay_sync::config::sign_config(&config, &gateway);
        let key = lane_key();
        remote_config::apply(
            &mut conn,
            &remote_config::LaneIdentity {
                key: &key,
                terminal_id: "T0001",
                store_id: "S001",
                gateway_key: &gateway.verifying_key(),
            },
            &signed,
            NOW,
        )
        .unwrap();
    }
    Lane::open(conn, lane_key(), settings()).unwrap()
}

/// The gateway stand-in: answers queued by the test, in order; every request is recorded.
#[derive(Default)]
struct ScriptedGateway {
    answers: Mutex<VecDeque<Result<PaymentView, PaymentCallError>>>,
    requests: Mutex<Vec<String>>,
    refunds: Mutex<Vec<TerminalRefundRequest>>,
}

impl ScriptedGateway {
    fn answer(&self, answer: Result<PaymentView, PaymentCallError>) {
        self.answers.lock().unwrap().push_back(answer);
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl PaymentGateway for ScriptedGateway {
    fn call(
        &self,
        request: GatewayRequest,
        _now_ms: i64,
    ) -> Pin<Box<dyn Future<Output = Result<PaymentView, PaymentCallError>> + Send + '_>> {
        let name = match &request {
            GatewayRequest::PayCode(r) => format!("pay_code {} {}", r.out_trade_no, r.amount_fen),
            GatewayRequest::CreateQr(r) => format!("create_qr {} {}", r.out_trade_no, r.pay_type),
            GatewayRequest::PayCard(r) => format!(
                "pay_card {} {} stored={}",
                r.out_trade_no,
                r.masked_pan,
                r.stored_at_ms.is_some()
            ),
            GatewayRequest::Query(r) => format!("query {}", r.out_trade_no),
            GatewayRequest::Reverse(r) => format!("reverse {}", r.out_trade_no),
            GatewayRequest::Close(r) => format!("close {}", r.out_trade_no),
        };
        self.requests.lock().unwrap().push(name);
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(PaymentCallError::Unknown("no answer".into())));
        Box::pin(async move { answer })
    }

    fn refund(
        &self,
        request: TerminalRefundRequest,
        _now_ms: i64,
    ) -> Pin<Box<dyn Future<Output = Result<TerminalRefundView, PaymentCallError>> + Send + '_>>
    {
        let view = TerminalRefundView {
            refund_no: request.refund_no.clone(),
            out_trade_no: request.out_trade_no.clone(),
            amount_fen: request.amount_fen,
            state: "SUCCESS".into(),
        };
        self.refunds.lock().unwrap().push(request);
        Box::pin(async move { Ok(view) })
    }
}

fn view(out_trade_no: &str, state: &str, amount_fen: i64) -> PaymentView {
    PaymentView {
        out_trade_no: out_trade_no.into(),
        trade_no: format!("G-{out_trade_no}"),
        pay_type: "alipay".into(),
        state: state.into(),
        amount_fen,
        paid_fen: if state == "SUCCESS" { amount_fen } else { 0 },
        pay_url: None,
        paid_at_ms: None,
        failure: (state == "FAILED").then(|| "card reported lost".to_string()),
    }
}

struct Harness {
    handle: LaneHandle,
    clock: ManualClock,
    gateway: Arc<ScriptedGateway>,
    runtime: payments::PaymentsRuntime,
    events: broadcast::Receiver<Event>,
}

async fn start(lane: Lane, nfc: Option<String>) -> Harness {
    let clock = ManualClock::new(NOW);
    let handle = service::start(lane, Arc::new(clock.clone())).unwrap();
    let events = handle.subscribe();
    let gateway = Arc::new(ScriptedGateway::default());
    let runtime = payments::start(
        handle.clone(),
        Some(gateway.clone() as Arc<dyn PaymentGateway>),
        Arc::new(clock.clone()),
        PaymentsSettings {
            gateway_url: Some("http://127.0.0.1:9".into()),
            merchant_id: "M1001".into(),
            gateway_key: Some(gateway_key().verifying_key()),
            nfc_connstring: nfc,
        },
        None,
    )
    .await
    .unwrap();
    Harness {
        handle,
        clock,
        gateway,
        runtime,
        events,
    }
}

impl Harness {
    /// The uplink's word on the link, as it publishes it.
    async fn set_online(&mut self, online: bool) {
        self.handle.publish(Event::SyncStatus(SyncStatusView {
            online,
            ..SyncStatusView::default()
        }));
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.runtime.is_online() != online {
            assert!(
                tokio::time::Instant::now() < deadline,
                "online flag never changed"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn run(&self, command: Command) -> Result<Reply, lanepay_agent::api::CommandError> {
        self.handle.execute(command).await
    }

    async fn scan(&self, code: &str) -> Result<Reply, lanepay_agent::api::CommandError> {
        self.run(Command::Scan { code: code.into() }).await
    }

    /// Waits for an event matching `pred` (safety timeout only).
    async fn wait_for<T>(&mut self, mut pred: impl FnMut(&Event) -> Option<T>) -> T {
        let wait = async {
            loop {
                match self.events.recv().await {
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
            .expect("the expected event did not come")
    }

    async fn wait_for_payment_state(&mut self, state: &str) -> PaymentAttemptView {
        let state = state.to_string();
        self.wait_for(|event| match event {
            Event::PaymentChanged(view) if view.state == state => Some(view.clone()),
            _ => None,
        })
        .await
    }

    /// Moves the lane's clock and lets the runtime look again.
    fn advance(&self, ms: i64) {
        self.clock.advance_ms(ms);
        self.runtime.wake();
    }

    /// Waits until the gateway has seen `count` requests.
    async fn wait_requests(&self, count: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let requests = self.gateway.requests();
            if requests.len() >= count {
                return requests;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {requests:?} reached the gateway"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn cart_total_fen(reply: &Reply) -> i64 {
    match reply {
        Reply::Cart(cart) => lanepay_checkout::Money::parse_yuan(&cart.total)
            .unwrap()
            .fen(),
        other => panic!("not a cart: {other:?}"),
    }
}

fn db(dir: &Path) -> Connection {
    store::open_read_only(&store::db_path(dir)).unwrap()
}

fn journal_kinds_and_states(conn: &Connection) -> Vec<String> {
    let mut statement = conn
        .prepare("SELECT kind, payload FROM journal ORDER BY seq")
        .unwrap();
    statement
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .unwrap()
        .map(|row| {
            let (kind, payload) = row.unwrap();
            let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            match payload.get("state").and_then(|s| s.as_str()) {
                Some(state) if kind == "payment_attempt" => format!("{kind}:{state}"),
                _ => kind,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_code_paid_at_once_completes_the_sale_in_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(open_lane(dir.path(), None), None).await;
    let total = cart_total_fen(&h.scan(COLA).await.unwrap());
    // Offline, a code is refused with the alternatives.
    let refused = h.scan(ALIPAY_CODE).await.unwrap_err();
    assert_eq!(refused.code, "offline");
    assert!(refused.message.contains("take cash"), "{}", refused.message);
    h.set_online(true).await;
    h.gateway.answer(Ok(view("T0001-1-1", "SUCCESS", total)));
    // A scanned payment code pays what is owed.
    let Reply::Payment(started) = h.scan(ALIPAY_CODE).await.unwrap() else {
        panic!("not a payment reply")
    };
    assert_eq!(started.attempt_id, "T0001-1-1");
    assert_eq!(started.state, "sending");
    assert_eq!(started.method, "alipay");
    let completed = h
        .wait_for(|event| match event {
            Event::SaleCompleted(view) => Some(view.clone()),
            _ => None,
        })
        .await;
    assert_eq!(completed.method, "alipay");
    assert_eq!(
        lanepay_checkout::Money::parse_yuan(&completed.applied)
            .unwrap()
            .fen(),
        total
    );
    assert_eq!(
        h.gateway.requests(),
        vec![format!("pay_code T0001-1-1 {total}")]
    );
    let conn = db(dir.path());
    let kinds = journal_kinds_and_states(&conn);
    assert_eq!(
        kinds,
        vec![
            "config_applied",
            "payment_attempt:sending",
            "payment_attempt:paid",
            "sale_completed"
        ]
    );
    let reference: String = conn
        .query_row(
            "SELECT reference FROM tenders WHERE method = 'alipay'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reference, "G-T0001-1-1");
    // The code itself is nowhere on disk.
    let bytes = std::fs::read(store::db_path(dir.path())).unwrap();
    let wal = std::fs::read(dir.path().join("lane.db-wal")).unwrap_or_default();
    for file in [&bytes, &wal] {
        assert!(
            !file
                .windows(ALIPAY_CODE.len())
                .any(|w| w == ALIPAY_CODE.as_bytes())
        );
    }
    h.runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_confirmation_is_polled_every_5_s_and_a_second_code_is_refused_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(open_lane(dir.path(), None), None).await;
    let total = cart_total_fen(&h.scan(COLA).await.unwrap());
    h.set_online(true).await;
    h.gateway.answer(Ok(view("T0001-1-1", "PAYING", total)));
    h.scan(ALIPAY_CODE).await.unwrap();
    let waiting = h.wait_for_payment_state("waiting").await;
    assert_eq!(waiting.step, "waiting for customer to confirm");
    // While it is unresolved: no second code, no cash, no void, no scan.
    let second = h
        .run(Command::PayWalletCode {
            code: "281234567890999999".into(),
        })
        .await
        .unwrap_err();
    assert!(second.message.contains("in progress"), "{}", second.message);
    assert!(
        h.run(Command::TenderCash {
            amount: "100".into()
        })
        .await
        .is_err()
    );
    assert!(h.run(Command::VoidSale).await.is_err());
    // Nothing is asked before 5 s.
    h.advance(4_000);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.gateway.requests().len(), 1);
    h.gateway.answer(Ok(view("T0001-1-1", "PAYING", total)));
    h.advance(1_000);
    h.wait_requests(2).await;
    h.gateway.answer(Ok(view("T0001-1-1", "SUCCESS", total)));
    h.advance(5_000);
    h.wait_for_payment_state("paid").await;
    assert_eq!(
        h.gateway.requests(),
        vec![
            format!("pay_code T0001-1-1 {total}"),
            "query T0001-1-1".to_string(),
            "query T0001-1-1".to_string()
        ]
    );
    h.runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_result_is_queried_for_60_s_then_reversed_and_an_unanswered_reverse_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(open_lane(dir.path(), None), None).await;
    let total = cart_total_fen(&h.scan(COLA).await.unwrap());
    h.set_online(true).await;
    // No answer to the pay request, nor to any query (the queue is empty).
    h.scan(ALIPAY_CODE).await.unwrap();
    let unknown = h.wait_for_payment_state("waiting").await;
    assert_eq!(unknown.step, "checking result");
    for second in 1..=59 {
        h.advance(1_000);
        if second % 5 == 0 {
            h.wait_requests(1 + second / 5).await;
            // The unanswered query is recorded before the clock moves on.
            h.wait_for_payment_state("waiting").await;
        }
    }
    assert!(
        h.gateway
            .requests()
            .iter()
            .all(|r| !r.starts_with("reverse"))
    );
    h.advance(1_000);
    h.wait_for_payment_state("reversing").await;
    let requests = h.wait_requests(13).await;
    assert_eq!(requests.last().unwrap(), "reverse T0001-1-1");
    h.wait_for(|event| match event {
        Event::PaymentChanged(view)
            if view
                .message
                .as_deref()
                .is_some_and(|m| m.contains("not confirmed")) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    // The reverse goes unanswered: sent again 5 s later, then answered.
    h.gateway.answer(Ok(view("T0001-1-1", "REVOKED", total)));
    h.advance(5_000);
    let reversed = h.wait_for_payment_state("reversed").await;
    assert_eq!(
        h.gateway
            .requests()
            .iter()
            .filter(|r| r.starts_with("reverse"))
            .count(),
        2
    );
    assert!(reversed.message.unwrap().contains("nothing was charged"));
    // The sale still owes everything; cash can pay it now.
    let Reply::Tender(tender) = h
        .run(Command::TenderCash {
            amount: "100.00".into(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(tender.completed);
    h.runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cashier_cancels_and_the_reverse_waits_15_s_after_pay() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(open_lane(dir.path(), None), None).await;
    let total = cart_total_fen(&h.scan(COLA).await.unwrap());
    h.set_online(true).await;
    h.gateway.answer(Ok(view("T0001-1-1", "PAYING", total)));
    h.scan(ALIPAY_CODE).await.unwrap();
    h.wait_for_payment_state("waiting").await;
    h.advance(2_000);
    let Reply::Payment(cancelled) = h.run(Command::CancelPayment).await.unwrap() else {
        panic!()
    };
    assert_eq!(cancelled.state, "reversing");
    h.advance(12_000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        h.gateway
            .requests()
            .iter()
            .all(|r| !r.starts_with("reverse"))
    );
    h.gateway.answer(Ok(view("T0001-1-1", "REVOKED", total)));
    h.advance(1_000);
    h.wait_for_payment_state("reversed").await;
    h.runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_restarted_with_an_unknown_payment_resolves_it_before_the_next_sale() {
    let dir = tempfile::tempdir().unwrap();
    let total;
    {
        let mut h = start(open_lane(dir.path(), None), None).await;
        total = cart_total_fen(&h.scan(COLA).await.unwrap());
        h.set_online(true).await;
        h.scan(ALIPAY_CODE).await.unwrap();
        h.wait_for_payment_state("waiting").await;
        // The lane dies here: the attempt is "unknown" on disk.
        h.runtime.stop().await;
    }
    let mut h = start(open_lane(dir.path(), None), None).await;
    // The sale is back, frozen: nothing else is sold until the payment is resolved.
    let refused = h.scan(COLA).await.unwrap_err();
    assert_eq!(refused.code, "not_allowed");
    h.gateway.answer(Ok(view("T0001-1-1", "SUCCESS", total)));
    h.set_online(true).await;
    h.advance(5_000);
    h.wait_for(|event| matches!(event, Event::SaleCompleted(_)).then_some(()))
        .await;
    // Only a query after the restart: the code was never sent twice.
    let requests = h.gateway.requests();
    assert!(
        requests.iter().all(|r| r == "query T0001-1-1"),
        "{requests:?}"
    );
    // Now the next sale starts.
    let Reply::Cart(cart) = h.scan(COLA).await.unwrap() else {
        panic!()
    };
    assert_eq!(cart.sale_id, "T0001-000002");
    h.runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_read_on_the_emulated_reader_is_sealed_and_only_its_masked_pan_is_kept() {
    use lanepay_drivers::emulator::nfc::{Pn532Emulator, card::VirtualCard};
    let dir = tempfile::tempdir().unwrap();
    let emulator = Pn532Emulator::spawn().unwrap();
    let card = VirtualCard::default_test_card();
    let pan = card.pan.clone();
    let mut h = start(open_lane(dir.path(), None), Some(emulator.connstring())).await;
    let total = cart_total_fen(&h.scan(COLA).await.unwrap());
    h.set_online(true).await;
    h.gateway.answer(Ok(view("T0001-1-1", "SUCCESS", total)));
    emulator.tap(card);
    let Reply::Payment(waiting) = h.run(Command::PayCard).await.unwrap() else {
        panic!()
    };
    assert_eq!(waiting.step, "tap card");
    let paid = h.wait_for_payment_state("paid").await;
    let masked = paid.masked_pan.clone().unwrap();
    assert_eq!(
        masked,
        format!("{}******{}", &pan[..6], &pan[pan.len() - 4..])
    );
    let requests = h.gateway.requests();
    assert_eq!(
        requests,
        vec![format!("pay_card T0001-1-1 {masked} stored=false")]
    );
    h.wait_for(|event| matches!(event, Event::SaleCompleted(_)).then_some(()))
        .await;
    h.runtime.stop().await;
    drop(h.handle);
    // The full card number is in no file of the lane.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        // A -shm file may be going away as the lane closes.
        let Ok(bytes) = std::fs::read(entry.unwrap().path()) else {
            continue;
        };
        assert!(!bytes.windows(pan.len()).any(|w| w == pan.as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_cards_are_stored_within_the_limits_and_a_decline_after_forwarding_is_reported() {
    use lanepay_drivers::emulator::nfc::{Pn532Emulator, card::VirtualCard};
    let dir = tempfile::tempdir().unwrap();
    let emulator = Pn532Emulator::spawn().unwrap();
    // A low per-payment limit: the second sale (two colas) is over it.
    let limits = lanepay_sync::config::OfflineCardLimits {
        per_payment_fen: 400,
        total_fen: 500_000,
        count: 200,
        max_age_ms: 72 * 3_600_000,
    };
    let mut h = start(
        open_lane(dir.path(), Some(limits)),
        Some(emulator.connstring()),
    )
    .await;
    let total = cart_total_fen(&h.scan(COLA).await.unwrap());
    assert!(total <= 400, "the demo cola costs {total}");
    emulator.tap(VirtualCard::default_test_card());
    h.run(Command::PayCard).await.unwrap();
    let stored = h.wait_for_payment_state("stored").await;
    h.wait_for(|event| matches!(event, Event::SaleCompleted(_)).then_some(()))
        .await;
    let Reply::StoredCards(exposure) = h.run(Command::ForwardStoredCards).await.unwrap() else {
        panic!()
    };
    assert_eq!(exposure.stored_count, 1);
    assert_eq!(
        lanepay_checkout::Money::parse_yuan(&exposure.offline_exposure)
            .unwrap()
            .fen(),
        total
    );
    // Over the per-payment limit: refused with the reason.
    h.scan(COLA).await.unwrap();
    h.scan(COLA).await.unwrap();
    emulator.remove();
    emulator.tap(VirtualCard::default_test_card());
    h.run(Command::PayCard).await.unwrap();
    let refused = h.wait_for_payment_state("failed").await;
    assert!(
        refused
            .message
            .as_deref()
            .unwrap()
            .contains("over the offline limit of 4.00 per card payment"),
        "{refused:?}"
    );
    assert!(h.gateway.requests().is_empty());
    // Back online: the stored card is forwarded and declined.
    h.gateway
        .answer(Ok(view(&stored.attempt_id, "FAILED", total)));
    h.set_online(true).await;
    let declined = h
        .wait_for(|event| match event {
            Event::StoredCardDeclined { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(declined.contains("card reported lost"), "{declined}");
    assert_eq!(
        h.gateway.requests(),
        vec![format!(
            "pay_card {} {} stored=true",
            stored.attempt_id,
            stored.masked_pan.unwrap()
        )]
    );
    let conn = db(dir.path());
    let forwarded: String = conn
        .query_row(
            "SELECT payload FROM journal WHERE kind = 'card_forwarded'",
            [],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .map(|p| String::from_utf8(p).unwrap())
        .unwrap();
    assert!(forwarded.contains("\"approved\":false"), "{forwarded}");
    let sealed: Option<String> = conn
        .query_row(
            "SELECT sealed_card FROM payment_attempts WHERE attempt_id = ?1",
            [&stored.attempt_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sealed, None, "the sealed card is blanked once forwarded");
    h.runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_qr_takes_only_its_own_confirmation_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(open_lane(dir.path(), None), None).await;
    let total = cart_total_fen(&h.scan(COLA).await.unwrap());
    let Reply::Payment(order) = h.run(Command::StartOfflineQr).await.unwrap() else {
        panic!()
    };
    let url = order.qr_text.clone().unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:9/pay/offline?o="),
        "{url}"
    );
    let signed_order =
        lanepay_sync::payment::parse_offline_order_url(&url, &lane_key().verifying_key()).unwrap();
    assert_eq!(signed_order.amount_fen, total);
    assert_eq!(signed_order.out_trade_no, "T0001-1-1");
    let confirmation = |out_trade_no: &str, amount_fen: i64, key: &SigningKey| {
        encode_confirmation(
            &OfflineConfirmation {
                out_trade_no: out_trade_no.into(),
                terminal_id: "T0001".into(),
                amount_fen,
                trade_no: "GW-777".into(),
                paid_at_ms: NOW,
            },
            key,
        )
    };
    // Forged (another key), another order, another amount: refused, nothing paid.
    for text in [
        confirmation("T0001-1-1", total, &SigningKey::from_bytes(&[8; 32])),
        confirmation("T0001-9-1", total, &gateway_key()),
        confirmation("T0001-1-1", total - 1, &gateway_key()),
    ] {
        let refused = h.scan(&text).await.unwrap_err();
        assert!(!refused.message.is_empty());
    }
    let good = confirmation("T0001-1-1", total, &gateway_key());
    let Reply::Payment(paid) = h.scan(&good).await.unwrap() else {
        panic!()
    };
    assert_eq!(paid.state, "paid");
    h.wait_for(|event| matches!(event, Event::SaleCompleted(_)).then_some(()))
        .await;
    // Shown a second time, on the next sale's offline QR: refused.
    h.scan(COLA).await.unwrap();
    h.run(Command::StartOfflineQr).await.unwrap();
    let replay = h
        .run(Command::ScanOfflineConfirmation { text: good })
        .await
        .unwrap_err();
    assert!(
        replay.message.contains("not for this order"),
        "{}",
        replay.message
    );
    let conn = db(dir.path());
    let reference: String = conn
        .query_row(
            "SELECT reference FROM tenders WHERE method = 'offline_qr'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reference, "GW-777");
    h.runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_refund_goes_back_through_the_gateway_and_never_above_what_was_paid() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(open_lane(dir.path(), None), None).await;
    let total = cart_total_fen(&h.scan(COLA).await.unwrap());
    h.set_online(true).await;
    h.gateway.answer(Ok(view("T0001-1-1", "SUCCESS", total)));
    h.scan(ALIPAY_CODE).await.unwrap();
    let completed = h
        .wait_for(|event| match event {
            Event::SaleCompleted(view) => Some(view.clone()),
            _ => None,
        })
        .await;
    let over = lanepay_checkout::Money::from_fen(total + 1).to_string();
    let refused = h
        .run(Command::Refund {
            receipt_no: completed.receipt_no.clone(),
            lines: Vec::new(),
            amount: Some(over),
            reason: "too much".into(),
        })
        .await
        .unwrap_err();
    assert!(refused.message.contains("exceeds"), "{}", refused.message);
    let part = lanepay_checkout::Money::from_fen(total / 2).to_string();
    h.run(Command::Refund {
        receipt_no: completed.receipt_no.clone(),
        lines: Vec::new(),
        amount: Some(part),
        reason: "price adjustment".into(),
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let sent = h.gateway.refunds.lock().unwrap().clone();
        if let Some(refund) = sent.first() {
            assert_eq!(refund.out_trade_no, "T0001-1-1");
            assert_eq!(refund.amount_fen, total / 2);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.runtime.stop().await;
    let conn = db(dir.path());
    let state: String = conn
        .query_row("SELECT state FROM gateway_refunds", [], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "done");
}

#[test]
fn the_first_schema_migrates_to_payment_attempts_keeping_unacknowledged_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = store::db_path(dir.path());
    std::fs::copy("tests/fixtures/lane-schema-v1.sqlite", &path).unwrap();
    let before: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert!(before > 0);
    let conn = store::open(&path, Durability::Full).unwrap();
    let after: i64 = conn
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(after, before);
    assert!(rows::active(&conn).unwrap().is_empty());
    assert_eq!(rows::stored_cards(&conn).unwrap().count, 0);
}
