//! The plain-text table, the targets and the JSON document.

use serde_json::{json, Value};

use crate::latency::{Case, Latency};
use crate::memory::Memory;
use crate::stats::{finite, Samples};
use crate::throughput::{Point, Variant};

/// Everything one bench run measured.
#[derive(Debug)]
pub struct Results {
    pub header: Value,
    pub latency: Latency,
    pub throughput: Vec<Point>,
    pub memory: Memory,
    pub runs_per_level: usize,
}

/// A goal Kiln is measured against. `value` is NaN when a case it needs was skipped.
#[derive(Debug)]
struct Target {
    name: &'static str,
    value: f64,
    limit: f64,
    unit: &'static str,
}

impl Target {
    fn met(&self) -> Option<bool> {
        self.value.is_finite().then_some(self.value <= self.limit)
    }

    fn verdict(&self) -> &'static str {
        match self.met() {
            Some(true) => "MET",
            Some(false) => "NOT MET",
            None => "not measured",
        }
    }

    fn short(&self) -> String {
        format!(
            "(target <= {}: {})",
            num(self.limit, self.unit),
            self.verdict()
        )
    }
}

fn num(x: f64, unit: &str) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    match unit {
        "x" => format!("{x:.2}x"),
        _ => format!("{x:.2} {unit}"),
    }
}

fn ms(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2} ms")
    } else {
        "-".into()
    }
}

impl Results {
    fn median(&self, case: Case) -> f64 {
        self.latency.get(case).map_or(f64::NAN, Samples::median_ms)
    }

    fn ratio(&self, a: Case, b: Case) -> f64 {
        self.median(a) / self.median(b)
    }

    fn rate(&self, c: usize, v: Variant) -> f64 {
        self.throughput
            .iter()
            .find(|p| p.concurrency == c && p.variant == v)
            .map_or(f64::NAN, Point::per_sec)
    }

    fn levels(&self) -> Vec<usize> {
        let mut l: Vec<usize> = self.throughput.iter().map(|p| p.concurrency).collect();
        l.dedup();
        l
    }

    fn targets(&self) -> Vec<Target> {
        vec![
            Target {
                name: "kiln warm /bin/true vs bare fork+exec (median)",
                value: self.ratio(Case::KilnWarm, Case::Bare),
                limit: 1.5,
                unit: "x",
            },
            Target {
                name: "kiln cold /bin/true vs bwrap (median)",
                value: self.ratio(Case::KilnCold, Case::Bwrap),
                limit: 1.0,
                unit: "x",
            },
            Target {
                name: "python3 -c pass, kiln warm vs bare (median)",
                value: self.ratio(Case::PythonKiln, Case::PythonBare),
                limit: 1.15,
                unit: "x",
            },
            Target {
                name: "host memory per idle sandbox (a: host used)",
                value: self.memory.host_mib(),
                limit: 2.0,
                unit: "MiB",
            },
            Target {
                name: "memory per idle sandbox (b: Pss + cgroup)",
                value: self.memory.pss_plus_cgroup_mib(),
                limit: 2.0,
                unit: "MiB",
            },
        ]
    }

    /// The table printed at the end of a run.
    pub fn print(&self) {
        let t = self.targets();
        println!();
        println!(
            "{:<34} {:>5} {:>10} {:>10}   vs baseline",
            "LATENCY (spawn to exit)", "n", "median", "p90"
        );
        for (case, s) in self.latency.cases() {
            let note = match case {
                Case::KilnWarm => format!("{} bare  {}", num(t[0].value, "x"), t[0].short()),
                Case::KilnCold => format!(
                    "{} bwrap  {};  {} unshare",
                    num(t[1].value, "x"),
                    t[1].short(),
                    num(self.ratio(Case::KilnCold, Case::Unshare), "x")
                ),
                Case::PythonKiln => format!("{} bare  {}", num(t[2].value, "x"), t[2].short()),
                _ => String::new(),
            };
            let failed = if s.failures > 0 {
                format!("  [{} FAILED]", s.failures)
            } else {
                String::new()
            };
            let line = format!(
                "{:<34} {:>5} {:>10} {:>10}   {note}{failed}",
                case.label(),
                s.len(),
                ms(s.median_ms()),
                ms(s.p90_ms())
            );
            println!("{}", line.trim_end());
        }
        let l = &self.latency;
        println!(
            "  kiln cold split (medians): create {} + run {} + destroy {}",
            ms(l.cold_create.median_ms()),
            ms(l.cold_run.median_ms()),
            ms(l.cold_destroy.median_ms())
        );
        println!(
            "  kiln warm split (medians): take {} + run {}; takes served from the pool: {}/{}",
            ms(l.warm_take.median_ms()),
            ms(l.warm_run.median_ms()),
            l.warm_hits,
            l.warm_takes
        );

        println!();
        println!(
            "THROUGHPUT (/bin/true runs per second; {} runs per variant and level)",
            self.runs_per_level
        );
        println!(
            "{:>4} {:>9} {:>9} {:>9} {:>9} {:>10} {:>11} {:>13}",
            "c", "bare", "bwrap", "unshare", "kiln", "kiln/bare", "kiln/bwrap", "kiln/unshare"
        );
        for c in self.levels() {
            let r = |v| self.rate(c, v);
            let cell = |x: f64| {
                if x.is_finite() {
                    format!("{x:.0}/s")
                } else {
                    "-".into()
                }
            };
            let k = r(Variant::Kiln);
            println!(
                "{c:>4} {:>9} {:>9} {:>9} {:>9} {:>10} {:>11} {:>13}",
                cell(r(Variant::Bare)),
                cell(r(Variant::Bwrap)),
                cell(r(Variant::Unshare)),
                cell(k),
                num(k / r(Variant::Bare), "x"),
                num(k / r(Variant::Bwrap), "x"),
                num(k / r(Variant::Unshare), "x")
            );
        }
        let raw: Vec<String> = self
            .throughput
            .iter()
            .filter(|p| p.variant == Variant::Kiln)
            .map(|p| {
                let rate = p.runs as f64 / p.elapsed_runs_only.as_secs_f64();
                format!("c={} {rate:.0}/s", p.concurrency)
            })
            .collect();
        println!(
            "  kiln = take + run + destroy per run, clock stopped once the pool is full again"
        );
        println!("  (not waiting for the refill: {})", raw.join(", "));

        let m = &self.memory;
        println!();
        println!(
            "MEMORY per idle sandbox ({} sandboxes from sandbox_cold, median of {} rounds)",
            m.sandboxes,
            m.rounds.len()
        );
        let row = |label: &str, mib: f64, note: &str| {
            let line = format!("  {label:<58} {:>9}   {note}", num(mib, "MiB"));
            println!("{}", line.trim_end());
        };
        row(
            "(a) host used: MemTotal-MemAvailable-per-CPU free lists",
            m.host_mib(),
            &t[3].short(),
        );
        row(
            "      drift-corrected (vs mean of before and after destroy)",
            m.host_drift_corrected_mib(),
            "",
        );
        row(
            "      plain MemTotal-MemAvailable (blind to per-CPU lists)",
            m.host_raw_mib(),
            "",
        );
        row(
            "(b) Pss + memory cgroup usage",
            m.pss_plus_cgroup_mib(),
            &t[4].short(),
        );
        row(
            "      Pss of the sandbox's processes",
            m.pss_mib(),
            &format!("anonymous {}", num(m.pss_anon_mib(), "MiB")),
        );
        let kmem = m
            .kmem_mib()
            .map_or(String::new(), |k| format!(", kernel {}", num(k, "MiB")));
        row(
            "      memory cgroup usage",
            m.cgroup_mib(),
            &format!(
                "anonymous {}, page cache/tmpfs {}{kmem}",
                num(m.cgroup_anon_mib(), "MiB"),
                num(m.cgroup_file_mib(), "MiB")
            ),
        );
        println!("  (b) counts the warden's own pages twice (they are charged to its cgroup too).");
        println!(
            "  processes per idle sandbox: {:.1}; host memory not back after destroying all {}: {}",
            m.procs(),
            m.sandboxes,
            num(m.residual_mib(), "MiB")
        );

        println!();
        println!("TARGETS");
        for target in &t {
            println!(
                "  {:<48} {:>10}  <= {:<9} {}",
                target.name,
                num(target.value, target.unit),
                num(target.limit, target.unit),
                target.verdict()
            );
        }
    }

    pub fn to_json(&self) -> Value {
        let latency: serde_json::Map<String, Value> = self
            .latency
            .cases()
            .map(|(c, s)| (c.key().to_string(), s.to_json()))
            .collect();
        let l = &self.latency;
        json!({
            "config": self.header,
            "latency": latency,
            "kiln_cold_split": {
                "create": l.cold_create.to_json(),
                "run": l.cold_run.to_json(),
                "destroy": l.cold_destroy.to_json(),
            },
            "kiln_warm_split": {
                "take": l.warm_take.to_json(),
                "run": l.warm_run.to_json(),
            },
            "kiln_warm_takes": { "from_pool": l.warm_hits, "total": l.warm_takes },
            "ratios": {
                "kiln_warm_vs_bare": finite(self.ratio(Case::KilnWarm, Case::Bare)),
                "kiln_cold_vs_bwrap": finite(self.ratio(Case::KilnCold, Case::Bwrap)),
                "kiln_cold_vs_unshare": finite(self.ratio(Case::KilnCold, Case::Unshare)),
                "python_kiln_vs_bare": finite(self.ratio(Case::PythonKiln, Case::PythonBare)),
            },
            "throughput": self.throughput.iter().map(Point::to_json).collect::<Vec<_>>(),
            "memory": self.memory.to_json(),
            "targets": self.targets().iter().map(|t| json!({
                "name": t.name,
                "value": finite(t.value),
                "limit": t.limit,
                "unit": t.unit,
                "met": t.met(),
            })).collect::<Vec<_>>(),
        })
    }
}
