//! Crash safety, a test and not a hope: the real `lanepay agent` sells as fast as it answers
//! and is killed with SIGKILL at random moments, `KILLS` times (default 200). After every kill
//! the database must pass `PRAGMA integrity_check` and `lanepay journal verify` (the entries
//! new since the last kill), and every sale the local API reported completed must be there
//! exactly once, with its total, in the sales table and in the journal. Replay a run with
//! `SEED=<the printed seed>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use lanepay_tests::binary::built_binary;
use lanepay_tests::client::{ApiError, LaneClient};
use lanepay_tests::lane::{LaneDir, RunningAgent};
use lanepay_tests::money::{format_fen, parse_fen};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::mpsc;

/// Kills per run unless `KILLS` says otherwise (the issue asks for at least 200 in CI).
const DEFAULT_KILLS: u32 = 200;
/// The fault: SIGKILL this long after selling starts, up to one of these bounds (picked at
/// random each time). Short delays land in the restart's resumption and in scans, longer ones
/// in tender commits (a few ms each with `synchronous=FULL`, tens on a busy CI disk) after
/// some sales have completed; spreading the draw over both keeps every moment covered.
const KILL_DELAY_MAX_MS: [u64; 3] = [10, 60, 250];
/// Never sooner than this: a kill before the first request is sent tests nothing.
const KILL_DELAY_MIN_MS: u64 = 2;
/// From this many kills on, a run without a single completed sale is a failure.
const MIN_KILLS_FOR_A_SALE: u32 = 20;
/// Items per sale.
const SCANS_PER_SALE: std::ops::RangeInclusive<u32> = 1..=6;
/// Demo catalog GTINs (`lanepay init --demo-catalog`).
const DEMO_GTINS: [&str; 5] = [
    "6901234567892",
    "6920000000012",
    "6930000000011",
    "6940000000010",
    "96385074",
];
/// How long the selling task may take to notice its lane died.
const DRIVER_END_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to a freshly started lane may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A sale the local API reported completed: it must survive every crash that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConfirmedSale {
    sale_id: String,
    receipt_no: String,
    total_fen: i64,
    /// Completed after a restart, by paying what a resumed split-tender sale still owed.
    resumed: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_sales_survive_sigkill() {
    let kills = env_number("KILLS").unwrap().map_or(DEFAULT_KILLS, |n| {
        u32::try_from(n).expect("KILLS fits in 32 bits")
    });
    let seed = env_number("SEED")
        .unwrap()
        .unwrap_or_else(|| rand::rng().random());
    println!("crash test: {kills} kills, seed {seed} (replay with SEED={seed} KILLS={kills})");
    let data = KeepOnFailure(Some(
        tempfile::Builder::new()
            .prefix("lanepay-crash-")
            .tempdir()
            .unwrap(),
    ));
    let path = data.path();
    if let Err(error) = run(kills, seed, &path).await {
        panic!("crash test failed (seed {seed}): {error:#}");
    }
}

async fn run(kills: u32, seed: u64, data: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let binary = built_binary("lanepay")?;
    let lane = LaneDir::init(&binary, data)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut checker = Checker::default();
    let mut confirmed: HashMap<String, ConfirmedSale> = HashMap::new();
    let mut resumed = 0usize;
    let mut kills_during_tender = 0usize;
    for kill in 1..=kills {
        // Drawn up front, so a seed replays the same faults however fast the machine is.
        let delay_max_ms = KILL_DELAY_MAX_MS[rng.random_range(0..KILL_DELAY_MAX_MS.len())];
        let delay = Duration::from_millis(rng.random_range(KILL_DELAY_MIN_MS..=delay_max_ms));
        let sale_seed: u64 = rng.random();
        let life = sell_and_kill(&lane, delay, sale_seed)
            .await
            .with_context(|| format!("kill {kill} of {kills}"))?;
        kills_during_tender += usize::from(life.killed_during_tender);
        for sale in life.confirmed {
            resumed += usize::from(sale.resumed);
            if let Some(earlier) = confirmed.insert(sale.sale_id.clone(), sale.clone()) {
                bail!(
                    "kill {kill}: the API reported sale {} completed twice ({earlier:?}, then {sale:?})",
                    sale.sale_id
                );
            }
        }
        checker
            .after_kill(&lane, &confirmed)
            .with_context(|| format!("checking the database after kill {kill} of {kills}"))?;
    }
    // Enough kills and not one sale completed means the test exercised nothing.
    ensure!(
        kills < MIN_KILLS_FOR_A_SALE || !confirmed.is_empty(),
        "{kills} kills and no sale ever completed: the lane is too slow or the test is broken"
    );
    let full = checker.finish(&lane, &confirmed)?;
    let total_fen: i64 = confirmed.values().map(|s| s.total_fen).sum();
    println!(
        "crash test: {kills} kills ({kills_during_tender} with a tender awaiting its reply), \
         {} sales confirmed ({resumed} completed after a restart, {} in all), {} journal \
         entries verified after kills, full verify: {full}; seed {seed}; {:.1?}",
        confirmed.len(),
        format_fen(total_fen),
        checker.entries_verified,
        started.elapsed()
    );
    Ok(())
}

/// What one life of the lane left behind.
#[derive(Debug)]
struct Life {
    /// The sales the API reported completed before the lane died.
    confirmed: Vec<ConfirmedSale>,
    /// The kill came while a tender was sent and not yet answered: the commit may or may not
    /// have happened, the hardest moment for the lane.
    killed_during_tender: bool,
}

/// One life of the lane: start it, sell until the random moment, SIGKILL it.
async fn sell_and_kill(lane: &LaneDir, delay: Duration, sale_seed: u64) -> anyhow::Result<Life> {
    let agent = lane.start().await?;
    let client = tokio::time::timeout(
        CONNECT_TIMEOUT,
        LaneClient::connect(agent.url(), lane.token()),
    )
    .await
    .with_context(|| format!("connecting took more than {CONNECT_TIMEOUT:?}"))?
    .with_context(|| {
        format!(
            "cannot connect to {}; agent log:\n{}",
            agent.url(),
            agent.log()
        )
    })?;
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let tender_in_flight = Arc::new(AtomicBool::new(false));
    let selling = tokio::spawn(sell_until_killed(
        client,
        StdRng::seed_from_u64(sale_seed),
        sender,
        tender_in_flight.clone(),
    ));
    tokio::time::sleep(delay).await;
    if selling.is_finished() {
        // It only ends when the connection breaks; before the kill that is a failure.
        let outcome = selling.await?;
        return Err(stopped_selling(outcome, &agent));
    }
    let killed_during_tender = tender_in_flight.load(Ordering::SeqCst);
    let log = agent.kill().await?;
    let outcome = tokio::time::timeout(DRIVER_END_TIMEOUT, selling)
        .await
        .with_context(|| {
            format!("selling went on for {DRIVER_END_TIMEOUT:?} after the lane was killed")
        })??;
    match outcome {
        Err(error)
            if error
                .downcast_ref::<ApiError>()
                .is_some_and(ApiError::is_connection_lost) => {}
        Err(error) => return Err(error.context(format!("agent log:\n{log}"))),
        Ok(never) => match never {},
    }
    ensure!(
        !log.contains("panicked"),
        "the agent panicked; its log:\n{log}"
    );
    let mut confirmed = Vec::new();
    while let Ok(sale) = receiver.try_recv() {
        confirmed.push(sale);
    }
    Ok(Life {
        confirmed,
        killed_during_tender,
    })
}

fn stopped_selling(
    outcome: anyhow::Result<std::convert::Infallible>,
    agent: &RunningAgent,
) -> anyhow::Error {
    let error = match outcome {
        Err(error) => error,
        Ok(never) => match never {},
    };
    error.context(format!(
        "selling stopped before the kill; agent log:\n{}",
        agent.log()
    ))
}

/// Finishes a sale a restart resumed, then sells until the connection breaks. Every sale the
/// API reports completed goes to `confirmed` the moment the reply is read.
async fn sell_until_killed(
    mut client: LaneClient,
    mut rng: StdRng,
    confirmed: mpsc::UnboundedSender<ConfirmedSale>,
    tender_in_flight: Arc<AtomicBool>,
) -> anyhow::Result<std::convert::Infallible> {
    let cart = client.get_cart().await?;
    match text(&cart, "state")? {
        "none" => {}
        "tendering" => {
            let total_fen = parse_fen(text(&cart, "total")?)?;
            let remaining_fen = parse_fen(text(&cart, "remaining")?)?;
            ensure!(
                remaining_fen > 0 && remaining_fen < total_fen,
                "a resumed sale owes {remaining_fen} fen of {total_fen}: {cart}"
            );
            let tender = tender_cash(&mut client, &tender_in_flight, remaining_fen).await?;
            let sale = completed(&tender, total_fen, 0, true)?;
            ensure!(
                sale.sale_id == text(&cart, "sale_id")?,
                "paid the resumed sale {cart} but {tender} completed"
            );
            let _ = confirmed.send(sale);
        }
        // Carts in progress are not kept across a restart; only sales being paid are.
        other => bail!("after a restart the cart is {other:?}: {cart}"),
    }
    loop {
        let sale = sell_one(&mut client, &mut rng, &tender_in_flight).await?;
        // The receiver lives until this task is joined; a closed channel cannot happen.
        let _ = confirmed.send(sale);
    }
}

/// 1–6 scans, then one cash tender that covers the total, or a partial one and the rest.
async fn sell_one(
    client: &mut LaneClient,
    rng: &mut StdRng,
    tender_in_flight: &AtomicBool,
) -> anyhow::Result<ConfirmedSale> {
    let scans = rng.random_range(SCANS_PER_SALE);
    let mut cart = serde_json::Value::Null;
    for _ in 0..scans {
        let code = DEMO_GTINS[rng.random_range(0..DEMO_GTINS.len())];
        cart = client.scan(code).await?;
    }
    ensure!(text(&cart, "state")? == "open", "after scanning: {cart}");
    let total_fen = parse_fen(text(&cart, "total")?)?;
    ensure!(total_fen > 0, "a cart of demo items costs nothing: {cart}");
    if rng.random_bool(0.5) {
        let tendered_fen = covering_amount(total_fen, rng);
        let tender = tender_cash(client, tender_in_flight, tendered_fen).await?;
        completed(&tender, total_fen, tendered_fen - total_fen, false)
    } else {
        let first_fen = rng.random_range(1..total_fen);
        let tender = tender_cash(client, tender_in_flight, first_fen).await?;
        ensure!(
            tender.get("completed") == Some(&serde_json::Value::Bool(false))
                && parse_fen(text(&tender, "remaining")?)? == total_fen - first_fen,
            "{first_fen} fen of {total_fen} paid, but the lane answered {tender}"
        );
        let rest_fen = total_fen - first_fen;
        let tendered_fen = covering_amount(rest_fen, rng);
        let tender = tender_cash(client, tender_in_flight, tendered_fen).await?;
        completed(&tender, total_fen, tendered_fen - rest_fen, false)
    }
}

/// A cash tender, with `in_flight` set from sending until the reply is read (it stays set if
/// the lane dies first).
async fn tender_cash(
    client: &mut LaneClient,
    in_flight: &AtomicBool,
    amount_fen: i64,
) -> anyhow::Result<serde_json::Value> {
    in_flight.store(true, Ordering::SeqCst);
    let reply = client.tender_cash(&format_fen(amount_fen)).await?;
    in_flight.store(false, Ordering::SeqCst);
    Ok(reply)
}

/// Cash a customer hands over for `due_fen`: exact, or rounded up to a note.
fn covering_amount(due_fen: i64, rng: &mut StdRng) -> i64 {
    let round_up = |unit: i64| (due_fen + unit - 1) / unit * unit;
    match rng.random_range(0..4) {
        0 => due_fen,
        1 => round_up(100),
        2 => round_up(1_000),
        _ => round_up(10_000),
    }
}

/// Checks a tender reply that must complete the sale and turns it into a [`ConfirmedSale`].
fn completed(
    tender: &serde_json::Value,
    total_fen: i64,
    change_fen: i64,
    resumed: bool,
) -> anyhow::Result<ConfirmedSale> {
    ensure!(
        tender.get("completed") == Some(&serde_json::Value::Bool(true))
            && parse_fen(text(tender, "remaining")?)? == 0
            && parse_fen(text(tender, "change")?)? == change_fen,
        "a tender covering the rest of {total_fen} fen with {change_fen} fen change was \
         answered {tender}"
    );
    Ok(ConfirmedSale {
        sale_id: text(tender, "sale_id")?.to_string(),
        receipt_no: text(tender, "receipt_no")?.to_string(),
        total_fen,
        resumed,
    })
}

fn text<'a>(value: &'a serde_json::Value, field: &str) -> anyhow::Result<&'a str> {
    value
        .get(field)
        .and_then(serde_json::Value::as_str)
        .with_context(|| format!("no string {field:?} in {value}"))
}

/// What the checks after each kill carry forward.
#[derive(Debug, Default)]
struct Checker {
    /// Every entry up to here passed `journal verify`.
    verified_seq: u64,
    /// The hash that entry had when it was verified; it must never change.
    verified_hash: Option<Vec<u8>>,
    entries_verified: u64,
}

impl Checker {
    /// Runs while no agent is running: the database as the crash left it.
    fn after_kill(
        &mut self,
        lane: &LaneDir,
        confirmed: &HashMap<String, ConfirmedSale>,
    ) -> anyhow::Result<()> {
        let conn = open_read_only(&lane.db_path())?;
        let integrity: Vec<String> = conn
            .prepare("PRAGMA integrity_check")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        ensure!(integrity == ["ok"], "PRAGMA integrity_check: {integrity:?}");
        let (head_seq, count): (u64, u64) = conn.query_row(
            "SELECT coalesce(max(seq), 0), count(*) FROM journal",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        ensure!(
            head_seq == count,
            "the journal ends at seq {head_seq} but holds {count} entries (a gap)"
        );
        ensure!(
            head_seq >= self.verified_seq,
            "the journal shrank from seq {} to {head_seq}",
            self.verified_seq
        );
        if let Some(expected) = &self.verified_hash {
            let hash: Option<Vec<u8>> = conn
                .query_row(
                    "SELECT hash FROM journal WHERE seq = ?1",
                    [self.verified_seq],
                    |row| row.get(0),
                )
                .optional()?;
            ensure!(
                hash.as_ref() == Some(expected),
                "entry {} changed after it was verified",
                self.verified_seq
            );
        }
        let from_seq = self.verified_seq + 1;
        let verification = lane.verify_journal(from_seq)?;
        ensure!(
            verification.intact(),
            "`lanepay journal verify --from-seq {from_seq}` failed ({}): {} {}",
            verification.status,
            verification.stdout,
            verification.stderr
        );
        ensure!(
            verification.last_seq() == Some(head_seq),
            "`lanepay journal verify --from-seq {from_seq}` stopped short of seq {head_seq}: {}",
            verification.stdout
        );
        self.entries_verified += head_seq + 1 - from_seq;
        if head_seq > self.verified_seq {
            self.verified_seq = head_seq;
            self.verified_hash = Some(conn.query_row(
                "SELECT hash FROM journal WHERE seq = ?1",
                [head_seq],
                |row| row.get(0),
            )?);
        }
        check_sales(&conn, confirmed)
    }

    /// The whole journal once more, and the money to the fen. Returns verify's summary.
    fn finish(
        &self,
        lane: &LaneDir,
        confirmed: &HashMap<String, ConfirmedSale>,
    ) -> anyhow::Result<String> {
        let verification = lane.verify_journal(1)?;
        ensure!(
            verification.intact() && verification.last_seq() == Some(self.verified_seq),
            "full `lanepay journal verify` ({}, through seq {}): {} {}",
            verification.status,
            self.verified_seq,
            verification.stdout,
            verification.stderr
        );
        let conn = open_read_only(&lane.db_path())?;
        let journal = sale_completed_entries(&conn)?;
        let reported_fen: i64 = confirmed.values().map(|s| s.total_fen).sum();
        let journaled_fen: i64 = confirmed
            .keys()
            .filter_map(|id| journal.get(id))
            .flatten()
            .sum();
        ensure!(
            reported_fen == journaled_fen,
            "the API reported {} in completed sales, the journal's sale_completed entries \
             for them total {}",
            format_fen(reported_fen),
            format_fen(journaled_fen)
        );
        Ok(verification.stdout)
    }
}

/// Read-only, so the check cannot repair or change what the crash left behind.
fn open_read_only(db: &Path) -> anyhow::Result<Connection> {
    Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {} read-only", db.display()))
}

/// Every `sale_completed` entry's total, by sale id (a list, so duplicates show).
fn sale_completed_entries(conn: &Connection) -> anyhow::Result<HashMap<String, Vec<i64>>> {
    let mut entries: HashMap<String, Vec<i64>> = HashMap::new();
    let mut statement = conn.prepare(
        "SELECT json_extract(CAST(payload AS TEXT), '$.sale_id'),
                json_extract(CAST(payload AS TEXT), '$.total_fen')
         FROM journal WHERE kind = 'sale_completed'",
    )?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let sale_id: Option<String> = row.get(0)?;
        let total_fen: Option<i64> = row.get(1)?;
        let (Some(sale_id), Some(total_fen)) = (sale_id, total_fen) else {
            bail!("a sale_completed entry without sale_id or total_fen");
        };
        entries.entry(sale_id).or_default().push(total_fen);
    }
    Ok(entries)
}

/// Every reported sale exactly once, with its total, in the sales table and the journal; and
/// the two agree on which sales completed (they are written in one transaction).
fn check_sales(
    conn: &Connection,
    confirmed: &HashMap<String, ConfirmedSale>,
) -> anyhow::Result<()> {
    let mut sales: HashMap<String, (String, String, i64)> = HashMap::new();
    let mut statement = conn.prepare("SELECT sale_id, receipt_no, state, total_fen FROM sales")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        sales.insert(row.get(0)?, (row.get(1)?, row.get(2)?, row.get(3)?));
    }
    let journal = sale_completed_entries(conn)?;
    for sale in confirmed.values() {
        let Some((receipt_no, state, total_fen)) = sales.get(&sale.sale_id) else {
            bail!("LOST: reported completed, no sales row: {sale:?}");
        };
        ensure!(
            state == "completed" && *total_fen == sale.total_fen && *receipt_no == sale.receipt_no,
            "reported completed as {sale:?}, the sales row says {state}, {total_fen} fen, \
             receipt {receipt_no}"
        );
        match journal.get(&sale.sale_id).map(Vec::as_slice) {
            Some([total_fen]) => ensure!(
                *total_fen == sale.total_fen,
                "reported {sale:?}, its sale_completed entry says {total_fen} fen"
            ),
            None => bail!("LOST: reported completed, no sale_completed entry: {sale:?}"),
            Some(totals) => bail!(
                "DUPLICATED: {} sale_completed entries ({totals:?}) for {sale:?}",
                totals.len()
            ),
        }
    }
    for (sale_id, totals) in &journal {
        ensure!(
            totals.len() == 1,
            "DUPLICATED: {} sale_completed entries for {sale_id}",
            totals.len()
        );
        ensure!(
            sales
                .get(sale_id)
                .is_some_and(|(_, state, _)| state == "completed"),
            "the journal completed {sale_id}, the sales table does not: {:?}",
            sales.get(sale_id)
        );
    }
    let completed_rows = sales
        .values()
        .filter(|(_, state, _)| state == "completed")
        .count();
    ensure!(
        completed_rows == journal.len(),
        "{completed_rows} completed sales rows, {} sale_completed entries",
        journal.len()
    );
    Ok(())
}

/// A whole number from the environment, if set.
fn env_number(name: &str) -> anyhow::Result<Option<u64>> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{name}={value:?} is not a whole number")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {name}")),
    }
}

/// The data directory, kept (and named) when the test fails so the crash can be examined.
struct KeepOnFailure(Option<tempfile::TempDir>);

impl KeepOnFailure {
    fn path(&self) -> PathBuf {
        self.0
            .as_ref()
            .map(|dir| dir.path().to_path_buf())
            .unwrap_or_default()
    }
}

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!(
                "data directory kept for inspection: {}",
                dir.keep().display()
            );
        }
    }
}
