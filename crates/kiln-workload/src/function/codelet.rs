//! Codelets: a JavaScript module's `main(input, {logger})` run under the codelet harness's
//! default-deny policy, in a sandbox whose limits stop what the policy cannot (a tight loop, a
//! pending timer, a memory hog): the run's wall clock, CPU clock and memory cgroup.

use std::time::{Duration, Instant};

use kiln_engine::{Engine, Limits, RunResult, SandboxShape, Status};
use serde::Serialize;
use serde_json::{json, Value};

use super::call::{node_heap, strip_paths, HarnessRun};
use super::harness::CODELET;
use super::protocol::{self, Answers};
use super::FunctionError;

/// The logs a codelet run keeps.
pub const MAX_LOGS: usize = 100;

/// How long past its timeout a codelet may run before the sandbox's clock kills it: the
/// harness's own timer reports `TIMEOUT` with the logs so far, the clock is the backstop.
const KILL_MARGIN: Duration = Duration::from_millis(500);

/// A codelet to run.
#[derive(Debug)]
pub struct Codelet {
    /// The module's source.
    pub code: String,
    /// The export to call (`main`).
    pub export_name: String,
    /// The input.
    pub input: Value,
    /// Read-only globals.
    pub globals: Option<Value>,
    /// The timeout.
    pub timeout: Duration,
    /// The run's limits (memory, processes, output); the wall and CPU clocks come from `timeout`.
    pub limits: Limits,
    /// The sandbox.
    pub shape: SandboxShape,
    /// The most bytes of the result frame taken.
    pub max_result_bytes: usize,
}

/// The codes of a failed codelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CodeletErrorCode {
    /// It ran past its timeout.
    Timeout,
    /// It does not parse.
    SyntaxError,
    /// It threw.
    RuntimeError,
    /// It reached for what the policy denies.
    PolicyViolation,
    /// It ran out of memory.
    MemoryLimit,
}

/// A codelet's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeletError {
    /// Its code.
    pub code: CodeletErrorCode,
    /// What happened.
    pub message: String,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodeletLog {
    /// `info`, `warn`, `error`, `debug` or `log`.
    pub level: String,
    /// The message.
    pub message: String,
    /// When (ISO 8601).
    pub timestamp: Value,
}

/// What a codelet came to (seed 004's `CodeletResult`, with Kiln's facts beside it).
#[derive(Debug, Clone, Serialize)]
pub struct CodeletOutcome {
    /// Whether it returned.
    pub ok: bool,
    /// Its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Its error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<CodeletError>,
    /// The first [`MAX_LOGS`] logs.
    pub logs: Vec<CodeletLog>,
    /// From the start of its sandbox to its end.
    pub duration_ms: u64,
    /// Logs past the first [`MAX_LOGS`], counted.
    #[serde(rename = "logsDropped")]
    pub logs_dropped: u64,
    /// The run's facts.
    pub run: Option<RunResult>,
}

/// Runs `codelet` in a fresh sandbox from `engine`.
pub async fn run_codelet(
    engine: &Engine,
    codelet: Codelet,
) -> Result<CodeletOutcome, FunctionError> {
    let started = Instant::now();
    let sandbox = engine.sandbox(&codelet.shape).await?;
    let sandbox = std::sync::Arc::new(sandbox);
    let outcome = run_in(&sandbox, codelet, started).await;
    match std::sync::Arc::try_unwrap(sandbox) {
        Ok(sandbox) => engine.retire(sandbox),
        Err(_) => tracing::warn!("a codelet's sandbox was still shared at its end"),
    }
    outcome
}

async fn run_in(
    sandbox: &std::sync::Arc<kiln_engine::Sandbox>,
    codelet: Codelet,
    started: Instant,
) -> Result<CodeletOutcome, FunctionError> {
    let kit = vec![
        (CODELET.path(), CODELET.source.as_bytes().to_vec()),
        (CODELET.user_path(), codelet.code.clone().into_bytes()),
    ];
    {
        let sandbox = std::sync::Arc::clone(sandbox);
        tokio::task::spawn_blocking(move || {
            super::tracking::stage(&sandbox, &kit, "/workspace", &[], &[])
        })
        .await
        .map_err(|e| FunctionError::Sandbox {
            step: "stage the codelet",
            message: e.to_string(),
        })??;
    }
    let id = protocol::call_id();
    let timeout_ms = codelet.timeout.as_millis() as u64;
    let frame = json!({
        "v": 1, "id": id, "type": "codelet", "file": CODELET.user_path(),
        "exportName": codelet.export_name, "input": codelet.input,
        "globals": codelet.globals, "timeoutMs": timeout_ms,
        "maxResultBytes": codelet.max_result_bytes,
    });
    let limits = Limits {
        wall_time: Some(codelet.timeout + KILL_MARGIN),
        cpu_time: Some(codelet.timeout + KILL_MARGIN),
        ..codelet.limits.clone()
    };
    let mut flags = CODELET.declared_node_flags();
    flags.extend(node_heap(&limits));
    let harness = HarnessRun {
        argv: CODELET.argv(&flags),
        cwd: "/workspace".into(),
        limits,
        payload: serde_json::to_vec(&frame).unwrap_or_default(),
        id,
        max_frame: codelet.max_result_bytes,
        max_logs: MAX_LOGS,
        output_kept: 64 << 10,
    };
    let (run, answers, out) = harness.run(sandbox, None).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut outcome = judge(&run, answers, &stderr, timeout_ms);
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    outcome.run = Some(run);
    Ok(outcome)
}

fn judge(run: &RunResult, answers: Answers, stderr: &str, timeout_ms: u64) -> CodeletOutcome {
    let logs = answers
        .logs
        .iter()
        .map(|l| CodeletLog {
            level: text(l, "level").unwrap_or_else(|| "log".into()),
            message: text(l, "message").unwrap_or_default(),
            timestamp: l.get("timestamp").cloned().unwrap_or(Value::Null),
        })
        .collect();
    let mut outcome = CodeletOutcome {
        ok: false,
        value: None,
        error: None,
        logs,
        duration_ms: 0,
        logs_dropped: 0,
        run: None,
    };
    let failed = |code, message: String| CodeletError { code, message };
    if let (Some(frame), None) = (&answers.result, &answers.corrupted) {
        outcome.logs_dropped = frame
            .get("logsDropped")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if frame.get("ok").and_then(Value::as_bool) == Some(true) {
            outcome.ok = true;
            outcome.value = Some(frame.get("value").cloned().unwrap_or(Value::Null));
        } else {
            let error = frame.get("error");
            let code = error
                .and_then(|e| e.get("code"))
                .and_then(|c| serde_json::from_value(c.clone()).ok())
                .unwrap_or(CodeletErrorCode::RuntimeError);
            let message = error.and_then(|e| text(e, "message")).unwrap_or_default();
            outcome.error = Some(failed(code, strip_paths(&message)));
        }
        return outcome;
    }
    let memory = run.status == Status::MemoryLimit
        || stderr.contains("JavaScript heap out of memory")
        || stderr.contains("Reached heap limit");
    outcome.error = Some(if memory {
        failed(
            CodeletErrorCode::MemoryLimit,
            "the codelet ran out of memory".into(),
        )
    } else if matches!(
        run.status,
        Status::WallTimeLimit | Status::TimeLimit | Status::IdleTimeLimit
    ) || run.wall_ms >= timeout_ms
    {
        // A harness stopped by its own timeout before it could say so ran out of time all
        // the same.
        failed(
            CodeletErrorCode::Timeout,
            format!("the codelet did not finish within {timeout_ms} ms"),
        )
    } else {
        let why = answers
            .corrupted
            .unwrap_or_else(|| match (&run.signal, run.exit_code) {
                (Some(s), _) => format!("the codelet's process was killed by {s}"),
                (None, Some(c)) => format!("the codelet's process exited with code {c}"),
                (None, None) => "the codelet's process ended without a result".into(),
            });
        failed(CodeletErrorCode::RuntimeError, why)
    });
    outcome
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_declares_its_node_flags() {
        let flags = CODELET.declared_node_flags();
        assert!(
            flags.iter().any(|f| f == "--experimental-vm-modules"),
            "{flags:?}"
        );
        assert!(CODELET.path().starts_with(super::super::harness::DIR));
    }
}
