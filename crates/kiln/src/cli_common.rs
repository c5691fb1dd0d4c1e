//! What `kiln exec` and `kiln run` share: the limit flags, stdin, live output, and the summary and
//! exit status of a run.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kiln_engine::{Limits, Network, RunResult, StdinSource, Stream};

use crate::units::{parse_duration, parse_size};

/// Limit flags. Unset ones keep the defaults (the language's, for `kiln run`).
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// CPU time limit (e.g. 2s, 500ms) [default: 5s]
    #[arg(long, value_parser = parse_duration)]
    time_limit: Option<Duration>,
    /// Wall-clock limit [default: 10s]
    #[arg(long, value_parser = parse_duration)]
    wall_limit: Option<Duration>,
    /// Ends the run after this long without output or input.
    #[arg(long, value_parser = parse_duration)]
    idle_limit: Option<Duration>,
    /// Memory limit (e.g. 256M) [default: 256M]
    #[arg(long, value_parser = parse_size)]
    memory_limit: Option<u64>,
    /// Most processes and threads at once [default: 64]
    #[arg(long)]
    pids_limit: Option<u64>,
    /// Most bytes of stdout plus stderr kept (e.g. 1M) [default: 1M]
    #[arg(long, value_parser = parse_size)]
    output_limit: Option<u64>,
    /// Largest file a program may write [default: 64M]
    #[arg(long, value_parser = parse_size)]
    file_size_limit: Option<u64>,
    /// Network: only `none` (a private loopback) is offered.
    #[arg(long, value_enum, default_value = "none")]
    network: NetworkArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum NetworkArg {
    None,
}

impl LimitArgs {
    /// `base` with every limit given on the command line replaced.
    pub fn apply(&self, base: Limits) -> Limits {
        Limits {
            cpu_time: self.time_limit.or(base.cpu_time),
            wall_time: self.wall_limit.or(base.wall_time),
            idle_time: self.idle_limit.or(base.idle_time),
            memory_bytes: self.memory_limit.or(base.memory_bytes),
            pids: self.pids_limit.or(base.pids),
            output_bytes: self.output_limit.or(base.output_bytes),
            file_size_bytes: self.file_size_limit.or(base.file_size_bytes),
            network: match self.network {
                NetworkArg::None => Network::None,
            },
            ..base
        }
    }
}

/// Reads `--stdin FILE|-`.
pub fn stdin_source(arg: Option<&str>) -> anyhow::Result<StdinSource> {
    Ok(match arg {
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
    })
}

/// Where output goes: live to this process's stdout and stderr, or collected for `--json`.
#[derive(Debug, Default)]
pub struct Printer {
    /// Collect instead of printing.
    pub collect: bool,
    /// Collected stdout.
    pub stdout: Vec<u8>,
    /// Collected stderr.
    pub stderr: Vec<u8>,
}

impl kiln_engine::OutputSink for Printer {
    fn output(&mut self, stream: Stream, chunk: &[u8]) {
        if self.collect {
            match stream {
                Stream::Stdout => self.stdout.extend_from_slice(chunk),
                Stream::Stderr => self.stderr.extend_from_slice(chunk),
                // Kept in the compile stage's result.
                Stream::Compile => {}
            }
            return;
        }
        let _ = match stream {
            Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(chunk).and_then(|_| out.flush())
            }
            Stream::Stderr | Stream::Compile => std::io::stderr().lock().write_all(chunk),
        };
    }
}

/// The one-line human summary of a stage.
pub fn summary(stage: &str, r: &RunResult) -> String {
    let how = match (&r.exit_code, &r.signal) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => sig.clone(),
        (None, None) => r.message.clone().unwrap_or_default(),
    };
    format!(
        "kiln: {stage}{} ({how}) cpu {} ms, wall {} ms, memory {:.1} MiB{}",
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
pub fn exit_status(r: &RunResult) -> i32 {
    if let Some(code) = r.exit_code {
        return code;
    }
    if let Some(sig) = &r.signal {
        let num = (1..65).find(|n| kiln_engine::verdict::signal_name(*n) == *sig);
        return 128 + num.unwrap_or(0);
    }
    125
}
