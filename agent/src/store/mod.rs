//! The lane's SQLite database: one file holding the catalog, the sales and the journal, so
//! that a sale and the journal entry recording it commit in one transaction.

pub mod catalog;
pub mod journal;
pub mod migrations;
pub mod payments;
pub mod sales;
pub mod shifts;

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// The database file's name inside the data directory.
pub const DB_FILE_NAME: &str = "lane.db";
/// How long a writer waits for another connection's lock before giving up. Only the
/// background journal check reads concurrently, and WAL readers never block the writer.
const BUSY_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "database schema version {found} is newer than this lanepay understands ({supported}); \
         install the newer lanepay again"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error(
        "migration {version} ({name}) would drop unacknowledged journal entries \
         ({before} before, {after} after); it was rolled back and nothing changed"
    )]
    MigrationWouldDropEntries {
        version: i64,
        name: &'static str,
        before: i64,
        after: i64,
    },
    #[error("journal entry could not be made: {0}")]
    Entry(#[from] lanepay_sync::journal::EntryError),
    #[error("journal payload could not be encoded: {0}")]
    Encode(#[from] lanepay_sync::canonical::CanonicalError),
    #[error("stored data is damaged: {0}")]
    Damaged(String),
}

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: survives power loss (the default for the journal).
    Full,
    /// Survives a process crash; power loss may lose the last commits.
    Normal,
}

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE_NAME)
}

/// Opens (creating if needed) and migrates the lane database.
pub fn open(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let conn = open_unmigrated(path, durability)?;
    migrations::migrate(&conn, migrations::MIGRATIONS)?;
    Ok(conn)
}

/// Opens a connection with the lane's settings, without touching the schema.
pub fn open_unmigrated(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.into(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Opens a database read-only (verification and export of a file that may be in use).
pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
        path: path.into(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    Ok(conn)
}

/// Reads a value from the `meta` table.
pub fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}
