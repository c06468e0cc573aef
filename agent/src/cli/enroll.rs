//! `lanepay enroll`: registers this lane with the gateway using a one-time token from HQ.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use lanepay_agent::clock::{Clock, SystemClock};
use lanepay_agent::remote_config;
use lanepay_agent::store::{self, journal};
use lanepay_config::{AgentConfig, GatewayConfig};

use super::init::{self, InitArgs};

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
    lanepay_sync::client::check_url(&args.gateway)?;
    // The path is stored in the configuration as given, resolved against the configuration
    // file's directory when read: store it absolute so it means the same file later.
    let ca_file = match &args.ca_file {
        Some(path) => Some(
            std::path::absolute(path)
                .with_context(|| format!("cannot resolve the CA file path {}", path.display()))?,
        ),
        None => None,
    };
    let tls = ca_file
        .as_deref()
        .map(lanepay_sync::client::TlsTrust::pinned)
        .transpose()?;
    let config_path = init::run(&InitArgs {
        data: args.data.clone(),
        terminal_id: "T0000".into(),
        store_id: "S000".into(),
        merchant_id: "M000".into(),
        listen: "127.0.0.1:7420".parse()?,
        demo_catalog: false,
    })?;
    let mut config = AgentConfig::load(&config_path)?;
    let (lane, key) = lanepay_agent::open_lane(&config)?;
    if journal::head(lane.connection())?.0 > 0
        && store::meta(lane.connection(), "gateway_keys")?.is_none()
    {
        bail!(
            "this lane already recorded sales under terminal {} before enrolling; enroll a new data directory",
            config.terminal.id
        );
    }
    drop(lane);
    let enrolled = tokio::runtime::Runtime::new()?
        .block_on(lanepay_sync::client::enroll(
            &args.gateway,
            &args.token,
            &key,
            args.name.clone(),
            tls,
        ))
        .context("enrollment failed")?;
    config.terminal.id = enrolled.terminal_id.clone();
    config.terminal.store_id = enrolled.store_id.clone();
    config.terminal.merchant_id = enrolled.merchant_id.clone();
    if args.name.is_some() {
        config.terminal.name = args.name.clone();
    }
    config.gateway = Some(GatewayConfig {
        url: args.gateway.clone(),
        ca_file,
    });
    config.validate(&config_path)?;
    replace_file(&config_path, &config.to_toml_string()?)?;
    let mut conn = store::open(
        &store::db_path(&config.storage.data_dir),
        store::Durability::Full,
    )?;
    store::set_meta(&conn, "terminal_id", &enrolled.terminal_id)?;
    store::set_meta(&conn, "gateway_keys", &enrolled.gateway_keys.join(","))?;
    println!(
        "Enrolled as terminal {} of store {} (merchant {}).",
        enrolled.terminal_id, enrolled.store_id, enrolled.merchant_id
    );
    apply_initial_config(&mut conn, &key, &enrolled);
    println!(
        "Gateway key: {}",
        enrolled
            .gateway_keys
            .first()
            .map(String::as_str)
            .unwrap_or("-")
    );
    Ok(())
}

/// Applies the configuration that came with the enrollment. A refusal (a signature that does
/// not verify with the gateway key just received) leaves the lane enrolled on the defaults;
/// the uplink fetches the configuration again on every connect.
fn apply_initial_config(
    conn: &mut rusqlite::Connection,
    key: &ed25519_dalek::SigningKey,
    enrolled: &lanepay_sync::wire::EnrollResponse,
) {
    let Some(signed) = &enrolled.config else {
        println!("The gateway sent no configuration; the lane uses the default limits.");
        return;
    };
    let Some(gateway_key) = enrolled
        .gateway_keys
        .first()
        .and_then(|k| lanepay_sync::auth::parse_public_key(k))
    else {
        println!("The gateway key is malformed; the configuration was not applied.");
        return;
    };
    let lane = remote_config::LaneIdentity {
        key,
        terminal_id: &enrolled.terminal_id,
        store_id: &enrolled.store_id,
        gateway_key: &gateway_key,
    };
    let now_ms = SystemClock.now_ms();
    match remote_config::apply(conn, &lane, signed, now_ms) {
        Ok(config) => println!(
            "Store configuration version {} applied (offline card limit {} fen per payment, {} fen in total).",
            config.version, config.offline_card.per_payment_fen, config.offline_card.total_fen
        ),
        Err(error) => {
            tracing::warn!(%error, "the configuration sent at enrollment was refused");
            println!(
                "The store configuration was refused ({error}); the lane uses the default limits until a valid one arrives."
            );
        }
    }
}

/// Writes `text` to `path` atomically, readable by the owner only.
fn replace_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("toml.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}
