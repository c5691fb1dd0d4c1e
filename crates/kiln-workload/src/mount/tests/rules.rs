//! Rules, config parsing and validation, host directory resolution.

use std::path::PathBuf;

use serde_json::json;

use super::super::*;
use super::{link, mkdir, scratch, write};

fn perms(v: serde_json::Value) -> Permissions {
    let cfg: PermissionsConfig = serde_json::from_value(v).unwrap();
    Permissions::compile(&cfg, "mount.permissions").unwrap()
}

#[test]
fn defaults_read_and_list_only() {
    let p = Permissions::default();
    assert!(p.allows("a.txt", Permission::Read));
    assert!(p.allows("dir", Permission::List));
    for op in [Permission::Create, Permission::Modify, Permission::Delete] {
        let d = p.decide("a.txt", op);
        assert!(!d.allowed);
        assert_eq!(d.by, DecidedBy::Default);
    }
    let p = perms(json!({"default": {"read": false, "create": true}}));
    assert!(!p.allows("a.txt", Permission::Read));
    assert!(p.allows("a.txt", Permission::List));
    assert!(p.allows("a.txt", Permission::Create));
}

#[test]
fn higher_priority_wins_and_deny_beats_allow_on_equal_priority() {
    let p = perms(json!({"rules": [
        {"pattern": "**", "deny": ["read"]},
        {"pattern": "public/**", "allow": ["read"], "priority": 1},
        {"pattern": "*.txt", "allow": ["modify"]},
        {"pattern": "secret*", "deny": ["modify"]},
        {"pattern": "both.md", "allow": "*", "deny": ["delete"]},
        {"pattern": "public/locked/**", "deny": "*", "priority": 5},
    ]}));
    assert!(p.allows("public/a/b.txt", Permission::Read));
    assert!(!p.allows("private/b.txt", Permission::Read));
    assert!(!p.allows("public/locked/x", Permission::Read));
    assert!(p.allows("a.txt", Permission::Modify));
    let d = p.decide("secret.txt", Permission::Modify);
    assert!(!d.allowed);
    assert_eq!(
        d.by,
        DecidedBy::Rule {
            pattern: "secret*".into(),
            priority: 0
        }
    );
    assert!(d.describe(Permission::Modify).contains("secret*"));
    // No rule mentions modify for it: the default applies.
    assert!(!p.allows("b.md", Permission::Modify));
    assert!(p.allows("both.md", Permission::Create));
    assert!(!p.allows("both.md", Permission::Delete));
}

#[test]
fn exclude_covers_a_directory_and_beats_every_priority() {
    let p = perms(json!({
        "exclude": ["node_modules", ".git/", "*.log"],
        "rules": [{"pattern": "**", "allow": "*", "priority": 1000000}],
    }));
    for rel in [
        "node_modules",
        "node_modules/x/y.js",
        ".git",
        ".git/HEAD",
        "a.log",
    ] {
        assert!(p.is_excluded(rel), "{rel}");
        assert!(!p.allows(rel, Permission::Read), "{rel}");
        assert!(matches!(
            p.decide(rel, Permission::Create).by,
            DecidedBy::Exclude(_)
        ));
    }
    // A pattern matches the whole rel path: no basename matching at depth.
    assert!(!p.is_excluded("src/node_modules"));
    assert!(!p.is_excluded("sub/a.log"));
    assert!(p.allows("src/node_modules", Permission::Delete));
}

#[test]
fn globs_follow_path_semantics() {
    let p = perms(json!({"default": {"read": false}, "rules": [
        {"pattern": "*.txt", "allow": ["read"]},
        {"pattern": "src/**/*.ts", "allow": ["read"]},
        {"pattern": "file?.md", "allow": ["read"]},
        {"pattern": "num[!0-9].md", "allow": ["read"]},
        {"pattern": "lib/*.{js,ts}", "allow": ["read"]},
        {"pattern": "output/**", "allow": ["read"]},
    ]}));
    let yes = [
        "a.txt",
        "src/a.ts",
        "src/x/y/a.ts",
        "file1.md",
        "numa.md",
        "lib/x.js",
        "lib/y.ts",
        "output/a/b",
    ];
    let no = [
        "d/a.txt",
        "src/a.js",
        "file12.md",
        "num1.md",
        "lib/x.rs",
        "lib/sub/x.js",
        "output",
    ];
    for rel in yes {
        assert!(p.allows(rel, Permission::Read), "{rel} should match");
    }
    for rel in no {
        assert!(!p.allows(rel, Permission::Read), "{rel} should not match");
    }
}

#[test]
fn wire_shape_parses_with_defaults_and_refuses_unknowns() {
    let s = scratch();
    let cfg: MountConfig =
        serde_json::from_value(json!({"dirs": {"/data": s.mnt.to_str().unwrap()}})).unwrap();
    assert_eq!(cfg.loading.mode, LoadingMode::Eager);
    assert_eq!(cfg.sync.mode, SyncMode::Batch);
    assert_eq!(cfg.sync.on_error, OnError::Rollback);
    assert_eq!(cfg.security.follow_symlinks, FollowSymlinks::Restricted);
    assert_eq!(cfg.on_permission_denied, OnPermissionDenied::Virtual);
    for (v, want) in [
        (json!(true), FollowSymlinks::Always),
        (json!(false), FollowSymlinks::Never),
        (json!("restricted"), FollowSymlinks::Restricted),
    ] {
        let c: SecurityConfig = serde_json::from_value(json!({ "followSymlinks": v })).unwrap();
        assert_eq!(c.follow_symlinks, want);
    }
    let full = json!({
        "dirs": {"/data": "/x"},
        "permissions": {"default": {"create": true}, "rules": [{"pattern": "a", "allow": "*"}], "exclude": []},
        "loading": {"mode": "lazy", "include": ["*.md"], "maxFileSize": 5, "maxTotalSize": 9},
        "sync": {"mode": "manual", "onError": "continue"},
        "security": {"followSymlinks": "restricted"},
        "onPermissionDenied": "throw",
    });
    let c: MountConfig = serde_json::from_value(full).unwrap();
    assert_eq!(c.loading.max_file_size, Some(5));
    assert_eq!(c.permissions.rules[0].allow, PermSet::ALL);
    for bad in [
        json!({"dirs": {}, "extra": 1}),
        json!({"dirs": {}, "permissions": {"rules": [{"pattern": "a", "allow": ["write"]}]}}),
        json!({"dirs": {}, "permissions": {"rules": [{"pattern": "a", "allow": "all"}]}}),
        json!({"dirs": {}, "security": {"followSymlinks": "sometimes"}}),
        json!({"dirs": {}, "loading": {"mode": "soon"}}),
    ] {
        assert!(
            serde_json::from_value::<MountConfig>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn bad_patterns_and_guest_paths_name_the_field() {
    let s = scratch();
    let host = s.mnt.to_str().unwrap();
    let prep = |v: serde_json::Value| {
        let cfg: MountConfig = serde_json::from_value(v).unwrap();
        MountPlan::prepare(&cfg, None, MountLimits::default())
            .unwrap_err()
            .to_string()
    };
    let e = prep(
        json!({"dirs": {"/data": host}, "permissions": {"rules": [{"pattern": "a[", "allow": "*"}]}}),
    );
    assert!(e.contains("mount.permissions.rules[0].pattern"), "{e}");
    let e = prep(json!({"dirs": {"/data": host}, "loading": {"include": ["ok", ""]}}));
    assert!(e.contains("mount.loading.include[1]"), "{e}");
    for guest in [
        "/",
        "data",
        "/data/",
        "/a//b",
        "/a/./b",
        "/a/../b",
        "/proc",
        "/proc/x",
        "/dev/shm",
        "/sys",
        "/usr/local",
        "/etc",
    ] {
        let e = prep(json!({ "dirs": { guest: host } }));
        let field = format!("mount.dirs[{}]", json!(guest));
        assert!(e.starts_with(&field), "{guest}: {e}");
    }
    let e = prep(json!({"dirs": {"/data": host, "/data/sub": host}}));
    assert!(e.contains("overlaps"), "{e}");
    // Siblings sharing a prefix do not nest.
    let cfg: MountConfig =
        serde_json::from_value(json!({"dirs": {"/data": host, "/database": host}})).unwrap();
    assert!(MountPlan::prepare(&cfg, None, MountLimits::default()).is_ok());
    let e = prep(json!({"dirs": {"/data": s.mnt.join("missing").to_str().unwrap()}}));
    assert!(
        e.starts_with("mount.dirs[\"/data\"]") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn request_limits_only_lower_the_operators() {
    let s = scratch();
    let cfg = super::config(
        &s.mnt,
        json!({"loading": {"maxFileSize": 1_000_000_000u64, "maxTotalSize": 10, "maxFiles": 3}}),
    );
    let ops = MountLimits {
        max_file_size: 100,
        max_total_size: 1000,
        max_files: 50,
    };
    let p = MountPlan::prepare(&cfg, None, ops).unwrap();
    assert_eq!(
        p.limits,
        MountLimits {
            max_file_size: 100,
            max_total_size: 10,
            max_files: 3
        }
    );
}

#[test]
fn resolve_host_dir_keeps_inside_the_allowed_roots() {
    let s = scratch();
    mkdir(&s.mnt, "proj/sub");
    write(&s.mnt, "file.txt", b"x");
    link(&s.mnt, "escape", &s.outside);
    link(&s.mnt, "inner", "proj");
    let roots = vec![s.mnt.clone()];
    let roots = Some(roots.as_slice());

    let ok = resolve_host_dir(&s.mnt.join("proj/sub"), roots).unwrap();
    assert_eq!(ok, s.mnt.join("proj/sub"));
    assert_eq!(
        resolve_host_dir(&s.mnt.join("inner"), roots).unwrap(),
        s.mnt.join("proj")
    );
    assert_eq!(resolve_host_dir(&s.mnt, roots).unwrap(), s.mnt);

    let not_allowed = |p: PathBuf| {
        matches!(
            resolve_host_dir(&p, roots),
            Err(MountError::NotAllowed { .. })
        )
    };
    assert!(not_allowed(s.outside.clone()));
    assert!(not_allowed(s.mnt.join("escape")));
    assert!(not_allowed(s.mnt.join("../outside")));
    assert!(not_allowed(s.mnt.join("proj/../../outside")));
    // Whether or not it exists: no oracle for the host's layout.
    assert!(not_allowed(s.outside.join("nothing-here")));
    assert!(not_allowed(s.mnt.join("escape/nothing-here")));
    // The error names the path as given, not where it led.
    let e = resolve_host_dir(&s.mnt.join("escape"), roots)
        .unwrap_err()
        .to_string();
    assert!(e.contains("escape") && !e.contains("outside"), "{e}");

    assert!(matches!(
        resolve_host_dir(&s.mnt.join("missing"), roots),
        Err(MountError::HostDir { .. })
    ));
    assert!(matches!(
        resolve_host_dir(&s.mnt.join("file.txt"), roots),
        Err(MountError::HostDir { .. })
    ));
    assert!(resolve_host_dir(std::path::Path::new("relative/dir"), roots).is_err());
    // Without allowed roots (the CLI) anything that is a directory goes.
    assert_eq!(
        resolve_host_dir(&s.mnt.join("escape"), None).unwrap(),
        s.outside
    );
}
