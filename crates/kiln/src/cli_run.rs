//! `kiln run`: run source files in their language: detect the language from the first file (or
//! `--lang`), compile if the language needs it, run, stream the output live.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use kiln_engine::{Engine, EngineConfig, LimitOverrides};
use kiln_lang::{Catalog, SourceFile};
use kiln_workload::{run_limits, run_program, Program, ProgramResult};

use crate::cli_common::{
    describe, error_status, exit_status, parse_stdin, read_input_file, stdin_source, summary,
    LimitArgs, Printer, StdinArg, UsageError,
};

/// Flags of `kiln run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Source files; the first is the entry point. They are copied into /workspace by name.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The language (a name or alias from `kiln languages`), instead of the first file's extension.
    #[arg(long = "lang", value_name = "LANGUAGE")]
    language: Option<String>,
    /// stdin: a file or FIFO, `-` for this process's stdin, or `none` [default: this process's
    /// stdin unless it is a terminal]
    #[arg(long, value_name = "FILE|-|none", value_parser = parse_stdin)]
    stdin: Option<StdinArg>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Print one JSON result (compile and run stages, with the output) instead of live output.
    #[arg(long)]
    json: bool,
    /// Arguments for the program.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// Runs `kiln run`, returning the process exit status.
pub async fn run(args: RunArgs) -> i32 {
    match run_files(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln run: {}", describe(&e));
            error_status(&e)
        }
    }
}

async fn run_files(args: RunArgs) -> anyhow::Result<i32> {
    let catalog = Catalog::embedded().context("the language catalog")?;
    // A missing file or a directory is said as such, before the language is guessed from it.
    for path in &args.files {
        let meta =
            std::fs::metadata(path).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            return Err(UsageError(format!("{}: is a directory", path.display())).into());
        }
    }
    let first = args.files[0].to_string_lossy().into_owned();
    let detected = match &args.language {
        Some(name) => catalog.find(name).ok_or_else(|| {
            UsageError(format!("unknown language {name:?} (see `kiln languages`)"))
        })?,
        None => catalog.by_extension(&first).ok_or_else(|| {
            UsageError(format!(
                "cannot tell the language of {first:?} from its extension; name it with --lang"
            ))
        })?,
    };
    let language = detected.language.clone();
    let version = match &detected.version {
        Ok(v) => v.clone(),
        Err(e) => {
            return Err(UsageError(format!(
                "language {} is not available on this host: {e}",
                language.name
            ))
            .into())
        }
    };
    let limits = args
        .limits
        .apply(run_limits(&language, &LimitOverrides::default()));
    let shape = args.limits.shape();
    let mut files = Vec::new();
    let mut room = shape.workspace_bytes;
    for path in &args.files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| UsageError(format!("{} has no file name", path.display())))?;
        if files.iter().any(|f: &SourceFile| f.name == name) {
            bail!(UsageError(format!("two files are named {name:?}")));
        }
        let (content, _) = read_input_file(&path.display().to_string(), path, room)?;
        room -= content.len() as u64;
        files.push(SourceFile { name, content });
    }
    let stdin = stdin_source(args.stdin.as_ref())?;
    let exe = std::env::current_exe().context("locating the kiln binary")?;
    let engine =
        Engine::new(EngineConfig::new(exe)).context("preparing the host (try `kiln doctor`)")?;
    let mut printer = Printer {
        collect: args.json,
        ..Printer::default()
    };
    let program = Program {
        language: language.clone(),
        files,
        args: args.args,
        compile_options: Vec::new(),
        stdin,
        limits,
        shape,
        capture: None,
    };
    let result = run_program(&engine, program, &mut printer, None).await;
    // Nothing of the sandbox may outlive this process.
    engine.settle().await;
    let result = result.context("running the program")?;
    if args.json {
        let mut value = serde_json::to_value(&result)?;
        value["language"] = language.name.clone().into();
        value["version"] = version.into();
        value["stdout"] = String::from_utf8_lossy(&printer.stdout).into_owned().into();
        value["stderr"] = String::from_utf8_lossy(&printer.stderr).into_owned().into();
        println!("{value}");
    } else {
        report(&result);
    }
    Ok(match &result.run {
        Some(run) => exit_status(run),
        None => 1,
    })
}

fn report(result: &ProgramResult) {
    if let Some(compile) = &result.compile {
        if compile.result.status != kiln_engine::Status::Ok || result.run.is_none() {
            eprintln!("{}", summary("compile ", &compile.result));
        }
    }
    match &result.run {
        Some(run) => eprintln!("{}", summary("", run)),
        None => eprintln!("kiln: {}", result.status.as_str()),
    }
}
