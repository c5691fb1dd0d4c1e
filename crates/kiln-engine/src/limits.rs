//! The limits of one run, their defaults, and how they map onto cgroups and rlimits.

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
    /// Size of `/tmp`.
    pub tmp_bytes: u64,
    /// Size of `/workspace`.
    pub workspace_bytes: u64,
    /// The network.
    pub network: Network,
}

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
            tmp_bytes: 64 << 20,
            workspace_bytes: 64 << 20,
            network: Network::None,
        }
    }
}

/// The memory the warden itself needs on top of a run's limit, so a tight limit still leaves the
/// program what it asked for.
pub const WARDEN_MEMORY_BYTES: u64 = 8 << 20;
/// The warden is a process too.
pub const WARDEN_PIDS: u64 = 1;

impl Limits {
    /// The sandbox cgroup's limits for these run limits.
    pub fn cgroup(&self) -> CgroupLimits {
        CgroupLimits {
            memory_bytes: self.memory_bytes.map(|m| m + WARDEN_MEMORY_BYTES),
            pids_max: self.pids.map(|p| p + WARDEN_PIDS),
            cpu_quota: self.cpus.map(|c| CpuQuota {
                quota_us: (c * 100_000.0).max(1000.0) as u64,
                period_us: 100_000,
            }),
            cpuset_cpus: None,
        }
    }

    /// The rlimits every process of the run gets.
    pub fn rlimits(&self) -> Vec<Rlimit> {
        let mut out = vec![Rlimit {
            resource: libc::RLIMIT_CORE,
            limit: 0,
        }];
        let mut push = |resource: libc::__rlimit_resource_t, v: Option<u64>| {
            if let Some(limit) = v {
                out.push(Rlimit { resource, limit });
            }
        };
        push(libc::RLIMIT_FSIZE, self.file_size_bytes);
        push(libc::RLIMIT_NOFILE, self.open_files);
        push(libc::RLIMIT_STACK, self.stack_bytes);
        // A backstop behind the engine's CPU clock: the kernel stops a run the engine lost track of.
        push(libc::RLIMIT_CPU, self.cpu_time.map(|t| t.as_secs() + 2));
        out
    }
}
