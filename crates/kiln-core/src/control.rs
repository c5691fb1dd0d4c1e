//! Job control: what reaches a job while it lives (its start, its stdin with their caps, a
//! kill), wherever it runs. [`JobControl`] is what the API side needs; [`LiveJobs`] is the
//! in-process registry of live jobs that implements it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

use crate::job::{now_ms, JobId, JobOutcome, JobSpec, JobState};

/// The stdin caps of a live job.
#[derive(Debug, Clone, Copy)]
pub struct StdinCaps {
    /// Frames accepted per job per second.
    pub frames_per_sec: u32,
    /// Bytes accepted but not yet handed to the program.
    pub pending_bytes: usize,
}

/// Why a stdin frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StdinRefusal {
    /// Too many frames this second; retry later.
    #[error("too many stdin frames")]
    Rate,
    /// Too many bytes not yet handed to the program; retry once it reads.
    #[error("stdin pending-byte cap exceeded")]
    Pending {
        /// The cap.
        cap: usize,
    },
    /// The frame alone is larger than the pending-byte cap: it can never be accepted.
    #[error("a stdin frame of {size} bytes is larger than the {cap}-byte cap")]
    TooLarge {
        /// The frame's size.
        size: usize,
        /// The cap.
        cap: usize,
    },
    /// Stdin was closed, or the job is over.
    #[error("stdin is closed")]
    Closed,
}

/// What the API side can do to a live job, wherever it runs.
pub trait JobControl: Send + Sync + std::fmt::Debug {
    /// Asks for the job's start. Whether it was waiting for one.
    fn start(&self, job: &JobId) -> bool;
    /// Asks for the job's end. Whether the job was live.
    fn kill(&self, job: &JobId) -> bool;
    /// Hands a chunk to the job's stdin, unless a cap says no.
    fn stdin(&self, job: &JobId, chunk: Vec<u8>, caps: StdinCaps) -> Result<(), StdinRefusal>;
    /// Closes the job's stdin (EOF once what was accepted has been delivered).
    fn close_stdin(&self, job: &JobId) -> bool;
}

#[derive(Debug)]
struct Status {
    state: JobState,
    updated_at_ms: i64,
    outcome: Option<JobOutcome>,
}

#[derive(Debug)]
struct Stdin {
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
    window_start: Instant,
    frames_in_window: u32,
}

/// A job while it lives in this process: its spec, its state, its controls.
#[derive(Debug)]
pub struct LiveJob {
    /// Its id.
    pub id: JobId,
    /// The name of the token that made it.
    pub owner: String,
    /// What it runs.
    pub spec: JobSpec,
    status: Mutex<Status>,
    awaiting_start: AtomicBool,
    kill: Notify,
    killed: AtomicBool,
    finished: Notify,
    stdin: Mutex<Stdin>,
    stdin_rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<u8>>>>,
    pending: Arc<AtomicUsize>,
}

impl LiveJob {
    /// A new queued job; `awaiting_start` unless it starts by itself.
    pub fn new(id: JobId, owner: String, spec: JobSpec) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            id,
            owner,
            awaiting_start: AtomicBool::new(!spec.auto_start),
            spec,
            status: Mutex::new(Status {
                state: JobState::Queued,
                updated_at_ms: now_ms(),
                outcome: None,
            }),
            kill: Notify::new(),
            killed: AtomicBool::new(false),
            finished: Notify::new(),
            stdin: Mutex::new(Stdin {
                tx: Some(tx),
                window_start: Instant::now(),
                frames_in_window: 0,
            }),
            stdin_rx: Mutex::new(Some(rx)),
            pending: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Its state, when it last changed, and its outcome once over.
    pub fn status(&self) -> (JobState, i64, Option<JobOutcome>) {
        let s = self.status.lock().expect("job status lock");
        (s.state, s.updated_at_ms, s.outcome.clone())
    }

    /// The state now.
    pub fn state(&self) -> JobState {
        self.status.lock().expect("job status lock").state
    }

    /// Moves to `state` (never out of a final one). Whether it changed.
    pub fn set_state(&self, state: JobState) -> bool {
        let mut s = self.status.lock().expect("job status lock");
        if s.state.is_final() || s.state == state {
            return false;
        }
        s.state = state;
        s.updated_at_ms = now_ms();
        true
    }

    /// Ends the job with `outcome`. Whether it ended now (false: it was over already).
    pub fn finish(&self, outcome: JobOutcome) -> bool {
        {
            let mut s = self.status.lock().expect("job status lock");
            if s.state.is_final() {
                return false;
            }
            s.state = outcome.state();
            s.updated_at_ms = now_ms();
            s.outcome = Some(outcome);
        }
        self.awaiting_start.store(false, Ordering::SeqCst);
        self.close_stdin();
        self.finished.notify_waiters();
        true
    }

    /// Takes the job out of "waiting for its start". Whether it was (so exactly one caller
    /// queues it, or expires it).
    pub fn take_awaiting(&self) -> bool {
        self.awaiting_start.swap(false, Ordering::SeqCst)
    }

    /// Whether it still waits for its start.
    pub fn awaiting_start(&self) -> bool {
        self.awaiting_start.load(Ordering::SeqCst)
    }

    /// Asks for its end.
    pub fn request_kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.kill.notify_waiters();
        self.close_stdin();
    }

    /// Whether a kill was asked for.
    pub fn kill_requested(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Waits for a kill request.
    pub async fn wait_kill(&self) {
        let notified = self.kill.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.kill_requested() {
            return;
        }
        notified.await;
    }

    /// Waits until the job is over.
    pub async fn wait_finished(&self) {
        let notified = self.finished.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.state().is_final() {
            return;
        }
        notified.await;
    }

    /// Accepts a stdin chunk unless a cap says no.
    pub fn push_stdin(&self, chunk: Vec<u8>, caps: StdinCaps) -> Result<(), StdinRefusal> {
        if self.state().is_final() {
            return Err(StdinRefusal::Closed);
        }
        let len = chunk.len();
        if len > caps.pending_bytes {
            return Err(StdinRefusal::TooLarge {
                size: len,
                cap: caps.pending_bytes,
            });
        }
        let mut stdin = self.stdin.lock().expect("stdin lock");
        let Some(tx) = stdin.tx.clone() else {
            return Err(StdinRefusal::Closed);
        };
        if stdin.window_start.elapsed() >= Duration::from_secs(1) {
            stdin.window_start = Instant::now();
            stdin.frames_in_window = 0;
        }
        if stdin.frames_in_window >= caps.frames_per_sec {
            return Err(StdinRefusal::Rate);
        }
        if self.pending.load(Ordering::SeqCst) + len > caps.pending_bytes {
            return Err(StdinRefusal::Pending {
                cap: caps.pending_bytes,
            });
        }
        stdin.frames_in_window += 1;
        self.pending.fetch_add(len, Ordering::SeqCst);
        if tx.send(chunk).is_err() {
            self.pending.fetch_sub(len, Ordering::SeqCst);
            return Err(StdinRefusal::Closed);
        }
        Ok(())
    }

    /// Stdin given up front: all of it, then EOF (no caps: it came in the request).
    pub fn preload_stdin(&self, bytes: Vec<u8>) {
        if let Some(tx) = self.stdin.lock().expect("stdin lock").tx.take() {
            self.pending.fetch_add(bytes.len(), Ordering::SeqCst);
            let _ = tx.send(bytes);
        }
    }

    /// EOF once what was accepted has been delivered.
    pub fn close_stdin(&self) {
        self.stdin.lock().expect("stdin lock").tx = None;
    }

    /// For the worker: a channel of stdin chunks for the runner; a chunk stops counting as
    /// pending once the runner has taken it.
    pub fn stdin_feed(&self) -> mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::channel(1);
        let source = self.stdin_rx.lock().expect("stdin lock").take();
        let pending = self.pending.clone();
        if let Some(mut source) = source {
            tokio::spawn(async move {
                while let Some(chunk) = source.recv().await {
                    let len = chunk.len();
                    let sent = tx.send(chunk).await;
                    pending.fetch_sub(len, Ordering::SeqCst);
                    if sent.is_err() {
                        break;
                    }
                }
            });
        }
        rx
    }
}

/// The jobs alive in this process, by id.
#[derive(Debug, Default)]
pub struct LiveJobs {
    jobs: Mutex<HashMap<JobId, Arc<LiveJob>>>,
}

impl LiveJobs {
    /// Registers a job.
    pub fn insert(&self, job: Arc<LiveJob>) {
        self.jobs
            .lock()
            .expect("live jobs lock")
            .insert(job.id.clone(), job);
    }

    /// A live job.
    pub fn get(&self, id: &JobId) -> Option<Arc<LiveJob>> {
        self.jobs.lock().expect("live jobs lock").get(id).cloned()
    }

    /// Forgets a job (it is over and its record is in the store).
    pub fn remove(&self, id: &JobId) {
        self.jobs.lock().expect("live jobs lock").remove(id);
    }

    /// Every live job.
    pub fn all(&self) -> Vec<Arc<LiveJob>> {
        self.jobs
            .lock()
            .expect("live jobs lock")
            .values()
            .cloned()
            .collect()
    }
}

impl JobControl for LiveJobs {
    fn start(&self, job: &JobId) -> bool {
        self.get(job).is_some_and(|j| j.awaiting_start())
    }

    fn kill(&self, job: &JobId) -> bool {
        match self.get(job) {
            Some(j) => {
                j.request_kill();
                true
            }
            None => false,
        }
    }

    fn stdin(&self, job: &JobId, chunk: Vec<u8>, caps: StdinCaps) -> Result<(), StdinRefusal> {
        self.get(job)
            .ok_or(StdinRefusal::Closed)?
            .push_stdin(chunk, caps)
    }

    fn close_stdin(&self, job: &JobId) -> bool {
        match self.get(job) {
            Some(j) => {
                j.close_stdin();
                true
            }
            None => false,
        }
    }
}
