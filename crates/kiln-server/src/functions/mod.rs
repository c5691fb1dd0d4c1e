//! Kiln's function and codelet API (`/v1/functions/call`, `/v1/functions/sync`,
//! `/v1/codelets/run`): seed 002's and seed 004's wire shapes over the function service, with the
//! job API's tokens, error shape and body limits.

pub mod handlers;
pub mod wire;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The function and codelet routes, with their OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(handlers::call))
        .routes(routes!(handlers::sync))
        .routes(routes!(handlers::codelet))
}
