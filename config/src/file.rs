//! The file format exactly as written on disk: serde structs that refuse unknown keys.
//!
//! These mirror `agent.toml` one to one and stay private; [`crate::AgentConfig`] is built from
//! them after path resolution and validation. Keeping the two apart lets the file say
//! `per_payment = "500.00"` and `token_file = "..."` while the agent sees `per_payment_fen` and
//! a resolved token.
//!
//! No struct here derives `Debug`: `LocalApiFile` holds the token in clear.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::model::{
    DEFAULT_CURRENCY, DEFAULT_LOCAL_API_LISTEN, DEFAULT_NFC_BAUD, DEFAULT_SERIAL_BAUD,
    DEFAULT_WEIGHTED_BARCODE_PREFIXES, DEFAULT_WEIGHTED_ITEM_DIGITS, DisplayDriver, JournalSync,
    NfcDriver, OfflineLimits, PrinterDriver, ScannerDriver, ScannerTerminator, TaxMode,
    TextEncoding, WeightedValue,
};
use crate::money::YuanAmount;

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentFile {
    pub(crate) terminal: TerminalFile,
    #[serde(default)]
    pub(crate) sale: SaleFile,
    #[serde(default)]
    pub(crate) storage: StorageFile,
    #[serde(default)]
    pub(crate) local_api: LocalApiFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gateway: Option<GatewayFile>,
    #[serde(default)]
    pub(crate) offline_limits: OfflineLimitsFile,
    #[serde(default)]
    pub(crate) devices: DevicesFile,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TerminalFile {
    pub(crate) id: String,
    pub(crate) store_id: String,
    pub(crate) merchant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SaleFile {
    pub(crate) currency: String,
    pub(crate) tax_mode: TaxMode,
    pub(crate) weighted_barcode: WeightedBarcodeFile,
}

impl Default for SaleFile {
    fn default() -> Self {
        SaleFile {
            currency: DEFAULT_CURRENCY.to_owned(),
            tax_mode: TaxMode::default(),
            weighted_barcode: WeightedBarcodeFile::default(),
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WeightedBarcodeFile {
    pub(crate) prefixes: Vec<String>,
    pub(crate) item_digits: u8,
    pub(crate) value: WeightedValue,
}

impl Default for WeightedBarcodeFile {
    fn default() -> Self {
        WeightedBarcodeFile {
            prefixes: DEFAULT_WEIGHTED_BARCODE_PREFIXES
                .iter()
                .map(|prefix| (*prefix).to_owned())
                .collect(),
            item_digits: DEFAULT_WEIGHTED_ITEM_DIGITS,
            value: WeightedValue::default(),
        }
    }
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StorageFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) journal_sync: JournalSync,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LocalApiFile {
    #[serde(deserialize_with = "deserialize_socket_address")]
    pub(crate) listen: SocketAddr,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "deserialize_secret"
    )]
    pub(crate) token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) token_file: Option<PathBuf>,
}

impl Default for LocalApiFile {
    fn default() -> Self {
        LocalApiFile {
            listen: DEFAULT_LOCAL_API_LISTEN,
            token: None,
            token_file: None,
        }
    }
}

/// Reads a socket address with a message that shows the expected form (the standard one says
/// only "invalid socket address syntax").
fn deserialize_socket_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    struct SocketAddressVisitor;

    impl Visitor<'_> for SocketAddressVisitor {
        type Value = SocketAddr;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a loopback address and port as a string, like \"127.0.0.1:7420\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<SocketAddr, E> {
            text.parse().map_err(|_| {
                E::custom(format!(
                    "`{text}` is not an address and port; write it like \"127.0.0.1:7420\" or \"[::1]:7420\""
                ))
            })
        }
    }

    deserializer.deserialize_str(SocketAddressVisitor)
}

/// Reads the token without ever echoing it: serde's own "invalid type" message would quote a
/// token written without quotes (`token = 1234567890123456`) into logs.
fn deserialize_secret<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    match toml::Value::deserialize(deserializer)? {
        toml::Value::String(secret) => Ok(Some(secret)),
        _ => Err(de::Error::custom(
            "the token must be a quoted string, like token = \"...\" (the value is not shown here because it is a secret)",
        )),
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayFile {
    pub(crate) url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct OfflineLimitsFile {
    pub(crate) per_payment: YuanAmount,
    pub(crate) total_stored: YuanAmount,
    pub(crate) max_count: u32,
    pub(crate) max_age_hours: u32,
}

impl Default for OfflineLimitsFile {
    fn default() -> Self {
        OfflineLimitsFile::from(OfflineLimits::default())
    }
}

impl From<OfflineLimits> for OfflineLimitsFile {
    fn from(limits: OfflineLimits) -> Self {
        OfflineLimitsFile {
            per_payment: YuanAmount {
                fen: limits.per_payment_fen,
            },
            total_stored: YuanAmount {
                fen: limits.total_stored_fen,
            },
            max_count: limits.max_count,
            max_age_hours: limits.max_age_hours,
        }
    }
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DevicesFile {
    pub(crate) scanner: ScannerFile,
    pub(crate) display: DisplayFile,
    pub(crate) printer: PrinterFile,
    pub(crate) nfc: NfcFile,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ScannerFile {
    pub(crate) driver: ScannerDriver,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<String>,
    pub(crate) baud: u32,
    pub(crate) terminator: ScannerTerminator,
    pub(crate) prefix: String,
    pub(crate) aim_ids: bool,
}

impl Default for ScannerFile {
    fn default() -> Self {
        ScannerFile {
            driver: ScannerDriver::default(),
            port: None,
            baud: DEFAULT_SERIAL_BAUD,
            terminator: ScannerTerminator::default(),
            prefix: String::new(),
            aim_ids: false,
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DisplayFile {
    pub(crate) driver: DisplayDriver,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<String>,
    pub(crate) baud: u32,
    pub(crate) encoding: TextEncoding,
}

impl Default for DisplayFile {
    fn default() -> Self {
        DisplayFile {
            driver: DisplayDriver::default(),
            port: None,
            baud: DEFAULT_SERIAL_BAUD,
            encoding: TextEncoding::default(),
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PrinterFile {
    pub(crate) driver: PrinterDriver,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<String>,
    pub(crate) baud: u32,
    pub(crate) encoding: TextEncoding,
}

impl Default for PrinterFile {
    fn default() -> Self {
        PrinterFile {
            driver: PrinterDriver::default(),
            port: None,
            baud: DEFAULT_SERIAL_BAUD,
            encoding: TextEncoding::default(),
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NfcFile {
    pub(crate) driver: NfcDriver,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<String>,
    pub(crate) baud: u32,
}

impl Default for NfcFile {
    fn default() -> Self {
        NfcFile {
            driver: NfcDriver::default(),
            port: None,
            baud: DEFAULT_NFC_BAUD,
        }
    }
}
