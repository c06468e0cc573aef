//! A small client for the lane's local API (JSON over WebSocket, `docs/local-api.md`): send a
//! command, skip the events, return the reply. It tells a lost connection (expected when a
//! test kills the lane) apart from a refusal or a malformed answer (a bug either way).

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why a command got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The lane went away (killed, crashed, or closed the socket).
    #[error("connection to the lane lost: {0}")]
    ConnectionLost(String),
    /// The lane answered `ok: false`.
    #[error("the lane refused {command}: {code}: {message}")]
    Refused {
        command: String,
        code: String,
        message: String,
    },
    /// The lane answered something the protocol does not allow.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

impl ApiError {
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, ApiError::ConnectionLost(_))
    }
}

fn classify(error: tungstenite::Error) -> ApiError {
    use tungstenite::error::ProtocolError;
    match error {
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Io(_)
        | tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ApiError::ConnectionLost(error.to_string())
        }
        other => ApiError::Protocol(other.to_string()),
    }
}

/// One local API connection. Requests are sent one at a time; each waits for its reply.
#[derive(Debug)]
pub struct LaneClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl LaneClient {
    /// Connects to `url` (`ws://127.0.0.1:PORT/v1/ws`) with the lane's bearer token.
    pub async fn connect(url: &str, token: &str) -> Result<LaneClient, ApiError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ApiError::Protocol(format!("bad local API address {url:?}: {e}")))?;
        let authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| ApiError::Protocol(format!("the token is not a header value: {e}")))?;
        request
            .headers_mut()
            .insert(tungstenite::http::header::AUTHORIZATION, authorization);
        let (socket, _response) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(classify)?;
        Ok(LaneClient { socket, next_id: 1 })
    }

    /// Sends `command` (an object with a `type`) and returns the reply's `result`.
    pub async fn request(&mut self, command: Value) -> Result<Value, ApiError> {
        let id = self.next_id;
        self.next_id += 1;
        let kind = command
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("command")
            .to_string();
        let text = json!({ "id": id, "command": command }).to_string();
        self.socket
            .send(Message::text(text))
            .await
            .map_err(classify)?;
        loop {
            let message = match self.socket.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Err(classify(error)),
                None => return Err(ApiError::ConnectionLost("the stream ended".into())),
            };
            let text = match message {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    return Err(ApiError::ConnectionLost(format!(
                        "the lane closed the socket: {frame:?}"
                    )));
                }
                // Pings are answered by tungstenite itself; nothing else carries replies.
                _ => continue,
            };
            let value: Value = serde_json::from_str(text.as_str())
                .map_err(|e| ApiError::Protocol(format!("not JSON ({e}): {text}")))?;
            if value.get("event").is_some() {
                continue;
            }
            if value.get("reply_to").and_then(Value::as_u64) != Some(id) {
                return Err(ApiError::Protocol(format!(
                    "expected the reply to request {id}, got {value}"
                )));
            }
            return match value.get("ok").and_then(Value::as_bool) {
                Some(true) => value
                    .get("result")
                    .cloned()
                    .ok_or_else(|| ApiError::Protocol(format!("ok reply without result: {value}"))),
                Some(false) => {
                    let error = value.get("error");
                    let field = |name: &str| {
                        error
                            .and_then(|e| e.get(name))
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_string()
                    };
                    Err(ApiError::Refused {
                        command: kind,
                        code: field("code"),
                        message: field("message"),
                    })
                }
                None => Err(ApiError::Protocol(format!("reply without ok: {value}"))),
            };
        }
    }

    /// The next unasked event (`{"event": …}`'s inside); replies are not expected while
    /// waiting for events and are a protocol violation.
    pub async fn next_event(&mut self) -> Result<Value, ApiError> {
        loop {
            let message = match self.socket.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Err(classify(error)),
                None => return Err(ApiError::ConnectionLost("the stream ended".into())),
            };
            let text = match message {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    return Err(ApiError::ConnectionLost(format!(
                        "the lane closed the socket: {frame:?}"
                    )));
                }
                _ => continue,
            };
            let value: Value = serde_json::from_str(text.as_str())
                .map_err(|e| ApiError::Protocol(format!("not JSON ({e}): {text}")))?;
            match value.get("event") {
                Some(event) => return Ok(event.clone()),
                None => return Err(ApiError::Protocol(format!("unasked reply: {value}"))),
            }
        }
    }

    /// Sends `command` and checks that the result has the reply type `expected_type`.
    pub async fn request_typed(
        &mut self,
        command: Value,
        expected_type: &str,
    ) -> Result<Value, ApiError> {
        let result = self.request(command).await?;
        match result.get("type").and_then(Value::as_str) {
            Some(found) if found == expected_type => Ok(result),
            _ => Err(ApiError::Protocol(format!(
                "expected a {expected_type:?} result, got {result}"
            ))),
        }
    }

    pub async fn scan(&mut self, code: &str) -> Result<Value, ApiError> {
        self.request_typed(json!({ "type": "scan", "code": code }), "cart")
            .await
    }

    pub async fn get_cart(&mut self) -> Result<Value, ApiError> {
        self.request_typed(json!({ "type": "get_cart" }), "cart")
            .await
    }

    /// Cash handed over, in yuan ("100.00").
    pub async fn tender_cash(&mut self, amount: &str) -> Result<Value, ApiError> {
        self.request_typed(json!({ "type": "tender_cash", "amount": amount }), "tender")
            .await
    }
}
