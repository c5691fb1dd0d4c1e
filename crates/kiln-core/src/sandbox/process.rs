//! Background processes of a sandbox: started by one call, they outlive it and every stream that
//! watched them. Each keeps its output in a bounded ring ([`LogRing`]) and its end, so a client
//! that went away re-attaches by id, gets the whole log (or what the ring kept, and how much it
//! let go) and the exit code. Each runs in a group of its own, so a kill takes the whole tree,
//! daemons included; a process may have a terminal (a PTY), typed into and resized while it runs.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_engine::runner::{default_env, run_steered};
use kiln_engine::{
    EngineError, Limits, OutputSink, RunCommand, RunResult, RunSpec, StdinSource, Stream, TtySize,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::log_ring::{LogChunk, LogRead, LogRing};
use super::service::{environment, Live};
use super::{ExecRequest, SandboxError, SandboxId, SandboxService};
use crate::job::now_ms;

/// Learns whether a process started (or why it could not).
type Started = oneshot::Receiver<Result<(), String>>;

/// Chunks of stdin waiting for a process to take them.
const STDIN_QUEUE: usize = 16;

/// A process to start in the background.
#[derive(Debug, Clone, Default)]
pub struct ProcessRequest {
    /// The command; its `stdin` is written first and stdin then stays open for more. Its
    /// timeout, if any, ends it (by default it lives as long as its sandbox).
    pub exec: ExecRequest,
    /// Run on a terminal of this size.
    pub tty: Option<TtySize>,
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    /// Running.
    Running,
    /// Ended (its figures are final).
    Exited,
}

/// A process as its owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    /// Its id in the sandbox, never reused.
    pub process_id: u64,
    /// Its pid inside the sandbox, once started.
    pub pid: Option<i32>,
    /// What runs.
    pub argv: Vec<String>,
    /// Where.
    pub cwd: String,
    /// Whether it has a terminal.
    pub tty: bool,
    /// Running or exited.
    pub state: ProcessState,
    /// Unix ms.
    pub started_at_ms: i64,
    /// Unix ms, once ended.
    pub ended_at_ms: Option<i64>,
    /// How it ended (its verdict, exit code, signal, CPU, wall time and memory).
    pub result: Option<RunResult>,
    /// Bytes of output written so far.
    pub output_bytes: u64,
    /// Of those, bytes the ring let go (the oldest).
    pub output_dropped_bytes: u64,
}

/// What a follower of a process gets, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessEvent {
    /// Output.
    Output(LogChunk),
    /// Bytes the ring let go before this follower read them.
    Skipped(u64),
    /// The end (always the last event).
    Exited(ProcessInfo),
}

#[derive(Debug)]
struct ProcState {
    pid: Option<i32>,
    log: LogRing,
    stdin: Option<mpsc::Sender<Vec<u8>>>,
    ended: Option<(i64, RunResult)>,
}

/// One background process.
#[derive(Debug)]
pub(super) struct Managed {
    id: u64,
    argv: Vec<String>,
    cwd: String,
    tty: bool,
    started_at_ms: i64,
    state: Mutex<ProcState>,
    /// Bumped on every output chunk and at the end.
    changed: watch::Sender<u64>,
    commands: mpsc::Sender<RunCommand>,
}

impl Managed {
    fn info(&self) -> ProcessInfo {
        let st = self.state.lock().expect("process lock");
        ProcessInfo {
            process_id: self.id,
            pid: st.pid,
            argv: self.argv.clone(),
            cwd: self.cwd.clone(),
            tty: self.tty,
            state: if st.ended.is_some() {
                ProcessState::Exited
            } else {
                ProcessState::Running
            },
            started_at_ms: self.started_at_ms,
            ended_at_ms: st.ended.as_ref().map(|(at, _)| *at),
            result: st.ended.as_ref().map(|(_, r)| r.clone()),
            output_bytes: st.log.end(),
            output_dropped_bytes: st.log.start(),
        }
    }

    fn ended(&self) -> bool {
        self.state.lock().expect("process lock").ended.is_some()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A sandbox's processes: the running ones and the last ended ones, up to a cap.
#[derive(Debug, Default)]
pub(super) struct ProcessTable {
    next_id: u64,
    procs: BTreeMap<u64, Arc<Managed>>,
}

impl ProcessTable {
    /// Room for one more, letting go of the oldest ended process if need be.
    fn make_room(&mut self, cap: usize) -> Result<(), SandboxError> {
        if self.procs.len() < cap {
            return Ok(());
        }
        let oldest_ended = self
            .procs
            .iter()
            .find(|(_, p)| p.ended())
            .map(|(id, _)| *id);
        match oldest_ended {
            Some(id) => {
                self.procs.remove(&id);
                Ok(())
            }
            None => Err(SandboxError::TooManyProcesses { cap }),
        }
    }
}

/// The runner's sink for a background process: its ring.
struct RingSink(Arc<Managed>, Option<oneshot::Sender<Result<(), String>>>);

impl OutputSink for RingSink {
    fn output(&mut self, stream: Stream, chunk: &[u8]) {
        self.0
            .state
            .lock()
            .expect("process lock")
            .log
            .push(stream, chunk);
        self.0.bump();
    }

    fn spawned(&mut self, pid: i32) {
        self.0.state.lock().expect("process lock").pid = Some(pid);
        if let Some(tx) = self.1.take() {
            let _ = tx.send(Ok(()));
        }
    }
}

/// Follows one process: its log from an offset, then live, then its end.
#[derive(Debug)]
pub struct ProcessFollower {
    proc: Arc<Managed>,
    changes: watch::Receiver<u64>,
    offset: u64,
    queue: std::collections::VecDeque<ProcessEvent>,
    done: bool,
}

impl ProcessFollower {
    /// The next event; `None` after [`ProcessEvent::Exited`].
    pub async fn next(&mut self) -> Option<ProcessEvent> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            // Marked seen before reading, so nothing written after the read is missed.
            self.changes.borrow_and_update();
            let ended = {
                let st = self.proc.state.lock().expect("process lock");
                let read = st.log.read_from(self.offset);
                if read.skipped > 0 {
                    self.queue.push_back(ProcessEvent::Skipped(read.skipped));
                }
                self.queue
                    .extend(read.chunks.into_iter().map(ProcessEvent::Output));
                self.offset = read.next;
                st.ended.is_some()
            };
            if ended {
                self.queue.push_back(ProcessEvent::Exited(self.proc.info()));
                self.done = true;
                continue;
            }
            if self.queue.is_empty() && self.changes.changed().await.is_err() {
                // The process is gone from memory without an end: nothing more will come.
                self.done = true;
            }
        }
    }

    /// The process's id.
    pub fn process_id(&self) -> u64 {
        self.proc.id
    }
}

/// Kills its process when dropped before the process ended: a command whose only watcher went
/// away (a streamed exec) does not run on unwatched.
#[derive(Debug)]
pub struct KillOnDrop(Arc<Managed>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.0.ended() {
            let _ = self.0.commands.try_send(RunCommand::Signal(libc::SIGKILL));
        }
    }
}

impl SandboxService {
    fn managed(
        &self,
        owner: &str,
        id: &SandboxId,
        process: u64,
    ) -> Result<Arc<Managed>, SandboxError> {
        let live = self.live(owner, id)?;
        live.touch();
        let table = live.processes.lock().expect("process table lock");
        table
            .procs
            .get(&process)
            .cloned()
            .ok_or(SandboxError::ProcessNotFound(process))
    }

    /// Starts a background process in one of `owner`'s sandboxes.
    pub async fn spawn(
        &self,
        owner: &str,
        id: &SandboxId,
        request: ProcessRequest,
    ) -> Result<ProcessInfo, SandboxError> {
        let timeout = request
            .exec
            .check_background(&self.cfg)
            .map_err(SandboxError::Invalid)?;
        let live = self.live(owner, id)?;
        let (proc, started) = self.start_process(&live, request, timeout, true)?;
        match started.await {
            Ok(Ok(())) => Ok(proc.info()),
            Ok(Err(message)) => Err(SandboxError::NotStarted(message)),
            Err(_) => Err(SandboxError::NotFound),
        }
    }

    /// Runs a command and follows it: the follower gets its output as it comes and its end;
    /// dropping the guard before the end kills it.
    pub async fn exec_stream(
        &self,
        owner: &str,
        id: &SandboxId,
        request: ExecRequest,
    ) -> Result<(ProcessFollower, KillOnDrop), SandboxError> {
        let timeout = request.check(&self.cfg).map_err(SandboxError::Invalid)?;
        let live = self.live(owner, id)?;
        let request = ProcessRequest {
            exec: request,
            tty: None,
        };
        let (proc, started) = self.start_process(&live, request, Some(timeout), false)?;
        match started.await {
            Ok(Ok(())) => Ok((follower(&proc, 0), KillOnDrop(proc))),
            Ok(Err(message)) => Err(SandboxError::NotStarted(message)),
            Err(_) => Err(SandboxError::NotFound),
        }
    }

    /// Registers a process and starts its task; the receiver learns whether it started.
    fn start_process(
        &self,
        live: &Arc<Live>,
        request: ProcessRequest,
        timeout: Option<Duration>,
        keep_stdin: bool,
    ) -> Result<(Arc<Managed>, Started), SandboxError> {
        let exec = request.exec;
        let cwd = exec.cwd.clone().unwrap_or_else(|| live.cwd.clone());
        let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(STDIN_QUEUE);
        if !exec.stdin.is_empty() {
            let _ = stdin_tx.try_send(exec.stdin);
        }
        let (commands_tx, commands_rx) = mpsc::channel(8);
        let proc = {
            let mut table = live.processes.lock().expect("process table lock");
            table.make_room(self.cfg.max_processes)?;
            table.next_id += 1;
            let proc = Arc::new(Managed {
                id: table.next_id,
                argv: exec.argv.clone(),
                cwd: cwd.clone(),
                tty: request.tty.is_some(),
                started_at_ms: now_ms(),
                state: Mutex::new(ProcState {
                    pid: None,
                    log: LogRing::new(self.cfg.process_log_bytes),
                    stdin: keep_stdin.then_some(stdin_tx),
                    ended: None,
                }),
                changed: watch::channel(0).0,
                commands: commands_tx,
            });
            table.procs.insert(proc.id, proc.clone());
            proc
        };
        let spec = RunSpec {
            argv: exec.argv,
            env: environment(default_env(), &[&live.env, &exec.env]),
            cwd,
            limits: Limits {
                wall_time: timeout,
                ..self.total_limits(&live.limits)
            },
            stdin: StdinSource::Live(stdin_rx),
            tty: request.tty,
            channel: None,
        };
        let (started_tx, started_rx) = oneshot::channel();
        live.running.fetch_add(1, Ordering::SeqCst);
        live.touch();
        let task_live = live.clone();
        let task_proc = proc.clone();
        tokio::spawn(async move {
            let mut sink = RingSink(task_proc.clone(), Some(started_tx));
            let outcome = {
                let guard = task_live.sandbox.read().await;
                match guard.as_ref() {
                    Some(sandbox) => run_steered(sandbox, spec, &mut sink, commands_rx).await,
                    None => Err(EngineError::WardenGone),
                }
            };
            let result = match outcome {
                Ok(result) => Some(result),
                Err(EngineError::NotStarted(message)) => {
                    if let Some(tx) = sink.1.take() {
                        let _ = tx.send(Err(message));
                    }
                    None
                }
                Err(e) => Some(kiln_engine::runner::internal(&e)),
            };
            match result {
                Some(result) => {
                    let mut st = task_proc.state.lock().expect("process lock");
                    st.stdin = None;
                    st.ended = Some((now_ms(), result));
                }
                // It never ran: it is no process of the sandbox's.
                None => {
                    task_live
                        .processes
                        .lock()
                        .expect("process table lock")
                        .procs
                        .remove(&task_proc.id);
                }
            }
            task_proc.bump();
            task_live.running.fetch_sub(1, Ordering::SeqCst);
            task_live.touch();
        });
        Ok((proc, started_rx))
    }

    /// The processes of one of `owner`'s sandboxes, oldest first.
    pub fn processes(&self, owner: &str, id: &SandboxId) -> Result<Vec<ProcessInfo>, SandboxError> {
        let live = self.live(owner, id)?;
        live.touch();
        let table = live.processes.lock().expect("process table lock");
        Ok(table.procs.values().map(|p| p.info()).collect())
    }

    /// One process.
    pub fn process(
        &self,
        owner: &str,
        id: &SandboxId,
        process: u64,
    ) -> Result<ProcessInfo, SandboxError> {
        Ok(self.managed(owner, id, process)?.info())
    }

    /// Writes to a process's stdin (or types into its terminal); waits while its queue is full.
    pub async fn write_stdin(
        &self,
        owner: &str,
        id: &SandboxId,
        process: u64,
        data: Vec<u8>,
    ) -> Result<(), SandboxError> {
        let proc = self.managed(owner, id, process)?;
        let tx = proc.state.lock().expect("process lock").stdin.clone();
        let tx = tx.ok_or(SandboxError::StdinClosed(process))?;
        tx.send(data)
            .await
            .map_err(|_| SandboxError::StdinClosed(process))
    }

    /// Closes a process's stdin (it reads the end of file once it has read what was written).
    pub fn close_stdin(
        &self,
        owner: &str,
        id: &SandboxId,
        process: u64,
    ) -> Result<(), SandboxError> {
        let proc = self.managed(owner, id, process)?;
        proc.state.lock().expect("process lock").stdin = None;
        Ok(())
    }

    /// Sends `signal` to a process's group; `SIGKILL` kills it and everything it started,
    /// daemons included. Signalling an ended process does nothing.
    pub async fn signal(
        &self,
        owner: &str,
        id: &SandboxId,
        process: u64,
        signal: i32,
    ) -> Result<ProcessInfo, SandboxError> {
        let proc = self.managed(owner, id, process)?;
        if !proc.ended() {
            let _ = proc.commands.send(RunCommand::Signal(signal)).await;
        }
        Ok(proc.info())
    }

    /// Kills a process and its whole tree, and waits for its end.
    pub async fn kill(
        &self,
        owner: &str,
        id: &SandboxId,
        process: u64,
    ) -> Result<ProcessInfo, SandboxError> {
        self.signal(owner, id, process, libc::SIGKILL).await?;
        self.wait(owner, id, process, Duration::from_secs(10)).await
    }

    /// Resizes a process's terminal.
    pub async fn resize(
        &self,
        owner: &str,
        id: &SandboxId,
        process: u64,
        size: TtySize,
    ) -> Result<(), SandboxError> {
        let proc = self.managed(owner, id, process)?;
        if !proc.ended() {
            let _ = proc.commands.send(RunCommand::Resize(size)).await;
        }
        Ok(())
    }

    /// Waits up to `timeout` for a process to end; answers how it is then.
    pub async fn wait(
        &self,
        owner: &str,
        id: &SandboxId,
        process: u64,
        timeout: Duration,
    ) -> Result<ProcessInfo, SandboxError> {
        let proc = self.managed(owner, id, process)?;
        let mut changes = proc.changed.subscribe();
        let _ = tokio::time::timeout(timeout, async {
            while !proc.ended() {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        Ok(proc.info())
    }

    /// A process's log from `offset` as far as it goes now, and the process.
    pub fn logs(
        &self,
        owner: &str,
        id: &SandboxId,
        process: u64,
        offset: u64,
    ) -> Result<(LogRead, ProcessInfo), SandboxError> {
        let proc = self.managed(owner, id, process)?;
        let read = proc
            .state
            .lock()
            .expect("process lock")
            .log
            .read_from(offset);
        Ok((read, proc.info()))
    }

    /// Follows a process's log from `offset` (0: from the start, as far as the ring kept it),
    /// then live, then its end.
    pub fn follow(
        &self,
        owner: &str,
        id: &SandboxId,
        process: u64,
        offset: u64,
    ) -> Result<ProcessFollower, SandboxError> {
        let proc = self.managed(owner, id, process)?;
        Ok(follower(&proc, offset))
    }
}

fn follower(proc: &Arc<Managed>, offset: u64) -> ProcessFollower {
    ProcessFollower {
        proc: proc.clone(),
        changes: proc.changed.subscribe(),
        offset,
        queue: std::collections::VecDeque::new(),
        done: false,
    }
}
