//! Sync backlog drain benchmark (issue 4): a lane database holding 100,000 unacknowledged
//! journal entries is synced by the real `lanepay agent` to a fresh real `lanepay-gateway`
//! over loopback. Prints entries/s, the raw ed25519 verify rate measured in the same run on
//! the same entries, their ratio, and the gateway's memory while draining.
//! `cargo bench -p lanepay-tests --bench sync_drain`; `BENCH_ENTRIES=` to change the size.
//! This is a benchmark, not a test: a missed target is reported, never asserted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ed25519_dalek::{Signature, Verifier};
use lanepay_sync::journal::{EntryDraft, GENESIS_PREV_HASH};
use lanepay_tests::terminal::{now_ms, sale_payload};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

// The lane's bench helpers (load average, percentiles, BENCH_SCALE); this bench uses a part.
#[allow(dead_code)]
#[path = "../../agent/benches/support/mod.rs"]
mod support;

/// Scratch space under the target directory: on the project's disk, never a tmpfs.
const SCRATCH_ROOT: &str = env!("CARGO_TARGET_TMPDIR");
/// Entries in the backlog unless `BENCH_ENTRIES` says otherwise.
const DEFAULT_ENTRIES: u64 = 100_000;
/// Signatures verified for the raw rate (a few seconds of work).
const RAW_VERIFIES: usize = 20_000;
/// Targets of issue 4.
const TARGET_ENTRIES_PER_SECOND: u64 = 5_000;
const TARGET_RATIO_PERMILLE: u128 = 500;
/// How long the drain may take before the bench gives up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(900);
/// How often the gateway's progress and memory are sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);
/// How long a process may take to print its first line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let entries: u64 = match std::env::var("BENCH_ENTRIES") {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("BENCH_ENTRIES={text}"))?,
        Err(_) => DEFAULT_ENTRIES,
    };
    let (lanepay, gateway) = build_release_binaries()?;
    let scratch = tempfile::Builder::new()
        .prefix("lanepay-sync-drain-")
        .tempdir_in(SCRATCH_ROOT)?;
    let root = scratch.path();
    println!("Sync backlog drain benchmark");
    println!(
        "  binaries: {} and {}",
        lanepay.display(),
        gateway.display()
    );
    println!("  scratch:  {}", root.display());
    println!("  load average at start: {}", support::load_average());

    // A fresh gateway with one merchant, and a lane enrolled with it.
    let gateway_data = root.join("gateway");
    std::fs::create_dir_all(&gateway_data)?;
    run(Command::new(&gateway)
        .args([
            "merchant",
            "add",
            "--id",
            "M1001",
            "--name",
            "Bench",
            "--sign-type",
            "HMAC-SHA256",
            "--notify-host",
            "127.0.0.1",
            "--data",
        ])
        .arg(&gateway_data))?;
    let token_output = run(Command::new(&gateway)
        .args([
            "token",
            "create",
            "--store",
            "S001",
            "--valid-days",
            "7",
            "--data",
        ])
        .arg(&gateway_data))?;
    let token = token_output
        .lines()
        .last()
        .context("no token")?
        .trim()
        .to_string();
    let mut gateway_process = Process::start(
        Command::new(&gateway)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&gateway_data)
            .env("RUST_LOG", "warn"),
        &root.join("gateway.log"),
    )?;
    let gateway_url = format!("http://{}", gateway_process.first_line.trim());
    let lane_data = root.join("lane");
    run(Command::new(&lanepay)
        .args([
            "enroll",
            "--gateway",
            &gateway_url,
            "--token",
            &token,
            "--data",
        ])
        .arg(&lane_data))?;
    set_listen_any_port(&lane_data)?;

    // The backlog: real signed sale entries written straight into the lane's journal while
    // the agent is not running (as a lane offline for weeks would have them).
    let config: toml::Table = std::fs::read_to_string(lane_data.join("agent.toml"))?.parse()?;
    let terminal = config.get("terminal").context("no [terminal]")?;
    let terminal_id = terminal
        .get("id")
        .and_then(toml::Value::as_str)
        .context("no terminal id")?
        .to_string();
    let store_id = terminal
        .get("store_id")
        .and_then(toml::Value::as_str)
        .context("no store id")?
        .to_string();
    let key_hex = std::fs::read_to_string(lane_data.join("terminal.key"))?;
    let seed: [u8; 32] = hex::decode(key_hex.trim())?
        .try_into()
        .map_err(|_| anyhow::anyhow!("terminal.key is not 32 bytes of hex"))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let db_path = lane_data.join("lane.db");
    let generation = Instant::now();
    let mut expected_cash_fen = 0i64;
    let mut payload_bytes = 0;
    let last_seq;
    {
        // The journal table exactly as the lane appends to it (agent/src/store/journal.rs),
        // in one transaction.
        let mut conn = Connection::open(&db_path)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at_ms = now_ms();
        // Enrollment journals the store configuration it applied: the backlog follows it.
        let (head_seq, mut prev_hash) = journal_head(&tx)?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO journal (seq, terminal_id, kind, created_at_ms, prev_hash, payload, hash, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for n in 1..=entries {
                let seq = head_seq + n;
                let amount_fen = 100 + i64::try_from(n % 5_000)?;
                expected_cash_fen += amount_fen;
                let payload = sale_payload(
                    &format!("{terminal_id}-{n:07}"),
                    &store_id,
                    amount_fen,
                    "cash",
                    at_ms,
                )?;
                payload_bytes = payload.len();
                let entry = EntryDraft {
                    terminal_id: terminal_id.clone(),
                    seq,
                    kind: "sale_completed".into(),
                    created_at_ms: at_ms,
                    prev_hash,
                    payload,
                }
                .sign(&key)?;
                prev_hash = entry.hash;
                insert.execute(params![
                    i64::try_from(seq)?,
                    entry.terminal_id,
                    entry.kind,
                    entry.created_at_ms,
                    &entry.prev_hash[..],
                    entry.payload,
                    &entry.hash[..],
                    &entry.signature[..],
                ])?;
            }
        }
        tx.commit()?;
        last_seq = head_seq + entries;
    }
    println!(
        "  {entries} entries ({payload_bytes} payload bytes each) written in {:.1?}",
        generation.elapsed()
    );

    // The raw verify rate, on the same signatures, single thread (the gateway ingests one
    // terminal's chain in order on one connection).
    let raw_rate = raw_verify_rate(&db_path, &key.verifying_key())?;
    println!("  raw ed25519 verify: {raw_rate} signatures/s");

    let gateway_pid = gateway_process.child.id();
    let (rss_idle, _) = memory_bytes(gateway_pid)?;
    let terminals_db = gateway_data.join("terminals.sqlite");
    let started = Instant::now();
    let mut lane_process = Process::start(
        Command::new(&lanepay)
            .arg("agent")
            .arg("--data")
            .arg(&lane_data),
        &root.join("agent.log"),
    )?;
    let mut peak_rss = 0;
    let mut first_stored_at = None;
    let mut samples = 0u64;
    let drained_in = loop {
        let stored = gateway_last_seq(&terminals_db, &terminal_id).unwrap_or(0);
        let (rss, _) = memory_bytes(gateway_pid)?;
        peak_rss = peak_rss.max(rss);
        samples += 1;
        if stored > 0 && first_stored_at.is_none() {
            first_stored_at = Some(started.elapsed());
        }
        if stored >= last_seq {
            break started.elapsed();
        }
        if started.elapsed() > DRAIN_TIMEOUT {
            bail!("the gateway stored up to seq {stored} of {last_seq} in {DRAIN_TIMEOUT:?}");
        }
        if let Some(status) = lane_process.child.try_wait()? {
            bail!(
                "the agent ended ({status}); see {}",
                root.join("agent.log").display()
            );
        }
        std::thread::sleep(SAMPLE_INTERVAL);
    };
    let (_, hwm) = memory_bytes(gateway_pid)?;
    let ledger_cash = ledger_cash_fen(&terminals_db, &terminal_id)?;
    lane_process.stop();
    gateway_process.stop();

    let rate = u128::from(entries) * 1_000_000 / drained_in.as_micros().max(1);
    let steady = first_stored_at.map(|first| drained_in.saturating_sub(first));
    let ratio_permille = rate * 1000 / u128::from(raw_rate.max(1));
    println!("  load average at end: {}", support::load_average());
    println!("\n| figure | value | target | met |");
    println!("|---|---|---|---|");
    println!(
        "| backlog | {entries} entries of {payload_bytes} payload bytes (a one-line cash sale) | — | |"
    );
    println!(
        "| drain: agent spawn → gateway last_acknowledged_seq = {last_seq} | {drained_in:.2?} (first entry stored after {:.2?}) | — | |",
        first_stored_at.unwrap_or_default()
    );
    println!(
        "| drain rate | {rate} entries/s{} | ≥ {TARGET_ENTRIES_PER_SECOND} entries/s | {} |",
        steady.map_or(String::new(), |s| format!(
            " ({} entries/s from the first stored entry on)",
            u128::from(entries) * 1_000_000 / s.as_micros().max(1)
        )),
        met(rate >= u128::from(TARGET_ENTRIES_PER_SECOND))
    );
    println!(
        "| raw ed25519 verify (same run, one thread, {RAW_VERIFIES} entries) | {raw_rate} signatures/s | — | |"
    );
    println!(
        "| ratio drain / raw verify | {}.{:03} | ≥ 0.500 | {} |",
        ratio_permille / 1000,
        ratio_permille % 1000,
        met(ratio_permille >= TARGET_RATIO_PERMILLE)
    );
    println!(
        "| gateway VmRSS idle → peak while draining ({samples} samples), VmHWM at the end | {} → {}, {} | bounded | |",
        megabytes(rss_idle),
        megabytes(peak_rss),
        megabytes(hwm)
    );
    println!(
        "| ledger cash total equals the backlog's | {ledger_cash} fen vs {expected_cash_fen} fen | equal | {} |",
        met(ledger_cash == expected_cash_fen)
    );
    Ok(())
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "NOT MET" }
}

/// `cargo build --release` of the two binaries; returns their paths next to this bench.
fn build_release_binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--bins",
            "-p",
            "lanepay-agent",
            "-p",
            "lanepay-gateway",
        ])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed ({status})");
    }
    Ok((
        lanepay_tests::binary::built_binary("lanepay")?,
        lanepay_tests::binary::built_binary("lanepay-gateway")?,
    ))
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output().context("cannot run a command")?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `lanepay enroll` writes the default local API port; the bench takes any free one.
fn set_listen_any_port(lane_data: &Path) -> anyhow::Result<()> {
    let path = lane_data.join("agent.toml");
    let mut config: toml::Table = std::fs::read_to_string(&path)?.parse()?;
    config
        .get_mut("local_api")
        .and_then(toml::Value::as_table_mut)
        .context("no [local_api]")?
        .insert("listen".into(), toml::Value::String("127.0.0.1:0".into()));
    std::fs::write(&path, toml::to_string(&config)?)?;
    Ok(())
}

struct Process {
    child: Child,
    first_line: String,
}

impl Process {
    fn start(command: &mut Command, log: &Path) -> anyhow::Result<Process> {
        use std::io::BufRead;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("cannot start a process")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = sender.send(lines.next());
            for _ in lines {}
        });
        let first_line = match receiver.recv_timeout(START_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            _ => bail!("no first line; see {}", log.display()),
        };
        Ok(Process { child, first_line })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn raw_verify_rate(db: &Path, key: &ed25519_dalek::VerifyingKey) -> anyhow::Result<u64> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut statement =
        conn.prepare("SELECT hash, signature FROM journal ORDER BY seq LIMIT ?1")?;
    let pairs: Vec<(Vec<u8>, [u8; 64])> = statement
        .query_map([RAW_VERIFIES as i64], |row| {
            let signature: Vec<u8> = row.get(1)?;
            Ok((row.get(0)?, signature.try_into().unwrap_or([0; 64])))
        })?
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    for (hash, signature) in &pairs {
        key.verify(hash, &Signature::from_bytes(signature))
            .context("a generated entry does not verify")?;
    }
    let elapsed = started.elapsed();
    Ok(u64::try_from(
        pairs.len() as u128 * 1_000_000 / elapsed.as_micros().max(1),
    )?)
}

/// The lane journal's last sequence number and hash (0 and the genesis hash when empty).
fn journal_head(conn: &Connection) -> anyhow::Result<(u64, [u8; 32])> {
    let head: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    match head {
        None => Ok((0, GENESIS_PREV_HASH)),
        Some((seq, hash)) => Ok((
            u64::try_from(seq)?,
            hash.try_into()
                .map_err(|_| anyhow::anyhow!("the journal's last hash is not 32 bytes"))?,
        )),
    }
}

fn gateway_last_seq(terminals_db: &Path, terminal_id: &str) -> anyhow::Result<u64> {
    let conn = Connection::open_with_flags(terminals_db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(1))?;
    let seq: i64 = conn.query_row(
        "SELECT last_seq FROM terminals WHERE terminal_id = ?1",
        [terminal_id],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(seq)?)
}

fn ledger_cash_fen(terminals_db: &Path, terminal_id: &str) -> anyhow::Result<i64> {
    let conn = Connection::open_with_flags(terminals_db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row(
        "SELECT coalesce(sum(sales_fen - refunds_fen), 0) FROM ledger WHERE terminal_id = ?1 AND method = 'cash'",
        [terminal_id],
        |r| r.get(0),
    )?)
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
fn memory_bytes(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kibibytes: u64 = line
            .trim_start_matches(name)
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kibibytes * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn megabytes(bytes: u64) -> String {
    let tenths = bytes / 100_000;
    format!("{}.{} MB", tenths / 10, tenths % 10)
}
