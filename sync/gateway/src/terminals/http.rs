//! The terminal and HQ endpoints over HTTP and WebSocket: enrollment, signed journal batches,
//! the live channel, and the fleet view.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lanepay_sync::auth::{self, RequestAuth};
use lanepay_sync::config::CONFIG_PATH;
use lanepay_sync::wire::{
    CommandRequest, ENROLL_PATH, EnrollRequest, JOURNAL_PATH, JournalBatch, MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES, WS_PATH, WsFrame,
};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::service::{ConfigInput, TerminalError, TerminalService};

/// An enrollment request is a few hundred bytes.
const MAX_ENROLL_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct TerminalState {
    pub service: Arc<TerminalService>,
    /// HQ endpoints need `Authorization: Bearer` with this token; disabled without one.
    pub admin_token: Option<String>,
}

impl std::fmt::Debug for TerminalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalState")
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

fn terminal_error(failure: &TerminalError) -> Response {
    if failure.status() >= 500 {
        tracing::error!(error = %failure, "terminal request failed");
    } else {
        tracing::warn!(error = %failure, "terminal request refused");
    }
    error(failure.status(), failure.code(), &failure.to_string())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TerminalError> + Send + 'static,
) -> Result<T, TerminalError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(TerminalError::Invalid(format!(
                "the request failed inside the gateway: {join}"
            )))
        })
}

pub(crate) fn request_auth(headers: &HeaderMap) -> Result<RequestAuth, TerminalError> {
    let get = |name: &'static str| -> Result<String, TerminalError> {
        headers
            .get(name)
            .ok_or(auth::AuthError::Missing(name))?
            .to_str()
            .map(str::to_string)
            .map_err(|_| auth::AuthError::Malformed(name).into())
    };
    Ok(RequestAuth {
        terminal_id: get(auth::header::TERMINAL)?,
        timestamp_ms: get(auth::header::TIMESTAMP)?
            .parse()
            .map_err(|_| auth::AuthError::Malformed(auth::header::TIMESTAMP))?,
        nonce: get(auth::header::NONCE)?,
        signature: get(auth::header::SIGNATURE)?,
    })
}

async fn enroll(State(state): State<TerminalState>, body: Bytes) -> Response {
    let request: EnrollRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                400,
                "bad_request",
                &format!("not an enrollment request: {e}"),
            );
        }
    };
    let service = state.service.clone();
    match blocking(move || service.enroll(&request)).await {
        Ok(response) => {
            tracing::info!(terminal = %response.terminal_id, store = %response.store_id, "terminal enrolled");
            axum::Json(response).into_response()
        }
        Err(e) => terminal_error(&e),
    }
}

async fn journal(State(state): State<TerminalState>, headers: HeaderMap, body: Bytes) -> Response {
    let auth = match request_auth(&headers) {
        Ok(auth) => auth,
        Err(e) => return terminal_error(&e),
    };
    let service = state.service.clone();
    let result = blocking(move || {
        let terminal = service.authenticate(&auth, "POST", JOURNAL_PATH, &body)?;
        let batch: JournalBatch = serde_json::from_slice(&body)
            .map_err(|e| TerminalError::Invalid(format!("not a journal batch: {e}")))?;
        if batch.entries.len() > MAX_BATCH_ENTRIES {
            return Err(TerminalError::Invalid(format!(
                "at most {MAX_BATCH_ENTRIES} entries per batch"
            )));
        }
        service.ingest(&terminal.terminal_id, &batch.entries)
    })
    .await;
    match result {
        Ok(result) => axum::Json(result).into_response(),
        Err(e) => terminal_error(&e),
    }
}

async fn live(
    State(state): State<TerminalState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let auth = match request_auth(&headers) {
        Ok(auth) => auth,
        Err(e) => return terminal_error(&e),
    };
    let service = state.service.clone();
    let terminal = match blocking(move || service.authenticate(&auth, "GET", WS_PATH, b"")).await {
        Ok(terminal) => terminal,
        Err(e) => return terminal_error(&e),
    };
    let service = state.service.clone();
    upgrade
        .max_message_size(MAX_BATCH_BYTES)
        .on_upgrade(move |socket| serve_live(socket, service, terminal.terminal_id))
}

async fn serve_live(mut socket: WebSocket, service: Arc<TerminalService>, terminal_id: String) {
    let mut registration = service.register_live(&terminal_id);
    loop {
        let message = tokio::select! {
            message = socket.recv() => message,
            pushed = registration.frames.recv() => {
                let Some(frame) = pushed else { break };
                let Ok(text) = serde_json::to_string(&frame) else { continue };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let Some(Ok(message)) = message else {
            break;
        };
        let Message::Text(text) = message else {
            continue;
        };
        let entries = match serde_json::from_str::<WsFrame>(text.as_str()) {
            Ok(WsFrame::Entries { entries }) if entries.len() <= MAX_BATCH_ENTRIES => entries,
            _ => {
                tracing::warn!(terminal = %terminal_id, "unreadable frame on the live channel; closing it");
                break;
            }
        };
        let worker = service.clone();
        let id = terminal_id.clone();
        let answer = match blocking(move || worker.ingest(&id, &entries)).await {
            Ok(result) => WsFrame::Result(result),
            Err(e) => {
                tracing::warn!(terminal = %terminal_id, error = %e, "live ingestion refused");
                break;
            }
        };
        let Ok(text) = serde_json::to_string(&answer) else {
            break;
        };
        if socket.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
    service.unregister_live(&terminal_id, registration.socket_id);
}

/// `None` when the caller is HQ; otherwise the refusal to send.
fn check_admin(state: &TerminalState, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &state.admin_token else {
        return Some(error(
            403,
            "disabled",
            "HQ endpoints are disabled: start serve with --admin-token",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b): ([u8; 32], [u8; 32]) = (
        Sha256::digest(presented).into(),
        Sha256::digest(expected).into(),
    );
    if a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0 {
        None
    } else {
        Some(error(
            401,
            "unauthorized",
            "wrong or missing admin bearer token",
        ))
    }
}

async fn fleet(State(state): State<TerminalState>, headers: HeaderMap) -> Response {
    if let Some(response) = check_admin(&state, &headers) {
        return response;
    }
    let service = state.service.clone();
    match blocking(move || Ok((service.fleet()?, service.alarms(None)?))).await {
        Ok((terminals, alarms)) => {
            let alarms: Vec<_> = alarms
                .iter()
                .map(|a| json!({"terminal_id": a.terminal_id, "seq": a.seq, "kind": a.kind, "detail": a.detail, "at_ms": a.at_ms}))
                .collect();
            axum::Json(json!({ "terminals": terminals, "alarms": alarms })).into_response()
        }
        Err(e) => terminal_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    store_id: String,
    merchant_id: String,
    valid_days: u32,
}

async fn create_token(
    State(state): State<TerminalState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = check_admin(&state, &headers) {
        return response;
    }
    let request: TokenRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                400,
                "bad_request",
                &format!("expected {{store_id, merchant_id, valid_days}}: {e}"),
            );
        }
    };
    let service = state.service.clone();
    match blocking(move || {
        service.create_token(&request.store_id, &request.merchant_id, request.valid_days)
    })
    .await
    {
        Ok(token) => axum::Json(json!({ "token": token })).into_response(),
        Err(e) => terminal_error(&e),
    }
}

async fn revoke(
    State(state): State<TerminalState>,
    headers: HeaderMap,
    Path(terminal_id): Path<String>,
) -> Response {
    if let Some(response) = check_admin(&state, &headers) {
        return response;
    }
    let service = state.service.clone();
    match blocking(move || service.revoke(&terminal_id)).await {
        Ok(()) => axum::Json(json!({ "revoked": true })).into_response(),
        Err(e) => terminal_error(&e),
    }
}

/// `GET /v1/terminal/config`: the terminal's store configuration, signed by the gateway.
async fn terminal_config(State(state): State<TerminalState>, headers: HeaderMap) -> Response {
    let auth = match request_auth(&headers) {
        Ok(auth) => auth,
        Err(e) => return terminal_error(&e),
    };
    let service = state.service.clone();
    match blocking(move || {
        let terminal = service.authenticate(&auth, "GET", CONFIG_PATH, b"")?;
        service.current_config(&terminal.store_id)
    })
    .await
    {
        Ok(signed) => axum::Json(signed).into_response(),
        Err(e) => terminal_error(&e),
    }
}

/// `GET /v1/hq/stores/{store_id}/config`: the configuration in force.
async fn show_store_config(
    State(state): State<TerminalState>,
    headers: HeaderMap,
    Path(store_id): Path<String>,
) -> Response {
    if let Some(response) = check_admin(&state, &headers) {
        return response;
    }
    let service = state.service.clone();
    match blocking(move || service.current_config(&store_id)).await {
        Ok(signed) => axum::Json(signed).into_response(),
        Err(e) => terminal_error(&e),
    }
}

/// `PUT /v1/hq/stores/{store_id}/config`: a new version, signed and pushed to live lanes.
async fn set_store_config(
    State(state): State<TerminalState>,
    headers: HeaderMap,
    Path(store_id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(response) = check_admin(&state, &headers) {
        return response;
    }
    let input: ConfigInput = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) => {
            return error(
                400,
                "bad_request",
                &format!("not a store configuration: {e}"),
            );
        }
    };
    let service = state.service.clone();
    match blocking(move || service.set_config(&store_id, &input)).await {
        Ok(signed) => axum::Json(signed).into_response(),
        Err(e) => terminal_error(&e),
    }
}

/// `POST /v1/hq/terminals/{terminal_id}/commands`: pushes a command to the lane now.
async fn send_command(
    State(state): State<TerminalState>,
    headers: HeaderMap,
    Path(terminal_id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(response) = check_admin(&state, &headers) {
        return response;
    }
    let request: CommandRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                400,
                "bad_request",
                &format!(
                    "expected {{\"command\": \"sync_now\" | \"forward_stored\" | \"reload_config\"}}: {e}"
                ),
            );
        }
    };
    let service = state.service.clone();
    let command = request.command;
    match blocking(move || service.send_command(&terminal_id, command)).await {
        Ok((id, delivered)) => axum::Json(json!({
            "id": id,
            "command": command.as_str(),
            "delivered": delivered > 0,
        }))
        .into_response(),
        Err(e) => terminal_error(&e),
    }
}

/// How often the gateway looks for configuration versions set by another process (the CLI).
pub const CONFIG_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Pushes configuration versions written by `lanepay-gateway config set` while this gateway
/// serves. Ends when the service is dropped (the server stopped).
async fn watch_configs(service: std::sync::Weak<TerminalService>) {
    let mut tick = tokio::time::interval(CONFIG_WATCH_INTERVAL);
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        if let Err(e) = blocking(move || service.push_new_configs()).await {
            tracing::warn!(error = %e, "checking for new store configurations failed");
        }
    }
}

/// Every answer carries the gateway's clock so lanes can measure their skew.
async fn server_time(State(state): State<TerminalState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&state.service.now_ms().to_string()) {
        response
            .headers_mut()
            .insert(auth::header::SERVER_TIME, value);
    }
    response
}

pub fn router(state: TerminalState) -> Router {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(watch_configs(Arc::downgrade(&state.service)));
    }
    Router::new()
        .route(
            ENROLL_PATH,
            post(enroll).layer(DefaultBodyLimit::max(MAX_ENROLL_BYTES)),
        )
        .route(
            JOURNAL_PATH,
            post(journal).layer(DefaultBodyLimit::max(MAX_BATCH_BYTES)),
        )
        .route(WS_PATH, get(live))
        .route("/v1/hq/terminals", get(fleet))
        .route(
            "/v1/hq/tokens",
            post(create_token).layer(DefaultBodyLimit::max(MAX_ENROLL_BYTES)),
        )
        .route("/v1/hq/terminals/{terminal_id}/revoke", post(revoke))
        .route(CONFIG_PATH, get(terminal_config))
        .route(
            "/v1/hq/stores/{store_id}/config",
            get(show_store_config)
                .put(set_store_config)
                .layer(DefaultBodyLimit::max(MAX_ENROLL_BYTES)),
        )
        .route(
            "/v1/hq/terminals/{terminal_id}/commands",
            post(send_command).layer(DefaultBodyLimit::max(MAX_ENROLL_BYTES)),
        )
        .layer(middleware::from_fn_with_state(state.clone(), server_time))
        .with_state(state)
}
