//! `lanepay-ui`: the cashier screen. `lanepay-ui demo --data DIR` starts a lane with emulated
//! devices, the cashier window, the customer display and a device panel.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use lanepay_agent::clock::SystemClock;
use lanepay_agent::service;
use lanepay_agent::store::catalog;
use lanepay_config::AgentConfig;
use lanepay_ui::i18n::Locale;
use lanepay_ui::shell::{self, ShellOptions};

#[derive(Debug, Parser)]
#[command(name = "lanepay-ui", version, about = "Lanepay cashier screen")]
struct Args {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// A demo lane on this machine: emulated scanner, display and printer, the cashier screen,
    /// the customer display and a device panel. Cashier 1001, PIN 1234.
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Language {
    Zh,
    En,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// The lane's data directory; created with the demo catalog when new, kept afterwards.
    #[arg(long)]
    data: PathBuf,
    /// The screen's language at start (F11 switches).
    #[arg(long, value_enum, default_value = "zh")]
    language: Language,
    /// Debug aid for tests: the screen's state is written to this file after every change.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Only the cashier window (no customer display, no device panel).
    #[arg(long)]
    single_window: bool,
}

/// The demo's cashier: id, name, PIN (printed at start; a demo lane only).
const DEMO_CASHIER: (&str, &str, &str) = ("1001", "演示收银员 Demo", "1234");

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LANEPAY_LOG")
                .unwrap_or_else(|_| "lanepay_ui=info,lanepay_agent=info,warn".into()),
        )
        .init();
    let args = Args::parse();
    let result = match args.command {
        Commands::Demo(demo) => run_demo(&demo),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("lanepay-ui: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// The `lanepay` binary: next to this one (cargo builds both into one directory), else PATH.
fn lanepay_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("lanepay")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("lanepay"))
}

fn run_demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if !has_display() {
        println!(
            "No display found (neither DISPLAY nor WAYLAND_DISPLAY is set).\n\
             To see the cashier screen without a monitor, run it on a virtual display:\n    \
             Xvfb :99 & DISPLAY=:99 lanepay-ui demo --data {0}\n\
             Running the scripted sale headless instead: lanepay demo --headless --data {0}\n",
            args.data.display()
        );
        let binary = lanepay_binary();
        let status = std::process::Command::new(&binary)
            .args(["demo", "--headless", "--data"])
            .arg(&args.data)
            .status()
            .with_context(|| {
                format!(
                    "cannot start {} (build it with `cargo build -p lanepay-agent`)",
                    binary.display()
                )
            })?;
        return Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        });
    }
    let config = demo_config(&args.data)?;
    let (lane, _key) = lanepay_agent::open_lane(&config)?;
    if catalog::count(lane.connection())? == 0 {
        catalog::upsert(lane.connection(), &catalog::demo_products())?;
    }
    let handle = service::start(lane, Arc::new(SystemClock))?;
    let mut devices_config = config.devices.clone();
    devices_config.scanner.driver = lanepay_config::ScannerDriver::Emulator;
    devices_config.display.driver = lanepay_config::DisplayDriver::Emulator;
    devices_config.printer.driver = lanepay_config::PrinterDriver::Emulator;
    let mut devices = lanepay_agent::devices::start(&devices_config, &handle, "Lanepay demo store");
    for status in devices.statuses() {
        handle.publish(lanepay_agent::api::Event::DeviceStatus(status));
    }
    let scanner = devices
        .emulators
        .scanner
        .take()
        .map(|s| Arc::new(Mutex::new(s)));
    println!(
        "Lane {} ready. Sign in as cashier {} with PIN {}.",
        config.terminal.id, DEMO_CASHIER.0, DEMO_CASHIER.2
    );
    let options = ShellOptions {
        handle,
        locale: match args.language {
            Language::Zh => Locale::ZhCn,
            Language::En => Locale::En,
        },
        customer_window: !args.single_window,
        device_panel: !args.single_window,
        state_file: args.state_file.clone(),
        font: lanepay_ui::fonts::load_cjk_font(),
        scanner,
        seed_cashiers: vec![(
            DEMO_CASHIER.0.into(),
            DEMO_CASHIER.1.into(),
            DEMO_CASHIER.2.into(),
        )],
        initial_devices: devices.statuses(),
    };
    shell::run(options).context("the cashier screen failed")?;
    drop(devices);
    Ok(ExitCode::SUCCESS)
}

/// The data directory's configuration when it has one (`lanepay init`), else the demo's.
fn demo_config(data: &Path) -> anyhow::Result<AgentConfig> {
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let path = lanepay_agent::config_path(data);
    if path.exists() {
        return AgentConfig::load(&path).with_context(|| format!("cannot load {}", path.display()));
    }
    // The demo serves no local API, so its token is never used; it only has to be valid.
    Ok(AgentConfig::new_default(
        "T0001",
        "S001",
        "M1001",
        data,
        "ui-demo-serves-no-local-api-0000",
    )?)
}
