//! One function call, from a fresh sandbox to its outcome: the harness (or, for C and C++, the
//! compiled dispatcher), the user's code and the files go in; the call frame goes out on the
//! channel while the run is supervised; the result frame, the run's verdict and the tree's
//! changes come back as one [`CallOutcome`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_engine::runner::{self, default_env, RunSpec, Stream};
use kiln_engine::{Engine, Limits, RunResult, Sandbox, Status};
use serde_json::{json, Value};

use super::harness::{self, DIR};
use super::native::{self, NativeLanguage};
use super::protocol::{self, Answers};
use super::tracking::{self, Staged};
use super::{
    CallError, CallOutcome, CallStatus, FunctionCall, FunctionError, FunctionLanguage, Mounts,
    SignatureSource,
};
use crate::mount::{sync_all, FileChange, OnPermissionDenied, SyncMode, SyncReport, SyncTarget};

/// How long the channel may stay open once the run has ended and the sandbox's processes are
/// gone (nothing can hold it then; this only bounds a warden that does not answer).
const CHANNEL_GRACE: Duration = Duration::from_secs(2);

/// Calls `call.function` in a fresh sandbox from `engine`. `kill`, when it fires, ends the call
/// as `terminated`. Everything in the sandbox is gone before this returns.
pub async fn call_function(
    engine: &Engine,
    call: FunctionCall,
    kill: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<CallOutcome, FunctionError> {
    let started = Instant::now();
    let sandbox = if call.binds.is_empty() && call.shape.volumes.is_empty() {
        engine.sandbox(&call.shape).await?
    } else {
        engine.sandbox_with_binds(&call.shape, &call.binds).await?
    };
    let sandbox = Arc::new(sandbox);
    let outcome = call_in(&sandbox, call, kill, started).await;
    match Arc::try_unwrap(sandbox) {
        Ok(sandbox) => engine.retire(sandbox),
        // Unreachable: every blocking task holding a clone has been awaited. Dropping it still
        // kills the sandbox.
        Err(_) => tracing::warn!("a function call's sandbox was still shared at its end"),
    }
    outcome
}

/// What the sandbox needs before the run: the files, and the command with its call frame.
struct Prepared {
    argv: Vec<String>,
    payload: Vec<u8>,
    id: String,
    source: SignatureSource,
    compile: Option<Vec<String>>,
}

async fn call_in(
    sandbox: &Arc<Sandbox>,
    mut call: FunctionCall,
    kill: Option<tokio::sync::oneshot::Receiver<()>>,
    started: Instant,
) -> Result<CallOutcome, FunctionError> {
    let id = protocol::call_id();
    let mut kit: Vec<(String, Vec<u8>)> = Vec::new();
    let prepared = match call.language {
        FunctionLanguage::C | FunctionLanguage::Cpp => {
            let lang = if call.language == FunctionLanguage::C {
                NativeLanguage::C
            } else {
                NativeLanguage::Cpp
            };
            let program =
                match native::prepare(lang, &call.code, &call.function, call.schema.as_ref()) {
                    Ok(p) => p,
                    Err(e) => return Ok(refused(&call, e.error_type(), e.to_string(), started)),
                };
            let payload =
                match native::encode_call(&program.signature, &id, &call.args, &call.kwargs) {
                    Ok(p) => p,
                    Err(e) => {
                        let mut out = refused(&call, e.error_type(), e.to_string(), started);
                        out.signature_source = program.signature_source;
                        return Ok(out);
                    }
                };
            kit.push((
                format!("{DIR}/{}", program.user_file),
                call.code.clone().into_bytes(),
            ));
            kit.push((
                format!("{DIR}/{}", program.dispatcher_file),
                program.dispatcher.into_bytes(),
            ));
            Prepared {
                argv: vec![format!("{DIR}/call")],
                payload,
                id,
                source: program.signature_source,
                compile: Some(native::compile_argv(lang)),
            }
        }
        language => {
            let Some(h) = harness::for_language(language) else {
                unreachable!("every interpreted language has a harness")
            };
            kit.push((h.path(), h.source.as_bytes().to_vec()));
            kit.push((h.user_path(), call.code.clone().into_bytes()));
            let frame = json!({
                "v": 1, "id": id, "type": "call", "file": h.user_path(),
                "function": call.function, "args": call.args, "kwargs": call.kwargs,
                "schema": call.schema, "maxResultBytes": call.max_result_bytes,
            });
            let extra = match language {
                FunctionLanguage::Javascript => node_heap(&call.limits),
                _ => Vec::new(),
            };
            Prepared {
                argv: h.argv(&extra),
                payload: serde_json::to_vec(&frame).unwrap_or_default(),
                id,
                source: SignatureSource::Convention,
                compile: None,
            }
        }
    };

    // A name the sandbox's tree refuses, files that clash or a full disk are the request's
    // trouble: the call fails (and nothing is synced), Kiln does not.
    let staged = match stage(sandbox, kit, &mut call).await {
        Ok(staged) => staged,
        Err(FunctionError::Sandbox { step, message }) => {
            let mut outcome = refused(&call, "FileError", format!("{step}: {message}"), started);
            outcome.signature_source = prepared.source;
            return Ok(outcome);
        }
        Err(e) => return Err(e),
    };

    let mut compiled = None;
    if let Some(argv) = &prepared.compile {
        let mut spec = RunSpec::new(argv.clone(), call.compile_limits.clone());
        spec.cwd = DIR.into();
        let mut out = Kept::new(call.output_kept);
        let result = runner::run(sandbox, spec, &mut out, None).await;
        if result.status != Status::Ok {
            let mut diagnostics = strip_paths(&String::from_utf8_lossy(&out.stderr));
            if diagnostics.trim().is_empty() {
                // A compiler stopped by a limit says nothing itself.
                diagnostics = format!("the compiler ended with {}", result.status.as_str());
            }
            let mut outcome = refused(&call, "CompileError", diagnostics, started);
            outcome.signature_source = prepared.source;
            outcome.compile = Some(result);
            return Ok(outcome);
        }
        compiled = Some(result);
        sandbox.kill_processes().await?;
    }

    let harness = HarnessRun {
        argv: prepared.argv,
        cwd: call.workdir.clone(),
        limits: call.limits.clone(),
        payload: prepared.payload,
        id: prepared.id,
        max_frame: call.max_result_bytes,
        max_logs: 0,
        output_kept: call.output_kept,
    };
    let (run, answers, out) = harness.run(sandbox, kill).await?;

    let changes = tracking::collect(sandbox, &call, staged).await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut outcome = judge(&call, &run, answers, &stderr, prepared.source);
    outcome.stdout = stdout;
    outcome.stderr = stderr;
    outcome.compile = compiled;
    outcome.run = Some(run);
    outcome.changes = changes;
    if let Some(mounts) = &call.mounts {
        outcome.sync = settle_mounts(mounts, &mut outcome).await?;
    }
    outcome.duration = started.elapsed();
    Ok(outcome)
}

/// A harness run with its channel.
pub(super) struct HarnessRun {
    pub argv: Vec<String>,
    pub cwd: String,
    pub limits: Limits,
    pub payload: Vec<u8>,
    pub id: String,
    pub max_frame: usize,
    pub max_logs: usize,
    pub output_kept: usize,
}

impl HarnessRun {
    /// Runs the harness, writing the call frame and reading its answers meanwhile; once it has
    /// ended, nothing else of the sandbox runs.
    pub async fn run(
        self,
        sandbox: &Sandbox,
        kill: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> Result<(RunResult, Answers, Kept), FunctionError> {
        let (host, child) = protocol::channel()?;
        let mut exchange = tokio::spawn({
            let frame = protocol::frame(&self.payload);
            let (id, max_frame, max_logs) = (self.id, self.max_frame, self.max_logs);
            async move { protocol::exchange(host, frame, &id, max_frame, max_logs).await }
        });
        let mut spec = RunSpec::new(self.argv, self.limits);
        spec.cwd = self.cwd;
        spec.env = default_env();
        spec.channel = Some(child);
        let mut out = Kept::new(self.output_kept);
        let run = runner::run(sandbox, spec, &mut out, kill).await;
        // Nothing the call started may keep the channel open, or write into the tree being read.
        if let Err(e) = sandbox.kill_processes().await {
            exchange.abort();
            return Err(e.into());
        }
        let answers = match tokio::time::timeout(CHANNEL_GRACE, &mut exchange).await {
            Ok(Ok(answers)) => answers,
            _ => {
                exchange.abort();
                Answers {
                    corrupted: Some("the result channel stayed open after the call".into()),
                    ..Answers::default()
                }
            }
        };
        Ok((run, answers, out))
    }
}

/// Writes Kiln's files, the virtual files (moved out of the call: nothing reads them after)
/// and the mounts' entries, as the sandbox's user.
async fn stage(
    sandbox: &Arc<Sandbox>,
    kit: Vec<(String, Vec<u8>)>,
    call: &mut FunctionCall,
) -> Result<Staged, FunctionError> {
    let sandbox = Arc::clone(sandbox);
    let workdir = call.workdir.clone();
    let files = std::mem::take(&mut call.files);
    let mounts = call.mounts.clone();
    tokio::task::spawn_blocking(move || {
        let loaded = mounts.as_deref().map_or(&[][..], |m| &m.loaded.mounts);
        tracking::stage(&sandbox, &kit, &workdir, &files, loaded)
    })
    .await
    .map_err(|e| FunctionError::Sandbox {
        step: "stage the call's files",
        message: e.to_string(),
    })?
}

/// Applies the mounts' `onPermissionDenied` to the outcome and, in batch mode, syncs the
/// permitted changes of a call that succeeded.
async fn settle_mounts(
    mounts: &Mounts,
    outcome: &mut CallOutcome,
) -> Result<Option<SyncReport>, FunctionError> {
    let denied: Vec<String> = outcome
        .changes
        .mounts
        .iter()
        .flat_map(|m| m.denied.iter())
        .map(|d| {
            format!(
                "{} {}",
                serde_json::to_value(d.operation)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or(""),
                d.path
            )
        })
        .collect();
    match mounts.plan.on_permission_denied {
        OnPermissionDenied::Throw if !denied.is_empty() => {
            outcome.status = CallStatus::Error;
            outcome.result = None;
            outcome.error = Some(CallError::new(
                "PermissionDenied",
                format!("the mount's rules refuse: {}", denied.join(", ")),
            ));
            return Ok(None);
        }
        OnPermissionDenied::Ignore => {
            for m in &mut outcome.changes.mounts {
                let permitted = |c: &FileChange| c.permitted;
                m.created.retain(permitted);
                m.modified.retain(permitted);
                m.deleted.retain(permitted);
                m.denied.clear();
            }
        }
        _ => {}
    }
    // A call that did not succeed may have stopped halfway: its changes are reported (and a
    // manual sync can still apply them), not synced.
    // Nor is a tree that was not read back whole: what was not seen is not known to be gone.
    if mounts.plan.sync.mode != SyncMode::Batch
        || outcome.status != CallStatus::Success
        || outcome.changes.truncated
    {
        return Ok(None);
    }
    let targets: Vec<SyncTarget> = mounts
        .loaded
        .mounts
        .iter()
        .zip(&outcome.changes.mounts)
        .map(|(m, changes)| SyncTarget {
            root: m.root(),
            changes: changes.to_sync(),
        })
        .collect();
    let plan = mounts.plan.clone();
    let report = tokio::task::spawn_blocking(move || {
        sync_all(&targets, &plan.permissions, plan.sync.on_error, plan.follow)
    })
    .await
    .map_err(|e| FunctionError::Sandbox {
        step: "sync the mounts",
        message: e.to_string(),
    })?;
    Ok(Some(report))
}

/// An outcome for a call refused before it ran (its arguments, its signature, its compilation).
fn refused(call: &FunctionCall, kind: &str, message: String, started: Instant) -> CallOutcome {
    CallOutcome {
        status: CallStatus::Error,
        result: None,
        error: Some(CallError::new(kind, message)),
        stdout: String::new(),
        stderr: String::new(),
        signature_source: if call.schema.is_some() {
            SignatureSource::Schema
        } else {
            SignatureSource::Convention
        },
        compile: None,
        run: None,
        duration: started.elapsed(),
        changes: Default::default(),
        sync: None,
    }
}

/// The outcome from the run's verdict and what came back on the channel. A result that came is
/// believed whatever happened after it; without one, the verdict says why.
fn judge(
    call: &FunctionCall,
    run: &RunResult,
    answers: Answers,
    stderr: &str,
    source: SignatureSource,
) -> CallOutcome {
    let mut outcome = CallOutcome {
        status: CallStatus::Crash,
        result: None,
        error: None,
        stdout: String::new(),
        stderr: String::new(),
        signature_source: source,
        compile: None,
        run: None,
        duration: Duration::ZERO,
        changes: Default::default(),
        sync: None,
    };
    if let (Some(frame), None) = (&answers.result, &answers.corrupted) {
        if let Some(s) = frame
            .get("signatureSource")
            .and_then(|v| serde_json::from_value::<SignatureSource>(v.clone()).ok())
        {
            outcome.signature_source = s;
        }
        if frame.get("success").and_then(Value::as_bool) == Some(true) {
            outcome.status = CallStatus::Success;
            outcome.result = Some(frame.get("result").cloned().unwrap_or(Value::Null));
        } else {
            outcome.status = CallStatus::Error;
            outcome.error = Some(error_of(frame.get("error")));
        }
        return outcome;
    }
    let timeout_ms = call.limits.wall_time.map_or(0, |d| d.as_millis());
    let (status, kind, message) = match run.status {
        Status::Killed => (
            CallStatus::Terminated,
            "Terminated",
            "the call was killed".into(),
        ),
        Status::WallTimeLimit | Status::TimeLimit | Status::IdleTimeLimit => (
            CallStatus::Timeout,
            "Timeout",
            format!("the call did not return within its timeout of {timeout_ms} ms"),
        ),
        Status::MemoryLimit => (
            CallStatus::Crash,
            "MemoryLimit",
            "the call ran out of memory".to_string(),
        ),
        _ if stderr.contains("JavaScript heap out of memory") => (
            CallStatus::Crash,
            "MemoryLimit",
            "the call ran out of memory (the JavaScript heap)".to_string(),
        ),
        Status::OutputLimit => (
            CallStatus::Crash,
            "OutputLimit",
            "the call printed more than its output limit".to_string(),
        ),
        Status::InternalError => (
            CallStatus::Crash,
            "InternalError",
            run.message.clone().unwrap_or_else(|| "Kiln failed".into()),
        ),
        _ => match &answers.corrupted {
            Some(why) => (CallStatus::Crash, "ProtocolError", why.clone()),
            None => (CallStatus::Crash, "Crash", ended_without_result(run)),
        },
    };
    outcome.status = status;
    outcome.error = Some(CallError::new(kind, message));
    outcome
}

fn ended_without_result(run: &RunResult) -> String {
    match (&run.signal, run.exit_code) {
        (Some(signal), _) => format!("the process was killed by {signal} before it returned"),
        (None, Some(code)) => format!("the process exited with code {code} before it returned"),
        (None, None) => "the process ended before it returned".into(),
    }
}

fn error_of(value: Option<&Value>) -> CallError {
    let text = |key: &str| {
        value
            .and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    CallError {
        message: text("message").unwrap_or_default(),
        kind: text("type").unwrap_or_else(|| "Error".into()),
        stack: text("stack"),
    }
}

/// Node's heap limit: three quarters of the run's memory, so that the heap gives out (a clear
/// error) before the cgroup's OOM killer.
pub(super) fn node_heap(limits: &Limits) -> Vec<String> {
    match limits.memory_bytes {
        Some(bytes) => vec![format!(
            "--max-old-space-size={}",
            ((bytes >> 20) * 3 / 4).max(16)
        )],
        None => Vec::new(),
    }
}

/// Kiln's own directory is no business of the caller's: diagnostics name the files alone.
pub(super) fn strip_paths(text: &str) -> String {
    text.replace(&format!("{DIR}/"), "")
        .lines()
        // The dispatcher includes the user's file: that the error is in it says as much.
        .filter(|l| !l.starts_with("In file included from kiln_dispatch"))
        .fold(String::new(), |mut out, l| {
            out.push_str(l);
            out.push('\n');
            out
        })
}

/// Stdout and stderr, each kept up to a size.
pub(super) struct Kept {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    cap: usize,
}

impl Kept {
    fn new(cap: usize) -> Self {
        Self {
            stdout: Vec::new(),
            stderr: Vec::new(),
            cap,
        }
    }
}

impl kiln_engine::OutputSink for Kept {
    fn output(&mut self, stream: Stream, chunk: &[u8]) {
        let buf = match stream {
            Stream::Stderr => &mut self.stderr,
            Stream::Stdout | Stream::Compile => &mut self.stdout,
        };
        let room = self.cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}
