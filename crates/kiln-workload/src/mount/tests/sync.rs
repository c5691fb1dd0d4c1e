//! Syncing changes back to the host.

use std::fs;

use serde_json::json;

use super::super::*;
use super::{
    chmod, drop_path, link, load_one, plan, put, put_file, scratch, seen_of, snapshot, write,
    Scratch,
};

fn writable(extra: serde_json::Value) -> serde_json::Value {
    let mut v =
        json!({"permissions": {"default": {"create": true, "modify": true, "delete": true}}});
    if let serde_json::Value::Object(extra) = extra {
        for (k, x) in extra {
            v[k] = x;
        }
    }
    v
}

/// Loads, lets `edit` change what the sandbox holds, diffs and syncs with `on_error`.
fn round(
    s: &Scratch,
    extra: serde_json::Value,
    on_error: OnError,
    edit: impl FnOnce(&mut Vec<Seen>),
) -> (SyncReport, MountChanges) {
    let p = plan(&s.mnt, writable(extra));
    let (m, _) = load_one(&p);
    let mut seen = seen_of(&m);
    edit(&mut seen);
    let changes = diff(&m, &seen, &p.permissions);
    let report = sync(
        &m.root(),
        &p.permissions,
        &changes.to_sync(),
        on_error,
        p.follow,
    );
    (report, changes)
}

fn tree(s: &Scratch) {
    write(&s.mnt, "edit.txt", b"old");
    write(&s.mnt, "gone.txt", b"bye");
    write(&s.mnt, "keep/k.txt", b"k");
    write(&s.mnt, "olddir/f.txt", b"f");
    chmod(&s.mnt, "edit.txt", 0o640);
    link(&s.mnt, "out", &s.outside);
}

fn edits(seen: &mut Vec<Seen>) {
    put_file(seen, "a_new.txt", b"created");
    put(seen, "d", SeenKind::Dir);
    put_file(seen, "d/e/new.txt", b"deep");
    put_file(seen, "edit.txt", b"new content");
    drop_path(seen, "gone.txt");
    drop_path(seen, "olddir");
}

#[test]
fn batch_sync_writes_the_permitted_changes() {
    let s = scratch();
    tree(&s);
    let (r, _) = round(&s, json!({}), OnError::Rollback, edits);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert!(!r.rolled_back && !r.aborted);
    assert_eq!(r.synced.len(), 7, "{:?}", r.synced);
    assert_eq!(fs::read(s.mnt.join("a_new.txt")).unwrap(), b"created");
    assert_eq!(fs::read(s.mnt.join("d/e/new.txt")).unwrap(), b"deep");
    assert_eq!(fs::read(s.mnt.join("edit.txt")).unwrap(), b"new content");
    assert!(!s.mnt.join("gone.txt").exists());
    assert!(!s.mnt.join("olddir").exists());
    assert_eq!(fs::read(s.mnt.join("keep/k.txt")).unwrap(), b"k");
    let snap = snapshot(&s.mnt);
    assert_eq!(snap["edit.txt"].1, 0o644, "the sandbox's mode");
    assert_eq!(snap["d/e"].1, 0o755);
    assert!(!snap.keys().any(|k| k.contains(".kiln-sync")), "{snap:?}");
    assert_eq!(
        fs::read(s.outside.join("secret.txt")).unwrap(),
        b"outside secret"
    );
}

#[test]
fn refused_changes_are_not_synced() {
    let s = scratch();
    write(&s.mnt, "a.txt", b"a");
    let p = plan(&s.mnt, json!({}));
    let (m, _) = load_one(&p);
    let mut seen = seen_of(&m);
    put_file(&mut seen, "a.txt", b"changed");
    put_file(&mut seen, "new.txt", b"n");
    let changes = diff(&m, &seen, &p.permissions);
    assert!(changes.to_sync().is_empty());
    // Handed over anyway, they are refused again.
    let all: Vec<FileChange> = changes.all().cloned().collect();
    let r = sync(&m.root(), &p.permissions, &all, OnError::Continue, p.follow);
    assert_eq!(r.failed.len(), 2);
    assert!(r.synced.is_empty());
    // Permitted but naming another path than its rel: refused.
    let mut forged = changes.created[0].clone();
    forged.permitted = true;
    forged.rel = "../escape.txt".into();
    let open = Permissions::compile(
        &serde_json::from_value(json!({"default": {"create": true}})).unwrap(),
        "p",
    )
    .unwrap();
    let r = sync(&m.root(), &open, &[forged], OnError::Continue, p.follow);
    assert_eq!(r.failed.len(), 1);
    assert_eq!(fs::read(s.mnt.join("a.txt")).unwrap(), b"a");
    assert!(!s.mnt.join("new.txt").exists());
    assert!(!s.mnt.parent().unwrap().join("escape.txt").exists());
}

#[test]
fn rollback_restores_the_host_byte_for_byte() {
    let s = scratch();
    tree(&s);
    let before = snapshot(&s.mnt);
    // `out` is a symlink on the host (leading out, so never loaded): creating it fails, after
    // the deletions and the changes that sort before it were made.
    let (r, _) = round(&s, json!({}), OnError::Rollback, |seen| {
        edits(seen);
        put(seen, "out", SeenKind::Dir);
        put_file(seen, "out/x.txt", b"x");
        put_file(seen, "zz_after.txt", b"z");
    });
    assert!(r.rolled_back, "{r:?}");
    assert!(r.aborted);
    assert!(r.synced.is_empty());
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    assert_eq!(r.failed[0].path, "/data/out");
    assert_eq!(snapshot(&s.mnt), before);
    assert!(!s.outside.join("x.txt").exists());
}

#[test]
fn rollback_after_a_conflict_and_a_kind_change() {
    let s = scratch();
    tree(&s);
    write(&s.mnt, "zconflict.txt", b"v1");
    let p = plan(&s.mnt, writable(json!({})));
    let (m, _) = load_one(&p);
    let mut seen = seen_of(&m);
    edits(&mut seen);
    // A directory becomes a file, a file a directory.
    drop_path(&mut seen, "keep");
    put_file(&mut seen, "keep", b"now a file");
    put(&mut seen, "edit.txt", SeenKind::Dir);
    put_file(&mut seen, "edit.txt/inner", b"i");
    put_file(&mut seen, "zconflict.txt", b"sandbox");
    let changes = diff(&m, &seen, &p.permissions);
    // Someone edits the host meanwhile.
    write(&s.mnt, "zconflict.txt", b"v2 from the host");
    let before = snapshot(&s.mnt);
    let r = sync(
        &m.root(),
        &p.permissions,
        &changes.to_sync(),
        OnError::Rollback,
        p.follow,
    );
    assert!(r.rolled_back, "{r:?}");
    assert_eq!(r.failed[0].path, "/data/zconflict.txt");
    assert!(
        r.failed[0].error.contains("changed on the host"),
        "{:?}",
        r.failed
    );
    assert_eq!(snapshot(&s.mnt), before);
}

#[test]
fn continue_syncs_the_others_and_abort_stops() {
    let s = scratch();
    tree(&s);
    let edit = |seen: &mut Vec<Seen>| {
        put(seen, "out", SeenKind::Dir);
        put_file(seen, "out/x.txt", b"x");
        put_file(seen, "a.txt", b"a");
        put_file(seen, "z.txt", b"z");
    };
    let (r, _) = round(&s, json!({}), OnError::Continue, edit);
    assert_eq!(r.failed.len(), 2, "{:?}", r.failed);
    assert!(
        r.failed[0].error.contains("already exists"),
        "{:?}",
        r.failed
    );
    assert!(r.failed[1].error.contains("is a symlink"), "{:?}", r.failed);
    assert_eq!(r.synced, ["/data/a.txt", "/data/z.txt"]);
    assert!(!r.aborted && !r.rolled_back);
    assert!(s.mnt.join("z.txt").exists());

    let s = scratch();
    tree(&s);
    let (r, _) = round(&s, json!({}), OnError::Abort, edit);
    assert_eq!(r.failed.len(), 1);
    assert!(r.aborted && !r.rolled_back);
    assert_eq!(r.synced, ["/data/a.txt"]);
    assert!(s.mnt.join("a.txt").exists());
    assert!(!s.mnt.join("z.txt").exists());
}

#[test]
fn writes_never_follow_a_host_symlink() {
    let s = scratch();
    write(&s.mnt, "real.txt", b"real");
    link(&s.mnt, "alias.txt", "real.txt");
    // Dangling and leading out: skipped at load, so the call can "create" the name.
    link(&s.mnt, "trap.txt", s.outside.join("planted.txt"));
    let (r, _) = round(&s, json!({}), OnError::Continue, |seen| {
        put_file(seen, "alias.txt", b"through the link?");
        put_file(seen, "trap.txt", b"planted");
    });
    assert_eq!(r.synced, ["/data/alias.txt"]);
    assert_eq!(r.failed[0].path, "/data/trap.txt");
    assert!(
        r.failed[0].error.contains("already exists"),
        "{:?}",
        r.failed
    );
    assert!(!s.outside.join("planted.txt").exists());
    // The link itself was replaced; what it pointed to is untouched.
    assert_eq!(fs::read(s.mnt.join("real.txt")).unwrap(), b"real");
    assert!(!fs::symlink_metadata(s.mnt.join("alias.txt"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read(s.mnt.join("alias.txt")).unwrap(),
        b"through the link?"
    );
}

#[test]
fn a_file_loaded_through_a_linked_directory_is_not_written_through_it() {
    let s = scratch();
    write(&s.mnt, "dir/f.txt", b"f");
    link(&s.mnt, "alias", "dir");
    let before = snapshot(&s.mnt);
    let (r, _) = round(&s, json!({}), OnError::Rollback, |seen| {
        put_file(seen, "alias/f.txt", b"changed");
    });
    assert!(r.rolled_back);
    assert!(r.failed[0].error.contains("symlink"), "{:?}", r.failed);
    assert_eq!(snapshot(&s.mnt), before);
}

#[test]
fn created_links_stay_inside() {
    let s = scratch();
    write(&s.mnt, "t.txt", b"t");
    let (r, _) = round(
        &s,
        json!({"security": {"followSymlinks": false}}),
        OnError::Continue,
        |seen| {
            let ln = |t: &str| SeenKind::Symlink { target: t.into() };
            put(seen, "ok", ln("t.txt"));
            put(seen, "sub", SeenKind::Dir);
            put(seen, "sub/down", ln("../sub/../t.txt"));
            put(seen, "bad1", ln("../outside/secret.txt"));
            put(seen, "bad2", ln("/data/t.txt"));
            // Each looks inside on its own; chained they climb out: no created link may climb.
            put(seen, "r", ln("."));
            put(seen, "e1", ln("r/.."));
        },
    );
    assert_eq!(r.synced, ["/data/ok", "/data/r", "/data/sub"]);
    let errors: Vec<&str> = r.failed.iter().map(|f| f.error.as_str()).collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.starts_with("symlink_escape")),
        "{errors:?}"
    );
    assert!(fs::symlink_metadata(s.mnt.join("e1")).is_err());
    assert!(!s.mnt.join("bad1").exists() && fs::symlink_metadata(s.mnt.join("bad1")).is_err());
}

#[test]
fn deleting_a_directory_keeps_what_was_not_loaded() {
    let s = scratch();
    write(&s.mnt, "d/visible.txt", b"v");
    write(&s.mnt, "d/.secret", b"s");
    let p = json!({"permissions": {"default": {"delete": true}, "rules": [{"pattern": "**/.secret", "deny": ["read"]}]}});
    let before = snapshot(&s.mnt);
    let (r, c) = round(&s, p, OnError::Rollback, |seen| drop_path(seen, "d"));
    assert_eq!(c.deleted.len(), 2);
    assert!(r.rolled_back, "{r:?}");
    assert!(r.failed[0].error.contains("not empty"), "{:?}", r.failed);
    assert_eq!(snapshot(&s.mnt), before);
}

#[test]
fn sync_all_rolls_back_every_mount() {
    let a = scratch();
    let b = scratch();
    write(&a.mnt, "a.txt", b"a");
    write(&b.mnt, "b.txt", b"b");
    link(&b.mnt, "out", &b.outside);
    let cfg: MountConfig = serde_json::from_value(json!({
        "dirs": {"/a": a.mnt.to_str().unwrap(), "/b": b.mnt.to_str().unwrap()},
        "permissions": {"default": {"create": true, "modify": true, "delete": true}},
    }))
    .unwrap();
    let p = MountPlan::prepare(&cfg, None, MountLimits::default()).unwrap();
    let loaded = load(&p, &[]).unwrap();
    let (before_a, before_b) = (snapshot(&a.mnt), snapshot(&b.mnt));
    let mut targets = Vec::new();
    for m in &loaded.mounts {
        let mut seen = seen_of(m);
        put_file(&mut seen, "new.txt", b"n");
        drop_path(&mut seen, if m.guest == "/a" { "a.txt" } else { "b.txt" });
        if m.guest == "/b" {
            put_file(&mut seen, "out/x", b"x");
        }
        let changes = diff(m, &seen, &p.permissions);
        targets.push(SyncTarget {
            root: m.root(),
            changes: changes.into_sync(),
        });
    }
    let r = sync_all(&targets, &p.permissions, p.sync.on_error, p.follow);
    assert!(r.rolled_back, "{r:?}");
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].path, "/b/out/x");
    assert_eq!(snapshot(&a.mnt), before_a);
    assert_eq!(snapshot(&b.mnt), before_b);
}
