//! A gateway under test: `lanepay-gateway merchant add` prepares its data directory, `serve`
//! runs it on a free loopback port (its first stdout line is the address), SIGKILL ends it,
//! and [`Hq`] reads the fleet view and alarms over HQ's HTTP endpoints the way an operator
//! would. [`stored_entries`] reads what the gateway stored straight from its database.

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::lane::{REAP_TIMEOUT, STARTUP_TIMEOUT};

/// The merchant every test gateway has.
pub const MERCHANT_ID: &str = "M1001";
/// The admin (HQ) bearer token every test gateway is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// SIGKILL's number on every Unix the gateway runs on.
const SIGKILL: i32 = 9;
/// How often a starting gateway is asked whether it is ready.
const READY_POLL: Duration = Duration::from_millis(20);
/// How long one HQ call may take.
const HQ_TIMEOUT: Duration = Duration::from_secs(10);

/// A gateway data directory with one merchant registered.
#[derive(Debug, Clone)]
pub struct GatewayDir {
    binary: PathBuf,
    data: PathBuf,
}

impl GatewayDir {
    /// Registers merchant [`MERCHANT_ID`] in `data` (created if missing).
    pub fn create(binary: &Path, data: &Path) -> anyhow::Result<GatewayDir> {
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        let dir = GatewayDir {
            binary: binary.to_path_buf(),
            data: data.to_path_buf(),
        };
        dir.cli(&[
            "merchant",
            "add",
            "--id",
            MERCHANT_ID,
            "--name",
            "Test Merchant",
            "--sign-type",
            "HMAC-SHA256",
            "--notify-host",
            "127.0.0.1",
        ])?;
        Ok(dir)
    }

    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The terminal database (`terminals.sqlite`).
    pub fn terminals_db(&self) -> PathBuf {
        self.data.join("terminals.sqlite")
    }

    pub fn log_path(&self) -> PathBuf {
        self.data.join("gateway.log")
    }

    /// Runs `lanepay-gateway ARGS --data DIR` to completion; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = std::process::Command::new(&self.binary)
            .args(args)
            .arg("--data")
            .arg(&self.data)
            .output()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        if !output.status.success() {
            bail!(
                "`lanepay-gateway {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `token create --store STORE --valid-days 7`: the token from the last line.
    pub fn create_token(&self, store: &str) -> anyhow::Result<String> {
        let stdout = self.cli(&["token", "create", "--store", store, "--valid-days", "7"])?;
        stdout
            .lines()
            .last()
            .map(|line| line.trim().to_string())
            .filter(|token| !token.is_empty())
            .with_context(|| format!("`token create` printed no token: {stdout:?}"))
    }

    /// `serve --listen 127.0.0.1:0 --admin-token …`, waiting for the address line.
    pub async fn start(&self) -> anyhow::Result<RunningGateway> {
        self.start_with(&[]).await
    }

    /// [`GatewayDir::start`] with extra arguments (e.g. `--manual-clock-start-ms=…`).
    pub async fn start_with(&self, extra: &[&str]) -> anyhow::Result<RunningGateway> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let log_offset = log.metadata()?.len();
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .arg("--data")
            .arg(&self.data)
            .args(["--listen", "127.0.0.1:0", "--admin-token", ADMIN_TOKEN])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} serve", self.binary.display()))?;
        let stdout = child.stdout.take().context("the gateway has no stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut first_line = String::new();
        let read = tokio::time::timeout(STARTUP_TIMEOUT, reader.read_line(&mut first_line)).await;
        let log_text = || read_from(&log_path, log_offset).unwrap_or_default();
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => bail!(
                "the gateway ended before printing its address; its log:\n{}",
                log_text()
            ),
            Ok(Err(error)) => bail!("cannot read the gateway's stdout: {error}"),
            Err(_) => bail!(
                "the gateway printed nothing within {STARTUP_TIMEOUT:?}; its log:\n{}",
                log_text()
            ),
        }
        let address: SocketAddr = first_line.trim().parse().with_context(|| {
            format!("the gateway's first line is not an address: {first_line:?}")
        })?;
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
        });
        let mut gateway = RunningGateway {
            child,
            address,
            log_path,
            log_offset,
        };
        gateway.wait_ready().await?;
        Ok(gateway)
    }
}

/// A running `lanepay-gateway serve`.
#[derive(Debug)]
pub struct RunningGateway {
    child: Child,
    address: SocketAddr,
    log_path: PathBuf,
    log_offset: u64,
}

impl RunningGateway {
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// HQ's view of this gateway.
    pub fn hq(&self) -> anyhow::Result<Hq> {
        Hq::new(&self.url())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until HQ's fleet view answers. `serve` prints its address before it opens the
    /// terminal registry, so the first line alone does not mean the terminal endpoints are up
    /// (and a CLI command that migrates `terminals.sqlite` at that moment can make `serve`
    /// fail with "table tokens already exists").
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let hq = self.hq()?;
        let started = std::time::Instant::now();
        loop {
            if hq.fleet().await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the gateway ended ({status}) right after printing its address; its log:\n{}",
                    self.log()
                );
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                bail!(
                    "the gateway's HQ endpoint did not answer within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// What this process wrote to stderr so far.
    pub fn log(&self) -> String {
        read_from(&self.log_path, self.log_offset)
            .unwrap_or_else(|error| format!("(cannot read {}: {error})", self.log_path.display()))
    }

    /// SIGKILL; fails if the gateway had ended on its own before.
    pub async fn kill(mut self) -> anyhow::Result<String> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the gateway ended on its own ({status}) before it was killed; its log:\n{}",
                self.log()
            );
        }
        self.child.start_kill().context("cannot send SIGKILL")?;
        let status = tokio::time::timeout(REAP_TIMEOUT, self.child.wait())
            .await
            .with_context(|| format!("the gateway survived SIGKILL for {REAP_TIMEOUT:?}"))??;
        if status.signal() != Some(SIGKILL) {
            bail!(
                "the gateway ended with {status} instead of dying of SIGKILL; its log:\n{}",
                self.log()
            );
        }
        Ok(self.log())
    }
}

/// HQ's HTTP endpoints (`/v1/hq/…`) with the admin token.
#[derive(Debug, Clone)]
pub struct Hq {
    http: reqwest::Client,
    base_url: String,
}

impl Hq {
    pub fn new(base_url: &str) -> anyhow::Result<Hq> {
        Ok(Hq {
            http: reqwest::Client::builder().timeout(HQ_TIMEOUT).build()?,
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("HQ call {path} failed"))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }

    /// `GET /v1/hq/terminals`: `{terminals: [...], alarms: [...]}`.
    pub async fn fleet(&self) -> anyhow::Result<Value> {
        let (status, value) = self
            .call(reqwest::Method::GET, "/v1/hq/terminals", None)
            .await?;
        if status != 200 {
            bail!("GET /v1/hq/terminals answered {status}: {value}");
        }
        Ok(value)
    }

    /// One terminal of the fleet view.
    pub async fn terminal(&self, terminal_id: &str) -> anyhow::Result<Value> {
        let fleet = self.fleet().await?;
        fleet["terminals"]
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|t| t["terminal_id"].as_str() == Some(terminal_id))
                    .cloned()
            })
            .with_context(|| format!("HQ does not list terminal {terminal_id}: {fleet}"))
    }

    /// The alarms HQ lists for `terminal_id`.
    pub async fn alarms(&self, terminal_id: &str) -> anyhow::Result<Vec<Value>> {
        let fleet = self.fleet().await?;
        Ok(fleet["alarms"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter(|a| a["terminal_id"].as_str() == Some(terminal_id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `POST /v1/hq/tokens`; returns the status and the answer.
    pub async fn create_token(
        &self,
        store_id: &str,
        valid_days: u32,
    ) -> anyhow::Result<(u16, Value)> {
        self.call(
            reqwest::Method::POST,
            "/v1/hq/tokens",
            Some(
                json!({"store_id": store_id, "merchant_id": MERCHANT_ID, "valid_days": valid_days}),
            ),
        )
        .await
    }

    /// `POST /v1/hq/terminals/{id}/revoke`.
    pub async fn revoke(&self, terminal_id: &str) -> anyhow::Result<(u16, Value)> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/hq/terminals/{terminal_id}/revoke"),
            None,
        )
        .await
    }

    /// `PUT /v1/hq/stores/{store_id}/config` with `body` (limits; fields left out take their
    /// defaults); returns the status and the signed configuration or the refusal.
    pub async fn set_store_config(
        &self,
        store_id: &str,
        body: Value,
    ) -> anyhow::Result<(u16, Value)> {
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/hq/stores/{store_id}/config"),
            Some(body),
        )
        .await
    }

    /// `GET /v1/hq/stores/{store_id}/config`: the signed configuration in force.
    pub async fn store_config(&self, store_id: &str) -> anyhow::Result<Value> {
        let (status, value) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/hq/stores/{store_id}/config"),
                None,
            )
            .await?;
        if status != 200 {
            bail!("GET /v1/hq/stores/{store_id}/config answered {status}: {value}");
        }
        Ok(value)
    }

    /// `POST /v1/hq/terminals/{id}/commands` `{command}`: `{id, command, delivered}`.
    pub async fn send_command(
        &self,
        terminal_id: &str,
        command: &str,
    ) -> anyhow::Result<(u16, Value)> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/hq/terminals/{terminal_id}/commands"),
            Some(json!({ "command": command })),
        )
        .await
    }

    /// `POST /test/clock/advance` on a gateway started with a manual clock.
    pub async fn advance_clock(&self, by_ms: i64) -> anyhow::Result<()> {
        let (status, value) = self
            .call(
                reqwest::Method::POST,
                "/test/clock/advance",
                Some(json!({ "by_ms": by_ms })),
            )
            .await?;
        if status != 200 {
            bail!("POST /test/clock/advance answered {status}: {value}");
        }
        Ok(())
    }
}

/// One entry as the gateway stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub seq: u64,
    pub kind: String,
    pub payload: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Every entry the gateway stored for `terminal_id`, in order, read from its database
/// (read-only; the gateway may be running).
pub fn stored_entries(terminals_db: &Path, terminal_id: &str) -> anyhow::Result<Vec<StoredEntry>> {
    let connection = Connection::open_with_flags(terminals_db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", terminals_db.display()))?;
    connection.busy_timeout(Duration::from_secs(5))?;
    let mut statement = connection.prepare(
        "SELECT seq, kind, payload, hash FROM entries WHERE terminal_id = ?1 ORDER BY seq",
    )?;
    let rows = statement
        .query_map([terminal_id], |row| {
            Ok(StoredEntry {
                seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                kind: row.get(1)?,
                payload: row.get(2)?,
                hash: row.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The ledger's totals per tender method (sales minus refunds, fen) for `terminal_id`, read
/// from the gateway's database.
pub fn ledger_totals(
    terminals_db: &Path,
    terminal_id: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, i64>> {
    let connection = Connection::open_with_flags(terminals_db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {}", terminals_db.display()))?;
    connection.busy_timeout(Duration::from_secs(5))?;
    let mut statement = connection.prepare(
        "SELECT method, sum(sales_fen) - sum(refunds_fen) FROM ledger WHERE terminal_id = ?1 GROUP BY method",
    )?;
    let rows = statement
        .query_map([terminal_id], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
