//! `kiln sandbox …` against a running `kiln serve`: every command, in words and with `--json`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::kiln_bin;
use crate::require_isolation;
use crate::server::{Server, TOKEN};

fn cli(s: &Server, args: &[&str]) -> Output {
    Command::new(kiln_bin())
        .arg("sandbox")
        .args(args)
        .env("KILN_SERVER", &s.base)
        .env("KILN_TOKEN", TOKEN)
        .output()
        .unwrap()
}

fn ok(s: &Server, args: &[&str]) -> String {
    let o = cli(s, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn json_of(s: &Server, args: &[&str]) -> Value {
    // The flag goes before a command's own trailing arguments.
    let mut all = vec![args[0], "--json"];
    all.extend_from_slice(&args[1..]);
    let out = ok(s, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"))
}

#[test]
fn every_sandbox_command_works_against_a_running_server() {
    require_isolation!();
    let s = Server::start(&["--pool-size", "0"]);
    let id = ok(&s, &["create", "--env", "WHO=cli", "--timeout", "120"])
        .trim()
        .to_string();
    assert!(id.starts_with("sbx_"), "{id}");
    let listed = json_of(&s, &["ls"]);
    assert_eq!(listed["sandboxes"][0]["sandboxId"], id.as_str());
    assert!(ok(&s, &["ls"]).contains(&id));

    // exec streams, and exits with the command's code.
    let o = cli(
        &s,
        &[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo hi $WHO; echo oops >&2; exit 4",
        ],
    );
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi cli\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "oops\n");
    let j = json_of(&s, &["exec", &id, "--", "echo", "x"]);
    assert_eq!(j["stdout"], "x\n");

    // A background process: ps, logs, kill.
    let pid = ok(
        &s,
        &[
            "exec",
            &id,
            "--background",
            "--",
            "sh",
            "-c",
            "echo started; sleep 600",
        ],
    )
    .trim()
    .to_string();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(ok(&s, &["ps", &id]).contains("sleep 600"));
    let ps = json_of(&s, &["ps", &id]);
    let bg = ps["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["processId"].as_u64() == pid.parse().ok())
        .unwrap_or_else(|| panic!("{pid} not in {ps}"));
    assert_eq!(bg["state"], "running");
    assert_eq!(ok(&s, &["logs", &id, &pid]), "started\n");
    let killed = json_of(&s, &["kill", &id, &pid]);
    assert_eq!(killed["status"], "killed", "{killed}");
    let followed = cli(&s, &["logs", &id, &pid, "--follow"]);
    assert_eq!(String::from_utf8_lossy(&followed.stdout), "started\n");

    // cp in and out.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("in.bin");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    std::fs::write(&local, &bytes).unwrap();
    ok(
        &s,
        &[
            "cp",
            local.to_str().unwrap(),
            &format!("{id}:/workspace/up.bin"),
        ],
    );
    assert_eq!(
        ok(&s, &["exec", &id, "--", "sh", "-c", "wc -c < up.bin"]).trim(),
        "100000"
    );
    let back = dir.path().join("out.bin");
    ok(&s, &["cp", &format!("{id}:up.bin"), back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == bytes);
    let o = cli(
        &s,
        &["cp", &format!("{id}:../etc/passwd"), back.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("400"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // shell: with a pipe for stdin it still runs on the sandbox's own terminal.
    let mut child = Command::new(kiln_bin())
        .args(["sandbox", "shell", &id, "--shell", "/bin/sh"])
        .env("KILN_SERVER", &s.base)
        .env("KILN_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"tty; echo shell-$((40+2)); exit 6\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let screen = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(6),
        "{screen} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        screen.contains("shell-42") && screen.contains("/dev/pts/"),
        "{screen}"
    );

    // rm, and errors in words.
    assert_eq!(ok(&s, &["rm", &id]).trim(), id);
    let o = cli(&s, &["exec", &id, "--", "true"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
