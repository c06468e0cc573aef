//! End to end under a virtual X display: the real `lanepay-ui` binary, real X key events
//! from `xdotool` (as a scanner in keyboard mode sends them), a cash sale, then the lane's
//! journal read back from its SQLite file, and a screenshot kept under `target/` whose
//! pixels are checked for the green "sale complete" line.
//!
//! Skipped, saying so, only when `Xvfb`, `xdotool` or ImageMagick's `import` are missing.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Safety net for each wait on the app; the waits end as soon as the state file says so.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// The virtual screen's width in pixels (`-screen 0 1280x900x24`).
const SCREEN_WIDTH: usize = 1280;

/// The colour of the cashier's "done" notices (`view::OK_GREEN`), in 8-bit RGB.
const OK_GREEN_RGB: [u8; 3] = [13, 128, 51];

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
    wait_for(&format!("`{line}` in the state file"), || {
        state(path).lines().any(|l| l == line)
    });
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

/// Raw RGB pixels of a PNG through ImageMagick (the real one, not a stand-in in /usr/local).
fn rgb_pixels(png: &Path) -> Vec<u8> {
    let output = Command::new("/usr/bin/convert")
        .arg(png)
        .args(["-depth", "8", "rgb:-"])
        .output()
        .unwrap();
    assert!(output.status.success(), "convert failed");
    output.stdout
}

fn count_colour(pixels: &[u8], rgb: [u8; 3], tolerance: u8) -> usize {
    pixels
        .chunks_exact(3)
        .filter(|p| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= tolerance))
        .count()
}

/// Takes a screenshot and counts its pixels of the "done" green.
fn green_on_screen(import: &Path, display: &str, path: &Path) -> usize {
    let status = Command::new(import)
        .args(["-display", display, "-window", "root"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "import failed");
    count_colour(&rgb_pixels(path), OK_GREEN_RGB, 12)
}

#[test]
fn a_cash_sale_typed_with_real_x_key_events_is_in_the_journal() {
    let (Some(xvfb), Some(_), Some(import)) = (tool("Xvfb"), tool("xdotool"), tool("import"))
    else {
        eprintln!(
            "SKIPPED: Xvfb, xdotool or import is not installed \
             (apt-get install xvfb xdotool imagemagick)"
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
    let _app = Killed(
        Command::new(env!("CARGO_BIN_EXE_lanepay-ui"))
            .args(["demo", "--language", "en", "--single-window", "--data"])
            .arg(&data)
            .arg("--state-file")
            .arg(&state_file)
            .env("DISPLAY", &display)
            .env("ICED_BACKEND", "tiny-skia")
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::null())
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

    type_line(&display, "1001");
    type_line(&display, "1234");
    wait_state(&state_file, "screen=open_shift");
    type_line(&display, "200");
    wait_state(&state_file, "screen=sale");
    for code in ["6901234567892", "6901234567892", "6930000000011"] {
        type_line(&display, code);
    }
    wait_state(&state_file, "total=19.90");
    // Green before the sale (device states in the status bar): the baseline.
    let baseline = green_on_screen(&import, &display, &artifacts_dir().join("xvfb-cart.png"));
    xdotool(&display, &["key", "F5"]);
    wait_state(&state_file, "screen=cash");
    type_line(&display, "50");
    wait_state(&state_file, "last_change=30.10");

    // The sale is in the lane's journal, to the fen.
    let conn = rusqlite::Connection::open_with_flags(
        lanepay_agent::store::db_path(&data),
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

    // The screen: the green "sale complete, change due" line is drawn. A redraw follows the
    // state change within a frame; the safety net retries the screenshot meanwhile.
    let shot = artifacts_dir().join("xvfb-sale.png");
    let mut green = 0;
    let started = Instant::now();
    while green < baseline + 200 && started.elapsed() < WAIT_LIMIT {
        green = green_on_screen(&import, &display, &shot);
    }
    assert!(
        green >= baseline + 200,
        "the green sale-complete line is not on the screenshot {} ({green} green pixels, {baseline} before the sale)",
        shot.display()
    );

    // The same screen in Chinese, kept as an artifact to look at.
    xdotool(&display, &["key", "F11"]);
    wait_state(&state_file, "locale=ZhCn");
    // Wait for the redraw: the frame must change from the English one (the notice stays green).
    let shot_zh = artifacts_dir().join("xvfb-sale-zh.png");
    let english = rgb_pixels(&shot);
    let started = Instant::now();
    loop {
        let zh_green = green_on_screen(&import, &display, &shot_zh);
        // The function-key rows (the text field's blinking cursor does not count).
        let keys = SCREEN_WIDTH * 3 * 560..SCREEN_WIDTH * 3 * 720;
        if rgb_pixels(&shot_zh)[keys.clone()] != english[keys] {
            assert!(
                zh_green >= baseline + 200,
                "the notice is gone after switching language"
            );
            break;
        }
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "the screen never switched to Chinese"
        );
    }
}
