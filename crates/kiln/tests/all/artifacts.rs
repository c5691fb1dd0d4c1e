//! Artifacts against `kiln serve`: the files a collected run creates or changes in its working
//! directory (not its inputs, not a compiler's output, never a link's target) come back as
//! `artifact` events before `result` and in the RunResult, each readable by a signed URL with no
//! token that refuses any change and its expiry; `maxArtifacts` and `maxArtifactBytes` cut them.
//! Also the trace context: a job's `traceparent` reaches its log lines and the OTLP exporter.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::require_isolation;
use crate::server::{api, curl, wait_state, Server, TOKEN};

/// Runs a collected job to its end; its RunResult.
fn collected(s: &Server, body: Value) -> (String, Value) {
    let mut body = body;
    body["collectOutput"] = json!(true);
    body["autoStart"] = json!(true);
    let r = api(s, "POST", "/v1/execute", Some(body));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["jobId"].as_str().unwrap().to_string();
    wait_state(s, &id, &["done", "error", "killed"]);
    let out = api(s, "GET", &format!("/v1/jobs/{id}/output"), None);
    assert_eq!(out.status, 200, "{}", out.body);
    (id, out.json())
}

/// GET with no token: status, headers, body bytes.
fn fetch(url: &str) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (headers, body) = (dir.path().join("h"), dir.path().join("b"));
    let out = Command::new("curl")
        .args(["-sS", "-w", "%{http_code}", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .arg(url)
        .output()
        .expect("curl");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (
        status,
        std::fs::read_to_string(headers).unwrap_or_default(),
        std::fs::read(body).unwrap_or_default(),
    )
}

fn names(out: &Value) -> Vec<String> {
    out["artifacts"]
        .as_array()
        .unwrap_or_else(|| panic!("no artifacts in {out}"))
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

const WRITER: &str = r#"
import hashlib, os, struct, zlib
def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
rows = b''.join(b'\x00' + bytes((x * 7 + y * 3) % 256 for x in range(16 * 3)) for y in range(16))
png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 16, 16, 8, 2, 0, 0, 0)) \
    + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b'')
open('plot.png', 'wb').write(png)
os.makedirs('data', exist_ok=True)
open('data/out.csv', 'w').write('x,y\n1,2\n3,4\n')
open('input.txt', 'a').write('changed\n')
# Links out of the workspace: to a file of the host's kind, and to the root.
os.symlink('/etc/passwd', 'out.txt')
os.symlink('/', 'root')
for n in ('plot.png', 'data/out.csv', 'input.txt'):
    print(n, hashlib.sha256(open(n, 'rb').read()).hexdigest())
"#;

#[test]
fn a_runs_new_and_changed_files_come_back_by_signed_url_and_links_never_do() {
    require_isolation!();
    let s = Server::start(&["--token", "other=test-token-other"]);
    let (id, out) = collected(
        &s,
        json!({"language": "python", "files": [
            {"name": "main.py", "content": WRITER},
            {"name": "input.txt", "content": "given\n"},
            {"name": "unchanged.txt", "content": "same\n"},
        ]}),
    );
    assert_eq!(out["exitCode"], 0, "{out}");
    // The changed input is an artifact; the untouched input, the program and the links are not.
    assert_eq!(
        names(&out),
        ["data/out.csv", "input.txt", "plot.png"],
        "{out}"
    );
    assert_eq!(out["artifactsTruncated"], false);
    let printed: std::collections::HashMap<&str, &str> = out["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .collect();
    for a in out["artifacts"].as_array().unwrap() {
        let name = a["name"].as_str().unwrap();
        let url = a["url"].as_str().unwrap();
        let (status, headers, body) = fetch(url);
        assert_eq!(status, 200, "{url}: {headers}");
        assert_eq!(a["bytes"].as_u64(), Some(body.len() as u64), "{a}");
        assert_eq!(hex::encode(Sha256::digest(&body)), printed[name], "{name}");
        let mime = a["mimeType"].as_str().unwrap();
        assert!(
            headers
                .to_lowercase()
                .contains(&format!("content-type: {mime}")),
            "{headers}"
        );
        assert!(
            !String::from_utf8_lossy(&body).contains("root:x:0:0"),
            "{name}"
        );
    }
    let mimes: Vec<&str> = out["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["mimeType"].as_str().unwrap())
        .collect();
    assert_eq!(mimes, ["text/csv", "text/plain", "image/png"]);

    // Any change to a URL is refused: its job, its number, its name, its expiry, its signature.
    let url = out["artifacts"][2]["url"].as_str().unwrap();
    let other_job = uuid_like(&id);
    let (path, query) = url.split_once('?').unwrap();
    let expires = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("expires="))
        .unwrap();
    for bad in [
        url.replace(&id, &other_job),
        url.replace("/2/plot.png", "/1/plot.png"),
        url.replace("/2/plot.png", "/2/plot.jpg"),
        url.replace(
            &format!("expires={expires}"),
            &format!("expires={}0", expires),
        ),
        // The signature's last digit changed (to another digit whatever it was).
        format!(
            "{}{}",
            &url[..url.len() - 1],
            if url.ends_with('0') { '1' } else { '0' }
        ),
        path.to_string(),
    ] {
        let (status, _, body) = fetch(&bad);
        assert_eq!(status, 403, "{bad}: {}", String::from_utf8_lossy(&body));
    }
    // Another token cannot read the job's result, so never learns its URLs.
    let r = curl(
        "GET",
        &format!("{}/v1/jobs/{id}/output", s.base),
        Some("test-token-other"),
        None,
        "",
    );
    assert_eq!(r.status, 404, "{}", r.body);

    // The SSE stream has each artifact event after the output and before the result.
    let sse = Command::new("curl")
        .args([
            "-sN",
            "--max-time",
            "20",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
        ])
        .arg(format!("{}/v1/jobs/{id}/events", s.base))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&sse.stdout);
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    let first = events
        .iter()
        .position(|e| *e == "artifact")
        .expect("artifact events");
    let result = events
        .iter()
        .position(|e| *e == "result")
        .expect("a result");
    assert_eq!(
        events.iter().filter(|e| **e == "artifact").count(),
        3,
        "{events:?}"
    );
    assert!(
        events[..first].contains(&"stdout") && first < result,
        "{events:?}"
    );
}

/// Another job id of the same shape.
fn uuid_like(id: &str) -> String {
    let last = if id.ends_with('0') { '1' } else { '0' };
    format!("{}{last}", &id[..id.len() - 1])
}

#[test]
fn max_artifacts_and_max_artifact_bytes_cut_the_files_kept() {
    require_isolation!();
    let s = Server::start(&[]);
    let five = "for i in range(5):\n    open(f'f{i}.txt', 'w').write(str(i) * 10)\n";
    let (_, out) = collected(
        &s,
        json!({"language": "python", "limits": {"maxArtifacts": 2},
               "files": [{"name": "main.py", "content": five}]}),
    );
    assert_eq!(names(&out), ["f0.txt", "f1.txt"], "{out}");
    assert_eq!(out["artifactsTruncated"], true);

    // By bytes, in name order: a file that does not fit is left out, a smaller one after it
    // still comes.
    let sizes = "open('a.bin','wb').write(b'a'*60)\nopen('b.bin','wb').write(b'b'*60)\nopen('c.bin','wb').write(b'c'*30)\n";
    let (_, out) = collected(
        &s,
        json!({"language": "python", "limits": {"maxArtifactBytes": 100},
               "files": [{"name": "main.py", "content": sizes}]}),
    );
    assert_eq!(names(&out), ["a.bin", "c.bin"], "{out}");
    assert_eq!(out["artifactsTruncated"], true);

    // Past the workspace's own size nothing is kept whole either; a file over the limit is
    // dropped and said so.
    let (_, out) = collected(
        &s,
        json!({"language": "python", "limits": {"maxArtifactBytes": 1000},
               "files": [{"name": "main.py", "content": "open('big','wb').write(b'x'*5000)\n"}]}),
    );
    assert_eq!(names(&out), Vec::<String>::new(), "{out}");
    assert_eq!(out["artifactsTruncated"], true);

    // Without collectOutput nothing is kept; a compiler's output is not the run's.
    let c = "#include <stdio.h>\nint main(void){FILE*f=fopen(\"r.txt\",\"w\");fputs(\"c\",f);fclose(f);return 0;}\n";
    let (_, out) = collected(
        &s,
        json!({"language": "c", "files": [{"name": "main.c", "content": c}]}),
    );
    assert_eq!(names(&out), ["r.txt"], "{out}");
    // A limit of 0 is not a limit.
    let r = api(
        &s,
        "POST",
        "/v1/execute",
        Some(json!({"language": "python", "limits": {"maxArtifacts": 0},
                    "files": [{"name": "main.py", "content": ""}]})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn an_artifact_url_expires_with_its_result() {
    require_isolation!();
    let s = Server::start(&["--result-ttl-secs", "2"]);
    let (_, out) = collected(
        &s,
        json!({"language": "python", "files": [{"name": "main.py", "content": "open('a','w').write('a')\n"}]}),
    );
    let url = out["artifacts"][0]["url"].as_str().unwrap().to_string();
    assert_eq!(fetch(&url).0, 200);
    std::thread::sleep(Duration::from_millis(3100));
    let (status, _, body) = fetch(&url);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("expired"));
}

/// A stand-in OTLP collector: accepts `POST /v1/traces` and keeps the bodies.
fn collector() -> (String, std::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            let mut line = String::new();
            let mut path = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if path.is_empty() {
                    path = line.split(' ').nth(1).unwrap_or("").to_string();
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
            );
            if path == "/v1/traces" {
                let _ = tx.send(body);
            }
        }
    });
    (format!("http://{addr}"), rx)
}

#[test]
fn a_jobs_traceparent_reaches_its_logs_and_the_otlp_exporter() {
    require_isolation!();
    let (endpoint, bodies) = collector();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(crate::common::kiln_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            &format!("ci={TOKEN}"),
        ])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--otlp-endpoint", &endpoint])
        .env("KILN_LOG", "info")
        .env_remove("KILN_TOKENS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let base = loop {
        let line = lines
            .recv_timeout(deadline - Instant::now())
            .expect("kiln serve started");
        if let Some(addr) = line.strip_prefix("kiln serve: listening on ") {
            break addr.to_string();
        }
    };
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let out = Command::new("curl")
        .args(["-sS", "-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["-H", &format!("traceparent: 00-{trace}-{parent}-01")])
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(json!({"language": "python", "autoStart": true, "files": [{"name": "main.py", "content": "print(1)"}]}).to_string())
        .arg(format!("{base}/v1/execute"))
        .output()
        .unwrap();
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    // The job's log line names its trace.
    let logged = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a log line of the job");
        if line.contains(&id) && line.contains("job finished") {
            break line;
        }
    };
    assert!(
        logged.contains(trace) && logged.contains(parent),
        "{logged}"
    );
    // The exporter sends the job's span in the client's trace, the client's span its parent
    // (OTLP's protobuf carries both ids as raw bytes).
    let (trace_bytes, parent_bytes) = (hex::decode(trace).unwrap(), hex::decode(parent).unwrap());
    let mut seen = Vec::new();
    let found = loop {
        match bodies.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(body) => {
                let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
                if has(&trace_bytes) && has(&parent_bytes) && has(b"job") {
                    break true;
                }
                seen.push(body.len());
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        found,
        "no exported span of trace {trace}; bodies of {seen:?} bytes"
    );
}

#[test]
fn artifacts_past_the_tokens_output_storage_are_left_out() {
    require_isolation!();
    let data = tempfile::tempdir().unwrap();
    let conf = data.path().join("kiln.toml");
    std::fs::write(&conf, "token_output_storage_bytes = 100000\n").unwrap();
    let s = Server::start_in(data.path(), &["--config", conf.to_str().unwrap()]);
    let program = "open('a.bin','wb').write(b'a'*150000)\nopen('b.txt','w').write('small')\n";
    let (_, out) = collected(
        &s,
        json!({"language": "python", "limits": {"outputKb": 1},
               "files": [{"name": "main.py", "content": program}]}),
    );
    assert_eq!(names(&out), ["b.txt"], "{out}");
    assert_eq!(out["artifactsTruncated"], true);
}
