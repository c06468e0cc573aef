//! The terminal side of the gateway as operations: issue tokens, enroll, authenticate a signed
//! request, ingest entries exactly once, revoke, and report the fleet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ed25519_dalek::{SigningKey, Verifier};
use lanepay_sync::auth::{self, Ack, AuthError, RequestAuth};
use lanepay_sync::config::{
    OfflineCardLimits, SignedConfig, TerminalConfig, WalletCodeTimings, sign_config,
};
use lanepay_sync::ingest::{ChainHead, Signature, Verdict, judge_with};
use lanepay_sync::journal::{SignedEntry, verify_signatures};
use lanepay_sync::payload::{RefundCompleted, SaleCompleted, kind};
use lanepay_sync::wire::{
    CommandPush, EnrollRequest, EnrollResponse, IngestResult, Rejection, TerminalCommand,
    WireEntry, WsFrame, enroll_proof_bytes, topic,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::keys;
use super::store::{
    self, AlarmRow, LedgerRow, StoreConfigRow, TerminalRow, TerminalStore, TerminalStoreError,
};
use crate::clock::Clock;

/// The gateway's ed25519 key (acks, and later signed configuration), beside the databases.
pub const GATEWAY_KEY_FILE: &str = "gateway-ed25519.key";
/// The terminal database's file name.
pub const TERMINAL_DB_FILE: &str = "terminals.sqlite";
/// Longest an enrollment token may live: HQ issues them days ahead, never forever.
pub const MAX_TOKEN_VALID_DAYS: u32 = 90;
/// Ledger days are Beijing time (UTC+8), the business day of the stores this serves.
pub const LEDGER_DAY_OFFSET_MS: i64 = 8 * 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Frames waiting for one live socket; a socket that falls this far behind misses pushes
/// (best effort: the lane also polls on every connect).
pub const PUSH_QUEUE_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error(transparent)]
    Store(#[from] TerminalStoreError),
    #[error("the enrollment token is unknown; ask HQ for a new one")]
    UnknownToken,
    #[error("the enrollment token was already used; ask HQ for a new one")]
    TokenUsed,
    #[error("the enrollment token expired; ask HQ for a new one")]
    TokenExpired,
    #[error("the enrollment request is malformed: {0}")]
    BadEnrollment(String),
    #[error("unknown terminal {0}")]
    UnknownTerminal(String),
    #[error("terminal {0} is revoked")]
    Revoked(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Invalid(String),
    #[error("gateway key file {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("configuration version {offered} is not above the store's current version {current}")]
    StaleConfig { offered: u64, current: u64 },
}

impl TerminalError {
    /// The HTTP status this maps to.
    pub fn status(&self) -> u16 {
        match self {
            TerminalError::Store(_) | TerminalError::Key { .. } => 503,
            TerminalError::UnknownToken
            | TerminalError::TokenUsed
            | TerminalError::TokenExpired => 403,
            TerminalError::UnknownTerminal(_) | TerminalError::Revoked(_) => 403,
            TerminalError::Auth(AuthError::Replay) => 409,
            TerminalError::Auth(_) => 401,
            TerminalError::BadEnrollment(_) | TerminalError::Invalid(_) => 400,
            TerminalError::StaleConfig { .. } => 409,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            TerminalError::Store(_) | TerminalError::Key { .. } => "unavailable",
            TerminalError::UnknownToken => "token_unknown",
            TerminalError::TokenUsed => "token_used",
            TerminalError::TokenExpired => "token_expired",
            TerminalError::BadEnrollment(_) | TerminalError::Invalid(_) => "bad_request",
            TerminalError::UnknownTerminal(_) => "terminal_unknown",
            TerminalError::Revoked(_) => "terminal_revoked",
            TerminalError::Auth(AuthError::Skew { .. }) => "clock_skew",
            TerminalError::Auth(AuthError::Replay) => "replay",
            TerminalError::Auth(_) => "bad_signature",
            TerminalError::StaleConfig { .. } => "stale_version",
        }
    }
}

/// HQ's view of one terminal.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetTerminal {
    pub terminal_id: String,
    pub store_id: String,
    pub merchant_id: String,
    pub name: Option<String>,
    pub version: String,
    pub revoked: bool,
    pub online: bool,
    pub last_seen_ms: Option<i64>,
    pub last_acknowledged_seq: u64,
    pub entries: u64,
    pub clock_skew_ms: Option<i64>,
    /// Sales minus refunds, per tender method, all days (fen).
    pub totals_by_tender_fen: HashMap<String, i64>,
    pub alarms: usize,
}

#[derive(Debug)]
pub struct TerminalService {
    store: TerminalStore,
    key: SigningKey,
    clock: Arc<dyn Clock>,
    /// Terminals with a live WebSocket now, and how many sockets each has.
    live: Mutex<HashMap<String, usize>>,
    /// Where pushes go: each live socket's queue, by terminal.
    sockets: Mutex<HashMap<String, Vec<LiveSocket>>>,
    next_socket: std::sync::atomic::AtomicU64,
    /// The X25519 secret lanes seal card data to.
    card_seal_secret: [u8; 32],
    /// Per store, the configuration version last pushed (see [`TerminalService::push_new_configs`]).
    pushed_config: Mutex<HashMap<String, u64>>,
}

#[derive(Debug)]
struct LiveSocket {
    id: u64,
    frames: mpsc::Sender<WsFrame>,
}

/// One live socket's registration: frames pushed to its terminal arrive on `frames`.
#[derive(Debug)]
pub struct LiveRegistration {
    pub socket_id: u64,
    pub frames: mpsc::Receiver<WsFrame>,
}

/// What HQ writes to set a store's configuration (`config set --file`, `PUT
/// /v1/hq/stores/{id}/config`). A field left out takes its default; `version` left out is the
/// store's current version plus one. The gateway adds the store, the time and its card-seal key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigInput {
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub offline_card: OfflineCardLimits,
    #[serde(default)]
    pub wallet_code: WalletCodeTimings,
    #[serde(default)]
    pub dynamic_qr_timeout_ms: Option<i64>,
    #[serde(default)]
    pub offline_qr_validity_ms: Option<i64>,
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// Loads the gateway's ed25519 key, creating it (0600, atomically) on first start.
pub fn load_or_create_key(data_dir: &Path) -> Result<SigningKey, TerminalError> {
    let seed = keys::load_or_create_secret(&data_dir.join(GATEWAY_KEY_FILE))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The business day (UTC+8) of a time in ms, `YYYY-MM-DD`.
pub fn ledger_day(at_ms: i64) -> String {
    let days = (at_ms + LEDGER_DAY_OFFSET_MS).div_euclid(DAY_MS);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

impl TerminalService {
    pub fn open(data_dir: &Path, clock: Arc<dyn Clock>) -> Result<TerminalService, TerminalError> {
        let store = TerminalStore::open(&data_dir.join(TERMINAL_DB_FILE))?;
        let key = load_or_create_key(data_dir)?;
        let card_seal_secret = keys::load_or_create_card_seal_secret(data_dir)?;
        let pushed_config = store.with(store::current_config_versions)?;
        Ok(TerminalService {
            store,
            key,
            clock,
            live: Mutex::new(HashMap::new()),
            sockets: Mutex::new(HashMap::new()),
            next_socket: std::sync::atomic::AtomicU64::new(1),
            card_seal_secret,
            pushed_config: Mutex::new(pushed_config),
        })
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Issues a one-time enrollment token for a store (returned once; only its hash is kept).
    pub fn create_token(
        &self,
        store_id: &str,
        merchant_id: &str,
        valid_days: u32,
    ) -> Result<String, TerminalError> {
        let valid = |text: &str| {
            !text.is_empty()
                && text.len() <= 32
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !valid(store_id) || !valid(merchant_id) {
            return Err(TerminalError::Invalid(
                "store and merchant ids are 1-32 characters of A-Z a-z 0-9 - _".into(),
            ));
        }
        if valid_days == 0 || valid_days > MAX_TOKEN_VALID_DAYS {
            return Err(TerminalError::Invalid(format!(
                "valid days must be 1 to {MAX_TOKEN_VALID_DAYS}"
            )));
        }
        let mut bytes = [0u8; 20];
        getrandom::fill(&mut bytes)
            .map_err(|e| TerminalError::Invalid(format!("no randomness: {e}")))?;
        let token = format!("lpe_{}", hex::encode(bytes));
        let now = self.clock.now_ms();
        let expires = now + i64::from(valid_days) * DAY_MS;
        self.store.with(|c| {
            store::insert_token(c, &token_hash(&token), store_id, merchant_id, now, expires)
        })?;
        Ok(token)
    }

    /// Registers a terminal's public key against a one-time token.
    pub fn enroll(&self, request: &EnrollRequest) -> Result<EnrollResponse, TerminalError> {
        let public = auth::parse_public_key(&request.public_key).ok_or_else(|| {
            TerminalError::BadEnrollment("public_key is not an ed25519 key in hex".into())
        })?;
        let proof = auth::parse_signature(&request.proof).ok_or_else(|| {
            TerminalError::BadEnrollment("proof is not a signature in hex".into())
        })?;
        public
            .verify(
                &enroll_proof_bytes(&request.token, &request.public_key),
                &proof,
            )
            .map_err(|_| {
                TerminalError::BadEnrollment(
                    "proof does not verify: the caller does not hold the key".into(),
                )
            })?;
        let name = request
            .name
            .as_deref()
            .map(|n| n.chars().take(64).collect::<String>());
        let version: String = request.version.chars().take(32).collect();
        let hash = token_hash(&request.token);
        let now = self.clock.now_ms();
        self.store
            .with(|connection| {
                let (store_id, merchant_id, expires_at_ms, used_at_ms) =
                    store::token(connection, &hash)?.ok_or(TerminalError::UnknownToken)?;
                if used_at_ms.is_some() {
                    return Err(TerminalError::TokenUsed);
                }
                if now > expires_at_ms {
                    return Err(TerminalError::TokenExpired);
                }
                let tx = connection.transaction()?;
                let number = store::next_terminal_number(&tx, &store_id)?;
                let terminal_id = format!("{store_id}-L{number:03}");
                if !store::use_token(&tx, &hash, &terminal_id, now)? {
                    return Err(TerminalError::TokenUsed);
                }
                store::insert_terminal(
                    &tx,
                    &terminal_id,
                    &store_id,
                    &merchant_id,
                    &request.public_key,
                    name.as_deref(),
                    &version,
                    now,
                )
                .map_err(|_| {
                    TerminalError::BadEnrollment("this public key is already enrolled".into())
                })?;
                tx.commit()?;
                Ok((terminal_id, store_id, merchant_id))
            })
            .and_then(|(terminal_id, store_id, merchant_id)| {
                let config = self.current_config(&store_id)?;
                Ok(EnrollResponse {
                    terminal_id,
                    store_id,
                    merchant_id,
                    gateway_keys: vec![self.public_key_hex()],
                    server_time_ms: now,
                    config: Some(config),
                })
            })
    }

    /// Checks a signed terminal request; returns the terminal.
    pub fn authenticate(
        &self,
        auth: &RequestAuth,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<TerminalRow, TerminalError> {
        let now = self.clock.now_ms();
        let terminal = self
            .store
            .with(|c| store::terminal(c, &auth.terminal_id))?
            .ok_or_else(|| TerminalError::UnknownTerminal(auth.terminal_id.clone()))?;
        if terminal.revoked {
            return Err(TerminalError::Revoked(terminal.terminal_id));
        }
        let key = auth::parse_public_key(&terminal.public_key)
            .ok_or_else(|| TerminalError::Invalid("stored key is damaged".into()))?;
        auth::verify_request(auth, &key, method, path, body, now)?;
        let fresh = self.store.with(|c| {
            let fresh = store::remember_nonce(
                c,
                &terminal.terminal_id,
                &auth.nonce,
                now,
                now + 2 * auth::MAX_CLOCK_SKEW_MS,
            )?;
            store::touch(c, &terminal.terminal_id, now, now - auth.timestamp_ms)?;
            Ok::<_, TerminalError>(fresh)
        })?;
        if !fresh {
            return Err(AuthError::Replay.into());
        }
        Ok(terminal)
    }

    /// Stores what is new of `entries`, exactly once, with the ledger it moves, and answers
    /// with a signed acknowledgement of the highest contiguous sequence.
    pub fn ingest(
        &self,
        terminal_id: &str,
        entries: &[WireEntry],
    ) -> Result<IngestResult, TerminalError> {
        let now = self.clock.now_ms();
        let outcome = self.store.with(|connection| {
            let terminal = store::terminal(connection, terminal_id)?
                .ok_or_else(|| TerminalError::UnknownTerminal(terminal_id.into()))?;
            if terminal.revoked {
                return Err(TerminalError::Revoked(terminal_id.into()));
            }
            let key = auth::parse_public_key(&terminal.public_key)
                .ok_or_else(|| TerminalError::Invalid("stored key is damaged".into()))?;
            let tx = connection.transaction()?;
            let mut head = ChainHead {
                seq: terminal.last_seq,
                hash: terminal.last_hash,
            };
            let mut added = 0;
            let mut gap_expected = None;
            let mut rejected = None;
            // Signatures first, all at once (ed25519 batch verification, about twice as fast
            // per entry); if the batch fails, each entry is checked on its own below, which
            // names the bad one exactly as before.
            let parsed: Vec<Result<SignedEntry, _>> =
                entries.iter().map(SignedEntry::try_from).collect();
            let well_formed = parsed.iter().map_while(|entry| entry.as_ref().ok());
            let signature = if entries.len() > 1 && verify_signatures(well_formed, &key) {
                Signature::Verified
            } else {
                Signature::Check
            };
            for (wire, parsed) in entries.iter().zip(parsed) {
                let entry = match parsed {
                    Ok(entry) => entry,
                    Err(error) => {
                        rejected = Some(Rejection {
                            seq: wire.seq,
                            reason: error.to_string(),
                        });
                        store::raise_alarm(
                            &tx,
                            terminal_id,
                            wire.seq,
                            "malformed",
                            &error.to_string(),
                            now,
                        )?;
                        break;
                    }
                };
                let lookup = |seq: u64| store::stored_hash(&tx, terminal_id, seq).ok().flatten();
                match judge_with(head, &entry, terminal_id, &key, lookup, signature) {
                    Verdict::Accept => match apply_to_ledger(&tx, &terminal, &entry) {
                        Ok(()) => {
                            store::insert_entry(&tx, &entry, now)?;
                            head = ChainHead {
                                seq: entry.seq,
                                hash: entry.hash,
                            };
                            added += 1;
                        }
                        Err(reason) => {
                            store::raise_alarm(
                                &tx,
                                terminal_id,
                                entry.seq,
                                "unreadable",
                                &reason,
                                now,
                            )?;
                            rejected = Some(Rejection {
                                seq: entry.seq,
                                reason,
                            });
                            break;
                        }
                    },
                    Verdict::Duplicate => {}
                    Verdict::Gap { expected } => {
                        store::raise_alarm(
                            &tx,
                            terminal_id,
                            entry.seq,
                            "gap",
                            &format!("entry {} arrived before {expected}", entry.seq),
                            now,
                        )?;
                        gap_expected = Some(expected);
                        break;
                    }
                    Verdict::Fork { stored_hash } => {
                        let detail = format!(
                            "a different entry {} (stored hash {})",
                            entry.seq,
                            hex::encode(stored_hash)
                        );
                        store::raise_alarm(&tx, terminal_id, entry.seq, "fork", &detail, now)?;
                        rejected = Some(Rejection {
                            seq: entry.seq,
                            reason: format!("fork: {detail}"),
                        });
                        break;
                    }
                    Verdict::Invalid(error) => {
                        store::raise_alarm(
                            &tx,
                            terminal_id,
                            entry.seq,
                            "invalid",
                            &error.to_string(),
                            now,
                        )?;
                        rejected = Some(Rejection {
                            seq: entry.seq,
                            reason: error.to_string(),
                        });
                        break;
                    }
                }
            }
            if added > 0 {
                store::set_head(&tx, terminal_id, head.seq, head.hash, added)?;
            }
            tx.commit()?;
            Ok::<_, TerminalError>((head, gap_expected, rejected))
        });
        let (head, gap_expected, rejected) = outcome?;
        if let Some(rejection) = &rejected {
            tracing::error!(terminal = terminal_id, seq = rejection.seq, reason = %rejection.reason, "journal entry refused");
        }
        Ok(IngestResult {
            ack: Ack::sign(&self.key, terminal_id, head.seq, head.hash, now),
            gap_expected,
            rejected,
        })
    }

    pub fn revoke(&self, terminal_id: &str) -> Result<(), TerminalError> {
        if self.store.with(|c| store::revoke(c, terminal_id))? {
            Ok(())
        } else {
            Err(TerminalError::UnknownTerminal(terminal_id.into()))
        }
    }

    /// The hex X25519 public key lanes seal card data to (it travels in the signed config).
    pub fn card_seal_public_hex(&self) -> String {
        keys::card_seal_public_hex(&self.card_seal_secret)
    }

    /// The X25519 secret that opens sealed card data.
    pub fn card_seal_secret(&self) -> &[u8; 32] {
        &self.card_seal_secret
    }

    /// The store's configuration in force, signed. A store HQ never configured gets version 1
    /// with every default (created and kept on first ask, so every lane sees the same one).
    pub fn current_config(&self, store_id: &str) -> Result<SignedConfig, TerminalError> {
        check_id(store_id, "store id")?;
        let now = self.clock.now_ms();
        self.store.with(|connection| {
            let tx =
                connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let row = match store::current_config(&tx, store_id)? {
                Some(row) => row,
                None => {
                    let config = TerminalConfig::with_defaults(
                        1,
                        now,
                        store_id,
                        &self.card_seal_public_hex(),
                    );
                    let row = self.signed_row(&config, now)?;
                    store::insert_config(&tx, &row)?;
                    // Handed out with the enrollment or the GET that asked: nothing to push.
                    self.pushed_config
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(store_id.to_string())
                        .or_insert(1);
                    row
                }
            };
            tx.commit()?;
            signed_from_row(&row)
        })
    }

    /// Sets a new configuration version for a store and pushes it to the store's live lanes.
    pub fn set_config(
        &self,
        store_id: &str,
        input: &ConfigInput,
    ) -> Result<SignedConfig, TerminalError> {
        check_id(store_id, "store id")?;
        let now = self.clock.now_ms();
        let signed = self.store.with(|connection| {
            let tx =
                connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current = store::current_config(&tx, store_id)?.map_or(0, |row| row.version);
            let version = input.version.unwrap_or(current + 1);
            if version <= current {
                return Err(TerminalError::StaleConfig {
                    offered: version,
                    current,
                });
            }
            let config = TerminalConfig {
                version,
                issued_at_ms: now,
                store_id: store_id.to_string(),
                offline_card: input.offline_card.clone(),
                wallet_code: input.wallet_code.clone(),
                dynamic_qr_timeout_ms: input
                    .dynamic_qr_timeout_ms
                    .unwrap_or(lanepay_sync::config::DEFAULT_DYNAMIC_QR_TIMEOUT_MS),
                offline_qr_validity_ms: input
                    .offline_qr_validity_ms
                    .unwrap_or(lanepay_sync::config::DEFAULT_OFFLINE_QR_VALIDITY_MS),
                card_seal_public_key: self.card_seal_public_hex(),
            };
            config
                .validate()
                .map_err(|e| TerminalError::Invalid(e.to_string()))?;
            let row = self.signed_row(&config, now)?;
            store::insert_config(&tx, &row)?;
            tx.commit()?;
            signed_from_row(&row)
        })?;
        tracing::info!(
            store = store_id,
            version = signed.config.version,
            "store configuration set"
        );
        self.push_config(&signed)?;
        Ok(signed)
    }

    fn signed_row(
        &self,
        config: &TerminalConfig,
        now_ms: i64,
    ) -> Result<StoreConfigRow, TerminalError> {
        let signed = sign_config(config, &self.key);
        let config_json = serde_json::to_string(&signed.config)
            .map_err(|e| TerminalError::Invalid(format!("configuration: {e}")))?;
        Ok(StoreConfigRow {
            store_id: config.store_id.clone(),
            version: config.version,
            config_json,
            signature: signed.signature,
            created_at_ms: now_ms,
        })
    }

    /// Pushes a store's configuration to its live lanes and remembers it was pushed.
    fn push_config(&self, signed: &SignedConfig) -> Result<usize, TerminalError> {
        let store_id = &signed.config.store_id;
        let body = serde_json::to_value(signed)
            .map_err(|e| TerminalError::Invalid(format!("configuration: {e}")))?;
        let terminals = self
            .store
            .with(|c| store::store_terminal_ids(c, store_id))?;
        let delivered = terminals
            .iter()
            .map(|terminal_id| self.push(terminal_id, topic::CONFIG, body.clone()))
            .sum();
        let mut pushed = self
            .pushed_config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = pushed.entry(store_id.clone()).or_insert(0);
        *last = (*last).max(signed.config.version);
        tracing::info!(store = %store_id, version = signed.config.version, delivered, "configuration pushed");
        Ok(delivered)
    }

    /// Pushes every store configuration newer than the last one pushed: versions set by the
    /// CLI (another process) reach live lanes this way. Returns how many stores moved.
    pub fn push_new_configs(&self) -> Result<usize, TerminalError> {
        let versions = self.store.with(store::current_config_versions)?;
        let fresh: Vec<String> = {
            let pushed = self
                .pushed_config
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            versions
                .into_iter()
                .filter(|(store_id, version)| pushed.get(store_id).is_none_or(|p| p < version))
                .map(|(store_id, _)| store_id)
                .collect()
        };
        for store_id in &fresh {
            let signed = self.current_config(store_id)?;
            self.push_config(&signed)?;
        }
        Ok(fresh.len())
    }

    /// Sends a command to a terminal's live channel; returns the command's id and how many
    /// live sockets took it (0: the terminal is not connected now).
    pub fn send_command(
        &self,
        terminal_id: &str,
        command: TerminalCommand,
    ) -> Result<(String, usize), TerminalError> {
        let terminal = self
            .store
            .with(|c| store::terminal(c, terminal_id))?
            .ok_or_else(|| TerminalError::UnknownTerminal(terminal_id.into()))?;
        if terminal.revoked {
            return Err(TerminalError::Revoked(terminal_id.into()));
        }
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes)
            .map_err(|e| TerminalError::Invalid(format!("no randomness: {e}")))?;
        let id = format!("cmd_{}", hex::encode(bytes));
        let body = serde_json::to_value(CommandPush {
            id: id.clone(),
            command,
        })
        .map_err(|e| TerminalError::Invalid(e.to_string()))?;
        let delivered = self.push(terminal_id, topic::COMMAND, body);
        tracing::info!(terminal = terminal_id, %id, command = command.as_str(), delivered, "command sent");
        Ok((id, delivered))
    }

    /// Delivers a push to every live socket of a terminal (best effort: a terminal that is not
    /// connected, or a socket far behind, misses it). Returns how many sockets took it.
    pub fn push(&self, terminal_id: &str, topic: &str, body: serde_json::Value) -> usize {
        let sockets = self
            .sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(list) = sockets.get(terminal_id) else {
            return 0;
        };
        let mut delivered = 0;
        for socket in list {
            let frame = WsFrame::Push {
                topic: topic.to_string(),
                body: body.clone(),
            };
            match socket.frames.try_send(frame) {
                Ok(()) => delivered += 1,
                Err(error) => {
                    tracing::warn!(terminal = terminal_id, topic, %error, "push dropped");
                }
            }
        }
        delivered
    }

    /// Registers a live socket of a terminal: it counts as online and receives pushes until
    /// [`TerminalService::unregister_live`].
    pub fn register_live(&self, terminal_id: &str) -> LiveRegistration {
        let socket_id = self
            .next_socket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (frames_in, frames) = mpsc::channel(PUSH_QUEUE_LEN);
        self.sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(terminal_id.to_string())
            .or_default()
            .push(LiveSocket {
                id: socket_id,
                frames: frames_in,
            });
        self.set_live(terminal_id, true);
        LiveRegistration { socket_id, frames }
    }

    pub fn unregister_live(&self, terminal_id: &str, socket_id: u64) {
        let mut sockets = self
            .sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(list) = sockets.get_mut(terminal_id) {
            list.retain(|socket| socket.id != socket_id);
            if list.is_empty() {
                sockets.remove(terminal_id);
            }
        }
        drop(sockets);
        self.set_live(terminal_id, false);
    }

    pub fn set_live(&self, terminal_id: &str, connected: bool) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = live.entry(terminal_id.to_string()).or_insert(0);
        *count = if connected {
            *count + 1
        } else {
            count.saturating_sub(1)
        };
        if *count == 0 {
            live.remove(terminal_id);
        }
    }

    pub fn ledger(&self, terminal_id: Option<&str>) -> Result<Vec<LedgerRow>, TerminalError> {
        Ok(self.store.with(|c| store::ledger(c, terminal_id))?)
    }

    pub fn alarms(&self, terminal_id: Option<&str>) -> Result<Vec<AlarmRow>, TerminalError> {
        Ok(self.store.with(|c| store::alarms(c, terminal_id))?)
    }

    /// A terminal's registry row (`None`: never enrolled).
    pub fn terminal(&self, terminal_id: &str) -> Result<Option<TerminalRow>, TerminalError> {
        Ok(self.store.with(|c| store::terminal(c, terminal_id))?)
    }

    /// Runs `work` on the terminal database; the payment module keeps its own tables there
    /// (`terminals::payments`) and raises alarms through it.
    pub fn with_store<T>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> Result<T, TerminalError>,
    ) -> Result<T, TerminalError> {
        self.store.with(work)
    }

    pub fn stored_entries(&self, terminal_id: &str) -> Result<u64, TerminalError> {
        Ok(self
            .store
            .with(|c| store::terminal(c, terminal_id))?
            .map(|t| t.entries)
            .unwrap_or(0))
    }

    /// Every terminal with its figures, for HQ.
    pub fn fleet(&self) -> Result<Vec<FleetTerminal>, TerminalError> {
        let (terminals, ledger, alarms) = self.store.with(|c| {
            Ok::<_, TerminalError>((
                store::terminals(c)?,
                store::ledger(c, None)?,
                store::alarms(c, None)?,
            ))
        })?;
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let now = self.clock.now_ms();
        Ok(terminals
            .into_iter()
            .map(|t| {
                let mut totals: HashMap<String, i64> = HashMap::new();
                for line in ledger.iter().filter(|l| l.terminal_id == t.terminal_id) {
                    *totals.entry(line.method.clone()).or_insert(0) +=
                        line.sales_fen - line.refunds_fen;
                }
                // Online: a live channel, or a signed request within the last half minute.
                let recently = t.last_seen_ms.is_some_and(|seen| now - seen < 30_000);
                FleetTerminal {
                    online: !t.revoked && (live.contains_key(&t.terminal_id) || recently),
                    alarms: alarms
                        .iter()
                        .filter(|a| a.terminal_id == t.terminal_id)
                        .count(),
                    terminal_id: t.terminal_id,
                    store_id: t.store_id,
                    merchant_id: t.merchant_id,
                    name: t.name,
                    version: t.version,
                    revoked: t.revoked,
                    last_seen_ms: t.last_seen_ms,
                    last_acknowledged_seq: t.last_seq,
                    entries: t.entries,
                    clock_skew_ms: t.clock_skew_ms,
                    totals_by_tender_fen: totals,
                }
            })
            .collect())
    }
}

fn signed_from_row(row: &StoreConfigRow) -> Result<SignedConfig, TerminalError> {
    let config: TerminalConfig = serde_json::from_str(&row.config_json).map_err(|e| {
        TerminalError::Store(TerminalStoreError::Damaged(format!(
            "configuration {} of store {}: {e}",
            row.version, row.store_id
        )))
    })?;
    Ok(SignedConfig {
        config,
        signature: row.signature.clone(),
    })
}

/// Store, merchant and terminal ids: 1-32 characters of A-Z a-z 0-9 - _.
fn check_id(text: &str, what: &str) -> Result<(), TerminalError> {
    let valid = !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(TerminalError::Invalid(format!(
            "{what} must be 1-32 characters of A-Z a-z 0-9 - _"
        )))
    }
}

/// Moves the ledger for entries that record money: completed sales and refunds, per tender.
fn apply_to_ledger(
    tx: &rusqlite::Transaction<'_>,
    terminal: &TerminalRow,
    entry: &SignedEntry,
) -> Result<(), String> {
    let to_string = |e: TerminalStoreError| e.to_string();
    match entry.kind.as_str() {
        kind::SALE_COMPLETED => {
            let sale: SaleCompleted = serde_json::from_slice(&entry.payload)
                .map_err(|e| format!("sale_completed payload: {e}"))?;
            let paid: i64 = sale.tenders.iter().map(|t| t.amount_fen).sum();
            if paid != sale.total_fen {
                return Err(format!(
                    "sale {} tenders pay {paid} fen of a {} fen total",
                    sale.sale_id, sale.total_fen
                ));
            }
            let day = ledger_day(sale.completed_at_ms);
            for tender in &sale.tenders {
                store::add_to_ledger(
                    tx,
                    &terminal.terminal_id,
                    &terminal.store_id,
                    &day,
                    &tender.method,
                    tender.amount_fen,
                    0,
                    1,
                    0,
                )
                .map_err(to_string)?;
            }
            // Signed offline-QR tenders name the gateway order they were paid by.
            super::payments::match_offline_qr_tenders(tx, &terminal.terminal_id, entry.seq, &sale)?;
            Ok(())
        }
        kind::REFUND_COMPLETED => {
            let refund: RefundCompleted = serde_json::from_slice(&entry.payload)
                .map_err(|e| format!("refund_completed payload: {e}"))?;
            let day = ledger_day(refund.at_ms);
            for tender in &refund.tenders {
                store::add_to_ledger(
                    tx,
                    &terminal.terminal_id,
                    &terminal.store_id,
                    &day,
                    &tender.method,
                    0,
                    tender.amount_fen,
                    0,
                    1,
                )
                .map_err(to_string)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

impl From<rusqlite::Error> for TerminalError {
    fn from(error: rusqlite::Error) -> TerminalError {
        TerminalError::Store(error.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_days_are_beijing_time() {
        // 2026-11-18 16:30 UTC is 2026-11-19 00:30 in Beijing.
        assert_eq!(ledger_day(1_795_019_400_000), "2026-11-19");
        assert_eq!(ledger_day(1_795_000_000_000), "2026-11-18");
    }
}
