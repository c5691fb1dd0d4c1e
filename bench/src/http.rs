//! `kiln serve` end to end on loopback, with python hello world: the latency of `POST /v1/run` and
//! of the execute → events → start → result flow, each next to a bare `python3 -c` and to
//! `run_program` in the bench's own engine (what the server adds), measured in the same loop; and
//! runs per second (see `http_throughput`).
//!
//! Every request goes over a keep-alive connection opened before the clock starts. Before each
//! timed case the server is left to become quiet (no run, destroy or refill under way), as the
//! latency section does with its own engine, so no case pays for the one before it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use kiln_engine::{Engine, LimitOverrides, SandboxShape, Status, StdinSource, Stream};
use kiln_lang::{Language, SourceFile};
use kiln_workload::{run_limits, run_program, Program};
use serde_json::{json, Value};

pub use crate::http_throughput::Rate;

use crate::client::{Conn, Events};
use crate::http_throughput as throughput;
use crate::kiln::Kiln;
use crate::serve::{children, Server};
use crate::stats::{finite, Samples};

/// `POST /v1/run` within this ratio of bare python (medians).
pub const TARGET_RUN: f64 = 1.3;
/// The execute → start → result flow within this ratio of bare python (medians). Its extra round
/// trips cost well under a millisecond on loopback, so it is held to the same ratio as `/v1/run`.
pub const TARGET_FLOW: f64 = 1.3;
/// The engine's runs per second within this ratio of the server's.
pub const TARGET_THROUGHPUT: f64 = 1.5;
/// Clients (server) and tasks (engine) in the throughput comparison, and the server's capacity.
pub const CONCURRENCY: usize = 8;
/// Longer than python's wall limit (10 s): a request that takes this long is stuck.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const BARE_PYTHON: [&str; 3] = ["/usr/bin/python3", "-c", "print('hello')"];
const SOURCE: &str = "print('hello')";
const HELLO: &str = "hello\n";

/// Everything the http section measured.
#[derive(Debug, Default)]
pub struct Http {
    pub pool_size: usize,
    pub runs: usize,
    /// `python3 -c "print('hello')"` spawned and waited on the host.
    pub bare: Samples,
    /// `run_program` in the bench's own engine (same pool size): everything but the server.
    pub engine: Samples,
    /// Its run stage's wall time, as the engine reports it (whole ms).
    pub engine_stage: Samples,
    /// `POST /v1/run`, request sent to whole response read.
    pub run: Samples,
    /// The run stage's wall time as the server reports it for those (whole ms): how much of the
    /// request was python itself.
    pub run_stage: Samples,
    /// `POST /v1/execute` sent to the `result` event read.
    pub flow: Samples,
    /// Its parts: the execute response; the events response's headers; start sent to result.
    pub flow_execute: Samples,
    pub flow_subscribe: Samples,
    pub flow_result: Samples,
    /// The run stage's wall time from the flow's `usage` event.
    pub flow_stage: Samples,
    pub http_rate: Rate,
    pub engine_rate: Rate,
    /// TCP connections the section opened: with keep-alive holding, 3 for the latency loop
    /// (requests, events, `/metrics` polls) and one per throughput client and round.
    pub connections: usize,
    /// Whether quiet was judged by `/metrics`' `kiln_pool_ready` (else by a stable sandbox count).
    pub pool_observable: bool,
}

impl Http {
    pub fn run_ratio(&self) -> f64 {
        self.run.median_ms() / self.bare.median_ms()
    }

    pub fn flow_ratio(&self) -> f64 {
        self.flow.median_ms() / self.bare.median_ms()
    }

    /// Engine runs per second over server runs per second.
    pub fn throughput_ratio(&self) -> f64 {
        self.engine_rate.per_sec() / self.http_rate.per_sec()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "pool_size": self.pool_size,
            "capacity": CONCURRENCY,
            "bare_python": self.bare.to_json(),
            "engine": self.engine.to_json(),
            "engine_stage_wall": self.engine_stage.to_json(),
            "run": self.run.to_json(),
            "run_stage_wall": self.run_stage.to_json(),
            "flow": self.flow.to_json(),
            "flow_split": {
                "execute": self.flow_execute.to_json(),
                "events_headers": self.flow_subscribe.to_json(),
                "start_to_result": self.flow_result.to_json(),
                "run_stage_wall": self.flow_stage.to_json(),
            },
            "throughput": {
                "concurrency": CONCURRENCY,
                "runs": self.runs,
                "http": self.http_rate.to_json(),
                "engine": self.engine_rate.to_json(),
            },
            "ratios": {
                "run_vs_bare": finite(self.run_ratio()),
                "run_vs_engine": finite(self.run.median_ms() / self.engine.median_ms()),
                "engine_vs_bare": finite(self.engine.median_ms() / self.bare.median_ms()),
                "flow_vs_bare": finite(self.flow_ratio()),
                "engine_vs_http_throughput": finite(self.throughput_ratio()),
            },
            "connections_opened": self.connections,
            "quiet_by_pool_metric": self.pool_observable,
        })
    }
}

/// Starts `kiln serve`, measures, and stops it (also when measuring failed).
pub async fn measure(
    kiln: &mut Kiln,
    kiln_exe: &Path,
    iterations: usize,
    runs: usize,
) -> Result<Http> {
    let python = python()?;
    kiln.settle().await?;
    let mut server = Server::start(kiln_exe, CONCURRENCY, kiln.pool_size)?;
    eprintln!("http: kiln serve listening on {}", server.addr);
    let measured = with_server(kiln, &mut server, &python, iterations, runs).await;
    let stopped = server.stop().await;
    let out = measured?;
    stopped?;
    Ok(out)
}

/// The python definition, from the catalog the server uses too.
fn python() -> Result<Language> {
    let catalog = kiln_lang::Catalog::embedded().context("load the language catalog")?;
    let lang = catalog.all().iter().find(|l| l.answers_to("python"));
    lang.cloned().context("no python in the language catalog")
}

pub(crate) fn hello_body() -> Bytes {
    let body = json!({"language": "python", "files": [{"name": "main.py", "content": SOURCE}]});
    Bytes::from(body.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Bare,
    Engine,
    Run,
    Flow,
}

async fn with_server(
    kiln: &mut Kiln,
    server: &mut Server,
    python: &Language,
    iterations: usize,
    runs: usize,
) -> Result<Http> {
    let mut out = Http {
        pool_size: kiln.pool_size,
        runs,
        ..Http::default()
    };
    let mut metrics = Conn::new(server.addr, &server.token)?;
    let mut ctl = Conn::new(server.addr, &server.token)?;
    let mut sse = Conn::new(server.addr, &server.token)?;
    let body = hello_body();
    let cases = [Case::Run, Case::Bare, Case::Flow, Case::Engine];
    let mut reported = Vec::new();
    let step = (iterations / 10).max(1);
    // Iteration 0 warms up (page cache, connections, the server's first jobs) and is not counted.
    for i in 0..=iterations {
        if i % step == 0 {
            eprintln!("http: latency iteration {i}/{iterations}");
        }
        for k in 0..cases.len() {
            let case = cases[(i + k) % cases.len()];
            server.wait_quiet(&mut metrics).await?;
            engine_quiet(kiln).await?;
            let one = async {
                match case {
                    Case::Bare => bare(),
                    Case::Engine => engine_hello(&kiln.engine, python).await,
                    Case::Run => post_run(&mut ctl, &body).await,
                    Case::Flow => flow(&mut ctl, &mut sse, &body).await,
                }
            };
            let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, one).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")),
            };
            match outcome {
                Ok(t) if i > 0 => out.record(case, &t),
                Ok(_) => {}
                Err(e) => {
                    // Whatever was half-read on them, the next case starts on fresh connections.
                    ctl.reset();
                    sse.reset();
                    if i > 0 {
                        out.slot(case).failures += 1;
                    }
                    if !reported.contains(&case) {
                        eprintln!("http: {case:?} failed: {e:#}");
                        reported.push(case);
                    }
                }
            }
        }
    }
    out.connections = ctl.opened + sse.opened;
    drop((ctl, sse));

    let (http_rate, engine_rate, opened) =
        throughput::measure(kiln, server, &mut metrics, python, runs).await?;
    out.http_rate = http_rate;
    out.engine_rate = engine_rate;
    out.connections += opened + metrics.opened;
    out.pool_observable = server.pool_observable == Some(true);
    Ok(out)
}

/// What one latency case measured.
#[derive(Debug, Default)]
struct Timing {
    total: Duration,
    /// The server-reported run stage wall time.
    stage: Option<Duration>,
    /// The flow's parts.
    execute: Duration,
    subscribe: Duration,
    result: Duration,
}

impl Http {
    fn slot(&mut self, case: Case) -> &mut Samples {
        match case {
            Case::Bare => &mut self.bare,
            Case::Engine => &mut self.engine,
            Case::Run => &mut self.run,
            Case::Flow => &mut self.flow,
        }
    }

    fn record(&mut self, case: Case, t: &Timing) {
        self.slot(case).push(t.total);
        match (case, t.stage) {
            (Case::Run, Some(stage)) => self.run_stage.push(stage),
            (Case::Engine, Some(stage)) => self.engine_stage.push(stage),
            (Case::Flow, Some(stage)) => self.flow_stage.push(stage),
            _ => {}
        }
        if case == Case::Flow {
            self.flow_execute.push(t.execute);
            self.flow_subscribe.push(t.subscribe);
            self.flow_result.push(t.result);
        }
    }
}

/// The bare side: spawn, wait, with pipes for the output as a sandbox's run has. Blocking, like a
/// plain server would do it; block_in_place leaves the runtime's other workers free.
fn bare() -> Result<Timing> {
    tokio::task::block_in_place(|| {
        let t = Instant::now();
        let out = Command::new(BARE_PYTHON[0])
            .args(&BARE_PYTHON[1..])
            .stdin(Stdio::null())
            .output()
            .context("spawn python3")?;
        let total = t.elapsed();
        ensure!(out.status.success(), "python3 exited with {}", out.status);
        check_stdout(&String::from_utf8_lossy(&out.stdout))?;
        Ok(Timing {
            total,
            ..Timing::default()
        })
    })
}

fn check_stdout(got: &str) -> Result<()> {
    ensure!(got == HELLO, "stdout {got:?}, expected {HELLO:?}");
    Ok(())
}

/// One `POST /v1/run`, checked: 200, exit code 0, stdout "hello\n".
async fn post_run(conn: &mut Conn, body: &Bytes) -> Result<Timing> {
    let t = Instant::now();
    let (status, v) = conn
        .json(Method::POST, "/v1/run", Some(body.clone()))
        .await?;
    let total = t.elapsed();
    check_run(status, &v)?;
    let wall = v["usage"]["wallMs"].as_u64().or(v["durationMs"].as_u64());
    Ok(Timing {
        total,
        stage: wall.map(Duration::from_millis),
        ..Timing::default()
    })
}

pub(crate) fn check_run(status: StatusCode, v: &Value) -> Result<()> {
    ensure!(status == StatusCode::OK, "/v1/run: {status} {v}");
    ensure!(
        v["exitCode"] == 0,
        "/v1/run: exit code {} ({v})",
        v["exitCode"]
    );
    check_stdout(v["stdout"].as_str().unwrap_or_default())
}

/// `POST /v1/execute` (waiting for its start), `GET /v1/jobs/{id}/events` and, once its headers
/// arrived, `POST /v1/jobs/{id}/start` while the events are read until `result`. Checked: the
/// stdout chunks make "hello\n" and the result's exit code is 0.
async fn flow(ctl: &mut Conn, sse: &mut Conn, body: &Bytes) -> Result<Timing> {
    let t0 = Instant::now();
    let (status, v) = ctl
        .json(Method::POST, "/v1/execute", Some(body.clone()))
        .await?;
    let execute = t0.elapsed();
    ensure!(status == StatusCode::ACCEPTED, "/v1/execute: {status} {v}");
    let id = v["jobId"].as_str().context("no jobId")?.to_string();
    let resp = sse
        .send(Method::GET, &format!("/v1/jobs/{id}/events"), None)
        .await?;
    let subscribe = t0.elapsed();
    ensure!(resp.status() == StatusCode::OK, "events: {}", resp.status());
    let mut events = Events::new(resp.into_body());
    let start_path = format!("/v1/jobs/{id}/start");
    let start = ctl.json(Method::POST, &start_path, None);
    let read = async {
        let mut stdout = String::new();
        let mut wall = None;
        while let Some(e) = events.next().await? {
            let data: Value = serde_json::from_str(&e.data)?;
            match e.name.as_str() {
                "stdout" => stdout.push_str(data["chunk"].as_str().unwrap_or_default()),
                "usage" => wall = data["wallMs"].as_u64(),
                "result" => return Ok((t0.elapsed(), stdout, wall, data)),
                _ => {}
            }
        }
        bail!("the event stream ended without a result")
    };
    let (started, read) = tokio::join!(start, read);
    let (status, v) = started?;
    ensure!(status == StatusCode::ACCEPTED, "start: {status} {v}");
    let (total, stdout, wall, result): (Duration, String, Option<u64>, Value) = read?;
    ensure!(result["exitCode"] == 0, "result: {result}");
    check_stdout(&stdout)?;
    // The stream ends after `result`; reading it to its end keeps the connection reusable.
    while events.next().await?.is_some() {}
    Ok(Timing {
        total,
        stage: wall.map(Duration::from_millis),
        execute,
        subscribe,
        result: total - subscribe,
    })
}

/// One timed `run_program` of the hello world.
async fn engine_hello(engine: &Engine, python: &Language) -> Result<Timing> {
    let t = Instant::now();
    let stage = engine_run(engine, python.clone()).await?;
    Ok(Timing {
        total: t.elapsed(),
        stage: Some(stage),
        ..Timing::default()
    })
}

/// `run_program` of the hello world, checked; returns the run stage's wall time.
pub(crate) async fn engine_run(engine: &Engine, python: Language) -> Result<Duration> {
    let limits = run_limits(&python, &LimitOverrides::default());
    let program = Program {
        language: python,
        files: vec![SourceFile {
            name: "main.py".into(),
            content: SOURCE.as_bytes().to_vec(),
        }],
        args: Vec::new(),
        compile_options: Vec::new(),
        stdin: StdinSource::Closed,
        limits,
        shape: SandboxShape::default(),
        capture: None,
    };
    let mut stdout = Vec::new();
    let mut sink = |s: Stream, c: &[u8]| {
        if s == Stream::Stdout {
            stdout.extend_from_slice(c);
        }
    };
    let result = run_program(engine, program, &mut sink, None).await?;
    let code = result.run.as_ref().and_then(|r| r.exit_code);
    ensure!(
        result.status == Status::Ok && code == Some(0),
        "{} (exit {code:?})",
        result.status.as_str()
    );
    check_stdout(&String::from_utf8_lossy(&stdout))?;
    let wall = result.run.as_ref().map_or(0, |r| r.wall_ms);
    Ok(Duration::from_millis(wall))
}

/// The bench's own engine, quiet by the same measure as the server: no destroy under way, the pool
/// full, and every sandbox this process owns a ready pooled one (no refill under way).
pub(crate) async fn engine_quiet(kiln: &mut Kiln) -> Result<()> {
    kiln.settle().await?;
    let t0 = Instant::now();
    loop {
        // The server is this process's child too; every other child is a sandbox's warden.
        let sandboxes = children(std::process::id())?.saturating_sub(1);
        let ready = kiln.engine.pool_ready();
        if sandboxes == ready && ready >= kiln.pool_size {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the engine not quiet within 60 s: {sandboxes} sandboxes, {ready} ready");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
