//! Creating and destroying a sandbox from the host side: `clone3` into new user, mount, PID, network,
//! IPC and UTS namespaces (and straight into the sandbox's v2 cgroup), uid/gid maps onto an
//! unprivileged host range, v1 cgroup attachment while the child waits, then `execveat` of the warden.
//!
//! This code runs in a multi-threaded server, so the cloned child does only raw syscalls between
//! `clone3` and `execveat`; everything it needs is prepared before the clone.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::cgroup::{CgroupError, CgroupLayout, CgroupLimits, CgroupParent, SandboxCgroup};
use crate::protocol::{self, read_full, write_all, Reply, Request, WardenConfig};
use crate::warden::{CONTROL_FD, WARDEN_ARG};

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// How long the warden may take to build its root and answer.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Host uids handed out per sandbox: one for the warden (root inside), one for programs.
const UIDS_PER_SANDBOX: u32 = 2;
/// How many sandboxes get distinct host uid pairs before the range wraps.
const UID_SLOTS: u32 = 1 << 20;

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
    /// First host uid of the range sandboxes map onto.
    pub uid_base: u32,
}

/// The host side of sandbox creation: Kiln's cgroup parent, the warden binary, uid allocation.
#[derive(Debug)]
pub struct Jail {
    layout: CgroupLayout,
    parent: CgroupParent,
    exe: OwnedFd,
    uid_base: u32,
    next_slot: AtomicU32,
}

/// What a new sandbox looks like.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// A unique name (the cgroup directory name).
    pub id: String,
    /// What the warden builds.
    pub warden: WardenConfig,
    /// The sandbox's cgroup limits.
    pub limits: CgroupLimits,
}

/// A live sandbox: its warden, control socket and cgroup.
#[derive(Debug)]
pub struct SandboxHandle {
    id: String,
    pid: i32,
    pidfd: OwnedFd,
    control: Option<OwnedFd>,
    cgroup: Option<SandboxCgroup>,
    host_uid: u32,
    host_gid: u32,
    landlock_abi: Option<u32>,
    reaped: bool,
}

impl Jail {
    /// Detects the cgroup layout, prepares Kiln's parent cgroup and opens the warden binary.
    pub fn new(cfg: &JailConfig) -> Result<Self, SandboxError> {
        let layout = CgroupLayout::detect()?;
        let parent = layout.prepare(&cfg.cgroup_name)?;
        // Groups left by a Kiln process that died before it could remove them.
        let swept =
            parent.sweep_matching(|name| owner_pid(name).is_some_and(|pid| !pid_alive(pid)))?;
        if swept > 0 {
            tracing::info!(swept, "removed sandbox cgroups of dead Kiln processes");
        }
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
            parent,
            exe,
            uid_base: cfg.uid_base,
            next_slot: AtomicU32::new(std::process::id() % UID_SLOTS),
        })
    }

    /// The name of a new sandbox: it starts with the creating process's pid, so a later Kiln can
    /// tell a leftover of a dead process from a live neighbour's sandbox.
    pub fn sandbox_name(serial: u64) -> String {
        format!("s{}-{serial}", std::process::id())
    }

    /// The detected cgroup layout.
    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// Kiln's parent cgroup.
    pub fn cgroup_parent(&self) -> &CgroupParent {
        &self.parent
    }

    /// Creates a sandbox and waits until its warden is ready.
    pub fn create(&self, spec: &SandboxSpec) -> Result<SandboxHandle, SandboxError> {
        let cgroup = self.parent.create(&spec.id, &spec.limits)?;
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed) % UID_SLOTS;
        let host_root = self.uid_base + slot * UIDS_PER_SANDBOX;
        let host_uid = host_root + 1;
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
        let v2 = cgroup.v2_dir_fd().map(|fd| fd.as_raw_fd());
        let (pid, pidfd) = sys("clone3", clone_sandbox(v2, &child))?;
        drop(go_read);
        drop(err_write);
        drop(warden_end);
        let mut handle = SandboxHandle {
            id: spec.id.clone(),
            pid,
            pidfd,
            control: Some(engine_end),
            cgroup: Some(cgroup),
            host_uid,
            host_gid: host_uid,
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
                cg.attach(pid, v2.is_some())?;
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
        (self.host_uid, self.host_gid)
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
            cg.remove()?;
        }
        Ok(())
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

/// Clones the sandbox's first process. In the child it never returns.
fn clone_sandbox(v2_cgroup: Option<RawFd>, child: &ChildArgs) -> std::io::Result<(i32, OwnedFd)> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
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
    if let Some(fd) = v2_cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: args is a valid clone_args of the size passed. Without CLONE_VM the child gets a copy
    // of this address space, and runs only `child_main`, which makes raw syscalls and never returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
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

/// The pid in a name made by [`Jail::sandbox_name`].
fn owner_pid(name: &str) -> Option<i32> {
    name.strip_prefix('s')?.split_once('-')?.0.parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_names_carry_the_owner_pid() {
        let name = Jail::sandbox_name(7);
        assert_eq!(owner_pid(&name), Some(std::process::id() as i32));
        assert_eq!(owner_pid("kiln-test"), None);
        assert_eq!(owner_pid("sx-1"), None);
        assert!(pid_alive(std::process::id() as i32));
    }
}
