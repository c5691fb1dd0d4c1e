//! Codelets over HTTP against a real server: the seed's example with its logs, and the hostile
//! ones (tight loops, pending timers, memory hogs, require and import, eval and `new Function`,
//! escapes through the constructor chain, `process.exit`, prototype pollution, log floods), each
//! with its code within its timeout and a margin, the server healthy after them all.

use std::time::Instant;

use serde_json::Value;

use crate::functions::{fixtures, function_server};
use crate::require_isolation;
use crate::server::api;

fn check(case: &Value, got: &Value, took_ms: u64) -> Result<(), String> {
    let want = &case["expect"];
    let mut problems = Vec::new();
    if want["ok"] != got["ok"] {
        problems.push(format!("ok: want {}, got {}", want["ok"], got["ok"]));
    }
    if want.get("value").is_some() && want["value"] != got["value"] {
        problems.push(format!(
            "value: want {}, got {}",
            want["value"], got["value"]
        ));
    }
    if let Some(code) = want["code"].as_str() {
        if got["error"]["code"] != code {
            problems.push(format!("code: want {code}, got {}", got["error"]["code"]));
        }
    }
    if let Some(needle) = want["messageContains"].as_str() {
        let message = got["error"]["message"].as_str().unwrap_or("");
        if !message.contains(needle) {
            problems.push(format!("message {message:?} lacks {needle:?}"));
        }
    }
    if let Some(n) = want["logsCount"].as_u64() {
        let logs = got["logs"].as_array().map_or(0, Vec::len) as u64;
        if logs != n {
            problems.push(format!("{logs} logs, want {n}"));
        }
    }
    if let Some(first) = want.get("firstLog").filter(|f| !f.is_null()) {
        let log = &got["logs"][0];
        if first.get("level").is_some() && first["level"] != log["level"] {
            problems.push(format!(
                "first log level {} want {}",
                log["level"], first["level"]
            ));
        }
        if let Some(needle) = first["messageContains"].as_str() {
            if !log["message"].as_str().unwrap_or("").contains(needle) {
                problems.push(format!("first log {log} lacks {needle:?}"));
            }
        }
        if !log["timestamp"].is_string() {
            problems.push(format!("first log has no timestamp: {log}"));
        }
    }
    if let Some(max) = want["maxDurationMs"].as_u64() {
        if took_ms > max + 3000 {
            problems.push(format!("took {took_ms} ms, over {max} ms and a margin"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn codelets_get_their_documented_codes_and_the_server_stays_healthy() {
    require_isolation!();
    let s = function_server(&[]);
    let cases = fixtures("codelets.json");
    assert!(cases.len() >= 15, "only {} codelet cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let started = Instant::now();
        let r = api(
            &s,
            "POST",
            "/v1/codelets/run",
            Some(case["request"].clone()),
        );
        let took = started.elapsed().as_millis() as u64;
        if r.status != 200 {
            failures.push(format!("{}: HTTP {}: {}", case["name"], r.status, r.body));
            continue;
        }
        let got = r.json();
        if let Err(why) = check(case, &got, took) {
            failures.push(format!("{}: {why}\n    got {got}", case["name"]));
        }
        let health = api(&s, "GET", "/health", None);
        assert_eq!(health.status, 200, "unhealthy after {}", case["name"]);
    }
    let metrics = api(&s, "GET", "/metrics", None).body;
    for outcome in ["ok", "TIMEOUT", "POLICY_VIOLATION", "MEMORY_LIMIT"] {
        assert!(
            metrics.contains(&format!("kiln_codelets_total{{outcome=\"{outcome}\"}}")),
            "{outcome}: {metrics}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} codelet cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
