//! The service's counters in the Prometheus text format: jobs by state and verdict, refusals by
//! reason, the queue, the jobs waiting for their start, the workers in use, a histogram of run
//! latency, the memory the event logs hold, and what the caller adds (the warm pool, realtime
//! connections). Kept as atomics, written by hand: the format is a few lines and needs no library.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What the server counts.
#[derive(Debug, Default)]
pub struct Metrics {
    finished: Mutex<BTreeMap<(String, String), u64>>,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    submitted: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

/// Gauges read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Jobs waiting for a run slot.
    pub queued: usize,
    /// Jobs waiting for their start.
    pub awaiting_start: usize,
    /// Jobs a worker holds.
    pub active: usize,
    /// Bytes of events the logs hold in memory.
    pub log_memory_bytes: u64,
    /// Ready sandboxes in the pool.
    pub pool_ready: usize,
    /// Open realtime connections.
    pub connections: usize,
    /// Long-lived sandboxes alive.
    pub sandboxes: usize,
    /// Ready long-lived sandboxes in their pool.
    pub sandbox_pool_ready: usize,
}

impl Metrics {
    /// A job was admitted.
    pub fn submitted(&self) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
    }

    /// A job was refused for capacity or a quota (`reason`: `queue`, `owner_queue`, …).
    pub fn rejected(&self, reason: &'static str) {
        *self
            .rejected
            .lock()
            .expect("metrics lock")
            .entry(reason)
            .or_default() += 1;
    }

    /// A job ended in `state` with `verdict`, `seconds` after its start.
    pub fn finished(&self, state: &str, verdict: &str, seconds: f64) {
        *self
            .finished
            .lock()
            .expect("metrics lock")
            .entry((state.to_string(), verdict.to_string()))
            .or_default() += 1;
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, g: Gauges) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line("# HELP kiln_jobs_finished_total Jobs that ended, by final state and verdict.".into());
        line("# TYPE kiln_jobs_finished_total counter".into());
        for ((state, verdict), n) in self.finished.lock().expect("metrics lock").iter() {
            line(format!(
                "kiln_jobs_finished_total{{state=\"{state}\",verdict=\"{verdict}\"}} {n}"
            ));
        }
        line("# HELP kiln_jobs_submitted_total Jobs admitted.".into());
        line("# TYPE kiln_jobs_submitted_total counter".into());
        line(format!(
            "kiln_jobs_submitted_total {}",
            self.submitted.load(Ordering::Relaxed)
        ));
        line(
            "# HELP kiln_jobs_rejected_total Jobs refused with 429, by reason (queue, owner_queue, owner_awaiting, storage, owner_storage).".into(),
        );
        line("# TYPE kiln_jobs_rejected_total counter".into());
        for (reason, n) in self.rejected.lock().expect("metrics lock").iter() {
            line(format!(
                "kiln_jobs_rejected_total{{reason=\"{reason}\"}} {n}"
            ));
        }
        for (name, help, value) in [
            ("kiln_queue_depth", "Jobs waiting for a run slot.", g.queued),
            (
                "kiln_jobs_awaiting_start",
                "Jobs waiting for their start (they hold no run slot).",
                g.awaiting_start,
            ),
            ("kiln_jobs_active", "Jobs held by a worker.", g.active),
            (
                "kiln_event_log_memory_bytes",
                "Bytes of job events held in memory.",
                g.log_memory_bytes as usize,
            ),
            ("kiln_pool_ready", "Warm sandboxes ready.", g.pool_ready),
            ("kiln_sandboxes", "Long-lived sandboxes alive.", g.sandboxes),
            (
                "kiln_sandbox_pool_ready",
                "Ready long-lived sandboxes in their pool.",
                g.sandbox_pool_ready,
            ),
            (
                "kiln_realtime_connections",
                "Open Pusher-protocol connections.",
                g.connections,
            ),
        ] {
            line(format!("# HELP {name} {help}"));
            line(format!("# TYPE {name} gauge"));
            line(format!("{name} {value}"));
        }
        line("# HELP kiln_run_latency_seconds From a job's start to its result.".into());
        line("# TYPE kiln_run_latency_seconds histogram".into());
        for (i, le) in BUCKETS.iter().enumerate() {
            line(format!(
                "kiln_run_latency_seconds_bucket{{le=\"{le}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            ));
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        line(format!(
            "kiln_run_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        ));
        let mut sum = String::new();
        let _ = write!(
            sum,
            "{:.6}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        line(format!("kiln_run_latency_seconds_sum {sum}"));
        line(format!("kiln_run_latency_seconds_count {count}"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::default();
        m.submitted();
        m.finished("done", "ok", 0.02);
        m.finished("done", "time_limit", 3.0);
        m.rejected("owner_queue");
        let text = m.render(Gauges {
            queued: 2,
            active: 1,
            pool_ready: 4,
            ..Gauges::default()
        });
        assert!(text.contains("kiln_jobs_rejected_total{reason=\"owner_queue\"} 1"));
        assert!(text.contains("kiln_jobs_finished_total{state=\"done\",verdict=\"ok\"} 1"));
        assert!(text.contains("kiln_run_latency_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("kiln_run_latency_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("kiln_run_latency_seconds_count 2"));
        assert!(text.contains("kiln_queue_depth 2"));
        assert!(text.contains("kiln_pool_ready 4"));
    }
}
