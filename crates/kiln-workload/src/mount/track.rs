//! Tracking: what the call changed in a mount, and whether the rules let each change be kept.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::host::{sha256_hex, wire_hash};
use super::load::{EntryKind, LoadedMount};
use super::rules::{Permission, Permissions};
use super::{guest_path, is_clean_rel, path_order};

/// What the sandbox holds at one path under a mount's guest path after the call, read without
/// following symlinks (a link is reported as a link, and nothing under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Relative to the mount's guest path.
    pub rel: String,
    pub kind: SeenKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeenKind {
    File { content: Vec<u8>, mode: u32 },
    Dir,
    Symlink { target: String },
}

/// What a change does on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Create,
    Modify,
    Delete,
}

impl Operation {
    /// The permission the change needs.
    pub fn permission(self) -> Permission {
        match self {
            Operation::Create => Permission::Create,
            Operation::Modify => Permission::Modify,
            Operation::Delete => Permission::Delete,
        }
    }
}

/// What the host must still hold for a modify or delete to go ahead: the conflict check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// `None`: any kind, as long as the hash matches.
    pub kind: Option<EntryKind>,
    /// `sha256:<hex>` of the file's content or the link's target; `None` for a directory.
    pub hash: Option<String>,
}

/// One change of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The absolute guest path.
    pub path: String,
    pub rel: String,
    pub operation: Operation,
    /// The new kind; for a delete, the kind removed.
    pub kind: EntryKind,
    /// Bytes of the new content (or the removed one, for a delete); a link's target length.
    pub size: u64,
    /// `sha256:<hex>` of the new content or link target; for a delete, of what it removes.
    pub hash: Option<String>,
    /// A file's new content, or a link's target: kept for the sync.
    pub content: Option<Vec<u8>>,
    /// The new permission bits; `None` keeps the host's on a modify, 0644/0755 on a create.
    pub mode: Option<u32>,
    /// For a modify or delete, what the host held when the path was loaded.
    pub base: Option<Expected>,
    pub permitted: bool,
}

/// A change the rules refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Denied {
    pub path: String,
    pub operation: Operation,
    pub reason: String,
}

/// What [`diff`] found in one mount. Every change is in exactly one of `created`, `modified`
/// and `deleted`, sorted by path; refused ones also in `denied`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountChanges {
    pub created: Vec<FileChange>,
    pub modified: Vec<FileChange>,
    pub deleted: Vec<FileChange>,
    pub denied: Vec<Denied>,
}

impl MountChanges {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.modified.is_empty() && self.deleted.is_empty()
    }

    /// Every change, created first.
    pub fn all(&self) -> impl Iterator<Item = &FileChange> {
        self.created
            .iter()
            .chain(&self.modified)
            .chain(&self.deleted)
    }

    /// Copies of the permitted changes, the input of [`crate::mount::sync`].
    pub fn to_sync(&self) -> Vec<FileChange> {
        self.all().filter(|c| c.permitted).cloned().collect()
    }

    /// The permitted changes, without copying their contents.
    pub fn into_sync(self) -> Vec<FileChange> {
        let mut out = self.created;
        out.extend(self.modified);
        out.extend(self.deleted);
        out.retain(|c| c.permitted);
        out
    }

    /// The wire projection; file contents only when `include_contents`.
    pub fn to_wire(&self, include_contents: bool) -> MountChangesWire {
        let wire = |v: &[FileChange]| v.iter().map(|c| c.to_wire(include_contents)).collect();
        MountChangesWire {
            created: wire(&self.created),
            modified: wire(&self.modified),
            deleted: wire(&self.deleted),
            denied: self.denied.clone(),
        }
    }
}

/// [`MountChanges`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountChangesWire {
    pub created: Vec<FileChangeWire>,
    pub modified: Vec<FileChangeWire>,
    pub deleted: Vec<FileChangeWire>,
    pub denied: Vec<Denied>,
}

/// A [`FileChange`] on the wire. Sending one back to the manual sync as it is works: its
/// `baseHash` is what the host is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileChangeWire {
    pub path: String,
    pub operation: Operation,
    pub kind: EntryKind,
    pub size: u64,
    pub hash: Option<String>,
    /// For a modify or delete: the hash of the version loaded from the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_hash: Option<String>,
    /// A link's target, always included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A file's content when asked for: a string when it is valid UTF-8, else base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `"base64"` when `content` is base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    pub permitted: bool,
}

impl FileChange {
    /// The wire projection; the file's content only when `include_contents`.
    pub fn to_wire(&self, include_contents: bool) -> FileChangeWire {
        let is_link = self.kind == EntryKind::Symlink && self.operation != Operation::Delete;
        let target = if is_link {
            self.content
                .as_ref()
                .map(|t| String::from_utf8_lossy(t).into_owned())
        } else {
            None
        };
        let (content, encoding) = match &self.content {
            Some(bytes) if include_contents && self.kind == EntryKind::File => {
                let (text, encoding) = text_or_base64(bytes);
                (Some(text), encoding)
            }
            _ => (None, None),
        };
        FileChangeWire {
            path: self.path.clone(),
            operation: self.operation,
            kind: self.kind,
            size: self.size,
            hash: self.hash.clone(),
            base_hash: self.base.as_ref().and_then(|b| b.hash.clone()),
            target,
            content,
            encoding,
            permitted: self.permitted,
        }
    }
}

/// A file's contents for JSON: the text when it is UTF-8, else base64 (with `"base64"`, the
/// `encoding` to report beside it).
pub fn text_or_base64(bytes: &[u8]) -> (String, Option<&'static str>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Some("base64"),
        ),
    }
}

/// Compares what the sandbox holds under a mount (`seen`) with what was loaded into it.
///
/// A path is modified when its content (a link's target) or its kind differs from the
/// baseline; a mode change alone is no change. Paths that were not loaded (skipped, hidden, not
/// wanted in `lazy`/`explicit`) are never reported deleted: they have no baseline. A created
/// directory is reported once, its created contents each on their own; a created directory
/// the rules refuse is still permitted when something permitted is created under it (the
/// sync would have to create it anyway), and refused creations under a refused directory are
/// folded into its [`Denied`] entry. Seen paths that are not clean rel paths are ignored.
pub fn diff(loaded: &LoadedMount, seen: &[Seen], perms: &Permissions) -> MountChanges {
    let mut now: BTreeMap<&str, &SeenKind> = BTreeMap::new();
    for s in seen {
        let rel = s.rel.trim_start_matches('/').trim_end_matches('/');
        if is_clean_rel(rel) {
            now.insert(rel, &s.kind);
        } else {
            tracing::warn!(mount = %loaded.guest, rel = %s.rel, "ignoring a seen path that is not a clean relative path");
        }
    }
    let mut out = MountChanges::default();
    for (&rel, &kind) in &now {
        let (kind, content, mode) = match kind {
            SeenKind::File { content, mode } => {
                // Nobody but the host directory's owner may write what a sandbox leaves there.
                (EntryKind::File, Some(content.clone()), Some(mode & 0o755))
            }
            SeenKind::Dir => (EntryKind::Dir, None, None),
            SeenKind::Symlink { target } => {
                (EntryKind::Symlink, Some(target.as_bytes().to_vec()), None)
            }
        };
        let hash = content.as_deref().map(wire_hash);
        let size = content.as_ref().map_or(0, |c| c.len() as u64);
        let (operation, base) = match loaded.baseline.get(rel) {
            None => (Operation::Create, None),
            Some(b) => {
                let same = b.kind == kind
                    && b.sha256.as_deref() == content.as_deref().map(sha256_hex).as_deref();
                if same {
                    continue;
                }
                let base = Expected {
                    kind: Some(b.kind),
                    hash: b.wire_hash(),
                };
                (Operation::Modify, Some(base))
            }
        };
        let change = FileChange {
            path: guest_path(&loaded.guest, rel),
            rel: rel.to_owned(),
            operation,
            kind,
            size,
            hash,
            content,
            mode,
            base,
            permitted: perms.allows(rel, operation.permission()),
        };
        match operation {
            Operation::Create => out.created.push(change),
            _ => out.modified.push(change),
        }
    }
    for (rel, b) in &loaded.baseline {
        if now.contains_key(rel.as_str()) {
            continue;
        }
        out.deleted.push(FileChange {
            path: guest_path(&loaded.guest, rel),
            rel: rel.clone(),
            operation: Operation::Delete,
            kind: b.kind,
            size: b.size,
            hash: b.wire_hash(),
            content: None,
            mode: None,
            base: Some(Expected {
                kind: Some(b.kind),
                hash: b.wire_hash(),
            }),
            permitted: perms.allows(rel, Permission::Delete),
        });
    }
    for v in [&mut out.created, &mut out.modified, &mut out.deleted] {
        v.sort_by(|a, b| path_order(&a.rel, &b.rel));
    }
    permit_parents(&mut out.created);
    out.denied = denials(&out, perms);
    out
}

/// Marks refused created directories permitted when something permitted is created under
/// them. `created` is in [`path_order`], so what is under a directory follows it.
fn permit_parents(created: &mut [FileChange]) {
    for i in (0..created.len()).rev() {
        if created[i].kind != EntryKind::Dir || created[i].permitted {
            continue;
        }
        let prefix = format!("{}/", created[i].rel);
        let below = created[i + 1..]
            .iter()
            .take_while(|c| c.rel.starts_with(&prefix))
            .any(|c| c.permitted);
        created[i].permitted = below;
    }
}

fn denials(changes: &MountChanges, perms: &Permissions) -> Vec<Denied> {
    let mut out = Vec::new();
    // The refused created directory being folded into: (index in out, rel prefix, count).
    let mut fold: Option<(usize, String, usize)> = None;
    let close = |out: &mut Vec<Denied>, fold: &mut Option<(usize, String, usize)>| {
        if let Some((i, _, n)) = fold.take() {
            if n > 0 {
                let d: &mut Denied = &mut out[i];
                d.reason = format!("{} (as are the {n} entries created under it)", d.reason);
            }
        }
    };
    for c in changes.all().filter(|c| !c.permitted) {
        if c.operation == Operation::Create {
            if let Some((_, prefix, n)) = &mut fold {
                if c.rel.starts_with(prefix.as_str()) {
                    *n += 1;
                    continue;
                }
            }
            close(&mut out, &mut fold);
        }
        let reason = perms
            .decide(&c.rel, c.operation.permission())
            .describe(c.operation.permission());
        out.push(Denied {
            path: c.path.clone(),
            operation: c.operation,
            reason,
        });
        if c.operation == Operation::Create && c.kind == EntryKind::Dir {
            fold = Some((out.len() - 1, format!("{}/", c.rel), 0));
        }
    }
    close(&mut out, &mut fold);
    out
}
