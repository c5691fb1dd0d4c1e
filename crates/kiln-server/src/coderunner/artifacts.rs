//! `GET /v1/artifacts/{job}/{index}/{name}`: a kept file of a job, read by its signed URL with no
//! token (the URL names the job, the artifact and its name, and expires with the job's result).
//! The bytes go out as stored, with their MIME type, and with the headers that keep a browser
//! from running them as a page of this origin.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_core::JobId;

use crate::error::{ApiError, ErrorBody};
use crate::links::{now_secs, Signed};
use crate::state::AppState;

/// `GET /v1/artifacts/{job}/{index}/{name}`.
#[utoipa::path(get, path = "/v1/artifacts/{job}/{index}/{*name}",
    params(("job" = String, Path), ("index" = u32, Path), ("name" = String, Path, description = "The artifact's name, which may hold `/`"),
        ("expires" = u64, Query), ("signature" = String, Query)),
    responses((status = 200, description = "The file's bytes, with its MIME type", content_type = "application/octet-stream"),
        (status = 403, body = ErrorBody, description = "The URL was altered or expired"),
        (status = 404, body = ErrorBody, description = "The job's result, and its artifacts, are gone")))]
pub async fn artifact(
    State(state): State<AppState>,
    Path((job, index, name)): Path<(String, u32, String)>,
    Query(signed): Query<Signed>,
) -> Result<Response, ApiError> {
    state
        .links
        .check_artifact(&job, index, &name, &signed, now_secs())
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e.to_string()))?;
    let gone = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Artifact not found (its job's result expired)",
        )
    };
    let (info, size, chunks) = state
        .service
        .artifact(&JobId(job), index)
        .await
        .ok_or_else(gone)?;
    if info.name != name {
        return Err(gone());
    }
    let mime = HeaderValue::from_str(&info.mime_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let file = info.name.rsplit('/').next().unwrap_or(&info.name);
    let disposition: String = file
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let headers = [
        (header::CONTENT_TYPE, mime),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // An HTML or SVG artifact is shown, never run with this origin's rights.
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
            ),
        ),
        (
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&format!("inline; filename=\"{disposition}\""))
                .unwrap_or(HeaderValue::from_static("inline")),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=300"),
        ),
        (header::CONTENT_LENGTH, HeaderValue::from(size)),
    ];
    Ok((headers, axum::body::Body::from_stream(chunks)).into_response())
}
