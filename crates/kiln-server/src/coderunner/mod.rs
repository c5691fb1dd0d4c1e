//! The code-runner contract as one face over the job service: its routes, its request bodies,
//! its wire shapes, and the projection of the domain's jobs, events and outcomes to them (with
//! Kiln's extensions: `usage`, SSE, `POST /v1/run`).

pub mod artifacts;
pub mod blobs;
pub mod handlers;
pub mod output;
pub mod project;
pub mod request;
pub mod wire;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The routes of the contract and Kiln's extensions to it, with their OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(handlers::health))
        .routes(routes!(handlers::metrics))
        .routes(routes!(handlers::languages))
        .routes(routes!(handlers::execute))
        .routes(routes!(handlers::run_sync))
        .routes(routes!(handlers::job))
        .routes(routes!(handlers::job_status))
        .routes(routes!(handlers::job_output))
        .routes(routes!(handlers::job_events))
        .routes(routes!(handlers::job_start))
        .routes(routes!(handlers::job_stdin))
        .routes(routes!(handlers::job_stdin_close))
        .routes(routes!(handlers::job_kill))
        .routes(routes!(handlers::channel_auth))
        .routes(routes!(blobs::check))
        .routes(routes!(blobs::finalize))
        .routes(routes!(blobs::upload))
        .routes(routes!(artifacts::artifact))
}
