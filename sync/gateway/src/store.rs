//! The gateway's SQLite database (WAL, `synchronous=FULL`: an order the merchant was told about
//! survives power loss). Every state change is a compare-and-set `UPDATE ... WHERE state = ?`,
//! and the notify it causes is inserted in the same transaction, so a crash never leaves a paid
//! order without its pending notify.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::StoreError;
use crate::model::{Merchant, Order, OrderState, PayType, Refund, RefundState};

/// How long SQLite waits for a lock held by another connection (the `merchant add` CLI) before
/// reporting busy.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[r"
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
CREATE TABLE nonces (
    merchant_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, nonce)
);
CREATE INDEX nonces_expiry ON nonces (expires_at_ms);
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
"];

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

/// The database, one connection behind a mutex (SQLite serialises writers anyway).
#[derive(Debug)]
pub struct Store {
    connection: Mutex<Connection>,
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
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        let store = Self {
            connection: Mutex::new(connection),
        };
        store.migrate()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned mutex is safe to keep using.
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let applied: i64 = transaction.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        let applied = usize::try_from(applied).unwrap_or(0);
        if applied > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "database schema version {applied} is newer than this gateway ({}); upgrade the gateway",
                MIGRATIONS.len()
            )));
        }
        for migration in &MIGRATIONS[applied..] {
            transaction.execute_batch(migration)?;
        }
        transaction.pragma_update(None, "user_version", MIGRATIONS.len())?;
        transaction.commit()?;
        Ok(())
    }

    /// Registers a merchant; `false` if the id is taken.
    pub fn insert_merchant(&self, merchant: &Merchant, now_ms: i64) -> Result<bool, StoreError> {
        let hosts = serde_json::to_string(&merchant.notify_hosts)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let result = self.lock().execute(
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
    }

    /// Looks a merchant up.
    pub fn merchant(&self, merchant_id: &str) -> Result<Option<Merchant>, StoreError> {
        let row = self
            .lock()
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
            .optional()?;
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
        let existing: Option<Vec<u8>> = self
            .lock()
            .query_row(
                "SELECT private_key_der FROM gateway_keys WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(der) = existing {
            return Ok(Ok(der));
        }
        let der = match generate() {
            Ok(der) => der,
            Err(error) => return Ok(Err(error)),
        };
        let connection = self.lock();
        connection.execute(
            "INSERT OR IGNORE INTO gateway_keys (id, private_key_der) VALUES (1, ?1)",
            [der],
        )?;
        let stored = connection.query_row(
            "SELECT private_key_der FROM gateway_keys WHERE id = 1",
            [],
            |row| row.get(0),
        )?;
        Ok(Ok(stored))
    }

    /// Records a nonce; `false` if the merchant already used it and it has not expired.
    pub fn remember_nonce(
        &self,
        merchant_id: &str,
        nonce: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let connection = self.lock();
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

    /// Stores a new order unless (merchant_id, out_trade_no) exists, in which case returns it.
    /// The unique index decides, so two concurrent creates cannot both insert.
    pub fn insert_order(&self, order: &Order, now_ms: i64) -> Result<InsertOrder, StoreError> {
        let connection = self.lock();
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
                drop(connection);
                match self.order_by_out(&order.merchant_id, &order.out_trade_no)? {
                    Some(existing) => Ok(InsertOrder::Existing(Box::new(existing))),
                    None => Err(StoreError::Corrupt("unique violation without a row".into())),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    fn order_where(
        &self,
        condition: &str,
        args: impl rusqlite::Params,
    ) -> Result<Option<Order>, StoreError> {
        let connection = self.lock();
        let found = connection
            .query_row(
                &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE {condition}"),
                args,
                order_from_row,
            )
            .optional()?;
        found.transpose()
    }

    /// The order with this trade number.
    pub fn order(&self, trade_no: &str) -> Result<Option<Order>, StoreError> {
        self.order_where("trade_no = ?1", [trade_no])
    }

    /// The merchant's order with this out_trade_no.
    pub fn order_by_out(
        &self,
        merchant_id: &str,
        out_trade_no: &str,
    ) -> Result<Option<Order>, StoreError> {
        self.order_where(
            "merchant_id = ?1 AND out_trade_no = ?2",
            [merchant_id, out_trade_no],
        )
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
        let mut connection = self.lock();
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let changed = transaction.execute(
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
        let order = transaction.query_row(
            &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE trade_no = ?1"),
            [trade_no],
            order_from_row,
        )??;
        if to.is_notified() {
            let payload = serde_json::Value::Object(notify_payload(&order)).to_string();
            transaction.execute(
                "INSERT OR IGNORE INTO notifies (notify_id, trade_no, merchant_id, notify_url, payload, state, attempts, created_at_ms, next_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'PENDING', 0, ?6, ?6)",
                params![notify_id_for(trade_no, to), trade_no, order.merchant_id, order.notify_url, payload, now_ms],
            )?;
        }
        transaction.commit()?;
        Ok(Some(order))
    }

    /// Sets when the rail worker looks at a PAYING order next, and whether it is reversing.
    pub fn set_rail_schedule(
        &self,
        trade_no: &str,
        next_at_ms: i64,
        reversing: bool,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE orders SET rail_next_at_ms = ?1, rail_reversing = ?2 WHERE trade_no = ?3 AND state = 'PAYING'",
            params![next_at_ms, reversing, trade_no],
        )?;
        Ok(())
    }

    /// PAYING orders whose rail step is due.
    pub fn due_rail_orders(&self, now_ms: i64, limit: usize) -> Result<Vec<Order>, StoreError> {
        self.orders_where(
            "state = 'PAYING' AND rail_next_at_ms <= ?1 ORDER BY rail_next_at_ms LIMIT ?2",
            params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// When the next rail step is due.
    pub fn next_rail_at(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.lock().query_row(
            "SELECT MIN(rail_next_at_ms) FROM orders WHERE state = 'PAYING'",
            [],
            |row| row.get(0),
        )?)
    }

    /// Unpaid orders past their expiry.
    pub fn expired_orders(&self, now_ms: i64, limit: usize) -> Result<Vec<Order>, StoreError> {
        self.orders_where(
            "state IN ('CREATED', 'WAIT_PAY') AND expire_at_ms <= ?1 ORDER BY expire_at_ms LIMIT ?2",
            params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// Moves an unpaid order's expiry (a close the channel did not answer is tried again later).
    pub fn postpone_expiry(&self, trade_no: &str, expire_at_ms: i64) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE orders SET expire_at_ms = ?1 WHERE trade_no = ?2 AND state IN ('CREATED', 'WAIT_PAY')",
            params![expire_at_ms, trade_no],
        )?;
        Ok(())
    }

    /// The earliest expiry among unpaid orders.
    pub fn next_expiry_at(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.lock().query_row(
            "SELECT MIN(expire_at_ms) FROM orders WHERE state IN ('CREATED', 'WAIT_PAY')",
            [],
            |row| row.get(0),
        )?)
    }

    fn orders_where(
        &self,
        condition: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<Order>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE {condition}"
        ))?;
        let rows = statement.query_map(args, order_from_row)?;
        collect(rows)
    }

    /// The merchant's refund with this out_refund_no.
    pub fn refund_by_out(
        &self,
        merchant_id: &str,
        out_refund_no: &str,
    ) -> Result<Option<Refund>, StoreError> {
        let connection = self.lock();
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

    /// All refunds of an order, oldest first.
    pub fn refunds_of(&self, trade_no: &str) -> Result<Vec<Refund>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare(&format!(
            "SELECT {REFUND_COLUMNS} FROM refunds r JOIN orders o ON o.trade_no = r.trade_no \
             WHERE r.trade_no = ?1 ORDER BY r.created_at_ms, r.refund_no"
        ))?;
        let rows = statement.query_map([trade_no], refund_from_row)?;
        collect(rows)
    }

    /// In one transaction: returns an existing refund with the same out_refund_no, or checks the
    /// order is refundable and the amount fits, reserves it on the order and stores the refund
    /// as PROCESSING. Reserving first means two concurrent refunds can never exceed the paid
    /// amount together.
    pub fn reserve_refund(&self, refund: &Refund) -> Result<ReserveRefund, StoreError> {
        if let Some(existing) = self.refund_by_out(&refund.merchant_id, &refund.out_refund_no)? {
            return Ok(ReserveRefund::Existing(Box::new(existing)));
        }
        let mut connection = self.lock();
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (state, paid_fen, refunded_fen): (String, i64, i64) = transaction.query_row(
            "SELECT state, paid_fen, refunded_fen FROM orders WHERE trade_no = ?1",
            [&refund.trade_no],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        let state = parse_state(&state)?;
        if !matches!(state, OrderState::Success | OrderState::Refund) {
            return Ok(ReserveRefund::NotRefundable(state));
        }
        let changed = transaction.execute(
            "UPDATE orders SET refunded_fen = refunded_fen + ?1 WHERE trade_no = ?2 \
             AND state IN ('SUCCESS', 'REFUND') AND refunded_fen + ?1 <= paid_fen",
            params![refund.amount_fen, refund.trade_no],
        )?;
        if changed == 0 {
            return Ok(ReserveRefund::Exceeds {
                refundable_fen: paid_fen - refunded_fen,
            });
        }
        let inserted = transaction.execute(
            "INSERT INTO refunds (refund_no, merchant_id, out_refund_no, trade_no, request_hash, amount_fen, reason, state, created_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'PROCESSING', ?8)",
            params![
                refund.refund_no,
                refund.merchant_id,
                refund.out_refund_no,
                refund.trade_no,
                refund.request_hash,
                refund.amount_fen,
                refund.reason,
                refund.created_at_ms
            ],
        );
        match inserted {
            Ok(_) => {
                transaction.commit()?;
                Ok(ReserveRefund::Reserved)
            }
            Err(error) if is_unique_violation(&error) => {
                // A concurrent request with the same out_refund_no won; roll back our reservation.
                drop(transaction);
                drop(connection);
                match self.refund_by_out(&refund.merchant_id, &refund.out_refund_no)? {
                    Some(existing) => Ok(ReserveRefund::Existing(Box::new(existing))),
                    None => Err(StoreError::Corrupt(
                        "refund unique violation without a row".into(),
                    )),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Finishes a PROCESSING refund. Success moves the order to REFUND (first refund) and keeps
    /// the reservation; failure releases it. Returns `false` if the refund was not PROCESSING.
    pub fn finish_refund(
        &self,
        refund_no: &str,
        success: bool,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut connection = self.lock();
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let new_state = if success {
            RefundState::Success
        } else {
            RefundState::Fail
        };
        let changed = transaction.execute(
            "UPDATE refunds SET state = ?1, finished_at_ms = ?2 WHERE refund_no = ?3 AND state = 'PROCESSING'",
            params![new_state.as_str(), now_ms, refund_no],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        let (trade_no, amount_fen): (String, i64) = transaction.query_row(
            "SELECT trade_no, amount_fen FROM refunds WHERE refund_no = ?1",
            [refund_no],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        if success {
            transaction.execute(
                "UPDATE orders SET state = 'REFUND', updated_at_ms = ?1 WHERE trade_no = ?2 AND state = 'SUCCESS'",
                params![now_ms, trade_no],
            )?;
        } else {
            transaction.execute(
                "UPDATE orders SET refunded_fen = refunded_fen - ?1, updated_at_ms = ?2 WHERE trade_no = ?3",
                params![amount_fen, now_ms, trade_no],
            )?;
        }
        transaction.commit()?;
        Ok(true)
    }

    /// Pending notifies due now.
    pub fn due_notifies(&self, now_ms: i64, limit: usize) -> Result<Vec<Notify>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare(&format!(
            "SELECT {NOTIFY_COLUMNS} FROM notifies WHERE state = 'PENDING' AND next_at_ms <= ?1 ORDER BY next_at_ms LIMIT ?2"
        ))?;
        let rows = statement.query_map(
            params![now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
            notify_from_row,
        )?;
        collect(rows)
    }

    /// When the next pending notify is due.
    pub fn next_notify_at(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.lock().query_row(
            "SELECT MIN(next_at_ms) FROM notifies WHERE state = 'PENDING'",
            [],
            |row| row.get(0),
        )?)
    }

    /// One notify.
    pub fn notify(&self, notify_id: &str) -> Result<Option<Notify>, StoreError> {
        let connection = self.lock();
        let found = connection
            .query_row(
                &format!("SELECT {NOTIFY_COLUMNS} FROM notifies WHERE notify_id = ?1"),
                [notify_id],
                notify_from_row,
            )
            .optional()?;
        found.transpose()
    }

    /// All notifies about an order.
    pub fn notifies_of(&self, trade_no: &str) -> Result<Vec<Notify>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(&format!("SELECT {NOTIFY_COLUMNS} FROM notifies WHERE trade_no = ?1 ORDER BY created_at_ms, notify_id"))?;
        let rows = statement.query_map([trade_no], notify_from_row)?;
        collect(rows)
    }

    /// The attempts made for a notify, in order.
    pub fn notify_attempts(&self, notify_id: &str) -> Result<Vec<NotifyAttempt>, StoreError> {
        let connection = self.lock();
        let mut statement = connection.prepare(
            "SELECT attempt_no, at_ms, outcome, delivered FROM notify_attempts WHERE notify_id = ?1 ORDER BY attempt_no",
        )?;
        let rows = statement.query_map([notify_id], |row| {
            Ok(NotifyAttempt {
                attempt_no: row.get(0)?,
                at_ms: row.get(1)?,
                outcome: row.get(2)?,
                delivered: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
        let mut connection = self.lock();
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let attempts: i64 = transaction.query_row(
            "SELECT attempts FROM notifies WHERE notify_id = ?1",
            [notify_id],
            |row| row.get(0),
        )?;
        let attempt_no = attempts + 1;
        transaction.execute(
            "INSERT INTO notify_attempts (notify_id, attempt_no, at_ms, outcome, delivered) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![notify_id, attempt_no, now_ms, outcome, delivered],
        )?;
        let state = match (delivered, next_at_ms) {
            (true, _) => NotifyState::Delivered,
            (false, Some(_)) => NotifyState::Pending,
            (false, None) => NotifyState::GaveUp,
        };
        transaction.execute(
            "UPDATE notifies SET attempts = ?1, state = ?2, next_at_ms = ?3 WHERE notify_id = ?4",
            params![
                attempt_no,
                state.as_str(),
                if delivered { None } else { next_at_ms },
                notify_id
            ],
        )?;
        transaction.commit()?;
        Ok(())
    }

    /// Operator resend: makes the notify pending and due now, whatever its state. Returns
    /// `false` if there is no such notify.
    pub fn resend_notify(&self, notify_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let changed = self.lock().execute(
            "UPDATE notifies SET state = 'PENDING', next_at_ms = ?1 WHERE notify_id = ?2",
            params![now_ms, notify_id],
        )?;
        Ok(changed == 1)
    }

    /// Counts rows of a table, for tests and operators. Only fixed table names are accepted.
    pub fn count_rows(&self, table: &str) -> Result<i64, StoreError> {
        let table = match table {
            "orders" | "refunds" | "notifies" | "notify_attempts" | "nonces" | "merchants" => table,
            other => return Err(StoreError::Corrupt(format!("unknown table {other:?}"))),
        };
        Ok(self
            .lock()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })?)
    }
}
