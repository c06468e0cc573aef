//! A fault-injecting proxy between a lane and the gateway, at the level the protocol sees:
//! whole HTTP requests and whole WebSocket messages. Each request or data message is, with
//! the configured probability, dropped, delayed, duplicated, reordered or its connection cut;
//! the choice comes from one seeded generator (the seed is the caller's to print, and
//! `SEED=` replays the same draws; which message meets which draw still depends on timing).
//!
//! Besides random faults it has modes for crash tests: hold every answer of the gateway
//! (the gateway stored, the lane never hears so) or hold every request (the lane sent, the
//! gateway never got it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// Longest HTTP head the proxy reads (the lane's are well under 2 KB).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest HTTP body it relays (the wire limit of a batch is 4 MiB).
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// A message held back to be reordered goes out after the next one, or after this long if
/// none follows (else a reorder would be a drop).
const REORDER_HOLD: Duration = Duration::from_millis(300);
/// How long the proxy waits for the gateway.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(15);

/// What the proxy does besides random faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Relay (with random faults at the configured rate).
    Pass = 0,
    /// Relay requests to the gateway but hold back its answers (HTTP responses and
    /// gateway→lane data messages): the gateway stores, the lane never learns it did.
    HoldAnswers = 1,
    /// Take the lane's requests and never forward them (HTTP requests and lane→gateway data
    /// messages).
    HoldRequests = 2,
}

/// The faults, one per draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Drop,
    Delay,
    Duplicate,
    Reorder,
    Cut,
    /// HTTP only: forwarded, answer lost.
    LoseAnswer,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::Drop,
        Fault::Delay,
        Fault::Duplicate,
        Fault::Reorder,
        Fault::Cut,
        Fault::LoseAnswer,
    ];

    /// `drop`, `delay`, `duplicate`, `reorder`, `cut`, `lose_answer`.
    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name.trim())
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Drop => "drop",
            Fault::Delay => "delay",
            Fault::Duplicate => "duplicate",
            Fault::Reorder => "reorder",
            Fault::Cut => "cut",
            Fault::LoseAnswer => "lose_answer",
        }
    }
}

/// Counters of what went through and what was done to it.
#[derive(Debug, Default)]
pub struct Stats {
    pub http_requests: AtomicU64,
    pub ws_connections: AtomicU64,
    pub ws_messages: AtomicU64,
    pub dropped: AtomicU64,
    pub delayed: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub cut: AtomicU64,
    pub answers_lost: AtomicU64,
    /// HTTP requests and lane→gateway data messages that reached the gateway.
    pub forwarded_to_gateway: AtomicU64,
    /// Requests or messages held back by [`Mode::HoldRequests`].
    pub held_requests: AtomicU64,
    /// Answers held back by [`Mode::HoldAnswers`].
    pub held_answers: AtomicU64,
}

impl Stats {
    pub fn summary(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "{} HTTP requests, {} WebSocket connections, {} data messages; faults: {} dropped, \
             {} delayed, {} duplicated, {} reordered, {} cut, {} answers lost",
            get(&self.http_requests),
            get(&self.ws_connections),
            get(&self.ws_messages),
            get(&self.dropped),
            get(&self.delayed),
            get(&self.duplicated),
            get(&self.reordered),
            get(&self.cut),
            get(&self.answers_lost),
        )
    }

    pub fn faults(&self) -> u64 {
        [
            &self.dropped,
            &self.delayed,
            &self.duplicated,
            &self.reordered,
            &self.cut,
            &self.answers_lost,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

#[derive(Debug)]
struct Shared {
    upstream: Mutex<SocketAddr>,
    /// Probability of a fault per request or data message, in percent.
    fault_percent: AtomicU32,
    /// Longest injected delay.
    max_delay_ms: AtomicU64,
    mode: AtomicU8,
    /// The faults drawn from (all by default).
    kinds: Mutex<Vec<Fault>>,
    rng: Mutex<StdRng>,
    stats: Stats,
}

impl Shared {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::HoldAnswers,
            2 => Mode::HoldRequests,
            _ => Mode::Pass,
        }
    }

    fn upstream(&self) -> SocketAddr {
        *self
            .upstream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with_rng<T>(&self, draw: impl FnOnce(&mut StdRng) -> T) -> T {
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        draw(&mut rng)
    }

    /// One draw: no fault, or which one.
    fn draw(&self, http: bool) -> Option<Fault> {
        let percent = self.fault_percent.load(Ordering::SeqCst);
        let kinds: Vec<Fault> = self
            .kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            // Losing an answer is an HTTP fault; on a WebSocket it is a dropped message.
            .filter(|kind| http || *kind != Fault::LoseAnswer)
            .collect();
        self.with_rng(|rng| {
            if rng.random_range(0..100) >= percent || kinds.is_empty() {
                return None;
            }
            Some(kinds[rng.random_range(0..kinds.len())])
        })
    }

    fn delay(&self) -> Duration {
        let max = self.max_delay_ms.load(Ordering::SeqCst).max(1);
        Duration::from_millis(self.with_rng(|rng| rng.random_range(0..=max)))
    }

    fn count(&self, fault: Fault) {
        let counter = match fault {
            Fault::Drop => &self.stats.dropped,
            Fault::Delay => &self.stats.delayed,
            Fault::Duplicate => &self.stats.duplicated,
            Fault::Reorder => &self.stats.reordered,
            Fault::Cut => &self.stats.cut,
            Fault::LoseAnswer => &self.stats.answers_lost,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running proxy. Dropping it stops accepting; connections already open die with their
/// tasks when the runtime ends.
#[derive(Debug)]
pub struct FaultProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FaultProxy {
    /// Listens on a free loopback port and relays to `upstream`, faults off.
    pub async fn start(upstream: SocketAddr, seed: u64) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            fault_percent: AtomicU32::new(0),
            max_delay_ms: AtomicU64::new(200),
            mode: AtomicU8::new(Mode::Pass as u8),
            kinds: Mutex::new(Fault::ALL.to_vec()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            stats: Stats::default(),
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let shared = accepting.clone();
                tokio::spawn(async move {
                    // A failed relay is a broken connection, which is what the lane must
                    // survive anyway.
                    let _ = relay(client, shared).await;
                });
            }
        });
        Ok(FaultProxy {
            address,
            shared,
            accept,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Where new connections go from now on (a restarted gateway listens elsewhere).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self
            .shared
            .upstream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = upstream;
    }

    /// Fault probability per HTTP request or WebSocket data message, 0 to 100.
    pub fn set_fault_percent(&self, percent: u32) {
        self.shared
            .fault_percent
            .store(percent.min(100), Ordering::SeqCst);
    }

    pub fn set_max_delay(&self, max: Duration) {
        self.shared.max_delay_ms.store(
            u64::try_from(max.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Draw only these faults (for narrowing down a failure; the default is all of them).
    pub fn set_fault_kinds(&self, kinds: &[Fault]) {
        *self
            .shared
            .kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = kinds.to_vec();
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }
}

/// Reads up to the end of an HTTP head; returns the head and whatever followed it.
async fn read_head(stream: &mut TcpStream) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut buffer = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buffer.split_off(end + 4);
            return Ok((buffer, rest));
        }
        if buffer.len() > MAX_HEAD_BYTES {
            bail!("HTTP head longer than {MAX_HEAD_BYTES} bytes");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed inside an HTTP head");
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// A header's value (names compared case-insensitively).
fn header_value(head: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

/// The head with its `connection` header replaced by `connection: close`.
fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len() + 20);
    for line in text.trim_end_matches("\r\n").split("\r\n") {
        let is_connection = line
            .split_once(':')
            .is_some_and(|(key, _)| key.trim().eq_ignore_ascii_case("connection"));
        if !is_connection {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("connection: close\r\n\r\n");
    out.into_bytes()
}

async fn read_body(
    stream: &mut TcpStream,
    head: &[u8],
    mut body: Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
    let length: usize = header_value(head, "content-length")
        .map(|v| v.parse())
        .transpose()
        .context("bad content-length")?
        .unwrap_or(0);
    if length > MAX_BODY_BYTES {
        bail!("body of {length} bytes is over the proxy's limit");
    }
    let mut chunk = [0u8; 16 * 1024];
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed inside a body");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(body)
}

async fn relay(mut client: TcpStream, shared: Arc<Shared>) -> anyhow::Result<()> {
    let (head, rest) = read_head(&mut client).await?;
    let upgrade =
        header_value(&head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        relay_websocket(client, head, rest, shared).await
    } else {
        relay_http(client, head, rest, shared).await
    }
}

/// Sends one request to the gateway on a connection of its own; returns the whole answer.
async fn forward_http(upstream: SocketAddr, head: &[u8], body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await?;
        stream.write_all(&with_connection_close(head)).await?;
        stream.write_all(body).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(answer)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .context("the gateway did not answer in time")?
}

/// One request per client connection: the answer says `connection: close`.
async fn relay_http(
    mut client: TcpStream,
    head: Vec<u8>,
    rest: Vec<u8>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let body = read_body(&mut client, &head, rest).await?;
    shared.stats.http_requests.fetch_add(1, Ordering::Relaxed);
    let upstream = shared.upstream();
    match shared.mode() {
        Mode::HoldRequests => {
            shared.stats.held_requests.fetch_add(1, Ordering::Relaxed);
            return hold_until_closed(client).await;
        }
        Mode::HoldAnswers => {
            forward_http(upstream, &head, &body).await?;
            shared
                .stats
                .forwarded_to_gateway
                .fetch_add(1, Ordering::Relaxed);
            shared.stats.held_answers.fetch_add(1, Ordering::Relaxed);
            return hold_until_closed(client).await;
        }
        Mode::Pass => {}
    }
    let fault = shared.draw(true);
    if let Some(fault) = fault {
        shared.count(fault);
    }
    let answer = match fault {
        Some(Fault::Drop | Fault::Cut) => return Ok(()),
        Some(Fault::Reorder) => {
            // The lane gives up on this request (the connection closes) and retries; the
            // stale request reaches the gateway later, possibly after the retry.
            let delay = shared.delay() + Duration::from_millis(50);
            let stats = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if forward_http(upstream, &head, &body).await.is_ok() {
                    stats
                        .stats
                        .forwarded_to_gateway
                        .fetch_add(1, Ordering::Relaxed);
                }
            });
            return Ok(());
        }
        Some(Fault::Delay) => {
            tokio::time::sleep(shared.delay()).await;
            forward_http(upstream, &head, &body).await?
        }
        Some(Fault::Duplicate) => {
            let first = forward_http(upstream, &head, &body).await?;
            // The same signed request again: the gateway must refuse the replay and store
            // nothing twice.
            let _ = forward_http(upstream, &head, &body).await;
            shared
                .stats
                .forwarded_to_gateway
                .fetch_add(1, Ordering::Relaxed);
            first
        }
        Some(Fault::LoseAnswer) => {
            forward_http(upstream, &head, &body).await?;
            shared
                .stats
                .forwarded_to_gateway
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        None => forward_http(upstream, &head, &body).await?,
    };
    shared
        .stats
        .forwarded_to_gateway
        .fetch_add(1, Ordering::Relaxed);
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |end| end + 4);
    client
        .write_all(&with_connection_close(&answer[..split]))
        .await?;
    client.write_all(&answer[split..]).await?;
    client.shutdown().await?;
    Ok(())
}

/// Keeps a connection open, answering nothing, until the lane gives up on it.
async fn hold_until_closed(mut client: TcpStream) -> anyhow::Result<()> {
    let mut sink = [0u8; 1024];
    while client.read(&mut sink).await? > 0 {}
    Ok(())
}

async fn relay_websocket(
    mut client: TcpStream,
    head: Vec<u8>,
    client_rest: Vec<u8>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    if let Some(fault @ (Fault::Drop | Fault::Cut)) = shared.draw(true) {
        // The handshake itself is lost.
        shared.count(fault);
        return Ok(());
    }
    let mut upstream =
        tokio::time::timeout(UPSTREAM_TIMEOUT, TcpStream::connect(shared.upstream()))
            .await
            .context("connecting to the gateway timed out")??;
    let _ = upstream.set_nodelay(true);
    upstream.write_all(&head).await?;
    let (answer_head, upstream_rest) =
        tokio::time::timeout(UPSTREAM_TIMEOUT, read_head(&mut upstream))
            .await
            .context("the gateway did not answer the handshake")??;
    client.write_all(&answer_head).await?;
    let upgraded = answer_head.starts_with(b"HTTP/1.1 101");
    if !upgraded {
        let body = read_body(&mut upstream, &answer_head, upstream_rest).await?;
        client.write_all(&body).await?;
        client.shutdown().await?;
        return Ok(());
    }
    shared.stats.ws_connections.fetch_add(1, Ordering::Relaxed);
    let lane_side =
        WebSocketStream::from_partially_read(client, client_rest, Role::Server, None).await;
    let gateway_side =
        WebSocketStream::from_partially_read(upstream, upstream_rest, Role::Client, None).await;
    let (to_lane, from_lane) = lane_side.split();
    let (to_gateway, from_gateway) = gateway_side.split();
    // Either direction ending (a cut, a close, an error) ends both: the sockets drop.
    tokio::select! {
        _ = pump(from_lane, to_gateway, shared.clone(), Direction::ToGateway) => {}
        _ = pump(from_gateway, to_lane, shared.clone(), Direction::ToLane) => {}
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToGateway,
    ToLane,
}

async fn pump<R, W>(
    mut from: R,
    mut to: W,
    shared: Arc<Shared>,
    direction: Direction,
) -> anyhow::Result<()>
where
    R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    W: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let mut held: Option<Message> = None;
    loop {
        let next = if held.is_some() {
            match tokio::time::timeout(REORDER_HOLD, from.next()).await {
                Ok(next) => next,
                Err(_) => {
                    if let Some(message) = held.take() {
                        to.send(message).await?;
                    }
                    continue;
                }
            }
        } else {
            from.next().await
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(error.into()),
            None => return Ok(()),
        };
        let data = matches!(message, Message::Text(_) | Message::Binary(_));
        if !data {
            let close = matches!(message, Message::Close(_));
            to.send(message).await?;
            if close {
                return Ok(());
            }
            continue;
        }
        shared.stats.ws_messages.fetch_add(1, Ordering::Relaxed);
        let mode = shared.mode();
        if (mode == Mode::HoldRequests && direction == Direction::ToGateway)
            || (mode == Mode::HoldAnswers && direction == Direction::ToLane)
        {
            let counter = if direction == Direction::ToGateway {
                &shared.stats.held_requests
            } else {
                &shared.stats.held_answers
            };
            counter.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let fault = if mode == Mode::Pass {
            shared.draw(false)
        } else {
            None
        };
        if let Some(fault) = fault {
            shared.count(fault);
        }
        let forwarded = |shared: &Shared| {
            if direction == Direction::ToGateway {
                shared
                    .stats
                    .forwarded_to_gateway
                    .fetch_add(1, Ordering::Relaxed);
            }
        };
        match fault {
            Some(Fault::Drop) => {}
            Some(Fault::Cut) => return Ok(()),
            Some(Fault::Delay) => {
                tokio::time::sleep(shared.delay()).await;
                to.send(message).await?;
                forwarded(&shared);
            }
            Some(Fault::Duplicate) => {
                to.send(message.clone()).await?;
                to.send(message).await?;
                forwarded(&shared);
            }
            Some(Fault::Reorder) => {
                if let Some(earlier) = held.replace(message) {
                    to.send(earlier).await?;
                    forwarded(&shared);
                }
            }
            Some(Fault::LoseAnswer) | None => {
                to.send(message).await?;
                forwarded(&shared);
            }
        }
        if fault != Some(Fault::Reorder)
            && let Some(earlier) = held.take()
        {
            // The message held back goes out after the one that overtook it.
            to.send(earlier).await?;
            forwarded(&shared);
        }
    }
}
