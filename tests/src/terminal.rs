//! A terminal the test controls byte by byte: it enrolls with a key the test holds, signs
//! requests with `lanepay_sync::auth` at any timestamp and nonce it is given (so tests can
//! replay, skew, re-sign and tamper), and builds journal entries with real sale payloads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ed25519_dalek::{Signer, SigningKey};
use lanepay_sync::auth::{self, header};
use lanepay_sync::journal::{EntryDraft, GENESIS_PREV_HASH, SignedEntry};
use lanepay_sync::wire::{
    ENROLL_PATH, EnrollRequest, JOURNAL_PATH, JournalBatch, WS_PATH, WireEntry, enroll_proof_bytes,
};
use rand::Rng;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The system clock in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// 16 random bytes as 32 hex characters.
pub fn fresh_nonce() -> String {
    hex::encode(rand::rng().random::<[u8; 16]>())
}

/// A fresh random ed25519 key.
pub fn random_key() -> SigningKey {
    SigningKey::from_bytes(&rand::rng().random::<[u8; 32]>())
}

/// A gateway answer: status and JSON body (or the body as a string when not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The gateway's clock from `x-lanepay-server-time`, when it sent one.
    pub server_time_ms: Option<i64>,
}

impl Answer {
    /// The error sub-code (`code`) of a refusal.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
}

async fn answer(response: reqwest::Response) -> anyhow::Result<Answer> {
    let status = response.status().as_u16();
    let server_time_ms = response
        .headers()
        .get(header::SERVER_TIME)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = response.bytes().await?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Answer {
        status,
        body,
        server_time_ms,
    })
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

/// `POST /v1/enroll` with `key`; the raw answer.
pub async fn enroll(base_url: &str, token: &str, key: &SigningKey) -> anyhow::Result<Answer> {
    let public_key = hex::encode(key.verifying_key().to_bytes());
    let proof = hex::encode(key.sign(&enroll_proof_bytes(token, &public_key)).to_bytes());
    let request = EnrollRequest {
        token: token.into(),
        public_key,
        proof,
        name: Some("test terminal".into()),
        version: "test".into(),
    };
    let response = http()?
        .post(format!("{}{ENROLL_PATH}", base_url.trim_end_matches('/')))
        .json(&request)
        .send()
        .await
        .context("enroll request failed")?;
    answer(response).await
}

/// A terminal enrolled by the test.
#[derive(Debug, Clone)]
pub struct TestTerminal {
    http: reqwest::Client,
    base_url: String,
    pub terminal_id: String,
    pub store_id: String,
    pub key: SigningKey,
}

/// How to sign one request.
#[derive(Debug, Clone)]
pub struct Signing {
    pub timestamp_ms: i64,
    pub nonce: String,
    /// Sign with this key instead of the terminal's.
    pub key: Option<SigningKey>,
    /// Send this body instead of the one signed (tampering after signing).
    pub body_sent: Option<Vec<u8>>,
}

impl Signing {
    /// Now, a fresh nonce, the terminal's key, the body as signed.
    pub fn fresh() -> Signing {
        Signing {
            timestamp_ms: now_ms(),
            nonce: fresh_nonce(),
            key: None,
            body_sent: None,
        }
    }
}

impl TestTerminal {
    /// Enrolls a new random key with `token`.
    pub async fn enroll(base_url: &str, token: &str) -> anyhow::Result<TestTerminal> {
        let key = random_key();
        let answer = enroll(base_url, token, &key).await?;
        anyhow::ensure!(
            answer.status == 200,
            "enrollment refused: {} {}",
            answer.status,
            answer.body
        );
        Ok(TestTerminal {
            http: http()?,
            base_url: base_url.trim_end_matches('/').to_string(),
            terminal_id: answer.body["terminal_id"]
                .as_str()
                .context("no terminal_id")?
                .to_string(),
            store_id: answer.body["store_id"]
                .as_str()
                .context("no store_id")?
                .to_string(),
            key,
        })
    }

    /// The same terminal talking to another address (a restarted gateway, a proxy).
    pub fn at(&self, base_url: &str) -> TestTerminal {
        TestTerminal {
            base_url: base_url.trim_end_matches('/').to_string(),
            ..self.clone()
        }
    }

    /// The four signature headers for a request signed as `signing` says.
    pub fn headers(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        signing: &Signing,
    ) -> Vec<(&'static str, String)> {
        let key = signing.key.as_ref().unwrap_or(&self.key);
        let signed = auth::sign_request(
            key,
            &self.terminal_id,
            method,
            path,
            body,
            signing.timestamp_ms,
            &signing.nonce,
        );
        vec![
            (header::TERMINAL, signed.terminal_id),
            (header::TIMESTAMP, signed.timestamp_ms.to_string()),
            (header::NONCE, signed.nonce),
            (header::SIGNATURE, signed.signature),
        ]
    }

    /// `POST /v1/terminal/journal` with `entries`, signed as `signing` says.
    pub async fn post_journal(
        &self,
        entries: &[SignedEntry],
        signing: &Signing,
    ) -> anyhow::Result<Answer> {
        let body = serde_json::to_vec(&JournalBatch {
            entries: entries.iter().map(WireEntry::from).collect(),
        })?;
        let mut request = self
            .http
            .post(format!("{}{JOURNAL_PATH}", self.base_url))
            .header("content-type", "application/json");
        for (name, value) in self.headers("POST", JOURNAL_PATH, &body, signing) {
            request = request.header(name, value);
        }
        let sent = signing.body_sent.clone().unwrap_or(body);
        answer(
            request
                .body(sent)
                .send()
                .await
                .context("journal request failed")?,
        )
        .await
    }

    /// Opens the live channel with a signed handshake; `Ok(status)` is the HTTP status of
    /// the answer (101 when it was upgraded).
    pub async fn open_ws(&self, signing: &Signing) -> anyhow::Result<u16> {
        let url = format!("{}{WS_PATH}", self.base_url).replacen("http", "ws", 1);
        let mut request = url.into_client_request()?;
        for (name, value) in self.headers("GET", WS_PATH, b"", signing) {
            request.headers_mut().insert(name, value.parse()?);
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((mut socket, response)) => {
                let _ = socket.close(None).await;
                Ok(response.status().as_u16())
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Ok(response.status().as_u16())
            }
            Err(other) => Err(other.into()),
        }
    }
}

/// A `sale_completed` payload (canonical JSON) of one line paid with one tender.
pub fn sale_payload(
    sale_id: &str,
    store_id: &str,
    amount_fen: i64,
    method: &str,
    at_ms: i64,
) -> anyhow::Result<Vec<u8>> {
    let value = json!({
        "sale_id": sale_id,
        "receipt_no": sale_id,
        "store_id": store_id,
        "currency": "CNY",
        "tax_mode": "included",
        "opened_at_ms": at_ms,
        "completed_at_ms": at_ms,
        "lines": [{
            "line": 1, "sku": "COLA-330", "name_zh": "可乐", "name_en": "Cola",
            "pricing": "per_unit", "quantity": "1", "unit_price_fen": amount_fen,
            "gross_fen": amount_fen, "line_discount_fen": 0, "order_discount_fen": 0,
            "tax_rate": "0.13", "tax_fen": 0, "total_fen": amount_fen
        }],
        "gross_fen": amount_fen,
        "discount_fen": 0,
        "tax_fen": 0,
        "total_fen": amount_fen,
        "change_fen": 0,
        "tenders": [{
            "tender_id": format!("{sale_id}-1"), "method": method, "amount_fen": amount_fen,
            "tendered_fen": amount_fen, "change_fen": 0, "at_ms": at_ms
        }]
    });
    Ok(lanepay_sync::canonical::encode_value(&value)?)
}

/// Signs one entry.
pub fn entry(
    key: &SigningKey,
    terminal_id: &str,
    seq: u64,
    prev_hash: [u8; 32],
    kind: &str,
    payload: Vec<u8>,
) -> anyhow::Result<SignedEntry> {
    Ok(EntryDraft {
        terminal_id: terminal_id.into(),
        seq,
        kind: kind.into(),
        created_at_ms: now_ms(),
        prev_hash,
        payload,
    }
    .sign(key)?)
}

/// `n` chained cash sales of `amount_fen(seq)` each.
pub fn sales_chain(
    terminal: &TestTerminal,
    n: u64,
    amount_fen: impl Fn(u64) -> i64,
) -> anyhow::Result<Vec<SignedEntry>> {
    let mut prev = GENESIS_PREV_HASH;
    let mut entries = Vec::new();
    for seq in 1..=n {
        let payload = sale_payload(
            &format!("{}-{seq:06}", terminal.terminal_id),
            &terminal.store_id,
            amount_fen(seq),
            "cash",
            now_ms(),
        )?;
        let signed = entry(
            &terminal.key,
            &terminal.terminal_id,
            seq,
            prev,
            lanepay_sync::payload::kind::SALE_COMPLETED,
            payload,
        )?;
        prev = signed.hash;
        entries.push(signed);
    }
    Ok(entries)
}
