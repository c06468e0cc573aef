//! Yuan strings as the local API writes them ("12.90") to integer fen and back, without
//! floats: the tests compare money to the fen.

use anyhow::{Context, bail};

/// "12.90" → 1290. Accepts what the lane writes: an optional minus sign, digits, and
/// exactly two decimals.
pub fn parse_fen(text: &str) -> anyhow::Result<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let Some((yuan, fen)) = digits.split_once('.') else {
        bail!("{text:?} is not an amount with two decimals");
    };
    if yuan.is_empty()
        || fen.len() != 2
        || !yuan.bytes().all(|b| b.is_ascii_digit())
        || !fen.bytes().all(|b| b.is_ascii_digit())
    {
        bail!("{text:?} is not an amount with two decimals");
    }
    let yuan: i64 = yuan
        .parse()
        .with_context(|| format!("{text:?} is out of range"))?;
    let fen: i64 = fen
        .parse()
        .with_context(|| format!("{text:?} is malformed"))?;
    let total = yuan
        .checked_mul(100)
        .and_then(|y| y.checked_add(fen))
        .with_context(|| format!("{text:?} is out of range"))?;
    Ok(if negative { -total } else { total })
}

/// 1290 → "12.90".
pub fn format_fen(amount_fen: i64) -> String {
    let sign = if amount_fen < 0 { "-" } else { "" };
    let abs = amount_fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (text, fen) in [("0.00", 0), ("0.05", 5), ("12.90", 1290), ("-3.50", -350)] {
            assert_eq!(parse_fen(text).ok(), Some(fen));
            assert_eq!(format_fen(fen), text);
        }
    }

    #[test]
    fn rejects_what_the_lane_never_writes() {
        for text in ["", "12", "12.9", "12.900", ".50", "1,00", "¥1.00", "1e2.00"] {
            assert!(parse_fen(text).is_err(), "{text:?} was accepted");
        }
    }
}
