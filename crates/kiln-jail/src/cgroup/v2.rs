//! The unified (v2) hierarchy: delegation of controllers down to Kiln's parent group, limits in
//! the v2 file formats, `cgroup.kill` and `cgroup.freeze`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fsutil::{self, Mode};
use super::layout::Hierarchy;
use super::{CgroupError, CgroupLimits, Controller};

/// The leaf the service's own processes are moved into when its cgroup must distribute
/// controllers to children.
pub(crate) const SERVICE_LEAF: &str = "service";

/// How many times enabling is retried when new processes appear in the service's cgroup between
/// moving them out and writing `cgroup.subtree_control`.
const ENABLE_ATTEMPTS: usize = 5;

/// Enables `wanted` for the children of the last group of `chain` (Kiln's groups below the
/// service's own cgroup, top first), top-down: first in the own cgroup's
/// `cgroup.subtree_control`, then in each group of the chain.
///
/// Returns the controllers sandboxes will have. A controller the service's cgroup was not given
/// (not in its `cgroup.controllers`: the host or systemd did not delegate it) is left out with a
/// warning; `create` then refuses limits that need it instead of silently not enforcing them.
pub(crate) fn enable_controllers(
    mode: Mode,
    hierarchy: &Hierarchy,
    chain: &[PathBuf],
    wanted: &[Controller],
) -> Result<Vec<Controller>, CgroupError> {
    let own = &hierarchy.own_dir;
    let available = tokens(fsutil::read_optional(&own.join("cgroup.controllers"))?);
    let mut usable = Vec::new();
    for &controller in wanted {
        if available.iter().any(|a| a == controller.name()) {
            usable.push(controller);
        } else {
            tracing::warn!(%controller, own = %own.display(),
                "controller not delegated to the service's cgroup; limits needing it will be refused");
        }
    }
    if usable.is_empty() {
        return Ok(usable);
    }

    let missing = missing_in(own, &usable)?;
    if !missing.is_empty() {
        let value = plus_list(&missing);
        let path = own.join("cgroup.subtree_control");
        // At the root of what we can see, processes may be legitimately present (the true root
        // is exempt from the no-internal-processes rule, and moving init is out of the question),
        // so try first and only move on EBUSY (a cgroup-namespace root is not exempt).
        let at_root = *own == hierarchy.mount_point;
        if !at_root && !fsutil::read_pids(&own.join("cgroup.procs"))?.is_empty() {
            move_to_leaf(mode, own)?;
        }
        let mut attempt = 0;
        loop {
            match fsutil::write(mode, &path, &value) {
                Ok(()) => break,
                Err(CgroupError::Write { source, .. })
                    if source.raw_os_error() == Some(libc::EBUSY) && attempt < ENABLE_ATTEMPTS =>
                {
                    attempt += 1;
                    move_to_leaf(mode, own)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    for dir in chain {
        let missing = missing_in(dir, &usable)?;
        if !missing.is_empty() {
            fsutil::write(
                mode,
                &dir.join("cgroup.subtree_control"),
                &plus_list(&missing),
            )?;
        }
    }
    Ok(usable)
}

/// The controllers of `wanted` not yet in `dir`'s `cgroup.subtree_control`.
fn missing_in(dir: &Path, wanted: &[Controller]) -> Result<Vec<Controller>, CgroupError> {
    let enabled = tokens(fsutil::read_optional(&dir.join("cgroup.subtree_control"))?);
    Ok(wanted
        .iter()
        .copied()
        .filter(|c| !enabled.iter().any(|e| e == c.name()))
        .collect())
}

/// Words of a controller list; `+` prefixes are dropped so a fixture file holding what was
/// written reads like the kernel file.
fn tokens(text: Option<String>) -> Vec<String> {
    text.unwrap_or_default()
        .split_whitespace()
        .filter(|w| !w.starts_with('-'))
        .map(|w| w.trim_start_matches('+').to_string())
        .collect()
}

fn plus_list(controllers: &[Controller]) -> String {
    controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Moves every process of the service's own cgroup into `<own>/service`, since a v2 cgroup
/// that hands controllers to its children may not hold processes itself.
fn move_to_leaf(mode: Mode, own: &Path) -> Result<(), CgroupError> {
    let leaf = own.join(SERVICE_LEAF);
    fsutil::mkdir(&leaf)?;
    let from = own.join("cgroup.procs");
    let to = leaf.join("cgroup.procs");
    // Processes forked during a pass land in `own` again; a few passes settle it.
    for _ in 0..10 {
        let pids = fsutil::read_pids(&from)?;
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            match fsutil::write_pid(mode, &to, pid) {
                Ok(()) => {}
                Err(CgroupError::Write { source, .. })
                    if source.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
        tracing::info!(leaf = %leaf.display(), "moved the service's processes into a leaf cgroup");
        if mode == Mode::Simulated {
            // A fixture's cgroup.procs does not empty itself.
            break;
        }
    }
    Ok(())
}

/// Writes the limits served by the unified hierarchy, for the `enabled` controllers.
pub(crate) fn write_limits(
    mode: Mode,
    dir: &Path,
    enabled: &[Controller],
    limits: &CgroupLimits,
) -> Result<(), CgroupError> {
    if enabled.contains(&Controller::Cpuset) {
        if let Some(cpus) = &limits.cpuset_cpus {
            fsutil::write(mode, &dir.join("cpuset.cpus"), cpus)?;
        }
    }
    if enabled.contains(&Controller::Memory) {
        if let Some(bytes) = limits.memory_bytes {
            fsutil::write(mode, &dir.join("memory.max"), &bytes.to_string())?;
            // Absent when the kernel has no swap support; then there is no swap to escape to.
            if !fsutil::write_optional(mode, &dir.join("memory.swap.max"), "0")? {
                tracing::debug!(dir = %dir.display(), "no memory.swap.max");
            }
        }
    }
    if enabled.contains(&Controller::Pids) {
        if let Some(max) = limits.pids_max {
            fsutil::write(mode, &dir.join("pids.max"), &max.to_string())?;
        }
    }
    if enabled.contains(&Controller::Cpu) {
        if let Some(q) = limits.cpu_quota {
            let value = format!("{} {}", q.quota_us, q.period_us);
            fsutil::write(mode, &dir.join("cpu.max"), &value)?;
        }
    }
    Ok(())
}

/// Kills every process of the group at once (`cgroup.kill`, Linux 5.14). `Ok(false)` if this
/// kernel does not have it.
pub(crate) fn kill(mode: Mode, dir: &Path) -> Result<bool, CgroupError> {
    fsutil::write_optional(mode, &dir.join("cgroup.kill"), "1")
}

/// Freezes the group (`cgroup.freeze`, Linux 5.2) and waits briefly for `frozen 1` in
/// `cgroup.events`. `Ok(false)` if this kernel cannot freeze.
pub(crate) fn freeze(mode: Mode, dir: &Path) -> Result<bool, CgroupError> {
    if !fsutil::write_optional(mode, &dir.join("cgroup.freeze"), "1")? {
        return Ok(false);
    }
    if mode == Mode::Simulated {
        return Ok(true);
    }
    let events = dir.join("cgroup.events");
    let deadline = Instant::now() + Duration::from_millis(100);
    while Instant::now() < deadline {
        let text = fsutil::read(&events)?;
        if text.lines().any(|l| l.trim() == "frozen 1") {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(true)
}

pub(crate) fn thaw(mode: Mode, dir: &Path) -> Result<(), CgroupError> {
    fsutil::write(mode, &dir.join("cgroup.freeze"), "0")
}
