//! Writing files into a sandbox's `/workspace` from the host. Paths resolve inside the sandbox's root
//! (`openat2` with `RESOLVE_IN_ROOT`), so a symlink or `..` planted by a program never reaches the host.

use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::engine::{io_err, EngineError, Sandbox};

/// The directory inside the sandbox that files are written to.
pub const WORKSPACE: &str = "/workspace";

/// What is wrong with a file name given for a sandbox (a relative path of plain names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    /// Nothing.
    #[error("must not be empty")]
    Empty,
    /// A NUL byte.
    #[error("must not contain a NUL character")]
    Nul,
    /// A control character (a newline, an escape).
    #[error("must not contain control characters")]
    Control,
    /// It starts at `/`.
    #[error("must be a relative path")]
    Absolute,
    /// A `..` component.
    #[error("must not contain \"..\"")]
    ParentDir,
    /// An empty or `.` component, or a trailing `/`.
    #[error("must be a path of plain names")]
    NotPlain,
    /// A component over 255 bytes (the kernel's `NAME_MAX`).
    #[error("has a path component longer than 255 bytes")]
    ComponentTooLong,
    /// Over 1024 bytes in all.
    #[error("must be at most 1024 bytes")]
    TooLong,
}

/// Checks that `name` is a relative path of plain names: the one check of file names, for every
/// face and the CLI.
pub fn check_relative(name: &str) -> Result<(), PathProblem> {
    if name.is_empty() {
        return Err(PathProblem::Empty);
    }
    if name.contains('\0') {
        return Err(PathProblem::Nul);
    }
    if name.chars().any(char::is_control) {
        return Err(PathProblem::Control);
    }
    if name.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    if name.split('/').any(|c| c == "..") {
        return Err(PathProblem::ParentDir);
    }
    if name.split('/').any(|c| c.is_empty() || c == ".") {
        return Err(PathProblem::NotPlain);
    }
    if name.split('/').any(|c| c.len() > 255) {
        return Err(PathProblem::ComponentTooLong);
    }
    if name.len() > 1024 {
        return Err(PathProblem::TooLong);
    }
    Ok(())
}

/// Checks that `dest` is a relative path of plain names ([`check_relative`]).
pub fn validate_relative(dest: &str) -> Result<(), EngineError> {
    check_relative(dest).map_err(|problem| EngineError::InvalidPath {
        path: dest.to_string(),
        reason: problem,
    })
}

pub(crate) fn open_in_root(
    root: &OwnedFd,
    path: &str,
    flags: OFlags,
    mode: Mode,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        root,
        path,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        mode,
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// While alive, the calling thread creates files as the sandbox's user. A tmpfs mounted inside the
/// sandbox's user namespace refuses inodes owned by an id it cannot map (such as the host's root),
/// and the sandbox's user must own what it is given anyway. fsuid is per thread, so other threads
/// keep their identity.
pub(crate) struct AsSandboxUser;

impl AsSandboxUser {
    pub(crate) fn enter(uid: u32, gid: u32) -> Self {
        // SAFETY: setfsgid and setfsuid take integers and change only this thread's fs identity.
        unsafe {
            libc::syscall(libc::SYS_setfsgid, gid);
            libc::syscall(libc::SYS_setfsuid, uid);
        }
        AsSandboxUser
    }
}

impl Drop for AsSandboxUser {
    fn drop(&mut self) {
        // SAFETY: as in enter; back to the process's own ids.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, libc::geteuid());
            libc::syscall(libc::SYS_setfsgid, libc::getegid());
        }
    }
}

fn errno_ctx(what: String) -> impl FnOnce(rustix::io::Errno) -> EngineError {
    move |e| io_err(what)(e.into())
}

impl Sandbox {
    /// The sandbox's root directory, opened (`O_PATH`) with the host's credentials, which may
    /// reach it through `/proc`, for the `*at` calls that follow as the sandbox's user.
    pub(crate) fn open_root(&self) -> Result<OwnedFd, EngineError> {
        rustix::fs::open(
            self.root(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_ctx("open sandbox root".into()))
    }

    /// Writes `data` to `/workspace/<dest>` with `mode`, creating parent directories, owned by the
    /// sandbox's user. Blocking: call it from a blocking context for large files.
    pub fn write_file(&self, dest: &str, data: &[u8], mode: u32) -> Result<(), EngineError> {
        validate_relative(dest)?;
        let root = self.open_root()?;
        let (uid, gid) = self.host_ids();
        let _identity = AsSandboxUser::enter(uid, gid);
        let full = format!("{WORKSPACE}/{dest}");
        let mut dir = open_in_root(
            &root,
            WORKSPACE,
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .map_err(errno_ctx(format!("open {WORKSPACE}")))?;
        let mut parts: Vec<&str> = dest
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let name = parts.pop().unwrap_or(dest);
        for part in parts {
            match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(errno_ctx(format!("mkdir {part} in {full}"))(e)),
            }
            dir = rustix::fs::openat(
                &dir,
                part,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno_ctx(format!("open {part} in {full}")))?;
        }
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(errno_ctx(format!("create {full}")))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(errno_ctx(format!("chmod {full}")))?;
        let file = std::fs::File::from(fd);
        std::io::Write::write_all(&mut &file, data).map_err(io_err(format!("write {full}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::validate_relative;

    #[test]
    fn relative_paths_are_checked() {
        assert!(validate_relative("main.py").is_ok());
        assert!(validate_relative("src/lib/a.c").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\0b",
            "a\nb",
            "a//b",
            "./a",
            "a/",
        ] {
            assert!(validate_relative(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_relative(&"a".repeat(300)).is_err());
    }
}
