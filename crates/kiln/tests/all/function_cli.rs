//! `kiln call` and `kiln codelet` as a user runs them: the value on stdout, the code's output
//! and the error on stderr, the status's exit code, `--json`, and a mount of any directory.

use std::process::Command;

use serde_json::Value;

use crate::common::kiln_bin;
use crate::require_isolation;

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

fn kiln(args: &[&str]) -> Ran {
    let out = Command::new(kiln_bin()).args(args).output().expect("kiln");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn kiln_call_prints_the_value_and_exits_with_the_status() {
    require_isolation!();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("greet.py");
    std::fs::write(
        &file,
        "def greet(name, greeting='Hello'):\n    print('from the function')\n    return f'{greeting}, {name}!'\n\ndef divide(a, b):\n    return a / b\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let r = kiln(&[
        "call",
        f,
        "greet",
        "World",
        "--kwargs",
        r#"{"greeting": "Hi"}"#,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), r#""Hi, World!""#);
    assert!(r.stderr.contains("from the function"), "{}", r.stderr);

    let r = kiln(&["call", f, "divide", "1", "0"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("ZeroDivisionError"), "{}", r.stderr);
    assert!(r.stdout.is_empty());

    let r = kiln(&["call", f, "divide", "6", "4", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["result"], 1.5);
    assert_eq!(v["meta"]["signatureSource"], "inferred");

    let r = kiln(&["call", f, "greet", "--kwargs", "[1]"]);
    assert_eq!(r.code, 2, "a usage error: {}", r.stderr);
    let r = kiln(&["call", f, "greet", "--timeout", "1s", "--language", "cobol"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("language"), "{}", r.stderr);
}

#[test]
fn kiln_call_mounts_any_directory_and_syncs_a_read_write_mount() {
    require_isolation!();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in.txt"), "abc").unwrap();
    let file = dir.path().join("up.js");
    std::fs::write(
        &file,
        "const fs = require('fs');\nfunction up(src, dst) {\n  const t = fs.readFileSync(src, 'utf8');\n  fs.writeFileSync(dst, t.toUpperCase());\n  return t.length;\n}\nmodule.exports = { up };\n",
    )
    .unwrap();
    let mount = format!("{}:/data", data.display());
    let f = file.to_str().unwrap();
    // Read-only rules: the value comes back, the write is reported denied and not synced.
    let r = kiln(&[
        "call",
        f,
        "up",
        "/data/in.txt",
        "/data/out.txt",
        "--mount",
        &mount,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["result"], 3, "{v}");
    assert_eq!(v["files"]["denied"][0]["path"], "/data/out.txt", "{v}");
    assert!(!data.join("out.txt").exists());
    // Read-write: synced back.
    let rw = format!("{mount}:rw");
    let r = kiln(&[
        "call",
        f,
        "up",
        "/data/in.txt",
        "/data/out.txt",
        "--mount",
        &rw,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "3");
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt")).unwrap(),
        "ABC"
    );
}

#[test]
fn kiln_codelet_prints_the_value_and_its_logs() {
    require_isolation!();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("double.mjs");
    std::fs::write(
        &file,
        "export async function main(input, { logger }) {\n  logger.info('Processing input:', input);\n  return { result: input.value * 2 };\n}\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let r = kiln(&["codelet", f, "--input", r#"{"value": 21}"#]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), r#"{"result":42}"#);
    assert!(
        r.stderr.contains("[info] Processing input:"),
        "{}",
        r.stderr
    );

    let spin = dir.path().join("spin.mjs");
    std::fs::write(&spin, "export async function main() { while (true) {} }\n").unwrap();
    let started = std::time::Instant::now();
    let r = kiln(&["codelet", spin.to_str().unwrap(), "--timeout", "1s"]);
    assert_eq!(r.code, 124, "{}", r.stderr);
    assert!(r.stderr.contains("TIMEOUT"), "{}", r.stderr);
    assert!(started.elapsed().as_secs() < 10);
}
