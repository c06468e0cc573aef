//! The HTTP surface (axum): the merchant payment API, the sandbox wallet page and its actions,
//! the operator endpoints, the OpenAPI document, and (only with a manual clock) the test clock.
//! Handlers read the body under a size limit and hand it to the service on the blocking pool.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::sync::Semaphore;

use crate::clock::ManualClock;
use crate::error::{ApiError, ErrorClass};
use crate::model::{OrderState, PayType};
use crate::money::format_yuan;
use crate::service::{Gateway, Operation, Reply};

/// Largest request body accepted (merchant API requests are a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Requests served at once; more are refused with 1006 rather than queued without bound.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 1_024;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// The manual clock, when the gateway runs on one (tests); enables `/test/clock`.
    pub manual_clock: Option<Arc<ManualClock>>,
    in_flight: Arc<Semaphore>,
}

impl AppState {
    /// State for `router`.
    pub fn new(gateway: Arc<Gateway>, manual_clock: Option<Arc<ManualClock>>) -> Self {
        Self {
            gateway,
            manual_clock,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT_REQUESTS)),
        }
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn reply_response(reply: Reply) -> Response {
    json_response(reply.status, &Value::Object(reply.fields))
}

/// An unsigned error body (for callers that are not merchants, or not identified yet).
fn error_response(error: &ApiError) -> Response {
    json_response(
        error.status(),
        &json!({
            "code": "FAIL",
            "msg": error.message,
            "error_code": error.class.code(),
            "sub_code": error.sub_code,
            "retryable": error.retryable,
        }),
    )
}

fn busy() -> ApiError {
    ApiError::retryable(
        ErrorClass::Busy,
        "SYSTEM_BUSY",
        "the gateway is busy; retry later",
    )
}

async fn limit_in_flight(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        return error_response(&busy());
    };
    next.run(request).await
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError {
            http_status: Some(413),
            ..ApiError::parameter(
                "BODY_TOO_LARGE",
                format!("the body is larger than {MAX_BODY_BYTES} bytes (or was cut off)"),
            )
        })
}

async fn on_blocking_pool<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Gateway) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let gateway = state.gateway.clone();
    tokio::task::spawn_blocking(move || work(&gateway))
        .await
        .map_err(|error| {
            tracing::error!(%error, "request task failed");
            busy()
        })
}

async fn merchant_call(state: AppState, operation: Operation, body: Body) -> Response {
    let bytes = match read_body(body).await {
        Ok(bytes) => bytes,
        Err(error) => return error_response(&error),
    };
    match on_blocking_pool(&state, move |gateway| gateway.handle(operation, &bytes)).await {
        Ok(reply) => reply_response(reply),
        Err(error) => error_response(&error),
    }
}

async fn create(State(state): State<AppState>, body: Body) -> Response {
    merchant_call(state, Operation::Create, body).await
}

async fn query(State(state): State<AppState>, body: Body) -> Response {
    merchant_call(state, Operation::Query, body).await
}

async fn refund(State(state): State<AppState>, body: Body) -> Response {
    merchant_call(state, Operation::Refund, body).await
}

async fn refund_query(State(state): State<AppState>, body: Body) -> Response {
    merchant_call(state, Operation::RefundQuery, body).await
}

async fn close(State(state): State<AppState>, body: Body) -> Response {
    merchant_call(state, Operation::Close, body).await
}

async fn openapi() -> Response {
    json_response(200, &crate::openapi::document())
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn wallet_page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head><body>\n<h1>Lanepay 沙箱钱包 · sandbox wallet</h1>\n{body_html}\n</body></html>\n",
        title = escape_html(title)
    );
    (status, Html(page)).into_response()
}

fn wallet_error(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    wallet_page(
        status,
        "error",
        &format!(
            "<p id=\"result\" data-sub-code=\"{}\">无法完成 · cannot continue: {}</p>",
            error.sub_code,
            escape_html(&error.message)
        ),
    )
}

fn valid_trade_no(trade_no: &str) -> bool {
    !trade_no.is_empty()
        && trade_no.len() <= 64
        && trade_no.bytes().all(|b| b.is_ascii_alphanumeric())
}

async fn wallet_show(State(state): State<AppState>, Path(trade_no): Path<String>) -> Response {
    if !valid_trade_no(&trade_no) {
        return wallet_error(&ApiError::new(
            ErrorClass::NotFound,
            "ORDER_NOT_FOUND",
            "no such QR order",
        ));
    }
    let view = match on_blocking_pool(&state, move |gateway| gateway.wallet_scan(&trade_no)).await {
        Ok(Ok(view)) => view,
        Ok(Err(error)) | Err(error) => return wallet_error(&error),
    };
    let order = &view.order;
    let actions = if view.payable {
        format!(
            "<form method=\"post\" action=\"/sandbox/wallet/{t}/confirm\"><button id=\"confirm\" type=\"submit\">确认支付 Pay {a}</button></form>\n\
             <form method=\"post\" action=\"/sandbox/wallet/{t}/decline\"><button id=\"decline\" type=\"submit\">拒绝 Decline</button></form>",
            t = order.trade_no,
            a = format_yuan(order.total_fen)
        )
    } else {
        format!(
            "<p id=\"result\" data-state=\"{s}\">订单状态 · order state: {s}</p>",
            s = order.state.as_str()
        )
    };
    wallet_page(
        StatusCode::OK,
        "pay",
        &format!(
            "<dl><dt>商品 · subject</dt><dd id=\"subject\">{}</dd><dt>金额 · amount (CNY)</dt><dd id=\"amount\">{}</dd>\
             <dt>渠道 · channel</dt><dd>{}</dd><dt>交易号 · trade_no</dt><dd>{}</dd></dl>\n{actions}",
            escape_html(&order.subject),
            format_yuan(order.total_fen),
            order.pay_type.as_str(),
            order.trade_no
        ),
    )
}

async fn wallet_action(state: AppState, trade_no: String, confirm: bool) -> Response {
    if !valid_trade_no(&trade_no) {
        return wallet_error(&ApiError::new(
            ErrorClass::NotFound,
            "ORDER_NOT_FOUND",
            "no such QR order",
        ));
    }
    let result = on_blocking_pool(&state, move |gateway| {
        if confirm {
            gateway.wallet_confirm(&trade_no)
        } else {
            gateway.wallet_decline(&trade_no)
        }
    })
    .await;
    let order = match result {
        Ok(Ok(order)) => order,
        Ok(Err(error)) | Err(error) => return wallet_error(&error),
    };
    let back = if order.state == OrderState::Success && !order.return_url.is_empty() {
        format!(
            "<p><a id=\"return\" href=\"{}\">返回商户 · back to the shop</a></p>",
            escape_html(&order.return_url)
        )
    } else {
        String::new()
    };
    wallet_page(
        StatusCode::OK,
        "result",
        &format!(
            "<p id=\"result\" data-state=\"{s}\">{}</p>{back}",
            if order.state == OrderState::Success {
                "支付成功 · paid"
            } else {
                "已拒绝 · declined"
            },
            s = order.state.as_str()
        ),
    )
}

async fn wallet_confirm(State(state): State<AppState>, Path(trade_no): Path<String>) -> Response {
    wallet_action(state, trade_no, true).await
}

async fn wallet_decline(State(state): State<AppState>, Path(trade_no): Path<String>) -> Response {
    wallet_action(state, trade_no, false).await
}

/// Checks `Authorization: Bearer TOKEN` against the configured admin token. Hashing both sides
/// makes the comparison take the same time whatever the prefix match.
fn check_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = state.gateway.config.admin_token.as_deref() else {
        return Err(ApiError::signature(
            "ADMIN_DISABLED",
            "operator endpoints are disabled: start serve with --admin-token",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if sha2::Sha256::digest(given.as_bytes()) == sha2::Sha256::digest(expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::signature(
            "ADMIN_TOKEN_INVALID",
            "missing or wrong operator token",
        ))
    }
}

async fn admin_json(
    state: AppState,
    headers: HeaderMap,
    work: impl FnOnce(&Gateway) -> Result<Value, ApiError> + Send + 'static,
) -> Response {
    if let Err(error) = check_admin(&state, &headers) {
        return error_response(&error);
    }
    match on_blocking_pool(&state, work).await {
        Ok(Ok(value)) => json_response(200, &value),
        Ok(Err(error)) | Err(error) => error_response(&error),
    }
}

async fn admin_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(trade_no): Path<String>,
) -> Response {
    admin_json(state, headers, move |gateway| {
        gateway.order_detail(&trade_no)
    })
    .await
}

async fn admin_notify(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(notify_id): Path<String>,
) -> Response {
    admin_json(state, headers, move |gateway| {
        gateway.notify_detail(&notify_id)
    })
    .await
}

async fn admin_resend(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(notify_id): Path<String>,
) -> Response {
    let response = admin_json(state.clone(), headers, move |gateway| {
        let now_ms = gateway.clock.now_ms();
        if !gateway.store.resend_notify(&notify_id, now_ms)? {
            return Err(ApiError::new(
                ErrorClass::NotFound,
                "NOTIFY_NOT_FOUND",
                "no such notify",
            ));
        }
        gateway.notify_detail(&notify_id)
    })
    .await;
    state.gateway.notify_wakeup.notify_one();
    response
}

async fn admin_bill(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pay_type): Path<String>,
    // Pairs rather than a struct: any query string extracts, so a missing or repeated date gets
    // the API's JSON error instead of axum's plain-text rejection.
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(error) = check_admin(&state, &headers) {
        return error_response(&error);
    }
    let Ok(pay_type) = pay_type.parse::<PayType>() else {
        return error_response(&ApiError::parameter(
            "INVALID_PAY_TYPE",
            "channel must be alipay, wechat, unionpay or card",
        ));
    };
    let Some(date) = query
        .into_iter()
        .find(|(key, _)| key == "date")
        .map(|(_, value)| value)
    else {
        return error_response(&ApiError::parameter(
            "MISSING_PARAMETER",
            "query parameter date (yyyy-MM-dd) is required",
        ));
    };
    match on_blocking_pool(&state, move |gateway| gateway.channel_bill(pay_type, &date)).await {
        Ok(Ok(csv)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            )],
            csv,
        )
            .into_response(),
        Ok(Err(error)) | Err(error) => error_response(&error),
    }
}

#[derive(Debug, Deserialize)]
struct ClockAdvance {
    #[serde(default)]
    by_ms: Option<i64>,
    #[serde(default)]
    to_ms: Option<i64>,
}

async fn test_clock_get(State(state): State<AppState>) -> Response {
    json_response(200, &json!({ "now_ms": state.gateway.clock.now_ms() }))
}

async fn test_clock_advance(State(state): State<AppState>, body: Bytes) -> Response {
    let Some(clock) = state.manual_clock.as_ref() else {
        return error_response(&ApiError::new(
            ErrorClass::NotFound,
            "NOT_FOUND",
            "no manual clock",
        ));
    };
    let Ok(advance) = serde_json::from_slice::<ClockAdvance>(&body) else {
        return error_response(&ApiError::parameter(
            "MALFORMED_JSON",
            "body must be {\"by_ms\": N} or {\"to_ms\": N}",
        ));
    };
    let now_ms = match (advance.by_ms, advance.to_ms) {
        (Some(by_ms), None) => clock.advance(by_ms),
        (None, Some(to_ms)) => clock.advance_to(to_ms),
        _ => {
            return error_response(&ApiError::parameter(
                "INVALID_PARAMETER",
                "give exactly one of by_ms and to_ms",
            ));
        }
    };
    json_response(200, &json!({ "now_ms": now_ms }))
}

async fn not_found() -> Response {
    error_response(&ApiError::new(
        ErrorClass::NotFound,
        "NOT_FOUND",
        "no such endpoint; see /openapi.json",
    ))
}

async fn method_not_allowed() -> Response {
    error_response(&ApiError {
        http_status: Some(405),
        ..ApiError::parameter(
            "METHOD_NOT_ALLOWED",
            "wrong HTTP method for this endpoint; see /openapi.json",
        )
    })
}

/// The router of the whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/api/payment/create", post(create))
        .route("/api/payment/query", post(query))
        .route("/api/payment/refund", post(refund))
        .route("/api/payment/refund/query", post(refund_query))
        .route("/api/payment/close", post(close))
        .route("/openapi.json", get(openapi))
        .route("/sandbox/wallet/{trade_no}", get(wallet_show))
        .route("/sandbox/wallet/{trade_no}/confirm", post(wallet_confirm))
        .route("/sandbox/wallet/{trade_no}/decline", post(wallet_decline))
        .route("/admin/orders/{trade_no}", get(admin_order))
        .route("/admin/notifies/{notify_id}", get(admin_notify))
        .route("/admin/notifies/{notify_id}/resend", post(admin_resend))
        .route("/admin/channels/{pay_type}/bill", get(admin_bill));
    if state.manual_clock.is_some() {
        router = router
            .route("/test/clock", get(test_clock_get))
            .route("/test/clock/advance", post(test_clock_advance));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_in_flight,
        ))
        .with_state(state)
}
