//! The configuration HQ sets for this lane's store, as the gateway signed it: verified before it
//! is applied, kept in the `meta` table (key `terminal_config`, the [`SignedConfig`] as JSON)
//! and journaled as `config_applied` in the same transaction.
//!
//! [`current`] is how the rest of the agent reads limits and timings; it returns None before
//! the lane is enrolled (callers then use the defaults of `lanepay_sync::config`).

use ed25519_dalek::{SigningKey, VerifyingKey};
use lanepay_sync::config::{ConfigError, SignedConfig, TerminalConfig, accept_config};
use lanepay_sync::payload::{ConfigApplied, kind};
use rusqlite::{Connection, TransactionBehavior};

use crate::store::{self, StoreError, journal};

/// The `meta` key of the applied configuration.
pub const META_KEY: &str = "terminal_config";

/// The configuration in force, None before the first one was applied.
pub fn current(conn: &Connection) -> Result<Option<TerminalConfig>, StoreError> {
    Ok(current_signed(conn)?.map(|signed| signed.config))
}

/// The offline card limits of the applied configuration (the defaults before the first one).
pub fn offline_card_limits(conn: &Connection) -> lanepay_checkout::payment::OfflineCardLimits {
    match current(conn) {
        Ok(Some(config)) => lanepay_checkout::payment::OfflineCardLimits {
            per_payment: lanepay_checkout::Money::from_fen(config.offline_card.per_payment_fen),
            total: lanepay_checkout::Money::from_fen(config.offline_card.total_fen),
            count: config.offline_card.count,
            max_age_ms: config.offline_card.max_age_ms,
        },
        _ => lanepay_checkout::payment::OfflineCardLimits::default(),
    }
}

/// The applied configuration with the gateway's signature, as stored.
pub fn current_signed(conn: &Connection) -> Result<Option<SignedConfig>, StoreError> {
    let Some(text) = store::meta(conn, META_KEY)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StoreError::Damaged(format!("stored terminal configuration: {e}")))
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Refused: nothing was stored or journaled.
    #[error(transparent)]
    Refused(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ApplyError {
    fn from(error: rusqlite::Error) -> ApplyError {
        ApplyError::Store(error.into())
    }
}

/// Who this lane is, for applying a configuration: its key to journal with, and the store
/// and gateway key it enrolled with.
#[derive(Debug, Clone)]
pub struct LaneIdentity<'a> {
    pub key: &'a SigningKey,
    pub terminal_id: &'a str,
    pub store_id: &'a str,
    pub gateway_key: &'a VerifyingKey,
}

/// Verifies `signed` and, if it is this store's and newer than the one in force, stores it and
/// journals `config_applied` in one transaction. Returns the configuration now in force.
/// A refusal changes nothing.
pub fn apply(
    conn: &mut Connection,
    lane: &LaneIdentity<'_>,
    signed: &SignedConfig,
    now_ms: i64,
) -> Result<TerminalConfig, ApplyError> {
    // IMMEDIATE: the version check and the journal head are read under the write lock the
    // lane's own appends also take, so neither a concurrent apply nor a sale slips between.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current_version = current(&tx)?.map(|config| config.version);
    let config = accept_config(signed, lane.gateway_key, lane.store_id, current_version)?;
    let text = serde_json::to_string(signed)
        .map_err(|e| StoreError::Damaged(format!("configuration cannot be encoded: {e}")))?;
    store::set_meta(&tx, META_KEY, &text)?;
    let payload = lanepay_sync::canonical::to_vec(&ConfigApplied {
        version: config.version,
        issued_at_ms: config.issued_at_ms,
    })
    .map_err(StoreError::from)?;
    journal::append(
        &tx,
        lane.key,
        lane.terminal_id,
        kind::CONFIG_APPLIED,
        payload,
        now_ms,
    )?;
    tx.commit()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanepay_sync::config::sign_config;

    struct Fixture {
        _dir: tempfile::TempDir,
        conn: Connection,
        lane_key: SigningKey,
        gateway: SigningKey,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let conn = store::open(&dir.path().join("lane.db"), store::Durability::Normal).unwrap();
        Fixture {
            _dir: dir,
            conn,
            lane_key: SigningKey::from_bytes(&[3; 32]),
            gateway: SigningKey::from_bytes(&[4; 32]),
        }
    }

    fn config(version: u64, store_id: &str) -> TerminalConfig {
        let mut config =
            TerminalConfig::with_defaults(version, 1_000 * version as i64, store_id, "ab");
        config.offline_card.total_fen = 100_000 * version as i64;
        config
    }

    #[test]
    fn applying_stores_journals_and_refuses_anything_not_newer_or_not_ours() {
        let mut f = fixture();
        assert_eq!(current(&f.conn).unwrap(), None);
        let gateway_public = f.gateway.verifying_key();
        let lane = LaneIdentity {
            key: &f.lane_key,
            terminal_id: "S1-L001",
            store_id: "S1",
            gateway_key: &gateway_public,
        };
        let v2 = sign_config(&config(2, "S1"), &f.gateway);
        let applied = apply(&mut f.conn, &lane, &v2, 5_000).unwrap();
        assert_eq!(applied.version, 2);
        assert_eq!(
            current(&f.conn).unwrap().unwrap().offline_card.total_fen,
            200_000
        );
        let (seq, _) = journal::head(&f.conn).unwrap();
        assert_eq!(seq, 1);
        let (kind, payload): (String, Vec<u8>) = f
            .conn
            .query_row("SELECT kind, payload FROM journal WHERE seq = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(kind, "config_applied");
        assert_eq!(payload, br#"{"issued_at_ms":2000,"version":2}"#);

        let refusals = [
            sign_config(&config(2, "S1"), &f.gateway),
            sign_config(&config(1, "S1"), &f.gateway),
            sign_config(&config(3, "S2"), &f.gateway),
            sign_config(&config(3, "S1"), &SigningKey::from_bytes(&[5; 32])),
        ];
        for offered in &refusals {
            assert!(matches!(
                apply(&mut f.conn, &lane, offered, 6_000),
                Err(ApplyError::Refused(_))
            ));
        }
        assert_eq!(current(&f.conn).unwrap().unwrap().version, 2);
        assert_eq!(journal::head(&f.conn).unwrap().0, 1);

        let v3 = sign_config(&config(3, "S1"), &f.gateway);
        assert_eq!(apply(&mut f.conn, &lane, &v3, 7_000).unwrap().version, 3);
        assert_eq!(journal::head(&f.conn).unwrap().0, 2);
        assert_eq!(current_signed(&f.conn).unwrap(), Some(v3));
    }
}
