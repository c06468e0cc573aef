//! Payment attempts and gateway refunds as rows. Every write here runs inside the lane's
//! transaction that also appends the journal entry recording it (see `lane.rs`).

use lanepay_checkout::payment::{AttemptState, Flow, PaymentAttempt, StoredCards};
use lanepay_checkout::{Money, TenderMethod};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::StoreError;

/// An attempt with what the lane keeps beside the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempt: PaymentAttempt,
    pub sale_id: String,
    pub attempt_no: u32,
    pub method: TenderMethod,
    /// First 6 and last 4 digits of a card; never the full number.
    pub masked_pan: Option<String>,
    /// A card sealed to the gateway (JSON of `SealedCard`), kept only while stored offline.
    pub sealed_card: Option<String>,
    /// The dynamic QR's pay URL or the offline QR's order URL.
    pub qr_text: Option<String>,
    /// The tender on the sale, once applied.
    pub tender_id: Option<String>,
}

const COLUMNS: &str = "attempt_id, sale_id, attempt_no, method, flow, amount_fen, state, reference, masked_pan, \
     sealed_card, qr_text, message, tender_id, cancel_requested, tender_applied, started_at_ms, next_at_ms, \
     deadline_ms";

fn damaged(what: &str, value: &str) -> StoreError {
    StoreError::Damaged(format!("payment attempt {what} `{value}`"))
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<AttemptRecordRow> {
    Ok(AttemptRecordRow {
        attempt_id: row.get(0)?,
        sale_id: row.get(1)?,
        attempt_no: row.get(2)?,
        method: row.get(3)?,
        flow: row.get(4)?,
        amount_fen: row.get(5)?,
        state: row.get(6)?,
        reference: row.get(7)?,
        masked_pan: row.get(8)?,
        sealed_card: row.get(9)?,
        qr_text: row.get(10)?,
        message: row.get(11)?,
        tender_id: row.get(12)?,
        cancel_requested: row.get(13)?,
        tender_applied: row.get(14)?,
        started_at_ms: row.get(15)?,
        next_at_ms: row.get(16)?,
        deadline_ms: row.get(17)?,
    })
}

/// A row as read, before its codes are checked.
struct AttemptRecordRow {
    attempt_id: String,
    sale_id: String,
    attempt_no: u32,
    method: String,
    flow: String,
    amount_fen: i64,
    state: String,
    reference: Option<String>,
    masked_pan: Option<String>,
    sealed_card: Option<String>,
    qr_text: Option<String>,
    message: Option<String>,
    tender_id: Option<String>,
    cancel_requested: bool,
    tender_applied: bool,
    started_at_ms: i64,
    next_at_ms: i64,
    deadline_ms: i64,
}

impl AttemptRecordRow {
    fn into_record(self) -> Result<AttemptRecord, StoreError> {
        let method =
            TenderMethod::from_code(&self.method).ok_or_else(|| damaged("method", &self.method))?;
        let flow = Flow::from_code(&self.flow).ok_or_else(|| damaged("flow", &self.flow))?;
        let state =
            AttemptState::from_code(&self.state).ok_or_else(|| damaged("state", &self.state))?;
        Ok(AttemptRecord {
            attempt: PaymentAttempt {
                id: self.attempt_id,
                flow,
                amount: Money::from_fen(self.amount_fen),
                state,
                started_at_ms: self.started_at_ms,
                next_at_ms: self.next_at_ms,
                deadline_ms: self.deadline_ms,
                reference: self.reference,
                pay_url: if flow == Flow::DynamicQr {
                    self.qr_text.clone()
                } else {
                    None
                },
                message: self.message,
                cancel_requested: self.cancel_requested,
                tender_applied: self.tender_applied,
            },
            sale_id: self.sale_id,
            attempt_no: self.attempt_no,
            method,
            masked_pan: self.masked_pan,
            sealed_card: self.sealed_card,
            qr_text: self.qr_text,
            tender_id: self.tender_id,
        })
    }
}

fn query_records(
    conn: &Connection,
    where_clause: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<AttemptRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM payment_attempts {where_clause}");
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement
        .query_map(params, from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(AttemptRecordRow::into_record)
        .collect()
}

/// Inserts or updates an attempt. A card sealed for forwarding is kept only while the attempt
/// is stored: any other state blanks it.
pub fn save(conn: &Connection, record: &AttemptRecord, now_ms: i64) -> Result<(), StoreError> {
    let a = &record.attempt;
    let sealed_card = (a.state == AttemptState::Stored)
        .then_some(record.sealed_card.as_deref())
        .flatten();
    let qr_text = record.qr_text.as_deref().or(a.pay_url.as_deref());
    conn.prepare_cached(&format!(
        "INSERT INTO payment_attempts ({COLUMNS}, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
         ON CONFLICT (attempt_id) DO UPDATE SET flow = excluded.flow, state = excluded.state, reference = excluded.reference,
             masked_pan = excluded.masked_pan, sealed_card = excluded.sealed_card, qr_text = excluded.qr_text,
             message = excluded.message, tender_id = excluded.tender_id,
             cancel_requested = excluded.cancel_requested, tender_applied = excluded.tender_applied,
             next_at_ms = excluded.next_at_ms, deadline_ms = excluded.deadline_ms,
             updated_at_ms = excluded.updated_at_ms"
    ))?
    .execute(params![
        a.id,
        record.sale_id,
        record.attempt_no,
        record.method.code(),
        a.flow.code(),
        a.amount.fen(),
        a.state.code(),
        a.reference,
        record.masked_pan,
        sealed_card,
        qr_text,
        a.message,
        record.tender_id,
        a.cancel_requested,
        a.tender_applied,
        a.started_at_ms,
        a.next_at_ms,
        a.deadline_ms,
        now_ms,
    ])?;
    Ok(())
}

pub fn load(conn: &Connection, attempt_id: &str) -> Result<Option<AttemptRecord>, StoreError> {
    Ok(query_records(conn, "WHERE attempt_id = ?1", [attempt_id])?
        .into_iter()
        .next())
}

/// Every attempt of a sale, oldest first.
pub fn for_sale(conn: &Connection, sale_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
    query_records(conn, "WHERE sale_id = ?1 ORDER BY attempt_no", [sale_id])
}

/// Attempts the runtime still has work for: unresolved ones and stored cards to forward.
pub fn active(conn: &Connection) -> Result<Vec<AttemptRecord>, StoreError> {
    query_records(
        conn,
        "WHERE state IN ('sending', 'waiting', 'reversing', 'closing', 'stored') ORDER BY started_at_ms",
        [],
    )
}

/// The number the next attempt of a sale gets (its out_trade_no ends with it).
pub fn next_attempt_no(conn: &Connection, sale_id: &str) -> Result<u32, StoreError> {
    let last: Option<u32> = conn.query_row(
        "SELECT max(attempt_no) FROM payment_attempts WHERE sale_id = ?1",
        [sale_id],
        |r| r.get(0),
    )?;
    Ok(last.unwrap_or(0) + 1)
}

/// The card payments stored offline and not forwarded yet.
pub fn stored_cards(conn: &Connection) -> Result<StoredCards, StoreError> {
    let (total_fen, count, oldest): (i64, u32, Option<i64>) = conn.query_row(
        "SELECT coalesce(sum(amount_fen), 0), count(*), min(started_at_ms) FROM payment_attempts WHERE state = 'stored'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(StoredCards {
        total: Money::from_fen(total_fen),
        count,
        oldest_stored_at_ms: oldest,
    })
}

/// Whether a gateway trade number already paid another attempt (an offline QR confirmation
/// shown a second time).
pub fn reference_used(
    conn: &Connection,
    reference: &str,
    except_attempt: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM payment_attempts WHERE reference = ?1 AND attempt_id <> ?2 AND tender_applied = 1",
            [reference, except_attempt],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// The paid attempt behind a tender, for a refund through the gateway.
pub fn for_tender(conn: &Connection, tender_id: &str) -> Result<Option<AttemptRecord>, StoreError> {
    Ok(query_records(conn, "WHERE tender_id = ?1", [tender_id])?
        .into_iter()
        .next())
}

/// A refund the gateway owes the customer (wallet or card), sent when the lane is online.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayRefund {
    /// The lane's idempotency key at the gateway: `{refund_id}-{n}`.
    pub refund_no: String,
    pub refund_id: String,
    pub out_trade_no: String,
    pub amount: Money,
    /// pending (not sent or unanswered), done, failed.
    pub state: String,
    pub message: Option<String>,
}

pub fn insert_gateway_refund(
    conn: &Connection,
    refund: &GatewayRefund,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO gateway_refunds (refund_no, refund_id, out_trade_no, amount_fen, state, message, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        params![
            refund.refund_no,
            refund.refund_id,
            refund.out_trade_no,
            refund.amount.fen(),
            refund.state,
            refund.message,
            now_ms
        ],
    )?;
    Ok(())
}

pub fn pending_gateway_refunds(conn: &Connection) -> Result<Vec<GatewayRefund>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT refund_no, refund_id, out_trade_no, amount_fen, state, message FROM gateway_refunds
         WHERE state = 'pending' ORDER BY created_at_ms, refund_no",
    )?;
    let rows = statement
        .query_map([], |r| {
            Ok(GatewayRefund {
                refund_no: r.get(0)?,
                refund_id: r.get(1)?,
                out_trade_no: r.get(2)?,
                amount: Money::from_fen(r.get(3)?),
                state: r.get(4)?,
                message: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn set_gateway_refund_state(
    conn: &Connection,
    refund_no: &str,
    state: &str,
    message: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE gateway_refunds SET state = ?2, message = ?3, updated_at_ms = ?4 WHERE refund_no = ?1",
        params![refund_no, state, message, now_ms],
    )?;
    Ok(())
}
