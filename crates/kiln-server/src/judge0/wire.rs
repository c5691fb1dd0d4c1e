//! Judge0 CE 1.13.1's wire shapes: the submission body (loosely typed, as Rails casts `"71"` to
//! 71 and drops keys it does not know), the query flags, the language, status, about and
//! config bodies, and its two error shapes: `{"field": ["message", …]}` (422) and
//! `{"error": "…"}` (everything else).

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;

/// A Judge0 refusal.
#[derive(Debug, Clone)]
pub enum Judge0Error {
    /// 422 with each field's messages, as Rails' validations answer.
    Fields(BTreeMap<String, Vec<String>>),
    /// `status` with `{"error": message}`; `retry_after_secs` for 429 and 503.
    Error {
        /// Its status.
        status: StatusCode,
        /// Its message.
        message: String,
        /// Seconds before a retry may succeed.
        retry_after_secs: Option<u64>,
    },
}

impl Judge0Error {
    /// 422 naming one field.
    pub fn field(name: &str, message: impl Into<String>) -> Self {
        Self::Fields(BTreeMap::from([(name.to_string(), vec![message.into()])]))
    }

    /// `status` with `{"error": message}`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Error {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// 400 with `{"error": message}`.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The 404 of an unknown token or language id.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found")
    }
}

impl From<ApiError> for Judge0Error {
    /// Kiln's own refusals keep their status; a field's problem becomes that field's 422 entry
    /// (Judge0 names fields bare, so Kiln's dotted paths keep only their first part).
    fn from(e: ApiError) -> Self {
        if let Some(details) = e.body.details.filter(|d| !d.is_empty()) {
            let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for d in details {
                let name = d.path.split('.').next().unwrap_or("base");
                let name = if name.is_empty() { "base" } else { name };
                fields.entry(name.to_string()).or_default().push(d.message);
            }
            return Self::Fields(fields);
        }
        Self::Error {
            status: e.status,
            message: e.body.error,
            retry_after_secs: e.body.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1)),
        }
    }
}

impl IntoResponse for Judge0Error {
    fn into_response(self) -> Response {
        match self {
            Self::Fields(fields) => {
                (StatusCode::UNPROCESSABLE_ENTITY, Json(fields)).into_response()
            }
            Self::Error {
                status,
                message,
                retry_after_secs,
            } => {
                let body = if status == StatusCode::NOT_FOUND {
                    // Rails' answer to a missing record.
                    serde_json::json!({"status": 404, "error": message})
                } else {
                    serde_json::json!({"error": message})
                };
                let mut resp = (status, Json(body)).into_response();
                if let Some(secs) = retry_after_secs {
                    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                        resp.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                }
                resp
            }
        }
    }
}

/// Judge0's `{"error": …}` body (for the description).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Judge0Message {
    /// What went wrong.
    pub error: String,
}

/// `POST /submissions` body (and each item of a batch). Numbers may come as strings and flags
/// as `"true"`, as Rails casts them; keys Judge0 does not know are ignored.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct SubmissionRequest {
    /// The program (base64 when `base64_encoded=true`).
    #[schema(required = true)]
    pub source_code: Option<String>,
    /// A language id of `GET /languages`.
    #[schema(value_type = Option<i64>, required = true)]
    pub language_id: Option<Value>,
    /// All of stdin (base64 when `base64_encoded=true`).
    pub stdin: Option<String>,
    /// Compared with stdout line by line, trailing whitespace ignored: Accepted or Wrong Answer.
    pub expected_output: Option<String>,
    /// Refused unless empty: Kiln's compile commands are fixed per language.
    pub compiler_options: Option<String>,
    /// Split at whitespace into the program's arguments.
    pub command_line_arguments: Option<String>,
    /// CPU time, seconds (default 5, at most 15).
    #[schema(value_type = Option<f64>)]
    pub cpu_time_limit: Option<Value>,
    /// Accepted and echoed; Kiln's CPU limit is exact.
    #[schema(value_type = Option<f64>)]
    pub cpu_extra_time: Option<Value>,
    /// Wall-clock time, seconds (default 10, 1 to 20).
    #[schema(value_type = Option<f64>)]
    pub wall_time_limit: Option<Value>,
    /// Memory, KB (default 128000, 2048 to 512000; rounded up to MiB).
    #[schema(value_type = Option<i64>)]
    pub memory_limit: Option<Value>,
    /// Accepted and echoed; Kiln's stack shares the memory limit.
    #[schema(value_type = Option<i64>)]
    pub stack_limit: Option<Value>,
    /// Processes and threads (default 60, at most 120).
    #[schema(value_type = Option<i64>)]
    pub max_processes_and_or_threads: Option<Value>,
    /// Accepted and echoed.
    #[schema(value_type = Option<bool>)]
    pub enable_per_process_and_thread_time_limit: Option<Value>,
    /// Accepted and echoed.
    #[schema(value_type = Option<bool>)]
    pub enable_per_process_and_thread_memory_limit: Option<Value>,
    /// Largest file written, KB (default 1024, at most 4096).
    #[schema(value_type = Option<i64>)]
    pub max_file_size: Option<Value>,
    /// stdout then holds both streams, in the order written, and stderr is null.
    #[schema(value_type = Option<bool>)]
    pub redirect_stderr_to_stdout: Option<Value>,
    /// Refused when true: sandboxes have no network.
    #[schema(value_type = Option<bool>)]
    pub enable_network: Option<Value>,
    /// 1 to 20, echoed; Kiln runs once.
    #[schema(value_type = Option<i64>)]
    pub number_of_runs: Option<Value>,
    /// Refused unless empty: Kiln takes files only as the program.
    pub additional_files: Option<String>,
    /// Refused unless empty: Kiln sends no callbacks.
    pub callback_url: Option<String>,
}

/// `POST /submissions/batch` body.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct BatchRequest {
    /// The submissions, at most 20.
    pub submissions: Option<Vec<SubmissionRequest>>,
}

/// Query of `POST /submissions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CreateQuery {
    /// `true`: text fields come and go in base64.
    pub base64_encoded: Option<String>,
    /// `true`: answer once the run is over.
    pub wait: Option<String>,
    /// The fields of a waited answer.
    pub fields: Option<String>,
}

/// Query of `GET /submissions/{token}` and `GET /submissions/batch`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ShowQuery {
    /// `true`: text fields in base64.
    pub base64_encoded: Option<String>,
    /// Comma-separated fields, or `*` for all.
    pub fields: Option<String>,
    /// For the batch: comma-separated tokens.
    pub tokens: Option<String>,
}

/// Whether a query flag is on (Rails reads `true`, `1`, `yes`… loosely; Judge0 compares to
/// `"true"`).
pub fn flag(v: &Option<String>) -> bool {
    v.as_deref() == Some("true")
}

/// `GET /languages` items.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Judge0Language {
    /// Judge0's id.
    pub id: u32,
    /// Judge0's name, with Kiln's toolchain version.
    pub name: String,
}

/// `GET /languages/all` items.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Judge0LanguageArchived {
    /// Judge0's id.
    pub id: u32,
    /// Judge0's name, with Kiln's toolchain version.
    pub name: String,
    /// Always false: Kiln lists what the host has.
    pub is_archived: bool,
}

/// `GET /languages/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Judge0LanguageDetail {
    /// Judge0's id.
    pub id: u32,
    /// Judge0's name, with Kiln's toolchain version.
    pub name: String,
    /// Always false.
    pub is_archived: bool,
    /// The program's file name.
    pub source_file: String,
    /// Kiln's compile command, for compiled languages.
    pub compile_cmd: Option<String>,
    /// Kiln's run command.
    pub run_cmd: String,
}

/// A status: `GET /statuses` items, and a submission's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Judge0Status {
    /// 1 to 14.
    pub id: u8,
    /// Judge0's words.
    pub description: &'static str,
}

/// `GET /about`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct About {
    /// `1.13.1`: the Python SDK keys its language aliases by it.
    pub version: &'static str,
    /// Kiln's home.
    pub homepage: &'static str,
    /// Kiln's source.
    pub source_code: &'static str,
    /// Who answers.
    pub maintainer: &'static str,
}

/// `GET /workers` items.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Worker {
    /// The queue's name (Judge0's version).
    pub queue: &'static str,
    /// Jobs waiting.
    pub size: u64,
    /// Run slots.
    pub available: u64,
    /// Idle slots.
    pub idle: u64,
    /// Busy slots.
    pub working: u64,
    /// Always 0.
    pub paused: u64,
    /// Always 0.
    pub failed: u64,
}
