//! Instances: every Kiln process (a server, a `kiln exec`, a test's engine) claims a group of its
//! own under the shared parent (`<own>/kiln/i<random>`) and puts its sandboxes below it. The
//! instance holds an exclusive `flock` on its first directory for as long as it lives; the kernel
//! drops the lock when the process dies, however it dies.
//!
//! That lock is how a starting Kiln tells leftovers from live neighbours: an instance whose lock
//! it can take belongs to nobody, and is swept with its sandboxes; one it cannot take is alive,
//! whatever PID namespace or container its owner runs in. A pid in a name would not do: a Kiln in
//! another PID namespace has pids that mean nothing here.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::FlockOperation;

use super::fsutil;
use super::parent::{CgroupParent, Group};
use super::{v1, v2, CgroupError, CgroupVersion, Controller};

/// Instance group names start with this; anything else under the shared parent is a leftover of
/// an older layout.
const INSTANCE_PREFIX: &str = "i";
/// Attempts at claiming a fresh name before giving up (a clash needs two equal random names, or
/// a sweeper taking the lock of a group in the instant between its mkdir and its lock).
const CLAIM_ATTEMPTS: usize = 8;

/// Opens a directory (close-on-exec, as std opens everything), to lock it.
fn open_dir(path: &Path) -> Result<File, CgroupError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(|source| CgroupError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// Takes the exclusive lock without waiting. `Ok(false)`: someone holds it.
fn try_lock(dir: &File, path: &Path) -> Result<bool, CgroupError> {
    match rustix::fs::flock(dir.as_fd(), FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(CgroupError::Open {
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// Whether `dir` is still the directory at `path` (a sweeper may have removed it between our
/// mkdir and our lock).
fn still_at(dir: &File, path: &Path) -> bool {
    match (dir.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

fn random_name() -> String {
    let mut bytes = [0u8; 8];
    // getrandom only fails for a bad buffer; a zero name would still be claimed by mkdir.
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    format!("{INSTANCE_PREFIX}{:016x}", u64::from_ne_bytes(bytes))
}

impl CgroupParent {
    /// Claims a new instance group under this (shared) parent, locked for as long as the
    /// returned parent lives. Sandboxes are created under the instance.
    pub fn claim_instance(&self) -> Result<CgroupParent, CgroupError> {
        let first = self.groups.first().ok_or(CgroupError::NoHierarchy)?;
        let mut last_error = None;
        for _ in 0..CLAIM_ATTEMPTS {
            let name = random_name();
            let anchor = first.dir.join(&name);
            if !fsutil::mkdir(&anchor)? {
                continue;
            }
            let lock = open_dir(&anchor)?;
            if !try_lock(&lock, &anchor)? || !still_at(&lock, &anchor) {
                // A sweeper took it for a leftover; it removes it.
                last_error = Some(CgroupError::Mkdir {
                    path: anchor,
                    source: std::io::Error::from_raw_os_error(libc::EAGAIN),
                });
                continue;
            }
            let mut instance = self.child_view(&name);
            instance.lock = Some(lock);
            instance.populate()?;
            return Ok(instance);
        }
        Err(last_error.unwrap_or(CgroupError::Mkdir {
            path: first.dir.clone(),
            source: std::io::Error::from_raw_os_error(libc::EEXIST),
        }))
    }

    /// A view of the child group `name` in every hierarchy (nothing is created or locked).
    fn child_view(&self, name: &str) -> CgroupParent {
        let groups = self
            .groups
            .iter()
            .map(|g| Group {
                version: g.version,
                controllers: g.controllers.clone(),
                dir: g.dir.join(name),
            })
            .collect();
        let mut v2_chain = self.v2_chain.clone();
        if let Some(last) = self.v2_chain.last() {
            v2_chain.push(last.join(name));
        }
        CgroupParent {
            name: format!("{}/{name}", self.name()),
            groups,
            unified: self.unified.clone(),
            mode: self.mode,
            v2_chain,
            lock: None,
        }
    }

    /// Creates a new instance's directories (the first exists already) and hands the parent's
    /// controllers on to its children.
    fn populate(&mut self) -> Result<(), CgroupError> {
        for g in &self.groups {
            fsutil::mkdir(&g.dir)?;
            match g.version {
                CgroupVersion::V1 if g.has(Controller::Cpuset) => {
                    let parent = g.dir.parent().unwrap_or(&g.dir);
                    v1::init_cpuset(self.mode, parent, &g.dir, None, true)?;
                }
                CgroupVersion::V1 => {}
                CgroupVersion::V2 => {
                    if let Some(h) = &self.unified {
                        v2::enable_controllers(self.mode, h, &self.v2_chain, &g.controllers)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes the instances of Kiln processes that are gone (their lock is free), with the
    /// sandboxes they left, and empty groups of older layouts. Live instances, of this process or
    /// any other, are left alone. Returns how many sandbox groups were removed.
    pub fn sweep_dead_instances(&self) -> Result<usize, CgroupError> {
        let Some(first) = self.groups.first() else {
            return Ok(0);
        };
        let mut removed = 0;
        for name in self.children()? {
            let anchor = first.dir.join(&name);
            if !name.starts_with(INSTANCE_PREFIX) || !anchor.is_dir() {
                // An older layout's group, or an instance whose anchor is gone: only an empty
                // one can be removed, and rmdir refuses the others.
                for g in &self.groups {
                    let _ = std::fs::remove_dir(g.dir.join(&name));
                }
                continue;
            }
            let Ok(lock) = open_dir(&anchor) else {
                continue;
            };
            if !try_lock(&lock, &anchor)? {
                continue;
            }
            let mut dead = self.child_view(&name);
            removed += dead.children()?.len();
            dead.lock = Some(lock);
            tracing::info!(instance = %dead.name(), "removing the cgroups of a Kiln process that is gone");
            dead.remove()?;
        }
        Ok(removed)
    }
}
