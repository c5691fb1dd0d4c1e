//! Shared helpers: the isolation gate, running `kiln exec`, compiling attack programs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The kiln binary under test.
pub fn kiln_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
}

/// Whether isolation tests can run here. With `KILN_REQUIRE_ISOLATION=1` a missing requirement is a
/// failure, never a skip.
pub fn isolation_available(test: &str) -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let cgroups = Path::new("/sys/fs/cgroup").exists();
    if root && cgroups {
        return true;
    }
    let reason = if root {
        "no /sys/fs/cgroup"
    } else {
        "not root"
    };
    if std::env::var("KILN_REQUIRE_ISOLATION").as_deref() == Ok("1") {
        panic!("{test}: isolation required but unavailable: {reason}");
    }
    eprintln!("skipped: {test}: {reason}");
    false
}

/// Gate a test on isolation being available.
#[macro_export]
macro_rules! require_isolation {
    () => {
        if !$crate::common::isolation_available(module_path!()) {
            return;
        }
    };
}

/// The parsed JSON of `kiln exec --json` plus the process output.
#[derive(Debug)]
pub struct Exec {
    pub json: Value,
    pub output: Output,
}

impl Exec {
    pub fn status(&self) -> &str {
        self.json["status"].as_str().unwrap_or("<none>")
    }
    pub fn stdout(&self) -> &str {
        self.json["stdout"].as_str().unwrap_or("")
    }
    pub fn stderr(&self) -> &str {
        self.json["stderr"].as_str().unwrap_or("")
    }
    pub fn exit_code(&self) -> Option<i64> {
        self.json["exitCode"].as_i64()
    }
}

/// Runs `kiln exec --json FLAGS -- ARGV`.
pub fn kiln_exec(flags: &[&str], argv: &[&str]) -> Exec {
    kiln_exec_env(flags, argv, &[])
}

/// Same, with extra environment variables set on the kiln process itself.
pub fn kiln_exec_env(flags: &[&str], argv: &[&str], env: &[(&str, &str)]) -> Exec {
    let mut cmd = Command::new(kiln_bin());
    cmd.arg("exec")
        .arg("--json")
        .args(flags)
        .arg("--")
        .args(argv);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("run kiln");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "kiln exec printed no JSON ({e}); stdout={stdout:?} stderr={:?}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Exec { json, output }
}

/// Runs a shell script in a sandbox.
pub fn sh(flags: &[&str], script: &str) -> Exec {
    kiln_exec(flags, &["/bin/sh", "-c", script])
}

/// Runs a Python snippet in a sandbox.
pub fn python(flags: &[&str], code: &str) -> Exec {
    kiln_exec(flags, &["/usr/bin/python3", "-c", code])
}

/// A C program compiled on the host into a temporary directory.
pub struct CProgram {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl CProgram {
    /// Compiles `source` (a whole C file).
    pub fn build(name: &str, source: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join(format!("{name}.c"));
        std::fs::write(&src, source).expect("write source");
        let path = dir.path().join(name);
        let out = Command::new("gcc")
            .args(["-O1", "-pthread", "-o"])
            .arg(&path)
            .arg(&src)
            .output()
            .expect("run gcc");
        assert!(
            out.status.success(),
            "gcc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { _dir: dir, path }
    }

    /// Runs it in a sandbox as `/workspace/<name>`.
    pub fn run(&self, flags: &[&str], args: &[&str]) -> Exec {
        let name = self
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let file = format!("{}:{name}", self.path.display());
        let mut all = vec!["--file", file.as_str()];
        all.extend_from_slice(flags);
        let prog = format!("/workspace/{name}");
        let mut argv = vec![prog.as_str()];
        argv.extend_from_slice(args);
        kiln_exec(&all, &argv)
    }
}

/// A C program whose `main` body is `body`, with the usual headers.
pub fn c_main(name: &str, body: &str) -> CProgram {
    let source = format!(
        r#"#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
int main(int argc, char **argv) {{
{body}
}}
"#
    );
    CProgram::build(name, &source)
}

/// A `kiln exec` running in the background, its live stdout read line by line: for checks the
/// host makes while a sandboxed program holds something. Its stdin is a pipe the test closes with
/// [`Background::release`].
pub struct Background {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Background {
    /// Starts `kiln exec FLAGS -- ARGV` (live output, no `--json`).
    pub fn start(flags: &[&str], argv: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(kiln_bin())
            .arg("exec")
            .args(flags)
            .arg("--")
            .args(argv)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start kiln exec");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let err_tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = err_tx.send(format!("stderr: {line}"));
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 30 s) for a line starting with `prefix` and returns it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line starting with {prefix:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Closes the program's stdin (a program waiting for EOF then ends).
    pub fn release(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Closes stdin, waits for the run to end; returns its exit status and the lines not yet read.
    pub fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        self.release();
        let status = self.child.wait().expect("wait for kiln exec");
        let mut rest = std::mem::take(&mut self.seen);
        rest.extend(self.lines.try_iter());
        (status, rest)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl CProgram {
    /// Runs it in a sandbox in the background as `/workspace/<name>`.
    pub fn start(&self, flags: &[&str], args: &[&str]) -> Background {
        let name = self
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let file = format!("{}:{name}", self.path.display());
        let mut all = vec!["--file", file.as_str()];
        all.extend_from_slice(flags);
        let prog = format!("/workspace/{name}");
        let mut argv = vec![prog.as_str()];
        argv.extend_from_slice(args);
        Background::start(&all, &argv)
    }
}
