//! What a scanned or typed code is: a product barcode (EAN-13, EAN-8, UPC-A), a scale label
//! with an embedded weight or price, a wallet payment code, or an internal store code.

use rust_decimal::Decimal;

use crate::catalog::ProductKey;
use crate::money::Money;

/// The longest code the lane accepts from any input. Real barcodes and payment codes are far
/// shorter; the limit keeps garbage out of logs and lookups.
pub const MAX_CODE_LEN: usize = 64;

/// The wallet a customer-presented payment code belongs to, recognised from its format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentWallet {
    Alipay,
    WechatPay,
    UnionPay,
}

/// What the digits after a scale label's prefix and item number carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightedValue {
    /// Weight in grams (five digits: up to 99.999 kg).
    WeightGrams,
    /// The price the scale computed, in fen.
    PriceFen,
}

/// The layout of scale-printed EAN-13 labels in this store: `PP IIIII VVVVV C` by default
/// (prefix, item number, value, check digit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedBarcodeFormat {
    /// Two-digit prefixes that mark a scale label (GS1 reserves 20-29 for in-store use).
    pub prefixes: Vec<String>,
    /// How many digits after the prefix name the item (its PLU); the rest up to the check
    /// digit is the value.
    pub item_digits: usize,
    pub value: WeightedValue,
}

impl Default for WeightedBarcodeFormat {
    fn default() -> Self {
        WeightedBarcodeFormat {
            prefixes: (20..=29).map(|p| p.to_string()).collect(),
            item_digits: 5,
            value: WeightedValue::WeightGrams,
        }
    }
}

/// A code after classification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScannedCode {
    /// A GTIN product barcode, normalised to 13 digits (UPC-A gets a leading zero; EAN-8
    /// stays 8 digits because it is its own number space).
    Gtin(String),
    /// A scale label: the item's PLU and the weight it carries.
    WeightedLabel { plu: String, weight_kg: Decimal },
    /// A scale label that carries the price the scale computed.
    PricedLabel { plu: String, price: Money },
    /// A customer-presented wallet payment code. Never logged in full by the shell.
    PaymentCode { wallet: PaymentWallet, code: String },
    /// A store-internal code (SKU or short code typed by the cashier).
    Internal(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BarcodeError {
    #[error("empty code")]
    Empty,
    #[error("code is longer than {MAX_CODE_LEN} characters")]
    TooLong,
    #[error("code contains characters a barcode cannot have")]
    BadCharacters,
    #[error("check digit does not match (misread): scan again")]
    BadCheckDigit,
}

impl ScannedCode {
    /// The catalog key to look this code up by, or `None` for payment codes.
    pub fn product_key(&self) -> Option<ProductKey> {
        match self {
            ScannedCode::Gtin(gtin) => Some(ProductKey::Gtin(gtin.clone())),
            ScannedCode::WeightedLabel { plu, .. } | ScannedCode::PricedLabel { plu, .. } => {
                Some(ProductKey::Plu(plu.clone()))
            }
            ScannedCode::Internal(code) => Some(ProductKey::Internal(code.clone())),
            ScannedCode::PaymentCode { .. } => None,
        }
    }
}

/// Classifies a code from a scanner or the keyboard.
///
/// Digit strings of GTIN length must carry a valid check digit: a misread is reported, never
/// looked up, so a damaged label cannot ring up another product.
pub fn classify(code: &str, weighted: &WeightedBarcodeFormat) -> Result<ScannedCode, BarcodeError> {
    let code = code.trim();
    if code.is_empty() {
        return Err(BarcodeError::Empty);
    }
    if code.len() > MAX_CODE_LEN {
        return Err(BarcodeError::TooLong);
    }
    if !code
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(BarcodeError::BadCharacters);
    }
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(ScannedCode::Internal(code.to_string()));
    }
    if let Some(wallet) = payment_wallet(code) {
        return Ok(ScannedCode::PaymentCode {
            wallet,
            code: code.to_string(),
        });
    }
    match code.len() {
        8 => {
            check_gtin(code)?;
            Ok(ScannedCode::Gtin(code.to_string()))
        }
        12 => {
            check_gtin(code)?;
            Ok(ScannedCode::Gtin(format!("0{code}")))
        }
        13 => {
            check_gtin(code)?;
            Ok(weighted_label(code, weighted)
                .unwrap_or_else(|| ScannedCode::Gtin(code.to_string())))
        }
        _ => Ok(ScannedCode::Internal(code.to_string())),
    }
}

/// Recognises wallet payment codes by their published formats: WeChat Pay 18 digits starting
/// 10-15; Alipay 16-24 digits starting 25-30; UnionPay 19 digits starting 62.
pub fn payment_wallet(code: &str) -> Option<PaymentWallet> {
    if !code.bytes().all(|b| b.is_ascii_digit()) || code.len() < 16 {
        return None;
    }
    let prefix: u32 = code.get(..2)?.parse().ok()?;
    match (code.len(), prefix) {
        (18, 10..=15) => Some(PaymentWallet::WechatPay),
        (16..=24, 25..=30) => Some(PaymentWallet::Alipay),
        (19, 62) => Some(PaymentWallet::UnionPay),
        _ => None,
    }
}

/// Verifies the GS1 mod-10 check digit of an EAN-8, UPC-A or EAN-13.
pub fn check_gtin(digits: &str) -> Result<(), BarcodeError> {
    let bytes = digits.as_bytes();
    let (body, check) = bytes.split_at(bytes.len() - 1);
    // GS1: weights 3,1,3,1... counted from the digit next to the check digit.
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    let expected = (10 - sum % 10) % 10;
    if u32::from(check[0] - b'0') == expected {
        Ok(())
    } else {
        Err(BarcodeError::BadCheckDigit)
    }
}

fn weighted_label(code: &str, format: &WeightedBarcodeFormat) -> Option<ScannedCode> {
    if !format.prefixes.iter().any(|p| code.starts_with(p.as_str())) {
        return None;
    }
    let plu = code.get(2..2 + format.item_digits)?.to_string();
    let value: i64 = code.get(2 + format.item_digits..12)?.parse().ok()?;
    Some(match format.value {
        WeightedValue::WeightGrams => ScannedCode::WeightedLabel {
            plu,
            weight_kg: Decimal::new(value, 3),
        },
        WeightedValue::PriceFen => ScannedCode::PricedLabel {
            plu,
            price: Money::from_fen(value),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn classify_default(code: &str) -> Result<ScannedCode, BarcodeError> {
        classify(code, &WeightedBarcodeFormat::default())
    }

    #[test]
    fn product_barcodes_with_valid_check_digits() {
        assert_eq!(
            classify_default("6901234567892"),
            Ok(ScannedCode::Gtin("6901234567892".into()))
        );
        assert_eq!(
            classify_default("96385074"),
            Ok(ScannedCode::Gtin("96385074".into()))
        );
        assert_eq!(
            classify_default("036000291452"),
            Ok(ScannedCode::Gtin("0036000291452".into()))
        );
    }

    #[test]
    fn a_bad_check_digit_is_a_misread() {
        assert_eq!(
            classify_default("6901234567893"),
            Err(BarcodeError::BadCheckDigit)
        );
        assert_eq!(
            classify_default("96385075"),
            Err(BarcodeError::BadCheckDigit)
        );
    }

    #[test]
    fn scale_labels_carry_weight_or_price() {
        // 21 12345 01250 check → PLU 12345, 1.250 kg
        let mut label = String::from("211234501250");
        label.push(check_digit_for(&label));
        assert_eq!(
            classify_default(&label),
            Ok(ScannedCode::WeightedLabel {
                plu: "12345".into(),
                weight_kg: dec!(1.250)
            })
        );
        let priced = WeightedBarcodeFormat {
            value: WeightedValue::PriceFen,
            ..Default::default()
        };
        assert_eq!(
            classify(&label, &priced),
            Ok(ScannedCode::PricedLabel {
                plu: "12345".into(),
                price: Money::from_fen(1250)
            })
        );
    }

    #[test]
    fn wallet_codes_are_recognised_by_format() {
        assert_eq!(
            payment_wallet("134567890123456789"),
            Some(PaymentWallet::WechatPay)
        );
        assert_eq!(
            payment_wallet("284567890123456789"),
            Some(PaymentWallet::Alipay)
        );
        assert_eq!(
            payment_wallet("6212345678901234567"),
            Some(PaymentWallet::UnionPay)
        );
        assert_eq!(payment_wallet("164567890123456789"), None);
        assert!(matches!(
            classify_default("134567890123456789"),
            Ok(ScannedCode::PaymentCode { .. })
        ));
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(classify_default("   "), Err(BarcodeError::Empty));
        assert_eq!(
            classify_default("abc\u{0}def"),
            Err(BarcodeError::BadCharacters)
        );
        assert_eq!(
            classify_default(&"1".repeat(65)),
            Err(BarcodeError::TooLong)
        );
        assert_eq!(
            classify_default("SKU-42"),
            Ok(ScannedCode::Internal("SKU-42".into()))
        );
    }

    /// Computes the check digit a 12-digit body needs (test helper).
    pub(crate) fn check_digit_for(body: &str) -> char {
        (b'0'..=b'9')
            .map(char::from)
            .find(|c| check_gtin(&format!("{body}{c}")).is_ok())
            .unwrap()
    }
}
