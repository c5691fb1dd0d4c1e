//! Piston v2's HTTP routes: thin handlers over the same job service as `POST /v1/run` (the same
//! admission, queue, quotas, limits and metrics), answering in Piston's shapes and with its
//! `{message}` errors.

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use futures_util::StreamExt;
use kiln_core::{AdmissionError, JobEvent, JobId, JobService, OutputStream};
use serde::de::DeserializeOwned;

use super::project::{self, Submission, Written};
use super::wire::{
    piston_aliases, PistonError, PistonExecute, PistonMessage, PistonPackage, PistonPackageRequest,
    PistonResult, PistonRuntime,
};
use crate::auth::Caller;
use crate::body::{content_type, parse_json, read_body};
use crate::state::AppState;

/// A JSON body of type `T`, refused in Piston's words. Piston's own client posts its JSON
/// without a `Content-Type` (so fetch labels it `text/plain`): those are read as JSON too.
#[derive(Debug)]
pub struct PistonJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for PistonJson<T> {
    type Rejection = PistonError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let ct = content_type(req.headers()).to_ascii_lowercase();
        if !matches!(ct.as_str(), "application/json" | "text/plain" | "") {
            return Err(PistonError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "requests must be of type application/json",
            ));
        }
        let bytes = read_body(req, state.cfg.max_body_bytes).await?;
        Ok(PistonJson(parse_json(&bytes)?))
    }
}

/// Admits a checked submission for `caller`; a language or version Kiln lacks is Piston's
/// "runtime is unknown", every other refusal Kiln's own (429 with `Retry-After` and so on).
pub fn submit(
    state: &AppState,
    caller: &Caller,
    sub: &mut Submission,
) -> Result<JobId, PistonError> {
    let request = std::mem::take(&mut sub.request);
    let id = state
        .service
        .submit(&caller.0, request)
        .map_err(|e| match e {
            AdmissionError::UnknownLanguage(_) | AdmissionError::UnknownVersion { .. } => {
                sub.unknown()
            }
            e => crate::coderunner::handlers::refused(e).into(),
        })?;
    state
        .compat
        .piston
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(id)
}

/// What the run stage of a finished job wrote, from its event log.
async fn written(service: &JobService, id: &JobId) -> Written {
    let mut w = Written::default();
    let mut events = service.events(id, 0);
    while let Some(e) = events.next().await {
        if let JobEvent::Output { stream, bytes, .. } = &e.event {
            // Chunks end on character boundaries (the job's sink cuts UTF-8 output so).
            let text = String::from_utf8_lossy(bytes);
            match stream {
                OutputStream::Stdout => w.stdout.push_str(&text),
                OutputStream::Stderr => w.stderr.push_str(&text),
                OutputStream::Compile => continue,
            }
            w.output.push_str(&text);
        }
    }
    w
}

/// Whether a language (by Kiln's name) has a compile stage.
pub fn compiled(state: &AppState, kiln_language: &str) -> bool {
    state
        .service
        .catalog()
        .find(kiln_language)
        .is_some_and(|d| d.language.compile.is_some())
}

/// Piston's name of a language (by Kiln's name).
pub fn piston_language(state: &AppState, kiln_language: &str) -> String {
    state
        .service
        .catalog()
        .find(kiln_language)
        .map_or(kiln_language, |d| d.language.piston_name())
        .to_string()
}

/// `GET /api/v2/runtimes`.
#[utoipa::path(get, path = "/api/v2/runtimes", tag = "piston", security(("bearer" = [])),
    responses((status = 200, body = Vec<PistonRuntime>), (status = 401, body = PistonMessage)))]
pub async fn runtimes(State(state): State<AppState>) -> Json<Vec<PistonRuntime>> {
    let list = state
        .service
        .catalog()
        .available()
        .map(|d| PistonRuntime {
            language: d.language.piston_name().to_string(),
            version: d.version.clone().unwrap_or_default(),
            aliases: piston_aliases(&d.language),
            runtime: d.language.compat.piston.runtime.clone(),
        })
        .collect();
    Json(list)
}

/// `POST /api/v2/execute`: runs to the end, like `POST /v1/run`.
#[utoipa::path(post, path = "/api/v2/execute", tag = "piston", security(("bearer" = [])),
    request_body = PistonExecute,
    responses((status = 200, body = PistonResult),
        (status = 400, body = PistonMessage, description = "A bad field, or `<language>-<version> runtime is unknown`"),
        (status = 401, body = PistonMessage), (status = 413, body = PistonMessage),
        (status = 415, body = PistonMessage),
        (status = 429, body = PistonMessage, description = "Queue full, or the token's quota reached; see Retry-After")))]
pub async fn execute(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    PistonJson(body): PistonJson<PistonExecute>,
) -> Result<Json<PistonResult>, PistonError> {
    let mut sub = project::submission(body, state.service.catalog(), false)?;
    let id = submit(&state, &caller, &mut sub)?;
    state.service.wait_finished(&id).await;
    let record = state
        .service
        .record_of(&caller.0, &id)
        .await
        .ok_or_else(|| PistonError::new(StatusCode::INTERNAL_SERVER_ERROR, "job record lost"))?;
    let outcome = record.outcome.clone().ok_or_else(|| {
        PistonError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "job ended without an outcome",
        )
    })?;
    let run = written(&state.service, &id).await;
    Ok(Json(project::result(
        &outcome,
        &piston_language(&state, &record.language),
        &record.version,
        compiled(&state, &record.language),
        run,
    )))
}

/// `GET /api/v2/packages`: the host's toolchains, all installed.
#[utoipa::path(get, path = "/api/v2/packages", tag = "piston", security(("bearer" = [])),
    responses((status = 200, body = Vec<PistonPackage>), (status = 401, body = PistonMessage)))]
pub async fn packages(State(state): State<AppState>) -> Json<Vec<PistonPackage>> {
    let list = state
        .service
        .catalog()
        .available()
        .map(|d| PistonPackage {
            language: d.language.piston_name().to_string(),
            language_version: d.version.clone().unwrap_or_default(),
            installed: true,
        })
        .collect();
    Json(list)
}

fn no_package_manager(verb: &str) -> PistonError {
    PistonError::bad(format!(
        "Kiln does not {verb} packages: its toolchains come from the host's operating system. GET /api/v2/packages lists them."
    ))
}

/// `POST /api/v2/packages`: refused.
#[utoipa::path(post, path = "/api/v2/packages", tag = "piston", security(("bearer" = [])),
    request_body = PistonPackageRequest,
    responses((status = 400, body = PistonMessage, description = "Always: Kiln installs no packages")))]
pub async fn install_package() -> PistonError {
    no_package_manager("install")
}

/// `DELETE /api/v2/packages`: refused.
#[utoipa::path(delete, path = "/api/v2/packages", tag = "piston", security(("bearer" = [])),
    request_body = PistonPackageRequest,
    responses((status = 400, body = PistonMessage, description = "Always: Kiln removes no packages")))]
pub async fn uninstall_package() -> PistonError {
    no_package_manager("uninstall")
}

/// `401` in Piston's shape, for the Piston routes.
pub fn unauthorized() -> PistonError {
    PistonError::new(StatusCode::UNAUTHORIZED, "unauthorized")
}
