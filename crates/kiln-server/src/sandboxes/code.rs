//! The runtime helpers' routes: JavaScript or Python code run in a sandbox as a command
//! (`exec`), for the JSON value it hands back (`run`), or in the background (`spawn`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use kiln_core::sandbox::{CodeRequest, Runtime};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::handlers::{parse_id, refused};
use super::process_wire::{process, ProcessWire};
use super::wire::{exec_result, ExecCommand, ExecResult};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::coderunner::request::{OutputEncodingName, Positive};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// `POST /v1/sandboxes/{id}/code/{exec,run,spawn}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunCode {
    /// `javascript` (node, CommonJS) or `python`.
    pub language: String,
    /// The source.
    pub code: String,
    /// Where it runs.
    pub cwd: Option<String>,
    /// Environment over the sandbox's.
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// Its stdin.
    pub stdin: Option<String>,
    /// How long it may run, ms.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub timeout_ms: Option<Positive>,
    /// `utf8` (default) or `base64`, for stdout and stderr.
    pub output_encoding: Option<OutputEncodingName>,
}

impl RunCode {
    fn into_domain(self) -> Result<(CodeRequest, OutputEncodingName), ApiError> {
        let runtime = Runtime::parse(&self.language)
            .ok_or_else(|| ApiError::field("language", "must be `javascript` or `python`"))?;
        // The command's fields are checked as exec's are; its argv is the runtime's.
        let (exec, encoding) = ExecCommand {
            argv: Some(vec![String::new()]),
            cmd: None,
            cwd: self.cwd,
            env: self.env,
            stdin: self.stdin,
            timeout_ms: self.timeout_ms,
            output_encoding: self.output_encoding,
        }
        .into_domain()?;
        Ok((
            CodeRequest {
                runtime,
                code: self.code,
                exec,
            },
            encoding,
        ))
    }
}

/// What `run` answers: the command's result and the value.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunCodeResult {
    /// The value handed back, or null.
    pub value: serde_json::Value,
    /// Whether one was handed back at all.
    pub returned: bool,
    /// How the code ran.
    #[serde(flatten)]
    pub result: ExecResult,
}

/// `POST /v1/sandboxes/{id}/code/exec`: runs the code to its end: stdout, stderr, exit code.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/code/exec", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = RunCode,
    responses((status = 200, body = ExecResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn exec(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RunCode>,
) -> Result<Json<ExecResult>, ApiError> {
    let sid = parse_id(&id)?;
    let (req, encoding) = body.into_domain()?;
    let outcome = state
        .sandboxes
        .code_exec(&caller.0, &sid, req)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(exec_result(outcome, encoding)))
}

/// `POST /v1/sandboxes/{id}/code/run`: runs the code for the JSON value it hands back through
/// `__return(value)` (JS) or `kiln_return(value)` (Python), the first call winning; failing
/// that, JS's `module.exports` (a promise awaited) or Python's last line when it is an
/// expression. Sets become lists, Python bytes UTF-8 text, objects their fields, JS BigInts
/// strings.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/code/run", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = RunCode,
    responses((status = 200, body = RunCodeResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RunCode>,
) -> Result<Json<RunCodeResult>, ApiError> {
    let sid = parse_id(&id)?;
    let (req, encoding) = body.into_domain()?;
    let ran = state
        .sandboxes
        .code_run(&caller.0, &sid, req)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok(Json(RunCodeResult {
        returned: ran.value.is_some(),
        value: ran.value.unwrap_or(serde_json::Value::Null),
        result: exec_result(ran.outcome, encoding),
    }))
}

/// `POST /v1/sandboxes/{id}/code/spawn`: starts the code as a background process.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/code/spawn", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = RunCode,
    responses((status = 201, body = ProcessWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn spawn(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RunCode>,
) -> Result<(StatusCode, Json<ProcessWire>), ApiError> {
    let sid = parse_id(&id)?;
    let (req, _) = body.into_domain()?;
    let info = state
        .sandboxes
        .code_spawn(&caller.0, &sid, req)
        .await
        .map_err(|e| refused(e, Some(&id)))?;
    Ok((StatusCode::CREATED, Json(process(info))))
}
