//! `lanepay enroll`: registers this lane with the gateway using a one-time token from HQ
//! (the work is `lanepay_agent::enrollment::enroll`).

use std::path::PathBuf;

use lanepay_agent::enrollment::{self, EnrollRequest};

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The gateway's base URL (https://…, or http:// to this machine).
    #[arg(long)]
    pub gateway: String,
    /// The one-time enrollment token HQ issued for this store.
    #[arg(long)]
    pub token: String,
    /// The lane's data directory (created if new).
    #[arg(long)]
    pub data: PathBuf,
    /// A PEM file with the CA or certificate of the gateway to trust (pinned).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// A name for this lane in HQ's fleet view.
    #[arg(long)]
    pub name: Option<String>,
}

pub fn run(args: &EnrollArgs) -> anyhow::Result<()> {
    let request = EnrollRequest {
        gateway_url: args.gateway.clone(),
        token: args.token.clone(),
        data_dir: args.data.clone(),
        ca_file: args.ca_file.clone(),
        name: args.name.clone(),
    };
    let config_path = tokio::runtime::Runtime::new()?.block_on(enrollment::enroll(&request))?;
    let lane = enrollment::enrolled_lane(&config_path)?;
    println!(
        "Enrolled as terminal {} of store {} (merchant {}).",
        lane.terminal_id, lane.store_id, lane.merchant_id
    );
    match lane.config_version {
        Some(version) => println!("Store configuration version {version} applied."),
        None => println!(
            "No store configuration was applied; the lane uses the default limits until the gateway sends a valid one."
        ),
    }
    println!(
        "Gateway key: {}",
        lane.gateway_key.as_deref().unwrap_or("-")
    );
    Ok(())
}
