//! The lane against a real SQLite file: what is committed with each command, what survives a
//! restart, what a damaged or foreign journal does, and the migration rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use ed25519_dalek::SigningKey;
use lanepay_agent::api::{Command, DiscountSpec, Event, RefundLineSpec, Reply};
use lanepay_agent::lane::{Lane, LaneSettings, OpenError};
use lanepay_agent::store::migrations::{MIGRATIONS, Migration};
use lanepay_agent::store::{self, Durability, StoreError, catalog, journal};
use lanepay_config::AgentConfig;
use rusqlite::Connection;

const NOW: i64 = 1_795_000_000_000;

fn settings() -> LaneSettings {
    let config = AgentConfig::new_default(
        "T0001",
        "S001",
        "M1001",
        "/nonexistent",
        "0123456789abcdef0123",
    )
    .unwrap();
    LaneSettings::from_config(&config)
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn open_lane(dir: &Path) -> Result<Lane, OpenError> {
    let conn = store::open(&store::db_path(dir), Durability::Full)?;
    if catalog::count(&conn)? == 0 {
        catalog::upsert(&conn, &catalog::demo_products())?;
    }
    Lane::open(conn, key(), settings())
}

fn run(lane: &mut Lane, command: Command) -> Reply {
    let (result, _) = lane.execute(command, NOW);
    result.unwrap_or_else(|e| panic!("command failed: {} {}", e.code, e.message))
}

fn scan(lane: &mut Lane, code: &str) -> Reply {
    run(lane, Command::Scan { code: code.into() })
}

fn cash(lane: &mut Lane, amount: &str) -> lanepay_agent::api::TenderView {
    match run(
        lane,
        Command::TenderCash {
            amount: amount.into(),
        },
    ) {
        Reply::Tender(view) => view,
        other => panic!("unexpected reply {other:?}"),
    }
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
fn a_completed_sale_is_in_the_sales_tables_and_the_journal_together() {
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path()).unwrap();
    scan(&mut lane, "6901234567892");
    scan(&mut lane, "6901234567892");
    scan(&mut lane, "6930000000011");
    let (_, events) = lane.execute(
        Command::TenderCash {
            amount: "50".into(),
        },
        NOW + 5,
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::SaleCompleted(v) if v.change == "30.10"))
    );

    let conn = Connection::open(store::db_path(dir.path())).unwrap();
    let (state, total): (String, i64) = conn
        .query_row(
            "SELECT state, total_fen FROM sales WHERE receipt_no = 'T0001-000001'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((state.as_str(), total), ("completed", 1990));
    let completed = payloads(&conn, "sale_completed");
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["total_fen"], 1990);
    assert_eq!(completed[0]["change_fen"], 3010);
    assert_eq!(completed[0]["lines"][0]["quantity"], "2");
    assert_eq!(completed[0]["tenders"][0]["tendered_fen"], 5000);
    assert_eq!(
        journal::verify(&conn, "T0001", key().verifying_key(), 1).unwrap(),
        journal::Verification::Intact {
            first_seq: 1,
            last_seq: 1,
            entries: 1
        }
    );
}

#[test]
fn a_sale_being_paid_survives_a_restart_and_completes_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path()).unwrap();
    scan(&mut lane, "6940000000010");
    let partial = cash(&mut lane, "5.00");
    assert!(!partial.completed);
    assert_eq!(partial.remaining, "6.50");
    drop(lane);

    let mut lane = open_lane(dir.path()).unwrap();
    let Reply::Cart(cart) = run(&mut lane, Command::GetCart) else {
        panic!()
    };
    assert_eq!(
        (cart.state.as_str(), cart.remaining.as_str()),
        ("tendering", "6.50")
    );
    let rest = cash(&mut lane, "10.00");
    assert!(rest.completed);
    assert_eq!(rest.change, "3.50");
    // The next sale gets the next number, not a reused one.
    scan(&mut lane, "96385074");
    let next = cash(&mut lane, "5.50");
    assert_eq!(next.receipt_no, "T0001-000002");

    let conn = Connection::open(store::db_path(dir.path())).unwrap();
    let kinds: Vec<String> = conn
        .prepare("SELECT kind FROM journal ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        kinds,
        ["tender_recorded", "sale_completed", "sale_completed"]
    );
    let completed = payloads(&conn, "sale_completed");
    assert_eq!(completed[0]["tenders"].as_array().unwrap().len(), 2);
}

#[test]
fn refused_commands_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path()).unwrap();
    let (result, events) = lane.execute(
        Command::Scan {
            code: "6901234567893".into(),
        },
        NOW,
    );
    assert_eq!(result.unwrap_err().code, "misread");
    assert!(matches!(&events[..], [Event::ScanRejected { .. }]));
    let (result, _) = lane.execute(
        Command::Scan {
            code: "4006381333931".into(),
        },
        NOW,
    );
    assert_eq!(result.unwrap_err().code, "unknown_product");
    let (result, _) = lane.execute(
        Command::Scan {
            code: "134567890123456789".into(),
        },
        NOW,
    );
    assert_eq!(result.unwrap_err().code, "not_allowed");
    let (result, _) = lane.execute(
        Command::TenderCash {
            amount: "1.005".into(),
        },
        NOW,
    );
    assert_eq!(result.unwrap_err().code, "bad_request");

    scan(&mut lane, "6901234567892");
    let sale = cash(&mut lane, "3.50");
    let (result, _) = lane.execute(
        Command::Refund {
            receipt_no: sale.receipt_no.clone(),
            lines: vec![RefundLineSpec {
                line: 1,
                quantity: "2".into(),
            }],
            amount: None,
            reason: "too many".into(),
        },
        NOW,
    );
    assert_eq!(result.unwrap_err().code, "bad_request");
    let (result, _) = lane.execute(
        Command::Refund {
            receipt_no: "nope".into(),
            lines: vec![],
            amount: None,
            reason: String::new(),
        },
        NOW,
    );
    assert_eq!(result.unwrap_err().code, "not_found");
    assert_eq!(
        journal::head(lane.connection()).unwrap().0,
        1,
        "only the sale was journaled"
    );
}

#[test]
fn a_failed_commit_leaves_the_sale_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path()).unwrap();
    scan(&mut lane, "6901234567892");
    lane.connection()
        .execute_batch("PRAGMA query_only = ON")
        .unwrap();
    let (result, events) = lane.execute(
        Command::TenderCash {
            amount: "3.50".into(),
        },
        NOW,
    );
    assert_eq!(result.unwrap_err().code, "storage");
    assert!(
        events.is_empty(),
        "nothing is announced that did not happen"
    );
    lane.connection()
        .execute_batch("PRAGMA query_only = OFF")
        .unwrap();
    let Reply::Cart(cart) = run(&mut lane, Command::GetCart) else {
        panic!()
    };
    assert_eq!((cart.state.as_str(), cart.paid.as_str()), ("open", "0.00"));
    assert!(cash(&mut lane, "3.50").completed);
}

#[test]
fn void_and_refund_are_journaled_and_conserve_money() {
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path()).unwrap();
    scan(&mut lane, "6901234567892");
    cash(&mut lane, "1.00");
    run(&mut lane, Command::VoidSale);
    scan(&mut lane, "6901234567892");
    scan(&mut lane, "6901234567892");
    scan(&mut lane, "6901234567892");
    run(
        &mut lane,
        Command::OrderDiscount {
            discount: Some(DiscountSpec::Amount {
                value: "0.01".into(),
            }),
        },
    );
    let sale = cash(&mut lane, "20");
    for _ in 0..3 {
        run(
            &mut lane,
            Command::Refund {
                receipt_no: sale.receipt_no.clone(),
                lines: vec![RefundLineSpec {
                    line: 1,
                    quantity: "1".into(),
                }],
                amount: None,
                reason: "returned".into(),
            },
        );
    }
    let conn = Connection::open(store::db_path(dir.path())).unwrap();
    let voided = payloads(&conn, "sale_voided");
    assert_eq!(voided[0]["tenders_returned"][0]["amount_fen"], 100);
    let refunded: i64 = payloads(&conn, "refund_completed")
        .iter()
        .map(|p| p["total_fen"].as_i64().unwrap())
        .sum();
    assert_eq!(
        refunded, 1049,
        "three refunds add up to the discounted total exactly"
    );
    let Reply::Sale(view) = run(
        &mut lane,
        Command::FindSale {
            receipt_no: sale.receipt_no,
        },
    ) else {
        panic!()
    };
    assert_eq!(
        (view.refunded.as_str(), view.refundable.as_str()),
        ("10.49", "0.00")
    );
}

#[test]
fn the_outbox_moves_only_on_a_matching_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path()).unwrap();
    for _ in 0..3 {
        scan(&mut lane, "96385074");
        cash(&mut lane, "5.50");
    }
    let conn = lane.connection();
    assert_eq!(journal::outbox_len(conn).unwrap(), 3);
    let entries = journal::outbox(conn, 10).unwrap();
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(matches!(
        journal::mark_acknowledged(conn, 2, [0; 32], NOW),
        Err(journal::AckError::HashMismatch(2))
    ));
    assert!(matches!(
        journal::mark_acknowledged(conn, 9, [0; 32], NOW),
        Err(journal::AckError::UnknownEntry(9))
    ));
    journal::mark_acknowledged(conn, 2, entries[1].hash, NOW).unwrap();
    journal::mark_acknowledged(conn, 1, entries[0].hash, NOW).unwrap();
    assert_eq!(
        journal::acknowledged(conn).unwrap(),
        2,
        "acknowledgements never move back"
    );
    assert_eq!(
        journal::outbox(conn, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        [3]
    );
}

#[test]
fn the_journal_is_append_only_and_tampering_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path()).unwrap();
    for _ in 0..3 {
        scan(&mut lane, "96385074");
        cash(&mut lane, "5.50");
    }
    drop(lane);
    let conn = Connection::open(store::db_path(dir.path())).unwrap();
    assert!(
        conn.execute("UPDATE journal SET payload = x'00' WHERE seq = 2", [])
            .is_err()
    );
    assert!(
        conn.execute("DELETE FROM journal WHERE seq = 3", [])
            .is_err()
    );

    // Someone with the file and SQLite drops the guard and edits an amount.
    conn.execute_batch(
        "DROP TRIGGER journal_is_append_only_update;
         UPDATE journal SET payload = CAST(replace(CAST(payload AS TEXT), '550', '5') AS BLOB) WHERE seq = 2;",
    )
    .unwrap();
    match journal::verify(&conn, "T0001", key().verifying_key(), 1).unwrap() {
        journal::Verification::Broken { seq, reason } => {
            assert_eq!(seq, 2);
            assert!(reason.contains("hash"), "{reason}");
        }
        intact => panic!("tampering not found: {intact:?}"),
    }
    match open_lane(dir.path()) {
        Err(OpenError::JournalBroken { seq: 2, .. }) => {}
        other => panic!("a lane with a damaged journal must not open: {other:?}"),
    }
}

#[test]
fn a_journal_signed_by_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path()).unwrap();
    scan(&mut lane, "96385074");
    cash(&mut lane, "5.50");
    drop(lane);
    let conn = store::open(&store::db_path(dir.path()), Durability::Full).unwrap();
    let other = Lane::open(conn, SigningKey::from_bytes(&[1; 32]), settings());
    assert!(matches!(other, Err(OpenError::WrongKey { .. })));
}

/// The database file of the first released schema, with sales, a refund and an
/// acknowledgement in it. Regenerate only when adding a new fixture for a new release:
/// `LANEPAY_WRITE_FIXTURE=1 cargo test -p lanepay-agent --test lane write_first_schema_fixture`.
const FIXTURE_V1: &str = "tests/fixtures/lane-schema-v1.sqlite";

#[test]
fn write_first_schema_fixture() {
    if std::env::var_os("LANEPAY_WRITE_FIXTURE").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lane = open_lane(dir.path()).unwrap();
    for code in ["6901234567892", "6930000000011"] {
        scan(&mut lane, code);
    }
    let sale = cash(&mut lane, "20.00");
    scan(&mut lane, "96385074");
    cash(&mut lane, "2.00");
    run(
        &mut lane,
        Command::Refund {
            receipt_no: sale.receipt_no,
            lines: vec![],
            amount: Some("1.00".into()),
            reason: "fixture".into(),
        },
    );
    let first = journal::read_from(lane.connection(), 1, 1).unwrap();
    journal::mark_acknowledged(lane.connection(), 1, first[0].hash, NOW).unwrap();
    lane.connection()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(lane);
    std::fs::copy(store::db_path(dir.path()), FIXTURE_V1).unwrap();
}

fn copy_of_fixture(dir: &Path) -> std::path::PathBuf {
    let path = store::db_path(dir);
    std::fs::copy(FIXTURE_V1, &path).expect("fixture present");
    path
}

#[test]
fn the_first_released_schema_opens_and_keeps_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    copy_of_fixture(dir.path());
    let mut lane = open_lane(dir.path()).expect("fixture opens with the current schema");
    let conn = lane.connection();
    assert_eq!(journal::head(conn).unwrap().0, 3);
    assert_eq!(journal::acknowledged(conn).unwrap(), 1);
    assert_eq!(
        journal::outbox_len(conn).unwrap(),
        2,
        "unacknowledged entries are still waiting"
    );
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, store::migrations::latest_version(MIGRATIONS));
    // The sale that was being paid in the fixture is resumed and can be finished.
    let Reply::Cart(cart) = run(&mut lane, Command::GetCart) else {
        panic!()
    };
    assert_eq!(
        (cart.state.as_str(), cart.remaining.as_str()),
        ("tendering", "3.50")
    );
    assert!(cash(&mut lane, "3.50").completed);
    assert_eq!(
        journal::verify(lane.connection(), "T0001", key().verifying_key(), 1).unwrap(),
        journal::Verification::Intact {
            first_seq: 1,
            last_seq: 4,
            entries: 4
        }
    );
}

#[test]
fn a_migration_that_would_drop_unacknowledged_entries_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_of_fixture(dir.path());
    let conn = store::open_unmigrated(&path, Durability::Full).unwrap();
    let careless = Migration {
        version: MIGRATIONS.len() as i64 + 1,
        name: "rebuild journal, carelessly",
        sql: "DROP TRIGGER journal_is_append_only_delete; DELETE FROM journal WHERE seq > 2;",
    };
    let with_careless: Vec<Migration> = MIGRATIONS.iter().copied().chain([careless]).collect();
    match store::migrations::migrate(&conn, &with_careless) {
        Err(StoreError::MigrationWouldDropEntries {
            before: 2,
            after: 1,
            ..
        }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(journal::head(&conn).unwrap().0, 3, "nothing was dropped");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, store::migrations::latest_version(MIGRATIONS));

    conn.pragma_update(None, "user_version", 99).unwrap();
    assert!(matches!(
        store::migrations::migrate(&conn, MIGRATIONS),
        Err(StoreError::SchemaTooNew { found: 99, .. })
    ));
}
