//! The gateway's business logic: authenticate a merchant request (merchant, pinned algorithm,
//! signature, timestamp window, nonce), validate it, apply idempotency, drive the order state
//! machine against the channel, and build the signed reply. Also the single steps that the
//! background workers repeat (rail polling and reversing, timeout close) and the sandbox wallet
//! actions. Everything here is synchronous and runs on the blocking pool; time comes from the
//! injected clock.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rsa::RsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use serde_json::{Map, Value, json};
use sha2::Digest as _;

use crate::channel::{
    Channel, ChannelError, PayOutcome, SandboxChannel, SandboxConfig, SandboxDb, TradeStatus,
};
use crate::clock::Clock;
use crate::error::{ApiError, ErrorClass, GatewayError, StoreError};
use crate::model::{Merchant, Order, OrderState, PayType, Refund, RefundState, check_auth_code};
use crate::money::{format_beijing_time, format_yuan, parse_yuan};
use crate::params::from_json_object;
use crate::signing::{self, SIGN_PARAM, SIGN_TYPE_PARAM, SignType};
use crate::store::{
    InsertOrder, NonceStore, ReserveRefund, Store, TerminalOrigin, TransitionChanges,
};

/// Requests whose `timestamp` is further than this from the gateway clock are refused, and
/// nonces are remembered this long past their timestamp.
pub const TIMESTAMP_WINDOW_MS: i64 = 300_000;
/// Default time after which unpaid orders close (issue 3: 30 minutes).
pub const DEFAULT_ORDER_TIMEOUT_MS: i64 = 30 * 60_000;
/// The rails' rule for code payments: poll this often...
pub const RAIL_POLL_INTERVAL_MS: i64 = 5_000;
/// ...for at most this long after the pay request, then reverse...
pub const RAIL_POLL_WINDOW_MS: i64 = 60_000;
/// ...but never earlier than this after the pay request.
pub const RAIL_MIN_REVERSE_DELAY_MS: i64 = 15_000;
/// When a channel does not answer a close, the timeout close tries again this much later.
const CLOSE_RETRY_MS: i64 = 5_000;
/// An unanswered (or never sent) refund is sent to the channel again this often.
pub const REFUND_RETRY_MS: i64 = 10_000;
/// Compare-and-set attempts when closing an order that another request is moving.
const CLOSE_CAS_ATTEMPTS: usize = 3;
/// Longest merchant-chosen identifier (out_trade_no, out_refund_no, nonce).
const MAX_ID_LEN: usize = 64;
/// Longest subject.
const MAX_SUBJECT_CHARS: usize = 256;
/// Size of the gateway's RSA key.
const GATEWAY_RSA_BITS: usize = 2048;

/// How the gateway is set up.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where `gateway.sqlite` and `sandbox.sqlite` live.
    pub data_dir: PathBuf,
    /// Unpaid orders close after this long.
    pub order_timeout_ms: i64,
    /// Sandbox channel seed and knobs.
    pub sandbox: SandboxConfig,
    /// Bearer token for `/admin/*`; `None` disables the operator endpoints.
    pub admin_token: Option<String>,
    /// Base URL of this gateway as payers reach it (pay_url points at its wallet page).
    pub public_base_url: String,
}

/// The five merchant API operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `/api/payment/create`
    Create,
    /// `/api/payment/query`
    Query,
    /// `/api/payment/refund`
    Refund,
    /// `/api/payment/refund/query`
    RefundQuery,
    /// `/api/payment/close`
    Close,
}

/// A reply to a merchant call: HTTP status and JSON fields, signed for `merchant` when known.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body fields, including `timestamp`, `sign_type` and `sign` when the merchant is known.
    pub fields: Map<String, Value>,
}

/// What the sandbox wallet page shows.
#[derive(Debug, Clone)]
pub struct WalletView {
    /// The order.
    pub order: Order,
    /// Whether the payer can still pay.
    pub payable: bool,
}

/// An order's state change, as told to whoever listens (the terminal push forwarder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderChange {
    /// The order.
    pub trade_no: String,
    /// The state it left.
    pub from: OrderState,
    /// The state it entered.
    pub to: OrderState,
}

/// How many order changes may wait for a slow listener before the oldest are dropped.
const ORDER_CHANGES_CAPACITY: usize = 1_024;

/// A terminal's create: where the order comes from, and a refusal decided before any channel
/// is asked (an expired card), which stores the order as FAILED with that sub code.
#[derive(Debug, Clone, Copy)]
pub struct TerminalCreate<'a> {
    /// The terminal and card details kept with the order.
    pub origin: &'a TerminalOrigin,
    /// Fail the order at once with this sub code instead of paying.
    pub refuse: Option<&'static str>,
}

/// The gateway: storage, clock, channels and configuration.
#[derive(Debug)]
pub struct Gateway {
    /// The database.
    pub store: Store,
    /// The nonce replay cache.
    pub nonces: NonceStore,
    /// The injected clock.
    pub clock: Arc<dyn Clock>,
    /// Configuration.
    pub config: GatewayConfig,
    sandboxes: BTreeMap<PayType, Arc<SandboxChannel>>,
    gateway_key: RsaPrivateKey,
    /// Woken when a notify is enqueued.
    pub notify_wakeup: tokio::sync::Notify,
    /// Woken when an order is created (new expiry).
    pub expiry_wakeup: tokio::sync::Notify,
    /// Woken when a code payment becomes PAYING.
    pub rail_wakeup: tokio::sync::Notify,
    /// Woken when a refund needs a retry.
    pub refund_wakeup: tokio::sync::Notify,
    /// Every order state change (best effort: a listener far behind misses the oldest).
    pub order_changes: tokio::sync::broadcast::Sender<OrderChange>,
}

/// An operation's reply fields, or its error with the order's fields when it is about one.
type OpResult = Result<Map<String, Value>, (ApiError, Option<Map<String, Value>>)>;

/// An authentication failure, with the merchant when it was identified (so the error is signed).
type AuthFailure = Box<(Option<Merchant>, ApiError)>;

fn param<'a>(params: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    params.get(key).map_or("", String::as_str)
}

fn required<'a>(params: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str, ApiError> {
    let value = param(params, key);
    if value.is_empty() {
        return Err(ApiError::parameter(
            "MISSING_PARAMETER",
            format!("parameter {key} is required"),
        ));
    }
    Ok(value)
}

fn check_identifier(key: &str, value: &str) -> Result<(), ApiError> {
    let ok = value.len() <= MAX_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::parameter(
            "INVALID_PARAMETER",
            format!("{key} must be 1-64 letters, digits, _ or -"),
        ))
    }
}

/// SHA-256 (hex) of the business parameters: everything but sign, sign_type, timestamp and
/// nonce, which legitimately change between retries of the same request.
fn request_hash(params: &BTreeMap<String, String>) -> String {
    let business: BTreeMap<String, String> = params
        .iter()
        .filter(|(key, _)| !matches!(key.as_str(), "sign" | "sign_type" | "timestamp" | "nonce"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    hex::encode(sha2::Sha256::digest(
        signing::canonical_string(&business).as_bytes(),
    ))
}

/// A fresh identifier: prefix, Beijing time to the millisecond, 16 random hex digits (seed 004:
/// 商户ID/前缀 + 时间戳 + 随机数, globally unique and traceable).
fn new_id(prefix: &str, now_ms: i64) -> Result<String, ApiError> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|error| {
        tracing::error!(%error, "no randomness");
        ApiError::retryable(
            ErrorClass::Busy,
            "SYSTEM_BUSY",
            "the gateway could not generate an id; retry later",
        )
    })?;
    let time: String = format_beijing_time(now_ms)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    Ok(format!(
        "{prefix}{time}{:03}{}",
        now_ms.rem_euclid(1_000),
        hex::encode_upper(random)
    ))
}

fn put(fields: &mut Map<String, Value>, key: &str, value: impl Into<String>) {
    let value = value.into();
    if !value.is_empty() {
        fields.insert(key.to_owned(), Value::String(value));
    }
}

fn success_fields() -> Map<String, Value> {
    let mut fields = Map::new();
    put(&mut fields, "code", "SUCCESS");
    put(&mut fields, "msg", "OK");
    fields
}

fn error_fields(error: &ApiError) -> Map<String, Value> {
    let mut fields = Map::new();
    put(&mut fields, "code", "FAIL");
    put(&mut fields, "msg", error.message.clone());
    fields.insert("error_code".into(), json!(error.class.code()));
    put(&mut fields, "sub_code", error.sub_code);
    fields.insert("retryable".into(), json!(error.retryable));
    fields
}

fn failed_payment_error(sub_code: &str) -> ApiError {
    match sub_code {
        "INSUFFICIENT_BALANCE" => ApiError::new(
            ErrorClass::Balance,
            "INSUFFICIENT_BALANCE",
            "the payer's balance is insufficient; ask for another payment method",
        ),
        "AUTH_CODE_USED" => ApiError::parameter(
            "AUTH_CODE_USED",
            "this payment code was already used; ask the payer to refresh the code",
        ),
        "AUTH_CODE_INVALID" => {
            ApiError::parameter("INVALID_AUTH_CODE", "the channel refused this payment code")
        }
        "USER_DECLINED" => ApiError::new(
            ErrorClass::State,
            "USER_DECLINED",
            "the payer declined the payment",
        ),
        _ => ApiError::new(
            ErrorClass::State,
            "PAYMENT_FAILED",
            "the channel declined the payment",
        ),
    }
}

fn state_error(order: &Order, wanted: &str) -> ApiError {
    ApiError::new(
        ErrorClass::State,
        "ILLEGAL_TRANSITION",
        format!("order is {}; cannot {wanted}", order.state),
    )
}

fn channel_busy(error: &ChannelError) -> ApiError {
    tracing::warn!(%error, "channel call failed");
    ApiError::retryable(
        ErrorClass::Busy,
        "CHANNEL_UNAVAILABLE",
        format!("the channel could not complete the call ({error}); retry later"),
    )
}

impl Gateway {
    /// Opens the data directory: database, sandbox channels and the gateway's RSA key (created
    /// on first use).
    pub fn open(config: GatewayConfig, clock: Arc<dyn Clock>) -> Result<Self, GatewayError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let store = Store::open(&config.data_dir.join("gateway.sqlite"))?;
        let nonces = NonceStore::open(&config.data_dir.join("nonces.sqlite"))?;
        let sandbox_db = Arc::new(
            SandboxDb::open(&config.data_dir.join("sandbox.sqlite"))
                .map_err(|e| GatewayError::Invalid(e.to_string()))?,
        );
        let mut sandboxes = BTreeMap::new();
        for pay_type in PayType::ALL {
            let knobs = config
                .sandbox
                .channels
                .get(pay_type.as_str())
                .cloned()
                .unwrap_or_default();
            sandboxes.insert(
                pay_type,
                Arc::new(SandboxChannel::new(
                    pay_type,
                    config.sandbox.seed,
                    knobs,
                    sandbox_db.clone(),
                )),
            );
        }
        let gateway_key = load_or_create_gateway_key(&store)?;
        Ok(Self {
            store,
            nonces,
            clock,
            config,
            sandboxes,
            gateway_key,
            notify_wakeup: tokio::sync::Notify::new(),
            expiry_wakeup: tokio::sync::Notify::new(),
            rail_wakeup: tokio::sync::Notify::new(),
            refund_wakeup: tokio::sync::Notify::new(),
            order_changes: tokio::sync::broadcast::channel(ORDER_CHANGES_CAPACITY).0,
        })
    }

    fn channel(&self, pay_type: PayType) -> Result<&SandboxChannel, ApiError> {
        self.sandboxes
            .get(&pay_type)
            .map(Arc::as_ref)
            .ok_or_else(|| {
                ApiError::retryable(
                    ErrorClass::Busy,
                    "CHANNEL_UNAVAILABLE",
                    format!("no channel for {pay_type}"),
                )
            })
    }

    /// The gateway's RSA public key (responses to RSA merchants are signed with its private key).
    pub fn gateway_public_key(&self) -> rsa::RsaPublicKey {
        self.gateway_key.to_public_key()
    }

    /// Handles one merchant API call from its raw body.
    pub fn handle(&self, operation: Operation, body: &[u8]) -> Reply {
        let now_ms = self.clock.now_ms();
        let value: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(error) => {
                return self.error_reply(
                    None,
                    &ApiError::parameter(
                        "MALFORMED_JSON",
                        format!("the body is not valid JSON: {error}"),
                    ),
                    now_ms,
                );
            }
        };
        let params = match from_json_object(&value) {
            Ok(params) => params,
            Err(error) => {
                return self.error_reply(
                    None,
                    &ApiError::parameter("INVALID_PARAMETER", error.to_string()),
                    now_ms,
                );
            }
        };
        let merchant = match self.authenticate(&params, now_ms) {
            Ok(merchant) => merchant,
            Err(failure) => {
                // Authentication failures are what an attack or a misconfigured merchant
                // looks like: worth a warning with the reason, never the secret or signature.
                tracing::warn!(
                    sub_code = failure.1.sub_code,
                    ?operation,
                    "merchant request not authenticated"
                );
                return self.error_reply(failure.0.as_ref(), &failure.1, now_ms);
            }
        };
        let result = match operation {
            Operation::Create => self.create(&merchant, &params, now_ms),
            Operation::Query => self.query(&merchant, &params),
            Operation::Refund => self.refund(&merchant, &params, now_ms),
            Operation::RefundQuery => self.refund_query(&merchant, &params, now_ms),
            Operation::Close => self.close(&merchant, &params, now_ms),
        };
        match result {
            Ok(fields) => Reply {
                status: 200,
                fields: self.sign_fields(&merchant, fields, now_ms),
            },
            Err((error, extra)) => {
                tracing::info!(
                    merchant_id = %merchant.merchant_id,
                    ?operation,
                    error_code = error.class.code(),
                    sub_code = error.sub_code,
                    "merchant request refused"
                );
                // The error's own fields win over the order's; one signature over both.
                let mut fields = error_fields(&error);
                for (key, value) in extra.unwrap_or_default() {
                    fields.entry(key).or_insert(value);
                }
                Reply {
                    status: error.status(),
                    fields: self.sign_fields(&merchant, fields, now_ms),
                }
            }
        }
    }

    /// An error reply, signed when the merchant is known.
    pub fn error_reply(&self, merchant: Option<&Merchant>, error: &ApiError, now_ms: i64) -> Reply {
        let fields = error_fields(error);
        let fields = match merchant {
            Some(merchant) => self.sign_fields(merchant, fields, now_ms),
            None => {
                let mut fields = fields;
                fields.insert("timestamp".into(), json!(now_ms));
                fields
            }
        };
        Reply {
            status: error.status(),
            fields,
        }
    }

    /// Adds `timestamp`, `sign_type` and `sign` for the merchant's pinned algorithm.
    pub fn sign_fields(
        &self,
        merchant: &Merchant,
        mut fields: Map<String, Value>,
        now_ms: i64,
    ) -> Map<String, Value> {
        fields.remove(SIGN_PARAM);
        fields.insert("timestamp".into(), json!(now_ms));
        fields.insert(SIGN_TYPE_PARAM.into(), json!(merchant.sign_type.as_str()));
        let Ok(params) = from_json_object(&Value::Object(fields.clone())) else {
            tracing::error!("reply fields are not signable; sending unsigned");
            return fields;
        };
        let sign = match merchant.sign_type {
            SignType::HmacSha256 => {
                signing::hmac_sign(&params, merchant.secret.as_deref().unwrap_or_default())
            }
            SignType::RsaSha256 => signing::rsa_sign(&params, &self.gateway_key),
        };
        match sign {
            Ok(sign) => {
                fields.insert(SIGN_PARAM.into(), Value::String(sign));
            }
            Err(error) => tracing::error!(%error, "signing a reply failed; sending unsigned"),
        }
        fields
    }

    /// Checks merchant, algorithm, signature, timestamp and nonce, in that order: nothing an
    /// unauthenticated caller sends is stored (the nonce is recorded only after the signature
    /// checked out).
    fn authenticate(
        &self,
        params: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Merchant, AuthFailure> {
        let merchant_id = required(params, "merchant_id").map_err(|e| Box::new((None, e)))?;
        let merchant = match self.store.merchant(merchant_id) {
            Ok(Some(merchant)) => merchant,
            Ok(None) => {
                return Err(Box::new((
                    None,
                    ApiError::signature(
                        "MERCHANT_NOT_FOUND",
                        format!("merchant {merchant_id} is not registered"),
                    ),
                )));
            }
            Err(error) => return Err(Box::new((None, error.into()))),
        };
        let fail = |error: ApiError| Box::new((Some(merchant.clone()), error));
        let sign = param(params, SIGN_PARAM);
        if sign.is_empty() {
            return Err(fail(ApiError::signature(
                "SIGN_MISSING",
                "parameter sign is required",
            )));
        }
        let claimed_type = param(params, SIGN_TYPE_PARAM);
        if !claimed_type.is_empty() && claimed_type != merchant.sign_type.as_str() {
            return Err(fail(ApiError::signature(
                "SIGN_TYPE_MISMATCH",
                format!(
                    "this merchant signs with {}; {claimed_type} is refused",
                    merchant.sign_type
                ),
            )));
        }
        let valid = match merchant.sign_type {
            SignType::HmacSha256 => {
                signing::hmac_verify(params, merchant.secret.as_deref().unwrap_or_default(), sign)
            }
            SignType::RsaSha256 => merchant
                .public_key_der
                .as_deref()
                .and_then(|der| rsa::pkcs8::DecodePublicKey::from_public_key_der(der).ok())
                .is_some_and(|key: rsa::RsaPublicKey| signing::rsa_verify(params, &key, sign)),
        };
        if !valid {
            return Err(fail(ApiError::signature(
                "SIGN_INVALID",
                "the signature does not match; check the signing string and the key",
            )));
        }
        let timestamp_text = required(params, "timestamp").map_err(&fail)?;
        let Ok(timestamp_ms) = timestamp_text.parse::<i64>() else {
            return Err(fail(ApiError::parameter(
                "INVALID_PARAMETER",
                "timestamp must be milliseconds since the epoch",
            )));
        };
        if (now_ms - timestamp_ms).abs() > TIMESTAMP_WINDOW_MS {
            return Err(fail(ApiError::signature(
                "TIMESTAMP_OUT_OF_WINDOW",
                format!(
                    "timestamp is more than 300 s from the gateway clock ({now_ms}); check the merchant server's clock"
                ),
            )));
        }
        let nonce = param(params, "nonce");
        if !nonce.is_empty() {
            check_identifier("nonce", nonce).map_err(&fail)?;
            let expires_at_ms = timestamp_ms.max(now_ms) + TIMESTAMP_WINDOW_MS;
            match self
                .nonces
                .remember(&merchant.merchant_id, nonce, now_ms, expires_at_ms)
            {
                Ok(true) => {}
                Ok(false) => {
                    return Err(fail(ApiError::signature(
                        "NONCE_REPLAYED",
                        "this nonce was already used; send a new nonce with each request",
                    )));
                }
                Err(error) => return Err(fail(error.into())),
            }
        }
        Ok(merchant)
    }

    fn order_fields(order: &Order) -> Map<String, Value> {
        let mut fields = success_fields();
        put(&mut fields, "trade_no", order.trade_no.clone());
        put(&mut fields, "out_trade_no", order.out_trade_no.clone());
        put(&mut fields, "trade_status", order.state.as_str());
        fields
    }

    fn create_reply(order: &Order) -> OpResult {
        let mut fields = Self::order_fields(order);
        put(&mut fields, "pay_url", order.pay_url.clone());
        put(&mut fields, "prepay_id", order.prepay_id.clone());
        if order.state == OrderState::Failed {
            fields.remove("code");
            fields.remove("msg");
            return Err((failed_payment_error(&order.fail_sub_code), Some(fields)));
        }
        Ok(fields)
    }

    fn create(
        &self,
        merchant: &Merchant,
        params: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> OpResult {
        let order = self
            .create_order(Some(merchant), &merchant.merchant_id, params, None, now_ms)
            .map_err(|e| (e, None))?;
        Self::create_reply(&order)
    }

    /// Creates (or, for the same request, finds) an order and, for a code payment, pays it:
    /// the one implementation behind the merchant API (`merchant` given: it has a notify URL)
    /// and the terminal API (`terminal` given: no notify, the terminal hears by push).
    pub fn create_order(
        &self,
        merchant: Option<&Merchant>,
        merchant_id: &str,
        params: &BTreeMap<String, String>,
        terminal: Option<TerminalCreate<'_>>,
        now_ms: i64,
    ) -> Result<Order, ApiError> {
        let order = self.validate_create(merchant, merchant_id, params, now_ms)?;
        let inserted = match terminal {
            Some(terminal) => self
                .store
                .insert_terminal_order(&order, terminal.origin, now_ms)?,
            None => self.store.insert_order(&order, now_ms)?,
        };
        match inserted {
            InsertOrder::Existing(existing) => {
                if existing.request_hash != order.request_hash {
                    return Err(ApiError::parameter(
                        "OUT_TRADE_NO_CONFLICT",
                        "out_trade_no was already used with different parameters",
                    ));
                }
                Ok(*existing)
            }
            InsertOrder::Inserted => {
                self.expiry_wakeup.notify_one();
                if let Some(sub_code) = terminal.and_then(|t| t.refuse) {
                    let changes = TransitionChanges {
                        fail_sub_code: Some(sub_code),
                        ..TransitionChanges::default()
                    };
                    self.move_order(&order, OrderState::Failed, &changes, now_ms)?;
                    return Ok(self.store.order(&order.trade_no)?.unwrap_or(order));
                }
                if order.by_auth_code {
                    self.rail_wakeup.notify_one();
                    self.pay_with_code(order, param(params, "auth_code"), now_ms)
                } else {
                    Ok(order)
                }
            }
        }
    }

    fn validate_create(
        &self,
        merchant: Option<&Merchant>,
        merchant_id: &str,
        params: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Order, ApiError> {
        let out_trade_no = required(params, "out_trade_no")?;
        check_identifier("out_trade_no", out_trade_no)?;
        let total_fen = parse_yuan(required(params, "total_amount")?).map_err(|error| {
            ApiError::parameter("INVALID_AMOUNT", format!("total_amount: {error}"))
        })?;
        let currency = match param(params, "currency") {
            "" | "CNY" => "CNY",
            _ => {
                return Err(ApiError::parameter(
                    "UNSUPPORTED_CURRENCY",
                    "only CNY is supported",
                ));
            }
        };
        let subject = required(params, "subject")?;
        if subject.chars().count() > MAX_SUBJECT_CHARS {
            return Err(ApiError::parameter(
                "INVALID_PARAMETER",
                "subject is longer than 256 characters",
            ));
        }
        let pay_type: PayType = required(params, "pay_type")?.parse().map_err(|()| {
            ApiError::parameter(
                "INVALID_PAY_TYPE",
                "pay_type must be alipay, wechat, unionpay or card",
            )
        })?;
        let notify_url = match merchant {
            Some(merchant) => {
                let notify_url = required(params, "notify_url")?;
                check_notify_url(merchant, notify_url)?;
                notify_url
            }
            None => "",
        };
        let return_url = param(params, "return_url");
        if !(return_url.is_empty()
            || return_url.starts_with("https://")
            || return_url.starts_with("http://"))
        {
            return Err(ApiError::parameter(
                "INVALID_PARAMETER",
                "return_url must be an http(s) URL",
            ));
        }
        let auth_code = param(params, "auth_code");
        if !auth_code.is_empty() && check_auth_code(pay_type, auth_code).is_err() {
            return Err(ApiError::parameter(
                "INVALID_AUTH_CODE",
                format!("auth_code does not have the {pay_type} payment code format"),
            ));
        }
        if auth_code.is_empty() && pay_type == PayType::Card {
            return Err(ApiError::parameter(
                "AUTH_CODE_REQUIRED",
                "card payments need auth_code (the acquirer card token)",
            ));
        }
        let trade_no = new_id("T", now_ms)?;
        let by_auth_code = !auth_code.is_empty();
        let (state, pay_url, prepay_id) = if by_auth_code {
            (OrderState::Paying, String::new(), String::new())
        } else {
            let pay_url = format!(
                "{}/sandbox/wallet/{trade_no}",
                self.config.public_base_url.trim_end_matches('/')
            );
            let prepay_id = if pay_type == PayType::Wechat {
                format!("wx{trade_no}")
            } else {
                String::new()
            };
            (OrderState::Created, pay_url, prepay_id)
        };
        Ok(Order {
            trade_no,
            merchant_id: merchant_id.to_owned(),
            out_trade_no: out_trade_no.to_owned(),
            request_hash: request_hash(params),
            pay_type,
            total_fen,
            currency: currency.to_owned(),
            subject: subject.to_owned(),
            body: param(params, "body").to_owned(),
            notify_url: notify_url.to_owned(),
            return_url: return_url.to_owned(),
            state,
            pay_url,
            prepay_id,
            paid_fen: 0,
            refunded_fen: 0,
            pay_time_ms: None,
            fail_sub_code: String::new(),
            by_auth_code,
            created_at_ms: now_ms,
            expire_at_ms: now_ms + self.config.order_timeout_ms,
            rail_pay_at_ms: by_auth_code.then_some(now_ms),
            rail_next_at_ms: by_auth_code.then_some(now_ms + RAIL_POLL_INTERVAL_MS),
            rail_reversing: false,
        })
    }

    /// Sends a code payment. The order is already stored as PAYING with its rail schedule, so a
    /// crash or a lost answer here is resolved by the rail worker (poll, then reverse).
    fn pay_with_code(&self, order: Order, auth_code: &str, now_ms: i64) -> Result<Order, ApiError> {
        let channel = self.channel(order.pay_type)?;
        let outcome = channel.pay_with_code(&order.trade_no, auth_code, order.total_fen, now_ms);
        let (to, changes) = match outcome {
            Ok(PayOutcome::Success { paid_at_ms }) => (
                OrderState::Success,
                TransitionChanges {
                    paid: Some((order.total_fen, paid_at_ms)),
                    ..TransitionChanges::default()
                },
            ),
            Ok(PayOutcome::InsufficientBalance) => (
                OrderState::Failed,
                TransitionChanges {
                    fail_sub_code: Some("INSUFFICIENT_BALANCE"),
                    ..TransitionChanges::default()
                },
            ),
            Err(ChannelError::AuthCodeUsed) => (
                OrderState::Failed,
                TransitionChanges {
                    fail_sub_code: Some("AUTH_CODE_USED"),
                    ..TransitionChanges::default()
                },
            ),
            Err(ChannelError::AuthCodeInvalid) => (
                OrderState::Failed,
                TransitionChanges {
                    fail_sub_code: Some("AUTH_CODE_INVALID"),
                    ..TransitionChanges::default()
                },
            ),
            Err(ChannelError::Unavailable) => {
                // The request surely did not reach the channel: forget the order, so the same
                // out_trade_no can be sent again, and say so (this is the only failure after
                // which trying again, even elsewhere, is safe).
                self.store.discard_unsent_order(&order.trade_no)?;
                return Err(ApiError::retryable(
                    ErrorClass::Busy,
                    "CHANNEL_UNAVAILABLE",
                    "the channel could not be reached and nothing was charged; retry later",
                ));
            }
            Ok(PayOutcome::Paying) | Err(_) => return Ok(order),
        };
        self.move_order(&order, to, &changes, now_ms)?;
        Ok(self.store.order(&order.trade_no)?.unwrap_or(order))
    }

    /// Compare-and-set transition from the state the caller saw. `Ok(None)` if someone else
    /// moved the order first.
    fn move_order(
        &self,
        order: &Order,
        to: OrderState,
        changes: &TransitionChanges,
        now_ms: i64,
    ) -> Result<Option<Order>, StoreError> {
        if !order.state.can_become(to) {
            return Ok(None);
        }
        let moved = self
            .store
            .transition(&order.trade_no, order.state, to, changes, now_ms)?;
        if moved.is_some() {
            tracing::info!(trade_no = %order.trade_no, from = %order.state, %to, "order state changed");
            // No listener is fine: nothing but terminals' pushes depends on it.
            let _ = self.order_changes.send(OrderChange {
                trade_no: order.trade_no.clone(),
                from: order.state,
                to,
            });
            if to.is_notified() {
                self.notify_wakeup.notify_one();
            }
        }
        Ok(moved)
    }

    /// The merchant's order named by `out_trade_no` (or `trade_no`) in `params`.
    pub fn find_order(
        &self,
        merchant_id: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Order, ApiError> {
        let out_trade_no = param(params, "out_trade_no");
        let trade_no = param(params, "trade_no");
        let found = if !out_trade_no.is_empty() {
            self.store.order_by_out(merchant_id, out_trade_no)?
        } else if !trade_no.is_empty() {
            self.store
                .order(trade_no)?
                .filter(|order| order.merchant_id == merchant_id)
        } else {
            return Err(ApiError::parameter(
                "MISSING_PARAMETER",
                "parameter out_trade_no (or trade_no) is required",
            ));
        };
        found.ok_or_else(|| {
            ApiError::new(
                ErrorClass::NotFound,
                "ORDER_NOT_FOUND",
                "no such order for this merchant",
            )
        })
    }

    fn query(&self, merchant: &Merchant, params: &BTreeMap<String, String>) -> OpResult {
        let order = self
            .find_order(&merchant.merchant_id, params)
            .map_err(|e| (e, None))?;
        let mut fields = Self::order_fields(&order);
        put(&mut fields, "total_amount", format_yuan(order.total_fen));
        if order.paid_fen > 0 {
            put(&mut fields, "receipt_amount", format_yuan(order.paid_fen));
        }
        if let Some(pay_time_ms) = order.pay_time_ms {
            put(&mut fields, "pay_time", format_beijing_time(pay_time_ms));
        }
        put(&mut fields, "pay_type", order.pay_type.as_str());
        let refunds = self
            .store
            .refunds_of(&order.trade_no)
            .map_err(|e| (e.into(), None))?;
        let refunded_fen: i64 = refunds
            .iter()
            .filter(|r| r.state == RefundState::Success)
            .map(|r| r.amount_fen)
            .sum();
        if refunded_fen > 0 {
            put(&mut fields, "refund_amount", format_yuan(refunded_fen));
        }
        Ok(fields)
    }

    fn close(
        &self,
        merchant: &Merchant,
        params: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> OpResult {
        match self.close_order(&merchant.merchant_id, params, now_ms) {
            Ok(order) => Ok(Self::order_fields(&order)),
            Err((error, order)) => Err((error, order.as_ref().map(Self::order_fields))),
        }
    }

    /// Closes an unpaid order (merchant and terminal API). The error carries the order when
    /// the refusal is about its state.
    #[allow(clippy::result_large_err)]
    pub fn close_order(
        &self,
        merchant_id: &str,
        params: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Order, (ApiError, Option<Order>)> {
        let order = self
            .find_order(merchant_id, params)
            .map_err(|e| (e, None))?;
        match order.state {
            OrderState::Closed => Ok(order),
            OrderState::Created | OrderState::WaitPay => {
                let closed = self
                    .close_at_channel(&order, now_ms)
                    .map_err(|e| (e, None))?;
                if closed.state == OrderState::Closed {
                    Ok(closed)
                } else {
                    Err((state_error(&closed, "close"), Some(closed)))
                }
            }
            OrderState::Paying => Err((
                ApiError::retryable(
                    ErrorClass::State,
                    "ORDER_PAYING",
                    "the payment is being confirmed; the gateway resolves it within 60 s (query, then reverse)",
                ),
                Some(order),
            )),
            _ => Err((state_error(&order, "close"), Some(order))),
        }
    }

    /// Reverses (撤销) a code payment whose outcome the caller gave up on: the channel undoes
    /// it (refunding a late charge) and the order becomes REVOKED. Idempotent: a REVOKED order
    /// is returned as it is, and so is any other final state (SUCCESS is then for a refund).
    /// An unpaid QR order is closed instead. An unanswered reverse is left to the rail worker,
    /// which repeats it.
    pub fn reverse_order(
        &self,
        merchant_id: &str,
        params: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Order, ApiError> {
        let order = self.find_order(merchant_id, params)?;
        match order.state {
            OrderState::Paying => {
                let channel = self.channel(order.pay_type)?;
                match channel.reverse(&order.trade_no, now_ms) {
                    Ok(refunded_fen) => {
                        tracing::info!(trade_no = %order.trade_no, refunded_fen, "code payment reversed on request");
                        self.move_order(
                            &order,
                            OrderState::Revoked,
                            &TransitionChanges::default(),
                            now_ms,
                        )?;
                    }
                    Err(error) => {
                        self.store.set_rail_schedule(
                            &order.trade_no,
                            now_ms + RAIL_POLL_INTERVAL_MS,
                            true,
                        )?;
                        self.rail_wakeup.notify_one();
                        return Err(channel_busy(&error));
                    }
                }
                Ok(self.store.order(&order.trade_no)?.unwrap_or(order))
            }
            OrderState::Created | OrderState::WaitPay => {
                match self.close_order(merchant_id, params, now_ms) {
                    Ok(order) => Ok(order),
                    Err((_, Some(order))) => Ok(order),
                    Err((error, None)) => Err(error),
                }
            }
            _ => Ok(order),
        }
    }

    /// Closes an unpaid order at the channel, then in the database. If the payer won the race,
    /// the order becomes SUCCESS instead. Returns the order as it ends up.
    fn close_at_channel(&self, order: &Order, now_ms: i64) -> Result<Order, ApiError> {
        let channel = self.channel(order.pay_type)?;
        match channel.close(&order.trade_no, now_ms) {
            Ok(()) => {
                // The order may have moved CREATED → WAIT_PAY (scanned) since it was read; the
                // channel trade is closed either way, so close from whatever open state it has.
                let mut current = order.clone();
                for _ in 0..CLOSE_CAS_ATTEMPTS {
                    if self
                        .move_order(
                            &current,
                            OrderState::Closed,
                            &TransitionChanges::default(),
                            now_ms,
                        )?
                        .is_some()
                    {
                        break;
                    }
                    match self.store.order(&order.trade_no)? {
                        Some(fresh)
                            if matches!(fresh.state, OrderState::Created | OrderState::WaitPay) =>
                        {
                            current = fresh;
                        }
                        _ => break,
                    }
                }
            }
            Err(ChannelError::AlreadyPaid) => {
                if let Ok(TradeStatus::Success { paid_at_ms }) =
                    channel.query(&order.trade_no, now_ms)
                {
                    let changes = TransitionChanges {
                        paid: Some((order.total_fen, paid_at_ms)),
                        ..TransitionChanges::default()
                    };
                    self.move_order(order, OrderState::Success, &changes, now_ms)?;
                }
            }
            Err(error) => return Err(channel_busy(&error)),
        }
        Ok(self
            .store
            .order(&order.trade_no)?
            .unwrap_or_else(|| order.clone()))
    }

    fn refund_fields(refund: &Refund) -> Map<String, Value> {
        let mut fields = success_fields();
        put(&mut fields, "refund_no", refund.refund_no.clone());
        put(&mut fields, "out_refund_no", refund.out_refund_no.clone());
        put(&mut fields, "trade_no", refund.trade_no.clone());
        put(&mut fields, "out_trade_no", refund.out_trade_no.clone());
        put(&mut fields, "refund_amount", format_yuan(refund.amount_fen));
        put(&mut fields, "refund_status", refund.state.as_str());
        if let Some(finished_at_ms) = refund.finished_at_ms {
            put(
                &mut fields,
                "refund_time",
                format_beijing_time(finished_at_ms),
            );
        }
        fields
    }

    /// Sends a PROCESSING refund to the channel (again: the channel is idempotent by refund_no)
    /// and records the answer. A refund with no answer stays PROCESSING, its amount reserved.
    fn push_refund(
        &self,
        refund: &Refund,
        pay_type: PayType,
        now_ms: i64,
    ) -> Result<Refund, ApiError> {
        if refund.state != RefundState::Processing {
            return Ok(refund.clone());
        }
        let channel = self.channel(pay_type)?;
        match channel.refund(
            &refund.trade_no,
            &refund.refund_no,
            refund.amount_fen,
            now_ms,
        ) {
            Ok(()) => {
                self.store.finish_refund(&refund.refund_no, true, now_ms)?;
            }
            Err(ChannelError::NoAnswer | ChannelError::Unavailable) => {
                // Unknown outcome: the amount stays reserved and the refund worker asks again
                // (the channel is idempotent by refund_no, so asking twice refunds once).
                self.store
                    .schedule_refund_retry(&refund.refund_no, now_ms + REFUND_RETRY_MS)?;
                self.refund_wakeup.notify_one();
            }
            Err(error) => {
                tracing::warn!(%error, refund_no = %refund.refund_no, "channel refused the refund");
                self.store.finish_refund(&refund.refund_no, false, now_ms)?;
            }
        }
        Ok(self
            .store
            .refund_by_out(&refund.merchant_id, &refund.out_refund_no)?
            .unwrap_or_else(|| refund.clone()))
    }

    fn refund(
        &self,
        merchant: &Merchant,
        params: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> OpResult {
        self.refund_order(&merchant.merchant_id, params, now_ms)
            .map(|refund| Self::refund_fields(&refund))
            .map_err(|e| (e, None))
    }

    /// Refunds part or all of a paid order (merchant and terminal API), idempotent by
    /// `out_refund_no`; never more than what is left of the paid amount.
    pub fn refund_order(
        &self,
        merchant_id: &str,
        params: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Refund, ApiError> {
        let out_refund_no = required(params, "out_refund_no")?;
        check_identifier("out_refund_no", out_refund_no)?;
        let amount_fen = parse_yuan(required(params, "refund_amount")?).map_err(|error| {
            ApiError::parameter("INVALID_AMOUNT", format!("refund_amount: {error}"))
        })?;
        let reason = required(params, "refund_reason")?;
        let order = self.find_order(merchant_id, params)?;
        let refund = Refund {
            refund_no: new_id("R", now_ms)?,
            merchant_id: merchant_id.to_owned(),
            out_refund_no: out_refund_no.to_owned(),
            trade_no: order.trade_no.clone(),
            out_trade_no: order.out_trade_no.clone(),
            request_hash: request_hash(params),
            amount_fen,
            reason: reason.to_owned(),
            state: RefundState::Processing,
            created_at_ms: now_ms,
            finished_at_ms: None,
        };
        match self
            .store
            .reserve_refund(&refund, now_ms + REFUND_RETRY_MS)?
        {
            ReserveRefund::Existing(existing) => {
                if existing.request_hash != refund.request_hash {
                    return Err(ApiError::parameter(
                        "OUT_REFUND_NO_CONFLICT",
                        "out_refund_no was already used with different parameters",
                    ));
                }
                self.push_refund(&existing, order.pay_type, now_ms)
            }
            ReserveRefund::Exceeds { refundable_fen } => Err(ApiError::new(
                ErrorClass::State,
                "REFUND_EXCEEDS_PAID",
                format!(
                    "refund_amount is above the refundable amount {}",
                    format_yuan(refundable_fen)
                ),
            )),
            ReserveRefund::NotRefundable(state) => Err(ApiError::new(
                ErrorClass::State,
                "ORDER_NOT_PAID",
                format!("order is {state}; only paid orders can be refunded"),
            )),
            ReserveRefund::Reserved => self.push_refund(&refund, order.pay_type, now_ms),
        }
    }

    fn refund_query(
        &self,
        merchant: &Merchant,
        params: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> OpResult {
        let plain = |e: ApiError| (e, None);
        let out_refund_no = required(params, "out_refund_no").map_err(plain)?;
        let refund = self
            .store
            .refund_by_out(&merchant.merchant_id, out_refund_no)
            .map_err(|e| plain(e.into()))?
            .ok_or_else(|| {
                plain(ApiError::new(
                    ErrorClass::NotFound,
                    "REFUND_NOT_FOUND",
                    "no such refund for this merchant",
                ))
            })?;
        let order = self
            .store
            .order(&refund.trade_no)
            .map_err(|e| plain(e.into()))?;
        let refund = match order {
            Some(order) => self
                .push_refund(&refund, order.pay_type, now_ms)
                .map_err(plain)?,
            None => refund,
        };
        Ok(Self::refund_fields(&refund))
    }

    /// One step of the rails' rule for a PAYING code payment: query every 5 s for up to 60 s,
    /// then reverse (not earlier than 15 s after the pay request), repeating an unanswered
    /// reverse every 5 s. Only the order's own channel is ever asked.
    pub fn rail_step(&self, order: &Order, now_ms: i64) -> Result<(), StoreError> {
        let Ok(channel) = self.channel(order.pay_type) else {
            return Ok(());
        };
        let pay_at_ms = order.rail_pay_at_ms.unwrap_or(order.created_at_ms);
        if !order.rail_reversing {
            let resolved = match channel.query(&order.trade_no, now_ms) {
                Ok(TradeStatus::Success { paid_at_ms }) => Some((
                    OrderState::Success,
                    TransitionChanges {
                        paid: Some((order.total_fen, paid_at_ms)),
                        ..TransitionChanges::default()
                    },
                )),
                Ok(TradeStatus::Declined | TradeStatus::Closed) => Some((
                    OrderState::Failed,
                    TransitionChanges {
                        fail_sub_code: Some("PAYMENT_FAILED"),
                        ..TransitionChanges::default()
                    },
                )),
                Ok(TradeStatus::Reversed) => {
                    Some((OrderState::Revoked, TransitionChanges::default()))
                }
                Ok(TradeStatus::NotFound | TradeStatus::WaitBuyer | TradeStatus::Paying)
                | Err(_) => None,
            };
            if let Some((to, changes)) = resolved {
                self.move_order(order, to, &changes, now_ms)?;
                return Ok(());
            }
            if now_ms - pay_at_ms < RAIL_POLL_WINDOW_MS {
                let next = (now_ms + RAIL_POLL_INTERVAL_MS).min(pay_at_ms + RAIL_POLL_WINDOW_MS);
                return self.store.set_rail_schedule(&order.trade_no, next, false);
            }
        }
        let earliest_reverse_ms = pay_at_ms + RAIL_MIN_REVERSE_DELAY_MS;
        if now_ms < earliest_reverse_ms {
            return self
                .store
                .set_rail_schedule(&order.trade_no, earliest_reverse_ms, true);
        }
        match channel.reverse(&order.trade_no, now_ms) {
            Ok(refunded_fen) => {
                tracing::info!(trade_no = %order.trade_no, refunded_fen, "code payment reversed");
                self.move_order(
                    order,
                    OrderState::Revoked,
                    &TransitionChanges::default(),
                    now_ms,
                )?;
                Ok(())
            }
            Err(error) => {
                tracing::warn!(trade_no = %order.trade_no, %error, "reverse unanswered; repeating");
                self.store
                    .set_rail_schedule(&order.trade_no, now_ms + RAIL_POLL_INTERVAL_MS, true)
            }
        }
    }

    /// Sends one PROCESSING refund to the channel again. A failure that is not the channel's
    /// answer (storage, no such channel) is retried later rather than spun on.
    pub fn refund_step(
        &self,
        refund: &Refund,
        pay_type: PayType,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if let Err(error) = self.push_refund(refund, pay_type, now_ms) {
            tracing::warn!(%error, refund_no = %refund.refund_no, "refund retry failed");
            self.store
                .schedule_refund_retry(&refund.refund_no, now_ms + REFUND_RETRY_MS)?;
        }
        Ok(())
    }

    /// Closes one expired unpaid order (at the channel first). An unanswered close is retried.
    pub fn expire_step(&self, order: &Order, now_ms: i64) -> Result<(), StoreError> {
        let still_open = match self.close_at_channel(order, now_ms) {
            Ok(after) => matches!(after.state, OrderState::Created | OrderState::WaitPay),
            Err(_) => true,
        };
        if still_open {
            // Neither closed nor paid (the channel did not answer): try again shortly rather
            // than spin on the same row.
            self.store
                .postpone_expiry(&order.trade_no, now_ms + CLOSE_RETRY_MS)?;
        }
        Ok(())
    }

    fn wallet_order(&self, trade_no: &str) -> Result<Order, ApiError> {
        self.store
            .order(trade_no)?
            .filter(|order| !order.by_auth_code)
            .ok_or_else(|| {
                ApiError::new(ErrorClass::NotFound, "ORDER_NOT_FOUND", "no such QR order")
            })
    }

    /// The payer opened the QR: the order now exists at the channel (CREATED → WAIT_PAY).
    pub fn wallet_scan(&self, trade_no: &str) -> Result<WalletView, ApiError> {
        let now_ms = self.clock.now_ms();
        let order = self.wallet_order(trade_no)?;
        if order.state == OrderState::Created {
            let channel = self.channel(order.pay_type)?;
            match channel.precreate(&order.trade_no, order.total_fen, now_ms) {
                Ok(()) => {
                    self.move_order(
                        &order,
                        OrderState::WaitPay,
                        &TransitionChanges::default(),
                        now_ms,
                    )?;
                }
                Err(ChannelError::NotAllowed(_)) => {}
                Err(error) => return Err(channel_busy(&error)),
            }
        }
        let order = self.wallet_order(trade_no)?;
        let payable = order.state == OrderState::WaitPay;
        Ok(WalletView { order, payable })
    }

    /// The payer confirmed in the sandbox wallet.
    pub fn wallet_confirm(&self, trade_no: &str) -> Result<Order, ApiError> {
        let view = self.wallet_scan(trade_no)?;
        if !view.payable {
            return Err(state_error(&view.order, "pay"));
        }
        let now_ms = self.clock.now_ms();
        let channel = self.channel(view.order.pay_type)?;
        match channel.wallet_confirm(trade_no, now_ms) {
            Ok(paid_at_ms) => {
                let changes = TransitionChanges {
                    paid: Some((view.order.total_fen, paid_at_ms)),
                    ..TransitionChanges::default()
                };
                self.move_order(&view.order, OrderState::Success, &changes, now_ms)?;
            }
            Err(ChannelError::NotAllowed(state)) => {
                return Err(ApiError::new(
                    ErrorClass::State,
                    "ILLEGAL_TRANSITION",
                    format!("the channel trade is {state}"),
                ));
            }
            Err(error) => return Err(channel_busy(&error)),
        }
        self.wallet_order(trade_no)
    }

    /// The payer declined in the sandbox wallet.
    pub fn wallet_decline(&self, trade_no: &str) -> Result<Order, ApiError> {
        let view = self.wallet_scan(trade_no)?;
        if !view.payable {
            return Err(state_error(&view.order, "decline"));
        }
        let now_ms = self.clock.now_ms();
        let channel = self.channel(view.order.pay_type)?;
        match channel.wallet_decline(trade_no, now_ms) {
            Ok(()) => {
                let changes = TransitionChanges {
                    fail_sub_code: Some("USER_DECLINED"),
                    ..TransitionChanges::default()
                };
                self.move_order(&view.order, OrderState::Failed, &changes, now_ms)?;
            }
            Err(ChannelError::AlreadyPaid) => {
                return Err(state_error(&view.order, "decline a paid trade"));
            }
            Err(error) => return Err(channel_busy(&error)),
        }
        self.wallet_order(trade_no)
    }

    /// The daily bill (Beijing date `yyyy-MM-dd`) of one channel, CSV.
    pub fn channel_bill(&self, pay_type: PayType, date: &str) -> Result<String, ApiError> {
        let (from_ms, to_ms) = crate::money::beijing_day_range_ms(date)
            .ok_or_else(|| ApiError::parameter("INVALID_PARAMETER", "date must be yyyy-MM-dd"))?;
        self.channel(pay_type)?
            .bill(from_ms, to_ms)
            .map_err(|e| channel_busy(&e))
    }

    /// Everything stored about an order, for operators and tests.
    pub fn order_detail(&self, trade_no: &str) -> Result<Value, ApiError> {
        let crate::store::OrderHistory {
            order,
            refunds,
            notifies,
        } = self.store.order_with_history(trade_no)?.ok_or_else(|| {
            ApiError::new(ErrorClass::NotFound, "ORDER_NOT_FOUND", "no such order")
        })?;
        let refunds: Vec<Value> = refunds
            .iter()
            .map(|r| json!({"refund_no": r.refund_no, "out_refund_no": r.out_refund_no, "amount_fen": r.amount_fen, "state": r.state.as_str()}))
            .collect();
        let notifies: Vec<Value> = notifies.iter().map(notify_json).collect();
        Ok(json!({
            "trade_no": order.trade_no,
            "merchant_id": order.merchant_id,
            "out_trade_no": order.out_trade_no,
            "pay_type": order.pay_type.as_str(),
            "state": order.state.as_str(),
            "total_fen": order.total_fen,
            "paid_fen": order.paid_fen,
            "refunded_fen": order.refunded_fen,
            "expire_at_ms": order.expire_at_ms,
            "rail_pay_at_ms": order.rail_pay_at_ms,
            "rail_next_at_ms": order.rail_next_at_ms,
            "rail_reversing": order.rail_reversing,
            "refunds": refunds,
            "notifies": notifies,
        }))
    }

    /// A notify and its attempts.
    pub fn notify_detail(&self, notify_id: &str) -> Result<Value, ApiError> {
        let notify = self.store.notify(notify_id)?.ok_or_else(|| {
            ApiError::new(ErrorClass::NotFound, "NOTIFY_NOT_FOUND", "no such notify")
        })?;
        let attempts: Vec<Value> = self
            .store
            .notify_attempts(notify_id)?
            .iter()
            .map(|a| json!({"attempt_no": a.attempt_no, "at_ms": a.at_ms, "outcome": a.outcome, "delivered": a.delivered}))
            .collect();
        let mut detail = notify_json(&notify);
        if let Some(object) = detail.as_object_mut() {
            object.insert("attempt_log".into(), Value::Array(attempts));
        }
        Ok(detail)
    }
}

fn notify_json(notify: &crate::store::Notify) -> Value {
    json!({
        "notify_id": notify.notify_id,
        "trade_no": notify.trade_no,
        "notify_url": notify.notify_url,
        "state": notify.state.as_str(),
        "attempts": notify.attempts,
        "created_at_ms": notify.created_at_ms,
        "next_at_ms": notify.next_at_ms,
    })
}

/// Refuses notify URLs that are not http(s) on one of the merchant's registered hosts, so the
/// gateway cannot be turned into a request forwarder to arbitrary hosts.
fn check_notify_url(merchant: &Merchant, notify_url: &str) -> Result<(), ApiError> {
    let url = reqwest::Url::parse(notify_url).map_err(|_| {
        ApiError::parameter(
            "INVALID_NOTIFY_URL",
            "notify_url must be an absolute http(s) URL",
        )
    })?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(ApiError::parameter(
            "INVALID_NOTIFY_URL",
            "notify_url must be an http(s) URL without credentials",
        ));
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if !merchant.notify_hosts.contains(&host) {
        return Err(ApiError::parameter(
            "NOTIFY_HOST_NOT_ALLOWED",
            format!("notify_url host {host} is not registered for this merchant"),
        ));
    }
    Ok(())
}

fn load_or_create_gateway_key(store: &Store) -> Result<RsaPrivateKey, GatewayError> {
    let der = store.gateway_private_key_der(|| {
        let mut rng = rsa::rand_core::OsRng;
        let key = RsaPrivateKey::new(&mut rng, GATEWAY_RSA_BITS)
            .map_err(|e| signing::SignError::PrivateKey(e.to_string()))?;
        let der = key
            .to_pkcs8_der()
            .map_err(|e| signing::SignError::PrivateKey(e.to_string()))?;
        Ok(der.as_bytes().to_vec())
    })??;
    RsaPrivateKey::from_pkcs8_der(&der)
        .map_err(|e| GatewayError::Sign(signing::SignError::PrivateKey(e.to_string())))
}

/// Registers a merchant (the `merchant add` CLI). Returns the line to print: the HMAC secret,
/// or the gateway's RSA public key as single-line base64 SPKI DER.
pub fn add_merchant(
    data_dir: &std::path::Path,
    merchant_id: &str,
    name: &str,
    sign_type: SignType,
    public_key_text: Option<&str>,
    notify_hosts: &[String],
    now_ms: i64,
) -> Result<String, GatewayError> {
    check_identifier("merchant id", merchant_id).map_err(|e| GatewayError::Invalid(e.message))?;
    if merchant_id.is_empty() {
        return Err(GatewayError::Invalid(
            "merchant id must not be empty".into(),
        ));
    }
    if notify_hosts.is_empty() {
        return Err(GatewayError::Invalid(
            "give at least one --notify-host".into(),
        ));
    }
    std::fs::create_dir_all(data_dir)?;
    let store = Store::open(&data_dir.join("gateway.sqlite"))?;
    let (secret, public_key_der, printed) = match sign_type {
        SignType::HmacSha256 => {
            if public_key_text.is_some() {
                return Err(GatewayError::Invalid(
                    "--public-key is only for RSA-SHA256 merchants".into(),
                ));
            }
            let mut random = [0u8; 32];
            getrandom::fill(&mut random)
                .map_err(|e| GatewayError::Invalid(format!("no randomness: {e}")))?;
            let secret = hex::encode(random);
            (Some(secret.clone()), None, secret)
        }
        SignType::RsaSha256 => {
            let text = public_key_text.ok_or_else(|| {
                GatewayError::Invalid("RSA-SHA256 merchants need --public-key FILE (PEM)".into())
            })?;
            let key = signing::parse_public_key(text)?;
            let der = rsa::pkcs8::EncodePublicKey::to_public_key_der(&key)
                .map_err(|e| signing::SignError::PublicKey(e.to_string()))?
                .as_bytes()
                .to_vec();
            let gateway_key = load_or_create_gateway_key(&store)?;
            (
                None,
                Some(der),
                signing::public_key_base64_der(&gateway_key.to_public_key())?,
            )
        }
    };
    let merchant = Merchant {
        merchant_id: merchant_id.to_owned(),
        name: name.to_owned(),
        sign_type,
        secret,
        public_key_der,
        notify_hosts: notify_hosts
            .iter()
            .map(|host| host.trim().to_ascii_lowercase())
            .collect(),
    };
    if !store.insert_merchant(&merchant, now_ms)? {
        return Err(GatewayError::Invalid(format!(
            "merchant {merchant_id} already exists"
        )));
    }
    Ok(printed)
}
