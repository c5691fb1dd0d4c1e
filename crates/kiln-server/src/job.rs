//! One job: what it runs, its state, the log of its channel events (replayed to SSE clients), its
//! controls (start, kill, stdin with its caps), and its result.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_engine::Limits;
use kiln_lang::{Language, SourceFile};
use tokio::sync::{broadcast, mpsc, Notify};

use crate::bus::{Bus, Event};
use crate::wire::{JobState, JobStatus, RunResultWire, UsageEvent};

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Why a stdin frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdinRefusal {
    /// Too many frames this second.
    Rate,
    /// Too many bytes not yet handed to the program.
    Pending {
        /// The cap.
        cap: usize,
    },
    /// Stdin was closed, or the job is over.
    Closed,
}

/// What a job runs, fixed at creation.
#[derive(Debug)]
pub struct JobSpec {
    /// Its language.
    pub language: Language,
    /// The toolchain's version.
    pub version: String,
    /// Its files.
    pub files: Vec<SourceFile>,
    /// Program arguments.
    pub args: Vec<String>,
    /// Run-stage limits.
    pub limits: Limits,
    /// Keep stdout and stderr for `GET /output`.
    pub collect_output: bool,
    /// Start without the handshake.
    pub auto_start: bool,
}

#[derive(Debug)]
struct Inner {
    state: JobState,
    updated_at_ms: i64,
    log: Vec<Arc<Event>>,
    output: Option<RunResultWire>,
    usage: Option<UsageEvent>,
    error: Option<String>,
}

#[derive(Debug)]
struct Stdin {
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
    window_start: Instant,
    frames_in_window: u32,
}

/// A job.
#[derive(Debug)]
pub struct Job {
    /// Its id.
    pub id: String,
    /// `private-run-<id>`.
    pub channel: String,
    /// The name of the token that created it.
    pub owner: String,
    /// What it runs.
    pub spec: JobSpec,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
    bus: Bus,
    start: Notify,
    started: AtomicBool,
    kill: Notify,
    killed: AtomicBool,
    finished: Notify,
    stdin: Mutex<Stdin>,
    stdin_rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<u8>>>>,
    pending: Arc<AtomicUsize>,
}

impl Job {
    /// A new queued job.
    pub fn new(id: String, owner: String, spec: JobSpec, bus: Bus) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        Arc::new(Self {
            channel: format!("private-run-{id}"),
            id,
            owner,
            spec,
            inner: Mutex::new(Inner {
                state: JobState::Queued,
                updated_at_ms: now_ms(),
                log: Vec::new(),
                output: None,
                usage: None,
                error: None,
            }),
            events,
            bus,
            start: Notify::new(),
            started: AtomicBool::new(false),
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

    /// The state now.
    pub fn state(&self) -> JobState {
        self.inner.lock().expect("job lock").state
    }

    /// Moves to `state` (never out of a final state). Returns whether it changed.
    pub fn set_state(&self, state: JobState) -> bool {
        let mut inner = self.inner.lock().expect("job lock");
        if inner.state.is_final() || inner.state == state {
            return false;
        }
        inner.state = state;
        inner.updated_at_ms = now_ms();
        if state.is_final() {
            drop(inner);
            self.finished.notify_waiters();
        }
        true
    }

    /// Records why the job ended in `error`.
    pub fn set_error(&self, message: String) {
        self.inner.lock().expect("job lock").error = Some(message);
    }

    /// Why it ended in `error`.
    pub fn error(&self) -> Option<String> {
        self.inner.lock().expect("job lock").error.clone()
    }

    /// The contract's status body.
    pub fn status(&self) -> JobStatus {
        let inner = self.inner.lock().expect("job lock");
        JobStatus {
            job_id: self.id.clone(),
            channel: self.channel.clone(),
            language: self.spec.language.name.clone(),
            version: self.spec.version.clone(),
            state: inner.state,
            updated_at_ms: inner.updated_at_ms,
        }
    }

    /// Publishes an event on the job's channel: into its log (for replay), to its SSE listeners
    /// and to the bus (for Pusher clients), in one order for all.
    pub fn publish(&self, name: &str, data: serde_json::Value) {
        let event = Arc::new(Event {
            channel: self.channel.clone(),
            name: name.to_string(),
            data,
        });
        let mut inner = self.inner.lock().expect("job lock");
        inner.log.push(event.clone());
        let _ = self.events.send(event.clone());
        self.bus.publish((*event).clone());
    }

    /// Everything published so far and a receiver for what follows, with nothing lost or repeated
    /// in between.
    pub fn replay(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let inner = self.inner.lock().expect("job lock");
        (inner.log.clone(), self.events.subscribe())
    }

    /// Keeps the final result for `GET /output`.
    pub fn set_output(&self, output: RunResultWire) {
        self.inner.lock().expect("job lock").output = Some(output);
    }

    /// Publishes Kiln's `usage` event and keeps it for `POST /v1/run`.
    pub fn publish_usage(&self, usage: UsageEvent) {
        self.publish("usage", serde_json::json!(usage));
        self.inner.lock().expect("job lock").usage = Some(usage);
    }

    /// The `usage` event, once the job is over.
    pub fn usage(&self) -> Option<UsageEvent> {
        self.inner.lock().expect("job lock").usage.clone()
    }

    /// The final result, if collected.
    pub fn output(&self) -> Option<RunResultWire> {
        self.inner.lock().expect("job lock").output.clone()
    }

    /// `POST /start`.
    pub fn request_start(&self) {
        self.started.store(true, Ordering::SeqCst);
        self.start.notify_waiters();
    }

    /// Waits for the start (returns at once if it already came or the job starts by itself).
    pub async fn wait_start(&self) {
        let notified = self.start.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.spec.auto_start || self.started.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }

    /// `POST /kill`.
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

    /// `POST /stdin`: accepts a chunk unless a cap says no.
    pub fn push_stdin(
        &self,
        chunk: Vec<u8>,
        frames_per_sec: u32,
        pending_cap: usize,
    ) -> Result<(), StdinRefusal> {
        if self.state().is_final() {
            return Err(StdinRefusal::Closed);
        }
        let mut stdin = self.stdin.lock().expect("stdin lock");
        let Some(tx) = stdin.tx.clone() else {
            return Err(StdinRefusal::Closed);
        };
        if stdin.window_start.elapsed() >= Duration::from_secs(1) {
            stdin.window_start = Instant::now();
            stdin.frames_in_window = 0;
        }
        if stdin.frames_in_window >= frames_per_sec {
            return Err(StdinRefusal::Rate);
        }
        let len = chunk.len();
        if self.pending.load(Ordering::SeqCst) + len > pending_cap {
            return Err(StdinRefusal::Pending { cap: pending_cap });
        }
        stdin.frames_in_window += 1;
        self.pending.fetch_add(len, Ordering::SeqCst);
        if tx.send(chunk).is_err() {
            self.pending.fetch_sub(len, Ordering::SeqCst);
            return Err(StdinRefusal::Closed);
        }
        Ok(())
    }

    /// `POST /stdin/close`: EOF once what was accepted has been delivered.
    pub fn close_stdin(&self) {
        self.stdin.lock().expect("stdin lock").tx = None;
    }

    /// For the worker: a channel of stdin chunks for the runner, fed from the job's queue; a chunk
    /// stops counting as pending once the runner has taken it.
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

/// Splits a byte stream into UTF-8 strings of at most `max` bytes, never inside a character.
#[derive(Debug)]
pub struct Utf8Chunker {
    carry: Vec<u8>,
    max: usize,
}

impl Utf8Chunker {
    /// A chunker of pieces up to `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            carry: Vec::new(),
            max,
        }
    }

    /// Adds bytes; returns the complete pieces.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.carry.extend_from_slice(bytes);
        let text = match std::str::from_utf8(&self.carry) {
            Ok(t) => t.to_string(),
            Err(e) if e.error_len().is_none() => {
                // An incomplete character at the end waits for the next bytes.
                let valid = e.valid_up_to();
                let t = String::from_utf8_lossy(&self.carry[..valid]).into_owned();
                self.carry.drain(..valid);
                return split(&t, self.max);
            }
            Err(_) => String::from_utf8_lossy(&self.carry).into_owned(),
        };
        self.carry.clear();
        split(&text, self.max)
    }

    /// What is left at the end of the stream.
    pub fn finish(&mut self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        split(&text, self.max)
    }
}

fn split(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        out.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    out
}

/// A bounded FIFO of finished jobs' ids, so memory holds only the recent ones.
#[derive(Debug, Default)]
pub struct Recent {
    ids: VecDeque<(Instant, String)>,
}

impl Recent {
    /// Remembers that `id` finished now.
    pub fn push(&mut self, id: String) {
        self.ids.push_back((Instant::now(), id));
    }

    /// Ids that finished more than `keep` ago.
    pub fn expired(&mut self, keep: Duration) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.ids.front() {
            if at.elapsed() < keep {
                break;
            }
            if let Some((_, id)) = self.ids.pop_front() {
                out.push(id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_never_split_a_character_nor_exceed_the_size() {
        let mut c = Utf8Chunker::new(4);
        let bytes = "a✓bc日".as_bytes();
        let mut out = Vec::new();
        for b in bytes {
            out.extend(c.push(&[*b]));
        }
        out.extend(c.finish());
        assert_eq!(out.concat(), "a✓bc日");
        assert!(out.iter().all(|s| s.len() <= 4));
        let mut c = Utf8Chunker::new(8192);
        let big = "é".repeat(5000);
        let pieces = c.push(big.as_bytes());
        assert!(pieces.iter().all(|p| p.len() <= 8192));
        assert_eq!(pieces.concat(), big);
    }
}
