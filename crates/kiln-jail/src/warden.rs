//! The warden: PID 1 of every sandbox. It is Kiln's own binary started in a hidden mode, inside the
//! sandbox's fresh namespaces. It builds the root filesystem, then serves the control socket (fd 3):
//! it spawns processes with their stdio fds, delivers signals, reaps every zombie, and reports each
//! spawned process's exit with its rusage. It stays single-threaded, so its forked children are
//! safe; even so they only make raw syscalls (see [`crate::exec`]).
//!
//! When the control socket closes, the warden exits, and the kernel kills everything left in its PID
//! namespace.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use crate::exec::{decode_report, ExecPlan};
use crate::landlock::{FsPolicy, PreparedLandlock};
use crate::protocol::{self, read_full, ExitStatus, Reply, Request, SpawnRequest, WardenConfig};
use crate::seccomp::{SeccompOptions, SeccompPolicy};

/// The fd on which the warden finds its control socket.
pub const CONTROL_FD: RawFd = 3;
/// The argument that selects the warden mode of the kiln binary.
pub const WARDEN_ARG: &str = "__kiln_warden";

struct Warden {
    control: OwnedFd,
    cfg: WardenConfig,
    landlock_abi: Option<u32>,
    last_cap: u32,
    children: HashSet<i32>,
    buf: Vec<u8>,
}

fn fail(step: &str, message: String, errno: Option<i32>) -> Reply {
    Reply::Failed {
        step: step.to_string(),
        message,
        errno,
    }
}

/// The warden's entry point. Never returns.
pub fn main() -> ! {
    // SAFETY: the sandbox creator dup'ed the control socket onto fd 3 before exec; nothing else owns it.
    let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    let mut buf = Vec::new();
    let cfg = match protocol::recv::<Request>(control.as_fd(), &mut buf) {
        Ok((Request::Setup(cfg), _)) => cfg,
        _ => std::process::exit(2),
    };
    match Warden::setup(control, cfg, buf) {
        Ok(mut w) => {
            let code = w.serve();
            std::process::exit(code)
        }
        Err((control, reply)) => {
            let _ = protocol::send(control.as_fd(), &reply, &[]);
            std::process::exit(1)
        }
    }
}

impl Warden {
    fn setup(control: OwnedFd, cfg: WardenConfig, buf: Vec<u8>) -> Result<Self, (OwnedFd, Reply)> {
        if let Err(e) = rustix::system::sethostname(cfg.hostname.as_bytes()) {
            return Err((
                control,
                fail("sethostname", e.to_string(), Some(e.raw_os_error())),
            ));
        }
        if let Err(e) = loopback_up() {
            return Err((control, fail("loopback", e.to_string(), e.raw_os_error())));
        }
        if let Err(e) = crate::rootfs::build(&cfg) {
            let errno = e.errno();
            return Err((control, fail("rootfs", e.to_string(), errno)));
        }
        let seccomp = match SeccompPolicy::sandbox(SeccompOptions {
            network: cfg.network,
            inotify: cfg.inotify,
        })
        .compile()
        {
            Ok(s) => s,
            Err(e) => return Err((control, fail("seccomp", e.to_string(), None))),
        };
        let landlock = match PreparedLandlock::build(&fs_policy(&cfg.volumes)) {
            Ok(l) => l,
            Err(e) => return Err((control, fail("landlock", e.to_string(), None))),
        };
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(63);
        // The warden takes on Landlock and the seccomp filter itself, once: every process it forks
        // inherits them, so a spawn pays nothing for either, and the warden is walled in too. Its
        // namespace's CAP_SYS_ADMIN lets it do so without no_new_privs, which its children set.
        if let Err(e) = landlock.restrict_self() {
            return Err((control, fail("landlock", e.to_string(), e.raw_os_error())));
        }
        if let Err(e) = seccomp.install() {
            return Err((control, fail("seccomp", e.to_string(), e.raw_os_error())));
        }
        Ok(Self {
            control,
            cfg,
            landlock_abi: landlock.abi(),
            last_cap,
            children: HashSet::new(),
            buf,
        })
    }

    /// Serves requests until the control socket closes. Returns the exit code.
    fn serve(&mut self) -> i32 {
        let sigfd = match block_sigchld() {
            Ok(fd) => fd,
            Err(e) => {
                let reply = fail("signalfd", e.to_string(), e.raw_os_error());
                let _ = protocol::send(self.control.as_fd(), &reply, &[]);
                return 1;
            }
        };
        let ready = Reply::Ready {
            landlock_abi: self.landlock_abi,
        };
        if protocol::send(self.control.as_fd(), &ready, &[]).is_err() {
            return 1;
        }
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.control.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sigfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: fds is a valid array of two pollfd structs.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                continue;
            }
            if fds[1].revents != 0 {
                drain_signalfd(&sigfd);
                if self.reap().is_err() {
                    return 0;
                }
            }
            if fds[0].revents != 0 {
                match protocol::recv::<Request>(self.control.as_fd(), &mut self.buf) {
                    Ok((req, fds)) => {
                        let reply = self.handle(req, fds);
                        if protocol::send(self.control.as_fd(), &reply, &[]).is_err() {
                            return 0;
                        }
                    }
                    Err(e) if protocol::is_would_block(&e) => {}
                    Err(protocol::ProtocolError::Decode(e)) => {
                        let reply = fail("decode", e.to_string(), None);
                        if protocol::send(self.control.as_fd(), &reply, &[]).is_err() {
                            return 0;
                        }
                    }
                    // The engine is gone: exiting takes the whole PID namespace with it.
                    Err(_) => return 0,
                }
            }
        }
    }

    fn handle(&mut self, req: Request, fds: Vec<OwnedFd>) -> Reply {
        match req {
            Request::Setup(_) => fail("setup", "already set up".into(), None),
            Request::Spawn(spawn) => self.spawn(&spawn, fds),
            Request::KillAll => self.kill_all(),
            Request::Signal { pid, signal, group } => {
                // Every process here belongs to the sandbox, so any may be signalled, and a group
                // outlives its leader. Only the warden itself, and "everyone" (-1), are off limits.
                if pid <= 1 {
                    return fail(
                        "signal",
                        format!("refusing to signal pid {pid}"),
                        Some(libc::EPERM),
                    );
                }
                let target = if group { -pid } else { pid };
                // SAFETY: kill with integer arguments.
                let ret = unsafe { libc::kill(target, signal) };
                if ret == 0 {
                    Reply::Signalled
                } else {
                    let e = std::io::Error::last_os_error();
                    // The group may already be gone: that is not an error for a kill.
                    if e.raw_os_error() == Some(libc::ESRCH) {
                        Reply::Signalled
                    } else {
                        fail("signal", e.to_string(), e.raw_os_error())
                    }
                }
            }
        }
    }

    fn spawn(&mut self, req: &SpawnRequest, fds: Vec<OwnedFd>) -> Reply {
        let fixed = if req.channel { 4 } else { 3 };
        if fds.len() < fixed {
            return fail(
                "spawn",
                format!(
                    "expected {fixed} fds (stdio and channel), got {}",
                    fds.len()
                ),
                Some(libc::EINVAL),
            );
        }
        let plan = match ExecPlan::new(
            req,
            self.cfg.sandbox_uid,
            self.cfg.sandbox_gid,
            self.last_cap,
            self.cfg.oom_score_adj,
        ) {
            Ok(p) => p,
            Err(e) => return fail("plan", e.to_string(), Some(libc::ENOENT)),
        };
        let (err_read, err_write) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        {
            Ok(p) => p,
            Err(e) => return fail("pipe", e.to_string(), Some(e.raw_os_error())),
        };
        let stdio = [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()];
        let channel = req.channel.then(|| fds[3].as_raw_fd());
        let groups: Vec<RawFd> = fds[fixed..].iter().map(AsRawFd::as_raw_fd).collect();
        // SAFETY: the warden is single-threaded, and the child runs only exec_child, which makes raw
        // syscalls and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            return fail("fork", e.to_string(), e.raw_os_error());
        }
        if pid == 0 {
            drop(err_read);
            plan.exec_child(stdio, channel, &groups, err_write.as_raw_fd());
        }
        drop(err_write);
        drop(fds);
        self.children.insert(pid);
        let mut report = [0u8; 8];
        match read_full(&err_read, &mut report) {
            Ok(0) => Reply::Spawned { pid },
            Ok(_) => {
                let (step, errno) = decode_report(&report);
                let step = step.map_or("unknown", |s| s.name());
                let msg = format!(
                    "{}: {}: {}",
                    req.argv.first().map(String::as_str).unwrap_or(""),
                    step,
                    std::io::Error::from_raw_os_error(errno)
                );
                // The child exits at once; the reaper reports nothing for it.
                self.children.remove(&pid);
                reap_one(pid);
                fail(step, msg, Some(errno))
            }
            Err(e) => fail("spawn", e.to_string(), e.raw_os_error()),
        }
    }

    /// SIGKILLs every process of the namespace but the warden and reaps them all.
    fn kill_all(&mut self) -> Reply {
        // SAFETY: kill with integers. From PID 1, -1 reaches every other process of the PID
        // namespace (and nothing outside it), whatever session or group it moved to.
        if unsafe { libc::kill(-1, libc::SIGKILL) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return fail("kill all", e.to_string(), e.raw_os_error());
            }
        }
        // Every process of the namespace is the warden's child by now or soon (orphans are
        // re-parented to it), and SIGKILL cannot be caught: waiting until none is left ends.
        match self.reap_with(0) {
            Ok(()) => Reply::KilledAll,
            Err(e) => fail("kill all", e.to_string(), None),
        }
    }

    /// Reaps every exited child and reports the tracked ones.
    fn reap(&mut self) -> Result<(), protocol::ProtocolError> {
        self.reap_with(libc::WNOHANG)
    }

    /// Reaps children (`WNOHANG`: those that have exited; 0: all of them, waiting) and reports
    /// the tracked ones.
    fn reap_with(&mut self, flags: i32) -> Result<(), protocol::ProtocolError> {
        loop {
            let mut status = 0;
            // SAFETY: rusage is plain data that wait4 fills.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: status and ru are valid for writes.
            let pid = unsafe { libc::wait4(-1, &mut status, flags | libc::__WALL, &mut ru) };
            if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if pid <= 0 {
                return Ok(());
            }
            if !self.children.remove(&pid) {
                continue;
            }
            let exit = ExitStatus {
                code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
                signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
                user_us: timeval_us(ru.ru_utime),
                system_us: timeval_us(ru.ru_stime),
                max_rss_kib: ru.ru_maxrss.max(0) as u64,
            };
            protocol::send(
                self.control.as_fd(),
                &Reply::Exited { pid, status: exit },
                &[],
            )?;
        }
    }
}

fn timeval_us(tv: libc::timeval) -> u64 {
    (tv.tv_sec.max(0) as u64) * 1_000_000 + tv.tv_usec.max(0) as u64
}

fn reap_one(pid: i32) {
    let mut status = 0;
    // SAFETY: status is valid for writes.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// Blocks SIGCHLD and returns a signalfd for it, so the warden learns of exits in its poll loop.
fn block_sigchld() -> std::io::Result<OwnedFd> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set before sigaddset and sigprocmask read it.
    let fd = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
        libc::signalfd(-1, set.as_ptr(), libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn drain_signalfd(fd: &OwnedFd) {
    let mut info = [0u8; 128];
    while let Ok(n) = rustix::io::read(fd, &mut info) {
        if n == 0 {
            break;
        }
    }
}

/// Brings up `lo` in the sandbox's network namespace, so programs can talk to themselves.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: socket with integer arguments.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socket returned a new fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: req is a valid ifreq naming "lo"; the ioctls read and write it.
    let ret = unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req)
        }
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What Landlock lets sandboxed processes touch: read and execute anything the sandbox's root shows
/// (it holds nothing else), write only their scratch space (`/tmp`, `/workspace`, the volumes),
/// devices and their own `/proc` entries.
fn fs_policy(volumes: &[PathBuf]) -> FsPolicy {
    FsPolicy {
        read_exec: vec![PathBuf::from("/")],
        read_write: ["/tmp", "/workspace", "/proc", "/dev"]
            .into_iter()
            .map(PathBuf::from)
            .chain(volumes.iter().cloned())
            .collect(),
    }
}
