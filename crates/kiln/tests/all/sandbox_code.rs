//! The runtime helpers end to end against a running `kiln serve`: JavaScript and Python code
//! run as a command, for the value it hands back, and in the background.

use serde_json::{json, Value};

use crate::require_isolation;
use crate::server::{api, Server};

fn code(s: &Server, id: &str, op: &str, body: Value) -> Value {
    let r = api(
        s,
        "POST",
        &format!("/v1/sandboxes/{id}/code/{op}"),
        Some(body),
    );
    assert!(
        r.status == 200 || r.status == 201,
        "{op}: {} {}",
        r.status,
        r.body
    );
    r.json()
}

#[test]
fn javascript_and_python_code_runs_for_output_for_a_value_and_in_the_background() {
    require_isolation!();
    let s = Server::start(&["--pool-size", "0"]);
    let r = api(
        &s,
        "POST",
        "/v1/sandboxes",
        Some(json!({"timeoutSecs": 120})),
    );
    let id = r.json()["sandboxId"].as_str().unwrap().to_string();

    let out = code(
        &s,
        &id,
        "exec",
        json!({"language": "javascript", "code": "console.log(6 * 7); console.error('e'); process.exit(3)"}),
    );
    assert_eq!(
        (
            out["stdout"].as_str(),
            out["stderr"].as_str(),
            out["exitCode"].as_i64()
        ),
        (Some("42\n"), Some("e\n"), Some(3)),
        "{out}"
    );
    let out = code(
        &s,
        &id,
        "exec",
        json!({"language": "python", "code": "import sys\nprint(sys.stdin.read().upper())", "stdin": "shout"}),
    );
    assert_eq!(out["stdout"], "SHOUT\n", "{out}");

    // JS: __return wins; else module.exports (a promise awaited); else nothing.
    let run = code(
        &s,
        &id,
        "run",
        json!({"language": "javascript", "code": "console.log('side'); __return({a: 1, s: new Set([1, 2]), big: 10n}); __return('second')"}),
    );
    assert_eq!(
        run["value"],
        json!({"a": 1, "s": [1, 2], "big": "10"}),
        "{run}"
    );
    assert_eq!(
        (run["returned"].as_bool(), run["stdout"].as_str()),
        (Some(true), Some("side\n"))
    );
    let run = code(
        &s,
        &id,
        "run",
        json!({"language": "js", "code": "module.exports = new Promise(r => setTimeout(() => r([1, 'two']), 50))"}),
    );
    assert_eq!(run["value"], json!([1, "two"]), "{run}");
    let run = code(
        &s,
        &id,
        "run",
        json!({"language": "javascript", "code": "setTimeout(() => __return('later'), 30)"}),
    );
    assert_eq!(run["value"], "later", "{run}");
    let run = code(
        &s,
        &id,
        "run",
        json!({"language": "javascript", "code": "let x = 1"}),
    );
    assert_eq!(
        (run["returned"].as_bool(), run["value"].is_null()),
        (Some(false), true),
        "{run}"
    );
    let run = code(
        &s,
        &id,
        "run",
        json!({"language": "javascript", "code": "throw new TypeError('nope')"}),
    );
    assert_eq!(run["status"], "nonzero_exit", "{run}");
    assert!(
        run["stderr"].as_str().unwrap().contains("TypeError: nope"),
        "{run}"
    );

    // Python: kiln_return wins; else the last expression.
    let run = code(
        &s,
        &id,
        "run",
        json!({"language": "python", "code": "import math\nx = {'e': round(math.e, 1), 's': {3}, 'b': b'hi'}\nx"}),
    );
    assert_eq!(
        run["value"],
        json!({"e": 2.7, "s": [3], "b": "hi"}),
        "{run}"
    );
    let run = code(
        &s,
        &id,
        "run",
        json!({"language": "python", "code": "kiln_return(7)\n8"}),
    );
    assert_eq!(run["value"], 7, "{run}");
    let run = code(
        &s,
        &id,
        "run",
        json!({"language": "python", "code": "def f():\n    kiln_return([1, None])\nf()"}),
    );
    assert_eq!(run["value"], json!([1, null]), "{run}");
    let run = code(&s, &id, "run", json!({"language": "python", "code": "1/0"}));
    assert!(
        run["stderr"]
            .as_str()
            .unwrap()
            .contains("ZeroDivisionError"),
        "{run}"
    );
    assert_eq!(run["returned"], false);

    // In the background: a process like any other.
    let p = code(
        &s,
        &id,
        "spawn",
        json!({"language": "python", "code": "import time\nprint('up', flush=True)\ntime.sleep(0.2)\nprint('done')"}),
    );
    let pid = p["processId"].as_u64().unwrap();
    let done = api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{id}/processes/{pid}/wait?timeoutMs=20000"),
        None,
    )
    .json();
    assert_eq!(done["exitCode"], 0, "{done}");
    let logs = api(
        &s,
        "GET",
        &format!("/v1/sandboxes/{id}/processes/{pid}/logs"),
        None,
    )
    .json();
    assert_eq!(logs["stdout"], "up\ndone\n");

    let r = api(
        &s,
        "POST",
        &format!("/v1/sandboxes/{id}/code/run"),
        Some(json!({"language": "cobol", "code": ""})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("\"language\""), "{}", r.body);
}
