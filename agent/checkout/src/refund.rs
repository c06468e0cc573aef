//! Refunds against a completed sale: by line and quantity, in full, or by amount, never more
//! than was paid per line or per tender, and conserving every fen.

use std::collections::HashMap;

use rust_decimal::Decimal;

use crate::money::Money;
use crate::sale::{LineId, Sale, SaleError};
use crate::tender::{TenderId, TenderMethod};
use crate::totals::allocate;

/// What the cashier asked to refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundRequest {
    /// Everything not refunded yet.
    Full,
    /// These quantities of these lines (kg for weighed lines).
    Lines(Vec<(LineId, Decimal)>),
    /// An amount not tied to lines (a goodwill or price-adjustment refund), spread over the
    /// lines in proportion to what is left on each.
    Amount(Money),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundLine {
    pub line: LineId,
    /// Quantity returned; zero for an amount-only refund.
    pub quantity: Decimal,
    pub amount: Money,
}

/// The part of a refund paid back through one original tender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundedTender {
    pub tender: TenderId,
    pub method: TenderMethod,
    pub amount: Money,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    pub id: String,
    pub lines: Vec<RefundLine>,
    pub tenders: Vec<RefundedTender>,
    pub total: Money,
    pub reason: String,
    pub at_ms: i64,
}

/// Per line: (quantity refunded, amount refunded) so far.
fn refunded_so_far(sale: &Sale) -> HashMap<LineId, (Decimal, Money)> {
    let mut so_far: HashMap<LineId, (Decimal, Money)> = HashMap::new();
    for line in sale.refunds().iter().flat_map(|r| &r.lines) {
        let entry = so_far
            .entry(line.line)
            .or_insert((Decimal::ZERO, Money::ZERO));
        entry.0 += line.quantity;
        entry.1 = entry.1.saturating_add(line.amount);
    }
    so_far
}

/// What is left to refund on the whole sale.
pub fn refundable(sale: &Sale) -> Money {
    let refunded: Money = sale.refunds().iter().map(|r| r.total).sum();
    sale.totals()
        .total
        .saturating_sub(refunded)
        .max(Money::ZERO)
}

pub(crate) fn plan(
    sale: &Sale,
    id: String,
    request: &RefundRequest,
    reason: String,
    now_ms: i64,
) -> Result<Refund, SaleError> {
    let totals = sale.totals();
    let mut so_far = refunded_so_far(sale);
    let line_total = |line: LineId| totals.line(line).map(|t| t.total).unwrap_or(Money::ZERO);
    let quantity_of = |line: LineId| {
        sale.lines()
            .iter()
            .find(|l| l.id == line)
            .map(|l| l.quantity)
    };

    let mut lines: Vec<RefundLine> = Vec::new();
    match request {
        RefundRequest::Full => {
            for line in sale.lines() {
                let (qty, amount) = so_far
                    .get(&line.id)
                    .copied()
                    .unwrap_or((Decimal::ZERO, Money::ZERO));
                let left_amount = line_total(line.id).saturating_sub(amount);
                let left_qty = (line.quantity - qty).max(Decimal::ZERO);
                if left_amount.fen() > 0 || left_qty > Decimal::ZERO {
                    lines.push(RefundLine {
                        line: line.id,
                        quantity: left_qty,
                        amount: left_amount,
                    });
                }
            }
        }
        RefundRequest::Lines(requested) => {
            for &(line, quantity) in requested {
                let full_quantity = quantity_of(line).ok_or(SaleError::NoSuchLine(line.0))?;
                let total = line_total(line);
                let (qty_before, amount_before) = so_far
                    .get(&line)
                    .copied()
                    .unwrap_or((Decimal::ZERO, Money::ZERO));
                let qty_after = qty_before + quantity;
                if quantity <= Decimal::ZERO
                    || qty_after > full_quantity
                    || quantity.normalize().scale() > 3
                {
                    return Err(SaleError::RefundExceedsLine { line: line.0 });
                }
                let left_amount = total.saturating_sub(amount_before);
                // Cumulative floor: the n-th partial refund pays floor(total × returned / bought)
                // minus what was paid before, so the last one lands on the line total exactly.
                let amount = if qty_after == full_quantity {
                    left_amount
                } else {
                    let cumulative = Money::floor_yuan(total.to_yuan() * qty_after / full_quantity)
                        .unwrap_or(Money::ZERO);
                    cumulative
                        .saturating_sub(amount_before)
                        .max(Money::ZERO)
                        .min(left_amount)
                };
                so_far.insert(line, (qty_after, amount_before.saturating_add(amount)));
                lines.push(RefundLine {
                    line,
                    quantity,
                    amount,
                });
            }
        }
        RefundRequest::Amount(amount) => {
            if amount.fen() <= 0 {
                return Err(SaleError::InvalidAmount);
            }
            let left: Vec<(LineId, Money)> = sale
                .lines()
                .iter()
                .map(|l| {
                    let before = so_far.get(&l.id).map(|s| s.1).unwrap_or(Money::ZERO);
                    (
                        l.id,
                        line_total(l.id).saturating_sub(before).max(Money::ZERO),
                    )
                })
                .collect();
            let refundable_now: Money = left.iter().map(|(_, m)| *m).sum();
            if *amount > refundable_now {
                return Err(SaleError::RefundExceedsSale {
                    requested: *amount,
                    refundable: refundable_now,
                });
            }
            let weights: Vec<Money> = left.iter().map(|(_, m)| *m).collect();
            for ((line, _), share) in left.iter().zip(allocate(*amount, &weights)) {
                if share.fen() > 0 {
                    lines.push(RefundLine {
                        line: *line,
                        quantity: Decimal::ZERO,
                        amount: share,
                    });
                }
            }
        }
    }
    let total: Money = lines.iter().map(|l| l.amount).sum();
    if total.is_zero() && lines.iter().all(|l| l.quantity.is_zero()) {
        return Err(SaleError::NothingToRefund);
    }
    let left = refundable(sale);
    if total > left {
        return Err(SaleError::RefundExceedsSale {
            requested: total,
            refundable: left,
        });
    }
    Ok(Refund {
        id,
        tenders: allocate_to_tenders(sale, total),
        lines,
        total,
        reason,
        at_ms: now_ms,
    })
}

/// Pays a refund back through the original tenders, latest first, each up to what it paid
/// net of earlier refunds.
fn allocate_to_tenders(sale: &Sale, total: Money) -> Vec<RefundedTender> {
    let mut refunded_per_tender: HashMap<&TenderId, Money> = HashMap::new();
    for part in sale.refunds().iter().flat_map(|r| &r.tenders) {
        let entry = refunded_per_tender
            .entry(&part.tender)
            .or_insert(Money::ZERO);
        *entry = entry.saturating_add(part.amount);
    }
    let mut left = total;
    let mut parts = Vec::new();
    for tender in sale.tenders().iter().rev() {
        if left.is_zero() {
            break;
        }
        let already = refunded_per_tender
            .get(&tender.id)
            .copied()
            .unwrap_or(Money::ZERO);
        let take = tender
            .amount
            .saturating_sub(already)
            .max(Money::ZERO)
            .min(left);
        if take.fen() > 0 {
            parts.push(RefundedTender {
                tender: tender.id.clone(),
                method: tender.method,
                amount: take,
            });
            left = left.saturating_sub(take);
        }
    }
    parts
}
