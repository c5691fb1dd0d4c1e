//! Function calls and codelets as a service: requests checked into refusals naming each field,
//! limits clamped to the operator's maxima, mounts only under the roots the operator allows, a
//! bounded number of calls at once, and the mounts' changes synced by their rules. The calls
//! themselves are `kiln-workload`'s; a [`FunctionHost`] (the engine) runs them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kiln_engine::{Engine, Limits, SandboxShape};
use kiln_lang::Catalog;
use kiln_workload::function::{
    call_function, run_codelet, CallOutcome, CallStatus, Codelet, CodeletErrorCode, CodeletOutcome,
    FunctionCall, FunctionError, FunctionLanguage, FunctionSchema, Mounts,
};
use kiln_workload::mount::{self, MountConfig, MountLimits};
use kiln_workload::{limit_overrides, run_limits};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::admission::FieldError;
use crate::sandbox::request::bounded;

/// What runs calls and codelets.
#[async_trait]
pub trait FunctionHost: Send + Sync + std::fmt::Debug {
    /// Runs one call.
    async fn call(&self, call: FunctionCall) -> Result<CallOutcome, FunctionError>;
    /// Runs one codelet.
    async fn codelet(&self, codelet: Codelet) -> Result<CodeletOutcome, FunctionError>;
}

#[async_trait]
impl FunctionHost for Engine {
    async fn call(&self, call: FunctionCall) -> Result<CallOutcome, FunctionError> {
        call_function(self, call, None).await
    }

    async fn codelet(&self, codelet: Codelet) -> Result<CodeletOutcome, FunctionError> {
        run_codelet(self, codelet).await
    }
}

#[async_trait]
impl FunctionHost for crate::executor::NoSandboxes {
    async fn call(&self, _call: FunctionCall) -> Result<CallOutcome, FunctionError> {
        Err(kiln_engine::EngineError::Warden("this service has no sandboxes".into()).into())
    }

    async fn codelet(&self, _codelet: Codelet) -> Result<CodeletOutcome, FunctionError> {
        Err(kiln_engine::EngineError::Warden("this service has no sandboxes".into()).into())
    }
}

/// The operator's settings for calls and codelets.
#[derive(Debug, Clone)]
pub struct FunctionsConfig {
    /// Calls and codelets running at once; more wait their turn.
    pub capacity: usize,
    /// A call's timeout unless it asks for another, ms.
    pub default_timeout_ms: u64,
    /// The longest timeout a call may ask for, ms.
    pub max_timeout_ms: u64,
    /// A call's memory unless it asks for more, MiB.
    pub default_memory_mb: u64,
    /// The most memory a call may ask for, MiB.
    pub max_memory_mb: u64,
    /// The most bytes of stdout and of stderr a call returns (each).
    pub output_kept_bytes: usize,
    /// The most bytes a call may print in all before it is stopped.
    pub output_limit_bytes: u64,
    /// The largest result a call may return, bytes.
    pub max_result_bytes: usize,
    /// The most virtual files per call.
    pub max_files: usize,
    /// The largest total of a call's virtual files, bytes.
    pub max_files_bytes: usize,
    /// Host directories under which HTTP calls may mount (none: no mounts over HTTP). The CLI
    /// passes `None` to [`FunctionService::call`]: any directory its user names.
    pub mount_roots: Vec<PathBuf>,
    /// The caps on what a mount loads.
    pub mount_limits: MountLimits,
    /// The sandbox a call runs in (its workspace size bounds what the call may write).
    pub shape: SandboxShape,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        Self {
            capacity: 4,
            default_timeout_ms: 10_000,
            max_timeout_ms: 60_000,
            default_memory_mb: 256,
            max_memory_mb: 2048,
            output_kept_bytes: 1 << 20,
            output_limit_bytes: 8 << 20,
            max_result_bytes: 16 << 20,
            max_files: 1000,
            max_files_bytes: 64 << 20,
            mount_roots: Vec::new(),
            mount_limits: MountLimits::default(),
            shape: SandboxShape::default(),
        }
    }
}

/// A call as a face hands it over.
#[derive(Debug, Clone, Default)]
pub struct CallRequest {
    /// The language's name or alias.
    pub language: String,
    /// The code.
    pub code: String,
    /// The function to call.
    pub function_name: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// An explicit signature.
    pub schema: Option<FunctionSchema>,
    /// Virtual files: relative name → contents.
    pub files: Vec<(String, Vec<u8>)>,
    /// Mounted host directories.
    pub mount: Option<MountConfig>,
    /// The working directory.
    pub workdir: Option<String>,
    /// The timeout, ms.
    pub timeout_ms: Option<u64>,
    /// Memory, MiB.
    pub memory_mb: Option<u64>,
}

/// A codelet as a face hands it over.
#[derive(Debug, Clone, Default)]
pub struct CodeletRequest {
    /// The module's source.
    pub code: String,
    /// The export to call.
    pub export_name: Option<String>,
    /// The input.
    pub input: Value,
    /// Read-only globals.
    pub globals: Option<Value>,
    /// The timeout, ms (default 2000).
    pub timeout_ms: Option<u64>,
    /// Memory, MiB.
    pub memory_mb: Option<u64>,
}

/// Why a call or codelet was not run.
#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    /// The request is wrong; each field says how.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    /// The language's toolchain is not installed here.
    #[error("{0} is not installed on this server")]
    Unavailable(String),
    /// Kiln failed.
    #[error(transparent)]
    Function(#[from] FunctionError),
}

/// Calls and codelets.
#[derive(Debug)]
pub struct FunctionService {
    host: Arc<dyn FunctionHost>,
    catalog: Arc<Catalog>,
    cfg: FunctionsConfig,
    slots: Semaphore,
    /// Calls that ran, by language and status.
    calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Codelets that ran, by their error code (`ok` for none).
    codelets: Mutex<BTreeMap<&'static str, u64>>,
}

/// The most directories one call may mount.
pub const MAX_MOUNTS: usize = 8;

/// The default codelet timeout (seed 004's), ms.
pub const CODELET_DEFAULT_TIMEOUT_MS: u64 = 2000;

impl FunctionService {
    /// A service running calls on `host`, with toolchains from `catalog`.
    pub fn new(host: Arc<dyn FunctionHost>, catalog: Arc<Catalog>, cfg: FunctionsConfig) -> Self {
        let slots = Semaphore::new(cfg.capacity.max(1));
        Self {
            host,
            catalog,
            cfg,
            slots,
            calls: Mutex::default(),
            codelets: Mutex::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &FunctionsConfig {
        &self.cfg
    }

    /// Checks and runs `request`. `mount_roots` are the host directories mounts must be under,
    /// or `None` for any directory (the CLI).
    pub async fn call(
        &self,
        request: CallRequest,
        mount_roots: Option<&[PathBuf]>,
    ) -> Result<CallOutcome, FunctionsError> {
        let mut errors = Vec::new();
        let language = FunctionLanguage::parse(&request.language);
        if language.is_none() {
            let names: Vec<&str> = FunctionLanguage::NAMES.iter().map(|(n, _)| *n).collect();
            errors.push(FieldError::new(
                "language",
                format!("must be one of {}", names.join(", ")),
            ));
        }
        if request.function_name.trim().is_empty() {
            errors.push(FieldError::new("functionName", "must not be empty"));
        }
        if let Some(schema) = &request.schema {
            if let Err(e) = schema.validate() {
                errors.push(FieldError::new("schema", e.to_string()));
            }
        }
        let workdir = request
            .workdir
            .clone()
            .unwrap_or_else(|| "/workspace".into());
        if !workdir_ok(&workdir) {
            errors.push(FieldError::new(
                "workdir",
                "must be an absolute path of plain names under /workspace or /tmp",
            ));
        }
        self.check_files(&request.files, &mut errors);
        let timeout = bounded(
            request.timeout_ms,
            self.cfg.default_timeout_ms,
            self.cfg.max_timeout_ms,
            "timeoutMs",
            &mut errors,
        );
        let memory_mb = bounded(
            request.memory_mb,
            self.cfg.default_memory_mb,
            self.cfg.max_memory_mb,
            "limits.memoryMb",
            &mut errors,
        );
        let plan = match request.mount.clone() {
            Some(config) if config.dirs.len() > MAX_MOUNTS => {
                errors.push(FieldError::new(
                    "mount.dirs",
                    format!("must hold at most {MAX_MOUNTS} directories"),
                ));
                None
            }
            Some(config) => {
                // It canonicalises and stats host paths: a slow disk must not stall the runtime.
                let roots = mount_roots.map(<[PathBuf]>::to_vec);
                let limits = self.cfg.mount_limits;
                let prepared = tokio::task::spawn_blocking(move || {
                    mount::MountPlan::prepare(&config, roots.as_deref(), limits)
                })
                .await
                .map_err(|e| FunctionError::Sandbox {
                    step: "check the mounts",
                    message: e.to_string(),
                })?;
                match prepared {
                    Ok(plan) => Some(plan),
                    Err(e) => {
                        errors.push(FieldError::new(e.field(), e.to_string()));
                        None
                    }
                }
            }
            None => None,
        };
        let Some(language) = language.filter(|_| errors.is_empty()) else {
            return Err(FunctionsError::Invalid(errors));
        };
        let toolchain = self
            .catalog
            .find(language.catalog_name())
            .filter(|d| d.available())
            .ok_or_else(|| FunctionsError::Unavailable(language.catalog_name().into()))?;
        let runtime = &toolchain.language;

        let _slot = self.slots.acquire().await.map_err(|_| {
            FunctionsError::Unavailable("function calls (the service is shutting down)".into())
        })?;
        let mounts = match plan {
            Some(plan) => {
                let referenced = referenced_paths(&request.args, &request.kwargs);
                let for_load = plan.clone();
                let loaded =
                    tokio::task::spawn_blocking(move || mount::load(&for_load, &referenced))
                        .await
                        .map_err(|e| FunctionError::Sandbox {
                            step: "load the mounts",
                            message: e.to_string(),
                        })?
                        .map_err(|e| {
                            FunctionsError::Invalid(vec![FieldError::new(e.field(), e.to_string())])
                        })?;
                Some(Arc::new(Mounts { plan, loaded }))
            }
            None => None,
        };
        let mut shape = self.cfg.shape.clone();
        shape.volumes = mounts
            .iter()
            .flat_map(|m| m.loaded.mounts.iter())
            .map(|m| m.guest.clone())
            .filter(|g| !within_writable(g))
            .collect();
        let limits = Limits {
            wall_time: Some(Duration::from_millis(timeout)),
            cpu_time: Some(Duration::from_millis(timeout)),
            memory_bytes: Some(memory_mb << 20),
            output_bytes: Some(self.cfg.output_limit_bytes),
            ..run_limits(runtime, &Default::default())
        };
        let compile_limits = match &runtime.compile {
            Some(stage) => Limits::default().merged(&limit_overrides(&stage.limits)),
            None => Limits::default(),
        };
        let call = FunctionCall {
            language,
            code: request.code,
            function: request.function_name,
            args: request.args,
            kwargs: request.kwargs,
            schema: request.schema,
            files: request.files,
            workdir,
            mounts,
            limits,
            compile_limits,
            shape,
            binds: runtime.mounts.clone(),
            output_kept: self.cfg.output_kept_bytes,
            max_result_bytes: self.cfg.max_result_bytes,
        };
        let outcome = self.host.call(call).await?;
        let status = match outcome.status {
            CallStatus::Success => "success",
            CallStatus::Error => "error",
            CallStatus::Crash => "crash",
            CallStatus::Timeout => "timeout",
            CallStatus::Terminated => "terminated",
        };
        *lock(&self.calls)
            .entry((language.catalog_name(), status))
            .or_default() += 1;
        Ok(outcome)
    }

    /// The calls' and codelets' counters in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::from(
            "# HELP kiln_function_calls_total Function calls that ran, by language and status.\n\
             # TYPE kiln_function_calls_total counter\n",
        );
        for ((language, status), n) in lock(&self.calls).iter() {
            out.push_str(&format!(
                "kiln_function_calls_total{{language=\"{language}\",status=\"{status}\"}} {n}\n"
            ));
        }
        out.push_str(
            "# HELP kiln_codelets_total Codelets that ran, by outcome (ok or the error code).\n\
             # TYPE kiln_codelets_total counter\n",
        );
        for (outcome, n) in lock(&self.codelets).iter() {
            out.push_str(&format!(
                "kiln_codelets_total{{outcome=\"{outcome}\"}} {n}\n"
            ));
        }
        out
    }

    /// Checks and runs a codelet.
    pub async fn codelet(&self, request: CodeletRequest) -> Result<CodeletOutcome, FunctionsError> {
        let mut errors = Vec::new();
        let export_name = request.export_name.unwrap_or_else(|| "main".into());
        if !is_identifier(&export_name) {
            errors.push(FieldError::new(
                "source.export_name",
                "must be a JavaScript identifier",
            ));
        }
        let timeout = bounded(
            request.timeout_ms,
            CODELET_DEFAULT_TIMEOUT_MS,
            self.cfg.max_timeout_ms,
            "options.timeout_ms",
            &mut errors,
        );
        let memory_mb = bounded(
            request.memory_mb,
            self.cfg.default_memory_mb.min(128),
            self.cfg.max_memory_mb,
            "options.memory_mb",
            &mut errors,
        );
        if let Some(g) = &request.globals {
            if !g.is_object() {
                errors.push(FieldError::new("options.globals", "must be an object"));
            }
        }
        if !errors.is_empty() {
            return Err(FunctionsError::Invalid(errors));
        }
        let node = self
            .catalog
            .find("javascript")
            .filter(|d| d.available())
            .ok_or_else(|| FunctionsError::Unavailable("javascript".into()))?;
        let _slot = self.slots.acquire().await.map_err(|_| {
            FunctionsError::Unavailable("codelets (the service is shutting down)".into())
        })?;
        let codelet = Codelet {
            code: request.code,
            export_name,
            input: request.input,
            globals: request.globals,
            timeout: Duration::from_millis(timeout),
            limits: Limits {
                memory_bytes: Some(memory_mb << 20),
                output_bytes: Some(self.cfg.output_limit_bytes),
                ..run_limits(&node.language, &Default::default())
            },
            shape: self.cfg.shape.clone(),
            max_result_bytes: self.cfg.max_result_bytes,
        };
        let outcome = self.host.codelet(codelet).await?;
        let code = match outcome.error.as_ref().map(|e| e.code) {
            None => "ok",
            Some(CodeletErrorCode::Timeout) => "TIMEOUT",
            Some(CodeletErrorCode::SyntaxError) => "SYNTAX_ERROR",
            Some(CodeletErrorCode::RuntimeError) => "RUNTIME_ERROR",
            Some(CodeletErrorCode::PolicyViolation) => "POLICY_VIOLATION",
            Some(CodeletErrorCode::MemoryLimit) => "MEMORY_LIMIT",
        };
        *lock(&self.codelets).entry(code).or_default() += 1;
        Ok(outcome)
    }

    fn check_files(&self, files: &[(String, Vec<u8>)], errors: &mut Vec<FieldError>) {
        if files.len() > self.cfg.max_files {
            errors.push(FieldError::new(
                "files",
                format!("must hold at most {} files", self.cfg.max_files),
            ));
        }
        let total: usize = files.iter().map(|(_, c)| c.len()).sum();
        if total > self.cfg.max_files_bytes {
            errors.push(FieldError::new(
                "files",
                format!(
                    "must hold at most {} bytes in all",
                    self.cfg.max_files_bytes
                ),
            ));
        }
        for (name, _) in files {
            if let Err(problem) = kiln_engine::files::check_relative(name) {
                errors.push(FieldError::new(
                    format!("files[{name:?}]"),
                    problem.to_string(),
                ));
            }
        }
    }
}

/// A counter map's lock; a panic while it was held left only a count behind.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A mount at `guest` sits in the sandbox's own writable trees (else it needs a volume).
fn within_writable(guest: &str) -> bool {
    ["/workspace", "/tmp"]
        .iter()
        .any(|root| guest == *root || guest.strip_prefix(root).is_some_and(|r| r.starts_with('/')))
}

/// `/workspace` or `/tmp`, or a plain path under them.
fn workdir_ok(dir: &str) -> bool {
    let plain = |rest: &str| {
        rest.is_empty()
            || rest
                .strip_prefix('/')
                .is_some_and(|r| r.split('/').all(|c| !c.is_empty() && c != "." && c != ".."))
    };
    ["/workspace", "/tmp"]
        .iter()
        .any(|root| dir.strip_prefix(root).is_some_and(plain))
        && !dir.starts_with("/tmp/.kiln")
}

/// The absolute paths the call's arguments name (strings that look like paths): what a lazy
/// mount loads.
fn referenced_paths(args: &[Value], kwargs: &Map<String, Value>) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.starts_with('/') && s.len() < 4096 => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => map.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    args.iter().for_each(|a| walk(a, &mut out));
    kwargs.values().for_each(|a| walk(a, &mut out));
    out
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdirs_stay_in_the_writable_trees() {
        for ok in ["/workspace", "/workspace/a/b", "/tmp", "/tmp/x"] {
            assert!(workdir_ok(ok), "{ok}");
        }
        for bad in [
            "/",
            "/etc",
            "/workspace/../etc",
            "/workspacex",
            "/tmp/.kiln",
            "workspace",
            "/tmp//x",
        ] {
            assert!(!workdir_ok(bad), "{bad}");
        }
    }

    #[test]
    fn referenced_paths_are_the_absolute_strings_of_the_arguments() {
        let args = vec![
            Value::from("/data/in"),
            Value::from("rel"),
            serde_json::json!({"o": ["/data/out"]}),
        ];
        let mut kwargs = Map::new();
        kwargs.insert("k".into(), Value::from("/x"));
        assert_eq!(
            referenced_paths(&args, &kwargs),
            ["/data/in", "/data/out", "/x"]
        );
    }
}
