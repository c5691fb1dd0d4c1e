//! Sync: writes kept changes back to the host directories.
//!
//! Every directory on the way is opened one component at a time with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`, so a write never goes through a host symlink (a change under one
//! fails instead); what is written lands in a temporary file of the same directory that is
//! then renamed into place, so a crash never leaves a half-written file. A modify or delete
//! first checks that the host still holds what was loaded. With `onError: rollback` a copy of
//! everything overwritten or deleted is kept in memory (up to 256 MiB) to undo the sync
//! (the journal module).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use serde::Serialize;

use super::config::{FollowSymlinks, OnError};
use super::host::{self, View};
use super::journal::{chmod_dir, owner_of, remove, rename_new, rename_over, set_owner, Undo};
use super::load::EntryKind;
use super::rules::Permissions;
use super::track::{FileChange, Operation};
use super::{guest_path, is_clean_rel, join_rel, link_target_rel, path_order, split_rel, SyncRoot};

const CONFLICT: &str = "changed on the host since it was loaded";

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    /// Guest paths whose change reached the host (none after a rollback).
    pub synced: Vec<String>,
    /// The failed changes, then any step of the rollback that failed.
    pub failed: Vec<SyncFailure>,
    /// Everything the sync had done was undone (`onError: rollback`, completely).
    pub rolled_back: bool,
    /// The sync stopped at a failure without trying the remaining changes.
    pub aborted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncFailure {
    pub path: String,
    pub error: String,
}

/// One mount's changes, for [`sync_all`].
#[derive(Debug, Clone)]
pub struct SyncTarget {
    pub root: SyncRoot,
    pub changes: Vec<FileChange>,
}

/// Writes `changes` (the permitted ones of a mount; others are refused again, as are paths
/// outside it) back to `root.host`. Blocking: run it on a blocking thread. Deletions go first,
/// deepest first, then the rest, each directory before what is under it. `follow` must be the
/// mode the mount was loaded with: the conflict check looks at the host the way loading did.
pub fn sync(
    root: &SyncRoot,
    perms: &Permissions,
    changes: &[FileChange],
    on_error: OnError,
    follow: FollowSymlinks,
) -> SyncReport {
    run(&[(root, changes)], perms, on_error, follow)
}

/// [`sync`] over several mounts as one: a rollback undoes all of them.
pub fn sync_all(
    targets: &[SyncTarget],
    perms: &Permissions,
    on_error: OnError,
    follow: FollowSymlinks,
) -> SyncReport {
    let t: Vec<(&SyncRoot, &[FileChange])> = targets
        .iter()
        .map(|t| (&t.root, t.changes.as_slice()))
        .collect();
    run(&t, perms, on_error, follow)
}

pub(super) struct Root {
    pub(super) guest: String,
    pub(super) canon: PathBuf,
    pub(super) fd: Result<OwnedFd, String>,
}

pub(super) struct Syncer<'a> {
    perms: &'a Permissions,
    follow: FollowSymlinks,
    keep_backups: bool,
    pub(super) journal: Vec<Undo>,
    pub(super) backup_bytes: u64,
    pub(super) temp_seq: u64,
}

fn run(
    targets: &[(&SyncRoot, &[FileChange])],
    perms: &Permissions,
    on_error: OnError,
    follow: FollowSymlinks,
) -> SyncReport {
    let roots: Vec<Root> = targets
        .iter()
        .map(|(r, _)| Root {
            guest: r.guest.clone(),
            canon: r.host.clone(),
            fd: host::open_root(&r.host)
                .map_err(|e| format!("the host directory cannot be opened: {e}")),
        })
        .collect();
    let mut order: Vec<(usize, &FileChange)> = targets
        .iter()
        .enumerate()
        .flat_map(|(i, (_, cs))| cs.iter().map(move |c| (i, c)))
        .collect();
    order.sort_by(|(ra, a), (rb, b)| {
        let (da, db) = (
            a.operation == Operation::Delete,
            b.operation == Operation::Delete,
        );
        db.cmp(&da).then(ra.cmp(rb)).then_with(|| {
            if da {
                path_order(&b.rel, &a.rel)
            } else {
                path_order(&a.rel, &b.rel)
            }
        })
    });
    let mut s = Syncer {
        perms,
        follow,
        keep_backups: on_error == OnError::Rollback,
        journal: Vec::new(),
        backup_bytes: 0,
        temp_seq: 0,
    };
    let mut report = SyncReport::default();
    for (ri, c) in order {
        match s.apply(&roots[ri], ri, c) {
            Ok(()) => report.synced.push(c.path.clone()),
            Err(error) => {
                tracing::info!(path = %c.path, %error, "a mount change failed to sync");
                report.failed.push(SyncFailure {
                    path: c.path.clone(),
                    error,
                });
                match on_error {
                    OnError::Continue => {}
                    OnError::Abort => {
                        report.aborted = true;
                        break;
                    }
                    OnError::Rollback => {
                        report.aborted = true;
                        let failures = s.rollback(&roots);
                        report.rolled_back = failures.is_empty();
                        report.failed.extend(failures);
                        report.synced.clear();
                        break;
                    }
                }
            }
        }
    }
    report
}

impl Syncer<'_> {
    fn apply(&mut self, root: &Root, ri: usize, c: &FileChange) -> Result<(), String> {
        if !c.permitted {
            return Err("not permitted by the mount's rules".into());
        }
        let p = c.operation.permission();
        let d = self.perms.decide(&c.rel, p);
        if !d.allowed {
            return Err(d.describe(p));
        }
        if !is_clean_rel(&c.rel) || c.path != guest_path(&root.guest, &c.rel) {
            return Err("not a path inside this mount".into());
        }
        let fd = root.fd.as_ref().map_err(Clone::clone)?.as_fd();
        let (parent, name) = split_rel(&c.rel);
        let create = c.operation == Operation::Create;
        let dir = self.open_dirs(fd, ri, parent, create)?;
        let dir = dir.as_fd();
        match c.operation {
            Operation::Create => self.create(dir, ri, c, parent, name),
            Operation::Modify | Operation::Delete => {
                self.check_base(root, fd, c)?;
                let cur = host::lstat_at(dir, name)
                    .map_err(|e| format!("inspecting it on the host: {e}"))?;
                if self.keep_backups {
                    let backup = self.capture(dir, name, &cur)?;
                    // Journaled before anything changes, so that a step failing half-way is
                    // undone too.
                    self.journal.push(Undo::Restore {
                        root: ri,
                        rel: c.rel.clone(),
                        backup,
                    });
                }
                if c.operation == Operation::Delete {
                    remove(dir, name, &cur)
                } else {
                    self.replace(dir, c, parent, name, &cur)
                }
            }
        }
    }

    /// Opens the directory `rel` one component at a time, none of them a symlink, creating
    /// the missing ones when `create` (journaled, so a rollback removes them).
    fn open_dirs(
        &mut self,
        root: BorrowedFd<'_>,
        ri: usize,
        rel: &str,
        create: bool,
    ) -> Result<OwnedFd, String> {
        let mut cur = host::open_dir(root, "").map_err(|e| format!("opening the mount: {e}"))?;
        let mut done = String::new();
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            done = join_rel(&done, comp);
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let opened = rfs::openat2(&cur, comp, flags, Mode::empty(), host::strict());
            let next = match opened {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rfs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {
                            self.journal.push(Undo::Remove {
                                root: ri,
                                rel: done.clone(),
                            });
                            chmod_dir(cur.as_fd(), comp, 0o755)
                                .map_err(|e| format!("creating `{done}` on the host: {e}"))?;
                            let parent_owner = rfs::fstat(&cur).map(|st| owner_of(&st));
                            if let Ok(owner) = parent_owner {
                                set_owner(cur.as_fd(), comp, owner);
                            }
                        }
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(format!("creating `{done}` on the host: {e}")),
                    }
                    rfs::openat2(&cur, comp, flags, Mode::empty(), host::strict())
                        .map_err(|e| dir_error(&done, e))?
                }
                Err(Errno::NOENT) => return Err(format!("`{done}` no longer exists on the host")),
                Err(e) => return Err(dir_error(&done, e)),
            };
            cur = next;
        }
        Ok(cur)
    }

    fn check_base(&self, root: &Root, fd: BorrowedFd<'_>, c: &FileChange) -> Result<(), String> {
        let Some(exp) = &c.base else {
            return Err("no baseline to check the host version against".into());
        };
        let view = host::view(fd, &root.canon, &c.rel, self.follow)
            .map_err(|e| format!("checking the host version: {e}"))?;
        let (kind, hash) = match view {
            View::Missing => return Err("no longer exists on the host".into()),
            View::File { hash } => (EntryKind::File, Some(hash)),
            View::Dir => (EntryKind::Dir, None),
            View::Symlink { hash } => (EntryKind::Symlink, Some(hash)),
            View::Special => return Err(format!("{CONFLICT}: it is now a special file")),
            View::Unreachable(why) => return Err(format!("{CONFLICT}: it {why}")),
        };
        let kind_ok = exp.kind.is_none_or(|k| k == kind);
        let hash_ok = match &exp.hash {
            Some(h) => hash.as_deref() == Some(h.as_str()),
            None => exp.kind == Some(EntryKind::Dir),
        };
        if kind_ok && hash_ok {
            Ok(())
        } else {
            Err(CONFLICT.into())
        }
    }

    fn create(
        &mut self,
        dir: BorrowedFd<'_>,
        ri: usize,
        c: &FileChange,
        parent: &str,
        name: &str,
    ) -> Result<(), String> {
        let exists = || "already exists on the host".to_owned();
        let owner = rfs::fstat(dir).map(|st| owner_of(&st)).ok();
        match c.kind {
            EntryKind::File => {
                let content = c.content.as_deref().unwrap_or_default();
                let tmp = self.write_temp(dir, content, c.mode.unwrap_or(0o644), owner)?;
                rename_new(dir, &tmp, name).map_err(|e| match e {
                    Errno::EXIST => exists(),
                    e => format!("writing it on the host: {e}"),
                })?;
            }
            EntryKind::Dir => match rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => {
                    self.push_created(ri, c);
                    chmod_dir(dir, name, c.mode.unwrap_or(0o755))
                        .map_err(|e| format!("setting its mode on the host: {e}"))?;
                    if let Some(owner) = owner {
                        set_owner(dir, name, owner);
                    }
                    return Ok(());
                }
                Err(Errno::EXIST) => {
                    // A directory the call could not see (not loaded, hidden) is no conflict:
                    // creating it loses nothing, and what goes into it is checked on its own.
                    let st = host::lstat_at(dir, name).map_err(|e| e.to_string())?;
                    return match host::file_type(&st) {
                        FileType::Directory => Ok(()),
                        _ => Err(exists()),
                    };
                }
                Err(e) => return Err(format!("creating it on the host: {e}")),
            },
            EntryKind::Symlink => {
                let target = link_target(c, parent)?;
                rfs::symlinkat(target, dir, name).map_err(|e| match e {
                    Errno::EXIST => exists(),
                    e => format!("creating it on the host: {e}"),
                })?;
                if let Some(owner) = owner {
                    set_owner(dir, name, owner);
                }
            }
        }
        self.push_created(ri, c);
        Ok(())
    }

    fn push_created(&mut self, ri: usize, c: &FileChange) {
        self.journal.push(Undo::Remove {
            root: ri,
            rel: c.rel.clone(),
        });
    }

    /// A modify: the new version takes the place of whatever `name` is, never writing
    /// through it (a link is replaced, not followed).
    fn replace(
        &mut self,
        dir: BorrowedFd<'_>,
        c: &FileChange,
        parent: &str,
        name: &str,
        cur: &Stat,
    ) -> Result<(), String> {
        let cur_type = host::file_type(cur);
        let was_dir = cur_type == FileType::Directory;
        match c.kind {
            EntryKind::File => {
                let content = c.content.as_deref().unwrap_or_default();
                let keep = (cur_type == FileType::RegularFile).then(|| host::perm_bits(cur));
                let mode = c.mode.or(keep).unwrap_or(0o644);
                let tmp = self.write_temp(dir, content, mode, Some(owner_of(cur)))?;
                if was_dir {
                    if let Err(e) = remove(dir, name, cur) {
                        let _ = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
                        return Err(e);
                    }
                }
                rename_over(dir, &tmp, name)
            }
            EntryKind::Dir if was_dir => Ok(()),
            EntryKind::Dir => {
                remove(dir, name, cur)?;
                rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
                    .and_then(|()| chmod_dir(dir, name, c.mode.unwrap_or(0o755)))
                    .map_err(|e| format!("creating it on the host: {e}"))?;
                set_owner(dir, name, owner_of(cur));
                Ok(())
            }
            EntryKind::Symlink => {
                let target = link_target(c, parent)?;
                let tmp = self.temp_link(dir, target.as_bytes())?;
                if was_dir {
                    if let Err(e) = remove(dir, name, cur) {
                        let _ = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
                        return Err(e);
                    }
                }
                rename_over(dir, &tmp, name)
            }
        }
    }
}

fn dir_error(done: &str, e: Errno) -> String {
    match e {
        Errno::LOOP | Errno::XDEV => {
            format!("`{done}` is a symlink on the host; writes never go through a symlink")
        }
        Errno::NOTDIR => format!("`{done}` is not a directory on the host"),
        e => format!("opening `{done}` on the host: {e}"),
    }
}

/// The target of a created or modified link, which must be relative and never climb (`..`).
fn link_target<'c>(c: &'c FileChange, parent: &str) -> Result<&'c str, String> {
    let target = c
        .content
        .as_deref()
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or("the link's target is missing or not valid UTF-8")?;
    // Without `..` a target can only descend from the link's directory, however links chain;
    // with it, a chain of links that each look inside can climb out.
    if target.split('/').any(|c| c == "..") || link_target_rel(parent, target).is_none() {
        return Err(format!(
            "symlink_escape: the link's target `{target}` leads out of the mount"
        ));
    }
    Ok(target)
}
