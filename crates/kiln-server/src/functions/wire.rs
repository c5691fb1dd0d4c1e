//! The bodies of the function and codelet API: seed 002's `FunctionCallRequest` and
//! `ExecutionResult`, seed 004's codelet source, options and `CodeletResult`, each with Kiln's
//! extras beside the seed's fields.

use std::collections::BTreeMap;

use base64::Engine as _;
use kiln_core::functions::{CallRequest, CodeletRequest};
use kiln_workload::function::{CallOutcome, CodeletOutcome, FunctionSchema};
use kiln_workload::mount::MountConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, Detail};

/// A virtual file's contents: text, or `{"base64": "…"}` for bytes.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FileContent {
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Bytes {
        /// The bytes, base64.
        base64: String,
    },
}

/// What the result reports of the files.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResultOptions {
    /// Report the created, modified and deleted files (default true).
    pub include_changes: Option<bool>,
    /// With each created or modified file, its contents (default false).
    pub include_contents: Option<bool>,
    /// Report the changes a mount's rules refused (default true).
    pub include_denied: Option<bool>,
}

/// Kiln's limits of a call.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CallLimits {
    /// Memory, MiB.
    pub memory_mb: Option<u64>,
}

/// `POST /v1/functions/call`: seed 002's `FunctionCallRequest`, plus `timeoutMs` and `limits`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FunctionCallBody {
    /// `python`, `javascript` (`js`, `quickjs`, `node`), `ruby`, `php`, `c` or `cpp`.
    pub language: String,
    /// The code that defines the function.
    pub code: String,
    /// The function to call.
    pub function_name: String,
    /// Positional arguments (an array).
    #[schema(value_type = Option<Vec<Object>>)]
    pub args: Option<Value>,
    /// Keyword arguments (an object), in the language's convention.
    #[schema(value_type = Option<Object>)]
    pub kwargs: Option<Value>,
    /// An explicit signature: `{params: [{name, type?, required?, default?}], variadic?,
    /// acceptsKwargs?, returnType?}`.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Virtual files written under `workdir` before the call: name → text or `{base64}`.
    pub files: Option<BTreeMap<String, FileContent>>,
    /// Host directories mounted into the sandbox (only under the roots the operator allows).
    #[schema(value_type = Option<Object>)]
    pub mount: Option<Value>,
    /// The working directory (default `/workspace`).
    pub workdir: Option<String>,
    /// What the result reports of the files.
    pub result_options: Option<ResultOptions>,
    /// The timeout, ms.
    pub timeout_ms: Option<u64>,
    /// Kiln's limits.
    pub limits: Option<CallLimits>,
}

fn field(path: &str, message: impl Into<String>) -> Detail {
    Detail {
        path: path.into(),
        message: message.into(),
    }
}

impl FunctionCallBody {
    /// The domain's request, or 400 naming each bad field.
    pub fn into_domain(self) -> Result<(CallRequest, ResultOptions), ApiError> {
        let mut errors = Vec::new();
        let args = match self.args {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => {
                errors.push(field("args", "must be an array"));
                Vec::new()
            }
        };
        let kwargs = match self.kwargs {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => {
                errors.push(field("kwargs", "must be an object"));
                Map::new()
            }
        };
        let schema = match self.schema {
            None | Some(Value::Null) => None,
            Some(v) => match serde_json::from_value::<FunctionSchema>(v) {
                Ok(s) => Some(s),
                Err(e) => {
                    errors.push(field("schema", e.to_string()));
                    None
                }
            },
        };
        let mount = match self.mount {
            None | Some(Value::Null) => None,
            Some(v) => match serde_json::from_value::<MountConfig>(v) {
                Ok(m) => Some(m),
                Err(e) => {
                    errors.push(field("mount", e.to_string()));
                    None
                }
            },
        };
        let mut files = Vec::new();
        for (name, content) in self.files.unwrap_or_default() {
            match content {
                FileContent::Text(t) => files.push((name, t.into_bytes())),
                FileContent::Bytes { base64 } => {
                    match base64::engine::general_purpose::STANDARD.decode(base64.as_bytes()) {
                        Ok(b) => files.push((name, b)),
                        Err(e) => errors.push(field(
                            &format!("files[{name:?}].base64"),
                            format!("is not base64: {e}"),
                        )),
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(errors));
        }
        let request = CallRequest {
            language: self.language,
            code: self.code,
            function_name: self.function_name,
            args,
            kwargs,
            schema,
            files,
            mount,
            workdir: self.workdir,
            timeout_ms: self.timeout_ms,
            memory_mb: self.limits.and_then(|l| l.memory_mb),
        };
        Ok((request, self.result_options.unwrap_or_default()))
    }
}

/// What the call's files came to (seed 002's `FileChangeSummary`, with Kiln's `skipped`, the
/// mounts' `sync` and `truncated`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileChangeSummary {
    /// New files: `{path, kind, size, hash, content?, encoding?}`.
    #[schema(value_type = Vec<Object>)]
    pub created: Vec<Value>,
    /// Changed files.
    #[schema(value_type = Vec<Object>)]
    pub modified: Vec<Value>,
    /// Files that are gone.
    #[schema(value_type = Vec<Object>)]
    pub deleted: Vec<Value>,
    /// Changes a mount's rules refused: never synced.
    #[schema(value_type = Vec<Object>)]
    pub denied: Vec<Value>,
    /// Mounted files that were not loaded, and why.
    #[schema(value_type = Vec<Object>)]
    pub skipped: Vec<Value>,
    /// What the batch sync did, for a call with mounts in batch mode.
    #[schema(value_type = Option<Object>)]
    pub sync: Option<Value>,
    /// More files were there than Kiln reads back.
    pub truncated: bool,
}

/// `meta`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionMeta {
    /// From the sandbox's start to the end of the call, ms.
    pub duration: u64,
    /// `schema`, `inferred` or `convention`.
    pub signature_source: String,
}

/// Kiln's facts of the run.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallUsage {
    /// The engine's verdict of the run (`ok`, `wall_time_limit`, `memory_limit`, …).
    pub verdict: Option<String>,
    /// CPU time, ms.
    pub cpu_ms: u64,
    /// Wall time of the run, ms.
    pub wall_ms: u64,
    /// Peak memory, bytes.
    pub memory_bytes: u64,
    /// The compile stage's CPU time, ms (C and C++).
    pub compile_cpu_ms: Option<u64>,
}

/// Seed 002's `ExecutionResult`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionResult {
    /// `success`, `error`, `crash`, `timeout` or `terminated`.
    pub status: String,
    /// `status == "success"`.
    pub success: bool,
    /// The function's value (on success; `null` is a value).
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// `{message, type, stack?}`, unless it succeeded.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// What the call printed.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// 0 success, 1 error or crash, 124 timeout, 143 terminated.
    pub exit_code: i32,
    /// The files.
    pub files: Option<FileChangeSummary>,
    /// Timing and the signature's source.
    pub meta: ExecutionMeta,
    /// Kiln's facts.
    pub usage: CallUsage,
}

fn values<T: Serialize>(items: impl IntoIterator<Item = T>) -> Vec<Value> {
    items
        .into_iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .collect()
}

/// The wire result of `outcome`.
pub fn execution_result(outcome: CallOutcome, options: ResultOptions) -> ExecutionResult {
    let CallOutcome {
        status,
        result,
        error,
        stdout,
        stderr,
        signature_source,
        compile,
        run,
        duration,
        changes,
        sync,
    } = outcome;
    let contents = options.include_contents.unwrap_or(false);
    let workdir = |files: Vec<kiln_workload::function::TrackedFile>| {
        values(
            files
                .into_iter()
                .map(|f| if contents { f } else { f.without_content() }),
        )
    };
    let mut created = workdir(changes.created);
    let mut modified = workdir(changes.modified);
    let mut deleted = workdir(changes.deleted);
    let mut denied = Vec::new();
    for m in &changes.mounts {
        let wire = m.to_wire(contents);
        created.extend(values(wire.created));
        modified.extend(values(wire.modified));
        deleted.extend(values(wire.deleted));
        denied.extend(values(wire.denied));
    }
    let files = options
        .include_changes
        .unwrap_or(true)
        .then(|| FileChangeSummary {
            created,
            modified,
            deleted,
            denied: if options.include_denied.unwrap_or(true) {
                denied
            } else {
                Vec::new()
            },
            skipped: values(changes.skipped),
            sync: sync.and_then(|s| serde_json::to_value(s).ok()),
            truncated: changes.truncated,
        });
    let source = serde_json::to_value(signature_source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    ExecutionResult {
        status: serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        success: status == kiln_workload::function::CallStatus::Success,
        result: if status == kiln_workload::function::CallStatus::Success {
            Some(result.unwrap_or(Value::Null))
        } else {
            None
        },
        error: error.and_then(|e| serde_json::to_value(e).ok()),
        stdout,
        stderr,
        exit_code: status.exit_code(),
        files,
        meta: ExecutionMeta {
            duration: duration.as_millis() as u64,
            signature_source: source,
        },
        usage: CallUsage {
            verdict: run.as_ref().map(|r| r.status.as_str().to_string()),
            cpu_ms: run.as_ref().map_or(0, |r| r.cpu_ms),
            wall_ms: run.as_ref().map_or(0, |r| r.wall_ms),
            memory_bytes: run.as_ref().map_or(0, |r| r.memory_bytes),
            compile_cpu_ms: compile.as_ref().map(|c| c.cpu_ms),
        },
    }
}

/// `POST /v1/functions/sync`: the chosen changes of an earlier call, with its mount.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyncBody {
    /// The changes to apply: `{path, operation?: create|modify|delete, content?, encoding?:
    /// utf8|base64, hash?}` (a change as the call reported it, with its contents).
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<Value>,
    /// The mount the call had (its `dirs`, rules and security).
    #[schema(value_type = Object)]
    pub mount: Value,
    /// `rollback` (default), `continue` or `abort`.
    pub on_error: Option<String>,
}

/// Seed 004's codelet source.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeletSource {
    /// Only `string`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The module's source, which exports `async function main(input, {logger})`.
    pub code: String,
    /// The export to call (default `main`).
    pub export_name: Option<String>,
}

/// Seed 004's run options, plus Kiln's `memory_mb`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeletOptions {
    /// The input.
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// The timeout, ms (default 2000).
    pub timeout_ms: Option<u64>,
    /// Read-only globals (an object).
    #[schema(value_type = Option<Object>)]
    pub globals: Option<Value>,
    /// Memory, MiB (default 128).
    pub memory_mb: Option<u64>,
}

/// `POST /v1/codelets/run`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeletRunBody {
    /// The source.
    pub source: CodeletSource,
    /// The options.
    pub options: Option<CodeletOptions>,
}

impl CodeletRunBody {
    /// The domain's request, or 400.
    pub fn into_domain(self) -> Result<CodeletRequest, ApiError> {
        if self.source.kind != "string" {
            return Err(ApiError::invalid(vec![field(
                "source.type",
                "must be \"string\"",
            )]));
        }
        let options = self.options.unwrap_or_default();
        Ok(CodeletRequest {
            code: self.source.code,
            export_name: self.source.export_name,
            input: options.input.unwrap_or(Value::Null),
            globals: options.globals,
            timeout_ms: options.timeout_ms,
            memory_mb: options.memory_mb,
        })
    }
}

/// Seed 004's `CodeletResult`, with Kiln's `logsDropped` and `usage`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CodeletResult {
    /// Whether `main` returned.
    pub ok: bool,
    /// Its value.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// `{code: TIMEOUT|SYNTAX_ERROR|RUNTIME_ERROR|POLICY_VIOLATION|MEMORY_LIMIT, message}`.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// The first 100 logs: `{level, message, timestamp}`.
    #[schema(value_type = Vec<Object>)]
    pub logs: Vec<Value>,
    /// From the start of its sandbox to its end, ms.
    pub duration_ms: u64,
    /// Logs past the first 100.
    #[serde(rename = "logsDropped")]
    pub logs_dropped: u64,
    /// Kiln's facts.
    pub usage: CallUsage,
}

/// The wire result of a codelet.
pub fn codelet_result(outcome: CodeletOutcome) -> CodeletResult {
    let run = outcome.run.as_ref();
    CodeletResult {
        ok: outcome.ok,
        value: outcome.value,
        error: outcome.error.and_then(|e| serde_json::to_value(e).ok()),
        logs: values(outcome.logs),
        duration_ms: outcome.duration_ms,
        logs_dropped: outcome.logs_dropped,
        usage: CallUsage {
            verdict: run.map(|r| r.status.as_str().to_string()),
            cpu_ms: run.map_or(0, |r| r.cpu_ms),
            wall_ms: run.map_or(0, |r| r.wall_ms),
            memory_bytes: run.map_or(0, |r| r.memory_bytes),
            compile_cpu_ms: None,
        },
    }
}
