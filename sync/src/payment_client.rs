//! The terminal payment API on [`GatewayClient`]: each call signed like a journal batch, its
//! failure sorted by what the lane may conclude (see [`PaymentCallError`]): the gateway
//! answered (`Refused`), the request surely never left (`NotSent`), or nobody knows
//! (`Unknown`: query before doing anything else).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{GatewayClient, describe};
use crate::auth::header;
use crate::payment::{
    CLOSE_PATH, CREATE_QR_PATH, CardPaymentRequest, CreateQrRequest, PAY_CARD_PATH, PAY_CODE_PATH,
    PayCodeRequest, PaymentCallError, PaymentError, PaymentRef, PaymentView, QUERY_PATH,
    REFUND_PATH, REVERSE_PATH, TerminalRefundRequest, TerminalRefundView,
};

/// A transport failure: `NotSent` only when the connection was never made (refused, name
/// lookup, connect timeout) or the request could not be built; otherwise the request may have
/// arrived.
fn transport_error(error: &reqwest::Error) -> PaymentCallError {
    let text = describe(error);
    if error.is_connect() || error.is_builder() {
        PaymentCallError::NotSent(text)
    } else {
        PaymentCallError::Unknown(text)
    }
}

/// The refusal in a non-2xx answer. A body that is not a `PaymentError` did not come from the
/// payment code (a proxy, a crash): for a 5xx the outcome is unknown.
fn refusal(status: u16, body: &[u8]) -> PaymentCallError {
    match serde_json::from_slice::<PaymentError>(body) {
        Ok(error) => PaymentCallError::Refused(error),
        Err(_) if status >= 500 => PaymentCallError::Unknown(format!(
            "the gateway answered {status}: {}",
            String::from_utf8_lossy(body)
                .chars()
                .take(200)
                .collect::<String>()
        )),
        Err(_) => PaymentCallError::Refused(PaymentError {
            code: format!("http_{status}"),
            message: String::from_utf8_lossy(body).chars().take(200).collect(),
            retryable: false,
        }),
    }
}

impl GatewayClient {
    /// Pays with a wallet payment code the customer shows (`POST /v1/terminal/payments/code`).
    pub async fn pay_code(
        &self,
        request: &PayCodeRequest,
        now_ms: i64,
    ) -> Result<PaymentView, PaymentCallError> {
        self.payment_call(PAY_CODE_PATH, request, now_ms).await
    }

    /// Creates a dynamic QR order; the view carries `pay_url`.
    pub async fn create_qr(
        &self,
        request: &CreateQrRequest,
        now_ms: i64,
    ) -> Result<PaymentView, PaymentCallError> {
        self.payment_call(CREATE_QR_PATH, request, now_ms).await
    }

    /// Pays with a sealed card (online, or forwarded when `stored_at_ms` is set).
    pub async fn pay_card(
        &self,
        request: &CardPaymentRequest,
        now_ms: i64,
    ) -> Result<PaymentView, PaymentCallError> {
        self.payment_call(PAY_CARD_PATH, request, now_ms).await
    }

    pub async fn query_payment(
        &self,
        out_trade_no: &str,
        now_ms: i64,
    ) -> Result<PaymentView, PaymentCallError> {
        self.payment_call(QUERY_PATH, &payment_ref(out_trade_no), now_ms)
            .await
    }

    /// Reverses a code payment (REVOKED, or the final state it already had).
    pub async fn reverse_payment(
        &self,
        out_trade_no: &str,
        now_ms: i64,
    ) -> Result<PaymentView, PaymentCallError> {
        self.payment_call(REVERSE_PATH, &payment_ref(out_trade_no), now_ms)
            .await
    }

    /// Closes an unpaid order (CLOSED, or the final state it reached first, e.g. SUCCESS).
    pub async fn close_payment(
        &self,
        out_trade_no: &str,
        now_ms: i64,
    ) -> Result<PaymentView, PaymentCallError> {
        self.payment_call(CLOSE_PATH, &payment_ref(out_trade_no), now_ms)
            .await
    }

    /// Refunds part of a paid order, idempotent by `refund_no`.
    pub async fn refund_payment(
        &self,
        request: &TerminalRefundRequest,
        now_ms: i64,
    ) -> Result<TerminalRefundView, PaymentCallError> {
        self.payment_call(REFUND_PATH, request, now_ms).await
    }

    async fn payment_call<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &'static str,
        body: &B,
        now_ms: i64,
    ) -> Result<R, PaymentCallError> {
        let body =
            serde_json::to_vec(body).map_err(|e| PaymentCallError::NotSent(e.to_string()))?;
        match self.payment_call_once(path, &body, now_ms).await {
            // Refused before anything was done because the lane's clock is off: sign on the
            // gateway's clock from now on and send again.
            Err((PaymentCallError::Refused(error), Some(server_time_ms)))
                if error.code == "clock_skew" =>
            {
                self.learn_server_time(server_time_ms, now_ms);
                self.payment_call_once(path, &body, now_ms)
                    .await
                    .map_err(|(error, _)| error)
            }
            other => other.map_err(|(error, _)| error),
        }
    }

    async fn payment_call_once<R: DeserializeOwned>(
        &self,
        path: &'static str,
        body: &[u8],
        now_ms: i64,
    ) -> Result<R, (PaymentCallError, Option<i64>)> {
        let headers = self
            .signed_headers("POST", path, body, now_ms)
            .map_err(|e| (PaymentCallError::NotSent(e.to_string()), None))?;
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| (transport_error(&e), None))?;
        let status = response.status().as_u16();
        let server_time: Option<i64> = response
            .headers()
            .get(header::SERVER_TIME)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| (PaymentCallError::Unknown(describe(&e)), server_time))?;
        if let Some(server_time_ms) = server_time
            && (200..300).contains(&status)
        {
            self.learn_server_time(server_time_ms, now_ms);
        }
        if !(200..300).contains(&status) {
            return Err((refusal(status, &bytes), server_time));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            (
                PaymentCallError::Unknown(format!("the gateway's answer is malformed: {e}")),
                server_time,
            )
        })
    }
}

fn payment_ref(out_trade_no: &str) -> PaymentRef {
    PaymentRef {
        out_trade_no: out_trade_no.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_error_body_is_a_refusal_even_at_503() {
        let body =
            br#"{"code":"CHANNEL_UNAVAILABLE","message":"nothing was charged","retryable":true}"#;
        match refusal(503, body) {
            PaymentCallError::Refused(error) => {
                assert_eq!(error.code, "CHANNEL_UNAVAILABLE");
                assert!(error.retryable);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            refusal(502, b"<html>bad gateway</html>"),
            PaymentCallError::Unknown(_)
        ));
        assert!(matches!(
            refusal(404, b"not found"),
            PaymentCallError::Refused(PaymentError {
                retryable: false,
                ..
            })
        ));
    }
}
