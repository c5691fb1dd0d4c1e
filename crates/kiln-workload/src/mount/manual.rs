//! Manual sync: the changes a client picks from a call's report and sends back with the same
//! mount config (`POST /v1/functions/sync`), validated into the input of [`sync_all`].

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::config::MountPlan;
use super::host;
use super::load::EntryKind;
use super::sync::{sync_all, SyncReport, SyncTarget};
use super::track::{Denied, Expected, FileChange, Operation};
use super::{split_rel, unclean_abs, MountError};

/// How a wire change's `content` is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
}

/// One change as a client sends it back. A [`crate::mount::FileChangeWire`] from the call's
/// report can be sent as it is.
///
/// - `operation` may be left out when `content` (or `target`) is given: then it is a modify
///   when the host has something at the path and a create otherwise.
/// - `kind` defaults to `file`; a `symlink` takes its target from `target` (or `content`).
/// - A modify or delete is checked against the host: `baseHash`, or else `hash`, must be the
///   hash the call reported for the host version (a deleted directory needs none).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireChange {
    pub path: String,
    #[serde(default)]
    pub operation: Option<Operation>,
    #[serde(default)]
    pub kind: Option<EntryKind>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub encoding: Option<Encoding>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub hash: Option<String>,
    #[serde(default)]
    pub base_hash: Option<String>,
    /// Ignored: accepted so that a reported change can be sent back unchanged.
    #[serde(default)]
    pub size: Option<u64>,
    /// Ignored, like `size`.
    #[serde(default)]
    pub permitted: Option<bool>,
}

/// What [`manual_changes`] made of a request: the changes to sync per mount, and the ones the
/// rules refuse, which are reported and not synced.
#[derive(Debug, Clone)]
pub struct ManualSync {
    pub targets: Vec<SyncTarget>,
    pub denied: Vec<Denied>,
}

impl ManualSync {
    /// Syncs the targets with the plan's rules, `onError` and `followSymlinks`. Blocking.
    pub fn run(&self, plan: &MountPlan) -> SyncReport {
        sync_all(
            &self.targets,
            &plan.permissions,
            plan.sync.on_error,
            plan.follow,
        )
    }
}

/// Validates `changes` against `plan` (the request's mount config, prepared): every path must
/// be a clean absolute path strictly inside a mount, listed once; contents must decode and fit
/// `maxFileSize`; modifies and deletes must carry the hash to check the host against. Changes
/// the rules refuse land in [`ManualSync::denied`].
pub fn manual_changes(plan: &MountPlan, changes: &[WireChange]) -> Result<ManualSync, MountError> {
    let mut targets: Vec<SyncTarget> = plan
        .roots()
        .into_iter()
        .map(|root| SyncTarget {
            root,
            changes: Vec::new(),
        })
        .collect();
    let mut roots: Vec<Option<OwnedFd>> = plan.mounts.iter().map(|_| None).collect();
    let mut denied = Vec::new();
    let mut listed = HashSet::new();
    for (i, w) in changes.iter().enumerate() {
        let field = |f: &str| format!("changes[{i}].{f}");
        if let Some(reason) = unclean_abs(&w.path) {
            return Err(MountError::invalid(field("path"), reason));
        }
        let Some((mi, rel)) = plan.mount_for(&w.path) else {
            return Err(MountError::invalid(field("path"), "is not inside a mount"));
        };
        if rel.is_empty() {
            return Err(MountError::invalid(field("path"), "is a mount's root"));
        }
        if !listed.insert(w.path.as_str()) {
            return Err(MountError::invalid(field("path"), "is listed twice"));
        }
        let kind = w.kind.unwrap_or(EntryKind::File);
        let payload = payload(w, kind).map_err(|r| MountError::invalid(field("content"), r))?;
        let operation = match (w.operation, &payload) {
            (Some(op), _) => op,
            (None, Some(_)) => {
                let spec = &plan.mounts[mi];
                if roots[mi].is_none() {
                    let fd = host::open_root(&spec.host).map_err(|e| {
                        MountError::invalid(
                            spec.field.clone(),
                            format!("the host directory cannot be opened: {e}"),
                        )
                    })?;
                    roots[mi] = Some(fd);
                }
                match &roots[mi] {
                    Some(fd) if exists(fd, rel) => Operation::Modify,
                    _ => Operation::Create,
                }
            }
            (None, None) => {
                return Err(MountError::invalid(
                    field("operation"),
                    "is needed when no content is given",
                ))
            }
        };
        if operation != Operation::Delete && kind != EntryKind::Dir && payload.is_none() {
            return Err(MountError::invalid(
                field("content"),
                "is needed to create or modify a file or link",
            ));
        }
        let size = payload.as_ref().map_or(0, |p| p.len() as u64);
        if kind == EntryKind::File && size > plan.limits.max_file_size {
            return Err(MountError::invalid(
                field("content"),
                format!(
                    "is larger than the mount's maxFileSize ({} bytes)",
                    plan.limits.max_file_size
                ),
            ));
        }
        let base = match operation {
            Operation::Create => None,
            _ => Some(
                expected(w, kind, operation).map_err(|r| MountError::invalid(field("hash"), r))?,
            ),
        };
        let hash = match operation {
            Operation::Delete => base.as_ref().and_then(|b| b.hash.clone()),
            _ => payload.as_deref().map(host::wire_hash),
        };
        let p = operation.permission();
        let decision = plan.permissions.decide(rel, p);
        if !decision.allowed {
            denied.push(Denied {
                path: w.path.clone(),
                operation,
                reason: decision.describe(p),
            });
            continue;
        }
        targets[mi].changes.push(FileChange {
            path: w.path.clone(),
            rel: rel.to_owned(),
            operation,
            kind,
            size,
            hash,
            content: if operation == Operation::Delete {
                None
            } else {
                payload
            },
            mode: None,
            base,
            permitted: true,
        });
    }
    targets.retain(|t| !t.changes.is_empty());
    Ok(ManualSync { targets, denied })
}

/// The bytes a change writes: a file's decoded content, a link's target.
fn payload(w: &WireChange, kind: EntryKind) -> Result<Option<Vec<u8>>, String> {
    match kind {
        EntryKind::Dir if w.content.is_some() || w.target.is_some() => {
            Err("a directory has no content".into())
        }
        EntryKind::Dir => Ok(None),
        EntryKind::Symlink => Ok(w
            .target
            .clone()
            .or_else(|| w.content.clone())
            .map(String::into_bytes)),
        EntryKind::File => match (&w.content, w.encoding.unwrap_or_default()) {
            (None, _) => Ok(None),
            (Some(c), Encoding::Utf8) => Ok(Some(c.clone().into_bytes())),
            (Some(c), Encoding::Base64) => base64::engine::general_purpose::STANDARD
                .decode(c)
                .map(Some)
                .map_err(|e| format!("is not valid base64: {e}")),
        },
    }
}

/// What the host must hold for a modify or delete.
fn expected(w: &WireChange, kind: EntryKind, op: Operation) -> Result<Expected, String> {
    let given = w.base_hash.as_deref().or(w.hash.as_deref());
    match given {
        Some(h) => Ok(Expected {
            kind: (op == Operation::Delete).then_some(w.kind).flatten(),
            hash: Some(normalise_hash(h)?),
        }),
        None if op == Operation::Delete && kind == EntryKind::Dir => Ok(Expected {
            kind: Some(EntryKind::Dir),
            hash: None,
        }),
        None => Err("is needed: the hash the call reported for the host version".into()),
    }
}

/// `sha256:<hex>` (or bare hex) as `sha256:<lowercase hex>`.
fn normalise_hash(h: &str) -> Result<String, String> {
    let hex = h.strip_prefix("sha256:").unwrap_or(h);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
    } else {
        Err(format!(
            "`{h}` is not a SHA-256 hash (`sha256:<64 hex digits>`)"
        ))
    }
}

/// Whether the host has anything at `rel`; a path that cannot be resolved without symlinks
/// counts as existing, so that it becomes a modify, which the conflict check refuses.
fn exists(root: &OwnedFd, rel: &str) -> bool {
    let (parent, name) = split_rel(rel);
    match host::open_dir(root, parent) {
        Ok(dir) => host::lstat_at(&dir, name).is_ok(),
        Err(e) => e.raw_os_error() != Some(libc::ENOENT),
    }
}
