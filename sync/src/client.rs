//! The terminal's side of the sync protocol: enrollment, signed REST calls and the signed
//! WebSocket handshake. Transport only: what to send and when is the lane's sync loop.
//!
//! TLS: both REST (reqwest) and the WebSocket (tokio-tungstenite) use one rustls client
//! configuration from [`TlsTrust`]: either pinned to the PEM file named by `[gateway] ca_file`
//! (a CA, or the gateway's own certificate; no system roots) or the operating system's trust
//! store. TLS 1.2 and 1.3 only, never early data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::auth::{self, Ack, header};
use crate::journal::SignedEntry;
use crate::wire::{
    EnrollRequest, EnrollResponse, IngestResult, JournalBatch, WireEntry, enroll_proof_bytes,
};

// The terminal payment API's calls on `GatewayClient` (a child module: it signs like the rest).
#[path = "payment_client.rs"]
mod payment_client;

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
    #[error(
        "cannot use `{path}` as the gateway's CA or certificate: {reason}; point `[gateway] ca_file` (or `--ca-file`) at a readable PEM file with the gateway's CA or certificate"
    )]
    Trust { path: String, reason: String },
    #[error("cannot set up TLS: {0}")]
    TlsSetup(String),
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

/// An error with its chain of causes ("error sending request: …: invalid peer certificate: …"),
/// so a TLS refusal says why.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn unreachable(error: reqwest::Error) -> ClientError {
    ClientError::Unreachable(describe(&error))
}

/// The certificates a lane accepts from its gateway, as one rustls client configuration shared
/// by REST and the WebSocket. Load it once ([`TlsTrust::pinned`] or [`TlsTrust::system`]) and
/// clone it freely.
#[derive(Clone)]
pub struct TlsTrust {
    config: Arc<rustls::ClientConfig>,
    source: Option<PathBuf>,
}

impl std::fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(path) => write!(f, "TlsTrust::pinned({})", path.display()),
            None => f.write_str("TlsTrust::system"),
        }
    }
}

/// aws-lc-rs, the provider reqwest's `rustls` feature uses: one provider in the process, and
/// no dependence on a process-wide default.
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn config_builder()
-> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, ClientError> {
    rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientError::TlsSetup(e.to_string()))
}

fn finish(mut config: rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    // No 0-RTT: early data could be replayed by anyone on the path.
    config.enable_early_data = false;
    Arc::new(config)
}

impl TlsTrust {
    /// Trusts only the certificates in the PEM file at `path` (pinned; no system roots): a CA
    /// that issued the gateway's certificate, or the gateway's certificate itself.
    pub fn pinned(path: &Path) -> Result<TlsTrust, ClientError> {
        use rustls_pki_types::pem::PemObject as _;
        let fail = |reason: String| ClientError::Trust {
            path: path.display().to_string(),
            reason,
        };
        let certificates = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| fail(pem_reason(&e)))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(pem_reason(&e)))?;
        if certificates.is_empty() {
            return Err(fail(
                "it holds no PEM certificate (BEGIN CERTIFICATE)".into(),
            ));
        }
        let verifier = PinnedVerifier::new(certificates).map_err(fail)?;
        let config = config_builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(TlsTrust {
            config: finish(config),
            source: Some(path.to_path_buf()),
        })
    }

    /// Trusts the operating system's certificate store (no `ca_file` configured).
    pub fn system() -> Result<TlsTrust, ClientError> {
        let verifier = rustls_platform_verifier::Verifier::new(crypto_provider())
            .map_err(|e| ClientError::TlsSetup(e.to_string()))?;
        let config = config_builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(TlsTrust {
            config: finish(config),
            source: None,
        })
    }

    /// The pinned file, or `None` for the system store.
    pub fn pinned_file(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The rustls client configuration (for a caller that opens its own connections).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    fn http_client(&self) -> Result<reqwest::Client, ClientError> {
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(rustls::ClientConfig::clone(&self.config))
            .build()
            .map_err(|e| ClientError::TlsSetup(describe(&e)))
    }
}

fn pem_reason(error: &rustls_pki_types::pem::Error) -> String {
    match error {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not a valid PEM file ({other:?})"),
    }
}

/// Accepts a chain to one of the pinned certificates (checked by webpki: names, dates, usage),
/// or a server certificate byte-for-byte equal to a pinned one (the pin is then the identity).
#[derive(Debug)]
struct PinnedVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<rustls_pki_types::CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedVerifier {
    fn new(pinned: Vec<rustls_pki_types::CertificateDer<'static>>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(pinned.iter().cloned());
        if added == 0 {
            return Err("none of its certificates can be parsed".into());
        }
        let provider = crypto_provider();
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        Ok(PinnedVerifier {
            webpki,
            pinned,
            provider,
        })
    }
}

impl rustls::client::danger::ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|pin| pin.as_ref() == end_entity.as_ref()) =>
            {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            Err(error) => Err(error),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The given trust, or the system store when none is configured.
fn trust_or_system(tls: Option<TlsTrust>) -> Result<TlsTrust, ClientError> {
    match tls {
        Some(tls) => Ok(tls),
        None => TlsTrust::system(),
    }
}

/// The live channel's socket.
pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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

/// Registers a freshly generated terminal key with a one-time enrollment token. `tls` is the
/// pinned CA or certificate (`None`: the system's trust store).
pub async fn enroll(
    base_url: &str,
    token: &str,
    key: &SigningKey,
    name: Option<String>,
    tls: Option<TlsTrust>,
) -> Result<EnrollResponse, ClientError> {
    check_url(base_url)?;
    let tls = trust_or_system(tls)?;
    let public_key = hex::encode(key.verifying_key().to_bytes());
    let proof = hex::encode(key.sign(&enroll_proof_bytes(token, &public_key)).to_bytes());
    let request = EnrollRequest {
        token: token.into(),
        public_key,
        proof,
        name,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let response = tls
        .http_client()?
        .post(format!("{}{ENROLL_PATH}", base_url.trim_end_matches('/')))
        .json(&request)
        .send()
        .await
        .map_err(unreachable)?;
    Ok(read_json(response).await?.0)
}

/// A lane's authenticated connection details.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    tls: TlsTrust,
    base_url: String,
    terminal_id: String,
    key: SigningKey,
    gateway_key: VerifyingKey,
    /// Gateway clock minus lane clock, learnt from responses. Request timestamps are signed
    /// on the gateway's clock, so a lane whose clock is wrong still syncs (and reports it).
    clock_offset_ms: Arc<std::sync::atomic::AtomicI64>,
}

/// What a call learnt besides its answer: the gateway's clock.
#[derive(Debug, Clone, Copy)]
pub struct ServerTime(pub Option<i64>);

impl GatewayClient {
    /// `tls` is the pinned CA or certificate (`None`: the system's trust store); plain
    /// `http://` is refused unless it goes to loopback.
    pub fn new(
        base_url: &str,
        terminal_id: &str,
        key: SigningKey,
        gateway_key: VerifyingKey,
        tls: Option<TlsTrust>,
    ) -> Result<GatewayClient, ClientError> {
        check_url(base_url)?;
        let tls = trust_or_system(tls)?;
        Ok(GatewayClient {
            http: tls.http_client()?,
            tls,
            base_url: base_url.trim_end_matches('/').to_string(),
            terminal_id: terminal_id.into(),
            key,
            gateway_key,
            clock_offset_ms: Arc::new(std::sync::atomic::AtomicI64::new(0)),
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
        let response = request.body(body).send().await.map_err(unreachable)?;
        let (result, server_time): (IngestResult, _) = read_json(response).await?;
        if let Some(server_time_ms) = server_time {
            self.learn_server_time(server_time_ms, now_ms);
        }
        self.verify_ack(&result.ack)?;
        Ok((result, ServerTime(server_time)))
    }

    /// Fetches the store's signed configuration (`GET /v1/terminal/config`). Not verified
    /// here: the lane's apply step checks the signature and the version before using it.
    pub async fn fetch_config(
        &self,
        now_ms: i64,
    ) -> Result<crate::config::SignedConfig, ClientError> {
        let path = crate::config::CONFIG_PATH;
        let mut request = self.http.get(format!("{}{path}", self.base_url));
        for (name, value) in self.signed_headers("GET", path, b"", now_ms)? {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(unreachable)?;
        let (signed, server_time) = read_json(response).await?;
        if let Some(server_time_ms) = server_time {
            self.learn_server_time(server_time_ms, now_ms);
        }
        Ok(signed)
    }

    /// The gateway key acknowledgements and configurations are checked against.
    pub fn gateway_key(&self) -> &VerifyingKey {
        &self.gateway_key
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

    /// Opens the live channel with `request` (from [`GatewayClient::ws_request`]), over TLS
    /// with this client's trust for `wss://`. Errors are tungstenite's, so a caller can read a
    /// refusal's status and headers.
    pub async fn connect_ws(
        &self,
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<
        (
            WsStream,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        tokio_tungstenite::tungstenite::Error,
    > {
        tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            true,
            Some(tokio_tungstenite::Connector::Rustls(
                self.tls.client_config(),
            )),
        )
        .await
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
