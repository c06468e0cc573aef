//! `lanepay demo`: the scripted demo against the embedded gateway, one sale per payment method
//! (the work is `lanepay_agent::demo::run_headless`).

use std::path::PathBuf;
use std::process::ExitCode;

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

pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if !args.headless {
        println!(
            "The cashier screen is `lanepay-ui demo`; this command runs the scripted sales headless."
        );
    }
    lanepay_agent::demo::run_headless(&args.data)?;
    Ok(ExitCode::SUCCESS)
}
