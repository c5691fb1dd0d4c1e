//! The code-runner routes (and Kiln's extensions to them): thin handlers that decode the wire,
//! call the job service, and project its answers back to the contract's shapes. Each carries its
//! OpenAPI description, so the routes and the document come from one source.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::stream::{self, Stream, StreamExt};
use kiln_core::trace::TraceContext;
use kiln_core::{AdmissionError, ControlError, JobId, JobRecord};
use serde_json::{json, Value};

use super::output;
use super::project;
use super::request::{ChannelAuthRequest, ExecuteRequest, StdinRequest};
use super::wire::{
    ArtifactWire, ExecuteResponse, JobStatus, LanguageInfo, RunResultWire, UsageEvent,
};
use crate::auth::Caller;
use crate::body::{content_type, parse_json, JsonBody, RawBody};
use crate::error::{echo, ApiError, Detail, ErrorBody};
use crate::state::AppState;

/// `{"ok": true}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Ok {
    ok: bool,
}

impl Ok {
    /// `{"ok": true}`.
    pub fn yes() -> Self {
        Ok { ok: true }
    }
}

fn ok() -> Json<Ok> {
    Json(Ok::yes())
}

/// `POST /v1/channel-auth` answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ChannelAuthResponse {
    /// `<appKey>:<hex HMAC-SHA256>`.
    auth: String,
}

/// `POST /v1/run` answer: the RunResult plus the job id and Kiln's usage.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSyncResponse {
    #[serde(flatten)]
    result: RunResultWire,
    job_id: String,
    usage: UsageEvent,
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Job not found: {}", echo(id)),
    )
}

/// A refused admission as the contract's answer.
pub(crate) fn refused(e: AdmissionError) -> ApiError {
    match e {
        AdmissionError::Invalid(details) => {
            ApiError::invalid(details.into_iter().map(Detail::from).collect())
        }
        AdmissionError::UnknownLanguage(name) => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Unknown language \"{}\". Check GET /v1/languages.",
                echo(&name)
            ),
        ),
        AdmissionError::UnknownVersion { language, version } => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Unknown version \"{}\" for language \"{language}\". Check GET /v1/languages.",
                echo(&version)
            ),
        ),
        AdmissionError::TooLarge { bytes, max } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Files total {bytes} bytes, over the {max}-byte limit"),
        ),
        AdmissionError::QueueFull { depth, cap } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Executor at capacity (queue depth {depth} ≥ {cap}). Retry shortly."),
        )
        .retry_after(1000),
        e @ (AdmissionError::OwnerQueueFull { .. } | AdmissionError::OwnerAwaitingFull { .. }) => {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Executor at capacity for this token: {e}. Retry shortly."),
            )
            .retry_after(1000)
        }
        e @ (AdmissionError::OwnerStorageFull { .. } | AdmissionError::StorageFull { .. }) => {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Output storage full: {e}. Retry once older results expire."),
            )
            .retry_after(60_000)
        }
        AdmissionError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down",
        )
        .retry_after(1000),
    }
}

fn control_error(e: ControlError, id: &str) -> ApiError {
    match e {
        ControlError::NotFound => not_found(id),
        ControlError::Finished => ApiError::new(
            StatusCode::CONFLICT,
            format!("Job {} is over", echo(id)),
        ),
        ControlError::Stdin(kiln_core::control::StdinRefusal::Rate) => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Too many stdin frames").retry_after(1000)
        }
        ControlError::Stdin(kiln_core::control::StdinRefusal::Pending { cap }) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Stdin pending-byte cap exceeded. Wait for the worker to drain.",
        )
        .cap_bytes(cap as u64)
        .retry_after(100),
        ControlError::Stdin(kiln_core::control::StdinRefusal::TooLarge { size, cap }) => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("A stdin frame of {size} bytes is larger than the {cap}-byte pending cap: send it in smaller frames"),
            )
            .cap_bytes(cap as u64)
        }
        ControlError::Stdin(kiln_core::control::StdinRefusal::Closed) => ApiError::new(
            StatusCode::CONFLICT,
            format!("Stdin of job {} is closed", echo(id)),
        ),
    }
}

/// `GET /health`.
#[utoipa::path(get, path = "/health", responses((status = 200, description = "Up")))]
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /v1/languages`.
#[utoipa::path(get, path = "/v1/languages", security(("bearer" = [])),
    responses((status = 200, body = Vec<LanguageInfo>), (status = 401, body = ErrorBody)))]
pub async fn languages(State(state): State<AppState>) -> Json<Vec<LanguageInfo>> {
    // Detection ran once when the server started; this only reads its results.
    let list = state
        .service
        .catalog()
        .available()
        .map(|d| LanguageInfo {
            language: d.language.name.clone(),
            version: d.version.clone().unwrap_or_default(),
            aliases: d.language.aliases.clone(),
            interactive: d.language.interactive,
        })
        .collect();
    Json(list)
}

async fn admit(
    state: &AppState,
    caller: &Caller,
    trace: Option<Extension<TraceContext>>,
    mut body: ExecuteRequest,
    sync: bool,
) -> Result<JobId, ApiError> {
    super::blobs::resolve_refs(state, caller, &mut body.files, "files").await?;
    let mut request = body.into_domain(sync, trace.map(|Extension(t)| t))?;
    if sync {
        request.collect_output = true;
    }
    state.service.submit(&caller.0, request).map_err(refused)
}

/// `POST /v1/execute`.
#[utoipa::path(post, path = "/v1/execute", security(("bearer" = [])), request_body = ExecuteRequest,
    responses((status = 202, body = ExecuteResponse), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "Queue full, or the token's quota of waiting jobs or stored output reached; see Retry-After")))]
pub async fn execute(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    trace: Option<Extension<TraceContext>>,
    JsonBody(body): JsonBody<ExecuteRequest>,
) -> Result<(StatusCode, Json<ExecuteResponse>), ApiError> {
    let id = admit(&state, &caller, trace, body, false).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ExecuteResponse {
            channel: project::channel_of(id.as_str()),
            job_id: id.to_string(),
            status: "queued",
        }),
    ))
}

/// `POST /v1/run`.
#[utoipa::path(post, path = "/v1/run", operation_id = "run", security(("bearer" = [])), request_body = ExecuteRequest,
    responses((status = 200, body = RunSyncResponse), (status = 400, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn run_sync(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    trace: Option<Extension<TraceContext>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ExecuteRequest>,
) -> Result<Response, ApiError> {
    let id = admit(&state, &caller, trace, body, true).await?;
    state.service.wait_finished(&id).await;
    let record = state
        .service
        .record_of(&caller.0, &id)
        .await
        .ok_or_else(|| not_found(id.as_str()))?;
    let usage = record
        .outcome
        .as_ref()
        .map(|o| serde_json::to_value(project::usage(o)).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    let mut extra = serde_json::Map::new();
    extra.insert("jobId".into(), id.to_string().into());
    extra.insert("usage".into(), usage);
    let artifacts = artifacts_of(&state, &record, &headers);
    Ok(json_body(output::run_result(
        state.service.clone(),
        record,
        artifacts,
        extra,
    )))
}

/// A finished job's artifacts as the contract's, their URLs signed for a reader of `headers`.
fn artifacts_of(state: &AppState, record: &JobRecord, headers: &HeaderMap) -> Vec<ArtifactWire> {
    let Some(outcome) = &record.outcome else {
        return Vec::new();
    };
    let base = state.links.base(Some(headers));
    let urls = project::UrlContext {
        links: &state.links,
        base: &base,
        job: &record.id,
        expires: project::UrlContext::expiry_of(record.expires_at_ms, state.cfg.result_ttl()),
    };
    outcome
        .artifacts
        .iter()
        .map(|a| project::artifact(a, &urls))
        .collect()
}

fn json_body(body: axum::body::Body) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn owned(state: &AppState, caller: &Caller, id: &str) -> Result<JobRecord, ApiError> {
    state
        .service
        .record_of(&caller.0, &JobId(id.to_string()))
        .await
        .ok_or_else(|| not_found(id))
}

/// `GET /v1/jobs/{id}`.
#[utoipa::path(get, path = "/v1/jobs/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = JobStatus), (status = 404, body = ErrorBody)))]
pub async fn job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>, ApiError> {
    Ok(Json(project::status(&owned(&state, &caller, &id).await?)))
}

/// `GET /v1/jobs/{id}/status`.
#[utoipa::path(get, path = "/v1/jobs/{id}/status", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = JobStatus), (status = 404, body = ErrorBody)))]
pub async fn job_status(
    state: State<AppState>,
    caller: Extension<Caller>,
    id: Path<String>,
) -> Result<Json<JobStatus>, ApiError> {
    job(state, caller, id).await
}

/// `GET /v1/jobs/{id}/output`.
#[utoipa::path(get, path = "/v1/jobs/{id}/output", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = RunResultWire), (status = 404, body = ErrorBody)))]
pub async fn job_output(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Job output not found: {}", echo(&id)),
        )
    };
    let record = owned(&state, &caller, &id).await.map_err(|_| missing())?;
    if !record.collect_output || record.outcome.is_none() {
        return Err(missing());
    }
    let artifacts = artifacts_of(&state, &record, &headers);
    Ok(json_body(output::run_result(
        state.service.clone(),
        record,
        artifacts,
        serde_json::Map::new(),
    )))
}

/// `GET /v1/jobs/{id}/events`.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, content_type = "text/event-stream",
        description = "Every event of the job's channel from the first: stage, stdout, stderr, compile_output, usage, result"),
        (status = 404, body = ErrorBody)))]
pub async fn job_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let record = owned(&state, &caller, &id).await?;
    let encoding = record.output_encoding;
    let links = state.links.clone();
    let base = links.base(Some(&headers));
    let expires = project::UrlContext::expiry_of(record.expires_at_ms, state.cfg.result_ttl());
    let job = record.id.clone();
    let events = state.service.events(&record.id, 0).flat_map(move |e| {
        let urls = project::UrlContext {
            links: &links,
            base: &base,
            job: &job,
            expires,
        };
        stream::iter(
            project::events(&e, encoding, &urls)
                .into_iter()
                .map(|(name, data)| Ok(SseEvent::default().event(name).data(data)))
                .collect::<Vec<_>>(),
        )
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// `POST /v1/jobs/{id}/start`.
#[utoipa::path(post, path = "/v1/jobs/{id}/start", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 202, body = Ok), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The job is over")))]
pub async fn job_start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Ok>), ApiError> {
    state
        .service
        .start_job(&caller.0, &JobId(id.clone()))
        .await
        .map_err(|e| control_error(e, &id))?;
    Ok((StatusCode::ACCEPTED, ok()))
}

/// `POST /v1/jobs/{id}/stdin`.
#[utoipa::path(post, path = "/v1/jobs/{id}/stdin", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = StdinRequest,
    responses((status = 200, body = Ok), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody, description = "One frame larger than the pending-byte cap"),
        (status = 429, body = ErrorBody, description = "Too many frames, or too many pending bytes")))]
pub async fn job_stdin(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<StdinRequest>,
) -> Result<Json<Ok>, ApiError> {
    state
        .service
        .stdin(&caller.0, &JobId(id.clone()), body.chunk.into_bytes())
        .map_err(|e| control_error(e, &id))?;
    Ok(ok())
}

/// `POST /v1/jobs/{id}/stdin/close`.
#[utoipa::path(post, path = "/v1/jobs/{id}/stdin/close", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Ok), (status = 404, body = ErrorBody)))]
pub async fn job_stdin_close(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Ok>, ApiError> {
    match state.service.close_stdin(&caller.0, &JobId(id.clone())) {
        Err(ControlError::NotFound) => {
            // Over already: its stdin is closed.
            owned(&state, &caller, &id).await?;
            Ok(ok())
        }
        r => r.map(|()| ok()).map_err(|e| control_error(e, &id)),
    }
}

/// `POST /v1/jobs/{id}/kill`.
#[utoipa::path(post, path = "/v1/jobs/{id}/kill", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Ok), (status = 404, body = ErrorBody)))]
pub async fn job_kill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Ok>, ApiError> {
    state
        .service
        .kill(&caller.0, &JobId(id.clone()))
        .await
        .map_err(|e| control_error(e, &id))?;
    Ok(ok())
}

/// `POST /v1/channel-auth`, JSON or form-encoded.
#[utoipa::path(post, path = "/v1/channel-auth", security(("bearer" = [])), request_body = ChannelAuthRequest,
    responses((status = 200, body = ChannelAuthResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn channel_auth(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawBody(headers, bytes): RawBody,
) -> Result<Json<ChannelAuthResponse>, ApiError> {
    let form = content_type(&headers).eq_ignore_ascii_case("application/x-www-form-urlencoded");
    let request: ChannelAuthRequest = if form {
        serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Invalid form body"))?
    } else {
        parse_json(&bytes)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Invalid JSON body"))?
    };
    let (Some(socket_id), Some(channel)) = (request.socket_id, request.channel_name) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Missing required fields: socket_id, channel_name",
        ));
    };
    if !kiln_pusher::Realtime::valid_socket_id(&socket_id) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "Invalid socket_id"));
    }
    let forbidden = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "Only private-run-<jobId> channels can be authorized here",
        )
    };
    let id = project::job_of_channel(&channel).ok_or_else(forbidden)?;
    if owned(&state, &caller, id).await.is_err() {
        return Err(forbidden());
    }
    Ok(Json(ChannelAuthResponse {
        auth: state.realtime.sign(&socket_id, &channel),
    }))
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, body = ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    metrics_text(&state)
}

/// The metrics exposition.
pub fn metrics_text(state: &AppState) -> Response {
    let text = state.service.render_metrics(kiln_core::metrics::Gauges {
        pool_ready: state.service.executor().pool_ready(),
        connections: state.realtime.connections(),
        sandboxes: state.sandboxes.count(),
        sandbox_pool_ready: state.sandboxes.pooled(),
        ..kiln_core::metrics::Gauges::default()
    }) + &state.functions.render_metrics()
        + &state.compat.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
