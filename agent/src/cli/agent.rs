//! `lanepay agent`: the lane headless, serving its local API until stopped.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use lanepay_agent::clock::{Clock, OffsetClock};
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
    let (lane, key) = lanepay_agent::open_lane(&config)?;
    let terminal_id = config.terminal.id.clone();
    let handle = service::start(lane, clock.clone())?;
    let store_name = config
        .terminal
        .name
        .clone()
        .unwrap_or_else(|| format!("Store {}", config.terminal.store_id));
    // Kept alive until the lane stops; a missing device is reported, not fatal.
    let devices = lanepay_agent::devices::start(&config.devices, &handle, &store_name);
    service::spawn_full_journal_check(
        store::db_path(&config.storage.data_dir),
        terminal_id.clone(),
        key.verifying_key(),
        &handle,
    )?;
    let (stop_uplink, uplink_shutdown) = tokio::sync::watch::channel(false);
    let uplink = match lanepay_agent::uplink_settings(&config)? {
        Some(settings) => Some(lanepay_agent::uplink::spawn(
            settings,
            key.clone(),
            clock.clone(),
            handle.clone(),
            uplink_shutdown,
        )),
        None => {
            tracing::warn!(
                "this lane is not enrolled with a gateway: sales stay on the lane (run `lanepay enroll`)"
            );
            None
        }
    };
    // Payments: attempts left unresolved by a crash are resumed before anything else.
    let payments = lanepay_agent::payments::start_with_card_reader(
        &config,
        devices.nfc_connstring(),
        handle.clone(),
        key.clone(),
        clock.clone(),
        // Payment results pushed on the live channel; query polling stays the fallback.
        uplink.as_ref().map(|uplink| uplink.pushes()),
    )
    .await?;
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
        handle,
        config.local_api.token().to_string(),
        shutdown_signal(),
    )
    .await?;
    payments.stop().await;
    let _ = stop_uplink.send(true);
    if let Some(uplink) = uplink {
        uplink.join().await?;
    }
    // The devices (and their emulators) stop last: nothing above uses them any more.
    drop(devices);
    tracing::info!("lane stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "no SIGTERM handler; stop with ctrl-c");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
