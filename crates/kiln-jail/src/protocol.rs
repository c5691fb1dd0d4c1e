//! The warden's control protocol: JSON messages over a `SOCK_SEQPACKET` socketpair, one message per
//! packet, with file descriptors (a process's stdio) carried alongside by `SCM_RIGHTS`.
//!
//! The engine sends [`Request`]s and the warden answers each with one [`Reply`] in order; the warden
//! also sends [`Reply::Exited`] on its own whenever a spawned process ends.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

/// The largest message either side sends. argv and env are checked against it by the engine.
pub const MAX_MESSAGE_BYTES: usize = 192 * 1024;
/// The most fds one message carries: stdin, stdout and stderr, then the `cgroup.procs` files of
/// the process's own group in every hierarchy.
pub const MAX_FDS: usize = 3 + MAX_CGROUP_FDS;
/// The most `cgroup.procs` files a spawn carries (one per hierarchy Kiln uses).
pub const MAX_CGROUP_FDS: usize = 10;

/// Errors on the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The socket failed.
    #[error("control socket {op}: {source}")]
    Io {
        /// send or recv.
        op: &'static str,
        /// The errno.
        source: std::io::Error,
    },
    /// The peer closed its end.
    #[error("control socket closed by the peer")]
    Closed,
    /// A message did not parse.
    #[error("control message is not valid: {0}")]
    Decode(#[from] serde_json::Error),
    /// A message was larger than [`MAX_MESSAGE_BYTES`].
    #[error("control message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
}

/// How the warden builds the sandbox's root filesystem and identity. Sent once, first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WardenConfig {
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// Size of the `/tmp` tmpfs in bytes.
    pub tmp_bytes: u64,
    /// Size of the `/workspace` tmpfs in bytes.
    pub workspace_bytes: u64,
    /// Extra read-only bind mounts: (host path, path inside).
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
    /// Extra writable directories (absolute paths inside, outside the system directories), each
    /// a tmpfs of `workspace_bytes` owned by the sandbox's user: where a function call's mounts
    /// appear when they are not under `/workspace` or `/tmp`.
    #[serde(default)]
    pub volumes: Vec<PathBuf>,
    /// Whether the sandbox has a network (decides `resolv.conf` and the seccomp netlink rule).
    pub network: bool,
    /// Whether programs may use inotify (see [`crate::seccomp::SeccompOptions::inotify`]).
    pub inotify: bool,
    /// The most pseudo-terminals the sandbox's own devpts hands out at once (`max=`): every
    /// sandbox's ptys come from the host's `kernel.pty.max`, shared by all.
    pub ptys_max: u32,
    /// The OOM score programs raise themselves to (`oom_score_adj`, up to 1000), so that the OOM
    /// killer picks one of them before the warden, which keeps the service's score.
    pub oom_score_adj: i32,
    /// The uid and gid programs run as inside the sandbox.
    pub sandbox_uid: u32,
    /// See `sandbox_uid`.
    pub sandbox_gid: u32,
}

/// A resource limit to set on a spawned process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*` resource number.
    pub resource: u32,
    /// Soft and hard limit (both the same value); `u64::MAX` means unlimited.
    pub limit: u64,
}

/// Start a program inside the sandbox. Carries three fds, stdin, stdout and stderr, then (with
/// `channel`) the socket that becomes the program's fd 3, and then the `cgroup.procs` files of the group the process must join before anything else (opened by the
/// host, whose credentials the kernel checks the move against).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// The program and its arguments. `argv[0]` without a slash is looked up in `PATH` from `env`.
    pub argv: Vec<String>,
    /// The full environment (`KEY=value`).
    pub env: Vec<String>,
    /// Working directory inside the sandbox.
    pub cwd: String,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// stdin is a terminal that becomes the process's controlling terminal.
    #[serde(default)]
    pub tty: bool,
    /// A fourth fd follows stdio: the program gets it as fd 3 (a harness's result channel).
    #[serde(default)]
    pub channel: bool,
}

/// What the engine asks of the warden.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Build the root filesystem and get ready. First message only.
    Setup(WardenConfig),
    /// Start a process (three fds attached).
    Spawn(SpawnRequest),
    /// Send a signal to a spawned process, or to its whole process group.
    Signal {
        /// The pid inside the sandbox.
        pid: i32,
        /// The signal number.
        signal: i32,
        /// Signal the process group the process leads.
        group: bool,
    },
    /// Kill every process of the sandbox but the warden, daemons included, and reap them all
    /// before answering (between the stages of a program, so nothing of one reaches the next).
    KillAll,
}

/// How a process ended, with its resource usage.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// User CPU time in microseconds (itself and its waited-for descendants).
    pub user_us: u64,
    /// System CPU time in microseconds.
    pub system_us: u64,
    /// Peak resident set in KiB.
    pub max_rss_kib: u64,
}

/// What the warden says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// Setup finished.
    Ready {
        /// The Landlock ABI applied to processes, if any.
        landlock_abi: Option<u32>,
    },
    /// Setup or a request failed.
    Failed {
        /// Which step failed.
        step: String,
        /// The error.
        message: String,
        /// The errno, when there is one.
        errno: Option<i32>,
    },
    /// A process started.
    Spawned {
        /// Its pid inside the sandbox.
        pid: i32,
    },
    /// A signal was delivered.
    Signalled,
    /// Every process but the warden is gone (their `Exited` reports came first).
    KilledAll,
    /// A spawned process ended (sent unprompted).
    Exited {
        /// Its pid inside the sandbox.
        pid: i32,
        /// How it ended.
        status: ExitStatus,
    },
}

/// Sends one message with optional fds.
pub fn send<T: Serialize>(
    sock: BorrowedFd<'_>,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), ProtocolError> {
    let bytes = serde_json::to_vec(msg)?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge(bytes.len()));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        control.push(SendAncillaryMessage::ScmRights(fds));
    }
    loop {
        match rustix::net::sendmsg(
            sock,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::PIPE) => return Err(ProtocolError::Closed),
            Err(e) => {
                return Err(ProtocolError::Io {
                    op: "send",
                    source: e.into(),
                })
            }
        }
    }
}

/// Receives one message and the fds that came with it. `WouldBlock` surfaces as an `Io` error so
/// a non-blocking caller can wait for readiness.
pub fn recv<T: for<'de> Deserialize<'de>>(
    sock: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
) -> Result<(T, Vec<OwnedFd>), ProtocolError> {
    buf.resize(MAX_MESSAGE_BYTES, 0);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(got) => break got,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return Err(ProtocolError::Io {
                    op: "recv",
                    source: e.into(),
                })
            }
        }
    };
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if got.bytes == 0 {
        return Err(ProtocolError::Closed);
    }
    let msg = serde_json::from_slice(&buf[..got.bytes])?;
    Ok((msg, fds))
}

/// Whether a protocol error is a non-blocking socket having nothing to read yet.
pub fn is_would_block(err: &ProtocolError) -> bool {
    matches!(err, ProtocolError::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock)
}

/// Creates the engine/warden socketpair (both ends close-on-exec).
pub fn socketpair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    Ok((a, b))
}

/// Writes all of `buf`, retrying interrupted writes.
pub(crate) fn write_all(fd: &OwnedFd, buf: &[u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::write(fd, &buf[done..]) {
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads until `buf` is full or EOF; returns how much was read.
pub(crate) fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}
