//! A sandbox's file API end to end against a running `kiln serve`, over real HTTP with curl:
//! every operation, and the hostile cases: symlinks planted by the sandboxed code (and swapped in
//! while the API works on the path) pointing at the host, and path tricks in every parameter.

use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::require_isolation;
use crate::sandbox_util::{new_sandbox, sh};
use crate::server::{api, Reply, Server, TOKEN};

fn start_server() -> (Server, String) {
    let s = Server::start(&["--pool-size", "0"]);
    let id = new_sandbox(&s);
    (s, id)
}

fn enc(path: &str) -> String {
    path.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_./~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A raw read: (status, bytes).
fn read_raw(s: &Server, id: &str, path: &str) -> (u16, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&out)
        .args([
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
        ])
        .arg(format!(
            "{}/v1/sandboxes/{id}/files/content?path={}",
            s.base,
            enc(path)
        ))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code, std::fs::read(out).unwrap_or_default())
}

/// A raw upload.
fn upload(s: &Server, id: &str, path: &str, data: &[u8]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in");
    std::fs::write(&file, data).unwrap();
    let o = Command::new("curl")
        .args(["-sS", "-X", "PUT", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .args([
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(format!(
            "{}/v1/sandboxes/{id}/files/content?path={}&mode=755",
            s.base,
            enc(path)
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Reply {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        headers: String::new(),
    }
}

#[test]
fn every_file_operation_works_as_the_sandbox_user_sees_it() {
    require_isolation!();
    let (s, id) = start_server();
    let f = |rest: &str| format!("/v1/sandboxes/{id}/files{rest}");
    // Write as JSON text, read back three ways.
    let r = api(
        &s,
        "POST",
        &f("/write"),
        Some(json!({"path": "notes/a.txt", "content": "héllo\n"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let e = r.json();
    assert_eq!(
        (e["path"].as_str(), e["type"].as_str(), e["size"].as_u64()),
        (Some("/workspace/notes/a.txt"), Some("file"), Some(7))
    );
    assert_eq!(
        sh(&s, &id, "cat notes/a.txt; stat -c %U notes/a.txt")["stdout"],
        "héllo\nsandbox\n"
    );
    let r = api(
        &s,
        "GET",
        &f("/content?path=notes/a.txt&encoding=utf8"),
        None,
    );
    assert_eq!(r.json()["content"], "héllo\n");
    assert_eq!(
        read_raw(&s, &id, "/workspace/notes/a.txt"),
        (200, "héllo\n".as_bytes().to_vec())
    );
    // A large binary file streamed in and out, whole.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = upload(&s, &id, "bin/blob", &big);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["size"], 3_000_000);
    assert_eq!(r.json()["mode"], 0o755);
    let inside = sh(&s, &id, "sha256sum bin/blob | cut -d' ' -f1")["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(inside, hex::encode(Sha256::digest(&big)));
    let (code, back) = read_raw(&s, &id, "bin/blob");
    assert_eq!(code, 200);
    assert!(back == big, "the blob came back changed");
    // Bytes as base64.
    let r = api(
        &s,
        "POST",
        &f("/write"),
        Some(json!({"path": "/tmp/z.bin", "content": "AAEC/w==", "encoding": "base64"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        api(
            &s,
            "GET",
            &f("/content?path=/tmp/z.bin&encoding=base64"),
            None
        )
        .json()["content"],
        "AAEC/w=="
    );
    // mkdir -p, list with depth, stat, rename, remove.
    let r = api(
        &s,
        "POST",
        &f("/mkdir"),
        Some(json!({"path": "deep/er/est"})),
    );
    assert_eq!(r.json()["type"], "dir", "{}", r.body);
    sh(&s, &id, "ln -s notes/a.txt link");
    let list = api(&s, "GET", &f("?path=/workspace&depth=3"), None).json();
    let paths: Vec<&str> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for want in [
        "/workspace/bin/blob",
        "/workspace/deep/er/est",
        "/workspace/notes/a.txt",
        "/workspace/link",
    ] {
        assert!(paths.contains(&want), "{want} not in {paths:?}");
    }
    let link = api(&s, "GET", &f("/stat?path=link"), None).json();
    assert_eq!(
        (link["type"].as_str(), link["target"].as_str()),
        (Some("symlink"), Some("notes/a.txt"))
    );
    let shallow = api(&s, "GET", &f("?path=."), None).json();
    assert!(
        shallow["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["path"].as_str().unwrap().matches('/').count() == 2),
        "{shallow}"
    );
    let r = api(
        &s,
        "POST",
        &f("/rename"),
        Some(json!({"from": "notes/a.txt", "to": "deep/b.txt"})),
    );
    assert_eq!(r.json()["path"], "/workspace/deep/b.txt", "{}", r.body);
    assert_eq!(
        api(&s, "GET", &f("/stat?path=notes/a.txt"), None).status,
        404
    );
    assert_eq!(api(&s, "DELETE", &f("?path=deep"), None).status, 409);
    assert_eq!(
        api(&s, "DELETE", &f("?path=deep&recursive=true"), None).status,
        200
    );
    assert_eq!(sh(&s, &id, "ls")["stdout"], "bin\nlink\nnotes\n");
    // What the sandbox's user may not do, the API may not either.
    assert_eq!(
        api(
            &s,
            "POST",
            &f("/write"),
            Some(json!({"path": "/etc/passwd", "content": "x"}))
        )
        .status,
        403
    );
    assert_eq!(
        api(
            &s,
            "POST",
            &f("/write"),
            Some(json!({"path": "/usr/bin/evil", "content": "x"}))
        )
        .status,
        403
    );
    assert_eq!(api(&s, "DELETE", &f("?path=/"), None).status, 400);
    assert_eq!(read_raw(&s, &id, "/dev/zero").0, 400);
    assert_eq!(read_raw(&s, &id, "/workspace").0, 400);
}

#[test]
fn planted_and_swapped_symlinks_never_reach_the_host() {
    require_isolation!();
    let (s, id) = start_server();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("secret.txt"), "host secret").unwrap();
    let hp = host.path().display().to_string();
    let f = |rest: &str| format!("/v1/sandboxes/{id}/files{rest}");
    sh(&s, &id, &format!("ln -s {hp}/secret.txt file-link; ln -s {hp} dir-link; ln -s ../../../../../../{hp} up-link; ln -s /proc/1/root proc-root"));
    for path in [
        "file-link",
        "dir-link/secret.txt",
        "up-link/secret.txt",
        "proc-root/etc/hostname",
    ] {
        let (code, body) = read_raw(&s, &id, path);
        assert!(
            matches!(code, 400 | 404),
            "{path}: {code} {}",
            String::from_utf8_lossy(&body)
        );
        assert!(!String::from_utf8_lossy(&body).contains("host secret"));
    }
    for path in ["file-link", "dir-link/planted.txt", "up-link/planted.txt"] {
        let r = api(
            &s,
            "POST",
            &f("/write"),
            Some(json!({"path": path, "content": "planted"})),
        );
        assert!(
            matches!(r.status, 400 | 403 | 404),
            "{path}: {} {}",
            r.status,
            r.body
        );
    }
    for path in ["dir-link/secret.txt", "up-link/secret.txt"] {
        assert!(matches!(
            api(&s, "DELETE", &f(&format!("?path={path}")), None).status,
            400 | 404
        ));
    }
    let r = api(
        &s,
        "POST",
        &f("/rename"),
        Some(json!({"from": "dir-link/secret.txt", "to": "stolen"})),
    );
    assert!(matches!(r.status, 400 | 404), "{}", r.body);
    // Following a link to a directory stays in the sandbox: its own /etc, not the host's.
    sh(&s, &id, "ln -s / root-link");
    let (code, _) = read_raw(&s, &id, "root-link/etc/hostname");
    assert!(matches!(code, 200 | 404), "{code}");
    // A symlink swapped in and out while the API works on the path.
    let swapper = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/processes"),
        Some(json!({"cmd": format!(
        "while :; do mkdir -p r.d && echo inside > r.d/secret.txt && mv -T r.d race; ln -sfn {hp} race.l && mv -T race.l race; rm -rf race; done")})),
    );
    assert_eq!(swapper.status, 201, "{}", swapper.body);
    let mut inside = 0;
    for i in 0..150 {
        let (code, body) = read_raw(&s, &id, "race/secret.txt");
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("host secret"), "read {i} reached the host");
        if code == 200 {
            assert_eq!(text, "inside\n");
            inside += 1;
        }
        let w = api(
            &s,
            "POST",
            &f("/write"),
            Some(json!({"path": format!("race/w{i}"), "content": "x"})),
        );
        assert!(w.status < 500, "{}", w.body);
    }
    let leaked: Vec<_> = std::fs::read_dir(host.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leaked,
        vec![std::ffi::OsString::from("secret.txt")],
        "the host's directory changed"
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("secret.txt")).unwrap(),
        "host secret"
    );
    eprintln!("swap race: {inside} of 150 reads found the sandbox's own file, none the host's");
}

#[test]
fn path_tricks_in_every_parameter_are_refused_with_400() {
    require_isolation!();
    let (s, id) = start_server();
    let f = |rest: &str| format!("/v1/sandboxes/{id}/files{rest}");
    for bad in [
        "../etc/passwd",
        "/workspace/../../etc/passwd",
        "a/..",
        "a%00b",
        "a%0Ab",
        "%1B%5B2J",
    ] {
        for (method, path, body) in [
            ("GET", f(&format!("?path={bad}")), None),
            ("GET", f(&format!("/stat?path={bad}")), None),
            ("GET", f(&format!("/content?path={bad}")), None),
            ("PUT", f(&format!("/content?path={bad}")), Some(json!("x"))),
            ("DELETE", f(&format!("?path={bad}&recursive=true")), None),
        ] {
            let r = api(&s, method, &path, body);
            assert_eq!(r.status, 400, "{method} {path}: {}", r.body);
            assert!(r.body.contains("\"path\""), "{method} {path}: {}", r.body);
        }
        let decoded = bad
            .replace("%00", "\0")
            .replace("%0A", "\n")
            .replace("%1B", "\x1b")
            .replace("%5B", "[");
        for (route, body, field) in [
            ("/write", json!({"path": decoded, "content": "x"}), "path"),
            ("/mkdir", json!({"path": decoded}), "path"),
            ("/rename", json!({"from": decoded, "to": "ok"}), "from"),
            ("/rename", json!({"from": "ok", "to": decoded}), "to"),
        ] {
            let r = api(&s, "POST", &f(route), Some(body));
            assert_eq!(r.status, 400, "{route} {decoded:?}: {}", r.body);
            assert!(
                r.body.contains(&format!("\"{field}\"")),
                "{route}: {}",
                r.body
            );
        }
    }
    // Unknown parameters and a missing path are named too.
    assert_eq!(api(&s, "GET", &f("?path=.&bogus=1"), None).status, 400);
    assert_eq!(api(&s, "GET", &f("/stat"), None).status, 400);
    // Another token's sandbox has no files to show.
    let other = crate::server::curl(
        "GET",
        &format!("{}{}", s.base, f("?path=/")),
        Some("nope"),
        None,
        "",
    );
    assert_eq!(other.status, 401);
}
