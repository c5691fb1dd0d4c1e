//! The file routes of a sandbox: stat, list, read and write (raw streaming bodies, or JSON text
//! and base64), mkdir -p, rename and remove. A path is absolute inside the sandbox, or relative
//! to `/workspace`; `..`, NUL and control characters are a 400 naming the parameter.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use futures_util::StreamExt;
use kiln_core::sandbox::SandboxId;
use kiln_engine::tree::{Entry, SandboxPath};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utoipa::ToSchema;

use super::handlers::{parse_id, refused};
use crate::auth::Caller;
use crate::body::{JsonBody, QueryParams};
use crate::coderunner::handlers::Ok;
use crate::coderunner::request::{Encoding, OutputEncodingName};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The largest file read back as JSON (a raw read has no such cap).
const MAX_JSON_READ: u64 = 16 << 20;
/// Bytes read from a file at once while it streams out.
const READ_CHUNK: usize = 64 << 10;

fn checked(path: &str, field: &str) -> Result<SandboxPath, ApiError> {
    SandboxPath::parse(path).map_err(|e| ApiError::field(field, e.to_string()))
}

/// A file's facts.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryWire {
    /// Its name.
    pub name: String,
    /// Its absolute path inside the sandbox.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Bytes.
    pub size: u64,
    /// Permission bits, e.g. 420 (0o644).
    pub mode: u32,
    /// Last modification, Unix ms.
    pub modified_at_ms: i64,
    /// A symlink's target, as written (never followed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn entry(e: Entry) -> EntryWire {
    EntryWire {
        name: e.name,
        path: e.path,
        kind: serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        size: e.size,
        mode: e.mode,
        modified_at_ms: e.modified_ms,
        target: e.target,
    }
}

/// `?path=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// The path.
    pub path: String,
}

/// `?path=&depth=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The directory.
    pub path: String,
    /// Levels down (default 1, at most 16).
    pub depth: Option<u32>,
}

/// `?path=&encoding=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// The file.
    pub path: String,
    /// Without it, the raw bytes; with it, JSON with the content as text or base64.
    pub encoding: Option<OutputEncodingName>,
}

/// `?path=&mode=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    /// The file.
    pub path: String,
    /// Octal permission bits (default 644).
    pub mode: Option<String>,
}

/// `?path=&recursive=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// The file or directory.
    pub path: String,
    /// Remove a directory and everything in it.
    pub recursive: Option<bool>,
}

/// `GET /v1/sandboxes/{id}/files`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    /// The directory.
    pub path: String,
    /// Its entries, depth first, each directory's sorted by name.
    pub entries: Vec<EntryWire>,
    /// Over 10000 entries: the rest are left out.
    pub truncated: bool,
}

/// `GET …/files/content?encoding=`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileContent {
    /// The file.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// `utf8` or `base64`.
    pub encoding: String,
    /// The content.
    pub content: String,
}

/// `POST …/files/write`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    /// The file (its parents are made).
    pub path: String,
    /// The content.
    pub content: String,
    /// `utf8` (default) or `base64`.
    pub encoding: Option<Encoding>,
    /// Octal permission bits (default `644`).
    pub mode: Option<String>,
}

/// `POST …/files/mkdir`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MakeDir {
    /// The directory (its parents are made too).
    pub path: String,
}

/// `POST …/files/rename`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameFile {
    /// What to move.
    pub from: String,
    /// Where (a file there is replaced).
    pub to: String,
}

fn mode(m: Option<&str>) -> Result<u32, ApiError> {
    match m {
        None => Ok(0o644),
        Some(m) => u32::from_str_radix(m, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| ApiError::field("mode", "must be octal permission bits such as 644")),
    }
}

/// `GET /v1/sandboxes/{id}/files?path=&depth=`: a directory's entries.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", security(("bearer" = [])),
    params(("id" = String, Path), ("path" = String, Query), ("depth" = Option<u32>, Query)),
    responses((status = 200, body = FileList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<FileList>, ApiError> {
    let sid = parse_id(&id)?;
    let path = checked(&q.path, "path")?;
    let shown = path.as_str().to_string();
    let listing = state
        .sandboxes
        .list_files(&caller.0, &sid, path, q.depth.unwrap_or(1))
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(FileList {
        path: shown,
        entries: listing.entries.into_iter().map(entry).collect(),
        truncated: listing.truncated,
    }))
}

/// `GET /v1/sandboxes/{id}/files/stat?path=`: one file's facts (a symlink's own).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", security(("bearer" = [])),
    params(("id" = String, Path), ("path" = String, Query)),
    responses((status = 200, body = EntryWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stat(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<PathQuery>,
) -> Result<Json<EntryWire>, ApiError> {
    let sid = parse_id(&id)?;
    let path = checked(&q.path, "path")?;
    let e = state
        .sandboxes
        .stat(&caller.0, &sid, path)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(entry(e)))
}

/// `GET /v1/sandboxes/{id}/files/content?path=`: the file's bytes, streamed; with `encoding`,
/// JSON (files up to 16 MiB).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/content", security(("bearer" = [])),
    params(("id" = String, Path), ("path" = String, Query), ("encoding" = Option<String>, Query)),
    responses((status = 200, content_type = "application/octet-stream", description = "The bytes (JSON FileContent with `encoding`)"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ReadQuery>,
) -> Result<Response, ApiError> {
    let sid = parse_id(&id)?;
    let path = checked(&q.path, "path")?;
    let shown = path.as_str().to_string();
    let (file, size) = state
        .sandboxes
        .open_read(&caller.0, &sid, path)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    let mut file = tokio::fs::File::from_std(file);
    if let Some(encoding) = q.encoding {
        if size > MAX_JSON_READ {
            return Err(ApiError::field(
                "encoding",
                format!("the file has {size} bytes, over the {MAX_JSON_READ} a JSON read gives; read it raw"),
            ));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut file)
            .take(MAX_JSON_READ)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let (encoding, content) = match encoding {
            OutputEncodingName::Utf8 => ("utf8", String::from_utf8_lossy(&bytes).into_owned()),
            OutputEncodingName::Base64 => (
                "base64",
                base64::engine::general_purpose::STANDARD.encode(&bytes),
            ),
        };
        return Ok(Json(FileContent {
            path: shown,
            size: bytes.len() as u64,
            encoding: encoding.into(),
            content,
        })
        .into_response());
    }
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; READ_CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// `PUT /v1/sandboxes/{id}/files/content?path=&mode=`: the body, streamed, becomes the file
/// (created or replaced, its parents made).
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files/content", security(("bearer" = [])),
    params(("id" = String, Path), ("path" = String, Query), ("mode" = Option<String>, Query)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = EntryWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 507, body = ErrorBody, description = "The sandbox's disk is full")))]
pub async fn upload(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<WriteQuery>,
    body: Body,
) -> Result<Json<EntryWire>, ApiError> {
    let sid = parse_id(&id)?;
    let path = checked(&q.path, "path")?;
    let mode = mode(q.mode.as_deref())?;
    let chunks = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string())));
    write_file(&state, &caller, &id, sid, path, mode, chunks).await
}

/// Creates (or replaces) the file, writes `chunks` into it, and answers its facts.
async fn write_file(
    state: &AppState,
    caller: &Caller,
    id: &str,
    sid: SandboxId,
    path: SandboxPath,
    mode: u32,
    chunks: impl futures_util::Stream<Item = Result<Bytes, ApiError>>,
) -> Result<Json<EntryWire>, ApiError> {
    let file = state
        .sandboxes
        .open_write(&caller.0, &sid, path.clone(), mode)
        .await
        .map_err(|e| refused(e, Some(id)))?;
    let mut file = tokio::fs::File::from_std(file);
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        file.write_all(&chunk?).await.map_err(write_failed)?;
    }
    file.flush().await.map_err(write_failed)?;
    drop(file);
    let e = state
        .sandboxes
        .stat(&caller.0, &sid, path)
        .await
        .map_err(|e| refused(e, Some(id)))?;
    Ok(Json(entry(e)))
}

fn write_failed(e: std::io::Error) -> ApiError {
    if matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
    ) {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "No space left in the sandbox",
        )
    } else {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// `POST /v1/sandboxes/{id}/files/write`: a file from JSON (text, or bytes as base64).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/write", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = WriteFile,
    responses((status = 200, body = EntryWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 507, body = ErrorBody)))]
pub async fn write(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<WriteFile>,
) -> Result<Json<EntryWire>, ApiError> {
    let sid = parse_id(&id)?;
    let path = checked(&body.path, "path")?;
    let mode = mode(body.mode.as_deref())?;
    let bytes = match body.encoding.unwrap_or_default() {
        Encoding::Utf8 => body.content.into_bytes(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(&body.content)
            .map_err(|e| ApiError::field("content", format!("is not valid base64: {e}")))?,
    };
    let chunks = futures_util::stream::iter([Ok(Bytes::from(bytes))]);
    write_file(&state, &caller, &id, sid, path, mode, chunks).await
}

/// `POST /v1/sandboxes/{id}/files/mkdir`: `mkdir -p`.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = MakeDir,
    responses((status = 200, body = EntryWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn mkdir(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<MakeDir>,
) -> Result<Json<EntryWire>, ApiError> {
    let sid = parse_id(&id)?;
    let path = checked(&body.path, "path")?;
    let e = state
        .sandboxes
        .mkdir(&caller.0, &sid, path)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(entry(e)))
}

/// `POST /v1/sandboxes/{id}/files/rename`: `mv from to`.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/rename", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RenameFile,
    responses((status = 200, body = EntryWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rename(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RenameFile>,
) -> Result<Json<EntryWire>, ApiError> {
    let sid = parse_id(&id)?;
    let from = checked(&body.from, "from")?;
    let to = checked(&body.to, "to")?;
    let e = state
        .sandboxes
        .rename(&caller.0, &sid, from, to)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(entry(e)))
}

/// `DELETE /v1/sandboxes/{id}/files?path=&recursive=`: `rm` (`-r`).
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", security(("bearer" = [])),
    params(("id" = String, Path), ("path" = String, Query), ("recursive" = Option<bool>, Query)),
    responses((status = 200, body = Ok), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A directory that is not empty, without recursive")))]
pub async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<RemoveQuery>,
) -> Result<Json<Ok>, ApiError> {
    let sid = parse_id(&id)?;
    let path = checked(&q.path, "path")?;
    state
        .sandboxes
        .remove(&caller.0, &sid, path, q.recursive.unwrap_or(false))
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(Ok::yes()))
}
