//! The sandbox's side of a call's files: staging Kiln's files, the virtual files and the mounts'
//! entries before the call (as the sandbox's user, through the tree's `RESOLVE_IN_ROOT` walk),
//! and reading back the working directory and the mounts after it, so that what changed is
//! reported (created, modified, deleted, with sizes and SHA-256 hashes) and, for mounts, judged
//! by their rules and synced.

use std::sync::Arc;

use kiln_engine::tree::{SandboxPath, Tree};
use kiln_engine::Sandbox;
use serde::Serialize;

use super::harness::DIR;
use super::{FunctionCall, FunctionError};
use crate::mount::{self, LoadedMount, MountChanges, Seen, SeenKind};
use crate::workspace::{self, join, read_back, within, Baseline, Change};

/// One changed file as a call reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackedFile {
    /// Its absolute path inside the sandbox.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: &'static str,
    /// Its size in bytes (0 for a deleted file).
    pub size: u64,
    /// `sha256:<hex>` of its contents (of what was there, for a deleted file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Its contents, when asked for: UTF-8 text, or base64 with `encoding: "base64"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `base64` when `content` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
}

/// What changed in a call's tree.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceChanges {
    /// New files and directories under the working directory.
    pub created: Vec<TrackedFile>,
    /// Files there whose contents or kind changed.
    pub modified: Vec<TrackedFile>,
    /// Files there that are gone.
    pub deleted: Vec<TrackedFile>,
    /// Each mount's changes, judged by its rules (in the order of the call's mounts).
    pub mounts: Vec<MountChanges>,
    /// Mounted files that were not loaded (too large, past the total, links out of the mount).
    pub skipped: Vec<mount::Skipped>,
    /// More files were there than Kiln reads back.
    pub truncated: bool,
}

/// What was written before the call, to compare with what is there after it.
#[derive(Debug, Default)]
pub struct Staged {
    /// The virtual files under the working directory: relative name → hash.
    files: Baseline,
}

/// How much of the tree is read back, in all: past it the changes are `truncated`.
const READ_BACK_BYTES: u64 = 128 << 20;

/// Writes Kiln's `kit`, the virtual `files` under `workdir` and the mounts' entries. Blocking.
pub fn stage(
    sandbox: &Arc<Sandbox>,
    kit: &[(String, Vec<u8>)],
    workdir: &str,
    files: &[(String, Vec<u8>)],
    mounts: &[LoadedMount],
) -> Result<Staged, FunctionError> {
    let tree = sandbox
        .tree()
        .map_err(sandbox_err("open the sandbox's tree"))?;
    for (path, content) in kit {
        write(&tree, path, content, 0o644)?;
    }
    let workdir_path = parse(workdir)?;
    tree.mkdir_all(&workdir_path)
        .map_err(sandbox_err("make the working directory"))?;
    let mut staged = Staged::default();
    for (name, content) in files {
        write(&tree, &format!("{workdir}/{name}"), content, 0o644)?;
        staged.files.insert(name.clone(), mount::wire_hash(content));
    }
    for m in mounts {
        tree.mkdir_all(&parse(&m.guest)?)
            .map_err(sandbox_err("make a mount's directory"))?;
        for entry in &m.entries {
            let at = join(&m.guest, entry.rel());
            match entry {
                mount::Entry::Dir { .. } => {
                    tree.mkdir_all(&parse(&at)?)
                        .map_err(sandbox_err("make a mounted directory"))?;
                }
                mount::Entry::File { content, mode, .. } => write(&tree, &at, content, *mode)?,
                mount::Entry::Symlink { target, .. } => {
                    tree.symlink(&parse(&at)?, target)
                        .map_err(sandbox_err("make a mounted symlink"))?;
                }
            }
        }
    }
    Ok(staged)
}

/// Reads back the working directory and the mounts, and compares them with what was staged.
pub async fn collect(
    sandbox: &Arc<Sandbox>,
    call: &FunctionCall,
    staged: Staged,
) -> Result<WorkspaceChanges, FunctionError> {
    let sandbox = Arc::clone(sandbox);
    let workdir = call.workdir.clone();
    let mounts = call.mounts.clone();
    let mut changes = tokio::task::spawn_blocking(move || match mounts.as_deref() {
        Some(m) => collect_blocking(
            &sandbox,
            &workdir,
            &m.loaded.mounts,
            &m.plan.permissions,
            &staged,
        ),
        None => collect_blocking(
            &sandbox,
            &workdir,
            &[],
            &mount::Permissions::default(),
            &staged,
        ),
    })
    .await
    .map_err(|e| FunctionError::Sandbox {
        step: "read back the call's files",
        message: e.to_string(),
    })??;
    if let Some(m) = &call.mounts {
        changes.skipped = m.loaded.skipped.clone();
    }
    Ok(changes)
}

fn collect_blocking(
    sandbox: &Sandbox,
    workdir: &str,
    mounts: &[LoadedMount],
    permissions: &mount::Permissions,
    staged: &Staged,
) -> Result<WorkspaceChanges, FunctionError> {
    let tree = sandbox
        .tree()
        .map_err(sandbox_err("open the sandbox's tree"))?;
    let mut changes = WorkspaceChanges::default();
    let mut budget = READ_BACK_BYTES;
    let guests: Vec<&str> = mounts.iter().map(|m| m.guest.as_str()).collect();
    // The working directory is tracked unless a mount covers it (then the mount is).
    if !guests.iter().any(|g| within(workdir, g)) {
        let skip: Vec<&str> = guests.iter().copied().chain(std::iter::once(DIR)).collect();
        let (seen, truncated) = read_back(&tree, workdir, &skip, &mut budget)
            .map_err(sandbox_err("read back the working directory"))?;
        changes.truncated |= truncated;
        diff_workdir(workdir, &staged.files, &seen, &mut changes);
    }
    for m in mounts {
        let (seen, truncated) = read_back(&tree, &m.guest, &[DIR], &mut budget)
            .map_err(sandbox_err("read back a mount"))?;
        changes.truncated |= truncated;
        let mut found = mount::diff(m, &seen, permissions);
        if truncated {
            // What was not read back is not known to be gone.
            found.deleted.clear();
        }
        changes.mounts.push(found);
    }
    Ok(changes)
}

fn diff_workdir(workdir: &str, before: &Baseline, seen: &[Seen], changes: &mut WorkspaceChanges) {
    let found = workspace::diff(before, seen);
    for (change, s) in found.changed {
        let path = join(workdir, &s.rel);
        let file = match &s.kind {
            SeenKind::File { content, .. } => TrackedFile {
                path,
                kind: "file",
                size: content.len() as u64,
                hash: Some(mount::wire_hash(content)),
                content: None,
                encoding: None,
            }
            .with_content(content),
            SeenKind::Dir => TrackedFile {
                path,
                kind: "dir",
                size: 0,
                hash: None,
                content: None,
                encoding: None,
            },
            SeenKind::Symlink { target } => TrackedFile {
                path,
                kind: "symlink",
                size: target.len() as u64,
                hash: None,
                content: Some(target.clone()),
                encoding: None,
            },
        };
        match change {
            Change::Created => changes.created.push(file),
            Change::Modified => changes.modified.push(file),
        }
    }
    for (rel, hash) in found.deleted {
        changes.deleted.push(TrackedFile {
            path: join(workdir, rel),
            kind: "file",
            size: 0,
            hash: Some(hash.to_string()),
            content: None,
            encoding: None,
        });
    }
}

impl TrackedFile {
    /// Keeps `content` (dropped again unless the caller asks for contents).
    fn with_content(mut self, content: &[u8]) -> Self {
        let (text, encoding) = mount::text_or_base64(content);
        self.content = Some(text);
        self.encoding = encoding;
        self
    }

    /// Drops the contents (a symlink's target stays: it is what the link is).
    pub fn without_content(mut self) -> Self {
        if self.kind != "symlink" {
            self.content = None;
            self.encoding = None;
        }
        self
    }
}

fn write(tree: &Tree, path: &str, content: &[u8], mode: u32) -> Result<(), FunctionError> {
    use std::io::Write;
    let mut file = tree
        .open_write(&parse(path)?, mode)
        .map_err(sandbox_err("write a file into the sandbox"))?;
    file.write_all(content).map_err(|e| FunctionError::Sandbox {
        step: "write a file into the sandbox",
        message: format!("{path}: {e}"),
    })
}

fn parse(path: &str) -> Result<SandboxPath, FunctionError> {
    SandboxPath::parse(path).map_err(sandbox_err("a path inside the sandbox"))
}

fn sandbox_err<E: std::fmt::Display>(step: &'static str) -> impl Fn(E) -> FunctionError {
    move |e| FunctionError::Sandbox {
        step,
        message: e.to_string(),
    }
}
