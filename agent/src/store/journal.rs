//! The journal table: appending signed entries inside the caller's transaction, the outbox
//! of entries the gateway has not acknowledged, and verification of the stored chain.

use ed25519_dalek::{SigningKey, VerifyingKey};
use lanepay_sync::journal::{
    ChainVerifier, EntryDraft, EntryError, GENESIS_PREV_HASH, SignedEntry,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::StoreError;

/// Entries read per query while verifying or exporting, so memory stays flat for any size of
/// journal.
pub const READ_CHUNK_ENTRIES: u64 = 2_000;

/// The last entry's sequence number and hash (0 and the genesis hash when empty).
pub fn head(conn: &Connection) -> Result<(u64, [u8; 32]), StoreError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        None => Ok((0, GENESIS_PREV_HASH)),
        Some((seq, hash)) => Ok((to_seq(seq)?, to_hash(hash)?)),
    }
}

/// Signs and appends one entry. Call inside the transaction that writes the state the entry
/// records: the two commit together or not at all.
pub fn append(
    conn: &Connection,
    key: &SigningKey,
    terminal_id: &str,
    kind: &str,
    payload: Vec<u8>,
    now_ms: i64,
) -> Result<SignedEntry, StoreError> {
    let (last_seq, last_hash) = head(conn)?;
    let entry = EntryDraft {
        terminal_id: terminal_id.to_string(),
        seq: last_seq + 1,
        kind: kind.to_string(),
        created_at_ms: now_ms,
        prev_hash: last_hash,
        payload,
    }
    .sign(key)?;
    conn.prepare_cached(
        "INSERT INTO journal (seq, terminal_id, kind, created_at_ms, prev_hash, payload, hash, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        entry.seq as i64,
        entry.terminal_id,
        entry.kind,
        entry.created_at_ms,
        &entry.prev_hash[..],
        entry.payload,
        &entry.hash[..],
        &entry.signature[..],
    ])?;
    Ok(entry)
}

fn to_seq(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Damaged(format!("negative journal sequence {seq}")))
}

fn to_hash(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Damaged("journal hash is not 32 bytes".into()))
}

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

type RawEntry = (i64, String, String, i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

fn to_entry(raw: RawEntry) -> Result<SignedEntry, StoreError> {
    let (seq, terminal_id, kind, created_at_ms, prev_hash, payload, hash, signature) = raw;
    Ok(SignedEntry {
        terminal_id,
        seq: to_seq(seq)?,
        kind,
        created_at_ms,
        prev_hash: to_hash(prev_hash)?,
        payload,
        hash: to_hash(hash)?,
        signature: signature.try_into().map_err(|_| {
            StoreError::Damaged(format!("signature of entry {seq} is not 64 bytes"))
        })?,
    })
}

/// Entries with `from_seq ≤ seq`, in order, at most `limit`.
pub fn read_from(
    conn: &Connection,
    from_seq: u64,
    limit: u64,
) -> Result<Vec<SignedEntry>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT seq, terminal_id, kind, created_at_ms, prev_hash, payload, hash, signature
         FROM journal WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
    )?;
    let raws = statement
        .query_map(params![from_seq as i64, limit as i64], entry_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter().map(to_entry).collect()
}

/// The last `count` entries, oldest first.
pub fn tail(conn: &Connection, count: u64) -> Result<Vec<SignedEntry>, StoreError> {
    let (last, _) = head(conn)?;
    read_from(conn, last.saturating_sub(count) + 1, count)
}

/// The outbox: entries the gateway has not acknowledged, in order, at most `limit`.
pub fn outbox(conn: &Connection, limit: u64) -> Result<Vec<SignedEntry>, StoreError> {
    read_from(conn, acknowledged(conn)? + 1, limit)
}

/// How many entries wait in the outbox.
pub fn outbox_len(conn: &Connection) -> Result<u64, StoreError> {
    let (last, _) = head(conn)?;
    Ok(last - acknowledged(conn)?.min(last))
}

/// The highest sequence the gateway acknowledged.
pub fn acknowledged(conn: &Connection) -> Result<u64, StoreError> {
    let seq: i64 = conn.query_row("SELECT acked_seq FROM outbox_ack WHERE id = 1", [], |r| {
        r.get(0)
    })?;
    to_seq(seq)
}

#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("acknowledgement for entry {0}, which this lane never wrote")]
    UnknownEntry(u64),
    #[error(
        "acknowledgement for entry {0} carries a different hash: the gateway holds another chain"
    )]
    HashMismatch(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records the gateway's (already verified) acknowledgement of every entry up to `seq`, whose
/// hash must be `hash`. Acknowledgements only move forward; an older one changes nothing.
pub fn mark_acknowledged(
    conn: &Connection,
    seq: u64,
    hash: [u8; 32],
    now_ms: i64,
) -> Result<(), AckError> {
    let stored: Option<Vec<u8>> = conn
        .query_row(
            "SELECT hash FROM journal WHERE seq = ?1",
            [seq as i64],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::from)?;
    let stored = stored.ok_or(AckError::UnknownEntry(seq))?;
    if stored != hash {
        return Err(AckError::HashMismatch(seq));
    }
    conn.execute(
        "UPDATE outbox_ack SET acked_seq = ?1, acked_hash = ?2, acked_at_ms = ?3 WHERE id = 1 AND acked_seq < ?1",
        params![seq as i64, &hash[..], now_ms],
    )
    .map_err(StoreError::from)?;
    Ok(())
}

/// The result of checking a stored journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Intact {
        first_seq: u64,
        last_seq: u64,
        entries: u64,
    },
    Broken {
        seq: u64,
        reason: String,
    },
}

/// Checks entries from `from_seq` to the end: sequence continuity, hash chain and every
/// signature. Entries before `from_seq` are trusted (already verified earlier), and the chain
/// resumes from the hash stored for `from_seq - 1`.
pub fn verify(
    conn: &Connection,
    terminal_id: &str,
    key: VerifyingKey,
    from_seq: u64,
) -> Result<Verification, StoreError> {
    let from_seq = from_seq.max(1);
    let mut verifier = if from_seq == 1 {
        ChainVerifier::from_genesis(terminal_id, key)
    } else {
        let previous: Option<Vec<u8>> = conn
            .query_row(
                "SELECT hash FROM journal WHERE seq = ?1",
                [(from_seq - 1) as i64],
                |r| r.get(0),
            )
            .optional()?;
        match previous {
            Some(hash) => ChainVerifier::resume(terminal_id, key, from_seq - 1, to_hash(hash)?),
            None => {
                return Ok(Verification::Broken {
                    seq: from_seq - 1,
                    reason: "entry is missing (cannot resume the chain there)".into(),
                });
            }
        }
    };
    let mut next = from_seq;
    let mut entries = 0;
    loop {
        let chunk = match read_from(conn, next, READ_CHUNK_ENTRIES) {
            Ok(chunk) => chunk,
            Err(StoreError::Damaged(reason)) => {
                return Ok(Verification::Broken { seq: next, reason });
            }
            Err(other) => return Err(other),
        };
        if chunk.is_empty() {
            break;
        }
        for entry in &chunk {
            if let Err(error) = verifier.push(entry) {
                let seq = match error {
                    EntryError::SequenceGap { expected, .. } => expected,
                    _ => entry.seq,
                };
                return Ok(Verification::Broken {
                    seq,
                    reason: error.to_string(),
                });
            }
            entries += 1;
        }
        next = verifier.last_seq() + 1;
    }
    Ok(Verification::Intact {
        first_seq: from_seq,
        last_seq: verifier.last_seq(),
        entries,
    })
}
