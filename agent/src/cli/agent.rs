//! `lanepay agent`: the lane headless, serving its local API until stopped.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use lanepay_agent::clock::{Clock, OffsetClock};
use lanepay_agent::runtime::LaneRuntime;
use lanepay_agent::{local_api, service, store};
use lanepay_config::AgentConfig;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The configuration file.
    #[arg(long, conflicts_with = "data")]
    pub config: Option<PathBuf>,
    /// The data directory (its agent.toml is used).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Test only: run the lane with its clock this many ms off (a lane with a wrong clock).
    #[arg(long, hide = true, default_value_t = 0, allow_hyphen_values = true)]
    pub clock_offset_ms: i64,
}

impl AgentArgs {
    pub fn config_path(&self) -> anyhow::Result<PathBuf> {
        match (&self.config, &self.data) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(data)) => Ok(lanepay_agent::config_path(data)),
            (None, None) => anyhow::bail!(
                "give --config FILE or --data DIR (run `lanepay init --data DIR` first)"
            ),
        }
    }
}

pub fn run(args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let config = AgentConfig::load(&args.config_path()?)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(config, Arc::new(OffsetClock(args.clock_offset_ms))))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: AgentConfig, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let terminal_id = config.terminal.id.clone();
    let store_name = config
        .terminal
        .name
        .clone()
        .unwrap_or_else(|| format!("Store {}", config.terminal.store_id));
    let mut lane = LaneRuntime::open(&config, clock, &store_name)?;
    service::spawn_full_journal_check(
        store::db_path(&config.storage.data_dir),
        terminal_id.clone(),
        lane.key().verifying_key(),
        &lane.handle,
    )?;
    lane.connect(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.local_api.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (local_api.listen)",
                config.local_api.listen
            )
        })?;
    let address = listener.local_addr()?;
    // The first line of output says where the lane listens; scripts and tests read it.
    println!("lanepay agent {terminal_id} listening on ws://{address}/v1/ws");
    tracing::info!(%address, terminal = %terminal_id, "lane ready");
    local_api::run(
        listener,
        lane.handle.clone(),
        config.local_api.token().to_string(),
        lanepay_agent::runtime::stop_signal(),
    )
    .await?;
    lane.stop().await?;
    tracing::info!("lane stopped");
    Ok(())
}
