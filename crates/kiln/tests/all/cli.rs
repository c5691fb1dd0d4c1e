//! The command line: bad flags are exit 2 with a message, `kiln doctor` passes on a capable host.

use std::process::Command;

use crate::common::kiln_bin;
use crate::require_isolation;

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    for args in [
        vec!["exec", "--bogus", "--", "/bin/true"],
        vec!["exec", "--memory-limit", "lots", "--", "/bin/true"],
        vec!["exec", "--time-limit", "2y", "--", "/bin/true"],
        vec!["exec", "--network", "host", "--", "/bin/true"],
        vec!["exec"],
    ] {
        let out = Command::new(kiln_bin()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
}

#[test]
fn a_bad_file_argument_names_the_file() {
    require_isolation!();
    let out = Command::new(kiln_bin())
        .args(["exec", "--file", "/no/such/file", "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file"));
}

#[test]
fn doctor_passes_on_this_host() {
    require_isolation!();
    let out = Command::new(kiln_bin()).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("sandboxed as 1000"), "{text}");
    assert!(text.contains("this host can run sandboxes"), "{text}");
}

#[test]
fn live_output_and_the_summary_line() {
    require_isolation!();
    let out = Command::new(kiln_bin())
        .args(["exec", "--", "/bin/sh", "-c", "echo hello; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("kiln: nonzero_exit (exit 3)"), "{err}");
}

fn scratch_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn kiln_languages_reports_the_versions_the_toolchains_print() {
    let out = Command::new(kiln_bin())
        .args(["languages", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let python = list
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["language"] == "python")
        .expect("python is listed");
    assert_eq!(python["interactive"], true);
    assert!(python["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "py"));
    // The same binary a sandbox runs, asked directly.
    let real = Command::new("/usr/bin/python3")
        .arg("--version")
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&real.stdout);
    assert_eq!(
        real.trim(),
        format!("Python {}", python["version"].as_str().unwrap())
    );
}

#[test]
fn kiln_run_reports_compile_and_run_stages() {
    require_isolation!();
    let dir = tempfile::tempdir().unwrap();
    let main = scratch_file(
        &dir,
        "hello.c",
        "#include <stdio.h>\nint main(int c, char **v) { printf(\"%s\\n\", v[1]); return 4; }\n",
    );
    let out = Command::new(kiln_bin())
        .args(["run", "--json", &main, "--", "arg1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["status"], "nonzero_exit");
    assert_eq!(r["language"], "c");
    assert_eq!(r["compile"]["status"], "ok");
    assert_eq!(r["run"]["exitCode"], 4);
    assert_eq!(r["stdout"], "arg1\n");

    let bad = scratch_file(&dir, "bad.c", "int main(void) { return nope; }\n");
    let out = Command::new(kiln_bin())
        .args(["run", "--json", &bad])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["status"], "compile_error");
    assert_eq!(r["compile"]["status"], "nonzero_exit");
    assert!(
        r["compile"]["output"].as_str().unwrap().contains("nope"),
        "{r}"
    );
    assert!(r["run"].is_null(), "the run stage must not start: {r}");
}

#[test]
fn kiln_run_names_an_unknown_language() {
    let dir = tempfile::tempdir().unwrap();
    let file = scratch_file(&dir, "prog.cob", "DISPLAY 'HI'.");
    let out = Command::new(kiln_bin())
        .args(["run", "--lang", "cobol", &file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"cobol\""));
    let out = Command::new(kiln_bin())
        .args(["run", &file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("prog.cob"));
}

#[test]
fn the_jvm_runs_inside_a_small_memory_limit() {
    require_isolation!();
    let dir = tempfile::tempdir().unwrap();
    let main = scratch_file(
        &dir,
        "Main.java",
        "public class Main { public static void main(String[] a) { byte[][] keep = new byte[20][]; for (int i = 0; i < 2000; i++) keep[i % 20] = new byte[1 << 20]; System.out.println(\"ok \" + Runtime.getRuntime().maxMemory() / (1 << 20)); } }",
    );
    let out = Command::new(kiln_bin())
        .args(["run", "--json", "--memory-limit", "96M", &main])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 2 GB allocated in total with 20 MB live: the heap fits the limit and the GC keeps up.
    assert_eq!(r["status"], "ok", "{r}");
    let heap: u64 = r["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .trim_start_matches("ok ")
        .parse()
        .unwrap();
    assert!(heap < 96, "max heap {heap} MiB for a 96 MiB limit");
    assert!(r["run"]["memoryBytes"].as_u64().unwrap() <= 96 << 20, "{r}");
}
