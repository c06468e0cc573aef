//! Typed configuration for the Lanepay lane agent: load `agent.toml`, validate it, fill in
//! defaults, and write a fresh one.
//!
//! The file format is documented key by key in `agent.reference.toml` beside this crate's
//! `Cargo.toml` (a test loads it, so it stays true). The agent calls [`AgentConfig::load`] once
//! at start-up and refuses to start on any error: a broken configuration must be fixed, never
//! half-applied.
//!
//! What loading guarantees:
//! - **Unknown keys are errors**, at every level, so a misspelt key never silently falls back
//!   to its default.
//! - **Every error names the file, the dotted key and, where the TOML parser knows it, the
//!   line**, and says what to write instead, e.g.
//!   ``/etc/lanepay/agent.toml: key `sale.tax_mode` (line 12): unknown variant `inclusive`, expected `included` or `excluded` ``.
//! - **Money is integer fen.** Amounts are written as yuan strings (`"500.00"`) and converted
//!   exactly; more than two decimals, zero, negatives and junk are refused.
//! - **Relative paths** (`storage.data_dir`, `local_api.token_file`, `gateway.ca_file`) are
//!   resolved against the directory of the configuration file, not the working directory;
//!   `storage.data_dir` defaults to that directory.
//! - **The local API token** is read from `token` or `token_file` (exactly one), and never
//!   appears in `Debug` output.
//!
//! This crate does no other IO than reading the configuration and token files, and never
//! panics on any input.

mod error;
mod file;
mod model;
mod money;
mod parse;
mod resolve;
mod validate;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use model::{
    AgentConfig, DEFAULT_CURRENCY, DEFAULT_LOCAL_API_LISTEN, DEFAULT_NFC_BAUD,
    DEFAULT_OFFLINE_MAX_AGE_HOURS, DEFAULT_OFFLINE_MAX_COUNT, DEFAULT_OFFLINE_PER_PAYMENT_FEN,
    DEFAULT_OFFLINE_TOTAL_STORED_FEN, DEFAULT_SERIAL_BAUD, DEFAULT_WEIGHTED_BARCODE_PREFIXES,
    DEFAULT_WEIGHTED_ITEM_DIGITS, DevicesConfig, DisplayConfig, DisplayDriver, EAN13_DIGITS,
    GatewayConfig, JournalSync, LocalApiConfig, MAX_ID_CHARS, MIN_LOCAL_API_TOKEN_CHARS, NfcConfig,
    NfcDriver, OfflineLimits, PrinterConfig, PrinterDriver, STANDARD_BAUD_RATES, SaleConfig,
    ScannerConfig, ScannerDriver, ScannerTerminator, StorageConfig, TaxMode, TerminalConfig,
    TextEncoding, WEIGHTED_ITEM_DIGITS_RANGE, WEIGHTED_PREFIX_DIGITS, WeightedBarcodeConfig,
    WeightedValue,
};

/// Largest configuration file read. A lane configuration is a few kilobytes; anything near
/// this size is the wrong file, and reading it whole could exhaust a small box's memory.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// The name errors use for a configuration built in memory by [`AgentConfig::new_default`].
const NEW_CONFIG_NAME: &str = "<new configuration>";

impl AgentConfig {
    /// Reads, parses and validates the configuration file at `path`.
    ///
    /// Relative paths inside the file resolve against the file's directory; `token_file`, if
    /// set, is read too.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = read_config_file(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AgentConfig::from_toml_str(&text, path)
    }

    /// Parses and validates configuration `text` as if it had been read from
    /// `path_for_messages`: that path names the file in errors and its directory anchors
    /// relative paths. Reads `local_api.token_file` if the text names one.
    pub fn from_toml_str(text: &str, path_for_messages: &Path) -> Result<AgentConfig, ConfigError> {
        let agent_file = parse::parse_agent_file(text, path_for_messages)?;
        let config = resolve::agent_config_from_file(agent_file, path_for_messages)?;
        config.validate(path_for_messages)?;
        Ok(config)
    }

    /// A configuration with every default and the given identity, data directory and inline
    /// local API token: what `lanepay` writes for a lane that is not enrolled yet.
    ///
    /// Fails with [`ConfigError::Invalid`] if an id or the token breaks the rules that
    /// [`AgentConfig::load`] would apply.
    pub fn new_default(
        terminal_id: &str,
        store_id: &str,
        merchant_id: &str,
        data_dir: impl Into<PathBuf>,
        token: impl Into<String>,
    ) -> Result<AgentConfig, ConfigError> {
        let config = AgentConfig {
            terminal: TerminalConfig {
                id: terminal_id.to_owned(),
                store_id: store_id.to_owned(),
                merchant_id: merchant_id.to_owned(),
                name: None,
            },
            sale: SaleConfig {
                currency: DEFAULT_CURRENCY.to_owned(),
                tax_mode: TaxMode::default(),
                weighted_barcode: WeightedBarcodeConfig {
                    prefixes: DEFAULT_WEIGHTED_BARCODE_PREFIXES
                        .iter()
                        .map(|prefix| (*prefix).to_owned())
                        .collect(),
                    item_digits: DEFAULT_WEIGHTED_ITEM_DIGITS,
                    value: WeightedValue::default(),
                },
            },
            storage: StorageConfig {
                data_dir: data_dir.into(),
                journal_sync: JournalSync::default(),
            },
            local_api: LocalApiConfig::new(DEFAULT_LOCAL_API_LISTEN, token.into()),
            gateway: None,
            offline_limits: OfflineLimits::default(),
            devices: DevicesConfig::default(),
        };
        config.validate(Path::new(NEW_CONFIG_NAME))?;
        Ok(config)
    }

    /// Checks every rule [`AgentConfig::load`] checks after parsing; call it after changing
    /// fields. `path_for_messages` names the file in errors.
    pub fn validate(&self, path_for_messages: &Path) -> Result<(), ConfigError> {
        validate::validate(self, path_for_messages)
    }

    /// The configuration as TOML, every key written out, that [`AgentConfig::load`] reads back
    /// to an equal value.
    ///
    /// Paths are written as they are held; relative ones would be resolved against the
    /// directory the file is written to, so write absolute paths (or write the file into the
    /// directory they are relative to). When the token came from `token_file`, the file
    /// reference is written, not the token.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        let agent_file = resolve::agent_file_from_config(self);
        let body = toml::to_string(&agent_file).map_err(|error| ConfigError::Serialize {
            message: error.to_string(),
        })?;
        Ok(format!(
            "# Lanepay lane agent configuration.\n# Every key, its default and its meaning: agent.reference.toml.\n\n{body}"
        ))
    }
}

/// Reads at most [`MAX_CONFIG_FILE_BYTES`] of UTF-8 text.
fn read_config_file(path: &Path) -> io::Result<String> {
    let file = File::open(path)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the file is larger than {MAX_CONFIG_FILE_BYTES} bytes, which no lane configuration is; check that this is the right file"
            ),
        ));
    }
    Ok(text)
}
