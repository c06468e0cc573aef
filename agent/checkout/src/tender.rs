//! Tenders: how a sale is paid, and what one payment does to what is still owed.

use crate::barcode::PaymentWallet;
use crate::money::Money;

/// A tender's identity, chosen by the shell (the lane derives it from terminal and sequence
/// so that it doubles as the idempotency key of the payment at the gateway).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenderId(pub String);

/// How the customer paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TenderMethod {
    Cash,
    /// A wallet payment, by customer-presented code or merchant-presented dynamic QR.
    Wallet(PaymentWallet),
    /// A contactless card.
    Card,
    /// The signed offline QR, paid by the customer online while the lane was offline.
    OfflineQr,
}

impl TenderMethod {
    /// A stable name for journals, reports and the local API.
    pub fn code(self) -> &'static str {
        match self {
            TenderMethod::Cash => "cash",
            TenderMethod::Wallet(PaymentWallet::Alipay) => "alipay",
            TenderMethod::Wallet(PaymentWallet::WechatPay) => "wechat",
            TenderMethod::Wallet(PaymentWallet::UnionPay) => "unionpay",
            TenderMethod::Card => "card",
            TenderMethod::OfflineQr => "offline_qr",
        }
    }

    pub fn from_code(code: &str) -> Option<TenderMethod> {
        Some(match code {
            "cash" => TenderMethod::Cash,
            "alipay" => TenderMethod::Wallet(PaymentWallet::Alipay),
            "wechat" => TenderMethod::Wallet(PaymentWallet::WechatPay),
            "unionpay" => TenderMethod::Wallet(PaymentWallet::UnionPay),
            "card" => TenderMethod::Card,
            "offline_qr" => TenderMethod::OfflineQr,
            _ => return None,
        })
    }

    /// Only cash can be handed over in excess and give change.
    pub fn gives_change(self) -> bool {
        matches!(self, TenderMethod::Cash)
    }
}

/// A settled tender on a sale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tender {
    pub id: TenderId,
    pub method: TenderMethod,
    /// What this tender pays toward the sale's total.
    pub amount: Money,
    /// What the customer handed over (cash); equals `amount` for other methods.
    pub tendered: Money,
    /// Change given back: `tendered - amount`.
    pub change: Money,
    /// The payment's reference at the gateway or channel, if any.
    pub reference: Option<String>,
    pub at_ms: i64,
}

/// What a tender did to the sale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenderOutcome {
    pub applied: Money,
    pub change: Money,
    pub remaining: Money,
    pub completed: bool,
}
