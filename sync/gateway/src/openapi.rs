//! The OpenAPI 3 document served at `GET /openapi.json`: every endpoint, request and response
//! field, and the error body. Written by hand next to the handlers so it says exactly what they
//! do, including the signing parameters every merchant request carries.

use serde_json::{Map, Value, json};

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn amount(description: &str) -> Value {
    json!({"type": "string", "pattern": "^(0|[1-9][0-9]{0,7})(\\.[0-9]{1,2})?$", "description": description})
}

/// An object schema. Required string properties get `minLength: 1`: the gateway treats an empty
/// value as absent (empty values are not signed either).
fn object(required: &[&str], properties: &[(&str, Value)]) -> Value {
    let properties: Map<String, Value> = properties
        .iter()
        .map(|(key, schema)| {
            let mut schema = schema.clone();
            if required.contains(key) && schema["type"] == "string" {
                schema["minLength"] = json!(1);
            }
            ((*key).to_owned(), schema)
        })
        .collect();
    json!({"type": "object", "required": required, "properties": properties})
}

/// Parameters every merchant request carries (signing and replay protection).
fn auth_properties() -> Vec<(&'static str, Value)> {
    vec![
        (
            "merchant_id",
            string("商户ID: merchant id from `merchant add`"),
        ),
        (
            "timestamp",
            json!({"type": "integer", "format": "int64", "description": "request time, ms since the epoch; within ±300 s of the gateway clock"}),
        ),
        (
            "nonce",
            json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "description": "optional; single use inside the timestamp window"}),
        ),
        (
            "sign_type",
            json!({"type": "string", "enum": ["HMAC-SHA256", "RSA-SHA256"], "description": "optional; must equal the merchant's pinned algorithm"}),
        ),
        (
            "sign",
            string("signature over the other non-empty parameters, see docs/gateway-api.md"),
        ),
    ]
}

fn request(required: &[&str], extra: &[(&str, Value)]) -> Value {
    let mut properties = auth_properties();
    properties.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    let mut all_required = vec!["merchant_id", "timestamp", "sign"];
    all_required.extend_from_slice(required);
    let mut schema = object(&all_required, &properties);
    // Documented as closed: the gateway tolerates (and signs) other flat parameters with
    // lowercase names, but refuses malformed ones, so an open schema would promise too much.
    schema["additionalProperties"] = json!(false);
    schema
}

/// Fields every signed reply carries.
fn reply(extra: &[(&str, Value)]) -> Value {
    let mut properties = vec![
        ("code", json!({"type": "string", "enum": ["SUCCESS"]})),
        ("msg", string("响应消息")),
        ("timestamp", json!({"type": "integer", "format": "int64"})),
        (
            "sign_type",
            json!({"type": "string", "enum": ["HMAC-SHA256", "RSA-SHA256"]}),
        ),
        (
            "sign",
            string("signature of the reply, same rules as requests"),
        ),
    ];
    properties.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    object(&["code", "timestamp", "sign", "sign_type"], &properties)
}

fn trade_status() -> Value {
    json!({"type": "string", "enum": ["CREATED", "WAIT_PAY", "PAYING", "SUCCESS", "REFUND", "CLOSED", "FAILED", "REVOKED"]})
}

fn refund_status() -> Value {
    json!({"type": "string", "enum": ["PROCESSING", "SUCCESS", "FAIL"]})
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn error_ref() -> Value {
    json!({"$ref": "#/components/schemas/Error"})
}

fn merchant_operation(
    summary: &str,
    request_schema: Value,
    reply_schema: Value,
    error_statuses: &[&str],
) -> Value {
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "OK, signed", "content": json_content(reply_schema)}),
    );
    for status in error_statuses {
        responses.insert((*status).into(), json!({"description": "error (1001-1006 class in error_code)", "content": json_content(error_ref())}));
    }
    json!({"post": {
        "summary": summary,
        "requestBody": {"required": true, "content": json_content(request_schema)},
        "responses": responses,
    }})
}

fn html(description: &str) -> Value {
    json!({"description": description, "content": {"text/html": {"schema": {"type": "string"}}}})
}

fn admin_get(summary: &str, parameter: &str, ok: Value) -> Value {
    json!({
        "summary": summary,
        "security": [{"admin": []}],
        "parameters": [{"name": parameter, "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": {
            "200": ok,
            "401": {"description": "operator endpoints disabled or wrong token", "content": json_content(error_ref())},
            "404": {"description": "not found", "content": json_content(error_ref())},
        },
    })
}

/// The document.
pub fn document() -> Value {
    let common_errors = ["400", "401", "404", "409", "413", "503"];
    let create = merchant_operation(
        "Create an order (QR: returns pay_url; with auth_code: pays at once)",
        request(
            &[
                "out_trade_no",
                "total_amount",
                "subject",
                "pay_type",
                "notify_url",
            ],
            &[
                (
                    "out_trade_no",
                    json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "description": "商户订单号, idempotency key"}),
                ),
                ("total_amount", amount("订单金额, yuan, at most 2 decimals")),
                (
                    "currency",
                    json!({"type": "string", "enum": ["CNY"], "description": "default CNY"}),
                ),
                ("subject", string("订单标题 (at most 256 characters)")),
                ("body", string("订单描述")),
                (
                    "pay_type",
                    json!({"type": "string", "enum": ["alipay", "wechat", "unionpay", "card"]}),
                ),
                (
                    "notify_url",
                    string("异步通知地址; host must be registered for the merchant"),
                ),
                ("return_url", string("同步跳转地址")),
                (
                    "auth_code",
                    string("customer-presented payment code (付款码) or card token; pays at once"),
                ),
            ],
        ),
        reply(&[
            ("trade_no", string("平台交易号")),
            ("out_trade_no", string("商户订单号")),
            ("trade_status", trade_status()),
            ("pay_url", string("QR content: the sandbox wallet page URL")),
            ("prepay_id", string("预支付交易会话标识 (wechat)")),
        ]),
        &["400", "401", "402", "409", "413", "503"],
    );
    let query = merchant_operation(
        "Query an order",
        request(
            &[],
            &[
                ("out_trade_no", string("商户订单号 (or trade_no)")),
                ("trade_no", string("平台交易号")),
            ],
        ),
        reply(&[
            ("trade_status", trade_status()),
            ("trade_no", string("平台交易号")),
            ("out_trade_no", string("商户订单号")),
            ("total_amount", amount("订单金额")),
            ("receipt_amount", amount("实收金额")),
            ("refund_amount", amount("sum of successful refunds")),
            (
                "pay_time",
                string("支付时间, yyyy-MM-dd HH:mm:ss Beijing time"),
            ),
            ("pay_type", string("rail")),
        ]),
        &common_errors,
    );
    let refund_reply = reply(&[
        ("refund_no", string("退款单号")),
        ("out_refund_no", string("merchant refund number")),
        ("trade_no", string("平台交易号")),
        ("out_trade_no", string("商户订单号")),
        ("refund_amount", amount("退款金额")),
        ("refund_status", refund_status()),
        ("refund_time", string("yyyy-MM-dd HH:mm:ss Beijing time")),
    ]);
    let refund = merchant_operation(
        "Refund part or all of a paid order",
        request(
            &["out_refund_no", "refund_amount", "refund_reason"],
            &[
                ("out_trade_no", string("商户订单号 (or trade_no)")),
                ("trade_no", string("平台交易号")),
                (
                    "out_refund_no",
                    json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "description": "idempotency key of the refund"}),
                ),
                ("refund_amount", amount("退款金额")),
                ("refund_reason", string("退款原因")),
            ],
        ),
        refund_reply.clone(),
        &common_errors,
    );
    let refund_query = merchant_operation(
        "Query a refund",
        request(
            &["out_refund_no"],
            &[("out_refund_no", string("merchant refund number"))],
        ),
        refund_reply,
        &common_errors,
    );
    let close = merchant_operation(
        "Close an unpaid order (at the channel too)",
        request(
            &[],
            &[
                ("out_trade_no", string("商户订单号 (or trade_no)")),
                ("trade_no", string("平台交易号")),
            ],
        ),
        reply(&[
            ("trade_no", string("平台交易号")),
            ("out_trade_no", string("商户订单号")),
            ("trade_status", trade_status()),
        ]),
        &common_errors,
    );
    let trade_no_path =
        json!([{"name": "trade_no", "in": "path", "required": true, "schema": {"type": "string"}}]);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Lanepay gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Merchant payment API (seed 004), sandbox wallet and operator endpoints. Signing, states, error sub-codes and notify: docs/gateway-api.md."
        },
        "paths": {
            "/api/payment/create": create,
            "/api/payment/query": query,
            "/api/payment/refund": refund,
            "/api/payment/refund/query": refund_query,
            "/api/payment/close": close,
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3", "content": json_content(json!({"type": "object"}))}}}},
            "/sandbox/wallet/{trade_no}": {"get": {
                "summary": "Sandbox wallet page (the QR content); opening it is the scan",
                "parameters": trade_no_path,
                "responses": {"200": html("payment form"), "404": html("no such QR order"), "503": html("channel unavailable")},
            }},
            "/sandbox/wallet/{trade_no}/confirm": {"post": {
                "summary": "The payer confirms",
                "parameters": trade_no_path,
                "responses": {"200": html("paid"), "404": html("no such QR order"), "409": html("not payable"), "503": html("channel unavailable")},
            }},
            "/sandbox/wallet/{trade_no}/decline": {"post": {
                "summary": "The payer declines",
                "parameters": trade_no_path,
                "responses": {"200": html("declined"), "404": html("no such QR order"), "409": html("not payable"), "503": html("channel unavailable")},
            }},
            "/admin/orders/{trade_no}": {"get": admin_get("Everything stored about an order", "trade_no", json!({"description": "order, refunds, notifies", "content": json_content(json!({"type": "object"}))}))},
            "/admin/notifies/{notify_id}": {"get": admin_get("A notify and its attempts", "notify_id", json!({"description": "notify", "content": json_content(json!({"type": "object"}))}))},
            "/admin/notifies/{notify_id}/resend": {"post": admin_get("Resend a notify now", "notify_id", json!({"description": "notify, pending", "content": json_content(json!({"type": "object"}))}))},
            "/admin/channels/{pay_type}/bill": {"get": {
                "summary": "A channel's daily bill (CSV)",
                "security": [{"admin": []}],
                "parameters": [
                    {"name": "pay_type", "in": "path", "required": true, "schema": {"type": "string", "enum": ["alipay", "wechat", "unionpay", "card"]}},
                    {"name": "date", "in": "query", "required": true, "schema": {"type": "string", "pattern": "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"}},
                ],
                "responses": {
                    "200": {"description": "CSV: channel,trade_no,kind,reference,amount,time", "content": {"text/csv": {"schema": {"type": "string"}}}},
                    "400": {"description": "bad date or channel", "content": json_content(error_ref())},
                    "401": {"description": "operator endpoints disabled or wrong token", "content": json_content(error_ref())},
                },
            }},
        },
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": object(&["code", "msg", "error_code", "sub_code", "retryable"], &[
                    ("code", json!({"type": "string", "enum": ["FAIL"]})),
                    ("msg", string("what happened and what to do")),
                    ("error_code", json!({"type": "integer", "enum": [1001, 1002, 1003, 1004, 1005, 1006]})),
                    ("sub_code", string("stable reason, e.g. NONCE_REPLAYED")),
                    ("retryable", json!({"type": "boolean"})),
                    ("timestamp", json!({"type": "integer", "format": "int64"})),
                    ("sign_type", string("present when the merchant was identified")),
                    ("sign", string("present when the merchant was identified")),
                    ("trade_no", string("the order, when the error is about one")),
                    ("out_trade_no", string("the order, when the error is about one")),
                    ("trade_status", trade_status()),
                    ("pay_url", string("")),
                    ("prepay_id", string("")),
                ]),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_lists_every_merchant_endpoint() {
        let document = super::document();
        for path in [
            "/api/payment/create",
            "/api/payment/query",
            "/api/payment/refund",
            "/api/payment/refund/query",
            "/api/payment/close",
        ] {
            assert!(document["paths"][path]["post"].is_object(), "{path}");
        }
        assert_eq!(document["openapi"], "3.0.3");
    }
}
