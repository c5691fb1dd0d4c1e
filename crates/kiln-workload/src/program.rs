//! Running a program in a language: its files go into a fresh sandbox, the compile stage (if the
//! language has one) runs with its own limits, and only if it succeeds does the run stage start,
//! with the program's limits and live stdin. One verdict comes out, with each stage's facts.

use std::sync::Arc;
use std::time::Duration;

use kiln_engine::runner::{
    self, default_env, OutputSink, Phase, RunSpec, SinkWait, StdinSource, Stream,
};
use kiln_engine::{
    Engine, EngineError, LimitOverrides, Limits, RunResult, Sandbox, SandboxShape, Status,
};
use kiln_lang::{Language, RecipeError, SourceFile, StageLimits};
use serde::Serialize;

use crate::workspace::{self, Baseline, CaptureLimits, Captured};

/// Why a program could not be run (its verdict is for failures of the program itself).
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// The engine failed (a sandbox could not be made, its warden is gone).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The language's recipe does not fit the files given.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
}

/// How much of the compiler's output is kept in the result (all of it still streams).
pub const COMPILE_OUTPUT_KEPT: usize = 64 * 1024;

/// A program to run.
#[derive(Debug)]
pub struct Program {
    /// Its language.
    pub language: Language,
    /// Its files; the first is the entry.
    pub files: Vec<SourceFile>,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra compiler options (for a language whose compile command has `{options}`).
    pub compile_options: Vec<String>,
    /// Its stdin.
    pub stdin: StdinSource,
    /// The run stage's limits.
    pub limits: Limits,
    /// The sandbox it runs in.
    pub shape: SandboxShape,
    /// Keep the files the run stage creates or changes in the working directory, up to these
    /// limits.
    pub capture: Option<CaptureLimits>,
}

/// The compile stage's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompileResult {
    /// How the compiler ended.
    #[serde(flatten)]
    pub result: RunResult,
    /// What it printed (stdout and stderr, interleaved as written), up to
    /// [`COMPILE_OUTPUT_KEPT`] bytes.
    pub output: String,
    /// Its stdout alone.
    pub stdout: String,
    /// Its stderr alone (where compilers put their diagnostics).
    pub stderr: String,
}

/// A program's result: one verdict, and each stage's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramResult {
    /// The verdict: `compile_error` if the compile stage failed, else the run stage's.
    pub status: Status,
    /// The compile stage, for compiled languages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile: Option<CompileResult>,
    /// The run stage, unless the compile stage failed.
    pub run: Option<RunResult>,
    /// The files the run stage created or changed, when asked for and it ran.
    #[serde(skip)]
    pub artifacts: Option<Captured>,
}

/// A language file's limits (ms, MiB, KiB) as the engine's. A size too large for bytes
/// saturates, and the engine then cuts it to the most the kernel takes.
pub fn limit_overrides(stage: &StageLimits) -> LimitOverrides {
    let ms = Duration::from_millis;
    LimitOverrides {
        wall_time: stage.wall_ms.map(ms),
        cpu_time: stage.cpu_ms.map(ms),
        idle_time: None,
        memory_bytes: stage.memory_mb.map(|m| m.saturating_mul(1 << 20)),
        pids: stage.pids,
        output_bytes: stage.output_kb.map(|k| k.saturating_mul(1 << 10)),
        file_size_bytes: stage.file_size_kb.map(|k| k.saturating_mul(1 << 10)),
        open_files: None,
    }
}

/// The run stage's limits for `language`: the engine's defaults, then the language's, then what
/// the caller asks for (`overrides`).
pub fn run_limits(language: &Language, overrides: &LimitOverrides) -> Limits {
    let mut limits = Limits::default()
        .merged(&limit_overrides(&language.limits))
        .merged(overrides);
    if let Some(floor) = language.run.min_file_size_kb {
        let floor = floor.saturating_mul(1 << 10);
        limits.file_size_bytes = limits.file_size_bytes.map(|b| b.max(floor));
    }
    limits
}

/// Runs `program` in a fresh sandbox from `engine`, streaming the compiler's output as
/// [`Stream::Compile`] and the program's as stdout and stderr. Everything in the sandbox is killed
/// before this returns; its removal finishes in the background ([`Engine::settle`] waits for it).
pub async fn run_program(
    engine: &Engine,
    program: Program,
    sink: &mut dyn OutputSink,
    kill: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<ProgramResult, ProgramError> {
    let sandbox = if program.language.mounts.is_empty() {
        engine.sandbox(&program.shape).await?
    } else {
        engine
            .sandbox_with_binds(&program.shape, &program.language.mounts)
            .await?
    };
    let sandbox = Arc::new(sandbox);
    let result = run_in(&sandbox, program, sink, kill).await;
    match Arc::try_unwrap(sandbox) {
        Ok(sandbox) => engine.retire(sandbox),
        // A blocking read of its files still holds it; it ends when they let go.
        Err(sandbox) => sandbox.kill_all(),
    }
    result
}

async fn run_in(
    sandbox: &Arc<Sandbox>,
    mut program: Program,
    sink: &mut dyn OutputSink,
    kill: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<ProgramResult, ProgramError> {
    let files = std::mem::take(&mut program.files);
    let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    let capture = program.capture.is_some();
    let bytes: usize = files.iter().map(|f| f.content.len()).sum();
    let write = {
        let sandbox = Arc::clone(sandbox);
        move || {
            let mut baseline = (Baseline::new(), 0u64);
            for file in &files {
                sandbox.write_file(&file.name, &file.content, 0o644)?;
                if capture {
                    baseline
                        .0
                        .insert(file.name.clone(), crate::mount::wire_hash(&file.content));
                    baseline.1 += file.content.len() as u64;
                }
            }
            Ok(baseline)
        }
    };
    // A few small files are written at once (a hop to a blocking thread costs more than they
    // do); large ones, or hashing them for a capture, go to a blocking thread.
    let mut unknown_baseline = false;
    let mut baseline = if capture || bytes > INLINE_WRITE_BYTES {
        blocking(write).await?
    } else {
        write()?
    };
    let memory_mb = program.limits.memory_bytes.map(|b| b >> 20);
    let recipe =
        program
            .language
            .recipe(&names, &program.args, &program.compile_options, memory_mb)?;

    let compile = match &recipe.compile {
        None => None,
        Some(stage) => {
            sink.stage(Phase::Compiling);
            // A client's file-size limit is its program's: the compiler's output (a binary, a
            // jar) may take the default however low the program's is (Judge0's is 1 MB). The
            // language's own compile limits still apply on top.
            let mut base = program.limits.clone();
            if let (Some(asked), Some(default)) =
                (base.file_size_bytes, Limits::default().file_size_bytes)
            {
                base.file_size_bytes = Some(asked.max(default));
            }
            let limits = base.merged(&limit_overrides(&stage.limits));
            let mut spec = RunSpec::new(stage.argv.clone(), limits);
            spec.env = merge_env(&stage.env);
            let mut capture = CompileSink {
                inner: &mut *sink,
                kept: [Vec::new(), Vec::new(), Vec::new()],
            };
            let result = runner::run(sandbox, spec, &mut capture, None).await;
            let [output, stdout, stderr] = capture
                .kept
                .map(|k| String::from_utf8_lossy(&k).into_owned());
            let failed = result.status != Status::Ok;
            let compile = CompileResult {
                result,
                output,
                stdout,
                stderr,
            };
            if failed {
                return Ok(ProgramResult {
                    status: Status::CompileError,
                    compile: Some(compile),
                    run: None,
                    artifacts: None,
                });
            }
            Some(compile)
        }
    };

    if compile.is_some() {
        // Nothing the compile stage started (a build tool's daemon, an annotation processor's
        // child) may run on into the program's stage, where its use would be charged to the
        // program.
        sandbox.kill_processes().await?;
        if program.capture.is_some() {
            // What the compiler made is no more the run's output than the sources are.
            let sandbox = Arc::clone(sandbox);
            match blocking(move || {
                workspace::snapshot(&sandbox, WORKDIR)
                    .map_err(tree_err("read back the compiler's files"))
            })
            .await
            {
                Ok(b) => baseline = b,
                // The run goes on; what it leaves is then not told from the compiler's.
                Err(e) => {
                    tracing::warn!(error = %e, "no baseline after the compile stage");
                    unknown_baseline = true;
                }
            }
        }
    }
    sink.stage(Phase::Running);
    let mut spec = RunSpec::new(recipe.run.argv.clone(), program.limits.clone());
    spec.env = merge_env(&recipe.run.env);
    spec.stdin = program.stdin;
    let mut watch = MemoryErrorSink {
        inner: sink,
        pattern: recipe.memory_error.as_deref().map(str::as_bytes),
        tail: Vec::new(),
        seen: false,
    };
    let mut run = runner::run(sandbox, spec, &mut watch, kill).await;
    if watch.seen && matches!(run.status, Status::NonzeroExit | Status::Signaled) {
        run.status = Status::MemoryLimit;
    }
    let artifacts = match program.capture {
        Some(limits) => {
            // Nothing the run left behind may change its files while they are read.
            sandbox.kill_processes().await?;
            let sandbox = Arc::clone(sandbox);
            let (before, before_bytes) = baseline;
            let left_out = Captured {
                files: Vec::new(),
                truncated: true,
            };
            let captured = if unknown_baseline {
                Ok(left_out.clone())
            } else {
                blocking(move || {
                    workspace::capture(&sandbox, WORKDIR, &before, before_bytes, limits)
                        .map_err(tree_err("read back the run's files"))
                })
                .await
            };
            // A run's verdict stands whatever happens to its files: they are then said to be
            // left out.
            Some(captured.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "capturing a run's files");
                left_out
            }))
        }
        None => None,
    };
    Ok(ProgramResult {
        status: run.status,
        compile,
        run: Some(run),
        artifacts,
    })
}

/// The most bytes of files written on the calling thread.
const INLINE_WRITE_BYTES: usize = 64 << 10;

/// The working directory of a program, where its files are and its artifacts are taken from.
const WORKDIR: &str = "/workspace";

fn tree_err(step: &'static str) -> impl FnOnce(kiln_engine::tree::TreeError) -> ProgramError {
    move |e| ProgramError::Engine(EngineError::Warden(format!("{step}: {e}")))
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ProgramError> + Send + 'static,
) -> Result<T, ProgramError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ProgramError::Engine(EngineError::Warden(format!("a file task failed: {e}")))
    })?
}

/// The default environment with the stage's variables on top (a stage's `KEY=` replaces the default).
fn merge_env(extra: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split('=').next().unwrap_or("").to_string();
    let mut env: Vec<String> = default_env()
        .into_iter()
        .filter(|d| !extra.iter().any(|e| key(e) == key(d)))
        .collect();
    env.extend(extra.iter().cloned());
    env
}

/// Streams a compiler's output as [`Stream::Compile`] and keeps the start of it: both streams
/// interleaved, then each alone.
struct CompileSink<'a> {
    inner: &'a mut dyn OutputSink,
    kept: [Vec<u8>; 3],
}

impl OutputSink for CompileSink<'_> {
    fn stage(&mut self, stage: Phase) {
        self.inner.stage(stage);
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

    fn ready(&mut self) -> Option<SinkWait> {
        self.inner.ready()
    }

    fn output(&mut self, stream: Stream, chunk: &[u8]) {
        let own = if stream == Stream::Stderr { 2 } else { 1 };
        for i in [0, own] {
            let room = COMPILE_OUTPUT_KEPT.saturating_sub(self.kept[i].len());
            self.kept[i].extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        self.inner.output(Stream::Compile, chunk);
    }
}

/// Passes output on and watches stderr for the runtime's out-of-memory line, across chunk edges.
struct MemoryErrorSink<'a, 'p> {
    inner: &'a mut dyn OutputSink,
    pattern: Option<&'p [u8]>,
    tail: Vec<u8>,
    seen: bool,
}

impl OutputSink for MemoryErrorSink<'_, '_> {
    fn stage(&mut self, stage: Phase) {
        self.inner.stage(stage);
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

    fn ready(&mut self) -> Option<SinkWait> {
        self.inner.ready()
    }

    fn output(&mut self, stream: Stream, chunk: &[u8]) {
        if let (Stream::Stderr, Some(pattern), false) = (stream, self.pattern, self.seen) {
            self.tail.extend_from_slice(chunk);
            if self.tail.windows(pattern.len()).any(|w| w == pattern) {
                self.seen = true;
            }
            let keep = pattern.len().saturating_sub(1);
            if self.tail.len() > keep {
                self.tail.drain(..self.tail.len() - keep);
            }
        }
        self.inner.output(stream, chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_limits_override_only_what_they_set() {
        let base = Limits::default();
        let stage = StageLimits {
            memory_mb: Some(512),
            cpu_ms: Some(1500),
            ..StageLimits::default()
        };
        let l = base.merged(&limit_overrides(&stage));
        assert_eq!(l.memory_bytes, Some(512 << 20));
        assert_eq!(l.cpu_time, Some(Duration::from_millis(1500)));
        assert_eq!(l.wall_time, base.wall_time);
        assert_eq!(l.pids, base.pids);
        // KiB and MiB that do not fit in bytes saturate (then the rlimits cut them).
        let huge = StageLimits {
            file_size_kb: Some(1 << 54),
            memory_mb: Some(u64::MAX),
            ..StageLimits::default()
        };
        let l = base.merged(&limit_overrides(&huge));
        assert_eq!(l.file_size_bytes, Some(u64::MAX));
        assert_eq!(l.memory_bytes, Some(u64::MAX));
    }

    #[test]
    fn a_runtimes_file_size_floor_raises_a_lower_limit() {
        let catalog = kiln_lang::Catalog::embedded().unwrap();
        let elixir = catalog.all().iter().find(|l| l.name == "elixir").unwrap();
        let asked = LimitOverrides {
            file_size_bytes: Some(1 << 20),
            ..LimitOverrides::default()
        };
        assert_eq!(run_limits(elixir, &asked).file_size_bytes, Some(64 << 20));
        let python = catalog.all().iter().find(|l| l.name == "python").unwrap();
        assert_eq!(run_limits(python, &asked).file_size_bytes, Some(1 << 20));
    }

    #[test]
    fn stage_env_replaces_defaults() {
        let env = merge_env(&["HOME=/tmp".into(), "X=1".into()]);
        assert!(env.contains(&"HOME=/tmp".to_string()));
        assert!(!env.contains(&"HOME=/workspace".to_string()));
        assert!(env.contains(&"X=1".to_string()));
    }

    #[test]
    fn memory_error_is_found_across_chunks() {
        let mut out = Vec::new();
        let mut inner = |_: Stream, c: &[u8]| out.extend_from_slice(c);
        let mut sink = MemoryErrorSink {
            inner: &mut inner,
            pattern: Some(b"OutOfMemoryError"),
            tail: Vec::new(),
            seen: false,
        };
        sink.output(Stream::Stderr, b"Terminating due to java.lang.OutOfMem");
        assert!(!sink.seen);
        sink.output(Stream::Stderr, b"oryError: Java heap space\n");
        assert!(sink.seen);
        assert!(out.ends_with(b"heap space\n"));
    }
}
