//! The Judge0 face's options against a real server, with curl: every catalog language under its
//! Judge0 id, `compiler_options`, `additional_files`, `callback_url` (with a retry), the root
//! listener, `/system_info` and `/statistics`; and the new languages under their Piston names.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use kiln_lang::corpus::Corpus;
use kiln_lang::Catalog;
use serde_json::{json, Value};

use crate::require_isolation;
use crate::server::{curl, Server, TOKEN};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: &Value) -> String {
    let s: String = v
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
}

/// A counter of the server's `/metrics`.
fn metric(s: &Server, line_start: &str) -> u64 {
    let r = curl("GET", &format!("{}/metrics", s.base), Some(TOKEN), None, "");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line_start} not in {}", r.body))
}

fn call(base: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let b = body.map(|b| b.to_string());
    let r = curl(
        method,
        &format!("{base}{path}"),
        Some(TOKEN),
        b.as_deref(),
        "application/json",
    );
    (r.status, r.json())
}

/// Polls a batch until every submission is over; their views.
fn await_batch(base: &str, tokens: &[String]) -> Vec<Value> {
    let path = format!(
        "/submissions/batch?tokens={}&base64_encoded=true&fields=token,language_id,status,stdout,stderr,compile_output",
        tokens.join(",")
    );
    for _ in 0..1200 {
        let (status, body) = call(base, "GET", &path, None);
        assert_eq!(status, 200, "{body}");
        let subs = body["submissions"].as_array().unwrap().clone();
        if subs
            .iter()
            .all(|s| s["status"]["id"].as_u64().unwrap_or(0) > 2)
        {
            return subs;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the batch did not finish in two minutes");
}

#[test]
fn every_language_answers_under_its_judge0_id() {
    require_isolation!();
    let s = Server::start(&["--pool-size", "1", "--sandbox-pool-size", "0"]);
    let base = format!("{}/judge0", s.base);
    let catalog = Catalog::embedded().unwrap();
    let mut subs = Vec::new();
    for d in catalog.available() {
        let lang = &d.language;
        let corpus = Corpus::embedded(&lang.name).unwrap().unwrap();
        let hello = &corpus.cases["hello"];
        let source = &hello.files[&lang.entry];
        // Every id of the language runs it (C's 48, 49 and 50 alike): take the last.
        let (id, name) = lang.compat.judge0.last().unwrap();
        subs.push((
            lang.name.clone(),
            *id,
            name.clone(),
            json!({"language_id": id, "source_code": b64(source.as_bytes()), "expected_output": b64(b"Hello, World!")}),
        ));
    }
    assert!(subs.len() >= 27 || std::env::var("KILN_REQUIRE_ISOLATION").is_err());
    let (status, languages) = call(&base, "GET", "/languages", None);
    assert_eq!(status, 200, "{languages}");
    for (kiln, id, name, _) in &subs {
        let listed = languages
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == *id)
            .unwrap_or_else(|| panic!("{kiln} (id {id}) is not listed: {languages}"));
        let prefix = name.split("{}").next().unwrap();
        assert!(
            listed["name"].as_str().unwrap().starts_with(prefix),
            "{listed}"
        );
    }
    for chunk in subs.chunks(20) {
        let batch: Vec<Value> = chunk.iter().map(|(_, _, _, b)| b.clone()).collect();
        let (status, body) = call(
            &base,
            "POST",
            "/submissions/batch?base64_encoded=true",
            Some(json!({ "submissions": batch })),
        );
        assert_eq!(status, 201, "{body}");
        let tokens: Vec<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["token"].as_str().unwrap().to_string())
            .collect();
        for (view, (kiln, id, _, _)) in await_batch(&base, &tokens).iter().zip(chunk) {
            assert_eq!(view["language_id"], *id, "{view}");
            assert_eq!(
                view["status"]["id"],
                3,
                "{kiln}: {view} stdout {:?} stderr {:?} compile {:?}",
                unb64(&view["stdout"]),
                unb64(&view["stderr"]),
                unb64(&view["compile_output"])
            );
            assert_eq!(unb64(&view["stdout"]), "Hello, World!\n", "{kiln}");
        }
    }

    // The new languages under their Piston names.
    let r = curl(
        "GET",
        &format!("{}/api/v2/runtimes", s.base),
        Some(TOKEN),
        None,
        "",
    );
    let runtimes = r.json();
    for name in [
        "csharp", "kotlin", "haskell", "pascal", "fortran", "ocaml", "elixir", "erlang", "scala",
        "nasm64", "clojure", "prolog",
    ] {
        assert!(
            runtimes
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["language"] == name),
            "{name} not in {runtimes}"
        );
    }
    let hello = |lang: &str| {
        let c = Corpus::embedded(lang).unwrap().unwrap();
        c.cases["hello"].files.values().next().unwrap().clone()
    };
    for (piston, kiln) in [
        ("nasm64", "nasm"),
        ("csharp", "csharp"),
        ("prolog", "prolog"),
    ] {
        let r = curl(
            "POST",
            &format!("{}/api/v2/execute", s.base),
            Some(TOKEN),
            Some(
                &json!({"language": piston, "version": "*", "files": [{"content": hello(kiln)}]})
                    .to_string(),
            ),
            "application/json",
        );
        let body = r.json();
        assert_eq!(r.status, 200, "{body}");
        assert_eq!(body["language"], piston, "{body}");
        assert_eq!(body["run"]["stdout"], "Hello, World!\n", "{body}");
    }
    assert_eq!(
        metric(&s, "kiln_compat_submissions_total{api=\"piston\"}"),
        3
    );
    assert_eq!(
        metric(&s, "kiln_compat_submissions_total{api=\"judge0\"}"),
        subs.len() as u64
    );
}

/// A receiver of one callback per connection: the first try is answered 503 (so the server must
/// try again), the next ones 200; each request's method, path and body go to the channel.
fn callback_receiver() -> (u16, mpsc::Receiver<(String, String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_string();
            let path = parts.next().unwrap_or_default().to_string();
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let answer = if n == 0 {
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            conn.write_all(answer.as_bytes()).unwrap();
            let _ = tx.send((method, path, String::from_utf8(body).unwrap()));
        }
    });
    (port, rx)
}

fn zip_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (name, text) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(text.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn judge0_options_callbacks_and_the_root_listener() {
    require_isolation!();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let judge0_listen = format!("127.0.0.1:{port}");
    let s = Server::start(&[
        "--pool-size",
        "1",
        "--sandbox-pool-size",
        "0",
        "--judge0-listen",
        &judge0_listen,
    ]);
    let base = format!("{}/judge0", s.base);

    // compiler_options reach the compiler (with Judge0's stripping of shell characters).
    let (status, body) = call(
        &base,
        "POST",
        "/submissions?wait=true",
        Some(
            json!({"language_id": 50, "source_code": "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", KILN_X); return 0; }", "compiler_options": "-DKILN_X=42;"}),
        ),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"]["id"], 3, "{body}");
    assert_eq!(body["stdout"], "42\n", "{body}");
    // A language whose compile command takes none refuses them.
    let (status, body) = call(
        &base,
        "POST",
        "/submissions",
        Some(json!({"language_id": 45, "source_code": "x", "compiler_options": "-g"})),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body,
        json!({"compiler_options": ["setting compiler options is not allowed for nasm"]})
    );

    // additional_files: a zip beside the source, which keeps its own content.
    let zip = zip_of(&[
        ("helper.py", "X = 'from the zip'\n"),
        ("data/in.txt", "a line\n"),
        ("main.py", "print('the zip must not replace the source')\n"),
    ]);
    let (status, body) = call(
        &base,
        "POST",
        "/submissions?wait=true&fields=status,stdout,stderr,additional_files",
        Some(json!({
            "language_id": 71,
            "source_code": "import helper\nprint(helper.X)\nprint(open('data/in.txt').read().strip())\n",
            "additional_files": b64(&zip),
        })),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"]["id"], 3, "{body}");
    assert_eq!(body["stdout"], "from the zip\na line\n", "{body}");
    assert_eq!(body["additional_files"], b64(&zip), "{body}");
    // More than max_extract_size inflated is refused (10240 KB by default).
    let big = "0".repeat(11 << 20);
    let (status, body) = call(
        &base,
        "POST",
        "/submissions",
        Some(
            json!({"language_id": 71, "source_code": "print(1)", "additional_files": b64(&zip_of(&[("big.txt", &big)]))}),
        ),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body,
        json!({"additional_files": ["extracts to more than 10240 KB"]})
    );

    // callback_url: a PUT of the default fields in base64, tried again after a 503.
    let (cb_port, received) = callback_receiver();
    let (status, body) = call(
        &base,
        "POST",
        "/submissions",
        Some(
            json!({"language_id": 71, "source_code": "print('called back')", "callback_url": format!("http://127.0.0.1:{cb_port}/hook?n=1")}),
        ),
    );
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let first = received.recv_timeout(Duration::from_secs(60)).unwrap();
    let second = received.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(first.0, "PUT");
    assert_eq!(first.1, "/hook?n=1");
    assert_eq!(first.2, second.2, "the retry sends the same body");
    let sent: Value = serde_json::from_str(&second.2).unwrap();
    assert_eq!(sent["token"], token.as_str());
    assert_eq!(sent["status"]["id"], 3, "{sent}");
    assert_eq!(unb64(&sent["stdout"]), "called back\n");
    assert!(
        received.recv_timeout(Duration::from_secs(2)).is_err(),
        "a 200 ends the callback"
    );

    // The root listener: Judge0's routes without the prefix, with the same tokens.
    let root = format!("http://{judge0_listen}");
    let (status, body) = call(&root, "GET", "/about", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "1.13.1");
    let (status, body) = call(
        &root,
        "POST",
        "/submissions/?wait=true",
        Some(json!({"language_id": 71, "source_code": "print(6 * 7)"})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["stdout"], "42\n", "{body}");
    let r = curl("GET", &format!("{root}/languages"), None, None, "");
    assert_eq!(r.status, 401, "{}", r.body);
    let (status, _) = call(&root, "GET", "/no/such/route", None);
    assert_eq!(status, 404);

    // system_info and statistics.
    let (status, info) = call(&base, "GET", "/system_info", None);
    assert_eq!(status, 200, "{info}");
    assert!(info["CPU(s)"].as_str().unwrap().parse::<u32>().unwrap() >= 1);
    assert!(info["Mem"].as_str().unwrap().contains("Gi"), "{info}");
    let (status, stats) = call(&base, "GET", "/statistics?invalidate_cache=true", None);
    assert_eq!(status, 200, "{stats}");
    // Four were admitted: the C one, the one with files, the one called back and the one through
    // the root listener (the refused ones are not submissions).
    assert_eq!(stats["submissions"]["total"], 4, "{stats}");
    assert_eq!(stats["submissions"]["today"], 4, "{stats}");
    assert_eq!(stats["statuses"][0]["status"]["id"], 3, "{stats}");
    assert!(
        stats["languages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["language"]["id"] == 71 && l["count"] == 3),
        "{stats}"
    );
    // Served from the cache until invalidated.
    call(
        &base,
        "POST",
        "/submissions",
        Some(json!({"language_id": 71, "source_code": "print(1)"})),
    );
    let (_, cached) = call(&base, "GET", "/statistics", None);
    assert_eq!(cached["submissions"]["total"], 4, "{cached}");
    let (_, fresh) = call(&base, "GET", "/statistics?invalidate_cache=true", None);
    assert_eq!(fresh["submissions"]["total"], 5, "{fresh}");

    // number_of_runs: the program runs that many times while it is Accepted, each a job.
    let jobs = |s: &Server| metric(s, "kiln_jobs_submitted_total");
    let before = jobs(&s);
    let (status, body) = call(
        &base,
        "POST",
        "/submissions?wait=true&fields=status,stdout,number_of_runs,time,memory",
        Some(json!({"language_id": 71, "source_code": "print('run')", "number_of_runs": 3})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"]["id"], 3, "{body}");
    assert_eq!(body["stdout"], "run\n", "{body}");
    assert_eq!(body["number_of_runs"], 3, "{body}");
    assert!(body["memory"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(jobs(&s) - before, 3);
    // The first run that is not Accepted is the last.
    let before = jobs(&s);
    let (status, body) = call(
        &base,
        "POST",
        "/submissions?wait=true",
        Some(
            json!({"language_id": 71, "source_code": "print('no')", "expected_output": "yes", "number_of_runs": 5}),
        ),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"]["id"], 4, "{body}");
    assert_eq!(jobs(&s) - before, 1);
    // Polled, a submission is Processing until its last run is over.
    let (status, body) = call(
        &base,
        "POST",
        "/submissions",
        Some(
            json!({"language_id": 71, "source_code": "import time\ntime.sleep(0.3)\nprint('slow')", "number_of_runs": 3}),
        ),
    );
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let mut seen_processing_after_first = false;
    let mut last = Value::Null;
    for _ in 0..600 {
        let (_, b) = call(
            &base,
            "GET",
            &format!("/submissions/{token}?fields=status"),
            None,
        );
        let id = b["status"]["id"].as_u64().unwrap();
        if id > 2 {
            last = b;
            break;
        }
        if id == 2 && jobs(&s) - before >= 3 {
            seen_processing_after_first = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(last["status"]["id"], 3, "{last}");
    assert!(
        seen_processing_after_first,
        "the later runs showed as Processing"
    );
    assert_eq!(jobs(&s) - before, 4);
    assert_eq!(
        metric(&s, "kiln_compat_submissions_total{api=\"judge0\"}"),
        5 + 3 + 1 + 3
    );
}
