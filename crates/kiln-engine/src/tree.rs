//! A sandbox's file tree as the host reaches it for its owner: stat, list, read, write, mkdir,
//! rename and remove. Every path resolves inside the sandbox's root whatever the sandboxed code
//! planted: the parent directory is opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! (absolute symlinks and `..` stay in the root), and the last component is then used through
//! that directory's fd without following it, so a symlink swapped in between two calls is a
//! symlink, never a way out. Every call runs as the sandbox's user (its fsuid, which also drops
//! the host's capabilities that override file permissions), so it may do what that user may.
//! All of it blocks: call it from a blocking thread.

use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::engine::Sandbox;
use crate::files::{open_in_root, AsSandboxUser, PathProblem, WORKSPACE};

/// Entries a listing returns at most.
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// How deep a listing may go.
pub const MAX_LIST_DEPTH: u32 = 16;

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The path is not acceptable.
    #[error("path {path:?} {problem}")]
    Path {
        /// The path as given.
        path: String,
        /// What is wrong.
        problem: PathProblem,
    },
    /// Nothing there.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// Something is there already.
    #[error("{0}: already exists")]
    Exists(String),
    /// A directory was needed.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// A file was needed.
    #[error("{0}: is a directory")]
    IsADirectory(String),
    /// Only a regular file can be read or written whole.
    #[error("{0}: not a regular file")]
    NotRegular(String),
    /// The directory is not empty (remove it with `recursive`).
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    /// The sandbox's user may not (permissions, a read-only mount).
    #[error("{0}: permission denied")]
    Denied(String),
    /// The sandbox's disk is full.
    #[error("{0}: no space left in the sandbox")]
    NoSpace(String),
    /// The root itself cannot be removed, renamed or written.
    #[error("{0}: not allowed on the sandbox's root")]
    Root(String),
    /// Anything else.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: String,
        /// The errno.
        source: std::io::Error,
    },
}

fn fail<'a>(op: &'static str, path: &'a str) -> impl FnOnce(Errno) -> TreeError + 'a {
    move |e| match e {
        Errno::NOENT => TreeError::NotFound(path.to_string()),
        Errno::EXIST => TreeError::Exists(path.to_string()),
        Errno::NOTDIR => TreeError::NotADirectory(path.to_string()),
        Errno::ISDIR => TreeError::IsADirectory(path.to_string()),
        Errno::NOTEMPTY => TreeError::NotEmpty(path.to_string()),
        Errno::ACCESS | Errno::PERM | Errno::ROFS => TreeError::Denied(path.to_string()),
        Errno::NOSPC | Errno::DQUOT | Errno::FBIG => TreeError::NoSpace(path.to_string()),
        // O_NOFOLLOW on a symlink, or a link loop: not something to follow.
        Errno::LOOP | Errno::XDEV => TreeError::NotRegular(path.to_string()),
        other => TreeError::Io {
            op,
            path: path.to_string(),
            source: other.into(),
        },
    }
}

/// A path inside a sandbox, checked and made absolute: a relative one is under `/workspace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPath {
    /// `/` and plain names.
    full: String,
}

impl SandboxPath {
    /// Checks `path`: no NUL, no control characters, no `..`, components of at most 255 bytes,
    /// 4096 bytes in all. `.` and empty components are dropped.
    pub fn parse(path: &str) -> Result<Self, TreeError> {
        let bad = |problem| TreeError::Path {
            path: path.to_string(),
            problem,
        };
        if path.is_empty() {
            return Err(bad(PathProblem::Empty));
        }
        if path.contains('\0') {
            return Err(bad(PathProblem::Nul));
        }
        if path.chars().any(char::is_control) {
            return Err(bad(PathProblem::Control));
        }
        if path.len() > 4096 {
            return Err(bad(PathProblem::TooLong));
        }
        let base = if path.starts_with('/') { "" } else { WORKSPACE };
        let mut full = String::from(base);
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(bad(PathProblem::ParentDir)),
                p if p.len() > 255 => return Err(bad(PathProblem::ComponentTooLong)),
                p => {
                    full.push('/');
                    full.push_str(p);
                }
            }
        }
        if full.is_empty() {
            full.push('/');
        }
        Ok(Self { full })
    }

    /// The absolute path inside the sandbox.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The parent and the last name; `None` for the root.
    fn split(&self) -> Option<(&str, &str)> {
        let (parent, name) = self.full.rsplit_once('/')?;
        if name.is_empty() {
            return None;
        }
        Some((if parent.is_empty() { "/" } else { parent }, name))
    }

    fn join(&self, name: &str) -> String {
        if self.full == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.full)
        }
    }
}

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A device, socket or fifo.
    Other,
}

/// One file's facts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Its absolute path inside the sandbox.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Last modification, Unix ms.
    pub modified_ms: i64,
    /// Where a symlink points (as written, not followed).
    pub target: Option<String>,
}

/// A listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The entries, each directory's sorted by name, depth first.
    pub entries: Vec<Entry>,
    /// More than [`MAX_LIST_ENTRIES`] were there.
    pub truncated: bool,
}

/// A session of calls on one sandbox's tree as its user. Not `Send`: the identity is the
/// calling thread's.
pub struct Tree {
    root: OwnedFd,
    _identity: AsSandboxUser,
    _this_thread: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// The sandbox's tree, for calls on this thread as the sandbox's user (until dropped).
    pub fn tree(&self) -> Result<Tree, TreeError> {
        let root = self.open_root().map_err(|e| TreeError::Io {
            op: "open the sandbox's root",
            path: "/".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (uid, gid) = self.host_ids();
        Ok(Tree {
            root,
            _identity: AsSandboxUser::enter(uid, gid),
            _this_thread: std::marker::PhantomData,
        })
    }
}

fn kind(ft: FileType) -> EntryKind {
    match ft {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

impl Tree {
    fn open_dir(&self, path: &str) -> Result<OwnedFd, TreeError> {
        open_in_root(
            &self.root,
            path,
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .map_err(fail("open", path))
    }

    fn parent(&self, path: &SandboxPath) -> Result<(OwnedFd, String), TreeError> {
        let (parent, name) = path
            .split()
            .ok_or_else(|| TreeError::Root(path.as_str().into()))?;
        Ok((self.open_dir(parent)?, name.to_string()))
    }

    fn entry_at(&self, dir: &OwnedFd, name: &str, path: String) -> Result<Entry, TreeError> {
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(fail("stat", &path))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let target = if ft == FileType::Symlink {
            rustix::fs::readlinkat(dir, name, Vec::new())
                .ok()
                .map(|t| t.to_string_lossy().into_owned())
        } else {
            None
        };
        Ok(Entry {
            name: name.to_string(),
            path,
            kind: kind(ft),
            size: st.st_size.max(0) as u64,
            mode: st.st_mode & 0o7777,
            modified_ms: st.st_mtime.saturating_mul(1000) + (st.st_mtime_nsec / 1_000_000) as i64,
            target,
        })
    }

    /// One file's facts (a symlink's own, not its target's).
    pub fn stat(&self, path: &SandboxPath) -> Result<Entry, TreeError> {
        match path.split() {
            None => self.entry_at(&self.root, ".", "/".into()).map(|mut e| {
                e.name = "/".into();
                e
            }),
            Some(_) => {
                let (dir, name) = self.parent(path)?;
                self.entry_at(&dir, &name, path.as_str().into())
            }
        }
    }

    /// The entries of a directory, `depth` levels down (1: its own entries).
    pub fn list(&self, path: &SandboxPath, depth: u32) -> Result<Listing, TreeError> {
        let dir = self.open_dir(path.as_str())?;
        let mut out = Listing::default();
        self.walk(dir, path, depth.clamp(1, MAX_LIST_DEPTH), &mut out)?;
        Ok(out)
    }

    fn walk(
        &self,
        dir: OwnedFd,
        at: &SandboxPath,
        depth: u32,
        out: &mut Listing,
    ) -> Result<(), TreeError> {
        let mut names: Vec<String> = Vec::new();
        let reader = rustix::fs::Dir::read_from(&dir).map_err(fail("list", at.as_str()))?;
        for item in reader {
            let item = item.map_err(fail("list", at.as_str()))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            if out.entries.len() >= MAX_LIST_ENTRIES {
                out.truncated = true;
                return Ok(());
            }
            let full = at.join(&name);
            let Ok(entry) = self.entry_at(&dir, &name, full.clone()) else {
                continue;
            };
            let is_dir = entry.kind == EntryKind::Dir;
            out.entries.push(entry);
            if is_dir && depth > 1 {
                let sub = rustix::fs::openat(
                    &dir,
                    name.as_str(),
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                );
                // A directory the user may not read is listed, not entered.
                if let Ok(sub) = sub {
                    self.walk(sub, &SandboxPath { full }, depth - 1, out)?;
                }
            }
        }
        Ok(())
    }

    /// Opens a regular file to read it.
    pub fn open_read(&self, path: &SandboxPath) -> Result<(std::fs::File, u64), TreeError> {
        let (dir, name) = self.parent(path)?;
        let fd = rustix::fs::openat(
            &dir,
            name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(fail("open", path.as_str()))?;
        let st = rustix::fs::fstat(&fd).map_err(fail("stat", path.as_str()))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => return Err(TreeError::IsADirectory(path.as_str().into())),
            _ => return Err(TreeError::NotRegular(path.as_str().into())),
        }
        rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(fail("open", path.as_str()))?;
        Ok((std::fs::File::from(fd), st.st_size.max(0) as u64))
    }

    /// Creates (or truncates) a regular file to write it, its parents made as needed.
    pub fn open_write(&self, path: &SandboxPath, mode: u32) -> Result<std::fs::File, TreeError> {
        let (parent, _) = path
            .split()
            .ok_or_else(|| TreeError::Root(path.as_str().into()))?;
        self.mkdir_all(&SandboxPath::parse(parent)?)?;
        let (dir, name) = self.parent(path)?;
        let fd = rustix::fs::openat(
            &dir,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o777),
        )
        .map_err(fail("create", path.as_str()))?;
        let st = rustix::fs::fstat(&fd).map_err(fail("stat", path.as_str()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(TreeError::NotRegular(path.as_str().into()));
        }
        rustix::fs::ftruncate(&fd, 0).map_err(fail("truncate", path.as_str()))?;
        rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(fail("open", path.as_str()))?;
        Ok(std::fs::File::from(fd))
    }

    /// Makes a symbolic link at `path` pointing at `target` (as written), creating its parents.
    pub fn symlink(&self, path: &SandboxPath, target: &str) -> Result<Entry, TreeError> {
        let (parent, _) = path
            .split()
            .ok_or_else(|| TreeError::Root(path.as_str().into()))?;
        self.mkdir_all(&SandboxPath::parse(parent)?)?;
        let (dir, name) = self.parent(path)?;
        rustix::fs::symlinkat(target, &dir, name.as_str())
            .map_err(fail("symlink", path.as_str()))?;
        self.stat(path)
    }

    /// Makes a directory and its missing parents (`mkdir -p`).
    pub fn mkdir_all(&self, path: &SandboxPath) -> Result<Entry, TreeError> {
        let mut dir = self.open_dir("/")?;
        let mut at = String::new();
        for part in path.as_str().split('/').filter(|p| !p.is_empty()) {
            at.push('/');
            at.push_str(part);
            match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(fail("mkdir", &at)(e)),
            }
            dir = rustix::fs::openat(
                &dir,
                part,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                Errno::LOOP | Errno::NOTDIR => TreeError::NotADirectory(at.clone()),
                e => fail("open", &at)(e),
            })?;
        }
        self.stat(path)
    }

    /// Renames `from` to `to` (replacing a file there, as `mv` does).
    pub fn rename(&self, from: &SandboxPath, to: &SandboxPath) -> Result<Entry, TreeError> {
        let (from_dir, from_name) = self.parent(from)?;
        let (to_dir, to_name) = self.parent(to)?;
        rustix::fs::renameat(&from_dir, from_name.as_str(), &to_dir, to_name.as_str())
            .map_err(fail("rename", from.as_str()))?;
        self.stat(to)
    }

    /// Removes a file, an empty directory, or with `recursive` a directory and all in it.
    pub fn remove(&self, path: &SandboxPath, recursive: bool) -> Result<(), TreeError> {
        let (dir, name) = self.parent(path)?;
        let st = rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(fail("stat", path.as_str()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty())
                .map_err(fail("remove", path.as_str()));
        }
        if recursive {
            self.empty_dir(&dir, &name, path.as_str())?;
        }
        rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::REMOVEDIR)
            .map_err(fail("remove", path.as_str()))
    }

    fn empty_dir(&self, parent: &OwnedFd, name: &str, at: &str) -> Result<(), TreeError> {
        let dir = rustix::fs::openat(
            parent,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(fail("open", at))?;
        let mut children = Vec::new();
        for item in rustix::fs::Dir::read_from(&dir).map_err(fail("list", at))? {
            let item = item.map_err(fail("list", at))?;
            let child = item.file_name().to_string_lossy().into_owned();
            if child != "." && child != ".." {
                children.push((child, item.file_type()));
            }
        }
        for (child, ft) in children {
            let sub = format!("{at}/{child}");
            if ft == FileType::Directory {
                self.empty_dir(&dir, &child, &sub)?;
                rustix::fs::unlinkat(&dir, child.as_str(), AtFlags::REMOVEDIR)
                    .map_err(fail("remove", &sub))?;
            } else {
                rustix::fs::unlinkat(&dir, child.as_str(), AtFlags::empty())
                    .map_err(fail("remove", &sub))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_absolute_inside_the_sandbox_and_tricks_are_refused() {
        let p = |s: &str| SandboxPath::parse(s).map(|p| p.as_str().to_string());
        assert_eq!(p("a/b.txt").unwrap(), "/workspace/a/b.txt");
        assert_eq!(p("/etc//hosts").unwrap(), "/etc/hosts");
        assert_eq!(p("/workspace/./x/").unwrap(), "/workspace/x");
        assert_eq!(p("/").unwrap(), "/");
        assert_eq!(p(".").unwrap(), "/workspace");
        for bad in [
            "",
            "../etc/passwd",
            "/workspace/../../etc",
            "a/..",
            "a\0b",
            "a\nb",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
        assert!(p(&"x".repeat(256)).is_err());
        assert!(p(&"x/".repeat(2100)).is_err());
        let root = SandboxPath::parse("/").unwrap();
        assert_eq!(root.split(), None);
        assert_eq!(
            SandboxPath::parse("/etc").unwrap().split(),
            Some(("/", "etc"))
        );
    }
}
