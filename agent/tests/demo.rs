#![allow(clippy::unwrap_used)]
//! `lanepay demo --headless`, the real binary, twice on the same directory: every payment
//! method's line with its amounts to the fen, the lane's database (sales, tenders, refunds,
//! outbox) and the embedded gateway's ledger agreeing with it, and the second run reusing the
//! lane enrolled by the first.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

const LANEPAY: &str = env!("CARGO_BIN_EXE_lanepay");
/// The default test card of the emulated reader, and its masked form.
const FULL_PAN: &str = "4761739001010010";
const MASKED_PAN: &str = "476173******0010";

/// Runs the demo and returns its stdout; fails the test with both outputs if it fails.
fn run_demo(data: &Path) -> String {
    let started = Instant::now();
    let output = Command::new(LANEPAY)
        .args(["demo", "--headless", "--data"])
        .arg(data)
        .env("LANEPAY_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // "Well under a minute", with room for a loaded CI machine.
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the demo took {:?}",
        started.elapsed()
    );
    stdout
}

fn line_with<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stdout}"))
}

/// The per-method lines, amounts to the fen.
fn assert_sales(stdout: &str) {
    let cash = line_with(stdout, "[1/8] cash");
    assert!(
        cash.contains("total 19.90 yuan; customer gave 50.00, change 30.10 -> PAID, receipt "),
        "{cash}"
    );
    let code = line_with(stdout, "[2/8] wallet code");
    assert!(code.contains("total 17.00 yuan; Alipay code 28"), "{code}");
    assert!(code.contains("-> PAID at once, receipt "), "{code}");
    let late = line_with(stdout, "[3/8] wallet late");
    assert!(
        late.contains("total 17.91 yuan (order discount 0.49); WeChat code scanned -> PAYING (waiting for customer to confirm) -> PAID after "),
        "{late}"
    );
    let qr = line_with(stdout, "[4/8] dynamic QR");
    assert!(qr.contains("total 5.50 yuan; QR shown"), "{qr}");
    assert!(
        qr.contains("/sandbox/wallet/T") && qr.contains("and paid -> PAID"),
        "{qr}"
    );
    let card = line_with(stdout, "[5/8] card online");
    assert!(
        card.contains(&format!(
            "total 24.40 yuan; card {MASKED_PAN} tapped -> PAID (authorised online)"
        )),
        "{card}"
    );
    let stored = line_with(stdout, "[6/8] card offline");
    assert!(
        stored.contains(&format!("gateway unreachable, lane offline; total 15.00 yuan; card {MASKED_PAN} tapped -> STORED offline (offline exposure 15.00 yuan, 1 card)")),
        "{stored}"
    );
    let offline_qr = line_with(stdout, "[7/8] offline QR");
    assert!(
        offline_qr.contains("total 7.50 yuan; signed offline QR shown"),
        "{offline_qr}"
    );
    assert!(
        offline_qr.contains("scanned and verified offline -> PAID, receipt "),
        "{offline_qr}"
    );
    assert!(
        stdout.contains("the card stored in sale 6 (15.00 yuan) was forwarded -> APPROVED"),
        "{stdout}"
    );
    let refund = line_with(stdout, "[8/8] refund");
    assert!(
        refund.contains("5.00 yuan of receipt ")
            && refund.contains("(card) refunded online through the gateway -> REFUNDED"),
        "{refund}"
    );
    assert!(stdout.contains("as printed (emulated ESC/POS printer)"));
    assert!(stdout.contains("TOTAL CNY                             7.50"));
    assert!(stdout.contains("== Journal tail =="));
    assert!(
        stdout.contains("chain and signatures intact. Backlog 0: every entry is acknowledged"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(FULL_PAN),
        "the full card number was printed"
    );
}

fn read_only(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

fn query_i64(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

/// The lane's database after `runs` demo runs: the sales and tenders of each run, nothing
/// left in the outbox, no full card number anywhere; and the gateway's ledger says the same.
fn assert_databases(data: &Path, runs: i64) {
    let lane = read_only(&data.join("lane/lane.db"));
    assert_eq!(
        query_i64(
            &lane,
            "SELECT COUNT(*) FROM sales WHERE state = 'completed'"
        ),
        7 * runs
    );
    assert_eq!(
        query_i64(
            &lane,
            "SELECT COUNT(*) FROM sales WHERE state <> 'completed'"
        ),
        0
    );
    let mut tenders: Vec<(String, i64, i64, i64)> = lane
        .prepare(
            "SELECT method, amount_fen, tendered_fen, change_fen FROM tenders \
             ORDER BY sale_id DESC, position DESC LIMIT 7",
        )
        .unwrap()
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tenders.reverse();
    let methods: Vec<(&str, i64)> = tenders
        .iter()
        .map(|(method, amount, _, _)| (method.as_str(), *amount))
        .collect();
    assert_eq!(
        methods,
        [
            ("cash", 1_990),
            ("alipay", 1_700),
            ("wechat", 1_791),
            ("alipay", 550),
            ("card", 2_440),
            ("card", 1_500),
            ("offline_qr", 750),
        ]
    );
    assert_eq!((tenders[0].2, tenders[0].3), (5_000, 3_010));
    assert_eq!(
        query_i64(&lane, "SELECT COALESCE(SUM(total_fen), 0) FROM refunds"),
        500 * runs
    );
    assert_eq!(
        query_i64(
            &lane,
            "SELECT COUNT(*) FROM gateway_refunds WHERE state = 'done' AND amount_fen = 500"
        ),
        runs
    );
    assert_eq!(query_i64(&lane, "SELECT COUNT(*) FROM outbox"), 0);
    assert_eq!(
        query_i64(
            &lane,
            "SELECT COUNT(*) FROM payment_attempts WHERE state NOT IN ('paid')"
        ),
        0,
        "every payment attempt ended paid"
    );
    let leaked = query_i64(
        &lane,
        &format!(
            "SELECT COUNT(*) FROM payment_attempts WHERE masked_pan LIKE '%{FULL_PAN}%' \
             OR COALESCE(sealed_card, '') LIKE '%{FULL_PAN}%'"
        ),
    );
    assert_eq!(leaked, 0);
    let raw = std::fs::read(data.join("lane/lane.db")).unwrap();
    assert!(
        !raw.windows(FULL_PAN.len())
            .any(|w| w == FULL_PAN.as_bytes()),
        "the full card number is in the lane's database file"
    );

    // Lane totals = gateway ledger: what the lane took through the gateway, and refunded.
    let lane_gateway_fen = query_i64(
        &lane,
        "SELECT SUM(amount_fen) FROM tenders WHERE method <> 'cash'",
    );
    let gateway = read_only(&data.join("gateway/gateway.sqlite"));
    assert_eq!(
        query_i64(
            &gateway,
            "SELECT SUM(paid_fen) FROM orders WHERE merchant_id = 'M1001'"
        ),
        lane_gateway_fen
    );
    assert_eq!(
        lane_gateway_fen,
        (1_700 + 1_791 + 550 + 2_440 + 1_500 + 750) * runs
    );
    assert_eq!(
        query_i64(
            &gateway,
            "SELECT SUM(refunded_fen) FROM orders WHERE merchant_id = 'M1001'"
        ),
        500 * runs
    );
}

#[test]
fn the_headless_demo_sells_with_every_method_twice_on_the_same_lane() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");

    let first = run_demo(&data);
    assert!(
        first.contains("enrolled now with a one-time token"),
        "{first}"
    );
    assert_sales(&first);
    assert_databases(&data, 1);
    let terminal = line_with(&first, "Lane: terminal ")
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();

    let second = run_demo(&data);
    assert!(
        second.contains(&format!(
            "Lane: terminal {terminal} of store S001, enrolled in an earlier run"
        )),
        "{second}"
    );
    assert_sales(&second);
    assert_databases(&data, 2);
}

/// The gateway's clock as its test endpoint serves it.
async fn served_clock_ms(http: &reqwest::Client, base: &str) -> i64 {
    let body: serde_json::Value = http
        .get(format!("{base}/test/clock"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["now_ms"].as_i64().unwrap()
}

/// The embedded gateway on a manual clock (as payment tests use it): tokens, the clock, and
/// suspend/resume on the same address with the lane-facing API really gone in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_gateway_moves_its_clock_and_suspends_on_the_same_port() {
    use lanepay_agent::embedded_gateway::{EmbeddedGateway, EmbeddedOptions};
    const START_MS: i64 = 1_795_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        data_dir: dir.path().join("gateway"),
        manual_clock_start_ms: Some(START_MS),
    };
    let mut gateway = EmbeddedGateway::start(options.clone()).await.unwrap();
    let base = gateway.base_url().to_string();
    let http = reqwest::Client::new();
    assert_eq!(served_clock_ms(&http, &base).await, START_MS);
    gateway.advance_ms(5_000).unwrap();
    assert_eq!(gateway.now_ms(), START_MS + 5_000);
    assert!(gateway.advance_ms(-1).is_err());
    let token = gateway.enrollment_token().unwrap();
    assert!(token.starts_with("lpe_"), "{token}");
    assert_ne!(gateway.enrollment_token().unwrap(), token);

    gateway.suspend().await.unwrap();
    assert!(!gateway.is_serving());
    assert!(http.get(format!("{base}/test/clock")).send().await.is_err());
    gateway.resume().await.unwrap();
    assert_eq!(gateway.base_url(), base);
    assert_eq!(served_clock_ms(&http, &base).await, START_MS + 5_000);
    let key = gateway.public_key_hex();
    gateway.stop().await.unwrap();

    // A reused directory keeps its keys and its one demo merchant.
    let again = EmbeddedGateway::start(options).await.unwrap();
    assert_eq!(again.public_key_hex(), key);
    again.stop().await.unwrap();
    let merchants = read_only(&dir.path().join("gateway/gateway.sqlite"));
    assert_eq!(
        query_i64(
            &merchants,
            "SELECT COUNT(*) FROM merchants WHERE merchant_id = 'M1001'"
        ),
        1
    );

    // The system clock cannot be moved.
    let system = EmbeddedGateway::start(EmbeddedOptions {
        data_dir: dir.path().join("system"),
        manual_clock_start_ms: None,
    })
    .await
    .unwrap();
    assert!(system.advance_ms(1).is_err());
    system.stop().await.unwrap();
}
