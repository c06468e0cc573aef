//! End-to-end tests of the real `lanepay-gateway` binary over loopback HTTP. Each test starts its
//! own gateway on a manual clock (hidden `--manual-clock-start-ms`), so timers run exactly when a
//! test advances the clock; waiting is always polling for an observable outcome under a deadline.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic is the test failure

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanepay_gateway::signing;
use rsa::pkcs8::EncodePublicKey as _;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

const BINARY: &str = env!("CARGO_BIN_EXE_lanepay-gateway");
/// 2026-11-19 around 04:53 UTC: any fixed instant works, the gateway only follows the test.
const START_MS: i64 = 1_795_000_000_000;
const ADMIN_TOKEN: &str = "test-admin-token";
/// How long a test waits for something the gateway does on its own.
const DEADLINE: Duration = Duration::from_secs(20);

fn merchant_add(
    data: &Path,
    id: &str,
    sign_type: &str,
    public_key: Option<&Path>,
    hosts: &[&str],
) -> String {
    let mut command = std::process::Command::new(BINARY);
    command.args(["merchant", "add", "--data"]).arg(data).args([
        "--id",
        id,
        "--name",
        "Test shop",
        "--sign-type",
        sign_type,
    ]);
    if let Some(path) = public_key {
        command.arg("--public-key").arg(path);
    }
    command.arg("--notify-host").args(hosts);
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "merchant add failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned()
}

struct Gateway {
    child: tokio::process::Child,
    base: String,
    data: PathBuf,
    client: reqwest::Client,
}

impl Gateway {
    async fn start(data: &Path, start_ms: i64, extra: &[&str]) -> Gateway {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("stderr.log"))
            .unwrap();
        let mut child = tokio::process::Command::new(BINARY)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-token",
                ADMIN_TOKEN,
                "--data",
            ])
            .arg(data)
            .arg("--manual-clock-start-ms")
            .arg(start_ms.to_string())
            .args(extra)
            .env_remove("LANEPAY_GATEWAY_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("gateway did not start")
            .unwrap();
        let address = first.expect("gateway printed nothing");
        assert!(
            address.starts_with("127.0.0.1:"),
            "first line is the address, got {address:?}"
        );
        Gateway {
            child,
            base: format!("http://{address}"),
            data: data.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// SIGTERM, and the process must exit cleanly.
    async fn stop(mut self) {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("no exit after SIGTERM")
            .unwrap();
        assert!(exit.success(), "gateway exited with {exit}");
    }

    async fn now(&self) -> i64 {
        let value: Value = self
            .client
            .get(format!("{}/test/clock", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        value["now_ms"].as_i64().unwrap()
    }

    async fn advance_to(&self, to_ms: i64) {
        let response = self
            .client
            .post(format!("{}/test/clock/advance", self.base))
            .json(&json!({ "to_ms": to_ms }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    async fn advance(&self, by_ms: i64) {
        let response = self
            .client
            .post(format!("{}/test/clock/advance", self.base))
            .json(&json!({ "by_ms": by_ms }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin_get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin_post(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn order(&self, trade_no: &str) -> Value {
        let (status, order) = self.admin_get(&format!("/admin/orders/{trade_no}")).await;
        assert_eq!(status, 200, "{order}");
        order
    }

    /// Polls the admin view of an order until `done` holds.
    async fn wait_order(&self, trade_no: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let order = self.order(trade_no).await;
            if done(&order) {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order never reached the condition: {order}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_notify(&self, notify_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (status, notify) = self
                .admin_get(&format!("/admin/notifies/{notify_id}"))
                .await;
            if status == 200 && done(&notify) {
                return notify;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "notify never reached the condition: {notify}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn count(&self, sql: &str) -> i64 {
        self.count_in("gateway.sqlite", sql)
    }

    fn count_in(&self, file: &str, sql: &str) -> i64 {
        let connection = rusqlite::Connection::open(self.data.join(file)).unwrap();
        connection.query_row(sql, [], |row| row.get(0)).unwrap()
    }
}

/// A merchant as seen from its own server: id, key material, and how it signs.
#[derive(Clone)]
enum Signer {
    Hmac(String),
    Rsa {
        merchant_key: Box<rsa::RsaPrivateKey>,
        gateway_key: Box<rsa::RsaPublicKey>,
    },
}

#[derive(Clone)]
struct Merchant {
    id: String,
    signer: Signer,
}

fn to_params(value: &Value) -> BTreeMap<String, String> {
    lanepay_gateway::params::from_json_object(value).unwrap()
}

impl Merchant {
    fn sign(&self, body: &mut Value) {
        let params = to_params(body);
        let sign = match &self.signer {
            Signer::Hmac(secret) => signing::hmac_sign(&params, secret).unwrap(),
            Signer::Rsa { merchant_key, .. } => {
                signing::rsa_sign(&params, merchant_key.as_ref()).unwrap()
            }
        };
        body["sign"] = Value::String(sign);
    }

    /// Checks the gateway's signature on a reply or notify.
    fn verify(&self, body: &Value) -> bool {
        let sign = body["sign"].as_str().unwrap_or_default().to_owned();
        let params = to_params(body);
        match &self.signer {
            Signer::Hmac(secret) => {
                body["sign_type"] == "HMAC-SHA256" && signing::hmac_verify(&params, secret, &sign)
            }
            Signer::Rsa { gateway_key, .. } => {
                body["sign_type"] == "RSA-SHA256"
                    && signing::rsa_verify(&params, gateway_key.as_ref(), &sign)
            }
        }
    }

    /// Sends a signed request with the gateway's current time and a fresh nonce; checks the
    /// reply's signature.
    async fn call(&self, gateway: &Gateway, path: &str, mut body: Value) -> (u16, Value) {
        body["merchant_id"] = json!(self.id);
        body["timestamp"] = json!(gateway.now().await);
        body["nonce"] = json!(fresh_nonce());
        self.sign(&mut body);
        let (status, reply) = gateway.post_raw(path, body.to_string()).await;
        assert!(self.verify(&reply), "reply signature invalid: {reply}");
        (status, reply)
    }
}

fn fresh_nonce() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).unwrap();
    hex::encode(bytes)
}

fn hmac_merchant(data: &Path, id: &str) -> Merchant {
    let secret = merchant_add(data, id, "HMAC-SHA256", None, &["127.0.0.1"]);
    assert_eq!(secret.len(), 64);
    Merchant {
        id: id.to_owned(),
        signer: Signer::Hmac(secret),
    }
}

fn rsa_merchant(data: &Path, id: &str) -> Merchant {
    let merchant_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pem = merchant_key
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let path = data.join(format!("{id}.pub.pem"));
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(&path, pem).unwrap();
    let printed = merchant_add(data, id, "RSA-SHA256", Some(&path), &["127.0.0.1"]);
    let gateway_key = signing::parse_public_key(&printed).unwrap();
    Merchant {
        id: id.to_owned(),
        signer: Signer::Rsa {
            merchant_key: Box::new(merchant_key),
            gateway_key: Box::new(gateway_key),
        },
    }
}

fn assert_error(reply: &(u16, Value), status: u16, code: i64, sub_code: &str) {
    assert_eq!(reply.1["code"], "FAIL", "{}", reply.1);
    assert_eq!(reply.1["error_code"], code, "{}", reply.1);
    assert_eq!(reply.1["sub_code"], sub_code, "{}", reply.1);
    assert!(reply.1["retryable"].is_boolean(), "{}", reply.1);
    assert_eq!(reply.0, status, "{}", reply.1);
}

fn qr_order(out_trade_no: &str, amount: &str, pay_type: &str, notify_url: &str) -> Value {
    json!({
        "out_trade_no": out_trade_no,
        "total_amount": amount,
        "subject": "测试商品",
        "body": "two coffees",
        "pay_type": pay_type,
        "notify_url": notify_url,
        "return_url": "https://shop.example.com/done",
    })
}

fn code_order(out_trade_no: &str, amount: &str, pay_type: &str, auth_code: &str) -> Value {
    let mut order = qr_order(out_trade_no, amount, pay_type, "http://127.0.0.1:9/notify");
    order["auth_code"] = json!(auth_code);
    order
}

/// A merchant notify endpoint that answers `fail` (HTTP 500) to the first `failures` notifies,
/// then `success`, and keeps every body it received.
struct MerchantServer {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
    failures: Arc<Mutex<usize>>,
    _task: tokio::task::JoinHandle<()>,
}

impl MerchantServer {
    async fn start(failures: usize) -> MerchantServer {
        let received = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(failures));
        let (received_in, failures_in) = (received.clone(), failures.clone());
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (received, failures) = (received_in.clone(), failures_in.clone());
                async move {
                    received
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice::<Value>(&body).unwrap());
                    let mut left = failures.lock().unwrap();
                    if *left > 0 {
                        *left -= 1;
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "fail")
                    } else {
                        (axum::http::StatusCode::OK, "success")
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        MerchantServer {
            url,
            received,
            failures,
            _task: task,
        }
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

async fn start(extra: &[&str]) -> (tempfile::TempDir, Merchant, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let merchant = hmac_merchant(dir.path(), "M1001");
    let gateway = Gateway::start(dir.path(), START_MS, extra).await;
    (dir, merchant, gateway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_order_is_created_scanned_paid_queried_and_notified() {
    let (_dir, merchant, gateway) = start(&[]).await;
    let shop = MerchantServer::start(0).await;
    let (status, created) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            qr_order("QR-1", "88.88", "wechat", &shop.url),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["code"], "SUCCESS");
    assert_eq!(created["trade_status"], "CREATED");
    let trade_no = created["trade_no"].as_str().unwrap().to_owned();
    assert!(
        trade_no.starts_with('T') && trade_no.len() >= 32,
        "{trade_no}"
    );
    assert_eq!(created["prepay_id"], format!("wx{trade_no}"));
    let pay_url = created["pay_url"].as_str().unwrap().to_owned();
    assert_eq!(
        pay_url,
        format!("{}/sandbox/wallet/{trade_no}", gateway.base)
    );

    // Opening the wallet page is the scan: the order now exists at the channel.
    let page = gateway
        .client
        .get(&pay_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("88.88") && page.contains("id=\"confirm\""),
        "{page}"
    );
    let (_, queried) = merchant
        .call(
            &gateway,
            "/api/payment/query",
            json!({"out_trade_no": "QR-1"}),
        )
        .await;
    assert_eq!(queried["trade_status"], "WAIT_PAY");
    assert!(queried.get("receipt_amount").is_none());

    let paid = gateway
        .client
        .post(format!("{pay_url}/confirm"))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    assert!(
        paid.text()
            .await
            .unwrap()
            .contains("data-state=\"SUCCESS\"")
    );
    let (_, queried) = merchant
        .call(
            &gateway,
            "/api/payment/query",
            json!({"trade_no": trade_no}),
        )
        .await;
    assert_eq!(queried["trade_status"], "SUCCESS");
    assert_eq!(queried["total_amount"], "88.88");
    assert_eq!(queried["receipt_amount"], "88.88");
    assert_eq!(queried["pay_type"], "wechat");
    assert!(
        queried["pay_time"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-"),
        "{queried}"
    );

    // A second confirm cannot pay twice; close cannot close a paid order.
    let again = gateway
        .client
        .post(format!("{pay_url}/confirm"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let closed = merchant
        .call(
            &gateway,
            "/api/payment/close",
            json!({"out_trade_no": "QR-1"}),
        )
        .await;
    assert_error(&closed, 409, 1004, "ILLEGAL_TRANSITION");
    assert_eq!(closed.1["trade_status"], "SUCCESS");

    let notify_id = format!("N{trade_no}SUCCESS");
    gateway
        .wait_notify(&notify_id, |n| n["state"] == "DELIVERED")
        .await;
    let received = shop.received();
    assert_eq!(received.len(), 1);
    let notify = &received[0];
    assert!(merchant.verify(notify), "{notify}");
    assert_eq!(notify["notify_id"], notify_id);
    assert_eq!(notify["trade_status"], "SUCCESS");
    assert_eq!(notify["out_trade_no"], "QR-1");
    assert_eq!(notify["receipt_amount"], "88.88");
    assert_eq!(gateway.order(&trade_no).await["paid_fen"], 8888);

    // The channel's daily bill has the payment.
    let date = &queried["pay_time"].as_str().unwrap()[..10];
    let (status, bill) = gateway
        .admin_get(&format!("/admin/channels/wechat/bill?date={date}"))
        .await;
    assert_eq!(status, 200);
    assert!(
        bill.as_str()
            .unwrap()
            .contains(&format!("wechat,{trade_no},PAY,{trade_no},88.88,")),
        "{bill}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_qr_payment_fails_and_close_is_idempotent() {
    let (_dir, merchant, gateway) = start(&[]).await;
    let (_, created) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            qr_order("QR-D", "5", "alipay", "http://127.0.0.1:9/n"),
        )
        .await;
    let pay_url = created["pay_url"].as_str().unwrap().to_owned();
    assert!(created.get("prepay_id").is_none());
    let declined = gateway
        .client
        .post(format!("{pay_url}/decline"))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), 200);
    let (_, queried) = merchant
        .call(
            &gateway,
            "/api/payment/query",
            json!({"out_trade_no": "QR-D"}),
        )
        .await;
    assert_eq!(queried["trade_status"], "FAILED");

    let (_, created) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            qr_order("QR-C", "5.5", "unionpay", "http://127.0.0.1:9/n"),
        )
        .await;
    let pay_url = created["pay_url"].as_str().unwrap().to_owned();
    let (status, closed) = merchant
        .call(
            &gateway,
            "/api/payment/close",
            json!({"out_trade_no": "QR-C"}),
        )
        .await;
    assert_eq!(
        (status, closed["trade_status"].as_str()),
        (200, Some("CLOSED")),
        "{closed}"
    );
    let (status, closed) = merchant
        .call(
            &gateway,
            "/api/payment/close",
            json!({"out_trade_no": "QR-C"}),
        )
        .await;
    assert_eq!(
        (status, closed["trade_status"].as_str()),
        (200, Some("CLOSED")),
        "{closed}"
    );
    // Scanning a closed order's QR cannot pay it: the channel knows it is closed.
    let paid = gateway
        .client
        .post(format!("{pay_url}/confirm"))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 409);
    let unknown = gateway
        .client
        .post(format!("{}/sandbox/wallet/TNOPE/confirm", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_request_replays_the_original_and_a_different_one_conflicts() {
    let (_dir, merchant, gateway) = start(&[]).await;
    let order = qr_order("IDEM-1", "12.30", "alipay", "http://127.0.0.1:9/notify");
    let (_, first) = merchant
        .call(&gateway, "/api/payment/create", order.clone())
        .await;
    let (status, second) = merchant
        .call(&gateway, "/api/payment/create", order.clone())
        .await;
    assert_eq!(status, 200);
    assert_eq!(second["trade_no"], first["trade_no"]);
    assert_eq!(second["pay_url"], first["pay_url"]);
    let mut different = order.clone();
    different["total_amount"] = json!("12.31");
    let conflict = merchant
        .call(&gateway, "/api/payment/create", different)
        .await;
    assert_error(&conflict, 400, 1001, "OUT_TRADE_NO_CONFLICT");
    assert_eq!(gateway.count("SELECT COUNT(*) FROM orders"), 1);
    assert_eq!(gateway.count("SELECT total_fen FROM orders"), 1230);

    // A failed code payment replays as the same failure, and does not charge again.
    let failing = code_order("IDEM-2", "10.94", "wechat", "134567890123456789");
    let first = merchant
        .call(&gateway, "/api/payment/create", failing.clone())
        .await;
    assert_error(&first, 402, 1005, "INSUFFICIENT_BALANCE");
    assert_eq!(first.1["trade_status"], "FAILED");
    let replay = merchant
        .call(&gateway, "/api/payment/create", failing)
        .await;
    assert_error(&replay, 402, 1005, "INSUFFICIENT_BALANCE");
    assert_eq!(replay.1["trade_no"], first.1["trade_no"]);
    assert_eq!(gateway.count("SELECT COUNT(*) FROM orders"), 2);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_are_refused_with_their_sub_codes_and_store_nothing() {
    let (dir, merchant, gateway) = start(&[]).await;
    let order = qr_order("AUTH-1", "1.00", "alipay", "http://127.0.0.1:9/notify");
    let now = gateway.now().await;
    let signed = |merchant: &Merchant, timestamp: i64, nonce: &str| {
        let mut body = order.clone();
        body["merchant_id"] = json!(merchant.id);
        body["timestamp"] = json!(timestamp);
        body["nonce"] = json!(nonce);
        merchant.sign(&mut body);
        body
    };

    let (status, reply) = gateway.post_raw("/api/payment/create", "{not json").await;
    assert_error(&(status, reply), 400, 1001, "MALFORMED_JSON");
    let (status, reply) = gateway.post_raw("/api/payment/create", "[1, 2]").await;
    assert_error(&(status, reply), 400, 1001, "INVALID_PARAMETER");
    let (status, reply) = gateway
        .post_raw("/api/payment/create", vec![b' '; 70 * 1024])
        .await;
    assert_error(&(status, reply), 413, 1001, "BODY_TOO_LARGE");

    let stranger = Merchant {
        id: "M9999".into(),
        signer: Signer::Hmac("x".into()),
    };
    let (status, reply) = gateway
        .post_raw(
            "/api/payment/create",
            signed(&stranger, now, "n1").to_string(),
        )
        .await;
    assert_error(&(status, reply.clone()), 401, 1002, "MERCHANT_NOT_FOUND");
    assert!(
        reply.get("sign").is_none(),
        "unknown merchants get unsigned errors"
    );

    let mut unsigned = signed(&merchant, now, "n2");
    unsigned.as_object_mut().unwrap().remove("sign");
    let reply = gateway
        .post_raw("/api/payment/create", unsigned.to_string())
        .await;
    assert_error(&reply, 401, 1002, "SIGN_MISSING");
    assert!(
        merchant.verify(&reply.1),
        "errors to a known merchant are signed"
    );

    let mut tampered = signed(&merchant, now, "n3");
    tampered["total_amount"] = json!("1000.00");
    let reply = gateway
        .post_raw("/api/payment/create", tampered.to_string())
        .await;
    assert_error(&reply, 401, 1002, "SIGN_INVALID");

    let wrong_key = Merchant {
        id: merchant.id.clone(),
        signer: Signer::Hmac("not-the-secret".into()),
    };
    let reply = gateway
        .post_raw(
            "/api/payment/create",
            signed(&wrong_key, now, "n4").to_string(),
        )
        .await;
    assert_error(&reply, 401, 1002, "SIGN_INVALID");

    // Algorithm substitution: a validly RSA-signed request for an HMAC merchant.
    let rsa_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let substitute = Merchant {
        id: merchant.id.clone(),
        signer: Signer::Rsa {
            gateway_key: Box::new(rsa_key.to_public_key()),
            merchant_key: Box::new(rsa_key),
        },
    };
    let mut body = order.clone();
    body["merchant_id"] = json!(merchant.id);
    body["timestamp"] = json!(now);
    body["sign_type"] = json!("RSA-SHA256");
    substitute.sign(&mut body);
    let reply = gateway
        .post_raw("/api/payment/create", body.to_string())
        .await;
    assert_error(&reply, 401, 1002, "SIGN_TYPE_MISMATCH");

    // Timestamp window: 300 s either way is in, 301 s is out.
    for skew in [-301_000, 301_000] {
        let reply = gateway
            .post_raw(
                "/api/payment/create",
                signed(&merchant, now + skew, &fresh_nonce()).to_string(),
            )
            .await;
        assert_error(&reply, 401, 1002, "TIMESTAMP_OUT_OF_WINDOW");
    }
    assert_eq!(gateway.count("SELECT COUNT(*) FROM orders"), 0);
    assert_eq!(
        gateway.count_in("nonces.sqlite", "SELECT COUNT(*) FROM nonces"),
        0,
        "no nonce stored for refused requests"
    );

    let accepted = gateway
        .post_raw(
            "/api/payment/create",
            signed(&merchant, now - 300_000, "once").to_string(),
        )
        .await;
    assert_eq!(accepted.0, 200, "{}", accepted.1);
    // The same nonce again, even with a new timestamp and signature, is a replay.
    gateway.advance(1_000).await;
    let replay = gateway
        .post_raw(
            "/api/payment/create",
            signed(&merchant, now + 1_000, "once").to_string(),
        )
        .await;
    assert_error(&replay, 401, 1002, "NONCE_REPLAYED");
    assert_eq!(gateway.count("SELECT COUNT(*) FROM orders"), 1);

    // Wrong or missing operator token.
    let response = gateway
        .client
        .get(format!("{}/admin/orders/x", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = gateway
        .client
        .get(format!("{}/admin/orders/x", gateway.base))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    drop(dir);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_merchants_sign_with_rsa_and_get_replies_signed_by_the_gateway_key() {
    let dir = tempfile::tempdir().unwrap();
    let merchant = rsa_merchant(dir.path(), "MRSA");
    let gateway = Gateway::start(dir.path(), START_MS, &[]).await;
    let mut order = qr_order("RSA-1", "3.33", "unionpay", "http://127.0.0.1:9/notify");
    order["sign_type"] = json!("RSA-SHA256");
    let (status, created) = merchant.call(&gateway, "/api/payment/create", order).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["sign_type"], "RSA-SHA256");

    // An HMAC-signed request for an RSA merchant is refused, whatever key it used.
    let hmac_attempt = Merchant {
        id: "MRSA".into(),
        signer: Signer::Hmac(String::new()),
    };
    let mut body = qr_order("RSA-2", "3.33", "unionpay", "http://127.0.0.1:9/notify");
    body["merchant_id"] = json!("MRSA");
    body["timestamp"] = json!(gateway.now().await);
    body["sign_type"] = json!("HMAC-SHA256");
    hmac_attempt.sign(&mut body);
    let reply = gateway
        .post_raw("/api/payment/create", body.to_string())
        .await;
    assert_error(&reply, 401, 1002, "SIGN_TYPE_MISMATCH");
    body.as_object_mut().unwrap().remove("sign_type");
    hmac_attempt.sign(&mut body);
    let reply = gateway
        .post_raw("/api/payment/create", body.to_string())
        .await;
    assert_error(&reply, 401, 1002, "SIGN_INVALID");
    assert_eq!(gateway.count("SELECT COUNT(*) FROM orders"), 1);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_parameters_are_refused_with_their_sub_codes() {
    let (_dir, merchant, gateway) = start(&[]).await;
    let base = qr_order("P-1", "1.00", "alipay", "http://127.0.0.1:9/notify");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("total_amount", json!("1.234"), "INVALID_AMOUNT"),
        ("total_amount", json!("0.00"), "INVALID_AMOUNT"),
        ("total_amount", json!("-1"), "INVALID_AMOUNT"),
        ("total_amount", json!(""), "MISSING_PARAMETER"),
        ("subject", Value::Null, "MISSING_PARAMETER"),
        ("pay_type", json!("paypal"), "INVALID_PAY_TYPE"),
        ("currency", json!("USD"), "UNSUPPORTED_CURRENCY"),
        (
            "notify_url",
            json!("http://evil.example.com/steal"),
            "NOTIFY_HOST_NOT_ALLOWED",
        ),
        (
            "notify_url",
            json!("ftp://127.0.0.1/x"),
            "INVALID_NOTIFY_URL",
        ),
        ("out_trade_no", json!("has space"), "INVALID_PARAMETER"),
        ("auth_code", json!("123"), "INVALID_AUTH_CODE"),
    ];
    for (key, value, sub_code) in cases {
        let mut body = base.clone();
        body[key] = value.clone();
        let reply = merchant.call(&gateway, "/api/payment/create", body).await;
        assert_error(&reply, 400, 1001, sub_code);
    }
    // A float amount has no canonical text: refused before anything else, unsigned.
    let mut float = base.clone();
    float["merchant_id"] = json!("M1001");
    float["timestamp"] = json!(gateway.now().await);
    float["total_amount"] = json!(12.5);
    float["sign"] = json!("00");
    assert_error(
        &gateway
            .post_raw("/api/payment/create", float.to_string())
            .await,
        400,
        1001,
        "INVALID_PARAMETER",
    );
    let mut card = base.clone();
    card["pay_type"] = json!("card");
    assert_error(
        &merchant.call(&gateway, "/api/payment/create", card).await,
        400,
        1001,
        "AUTH_CODE_REQUIRED",
    );
    assert_eq!(gateway.count("SELECT COUNT(*) FROM orders"), 0);

    assert_error(
        &merchant
            .call(
                &gateway,
                "/api/payment/query",
                json!({"out_trade_no": "NOPE"}),
            )
            .await,
        404,
        1003,
        "ORDER_NOT_FOUND",
    );
    assert_error(
        &merchant
            .call(&gateway, "/api/payment/query", json!({}))
            .await,
        400,
        1001,
        "MISSING_PARAMETER",
    );
    assert_error(
        &merchant
            .call(
                &gateway,
                "/api/payment/close",
                json!({"out_trade_no": "NOPE"}),
            )
            .await,
        404,
        1003,
        "ORDER_NOT_FOUND",
    );
    assert_error(
        &merchant
            .call(
                &gateway,
                "/api/payment/refund/query",
                json!({"out_refund_no": "NOPE"}),
            )
            .await,
        404,
        1003,
        "REFUND_NOT_FOUND",
    );
    let (status, reply) = gateway.post_raw("/api/payment/nope", "{}").await;
    assert_error(&(status, reply), 404, 1003, "NOT_FOUND");
    let response = gateway
        .client
        .get(format!("{}/api/payment/create", gateway.base))
        .send()
        .await
        .unwrap();
    let reply = (
        response.status().as_u16(),
        response.json::<Value>().await.unwrap(),
    );
    assert_error(&reply, 405, 1001, "METHOD_NOT_ALLOWED");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_partial_multiple_idempotent_and_never_above_paid() {
    let (_dir, merchant, gateway) = start(&[]).await;
    let (status, paid) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            code_order("R-1", "100.00", "alipay", "2845678901234567"),
        )
        .await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["trade_status"], "SUCCESS");
    let trade_no = paid["trade_no"].as_str().unwrap().to_owned();
    let refund = |out_refund_no: &str, amount: &str| json!({"out_trade_no": "R-1", "out_refund_no": out_refund_no, "refund_amount": amount, "refund_reason": "return"});

    let (status, first) = merchant
        .call(&gateway, "/api/payment/refund", refund("RF-1", "30.00"))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["refund_status"], "SUCCESS");
    assert_eq!(first["refund_amount"], "30.00");
    let (_, queried) = merchant
        .call(
            &gateway,
            "/api/payment/query",
            json!({"out_trade_no": "R-1"}),
        )
        .await;
    assert_eq!(queried["trade_status"], "REFUND");
    assert_eq!(queried["refund_amount"], "30.00");

    // Replay returns the same refund; the same number with another amount conflicts.
    let (_, replay) = merchant
        .call(&gateway, "/api/payment/refund", refund("RF-1", "30.00"))
        .await;
    assert_eq!(replay["refund_no"], first["refund_no"]);
    assert_error(
        &merchant
            .call(&gateway, "/api/payment/refund", refund("RF-1", "31.00"))
            .await,
        400,
        1001,
        "OUT_REFUND_NO_CONFLICT",
    );

    // 69.99 + 0.01 reaches the paid amount exactly; one fen more is refused.
    assert_eq!(
        merchant
            .call(&gateway, "/api/payment/refund", refund("RF-2", "69.99"))
            .await
            .1["refund_status"],
        "SUCCESS"
    );
    let over = merchant
        .call(&gateway, "/api/payment/refund", refund("RF-3", "0.02"))
        .await;
    assert_error(&over, 409, 1004, "REFUND_EXCEEDS_PAID");
    assert_eq!(
        merchant
            .call(&gateway, "/api/payment/refund", refund("RF-4", "0.01"))
            .await
            .1["refund_status"],
        "SUCCESS"
    );
    assert_error(
        &merchant
            .call(&gateway, "/api/payment/refund", refund("RF-5", "0.01"))
            .await,
        409,
        1004,
        "REFUND_EXCEEDS_PAID",
    );

    let (_, looked_up) = merchant
        .call(
            &gateway,
            "/api/payment/refund/query",
            json!({"out_refund_no": "RF-2"}),
        )
        .await;
    assert_eq!(looked_up["refund_amount"], "69.99");
    assert_eq!(looked_up["refund_status"], "SUCCESS");
    assert_eq!(looked_up["out_trade_no"], "R-1");

    let order = gateway.order(&trade_no).await;
    assert_eq!(
        (order["paid_fen"].as_i64(), order["refunded_fen"].as_i64()),
        (Some(10_000), Some(10_000))
    );
    assert_eq!(order["refunds"].as_array().unwrap().len(), 3);
    assert_eq!(gateway.count("SELECT COUNT(*) FROM refunds"), 3);
    assert_eq!(
        gateway.count("SELECT SUM(amount_fen) FROM refunds WHERE state = 'SUCCESS'"),
        10_000
    );

    // Unpaid orders cannot be refunded.
    merchant
        .call(
            &gateway,
            "/api/payment/create",
            qr_order("R-2", "5", "alipay", "http://127.0.0.1:9/n"),
        )
        .await;
    let unpaid = merchant
        .call(&gateway, "/api/payment/refund", json!({"out_trade_no": "R-2", "out_refund_no": "RF-9", "refund_amount": "1", "refund_reason": "x"}))
        .await;
    assert_error(&unpaid, 409, 1004, "ORDER_NOT_PAID");
    assert_eq!(gateway.count("SELECT COUNT(*) FROM refunds"), 3);

    // The bill nets to zero for this trade: a payment and three refunds.
    let date = &queried["pay_time"].as_str().unwrap()[..10];
    let (_, bill) = gateway
        .admin_get(&format!("/admin/channels/alipay/bill?date={date}"))
        .await;
    let bill = bill.as_str().unwrap().to_owned();
    assert_eq!(
        bill.lines()
            .filter(|line| line.contains(",REFUND,"))
            .count(),
        3,
        "{bill}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_payments_follow_the_rails_rule() {
    let (_dir, merchant, gateway) = start(&[]).await;
    // Declined: 1005, and the code is burnt even though nothing was charged.
    let declined = merchant
        .call(
            &gateway,
            "/api/payment/create",
            code_order("C-1", "1.94", "wechat", "104567890123456789"),
        )
        .await;
    assert_error(&declined, 402, 1005, "INSUFFICIENT_BALANCE");
    let reused = merchant
        .call(
            &gateway,
            "/api/payment/create",
            code_order("C-2", "1.00", "wechat", "104567890123456789"),
        )
        .await;
    assert_error(&reused, 400, 1001, "AUTH_CODE_USED");
    assert_eq!(reused.1["trade_status"], "FAILED");

    // The user confirms after a think time: polled every 5 s until SUCCESS.
    let (_, confirming) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            code_order("C-3", "2.91", "alipay", "2545678901234567"),
        )
        .await;
    assert_eq!(confirming["trade_status"], "PAYING");
    let confirming_no = confirming["trade_no"].as_str().unwrap().to_owned();
    // The user never confirms: reversed at 60 s.
    let (_, never) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            code_order("C-4", "3.92", "unionpay", "6212345678901234567"),
        )
        .await;
    let never_no = never["trade_no"].as_str().unwrap().to_owned();
    // The answer was lost after the channel charged: the first poll finds SUCCESS.
    let (_, unknown) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            code_order("C-5", "4.93", "card", "tok4242424242424242"),
        )
        .await;
    assert_eq!(unknown["trade_status"], "PAYING");
    let unknown_no = unknown["trade_no"].as_str().unwrap().to_owned();
    // Charged, answer lost, queries and the first reverse unanswered: the second reverse
    // refunds the late payment.
    let (_, silent) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            code_order("C-6", "5.95", "wechat", "114567890123456789"),
        )
        .await;
    let silent_no = silent["trade_no"].as_str().unwrap().to_owned();

    let closing = merchant
        .call(
            &gateway,
            "/api/payment/close",
            json!({"out_trade_no": "C-4"}),
        )
        .await;
    assert_error(&closing, 409, 1004, "ORDER_PAYING");
    assert_eq!(closing.1["retryable"], true);

    let start = gateway.now().await;
    // Step through the rail schedule 5 s at a time, waiting each time until the rail worker has
    // moved every still-PAYING order's next step past the new time.
    for step in 1..=14 {
        gateway.advance_to(start + step * 5_000).await;
        let now = start + step * 5_000;
        for trade_no in [&confirming_no, &never_no, &unknown_no, &silent_no] {
            gateway
                .wait_order(trade_no, |o| {
                    o["state"] != "PAYING" || o["rail_next_at_ms"].as_i64().unwrap() > now
                })
                .await;
        }
    }
    let unknown = gateway.order(&unknown_no).await;
    assert_eq!(unknown["state"], "SUCCESS");
    assert_eq!(unknown["paid_fen"], 493);
    let confirmed = gateway.order(&confirming_no).await;
    assert_eq!(
        confirmed["state"], "SUCCESS",
        "think time is at most 20 s: {confirmed}"
    );
    let never = gateway.order(&never_no).await;
    assert_eq!(never["state"], "REVOKED");
    assert_eq!(never["paid_fen"], 0);
    let silent = gateway.order(&silent_no).await;
    assert_eq!(silent["state"], "REVOKED");
    assert_eq!(silent["paid_fen"], 0);

    let (_, queried) = merchant
        .call(
            &gateway,
            "/api/payment/query",
            json!({"out_trade_no": "C-6"}),
        )
        .await;
    assert_eq!(queried["trade_status"], "REVOKED");
    let date = lanepay_gateway::money::format_beijing_time(start);
    let (_, bill) = gateway
        .admin_get(&format!("/admin/channels/wechat/bill?date={}", &date[..10]))
        .await;
    let bill = bill.as_str().unwrap().to_owned();
    assert!(
        bill.contains(&format!("wechat,{silent_no},PAY,{silent_no},5.95,")),
        "{bill}"
    );
    assert!(
        bill.contains(&format!(
            "wechat,{silent_no},REVERSE_REFUND,{silent_no},-5.95,"
        )),
        "{bill}"
    );
    assert!(
        !bill.contains(&never_no),
        "nothing was charged for the never-confirmed payment: {bill}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_channel_is_1006_and_leaves_nothing_behind() {
    let (_dir, merchant, gateway) = start(&[]).await;
    let unreachable = merchant
        .call(
            &gateway,
            "/api/payment/create",
            code_order("U-1", "8.96", "alipay", "2645678901234567"),
        )
        .await;
    assert_error(&unreachable, 503, 1006, "CHANNEL_UNAVAILABLE");
    assert_eq!(unreachable.1["retryable"], true);
    assert_eq!(gateway.count("SELECT COUNT(*) FROM orders"), 0);
    // Nothing reached the channel, so the code is still good and the number is free again.
    let (status, paid) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            code_order("U-1", "8.00", "alipay", "2645678901234567"),
        )
        .await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["trade_status"], "SUCCESS");
    assert_eq!(gateway.count("SELECT paid_fen FROM orders"), 800);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_sandbox_seed_replays_the_same_fates() {
    let config = json!({"seed": 7, "channels": {"wechat": {
        "confirm_percent": 50, "never_confirm_percent": 50, "unknown_percent": 20, "decline_percent": 20
    }}});
    let mut runs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("sandbox.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let merchant = hmac_merchant(dir.path(), "M1001");
        let gateway = Gateway::start(
            dir.path(),
            START_MS,
            &["--sandbox-config", config_path.to_str().unwrap()],
        )
        .await;
        let mut fates = Vec::new();
        for i in 0..16 {
            let code = format!("1345678901234567{i:02}");
            let (_, reply) = merchant
                .call(
                    &gateway,
                    "/api/payment/create",
                    code_order(&format!("S-{i}"), &format!("{}.00", i + 1), "wechat", &code),
                )
                .await;
            fates.push(format!("{}/{}", reply["trade_status"], reply["sub_code"]));
        }
        gateway.stop().await;
        runs.push(fates);
    }
    assert_eq!(runs[0], runs[1], "same seed, same inputs, same outcomes");
    let distinct: std::collections::BTreeSet<_> = runs[0].iter().collect();
    assert!(
        distinct.len() >= 3,
        "the knobs should mix outcomes: {:?}",
        runs[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_payment_cut_off_by_kill_9_is_resolved_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let merchant = hmac_merchant(dir.path(), "M1001");
    // A slow channel keeps the pay request in flight long enough to kill the gateway under it.
    let config_path = dir.path().join("slow.json");
    std::fs::write(
        &config_path,
        json!({"channels": {"alipay": {"latency_ms": 10_000}}}).to_string(),
    )
    .unwrap();
    let mut gateway = Gateway::start(
        dir.path(),
        START_MS,
        &["--sandbox-config", config_path.to_str().unwrap()],
    )
    .await;
    let mut body = code_order("K-1", "6.00", "alipay", "2745678901234567");
    body["merchant_id"] = json!("M1001");
    body["timestamp"] = json!(gateway.now().await);
    merchant.sign(&mut body);
    let (client, url) = (
        gateway.client.clone(),
        format!("{}/api/payment/create", gateway.base),
    );
    let in_flight =
        tokio::spawn(async move { client.post(url).body(body.to_string()).send().await.is_ok() });

    // The order is stored as PAYING before the channel is called: wait for that, then kill -9.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while gateway.count("SELECT COUNT(*) FROM orders WHERE state = 'PAYING'") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the order was never stored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gateway.child.start_kill().unwrap();
    gateway.child.wait().await.unwrap();
    assert!(!in_flight.await.unwrap(), "the caller never got an answer");

    let gateway = Gateway::start(dir.path(), START_MS, &[]).await;
    let trade_no: String = rusqlite::Connection::open(dir.path().join("gateway.sqlite"))
        .unwrap()
        .query_row("SELECT trade_no FROM orders", [], |row| row.get(0))
        .unwrap();
    for step in 1..=13 {
        let now = START_MS + step * 5_000;
        gateway.advance_to(now).await;
        gateway
            .wait_order(&trade_no, |o| {
                o["state"] != "PAYING" || o["rail_next_at_ms"].as_i64().unwrap() > now
            })
            .await;
    }
    let order = gateway.order(&trade_no).await;
    let state = order["state"].as_str().unwrap().to_owned();
    assert!(
        state == "REVOKED" || state == "SUCCESS",
        "resolved, not stuck: {order}"
    );
    // Whatever happened at the channel, its bill and the gateway agree to the fen.
    let date = lanepay_gateway::money::format_beijing_time(START_MS);
    let (_, bill) = gateway
        .admin_get(&format!("/admin/channels/alipay/bill?date={}", &date[..10]))
        .await;
    let net_fen: i64 = bill
        .as_str()
        .unwrap()
        .lines()
        .filter(|line| line.contains(&trade_no))
        .map(|line| {
            lanepay_gateway::money::parse_yuan(
                line.split(',').nth(4).unwrap().trim_start_matches('-'),
            )
            .unwrap()
                * if line.contains(",PAY,") { 1 } else { -1 }
        })
        .sum();
    assert_eq!(net_fen, order["paid_fen"].as_i64().unwrap(), "{bill}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_refund_stays_reserved_and_is_retried_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let merchant = hmac_merchant(dir.path(), "M1001");
    let gateway = Gateway::start(dir.path(), START_MS, &[]).await;
    let (_, paid) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            code_order("RR-1", "50.00", "wechat", "154567890123456789"),
        )
        .await;
    let trade_no = paid["trade_no"].as_str().unwrap().to_owned();
    let refund = json!({"out_trade_no": "RR-1", "out_refund_no": "RRF-1", "refund_amount": "20.97", "refund_reason": "r"});
    let (status, processing) = merchant
        .call(&gateway, "/api/payment/refund", refund.clone())
        .await;
    assert_eq!(status, 200, "{processing}");
    assert_eq!(processing["refund_status"], "PROCESSING");
    // Reserved: only 29.03 is left to refund while the answer is unknown.
    let over = merchant
        .call(&gateway, "/api/payment/refund", json!({"out_trade_no": "RR-1", "out_refund_no": "RRF-2", "refund_amount": "29.04", "refund_reason": "r"}))
        .await;
    assert_error(&over, 409, 1004, "REFUND_EXCEEDS_PAID");
    assert_eq!(gateway.order(&trade_no).await["refunded_fen"], 2097);

    let now = gateway.now().await;
    gateway.stop().await;
    let gateway = Gateway::start(dir.path(), now, &[]).await;
    gateway.advance(10_000).await;
    let order = gateway
        .wait_order(&trade_no, |o| o["refunds"][0]["state"] == "SUCCESS")
        .await;
    assert_eq!(order["state"], "REFUND");
    assert_eq!(order["refunded_fen"], 2097);
    let (_, done) = merchant
        .call(
            &gateway,
            "/api/payment/refund/query",
            json!({"out_refund_no": "RRF-1"}),
        )
        .await;
    assert_eq!(done["refund_status"], "SUCCESS");
    // The channel refunded once, although it was asked twice.
    let date = lanepay_gateway::money::format_beijing_time(START_MS);
    let (_, bill) = gateway
        .admin_get(&format!("/admin/channels/wechat/bill?date={}", &date[..10]))
        .await;
    let refunds: Vec<&str> = bill
        .as_str()
        .unwrap()
        .lines()
        .filter(|line| line.contains(",REFUND,"))
        .collect();
    assert_eq!(refunds.len(), 1, "{bill}");
    assert!(refunds[0].contains(",-20.97,"), "{bill}");
    gateway.stop().await;
}

/// Asserts the attempt log matches the schedule: at once, then 15 s, 15 s, 30 s, 2 m, ...
fn assert_schedule(notify: &Value, created_at_ms: i64) {
    let offsets: Vec<i64> = notify["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["at_ms"].as_i64().unwrap() - created_at_ms)
        .collect();
    let expected = [
        0, 15_000, 30_000, 60_000, 180_000, 780_000, 2_580_000, 6_180_000, 13_380_000, 34_980_000,
        78_180_000,
    ];
    assert_eq!(offsets, expected[..offsets.len()], "{notify}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_follows_the_schedule_through_failures_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let merchant = hmac_merchant(dir.path(), "M1001");
    let shop = MerchantServer::start(4).await;
    let gateway = Gateway::start(dir.path(), START_MS, &[]).await;
    let (_, created) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            qr_order("N-1", "9.99", "alipay", &shop.url),
        )
        .await;
    let trade_no = created["trade_no"].as_str().unwrap().to_owned();
    gateway
        .client
        .get(created["pay_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let paid = gateway
        .client
        .post(format!("{}/confirm", created["pay_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    let notify_id = format!("N{trade_no}SUCCESS");

    let notify = gateway
        .wait_notify(&notify_id, |n| n["attempts"] == 1)
        .await;
    let created_at = notify["created_at_ms"].as_i64().unwrap();
    gateway
        .advance_to(notify["next_at_ms"].as_i64().unwrap())
        .await;
    let notify = gateway
        .wait_notify(&notify_id, |n| n["attempts"] == 2)
        .await;
    assert_eq!(notify["state"], "PENDING");

    // Restart in the middle of the schedule: the pending notify resumes from the database.
    let now = gateway.now().await;
    gateway.stop().await;
    let gateway = Gateway::start(dir.path(), now, &[]).await;
    for attempts in 3..=5 {
        let next = gateway
            .wait_notify(&notify_id, |n| n["attempts"] == attempts - 1)
            .await["next_at_ms"]
            .as_i64()
            .unwrap();
        gateway.advance_to(next).await;
        gateway
            .wait_notify(&notify_id, |n| n["attempts"] == attempts)
            .await;
    }
    let notify = gateway
        .wait_notify(&notify_id, |n| n["state"] == "DELIVERED")
        .await;
    assert_eq!(notify["attempts"], 5);
    assert!(notify["next_at_ms"].is_null());
    assert_schedule(&notify, created_at);
    let received = shop.received();
    assert_eq!(received.len(), 5);
    for body in &received {
        assert_eq!(body["notify_id"], notify_id, "the notify id is stable");
        assert!(merchant.verify(body), "{body}");
    }
    assert_eq!(gateway.count("SELECT COUNT(*) FROM notify_attempts"), 5);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_gives_up_after_24_hours_and_an_operator_can_resend() {
    let (_dir, merchant, gateway) = start(&[]).await;
    let shop = MerchantServer::start(usize::MAX).await;
    let (_, paid) = merchant
        .call(&gateway, "/api/payment/create", {
            let mut order = code_order("G-1", "7.00", "alipay", "3045678901234567");
            order["notify_url"] = json!(shop.url);
            order
        })
        .await;
    assert_eq!(paid["trade_status"], "SUCCESS");
    let notify_id = format!("N{}SUCCESS", paid["trade_no"].as_str().unwrap());
    let mut notify = gateway
        .wait_notify(&notify_id, |n| n["attempts"] == 1)
        .await;
    let created_at = notify["created_at_ms"].as_i64().unwrap();
    while notify["state"] == "PENDING" {
        let attempts = notify["attempts"].as_i64().unwrap();
        gateway
            .advance_to(notify["next_at_ms"].as_i64().unwrap())
            .await;
        notify = gateway
            .wait_notify(&notify_id, |n| n["attempts"] == attempts + 1)
            .await;
    }
    assert_eq!(notify["state"], "GAVE_UP");
    assert_eq!(notify["attempts"], 11);
    assert_schedule(&notify, created_at);
    assert!(gateway.now().await - created_at < 24 * 3_600_000);
    // Nothing more happens, however long we wait.
    gateway.advance(48 * 3_600_000).await;
    assert_eq!(shop.received().len(), 11);

    *shop.failures.lock().unwrap() = 0;
    let (status, resent) = gateway
        .admin_post(&format!("/admin/notifies/{notify_id}/resend"))
        .await;
    assert_eq!(status, 200, "{resent}");
    let notify = gateway
        .wait_notify(&notify_id, |n| n["state"] == "DELIVERED")
        .await;
    assert_eq!(notify["attempts"], 12);
    assert_eq!(shop.received().len(), 12);
    let (status, missing) = gateway.admin_post("/admin/notifies/NOPE/resend").await;
    assert_eq!(status, 404, "{missing}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_orders_close_on_timeout_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let merchant = hmac_merchant(dir.path(), "M1001");
    let gateway = Gateway::start(dir.path(), START_MS, &["--order-timeout-secs", "600"]).await;
    let (_, scanned) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            qr_order("TO-1", "1.00", "wechat", "http://127.0.0.1:9/n"),
        )
        .await;
    gateway
        .client
        .get(scanned["pay_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let (_, unscanned) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            qr_order("TO-2", "2.00", "alipay", "http://127.0.0.1:9/n"),
        )
        .await;
    let (_, paid) = merchant
        .call(
            &gateway,
            "/api/payment/create",
            qr_order("TO-3", "3.00", "alipay", "http://127.0.0.1:9/n"),
        )
        .await;
    gateway
        .client
        .post(format!("{}/confirm", paid["pay_url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();

    gateway.advance(599_000).await;
    let now = gateway.now().await;
    gateway.stop().await;
    let gateway = Gateway::start(dir.path(), now, &["--order-timeout-secs", "600"]).await;
    let (_, queried) = merchant
        .call(
            &gateway,
            "/api/payment/query",
            json!({"out_trade_no": "TO-1"}),
        )
        .await;
    assert_eq!(queried["trade_status"], "WAIT_PAY");
    gateway.advance(1_000).await;
    for created in [&scanned, &unscanned] {
        gateway
            .wait_order(created["trade_no"].as_str().unwrap(), |o| {
                o["state"] == "CLOSED"
            })
            .await;
    }
    assert_eq!(
        gateway.order(paid["trade_no"].as_str().unwrap()).await["state"],
        "SUCCESS"
    );
    // Closed at the channel too: the QR can no longer be paid.
    // (pay_url names the first process's port; --public-url would pin it in production.)
    let late = gateway
        .client
        .post(format!(
            "{}/sandbox/wallet/{}/confirm",
            gateway.base,
            scanned["trade_no"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 409);
    let (_, queried) = merchant
        .call(
            &gateway,
            "/api/payment/query",
            json!({"out_trade_no": "TO-2"}),
        )
        .await;
    assert_eq!(queried["trade_status"], "CLOSED");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_describes_every_endpoint() {
    let (_dir, _merchant, gateway) = start(&[]).await;
    let document: Value = gateway
        .client
        .get(format!("{}/openapi.json", gateway.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/payment/create",
        "/api/payment/query",
        "/api/payment/refund",
        "/api/payment/refund/query",
        "/api/payment/close",
        "/sandbox/wallet/{trade_no}",
        "/sandbox/wallet/{trade_no}/confirm",
        "/sandbox/wallet/{trade_no}/decline",
        "/admin/notifies/{notify_id}/resend",
        "/admin/channels/{pay_type}/bill",
    ] {
        assert!(document["paths"][path].is_object(), "{path} missing");
    }
    gateway.stop().await;
}
