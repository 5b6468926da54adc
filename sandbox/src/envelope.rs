//! The Provider API envelope (spec §6.1) and error answers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// One `error.detail` (or statement `details`) item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetailItem {
    pub target: String,
    pub code: String,
    pub message: String,
}

impl DetailItem {
    pub fn new(target: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        DetailItem {
            target: target.into(),
            code: code.to_string(),
            message: message.into(),
        }
    }
    pub fn missing(target: impl Into<String>) -> Self {
        Self::new(target, "MissingProperty", "is required")
    }
    pub fn invalid(target: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(target, "InvalidPropertyValue", message)
    }
}

/// An error answered with the envelope.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<Vec<DetailItem>>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            retry_after: None,
        }
    }
    pub fn validation(detail: Vec<DetailItem>) -> Self {
        ApiError {
            detail: Some(detail),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                "One or more fields are missing or invalid",
            )
        }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            format!("{what} not found"),
        )
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "UnsupportedOperationError", message)
    }
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "AuthenticationError",
            "Authentication failed",
        )
    }
    pub fn too_many(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests",
            )
        }
    }
    pub fn too_large(limit: usize) -> Self {
        ApiError {
            detail: Some(vec![DetailItem::invalid(
                "body",
                format!("request body larger than {limit} bytes"),
            )]),
            ..Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                "Request body too large",
            )
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            message,
        )
    }
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "data": null, "links": null, "meta": null,
            "error": { "code": self.code, "message": self.message, "detail": self.detail },
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp.extensions_mut().insert(ErrorCode(self.code));
        resp
    }
}

/// The `error.code` of an answer, kept as a response extension for the request log.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// A gateway-style answer (403 without envelope, 5xx from faults).
pub fn gateway(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

#[derive(Serialize)]
struct Envelope<T: Serialize> {
    data: T,
    links: serde_json::Value,
    meta: Option<()>,
    error: Option<()>,
}

/// `{"data": ..., "links": ..., "meta": null, "error": null}`, serialised directly so that
/// decimals stay exact (never through `serde_json::Value`).
pub fn ok_envelope(status: StatusCode, data: impl Serialize, links: serde_json::Value) -> Response {
    match serde_json::to_string(&Envelope {
        data,
        links,
        meta: None,
        error: None,
    }) {
        Ok(body) => raw_json(status, body),
        Err(e) => ApiError::internal(format!("serialisation failed: {e}")).into_response(),
    }
}

/// Any serialisable body as JSON, serialised directly (exact decimals).
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => raw_json(status, text),
        Err(e) => ApiError::internal(format!("serialisation failed: {e}")).into_response(),
    }
}

/// A JSON answer whose body is already serialised (keeps numbers exact).
pub fn raw_json(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
