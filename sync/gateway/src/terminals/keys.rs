//! The gateway's secrets beside its databases: its ed25519 signing key and the X25519
//! card-seal key that lanes seal card data to. Each is 64 hex characters in a 0600 file, created
//! atomically on first use; a file others can read is refused rather than used.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::service::TerminalError;

/// The X25519 secret lanes seal card data to (its public half travels in the signed config).
pub const CARD_SEAL_KEY_FILE: &str = "card_seal.key";

/// Loads the gateway's X25519 card-seal secret, creating it (0600, atomically) on first start.
pub fn load_or_create_card_seal_secret(data_dir: &Path) -> Result<[u8; 32], TerminalError> {
    load_or_create_secret(&data_dir.join(CARD_SEAL_KEY_FILE))
}

/// The public key (hex) that goes with a card-seal secret.
pub fn card_seal_public_hex(secret: &[u8; 32]) -> String {
    let secret = x25519_dalek::StaticSecret::from(*secret);
    hex::encode(x25519_dalek::PublicKey::from(&secret).as_bytes())
}

/// 32 secret bytes kept as hex in `path`: read (refusing a file others can read) or created.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32], TerminalError> {
    let failed = |message: String| TerminalError::Key {
        path: path.to_path_buf(),
        message,
    };
    if path.exists() {
        let mode = std::fs::metadata(path)
            .map_err(|e| failed(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(failed(format!(
                "readable by others (mode {:o}); chmod 600 it",
                mode & 0o777
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
        return hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| failed("damaged (expected 64 hex characters)".into()));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| failed(format!("no randomness: {e}")))?;
    let temporary = path.with_extension("key.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| failed(e.to_string()))?;
    file.write_all(hex::encode(secret).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| failed(e.to_string()))?;
    std::fs::rename(&temporary, path).map_err(|e| failed(e.to_string()))?;
    // Two processes starting on a fresh directory race to create it; the file that won the
    // rename is the key, so read it back rather than trust our own bytes.
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| failed("damaged (expected 64 hex characters)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_seal_secret_is_created_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_card_seal_secret(dir.path()).unwrap();
        let path = dir.path().join(CARD_SEAL_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_card_seal_secret(dir.path()).unwrap(), first);
        assert_eq!(card_seal_public_hex(&first).len(), 64);
        assert_ne!(card_seal_public_hex(&first), hex::encode(first));
    }

    #[test]
    fn a_secret_others_can_read_or_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CARD_SEAL_KEY_FILE);
        std::fs::write(&path, "abcd").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_or_create_card_seal_secret(dir.path()).unwrap_err();
        assert!(error.to_string().contains("readable by others"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = load_or_create_card_seal_secret(dir.path()).unwrap_err();
        assert!(error.to_string().contains("damaged"), "{error}");
    }
}
