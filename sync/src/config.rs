//! The terminal configuration HQ sets per store: limits and timings a lane must follow, signed
//! by the gateway so that a lane applies only what the gateway it enrolled with really issued.
//!
//! The signature is ed25519 by the gateway's first key over `LANEPAY-CONFIG-V1\n` followed by
//! the canonical JSON ([`crate::canonical`]) of the [`TerminalConfig`]. Versions are strictly
//! increasing per store; a lane refuses a version at or below the one it holds (that check is
//! the lane's, it needs the stored version), see `docs/sync.md`.

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::auth::parse_signature;
use crate::canonical;

const CONFIG_DOMAIN: &[u8] = b"LANEPAY-CONFIG-V1\n";

/// `GET /v1/terminal/config` (terminal-signed): the store's current [`SignedConfig`].
pub const CONFIG_PATH: &str = "/v1/terminal/config";

/// Everything a lane takes from HQ. Amounts are fen, durations milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    /// Strictly increasing per store; a lane refuses one at or below its current version.
    pub version: u64,
    pub issued_at_ms: i64,
    pub store_id: String,
    #[serde(default)]
    pub offline_card: OfflineCardLimits,
    #[serde(default)]
    pub wallet_code: WalletCodeTimings,
    #[serde(default = "default_dynamic_qr_timeout_ms")]
    pub dynamic_qr_timeout_ms: i64,
    #[serde(default = "default_offline_qr_validity_ms")]
    pub offline_qr_validity_ms: i64,
    /// Hex of the gateway's 32-byte X25519 public key that card data is sealed to.
    pub card_seal_public_key: String,
}

pub const DEFAULT_DYNAMIC_QR_TIMEOUT_MS: i64 = 120_000;
pub const DEFAULT_OFFLINE_QR_VALIDITY_MS: i64 = 600_000;

fn default_dynamic_qr_timeout_ms() -> i64 {
    DEFAULT_DYNAMIC_QR_TIMEOUT_MS
}

fn default_offline_qr_validity_ms() -> i64 {
    DEFAULT_OFFLINE_QR_VALIDITY_MS
}

/// How much card business a lane may take while it cannot reach the gateway
/// (store-and-forward): per payment, in total, in count, and for how long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineCardLimits {
    pub per_payment_fen: i64,
    pub total_fen: i64,
    pub count: u32,
    pub max_age_ms: i64,
}

impl Default for OfflineCardLimits {
    fn default() -> Self {
        OfflineCardLimits {
            per_payment_fen: 50_000,
            total_fen: 500_000,
            count: 200,
            max_age_ms: 72 * 3_600_000,
        }
    }
}

/// Timings of a wallet payment code (customer shows a code, the lane scans it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalletCodeTimings {
    pub poll_interval_ms: i64,
    pub poll_for_ms: i64,
    pub reverse_not_before_ms: i64,
    pub reverse_retry_ms: i64,
}

impl Default for WalletCodeTimings {
    fn default() -> Self {
        WalletCodeTimings {
            poll_interval_ms: 5_000,
            poll_for_ms: 60_000,
            reverse_not_before_ms: 15_000,
            reverse_retry_ms: 5_000,
        }
    }
}

impl TerminalConfig {
    /// A configuration with every limit at its default.
    pub fn with_defaults(
        version: u64,
        issued_at_ms: i64,
        store_id: &str,
        card_seal_public_key: &str,
    ) -> TerminalConfig {
        TerminalConfig {
            version,
            issued_at_ms,
            store_id: store_id.to_string(),
            offline_card: OfflineCardLimits::default(),
            wallet_code: WalletCodeTimings::default(),
            dynamic_qr_timeout_ms: DEFAULT_DYNAMIC_QR_TIMEOUT_MS,
            offline_qr_validity_ms: DEFAULT_OFFLINE_QR_VALIDITY_MS,
            card_seal_public_key: card_seal_public_key.to_string(),
        }
    }

    /// Refuses values no lane could follow (negative amounts or durations, a zero poll
    /// interval, a card-seal key that is not 32 bytes of hex). HQ runs this before signing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str| Err(ConfigError::Invalid(field));
        if self.store_id.is_empty() {
            return bad("store_id");
        }
        let card = &self.offline_card;
        if card.per_payment_fen < 0 {
            return bad("offline_card.per_payment_fen");
        }
        if card.total_fen < 0 {
            return bad("offline_card.total_fen");
        }
        if card.max_age_ms < 0 {
            return bad("offline_card.max_age_ms");
        }
        let wallet = &self.wallet_code;
        if wallet.poll_interval_ms <= 0 {
            return bad("wallet_code.poll_interval_ms");
        }
        if wallet.poll_for_ms < 0 {
            return bad("wallet_code.poll_for_ms");
        }
        if wallet.reverse_not_before_ms < 0 {
            return bad("wallet_code.reverse_not_before_ms");
        }
        if wallet.reverse_retry_ms <= 0 {
            return bad("wallet_code.reverse_retry_ms");
        }
        if self.dynamic_qr_timeout_ms <= 0 {
            return bad("dynamic_qr_timeout_ms");
        }
        if self.offline_qr_validity_ms <= 0 {
            return bad("offline_qr_validity_ms");
        }
        if self.card_seal_public().is_none() {
            return bad("card_seal_public_key");
        }
        Ok(())
    }

    /// The gateway's X25519 card-seal public key, if the hex is 32 bytes.
    pub fn card_seal_public(&self) -> Option<[u8; 32]> {
        hex::decode(&self.card_seal_public_key)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
    }
}

/// A configuration with the gateway's signature (hex ed25519).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedConfig {
    pub config: TerminalConfig,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration signature does not verify with the gateway's key")]
    BadSignature,
    #[error("configuration signature is not 64 bytes of hex")]
    MalformedSignature,
    #[error("configuration cannot be encoded canonically: {0}")]
    Encoding(String),
    #[error("configuration field {0} is out of range")]
    Invalid(&'static str),
    #[error("configuration version {offered} is not newer than the current version {current}")]
    NotNewer { offered: u64, current: u64 },
    #[error("configuration is for store {offered}, this terminal belongs to store {own}")]
    WrongStore { offered: String, own: String },
}

/// The bytes the gateway signs for a configuration.
pub fn config_signing_bytes(config: &TerminalConfig) -> Result<Vec<u8>, ConfigError> {
    let body = canonical::to_vec(config).map_err(|e| ConfigError::Encoding(e.to_string()))?;
    let mut bytes = Vec::with_capacity(CONFIG_DOMAIN.len() + body.len());
    bytes.extend_from_slice(CONFIG_DOMAIN);
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// Signs a configuration with the gateway's key.
pub fn sign_config(config: &TerminalConfig, key: &SigningKey) -> SignedConfig {
    // A TerminalConfig holds only integers and strings, so its canonical encoding cannot fail.
    let bytes = config_signing_bytes(config).unwrap_or_default();
    SignedConfig {
        config: config.clone(),
        signature: hex::encode(key.sign(&bytes).to_bytes()),
    }
}

/// Checks the gateway's signature and returns the configuration it covers.
pub fn verify_config(
    signed: &SignedConfig,
    gateway_key: &VerifyingKey,
) -> Result<TerminalConfig, ConfigError> {
    let signature = parse_signature(&signed.signature).ok_or(ConfigError::MalformedSignature)?;
    let bytes = config_signing_bytes(&signed.config)?;
    gateway_key
        .verify(&bytes, &signature)
        .map_err(|_| ConfigError::BadSignature)?;
    Ok(signed.config.clone())
}

/// The lane's rule for applying an offered configuration: a valid signature, its own store,
/// and a version above the one it holds (`current`, None before the first).
pub fn accept_config(
    signed: &SignedConfig,
    gateway_key: &VerifyingKey,
    own_store_id: &str,
    current_version: Option<u64>,
) -> Result<TerminalConfig, ConfigError> {
    let config = verify_config(signed, gateway_key)?;
    if config.store_id != own_store_id {
        return Err(ConfigError::WrongStore {
            offered: config.store_id,
            own: own_store_id.to_string(),
        });
    }
    if let Some(current) = current_version
        && config.version <= current
    {
        return Err(ConfigError::NotNewer {
            offered: config.version,
            current,
        });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway_key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn sample(version: u64) -> TerminalConfig {
        TerminalConfig::with_defaults(version, 1_700_000_000_000, "S1", &hex::encode([9u8; 32]))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = sample(1);
        assert_eq!(config.offline_card.per_payment_fen, 50_000);
        assert_eq!(config.offline_card.total_fen, 500_000);
        assert_eq!(config.offline_card.count, 200);
        assert_eq!(config.offline_card.max_age_ms, 259_200_000);
        assert_eq!(config.wallet_code.poll_interval_ms, 5_000);
        assert_eq!(config.wallet_code.poll_for_ms, 60_000);
        assert_eq!(config.wallet_code.reverse_not_before_ms, 15_000);
        assert_eq!(config.wallet_code.reverse_retry_ms, 5_000);
        assert_eq!(config.dynamic_qr_timeout_ms, 120_000);
        assert_eq!(config.offline_qr_validity_ms, 600_000);
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.card_seal_public(), Some([9u8; 32]));
    }

    #[test]
    fn a_signed_config_verifies_and_survives_json() {
        let key = gateway_key();
        let signed = sign_config(&sample(3), &key);
        let json = serde_json::to_string(&signed).unwrap();
        let back: SignedConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(verify_config(&back, &key.verifying_key()), Ok(sample(3)));
    }

    #[test]
    fn tampering_or_another_key_is_refused() {
        let key = gateway_key();
        let mut signed = sign_config(&sample(3), &key);
        let other = SigningKey::from_bytes(&[8; 32]);
        assert_eq!(
            verify_config(&signed, &other.verifying_key()),
            Err(ConfigError::BadSignature)
        );
        signed.config.offline_card.total_fen = 99_999_999;
        assert_eq!(
            verify_config(&signed, &key.verifying_key()),
            Err(ConfigError::BadSignature)
        );
        signed.signature = "zz".into();
        assert_eq!(
            verify_config(&signed, &key.verifying_key()),
            Err(ConfigError::MalformedSignature)
        );
    }

    #[test]
    fn a_lane_takes_only_newer_versions_of_its_own_store() {
        let key = gateway_key();
        let public = key.verifying_key();
        let signed = sign_config(&sample(3), &key);
        assert!(accept_config(&signed, &public, "S1", None).is_ok());
        assert!(accept_config(&signed, &public, "S1", Some(2)).is_ok());
        assert_eq!(
            accept_config(&signed, &public, "S1", Some(3)),
            Err(ConfigError::NotNewer {
                offered: 3,
                current: 3
            })
        );
        assert!(matches!(
            accept_config(&signed, &public, "S2", None),
            Err(ConfigError::WrongStore { .. })
        ));
    }

    #[test]
    fn missing_limits_take_defaults_and_unknown_fields_are_refused() {
        let json = format!(
            r#"{{"version":1,"issued_at_ms":0,"store_id":"S1","card_seal_public_key":"{}","offline_card":{{"total_fen":100}}}}"#,
            hex::encode([1u8; 32])
        );
        let config: TerminalConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(config.offline_card.total_fen, 100);
        assert_eq!(config.offline_card.per_payment_fen, 50_000);
        assert_eq!(config.dynamic_qr_timeout_ms, 120_000);
        let unknown = json.replace("\"version\"", "\"colour\":1,\"version\"");
        assert!(serde_json::from_str::<TerminalConfig>(&unknown).is_err());
    }

    #[test]
    fn out_of_range_values_are_named() {
        let mut config = sample(1);
        config.wallet_code.poll_interval_ms = 0;
        assert_eq!(
            config.validate(),
            Err(ConfigError::Invalid("wallet_code.poll_interval_ms"))
        );
        let mut config = sample(1);
        config.card_seal_public_key = "abcd".into();
        assert_eq!(
            config.validate(),
            Err(ConfigError::Invalid("card_seal_public_key"))
        );
    }
}
