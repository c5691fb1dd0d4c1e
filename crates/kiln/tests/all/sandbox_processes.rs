//! A sandbox's processes end to end against a running `kiln serve`, over real HTTP: streamed
//! exec, background processes re-attached by id after their client left, stdin, signals, a kill
//! that takes daemons along, and a terminal driven over its WebSocket by a real client.

use std::process::Command;

use serde_json::{json, Value};

use crate::require_isolation;
use crate::sandbox_util::{
    new_sandbox as sandbox, start_process as spawn, wait_exited as wait, wait_for_output,
};
use crate::server::{api, Reply, Server, TOKEN};

fn start_server() -> Server {
    Server::start(&["--pool-size", "0"])
}

/// The events of an SSE body: (event, data as JSON).
fn sse(r: &Reply) -> Vec<(String, Value)> {
    r.body
        .split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).unwrap());
                }
            }
            Some((name?, data?))
        })
        .collect()
}

fn text_of(events: &[(String, Value)], stream: &str) -> String {
    events
        .iter()
        .filter(|(n, _)| n == stream)
        .map(|(_, d)| d["data"].as_str().unwrap())
        .collect()
}

#[test]
fn streamed_exec_sends_stdout_stderr_exit_and_end() {
    require_isolation!();
    let s = start_server();
    let id = sandbox(&s);
    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/exec/stream"),
        Some(json!({"cmd": "echo one; sleep 0.2; echo two >&2; printf 'caf\\303\\251'; exit 3"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.contains("text/event-stream"), "{}", r.headers);
    let events = sse(&r);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.last(), Some(&"end"), "{names:?}");
    assert_eq!(names[names.len() - 2], "exit", "{names:?}");
    assert_eq!(text_of(&events, "stdout"), "one\ncafé");
    assert_eq!(text_of(&events, "stderr"), "two\n");
    let exit = &events[events.len() - 2].1;
    assert_eq!(exit["exitCode"], 3, "{exit}");
    assert_eq!(exit["status"], "nonzero_exit", "{exit}");
    // A command that cannot start is the caller's 400, before any stream.
    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/exec/stream"),
        Some(json!({"argv": ["no-such-program"]})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn a_background_process_outlives_its_client_and_is_reattached_by_id() {
    require_isolation!();
    let s = start_server();
    let id = sandbox(&s);
    let p = spawn(
        &s,
        &id,
        json!({"cmd": "for i in 1 2 3 4 5; do echo line$i; echo err$i >&2; sleep 0.3; done; exit 7"}),
    );
    let pid = p["processId"].as_u64().unwrap();
    assert_eq!(p["state"], "running", "{p}");
    assert!(p["pid"].as_i64().unwrap() > 1, "{p}");
    // The client that started it is gone; a new one follows it live, from the start.
    let r = api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{id}/processes/{pid}/logs?follow=true"),
        None,
    );
    let events = sse(&r);
    assert_eq!(
        text_of(&events, "stdout"),
        "line1\nline2\nline3\nline4\nline5\n"
    );
    assert_eq!(text_of(&events, "stderr"), "err1\nerr2\nerr3\nerr4\nerr5\n");
    let exit = &events.iter().find(|(n, _)| n == "exit").unwrap().1;
    assert_eq!(exit["exitCode"], 7, "{exit}");
    // After its end: its whole log and its exit code, again, by id.
    let done = wait(&s, &id, pid);
    assert_eq!(done["exitCode"], 7);
    let r = api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{id}/processes/{pid}/logs"),
        None,
    );
    let logs = r.json();
    assert_eq!(logs["stdout"], "line1\nline2\nline3\nline4\nline5\n");
    assert_eq!(logs["process"]["exitCode"], 7);
    let replay = sse(&api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{id}/processes/{pid}/logs?follow=true&offset=0"),
        None,
    ));
    assert_eq!(text_of(&replay, "stdout").lines().count(), 5);
    assert_eq!(replay.last().unwrap().0, "end");
    let list = api(&s, "GET", &format!("/v1/sandboxes/{id}/processes"), None).json();
    assert_eq!(list["processes"][0]["processId"], pid, "{list}");
    // Unknown processes and bad ids are 404s.
    for path in ["processes/999", "processes/abc", "processes/999/logs"] {
        let r = api(&s, "GET", &format!("/v1/sandboxes/{id}/{path}"), None);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
}

#[test]
fn stdin_is_written_then_closed_and_signals_reach_the_process() {
    require_isolation!();
    let s = start_server();
    let id = sandbox(&s);
    let cat = spawn(&s, &id, json!({"argv": ["cat"], "stdin": "first\n"}));
    let pid = cat["processId"].as_u64().unwrap();
    let path = format!("/v1/sandboxes/{id}/processes/{pid}/stdin");
    let r = api(
        &s,
        "POST",
        &path,
        Some(json!({"data": "c2Vjb25kCg==", "encoding": "base64"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api(
        &s,
        "POST",
        &path,
        Some(json!({"data": "third\n", "eof": true})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let done = wait(&s, &id, pid);
    assert_eq!(done["exitCode"], 0, "{done}");
    let logs = api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{id}/processes/{pid}/logs"),
        None,
    )
    .json();
    assert_eq!(logs["stdout"], "first\nsecond\nthird\n");
    // Its stdin is closed now.
    let r = api(&s, "POST", &path, Some(json!({"data": "late"})));
    assert_eq!(r.status, 409, "{}", r.body);

    let trap = spawn(
        &s,
        &id,
        json!({"cmd": "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done"}),
    );
    let pid = trap["processId"].as_u64().unwrap();
    wait_for_output(&s, &id, pid, "ready");
    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/processes/{pid}/signal"),
        Some(json!({"signal": "SIGTERM"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let done = wait(&s, &id, pid);
    assert_eq!(done["exitCode"], 0, "{done}");
    let logs = api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{id}/processes/{pid}/logs"),
        None,
    )
    .json();
    assert_eq!(logs["stdout"], "ready\ngot-term\n");
    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/processes/{pid}/signal"),
        Some(json!({"signal": "SIGNOPE"})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
}

/// The commands of the sandbox's processes, as one of its own commands sees them.
fn sandbox_processes(s: &Server, id: &str) -> Vec<String> {
    let r = api(
        s,
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        Some(
            json!({"cmd": "for p in /proc/[0-9]*; do [ $p = /proc/$$ ] || cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done"}),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn killing_a_process_takes_its_daemonised_children_along() {
    require_isolation!();
    let s = start_server();
    let id = sandbox(&s);
    let p = spawn(
        &s,
        &id,
        json!({"cmd": "setsid sleep 1001 & (sleep 1002 &); nohup sleep 1003 >/dev/null 2>&1 & echo spawned; sleep 1004"}),
    );
    let pid = p["processId"].as_u64().unwrap();
    wait_for_output(&s, &id, pid, "spawned");
    let before = sandbox_processes(&s, &id);
    for n in 1001..=1004 {
        assert!(
            before.iter().any(|c| c.contains(&format!("sleep {n}"))),
            "sleep {n} not running: {before:?}"
        );
    }
    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/processes/{pid}/kill"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let killed = r.json();
    assert_eq!(killed["state"], "exited", "{killed}");
    assert_eq!(killed["status"], "killed", "{killed}");
    let after = sandbox_processes(&s, &id);
    assert!(
        after.iter().all(|c| !c.contains("sleep 10")),
        "left behind: {after:?}"
    );
}

#[test]
fn a_terminal_runs_an_interactive_shell_over_its_websocket() {
    require_isolation!();
    let s = start_server();
    let id = sandbox(&s);
    let p = spawn(
        &s,
        &id,
        json!({"argv": ["/bin/bash", "--norc", "-i"], "tty": {"rows": 24, "cols": 80}, "env": {"TERM": "xterm"}}),
    );
    let pid = p["processId"].as_u64().unwrap();
    assert_eq!(p["tty"], true);
    let url = format!(
        "{}/v1/sandboxes/{id}/processes/{pid}/terminal",
        s.base.replacen("http://", "ws://", 1)
    );
    let script = crate::clients::clients_dir().join("terminal_ws.py");
    let out = Command::new(crate::clients::python())
        .arg(&script)
        .args([&url, TOKEN])
        .output()
        .expect("the venv's python (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["exit"]["exitCode"], 5, "{seen}");
    assert!(seen["screen"].as_str().unwrap().contains("typed-42"));
    // Resizing over HTTP reaches the terminal too.
    let sized = spawn(
        &s,
        &id,
        json!({"cmd": "read go; stty size", "tty": {"rows": 24, "cols": 80}}),
    );
    let sized = sized["processId"].as_u64().unwrap();
    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/processes/{sized}/resize"),
        Some(json!({"rows": 30, "cols": 100})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/processes/{sized}/stdin"),
        Some(json!({"data": "go\r"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait(&s, &id, sized);
    let logs = api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{id}/processes/{sized}/logs"),
        None,
    )
    .json();
    assert!(
        logs["stdout"].as_str().unwrap().contains("30 100"),
        "{logs}"
    );
    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/processes/{sized}/resize"),
        Some(json!({"rows": 0, "cols": 100})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // A process without a terminal has none to attach to.
    let plain = spawn(&s, &id, json!({"cmd": "sleep 5"}));
    let r = api(
        &s,
        "GET",
        &format!(
            "/v1/sandboxes/{id}/processes/{}/terminal",
            plain["processId"]
        ),
        None,
    );
    assert_eq!(r.status, 400, "{}", r.body);
}
