//! The terminal's ed25519 signing key: generated on the lane on first start, kept in a file
//! only its owner can read, never sent anywhere (only the public key leaves the lane).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

/// The key file's name inside the data directory.
pub const KEY_FILE_NAME: &str = "terminal.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the terminal key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the terminal key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the terminal key {path} is damaged (expected 64 hex characters); restore it from backup \
         or re-enroll the lane"
    )]
    Damaged { path: PathBuf },
    #[error(
        "the terminal key {path} can be read by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("the operating system has no randomness to make a key: {0}")]
    NoRandomness(String),
}

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE_NAME)
}

/// Loads the key in `data_dir`, generating it first if there is none.
pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, KeyError> {
    let path = key_path(data_dir);
    if path.exists() {
        load(&path)
    } else {
        create(&path)
    }
}

pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let metadata = fs::metadata(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: path.into(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Damaged { path: path.into() })?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| KeyError::Damaged { path: path.into() })?;
    Ok(SigningKey::from_bytes(&seed))
}

fn create(path: &Path) -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::NoRandomness(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let write_error = |source| KeyError::Write {
        path: path.into(),
        source,
    };
    // Written under a temporary name with mode 0600 from the start, synced, then renamed:
    // a crash leaves either no key or a whole one, never a readable or half-written one.
    let temporary = path.with_extension("key.tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(write_error)?;
    file.write_all(hex::encode(seed).as_bytes())
        .map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    fs::rename(&temporary, path).map_err(write_error)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_error)?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let created = load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(key_path(dir.path()))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load_or_create(dir.path()).unwrap();
        assert_eq!(created.verifying_key(), loaded.verifying_key());
    }

    #[test]
    fn a_readable_or_damaged_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let path = key_path(dir.path());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load(&path),
            Err(KeyError::TooOpen { mode: 0o644, .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "not hex").unwrap();
        assert!(matches!(load(&path), Err(KeyError::Damaged { .. })));
    }
}
