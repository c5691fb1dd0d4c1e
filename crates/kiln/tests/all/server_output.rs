//! What a job's output looks like to its clients: text by default, and every byte as written with
//! `outputEncoding: "base64"` (item 15 of the hardening pass: random bytes came back as U+FFFD).

use std::process::Command;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::require_isolation;
use crate::server::{api, Server, TOKEN};

/// Writes every byte value, then some random ones, to stdout, and says what it wrote on stderr
/// (hex), so the test compares with what the program itself saw.
const BINARY: &str = "import os, sys\n\
data = bytes(range(256)) + os.urandom(20000)\n\
sys.stdout.buffer.write(data)\n\
sys.stdout.buffer.flush()\n\
sys.stderr.write(data.hex())\n";

fn b64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text:.80}"))
}

#[test]
fn item15_binary_output_comes_back_whole_as_base64() {
    require_isolation!();
    let s = Server::start(&[]);
    let body = json!({"language": "python", "outputEncoding": "base64",
                      "files": [{"name": "main.py", "content": BINARY}]});
    let r = api(&s, "POST", "/v1/run", Some(body));
    assert_eq!(r.status, 200, "{}", r.body);
    let result = r.json();
    assert_eq!(result["exitCode"], 0, "{}", result["usage"]);
    let written =
        hex::decode(String::from_utf8(b64(result["stderr"].as_str().unwrap())).unwrap()).unwrap();
    assert_eq!(written.len(), 256 + 20000);
    assert_eq!(b64(result["stdout"].as_str().unwrap()), written);

    // The live events say the same: each chunk decodes on its own, and they join to the output.
    let id = result["jobId"].as_str().unwrap();
    let sse = Command::new("curl")
        .args([
            "-sN",
            "--max-time",
            "10",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
        ])
        .arg(format!("{}/v1/jobs/{id}/events", s.base))
        .output()
        .unwrap();
    let text = String::from_utf8(sse.stdout).unwrap();
    let mut joined = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == "event: stdout" {
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            let event: Value = serde_json::from_str(data).unwrap();
            joined.extend(b64(event["chunk"].as_str().unwrap()));
        }
    }
    assert_eq!(joined, written);

    // Without it the output is text: what is not UTF-8 becomes U+FFFD, as documented.
    let body = json!({"language": "python", "files": [{"name": "main.py", "content": BINARY}]});
    let r = api(&s, "POST", "/v1/run", Some(body));
    assert_eq!(r.status, 200, "{}", r.body);
    let stdout = r.json()["stdout"].as_str().unwrap().to_string();
    assert!(stdout.contains('\u{fffd}'));
    assert!(stdout.starts_with("\u{0}\u{1}\u{2}"));
}
