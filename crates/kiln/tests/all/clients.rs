//! `kiln serve` against the real clients of the code-runner contract and of the Pusher protocol:
//! the reference SDK `@teovilla/code-runner-sdk-node` (jobs, blobs, artifacts), its React hook
//! `@teovilla/code-runner-react` in jsdom, the contract's zod validators, pusher-js 8,
//! pysher and the Pusher server SDK for Python. Each test starts its own server and runs one
//! script of `tests/clients/` (installed by `scripts/setup`), which exits non-zero on the first
//! mismatch; its output is shown when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::require_isolation;
use crate::server::{Server, TOKEN};

/// How long one client script may run (the scripts give up a little earlier, with a message).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

pub(crate) fn clients_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir
        .ancestors()
        .nth(2)
        .expect("crates/kiln is two levels down");
    root.join("tests/clients")
}

/// The interpreter `scripts/setup` installs pysher and pusher into.
pub(crate) fn python() -> PathBuf {
    clients_dir().join(".venv/bin/python")
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Runtime {
    Node,
    Python,
}

/// What is missing for scripts of `runtime`, if anything.
fn missing(runtime: Runtime) -> Option<String> {
    let dir = clients_dir();
    let runs = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    match runtime {
        Runtime::Node => {
            if !runs(Command::new("node").arg("--version")) {
                return Some("node is not installed".into());
            }
            let packages = [
                "@teovilla/code-runner-sdk-node",
                "@teovilla/code-runner-contract",
                "pusher-js",
            ];
            packages
                .iter()
                .find(|p| {
                    !dir.join("node_modules")
                        .join(p)
                        .join("package.json")
                        .exists()
                })
                .map(|p| format!("{p} is not installed in tests/clients (run scripts/setup)"))
        }
        Runtime::Python => (!runs(Command::new(python()).args(["-c", "import pysher, pusher"])))
            .then(|| {
                format!(
                    "{} cannot import pysher and pusher (run scripts/setup)",
                    python().display()
                )
            }),
    }
}

/// Whether the client packages are there. With `KILN_REQUIRE_ISOLATION=1` a missing one is a
/// failure, never a skip.
fn clients_available(test: &str, runtimes: &[Runtime]) -> bool {
    let Some(why) = runtimes.iter().find_map(|r| missing(*r)) else {
        return true;
    };
    if std::env::var("KILN_REQUIRE_ISOLATION").as_deref() == Ok("1") {
        panic!("{test}: client packages required but unavailable: {why}");
    }
    eprintln!("skipped: {test}: {why}");
    false
}

macro_rules! require_clients {
    ($($runtime:expr),+) => {
        require_isolation!();
        if !clients_available(module_path!(), &[$($runtime),+]) {
            return;
        }
    };
}

/// Runs `script` of `tests/clients` with `env`, and fails with its output unless it exits 0.
pub(crate) fn run_script(runtime: Runtime, script: &str, env: &[(&str, &str)]) {
    let dir = clients_dir();
    let out = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut cmd = match runtime {
        Runtime::Node => Command::new("node"),
        Runtime::Python => {
            let mut c = Command::new(python());
            c.env("PYTHONDONTWRITEBYTECODE", "1")
                .env("PYTHONUNBUFFERED", "1");
            c
        }
    };
    let mut child = cmd
        .arg(script)
        .current_dir(&dir)
        .envs(env.iter().copied())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {script}: {e}"));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let report = format!("--- stdout of {script}\n{stdout}--- stderr of {script}\n{stderr}---");
    match status {
        Some(s) if s.success() => println!("{report}"),
        Some(s) => panic!("{script} failed ({s})\n{report}"),
        None => panic!(
            "{script} did not finish within {} s\n{report}",
            SCRIPT_TIMEOUT.as_secs()
        ),
    }
}

#[test]
fn the_reference_sdk_quickstart_and_its_typed_errors() {
    require_clients!(Runtime::Node);
    let s = Server::start(&["--pusher-app-key", "kiln-test-key"]);
    let small = Server::start(&["--capacity", "1", "--queue-depth", "1"]);
    run_script(
        Runtime::Node,
        "sdk_quickstart.mjs",
        &[
            ("KILN_BASE", &s.base),
            ("KILN_TOKEN", TOKEN),
            ("KILN_APP_KEY", "kiln-test-key"),
            ("KILN_BASE_SMALL", &small.base),
        ],
    );
}

#[test]
fn pusher_js_receives_the_contract_events_in_order() {
    require_clients!(Runtime::Node);
    let s = Server::start(&["--pusher-app-key", "kiln-test-key"]);
    run_script(
        Runtime::Node,
        "pusher_js_events.mjs",
        &[
            ("KILN_BASE", &s.base),
            ("KILN_TOKEN", TOKEN),
            ("KILN_APP_KEY", "kiln-test-key"),
        ],
    );
}

#[test]
fn pysher_receives_a_jobs_events_in_order() {
    require_clients!(Runtime::Python);
    let s = Server::start(&["--pusher-app-key", "kiln-test-key"]);
    run_script(
        Runtime::Python,
        "pysher_events.py",
        &[
            ("KILN_BASE", &s.base),
            ("KILN_TOKEN", TOKEN),
            ("KILN_APP_KEY", "kiln-test-key"),
        ],
    );
}

#[test]
fn every_contract_body_passes_the_contracts_validators() {
    require_clients!(Runtime::Node);
    // A short warm-up, so that a job never started soon ends in `error`.
    let s = Server::start(&["--warmup-ms", "500"]);
    run_script(
        Runtime::Node,
        "contract_shapes.mjs",
        &[("KILN_BASE", &s.base), ("KILN_TOKEN", TOKEN)],
    );
}

#[test]
fn the_pusher_server_sdk_signs_and_triggers_like_kiln() {
    require_clients!(Runtime::Python);
    // The python SDK only takes numeric app ids, and the app id has no flag.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    std::fs::write(&config, "[pusher]\napp_id = \"4242\"\n").unwrap();
    let s = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--pusher-app-key",
        "K",
        "--pusher-app-secret",
        "S",
    ]);
    run_script(
        Runtime::Python,
        "pusher_server_sdk.py",
        &[
            ("KILN_BASE", &s.base),
            ("KILN_TOKEN", TOKEN),
            ("KILN_APP_KEY", "K"),
            ("KILN_APP_SECRET", "S"),
            ("KILN_APP_ID", "4242"),
        ],
    );
}

#[test]
fn the_seed_sdk_uploads_blobs_and_fetches_artifacts() {
    require_clients!(Runtime::Node);
    let s = Server::start(&[
        "--pusher-app-key",
        "kiln-test-key",
        "--token",
        "other=test-token-b",
    ]);
    run_script(
        Runtime::Node,
        "sdk_blobs_artifacts.mjs",
        &[
            ("KILN_BASE", &s.base),
            ("KILN_TOKEN", TOKEN),
            ("KILN_APP_KEY", "kiln-test-key"),
            ("KILN_TOKEN_B", "test-token-b"),
        ],
    );
}

#[test]
fn the_react_hook_receives_artifact_events() {
    require_clients!(Runtime::Node);
    let s = Server::start(&["--pusher-app-key", "kiln-test-key"]);
    run_script(
        Runtime::Node,
        "react_artifacts.mjs",
        &[
            ("KILN_BASE", &s.base),
            ("KILN_TOKEN", TOKEN),
            ("KILN_APP_KEY", "kiln-test-key"),
        ],
    );
}
