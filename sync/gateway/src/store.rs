//! The gateway's SQLite database (WAL, `synchronous=FULL`: an order the merchant was told about
//! survives power loss). Every state change is a compare-and-set `UPDATE ... WHERE state = ?`,
//! and the notify it causes is inserted in the same transaction, so a crash never leaves a paid
//! order without its pending notify.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::StoreError;
use crate::model::{Merchant, Order, OrderState, PayType, Refund, RefundState};

/// How long SQLite waits for a lock held by another connection (the `merchant add` CLI) before
/// reporting busy.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE merchants (
    merchant_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    sign_type TEXT NOT NULL,
    secret TEXT,
    public_key_der BLOB,
    notify_hosts TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE gateway_keys (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    private_key_der BLOB NOT NULL
);
CREATE TABLE orders (
    trade_no TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    pay_type TEXT NOT NULL,
    total_fen INTEGER NOT NULL CHECK (total_fen > 0),
    currency TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    notify_url TEXT NOT NULL,
    return_url TEXT NOT NULL,
    state TEXT NOT NULL,
    pay_url TEXT NOT NULL,
    prepay_id TEXT NOT NULL,
    paid_fen INTEGER NOT NULL DEFAULT 0,
    refunded_fen INTEGER NOT NULL DEFAULT 0 CHECK (refunded_fen >= 0 AND refunded_fen <= paid_fen),
    pay_time_ms INTEGER,
    fail_sub_code TEXT NOT NULL DEFAULT '',
    by_auth_code INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    expire_at_ms INTEGER NOT NULL,
    rail_pay_at_ms INTEGER,
    rail_next_at_ms INTEGER,
    rail_reversing INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX orders_idempotency ON orders (merchant_id, out_trade_no);
CREATE INDEX orders_open_expiry ON orders (expire_at_ms) WHERE state IN ('CREATED', 'WAIT_PAY');
CREATE INDEX orders_rail ON orders (rail_next_at_ms) WHERE state = 'PAYING';
CREATE TABLE refunds (
    refund_no TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    out_refund_no TEXT NOT NULL,
    trade_no TEXT NOT NULL REFERENCES orders (trade_no),
    request_hash TEXT NOT NULL,
    amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER
);
CREATE UNIQUE INDEX refunds_idempotency ON refunds (merchant_id, out_refund_no);
CREATE INDEX refunds_by_trade ON refunds (trade_no);
CREATE TABLE notifies (
    notify_id TEXT PRIMARY KEY,
    trade_no TEXT NOT NULL REFERENCES orders (trade_no),
    merchant_id TEXT NOT NULL,
    notify_url TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    next_at_ms INTEGER
);
CREATE INDEX notifies_due ON notifies (next_at_ms) WHERE state = 'PENDING';
CREATE TABLE notify_attempts (
    notify_id TEXT NOT NULL REFERENCES notifies (notify_id),
    attempt_no INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    delivered INTEGER NOT NULL,
    PRIMARY KEY (notify_id, attempt_no)
);
",
    r"
ALTER TABLE refunds ADD COLUMN next_retry_at_ms INTEGER;
CREATE INDEX refunds_retry ON refunds (next_retry_at_ms) WHERE state = 'PROCESSING';
",
    // Orders a lane created through the terminal payment API: which terminal (results are
    // pushed to it, and only it may act on the order), the card's masked PAN, and when a
    // store-and-forward card payment was taken offline. Never the PAN.
    r"
CREATE TABLE terminal_orders (
    trade_no TEXT PRIMARY KEY REFERENCES orders (trade_no),
    terminal_id TEXT NOT NULL,
    masked_pan TEXT,
    stored_at_ms INTEGER,
    offline_seq INTEGER,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX terminal_orders_by_terminal ON terminal_orders (terminal_id);
",
];

/// Where a terminal-created order came from (table `terminal_orders`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalOrigin {
    /// The terminal that created the order.
    pub terminal_id: String,
    /// Card payments: first 6 and last 4 digits.
    pub masked_pan: Option<String>,
    /// Store-and-forward card payments: when the lane took the card offline.
    pub stored_at_ms: Option<i64>,
    /// Signed offline-QR orders: the lane's sequence number.
    pub offline_seq: Option<u64>,
}

/// Columns of `orders` in the order `order_from_row` reads them.
const ORDER_COLUMNS: &str = "trade_no, merchant_id, out_trade_no, request_hash, pay_type, total_fen, \
    currency, subject, body, notify_url, return_url, state, pay_url, prepay_id, paid_fen, refunded_fen, \
    pay_time_ms, fail_sub_code, by_auth_code, created_at_ms, expire_at_ms, rail_pay_at_ms, \
    rail_next_at_ms, rail_reversing";

const REFUND_COLUMNS: &str = "r.refund_no, r.merchant_id, r.out_refund_no, r.trade_no, o.out_trade_no, \
    r.request_hash, r.amount_fen, r.reason, r.state, r.created_at_ms, r.finished_at_ms";

/// A notify's delivery state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyState {
    /// Waiting for its next attempt.
    Pending,
    /// The merchant answered `success`.
    Delivered,
    /// The schedule ran out (24 h) without `success`.
    GaveUp,
}

impl NotifyState {
    /// Stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyState::Pending => "PENDING",
            NotifyState::Delivered => "DELIVERED",
            NotifyState::GaveUp => "GAVE_UP",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "PENDING" => Ok(NotifyState::Pending),
            "DELIVERED" => Ok(NotifyState::Delivered),
            "GAVE_UP" => Ok(NotifyState::GaveUp),
            other => Err(StoreError::Corrupt(format!("notify state {other:?}"))),
        }
    }
}

/// A stored notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Stable id, the same on every attempt.
    pub notify_id: String,
    /// Order it is about.
    pub trade_no: String,
    /// Merchant.
    pub merchant_id: String,
    /// Destination.
    pub notify_url: String,
    /// Unsigned body fields as a JSON object (timestamp and sign are added per attempt).
    pub payload: String,
    /// Delivery state.
    pub state: NotifyState,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the notify was created (the 24-hour limit counts from here).
    pub created_at_ms: i64,
    /// When the next attempt is due (PENDING only).
    pub next_at_ms: Option<i64>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyAttempt {
    /// 1-based.
    pub attempt_no: i64,
    /// When it was made.
    pub at_ms: i64,
    /// What the merchant answered, or why it failed.
    pub outcome: String,
    /// Whether it counted as delivered.
    pub delivered: bool,
}

/// Result of inserting an order under the idempotency index.
#[derive(Debug)]
pub enum InsertOrder {
    /// Stored.
    Inserted,
    /// (merchant_id, out_trade_no) already exists: here it is.
    Existing(Box<Order>),
}

/// Result of reserving a refund.
#[derive(Debug)]
pub enum ReserveRefund {
    /// Stored as PROCESSING, amount reserved on the order.
    Reserved,
    /// (merchant_id, out_refund_no) already exists: here it is.
    Existing(Box<Refund>),
    /// The amount is above what is left to refund (in fen).
    Exceeds {
        /// Paid minus refunded (including in-flight refunds).
        refundable_fen: i64,
    },
    /// The order is not in a refundable state.
    NotRefundable(OrderState),
}

/// The change a state transition makes besides the state.
#[derive(Debug, Default, Clone)]
pub struct TransitionChanges {
    /// `(paid_fen, pay_time_ms)` when the order becomes paid.
    pub paid: Option<(i64, i64)>,
    /// Sub-code recorded for a failed payment.
    pub fail_sub_code: Option<&'static str>,
}

/// The database: one writer thread that group-commits, and a pool of read connections.
///
/// Writes are closures sent to the writer thread. It runs every job that is waiting in one
/// transaction, each job inside its own savepoint (a failing job rolls back alone), commits once
/// with `synchronous=FULL`, and only then answers each caller: nothing is acknowledged before it
/// is durable, and concurrent requests share one fsync. Reads use their own connections, so a
/// query never waits for a commit (WAL readers see the last committed state).
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    writer: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Mutex<Vec<Connection>>,
}

/// Jobs committed together at most.
const MAX_GROUP_COMMIT: usize = 256;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// A write job with its result type erased, so one channel carries them all.
trait WriteJob: Send {
    /// Runs the job on the writer connection inside a savepoint; `false` if it failed.
    fn run(&mut self, connection: &Connection) -> bool;
    /// Answers the caller once the group's commit is known.
    fn finish(self: Box<Self>, committed: Result<(), String>);
}

impl std::fmt::Debug for dyn WriteJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteJob")
    }
}

struct TypedJob<R, F> {
    work: Option<F>,
    result: Option<Result<R, StoreError>>,
    reply: mpsc::SyncSender<Result<R, StoreError>>,
}

impl<R, F> WriteJob for TypedJob<R, F>
where
    R: Send,
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send,
{
    fn run(&mut self, connection: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A panicking job must not take the writer thread (and every later write) down with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(connection)))
            .unwrap_or_else(|_| Err(StoreError::Corrupt("a write job panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), String>) {
        let answer = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(error), _) => Err(StoreError::Unavailable(format!("commit failed: {error}"))),
            (Ok(()), None) => Err(StoreError::Unavailable("the write was not run".into())),
        };
        // The caller may have gone away (its thread ended); nothing to tell then.
        let _ = self.reply.send(answer);
    }
}

fn finish_all(jobs: Vec<Box<dyn WriteJob>>, committed: &Result<(), String>) {
    for job in jobs {
        job.finish(committed.clone());
    }
}

/// The writer thread: group commit until every `Store` handle is gone.
fn writer_loop(connection: Connection, jobs: mpsc::Receiver<Box<dyn WriteJob>>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP_COMMIT {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
            finish_all(batch, &Err(error.to_string()));
            continue;
        }
        let mut savepoints_ok = true;
        for job in &mut batch {
            if connection.execute_batch("SAVEPOINT job").is_err() {
                savepoints_ok = false;
                break;
            }
            let ok = job.run(&connection);
            let end = if ok {
                "RELEASE job"
            } else {
                "ROLLBACK TO job; RELEASE job"
            };
            if connection.execute_batch(end).is_err() {
                savepoints_ok = false;
                break;
            }
        }
        let committed = if savepoints_ok {
            connection
                .execute_batch("COMMIT")
                .map_err(|error| error.to_string())
        } else {
            Err("savepoint failed".to_owned())
        };
        if committed.is_err() {
            // Leaves the connection usable for the next group whatever state it is in.
            let _ = connection.execute_batch("ROLLBACK");
            tracing::error!(error = ?committed, jobs = batch.len(), "group commit failed");
        }
        finish_all(batch, &committed);
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    Ok(connection)
}

fn parse_state(text: &str) -> Result<OrderState, StoreError> {
    text.parse()
        .map_err(|()| StoreError::Corrupt(format!("order state {text:?}")))
}

fn order_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Order, StoreError>> {
    let pay_type: String = row.get(4)?;
    let state: String = row.get(11)?;
    let Ok(pay_type) = pay_type.parse::<PayType>() else {
        return Ok(Err(StoreError::Corrupt(format!("pay type {pay_type:?}"))));
    };
    let state = match parse_state(&state) {
        Ok(state) => state,
        Err(error) => return Ok(Err(error)),
    };
    Ok(Ok(Order {
        trade_no: row.get(0)?,
        merchant_id: row.get(1)?,
        out_trade_no: row.get(2)?,
        request_hash: row.get(3)?,
        pay_type,
        total_fen: row.get(5)?,
        currency: row.get(6)?,
        subject: row.get(7)?,
        body: row.get(8)?,
        notify_url: row.get(9)?,
        return_url: row.get(10)?,
        state,
        pay_url: row.get(12)?,
        prepay_id: row.get(13)?,
        paid_fen: row.get(14)?,
        refunded_fen: row.get(15)?,
        pay_time_ms: row.get(16)?,
        fail_sub_code: row.get(17)?,
        by_auth_code: row.get(18)?,
        created_at_ms: row.get(19)?,
        expire_at_ms: row.get(20)?,
        rail_pay_at_ms: row.get(21)?,
        rail_next_at_ms: row.get(22)?,
        rail_reversing: row.get(23)?,
    }))
}

fn refund_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Refund, StoreError>> {
    let state: String = row.get(8)?;
    let Ok(state) = state.parse::<RefundState>() else {
        return Ok(Err(StoreError::Corrupt(format!("refund state {state:?}"))));
    };
    Ok(Ok(Refund {
        refund_no: row.get(0)?,
        merchant_id: row.get(1)?,
        out_refund_no: row.get(2)?,
        trade_no: row.get(3)?,
        out_trade_no: row.get(4)?,
        request_hash: row.get(5)?,
        amount_fen: row.get(6)?,
        reason: row.get(7)?,
        state,
        created_at_ms: row.get(9)?,
        finished_at_ms: row.get(10)?,
    }))
}

fn notify_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Notify, StoreError>> {
    let state: String = row.get(5)?;
    let state = match NotifyState::parse(&state) {
        Ok(state) => state,
        Err(error) => return Ok(Err(error)),
    };
    Ok(Ok(Notify {
        notify_id: row.get(0)?,
        trade_no: row.get(1)?,
        merchant_id: row.get(2)?,
        notify_url: row.get(3)?,
        payload: row.get(4)?,
        state,
        attempts: row.get(6)?,
        created_at_ms: row.get(7)?,
        next_at_ms: row.get(8)?,
    }))
}

const NOTIFY_COLUMNS: &str = "notify_id, trade_no, merchant_id, notify_url, payload, state, attempts, created_at_ms, next_at_ms";

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(inner, _)
            if inner.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || inner.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

fn collect<T>(
    rows: impl Iterator<Item = rusqlite::Result<Result<T, StoreError>>>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

/// Builds the notify body for an order that just entered a notified state.
pub fn notify_payload(order: &Order) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = serde_json::Map::new();
    let mut put = |key: &str, value: String| {
        if !value.is_empty() {
            fields.insert(key.to_owned(), serde_json::Value::String(value));
        }
    };
    put("merchant_id", order.merchant_id.clone());
    put("trade_no", order.trade_no.clone());
    put("out_trade_no", order.out_trade_no.clone());
    put("trade_status", order.state.as_str().to_owned());
    put("total_amount", crate::money::format_yuan(order.total_fen));
    put("pay_type", order.pay_type.as_str().to_owned());
    if order.paid_fen > 0 {
        put("receipt_amount", crate::money::format_yuan(order.paid_fen));
    }
    if let Some(pay_time_ms) = order.pay_time_ms {
        put("pay_time", crate::money::format_beijing_time(pay_time_ms));
    }
    fields
}

/// The stable id of the notify for `trade_no` entering `state`.
pub fn notify_id_for(trade_no: &str, state: OrderState) -> String {
    format!("N{trade_no}{}", state.as_str())
}

impl Store {
    /// Opens (creating if needed) the database at `path`, applies migrations and starts the
    /// writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = open_connection(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        migrate(&connection)?;
        let (writer, jobs) = mpsc::channel::<Box<dyn WriteJob>>();
        std::thread::Builder::new()
            .name("gateway-db-writer".into())
            .spawn(move || writer_loop(connection, jobs))
            .map_err(|error| {
                StoreError::Unavailable(format!("cannot start the writer thread: {error}"))
            })?;
        Ok(Self {
            path: path.to_owned(),
            writer,
            readers: Mutex::new(Vec::new()),
        })
    }

    /// Runs `work` on the writer connection as part of the next group commit and returns its
    /// result once that commit is durable.
    fn write<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Box<dyn WriteJob> = Box::new(TypedJob {
            work: Some(work),
            result: None,
            reply,
        });
        self.writer
            .send(job)
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?;
        answer
            .recv()
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?
    }

    /// Runs `work` on a pooled read connection.
    fn read<R>(
        &self,
        work: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => {
                let connection = open_connection(&self.path)?;
                connection.pragma_update(None, "query_only", "ON")?;
                connection
            }
        };
        let result = work(&connection);
        let mut idle = self
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(connection);
        }
        result
    }

    /// Registers a merchant; `false` if the id is taken.
    pub fn insert_merchant(&self, merchant: &Merchant, now_ms: i64) -> Result<bool, StoreError> {
        let hosts = serde_json::to_string(&merchant.notify_hosts)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let merchant = merchant.clone();
        self.write(move |connection| {
            let result = connection.execute(
                "INSERT INTO merchants (merchant_id, name, sign_type, secret, public_key_der, notify_hosts, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    merchant.merchant_id,
                    merchant.name,
                    merchant.sign_type.as_str(),
                    merchant.secret,
                    merchant.public_key_der,
                    hosts,
                    now_ms
                ],
            );
            match result {
                Ok(_) => Ok(true),
                Err(error) if is_unique_violation(&error) => Ok(false),
                Err(error) => Err(error.into()),
            }
        })
    }

    /// Looks a merchant up.
    pub fn merchant(&self, merchant_id: &str) -> Result<Option<Merchant>, StoreError> {
        let row = self.read(|connection| {
            Ok(connection
                .query_row(
                    "SELECT merchant_id, name, sign_type, secret, public_key_der, notify_hosts FROM merchants WHERE merchant_id = ?1",
                    [merchant_id],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, Option<String>>(3)?,
                            row.get::<_, Option<Vec<u8>>>(4)?,
                            row.get::<_, String>(5)?,
                        ))
                    },
                )
                .optional()?)
        })?;
        let Some((merchant_id, name, sign_type, secret, public_key_der, hosts)) = row else {
            return Ok(None);
        };
        let sign_type = sign_type
            .parse()
            .map_err(|e: crate::signing::SignError| StoreError::Corrupt(e.to_string()))?;
        let notify_hosts =
            serde_json::from_str(&hosts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(Merchant {
            merchant_id,
            name,
            sign_type,
            secret,
            public_key_der,
            notify_hosts,
        }))
    }

    /// The gateway's RSA private key (PKCS#8 DER), storing `generate()`'s if there is none yet.
    /// Concurrent first calls converge on one key: the first insert wins and all read it back.
    pub fn gateway_private_key_der(
        &self,
        generate: impl FnOnce() -> Result<Vec<u8>, crate::signing::SignError>,
    ) -> Result<Result<Vec<u8>, crate::signing::SignError>, StoreError> {
        let existing: Option<Vec<u8>> = self.read(|connection| {
            Ok(connection
                .query_row(
                    "SELECT private_key_der FROM gateway_keys WHERE id = 1",
                    [],
                    |row| row.get(0),
                )
                .optional()?)
        })?;
        if let Some(der) = existing {
            return Ok(Ok(der));
        }
        let der = match generate() {
            Ok(der) => der,
            Err(error) => return Ok(Err(error)),
        };
        let stored = self.write(move |connection| {
            connection.execute(
                "INSERT OR IGNORE INTO gateway_keys (id, private_key_der) VALUES (1, ?1)",
                [der],
            )?;
            Ok(connection.query_row(
                "SELECT private_key_der FROM gateway_keys WHERE id = 1",
                [],
                |row| row.get(0),
            )?)
        })?;
        Ok(Ok(stored))
    }

    /// Stores a new order unless (merchant_id, out_trade_no) exists, in which case returns it.
    /// The unique index decides, so two concurrent creates cannot both insert.
    pub fn insert_order(&self, order: &Order, now_ms: i64) -> Result<InsertOrder, StoreError> {
        let order = order.clone();
        self.write(move |connection| insert_order_row(connection, &order, now_ms))
    }

    /// [`Store::insert_order`] for an order a terminal creates: the order and its origin are
    /// stored together (one group commit), or the existing order is returned.
    pub fn insert_terminal_order(
        &self,
        order: &Order,
        origin: &TerminalOrigin,
        now_ms: i64,
    ) -> Result<InsertOrder, StoreError> {
        let (order, origin) = (order.clone(), origin.clone());
        self.write(move |connection| {
            let inserted = insert_order_row(connection, &order, now_ms)?;
            if matches!(inserted, InsertOrder::Inserted) {
                connection.execute(
                    "INSERT INTO terminal_orders (trade_no, terminal_id, masked_pan, stored_at_ms, offline_seq, created_at_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        order.trade_no,
                        origin.terminal_id,
                        origin.masked_pan,
                        origin.stored_at_ms,
                        origin.offline_seq.and_then(|seq| i64::try_from(seq).ok()),
                        now_ms
                    ],
                )?;
            }
            Ok(inserted)
        })
    }

    /// The terminal that created an order, if a terminal did.
    pub fn terminal_origin(&self, trade_no: &str) -> Result<Option<TerminalOrigin>, StoreError> {
        self.read(|connection| {
            Ok(connection
                .query_row(
                    "SELECT terminal_id, masked_pan, stored_at_ms, offline_seq FROM terminal_orders WHERE trade_no = ?1",
                    [trade_no],
                    |row| {
                        Ok(TerminalOrigin {
                            terminal_id: row.get(0)?,
                            masked_pan: row.get(1)?,
                            stored_at_ms: row.get(2)?,
                            offline_seq: row
                                .get::<_, Option<i64>>(3)?
                                .and_then(|seq| u64::try_from(seq).ok()),
                        })
                    },
                )
                .optional()?)
        })
    }
}

fn insert_order_row(
    connection: &Connection,
    order: &Order,
    now_ms: i64,
) -> Result<InsertOrder, StoreError> {
    {
        {
            let result = connection.execute(
                &format!(
                    "INSERT INTO orders ({ORDER_COLUMNS}, updated_at_ms) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)"
                ),
                params![
                    order.trade_no,
                    order.merchant_id,
                    order.out_trade_no,
                    order.request_hash,
                    order.pay_type.as_str(),
                    order.total_fen,
                    order.currency,
                    order.subject,
                    order.body,
                    order.notify_url,
                    order.return_url,
                    order.state.as_str(),
                    order.pay_url,
                    order.prepay_id,
                    order.paid_fen,
                    order.refunded_fen,
                    order.pay_time_ms,
                    order.fail_sub_code,
                    order.by_auth_code,
                    order.created_at_ms,
                    order.expire_at_ms,
                    order.rail_pay_at_ms,
                    order.rail_next_at_ms,
                    order.rail_reversing,
                    now_ms
                ],
            );
            match result {
                Ok(_) => Ok(InsertOrder::Inserted),
                Err(error) if is_unique_violation(&error) => {
                    match order_where(
                        connection,
                        "merchant_id = ?1 AND out_trade_no = ?2",
                        [&order.merchant_id, &order.out_trade_no],
                    )? {
                        Some(existing) => Ok(InsertOrder::Existing(Box::new(existing))),
                        None => Err(StoreError::Corrupt("unique violation without a row".into())),
                    }
                }
                Err(error) => Err(error.into()),
            }
        }
    }
}

impl Store {
    /// The order with this trade number.
    pub fn order(&self, trade_no: &str) -> Result<Option<Order>, StoreError> {
        self.read(|connection| order_where(connection, "trade_no = ?1", [trade_no]))
    }

    /// The merchant's order with this out_trade_no.
    pub fn order_by_out(
        &self,
        merchant_id: &str,
        out_trade_no: &str,
    ) -> Result<Option<Order>, StoreError> {
        self.read(|connection| {
            order_where(
                connection,
                "merchant_id = ?1 AND out_trade_no = ?2",
                [merchant_id, out_trade_no],
            )
        })
    }

    /// Compare-and-set `from → to`. Returns the updated order, or `None` if the order was no
    /// longer in `from` (someone else moved it first). Enqueues the notify in the same
    /// transaction when `to` is a notified state.
    pub fn transition(
        &self,
        trade_no: &str,
        from: OrderState,
        to: OrderState,
        changes: &TransitionChanges,
        now_ms: i64,
    ) -> Result<Option<Order>, StoreError> {
        let (trade_no, changes) = (trade_no.to_owned(), changes.clone());
        self.write(move |connection| {
            let changed = connection.execute(
                "UPDATE orders SET state = ?1, paid_fen = COALESCE(?2, paid_fen), pay_time_ms = COALESCE(?3, pay_time_ms), \
                 fail_sub_code = COALESCE(?4, fail_sub_code), \
                 rail_next_at_ms = CASE WHEN ?1 = 'PAYING' THEN rail_next_at_ms ELSE NULL END, updated_at_ms = ?5 \
                 WHERE trade_no = ?6 AND state = ?7",
                params![
                    to.as_str(),
                    changes.paid.map(|(fen, _)| fen),
                    changes.paid.map(|(_, at)| at),
                    changes.fail_sub_code,
                    now_ms,
                    trade_no,
                    from.as_str()
                ],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            let order = order_where(connection, "trade_no = ?1", [&trade_no])?
                .ok_or_else(|| StoreError::Corrupt("updated order vanished".into()))?;
            // Orders a terminal created have no notify URL: the terminal hears by push.
            if to.is_notified() && !order.notify_url.is_empty() {
                let payload = serde_json::Value::Object(notify_payload(&order)).to_string();
                connection.execute(
                    "INSERT OR IGNORE INTO notifies (notify_id, trade_no, merchant_id, notify_url, payload, state, attempts, created_at_ms, next_at_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'PENDING', 0, ?6, ?6)",
                    params![notify_id_for(&trade_no, to), trade_no, order.merchant_id, order.notify_url, payload, now_ms],
                )?;
            }
            Ok(Some(order))
        })
    }

    /// Deletes a PAYING code payment whose pay request surely never reached the channel, so its
    /// out_trade_no is free again. Nothing else refers to such an order yet.
    pub fn discard_unsent_order(&self, trade_no: &str) -> Result<(), StoreError> {
        let trade_no = trade_no.to_owned();
        self.write(move |connection| {
            connection.execute(
                "DELETE FROM orders WHERE trade_no = ?1 AND state = 'PAYING' AND by_auth_code = 1 \
                 AND NOT EXISTS (SELECT 1 FROM notifies WHERE notifies.trade_no = orders.trade_no)",
                [trade_no],
            )?;
            Ok(())
        })
    }

    /// Sets when the rail worker looks at a PAYING order next, and whether it is reversing.
    pub fn set_rail_schedule(
        &self,
        trade_no: &str,
        next_at_ms: i64,
        reversing: bool,
    ) -> Result<(), StoreError> {
        let trade_no = trade_no.to_owned();
        self.write(move |connection| {
            connection.execute(
                "UPDATE orders SET rail_next_at_ms = ?1, rail_reversing = ?2 WHERE trade_no = ?3 AND state = 'PAYING'",
                params![next_at_ms, reversing, trade_no],
            )?;
            Ok(())
        })
    }

    /// PAYING orders whose rail step is due.
    pub fn due_rail_orders(&self, now_ms: i64, limit: usize) -> Result<Vec<Order>, StoreError> {
        self.read(|connection| {
            orders_where(
                connection,
                "state = 'PAYING' AND rail_next_at_ms <= ?1 ORDER BY rail_next_at_ms LIMIT ?2",
                params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
            )
        })
    }

    /// When the next rail step is due.
    pub fn next_rail_at(&self) -> Result<Option<i64>, StoreError> {
        self.read(|connection| {
            Ok(connection.query_row(
                "SELECT MIN(rail_next_at_ms) FROM orders WHERE state = 'PAYING'",
                [],
                |row| row.get(0),
            )?)
        })
    }

    /// Unpaid orders past their expiry.
    pub fn expired_orders(&self, now_ms: i64, limit: usize) -> Result<Vec<Order>, StoreError> {
        self.read(|connection| {
            orders_where(
                connection,
                "state IN ('CREATED', 'WAIT_PAY') AND expire_at_ms <= ?1 ORDER BY expire_at_ms LIMIT ?2",
                params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
            )
        })
    }

    /// Moves an unpaid order's expiry (a close the channel did not answer is tried again later).
    pub fn postpone_expiry(&self, trade_no: &str, expire_at_ms: i64) -> Result<(), StoreError> {
        let trade_no = trade_no.to_owned();
        self.write(move |connection| {
            connection.execute(
                "UPDATE orders SET expire_at_ms = ?1 WHERE trade_no = ?2 AND state IN ('CREATED', 'WAIT_PAY')",
                params![expire_at_ms, trade_no],
            )?;
            Ok(())
        })
    }

    /// The earliest expiry among unpaid orders.
    pub fn next_expiry_at(&self) -> Result<Option<i64>, StoreError> {
        self.read(|connection| {
            Ok(connection.query_row(
                "SELECT MIN(expire_at_ms) FROM orders WHERE state IN ('CREATED', 'WAIT_PAY')",
                [],
                |row| row.get(0),
            )?)
        })
    }

    /// The merchant's refund with this out_refund_no.
    pub fn refund_by_out(
        &self,
        merchant_id: &str,
        out_refund_no: &str,
    ) -> Result<Option<Refund>, StoreError> {
        self.read(|connection| refund_by_out(connection, merchant_id, out_refund_no))
    }

    /// All refunds of an order, oldest first.
    pub fn refunds_of(&self, trade_no: &str) -> Result<Vec<Refund>, StoreError> {
        self.read(|connection| refunds_where_trade(connection, trade_no))
    }

    /// An order with its refunds and notifies, read in one transaction so the three agree
    /// (a refund finishing between separate reads could show SUCCESS beside an order that
    /// had not yet moved to REFUND).
    pub fn order_with_history(&self, trade_no: &str) -> Result<Option<OrderHistory>, StoreError> {
        self.read(|connection| {
            let snapshot = connection.unchecked_transaction()?;
            let Some(order) = order_where(&snapshot, "trade_no = ?1", [trade_no])? else {
                return Ok(None);
            };
            let refunds = refunds_where_trade(&snapshot, trade_no)?;
            let notifies = notifies_where_trade(&snapshot, trade_no)?;
            snapshot.finish()?;
            Ok(Some(OrderHistory {
                order,
                refunds,
                notifies,
            }))
        })
    }

    /// In one transaction: returns an existing refund with the same out_refund_no, or checks the
    /// order is refundable and the amount fits, reserves it on the order and stores the refund
    /// as PROCESSING. Reserving first means two concurrent refunds can never exceed the paid
    /// amount together.
    ///
    /// The refund is due for a retry at `refund_retry_at_ms`, so one whose channel call never
    /// happened (crash) or went unanswered is pushed again by the refund worker.
    pub fn reserve_refund(
        &self,
        refund: &Refund,
        refund_retry_at_ms: i64,
    ) -> Result<ReserveRefund, StoreError> {
        let refund = refund.clone();
        self.write(move |connection| {
            if let Some(existing) = refund_by_out(connection, &refund.merchant_id, &refund.out_refund_no)? {
                return Ok(ReserveRefund::Existing(Box::new(existing)));
            }
            let (state, paid_fen, refunded_fen): (String, i64, i64) = connection.query_row(
                "SELECT state, paid_fen, refunded_fen FROM orders WHERE trade_no = ?1",
                [&refund.trade_no],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?;
            let state = parse_state(&state)?;
            if !matches!(state, OrderState::Success | OrderState::Refund) {
                return Ok(ReserveRefund::NotRefundable(state));
            }
            let changed = connection.execute(
                "UPDATE orders SET refunded_fen = refunded_fen + ?1 WHERE trade_no = ?2 \
                 AND state IN ('SUCCESS', 'REFUND') AND refunded_fen + ?1 <= paid_fen",
                params![refund.amount_fen, refund.trade_no],
            )?;
            if changed == 0 {
                return Ok(ReserveRefund::Exceeds { refundable_fen: paid_fen - refunded_fen });
            }
            connection.execute(
                "INSERT INTO refunds (refund_no, merchant_id, out_refund_no, trade_no, request_hash, amount_fen, reason, state, created_at_ms, next_retry_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'PROCESSING', ?8, ?9)",
                params![
                    refund.refund_no,
                    refund.merchant_id,
                    refund.out_refund_no,
                    refund.trade_no,
                    refund.request_hash,
                    refund.amount_fen,
                    refund.reason,
                    refund.created_at_ms,
                    refund_retry_at_ms
                ],
            )?;
            Ok(ReserveRefund::Reserved)
        })
    }

    /// Finishes a PROCESSING refund. Success moves the order to REFUND (first refund) and keeps
    /// the reservation; failure releases it. Returns `false` if the refund was not PROCESSING.
    pub fn finish_refund(
        &self,
        refund_no: &str,
        success: bool,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let refund_no = refund_no.to_owned();
        self.write(move |connection| {
            let new_state = if success { RefundState::Success } else { RefundState::Fail };
            let changed = connection.execute(
                "UPDATE refunds SET state = ?1, finished_at_ms = ?2 WHERE refund_no = ?3 AND state = 'PROCESSING'",
                params![new_state.as_str(), now_ms, refund_no],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            let (trade_no, amount_fen): (String, i64) = connection.query_row(
                "SELECT trade_no, amount_fen FROM refunds WHERE refund_no = ?1",
                [&refund_no],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            if success {
                connection.execute(
                    "UPDATE orders SET state = 'REFUND', updated_at_ms = ?1 WHERE trade_no = ?2 AND state = 'SUCCESS'",
                    params![now_ms, trade_no],
                )?;
            } else {
                connection.execute(
                    "UPDATE orders SET refunded_fen = refunded_fen - ?1, updated_at_ms = ?2 WHERE trade_no = ?3",
                    params![amount_fen, now_ms, trade_no],
                )?;
            }
            Ok(true)
        })
    }

    /// Sets when a PROCESSING refund is sent to the channel again.
    pub fn schedule_refund_retry(
        &self,
        refund_no: &str,
        next_retry_at_ms: i64,
    ) -> Result<(), StoreError> {
        let refund_no = refund_no.to_owned();
        self.write(move |connection| {
            connection.execute(
                "UPDATE refunds SET next_retry_at_ms = ?1 WHERE refund_no = ?2 AND state = 'PROCESSING'",
                params![next_retry_at_ms, refund_no],
            )?;
            Ok(())
        })
    }

    /// PROCESSING refunds due for a retry, with their order's pay type.
    pub fn due_refunds(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(Refund, PayType)>, StoreError> {
        self.read(|connection| {
            let mut statement = connection.prepare(&format!(
                "SELECT {REFUND_COLUMNS}, o.pay_type FROM refunds r JOIN orders o ON o.trade_no = r.trade_no \
                 WHERE r.state = 'PROCESSING' AND r.next_retry_at_ms <= ?1 ORDER BY r.next_retry_at_ms LIMIT ?2"
            ))?;
            let rows = statement.query_map(params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                let refund = refund_from_row(row)?;
                let pay_type: String = row.get(11)?;
                Ok(refund.and_then(|refund| {
                    pay_type
                        .parse::<PayType>()
                        .map(|pay_type| (refund, pay_type))
                        .map_err(|()| StoreError::Corrupt(format!("pay type {pay_type:?}")))
                }))
            })?;
            collect(rows)
        })
    }

    /// When the next refund retry is due.
    pub fn next_refund_retry_at(&self) -> Result<Option<i64>, StoreError> {
        self.read(|connection| {
            Ok(connection.query_row(
                "SELECT MIN(next_retry_at_ms) FROM refunds WHERE state = 'PROCESSING'",
                [],
                |row| row.get(0),
            )?)
        })
    }

    /// Pending notifies due now.
    pub fn due_notifies(&self, now_ms: i64, limit: usize) -> Result<Vec<Notify>, StoreError> {
        self.read(|connection| {
            let mut statement = connection.prepare(&format!(
                "SELECT {NOTIFY_COLUMNS} FROM notifies WHERE state = 'PENDING' AND next_at_ms <= ?1 ORDER BY next_at_ms LIMIT ?2"
            ))?;
            let rows = statement.query_map(params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)], notify_from_row)?;
            collect(rows)
        })
    }

    /// When the next pending notify is due.
    pub fn next_notify_at(&self) -> Result<Option<i64>, StoreError> {
        self.read(|connection| {
            Ok(connection.query_row(
                "SELECT MIN(next_at_ms) FROM notifies WHERE state = 'PENDING'",
                [],
                |row| row.get(0),
            )?)
        })
    }

    /// One notify.
    pub fn notify(&self, notify_id: &str) -> Result<Option<Notify>, StoreError> {
        self.read(|connection| {
            let found = connection
                .query_row(
                    &format!("SELECT {NOTIFY_COLUMNS} FROM notifies WHERE notify_id = ?1"),
                    [notify_id],
                    notify_from_row,
                )
                .optional()?;
            found.transpose()
        })
    }

    /// All notifies about an order.
    pub fn notifies_of(&self, trade_no: &str) -> Result<Vec<Notify>, StoreError> {
        self.read(|connection| notifies_where_trade(connection, trade_no))
    }

    /// The attempts made for a notify, in order.
    pub fn notify_attempts(&self, notify_id: &str) -> Result<Vec<NotifyAttempt>, StoreError> {
        self.read(|connection| {
            let mut statement = connection.prepare(
                "SELECT attempt_no, at_ms, outcome, delivered FROM notify_attempts WHERE notify_id = ?1 ORDER BY attempt_no",
            )?;
            let rows = statement.query_map([notify_id], |row| {
                Ok(NotifyAttempt { attempt_no: row.get(0)?, at_ms: row.get(1)?, outcome: row.get(2)?, delivered: row.get(3)? })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Records an attempt and the notify's next state: delivered, pending until `next_at_ms`,
    /// or given up (`next_at_ms` is `None` and not delivered).
    pub fn record_notify_attempt(
        &self,
        notify_id: &str,
        now_ms: i64,
        outcome: &str,
        delivered: bool,
        next_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let (notify_id, outcome) = (notify_id.to_owned(), outcome.to_owned());
        self.write(move |connection| {
            let attempts: i64 =
                connection.query_row("SELECT attempts FROM notifies WHERE notify_id = ?1", [&notify_id], |row| row.get(0))?;
            let attempt_no = attempts + 1;
            connection.execute(
                "INSERT INTO notify_attempts (notify_id, attempt_no, at_ms, outcome, delivered) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![notify_id, attempt_no, now_ms, outcome, delivered],
            )?;
            let state = match (delivered, next_at_ms) {
                (true, _) => NotifyState::Delivered,
                (false, Some(_)) => NotifyState::Pending,
                (false, None) => NotifyState::GaveUp,
            };
            connection.execute(
                "UPDATE notifies SET attempts = ?1, state = ?2, next_at_ms = ?3 WHERE notify_id = ?4",
                params![attempt_no, state.as_str(), if delivered { None } else { next_at_ms }, notify_id],
            )?;
            Ok(())
        })
    }

    /// Operator resend: makes the notify pending and due now, whatever its state. Returns
    /// `false` if there is no such notify.
    pub fn resend_notify(&self, notify_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let notify_id = notify_id.to_owned();
        self.write(move |connection| {
            let changed = connection.execute(
                "UPDATE notifies SET state = 'PENDING', next_at_ms = ?1 WHERE notify_id = ?2",
                params![now_ms, notify_id],
            )?;
            Ok(changed == 1)
        })
    }

    /// Counts rows of a table, for tests and operators. Only fixed table names are accepted.
    pub fn count_rows(&self, table: &str) -> Result<i64, StoreError> {
        let table = match table {
            "orders" | "refunds" | "notifies" | "notify_attempts" | "merchants" => table,
            other => return Err(StoreError::Corrupt(format!("unknown table {other:?}"))),
        };
        self.read(|connection| {
            Ok(
                connection.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                    row.get(0)
                })?,
            )
        })
    }
}

/// The replay cache of request nonces, in its own database file with `synchronous=NORMAL`.
///
/// Every signed request with a nonce writes here, queries included; with FULL sync in the main
/// database each of those writes would wait for an fsync. NORMAL (WAL) survives a process crash
/// but may lose the last nonces on power loss: a replay inside the 300 s window after a power
/// failure could then pass this check, and is still stopped by idempotency (the same
/// out_trade_no or out_refund_no returns the original result, never a second charge).
#[derive(Debug)]
pub struct NonceStore {
    connection: Mutex<Connection>,
}

impl NonceStore {
    /// Opens (creating if needed) the nonce database.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = open_connection(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS nonces (
                merchant_id TEXT NOT NULL,
                nonce TEXT NOT NULL,
                expires_at_ms INTEGER NOT NULL,
                PRIMARY KEY (merchant_id, nonce)
            );
            CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at_ms);",
        )?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    /// Records a nonce; `false` if the merchant already used it and it has not expired.
    pub fn remember(
        &self,
        merchant_id: &str,
        nonce: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        connection.execute("DELETE FROM nonces WHERE expires_at_ms < ?1", [now_ms])?;
        let result = connection.execute(
            "INSERT INTO nonces (merchant_id, nonce, expires_at_ms) VALUES (?1, ?2, ?3)",
            params![merchant_id, nonce, expires_at_ms],
        );
        match result {
            Ok(_) => Ok(true),
            Err(error) if is_unique_violation(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}

fn migrate(connection: &Connection) -> Result<(), StoreError> {
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let applied: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        let applied = usize::try_from(applied).unwrap_or(0);
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "database schema version {applied} is newer than this gateway ({}); upgrade the gateway",
                MIGRATIONS.len()
            )));
        }
        for migration in &MIGRATIONS[applied..] {
            connection.execute_batch(migration)?;
        }
        connection.pragma_update(None, "user_version", MIGRATIONS.len())?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(connection.execute_batch("COMMIT")?),
        Err(error) => {
            let _ = connection.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

fn order_where(
    connection: &Connection,
    condition: &str,
    args: impl rusqlite::Params,
) -> Result<Option<Order>, StoreError> {
    let found = connection
        .query_row(
            &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE {condition}"),
            args,
            order_from_row,
        )
        .optional()?;
    found.transpose()
}

fn orders_where(
    connection: &Connection,
    condition: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Order>, StoreError> {
    let mut statement = connection.prepare(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE {condition}"
    ))?;
    let rows = statement.query_map(args, order_from_row)?;
    collect(rows)
}

fn refund_by_out(
    connection: &Connection,
    merchant_id: &str,
    out_refund_no: &str,
) -> Result<Option<Refund>, StoreError> {
    let found = connection
        .query_row(
            &format!(
                "SELECT {REFUND_COLUMNS} FROM refunds r JOIN orders o ON o.trade_no = r.trade_no \
                 WHERE r.merchant_id = ?1 AND r.out_refund_no = ?2"
            ),
            [merchant_id, out_refund_no],
            refund_from_row,
        )
        .optional()?;
    found.transpose()
}

/// An order and everything that hangs off it, read together.
#[derive(Debug)]
pub struct OrderHistory {
    pub order: Order,
    pub refunds: Vec<Refund>,
    pub notifies: Vec<Notify>,
}

fn refunds_where_trade(connection: &Connection, trade_no: &str) -> Result<Vec<Refund>, StoreError> {
    let mut statement = connection.prepare(&format!(
        "SELECT {REFUND_COLUMNS} FROM refunds r JOIN orders o ON o.trade_no = r.trade_no \
         WHERE r.trade_no = ?1 ORDER BY r.created_at_ms, r.refund_no"
    ))?;
    let rows = statement.query_map([trade_no], refund_from_row)?;
    collect(rows)
}

fn notifies_where_trade(
    connection: &Connection,
    trade_no: &str,
) -> Result<Vec<Notify>, StoreError> {
    let mut statement = connection.prepare(&format!(
        "SELECT {NOTIFY_COLUMNS} FROM notifies WHERE trade_no = ?1 ORDER BY created_at_ms, notify_id"
    ))?;
    let rows = statement.query_map([trade_no], notify_from_row)?;
    collect(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn order(out_trade_no: &str) -> Order {
        Order {
            trade_no: format!("T-{out_trade_no}"),
            merchant_id: "M1".into(),
            out_trade_no: out_trade_no.into(),
            request_hash: "h".into(),
            pay_type: PayType::Alipay,
            total_fen: 100,
            currency: "CNY".into(),
            subject: "s".into(),
            body: String::new(),
            notify_url: "http://127.0.0.1/n".into(),
            return_url: String::new(),
            state: OrderState::Created,
            pay_url: String::new(),
            prepay_id: String::new(),
            paid_fen: 0,
            refunded_fen: 0,
            pay_time_ms: None,
            fail_sub_code: String::new(),
            by_auth_code: false,
            created_at_ms: 0,
            expire_at_ms: 1_000,
            rail_pay_at_ms: None,
            rail_next_at_ms: None,
            rail_reversing: false,
        }
    }

    #[test]
    fn concurrent_writers_share_commits_and_the_unique_index_decides() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("g.sqlite")).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut inserted = 0;
                    for i in 0..50 {
                        // Every thread also races for the same shared numbers.
                        let number = if i % 5 == 0 {
                            format!("shared-{i}")
                        } else {
                            format!("t{thread}-{i}")
                        };
                        if matches!(
                            store.insert_order(&order(&number), 0).unwrap(),
                            InsertOrder::Inserted
                        ) {
                            inserted += 1;
                        }
                    }
                    inserted
                })
            })
            .collect();
        let inserted: i64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(inserted, 8 * 40 + 10);
        assert_eq!(store.count_rows("orders").unwrap(), inserted);
    }

    #[test]
    fn a_failing_job_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.sqlite")).unwrap();
        let merchant = |id: &str| Merchant {
            merchant_id: id.into(),
            name: "n".into(),
            sign_type: crate::signing::SignType::HmacSha256,
            secret: Some("s".into()),
            public_key_der: None,
            notify_hosts: vec!["127.0.0.1".into()],
        };
        let failed: Result<(), StoreError> = store.write(|connection| {
            connection.execute(
                "INSERT INTO merchants (merchant_id, name, sign_type, notify_hosts, created_at_ms) VALUES ('lost', 'n', 'HMAC-SHA256', '[]', 0)",
                [],
            )?;
            Err(StoreError::Corrupt("job fails after writing".into()))
        });
        assert!(failed.is_err());
        assert!(store.insert_merchant(&merchant("kept"), 0).unwrap());
        assert!(!store.insert_merchant(&merchant("kept"), 0).unwrap());
        assert!(
            store.insert_merchant(&merchant("lost"), 0).unwrap(),
            "the failed job's row was rolled back"
        );
        assert_eq!(store.count_rows("merchants").unwrap(), 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Whatever sequence of refunds is reserved and finished, the order's refunded amount
        /// is exactly the sum of its successful and in-flight refunds, and never above paid.
        #[test]
        fn refund_reservations_conserve_every_fen(
            steps in proptest::collection::vec((1i64..=4_000, 0u8..3), 1..25)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("g.sqlite")).unwrap();
            let paid = order("P");
            store.insert_order(&paid, 0).unwrap();
            let changes = TransitionChanges { paid: Some((10_000, 1)), ..TransitionChanges::default() };
            store.transition(&paid.trade_no, OrderState::Created, OrderState::Success, &changes, 1).unwrap().unwrap();
            for (index, (amount_fen, outcome)) in steps.into_iter().enumerate() {
                let refund = Refund {
                    refund_no: format!("R{index}"),
                    merchant_id: "M1".into(),
                    out_refund_no: format!("OR{index}"),
                    trade_no: paid.trade_no.clone(),
                    out_trade_no: paid.out_trade_no.clone(),
                    request_hash: "h".into(),
                    amount_fen,
                    reason: "r".into(),
                    state: RefundState::Processing,
                    created_at_ms: 2,
                    finished_at_ms: None,
                };
                if matches!(store.reserve_refund(&refund, 10).unwrap(), ReserveRefund::Reserved) {
                    match outcome {
                        0 => { store.finish_refund(&refund.refund_no, true, 3).unwrap(); }
                        1 => { store.finish_refund(&refund.refund_no, false, 3).unwrap(); }
                        _ => {} // left in flight: its amount stays reserved
                    }
                }
                let stored = store.order(&paid.trade_no).unwrap().unwrap();
                let held: i64 = store
                    .refunds_of(&paid.trade_no)
                    .unwrap()
                    .iter()
                    .filter(|r| r.state != RefundState::Fail)
                    .map(|r| r.amount_fen)
                    .sum();
                proptest::prop_assert_eq!(stored.refunded_fen, held);
                proptest::prop_assert!(stored.refunded_fen <= stored.paid_fen);
            }
        }
    }

    #[test]
    fn nonces_are_single_use_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let nonces = NonceStore::open(&dir.path().join("n.sqlite")).unwrap();
        assert!(nonces.remember("M", "a", 0, 300).unwrap());
        assert!(!nonces.remember("M", "a", 100, 400).unwrap());
        assert!(nonces.remember("M2", "a", 100, 400).unwrap());
        assert!(
            nonces.remember("M", "a", 301, 601).unwrap(),
            "expired nonces are forgotten"
        );
    }
}
