//! The `kiln` binary: the command line (`exec`, `run`, `languages`, `serve`, `sandbox`, `doctor`) and, when started with the hidden warden
//! argument, the warden that runs as PID 1 inside each sandbox.

mod cli_call;
mod cli_common;
mod cli_exec;
mod cli_http;
mod cli_languages;
mod cli_run;
mod cli_sandbox;
mod cli_serve;
mod cli_shell;
mod doctor;
mod telemetry;
mod units;

use clap::{Parser, Subcommand};

/// Kiln runs untrusted code in Linux sandboxes.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a program from the host's system dirs in a fresh sandbox.
    Exec(cli_exec::ExecArgs),
    /// Run source files in their language (compiled first if the language needs it).
    Run(cli_run::RunArgs),
    /// List the languages this host can run.
    Languages(cli_languages::LanguagesArgs),
    /// Serve the HTTP API (jobs, live channels, sandboxes).
    Serve(Box<cli_serve::ServeArgs>),
    /// Long-lived sandboxes of a running server: create, ls, exec, ps, logs, kill, cp, shell, rm.
    Sandbox(cli_sandbox::SandboxArgs),
    /// Call a function of a local file with JSON arguments, in a fresh sandbox, and print its
    /// value.
    Call(cli_call::CallArgs),
    /// Run a JavaScript codelet's `main(input, {logger})` under the default-deny policy.
    Codelet(cli_call::CodeletArgs),
    /// Check that this host can run sandboxes, and say how to fix what is missing.
    Doctor,
}

fn main() {
    // The warden must stay single-threaded: decide before anything starts a thread.
    if std::env::args_os().nth(1).as_deref() == Some(kiln_jail::warden::WARDEN_ARG.as_ref()) {
        kiln_jail::warden::main();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiln: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    // `kiln serve`'s settings are read before logging starts: they say whether spans are
    // exported too.
    let _entered = runtime.enter();
    let (command, serve) = match cli.command {
        Command::Serve(args) => match cli_serve::load(*args) {
            Ok(cfg) => (None, Some(cfg)),
            Err(e) => {
                eprintln!("kiln serve: {e:#}");
                std::process::exit(2);
            }
        },
        other => (Some(other), None),
    };
    let otlp = serve.as_ref().and_then(|c| {
        Some((
            c.telemetry.otlp_endpoint.as_deref()?,
            c.telemetry.service_name.as_str(),
        ))
    });
    let exporter = match telemetry::init(otlp) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(async {
        let Some(command) = command else {
            let cfg = serve.expect("a serve command has its settings");
            let code = cli_serve::run(cfg).await;
            if let Some(e) = exporter {
                // Its batch thread blocks while it sends the last spans.
                let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
            }
            return code;
        };
        match command {
            Command::Exec(args) => cli_exec::run(args).await,
            Command::Run(args) => cli_run::run(args).await,
            Command::Languages(args) => cli_languages::run(args),
            Command::Serve(_) => unreachable!("handled above"),
            Command::Sandbox(args) => cli_sandbox::run(args).await,
            Command::Call(args) => cli_call::call(args).await,
            Command::Codelet(args) => cli_call::codelet(args).await,
            Command::Doctor => doctor::run().await,
        }
    });
    std::process::exit(code);
}
