//! The function and codelet routes: thin handlers that decode the seeds' wire shapes, call the
//! function service and project its outcomes. A call's own failure (its error, a timeout, a
//! crash) is a 200 with its status; only a request Kiln cannot take is a 4xx.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kiln_core::functions::FunctionsError;
use kiln_workload::mount::{self, MountConfig, OnError};

use super::wire::{
    codelet_result, execution_result, CodeletResult, CodeletRunBody, ExecutionResult,
    FunctionCallBody, SyncBody,
};
use crate::body::JsonBody;
use crate::error::{ApiError, Detail, ErrorBody};
use crate::state::AppState;

fn refused(e: FunctionsError) -> ApiError {
    match e {
        FunctionsError::Invalid(details) => {
            ApiError::invalid(details.into_iter().map(Detail::from).collect())
        }
        FunctionsError::Unavailable(what) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{what} is not installed on this server. Check GET /v1/languages."),
        ),
        FunctionsError::Function(e) => {
            tracing::error!(error = %e, "a function call failed in Kiln");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Kiln could not run the call: {e}"),
            )
        }
    }
}

/// `POST /v1/functions/call`: calls a function of `code` with `args` and `kwargs` in a fresh
/// sandbox and returns its value (seed 002's `ExecutionResult`).
#[utoipa::path(post, path = "/v1/functions/call", security(("bearer" = [])),
    request_body = FunctionCallBody,
    responses((status = 200, body = ExecutionResult, description = "The call ran; `status` says how it ended"),
        (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn call(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<FunctionCallBody>,
) -> Result<Json<ExecutionResult>, ApiError> {
    let (request, options) = body.into_domain()?;
    let roots = state.functions.config().mount_roots.clone();
    let report = state
        .functions
        .call(request, Some(&roots))
        .await
        .map_err(refused)?;
    Ok(Json(execution_result(report, options)))
}

/// `POST /v1/functions/sync`: applies chosen changes of an earlier call (in `manual` sync mode)
/// to its mount's host directories, by the mount's rules.
#[utoipa::path(post, path = "/v1/functions/sync", security(("bearer" = [])),
    request_body = SyncBody,
    responses((status = 200, body = Object, description = "`{synced, failed, denied, rolledBack, aborted}`"),
        (status = 400, body = ErrorBody)))]
pub async fn sync(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SyncBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bad = |path: &str, message: String| {
        ApiError::invalid(vec![Detail {
            path: path.into(),
            message,
        }])
    };
    let config: MountConfig =
        serde_json::from_value(body.mount).map_err(|e| bad("mount", e.to_string()))?;
    let changes: Vec<mount::WireChange> = body
        .changes
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::from_value(c).map_err(|e| bad(&format!("changes.{i}"), e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let on_error = match body.on_error.as_deref() {
        None => None,
        Some(name) => Some(
            serde_json::from_value::<OnError>(serde_json::Value::from(name))
                .map_err(|_| bad("onError", "must be rollback, continue or abort".into()))?,
        ),
    };
    let roots = state.functions.config().mount_roots.clone();
    let limits = state.functions.config().mount_limits;
    let answer = tokio::task::spawn_blocking(move || {
        let mut plan = mount::MountPlan::prepare(&config, Some(&roots), limits)?;
        if let Some(on_error) = on_error {
            plan.sync.on_error = on_error;
        }
        let manual = mount::manual_changes(&plan, &changes)?;
        let report = manual.run(&plan);
        let mut answer = serde_json::to_value(report).unwrap_or_default();
        answer["denied"] = serde_json::to_value(&manual.denied).unwrap_or_default();
        Ok::<_, mount::MountError>(answer)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| bad(&e.field(), e.to_string()))?;
    Ok(Json(answer))
}

/// `POST /v1/codelets/run`: runs a JavaScript codelet's `main(input, {logger})` under the
/// default-deny policy (seed 004's `CodeletResult`).
#[utoipa::path(post, path = "/v1/codelets/run", security(("bearer" = [])),
    request_body = CodeletRunBody,
    responses((status = 200, body = CodeletResult, description = "It ran; `ok` and `error.code` say how it ended"),
        (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn codelet(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CodeletRunBody>,
) -> Result<Json<CodeletResult>, ApiError> {
    let request = body.into_domain()?;
    let outcome = state.functions.codelet(request).await.map_err(refused)?;
    Ok(Json(codelet_result(outcome)))
}
