//! The warm pool: sandboxes created ahead of time (namespaces, cgroup, rootfs and warden ready). A
//! run takes one and the pool refills in the background. A sandbox is handed out once and never
//! comes back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_jail::sandbox::SandboxHandle;
use tokio::sync::Notify;

use crate::engine::Shared;
use crate::limits::{Limits, SandboxShape};

/// How many sandboxes are created at once while refilling (2 cores: more would only queue).
const REFILL_WORKERS: usize = 2;

/// How long after a take the refill starts. Building a sandbox takes a few ms of CPU and briefly
/// holds kernel locks that fork and exit also need (cgroup attach); started at once, it lands on the
/// run that just took a sandbox, doubling its latency on a 2-core host (measured with `bench/run`).
const REFILL_DELAY: Duration = Duration::from_millis(30);

/// The nice value pooled sandboxes are built at.
pub(crate) const BACKGROUND_NICE: i32 = 10;

/// While alive, the calling thread runs at [`BACKGROUND_NICE`] (nice is per thread on Linux).
struct Background;

impl Background {
    fn enter() -> Self {
        set_thread_nice(BACKGROUND_NICE);
        Background
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        set_thread_nice(0);
    }
}

fn set_thread_nice(nice: i32) {
    // SAFETY: gettid and setpriority take integers; PRIO_PROCESS with a tid changes that thread only.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
}

/// The warm pool.
#[derive(Debug)]
pub struct Pool {
    ready: Mutex<VecDeque<SandboxHandle>>,
    size: usize,
    wanted: Arc<Notify>,
    filled: Notify,
    /// Sandboxes being built: with the ready ones they must not exceed the size.
    building: std::sync::atomic::AtomicUsize,
}

impl Pool {
    pub(crate) fn start(shared: Arc<Shared>, size: usize, shape: SandboxShape) -> Arc<Self> {
        let pool = Arc::new(Self {
            ready: Mutex::new(VecDeque::with_capacity(size)),
            size,
            wanted: Arc::new(Notify::new()),
            filled: Notify::new(),
            building: std::sync::atomic::AtomicUsize::new(0),
        });
        for _ in 0..REFILL_WORKERS.min(size) {
            let pool = Arc::downgrade(&pool);
            let shared = shared.clone();
            let shape = shape.clone();
            tokio::spawn(async move {
                loop {
                    let Some(p) = pool.upgrade() else { return };
                    let wanted_notify = p.wanted.clone();
                    // Registered before the check, so a take() in between is not missed.
                    let wanted = wanted_notify.notified();
                    tokio::pin!(wanted);
                    wanted.as_mut().enable();
                    if !p.reserve_build() {
                        drop(p);
                        wanted.await;
                        continue;
                    }
                    drop(p);
                    let (s, shape) = (shared.clone(), shape.clone());
                    let made = tokio::task::spawn_blocking(move || {
                        // Refills must not steal the CPU from the runs they are getting ready
                        // for: the sandbox is built at a lower priority (the warden inherits it
                        // and gets it back when it is taken).
                        let _background = Background::enter();
                        s.create_blocking(&shape, &Limits::default().cgroup(), &[])
                    })
                    .await;
                    let Some(p) = pool.upgrade() else { return };
                    match made {
                        Ok(Ok(handle)) => {
                            p.ready.lock().expect("pool lock").push_back(handle);
                            p.building.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            p.filled.notify_waiters();
                        }
                        Ok(Err(e)) => {
                            p.building.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            tracing::warn!(error = %e, "pool could not create a sandbox");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => {
                            p.building.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            tracing::error!(error = %e, "pool refill task failed");
                        }
                    }
                }
            });
        }
        pool
    }

    /// Takes a ready sandbox, if there is one, and asks for a refill after [`REFILL_DELAY`].
    pub(crate) fn take(&self) -> Option<SandboxHandle> {
        let got = self.ready.lock().expect("pool lock").pop_front();
        let wanted = self.wanted.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REFILL_DELAY).await;
            wanted.notify_waiters();
        });
        got
    }

    /// Claims the building of one more sandbox, unless ready and building ones fill the pool.
    fn reserve_build(&self) -> bool {
        let ready = self.ready.lock().expect("pool lock");
        let building = self.building.load(std::sync::atomic::Ordering::SeqCst);
        if ready.len() + building >= self.size {
            return false;
        }
        self.building
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        true
    }

    /// How many are ready.
    pub fn ready(&self) -> usize {
        self.ready.lock().expect("pool lock").len()
    }

    /// Waits until at least `n` (capped at the pool size) are ready.
    pub async fn wait_ready(&self, n: usize) {
        let n = n.min(self.size);
        loop {
            let filled = self.filled.notified();
            tokio::pin!(filled);
            filled.as_mut().enable();
            if self.ready() >= n {
                return;
            }
            filled.await;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Wake the refill tasks so they see the pool is gone and stop.
        self.wanted.notify_waiters();
    }
}
