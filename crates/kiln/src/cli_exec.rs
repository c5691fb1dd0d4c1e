//! `kiln exec`: run a program from the host's system dirs in a fresh sandbox, with files copied into
//! `/workspace`, output printed live, and a verdict at the end.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use kiln_engine::{Engine, EngineConfig, Limits, RunResult, RunSpec, Sandbox};

use crate::cli_common::{
    describe, error_status, exit_status, parse_stdin, read_input_file, stdin_source, summary,
    LimitArgs, Printer, StdinArg, UsageError,
};

/// Flags of `kiln exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Copy a host file into /workspace (PATH, or PATH:DEST with DEST relative to /workspace).
    #[arg(long = "file", value_name = "PATH[:DEST]")]
    files: Vec<String>,
    /// stdin: a file or FIFO, `-` for this process's stdin, or `none` [default: this process's
    /// stdin unless it is a terminal]
    #[arg(long, value_name = "FILE|-|none", value_parser = parse_stdin)]
    stdin: Option<StdinArg>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Print one JSON RunResult (with the output) instead of live output and a summary.
    #[arg(long)]
    json: bool,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "ARGV")]
    argv: Vec<String>,
}

/// Runs `kiln exec`, returning the process exit status.
pub async fn run(args: ExecArgs) -> i32 {
    match exec(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln exec: {}", describe(&e));
            error_status(&e)
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
    let limits = args.limits.apply(Limits::default());
    let shape = args.limits.shape();
    let mut files: Vec<(String, Vec<u8>, u32)> = Vec::new();
    let mut room = shape.workspace_bytes;
    for arg in &args.files {
        let (path, dest) = split_file_arg(arg);
        kiln_engine::files::validate_relative(&dest)
            .map_err(|e| UsageError(format!("--file {arg}: {e}")))?;
        if files.iter().any(|(d, _, _)| *d == dest) {
            return Err(UsageError(format!("--file {arg}: {dest} is given twice")).into());
        }
        let (data, mode) = read_input_file(&format!("--file {arg}"), &path, room)?;
        room -= data.len() as u64;
        files.push((dest, data, mode | 0o600));
    }
    let stdin = stdin_source(args.stdin.as_ref())?;

    let exe = std::env::current_exe().context("locating the kiln binary")?;
    let engine =
        Engine::new(EngineConfig::new(exe)).context("preparing the host (try `kiln doctor`)")?;
    let sandbox = engine
        .sandbox(&shape)
        .await
        .context("creating the sandbox")?;
    let mut spec = RunSpec::new(args.argv, limits);
    spec.stdin = stdin;
    let mut printer = Printer {
        collect: args.json,
        ..Printer::default()
    };
    // The sandbox is destroyed whatever happened in it, before any error is reported.
    let ran = run_in(&sandbox, &files, spec, &mut printer).await;
    let destroyed = sandbox.destroy().await;
    let result = ran?;
    destroyed.context("destroying the sandbox")?;
    if args.json {
        let mut value = serde_json::to_value(&result)?;
        value["stdout"] = String::from_utf8_lossy(&printer.stdout).into_owned().into();
        value["stderr"] = String::from_utf8_lossy(&printer.stderr).into_owned().into();
        println!("{value}");
    } else {
        eprintln!("{}", summary("", &result));
    }
    Ok(exit_status(&result))
}

async fn run_in(
    sandbox: &Sandbox,
    files: &[(String, Vec<u8>, u32)],
    spec: RunSpec,
    printer: &mut Printer,
) -> anyhow::Result<RunResult> {
    for (dest, data, mode) in files {
        sandbox
            .write_file(dest, data, *mode)
            .with_context(|| format!("copying {dest} into the sandbox"))?;
    }
    Ok(kiln_engine::runner::run(sandbox, spec, printer, None).await)
}
