//! Host memory held by idle sandboxes, measured two ways: what the host as a whole lost
//! (MemTotal − MemAvailable), and what the sandboxes' processes and cgroups account for.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln_engine::{Limits, Sandbox};
use serde_json::{json, Value};

use crate::kiln::Kiln;
use crate::stats::median;

const MIB: f64 = (1 << 20) as f64;
/// Lets lazily freed or lazily allocated memory (RCU callbacks, per-CPU caches, the pool's
/// refills) settle before /proc/meminfo is read.
const QUIET: Duration = Duration::from_millis(500);

/// One round: N sandboxes created, measured, destroyed.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Growth of MemTotal − MemAvailable while the sandboxes existed.
    pub host_delta: f64,
    /// Σ Pss of every process in the sandboxes (normally just the wardens).
    pub pss: f64,
    /// Σ of the sandbox memory cgroups' usage.
    pub cgroup: f64,
    /// Σ of the kernel-memory part of that usage, where the host reports it (cgroup v1).
    pub cgroup_kmem: Option<f64>,
    /// MemTotal − MemAvailable after the destroy, minus before (a leak would show here).
    pub residual: f64,
    /// Processes per idle sandbox (the warden alone, normally).
    pub procs: f64,
}

/// Per-sandbox figures in bytes (medians over rounds).
#[derive(Debug, Clone)]
pub struct Memory {
    pub sandboxes: usize,
    pub rounds: Vec<Round>,
}

impl Memory {
    fn per_sandbox(&self, f: impl Fn(&Round) -> f64) -> f64 {
        let v: Vec<f64> = self.rounds.iter().map(f).collect();
        median(&v) / self.sandboxes as f64
    }

    /// (a) host view, MiB per sandbox.
    pub fn host_mib(&self) -> f64 {
        self.per_sandbox(|r| r.host_delta) / MIB
    }
    pub fn pss_mib(&self) -> f64 {
        self.per_sandbox(|r| r.pss) / MIB
    }
    pub fn cgroup_mib(&self) -> f64 {
        self.per_sandbox(|r| r.cgroup) / MIB
    }
    /// (b) Σ Pss + Σ cgroup usage, MiB per sandbox. The wardens' own pages are charged to their
    /// cgroups too, so this counts them twice: an upper bound.
    pub fn pss_plus_cgroup_mib(&self) -> f64 {
        self.per_sandbox(|r| r.pss + r.cgroup) / MIB
    }
    pub fn kmem_mib(&self) -> Option<f64> {
        let v: Option<Vec<f64>> = self.rounds.iter().map(|r| r.cgroup_kmem).collect();
        v.map(|v| median(&v) / self.sandboxes as f64 / MIB)
    }
    pub fn residual_mib(&self) -> f64 {
        median(&self.rounds.iter().map(|r| r.residual).collect::<Vec<_>>()) / MIB
    }
    pub fn procs(&self) -> f64 {
        median(&self.rounds.iter().map(|r| r.procs).collect::<Vec<_>>())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "sandboxes": self.sandboxes,
            "rounds": self.rounds.len(),
            "per_sandbox_mib": {
                "host_memavailable_delta": self.host_mib(),
                "pss": self.pss_mib(),
                "cgroup_usage": self.cgroup_mib(),
                "pss_plus_cgroup_usage": self.pss_plus_cgroup_mib(),
                "cgroup_kmem": self.kmem_mib(),
            },
            "residual_after_destroy_mib": self.residual_mib(),
            "processes_per_sandbox": self.procs(),
            "raw_rounds_bytes": self.rounds.iter().map(|r| json!({
                "host_delta": r.host_delta, "pss": r.pss, "cgroup": r.cgroup,
                "cgroup_kmem": r.cgroup_kmem, "residual": r.residual,
            })).collect::<Vec<_>>(),
        })
    }
}

pub async fn measure(kiln: &mut Kiln, sandboxes: usize, rounds: usize) -> Result<Memory> {
    let mut out = Memory {
        sandboxes,
        rounds: Vec::new(),
    };
    for r in 0..rounds {
        eprintln!("memory: round {}/{rounds}, {sandboxes} idle sandboxes", r + 1);
        out.rounds.push(round(kiln, sandboxes).await?);
    }
    Ok(out)
}

async fn round(kiln: &mut Kiln, n: usize) -> Result<Round> {
    kiln.settle().await?;
    tokio::time::sleep(QUIET).await;
    let before = host_used().await?;
    let mut held: Vec<Sandbox> = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(kiln.engine.sandbox_cold(&Limits::default()).await?);
    }
    tokio::time::sleep(QUIET).await;
    let after = host_used().await?;
    let mut round = Round {
        host_delta: after - before,
        cgroup_kmem: Some(0.0),
        ..Round::default()
    };
    for sandbox in &held {
        let warden = sandbox.warden_pid();
        let pids = match sandbox.cgroup().and_then(|c| c.pids().ok()) {
            Some(p) if !p.is_empty() => p,
            _ => vec![warden],
        };
        round.procs += pids.len() as f64 / n as f64;
        for pid in pids {
            round.pss += pss(pid).with_context(|| format!("Pss of pid {pid}"))?;
        }
        let cg = memory_cgroup(warden)?;
        round.cgroup += read_number(&cg.usage)?;
        round.cgroup_kmem = match (round.cgroup_kmem, &cg.kmem) {
            (Some(sum), Some(path)) => read_number(path).ok().map(|k| sum + k),
            _ => None,
        };
    }
    for sandbox in held {
        sandbox.destroy().await?;
    }
    kiln.settle().await?;
    tokio::time::sleep(QUIET).await;
    round.residual = host_used().await? - before;
    Ok(round)
}

/// MemTotal − MemAvailable in bytes: the median of a few reads, as other processes make it wobble.
async fn host_used() -> Result<f64> {
    let mut reads = Vec::new();
    for _ in 0..5 {
        let text = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
        let total = kib_field(&text, "MemTotal:").context("MemTotal in /proc/meminfo")?;
        let avail = kib_field(&text, "MemAvailable:").context("MemAvailable in /proc/meminfo")?;
        reads.push((total - avail) * 1024.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(median(&reads))
}

/// A `Name:   123 kB` field, in KiB.
fn kib_field(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Pss of one process, in bytes.
fn pss(pid: i32) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(kib_field(&text, "Pss:").context("no Pss line")? * 1024.0)
}

struct MemoryCgroup {
    usage: String,
    kmem: Option<String>,
}

/// The files holding the memory usage of `pid`'s memory cgroup: v1 `memory.usage_in_bytes` (with
/// `memory.kmem.usage_in_bytes`), else v2 `memory.current`.
fn memory_cgroup(pid: i32) -> Result<MemoryCgroup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("read /proc/{pid}/cgroup"))?;
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            let dir = format!("/sys/fs/cgroup/memory{path}");
            let kmem = format!("{dir}/memory.kmem.usage_in_bytes");
            return Ok(MemoryCgroup {
                usage: format!("{dir}/memory.usage_in_bytes"),
                kmem: std::path::Path::new(&kmem).exists().then_some(kmem),
            });
        }
        if controllers.is_empty() {
            unified = Some(path.to_string());
        }
    }
    match unified {
        Some(path) => Ok(MemoryCgroup {
            usage: format!("/sys/fs/cgroup{path}/memory.current"),
            kmem: None,
        }),
        None => bail!("pid {pid} has no memory cgroup"),
    }
}

fn read_number(path: &str) -> Result<f64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("{path}: not a number: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kib_fields() {
        let text = "MemTotal:       24684444 kB\nMemFree:  1 kB\nMemAvailable:   24159872 kB\n";
        assert_eq!(kib_field(text, "MemTotal:"), Some(24_684_444.0));
        assert_eq!(kib_field(text, "MemAvailable:"), Some(24_159_872.0));
        assert_eq!(kib_field(text, "Pss:"), None);
    }
}
