//! What journal entries carry: one payload type per entry kind, amounts in integer fen,
//! quantities as decimal strings (canonical JSON has integers only).
//!
//! Adding a field is a new optional field; changing the meaning of one is a new kind.

use serde::{Deserialize, Serialize};

/// Entry kinds.
pub mod kind {
    /// A sale was paid in full. Carries its lines, totals and every tender; the gateway's
    /// ledger counts sales from this entry only.
    pub const SALE_COMPLETED: &str = "sale_completed";
    /// A tender was taken on a sale that is not paid in full yet (split tender).
    pub const TENDER_RECORDED: &str = "tender_recorded";
    /// A sale was voided; any cash taken on it was handed back.
    pub const SALE_VOIDED: &str = "sale_voided";
    /// Money was paid back against a completed sale.
    pub const REFUND_COMPLETED: &str = "refund_completed";
    /// A cashier opened a shift with a cash float in the drawer.
    pub const SHIFT_OPENED: &str = "shift_opened";
    /// A cashier closed a shift: counted cash against the expected amount (the Z report).
    pub const SHIFT_CLOSED: &str = "shift_closed";
    /// The lane applied a configuration signed by the gateway (HQ's limits and timings).
    pub const CONFIG_APPLIED: &str = "config_applied";
    /// A payment attempt of a tender that is not cash changed state (sent, unknown, paid,
    /// reversed, stored offline, ...).
    pub const PAYMENT_ATTEMPT: &str = "payment_attempt";
    /// A card payment stored offline was forwarded to the gateway: approved or declined.
    pub const CARD_FORWARDED: &str = "card_forwarded";
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleLine {
    pub line: u32,
    pub sku: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
    pub name_zh: String,
    pub name_en: String,
    /// "per_unit" or "per_kg".
    pub pricing: String,
    /// Pieces or kg, as a decimal string ("2", "1.25").
    pub quantity: String,
    pub unit_price_fen: i64,
    pub gross_fen: i64,
    pub line_discount_fen: i64,
    pub order_discount_fen: i64,
    /// VAT rate as a decimal string ("0.13").
    pub tax_rate: String,
    pub tax_fen: i64,
    pub total_fen: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenderLine {
    pub tender_id: String,
    /// cash, alipay, wechat, unionpay, card, offline_qr.
    pub method: String,
    pub amount_fen: i64,
    pub tendered_fen: i64,
    pub change_fen: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleCompleted {
    pub sale_id: String,
    pub receipt_no: String,
    pub store_id: String,
    pub currency: String,
    /// "included" or "excluded".
    pub tax_mode: String,
    pub opened_at_ms: i64,
    pub completed_at_ms: i64,
    pub lines: Vec<SaleLine>,
    pub gross_fen: i64,
    pub discount_fen: i64,
    pub tax_fen: i64,
    pub total_fen: i64,
    pub change_fen: i64,
    pub tenders: Vec<TenderLine>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenderRecorded {
    pub sale_id: String,
    pub tender: TenderLine,
    pub total_fen: i64,
    pub remaining_fen: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleVoided {
    pub sale_id: String,
    pub voided_at_ms: i64,
    pub line_count: u32,
    pub total_fen: i64,
    /// Cash tenders handed back to the customer.
    pub tenders_returned: Vec<TenderLine>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundedLine {
    pub line: u32,
    pub quantity: String,
    pub amount_fen: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundedTender {
    pub tender_id: String,
    pub method: String,
    pub amount_fen: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundCompleted {
    pub refund_id: String,
    pub sale_id: String,
    pub receipt_no: String,
    pub lines: Vec<RefundedLine>,
    pub tenders: Vec<RefundedTender>,
    pub total_fen: i64,
    pub reason: String,
    pub at_ms: i64,
}

/// `config_applied`: the version of the gateway-signed configuration the lane now follows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigApplied {
    pub version: u64,
    pub issued_at_ms: i64,
}

/// `shift_opened`: a cashier's shift starts with this much cash in the drawer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftOpened {
    pub shift_id: String,
    pub cashier_id: String,
    pub opening_float_fen: i64,
    pub at_ms: i64,
}

/// `shift_closed`: the Z report's figures. `expected_fen` = float + cash taken - cash paid
/// back during the shift; `difference_fen` = counted - expected (negative: the drawer is short).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftClosed {
    pub shift_id: String,
    pub cashier_id: String,
    pub opened_at_ms: i64,
    pub opening_float_fen: i64,
    pub cash_sales_fen: i64,
    pub cash_refunds_fen: i64,
    pub expected_fen: i64,
    pub counted_fen: i64,
    pub difference_fen: i64,
    pub sales_count: u64,
    pub refunds_count: u64,
    pub at_ms: i64,
}

/// `payment_attempt`: one state of a payment attempt (wallet code, dynamic QR, card, offline
/// QR). `out_trade_no` is the attempt's id and the gateway's idempotency key; `masked_pan` is
/// first 6 and last 4 digits only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentAttempt {
    pub out_trade_no: String,
    pub sale_id: String,
    /// The tender method code (alipay, wechat, unionpay, card, offline_qr).
    pub method: String,
    /// wallet_code, dynamic_qr, card_online, card_stored, offline_qr.
    pub flow: String,
    pub amount_fen: i64,
    /// sending, waiting, reversing, closing, stored, paid, failed, reversed, closed, declined.
    pub state: String,
    pub reference: Option<String>,
    pub masked_pan: Option<String>,
    pub at_ms: i64,
}

/// `card_forwarded`: the gateway's answer to a card payment stored offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardForwarded {
    pub out_trade_no: String,
    pub approved: bool,
    pub trade_no: Option<String>,
    pub reason: Option<String>,
    pub at_ms: i64,
}
