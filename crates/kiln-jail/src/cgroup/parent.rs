//! Kiln's parent group (`<own cgroup>/<name>` in every hierarchy Kiln uses), the instance group
//! each Kiln process claims under it, and the creation of sandbox groups under an instance.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::fsutil::{self, Mode};
use super::layout::{CgroupLayout, Hierarchy};
use super::sandbox::SandboxCgroup;
use super::{check_name, v1, v2, CgroupError, CgroupLimits, CgroupVersion, Controller};

/// One directory of a group in one hierarchy, with the controllers that directory governs.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) version: CgroupVersion,
    pub(crate) controllers: Vec<Controller>,
    pub(crate) dir: PathBuf,
}

impl Group {
    pub(crate) fn has(&self, controller: Controller) -> bool {
        self.controllers.contains(&controller)
    }
}

/// The controllers Kiln enables for sandboxes in the unified hierarchy. cpuset is enabled only
/// when a sandbox asks for CPUs, as it makes every group creation do cpuset work in the kernel.
const V2_CONTROLLERS: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

impl CgroupLayout {
    /// Creates (idempotently) Kiln's parent group `<own cgroup>/<name>` in every hierarchy Kiln
    /// uses. Sandbox groups go below it, so Kiln never writes at a hierarchy root unless the
    /// service itself runs there.
    ///
    /// v1 cpuset: the parent gets the CPUs and memory nodes of the service's cgroup. v2: if
    /// controllers must be enabled and the service's cgroup holds processes, those move into the
    /// leaf `<own>/service` first, then `+memory +pids +cpu` are enabled top-down.
    pub fn prepare(&self, name: &str) -> Result<CgroupParent, CgroupError> {
        check_name(name)?;
        if self.unified.is_some() && name == v2::SERVICE_LEAF {
            return Err(CgroupError::InvalidName {
                name: name.to_string(),
                reason: "reserved for the service's own processes",
            });
        }
        let mut groups = Vec::new();
        for h in &self.v1 {
            // With a unified hierarchy, killing uses cgroup.kill or cgroup.freeze there, and the
            // v1 freezer must then stay unused: the two freezers interfere.
            let used: Vec<Controller> = h
                .controllers
                .iter()
                .copied()
                .filter(|c| *c != Controller::Freezer || self.unified.is_none())
                .collect();
            if used.is_empty() {
                continue;
            }
            let dir = h.own_dir.join(name);
            fsutil::mkdir(&dir)?;
            if h.has(Controller::Cpuset) {
                v1::init_cpuset(self.mode, &h.own_dir, &dir, None, true)?;
            }
            groups.push(Group {
                version: CgroupVersion::V1,
                controllers: used,
                dir,
            });
        }
        if let Some(h) = &self.unified {
            let dir = h.own_dir.join(name);
            fsutil::mkdir(&dir)?;
            let wanted: Vec<Controller> =
                V2_CONTROLLERS.into_iter().filter(|c| h.has(*c)).collect();
            let chain = vec![dir.clone()];
            let enabled = v2::enable_controllers(self.mode, h, &chain, &wanted)?;
            groups.push(Group {
                version: CgroupVersion::V2,
                controllers: enabled,
                dir,
            });
        }
        Ok(CgroupParent {
            name: name.to_string(),
            groups,
            unified: self.unified.clone(),
            mode: self.mode,
            v2_chain: self.unified.iter().map(|h| h.own_dir.join(name)).collect(),
            lock: None,
        })
    }
}

/// Kiln's parent group, or one Kiln process's instance group under it, in every hierarchy Kiln
/// uses. Dropping an instance removes it with whatever sandboxes are left in it.
#[derive(Debug)]
pub struct CgroupParent {
    pub(crate) name: String,
    /// v1 groups first, the unified group (if any) last.
    pub(crate) groups: Vec<Group>,
    pub(crate) unified: Option<Hierarchy>,
    pub(crate) mode: Mode,
    /// The unified directories from below the service's own cgroup down to this group, top
    /// first: where a controller must be enabled for this group's children to have it.
    pub(crate) v2_chain: Vec<PathBuf>,
    /// An instance's ownership: a lock on its first directory, held while the instance lives.
    pub(crate) lock: Option<File>,
}

impl CgroupParent {
    /// The parent group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parent's directory in every hierarchy it spans.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.groups.iter().map(|g| g.dir.clone()).collect()
    }

    /// Creates a sandbox's group `<parent>/<name>` in every hierarchy Kiln uses and writes the
    /// limits. A group of that name must not exist yet: reusing one could hand a new sandbox
    /// the processes of an old one. On error, whatever was created is removed.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<SandboxCgroup, CgroupError> {
        check_name(name)?;
        let wants_cpuset = limits.cpuset_cpus.is_some();
        let mut plan: Vec<(Group, &Group)> = Vec::new();
        for parent in &self.groups {
            let mut controllers = parent.controllers.clone();
            if parent.version == CgroupVersion::V1 {
                // A cpuset-only hierarchy is only worth a group when the sandbox is pinned.
                if !wants_cpuset && controllers.iter().all(|c| *c == Controller::Cpuset) {
                    continue;
                }
            } else if wants_cpuset {
                if let Some(h) = self.unified.as_ref().filter(|h| h.has(Controller::Cpuset)) {
                    let enabled = v2::enable_controllers(
                        self.mode,
                        h,
                        &self.v2_chain,
                        &[Controller::Cpuset],
                    )?;
                    controllers.extend(enabled);
                }
            }
            let group = Group {
                version: parent.version,
                controllers,
                dir: parent.dir.join(name),
            };
            plan.push((group, parent));
        }
        let required = [
            (limits.memory_bytes.is_some(), Controller::Memory),
            (limits.pids_max.is_some(), Controller::Pids),
            (limits.cpu_quota.is_some(), Controller::Cpu),
            (wants_cpuset, Controller::Cpuset),
        ];
        for (needed, controller) in required {
            if needed && !plan.iter().any(|(g, _)| g.has(controller)) {
                return Err(CgroupError::ControllerUnavailable {
                    controller,
                    reason: format!(
                        "no hierarchy under Kiln's parent group ({}) offers it",
                        self.describe_dirs()
                    ),
                });
            }
        }

        let mut sandbox = SandboxCgroup::empty(name, self);
        for (group, parent) in plan {
            if !fsutil::mkdir(&group.dir)? {
                return Err(CgroupError::Mkdir {
                    path: group.dir,
                    source: std::io::Error::from_raw_os_error(libc::EEXIST),
                });
            }
            sandbox.push_group(group.clone());
            match group.version {
                CgroupVersion::V1 => {
                    if group.has(Controller::Cpuset) {
                        let cpus = limits.cpuset_cpus.as_deref();
                        v1::init_cpuset(self.mode, &parent.dir, &group.dir, cpus, false)?;
                    }
                    v1::write_limits(self.mode, &group.dir, &group.controllers, limits)?;
                }
                CgroupVersion::V2 => {
                    v2::write_limits(self.mode, &group.dir, &group.controllers, limits)?;
                }
            }
        }
        sandbox.finish_create()?;
        Ok(sandbox)
    }

    /// Names of the existing child groups, in any hierarchy.
    pub fn children(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        for g in &self.groups {
            names.extend(fsutil::subdirs(&g.dir)?);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Removes leftover child groups (from a crashed earlier run): kills their members, removes
    /// the directories. Returns how many groups were removed.
    pub fn sweep(&self) -> Result<usize, CgroupError> {
        self.sweep_matching(|_| true)
    }

    /// Like `sweep`, for the child groups whose name `stale` accepts (others may belong to a
    /// live process sharing this parent).
    pub fn sweep_matching(&self, stale: impl Fn(&str) -> bool) -> Result<usize, CgroupError> {
        let mut removed = 0;
        for name in self.children()?.into_iter().filter(|n| stale(n)) {
            let groups = self
                .groups
                .iter()
                .map(|g| Group {
                    version: g.version,
                    controllers: g.controllers.clone(),
                    dir: g.dir.join(&name),
                })
                .filter(|g| g.dir.is_dir())
                .collect();
            let sandbox = SandboxCgroup::existing(&name, groups, self);
            sandbox.kill()?;
            sandbox.remove()?;
            tracing::info!(group = %name, parent = %self.name, "removed a leftover sandbox cgroup");
            removed += 1;
        }
        Ok(removed)
    }

    /// Sweeps the children, then removes the parent group itself from every hierarchy (tests,
    /// uninstall). The service's own processes stay where they are.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        let result = self.remove_inner();
        self.lock = None;
        result
    }

    fn remove_inner(&mut self) -> Result<(), CgroupError> {
        self.sweep()?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Some(g) = self.groups.pop() {
            fsutil::rmdir_tree(self.mode, &g.dir, deadline)?;
        }
        Ok(())
    }

    fn describe_dirs(&self) -> String {
        self.groups
            .iter()
            .map(|g| g.dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        // Only an instance is this process's to remove; the shared parent stays for the others.
        if self.lock.is_some() && !self.groups.is_empty() {
            if let Err(e) = self.remove_inner() {
                tracing::warn!(group = %self.name, error = %e, "could not remove Kiln's instance cgroup");
            }
        }
    }
}
