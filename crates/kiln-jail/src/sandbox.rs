//! Creating and destroying a sandbox from the host side: `clone3` into new user, mount, PID, network,
//! IPC and UTS namespaces, uid/gid maps onto a pair of host uids of this process's block, cgroup
//! attachment while the child waits, then `execveat` of the warden.
//!
//! The clone is made with the thread's effective uid set to the sandbox's root host uid, so that
//! uid owns the new user namespace: the kernel charges the per-user counters of everything in the
//! sandbox (inotify instances and watches, queued signals, nested namespaces) to that uid, never to
//! the host's root, and one sandbox cannot exhaust them for the host or the other sandboxes.
//!
//! This code runs in a multi-threaded server, so the cloned child does only raw syscalls between
//! `clone3` and `execveat`; everything it needs is prepared before the clone.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use crate::cgroup::{CgroupError, CgroupLayout, CgroupLimits, CgroupParent, SandboxCgroup};
use crate::protocol::{self, read_full, write_all, Reply, Request, WardenConfig};
use crate::uids::{UidBlock, UidError, UidLease, UidRange};
use crate::warden::{CONTROL_FD, WARDEN_ARG};

/// How long the warden may take to build its root and answer.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Errors while creating or destroying a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A host-side syscall failed.
    #[error("sandbox {step}: {source}")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// The errno.
        source: std::io::Error,
    },
    /// The cloned child failed before it became the warden.
    #[error("sandbox child failed at {step}: {source}")]
    Child {
        /// The child's step.
        step: &'static str,
        /// The errno.
        source: std::io::Error,
    },
    /// The warden reported a setup failure.
    #[error("warden setup failed at {step}: {message}")]
    Warden {
        /// Its step.
        step: String,
        /// Its message.
        message: String,
    },
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// No host uids.
    #[error(transparent)]
    Uids(#[from] UidError),
    /// Every uid slot of this process's block is in use.
    #[error(
        "all {} sandbox uid slots of this Kiln process are in use",
        crate::uids::SLOTS_PER_BLOCK
    )]
    UidsInUse,
    /// The control socket failed.
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
}

fn sys<T>(step: &'static str, r: std::io::Result<T>) -> Result<T, SandboxError> {
    r.map_err(|source| SandboxError::Sys { step, source })
}

/// How the host side is configured, once per process.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// The kiln binary (it runs the warden when given [`WARDEN_ARG`]).
    pub warden_exe: PathBuf,
    /// Name of Kiln's parent cgroup under the service's own cgroup.
    pub cgroup_name: String,
    /// The host uids sandboxes map onto.
    pub uids: UidRange,
    /// Where the locks of the uid blocks live: shared by every Kiln process of the host.
    pub uid_lock_dir: PathBuf,
}

impl JailConfig {
    /// The defaults for a warden binary at `warden_exe`.
    pub fn new(warden_exe: impl Into<PathBuf>) -> Self {
        Self {
            warden_exe: warden_exe.into(),
            cgroup_name: "kiln".into(),
            uids: UidRange::default(),
            uid_lock_dir: PathBuf::from(crate::uids::DEFAULT_LOCK_DIR),
        }
    }
}

/// The host side of sandbox creation: this process's instance cgroup, the warden binary, its
/// block of host uids.
#[derive(Debug)]
pub struct Jail {
    layout: CgroupLayout,
    instance: CgroupParent,
    exe: OwnedFd,
    uids: std::sync::Arc<UidBlock>,
}

/// What a new sandbox looks like.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// A unique name (the cgroup directory name).
    pub id: String,
    /// What the warden builds.
    pub warden: WardenConfig,
    /// The sandbox's cgroup limits (all its processes together).
    pub limits: CgroupLimits,
    /// How its processes are accounted.
    pub accounting: Accounting,
}

/// How a sandbox's processes are accounted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accounting {
    /// By the sandbox's own group: right while one process (with what it starts) runs at a
    /// time, as in a one-shot job.
    #[default]
    Sandbox,
    /// Each process in a group of its own nested in the sandbox's, so several at once each get
    /// their own CPU time, peak memory and OOM kills, and a kill takes exactly its tree. The
    /// warden sits in a nested group of its own too (`warden`).
    PerProcess,
}

/// A live sandbox: its warden, control socket, cgroup and host uids.
#[derive(Debug)]
pub struct SandboxHandle {
    id: String,
    pid: i32,
    pidfd: OwnedFd,
    control: Option<OwnedFd>,
    cgroup: Option<SandboxCgroup>,
    warden_group: Option<SandboxCgroup>,
    accounting: Accounting,
    uids: UidLease,
    landlock_abi: Option<u32>,
    reaped: bool,
}

impl Jail {
    /// Detects the cgroup layout, prepares Kiln's parent cgroup and opens the warden binary.
    pub fn new(cfg: &JailConfig) -> Result<Self, SandboxError> {
        let layout = CgroupLayout::detect()?;
        let parent = layout.prepare(&cfg.cgroup_name)?;
        // Groups left by Kiln processes that died before they could remove them.
        let swept = parent.sweep_dead_instances()?;
        if swept > 0 {
            tracing::info!(swept, "removed sandbox cgroups of dead Kiln processes");
        }
        let instance = parent.claim_instance()?;
        let uids = UidBlock::claim(cfg.uids, &cfg.uid_lock_dir)?;
        let exe = sys(
            "open warden binary",
            rustix::fs::open(
                &cfg.warden_exe,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(Into::into),
        )?;
        Ok(Self {
            layout,
            instance,
            exe,
            uids,
        })
    }

    /// The name of a new sandbox (its cgroup's, unique within this process's instance).
    pub fn sandbox_name(serial: u64) -> String {
        format!("s{serial}")
    }

    /// The detected cgroup layout.
    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// This process's instance cgroup, the parent of its sandboxes' groups.
    pub fn cgroup_parent(&self) -> &CgroupParent {
        &self.instance
    }

    /// Creates a sandbox and waits until its warden is ready.
    pub fn create(&self, spec: &SandboxSpec) -> Result<SandboxHandle, SandboxError> {
        let uids = self.uids.lease().ok_or(SandboxError::UidsInUse)?;
        let cgroup = self.instance.create(&spec.id, &spec.limits)?;
        let host_root = uids.root();
        let host_uid = uids.user();
        let (engine_end, warden_end) = sys("socketpair", protocol::socketpair())?;
        let (go_read, go_write) = sys("pipe", pipe())?;
        let (err_read, err_write) = sys("pipe", pipe())?;
        let argv0 = CString::new("kiln-warden").expect("static string");
        let argv1 = CString::new(WARDEN_ARG).expect("static string");
        let argv = [argv0.as_ptr(), argv1.as_ptr(), std::ptr::null()];
        let env0 = CString::new("PATH=/usr/local/bin:/usr/bin:/bin").expect("static string");
        let envp = [env0.as_ptr(), std::ptr::null()];
        let empty = CString::new("").expect("static string");
        let dev_null = CString::new("/dev/null").expect("static string");
        let child = ChildArgs {
            go_read: go_read.as_raw_fd(),
            err_write: err_write.as_raw_fd(),
            control: warden_end.as_raw_fd(),
            exe: self.exe.as_raw_fd(),
            empty: empty.as_ptr(),
            dev_null: dev_null.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
        };
        let cloned = {
            let _owner = sys(
                "take the sandbox root's uid",
                NamespaceOwner::enter(host_root),
            )?;
            clone_sandbox(&child)
        };
        let (pid, pidfd) = sys("clone3", cloned)?;
        drop(go_read);
        drop(err_write);
        drop(warden_end);
        let mut handle = SandboxHandle {
            id: spec.id.clone(),
            pid,
            pidfd,
            control: Some(engine_end),
            cgroup: Some(cgroup),
            warden_group: None,
            accounting: spec.accounting,
            uids,
            landlock_abi: None,
            reaped: false,
        };
        let uid = spec.warden.sandbox_uid;
        let gid = spec.warden.sandbox_gid;
        let started = (|| {
            sys(
                "write uid_map",
                std::fs::write(
                    format!("/proc/{pid}/uid_map"),
                    format!("0 {host_root} 1\n{uid} {host_uid} 1\n"),
                ),
            )?;
            sys(
                "write gid_map",
                std::fs::write(
                    format!("/proc/{pid}/gid_map"),
                    format!("0 {host_root} 1\n{gid} {host_uid} 1\n"),
                ),
            )?;
            if let Some(cg) = &handle.cgroup {
                match spec.accounting {
                    Accounting::Sandbox => cg.attach(pid)?,
                    Accounting::PerProcess => {
                        // Before any process is in the group: a v2 group that hands controllers
                        // down may hold none itself.
                        cg.delegate()?;
                        let warden = cg.create_child("warden", &CgroupLimits::default())?;
                        warden.attach(pid)?;
                        handle.warden_group = Some(warden);
                    }
                }
            }
            sys("release child", write_all(&go_write, &[1]))?;
            drop(go_write);
            let mut report = [0u8; 8];
            let n = sys("read child report", read_full(&err_read, &mut report))?;
            if n != 0 {
                let step = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
                let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
                return Err(SandboxError::Child {
                    step: ChildStep::name(step),
                    source: std::io::Error::from_raw_os_error(errno),
                });
            }
            handle.setup(&spec.warden)
        })();
        match started {
            Ok(()) => Ok(handle),
            Err(e) => {
                let _ = handle.destroy_inner();
                Err(e)
            }
        }
    }
}

impl SandboxHandle {
    fn setup(&mut self, cfg: &WardenConfig) -> Result<(), SandboxError> {
        let control = self.control.as_ref().expect("control socket present");
        let _ = rustix::net::sockopt::set_socket_timeout(
            control,
            rustix::net::sockopt::Timeout::Recv,
            Some(SETUP_TIMEOUT),
        );
        protocol::send(control.as_fd(), &Request::Setup(cfg.clone()), &[])?;
        let mut buf = Vec::new();
        let (reply, _) = protocol::recv::<Reply>(control.as_fd(), &mut buf)?;
        let _ = rustix::net::sockopt::set_socket_timeout(
            control,
            rustix::net::sockopt::Timeout::Recv,
            None,
        );
        match reply {
            Reply::Ready { landlock_abi } => {
                self.landlock_abi = landlock_abi;
                Ok(())
            }
            Reply::Failed { step, message, .. } => Err(SandboxError::Warden { step, message }),
            other => Err(SandboxError::Warden {
                step: "setup".into(),
                message: format!("unexpected reply {other:?}"),
            }),
        }
    }

    /// The sandbox's name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The warden's pid on the host.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The control socket (for the engine's reader).
    pub fn take_control(&mut self) -> Option<OwnedFd> {
        self.control.take()
    }

    /// The control socket, borrowed.
    pub fn control(&self) -> Option<BorrowedFd<'_>> {
        self.control.as_ref().map(AsFd::as_fd)
    }

    /// The sandbox's cgroup.
    pub fn cgroup(&self) -> Option<&SandboxCgroup> {
        self.cgroup.as_ref()
    }

    /// The sandbox's root as seen from the host.
    pub fn root_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid))
    }

    /// The host uid and gid that programs in the sandbox run as (for files the host writes in).
    pub fn host_ids(&self) -> (u32, u32) {
        (self.uids.user(), self.uids.user())
    }

    /// The host uid (and gid) of the sandbox's root, which owns its user namespace.
    pub fn host_root(&self) -> u32 {
        self.uids.root()
    }

    /// The Landlock ABI the warden applies, if any.
    pub fn landlock_abi(&self) -> Option<u32> {
        self.landlock_abi
    }

    /// Sets the warden's nice value; processes it spawns afterwards inherit it.
    pub fn set_nice(&self, nice: i32) -> std::io::Result<()> {
        // SAFETY: setpriority with integers, on the warden's pid.
        let ret = unsafe { libc::setpriority(libc::PRIO_PROCESS, self.pid as libc::id_t, nice) };
        if ret == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Kills everything in the sandbox at once (it stays to be destroyed).
    pub fn kill(&self) {
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill();
        }
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
    }

    /// Kills everything, reaps the warden and removes the cgroup.
    pub fn destroy(mut self) -> Result<(), SandboxError> {
        self.destroy_inner()
    }

    fn destroy_inner(&mut self) -> Result<(), SandboxError> {
        self.control = None;
        if !self.reaped {
            self.kill();
            // The warden's exit waits for every process of its PID namespace to die.
            let _ = rustix::process::waitid(
                rustix::process::WaitId::PidFd(self.pidfd.as_fd()),
                rustix::process::WaitIdOptions::EXITED,
            );
            self.reaped = true;
        }
        if let Some(cg) = self.cgroup.take() {
            // Removes the nested groups too.
            cg.remove()?;
        }
        if let Some(warden) = self.warden_group.take() {
            warden.forget();
        }
        Ok(())
    }

    /// How the sandbox's processes are accounted.
    pub fn accounting(&self) -> Accounting {
        self.accounting
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        let _ = self.destroy_inner();
    }
}

/// What the cloned child needs, as raw values prepared before the clone.
struct ChildArgs {
    go_read: RawFd,
    err_write: RawFd,
    control: RawFd,
    exe: RawFd,
    empty: *const libc::c_char,
    dev_null: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// While alive, the calling thread's effective uid and gid are the sandbox root's host id, so a
/// user namespace it creates is owned by that id. Raw syscalls change this thread only (glibc's
/// wrappers would change every thread of the server); the real and saved ids stay 0, which is
/// what lets `drop` switch back and get the capabilities back.
struct NamespaceOwner;

impl NamespaceOwner {
    fn enter(id: u32) -> std::io::Result<Self> {
        let keep = u32::MAX; // -1: leave that id as it is
                             // SAFETY: setresgid with integers, on this thread only.
        if unsafe { libc::syscall(libc::SYS_setresgid, keep, id, keep) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above; the effective gid is switched first, while CAP_SETGID is still held.
        if unsafe { libc::syscall(libc::SYS_setresuid, keep, id, keep) } < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: back to gid 0, still with CAP_SETGID (the uid did not change).
            unsafe { libc::syscall(libc::SYS_setresgid, keep, 0u32, keep) };
            return Err(e);
        }
        Ok(NamespaceOwner)
    }
}

impl Drop for NamespaceOwner {
    fn drop(&mut self) {
        let keep = u32::MAX;
        // SAFETY: setresuid back to 0, allowed because the saved uid is 0; the permitted
        // capabilities become effective again, then CAP_SETGID allows the gid back.
        unsafe {
            libc::syscall(libc::SYS_setresuid, keep, 0u32, keep);
            libc::syscall(libc::SYS_setresgid, keep, 0u32, keep);
        }
    }
}

/// Clones the sandbox's first process. In the child it never returns.
fn clone_sandbox(child: &ChildArgs) -> std::io::Result<(i32, OwnedFd)> {
    let mut pidfd: RawFd = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_PIDFD) as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: args is a valid clone_args of the size passed. Without CLONE_VM the child gets a copy
    // of this address space, and runs only `child_main`, which makes raw syscalls and never returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if ret == 0 {
        child_main(child);
    }
    // SAFETY: CLONE_PIDFD stored a new pidfd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((ret as i32, pidfd))
}

/// The cloned child: waits for its maps and cgroups, enters its own cgroup namespace, puts the control
/// socket on fd 3 and execs the warden. Async-signal-safe.
fn child_main(a: &ChildArgs) -> ! {
    // The clone copied every fd of the server, among them other sandboxes' stdio pipes and control
    // sockets. Holding them while this child waits would delay their end-of-file, so they go now.
    close_all_but([a.go_read, a.err_write, a.control, a.exe]);
    // SAFETY: open of a NUL-terminated path; dup2 onto stdin and stdout with integer arguments.
    unsafe {
        let null = libc::open(a.dev_null, libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            if null > 2 {
                libc::close(null);
            }
        }
    }
    let mut byte = 0u8;
    // SAFETY: reading one byte into a local.
    let n = unsafe { libc::read(a.go_read, (&mut byte as *mut u8).cast(), 1) };
    if n != 1 {
        // The parent gave up on us.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(1) }
    }
    // The child still holds the host's root ids, which the new namespace does not map; taking the
    // namespace's root ids (now mapped onto the unprivileged host range) makes exec give the warden
    // its capabilities inside the namespace, and nothing outside it.
    // SAFETY: raw id syscalls with integer arguments and an empty group list.
    let ids = unsafe {
        libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) == 0
            && libc::syscall(libc::SYS_setresgid, 0, 0, 0) == 0
            && libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0
    };
    if !ids {
        child_fail(a.err_write, ChildStep::Ids);
    }
    // The cgroup namespace is entered only now, after the v1 attach, so its root is the sandbox's group.
    // SAFETY: unshare with an integer flag.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } < 0 {
        child_fail(a.err_write, ChildStep::CgroupNamespace);
    }
    let ret = if a.control == CONTROL_FD {
        // SAFETY: fcntl on an fd we own.
        unsafe { libc::fcntl(a.control, libc::F_SETFD, 0) }
    } else {
        // SAFETY: dup2 with integer arguments; the new fd 3 is not close-on-exec.
        unsafe { libc::dup2(a.control, CONTROL_FD) }
    };
    if ret < 0 {
        child_fail(a.err_write, ChildStep::ControlFd);
    }
    // Anything the server opened without CLOEXEC must not reach the warden.
    // SAFETY: close_range with integer arguments, marking fds close-on-exec.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            (CONTROL_FD + 1) as u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    // SAFETY: the pointers are NUL-terminated strings and arrays prepared before clone and still
    // mapped in this copy of the address space.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            a.exe,
            a.empty,
            a.argv,
            a.envp,
            libc::AT_EMPTY_PATH,
        )
    };
    child_fail(a.err_write, ChildStep::Exec)
}

/// Closes every fd from 3 up except `keep`. Async-signal-safe: no allocation.
fn close_all_but(mut keep: [RawFd; 4]) {
    keep.sort_unstable();
    let mut next: u32 = 3;
    for fd in keep {
        let Ok(fd) = u32::try_from(fd) else { continue };
        if fd >= next {
            if fd > next {
                // SAFETY: close_range with integer arguments closes fds this process owns.
                unsafe { libc::syscall(libc::SYS_close_range, next, fd - 1, 0u32) };
            }
            next = fd + 1;
        }
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0u32) };
}

/// The steps of the cloned child, reported with an errno when one fails.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
enum ChildStep {
    Ids = 1,
    CgroupNamespace,
    ControlFd,
    Exec,
}

impl ChildStep {
    fn name(step: u32) -> &'static str {
        match step {
            1 => "take the namespace's root ids",
            2 => "enter a new cgroup namespace",
            3 => "put the control socket on fd 3",
            4 => "execveat the warden",
            _ => "setup",
        }
    }
}

fn child_fail(err_write: RawFd, step: ChildStep) -> ! {
    let step = step as u32;
    let errno = std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&step.to_ne_bytes());
    buf[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: buf is valid for 8 bytes.
    unsafe { libc::write(err_write, buf.as_ptr().cast(), buf.len()) };
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(127) }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}
