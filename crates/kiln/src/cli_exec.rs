//! `kiln exec`: run a program from the host's system dirs in a fresh sandbox, with files copied into
//! `/workspace`, output printed live, and a verdict at the end.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kiln_engine::{
    Engine, EngineConfig, Limits, Network, RunResult, RunSpec, Sandbox, StdinSource, Stream,
};

use crate::units::{parse_duration, parse_size};

/// Flags of `kiln exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Copy a host file into /workspace (PATH, or PATH:DEST with DEST relative to /workspace).
    #[arg(long = "file", value_name = "PATH[:DEST]")]
    files: Vec<String>,
    /// Feed stdin from a file, or `-` for this process's stdin.
    #[arg(long, value_name = "FILE|-")]
    stdin: Option<String>,
    /// CPU time limit (e.g. 2s, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    time_limit: Duration,
    /// Wall-clock limit.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    wall_limit: Duration,
    /// Ends the run after this long without output or input.
    #[arg(long, value_parser = parse_duration)]
    idle_limit: Option<Duration>,
    /// Memory limit (e.g. 256M).
    #[arg(long, value_parser = parse_size, default_value = "256M")]
    memory_limit: u64,
    /// Most processes and threads at once.
    #[arg(long, default_value_t = 64)]
    pids_limit: u64,
    /// Most bytes of stdout plus stderr kept (e.g. 1M).
    #[arg(long, value_parser = parse_size, default_value = "1M")]
    output_limit: u64,
    /// Largest file a program may write.
    #[arg(long, value_parser = parse_size, default_value = "64M")]
    file_size_limit: u64,
    /// Network: only `none` (a private loopback) is offered.
    #[arg(long, value_enum, default_value = "none")]
    network: NetworkArg,
    /// Print one JSON RunResult (with the output) instead of live output and a summary.
    #[arg(long)]
    json: bool,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "ARGV")]
    argv: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum NetworkArg {
    None,
}

/// Runs `kiln exec`, returning the process exit status.
pub async fn run(args: ExecArgs) -> i32 {
    match exec(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln exec: {e:#}");
            125
        }
    }
}

fn split_file_arg(arg: &str) -> (PathBuf, String) {
    match arg.split_once(':') {
        Some((path, dest)) if !dest.is_empty() => (PathBuf::from(path), dest.to_string()),
        _ => {
            let path = PathBuf::from(arg);
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| arg.to_string());
            (path, name)
        }
    }
}

async fn exec(args: ExecArgs) -> anyhow::Result<i32> {
    let limits = Limits {
        wall_time: Some(args.wall_limit),
        cpu_time: Some(args.time_limit),
        idle_time: args.idle_limit,
        memory_bytes: Some(args.memory_limit),
        pids: Some(args.pids_limit),
        output_bytes: Some(args.output_limit),
        file_size_bytes: Some(args.file_size_limit),
        network: match args.network {
            NetworkArg::None => Network::None,
        },
        ..Limits::default()
    };
    let mut files = Vec::new();
    for arg in &args.files {
        let (path, dest) = split_file_arg(arg);
        kiln_engine::files::validate_relative(&dest).with_context(|| format!("--file {arg}"))?;
        let data = std::fs::read(&path).with_context(|| format!("--file {}", path.display()))?;
        let mode = std::fs::metadata(&path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or(0o644);
        files.push((dest, data, mode | 0o600));
    }
    let stdin = match args.stdin.as_deref() {
        None => StdinSource::Closed,
        Some("-") => {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 8192];
                let mut input = std::io::stdin().lock();
                while let Ok(n) = std::io::Read::read(&mut input, &mut buf) {
                    if n == 0 || tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
            StdinSource::Live(rx)
        }
        Some(path) => {
            StdinSource::Bytes(std::fs::read(path).with_context(|| format!("--stdin {path}"))?)
        }
    };

    let exe = std::env::current_exe().context("locating the kiln binary")?;
    let engine =
        Engine::new(EngineConfig::new(exe)).context("preparing the host (try `kiln doctor`)")?;
    let sandbox = engine
        .sandbox(&limits)
        .await
        .context("creating the sandbox")?;
    let mut spec = RunSpec::new(args.argv, limits);
    spec.stdin = stdin;
    let json = args.json;
    // The sandbox is destroyed whatever happened in it, before any error is reported.
    let ran = run_in(&sandbox, &files, spec, json).await;
    let destroyed = sandbox.destroy().await;
    let (result, out, err) = ran?;
    destroyed.context("destroying the sandbox")?;
    if json {
        let mut value = serde_json::to_value(&result)?;
        value["stdout"] = String::from_utf8_lossy(&out).into_owned().into();
        value["stderr"] = String::from_utf8_lossy(&err).into_owned().into();
        println!("{value}");
    } else {
        eprintln!("{}", summary(&result));
    }
    Ok(exit_status(&result))
}

type Collected = (RunResult, Vec<u8>, Vec<u8>);

async fn run_in(
    sandbox: &Sandbox,
    files: &[(String, Vec<u8>, u32)],
    spec: RunSpec,
    json: bool,
) -> anyhow::Result<Collected> {
    for (dest, data, mode) in files {
        sandbox
            .write_file(dest, data, *mode)
            .with_context(|| format!("copying {dest} into the sandbox"))?;
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut sink = |stream: Stream, chunk: &[u8]| {
        if json {
            match stream {
                Stream::Stdout => out.extend_from_slice(chunk),
                Stream::Stderr => err.extend_from_slice(chunk),
            }
            return;
        }
        let _ = match stream {
            Stream::Stdout => std::io::stdout()
                .lock()
                .write_all(chunk)
                .and_then(|_| std::io::stdout().flush()),
            Stream::Stderr => std::io::stderr().lock().write_all(chunk),
        };
    };
    let result = kiln_engine::runner::run(sandbox, spec, &mut sink, None).await;
    Ok((result, out, err))
}

fn summary(r: &RunResult) -> String {
    let how = match (&r.exit_code, &r.signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => sig.clone(),
        (None, None) => r.message.clone().unwrap_or_default(),
    };
    format!(
        "kiln: {} ({how}) cpu {} ms, wall {} ms, memory {:.1} MiB{}",
        r.status.as_str(),
        r.cpu_ms,
        r.wall_ms,
        r.memory_bytes as f64 / (1024.0 * 1024.0),
        if r.truncated {
            ", output truncated"
        } else {
            ""
        }
    )
}

/// The program's own exit status, or 128 + signal like a shell, or 125 when Kiln failed.
fn exit_status(r: &RunResult) -> i32 {
    if let Some(code) = r.exit_code {
        return code;
    }
    if let Some(sig) = &r.signal {
        let num = (1..65).find(|n| kiln_engine::verdict::signal_name(*n) == *sig);
        return 128 + num.unwrap_or(0);
    }
    125
}
