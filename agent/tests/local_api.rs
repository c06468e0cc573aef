//! The local API over a real loopback WebSocket: authentication, replies matched to requests,
//! events pushed, and hostile input answered without harm.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use lanepay_agent::clock::ManualClock;
use lanepay_agent::lane::{Lane, LaneSettings};
use lanepay_agent::store::{self, Durability, catalog};
use lanepay_agent::{local_api, service};
use lanepay_config::AgentConfig;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const TOKEN: &str = "test-token-0123456789";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn start_lane(dir: &std::path::Path) -> String {
    start_lane_with_handle(dir).await.0
}

async fn start_lane_with_handle(dir: &std::path::Path) -> (String, service::LaneHandle) {
    let config = AgentConfig::new_default("T0001", "S001", "M1001", dir, TOKEN).unwrap();
    let conn = store::open(&store::db_path(dir), Durability::Full).unwrap();
    catalog::upsert(&conn, &catalog::demo_products()).unwrap();
    let lane = Lane::open(
        conn,
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        LaneSettings::from_config(&config),
    )
    .unwrap();
    let handle = service::start(lane, Arc::new(ManualClock::new(1_795_000_000_000))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(local_api::run(
        listener,
        handle.clone(),
        TOKEN.to_string(),
        std::future::pending(),
    ));
    (format!("ws://{address}/v1/ws"), handle)
}

async fn connect(url: &str, token: Option<&str>) -> Result<Socket, tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// Reads messages until the reply to `id`, collecting the events seen on the way.
async fn reply_to(socket: &mut Socket, id: u64) -> (Value, Vec<Value>) {
    let mut events = Vec::new();
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message.unwrap() else {
            continue;
        };
        let value: Value = serde_json::from_str(text.as_str()).unwrap();
        if let Some(event) = value.get("event") {
            events.push(event.clone());
        } else if value["reply_to"].as_u64() == Some(id) {
            return (value, events);
        }
    }
    panic!("connection closed before the reply to {id}");
}

async fn call(socket: &mut Socket, id: u64, command: Value) -> (Value, Vec<Value>) {
    socket
        .send(Message::text(
            json!({"id": id, "command": command}).to_string(),
        ))
        .await
        .unwrap();
    reply_to(socket, id).await
}

/// A client that connects after the uplink last spoke hears its status first, not only at
/// the next change (a screen opened while the lane is offline says so at once).
#[tokio::test]
async fn a_new_client_hears_the_last_sync_status_first() {
    let dir = tempfile::tempdir().unwrap();
    let (url, lane) = start_lane_with_handle(dir.path()).await;
    lane.publish(lanepay_agent::api::Event::SyncStatus(
        lanepay_agent::api::SyncStatusView {
            online: false,
            backlog: 7,
            problem_kind: "unreachable".into(),
            ..Default::default()
        },
    ));
    let mut screen = connect(&url, Some(TOKEN)).await.unwrap();
    let Message::Text(first) = screen.next().await.unwrap().unwrap() else {
        panic!("not a text message");
    };
    let first: Value = serde_json::from_str(first.as_str()).unwrap();
    assert_eq!(first["event"]["type"], "sync_status", "{first}");
    assert_eq!(first["event"]["online"], false);
    assert_eq!(first["event"]["backlog"], 7);
    assert_eq!(first["event"]["problem_kind"], "unreachable");
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = start_lane(dir.path()).await;
    for token in [None, Some("wrong-token-0123456789")] {
        match connect(&url, token).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("expected 401, got {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn commands_get_replies_and_subscribers_get_events() {
    let dir = tempfile::tempdir().unwrap();
    let url = start_lane(dir.path()).await;
    let mut cashier = connect(&url, Some(TOKEN)).await.unwrap();
    let mut watcher = connect(&url, Some(TOKEN)).await.unwrap();

    let (reply, _) = call(
        &mut cashier,
        1,
        json!({"type": "scan", "code": "6901234567892"}),
    )
    .await;
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["result"]["total"], "3.50");
    let (reply, events) = call(
        &mut cashier,
        2,
        json!({"type": "tender_cash", "amount": "10"}),
    )
    .await;
    assert_eq!(reply["result"]["completed"], true);
    assert_eq!(reply["result"]["change"], "6.50");
    assert_eq!(reply["result"]["journal_seq"], 1);
    assert!(events.iter().any(|e| e["type"] == "cart_changed"));

    // The other client saw the sale happen without asking.
    let (status, events) = call(&mut watcher, 7, json!({"type": "status"})).await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "sale_completed" && e["receipt_no"] == "T0001-000001")
    );
    assert_eq!(status["result"]["journal_last_seq"], 1);
    assert_eq!(status["result"]["outbox_len"], 1);
}

#[tokio::test]
async fn hostile_messages_get_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = start_lane(dir.path()).await;
    let mut socket = connect(&url, Some(TOKEN)).await.unwrap();

    socket.send(Message::text("{not json")).await.unwrap();
    let (reply, _) = reply_to_null(&mut socket).await;
    assert_eq!(reply["error"]["code"], "bad_request");

    socket
        .send(Message::text(
            json!({"id": 3, "command": {"type": "format_disk"}}).to_string(),
        ))
        .await
        .unwrap();
    let (reply, _) = reply_to(&mut socket, 3).await;
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"]["code"], "bad_request");

    let (reply, _) = call(
        &mut socket,
        4,
        json!({"type": "tender_cash", "amount": "-5"}),
    )
    .await;
    assert_eq!(reply["ok"], false);

    // Still usable after all that, and nothing reached the journal.
    let (status, _) = call(&mut socket, 5, json!({"type": "status"})).await;
    assert_eq!(status["result"]["journal_last_seq"], 0);

    // A message over the limit closes the connection instead of being buffered.
    let huge = "x".repeat(local_api::MAX_MESSAGE_BYTES + 1);
    let _ = socket.send(Message::text(huge)).await;
    let closed = loop {
        match socket.next().await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break true,
            Some(Ok(_)) => continue,
        }
    };
    assert!(closed);
}

async fn reply_to_null(socket: &mut Socket) -> (Value, Vec<Value>) {
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message.unwrap() else {
            continue;
        };
        let value: Value = serde_json::from_str(text.as_str()).unwrap();
        if value.get("reply_to").is_some() {
            return (value, Vec::new());
        }
    }
    panic!("closed")
}
