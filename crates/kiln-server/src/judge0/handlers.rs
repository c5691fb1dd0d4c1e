//! Judge0's HTTP routes: thin handlers over the same job service as `POST /v1/run` (the same
//! admission, queue, quotas, limits and metrics), answering in Judge0's shapes and with its
//! `{"field": [...]}` and `{"error": ...}` refusals. A submission's token is its job's id.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kiln_core::job::now_ms;
use kiln_core::JobId;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::project;
use super::store::{Entry, Runs, Store};
use super::view::view_of;
use super::wire::{
    flag, About, BatchRequest, CreateQuery, Judge0Error, Judge0Language, Judge0LanguageArchived,
    Judge0LanguageDetail, Judge0Message, Judge0Status, ShowQuery, SubmissionRequest,
};
use crate::auth::Caller;
use crate::body::{read_body, QueryParams};
use crate::state::AppState;

/// Judge0's version, which the Python SDK keys its language aliases by.
pub const VERSION: &str = "1.13.1";

/// Most submissions in one batch, as Judge0's default.
pub const MAX_BATCH: usize = 20;

/// A JSON body of type `T`, refused in Judge0's shapes.
#[derive(Debug)]
pub struct Judge0Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Judge0Json<T> {
    type Rejection = Judge0Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state.cfg.max_body_bytes).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // Rails reads a missing body as no parameters.
            return serde_json::from_str("{}")
                .map(Judge0Json)
                .map_err(|e| Judge0Error::bad(e.to_string()));
        }
        Ok(Judge0Json(crate::body::parse_json(&bytes)?))
    }
}

/// Query parameters, refused in Judge0's shape.
pub(super) fn query<T>(
    q: Result<QueryParams<T>, crate::error::ApiError>,
) -> Result<T, Judge0Error> {
    q.map(|q| q.0).map_err(Judge0Error::from)
}

/// Checks and admits one submission for `caller`, keeping it in the store; its token. With
/// `number_of_runs` or a `callback_url`, a task follows it: it runs the program again while the
/// runs are Accepted, then calls back.
fn admit(
    state: &AppState,
    store: &Arc<Store>,
    caller: &Caller,
    body: SubmissionRequest,
    base64: bool,
) -> Result<String, Judge0Error> {
    let mut checked = project::check(body, state.service.catalog(), base64, &state.cfg)?;
    let language_name = project::language(state.service.catalog(), checked.language_id)
        .map(|l| l.1)
        .unwrap_or_default();
    let request = std::mem::take(&mut checked.request);
    let callback = checked.settings.callback_url.clone();
    let wanted = checked.settings.number_of_runs.max(1);
    let again = (wanted > 1).then(|| request.clone());
    let id = state
        .service
        .submit(&caller.0, request)
        .map_err(|e| Judge0Error::from(crate::coderunner::handlers::refused(e)))?;
    state.compat.judge0.fetch_add(1, Relaxed);
    let now = now_ms();
    let ttl = i64::try_from(state.service.config().result_ttl.as_millis()).unwrap_or(i64::MAX);
    // A task that follows the submission settles it; until then it shows Processing and cannot
    // be deleted, so its callback always has it to send.
    let followed = again.is_some() || callback.is_some();
    let (settle, settled) = tokio::sync::watch::channel(!followed);
    store.insert(
        id.0.clone(),
        Entry {
            owner: caller.0.clone(),
            checked: Arc::new(checked),
            language_name,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl),
            finished: None,
            runs: Runs {
                extra: Vec::new(),
                settled,
            },
        },
    );
    if followed {
        tokio::spawn(super::follow::follow(
            super::follow::Follow {
                state: state.clone(),
                store: store.clone(),
                caller: caller.clone(),
                token: id.0.clone(),
            },
            again.map(|r| (r, wanted)),
            settle,
            callback,
        ));
    }
    Ok(id.0)
}

/// `POST /submissions`: `{"token"}` at once, or with `wait=true` the finished submission.
#[utoipa::path(post, path = "/judge0/submissions", tag = "judge0", security(("bearer" = [])),
    request_body = SubmissionRequest,
    params(("base64_encoded" = Option<bool>, Query), ("wait" = Option<bool>, Query), ("fields" = Option<String>, Query)),
    responses((status = 201, description = "`{\"token\"}`, or the submission's fields with `wait=true`"),
        (status = 400, body = Judge0Message, description = "Invalid fields, or a body that is not JSON"),
        (status = 401, body = Judge0Message),
        (status = 422, description = "`{\"field\": [\"message\"]}`, e.g. `language with id 999 doesn't exist`"),
        (status = 429, body = Judge0Message, description = "Queue full, or the token's quota reached; see Retry-After")))]
pub async fn create(
    State(state): State<AppState>,
    Extension(store): Extension<Arc<Store>>,
    Extension(caller): Extension<Caller>,
    q: Result<QueryParams<CreateQuery>, crate::error::ApiError>,
    Judge0Json(body): Judge0Json<SubmissionRequest>,
) -> Result<Response, Judge0Error> {
    let q = query(q)?;
    let base64 = flag(&q.base64_encoded);
    let wait = flag(&q.wait);
    let fields = project::fields(q.fields.as_deref())?;
    if wait && !state.cfg.judge0.allow_wait {
        return Err(Judge0Error::bad("wait not allowed"));
    }
    let token = admit(&state, &store, &caller, body, base64)?;
    if !wait {
        return Ok((StatusCode::CREATED, Json(json!({"token": token}))).into_response());
    }
    state.service.wait_finished(&JobId(token.clone())).await;
    if let Some(entry) = store.get(&caller.0, &token) {
        let _ = entry.runs.settled.clone().wait_for(|s| *s).await;
    }
    match view_of(&state, &store, &caller, &token, &fields, base64).await {
        Some(Ok(m)) => Ok((StatusCode::CREATED, Json(m)).into_response()),
        // Judge0 answers 201 then too, with the token to fetch it by in base64.
        Some(Err(_)) => Ok((
            StatusCode::CREATED,
            Json(json!({"token": token, "error": project::NOT_UTF8})),
        )
            .into_response()),
        None => Err(Judge0Error::not_found()),
    }
}

/// `GET /submissions/{token}`.
#[utoipa::path(get, path = "/judge0/submissions/{token}", tag = "judge0", security(("bearer" = [])),
    params(("token" = String, Path), ("base64_encoded" = Option<bool>, Query), ("fields" = Option<String>, Query)),
    responses((status = 200, description = "The submission's fields (default 8, `*` for all)"),
        (status = 400, body = Judge0Message, description = "Invalid fields, or output that is not UTF-8 without base64"),
        (status = 404, body = Judge0Message)))]
pub async fn show(
    State(state): State<AppState>,
    Extension(store): Extension<Arc<Store>>,
    Extension(caller): Extension<Caller>,
    Path(token): Path<String>,
    q: Result<QueryParams<ShowQuery>, crate::error::ApiError>,
) -> Result<Json<Map<String, Value>>, Judge0Error> {
    let q = query(q)?;
    let fields = project::fields(q.fields.as_deref())?;
    view_of(
        &state,
        &store,
        &caller,
        &token,
        &fields,
        flag(&q.base64_encoded),
    )
    .await
    .ok_or_else(Judge0Error::not_found)?
    .map(Json)
}

/// `DELETE /submissions/{token}`: forgets a finished submission, answering it in base64.
#[utoipa::path(delete, path = "/judge0/submissions/{token}", tag = "judge0", security(("bearer" = [])),
    params(("token" = String, Path), ("fields" = Option<String>, Query)),
    responses((status = 200, description = "The deleted submission's fields, base64-encoded"),
        (status = 400, body = Judge0Message, description = "Still queued or running"),
        (status = 404, body = Judge0Message)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(store): Extension<Arc<Store>>,
    Extension(caller): Extension<Caller>,
    Path(token): Path<String>,
    q: Result<QueryParams<ShowQuery>, crate::error::ApiError>,
) -> Result<Json<Map<String, Value>>, Judge0Error> {
    let q = query(q)?;
    let fields = project::fields(q.fields.as_deref())?;
    let all = project::fields(Some("status"))?;
    let status = view_of(&state, &store, &caller, &token, &all, true)
        .await
        .ok_or_else(Judge0Error::not_found)??;
    let id = status["status"]["id"].as_u64().unwrap_or(0);
    if id <= 2 {
        let desc = status["status"]["description"].as_str().unwrap_or_default();
        return Err(Judge0Error::bad(format!(
            "submission cannot be deleted because its status is {id} ({desc})"
        )));
    }
    let m = view_of(&state, &store, &caller, &token, &fields, true)
        .await
        .ok_or_else(Judge0Error::not_found)??;
    store.remove(&caller.0, &token);
    Ok(Json(m))
}

/// `GET /submissions`: the caller's submissions, newest first, paged.
#[utoipa::path(get, path = "/judge0/submissions", tag = "judge0", security(("bearer" = [])),
    params(("page" = Option<u64>, Query), ("per_page" = Option<u64>, Query), ("base64_encoded" = Option<bool>, Query), ("fields" = Option<String>, Query)),
    responses((status = 200, description = "`{submissions, meta}`"), (status = 400, body = Judge0Message)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(store): Extension<Arc<Store>>,
    Extension(caller): Extension<Caller>,
    q: Result<QueryParams<ListQuery>, crate::error::ApiError>,
) -> Result<Json<Value>, Judge0Error> {
    let q = query(q)?;
    let fields = project::fields(q.fields.as_deref())?;
    let per_page = q.per_page.unwrap_or(20).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let tokens = store.tokens_of(&caller.0);
    let total = tokens.len() as u64;
    let pages = total.div_ceil(per_page);
    let mut out = Vec::new();
    let skip = usize::try_from((page - 1).saturating_mul(per_page)).unwrap_or(usize::MAX);
    for t in tokens.iter().skip(skip).take(per_page as usize) {
        if let Some(v) = view_of(&state, &store, &caller, t, &fields, flag(&q.base64_encoded)).await
        {
            out.push(Value::Object(v?));
        }
    }
    Ok(Json(json!({
        "submissions": out,
        "meta": {
            "current_page": page,
            "next_page": (page < pages).then_some(page + 1),
            "prev_page": (page > 1).then_some(page - 1),
            "total_pages": pages,
            "total_count": total,
        }
    })))
}

/// Query of `GET /submissions`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct ListQuery {
    /// From 1.
    pub page: Option<u64>,
    /// 20 by default, at most 100.
    pub per_page: Option<u64>,
    /// `true`: text fields in base64.
    pub base64_encoded: Option<String>,
    /// The fields.
    pub fields: Option<String>,
}

/// `POST /submissions/batch`: each item's `{"token"}` or its 422 fields.
#[utoipa::path(post, path = "/judge0/submissions/batch", tag = "judge0", security(("bearer" = [])),
    request_body = BatchRequest, params(("base64_encoded" = Option<bool>, Query)),
    responses((status = 201, description = "`[{\"token\"} | {\"field\": [...]}]`"),
        (status = 400, body = Judge0Message, description = "No submissions, or more than 20"),
        (status = 422, description = "None of them is valid")))]
pub async fn create_batch(
    State(state): State<AppState>,
    Extension(store): Extension<Arc<Store>>,
    Extension(caller): Extension<Caller>,
    q: Result<QueryParams<CreateQuery>, crate::error::ApiError>,
    Judge0Json(body): Judge0Json<BatchRequest>,
) -> Result<Response, Judge0Error> {
    let q = query(q)?;
    if flag(&q.wait) {
        return Err(Judge0Error::bad("wait not allowed"));
    }
    let subs = body.submissions.unwrap_or_default();
    batch_size(subs.len())?;
    let base64 = flag(&q.base64_encoded);
    let mut any = false;
    let mut out = Vec::with_capacity(subs.len());
    for s in subs {
        match admit(&state, &store, &caller, s, base64) {
            Ok(token) => {
                any = true;
                out.push(json!({"token": token}));
            }
            Err(Judge0Error::Fields(f)) => out.push(json!(f)),
            Err(e @ Judge0Error::Error { .. }) if !any => return Err(e),
            Err(Judge0Error::Error { message, .. }) => out.push(json!({"error": message})),
        }
    }
    let status = if any {
        StatusCode::CREATED
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, Json(out)).into_response())
}

fn batch_size(n: usize) -> Result<(), Judge0Error> {
    if n == 0 {
        return Err(Judge0Error::bad(
            "there should be at least one submission in a batch",
        ));
    }
    if n > MAX_BATCH {
        return Err(Judge0Error::bad(format!(
            "number of submissions in a batch should be less than or equal to {MAX_BATCH}"
        )));
    }
    Ok(())
}

/// `GET /submissions/batch?tokens=a,b`: each one's fields, or `null` for an unknown one.
#[utoipa::path(get, path = "/judge0/submissions/batch", tag = "judge0", security(("bearer" = [])),
    params(("tokens" = String, Query), ("base64_encoded" = Option<bool>, Query), ("fields" = Option<String>, Query)),
    responses((status = 200, description = "`{\"submissions\": [fields | null]}`"),
        (status = 400, body = Judge0Message)))]
pub async fn show_batch(
    State(state): State<AppState>,
    Extension(store): Extension<Arc<Store>>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    q: Result<QueryParams<ShowQuery>, crate::error::ApiError>,
) -> Result<Json<Value>, Judge0Error> {
    let q = query(q)?;
    let fields = project::fields(q.fields.as_deref())?;
    // Judge0 takes the tokens from a header of that name too.
    let tokens = q
        .tokens
        .or_else(|| {
            headers
                .get("tokens")
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        })
        .unwrap_or_default();
    let tokens: Vec<&str> = tokens
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    batch_size(tokens.len())?;
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        match view_of(&state, &store, &caller, t, &fields, flag(&q.base64_encoded)).await {
            Some(v) => out.push(Value::Object(v?)),
            None => out.push(Value::Null),
        }
    }
    Ok(Json(json!({"submissions": out})))
}

/// `GET /languages`: the host's languages under Judge0's ids, sorted by name.
#[utoipa::path(get, path = "/judge0/languages", tag = "judge0", security(("bearer" = [])),
    responses((status = 200, body = Vec<Judge0Language>)))]
pub async fn languages(State(state): State<AppState>) -> Json<Vec<Judge0Language>> {
    Json(
        project::languages(state.service.catalog())
            .into_iter()
            .map(|(id, name, _)| Judge0Language { id, name })
            .collect(),
    )
}

/// `GET /languages/all`: the same, with `is_archived` (always false).
#[utoipa::path(get, path = "/judge0/languages/all", tag = "judge0", security(("bearer" = [])),
    responses((status = 200, body = Vec<Judge0LanguageArchived>)))]
pub async fn languages_all(State(state): State<AppState>) -> Json<Vec<Judge0LanguageArchived>> {
    Json(
        project::languages(state.service.catalog())
            .into_iter()
            .map(|(id, name, _)| Judge0LanguageArchived {
                id,
                name,
                is_archived: false,
            })
            .collect(),
    )
}

/// `GET /languages/{id}`.
#[utoipa::path(get, path = "/judge0/languages/{id}", tag = "judge0", security(("bearer" = [])),
    params(("id" = u32, Path)),
    responses((status = 200, body = Judge0LanguageDetail), (status = 404, body = Judge0Message)))]
pub async fn language(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Judge0LanguageDetail>, Judge0Error> {
    let id: u32 = id.parse().map_err(|_| Judge0Error::not_found())?;
    let (id, name, d) =
        project::language(state.service.catalog(), id).ok_or_else(Judge0Error::not_found)?;
    Ok(Json(Judge0LanguageDetail {
        id,
        name,
        is_archived: false,
        source_file: d.language.entry.clone(),
        compile_cmd: d.language.compile.as_ref().map(|c| c.argv.join(" ")),
        run_cmd: d.language.run.argv.join(" "),
    }))
}

/// `GET /statuses`.
#[utoipa::path(get, path = "/judge0/statuses", tag = "judge0", security(("bearer" = [])),
    responses((status = 200, body = Vec<Judge0Status>)))]
pub async fn statuses() -> Json<Vec<Judge0Status>> {
    Json(project::STATUSES.to_vec())
}

/// `GET /about`.
#[utoipa::path(get, path = "/judge0/about", tag = "judge0", security(("bearer" = [])),
    responses((status = 200, body = About)))]
pub async fn about() -> Json<About> {
    Json(About {
        version: VERSION,
        // Kiln publishes no address of its own; the SDK reads only `version`.
        homepage: "",
        source_code: "",
        maintainer: "Kiln (Judge0 CE 1.13.1 compatible API)",
    })
}

/// `GET /config_info`: Judge0's keys (the Python SDK requires all of them), with what Kiln does.
#[utoipa::path(get, path = "/judge0/config_info", tag = "judge0", security(("bearer" = [])),
    responses((status = 200, description = "Judge0's configuration keys")))]
pub async fn config_info(State(state): State<AppState>) -> Json<Value> {
    let cfg = state.service.config();
    Json(json!({
        "maintenance_mode": false,
        "enable_wait_result": state.cfg.judge0.allow_wait,
        "enable_compiler_options": state.cfg.judge0.compiler_options,
        "allowed_languages_for_compile_options": [],
        "enable_command_line_arguments": true,
        "enable_submission_delete": true,
        "enable_callbacks": state.cfg.judge0.callbacks,
        "callbacks_max_tries": state.cfg.judge0.callback_tries,
        "callbacks_timeout": state.cfg.judge0.callback_timeout_ms as f64 / 1000.0,
        "enable_additional_files": state.cfg.judge0.additional_files,
        "max_queue_size": cfg.queue_depth,
        "cpu_time_limit": 5.0,
        "max_cpu_time_limit": 15.0,
        "cpu_extra_time": 1.0,
        "max_cpu_extra_time": 5.0,
        "wall_time_limit": 10.0,
        "max_wall_time_limit": 20.0,
        "memory_limit": 128000,
        "max_memory_limit": 512000,
        "stack_limit": 64000,
        "max_stack_limit": 128000,
        "max_processes_and_or_threads": 60,
        "max_max_processes_and_or_threads": 120,
        "enable_per_process_and_thread_time_limit": false,
        "allow_enable_per_process_and_thread_time_limit": true,
        "enable_per_process_and_thread_memory_limit": false,
        "allow_enable_per_process_and_thread_memory_limit": true,
        "max_file_size": 1024,
        "max_max_file_size": 4096,
        "number_of_runs": 1,
        "max_number_of_runs": 20,
        "redirect_stderr_to_stdout": false,
        "max_extract_size": state.cfg.judge0.max_extract_kb,
        "enable_batched_submissions": true,
        "max_submission_batch_size": MAX_BATCH,
        "submission_cache_duration": 0.0,
        "use_docs_as_homepage": false,
        "allow_enable_network": false,
        "enable_network": false,
    }))
}

/// `GET /workers`: one queue, Kiln's run slots.
#[utoipa::path(get, path = "/judge0/workers", tag = "judge0", security(("bearer" = [])),
    responses((status = 200, body = Vec<super::wire::Worker>)))]
pub async fn workers(State(state): State<AppState>) -> Json<Vec<super::wire::Worker>> {
    let slots = state.service.config().capacity as u64;
    Json(vec![super::wire::Worker {
        queue: VERSION,
        size: 0,
        available: slots,
        idle: slots,
        working: 0,
        paused: 0,
        failed: 0,
    }])
}

/// `POST /authenticate` and `POST /authorize`: 200 once the token passed (Kiln has one kind of
/// token, so an authenticated caller is authorized).
#[utoipa::path(post, path = "/judge0/authenticate", tag = "judge0", security(("bearer" = [])),
    responses((status = 200, description = "The token is valid"), (status = 401, body = Judge0Message)))]
pub async fn authenticate() -> StatusCode {
    StatusCode::OK
}

/// `POST /authorize`.
#[utoipa::path(post, path = "/judge0/authorize", tag = "judge0", security(("bearer" = [])),
    responses((status = 200, description = "The token is valid"), (status = 401, body = Judge0Message)))]
pub async fn authorize() -> StatusCode {
    StatusCode::OK
}

/// `401` in Judge0's shape.
pub fn unauthorized() -> Judge0Error {
    Judge0Error::new(StatusCode::UNAUTHORIZED, "unauthorized")
}
