//! `lanepay journal verify|export`: offline checks of a lane database file.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use ed25519_dalek::VerifyingKey;
use lanepay_agent::store::{self, journal};

#[derive(Debug, clap::Subcommand)]
pub enum JournalCommand {
    /// Check sequence continuity, the hash chain and every signature.
    Verify {
        /// The lane database (lane.db in the data directory).
        #[arg(long)]
        db: PathBuf,
        /// Check only from this sequence on, trusting the entries before it.
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
        /// Pin the terminal's public key (hex) instead of trusting the one stored in the file.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Write the journal as JSON lines on standard output.
    Export {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
    },
}

pub fn run(command: JournalCommand) -> anyhow::Result<ExitCode> {
    match command {
        JournalCommand::Verify {
            db,
            from_seq,
            public_key,
        } => verify(&db, from_seq, public_key.as_deref()),
        JournalCommand::Export { db, from_seq } => export(&db, from_seq),
    }
}

fn open(db: &std::path::Path) -> anyhow::Result<rusqlite::Connection> {
    if !db.exists() {
        bail!("{} does not exist", db.display());
    }
    Ok(store::open_read_only(db)?)
}

fn verify(
    db: &std::path::Path,
    from_seq: u64,
    pinned_key: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let conn = open(db)?;
    let terminal_id = store::meta(&conn, "terminal_id")?
        .context("the database names no terminal (not a lane database?)")?;
    let key_hex = match pinned_key {
        Some(key) => key.to_string(),
        None => store::meta(&conn, "public_key")?
            .context("the database holds no public key; pass --public-key")?,
    };
    let key_bytes: [u8; 32] = hex::decode(key_hex.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("the public key must be 64 hex characters")?;
    let key = VerifyingKey::from_bytes(&key_bytes).context("not a valid ed25519 public key")?;
    match journal::verify(&conn, &terminal_id, key, from_seq)? {
        journal::Verification::Intact {
            first_seq,
            last_seq,
            entries,
        } => {
            println!(
                "journal intact: terminal {terminal_id}, {entries} entries checked (seq {first_seq}..={last_seq})"
            );
            Ok(ExitCode::SUCCESS)
        }
        journal::Verification::Broken { seq, reason } => {
            println!("journal BROKEN at seq {seq}: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn export(db: &std::path::Path, from_seq: u64) -> anyhow::Result<ExitCode> {
    let conn = open(db)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut next = from_seq.max(1);
    loop {
        let chunk = journal::read_from(&conn, next, journal::READ_CHUNK_ENTRIES)?;
        let Some(last) = chunk.last() else { break };
        next = last.seq + 1;
        for entry in &chunk {
            let payload: serde_json::Value =
                serde_json::from_slice(&entry.payload).unwrap_or(serde_json::Value::Null);
            let line = serde_json::json!({
                "seq": entry.seq,
                "terminal_id": entry.terminal_id,
                "kind": entry.kind,
                "created_at_ms": entry.created_at_ms,
                "prev_hash": hex::encode(entry.prev_hash),
                "hash": hex::encode(entry.hash),
                "signature": hex::encode(entry.signature),
                "payload": payload,
            });
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
