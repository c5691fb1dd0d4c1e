//! Request bodies, typed: a JSON body must say so (415), fit the body cap (413), parse (400
//! `Invalid JSON body`), and match its type (400 `Validation error` naming the field). A body over
//! the cap is read to its end (up to [`DRAIN_MAX`]) before the 413 goes out, so the client reads
//! the answer instead of a reset connection; a client that asked `Expect: 100-continue` never sends
//! it at all.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// How much of a body over the cap is read (and dropped) so the client gets the 413.
pub const DRAIN_MAX: usize = 64 << 20;
/// How long that reading may take.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    content_type(headers).eq_ignore_ascii_case("application/json")
}

/// The media type of a request, without parameters.
pub fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .map(str::trim)
        .unwrap_or("")
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request body too large (at most {max} bytes)"),
    )
}

/// Reads a body of at most `max` bytes.
pub async fn read_body(req: Request, max: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects = req.headers().contains_key(header::EXPECT);
    if declared.is_some_and(|n| n > max as u64) && expects {
        // The client waits for "100 Continue" before it sends: answer now, it sends nothing.
        return Err(too_large(max));
    }
    let mut stream = req.into_body().into_data_stream();
    let mut data = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(max));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("Unreadable body: {e}")))?;
        if data.len() + chunk.len() > max {
            return Err(drain(stream, data.len() + chunk.len(), max).await);
        }
        data.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(data))
}

/// Reads and drops the rest of a body over the cap, so the 413 reaches the client.
async fn drain(mut stream: axum::body::BodyDataStream, mut seen: usize, max: usize) -> ApiError {
    let finished = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => seen += c.len(),
                Err(_) => return false,
            }
            if seen > DRAIN_MAX {
                return false;
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    let e = too_large(max);
    if finished {
        e
    } else {
        e.closing()
    }
}

/// A serde path as the contract writes it: `files.0.name`.
fn dotted(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Parses JSON into `T`: a syntax error is `Invalid JSON body`, a type error names its field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize::<_, T>(&mut de);
    match parsed {
        Ok(v) => {
            de.end().map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid JSON body: {e}"))
            })?;
            Ok(v)
        }
        Err(e) => {
            let path = dotted(e.path());
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    // serde's own words, without the position it appends.
                    let text = inner.to_string();
                    let message = text
                        .rsplit_once(" at line ")
                        .map_or(text.as_str(), |(m, _)| m)
                        .to_string();
                    Err(ApiError::field(path, message))
                }
                _ => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid JSON body: {inner}"),
                )),
            }
        }
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ));
        }
        let bytes = read_body(req, state.cfg.max_body_bytes).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A request's raw body within the cap (for routes that take JSON or a form).
#[derive(Debug)]
pub struct RawBody(pub HeaderMap, pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = read_body(req, state.cfg.max_body_bytes).await?;
        Ok(RawBody(headers, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialised")]
    struct T {
        files: Vec<F>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialised")]
    struct F {
        name: String,
    }

    #[test]
    fn type_errors_name_their_field_and_syntax_errors_say_so() {
        let e = parse_json::<T>(br#"{"files": [{"name": "a"}, {"name": 7}]}"#).unwrap_err();
        let details = e.body.details.unwrap();
        assert_eq!(details[0].path, "files.1.name");
        assert!(
            details[0].message.contains("expected a string"),
            "{details:?}"
        );
        let e = parse_json::<T>(b"{not json").unwrap_err();
        assert!(
            e.body.error.starts_with("Invalid JSON body"),
            "{:?}",
            e.body
        );
        let e = parse_json::<T>(br#"{"files": [], "x": 1}"#).unwrap_err();
        let details = e.body.details.unwrap();
        assert!(
            details[0].message.contains("unknown field `x`"),
            "{details:?}"
        );
    }
}

/// Query parameters of type `T`: unknown or malformed ones are a 400 naming them.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| QueryParams(q.0))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid query: {}", e.body_text()),
                )
            })
    }
}
