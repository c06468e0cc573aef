//! The `lanepay-gateway` binary: a thin clap CLI over the library. `serve` binds, prints the
//! address as the first line of stdout (the same with `--tls-cert/--tls-key`, which serve HTTPS
//! and WSS) and runs until SIGTERM or ctrl-c; `merchant add`
//! registers a merchant and prints its secret (or the gateway's public key) as the last line.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use lanepay_gateway::channel::SandboxConfig;
use lanepay_gateway::clock::{Clock, ManualClock, SystemClock};
use lanepay_gateway::service::{Gateway, GatewayConfig, add_merchant};
use lanepay_gateway::signing::SignType;
use lanepay_gateway::terminals::TerminalService;

/// Lanepay upstream gateway: merchant payment API, sandbox channels, async notify.
#[derive(Debug, Parser)]
#[command(name = "lanepay-gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Manage merchants.
    Merchant {
        #[command(subcommand)]
        command: MerchantCommand,
    },
    /// Enrollment tokens for new lanes.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The lanes (terminals) that sync to this gateway.
    Terminal {
        #[command(subcommand)]
        command: TerminalCommand,
    },
    /// The signed configuration HQ sets per store (offline limits, payment timings).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Set a new configuration version for a store from a TOML file (fields left out take
    /// their defaults); a running gateway pushes it to the store's connected lanes.
    Set {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        store: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Print a store's configuration in force (JSON, with the gateway's signature).
    Show {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        store: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a one-time enrollment token for a store; prints it alone on the last line.
    Create {
        #[arg(long)]
        data: PathBuf,
        /// The store the lane will belong to.
        #[arg(long)]
        store: String,
        /// The merchant the store sells for (default: the only registered merchant).
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long, default_value_t = 7)]
        valid_days: u32,
    },
}

#[derive(Debug, Subcommand)]
enum TerminalCommand {
    /// Every terminal: store, last acknowledged sequence, entries stored, totals by tender, last seen.
    List {
        #[arg(long)]
        data: PathBuf,
    },
    /// Refuse a terminal everywhere from now on.
    Revoke {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Data directory (SQLite databases; created if missing).
    #[arg(long)]
    data: PathBuf,
    /// Address to listen on; port 0 picks a free port. The address is printed as the first
    /// line of stdout.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Unpaid orders close after this many seconds.
    #[arg(long, default_value_t = 1_800)]
    order_timeout_secs: u64,
    /// Sandbox channel configuration (JSON: {"seed": N, "channels": {"wechat": {...}}}).
    #[arg(long)]
    sandbox_config: Option<PathBuf>,
    /// Sandbox seed (overrides the one in --sandbox-config); the same seed replays a run.
    #[arg(long)]
    sandbox_seed: Option<u64>,
    /// Bearer token for the operator endpoints under /admin (disabled without one).
    #[arg(long, env = "LANEPAY_GATEWAY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Base URL payers reach this gateway at (pay_url points at its sandbox wallet page);
    /// default http://LISTEN-ADDRESS (https:// with --tls-cert).
    #[arg(long)]
    public_url: Option<String>,
    /// Serve HTTPS and WSS with this PEM certificate chain (leaf first); needs --tls-key.
    /// TLS 1.2 and 1.3 only, no 0-RTT. Without it the gateway speaks plain HTTP, which lanes
    /// accept only over loopback.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Test only: run on a manual clock starting at this epoch millisecond, moved through
    /// POST /test/clock/advance.
    #[arg(long, hide = true)]
    manual_clock_start_ms: Option<i64>,
}

#[derive(Debug, Subcommand)]
enum MerchantCommand {
    /// Register a merchant. Prints the HMAC secret, or for RSA-SHA256 the gateway's public key
    /// as single-line base64 SPKI DER, alone on the last line.
    Add(MerchantAddArgs),
}

#[derive(Debug, clap::Args)]
struct MerchantAddArgs {
    /// Data directory of the gateway.
    #[arg(long)]
    data: PathBuf,
    /// merchant_id (letters, digits, _ and -; at most 64).
    #[arg(long)]
    id: String,
    /// Display name.
    #[arg(long)]
    name: String,
    /// Signing algorithm, pinned for this merchant.
    #[arg(long, value_parser = ["HMAC-SHA256", "RSA-SHA256"])]
    sign_type: String,
    /// The merchant's RSA public key (PEM) for RSA-SHA256.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// Hosts the merchant's notify_url may point at (repeat or list several).
    #[arg(long, num_args = 1.., required = true)]
    notify_host: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Merchant {
            command: MerchantCommand::Add(args),
        } => merchant_add(&args),
        Command::Token {
            command:
                TokenCommand::Create {
                    data,
                    store,
                    merchant,
                    valid_days,
                },
        } => token_create(&data, &store, merchant, valid_days),
        Command::Terminal {
            command: TerminalCommand::List { data },
        } => terminal_list(&data),
        Command::Terminal {
            command: TerminalCommand::Revoke { data, id },
        } => terminal_revoke(&data, &id),
        Command::Config {
            command: ConfigCommand::Set { data, store, file },
        } => config_set(&data, &store, &file),
        Command::Config {
            command: ConfigCommand::Show { data, store },
        } => config_show(&data, &store),
    };
    if let Err(error) = result {
        eprintln!("lanepay-gateway: {error:#}");
        std::process::exit(1);
    }
}

fn terminal_service(data: &std::path::Path) -> Result<TerminalService> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    TerminalService::open(data, Arc::new(SystemClock)).context("opening the terminal registry")
}

/// The merchant a token is for: the one named, or the only one registered.
fn token_merchant(data: &std::path::Path, named: Option<String>) -> Result<String> {
    if let Some(merchant) = named {
        return Ok(merchant);
    }
    let path = data.join("gateway.sqlite");
    let connection =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| {
                format!(
                    "no merchants yet in {} (run `merchant add` first, or pass --merchant)",
                    path.display()
                )
            })?;
    let merchants: Vec<String> = connection
        .prepare("SELECT merchant_id FROM merchants ORDER BY merchant_id")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    match merchants.as_slice() {
        [only] => Ok(only.clone()),
        [] => bail!("no merchant is registered: run `merchant add` first, or pass --merchant"),
        _ => bail!(
            "several merchants are registered ({}): pass --merchant",
            merchants.join(", ")
        ),
    }
}

fn token_create(
    data: &std::path::Path,
    store: &str,
    merchant: Option<String>,
    valid_days: u32,
) -> Result<()> {
    let merchant = token_merchant(data, merchant)?;
    let token = terminal_service(data)?.create_token(store, &merchant, valid_days)?;
    println!(
        "enrollment token for store {store} (merchant {merchant}), valid {valid_days} days, single use:"
    );
    println!("{token}");
    Ok(())
}

fn config_set(data: &std::path::Path, store: &str, file: &std::path::Path) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let input: lanepay_gateway::terminals::service::ConfigInput =
        toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    let signed = terminal_service(data)?.set_config(store, &input)?;
    println!("{}", serde_json::to_string_pretty(&signed)?);
    println!(
        "store {store}: configuration version {} set; a running gateway pushes it to the store's connected lanes within a few seconds",
        signed.config.version
    );
    Ok(())
}

fn config_show(data: &std::path::Path, store: &str) -> Result<()> {
    let signed = terminal_service(data)?.current_config(store)?;
    println!("{}", serde_json::to_string_pretty(&signed)?);
    Ok(())
}

fn terminal_revoke(data: &std::path::Path, terminal_id: &str) -> Result<()> {
    terminal_service(data)?.revoke(terminal_id)?;
    println!("terminal {terminal_id} revoked: it is refused everywhere from now on");
    Ok(())
}

fn terminal_list(data: &std::path::Path) -> Result<()> {
    let fleet = terminal_service(data)?.fleet()?;
    println!(
        "{:<14} {:<8} {:>9} {:>9} {:<30} {:<14} STATE",
        "TERMINAL", "STORE", "LAST SEQ", "ENTRIES", "TOTALS BY TENDER (yuan)", "LAST SEEN"
    );
    let now = SystemClock.now_ms();
    for terminal in fleet {
        let mut totals: Vec<_> = terminal.totals_by_tender_fen.iter().collect();
        totals.sort();
        let totals: Vec<String> = totals
            .iter()
            .map(|(method, fen)| format!("{method} {}.{:02}", *fen / 100, (*fen % 100).abs()))
            .collect();
        let seen = terminal
            .last_seen_ms
            .map(|ms| format!("{} s ago", (now - ms).max(0) / 1000))
            .unwrap_or_else(|| "never".into());
        let state = if terminal.revoked {
            "revoked"
        } else if terminal.online {
            "online"
        } else {
            "offline"
        };
        println!(
            "{:<14} {:<8} {:>9} {:>9} {:<30} {:<14} {}",
            terminal.terminal_id,
            terminal.store_id,
            terminal.last_acknowledged_seq,
            terminal.entries,
            if totals.is_empty() {
                "-".into()
            } else {
                totals.join(", ")
            },
            seen,
            state
        );
    }
    Ok(())
}

fn merchant_add(args: &MerchantAddArgs) -> Result<()> {
    let sign_type: SignType = args.sign_type.parse()?;
    let public_key = match &args.public_key {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None => None,
    };
    if sign_type == SignType::RsaSha256 && public_key.is_none() {
        bail!("--sign-type RSA-SHA256 needs --public-key FILE");
    }
    let printed = add_merchant(
        &args.data,
        &args.id,
        &args.name,
        sign_type,
        public_key.as_deref(),
        &args.notify_host,
        SystemClock.now_ms(),
    )
    .context("registering the merchant")?;
    let what = match sign_type {
        SignType::HmacSha256 => "merchant secret (HMAC-SHA256 key; keep it secret):",
        SignType::RsaSha256 => {
            "gateway RSA public key (base64 SPKI DER; verify replies and notifies with it):"
        }
    };
    println!("merchant {} registered ({sign_type})", args.id);
    println!("{what}");
    println!("{printed}");
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve_async(args))
}

async fn serve_async(args: ServeArgs) -> Result<()> {
    let mut sandbox = match &args.sandbox_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<SandboxConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => SandboxConfig::default(),
    };
    if let Some(seed) = args.sandbox_seed {
        sandbox.seed = seed;
    }
    // Certificate problems show before anything listens.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            lanepay_gateway::tls::server_config(cert, key)
                .context("cannot serve HTTPS (--tls-cert, --tls-key)")?,
        ),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    let manual_clock = args
        .manual_clock_start_ms
        .map(|start| Arc::new(ManualClock::new(start)));
    let clock: Arc<dyn Clock> = match &manual_clock {
        Some(manual) => manual.clone(),
        None => Arc::new(SystemClock),
    };
    let order_timeout_ms =
        i64::try_from(args.order_timeout_secs.saturating_mul(1_000)).unwrap_or(i64::MAX);
    let config = GatewayConfig {
        data_dir: args.data.clone(),
        order_timeout_ms,
        sandbox,
        admin_token: args.admin_token.clone().filter(|token| !token.is_empty()),
        public_base_url: args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{address}")),
    };
    let gateway = tokio::task::spawn_blocking(move || Gateway::open(config, clock))
        .await
        .context("opening the gateway")?
        .with_context(|| format!("opening the data directory {}", args.data.display()))?;
    // The first line of stdout is the address, alone: scripts and tests read it to connect.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{address}")?;
    stdout.flush()?;
    tracing::info!(%address, %scheme, data = %args.data.display(), manual_clock = manual_clock.is_some(), "gateway listening");
    let gateway = Arc::new(gateway);
    match tls {
        Some(tls) => {
            lanepay_gateway::run_tls(listener, tls, shutdown_signal(), gateway, manual_clock)
                .await?;
        }
        None => lanepay_gateway::run(listener, shutdown_signal(), gateway, manual_clock).await?,
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
