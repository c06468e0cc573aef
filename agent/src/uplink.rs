//! The lane's link to the gateway: drains the journal outbox over the live WebSocket channel,
//! or in REST batches when the backlog is large or the WebSocket is down, marks entries only
//! from verified acknowledgements, and says whether the lane is online.
//!
//! It also takes the gateway's pushes: a `config` push (and the configuration fetched on every
//! connect) is verified and applied through [`crate::remote_config`]; `command` pushes
//! (`sync_now`, `reload_config`) are carried out here; every push is handed on, parsed, to
//! the subscribers of [`UplinkHandle::pushes`] (payment results are the payments runtime's).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use lanepay_sync::client::{ClientError, GatewayClient, TlsTrust};
use lanepay_sync::config::SignedConfig;
use lanepay_sync::journal::SignedEntry;
use lanepay_sync::wire::TerminalCommand;
use lanepay_sync::wire::{CommandPush, IngestResult, PushMessage, WireEntry, WsFrame, topic};
use rand::Rng;
use rusqlite::Connection;
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::api::{Event, SyncStatusView};
use crate::clock::Clock;
use crate::remote_config::{self, ApplyError, LaneIdentity};
use crate::service::LaneHandle;
use crate::store::{self, Durability, journal};

/// Entries per live WebSocket message: small, so one lost message costs little.
pub const LIVE_BATCH_ENTRIES: u64 = 100;
/// Entries per REST batch (the wire limit is 500).
pub const REST_BATCH_ENTRIES: u64 = 500;
/// A backlog longer than this drains over REST even while the WebSocket is up.
pub const REST_BACKLOG_THRESHOLD: u64 = 1_000;
/// Heartbeat: a ping this often; no frame at all for `LIVENESS_TIMEOUT` means offline. Together
/// they make "offline" show within five seconds of losing the gateway.
pub const PING_INTERVAL: Duration = Duration::from_secs(2);
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);
/// A batch sent on the live channel whose result has not come back in this long is sent
/// again (a message lost on the way, either way; re-sending is always safe).
pub const RESULT_TIMEOUT: Duration = Duration::from_secs(4);
/// Reconnect backoff: doubling from the first to a cap, with up to 50 % random jitter so a
/// store's lanes do not reconnect in lockstep after an outage.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// The cap while the gateway cannot be reached or says it is busy: the screen must say
/// "online" within 5 s of the network coming back, so the longest wait (cap and jitter,
/// 3.75 s) stays under that (an attempt already timing out on a silent network comes first).
/// An attempt on a dead network costs a refused or timed-out TCP connect, nothing more.
pub const BACKOFF_CAP_UNREACHABLE: Duration = Duration::from_millis(2_500);
/// The cap when the gateway answered and refused (a revoked terminal, a journal that does not
/// match, a local storage fault): trying often does not help there, and costs the gateway.
pub const BACKOFF_CAP_REFUSED: Duration = Duration::from_secs(30);
/// How often the lane re-checks its outbox when nothing else happens.
pub const IDLE_POLL: Duration = Duration::from_secs(1);
/// Pushes kept for slow subscribers of [`UplinkHandle::pushes`] before they miss some.
pub const PUSH_BUFFER_LEN: usize = 256;
/// Fetching the configuration on connect or on command: bounded, so a slow gateway does not
/// hold up the live channel's heartbeat.
pub const CONFIG_FETCH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct UplinkSettings {
    pub base_url: String,
    pub terminal_id: String,
    /// The store this lane enrolled in: configurations for any other store are refused.
    pub store_id: String,
    pub gateway_key: VerifyingKey,
    pub db: PathBuf,
    /// The pinned CA or certificate from `[gateway] ca_file`, loaded once (`None`: the
    /// system's trust store).
    pub tls: Option<TlsTrust>,
}

#[derive(Debug, thiserror::Error)]
enum UplinkError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("the gateway's acknowledgement does not match this lane's journal: {0}")]
    Ack(#[from] journal::AckError),
    #[error("the live channel closed: {0}")]
    Channel(String),
    #[error("the gateway refused entry {seq}: {reason}")]
    Rejected { seq: u64, reason: String },
    #[error("no frame from the gateway for {} s", LIVENESS_TIMEOUT.as_secs())]
    Silent,
}

impl UplinkError {
    /// What kind of trouble this is, for the screen (`SyncStatusView::problem_kind`).
    fn kind(&self) -> &'static str {
        match self {
            UplinkError::Client(ClientError::Unreachable(_))
            | UplinkError::Channel(_)
            | UplinkError::Silent => "unreachable",
            UplinkError::Client(_) | UplinkError::Rejected { .. } => "refused",
            UplinkError::Ack(_) => "journal_mismatch",
            UplinkError::Store(_) => "storage",
        }
    }
}

/// The uplink's working state.
struct Uplink {
    client: GatewayClient,
    /// Its own connection (reads the outbox, writes acknowledgements); behind a mutex only so
    /// the uplink can be shared across await points.
    conn: std::sync::Mutex<Connection>,
    clock: Arc<dyn Clock>,
    lane: LaneHandle,
    status: SyncStatusView,
    /// Signs the `config_applied` entries this uplink journals.
    key: SigningKey,
    store_id: String,
    pushes: broadcast::Sender<PushMessage>,
}

/// A running uplink: its task and the pushes it receives.
#[derive(Debug)]
pub struct UplinkHandle {
    pushes: broadcast::Sender<PushMessage>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl UplinkHandle {
    /// Every push the gateway sends from now on, parsed (topics in `lanepay_sync::wire::topic`).
    pub fn pushes(&self) -> broadcast::Receiver<PushMessage> {
        self.pushes.subscribe()
    }

    /// Waits for the uplink to stop (after `shutdown` turned true).
    pub async fn join(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// Starts the uplink on the current runtime; it runs until `shutdown` turns true.
pub fn spawn(
    settings: UplinkSettings,
    key: SigningKey,
    clock: Arc<dyn Clock>,
    lane: LaneHandle,
    shutdown: watch::Receiver<bool>,
) -> UplinkHandle {
    let (pushes, _) = broadcast::channel(PUSH_BUFFER_LEN);
    let task = tokio::spawn(run_with_pushes(
        settings,
        key,
        clock,
        lane,
        shutdown,
        pushes.clone(),
    ));
    UplinkHandle { pushes, task }
}

/// Runs until `shutdown` turns true (pushes other than `config` and `command` go nowhere:
/// use [`spawn`] to receive them).
pub async fn run(
    settings: UplinkSettings,
    key: SigningKey,
    clock: Arc<dyn Clock>,
    lane: LaneHandle,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (pushes, _) = broadcast::channel(PUSH_BUFFER_LEN);
    run_with_pushes(settings, key, clock, lane, shutdown, pushes).await
}

/// [`run`], handing every push to `pushes`.
pub async fn run_with_pushes(
    settings: UplinkSettings,
    key: SigningKey,
    clock: Arc<dyn Clock>,
    lane: LaneHandle,
    mut shutdown: watch::Receiver<bool>,
    pushes: broadcast::Sender<PushMessage>,
) -> anyhow::Result<()> {
    let mut uplink = Uplink::open(&settings, key, clock, lane, pushes)?;
    let mut backoff = BACKOFF_FIRST;
    while !*shutdown.borrow() {
        uplink.refresh_backlog();
        let outcome = match connect(&uplink).await {
            Ok((socket, server_time_ms)) => {
                backoff = BACKOFF_FIRST;
                if let Some(server_time_ms) = server_time_ms {
                    uplink.status.clock_skew_ms = Some(server_time_ms - uplink.clock.now_ms());
                }
                uplink.reload_config().await;
                uplink.session(socket, &mut shutdown).await
            }
            Err(error) => {
                // The WebSocket is down; REST may still work (a proxy that blocks upgrades).
                match uplink.drain_rest().await {
                    Ok(()) => Err(error),
                    Err(rest_error) => Err(rest_error),
                }
            }
        };
        let cap = match outcome {
            Err(error) => {
                tracing::info!(%error, "gateway link down");
                uplink.set_offline(&error);
                backoff_cap(&error)
            }
            // The session ended cleanly (shutdown) or the link dropped without an error.
            Ok(()) => BACKOFF_CAP_UNREACHABLE,
        };
        backoff = backoff.min(cap);
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        uplink
            .wait_offline(backoff + Duration::from_millis(jitter), &mut shutdown)
            .await;
        backoff = (backoff * 2).min(cap);
    }
    Ok(())
}

/// How long the reconnect backoff may grow for this kind of trouble.
fn backoff_cap(error: &UplinkError) -> Duration {
    let transient = match error {
        // A gateway that is restarting answers 502, 503 or 429 through its proxy for a while.
        UplinkError::Client(client) => client.is_transient(),
        other => other.kind() == "unreachable",
    };
    if transient {
        BACKOFF_CAP_UNREACHABLE
    } else {
        BACKOFF_CAP_REFUSED
    }
}

type Socket = lanepay_sync::client::WsStream;

/// Opens the live channel; returns the socket and the gateway's clock from the handshake.
async fn connect(uplink: &Uplink) -> Result<(Socket, Option<i64>), UplinkError> {
    let now = uplink.clock.now_ms();
    let request = uplink.client.ws_request(now)?;
    // wss:// with the lane's pinned trust, ws:// only to loopback (checked with the URL).
    let connecting = uplink.client.connect_ws(request);
    let server_time = |headers: &tungstenite::http::HeaderMap| {
        headers
            .get(lanepay_sync::auth::header::SERVER_TIME)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    match tokio::time::timeout(lanepay_sync::client::CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((socket, response))) => {
            let server_time = server_time(response.headers());
            if let Some(server_time_ms) = server_time {
                uplink.client.learn_server_time(server_time_ms, now);
            }
            Ok((socket, server_time))
        }
        Ok(Err(tungstenite::Error::Http(response))) => {
            // A refusal still tells the gateway's time: a lane with a wrong clock signs on the
            // gateway's clock from the next attempt on.
            if let Some(server_time_ms) = server_time(response.headers()) {
                uplink.client.learn_server_time(server_time_ms, now);
            }
            Err(UplinkError::Client(ClientError::Refused {
                status: response.status().as_u16(),
                message: response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).chars().take(200).collect())
                    .unwrap_or_default(),
            }))
        }
        Ok(Err(error)) => Err(UplinkError::Client(ClientError::Unreachable(
            error.to_string(),
        ))),
        Err(_) => Err(UplinkError::Client(ClientError::Unreachable(
            "connect timed out".into(),
        ))),
    }
}

/// Sends everything in the outbox now over REST and returns the resulting status (the demo
/// and `lanepay sync` use it before exiting). An error says why the lane could not sync.
pub async fn sync_now(
    settings: &UplinkSettings,
    key: SigningKey,
    clock: Arc<dyn Clock>,
    lane: LaneHandle,
) -> anyhow::Result<SyncStatusView> {
    let (pushes, _) = broadcast::channel(1);
    let mut uplink = Uplink::open(settings, key, clock, lane, pushes)?;
    uplink.drain_rest().await?;
    uplink.refresh_backlog();
    Ok(uplink.status)
}

impl Uplink {
    fn open(
        settings: &UplinkSettings,
        key: SigningKey,
        clock: Arc<dyn Clock>,
        lane: LaneHandle,
        pushes: broadcast::Sender<PushMessage>,
    ) -> anyhow::Result<Uplink> {
        let client = GatewayClient::new(
            &settings.base_url,
            &settings.terminal_id,
            key.clone(),
            settings.gateway_key,
            settings.tls.clone(),
        )?;
        let conn = store::open(&settings.db, Durability::Full)?;
        Ok(Uplink {
            client,
            conn: std::sync::Mutex::new(conn),
            clock,
            lane,
            status: SyncStatusView::default(),
            key,
            store_id: settings.store_id.clone(),
            pushes,
        })
    }

    /// Verifies and applies a configuration from the gateway; a refusal is logged and changes
    /// nothing. True when a new version is now in force.
    fn apply_config(&self, signed: &SignedConfig) -> bool {
        let lane = LaneIdentity {
            key: &self.key,
            terminal_id: self.client.terminal_id(),
            store_id: &self.store_id,
            gateway_key: self.client.gateway_key(),
        };
        let now = self.clock.now_ms();
        let outcome = {
            let mut conn = self
                .conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            remote_config::apply(&mut conn, &lane, signed, now)
        };
        match outcome {
            Ok(config) => {
                tracing::info!(
                    version = config.version,
                    issued_at_ms = config.issued_at_ms,
                    "store configuration applied"
                );
                true
            }
            Err(ApplyError::Refused(lanepay_sync::config::ConfigError::NotNewer {
                offered,
                current,
            })) if offered == current => {
                // The usual case on every connect: the lane already has this version.
                tracing::debug!(version = offered, "store configuration unchanged");
                false
            }
            Err(error) => {
                tracing::warn!(%error, version = signed.config.version, "store configuration refused; nothing changed");
                false
            }
        }
    }

    /// Fetches the store's configuration and applies it if it is newer (on every connect, so
    /// a version set while the lane was offline arrives, and on `reload_config`).
    async fn reload_config(&self) {
        let fetched = tokio::time::timeout(
            CONFIG_FETCH_TIMEOUT,
            self.client.fetch_config(self.clock.now_ms()),
        )
        .await;
        match fetched {
            Ok(Ok(signed)) => {
                self.apply_config(&signed);
            }
            Ok(Err(error)) => tracing::info!(%error, "cannot fetch the store configuration"),
            Err(_) => tracing::info!("fetching the store configuration timed out"),
        }
    }

    /// Handles one push: hands it on, then applies a configuration or carries out a command.
    async fn on_push(&mut self, topic: String, body: serde_json::Value) -> Result<(), UplinkError> {
        // No subscriber is fine: nothing on this lane wants that topic right now.
        let _ = self.pushes.send(PushMessage {
            topic: topic.clone(),
            body: body.clone(),
        });
        match topic.as_str() {
            topic::CONFIG => match serde_json::from_value::<SignedConfig>(body) {
                Ok(signed) => {
                    self.apply_config(&signed);
                }
                Err(error) => tracing::warn!(%error, "unreadable configuration push; ignored"),
            },
            topic::COMMAND => match serde_json::from_value::<CommandPush>(body) {
                Ok(push) => {
                    tracing::info!(id = %push.id, command = push.command.as_str(), "command from HQ");
                    match push.command {
                        TerminalCommand::SyncNow => {
                            self.drain_rest().await?;
                            self.refresh_backlog();
                            self.publish();
                        }
                        TerminalCommand::ReloadConfig => self.reload_config().await,
                        // The payments runtime forwards stored cards; it got the push above.
                        TerminalCommand::ForwardStored => {}
                    }
                    self.lane.publish(Event::GatewayCommand {
                        id: push.id,
                        command: push.command.as_str().to_string(),
                    });
                }
                Err(error) => tracing::warn!(%error, "unreadable command push; ignored"),
            },
            other => tracing::debug!(topic = other, "push handed on"),
        }
        Ok(())
    }

    fn db<T>(&self, work: impl FnOnce(&Connection) -> T) -> T {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        work(&conn)
    }

    fn publish(&self) {
        self.lane.publish(Event::SyncStatus(self.status.clone()));
    }

    fn refresh_backlog(&mut self) {
        let figures = self.db(|conn| {
            Ok::<_, store::StoreError>((journal::outbox_len(conn)?, journal::acknowledged(conn)?))
        });
        if let Ok((backlog, acked)) = figures {
            self.status.backlog = backlog;
            self.status.acknowledged_seq = acked;
        }
        // The offline card exposure (payments' stored cards) rides along for the status bar.
        let stored_and_limits = self.db(|conn| {
            Ok::<_, store::StoreError>((
                store::payments::stored_cards(conn)?,
                remote_config::offline_card_limits(conn),
            ))
        });
        if let Ok((stored, limits)) = stored_and_limits {
            let now_ms = self.clock.now_ms();
            self.status.offline_exposure = stored.total.to_string();
            self.status.stored_count = stored.count;
            self.status.oldest_stored_age_ms =
                stored.oldest_stored_at_ms.map(|t| now_ms.saturating_sub(t));
            let room = limits.room(&stored, now_ms);
            self.status.offline_card_room = room.largest_payment.to_string();
            self.status.offline_payments_left = room.payments_left;
        }
    }

    /// Waits out `backoff` before the next attempt. Meanwhile what the lane journals offline (a
    /// sale, a stored card) still reaches the status bar: the backlog, the offline exposure and
    /// the offline card room are read again after each journal entry (not after every scan).
    async fn wait_offline(&mut self, backoff: Duration, shutdown: &mut watch::Receiver<bool>) {
        let mut events = self.lane.subscribe();
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => return,
                _ = shutdown.changed() => return,
                event = events.recv() => match event {
                    Ok(Event::JournalAppended { .. })
                    | Err(broadcast::error::RecvError::Lagged(_)) => {
                        let before = self.status.clone();
                        self.refresh_backlog();
                        if self.status != before {
                            self.publish();
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    fn set_offline(&mut self, error: &UplinkError) {
        self.status.online = false;
        self.status.live = false;
        self.status.problem = Some(error.to_string());
        self.status.problem_kind = error.kind().to_string();
        self.refresh_backlog();
        self.publish();
    }

    fn set_online(&mut self, live: bool) {
        let changed =
            !self.status.online || self.status.live != live || self.status.problem.is_some();
        self.status.online = true;
        self.status.live = live;
        self.status.problem = None;
        self.status.problem_kind = String::new();
        if changed {
            self.publish();
        }
    }

    /// Applies the gateway's answer: marks the outbox from the verified ack.
    fn apply(&mut self, result: &IngestResult) -> Result<(), UplinkError> {
        let hash = self.client.verify_ack(&result.ack)?;
        let now = self.clock.now_ms();
        if result.ack.seq > 0 {
            self.db(|conn| journal::mark_acknowledged(conn, result.ack.seq, hash, now))?;
        }
        self.status.last_sync_ms = Some(now);
        self.status.clock_skew_ms = Some(self.client.clock_offset_ms());
        self.refresh_backlog();
        self.publish();
        if let Some(rejected) = &result.rejected {
            return Err(UplinkError::Rejected {
                seq: rejected.seq,
                reason: rejected.reason.clone(),
            });
        }
        Ok(())
    }

    fn next_entries(&self, limit: u64) -> Result<Vec<SignedEntry>, UplinkError> {
        Ok(self.db(|conn| journal::outbox(conn, limit))?)
    }

    /// Sends the outbox in REST batches until it is empty.
    async fn drain_rest(&mut self) -> Result<(), UplinkError> {
        loop {
            let entries = self.next_entries(REST_BATCH_ENTRIES)?;
            if entries.is_empty() {
                return Ok(());
            }
            let (result, _server_time) = self
                .client
                .send_batch(&entries, self.clock.now_ms())
                .await?;
            self.set_online(self.status.live);
            let before = self.status.acknowledged_seq;
            self.apply(&result)?;
            if self.status.acknowledged_seq == before {
                // Nothing moved (a gap the gateway holds): stop instead of spinning.
                return Ok(());
            }
        }
    }

    /// One live session: entries go out as they are committed, one batch in flight at a time.
    /// It ends with an error when the socket fails or no frame at all (not even a pong) came
    /// for [`LIVENESS_TIMEOUT`].
    async fn session<S>(
        &mut self,
        mut socket: S,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), UplinkError>
    where
        S: Stream<Item = Result<Message, tungstenite::Error>>
            + Sink<Message, Error = tungstenite::Error>
            + Unpin,
    {
        self.set_online(true);
        let mut events = self.lane.subscribe();
        let mut ping = tokio::time::interval(PING_INTERVAL);
        let mut idle = tokio::time::interval(IDLE_POLL);
        let mut last_heard = tokio::time::Instant::now();
        let mut in_flight = false;
        let mut sent_at = tokio::time::Instant::now();
        loop {
            if in_flight && sent_at.elapsed() > RESULT_TIMEOUT {
                tracing::info!("no result for the last batch; sending it again");
                in_flight = false;
            }
            if !in_flight {
                if self.status.backlog > REST_BACKLOG_THRESHOLD {
                    self.drain_rest().await?;
                }
                let entries = self.next_entries(LIVE_BATCH_ENTRIES)?;
                if !entries.is_empty() {
                    let frame = WsFrame::Entries {
                        entries: entries.iter().map(WireEntry::from).collect(),
                    };
                    let text = serde_json::to_string(&frame)
                        .map_err(|e| UplinkError::Channel(e.to_string()))?;
                    socket
                        .send(Message::text(text))
                        .await
                        .map_err(|e| UplinkError::Channel(e.to_string()))?;
                    in_flight = true;
                    sent_at = tokio::time::Instant::now();
                }
            }
            tokio::select! {
                frame = socket.next() => {
                    last_heard = tokio::time::Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            match serde_json::from_str::<WsFrame>(text.as_str()) {
                                Ok(WsFrame::Result(result)) => {
                                    in_flight = false;
                                    self.apply(&result)?;
                                }
                                Ok(WsFrame::Push { topic, body }) => self.on_push(topic, body).await?,
                                Ok(WsFrame::Entries { .. }) | Err(_) => {
                                    tracing::warn!("unexpected frame from the gateway; ignored");
                                }
                            }
                        }
                        Some(Ok(Message::Close(_))) | None => return Err(UplinkError::Channel("closed by the gateway".into())),
                        Some(Ok(_)) => {}
                        Some(Err(error)) => return Err(UplinkError::Channel(error.to_string())),
                    }
                }
                event = events.recv() => {
                    // New entries wake the loop at once; other events are not ours.
                    let _ = event;
                }
                _ = idle.tick() => {
                    self.refresh_backlog();
                }
                _ = ping.tick() => {
                    socket.send(Message::Ping(Vec::new().into())).await.map_err(|e| UplinkError::Channel(e.to_string()))?;
                }
                // Its own deadline, not a check on the ping tick: "offline" shows exactly
                // LIVENESS_TIMEOUT after the last frame, never up to a ping interval later.
                _ = tokio::time::sleep_until(last_heard + LIVENESS_TIMEOUT) => {
                    return Err(UplinkError::Silent);
                }
                _ = shutdown.changed() => {
                    let _ = socket.close().await;
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::lane::{Lane, LaneSettings};
    use tokio::time::Instant;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    const TERMINAL: &str = "S001-L001";

    /// A lane database with `entries` journal entries of which the first `acknowledged` are
    /// acknowledged, the lane running on it, and an uplink that has not connected yet.
    fn lane_with_backlog(
        dir: &std::path::Path,
        entries: u64,
        acknowledged: u64,
    ) -> (Uplink, LaneHandle) {
        let key = SigningKey::from_bytes(&[9; 32]);
        let gateway = SigningKey::from_bytes(&[10; 32]);
        let db = store::db_path(dir);
        let conn = store::open(&db, Durability::Normal).unwrap();
        let mut acked_hash = [0; 32];
        for seq in 1..=entries {
            let entry =
                journal::append(&conn, &key, TERMINAL, "note", b"{}".to_vec(), 1_000).unwrap();
            if seq == acknowledged {
                acked_hash = entry.hash;
            }
        }
        journal::mark_acknowledged(&conn, acknowledged, acked_hash, 2_000).unwrap();
        let config = lanepay_config::AgentConfig::new_default(
            TERMINAL,
            "S001",
            "M1001",
            dir,
            "test-token-0123456789",
        )
        .unwrap();
        let lane = Lane::open(conn, key.clone(), LaneSettings::from_config(&config)).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_795_000_000_000));
        let handle = crate::service::start(lane, clock.clone()).unwrap();
        let settings = UplinkSettings {
            base_url: "http://127.0.0.1:9".into(),
            terminal_id: TERMINAL.into(),
            store_id: "S001".into(),
            gateway_key: gateway.verifying_key(),
            db,
            tls: None,
        };
        let (pushes, _) = broadcast::channel(4);
        let uplink = Uplink::open(&settings, key, clock, handle.clone(), pushes).unwrap();
        (uplink, handle)
    }

    #[tokio::test(start_paused = true)]
    async fn a_gateway_that_goes_silent_shows_offline_within_five_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let (mut uplink, lane) = lane_with_backlog(dir.path(), 5, 2);
        let mut events = lane.subscribe();
        uplink.refresh_backlog();
        let (lane_end, gateway_end) = tokio::io::duplex(64 * 1024);
        let lane_ws = WebSocketStream::from_raw_socket(lane_end, Role::Client, None).await;
        let mut gateway_ws =
            WebSocketStream::from_raw_socket(gateway_end, Role::Server, None).await;
        let started = Instant::now();
        let lost_at = started + Duration::from_secs(3);
        // The gateway answers (pongs come from reading) for 3 s, then is blackholed: the
        // connection stays open but nothing comes back, as behind a dead router.
        let gateway = tokio::spawn(async move {
            let mut frames = 0;
            loop {
                tokio::select! {
                    frame = gateway_ws.next() => match frame {
                        Some(Ok(_)) => frames += 1,
                        _ => break,
                    },
                    _ = tokio::time::sleep_until(lost_at) => break,
                }
            }
            (gateway_ws, frames)
        });
        let (_stop, mut shutdown) = watch::channel(false);
        let outcome = uplink.session(lane_ws, &mut shutdown).await;
        let offline_at = Instant::now();
        let error = outcome.unwrap_err();
        assert!(matches!(error, UplinkError::Silent), "{error}");
        // What `run` does with a session that ended.
        uplink.set_offline(&error);
        let (_kept_open, frames) = gateway.await.unwrap();
        assert!(
            frames >= 2,
            "the lane pinged and sent its backlog ({frames} frames)"
        );
        let silent_for = offline_at - lost_at;
        assert!(
            silent_for <= LIVENESS_TIMEOUT,
            "offline {silent_for:?} after the gateway went silent"
        );
        assert!(
            offline_at - started >= LIVENESS_TIMEOUT,
            "a gateway that answered was not declared dead early"
        );

        let mut statuses = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let Event::SyncStatus(status) = event {
                statuses.push(status);
            }
        }
        let first = statuses.first().unwrap();
        assert!(first.online && first.live);
        let last = statuses.last().unwrap();
        assert!(!last.online);
        assert!(!last.live);
        assert_eq!(last.backlog, 3);
        assert_eq!(last.acknowledged_seq, 2);
        assert_eq!(
            last.problem.as_deref(),
            Some("no frame from the gateway for 5 s")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn while_offline_the_status_follows_what_the_lane_journals() {
        let dir = tempfile::tempdir().unwrap();
        let (mut uplink, lane) = lane_with_backlog(dir.path(), 3, 1);
        uplink.set_offline(&UplinkError::Client(ClientError::Unreachable(
            "connection refused".into(),
        )));
        assert_eq!(uplink.status.backlog, 2);
        assert_eq!(uplink.status.problem_kind, "unreachable");
        assert_eq!(uplink.status.offline_payments_left, 200);
        let mut events = lane.subscribe();
        let (_stop, mut shutdown) = watch::channel(false);
        let started = Instant::now();
        let waiting = uplink.wait_offline(Duration::from_secs(30), &mut shutdown);
        let lane_works = async {
            // The lane journals while the gateway is away, then tells its listeners.
            let conn = store::open(&store::db_path(dir.path()), Durability::Normal).unwrap();
            let key = SigningKey::from_bytes(&[9; 32]);
            journal::append(&conn, &key, TERMINAL, "note", b"{}".to_vec(), 3_000).unwrap();
            // A scan's event changes nothing in the journal: no status for it.
            lane.publish(Event::DeviceStatus(crate::api::DeviceStatusView {
                device: "printer".into(),
                state: "ready".into(),
                detail: None,
            }));
            lane.publish(Event::JournalAppended {
                seq: 4,
                kind: "note".into(),
            });
            let heard = async {
                loop {
                    if let Event::SyncStatus(status) = events.recv().await.unwrap() {
                        return (status, Instant::now());
                    }
                }
            };
            // Without the offline listening nothing is published at all.
            tokio::time::timeout(Duration::from_secs(60), heard)
                .await
                .expect("no sync status was published while offline")
        };
        let ((), (status, seen_at)) = tokio::join!(waiting, lane_works);
        assert_eq!(status.backlog, 3, "the new entry is counted while offline");
        assert!(!status.online);
        assert!(
            seen_at - started < Duration::from_secs(1),
            "the status bar heard at once, not after the backoff"
        );
    }

    #[test]
    fn an_unreachable_gateway_is_tried_again_often_enough_to_show_online_within_five_seconds() {
        let unreachable = UplinkError::Client(ClientError::Unreachable("refused".into()));
        let mut backoff = BACKOFF_FIRST;
        let mut waits = Vec::new();
        for _ in 0..6 {
            waits.push(backoff.as_millis());
            backoff = (backoff * 2).min(backoff_cap(&unreachable));
        }
        assert_eq!(waits, [500, 1_000, 2_000, 2_500, 2_500, 2_500]);
        // The longest wait, with its jitter of up to half of it.
        assert!(BACKOFF_CAP_UNREACHABLE * 3 / 2 < Duration::from_secs(5));
        assert_eq!(backoff_cap(&UplinkError::Silent), BACKOFF_CAP_UNREACHABLE);
        // A gateway restarting behind its proxy answers 502 or 503 for a while: transient.
        let restarting = UplinkError::Client(ClientError::Refused {
            status: 503,
            message: "restarting".into(),
        });
        assert_eq!(backoff_cap(&restarting), BACKOFF_CAP_UNREACHABLE);
        // Refused for good (a revoked terminal, a journal that does not match): half a minute.
        let revoked = UplinkError::Client(ClientError::Refused {
            status: 403,
            message: "revoked".into(),
        });
        assert_eq!(backoff_cap(&revoked), Duration::from_secs(30));
        let mismatch = UplinkError::Rejected {
            seq: 3,
            reason: "bad hash".into(),
        };
        assert_eq!(backoff_cap(&mismatch), BACKOFF_CAP_REFUSED);
    }

    #[test]
    fn uplink_errors_say_what_kind_of_trouble_they_are() {
        let unreachable = UplinkError::Client(ClientError::Unreachable("refused".into()));
        assert_eq!(unreachable.kind(), "unreachable");
        assert_eq!(UplinkError::Silent.kind(), "unreachable");
        let rejected = UplinkError::Rejected {
            seq: 12,
            reason: "bad signature".into(),
        };
        assert_eq!(rejected.kind(), "refused");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gateway_that_keeps_answering_keeps_the_lane_online() {
        let dir = tempfile::tempdir().unwrap();
        let (mut uplink, _lane) = lane_with_backlog(dir.path(), 1, 1);
        let (lane_end, gateway_end) = tokio::io::duplex(64 * 1024);
        let lane_ws = WebSocketStream::from_raw_socket(lane_end, Role::Client, None).await;
        let mut gateway_ws =
            WebSocketStream::from_raw_socket(gateway_end, Role::Server, None).await;
        tokio::spawn(async move { while let Some(Ok(_)) = gateway_ws.next().await {} });
        let (stop, mut shutdown) = watch::channel(false);
        let session = uplink.session(lane_ws, &mut shutdown);
        let stopper = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            stop.send(true).unwrap();
        };
        let (outcome, ()) = tokio::join!(session, stopper);
        assert!(
            outcome.is_ok(),
            "{:?}",
            outcome.err().map(|e| e.to_string())
        );
        assert!(uplink.status.online);
    }
}
