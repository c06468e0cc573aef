//! The lane's command/event interface: what the cashier screen, the local API and tests send
//! in and get out. Serialised as JSON for the local API (see `docs/local-api.md`); amounts
//! are yuan strings with two decimals, exactly as a person reads them.

use serde::{Deserialize, Serialize};

pub use crate::shift::ShiftView;

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
    /// A cashier signs in with their id and PIN (locked for 5 minutes after 5 wrong PINs).
    SignIn {
        cashier_id: String,
        pin: String,
    },
    /// The cashier signs out; an open shift stays open until its cashier closes it.
    SignOut,
    /// Opens a shift with the cash float in the drawer, in yuan.
    OpenShift {
        float: String,
    },
    /// Closes the shift with the cash counted in the drawer, in yuan: the Z report.
    CloseShift {
        counted: String,
    },
    /// Who is signed in and the open shift's figures so far: the X report.
    ShiftReport,
    /// Prints the open shift's X report, or the last closed shift's Z report, on the receipt
    /// printer (the lane sends `ShiftReportToPrint` to its devices).
    PrintShiftReport,
    /// Registers a cashier (setup and demo).
    AddCashier {
        cashier_id: String,
        name: String,
        pin: String,
    },
    /// Pays what is still owed with the customer's wallet payment code (online only). A
    /// payment code scanned while a sale is being built or paid comes here too.
    PayWalletCode {
        code: String,
    },
    /// Shows a dynamic QR for what is still owed: `wallet` is alipay, wechat or unionpay.
    StartDynamicQr {
        wallet: String,
    },
    /// Pays what is still owed by contactless card: online, or stored offline within the
    /// signed limits when the gateway is unreachable. The reply says "tap card".
    PayCard,
    /// While the gateway is unreachable: shows a QR with the order signed by this terminal.
    StartOfflineQr,
    /// The gateway's signed confirmation of an offline QR order (`LPC1.`…); a scanned
    /// confirmation is routed here by `scan`.
    ScanOfflineConfirmation {
        text: String,
    },
    /// Cancels the payment in progress (a code or card is reversed, a QR order closed).
    CancelPayment,
    /// Forwards the card payments stored offline now (they also go on their own when the
    /// gateway is reachable).
    ForwardStoredCards,
    /// The payment attempts of the current sale, or of `sale_id`.
    Payments {
        #[serde(default)]
        sale_id: Option<String>,
    },
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
    Shift(ShiftView),
    Payment(PaymentAttemptView),
    Payments(PaymentsView),
    StoredCards(OfflineExposureView),
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
    /// HQ sent this lane a command (`sync_now`, `reload_config`, `forward_stored`); the
    /// uplink carried it out.
    GatewayCommand {
        id: String,
        command: String,
    },
    /// The background check of the whole journal finished.
    JournalChecked {
        intact: bool,
        last_seq: u64,
        detail: String,
    },
    /// A payment attempt moved on (durable before this is sent).
    PaymentChanged(PaymentAttemptView),
    /// A card payment taken offline was declined when it was forwarded: the goods are gone and
    /// the money is not coming; tell the supervisor (HQ sees it too).
    StoredCardDeclined {
        attempt_id: String,
        sale_id: String,
        amount: String,
        masked_pan: Option<String>,
        reason: String,
    },
    /// An X or Z report for the receipt printer, as lines.
    ShiftReportToPrint {
        lines: Vec<String>,
    },
}

/// One payment attempt as the cashier screen shows it. Amounts in yuan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAttemptView {
    /// The gateway's out_trade_no: `{terminal}-{sale_no}-{n}`. Empty while waiting for a card.
    pub attempt_id: String,
    pub sale_id: String,
    /// alipay, wechat, unionpay, card, offline_qr.
    pub method: String,
    pub amount: String,
    /// waiting_for_card, sending, waiting, reversing, closing, stored, paid, failed, reversed,
    /// closed, declined.
    pub state: String,
    /// What is happening, in words: "waiting for customer to confirm", "checking result",
    /// "reversing", "tap card", ...
    pub step: String,
    /// The text to render as a QR (dynamic QR pay URL, offline QR order URL).
    pub qr_text: Option<String>,
    /// When the lane gives up waiting (lane clock, ms).
    pub deadline_ms: Option<i64>,
    pub masked_pan: Option<String>,
    /// Why it failed or what the cashier should do, in words.
    pub message: Option<String>,
}

/// The payment attempts of one sale, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentsView {
    pub attempts: Vec<PaymentAttemptView>,
}

/// Card payments taken offline and not forwarded yet: the lane's risk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineExposureView {
    /// Yuan.
    pub offline_exposure: String,
    pub stored_count: u32,
    pub oldest_stored_age_ms: Option<i64>,
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
    /// Why the lane is offline or what the gateway refused, in words (for logs and HQ).
    pub problem: Option<String>,
    /// What kind of trouble `problem` is: unreachable (no network; sales go on and are sent
    /// later), refused (the gateway refused a request or an entry), journal_mismatch,
    /// storage; "" when there is none.
    #[serde(default)]
    pub problem_kind: String,
    /// Card payments stored offline and not forwarded yet, in yuan ("" when not known).
    #[serde(default)]
    pub offline_exposure: String,
    #[serde(default)]
    pub stored_count: u32,
    #[serde(default)]
    pub oldest_stored_age_ms: Option<i64>,
    /// The largest card payment the offline limits still allow, in yuan ("" when not known).
    #[serde(default)]
    pub offline_card_room: String,
    /// How many more card payments the offline limits allow.
    #[serde(default)]
    pub offline_payments_left: u32,
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
