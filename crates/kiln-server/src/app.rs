//! The whole HTTP application: the code-runner face, `/openapi.json`, the Pusher endpoint, the
//! bearer check in front of them, and the JSON fallbacks for an unknown route or method.

use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::auth::authenticate;
use crate::error::{echo, ApiError};
use crate::state::AppState;

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("No route for {method} {}", echo(uri.path())),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", echo(uri.path())),
    )
}

/// The trace context of a request's `traceparent` header. One that is not valid is ignored, as
/// W3C asks (the job then starts a trace of its own).
fn trace_of(headers: &axum::http::HeaderMap) -> Option<kiln_core::trace::TraceContext> {
    let mut values = headers.get_all("traceparent").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let state = headers.get("tracestate").and_then(|v| v.to_str().ok());
    match kiln_core::trace::TraceContext::parse(value.to_str().ok()?, state) {
        Ok(cx) => Some(cx),
        Err(reason) => {
            tracing::debug!(reason, "ignoring an invalid traceparent header");
            None
        }
    }
}

/// Runs a request in a span of its own: method, path and status, and the client's trace (a
/// valid `traceparent` header) as its parent when an exporter registered how. The trace is left
/// in the request's extensions for the handlers that carry it on (execute).
async fn request_span(mut req: axum::extract::Request, next: middleware::Next) -> Response {
    use tracing::Instrument as _;
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(cx) = trace_of(req.headers()) {
        kiln_core::trace::attach(&span, &cx);
        req.extensions_mut().insert(cx);
    }
    let response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// The application, with its state applied.
pub fn router(state: AppState) -> Router {
    let (api, _) = crate::coderunner::routes()
        .merge(crate::sandboxes::routes())
        .merge(crate::functions::routes())
        .merge(crate::piston::routes())
        .merge(crate::judge0::routes())
        .split_for_parts();
    let realtime = state.realtime.router();
    api.route(
        "/openapi.json",
        get(|| async {
            (
                [(header::CONTENT_TYPE, "application/json")],
                crate::openapi::json(),
            )
                .into_response()
        }),
    )
    .fallback(no_route)
    .method_not_allowed_fallback(wrong_method)
    .layer(middleware::from_fn_with_state(state.clone(), authenticate))
    .layer(middleware::from_fn(request_span))
    .with_state(state)
    .merge(realtime)
}

/// The application of the Judge0 address (`[judge0] listen`): Judge0's routes at the root, for
/// clients that cannot take a path prefix. Every path is read as the same path under `/judge0`
/// of `app` (the whole application), so auth, limits, submissions and answers are the main
/// address's.
pub fn judge0_root_router(app: Router) -> Router {
    use tower::ServiceExt as _;
    Router::new().fallback(move |mut req: axum::extract::Request| {
        let app = app.clone();
        async move {
            let path = req.uri().path().trim_end_matches('/');
            let rewritten = match req.uri().query() {
                Some(q) => format!("/judge0{path}?{q}"),
                None => format!("/judge0{path}"),
            };
            match rewritten.parse::<Uri>() {
                Ok(uri) => *req.uri_mut() = uri,
                Err(_) => return crate::judge0::wire::Judge0Error::not_found().into_response(),
            }
            match app.oneshot(req).await {
                Ok(response) => response.into_response(),
                Err(never) => match never {},
            }
        }
    })
}

/// The application of the metrics address: `/metrics` without a token.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(s): axum::extract::State<AppState>| async move {
                    crate::coderunner::handlers::metrics_text(&s)
                },
            ),
        )
        .fallback(no_route)
        .with_state(state)
}
