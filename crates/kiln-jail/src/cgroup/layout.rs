//! Detection: which hierarchy serves each controller and where the service's own cgroup is in it.
//!
//! Decided per controller, not per host, because hybrid hosts are common: legacy hierarchies for
//! the controllers that matter plus a cgroup2 mount with few or no controllers, whose core files
//! (`cgroup.kill`, `cpu.stat`) are still worth using.

use std::path::{Path, PathBuf};

use super::fsutil::{self, Mode};
use super::{CgroupError, CgroupVersion, Controller};

const MOUNTINFO: &str = "/proc/self/mountinfo";
const PROC_CGROUP: &str = "/proc/self/cgroup";

/// One hierarchy Kiln can use: a v1 mount with at least one controller Kiln knows, or the unified
/// mount.
#[derive(Debug, Clone)]
pub(crate) struct Hierarchy {
    pub(crate) version: CgroupVersion,
    /// The Kiln controllers this hierarchy serves (for v2, only those not bound to v1).
    pub(crate) controllers: Vec<Controller>,
    /// Where the hierarchy is mounted (re-rooted for fixtures).
    pub(crate) mount_point: PathBuf,
    /// The service's own cgroup in this hierarchy.
    pub(crate) own_dir: PathBuf,
}

impl Hierarchy {
    pub(crate) fn has(&self, controller: Controller) -> bool {
        self.controllers.contains(&controller)
    }
}

/// Where each controller lives on this host and where the service itself sits in each hierarchy.
#[derive(Debug, Clone)]
pub struct CgroupLayout {
    pub(crate) v1: Vec<Hierarchy>,
    pub(crate) unified: Option<Hierarchy>,
    pub(crate) mode: Mode,
}

/// Where one controller is served, for `kiln doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerPlacement {
    /// The controller.
    pub controller: Controller,
    /// The hierarchy version serving it.
    pub version: CgroupVersion,
    /// The service's own cgroup directory in that hierarchy.
    pub own_dir: PathBuf,
}

impl CgroupLayout {
    /// Detects the layout of the running host from `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn detect() -> Result<Self, CgroupError> {
        let mountinfo = fsutil::read(Path::new(MOUNTINFO))?;
        let cgroup = fsutil::read(Path::new(PROC_CGROUP))?;
        Self::from_proc(&mountinfo, &cgroup, None)
    }

    /// Same as `detect`, from given text, with every mount point re-rooted under `root`. A layout
    /// built with a `root` treats its directories as plain-file fixtures: writes create their
    /// files and nothing is ever signalled.
    pub fn from_proc(
        mountinfo: &str,
        proc_self_cgroup: &str,
        root: Option<&Path>,
    ) -> Result<Self, CgroupError> {
        let mounts = parse_mountinfo(mountinfo)?;
        let memberships = parse_proc_cgroup(proc_self_cgroup)?;
        let reroot = |mount_point: &str| match root {
            Some(root) => root.join(mount_point.trim_start_matches('/')),
            None => PathBuf::from(mount_point),
        };

        let mut v1: Vec<Hierarchy> = Vec::new();
        for mount in mounts.iter().filter(|m| m.fstype == "cgroup") {
            let controllers: Vec<Controller> = mount
                .super_options
                .split(',')
                .filter_map(Controller::from_name)
                .collect();
            let Some(first) = controllers.first() else {
                continue;
            };
            // The same hierarchy can be mounted twice (bind mounts, containers); the first mount
            // that shows the service's cgroup wins.
            if controllers
                .iter()
                .all(|c| v1.iter().any(|h| h.controllers.contains(c)))
            {
                continue;
            }
            let Some(membership) = memberships
                .iter()
                .find(|m| m.id != 0 && m.controllers.iter().any(|c| c == first.name()))
            else {
                continue;
            };
            let Some(rel) = relative_own_path(&mount.root, &membership.path) else {
                tracing::debug!(mount = %mount.mount_point, root = %mount.root,
                    own = %membership.path, "cgroup mount does not show our own cgroup");
                continue;
            };
            let mount_point = reroot(&mount.mount_point);
            v1.push(Hierarchy {
                version: CgroupVersion::V1,
                controllers,
                own_dir: join_rel(&mount_point, &rel),
                mount_point,
            });
        }

        let mut unified = None;
        if let Some(own) = memberships.iter().find(|m| m.id == 0) {
            for mount in mounts.iter().filter(|m| m.fstype == "cgroup2") {
                let Some(rel) = relative_own_path(&mount.root, &own.path) else {
                    continue;
                };
                let mount_point = reroot(&mount.mount_point);
                let listed = fsutil::read_optional(&mount_point.join("cgroup.controllers"))?
                    .unwrap_or_default();
                let controllers = listed
                    .split_whitespace()
                    .filter_map(Controller::from_name)
                    .filter(|c| !v1.iter().any(|h| h.has(*c)))
                    .collect();
                unified = Some(Hierarchy {
                    version: CgroupVersion::V2,
                    controllers,
                    own_dir: join_rel(&mount_point, &rel),
                    mount_point,
                });
                break;
            }
        }

        if v1.is_empty() && unified.is_none() {
            return Err(CgroupError::NoHierarchy);
        }
        Ok(CgroupLayout {
            v1,
            unified,
            mode: if root.is_some() {
                Mode::Simulated
            } else {
                Mode::Kernel
            },
        })
    }

    /// Per controller: which version serves it and the directory of the service's own cgroup
    /// there. Controllers this host does not offer are left out.
    pub fn describe(&self) -> Vec<ControllerPlacement> {
        Controller::ALL
            .into_iter()
            .filter_map(|controller| {
                let h = self.hierarchy_of(controller)?;
                Some(ControllerPlacement {
                    controller,
                    version: h.version,
                    own_dir: h.own_dir.clone(),
                })
            })
            .collect()
    }

    /// Which version serves `controller`, if any.
    pub fn version(&self, controller: Controller) -> Option<CgroupVersion> {
        self.hierarchy_of(controller).map(|h| h.version)
    }

    /// The service's own cgroup in the unified hierarchy, if one is mounted, even if it serves no
    /// controller (hybrid hosts use it for `cgroup.kill` and `cpu.stat`).
    pub fn unified_own_dir(&self) -> Option<&Path> {
        self.unified.as_ref().map(|h| h.own_dir.as_path())
    }

    pub(crate) fn hierarchy_of(&self, controller: Controller) -> Option<&Hierarchy> {
        self.v1
            .iter()
            .chain(self.unified.as_ref())
            .find(|h| h.has(controller))
    }
}

/// `mount_point/rel`, without the trailing slash `Path::join("")` would add, since these paths
/// are shown to operators by `kiln doctor`.
fn join_rel(mount_point: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        mount_point.to_path_buf()
    } else {
        mount_point.join(rel)
    }
}

/// The part of `/proc/self/cgroup`'s path below the mount's root, or `None` if the mount does not
/// contain the service's cgroup (a bind mount of some other subtree).
fn relative_own_path(mount_root: &str, own: &str) -> Option<PathBuf> {
    let rel = if mount_root == "/" {
        own
    } else {
        let rest = own.strip_prefix(mount_root)?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        rest
    };
    let rel = rel.trim_matches('/');
    // `/..` shows up when our cgroup is outside the mount's cgroup namespace root.
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(PathBuf::from(rel))
}

#[derive(Debug)]
struct Mount {
    root: String,
    mount_point: String,
    fstype: String,
    super_options: String,
}

/// Parses the fields of mountinfo lines Kiln needs (see proc(5)): `id parent dev root mountpoint
/// options [optional...] - fstype source superoptions`.
fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, CgroupError> {
    let mut mounts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let sep = fields.iter().position(|f| *f == "-");
        let (Some(sep), true) = (sep, fields.len() >= 6) else {
            return Err(mountinfo_error(line));
        };
        if sep < 6 || fields.len() < sep + 3 {
            return Err(mountinfo_error(line));
        }
        mounts.push(Mount {
            root: unescape(fields[3]),
            mount_point: unescape(fields[4]),
            fstype: fields[sep + 1].to_string(),
            super_options: fields.get(sep + 3).copied().unwrap_or("").to_string(),
        });
    }
    Ok(mounts)
}

fn mountinfo_error(line: &str) -> CgroupError {
    CgroupError::Parse {
        path: PathBuf::from(MOUNTINFO),
        reason: format!("malformed line {line:?}"),
    }
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash in mountinfo paths.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(value) = u8::try_from(value) {
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
struct Membership {
    id: u32,
    controllers: Vec<String>,
    path: String,
}

/// Parses `/proc/self/cgroup`: `hierarchy-id:controller,list:path`, `0::path` for cgroup2.
fn parse_proc_cgroup(text: &str) -> Result<Vec<Membership>, CgroupError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(proc_cgroup_error(line));
        };
        let Ok(id) = id.parse::<u32>() else {
            return Err(proc_cgroup_error(line));
        };
        if !path.starts_with('/') {
            return Err(proc_cgroup_error(line));
        }
        out.push(Membership {
            id,
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
            path: path.to_string(),
        });
    }
    Ok(out)
}

fn proc_cgroup_error(line: &str) -> CgroupError {
    CgroupError::Parse {
        path: PathBuf::from(PROC_CGROUP),
        reason: format!("malformed line {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\134b"), "/a\\b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trailing\\04"), "/trailing\\04");
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative_own_path("/", "/"), Some(PathBuf::from("")));
        assert_eq!(relative_own_path("/", "/a/b"), Some(PathBuf::from("a/b")));
        assert_eq!(relative_own_path("/a", "/a/b"), Some(PathBuf::from("b")));
        assert_eq!(relative_own_path("/a", "/a"), Some(PathBuf::from("")));
        assert_eq!(relative_own_path("/a", "/ab"), None);
        assert_eq!(relative_own_path("/a", "/c"), None);
        assert_eq!(relative_own_path("/", "/../x"), None);
    }

    #[test]
    fn malformed_proc_files() {
        let err = parse_mountinfo("31 23 0:28 / /sys/fs/cgroup\n").unwrap_err();
        assert!(err.to_string().contains("/proc/self/mountinfo"), "{err}");
        let err = parse_proc_cgroup("memory:/x\n").unwrap_err();
        assert!(err.to_string().contains("/proc/self/cgroup"), "{err}");
        let err = parse_proc_cgroup("x:memory:/x\n").unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
    }
}
