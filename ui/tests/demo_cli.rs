//! `lanepay-ui demo` on a machine without a display: it says how to see the screen on a
//! virtual display, then runs the scripted sale against the embedded gateway instead, and
//! the sales are in the lane's journal.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn without_a_display_the_demo_says_how_and_runs_the_scripted_sale() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_lanepay-ui"))
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
    assert!(stdout.starts_with("No display found"), "{stdout}");
    assert!(
        stdout.contains("DISPLAY=:99 lanepay-ui demo --data"),
        "{stdout}"
    );
    assert!(stdout.contains("Backlog 0"), "{stdout}");
    let conn = rusqlite::Connection::open_with_flags(
        lanepay_agent::store::db_path(&data.join("lane")),
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
