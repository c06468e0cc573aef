//! A sale's life: open (cart being built) → tendering (being paid) → completed, or voided;
//! refunds against a completed sale.

use rust_decimal::Decimal;

use crate::catalog::{Pricing, Product};
use crate::money::Money;
use crate::refund::{self, Refund, RefundRequest};
use crate::tender::{Tender, TenderId, TenderMethod, TenderOutcome};
use crate::totals::{self, Totals};

/// Lines on one sale. A supermarket trolley is a few hundred lines; more is an accident.
pub const MAX_LINES: usize = 500;
/// Pieces on one line.
pub const MAX_UNIT_QUANTITY: i64 = 9_999;
/// Kilograms on one weighed line.
pub const MAX_WEIGHT_KG: i64 = 999;
/// Tenders on one sale (split tender).
pub const MAX_TENDERS: usize = 20;
/// Cash handed over beyond what is owed: ten thousand yuan. More is a typing error.
pub const MAX_CASH_OVERPAY_FEN: i64 = 1_000_000;
/// Refunds against one sale.
pub const MAX_REFUNDS: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaleId(pub String);

/// A line's identity within its sale; never reused after a line is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineId(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaxMode {
    /// Shelf prices include VAT (the norm in China).
    Included,
    /// Shelf prices exclude VAT; tax is added per line.
    Excluded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaleState {
    Open,
    Tendering,
    Completed,
    Voided,
}

impl SaleState {
    pub fn code(self) -> &'static str {
        match self {
            SaleState::Open => "open",
            SaleState::Tendering => "tendering",
            SaleState::Completed => "completed",
            SaleState::Voided => "voided",
        }
    }
}

/// A discount on a line or on the whole order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discount {
    Amount(Money),
    /// Percent off, greater than 0 and at most 100.
    Percent(Decimal),
}

impl Discount {
    /// What this discount takes off `base`: never more than `base`.
    pub fn amount_off(self, base: Money) -> Money {
        match self {
            Discount::Amount(amount) => amount.min(base),
            Discount::Percent(percent) => {
                totals::round(base.to_yuan() * percent / Decimal::ONE_HUNDRED).min(base)
            }
        }
    }

    fn validate(self) -> Result<(), SaleError> {
        match self {
            Discount::Amount(amount) if amount.fen() <= 0 => Err(SaleError::InvalidDiscount),
            Discount::Percent(p) if p <= Decimal::ZERO || p > Decimal::ONE_HUNDRED => {
                Err(SaleError::InvalidDiscount)
            }
            _ => Ok(()),
        }
    }
}

/// A line in the cart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub id: LineId,
    pub product: Product,
    /// Pieces, or kg for weighed products.
    pub quantity: Decimal,
    /// Overrides `product.unit_price` for a scale label that carries the price.
    pub label_price: Option<Money>,
    pub discount: Option<Discount>,
}

impl Line {
    /// Price × quantity rounded to the fen (rounding point 1 in [`crate::totals`]).
    pub fn gross(&self) -> Money {
        match self.label_price {
            Some(price) => price,
            None => totals::round(self.product.unit_price.to_yuan() * self.quantity),
        }
    }
}

/// Everything that can be refused. Each variant is a rule, not a crash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaleError {
    #[error("cannot {action} a sale that is {state}")]
    InvalidTransition {
        state: &'static str,
        action: &'static str,
    },
    #[error("no line {0} on this sale")]
    NoSuchLine(u32),
    #[error("the cart is full ({MAX_LINES} lines): finish this sale and start another")]
    TooManyLines,
    #[error("quantity must be a whole number from 1 to {MAX_UNIT_QUANTITY}")]
    InvalidQuantity,
    #[error("a weight must be more than 0 and at most {MAX_WEIGHT_KG} kg, to the gram")]
    InvalidWeight,
    #[error("a weighed item's quantity comes from its label; scan it again instead")]
    WeightFromLabel,
    #[error("a discount must be a positive amount or a percentage above 0 and at most 100")]
    InvalidDiscount,
    #[error("the discount is larger than what it applies to")]
    DiscountTooLarge,
    #[error("the cart is empty: scan an item first")]
    EmptyCart,
    #[error("the amount must be positive")]
    InvalidAmount,
    #[error("{method} cannot pay more than the {remaining} still owed")]
    TenderExceedsRemaining {
        method: &'static str,
        remaining: Money,
    },
    #[error("cash handed over exceeds what is owed by more than 10,000.00: check the amount")]
    CashTooLarge,
    #[error("too many tenders on one sale")]
    TooManyTenders,
    #[error("a tender with id {0} is already on this sale")]
    DuplicateTender(String),
    #[error("this sale was partly paid by {0}: reverse that payment before voiding")]
    VoidNeedsReversal(&'static str),
    #[error("refund of line {line} exceeds what is left to refund on it")]
    RefundExceedsLine { line: u32 },
    #[error("refund of {requested} exceeds the {refundable} left to refund")]
    RefundExceedsSale { requested: Money, refundable: Money },
    #[error("nothing to refund")]
    NothingToRefund,
    #[error("too many refunds on one sale")]
    TooManyRefunds,
}

/// One sale, from the first scan to its last refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sale {
    pub id: SaleId,
    pub tax_mode: TaxMode,
    pub opened_at_ms: i64,
    state: SaleState,
    lines: Vec<Line>,
    order_discount: Option<Discount>,
    tenders: Vec<Tender>,
    refunds: Vec<Refund>,
    next_line: u32,
    completed_at_ms: Option<i64>,
    voided_at_ms: Option<i64>,
}

impl Sale {
    pub fn new(id: SaleId, tax_mode: TaxMode, opened_at_ms: i64) -> Sale {
        Sale {
            id,
            tax_mode,
            opened_at_ms,
            state: SaleState::Open,
            lines: Vec::new(),
            order_discount: None,
            tenders: Vec::new(),
            refunds: Vec::new(),
            next_line: 1,
            completed_at_ms: None,
            voided_at_ms: None,
        }
    }

    pub fn state(&self) -> SaleState {
        self.state
    }
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }
    pub fn tenders(&self) -> &[Tender] {
        &self.tenders
    }
    pub fn refunds(&self) -> &[Refund] {
        &self.refunds
    }
    pub fn order_discount(&self) -> Option<Discount> {
        self.order_discount
    }
    pub fn completed_at_ms(&self) -> Option<i64> {
        self.completed_at_ms
    }
    pub fn voided_at_ms(&self) -> Option<i64> {
        self.voided_at_ms
    }

    pub fn totals(&self) -> Totals {
        totals::compute(&self.lines, self.order_discount, self.tax_mode)
    }

    /// What the tenders so far pay toward the total.
    pub fn paid(&self) -> Money {
        self.tenders.iter().map(|t| t.amount).sum()
    }

    pub fn remaining(&self) -> Money {
        self.totals()
            .total
            .saturating_sub(self.paid())
            .max(Money::ZERO)
    }

    /// Change given on this sale (cash over the amount owed).
    pub fn change(&self) -> Money {
        self.tenders.iter().map(|t| t.change).sum()
    }

    fn require(&self, allowed: &[SaleState], action: &'static str) -> Result<(), SaleError> {
        if allowed.contains(&self.state) {
            Ok(())
        } else {
            Err(SaleError::InvalidTransition {
                state: self.state.code(),
                action,
            })
        }
    }

    /// Adds `quantity` of a product priced per unit; a repeat scan of the same product adds to
    /// its existing undiscounted line.
    pub fn add_item(&mut self, product: Product, quantity: Decimal) -> Result<LineId, SaleError> {
        self.require(&[SaleState::Open], "add items to")?;
        if product.pricing == Pricing::PerKg {
            return Err(SaleError::WeightFromLabel);
        }
        validate_units(quantity)?;
        if let Some(line) = self
            .lines
            .iter_mut()
            .find(|l| l.product.sku == product.sku && l.discount.is_none() && l.product == product)
        {
            let total = line.quantity + quantity;
            validate_units(total)?;
            line.quantity = total;
            return Ok(line.id);
        }
        self.push_line(product, quantity, None)
    }

    /// Adds a weighed item from a scale label: always its own line.
    pub fn add_weighed_item(
        &mut self,
        product: Product,
        weight_kg: Decimal,
    ) -> Result<LineId, SaleError> {
        self.require(&[SaleState::Open], "add items to")?;
        if weight_kg <= Decimal::ZERO
            || weight_kg > Decimal::from(MAX_WEIGHT_KG)
            || weight_kg.normalize().scale() > 3
        {
            return Err(SaleError::InvalidWeight);
        }
        self.push_line(product, weight_kg, None)
    }

    /// Adds an item whose scale label carries its price.
    pub fn add_priced_label(
        &mut self,
        product: Product,
        price: Money,
    ) -> Result<LineId, SaleError> {
        self.require(&[SaleState::Open], "add items to")?;
        if price.fen() <= 0 || price.fen() > crate::money::MAX_AMOUNT_FEN {
            return Err(SaleError::InvalidAmount);
        }
        self.push_line(product, Decimal::ONE, Some(price))
    }

    fn push_line(
        &mut self,
        product: Product,
        quantity: Decimal,
        label_price: Option<Money>,
    ) -> Result<LineId, SaleError> {
        if self.lines.len() >= MAX_LINES {
            return Err(SaleError::TooManyLines);
        }
        let id = LineId(self.next_line);
        self.next_line += 1;
        self.lines.push(Line {
            id,
            product,
            quantity,
            label_price,
            discount: None,
        });
        Ok(id)
    }

    pub fn set_quantity(&mut self, line: LineId, quantity: Decimal) -> Result<(), SaleError> {
        self.require(&[SaleState::Open], "change quantities on")?;
        let line = self.line_mut(line)?;
        if line.product.pricing == Pricing::PerKg || line.label_price.is_some() {
            return Err(SaleError::WeightFromLabel);
        }
        validate_units(quantity)?;
        line.quantity = quantity;
        Ok(())
    }

    pub fn remove_line(&mut self, line: LineId) -> Result<(), SaleError> {
        self.require(&[SaleState::Open], "remove lines from")?;
        let index = self
            .lines
            .iter()
            .position(|l| l.id == line)
            .ok_or(SaleError::NoSuchLine(line.0))?;
        self.lines.remove(index);
        Ok(())
    }

    pub fn set_line_discount(
        &mut self,
        line: LineId,
        discount: Option<Discount>,
    ) -> Result<(), SaleError> {
        self.require(&[SaleState::Open], "discount")?;
        let line = self.line_mut(line)?;
        if let Some(discount) = discount {
            discount.validate()?;
            if let Discount::Amount(amount) = discount
                && amount > line.gross()
            {
                return Err(SaleError::DiscountTooLarge);
            }
        }
        line.discount = discount;
        Ok(())
    }

    pub fn set_order_discount(&mut self, discount: Option<Discount>) -> Result<(), SaleError> {
        self.require(&[SaleState::Open], "discount")?;
        if let Some(discount) = discount {
            discount.validate()?;
            let base: Money = {
                let totals = totals::compute(&self.lines, None, self.tax_mode);
                totals.lines.iter().map(|l| l.net).sum()
            };
            if let Discount::Amount(amount) = discount
                && amount > base
            {
                return Err(SaleError::DiscountTooLarge);
            }
        }
        self.order_discount = discount;
        Ok(())
    }

    fn line_mut(&mut self, line: LineId) -> Result<&mut Line, SaleError> {
        self.lines
            .iter_mut()
            .find(|l| l.id == line)
            .ok_or(SaleError::NoSuchLine(line.0))
    }

    /// Applies a settled tender. The first tender freezes the cart (state → tendering); the
    /// tender that covers the total completes the sale at `now_ms`.
    ///
    /// `tendered` is what the customer handed over: only cash may exceed what is owed, and
    /// the excess is change.
    pub fn add_tender(
        &mut self,
        id: TenderId,
        method: TenderMethod,
        tendered: Money,
        reference: Option<String>,
        now_ms: i64,
    ) -> Result<TenderOutcome, SaleError> {
        self.require(&[SaleState::Open, SaleState::Tendering], "pay")?;
        if self.lines.is_empty() {
            return Err(SaleError::EmptyCart);
        }
        if self.tenders.len() >= MAX_TENDERS {
            return Err(SaleError::TooManyTenders);
        }
        if self.tenders.iter().any(|t| t.id == id) {
            return Err(SaleError::DuplicateTender(id.0));
        }
        let remaining = self.remaining();
        // A fully discounted sale is completed by a zero cash tender; otherwise zero is a typo.
        if tendered.is_negative()
            || (tendered.is_zero() && !(remaining.is_zero() && method.gives_change()))
        {
            return Err(SaleError::InvalidAmount);
        }
        if tendered > remaining {
            if !method.gives_change() {
                return Err(SaleError::TenderExceedsRemaining {
                    method: method.code(),
                    remaining,
                });
            }
            if tendered.fen() - remaining.fen() > MAX_CASH_OVERPAY_FEN {
                return Err(SaleError::CashTooLarge);
            }
        }
        let applied = tendered.min(remaining);
        let change = tendered.saturating_sub(applied);
        self.tenders.push(Tender {
            id,
            method,
            amount: applied,
            tendered,
            change,
            reference,
            at_ms: now_ms,
        });
        self.state = SaleState::Tendering;
        let remaining = remaining.saturating_sub(applied);
        let completed = remaining.is_zero();
        if completed {
            self.state = SaleState::Completed;
            self.completed_at_ms = Some(now_ms);
        }
        Ok(TenderOutcome {
            applied,
            change,
            remaining,
            completed,
        })
    }

    /// Freezes the cart for a payment that is about to be attempted (a wallet code, a QR, a
    /// card): from now on the sale can only be paid, or voided once nothing but cash is on it.
    pub fn begin_tendering(&mut self) -> Result<(), SaleError> {
        self.require(&[SaleState::Open, SaleState::Tendering], "pay")?;
        if self.lines.is_empty() {
            return Err(SaleError::EmptyCart);
        }
        if self.tenders.len() >= MAX_TENDERS {
            return Err(SaleError::TooManyTenders);
        }
        self.state = SaleState::Tendering;
        Ok(())
    }

    /// Voids the sale. A sale being paid can be voided only while every tender on it is cash
    /// (the drawer hands it back); any other payment must be reversed first.
    pub fn void(&mut self, now_ms: i64) -> Result<(), SaleError> {
        self.require(&[SaleState::Open, SaleState::Tendering], "void")?;
        if let Some(tender) = self.tenders.iter().find(|t| t.method != TenderMethod::Cash) {
            return Err(SaleError::VoidNeedsReversal(tender.method.code()));
        }
        self.state = SaleState::Voided;
        self.voided_at_ms = Some(now_ms);
        Ok(())
    }

    /// Plans and records a refund; the caller persists it in the same transaction as its
    /// journal entry. Refunds never exceed what was paid, per line and per tender.
    pub fn refund(
        &mut self,
        id: String,
        request: &RefundRequest,
        reason: String,
        now_ms: i64,
    ) -> Result<Refund, SaleError> {
        self.require(&[SaleState::Completed], "refund")?;
        if self.refunds.len() >= MAX_REFUNDS {
            return Err(SaleError::TooManyRefunds);
        }
        let refund = refund::plan(self, id, request, reason, now_ms)?;
        self.refunds.push(refund.clone());
        Ok(refund)
    }

    /// Rebuilds a sale from stored parts (the shell's persistence), checking nothing: the
    /// parts were produced by this type before they were stored.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        id: SaleId,
        tax_mode: TaxMode,
        opened_at_ms: i64,
        state: SaleState,
        lines: Vec<Line>,
        order_discount: Option<Discount>,
        tenders: Vec<Tender>,
        refunds: Vec<Refund>,
        completed_at_ms: Option<i64>,
        voided_at_ms: Option<i64>,
    ) -> Sale {
        let next_line = lines.iter().map(|l| l.id.0).max().unwrap_or(0) + 1;
        Sale {
            id,
            tax_mode,
            opened_at_ms,
            state,
            lines,
            order_discount,
            tenders,
            refunds,
            next_line,
            completed_at_ms,
            voided_at_ms,
        }
    }
}

fn validate_units(quantity: Decimal) -> Result<(), SaleError> {
    if quantity < Decimal::ONE
        || quantity > Decimal::from(MAX_UNIT_QUANTITY)
        || !quantity.fract().is_zero()
    {
        return Err(SaleError::InvalidQuantity);
    }
    Ok(())
}
