//! The typed configuration the agent reads: one struct per file section, enums for closed sets.
//!
//! These types hold values that already passed parsing and validation: amounts are integer
//! fen, paths are resolved against the configuration file's directory, and the local API token
//! is resolved from `token` or `token_file`. Fields are public so the agent can read them
//! directly; after changing a field, call [`crate::AgentConfig::validate`] again.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Currency used when the file does not name one.
pub const DEFAULT_CURRENCY: &str = "CNY";

/// Two-digit EAN-13 prefixes that mark scale-printed (weighted or priced) labels by default:
/// GS1 reserves 20–29 for in-store use.
pub const DEFAULT_WEIGHTED_BARCODE_PREFIXES: [&str; 10] =
    ["20", "21", "22", "23", "24", "25", "26", "27", "28", "29"];

/// Digits after the prefix that name the item (PLU) by default.
pub const DEFAULT_WEIGHTED_ITEM_DIGITS: u8 = 5;

/// Smallest and largest number of item digits a weighted label may use.
pub const WEIGHTED_ITEM_DIGITS_RANGE: std::ops::RangeInclusive<u8> = 4..=6;

/// Digits in an EAN-13 code, check digit included.
pub const EAN13_DIGITS: u8 = 13;

/// Digits of an EAN-13 weighted label prefix.
pub const WEIGHTED_PREFIX_DIGITS: u8 = 2;

/// Where the local API listens by default: loopback only, so only processes on the lane PC
/// (the cashier UI) can reach it.
pub const DEFAULT_LOCAL_API_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7420));

/// Shortest local API bearer token accepted; shorter ones are guessable.
pub const MIN_LOCAL_API_TOKEN_CHARS: usize = 16;

/// Default ceiling on a single offline payment.
pub const DEFAULT_OFFLINE_PER_PAYMENT_FEN: i64 = 50_000;
/// Default ceiling on the total of all stored (not yet forwarded) offline payments.
pub const DEFAULT_OFFLINE_TOTAL_STORED_FEN: i64 = 500_000;
/// Default ceiling on the number of stored offline payments.
pub const DEFAULT_OFFLINE_MAX_COUNT: u32 = 200;
/// Default age after which a stored offline payment blocks further offline payments.
pub const DEFAULT_OFFLINE_MAX_AGE_HOURS: u32 = 72;

/// Baud rate of serial devices when the file does not name one.
pub const DEFAULT_SERIAL_BAUD: u32 = 9_600;
/// Baud rate of NFC readers when the file does not name one (PN532 over UART).
pub const DEFAULT_NFC_BAUD: u32 = 115_200;
/// Baud rates a device section may name; anything else is almost surely a typo.
pub const STANDARD_BAUD_RATES: [u32; 11] = [
    1_200, 2_400, 4_800, 9_600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 921_600,
];

/// Most characters in a terminal, store or merchant id (each is 1 to 32 of `A-Z a-z 0-9 _ -`).
pub const MAX_ID_CHARS: usize = 32;

/// The whole lane agent configuration (`agent.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Who this lane is.
    pub terminal: TerminalConfig,
    /// How sales are priced and how scale labels are read.
    pub sale: SaleConfig,
    /// Where the agent keeps its databases and how hard it syncs them.
    pub storage: StorageConfig,
    /// The HTTP/WebSocket API the cashier UI talks to.
    pub local_api: LocalApiConfig,
    /// The upstream gateway; `None` while the lane is not enrolled yet.
    pub gateway: Option<GatewayConfig>,
    /// Risk limits for payments accepted while the lane is offline.
    pub offline_limits: OfflineLimits,
    /// Peripheral devices.
    pub devices: DevicesConfig,
}

/// `[terminal]`: the lane's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalConfig {
    /// Terminal id; replaced by the id the gateway assigns at enrollment.
    pub id: String,
    /// Store the lane belongs to.
    pub store_id: String,
    /// Merchant the store belongs to.
    pub merchant_id: String,
    /// Display name shown on screens and receipts, e.g. "Lane 1".
    pub name: Option<String>,
}

/// `[sale]`: pricing rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleConfig {
    /// ISO 4217 code, three uppercase letters.
    pub currency: String,
    /// Whether shelf prices include tax.
    pub tax_mode: TaxMode,
    /// How scale-printed EAN-13 labels are read.
    pub weighted_barcode: WeightedBarcodeConfig,
}

/// Whether prices include tax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaxMode {
    /// Prices include tax; tax is computed out of the price (usual in China).
    #[default]
    Included,
    /// Prices exclude tax; tax is added on top.
    Excluded,
}

/// `[sale.weighted_barcode]`: scale-printed EAN-13 labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedBarcodeConfig {
    /// Two-digit prefixes that mark a weighted label.
    pub prefixes: Vec<String>,
    /// Digits after the prefix that name the item (PLU).
    pub item_digits: u8,
    /// What the digits after the item number carry.
    pub value: WeightedValue,
}

impl WeightedBarcodeConfig {
    /// Digits after the item number that carry the weight or price (the rest of the 13 digits
    /// after prefix, item and check digit).
    pub fn value_digits(&self) -> u8 {
        EAN13_DIGITS
            .saturating_sub(WEIGHTED_PREFIX_DIGITS)
            .saturating_sub(self.item_digits)
            .saturating_sub(1)
    }

    /// Whether `code` (the full EAN-13 digits) starts with one of the weighted prefixes.
    pub fn matches_prefix(&self, code: &str) -> bool {
        self.prefixes
            .iter()
            .any(|prefix| code.starts_with(prefix.as_str()))
    }
}

/// What a weighted label's value digits carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightedValue {
    /// Net weight in grams; the price comes from the catalog's price per kilogram.
    #[default]
    WeightGrams,
    /// The line price in fen, computed by the scale.
    PriceFen,
}

/// `[storage]`: where data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// Directory of the journal, sales and catalog databases.
    pub data_dir: PathBuf,
    /// SQLite `synchronous` level for journal commits.
    pub journal_sync: JournalSync,
}

/// SQLite `synchronous` level for journal commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalSync {
    /// `synchronous=FULL`: a committed sale survives power loss. The only safe choice on a
    /// lane that takes money.
    #[default]
    Full,
    /// `synchronous=NORMAL`: faster; in WAL mode a power cut may lose the last commits. For
    /// training lanes and tests.
    Normal,
}

impl JournalSync {
    /// The value for `PRAGMA synchronous`.
    pub fn sqlite_pragma_value(self) -> &'static str {
        match self {
            JournalSync::Full => "FULL",
            JournalSync::Normal => "NORMAL",
        }
    }
}

/// `[local_api]`: the API the cashier UI talks to.
///
/// `Debug` never shows the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalApiConfig {
    /// Loopback address to listen on.
    pub listen: SocketAddr,
    /// The file the token was read from, when the file named one; kept so that
    /// [`crate::AgentConfig::to_toml_string`] writes the reference, not the secret.
    pub token_file: Option<PathBuf>,
    token: ApiToken,
}

impl LocalApiConfig {
    /// A section with an inline token. Call [`crate::AgentConfig::validate`] afterwards: this
    /// does not check the address or the token.
    pub fn new(listen: SocketAddr, token: String) -> Self {
        LocalApiConfig {
            listen,
            token_file: None,
            token: ApiToken(token),
        }
    }

    pub(crate) fn with_token_file(listen: SocketAddr, token: String, token_file: PathBuf) -> Self {
        LocalApiConfig {
            listen,
            token_file: Some(token_file),
            token: ApiToken(token),
        }
    }

    /// The bearer token clients must present. Compare it in constant time.
    pub fn token(&self) -> &str {
        &self.token.0
    }
}

/// A secret whose `Debug` output is redacted, so logging a configuration never leaks it.
#[derive(Clone, PartialEq, Eq)]
struct ApiToken(String);

impl fmt::Debug for ApiToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

/// `[gateway]`: the upstream gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Base URL, `https://` (or `http://` to a loopback host, for development).
    pub url: String,
    /// PEM file with the CA or certificate to pin; `None` uses the system roots.
    pub ca_file: Option<PathBuf>,
}

/// `[offline_limits]`: what the lane may accept while it cannot reach the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineLimits {
    /// Largest single offline payment, in fen.
    pub per_payment_fen: i64,
    /// Largest total of stored, not yet forwarded offline payments, in fen.
    pub total_stored_fen: i64,
    /// Most stored offline payments; 0 accepts none.
    pub max_count: u32,
    /// Oldest a stored offline payment may be before the lane stops accepting more; 0 accepts
    /// none.
    pub max_age_hours: u32,
}

impl Default for OfflineLimits {
    fn default() -> Self {
        OfflineLimits {
            per_payment_fen: DEFAULT_OFFLINE_PER_PAYMENT_FEN,
            total_stored_fen: DEFAULT_OFFLINE_TOTAL_STORED_FEN,
            max_count: DEFAULT_OFFLINE_MAX_COUNT,
            max_age_hours: DEFAULT_OFFLINE_MAX_AGE_HOURS,
        }
    }
}

/// `[devices]`: peripherals; each is off (`driver = "none"`) unless configured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DevicesConfig {
    /// Barcode scanner.
    pub scanner: ScannerConfig,
    /// Customer pole display.
    pub display: DisplayConfig,
    /// Receipt printer.
    pub printer: PrinterConfig,
    /// Contactless card reader.
    pub nfc: NfcConfig,
}

/// `[devices.scanner]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannerConfig {
    /// Which driver runs the scanner.
    pub driver: ScannerDriver,
    /// Serial port, e.g. `/dev/ttyACM0` or `COM3`; required for `serial`.
    pub port: Option<String>,
    /// Serial speed.
    pub baud: u32,
    /// What ends each scanned code.
    pub terminator: ScannerTerminator,
    /// A prefix the scanner sends before each code (stripped); empty for none.
    pub prefix: String,
    /// Whether each code starts with an AIM symbology identifier such as `]E0`.
    pub aim_ids: bool,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            driver: ScannerDriver::None,
            port: None,
            baud: DEFAULT_SERIAL_BAUD,
            terminator: ScannerTerminator::Cr,
            prefix: String::new(),
            aim_ids: false,
        }
    }
}

/// Scanner drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScannerDriver {
    /// No scanner.
    #[default]
    None,
    /// A scanner on a serial port (or USB CDC-ACM).
    Serial,
    /// The built-in emulator.
    Emulator,
}

/// What ends each code a scanner sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScannerTerminator {
    /// Carriage return, `\r`.
    #[default]
    Cr,
    /// Line feed, `\n`.
    Lf,
    /// `\r\n`.
    Crlf,
    /// Tab, `\t`.
    Tab,
}

impl ScannerTerminator {
    /// The bytes that end a code.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            ScannerTerminator::Cr => b"\r",
            ScannerTerminator::Lf => b"\n",
            ScannerTerminator::Crlf => b"\r\n",
            ScannerTerminator::Tab => b"\t",
        }
    }
}

/// `[devices.display]`: customer pole display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayConfig {
    /// Which driver runs the display.
    pub driver: DisplayDriver,
    /// Serial port; required for `serial`.
    pub port: Option<String>,
    /// Serial speed.
    pub baud: u32,
    /// Character encoding the device expects.
    pub encoding: TextEncoding,
}

impl Default for DisplayConfig {
    fn default() -> Self {
        DisplayConfig {
            driver: DisplayDriver::None,
            port: None,
            baud: DEFAULT_SERIAL_BAUD,
            encoding: TextEncoding::Gb18030,
        }
    }
}

/// Customer display drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisplayDriver {
    /// No display.
    #[default]
    None,
    /// A pole display on a serial port.
    Serial,
    /// The built-in emulator.
    Emulator,
}

/// `[devices.printer]`: receipt printer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterConfig {
    /// Which driver runs the printer.
    pub driver: PrinterDriver,
    /// Serial port; required for `serial`.
    pub port: Option<String>,
    /// Serial speed.
    pub baud: u32,
    /// Character encoding the device expects.
    pub encoding: TextEncoding,
}

impl Default for PrinterConfig {
    fn default() -> Self {
        PrinterConfig {
            driver: PrinterDriver::None,
            port: None,
            baud: DEFAULT_SERIAL_BAUD,
            encoding: TextEncoding::Gb18030,
        }
    }
}

/// Receipt printer drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrinterDriver {
    /// No printer.
    #[default]
    None,
    /// An ESC/POS printer on a serial port.
    Serial,
    /// The built-in emulator.
    Emulator,
}

/// Character encoding of text sent to a display or printer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoding {
    /// GB18030 (a superset of GBK/GB2312): Chinese text.
    #[default]
    Gb18030,
    /// 7-bit ASCII; other characters are replaced.
    Ascii,
}

/// `[devices.nfc]`: contactless card reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfcConfig {
    /// Which driver runs the reader.
    pub driver: NfcDriver,
    /// libnfc connection string, e.g. `pn532_uart:/dev/ttyUSB0:115200`; required for `libnfc`.
    pub port: Option<String>,
    /// Serial speed.
    pub baud: u32,
}

impl Default for NfcConfig {
    fn default() -> Self {
        NfcConfig {
            driver: NfcDriver::None,
            port: None,
            baud: DEFAULT_NFC_BAUD,
        }
    }
}

/// NFC reader drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NfcDriver {
    /// No reader.
    #[default]
    None,
    /// A reader supported by libnfc.
    Libnfc,
    /// The built-in emulator.
    Emulator,
}
