//! `lanepay init`: a lane's data directory, ready to run (the work is
//! `lanepay_agent::enrollment::init`).

use std::net::SocketAddr;
use std::path::PathBuf;

use lanepay_agent::enrollment;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The data directory to create (configuration, key and database go there).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "T0001")]
    pub terminal_id: String,
    #[arg(long, default_value = "S001")]
    pub store_id: String,
    #[arg(long, default_value = "M1001")]
    pub merchant_id: String,
    /// Loopback address of the local API (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:7420")]
    pub listen: SocketAddr,
    /// Load the demo and training catalog.
    #[arg(long)]
    pub demo_catalog: bool,
}

/// Creates what is missing and leaves what exists alone; returns the configuration path.
pub fn run(args: &InitArgs) -> anyhow::Result<PathBuf> {
    enrollment::init(&enrollment::InitRequest {
        data_dir: args.data.clone(),
        terminal_id: args.terminal_id.clone(),
        store_id: args.store_id.clone(),
        merchant_id: args.merchant_id.clone(),
        listen: args.listen,
        demo_catalog: args.demo_catalog,
    })
}
