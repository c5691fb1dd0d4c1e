//! File-descriptor level access to a host directory. Every path is resolved with `openat2`
//! relative to the mount root's descriptor, `RESOLVE_BENEATH` always, so that no path the
//! sandbox or a client names can reach outside the mount, whatever the host tree holds.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use sha2::{Digest, Sha256};

use super::config::FollowSymlinks;

/// Resolution for paths that must not involve a symlink anywhere.
pub(crate) fn strict() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// `openat2` wants a path; the mount root's own rel path is empty.
fn dot(rel: &str) -> &str {
    if rel.is_empty() {
        "."
    } else {
        rel
    }
}

/// Opens a mount's canonical root directory. No component may be a symlink: the path was
/// checked against the allowed roots as it was canonicalised, and a directory swapped for a link
/// since (which could lead anywhere) fails the open instead of being followed.
pub(crate) fn open_root(host: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::openat2(
        rfs::CWD,
        host,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Opens the directory `rel` (no symlink anywhere on the way).
pub(crate) fn open_dir(root: impl AsFd, rel: &str) -> io::Result<OwnedFd> {
    Ok(rfs::openat2(
        root,
        dot(rel),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        strict(),
    )?)
}

/// `lstat` of `name` in `dir`.
pub(crate) fn lstat_at(dir: impl AsFd, name: &str) -> io::Result<Stat> {
    Ok(rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// The target of the link `name` in `dir`, as bytes.
pub(crate) fn read_link_at(dir: impl AsFd, name: &str) -> io::Result<Vec<u8>> {
    Ok(rfs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

pub(crate) fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// The permission bits of a mode. Setuid, setgid and sticky never cross the mount boundary.
pub(crate) fn perm_bits(st: &Stat) -> u32 {
    st.st_mode & 0o777
}

/// (device, inode), to recognise a directory reached twice.
#[allow(clippy::unnecessary_cast)] // The field types differ between architectures.
pub(crate) fn ident(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

pub(crate) fn size(st: &Stat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

/// Opens the regular file `rel` (no symlink on the way) for reading. `O_NONBLOCK` so that a
/// FIFO swapped in after the caller's `lstat` cannot hang the open; the result is checked to
/// be a regular file.
pub(crate) fn open_file(root: impl AsFd, rel: &str) -> io::Result<(OwnedFd, Stat)> {
    let fd = rfs::openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        strict(),
    )?;
    let st = rfs::fstat(&fd)?;
    if file_type(&st) != FileType::RegularFile {
        return Err(io::Error::other("is no longer a regular file"));
    }
    Ok((fd, st))
}

/// Reads `fd` to its end, or `None` once it holds more than `limit` bytes.
pub(crate) fn read_limited(fd: OwnedFd, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let file = std::fs::File::from(fd);
    file.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Ok(None);
    }
    Ok(Some(out))
}

/// Hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of `bytes` as rendered on the wire.
pub fn wire_hash(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Streams `fd` through SHA-256: (wire hash, size).
fn hash_fd(fd: OwnedFd) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::from(fd);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), n_total))
}

/// Where following a symlink led.
#[derive(Debug)]
pub(crate) enum Followed {
    /// Inside the mount: the target's rel path (free of symlinks) and its `stat`.
    Inside { real: String, stat: Stat },
    /// Out of the mount (or out and back, under `restricted`).
    Escape,
    /// Too many levels of links.
    Loop,
    /// The target does not exist.
    Broken,
    /// Something else went wrong.
    Failed(io::Error),
}

fn classify(e: &io::Error) -> Option<Followed> {
    match e.raw_os_error() {
        Some(libc::EXDEV) => Some(Followed::Escape),
        Some(libc::ELOOP) => Some(Followed::Loop),
        Some(libc::ENOENT) => Some(Followed::Broken),
        _ => None,
    }
}

/// Follows the link (or link-containing path) at rel path `rel` as `mode` allows; `mode` is
/// `Restricted` or `Always`.
pub(crate) fn follow(
    root: impl AsFd,
    canon_root: &Path,
    rel: &str,
    mode: FollowSymlinks,
) -> Followed {
    let root = root.as_fd();
    if mode == FollowSymlinks::Restricted {
        // BENEATH refuses absolute links and `..` past the root at every step of the walk,
        // which the canonical path below cannot tell.
        match rfs::openat2(
            root,
            rel,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(_) => {}
            Err(e) => {
                let e = io::Error::from(e);
                return classify(&e).unwrap_or(Followed::Failed(e));
            }
        }
    }
    let canon = match std::fs::canonicalize(canon_root.join(rel)) {
        Ok(c) => c,
        Err(e) => return classify(&e).unwrap_or(Followed::Failed(e)),
    };
    let Ok(real) = canon.strip_prefix(canon_root) else {
        return Followed::Escape;
    };
    let Some(real) = real.to_str() else {
        return Followed::Failed(io::Error::other("the target's name is not valid UTF-8"));
    };
    // Opened again without following anything: were a component swapped for a link since the
    // canonicalisation, this fails rather than escapes.
    let opened = rfs::openat2(
        root,
        dot(real),
        OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        strict(),
    )
    .and_then(|fd| rfs::fstat(&fd));
    match opened {
        Ok(stat) if file_type(&stat) != FileType::Symlink => Followed::Inside {
            real: real.to_owned(),
            stat,
        },
        Ok(_) => Followed::Escape,
        Err(e) if e == rustix::io::Errno::NOENT => Followed::Broken,
        Err(_) => Followed::Escape,
    }
}

/// What the host holds at a rel path, for the conflict check of a sync: seen the way the
/// loader saw it under the same `followSymlinks` mode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum View {
    Missing,
    File {
        hash: String,
    },
    Dir,
    Symlink {
        hash: String,
    },
    /// A FIFO, socket or device.
    Special,
    /// The path cannot be resolved inside the mount any more.
    Unreachable(String),
}

pub(crate) fn view(
    root: impl AsFd,
    canon_root: &Path,
    rel: &str,
    mode: FollowSymlinks,
) -> io::Result<View> {
    let root = root.as_fd();
    let (parent, name) = super::split_rel(rel);
    let lstat = match open_dir(root, parent).and_then(|d| lstat_at(&d, name).map(|s| (d, s))) {
        Ok(v) => Some(v),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(View::Missing)
        }
        Err(e) if mode != FollowSymlinks::Never && e.raw_os_error() == Some(libc::ELOOP) => None,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(View::Unreachable(format!(
                "`{parent}` is a symlink on the host"
            )))
        }
        Err(e) => return Err(e),
    };
    let real: String = match lstat {
        Some((dir, st)) => match file_type(&st) {
            FileType::Symlink if mode == FollowSymlinks::Never => {
                return Ok(View::Symlink {
                    hash: wire_hash(&read_link_at(&dir, name)?),
                })
            }
            FileType::Symlink => rel.to_owned(),
            _ => return view_real(root, rel, &st),
        },
        None => rel.to_owned(),
    };
    match follow(root, canon_root, &real, mode) {
        Followed::Inside { real, stat } => view_real(root, &real, &stat),
        Followed::Broken => Ok(View::Missing),
        Followed::Escape => Ok(View::Unreachable("now leads out of the mount".into())),
        Followed::Loop => Ok(View::Unreachable("is a symlink loop".into())),
        Followed::Failed(e) => Err(e),
    }
}

fn view_real(root: impl AsFd, real: &str, st: &Stat) -> io::Result<View> {
    Ok(match file_type(st) {
        FileType::RegularFile => View::File {
            hash: hash_fd(open_file(root, real)?.0)?.0,
        },
        FileType::Directory => View::Dir,
        FileType::Symlink => View::Unreachable("changed while being checked".into()),
        _ => View::Special,
    })
}
