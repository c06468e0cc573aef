//! Domain types: pay types, the order state machine (seed 004's table extended with PAYING,
//! FAILED and REVOKED), orders, refunds and merchants. Pure data and rules, no IO.

use std::fmt;
use std::str::FromStr;

use crate::signing::SignType;

/// The rail a payment goes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PayType {
    /// Alipay (支付宝).
    Alipay,
    /// WeChat Pay (微信支付).
    Wechat,
    /// UnionPay (银联).
    Unionpay,
    /// A card acquirer, for lanes.
    Card,
}

impl PayType {
    /// Every pay type, in a fixed order.
    pub const ALL: [PayType; 4] = [
        PayType::Alipay,
        PayType::Wechat,
        PayType::Unionpay,
        PayType::Card,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PayType::Alipay => "alipay",
            PayType::Wechat => "wechat",
            PayType::Unionpay => "unionpay",
            PayType::Card => "card",
        }
    }
}

impl fmt::Display for PayType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PayType {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PayType::ALL
            .into_iter()
            .find(|pay_type| pay_type.as_str() == text)
            .ok_or(())
    }
}

/// Why an auth code was refused before reaching any channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthCodeFormatError;

/// Checks a customer-presented payment code (付款码) against its rail's format: WeChat 18 digits
/// with prefix 10–15; Alipay 16–24 digits with prefix 25–30; UnionPay 16–19 digits with prefix
/// 62; card: an acquirer card token of 16–64 ASCII letters and digits.
pub fn check_auth_code(pay_type: PayType, code: &str) -> Result<(), AuthCodeFormatError> {
    let digits = !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit());
    let prefix: u32 = code.get(..2).and_then(|p| p.parse().ok()).unwrap_or(0);
    let ok = match pay_type {
        PayType::Wechat => digits && code.len() == 18 && (10..=15).contains(&prefix),
        PayType::Alipay => digits && (16..=24).contains(&code.len()) && (25..=30).contains(&prefix),
        PayType::Unionpay => digits && (16..=19).contains(&code.len()) && prefix == 62,
        PayType::Card => {
            (16..=64).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
        }
    };
    if ok { Ok(()) } else { Err(AuthCodeFormatError) }
}

/// An order's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// Created; for a QR order, not yet scanned (the channel does not know it yet).
    Created,
    /// The QR was scanned: the order exists at the channel, awaiting the payer.
    WaitPay,
    /// A code payment whose outcome is pending: the user confirms on the phone, or the channel's
    /// answer was lost. The gateway polls and, failing that, reverses.
    Paying,
    /// Paid.
    Success,
    /// At least one refund succeeded (partial or full); more refunds up to the paid amount.
    Refund,
    /// Closed unpaid (by the merchant or on timeout).
    Closed,
    /// The payment was declined or the code refused.
    Failed,
    /// Reversed (撤销) after an unresolved code payment; any late charge was refunded.
    Revoked,
}

impl OrderState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Created => "CREATED",
            OrderState::WaitPay => "WAIT_PAY",
            OrderState::Paying => "PAYING",
            OrderState::Success => "SUCCESS",
            OrderState::Refund => "REFUND",
            OrderState::Closed => "CLOSED",
            OrderState::Failed => "FAILED",
            OrderState::Revoked => "REVOKED",
        }
    }

    /// Every state.
    pub const ALL: [OrderState; 8] = [
        OrderState::Created,
        OrderState::WaitPay,
        OrderState::Paying,
        OrderState::Success,
        OrderState::Refund,
        OrderState::Closed,
        OrderState::Failed,
        OrderState::Revoked,
    ];

    /// Whether `self → to` is an edge of the state machine.
    ///
    /// Deviations from seed 004's table, and why: WAIT_PAY → REFUND is absent (nothing was paid);
    /// SUCCESS → CLOSED is absent (closing a paid order would hide money; refund it instead).
    pub fn can_become(self, to: OrderState) -> bool {
        use OrderState::*;
        matches!(
            (self, to),
            (Created, WaitPay | Paying | Success | Failed | Closed)
                | (WaitPay, Success | Failed | Closed)
                | (Paying, Success | Failed | Revoked)
                | (Success, Refund)
        )
    }

    /// Whether the merchant is told about entering this state by async notify.
    pub fn is_notified(self) -> bool {
        matches!(
            self,
            OrderState::Success | OrderState::Failed | OrderState::Revoked | OrderState::Closed
        )
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderState {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        OrderState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or(())
    }
}

/// A registered merchant.
#[derive(Debug, Clone)]
pub struct Merchant {
    /// `merchant_id`.
    pub merchant_id: String,
    /// Display name.
    pub name: String,
    /// The pinned signing algorithm.
    pub sign_type: SignType,
    /// HMAC secret (HMAC merchants only).
    pub secret: Option<String>,
    /// The merchant's RSA public key as SPKI DER (RSA merchants only).
    pub public_key_der: Option<Vec<u8>>,
    /// Hosts notify URLs may point at (exact, lowercase).
    pub notify_hosts: Vec<String>,
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Gateway trade number.
    pub trade_no: String,
    /// Merchant.
    pub merchant_id: String,
    /// Merchant's order number.
    pub out_trade_no: String,
    /// SHA-256 of the business parameters, for idempotency.
    pub request_hash: String,
    /// Rail.
    pub pay_type: PayType,
    /// Amount in fen.
    pub total_fen: i64,
    /// ISO currency (CNY only today).
    pub currency: String,
    /// Title.
    pub subject: String,
    /// Description.
    pub body: String,
    /// Where notifies go.
    pub notify_url: String,
    /// Where the wallet page sends the payer after paying.
    pub return_url: String,
    /// Current state.
    pub state: OrderState,
    /// QR content (QR orders).
    pub pay_url: String,
    /// WeChat prepay id.
    pub prepay_id: String,
    /// Received in fen (0 until paid).
    pub paid_fen: i64,
    /// Refunded or reserved for in-flight refunds, in fen.
    pub refunded_fen: i64,
    /// When the channel took the money.
    pub pay_time_ms: Option<i64>,
    /// Sub-code of a failed payment, replayed for idempotent requests.
    pub fail_sub_code: String,
    /// Whether the order was paid by auth code.
    pub by_auth_code: bool,
    /// Created.
    pub created_at_ms: i64,
    /// Unpaid orders close at this time.
    pub expire_at_ms: i64,
    /// When the code payment was sent to the channel.
    pub rail_pay_at_ms: Option<i64>,
    /// When the rail worker looks at this order next (PAYING only).
    pub rail_next_at_ms: Option<i64>,
    /// Whether the rail worker is reversing (polling gave up).
    pub rail_reversing: bool,
}

/// A refund's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundState {
    /// Sent to the channel, answer pending; its amount stays reserved on the order.
    Processing,
    /// Refunded.
    Success,
    /// Refused by the channel; the reservation was released.
    Fail,
}

impl RefundState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefundState::Processing => "PROCESSING",
            RefundState::Success => "SUCCESS",
            RefundState::Fail => "FAIL",
        }
    }
}

impl FromStr for RefundState {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "PROCESSING" => Ok(RefundState::Processing),
            "SUCCESS" => Ok(RefundState::Success),
            "FAIL" => Ok(RefundState::Fail),
            _ => Err(()),
        }
    }
}

/// A stored refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// Gateway refund number.
    pub refund_no: String,
    /// Merchant.
    pub merchant_id: String,
    /// Merchant's refund number (idempotency key).
    pub out_refund_no: String,
    /// The order refunded.
    pub trade_no: String,
    /// Merchant's order number.
    pub out_trade_no: String,
    /// SHA-256 of the business parameters.
    pub request_hash: String,
    /// Amount in fen.
    pub amount_fen: i64,
    /// Reason given.
    pub reason: String,
    /// State.
    pub state: RefundState,
    /// Created.
    pub created_at_ms: i64,
    /// Finished (success or fail).
    pub finished_at_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_code_formats_follow_the_rails() {
        assert!(check_auth_code(PayType::Wechat, "134567890123456789").is_ok());
        assert!(check_auth_code(PayType::Wechat, "164567890123456789").is_err());
        assert!(check_auth_code(PayType::Wechat, "13456789012345678").is_err());
        assert!(check_auth_code(PayType::Alipay, "2845678901234567").is_ok());
        assert!(check_auth_code(PayType::Alipay, "284567890123456789012345").is_ok());
        assert!(check_auth_code(PayType::Alipay, "3145678901234567").is_err());
        assert!(check_auth_code(PayType::Unionpay, "6212345678901234567").is_ok());
        assert!(check_auth_code(PayType::Unionpay, "6312345678901234567").is_err());
        assert!(check_auth_code(PayType::Card, "tok4242424242424242").is_ok());
        assert!(check_auth_code(PayType::Card, "tok-42").is_err());
    }

    #[test]
    fn terminal_states_have_no_exits() {
        for from in [
            OrderState::Closed,
            OrderState::Failed,
            OrderState::Revoked,
            OrderState::Refund,
        ] {
            for to in OrderState::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
        assert!(OrderState::Created.can_become(OrderState::WaitPay));
        assert!(!OrderState::Success.can_become(OrderState::Closed));
    }
}
