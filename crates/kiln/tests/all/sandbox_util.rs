//! What the sandbox tests share: a sandbox made, a shell command run to its end, a background
//! process started, waited on, and watched for a line.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{api, Server};

/// A new sandbox that lives two minutes; its id.
pub fn new_sandbox(s: &Server) -> String {
    let r = api(
        s,
        "POST",
        "/v1/sandboxes",
        Some(json!({"timeoutSecs": 120})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["sandboxId"].as_str().unwrap().to_string()
}

/// `cmd` by `/bin/sh -c` to its end; the exec result.
pub fn sh(s: &Server, id: &str, cmd: &str) -> Value {
    let r = api(
        s,
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        Some(json!({"cmd": cmd})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Starts a background process; the process.
pub fn start_process(s: &Server, id: &str, body: Value) -> Value {
    let r = api(
        s,
        "POST",
        &format!("/v1/sandboxes/{id}/processes"),
        Some(body),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

/// Waits for a process to end; the process.
pub fn wait_exited(s: &Server, id: &str, pid: u64) -> Value {
    let path = format!("/v1/sandboxes/{id}/processes/{pid}/wait?timeoutMs=20000");
    let r = api(s, "GET", &path, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let p = r.json();
    assert_eq!(p["state"], "exited", "{p}");
    p
}

/// Waits until a process's stdout holds `needle`.
pub fn wait_for_output(s: &Server, id: &str, pid: u64, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let path = format!("/v1/sandboxes/{id}/processes/{pid}/logs");
    loop {
        let logs = api(s, "GET", &path, None).json();
        if logs["stdout"].as_str().unwrap_or("").contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "never printed {needle}: {logs}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
