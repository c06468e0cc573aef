//! Load benchmark: create + query against the real `lanepay-gateway` binary (SQLite, system
//! clock) and, in the same run, a bare axum endpoint in its own process as a baseline, both over
//! loopback with the same load generator. Prints req/s, p50/p99, the ratio, the gateway's peak
//! resident memory, and checks every acknowledged order is in the database.
//!
//! `cargo bench -p lanepay-gateway --bench load` (env `BENCH_SECONDS`, `BENCH_CONCURRENCY`).

#![allow(clippy::unwrap_used)] // a benchmark that cannot set itself up should stop loudly

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

const BINARY: &str = env!("CARGO_BIN_EXE_lanepay-gateway");
/// Default measured time per target.
const DEFAULT_SECONDS: u64 = 10;
/// Default concurrent clients (each a keep-alive connection).
const DEFAULT_CONCURRENCY: usize = 32;
/// Unmeasured time before each target, to open connections and warm caches.
const WARMUP: Duration = Duration::from_secs(1);
/// Hard cap on requests per target so the run is bounded whatever the speed.
const MAX_REQUESTS_PER_TARGET: usize = 2_000_000;

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--serve-baseline") {
        serve_baseline();
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

/// The baseline server: parse a JSON body, answer a small JSON object. Same runtime shape as the
/// gateway (multi-threaded, one worker per core).
fn serve_baseline() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = axum::Router::new().route(
            "/baseline",
            axum::routing::post(|body: axum::body::Bytes| async move {
                let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                axum::Json(json!({"code": "SUCCESS", "out_trade_no": value["out_trade_no"]}))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

async fn spawn_server(command: &mut tokio::process::Command) -> (tokio::process::Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let address = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (child, format!("http://{address}"))
}

#[derive(Default)]
struct Samples {
    create: Vec<Duration>,
    query: Vec<Duration>,
    errors: usize,
    acknowledged_orders: usize,
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn signed(secret: &str, mut body: Value) -> String {
    body["merchant_id"] = json!("MBENCH");
    body["timestamp"] = json!(now_ms());
    let params: BTreeMap<String, String> =
        lanepay_gateway::params::from_json_object(&body).unwrap();
    body["sign"] = json!(lanepay_gateway::signing::hmac_sign(&params, secret).unwrap());
    body.to_string()
}

/// One client: create then query, alternating, until the deadline.
async fn gateway_client(
    client: reqwest::Client,
    base: Arc<String>,
    secret: Arc<String>,
    worker: usize,
    measure_from: Instant,
    until: Instant,
) -> Samples {
    let mut samples = Samples::default();
    let mut i = 0usize;
    while Instant::now() < until && samples.create.len() < MAX_REQUESTS_PER_TARGET {
        i += 1;
        let out_trade_no = format!("B{worker}x{i}");
        let create = signed(
            &secret,
            json!({"out_trade_no": out_trade_no, "total_amount": "12.34", "subject": "bench", "pay_type": "alipay",
                   "notify_url": "http://127.0.0.1:9/notify", "nonce": format!("n{worker}x{i}")}),
        );
        let started = Instant::now();
        let ok = send_ok(&client, format!("{base}/api/payment/create"), create).await;
        let create_latency = started.elapsed();
        if ok {
            samples.acknowledged_orders += 1;
        }
        let query = signed(
            &secret,
            json!({"out_trade_no": out_trade_no, "nonce": format!("q{worker}x{i}")}),
        );
        let started = Instant::now();
        let query_ok = send_ok(&client, format!("{base}/api/payment/query"), query).await;
        let query_latency = started.elapsed();
        if started >= measure_from {
            samples.create.push(create_latency);
            samples.query.push(query_latency);
            samples.errors += usize::from(!ok) + usize::from(!query_ok);
        }
    }
    samples
}

async fn baseline_client(
    client: reqwest::Client,
    base: Arc<String>,
    worker: usize,
    measure_from: Instant,
    until: Instant,
) -> Samples {
    let mut samples = Samples::default();
    let mut i = 0usize;
    while Instant::now() < until && samples.create.len() < MAX_REQUESTS_PER_TARGET {
        i += 1;
        let body = json!({"out_trade_no": format!("B{worker}x{i}"), "total_amount": "12.34", "subject": "bench"}).to_string();
        let started = Instant::now();
        let ok = send_ok(&client, format!("{base}/baseline"), body).await;
        if started >= measure_from {
            samples.create.push(started.elapsed());
            samples.errors += usize::from(!ok);
        }
    }
    samples
}

/// Sends one request and reads the whole answer; true for HTTP 200.
async fn send_ok(client: &reqwest::Client, url: String, body: String) -> bool {
    match client.post(url).body(body).send().await {
        Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
        Err(_) => false,
    }
}

struct Summary {
    requests: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

// Throughput and percentiles are reporting statistics, not money: floats are fine here.
#[allow(clippy::float_arithmetic)]
fn summarize(mut latencies: Vec<Duration>, seconds: f64) -> Summary {
    latencies.sort_unstable();
    let pick = |q: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[index].as_secs_f64() * 1_000.0
    };
    Summary {
        requests: latencies.len(),
        per_second: latencies.len() as f64 / seconds,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
    }
}

fn peak_rss_mb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            / 1_024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[allow(clippy::float_arithmetic)]
async fn bench() {
    let seconds: u64 = env_number("BENCH_SECONDS", DEFAULT_SECONDS);
    let concurrency: usize = env_number("BENCH_CONCURRENCY", DEFAULT_CONCURRENCY);
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(BINARY)
        .args(["merchant", "add", "--data"])
        .arg(dir.path())
        .args([
            "--id",
            "MBENCH",
            "--name",
            "bench",
            "--sign-type",
            "HMAC-SHA256",
            "--notify-host",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    let secret = Arc::new(
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_owned(),
    );
    let (gateway, gateway_base) = spawn_server(
        tokio::process::Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path()),
    )
    .await;
    let (_baseline, baseline_base) = spawn_server(
        tokio::process::Command::new(std::env::current_exe().unwrap()).arg("--serve-baseline"),
    )
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let measured = Duration::from_secs(seconds);

    let run = |gateway_target: bool| {
        let client = client.clone();
        let base = Arc::new(if gateway_target {
            gateway_base.clone()
        } else {
            baseline_base.clone()
        });
        let secret = secret.clone();
        async move {
            let measure_from = Instant::now() + WARMUP;
            let until = measure_from + measured;
            let tasks: Vec<_> = (0..concurrency)
                .map(|worker| {
                    let (client, base, secret) = (client.clone(), base.clone(), secret.clone());
                    tokio::spawn(async move {
                        if gateway_target {
                            gateway_client(client, base, secret, worker, measure_from, until).await
                        } else {
                            baseline_client(client, base, worker, measure_from, until).await
                        }
                    })
                })
                .collect();
            let mut all = Samples::default();
            for task in tasks {
                let samples = task.await.unwrap();
                all.create.extend(samples.create);
                all.query.extend(samples.query);
                all.errors += samples.errors;
                all.acknowledged_orders += samples.acknowledged_orders;
            }
            all
        }
    };

    let baseline = run(false).await;
    let gateway_samples = run(true).await;
    let (peak_rss_mb, rss_mb) = peak_rss_mb(gateway.id().unwrap_or(0));

    let seconds_f = seconds as f64;
    let base = summarize(baseline.create, seconds_f);
    let create = summarize(gateway_samples.create.clone(), seconds_f);
    let query = summarize(gateway_samples.query.clone(), seconds_f);
    let mut both_latencies = gateway_samples.create;
    both_latencies.extend(gateway_samples.query);
    let both = summarize(both_latencies, seconds_f);

    let stored: i64 = rusqlite::Connection::open(dir.path().join("gateway.sqlite"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM orders", [], |row| row.get(0))
        .unwrap();
    let cores = std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(0);
    println!(
        "lanepay-gateway load benchmark: {concurrency} concurrent clients, {seconds} s per target, {cores} cores, loopback"
    );
    println!();
    println!("| target | requests | req/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for (name, summary) in [
        ("axum baseline (parse JSON, answer JSON)", &base),
        ("gateway create + query (mixed)", &both),
        ("gateway create", &create),
        ("gateway query", &query),
    ] {
        println!(
            "| {name} | {} | {:.0} | {:.2} | {:.2} |",
            summary.requests, summary.per_second, summary.p50_ms, summary.p99_ms
        );
    }
    println!();
    println!(
        "ratio gateway/baseline req/s: {:.3}",
        both.per_second / base.per_second.max(1.0)
    );
    println!(
        "errors: baseline {}, gateway {}",
        baseline.errors, gateway_samples.errors
    );
    println!("gateway resident memory: peak {peak_rss_mb} MB, at end {rss_mb} MB");
    println!(
        "durability: {} orders acknowledged, {stored} in the database after the run ({})",
        gateway_samples.acknowledged_orders,
        if i64::try_from(gateway_samples.acknowledged_orders).unwrap() <= stored {
            "every acknowledged order stored"
        } else {
            "MISSING ORDERS"
        }
    );
}
