//! The lane running in the background: one thread owns the [`Lane`] (SQLite work is
//! blocking and must be serialised anyway); async callers send commands through a bounded
//! queue and subscribe to events.

use std::path::PathBuf;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::api::{Command, CommandError, Event, Reply, SyncStatusView};
use crate::clock::Clock;
use crate::lane::Lane;
use crate::store::{self, journal};

/// Commands waiting for the lane thread. A cashier types far slower; the bound only matters
/// when a program floods the local API, which then waits instead of growing memory.
pub const COMMAND_QUEUE_LEN: usize = 256;
/// Events kept for slow subscribers before they miss some (and are told so).
pub const EVENT_BUFFER_LEN: usize = 1_024;

/// Work for the lane thread: a command from a caller, or a step of the payments runtime that
/// must run where the database and the sale in progress live.
enum Job {
    Command(Command, oneshot::Sender<Result<Reply, CommandError>>),
    Run(LaneWork),
}

/// A step run on the lane thread with `now` and the events it causes.
type LaneWork = Box<dyn FnOnce(&mut Lane, i64, &mut Vec<Event>) + Send>;

/// A cheap, cloneable way to talk to the running lane.
#[derive(Debug, Clone)]
pub struct LaneHandle {
    commands: mpsc::Sender<Job>,
    events: broadcast::Sender<Event>,
    terminal_id: Arc<str>,
    /// The last sync status published: a screen or client that starts after the link came up
    /// shows it at once instead of "offline" until the next change.
    last_sync: Arc<std::sync::Mutex<Option<SyncStatusView>>>,
}

impl LaneHandle {
    /// Sends a command and waits for the lane's answer.
    pub async fn execute(&self, command: Command) -> Result<Reply, CommandError> {
        let (reply_to, reply) = oneshot::channel();
        let stopped = || CommandError::new("storage", "the lane has stopped; restart lanepay");
        self.commands
            .send(Job::Command(command, reply_to))
            .await
            .map_err(|_| stopped())?;
        reply.await.map_err(|_| stopped())?
    }

    /// Runs `work` on the lane thread with the lane's clock and returns its result; the
    /// events it pushes are published after it returns (the payments runtime's steps).
    pub async fn with_lane<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Lane, i64, &mut Vec<Event>) -> T + Send + 'static,
    ) -> Result<T, CommandError> {
        let (reply_to, reply) = oneshot::channel();
        let stopped = || CommandError::new("storage", "the lane has stopped; restart lanepay");
        let job = Job::Run(Box::new(move |lane, now_ms, events| {
            let _ = reply_to.send(work(lane, now_ms, events));
        }));
        self.commands.send(job).await.map_err(|_| stopped())?;
        reply.await.map_err(|_| stopped())
    }

    /// [`LaneHandle::execute`] for threads outside the async runtime (device threads).
    pub fn execute_blocking(&self, command: Command) -> Result<Reply, CommandError> {
        let (reply_to, reply) = oneshot::channel();
        let stopped = || CommandError::new("storage", "the lane has stopped; restart lanepay");
        self.commands
            .blocking_send(Job::Command(command, reply_to))
            .map_err(|_| stopped())?;
        reply.blocking_recv().map_err(|_| stopped())?
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Publishes an event that did not come from a command (sync status, devices).
    pub fn publish(&self, event: Event) {
        if let Event::SyncStatus(status) = &event {
            *self
                .last_sync
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status.clone());
        }
        // No subscribers is fine: nobody is watching right now.
        let _ = self.events.send(event);
    }

    /// The last sync status the uplink published (None before it has said anything).
    pub fn last_sync_status(&self) -> Option<SyncStatusView> {
        self.last_sync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn terminal_id(&self) -> &str {
        &self.terminal_id
    }
}

/// Starts the lane thread. It stops when every handle is dropped.
pub fn start(mut lane: Lane, clock: Arc<dyn Clock>) -> std::io::Result<LaneHandle> {
    let (commands, mut queue) = mpsc::channel::<Job>(COMMAND_QUEUE_LEN);
    let (events, _) = broadcast::channel(EVENT_BUFFER_LEN);
    let terminal_id: Arc<str> = lane.settings().terminal_id.as_str().into();
    let publisher = events.clone();
    std::thread::Builder::new()
        .name("lane".into())
        .spawn(move || {
            while let Some(job) = queue.blocking_recv() {
                match job {
                    Job::Command(command, reply_to) => {
                        let (result, happened) = lane.execute(command, clock.now_ms());
                        // Events first: a caller that sees the reply can count on the events
                        // being queued.
                        for event in happened {
                            let _ = publisher.send(event);
                        }
                        let _ = reply_to.send(result);
                    }
                    Job::Run(work) => {
                        let mut happened = Vec::new();
                        work(&mut lane, clock.now_ms(), &mut happened);
                        for event in happened {
                            let _ = publisher.send(event);
                        }
                    }
                }
            }
        })?;
    Ok(LaneHandle {
        commands,
        events,
        terminal_id,
        last_sync: Arc::default(),
    })
}

/// Checks the whole journal on its own read-only connection and publishes the result; the
/// lane keeps selling meanwhile (its tail was verified before it opened).
pub fn spawn_full_journal_check(
    db: PathBuf,
    terminal_id: String,
    key: VerifyingKey,
    handle: &LaneHandle,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let events = handle.events.clone();
    std::thread::Builder::new()
        .name("journal-check".into())
        .spawn(move || {
            let outcome = store::open_read_only(&db)
                .and_then(|conn| journal::verify(&conn, &terminal_id, key, 1));
            let event = match outcome {
                Ok(journal::Verification::Intact {
                    last_seq, entries, ..
                }) => {
                    tracing::info!(entries, last_seq, "journal verified in full");
                    Event::JournalChecked {
                        intact: true,
                        last_seq,
                        detail: format!("{entries} entries intact"),
                    }
                }
                Ok(journal::Verification::Broken { seq, reason }) => {
                    tracing::error!(seq, %reason, "journal is damaged");
                    Event::JournalChecked {
                        intact: false,
                        last_seq: seq,
                        detail: reason,
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "journal check could not run");
                    Event::JournalChecked {
                        intact: false,
                        last_seq: 0,
                        detail: error.to_string(),
                    }
                }
            };
            let _ = events.send(event);
        })
}
