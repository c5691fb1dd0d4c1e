//! The job manager: admits jobs (429 past the queue depth), runs them on `capacity` workers, each
//! of which claims a job, waits for its start within the warm-up window, runs it through the
//! engine while turning its output into channel events, and records every transition.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_engine::{Engine, OutputSink, Phase, SandboxShape, Status, StdinSource, Stream};
use kiln_workload::{run_program, Program, ProgramResult};
use serde_json::json;
use tokio::sync::mpsc;

use crate::bus::Bus;
use crate::config::ServerConfig;
use crate::job::{now_ms, Job, JobSpec, Recent, Utf8Chunker};
use crate::store::{JobRecord, Store};
use crate::wire::{
    CompileResultWire, JobState, ResultEvent, RunResultWire, StageUsage, UsageEvent,
};

/// The largest chunk of an output event.
pub const CHUNK_BYTES: usize = 8 * 1024;
/// How long a finished job stays in memory (the store keeps it until its TTL).
const KEEP_IN_MEMORY: Duration = Duration::from_secs(60);

/// Why a job was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The queue is full.
    Full {
        /// Jobs waiting.
        depth: usize,
        /// The cap.
        cap: usize,
    },
    /// The server is shutting down.
    ShuttingDown,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Jobs waiting for a worker.
    pub queued: AtomicUsize,
    /// Jobs a worker holds.
    pub active: AtomicUsize,
}

/// The job manager.
#[derive(Debug)]
pub struct JobManager {
    cfg: Arc<ServerConfig>,
    engine: Engine,
    bus: Bus,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    recent: Mutex<Recent>,
    queue: Mutex<Option<mpsc::Sender<Arc<Job>>>>,
    writes: std::sync::mpsc::Sender<JobRecord>,
    store: Arc<Store>,
    /// Metrics.
    pub counters: Counters,
    /// Counters and the latency histogram for `/metrics`.
    pub metrics: crate::metrics::Metrics,
}

impl JobManager {
    /// Starts the workers and the store writer. Needs a tokio runtime.
    pub fn start(cfg: Arc<ServerConfig>, engine: Engine, bus: Bus, store: Arc<Store>) -> Arc<Self> {
        let (queue_tx, queue_rx) = mpsc::channel::<Arc<Job>>(cfg.queue_depth.max(1));
        let (writes, write_rx) = std::sync::mpsc::channel::<JobRecord>();
        // One writer thread keeps the records in the order the transitions happened.
        let writer_store = store.clone();
        std::thread::Builder::new()
            .name("kiln-store".into())
            .spawn(move || {
                for record in write_rx {
                    if let Err(e) = writer_store.put(&record) {
                        tracing::error!(error = %e, job = %record.id, "could not record a job");
                    }
                }
            })
            .expect("spawn the store writer");
        let manager = Arc::new(Self {
            cfg: cfg.clone(),
            engine,
            bus,
            jobs: Mutex::new(HashMap::new()),
            recent: Mutex::new(Recent::default()),
            queue: Mutex::new(Some(queue_tx)),
            writes,
            store,
            counters: Counters::default(),
            metrics: crate::metrics::Metrics::default(),
        });
        let queue_rx = Arc::new(tokio::sync::Mutex::new(queue_rx));
        for _ in 0..cfg.capacity.max(1) {
            let m = manager.clone();
            let rx = queue_rx.clone();
            tokio::spawn(async move {
                loop {
                    let job = { rx.lock().await.recv().await };
                    let Some(job) = job else { return };
                    m.counters.queued.fetch_sub(1, Ordering::SeqCst);
                    m.counters.active.fetch_add(1, Ordering::SeqCst);
                    m.work(&job).await;
                    m.counters.active.fetch_sub(1, Ordering::SeqCst);
                    m.forget_later(&job.id);
                }
            });
        }
        manager
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Admits a job: records it and queues it.
    pub fn submit(&self, owner: &str, spec: JobSpec) -> Result<Arc<Job>, Admission> {
        let sender = self
            .queue
            .lock()
            .expect("queue lock")
            .clone()
            .ok_or(Admission::ShuttingDown)?;
        let id = uuid::Uuid::new_v4().to_string();
        let job = Job::new(id.clone(), owner.to_string(), spec, self.bus.clone());
        self.counters.queued.fetch_add(1, Ordering::SeqCst);
        if sender.try_send(job.clone()).is_err() {
            self.metrics.rejected();
            let depth = self.counters.queued.fetch_sub(1, Ordering::SeqCst) - 1;
            return Err(Admission::Full {
                depth,
                cap: self.cfg.queue_depth,
            });
        }
        self.jobs.lock().expect("jobs lock").insert(id, job.clone());
        self.metrics.submitted();
        self.record(&job);
        Ok(job)
    }

    /// A live job the owner may see.
    pub fn get(&self, id: &str, owner: &str) -> Option<Arc<Job>> {
        self.jobs
            .lock()
            .expect("jobs lock")
            .get(id)
            .filter(|j| j.owner == owner)
            .cloned()
    }

    /// A job's record from the store (for jobs no longer in memory).
    pub fn stored(&self, id: &str, owner: &str) -> Option<JobRecord> {
        match self.store.get(id, now_ms()) {
            Ok(r) => r.filter(|r| r.owner == owner),
            Err(e) => {
                tracing::error!(error = %e, "reading the job store");
                None
            }
        }
    }

    /// Stops admitting jobs and waits (up to the drain time) for the ones admitted to finish.
    pub async fn drain(&self) {
        self.queue.lock().expect("queue lock").take();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.cfg.drain_secs);
        loop {
            let busy = self.counters.active.load(Ordering::SeqCst)
                + self.counters.queued.load(Ordering::SeqCst);
            if busy == 0 || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn record(&self, job: &Job) {
        let status = job.status();
        let expires = status
            .state
            .is_final()
            .then(|| now_ms() + self.cfg.result_ttl().as_millis() as i64);
        let output = job.output().and_then(|o| serde_json::to_string(&o).ok());
        let _ = self.writes.send(JobRecord {
            id: job.id.clone(),
            owner: job.owner.clone(),
            language: status.language,
            version: status.version,
            state: status.state,
            updated_at_ms: status.updated_at_ms,
            expires_at_ms: expires,
            output,
            error: job.error(),
        });
    }

    fn set_state(&self, job: &Job, state: JobState) {
        if job.set_state(state) {
            self.record(job);
        }
    }

    fn forget_later(self: &Arc<Self>, id: &str) {
        let mut recent = self.recent.lock().expect("recent lock");
        recent.push(id.to_string());
        let expired = recent.expired(KEEP_IN_MEMORY);
        drop(recent);
        let mut jobs = self.jobs.lock().expect("jobs lock");
        for id in expired {
            jobs.remove(&id);
        }
    }

    /// Ends a job that never ran (killed or not started in time) with its one result event.
    fn end_unrun(&self, job: &Job, state: JobState, message: &str) {
        if state == JobState::Error {
            job.set_error(message.to_string());
        }
        let usage = UsageEvent {
            status: if state == JobState::Killed {
                "killed"
            } else {
                "internal_error"
            }
            .into(),
            cpu_ms: 0,
            wall_ms: 0,
            memory_bytes: 0,
            compile: None,
            message: Some(message.to_string()),
        };
        self.metrics.finished(state.as_str(), &usage.status, 0.0);
        let result = ResultEvent {
            exit_code: None,
            signal: None,
            timed_out: false,
            idle_timed_out: false,
            truncated: false,
            duration_ms: 0,
        };
        job.publish_usage(usage.clone());
        job.publish("result", json!(result));
        if job.spec.collect_output {
            job.set_output(RunResultWire {
                result,
                stdout: String::new(),
                stderr: String::new(),
                compile: None,
                artifacts: Vec::new(),
                artifacts_truncated: false,
            });
        }
        self.set_state(job, state);
    }

    async fn work(&self, job: &Arc<Job>) {
        job.publish("stage", json!({"phase": "queued"}));
        if job.kill_requested() {
            return self.end_unrun(job, JobState::Killed, "killed before it started");
        }
        tokio::select! {
            _ = job.wait_start() => {}
            _ = job.wait_kill() => {
                return self.end_unrun(job, JobState::Killed, "killed before it started");
            }
            _ = tokio::time::sleep(self.cfg.warmup()) => {
                let msg = format!("no start within the {} ms warm-up window", self.cfg.warmup_ms);
                return self.end_unrun(job, JobState::Error, &msg);
            }
        }
        self.set_state(job, JobState::Starting);
        let stdin = StdinSource::Live(job.stdin_feed());
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel();
        let killer = {
            let job = job.clone();
            tokio::spawn(async move {
                job.wait_kill().await;
                let _ = kill_tx.send(());
            })
        };
        let mut sink = JobSink::new(self, job);
        let program = Program {
            language: job.spec.language.clone(),
            files: job.spec.files.clone(),
            args: job.spec.args.clone(),
            stdin,
            limits: job.spec.limits.clone(),
            shape: SandboxShape::default(),
        };
        let started = std::time::Instant::now();
        let outcome = run_program(&self.engine, program, &mut sink, Some(kill_rx)).await;
        killer.abort();
        job.close_stdin();
        sink.flush();
        match outcome {
            Ok(result) => self.finish(job, sink, &result, started),
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "job failed in the engine");
                self.end_unrun(job, JobState::Error, &e.to_string());
            }
        }
    }

    fn finish(
        &self,
        job: &Job,
        sink: JobSink<'_>,
        result: &ProgramResult,
        started: std::time::Instant,
    ) {
        let run = result.run.as_ref();
        let compile = result.compile.as_ref();
        let status = result.status;
        let event = ResultEvent {
            exit_code: run.and_then(|r| r.exit_code).or_else(|| {
                // A failed compile: the compiler's code is the job's.
                run.is_none()
                    .then(|| compile.and_then(|c| c.result.exit_code))
                    .flatten()
            }),
            signal: run.and_then(|r| r.signal.clone()),
            timed_out: matches!(status, Status::TimeLimit | Status::WallTimeLimit),
            idle_timed_out: status == Status::IdleTimeLimit,
            truncated: run.is_some_and(|r| r.truncated),
            duration_ms: run.map_or(0, |r| r.wall_ms),
        };
        let usage = UsageEvent {
            status: status.as_str().into(),
            cpu_ms: run.map_or(0, |r| r.cpu_ms),
            wall_ms: run.map_or(0, |r| r.wall_ms),
            memory_bytes: run.map_or(0, |r| r.memory_bytes),
            compile: compile.map(|c| StageUsage {
                status: c.result.status.as_str().into(),
                cpu_ms: c.result.cpu_ms,
                wall_ms: c.result.wall_ms,
                memory_bytes: c.result.memory_bytes,
            }),
            message: run.and_then(|r| r.message.clone()),
        };
        if job.spec.collect_output {
            job.set_output(RunResultWire {
                result: event.clone(),
                stdout: String::from_utf8_lossy(&sink.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&sink.stderr).into_owned(),
                compile: compile.map(|c| CompileResultWire {
                    exit_code: c.result.exit_code,
                    signal: c.result.signal.clone(),
                    stdout: c.stdout.clone(),
                    stderr: c.stderr.clone(),
                    output: c.output.clone(),
                    duration_ms: c.result.wall_ms,
                }),
                artifacts: Vec::new(),
                artifacts_truncated: false,
            });
        }
        job.publish_usage(usage.clone());
        job.publish("result", json!(event));
        self.metrics.finished(
            match status {
                Status::Killed => "killed",
                Status::InternalError => "error",
                _ => "done",
            },
            status.as_str(),
            started.elapsed().as_secs_f64(),
        );
        let state = match status {
            Status::Killed => JobState::Killed,
            Status::InternalError => {
                job.set_error(
                    usage
                        .message
                        .clone()
                        .unwrap_or_else(|| "internal error".into()),
                );
                JobState::Error
            }
            _ => JobState::Done,
        };
        self.set_state(job, state);
    }
}

/// Turns a job's output into channel events with per-stream sequence numbers, and collects it.
struct JobSink<'a> {
    manager: &'a JobManager,
    job: &'a Job,
    chunkers: [Utf8Chunker; 3],
    seqs: [u64; 3],
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

const NAMES: [&str; 3] = ["stdout", "stderr", "compile_output"];

impl<'a> JobSink<'a> {
    fn new(manager: &'a JobManager, job: &'a Job) -> Self {
        Self {
            manager,
            job,
            chunkers: [
                Utf8Chunker::new(CHUNK_BYTES),
                Utf8Chunker::new(CHUNK_BYTES),
                Utf8Chunker::new(CHUNK_BYTES),
            ],
            seqs: [0; 3],
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn emit(&mut self, i: usize, pieces: Vec<String>) {
        for chunk in pieces {
            let seq = self.seqs[i];
            self.seqs[i] += 1;
            self.job
                .publish(NAMES[i], json!({"chunk": chunk, "seq": seq}));
        }
    }

    fn flush(&mut self) {
        for i in 0..3 {
            let rest = self.chunkers[i].finish();
            self.emit(i, rest);
        }
    }
}

impl OutputSink for JobSink<'_> {
    fn output(&mut self, stream: Stream, chunk: &[u8]) {
        let i = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
            Stream::Compile => 2,
        };
        if self.job.spec.collect_output {
            match stream {
                Stream::Stdout => self.stdout.extend_from_slice(chunk),
                Stream::Stderr => self.stderr.extend_from_slice(chunk),
                Stream::Compile => {}
            }
        }
        let pieces = self.chunkers[i].push(chunk);
        self.emit(i, pieces);
    }

    fn stage(&mut self, stage: Phase) {
        if stage == Phase::Running {
            // Whatever the compiler left unfinished belongs to it.
            let rest = self.chunkers[2].finish();
            self.emit(2, rest);
        }
        self.manager.set_state(self.job, JobState::Running);
        self.job.publish("stage", json!({"phase": stage}));
    }
}
