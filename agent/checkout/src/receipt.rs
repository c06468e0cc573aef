//! The receipt as text lines: what the printer prints and what the demo shows.

use crate::money::Money;
use crate::sale::{Sale, SaleState};

/// Characters per line on an 80 mm printer in its standard font.
pub const RECEIPT_WIDTH: usize = 42;

/// The parts of a receipt that come from the store, not the sale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptHeader {
    pub store_name: String,
    pub terminal_id: String,
    pub receipt_no: String,
    /// Local date and time of the sale as the shell formats it.
    pub printed_at: String,
    pub currency: String,
}

/// Renders a sale as receipt text, one string per printed line (English and Chinese names).
pub fn render(sale: &Sale, header: &ReceiptHeader) -> Vec<String> {
    let totals = sale.totals();
    let rule = "-".repeat(RECEIPT_WIDTH);
    let mut out = vec![
        center(&header.store_name),
        format!("Receipt {}  Lane {}", header.receipt_no, header.terminal_id),
        header.printed_at.clone(),
        rule.clone(),
    ];
    for line in sale.lines() {
        out.push(format!("{} {}", line.product.name_zh, line.product.name_en));
        let figures = totals.line(line.id);
        let unit = line.label_price.unwrap_or(line.product.unit_price);
        let quantity = line.quantity.normalize();
        let per = if line.product.pricing == crate::Pricing::PerKg {
            "/kg"
        } else {
            ""
        };
        let gross = figures.map(|f| f.gross).unwrap_or(Money::ZERO);
        out.push(two_columns(
            &format!("  {quantity} x {unit}{per}"),
            &gross.to_string(),
        ));
        if let Some(f) = figures.filter(|f| !f.line_discount.is_zero()) {
            out.push(two_columns("  discount", &format!("-{}", f.line_discount)));
        }
    }
    out.push(rule.clone());
    out.push(two_columns("Subtotal", &totals.gross.to_string()));
    if !totals.discount.is_zero() {
        out.push(two_columns("Discount", &format!("-{}", totals.discount)));
    }
    out.push(two_columns("Tax", &totals.tax.to_string()));
    out.push(two_columns(
        &format!("TOTAL {}", header.currency),
        &totals.total.to_string(),
    ));
    for tender in sale.tenders() {
        out.push(two_columns(
            &format!("  {}", tender.method.code()),
            &tender.tendered.to_string(),
        ));
    }
    let change = sale.change();
    if !change.is_zero() {
        out.push(two_columns("Change", &change.to_string()));
    }
    for refund in sale.refunds() {
        out.push(two_columns(
            &format!("Refund {}", refund.id),
            &format!("-{}", refund.total),
        ));
    }
    if sale.state() == SaleState::Voided {
        out.push(center("*** VOIDED ***"));
    }
    out.push(rule);
    out.push(center("Thank you / 谢谢惠顾"));
    out
}

fn center(text: &str) -> String {
    let width = text.chars().count();
    let pad = RECEIPT_WIDTH.saturating_sub(width) / 2;
    format!("{}{text}", " ".repeat(pad))
}

fn two_columns(left: &str, right: &str) -> String {
    let used = left.chars().count() + right.chars().count();
    let gap = RECEIPT_WIDTH.saturating_sub(used).max(1);
    format!("{left}{}{right}", " ".repeat(gap))
}
