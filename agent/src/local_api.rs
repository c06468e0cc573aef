//! The local API: the lane's command/event interface as JSON over a WebSocket on loopback,
//! for POS software, tests and tools. Documented in `docs/local-api.md`.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use crate::api::{Command, CommandError, Event, Reply};
use crate::service::LaneHandle;

/// The largest message a client may send. Commands are small; this keeps a hostile client
/// from making the lane buffer megabytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Connected clients at once (the cashier screen, a POS program, a few tools).
pub const MAX_CLIENTS: usize = 16;

#[derive(Clone)]
struct ApiState {
    lane: LaneHandle,
    token_digest: [u8; 32],
    clients: Arc<tokio::sync::Semaphore>,
}

/// A message from a client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    id: u64,
    command: Command,
}

/// A message to a client: a reply to request `id`, or an event.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Outgoing<'a> {
    Reply {
        reply_to: Option<u64>,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<&'a Reply>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a CommandError>,
    },
    Event {
        event: &'a Event,
    },
}

/// Serves the local API on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    lane: LaneHandle,
    token: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = ApiState {
        lane,
        token_digest: Sha256::digest(token.as_bytes()).into(),
        clients: Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS)),
    };
    let app = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/ws", get(upgrade))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .with_state(state);
    // Replies and events are small frames written back to back: without TCP_NODELAY, Nagle's
    // algorithm meets the client's delayed ACK and each command waits about 40 ms.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn health(State(state): State<ApiState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok", "terminal_id": state.lane.terminal_id() }))
}

/// Compares digests so the comparison takes the same time whatever the token's prefix.
fn authorized(headers: &HeaderMap, expected: &[u8; 32]) -> bool {
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
    digest
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn upgrade(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !authorized(&headers, &state.token_digest) {
        return (
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token; see local_api.token in the lane's configuration",
        )
            .into_response();
    }
    let Ok(permit) = state.clients.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many local API clients; close one and retry",
        )
            .into_response();
    };
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            serve_client(socket, state.lane).await;
            drop(permit);
        })
}

async fn serve_client(mut socket: WebSocket, lane: LaneHandle) {
    let mut events = lane.subscribe();
    // A screen that connects now learns at once whether the lane is online, how much waits to
    // be sent, and so on, instead of showing "offline" until the link next changes.
    if let Some(status) = lane.last_sync_status() {
        let event = Event::SyncStatus(status);
        if send_json(&mut socket, &Outgoing::Event { event: &event })
            .await
            .is_err()
        {
            return;
        }
    }
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let outgoing = answer(&lane, text.as_str()).await;
                if send_json(&mut socket, &outgoing.as_outgoing()).await.is_err() {
                    return;
                }
            }
            event = events.recv() => {
                let event = match event {
                    Ok(event) => event,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "local API client too slow; events dropped");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                if send_json(&mut socket, &Outgoing::Event { event: &event }).await.is_err() {
                    return;
                }
            }
        }
    }
}

struct Answer {
    id: Option<u64>,
    result: Result<Reply, CommandError>,
}

impl Answer {
    fn as_outgoing(&self) -> Outgoing<'_> {
        match &self.result {
            Ok(reply) => Outgoing::Reply {
                reply_to: self.id,
                ok: true,
                result: Some(reply),
                error: None,
            },
            Err(error) => Outgoing::Reply {
                reply_to: self.id,
                ok: false,
                result: None,
                error: Some(error),
            },
        }
    }
}

async fn answer(lane: &LaneHandle, text: &str) -> Answer {
    match serde_json::from_str::<Request>(text) {
        Ok(request) => Answer {
            id: Some(request.id),
            result: lane.execute(request.command).await,
        },
        Err(error) => {
            // Echo the id when the envelope was readable, so the client can match the error.
            let id = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("id")?.as_u64());
            Answer {
                id,
                result: Err(CommandError::new(
                    "bad_request",
                    format!("not a valid request: {error}"),
                )),
            }
        }
    }
}

async fn send_json(socket: &mut WebSocket, value: &Outgoing<'_>) -> Result<(), ()> {
    let text = serde_json::to_string(value).map_err(|_| ())?;
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|_| ())
}
