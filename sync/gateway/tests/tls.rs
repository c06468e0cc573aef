//! HTTPS and WSS end to end: the real `lanepay-gateway` binary serving with a certificate made
//! for the test (a throwaway CA from rcgen, nothing committed), and the lane's client library
//! (`lanepay_sync::client`) enrolling and syncing with that CA pinned. Also: a certificate from
//! another CA is refused, plain HTTP goes to loopback only, TLS 1.1 is refused (with openssl,
//! when installed), and a certificate/key mismatch stops `serve` with a clear message.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic is the test failure

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use futures_util::{SinkExt as _, StreamExt as _};
use lanepay_sync::client::{self, ClientError, GatewayClient, TlsTrust};
use lanepay_sync::journal::{EntryDraft, GENESIS_PREV_HASH, SignedEntry};
use lanepay_sync::wire::{WireEntry, WsFrame};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::AsyncBufReadExt as _;
use tokio_tungstenite::tungstenite::Message;

const BINARY: &str = env!("CARGO_BIN_EXE_lanepay-gateway");
const DEADLINE: Duration = Duration::from_secs(20);

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A CA and a server certificate it issued for 127.0.0.1 and localhost, written as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn make_pki(dir: &Path, name: &str) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let ca = make_ca(&format!("{name} test CA"));
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "lanepay gateway");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("gateway.pem"),
        key: dir.join("gateway.key"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

fn gateway_command(args: &[&str], data: &Path) -> std::process::Output {
    let output = std::process::Command::new(BINARY)
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn last_line(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned()
}

/// A merchant and a fresh enrollment token in `data`.
fn token(data: &Path) -> String {
    let mut merchant = std::process::Command::new(BINARY);
    merchant
        .args(["merchant", "add", "--data"])
        .arg(data)
        .args([
            "--id",
            "M1",
            "--name",
            "TLS shop",
            "--sign-type",
            "HMAC-SHA256",
            "--notify-host",
            "127.0.0.1",
        ]);
    let output = merchant.output().unwrap();
    assert!(output.status.success(), "merchant add failed");
    last_line(&gateway_command(
        &["token", "create", "--store", "S1"],
        data,
    ))
}

struct Gateway {
    child: tokio::process::Child,
    address: String,
}

impl Gateway {
    async fn start(data: &Path, pki: &Pki) -> Gateway {
        let log = std::fs::File::create(data.join("stderr.log")).unwrap();
        let mut child = tokio::process::Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let address = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("gateway did not start")
            .unwrap()
            .expect("gateway printed nothing");
        assert!(
            address.starts_with("127.0.0.1:"),
            "the first line is the address, unchanged with TLS; got {address:?}"
        );
        Gateway { child, address }
    }

    fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// SIGTERM: graceful shutdown works over TLS too.
    async fn stop(mut self) {
        let pid = self.child.id().unwrap();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
        let exit = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("no exit after SIGTERM")
            .unwrap();
        assert!(exit.success(), "gateway exited with {exit}");
    }
}

fn entries(key: &SigningKey, terminal_id: &str, n: u64) -> Vec<SignedEntry> {
    let mut prev = GENESIS_PREV_HASH;
    (1..=n)
        .map(|seq| {
            let entry = EntryDraft {
                terminal_id: terminal_id.into(),
                seq,
                kind: "note".into(),
                created_at_ms: now_ms(),
                prev_hash: prev,
                payload: format!("{{\"n\":{seq}}}").into_bytes(),
            }
            .sign(key)
            .unwrap();
            prev = entry.hash;
            entry
        })
        .collect()
}

fn refused_for_certificate(error: &ClientError) {
    let text = error.to_string();
    assert!(
        matches!(error, ClientError::Unreachable(_)) && text.contains("certificate"),
        "expected a certificate refusal, got: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_enrolls_and_syncs_over_https_and_wss_with_the_pinned_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gateway");
    std::fs::create_dir_all(&data).unwrap();
    let pki = make_pki(&dir.path().join("pki"), "right");
    let other = make_pki(&dir.path().join("other"), "other");
    let token = token(&data);
    let gateway = Gateway::start(&data, &pki).await;
    let url = gateway.url();
    let key = SigningKey::from_bytes(&[7; 32]);

    // A lane that pins another CA refuses this gateway before sending anything, token included.
    let wrong = TlsTrust::pinned(&other.ca).unwrap();
    let error = client::enroll(&url, &token, &key, None, Some(wrong.clone()))
        .await
        .unwrap_err();
    refused_for_certificate(&error);

    // Enrollment over HTTPS with the right CA pinned (the token is still unused).
    let trust = TlsTrust::pinned(&pki.ca).unwrap();
    let enrolled = client::enroll(
        &url,
        &token,
        &key,
        Some("lane 1".into()),
        Some(trust.clone()),
    )
    .await
    .unwrap();
    let gateway_key = lanepay_sync::auth::parse_public_key(&enrolled.gateway_keys[0]).unwrap();
    let terminal = enrolled.terminal_id.clone();
    let chain = entries(&key, &terminal, 3);

    // REST over HTTPS.
    let lane = GatewayClient::new(&url, &terminal, key.clone(), gateway_key, Some(trust)).unwrap();
    let (result, _) = lane.send_batch(&chain[..2], now_ms()).await.unwrap();
    assert_eq!(result.ack.seq, 2);

    // The live channel over WSS with the same pinned trust.
    let request = lane.ws_request(now_ms()).unwrap();
    assert_eq!(request.uri().scheme_str(), Some("wss"));
    let (mut socket, _) = lane.connect_ws(request).await.unwrap();
    let frame = WsFrame::Entries {
        entries: vec![WireEntry::from(&chain[2])],
    };
    socket
        .send(Message::text(serde_json::to_string(&frame).unwrap()))
        .await
        .unwrap();
    let ack = loop {
        let message = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("no answer on the live channel")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message
            && let Ok(WsFrame::Result(result)) = serde_json::from_str(text.as_str())
        {
            break result.ack;
        }
    };
    assert_eq!(ack.seq, 3);
    assert_eq!(lane.verify_ack(&ack).unwrap(), chain[2].hash);
    socket.close(None).await.unwrap();

    // Pinning the gateway's own certificate (not its CA) works too.
    let leaf = TlsTrust::pinned(&pki.cert).unwrap();
    let pinned_leaf =
        GatewayClient::new(&url, &terminal, key.clone(), gateway_key, Some(leaf)).unwrap();
    let (result, _) = pinned_leaf.send_batch(&chain, now_ms()).await.unwrap();
    assert_eq!(result.ack.seq, 3, "a re-sent batch is acknowledged again");

    // Another CA: REST and WebSocket both refuse the gateway's certificate.
    let stranger = GatewayClient::new(&url, &terminal, key, gateway_key, Some(wrong)).unwrap();
    refused_for_certificate(&stranger.send_batch(&chain, now_ms()).await.unwrap_err());
    let refused = stranger
        .connect_ws(stranger.ws_request(now_ms()).unwrap())
        .await
        .unwrap_err();
    assert!(
        refused.to_string().to_lowercase().contains("certificate"),
        "the WebSocket must refuse the certificate: {refused}"
    );

    // TLS 1.1 and older: rustls does not speak them. Shown with openssl when it is installed.
    if let Ok(output) = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &gateway.address, "-tls1_1"])
        .stdin(Stdio::null())
        .output()
    {
        assert!(
            !output.status.success(),
            "TLS 1.1 must be refused: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let tls12 = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &gateway.address, "-tls1_2"])
            .args(["-alpn", "h2,http/1.1", "-CAfile"])
            .arg(&pki.ca)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&tls12.stdout);
        assert!(
            tls12.status.success() && text.contains("Verify return code: 0 (ok)"),
            "TLS 1.2 must work: {text}"
        );
        assert!(
            text.contains("ALPN protocol: http/1.1"),
            "ALPN picks HTTP/1.1 (the WebSocket upgrade needs it): {text}"
        );
    }

    gateway.stop().await;
}

#[tokio::test]
async fn plain_http_goes_to_loopback_only_and_bad_trust_files_are_named() {
    let key = SigningKey::from_bytes(&[9; 32]);
    let gateway_key = key.verifying_key();
    for url in [
        "http://10.0.0.5:8080",
        "http://gw.example.com",
        "ws://10.0.0.5",
    ] {
        assert!(matches!(
            GatewayClient::new(url, "T1", key.clone(), gateway_key, None),
            Err(ClientError::InsecureUrl(_))
        ));
        assert!(matches!(
            client::enroll(url, "token", &key, None, None).await,
            Err(ClientError::InsecureUrl(_))
        ));
    }
    assert!(GatewayClient::new("http://127.0.0.1:8080", "T1", key, gateway_key, None).is_ok());

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let error = TlsTrust::pinned(&missing).unwrap_err().to_string();
    assert!(
        error.contains("missing.pem") && error.contains("ca_file"),
        "{error}"
    );
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let error = TlsTrust::pinned(&empty).unwrap_err().to_string();
    assert!(
        error.contains("empty.pem") && error.contains("no PEM certificate"),
        "{error}"
    );
}

#[test]
fn serve_names_an_unreadable_or_mismatched_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(&dir.path().join("pki"), "one");
    let other = make_pki(&dir.path().join("other"), "two");
    let serve = |cert: &Path, key: &Path| {
        let output = std::process::Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .unwrap();
        assert!(!output.status.success());
        assert!(output.stdout.is_empty(), "nothing listened");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let mismatch = serve(&pki.cert, &other.key);
    assert!(mismatch.contains("cannot be used together"), "{mismatch}");
    let unreadable = serve(&dir.path().join("nope.pem"), &pki.key);
    assert!(
        unreadable.contains("cannot read the TLS certificate") && unreadable.contains("nope.pem"),
        "{unreadable}"
    );
    let no_key = serve(&pki.cert, &pki.cert);
    assert!(no_key.contains("no PEM private key"), "{no_key}");
    // --tls-cert without --tls-key is a usage error.
    let output = std::process::Command::new(BINARY)
        .args(["serve", "--tls-cert"])
        .arg(&pki.cert)
        .args(["--data", "x"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}
