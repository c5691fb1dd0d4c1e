//! Mounted host directories over HTTP: rules hide what they deny, denied changes are reported
//! and never synced, a failing batch sync rolls the host directory back byte for byte, a link
//! out of the mount is never followed, a manual sync applies the chosen changes, and a directory
//! outside the operator's roots is refused.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::functions::{call, function_server};
use crate::require_isolation;
use crate::server::{api, Server};

/// Every name under `dir` with its kind and contents (links as their targets), to compare.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".into()
            } else {
                format!(
                    "file {:o} {:?}",
                    meta.permissions().mode_bits(),
                    std::fs::read(&path).unwrap()
                )
            };
            out.insert(rel, what);
        }
    }
    out
}

trait ModeBits {
    fn mode_bits(&self) -> u32;
}

impl ModeBits for std::fs::Permissions {
    fn mode_bits(&self) -> u32 {
        std::os::unix::fs::PermissionsExt::mode(self) & 0o7777
    }
}

struct Mounted {
    server: Server,
    root: tempfile::TempDir,
}

fn mounted() -> Mounted {
    let root = tempfile::tempdir().unwrap();
    let server = function_server(&["--function-mount-root", root.path().to_str().unwrap()]);
    Mounted { server, root }
}

fn python(s: &Server, code: &str, function: &str, mount: Value, args: Value) -> Value {
    call(
        s,
        json!({"language": "python", "code": code, "functionName": function, "args": args, "mount": mount}),
    )
}

#[test]
fn a_deny_rule_hides_a_file_from_the_code() {
    require_isolation!();
    let m = mounted();
    let data = m.root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("public.txt"), "hello").unwrap();
    std::fs::write(data.join("secret.txt"), "TOP SECRET").unwrap();
    let code = "import os\ndef look():\n    names = sorted(os.listdir('/data'))\n    try:\n        secret = open('/data/secret.txt').read()\n    except OSError as e:\n        secret = type(e).__name__\n    return {'names': names, 'public': open('/data/public.txt').read(), 'secret': secret}\n";
    let mount = json!({
        "dirs": {"/data": data},
        "permissions": {"rules": [{"pattern": "secret.txt", "deny": ["read"]}]},
    });
    let got = python(&m.server, code, "look", mount, json!([]));
    assert_eq!(got["status"], "success", "{got}");
    assert_eq!(got["result"]["names"], json!(["public.txt"]), "{got}");
    assert_eq!(got["result"]["public"], "hello");
    assert_eq!(got["result"]["secret"], "FileNotFoundError");
    assert!(!got.to_string().contains("TOP SECRET"));
}

#[test]
fn denied_writes_are_reported_and_not_synced_while_permitted_ones_are() {
    require_isolation!();
    let m = mounted();
    let data = m.root.path().join("data");
    std::fs::create_dir_all(data.join("output")).unwrap();
    std::fs::write(data.join("input.txt"), "abc").unwrap();
    let code = "def work():\n    open('/data/output/result.txt', 'w').write('ABC')\n    open('/data/stray.txt', 'w').write('no')\n    open('/data/input.txt', 'w').write('changed')\n    return 'done'\n";
    let mount = json!({
        "dirs": {"/data": data},
        "permissions": {"rules": [{"pattern": "output/**", "allow": ["create", "modify"]}]},
        "sync": {"mode": "batch", "onError": "continue"},
    });
    let got = python(&m.server, code, "work", mount, json!([]));
    assert_eq!(got["status"], "success", "{got}");
    let denied = got["files"]["denied"].as_array().unwrap();
    let denied: Vec<(String, String)> = denied
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().into(),
                d["operation"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        denied.contains(&("/data/stray.txt".into(), "create".into())),
        "{got}"
    );
    assert!(
        denied.contains(&("/data/input.txt".into(), "modify".into())),
        "{got}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("output/result.txt")).unwrap(),
        "ABC"
    );
    assert!(
        !data.join("stray.txt").exists(),
        "a denied create is not synced"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("input.txt")).unwrap(),
        "abc"
    );
    assert!(
        got["files"]["sync"]["synced"]
            .to_string()
            .contains("result.txt"),
        "{got}"
    );
}

#[test]
fn a_failing_batch_sync_with_rollback_leaves_the_host_byte_identical() {
    require_isolation!();
    let m = mounted();
    let data = m.root.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("keep.txt"), "original").unwrap();
    std::fs::write(data.join("sub/inner.txt"), "inner").unwrap();
    std::fs::write(data.join("gone.txt"), "to delete").unwrap();
    // The call creates, deletes and modifies; while it sleeps, the host's keep.txt changes, so
    // the sync's conflict check fails on it after the create and the delete went through.
    let code = "import os, time\ndef work():\n    open('/data/a_new.txt', 'w').write('new')\n    os.remove('/data/gone.txt')\n    open('/data/keep.txt', 'w').write('overwritten')\n    time.sleep(3)\n    return 'done'\n";
    let mount = json!({
        "dirs": {"/data": data},
        "permissions": {"default": {"create": true, "modify": true, "delete": true}},
        "sync": {"mode": "batch", "onError": "rollback"},
    });
    let host_file = data.join("keep.txt");
    let meddler = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1200));
        std::fs::write(host_file, "changed on the host").unwrap();
    });
    let got = python(&m.server, code, "work", mount, json!([]));
    meddler.join().unwrap();
    assert_eq!(got["status"], "success", "{got}");
    let sync = &got["files"]["sync"];
    assert_eq!(sync["rolledBack"], true, "{got}");
    let failed = sync["failed"].to_string();
    assert!(
        failed.contains("keep.txt") && failed.contains("changed on the host"),
        "{got}"
    );
    let mut want = BTreeMap::new();
    want.insert(
        "gone.txt".to_string(),
        format!("file 644 {:?}", b"to delete".to_vec()),
    );
    want.insert(
        "keep.txt".to_string(),
        format!("file 644 {:?}", b"changed on the host".to_vec()),
    );
    want.insert("sub".to_string(), "dir".to_string());
    want.insert(
        "sub/inner.txt".to_string(),
        format!("file 644 {:?}", b"inner".to_vec()),
    );
    assert_eq!(
        snapshot(&data),
        want,
        "the host directory is as it was before the sync"
    );
}

#[test]
fn a_symlink_out_of_the_mount_is_never_followed() {
    require_isolation!();
    let m = mounted();
    let data = m.root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let outside = m.root.path().join("outside.txt");
    std::fs::write(&outside, "OUTSIDE SECRET").unwrap();
    std::os::unix::fs::symlink(&outside, data.join("abs_link")).unwrap();
    std::os::unix::fs::symlink("../outside.txt", data.join("rel_link")).unwrap();
    std::fs::write(data.join("ok.txt"), "fine").unwrap();
    let code = "import os\ndef look():\n    out = {}\n    for n in ['abs_link', 'rel_link', 'ok.txt']:\n        try:\n            out[n] = open('/data/' + n).read()\n        except OSError as e:\n            out[n] = type(e).__name__\n    return out\n";
    for follow in [json!(false), json!(true), json!("restricted")] {
        let mount = json!({"dirs": {"/data": data}, "security": {"followSymlinks": follow}});
        let got = python(&m.server, code, "look", mount, json!([]));
        assert_eq!(got["status"], "success", "{follow}: {got}");
        assert_eq!(got["result"]["ok.txt"], "fine", "{follow}: {got}");
        assert!(
            !got.to_string().contains("OUTSIDE SECRET"),
            "{follow}: {got}"
        );
        let skipped = got["files"]["skipped"].to_string();
        assert!(
            skipped.contains("abs_link") && skipped.contains("rel_link"),
            "{follow}: {got}"
        );
        assert!(skipped.contains("symlink_escape"), "{follow}: {got}");
    }
    // A link the code makes to outside the mount is not synced either.
    let code =
        "import os\ndef plant():\n    os.symlink('/etc/passwd', '/data/planted')\n    return 1\n";
    let mount = json!({"dirs": {"/data": data}, "permissions": {"default": {"create": true}}});
    let got = python(&m.server, code, "plant", mount, json!([]));
    assert_eq!(got["status"], "success", "{got}");
    assert!(
        std::fs::symlink_metadata(data.join("planted")).is_err(),
        "{got}"
    );
}

#[test]
fn a_manual_sync_applies_only_the_chosen_changes() {
    require_isolation!();
    let m = mounted();
    let data = m.root.path().join("out");
    std::fs::create_dir(&data).unwrap();
    let code = "def gen():\n    open('/workspace/a.json', 'w').write('{}')\n    open('/workspace/b.tmp', 'w').write('tmp')\n    return 2\n";
    let mount = json!({
        "dirs": {"/workspace": data},
        "permissions": {"default": {"create": true}},
        "sync": {"mode": "manual"},
    });
    let got = call(
        &m.server,
        json!({"language": "python", "code": code, "functionName": "gen", "mount": mount,
               "resultOptions": {"includeContents": true}}),
    );
    assert_eq!(got["status"], "success", "{got}");
    assert!(
        std::fs::read_dir(&data).unwrap().next().is_none(),
        "manual: nothing synced yet"
    );
    let chosen: Vec<Value> = got["files"]["created"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["path"].as_str().unwrap().ends_with(".json"))
        .cloned()
        .collect();
    assert_eq!(chosen.len(), 1, "{got}");
    let r = api(
        &m.server,
        "POST",
        "/v1/functions/sync",
        Some(json!({"changes": chosen, "mount": mount})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(std::fs::read_to_string(data.join("a.json")).unwrap(), "{}");
    assert!(!data.join("b.tmp").exists());
    // Outside the allowed roots: refused.
    let r = api(
        &m.server,
        "POST",
        "/v1/functions/sync",
        Some(json!({"changes": chosen, "mount": {"dirs": {"/workspace": "/etc"}}})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = api(
        &m.server,
        "POST",
        "/v1/functions/call",
        Some(
            json!({"language": "python", "code": code, "functionName": "gen",
                    "mount": {"dirs": {"/data": "/etc"}}}),
        ),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("mount"), "{}", r.body);
}

#[test]
fn loading_modes_and_caps_decide_what_goes_in_and_over_size_files_are_reported() {
    require_isolation!();
    let m = mounted();
    let data = m.root.path().join("data");
    std::fs::create_dir_all(data.join("input")).unwrap();
    std::fs::create_dir_all(data.join("other")).unwrap();
    std::fs::write(data.join("input/a.txt"), "a").unwrap();
    std::fs::write(data.join("other/b.txt"), "b").unwrap();
    std::fs::write(data.join("notes.md"), "n").unwrap();
    std::fs::write(data.join("big.bin"), vec![7u8; 4096]).unwrap();
    let code = "import os\ndef tree(root):\n    out = []\n    for d, _, files in os.walk('/data'):\n        out += [os.path.join(d, f) for f in files]\n    return sorted(out)\n";
    let loaded = |loading: Value| {
        let mount = json!({"dirs": {"/data": data}, "loading": loading});
        let got = python(&m.server, code, "tree", mount, json!(["/data/input"]));
        assert_eq!(got["status"], "success", "{got}");
        got
    };
    let eager = loaded(json!({"mode": "eager", "maxFileSize": 1024}));
    assert_eq!(
        eager["result"],
        json!(["/data/input/a.txt", "/data/notes.md", "/data/other/b.txt"]),
        "{eager}"
    );
    let skipped = &eager["files"]["skipped"][0];
    assert_eq!(skipped["path"], "/data/big.bin", "{eager}");
    assert_eq!(skipped["reason"], "too_large");
    assert_eq!(skipped["size"], 4096);
    let lazy = loaded(json!({"mode": "lazy"}));
    assert_eq!(
        lazy["result"],
        json!(["/data/input/a.txt"]),
        "only what the arguments name: {lazy}"
    );
    let explicit = loaded(json!({"mode": "explicit", "include": ["*.md", "other/**"]}));
    assert_eq!(
        explicit["result"],
        json!(["/data/notes.md", "/data/other/b.txt"]),
        "{explicit}"
    );
    let total = loaded(json!({"mode": "eager", "maxTotalSize": 4098}));
    let reasons = total["files"]["skipped"].to_string();
    assert!(reasons.contains("total_exceeded"), "{total}");
}

#[test]
fn on_permission_denied_throw_fails_the_call_and_keeps_nothing() {
    require_isolation!();
    let m = mounted();
    let data = m.root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let code = "def work():\n    open('/data/ok.txt', 'w').write('ok')\n    open('/data/no.txt', 'w').write('no')\n    return 1\n";
    let mount = |on_denied: &str| {
        json!({
            "dirs": {"/data": data},
            "permissions": {"rules": [{"pattern": "ok.txt", "allow": ["create"]}]},
            "onPermissionDenied": on_denied,
        })
    };
    let got = python(&m.server, code, "work", mount("throw"), json!([]));
    assert_eq!(got["status"], "error", "{got}");
    assert_eq!(got["error"]["type"], "PermissionDenied");
    assert!(
        got["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/data/no.txt"),
        "{got}"
    );
    assert!(!data.join("ok.txt").exists(), "a failed call syncs nothing");
    let got = python(&m.server, code, "work", mount("ignore"), json!([]));
    assert_eq!(got["status"], "success", "{got}");
    assert_eq!(std::fs::read_to_string(data.join("ok.txt")).unwrap(), "ok");
    assert!(!data.join("no.txt").exists());
    assert!(
        !got["files"]["created"].to_string().contains("no.txt"),
        "ignored: {got}"
    );
}

#[test]
fn what_the_read_back_cannot_see_is_never_taken_as_deleted() {
    require_isolation!();
    let m = mounted();
    let data = m.root.path().join("data");
    let deep: std::path::PathBuf = (0..20).map(|i| format!("d{i}")).collect();
    std::fs::create_dir_all(data.join(&deep)).unwrap();
    std::fs::write(data.join(&deep).join("deep.txt"), "deep").unwrap();
    std::fs::write(data.join("top.txt"), "top").unwrap();
    let mount = json!({
        "dirs": {"/data": data},
        "permissions": {"default": {"create": true, "modify": true, "delete": true}},
    });
    // Twenty levels down is read back like the rest: nothing changed, nothing deleted.
    let got = python(
        &m.server,
        "def f():\n    return 1\n",
        "f",
        mount.clone(),
        json!([]),
    );
    assert_eq!(got["status"], "success", "{got}");
    assert_eq!(got["files"]["deleted"], json!([]), "{got}");
    assert!(data.join(&deep).join("deep.txt").exists());
    // Files the tree cannot read back (no permission, a name it refuses) leave the result
    // truncated, not a 5xx, and nothing is synced from it.
    let code = "import os\ndef f():\n    open('/data/locked', 'w').write('x')\n    os.chmod('/data/locked', 0)\n    open('/data/bad\\nname', 'w').write('x')\n    os.remove('/data/top.txt')\n    return 2\n";
    let got = python(&m.server, code, "f", mount, json!([]));
    assert_eq!(got["status"], "success", "{got}");
    assert_eq!(got["files"]["truncated"], true, "{got}");
    assert!(got["files"]["sync"].is_null(), "{got}");
    assert_eq!(
        std::fs::read_to_string(data.join("top.txt")).unwrap(),
        "top"
    );
}
