//! Commands run to their end in a sandbox: each in a task and a group of its own, so its
//! verdict, CPU time and peak memory are its own, and a caller that leaves does not cut its
//! supervision short.

use std::sync::atomic::Ordering;

use kiln_engine::runner::{default_env, run_checked};
use kiln_engine::{EngineError, Limits, RunSpec, StdinSource, Stream};

use super::service::{environment, Live};
use super::{ExecOutcome, ExecRequest, SandboxError, SandboxId, SandboxService};

/// Collects a command's stdout and stderr (the runner enforces the cap).
#[derive(Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl kiln_engine::OutputSink for Collected {
    fn output(&mut self, stream: Stream, chunk: &[u8]) {
        match stream {
            Stream::Stderr => self.stderr.extend_from_slice(chunk),
            Stream::Stdout | Stream::Compile => self.stdout.extend_from_slice(chunk),
        }
    }
}

impl SandboxService {
    /// Runs a command in one of `owner`'s sandboxes to its end. It runs in a task of its own:
    /// a caller that goes away does not leave it running past its timeout.
    pub async fn exec(
        &self,
        owner: &str,
        id: &SandboxId,
        request: ExecRequest,
    ) -> Result<ExecOutcome, SandboxError> {
        let timeout = request.check(&self.cfg).map_err(SandboxError::Invalid)?;
        let live = self.live(owner, id)?;
        let limits = Limits {
            wall_time: Some(timeout),
            output_bytes: Some(self.cfg.exec_output_bytes),
            ..self.total_limits(&live.limits)
        };
        live.running.fetch_add(1, Ordering::SeqCst);
        live.touch();
        let task_live = live.clone();
        let task = tokio::spawn(async move {
            let outcome = exec_in(&task_live, request, limits).await;
            task_live.touch();
            task_live.running.fetch_sub(1, Ordering::SeqCst);
            outcome
        });
        task.await
            .map_err(|e| SandboxError::Internal(format!("a command's task failed: {e}")))?
    }
}

/// Runs one command in `live` with `limits`.
async fn exec_in(
    live: &Live,
    request: ExecRequest,
    limits: Limits,
) -> Result<ExecOutcome, SandboxError> {
    let guard = live.sandbox.read().await;
    let sandbox = guard.as_ref().ok_or(SandboxError::NotFound)?;
    let spec = RunSpec {
        argv: request.argv,
        env: environment(default_env(), &[&live.env, &request.env]),
        cwd: request.cwd.unwrap_or_else(|| live.cwd.clone()),
        limits,
        stdin: StdinSource::Bytes(request.stdin),
        tty: None,
        channel: None,
    };
    let mut out = Collected::default();
    let result = match run_checked(sandbox, spec, &mut out, None).await {
        Ok(result) => result,
        Err(EngineError::NotStarted(message)) => return Err(SandboxError::NotStarted(message)),
        Err(e) => return Err(SandboxError::Internal(e.to_string())),
    };
    Ok(ExecOutcome {
        status: result.status,
        exit_code: result.exit_code,
        signal: result.signal,
        stdout: out.stdout,
        stderr: out.stderr,
        truncated: result.truncated,
        cpu_ms: result.cpu_ms,
        wall_ms: result.wall_ms,
        memory_bytes: result.memory_bytes,
        message: result.message,
    })
}
