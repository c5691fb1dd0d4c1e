//! The code-runner wire contract: response bodies and channel events, with exactly the contract's
//! fields (its validators reject any other). Kiln's own facts travel in separate shapes (the
//! `usage` event, `POST /v1/run`).

use serde::{Deserialize, Serialize};

/// A job's state, as the contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a slot, or for its start.
    Queued,
    /// Started; its sandbox is being prepared.
    Starting,
    /// Compiling or running.
    Running,
    /// Finished (whatever the verdict).
    Done,
    /// Killed by a client.
    Killed,
    /// Kiln could not run it (or it was never started).
    Error,
}

impl From<kiln_core::JobState> for JobState {
    fn from(s: kiln_core::JobState) -> Self {
        match s {
            kiln_core::JobState::Queued => JobState::Queued,
            kiln_core::JobState::Starting => JobState::Starting,
            kiln_core::JobState::Running => JobState::Running,
            kiln_core::JobState::Done => JobState::Done,
            kiln_core::JobState::Killed => JobState::Killed,
            kiln_core::JobState::Error => JobState::Error,
        }
    }
}

/// `GET /v1/languages` items.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LanguageInfo {
    /// Name.
    pub language: String,
    /// Toolchain version.
    pub version: String,
    /// Other names.
    pub aliases: Vec<String>,
    /// Reads stdin live.
    pub interactive: bool,
}

/// `POST /v1/execute` 202 body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteResponse {
    /// The job id.
    pub job_id: String,
    /// `private-run-<jobId>`.
    pub channel: String,
    /// Always `queued`.
    #[schema(value_type = String, example = "queued")]
    pub status: &'static str,
}

/// `GET /v1/jobs/{id}` body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// The job id.
    pub job_id: String,
    /// Its channel.
    pub channel: String,
    /// Language.
    pub language: String,
    /// Version.
    pub version: String,
    /// State.
    pub state: JobState,
    /// Last change, ms since the epoch.
    pub updated_at_ms: i64,
}

/// The `result` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultEvent {
    /// Exit code, or null when a signal ended it.
    pub exit_code: Option<i32>,
    /// Signal name.
    pub signal: Option<String>,
    /// Ended by the wall or CPU clock.
    pub timed_out: bool,
    /// Ended by the idle clock.
    pub idle_timed_out: bool,
    /// Output was cut at the cap.
    pub truncated: bool,
    /// Duration of the run stage, ms.
    pub duration_ms: u64,
}

/// The compile stage in a RunResult.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompileResultWire {
    /// The compiler's exit code.
    pub exit_code: Option<i32>,
    /// Signal name.
    pub signal: Option<String>,
    /// The compiler's stdout.
    pub stdout: String,
    /// The compiler's stderr (its diagnostics).
    pub stderr: String,
    /// Both, interleaved as written.
    pub output: String,
    /// Duration, ms.
    pub duration_ms: u64,
}

/// `GET /v1/jobs/{id}/output` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunResultWire {
    /// See [`ResultEvent`].
    #[serde(flatten)]
    pub result: ResultEvent,
    /// Everything written to stdout (up to the output cap).
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// The compile stage, for compiled languages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile: Option<CompileResultWire>,
    /// The files the run created or changed in its working directory.
    pub artifacts: Vec<ArtifactWire>,
    /// Files were left out of `artifacts` (past `maxArtifacts` or `maxArtifactBytes`).
    pub artifacts_truncated: bool,
}

/// A kept file, as the `artifact` event and a RunResult give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactWire {
    /// Its path relative to the working directory.
    pub name: String,
    /// Its MIME type (from its first bytes, else its name).
    pub mime_type: String,
    /// Its size.
    pub bytes: u64,
    /// A signed URL that reads it without a token until it expires (with the job's result).
    pub url: String,
}

/// Kiln's `usage` event, just before `result`: the facts the contract has no room for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageEvent {
    /// The verdict: the run's (`ok`, `time_limit`, …), or `expired` for a job whose start never
    /// came.
    pub status: String,
    /// CPU time of the run stage, ms.
    pub cpu_ms: u64,
    /// Wall time of the run stage, ms.
    pub wall_ms: u64,
    /// Peak memory of the run stage, bytes.
    pub memory_bytes: u64,
    /// The compile stage's verdict, CPU ms and peak memory, for compiled languages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile: Option<StageUsage>,
    /// Why the job did not run to a verdict of its own (`internal_error`, `expired`, a kill
    /// before its start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One stage's facts in [`UsageEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageUsage {
    /// The verdict.
    pub status: String,
    /// CPU ms.
    pub cpu_ms: u64,
    /// Wall ms.
    pub wall_ms: u64,
    /// Peak memory, bytes.
    pub memory_bytes: u64,
}
