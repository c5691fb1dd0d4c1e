//! Tests of the mount module, each in its own scratch directory: `mnt` is the mounted host
//! directory, `outside` a sibling that no link may reach.

mod load;
mod manual;
mod rules;
mod sync;
mod track;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;

pub(super) struct Scratch {
    _dir: tempfile::TempDir,
    pub mnt: PathBuf,
    pub outside: PathBuf,
}

pub(super) fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    // Canonical, so that paths compare equal to what the module reports.
    let base = fs::canonicalize(dir.path()).unwrap();
    let mnt = base.join("mnt");
    let outside = base.join("outside");
    fs::create_dir(&mnt).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret.txt"), b"outside secret").unwrap();
    Scratch {
        _dir: dir,
        mnt,
        outside,
    }
}

pub(super) fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
}

pub(super) fn mkdir(root: &Path, rel: &str) {
    fs::create_dir_all(root.join(rel)).unwrap();
}

pub(super) fn link(root: &Path, rel: &str, target: impl AsRef<Path>) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

pub(super) fn chmod(root: &Path, rel: &str, mode: u32) {
    fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
}

/// A config mounting `host` at `/data`, with `extra` merged in.
pub(super) fn config(host: &Path, extra: serde_json::Value) -> MountConfig {
    let mut cfg = serde_json::json!({ "dirs": { "/data": host.to_str().unwrap() } });
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            cfg[k] = v;
        }
    }
    serde_json::from_value(cfg).unwrap()
}

pub(super) fn plan(host: &Path, extra: serde_json::Value) -> MountPlan {
    MountPlan::prepare(&config(host, extra), None, MountLimits::default()).unwrap()
}

pub(super) fn load_one(plan: &MountPlan) -> (LoadedMount, Loaded) {
    let loaded = load(plan, &[]).unwrap();
    (loaded.mounts[0].clone(), loaded)
}

pub(super) fn rels(m: &LoadedMount) -> Vec<&str> {
    m.entries.iter().map(Entry::rel).collect()
}

pub(super) fn content<'a>(m: &'a LoadedMount, rel: &str) -> Option<&'a [u8]> {
    m.entries.iter().find_map(|e| match e {
        Entry::File {
            rel: r, content, ..
        } if r == rel => Some(content.as_slice()),
        _ => None,
    })
}

pub(super) fn skipped(l: &Loaded) -> BTreeMap<&str, SkipReason> {
    l.skipped
        .iter()
        .map(|s| (s.path.as_str(), s.reason))
        .collect()
}

/// What the sandbox holds right after loading, as the caller would read it back.
pub(super) fn seen_of(m: &LoadedMount) -> Vec<Seen> {
    m.entries
        .iter()
        .map(|e| Seen {
            rel: e.rel().to_owned(),
            kind: match e {
                Entry::Dir { .. } => SeenKind::Dir,
                Entry::File { content, mode, .. } => SeenKind::File {
                    content: content.clone(),
                    mode: *mode,
                },
                Entry::Symlink { target, .. } => SeenKind::Symlink {
                    target: target.clone(),
                },
            },
        })
        .collect()
}

pub(super) fn put_file(seen: &mut Vec<Seen>, rel: &str, content: &[u8]) {
    seen.retain(|s| s.rel != rel);
    seen.push(Seen {
        rel: rel.to_owned(),
        kind: SeenKind::File {
            content: content.to_vec(),
            mode: 0o644,
        },
    });
}

pub(super) fn put(seen: &mut Vec<Seen>, rel: &str, kind: SeenKind) {
    seen.retain(|s| s.rel != rel);
    seen.push(Seen {
        rel: rel.to_owned(),
        kind,
    });
}

/// Removes `rel` and everything under it.
pub(super) fn drop_path(seen: &mut Vec<Seen>, rel: &str) {
    let under = format!("{rel}/");
    seen.retain(|s| s.rel != rel && !s.rel.starts_with(&under));
}

/// rel → (kind, mode, content or link target), links never followed.
pub(super) type Snapshot = BTreeMap<String, (&'static str, u32, Vec<u8>)>;

pub(super) fn snapshot(root: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let md = fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            if md.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.insert(rel, ("link", 0, t.to_str().unwrap().as_bytes().to_vec()));
            } else if md.is_dir() {
                out.insert(rel, ("dir", mode, Vec::new()));
                walk(root, &p, out);
            } else {
                out.insert(rel, ("file", mode, fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Snapshot::new();
    walk(root, root, &mut out);
    out
}
