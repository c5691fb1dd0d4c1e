//! Piston v2's wire shapes: the execute body (also the WebSocket's `init`), the results, the
//! runtime and package lists, the `{message}` error body, and the names Piston gives Kiln's
//! languages. Piston ignores fields it does not know, so these bodies do too.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_lang::Language;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// Piston's error body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PistonMessage {
    /// What went wrong.
    pub message: String,
}

/// An error as Piston answers it: a status and `{message}`.
#[derive(Debug, Clone)]
pub struct PistonError {
    /// Its status.
    pub status: StatusCode,
    /// Its message.
    pub message: String,
    /// Seconds before a retry may succeed (429, 503).
    pub retry_after_secs: Option<u64>,
}

impl PistonError {
    /// 400 with `message`.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `status` with `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }
}

impl From<ApiError> for PistonError {
    /// Kiln's own refusals (body cap, quotas, a field's problem) keep their status; the fields'
    /// details go into the one message, each naming its field.
    fn from(e: ApiError) -> Self {
        let mut message = e.body.error;
        if let Some(details) = e.body.details {
            let fields: Vec<String> = details
                .iter()
                .map(|d| {
                    if d.path.is_empty() {
                        d.message.clone()
                    } else {
                        format!("{}: {}", d.path, d.message)
                    }
                })
                .collect();
            message = fields.join("; ");
        }
        Self {
            status: e.status,
            message,
            retry_after_secs: e.body.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1)),
        }
    }
}

impl IntoResponse for PistonError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(PistonMessage {
                message: self.message,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// A file of a submission.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct PistonFile {
    /// Its name; the first file without one gets the language's entry name, others
    /// `file<i>.code`.
    pub name: Option<String>,
    /// Its content, in `encoding`.
    #[schema(required = true)]
    pub content: Option<String>,
    /// `utf8` (the default; Piston reads any other word so too), `base64` or `hex`.
    pub encoding: Option<String>,
}

/// `POST /api/v2/execute`, and the WebSocket's `init` (which ignores `stdin`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct PistonExecute {
    /// A language name or alias from `GET /api/v2/runtimes`.
    #[schema(required = true)]
    pub language: Option<String>,
    /// `*`, a version, or its prefix (`3`, `3.11`, `3.x`).
    #[schema(required = true)]
    pub version: Option<String>,
    /// The files; the first one runs.
    #[schema(required = true)]
    pub files: Option<Vec<PistonFile>>,
    /// All of stdin (a newline is added when it does not end in one, as Piston does).
    pub stdin: Option<String>,
    /// Program arguments.
    pub args: Option<Vec<String>>,
    /// Accepted; the compile stage keeps the language's limits.
    pub compile_timeout: Option<f64>,
    /// Wall-clock time of the run, ms (clamped to the server's maximum).
    pub run_timeout: Option<f64>,
    /// Accepted; the compile stage keeps the language's limits.
    pub compile_cpu_time: Option<f64>,
    /// CPU time of the run, ms (clamped to the server's maximum).
    pub run_cpu_time: Option<f64>,
    /// Accepted; the compile stage keeps the language's limits.
    pub compile_memory_limit: Option<f64>,
    /// Memory of the run, bytes (rounded up to MiB; `-1`: the language's default).
    pub run_memory_limit: Option<f64>,
}

/// One stage of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PistonStage {
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// Both, interleaved as written.
    pub output: String,
    /// The exit code, or null when a signal ended it.
    pub code: Option<i32>,
    /// The signal's name (`SIGKILL`), if one ended it.
    pub signal: Option<String>,
    /// What ended it, in words.
    pub message: Option<String>,
    /// `RE`, `SG`, `TO`, `OL`, `XX`, or null for a clean exit.
    pub status: Option<String>,
    /// CPU time, ms.
    pub cpu_time: u64,
    /// Wall time, ms.
    pub wall_time: u64,
    /// Peak memory, bytes.
    pub memory: u64,
}

/// `POST /api/v2/execute` 200 body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PistonResult {
    /// The runtime's language.
    pub language: String,
    /// Its version.
    pub version: String,
    /// The run stage (a copy of `compile` when compiling failed, as Piston does).
    pub run: PistonStage,
    /// The compile stage, for compiled languages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile: Option<PistonStage>,
}

/// `GET /api/v2/runtimes` items.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PistonRuntime {
    /// Piston's name of the language.
    pub language: String,
    /// The toolchain's version.
    pub version: String,
    /// Other names it answers to.
    pub aliases: Vec<String>,
    /// The toolchain, where one serves several languages (`gcc`, `node`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

/// `GET /api/v2/packages` items.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PistonPackage {
    /// Piston's name of the language.
    pub language: String,
    /// The toolchain's version.
    pub language_version: String,
    /// Always true: Kiln lists only what the host has.
    pub installed: bool,
}

/// `POST` and `DELETE /api/v2/packages` body (refused either way).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct PistonPackageRequest {
    /// The language.
    pub language: Option<String>,
    /// A version selector.
    pub version: Option<String>,
}

/// The aliases of a language as Piston lists them: Kiln's name and aliases, less Piston's name.
pub fn piston_aliases(language: &Language) -> Vec<String> {
    let name = language.piston_name();
    std::iter::once(language.name.clone())
        .chain(language.aliases.iter().cloned())
        .filter(|a| a != name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kiln_names_become_pistons_and_keep_theirs_as_aliases() {
        let catalog = kiln_lang::Catalog::embedded().unwrap();
        let find = |name: &str| {
            catalog
                .all()
                .iter()
                .find(|l| l.name == name)
                .unwrap()
                .clone()
        };
        let cpp = find("cpp");
        assert_eq!(cpp.piston_name(), "c++");
        assert_eq!(cpp.compat.piston.runtime.as_deref(), Some("gcc"));
        assert_eq!(piston_aliases(&cpp), vec!["cpp", "g++", "cxx"]);
        let python = find("python");
        assert_eq!(python.piston_name(), "python");
        assert_eq!(piston_aliases(&python), vec!["py", "python3"]);
        assert_eq!(find("nasm").piston_name(), "nasm64");
    }
}
