//! `lanepay demo`: the cashier screen's demo (`lanepay-ui demo`, next to this binary) when
//! there is a display, else the scripted demo against the embedded gateway, one sale per
//! payment method (the work is `lanepay_agent::demo::run_headless`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run without screens (the scripted sales in the terminal).
    #[arg(long)]
    pub headless: bool,
    /// The demo's data directory: the embedded gateway under gateway/, the lane under lane/;
    /// created when new, reused afterwards.
    #[arg(long)]
    pub data: PathBuf,
}

/// The screen's binary.
const UI_BINARY: &str = "lanepay-ui";

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if !args.headless {
        match ui_binary() {
            // It says how to use a virtual display and runs headless itself when there is none.
            Some(ui) => return run_screen(&ui, &args.data),
            None => println!(
                "The cashier screen ({UI_BINARY}) is not installed next to this program \
                 (cargo build -p lanepay-ui); running the scripted sales headless."
            ),
        }
    }
    lanepay_agent::demo::run_headless(&args.data)?;
    Ok(ExitCode::SUCCESS)
}

/// `lanepay-ui` in this program's directory (cargo builds both into one; packages install
/// both into one).
fn ui_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let ui = exe.parent()?.join(UI_BINARY);
    ui.is_file().then_some(ui)
}

fn run_screen(ui: &Path, data: &Path) -> anyhow::Result<ExitCode> {
    let status = std::process::Command::new(ui)
        .args(["demo", "--data"])
        .arg(data)
        .status()
        .with_context(|| format!("cannot start {}", ui.display()))?;
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        // It printed nothing: say what happened to it.
        anyhow::bail!("{} was stopped by signal {signal}", ui.display());
    }
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
