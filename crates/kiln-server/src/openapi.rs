//! The OpenAPI description of the HTTP API, served at `/openapi.json` and kept as a snapshot
//! (`crates/kiln-server/openapi.json`) that a test compares, so any change to the API shows up in
//! review. Request bodies are validated by hand (see `validate.rs`); their schemas are described
//! here.

#![allow(dead_code)] // The path functions exist only to carry their `#[utoipa::path]` attributes.

use serde::Serialize;
use utoipa::{Modify, OpenApi, ToSchema};

use crate::wire::{
    CompileResultWire, ExecuteResponse, JobState, JobStatus, LanguageInfo, ResultEvent,
    RunResultWire, StageUsage, UsageEvent,
};

/// A file of a job.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct FileInput {
    /// A relative path (1–255 characters, no `..`, no NUL).
    name: String,
    /// The content.
    content: String,
    /// `utf8` (default) or `base64`.
    encoding: Option<String>,
}

/// Limits a job may ask for, merged over the language's defaults and clamped to the server's maxima.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct LimitsOverride {
    wall_time_ms: Option<u64>,
    idle_ms: Option<u64>,
    cpu_ms: Option<u64>,
    memory_mb: Option<u64>,
    pids: Option<u64>,
    output_kb: Option<u64>,
    /// Kiln: largest file written, KiB.
    file_size_kb: Option<u64>,
    /// Kiln: open files per process.
    open_files: Option<u64>,
    /// Kiln: only `none`.
    network: Option<String>,
    /// Accepted for compatibility; Kiln keeps no artifacts.
    max_artifacts: Option<u64>,
    /// Accepted for compatibility.
    max_artifact_bytes: Option<u64>,
}

/// `POST /v1/execute` and `POST /v1/run`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ExecuteRequest {
    /// A language name or alias from `GET /v1/languages`.
    language: String,
    /// A version, or its prefix (`3.11`).
    version: Option<String>,
    files: Vec<FileInput>,
    limits: Option<LimitsOverride>,
    /// Keep stdout and stderr for `GET /v1/jobs/{id}/output`.
    collect_output: Option<bool>,
    /// Kiln: all of stdin, given up front (then closed).
    stdin: Option<String>,
    /// Kiln: program arguments.
    args: Option<Vec<String>>,
    /// Kiln: start without waiting for `POST /start`.
    auto_start: Option<bool>,
}

/// `POST /v1/jobs/{id}/stdin`.
#[derive(Serialize, ToSchema)]
struct StdinRequest {
    chunk: String,
}

/// `POST /v1/channel-auth` (JSON or form-encoded).
#[derive(Serialize, ToSchema)]
struct ChannelAuthRequest {
    socket_id: String,
    channel_name: String,
}

/// `POST /v1/channel-auth` answer.
#[derive(Serialize, ToSchema)]
struct ChannelAuthResponse {
    /// `<appKey>:<hex HMAC-SHA256>`.
    auth: String,
}

/// `{"ok": true}`.
#[derive(Serialize, ToSchema)]
struct Ok {
    ok: bool,
}

/// Every error body.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    error: String,
    /// For validation errors: each field and what is wrong with it.
    details: Option<Vec<crate::validate::Detail>>,
    /// For 429s.
    retry_after_ms: Option<u64>,
    /// For the stdin pending-byte 429.
    cap_bytes: Option<u64>,
}

/// `POST /v1/run` answer: the RunResult plus the job id and Kiln's usage.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RunSyncResponse {
    #[serde(flatten)]
    result: RunResultWire,
    job_id: String,
    usage: UsageEvent,
}

#[utoipa::path(get, path = "/health", responses((status = 200, description = "Up")))]
fn health() {}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
fn metrics() {}

#[utoipa::path(get, path = "/v1/languages", security(("bearer" = [])),
    responses((status = 200, body = Vec<LanguageInfo>), (status = 401, body = ErrorBody)))]
fn languages() {}

#[utoipa::path(post, path = "/v1/execute", security(("bearer" = [])), request_body = ExecuteRequest,
    responses((status = 202, body = ExecuteResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "Queue full; see Retry-After")))]
fn execute() {}

#[utoipa::path(post, path = "/v1/run", security(("bearer" = [])), request_body = ExecuteRequest,
    responses((status = 200, body = RunSyncResponse), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
fn run() {}

#[utoipa::path(get, path = "/v1/jobs/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = JobStatus), (status = 404, body = ErrorBody)))]
fn job() {}

#[utoipa::path(get, path = "/v1/jobs/{id}/status", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = JobStatus), (status = 404, body = ErrorBody)))]
fn job_status() {}

#[utoipa::path(get, path = "/v1/jobs/{id}/output", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = RunResultWire), (status = 404, body = ErrorBody)))]
fn job_output() {}

#[utoipa::path(get, path = "/v1/jobs/{id}/events", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, content_type = "text/event-stream",
        description = "Every event of the job's channel from the first: stage, stdout, stderr, compile_output, usage, result")))]
fn job_events() {}

#[utoipa::path(post, path = "/v1/jobs/{id}/start", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 202, body = Ok), (status = 404, body = ErrorBody)))]
fn job_start() {}

#[utoipa::path(post, path = "/v1/jobs/{id}/stdin", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = StdinRequest,
    responses((status = 200, body = Ok), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "Too many frames, or too many pending bytes")))]
fn job_stdin() {}

#[utoipa::path(post, path = "/v1/jobs/{id}/stdin/close", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Ok), (status = 404, body = ErrorBody)))]
fn job_stdin_close() {}

#[utoipa::path(post, path = "/v1/jobs/{id}/kill", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Ok), (status = 404, body = ErrorBody)))]
fn job_kill() {}

#[utoipa::path(post, path = "/v1/channel-auth", security(("bearer" = [])), request_body = ChannelAuthRequest,
    responses((status = 200, body = ChannelAuthResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
fn channel_auth() {}

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API description.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Kiln", description = "Runs untrusted code: the code-runner job API and Kiln's extensions."),
    paths(health, metrics, languages, execute, run, job, job_status, job_output, job_events, job_start,
        job_stdin, job_stdin_close, job_kill, channel_auth),
    components(schemas(JobState, ResultEvent, CompileResultWire, StageUsage)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The description as pretty JSON.
pub fn json() -> String {
    let mut doc = ApiDoc::openapi();
    // The crate version would churn the snapshot on every release bump.
    doc.info.version = "1".into();
    doc.to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    /// The committed snapshot matches the code. Set `KILN_UPDATE_SNAPSHOTS=1` to rewrite it.
    #[test]
    fn openapi_snapshot() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let now = super::json();
        if std::env::var("KILN_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
            std::fs::write(&path, &now).unwrap();
        }
        let saved = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            saved == now,
            "openapi.json is out of date; rerun with KILN_UPDATE_SNAPSHOTS=1 and review the diff"
        );
        let v: serde_json::Value = serde_json::from_str(&now).unwrap();
        for path in [
            "/v1/execute",
            "/v1/jobs/{id}/stdin",
            "/v1/channel-auth",
            "/v1/run",
        ] {
            assert!(v["paths"][path].is_object(), "{path} missing");
        }
        assert!(v["components"]["schemas"]["RunResultWire"].is_object());
    }
}
