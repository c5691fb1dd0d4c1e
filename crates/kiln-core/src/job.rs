//! A job as the domain knows it: its id, its state, what it runs, how it ended and its record.
//! No wire shape lives here; each API face projects these types to its own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_engine::{Limits, RunResult, Status};
use kiln_lang::{Language, SourceFile};
use serde::{Deserialize, Serialize};

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A job's id (a UUID).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Admitted: waiting for its start, or for a run slot.
    Queued,
    /// Taken by a worker; its sandbox is being prepared.
    Starting,
    /// Compiling or running.
    Running,
    /// Ran to a verdict (whatever it is).
    Done,
    /// Killed by its owner.
    Killed,
    /// Never ran to a verdict: Kiln failed, the service stopped, or its start never came.
    Error,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Starting,
        JobState::Running,
        JobState::Done,
        JobState::Killed,
        JobState::Error,
    ];

    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Killed => "killed",
            JobState::Error => "error",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the job is over.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Killed | JobState::Error)
    }
}

/// How a job ended: the engine's verdicts, and `expired` for a job whose start never came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Its start never came within the warm-up window; it never ran.
    Expired,
    /// The run's own verdict.
    #[serde(untagged)]
    Run(Status),
}

impl Verdict {
    /// The verdict's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Run(s) => s.as_str(),
            Verdict::Expired => "expired",
        }
    }
}

/// The facts of one stage (compile or run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageFacts {
    /// The stage's verdict.
    pub status: Status,
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it (`SIGKILL`), if one did.
    pub signal: Option<String>,
    /// CPU ms.
    pub cpu_ms: u64,
    /// Wall ms.
    pub wall_ms: u64,
    /// Peak memory, bytes.
    pub memory_bytes: u64,
    /// Whether its output was cut at the cap.
    pub truncated: bool,
    /// What went wrong, for `internal_error`.
    pub message: Option<String>,
}

impl From<&RunResult> for StageFacts {
    fn from(r: &RunResult) -> Self {
        Self {
            status: r.status,
            exit_code: r.exit_code,
            signal: r.signal.clone(),
            cpu_ms: r.cpu_ms,
            wall_ms: r.wall_ms,
            memory_bytes: r.memory_bytes,
            truncated: r.truncated,
            message: r.message.clone(),
        }
    }
}

/// How a job ended, with each stage's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobOutcome {
    /// The one verdict.
    pub verdict: Verdict,
    /// The compile stage, for compiled languages that got that far.
    pub compile: Option<StageFacts>,
    /// The run stage, if it started.
    pub run: Option<StageFacts>,
    /// What the compiler printed (the start of it), for compiled languages.
    pub compile_output: Option<CompileOutput>,
    /// Why it did not run, or why Kiln failed it.
    pub message: Option<String>,
    /// The files its run created or changed, kept (when its output is collected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactInfo>,
    /// Files were left out of `artifacts` (past its limits, or unreadable).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub artifacts_truncated: bool,
}

/// A file a job's run created or changed in its working directory, kept with its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactInfo {
    /// Its number among the job's artifacts (0, 1, …), which names it in the store.
    pub index: u32,
    /// Its path relative to the working directory (`data/out.csv`).
    pub name: String,
    /// Its MIME type, from its first bytes or else its name.
    pub mime_type: String,
    /// Its size.
    pub bytes: u64,
}

impl ArtifactInfo {
    /// Where its bytes are in the object store.
    pub fn key(&self, job: &JobId) -> String {
        format!("{}/{}", artifacts_prefix(job), self.index)
    }
}

/// Where a job's artifacts are in the object store.
pub fn artifacts_prefix(job: &JobId) -> String {
    format!("artifacts/{job}")
}

/// What a compiler printed, as kept in the outcome (up to 64 KiB of each; all of it streams as
/// the job's compile output events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompileOutput {
    /// Its stdout.
    pub stdout: String,
    /// Its stderr (its diagnostics).
    pub stderr: String,
    /// Both, interleaved as written.
    pub output: String,
}

impl JobOutcome {
    /// A job that never ran: killed before its start, expired, or failed by Kiln.
    pub fn unrun(verdict: Verdict, message: impl Into<String>) -> Self {
        Self {
            verdict,
            compile: None,
            run: None,
            compile_output: None,
            message: Some(message.into()),
            artifacts: Vec::new(),
            artifacts_truncated: false,
        }
    }

    /// The state a job with this outcome ends in.
    pub fn state(&self) -> JobState {
        match self.verdict {
            Verdict::Run(Status::Killed) => JobState::Killed,
            Verdict::Run(Status::InternalError) | Verdict::Expired => JobState::Error,
            Verdict::Run(_) => JobState::Done,
        }
    }

    /// The exit code the job is known by: the run's, or a failed compiler's.
    pub fn exit_code(&self) -> Option<i32> {
        match (&self.run, &self.compile) {
            (Some(run), _) => run.exit_code,
            (None, Some(compile)) => compile.exit_code,
            (None, None) => None,
        }
    }
}

/// How a job's output is given to its clients: as text (invalid UTF-8 becomes U+FFFD), or as
/// base64 of the exact bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputEncoding {
    /// UTF-8 text; bytes that are not valid UTF-8 become U+FFFD.
    #[default]
    Utf8,
    /// Base64 (standard alphabet, padded) of the bytes as written.
    Base64,
}

impl OutputEncoding {
    /// The encoding's name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputEncoding::Utf8 => "utf8",
            OutputEncoding::Base64 => "base64",
        }
    }
}

/// What a job runs, fixed when it is admitted.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Its language.
    pub language: Language,
    /// The toolchain's version.
    pub version: String,
    /// Its files, the entry first.
    pub files: Vec<SourceFile>,
    /// Program arguments.
    pub args: Vec<String>,
    /// Extra compiler options.
    pub compile_options: Vec<String>,
    /// The run stage's limits (the compile stage's are the language's on top).
    pub limits: Limits,
    /// stdin given up front, then closed.
    pub stdin: Option<Vec<u8>>,
    /// Keep its output for reading once it is over (`GET /output`).
    pub collect_output: bool,
    /// Keep the files its run creates or changes, up to these limits (with `collect_output`).
    pub artifacts: Option<kiln_workload::workspace::CaptureLimits>,
    /// Start without waiting for the start handshake.
    pub auto_start: bool,
    /// How its output is given to clients.
    pub output_encoding: OutputEncoding,
    /// The client's trace, its span the parent of the job's.
    pub trace: Option<crate::trace::TraceContext>,
}

/// A job's lasting record: what the store keeps, and what a face answers status queries from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// Its id.
    pub id: JobId,
    /// The name of the token that made it.
    pub owner: String,
    /// Its language's name.
    pub language: String,
    /// The toolchain's version.
    pub version: String,
    /// Its state.
    pub state: JobState,
    /// Last change, ms since the epoch.
    pub updated_at_ms: i64,
    /// When the record and its log may be deleted (set once the job is over).
    pub expires_at_ms: Option<i64>,
    /// Whether its output is kept for reading.
    pub collect_output: bool,
    /// How its output is given to clients.
    pub output_encoding: OutputEncoding,
    /// How it ended, once it is over.
    pub outcome: Option<JobOutcome>,
    /// Bytes its event log and its artifacts hold (what it counts against its owner's
    /// stored-output quota).
    pub log_bytes: u64,
}

impl JobRecord {
    /// Why it ended in `error`.
    pub fn error(&self) -> Option<&str> {
        match &self.outcome {
            Some(o) if self.state == JobState::Error => o
                .message
                .as_deref()
                .or_else(|| o.run.as_ref().and_then(|r| r.message.as_deref())),
            _ => None,
        }
    }
}

/// How long a finished job's record and log are kept, and so when they expire.
pub fn expiry(now_ms: i64, ttl: Duration) -> i64 {
    now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}
