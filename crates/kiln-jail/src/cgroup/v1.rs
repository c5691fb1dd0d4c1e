//! Legacy (v1) hierarchies: limits in their v1 file formats, cpuset initialisation, the freezer.

use std::path::Path;
use std::time::{Duration, Instant};

use super::fsutil::{self, Mode};
use super::{CgroupError, CgroupLimits, Controller};

/// Gives a new v1 cpuset group its CPUs and memory nodes. A v1 cpuset starts with both empty and
/// the kernel refuses to attach any task to it (ENOSPC) until they are set; children do not
/// inherit them unless `cgroup.clone_children` was set on the parent, which Kiln does not rely
/// on because a crashed run or another tool may have left it either way.
///
/// `cpus`: the sandbox's own CPU list, or `None` to copy the parent's. When `only_if_empty`, a
/// group already configured (Kiln's parent from an earlier run) is left as it is.
pub(crate) fn init_cpuset(
    mode: Mode,
    parent: &Path,
    dir: &Path,
    cpus: Option<&str>,
    only_if_empty: bool,
) -> Result<(), CgroupError> {
    for (file, wanted) in [("cpuset.cpus", cpus), ("cpuset.mems", None)] {
        let path = dir.join(file);
        if only_if_empty {
            let current = fsutil::read_optional(&path)?.unwrap_or_default();
            if !current.trim().is_empty() {
                continue;
            }
        }
        let value = match wanted {
            Some(value) => value.to_string(),
            None => {
                let from = parent.join(file);
                let value = fsutil::read(&from)?.trim().to_string();
                if value.is_empty() {
                    return Err(CgroupError::Parse {
                        path: from,
                        reason: "the parent cpuset is empty, so a child could hold no task".into(),
                    });
                }
                value
            }
        };
        fsutil::write(mode, &path, &value)?;
    }
    Ok(())
}

/// Writes the limits served by a v1 hierarchy whose controllers are `controllers`.
pub(crate) fn write_limits(
    mode: Mode,
    dir: &Path,
    controllers: &[Controller],
    limits: &CgroupLimits,
) -> Result<(), CgroupError> {
    if controllers.contains(&Controller::Memory) {
        if let Some(bytes) = limits.memory_bytes {
            let value = bytes.to_string();
            // memsw must never be below the memory limit, so the memory limit goes first; both
            // start unlimited in a new group.
            fsutil::write(mode, &dir.join("memory.limit_in_bytes"), &value)?;
            // memsw (memory + swap) only exists with swap accounting; without it there is
            // nothing to close.
            if !fsutil::write_optional(mode, &dir.join("memory.memsw.limit_in_bytes"), &value)? {
                tracing::debug!(dir = %dir.display(), "no memory.memsw.limit_in_bytes (swap accounting off)");
            }
        }
    }
    if controllers.contains(&Controller::Pids) {
        if let Some(max) = limits.pids_max {
            fsutil::write(mode, &dir.join("pids.max"), &max.to_string())?;
        }
    }
    if controllers.contains(&Controller::Cpu) {
        if let Some(q) = limits.cpu_quota {
            // The period first: the kernel validates the quota against the current period.
            fsutil::write(
                mode,
                &dir.join("cpu.cfs_period_us"),
                &q.period_us.to_string(),
            )?;
            fsutil::write(mode, &dir.join("cpu.cfs_quota_us"), &q.quota_us.to_string())?;
        }
    }
    Ok(())
}

/// Freezes a v1 freezer group and waits (briefly) until the kernel reports it frozen, so that no
/// member can fork while the members are being signalled.
pub(crate) fn freeze(mode: Mode, dir: &Path) -> Result<(), CgroupError> {
    let state = dir.join("freezer.state");
    fsutil::write(mode, &state, "FROZEN")?;
    if mode == Mode::Simulated {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_millis(100);
    while Instant::now() < deadline {
        if fsutil::read(&state)?.trim() == "FROZEN" {
            return Ok(());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // Still FREEZING (a task in an uninterruptible sleep): signalling is still right, the task
    // dies when it wakes; the caller loops until the group is empty.
    Ok(())
}

pub(crate) fn thaw(mode: Mode, dir: &Path) -> Result<(), CgroupError> {
    fsutil::write(mode, &dir.join("freezer.state"), "THAWED")
}
