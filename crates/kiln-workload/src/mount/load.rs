//! Loading: walks each mount's host directory and returns what to copy into the sandbox, with
//! the baseline the changes are later computed against.
//!
//! Paths the rules hide (read or list denied, excluded) are not reported anywhere, only
//! counted in [`Loaded::hidden`]. Everything else that is wanted but not loaded is reported
//! in [`Loaded::skipped`] with a reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::config::{LoadingMode, MountPlan, MountSpec};
use super::host;
use super::walk;
use super::{normalise_abs, rel_in_mount, MountError, SyncRoot};

/// The kind of a loaded or changed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One thing to create in the sandbox, under the mount's guest path (which the caller creates
/// itself: the mount root is no entry). Modes are permission bits only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        rel: String,
        mode: u32,
    },
    File {
        rel: String,
        content: Vec<u8>,
        mode: u32,
    },
    /// Only with `followSymlinks: false`; the target is relative and stays in the mount.
    Symlink {
        rel: String,
        target: String,
    },
}

impl Entry {
    pub fn rel(&self) -> &str {
        match self {
            Entry::Dir { rel, .. } | Entry::File { rel, .. } | Entry::Symlink { rel, .. } => rel,
        }
    }

    pub fn kind(&self) -> EntryKind {
        match self {
            Entry::Dir { .. } => EntryKind::Dir,
            Entry::File { .. } => EntryKind::File,
            Entry::Symlink { .. } => EntryKind::Symlink,
        }
    }
}

/// What a loaded path was: the reference for the diff and for the conflict check of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    pub kind: EntryKind,
    /// Bytes of a file, length of a link's target, 0 for a directory.
    pub size: u64,
    /// Hex SHA-256 of a file's content or a link's target; `None` for a directory.
    pub sha256: Option<String>,
    pub mode: u32,
}

impl Baseline {
    /// The hash as rendered on the wire, `sha256:<hex>`.
    pub fn wire_hash(&self) -> Option<String> {
        self.sha256.as_ref().map(|h| format!("sha256:{h}"))
    }
}

/// One mount as loaded.
#[derive(Debug, Clone)]
pub struct LoadedMount {
    pub guest: String,
    /// The canonical host directory.
    pub host: PathBuf,
    /// Directories before their contents.
    pub entries: Vec<Entry>,
    /// Every loaded path by rel path; only these can be reported modified or deleted.
    pub baseline: BTreeMap<String, Baseline>,
}

impl LoadedMount {
    /// Where [`crate::mount::sync`] writes this mount's changes.
    pub fn root(&self) -> SyncRoot {
        SyncRoot {
            guest: self.guest.clone(),
            host: self.host.clone(),
        }
    }
}

/// Why a wanted path was not loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Larger than `maxFileSize`.
    TooLarge,
    /// Would take the call past `maxTotalSize`.
    TotalExceeded,
    /// Past the file-count cap.
    TooManyFiles,
    /// A symlink leading out of its mount.
    SymlinkEscape,
    /// A symlink leading back to a directory already loaded (a cycle or a second path to it).
    SymlinkLoop,
    /// A FIFO, socket or device: never loaded.
    SpecialFile,
    /// An IO error, a broken link, a name that is not UTF-8; see the message.
    Unreadable,
}

/// A wanted path that was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// The absolute guest path.
    pub path: String,
    pub size: u64,
    pub reason: SkipReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The result of [`load`].
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// In the plan's order.
    pub mounts: Vec<LoadedMount>,
    pub skipped: Vec<Skipped>,
    /// Skipped paths beyond the first 1 000, which are only counted.
    pub skipped_unlisted: usize,
    /// Files and directories the rules hid (read or list denied, or excluded).
    pub hidden: usize,
    /// Bytes of file content loaded, all mounts together.
    pub total_bytes: u64,
}

/// Loads the mounts of `plan`. `referenced` are the guest paths the call's arguments mention;
/// only `lazy` mode uses them (see [`LoadingMode::Lazy`]). Fails only when a mount's root
/// cannot be opened any more; per-path trouble is reported in [`Loaded::skipped`].
pub fn load(plan: &MountPlan, referenced: &[String]) -> Result<Loaded, MountError> {
    let refs: Vec<String> = referenced.iter().filter_map(|r| normalise_abs(r)).collect();
    let mut out = Loaded::default();
    let mut files = 0usize;
    for spec in &plan.mounts {
        let select = select_for(plan, spec, &refs);
        let root = host::open_root(&spec.host).map_err(|e| {
            MountError::invalid(
                spec.field.clone(),
                format!("the host directory cannot be opened: {e}"),
            )
        })?;
        let mount = walk::walk_mount(plan, spec, root, select, &mut out, &mut files);
        out.mounts.push(mount);
    }
    Ok(out)
}

fn select_for(plan: &MountPlan, spec: &MountSpec, refs: &[String]) -> Select {
    match plan.mode {
        LoadingMode::Eager => Select::All,
        LoadingMode::Explicit if plan.has_include => Select::Some { refs: Vec::new() },
        LoadingMode::Explicit => Select::Nothing,
        LoadingMode::Lazy => {
            let rels: Vec<String> = refs
                .iter()
                .filter_map(|r| rel_in_mount(&spec.guest, r))
                .map(str::to_owned)
                .collect();
            if rels.iter().any(String::is_empty) {
                Select::All
            } else if rels.is_empty() && !plan.has_include {
                Select::Nothing
            } else {
                Select::Some { refs: rels }
            }
        }
    }
}

/// Which paths of a mount are wanted, rules aside.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Select {
    All,
    Nothing,
    /// The `include` globs, and these referenced rel paths (with what is under them).
    Some {
        refs: Vec<String>,
    },
}
