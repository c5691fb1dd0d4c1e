//! The sandbox routes: thin handlers that decode the wire, call the sandbox service and project
//! its answers. Each carries its OpenAPI description.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use kiln_core::sandbox::{SandboxError, SandboxId};
use kiln_engine::tree::TreeError;

use super::wire::{
    exec_result, sandbox, CreateSandbox, ExecCommand, ExecResult, ExtendSandbox, SandboxList,
    SandboxWire,
};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::coderunner::handlers::Ok;
use crate::error::{echo, ApiError, Detail, ErrorBody};
use crate::state::AppState;

/// A refusal of the sandbox service as an HTTP answer.
pub(super) fn refused(e: SandboxError, id: Option<&str>) -> ApiError {
    match e {
        SandboxError::Invalid(details) => {
            ApiError::invalid(details.into_iter().map(Detail::from).collect())
        }
        SandboxError::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Sandbox not found: {}", echo(id.unwrap_or_default())),
        ),
        SandboxError::UnknownLanguage(name) => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Unknown language \"{}\". Check GET /v1/languages.",
                echo(&name)
            ),
        ),
        e @ (SandboxError::OwnerFull { .. } | SandboxError::Full { .. }) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many sandboxes: {e}. Delete one, or retry once one ends."),
        )
        .retry_after(5000),
        SandboxError::NotStarted(message) => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("The command could not start: {message}"),
        ),
        e @ SandboxError::Write { .. } => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
        SandboxError::ProcessNotFound(pid) => {
            ApiError::new(StatusCode::NOT_FOUND, format!("Process not found: {pid}"))
        }
        e @ SandboxError::TooManyProcesses { .. } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{e}: kill one, or wait for one to end"),
        )
        .retry_after(1000),
        e @ SandboxError::StdinClosed(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        SandboxError::File(e) => file_refused(e),
        SandboxError::PortClosed(port) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("Nothing listens on port {port} in the sandbox (its own loopback)"),
        ),
        SandboxError::Internal(message) => {
            tracing::error!(error = message, "sandbox operation failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
        }
        SandboxError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down",
        )
        .retry_after(1000),
    }
}

/// A failed file operation: the caller's path (400), nothing there (404), in the way (409),
/// not the sandbox user's to touch (403), no room (507).
fn file_refused(e: TreeError) -> ApiError {
    let status = match &e {
        TreeError::Path { .. }
        | TreeError::NotADirectory(_)
        | TreeError::IsADirectory(_)
        | TreeError::NotRegular(_)
        | TreeError::Root(_) => StatusCode::BAD_REQUEST,
        TreeError::NotFound(_) => StatusCode::NOT_FOUND,
        TreeError::Exists(_) | TreeError::NotEmpty(_) => StatusCode::CONFLICT,
        TreeError::Denied(_) => StatusCode::FORBIDDEN,
        TreeError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
        TreeError::Io { .. } => {
            tracing::error!(error = %e, "sandbox file operation failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError::new(status, e.to_string())
}

/// Ids are `sbx_` and 32 hex digits; anything else is no sandbox of anyone's.
pub(super) fn parse_id(id: &str) -> Result<SandboxId, ApiError> {
    let good = id
        .strip_prefix("sbx_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if good {
        Ok(SandboxId(id.to_string()))
    } else {
        Err(refused(SandboxError::NotFound, Some(id)))
    }
}

/// `POST /v1/sandboxes`.
#[utoipa::path(post, path = "/v1/sandboxes", security(("bearer" = [])), request_body = CreateSandbox,
    responses((status = 201, body = SandboxWire), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "The token, or the server, has as many sandboxes as it may")))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(mut body): JsonBody<CreateSandbox>,
) -> Result<(StatusCode, Json<SandboxWire>), ApiError> {
    if let Some(files) = body.files.as_mut() {
        crate::coderunner::blobs::resolve_refs(&state, &caller, files, "files").await?;
    }
    let request = body.into_domain()?;
    let info = state
        .sandboxes
        .create(&caller.0, request)
        .await
        .map_err(|e| refused(e, None))?;
    Ok((StatusCode::CREATED, Json(sandbox(info))))
}

/// `GET /v1/sandboxes`.
#[utoipa::path(get, path = "/v1/sandboxes", security(("bearer" = [])),
    responses((status = 200, body = SandboxList), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<SandboxList> {
    let sandboxes = state
        .sandboxes
        .list(&caller.0)
        .into_iter()
        .map(sandbox)
        .collect();
    Json(SandboxList { sandboxes })
}

/// `GET /v1/sandboxes/{id}`.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = SandboxWire), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<SandboxWire>, ApiError> {
    let sid = parse_id(&id)?;
    let info = state
        .sandboxes
        .get(&caller.0, &sid)
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(sandbox(info)))
}

/// `DELETE /v1/sandboxes/{id}`: its processes are killed and it is removed.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Ok), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Ok>, ApiError> {
    let sid = parse_id(&id)?;
    state
        .sandboxes
        .delete(&caller.0, &sid)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(Ok::yes()))
}

/// `POST /v1/sandboxes/{id}/timeout`: it ends `timeoutSecs` from now.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/timeout", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = ExtendSandbox,
    responses((status = 200, body = SandboxWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn extend(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ExtendSandbox>,
) -> Result<Json<SandboxWire>, ApiError> {
    let sid = parse_id(&id)?;
    let info = state
        .sandboxes
        .extend(&caller.0, &sid, body.timeout_secs.0)
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(sandbox(info)))
}

/// `POST /v1/sandboxes/{id}/exec`: runs a command to its end. Commands run side by side; each
/// has its own verdict, CPU time and peak memory.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = ExecCommand,
    responses((status = 200, body = ExecResult), (status = 400, body = ErrorBody, description = "A bad field, or a command that could not start"),
        (status = 404, body = ErrorBody)))]
pub async fn exec(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ExecCommand>,
) -> Result<Json<ExecResult>, ApiError> {
    let sid = parse_id(&id)?;
    let (request, encoding) = body.into_domain()?;
    let outcome = state
        .sandboxes
        .exec(&caller.0, &sid, request)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(exec_result(outcome, encoding)))
}
