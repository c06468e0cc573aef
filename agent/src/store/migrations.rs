//! Numbered schema migrations. Each runs in its own transaction, and a migration that would
//! leave fewer unacknowledged journal entries than there were is rolled back: upgrades never
//! drop what has not reached the gateway. Lessons learned go in `agent/MIGRATIONS.md`.

use rusqlite::Connection;

use super::StoreError;

#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Released migrations are never edited; add a new one.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        sql: V1,
    },
    Migration {
        version: 2,
        name: "payment attempts",
        sql: V2_PAYMENT_ATTEMPTS,
    },
    Migration {
        version: 3,
        name: "cashiers and shifts",
        sql: V3_CASHIERS_AND_SHIFTS,
    },
];

const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The journal: append-only, one row per entry, seq gap-free from 1.
CREATE TABLE journal (
    seq           INTEGER PRIMARY KEY,
    terminal_id   TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    prev_hash     BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    payload       BLOB    NOT NULL,
    hash          BLOB    NOT NULL CHECK (length(hash) = 32),
    signature     BLOB    NOT NULL CHECK (length(signature) = 64)
);
CREATE TRIGGER journal_is_append_only_update BEFORE UPDATE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER journal_is_append_only_delete BEFORE DELETE ON journal
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;

-- The gateway's acknowledgement: every entry up to acked_seq reached it.
CREATE TABLE outbox_ack (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    acked_seq   INTEGER NOT NULL,
    acked_hash  BLOB,
    acked_at_ms INTEGER
);
INSERT INTO outbox_ack (id, acked_seq) VALUES (1, 0);
CREATE VIEW outbox AS
    SELECT journal.* FROM journal, outbox_ack WHERE journal.seq > outbox_ack.acked_seq;

CREATE TABLE products (
    sku            TEXT PRIMARY KEY,
    gtin           TEXT UNIQUE,
    plu            TEXT UNIQUE,
    name_zh        TEXT NOT NULL,
    name_en        TEXT NOT NULL,
    unit_price_fen INTEGER NOT NULL CHECK (unit_price_fen >= 0),
    tax_rate       TEXT NOT NULL,
    pricing        TEXT NOT NULL CHECK (pricing IN ('per_unit', 'per_kg'))
);

-- A completed cash sale touches five B-tree pages (sales and its sale_id index, one line
-- page, one tender page, the journal): every commit is fsynced, so fewer pages is faster.
CREATE TABLE sales (
    sale_no         INTEGER PRIMARY KEY,
    sale_id         TEXT NOT NULL UNIQUE,
    -- The number printed on the receipt; today it equals sale_id, which lookups use.
    receipt_no      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('tendering', 'completed', 'voided')),
    tax_mode        TEXT NOT NULL,
    opened_at_ms    INTEGER NOT NULL,
    completed_at_ms INTEGER,
    voided_at_ms    INTEGER,
    order_discount  TEXT,
    total_fen       INTEGER NOT NULL
);
CREATE INDEX sales_being_paid ON sales (state) WHERE state = 'tendering';

CREATE TABLE sale_lines (
    sale_id         TEXT NOT NULL REFERENCES sales (sale_id),
    line            INTEGER NOT NULL,
    sku             TEXT NOT NULL,
    gtin            TEXT,
    plu             TEXT,
    name_zh         TEXT NOT NULL,
    name_en         TEXT NOT NULL,
    unit_price_fen  INTEGER NOT NULL,
    tax_rate        TEXT NOT NULL,
    pricing         TEXT NOT NULL,
    quantity        TEXT NOT NULL,
    label_price_fen INTEGER,
    discount        TEXT,
    PRIMARY KEY (sale_id, line)
) WITHOUT ROWID;

CREATE TABLE tenders (
    sale_id      TEXT NOT NULL REFERENCES sales (sale_id),
    position     INTEGER NOT NULL,
    tender_id    TEXT NOT NULL,
    method       TEXT NOT NULL,
    amount_fen   INTEGER NOT NULL,
    tendered_fen INTEGER NOT NULL,
    change_fen   INTEGER NOT NULL,
    reference    TEXT,
    at_ms        INTEGER NOT NULL,
    PRIMARY KEY (sale_id, position)
) WITHOUT ROWID;

CREATE TABLE refunds (
    sale_id   TEXT NOT NULL REFERENCES sales (sale_id),
    position  INTEGER NOT NULL,
    refund_id TEXT NOT NULL UNIQUE,
    total_fen INTEGER NOT NULL,
    reason    TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    PRIMARY KEY (sale_id, position)
) WITHOUT ROWID;

CREATE TABLE refund_lines (
    refund_id  TEXT NOT NULL REFERENCES refunds (refund_id),
    line       INTEGER NOT NULL,
    quantity   TEXT NOT NULL,
    amount_fen INTEGER NOT NULL,
    PRIMARY KEY (refund_id, line)
) WITHOUT ROWID;

CREATE TABLE refund_tenders (
    refund_id  TEXT NOT NULL REFERENCES refunds (refund_id),
    position   INTEGER NOT NULL,
    tender_id  TEXT NOT NULL,
    method     TEXT NOT NULL,
    amount_fen INTEGER NOT NULL,
    PRIMARY KEY (refund_id, position)
) WITHOUT ROWID;
"#;

/// Payment attempts for the tenders that are not cash (one row per try, keyed by the
/// gateway's out_trade_no, updated in the transaction of its `payment_attempt` journal entry),
/// and refunds owed through the gateway (sent when the lane is online). `sealed_card` holds
/// only a card sealed to the gateway's key, only while a stored offline payment waits to be
/// forwarded; it is blanked when forwarded. No full card number is ever stored.
const V2_PAYMENT_ATTEMPTS: &str = r#"
CREATE TABLE payment_attempts (
    attempt_id       TEXT PRIMARY KEY,
    sale_id          TEXT NOT NULL,
    attempt_no       INTEGER NOT NULL,
    method           TEXT NOT NULL,
    flow             TEXT NOT NULL,
    amount_fen       INTEGER NOT NULL CHECK (amount_fen > 0),
    state            TEXT NOT NULL,
    reference        TEXT,
    masked_pan       TEXT,
    sealed_card      TEXT,
    qr_text          TEXT,
    message          TEXT,
    tender_id        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    tender_applied   INTEGER NOT NULL DEFAULT 0,
    started_at_ms    INTEGER NOT NULL,
    next_at_ms       INTEGER NOT NULL,
    deadline_ms      INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL,
    UNIQUE (sale_id, attempt_no)
) WITHOUT ROWID;
CREATE INDEX payment_attempts_by_state ON payment_attempts (state);
CREATE INDEX payment_attempts_by_reference ON payment_attempts (reference);

CREATE TABLE gateway_refunds (
    refund_no     TEXT PRIMARY KEY,
    refund_id     TEXT NOT NULL,
    out_trade_no  TEXT NOT NULL,
    amount_fen    INTEGER NOT NULL CHECK (amount_fen > 0),
    state         TEXT NOT NULL,
    message       TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Cashiers (PINs as argon2id PHC strings only, lockout state) and shifts. The signed-in
/// cashier is a single row so a restarted lane knows whose drawer it is.
const V3_CASHIERS_AND_SHIFTS: &str = r#"
CREATE TABLE cashiers (
    cashier_id      TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    pin_hash        TEXT NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until_ms INTEGER
);

CREATE TABLE cashier_session (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    cashier_id      TEXT NOT NULL REFERENCES cashiers (cashier_id),
    signed_in_at_ms INTEGER NOT NULL
);

CREATE TABLE shifts (
    shift_no          INTEGER PRIMARY KEY,
    shift_id          TEXT NOT NULL UNIQUE,
    cashier_id        TEXT NOT NULL REFERENCES cashiers (cashier_id),
    opened_at_ms      INTEGER NOT NULL,
    opening_float_fen INTEGER NOT NULL CHECK (opening_float_fen >= 0),
    closed_at_ms      INTEGER,
    expected_fen      INTEGER,
    counted_fen       INTEGER
);
-- At most one open shift per lane.
CREATE UNIQUE INDEX one_open_shift ON shifts ((closed_at_ms IS NULL)) WHERE closed_at_ms IS NULL;
"#;

/// The schema version this build writes.
pub fn latest_version(migrations: &[Migration]) -> i64 {
    migrations.last().map(|m| m.version).unwrap_or(0)
}

fn unacknowledged(conn: &Connection) -> Result<i64, StoreError> {
    let has_journal: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'journal'",
        [],
        |r| r.get(0),
    )?;
    if !has_journal {
        return Ok(0);
    }
    Ok(conn.query_row(
        "SELECT count(*) FROM journal WHERE seq > (SELECT acked_seq FROM outbox_ack WHERE id = 1)",
        [],
        |r| r.get(0),
    )?)
}

/// Brings the schema up to date. Refuses a database written by a newer lanepay.
pub fn migrate(conn: &Connection, migrations: &[Migration]) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let latest = latest_version(migrations);
    if current > latest {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: latest,
        });
    }
    for migration in migrations.iter().filter(|m| m.version > current) {
        let before = unacknowledged(conn)?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied = conn
            .execute_batch(migration.sql)
            .and_then(|()| conn.pragma_update(None, "user_version", migration.version))
            .map_err(StoreError::from)
            .and_then(|()| unacknowledged(conn));
        match applied {
            Ok(after) if after >= before => conn.execute_batch("COMMIT")?,
            Ok(after) => {
                conn.execute_batch("ROLLBACK")?;
                return Err(StoreError::MigrationWouldDropEntries {
                    version: migration.version,
                    name: migration.name,
                    before,
                    after,
                });
            }
            Err(error) => {
                conn.execute_batch("ROLLBACK")?;
                return Err(error);
            }
        }
    }
    Ok(())
}
