//! `kiln call` and `kiln codelet`: a function of a local file called in a fresh sandbox on this
//! machine (no server), and a codelet run likewise. The value goes to stdout as JSON; what the
//! code printed goes to stderr, so `kiln call` composes in pipelines. `--json` prints the whole
//! result, in the HTTP API's shape.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kiln_core::functions::{
    CallRequest, CodeletRequest, FunctionService, FunctionsConfig, FunctionsError,
};
use kiln_engine::{Engine, EngineConfig};
use kiln_lang::Catalog;
use kiln_server::functions::wire::{codelet_result, execution_result, ResultOptions};
use kiln_workload::function::FunctionLanguage;
use kiln_workload::mount::{MountConfig, PermissionsConfig};
use serde_json::{Map, Value};

use crate::cli_common::{describe, error_status, UsageError};
use crate::units::{parse_duration, parse_memory};

/// `kiln call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The source file (its extension picks the language unless --language says).
    file: PathBuf,
    /// The function to call.
    function: String,
    /// Positional arguments, each JSON (`42`, `"text"`, `[1,2]`); a word that is not JSON is a
    /// string.
    args: Vec<String>,
    /// Keyword arguments, a JSON object.
    #[arg(long)]
    kwargs: Option<String>,
    /// A host directory at a path in the sandbox, `HOST:GUEST` (read-only rules) or
    /// `HOST:GUEST:rw` (the call may create, modify and delete, and its changes are synced
    /// back). Repeatable.
    #[arg(long = "mount")]
    mounts: Vec<String>,
    /// The language (python, javascript, ruby, php, c, cpp).
    #[arg(long)]
    language: Option<String>,
    /// The timeout (e.g. 5s) [default: 10s]
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Memory (e.g. 512M) [default: 256M]
    #[arg(long, value_parser = parse_memory)]
    memory: Option<u64>,
    /// Print the whole result as JSON.
    #[arg(long)]
    json: bool,
}

/// `kiln codelet`.
#[derive(Debug, Args)]
pub struct CodeletArgs {
    /// The codelet's source: a JavaScript module exporting `async function main(input, {logger})`.
    file: PathBuf,
    /// The input, JSON.
    #[arg(long, default_value = "null")]
    input: String,
    /// Read-only globals, a JSON object.
    #[arg(long)]
    globals: Option<String>,
    /// The export to call.
    #[arg(long = "export", default_value = "main")]
    export_name: String,
    /// The timeout (e.g. 2s) [default: 2s]
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Print the whole result as JSON.
    #[arg(long)]
    json: bool,
}

fn usage(message: String) -> anyhow::Error {
    anyhow::Error::new(UsageError(message))
}

/// A refused request is the user's mistake (exit status 2); the rest is Kiln's.
fn refusal(e: FunctionsError) -> anyhow::Error {
    match e {
        FunctionsError::Invalid(fields) => {
            let lines: Vec<String> = fields
                .iter()
                .map(|f| format!("{}: {}", f.path, f.message))
                .collect();
            usage(lines.join("; "))
        }
        e => e.into(),
    }
}

/// The service, and its engine: [`Engine::settle`] before exiting, so that no sandbox's removal
/// is cut short.
fn service(language: &str) -> anyhow::Result<(FunctionService, Arc<Engine>)> {
    let exe = std::env::current_exe().context("locating the kiln binary")?;
    let mut cfg = EngineConfig::new(exe);
    cfg.pool_size = 0;
    let engine = Arc::new(Engine::new(cfg).context("preparing the host (try `kiln doctor`)")?);
    // Only the toolchain the call needs is detected: the others' version commands would cost
    // more than the call.
    let wanted = FunctionLanguage::parse(language).map(FunctionLanguage::catalog_name);
    let languages = Catalog::embedded()
        .context("the language catalog")?
        .all()
        .iter()
        .filter(|l| Some(l.name.as_str()) == wanted)
        .cloned()
        .collect();
    let catalog = Arc::new(Catalog::new(languages));
    let service = FunctionService::new(engine.clone(), catalog, FunctionsConfig::default());
    Ok((service, engine))
}

/// The function language of `file`'s extension, by the catalog's extensions (no detection).
fn language_of(file: &Path) -> Option<&'static str> {
    let ext = file.extension()?.to_str()?;
    let catalog = Catalog::embedded().ok()?;
    let language = catalog
        .all()
        .iter()
        .find(|l| l.extensions.iter().any(|e| e == ext))?;
    FunctionLanguage::parse(&language.name).map(FunctionLanguage::catalog_name)
}

fn json_arg(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn mount_config(specs: &[String]) -> anyhow::Result<Option<MountConfig>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let mut config = MountConfig::default();
    let mut writable = false;
    for spec in specs {
        let mut parts = spec.splitn(3, ':');
        let (Some(host), Some(guest)) = (parts.next(), parts.next()) else {
            return Err(usage(format!("--mount {spec}: expected HOST:GUEST[:rw]")));
        };
        match parts.next() {
            None | Some("ro") => {}
            Some("rw") => writable = true,
            Some(other) => {
                return Err(usage(format!(
                    "--mount {spec}: the mode is ro or rw, not {other}"
                )))
            }
        }
        config.dirs.insert(guest.to_string(), host.to_string());
    }
    if writable {
        config.permissions = PermissionsConfig::all_allowed();
    }
    Ok(Some(config))
}

/// Runs `kiln call`.
pub async fn call(args: CallArgs) -> i32 {
    match call_inner(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln call: {}", describe(&e));
            error_status(&e)
        }
    }
}

async fn call_inner(args: CallArgs) -> anyhow::Result<i32> {
    let language = match &args.language {
        Some(l) => l.clone(),
        None => language_of(&args.file)
            .ok_or_else(|| {
                usage(format!(
                    "{}: cannot tell the language from the extension; give --language",
                    args.file.display()
                ))
            })?
            .to_string(),
    };
    let code = std::fs::read_to_string(&args.file)
        .map_err(|e| usage(format!("{}: {e}", args.file.display())))?;
    let kwargs = match &args.kwargs {
        None => Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            _ => return Err(usage("--kwargs: must be a JSON object".into())),
        },
    };
    let request = CallRequest {
        language,
        code,
        function_name: args.function.clone(),
        args: args.args.iter().map(|a| json_arg(a)).collect(),
        kwargs,
        mount: mount_config(&args.mounts)?,
        timeout_ms: args.timeout.map(|t| t.as_millis().max(1) as u64),
        memory_mb: args.memory.map(|b| (b >> 20).max(1)),
        ..CallRequest::default()
    };
    let (service, engine) = service(&request.language)?;
    let report = service.call(request, None).await;
    engine.settle().await;
    let report = report.map_err(refusal)?;
    let result = execution_result(report, ResultOptions::default());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(result.exit_code);
    }
    eprint!("{}", result.stdout);
    eprint!("{}", result.stderr);
    match (&result.result, &result.error) {
        (Some(value), _) => println!("{}", serde_json::to_string(value)?),
        (None, Some(error)) => eprintln!(
            "kiln call: {} ({}): {}",
            result.status,
            error["type"].as_str().unwrap_or("Error"),
            error["message"].as_str().unwrap_or("")
        ),
        (None, None) => eprintln!("kiln call: {}", result.status),
    }
    Ok(result.exit_code)
}

/// Runs `kiln codelet`.
pub async fn codelet(args: CodeletArgs) -> i32 {
    match codelet_inner(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln codelet: {}", describe(&e));
            error_status(&e)
        }
    }
}

async fn codelet_inner(args: CodeletArgs) -> anyhow::Result<i32> {
    let code = std::fs::read_to_string(&args.file)
        .map_err(|e| usage(format!("{}: {e}", args.file.display())))?;
    let input =
        serde_json::from_str(&args.input).map_err(|e| usage(format!("--input: not JSON: {e}")))?;
    let globals = match &args.globals {
        None => None,
        Some(text) => Some(
            serde_json::from_str(text).map_err(|e| usage(format!("--globals: not JSON: {e}")))?,
        ),
    };
    let request = CodeletRequest {
        code,
        export_name: Some(args.export_name.clone()),
        input,
        globals,
        timeout_ms: args.timeout.map(|t| t.as_millis().max(1) as u64),
        memory_mb: None,
    };
    let (service, engine) = service("javascript")?;
    let outcome = service.codelet(request).await;
    engine.settle().await;
    let outcome = outcome.map_err(refusal)?;
    let result = codelet_result(outcome);
    let code = match result.error.as_ref().and_then(|e| e["code"].as_str()) {
        None => 0,
        Some("TIMEOUT") => 124,
        Some(_) => 1,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(code);
    }
    for log in &result.logs {
        eprintln!(
            "[{}] {}",
            log["level"].as_str().unwrap_or("log"),
            log["message"].as_str().unwrap_or("")
        );
    }
    match (&result.value, &result.error) {
        (_, Some(error)) => eprintln!(
            "kiln codelet: {}: {}",
            error["code"].as_str().unwrap_or("RUNTIME_ERROR"),
            error["message"].as_str().unwrap_or("")
        ),
        (value, None) => println!(
            "{}",
            serde_json::to_string(value.as_ref().unwrap_or(&Value::Null))?
        ),
    }
    Ok(code)
}
