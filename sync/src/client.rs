//! The terminal's side of the sync protocol: enrollment, signed REST calls and the signed
//! WebSocket handshake. Transport only: what to send and when is the lane's sync loop.

use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::auth::{self, Ack, header};
use crate::journal::SignedEntry;
use crate::wire::{
    EnrollRequest, EnrollResponse, IngestResult, JournalBatch, WireEntry, enroll_proof_bytes,
};

/// How long one REST call may take before the lane treats the gateway as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take; short, because "offline" must show within seconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub use crate::wire::{ENROLL_PATH, JOURNAL_PATH, WS_PATH};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "gateway URL `{0}` is not allowed: use https://, or http:// only to this machine (loopback)"
    )]
    InsecureUrl(String),
    #[error("cannot reach the gateway: {0}")]
    Unreachable(String),
    #[error("the gateway refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the gateway's answer is malformed: {0}")]
    Malformed(String),
    #[error("the gateway's acknowledgement does not verify: {0}")]
    BadAck(auth::AuthError),
    #[error("the lane's clock is too far from the gateway's (gateway time {server_time_ms})")]
    ClockSkew { server_time_ms: i64 },
    #[error("no randomness for a nonce: {0}")]
    NoRandomness(String),
}

impl ClientError {
    /// Worth retrying later (the network or the gateway), as opposed to a refusal that will
    /// repeat until someone acts.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable(_) => true,
            ClientError::Refused { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Plain HTTP is allowed to loopback only (a lane and an embedded gateway on one box).
pub fn check_url(base_url: &str) -> Result<(), ClientError> {
    let lower = base_url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return Err(ClientError::InsecureUrl(base_url.into()));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if loopback {
        Ok(())
    } else {
        Err(ClientError::InsecureUrl(base_url.into()))
    }
}

fn nonce() -> Result<String, ClientError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ClientError::NoRandomness(e.to_string()))?;
    Ok(hex::encode(bytes))
}

fn http_client() -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ClientError::Unreachable(e.to_string()))
}

async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<(T, Option<i64>), ClientError> {
    let status = response.status();
    let server_time = response
        .headers()
        .get(header::SERVER_TIME)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = response
        .bytes()
        .await
        .map_err(|e| ClientError::Unreachable(e.to_string()))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(String::from));
        if code.as_deref() == Some("clock_skew")
            && let Some(server_time_ms) = server_time
        {
            return Err(ClientError::ClockSkew { server_time_ms });
        }
        return Err(ClientError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    let value = serde_json::from_slice(&body).map_err(|e| ClientError::Malformed(e.to_string()))?;
    Ok((value, server_time))
}

/// Registers a freshly generated terminal key with a one-time enrollment token.
pub async fn enroll(
    base_url: &str,
    token: &str,
    key: &SigningKey,
    name: Option<String>,
) -> Result<EnrollResponse, ClientError> {
    check_url(base_url)?;
    let public_key = hex::encode(key.verifying_key().to_bytes());
    let proof = hex::encode(key.sign(&enroll_proof_bytes(token, &public_key)).to_bytes());
    let request = EnrollRequest {
        token: token.into(),
        public_key,
        proof,
        name,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let response = http_client()?
        .post(format!("{}{ENROLL_PATH}", base_url.trim_end_matches('/')))
        .json(&request)
        .send()
        .await
        .map_err(|e| ClientError::Unreachable(e.to_string()))?;
    Ok(read_json(response).await?.0)
}

/// A lane's authenticated connection details.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base_url: String,
    terminal_id: String,
    key: SigningKey,
    gateway_key: VerifyingKey,
    /// Gateway clock minus lane clock, learnt from responses. Request timestamps are signed
    /// on the gateway's clock, so a lane whose clock is wrong still syncs (and reports it).
    clock_offset_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// What a call learnt besides its answer: the gateway's clock.
#[derive(Debug, Clone, Copy)]
pub struct ServerTime(pub Option<i64>);

impl GatewayClient {
    pub fn new(
        base_url: &str,
        terminal_id: &str,
        key: SigningKey,
        gateway_key: VerifyingKey,
    ) -> Result<GatewayClient, ClientError> {
        check_url(base_url)?;
        Ok(GatewayClient {
            http: http_client()?,
            base_url: base_url.trim_end_matches('/').to_string(),
            terminal_id: terminal_id.into(),
            key,
            gateway_key,
            clock_offset_ms: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0)),
        })
    }

    /// Records the gateway's clock as seen at lane time `local_now_ms`.
    pub fn learn_server_time(&self, server_time_ms: i64, local_now_ms: i64) {
        self.clock_offset_ms.store(
            server_time_ms - local_now_ms,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Gateway clock minus lane clock, as last learnt (0 before any answer).
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn terminal_id(&self) -> &str {
        &self.terminal_id
    }

    fn signed_headers(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Result<Vec<(&'static str, String)>, ClientError> {
        let signed = auth::sign_request(
            &self.key,
            &self.terminal_id,
            method,
            path,
            body,
            now_ms + self.clock_offset_ms(),
            &nonce()?,
        );
        Ok(vec![
            (header::TERMINAL, signed.terminal_id),
            (header::TIMESTAMP, signed.timestamp_ms.to_string()),
            (header::NONCE, signed.nonce),
            (header::SIGNATURE, signed.signature),
        ])
    }

    /// Sends consecutive entries; returns the gateway's verified answer.
    pub async fn send_batch(
        &self,
        entries: &[SignedEntry],
        now_ms: i64,
    ) -> Result<(IngestResult, ServerTime), ClientError> {
        match self.send_batch_once(entries, now_ms).await {
            // The lane's clock is off: sign on the gateway's clock from now on and try again.
            Err(ClientError::ClockSkew { server_time_ms }) => {
                self.learn_server_time(server_time_ms, now_ms);
                self.send_batch_once(entries, now_ms).await
            }
            other => other,
        }
    }

    async fn send_batch_once(
        &self,
        entries: &[SignedEntry],
        now_ms: i64,
    ) -> Result<(IngestResult, ServerTime), ClientError> {
        let batch = JournalBatch {
            entries: entries.iter().map(WireEntry::from).collect(),
        };
        let body = serde_json::to_vec(&batch).map_err(|e| ClientError::Malformed(e.to_string()))?;
        let mut request = self
            .http
            .post(format!("{}{JOURNAL_PATH}", self.base_url))
            .header("content-type", "application/json");
        for (name, value) in self.signed_headers("POST", JOURNAL_PATH, &body, now_ms)? {
            request = request.header(name, value);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let (result, server_time): (IngestResult, _) = read_json(response).await?;
        if let Some(server_time_ms) = server_time {
            self.learn_server_time(server_time_ms, now_ms);
        }
        self.verify_ack(&result.ack)?;
        Ok((result, ServerTime(server_time)))
    }

    /// Checks an acknowledgement's gateway signature; returns the acknowledged hash.
    pub fn verify_ack(&self, ack: &Ack) -> Result<[u8; 32], ClientError> {
        ack.verify(&self.gateway_key, &self.terminal_id)
            .map_err(ClientError::BadAck)
    }

    /// The signed request that opens the live WebSocket channel.
    pub fn ws_request(
        &self,
        now_ms: i64,
    ) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, ClientError> {
        let url = format!("{}{WS_PATH}", self.base_url).replacen("http", "ws", 1);
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Malformed(e.to_string()))?;
        for (name, value) in self.signed_headers("GET", WS_PATH, b"", now_ms)? {
            let value = value
                .parse()
                .map_err(|_| ClientError::Malformed("header value".into()))?;
            request.headers_mut().insert(name, value);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_url("https://gw.example.com").is_ok());
        assert!(check_url("http://127.0.0.1:8080").is_ok());
        assert!(check_url("http://localhost:8080/").is_ok());
        assert!(check_url("http://[::1]:8080").is_ok());
        assert!(check_url("http://10.0.0.5:8080").is_err());
        assert!(check_url("http://gw.example.com").is_err());
        assert!(check_url("ftp://127.0.0.1").is_err());
        assert!(check_url("http://127.0.0.1.evil.example").is_err());
    }
}
