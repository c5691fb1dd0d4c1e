//! The engine: Kiln's jail on the host, sandboxes as async objects, and the warm pool.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kiln_jail::cgroup::{CgroupLimits, SandboxCgroup};
use kiln_jail::protocol::{Reply, Request, SpawnRequest, WardenConfig};
use kiln_jail::sandbox::{Jail, JailConfig, SandboxError, SandboxHandle, SandboxSpec};
use kiln_jail::uids::UidRange;

use crate::control::{Answer, Control, WardenGone};
use crate::limits::{Accounting, Limits, Network, SandboxShape};
use crate::pool::Pool;
use crate::process::{HostStdio, Process};
use crate::pty::TtySize;

/// The uid and gid programs run as inside every sandbox.
pub const SANDBOX_UID: u32 = 1000;

/// The OOM score of every sandboxed program: the highest, so that when a sandbox runs out of
/// memory the kernel kills one of its programs, never its warden (whose score stays the
/// service's), and in a host-wide shortage sandboxed code goes before the host's own processes.
/// Raising a score needs no privilege; lowering it below the service's does.
pub const PROGRAM_OOM_SCORE_ADJ: i32 = 1000;

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Creating or destroying a sandbox failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The warden is gone (the sandbox was killed or crashed).
    #[error("the sandbox's warden is gone")]
    WardenGone,
    /// The warden refused a request.
    #[error("{0}")]
    Warden(String),
    /// The warden could not start a process: no such program, a working directory that is not
    /// there, an exec the kernel refused. The sandbox is fine.
    #[error("{0}")]
    NotStarted(String),
    /// A host-side I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A file path given for the sandbox is not acceptable.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path.
        path: String,
        /// Why.
        reason: crate::files::PathProblem,
    },
}

impl From<WardenGone> for EngineError {
    fn from(_: WardenGone) -> Self {
        EngineError::WardenGone
    }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let what = what.into();
    move |source| EngineError::Io { what, source }
}

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The kiln binary, which runs the warden.
    pub warden_exe: PathBuf,
    /// Name of Kiln's cgroup under the service's own.
    pub cgroup_name: String,
    /// The host uids sandboxes map onto.
    pub uids: UidRange,
    /// Where the locks of the uid blocks live (shared by every Kiln process of the host).
    pub uid_lock_dir: PathBuf,
    /// How many ready sandboxes the pool keeps (0: no pool).
    pub pool_size: usize,
    /// The shape of pooled sandboxes: a request for this shape takes one.
    pub pool_shape: SandboxShape,
    /// How many ready long-lived sandboxes ([`Engine::create`]) a second pool keeps once the
    /// first is asked for (0: none). It starts on first use, so an engine that only runs jobs
    /// never builds one.
    pub environment_pool_size: usize,
    /// Their shape: a creation of this shape without extra mounts takes one.
    pub environment_pool_shape: SandboxShape,
}

impl EngineConfig {
    /// Defaults for a warden binary at `warden_exe`.
    pub fn new(warden_exe: impl Into<PathBuf>) -> Self {
        Self {
            warden_exe: warden_exe.into(),
            cgroup_name: "kiln".into(),
            uids: UidRange::default(),
            uid_lock_dir: PathBuf::from(kiln_jail::uids::DEFAULT_LOCK_DIR),
            pool_size: 0,
            pool_shape: SandboxShape::default(),
            environment_pool_size: 0,
            environment_pool_shape: SandboxShape::default(),
        }
    }
}

/// The shared part of the engine, used by the pool's refill tasks too.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) jail: Jail,
    next_id: AtomicU64,
    retiring: Retiring,
}

/// Sandboxes being destroyed in the background, so callers that must not leave any behind (a CLI
/// about to exit, a test counting cgroups) can wait for them.
#[derive(Debug, Default)]
struct Retiring {
    count: AtomicU64,
    done: tokio::sync::Notify,
}

impl Shared {
    /// Creates a sandbox on the calling (blocking) thread.
    pub(crate) fn create_blocking(
        &self,
        shape: &SandboxShape,
        limits: &CgroupLimits,
        ro_binds: &[(PathBuf, PathBuf)],
    ) -> Result<SandboxHandle, SandboxError> {
        let id = Jail::sandbox_name(self.next_id.fetch_add(1, Ordering::Relaxed));
        let spec = SandboxSpec {
            id,
            warden: WardenConfig {
                hostname: "kiln".into(),
                tmp_bytes: shape.tmp_bytes,
                workspace_bytes: shape.workspace_bytes,
                ro_binds: ro_binds.to_vec(),
                volumes: shape.volumes.iter().map(PathBuf::from).collect(),
                network: shape.network != Network::None,
                inotify: shape.inotify,
                ptys_max: shape.ptys,
                oom_score_adj: PROGRAM_OOM_SCORE_ADJ,
                sandbox_uid: SANDBOX_UID,
                sandbox_gid: SANDBOX_UID,
            },
            limits: limits.clone(),
            accounting: shape.accounting,
        };
        self.jail.create(&spec)
    }
}

/// Kiln's engine.
#[derive(Debug, Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    pool: Option<Arc<Pool>>,
    pool_shape: SandboxShape,
    environments: Arc<EnvironmentPool>,
}

/// The pool of long-lived sandboxes, started on first use.
#[derive(Debug)]
struct EnvironmentPool {
    size: usize,
    shape: SandboxShape,
    pool: std::sync::OnceLock<Arc<Pool>>,
}

impl Engine {
    /// Prepares the host side (cgroups, the warden binary) and starts the pool. Needs a tokio runtime.
    pub fn new(cfg: EngineConfig) -> Result<Self, EngineError> {
        let jail = Jail::new(&JailConfig {
            warden_exe: cfg.warden_exe.clone(),
            cgroup_name: cfg.cgroup_name.clone(),
            uids: cfg.uids,
            uid_lock_dir: cfg.uid_lock_dir.clone(),
        })?;
        let shared = Arc::new(Shared {
            jail,
            next_id: AtomicU64::new(0),
            retiring: Retiring::default(),
        });
        let pool = (cfg.pool_size > 0)
            .then(|| Pool::start(shared.clone(), cfg.pool_size, cfg.pool_shape.clone()));
        Ok(Self {
            shared,
            pool,
            pool_shape: cfg.pool_shape,
            environments: Arc::new(EnvironmentPool {
                size: cfg.environment_pool_size,
                shape: cfg.environment_pool_shape,
                pool: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Waits until every sandbox handed to [`Engine::retire`] is destroyed.
    pub async fn settle(&self) {
        loop {
            let done = self.shared.retiring.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.shared.retiring.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }

    /// Kills everything in `sandbox` now and destroys it in the background: a run's result need
    /// not wait for the cgroup removal and the reaping. [`Engine::settle`] waits for it.
    pub fn retire(&self, sandbox: Sandbox) {
        sandbox.kill_all();
        let shared = self.shared.clone();
        shared.retiring.count.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            if let Err(e) = sandbox.destroy().await {
                tracing::warn!(error = %e, "destroying a sandbox");
            }
            shared.retiring.count.fetch_sub(1, Ordering::SeqCst);
            shared.retiring.done.notify_waiters();
        });
    }

    /// The jail (for `kiln doctor` and tests).
    pub fn jail(&self) -> &Jail {
        &self.shared.jail
    }

    /// How many pooled sandboxes are ready now.
    pub fn pool_ready(&self) -> usize {
        self.pool.as_ref().map_or(0, |p| p.ready())
    }

    /// How many pooled long-lived sandboxes are ready now.
    pub fn environments_ready(&self) -> usize {
        self.environments.pool.get().map_or(0, |p| p.ready())
    }

    /// Waits until the pool holds `n` ready sandboxes (or has none configured).
    pub async fn pool_wait_ready(&self, n: usize) {
        if let Some(pool) = &self.pool {
            pool.wait_ready(n).await;
        }
    }

    /// A fresh sandbox of `shape`: from the pool when one fits, otherwise created now. Each run
    /// in it sets the sandbox's cgroup limits to its own (see [`crate::runner::run`]).
    pub async fn sandbox(&self, shape: &SandboxShape) -> Result<Sandbox, EngineError> {
        if let Some(pool) = &self.pool {
            if *shape == self.pool_shape {
                if let Some(handle) = pool.take() {
                    handle
                        .set_nice(0)
                        .map_err(io_err("reset the warden's priority"))?;
                    return Sandbox::from_handle(handle, Limits::default().cgroup());
                }
            }
        }
        self.sandbox_cold(shape).await
    }

    /// A sandbox created now, never from the pool.
    pub async fn sandbox_cold(&self, shape: &SandboxShape) -> Result<Sandbox, EngineError> {
        self.create(shape, &Limits::default(), &[]).await
    }

    /// A sandbox created now with extra read-only bind mounts (host path, path inside), such as a
    /// toolchain's files outside `/usr`.
    pub async fn sandbox_with_binds(
        &self,
        shape: &SandboxShape,
        ro_binds: &[(PathBuf, PathBuf)],
    ) -> Result<Sandbox, EngineError> {
        self.create(shape, &Limits::default(), ro_binds).await
    }

    /// A sandbox created now whose processes together may use `total` (its memory, processes and
    /// CPU share): the shape of a long-lived environment, whose processes each have a group of
    /// their own inside.
    pub async fn create(
        &self,
        shape: &SandboxShape,
        total: &Limits,
        ro_binds: &[(PathBuf, PathBuf)],
    ) -> Result<Sandbox, EngineError> {
        let envs = &self.environments;
        if envs.size > 0 && ro_binds.is_empty() && *shape == envs.shape {
            let pool = envs
                .pool
                .get_or_init(|| Pool::start(self.shared.clone(), envs.size, envs.shape.clone()));
            if let Some(handle) = pool.take() {
                handle
                    .set_nice(0)
                    .map_err(io_err("reset the warden's priority"))?;
                let sandbox = Sandbox::from_handle(handle, Limits::default().cgroup())?;
                sandbox.set_limits(total)?;
                return Ok(sandbox);
            }
        }
        let shared = self.shared.clone();
        let shape = shape.clone();
        let cgroup = total.cgroup();
        let binds = ro_binds.to_vec();
        let limits = cgroup.clone();
        let handle =
            tokio::task::spawn_blocking(move || shared.create_blocking(&shape, &limits, &binds))
                .await
                .map_err(|e| EngineError::Warden(format!("sandbox creation panicked: {e}")))??;
        Sandbox::from_handle(handle, cgroup)
    }
}

/// A live sandbox.
#[derive(Debug)]
pub struct Sandbox {
    handle: Option<SandboxHandle>,
    control: Arc<Control>,
    root: PathBuf,
    host_ids: (u32, u32),
    accounting: Accounting,
    /// The sandbox group's limits as last written, so a run asking for the same skips the writes.
    limits: std::sync::Mutex<CgroupLimits>,
    next_group: AtomicU64,
}

impl Sandbox {
    pub(crate) fn from_handle(
        mut handle: SandboxHandle,
        limits: CgroupLimits,
    ) -> Result<Self, EngineError> {
        let fd = handle.take_control().ok_or(EngineError::WardenGone)?;
        let control = Arc::new(Control::new(fd).map_err(io_err("control socket"))?);
        Ok(Self {
            root: handle.root_path(),
            host_ids: handle.host_ids(),
            accounting: handle.accounting(),
            handle: Some(handle),
            control,
            limits: std::sync::Mutex::new(limits),
            next_group: AtomicU64::new(1),
        })
    }

    /// How the sandbox's processes are accounted.
    pub fn accounting(&self) -> Accounting {
        self.accounting
    }

    /// The sandbox's name.
    pub fn id(&self) -> &str {
        self.handle.as_ref().map_or("", |h| h.id())
    }

    /// The warden's host pid.
    pub fn warden_pid(&self) -> i32 {
        self.handle.as_ref().map_or(0, |h| h.pid())
    }

    /// The sandbox's root as seen from the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host uid and gid of the sandbox's user.
    pub fn host_ids(&self) -> (u32, u32) {
        self.host_ids
    }

    /// The Landlock ABI applied inside.
    pub fn landlock_abi(&self) -> Option<u32> {
        self.handle.as_ref().and_then(|h| h.landlock_abi())
    }

    /// The sandbox's cgroup.
    pub fn cgroup(&self) -> Option<&SandboxCgroup> {
        self.handle.as_ref().and_then(|h| h.cgroup())
    }

    /// Gives the sandbox's own group `limits` for the run about to start (unless it has them
    /// already) and starts a new peak-memory measurement. For one run at a time: see
    /// [`Accounting::Sandbox`].
    pub fn set_limits(&self, limits: &Limits) -> Result<(), EngineError> {
        let Some(cg) = self.cgroup() else {
            return Ok(());
        };
        let wanted = limits.cgroup();
        let mut current = self.limits.lock().expect("limits lock");
        if *current != wanted {
            cg.set_limits(&wanted)
                .map_err(|e| EngineError::Sandbox(e.into()))?;
            *current = wanted;
        }
        cg.reset_peak()
            .map_err(|e| EngineError::Sandbox(e.into()))?;
        Ok(())
    }

    /// Starts `argv` in the sandbox with piped stdio, or on a terminal of `tty`'s size when
    /// `req.tty` is set; `channel`, when given, is the process's fd 3. In a sandbox of
    /// [`Accounting::PerProcess`], the process gets a group of its own with `limits`' memory,
    /// process and CPU caps, which it joins before anything else; otherwise it runs in the
    /// sandbox's group.
    pub async fn spawn(
        &self,
        req: SpawnRequest,
        limits: &Limits,
        tty: Option<TtySize>,
        channel: Option<OwnedFd>,
    ) -> Result<Process, EngineError> {
        let (group, procs) = match (self.accounting, self.cgroup()) {
            (Accounting::PerProcess, Some(cg)) => {
                let (group, procs) = self.process_group(cg, limits).await?;
                (Some(group), procs)
            }
            _ => (None, Vec::new()),
        };
        let req = SpawnRequest {
            tty: tty.is_some(),
            channel: channel.is_some(),
            ..req
        };
        let (child, host) = match tty {
            None => {
                let (stdin_r, stdin_w) = host_pipe(false)?;
                let (stdout_r, stdout_w) = host_pipe(true)?;
                let (stderr_r, stderr_w) = host_pipe(true)?;
                (
                    [stdin_r, stdout_w, stderr_w],
                    HostStdio::Pipes([stdin_w, stdout_r, stderr_r]),
                )
            }
            Some(size) => {
                let (master, slave) = self.open_pty(size)?;
                let dup = |fd: &OwnedFd| {
                    fd.try_clone()
                        .map_err(io_err("duplicate the terminal's slave"))
                };
                ([dup(&slave)?, dup(&slave)?, slave], HostStdio::Tty(master))
            }
        };
        let mut fds: Vec<_> = child.iter().map(AsFd::as_fd).collect();
        fds.extend(channel.as_ref().map(AsFd::as_fd));
        fds.extend(procs.iter().map(AsFd::as_fd));
        let answer = self.control.request(&Request::Spawn(req), &fds).await;
        drop(fds);
        // The process holds its ends now; the host must not, or it never sees their end.
        drop((child, channel, procs));
        match answer? {
            Answer::Spawned { pid, exit } => {
                Process::new(pid, host, exit, self.control.clone(), group)
                    .map_err(io_err("process stdio"))
            }
            Answer::Reply(Reply::Failed { message, .. }) => Err(EngineError::NotStarted(message)),
            Answer::Reply(other) => Err(EngineError::Warden(format!("unexpected reply {other:?}"))),
        }
    }

    /// A new group of the sandbox's for one process, with the process's caps, and its
    /// `cgroup.procs` files for the process to join.
    async fn process_group(
        &self,
        cg: &SandboxCgroup,
        limits: &Limits,
    ) -> Result<(SandboxCgroup, Vec<OwnedFd>), EngineError> {
        let name = format!("p{}", self.next_group.fetch_add(1, Ordering::Relaxed));
        let parent = cg.as_parent();
        let caps = limits.cgroup();
        tokio::task::spawn_blocking(move || {
            let group = parent.create(&name, &caps)?;
            let procs = group.open_procs_files()?;
            Ok((group, procs))
        })
        .await
        .map_err(|e| EngineError::Warden(format!("process group creation panicked: {e}")))?
        .map_err(|e: kiln_jail::cgroup::CgroupError| EngineError::Sandbox(e.into()))
    }

    /// Kills every process in the sandbox but its warden, daemons included, and returns once they
    /// are all gone.
    pub async fn kill_processes(&self) -> Result<(), EngineError> {
        match self.control.request(&Request::KillAll, &[]).await? {
            Answer::Reply(Reply::KilledAll) => Ok(()),
            Answer::Reply(Reply::Failed { message, .. }) => Err(EngineError::Warden(message)),
            other => Err(EngineError::Warden(format!("unexpected answer {other:?}"))),
        }
    }

    /// Kills everything in the sandbox now.
    pub fn kill_all(&self) {
        if let Some(h) = &self.handle {
            h.kill();
        }
    }

    /// Kills everything and removes the sandbox.
    pub async fn destroy(mut self) -> Result<(), EngineError> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || handle.destroy())
            .await
            .map_err(|e| EngineError::Warden(format!("destroy panicked: {e}")))??;
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.kill();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn_blocking(move || drop(handle));
                }
                Err(_) => drop(handle),
            }
        }
    }
}

/// A pipe whose host end is non-blocking. `host_reads`: the host keeps the read end.
/// Returns (read end, write end).
fn host_pipe(host_reads: bool) -> Result<(OwnedFd, OwnedFd), EngineError> {
    let (r, w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| EngineError::Io {
            what: "pipe".into(),
            source: e.into(),
        })?;
    let host = if host_reads { &r } else { &w };
    rustix::fs::fcntl_setfl(host, rustix::fs::OFlags::NONBLOCK).map_err(|e| EngineError::Io {
        what: "pipe nonblock".into(),
        source: e.into(),
    })?;
    Ok((r, w))
}
