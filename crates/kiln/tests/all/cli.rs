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
    // A missing file is the user's mistake: exit 2, not Kiln's 125 (item 16 of the hardening
    // pass).
    assert_eq!(out.status.code(), Some(2));
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

/// `kiln ARGS` with `stdin` on its stdin; returns the exit code, stdout and stderr.
fn kiln_with_stdin(args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String) {
    use std::io::Write;
    let mut child = Command::new(kiln_bin())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn item7_and_9_files_that_are_not_regular_or_too_big_are_refused_before_reading() {
    require_isolation!();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo of a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let big = dir.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    for (file, why) in [
        ("/dev/zero".to_string(), "not a regular file"),
        (fifo.display().to_string(), "not a regular file"),
        (dir.path().display().to_string(), "is a directory"),
        (big.display().to_string(), "do not fit"),
    ] {
        let started = std::time::Instant::now();
        let out = Command::new(kiln_bin())
            .args(["exec", "--file", &file, "--", "/bin/true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(why), "{file}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{file}"
        );
    }
    // Item 9: a FIFO as stdin that nobody writes: the wall clock still ends the run.
    let started = std::time::Instant::now();
    let out = Command::new(kiln_bin())
        .args(["exec", "--json", "--wall-limit", "1s", "--stdin"])
        .arg(&fifo)
        .args(["--", "/bin/cat"])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["status"], "wall_time_limit", "{r}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn item8_and_12_out_of_range_limits_are_usage_errors() {
    for flags in [
        ["--time-limit", "99999999999999999999s"],
        ["--time-limit", "0"],
        ["--time-limit", "0s"],
        ["--wall-limit", "0ms"],
        ["--pids-limit", "0"],
        ["--pids-limit", "99999999999"],
        ["--pids-limit", "18446744073709551615"],
        ["--memory-limit", "0"],
        ["--memory-limit", "1"],
        ["--memory-limit", "1K"],
        ["--output-limit", "5T"],
    ] {
        let out = Command::new(kiln_bin())
            .arg("exec")
            .args(flags)
            .args(["--", "/bin/true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(flags[0]), "{flags:?}: {err}");
    }
}

#[test]
fn item10_piped_stdin_is_forwarded_by_default() {
    require_isolation!();
    let dir = tempfile::tempdir().unwrap();
    let py = scratch_file(&dir, "hello.py", "print('hello', input())\n");
    let (code, out, err) = kiln_with_stdin(&["run", &py], b"bob\n");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "hello bob\n");
    let c = scratch_file(
        &dir,
        "a.c",
        "#include <stdio.h>\nint main(void) { int n; if (scanf(\"%d\", &n) != 1) return 9; printf(\"%d\\n\", 2 * n); return 0; }\n",
    );
    let (code, out, err) = kiln_with_stdin(&["run", &c], b"21\n");
    assert_eq!((code, out.as_str()), (Some(0), "42\n"), "{err}");
    // `--stdin none` closes it whatever the caller's stdin is.
    let (code, _, _) = kiln_with_stdin(&["run", "--stdin", "none", &c], b"21\n");
    assert_eq!(code, Some(9));
    let (code, out, _) = kiln_with_stdin(&["exec", "--", "/bin/cat"], b"through\n");
    assert_eq!((code, out.as_str()), (Some(0), "through\n"));
}

#[test]
fn item16_file_mistakes_are_usage_errors_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(kiln_bin())
        .args(["run"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is a directory"), "{err}");
    let missing = dir.path().join("missing.py");
    let out = Command::new(kiln_bin())
        .arg("run")
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // The cause appears once, not once per layer of the error.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    let file = scratch_file(&dir, "a.txt", "x");
    let out = Command::new(kiln_bin())
        .args(["exec", "--file", &file, "--file", &file, "--", "/bin/true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("twice"), "{err}");
}

/// The README's commands, as a reader copies them: the lines of its shell blocks that are not
/// comments or output.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md at the workspace root");
    let mut commands = Vec::new();
    let mut in_shell = false;
    for line in readme.lines() {
        match line.trim() {
            "```sh" => in_shell = true,
            "```" => in_shell = false,
            l if in_shell && !l.is_empty() && !l.starts_with('#') && !l.starts_with('$') => {
                commands.push(l.to_string());
            }
            _ => {}
        }
    }
    commands
}

#[test]
fn item18_the_readme_commands_run_as_written_in_a_root_shell_without_sudo() {
    let commands = readme_commands();
    assert!(
        commands.iter().any(|c| c == "scripts/test"),
        "the set-up's test command is gone: {commands:?}"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for command in &commands {
        let program = command.split_whitespace().next().unwrap();
        assert_ne!(
            program, "sudo",
            "{command}: a root shell without sudo cannot run it"
        );
        // Every script a command names is there and can be run as it is written.
        if program.starts_with("scripts/") || program.starts_with("bench/") {
            let path = root.join(program);
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&path)
                    .unwrap_or_else(|e| panic!("{command}: {}: {e}", path.display()))
                    .permissions(),
            );
            assert!(
                mode & 0o111 != 0,
                "{command}: {} is not executable",
                path.display()
            );
        }
    }
}
