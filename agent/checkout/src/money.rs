//! Amounts of money as integer fen (1/100 yuan), with exact parsing and display in yuan.

use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

/// The largest amount the lane will ever handle in one number: ten million yuan. Anything
/// larger is a typing or scanning accident, and keeping far away from `i64::MAX` means sums of
/// thousands of such amounts cannot overflow.
pub const MAX_AMOUNT_FEN: i64 = 1_000_000_000;

/// An amount of money in fen. Negative values are allowed for differences (for example a
/// counted cash drawer that is short), never for prices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not an amount: write yuan with at most two decimals, like 12.50")]
    NotAnAmount(String),
    #[error("`{0}` has more than two decimals; amounts are exact to the fen")]
    TooManyDecimals(String),
    #[error("`{0}` is larger than the largest amount a lane accepts (10,000,000.00)")]
    TooLarge(String),
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_fen(fen: i64) -> Money {
        Money(fen)
    }

    pub const fn fen(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Parses yuan written as a decimal (`"12"`, `"12.5"`, `"12.50"`, `"-3.00"`). More than two
    /// decimals is an error, never a rounding: a price list with `1.005` is wrong, not cheap.
    pub fn parse_yuan(text: &str) -> Result<Money, MoneyError> {
        let trimmed = text.trim();
        let value =
            Decimal::from_str(trimmed).map_err(|_| MoneyError::NotAnAmount(text.to_string()))?;
        if trimmed.contains(['e', 'E']) {
            return Err(MoneyError::NotAnAmount(text.to_string()));
        }
        if value.normalize().scale() > 2 {
            return Err(MoneyError::TooManyDecimals(text.to_string()));
        }
        Money::from_yuan_exact(value).ok_or_else(|| MoneyError::TooLarge(text.to_string()))
    }

    /// Converts a yuan decimal that is already exact to the fen.
    fn from_yuan_exact(yuan: Decimal) -> Option<Money> {
        let fen = (yuan * Decimal::ONE_HUNDRED).to_i64()?;
        (fen.abs() <= MAX_AMOUNT_FEN).then_some(Money(fen))
    }

    /// Rounds a yuan amount to the fen, half away from zero (四舍五入, the rule Chinese
    /// retail and the tax authority use). `None` when the result is out of range.
    pub fn round_yuan(yuan: Decimal) -> Option<Money> {
        let rounded = yuan.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        Money::from_yuan_exact(rounded)
    }

    /// Rounds a yuan amount down (toward negative infinity) to the fen. Used where a share
    /// must never exceed its part and a remainder is handed out separately.
    pub fn floor_yuan(yuan: Decimal) -> Option<Money> {
        Money::from_yuan_exact(yuan.round_dp_with_strategy(2, RoundingStrategy::ToNegativeInfinity))
    }

    /// The amount in yuan as an exact decimal.
    pub fn to_yuan(self) -> Decimal {
        Decimal::new(self.0, 2)
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        let sum = self.0.checked_add(other.0)?;
        (sum.abs() <= MAX_AMOUNT_FEN * 1_000).then_some(Money(sum))
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.checked_add(Money(other.0.checked_neg()?))
    }

    /// Adds amounts that are already known to be in range (line totals of a bounded cart).
    /// Saturates instead of wrapping, so a bug shows as a wrong total rather than a panic.
    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    pub fn min(self, other: Money) -> Money {
        Money(self.0.min(other.0))
    }

    pub fn max(self, other: Money) -> Money {
        Money(self.0.max(other.0))
    }
}

impl fmt::Display for Money {
    /// Yuan with exactly two decimals: `12.50`, `-0.05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Money::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn parses_yuan_exactly() {
        assert_eq!(Money::parse_yuan("12").unwrap().fen(), 1200);
        assert_eq!(Money::parse_yuan("12.5").unwrap().fen(), 1250);
        assert_eq!(Money::parse_yuan(" 0.07 ").unwrap().fen(), 7);
        assert_eq!(Money::parse_yuan("-3.00").unwrap().fen(), -300);
        assert_eq!(Money::parse_yuan("1.500").unwrap().fen(), 150);
    }

    #[test]
    fn rejects_what_is_not_exact() {
        assert!(matches!(
            Money::parse_yuan("1.005"),
            Err(MoneyError::TooManyDecimals(_))
        ));
        assert!(matches!(
            Money::parse_yuan("abc"),
            Err(MoneyError::NotAnAmount(_))
        ));
        assert!(matches!(
            Money::parse_yuan("1e3"),
            Err(MoneyError::NotAnAmount(_))
        ));
        assert!(matches!(
            Money::parse_yuan(""),
            Err(MoneyError::NotAnAmount(_))
        ));
        assert!(matches!(
            Money::parse_yuan("10000000.01"),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(Money::round_yuan(dec!(0.005)).unwrap().fen(), 1);
        assert_eq!(Money::round_yuan(dec!(0.0049)).unwrap().fen(), 0);
        assert_eq!(Money::round_yuan(dec!(-0.005)).unwrap().fen(), -1);
        assert_eq!(Money::floor_yuan(dec!(0.019)).unwrap().fen(), 1);
    }

    #[test]
    fn displays_two_decimals() {
        assert_eq!(Money::from_fen(1250).to_string(), "12.50");
        assert_eq!(Money::from_fen(-5).to_string(), "-0.05");
        assert_eq!(Money::ZERO.to_string(), "0.00");
    }
}
