//! File structs to the typed configuration: defaults that depend on where the file is,
//! relative paths, and the local API token source; and back again for writing.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::file::{
    AgentFile, DevicesFile, DisplayFile, GatewayFile, LocalApiFile, NfcFile, OfflineLimitsFile,
    PrinterFile, SaleFile, ScannerFile, StorageFile, TerminalFile, WeightedBarcodeFile,
};
use crate::model::{
    AgentConfig, DevicesConfig, DisplayConfig, GatewayConfig, LocalApiConfig, NfcConfig,
    OfflineLimits, PrinterConfig, SaleConfig, ScannerConfig, StorageConfig, TerminalConfig,
    WeightedBarcodeConfig,
};

/// Largest token file read; a token file holds one line, so anything bigger is the wrong file.
const MAX_TOKEN_FILE_BYTES: u64 = 4_096;

/// The directory relative paths in the file at `config_path` are resolved against.
pub(crate) fn config_directory(config_path: &Path) -> PathBuf {
    match config_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn resolve_against(config_dir: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        config_dir.join(path)
    }
}

/// Builds the typed configuration from the parsed file; reads `token_file` if there is one.
/// Does not validate value ranges; the caller runs [`AgentConfig::validate`] next.
pub(crate) fn agent_config_from_file(
    file: AgentFile,
    config_path: &Path,
) -> Result<AgentConfig, ConfigError> {
    let config_dir = config_directory(config_path);
    let AgentFile {
        terminal,
        sale,
        storage,
        local_api,
        gateway,
        offline_limits,
        devices,
    } = file;
    Ok(AgentConfig {
        terminal: TerminalConfig {
            id: terminal.id,
            store_id: terminal.store_id,
            merchant_id: terminal.merchant_id,
            name: terminal.name,
        },
        sale: SaleConfig {
            currency: sale.currency,
            tax_mode: sale.tax_mode,
            weighted_barcode: WeightedBarcodeConfig {
                prefixes: sale.weighted_barcode.prefixes,
                item_digits: sale.weighted_barcode.item_digits,
                value: sale.weighted_barcode.value,
            },
        },
        storage: StorageConfig {
            data_dir: match storage.data_dir {
                Some(data_dir) => resolve_against(&config_dir, data_dir),
                None => config_dir.clone(),
            },
            journal_sync: storage.journal_sync,
        },
        local_api: local_api_from_file(local_api, config_path, &config_dir)?,
        gateway: gateway.map(|gateway| GatewayConfig {
            url: gateway.url,
            ca_file: gateway
                .ca_file
                .map(|ca_file| resolve_against(&config_dir, ca_file)),
        }),
        offline_limits: OfflineLimits {
            per_payment_fen: offline_limits.per_payment.fen,
            total_stored_fen: offline_limits.total_stored.fen,
            max_count: offline_limits.max_count,
            max_age_hours: offline_limits.max_age_hours,
        },
        devices: DevicesConfig {
            scanner: ScannerConfig {
                driver: devices.scanner.driver,
                port: devices.scanner.port,
                baud: devices.scanner.baud,
                terminator: devices.scanner.terminator,
                prefix: devices.scanner.prefix,
                aim_ids: devices.scanner.aim_ids,
            },
            display: DisplayConfig {
                driver: devices.display.driver,
                port: devices.display.port,
                baud: devices.display.baud,
                encoding: devices.display.encoding,
            },
            printer: PrinterConfig {
                driver: devices.printer.driver,
                port: devices.printer.port,
                baud: devices.printer.baud,
                encoding: devices.printer.encoding,
            },
            nfc: NfcConfig {
                driver: devices.nfc.driver,
                port: devices.nfc.port,
                baud: devices.nfc.baud,
            },
        },
    })
}

fn local_api_from_file(
    local_api: LocalApiFile,
    config_path: &Path,
    config_dir: &Path,
) -> Result<LocalApiConfig, ConfigError> {
    match (local_api.token, local_api.token_file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            config_path,
            "local_api.token",
            "both `token` and `token_file` are set; keep exactly one of them",
        )),
        (None, None) => Err(ConfigError::invalid(
            config_path,
            "local_api.token",
            "no local API token; set `token` to a secret of at least 16 characters, or `token_file` to a file that holds one",
        )),
        (Some(token), None) => Ok(LocalApiConfig::new(local_api.listen, token)),
        (None, Some(token_file)) => {
            let token_path = resolve_against(config_dir, token_file);
            let token = read_token_file(config_path, &token_path)?;
            Ok(LocalApiConfig::with_token_file(
                local_api.listen,
                token,
                token_path,
            ))
        }
    }
}

/// The token file's contents without surrounding whitespace (editors add a final newline).
fn read_token_file(config_path: &Path, token_path: &Path) -> Result<String, ConfigError> {
    let read_error = |source: io::Error| ConfigError::ReadTokenFile {
        path: config_path.to_path_buf(),
        token_path: token_path.to_path_buf(),
        source,
    };
    let file = File::open(token_path).map_err(read_error)?;
    let mut contents = String::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut contents)
        .map_err(read_error)?;
    if contents.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(ConfigError::invalid(
            config_path,
            "local_api.token_file",
            format!(
                "{} is larger than {MAX_TOKEN_FILE_BYTES} bytes; it must hold only the token",
                token_path.display()
            ),
        ));
    }
    Ok(contents.trim().to_owned())
}

/// The file structs for writing `config` out; every key is written explicitly so the file
/// shows what the lane runs with.
pub(crate) fn agent_file_from_config(config: &AgentConfig) -> AgentFile {
    let local_api = &config.local_api;
    let (token, token_file) = match &local_api.token_file {
        Some(token_file) => (None, Some(token_file.clone())),
        None => (Some(local_api.token().to_owned()), None),
    };
    let devices = &config.devices;
    AgentFile {
        terminal: TerminalFile {
            id: config.terminal.id.clone(),
            store_id: config.terminal.store_id.clone(),
            merchant_id: config.terminal.merchant_id.clone(),
            name: config.terminal.name.clone(),
        },
        sale: SaleFile {
            currency: config.sale.currency.clone(),
            tax_mode: config.sale.tax_mode,
            weighted_barcode: WeightedBarcodeFile {
                prefixes: config.sale.weighted_barcode.prefixes.clone(),
                item_digits: config.sale.weighted_barcode.item_digits,
                value: config.sale.weighted_barcode.value,
            },
        },
        storage: StorageFile {
            data_dir: Some(config.storage.data_dir.clone()),
            journal_sync: config.storage.journal_sync,
        },
        local_api: LocalApiFile {
            listen: local_api.listen,
            token,
            token_file,
        },
        gateway: config.gateway.as_ref().map(|gateway| GatewayFile {
            url: gateway.url.clone(),
            ca_file: gateway.ca_file.clone(),
        }),
        offline_limits: OfflineLimitsFile::from(config.offline_limits),
        devices: DevicesFile {
            scanner: ScannerFile {
                driver: devices.scanner.driver,
                port: devices.scanner.port.clone(),
                baud: devices.scanner.baud,
                terminator: devices.scanner.terminator,
                prefix: devices.scanner.prefix.clone(),
                aim_ids: devices.scanner.aim_ids,
            },
            display: DisplayFile {
                driver: devices.display.driver,
                port: devices.display.port.clone(),
                baud: devices.display.baud,
                encoding: devices.display.encoding,
            },
            printer: PrinterFile {
                driver: devices.printer.driver,
                port: devices.printer.port.clone(),
                baud: devices.printer.baud,
                encoding: devices.printer.encoding,
            },
            nfc: NfcFile {
                driver: devices.nfc.driver,
                port: devices.nfc.port.clone(),
                baud: devices.nfc.baud,
            },
        },
    }
}
