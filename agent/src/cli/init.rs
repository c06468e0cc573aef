//! `lanepay init`: a lane's data directory, ready to run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use lanepay_agent::store::{self, catalog};
use lanepay_config::AgentConfig;

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
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create {}", args.data.display()))?;
    let data = std::fs::canonicalize(&args.data)?;
    // The directory holds the terminal key, the API token and the sales: the lane's user only.
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("cannot restrict {} to its owner", data.display()))?;
    let config_path = lanepay_agent::config_path(&data);
    if !config_path.exists() {
        let mut config = AgentConfig::new_default(
            &args.terminal_id,
            &args.store_id,
            &args.merchant_id,
            &data,
            random_token()?,
        )?;
        config.local_api =
            lanepay_config::LocalApiConfig::new(args.listen, config.local_api.token().to_string());
        config.validate(&config_path)?;
        write_private(&config_path, &config.to_toml_string()?)?;
    }
    let config = AgentConfig::load(&config_path)?;
    let (lane, key) = lanepay_agent::open_lane(&config)?;
    if args.demo_catalog && catalog::count(lane.connection())? == 0 {
        catalog::upsert(lane.connection(), &catalog::demo_products())?;
    }
    tracing::info!(
        config = %config_path.display(),
        public_key = %hex::encode(key.verifying_key().to_bytes()),
        db = %store::db_path(&data).display(),
        "lane initialised"
    );
    Ok(config_path)
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness for the API token: {e}"))?;
    Ok(hex::encode(bytes))
}

/// The configuration holds the API token: only the lane's user may read it.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}
