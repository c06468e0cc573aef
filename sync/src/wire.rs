//! The JSON messages between a lane and the gateway: journal entries on the wire, batches and
//! their answers, WebSocket frames, enrollment. Hashes and signatures travel as hex; a payload
//! travels as the exact canonical JSON text that was hashed.

use serde::{Deserialize, Serialize};

use crate::auth::Ack;
use crate::config::SignedConfig;
use crate::journal::SignedEntry;

/// The terminal endpoints.
pub const ENROLL_PATH: &str = "/v1/enroll";
pub const JOURNAL_PATH: &str = "/v1/terminal/journal";
pub const WS_PATH: &str = "/v1/terminal/ws";

/// Entries in one REST batch: bounded so one request stays small enough to retry cheaply.
pub const MAX_BATCH_ENTRIES: usize = 500;
/// Bytes of one REST batch body.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEntry {
    pub terminal_id: String,
    pub seq: u64,
    pub kind: String,
    pub created_at_ms: i64,
    pub prev_hash: String,
    /// The canonical JSON payload, byte for byte, as a string.
    pub payload: String,
    pub hash: String,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("entry {seq}: {field} is not valid hex of the right length")]
    BadHex { seq: u64, field: &'static str },
}

impl From<&SignedEntry> for WireEntry {
    fn from(entry: &SignedEntry) -> WireEntry {
        WireEntry {
            terminal_id: entry.terminal_id.clone(),
            seq: entry.seq,
            kind: entry.kind.clone(),
            created_at_ms: entry.created_at_ms,
            prev_hash: hex::encode(entry.prev_hash),
            // Canonical payloads are UTF-8 JSON by construction; lossy only for a damaged one,
            // which then fails verification at the gateway instead of being sent silently.
            payload: String::from_utf8_lossy(&entry.payload).into_owned(),
            hash: hex::encode(entry.hash),
            signature: hex::encode(entry.signature),
        }
    }
}

fn fixed<const N: usize>(text: &str, seq: u64, field: &'static str) -> Result<[u8; N], WireError> {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(WireError::BadHex { seq, field })
}

impl TryFrom<&WireEntry> for SignedEntry {
    type Error = WireError;

    fn try_from(wire: &WireEntry) -> Result<SignedEntry, WireError> {
        Ok(SignedEntry {
            terminal_id: wire.terminal_id.clone(),
            seq: wire.seq,
            kind: wire.kind.clone(),
            created_at_ms: wire.created_at_ms,
            prev_hash: fixed(&wire.prev_hash, wire.seq, "prev_hash")?,
            payload: wire.payload.as_bytes().to_vec(),
            hash: fixed(&wire.hash, wire.seq, "hash")?,
            signature: fixed(&wire.signature, wire.seq, "signature")?,
        })
    }
}

/// `POST /v1/terminal/journal`: a batch of consecutive entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalBatch {
    pub entries: Vec<WireEntry>,
}

/// The gateway's answer to a batch (REST) or to entries (WebSocket).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestResult {
    /// The highest contiguous sequence stored, signed.
    pub ack: Ack,
    /// Entries past a gap are held, not stored; the lane should send from `ack.seq + 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_expected: Option<u64>,
    /// The first entry refused (forged, fork, broken chain) and why. An alarm at the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejection>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    pub seq: u64,
    pub reason: String,
}

/// WebSocket frames, both directions, as JSON text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WsFrame {
    /// Lane → gateway: entries as they are committed (or the start of the backlog).
    Entries { entries: Vec<WireEntry> },
    /// Gateway → lane: what was stored.
    Result(IngestResult),
    /// Gateway → lane: a pushed notice (payment result, configuration or catalog version,
    /// command); its body is defined by the feature that sends it.
    Push {
        topic: String,
        body: serde_json::Value,
    },
}

/// Topics of [`WsFrame::Push`].
pub mod topic {
    /// Body: `lanepay_sync::payment::PaymentView`.
    pub const PAYMENT: &str = "payment";
    /// Body: [`crate::config::SignedConfig`].
    pub const CONFIG: &str = "config";
    /// Body: [`super::CatalogVersion`].
    pub const CATALOG: &str = "catalog";
    /// Body: [`super::CommandPush`].
    pub const COMMAND: &str = "command";
}

/// A push as the lane's uplink hands it on to the rest of the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushMessage {
    pub topic: String,
    pub body: serde_json::Value,
}

/// Body of a `catalog` push: the store's catalog moved to this version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogVersion {
    pub version: u64,
}

/// What HQ can ask a lane to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalCommand {
    /// Send the backlog now instead of at the next backoff step.
    SyncNow,
    /// Forward stored (offline) card payments.
    ForwardStored,
    /// Fetch the store configuration from the gateway.
    ReloadConfig,
}

impl TerminalCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalCommand::SyncNow => "sync_now",
            TerminalCommand::ForwardStored => "forward_stored",
            TerminalCommand::ReloadConfig => "reload_config",
        }
    }
}

/// Body of a `command` push; `id` lets the lane and HQ name one command in logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandPush {
    pub id: String,
    pub command: TerminalCommand,
}

/// `POST /v1/hq/terminals/{id}/commands` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    pub command: TerminalCommand,
}

/// `POST /v1/enroll`: a new terminal registers the public key it generated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    /// Hex of the terminal's ed25519 public key.
    pub public_key: String,
    /// Hex signature by that key over `LANEPAY-ENROLL-V1\n{token}\n{public_key}`: proof that
    /// the caller holds the private key.
    pub proof: String,
    pub name: Option<String>,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollResponse {
    pub terminal_id: String,
    pub store_id: String,
    pub merchant_id: String,
    /// Hex of the gateway's ed25519 public keys (the first signs acks and configuration).
    pub gateway_keys: Vec<String>,
    pub server_time_ms: i64,
    /// The store's current signed configuration (absent from gateways that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<SignedConfig>,
}

/// The bytes a terminal signs to prove it holds its key at enrollment.
pub fn enroll_proof_bytes(token: &str, public_key_hex: &str) -> Vec<u8> {
    format!("LANEPAY-ENROLL-V1\n{token}\n{public_key_hex}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{EntryDraft, GENESIS_PREV_HASH};

    #[test]
    fn entries_survive_the_wire_byte_for_byte() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let entry = EntryDraft {
            terminal_id: "T1".into(),
            seq: 1,
            kind: "sale_completed".into(),
            created_at_ms: 5,
            prev_hash: GENESIS_PREV_HASH,
            payload: "{\"name\":\"可乐\\n\"}".as_bytes().to_vec(),
        }
        .sign(&key)
        .unwrap();
        let json = serde_json::to_string(&JournalBatch {
            entries: vec![WireEntry::from(&entry)],
        })
        .unwrap();
        let back: JournalBatch = serde_json::from_str(&json).unwrap();
        let restored = SignedEntry::try_from(&back.entries[0]).unwrap();
        assert_eq!(restored, entry);
        restored.verify(&key.verifying_key()).unwrap();
        let mut bad = back.entries[0].clone();
        bad.hash = "zz".into();
        assert_eq!(
            SignedEntry::try_from(&bad),
            Err(WireError::BadHex {
                seq: 1,
                field: "hash"
            })
        );
    }
}
