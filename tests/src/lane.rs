//! A lane under test: `lanepay init` makes its data directory, then `lanepay agent` processes
//! are started (their first stdout line says where the local API listens), killed with
//! SIGKILL, and their stderr kept in a log the test can search for panics.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a lane may take to print its first line. Generous: CI machines are slow and busy,
/// and a lane that never starts fails the test either way.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed process may take to be reaped.
pub const REAP_TIMEOUT: Duration = Duration::from_secs(10);
/// The prefix of the line `lanepay agent` prints first; the address follows it.
const LISTENING_ON: &str = " listening on ";
/// SIGKILL's number on every Unix the lane runs on.
const SIGKILL: i32 = 9;

/// A data directory prepared by `lanepay init`, and the binary that runs it.
#[derive(Debug, Clone)]
pub struct LaneDir {
    binary: PathBuf,
    data: PathBuf,
    token: String,
}

impl LaneDir {
    /// Runs `lanepay init` on `data` (any free loopback port, the demo catalog) and reads the
    /// local API token it generated.
    pub fn init(binary: &Path, data: &Path) -> anyhow::Result<LaneDir> {
        let output = std::process::Command::new(binary)
            .arg("init")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--demo-catalog"])
            .output()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        if !output.status.success() {
            bail!(
                "`lanepay init` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let config_path = data.join("agent.toml");
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?;
        let config: toml::Table = text
            .parse()
            .with_context(|| format!("{} is not TOML", config_path.display()))?;
        let token = config
            .get("local_api")
            .and_then(|api| api.get("token"))
            .and_then(toml::Value::as_str)
            .with_context(|| format!("{} has no [local_api] token", config_path.display()))?
            .to_string();
        Ok(LaneDir {
            binary: binary.to_path_buf(),
            data: data.to_path_buf(),
            token,
        })
    }

    /// `lanepay enroll --gateway URL --token T --data DIR` (which makes the data directory),
    /// then `lanepay init --demo-catalog` on it, and the local API moved to a free port (enroll
    /// writes the default 127.0.0.1:7420, which parallel tests would fight over).
    pub fn enroll(
        binary: &Path,
        gateway_url: &str,
        token: &str,
        data: &Path,
    ) -> anyhow::Result<LaneDir> {
        let output = enroll_command(binary, gateway_url, token, data)?;
        if !output.status.success() {
            bail!(
                "`lanepay enroll` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let lane = LaneDir::init(binary, data)?;
        lane.edit_config(|config| {
            let api = config
                .entry("local_api")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let api = api.as_table_mut().context("[local_api] is not a table")?;
            api.insert("listen".into(), toml::Value::String("127.0.0.1:0".into()));
            Ok(())
        })?;
        Ok(lane)
    }

    /// Points the lane at another gateway address (a fault proxy in front of the gateway).
    pub fn set_gateway_url(&self, url: &str) -> anyhow::Result<()> {
        self.edit_config(|config| {
            let gateway = config
                .get_mut("gateway")
                .and_then(toml::Value::as_table_mut)
                .context("the lane is not enrolled (no [gateway] table)")?;
            gateway.insert("url".into(), toml::Value::String(url.into()));
            Ok(())
        })
    }

    /// The terminal id in agent.toml.
    pub fn terminal_id(&self) -> anyhow::Result<String> {
        let config = self.read_config()?;
        config
            .get("terminal")
            .and_then(|terminal| terminal.get("id"))
            .and_then(toml::Value::as_str)
            .map(str::to_string)
            .context("agent.toml has no [terminal] id")
    }

    fn read_config(&self) -> anyhow::Result<toml::Table> {
        let path = self.data.join("agent.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        text.parse()
            .with_context(|| format!("{} is not TOML", path.display()))
    }

    fn edit_config(
        &self,
        edit: impl FnOnce(&mut toml::Table) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let path = self.data.join("agent.toml");
        let mut config = self.read_config()?;
        edit(&mut config)?;
        std::fs::write(&path, toml::to_string(&config)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    pub fn data(&self) -> &Path {
        &self.data
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn db_path(&self) -> PathBuf {
        self.data.join("lane.db")
    }

    /// Where every agent's stderr goes, appended run after run.
    pub fn log_path(&self) -> PathBuf {
        self.data.join("agent.log")
    }

    /// Starts `lanepay agent` and waits for its first line. Its stderr is appended to
    /// [`LaneDir::log_path`]; the rest of its stdout is drained so it never blocks or breaks
    /// on a full or closed pipe.
    pub async fn start(&self) -> anyhow::Result<RunningAgent> {
        self.start_with(&[]).await
    }

    /// [`LaneDir::start`] with extra arguments (e.g. `--clock-offset-ms=600000`).
    pub async fn start_with(&self, extra: &[&str]) -> anyhow::Result<RunningAgent> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let log_offset = log.metadata()?.len();
        let mut child = Command::new(&self.binary)
            .arg("agent")
            .arg("--data")
            .arg(&self.data)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // A test that fails half-way leaves no lane running behind it.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} agent", self.binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("the agent has no stdout pipe")?;
        let mut reader = BufReader::new(stdout);
        let mut first_line = String::new();
        let read = tokio::time::timeout(STARTUP_TIMEOUT, reader.read_line(&mut first_line)).await;
        let agent = RunningAgent {
            child,
            url: String::new(),
            log_path,
            log_offset,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => bail!(
                "the agent ended before saying where it listens; its log:\n{}",
                agent.log()
            ),
            Ok(Err(error)) => bail!("cannot read the agent's stdout: {error}"),
            Err(_) => bail!(
                "the agent printed nothing within {STARTUP_TIMEOUT:?}; its log:\n{}",
                agent.log()
            ),
        }
        let Some((_, url)) = first_line.trim_end().split_once(LISTENING_ON) else {
            bail!("unexpected first line from the agent: {first_line:?}");
        };
        let url = url.to_string();
        tokio::spawn(async move {
            // Whatever else the agent prints is not for us; reading it keeps its pipe open.
            let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
        });
        Ok(RunningAgent { url, ..agent })
    }

    /// Runs `lanepay journal verify --db lane.db --from-seq N`.
    pub fn verify_journal(&self, from_seq: u64) -> anyhow::Result<JournalVerification> {
        let output = std::process::Command::new(&self.binary)
            .args(["journal", "verify", "--db"])
            .arg(self.db_path())
            .arg("--from-seq")
            .arg(from_seq.to_string())
            .output()
            .with_context(|| format!("cannot run {} journal verify", self.binary.display()))?;
        Ok(JournalVerification {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Runs `lanepay enroll --gateway URL --token T --data DIR` and returns what it printed.
pub fn enroll_command(
    binary: &Path,
    gateway_url: &str,
    token: &str,
    data: &Path,
) -> anyhow::Result<std::process::Output> {
    std::process::Command::new(binary)
        .args([
            "enroll",
            "--gateway",
            gateway_url,
            "--token",
            token,
            "--data",
        ])
        .arg(data)
        .output()
        .with_context(|| format!("cannot run {} enroll", binary.display()))
}

/// What `lanepay journal verify` said.
#[derive(Debug, Clone)]
pub struct JournalVerification {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl JournalVerification {
    pub fn intact(&self) -> bool {
        self.status.success()
    }

    /// The last sequence number the summary says was checked: the `N` of `(seq A..=N)`.
    pub fn last_seq(&self) -> Option<u64> {
        let (_, tail) = self.stdout.rsplit_once("..=")?;
        tail.trim_end_matches(')').trim().parse().ok()
    }
}

/// A running `lanepay agent`.
#[derive(Debug)]
pub struct RunningAgent {
    child: Child,
    url: String,
    log_path: PathBuf,
    log_offset: u64,
}

impl RunningAgent {
    /// The local API address from the agent's first line.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What this process wrote to stderr so far.
    pub fn log(&self) -> String {
        read_from(&self.log_path, self.log_offset)
            .unwrap_or_else(|error| format!("(cannot read {}: {error})", self.log_path.display()))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process already ended, and how.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// SIGKILL, then waits until the process is gone. Fails if it had already ended on its
    /// own (a crash or an exit nobody asked for) or if it did not die of the signal.
    pub async fn kill(mut self) -> anyhow::Result<String> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the agent ended on its own ({status}) before it was killed; its log:\n{}",
                self.log()
            );
        }
        self.child.start_kill().context("cannot send SIGKILL")?;
        let status = tokio::time::timeout(REAP_TIMEOUT, self.child.wait())
            .await
            .with_context(|| format!("the agent survived SIGKILL for {REAP_TIMEOUT:?}"))??;
        if status.signal() != Some(SIGKILL) {
            bail!(
                "the agent ended with {status} instead of dying of SIGKILL; its log:\n{}",
                self.log()
            );
        }
        Ok(self.log())
    }
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
