//! Kiln's sandbox API (`/v1/sandboxes`): long-lived environments over the sandbox service, with
//! the job API's tokens, error shape and body limits.

pub mod code;
pub mod files;
pub mod handlers;
pub mod ports;
pub mod process_wire;
pub mod processes;
pub mod wire;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The sandbox routes, with their OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(handlers::create, handlers::list))
        .routes(routes!(handlers::get, handlers::delete))
        .routes(routes!(handlers::extend))
        .routes(routes!(handlers::exec))
        .routes(routes!(processes::exec_stream))
        .routes(routes!(processes::start, processes::list))
        .routes(routes!(processes::get))
        .routes(routes!(processes::stdin))
        .routes(routes!(processes::signal))
        .routes(routes!(processes::kill))
        .routes(routes!(processes::resize))
        .routes(routes!(processes::wait))
        .routes(routes!(processes::logs))
        .routes(routes!(processes::terminal))
        .routes(routes!(files::list, files::remove))
        .routes(routes!(files::stat))
        .routes(routes!(files::read, files::upload))
        .routes(routes!(files::write))
        .routes(routes!(files::mkdir))
        .routes(routes!(files::rename))
        .routes(routes!(ports::list))
        .routes(routes!(ports::wait))
        .routes(routes!(ports::proxy_root))
        .routes(routes!(ports::proxy))
        .routes(routes!(code::exec))
        .routes(routes!(code::run))
        .routes(routes!(code::spawn))
}
