//! Errors. Library failures are typed (`GatewayError`, `StoreError`); what a merchant sees is an
//! `ApiError`: one of seed 004's codes 1001–1006 as a class, a stable `sub_code` string a program
//! can branch on, and a `retryable` flag that says whether sending the same request again later
//! can succeed.

use thiserror::Error;

/// Seed 004's error codes (错误码), used as classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 1001 参数错误: the request is malformed or its parameters are invalid.
    Parameter,
    /// 1002 签名验证失败: authentication failed (merchant, signature, timestamp, nonce).
    Signature,
    /// 1003 订单不存在: no such order or refund.
    NotFound,
    /// 1004 订单状态异常: the order's state does not allow the operation.
    State,
    /// 1005 余额不足: the payer's funds were insufficient.
    Balance,
    /// 1006 系统繁忙: the gateway or a channel could not serve the request now.
    Busy,
}

impl ErrorClass {
    /// The numeric code of seed 004.
    pub fn code(self) -> u16 {
        match self {
            ErrorClass::Parameter => 1001,
            ErrorClass::Signature => 1002,
            ErrorClass::NotFound => 1003,
            ErrorClass::State => 1004,
            ErrorClass::Balance => 1005,
            ErrorClass::Busy => 1006,
        }
    }

    /// The HTTP status the class maps to.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorClass::Parameter => 400,
            ErrorClass::Signature => 401,
            ErrorClass::NotFound => 404,
            ErrorClass::State => 409,
            ErrorClass::Balance => 402,
            ErrorClass::Busy => 503,
        }
    }
}

/// An error answered to an API caller.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{} {sub_code}: {message}", class.code())]
pub struct ApiError {
    /// The seed 004 class.
    pub class: ErrorClass,
    /// A stable machine-readable reason, e.g. `NONCE_REPLAYED`.
    pub sub_code: &'static str,
    /// What happened and what to do next, for a person.
    pub message: String,
    /// Whether the identical request may succeed if sent again later.
    pub retryable: bool,
    /// HTTP status override (413 for oversized bodies); `None` uses the class's status.
    pub http_status: Option<u16>,
}

impl ApiError {
    /// A non-retryable error.
    pub fn new(class: ErrorClass, sub_code: &'static str, message: impl Into<String>) -> Self {
        Self {
            class,
            sub_code,
            message: message.into(),
            retryable: false,
            http_status: None,
        }
    }

    /// A retryable error.
    pub fn retryable(
        class: ErrorClass,
        sub_code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            retryable: true,
            ..Self::new(class, sub_code, message)
        }
    }

    /// 1001 with a sub-code.
    pub fn parameter(sub_code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Parameter, sub_code, message)
    }

    /// 1002 with a sub-code.
    pub fn signature(sub_code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Signature, sub_code, message)
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        self.http_status.unwrap_or_else(|| self.class.http_status())
    }
}

/// Storage failures.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database writer is gone or a group commit failed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded (a bug or a hand-edited database).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "storage failure");
        ApiError::retryable(
            ErrorClass::Busy,
            "SYSTEM_BUSY",
            "the gateway could not reach its database; retry later",
        )
    }
}

/// Failures setting up or running the gateway.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key or signature operation failed.
    #[error(transparent)]
    Sign(#[from] crate::signing::SignError),
    /// Invalid configuration or CLI input.
    #[error("{0}")]
    Invalid(String),
    /// I/O (data directory, socket).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
