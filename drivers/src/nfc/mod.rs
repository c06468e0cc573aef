//! Contactless card readers: the `CardReader` trait the lane pays through, the card data it
//! returns (with the card number sealed against accidental display), the EMV read sequence and
//! the PN532 driver over libnfc.
//!
//! The card number (PAN) and track 2 never appear in `Debug` or `Display` of anything here
//! and are never logged: they are wrapped in [`SensitivePan`] and [`SensitiveTrack2`], whose
//! only way out is an explicit `expose()` for the step that seals them to the gateway.

pub mod emv;
// The libnfc driver: nfc1 builds libnfc and libusb with CMake, which the fuzz targets (pure
// frame parsers) do without.
#[cfg(feature = "libnfc")]
pub mod pn532;
pub mod tlv;

use std::fmt;
use std::time::Duration;

use crate::error::{DeviceError, DeviceStatus};

pub use emv::ApduTransport;
#[cfg(feature = "libnfc")]
pub use pn532::Pn532Reader;

/// The default serial speed of a PN532 in HSU (UART) mode.
pub const PN532_UART_BAUD: u32 = 115_200;

/// Builds the libnfc connstring for a PN532 on a serial port.
pub fn pn532_uart_connstring(port: &str) -> String {
    format!("pn532_uart:{port}:{PN532_UART_BAUD}")
}

/// A contactless card reader, as the lane uses it: wait for a tap, read the payment
/// application, watch for the card leaving.
pub trait CardReader {
    /// Waits up to `timeout` for a card to enter the field and selects it. No card in time
    /// is an error of kind `Timeout`.
    fn wait_for_card(&mut self, timeout: Duration) -> Result<DetectedCard, DeviceError>;

    /// Reads the payment application of the selected card (EMV: PPSE, AID, GPO, records).
    /// A card that stops answering or answers nonsense is an error of kind `Protocol`.
    fn read_card(&mut self, transaction: &TransactionContext) -> Result<CardData, DeviceError>;

    /// Whether the selected card is still in the field.
    fn card_present(&mut self) -> Result<bool, DeviceError>;

    /// Waits up to `timeout` for the selected card to leave the field.
    fn wait_for_removal(&mut self, timeout: Duration) -> Result<(), DeviceError>;

    /// The reader's state for the status bar.
    fn status(&mut self) -> DeviceStatus;
}

/// A card in the field, as the reader saw it at anticollision (no payment data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectedCard {
    /// The card's anticollision identifier; random on most payment cards.
    pub uid: Vec<u8>,
    pub atqa: [u8; 2],
    pub sak: u8,
}

/// What the terminal tells the card in GET PROCESSING OPTIONS when the card asks (PDOL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionContext {
    /// Amount authorised, in fen (minor units of `currency_code`).
    pub amount_fen: u64,
    /// ISO 4217 numeric currency (156: CNY).
    pub currency_code: u16,
    /// ISO 3166 numeric terminal country (156: China).
    pub country_code: u16,
    /// Transaction date (year, month, day) in the store's time zone; the driver has no clock.
    pub date: (u16, u8, u8),
    /// Four random bytes from the terminal (tag 9F37).
    pub unpredictable_number: [u8; 4],
}

impl Default for TransactionContext {
    /// For reading a card outside a sale (`lanepay devices test`): zero amount in CNY.
    fn default() -> TransactionContext {
        TransactionContext {
            amount_fen: 0,
            currency_code: 156,
            country_code: 156,
            date: (2000, 1, 1),
            unpredictable_number: [0; 4],
        }
    }
}

/// Card expiry: the last month the card is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CardExpiry {
    /// Four-digit year (cards encode two digits: 20YY).
    pub year: u16,
    pub month: u8,
}

impl CardExpiry {
    /// Parses `YYMM` digits.
    pub fn from_yymm(digits: &str) -> Option<CardExpiry> {
        if digits.len() != 4 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let year: u16 = digits.get(0..2)?.parse().ok()?;
        let month: u8 = digits.get(2..4)?.parse().ok()?;
        (1..=12).contains(&month).then_some(CardExpiry {
            year: 2000 + year,
            month,
        })
    }
}

impl fmt::Display for CardExpiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}/{:02}", self.month, self.year % 100)
    }
}

/// The payment data read from a contactless card: what the payments code needs to seal and
/// authorise. Deliberately not `Clone`: seal the PAN and drop this, rather than copy it around.
#[derive(Debug)]
pub struct CardData {
    pub pan: SensitivePan,
    pub expiry: CardExpiry,
    /// Tag 5F20 when the card carries a real one (contactless cards often do not).
    pub cardholder_name: Option<String>,
    /// The application selected (for example A0000000031010 for Visa credit/debit).
    pub aid: Vec<u8>,
    /// Tag 50: what the customer display and receipt may call the card ("VISA").
    pub application_label: Option<String>,
    /// Tag 5F34: tells apart cards that share a PAN.
    pub pan_sequence_number: Option<u8>,
    /// Track 2 equivalent data (tag 57), when the card gives it.
    pub track2: Option<SensitiveTrack2>,
}

impl CardData {
    /// The AID as upper-case hex, for logs and receipts.
    pub fn aid_hex(&self) -> String {
        self.aid.iter().map(|byte| format!("{byte:02X}")).collect()
    }
}

/// Overwrites a string's bytes before freeing them (best effort: the optimiser is asked not
/// to drop the writes, but copies made earlier by the allocator are out of reach).
fn wipe(text: &mut String) {
    let mut bytes = std::mem::take(text).into_bytes();
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

/// A card number. `Debug` and `Display` show the first six and last four digits only
/// (`476173******0010`); [`SensitivePan::expose`] is the one way to the digits, for sealing.
/// The digits are overwritten when it is dropped.
pub struct SensitivePan {
    digits: String,
}

impl SensitivePan {
    pub(crate) fn new(digits: String) -> SensitivePan {
        SensitivePan { digits }
    }

    /// The full card number. Call this only to seal it to the gateway's key; never log,
    /// store or display the result.
    pub fn expose(&self) -> &str {
        &self.digits
    }

    /// First six, stars, last four: what a receipt or screen may show.
    pub fn masked(&self) -> String {
        mask_digits(&self.digits)
    }

    /// The last four digits.
    pub fn last_four(&self) -> &str {
        self.digits
            .get(self.digits.len().saturating_sub(4)..)
            .unwrap_or("")
    }
}

fn mask_digits(digits: &str) -> String {
    if digits.len() < 10 {
        return "*".repeat(digits.len());
    }
    let head = digits.get(..6).unwrap_or("");
    let tail = digits.get(digits.len() - 4..).unwrap_or("");
    format!("{head}{}{tail}", "*".repeat(digits.len() - 10))
}

impl fmt::Debug for SensitivePan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SensitivePan({})", self.masked())
    }
}

impl fmt::Display for SensitivePan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Drop for SensitivePan {
    fn drop(&mut self) {
        wipe(&mut self.digits);
    }
}

/// Track 2 equivalent data (`PAN D YYMM service-code discretionary`). It contains the card
/// number, so it is shown as its masked PAN and length only; [`SensitiveTrack2::expose`]
/// gives the digits for sealing.
pub struct SensitiveTrack2 {
    text: String,
}

impl SensitiveTrack2 {
    pub(crate) fn new(text: String) -> SensitiveTrack2 {
        SensitiveTrack2 { text }
    }

    /// The track 2 equivalent as digits with `D` as separator. Seal it; never log or store it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The three-digit service code after the expiry, if present.
    pub fn service_code(&self) -> Option<&str> {
        let (_, rest) = self.text.split_once('D')?;
        rest.get(4..7)
    }
}

impl fmt::Debug for SensitiveTrack2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pan = self.text.split_once('D').map(|(pan, _)| pan).unwrap_or("");
        write!(
            f,
            "SensitiveTrack2({}D…, {} characters)",
            mask_digits(pan),
            self.text.len()
        )
    }
}

impl Drop for SensitiveTrack2 {
    fn drop(&mut self) {
        wipe(&mut self.text);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pan_and_track2_are_masked_everywhere() {
        let pan = "4761739001010010";
        let data = CardData {
            pan: SensitivePan::new(pan.to_string()),
            expiry: CardExpiry {
                year: 2029,
                month: 12,
            },
            cardholder_name: Some("TEST/CARD".to_string()),
            aid: vec![0xA0, 0, 0, 0, 3, 0x10, 0x10],
            application_label: Some("VISA".to_string()),
            pan_sequence_number: Some(1),
            track2: Some(SensitiveTrack2::new(format!("{pan}D29122011234599999"))),
        };
        let debug = format!("{data:?} {data:#?} {} {}", data.pan, data.pan.masked());
        assert!(!debug.contains(pan), "{debug}");
        assert!(!debug.contains("1234599999"), "{debug}");
        assert!(debug.contains("476173******0010"), "{debug}");
        assert_eq!(data.pan.expose(), pan);
        assert_eq!(data.pan.last_four(), "0010");
        assert_eq!(data.track2.as_ref().unwrap().service_code(), Some("201"));
        assert_eq!(data.expiry.to_string(), "12/29");
        assert_eq!(data.aid_hex(), "A0000000031010");
    }

    #[test]
    fn short_numbers_are_fully_masked() {
        assert_eq!(mask_digits("123456789"), "*********");
        assert_eq!(mask_digits(""), "");
    }

    #[test]
    fn expiry_parsing() {
        assert_eq!(
            CardExpiry::from_yymm("2912"),
            Some(CardExpiry {
                year: 2029,
                month: 12
            })
        );
        assert_eq!(CardExpiry::from_yymm("2913"), None);
        assert_eq!(CardExpiry::from_yymm("29"), None);
        assert_eq!(CardExpiry::from_yymm("2a12"), None);
    }
}
