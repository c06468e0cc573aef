//! Amounts on the wire are decimal strings in yuan with at most two decimals (seed 004: 单位元,
//! 内部转换分); inside they are integer fen. Parsing is exact and strict: no floats, no
//! exponents, no signs, no rounding.

use thiserror::Error;

/// The largest amount one order may carry: 10 million yuan. Real rails cap single payments far
/// lower; the cap keeps every sum of amounts far from `i64` overflow.
pub const MAX_AMOUNT_FEN: i64 = 1_000_000_000;

/// Why an amount string was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AmountError {
    /// Not of the form `123`, `123.4` or `123.45`.
    #[error("amount must be a decimal string in yuan with at most 2 decimals, like \"12.34\"")]
    Format,
    /// Zero is not a payment.
    #[error("amount must be greater than 0")]
    Zero,
    /// Above [`MAX_AMOUNT_FEN`].
    #[error("amount must not exceed 10000000.00 yuan")]
    TooLarge,
}

/// Parses a yuan decimal string such as `"12.30"` into fen (`1230`).
pub fn parse_yuan(text: &str) -> Result<i64, AmountError> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || (whole.len() > 1 && whole.starts_with('0')) {
        return Err(AmountError::Format);
    }
    // More than 8 integer digits is over the cap anyway; checking length first keeps the
    // arithmetic below free of overflow.
    if whole.len() > 8 {
        return Err(AmountError::TooLarge);
    }
    let mut fen: i64 = 0;
    for digit in whole.bytes() {
        fen = fen * 10 + i64::from(digit - b'0');
    }
    fen *= 100;
    if let Some(fraction) = fraction {
        if !all_digits(fraction) || fraction.len() > 2 {
            return Err(AmountError::Format);
        }
        let mut digits = fraction.bytes();
        let tenths = digits.next().map_or(0, |d| i64::from(d - b'0'));
        let hundredths = digits.next().map_or(0, |d| i64::from(d - b'0'));
        fen += tenths * 10 + hundredths;
    }
    if fen == 0 {
        return Err(AmountError::Zero);
    }
    if fen > MAX_AMOUNT_FEN {
        return Err(AmountError::TooLarge);
    }
    Ok(fen)
}

/// Formats fen as yuan with exactly two decimals (seed 004: 显示金额时保留2位小数).
pub fn format_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let magnitude = fen.unsigned_abs();
    format!("{sign}{}.{:02}", magnitude / 100, magnitude % 100)
}

/// Beijing time (UTC+8), the zone Chinese rails use for `pay_time` and bill dates.
const BEIJING_OFFSET_MS: i64 = 8 * 3_600_000;

/// `(year, month, day)` for days since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 for a civil date (Howard Hinnant's days_from_civil).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_shifted = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_shifted + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time, the `pay_time` format of Alipay and WeChat Pay.
pub fn format_beijing_time(epoch_ms: i64) -> String {
    let local_ms = epoch_ms + BEIJING_OFFSET_MS;
    let days = local_ms.div_euclid(86_400_000);
    let ms_of_day = local_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let seconds = ms_of_day / 1_000;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        seconds / 3_600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// The Beijing-time day `yyyy-MM-dd` as a half-open range of epoch milliseconds.
pub fn beijing_day_range_ms(date: &str) -> Option<(i64, i64)> {
    let mut parts = date.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if !(1970..=9999).contains(&year) {
        return None;
    }
    let start = days_from_civil(year, month, day) * 86_400_000 - BEIJING_OFFSET_MS;
    Some((start, start + 86_400_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_exact_yuan_strings() {
        assert_eq!(parse_yuan("0.01"), Ok(1));
        assert_eq!(parse_yuan("12"), Ok(1200));
        assert_eq!(parse_yuan("12.3"), Ok(1230));
        assert_eq!(parse_yuan("12.34"), Ok(1234));
        assert_eq!(parse_yuan("10000000.00"), Ok(MAX_AMOUNT_FEN));
        for bad in [
            "", "1.", ".5", "01", "1.234", "-1", "+1", "1e3", "1,00", " 1", "0x10", "１",
        ] {
            assert_eq!(parse_yuan(bad), Err(AmountError::Format), "{bad:?}");
        }
        assert_eq!(parse_yuan("0.00"), Err(AmountError::Zero));
        assert_eq!(parse_yuan("10000000.01"), Err(AmountError::TooLarge));
        assert_eq!(parse_yuan("999999999"), Err(AmountError::TooLarge));
    }

    #[test]
    fn formats_beijing_times_and_days() {
        // 2024-10-28 12:34:56 Beijing = 04:34:56 UTC.
        assert_eq!(
            format_beijing_time(1_730_090_096_000),
            "2024-10-28 12:34:56"
        );
        let (start, end) = beijing_day_range_ms("2024-10-28").unwrap();
        assert_eq!(format_beijing_time(start), "2024-10-28 00:00:00");
        assert_eq!(format_beijing_time(end - 1_000), "2024-10-28 23:59:59");
        assert_eq!(beijing_day_range_ms("2024-13-01"), None);
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(fen in 1i64..=MAX_AMOUNT_FEN) {
            prop_assert_eq!(parse_yuan(&format_yuan(fen)), Ok(fen));
        }

        #[test]
        fn civil_dates_round_trip(days in -100_000i64..100_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
