//! The price of a cart, exact to the fen.
//!
//! # Rounding rule
//! Every rounding is half away from zero (四舍五入) to the fen, and happens at exactly these
//! points, in this order, per line:
//! 1. `gross = round(unit_price × quantity)`;
//! 2. a percentage line discount `round(gross × pct / 100)` (an amount discount is exact);
//! 3. the order discount: a percentage is `round(Σ net × pct / 100)` once for the whole
//!    order, then the order discount is spread over the lines in proportion to their net,
//!    each share floored to the fen and the remaining fen handed one by one to the lines with
//!    the largest cut-off fractions (ties to the earlier line), so shares add up exactly;
//! 4. tax per line: prices including tax give `tax = round(net × rate / (1 + rate))` and
//!    `total = net`; prices excluding tax give `tax = round(net × rate)` and
//!    `total = net + tax`.
//!
//! The order's figures are sums of the line figures, never computed separately, so line
//! totals always add up to the order total.

use rust_decimal::Decimal;

use crate::money::Money;
use crate::sale::{Discount, Line, LineId, TaxMode};

/// One line's figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineTotals {
    pub line: LineId,
    /// Price × quantity, rounded.
    pub gross: Money,
    pub line_discount: Money,
    /// This line's share of the order discount.
    pub order_discount: Money,
    /// gross − line discount − order discount share.
    pub net: Money,
    pub tax: Money,
    /// What the customer pays for this line (net, plus tax when prices exclude it).
    pub total: Money,
}

/// The whole order's figures; each is the sum over [`Totals::lines`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub lines: Vec<LineTotals>,
    pub gross: Money,
    pub discount: Money,
    pub tax: Money,
    pub total: Money,
}

impl Totals {
    pub fn line(&self, line: LineId) -> Option<&LineTotals> {
        self.lines.iter().find(|l| l.line == line)
    }
}

/// Prices a cart. Inputs are validated by [`crate::Sale`], which keeps every line and discount
/// within the lane's limits, so nothing here can overflow.
pub fn compute(lines: &[Line], order_discount: Option<Discount>, tax_mode: TaxMode) -> Totals {
    let mut priced: Vec<LineTotals> = lines.iter().map(price_line).collect();
    let net_before_order: Money = priced.iter().map(|l| l.net).sum();
    let order_discount = order_discount
        .map(|d| d.amount_off(net_before_order))
        .unwrap_or(Money::ZERO);
    let weights: Vec<Money> = priced.iter().map(|l| l.net).collect();
    for (line, share) in priced.iter_mut().zip(allocate(order_discount, &weights)) {
        line.order_discount = share;
        line.net = line.net.saturating_sub(share);
    }
    let rate_of = |id: LineId| {
        lines
            .iter()
            .find(|l| l.id == id)
            .map(|l| l.product.tax_rate)
    };
    for line in &mut priced {
        let rate = rate_of(line.line).unwrap_or(Decimal::ZERO);
        let net = line.net.to_yuan();
        line.tax = match tax_mode {
            TaxMode::Included => round(net * rate / (Decimal::ONE + rate)),
            TaxMode::Excluded => round(net * rate),
        };
        line.total = match tax_mode {
            TaxMode::Included => line.net,
            TaxMode::Excluded => line.net.saturating_add(line.tax),
        };
    }
    Totals {
        gross: priced.iter().map(|l| l.gross).sum(),
        discount: priced
            .iter()
            .map(|l| l.line_discount.saturating_add(l.order_discount))
            .sum(),
        tax: priced.iter().map(|l| l.tax).sum(),
        total: priced.iter().map(|l| l.total).sum(),
        lines: priced,
    }
}

fn price_line(line: &Line) -> LineTotals {
    let gross = line.gross();
    let line_discount = line
        .discount
        .map(|d| d.amount_off(gross))
        .unwrap_or(Money::ZERO);
    LineTotals {
        line: line.id,
        gross,
        line_discount,
        order_discount: Money::ZERO,
        net: gross.saturating_sub(line_discount),
        tax: Money::ZERO,
        total: Money::ZERO,
    }
}

pub(crate) fn round(yuan: Decimal) -> Money {
    // In range by construction (see `compute`); zero keeps a bug visible without a panic.
    Money::round_yuan(yuan).unwrap_or(Money::ZERO)
}

/// Splits `amount` over `weights` in proportion, flooring each share and handing the
/// remaining fen to the largest cut-off fractions first (earlier index wins ties). The shares
/// add up to `amount` exactly and none exceeds its weight when `amount` ≤ Σ weights.
pub fn allocate(amount: Money, weights: &[Money]) -> Vec<Money> {
    let total_weight: i128 = weights.iter().map(|w| i128::from(w.fen().max(0))).sum();
    if weights.is_empty() {
        return Vec::new();
    }
    if total_weight == 0 {
        // Nothing to weigh by: the first line carries it (only reachable with a zero amount,
        // because discounts never exceed what they apply to).
        let mut shares = vec![Money::ZERO; weights.len()];
        shares[0] = amount;
        return shares;
    }
    let amount_fen = i128::from(amount.fen());
    let mut shares: Vec<i128> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
        let product = amount_fen * i128::from(weight.fen().max(0));
        shares.push(product.div_euclid(total_weight));
        remainders.push((product.rem_euclid(total_weight), index));
    }
    let mut left = amount_fen - shares.iter().sum::<i128>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, index) in remainders {
        if left == 0 {
            break;
        }
        shares[index] += 1;
        left -= 1;
    }
    shares
        .into_iter()
        .map(|fen| Money::from_fen(i64::try_from(fen).unwrap_or(0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_conserves_every_fen() {
        let weights = [
            Money::from_fen(100),
            Money::from_fen(100),
            Money::from_fen(100),
        ];
        let shares = allocate(Money::from_fen(100), &weights);
        assert_eq!(
            shares,
            vec![
                Money::from_fen(34),
                Money::from_fen(33),
                Money::from_fen(33)
            ]
        );
        let shares = allocate(
            Money::from_fen(7),
            &[Money::from_fen(1), Money::from_fen(999)],
        );
        assert_eq!(shares.iter().copied().sum::<Money>(), Money::from_fen(7));
        assert!(shares[0] <= Money::from_fen(1));
    }
}
