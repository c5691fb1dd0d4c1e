//! Host directories mounted into a function call, host side only.
//!
//! A call may mount host directories at guest paths. Nothing is shared with the sandbox: the
//! permitted files are copied in before the call and what the sandbox holds afterwards is read
//! back, compared and, where the rules allow it, written back to the host. The steps, each a
//! plain function so that the caller decides where the sandbox side happens:
//!
//! 1. [`MountPlan::prepare`] validates a request's [`MountConfig`] (seed 002's wire shape):
//!    guest paths, host directories (against the operator's allowed roots), globs and limits.
//! 2. [`load`] walks the host directories and returns the [`Entry`]s to write into the sandbox,
//!    with a [`Baseline`] of each and what was [`Skipped`]. Files the rules hide are not even
//!    reported, only counted.
//! 3. [`diff`] compares what the caller found in the sandbox ([`Seen`]) with the baseline and
//!    decides per change whether the rules permit it ([`MountChanges`]).
//! 4. [`sync`] (or [`sync_all`]) writes the permitted changes back, never through a host
//!    symlink, with a conflict check against the baseline and rollback on failure. For manual
//!    sync, [`manual_changes`] turns the changes a client sends back into the same input.
//!
//! Paths inside a mount ("rel" paths) are relative to its root, `/`-separated, without `.`,
//! `..` or empty components; the mount root itself is the empty string. Guest paths reported to
//! clients are absolute.

mod config;
mod host;
mod journal;
mod load;
mod manual;
mod rules;
mod sync;
mod track;
mod walk;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use config::{
    resolve_host_dir, FollowSymlinks, LoadingConfig, LoadingMode, MountConfig, MountPlan,
    MountSpec, OnError, OnPermissionDenied, SecurityConfig, SyncConfig, SyncMode,
};
pub use host::wire_hash;
pub use load::{load, Baseline, Entry, EntryKind, Loaded, LoadedMount, SkipReason, Skipped};
pub use manual::{manual_changes, Encoding, ManualSync, WireChange};
pub use rules::{
    DecidedBy, Decision, DefaultPermissions, PermSet, Permission, Permissions, PermissionsConfig,
    RuleConfig,
};
pub use sync::{sync, sync_all, SyncFailure, SyncReport, SyncTarget};
pub use track::{
    diff, text_or_base64, Denied, Expected, FileChange, FileChangeWire, MountChanges,
    MountChangesWire, Operation, Seen, SeenKind,
};

/// Default cap on one file's size: 10 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;
/// Default cap on the bytes loaded into one call, all mounts together: 64 MiB.
pub const DEFAULT_MAX_TOTAL_SIZE: u64 = 64 * 1024 * 1024;
/// Default cap on the files and symlinks loaded into one call, all mounts together.
pub const DEFAULT_MAX_FILES: usize = 10_000;

/// Guest paths a mount may not cover, nor sit below: the sandbox's own system trees, and the
/// directory where the harness keeps the user's code.
const RESERVED_GUEST: &[&str] = &[
    "/proc",
    "/dev",
    "/sys",
    "/usr",
    "/etc",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/tmp/.kiln",
];

/// Guest paths a mount may not be exactly (below them is fine): the sandbox's scratch trees
/// hold Kiln's own files.
const RESERVED_EXACT: &[&str] = &["/tmp"];

/// The operator's caps on loading. A request's `loading.maxFileSize`, `maxTotalSize` and
/// `maxFiles` may only lower them. Directories do not count towards `max_files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountLimits {
    /// Largest file loaded; larger ones are skipped as `too_large`.
    pub max_file_size: u64,
    /// Bytes loaded per call, all mounts together; past it files are `total_exceeded`.
    pub max_total_size: u64,
    /// Files and symlinks loaded per call; past it they are `too_many_files`.
    pub max_files: usize,
}

impl Default for MountLimits {
    fn default() -> Self {
        MountLimits {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_total_size: DEFAULT_MAX_TOTAL_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

/// One mount's two ends, all that [`sync`] needs to know about where to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRoot {
    /// The absolute guest path the host directory was mounted at.
    pub guest: String,
    /// The canonical host directory.
    pub host: PathBuf,
}

/// Why a mount request or a manual sync request cannot be served. The messages are meant for
/// the client (an HTTP 400): they name the field and the reason, never more of the host than
/// the client sent.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A field of the request is invalid.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A glob does not compile.
    #[error("{field}: invalid pattern `{pattern}`: {source}")]
    Pattern {
        field: String,
        pattern: String,
        #[source]
        source: globset::Error,
    },
    /// The host directory is not under one of the roots the operator allows.
    #[error("{} is not inside a directory this server allows mounting", .path.display())]
    NotAllowed { path: PathBuf },
    /// The host directory is missing, not a directory, or otherwise unusable.
    #[error("{}: {reason}", .path.display())]
    HostDir { path: PathBuf, reason: String },
    /// Another error, in the named field of the request.
    #[error("{field}: {source}")]
    InField {
        field: String,
        #[source]
        source: Box<MountError>,
    },
    /// An IO step on the host failed as a whole (per-file failures are reported, not raised).
    #[error("{step} {}: {source}", .path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MountError {
    /// The request field the error is about (`mount` when it is about no one field), for a
    /// refusal that names it.
    pub fn field(&self) -> String {
        match self {
            MountError::Invalid { field, .. }
            | MountError::Pattern { field, .. }
            | MountError::InField { field, .. } => field.clone(),
            MountError::NotAllowed { .. } | MountError::HostDir { .. } | MountError::Io { .. } => {
                "mount".into()
            }
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MountError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn in_field(self, field: impl Into<String>) -> Self {
        MountError::InField {
            field: field.into(),
            source: Box::new(self),
        }
    }
}

/// `rel` under `base`, both rel paths.
pub(crate) fn join_rel(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}/{name}")
    }
}

/// The absolute guest path of `rel` in the mount at `guest`.
pub(crate) fn guest_path(guest: &str, rel: &str) -> String {
    if rel.is_empty() {
        guest.to_owned()
    } else {
        format!("{guest}/{rel}")
    }
}

/// `path` relative to the mount at `guest`: `Some("")` for the mount root itself.
pub(crate) fn rel_in_mount<'a>(guest: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(guest)?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix('/')
}

/// Splits a non-empty rel path into its parent (maybe empty) and its last component.
pub(crate) fn split_rel(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

/// Orders rel paths so that everything under a directory comes right after it (`a`, `a/b`,
/// `a.txt`), which plain string order does not (`.` sorts before `/`).
pub(crate) fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

/// Whether `rel` is a clean, non-empty rel path: what every path this module accepts from a
/// client or the sandbox must be before it is used on the host.
pub(crate) fn is_clean_rel(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\0')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Why `path` is not a clean absolute path (`/a/b`, no `.`, `..`, empty components, trailing
/// slash, NUL), or `None` when it is one. `/` itself passes.
pub(crate) fn unclean_abs(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("must be an absolute path");
    }
    if path.contains('\0') {
        return Some("must not contain a NUL byte");
    }
    if path == "/" {
        return None;
    }
    if path.ends_with('/') {
        return Some("must not end with `/`");
    }
    for c in path[1..].split('/') {
        match c {
            "" => return Some("must not contain an empty component (`//`)"),
            "." | ".." => return Some("must not contain `.` or `..` components"),
            _ => {}
        }
    }
    None
}

/// Lexically normalises an absolute path as the kernel would read it if no component were a
/// symlink: `.` and empty components dropped, `..` popping (at `/` it stays at `/`). Used for
/// referenced paths, which come from a call's arguments and are only hints.
pub(crate) fn normalise_abs(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Where a symlink in directory `dir` (a rel path) with `target` points, read lexically, as a
/// rel path of the mount (`""` for its root); `None` when it leaves the mount. Absolute targets
/// always leave it: inside the sandbox they would name guest paths, on the host host paths.
pub(crate) fn link_target_rel(dir: &str, target: &str) -> Option<String> {
    if target.starts_with('/') || target.is_empty() || target.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = if dir.is_empty() {
        Vec::new()
    } else {
        dir.split('/').collect()
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}
