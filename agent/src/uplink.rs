//! The lane's link to the gateway: drains the journal outbox over the live WebSocket channel,
//! or in REST batches when the backlog is large or the WebSocket is down, marks entries only
//! from verified acknowledgements, and says whether the lane is online.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use futures_util::{SinkExt, StreamExt};
use lanepay_sync::client::{ClientError, GatewayClient, TlsTrust};
use lanepay_sync::journal::SignedEntry;
use lanepay_sync::wire::{IngestResult, WireEntry, WsFrame};
use rand::Rng;
use rusqlite::Connection;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{Event, SyncStatusView};
use crate::clock::Clock;
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
/// Reconnect backoff: doubling from the first to the cap, with up to 50 % random jitter so a
/// store's lanes do not reconnect in lockstep after an outage.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How often the lane re-checks its outbox when nothing else happens.
pub const IDLE_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct UplinkSettings {
    pub base_url: String,
    pub terminal_id: String,
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
}

/// Runs until `shutdown` turns true.
pub async fn run(
    settings: UplinkSettings,
    key: SigningKey,
    clock: Arc<dyn Clock>,
    lane: LaneHandle,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut uplink = Uplink::open(&settings, key, clock, lane)?;
    let mut backoff = BACKOFF_FIRST;
    while !*shutdown.borrow() {
        uplink.refresh_backlog();
        let outcome = match connect(&uplink).await {
            Ok((socket, server_time_ms)) => {
                backoff = BACKOFF_FIRST;
                if let Some(server_time_ms) = server_time_ms {
                    uplink.status.clock_skew_ms = Some(server_time_ms - uplink.clock.now_ms());
                }
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
        if let Err(error) = outcome {
            tracing::info!(%error, "gateway link down");
            uplink.set_offline(&error);
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        tokio::select! {
            _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
    Ok(())
}

type Socket = lanepay_sync::client::WsStream;

/// Opens the live channel; returns the socket and the gateway's clock from the handshake.
async fn connect(uplink: &Uplink) -> Result<(Socket, Option<i64>), UplinkError> {
    let now = uplink.clock.now_ms();
    let request = uplink.client.ws_request(now)?;
    // wss:// with the lane's pinned trust, ws:// only to loopback (checked with the URL).
    let connecting = uplink.client.connect_ws(request);
    let server_time = |headers: &tokio_tungstenite::tungstenite::http::HeaderMap| {
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
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
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
    let mut uplink = Uplink::open(settings, key, clock, lane)?;
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
    ) -> anyhow::Result<Uplink> {
        let client = GatewayClient::new(
            &settings.base_url,
            &settings.terminal_id,
            key,
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
        })
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
    }

    fn set_offline(&mut self, error: &UplinkError) {
        self.status.online = false;
        self.status.live = false;
        self.status.problem = Some(error.to_string());
        self.refresh_backlog();
        self.publish();
    }

    fn set_online(&mut self, live: bool) {
        let changed =
            !self.status.online || self.status.live != live || self.status.problem.is_some();
        self.status.online = true;
        self.status.live = live;
        self.status.problem = None;
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
    async fn session(
        &mut self,
        mut socket: Socket,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), UplinkError> {
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
                                Ok(WsFrame::Push { topic, .. }) => tracing::debug!(%topic, "push from the gateway"),
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
                    if last_heard.elapsed() > LIVENESS_TIMEOUT {
                        return Err(UplinkError::Channel("no answer from the gateway for 5 s".into()));
                    }
                    socket.send(Message::Ping(Vec::new().into())).await.map_err(|e| UplinkError::Channel(e.to_string()))?;
                }
                _ = shutdown.changed() => {
                    let _ = socket.close(None).await;
                    return Ok(());
                }
            }
        }
    }
}
