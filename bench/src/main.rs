//! kiln-bench: Kiln side by side with a bare fork+exec, bwrap and unshare(1) — latency of one run,
//! throughput at several concurrencies, and host memory per idle sandbox — in one run, with medians,
//! ratios and the targets they are held to — and each language's hello world through `run_program`
//! next to the same compile and run command lines on the bare host — and `kiln serve` end to end
//! on loopback next to bare python and the engine alone — and long-lived sandboxes over HTTP
//! (create, exec `true`, idle memory) — and Judge0's submissions route beside `POST /v1/run`.

mod baseline;
mod client;
mod functions;
mod http;
mod http_throughput;
mod judge0;
mod kiln;
mod languages;
mod latency;
mod memory;
mod report;
mod sandboxes;
mod serve;
mod stats;
mod throughput;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde_json::json;

/// Benchmarks Kiln against a bare fork+exec, bwrap and unshare. Must run as root.
#[derive(Debug, Parser)]
#[command(name = "kiln-bench")]
struct Args {
    /// Latency iterations; each runs every case once [default: 200, --quick: 20].
    #[arg(long)]
    iterations: Option<usize>,
    /// Throughput: runs per variant and concurrency level; also the http section's runs per side
    /// [default: 200, --quick: 40].
    #[arg(long)]
    runs: Option<usize>,
    /// Throughput: concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,2,8")]
    concurrency: Vec<usize>,
    /// Throughput: batches each variant's runs are split into, taking turns with the other variants
    /// [default: 2, --quick: 1].
    #[arg(long)]
    throughput_rounds: Option<usize>,
    /// Memory: idle sandboxes held at once.
    #[arg(long, default_value_t = 32)]
    sandboxes: usize,
    /// Memory: rounds of creating, measuring and destroying them [default: 5, --quick: 1].
    #[arg(long)]
    memory_rounds: Option<usize>,
    /// Size of the engine's warm pool (warm latency and throughput).
    #[arg(long, default_value_t = 8)]
    pool_size: usize,
    /// The kiln binary [default: `kiln` next to this binary].
    #[arg(long)]
    kiln: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Languages: rounds of hello world, each running every language bare and in Kiln
    /// [default: 10, --quick: 3].
    #[arg(long)]
    lang_iterations: Option<usize>,
    /// Languages: the ones to run, by name or alias [default: every available one].
    #[arg(long, value_delimiter = ',')]
    languages: Vec<String>,
    /// Http: iterations of the latency loop; each runs POST /v1/run, the execute → start →
    /// result flow, run_program in the bench's engine and bare python once [default: 100,
    /// --quick: 10]; also the judge0 section's submissions per route (at least 40).
    #[arg(long)]
    http_iterations: Option<usize>,
    /// Run only these sections [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// Small counts for a smoke run.
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    Memory,
    Latency,
    Throughput,
    Languages,
    Http,
    Sandboxes,
    Functions,
    Judge0,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if effective_uid()? != 0 {
        bail!("kiln-bench must run as root (Kiln creates cgroups and maps uids)");
    }
    if args.pool_size < 4 {
        bail!("--pool-size must be at least 4");
    }
    let pick = |v: Option<usize>, full: usize, quick: usize| {
        v.unwrap_or(if args.quick { quick } else { full })
    };
    let iterations = pick(args.iterations, 200, 20);
    let runs = pick(args.runs, 200, 40);
    let throughput_rounds = pick(args.throughput_rounds, 2, 1);
    let memory_rounds = pick(args.memory_rounds, 5, 1).max(1);
    let lang_iterations = pick(args.lang_iterations, 10, 3).max(1);
    let http_iterations = pick(args.http_iterations, 100, 10).max(1);
    let run = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let kiln_exe = match args.kiln {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locate kiln-bench")?
            .with_file_name("kiln"),
    };
    if !kiln_exe.is_file() {
        bail!(
            "no kiln binary at {} (build it with `cargo build --release -p kiln`, or pass --kiln)",
            kiln_exe.display()
        );
    }

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "kiln-bench: kiln {}, {cpus} CPUs, Linux {}, pool {}, {iterations} latency iterations, \
         {runs} throughput runs per level, {lang_iterations} language iterations, \
         {http_iterations} http iterations",
        kiln_exe.display(),
        kernel.trim(),
        args.pool_size
    );
    // Chosen before anything is measured, so that a misspelt language fails at once.
    let picked = if run(Section::Languages) {
        let catalog = kiln_lang::Catalog::embedded().context("load the language catalog")?;
        languages::select(&catalog, &args.languages)?
    } else {
        Vec::new()
    };
    let tools = baseline::detect();
    let mut kiln = kiln::Kiln::start(&kiln_exe, args.pool_size).await?;

    let started = std::time::Instant::now();
    // Memory first: the hundreds of sandboxes the other phases destroy are freed lazily by the
    // kernel, and that would drift MemAvailable while it is being read.
    let memory = match run(Section::Memory) {
        true => Some(memory::measure(&mut kiln, args.sandboxes, memory_rounds).await?),
        false => None,
    };
    let latency = match run(Section::Latency) {
        true => Some(latency::measure(&mut kiln, &tools, iterations).await?),
        false => None,
    };
    let throughput = match run(Section::Throughput) {
        true => Some(
            throughput::measure(
                &mut kiln,
                &tools,
                &args.concurrency,
                runs,
                throughput_rounds,
            )
            .await?,
        ),
        false => None,
    };
    let languages = match run(Section::Languages) {
        true => Some(languages::measure(&mut kiln, &picked, lang_iterations).await?),
        false => None,
    };
    // `kiln serve` lives only in this section, so its pool is no idle load on the others.
    let http = match run(Section::Http) {
        true => Some(http::measure(&mut kiln, &kiln_exe, http_iterations, runs).await?),
        false => None,
    };
    let sandboxes = match run(Section::Sandboxes) {
        true => Some(sandboxes::measure(&kiln_exe, http_iterations.max(20), args.sandboxes).await?),
        false => None,
    };
    let functions = match run(Section::Functions) {
        true => Some(functions::measure(&kiln_exe, http_iterations.max(20)).await?),
        false => None,
    };
    let judge0 = match run(Section::Judge0) {
        true => Some(judge0::measure(&kiln_exe, http_iterations.max(40), args.pool_size).await?),
        false => None,
    };
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());

    let results = report::Results {
        header: json!({
            "kiln": kiln_exe,
            "cpus": cpus,
            "kernel": kernel.trim(),
            "pool_size": args.pool_size,
            "iterations": iterations,
            "throughput_runs": runs,
            "throughput_rounds": throughput_rounds,
            "memory_sandboxes": args.sandboxes,
            "memory_rounds": memory_rounds,
            "lang_iterations": lang_iterations,
            "lang_bare_dir": languages::scratch_base(),
            "http_iterations": http_iterations,
            "bwrap": tools.bwrap,
            "unshare": tools.unshare,
        }),
        latency,
        throughput,
        memory,
        languages,
        http,
        runs_per_level: runs,
        lang_iterations,
    };
    results.print();
    if let Some(s) = &sandboxes {
        s.print();
    }
    if let Some(f) = &functions {
        f.print();
    }
    if let Some(j) = &judge0 {
        j.print();
    }
    if let Some(path) = &args.json {
        let mut doc = results.to_json();
        if let Some(s) = &sandboxes {
            doc["sandboxes"] = s.to_json();
        }
        if let Some(f) = &functions {
            doc["functions"] = f.to_json();
        }
        if let Some(j) = &judge0 {
            doc["judge0"] = j.to_json();
        }
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))?;
        println!("\nJSON written to {}", path.display());
    }
    Ok(())
}

/// The effective uid, from /proc so that no unsafe libc call is needed.
fn effective_uid() -> Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .context("no Uid line in /proc/self/status")
}
