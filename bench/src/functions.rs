//! Function calls: a trivial python and a trivial JavaScript function called over HTTP
//! (`POST /v1/functions/call` on loopback, against `kiln serve` with its warm pool) and through
//! the CLI path (`kiln call`, a process per call that builds its own engine), next to bare
//! `python3 -c` and `node -e` of the same function in the same loop (the interpreters the
//! sandbox runs, `/usr/bin`'s, not a version manager's shims earlier in `PATH`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::Conn;
use crate::serve::Server;
use crate::stats::Samples;

/// One language's figures.
#[derive(Debug)]
pub struct LanguageCalls {
    pub name: &'static str,
    pub http: Samples,
    pub cli: Samples,
    pub bare: Samples,
}

/// What the section measured.
#[derive(Debug)]
pub struct FunctionBench {
    pub languages: Vec<LanguageCalls>,
}

struct Case {
    name: &'static str,
    language: &'static str,
    code: &'static str,
    file: &'static str,
    bare: [&'static str; 3],
}

const CASES: [Case; 2] = [
    Case {
        name: "python",
        language: "python",
        code: "def add(a, b):\n    return a + b\n",
        file: "add.py",
        bare: [
            "/usr/bin/python3",
            "-c",
            "import json\ndef add(a, b):\n    return a + b\nprint(json.dumps(add(2, 3)))",
        ],
    },
    Case {
        name: "javascript",
        language: "javascript",
        code: "function add(a, b) { return a + b; }\n",
        file: "add.js",
        bare: [
            "/usr/bin/node",
            "-e",
            "function add(a, b) { return a + b; }\nconsole.log(JSON.stringify(add(2, 3)))",
        ],
    },
];

pub async fn measure(kiln_exe: &Path, iterations: usize) -> Result<FunctionBench> {
    let mut server = Server::start(kiln_exe, 8, 0)?;
    let result = run(&mut server, kiln_exe, iterations).await;
    let stopped = server.stop().await;
    let r = result?;
    stopped?;
    Ok(r)
}

async fn run(server: &mut Server, kiln_exe: &Path, iterations: usize) -> Result<FunctionBench> {
    let mut conn = Conn::new(server.addr, &server.token)?;
    conn.connect().await?;
    let scratch = tempfile::tempdir().context("scratch dir")?;
    let mut languages = Vec::new();
    for case in &CASES {
        eprintln!("functions: {} × {iterations} (HTTP, CLI, bare)", case.name);
        let file = scratch.path().join(case.file);
        std::fs::write(&file, case.code).context("write the function's file")?;
        let body = json!({"language": case.language, "code": case.code,
                          "functionName": "add", "args": [2, 3]});
        let body = hyper::body::Bytes::from(body.to_string());
        let mut calls = LanguageCalls {
            name: case.name,
            http: Samples::default(),
            cli: Samples::default(),
            bare: Samples::default(),
        };
        // One untimed call of each: the first loads the interpreter's files into the page cache.
        let _ = conn
            .json(Method::POST, "/v1/functions/call", Some(body.clone()))
            .await?;
        for _ in 0..iterations {
            let t = Instant::now();
            let (status, v) = conn
                .json(Method::POST, "/v1/functions/call", Some(body.clone()))
                .await?;
            let took = t.elapsed();
            if status == StatusCode::OK && v["result"] == 5 {
                calls.http.push(took);
            } else {
                calls.http.failures += 1;
            }

            let t = Instant::now();
            let out = Command::new(kiln_exe)
                .args(["call"])
                .arg(&file)
                .args(["add", "2", "3"])
                .output();
            let took = t.elapsed();
            match out {
                Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "5" => {
                    calls.cli.push(took)
                }
                _ => calls.cli.failures += 1,
            }

            let t = Instant::now();
            let out = Command::new(case.bare[0]).args(&case.bare[1..]).output();
            let took = t.elapsed();
            match out {
                Ok(o) if o.status.success() => calls.bare.push(took),
                _ => calls.bare.failures += 1,
            }
        }
        languages.push(calls);
    }
    Ok(FunctionBench { languages })
}

impl FunctionBench {
    pub fn print(&self) {
        println!();
        println!(
            "{:<44} {:>5} {:>10} {:>10} {:>8}",
            "FUNCTION CALLS (add(2, 3))", "n", "median", "p99", "x bare"
        );
        for l in &self.languages {
            let bare = l.bare.median_ms();
            for (how, s) in [
                ("POST /v1/functions/call", &l.http),
                ("kiln call (CLI, own engine)", &l.cli),
                ("bare interpreter -c/-e", &l.bare),
            ] {
                println!(
                    "{:<44} {:>5} {:>8.2}ms {:>8.2}ms {:>7.2}x{}",
                    format!("{} {how}", l.name),
                    s.len(),
                    s.median_ms(),
                    s.percentile_ms(99.0),
                    s.median_ms() / bare,
                    if s.failures > 0 {
                        format!("  ({} failed)", s.failures)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }

    pub fn to_json(&self) -> Value {
        let langs: Vec<Value> = self
            .languages
            .iter()
            .map(|l| {
                json!({
                    "language": l.name,
                    "http": l.http.to_json(),
                    "http_p99_ms": l.http.percentile_ms(99.0),
                    "cli": l.cli.to_json(),
                    "bare": l.bare.to_json(),
                    "http_over_bare": l.http.median_ms() / l.bare.median_ms(),
                    "cli_over_bare": l.cli.median_ms() / l.bare.median_ms(),
                })
            })
            .collect();
        json!({ "languages": langs })
    }
}
