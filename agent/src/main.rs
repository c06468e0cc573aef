//! `lanepay`: the lane agent's command line (run the lane, the demo, keys and journal tools).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LANEPAY_LOG")
                .unwrap_or_else(|_| "lanepay=info,lanepay_agent=info,warn".into()),
        )
        .init();
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            // The whole chain, outermost first: what failed, then why.
            eprintln!("lanepay: {error:#}");
            ExitCode::from(2)
        }
    }
}
