//! The journal of a sync: copies of what it overwrites or removes and what it creates, so a
//! rollback can put the host back byte for byte; and the file operations sync and rollback
//! share, all relative to a directory opened without symlinks.

use std::io::Write as _;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, RenameFlags, Stat, Uid};
use rustix::io::Errno;

use super::guest_path;
use super::host;
use super::split_rel;
use super::sync::{Root, SyncFailure, Syncer};

/// Cap on the bytes of backups one sync keeps for its rollback.
pub(super) const MAX_BACKUP_BYTES: u64 = 256 * 1024 * 1024;

/// A copy of what a change overwrote or removed, for the rollback. Modes keep every bit.
#[derive(Debug)]
pub(super) enum Backup {
    File {
        content: Vec<u8>,
        mode: u32,
        owner: (u32, u32),
    },
    Symlink {
        target: Vec<u8>,
    },
    Dir {
        mode: u32,
        owner: (u32, u32),
    },
}

#[derive(Debug)]
pub(super) enum Undo {
    /// Created by the sync.
    Remove { root: usize, rel: String },
    /// Overwritten or removed by the sync.
    Restore {
        root: usize,
        rel: String,
        backup: Backup,
    },
}

pub(super) fn owner_of(st: &Stat) -> (u32, u32) {
    (st.st_uid, st.st_gid)
}

/// Sets the owner of `name` in `dir`. Best effort on purpose: it only matters when Kiln runs
/// as root, and a file Kiln owns is still the right content.
pub(super) fn set_owner(dir: BorrowedFd<'_>, name: &str, (uid, gid): (u32, u32)) {
    let _ = rfs::chownat(
        dir,
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    );
}

/// Sets exactly `mode` on the directory `name` in `dir`, whatever the umask.
pub(super) fn chmod_dir(dir: BorrowedFd<'_>, name: &str, mode: u32) -> rustix::io::Result<()> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rfs::fchmod(&fd, Mode::from_raw_mode(mode))
}

impl Syncer<'_> {
    pub(super) fn capture(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        st: &Stat,
    ) -> Result<Backup, String> {
        let mode = st.st_mode & 0o7777;
        match host::file_type(st) {
            FileType::RegularFile => {
                let size = host::size(st);
                if self.backup_bytes.saturating_add(size) > MAX_BACKUP_BYTES {
                    return Err("too large to keep a copy for a rollback".into());
                }
                let content = host::open_file(dir, name)
                    .and_then(|(fd, _)| host::read_limited(fd, MAX_BACKUP_BYTES))
                    .map_err(|e| format!("keeping a copy for a rollback: {e}"))?
                    .ok_or("too large to keep a copy for a rollback")?;
                self.backup_bytes += content.len() as u64;
                Ok(Backup::File {
                    content,
                    mode,
                    owner: owner_of(st),
                })
            }
            FileType::Symlink => Ok(Backup::Symlink {
                target: host::read_link_at(dir, name)
                    .map_err(|e| format!("keeping a copy for a rollback: {e}"))?,
            }),
            FileType::Directory => Ok(Backup::Dir {
                mode,
                owner: owner_of(st),
            }),
            _ => Err("is a special file on the host".into()),
        }
    }

    fn next_temp(&mut self) -> String {
        self.temp_seq += 1;
        format!(".kiln-sync-{}-{}", std::process::id(), self.temp_seq)
    }

    /// Writes `content` to a new temporary file of `dir`, with exactly `mode`, flushed to
    /// disk; returns its name.
    pub(super) fn write_temp(
        &mut self,
        dir: BorrowedFd<'_>,
        content: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<String, String> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for _ in 0..100 {
            let tmp = self.next_temp();
            let fd = match rfs::openat(dir, tmp.as_str(), flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => fd,
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(format!("creating a temporary file on the host: {e}")),
            };
            let written = (|| -> std::io::Result<()> {
                if let Some((uid, gid)) = owner {
                    // Best effort, as in `set_owner`.
                    let _ = rfs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
                }
                // After the chown, which clears setuid and setgid; and whatever the umask.
                rfs::fchmod(&fd, Mode::from_raw_mode(mode))?;
                let mut file = std::fs::File::from(fd);
                file.write_all(content)?;
                file.sync_all()
            })();
            return match written {
                Ok(()) => Ok(tmp),
                Err(e) => {
                    let _ = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
                    Err(format!("writing it on the host: {e}"))
                }
            };
        }
        Err("no free temporary name on the host".into())
    }

    pub(super) fn temp_link(
        &mut self,
        dir: BorrowedFd<'_>,
        target: &[u8],
    ) -> Result<String, String> {
        for _ in 0..100 {
            let tmp = self.next_temp();
            match rfs::symlinkat(target, dir, tmp.as_str()) {
                Ok(()) => return Ok(tmp),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(format!("creating a symlink on the host: {e}")),
            }
        }
        Err("no free temporary name on the host".into())
    }

    /// Undoes the journal, newest first; returns the steps that failed.
    pub(super) fn rollback(&mut self, roots: &[Root]) -> Vec<SyncFailure> {
        let mut failed = Vec::new();
        let journal = std::mem::take(&mut self.journal);
        for undo in journal.into_iter().rev() {
            let (ri, rel) = match &undo {
                Undo::Remove { root, rel, .. } | Undo::Restore { root, rel, .. } => (*root, rel),
            };
            let root = &roots[ri];
            if let Err(e) = self.undo(root, &undo) {
                failed.push(SyncFailure {
                    path: guest_path(&root.guest, rel),
                    error: format!("rolling back: {e}"),
                });
            }
        }
        failed
    }

    fn undo(&mut self, root: &Root, undo: &Undo) -> Result<(), String> {
        let fd = root.fd.as_ref().map_err(Clone::clone)?.as_fd();
        let rel = match undo {
            Undo::Remove { rel, .. } | Undo::Restore { rel, .. } => rel,
        };
        let (parent, name) = split_rel(rel);
        let dir = host::open_dir(fd, parent).map_err(|e| format!("opening `{parent}`: {e}"))?;
        let dir = dir.as_fd();
        let cur = match host::lstat_at(dir, name) {
            Ok(st) => Some(st),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => return Err(e.to_string()),
        };
        match undo {
            Undo::Remove { .. } => match cur {
                Some(st) => remove(dir, name, &st),
                None => Ok(()),
            },
            Undo::Restore { backup, .. } => self.restore(dir, name, cur.as_ref(), backup),
        }
    }

    fn restore(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &str,
        cur: Option<&Stat>,
        backup: &Backup,
    ) -> Result<(), String> {
        let cur_is_dir = cur.is_some_and(|st| host::file_type(st) == FileType::Directory);
        if let Backup::Dir { mode, owner } = backup {
            if !cur_is_dir {
                if let Some(st) = cur {
                    remove(dir, name, st)?;
                }
                rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(|e| e.to_string())?;
            }
            set_owner(dir, name, *owner);
            return chmod_dir(dir, name, *mode).map_err(|e| e.to_string());
        }
        let tmp = match backup {
            Backup::File {
                content,
                mode,
                owner,
            } => self.write_temp(dir, content, *mode, Some(*owner))?,
            Backup::Symlink { target } => self.temp_link(dir, target)?,
            Backup::Dir { .. } => return Ok(()),
        };
        if let (true, Some(st)) = (cur_is_dir, cur) {
            if let Err(e) = remove(dir, name, st) {
                let _ = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
                return Err(e);
            }
        }
        rename_over(dir, &tmp, name)
    }
}

/// Removes `name` (a directory only when empty).
pub(super) fn remove(dir: BorrowedFd<'_>, name: &str, st: &Stat) -> Result<(), String> {
    let is_dir = host::file_type(st) == FileType::Directory;
    let flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    rfs::unlinkat(dir, name, flags).map_err(|e| match e {
        Errno::NOTEMPTY | Errno::EXIST => {
            "is a directory that is not empty on the host (it holds entries that were not loaded)"
                .to_owned()
        }
        e => format!("removing it on the host: {e}"),
    })
}

/// Renames `tmp` over `name`; on failure the temporary file goes.
pub(super) fn rename_over(dir: BorrowedFd<'_>, tmp: &str, name: &str) -> Result<(), String> {
    rfs::renameat(dir, tmp, dir, name).map_err(|e| {
        let _ = rfs::unlinkat(dir, tmp, AtFlags::empty());
        format!("moving it into place on the host: {e}")
    })
}

/// Renames `tmp` to `name`, which must not exist; on failure the temporary file goes.
pub(super) fn rename_new(dir: BorrowedFd<'_>, tmp: &str, name: &str) -> Result<(), Errno> {
    let res = match rfs::renameat_with(dir, tmp, dir, name, RenameFlags::NOREPLACE) {
        // Filesystems without RENAME_NOREPLACE: a hard link fails on an existing name too.
        Err(Errno::INVAL | Errno::NOSYS) => {
            rfs::linkat(dir, tmp, dir, name, AtFlags::empty()).map(|()| true)
        }
        other => other.map(|()| false),
    };
    match res {
        Ok(false) => Ok(()),
        Ok(true) | Err(_) => {
            let _ = rfs::unlinkat(dir, tmp, AtFlags::empty());
            res.map(|_| ())
        }
    }
}
