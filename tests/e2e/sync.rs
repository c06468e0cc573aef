//! The terminal ↔ gateway sync protocol end to end (issue 4's tests), on the real
//! `lanepay-gateway` and `lanepay` binaries over loopback: enrollment and revocation, signed
//! requests (skew, replay, wrong key, tampering), a lane whose clock is wrong, forged and
//! forked entries, crashes between "gateway stored" and "lane marked acknowledged", and a
//! fault-injecting proxy with restarts (`SYNC_SALES=`, `SEED=` to replay; see `chaos`).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use lanepay_tests::binary::built_binary;
use lanepay_tests::books::{
    lane_acknowledged, lane_head, lane_journal, sale_ids, totals_by_method,
};
use lanepay_tests::client::LaneClient;
use lanepay_tests::gateway::{GatewayDir, Hq, RunningGateway, ledger_totals, stored_entries};
use lanepay_tests::lane::{LaneDir, RunningAgent, enroll_command};
use lanepay_tests::terminal::{
    Signing, TestTerminal, entry, now_ms, random_key, sale_payload, sales_chain,
};
use serde_json::{Value, json};

/// Demo catalog GTINs (`lanepay init --demo-catalog`).
const DEMO_GTINS: [&str; 5] = [
    "6901234567892",
    "6920000000012",
    "6930000000011",
    "6940000000010",
    "96385074",
];
/// How long a sync that should happen may take on a busy CI machine (the lane's reconnect
/// backoff is capped at 2.5 s plus jitter while the gateway is unreachable, 30 s when it
/// refused).
pub(crate) const SYNC_DEADLINE: Duration = Duration::from_secs(60);
/// How often state is polled while waiting for it.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A scratch directory kept (and named) when the test fails.
struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    fn new(prefix: &str) -> Scratch {
        Scratch(Some(
            tempfile::Builder::new().prefix(prefix).tempdir().unwrap(),
        ))
    }

    fn path(&self) -> PathBuf {
        self.0.as_ref().unwrap().path().to_path_buf()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("kept the scratch directory {}", dir.keep().display());
        }
    }
}

fn binaries() -> (PathBuf, PathBuf) {
    (
        built_binary("lanepay-gateway").unwrap(),
        built_binary("lanepay").unwrap(),
    )
}

/// Polls `check` until it returns `Some` or `deadline` passes.
pub(crate) async fn poll<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let started = Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if started.elapsed() > deadline {
            bail!(
                "{what}: not within {deadline:?} (last error: {})",
                last_error.map_or("none".into(), |e| format!("{e:#}"))
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One sale of one random demo item paid with 100.00 cash; returns the tender reply.
pub(crate) async fn sell(client: &mut LaneClient, item: usize) -> anyhow::Result<Value> {
    client.scan(DEMO_GTINS[item % DEMO_GTINS.len()]).await?;
    let tender = client.tender_cash("100.00").await?;
    ensure!(
        tender["completed"] == json!(true),
        "the sale did not complete: {tender}"
    );
    Ok(tender)
}

pub(crate) async fn connect(lane: &LaneDir, agent: &RunningAgent) -> LaneClient {
    LaneClient::connect(agent.url(), lane.token())
        .await
        .with_context(|| format!("agent log:\n{}", agent.log()))
        .unwrap()
}

/// Everything both sides must agree on once the lane's outbox is empty: every entry stored
/// exactly once with the lane's hash, no duplicate sale, the ledger equal to the lane's
/// totals to the fen, nothing alarming.
pub(crate) async fn check_books(
    lane: &LaneDir,
    gateway_dir: &GatewayDir,
    hq: &Hq,
    terminal_id: &str,
) -> anyhow::Result<(u64, BTreeMap<String, i64>)> {
    let journal = lane_journal(&lane.db_path())?;
    let head = journal.len() as u64;
    ensure!(
        journal.iter().zip(1..).all(|(e, seq)| e.seq == seq),
        "the lane's journal is not 1..={head}"
    );
    let stored = stored_entries(&gateway_dir.terminals_db(), terminal_id)?;
    ensure!(
        stored.len() as u64 == head,
        "the gateway stored {} entries, the lane wrote {head}",
        stored.len()
    );
    for (lane_entry, gateway_entry) in journal.iter().zip(&stored) {
        ensure!(
            lane_entry.seq == gateway_entry.seq && lane_entry.hash == gateway_entry.hash,
            "entry {} differs between lane and gateway (gateway seq {})",
            lane_entry.seq,
            gateway_entry.seq
        );
    }
    let gateway_sales = sale_ids(stored.iter().map(|e| (e.kind.as_str(), &e.payload[..])))?;
    let unique: HashSet<&String> = gateway_sales.iter().collect();
    ensure!(
        unique.len() == gateway_sales.len(),
        "the gateway holds a sale twice ({} sale entries, {} distinct sale ids)",
        gateway_sales.len(),
        unique.len()
    );
    let lane_totals = totals_by_method(journal.iter().map(|e| (e.kind.as_str(), &e.payload[..])))?;
    let ledger = ledger_totals(&gateway_dir.terminals_db(), terminal_id)?;
    ensure!(
        ledger == lane_totals,
        "the gateway's ledger {ledger:?} differs from the lane's totals {lane_totals:?}"
    );
    let terminal = hq.terminal(terminal_id).await?;
    ensure!(
        terminal["last_acknowledged_seq"] == json!(head) && terminal["entries"] == json!(head),
        "HQ shows {terminal} for a lane at {head}"
    );
    let hq_totals: BTreeMap<String, i64> =
        serde_json::from_value(terminal["totals_by_tender_fen"].clone())?;
    ensure!(
        hq_totals == lane_totals,
        "HQ's totals {hq_totals:?} differ from the lane's {lane_totals:?}"
    );
    let alarms = hq.alarms(terminal_id).await?;
    ensure!(alarms.is_empty(), "HQ shows alarms: {alarms:?}");
    Ok((head, lane_totals))
}

/// Waits until the gateway acknowledged the lane's whole journal and the lane marked it.
pub(crate) async fn wait_synced(
    lane: &LaneDir,
    gateway_dir: &GatewayDir,
    terminal_id: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let db = lane.db_path();
    let terminals_db = gateway_dir.terminals_db();
    poll("the lane's outbox to drain", SYNC_DEADLINE, || {
        let db = db.clone();
        let terminals_db = terminals_db.clone();
        async move {
            let head = lane_head(&db)?;
            let acknowledged = lane_acknowledged(&db)?;
            let stored = stored_entries(&terminals_db, terminal_id)?.len() as u64;
            Ok((head > 0 && acknowledged == head && stored == head).then_some(()))
        }
    })
    .await?;
    Ok(started.elapsed())
}

pub(crate) struct Fleet {
    _scratch: Scratch,
    pub(crate) root: PathBuf,
    pub(crate) lane_binary: PathBuf,
    pub(crate) gateway_dir: GatewayDir,
    pub(crate) gateway: RunningGateway,
}

pub(crate) async fn fleet(prefix: &str, gateway_args: &[&str]) -> Fleet {
    let scratch = Scratch::new(prefix);
    let root = scratch.path();
    let (gateway_binary, lane_binary) = binaries();
    let gateway_dir = GatewayDir::create(&gateway_binary, &root.join("gateway")).unwrap();
    let gateway = gateway_dir.start_with(gateway_args).await.unwrap();
    Fleet {
        _scratch: scratch,
        root,
        lane_binary,
        gateway_dir,
        gateway,
    }
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_are_single_use_expire_and_revocation_is_everywhere() {
    // A manual clock lets the token expire for real: HQ's `valid_days` is the only knob.
    let start_ms = now_ms();
    let fleet = fleet(
        "lanepay-sync-enroll-",
        &[&format!("--manual-clock-start-ms={start_ms}")],
    )
    .await;
    let hq = fleet.gateway.hq().unwrap();
    let url = fleet.gateway.url();

    // A token from the CLI enrolls a lane once.
    let token = fleet.gateway_dir.create_token("S001").unwrap();
    let lane =
        LaneDir::enroll(&fleet.lane_binary, &url, &token, &fleet.root.join("lane-1")).unwrap();
    let terminal_id = lane.terminal_id().unwrap();
    assert_eq!(terminal_id, "S001-L001");
    let listed = fleet.gateway_dir.cli(&["terminal", "list"]).unwrap();
    assert!(listed.contains("S001-L001"), "terminal list: {listed}");

    // The same token again: refused with a clear message, nothing created.
    let again =
        enroll_command(&fleet.lane_binary, &url, &token, &fleet.root.join("lane-2")).unwrap();
    assert!(!again.status.success());
    assert!(
        stderr_of(&again).contains("already used; ask HQ for a new one"),
        "reuse: {}",
        stderr_of(&again)
    );
    // A token nobody issued.
    let unknown = enroll_command(
        &fleet.lane_binary,
        &url,
        "lpe_0000000000000000000000000000000000000000",
        &fleet.root.join("lane-3"),
    )
    .unwrap();
    assert!(!unknown.status.success());
    assert!(
        stderr_of(&unknown).contains("token is unknown"),
        "unknown: {}",
        stderr_of(&unknown)
    );

    // An HQ token valid one day, used a day and a minute later: expired.
    let (status, issued) = hq.create_token("S001", 1).await.unwrap();
    assert_eq!(status, 200, "{issued}");
    let late_token = issued["token"].as_str().unwrap().to_string();
    hq.advance_clock(86_400_000 + 60_000).await.unwrap();
    let late = enroll_command(
        &fleet.lane_binary,
        &url,
        &late_token,
        &fleet.root.join("lane-4"),
    )
    .unwrap();
    assert!(!late.status.success());
    assert!(
        stderr_of(&late).contains("token expired; ask HQ for a new one"),
        "expired: {}",
        stderr_of(&late)
    );
    let fleet_view = hq.fleet().await.unwrap();
    assert_eq!(
        fleet_view["terminals"].as_array().unwrap().len(),
        1,
        "{fleet_view}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_terminal_is_refused_on_rest_and_websocket() {
    let fleet = fleet("lanepay-sync-revoke-", &[]).await;
    let hq = fleet.gateway.hq().unwrap();
    let (status, issued) = hq.create_token("S002", 7).await.unwrap();
    assert_eq!(status, 200, "{issued}");
    let terminal = TestTerminal::enroll(&fleet.gateway.url(), issued["token"].as_str().unwrap())
        .await
        .unwrap();
    let chain = sales_chain(&terminal, 2, |_| 350).unwrap();
    let accepted = terminal
        .post_journal(&chain[..1], &Signing::fresh())
        .await
        .unwrap();
    assert_eq!(accepted.status, 200, "{:?}", accepted);
    assert_eq!(terminal.open_ws(&Signing::fresh()).await.unwrap(), 101);

    let (status, revoked) = hq.revoke(&terminal.terminal_id).await.unwrap();
    assert_eq!(status, 200, "{revoked}");

    let refused = terminal
        .post_journal(&chain[1..], &Signing::fresh())
        .await
        .unwrap();
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.code(), "terminal_revoked", "{refused:?}");
    assert_eq!(terminal.open_ws(&Signing::fresh()).await.unwrap(), 403);
    let shown = hq.terminal(&terminal.terminal_id).await.unwrap();
    assert_eq!(shown["revoked"], json!(true), "{shown}");
    assert_eq!(shown["online"], json!(false), "{shown}");
    assert_eq!(shown["entries"], json!(1), "{shown}");
    let listed = fleet.gateway_dir.cli(&["terminal", "list"]).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&terminal.terminal_id) && l.trim_end().ends_with("revoked")),
        "terminal list: {listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_refuse_skew_replay_wrong_key_and_tampering() {
    let fleet = fleet("lanepay-sync-signed-", &[]).await;
    let hq = fleet.gateway.hq().unwrap();
    let (_, issued) = hq.create_token("S003", 7).await.unwrap();
    let terminal = TestTerminal::enroll(&fleet.gateway.url(), issued["token"].as_str().unwrap())
        .await
        .unwrap();
    let chain = sales_chain(&terminal, 3, |seq| 100 * seq as i64).unwrap();
    let minute = 60_000;

    for offset_ms in [-(5 * minute + 1_000), 5 * minute + 1_000] {
        let signing = Signing {
            timestamp_ms: now_ms() + offset_ms,
            ..Signing::fresh()
        };
        let refused = terminal.post_journal(&chain[..1], &signing).await.unwrap();
        assert_eq!(
            (refused.status, refused.code()),
            (401, "clock_skew"),
            "{offset_ms}: {refused:?}"
        );
        // The refusal tells the lane the gateway's time, so it can correct itself.
        let server_time = refused.server_time_ms.expect("x-lanepay-server-time");
        assert!((server_time - now_ms()).abs() < minute, "{server_time}");
        assert_eq!(terminal.open_ws(&signing).await.unwrap(), 401);
    }
    // Inside the window (4 min 50 s off) is fine.
    let inside = Signing {
        timestamp_ms: now_ms() - 5 * minute + 10_000,
        ..Signing::fresh()
    };
    let accepted = terminal.post_journal(&chain[..1], &inside).await.unwrap();
    assert_eq!(accepted.status, 200, "{accepted:?}");
    assert_eq!(accepted.body["ack"]["seq"], json!(1));

    // The very same signed request again: a replay.
    let replayed = terminal.post_journal(&chain[..1], &inside).await.unwrap();
    assert_eq!(
        (replayed.status, replayed.code()),
        (409, "replay"),
        "{replayed:?}"
    );
    // A reused nonce on a new, validly signed request: also a replay.
    let reused_nonce = Signing {
        nonce: inside.nonce.clone(),
        ..Signing::fresh()
    };
    let replayed = terminal
        .post_journal(&chain[..2], &reused_nonce)
        .await
        .unwrap();
    assert_eq!(
        (replayed.status, replayed.code()),
        (409, "replay"),
        "{replayed:?}"
    );

    // Signed by a key that is not the terminal's.
    let wrong_key = Signing {
        key: Some(random_key()),
        ..Signing::fresh()
    };
    let refused = terminal
        .post_journal(&chain[..2], &wrong_key)
        .await
        .unwrap();
    assert_eq!(
        (refused.status, refused.code()),
        (401, "bad_signature"),
        "{refused:?}"
    );
    assert_eq!(terminal.open_ws(&wrong_key).await.unwrap(), 401);

    // The body changed after signing: entry 2's amount doubled.
    let mut altered = chain[..2].to_vec();
    let payload = sale_payload(
        &format!("{}-{:06}", terminal.terminal_id, 2),
        &terminal.store_id,
        400,
        "cash",
        now_ms(),
    )
    .unwrap();
    altered[1] = entry(
        &terminal.key,
        &terminal.terminal_id,
        2,
        chain[0].hash,
        "sale_completed",
        payload,
    )
    .unwrap();
    let tampered_body = serde_json::to_vec(&lanepay_sync::wire::JournalBatch {
        entries: altered
            .iter()
            .map(lanepay_sync::wire::WireEntry::from)
            .collect(),
    })
    .unwrap();
    let tampered = Signing {
        body_sent: Some(tampered_body),
        ..Signing::fresh()
    };
    let refused = terminal.post_journal(&chain[..2], &tampered).await.unwrap();
    assert_eq!(
        (refused.status, refused.code()),
        (401, "bad_signature"),
        "{refused:?}"
    );

    // Only the one accepted request stored anything.
    let shown = hq.terminal(&terminal.terminal_id).await.unwrap();
    assert_eq!(shown["entries"], json!(1), "{shown}");
    assert_eq!(
        shown["totals_by_tender_fen"],
        json!({"cash": 100}),
        "{shown}"
    );
    // And a fresh, honest request goes through.
    let accepted = terminal
        .post_journal(&chain, &Signing::fresh())
        .await
        .unwrap();
    assert_eq!(accepted.body["ack"]["seq"], json!(3), "{accepted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_whose_clock_is_ten_minutes_off_still_syncs_and_reports_it() {
    let fleet = fleet("lanepay-sync-clock-", &[]).await;
    let token = fleet.gateway_dir.create_token("S004").unwrap();
    let lane = LaneDir::enroll(
        &fleet.lane_binary,
        &fleet.gateway.url(),
        &token,
        &fleet.root.join("lane"),
    )
    .unwrap();
    let terminal_id = lane.terminal_id().unwrap();
    let hq = fleet.gateway.hq().unwrap();
    for offset_ms in [600_000i64, -600_000] {
        let agent = lane
            .start_with(&[&format!("--clock-offset-ms={offset_ms}")])
            .await
            .unwrap();
        let mut client = connect(&lane, &agent).await;
        let mut events = connect(&lane, &agent).await;
        for item in 0..3 {
            sell(&mut client, item).await.unwrap();
        }
        wait_synced(&lane, &fleet.gateway_dir, &terminal_id)
            .await
            .with_context(|| format!("clock {offset_ms} ms off; agent log:\n{}", agent.log()))
            .unwrap();
        // The lane reports its skew (gateway minus lane clock) on the local API.
        let reported = async {
            loop {
                let event = events.next_event().await?;
                if event["type"] == "sync_status"
                    && let Some(skew) = event["clock_skew_ms"].as_i64()
                    && (skew + offset_ms).abs() < 60_000
                {
                    return anyhow::Ok(skew);
                }
            }
        };
        let reported = tokio::time::timeout(SYNC_DEADLINE, reported)
            .await
            .with_context(|| format!("no sync_status reported a skew near {}", -offset_ms))
            .unwrap()
            .unwrap();
        assert!((reported + offset_ms).abs() < 60_000, "{reported}");
        agent.kill().await.unwrap();
    }
    check_books(&lane, &fleet.gateway_dir, &hq, &terminal_id)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forked_and_unlinked_entries_are_refused_stored_never_and_alarmed() {
    let fleet = fleet("lanepay-sync-forged-", &[]).await;
    let hq = fleet.gateway.hq().unwrap();
    let (_, issued) = hq.create_token("S005", 7).await.unwrap();
    let terminal = TestTerminal::enroll(&fleet.gateway.url(), issued["token"].as_str().unwrap())
        .await
        .unwrap();
    let chain = sales_chain(&terminal, 4, |seq| 1_000 + seq as i64).unwrap();
    let accepted = terminal
        .post_journal(&chain[..3], &Signing::fresh())
        .await
        .unwrap();
    assert_eq!(accepted.body["ack"]["seq"], json!(3), "{accepted:?}");
    let db = fleet.gateway_dir.terminals_db();
    let before = stored_entries(&db, &terminal.terminal_id).unwrap();
    let totals_before = ledger_totals(&db, &terminal.terminal_id).unwrap();

    // (1) Entry 4 signed by another key: a forgery.
    let forged = chain[3].draft().sign(&random_key()).unwrap();
    // (2) Entry 2 re-signed by the terminal's own key with a changed amount: a fork.
    let mut changed = chain[1].draft();
    changed.payload = sale_payload(
        &format!("{}-{:06}", terminal.terminal_id, 2),
        &terminal.store_id,
        999_999,
        "cash",
        now_ms(),
    )
    .unwrap();
    let fork = changed.sign(&terminal.key).unwrap();
    // (3) Entry 4 validly signed but linked to something else: a broken chain.
    let mut unlinked = chain[3].draft();
    unlinked.prev_hash = [7; 32];
    let unlinked = unlinked.sign(&terminal.key).unwrap();

    for (bad, seq, alarm_kind) in [
        (&forged, 4, "invalid"),
        (&fork, 2, "fork"),
        (&unlinked, 4, "invalid"),
    ] {
        let answer = terminal
            .post_journal(std::slice::from_ref(bad), &Signing::fresh())
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["ack"]["seq"], json!(3), "{answer:?}");
        assert_eq!(answer.body["rejected"]["seq"], json!(seq), "{answer:?}");
        let alarms = hq.alarms(&terminal.terminal_id).await.unwrap();
        let last = alarms.last().unwrap();
        assert_eq!(
            (last["seq"].as_u64(), last["kind"].as_str()),
            (Some(seq), Some(alarm_kind)),
            "{alarms:?}"
        );
        assert_eq!(stored_entries(&db, &terminal.terminal_id).unwrap(), before);
        assert_eq!(
            ledger_totals(&db, &terminal.terminal_id).unwrap(),
            totals_before
        );
    }
    let alarms = hq.alarms(&terminal.terminal_id).await.unwrap();
    assert_eq!(alarms.len(), 3, "{alarms:?}");
    assert!(
        alarms[0]["detail"].as_str().unwrap().contains("signature"),
        "{alarms:?}"
    );
    assert!(
        alarms[2]["detail"].as_str().unwrap().contains("prev_hash"),
        "{alarms:?}"
    );
    let shown = hq.terminal(&terminal.terminal_id).await.unwrap();
    assert_eq!(
        (shown["entries"].as_u64(), shown["alarms"].as_u64()),
        (Some(3), Some(3)),
        "{shown}"
    );
    assert_eq!(
        shown["totals_by_tender_fen"],
        json!({"cash": 1_001 + 1_002 + 1_003}),
        "{shown}"
    );

    // The genuine entry 4 is still welcome.
    let accepted = terminal
        .post_journal(&chain[3..], &Signing::fresh())
        .await
        .unwrap();
    assert_eq!(accepted.body["ack"]["seq"], json!(4), "{accepted:?}");
}
