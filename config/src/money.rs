//! Yuan amounts as written in the file ("500.00") to exact integer fen and back.
//!
//! The file speaks yuan because people write it; the agent counts fen because money is never a
//! float. The conversion goes through `rust_decimal` and refuses anything it cannot convert
//! exactly: more than two decimals, a sign, zero, exponents, separators or junk.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Fen in one yuan.
const FEN_PER_YUAN: i64 = 100;

/// Decimal places an amount may have: fen are the smallest unit.
const MAX_DECIMAL_PLACES: u32 = 2;

/// Parses a positive yuan amount with at most two decimals into fen.
///
/// The error is a sentence fragment that says what is wrong and what to write instead.
pub(crate) fn parse_yuan_to_fen(text: &str) -> Result<i64, String> {
    const EXAMPLE: &str = "write yuan as a decimal string with at most 2 decimals, like \"500.00\"";
    if let Some(unsigned) = text.strip_prefix('-')
        && is_plain_decimal(unsigned)
    {
        return Err(format!(
            "`{text}` is negative; {EXAMPLE}, greater than zero"
        ));
    }
    if !is_plain_decimal(text) {
        return Err(format!("`{text}` is not an amount; {EXAMPLE}"));
    }
    let yuan = Decimal::from_str_exact(text)
        .map_err(|_| format!("`{text}` is too large or not an amount; {EXAMPLE}"))?;
    if yuan.scale() > MAX_DECIMAL_PLACES {
        return Err(format!(
            "`{text}` has more than {MAX_DECIMAL_PLACES} decimal places; {EXAMPLE}"
        ));
    }
    if yuan.is_zero() {
        return Err(format!(
            "`{text}` is zero; an amount must be greater than zero, {EXAMPLE}"
        ));
    }
    yuan.checked_mul(Decimal::from(FEN_PER_YUAN))
        .and_then(|fen| fen.to_i64())
        .ok_or_else(|| format!("`{text}` is too large; {EXAMPLE}"))
}

/// Formats fen as yuan with exactly two decimals, the form [`parse_yuan_to_fen`] reads back.
pub(crate) fn format_fen_as_yuan(fen: i64) -> String {
    Decimal::new(fen, MAX_DECIMAL_PLACES).to_string()
}

/// Digits, optionally one dot with digits on both sides; nothing else (no sign, exponent,
/// underscore or whitespace, all of which `Decimal` parsing would otherwise accept or guess at).
fn is_plain_decimal(text: &str) -> bool {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let all_digits =
        |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    all_digits(whole) && fraction.is_none_or(all_digits)
}

/// A yuan amount in the file, held as fen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct YuanAmount {
    pub(crate) fen: i64,
}

impl<'de> Deserialize<'de> for YuanAmount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(YuanAmountVisitor)
    }
}

struct YuanAmountVisitor;

impl Visitor<'_> for YuanAmountVisitor {
    type Value = YuanAmount;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a yuan amount as a quoted decimal string, like \"500.00\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<YuanAmount, E> {
        parse_yuan_to_fen(text)
            .map(|fen| YuanAmount { fen })
            .map_err(E::custom)
    }
}

impl Serialize for YuanAmount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_fen_as_yuan(self.fen))
    }
}

impl FromStr for YuanAmount {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_yuan_to_fen(text).map(|fen| YuanAmount { fen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_amounts_become_fen() {
        assert_eq!(parse_yuan_to_fen("500.00"), Ok(50_000));
        assert_eq!(parse_yuan_to_fen("500"), Ok(50_000));
        assert_eq!(parse_yuan_to_fen("0.01"), Ok(1));
        assert_eq!(parse_yuan_to_fen("12.3"), Ok(1_230));
        assert_eq!(parse_yuan_to_fen("0007.50"), Ok(750));
    }

    #[test]
    fn inexact_or_junk_amounts_are_refused() {
        for text in [
            "5.001",
            "-1",
            "abc",
            "0",
            "0.00",
            "",
            ".5",
            "5.",
            "+5",
            "1e3",
            "1_000",
            " 5",
            "5 ",
            "1.2.3",
            "99999999999999999999999999999999",
        ] {
            assert!(
                parse_yuan_to_fen(text).is_err(),
                "{text:?} should be refused"
            );
        }
    }

    #[test]
    fn fen_formats_with_two_decimals() {
        assert_eq!(format_fen_as_yuan(50_000), "500.00");
        assert_eq!(format_fen_as_yuan(1), "0.01");
        assert_eq!(parse_yuan_to_fen(&format_fen_as_yuan(123_456)), Ok(123_456));
    }
}
