//! Runs per second of python hello world at concurrency 8: `POST /v1/run` from 8 clients, each on
//! its own keep-alive connection, next to the engine alone (`run_program` from 8 tasks, same pool
//! size). Each side's clock runs until it is quiet again (pool refilled, destroys done), so a batch
//! that starts with a full pool does not count that head start as capacity.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hyper::Method;
use kiln_engine::Engine;
use kiln_lang::Language;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::client::Conn;
use crate::http::{check_run, engine_quiet, engine_run, hello_body, CONCURRENCY, REQUEST_TIMEOUT};
use crate::kiln::Kiln;
use crate::serve::Server;
use crate::stats::finite;

/// Runs per second of one side of the throughput comparison.
#[derive(Debug, Default, Clone)]
pub struct Rate {
    /// Runs that succeeded (the rate counts only these).
    pub runs: usize,
    pub failures: usize,
    /// Until the side was quiet again (its pool refilled, its destroys done).
    pub counted: Duration,
    /// Until the last run returned.
    pub runs_only: Duration,
}

impl Rate {
    pub fn per_sec(&self) -> f64 {
        self.runs as f64 / self.counted.as_secs_f64()
    }

    pub fn runs_only_per_sec(&self) -> f64 {
        self.runs as f64 / self.runs_only.as_secs_f64()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "runs": self.runs,
            "failures": self.failures,
            "elapsed_s": self.counted.as_secs_f64(),
            "runs_per_s": finite(self.per_sec()),
            "elapsed_runs_only_s": self.runs_only.as_secs_f64(),
            "runs_only_per_s": finite(self.runs_only_per_sec()),
        })
    }

    fn add(&mut self, batch: &Rate, counted: Duration) {
        self.runs += batch.runs;
        self.failures += batch.failures;
        self.runs_only += batch.runs_only;
        self.counted += counted;
    }
}

/// Both sides, `runs` runs each; returns the server's rate, the engine's and the connections
/// opened.
pub async fn measure(
    kiln: &mut Kiln,
    server: &mut Server,
    metrics: &mut Conn,
    python: &Language,
    runs: usize,
) -> Result<(Rate, Rate, usize)> {
    let (mut http_rate, mut engine_rate, mut connections) = (Rate::default(), Rate::default(), 0);
    // Two rounds, the sides in turn (server first, then engine first), so that neither always
    // runs on a machine the other just warmed or tired.
    let rounds = 2.min(runs.max(1));
    for r in 0..rounds {
        let batch = runs / rounds + usize::from(r < runs % rounds);
        for http_side in [r % 2 == 0, r % 2 == 1] {
            server.wait_quiet(metrics).await?;
            engine_quiet(kiln).await?;
            if http_side {
                eprintln!("http: throughput via kiln serve, round {}/{rounds}", r + 1);
                let (rate, opened) = http_batch(server.addr, &server.token, batch).await?;
                let t = Instant::now();
                server.wait_quiet(metrics).await?;
                http_rate.add(&rate, rate.runs_only + t.elapsed());
                connections += opened;
            } else {
                eprintln!(
                    "http: throughput via the engine alone, round {}/{rounds}",
                    r + 1
                );
                let rate = engine_batch(&kiln.engine, python, batch).await?;
                let t = Instant::now();
                engine_quiet(kiln).await?;
                engine_rate.add(&rate, rate.runs_only + t.elapsed());
            }
        }
    }
    Ok((http_rate, engine_rate, connections))
}

/// `runs` `POST /v1/run` from [`CONCURRENCY`] clients, each on its own connection opened first.
/// Returns the rate (without waiting for the server to become quiet) and the connections opened.
async fn http_batch(addr: std::net::SocketAddr, token: &str, runs: usize) -> Result<(Rate, usize)> {
    let mut conns = Vec::new();
    for _ in 0..CONCURRENCY {
        let mut c = Conn::new(addr, token)?;
        c.connect().await?;
        conns.push(c);
    }
    let body = hello_body();
    drive(runs, conns, move |mut conn: Conn| {
        let body = body.clone();
        async move {
            let ran = match conn.json(Method::POST, "/v1/run", Some(body)).await {
                Ok((status, v)) => check_run(status, &v),
                Err(e) => Err(e),
            };
            (conn, ran)
        }
    })
    .await
}

/// `runs` `run_program` calls of the same hello world from [`CONCURRENCY`] tasks.
async fn engine_batch(engine: &Engine, python: &Language, runs: usize) -> Result<Rate> {
    let (engine, python) = (engine.clone(), python.clone());
    let slots = (0..CONCURRENCY).map(|_| ()).collect();
    let (rate, _) = drive(runs, slots, move |()| {
        let (engine, python) = (engine.clone(), python.clone());
        async move { ((), engine_run(&engine, python).await.map(|_| ())) }
    })
    .await?;
    Ok(rate)
}

/// Runs `f` `runs` times from one task per slot (a connection, or nothing), each starting its next
/// run as soon as its last one ended. A failed run is counted, not fatal. Returns the rate, with
/// `counted` left for the caller, and the connections the slots opened.
async fn drive<S, F, Fut>(runs: usize, slots: Vec<S>, f: F) -> Result<(Rate, usize)>
where
    S: Opened + Send + 'static,
    F: Fn(S) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (S, Result<()>)> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let mut set = JoinSet::new();
    let t0 = Instant::now();
    for mut slot in slots {
        let (f, next, failed, first_error) =
            (f.clone(), next.clone(), failed.clone(), first_error.clone());
        set.spawn(async move {
            // The slot travels into each run and back out, with a fresh one standing in.
            let mut opened = 0;
            while next.fetch_add(1, Ordering::Relaxed) < runs {
                let stand_in = slot.fresh();
                let taken = std::mem::replace(&mut slot, stand_in);
                let err = match tokio::time::timeout(REQUEST_TIMEOUT, f(taken)).await {
                    Ok((back, Ok(()))) => {
                        slot = back;
                        continue;
                    }
                    // `slot` is already a fresh one: a failed run may have left its connection
                    // half-read. (One that timed out is gone, uncounted.)
                    Ok((back, Err(e))) => {
                        opened += back.opened();
                        format!("{e:#}")
                    }
                    Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
                };
                failed.fetch_add(1, Ordering::Relaxed);
                first_error.lock().expect("error lock").get_or_insert(err);
            }
            opened + slot.opened()
        });
    }
    let mut opened = 0;
    while let Some(joined) = set.join_next().await {
        opened += joined.context("throughput task")?;
    }
    let runs_only = t0.elapsed();
    if let Some(e) = first_error.lock().expect("error lock").take() {
        eprintln!("http: throughput run failed: {e}");
    }
    let failures = failed.load(Ordering::Relaxed);
    let rate = Rate {
        runs: runs - failures.min(runs),
        failures,
        counted: Duration::ZERO,
        runs_only,
    };
    Ok((rate, opened))
}

/// What a throughput task holds between its runs.
trait Opened: Sized {
    /// Connections opened so far.
    fn opened(&self) -> usize;
    /// A new one like `self`, unconnected: for after a failed run, which may have left a
    /// connection half-read.
    fn fresh(&self) -> Self;
}

impl Opened for Conn {
    fn opened(&self) -> usize {
        self.opened
    }
    fn fresh(&self) -> Self {
        self.unconnected()
    }
}

impl Opened for () {
    fn opened(&self) -> usize {
        0
    }
    fn fresh(&self) -> Self {}
}
