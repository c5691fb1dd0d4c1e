//! Long-lived sandboxes over HTTP on loopback, against `kiln serve` with its default pool of
//! long-lived sandboxes (2): `POST /v1/sandboxes` (then an untimed delete) paced so the pool has
//! refilled, and back to back so it runs dry; `POST …/exec` of `true` in one sandbox next to a
//! bare fork+exec of `true` in the same loop; and the host memory that idle sandboxes hold
//! (MemTotal − MemAvailable, as the memory section reads it).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::Conn;
use crate::memory::host_used_stable;
use crate::serve::Server;
use crate::stats::Samples;

/// What the section measured.
#[derive(Debug)]
pub struct SandboxBench {
    /// One creation every [`PACE`]: the pool has refilled each time.
    pub create: Samples,
    /// Back to back: the pool is soon empty and creations build their sandbox.
    pub create_burst: Samples,
    pub exec_true: Samples,
    pub bare_true: Samples,
    pub idle: usize,
    pub idle_mib_each: f64,
}

fn body(v: Value) -> Option<hyper::body::Bytes> {
    Some(hyper::body::Bytes::from(v.to_string()))
}

/// How far apart the paced creations are: time for the server's pool to refill.
const PACE: std::time::Duration = std::time::Duration::from_millis(100);

async fn create(conn: &mut Conn) -> Result<String> {
    let (status, v) = conn
        .json(
            Method::POST,
            "/v1/sandboxes",
            body(json!({"timeoutSecs": 600})),
        )
        .await?;
    if status != StatusCode::CREATED {
        bail!("POST /v1/sandboxes: {status} {v}");
    }
    v["sandboxId"]
        .as_str()
        .map(String::from)
        .context("no sandboxId")
}

async fn delete(conn: &mut Conn, id: &str) -> Result<()> {
    let (status, v) = conn
        .json(Method::DELETE, &format!("/v1/sandboxes/{id}"), None)
        .await?;
    if status != StatusCode::OK {
        bail!("DELETE {id}: {status} {v}");
    }
    Ok(())
}

pub async fn measure(kiln_exe: &Path, iterations: usize, idle: usize) -> Result<SandboxBench> {
    let mut server = Server::start(kiln_exe, 8, 0)?;
    let result = run(&mut server, iterations, idle).await;
    let stopped = server.stop().await;
    let r = result?;
    stopped?;
    Ok(r)
}

async fn run(server: &mut Server, iterations: usize, idle: usize) -> Result<SandboxBench> {
    let mut conn = Conn::new(server.addr, &server.token)?;
    conn.connect().await?;
    eprintln!("sandboxes: {iterations} creations, {iterations} exec round trips, {idle} idle");
    let (mut create_s, mut burst_s) = (Samples::default(), Samples::default());
    // The first creation starts the server's pool of sandboxes.
    let first = create(&mut conn).await?;
    delete(&mut conn, &first).await?;
    for _ in 0..iterations {
        tokio::time::sleep(PACE).await;
        let t = Instant::now();
        let id = create(&mut conn).await?;
        create_s.push(t.elapsed());
        delete(&mut conn, &id).await?;
    }
    tokio::time::sleep(PACE).await;
    for _ in 0..iterations {
        let t = Instant::now();
        let id = create(&mut conn).await?;
        burst_s.push(t.elapsed());
        delete(&mut conn, &id).await?;
    }
    let id = create(&mut conn).await?;
    let exec_path = format!("/v1/sandboxes/{id}/exec");
    let (mut exec_s, mut bare_s) = (Samples::default(), Samples::default());
    for _ in 0..iterations {
        let t = Instant::now();
        let (status, v) = conn
            .json(Method::POST, &exec_path, body(json!({"argv": ["true"]})))
            .await?;
        let took = t.elapsed();
        if status == StatusCode::OK && v["status"] == "ok" {
            exec_s.push(took);
        } else {
            exec_s.failures += 1;
        }
        let t = Instant::now();
        let ok = std::process::Command::new("/bin/true")
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            bare_s.push(t.elapsed());
        } else {
            bare_s.failures += 1;
        }
    }
    delete(&mut conn, &id).await?;

    let before = host_used_stable().await?.0;
    let mut ids = Vec::with_capacity(idle);
    for _ in 0..idle {
        ids.push(create(&mut conn).await?);
    }
    let during = host_used_stable().await?.0;
    for id in &ids {
        delete(&mut conn, id).await?;
    }
    Ok(SandboxBench {
        create: create_s,
        create_burst: burst_s,
        exec_true: exec_s,
        bare_true: bare_s,
        idle,
        idle_mib_each: (during - before) / idle.max(1) as f64 / (1 << 20) as f64,
    })
}

impl SandboxBench {
    pub fn print(&self) {
        println!();
        println!(
            "{:<44} {:>5} {:>10} {:>10}",
            "SANDBOXES (HTTP on loopback)", "n", "median", "p99"
        );
        for (name, s) in [
            ("create, one every 100 ms (from the pool)", &self.create),
            (
                "create, back to back (the pool runs dry)",
                &self.create_burst,
            ),
            ("POST …/exec `true` (round trip)", &self.exec_true),
            ("bare fork+exec of `true`", &self.bare_true),
        ] {
            println!(
                "{:<44} {:>5} {:>8.2}ms {:>8.2}ms",
                name,
                s.len(),
                s.median_ms(),
                s.percentile_ms(99.0)
            );
        }
        println!(
            "exec `true` over HTTP / bare fork+exec: {:.2}x",
            self.exec_true.median_ms() / self.bare_true.median_ms()
        );
        println!(
            "host memory per idle sandbox ({} at once): {:.2} MiB",
            self.idle, self.idle_mib_each
        );
        println!("TARGETS");
        for (name, value, limit) in [
            ("create p50, ms", self.create.median_ms(), 5.0),
            ("create p99, ms", self.create.percentile_ms(99.0), 5.0),
            ("exec `true` p50, ms", self.exec_true.median_ms(), 2.0),
            ("idle sandbox, MiB", self.idle_mib_each, 2.0),
        ] {
            let verdict = if value <= limit { "met" } else { "MISSED" };
            println!("  {name:<44} {value:>8.2}  <= {limit:<6} {verdict}");
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "create": self.create.to_json(),
            "create_p99_ms": self.create.percentile_ms(99.0),
            "create_burst": self.create_burst.to_json(),
            "create_burst_p99_ms": self.create_burst.percentile_ms(99.0),
            "exec_true": self.exec_true.to_json(),
            "exec_true_p99_ms": self.exec_true.percentile_ms(99.0),
            "bare_true": self.bare_true.to_json(),
            "idle_sandboxes": self.idle,
            "idle_mib_each": self.idle_mib_each,
        })
    }
}
