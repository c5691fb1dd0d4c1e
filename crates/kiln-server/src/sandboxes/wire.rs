//! The sandbox API's bodies: requests typed as they arrive, answers as the domain's types
//! projected to camelCase JSON.

use std::collections::BTreeMap;

use base64::Engine as _;
use kiln_core::sandbox::{
    ExecOutcome, ExecRequest, SandboxInfo, SandboxLimitRequest, SandboxLimits, SandboxRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::coderunner::request::{
    decode_files, FileInput, NetworkName, OutputEncodingName, Positive,
};
use crate::error::ApiError;

/// What a sandbox may use, all its processes together.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SandboxLimitsRequest {
    /// Memory, MiB; its files in `/workspace` and `/tmp` count too (they live in memory).
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub memory_mb: Option<Positive>,
    /// Processes and threads.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub pids: Option<Positive>,
    /// Size of `/workspace`, MiB.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub disk_mb: Option<Positive>,
    /// CPUs' worth of time per period (e.g. 0.5).
    pub cpus: Option<f64>,
}

/// `POST /v1/sandboxes`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateSandbox {
    /// A language from `GET /v1/languages` whose toolchain needs extra mounts; every sandbox
    /// sees the host's system directories (and so every installed toolchain) anyway.
    pub language: Option<String>,
    /// Environment every command gets (over `PATH`, `HOME=/workspace`, `LANG` and the rest).
    pub env: Option<BTreeMap<String, String>>,
    /// Where commands run unless they say otherwise; default `/workspace` (the sandbox user's
    /// home, writable).
    pub cwd: Option<String>,
    /// What it may use.
    pub limits: Option<SandboxLimitsRequest>,
    /// Only `none`: a loopback of its own.
    pub network: Option<NetworkName>,
    /// Seconds it lives (extend with `POST /v1/sandboxes/{id}/timeout`).
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub timeout_secs: Option<Positive>,
    /// Seconds it may go without a call before it is reclaimed.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub idle_timeout_secs: Option<Positive>,
    /// Files written to `/workspace` before it is handed over.
    pub files: Option<Vec<FileInput>>,
    /// Labels of your own, kept and returned.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `POST /v1/sandboxes/{id}/timeout`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtendSandbox {
    /// Seconds from now (never past the server's maximum lifetime from creation).
    #[schema(value_type = u64, minimum = 1)]
    pub timeout_secs: Positive,
}

/// `POST /v1/sandboxes/{id}/exec`: `cmd` (run by `/bin/sh -c`) or `argv`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecCommand {
    /// A shell command line.
    pub cmd: Option<String>,
    /// A program and its arguments (looked up in `PATH`).
    pub argv: Option<Vec<String>>,
    /// Where it runs.
    pub cwd: Option<String>,
    /// Environment over the sandbox's.
    pub env: Option<BTreeMap<String, String>>,
    /// All of its stdin (then EOF).
    pub stdin: Option<String>,
    /// How long it may run, ms.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub timeout_ms: Option<Positive>,
    /// `utf8` (default; bytes that are not UTF-8 become U+FFFD) or `base64`.
    pub output_encoding: Option<OutputEncodingName>,
}

/// A sandbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWire {
    /// Its id.
    pub sandbox_id: String,
    /// `running` (a sandbox that is gone is a 404).
    pub state: &'static str,
    /// The language it was made for.
    pub language: Option<String>,
    /// That language's version.
    pub version: Option<String>,
    /// Environment every command gets.
    pub env: BTreeMap<String, String>,
    /// Where commands run by default.
    pub cwd: String,
    /// What it may use.
    pub limits: LimitsWire,
    /// Unix ms.
    pub created_at_ms: i64,
    /// When it is reclaimed, Unix ms.
    pub expires_at_ms: i64,
    /// Seconds it may go without a call.
    pub idle_timeout_secs: u64,
    /// The last call, Unix ms.
    pub last_active_at_ms: i64,
    /// Commands running now.
    pub running: usize,
    /// Your labels.
    pub metadata: BTreeMap<String, String>,
}

/// A sandbox's limits.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsWire {
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Processes and threads.
    pub pids: u64,
    /// `/workspace`, MiB.
    pub disk_mb: u64,
    /// CPUs, if capped.
    pub cpus: Option<f64>,
}

/// `GET /v1/sandboxes`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SandboxList {
    /// Yours, oldest first.
    pub sandboxes: Vec<SandboxWire>,
}

/// How a command ended.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    /// `ok`, `nonzero_exit`, `signaled`, `wall_time_limit` (its timeout), `memory_limit`,
    /// `output_limit`, `killed` (its sandbox was deleted), `internal_error`.
    pub status: String,
    /// The exit code, or null when a signal ended it.
    pub exit_code: Option<i32>,
    /// The signal's name.
    pub signal: Option<String>,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
    /// Ended by its timeout.
    pub timed_out: bool,
    /// Output was cut at the cap.
    pub truncated: bool,
    /// CPU time, ms (its own, whatever else runs).
    pub cpu_ms: u64,
    /// Wall time, ms.
    pub wall_ms: u64,
    /// Its peak memory, bytes.
    pub memory_bytes: u64,
    /// Why it ended, when that is not plain from the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn positive(p: Option<Positive>) -> Option<u64> {
    p.map(|p| p.0)
}

impl CreateSandbox {
    /// The domain's request.
    pub fn into_domain(self) -> Result<SandboxRequest, ApiError> {
        let files = decode_files(self.files.unwrap_or_default(), "files")?;
        let l = self.limits.unwrap_or_default();
        Ok(SandboxRequest {
            language: self.language,
            env: self.env.unwrap_or_default(),
            cwd: self.cwd,
            limits: SandboxLimitRequest {
                memory_mb: positive(l.memory_mb),
                pids: positive(l.pids),
                disk_mb: positive(l.disk_mb),
                cpus: l.cpus,
            },
            lifetime_secs: positive(self.timeout_secs),
            idle_timeout_secs: positive(self.idle_timeout_secs),
            files,
            metadata: self.metadata.unwrap_or_default(),
        })
    }
}

impl ExecCommand {
    /// The domain's request, and how the output is to be given.
    pub fn into_domain(self) -> Result<(ExecRequest, OutputEncodingName), ApiError> {
        let argv = match (self.cmd, self.argv) {
            (Some(cmd), None) => vec!["/bin/sh".into(), "-c".into(), cmd],
            (None, Some(argv)) => argv,
            (Some(_), Some(_)) => {
                return Err(ApiError::field("cmd", "give `cmd` or `argv`, not both"));
            }
            (None, None) => return Err(ApiError::field("cmd", "give `cmd` or `argv`")),
        };
        Ok((
            ExecRequest {
                argv,
                cwd: self.cwd,
                env: self.env.unwrap_or_default(),
                stdin: self.stdin.map(String::into_bytes).unwrap_or_default(),
                timeout_ms: positive(self.timeout_ms),
            },
            self.output_encoding.unwrap_or(OutputEncodingName::Utf8),
        ))
    }
}

fn limits(l: &SandboxLimits) -> LimitsWire {
    LimitsWire {
        memory_mb: l.memory_mb,
        pids: l.pids,
        disk_mb: l.disk_mb,
        cpus: l.cpus,
    }
}

/// A sandbox as its owner sees it.
pub fn sandbox(info: SandboxInfo) -> SandboxWire {
    SandboxWire {
        sandbox_id: info.id.to_string(),
        state: "running",
        language: info.language,
        version: info.version,
        env: info.env,
        cwd: info.cwd,
        limits: limits(&info.limits),
        created_at_ms: info.created_at_ms,
        expires_at_ms: info.expires_at_ms,
        idle_timeout_secs: info.idle_timeout_secs,
        last_active_at_ms: info.last_active_at_ms,
        running: info.running,
        metadata: info.metadata,
    }
}

fn text(bytes: &[u8], encoding: OutputEncodingName) -> String {
    match encoding {
        OutputEncodingName::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        OutputEncodingName::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

/// A command's outcome as its result.
pub fn exec_result(o: ExecOutcome, encoding: OutputEncodingName) -> ExecResult {
    ExecResult {
        status: o.status.as_str().to_string(),
        exit_code: o.exit_code,
        signal: o.signal,
        stdout: text(&o.stdout, encoding),
        stderr: text(&o.stderr, encoding),
        timed_out: o.status == kiln_engine::Status::WallTimeLimit,
        truncated: o.truncated,
        cpu_ms: o.cpu_ms,
        wall_ms: o.wall_ms,
        memory_bytes: o.memory_bytes,
        message: o.message,
    }
}
