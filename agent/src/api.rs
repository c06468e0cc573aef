//! The lane's command/event interface: what the cashier screen, the local API and tests send
//! in and get out. Serialised as JSON for the local API (see `docs/local-api.md`); amounts
//! are yuan strings with two decimals, exactly as a person reads them.

use serde::{Deserialize, Serialize};

/// A request to the lane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// A code from a scanner or typed by the cashier.
    Scan {
        code: String,
    },
    SetQuantity {
        line: u32,
        quantity: String,
    },
    RemoveLine {
        line: u32,
    },
    /// `discount` null removes the line's discount.
    LineDiscount {
        line: u32,
        discount: Option<DiscountSpec>,
    },
    OrderDiscount {
        discount: Option<DiscountSpec>,
    },
    /// Cash handed over, in yuan ("100.00").
    TenderCash {
        amount: String,
    },
    VoidSale,
    /// Refund against a completed sale: `lines` or `amount`, or neither for everything left.
    Refund {
        receipt_no: String,
        #[serde(default)]
        lines: Vec<RefundLineSpec>,
        #[serde(default)]
        amount: Option<String>,
        reason: String,
    },
    /// The cart as it stands.
    GetCart,
    FindSale {
        receipt_no: String,
    },
    Receipt {
        receipt_no: String,
    },
    /// The last `count` journal entries (at most 100).
    JournalTail {
        count: u32,
    },
    /// Journal and outbox figures.
    Status,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DiscountSpec {
    /// Yuan off.
    Amount { value: String },
    /// Percent off, above 0 and at most 100.
    Percent { value: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundLineSpec {
    pub line: u32,
    pub quantity: String,
}

/// The answer to one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Cart(CartView),
    Tender(TenderView),
    Sale(SaleView),
    Refund(RefundView),
    Receipt { lines: Vec<String> },
    Journal { entries: Vec<EntryView> },
    Status(StatusView),
    Voided { sale_id: String },
}

/// Something that happened on the lane, pushed to every subscriber.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    CartChanged(CartView),
    /// A code that is not a product or could not be read; the cart did not change.
    ScanRejected {
        code: String,
        reason: String,
    },
    TenderRecorded(TenderView),
    SaleCompleted(TenderView),
    SaleVoided {
        sale_id: String,
    },
    RefundCompleted(RefundView),
    JournalAppended {
        seq: u64,
        kind: String,
    },
    /// A device came, went or needs attention.
    DeviceStatus(DeviceStatusView),
    /// The lane's link to the gateway changed (or a periodic refresh of its figures).
    SyncStatus(SyncStatusView),
    /// The background check of the whole journal finished.
    JournalChecked {
        intact: bool,
        last_seq: u64,
        detail: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLineView {
    pub line: u32,
    pub sku: String,
    pub name_zh: String,
    pub name_en: String,
    pub quantity: String,
    pub unit_price: String,
    pub per_kg: bool,
    pub gross: String,
    pub discount: String,
    pub total: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartView {
    pub sale_id: String,
    pub state: String,
    pub lines: Vec<CartLineView>,
    pub gross: String,
    pub discount: String,
    pub tax: String,
    pub total: String,
    pub paid: String,
    pub remaining: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenderView {
    pub sale_id: String,
    pub receipt_no: String,
    pub method: String,
    pub applied: String,
    pub change: String,
    pub remaining: String,
    pub completed: bool,
    /// The journal entry that recorded it; durable before this view was sent.
    pub journal_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleView {
    pub receipt_no: String,
    pub cart: CartView,
    pub refunded: String,
    pub refundable: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundView {
    pub refund_id: String,
    pub receipt_no: String,
    pub total: String,
    pub tenders: Vec<(String, String)>,
    pub journal_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    pub seq: u64,
    pub kind: String,
    pub created_at_ms: i64,
    pub hash: String,
    pub payload: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub terminal_id: String,
    pub journal_last_seq: u64,
    pub outbox_len: u64,
    pub acknowledged_seq: u64,
}

/// One device's state for the status bar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatusView {
    /// scanner, display, printer, nfc.
    pub device: String,
    /// not_configured, ready, warning, unavailable.
    pub state: String,
    /// What is wrong and what to do, when something is.
    pub detail: Option<String>,
}

/// The lane's link to the gateway, as the status bar and HQ show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatusView {
    /// Whether the gateway answered within the last few seconds.
    pub online: bool,
    /// Live WebSocket channel up.
    pub live: bool,
    /// Journal entries not yet acknowledged by the gateway.
    pub backlog: u64,
    pub acknowledged_seq: u64,
    /// When the gateway last acknowledged something (lane clock, ms).
    pub last_sync_ms: Option<i64>,
    /// Gateway clock minus lane clock, when known; the screen warns past a minute.
    pub clock_skew_ms: Option<i64>,
    /// Why the lane is offline or what the gateway refused, in words.
    pub problem: Option<String>,
}

/// Why a command was refused, in words for the cashier, with a stable code for programs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandError {
    /// bad_request, unknown_product, misread, not_allowed, not_found, storage.
    pub code: String,
    pub message: String,
}

impl CommandError {
    pub fn new(code: &str, message: impl Into<String>) -> CommandError {
        CommandError {
            code: code.to_string(),
            message: message.into(),
        }
    }
}
