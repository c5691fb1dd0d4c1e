//! What `kiln exec` and `kiln run` share: the limit flags, stdin, live output, and the summary and
//! exit status of a run.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kiln_engine::{Limits, Network, RunResult, SandboxShape, StdinSource, Stream};

use crate::units::{parse_duration, parse_memory, parse_pids, parse_size};

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
    /// Memory limit, at least 1M (e.g. 256M) [default: 256M]
    #[arg(long, value_parser = parse_memory)]
    memory_limit: Option<u64>,
    /// Most processes and threads at once, 1 or more [default: 64]
    #[arg(long, value_parser = parse_pids)]
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
    /// Let programs watch files with inotify. Refused by default: a watch on the system files
    /// that every sandbox shares read-only tells when the host or another sandbox opens them.
    #[arg(long)]
    allow_inotify: bool,
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
            ..base
        }
    }

    /// The sandbox the flags ask for.
    pub fn shape(&self) -> SandboxShape {
        SandboxShape {
            network: match self.network {
                NetworkArg::None => Network::None,
            },
            inotify: self.allow_inotify,
            ..SandboxShape::default()
        }
    }
}

/// A mistake in what was asked (exit status 2), as opposed to a failure while running (125).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit status for an error: 2 for a usage error, 125 for Kiln's own failure.
pub fn error_status(e: &anyhow::Error) -> i32 {
    if e.is::<UsageError>() {
        2
    } else {
        125
    }
}

/// An error and its causes on one line, each cause once: a cause whose text its wrapper already
/// printed (`open x: No space left on device` over `No space left on device`) is not repeated.
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Reads a host file to copy into the sandbox: a regular file of at most `room` bytes (what is
/// left of the workspace), refused before anything is read otherwise. Returns its bytes and
/// permission bits.
pub fn read_input_file(
    what: &str,
    path: &std::path::Path,
    room: u64,
) -> anyhow::Result<(Vec<u8>, u32)> {
    let usage = |why: String| anyhow::Error::new(UsageError(format!("{what}: {why}")));
    let meta = std::fs::metadata(path).map_err(|e| usage(e.to_string()))?;
    if meta.is_dir() {
        return Err(usage("is a directory".into()));
    }
    if !meta.is_file() {
        return Err(usage(
            "is not a regular file (a device, FIFO or socket cannot be copied in)".into(),
        ));
    }
    if meta.len() > room {
        return Err(usage(format!(
            "{} bytes do not fit in the {room} bytes left in /workspace",
            meta.len()
        )));
    }
    let file = std::fs::File::open(path).map_err(|e| usage(e.to_string()))?;
    let mut data = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the check: never read more than fits.
    file.take(room + 1)
        .read_to_end(&mut data)
        .map_err(|e| usage(e.to_string()))?;
    if data.len() as u64 > room {
        return Err(usage(format!(
            "grew past the {room} bytes left in /workspace"
        )));
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
    Ok((data, mode))
}

/// Where the program's stdin comes from (`--stdin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdinArg {
    /// This process's stdin: live when it is a pipe or a file, closed when it is a terminal
    /// (the default), or live whatever it is (`-`).
    Inherit {
        /// Forward it even from a terminal.
        always: bool,
    },
    /// EOF at once (`none`).
    Closed,
    /// A file or FIFO, read as the program runs.
    Path(PathBuf),
}

/// Parses `--stdin FILE|-|none`.
pub fn parse_stdin(s: &str) -> Result<StdinArg, String> {
    Ok(match s {
        "-" => StdinArg::Inherit { always: true },
        "none" => StdinArg::Closed,
        "" => return Err("--stdin needs a file, - or none".into()),
        path => StdinArg::Path(PathBuf::from(path)),
    })
}

/// The program's stdin. Input is streamed as the program runs, so its clocks run while a slow
/// source (a pipe, a FIFO nobody writes) is read.
pub fn stdin_source(arg: Option<&StdinArg>) -> anyhow::Result<StdinSource> {
    let arg = arg.cloned().unwrap_or(StdinArg::Inherit { always: false });
    Ok(match arg {
        StdinArg::Closed => StdinSource::Closed,
        StdinArg::Inherit { always } => {
            if !always && std::io::stdin().is_terminal() {
                StdinSource::Closed
            } else {
                StdinSource::Live(forward(std::io::stdin()))
            }
        }
        StdinArg::Path(path) => {
            let meta = std::fs::metadata(&path)
                .map_err(|e| UsageError(format!("--stdin {}: {e}", path.display())))?;
            if meta.is_dir() {
                return Err(
                    UsageError(format!("--stdin {}: is a directory", path.display())).into(),
                );
            }
            // Opened in the reading thread: opening a FIFO waits for its writer.
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            std::thread::spawn(move || {
                if let Ok(file) = std::fs::File::open(&path) {
                    pump(file, tx);
                }
            });
            StdinSource::Live(rx)
        }
    })
}

fn forward(input: impl Read + Send + 'static) -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || pump(input, tx));
    rx
}

fn pump(mut input: impl Read, tx: tokio::sync::mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = input.read(&mut buf) {
        if n == 0 || tx.blocking_send(buf[..n].to_vec()).is_err() {
            break;
        }
    }
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
