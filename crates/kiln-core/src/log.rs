//! The event log: every job's events, in order, appended as they happen and replayed from any
//! position. [`EventLog`] is what the service needs of it; [`LocalEventLog`] keeps it on this
//! machine.
//!
//! `LocalEventLog` writes every event to the job's file (`<dir>/<job>.log`, on a writer thread of
//! its own, never on the async threads) and keeps the most recent ones in memory too, up to a
//! window per job. What it holds in memory (the windows, and what waits for the writer) counts
//! against one budget for all jobs: past it, [`EventLog::ready`] makes producers wait, so a program
//! flooding its output is slowed to the disk's pace instead of growing the server. Readers get
//! memory when they can and the file otherwise, so a job's whole log stays readable (and survives a
//! restart) until it is removed.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tokio::sync::{watch, Notify};

use crate::event::{EventRecord, JobEvent};
use crate::job::JobId;

/// Why the log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No log for the job.
    #[error("no event log for job {0}")]
    Unknown(JobId),
    /// The job's log is closed: its last event was appended.
    #[error("the event log of job {0} is closed")]
    Closed(JobId),
    /// Reading its file failed.
    #[error("event log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Its file does not decode.
    #[error("event log {path}: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The error.
        source: crate::event::DecodeError,
    },
}

/// Events read from a log.
#[derive(Debug, Clone)]
pub struct LogRead {
    /// The events, from the position asked for, in order.
    pub events: Vec<Arc<EventRecord>>,
    /// No event follows these: the log is closed and they are its last.
    pub complete: bool,
}

/// A job's events, appended in order and replayed from any position.
#[async_trait]
pub trait EventLog: Send + Sync + std::fmt::Debug {
    /// Starts an empty log for a new job.
    fn create(&self, job: &JobId) -> Result<(), LogError>;

    /// Appends an event; returns its position. Never waits; callers that produce a lot wait for
    /// [`EventLog::ready`] between appends.
    fn append(&self, job: &JobId, event: JobEvent) -> Result<u64, LogError>;

    /// Marks the log complete: nothing more will be appended.
    fn close(&self, job: &JobId);

    /// Up to `max` events from position `from`. With none there yet, waits for the next one,
    /// unless the log is complete.
    async fn read(&self, job: &JobId, from: u64, max: usize) -> Result<LogRead, LogError>;

    /// The position the next event will get (what a live follower starts from).
    fn next_position(&self, job: &JobId) -> Option<u64>;

    /// `None` while the memory held for logs is under its budget; otherwise a future that
    /// resolves once it is again.
    fn ready(&self) -> Option<BoxFuture<'static, ()>>;

    /// Frees a finished job's memory; its log stays readable from its file.
    fn evict(&self, job: &JobId);

    /// Deletes a job's log for good.
    fn remove(&self, job: &JobId);

    /// Bytes the job's log takes on disk.
    fn stored_bytes(&self, job: &JobId) -> u64;

    /// Bytes all logs hold in memory now.
    fn memory_bytes(&self) -> u64;

    /// Waits until everything appended so far is on disk (shutdown, tests).
    async fn flush(&self);
}

/// Settings of [`LocalEventLog`].
#[derive(Debug, Clone)]
pub struct LocalLogConfig {
    /// Where the job files go.
    pub dir: PathBuf,
    /// Bytes of events all jobs may hold in memory at once (windows and writes in flight).
    pub memory_budget: u64,
    /// Bytes of its most recent events one job keeps in memory for its readers.
    pub window_bytes: u64,
}

#[derive(Debug, Default)]
struct JobLog {
    /// The most recent events; `window[0]` is at position `window_start`.
    window: VecDeque<Arc<EventRecord>>,
    window_start: u64,
    window_bytes: u64,
    next: u64,
    /// Positions below this are in the file.
    written: u64,
    /// File offset of each written position.
    offsets: Vec<u64>,
    file_bytes: u64,
    closed: bool,
    evicted: bool,
}

#[derive(Debug)]
struct Entry {
    log: Mutex<JobLog>,
    changed: watch::Sender<u64>,
}

enum WriteOp {
    Append(JobId, Arc<EventRecord>, u64),
    Remove(JobId),
    Flush(std::sync::mpsc::SyncSender<()>),
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    window_bytes: u64,
    budget: u64,
    held: AtomicU64,
    freed: Notify,
    jobs: Mutex<HashMap<JobId, Arc<Entry>>>,
}

/// The event log on this machine: files under a directory, recent events in memory.
#[derive(Debug)]
pub struct LocalEventLog {
    shared: Arc<Shared>,
    writer: std::sync::mpsc::Sender<WriteOp>,
}

impl LocalEventLog {
    /// A log over `cfg.dir` (created if needed), with its writer thread.
    pub fn open(cfg: LocalLogConfig) -> Result<Self, LogError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| LogError::Io {
            path: cfg.dir.clone(),
            source,
        })?;
        let shared = Arc::new(Shared {
            dir: cfg.dir,
            window_bytes: cfg.window_bytes,
            budget: cfg.memory_budget,
            held: AtomicU64::new(0),
            freed: Notify::new(),
            jobs: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("kiln-event-log".into())
            .spawn(move || write_loop(&writer_shared, rx))
            .map_err(|source| LogError::Io {
                path: shared.dir.clone(),
                source,
            })?;
        Ok(Self { shared, writer: tx })
    }

    fn entry(&self, job: &JobId) -> Option<Arc<Entry>> {
        self.shared
            .jobs
            .lock()
            .expect("log jobs lock")
            .get(job)
            .cloned()
    }

    fn send(&self, op: WriteOp) {
        let _ = self.writer.send(op);
    }
}

impl Shared {
    fn path(&self, job: &JobId) -> PathBuf {
        self.dir.join(format!("{}.log", job.as_str()))
    }

    fn release(&self, bytes: u64) {
        if bytes > 0 {
            self.held.fetch_sub(bytes, Ordering::SeqCst);
            self.freed.notify_waiters();
        }
    }
}

/// Drops the oldest written events of a window over its size. Returns the bytes freed.
fn trim(log: &mut JobLog, cap: u64) -> u64 {
    let mut freed = 0;
    while log.window_bytes > cap || (log.evicted && !log.window.is_empty()) {
        let Some(front) = log.window.front() else {
            break;
        };
        if front.position >= log.written {
            break;
        }
        let size = front.event.size() as u64;
        log.window.pop_front();
        log.window_start += 1;
        log.window_bytes -= size;
        freed += size;
    }
    freed
}

fn write_loop(shared: &Shared, rx: std::sync::mpsc::Receiver<WriteOp>) {
    let mut files: HashMap<JobId, BufWriter<File>> = HashMap::new();
    let mut done: Vec<(JobId, u64, u64, usize)> = Vec::new();
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut flushes = Vec::new();
        // Take what is queued in one pass, then flush each file once.
        while let Some(op) = next.take() {
            match op {
                WriteOp::Append(job, record, size) => {
                    let file = match files.entry(job.clone()) {
                        std::collections::hash_map::Entry::Occupied(f) => Some(f.into_mut()),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            match std::fs::OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(shared.path(&job))
                            {
                                Ok(f) => Some(v.insert(BufWriter::with_capacity(64 << 10, f))),
                                Err(e) => {
                                    tracing::error!(job = %job, error = %e, "cannot open an event log file");
                                    None
                                }
                            }
                        }
                    };
                    buf.clear();
                    record.encode(&mut buf);
                    if let Some(file) = file {
                        if let Err(e) = file.write_all(&buf) {
                            tracing::error!(job = %job, error = %e, "cannot write an event log file");
                        }
                    }
                    done.push((job, record.position, size, buf.len()));
                }
                WriteOp::Remove(job) => {
                    files.remove(&job);
                    let _ = std::fs::remove_file(shared.path(&job));
                }
                WriteOp::Flush(reply) => flushes.push(reply),
            }
            next = rx.try_recv().ok();
        }
        for file in files.values_mut() {
            let _ = file.flush();
        }
        let mut freed = 0;
        let mut touched: Vec<Arc<Entry>> = Vec::new();
        {
            let jobs = shared.jobs.lock().expect("log jobs lock");
            for (job, position, _size, len) in done.drain(..) {
                let Some(entry) = jobs.get(&job) else {
                    continue;
                };
                let mut log = entry.log.lock().expect("job log lock");
                let offset = log.file_bytes;
                log.offsets.push(offset);
                log.file_bytes += len as u64;
                log.written = position + 1;
                freed += trim(&mut log, shared.window_bytes);
                if log.closed && log.written == log.next {
                    // Complete on disk: the file can close.
                    files.remove(&job);
                }
                drop(log);
                touched.push(entry.clone());
            }
        }
        drop(touched);
        shared.release(freed);
        for reply in flushes {
            let _ = reply.send(());
        }
    }
}

/// The largest record a log file holds: an outcome carries the compile stage's output (at most
/// the output cap, 16 MiB by default), every other record at most a chunk.
const MAX_RECORD_BYTES: usize = 256 << 20;

/// Reads records `from..` (at most `max`) of a job's file: from `offset` (where record `from`
/// starts) when it is known, else from the start, stepping over the records before `from` by
/// their lengths. Reads only what it returns.
fn read_file(
    path: &Path,
    offset: Option<u64>,
    from: u64,
    max: usize,
) -> Result<Vec<Arc<EventRecord>>, LogError> {
    let io = |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut reader = std::io::BufReader::with_capacity(64 << 10, file);
    reader
        .seek(SeekFrom::Start(offset.unwrap_or(0)))
        .map_err(io)?;
    let mut out = Vec::new();
    let mut body = Vec::new();
    let mut at = offset.unwrap_or(0) as usize;
    while out.len() < max {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len) {
            Ok(()) => {}
            // The end, or a record torn by a crash while it was written.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io(e)),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_RECORD_BYTES {
            // A damaged length must not become an allocation of gigabytes.
            return Err(LogError::Decode {
                path: path.to_path_buf(),
                source: crate::event::DecodeError {
                    offset: at,
                    reason: format!("a record of {len} bytes (at most {MAX_RECORD_BYTES})"),
                },
            });
        }
        body.resize(len + 4, 0);
        body[..4].copy_from_slice(&(len as u32).to_le_bytes());
        match reader.read_exact(&mut body[4..]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io(e)),
        }
        let mut records = EventRecord::decode_all(&body).map_err(|mut source| {
            source.offset += at;
            LogError::Decode {
                path: path.to_path_buf(),
                source,
            }
        })?;
        at += len + 4;
        if let Some(record) = records.pop().filter(|r| r.position >= from) {
            out.push(Arc::new(record));
        }
    }
    Ok(out)
}

#[async_trait]
impl EventLog for LocalEventLog {
    fn create(&self, job: &JobId) -> Result<(), LogError> {
        let (changed, _) = watch::channel(0);
        self.shared.jobs.lock().expect("log jobs lock").insert(
            job.clone(),
            Arc::new(Entry {
                log: Mutex::new(JobLog::default()),
                changed,
            }),
        );
        Ok(())
    }

    fn append(&self, job: &JobId, event: JobEvent) -> Result<u64, LogError> {
        let entry = self
            .entry(job)
            .ok_or_else(|| LogError::Unknown(job.clone()))?;
        let size = event.size() as u64;
        let (record, position) = {
            let mut log = entry.log.lock().expect("job log lock");
            if log.closed {
                return Err(LogError::Closed(job.clone()));
            }
            let position = log.next;
            log.next += 1;
            let record = Arc::new(EventRecord { position, event });
            log.window.push_back(record.clone());
            log.window_bytes += size;
            if matches!(record.event, JobEvent::Finished(_)) {
                log.closed = true;
            }
            self.shared.held.fetch_add(size, Ordering::SeqCst);
            // Under the job's lock, so the file gets its events in position order.
            self.send(WriteOp::Append(job.clone(), record.clone(), size));
            (record, position)
        };
        drop(record);
        entry.changed.send_replace(position + 1);
        Ok(position)
    }

    fn close(&self, job: &JobId) {
        if let Some(entry) = self.entry(job) {
            let next = {
                let mut log = entry.log.lock().expect("job log lock");
                log.closed = true;
                log.next
            };
            entry.changed.send_replace(next);
        }
    }

    async fn read(&self, job: &JobId, from: u64, max: usize) -> Result<LogRead, LogError> {
        let max = max.max(1);
        loop {
            let Some(entry) = self.entry(job) else {
                // Not in memory (removed from it, or written by an earlier process): the file.
                let path = self.shared.path(job);
                let events = tokio::task::spawn_blocking(move || read_file(&path, None, from, max))
                    .await
                    .map_err(|e| LogError::Io {
                        path: self.shared.path(job),
                        source: std::io::Error::other(e.to_string()),
                    })??;
                let complete = events.len() < max;
                return Ok(LogRead { events, complete });
            };
            let mut changed = entry.changed.subscribe();
            let disk = {
                let log = entry.log.lock().expect("job log lock");
                if from >= log.window_start && from < log.next {
                    let skip = (from - log.window_start) as usize;
                    let events: Vec<_> = log.window.iter().skip(skip).take(max).cloned().collect();
                    let last = events.last().map_or(from, |e| e.position + 1);
                    return Ok(LogRead {
                        complete: log.closed && last == log.next,
                        events,
                    });
                }
                if from >= log.next {
                    if log.closed {
                        return Ok(LogRead {
                            events: Vec::new(),
                            complete: true,
                        });
                    }
                    None
                } else {
                    // Below the window: on disk already.
                    let offset = log.offsets.get(from as usize).copied();
                    let upto = (log.window_start - from) as usize;
                    Some((offset, upto.min(max)))
                }
            };
            match disk {
                Some((offset, take)) => {
                    let path = self.shared.path(job);
                    let events =
                        tokio::task::spawn_blocking(move || read_file(&path, offset, from, take))
                            .await
                            .map_err(|e| LogError::Io {
                                path: self.shared.path(job),
                                source: std::io::Error::other(e.to_string()),
                            })??;
                    return Ok(LogRead {
                        events,
                        complete: false,
                    });
                }
                None => {
                    if changed.changed().await.is_err() {
                        return Ok(LogRead {
                            events: Vec::new(),
                            complete: true,
                        });
                    }
                }
            }
        }
    }

    fn next_position(&self, job: &JobId) -> Option<u64> {
        self.entry(job)
            .map(|e| e.log.lock().expect("job log lock").next)
    }

    fn ready(&self) -> Option<BoxFuture<'static, ()>> {
        if self.shared.held.load(Ordering::SeqCst) < self.shared.budget {
            return None;
        }
        let shared = self.shared.clone();
        Some(Box::pin(async move {
            loop {
                let freed = shared.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                if shared.held.load(Ordering::SeqCst) < shared.budget {
                    return;
                }
                freed.await;
            }
        }))
    }

    fn evict(&self, job: &JobId) {
        let Some(entry) = self.shared.jobs.lock().expect("log jobs lock").remove(job) else {
            return;
        };
        let freed = {
            let mut log = entry.log.lock().expect("job log lock");
            log.evicted = true;
            trim(&mut log, 0)
        };
        // Events still on their way to the file are released by the writer... unless the entry
        // is gone: then release them now, they are counted in `held` until written.
        let pending = {
            let log = entry.log.lock().expect("job log lock");
            log.window_bytes
        };
        self.shared.release(freed + pending);
        entry.changed.send_replace(u64::MAX);
    }

    fn remove(&self, job: &JobId) {
        self.evict(job);
        self.send(WriteOp::Remove(job.clone()));
    }

    fn stored_bytes(&self, job: &JobId) -> u64 {
        match self.entry(job) {
            Some(e) => e.log.lock().expect("job log lock").file_bytes,
            None => std::fs::metadata(self.shared.path(job)).map_or(0, |m| m.len()),
        }
    }

    fn memory_bytes(&self) -> u64 {
        self.shared.held.load(Ordering::SeqCst)
    }

    async fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.send(WriteOp::Flush(tx));
        let _ = tokio::task::spawn_blocking(move || rx.recv()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{OutputStream, Stage};
    use crate::job::{JobOutcome, Verdict};
    use bytes::Bytes;

    fn log(dir: &Path, budget: u64, window: u64) -> LocalEventLog {
        LocalEventLog::open(LocalLogConfig {
            dir: dir.to_path_buf(),
            memory_budget: budget,
            window_bytes: window,
        })
        .unwrap()
    }

    fn output(seq: u64, len: usize) -> JobEvent {
        JobEvent::Output {
            stream: OutputStream::Stdout,
            seq,
            bytes: Bytes::from(vec![b'a' + (seq % 26) as u8; len]),
        }
    }

    async fn read_all(log: &LocalEventLog, job: &JobId) -> Vec<Arc<EventRecord>> {
        let mut all = Vec::new();
        loop {
            let r = log.read(job, all.len() as u64, 7).await.unwrap();
            all.extend(r.events);
            if r.complete {
                return all;
            }
        }
    }

    #[tokio::test]
    async fn events_replay_in_order_from_memory_and_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path(), 1 << 20, 4096);
        let job = JobId::new();
        log.create(&job).unwrap();
        log.append(&job, JobEvent::Stage(Stage::Running)).unwrap();
        for seq in 0..200 {
            log.append(&job, output(seq, 1000)).unwrap();
        }
        let outcome = JobOutcome::unrun(Verdict::Expired, "x");
        log.append(&job, JobEvent::Finished(Box::new(outcome.clone())))
            .unwrap();
        assert!(log.append(&job, JobEvent::Stage(Stage::Running)).is_err());
        log.flush().await;
        // The window keeps about 4 KiB: most of the log is only in the file now.
        assert!(log.memory_bytes() < 8192, "{}", log.memory_bytes());
        let all = read_all(&log, &job).await;
        assert_eq!(all.len(), 202);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.position, i as u64);
        }
        assert!(matches!(&all[201].event, JobEvent::Finished(o) if **o == outcome));
        // Once out of memory altogether, and after a restart, it reads the same.
        log.evict(&job);
        assert_eq!(read_all(&log, &job).await, all);
        let reopened = super::LocalEventLog::open(LocalLogConfig {
            dir: dir.path().to_path_buf(),
            memory_budget: 1 << 20,
            window_bytes: 4096,
        })
        .unwrap();
        assert_eq!(read_all(&reopened, &job).await, all);
        assert!(log.stored_bytes(&job) > 200_000);
        log.remove(&job);
        log.flush().await;
        assert!(read_all(&log, &job).await.is_empty());
    }

    #[tokio::test]
    async fn a_damaged_file_is_an_error_not_a_huge_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path(), 1 << 20, 4096);
        let job = JobId::new();
        let mut bytes = Vec::new();
        EventRecord {
            position: 0,
            event: JobEvent::Stage(Stage::Running),
        }
        .encode(&mut bytes);
        // A length of 4 GiB after a good record.
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 16]);
        std::fs::write(dir.path().join(format!("{}.log", job.as_str())), bytes).unwrap();
        let first = log.read(&job, 0, 1).await.unwrap();
        assert_eq!(first.events.len(), 1);
        let err = log.read(&job, 1, 1).await.unwrap_err();
        assert!(matches!(err, LogError::Decode { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_reader_waits_for_the_next_event() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(log(dir.path(), 1 << 20, 1 << 16));
        let job = JobId::new();
        log.create(&job).unwrap();
        let reader = {
            let (log, job) = (log.clone(), job.clone());
            tokio::spawn(async move { log.read(&job, 0, 10).await.unwrap() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        log.append(&job, JobEvent::Stage(Stage::Queued)).unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.events.len(), 1);
        assert!(!got.complete);
    }

    #[tokio::test]
    async fn producers_wait_while_the_memory_budget_is_spent() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path(), 64 << 10, 1 << 10);
        let job = JobId::new();
        log.create(&job).unwrap();
        for seq in 0..1000 {
            if let Some(wait) = log.ready() {
                wait.await;
            }
            log.append(&job, output(seq, 4096)).unwrap();
            assert!(log.memory_bytes() < (64 << 10) + 8192);
        }
        log.flush().await;
        assert!(log.memory_bytes() <= 8192, "{}", log.memory_bytes());
    }
}
