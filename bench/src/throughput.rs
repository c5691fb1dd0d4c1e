//! Runs of `/bin/true` per second with C concurrent callers.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kiln_engine::{Engine, SandboxShape};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::baseline::{self, Baselines};
use crate::kiln::{run_ok, Kiln};
use crate::latency::TRUE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Bare,
    Bwrap,
    Unshare,
    Kiln,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::Bwrap => "bwrap",
            Variant::Unshare => "unshare",
            Variant::Kiln => "kiln",
        }
    }
}

/// One variant at one concurrency level.
#[derive(Debug, Clone)]
pub struct Point {
    pub concurrency: usize,
    pub variant: Variant,
    pub runs: usize,
    /// Counted time: for Kiln, until the pool is full again (see `measure`).
    pub elapsed: Duration,
    /// Until the last run returned, without waiting for the pool.
    pub elapsed_runs_only: Duration,
}

impl Point {
    pub fn per_sec(&self) -> f64 {
        self.runs as f64 / self.elapsed.as_secs_f64()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "concurrency": self.concurrency,
            "variant": self.variant.label(),
            "runs": self.runs,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "runs_per_s": self.per_sec(),
            "elapsed_runs_only_s": self.elapsed_runs_only.as_secs_f64(),
        })
    }
}

/// For each level, runs `runs` runs of every variant, split into `rounds` batches that take turns
/// (in a rotating order), and reports runs per second over all batches.
///
/// A Kiln batch starts with a full pool. To keep that head start from counting as free capacity,
/// its clock runs until the pool is full again, so the counted time holds exactly one creation,
/// one run and one destroy per run.
pub async fn measure(
    kiln: &mut Kiln,
    tools: &Baselines,
    levels: &[usize],
    runs: usize,
    rounds: usize,
) -> Result<Vec<Point>> {
    let mut variants = vec![Variant::Bare];
    if tools.bwrap.is_some() {
        variants.push(Variant::Bwrap);
    }
    if tools.unshare.is_some() {
        variants.push(Variant::Unshare);
    }
    variants.push(Variant::Kiln);
    let rounds = rounds.clamp(1, runs.max(1));
    let mut points = Vec::new();
    for (li, &c) in levels.iter().enumerate() {
        let mut level: Vec<Point> = variants
            .iter()
            .map(|&v| Point {
                concurrency: c,
                variant: v,
                runs: 0,
                elapsed: Duration::ZERO,
                elapsed_runs_only: Duration::ZERO,
            })
            .collect();
        for r in 0..rounds {
            // Spread the remainder so the batches add up to exactly `runs`.
            let batch = runs / rounds + usize::from(r < runs % rounds);
            for k in 0..variants.len() {
                let vi = (li + r + k) % variants.len();
                let variant = variants[vi];
                eprintln!(
                    "throughput: c={c} {} round {}/{rounds}",
                    variant.label(),
                    r + 1
                );
                kiln.settle().await?;
                let (counted, runs_only) = batch_of(kiln, tools, variant, c, batch)
                    .await
                    .with_context(|| format!("throughput of {} at c={c}", variant.label()))?;
                let p = &mut level[vi];
                p.runs += batch;
                p.elapsed += counted;
                p.elapsed_runs_only += runs_only;
            }
        }
        points.extend(level);
    }
    kiln.settle().await?;
    Ok(points)
}

/// One batch; returns (counted time, time until the last run returned).
async fn batch_of(
    kiln: &mut Kiln,
    tools: &Baselines,
    variant: Variant,
    concurrency: usize,
    runs: usize,
) -> Result<(Duration, Duration)> {
    let host = |prefix: Vec<String>| {
        let prefix = Arc::new(prefix);
        move || {
            let prefix = prefix.clone();
            async move {
                tokio::task::spawn_blocking(move || baseline::run(&prefix, TRUE))
                    .await
                    .context("spawn_blocking")?
            }
        }
    };
    let t0 = Instant::now();
    match variant {
        Variant::Bare => drive(runs, concurrency, host(Vec::new())).await?,
        Variant::Bwrap => {
            drive(
                runs,
                concurrency,
                host(tools.bwrap.clone().unwrap_or_default()),
            )
            .await?
        }
        Variant::Unshare => {
            drive(
                runs,
                concurrency,
                host(tools.unshare.clone().unwrap_or_default()),
            )
            .await?
        }
        Variant::Kiln => {
            let engine = kiln.engine.clone();
            drive(runs, concurrency, move || kiln_run(engine.clone())).await?;
            let runs_only = t0.elapsed();
            kiln.settle().await?;
            return Ok((t0.elapsed(), runs_only));
        }
    }
    let d = t0.elapsed();
    Ok((d, d))
}

/// Take (pool or cold), run and destroy: the whole cost of a run to a server using the pool.
async fn kiln_run(engine: Engine) -> Result<()> {
    let sandbox = engine.sandbox(&SandboxShape::default()).await?;
    let ran = run_ok(&sandbox, TRUE).await;
    sandbox.destroy().await?;
    ran
}

/// Runs `f` `runs` times from `concurrency` tasks, each starting its next run as soon as its last
/// one ended.
async fn drive<F, Fut>(runs: usize, concurrency: usize, f: F) -> Result<()>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (f, next) = (f.clone(), next.clone());
        set.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < runs {
                f().await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.context("throughput task")??;
    }
    Ok(())
}
