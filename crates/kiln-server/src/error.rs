//! The one error shape of every response Kiln makes: `{"error": "<reason>"}`, with `details`
//! (`[{path, message}]`) for a request's fields, `retryAfterMs` (and a `Retry-After` header) for
//! what may succeed later, and `capBytes` for the stdin cap: the code-runner contract's shape,
//! used for every route, the fallbacks (unknown route, wrong method) and the connection's own
//! refusals alike.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use kiln_core::FieldError;

/// The longest id or path echoed back in an error, so a huge one does not come back whole.
const ECHO_MAX: usize = 128;

/// An id or path as it may appear in an error: at most [`ECHO_MAX`] bytes, marked when cut.
pub fn echo(s: &str) -> String {
    if s.len() <= ECHO_MAX {
        return s.to_string();
    }
    let mut end = ECHO_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// One problem with a request field, as the contract shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Detail {
    /// The field, dotted (`files.0.name`).
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl From<FieldError> for Detail {
    fn from(e: FieldError) -> Self {
        Self {
            path: e.path,
            message: e.message,
        }
    }
}

/// Every error body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// For validation errors: each field and what is wrong with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<Detail>>,
    /// For what may succeed later (429, 503): when to retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// For the stdin pending-byte cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap_bytes: Option<u64>,
}

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Its status.
    pub status: StatusCode,
    /// Its body.
    pub body: ErrorBody,
    /// Close the connection after it (a body that was not read).
    pub close: bool,
}

impl ApiError {
    /// A `status` with `error`.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                details: None,
                retry_after_ms: None,
                cap_bytes: None,
            },
            close: false,
        }
    }

    /// 400 `Validation error` with the fields' problems.
    pub fn invalid(details: Vec<Detail>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "Validation error");
        e.body.details = Some(details);
        e
    }

    /// 400 `Validation error` about one field.
    pub fn field(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid(vec![Detail {
            path: path.into(),
            message: message.into(),
        }])
    }

    /// With `retryAfterMs` and `Retry-After`.
    pub fn retry_after(mut self, ms: u64) -> Self {
        self.body.retry_after_ms = Some(ms);
        self
    }

    /// With `capBytes`.
    pub fn cap_bytes(mut self, cap: u64) -> Self {
        self.body.cap_bytes = Some(cap);
        self
    }

    /// Closing the connection after the response.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(&self.body)).into_response();
        if let Some(ms) = self.body.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// An error the connection itself answers (before any route): `status`, JSON, and for what may
/// succeed later (`retry_after_ms`) the retry fields.
pub fn raw_response(status: StatusCode, error: &str, retry_after_ms: Option<u64>) -> Vec<u8> {
    let body = serde_json::to_string(&ErrorBody {
        error: error.to_string(),
        details: None,
        retry_after_ms,
        cap_bytes: None,
    })
    .unwrap_or_default();
    let retry = retry_after_ms
        .map(|ms| format!("retry-after: {}\r\n", ms.div_ceil(1000).max(1)))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_echoes_are_cut() {
        assert_eq!(echo("abc"), "abc");
        let long = "é".repeat(200);
        let cut = echo(&long);
        assert!(cut.len() < 150, "{cut}");
        assert!(cut.ends_with("(400 bytes)"), "{cut}");
    }
}
