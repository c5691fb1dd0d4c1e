//! Loading: selection, rules, limits, symlinks.

use serde_json::json;

use super::super::*;
use super::{chmod, content, link, load_one, mkdir, plan, rels, scratch, skipped, write};

#[test]
fn eager_loads_everything_dirs_first_with_a_baseline() {
    let s = scratch();
    write(&s.mnt, "a.txt", b"hello");
    write(&s.mnt, "src/lib/x.rs", b"fn x() {}");
    mkdir(&s.mnt, "empty");
    chmod(&s.mnt, "a.txt", 0o640);
    let (m, l) = load_one(&plan(&s.mnt, json!({})));
    assert_eq!(
        rels(&m),
        ["a.txt", "empty", "src", "src/lib", "src/lib/x.rs"]
    );
    assert_eq!(content(&m, "a.txt"), Some(&b"hello"[..]));
    let b = &m.baseline["a.txt"];
    assert_eq!((b.kind, b.size, b.mode), (EntryKind::File, 5, 0o640));
    assert_eq!(
        b.wire_hash().unwrap(),
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(m.baseline["src"].kind, EntryKind::Dir);
    assert_eq!(m.guest, "/data");
    assert_eq!(l.total_bytes, 14);
    assert!(l.skipped.is_empty());
    assert_eq!(l.hidden, 0);
}

#[test]
fn read_deny_hides_a_file_and_list_deny_a_subtree() {
    let s = scratch();
    write(&s.mnt, "ok.txt", b"1");
    write(&s.mnt, ".env", b"SECRET=1");
    write(&s.mnt, "keys/id_rsa", b"k");
    write(&s.mnt, "private/a/b.txt", b"2");
    write(&s.mnt, "node_modules/x/index.js", b"3");
    write(&s.mnt, ".git/HEAD", b"ref");
    let p = plan(
        &s.mnt,
        json!({"permissions": {
            "exclude": ["node_modules", ".git"],
            "rules": [
                {"pattern": ".env", "deny": ["read"]},
                {"pattern": "keys/**", "deny": ["read"]},
                {"pattern": "private", "deny": ["list"]},
            ],
        }}),
    );
    let (m, l) = load_one(&p);
    assert_eq!(rels(&m), ["keys", "ok.txt"]);
    // Nothing about them is reported, only counted: .env, keys/id_rsa, private, and the two
    // excluded directories.
    assert!(l.skipped.is_empty(), "{:?}", l.skipped);
    assert_eq!(l.hidden, 5);
}

#[test]
fn explicit_loads_only_the_includes() {
    let s = scratch();
    write(&s.mnt, "a.md", b"a");
    write(&s.mnt, "b.txt", b"b");
    write(&s.mnt, "docs/c.md", b"c");
    write(&s.mnt, "data/x/y.csv", b"y");
    write(&s.mnt, "other/z.md", b"z");
    let p = plan(
        &s.mnt,
        json!({"loading": {"mode": "explicit", "include": ["*.md", "docs/*.md", "data"]}}),
    );
    let (m, _) = load_one(&p);
    assert_eq!(
        rels(&m),
        [
            "a.md",
            "data",
            "data/x",
            "data/x/y.csv",
            "docs",
            "docs/c.md"
        ]
    );
    let p = plan(&s.mnt, json!({"loading": {"mode": "explicit"}}));
    let (m, l) = load_one(&p);
    assert!(m.entries.is_empty() && l.skipped.is_empty());
}

#[test]
fn lazy_loads_what_the_call_references() {
    let s = scratch();
    write(&s.mnt, "in/a.csv", b"a");
    write(&s.mnt, "in/b.csv", b"b");
    write(&s.mnt, "big/deep/x.bin", b"x");
    write(&s.mnt, "big/y.bin", b"y");
    write(&s.mnt, "config.json", b"{}");
    write(&s.mnt, "unrelated.txt", b"u");
    mkdir(&s.mnt, "big/empty");
    let p = plan(
        &s.mnt,
        json!({"loading": {"mode": "lazy", "include": ["*.json"]}}),
    );
    let refs: Vec<String> = [
        "/data/in/a.csv",
        "/data/./big/",
        "/data/in/../in/missing.csv",
        "/elsewhere/in/b.csv",
        "/data/../data2/in/b.csv",
        "not a path",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let l = load(&p, &refs).unwrap();
    assert_eq!(
        rels(&l.mounts[0]),
        [
            "big",
            "big/deep",
            "big/deep/x.bin",
            "big/empty",
            "big/y.bin",
            "config.json",
            "in",
            "in/a.csv"
        ]
    );
    // No references and no include: nothing.
    let p = plan(&s.mnt, json!({"loading": {"mode": "lazy"}}));
    assert!(load(&p, &[]).unwrap().mounts[0].entries.is_empty());
    // The mount itself referenced: everything.
    let l = load(&p, &["/data".to_string()]).unwrap();
    assert_eq!(l.mounts[0].entries.len(), 10);
}

#[test]
fn limits_skip_with_reasons() {
    let s = scratch();
    write(&s.mnt, "a.bin", &[1; 40]);
    write(&s.mnt, "b.bin", &[2; 200]);
    write(&s.mnt, "c.bin", &[3; 50]);
    write(&s.mnt, "d.bin", &[4; 10]);
    write(&s.mnt, "e.bin", &[5; 5]);
    let p = plan(
        &s.mnt,
        json!({"loading": {"maxFileSize": 100, "maxTotalSize": 60, "maxFiles": 2}}),
    );
    let (m, l) = load_one(&p);
    assert_eq!(rels(&m), ["a.bin", "d.bin"]);
    let sk = skipped(&l);
    assert_eq!(sk["/data/b.bin"], SkipReason::TooLarge);
    assert_eq!(sk["/data/c.bin"], SkipReason::TotalExceeded);
    assert_eq!(sk["/data/e.bin"], SkipReason::TooManyFiles);
    assert_eq!(
        l.skipped
            .iter()
            .find(|s| s.path == "/data/b.bin")
            .unwrap()
            .size,
        200
    );
    assert_eq!(l.total_bytes, 50);
    // The operator's caps hold without the request saying anything.
    let cfg = super::config(&s.mnt, json!({}));
    let ops = MountLimits {
        max_file_size: 45,
        max_total_size: 1000,
        max_files: 10,
    };
    let l = load(&MountPlan::prepare(&cfg, None, ops).unwrap(), &[]).unwrap();
    assert_eq!(skipped(&l).len(), 2);
}

#[test]
fn special_files_are_never_loaded() {
    let s = scratch();
    write(&s.mnt, "ok.txt", b"1");
    let fifo = s.mnt.join("pipe");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let (m, l) = load_one(&plan(&s.mnt, json!({})));
    assert_eq!(rels(&m), ["ok.txt"]);
    assert_eq!(skipped(&l)["/data/pipe"], SkipReason::SpecialFile);
}

fn with_follow(s: &super::Scratch, follow: serde_json::Value) -> (LoadedMount, Loaded) {
    load_one(&plan(
        &s.mnt,
        json!({"security": {"followSymlinks": follow}}),
    ))
}

#[test]
fn links_out_of_the_mount_are_refused_in_every_mode() {
    let s = scratch();
    write(&s.mnt, "real.txt", b"real");
    link(&s.mnt, "abs", s.outside.join("secret.txt"));
    link(&s.mnt, "dotdot", "../outside/secret.txt");
    link(&s.mnt, "sub/deep", "../../outside");
    link(&s.mnt, "absdir", &s.outside);
    for follow in [json!(false), json!("restricted"), json!(true)] {
        let (m, l) = with_follow(&s, follow.clone());
        let sk = skipped(&l);
        for p in [
            "/data/abs",
            "/data/dotdot",
            "/data/sub/deep",
            "/data/absdir",
        ] {
            assert_eq!(sk.get(p), Some(&SkipReason::SymlinkEscape), "{follow} {p}");
        }
        for e in &m.entries {
            if let Entry::File { content, .. } = e {
                assert_ne!(content, b"outside secret", "{follow}");
            }
        }
    }
}

#[test]
fn links_inside_are_followed_or_kept() {
    let s = scratch();
    write(&s.mnt, "real.txt", b"real");
    write(&s.mnt, "dir/inner.txt", b"inner");
    link(&s.mnt, "alias.txt", "real.txt");
    link(&s.mnt, "alias", "dir");
    link(&s.mnt, "dir/up.txt", "../real.txt");
    // Out of the mount and back in: only `true` follows it.
    let back = format!(
        "../{}/real.txt",
        s.mnt.file_name().unwrap().to_str().unwrap()
    );
    link(&s.mnt, "roundtrip.txt", &back);
    link(&s.mnt, "absolute.txt", s.mnt.join("real.txt"));

    let (m, l) = with_follow(&s, json!("restricted"));
    assert_eq!(content(&m, "alias.txt"), Some(&b"real"[..]));
    assert_eq!(content(&m, "alias/inner.txt"), Some(&b"inner"[..]));
    assert_eq!(content(&m, "dir/up.txt"), Some(&b"real"[..]));
    let sk = skipped(&l);
    assert_eq!(sk["/data/roundtrip.txt"], SkipReason::SymlinkEscape);
    assert_eq!(sk["/data/absolute.txt"], SkipReason::SymlinkEscape);

    let (m, l) = with_follow(&s, json!(true));
    assert_eq!(content(&m, "alias/inner.txt"), Some(&b"inner"[..]));
    assert_eq!(content(&m, "roundtrip.txt"), Some(&b"real"[..]));
    assert_eq!(content(&m, "absolute.txt"), Some(&b"real"[..]));
    assert!(l.skipped.is_empty(), "{:?}", l.skipped);

    let (m, l) = with_follow(&s, json!(false));
    let links: Vec<(&str, &str)> = m
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::Symlink { rel, target } => Some((rel.as_str(), target.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        links,
        [
            ("alias", "dir"),
            ("alias.txt", "real.txt"),
            ("dir/up.txt", "../real.txt")
        ]
    );
    assert_eq!(m.baseline["alias"].kind, EntryKind::Symlink);
    let sk = skipped(&l);
    assert_eq!(sk["/data/roundtrip.txt"], SkipReason::SymlinkEscape);
    assert_eq!(sk["/data/absolute.txt"], SkipReason::SymlinkEscape);
}

#[test]
fn a_link_is_no_way_around_a_read_rule() {
    let s = scratch();
    write(&s.mnt, "secret/key", b"k");
    link(&s.mnt, "innocent", "secret/key");
    link(&s.mnt, "peek", "secret");
    let p = plan(
        &s.mnt,
        json!({"permissions": {"rules": [{"pattern": "secret/**", "deny": ["read"]}, {"pattern": "secret", "deny": ["list"]}]}}),
    );
    let (m, l) = load_one(&p);
    assert!(m.entries.is_empty(), "{:?}", rels(&m));
    assert_eq!(l.hidden, 3);
}

#[test]
fn link_cycles_terminate() {
    let s = scratch();
    write(&s.mnt, "a/file.txt", b"f");
    link(&s.mnt, "a/up", "..");
    link(&s.mnt, "self", ".");
    link(&s.mnt, "p", "q");
    link(&s.mnt, "q", "p");
    link(&s.mnt, "b1", "a");
    for follow in [json!("restricted"), json!(true), json!(false)] {
        let (m, l) = with_follow(&s, follow.clone());
        assert!(m.entries.len() < 10, "{follow}: {:?}", rels(&m));
        if follow != json!(false) {
            let sk = skipped(&l);
            assert_eq!(sk["/data/a/up"], SkipReason::SymlinkLoop, "{follow}");
            assert_eq!(sk["/data/self"], SkipReason::SymlinkLoop, "{follow}");
            assert_eq!(sk["/data/p"], SkipReason::SymlinkLoop, "{follow}");
            // The real directory is loaded; the second path to it is not.
            assert_eq!(content(&m, "a/file.txt"), Some(&b"f"[..]));
            assert_eq!(sk["/data/b1"], SkipReason::SymlinkLoop, "{follow}");
        }
    }
}

#[test]
fn skipped_list_is_capped_but_counted() {
    let s = scratch();
    for i in 0..1005 {
        write(&s.mnt, &format!("f{i:04}"), b"x");
    }
    let p = plan(&s.mnt, json!({"loading": {"maxFiles": 0}}));
    let (_, l) = load_one(&p);
    assert_eq!(l.skipped.len(), 1000);
    assert_eq!(l.skipped_unlisted, 5);
}
