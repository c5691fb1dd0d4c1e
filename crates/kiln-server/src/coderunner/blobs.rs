//! The contract's content-addressed blobs: `POST /v1/blobs/check` (which of these does this token
//! hold; an upload URL for each it does not), the signed `PUT /v1/blobs/<hash>` those URLs point
//! at (no token: the URL is the right, for that hash and that token only), `POST
//! /v1/blobs/finalize`, and the resolution of `files[].ref` into the bytes a job gets.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::{Extension, Json};
use futures_util::StreamExt as _;
use kiln_core::blobs::{Begun, BlobError, BlobHash};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::request::FileInput;
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, Detail, ErrorBody};
use crate::links::{now_secs, LinkError, Signed};
use crate::state::AppState;

/// The most hashes one check or finalize may name.
pub const MAX_HASHES: usize = 1024;

/// `POST /v1/blobs/check` and `POST /v1/blobs/finalize`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlobHashes {
    /// `sha256:<64 lowercase hex>` of each blob.
    pub hashes: Vec<String>,
}

/// A blob this token does not hold, and where to upload it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlobUpload {
    /// Its hash.
    pub hash: String,
    /// A signed URL to `PUT` its bytes to, without a token, before it expires.
    pub upload_url: String,
}

/// `POST /v1/blobs/check` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BlobCheckResponse {
    /// Blobs to upload.
    pub missing: Vec<BlobUpload>,
    /// Blobs this token holds (their idle clocks restarted).
    pub present: Vec<String>,
}

/// `POST /v1/blobs/finalize` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BlobFinalizeResponse {
    /// The blobs held, their idle clocks restarted.
    pub finalized: Vec<String>,
}

/// `PUT /v1/blobs/{hash}` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BlobStored {
    /// Its hash.
    pub hash: String,
    /// Its size.
    pub bytes: u64,
}

fn parse_hashes(hashes: &[String]) -> Result<Vec<BlobHash>, ApiError> {
    if hashes.len() > MAX_HASHES {
        return Err(ApiError::field(
            "hashes",
            format!("must hold at most {MAX_HASHES} hashes"),
        ));
    }
    let mut out = Vec::with_capacity(hashes.len());
    let mut details = Vec::new();
    for (i, h) in hashes.iter().enumerate() {
        match BlobHash::parse(h) {
            Some(hash) => out.push(hash),
            None => details.push(Detail {
                path: format!("hashes.{i}"),
                message: "must be sha256: and 64 lowercase hex digits".into(),
            }),
        }
    }
    if details.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::invalid(details))
    }
}

/// A blob store refusal as the answer.
fn blob_error(e: BlobError) -> ApiError {
    let message = e.to_string();
    match e {
        BlobError::Mismatch { .. } => ApiError::new(StatusCode::BAD_REQUEST, message),
        BlobError::TooLarge { max, .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message).cap_bytes(max)
        }
        BlobError::OwnerQuota { .. } | BlobError::StorageFull { .. } => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, message)
        }
        BlobError::Missing(_) | BlobError::Damaged(_) => {
            ApiError::new(StatusCode::NOT_FOUND, message)
        }
        BlobError::Store(_) | BlobError::Io { .. } => {
            tracing::error!(error = %e, "blob store");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The blob store failed")
        }
    }
}

/// `POST /v1/blobs/check`.
#[utoipa::path(post, path = "/v1/blobs/check", security(("bearer" = [])), request_body = BlobHashes,
    responses((status = 200, body = BlobCheckResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn check(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<BlobHashes>,
) -> Result<Json<BlobCheckResponse>, ApiError> {
    let mut hashes = parse_hashes(&body.hashes)?;
    let mut seen = std::collections::HashSet::new();
    hashes.retain(|h| seen.insert(*h));
    let held = state.blobs.check(&caller.0, &hashes);
    let base = state.links.base(Some(&headers));
    let expires = now_secs().saturating_add(state.cfg.blobs.upload_url_ttl_secs);
    let mut out = BlobCheckResponse {
        missing: Vec::new(),
        present: Vec::new(),
    };
    for (hash, held) in hashes.iter().zip(held) {
        if held {
            out.present.push(hash.to_string());
        } else {
            out.missing.push(BlobUpload {
                hash: hash.to_string(),
                upload_url: state.links.upload_url(&base, hash, &caller.0, expires),
            });
        }
    }
    Ok(Json(out))
}

/// `POST /v1/blobs/finalize`.
#[utoipa::path(post, path = "/v1/blobs/finalize", security(("bearer" = [])), request_body = BlobHashes,
    responses((status = 200, body = BlobFinalizeResponse),
        (status = 400, body = ErrorBody, description = "A hash this token has not uploaded (or whose blob expired)"),
        (status = 401, body = ErrorBody)))]
pub async fn finalize(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<BlobHashes>,
) -> Result<Json<BlobFinalizeResponse>, ApiError> {
    let hashes = parse_hashes(&body.hashes)?;
    state
        .blobs
        .finalize(&caller.0, &hashes)
        .map_err(|(i, e)| ApiError::field(format!("hashes.{i}"), e.to_string()))?;
    Ok(Json(BlobFinalizeResponse {
        finalized: hashes.iter().map(ToString::to_string).collect(),
    }))
}

/// `PUT /v1/blobs/{hash}`: the target of an upload URL.
#[utoipa::path(put, path = "/v1/blobs/{hash}", params(("hash" = String, Path),
        ("owner" = String, Query), ("expires" = u64, Query), ("signature" = String, Query)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = BlobStored),
        (status = 400, body = ErrorBody, description = "The bytes are not the hash's; nothing is stored"),
        (status = 403, body = ErrorBody, description = "The URL was altered or expired"),
        (status = 411, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 507, body = ErrorBody, description = "A blob quota is reached")))]
pub async fn upload(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    Query(signed): Query<Signed>,
    req: Request,
) -> Result<Json<BlobStored>, ApiError> {
    let forbidden = |e: LinkError| ApiError::new(StatusCode::FORBIDDEN, e.to_string());
    let hash = BlobHash::parse(&hash).ok_or_else(|| forbidden(LinkError::Malformed("hash")))?;
    let owner = state
        .links
        .check_upload(&hash, &signed, now_secs())
        .map_err(forbidden)?;
    let Some(declared) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Err(ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "A blob upload needs its Content-Length",
        )
        .closing());
    };
    // Refused before a byte is read (the connection closes: its body is not wanted), and
    // answered at once for a blob the token holds.
    let mut upload = match state.blobs.begin(&owner, hash, declared).await {
        Ok(Begun::Held) => {
            return Ok(Json(BlobStored {
                hash: hash.to_string(),
                bytes: declared,
            }))
        }
        Ok(Begun::Upload(u)) => u,
        Err(e) => return Err(blob_error(e).closing()),
    };
    // The bytes go to a file as they come: however many upload at once, none is held whole.
    let mut body = req.into_body().into_data_stream();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("Unreadable body: {e}")))?;
        size += chunk.len() as u64;
        upload
            .write(&chunk)
            .await
            .map_err(|e| blob_error(e).closing())?;
    }
    state
        .blobs
        .finish(&owner, upload)
        .await
        .map_err(blob_error)?;
    Ok(Json(BlobStored {
        hash: hash.to_string(),
        bytes: size,
    }))
}

/// Resolves the files given by `ref` to the bytes of the caller's blobs: a file must have
/// `content` or `ref`, not both, and a `ref` must name a blob the caller holds. Nothing is read
/// for a request with more files than a job may have, or whose blobs together pass the files'
/// byte limit (413): what admission would refuse costs no reads.
pub async fn resolve_refs(
    state: &AppState,
    caller: &Caller,
    files: &mut [FileInput],
    field: &str,
) -> Result<(), ApiError> {
    if files.len() > state.cfg.max_files {
        return Ok(());
    }
    let max = state.cfg.max_files_bytes as u64;
    let total: u64 = files
        .iter()
        .filter_map(|f| f.reference.as_deref().and_then(BlobHash::parse))
        .filter_map(|h| state.blobs.size_held(&caller.0, &h))
        .sum();
    if total > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Files total at least {total} bytes, over the {max}-byte limit"),
        ));
    }
    let mut details = Vec::new();
    for (i, f) in files.iter_mut().enumerate() {
        let Some(reference) = &f.reference else {
            continue;
        };
        let at = format!("{field}.{i}.ref");
        if f.content.is_some() {
            details.push(Detail {
                path: format!("{field}.{i}"),
                message: "give content or ref, not both".into(),
            });
            continue;
        }
        let Some(hash) = BlobHash::parse(reference) else {
            details.push(Detail {
                path: at,
                message: "must be sha256: and 64 lowercase hex digits".into(),
            });
            continue;
        };
        match state.blobs.read(&caller.0, hash).await {
            Ok(bytes) => f.resolved = Some(bytes),
            Err(e @ (BlobError::Missing(_) | BlobError::Damaged(_))) => details.push(Detail {
                path: at,
                message: format!(
                    "{e}: upload it first (POST /v1/blobs/check, then PUT its uploadUrl)"
                ),
            }),
            Err(e) => return Err(blob_error(e)),
        }
    }
    if details.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(details))
    }
}
