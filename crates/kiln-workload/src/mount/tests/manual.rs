//! Manual sync: changes sent back by a client.

use std::fs;

use serde_json::json;

use super::super::*;
use super::{drop_path, load_one, plan, put_file, scratch, seen_of, write};

fn wire(v: serde_json::Value) -> Vec<WireChange> {
    serde_json::from_value(v).unwrap()
}

fn manual_plan(s: &super::Scratch) -> MountPlan {
    plan(
        &s.mnt,
        json!({
            "permissions": {"default": {"create": true, "modify": true, "delete": true},
                            "rules": [{"pattern": "locked/**", "deny": "*"}]},
            "sync": {"mode": "manual"},
        }),
    )
}

#[test]
fn reported_changes_sent_back_as_they_are_sync() {
    let s = scratch();
    write(&s.mnt, "edit.txt", b"old");
    write(&s.mnt, "gone.txt", b"bye");
    let p = manual_plan(&s);
    let (m, _) = load_one(&p);
    let mut seen = seen_of(&m);
    put_file(&mut seen, "edit.txt", b"new");
    put_file(&mut seen, "bin.dat", &[0, 159, 146, 150]);
    drop_path(&mut seen, "gone.txt");
    let report = diff(&m, &seen, &p.permissions).to_wire(true);
    // What the client got, picked and sent back.
    let mut picked = Vec::new();
    for list in [&report.created, &report.modified, &report.deleted] {
        for c in list {
            picked.push(serde_json::to_value(c).unwrap());
        }
    }
    let ms = manual_changes(&p, &wire(json!(picked))).unwrap();
    assert!(ms.denied.is_empty());
    let r = ms.run(&p);
    assert!(r.failed.is_empty(), "{r:?}");
    assert_eq!(fs::read(s.mnt.join("edit.txt")).unwrap(), b"new");
    assert_eq!(fs::read(s.mnt.join("bin.dat")).unwrap(), [0, 159, 146, 150]);
    assert!(!s.mnt.join("gone.txt").exists());
}

#[test]
fn hashes_guard_against_host_changes() {
    let s = scratch();
    write(&s.mnt, "a.txt", b"v1");
    let p = manual_plan(&s);
    let (m, _) = load_one(&p);
    let h1 = m.baseline["a.txt"].wire_hash().unwrap();
    write(&s.mnt, "a.txt", b"v2");
    let changes =
        wire(json!([{"path": "/data/a.txt", "operation": "modify", "content": "v3", "hash": h1}]));
    let r = manual_changes(&p, &changes).unwrap().run(&p);
    assert!(r.rolled_back);
    assert!(r.failed[0].error.contains("changed on the host"), "{r:?}");
    assert_eq!(fs::read(s.mnt.join("a.txt")).unwrap(), b"v2");
    // With the current hash (bare hex works too), and no operation: a modify.
    let h2 = super::super::host::sha256_hex(b"v2");
    let changes =
        wire(json!([{"path": "/data/a.txt", "content": "djM=", "encoding": "base64", "hash": h2}]));
    let ms = manual_changes(&p, &changes).unwrap();
    assert_eq!(ms.targets[0].changes[0].operation, Operation::Modify);
    assert!(ms.run(&p).failed.is_empty());
    assert_eq!(fs::read(s.mnt.join("a.txt")).unwrap(), b"v3");
}

#[test]
fn invalid_requests_name_the_field_and_refusals_are_denied() {
    let s = scratch();
    write(&s.mnt, "a.txt", b"a");
    write(&s.mnt, "locked/l.txt", b"l");
    let p = manual_plan(&s);
    let err = |v: serde_json::Value| manual_changes(&p, &wire(v)).unwrap_err().to_string();
    let e = err(
        json!([{"path": "/data/ok.txt", "content": "x"}, {"path": "/elsewhere/x", "content": "x"}]),
    );
    assert!(
        e.starts_with("changes[1].path") && e.contains("not inside a mount"),
        "{e}"
    );
    assert!(
        err(json!([{"path": "/data/../etc/passwd", "content": "x"}]))
            .starts_with("changes[0].path")
    );
    assert!(err(json!([{"path": "/data", "operation": "delete"}])).contains("root"));
    assert!(
        err(json!([{"path": "/data/a.txt", "operation": "modify", "content": "x"}]))
            .starts_with("changes[0].hash")
    );
    assert!(err(json!([{"path": "/data/a.txt"}])).starts_with("changes[0].operation"));
    assert!(
        err(json!([{"path": "/data/n.txt", "content": "%%", "encoding": "base64"}]))
            .starts_with("changes[0].content")
    );
    assert!(
        err(json!([{"path": "/data/n", "content": "x"}, {"path": "/data/n", "content": "y"}]))
            .contains("twice")
    );
    assert!(
        serde_json::from_value::<Vec<WireChange>>(json!([{"path": "/data/x", "bogus": 1}]))
            .is_err()
    );

    let ms = manual_changes(
        &p,
        &wire(json!([
            {"path": "/data/locked/l.txt", "operation": "delete", "hash": super::super::host::wire_hash(b"l")},
            {"path": "/data/new.txt", "content": "n"},
        ])),
    )
    .unwrap();
    assert_eq!(ms.denied.len(), 1);
    assert_eq!(ms.denied[0].path, "/data/locked/l.txt");
    assert_eq!(ms.denied[0].operation, Operation::Delete);
    assert_eq!(ms.targets[0].changes.len(), 1);
    assert!(ms.run(&p).failed.is_empty());
    assert!(s.mnt.join("locked/l.txt").exists());
    assert_eq!(fs::read(s.mnt.join("new.txt")).unwrap(), b"n");
}
