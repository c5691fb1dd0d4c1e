//! The job service: admission with its quotas, the start handshake (a job waiting for its start
//! holds no run slot and expires after the warm-up window), fair scheduling onto `capacity`
//! workers, each run's events into the log, every transition into the store, and the outcome.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, BoxStream, StreamExt};
use kiln_engine::{SandboxShape, Status, StdinSource};
use kiln_lang::Catalog;
use kiln_workload::{Program, ProgramResult};

use crate::admission::{admit, AdmissionError, AdmissionRules, JobRequest};
use crate::control::{LiveJob, LiveJobs, StdinCaps, StdinRefusal};
use crate::event::{EventRecord, JobEvent, Stage};
use crate::executor::Executor;
use crate::job::artifacts_prefix;
use crate::job::{
    expiry, now_ms, CompileOutput, JobId, JobOutcome, JobRecord, JobState, StageFacts, Verdict,
};
use crate::log::EventLog;
use crate::metrics::{Gauges, Metrics};
use crate::objects::ObjectStore;
use crate::queue::JobQueue;
use crate::sink::{JobSink, CHUNK_BYTES, EVENT_OVERHEAD};
use crate::store::JobStore;

mod artifacts;

/// Events a reader takes from the log at once (up to 256 KiB of output).
const READ_BATCH: usize = 32;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Runs at once.
    pub capacity: usize,
    /// Jobs waiting (for their start or a run slot), all owners together.
    pub queue_depth: usize,
    /// Jobs one owner may have waiting.
    pub owner_queue_depth: usize,
    /// Jobs one owner may have waiting for their start.
    pub owner_awaiting_start: usize,
    /// How long a job waits for its start before it expires.
    pub warmup: Duration,
    /// How long a finished job's record and log are kept.
    pub result_ttl: Duration,
    /// How long a finished job stays in memory (its events readable without the disk).
    pub keep_in_memory: Duration,
    /// The stdin caps.
    pub stdin: StdinCaps,
    /// Bytes of job logs kept on disk, all owners together (what admission reserves against).
    pub storage_bytes: u64,
    /// Bytes of job logs one owner may keep.
    pub owner_storage_bytes: u64,
    /// What requests are checked against.
    pub admission: AdmissionRules,
    /// How long a graceful shutdown waits for admitted jobs.
    pub drain: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            capacity: 8,
            queue_depth: 256,
            owner_queue_depth: 64,
            owner_awaiting_start: 32,
            warmup: Duration::from_secs(30),
            result_ttl: Duration::from_secs(3600),
            keep_in_memory: Duration::from_secs(60),
            stdin: StdinCaps {
                frames_per_sec: 30,
                pending_bytes: 64 << 10,
            },
            storage_bytes: 4 << 30,
            owner_storage_bytes: 1 << 30,
            admission: AdmissionRules::default(),
            drain: Duration::from_secs(30),
        }
    }
}

/// Why a control request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No such job for this owner.
    #[error("job not found")]
    NotFound,
    /// The job is over already.
    #[error("the job is over")]
    Finished,
    /// A stdin frame was refused.
    #[error(transparent)]
    Stdin(#[from] StdinRefusal),
}

/// A job's events, in order.
pub type EventStream = BoxStream<'static, Arc<EventRecord>>;

#[derive(Debug, Default)]
struct Quotas {
    /// Jobs waiting (for their start or a slot), per owner and in all.
    waiting: HashMap<String, usize>,
    waiting_total: usize,
    awaiting: HashMap<String, usize>,
    /// Log bytes kept or reserved, per owner and in all.
    stored: HashMap<String, u64>,
    stored_total: u64,
}

impl Quotas {
    fn add(map: &mut HashMap<String, usize>, owner: &str, delta: isize) {
        let n = map.entry(owner.to_string()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            map.remove(owner);
        }
    }

    fn store(&mut self, owner: &str, delta: i64) {
        let n = self.stored.entry(owner.to_string()).or_default();
        *n = n.saturating_add_signed(delta);
        self.stored_total = self.stored_total.saturating_add_signed(delta);
        if *n == 0 {
            self.stored.remove(owner);
        }
    }
}

/// Counts for the gauges.
#[derive(Debug, Default)]
struct Counters {
    awaiting: AtomicUsize,
    active: AtomicUsize,
}

/// The job service.
#[derive(Debug)]
pub struct JobService {
    cfg: ServiceConfig,
    executor: Arc<dyn Executor>,
    catalog: Arc<Catalog>,
    queue: Arc<dyn JobQueue>,
    log: Arc<dyn EventLog>,
    store: Arc<dyn JobStore>,
    objects: Arc<dyn ObjectStore>,
    live: Arc<LiveJobs>,
    quotas: Mutex<Quotas>,
    /// Bytes each live job reserved at admission.
    reserved: Mutex<HashMap<JobId, u64>>,
    counters: Counters,
    metrics: Metrics,
    accepting: std::sync::atomic::AtomicBool,
    admitted: tokio::sync::broadcast::Sender<JobId>,
}

impl JobService {
    /// Starts the service: counts what the store keeps, then the workers. Needs a tokio
    /// runtime. `objects` keeps the jobs' artifacts.
    pub async fn start(
        cfg: ServiceConfig,
        executor: Arc<dyn Executor>,
        catalog: Arc<Catalog>,
        queue: Arc<dyn JobQueue>,
        log: Arc<dyn EventLog>,
        store: Arc<dyn JobStore>,
        objects: Arc<dyn ObjectStore>,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        let stored = store.stored_bytes(now_ms()).await?;
        let mut quotas = Quotas::default();
        for (owner, bytes) in stored {
            quotas.store(&owner, bytes as i64);
        }
        let service = Arc::new(Self {
            cfg,
            executor,
            catalog,
            queue,
            log,
            store,
            objects,
            live: Arc::new(LiveJobs::default()),
            quotas: Mutex::new(quotas),
            reserved: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            metrics: Metrics::default(),
            accepting: std::sync::atomic::AtomicBool::new(true),
            admitted: tokio::sync::broadcast::channel(1024).0,
        });
        for _ in 0..service.cfg.capacity.max(1) {
            let s = service.clone();
            tokio::spawn(async move {
                while let Some(id) = s.queue.pop().await {
                    let Some(job) = s.live.get(&id) else { continue };
                    s.leave_waiting(&job, false);
                    s.counters.active.fetch_add(1, Ordering::SeqCst);
                    s.run(&job).await;
                    s.counters.active.fetch_sub(1, Ordering::SeqCst);
                }
            });
        }
        Ok(service)
    }

    /// What runs the jobs.
    pub fn executor(&self) -> &dyn Executor {
        &*self.executor
    }

    /// The language catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The settings.
    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
    }

    /// The ids of jobs admitted from now on (for whoever follows every job, such as a forwarder
    /// to an external server).
    pub fn admissions(&self) -> tokio::sync::broadcast::Receiver<JobId> {
        self.admitted.subscribe()
    }

    /// The counters, with the service's gauges filled in.
    pub fn render_metrics(&self, mut extra: Gauges) -> String {
        extra.queued = self.queue.len();
        extra.awaiting_start = self.counters.awaiting.load(Ordering::SeqCst);
        extra.active = self.counters.active.load(Ordering::SeqCst);
        extra.log_memory_bytes = self.log.memory_bytes();
        self.metrics.render(extra)
    }

    /// The most log bytes a job may write: its output caps, the compiler's included, plus the
    /// events' own overhead. What admission reserves of the storage quotas.
    fn reservation(spec: &crate::job::JobSpec) -> u64 {
        let run = spec.limits.output_bytes.unwrap_or(16 << 20);
        let compile = spec.language.compile.as_ref().map_or(0, |c| {
            spec.limits
                .merged(&kiln_workload::limit_overrides(&c.limits))
                .output_bytes
                .unwrap_or(16 << 20)
        });
        let bytes = run.saturating_add(compile);
        bytes.saturating_add((bytes / CHUNK_BYTES as u64 + 64) * EVENT_OVERHEAD) + 4096
    }

    /// Admits a job for `owner`: checks it, reserves its share of the queue and of the output
    /// storage, records it, and queues it (or waits for its start).
    pub fn submit(
        self: &Arc<Self>,
        owner: &str,
        request: JobRequest,
    ) -> Result<JobId, AdmissionError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(AdmissionError::ShuttingDown);
        }
        let spec = admit(&self.cfg.admission, &self.catalog, request)?;
        let reserve = Self::reservation(&spec);
        {
            let mut q = self.quotas.lock().expect("quotas lock");
            let refuse = |e: AdmissionError, reason: &'static str| {
                self.metrics.rejected(reason);
                Err(e)
            };
            if q.waiting_total >= self.cfg.queue_depth {
                return refuse(
                    AdmissionError::QueueFull {
                        depth: q.waiting_total,
                        cap: self.cfg.queue_depth,
                    },
                    "queue",
                );
            }
            let waiting = q.waiting.get(owner).copied().unwrap_or(0);
            if waiting >= self.cfg.owner_queue_depth {
                return refuse(
                    AdmissionError::OwnerQueueFull {
                        owner: owner.to_string(),
                        waiting,
                        cap: self.cfg.owner_queue_depth,
                    },
                    "owner_queue",
                );
            }
            let awaiting = q.awaiting.get(owner).copied().unwrap_or(0);
            if !spec.auto_start && awaiting >= self.cfg.owner_awaiting_start {
                return refuse(
                    AdmissionError::OwnerAwaitingFull {
                        owner: owner.to_string(),
                        awaiting,
                        cap: self.cfg.owner_awaiting_start,
                    },
                    "owner_awaiting",
                );
            }
            let stored = q.stored.get(owner).copied().unwrap_or(0);
            if stored.saturating_add(reserve) > self.cfg.owner_storage_bytes {
                return refuse(
                    AdmissionError::OwnerStorageFull {
                        owner: owner.to_string(),
                        stored,
                        needed: reserve,
                        cap: self.cfg.owner_storage_bytes,
                    },
                    "owner_storage",
                );
            }
            if q.stored_total.saturating_add(reserve) > self.cfg.storage_bytes {
                return refuse(
                    AdmissionError::StorageFull {
                        used: q.stored_total,
                        cap: self.cfg.storage_bytes,
                    },
                    "storage",
                );
            }
            Quotas::add(&mut q.waiting, owner, 1);
            q.waiting_total += 1;
            if !spec.auto_start {
                Quotas::add(&mut q.awaiting, owner, 1);
                self.counters.awaiting.fetch_add(1, Ordering::SeqCst);
            }
            q.store(owner, reserve as i64);
        }
        let id = JobId::new();
        self.reserved
            .lock()
            .expect("reserved lock")
            .insert(id.clone(), reserve);
        let stdin = spec.stdin.clone();
        let auto_start = spec.auto_start;
        let job = LiveJob::new(id.clone(), owner.to_string(), spec);
        if let Some(bytes) = stdin {
            job.preload_stdin(bytes);
        }
        if let Err(e) = self.log.create(&id) {
            tracing::error!(job = %id, error = %e, "cannot start a job's event log");
        }
        let _ = self.log.append(&id, JobEvent::Stage(Stage::Queued));
        self.live.insert(job.clone());
        self.metrics.submitted();
        self.record(&job);
        let _ = self.admitted.send(id.clone());
        if auto_start {
            self.queue.push(owner, id.clone());
        } else {
            let service = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(service.cfg.warmup).await;
                if job.take_awaiting() {
                    service.leave_waiting(&job, true);
                    let message = format!(
                        "no start within the {} ms warm-up window",
                        service.cfg.warmup.as_millis()
                    );
                    service.end_unrun(&job, Verdict::Expired, &message);
                }
            });
        }
        Ok(id)
    }

    /// Frees the job's place in the waiting quotas (it was taken by a worker, or ended before).
    fn leave_waiting(&self, job: &LiveJob, awaiting: bool) {
        let mut q = self.quotas.lock().expect("quotas lock");
        Quotas::add(&mut q.waiting, &job.owner, -1);
        q.waiting_total = q.waiting_total.saturating_sub(1);
        if awaiting {
            Quotas::add(&mut q.awaiting, &job.owner, -1);
            self.counters.awaiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn owned(&self, owner: &str, id: &JobId) -> Option<Arc<LiveJob>> {
        self.live.get(id).filter(|j| j.owner == owner)
    }

    /// The start handshake: a job waiting for its start moves to the run queue.
    pub async fn start_job(&self, owner: &str, id: &JobId) -> Result<(), ControlError> {
        match self.owned(owner, id) {
            Some(job) if job.state().is_final() => Err(ControlError::Finished),
            Some(job) => {
                if job.take_awaiting() {
                    {
                        let mut q = self.quotas.lock().expect("quotas lock");
                        Quotas::add(&mut q.awaiting, owner, -1);
                    }
                    self.counters.awaiting.fetch_sub(1, Ordering::SeqCst);
                    self.queue.push(owner, id.clone());
                }
                Ok(())
            }
            None => match self.record_of(owner, id).await {
                Some(_) => Err(ControlError::Finished),
                None => Err(ControlError::NotFound),
            },
        }
    }

    /// Kills a job: one that has not started ends at once, a running one is stopped.
    pub async fn kill(&self, owner: &str, id: &JobId) -> Result<(), ControlError> {
        let Some(job) = self.owned(owner, id) else {
            // A job that is over can be killed all the same: nothing happens.
            return match self.record_of(owner, id).await {
                Some(_) => Ok(()),
                None => Err(ControlError::NotFound),
            };
        };
        job.request_kill();
        let awaiting = job.take_awaiting();
        if awaiting || self.queue.remove(id) {
            self.leave_waiting(&job, awaiting);
            self.end_unrun(
                &job,
                Verdict::Run(Status::Killed),
                "killed before it started",
            );
        }
        Ok(())
    }

    /// Hands a chunk to a job's stdin.
    pub fn stdin(&self, owner: &str, id: &JobId, chunk: Vec<u8>) -> Result<(), ControlError> {
        let job = self.owned(owner, id).ok_or(ControlError::NotFound)?;
        Ok(job.push_stdin(chunk, self.cfg.stdin)?)
    }

    /// Closes a job's stdin.
    pub fn close_stdin(&self, owner: &str, id: &JobId) -> Result<(), ControlError> {
        let job = self.owned(owner, id).ok_or(ControlError::NotFound)?;
        job.close_stdin();
        Ok(())
    }

    /// A job's record, if `owner` owns it: from memory while it is live, else the store.
    pub async fn record_of(&self, owner: &str, id: &JobId) -> Option<JobRecord> {
        if let Some(job) = self.live.get(id) {
            return (job.owner == owner).then(|| self.snapshot(&job));
        }
        match self.store.get(id, now_ms()).await {
            Ok(r) => r.filter(|r| r.owner == owner),
            Err(e) => {
                tracing::error!(error = %e, "reading the job store");
                None
            }
        }
    }

    /// Waits until a live job is over (returns at once for others).
    pub async fn wait_finished(&self, id: &JobId) {
        if let Some(job) = self.live.get(id) {
            job.wait_finished().await;
        }
    }

    /// The job's events from position `from`, following it live until its last.
    pub fn events(&self, id: &JobId, from: u64) -> EventStream {
        let log = self.log.clone();
        let id = id.clone();
        stream::unfold(Some(from), move |next| {
            let log = log.clone();
            let id = id.clone();
            async move {
                let from = next?;
                match log.read(&id, from, READ_BATCH).await {
                    Ok(read) => {
                        let after = from + read.events.len() as u64;
                        let next = (!read.complete).then_some(after);
                        Some((stream::iter(read.events), next))
                    }
                    Err(e) => {
                        tracing::warn!(job = %id, error = %e, "reading a job's events");
                        None
                    }
                }
            }
        })
        .flatten()
        .boxed()
    }

    /// How a live job's output is given to clients.
    pub fn live_encoding(&self, id: &JobId) -> Option<crate::job::OutputEncoding> {
        self.live.get(id).map(|j| j.spec.output_encoding)
    }

    /// The job's events from the next one on (a live follower's view), if it is live.
    pub fn follow(&self, id: &JobId) -> Option<EventStream> {
        let next = self.log.next_position(id)?;
        Some(self.events(id, next))
    }

    /// Stops admitting jobs and waits (up to the drain time) for the admitted ones to end.
    pub async fn drain(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + self.cfg.drain;
        loop {
            let busy = self.live.all().iter().any(|j| !j.state().is_final());
            if !busy || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.queue.close();
        self.log.flush().await;
        self.store.flush().await;
    }

    /// Deletes the expired records and their logs; returns how many.
    pub async fn purge_expired(&self) -> usize {
        match self.store.purge_expired(now_ms()).await {
            Ok(ids) => {
                for id in &ids {
                    self.log.remove(id);
                    if let Err(e) = self.objects.remove_all(&artifacts_prefix(id)).await {
                        tracing::warn!(job = %id, error = %e, "deleting a job's artifacts");
                    }
                }
                // Their bytes no longer count: recount from what is left.
                if let Ok(stored) = self.store.stored_bytes(now_ms()).await {
                    let reserved: HashMap<String, u64> = {
                        let reserved = self.reserved.lock().expect("reserved lock");
                        let mut by_owner = HashMap::new();
                        for (id, bytes) in reserved.iter() {
                            if let Some(job) = self.live.get(id) {
                                *by_owner.entry(job.owner.clone()).or_default() += bytes;
                            }
                        }
                        by_owner
                    };
                    let mut q = self.quotas.lock().expect("quotas lock");
                    q.stored.clear();
                    q.stored_total = 0;
                    for (owner, bytes) in stored.into_iter().chain(reserved) {
                        q.store(&owner, bytes as i64);
                    }
                }
                ids.len()
            }
            Err(e) => {
                tracing::warn!(error = %e, "purging expired jobs");
                0
            }
        }
    }

    fn snapshot(&self, job: &LiveJob) -> JobRecord {
        let (state, updated_at_ms, outcome) = job.status();
        JobRecord {
            id: job.id.clone(),
            owner: job.owner.clone(),
            language: job.spec.language.name.clone(),
            version: job.spec.version.clone(),
            state,
            updated_at_ms,
            expires_at_ms: state
                .is_final()
                .then(|| expiry(updated_at_ms, self.cfg.result_ttl)),
            collect_output: job.spec.collect_output,
            output_encoding: job.spec.output_encoding,
            outcome,
            log_bytes: self.log.stored_bytes(&job.id),
        }
    }

    fn record(&self, job: &LiveJob) {
        self.store.put(&self.snapshot(job));
    }

    /// The event log the jobs' events go to.
    pub(crate) fn log(&self) -> &dyn EventLog {
        self.log.as_ref()
    }

    pub(crate) fn set_state(&self, job: &LiveJob, state: JobState) {
        if job.set_state(state) {
            self.record(job);
        }
    }

    /// Ends a job that never ran (killed before its start, expired) with its one outcome.
    fn end_unrun(&self, job: &Arc<LiveJob>, verdict: Verdict, message: &str) {
        self.end(job, JobOutcome::unrun(verdict, message), 0, None);
    }

    /// Ends a job: its last event, its record, its storage settled, its counters.
    fn end(
        &self,
        job: &Arc<LiveJob>,
        outcome: JobOutcome,
        log_bytes: u64,
        started: Option<Instant>,
    ) {
        let state = outcome.state();
        let verdict = outcome.verdict;
        if !job.finish(outcome.clone()) {
            return;
        }
        let _ = self
            .log
            .append(&job.id, JobEvent::Finished(Box::new(outcome)));
        self.log.close(&job.id);
        let reserved = self
            .reserved
            .lock()
            .expect("reserved lock")
            .remove(&job.id)
            .unwrap_or(0);
        {
            let mut q = self.quotas.lock().expect("quotas lock");
            q.store(&job.owner, log_bytes as i64 - reserved as i64);
        }
        let mut record = self.snapshot(job);
        record.log_bytes = log_bytes;
        self.store.put(&record);
        self.metrics.finished(
            state.as_str(),
            verdict.as_str(),
            started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
        );
        self.forget_later(job.id.clone());
    }

    /// Drops a finished job from memory after a while: its record is in the store, its events in
    /// its log's file.
    fn forget_later(&self, id: JobId) {
        let keep = self.cfg.keep_in_memory;
        let log = self.log.clone();
        let live = self.live.clone();
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            live.remove(&id);
            log.evict(&id);
        });
    }

    /// Runs a job in its span: the job's id and language, and the client's trace (its span
    /// the parent, when an exporter registered how), so that every log line of the run says
    /// which job and which trace it belongs to.
    async fn run(&self, job: &Arc<LiveJob>) {
        use tracing::Instrument as _;
        let trace = job.spec.trace.as_ref();
        let span = tracing::info_span!(
            "job",
            job = %job.id,
            owner = %job.owner,
            language = %job.spec.language.name,
            trace_id = trace.map(|t| t.trace_id()),
            parent_span_id = trace.map(|t| t.parent_id()),
            verdict = tracing::field::Empty,
        );
        if let Some(cx) = trace {
            crate::trace::attach(&span, cx);
        }
        self.run_in_span(job).instrument(span).await;
    }

    async fn run_in_span(&self, job: &Arc<LiveJob>) {
        if job.kill_requested() {
            return self.end_unrun(
                job,
                Verdict::Run(Status::Killed),
                "killed before it started",
            );
        }
        self.set_state(job, JobState::Starting);
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel();
        let killer = {
            let job = job.clone();
            tokio::spawn(async move {
                job.wait_kill().await;
                let _ = kill_tx.send(());
            })
        };
        let program = Program {
            language: job.spec.language.clone(),
            files: job.spec.files.clone(),
            args: job.spec.args.clone(),
            compile_options: job.spec.compile_options.clone(),
            stdin: StdinSource::Live(job.stdin_feed()),
            limits: job.spec.limits.clone(),
            shape: SandboxShape::default(),
            capture: job.spec.artifacts,
        };
        let started = Instant::now();
        let mut sink = JobSink::new(self, job);
        let result = self.executor.run(program, &mut sink, Some(kill_rx)).await;
        killer.abort();
        job.close_stdin();
        sink.flush_all();
        let mut log_bytes = sink.bytes;
        let outcome = match result {
            Ok(mut result) => {
                let captured = result.artifacts.take();
                let mut outcome = outcome_of(&result);
                if let Some(captured) = captured {
                    log_bytes += self.keep_artifacts(job, captured, &mut outcome).await;
                }
                outcome
            }
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "job failed in the engine");
                JobOutcome::unrun(Verdict::Run(Status::InternalError), e.to_string())
            }
        };
        tracing::Span::current().record("verdict", outcome.verdict.as_str());
        tracing::info!(
            verdict = outcome.verdict.as_str(),
            wall_ms = started.elapsed().as_millis() as u64,
            artifacts = outcome.artifacts.len(),
            "job finished"
        );
        self.end(job, outcome, log_bytes, Some(started));
    }
}

/// A program's result as the job's outcome.
fn outcome_of(result: &ProgramResult) -> JobOutcome {
    JobOutcome {
        verdict: Verdict::Run(result.status),
        compile: result.compile.as_ref().map(|c| StageFacts::from(&c.result)),
        run: result.run.as_ref().map(StageFacts::from),
        compile_output: result.compile.as_ref().map(|c| CompileOutput {
            stdout: c.stdout.clone(),
            stderr: c.stderr.clone(),
            output: c.output.clone(),
        }),
        message: result.run.as_ref().and_then(|r| r.message.clone()),
        artifacts: Vec::new(),
        artifacts_truncated: false,
    }
}
