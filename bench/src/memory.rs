//! Host memory held by idle sandboxes, measured two ways: what the host as a whole lost
//! (MemTotal − MemAvailable, corrected for the per-CPU free lists), and what the sandboxes'
//! processes and cgroups account for.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln_engine::{Sandbox, SandboxShape};
use serde_json::{json, Value};

use crate::kiln::Kiln;
use crate::stats::median;

const MIB: f64 = (1 << 20) as f64;
/// Lets lazily freed or lazily allocated memory (RCU callbacks, per-CPU caches, the pool's
/// refills) settle before /proc/meminfo is read.
const QUIET: Duration = Duration::from_millis(500);
/// MemAvailable counts as settled once two reads `QUIET` apart differ by less than this...
const STABLE_WITHIN: f64 = MIB / 2.0;
/// ...or once this has passed (other processes on the host may never let it settle).
const STABLE_TIMEOUT: Duration = Duration::from_secs(15);

/// One round: N sandboxes created, measured, destroyed.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Growth of MemTotal − MemAvailable − per-CPU free lists while the sandboxes existed.
    pub host_delta: f64,
    /// The same without the per-CPU free lists (plain MemAvailable; see `host_used`).
    pub host_delta_raw: f64,
    /// Σ Pss of every process in the sandboxes (normally just the wardens).
    pub pss: f64,
    /// The anonymous part of that (the rest is mostly the kiln binary's pages, shared).
    pub pss_anon: f64,
    /// Σ of the sandbox memory cgroups' usage.
    pub cgroup: f64,
    /// Σ of the kernel-memory part of that usage, where the host reports it (cgroup v1).
    pub cgroup_kmem: Option<f64>,
    /// Σ of the anonymous and the page-cache (incl. tmpfs) parts of that usage, from memory.stat.
    pub cgroup_anon: f64,
    pub cgroup_file: f64,
    /// Host used (as in `host_delta`) after the destroy, minus before (a leak would show here).
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
    pub fn host_raw_mib(&self) -> f64 {
        self.per_sandbox(|r| r.host_delta_raw) / MIB
    }
    /// (a) against the mean of the readings before creating and after destroying, which cancels
    /// a steady drift of the host's other memory use (a leak would hide half of itself here, but
    /// shows in `residual_mib`).
    pub fn host_drift_corrected_mib(&self) -> f64 {
        self.per_sandbox(|r| r.host_delta - r.residual / 2.0) / MIB
    }
    pub fn pss_mib(&self) -> f64 {
        self.per_sandbox(|r| r.pss) / MIB
    }
    pub fn cgroup_mib(&self) -> f64 {
        self.per_sandbox(|r| r.cgroup) / MIB
    }
    pub fn pss_anon_mib(&self) -> f64 {
        self.per_sandbox(|r| r.pss_anon) / MIB
    }
    pub fn cgroup_anon_mib(&self) -> f64 {
        self.per_sandbox(|r| r.cgroup_anon) / MIB
    }
    pub fn cgroup_file_mib(&self) -> f64 {
        self.per_sandbox(|r| r.cgroup_file) / MIB
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
                "host_used_delta": self.host_mib(),
                "host_memavailable_delta_without_pcp": self.host_raw_mib(),
                "host_memavailable_delta_drift_corrected": self.host_drift_corrected_mib(),
                "pss": self.pss_mib(),
                "pss_anon": self.pss_anon_mib(),
                "cgroup_usage": self.cgroup_mib(),
                "cgroup_anon": self.cgroup_anon_mib(),
                "cgroup_file": self.cgroup_file_mib(),
                "pss_plus_cgroup_usage": self.pss_plus_cgroup_mib(),
                "cgroup_kmem": self.kmem_mib(),
            },
            "residual_after_destroy_mib": self.residual_mib(),
            "processes_per_sandbox": self.procs(),
            "raw_rounds_bytes": self.rounds.iter().map(|r| json!({
                "host_delta": r.host_delta,
                "host_delta_raw": r.host_delta_raw,
                "pss": r.pss,
                "pss_anon": r.pss_anon,
                "cgroup": r.cgroup,
                "cgroup_anon": r.cgroup_anon,
                "cgroup_file": r.cgroup_file,
                "cgroup_kmem": r.cgroup_kmem,
                "residual": r.residual,
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
        eprintln!(
            "memory: round {}/{rounds}, {sandboxes} idle sandboxes",
            r + 1
        );
        out.rounds.push(round(kiln, sandboxes).await?);
    }
    Ok(out)
}

async fn round(kiln: &mut Kiln, n: usize) -> Result<Round> {
    kiln.settle().await?;
    let before = host_used_stable().await?;
    let mut held: Vec<Sandbox> = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(kiln.engine.sandbox_cold(&SandboxShape::default()).await?);
    }
    tokio::time::sleep(QUIET).await;
    let (after, after_raw) = host_used().await?;
    let mut round = Round {
        host_delta: after - before.0,
        host_delta_raw: after_raw - before.1,
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
            let (all, anon) = pss(pid).with_context(|| format!("Pss of pid {pid}"))?;
            round.pss += all;
            round.pss_anon += anon;
        }
        let cg = memory_cgroup(warden)?;
        round.cgroup += read_number(&cg.usage)?;
        let (anon, file) = memory_stat(&cg.stat)?;
        round.cgroup_anon += anon;
        round.cgroup_file += file;
        round.cgroup_kmem = match (round.cgroup_kmem, &cg.kmem) {
            (Some(sum), Some(path)) => read_number(path).ok().map(|k| sum + k),
            _ => None,
        };
    }
    for sandbox in held {
        sandbox.destroy().await?;
    }
    kiln.settle().await?;
    round.residual = host_used_stable().await?.0 - before.0;
    Ok(round)
}

/// `host_used` once it has stopped moving. Part of a destroyed sandbox's kernel state (namespaces,
/// RCU-freed objects) is released by deferred work after the destroy returns; read while that goes
/// on, the next round's growth would be offset by the previous round's release.
pub async fn host_used_stable() -> Result<(f64, f64)> {
    let deadline = std::time::Instant::now() + STABLE_TIMEOUT;
    let mut last = host_used().await?;
    loop {
        tokio::time::sleep(QUIET).await;
        let now = host_used().await?;
        if (now.0 - last.0).abs() < STABLE_WITHIN || std::time::Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// MemTotal − MemAvailable − the pages on the per-CPU free lists, in bytes: the median of a few
/// reads, as other processes make it wobble; and the same without the per-CPU term.
///
/// Pages freed onto a CPU's free list are not in MemFree (nor so MemAvailable) until drained, and
/// allocations are served from those lists first. Those lists can hold tens of MiB (20 MiB per CPU
/// on a 24 GiB host), so without this term creating a few dozen sandboxes can look almost free.
async fn host_used() -> Result<(f64, f64)> {
    let page = page_size();
    let (mut reads, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let text = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
        let total = kib_field(&text, "MemTotal:").context("MemTotal in /proc/meminfo")?;
        let avail = kib_field(&text, "MemAvailable:").context("MemAvailable in /proc/meminfo")?;
        let pcp = per_cpu_free_pages()? * page;
        raw.push((total - avail) * 1024.0);
        reads.push((total - avail) * 1024.0 - pcp);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((median(&reads), median(&raw)))
}

/// Σ `count:` of every per-CPU pageset in /proc/zoneinfo (in base pages).
fn per_cpu_free_pages() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/zoneinfo").context("read /proc/zoneinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("count:"))
        .filter_map(|n| n.trim().parse::<f64>().ok())
        .sum())
}

/// The base page size, from this process's own mappings.
fn page_size() -> f64 {
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|t| kib_field(&t, "KernelPageSize:"))
        .map_or(4096.0, |kib| kib * 1024.0)
}

/// A `Name:   123 kB` field, in KiB.
fn kib_field(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Pss of one process and its anonymous part, in bytes.
fn pss(pid: i32) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let all = kib_field(&text, "Pss:").context("no Pss line")?;
    let anon = kib_field(&text, "Pss_Anon:").unwrap_or(0.0);
    Ok((all * 1024.0, anon * 1024.0))
}

/// The anonymous and page-cache bytes of a memory.stat (v1 `rss`/`cache`, v2 `anon`/`file`).
fn memory_stat(path: &str) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let field = |names: [&str; 2]| {
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(k, _)| names.contains(k))
            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((field(["rss", "anon"]), field(["cache", "file"])))
}

struct MemoryCgroup {
    usage: String,
    stat: String,
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
                stat: format!("{dir}/memory.stat"),
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
            stat: format!("/sys/fs/cgroup{path}/memory.stat"),
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
