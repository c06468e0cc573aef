//! Cashiers, the signed-in session and shifts as rows: the SQL behind `crate::shift`, which
//! keeps the rules (PIN checks, lockouts, who may open or close) and the journal entries.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// A cashier's stored PIN hash and lockout state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CashierCredentials {
    pub pin_hash: String,
    pub failed_attempts: i64,
    pub locked_until_ms: Option<i64>,
}

/// A cashier's open or closed shift as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftRow {
    pub shift_id: String,
    pub cashier_id: String,
    pub opened_at_ms: i64,
    pub opening_float_fen: i64,
    pub closed_at_ms: Option<i64>,
    pub counted_fen: Option<i64>,
}

/// What the drawer should hold, from the rows of a time window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShiftFigures {
    pub cash_sales_fen: i64,
    pub cash_refunds_fen: i64,
    pub sales_count: u64,
    pub refunds_count: u64,
    pub by_method: Vec<(String, i64)>,
}

/// The closing figures written on the shift's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShiftClose<'a> {
    pub shift_id: &'a str,
    pub closed_at_ms: i64,
    pub expected_fen: i64,
    pub counted_fen: i64,
}

pub fn cashier_exists(conn: &Connection, cashier_id: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) > 0 FROM cashiers WHERE cashier_id = ?1",
        [cashier_id],
        |r| r.get(0),
    )?)
}

pub fn insert_cashier(
    conn: &Connection,
    cashier_id: &str,
    name: &str,
    pin_hash: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO cashiers (cashier_id, name, pin_hash) VALUES (?1, ?2, ?3)",
        params![cashier_id, name, pin_hash],
    )?;
    Ok(())
}

pub fn credentials(
    conn: &Connection,
    cashier_id: &str,
) -> Result<Option<CashierCredentials>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT pin_hash, failed_attempts, locked_until_ms FROM cashiers WHERE cashier_id = ?1",
            [cashier_id],
            |r| {
                Ok(CashierCredentials {
                    pin_hash: r.get(0)?,
                    failed_attempts: r.get(1)?,
                    locked_until_ms: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Records the failed attempts in a row and a lockout's end (None: not locked).
pub fn set_failed_attempts(
    conn: &Connection,
    cashier_id: &str,
    failed_attempts: i64,
    locked_until_ms: Option<i64>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE cashiers SET failed_attempts = ?2, locked_until_ms = ?3 WHERE cashier_id = ?1",
        params![cashier_id, failed_attempts, locked_until_ms],
    )?;
    Ok(())
}

/// Makes `cashier_id` the lane's one signed-in cashier.
pub fn start_session(
    conn: &Connection,
    cashier_id: &str,
    signed_in_at_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO cashier_session (id, cashier_id, signed_in_at_ms) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET cashier_id = excluded.cashier_id,
                                        signed_in_at_ms = excluded.signed_in_at_ms",
        params![cashier_id, signed_in_at_ms],
    )?;
    Ok(())
}

pub fn end_session(conn: &Connection) -> Result<(), StoreError> {
    conn.execute("DELETE FROM cashier_session", [])?;
    Ok(())
}

/// The signed-in cashier's id and name.
pub fn signed_in(conn: &Connection) -> Result<Option<(String, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT c.cashier_id, c.name FROM cashier_session s
             JOIN cashiers c ON c.cashier_id = s.cashier_id WHERE s.id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

pub fn open_shift(conn: &Connection) -> Result<Option<ShiftRow>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT shift_id, cashier_id, opened_at_ms, opening_float_fen, closed_at_ms, counted_fen
             FROM shifts WHERE closed_at_ms IS NULL",
            [],
            |r| {
                Ok(ShiftRow {
                    shift_id: r.get(0)?,
                    cashier_id: r.get(1)?,
                    opened_at_ms: r.get(2)?,
                    opening_float_fen: r.get(3)?,
                    closed_at_ms: r.get(4)?,
                    counted_fen: r.get(5)?,
                })
            },
        )
        .optional()?)
}

/// The shift closed last, for reprinting its Z report.
pub fn last_closed_shift(conn: &Connection) -> Result<Option<ShiftRow>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT shift_id, cashier_id, opened_at_ms, opening_float_fen, closed_at_ms, counted_fen
             FROM shifts WHERE closed_at_ms IS NOT NULL ORDER BY shift_no DESC LIMIT 1",
            [],
            |r| {
                Ok(ShiftRow {
                    shift_id: r.get(0)?,
                    cashier_id: r.get(1)?,
                    opened_at_ms: r.get(2)?,
                    opening_float_fen: r.get(3)?,
                    closed_at_ms: r.get(4)?,
                    counted_fen: r.get(5)?,
                })
            },
        )
        .optional()?)
}

/// Inserts a new open shift numbered after the last one; returns its number. Call inside the
/// transaction that journals the opening, so the number and the entry commit together.
pub fn insert_shift(
    conn: &Connection,
    terminal_id: &str,
    cashier_id: &str,
    opened_at_ms: i64,
    opening_float_fen: i64,
) -> Result<String, StoreError> {
    let shift_no: i64 = conn.query_row(
        "SELECT coalesce(max(shift_no), 0) + 1 FROM shifts",
        [],
        |r| r.get(0),
    )?;
    let shift_id = format!("{terminal_id}-S{shift_no:05}");
    conn.execute(
        "INSERT INTO shifts (shift_no, shift_id, cashier_id, opened_at_ms, opening_float_fen)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            shift_no,
            shift_id,
            cashier_id,
            opened_at_ms,
            opening_float_fen
        ],
    )?;
    Ok(shift_id)
}

/// Writes the closing figures on a still open shift.
pub fn close_shift(conn: &Connection, close: &ShiftClose<'_>) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE shifts SET closed_at_ms = ?2, expected_fen = ?3, counted_fen = ?4
         WHERE shift_id = ?1 AND closed_at_ms IS NULL",
        params![
            close.shift_id,
            close.closed_at_ms,
            close.expected_fen,
            close.counted_fen
        ],
    )?;
    Ok(())
}

/// Cash in and out and the takings per method between `from_ms` (inclusive) and `to_ms`
/// (inclusive). Tenders of voided sales are left out: their cash was handed back.
pub fn figures(conn: &Connection, from_ms: i64, to_ms: i64) -> Result<ShiftFigures, StoreError> {
    let mut by_method: Vec<(String, i64)> = Vec::new();
    let mut statement = conn.prepare(
        "SELECT t.method, sum(t.amount_fen) FROM tenders t JOIN sales s ON s.sale_id = t.sale_id
         WHERE s.state != 'voided' AND t.at_ms BETWEEN ?1 AND ?2
         GROUP BY t.method ORDER BY t.method",
    )?;
    let taken = statement.query_map([from_ms, to_ms], |r| {
        Ok((r.get::<_, String>(0)?, r.get(1)?))
    })?;
    for row in taken {
        by_method.push(row?);
    }
    let mut statement = conn.prepare(
        "SELECT rt.method, sum(rt.amount_fen) FROM refund_tenders rt
         JOIN refunds r ON r.refund_id = rt.refund_id
         WHERE r.at_ms BETWEEN ?1 AND ?2 GROUP BY rt.method",
    )?;
    let refunded = statement
        .query_map([from_ms, to_ms], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let cash_sales_fen = by_method
        .iter()
        .find(|(method, _)| method == "cash")
        .map_or(0, |(_, fen)| *fen);
    let cash_refunds_fen = refunded
        .iter()
        .find(|(method, _)| method == "cash")
        .map_or(0, |(_, fen)| *fen);
    for (method, fen) in refunded {
        match by_method.iter_mut().find(|(m, _)| *m == method) {
            Some((_, taken)) => *taken -= fen,
            None => by_method.push((method, -fen)),
        }
    }
    let sales_count: i64 = conn.query_row(
        "SELECT count(*) FROM sales WHERE state = 'completed' AND completed_at_ms BETWEEN ?1 AND ?2",
        [from_ms, to_ms],
        |r| r.get(0),
    )?;
    let refunds_count: i64 = conn.query_row(
        "SELECT count(*) FROM refunds WHERE at_ms BETWEEN ?1 AND ?2",
        [from_ms, to_ms],
        |r| r.get(0),
    )?;
    Ok(ShiftFigures {
        cash_sales_fen,
        cash_refunds_fen,
        sales_count: u64::try_from(sales_count).unwrap_or(0),
        refunds_count: u64::try_from(refunds_count).unwrap_or(0),
        by_method,
    })
}
