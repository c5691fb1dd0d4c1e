//! Sandboxes: long-lived environments that belong to a token, live until their lifetime or idle
//! timeout ends, and run commands (each with its own verdict, CPU time and peak memory, while the
//! sandbox's limits cover all of them together). [`SandboxService`] owns them; what makes a
//! sandbox is behind [`SandboxHost`] (the engine, or nothing for tests without root).

mod exec;
mod files;
mod host;
mod log_ring;
mod process;
pub(crate) mod request;
mod runtime;
mod service;

pub use host::SandboxHost;
pub use log_ring::{LogChunk, LogRead};
pub use process::{
    KillOnDrop, ProcessEvent, ProcessFollower, ProcessInfo, ProcessRequest, ProcessState,
};
pub use request::{ExecRequest, SandboxLimitRequest, SandboxRequest};
pub use runtime::{CodeRequest, RunOutcome, Runtime};
pub use service::SandboxService;

use std::collections::BTreeMap;
use std::time::Duration;

use kiln_engine::Status;
use serde::{Deserialize, Serialize};

use crate::admission::FieldError;

/// A sandbox's id: `sbx_` and 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SandboxId(pub String);

impl SandboxId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(format!("sbx_{}", uuid::Uuid::new_v4().simple()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SandboxId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for SandboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a sandbox may use, all its processes together.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxLimits {
    /// Memory, MiB (its files in `/workspace` and `/tmp` count too: they live in memory).
    pub memory_mb: u64,
    /// Processes and threads.
    pub pids: u64,
    /// Size of `/workspace`, MiB.
    pub disk_mb: u64,
    /// CPUs' worth of time per period; `None`: no cap beyond the host's.
    pub cpus: Option<f64>,
}

/// How the sandbox service runs: defaults, maxima and caps.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Sandboxes alive at once, all owners together.
    pub max_sandboxes: usize,
    /// Sandboxes one owner may have alive at once.
    pub max_per_owner: usize,
    /// Limits of a sandbox that asks for none.
    pub default_limits: SandboxLimits,
    /// The most a sandbox may ask for.
    pub max_limits: SandboxLimits,
    /// How long a sandbox lives unless it asks otherwise.
    pub default_lifetime: Duration,
    /// The longest lifetime, counted from its creation, however often it is extended.
    pub max_lifetime: Duration,
    /// How long a sandbox may go without a call before it is reclaimed, unless it asks
    /// otherwise.
    pub default_idle: Duration,
    /// How long a command may run unless it asks otherwise.
    pub default_exec_timeout: Duration,
    /// The longest a command may ask for.
    pub max_exec_timeout: Duration,
    /// stdout plus stderr a command's result keeps.
    pub exec_output_bytes: u64,
    /// Environment variables of a sandbox or a command.
    pub max_env: usize,
    /// Metadata entries of a sandbox, and the bytes of each key and value.
    pub max_metadata: usize,
    /// Bytes of one metadata key or value.
    pub max_metadata_bytes: usize,
    /// Background processes a sandbox keeps, running and ended (the oldest ended one goes to
    /// make room).
    pub max_processes: usize,
    /// Bytes of output each background process keeps (the newest).
    pub process_log_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_sandboxes: 512,
            max_per_owner: 64,
            default_limits: SandboxLimits {
                memory_mb: 512,
                pids: 256,
                disk_mb: 256,
                cpus: None,
            },
            max_limits: SandboxLimits {
                memory_mb: 8192,
                pids: 4096,
                disk_mb: 8192,
                cpus: Some(64.0),
            },
            default_lifetime: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(24 * 3600),
            default_idle: Duration::from_secs(300),
            default_exec_timeout: Duration::from_secs(60),
            max_exec_timeout: Duration::from_secs(3600),
            exec_output_bytes: 4 << 20,
            max_env: 256,
            max_metadata: 64,
            max_metadata_bytes: 1024,
            max_processes: 32,
            process_log_bytes: 256 << 10,
        }
    }
}

/// A sandbox as its owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    /// Its id.
    pub id: SandboxId,
    /// The token that made it.
    pub owner: String,
    /// The language it was made for (its toolchain's mounts), if any.
    pub language: Option<String>,
    /// That language's version.
    pub version: Option<String>,
    /// The environment every command gets (over the defaults).
    pub env: BTreeMap<String, String>,
    /// Where commands run unless they say otherwise.
    pub cwd: String,
    /// What it may use.
    pub limits: SandboxLimits,
    /// Unix ms.
    pub created_at_ms: i64,
    /// When it is reclaimed whatever happens, Unix ms.
    pub expires_at_ms: i64,
    /// How long it may go without a call.
    pub idle_timeout_secs: u64,
    /// The last call, Unix ms.
    pub last_active_at_ms: i64,
    /// Commands running now.
    pub running: usize,
    /// The owner's labels.
    pub metadata: BTreeMap<String, String>,
}

/// How a command ended, with its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The verdict.
    pub status: Status,
    /// The exit code, unless a signal ended it.
    pub exit_code: Option<i32>,
    /// The signal's name, if one ended it.
    pub signal: Option<String>,
    /// stdout, up to the output cap.
    pub stdout: Vec<u8>,
    /// stderr, up to the output cap.
    pub stderr: Vec<u8>,
    /// Output was cut at the cap.
    pub truncated: bool,
    /// CPU time, ms.
    pub cpu_ms: u64,
    /// Wall time, ms.
    pub wall_ms: u64,
    /// Peak memory, bytes.
    pub memory_bytes: u64,
    /// Why it ended, in words, when that is not plain from the rest.
    pub message: Option<String>,
}

/// Why a sandbox call failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Fields of the request are wrong.
    #[error("invalid request: {}", .0.iter().map(|d| format!("{}: {}", d.path, d.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// No such sandbox for this owner (or it is being deleted).
    #[error("sandbox not found")]
    NotFound,
    /// No such language (or its toolchain is not installed).
    #[error("unknown language {0:?}")]
    UnknownLanguage(String),
    /// The owner has as many sandboxes as it may.
    #[error("{owner} has {alive} sandboxes, at most {cap}")]
    OwnerFull {
        /// The token's name.
        owner: String,
        /// Its sandboxes.
        alive: usize,
        /// The cap.
        cap: usize,
    },
    /// The server has as many sandboxes as it may.
    #[error("the server has {alive} sandboxes, at most {cap}")]
    Full {
        /// Sandboxes alive.
        alive: usize,
        /// The cap.
        cap: usize,
    },
    /// The command could not be started (no such program, a working directory that is not
    /// there).
    #[error("the command could not start: {0}")]
    NotStarted(String),
    /// The files given at creation could not be written (a file and a directory of one name,
    /// more than the disk holds).
    #[error("writing {path}: {message}")]
    Write {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// No such process in the sandbox (or it was let go to make room).
    #[error("process {0} not found")]
    ProcessNotFound(u64),
    /// The sandbox has as many processes as it keeps, all running.
    #[error("the sandbox has {cap} processes running, as many as it keeps")]
    TooManyProcesses {
        /// The cap.
        cap: usize,
    },
    /// A file operation failed.
    #[error(transparent)]
    File(#[from] kiln_engine::tree::TreeError),
    /// Nothing listens on the port in the sandbox.
    #[error("nothing listens on port {0} in the sandbox")]
    PortClosed(u16),
    /// The process's stdin is closed (or it ended).
    #[error("the stdin of process {0} is closed")]
    StdinClosed(u64),
    /// Kiln failed (the engine, the host).
    #[error("{0}")]
    Internal(String),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}
