//! Kiln driven through its engine: cold and warm runs, and keeping the machine quiet between
//! measurements.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kiln_engine::{
    Engine, EngineConfig, EngineError, Limits, RunSpec, Sandbox, SandboxShape, Status, Stream,
};
use tokio::task::JoinHandle;

/// How long the pool may take to fill before the bench gives up (creation is failing, most likely).
const POOL_FILL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the time of one cold run went.
#[derive(Debug, Clone, Copy)]
pub struct ColdTiming {
    pub create: Duration,
    pub run: Duration,
    pub destroy: Duration,
}

impl ColdTiming {
    pub fn total(&self) -> Duration {
        self.create + self.run + self.destroy
    }
}

/// Where the time of one warm run went.
#[derive(Debug, Clone, Copy)]
pub struct WarmTiming {
    pub take: Duration,
    pub run: Duration,
    /// Whether the sandbox came from the pool (rather than being created on the spot).
    pub from_pool: bool,
}

/// The engine under test, and the destroys it still has running in the background.
#[derive(Debug)]
pub struct Kiln {
    pub engine: Engine,
    pub pool_size: usize,
    pending: Vec<JoinHandle<Result<(), EngineError>>>,
}

impl Kiln {
    pub async fn start(kiln_exe: &Path, pool_size: usize) -> Result<Self> {
        let mut cfg = EngineConfig::new(kiln_exe);
        cfg.pool_size = pool_size;
        let engine = Engine::new(cfg).context("start the engine")?;
        let mut kiln = Self {
            engine,
            pool_size,
            pending: Vec::new(),
        };
        kiln.settle().await.context("fill the pool")?;
        Ok(kiln)
    }

    /// Waits until no background destroy is running and the pool is full, so that neither steals
    /// CPU from the next measurement.
    pub async fn settle(&mut self) -> Result<()> {
        for handle in self.pending.drain(..) {
            handle
                .await
                .context("destroy task")?
                .context("destroy a sandbox")?;
        }
        // run_program retires its sandbox in the background.
        self.engine.settle().await;
        tokio::time::timeout(
            POOL_FILL_TIMEOUT,
            self.engine.pool_wait_ready(self.pool_size),
        )
        .await
        .with_context(|| {
            format!(
                "the pool did not fill within {POOL_FILL_TIMEOUT:?} ({} of {} ready)",
                self.engine.pool_ready(),
                self.pool_size
            )
        })
    }

    /// Creates a sandbox now, runs `argv` in it and destroys it, timing each step.
    pub async fn cold(&self, argv: &[&str]) -> Result<ColdTiming> {
        let t0 = Instant::now();
        let sandbox = self.engine.sandbox_cold(&SandboxShape::default()).await?;
        let t1 = Instant::now();
        let ran = run_ok(&sandbox, argv).await;
        let t2 = Instant::now();
        sandbox.destroy().await?;
        let t3 = Instant::now();
        ran?;
        Ok(ColdTiming {
            create: t1 - t0,
            run: t2 - t1,
            destroy: t3 - t2,
        })
    }

    /// Takes a sandbox (from the pool when one is ready) and runs `argv` in it; the destroy goes on
    /// in the background after the clock stops.
    pub async fn warm(&mut self, argv: &[&str]) -> Result<WarmTiming> {
        // The bench is the pool's only taker, so a non-empty pool now means the take below is
        // served from it (take happens before the first await in `Engine::sandbox`).
        let from_pool = self.engine.pool_ready() > 0;
        let t0 = Instant::now();
        let sandbox = self.engine.sandbox(&SandboxShape::default()).await?;
        let t1 = Instant::now();
        let ran = run_ok(&sandbox, argv).await;
        let t2 = Instant::now();
        self.pending.push(tokio::spawn(sandbox.destroy()));
        ran?;
        Ok(WarmTiming {
            take: t1 - t0,
            run: t2 - t1,
            from_pool,
        })
    }
}

/// Runs `argv` in `sandbox` and requires it to exit 0.
pub async fn run_ok(sandbox: &Sandbox, argv: &[&str]) -> Result<()> {
    let spec = RunSpec::new(
        argv.iter().map(|s| s.to_string()).collect(),
        Limits::default(),
    );
    let mut stderr = Vec::new();
    let mut sink = |s: Stream, c: &[u8]| {
        if s == Stream::Stderr && stderr.len() < 4096 {
            stderr.extend_from_slice(c);
        }
    };
    let result = kiln_engine::runner::run(sandbox, spec, &mut sink, None).await;
    if result.status != Status::Ok {
        bail!(
            "{argv:?} in kiln: {} (exit {:?}, {}) {}",
            result.status.as_str(),
            result.exit_code,
            result.message.as_deref().unwrap_or(""),
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(())
}
