//! Running one program to its verdict: stdin in, stdout and stderr out as they come, the wall, CPU
//! and idle clocks and the output cap enforced, then the accounting read back from the cgroup.

use std::time::{Duration, Instant};

use kiln_jail::protocol::SpawnRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::engine::{EngineError, Sandbox};
use crate::limits::{Accounting, Limits};
use crate::process::Process;
use crate::pty::TtySize;
use crate::verdict::{decide, signal_name, KillReason, Outcome, RunResult, Status};

/// How often the CPU and idle clocks are checked.
const CLOCK_TICK: Duration = Duration::from_millis(10);
/// How long to wait for the output to end after the program exits before its group is killed.
const EOF_GRACE: Duration = Duration::from_millis(20);
/// How long output is still read after that kill.
const DRAIN_GRACE: Duration = Duration::from_millis(250);
/// The largest chunk read from a pipe at once.
const CHUNK: usize = 8192;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// The compiler's output (its stdout and stderr), in a compile stage.
    Compile,
}

/// A future a sink hands the runner to wait on.
pub type SinkWait = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Where a run's output goes as it arrives.
pub trait OutputSink: Send {
    /// One chunk of output (at most 8 KiB).
    fn output(&mut self, stream: Stream, chunk: &[u8]);

    /// A program moved to another stage (compile, then run). Called before the stage starts.
    fn stage(&mut self, _stage: Phase) {}

    /// The program started, as `pid` inside the sandbox.
    fn spawned(&mut self, _pid: i32) {}

    /// Called on every tick of the run's clocks (every 10 ms): a sink that gathers small writes
    /// hands them on.
    fn flush(&mut self) {}

    /// `None` while the sink takes output; otherwise a future that resolves when it can again.
    /// Until then the runner reads no more of the program's output, so the program waits in its
    /// writes (and its idle clock does not run).
    fn ready(&mut self) -> Option<SinkWait> {
        None
    }
}

/// The stage a program is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Compiling.
    Compiling,
    /// Running.
    Running,
}

impl<F: FnMut(Stream, &[u8]) + Send> OutputSink for F {
    fn output(&mut self, stream: Stream, chunk: &[u8]) {
        self(stream, chunk)
    }
}

/// Where a run's stdin comes from.
#[derive(Debug)]
pub enum StdinSource {
    /// EOF at once.
    Closed,
    /// These bytes, then EOF.
    Bytes(Vec<u8>),
    /// Live chunks; the channel closing is EOF.
    Live(mpsc::Receiver<Vec<u8>>),
}

/// One program to run.
#[derive(Debug)]
pub struct RunSpec {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// The environment (`KEY=value`).
    pub env: Vec<String>,
    /// The working directory inside the sandbox.
    pub cwd: String,
    /// The limits.
    pub limits: Limits,
    /// stdin.
    pub stdin: StdinSource,
    /// Run on a terminal of this size (stdin, stdout and stderr all the terminal; its output
    /// arrives as stdout) instead of pipes.
    pub tty: Option<TtySize>,
    /// The program's fd 3: the sandbox's end of a harness's channel, whose other end the caller
    /// keeps.
    pub channel: Option<std::os::fd::OwnedFd>,
}

impl RunSpec {
    /// A spec for `argv` with the default environment, `/workspace` and `limits`.
    pub fn new(argv: Vec<String>, limits: Limits) -> Self {
        Self {
            argv,
            env: default_env(),
            cwd: "/workspace".into(),
            limits,
            stdin: StdinSource::Closed,
            tty: None,
            channel: None,
        }
    }
}

/// The environment programs get unless told otherwise: nothing of the server's own.
pub fn default_env() -> Vec<String> {
    [
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "HOME=/workspace",
        "USER=sandbox",
        "LANG=C.UTF-8",
        "LC_ALL=C.UTF-8",
        "TMPDIR=/tmp",
        "TERM=dumb",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Runs `spec` in `sandbox`, streaming output to `sink`. `kill` ends the run as `killed` when it
/// yields. The sandbox is left for the caller to destroy.
pub async fn run(
    sandbox: &Sandbox,
    spec: RunSpec,
    sink: &mut dyn OutputSink,
    kill: Option<tokio::sync::oneshot::Receiver<()>>,
) -> RunResult {
    run_checked(sandbox, spec, sink, kill)
        .await
        .unwrap_or_else(|e| internal(&e))
}

/// As [`run`], except that a process that could not start at all is an error
/// ([`EngineError::NotStarted`]), for callers that answer it as the caller's mistake.
pub async fn run_checked(
    sandbox: &Sandbox,
    spec: RunSpec,
    sink: &mut dyn OutputSink,
    mut kill: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<RunResult, EngineError> {
    let steering = match kill.as_mut() {
        Some(rx) => Steering::Kill(rx),
        None => Steering::None,
    };
    checked(run_inner(sandbox, spec, sink, steering).await)
}

/// What may be asked of a run while it runs ([`run_steered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunCommand {
    /// `SIGKILL` kills the program and everything it started (daemons included) and ends the
    /// run as `killed`; any other signal goes to the program's process group.
    Signal(i32),
    /// Its terminal's new size (nothing, for a run without one).
    Resize(TtySize),
}

/// As [`run_checked`], steered by the commands sent on `commands` while it runs. A closed
/// channel steers no more.
pub async fn run_steered(
    sandbox: &Sandbox,
    spec: RunSpec,
    sink: &mut dyn OutputSink,
    mut commands: mpsc::Receiver<RunCommand>,
) -> Result<RunResult, EngineError> {
    checked(run_inner(sandbox, spec, sink, Steering::Commands(&mut commands)).await)
}

fn checked(r: Result<RunResult, EngineError>) -> Result<RunResult, EngineError> {
    match r {
        Ok(r) => Ok(r),
        Err(e @ EngineError::NotStarted(_)) => Err(e),
        Err(e) => Ok(internal(&e)),
    }
}

/// How a run is steered from outside while it runs.
enum Steering<'a> {
    None,
    Kill(&'a mut tokio::sync::oneshot::Receiver<()>),
    Commands(&'a mut mpsc::Receiver<RunCommand>),
}

/// What the outside asked for.
enum Command {
    Kill,
    Signal(i32),
    Resize(TtySize),
}

impl Steering<'_> {
    /// The next command; pending forever once there can be none.
    async fn next(&mut self) -> Command {
        match self {
            Steering::None => std::future::pending().await,
            Steering::Kill(rx) => {
                if (&mut **rx).await.is_err() {
                    *self = Steering::None;
                    return std::future::pending().await;
                }
                Command::Kill
            }
            Steering::Commands(rx) => match rx.recv().await {
                Some(RunCommand::Signal(libc::SIGKILL)) => Command::Kill,
                Some(RunCommand::Signal(signal)) => Command::Signal(signal),
                Some(RunCommand::Resize(size)) => Command::Resize(size),
                None => {
                    *self = Steering::None;
                    std::future::pending().await
                }
            },
        }
    }
}

/// The result of a run that Kiln could not carry out.
pub fn internal(e: &EngineError) -> RunResult {
    RunResult {
        status: Status::InternalError,
        exit_code: None,
        signal: None,
        cpu_ms: 0,
        wall_ms: 0,
        memory_bytes: 0,
        truncated: false,
        message: Some(e.to_string()),
    }
}

async fn run_inner(
    sandbox: &Sandbox,
    spec: RunSpec,
    sink: &mut dyn OutputSink,
    steering: Steering<'_>,
) -> Result<RunResult, EngineError> {
    let limits = spec.limits.clone();
    if sandbox.accounting() == Accounting::Sandbox {
        // The sandbox's own group is the run's: its limits are the run's.
        sandbox.set_limits(&limits)?;
    }
    let started = Instant::now();
    let mut proc = sandbox
        .spawn(
            SpawnRequest {
                argv: spec.argv,
                env: spec.env,
                cwd: spec.cwd,
                rlimits: limits.rlimits(),
                tty: false,
                channel: false,
            },
            &limits,
            spec.tty,
            spec.channel,
        )
        .await?;
    sink.spawned(proc.pid());
    let result = supervise(
        sandbox, &mut proc, spec.stdin, &limits, started, sink, steering,
    )
    .await;
    proc.release_group();
    result
}

/// Runs a spawned process to its verdict, reading its figures from its own group if it has one,
/// else from the sandbox's.
async fn supervise(
    sandbox: &Sandbox,
    proc: &mut Process,
    input: StdinSource,
    limits: &Limits,
    started: Instant,
    sink: &mut dyn OutputSink,
    mut steering: Steering<'_>,
) -> Result<RunResult, EngineError> {
    let own = proc.group();
    let cgroup = own.as_deref().or(sandbox.cgroup());
    let cpu0 = cgroup.and_then(|c| c.cpu_usage().ok()).unwrap_or_default();
    let oom0 = cgroup.and_then(|c| c.oom_kills().ok()).unwrap_or(0);
    // What the sandbox already holds (the warden, files an earlier stage left in the page cache) is
    // not this run's.
    let mem0 = cgroup
        .and_then(|c| c.memory_current().ok().flatten())
        .unwrap_or(0);
    let mut exit_rx = proc.take_exit().ok_or(EngineError::WardenGone)?;

    let (out_tx, mut out_rx) = mpsc::channel::<(Stream, Vec<u8>)>(8);
    for (stream, pipe) in [
        (Stream::Stdout, proc.stdout.take()),
        (Stream::Stderr, proc.stderr.take()),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let tx = out_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 || tx.send((stream, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(out_tx);

    let (input_tx, mut input_rx) = mpsc::channel::<()>(1);
    let mut stdin_task = None;
    if let Some(mut stdin) = proc.stdin.take() {
        let source = input;
        stdin_task = Some(tokio::spawn(async move {
            match source {
                StdinSource::Closed => {}
                StdinSource::Bytes(bytes) => {
                    let _ = stdin.write_all(&bytes).await;
                }
                StdinSource::Live(mut rx) => {
                    while let Some(chunk) = rx.recv().await {
                        let _ = input_tx.try_send(());
                        if stdin.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }

    let wall_deadline = limits.wall_time.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(CLOCK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_activity = Instant::now();
    let mut written: u64 = 0;
    let mut truncated = false;
    let mut killed_for: Option<KillReason> = None;
    let mut output_open = true;
    let mut sink_wait: Option<SinkWait> = None;
    let exit = loop {
        tokio::select! {
            // The warden gone (killed, or crashed) still ends the run with its facts and output.
            status = &mut exit_rx => break status.ok(),
            () = async { sink_wait.as_mut().expect("guarded").await }, if sink_wait.is_some() => {
                sink_wait = None;
                last_activity = Instant::now();
            }
            chunk = out_rx.recv(), if output_open && sink_wait.is_none() => match chunk {
                Some((stream, data)) => {
                    last_activity = Instant::now();
                    if !deliver(sink, stream, &data, &mut written, limits.output_bytes, &mut truncated)
                        && killed_for.is_none()
                    {
                        killed_for = Some(KillReason::Output);
                        let _ = proc.kill().await;
                    }
                    sink_wait = sink.ready();
                }
                None => output_open = false,
            },
            Some(()) = input_rx.recv() => last_activity = Instant::now(),
            _ = sleep_until(wall_deadline), if killed_for.is_none() => {
                killed_for = Some(KillReason::Wall);
                let _ = proc.kill().await;
            }
            _ = tick.tick(), if killed_for.is_none() => {
                sink.flush();
                let over_cpu = match (limits.cpu_time, cgroup) {
                    (Some(max), Some(cg)) => cg.cpu_usage().map(|u| u.saturating_sub(cpu0) > max).unwrap_or(false),
                    _ => false,
                };
                let idle = sink_wait.is_none()
                    && limits.idle_time.is_some_and(|max| last_activity.elapsed() > max);
                if over_cpu || idle {
                    killed_for = Some(if over_cpu { KillReason::Cpu } else { KillReason::Idle });
                    let _ = proc.kill().await;
                }
            }
            command = steering.next(), if killed_for.is_none() => match command {
                Command::Kill => {
                    killed_for = Some(KillReason::Client);
                    let _ = proc.kill().await;
                }
                Command::Signal(signal) => {
                    if let Err(e) = proc.signal(signal, true).await {
                        tracing::debug!(signal, error = %e, "signalling a program");
                    }
                }
                Command::Resize(size) => {
                    if let Err(e) = proc.resize(size) {
                        tracing::debug!(error = %e, "resizing a terminal");
                    }
                }
            },
        }
    };
    let wall = started.elapsed();
    // Nobody reads stdin any more: its pipe must not wait for a client that never closes it.
    if let Some(task) = stdin_task {
        task.abort();
    }
    // The output normally ends with the program. If something it started still holds the pipes,
    // the run is over all the same: its process group is killed and what is left is drained.
    let mut drain_until = tokio::time::Instant::now() + EOF_GRACE;
    let mut group_killed = false;
    while output_open {
        match tokio::time::timeout_at(drain_until, out_rx.recv()).await {
            Ok(Some((stream, data))) => {
                if !deliver(
                    sink,
                    stream,
                    &data,
                    &mut written,
                    limits.output_bytes,
                    &mut truncated,
                ) && killed_for.is_none()
                {
                    killed_for = Some(KillReason::Output);
                }
            }
            Ok(None) => output_open = false,
            Err(_) if !group_killed => {
                group_killed = true;
                let _ = proc.kill().await;
                drain_until = tokio::time::Instant::now() + DRAIN_GRACE;
            }
            Err(_) => output_open = false,
        }
    }

    let stats = cgroup.and_then(|c| c.stats().ok()).unwrap_or_default();
    let cpu_cg = Duration::from_nanos(stats.cpu_ns).saturating_sub(cpu0);
    let cpu_ru = exit.map_or(Duration::ZERO, |e| {
        Duration::from_micros(e.user_us + e.system_us)
    });
    let outcome = Outcome {
        code: exit.and_then(|e| e.code),
        signal: exit.and_then(|e| e.signal),
        killed_for,
        oom_kills: stats.oom_kills.saturating_sub(oom0),
        warden_lost: exit.is_none(),
    };
    let status = decide(&outcome);
    Ok(RunResult {
        status,
        exit_code: outcome.code,
        signal: outcome.signal.map(signal_name),
        cpu_ms: cpu_cg.max(cpu_ru).as_millis() as u64,
        wall_ms: wall.as_millis() as u64,
        memory_bytes: stats
            .memory_peak_bytes
            .map_or(0, |peak| peak.saturating_sub(mem0))
            .max(exit.map_or(0, |e| e.max_rss_kib * 1024)),
        truncated,
        message: (status == Status::InternalError && outcome.warden_lost)
            .then(|| EngineError::WardenGone.to_string()),
    })
}

/// Passes a chunk on, cut at the output cap. Returns false once the cap is passed.
fn deliver(
    sink: &mut dyn OutputSink,
    stream: Stream,
    data: &[u8],
    written: &mut u64,
    cap: Option<u64>,
    truncated: &mut bool,
) -> bool {
    let room = cap.map_or(u64::MAX, |c| c.saturating_sub(*written));
    let keep = (data.len() as u64).min(room) as usize;
    if keep > 0 {
        sink.output(stream, &data[..keep]);
        *written += keep as u64;
    }
    if keep < data.len() {
        *truncated = true;
        return false;
    }
    true
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
