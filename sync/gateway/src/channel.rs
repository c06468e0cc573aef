//! Payment channels behind one trait, and the sandboxes that stand in for Alipay, WeChat Pay,
//! UnionPay and a card acquirer. A sandbox behaves like its rail where it matters to the gateway:
//! auth codes are single use even when the payment fails, a user may have to confirm (and may
//! never do so), an answer can be lost after the channel committed, a reverse refunds a payment
//! that completed late, a dynamic-QR order exists at the channel only once scanned, and every
//! money movement lands in a daily bill. Each payment's fate is a pure function of the sandbox
//! seed, the channel, the payer's code and the amount, so any run replays exactly.
//!
//! Channel calls are synchronous and run on the blocking pool: the sandbox is SQLite-backed, and
//! the gateway never holds its own database lock across a channel call.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng as _, SeedableRng as _};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use sha2::Digest as _;
use thiserror::Error;

use crate::model::PayType;
use crate::money::{format_beijing_time, format_yuan};

/// Outcome of a code payment that the channel answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayOutcome {
    /// Paid at this time.
    Success {
        /// When the channel took the money.
        paid_at_ms: i64,
    },
    /// The user must confirm on the phone; query later.
    Paying,
    /// The payer's funds were insufficient (seed 004 code 1005).
    InsufficientBalance,
}

/// What a channel query says about a trade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeStatus {
    /// The channel has never seen the trade.
    NotFound,
    /// Scanned, waiting for the payer.
    WaitBuyer,
    /// The payer is confirming.
    Paying,
    /// Paid at this time.
    Success {
        /// When the channel took the money.
        paid_at_ms: i64,
    },
    /// Closed unpaid.
    Closed,
    /// Declined.
    Declined,
    /// Reversed.
    Reversed,
}

/// A channel call that did not succeed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ChannelError {
    /// No answer (timeout): the outcome is unknown and the call may or may not have taken
    /// effect. Never retried on another channel.
    #[error("the channel did not answer; the outcome is unknown")]
    NoAnswer,
    /// The request surely did not reach the channel (connection refused): nothing happened
    /// there, and the caller may try again.
    #[error("the channel is unavailable; the request did not reach it")]
    Unavailable,
    /// The auth code has the wrong format for this rail.
    #[error("the payment code is not valid for this channel")]
    AuthCodeInvalid,
    /// The auth code was already presented once (codes are single use, even after a failure).
    #[error("the payment code was already used")]
    AuthCodeUsed,
    /// The trade is already paid (a close lost the race with the payer).
    #[error("the trade is already paid")]
    AlreadyPaid,
    /// The trade is in a state that does not allow the call.
    #[error("the trade cannot do that in state {0}")]
    NotAllowed(&'static str),
    /// The channel does not know the trade.
    #[error("the channel does not know this trade")]
    TradeNotFound,
    /// Refunds would exceed the paid amount.
    #[error("refunds would exceed the paid amount")]
    RefundExceedsPaid,
    /// The sandbox's own storage failed.
    #[error("channel storage: {0}")]
    Storage(String),
}

impl From<rusqlite::Error> for ChannelError {
    fn from(error: rusqlite::Error) -> Self {
        ChannelError::Storage(error.to_string())
    }
}

/// A payment channel (rail). Amounts are fen; times are the gateway clock's milliseconds.
pub trait Channel: Send + Sync + fmt::Debug {
    /// Which rail this is.
    fn pay_type(&self) -> PayType;
    /// Charges a customer-presented code (付款码).
    fn pay_with_code(
        &self,
        trade_no: &str,
        auth_code: &str,
        amount_fen: i64,
        now_ms: i64,
    ) -> Result<PayOutcome, ChannelError>;
    /// Creates the trade at the channel when its dynamic QR is scanned.
    fn precreate(&self, trade_no: &str, amount_fen: i64, now_ms: i64) -> Result<(), ChannelError>;
    /// Asks for a trade's status.
    fn query(&self, trade_no: &str, now_ms: i64) -> Result<TradeStatus, ChannelError>;
    /// Closes an unpaid trade (a never-scanned trade is closed so it cannot be scanned later).
    fn close(&self, trade_no: &str, now_ms: i64) -> Result<(), ChannelError>;
    /// Reverses (撤销) a code payment: cancels it if pending, refunds it if it completed.
    /// Returns the amount refunded by the reverse, in fen.
    fn reverse(&self, trade_no: &str, now_ms: i64) -> Result<i64, ChannelError>;
    /// Refunds part or all of a paid trade; idempotent by `refund_no`.
    fn refund(
        &self,
        trade_no: &str,
        refund_no: &str,
        amount_fen: i64,
        now_ms: i64,
    ) -> Result<(), ChannelError>;
    /// The bill (CSV) of money movements in `[from_ms, to_ms)`.
    fn bill(&self, from_ms: i64, to_ms: i64) -> Result<String, ChannelError>;
}

/// Behaviour knobs of one sandbox channel. Percentages apply to payments whose amount does not
/// select a scenario (see [`Scenario::from_amount`]).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxChannelConfig {
    /// Real time each call takes (the gateway's blocking pool absorbs it).
    pub latency_ms: u64,
    /// Code payments that need the user to confirm on the phone.
    pub confirm_percent: u8,
    /// Of those, the users who never confirm.
    pub never_confirm_percent: u8,
    /// Code payments whose answer is lost after the channel committed.
    pub unknown_percent: u8,
    /// Code payments declined for insufficient balance.
    pub decline_percent: u8,
    /// Shortest user think time.
    pub think_time_ms_min: i64,
    /// Longest user think time.
    pub think_time_ms_max: i64,
}

impl Default for SandboxChannelConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            confirm_percent: 0,
            never_confirm_percent: 0,
            unknown_percent: 0,
            decline_percent: 0,
            think_time_ms_min: 3_000,
            think_time_ms_max: 20_000,
        }
    }
}

/// The sandbox configuration file (JSON): a seed and per-channel knobs keyed by pay type.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Seed of every random choice; the same seed replays the same run.
    pub seed: u64,
    /// Knobs per pay type (`alipay`, `wechat`, `unionpay`, `card`).
    pub channels: BTreeMap<String, SandboxChannelConfig>,
}

/// Code payments whose amount ends in this many fen never reach the sandbox (as if the
/// connection were refused), so callers can see a surely-unsent failure.
pub const UNREACHABLE_AMOUNT_FEN_PART: i64 = 96;

/// Refunds whose amount ends in this many fen are made, but the first answer is lost.
pub const LOST_REFUND_ANSWER_FEN_PART: i64 = 97;

/// What happens to one code payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Paid at once.
    Immediate,
    /// PAYING; the user confirms after the think time.
    UserConfirms,
    /// PAYING; the user never confirms.
    NeverConfirms,
    /// Committed, but the pay answer is lost; queries answer.
    UnknownCommitted,
    /// Declined: insufficient balance.
    Declined,
    /// Committed, the pay answer is lost, queries go unanswered and the first reverse too.
    Silent,
}

impl Scenario {
    /// Sandbox trigger amounts (documented in docs/gateway-api.md): the fen part of the amount
    /// picks a scenario, like the magic amounts of real sandboxes.
    pub fn from_amount(amount_fen: i64) -> Option<Self> {
        match amount_fen % 100 {
            91 => Some(Scenario::UserConfirms),
            92 => Some(Scenario::NeverConfirms),
            93 => Some(Scenario::UnknownCommitted),
            94 => Some(Scenario::Declined),
            95 => Some(Scenario::Silent),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scenario::Immediate => "IMMEDIATE",
            Scenario::UserConfirms => "USER_CONFIRMS",
            Scenario::NeverConfirms => "NEVER_CONFIRMS",
            Scenario::UnknownCommitted => "UNKNOWN_COMMITTED",
            Scenario::Declined => "DECLINED",
            Scenario::Silent => "SILENT",
        }
    }
}

const SANDBOX_SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS sandbox_codes (
    pay_type TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    used_at_ms INTEGER NOT NULL,
    PRIMARY KEY (pay_type, code_hash)
);
CREATE TABLE IF NOT EXISTS sandbox_trades (
    pay_type TEXT NOT NULL,
    trade_no TEXT NOT NULL,
    amount_fen INTEGER NOT NULL,
    state TEXT NOT NULL,
    scenario TEXT NOT NULL,
    confirm_at_ms INTEGER,
    paid_at_ms INTEGER,
    reverse_calls INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (pay_type, trade_no)
);
CREATE TABLE IF NOT EXISTS sandbox_ledger (
    pay_type TEXT NOT NULL,
    trade_no TEXT NOT NULL,
    kind TEXT NOT NULL,
    reference TEXT NOT NULL,
    amount_fen INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (pay_type, kind, reference)
);
";

/// The sandboxes' own database: the "other side" of the rail, kept apart from the gateway's.
#[derive(Debug)]
pub struct SandboxDb {
    connection: Mutex<Connection>,
}

impl SandboxDb {
    /// Opens the sandbox database file.
    pub fn open(path: &Path) -> Result<Self, ChannelError> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.execute_batch(SANDBOX_SCHEMA)?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One sandbox rail.
#[derive(Debug)]
pub struct SandboxChannel {
    pay_type: PayType,
    seed: u64,
    config: SandboxChannelConfig,
    db: Arc<SandboxDb>,
}

struct Trade {
    amount_fen: i64,
    state: String,
    scenario: String,
    confirm_at_ms: Option<i64>,
    paid_at_ms: Option<i64>,
    reverse_calls: i64,
}

impl SandboxChannel {
    /// A sandbox for `pay_type` over `db`.
    pub fn new(
        pay_type: PayType,
        seed: u64,
        config: SandboxChannelConfig,
        db: Arc<SandboxDb>,
    ) -> Self {
        Self {
            pay_type,
            seed,
            config,
            db,
        }
    }

    /// The random source of one payment: a function of the seed, the rail, the payer's code and
    /// the amount, i.e. of the run's inputs only. (Not of the trade number, which is random per
    /// run: keyed on it, the same inputs would meet different fates in each run.)
    fn rng_for(&self, auth_code: &str, amount_fen: i64) -> rand::rngs::StdRng {
        let digest = sha2::Sha256::new()
            .chain_update(self.seed.to_le_bytes())
            .chain_update(self.pay_type.as_str())
            .chain_update(auth_code)
            .chain_update(amount_fen.to_le_bytes())
            .finalize();
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&digest[..32]);
        rand::rngs::StdRng::from_seed(seed)
    }

    fn simulate_latency(&self) {
        if self.config.latency_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.config.latency_ms));
        }
    }

    fn load(&self, connection: &Connection, trade_no: &str) -> Result<Option<Trade>, ChannelError> {
        Ok(connection
            .query_row(
                "SELECT amount_fen, state, scenario, confirm_at_ms, paid_at_ms, reverse_calls FROM sandbox_trades WHERE pay_type = ?1 AND trade_no = ?2",
                params![self.pay_type.as_str(), trade_no],
                |row| {
                    Ok(Trade {
                        amount_fen: row.get(0)?,
                        state: row.get(1)?,
                        scenario: row.get(2)?,
                        confirm_at_ms: row.get(3)?,
                        paid_at_ms: row.get(4)?,
                        reverse_calls: row.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    fn set_state(
        &self,
        connection: &Connection,
        trade_no: &str,
        state: &str,
        paid_at_ms: Option<i64>,
    ) -> Result<(), ChannelError> {
        connection.execute(
            "UPDATE sandbox_trades SET state = ?1, paid_at_ms = COALESCE(?2, paid_at_ms) WHERE pay_type = ?3 AND trade_no = ?4",
            params![state, paid_at_ms, self.pay_type.as_str(), trade_no],
        )?;
        Ok(())
    }

    fn ledger(
        &self,
        connection: &Connection,
        trade_no: &str,
        kind: &str,
        reference: &str,
        amount_fen: i64,
        at_ms: i64,
    ) -> Result<(), ChannelError> {
        connection.execute(
            "INSERT OR IGNORE INTO sandbox_ledger (pay_type, trade_no, kind, reference, amount_fen, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![self.pay_type.as_str(), trade_no, kind, reference, amount_fen, at_ms],
        )?;
        Ok(())
    }

    /// Lets time act on a trade: a user who confirms does so at `confirm_at_ms`.
    fn settle(
        &self,
        connection: &Connection,
        trade_no: &str,
        now_ms: i64,
    ) -> Result<Option<Trade>, ChannelError> {
        let Some(mut trade) = self.load(connection, trade_no)? else {
            return Ok(None);
        };
        if trade.state == "PAYING"
            && let Some(confirm_at_ms) = trade.confirm_at_ms
            && confirm_at_ms <= now_ms
        {
            self.set_state(connection, trade_no, "SUCCESS", Some(confirm_at_ms))?;
            self.ledger(
                connection,
                trade_no,
                "PAY",
                trade_no,
                trade.amount_fen,
                confirm_at_ms,
            )?;
            trade.state = "SUCCESS".to_owned();
            trade.paid_at_ms = Some(confirm_at_ms);
        }
        Ok(Some(trade))
    }

    fn pick_scenario(&self, auth_code: &str, amount_fen: i64) -> (Scenario, i64) {
        let mut rng = self.rng_for(auth_code, amount_fen);
        let low = self.config.think_time_ms_min.max(0);
        let high = self.config.think_time_ms_max.max(low);
        let think_time_ms = rng.random_range(low..=high);
        if let Some(scenario) = Scenario::from_amount(amount_fen) {
            return (scenario, think_time_ms);
        }
        let mut roll = |percent: u8| rng.random_range(0..100u8) < percent;
        let scenario = if roll(self.config.decline_percent) {
            Scenario::Declined
        } else if roll(self.config.unknown_percent) {
            Scenario::UnknownCommitted
        } else if roll(self.config.confirm_percent) {
            if roll(self.config.never_confirm_percent) {
                Scenario::NeverConfirms
            } else {
                Scenario::UserConfirms
            }
        } else {
            Scenario::Immediate
        };
        (scenario, think_time_ms)
    }

    /// The payer scans the QR and confirms in the sandbox wallet.
    pub fn wallet_confirm(&self, trade_no: &str, now_ms: i64) -> Result<i64, ChannelError> {
        self.simulate_latency();
        let connection = self.db.lock();
        let trade = self
            .settle(&connection, trade_no, now_ms)?
            .ok_or(ChannelError::TradeNotFound)?;
        match trade.state.as_str() {
            "WAIT_BUYER" => {
                self.set_state(&connection, trade_no, "SUCCESS", Some(now_ms))?;
                self.ledger(
                    &connection,
                    trade_no,
                    "PAY",
                    trade_no,
                    trade.amount_fen,
                    now_ms,
                )?;
                Ok(now_ms)
            }
            "SUCCESS" => Ok(trade.paid_at_ms.unwrap_or(now_ms)),
            "CLOSED" => Err(ChannelError::NotAllowed("CLOSED")),
            "DECLINED" => Err(ChannelError::NotAllowed("DECLINED")),
            _ => Err(ChannelError::NotAllowed("REVERSED")),
        }
    }

    /// The payer declines in the sandbox wallet.
    pub fn wallet_decline(&self, trade_no: &str, now_ms: i64) -> Result<(), ChannelError> {
        self.simulate_latency();
        let connection = self.db.lock();
        let trade = self
            .settle(&connection, trade_no, now_ms)?
            .ok_or(ChannelError::TradeNotFound)?;
        match trade.state.as_str() {
            "WAIT_BUYER" | "DECLINED" => self.set_state(&connection, trade_no, "DECLINED", None),
            "SUCCESS" => Err(ChannelError::AlreadyPaid),
            "CLOSED" => Err(ChannelError::NotAllowed("CLOSED")),
            _ => Err(ChannelError::NotAllowed("REVERSED")),
        }
    }
}

impl Channel for SandboxChannel {
    fn pay_type(&self) -> PayType {
        self.pay_type
    }

    fn pay_with_code(
        &self,
        trade_no: &str,
        auth_code: &str,
        amount_fen: i64,
        now_ms: i64,
    ) -> Result<PayOutcome, ChannelError> {
        self.simulate_latency();
        if UNREACHABLE_AMOUNT_FEN_PART == amount_fen % 100 {
            return Err(ChannelError::Unavailable);
        }
        if crate::model::check_auth_code(self.pay_type, auth_code).is_err() {
            return Err(ChannelError::AuthCodeInvalid);
        }
        let connection = self.db.lock();
        // Burn the code before anything else: a code is single use even if the payment fails.
        // A card token is not a code: the same card pays many times.
        if self.pay_type != PayType::Card {
            let code_hash = hex::encode(sha2::Sha256::digest(auth_code.as_bytes()));
            let fresh = connection.execute(
                "INSERT OR IGNORE INTO sandbox_codes (pay_type, code_hash, used_at_ms) VALUES (?1, ?2, ?3)",
                params![self.pay_type.as_str(), code_hash, now_ms],
            )?;
            if fresh == 0 {
                return Err(ChannelError::AuthCodeUsed);
            }
        }
        if self.load(&connection, trade_no)?.is_some() {
            return Err(ChannelError::NotAllowed("EXISTS"));
        }
        let (scenario, think_time_ms) = self.pick_scenario(auth_code, amount_fen);
        let (state, confirm_at_ms, paid_at_ms) = match scenario {
            Scenario::Immediate | Scenario::UnknownCommitted | Scenario::Silent => {
                ("SUCCESS", None, Some(now_ms))
            }
            Scenario::UserConfirms => ("PAYING", Some(now_ms + think_time_ms), None),
            Scenario::NeverConfirms => ("PAYING", None, None),
            Scenario::Declined => ("DECLINED", None, None),
        };
        connection.execute(
            "INSERT INTO sandbox_trades (pay_type, trade_no, amount_fen, state, scenario, confirm_at_ms, paid_at_ms, created_at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![self.pay_type.as_str(), trade_no, amount_fen, state, scenario.as_str(), confirm_at_ms, paid_at_ms, now_ms],
        )?;
        if paid_at_ms.is_some() {
            self.ledger(&connection, trade_no, "PAY", trade_no, amount_fen, now_ms)?;
        }
        match scenario {
            Scenario::Immediate => Ok(PayOutcome::Success { paid_at_ms: now_ms }),
            Scenario::UserConfirms | Scenario::NeverConfirms => Ok(PayOutcome::Paying),
            Scenario::Declined => Ok(PayOutcome::InsufficientBalance),
            Scenario::UnknownCommitted | Scenario::Silent => Err(ChannelError::NoAnswer),
        }
    }

    fn precreate(&self, trade_no: &str, amount_fen: i64, now_ms: i64) -> Result<(), ChannelError> {
        self.simulate_latency();
        let connection = self.db.lock();
        match self.load(&connection, trade_no)? {
            Some(trade) if trade.state == "CLOSED" => Err(ChannelError::NotAllowed("CLOSED")),
            Some(_) => Ok(()),
            None => {
                connection.execute(
                    "INSERT INTO sandbox_trades (pay_type, trade_no, amount_fen, state, scenario, created_at_ms) \
                     VALUES (?1, ?2, ?3, 'WAIT_BUYER', 'QR', ?4)",
                    params![self.pay_type.as_str(), trade_no, amount_fen, now_ms],
                )?;
                Ok(())
            }
        }
    }

    fn query(&self, trade_no: &str, now_ms: i64) -> Result<TradeStatus, ChannelError> {
        self.simulate_latency();
        let connection = self.db.lock();
        let Some(trade) = self.settle(&connection, trade_no, now_ms)? else {
            return Ok(TradeStatus::NotFound);
        };
        if trade.scenario == Scenario::Silent.as_str() && trade.state == "SUCCESS" {
            return Err(ChannelError::NoAnswer);
        }
        Ok(match trade.state.as_str() {
            "WAIT_BUYER" => TradeStatus::WaitBuyer,
            "PAYING" => TradeStatus::Paying,
            "SUCCESS" => TradeStatus::Success {
                paid_at_ms: trade.paid_at_ms.unwrap_or(now_ms),
            },
            "CLOSED" => TradeStatus::Closed,
            "DECLINED" => TradeStatus::Declined,
            _ => TradeStatus::Reversed,
        })
    }

    fn close(&self, trade_no: &str, now_ms: i64) -> Result<(), ChannelError> {
        self.simulate_latency();
        let connection = self.db.lock();
        match self.settle(&connection, trade_no, now_ms)? {
            None => {
                // Record the closed trade so a QR scanned after the close cannot be paid.
                connection.execute(
                    "INSERT INTO sandbox_trades (pay_type, trade_no, amount_fen, state, scenario, created_at_ms) \
                     VALUES (?1, ?2, 0, 'CLOSED', 'QR', ?3)",
                    params![self.pay_type.as_str(), trade_no, now_ms],
                )?;
                Ok(())
            }
            Some(trade) => match trade.state.as_str() {
                "WAIT_BUYER" | "CLOSED" | "DECLINED" => {
                    self.set_state(&connection, trade_no, "CLOSED", None)
                }
                "SUCCESS" => Err(ChannelError::AlreadyPaid),
                "PAYING" => Err(ChannelError::NotAllowed("PAYING")),
                _ => Err(ChannelError::NotAllowed("REVERSED")),
            },
        }
    }

    fn reverse(&self, trade_no: &str, now_ms: i64) -> Result<i64, ChannelError> {
        self.simulate_latency();
        let connection = self.db.lock();
        let Some(trade) = self.settle(&connection, trade_no, now_ms)? else {
            // Reversing an unknown trade is answered "reversed": the rail guarantees it will not
            // be charged later, which is all the caller needs.
            connection.execute(
                "INSERT INTO sandbox_trades (pay_type, trade_no, amount_fen, state, scenario, created_at_ms) \
                 VALUES (?1, ?2, 0, 'REVERSED', 'NONE', ?3)",
                params![self.pay_type.as_str(), trade_no, now_ms],
            )?;
            return Ok(0);
        };
        if trade.scenario == Scenario::Silent.as_str() && trade.reverse_calls == 0 {
            connection.execute(
                "UPDATE sandbox_trades SET reverse_calls = reverse_calls + 1 WHERE pay_type = ?1 AND trade_no = ?2",
                params![self.pay_type.as_str(), trade_no],
            )?;
            return Err(ChannelError::NoAnswer);
        }
        match trade.state.as_str() {
            "SUCCESS" => {
                let refunded: i64 = connection.query_row(
                    "SELECT COALESCE(SUM(amount_fen), 0) FROM sandbox_ledger WHERE pay_type = ?1 AND trade_no = ?2 AND kind = 'REFUND'",
                    params![self.pay_type.as_str(), trade_no],
                    |row| row.get(0),
                )?;
                let back = trade.amount_fen - refunded;
                self.set_state(&connection, trade_no, "REVERSED", None)?;
                self.ledger(
                    &connection,
                    trade_no,
                    "REVERSE_REFUND",
                    trade_no,
                    back,
                    now_ms,
                )?;
                Ok(back)
            }
            "REVERSED" => {
                let back: i64 = connection
                    .query_row(
                        "SELECT amount_fen FROM sandbox_ledger WHERE pay_type = ?1 AND trade_no = ?2 AND kind = 'REVERSE_REFUND'",
                        params![self.pay_type.as_str(), trade_no],
                        |row| row.get(0),
                    )
                    .optional()?
                    .unwrap_or(0);
                Ok(back)
            }
            _ => {
                self.set_state(&connection, trade_no, "REVERSED", None)?;
                Ok(0)
            }
        }
    }

    fn refund(
        &self,
        trade_no: &str,
        refund_no: &str,
        amount_fen: i64,
        now_ms: i64,
    ) -> Result<(), ChannelError> {
        self.simulate_latency();
        let connection = self.db.lock();
        let trade = self
            .settle(&connection, trade_no, now_ms)?
            .ok_or(ChannelError::TradeNotFound)?;
        if trade.state != "SUCCESS" {
            return Err(ChannelError::NotAllowed("NOT_PAID"));
        }
        let already: Option<i64> = connection
            .query_row(
                "SELECT amount_fen FROM sandbox_ledger WHERE pay_type = ?1 AND kind = 'REFUND' AND reference = ?2",
                params![self.pay_type.as_str(), refund_no],
                |row| row.get(0),
            )
            .optional()?;
        if already.is_some() {
            return Ok(());
        }
        let refunded: i64 = connection.query_row(
            "SELECT COALESCE(SUM(amount_fen), 0) FROM sandbox_ledger WHERE pay_type = ?1 AND trade_no = ?2 AND kind = 'REFUND'",
            params![self.pay_type.as_str(), trade_no],
            |row| row.get(0),
        )?;
        if refunded + amount_fen > trade.amount_fen {
            return Err(ChannelError::RefundExceedsPaid);
        }
        self.ledger(
            &connection,
            trade_no,
            "REFUND",
            refund_no,
            amount_fen,
            now_ms,
        )?;
        if amount_fen % 100 == LOST_REFUND_ANSWER_FEN_PART {
            // Refunded, but the answer is lost; asking again (same refund_no) answers success.
            return Err(ChannelError::NoAnswer);
        }
        Ok(())
    }

    fn bill(&self, from_ms: i64, to_ms: i64) -> Result<String, ChannelError> {
        let connection = self.db.lock();
        let mut statement = connection.prepare(
            "SELECT trade_no, kind, reference, amount_fen, at_ms FROM sandbox_ledger \
             WHERE pay_type = ?1 AND at_ms >= ?2 AND at_ms < ?3 ORDER BY at_ms, trade_no, kind, reference",
        )?;
        let rows = statement.query_map(params![self.pay_type.as_str(), from_ms, to_ms], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })?;
        let mut csv = String::from("channel,trade_no,kind,reference,amount,time\n");
        for row in rows {
            let (trade_no, kind, reference, amount_fen, at_ms) = row?;
            let signed = if kind == "PAY" {
                amount_fen
            } else {
                -amount_fen
            };
            csv.push_str(&format!(
                "{},{trade_no},{kind},{reference},{},{}\n",
                self.pay_type.as_str(),
                format_yuan(signed),
                format_beijing_time(at_ms)
            ));
        }
        Ok(csv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(pay_type: PayType) -> (tempfile::TempDir, SandboxChannel) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(SandboxDb::open(&dir.path().join("sandbox.sqlite")).unwrap());
        (
            dir,
            SandboxChannel::new(pay_type, 7, SandboxChannelConfig::default(), db),
        )
    }

    #[test]
    fn codes_are_single_use_even_after_a_decline() {
        let (_dir, channel) = sandbox(PayType::Wechat);
        let code = "134567890123456789";
        assert_eq!(
            channel.pay_with_code("T1", code, 1094, 0),
            Ok(PayOutcome::InsufficientBalance)
        );
        assert_eq!(
            channel.pay_with_code("T2", code, 1000, 0),
            Err(ChannelError::AuthCodeUsed)
        );
        assert_eq!(
            channel.pay_with_code("T3", "99", 1000, 0),
            Err(ChannelError::AuthCodeInvalid)
        );
    }

    #[test]
    fn a_silent_late_payment_is_refunded_by_the_second_reverse() {
        let (_dir, channel) = sandbox(PayType::Alipay);
        assert_eq!(
            channel.pay_with_code("T1", "2845678901234567", 1095, 0),
            Err(ChannelError::NoAnswer)
        );
        assert_eq!(channel.query("T1", 5_000), Err(ChannelError::NoAnswer));
        assert_eq!(channel.reverse("T1", 60_000), Err(ChannelError::NoAnswer));
        assert_eq!(channel.reverse("T1", 65_000), Ok(1095));
        assert_eq!(channel.reverse("T1", 70_000), Ok(1095));
        let bill = channel.bill(0, 100_000).unwrap();
        assert!(bill.contains(",PAY,T1,10.95,"), "{bill}");
        assert!(bill.contains(",REVERSE_REFUND,T1,-10.95,"), "{bill}");
    }

    #[test]
    fn the_same_seed_replays_the_same_fates() {
        let (_dir, channel) = sandbox(PayType::Card);
        let first = channel.pick_scenario("tok4242424242424242", 1000);
        assert_eq!(channel.pick_scenario("tok4242424242424242", 1000), first);
    }
}
