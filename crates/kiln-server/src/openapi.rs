//! The OpenAPI description of the HTTP API (every face, Piston's and Judge0's included): built from the routes themselves (each handler
//! carries its `#[utoipa::path]`), served at `/openapi.json` and kept as a snapshot
//! (`crates/kiln-server/openapi.json`) that a test compares, so any change to the API shows up in
//! review.

use std::sync::OnceLock;

use utoipa::{Modify, OpenApi};

use crate::coderunner::wire::{CompileResultWire, JobState, ResultEvent, StageUsage};

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document's frame: what no route carries.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Kiln", description = "Runs untrusted code: the code-runner job API with Kiln's extensions, long-lived sandboxes, function calls and codelets, a Piston v2 compatible API (`/api/v2`) and a Judge0 CE 1.13.1 compatible API (`/judge0`)."),
    components(schemas(JobState, ResultEvent, CompileResultWire, StageUsage)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The description, from the routes.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::coderunner::routes())
        .merge(crate::sandboxes::routes())
        .merge(crate::functions::routes())
        .merge(crate::piston::routes())
        .merge(crate::judge0::routes())
        .split_for_parts();
    // The crate version would churn the snapshot on every release bump.
    doc.info.version = "1".into();
    doc
}

/// The description as pretty JSON, made once.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

#[cfg(test)]
mod tests {
    /// The committed snapshot matches the code. Set `KILN_UPDATE_SNAPSHOTS=1` to rewrite it.
    #[test]
    fn openapi_snapshot() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let now = super::json();
        if std::env::var("KILN_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
            std::fs::write(&path, now).unwrap();
        }
        let saved = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            saved == now,
            "openapi.json is out of date; rerun with KILN_UPDATE_SNAPSHOTS=1 and review the diff"
        );
        let v: serde_json::Value = serde_json::from_str(now).unwrap();
        for path in [
            "/v1/execute",
            "/v1/jobs/{id}/stdin",
            "/v1/channel-auth",
            "/v1/run",
            "/api/v2/execute",
            "/api/v2/connect",
        ] {
            assert!(v["paths"][path].is_object(), "{path} missing");
        }
        assert!(v["components"]["schemas"]["RunResultWire"].is_object());
    }
}
