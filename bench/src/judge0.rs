//! Judge0's face against Kiln's own: submissions per second at concurrency 8 through
//! `POST /judge0/submissions?wait=true` (python `print(1)`, language 71) next to `POST /v1/run`
//! (the http section's python hello world), against one `kiln serve`, interleaved in rounds so
//! that both routes see the same machine. Each batch's clock runs until the server is quiet again
//! (pool refilled, destroys done), as in the http section's throughput, and every request's own
//! latency is kept too. Beside them, the figure published for Judge0 CE.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::client::Conn;
use crate::http::{check_run, hello_body, CONCURRENCY, REQUEST_TIMEOUT};
use crate::serve::Server;
use crate::stats::{finite, Samples};

/// Judge0's route, waiting for the finished submission.
const JUDGE0_PATH: &str = "/judge0/submissions?wait=true";
const RUN_PATH: &str = "/v1/run";
/// Rounds the submissions are split into, the routes taking turns at going first.
const ROUNDS: usize = 4;

/// The figure published for Judge0 CE, as `../shared/research/judges.md` gives it (§2.9, §7):
/// no benchmark in the repository; the one throughput-like data point is a user's report.
pub const PUBLISHED: &str = "no benchmark published; 20 hello-world submissions ≈13 s \
     (≈1.5 submissions/s, ≈650 ms each), a user's report (Judge0 issue 254)";

/// One route's figures.
#[derive(Debug, Default)]
pub struct Route {
    pub name: &'static str,
    /// Each successful submission's round trip.
    pub latency: Samples,
    /// Until the last submission of each batch returned and the server was quiet again.
    pub counted: Duration,
}

impl Route {
    pub fn per_sec(&self) -> f64 {
        self.latency.len() as f64 / self.counted.as_secs_f64()
    }

    fn to_json(&self) -> Value {
        json!({
            "route": self.name,
            "ok": self.latency.len(),
            "failures": self.latency.failures,
            "elapsed_s": self.counted.as_secs_f64(),
            "per_s": finite(self.per_sec()),
            "latency": self.latency.to_json(),
        })
    }
}

/// What the section measured.
#[derive(Debug)]
pub struct Judge0Bench {
    pub submissions: usize,
    pub concurrency: usize,
    pub pool_size: usize,
    pub judge0: Route,
    pub run: Route,
}

pub async fn measure(kiln_exe: &Path, submissions: usize, pool_size: usize) -> Result<Judge0Bench> {
    let mut server = Server::start(kiln_exe, CONCURRENCY, pool_size)?;
    eprintln!("judge0: kiln serve listening on {}", server.addr);
    let result = run(&mut server, submissions).await;
    let stopped = server.stop().await;
    let r = result?;
    stopped?;
    Ok(r)
}

async fn run(server: &mut Server, submissions: usize) -> Result<Judge0Bench> {
    let mut metrics = Conn::new(server.addr, &server.token)?;
    metrics.connect().await?;
    let judge0_body =
        Bytes::from(json!({"source_code": "print(1)", "language_id": 71}).to_string());
    let run_body = hello_body();
    // One untimed submission of each: the first loads python's files into the page cache.
    {
        let mut c = Conn::new(server.addr, &server.token)?;
        let (s, v) = c
            .json(Method::POST, JUDGE0_PATH, Some(judge0_body.clone()))
            .await?;
        check_judge0(s, &v).context("the untimed Judge0 submission")?;
        let (s, v) = c
            .json(Method::POST, RUN_PATH, Some(run_body.clone()))
            .await?;
        check_run(s, &v).context("the untimed /v1/run")?;
    }
    let mut judge0 = Route {
        name: "POST /judge0/submissions?wait=true",
        ..Route::default()
    };
    let mut run = Route {
        name: "POST /v1/run",
        ..Route::default()
    };
    let rounds = ROUNDS.min(submissions.max(1));
    for r in 0..rounds {
        let batch = submissions / rounds + usize::from(r < submissions % rounds);
        for judge0_side in [r % 2 == 0, r % 2 == 1] {
            server.wait_quiet(&mut metrics).await?;
            let (route, path, body, check): (&mut Route, _, _, Check) = if judge0_side {
                (&mut judge0, JUDGE0_PATH, judge0_body.clone(), check_judge0)
            } else {
                (&mut run, RUN_PATH, run_body.clone(), check_run)
            };
            eprintln!(
                "judge0: {} × {batch} at c={CONCURRENCY}, round {}/{rounds}",
                route.name,
                r + 1
            );
            let t = Instant::now();
            batch_of(server.addr, &server.token, path, body, check, batch, route).await?;
            server.wait_quiet(&mut metrics).await?;
            route.counted += t.elapsed();
        }
    }
    Ok(Judge0Bench {
        submissions,
        concurrency: CONCURRENCY,
        pool_size: server.pool_size,
        judge0,
        run,
    })
}

type Check = fn(StatusCode, &Value) -> Result<()>;

/// Judge0's answer to `print(1)` with `wait=true`: 201, status 3 (Accepted), stdout "1\n".
fn check_judge0(status: StatusCode, v: &Value) -> Result<()> {
    ensure!(status == StatusCode::CREATED, "judge0: {status} {v}");
    ensure!(
        v["status"]["id"] == 3,
        "judge0: status {} ({v})",
        v["status"]
    );
    ensure!(v["stdout"] == "1\n", "judge0: stdout {} ({v})", v["stdout"]);
    Ok(())
}

/// `n` requests from [`CONCURRENCY`] clients, each on its own keep-alive connection opened first,
/// each sending its next as soon as its last one was answered. A failed one is counted, not fatal.
async fn batch_of(
    addr: SocketAddr,
    token: &str,
    path: &'static str,
    body: Bytes,
    check: Check,
    n: usize,
    route: &mut Route,
) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let mut set = JoinSet::new();
    for _ in 0..CONCURRENCY {
        let mut conn = Conn::new(addr, token)?;
        conn.connect().await?;
        let (next, first_error, body) = (next.clone(), first_error.clone(), body.clone());
        set.spawn(async move {
            let (mut times, mut failures) = (Vec::new(), 0usize);
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                let sent = conn.json(Method::POST, path, Some(body.clone()));
                let err = match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
                    Ok(Ok((status, v))) => match check(status, &v) {
                        Ok(()) => {
                            times.push(t.elapsed());
                            continue;
                        }
                        Err(e) => format!("{e:#}"),
                    },
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(_) => {
                        conn.reset();
                        format!("no answer within {REQUEST_TIMEOUT:?}")
                    }
                };
                failures += 1;
                first_error.lock().expect("error lock").get_or_insert(err);
            }
            (times, failures)
        });
    }
    while let Some(joined) = set.join_next().await {
        let (times, failures) = joined.context("judge0 task")?;
        for t in times {
            route.latency.push(t);
        }
        route.latency.failures += failures;
    }
    if let Some(e) = first_error.lock().expect("error lock").take() {
        eprintln!("judge0: {} failed: {e}", route.name);
    }
    Ok(())
}

impl Judge0Bench {
    /// Judge0's route over `/v1/run`, submissions per second.
    pub fn ratio(&self) -> f64 {
        self.judge0.per_sec() / self.run.per_sec()
    }

    pub fn print(&self) {
        println!();
        println!(
            "{:<40} {:>5} {:>10} {:>10} {:>10} {:>8}",
            format!("JUDGE0 ROUTE (python, c={})", self.concurrency),
            "n",
            "per s",
            "p50",
            "p99",
            "failed"
        );
        for r in [&self.judge0, &self.run] {
            println!(
                "{:<40} {:>5} {:>10.1} {:>8.2}ms {:>8.2}ms {:>8}",
                r.name,
                r.latency.len(),
                r.per_sec(),
                r.latency.median_ms(),
                r.latency.percentile_ms(99.0),
                r.latency.failures
            );
        }
        println!(
            "judge0 route / /v1/run: {:.2}x per second, {:.2}x p50",
            self.ratio(),
            self.judge0.latency.median_ms() / self.run.latency.median_ms()
        );
        println!("published Judge0 CE: {PUBLISHED}");
    }

    pub fn to_json(&self) -> Value {
        json!({
            "submissions_per_route": self.submissions,
            "concurrency": self.concurrency,
            "pool_size": self.pool_size,
            "rounds": ROUNDS.min(self.submissions.max(1)),
            "judge0": self.judge0.to_json(),
            "run": self.run.to_json(),
            "judge0_over_run_per_s": finite(self.ratio()),
            "judge0_over_run_p50": finite(
                self.judge0.latency.median_ms() / self.run.latency.median_ms()
            ),
            "published_judge0_ce": PUBLISHED,
        })
    }
}
