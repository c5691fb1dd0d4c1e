//! `kiln serve`'s Judge0 face against Judge0's official Python SDK (`judge0` on PyPI, installed
//! by `scripts/setup`), and its error bodies with curl. Each test starts its own server.

use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::clients::{python, run_script, Runtime};
use crate::require_isolation;
use crate::server::{curl, Server, TOKEN};

/// A server with one warm sandbox for jobs and none for the sandbox API.
fn server() -> Server {
    Server::start(&["--pool-size", "1", "--sandbox-pool-size", "0"])
}

#[test]
fn judge0_sdk_runs_each_status_async_and_batched() {
    require_isolation!();
    let ok = Command::new(python())
        .args(["-c", "import judge0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let why = "judge0 is not installed in tests/clients (run scripts/setup)";
        if std::env::var("KILN_REQUIRE_ISOLATION").as_deref() == Ok("1") {
            panic!("{}: client required but unavailable: {why}", module_path!());
        }
        eprintln!("skipped: {}: {why}", module_path!());
        return;
    }
    let s = server();
    run_script(
        Runtime::Python,
        "judge0_sdk.py",
        &[("KILN_BASE", &s.base), ("KILN_TOKEN", TOKEN)],
    );
}

fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = curl(
        "POST",
        &format!("{}/judge0{path}", s.base),
        Some(TOKEN),
        Some(&body.to_string()),
        "application/json",
    );
    (r.status, r.json())
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    let r = curl(
        "GET",
        &format!("{}/judge0{path}", s.base),
        Some(TOKEN),
        None,
        "",
    );
    (r.status, r.json())
}

#[test]
fn judge0_error_bodies_and_serialization_quirks() {
    require_isolation!();
    let s = server();
    let (status, body) = post(
        &s,
        "/submissions",
        json!({"source_code": "x", "language_id": 999}),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body,
        json!({"language_id": ["language with id 999 doesn't exist"]})
    );
    let (status, body) = post(
        &s,
        "/submissions?base64_encoded=true",
        json!({"source_code": "not*base64", "language_id": 71}),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body["source_code"][0].is_string(), "{body}");
    let (status, body) = get(
        &s,
        "/submissions/d85cd024-1548-4165-96c7-7bc88673f194?fields=stdout,bogus",
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body, json!({"error": "invalid fields: [bogus]"}));

    // wait=true: the default fields, decimals as strings, MIME base64, null for empty output.
    let src = "import sys\nprint('x' * 70)\n";
    let b64 = |t: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(t)
    };
    let (status, body) = post(
        &s,
        "/submissions?base64_encoded=true&wait=true",
        json!({"source_code": b64(src), "language_id": 71}),
    );
    assert_eq!(status, 201, "{body}");
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "compile_output",
            "memory",
            "message",
            "status",
            "stderr",
            "stdout",
            "time",
            "token"
        ]
    );
    assert_eq!(body["status"], json!({"id": 3, "description": "Accepted"}));
    let stdout = body["stdout"].as_str().unwrap();
    assert_eq!(stdout.split('\n').next().unwrap().len(), 60, "{stdout:?}");
    assert!(stdout.ends_with('\n'));
    assert!(
        body["stderr"].is_null() && body["compile_output"].is_null(),
        "{body}"
    );
    assert!(
        body["time"].as_str().unwrap().parse::<f64>().is_ok(),
        "{body}"
    );
    assert!(body["memory"].as_u64().unwrap() > 0, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    // A UUID4: 8-4-4-4-12 hex digits, version nibble 4.
    let parts: Vec<&str> = token.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "{token}"
    );
    assert!(parts[2].starts_with('4'), "{token}");

    // fields=*: every attribute, timestamps with milliseconds and Z.
    let (status, all) = get(&s, &format!("/submissions/{token}?fields=*"));
    assert_eq!(status, 200, "{all}");
    assert_eq!(all.as_object().unwrap().len(), 35, "{all}");
    assert_eq!(all["source_code"], src);
    assert_eq!(all["language"]["id"], 71);
    assert_eq!(all["cpu_time_limit"], "5.0");
    let at = all["created_at"].as_str().unwrap();
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.as_bytes()[19] == b'.',
        "{at}"
    );
    assert!(all["finished_at"].is_string(), "{all}");

    // wait=false, then polling by token.
    let (status, body) = post(
        &s,
        "/submissions",
        json!({"source_code": "print(input())", "language_id": "71", "stdin": "hi", "expected_output": "hi  \n"}),
    );
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let mut last = Value::Null;
    for _ in 0..300 {
        let (_, b) = get(&s, &format!("/submissions/{token}"));
        if b["status"]["id"].as_u64().unwrap_or(0) > 2 {
            last = b;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(last["status"]["id"], 3, "{last}");
    assert_eq!(last["stdout"], "hi\n");
    // Deleted, it is gone.
    let r = curl(
        "DELETE",
        &format!("{}/judge0/submissions/{token}", s.base),
        Some(TOKEN),
        None,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.json());
    let (status, _) = get(&s, &format!("/submissions/{token}"));
    assert_eq!(status, 404);
}
