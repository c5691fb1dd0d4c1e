//! The plain-text table, the targets and the JSON document.

use serde_json::{json, Value};

use crate::http::{self, Http};
use crate::languages::LangResult;
use crate::latency::{Case, Latency};
use crate::memory::Memory;
use crate::stats::{finite, Samples};
use crate::throughput::{Point, Variant};

/// Everything one bench run measured; a section that was not run is `None`.
#[derive(Debug)]
pub struct Results {
    pub header: Value,
    pub latency: Option<Latency>,
    pub throughput: Option<Vec<Point>>,
    pub memory: Option<Memory>,
    pub languages: Option<Vec<LangResult>>,
    pub http: Option<Http>,
    pub runs_per_level: usize,
    pub lang_iterations: usize,
}

/// A goal Kiln is measured against. `value` is NaN when a case it needs was skipped.
#[derive(Debug)]
struct Target {
    name: String,
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

fn median(l: &Latency, case: Case) -> f64 {
    l.get(case).map_or(f64::NAN, Samples::median_ms)
}

fn ratio(l: &Latency, a: Case, b: Case) -> f64 {
    median(l, a) / median(l, b)
}

/// Kiln warm vs bare, Kiln cold vs bwrap, python warm vs bare.
fn latency_targets(l: &Latency) -> [Target; 3] {
    [
        Target {
            name: "kiln warm /bin/true vs bare fork+exec (median)".into(),
            value: ratio(l, Case::KilnWarm, Case::Bare),
            limit: 1.5,
            unit: "x",
        },
        Target {
            name: "kiln cold /bin/true vs bwrap (median)".into(),
            value: ratio(l, Case::KilnCold, Case::Bwrap),
            limit: 1.0,
            unit: "x",
        },
        Target {
            name: "python3 -c pass, kiln warm vs bare (median)".into(),
            value: ratio(l, Case::PythonKiln, Case::PythonBare),
            limit: 1.15,
            unit: "x",
        },
    ]
}

/// Host memory, and Pss plus cgroup usage.
fn memory_targets(m: &Memory) -> [Target; 2] {
    [
        Target {
            name: "host memory per idle sandbox (a: host used)".into(),
            value: m.host_mib(),
            limit: 2.0,
            unit: "MiB",
        },
        Target {
            name: "memory per idle sandbox (b: Pss + cgroup)".into(),
            value: m.pss_plus_cgroup_mib(),
            limit: 2.0,
            unit: "MiB",
        },
    ]
}

fn language_target(r: &LangResult) -> Target {
    let what = if r.compiled { "compile + run" } else { "run" };
    Target {
        name: format!("hello {}, kiln vs bare {what} (median)", r.name),
        value: if r.failed.is_some() {
            f64::NAN
        } else {
            r.ratio()
        },
        limit: r.limit(),
        unit: "x",
    }
}

/// `/v1/run` and the flow vs bare python, and engine vs server throughput.
fn http_targets(h: &Http) -> [Target; 3] {
    [
        Target {
            name: "kiln serve POST /v1/run python vs bare (p50)".into(),
            value: h.run_ratio(),
            limit: http::TARGET_RUN,
            unit: "x",
        },
        Target {
            name: "kiln serve execute->start->result vs bare (p50)".into(),
            value: h.flow_ratio(),
            limit: http::TARGET_FLOW,
            unit: "x",
        },
        Target {
            name: format!("engine vs kiln serve runs/s at c={}", http::CONCURRENCY),
            value: h.throughput_ratio(),
            limit: http::TARGET_THROUGHPUT,
            unit: "x",
        },
    ]
}

impl Results {
    fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        if let Some(l) = &self.latency {
            t.extend(latency_targets(l));
        }
        if let Some(m) = &self.memory {
            t.extend(memory_targets(m));
        }
        if let Some(langs) = &self.languages {
            t.extend(langs.iter().map(language_target));
        }
        if let Some(h) = &self.http {
            t.extend(http_targets(h));
        }
        t
    }

    /// The tables printed at the end of a run.
    pub fn print(&self) {
        if let Some(l) = &self.latency {
            print_latency(l);
        }
        if let Some(points) = &self.throughput {
            print_throughput(points, self.runs_per_level);
        }
        if let Some(m) = &self.memory {
            print_memory(m);
        }
        if let Some(langs) = &self.languages {
            print_languages(langs, self.lang_iterations);
        }
        if let Some(h) = &self.http {
            print_http(h);
        }
        println!();
        println!("TARGETS");
        for target in &self.targets() {
            println!(
                "  {:<54} {:>10}  <= {:<9} {}",
                target.name,
                num(target.value, target.unit),
                num(target.limit, target.unit),
                target.verdict()
            );
        }
    }

    pub fn to_json(&self) -> Value {
        let mut doc = json!({ "config": self.header });
        if let Some(l) = &self.latency {
            let latency: serde_json::Map<String, Value> = l
                .cases()
                .map(|(c, s)| (c.key().to_string(), s.to_json()))
                .collect();
            doc["latency"] = Value::Object(latency);
            doc["kiln_cold_split"] = json!({
                "create": l.cold_create.to_json(),
                "run": l.cold_run.to_json(),
                "destroy": l.cold_destroy.to_json(),
            });
            doc["kiln_warm_split"] = json!({
                "take": l.warm_take.to_json(),
                "run": l.warm_run.to_json(),
            });
            doc["kiln_warm_takes"] = json!({ "from_pool": l.warm_hits, "total": l.warm_takes });
            doc["ratios"] = json!({
                "kiln_warm_vs_bare": finite(ratio(l, Case::KilnWarm, Case::Bare)),
                "kiln_cold_vs_bwrap": finite(ratio(l, Case::KilnCold, Case::Bwrap)),
                "kiln_cold_vs_unshare": finite(ratio(l, Case::KilnCold, Case::Unshare)),
                "python_kiln_vs_bare": finite(ratio(l, Case::PythonKiln, Case::PythonBare)),
            });
        }
        if let Some(points) = &self.throughput {
            doc["throughput"] = points.iter().map(Point::to_json).collect();
        }
        if let Some(m) = &self.memory {
            doc["memory"] = m.to_json();
        }
        if let Some(langs) = &self.languages {
            doc["languages"] = langs.iter().map(LangResult::to_json).collect();
        }
        if let Some(h) = &self.http {
            doc["http"] = h.to_json();
        }
        doc["targets"] = self
            .targets()
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "value": finite(t.value),
                    "limit": t.limit,
                    "unit": t.unit,
                    "met": t.met(),
                })
            })
            .collect();
        doc
    }
}

fn print_latency(l: &Latency) {
    let t = latency_targets(l);
    println!();
    println!(
        "{:<34} {:>5} {:>10} {:>10}   vs baseline",
        "LATENCY (spawn to exit)", "n", "median", "p90"
    );
    for (case, s) in l.cases() {
        let note = match case {
            Case::KilnWarm => format!("{} bare  {}", num(t[0].value, "x"), t[0].short()),
            Case::KilnCold => format!(
                "{} bwrap  {};  {} unshare",
                num(t[1].value, "x"),
                t[1].short(),
                num(ratio(l, Case::KilnCold, Case::Unshare), "x")
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
}

fn print_throughput(points: &[Point], runs_per_level: usize) {
    let rate = |c: usize, v: Variant| {
        points
            .iter()
            .find(|p| p.concurrency == c && p.variant == v)
            .map_or(f64::NAN, Point::per_sec)
    };
    let mut levels: Vec<usize> = points.iter().map(|p| p.concurrency).collect();
    levels.dedup();
    println!();
    println!("THROUGHPUT (/bin/true runs per second; {runs_per_level} runs per variant and level)");
    println!(
        "{:>4} {:>9} {:>9} {:>9} {:>9} {:>10} {:>11} {:>13}",
        "c", "bare", "bwrap", "unshare", "kiln", "kiln/bare", "kiln/bwrap", "kiln/unshare"
    );
    for c in levels {
        let r = |v| rate(c, v);
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
    let raw: Vec<String> = points
        .iter()
        .filter(|p| p.variant == Variant::Kiln)
        .map(|p| {
            let rate = p.runs as f64 / p.elapsed_runs_only.as_secs_f64();
            format!("c={} {rate:.0}/s", p.concurrency)
        })
        .collect();
    println!("  kiln = take + run + destroy per run, clock stopped once the pool is full again");
    println!("  (not waiting for the refill: {})", raw.join(", "));
}

fn print_memory(m: &Memory) {
    let t = memory_targets(m);
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
        &t[0].short(),
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
        &t[1].short(),
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
}

fn print_languages(langs: &[LangResult], iterations: usize) {
    println!();
    println!(
        "{:<40} {:>10} {:>10} {:>7}   target",
        format!("LANGUAGES (hello world, median of {iterations})"),
        "bare",
        "kiln",
        "ratio"
    );
    for r in langs {
        let t = language_target(r);
        let verdict = match (&r.failed, t.met()) {
            (Some(_), _) => "FAILED",
            (None, Some(true)) => "met",
            (None, Some(false)) => "NOT MET",
            (None, None) => "not measured",
        };
        println!(
            "{:<40} {:>10} {:>10} {:>7}   <= {:<6} {verdict}",
            r.label(),
            ms(r.bare.median_ms()),
            ms(r.kiln.median_ms()),
            num(t.value, "x"),
            num(t.limit, "x")
        );
    }
    println!();
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "  stages (medians)",
        "bare comp",
        "bare run",
        "kiln comp",
        "kiln run",
        "kiln rest",
        "kiln p90"
    );
    for r in langs.iter().filter(|r| r.failed.is_none()) {
        let comp = |s: &Samples| {
            if r.compiled {
                ms(s.median_ms())
            } else {
                "-".into()
            }
        };
        println!(
            "{:<40} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            format!("  {}{}", r.name, if r.pooled { "" } else { " (no pool)" }),
            comp(&r.bare_compile),
            ms(r.bare_run.median_ms()),
            comp(&r.kiln_compile),
            ms(r.kiln_run.median_ms()),
            ms(r.kiln_rest.median_ms()),
            ms(r.kiln.p90_ms())
        );
    }
    println!(
        "  bare = fresh tmpfs dir + files + compile + run; kiln = the whole run_program call (take a"
    );
    println!(
        "  pooled sandbox, write files, compile, run, destroy). Kiln's stages are spawn to exit in"
    );
    println!(
        "  whole ms; rest = the call less its stages (take, writes, limits, output EOF, destroy)."
    );
    println!(
        "  (no pool): the language has extra mounts, so its sandbox is created during the call."
    );
    for r in langs {
        if let Some(why) = &r.failed {
            println!("  {} FAILED: {why}", r.name);
        }
    }
}

fn print_http(h: &Http) {
    let t = http_targets(h);
    println!();
    println!(
        "{:<44} {:>5} {:>10} {:>10} {:>10}   vs bare p50",
        format!("HTTP (kiln serve on loopback, python hello)"),
        "n",
        "p50",
        "p90",
        "p99"
    );
    let rows = [
        ("python3 -c print('hello'), bare", &h.bare, None),
        ("engine run_program (no server)", &h.engine, None),
        ("POST /v1/run", &h.run, Some(&t[0])),
        ("execute -> events -> start -> result", &h.flow, Some(&t[1])),
    ];
    for (label, s, target) in rows {
        let note = target.map_or(String::new(), |t| {
            format!("{} {}", num(t.value, "x"), t.short())
        });
        let failed = if s.failures > 0 {
            format!("  [{} FAILED]", s.failures)
        } else {
            String::new()
        };
        let line = format!(
            "{label:<44} {:>5} {:>10} {:>10} {:>10}   {note}{failed}",
            s.len(),
            ms(s.median_ms()),
            ms(s.p90_ms()),
            ms(s.percentile_ms(99.0))
        );
        println!("{}", line.trim_end());
    }
    println!(
        "  engine run_program vs bare {}; POST /v1/run vs engine run_program {} (p50s)",
        num(h.engine.median_ms() / h.bare.median_ms(), "x"),
        num(h.run.median_ms() / h.engine.median_ms(), "x")
    );
    println!(
        "  python's run stage, spawn to exit in the sandbox (medians, whole ms): engine {}, \
         /v1/run {}, flow {}",
        ms(h.engine_stage.median_ms()),
        ms(h.run_stage.median_ms()),
        ms(h.flow_stage.median_ms())
    );
    println!(
        "  flow split (medians): execute {}, events headers {}, start sent -> result {}",
        ms(h.flow_execute.median_ms()),
        ms(h.flow_subscribe.median_ms() - h.flow_execute.median_ms()),
        ms(h.flow_result.median_ms())
    );
    let rate = |r: &http::Rate| {
        let failed = if r.failures > 0 {
            format!("  [{} FAILED]", r.failures)
        } else {
            String::new()
        };
        format!(
            "{:>7.1}/s  (not waiting for the refill: {:.1}/s){failed}",
            r.per_sec(),
            r.runs_only_per_sec()
        )
    };
    println!(
        "  throughput, c={}, {} runs each (pool {}, capacity {}):",
        http::CONCURRENCY,
        h.runs,
        h.pool_size,
        http::CONCURRENCY
    );
    println!("    kiln serve POST /v1/run   {}", rate(&h.http_rate));
    println!("    engine run_program        {}", rate(&h.engine_rate));
    println!(
        "    engine / http             {} {}",
        num(t[2].value, "x"),
        t[2].short()
    );
    println!(
        "  TCP connections opened: {} (with keep-alive: 3 for the latency loop, {} per throughput \
         round)",
        h.connections,
        http::CONCURRENCY
    );
    if !h.pool_observable {
        println!("  (no kiln_pool_ready in /metrics: quiet judged by a stable sandbox count)");
    }
}
