//! The terminal payment API: lanes pay through the same gateway payment code as merchant
//! servers (`service::Gateway`: one order state machine, one idempotency rule, the same sandbox
//! channels), authenticated by the terminal's signed request instead of a merchant signature,
//! for the merchant of the terminal's enrolled store. Also: cards sealed by the lane are opened
//! here and tokenized (the PAN is never stored or logged), order changes of terminal orders are
//! pushed to their terminal, a declined store-and-forward card raises an HQ alarm, the signed
//! offline-QR page, and matching journaled offline-QR sales to the gateway orders that paid
//! them. Wire types are `lanepay_sync::payment`; `docs/payments.md` is the reference.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use ed25519_dalek::SigningKey;
use hmac::{KeyInit as _, Mac as _};
use lanepay_sync::payload::SaleCompleted;
use lanepay_sync::payment::{
    self, CLOSE_PATH, CREATE_QR_PATH, CardPaymentRequest, CardSecret, CreateQrRequest,
    OFFLINE_PAY_PATH, OfflineConfirmation, OfflineOrder, PAY_CARD_PATH, PAY_CODE_PATH,
    PayCodeRequest, PaymentError, PaymentRef, PaymentView, QUERY_PATH, REFUND_PATH, REVERSE_PATH,
    TerminalRefundRequest, TerminalRefundView,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::service::{TerminalError, TerminalService, ledger_day};
use super::store::TerminalRow;
use crate::error::{ApiError, ErrorClass};
use crate::model::{Order, OrderState, PayType, check_auth_code};
use crate::money::format_yuan;
use crate::service::{Gateway, OrderChange, TerminalCreate};
use crate::store::TerminalOrigin;

/// Payment requests are a few hundred bytes; a sealed card about 400.
const MAX_PAYMENT_BODY_BYTES: usize = 16 * 1024;
/// Alarm kind: a card the lane took offline was declined when forwarded.
pub const ALARM_STORED_CARD_DECLINED: &str = "stored_card_declined";
/// Alarm kind: a second sale claims a gateway order already matched to another sale.
pub const ALARM_OFFLINE_QR_DOUBLE_CLAIM: &str = "offline_qr_double_claim";
/// The tender method of a signed offline-QR payment in journal payloads.
pub const OFFLINE_QR_METHOD: &str = "offline_qr";
/// Wallet a customer pays a signed offline order with on the sandbox page.
const OFFLINE_QR_PAY_TYPE: PayType = PayType::Alipay;
const CARD_TOKEN_DOMAIN: &[u8] = b"LANEPAY-CARD-TOKEN-V1";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What the payment routes need: the payment core, the terminal registry and the gateway's
/// ed25519 key (it signs offline-QR confirmations, as it signs acknowledgements).
#[derive(Clone)]
pub struct PaymentsState {
    pub gateway: Arc<Gateway>,
    pub terminals: Arc<TerminalService>,
    signing_key: Arc<SigningKey>,
}

impl std::fmt::Debug for PaymentsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentsState").finish_non_exhaustive()
    }
}

impl PaymentsState {
    pub fn new(
        gateway: Arc<Gateway>,
        terminals: Arc<TerminalService>,
    ) -> Result<PaymentsState, TerminalError> {
        let signing_key = super::service::load_or_create_key(&gateway.config.data_dir)?;
        terminals.with_store(|c| Ok(c.execute_batch(OFFLINE_MATCH_SCHEMA)?))?;
        Ok(PaymentsState {
            gateway,
            terminals,
            signing_key: Arc::new(signing_key),
        })
    }
}

/// Why a terminal payment call was refused.
#[derive(Debug)]
enum CallError {
    Terminal(TerminalError),
    Api(ApiError),
    Invalid(String),
}

impl From<TerminalError> for CallError {
    fn from(error: TerminalError) -> Self {
        CallError::Terminal(error)
    }
}

impl From<ApiError> for CallError {
    fn from(error: ApiError) -> Self {
        CallError::Api(error)
    }
}

impl From<crate::error::StoreError> for CallError {
    fn from(error: crate::error::StoreError) -> Self {
        CallError::Api(error.into())
    }
}

impl CallError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            CallError::Terminal(error) => {
                tracing::warn!(%error, "terminal payment request refused");
                (
                    error.status(),
                    PaymentError {
                        code: error.code().into(),
                        message: error.to_string(),
                        retryable: error.status() >= 500,
                    },
                )
            }
            CallError::Api(error) => {
                tracing::info!(sub_code = error.sub_code, message = %error.message, "terminal payment refused");
                (
                    error.status(),
                    PaymentError {
                        code: error.sub_code.into(),
                        message: error.message,
                        retryable: error.retryable,
                    },
                )
            }
            CallError::Invalid(message) => (
                400,
                PaymentError {
                    code: "INVALID_PARAMETER".into(),
                    message,
                    retryable: false,
                },
            ),
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(body)).into_response()
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        ErrorClass::NotFound,
        "ORDER_NOT_FOUND",
        "no such order for this terminal",
    )
}

/// Words for the cashier about how an order ended, from its failure sub code.
pub fn failure_words(order: &Order) -> Option<String> {
    let words = match order.state {
        OrderState::Failed => match order.fail_sub_code.as_str() {
            "INSUFFICIENT_BALANCE" => "declined: insufficient balance",
            "AUTH_CODE_USED" => "this payment code was already used; ask for a fresh code",
            "AUTH_CODE_INVALID" => "the payment code was not accepted; ask for a fresh code",
            "USER_DECLINED" => "the customer declined the payment",
            "CARD_EXPIRED" => "the card has expired; ask for another card",
            _ => "the payment was declined",
        },
        OrderState::Revoked => "the payment was reversed; nothing was charged",
        OrderState::Closed => "the order was closed unpaid",
        _ => return None,
    };
    Some(words.to_string())
}

/// The terminal's view of an order.
pub fn payment_view(order: &Order) -> PaymentView {
    PaymentView {
        out_trade_no: order.out_trade_no.clone(),
        trade_no: order.trade_no.clone(),
        pay_type: order.pay_type.as_str().into(),
        state: order.state.as_str().into(),
        amount_fen: order.total_fen,
        paid_fen: order.paid_fen,
        pay_url: (!order.pay_url.is_empty()).then(|| order.pay_url.clone()),
        paid_at_ms: order.pay_time_ms,
        failure: failure_words(order),
    }
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Authenticates the signed request, parses its body and runs `work` on the blocking pool.
async fn terminal_call<R, W>(
    state: PaymentsState,
    headers: HeaderMap,
    body: Bytes,
    path: &'static str,
    work: W,
) -> Response
where
    R: DeserializeOwned + Send + 'static,
    W: FnOnce(&PaymentsState, &TerminalRow, R) -> Result<Value, CallError> + Send + 'static,
{
    let auth = match super::http::request_auth(&headers) {
        Ok(auth) => auth,
        Err(error) => return CallError::from(error).into_response(),
    };
    let result = tokio::task::spawn_blocking(move || {
        let terminal = state.terminals.authenticate(&auth, "POST", path, &body)?;
        let request: R = serde_json::from_slice(&body)
            .map_err(|e| CallError::Invalid(format!("the body does not fit {path}: {e}")))?;
        work(&state, &terminal, request)
    })
    .await
    .unwrap_or_else(|join| {
        tracing::error!(error = %join, "terminal payment task failed");
        Err(CallError::Api(ApiError::retryable(
            ErrorClass::Busy,
            "SYSTEM_BUSY",
            "the gateway failed inside the request; query the order",
        )))
    });
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

fn check_trade_no(field: &str, no: &str) -> Result<(), CallError> {
    payment::validate_trade_no(no).map_err(|e| CallError::Invalid(format!("{field} {e}")))
}

fn check_amount(amount_fen: i64) -> Result<(), CallError> {
    if amount_fen <= 0 {
        return Err(CallError::Invalid("amount_fen must be above 0".into()));
    }
    Ok(())
}

fn params(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_string(), value.clone()))
        .collect()
}

/// The wallet a customer-presented code belongs to, by its format.
fn wallet_of_code(code: &str) -> Option<PayType> {
    [PayType::Wechat, PayType::Alipay, PayType::Unionpay]
        .into_iter()
        .find(|pay_type| check_auth_code(*pay_type, code).is_ok())
}

fn origin(terminal: &TerminalRow) -> TerminalOrigin {
    TerminalOrigin {
        terminal_id: terminal.terminal_id.clone(),
        masked_pan: None,
        stored_at_ms: None,
        offline_seq: None,
    }
}

impl PaymentsState {
    fn now_ms(&self) -> i64 {
        self.gateway.clock.now_ms()
    }

    /// The terminal's own order named `out_trade_no`; another terminal's (or a merchant
    /// server's) order with that number is "not found".
    fn own_order(&self, terminal: &TerminalRow, out_trade_no: &str) -> Result<Order, CallError> {
        check_trade_no("out_trade_no", out_trade_no)?;
        let order = self.gateway.find_order(
            &terminal.merchant_id,
            &params(&[("out_trade_no", out_trade_no.to_string())]),
        )?;
        match self.gateway.store.terminal_origin(&order.trade_no)? {
            Some(origin) if origin.terminal_id == terminal.terminal_id => Ok(order),
            _ => Err(not_found().into()),
        }
    }

    fn pay_code(
        &self,
        terminal: &TerminalRow,
        request: PayCodeRequest,
    ) -> Result<Value, CallError> {
        check_trade_no("out_trade_no", &request.out_trade_no)?;
        check_amount(request.amount_fen)?;
        let pay_type = wallet_of_code(&request.auth_code).ok_or_else(|| {
            CallError::Api(ApiError::parameter(
                "INVALID_AUTH_CODE",
                "not a WeChat Pay, Alipay or UnionPay payment code",
            ))
        })?;
        let params = params(&[
            ("out_trade_no", request.out_trade_no),
            ("total_amount", format_yuan(request.amount_fen)),
            ("subject", request.subject),
            ("pay_type", pay_type.as_str().into()),
            ("auth_code", request.auth_code),
            ("terminal_id", terminal.terminal_id.clone()),
        ]);
        let order = self.create(terminal, &params, &origin(terminal), None)?;
        Ok(to_json(&payment_view(&order)))
    }

    fn create_qr(
        &self,
        terminal: &TerminalRow,
        request: CreateQrRequest,
    ) -> Result<Value, CallError> {
        check_trade_no("out_trade_no", &request.out_trade_no)?;
        check_amount(request.amount_fen)?;
        if !matches!(request.pay_type.as_str(), "alipay" | "wechat" | "unionpay") {
            return Err(CallError::Invalid(
                "pay_type must be alipay, wechat or unionpay".into(),
            ));
        }
        let params = params(&[
            ("out_trade_no", request.out_trade_no),
            ("total_amount", format_yuan(request.amount_fen)),
            ("subject", request.subject),
            ("pay_type", request.pay_type),
            ("terminal_id", terminal.terminal_id.clone()),
        ]);
        let order = self.create(terminal, &params, &origin(terminal), None)?;
        Ok(to_json(&payment_view(&order)))
    }

    /// Creates through the one payment implementation; an existing order of another terminal
    /// is a conflict (its request hash differs: the terminal id is part of the request).
    fn create(
        &self,
        terminal: &TerminalRow,
        params: &BTreeMap<String, String>,
        origin: &TerminalOrigin,
        refuse: Option<&'static str>,
    ) -> Result<Order, CallError> {
        let order = self.gateway.create_order(
            None,
            &terminal.merchant_id,
            params,
            Some(TerminalCreate { origin, refuse }),
            self.now_ms(),
        )?;
        Ok(order)
    }

    fn pay_card(
        &self,
        terminal: &TerminalRow,
        request: CardPaymentRequest,
    ) -> Result<Value, CallError> {
        check_trade_no("out_trade_no", &request.out_trade_no)?;
        check_amount(request.amount_fen)?;
        let card = payment::open_card(&request.card, self.terminals.card_seal_secret())
            .map_err(|e| CallError::Invalid(format!("card: {e}")))?;
        check_card_number(&card)?;
        let masked = payment::masked_pan(&card.pan);
        if masked != request.masked_pan {
            return Err(CallError::Invalid(
                "masked_pan does not match the sealed card".into(),
            ));
        }
        let now_ms = self.now_ms();
        let refuse = (!card_valid_at(&card, now_ms)).then_some("CARD_EXPIRED");
        let mut pairs = vec![
            ("out_trade_no", request.out_trade_no),
            ("total_amount", format_yuan(request.amount_fen)),
            ("subject", format!("card {masked}")),
            ("pay_type", PayType::Card.as_str().into()),
            ("auth_code", self.card_token(&card)),
            ("terminal_id", terminal.terminal_id.clone()),
        ];
        if let Some(stored_at_ms) = request.stored_at_ms {
            pairs.push(("stored_at_ms", stored_at_ms.to_string()));
        }
        let origin = TerminalOrigin {
            masked_pan: Some(masked.clone()),
            stored_at_ms: request.stored_at_ms,
            ..origin(terminal)
        };
        let order = self.create(terminal, &params(&pairs), &origin, refuse)?;
        tracing::info!(
            terminal = %terminal.terminal_id,
            trade_no = %order.trade_no,
            card = %masked,
            forwarded = request.stored_at_ms.is_some(),
            state = %order.state,
            "card payment"
        );
        if order.state == OrderState::Failed {
            self.alarm_stored_card_declined(&order, &origin)?;
        }
        Ok(to_json(&payment_view(&order)))
    }

    /// The channel's stand-in for the card: a keyed hash of the PAN (the same card gives the
    /// same token; the token does not give the PAN back).
    fn card_token(&self, card: &CardSecret) -> String {
        let Ok(mut keyer) = HmacSha256::new_from_slice(self.terminals.card_seal_secret()) else {
            return String::new();
        };
        keyer.update(CARD_TOKEN_DOMAIN);
        let key = keyer.finalize().into_bytes();
        let Ok(mut mac) = HmacSha256::new_from_slice(&key) else {
            return String::new();
        };
        mac.update(card.pan.as_bytes());
        let digest = hex::encode(mac.finalize().into_bytes());
        format!("tok{}", &digest[..40])
    }

    /// A forwarded (store-and-forward) card payment that ended FAILED or REVOKED raises one HQ
    /// alarm for its terminal (once, whichever path sees it first).
    fn alarm_stored_card_declined(
        &self,
        order: &Order,
        origin: &TerminalOrigin,
    ) -> Result<(), CallError> {
        let Some(stored_at_ms) = origin.stored_at_ms else {
            return Ok(());
        };
        if !matches!(order.state, OrderState::Failed | OrderState::Revoked) {
            return Ok(());
        }
        let detail = format!(
            "stored card payment {} ({}, {} CNY, taken offline at {stored_at_ms}) was declined when forwarded: {}",
            order.out_trade_no,
            origin.masked_pan.as_deref().unwrap_or("card"),
            format_yuan(order.total_fen),
            failure_words(order).unwrap_or_default()
        );
        let now_ms = self.now_ms();
        let terminal_id = origin.terminal_id.clone();
        let trade_no = order.trade_no.clone();
        self.terminals.with_store(|connection| {
            let tx = connection.transaction()?;
            // One alarm per order even if the endpoint and the push forwarder both see it.
            let fresh = tx.execute(
                "INSERT OR IGNORE INTO stored_card_declines (trade_no, terminal_id, at_ms) VALUES (?1, ?2, ?3)",
                rusqlite::params![trade_no, terminal_id, now_ms],
            )?;
            if fresh == 1 {
                super::store::raise_alarm(
                    &tx,
                    &terminal_id,
                    0,
                    ALARM_STORED_CARD_DECLINED,
                    &detail,
                    now_ms,
                )?;
            }
            tx.commit()?;
            Ok(())
        })?;
        tracing::warn!(terminal = %origin.terminal_id, trade_no = %order.trade_no, "stored card payment declined after forwarding");
        Ok(())
    }

    fn query(&self, terminal: &TerminalRow, request: PaymentRef) -> Result<Value, CallError> {
        let order = self.own_order(terminal, &request.out_trade_no)?;
        Ok(to_json(&payment_view(&order)))
    }

    fn reverse(&self, terminal: &TerminalRow, request: PaymentRef) -> Result<Value, CallError> {
        let order = self.own_order(terminal, &request.out_trade_no)?;
        let order = self.gateway.reverse_order(
            &terminal.merchant_id,
            &params(&[("out_trade_no", order.out_trade_no)]),
            self.now_ms(),
        )?;
        Ok(to_json(&payment_view(&order)))
    }

    fn close(&self, terminal: &TerminalRow, request: PaymentRef) -> Result<Value, CallError> {
        let order = self.own_order(terminal, &request.out_trade_no)?;
        match self.gateway.close_order(
            &terminal.merchant_id,
            &params(&[("out_trade_no", order.out_trade_no)]),
            self.now_ms(),
        ) {
            Ok(order) => Ok(to_json(&payment_view(&order))),
            // Already final (paid while closing, failed, reversed): the view says how it ended.
            Err((_, Some(order))) if payment::state::is_final(order.state.as_str()) => {
                Ok(to_json(&payment_view(&order)))
            }
            Err((error, _)) => Err(error.into()),
        }
    }

    fn refund(
        &self,
        terminal: &TerminalRow,
        request: TerminalRefundRequest,
    ) -> Result<Value, CallError> {
        check_trade_no("refund_no", &request.refund_no)?;
        check_amount(request.amount_fen)?;
        let order = self.own_order(terminal, &request.out_trade_no)?;
        let refund = self.gateway.refund_order(
            &terminal.merchant_id,
            &params(&[
                ("out_trade_no", order.out_trade_no),
                ("out_refund_no", request.refund_no),
                ("refund_amount", format_yuan(request.amount_fen)),
                ("refund_reason", "refund at the lane".into()),
            ]),
            self.now_ms(),
        )?;
        Ok(to_json(&TerminalRefundView {
            refund_no: refund.out_refund_no,
            out_trade_no: refund.out_trade_no,
            amount_fen: refund.amount_fen,
            state: refund.state.as_str().into(),
        }))
    }
}

fn check_card_number(card: &CardSecret) -> Result<(), CallError> {
    let digits = card.pan.len();
    if !(12..=19).contains(&digits) || !card.pan.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CallError::Invalid(
            "the card number read from the card is not 12-19 digits".into(),
        ));
    }
    if card.expiry().is_none() {
        return Err(CallError::Invalid(
            "the card's expiry is not YYMM with a month 01-12".into(),
        ));
    }
    Ok(())
}

/// A card is valid through the last day of its expiry month (Beijing time, the gateway clock).
fn card_valid_at(card: &CardSecret, now_ms: i64) -> bool {
    let Some((year, month)) = card.expiry() else {
        return false;
    };
    let today = ledger_day(now_ms);
    let current_year: i32 = today.get(..4).and_then(|y| y.parse().ok()).unwrap_or(0);
    let current_month: u32 = today.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(0);
    (year, month) >= (current_year, current_month)
}

// --------------------------------------------------------------------------------------------
// Routes

async fn pay_code(State(state): State<PaymentsState>, headers: HeaderMap, body: Bytes) -> Response {
    terminal_call(state, headers, body, PAY_CODE_PATH, |s, t, r| {
        s.pay_code(t, r)
    })
    .await
}

async fn create_qr(
    State(state): State<PaymentsState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    terminal_call(state, headers, body, CREATE_QR_PATH, |s, t, r| {
        s.create_qr(t, r)
    })
    .await
}

async fn pay_card(State(state): State<PaymentsState>, headers: HeaderMap, body: Bytes) -> Response {
    terminal_call(state, headers, body, PAY_CARD_PATH, |s, t, r| {
        s.pay_card(t, r)
    })
    .await
}

async fn query(State(state): State<PaymentsState>, headers: HeaderMap, body: Bytes) -> Response {
    terminal_call(state, headers, body, QUERY_PATH, |s, t, r| s.query(t, r)).await
}

async fn reverse(State(state): State<PaymentsState>, headers: HeaderMap, body: Bytes) -> Response {
    terminal_call(state, headers, body, REVERSE_PATH, |s, t, r| {
        s.reverse(t, r)
    })
    .await
}

async fn close(State(state): State<PaymentsState>, headers: HeaderMap, body: Bytes) -> Response {
    terminal_call(state, headers, body, CLOSE_PATH, |s, t, r| s.close(t, r)).await
}

async fn refund(State(state): State<PaymentsState>, headers: HeaderMap, body: Bytes) -> Response {
    terminal_call(state, headers, body, REFUND_PATH, |s, t, r| s.refund(t, r)).await
}

pub fn router(state: PaymentsState) -> Router {
    Router::new()
        .route(PAY_CODE_PATH, post(pay_code))
        .route(CREATE_QR_PATH, post(create_qr))
        .route(PAY_CARD_PATH, post(pay_card))
        .route(QUERY_PATH, post(query))
        .route(REVERSE_PATH, post(reverse))
        .route(CLOSE_PATH, post(close))
        .route(REFUND_PATH, post(refund))
        .layer(DefaultBodyLimit::max(MAX_PAYMENT_BODY_BYTES))
        .route(OFFLINE_PAY_PATH, get(offline_page))
        .with_state(state)
}

// --------------------------------------------------------------------------------------------
// Pushes

/// Pushes every state change of a terminal's order to that terminal (topic `payment`, body
/// `PaymentView`), and raises the alarm for a forwarded card declined later (by the rail
/// worker). Best effort: the lane also queries. Ends when `shutdown` turns true.
pub async fn forward_order_changes(
    state: PaymentsState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut changes = state.gateway.order_changes.subscribe();
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = shutdown.changed() => return,
        };
        let change = match change {
            Ok(change) => change,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "payment pushes fell behind; lanes will query");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let worker = state.clone();
        let pushed = tokio::task::spawn_blocking(move || worker.push_change(&change)).await;
        if let Ok(Err(error)) = pushed {
            tracing::warn!(?error, "payment push failed");
        }
    }
}

impl PaymentsState {
    fn push_change(&self, change: &OrderChange) -> Result<(), CallError> {
        let Some(origin) = self.gateway.store.terminal_origin(&change.trade_no)? else {
            return Ok(());
        };
        let Some(order) = self.gateway.store.order(&change.trade_no)? else {
            return Ok(());
        };
        self.alarm_stored_card_declined(&order, &origin)?;
        let delivered = self.terminals.push(
            &origin.terminal_id,
            "payment",
            to_json(&payment_view(&order)),
        );
        tracing::debug!(terminal = %origin.terminal_id, trade_no = %order.trade_no, to = %change.to, delivered, "payment pushed");
        Ok(())
    }
}

// --------------------------------------------------------------------------------------------
// Signed offline QR

/// Tables the payment module keeps in `terminals.sqlite` (created when the routes start).
pub const OFFLINE_MATCH_SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS offline_qr_matches (
    trade_no TEXT PRIMARY KEY,
    terminal_id TEXT NOT NULL,
    sale_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    matched_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stored_card_declines (
    trade_no TEXT PRIMARY KEY,
    terminal_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
";

/// Called by ingestion, in the transaction that stores a `sale_completed` entry: each
/// `offline_qr` tender names (in `reference`) the gateway order that was paid; the first sale
/// to name it is matched to it, a second is an HQ alarm. The ledger counts the sale's tender
/// once, like any tender; the gateway order itself is never added to the terminal ledger.
pub fn match_offline_qr_tenders(
    tx: &rusqlite::Transaction<'_>,
    terminal_id: &str,
    seq: u64,
    sale: &SaleCompleted,
) -> Result<(), String> {
    let to_string = |e: rusqlite::Error| e.to_string();
    for tender in sale
        .tenders
        .iter()
        .filter(|t| t.method == OFFLINE_QR_METHOD)
    {
        let Some(trade_no) = tender.reference.as_deref() else {
            continue;
        };
        tx.execute_batch(OFFLINE_MATCH_SCHEMA).map_err(to_string)?;
        let fresh = tx
            .execute(
                "INSERT OR IGNORE INTO offline_qr_matches (trade_no, terminal_id, sale_id, seq, amount_fen, matched_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    trade_no,
                    terminal_id,
                    sale.sale_id,
                    i64::try_from(seq).unwrap_or(i64::MAX),
                    tender.amount_fen,
                    sale.completed_at_ms
                ],
            )
            .map_err(to_string)?;
        if fresh == 0 {
            let (first_terminal, first_sale): (String, String) = tx
                .query_row(
                    "SELECT terminal_id, sale_id FROM offline_qr_matches WHERE trade_no = ?1",
                    [trade_no],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(to_string)?;
            if first_terminal != terminal_id || first_sale != sale.sale_id {
                let detail = format!(
                    "sale {} claims offline QR payment {trade_no}, already matched to sale {first_sale} of terminal {first_terminal}",
                    sale.sale_id
                );
                super::store::raise_alarm(
                    tx,
                    terminal_id,
                    seq,
                    ALARM_OFFLINE_QR_DOUBLE_CLAIM,
                    &detail,
                    sale.completed_at_ms,
                )
                .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// The sale a gateway order was matched to: (terminal, sale id, journal seq).
pub fn offline_qr_match(
    terminals: &TerminalService,
    trade_no: &str,
) -> Result<Option<(String, String, u64)>, TerminalError> {
    use rusqlite::OptionalExtension as _;
    terminals.with_store(|c| {
        Ok(c.query_row(
            "SELECT terminal_id, sale_id, seq FROM offline_qr_matches WHERE trade_no = ?1",
            [trade_no],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                ))
            },
        )
        .optional()?)
    })
}

enum PageError {
    Bad(String),
    Busy(String),
}

impl From<CallError> for PageError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Terminal(e) if e.status() >= 500 => PageError::Busy(e.to_string()),
            CallError::Terminal(e) => PageError::Bad(e.to_string()),
            CallError::Api(e) if e.status() >= 500 => PageError::Busy(e.message),
            CallError::Api(e) => PageError::Bad(e.message),
            CallError::Invalid(message) => PageError::Bad(message),
        }
    }
}

async fn offline_page(
    State(state): State<PaymentsState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (Some(o), Some(s)) = (query.get("o").cloned(), query.get("s").cloned()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "<p id=\"error\">这不是有效的付款码 · not a Lanepay offline order (needs o and s)</p>",
        );
    };
    let result = tokio::task::spawn_blocking(move || state.offline_order_page(&o, &s)).await;
    match result {
        Ok(Ok(body)) => page(StatusCode::OK, &body),
        Ok(Err(PageError::Bad(message))) => page(
            StatusCode::BAD_REQUEST,
            &format!(
                "<p id=\"error\">无法付款 · cannot pay this order: {}</p>",
                escape_html(&message)
            ),
        ),
        Ok(Err(PageError::Busy(message))) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "<p id=\"error\">请稍后再试 · try again shortly: {}</p>",
                escape_html(&message)
            ),
        ),
        Err(_) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "<p id=\"error\">请稍后再试 · try again shortly</p>",
        ),
    }
}

impl PaymentsState {
    /// Verifies the terminal's signature (terminal known and not revoked), the order's fields
    /// and its expiry, then creates or finds the order; the page links to the sandbox wallet,
    /// or shows the signed confirmation once paid.
    fn offline_order_page(&self, o: &str, s: &str) -> Result<String, PageError> {
        let bad = |e: payment::OfflineQrError| PageError::Bad(e.to_string());
        let claimed = payment::peek_offline_order(o).map_err(bad)?;
        let terminal = self
            .terminals
            .terminal(&claimed.terminal_id)
            .map_err(|e| PageError::Busy(e.to_string()))?
            .filter(|t| !t.revoked)
            .ok_or_else(|| PageError::Bad("the order's terminal is unknown or revoked".into()))?;
        let key = lanepay_sync::auth::parse_public_key(&terminal.public_key)
            .ok_or_else(|| PageError::Busy("the terminal's stored key is damaged".into()))?;
        let order = payment::verify_offline_order(o, s, &key).map_err(bad)?;
        check_offline_order(&order, &terminal)?;
        let existing = self
            .gateway
            .store
            .order_by_out(&terminal.merchant_id, &order.out_trade_no)
            .map_err(|e| PageError::Busy(e.to_string()))?;
        let gateway_order = match existing {
            Some(found) if is_paid(found.state) => found,
            _ => {
                order.check_not_expired(self.now_ms()).map_err(bad)?;
                self.create_offline_order(&terminal, &order, o, s)?
            }
        };
        Ok(self.offline_page_body(&order, &gateway_order))
    }

    fn create_offline_order(
        &self,
        terminal: &TerminalRow,
        order: &OfflineOrder,
        o: &str,
        s: &str,
    ) -> Result<Order, PageError> {
        let back = format!(
            "{}{OFFLINE_PAY_PATH}?o={o}&s={s}",
            self.gateway.config.public_base_url.trim_end_matches('/')
        );
        let params = params(&[
            ("out_trade_no", order.out_trade_no.clone()),
            ("total_amount", format_yuan(order.amount_fen)),
            (
                "subject",
                format!("Lanepay offline order {}", order.out_trade_no),
            ),
            ("pay_type", OFFLINE_QR_PAY_TYPE.as_str().into()),
            ("terminal_id", terminal.terminal_id.clone()),
            ("offline_seq", order.seq.to_string()),
            ("return_url", back),
        ]);
        let origin = TerminalOrigin {
            offline_seq: Some(order.seq),
            ..origin(terminal)
        };
        Ok(self.create(terminal, &params, &origin, None)?)
    }

    fn offline_page_body(&self, order: &OfflineOrder, gateway_order: &Order) -> String {
        let summary = format!(
            "<dl><dt>订单 · order</dt><dd id=\"out_trade_no\">{}</dd><dt>金额 · amount (CNY)</dt><dd id=\"amount\">{}</dd>\
             <dt>收银台 · lane</dt><dd>{}</dd></dl>",
            escape_html(&order.out_trade_no),
            format_yuan(order.amount_fen),
            escape_html(&order.terminal_id)
        );
        if is_paid(gateway_order.state) {
            let confirmation = OfflineConfirmation {
                out_trade_no: order.out_trade_no.clone(),
                terminal_id: order.terminal_id.clone(),
                amount_fen: gateway_order.total_fen,
                trade_no: gateway_order.trade_no.clone(),
                paid_at_ms: gateway_order
                    .pay_time_ms
                    .unwrap_or(gateway_order.created_at_ms),
            };
            let text = payment::encode_confirmation(&confirmation, &self.signing_key);
            // The trade number in clear too: what the customer quotes if the lane cannot scan.
            return format!(
                "{summary}<p id=\"result\" data-state=\"{}\">支付成功 · paid. 请向收银员出示 · show this to the cashier:</p>\
                 <p>交易号 · trade no <span id=\"trade_no\">{}</span></p>\
                 <div id=\"confirmation-qr\">{}</div><p><code id=\"confirmation\">{}</code></p>",
                gateway_order.state.as_str(),
                escape_html(&gateway_order.trade_no),
                qr_svg(&text),
                escape_html(&text)
            );
        }
        match gateway_order.state {
            OrderState::Created | OrderState::WaitPay => format!(
                "{summary}<p><a id=\"pay\" href=\"/sandbox/wallet/{}\">用钱包付款 · pay with the sandbox wallet</a></p>",
                gateway_order.trade_no
            ),
            state => format!(
                "{summary}<p id=\"result\" data-state=\"{}\">订单状态 · order state: {}</p>",
                state.as_str(),
                state.as_str()
            ),
        }
    }
}

fn is_paid(state: OrderState) -> bool {
    matches!(state, OrderState::Success | OrderState::Refund)
}

fn check_offline_order(order: &OfflineOrder, terminal: &TerminalRow) -> Result<(), PageError> {
    if order.merchant_id != terminal.merchant_id || order.store_id != terminal.store_id {
        return Err(PageError::Bad(
            "the order names another merchant or store than its terminal's".into(),
        ));
    }
    if order.currency != "CNY" {
        return Err(PageError::Bad("only CNY is supported".into()));
    }
    if order.amount_fen <= 0 {
        return Err(PageError::Bad("the amount must be above 0".into()));
    }
    payment::validate_trade_no(&order.out_trade_no)
        .map_err(|e| PageError::Bad(format!("out_trade_no {e}")))
}

/// The QR of `text` as an inline SVG (dark modules as one path), with a 4-module quiet zone.
pub fn qr_svg(text: &str) -> String {
    let Ok(code) = qrcode::QrCode::new(text.as_bytes()) else {
        return String::new();
    };
    let width = code.width();
    let colors = code.to_colors();
    let mut path = String::with_capacity(colors.len() * 8);
    for (index, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (x, y) = (index % width + 4, index / width + 4);
            path.push_str(&format!("M{x} {y}h1v1h-1z"));
        }
    }
    let size = width + 8;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" width=\"{px}\" height=\"{px}\" shape-rendering=\"crispEdges\">\
         <rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>",
        px = size * 6
    )
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Html(format!(
            "<!doctype html><html lang=\"zh\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
             <title>Lanepay 付款 · pay</title></head><body><h1>Lanepay 付款 · pay</h1>{body}</body></html>"
        )),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn card(expiry: &str) -> CardSecret {
        CardSecret {
            pan: "6212345678901234".into(),
            expiry_yymm: expiry.into(),
            pan_sequence: None,
            aid_hex: "A000000333010101".into(),
        }
    }

    #[test]
    fn cards_are_valid_through_their_expiry_month() {
        // 2026-11-22 12:00 Beijing time.
        let now_ms = 1_795_320_000_000;
        assert_eq!(ledger_day(now_ms), "2026-11-22");
        assert!(card_valid_at(&card("2611"), now_ms));
        assert!(card_valid_at(&card("2901"), now_ms));
        assert!(!card_valid_at(&card("2610"), now_ms));
        assert!(!card_valid_at(&card("2513"), now_ms));
    }

    #[test]
    fn wallets_are_told_apart_by_code_format() {
        assert_eq!(wallet_of_code("134567890123456789"), Some(PayType::Wechat));
        assert_eq!(wallet_of_code("284567890123456789"), Some(PayType::Alipay));
        assert_eq!(
            wallet_of_code("6234567890123456789"),
            Some(PayType::Unionpay)
        );
        assert_eq!(wallet_of_code("99"), None);
    }

    #[test]
    fn qr_svg_is_an_svg_of_dark_modules() {
        let svg = qr_svg("LPC1.abc.def");
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("h1v1h-1z"));
    }
}
