//! Writing files into a sandbox's `/workspace` from the host. Paths resolve inside the sandbox's root
//! (`openat2` with `RESOLVE_IN_ROOT`), so a symlink or `..` planted by a program never reaches the host.

use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::engine::{io_err, EngineError, Sandbox};

/// The directory inside the sandbox that files are written to.
pub const WORKSPACE: &str = "/workspace";

/// Checks that `dest` is a relative path of plain names.
pub fn validate_relative(dest: &str) -> Result<(), EngineError> {
    let bad = |reason| EngineError::InvalidPath {
        path: dest.to_string(),
        reason,
    };
    if dest.is_empty() {
        return Err(bad("empty"));
    }
    if dest.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if dest.len() > 1024 || dest.split('/').any(|c| c.len() > 255) {
        return Err(bad("too long"));
    }
    for c in Path::new(dest).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(bad("contains ..")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("is absolute")),
        }
    }
    Ok(())
}

fn open_in_root(root: &OwnedFd, path: &str, flags: OFlags, mode: Mode) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        root,
        path,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        mode,
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

impl Sandbox {
    /// Writes `data` to `/workspace/<dest>` with `mode`, creating parent directories, owned by the
    /// sandbox's user.
    pub fn write_file(&self, dest: &str, data: &[u8], mode: u32) -> Result<(), EngineError> {
        validate_relative(dest)?;
        let root = rustix::fs::open(self.root(), OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io_err("open sandbox root")(e.into()))?;
        let (uid, gid) = self.host_ids();
        let full = format!("{WORKSPACE}/{dest}");
        let parent = Path::new(&full).parent().unwrap_or(Path::new(WORKSPACE));
        // Create parents one level at a time, each resolved inside the root.
        let mut built = String::new();
        for comp in parent.components().skip(1) {
            built.push('/');
            built.push_str(&comp.as_os_str().to_string_lossy());
            if built.len() <= WORKSPACE.len() {
                continue;
            }
            match open_in_root(&root, &built, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()) {
                Ok(_) => {}
                Err(rustix::io::Errno::NOENT) => {
                    let (dir, name) = built.rsplit_once('/').unwrap_or(("/", &built));
                    let dirfd = open_in_root(&root, if dir.is_empty() { "/" } else { dir }, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
                        .map_err(|e| io_err(format!("open {dir}"))(e.into()))?;
                    rustix::fs::mkdirat(&dirfd, name, Mode::from_raw_mode(0o755))
                        .map_err(|e| io_err(format!("mkdir {built}"))(e.into()))?;
                    let made = open_in_root(&root, &built, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
                        .map_err(|e| io_err(format!("open {built}"))(e.into()))?;
                    rustix::fs::fchown(&made, Some(uid.into_uid()), Some(gid.into_gid()))
                        .map_err(|e| io_err(format!("chown {built}"))(e.into()))?;
                }
                Err(e) => return Err(io_err(format!("open {built}"))(e.into())),
            }
        }
        let fd = open_in_root(
            &root,
            &full,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| io_err(format!("create {full}"))(e.into()))?;
        rustix::fs::fchown(&fd, Some(uid.into_uid()), Some(gid.into_gid()))
            .map_err(|e| io_err(format!("chown {full}"))(e.into()))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| io_err(format!("chmod {full}"))(e.into()))?;
        let file = std::fs::File::from(fd);
        std::io::Write::write_all(&mut &file, data).map_err(io_err(format!("write {full}")))?;
        Ok(())
    }
}

trait IntoIds {
    fn into_uid(self) -> rustix::fs::Uid;
    fn into_gid(self) -> rustix::fs::Gid;
}

impl IntoIds for u32 {
    fn into_uid(self) -> rustix::fs::Uid {
        rustix::fs::Uid::from_raw(self)
    }
    fn into_gid(self) -> rustix::fs::Gid {
        rustix::fs::Gid::from_raw(self)
    }
}

#[cfg(test)]
mod tests {
    use super::validate_relative;

    #[test]
    fn relative_paths_are_checked() {
        assert!(validate_relative("main.py").is_ok());
        assert!(validate_relative("src/lib/a.c").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a\0b"] {
            assert!(validate_relative(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_relative(&"a".repeat(300)).is_err());
    }
}
