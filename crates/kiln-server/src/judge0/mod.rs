//! Judge0 CE 1.13.1 as one face over the job service, under `/judge0`: submissions (one, a
//! batch, paged, deleted), languages under Judge0's numeric ids, statuses, `/about`,
//! `/config_info`, `/system_info`, `/statistics`, `/workers` and the token checks, in Judge0's shapes and refusals. Jobs go
//! through the same admission, queue, quotas, limits and metrics as `POST /v1/run`; what Judge0
//! echoes that the service does not keep lives in [`store`].

pub mod callback;
pub mod check;
pub mod files;
pub mod follow;
pub mod handlers;
pub mod project;
pub mod store;
pub mod system;
pub mod view;
pub mod wire;

use std::sync::Arc;

use axum::Extension;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// Whether a path is one of Judge0's (whose callers send `X-Auth-Token`, and get Judge0's error
/// shape).
pub fn is_judge0_path(path: &str) -> bool {
    path.starts_with("/judge0/") || path == "/judge0"
}

/// Judge0's routes, with their OpenAPI description, sharing one store of submissions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(handlers::create, handlers::list))
        .routes(routes!(handlers::create_batch, handlers::show_batch))
        .routes(routes!(handlers::show, handlers::delete))
        .routes(routes!(handlers::languages))
        .routes(routes!(handlers::languages_all))
        .routes(routes!(handlers::language))
        .routes(routes!(handlers::statuses))
        .routes(routes!(handlers::about))
        .routes(routes!(handlers::config_info))
        .routes(routes!(handlers::workers))
        .routes(routes!(system::system_info))
        .routes(routes!(system::statistics))
        .routes(routes!(handlers::authenticate))
        .routes(routes!(handlers::authorize))
        .layer(Extension(Arc::new(store::Store::default())))
        .layer(Extension(Arc::new(system::StatsCache::default())))
}
