//! Diffing what the sandbox holds against the baseline.

use serde_json::json;

use super::super::*;
use super::{drop_path, load_one, plan, put, put_file, scratch, seen_of, write};

fn paths(v: &[FileChange]) -> Vec<&str> {
    v.iter().map(|c| c.path.as_str()).collect()
}

fn writable() -> serde_json::Value {
    json!({"permissions": {"default": {"create": true, "modify": true, "delete": true}}})
}

#[test]
fn detects_created_modified_deleted() {
    let s = scratch();
    write(&s.mnt, "keep.txt", b"same");
    write(&s.mnt, "edit.txt", b"old");
    write(&s.mnt, "gone.txt", b"bye");
    write(&s.mnt, "dir/x.txt", b"x");
    write(&s.mnt, "becomes_dir", b"file");
    let p = plan(&s.mnt, writable());
    let (m, _) = load_one(&p);
    let mut seen = seen_of(&m);
    // A mode change alone is no change.
    put(
        &mut seen,
        "keep.txt",
        SeenKind::File {
            content: b"same".to_vec(),
            mode: 0o600,
        },
    );
    put_file(&mut seen, "edit.txt", b"new");
    drop_path(&mut seen, "gone.txt");
    drop_path(&mut seen, "dir");
    put(&mut seen, "out", SeenKind::Dir);
    put_file(&mut seen, "out/r.txt", b"result");
    put_file(&mut seen, "out.txt", b"beside");
    put(&mut seen, "becomes_dir", SeenKind::Dir);
    let c = diff(&m, &seen, &p.permissions);
    // A directory before what is under it, whatever sorts between them as a string.
    assert_eq!(
        paths(&c.created),
        ["/data/out", "/data/out/r.txt", "/data/out.txt"]
    );
    assert_eq!(paths(&c.modified), ["/data/becomes_dir", "/data/edit.txt"]);
    assert_eq!(
        paths(&c.deleted),
        ["/data/dir", "/data/dir/x.txt", "/data/gone.txt"]
    );
    assert!(c.denied.is_empty());
    let edit = &c.modified[1];
    assert_eq!(edit.content.as_deref(), Some(&b"new"[..]));
    assert_eq!(
        edit.base.as_ref().unwrap().hash,
        m.baseline["edit.txt"].wire_hash()
    );
    assert_eq!(
        edit.hash.as_deref(),
        Some(super::super::host::wire_hash(b"new").as_str())
    );
    assert_eq!(c.modified[0].kind, EntryKind::Dir);
    assert_eq!(c.deleted[2].size, 3);
    assert!(c.all().all(|c| c.permitted));
}

#[test]
fn unloaded_paths_are_never_reported_deleted() {
    let s = scratch();
    write(&s.mnt, "loaded.txt", b"l");
    write(&s.mnt, "big.bin", &[0; 100]);
    write(&s.mnt, "hidden.txt", b"h");
    write(&s.mnt, "lazy/unreferenced.txt", b"u");
    let p = plan(
        &s.mnt,
        json!({
            "permissions": {"default": {"delete": true}, "rules": [{"pattern": "hidden.txt", "deny": ["read"]}]},
            "loading": {"mode": "lazy", "include": ["*.txt", "*.bin"], "maxFileSize": 50},
        }),
    );
    let (m, l) = load_one(&p);
    assert_eq!(super::rels(&m), ["loaded.txt"]);
    assert_eq!(l.skipped.len(), 1);
    // The sandbox holds nothing at all.
    let c = diff(&m, &[], &p.permissions);
    assert_eq!(paths(&c.deleted), ["/data/loaded.txt"]);
}

#[test]
fn refused_changes_are_denied_per_operation() {
    let s = scratch();
    write(&s.mnt, "a.txt", b"a");
    write(&s.mnt, "b.txt", b"b");
    write(&s.mnt, "out/ok.txt", b"o");
    let p = plan(
        &s.mnt,
        json!({"permissions": {"rules": [
            {"pattern": "out/**", "allow": ["create", "modify"]},
            {"pattern": "out/*.log", "deny": ["create"], "priority": 2},
        ], "exclude": ["node_modules"]}}),
    );
    let (m, _) = load_one(&p);
    let mut seen = seen_of(&m);
    put_file(&mut seen, "a.txt", b"changed");
    drop_path(&mut seen, "b.txt");
    put_file(&mut seen, "new.txt", b"n");
    put_file(&mut seen, "out/ok.txt", b"changed");
    put_file(&mut seen, "out/new/deep.txt", b"d");
    put(&mut seen, "out/new", SeenKind::Dir);
    put_file(&mut seen, "out/x.log", b"l");
    put(&mut seen, "node_modules", SeenKind::Dir);
    for i in 0..5 {
        put_file(&mut seen, &format!("node_modules/p{i}/index.js"), b"js");
        put(&mut seen, &format!("node_modules/p{i}"), SeenKind::Dir);
    }
    let c = diff(&m, &seen, &p.permissions);
    let denied: Vec<(&str, Operation)> = c
        .denied
        .iter()
        .map(|d| (d.path.as_str(), d.operation))
        .collect();
    assert_eq!(
        denied,
        [
            ("/data/new.txt", Operation::Create),
            ("/data/node_modules", Operation::Create),
            ("/data/out/x.log", Operation::Create),
            ("/data/a.txt", Operation::Modify),
            ("/data/b.txt", Operation::Delete),
        ]
    );
    let nm = &c.denied[1];
    assert!(
        nm.reason.contains("excluded by `node_modules`"),
        "{}",
        nm.reason
    );
    assert!(nm.reason.contains("10 entries"), "{}", nm.reason);
    assert!(
        c.denied[2].reason.contains("out/*.log"),
        "{}",
        c.denied[2].reason
    );
    assert!(
        c.denied[3].reason.contains("default"),
        "{}",
        c.denied[3].reason
    );
    let permitted: Vec<&str> = c
        .all()
        .filter(|c| c.permitted)
        .map(|c| c.path.as_str())
        .collect();
    // `out/new` matches `out/**`; the parent of a permitted creation is permitted anyway.
    assert_eq!(
        permitted,
        [
            "/data/out/new",
            "/data/out/new/deep.txt",
            "/data/out/ok.txt"
        ]
    );
    assert_eq!(c.to_sync().len(), 3);
}

#[test]
fn a_refused_directory_is_permitted_for_what_may_go_in_it() {
    let s = scratch();
    let p = plan(
        &s.mnt,
        json!({"permissions": {"rules": [{"pattern": "results/*.json", "allow": ["create"]}]}}),
    );
    let (m, _) = load_one(&p);
    let mut seen = Vec::new();
    put(&mut seen, "results", SeenKind::Dir);
    put_file(&mut seen, "results/r.json", b"{}");
    put_file(&mut seen, "results/r.tmp", b"");
    let c = diff(&m, &seen, &p.permissions);
    let flags: Vec<bool> = c.created.iter().map(|c| c.permitted).collect();
    assert_eq!(flags, [true, true, false]);
    assert_eq!(c.denied.len(), 1);
    assert_eq!(c.denied[0].path, "/data/results/r.tmp");
}

#[test]
fn wire_projection_is_camel_case_and_contents_on_request() {
    let s = scratch();
    write(&s.mnt, "text.txt", b"old");
    let p = plan(&s.mnt, writable());
    let (m, _) = load_one(&p);
    let mut seen = seen_of(&m);
    put_file(&mut seen, "text.txt", "héllo".as_bytes());
    put_file(&mut seen, "bin.dat", &[0xff, 0x00, 0xfe]);
    put(
        &mut seen,
        "ln",
        SeenKind::Symlink {
            target: "text.txt".into(),
        },
    );
    let c = diff(&m, &seen, &p.permissions);
    let without = serde_json::to_value(c.to_wire(false)).unwrap();
    assert!(without["modified"][0].get("content").is_none());
    assert_eq!(without["created"][1]["target"], "text.txt");
    let with = serde_json::to_value(c.to_wire(true)).unwrap();
    let text = &with["modified"][0];
    assert_eq!(text["path"], "/data/text.txt");
    assert_eq!(text["content"], "héllo");
    assert!(text.get("encoding").is_none());
    assert_eq!(text["size"], 6);
    assert!(text["hash"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        text["baseHash"].as_str(),
        m.baseline["text.txt"].wire_hash().as_deref()
    );
    let bin = &with["created"][0];
    assert_eq!(bin["path"], "/data/bin.dat");
    assert_eq!(bin["content"], "/wD+");
    assert_eq!(bin["encoding"], "base64");
    assert_eq!(bin["operation"], "create");
    assert_eq!(bin["permitted"], true);
    let d = Denied {
        path: "/data/x".into(),
        operation: Operation::Delete,
        reason: "r".into(),
    };
    assert_eq!(
        serde_json::to_value(&d).unwrap(),
        json!({"path": "/data/x", "operation": "delete", "reason": "r"})
    );
    let sk = Skipped {
        path: "/data/big".into(),
        size: 9,
        reason: SkipReason::TotalExceeded,
        message: None,
    };
    assert_eq!(
        serde_json::to_value(&sk).unwrap(),
        json!({"path": "/data/big", "size": 9, "reason": "total_exceeded"})
    );
}
