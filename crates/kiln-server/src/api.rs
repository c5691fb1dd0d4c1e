//! The `/v1` routes of the code-runner contract, `/health`, and Kiln's extensions (SSE events,
//! synchronous `/v1/run`). Every error is JSON with an `error` field; none is a 5xx unless Kiln
//! itself failed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use kiln_lang::{Catalog, Detected, StageLimits};
use kiln_workload::{limit_overrides, run_limits};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ServerConfig;
use crate::job::{JobSpec, StdinRefusal};
use crate::manager::{Admission, JobManager};
use crate::realtime::Realtime;
use crate::validate::{parse_execute, ExecuteInput, Rejection};
use crate::wire::{ExecuteResponse, JobStatus, LanguageInfo};

/// Everything a handler needs.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Settings.
    pub cfg: Arc<ServerConfig>,
    /// Jobs.
    pub jobs: Arc<JobManager>,
    /// Languages.
    pub catalog: Arc<Catalog>,
    /// The Pusher endpoint (signs channel auth).
    pub realtime: Realtime,
    tokens: Arc<Vec<(String, [u8; 32])>>,
}

impl AppState {
    /// State for the routes.
    pub fn new(
        cfg: Arc<ServerConfig>,
        jobs: Arc<JobManager>,
        catalog: Arc<Catalog>,
        realtime: Realtime,
    ) -> Self {
        let tokens = cfg
            .tokens
            .iter()
            .map(|(name, token)| (name.clone(), digest(token)))
            .collect();
        Self {
            cfg,
            jobs,
            catalog,
            realtime,
            tokens: Arc::new(tokens),
        }
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The name of the token a request came with.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
    retry_after_ms: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"error": error.into()}),
            retry_after_ms: None,
        }
    }

    fn not_found(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("Job not found: {id}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        if let Some(ms) = self.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// A JSON body, with JSON errors for a wrong content type, a body that is too large or bad JSON.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/json")
            });
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ));
        }
        let bytes = read_body(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid JSON body: {e}")))
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, ApiError> {
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, format!("Unreadable body: {e}"))
            }
        })
}

/// The router of every API route, with its state applied.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/languages", get(languages))
        .route("/v1/execute", post(execute))
        .route("/v1/run", post(run_sync))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/jobs/{id}/status", get(job_status))
        .route("/v1/jobs/{id}/output", get(job_output))
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/jobs/{id}/start", post(job_start))
        .route("/v1/jobs/{id}/stdin", post(job_stdin))
        .route("/v1/jobs/{id}/stdin/close", post(job_stdin_close))
        .route("/v1/jobs/{id}/kill", post(job_kill))
        .route("/v1/channel-auth", post(channel_auth))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    crate::openapi::json(),
                )
            }),
        )
        .merge(v1)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.cfg.max_body_bytes,
        ))
        .with_state(state)
}

async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(digest);
    // Every token is compared, each in constant time, so timing tells nothing.
    let mut found = None;
    if let Some(p) = presented {
        for (name, want) in state.tokens.iter() {
            if bool::from(p.ct_eq(want)) {
                found = Some(name.clone());
            }
        }
    }
    match found {
        Some(name) => {
            req.extensions_mut().insert(Caller(name));
            next.run(req).await
        }
        None => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized").into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let jobs = &state.jobs;
    let text = jobs.metrics.render(crate::metrics::Gauges {
        queued: jobs
            .counters
            .queued
            .load(std::sync::atomic::Ordering::Relaxed),
        active: jobs
            .counters
            .active
            .load(std::sync::atomic::Ordering::Relaxed),
        pool_ready: jobs.engine().pool_ready(),
        connections: state.realtime.connections(),
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn languages(State(state): State<AppState>) -> Json<Vec<LanguageInfo>> {
    // Detection ran once when the server started; this only reads its results.
    let list = state
        .catalog
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

fn resolve<'a>(catalog: &'a Catalog, input: &ExecuteInput) -> Result<&'a Detected, ApiError> {
    let unknown = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Unknown language \"{}\". Check GET /v1/languages.",
                input.language
            ),
        )
    };
    let found = catalog.find(&input.language).ok_or_else(unknown)?;
    let version = found.version.as_ref().map_err(|_| unknown())?;
    if let Some(want) = &input.version {
        let matches = version == want || version.starts_with(&format!("{want}."));
        if !matches {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "Unknown version \"{want}\" for language \"{}\". Check GET /v1/languages.",
                    found.language.name
                ),
            ));
        }
    }
    Ok(found)
}

fn reject(r: Rejection) -> ApiError {
    match r {
        Rejection::Invalid(details) => ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!({"error": "Validation error", "details": details}),
            retry_after_ms: None,
        },
        Rejection::TooLarge { bytes, max } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Files total {bytes} bytes, over the {max}-byte limit"),
        ),
    }
}

fn job_spec(state: &AppState, input: &ExecuteInput, found: &Detected, auto_start: bool) -> JobSpec {
    let max = state.cfg.max_limits;
    let clamp = |v: Option<u64>, cap: u64| v.map(|v| v.min(cap));
    let l = input.limits;
    let overrides = StageLimits {
        wall_ms: clamp(l.wall_time_ms, max.wall_time_ms),
        cpu_ms: clamp(l.cpu_ms, max.cpu_ms),
        memory_mb: clamp(l.memory_mb, max.memory_mb),
        pids: clamp(l.pids, max.pids),
        output_kb: clamp(l.output_kb, max.output_kb),
        file_size_kb: l.file_size_kb,
    };
    let mut limits = run_limits(&found.language, &limit_overrides(&overrides));
    limits.idle_time = l
        .idle_ms
        .map(|ms| Duration::from_millis(ms.min(max.idle_ms)));
    limits.open_files = l.open_files.or(limits.open_files);
    let mut files = input.files.clone();
    // The entry is the language's entry file when given, else the first file.
    if let Some(pos) = files.iter().position(|f| f.name == found.language.entry) {
        let entry = files.remove(pos);
        files.insert(0, entry);
    }
    JobSpec {
        language: found.language.clone(),
        version: found.version.clone().unwrap_or_default(),
        files,
        args: input.args.clone(),
        limits,
        collect_output: input.collect_output,
        auto_start,
    }
}

fn admit(
    state: &AppState,
    caller: &Caller,
    body: &Value,
    sync: bool,
) -> Result<Arc<crate::job::Job>, ApiError> {
    let input = parse_execute(body, &state.cfg).map_err(reject)?;
    let found = resolve(&state.catalog, &input)?;
    let mut spec = job_spec(state, &input, found, sync || input.auto_start);
    if sync {
        spec.collect_output = true;
    }
    let job = state.jobs.submit(&caller.0, spec).map_err(|a| match a {
        Admission::Full { depth, cap } => ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: json!({
                "error": format!("Executor at capacity (queue depth {depth} ≥ {cap}). Retry shortly."),
                "retryAfterMs": 1000
            }),
            retry_after_ms: Some(1000),
        },
        Admission::ShuttingDown => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: json!({"error": "The server is shutting down", "retryAfterMs": 1000}),
            retry_after_ms: Some(1000),
        },
    })?;
    if let Some(stdin) = &input.stdin {
        let _ = job.push_stdin(stdin.as_bytes().to_vec(), u32::MAX, usize::MAX);
        job.close_stdin();
    }
    Ok(job)
}

async fn execute(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<ExecuteResponse>), ApiError> {
    let job = admit(&state, &caller, &body, false)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ExecuteResponse {
            job_id: job.id.clone(),
            channel: job.channel.clone(),
            status: "queued",
        }),
    ))
}

async fn run_sync(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let job = admit(&state, &caller, &body, true)?;
    job.wait_finished().await;
    let output = job.output();
    let usage = serde_json::to_value(job.usage()).unwrap_or(Value::Null);
    let mut value = serde_json::to_value(output).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("jobId".into(), job.id.clone().into());
        map.insert("usage".into(), usage);
    }
    Ok(Json(value))
}

fn status_of(state: &AppState, caller: &Caller, id: &str) -> Result<JobStatus, ApiError> {
    if let Some(job) = state.jobs.get(id, &caller.0) {
        return Ok(job.status());
    }
    let r = state
        .jobs
        .stored(id, &caller.0)
        .ok_or_else(|| ApiError::not_found(id))?;
    Ok(JobStatus {
        channel: format!("private-run-{}", r.id),
        job_id: r.id,
        language: r.language,
        version: r.version,
        state: r.state,
        updated_at_ms: r.updated_at_ms,
    })
}

async fn job_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>, ApiError> {
    status_of(&state, &caller, &id).map(Json)
}

async fn job_output(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, format!("Job output not found: {id}"));
    if let Some(job) = state.jobs.get(&id, &caller.0) {
        return job
            .output()
            .map(|o| Json(o).into_response())
            .ok_or_else(missing);
    }
    let stored = state
        .jobs
        .stored(&id, &caller.0)
        .and_then(|r| r.output)
        .ok_or_else(missing)?;
    let value: Value = serde_json::from_str(&stored).map_err(|_| missing())?;
    Ok(Json(value).into_response())
}

fn live_job(state: &AppState, caller: &Caller, id: &str) -> Result<Arc<crate::job::Job>, ApiError> {
    state
        .jobs
        .get(id, &caller.0)
        .ok_or_else(|| ApiError::not_found(id))
}

fn ok() -> Json<Value> {
    Json(json!({"ok": true}))
}

async fn job_start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    live_job(&state, &caller, &id)?.request_start();
    Ok((StatusCode::ACCEPTED, ok()))
}

async fn job_stdin(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let job = live_job(&state, &caller, &id)?;
    let Some(chunk) = body.get("chunk").and_then(Value::as_str) else {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!({"error": "Validation error", "details": [{"path": "chunk", "message": "is required and must be a string"}]}),
            retry_after_ms: None,
        });
    };
    match job.push_stdin(
        chunk.as_bytes().to_vec(),
        state.cfg.stdin_frames_per_sec,
        state.cfg.stdin_pending_bytes,
    ) {
        Ok(()) => Ok(ok()),
        Err(StdinRefusal::Rate) => Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: json!({"error": "Too many stdin frames", "retryAfterMs": 1000}),
            retry_after_ms: Some(1000),
        }),
        Err(StdinRefusal::Pending { cap }) => Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: json!({"error": "Stdin pending-byte cap exceeded. Wait for the worker to drain.", "capBytes": cap}),
            retry_after_ms: Some(100),
        }),
        Err(StdinRefusal::Closed) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Stdin of job {id} is closed"),
        )),
    }
}

async fn job_stdin_close(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    live_job(&state, &caller, &id)?.close_stdin();
    Ok(ok())
}

async fn job_kill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match state.jobs.get(&id, &caller.0) {
        Some(job) => job.request_kill(),
        // A job that is over can be killed all the same: nothing happens.
        None if state.jobs.stored(&id, &caller.0).is_some() => {}
        None => return Err(ApiError::not_found(&id)),
    }
    Ok(ok())
}

async fn job_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let job = live_job(&state, &caller, &id)?;
    let (past, live) = job.replay();
    let done_already = past.iter().any(|e| e.name == "result");
    let to_sse = |e: &crate::bus::Event| {
        Ok::<_, Infallible>(
            SseEvent::default()
                .event(e.name.clone())
                .data(e.data.to_string()),
        )
    };
    let past_stream = stream::iter(past.iter().map(|e| to_sse(e)).collect::<Vec<_>>());
    let live_stream = stream::unfold((live, done_already), move |(mut rx, done)| async move {
        if done {
            return None;
        }
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let last = e.name == "result";
                    return Some((to_sse(&e), (rx, last)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    Ok(Sse::new(past_stream.chain(live_stream)).keep_alive(KeepAlive::default()))
}

/// `POST /v1/channel-auth`, JSON or form-encoded.
async fn channel_auth(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let bytes = read_body(req, &state).await?;
    let (socket_id, channel) = if form {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Invalid form body"))?;
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        (get("socket_id"), get("channel_name"))
    } else {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Invalid JSON body"))?;
        let get = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        (get("socket_id"), get("channel_name"))
    };
    let (Some(socket_id), Some(channel)) = (socket_id, channel) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Missing required fields: socket_id, channel_name",
        ));
    };
    if !Realtime::valid_socket_id(&socket_id) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "Invalid socket_id"));
    }
    let forbidden = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "Only private-run-<jobId> channels can be authorized here",
        )
    };
    let id = channel.strip_prefix("private-run-").ok_or_else(forbidden)?;
    let owned =
        state.jobs.get(id, &caller.0).is_some() || state.jobs.stored(id, &caller.0).is_some();
    if !owned {
        return Err(forbidden());
    }
    Ok(Json(
        json!({"auth": state.realtime.sign(&socket_id, &channel)}),
    ))
}
