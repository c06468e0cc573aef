//! Sales, tenders and refunds as rows, written in the same transaction as their journal
//! entries, and read back to resume a sale after a crash or to find it for a refund.

use std::str::FromStr;

use lanepay_checkout::refund::{Refund, RefundLine, RefundedTender};
use lanepay_checkout::{
    Discount, Line, LineId, Money, Pricing, Product, Sale, SaleId, SaleState, TaxMode, Tender,
    TenderId, TenderMethod,
};
use rusqlite::{Connection, OptionalExtension, params};
use rust_decimal::Decimal;

use super::StoreError;

pub fn tax_mode_code(mode: TaxMode) -> &'static str {
    match mode {
        TaxMode::Included => "included",
        TaxMode::Excluded => "excluded",
    }
}

fn discount_code(discount: Option<Discount>) -> Option<String> {
    discount.map(|d| match d {
        Discount::Amount(m) => format!("amount:{}", m.fen()),
        Discount::Percent(p) => format!("percent:{p}"),
    })
}

fn parse_discount(text: Option<String>) -> Result<Option<Discount>, StoreError> {
    let Some(text) = text else { return Ok(None) };
    let damaged = || StoreError::Damaged(format!("discount `{text}`"));
    let (kind, value) = text.split_once(':').ok_or_else(damaged)?;
    Ok(Some(match kind {
        "amount" => Discount::Amount(Money::from_fen(value.parse().map_err(|_| damaged())?)),
        "percent" => Discount::Percent(Decimal::from_str(value).map_err(|_| damaged())?),
        _ => return Err(damaged()),
    }))
}

fn decimal(text: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str(text).map_err(|_| StoreError::Damaged(format!("decimal `{text}`")))
}

/// Writes the sale's row (insert or update of its state) and, the first time, its lines:
/// the cart is frozen from the first tender on, so lines never change after that.
pub fn save_sale(
    conn: &Connection,
    sale: &Sale,
    sale_no: u64,
    receipt_no: &str,
) -> Result<(), StoreError> {
    let state = sale.state().code();
    conn.prepare_cached(
        "INSERT INTO sales (sale_id, sale_no, receipt_no, state, tax_mode, opened_at_ms, completed_at_ms, voided_at_ms, order_discount, total_fen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (sale_id) DO UPDATE SET state = excluded.state, completed_at_ms = excluded.completed_at_ms,
             voided_at_ms = excluded.voided_at_ms",
    )?
    .execute(params![
        sale.id.0,
        sale_no as i64,
        receipt_no,
        state,
        tax_mode_code(sale.tax_mode),
        sale.opened_at_ms,
        sale.completed_at_ms(),
        sale.voided_at_ms(),
        discount_code(sale.order_discount()),
        sale.totals().total.fen(),
    ])?;
    let mut insert_line = conn.prepare_cached(
        "INSERT OR IGNORE INTO sale_lines (sale_id, line, sku, gtin, plu, name_zh, name_en, unit_price_fen, tax_rate, pricing, quantity, label_price_fen, discount)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for line in sale.lines() {
        let p = &line.product;
        insert_line.execute(params![
            sale.id.0,
            line.id.0,
            p.sku,
            p.gtin,
            p.plu,
            p.name_zh,
            p.name_en,
            p.unit_price.fen(),
            p.tax_rate.to_string(),
            if p.pricing == Pricing::PerKg {
                "per_kg"
            } else {
                "per_unit"
            },
            line.quantity.to_string(),
            line.label_price.map(Money::fen),
            discount_code(line.discount),
        ])?;
    }
    Ok(())
}

pub fn insert_tender(
    conn: &Connection,
    sale: &SaleId,
    position: usize,
    tender: &Tender,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO tenders (tender_id, sale_id, position, method, amount_fen, tendered_fen, change_fen, reference, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        tender.id.0,
        sale.0,
        position as i64,
        tender.method.code(),
        tender.amount.fen(),
        tender.tendered.fen(),
        tender.change.fen(),
        tender.reference,
        tender.at_ms,
    ])?;
    Ok(())
}

pub fn insert_refund(
    conn: &Connection,
    sale: &SaleId,
    position: usize,
    refund: &Refund,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO refunds (refund_id, sale_id, position, total_fen, reason, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![refund.id, sale.0, position as i64, refund.total.fen(), refund.reason, refund.at_ms])?;
    let mut line_statement = conn.prepare_cached(
        "INSERT INTO refund_lines (refund_id, line, quantity, amount_fen) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for line in &refund.lines {
        line_statement.execute(params![
            refund.id,
            line.line.0,
            line.quantity.to_string(),
            line.amount.fen()
        ])?;
    }
    let mut tender_statement = conn.prepare_cached(
        "INSERT INTO refund_tenders (refund_id, position, tender_id, method, amount_fen) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (position, part) in refund.tenders.iter().enumerate() {
        tender_statement.execute(params![
            refund.id,
            position as i64,
            part.tender.0,
            part.method.code(),
            part.amount.fen()
        ])?;
    }
    Ok(())
}

/// A stored sale and its numbers.
#[derive(Debug, Clone)]
pub struct StoredSale {
    pub sale: Sale,
    pub sale_no: u64,
    pub receipt_no: String,
}

/// The sale that was being paid when the lane stopped, if any.
pub fn load_unfinished(conn: &Connection) -> Result<Option<StoredSale>, StoreError> {
    let id: Option<String> = conn
        .query_row(
            "SELECT sale_id FROM sales WHERE state = 'tendering' ORDER BY sale_no DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    id.map(|id| load(conn, &id))
        .transpose()
        .map(Option::flatten)
}

pub fn find_by_receipt(
    conn: &Connection,
    receipt_no: &str,
) -> Result<Option<StoredSale>, StoreError> {
    let id: Option<String> = conn
        .query_row(
            // Receipt numbers are sale ids (see the schema), so the sale_id index finds them.
            "SELECT sale_id FROM sales WHERE sale_id = ?1",
            [receipt_no],
            |r| r.get(0),
        )
        .optional()?;
    id.map(|id| load(conn, &id))
        .transpose()
        .map(Option::flatten)
}

/// The highest sale number used so far.
pub fn last_sale_no(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT coalesce(max(sale_no), 0) FROM sales", [], |r| {
        r.get(0)
    })?;
    Ok(u64::try_from(n).unwrap_or(0))
}

type SaleRow = (
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

pub fn load(conn: &Connection, sale_id: &str) -> Result<Option<StoredSale>, StoreError> {
    let row: Option<SaleRow> = conn
        .query_row(
            "SELECT sale_no, receipt_no, state, tax_mode, opened_at_ms, completed_at_ms, voided_at_ms, order_discount
             FROM sales WHERE sale_id = ?1",
            [sale_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
        )
        .optional()?;
    let Some((
        sale_no,
        receipt_no,
        state,
        tax_mode,
        opened_at_ms,
        completed_at_ms,
        voided_at_ms,
        order_discount,
    )) = row
    else {
        return Ok(None);
    };
    let state = match state.as_str() {
        "tendering" => SaleState::Tendering,
        "completed" => SaleState::Completed,
        "voided" => SaleState::Voided,
        other => return Err(StoreError::Damaged(format!("sale state `{other}`"))),
    };
    let tax_mode = if tax_mode == "excluded" {
        TaxMode::Excluded
    } else {
        TaxMode::Included
    };
    let sale = Sale::restore(
        SaleId(sale_id.to_string()),
        tax_mode,
        opened_at_ms,
        state,
        load_lines(conn, sale_id)?,
        parse_discount(order_discount)?,
        load_tenders(conn, sale_id)?,
        load_refunds(conn, sale_id)?,
        completed_at_ms,
        voided_at_ms,
    );
    Ok(Some(StoredSale {
        sale,
        sale_no: u64::try_from(sale_no).unwrap_or(0),
        receipt_no,
    }))
}

fn load_lines(conn: &Connection, sale_id: &str) -> Result<Vec<Line>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT line, sku, gtin, plu, name_zh, name_en, unit_price_fen, tax_rate, pricing, quantity, label_price_fen, discount
         FROM sale_lines WHERE sale_id = ?1 ORDER BY line",
    )?;
    let rows = statement.query_map([sale_id], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, String>(8)?,
            r.get::<_, String>(9)?,
            r.get::<_, Option<i64>>(10)?,
            r.get::<_, Option<String>>(11)?,
        ))
    })?;
    let mut lines = Vec::new();
    for row in rows {
        let (
            line,
            sku,
            gtin,
            plu,
            name_zh,
            name_en,
            price,
            rate,
            pricing,
            quantity,
            label,
            discount,
        ) = row?;
        lines.push(Line {
            id: LineId(line),
            product: Product {
                sku,
                gtin,
                plu,
                name_zh,
                name_en,
                unit_price: Money::from_fen(price),
                tax_rate: decimal(&rate)?,
                pricing: if pricing == "per_kg" {
                    Pricing::PerKg
                } else {
                    Pricing::PerUnit
                },
            },
            quantity: decimal(&quantity)?,
            label_price: label.map(Money::from_fen),
            discount: parse_discount(discount)?,
        });
    }
    Ok(lines)
}

fn method(code: &str) -> Result<TenderMethod, StoreError> {
    TenderMethod::from_code(code)
        .ok_or_else(|| StoreError::Damaged(format!("tender method `{code}`")))
}

fn load_tenders(conn: &Connection, sale_id: &str) -> Result<Vec<Tender>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT tender_id, method, amount_fen, tendered_fen, change_fen, reference, at_ms
         FROM tenders WHERE sale_id = ?1 ORDER BY position",
    )?;
    let rows = statement.query_map([sale_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, i64>(6)?,
        ))
    })?;
    let mut tenders = Vec::new();
    for row in rows {
        let (id, code, amount, tendered, change, reference, at_ms) = row?;
        tenders.push(Tender {
            id: TenderId(id),
            method: method(&code)?,
            amount: Money::from_fen(amount),
            tendered: Money::from_fen(tendered),
            change: Money::from_fen(change),
            reference,
            at_ms,
        });
    }
    Ok(tenders)
}

fn load_refunds(conn: &Connection, sale_id: &str) -> Result<Vec<Refund>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT refund_id, total_fen, reason, at_ms FROM refunds WHERE sale_id = ?1 ORDER BY position",
    )?;
    let heads = statement
        .query_map([sale_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut refunds = Vec::new();
    for (id, total, reason, at_ms) in heads {
        let lines = conn
            .prepare_cached("SELECT line, quantity, amount_fen FROM refund_lines WHERE refund_id = ?1 ORDER BY line")?
            .query_map([&id], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|(line, quantity, amount)| {
                Ok(RefundLine { line: LineId(line), quantity: decimal(&quantity)?, amount: Money::from_fen(amount) })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let tenders = conn
            .prepare_cached("SELECT tender_id, method, amount_fen FROM refund_tenders WHERE refund_id = ?1 ORDER BY position")?
            .query_map([&id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|(tender, code, amount)| {
                Ok(RefundedTender { tender: TenderId(tender), method: method(&code)?, amount: Money::from_fen(amount) })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        refunds.push(Refund {
            id,
            lines,
            tenders,
            total: Money::from_fen(total),
            reason,
            at_ms,
        });
    }
    Ok(refunds)
}
