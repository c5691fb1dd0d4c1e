//! Landlock: a second wall around the filesystem, built once by the warden and applied to every
//! process it spawns. The ruleset is created before fork (the crate allocates); the forked child only
//! makes the `landlock_restrict_self` syscall on the ready ruleset fd.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use landlock::{
    Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, ABI,
};

/// Errors while building the ruleset.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// The ruleset could not be created or a rule added.
    #[error("landlock ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    /// A path named by a rule could not be opened.
    #[error("landlock rule path {path}: {source}")]
    Path {
        /// The path of the rule.
        path: PathBuf,
        /// Why it could not be opened.
        source: landlock::PathFdError,
    },
}

/// The Landlock ABI version the running kernel offers, or `None` when Landlock is off.
pub fn abi_version() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attr and size 0, and the VERSION flag, the syscall only returns a number.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(ret).ok().filter(|v| *v > 0)
}

/// Which paths a sandboxed process may read (and execute) and which it may also write.
#[derive(Debug, Clone, Default)]
pub struct FsPolicy {
    /// Read and execute beneath these paths.
    pub read_exec: Vec<PathBuf>,
    /// Read, write, create and remove beneath these paths.
    pub read_write: Vec<PathBuf>,
}

/// A created ruleset, ready to be applied in a forked child.
#[derive(Debug)]
pub struct PreparedLandlock {
    fd: Option<OwnedFd>,
    abi: Option<u32>,
}

impl PreparedLandlock {
    /// Builds the ruleset for `policy`. Paths that do not exist are skipped. On a kernel without
    /// Landlock this yields an empty preparation whose `restrict_self` does nothing.
    pub fn build(policy: &FsPolicy) -> Result<Self, LandlockError> {
        let abi = abi_version();
        if abi.is_none() {
            return Ok(Self { fd: None, abi });
        }
        // V1 is the hard baseline; newer rights (refer, truncate, ioctl on devices) are best-effort.
        let handled = AccessFs::from_all(ABI::V5);
        let ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(handled)?
            .create()?;
        let read_exec = AccessFs::from_read(ABI::V5);
        let mut created = ruleset;
        for (paths, access) in [
            (&policy.read_exec, read_exec),
            (&policy.read_write, handled),
        ] {
            for path in paths {
                if !path.exists() {
                    continue;
                }
                let fd = PathFd::new(path).map_err(|source| LandlockError::Path {
                    path: path.clone(),
                    source,
                })?;
                // Files (device nodes) take only file rights; directories take everything asked.
                let access = if path.is_dir() {
                    access
                } else {
                    access & AccessFs::from_file(ABI::V5)
                };
                created = created.add_rule(PathBeneath::new(fd, access))?;
            }
        }
        let fd: Option<OwnedFd> = created.into();
        Ok(Self { fd, abi })
    }

    /// The ABI in use, for reports.
    pub fn abi(&self) -> Option<u32> {
        self.abi
    }

    /// Restricts the calling thread. Async-signal-safe: one syscall, no allocation. The caller has
    /// already set no_new_privs.
    pub fn restrict_self(&self) -> std::io::Result<()> {
        let Some(fd) = &self.fd else {
            return Ok(());
        };
        // SAFETY: the fd is a live landlock ruleset owned by self; flags 0.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_landlock_restrict_self,
                fd.as_raw_fd(),
                0 as libc::c_uint,
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}
