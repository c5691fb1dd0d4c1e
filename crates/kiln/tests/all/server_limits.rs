//! `kiln serve` under hostile load, end to end: half-open connections (item 1 of the hardening
//! pass), one token flooding the queue (item 2), output floods (item 3), a program writing one
//! byte at a time (the service core's bounded event log), and WebSocket subscribers that stop
//! reading (item 17). Each measures the server process itself: its fds and its memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::require_isolation;
use crate::server::{api, curl, open_fds, parallel_posts, rss_kib, Server, TOKEN};

/// The server's peak RSS since the last reset, in KiB (`VmHWM`).
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Starts a new peak-RSS measurement of `pid`.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

fn host_port(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

#[test]
fn item1_half_open_connections_are_closed_at_the_header_timeout_and_capped_per_address() {
    require_isolation!();
    // No pool: its sandboxes being made at start-up take the CPU that 500 connects need to
    // happen well within the header timeout on a 2-core machine.
    let s = Server::start(&[
        "--header-timeout-ms",
        "4000",
        "--max-connections-per-ip",
        "450",
        "--pool-size",
        "0",
    ]);
    let pid = s.child.id();
    assert_eq!(api(&s, "GET", "/v1/languages", None).status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let before = open_fds(pid);
    let addr = host_port(&s);
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = open_fds(pid);
    assert!(
        during <= before + 460,
        "{during} fds with 450 allowed per address (from {before})"
    );
    // Past the cap, at once: a JSON 429 and the door.
    let mut refused = 0;
    let mut timed_out = 0;
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 429") {
            assert!(answer.contains(r#""retryAfterMs":1000"#), "{answer}");
            refused += 1;
        } else if answer.starts_with("HTTP/1.1 408") {
            assert!(answer.contains(r#"{"error":"#), "{answer}");
            timed_out += 1;
        } else {
            panic!("unexpected answer {answer:?}");
        }
    }
    let elapsed = started.elapsed();
    assert_eq!((refused, timed_out), (50, 450));
    assert!(elapsed < Duration::from_secs(8), "closed after {elapsed:?}");
    drop(conns);
    std::thread::sleep(Duration::from_millis(300));
    let after = open_fds(pid);
    assert!(after <= before + 4, "fds {before} before, {after} after");
    // A malformed head gets the same JSON error shape, not an empty 400.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.ends_with(r#"{"error":"Malformed HTTP request"}"#),
        "{answer}"
    );
}

#[test]
fn item2_a_token_at_its_quota_is_refused_while_another_tokens_run_completes() {
    require_isolation!();
    let s = Server::start(&[
        "--capacity",
        "2",
        "--token-queue-depth",
        "10",
        "--token-awaiting-start",
        "10",
        "--token",
        "web=web-token",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(
        &body,
        json!({"language": "python", "files": [{"name": "main.py", "content": "print(1)"}]})
            .to_string(),
    )
    .unwrap();
    // 60 executes at once from one token, none of which will ever start.
    let out = parallel_posts(60)
        .args(["-o", "/dev/null"])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("{}/v1/execute?n=[1-60]", s.base))
        .output()
        .unwrap();
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    let accepted = codes.lines().filter(|c| *c == "202").count();
    let refused = codes.lines().filter(|c| *c == "429").count();
    assert_eq!((accepted, refused), (10, 50), "{codes}");
    // Its jobs wait for their start without holding the two run slots: another token runs now.
    let started = Instant::now();
    let r = curl(
        "POST",
        &format!("{}/v1/run", s.base),
        Some("web-token"),
        Some(&json!({"language": "python", "files": [{"name": "main.py", "content": "print('served')"}]}).to_string()),
        "application/json",
    );
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["stdout"], "served\n");
    assert!(
        took < Duration::from_secs(2),
        "the other token's run took {took:?}"
    );
}

/// Runs `n` copies of `body` through `POST /v1/run` at once; returns the answers' statuses and
/// the peak RSS of the server meanwhile.
fn parallel_runs(s: &Server, body: &Value, n: usize) -> (Vec<String>, Vec<Value>, u64) {
    let pid = s.child.id();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body.to_string()).unwrap();
    reset_peak(pid);
    let out = parallel_posts(n)
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg("-o")
        .arg(dir.path().join("r#1"))
        .arg(format!("{}/v1/run?n=[1-{n}]", s.base))
        .output()
        .unwrap();
    let peak = peak_kib(pid);
    let codes = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    let answers = (1..=n)
        .map(|i| {
            let text = std::fs::read(dir.path().join(format!("r{i}"))).unwrap();
            serde_json::from_slice(&text).unwrap_or(Value::Null)
        })
        .collect();
    (codes, answers, peak)
}

#[test]
fn item3_forty_output_floods_leave_the_servers_memory_under_its_bound() {
    require_isolation!();
    // The bound: the server's own memory, plus `output_memory_bytes` of events, plus the pieces
    // of the results being streamed (64 KiB each). With 32 MiB of events: under 160 MiB.
    let s = Server::start(&[
        "--output-memory-bytes",
        "33554432",
        "--token-queue-depth",
        "64",
    ]);
    let pid = s.child.id();
    let flood = "import sys\nchunk = b'x' * (1 << 20)\nfor _ in range(20):\n    sys.stdout.buffer.write(chunk)\n";
    let body = json!({"language": "python", "limits": {"outputKb": 16384, "wallTimeMs": 60000},
                      "files": [{"name": "main.py", "content": flood}]});
    let base = rss_kib(pid);
    let (codes, answers, peak) = parallel_runs(&s, &body, 40);
    assert!(codes.iter().all(|c| c == "200"), "{codes:?}");
    for a in &answers {
        assert_eq!(a["usage"]["status"], "output_limit", "{}", a["usage"]);
        assert_eq!(a["stdout"].as_str().unwrap().len(), 16 << 20);
        assert_eq!(a["truncated"], true);
    }
    eprintln!("server RSS {base} KiB before, peak {peak} KiB during 40 floods");
    assert!(peak < 160 * 1024, "server RSS peaked at {peak} KiB");
}

#[test]
fn one_byte_writes_keep_the_server_small_and_the_output_whole() {
    require_isolation!();
    let s = Server::start(&["--pool-size", "1"]);
    let program = "import sys\nout = sys.stdout\nfor i in range(400000):\n    out.write(str(i % 10))\n    out.flush()\n";
    let body = json!({"language": "python", "limits": {"wallTimeMs": 60000, "cpuMs": 60000},
                      "files": [{"name": "main.py", "content": program}]});
    // Settle the server, then measure its peak during the run alone.
    assert_eq!(api(&s, "GET", "/v1/languages", None).status, 200);
    std::thread::sleep(Duration::from_millis(500));
    let (codes, answers, peak) = parallel_runs(&s, &body, 1);
    assert_eq!(codes, ["200"]);
    let stdout = answers[0]["stdout"].as_str().unwrap();
    assert_eq!(stdout.len(), 400_000);
    assert_eq!(
        stdout,
        "0123456789".repeat(40_000),
        "the output came back out of order"
    );
    eprintln!("server peak RSS {peak} KiB during 400,000 one-byte writes");
    assert!(peak < 64 * 1024, "server RSS peaked at {peak} KiB");
    // The events were gathered: far fewer than one per write, still in order.
    let id = answers[0]["jobId"].as_str().unwrap();
    let sse = Command::new("curl")
        .args(["-sN", "-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("{}/v1/jobs/{id}/events", s.base))
        .args(["--max-time", "10"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&sse.stdout);
    let mut joined = String::new();
    let mut events = 0;
    let mut next_seq = 0;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == "event: stdout" {
            let data: Value =
                serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap())
                    .unwrap();
            assert_eq!(data["seq"], next_seq);
            next_seq += 1;
            joined.push_str(data["chunk"].as_str().unwrap());
            events += 1;
        }
    }
    assert_eq!(joined, stdout);
    assert!(events < 20_000, "{events} events for 400,000 writes");
}

const PUSHER_SECRET: &str = "stall-test-secret";

/// HMAC-SHA256 (RFC 2104), as the channel signature is made.
fn hmac_sha256_hex(key: &str, message: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key.as_bytes());
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    hex::encode(
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize(),
    )
}

/// A WebSocket client that subscribes to a channel and then never reads: the handshake and one
/// masked frame written by hand.
struct StalledSubscriber {
    _stream: TcpStream,
}

fn ws_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mut frame = vec![0x81];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    // A zero mask: valid, and the payload goes as it is.
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

impl StalledSubscriber {
    fn subscribe(s: &Server, job: &str) -> Self {
        let mut stream = TcpStream::connect(host_port(s)).unwrap();
        stream
            .write_all(
                b"GET /app/kiln-key?protocol=7&client=js&version=8.6.0 HTTP/1.1\r\nHost: x\r\n\
                  Upgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .unwrap();
        // The 101 answer, then the first frame (connection_established, short and unmasked).
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let mut hdr = [0u8; 2];
        stream.read_exact(&mut hdr).unwrap();
        let len = match hdr[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                stream.read_exact(&mut l).unwrap();
                u16::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).unwrap();
        let frame: Value = serde_json::from_slice(&payload).unwrap();
        let data: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
        let socket_id = data["socket_id"].as_str().unwrap();
        let channel = format!("private-run-{job}");
        let auth = format!(
            "kiln-key:{}",
            hmac_sha256_hex(PUSHER_SECRET, &format!("{socket_id}:{channel}"))
        );
        let subscribe =
            json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}});
        stream.write_all(&ws_frame(&subscribe.to_string())).unwrap();
        Self { _stream: stream }
    }
}

#[test]
fn item17_subscribers_that_stop_reading_leave_no_memory_behind() {
    require_isolation!();
    let s = Server::start(&["--pusher-app-secret", PUSHER_SECRET]);
    let pid = s.child.id();
    let flood = "import sys\nline = 'x' * 4095 + '\\n'\nfor _ in range(3000):\n    sys.stdout.write(line)\n";
    let flood_job = || {
        let r = api(
            &s,
            "POST",
            "/v1/execute",
            Some(
                json!({"language": "python", "limits": {"outputKb": 16384}, "collectOutput": true,
                         "files": [{"name": "main.py", "content": flood}]}),
            ),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        r.json()["jobId"].as_str().unwrap().to_string()
    };
    let run = |id: &str| {
        assert_eq!(
            api(&s, "POST", &format!("/v1/jobs/{id}/start"), None).status,
            202
        );
        crate::server::wait_state(&s, id, &["done"]);
        let out = api(&s, "GET", &format!("/v1/jobs/{id}/output"), None);
        assert_eq!(out.status, 200, "{}", out.body);
        out.json()
    };
    // The level: the server after the same flood with nobody watching.
    let warm = flood_job();
    run(&warm);
    std::thread::sleep(Duration::from_secs(6));
    let level = rss_kib(pid);
    for _round in 0..5 {
        let id = flood_job();
        let subscribers: Vec<StalledSubscriber> = (0..50)
            .map(|_| StalledSubscriber::subscribe(&s, &id))
            .collect();
        let result = run(&id);
        // The sockets that stopped reading held nothing up: the run ended on its own, whole.
        assert_eq!(result["exitCode"], 0, "{}", result["durationMs"]);
        assert_eq!(result["timedOut"], false, "{}", result["durationMs"]);
        assert_eq!(result["stdout"].as_str().unwrap().len(), 3000 * 4096);
        drop(subscribers);
    }
    // What the sockets held goes back to the system: the heap is trimmed every few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut now = rss_kib(pid);
    while now > level + 16 * 1024 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        now = rss_kib(pid);
    }
    assert!(
        now <= level + 16 * 1024,
        "server RSS {now} KiB after five rounds of stalled subscribers, {level} KiB before"
    );
}
