//! Making a lane's data directory and enrolling it with a gateway: what `lanepay init` and
//! `lanepay enroll` do, here so the demo, the cashier screen and tests do it the same way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use lanepay_config::{AgentConfig, GatewayConfig};

use crate::clock::{Clock as _, SystemClock};
use crate::remote_config;
use crate::store::{self, catalog, journal};

/// A lane's data directory to create (what is there already is left alone).
#[derive(Debug, Clone)]
pub struct InitRequest {
    pub data_dir: PathBuf,
    pub terminal_id: String,
    pub store_id: String,
    pub merchant_id: String,
    /// Loopback address of the local API (port 0: any free port).
    pub listen: SocketAddr,
    /// Load the demo and training catalog (when the catalog is empty).
    pub demo_catalog: bool,
}

/// A lane to enroll with a gateway, with the one-time token HQ issued.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    /// The gateway's base URL (https://…, or http:// to this machine).
    pub gateway_url: String,
    pub token: String,
    /// The lane's data directory (created if new).
    pub data_dir: PathBuf,
    /// A PEM file with the CA or certificate of the gateway to trust (pinned).
    pub ca_file: Option<PathBuf>,
    /// A name for this lane in HQ's fleet view.
    pub name: Option<String>,
}

/// Creates what is missing and leaves what exists alone; returns the configuration path.
pub fn init(request: &InitRequest) -> anyhow::Result<PathBuf> {
    let data_dir = &request.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let data = std::fs::canonicalize(data_dir)?;
    // The directory holds the terminal key, the API token and the sales: the lane's user only.
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("cannot restrict {} to its owner", data.display()))?;
    let config_path = crate::config_path(&data);
    if !config_path.exists() {
        let mut config = AgentConfig::new_default(
            &request.terminal_id,
            &request.store_id,
            &request.merchant_id,
            &data,
            random_token()?,
        )?;
        config.local_api = lanepay_config::LocalApiConfig::new(
            request.listen,
            config.local_api.token().to_string(),
        );
        config.validate(&config_path)?;
        write_private(&config_path, &config.to_toml_string()?)?;
    }
    let config = AgentConfig::load(&config_path)?;
    let (lane, key) = crate::open_lane(&config)?;
    if request.demo_catalog && catalog::count(lane.connection())? == 0 {
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

/// Whether the lane in `data_dir` has enrolled with a gateway (its configuration names one
/// and its database holds the gateway's key).
pub fn is_enrolled(data_dir: &Path) -> anyhow::Result<bool> {
    let config_path = crate::config_path(data_dir);
    if !config_path.exists() {
        return Ok(false);
    }
    let config = AgentConfig::load(&config_path)?;
    Ok(crate::uplink_settings(&config)?.is_some())
}

/// Creates the data dir if new (lanepay init), enrolls, writes agent.toml; returns its path.
/// What happened is logged; the caller says it to the person.
pub async fn enroll(request: &EnrollRequest) -> anyhow::Result<PathBuf> {
    lanepay_sync::client::check_url(&request.gateway_url)?;
    // The path is stored in the configuration as given, resolved against the configuration
    // file's directory when read: store it absolute so it means the same file later.
    let ca_file = match &request.ca_file {
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
    let init_request = InitRequest {
        data_dir: request.data_dir.clone(),
        terminal_id: "T0000".into(),
        store_id: "S000".into(),
        merchant_id: "M000".into(),
        listen: "127.0.0.1:7420".parse()?,
        demo_catalog: false,
    };
    let config_path = tokio::task::spawn_blocking(move || init(&init_request))
        .await
        .context("the lane's setup task failed")??;
    let mut config = AgentConfig::load(&config_path)?;
    let (lane, key) = crate::open_lane(&config)?;
    if journal::head(lane.connection())?.0 > 0
        && store::meta(lane.connection(), "gateway_keys")?.is_none()
    {
        bail!(
            "this lane already recorded sales under terminal {} before enrolling; enroll a new data directory",
            config.terminal.id
        );
    }
    drop(lane);
    let enrolled = lanepay_sync::client::enroll(
        &request.gateway_url,
        &request.token,
        &key,
        request.name.clone(),
        tls,
    )
    .await
    .context("enrollment failed")?;
    config.terminal.id = enrolled.terminal_id.clone();
    config.terminal.store_id = enrolled.store_id.clone();
    config.terminal.merchant_id = enrolled.merchant_id.clone();
    if request.name.is_some() {
        config.terminal.name = request.name.clone();
    }
    config.gateway = Some(GatewayConfig {
        url: request.gateway_url.clone(),
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
    tracing::info!(
        terminal = %enrolled.terminal_id,
        store = %enrolled.store_id,
        merchant = %enrolled.merchant_id,
        gateway_key = enrolled.gateway_keys.first().map(String::as_str).unwrap_or("-"),
        "enrolled"
    );
    apply_initial_config(&mut conn, &key, &enrolled);
    Ok(config_path)
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
        tracing::info!("the gateway sent no configuration; the lane uses the default limits");
        return;
    };
    let Some(gateway_key) = enrolled
        .gateway_keys
        .first()
        .and_then(|k| lanepay_sync::auth::parse_public_key(k))
    else {
        tracing::warn!("the gateway key is malformed; the configuration was not applied");
        return;
    };
    let lane = remote_config::LaneIdentity {
        key,
        terminal_id: &enrolled.terminal_id,
        store_id: &enrolled.store_id,
        gateway_key: &gateway_key,
    };
    match remote_config::apply(conn, &lane, signed, SystemClock.now_ms()) {
        Ok(config) => tracing::info!(
            version = config.version,
            offline_card_per_payment_fen = config.offline_card.per_payment_fen,
            offline_card_total_fen = config.offline_card.total_fen,
            "store configuration applied"
        ),
        Err(error) => tracing::warn!(
            %error,
            "the configuration sent at enrollment was refused; the lane uses the default limits until a valid one arrives"
        ),
    }
}

/// Points an enrolled lane at `gateway_url` (the same gateway at a new address: the embedded
/// gateway of the demo listens on a new port each run). The gateway key stays what it was.
pub fn set_gateway_url(config_path: &Path, gateway_url: &str) -> anyhow::Result<()> {
    lanepay_sync::client::check_url(gateway_url)?;
    let mut config = AgentConfig::load(config_path)?;
    let Some(gateway) = config.gateway.as_mut() else {
        bail!(
            "{} names no gateway: enroll the lane first",
            config_path.display()
        );
    };
    if gateway.url == gateway_url {
        return Ok(());
    }
    gateway.url = gateway_url.to_string();
    config.validate(config_path)?;
    replace_file(config_path, &config.to_toml_string()?)
}

/// What an enrolled lane's configuration says about it, for the person enrolling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledLane {
    pub terminal_id: String,
    pub store_id: String,
    pub merchant_id: String,
    /// The first gateway key recorded, hex.
    pub gateway_key: Option<String>,
    /// The store configuration version applied, if one was.
    pub config_version: Option<u64>,
}

/// Reads back what enrollment recorded in `config_path`'s lane.
pub fn enrolled_lane(config_path: &Path) -> anyhow::Result<EnrolledLane> {
    let config = AgentConfig::load(config_path)?;
    let conn = store::open_read_only(&store::db_path(&config.storage.data_dir))?;
    let gateway_key = store::meta(&conn, "gateway_keys")?
        .and_then(|keys| keys.split(',').next().map(str::to_string));
    let config_version = remote_config::current(&conn)
        .ok()
        .flatten()
        .map(|config| config.version);
    Ok(EnrolledLane {
        terminal_id: config.terminal.id,
        store_id: config.terminal.store_id,
        merchant_id: config.terminal.merchant_id,
        gateway_key,
        config_version,
    })
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness for the API token: {e}"))?;
    Ok(hex::encode(bytes))
}

/// The configuration holds the API token: only the lane's user may read it.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
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

/// Writes `text` to `path` atomically, readable by the owner only.
fn replace_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
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
