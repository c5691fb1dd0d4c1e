//! One sandbox's group, spanning every hierarchy Kiln uses: attaching processes, accounting,
//! killing and removal.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::fsutil::{self, Mode};
use super::layout::Hierarchy;
use super::parent::{CgroupParent, Group};
use super::stats::{self, CpuCounter};
use super::{v1, v2, CgroupError, CgroupLimits, CgroupStats, CgroupVersion, Controller};

/// See `SandboxCgroup::freezer`.
#[derive(Debug)]
enum Freezer {
    V2(PathBuf),
    V1(PathBuf),
    None,
}

/// How long `remove` waits for the members of a killed group to finish exiting.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the signal-based kill keeps re-killing before giving up.
const KILL_TIMEOUT: Duration = Duration::from_secs(2);
/// Drop must not hang a thread for long; it is only a safety net.
const DROP_TIMEOUT: Duration = Duration::from_millis(300);

/// A sandbox's cgroup in every hierarchy Kiln uses. Dropping it without `remove` kills what is
/// left in it and removes it, best effort.
#[derive(Debug)]
pub struct SandboxCgroup {
    name: String,
    /// v1 groups first, the unified group (if any) last. Emptied once removed.
    groups: Vec<Group>,
    cpu: Option<CpuCounter>,
    mode: Mode,
    /// The unified hierarchy, and the unified directories from below the service's own cgroup
    /// down to this group: what groups nested in this one need.
    unified: Option<Hierarchy>,
    v2_chain: Vec<PathBuf>,
}

impl SandboxCgroup {
    pub(crate) fn empty(name: &str, parent: &CgroupParent) -> Self {
        SandboxCgroup {
            name: name.to_string(),
            groups: Vec::new(),
            cpu: None,
            mode: parent.mode,
            unified: parent.unified.clone(),
            v2_chain: parent
                .v2_chain
                .iter()
                .cloned()
                .chain(parent.v2_chain.last().map(|last| last.join(name)))
                .collect(),
        }
    }

    /// A handle on groups that already exist (leftovers found by `sweep`).
    pub(crate) fn existing(name: &str, groups: Vec<Group>, parent: &CgroupParent) -> Self {
        let mut sandbox = Self::empty(name, parent);
        sandbox.cpu = CpuCounter::for_groups(&groups);
        sandbox.groups = groups;
        sandbox
    }

    /// This group as the parent of groups nested in it: an owned view that can create them on
    /// another thread. Dropping it removes nothing.
    pub fn as_parent(&self) -> CgroupParent {
        CgroupParent {
            name: self.name.clone(),
            groups: self.groups.clone(),
            unified: self.unified.clone(),
            mode: self.mode,
            v2_chain: self.v2_chain.clone(),
            lock: None,
        }
    }

    /// Hands this group's controllers on to groups nested in it (v2 `cgroup.subtree_control`;
    /// v1 hierarchies need nothing). The group must hold no process yet: a v2 group that
    /// distributes controllers may not.
    pub fn delegate(&self) -> Result<(), CgroupError> {
        if let (Some(h), Some(g)) = (&self.unified, self.unified()) {
            v2::enable_controllers(self.mode, h, &self.v2_chain, &g.controllers)?;
        }
        Ok(())
    }

    /// Creates a group nested in this one (the warden's, or one process's own) with `limits`.
    /// [`SandboxCgroup::delegate`] must have been called first.
    pub fn create_child(
        &self,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<SandboxCgroup, CgroupError> {
        self.as_parent().create(name, limits)
    }

    /// Lets go of a nested group whose directories went with its parent's removal, so dropping
    /// it does nothing.
    pub fn forget(mut self) {
        self.groups.clear();
    }

    pub(crate) fn push_group(&mut self, group: Group) {
        self.groups.push(group);
    }

    pub(crate) fn finish_create(&mut self) -> Result<(), CgroupError> {
        self.cpu = CpuCounter::for_groups(&self.groups);
        Ok(())
    }

    fn unified(&self) -> Option<&Group> {
        self.groups.iter().find(|g| g.version == CgroupVersion::V2)
    }

    /// The group's name (its directory name in every hierarchy).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group's directory in every hierarchy it spans (v1 first, unified last).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.groups.iter().map(|g| g.dir.clone()).collect()
    }

    /// Attaches a process (waiting, not yet exec'd) to every hierarchy.
    ///
    /// The unified group goes first: if a later v1 write fails, the process is already where
    /// `kill` (cgroup.kill) will find it.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        let mut order: Vec<&Group> = self
            .groups
            .iter()
            .filter(|g| g.version == CgroupVersion::V2)
            .collect();
        order.extend(
            self.groups
                .iter()
                .filter(|g| g.version == CgroupVersion::V1),
        );
        for g in order {
            let procs = g.dir.join("cgroup.procs");
            match fsutil::write_pid(self.mode, &procs, pid) {
                Err(CgroupError::Write { source, .. })
                    if source.raw_os_error() == Some(libc::ENOSPC)
                        && g.version == CgroupVersion::V1
                        && g.has(Controller::Cpuset) =>
                {
                    // Someone emptied the cpuset since create (CPU hot-unplug shrinks them);
                    // refill what is empty from the parent and try once more.
                    let parent = g.dir.parent().unwrap_or(&g.dir);
                    v1::init_cpuset(self.mode, parent, &g.dir, None, true)?;
                    fsutil::write_pid(self.mode, &procs, pid)?;
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Opens every `cgroup.procs` of the group (v1 hierarchies first, unified last) for
    /// writing. The kernel checks a write against the credentials of the opener, so a process
    /// that is later unprivileged or in another namespace can still join the group through these.
    pub fn open_procs_files(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        Ok(self
            .open_procs_files_with_paths()?
            .into_iter()
            .map(|(_, fd)| fd)
            .collect())
    }

    /// Same as `open_procs_files`, with each file's path for error messages.
    pub fn open_procs_files_with_paths(&self) -> Result<Vec<(PathBuf, OwnedFd)>, CgroupError> {
        let mut out = Vec::with_capacity(self.groups.len());
        for g in self
            .groups
            .iter()
            .filter(|g| g.version == CgroupVersion::V1)
            .chain(self.unified())
        {
            let path = g.dir.join("cgroup.procs");
            let file = fsutil::open_procs(self.mode, &path)?;
            out.push((path, OwnedFd::from(file)));
        }
        Ok(out)
    }

    /// CPU time used by the group so far (v1 `cpuacct.usage`, else v2 `cpu.stat`).
    pub fn cpu_usage(&self) -> Result<Duration, CgroupError> {
        match &self.cpu {
            Some(counter) => counter.read(),
            None => Err(CgroupError::NoCpuAccounting {
                name: self.name.clone(),
            }),
        }
    }

    /// CPU time, peak memory, OOM kills and peak task count.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        Ok(CgroupStats {
            cpu_ns: u64::try_from(self.cpu_usage()?.as_nanos()).unwrap_or(u64::MAX),
            memory_peak_bytes: stats::memory_peak(&self.groups)?,
            oom_kills: stats::oom_kills(&self.groups)?,
            pids_peak: stats::pids_peak(&self.groups)?,
        })
    }

    /// Processes killed by the OOM killer in the group.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        stats::oom_kills(&self.groups)
    }

    /// Pids in the group and the groups nested in it (union over every hierarchy), as seen from
    /// the service's pid namespace.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for g in &self.groups {
            collect_pids(&g.dir, &mut pids)?;
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Kills every process of the group. With `cgroup.kill` (unified group, Linux 5.14) this is
    /// one write and returns at once; `remove` waits for the exits. Otherwise the group is frozen
    /// (v2 `cgroup.freeze`, else the v1 freezer) so nothing can fork, every member gets SIGKILL,
    /// and it is thawed so they die, in a loop until it is empty.
    pub fn kill(&self) -> Result<(), CgroupError> {
        if let Some(g) = self.unified() {
            if v2::kill(self.mode, &g.dir)? {
                return Ok(());
            }
        }
        let freezer = self.freezer();
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            let frozen = self.freeze(&freezer)?;
            let result = self.signal_members();
            if frozen {
                self.thaw(&freezer)?;
            }
            let remaining = result?;
            if remaining.is_empty() || self.mode == Mode::Simulated {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::NotEmpty {
                    path: self.groups[0].dir.clone(),
                    pids: remaining,
                    waited: KILL_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The one freezer the group may use: the v1 freezer and v2 `cgroup.freeze` interfere, so
    /// with a unified hierarchy only the latter (`prepare` leaves the v1 freezer out then).
    fn freezer(&self) -> Freezer {
        if let Some(g) = self.unified() {
            return Freezer::V2(g.dir.clone());
        }
        match self.groups.iter().find(|g| g.has(Controller::Freezer)) {
            Some(g) => Freezer::V1(g.dir.clone()),
            None => Freezer::None,
        }
    }

    /// Freezes the group; `false` if it has no working freezer and members are signalled live.
    fn freeze(&self, freezer: &Freezer) -> Result<bool, CgroupError> {
        match freezer {
            Freezer::V2(dir) => v2::freeze(self.mode, dir),
            Freezer::V1(dir) => v1::freeze(self.mode, dir).map(|()| true),
            Freezer::None => Ok(false),
        }
    }

    fn thaw(&self, freezer: &Freezer) -> Result<(), CgroupError> {
        match freezer {
            Freezer::V2(dir) => v2::thaw(self.mode, dir),
            Freezer::V1(dir) => v1::thaw(self.mode, dir),
            Freezer::None => Ok(()),
        }
    }

    /// SIGKILLs every member; returns the pids that were found (empty: the group is empty).
    fn signal_members(&self) -> Result<Vec<i32>, CgroupError> {
        let pids = self.pids()?;
        if self.mode == Mode::Simulated {
            // Fixture pids are made up; they may be real processes of this machine.
            return Ok(pids);
        }
        let me = std::process::id() as i32;
        for &pid in &pids {
            // Pid 0 is how cgroup.procs shows a process outside our pid namespace, and
            // kill(0) would hit our own process group. Never kill ourselves either.
            let Some(target) = rustix::process::Pid::from_raw(pid).filter(|_| pid != me) else {
                continue;
            };
            match rustix::process::kill_process(target, rustix::process::Signal::KILL) {
                Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                Err(e) => {
                    return Err(CgroupError::Signal {
                        path: self.groups[0].dir.clone(),
                        pid,
                        source: e.into(),
                    })
                }
            }
        }
        Ok(pids)
    }

    /// Waits (up to 2 s) until the group is empty, then removes its directory in every
    /// hierarchy, retrying the transient EBUSY of just-exited members. If it does not empty in
    /// time, the error is returned and the drop that follows kills and removes best effort.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.wait_empty(EMPTY_TIMEOUT)?;
        let deadline = Instant::now() + EMPTY_TIMEOUT;
        while let Some(g) = self.groups.first() {
            fsutil::rmdir_tree(self.mode, &g.dir, deadline)?;
            self.groups.remove(0);
        }
        Ok(())
    }

    fn wait_empty(&self, timeout: Duration) -> Result<(), CgroupError> {
        if self.mode == Mode::Simulated {
            return Ok(());
        }
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(CgroupError::NotEmpty {
                    path: self.groups[0].dir.clone(),
                    pids,
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

/// The pids of `dir`'s `cgroup.procs` and of every group nested in it.
fn collect_pids(dir: &std::path::Path, pids: &mut Vec<i32>) -> Result<(), CgroupError> {
    pids.extend(fsutil::read_pids(&dir.join("cgroup.procs"))?);
    for child in fsutil::subdirs(dir)? {
        collect_pids(&dir.join(child), pids)?;
    }
    Ok(())
}

impl SandboxCgroup {
    /// Memory the group uses now (including the page cache and tmpfs charged to it).
    pub fn memory_current(&self) -> Result<Option<u64>, CgroupError> {
        stats::memory_current(&self.groups)
    }

    /// Starts a new peak-memory measurement (between the stages of one program). v1 resets
    /// `memory.max_usage_in_bytes`; v2's `memory.peak` resets only as seen through the fd that
    /// reset it, so there the peak stays the group's lifetime peak.
    pub fn reset_peak(&self) -> Result<(), CgroupError> {
        for g in &self.groups {
            if g.version == CgroupVersion::V1 && g.has(Controller::Memory) {
                fsutil::write(self.mode, &g.dir.join("memory.max_usage_in_bytes"), "0")?;
            }
        }
        Ok(())
    }

    /// Rewrites the limits of an existing group: a pooled sandbox takes the limits of the run it is
    /// given to. Only controllers the group was created with are touched.
    pub fn set_limits(&self, limits: &super::CgroupLimits) -> Result<(), CgroupError> {
        for g in &self.groups {
            match g.version {
                CgroupVersion::V1 => {
                    if let (true, Some(bytes)) = (g.has(Controller::Memory), limits.memory_bytes) {
                        // v1 keeps memsw >= memory at every step: raising goes memsw first,
                        // lowering memory first; trying memsw first covers both.
                        let memsw = g.dir.join("memory.memsw.limit_in_bytes");
                        let _ = fsutil::write_optional(self.mode, &memsw, &bytes.to_string());
                    }
                    v1::write_limits(self.mode, &g.dir, &g.controllers, limits)?;
                }
                CgroupVersion::V2 => v2::write_limits(self.mode, &g.dir, &g.controllers, limits)?,
            }
        }
        Ok(())
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        if self.groups.is_empty() {
            return;
        }
        let result = self
            .kill()
            .and_then(|()| self.wait_empty(DROP_TIMEOUT))
            .and_then(|()| {
                let deadline = Instant::now() + DROP_TIMEOUT;
                self.groups
                    .iter()
                    .try_for_each(|g| fsutil::rmdir_tree(self.mode, &g.dir, deadline))
            });
        if let Err(e) = result {
            tracing::warn!(group = %self.name, error = %e, "could not clean up a sandbox cgroup");
        }
    }
}
