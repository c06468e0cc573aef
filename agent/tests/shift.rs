//! Cashiers and shifts against a real SQLite file: PINs stored only as hashes, the lockout on
//! an injected clock, the float and cash moves adding up to the expected drawer, and the
//! shift_opened / shift_closed journal entries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use lanepay_agent::api::{Command, CommandError, RefundLineSpec, Reply, ShiftView};
use lanepay_agent::clock::ManualClock;
use lanepay_agent::devices::{self, Devices};
use lanepay_agent::lane::{Lane, LaneSettings};
use lanepay_agent::service::{self, LaneHandle};
use lanepay_agent::store::{self, Durability, catalog, journal};
use lanepay_config::{AgentConfig, PrinterDriver};
use rusqlite::Connection;

const NOW: i64 = 1_795_000_000_000;
const MINUTE_MS: i64 = 60_000;

fn open_lane(dir: &Path) -> Lane {
    let config = AgentConfig::new_default(
        "T0001",
        "S001",
        "M1001",
        "/nonexistent",
        "0123456789abcdef0123",
    )
    .unwrap();
    let conn = store::open(&store::db_path(dir), Durability::Full).unwrap();
    if catalog::count(&conn).unwrap() == 0 {
        catalog::upsert(&conn, &catalog::demo_products()).unwrap();
    }
    Lane::open(
        conn,
        SigningKey::from_bytes(&[42; 32]),
        LaneSettings::from_config(&config),
    )
    .unwrap()
}

fn try_run(lane: &mut Lane, command: Command, now_ms: i64) -> Result<Reply, CommandError> {
    lane.execute(command, now_ms).0
}

fn run(lane: &mut Lane, command: Command, now_ms: i64) -> Reply {
    try_run(lane, command, now_ms)
        .unwrap_or_else(|e| panic!("command failed: {} {}", e.code, e.message))
}

fn shift(lane: &mut Lane, command: Command, now_ms: i64) -> ShiftView {
    match run(lane, command, now_ms) {
        Reply::Shift(view) => view,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn add_alice(lane: &mut Lane) {
    shift(
        lane,
        Command::AddCashier {
            cashier_id: "alice".into(),
            name: "Alice 王".into(),
            pin: "2468".into(),
        },
        NOW,
    );
}

fn sign_in(lane: &mut Lane, pin: &str, now_ms: i64) -> Result<Reply, CommandError> {
    try_run(
        lane,
        Command::SignIn {
            cashier_id: "alice".into(),
            pin: pin.into(),
        },
        now_ms,
    )
}

fn payloads(conn: &Connection, kind: &str) -> Vec<serde_json::Value> {
    let mut statement = conn
        .prepare("SELECT payload FROM journal WHERE kind = ?1 ORDER BY seq")
        .unwrap();
    statement
        .query_map([kind], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|p| serde_json::from_slice(&p.unwrap()).unwrap())
        .collect()
}

#[test]
fn the_pin_is_stored_only_as_an_argon2_hash() {
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path());
    add_alice(&mut lane);
    let stored: String = lane
        .connection()
        .query_row(
            "SELECT pin_hash FROM cashiers WHERE cashier_id = 'alice'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains("2468"));
    let again = try_run(
        &mut lane,
        Command::AddCashier {
            cashier_id: "alice".into(),
            name: "Other".into(),
            pin: "1111".into(),
        },
        NOW,
    )
    .unwrap_err();
    assert_eq!(again.code, "not_allowed");
    let short_pin = try_run(
        &mut lane,
        Command::AddCashier {
            cashier_id: "bob".into(),
            name: "Bob".into(),
            pin: "12".into(),
        },
        NOW,
    )
    .unwrap_err();
    assert_eq!(short_pin.code, "bad_request");
    let count: i64 = lane
        .connection()
        .query_row("SELECT count(*) FROM cashiers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1, "refused cashiers are not stored");
}

#[test]
fn five_wrong_pins_lock_the_cashier_for_five_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path());
    add_alice(&mut lane);
    for attempt in 0..4 {
        let error = sign_in(&mut lane, "0000", NOW + attempt).unwrap_err();
        assert_eq!(error.code, "not_allowed", "attempt {attempt}");
        assert!(error.message.contains("try again"), "{}", error.message);
    }
    let locked = sign_in(&mut lane, "0000", NOW + 4).unwrap_err();
    assert_eq!(locked.code, "locked");
    assert!(locked.message.contains("5 minutes"), "{}", locked.message);
    // The right PIN does not help while locked.
    let still = sign_in(&mut lane, "2468", NOW + 4 + 4 * MINUTE_MS).unwrap_err();
    assert_eq!(still.code, "locked");
    assert!(still.message.contains("1 more minute"), "{}", still.message);
    // After five minutes it works, and the counter starts again.
    match sign_in(&mut lane, "2468", NOW + 4 + 5 * MINUTE_MS).unwrap() {
        Reply::Shift(view) => {
            assert_eq!(view.state, "signed_in");
            assert_eq!(view.cashier_id.as_deref(), Some("alice"));
            assert_eq!(view.cashier_name.as_deref(), Some("Alice 王"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let failed: i64 = lane
        .connection()
        .query_row(
            "SELECT failed_attempts FROM cashiers WHERE cashier_id = 'alice'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(failed, 0);
    // An unknown cashier gets the same words as a wrong PIN.
    let unknown = try_run(
        &mut lane,
        Command::SignIn {
            cashier_id: "mallory".into(),
            pin: "2468".into(),
        },
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        unknown.message,
        "cashier id or PIN is wrong; check them and try again"
    );
}

#[test]
fn a_shift_counts_cash_in_and_out_and_the_z_report_is_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path());
    add_alice(&mut lane);
    let refused = try_run(
        &mut lane,
        Command::OpenShift {
            float: "200".into(),
        },
        NOW,
    )
    .unwrap_err();
    assert!(refused.message.contains("sign in"), "{}", refused.message);
    sign_in(&mut lane, "2468", NOW).unwrap();
    let opened = shift(
        &mut lane,
        Command::OpenShift {
            float: "200.00".into(),
        },
        NOW,
    );
    assert_eq!(opened.state, "open");
    assert_eq!(opened.shift_id.as_deref(), Some("T0001-S00001"));
    assert_eq!(opened.opening_float, "200.00");
    assert_eq!(opened.expected, "200.00");
    let twice = try_run(&mut lane, Command::OpenShift { float: "1".into() }, NOW).unwrap_err();
    assert_eq!(twice.code, "not_allowed");

    // Cola 3.50 x2 + bread 12.90 = 19.90, paid with 50: 19.90 stays in the drawer.
    for code in ["6901234567892", "6901234567892", "6930000000011"] {
        run(&mut lane, Command::Scan { code: code.into() }, NOW + 1_000);
    }
    let busy = try_run(
        &mut lane,
        Command::CloseShift {
            counted: "0".into(),
        },
        NOW + 1_500,
    )
    .unwrap_err();
    assert!(
        busy.message.contains("sale in progress"),
        "{}",
        busy.message
    );
    match run(
        &mut lane,
        Command::TenderCash {
            amount: "50".into(),
        },
        NOW + 2_000,
    ) {
        Reply::Tender(tender) => {
            assert_eq!(tender.change, "30.10");
            assert!(tender.completed);
        }
        other => panic!("unexpected {other:?}"),
    }
    let receipt_no = "T0001-000001".to_string();
    // One cola back in cash: 3.50 leaves the drawer.
    run(
        &mut lane,
        Command::Refund {
            receipt_no,
            lines: vec![RefundLineSpec {
                line: 1,
                quantity: "1".into(),
            }],
            amount: None,
            reason: "dented can".into(),
        },
        NOW + 3_000,
    );
    let x = shift(&mut lane, Command::ShiftReport, NOW + 4_000);
    assert_eq!(x.state, "open");
    assert_eq!(x.cash_sales, "19.90");
    assert_eq!(x.cash_refunds, "3.50");
    assert_eq!(x.expected, "216.40");
    assert_eq!(x.sales_count, 1);
    assert_eq!(x.refunds_count, 1);
    assert_eq!(x.by_method, vec![("cash".to_string(), "16.40".to_string())]);
    assert!(x.report_lines[0].starts_with("X REPORT"));
    assert!(x.counted.is_none());

    let bad = try_run(
        &mut lane,
        Command::CloseShift {
            counted: "abc".into(),
        },
        NOW,
    )
    .unwrap_err();
    assert_eq!(bad.code, "bad_request");
    let z = shift(
        &mut lane,
        Command::CloseShift {
            counted: "216.00".into(),
        },
        NOW + 5_000,
    );
    assert_eq!(z.state, "closed");
    assert_eq!(z.expected, "216.40");
    assert_eq!(z.counted.as_deref(), Some("216.00"));
    assert_eq!(z.difference.as_deref(), Some("-0.40"));
    assert!(z.report_lines[0].starts_with("Z REPORT"));
    assert!(z.report_lines.iter().any(|l| l.contains("-0.40")));

    let opened = payloads(lane.connection(), "shift_opened");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["opening_float_fen"], 20_000);
    assert_eq!(opened[0]["cashier_id"], "alice");
    let closed = payloads(lane.connection(), "shift_closed");
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0]["expected_fen"], 21_640);
    assert_eq!(closed[0]["counted_fen"], 21_600);
    assert_eq!(closed[0]["difference_fen"], -40);
    assert_eq!(closed[0]["cash_sales_fen"], 1_990);
    assert_eq!(closed[0]["cash_refunds_fen"], 350);
    assert_eq!(closed[0]["sales_count"], 1);

    // The journal still verifies with the shift entries in it.
    let verification = journal::verify(
        lane.connection(),
        "T0001",
        SigningKey::from_bytes(&[42; 32]).verifying_key(),
        1,
    )
    .unwrap();
    assert!(
        matches!(verification, journal::Verification::Intact { .. }),
        "{verification:?}"
    );

    // After the Z report the cashier is signed in with no shift; a new one starts from zero.
    let after = shift(&mut lane, Command::ShiftReport, NOW + 6_000);
    assert_eq!(after.state, "signed_in");
    assert!(after.shift_id.is_none());
    let next = shift(
        &mut lane,
        Command::OpenShift {
            float: "100".into(),
        },
        NOW + 7_000,
    );
    assert_eq!(next.shift_id.as_deref(), Some("T0001-S00002"));
    assert_eq!(next.expected, "100.00");
}

#[test]
fn only_the_cashier_of_an_open_shift_can_take_the_lane() {
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path());
    add_alice(&mut lane);
    shift(
        &mut lane,
        Command::AddCashier {
            cashier_id: "bob".into(),
            name: "Bob".into(),
            pin: "1357".into(),
        },
        NOW,
    );
    sign_in(&mut lane, "2468", NOW).unwrap();
    shift(&mut lane, Command::OpenShift { float: "50".into() }, NOW);
    let out = shift(&mut lane, Command::SignOut, NOW + 1);
    assert_eq!(out.state, "signed_out");
    assert_eq!(out.shift_cashier_id.as_deref(), Some("alice"));
    let bob = try_run(
        &mut lane,
        Command::SignIn {
            cashier_id: "bob".into(),
            pin: "1357".into(),
        },
        NOW + 2,
    )
    .unwrap_err();
    assert!(bob.message.contains("alice"), "{}", bob.message);
    // Alice comes back from her break to the same shift, even after a restart.
    drop(lane);
    let mut lane = open_lane(dir.path());
    match sign_in(&mut lane, "2468", NOW + 3).unwrap() {
        Reply::Shift(view) => {
            assert_eq!(view.state, "open");
            assert_eq!(view.shift_id.as_deref(), Some("T0001-S00001"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A lane service with the emulated receipt printer, on a manual clock.
fn lane_with_printer(dir: &Path) -> (LaneHandle, Devices) {
    let mut config = AgentConfig::new_default(
        "T0001",
        "S001",
        "M1001",
        "/nonexistent",
        "0123456789abcdef0123",
    )
    .unwrap();
    config.devices.printer.driver = PrinterDriver::Emulator;
    let lane = open_lane(dir);
    let handle = service::start(lane, Arc::new(ManualClock::new(NOW))).unwrap();
    let devices = devices::start(&config.devices, &handle, "Shift report test store");
    (handle, devices)
}

/// A printed line `label ... amount`: the figure to the fen, right of its label.
fn assert_figure(text: &str, label: &str, amount: &str) {
    assert!(
        text.lines()
            .any(|line| line.starts_with(label) && line.trim_end().ends_with(&format!(" {amount}"))),
        "no `{label} ... {amount}` line in:\n{text}"
    );
}

fn execute(handle: &LaneHandle, command: Command) -> Reply {
    handle
        .execute_blocking(command)
        .unwrap_or_else(|e| panic!("command failed: {} {}", e.code, e.message))
}

#[test]
fn x_and_z_reports_print_on_the_receipt_printer_to_the_fen() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, devices) = lane_with_printer(dir.path());
    let printer = devices
        .emulators
        .printer
        .as_ref()
        .expect("emulated printer");
    let refused = handle
        .execute_blocking(Command::PrintShiftReport)
        .unwrap_err();
    assert_eq!(
        refused.code, "not_allowed",
        "no shift yet: {}",
        refused.message
    );
    for command in [
        Command::AddCashier {
            cashier_id: "alice".into(),
            name: "Alice".into(),
            pin: "2468".into(),
        },
        Command::SignIn {
            cashier_id: "alice".into(),
            pin: "2468".into(),
        },
        Command::OpenShift {
            float: "123.45".into(),
        },
        Command::Scan {
            code: "6901234567892".into(),
        },
        Command::Scan {
            code: "6901234567892".into(),
        },
        Command::TenderCash {
            amount: "10".into(),
        },
    ] {
        execute(&handle, command);
    }

    // The sale's receipt comes out first; the X report is the printer's second job.
    let Reply::Shift(x) = execute(&handle, Command::PrintShiftReport) else {
        panic!("a shift view")
    };
    assert_eq!(x.expected, "130.45");
    let printed = printer
        .wait_for_receipt(2, Duration::from_secs(10))
        .unwrap_or_else(|state| panic!("no X report printed: {state:?}"));
    let text = printed.text();
    assert!(text.contains("X REPORT"), "{text}");
    assert!(text.contains("T0001-S00001"), "{text}");
    assert_figure(&text, "float", "123.45");
    assert_figure(&text, "cash in", "7.00");
    assert_figure(&text, "expected", "130.45");
    assert!(printed.cut);
    assert!(
        printed.qr_payloads.is_empty(),
        "a report carries no receipt QR"
    );

    execute(
        &handle,
        Command::CloseShift {
            counted: "130.40".into(),
        },
    );
    // After the close there is no open shift: printing reprints the last Z report.
    let Reply::Shift(z) = execute(&handle, Command::PrintShiftReport) else {
        panic!("a shift view")
    };
    assert_eq!(z.state, "closed");
    let printed = printer
        .wait_for_receipt(3, Duration::from_secs(10))
        .unwrap_or_else(|state| panic!("no Z report printed: {state:?}"));
    let text = printed.text();
    assert!(text.contains("Z REPORT"), "{text}");
    assert_figure(&text, "expected", "130.45");
    assert_figure(&text, "counted", "130.40");
    assert_figure(&text, "difference", "-0.05");
}
