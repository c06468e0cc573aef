//! The lane's side of the books, read from its database: the journal as written, the last
//! acknowledged sequence, and the money totals per tender method that the gateway's ledger
//! must match to the fen.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

/// One journal entry as the lane stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneEntry {
    pub seq: u64,
    pub kind: String,
    pub payload: Vec<u8>,
    pub hash: Vec<u8>,
}

fn open(db: &Path) -> anyhow::Result<Connection> {
    let connection = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", db.display()))?;
    connection.busy_timeout(Duration::from_secs(5))?;
    Ok(connection)
}

/// Every journal entry of the lane database `db`, in order.
pub fn lane_journal(db: &Path) -> anyhow::Result<Vec<LaneEntry>> {
    let connection = open(db)?;
    let mut statement =
        connection.prepare("SELECT seq, kind, payload, hash FROM journal ORDER BY seq")?;
    let rows = statement
        .query_map([], |row| {
            Ok(LaneEntry {
                seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                kind: row.get(1)?,
                payload: row.get(2)?,
                hash: row.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The last journal sequence number (0 when empty).
pub fn lane_head(db: &Path) -> anyhow::Result<u64> {
    let connection = open(db)?;
    let seq: i64 = connection.query_row("SELECT coalesce(max(seq), 0) FROM journal", [], |r| {
        r.get(0)
    })?;
    Ok(u64::try_from(seq).unwrap_or(0))
}

/// The highest sequence the lane marked acknowledged (its outbox starts after it).
pub fn lane_acknowledged(db: &Path) -> anyhow::Result<u64> {
    let connection = open(db)?;
    let seq: i64 =
        connection.query_row("SELECT acked_seq FROM outbox_ack WHERE id = 1", [], |r| {
            r.get(0)
        })?;
    Ok(u64::try_from(seq).unwrap_or(0))
}

/// Sales minus refunds per tender method, in fen, from journal entries (`kind`, payload):
/// every `sale_completed` tender adds its amount, every `refund_completed` tender subtracts.
pub fn totals_by_method<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut totals = BTreeMap::new();
    for (kind, payload) in entries {
        let sign = match kind {
            "sale_completed" => 1,
            "refund_completed" => -1,
            _ => continue,
        };
        let value: Value = serde_json::from_slice(payload)
            .with_context(|| format!("a {kind} payload is not JSON"))?;
        for tender in value["tenders"].as_array().into_iter().flatten() {
            let method = tender["method"]
                .as_str()
                .with_context(|| format!("a {kind} tender has no method: {tender}"))?;
            let amount = tender["amount_fen"]
                .as_i64()
                .with_context(|| format!("a {kind} tender has no amount_fen: {tender}"))?;
            *totals.entry(method.to_string()).or_insert(0) += sign * amount;
        }
    }
    Ok(totals)
}

/// The `sale_id` of every `sale_completed` payload among `entries`, in order.
pub fn sale_ids<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for (kind, payload) in entries {
        if kind != "sale_completed" {
            continue;
        }
        let value: Value = serde_json::from_slice(payload)?;
        ids.push(
            value["sale_id"]
                .as_str()
                .context("a sale_completed payload has no sale_id")?
                .to_string(),
        );
    }
    Ok(ids)
}

/// The gateway-signed configuration the lane applied (`meta` key `terminal_config`), as JSON
/// (`{config, signature}`), or None before one was applied.
pub fn lane_config(db: &Path) -> anyhow::Result<Option<Value>> {
    use rusqlite::OptionalExtension;
    let connection = open(db)?;
    let text: Option<String> = connection
        .query_row(
            "SELECT value FROM meta WHERE key = 'terminal_config'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    text.map(|text| serde_json::from_str(&text).context("the stored configuration is not JSON"))
        .transpose()
}
