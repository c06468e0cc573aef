//! HTTPS and WSS for the gateway: a rustls server configuration from PEM files (TLS 1.2 and 1.3
//! only, no 0-RTT, ALPN `http/1.1`) and a listener that completes TLS handshakes off the accept
//! path, so `axum::serve` (and its graceful shutdown) runs over TLS unchanged.
//!
//! Early data is off twice over: `max_early_data_size` is 0 (rustls then never offers 0-RTT in
//! its session tickets and rejects early data), and tokio-rustls is built without its
//! `early-data` feature.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// A client has this long to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPT_QUEUE: usize = 64;

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}: {reason}; pass a readable PEM file")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{path} holds no PEM certificate (BEGIN CERTIFICATE); pass the certificate chain, leaf first"
    )]
    NoCertificate { path: PathBuf },
    #[error(
        "{path} holds no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    NoKey { path: PathBuf },
    #[error(
        "the TLS certificate {cert} and key {key} cannot be used together: {reason}; pass the key that belongs to the certificate"
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

fn read_error(what: &'static str, path: &Path, error: &rustls_pki_types::pem::Error) -> TlsError {
    let reason = match error {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not a valid PEM file ({other:?})"),
    };
    TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

/// Builds the server configuration from a PEM certificate chain (leaf first) and a PEM private
/// key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read_error("certificate", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error("certificate", cert, &e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let private_key = match PrivateKeyDer::from_pem_file(key) {
        Ok(private_key) => private_key,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                path: key.to_path_buf(),
            });
        }
        Err(error) => return Err(read_error("key", key, &error)),
    };
    let mismatch = |reason: String| TlsError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    };
    // aws-lc-rs, the provider reqwest uses too: one provider in the process.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| mismatch(e.to_string()))?
        .with_no_client_auth()
        // Checks that the key belongs to the leaf certificate.
        .with_single_cert(chain, private_key)
        .map_err(|e| mismatch(e.to_string()))?;
    // No 0-RTT: early data can be replayed by anyone who saw it.
    config.max_early_data_size = 0;
    config.send_half_rtt_data = false;
    // The WebSocket upgrade needs HTTP/1.1 (the server speaks no HTTP/2).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that yields connections after their TLS handshake. Handshakes run in their own
/// tasks (bounded by [`HANDSHAKE_TIMEOUT`]), so a slow client holds up nobody else.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener`. The accept task ends when this listener is dropped.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(ACCEPT_QUEUE);
        tokio::spawn(accept_loop(
            listener,
            tokio_rustls::TlsAcceptor::from(config),
            sender,
        ));
        Ok(TlsListener { ready, local_addr })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = sender.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small request/response frames: no Nagle delay on the live channel.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // The server is gone when the send fails: the connection just closes.
                    let _ = sender.send((stream, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task only ends once this listener is dropped; never reached.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
