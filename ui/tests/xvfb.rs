//! End to end under a virtual X display: the real `lanepay-ui` binary, real X key events
//! from `xdotool` (as a scanner in keyboard mode sends them, typed ahead of the screens), a
//! cash sale, then the lane's
//! journal read back from its SQLite file, and a screenshot kept under `target/` whose text
//! is read back with OCR (`tesseract`): the "sale complete, change due" line is on screen.
//!
//! Skipped, saying so, only when `Xvfb`, `xdotool`, ImageMagick's `import` or `tesseract`
//! are missing (`packaging/install-deps.sh test` installs them).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Safety net for each wait on the app; the waits end as soon as the state file says so.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.exists())
    })
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("ui-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_display() -> u32 {
    (90..400)
        .find(|n| {
            !Path::new(&format!("/tmp/.X{n}-lock")).exists()
                && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        })
        .expect("no free X display number")
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < WAIT_LIMIT, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_state(path: &Path, line: &str) {
    let started = Instant::now();
    while !state(path).lines().any(|l| l == line) {
        // On failure the screen's state says where it stopped (a key lost, a refusal).
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "gave up waiting for `{line}` in the state file; it says:\n{}",
            state(path)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn xdotool(display: &str, args: &[&str]) {
    let status = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .status()
        .unwrap();
    assert!(status.success(), "xdotool {args:?} failed");
}

fn type_line(display: &str, text: &str) {
    if !text.is_empty() {
        xdotool(display, &["type", "--delay", "15", text]);
    }
    xdotool(display, &["key", "Return"]);
}

/// Takes a screenshot of the whole display into `path`.
fn screenshot(import: &Path, display: &str, path: &Path) {
    let status = Command::new(import)
        .args(["-display", display, "-window", "root"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "import failed");
}

/// The text on a screenshot as OCR reads it (English), with runs of blanks made one space.
fn ocr_text(png: &Path) -> String {
    let output = Command::new("tesseract")
        .arg(png)
        .args(["-", "-l", "eng"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tesseract failed on {}",
        png.display()
    );
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Screenshots until OCR reads `expected` on the screen (a redraw follows a state change
/// within a frame); returns what it read.
fn wait_for_text_on_screen(import: &Path, display: &str, shot: &Path, expected: &str) -> String {
    let started = Instant::now();
    loop {
        screenshot(import, display, shot);
        let text = ocr_text(shot);
        if text.contains(expected) {
            return text;
        }
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "`{expected}` is not on the screenshot {}; OCR read: {text}",
            shot.display()
        );
    }
}

#[test]
fn a_cash_sale_typed_with_real_x_key_events_is_in_the_journal() {
    let (Some(xvfb), Some(_), Some(import), Some(_)) = (
        tool("Xvfb"),
        tool("xdotool"),
        tool("import"),
        tool("tesseract"),
    ) else {
        eprintln!(
            "SKIPPED: Xvfb, xdotool, import or tesseract is not installed \
             (packaging/install-deps.sh test)"
        );
        return;
    };
    let number = free_display();
    let display = format!(":{number}");
    let _xvfb = Killed(
        Command::new(xvfb)
            .args([
                display.as_str(),
                "-screen",
                "0",
                "1280x900x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the X display", || {
        Path::new(&format!("/tmp/.X11-unix/X{number}")).exists()
    });

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("lane");
    let state_file = dir.path().join("state.txt");
    let log = std::fs::File::create(artifacts_dir().join("xvfb-app.log")).unwrap();
    let mut app = Killed(
        Command::new(env!("CARGO_BIN_EXE_lanepay-ui"))
            .args(["demo", "--language", "en", "--single-window", "--data"])
            .arg(&data)
            .arg("--state-file")
            .arg(&state_file)
            .env("DISPLAY", &display)
            .env("ICED_BACKEND", "tiny-skia")
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_state(&state_file, "screen=sign_in");
    // The window exists and has keyboard focus (no window manager runs on Xvfb).
    let window = {
        let started = Instant::now();
        loop {
            let output = Command::new("xdotool")
                .args(["search", "--name", "Lanepay checkout"])
                .env("DISPLAY", &display)
                .output()
                .unwrap();
            let found = String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .map(str::to_string);
            if let Some(window) = found {
                break window;
            }
            assert!(
                started.elapsed() < WAIT_LIMIT,
                "the cashier window never appeared"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    xdotool(&display, &["windowfocus", "--sync", &window]);

    // Typed ahead without waiting for any screen: the cashier's sign-in, the opening float
    // and three scans. The screen keeps what is typed while the lane answers and gives it to
    // the screen that follows, so not a key is lost.
    let typed_ahead = [
        "1001",
        "1234",
        "200",
        "6901234567892",
        "6901234567892",
        "6930000000011",
    ];
    let mut keys = Vec::new();
    for line in typed_ahead {
        keys.extend(line.chars().map(String::from));
        keys.push("Return".to_string());
    }
    let mut args = vec!["key", "--delay", "2"];
    args.extend(keys.iter().map(String::as_str));
    xdotool(&display, &args);
    wait_state(&state_file, "total=19.90");
    screenshot(&import, &display, &artifacts_dir().join("xvfb-cart.png"));
    xdotool(&display, &["key", "F5"]);
    wait_state(&state_file, "screen=cash");
    type_line(&display, "50");
    wait_state(&state_file, "last_change=30.10");
    wait_state(&state_file, "screen=sale");

    // The sale is in the lane's journal, to the fen.
    let conn = rusqlite::Connection::open_with_flags(
        // The demo keeps its lane under `lane/` (the embedded gateway under `gateway/`).
        lanepay_agent::store::db_path(&data.join("lane")),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let payloads: Vec<serde_json::Value> = conn
        .prepare("SELECT payload FROM journal WHERE kind = 'sale_completed'")
        .unwrap()
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|p| serde_json::from_slice(&p.unwrap()).unwrap())
        .collect();
    assert_eq!(payloads.len(), 1);
    assert_eq!(payloads[0]["total_fen"], 1_990);
    assert_eq!(payloads[0]["tenders"][0]["method"], "cash");
    assert_eq!(payloads[0]["tenders"][0]["change_fen"], 3_010);
    let opened: i64 = conn
        .query_row(
            "SELECT count(*) FROM journal WHERE kind = 'shift_opened'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(opened, 1);

    // The screen says so in words: the notice, read back from the pixels. OCR may misread
    // the dash and the yuan sign, so the words and the amount are looked for one by one.
    let shot = artifacts_dir().join("xvfb-sale.png");
    let read = wait_for_text_on_screen(&import, &display, &shot, "Sale complete");
    for expected in ["Change due", "30.10", "Online"] {
        assert!(
            read.contains(expected),
            "`{expected}` is not on screen: {read}"
        );
    }

    // The same screen in Chinese, kept as an artifact to look at: the English words go.
    xdotool(&display, &["key", "F11"]);
    wait_state(&state_file, "locale=ZhCn");
    let shot_zh = artifacts_dir().join("xvfb-sale-zh.png");
    let started = Instant::now();
    loop {
        screenshot(&import, &display, &shot_zh);
        let text = ocr_text(&shot_zh);
        if !text.contains("Sale complete") {
            assert!(
                text.contains("30.10"),
                "the change is gone in Chinese: {text}"
            );
            break;
        }
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "the screen never switched to Chinese"
        );
    }

    // A service manager's stop (SIGTERM): the screen closes, the lane stops in order, and the
    // program says so and exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &app.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = app.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "SIGTERM did not stop the app"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "stopped with {exit}");
    let mut said = String::new();
    std::io::Read::read_to_string(&mut app.0.stdout.take().unwrap(), &mut said).unwrap();
    assert!(said.contains("Lane stopped"), "{said}");
}
