//! Function calls over HTTP against a real server: each language's fixtures (the seed's
//! examples, args, kwargs, defaults, errors with their types, unicode, a 1 MiB argument, results
//! that cannot be serialized, timeouts, forged output), virtual files and their change tracking,
//! and the requests Kiln refuses.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use crate::require_isolation;
use crate::server::{api, Server};

/// A server for function calls (no warm pools to fill while the calls run).
pub fn function_server(extra: &[&str]) -> Server {
    let mut args = vec!["--pool-size", "1", "--sandbox-pool-size", "0"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `POST /v1/functions/call`; the reply must be 200.
pub fn call(s: &Server, body: Value) -> Value {
    let r = api(s, "POST", "/v1/functions/call", Some(body));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// A fixture file's cases.
pub fn fixtures(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/all/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check(case: &Value, got: &Value) -> Result<(), String> {
    let want = &case["expect"];
    let mut problems = Vec::new();
    let mut expect_eq = |what: &str, want: &Value, got: &Value| {
        if !want.is_null() && want != got {
            problems.push(format!("{what}: want {want}, got {got}"));
        }
    };
    expect_eq("status", &want["status"], &got["status"]);
    if want.get("result").is_some_and(|r| !r.is_null()) {
        expect_eq("result", &want["result"], &got["result"]);
    }
    expect_eq("error.type", &want["errorType"], &got["error"]["type"]);
    expect_eq(
        "meta.signatureSource",
        &want["signatureSource"],
        &got["meta"]["signatureSource"],
    );
    if let Some(needle) = want["messageContains"].as_str() {
        let message = got["error"]["message"].as_str().unwrap_or("");
        if !message.contains(needle) {
            problems.push(format!("error.message {message:?} lacks {needle:?}"));
        }
    }
    if let Some(needle) = want["stdoutContains"].as_str() {
        let stdout = got["stdout"].as_str().unwrap_or("");
        if !stdout.contains(needle) {
            problems.push(format!("stdout {stdout:?} lacks {needle:?}"));
        }
    }
    let code = match got["status"].as_str() {
        Some("success") => 0,
        Some("timeout") => 124,
        Some("terminated") => 143,
        _ => 1,
    };
    if got["exitCode"] != code {
        problems.push(format!(
            "exitCode {} for status {}",
            got["exitCode"], got["status"]
        ));
    }
    if got["success"] != (got["status"] == "success") {
        problems.push("success disagrees with status".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Every case of `file`, through one server; all failures reported together.
fn run_fixtures(file: &str) {
    let s = function_server(&[]);
    let mut failures = Vec::new();
    let cases = fixtures(file);
    assert!(cases.len() >= 10, "{file} has only {} cases", cases.len());
    for case in &cases {
        let mut request = case["request"].clone();
        if let Some(big) = case.get("bigArg").filter(|b| !b.is_null()) {
            let text = big["repeat"]
                .as_str()
                .unwrap()
                .repeat(big["count"].as_u64().unwrap() as usize);
            let index = big["index"].as_u64().unwrap() as usize;
            let args = request["args"].as_array_mut().unwrap();
            while args.len() <= index {
                args.push(Value::Null);
            }
            args[index] = Value::String(text);
        }
        let timeout_ms = request["timeoutMs"].as_u64();
        let started = Instant::now();
        let got = call(&s, request);
        if let Some(ms) = timeout_ms {
            // A timeout ends the call within its time and a margin, not at the default.
            let took = started.elapsed().as_millis() as u64;
            if case["expect"]["status"] == "timeout" && took > ms + 5000 {
                failures.push(format!(
                    "{}: took {took} ms for a {ms} ms timeout",
                    case["name"]
                ));
            }
        }
        if let Err(why) = check(case, &got) {
            let mut shown = got.clone();
            for key in ["stdout", "stderr"] {
                if let Some(text) = shown[key].as_str() {
                    shown[key] = Value::String(text.chars().take(400).collect());
                }
            }
            failures.push(format!("{}: {why}\n    got {shown}", case["name"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases of {file} failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let health = api(&s, "GET", "/health", None);
    assert_eq!(health.status, 200, "the server is healthy after them all");
}

#[test]
fn python_functions_behave_as_their_fixtures_say() {
    require_isolation!();
    run_fixtures("functions/python.json");
}

#[test]
fn javascript_functions_behave_as_their_fixtures_say() {
    require_isolation!();
    run_fixtures("functions/javascript.json");
}

#[test]
fn ruby_functions_behave_as_their_fixtures_say() {
    require_isolation!();
    run_fixtures("functions/ruby.json");
}

#[test]
fn php_functions_behave_as_their_fixtures_say() {
    require_isolation!();
    run_fixtures("functions/php.json");
}

#[test]
fn c_functions_behave_as_their_fixtures_say() {
    require_isolation!();
    run_fixtures("functions/c.json");
}

#[test]
fn cpp_functions_behave_as_their_fixtures_say() {
    require_isolation!();
    run_fixtures("functions/cpp.json");
}

#[test]
fn the_file_processing_example_reads_a_virtual_file_and_reports_what_it_wrote() {
    require_isolation!();
    let s = function_server(&[]);
    let code = "def process(input_path, output_path):\n    with open(input_path) as f:\n        data = f.read()\n    with open(output_path, 'w') as f:\n        f.write(data.upper())\n    return len(data)\n";
    let got = call(
        &s,
        json!({
            "language": "python", "code": code, "functionName": "process",
            "args": ["/workspace/input.txt", "/workspace/output.txt"],
            "files": {"input.txt": "hello world"},
            "resultOptions": {"includeContents": true},
        }),
    );
    assert_eq!(got["status"], "success", "{got}");
    assert_eq!(got["result"], 11);
    let created = got["files"]["created"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{got}");
    assert_eq!(created[0]["path"], "/workspace/output.txt");
    assert_eq!(created[0]["size"], 11);
    assert_eq!(created[0]["content"], "HELLO WORLD");
    assert!(created[0]["hash"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        got["files"]["modified"],
        json!([]),
        "the input was only read"
    );
    assert_eq!(got["files"]["deleted"], json!([]));

    // Modified and deleted virtual files, and no contents unless asked for.
    let code = "import os\ndef edit():\n    open('a.txt', 'a').write('!')\n    os.remove('b.txt')\n    return sorted(os.listdir('.'))\n";
    let got = call(
        &s,
        json!({
            "language": "python", "code": code, "functionName": "edit",
            "files": {"a.txt": "a", "b.txt": {"base64": "/wA="}},
        }),
    );
    assert_eq!(got["result"], json!(["a.txt"]), "{got}");
    let modified = &got["files"]["modified"][0];
    assert_eq!(modified["path"], "/workspace/a.txt");
    assert_eq!(modified["size"], 2);
    assert!(modified.get("content").is_none(), "{modified}");
    assert_eq!(got["files"]["deleted"][0]["path"], "/workspace/b.txt");

    let metrics = api(&s, "GET", "/metrics", None).body;
    assert!(
        metrics.contains("kiln_function_calls_total{language=\"python\",status=\"success\"} 2"),
        "{metrics}"
    );
}

#[test]
fn bad_requests_are_refused_with_the_field_and_never_a_5xx() {
    require_isolation!();
    let s = function_server(&[]);
    let base = json!({"language": "python", "code": "def f(): return 1", "functionName": "f"});
    let with = |patch: Value| {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (patch, field) in [
        (json!({"language": "cobol"}), "language"),
        (json!({"args": "not an array"}), "args"),
        (json!({"kwargs": [1, 2]}), "kwargs"),
        (json!({"files": {"../escape.txt": "x"}}), "files"),
        (json!({"files": {"/etc/passwd": "x"}}), "files"),
        (json!({"workdir": "/etc"}), "workdir"),
        (json!({"timeoutMs": 0}), "timeoutMs"),
        (json!({"functionName": ""}), "functionName"),
        (json!({"schema": {"params": "x"}}), "schema"),
        (json!({"mount": {"dirs": {"/data": "/etc"}}}), "mount"),
    ] {
        let r = api(&s, "POST", "/v1/functions/call", Some(with(patch.clone())));
        assert_eq!(r.status, 400, "{patch}: {}", r.body);
        let details = r.json()["details"].to_string();
        assert!(
            details.contains(field),
            "{patch}: {} does not name {field}",
            r.body
        );
    }
    let r = api(
        &s,
        "POST",
        "/v1/codelets/run",
        Some(json!({"source": {"type": "file", "code": ""}})),
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // A function that is not there, and code that does not parse, are the call's own errors.
    let got = call(&s, with(json!({"functionName": "nope"})));
    assert_eq!(got["status"], "error");
    assert_eq!(got["error"]["type"], "FunctionNotFound", "{got}");
    assert!(got["error"]["message"].as_str().unwrap().contains("nope"));
    let got = call(&s, with(json!({"code": "def f(:\n  pass"})));
    assert_eq!(got["error"]["type"], "SyntaxError", "{got}");
    assert!(
        got["error"]["message"].as_str().unwrap().contains("line 1"),
        "{got}"
    );
}
