//! The real upstream gateway (`lanepay_gateway::run`) in process on loopback, for the demo and
//! for end-to-end payment tests: its own SQLite directory, the sandbox channels, merchant
//! `M1001` with store `S001`, and a switch that takes it off the network and back (the lane
//! sees a real outage: refused connections and a dropped live channel).
//!
//! The server runs on a runtime of its own, so that [`EmbeddedGateway::suspend`] can end every
//! connection it holds (the live WebSocket included, which outlives a graceful shutdown) by
//! shutting that runtime down, and [`EmbeddedGateway::resume`] can serve again on the same port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use lanepay_gateway::channel::{SandboxChannelConfig, SandboxConfig};
use lanepay_gateway::clock::{Clock, ManualClock, SystemClock};
use lanepay_gateway::service::{Gateway, GatewayConfig, add_merchant};
use lanepay_gateway::signing::SignType;
use lanepay_gateway::terminals::TerminalService;

/// The demo merchant every embedded gateway has.
pub const DEMO_MERCHANT_ID: &str = "M1001";
/// The demo store lanes enroll into.
pub const DEMO_STORE_ID: &str = "S001";
const DEMO_MERCHANT_NAME: &str = "Lanepay demo store";
/// Unpaid orders close after half an hour, as with `lanepay-gateway serve`'s default.
const ORDER_TIMEOUT_MS: i64 = 1_800_000;
/// How long a stop waits for in-flight requests before dropping them.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// On the system clock, how long (ms, shortest and longest) a sandbox customer takes to
/// confirm a code payment on the phone.
const DEMO_THINK_TIME_MS: (i64, i64) = (2_000, 4_000);
/// Enrollment tokens the embedded gateway issues are valid this long.
const TOKEN_VALID_DAYS: u32 = 1;

/// Where and on which clock an embedded gateway runs.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Where the gateway keeps its SQLite database and keys (created when new, reused after).
    pub data_dir: PathBuf,
    /// Some(start_ms): a manual clock (tests); None: the system clock (demo).
    pub manual_clock_start_ms: Option<i64>,
}

/// A serving gateway and its parts (see the module documentation).
pub struct EmbeddedGateway {
    options: EmbeddedOptions,
    address: SocketAddr,
    base_url: String,
    clock: Arc<dyn Clock>,
    manual_clock: Option<Arc<ManualClock>>,
    /// Enrollment tokens; a second handle on the terminal registry the server also opens.
    terminals: TerminalService,
    http: reqwest::Client,
    serving: Option<Serving>,
}

/// The running server: its runtime, its task and the switch that stops it.
struct Serving {
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), lanepay_gateway::error::GatewayError>>,
}

impl std::fmt::Debug for EmbeddedGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedGateway")
            .field("base_url", &self.base_url)
            .field("data_dir", &self.options.data_dir)
            .field("serving", &self.serving.is_some())
            .finish()
    }
}

impl EmbeddedGateway {
    /// Starts the real gateway (lanepay_gateway::run) in process on 127.0.0.1:0 with the
    /// sandbox channels, a demo merchant `M1001` and store `S001` (idempotent on a reused dir).
    pub async fn start(options: EmbeddedOptions) -> anyhow::Result<EmbeddedGateway> {
        let data_dir = options.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let manual_clock = options
            .manual_clock_start_ms
            .map(|start_ms| Arc::new(ManualClock::new(start_ms)));
        let clock: Arc<dyn Clock> = match &manual_clock {
            Some(manual) => manual.clone(),
            None => Arc::new(SystemClock),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind a loopback port for the embedded gateway")?;
        let address = listener.local_addr()?;
        drop(listener);
        let base_url = format!("http://{address}");
        let seed_dir = data_dir.clone();
        let seed_clock = clock.clone();
        let terminals = tokio::task::spawn_blocking(move || {
            seed_demo_merchant(&seed_dir, seed_clock.now_ms())?;
            TerminalService::open(&seed_dir, seed_clock)
                .context("cannot open the gateway's terminal registry")
        })
        .await
        .context("the gateway's setup task failed")??;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        let mut gateway = EmbeddedGateway {
            options,
            address,
            base_url,
            clock,
            manual_clock,
            terminals,
            http,
            serving: None,
        };
        gateway.resume().await?;
        Ok(gateway)
    }

    /// http://127.0.0.1:PORT
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Where the gateway keeps its databases.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.options.data_dir
    }

    /// The gateway's time now (its manual clock in tests).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether the gateway is serving (not suspended or stopped).
    pub fn is_serving(&self) -> bool {
        self.serving.is_some()
    }

    /// The gateway's ed25519 public key (hex), as lanes record it at enrollment.
    pub fn public_key_hex(&self) -> String {
        self.terminals.public_key_hex()
    }

    /// A fresh one-time enrollment token for store S001.
    pub fn enrollment_token(&self) -> anyhow::Result<String> {
        self.terminals
            .create_token(DEMO_STORE_ID, DEMO_MERCHANT_ID, TOKEN_VALID_DAYS)
            .context("cannot issue an enrollment token")
    }

    /// Moves the manual clock (panics-free error if the clock is the system clock).
    pub fn advance_ms(&self, by_ms: i64) -> anyhow::Result<()> {
        let Some(manual) = &self.manual_clock else {
            bail!("the embedded gateway runs on the system clock; it cannot be advanced");
        };
        if by_ms < 0 {
            bail!("the gateway clock only moves forward (asked to move by {by_ms} ms)");
        }
        manual.advance(by_ms);
        Ok(())
    }

    /// The sandbox wallet confirming a customer's pending payment (what a customer does on the
    /// phone for a late confirm or for the dynamic QR page), by the gateway's trade_no.
    pub async fn wallet_confirm(&self, trade_no: &str) -> anyhow::Result<()> {
        let page = self
            .post_page(&format!(
                "{}/sandbox/wallet/{trade_no}/confirm",
                self.base_url
            ))
            .await?;
        if !page.contains("data-state=\"SUCCESS\"") {
            bail!(
                "the sandbox wallet did not confirm {trade_no}: {}",
                page_state(&page)
            );
        }
        Ok(())
    }

    /// GET of a gateway page (the wallet page, the offline-QR page) as a phone would: the
    /// body, or an error naming the status.
    pub async fn get_page(&self, url: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("cannot open {url}"))?;
        page_body(url, response).await
    }

    /// POST of a form button on a gateway page (no fields), as a phone would.
    pub async fn post_page(&self, url: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .post(url)
            .send()
            .await
            .with_context(|| format!("cannot post to {url}"))?;
        page_body(url, response).await
    }

    /// Stops serving (the lane goes offline); `resume` serves again on the SAME port.
    pub async fn suspend(&mut self) -> anyhow::Result<()> {
        let Some(serving) = self.serving.take() else {
            return Ok(());
        };
        stop_serving(serving).await
    }

    /// Serves again on the same port after [`suspend`](Self::suspend) (no-op when serving).
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        if self.serving.is_some() {
            return Ok(());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("embedded-gateway")
            .enable_all()
            .build()
            .context("cannot start the embedded gateway's runtime")?;
        let listener = bind_again(&runtime, self.address).await?;
        let config = GatewayConfig {
            data_dir: self.options.data_dir.clone(),
            order_timeout_ms: ORDER_TIMEOUT_MS,
            sandbox: sandbox_config(self.manual_clock.is_some()),
            admin_token: None,
            public_base_url: self.base_url.clone(),
        };
        let clock = self.clock.clone();
        let gateway = runtime
            .spawn_blocking(move || Gateway::open(config, clock))
            .await
            .context("the gateway's open task failed")?
            .with_context(|| {
                format!(
                    "cannot open the gateway data directory {}",
                    self.options.data_dir.display()
                )
            })?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = runtime.spawn(lanepay_gateway::run(
            listener,
            shutdown,
            Arc::new(gateway),
            self.manual_clock.clone(),
        ));
        tracing::info!(address = %self.address, "embedded gateway serving");
        self.serving = Some(Serving {
            runtime,
            stop,
            task,
        });
        Ok(())
    }

    /// Stops serving for good.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.suspend().await
    }
}

impl Drop for EmbeddedGateway {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            let _ = serving.stop.send(());
            // Allowed in async contexts, unlike dropping the runtime.
            serving.runtime.shutdown_background();
        }
    }
}

/// Ends a serving gateway: a graceful stop for in-flight requests, then the runtime goes with
/// every connection it still holds (live WebSockets are not part of a graceful shutdown).
async fn stop_serving(serving: Serving) -> anyhow::Result<()> {
    let Serving {
        runtime,
        stop,
        task,
    } = serving;
    let _ = stop.send(());
    // Live WebSockets keep a graceful shutdown waiting; they end with the runtime below.
    let outcome = tokio::time::timeout(STOP_GRACE, task).await;
    runtime.shutdown_background();
    match outcome {
        Ok(Ok(Err(error))) => Err(error).context("the embedded gateway stopped with an error"),
        Ok(Err(join)) => Err(join).context("the embedded gateway's task failed"),
        Ok(Ok(Ok(()))) | Err(_) => Ok(()),
    }
}

/// Binds `address` on `runtime` (the listener belongs to that runtime's reactor), retrying
/// briefly: the port was just released by this process and is ours to take again.
async fn bind_again(
    runtime: &tokio::runtime::Runtime,
    address: SocketAddr,
) -> anyhow::Result<tokio::net::TcpListener> {
    let mut last_error = None;
    for _ in 0..50 {
        match runtime
            .spawn(tokio::net::TcpListener::bind(address))
            .await
            .context("the bind task failed")?
        {
            Ok(listener) => return Ok(listener),
            Err(error) => {
                last_error = Some(error);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Err(anyhow::anyhow!(
        "cannot serve on {address} again: {}",
        last_error.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// The sandbox rails: the gateway binary's defaults, except that on the system clock (the
/// demo) a customer asked to confirm a code payment on the phone does so within 2 to 4 s
/// instead of 3 to 20 s, so a person watching the demo does not wait long.
fn sandbox_config(manual_clock: bool) -> SandboxConfig {
    let mut config = SandboxConfig::default();
    if !manual_clock {
        for pay_type in ["alipay", "wechat", "unionpay"] {
            config.channels.insert(
                pay_type.to_string(),
                SandboxChannelConfig {
                    think_time_ms_min: DEMO_THINK_TIME_MS.0,
                    think_time_ms_max: DEMO_THINK_TIME_MS.1,
                    ..SandboxChannelConfig::default()
                },
            );
        }
    }
    config
}

/// Registers the demo merchant once; a reused directory keeps the one it has.
fn seed_demo_merchant(data_dir: &std::path::Path, now_ms: i64) -> anyhow::Result<()> {
    let store = lanepay_gateway::store::Store::open(&data_dir.join("gateway.sqlite"))
        .context("cannot open the gateway database")?;
    if store
        .merchant(DEMO_MERCHANT_ID)
        .context("cannot read the merchants")?
        .is_some()
    {
        return Ok(());
    }
    drop(store);
    add_merchant(
        data_dir,
        DEMO_MERCHANT_ID,
        DEMO_MERCHANT_NAME,
        SignType::HmacSha256,
        None,
        &["127.0.0.1".to_string()],
        now_ms,
    )
    .context("cannot register the demo merchant")?;
    Ok(())
}

async fn page_body(url: &str, response: reqwest::Response) -> anyhow::Result<String> {
    let status = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("cannot read {url}"))?;
    if !status.is_success() {
        bail!("{url} answered {status}: {}", page_state(&body));
    }
    Ok(body)
}

/// A short, readable part of a page for error messages (its result line when it has one).
fn page_state(page: &str) -> String {
    let text = page
        .find("<p id=\"result\"")
        .map(|at| &page[at..])
        .unwrap_or(page);
    text.chars().take(200).collect()
}
