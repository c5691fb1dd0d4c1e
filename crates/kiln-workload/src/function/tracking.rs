//! The sandbox's side of a call's files: staging Kiln's files, the virtual files and the mounts'
//! entries before the call (as the sandbox's user, through the tree's `RESOLVE_IN_ROOT` walk),
//! and reading back the working directory and the mounts after it, so that what changed is
//! reported (created, modified, deleted, with sizes and SHA-256 hashes) and, for mounts, judged
//! by their rules and synced.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use kiln_engine::tree::{EntryKind, SandboxPath, Tree, MAX_LIST_DEPTH};
use kiln_engine::Sandbox;
use serde::Serialize;

use super::harness::DIR;
use super::{FunctionCall, FunctionError};
use crate::mount::{self, LoadedMount, MountChanges, Seen, SeenKind};

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
    files: BTreeMap<String, String>,
}

/// How deep the tree is read back (as deep as mounts are loaded).
const MAX_DEPTH: u32 = 128;

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
        let (seen, truncated) = read_back(&tree, workdir, &skip, &mut budget)?;
        changes.truncated |= truncated;
        diff_workdir(workdir, &staged.files, &seen, &mut changes);
    }
    for m in mounts {
        let (seen, truncated) = read_back(&tree, &m.guest, &[DIR], &mut budget)?;
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

fn diff_workdir(
    workdir: &str,
    before: &BTreeMap<String, String>,
    seen: &[Seen],
    changes: &mut WorkspaceChanges,
) {
    let mut present = std::collections::BTreeSet::new();
    for s in seen {
        present.insert(s.rel.as_str());
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
        match before.get(&s.rel) {
            None => changes.created.push(file),
            Some(h) if file.hash.as_ref() != Some(h) => changes.modified.push(file),
            Some(_) => {}
        }
    }
    for (rel, h) in before {
        if !present.contains(rel.as_str()) {
            changes.deleted.push(TrackedFile {
                path: join(workdir, rel),
                kind: "file",
                size: 0,
                hash: Some(h.clone()),
                content: None,
                encoding: None,
            });
        }
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

/// Everything under `root` but `skip`, with file contents, within `budget` bytes. What cannot
/// be read back (past the budget or the listing's caps, a name the tree refuses, a file its
/// user may not read) is left out and makes the result `truncated`: nothing is then taken as
/// deleted.
fn read_back(
    tree: &Tree,
    root: &str,
    skip: &[&str],
    budget: &mut u64,
) -> Result<(Vec<Seen>, bool), FunctionError> {
    let mut seen = Vec::new();
    let mut truncated = false;
    let mut pending = vec![(root.to_string(), 0u32)];
    while let Some((dir, depth)) = pending.pop() {
        let Ok(at) = SandboxPath::parse(&dir) else {
            truncated = true;
            continue;
        };
        let listing = match tree.list(&at, MAX_LIST_DEPTH) {
            Ok(l) => l,
            // The root itself missing (a call that removed its mount) is all of it deleted.
            Err(_) if dir == root => return Ok((seen, false)),
            Err(_) => {
                truncated = true;
                continue;
            }
        };
        truncated |= listing.truncated;
        for entry in listing.entries {
            if skip.iter().any(|s| within(&entry.path, s)) {
                continue;
            }
            let rel = entry
                .path
                .strip_prefix(root)
                .unwrap_or(&entry.path)
                .trim_start_matches('/')
                .to_string();
            let below = entry.path[dir.len()..].matches('/').count() as u32;
            let kind = match entry.kind {
                EntryKind::Dir => {
                    // The listing stops MAX_LIST_DEPTH levels down: go on from there, as deep
                    // as a mount is loaded.
                    if below == MAX_LIST_DEPTH {
                        if depth + below < MAX_DEPTH {
                            pending.push((entry.path.clone(), depth + below));
                        } else {
                            truncated = true;
                        }
                    }
                    SeenKind::Dir
                }
                EntryKind::Symlink => SeenKind::Symlink {
                    target: entry.target.clone().unwrap_or_default(),
                },
                EntryKind::File => match read_file(tree, &entry.path, entry.size, budget) {
                    Some(content) => SeenKind::File {
                        content,
                        mode: entry.mode,
                    },
                    None => {
                        truncated = true;
                        continue;
                    }
                },
                // Fifos and sockets a call leaves are neither its output nor syncable.
                EntryKind::Other => continue,
            };
            seen.push(Seen { rel, kind });
        }
    }
    seen.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((seen, truncated))
}

/// A file's contents, if it fits `budget` and can be read.
fn read_file(tree: &Tree, path: &str, size: u64, budget: &mut u64) -> Option<Vec<u8>> {
    if size > *budget {
        return None;
    }
    let (file, size) = tree.open_read(&SandboxPath::parse(path).ok()?).ok()?;
    let mut content = Vec::with_capacity(size as usize);
    file.take(*budget).read_to_end(&mut content).ok()?;
    *budget = budget.saturating_sub(content.len() as u64);
    Some(content)
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

/// `path` is `dir` or under it.
fn within(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/') || dir == "/")
}

fn join(dir: &str, rel: &str) -> String {
    if rel.is_empty() {
        dir.to_string()
    } else {
        format!("{}/{rel}", dir.trim_end_matches('/'))
    }
}

fn sandbox_err<E: std::fmt::Display>(step: &'static str) -> impl Fn(E) -> FunctionError {
    move |e| FunctionError::Sandbox {
        step,
        message: e.to_string(),
    }
}
