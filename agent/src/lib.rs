//! The lane agent: the checkout core ([`lanepay_checkout`]) made durable and reachable.
//!
//! - [`store`]: the SQLite database (catalog, sales, the signed journal and its outbox);
//! - [`lane`]: commands in, events out, every change committed with its journal entry;
//! - [`service`]: the lane on its own thread behind an async handle;
//! - [`local_api`]: the same interface as JSON over a loopback WebSocket;
//! - [`runtime`]: a running lane (thread, devices, uplink, payments) started and stopped in order;
//! - [`key`], [`clock`]: the terminal key file and the injected clock.

pub mod api;
pub mod clock;
pub mod convert;
pub mod demo;
pub mod devices;
pub mod embedded_gateway;
pub mod enrollment;
pub mod key;
pub mod lane;
pub mod local_api;
pub mod payments;
pub mod remote_config;
pub mod runtime;
pub mod service;
pub mod shift;
pub mod store;
pub mod uplink;

use std::path::Path;

use anyhow::Context;
use lanepay_config::AgentConfig;

/// Opens the lane described by a configuration: its key (created on first start), its
/// database (created and migrated), the checks of [`lane::Lane::open`].
pub fn open_lane(config: &AgentConfig) -> anyhow::Result<(lane::Lane, ed25519_dalek::SigningKey)> {
    let data_dir = &config.storage.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let key = key::load_or_create(data_dir)?;
    let durability = match config.storage.journal_sync {
        lanepay_config::JournalSync::Full => store::Durability::Full,
        lanepay_config::JournalSync::Normal => store::Durability::Normal,
    };
    let conn = store::open(&store::db_path(data_dir), durability)?;
    let lane = lane::Lane::open(conn, key.clone(), lane::LaneSettings::from_config(config))?;
    Ok((lane, key))
}

/// Where and how this lane syncs, when it is enrolled: the gateway URL from the configuration
/// and the gateway key recorded at enrollment.
pub fn uplink_settings(config: &AgentConfig) -> anyhow::Result<Option<uplink::UplinkSettings>> {
    let Some(gateway) = &config.gateway else {
        return Ok(None);
    };
    let db = store::db_path(&config.storage.data_dir);
    let conn = store::open(&db, store::Durability::Full)?;
    let Some(keys) = store::meta(&conn, "gateway_keys")? else {
        return Ok(None);
    };
    let first = keys.split(',').next().unwrap_or_default();
    let gateway_key = lanepay_sync::auth::parse_public_key(first)
        .with_context(|| format!("the stored gateway key `{first}` is damaged; enroll again"))?;
    // Loaded once here: a missing or broken file is named before anything connects.
    let tls = gateway
        .ca_file
        .as_deref()
        .map(lanepay_sync::client::TlsTrust::pinned)
        .transpose()?;
    Ok(Some(uplink::UplinkSettings {
        base_url: gateway.url.clone(),
        terminal_id: config.terminal.id.clone(),
        store_id: config.terminal.store_id.clone(),
        gateway_key,
        db,
        tls,
    }))
}

/// The configuration file's conventional place inside a data directory.
pub fn config_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("agent.toml")
}
