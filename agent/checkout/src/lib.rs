//! The checkout domain of a lane: what a product costs, what is in the cart, what is owed, paid
//! and refunded.
//!
//! This crate is sans-IO. It never reads a clock, a file, a socket or a database: the shell
//! passes `now` (milliseconds since the Unix epoch) and every identifier in, and gets decisions
//! back. That keeps the money rules testable to the fen and replayable after a crash.
//!
//! Money is integer fen ([`Money`]); quantities, rates and percentages are `rust_decimal`.
//! The rounding rules are written down in [`totals`].

pub mod barcode;
pub mod catalog;
pub mod money;
pub mod payment;
pub mod receipt;
pub mod refund;
pub mod sale;
pub mod tender;
pub mod totals;

pub use barcode::{PaymentWallet, ScannedCode, WeightedBarcodeFormat, WeightedValue};
pub use catalog::{Pricing, Product, ProductKey};
pub use money::{Money, MoneyError};
pub use refund::{Refund, RefundLine, RefundRequest, RefundedTender};
pub use sale::{Discount, Line, LineId, Sale, SaleError, SaleId, SaleState, TaxMode};
pub use tender::{Tender, TenderId, TenderMethod, TenderOutcome};
pub use totals::{LineTotals, Totals};
