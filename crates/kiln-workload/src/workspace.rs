//! What a run did to a directory of its sandbox: the tree read back (through the tree's
//! `RESOLVE_IN_ROOT` walk as the sandbox's user, never following a link) and compared with a
//! baseline of what was there before, so that what was created, modified or deleted is known.
//! Function calls report these changes ([`crate::function`]); a program's run keeps the files it
//! created or changed as its artifacts ([`capture`]).

use std::collections::BTreeMap;
use std::io::Read;

use kiln_engine::tree::{EntryKind, SandboxPath, Tree, MAX_LIST_DEPTH};
use kiln_engine::Sandbox;

use crate::mount::{self, Seen, SeenKind};

/// What a directory held before a run: relative name → `sha256:<hex>` of each file.
pub type Baseline = BTreeMap<String, String>;

/// How deep a tree is read back (as deep as mounts are loaded).
const MAX_DEPTH: u32 = 128;

/// How a file differs from the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It was not there.
    Created,
    /// Its contents or kind changed.
    Modified,
}

/// What changed under a directory.
#[derive(Debug, Default)]
pub struct Changes<'a> {
    /// What is there now and differs from the baseline, in name order.
    pub changed: Vec<(Change, &'a Seen)>,
    /// The baseline's files that are gone: name and hash.
    pub deleted: Vec<(&'a str, &'a str)>,
}

/// Compares what is there (`seen`) with `before`.
pub fn diff<'a>(before: &'a Baseline, seen: &'a [Seen]) -> Changes<'a> {
    let mut out = Changes::default();
    let mut present = std::collections::BTreeSet::new();
    for s in seen {
        present.insert(s.rel.as_str());
        let now = match &s.kind {
            SeenKind::File { content, .. } => Some(mount::wire_hash(content)),
            _ => None,
        };
        match before.get(&s.rel) {
            None => out.changed.push((Change::Created, s)),
            Some(h) if now.as_ref() != Some(h) => out.changed.push((Change::Modified, s)),
            Some(_) => {}
        }
    }
    for (rel, h) in before {
        if !present.contains(rel.as_str()) {
            out.deleted.push((rel, h));
        }
    }
    out
}

/// The baseline of the files among `seen`.
pub fn baseline_of(seen: &[Seen]) -> Baseline {
    seen.iter()
        .filter_map(|s| match &s.kind {
            SeenKind::File { content, .. } => Some((s.rel.clone(), mount::wire_hash(content))),
            _ => None,
        })
        .collect()
}

/// Everything under `root` but `skip`, with file contents, within `budget` bytes. What cannot
/// be read back (past the budget or the listing's caps, a name the tree refuses, a file its
/// user may not read) is left out and makes the result `truncated`: nothing is then taken as
/// deleted.
pub fn read_back(
    tree: &Tree,
    root: &str,
    skip: &[&str],
    budget: &mut u64,
) -> Result<(Vec<Seen>, bool), kiln_engine::tree::TreeError> {
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

/// `path` is `dir` or under it.
pub fn within(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/') || dir == "/")
}

/// `rel` under `dir`.
pub fn join(dir: &str, rel: &str) -> String {
    if rel.is_empty() {
        dir.to_string()
    } else {
        format!("{}/{rel}", dir.trim_end_matches('/'))
    }
}

/// How much of a run's output files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureLimits {
    /// Most files.
    pub max_files: usize,
    /// Most bytes, all files together.
    pub max_bytes: u64,
}

/// A file a run created or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFile {
    /// Its name, relative to the directory captured.
    pub name: String,
    /// Its bytes.
    pub content: Vec<u8>,
}

/// The files a run created or changed, within the limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// In name order.
    pub files: Vec<CapturedFile>,
    /// Some were left out: past a limit, or not readable back.
    pub truncated: bool,
}

/// How much is read back for a baseline, at most.
const SNAPSHOT_BYTES: u64 = 128 << 20;

/// The baseline of `root` now, and its files' bytes. Blocking.
pub fn snapshot(
    sandbox: &Sandbox,
    root: &str,
) -> Result<(Baseline, u64), kiln_engine::tree::TreeError> {
    let tree = sandbox.tree()?;
    let mut budget = SNAPSHOT_BYTES;
    let (seen, _) = read_back(&tree, root, &[], &mut budget)?;
    Ok((baseline_of(&seen), SNAPSHOT_BYTES - budget))
}

/// The regular files under `root` that differ from `before` (whose files are `before_bytes`
/// long), in name order, up to `limits`: a file that would pass the byte limit is left out and
/// smaller ones after it may still be kept. Links are never followed and never kept. Blocking.
pub fn capture(
    sandbox: &Sandbox,
    root: &str,
    before: &Baseline,
    before_bytes: u64,
    limits: CaptureLimits,
) -> Result<Captured, kiln_engine::tree::TreeError> {
    let tree = sandbox.tree()?;
    let mut budget = before_bytes.saturating_add(limits.max_bytes);
    let (seen, unread) = read_back(&tree, root, &[], &mut budget)?;
    let mut out = Captured {
        files: Vec::new(),
        truncated: unread,
    };
    let mut bytes = 0u64;
    for (_, s) in diff(before, &seen).changed {
        let SeenKind::File { content, .. } = &s.kind else {
            continue;
        };
        let size = content.len() as u64;
        if out.files.len() == limits.max_files || bytes.saturating_add(size) > limits.max_bytes {
            out.truncated = true;
            continue;
        }
        bytes += size;
        out.files.push(CapturedFile {
            name: s.rel.clone(),
            content: content.clone(),
        });
    }
    Ok(out)
}
