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
