//! `kiln serve` end to end, with curl as the client: the code-runner routes, the start handshake,
//! live SSE events, the error paths (none of them a 5xx), capacity, and restart recovery.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::kiln_bin;
use crate::require_isolation;

pub const TOKEN: &str = "test-token-123";

/// A `kiln serve` child on a free port, stopped on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    _data: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut s = Self::start_in(data.path(), extra);
        s._data = Some(data);
        s
    }

    pub fn start_in(data: &std::path::Path, extra: &[&str]) -> Self {
        let mut child = Command::new(kiln_bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--token",
                &format!("ci={TOKEN}"),
            ])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env_remove("KILN_TOKENS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = loop {
            assert!(Instant::now() < deadline, "kiln serve did not start");
            let line = lines.next().expect("kiln serve exited").unwrap();
            if let Some(addr) = line.strip_prefix("kiln serve: listening on ") {
                break addr.to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            base,
            _data: None,
        }
    }

    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// curl's answer: status and body.
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request with curl. `body` is sent as JSON unless `content_type` says otherwise.
pub fn curl(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
    content_type: &str,
) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", "-D"])
        .arg(&headers)
        .arg(url);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        let file = dir.path().join("body");
        std::fs::write(&file, b).unwrap();
        cmd.args([
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()));
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Reply {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        headers: std::fs::read_to_string(headers).unwrap_or_default(),
    }
}

pub fn api(s: &Server, method: &str, path: &str, body: Option<Value>) -> Reply {
    let b = body.map(|b| b.to_string());
    curl(
        method,
        &format!("{}{path}", s.base),
        Some(TOKEN),
        b.as_deref(),
        "application/json",
    )
}

pub fn wait_state(s: &Server, id: &str, want: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = api(s, "GET", &format!("/v1/jobs/{id}"), None).json();
        if want.contains(&st["state"].as_str().unwrap_or("")) {
            return st;
        }
        assert!(Instant::now() < deadline, "job {id} stuck in {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_job_api_end_to_end() {
    require_isolation!();
    let s = Server::start(&[]);
    let health = curl("GET", &format!("{}/health", s.base), None, None, "");
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );
    let unauth = curl(
        "GET",
        &format!("{}/v1/languages", s.base),
        Some("wrong"),
        None,
        "",
    );
    assert_eq!(
        (unauth.status, unauth.json()),
        (401, json!({"error": "unauthorized"}))
    );
    let langs = api(&s, "GET", "/v1/languages", None).json();
    assert!(langs
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["language"] == "python"));

    let r = api(
        &s,
        "POST",
        "/v1/execute",
        Some(
            json!({"language": "py", "files": [{"name": "main.py", "content": "name = input()\nprint('hi', name)"}], "collectOutput": true}),
        ),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let job = r.json();
    let id = job["jobId"].as_str().unwrap().to_string();
    assert_eq!(job["channel"], format!("private-run-{id}"));
    assert_eq!(job["status"], "queued");
    // The job waits for its start.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(wait_state(&s, &id, &["queued"])["state"], "queued");
    // Follow the events over SSE while driving the job.
    let sse = Command::new("curl")
        .args(["-sN", "-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("{}/v1/jobs/{id}/events", s.base))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(
        api(&s, "POST", &format!("/v1/jobs/{id}/start"), None).status,
        202
    );
    assert_eq!(
        api(
            &s,
            "POST",
            &format!("/v1/jobs/{id}/stdin"),
            Some(json!({"chunk": "world\n"}))
        )
        .json(),
        json!({"ok": true})
    );
    assert_eq!(
        api(&s, "POST", &format!("/v1/jobs/{id}/stdin/close"), None).status,
        200
    );
    let done = wait_state(&s, &id, &["done", "error", "killed"]);
    assert_eq!(done["state"], "done", "{done}");
    let out = api(&s, "GET", &format!("/v1/jobs/{id}/output"), None).json();
    assert_eq!(out["stdout"], "hi world\n");
    assert_eq!(out["exitCode"], 0);
    assert_eq!(out["artifacts"], json!([]));
    let events = String::from_utf8(sse.wait_with_output().unwrap().stdout).unwrap();
    let names: Vec<&str> = events
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    // stage queued, stage running, the output (in as many chunks as it was written), usage, result.
    let n = names.len();
    assert!(n >= 5, "{events}");
    assert_eq!(names[..2], ["stage", "stage"], "{events}");
    assert!(names[2..n - 2].iter().all(|e| *e == "stdout"), "{events}");
    assert_eq!(names[n - 2..], ["usage", "result"], "{events}");
    let mut chunks: Vec<(u64, String)> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.get("seq").is_some())
        .map(|v| {
            (
                v["seq"].as_u64().unwrap(),
                v["chunk"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    chunks.sort();
    assert_eq!(
        chunks.iter().map(|c| c.1.as_str()).collect::<String>(),
        "hi world\n"
    );
    assert!(
        chunks.iter().enumerate().all(|(i, c)| c.0 == i as u64),
        "{chunks:?}"
    );
    assert!(events.contains(r#""status":"ok""#), "{events}");
}

#[test]
fn every_error_path_is_a_4xx_with_a_reason() {
    require_isolation!();
    let s = Server::start(&[]);
    let url = format!("{}/v1/execute", s.base);
    let bad_json = curl(
        "POST",
        &url,
        Some(TOKEN),
        Some("{not json"),
        "application/json",
    );
    assert_eq!(bad_json.status, 400);
    assert!(bad_json.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("Invalid JSON body"));
    let wrong_type = curl(
        "POST",
        &url,
        Some(TOKEN),
        Some("language=python"),
        "text/plain",
    );
    assert_eq!(wrong_type.status, 415);
    for (name, why) in [
        ("/etc/passwd", "relative"),
        ("../up.py", ".."),
        ("a\u{0}b.py", "NUL"),
        (&"x".repeat(300) as &str, "at most 255"),
    ] {
        let r = api(
            &s,
            "POST",
            "/v1/execute",
            Some(json!({"language": "python", "files": [{"name": name, "content": "1"}]})),
        );
        assert_eq!(r.status, 400, "{name:?}");
        let body = r.json();
        assert_eq!(body["error"], "Validation error");
        assert_eq!(body["details"][0]["path"], "files.0.name");
        assert!(
            body["details"][0]["message"]
                .as_str()
                .unwrap()
                .contains(why),
            "{body}"
        );
    }
    let r = api(
        &s,
        "POST",
        "/v1/execute",
        Some(json!({"language": "cobol", "files": [{"name": "a", "content": "1"}]})),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (
            400,
            json!("Unknown language \"cobol\". Check GET /v1/languages.")
        )
    );
    let r = api(
        &s,
        "POST",
        "/v1/execute",
        Some(
            json!({"language": "python", "version": "2.7", "files": [{"name": "a", "content": "1"}]}),
        ),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (
            400,
            json!("Unknown version \"2.7\" for language \"python\". Check GET /v1/languages.")
        )
    );
    let big = "x".repeat(9 << 20);
    let r = api(
        &s,
        "POST",
        "/v1/execute",
        Some(json!({"language": "python", "files": [{"name": "a", "content": big}]})),
    );
    assert_eq!(r.status, 413, "{}", r.body);
    let r = api(&s, "GET", "/v1/jobs/nope", None);
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "Job not found: nope"}))
    );
    let r = api(
        &s,
        "POST",
        "/v1/channel-auth",
        Some(json!({"socket_id": "1.2", "channel_name": "private-other"})),
    );
    assert_eq!(r.status, 403);
}

#[test]
fn capacity_and_stdin_caps_answer_429() {
    require_isolation!();
    let s = Server::start(&["--capacity", "1", "--queue-depth", "1"]);
    let exec = || {
        api(
            &s,
            "POST",
            "/v1/execute",
            Some(
                json!({"language": "python", "files": [{"name": "main.py", "content": "import sys\nsys.stdin.read()"}]}),
            ),
        )
    };
    let first = exec();
    assert_eq!(first.status, 202);
    let id = first.json()["jobId"].as_str().unwrap().to_string();
    // The worker claims the first job; one more fits in the queue; the next is refused.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(exec().status, 202);
    let refused = exec();
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.json()["retryAfterMs"], 1000);
    assert!(
        refused
            .headers
            .to_ascii_lowercase()
            .contains("retry-after: 1"),
        "{}",
        refused.headers
    );
    // Stdin: more than 30 frames in a second, sent by one curl in parallel.
    let url = format!("{}/v1/jobs/{id}/stdin", s.base);
    let out = parallel_posts(50)
        .args(["-d", r#"{"chunk":"x"}"#])
        .args(std::iter::repeat_n(url.as_str(), 45))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let limited: Vec<&str> = text.lines().filter(|l| l.ends_with("429")).collect();
    let accepted = text.lines().filter(|l| l.ends_with("200")).count();
    assert!(!limited.is_empty() && accepted <= 30, "{text}");
    assert!(
        text.contains(r#"{"error":"Too many stdin frames","retryAfterMs":1000}"#),
        "{text}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    // Stdin: more than 64 KiB pending (the job has not started, so nothing drains).
    let big = "y".repeat(40 << 10);
    assert_eq!(
        api(
            &s,
            "POST",
            &format!("/v1/jobs/{id}/stdin"),
            Some(json!({"chunk": big}))
        )
        .status,
        200
    );
    let over = api(
        &s,
        "POST",
        &format!("/v1/jobs/{id}/stdin"),
        Some(json!({"chunk": big})),
    );
    assert_eq!(over.status, 429);
    assert_eq!(over.json()["capBytes"], 65536);
    assert_eq!(
        api(&s, "POST", &format!("/v1/jobs/{id}/kill"), None).status,
        200
    );
    assert_eq!(
        wait_state(&s, &id, &["killed", "done", "error"])["state"],
        "killed"
    );
}

#[test]
fn a_restarted_server_leaves_no_job_running() {
    require_isolation!();
    let data = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(data.path(), &["--capacity", "2"]);
    let submit = |auto: bool| {
        let r = api(
            &s,
            "POST",
            "/v1/execute",
            Some(
                json!({"language": "python", "autoStart": auto, "collectOutput": true,
                        "files": [{"name": "main.py", "content": "import time\ntime.sleep(30)"}]}),
            ),
        );
        r.json()["jobId"].as_str().unwrap().to_string()
    };
    // Two running, one waiting for its start in the queue, one finished.
    let running: Vec<String> = (0..2).map(|_| submit(true)).collect();
    for id in &running {
        wait_state(&s, id, &["running"]);
    }
    let queued = submit(false);
    let before = api(&s, "GET", &format!("/v1/jobs/{queued}"), None).json();
    assert_eq!(before["state"], "queued");
    s.kill_hard();
    let s = Server::start_in(data.path(), &[]);
    for id in running.iter().chain([&queued]) {
        let st = api(&s, "GET", &format!("/v1/jobs/{id}"), None).json();
        assert_eq!(st["state"], "error", "{st}");
    }
    // And the restarted server works.
    let done = api(
        &s,
        "POST",
        "/v1/run",
        Some(json!({"language": "python", "files": [{"name": "main.py", "content": "print(2)"}]})),
    );
    assert_eq!(done.json()["stdout"], "2\n");
}

/// One curl making up to `max` authenticated JSON POSTs at once, printing each status on a line.
pub fn parallel_posts(max: usize) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-Z", "--parallel-max", &max.to_string(), "-X", "POST"])
        .args(["-w", "%{http_code}\n"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["-H", "Content-Type: application/json"]);
    cmd
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The server's instance cgroup: the directory it holds open (and locked) under Kiln's parent.
pub fn instance_dir(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .find(|target| {
            target.starts_with("/sys/fs/cgroup")
                && target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('i'))
                && target.parent().is_some_and(|p| p.ends_with("kiln"))
        })
}

/// Sandbox cgroups of the server: the groups in its instance cgroup.
pub fn sandbox_cgroups(pid: u32) -> usize {
    let dir = instance_dir(pid).expect("the server holds its instance cgroup");
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir() && e.file_name().to_string_lossy().starts_with('s'))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn three_hundred_concurrent_executes_against_a_capacity_of_eight() {
    require_isolation!();
    // One token sends all 300: its own quota (64 by default) must not be what refuses them.
    let s = Server::start(&[
        "--capacity",
        "8",
        "--queue-depth",
        "200",
        "--token-queue-depth",
        "300",
        "--pool-size",
        "4",
    ]);
    let pid = s.child.id();
    // Warm the server up once so its steady fds (pool, store) are counted before.
    let warm = api(
        &s,
        "POST",
        "/v1/run",
        Some(json!({"language": "python", "files": [{"name": "main.py", "content": "print(1)"}]})),
    );
    assert_eq!(warm.status, 200, "{}", warm.body);
    std::thread::sleep(Duration::from_millis(500));
    let fds_before = open_fds(pid);
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(
        &body,
        json!({"language": "python", "autoStart": true, "collectOutput": true,
               "files": [{"name": "main.py", "content": "import os\nprint('job', os.getpid())"}]})
        .to_string(),
    )
    .unwrap();
    // One curl, 300 transfers at once, each answer in its own file.
    let url = format!("{}/v1/execute?n=[1-300]", s.base);
    let out = parallel_posts(300)
        .arg("--parallel-immediate")
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg("-o")
        .arg(dir.path().join("r#1"))
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let codes: Vec<&str> = text.lines().collect();
    assert_eq!(codes.len(), 300, "{text}");
    assert!(
        codes.iter().all(|c| *c == "202" || *c == "429"),
        "{codes:?}"
    );
    let mut ids = Vec::new();
    for n in 1..=300 {
        let answer = std::fs::read_to_string(dir.path().join(format!("r{n}"))).unwrap();
        let v: Value = serde_json::from_str(&answer).unwrap();
        match v["jobId"].as_str() {
            Some(id) => ids.push(id.to_string()),
            None => assert_eq!(v["retryAfterMs"], 1000, "{v}"),
        }
    }
    let refused = codes.iter().filter(|c| **c == "429").count();
    assert_eq!(ids.len() + refused, 300);
    assert!(refused > 0, "the queue of 200 should overflow");
    assert!(ids.len() >= 200, "only {} accepted", ids.len());
    let mut peak_rss = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    for id in &ids {
        loop {
            let st = api(&s, "GET", &format!("/v1/jobs/{id}"), None).json();
            peak_rss = peak_rss.max(rss_kib(pid));
            if st["state"] == "done" {
                break;
            }
            assert!(
                !st["state"].as_str().unwrap().is_empty()
                    && st["state"] != "error"
                    && st["state"] != "killed",
                "{st}"
            );
            assert!(Instant::now() < deadline, "job {id} stuck: {st}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = api(&s, "GET", &format!("/v1/jobs/{id}/output"), None).json();
        assert_eq!(out["exitCode"], 0, "{out}");
        assert!(out["stdout"].as_str().unwrap().starts_with("job "), "{out}");
    }
    std::thread::sleep(Duration::from_secs(1));
    let fds_after = open_fds(pid);
    assert!(
        fds_after <= fds_before + 8,
        "fds {fds_before} before, {fds_after} after"
    );
    let cgroups = sandbox_cgroups(pid);
    assert!(cgroups <= 6, "{cgroups} sandbox cgroups left (pool of 4)");
    assert!(peak_rss < 256 * 1024, "server RSS peaked at {peak_rss} KiB");
}
