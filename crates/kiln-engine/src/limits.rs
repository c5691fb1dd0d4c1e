//! What a sandbox is ([`SandboxShape`]: how it is built, fixed for its life) and what one run in
//! it may use ([`Limits`]: its clocks and caps, their defaults, and how they map onto cgroups and
//! rlimits), with the one way limits are overridden ([`LimitOverrides`], [`Limits::merged`]).

use std::time::Duration;

use kiln_jail::cgroup::{CgroupLimits, CpuQuota};
use kiln_jail::protocol::Rlimit;
use serde::{Deserialize, Serialize};

/// Whether a sandbox has a network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Only a loopback interface of its own.
    #[default]
    None,
}

pub use kiln_jail::sandbox::Accounting;

/// How a sandbox is built: its filesystems, network, seccomp options and accounting. Fixed for
/// the sandbox's life; a pooled sandbox serves a request of the same shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxShape {
    /// Size of `/tmp`.
    pub tmp_bytes: u64,
    /// Size of `/workspace`.
    pub workspace_bytes: u64,
    /// The network.
    pub network: Network,
    /// Whether programs may use inotify (long-lived environments); refused by default.
    pub inotify: bool,
    /// The most pseudo-terminals open at once in the sandbox.
    pub ptys: u32,
    /// How its processes are accounted: by the sandbox's group (one run at a time) or each in a
    /// group of its own.
    pub accounting: Accounting,
    /// Writable directories outside `/workspace` and `/tmp`, each a tmpfs the size of the
    /// workspace (a function call's mounts).
    #[serde(default)]
    pub volumes: Vec<String>,
}

impl Default for SandboxShape {
    fn default() -> Self {
        Self {
            tmp_bytes: 64 << 20,
            workspace_bytes: 64 << 20,
            network: Network::None,
            inotify: false,
            ptys: DEFAULT_PTYS,
            accounting: Accounting::Sandbox,
            volumes: Vec::new(),
        }
    }
}

/// Every limit a run can set. `None` means "no limit of this kind".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Wall-clock time.
    pub wall_time: Option<Duration>,
    /// CPU time of everything in the sandbox.
    pub cpu_time: Option<Duration>,
    /// Time without output and without stdin.
    pub idle_time: Option<Duration>,
    /// Memory (RAM; swap is not allowed).
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// Bytes of stdout plus stderr kept; the run ends with `output_limit` past it.
    pub output_bytes: Option<u64>,
    /// Largest file a process may write (RLIMIT_FSIZE).
    pub file_size_bytes: Option<u64>,
    /// Open file descriptors per process (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
    /// Stack size per process (RLIMIT_STACK).
    pub stack_bytes: Option<u64>,
    /// CPU share: at most this many CPUs' worth of time per period.
    pub cpus: Option<f64>,
}

/// Limits that replace some of a run's: a language's stage, a client's request. `None` keeps
/// the limit as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    /// Wall-clock time.
    pub wall_time: Option<Duration>,
    /// CPU time.
    pub cpu_time: Option<Duration>,
    /// Time without output and without stdin.
    pub idle_time: Option<Duration>,
    /// Memory.
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// Bytes of output kept.
    pub output_bytes: Option<u64>,
    /// Largest file written.
    pub file_size_bytes: Option<u64>,
    /// Open file descriptors per process.
    pub open_files: Option<u64>,
}

/// Pseudo-terminals per sandbox by default: enough for a shell and a few tools; the host's
/// `kernel.pty.max` is shared by every sandbox.
pub const DEFAULT_PTYS: u32 = 16;

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall_time: Some(Duration::from_secs(10)),
            cpu_time: Some(Duration::from_secs(5)),
            idle_time: None,
            memory_bytes: Some(256 << 20),
            pids: Some(64),
            output_bytes: Some(1 << 20),
            file_size_bytes: Some(64 << 20),
            open_files: Some(256),
            stack_bytes: Some(8 << 20),
            cpus: None,
        }
    }
}

/// The memory the warden itself needs on top of a run's limit, so a tight limit still leaves the
/// program what it asked for.
pub const WARDEN_MEMORY_BYTES: u64 = 8 << 20;
/// The warden is a process too.
pub const WARDEN_PIDS: u64 = 1;
/// The largest finite rlimit (`RLIM_INFINITY` is `u64::MAX`).
const RLIMIT_FINITE_MAX: u64 = u64::MAX - 1;
/// The most open files a process may be given: the kernel's default `fs.nr_open`, above which
/// `setrlimit(RLIMIT_NOFILE)` fails.
pub const OPEN_FILES_MAX: u64 = 1 << 20;
/// Signals queued at once by the sandbox's user (`RLIMIT_SIGPENDING`, counted per user).
pub const SIGPENDING: u64 = 4096;

impl Limits {
    /// These limits with every one that `overrides` sets replaced: the one merge of limits, for
    /// a language's stage over the defaults and a client's request over those.
    pub fn merged(&self, overrides: &LimitOverrides) -> Limits {
        let o = overrides;
        Limits {
            wall_time: o.wall_time.or(self.wall_time),
            cpu_time: o.cpu_time.or(self.cpu_time),
            idle_time: o.idle_time.or(self.idle_time),
            memory_bytes: o.memory_bytes.or(self.memory_bytes),
            pids: o.pids.or(self.pids),
            output_bytes: o.output_bytes.or(self.output_bytes),
            file_size_bytes: o.file_size_bytes.or(self.file_size_bytes),
            open_files: o.open_files.or(self.open_files),
            ..self.clone()
        }
    }

    /// The sandbox cgroup's limits for these run limits.
    pub fn cgroup(&self) -> CgroupLimits {
        CgroupLimits {
            memory_bytes: self
                .memory_bytes
                .map(|m| m.saturating_add(WARDEN_MEMORY_BYTES)),
            pids_max: self.pids.map(|p| p.saturating_add(WARDEN_PIDS)),
            cpu_quota: self.cpus.map(|c| CpuQuota {
                quota_us: (c * 100_000.0).max(1000.0) as u64,
                period_us: 100_000,
            }),
            cpuset_cpus: None,
        }
    }

    /// The rlimits every process of the run gets. A limit too large for the kernel is cut to
    /// the largest it takes, never turned into "unlimited" (`RLIM_INFINITY` is `u64::MAX`).
    pub fn rlimits(&self) -> Vec<Rlimit> {
        let mut out = vec![
            Rlimit {
                resource: libc::RLIMIT_CORE,
                limit: 0,
            },
            // Queued signals are counted per user; the sandbox's user gets this many.
            Rlimit {
                resource: libc::RLIMIT_SIGPENDING,
                limit: SIGPENDING,
            },
        ];
        let mut push = |resource: libc::__rlimit_resource_t, v: Option<u64>, max: u64| {
            if let Some(limit) = v {
                out.push(Rlimit {
                    resource,
                    limit: limit.min(max),
                });
            }
        };
        push(libc::RLIMIT_FSIZE, self.file_size_bytes, RLIMIT_FINITE_MAX);
        push(libc::RLIMIT_NOFILE, self.open_files, OPEN_FILES_MAX);
        push(libc::RLIMIT_STACK, self.stack_bytes, RLIMIT_FINITE_MAX);
        // A backstop behind the engine's CPU clock: the kernel stops a run the engine lost track of.
        push(
            libc::RLIMIT_CPU,
            self.cpu_time.map(|t| t.as_secs().saturating_add(2)),
            RLIMIT_FINITE_MAX,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rlimit(limits: &Limits, resource: libc::__rlimit_resource_t) -> Option<u64> {
        limits
            .rlimits()
            .into_iter()
            .find(|r| r.resource == resource)
            .map(|r| r.limit)
    }

    #[test]
    fn a_huge_limit_is_cut_never_unlimited() {
        // Item 5 of the hardening pass: u64::MAX was RLIM_INFINITY, and 2^40 open files failed
        // the spawn.
        let limits = Limits {
            file_size_bytes: Some(u64::MAX),
            open_files: Some(1 << 40),
            cpu_time: Some(Duration::from_secs(u64::MAX)),
            memory_bytes: Some(u64::MAX),
            pids: Some(u64::MAX),
            ..Limits::default()
        };
        assert_eq!(rlimit(&limits, libc::RLIMIT_FSIZE), Some(u64::MAX - 1));
        assert_eq!(rlimit(&limits, libc::RLIMIT_NOFILE), Some(OPEN_FILES_MAX));
        assert_eq!(rlimit(&limits, libc::RLIMIT_CPU), Some(u64::MAX - 1));
        assert_eq!(rlimit(&limits, libc::RLIMIT_SIGPENDING), Some(SIGPENDING));
        let cg = limits.cgroup();
        assert_eq!(cg.memory_bytes, Some(u64::MAX));
        assert_eq!(cg.pids_max, Some(u64::MAX));
    }
}
