//! cgroups: where each controller lives on this host (v1, v2 or a hybrid of both, decided per
//! controller), Kiln's parent group under the service's own cgroup, one group per sandbox with its
//! limits, and the accounting read back from it.
//!
//! The flow is `CgroupLayout::detect` once at start-up, `CgroupLayout::prepare` once to get the
//! `CgroupParent`, then `CgroupParent::create` per sandbox. A `SandboxCgroup` spans every hierarchy
//! Kiln uses; on hybrid hosts the unified hierarchy is always included, even when it serves no
//! controller, because `cgroup.kill`, `cgroup.freeze` and `cpu.stat` are core files there.

mod fsutil;
mod instance;
mod layout;
mod parent;
mod sandbox;
mod stats;
mod v1;
mod v2;

#[cfg(test)]
mod tests_fixture;
#[cfg(test)]
mod tests_real;

use std::path::PathBuf;

pub use layout::{CgroupLayout, ControllerPlacement};
pub use parent::CgroupParent;
pub use sandbox::SandboxCgroup;

/// The controllers Kiln knows about. Other controllers (io, blkio, devices, hugetlb, ...) are
/// ignored by detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    /// Memory limit and OOM accounting.
    Memory,
    /// Process-count limit.
    Pids,
    /// CFS bandwidth (quota/period).
    Cpu,
    /// v1-only CPU-time accounting (`cpuacct.usage`); v2 has `cpu.stat` as a core file instead.
    Cpuacct,
    /// CPU pinning.
    Cpuset,
    /// v1-only freezer, used to kill reliably when no unified hierarchy offers `cgroup.kill`.
    Freezer,
}

impl Controller {
    /// Every controller, in the order `describe` reports them.
    pub const ALL: [Controller; 6] = [
        Controller::Memory,
        Controller::Pids,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Cpuset,
        Controller::Freezer,
    ];

    /// The kernel's name for the controller (mount options, `cgroup.controllers`).
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Freezer => "freezer",
        }
    }

    /// The controller named `name`, if Kiln uses it.
    pub fn from_name(name: &str) -> Option<Controller> {
        Controller::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which cgroup interface serves a controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// A legacy hierarchy (one mount per controller or per co-mounted set).
    V1,
    /// The unified hierarchy.
    V2,
}

/// Limits for one sandbox. `None` leaves the value inherited from Kiln's parent group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory limit in bytes, swap included (the same value goes to `memory.memsw.limit_in_bytes`
    /// on v1 and `memory.swap.max` is 0 on v2), so a sandbox can never page out to escape it.
    pub memory_bytes: Option<u64>,
    /// Maximum number of tasks (`pids.max`).
    pub pids_max: Option<u64>,
    /// CFS bandwidth limit.
    pub cpu_quota: Option<CpuQuota>,
    /// CPUs the sandbox may run on, in the kernel's list format (`0-3,6`).
    pub cpuset_cpus: Option<String>,
}

/// CFS bandwidth: the group may use `quota_us` of CPU time per `period_us` of wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    /// CPU time allowed per period, in microseconds.
    pub quota_us: u64,
    /// Length of the period, in microseconds.
    pub period_us: u64,
}

/// Accounting read back from a sandbox group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// CPU time used by the group, in nanoseconds.
    pub cpu_ns: u64,
    /// Peak memory use, if the kernel reports it (v2 `memory.peak` needs 5.19).
    pub memory_peak_bytes: Option<u64>,
    /// Processes killed by the OOM killer inside the group.
    pub oom_kills: u64,
    /// Peak number of tasks, if the kernel reports it (`pids.peak`).
    pub pids_peak: Option<u64>,
}

/// Everything that can go wrong with cgroups. Each variant carries the path involved and, for
/// kernel errors, the `io::Error` with its errno, because "EBUSY" alone never says which of the
/// dozen files of a sandbox refused.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file under /proc or a cgroup file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// A value could not be written to a cgroup file.
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// A cgroup file or directory could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The file or directory.
        path: PathBuf,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// A cgroup directory could not be created.
    #[error("creating cgroup {path}: {source}")]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// A cgroup directory could not be removed.
    #[error("removing cgroup {path}: {source}")]
    Rmdir {
        /// The directory.
        path: PathBuf,
        /// The kernel's error (the last one, after retries).
        source: std::io::Error,
    },
    /// A cgroup file did not have the expected format.
    #[error("parsing {path}: {reason}")]
    Parse {
        /// The file (or `/proc/self/mountinfo`, `/proc/self/cgroup`).
        path: PathBuf,
        /// What was wrong, with the offending text.
        reason: String,
    },
    /// No cgroup hierarchy serving any controller Kiln uses is mounted.
    #[error("no usable cgroup hierarchy is mounted (see /proc/self/mountinfo)")]
    NoHierarchy,
    /// A limit needs a controller this host does not offer (or does not delegate to the service).
    #[error("controller {controller} is not available here: {reason}")]
    ControllerUnavailable {
        /// The controller the limit needs.
        controller: Controller,
        /// Why, with the path that was looked at.
        reason: String,
    },
    /// A group name that could escape its parent directory or clash with a control file.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Processes were still in the group when it had to be empty.
    #[error("cgroup {path} still has processes {pids:?} after {waited:?}")]
    NotEmpty {
        /// The group's directory.
        path: PathBuf,
        /// The remaining members.
        pids: Vec<i32>,
        /// How long Kiln waited.
        waited: std::time::Duration,
    },
    /// A signal could not be sent to a member process.
    #[error("sending SIGKILL to pid {pid} of {path}: {source}")]
    Signal {
        /// The group the process was in.
        path: PathBuf,
        /// The process.
        pid: i32,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// The group has no CPU accounting file (no cpuacct and no unified hierarchy).
    #[error("no CPU accounting for cgroup {name}: neither v1 cpuacct nor a unified hierarchy")]
    NoCpuAccounting {
        /// The sandbox group's name.
        name: String,
    },
}

/// Refuses names that are not a single plain path component, since they are joined to parent
/// directories and would otherwise let a caller create or remove groups elsewhere.
fn check_name(name: &str) -> Result<(), CgroupError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name == "." || name == ".." {
        "a relative directory"
    } else if name.contains('/') || name.contains('\0') {
        "contains '/' or NUL"
    } else if name.contains('\n') {
        "contains a newline"
    } else if name.starts_with("cgroup.")
        || Controller::ALL.iter().any(|c| {
            name.strip_prefix(c.name())
                .is_some_and(|rest| rest.starts_with('.'))
        })
    {
        "looks like a control file"
    } else {
        return Ok(());
    };
    Err(CgroupError::InvalidName {
        name: name.to_string(),
        reason,
    })
}
