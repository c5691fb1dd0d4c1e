//! Function calls and codelets: one function of the caller's code, called in a fresh sandbox
//! with JSON arguments, whose value comes back on a channel of its own (`protocol`, the
//! `kiln-call/1` frames of `docs/functions.md`) while everything it prints stays its output.
//! Each language has a harness (`harness/`) that loads the code, binds the arguments to the
//! function's signature and turns its value into JSON; C and C++ get a generated dispatcher
//! (`native`). Virtual files and mounted directories are written into the sandbox before the
//! call and read back after it, so its changes can be reported and synced (`crate::mount`).

mod call;
pub mod codelet;
mod harness;
pub mod native;
pub mod protocol;
pub mod schema;
mod tracking;

use std::time::Duration;

use kiln_engine::{Limits, RunResult, SandboxShape};
use serde::Serialize;
use serde_json::{Map, Value};

pub use call::call_function;
pub use codelet::{
    run_codelet, Codelet, CodeletError, CodeletErrorCode, CodeletLog, CodeletOutcome,
};
pub use schema::{FunctionSchema, SignatureSource};
pub use tracking::{TrackedFile, WorkspaceChanges};

/// The languages a function can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionLanguage {
    /// CPython 3.
    Python,
    /// Node.js, ESM or CommonJS.
    Javascript,
    /// Ruby.
    Ruby,
    /// PHP.
    Php,
    /// C, compiled with gcc.
    C,
    /// C++, compiled with g++.
    Cpp,
}

impl FunctionLanguage {
    /// The names a request may use, with their language.
    pub const NAMES: &'static [(&'static str, FunctionLanguage)] = &[
        ("python", Self::Python),
        ("py", Self::Python),
        ("python3", Self::Python),
        ("javascript", Self::Javascript),
        ("js", Self::Javascript),
        ("quickjs", Self::Javascript),
        ("node", Self::Javascript),
        ("ruby", Self::Ruby),
        ("rb", Self::Ruby),
        ("php", Self::Php),
        ("c", Self::C),
        ("cpp", Self::Cpp),
        ("c++", Self::Cpp),
    ];

    /// The language `name` means (case-insensitive), if any.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.to_ascii_lowercase();
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, l)| *l)
    }

    /// The language catalog's name for this language's toolchain.
    pub fn catalog_name(self) -> &'static str {
        match self {
            Self::Python => "python",
            Self::Javascript => "javascript",
            Self::Ruby => "ruby",
            Self::Php => "php",
            Self::C => "c",
            Self::Cpp => "cpp",
        }
    }
}

/// One function call, checked.
#[derive(Debug)]
pub struct FunctionCall {
    /// The language.
    pub language: FunctionLanguage,
    /// The code that defines the function.
    pub code: String,
    /// The function's name.
    pub function: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// An explicit signature.
    pub schema: Option<FunctionSchema>,
    /// Files written under `workdir` before the call (relative names, checked).
    pub files: Vec<(String, Vec<u8>)>,
    /// The working directory (absolute, under `/workspace` or `/tmp`).
    pub workdir: String,
    /// Directories loaded into the sandbox before the call, tracked and synced after it
    /// (shared with the blocking tasks that stage and read them, never copied).
    pub mounts: Option<std::sync::Arc<Mounts>>,
    /// The run's limits (its wall time is the call's timeout).
    pub limits: Limits,
    /// The compile stage's limits (C and C++).
    pub compile_limits: Limits,
    /// The sandbox; its `volumes` must hold the mounts outside `/workspace` and `/tmp`.
    pub shape: SandboxShape,
    /// Extra read-only mounts the toolchain needs.
    pub binds: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    /// The most bytes of stdout and of stderr kept in the result.
    pub output_kept: usize,
    /// The largest result frame taken.
    pub max_result_bytes: usize,
}

/// A call's mounts: the checked request and what was loaded.
#[derive(Debug, Clone)]
pub struct Mounts {
    /// The checked mount request.
    pub plan: crate::mount::MountPlan,
    /// What was loaded from the host.
    pub loaded: crate::mount::Loaded,
}

/// How a call ended (seed 002's statuses and exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    /// The function returned.
    Success,
    /// The function (or its loading, or its arguments) raised an error.
    Error,
    /// The process died without a result (a signal, an exit, a limit other than time).
    Crash,
    /// The call ran out of time.
    Timeout,
    /// The call was killed.
    Terminated,
}

impl CallStatus {
    /// The exit code that goes with it.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Success => 0,
            Self::Error | Self::Crash => 1,
            Self::Timeout => 124,
            Self::Terminated => 143,
        }
    }
}

/// An error the call reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallError {
    /// What went wrong.
    pub message: String,
    /// The error's type (the language's exception class, or Kiln's: `ArgumentError`,
    /// `FunctionNotFound`, `SerializationError`, `CompileError`, `Timeout`, `MemoryLimit`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The stack, where the language gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

impl CallError {
    /// An error of `kind` with `message` and no stack.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: kind.into(),
            stack: None,
        }
    }
}

/// What a call came to.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallOutcome {
    /// How it ended.
    pub status: CallStatus,
    /// The function's value, on success.
    pub result: Option<Value>,
    /// The error, otherwise.
    pub error: Option<CallError>,
    /// What it printed on stdout (up to the kept size, lossy UTF-8).
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// Where the signature came from.
    pub signature_source: SignatureSource,
    /// The compile stage's facts (C and C++).
    pub compile: Option<RunResult>,
    /// The run's facts: its verdict, CPU time and peak memory.
    pub run: Option<RunResult>,
    /// From the sandbox's start to the end of the tracking.
    #[serde(skip)]
    pub duration: Duration,
    /// What changed under the working directory and the mounts.
    #[serde(skip)]
    pub changes: WorkspaceChanges,
    /// What the mounts' batch sync did.
    pub sync: Option<crate::mount::SyncReport>,
}

/// Why a call could not be made at all (its own failures are its outcome).
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] kiln_engine::EngineError),
    /// Writing into or reading from the sandbox failed.
    #[error("{step}: {message}")]
    Sandbox {
        /// What was being done.
        step: &'static str,
        /// The error.
        message: String,
    },
    /// The channel could not be made.
    #[error(transparent)]
    Channel(#[from] protocol::ChannelError),
}
