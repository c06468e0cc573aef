//! `lanepay-ui`: the cashier screen. `lanepay-ui demo --data DIR` starts the embedded gateway,
//! a lane enrolled to it with emulated devices, the cashier window, the customer display and a
//! device panel where a person plays the customer.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use lanepay_ui::demo::DemoLane;
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
    /// A demo on this machine: the embedded gateway, a lane enrolled to it with emulated
    /// scanner, display, printer and NFC reader, the cashier screen, the customer display and
    /// a device panel. Cashier 1001, PIN 1234. Without a display: the scripted headless demo.
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

fn run_demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if !has_display() {
        println!(
            "No display found (neither DISPLAY nor WAYLAND_DISPLAY is set).\n\
             To see the cashier screen without a monitor, run it on a virtual display:\n    \
             Xvfb :99 & DISPLAY=:99 lanepay-ui demo --data {0}\n\
             Running the scripted sale headless instead (lanepay demo --headless --data {0}):\n",
            args.data.display()
        );
        lanepay_agent::demo::run_headless(&args.data)?;
        return Ok(ExitCode::SUCCESS);
    }
    // The lane's uplink and payments runtime and the customer's calls to the gateway run on
    // this runtime; the screen has the main thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the demo's runtime")?;
    let lane = runtime.block_on(DemoLane::start(&args.data))?;
    println!(
        "Lane {} ready, enrolled with the embedded gateway. Sign in as cashier {} with PIN {}.",
        lane.terminal_id, DEMO_CASHIER.0, DEMO_CASHIER.2
    );
    let options = ShellOptions {
        handle: lane.handle().clone(),
        locale: match args.language {
            Language::Zh => Locale::ZhCn,
            Language::En => Locale::En,
        },
        customer_window: !args.single_window,
        device_panel: !args.single_window,
        state_file: args.state_file.clone(),
        font: lanepay_ui::fonts::load_cjk_font(),
        scanner: lane.scanner.clone(),
        seed_cashiers: vec![(
            DEMO_CASHIER.0.into(),
            DEMO_CASHIER.1.into(),
            DEMO_CASHIER.2.into(),
        )],
        initial_devices: lane.device_statuses(),
        customer: Some(lane.customer.clone()),
    };
    let shown = shell::run(options).context("the cashier screen failed");
    // A second SIGTERM or Ctrl+C while the lane stops ends the program at once (the first was
    // taken by the screen; the journal is safe either way).
    runtime.spawn(async {
        lanepay_agent::runtime::stop_signal().await;
        eprintln!("lanepay-ui: asked again to stop; stopping now");
        std::process::exit(1);
    });
    runtime.block_on(lane.stop());
    shown?;
    println!("Lane stopped; everything it did is in its journal.");
    Ok(ExitCode::SUCCESS)
}
