//! Piston v2 as one face over the job service: `/api/v2/runtimes`, `/api/v2/execute`,
//! `/api/v2/packages` and the `/api/v2/connect` WebSocket, in Piston's shapes and `{message}`
//! errors, each also under a trailing slash (Piston's Python client posts to `execute/`). Jobs go
//! through the same admission, queue, quotas, limits and metrics as `POST /v1/run`.

pub mod connect;
pub mod handlers;
pub mod project;
pub mod wire;

use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// Whether a path is one of Piston's (whose callers may send a bare token, and get Piston's
/// error shape).
pub fn is_piston_path(path: &str) -> bool {
    path.starts_with("/api/v2/")
}

/// Piston's routes, with their OpenAPI description (the trailing-slash twins are left out of it).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(handlers::runtimes))
        .routes(routes!(handlers::execute))
        .routes(routes!(
            handlers::packages,
            handlers::install_package,
            handlers::uninstall_package
        ))
        .routes(routes!(connect::connect))
        .route("/api/v2/runtimes/", get(handlers::runtimes))
        .route("/api/v2/execute/", axum::routing::post(handlers::execute))
        .route(
            "/api/v2/packages/",
            get(handlers::packages)
                .post(handlers::install_package)
                .delete(handlers::uninstall_package),
        )
        .route("/api/v2/connect/", get(connect::connect))
}
