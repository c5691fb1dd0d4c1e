//! Turning a forked child of the warden into the requested program: stdio, session, rlimits, the
//! sandbox uid, no capabilities and no_new_privs, then `execve`. Landlock and the seccomp filter
//! are already in force: the warden applied them to itself, and children inherit both.
//!
//! Everything that allocates happens in [`ExecPlan::new`], before fork. [`ExecPlan::exec_child`]
//! runs after fork and makes only raw syscalls; a failure is reported as a fixed-size record over a
//! close-on-exec pipe, so the warden learns the step and errno without the child allocating.

use std::ffi::{c_char, CString};
use std::os::fd::RawFd;

use crate::protocol::{Rlimit, SpawnRequest};

/// The step of the child's setup that failed, reported with its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ExecStep {
    /// Restoring signal dispositions and mask.
    Signals = 1,
    /// Joining the process's own cgroup.
    Cgroup,
    /// `setsid`.
    Session,
    /// Wiring stdin, stdout and stderr.
    Stdio,
    /// Taking the terminal on stdin as the session's controlling terminal.
    ControllingTty,
    /// Closing inherited descriptors.
    CloseFds,
    /// `chdir` into the working directory.
    Chdir,
    /// `setrlimit`.
    Rlimits,
    /// Raising the OOM score above the warden's.
    OomScore,
    /// Dropping the capability bounding and ambient sets.
    Capabilities,
    /// Switching to the sandbox uid and gid.
    Identity,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// `execve`.
    Exec,
}

impl ExecStep {
    /// Decodes a step number from the error pipe.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u32 == v)
    }

    const ALL: [ExecStep; 13] = [
        ExecStep::Signals,
        ExecStep::Cgroup,
        ExecStep::Session,
        ExecStep::Stdio,
        ExecStep::ControllingTty,
        ExecStep::CloseFds,
        ExecStep::Chdir,
        ExecStep::Rlimits,
        ExecStep::OomScore,
        ExecStep::Capabilities,
        ExecStep::Identity,
        ExecStep::NoNewPrivs,
        ExecStep::Exec,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            ExecStep::Signals => "signals",
            ExecStep::Cgroup => "join cgroup",
            ExecStep::Session => "setsid",
            ExecStep::Stdio => "stdio",
            ExecStep::ControllingTty => "controlling tty",
            ExecStep::CloseFds => "close fds",
            ExecStep::Chdir => "chdir",
            ExecStep::Rlimits => "rlimits",
            ExecStep::OomScore => "oom_score_adj",
            ExecStep::Capabilities => "drop capabilities",
            ExecStep::Identity => "set uid/gid",
            ExecStep::NoNewPrivs => "no_new_privs",
            ExecStep::Exec => "execve",
        }
    }
}

/// Why a spawn request could not be turned into a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An argument, variable or path held a NUL byte.
    #[error("{what} contains a NUL byte")]
    Nul {
        /// Which field.
        what: &'static str,
    },
    /// argv was empty.
    #[error("argv is empty")]
    EmptyArgv,
    /// The program was not found on PATH.
    #[error("{0}: command not found")]
    NotFound(String),
}

/// Everything the child needs, prepared before fork.
#[derive(Debug)]
pub struct ExecPlan {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _env: Vec<CString>,
    env_ptrs: Vec<*const c_char>,
    cwd: CString,
    rlimits: Vec<Rlimit>,
    oom_score: CString,
    uid: u32,
    gid: u32,
    last_cap: u32,
    tty: bool,
}

/// Where a process sets its own OOM score.
const OOM_SCORE_ADJ: &std::ffi::CStr = c"/proc/self/oom_score_adj";

fn to_cstrings(items: &[String], what: &'static str) -> Result<Vec<CString>, PlanError> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| PlanError::Nul { what }))
        .collect()
}

fn ptrs(items: &[CString]) -> Vec<*const c_char> {
    items
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Finds `prog` on the `PATH` of `env` (or a default), as `execvp` would, but before fork.
fn resolve(prog: &str, env: &[String]) -> Result<String, PlanError> {
    if prog.contains('/') {
        return Ok(prog.to_string());
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{d}/{prog}"))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| {
                    m.is_file()
                        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
                .unwrap_or(false)
        })
        .ok_or_else(|| PlanError::NotFound(prog.to_string()))
}

impl ExecPlan {
    /// Prepares a request for `exec_child`, running as `uid`/`gid` with `oom_score_adj`.
    pub fn new(
        req: &SpawnRequest,
        uid: u32,
        gid: u32,
        last_cap: u32,
        oom_score_adj: i32,
    ) -> Result<Self, PlanError> {
        let first = req.argv.first().ok_or(PlanError::EmptyArgv)?;
        let path = resolve(first, &req.env)?;
        let path = CString::new(path).map_err(|_| PlanError::Nul { what: "program" })?;
        let argv = to_cstrings(&req.argv, "argv")?;
        let env = to_cstrings(&req.env, "env")?;
        let cwd = CString::new(req.cwd.as_bytes()).map_err(|_| PlanError::Nul { what: "cwd" })?;
        Ok(Self {
            path,
            argv_ptrs: ptrs(&argv),
            _argv: argv,
            env_ptrs: ptrs(&env),
            _env: env,
            cwd,
            rlimits: req.rlimits.clone(),
            oom_score: CString::new(oom_score_adj.to_string()).expect("digits"),
            uid,
            gid,
            last_cap,
            tty: req.tty,
        })
    }

    /// Runs in the forked child: joins the `cgroup.procs` files of `groups`, sets everything up
    /// and execs. Never returns. Async-signal-safe.
    pub fn exec_child(
        &self,
        stdio: [RawFd; 3],
        channel: Option<RawFd>,
        groups: &[RawFd],
        err_pipe: RawFd,
    ) -> ! {
        let Err((step, errno)) = self.setup_and_exec(stdio, channel, groups);
        report_and_exit(err_pipe, step, errno)
    }

    fn setup_and_exec(
        &self,
        stdio: [RawFd; 3],
        channel: Option<RawFd>,
        groups: &[RawFd],
    ) -> Result<std::convert::Infallible, (ExecStep, i32)> {
        // First, so that everything the process does is its own group's.
        for &group in groups {
            check(ExecStep::Cgroup, join_cgroup(group))?;
        }
        check(ExecStep::Signals, reset_signals())?;
        check(ExecStep::Session, sys(sys_setsid()))?;
        // The channel may sit at a number stdio is about to take: lift it above them first.
        let channel = match channel {
            Some(fd) => Some(check(ExecStep::Stdio, sys_dup_above(fd, 10))?),
            None => None,
        };
        for (target, fd) in stdio.iter().enumerate() {
            check(ExecStep::Stdio, sys(sys_dup2(*fd, target as RawFd)))?;
        }
        if let Some(fd) = channel {
            check(ExecStep::Stdio, sys(sys_dup2(fd, 3)))?;
        }
        if self.tty {
            // A new session has no controlling terminal: the one on stdin becomes it, so the
            // shell gets job control and ^C reaches its foreground group.
            check(ExecStep::ControllingTty, sys(sys_take_controlling_tty()))?;
        }
        let first_closed = if channel.is_some() { 4 } else { 3 };
        check(ExecStep::CloseFds, sys(sys_close_from(first_closed)))?;
        check(ExecStep::Chdir, sys(sys_chdir(&self.cwd)))?;
        for rl in &self.rlimits {
            check(ExecStep::Rlimits, sys(sys_setrlimit(rl.resource, rl.limit)))?;
        }
        // Before the uid changes: afterwards the process is no longer dumpable and its /proc
        // files belong to root.
        check(ExecStep::OomScore, write_oom_score(&self.oom_score))?;
        check(
            ExecStep::Capabilities,
            drop_bounding_and_ambient(self.last_cap),
        )?;
        check(ExecStep::Identity, sys(sys_set_ids(self.uid, self.gid)))?;
        check(ExecStep::Capabilities, sys(sys_clear_caps()))?;
        check(ExecStep::NoNewPrivs, sys(sys_no_new_privs()))?;
        // SAFETY: path, argv and envp are NUL-terminated arrays of C strings owned by self.
        unsafe {
            libc::execve(
                self.path.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.env_ptrs.as_ptr(),
            )
        };
        Err((ExecStep::Exec, last_errno()))
    }
}

fn check<T>(step: ExecStep, r: Result<T, i32>) -> Result<T, (ExecStep, i32)> {
    r.map_err(|errno| (step, errno))
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn sys(ret: libc::c_long) -> Result<(), i32> {
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

/// Writes `(step, errno)` to the error pipe and exits 127.
fn report_and_exit(err_pipe: RawFd, step: ExecStep, errno: i32) -> ! {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    buf[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: buf is valid for 8 bytes; the fd is the child's end of the error pipe.
    unsafe { libc::write(err_pipe, buf.as_ptr().cast(), buf.len()) };
    // SAFETY: _exit is async-signal-safe and ends the child without running destructors.
    unsafe { libc::_exit(127) }
}

/// Decodes an error-pipe record.
pub fn decode_report(buf: &[u8; 8]) -> (Option<ExecStep>, i32) {
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    (ExecStep::from_u32(step), errno)
}

/// Restores default dispositions for the signals the warden changes and unblocks everything.
fn reset_signals() -> Result<(), i32> {
    for sig in [
        libc::SIGPIPE,
        libc::SIGCHLD,
        libc::SIGXFSZ,
        libc::SIGTERM,
        libc::SIGINT,
    ] {
        // SAFETY: setting SIG_DFL for a valid signal number is always sound.
        if unsafe { libc::signal(sig, libc::SIG_DFL) } == libc::SIG_ERR {
            return Err(last_errno());
        }
    }
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises set; sigprocmask reads it.
    let ret = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut())
    };
    sys(ret as libc::c_long)
}

fn sys_setsid() -> libc::c_long {
    // SAFETY: setsid has no memory arguments.
    unsafe { libc::setsid() as libc::c_long }
}

fn sys_take_controlling_tty() -> libc::c_long {
    // SAFETY: TIOCSCTTY on fd 0 takes an integer argument (0: do not steal it from another
    // session) and no memory.
    unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) as libc::c_long }
}

fn sys_dup2(from: RawFd, to: RawFd) -> libc::c_long {
    if from == to {
        // dup2 onto itself would leave CLOEXEC set; clear it instead.
        // SAFETY: fcntl on a caller-owned fd with integer arguments.
        return unsafe { libc::fcntl(from, libc::F_SETFD, 0) as libc::c_long };
    }
    // SAFETY: dup2 with integer arguments.
    unsafe { libc::dup2(from, to) as libc::c_long }
}

/// A duplicate of `fd` at the lowest free number from `min` up, inherited across exec.
fn sys_dup_above(fd: RawFd, min: RawFd) -> Result<RawFd, i32> {
    // SAFETY: fcntl(F_DUPFD) takes and returns plain integers and is async-signal-safe; it
    // touches no memory of this process.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD, min) };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r)
    }
}

/// Marks every fd from `first` up close-on-exec: the program gets only its stdio (and its
/// channel), while the error pipe and the Landlock ruleset stay usable until exec.
fn sys_close_from(first: u32) -> libc::c_long {
    // SAFETY: close_range with integer arguments only changes flags of this process's descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    }
}

/// Moves the calling process into a group: "0" written to its `cgroup.procs` means "me".
fn join_cgroup(procs: RawFd) -> Result<(), i32> {
    // SAFETY: writes one byte from a static string to an fd the caller owns.
    let written = unsafe { libc::write(procs, c"0".as_ptr().cast(), 1) };
    if written < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

fn write_oom_score(value: &CString) -> Result<(), i32> {
    // SAFETY: open of a NUL-terminated path with integer flags.
    let fd = unsafe { libc::open(OOM_SCORE_ADJ.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_errno());
    }
    let bytes = value.as_bytes();
    // SAFETY: bytes is valid for its length; fd is the file just opened.
    let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    let result = if written < 0 {
        Err(last_errno())
    } else {
        Ok(())
    };
    // SAFETY: closes the fd opened above.
    unsafe { libc::close(fd) };
    result
}

fn sys_chdir(dir: &CString) -> libc::c_long {
    // SAFETY: dir is a NUL-terminated string.
    unsafe { libc::chdir(dir.as_ptr()) as libc::c_long }
}

fn sys_setrlimit(resource: u32, limit: u64) -> libc::c_long {
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: rl is a valid rlimit; an unknown resource is rejected with EINVAL.
    unsafe { libc::setrlimit(resource as _, &rl) as libc::c_long }
}

fn drop_bounding_and_ambient(last_cap: u32) -> Result<(), i32> {
    for cap in 0..=last_cap {
        // SAFETY: prctl with integer arguments.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if ret < 0 && last_errno() != libc::EINVAL {
            return Err(last_errno());
        }
    }
    // SAFETY: prctl with integer arguments.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    sys(ret as libc::c_long)
}

fn sys_set_ids(uid: u32, gid: u32) -> libc::c_long {
    let groups = [gid];
    // SAFETY: groups is a valid array of one gid; the id calls take integers. Raw syscalls are used
    // so only this thread's credentials change (there are no other threads after fork).
    unsafe {
        let r = libc::syscall(libc::SYS_setgroups, 1usize, groups.as_ptr());
        if r < 0 {
            return r;
        }
        let r = libc::syscall(libc::SYS_setresgid, gid, gid, gid);
        if r < 0 {
            return r;
        }
        libc::syscall(libc::SYS_setresuid, uid, uid, uid)
    }
}

/// Clears the permitted, effective and inheritable sets (already empty after leaving uid 0, but the
/// inheritable set survives a uid change).
fn sys_clear_caps() -> libc::c_long {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data are the v3 layout capset expects (two data words).
    unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) }
}

fn sys_no_new_privs() -> libc::c_long {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long }
}
