//! `lanepay demo` (without `--headless`) hands over to the cashier screen's demo,
//! `lanepay-ui demo`, built next to it; on a machine without a display that one says how to use
//! a virtual display and runs the scripted sales, which end in the lane's journal.

use std::process::Command;

use lanepay_tests::binary::built_binary;

#[test]
fn lanepay_demo_opens_the_cashier_screen_demo_which_runs_headless_without_a_display() {
    // Built by `cargo build --workspace --bins` next to `lanepay`: missing, the test says so
    // here instead of failing on the headless run `lanepay` would fall back to.
    built_binary("lanepay-ui").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let output = Command::new(built_binary("lanepay").unwrap())
        .args(["demo", "--data"])
        .arg(&data)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("LANEPAY_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // These words are lanepay-ui's: the hand-over happened.
    assert!(stdout.starts_with("No display found"), "{stdout}");
    assert!(
        stdout.contains("DISPLAY=:99 lanepay-ui demo --data"),
        "{stdout}"
    );
    assert!(stdout.contains("Journal verified:"), "{stdout}");
    assert!(stdout.contains("Backlog 0"), "{stdout}");
    let conn = rusqlite::Connection::open_with_flags(
        data.join("lane").join("lane.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let count = |kind: &str| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM journal WHERE kind = ?1",
            [kind],
            |row| row.get(0),
        )
        .unwrap()
    };
    // Seven sales (cash, a wallet code paid at once and one confirmed late, the dynamic QR, a
    // card online and one stored offline, the offline QR), then a partial refund.
    assert_eq!(count("sale_completed"), 7);
    assert_eq!(count("refund_completed"), 1);
}
