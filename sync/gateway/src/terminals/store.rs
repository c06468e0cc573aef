//! The terminal registry, enrollment tokens, stored journal entries, the ledger and alarms.

use std::path::Path;
use std::sync::Mutex;

use lanepay_sync::journal::SignedEntry;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

/// How long a writer waits for the lock (the CLI may write while the server runs).
const BUSY_TIMEOUT_MS: u64 = 5_000;

const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE tokens (
    token_hash    TEXT PRIMARY KEY,
    store_id      TEXT NOT NULL,
    merchant_id   TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms    INTEGER,
    terminal_id   TEXT
);
CREATE TABLE terminals (
    terminal_id      TEXT PRIMARY KEY,
    store_id         TEXT NOT NULL,
    merchant_id      TEXT NOT NULL,
    public_key       TEXT NOT NULL UNIQUE,
    name             TEXT,
    version          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    enrolled_at_ms   INTEGER NOT NULL,
    last_seen_ms     INTEGER,
    last_seq         INTEGER NOT NULL DEFAULT 0,
    last_hash        BLOB NOT NULL,
    entries          INTEGER NOT NULL DEFAULT 0,
    clock_skew_ms    INTEGER
);
CREATE TABLE entries (
    terminal_id    TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    prev_hash      BLOB NOT NULL,
    payload        BLOB NOT NULL,
    hash           BLOB NOT NULL,
    signature      BLOB NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, seq)
) WITHOUT ROWID;
CREATE TRIGGER entries_are_immutable_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'stored journal entries are immutable'); END;
CREATE TRIGGER entries_are_immutable_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'stored journal entries are immutable'); END;
CREATE TABLE ledger (
    terminal_id  TEXT NOT NULL,
    store_id     TEXT NOT NULL,
    day          TEXT NOT NULL,
    method       TEXT NOT NULL,
    sales_fen    INTEGER NOT NULL DEFAULT 0,
    refunds_fen  INTEGER NOT NULL DEFAULT 0,
    sale_count   INTEGER NOT NULL DEFAULT 0,
    refund_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (terminal_id, day, method)
);
CREATE TABLE alarms (
    id          INTEGER PRIMARY KEY,
    terminal_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    at_ms       INTEGER NOT NULL
);
CREATE TABLE nonces (
    terminal_id   TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, nonce)
) WITHOUT ROWID;
CREATE INDEX nonces_by_expiry ON nonces (expires_at_ms);
",
    r"
-- Version 2: HQ's signed configuration per store. Every version is kept (what a lane was
-- told, and when); the highest version of a store is the one in force.
CREATE TABLE store_configs (
    store_id      TEXT NOT NULL,
    version       INTEGER NOT NULL,
    config        TEXT NOT NULL,
    signature     TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (store_id, version)
) WITHOUT ROWID;
",
];

#[derive(Debug, thiserror::Error)]
pub enum TerminalStoreError {
    #[error("terminal database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "terminal database schema {found} is newer than this gateway knows ({known}); upgrade the gateway"
    )]
    TooNew { found: i64, known: i64 },
    #[error("terminal database is damaged: {0}")]
    Damaged(String),
}

/// A registered terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalRow {
    pub terminal_id: String,
    pub store_id: String,
    pub merchant_id: String,
    pub public_key: String,
    pub name: Option<String>,
    pub version: String,
    pub revoked: bool,
    pub enrolled_at_ms: i64,
    pub last_seen_ms: Option<i64>,
    pub last_seq: u64,
    pub last_hash: [u8; 32],
    pub entries: u64,
    pub clock_skew_ms: Option<i64>,
}

/// A ledger line: one terminal, one day, one tender method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub terminal_id: String,
    pub store_id: String,
    pub day: String,
    pub method: String,
    pub sales_fen: i64,
    pub refunds_fen: i64,
    pub sale_count: i64,
    pub refund_count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmRow {
    pub terminal_id: String,
    pub seq: u64,
    pub kind: String,
    pub detail: String,
    pub at_ms: i64,
}

#[derive(Debug)]
pub struct TerminalStore {
    connection: Mutex<Connection>,
}

fn hash32(bytes: Vec<u8>) -> Result<[u8; 32], TerminalStoreError> {
    bytes
        .try_into()
        .map_err(|_| TerminalStoreError::Damaged("hash is not 32 bytes".into()))
}

const TERMINAL_COLUMNS: &str =
    "terminal_id, store_id, merchant_id, public_key, name, version, status, enrolled_at_ms,
    last_seen_ms, last_seq, last_hash, entries, clock_skew_ms";

fn terminal_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(TerminalRow, Vec<u8>)> {
    let status: String = row.get(6)?;
    Ok((
        TerminalRow {
            terminal_id: row.get(0)?,
            store_id: row.get(1)?,
            merchant_id: row.get(2)?,
            public_key: row.get(3)?,
            name: row.get(4)?,
            version: row.get(5)?,
            revoked: status == "revoked",
            enrolled_at_ms: row.get(7)?,
            last_seen_ms: row.get(8)?,
            last_seq: u64::try_from(row.get::<_, i64>(9)?).unwrap_or(0),
            last_hash: [0; 32],
            entries: u64::try_from(row.get::<_, i64>(11)?).unwrap_or(0),
            clock_skew_ms: row.get(12)?,
        },
        row.get(10)?,
    ))
}

impl TerminalStore {
    pub fn open(path: &Path) -> Result<TerminalStore, TerminalStoreError> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        // Read the version inside the write lock: two first opens (the server and a CLI
        // command) must not both run the migrations.
        connection.execute_batch("BEGIN IMMEDIATE")?;
        let migrated = (|| {
            let found: i64 = connection.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            let known = MIGRATIONS.len() as i64;
            if found > known {
                return Err(TerminalStoreError::TooNew { found, known });
            }
            for (index, sql) in MIGRATIONS
                .iter()
                .enumerate()
                .skip(usize::try_from(found).unwrap_or(0))
            {
                connection.execute_batch(sql)?;
                connection.pragma_update(None, "user_version", index as i64 + 1)?;
            }
            Ok(())
        })();
        match migrated {
            Ok(()) => connection.execute_batch("COMMIT")?,
            Err(error) => {
                let _ = connection.execute_batch("ROLLBACK");
                return Err(error);
            }
        }
        Ok(TerminalStore {
            connection: Mutex::new(connection),
        })
    }

    /// Runs `work` on the connection (one writer at a time; SQLite serialises anyway).
    pub fn with<T, E>(&self, work: impl FnOnce(&mut Connection) -> Result<T, E>) -> Result<T, E> {
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        work(&mut connection)
    }
}

pub fn insert_token(
    connection: &Connection,
    token_hash: &str,
    store_id: &str,
    merchant_id: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<(), TerminalStoreError> {
    connection.execute(
        "INSERT INTO tokens (token_hash, store_id, merchant_id, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash, store_id, merchant_id, now_ms, expires_at_ms],
    )?;
    Ok(())
}

/// A token's store, merchant, expiry and whether it was used.
pub type TokenRow = (String, String, i64, Option<i64>);

pub fn token(
    connection: &Connection,
    token_hash: &str,
) -> Result<Option<TokenRow>, TerminalStoreError> {
    Ok(connection
        .query_row(
            "SELECT store_id, merchant_id, expires_at_ms, used_at_ms FROM tokens WHERE token_hash = ?1",
            [token_hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?)
}

/// Marks a token used by `terminal_id`; false when someone used it first (compare-and-set).
pub fn use_token(
    tx: &Transaction<'_>,
    token_hash: &str,
    terminal_id: &str,
    now_ms: i64,
) -> Result<bool, TerminalStoreError> {
    let changed = tx.execute(
        "UPDATE tokens SET used_at_ms = ?2, terminal_id = ?3 WHERE token_hash = ?1 AND used_at_ms IS NULL",
        params![token_hash, now_ms, terminal_id],
    )?;
    Ok(changed == 1)
}

pub fn next_terminal_number(
    tx: &Transaction<'_>,
    store_id: &str,
) -> Result<u64, TerminalStoreError> {
    let count: i64 = tx.query_row(
        "SELECT count(*) FROM terminals WHERE store_id = ?1",
        [store_id],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(count).unwrap_or(0) + 1)
}

#[allow(clippy::too_many_arguments)]
pub fn insert_terminal(
    tx: &Transaction<'_>,
    terminal_id: &str,
    store_id: &str,
    merchant_id: &str,
    public_key: &str,
    name: Option<&str>,
    version: &str,
    now_ms: i64,
) -> Result<(), TerminalStoreError> {
    tx.execute(
        "INSERT INTO terminals (terminal_id, store_id, merchant_id, public_key, name, version, status, enrolled_at_ms, last_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7, ?8)",
        params![terminal_id, store_id, merchant_id, public_key, name, version, now_ms, &[0u8; 32][..]],
    )?;
    Ok(())
}

pub fn terminal(
    connection: &Connection,
    terminal_id: &str,
) -> Result<Option<TerminalRow>, TerminalStoreError> {
    let row = connection
        .query_row(
            &format!("SELECT {TERMINAL_COLUMNS} FROM terminals WHERE terminal_id = ?1"),
            [terminal_id],
            terminal_from_row,
        )
        .optional()?;
    row.map(|(mut terminal, hash)| {
        terminal.last_hash = hash32(hash)?;
        Ok(terminal)
    })
    .transpose()
}

pub fn terminals(connection: &Connection) -> Result<Vec<TerminalRow>, TerminalStoreError> {
    let mut statement = connection.prepare(&format!(
        "SELECT {TERMINAL_COLUMNS} FROM terminals ORDER BY terminal_id"
    ))?;
    let rows = statement
        .query_map([], terminal_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(mut terminal, hash)| {
            terminal.last_hash = hash32(hash)?;
            Ok(terminal)
        })
        .collect()
}

pub fn revoke(connection: &Connection, terminal_id: &str) -> Result<bool, TerminalStoreError> {
    Ok(connection.execute(
        "UPDATE terminals SET status = 'revoked' WHERE terminal_id = ?1",
        [terminal_id],
    )? == 1)
}

pub fn touch(
    connection: &Connection,
    terminal_id: &str,
    now_ms: i64,
    clock_skew_ms: i64,
) -> Result<(), TerminalStoreError> {
    connection.execute(
        "UPDATE terminals SET last_seen_ms = ?2, clock_skew_ms = ?3 WHERE terminal_id = ?1",
        params![terminal_id, now_ms, clock_skew_ms],
    )?;
    Ok(())
}

/// Remembers a nonce; false when it was already used inside the window.
pub fn remember_nonce(
    connection: &Connection,
    terminal_id: &str,
    nonce: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<bool, TerminalStoreError> {
    connection.execute("DELETE FROM nonces WHERE expires_at_ms < ?1", [now_ms])?;
    let inserted = connection.execute(
        "INSERT OR IGNORE INTO nonces (terminal_id, nonce, expires_at_ms) VALUES (?1, ?2, ?3)",
        params![terminal_id, nonce, expires_at_ms],
    )?;
    Ok(inserted == 1)
}

pub fn stored_hash(
    connection: &Connection,
    terminal_id: &str,
    seq: u64,
) -> Result<Option<[u8; 32]>, TerminalStoreError> {
    let hash: Option<Vec<u8>> = connection
        .prepare_cached("SELECT hash FROM entries WHERE terminal_id = ?1 AND seq = ?2")?
        .query_row(params![terminal_id, seq as i64], |r| r.get(0))
        .optional()?;
    hash.map(hash32).transpose()
}

pub fn insert_entry(
    tx: &Transaction<'_>,
    entry: &SignedEntry,
    now_ms: i64,
) -> Result<(), TerminalStoreError> {
    tx.prepare_cached(
        "INSERT INTO entries (terminal_id, seq, kind, created_at_ms, prev_hash, payload, hash, signature, received_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        entry.terminal_id,
        entry.seq as i64,
        entry.kind,
        entry.created_at_ms,
        &entry.prev_hash[..],
        entry.payload,
        &entry.hash[..],
        &entry.signature[..],
        now_ms
    ])?;
    Ok(())
}

pub fn set_head(
    tx: &Transaction<'_>,
    terminal_id: &str,
    seq: u64,
    hash: [u8; 32],
    added: u64,
) -> Result<(), TerminalStoreError> {
    tx.execute(
        "UPDATE terminals SET last_seq = ?2, last_hash = ?3, entries = entries + ?4 WHERE terminal_id = ?1",
        params![terminal_id, seq as i64, &hash[..], added as i64],
    )?;
    Ok(())
}

/// Adds to a ledger line. `sales` and `refunds` are fen; counts are 0 or 1.
#[allow(clippy::too_many_arguments)]
pub fn add_to_ledger(
    tx: &Transaction<'_>,
    terminal_id: &str,
    store_id: &str,
    day: &str,
    method: &str,
    sales_fen: i64,
    refunds_fen: i64,
    sale_count: i64,
    refund_count: i64,
) -> Result<(), TerminalStoreError> {
    tx.prepare_cached(
        "INSERT INTO ledger (terminal_id, store_id, day, method, sales_fen, refunds_fen, sale_count, refund_count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (terminal_id, day, method) DO UPDATE SET
            sales_fen = sales_fen + excluded.sales_fen, refunds_fen = refunds_fen + excluded.refunds_fen,
            sale_count = sale_count + excluded.sale_count, refund_count = refund_count + excluded.refund_count",
    )?
    .execute(params![terminal_id, store_id, day, method, sales_fen, refunds_fen, sale_count, refund_count])?;
    Ok(())
}

pub fn ledger(
    connection: &Connection,
    terminal_id: Option<&str>,
) -> Result<Vec<LedgerRow>, TerminalStoreError> {
    let mut statement = connection.prepare(
        "SELECT terminal_id, store_id, day, method, sales_fen, refunds_fen, sale_count, refund_count FROM ledger
         WHERE ?1 IS NULL OR terminal_id = ?1 ORDER BY terminal_id, day, method",
    )?;
    let rows = statement
        .query_map([terminal_id], |r| {
            Ok(LedgerRow {
                terminal_id: r.get(0)?,
                store_id: r.get(1)?,
                day: r.get(2)?,
                method: r.get(3)?,
                sales_fen: r.get(4)?,
                refunds_fen: r.get(5)?,
                sale_count: r.get(6)?,
                refund_count: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn raise_alarm(
    tx: &Transaction<'_>,
    terminal_id: &str,
    seq: u64,
    kind: &str,
    detail: &str,
    now_ms: i64,
) -> Result<(), TerminalStoreError> {
    tx.execute(
        "INSERT INTO alarms (terminal_id, seq, kind, detail, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![terminal_id, seq as i64, kind, detail, now_ms],
    )?;
    Ok(())
}

pub fn alarms(
    connection: &Connection,
    terminal_id: Option<&str>,
) -> Result<Vec<AlarmRow>, TerminalStoreError> {
    let mut statement = connection.prepare(
        "SELECT terminal_id, seq, kind, detail, at_ms FROM alarms WHERE ?1 IS NULL OR terminal_id = ?1 ORDER BY id",
    )?;
    let rows = statement
        .query_map([terminal_id], |r| {
            Ok(AlarmRow {
                terminal_id: r.get(0)?,
                seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                kind: r.get(2)?,
                detail: r.get(3)?,
                at_ms: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A store's signed configuration as stored: the config JSON and the gateway's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfigRow {
    pub store_id: String,
    pub version: u64,
    pub config_json: String,
    pub signature: String,
    pub created_at_ms: i64,
}

/// The configuration in force for a store (its highest version).
pub fn current_config(
    connection: &Connection,
    store_id: &str,
) -> Result<Option<StoreConfigRow>, TerminalStoreError> {
    Ok(connection
        .query_row(
            "SELECT store_id, version, config, signature, created_at_ms FROM store_configs
             WHERE store_id = ?1 ORDER BY version DESC LIMIT 1",
            [store_id],
            |r| {
                Ok(StoreConfigRow {
                    store_id: r.get(0)?,
                    version: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    config_json: r.get(2)?,
                    signature: r.get(3)?,
                    created_at_ms: r.get(4)?,
                })
            },
        )
        .optional()?)
}

pub fn insert_config(
    connection: &Connection,
    row: &StoreConfigRow,
) -> Result<(), TerminalStoreError> {
    let version = i64::try_from(row.version)
        .map_err(|_| TerminalStoreError::Damaged("configuration version too large".into()))?;
    connection.execute(
        "INSERT INTO store_configs (store_id, version, config, signature, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            row.store_id,
            version,
            row.config_json,
            row.signature,
            row.created_at_ms
        ],
    )?;
    Ok(())
}

/// Active terminals of a store (the ones a new configuration is pushed to).
pub fn store_terminal_ids(
    connection: &Connection,
    store_id: &str,
) -> Result<Vec<String>, TerminalStoreError> {
    let mut statement = connection.prepare(
        "SELECT terminal_id FROM terminals WHERE store_id = ?1 AND status = 'active' ORDER BY terminal_id",
    )?;
    let rows = statement
        .query_map([store_id], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(rows)
}

/// Every configured store with its current configuration version.
pub fn current_config_versions(
    connection: &mut Connection,
) -> Result<std::collections::HashMap<String, u64>, TerminalStoreError> {
    let mut statement =
        connection.prepare("SELECT store_id, MAX(version) FROM store_configs GROUP BY store_id")?;
    let rows = statement
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })?
        .collect::<Result<std::collections::HashMap<_, _>, _>>()?;
    Ok(rows)
}
