#![allow(clippy::unwrap_used)]
//! The terminal payment API end to end: the real `lanepay-gateway` binary on a manual clock over
//! loopback, enrolled terminals calling it through the real `GatewayClient` (signed requests),
//! pushes on the live WebSocket, the signed offline-QR page and the journal ingest that matches
//! offline-QR sales. Waiting is polling for an observable outcome under a deadline.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use futures_util::StreamExt as _;
use lanepay_sync::client::{self, GatewayClient};
use lanepay_sync::journal::{EntryDraft, GENESIS_PREV_HASH};
use lanepay_sync::payment::{
    self, CardPaymentRequest, CardSecret, CreateQrRequest, OfflineOrder, PayCodeRequest,
    PaymentCallError, PaymentView, TerminalRefundRequest,
};
use lanepay_sync::wire::WsFrame;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

const BINARY: &str = env!("CARGO_BIN_EXE_lanepay-gateway");
/// 2026-11-19 12:53 Beijing time.
const START_MS: i64 = 1_795_000_000_000;
/// The Beijing business day of `START_MS` (2026-11-18 19:06 +08:00).
const BILL_DATE: &str = "2026-11-18";
const ADMIN_TOKEN: &str = "test-admin-token";
const DEADLINE: Duration = Duration::from_secs(20);
const PAN: &str = "6212345678901234";
const MASKED_PAN: &str = "621234******1234";
const WECHAT_CODE: &str = "134567890123456789";

struct Gateway {
    /// Held so the gateway lives as long as the test (`kill_on_drop`).
    _child: tokio::process::Child,
    base: String,
    data: PathBuf,
    http: reqwest::Client,
}

impl Gateway {
    async fn start(data: &Path) -> Gateway {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("stderr.log"))
            .unwrap();
        let mut child = tokio::process::Command::new(BINARY)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-token",
                ADMIN_TOKEN,
                "--data",
            ])
            .arg(data)
            .arg("--manual-clock-start-ms")
            .arg(START_MS.to_string())
            .env_remove("LANEPAY_GATEWAY_ADMIN_TOKEN")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let address = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("gateway did not start")
            .unwrap()
            .expect("gateway printed nothing");
        Gateway {
            _child: child,
            base: format!("http://{address}"),
            data: data.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn now(&self) -> i64 {
        let value: Value = self
            .http
            .get(format!("{}/test/clock", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        value["now_ms"].as_i64().unwrap()
    }

    async fn advance(&self, by_ms: i64) {
        let response = self
            .http
            .post(format!("{}/test/clock/advance", self.base))
            .json(&json!({ "by_ms": by_ms }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    async fn admin_get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let text = response.text().await.unwrap();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    async fn bill(&self, pay_type: &str) -> String {
        match self
            .admin_get(&format!("/admin/channels/{pay_type}/bill?date={BILL_DATE}"))
            .await
        {
            Value::String(text) => text,
            other => other.to_string(),
        }
    }

    async fn alarms(&self) -> Vec<Value> {
        self.admin_get("/v1/hq/terminals").await["alarms"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn get_page(&self, url: &str) -> (u16, String) {
        let response = self.http.get(url).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn wallet_confirm(&self, trade_no: &str) {
        let response = self
            .http
            .post(format!("{}/sandbox/wallet/{trade_no}/confirm", self.base))
            .send()
            .await
            .unwrap();
        let text = response.text().await.unwrap();
        assert!(text.contains("data-state=\"SUCCESS\""), "{text}");
    }

    /// Enrolls a new terminal of `store` (merchant `m1`) and returns its client.
    async fn terminal(&self, store: &str) -> Terminal {
        let response = self
            .http
            .post(format!("{}/v1/hq/tokens", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"store_id": store, "merchant_id": "m1", "valid_days": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let token: Value = response.json().await.unwrap();
        let key = SigningKey::from_bytes(&rand_bytes());
        let enrolled = client::enroll(
            &self.base,
            token["token"].as_str().unwrap(),
            &key,
            None,
            None,
        )
        .await
        .unwrap();
        let gateway_key = lanepay_sync::auth::parse_public_key(&enrolled.gateway_keys[0]).unwrap();
        let seal_key: [u8; 32] = hex::decode(
            &enrolled
                .config
                .as_ref()
                .expect("the enrollment carries the store configuration")
                .config
                .card_seal_public_key,
        )
        .unwrap()
        .try_into()
        .unwrap();
        let client = GatewayClient::new(
            &self.base,
            &enrolled.terminal_id,
            key.clone(),
            gateway_key,
            None,
        )
        .unwrap();
        client.learn_server_time(enrolled.server_time_ms, START_MS);
        Terminal {
            client,
            key,
            gateway_key,
            seal_key,
            terminal_id: enrolled.terminal_id,
            store_id: enrolled.store_id,
        }
    }
}

struct Terminal {
    client: GatewayClient,
    key: SigningKey,
    gateway_key: VerifyingKey,
    seal_key: [u8; 32],
    terminal_id: String,
    store_id: String,
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

fn code_request(out_trade_no: &str, amount_fen: i64, code: &str) -> PayCodeRequest {
    PayCodeRequest {
        out_trade_no: out_trade_no.into(),
        amount_fen,
        auth_code: code.into(),
        subject: "lane sale".into(),
    }
}

fn card(expiry_yymm: &str) -> CardSecret {
    CardSecret {
        pan: PAN.into(),
        expiry_yymm: expiry_yymm.into(),
        pan_sequence: Some(1),
        aid_hex: "A000000333010101".into(),
    }
}

fn card_request(
    terminal: &Terminal,
    out_trade_no: &str,
    amount_fen: i64,
    expiry_yymm: &str,
    stored_at_ms: Option<i64>,
) -> CardPaymentRequest {
    CardPaymentRequest {
        out_trade_no: out_trade_no.into(),
        amount_fen,
        card: payment::seal_card(&card(expiry_yymm), &terminal.seal_key).unwrap(),
        masked_pan: payment::masked_pan(PAN),
        stored_at_ms,
    }
}

fn refused_code(error: PaymentCallError) -> String {
    match error {
        PaymentCallError::Refused(error) => error.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Advances the gateway clock in rail-sized steps until the order reaches `state`.
async fn wait_for_state(
    gateway: &Gateway,
    terminal: &Terminal,
    out_trade_no: &str,
    state: &str,
) -> PaymentView {
    let started = std::time::Instant::now();
    loop {
        let view = terminal
            .client
            .query_payment(out_trade_no, gateway.now().await)
            .await
            .unwrap();
        if view.state == state {
            return view;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{out_trade_no} stayed {}",
            view.state
        );
        gateway.advance(5_000).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count_lines(bill: &str, needle: &str) -> usize {
    bill.lines().filter(|line| line.contains(needle)).count()
}

#[tokio::test]
async fn code_payments_pay_confirm_late_reverse_and_retry_without_double_charge() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path()).await;
    let lane = gateway.terminal("s1").await;
    let now = gateway.now().await;

    // Paid at once.
    let paid = lane
        .client
        .pay_code(&code_request("T1-1-1", 1_000, WECHAT_CODE), now)
        .await
        .unwrap();
    assert_eq!(
        (paid.state.as_str(), paid.paid_fen, paid.pay_type.as_str()),
        ("SUCCESS", 1_000, "wechat")
    );

    // The same request again (a retry after a timeout): the same trade, not a second charge.
    let again = lane
        .client
        .pay_code(&code_request("T1-1-1", 1_000, WECHAT_CODE), now)
        .await
        .unwrap();
    assert_eq!(again.trade_no, paid.trade_no);
    assert_eq!(again.state, "SUCCESS");
    let bill = gateway.bill("wechat").await;
    assert_eq!(count_lines(&bill, &paid.trade_no), 1, "{bill}");
    assert!(bill.contains(",PAY,") && bill.contains("10.00"), "{bill}");

    // Another amount under the same out_trade_no is a conflict, not a new order.
    let conflict = lane
        .client
        .pay_code(&code_request("T1-1-1", 2_000, "134567890123450000"), now)
        .await
        .unwrap_err();
    assert_eq!(refused_code(conflict), "OUT_TRADE_NO_CONFLICT");

    // The customer confirms late (amount ending in .91): PAYING, then the rail finds SUCCESS.
    let late = lane
        .client
        .pay_code(&code_request("T1-2-1", 1_291, "134567890123450001"), now)
        .await
        .unwrap();
    assert_eq!(late.state, "PAYING");
    let confirmed = wait_for_state(&gateway, &lane, "T1-2-1", "SUCCESS").await;
    assert_eq!(confirmed.paid_fen, 1_291);

    // The customer never confirms (.92): the lane reverses; reversing again changes nothing.
    let now = gateway.now().await;
    let never = lane
        .client
        .pay_code(&code_request("T1-3-1", 1_392, "134567890123450002"), now)
        .await
        .unwrap();
    assert_eq!(never.state, "PAYING");
    let reversed = lane.client.reverse_payment("T1-3-1", now).await.unwrap();
    assert_eq!(reversed.state, "REVOKED");
    assert_eq!(reversed.paid_fen, 0);
    assert!(reversed.failure.unwrap().contains("reversed"));
    let twice = lane.client.reverse_payment("T1-3-1", now).await.unwrap();
    assert_eq!(
        (twice.state.as_str(), twice.trade_no),
        ("REVOKED", reversed.trade_no)
    );

    // Declined (.94): FAILED with words for the cashier.
    let declined = lane
        .client
        .pay_code(&code_request("T1-4-1", 1_494, "134567890123450003"), now)
        .await
        .unwrap();
    assert_eq!(declined.state, "FAILED");
    assert_eq!(
        declined.failure.as_deref(),
        Some("declined: insufficient balance")
    );

    // Garbage is refused with a reason and creates nothing.
    let bad = lane
        .client
        .pay_code(&code_request("T1-5-1", 100, "12"), now)
        .await
        .unwrap_err();
    assert_eq!(refused_code(bad), "INVALID_AUTH_CODE");
    let missing = lane.client.query_payment("T1-5-1", now).await.unwrap_err();
    assert_eq!(refused_code(missing), "ORDER_NOT_FOUND");
}

#[tokio::test]
async fn another_terminal_cannot_see_or_reuse_an_order() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path()).await;
    let lane = gateway.terminal("s1").await;
    let other = gateway.terminal("s1").await;
    let now = gateway.now().await;
    let paid = lane
        .client
        .pay_code(&code_request("T1-1-1", 500, WECHAT_CODE), now)
        .await
        .unwrap();
    assert_eq!(paid.state, "SUCCESS");

    let seen = other.client.query_payment("T1-1-1", now).await.unwrap_err();
    assert_eq!(refused_code(seen), "ORDER_NOT_FOUND");
    let reused = other
        .client
        .pay_code(&code_request("T1-1-1", 500, "134567890123459999"), now)
        .await
        .unwrap_err();
    assert_eq!(refused_code(reused), "OUT_TRADE_NO_CONFLICT");
    let refund = other
        .client
        .refund_payment(
            &TerminalRefundRequest {
                out_trade_no: "T1-1-1".into(),
                refund_no: "R1".into(),
                amount_fen: 100,
            },
            now,
        )
        .await
        .unwrap_err();
    assert_eq!(refused_code(refund), "ORDER_NOT_FOUND");
    // The first lane's order is untouched.
    let view = lane.client.query_payment("T1-1-1", now).await.unwrap();
    assert_eq!((view.state.as_str(), view.paid_fen), ("SUCCESS", 500));
}

#[tokio::test]
async fn refunds_partial_multiple_never_above_paid() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path()).await;
    let lane = gateway.terminal("s1").await;
    let now = gateway.now().await;
    lane.client
        .pay_code(&code_request("T1-1-1", 1_000, WECHAT_CODE), now)
        .await
        .unwrap();
    let refund = |refund_no: &str, amount_fen: i64| TerminalRefundRequest {
        out_trade_no: "T1-1-1".into(),
        refund_no: refund_no.into(),
        amount_fen,
    };
    let first = lane
        .client
        .refund_payment(&refund("R1", 300), now)
        .await
        .unwrap();
    assert_eq!((first.state.as_str(), first.amount_fen), ("SUCCESS", 300));
    let second = lane
        .client
        .refund_payment(&refund("R2", 500), now)
        .await
        .unwrap();
    assert_eq!(second.state, "SUCCESS");
    let over = lane
        .client
        .refund_payment(&refund("R3", 201), now)
        .await
        .unwrap_err();
    assert_eq!(refused_code(over), "REFUND_EXCEEDS_PAID");
    // The same refund again is the same refund.
    let repeated = lane
        .client
        .refund_payment(&refund("R1", 300), now)
        .await
        .unwrap();
    assert_eq!(repeated, first);
    let last = lane
        .client
        .refund_payment(&refund("R3", 200), now)
        .await
        .unwrap();
    assert_eq!(last.state, "SUCCESS");
    let view = lane.client.query_payment("T1-1-1", now).await.unwrap();
    assert_eq!(view.state, "REFUND");
    let bill = gateway.bill("wechat").await;
    assert_eq!(count_lines(&bill, "REFUND"), 3, "{bill}");
    assert!(
        bill.contains("-3.00") && bill.contains("-5.00") && bill.contains("-2.00"),
        "{bill}"
    );
}

#[tokio::test]
async fn dynamic_qr_paid_on_the_wallet_page_is_pushed_and_close_closes() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path()).await;
    let lane = gateway.terminal("s1").await;
    let now = gateway.now().await;
    let (mut socket, _) = lane
        .client
        .connect_ws(lane.client.ws_request(now).unwrap())
        .await
        .unwrap();

    let created = lane
        .client
        .create_qr(
            &CreateQrRequest {
                out_trade_no: "T1-1-1".into(),
                amount_fen: 2_345,
                subject: "lane sale".into(),
                pay_type: "alipay".into(),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(created.state, "CREATED");
    let pay_url = created.pay_url.clone().unwrap();
    assert!(pay_url.ends_with(&format!("/sandbox/wallet/{}", created.trade_no)));
    let (status, page) = gateway.get_page(&pay_url).await;
    assert_eq!(status, 200);
    assert!(page.contains("23.45"), "{page}");
    gateway.wallet_confirm(&created.trade_no).await;

    let view = lane.client.query_payment("T1-1-1", now).await.unwrap();
    assert_eq!((view.state.as_str(), view.paid_fen), ("SUCCESS", 2_345));

    // The result arrives on the lane's live channel too.
    let pushed = tokio::time::timeout(DEADLINE, async {
        loop {
            let message = socket.next().await.unwrap().unwrap();
            let Ok(text) = message.to_text() else {
                continue;
            };
            if let Ok(WsFrame::Push { topic, body }) = serde_json::from_str::<WsFrame>(text)
                && topic == "payment"
                && body["state"] == "SUCCESS"
            {
                return serde_json::from_value::<PaymentView>(body).unwrap();
            }
        }
    })
    .await
    .expect("no payment push");
    assert_eq!(pushed.trade_no, created.trade_no);
    assert_eq!(pushed.paid_fen, 2_345);

    // Closing a paid order says it was paid rather than closing it.
    let closing_paid = lane.client.close_payment("T1-1-1", now).await.unwrap();
    assert_eq!(closing_paid.state, "SUCCESS");

    // An unpaid QR order closes, and closing again is the same.
    let unpaid = lane
        .client
        .create_qr(
            &CreateQrRequest {
                out_trade_no: "T1-2-1".into(),
                amount_fen: 800,
                subject: "lane sale".into(),
                pay_type: "wechat".into(),
            },
            now,
        )
        .await
        .unwrap();
    let closed = lane.client.close_payment("T1-2-1", now).await.unwrap();
    assert_eq!(closed.state, "CLOSED");
    assert_eq!(closed.trade_no, unpaid.trade_no);
    let again = lane.client.close_payment("T1-2-1", now).await.unwrap();
    assert_eq!(again.state, "CLOSED");
    // The wallet page no longer takes the payment.
    let (_, page) = gateway.get_page(&unpaid.pay_url.unwrap()).await;
    assert!(page.contains("CLOSED"), "{page}");
}

#[tokio::test]
async fn cards_approved_declined_expired_and_forwarded_decline_alarms_hq_without_leaking_the_pan() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path()).await;
    let lane = gateway.terminal("s1").await;
    let now = gateway.now().await;

    let approved = lane
        .client
        .pay_card(&card_request(&lane, "T1-1-1", 5_000, "2912", None), now)
        .await
        .unwrap();
    assert_eq!(
        (
            approved.state.as_str(),
            approved.paid_fen,
            approved.pay_type.as_str()
        ),
        ("SUCCESS", 5_000, "card")
    );
    // A retry seals the card afresh; it is still the same payment, charged once.
    let retry = lane
        .client
        .pay_card(&card_request(&lane, "T1-1-1", 5_000, "2912", None), now)
        .await
        .unwrap();
    assert_eq!(retry.trade_no, approved.trade_no);
    let bill = gateway.bill("card").await;
    assert_eq!(count_lines(&bill, &approved.trade_no), 1, "{bill}");
    // The same card pays again in a new sale.
    let second = lane
        .client
        .pay_card(&card_request(&lane, "T1-2-1", 1_200, "2912", None), now)
        .await
        .unwrap();
    assert_eq!(second.state, "SUCCESS");

    let declined = lane
        .client
        .pay_card(&card_request(&lane, "T1-3-1", 5_094, "2912", None), now)
        .await
        .unwrap();
    assert_eq!(declined.state, "FAILED");
    assert_eq!(
        declined.failure.as_deref(),
        Some("declined: insufficient balance")
    );

    let expired = lane
        .client
        .pay_card(&card_request(&lane, "T1-4-1", 300, "2610", None), now)
        .await
        .unwrap();
    assert_eq!(expired.state, "FAILED");
    assert!(expired.failure.unwrap().contains("expired"));
    assert_eq!(
        count_lines(&gateway.bill("card").await, &expired.trade_no),
        0
    );

    // An online decline is no alarm; a forwarded one is.
    assert!(gateway.alarms().await.is_empty());
    let forwarded = lane
        .client
        .pay_card(
            &card_request(&lane, "T1-5-1", 2_094, "2912", Some(now - 3_600_000)),
            now,
        )
        .await
        .unwrap();
    assert_eq!(forwarded.state, "FAILED");
    let alarms = gateway.alarms().await;
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0]["kind"], "stored_card_declined");
    assert_eq!(alarms[0]["terminal_id"], lane.terminal_id.as_str());
    let detail = alarms[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("T1-5-1") && detail.contains(MASKED_PAN),
        "{detail}"
    );
    // Forwarding the same payment again raises no second alarm.
    lane.client
        .pay_card(
            &card_request(&lane, "T1-5-1", 2_094, "2912", Some(now - 3_600_000)),
            now,
        )
        .await
        .unwrap();
    assert_eq!(gateway.alarms().await.len(), 1);

    // A sealed card that was tampered with is refused and charges nothing.
    let mut tampered = card_request(&lane, "T1-6-1", 700, "2912", None);
    tampered.card.ciphertext.replace_range(0..2, "00");
    let refused = lane.client.pay_card(&tampered, now).await.unwrap_err();
    assert_eq!(refused_code(refused), "INVALID_PARAMETER");

    // The PAN is nowhere in the gateway's files (databases, WAL, keys) or its debug log.
    let stopped = gateway.data.clone();
    drop(gateway);
    for entry in std::fs::read_dir(&stopped).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let found = bytes.windows(PAN.len()).any(|w| w == PAN.as_bytes());
            assert!(!found, "the PAN is in {}", path.display());
        }
    }
    let log = std::fs::read_to_string(stopped.join("stderr.log")).unwrap();
    assert!(
        log.contains(MASKED_PAN),
        "the log names the card by its masked PAN"
    );
    assert!(!log.contains(PAN));
}

fn offline_order(
    terminal: &Terminal,
    out_trade_no: &str,
    seq: u64,
    amount_fen: i64,
    now: i64,
) -> OfflineOrder {
    OfflineOrder {
        merchant_id: "m1".into(),
        store_id: terminal.store_id.clone(),
        terminal_id: terminal.terminal_id.clone(),
        out_trade_no: out_trade_no.into(),
        seq,
        amount_fen,
        currency: "CNY".into(),
        expires_at_ms: now + 600_000,
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {text}"))
        + start.len();
    let to = text[from..].find(end).unwrap() + from;
    &text[from..to]
}

/// A signed `sale_completed` entry paid by one offline-QR tender.
fn offline_sale_entry(
    terminal: &Terminal,
    seq: u64,
    prev_hash: [u8; 32],
    sale_id: &str,
    amount_fen: i64,
    trade_no: &str,
    at_ms: i64,
) -> lanepay_sync::journal::SignedEntry {
    let payload = json!({
        "sale_id": sale_id, "receipt_no": sale_id, "store_id": terminal.store_id,
        "currency": "CNY", "tax_mode": "included", "opened_at_ms": at_ms, "completed_at_ms": at_ms,
        "lines": [{
            "line": 1, "sku": "COLA-330", "name_zh": "可乐", "name_en": "Cola",
            "pricing": "per_unit", "quantity": "1", "unit_price_fen": amount_fen,
            "gross_fen": amount_fen, "line_discount_fen": 0, "order_discount_fen": 0,
            "tax_rate": "0.13", "tax_fen": 0, "total_fen": amount_fen
        }],
        "gross_fen": amount_fen, "discount_fen": 0, "tax_fen": 0, "total_fen": amount_fen,
        "change_fen": 0,
        "tenders": [{
            "tender_id": format!("{sale_id}-1"), "method": "offline_qr", "amount_fen": amount_fen,
            "tendered_fen": amount_fen, "change_fen": 0, "reference": trade_no, "at_ms": at_ms
        }]
    });
    EntryDraft {
        terminal_id: terminal.terminal_id.clone(),
        seq,
        kind: lanepay_sync::payload::kind::SALE_COMPLETED.into(),
        created_at_ms: at_ms,
        prev_hash,
        payload: lanepay_sync::canonical::to_vec(&payload).unwrap(),
    }
    .sign(&terminal.key)
    .unwrap()
}

#[tokio::test]
async fn signed_offline_qr_pays_confirms_and_matches_the_sale_once() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(dir.path()).await;
    let lane = gateway.terminal("s1").await;
    let now = gateway.now().await;

    // A forged order (signed by a key that is not the terminal's) is refused and creates nothing.
    let forged_order = offline_order(&lane, "T1-9-1", 9, 100, now);
    let forger = SigningKey::from_bytes(&[7; 32]);
    let forged = payment::offline_order_url(&gateway.base, &forged_order, &forger);
    let (status, page) = gateway.get_page(&forged).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("signature"), "{page}");
    let nothing = lane.client.query_payment("T1-9-1", now).await.unwrap_err();
    assert_eq!(refused_code(nothing), "ORDER_NOT_FOUND");
    let (status, _) = gateway
        .get_page(&format!("{}/pay/offline?o=%%%&s=", gateway.base))
        .await;
    assert_eq!(status, 400);

    // The real one: the page verifies it, the customer pays on the sandbox wallet.
    let order = offline_order(&lane, "T1-1-1", 1, 3_456, now);
    let url = payment::offline_order_url(&gateway.base, &order, &lane.key);
    let (status, page) = gateway.get_page(&url).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("34.56"), "{page}");
    let trade_no = between(&page, "href=\"/sandbox/wallet/", "\"").to_string();
    // Opening the page again finds the same order.
    let (_, again) = gateway.get_page(&url).await;
    assert!(again.contains(&trade_no));
    gateway.wallet_confirm(&trade_no).await;

    let (status, paid_page) = gateway.get_page(&url).await;
    assert_eq!(status, 200);
    assert!(
        paid_page.contains("<svg"),
        "the confirmation is shown as a QR"
    );
    let text = between(&paid_page, "<code id=\"confirmation\">", "</code>").to_string();
    let confirmation = payment::verify_confirmation_for(&text, &lane.gateway_key, &order).unwrap();
    assert_eq!(confirmation.trade_no, trade_no);
    assert_eq!(confirmation.amount_fen, 3_456);
    // It is for this order only.
    let next = offline_order(&lane, "T1-2-1", 2, 3_456, now);
    assert!(payment::verify_confirmation_for(&text, &lane.gateway_key, &next).is_err());

    // Past its expiry an unpaid order is refused; a paid one still shows its confirmation.
    gateway.advance(700_000).await;
    let late = offline_order(&lane, "T1-3-1", 3, 500, now);
    let (status, _) = gateway
        .get_page(&payment::offline_order_url(&gateway.base, &late, &lane.key))
        .await;
    assert_eq!(status, 400);
    let (status, still) = gateway.get_page(&url).await;
    assert_eq!(status, 200);
    assert!(still.contains(&trade_no));

    // The lane journals the sale; the gateway matches it to the order and counts it once.
    let now = gateway.now().await;
    let first = offline_sale_entry(&lane, 1, GENESIS_PREV_HASH, "sale-1", 3_456, &trade_no, now);
    lane.client
        .send_batch(std::slice::from_ref(&first), now)
        .await
        .unwrap();
    lane.client
        .send_batch(std::slice::from_ref(&first), now)
        .await
        .unwrap();
    let fleet = gateway.admin_get("/v1/hq/terminals").await;
    assert_eq!(
        fleet["terminals"][0]["totals_by_tender_fen"]["offline_qr"], 3_456,
        "{fleet}"
    );
    let matched: (String, String) = rusqlite::Connection::open(dir.path().join("terminals.sqlite"))
        .unwrap()
        .query_row(
            "SELECT terminal_id, sale_id FROM offline_qr_matches WHERE trade_no = ?1",
            [&trade_no],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(matched, (lane.terminal_id.clone(), "sale-1".to_string()));
    assert!(gateway.alarms().await.is_empty());

    // A second sale claiming the same payment is an alarm.
    let second = offline_sale_entry(&lane, 2, first.hash, "sale-2", 3_456, &trade_no, now);
    lane.client.send_batch(&[second], now).await.unwrap();
    let alarms = gateway.alarms().await;
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0]["kind"], "offline_qr_double_claim");
    assert!(alarms[0]["detail"].as_str().unwrap().contains("sale-2"));
}
