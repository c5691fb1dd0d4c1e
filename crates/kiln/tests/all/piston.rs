//! `kiln serve`'s Piston v2 face against Piston's real clients: the official `piston-client`
//! (npm), `aiopyston` (PyPI), and the `/api/v2/connect` WebSocket driven with websocket-client.
//! Each test starts its own server and runs one script of `tests/clients/` (installed by
//! `scripts/setup`), which exits non-zero on the first mismatch.

use std::process::{Command, Stdio};

use crate::clients::{clients_dir, python, run_script, Runtime};
use crate::require_isolation;
use crate::server::{Server, TOKEN};

/// A server with one warm sandbox for jobs and none for the sandbox API.
fn server() -> Server {
    Server::start(&["--pool-size", "1", "--sandbox-pool-size", "0"])
}

/// Whether `runtime` can run the script needing `what`. With `KILN_REQUIRE_ISOLATION=1` a
/// missing client is a failure, never a skip.
fn have(test: &str, runtime: Runtime, what: &str) -> bool {
    let ok = match runtime {
        Runtime::Node => clients_dir()
            .join("node_modules")
            .join(what)
            .join("package.json")
            .exists(),
        Runtime::Python => Command::new(python())
            .args(["-c", &format!("import {what}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
    };
    if ok {
        return true;
    }
    let why = format!("{what} is not installed in tests/clients (run scripts/setup)");
    if std::env::var("KILN_REQUIRE_ISOLATION").as_deref() == Ok("1") {
        panic!("{test}: client required but unavailable: {why}");
    }
    eprintln!("skipped: {test}: {why}");
    false
}

#[test]
fn piston_client_lists_runtimes_and_runs_python_and_c() {
    require_isolation!();
    if !have(module_path!(), Runtime::Node, "piston-client") {
        return;
    }
    let s = server();
    run_script(
        Runtime::Node,
        "piston_client.mjs",
        &[("KILN_BASE", &s.base), ("KILN_TOKEN", TOKEN)],
    );
}

#[test]
fn aiopyston_lists_runtimes_and_runs_python_and_c() {
    require_isolation!();
    if !have(module_path!(), Runtime::Python, "pyston") {
        return;
    }
    let s = server();
    run_script(
        Runtime::Python,
        "aiopyston_client.py",
        &[("KILN_BASE", &s.base), ("KILN_TOKEN", TOKEN)],
    );
}

#[test]
fn piston_connect_streams_stdin_kills_and_closes_with_pistons_codes() {
    require_isolation!();
    if !have(module_path!(), Runtime::Python, "websocket") {
        return;
    }
    let s = server();
    run_script(
        Runtime::Python,
        "piston_connect.py",
        &[("KILN_BASE", &s.base), ("KILN_TOKEN", TOKEN)],
    );
}
