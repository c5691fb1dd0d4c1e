//! A Judge0 submission body checked as Judge0 checks it, every problem under its field with
//! Judge0's 422 messages (Rails' casts of numbers and flags, its bounds and defaults, base64 text,
//! the options `[judge0]` allows), and decoded into the domain's `JobRequest`.

use std::collections::BTreeMap;

use base64::Engine as _;
use kiln_core::{FileInput, JobRequest, LimitRequest, OutputEncoding};
use kiln_lang::Catalog;
use serde_json::Value;

use super::project::language;
use super::wire::{Judge0Error, SubmissionRequest};
use crate::config::ServerConfig;

/// The settings of a submission, as Judge0 echoes them (its defaults where unset).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `cpu_time_limit`, s.
    pub cpu_time_limit: f64,
    /// `cpu_extra_time`, s.
    pub cpu_extra_time: f64,
    /// `wall_time_limit`, s.
    pub wall_time_limit: f64,
    /// `memory_limit`, KB.
    pub memory_limit: u64,
    /// `stack_limit`, KB.
    pub stack_limit: u64,
    /// `max_processes_and_or_threads`.
    pub max_processes_and_or_threads: u64,
    /// `enable_per_process_and_thread_time_limit`.
    pub per_process_time: bool,
    /// `enable_per_process_and_thread_memory_limit`.
    pub per_process_memory: bool,
    /// `max_file_size`, KB.
    pub max_file_size: u64,
    /// `number_of_runs`.
    pub number_of_runs: u64,
    /// `redirect_stderr_to_stdout`.
    pub redirect_stderr_to_stdout: bool,
    /// `compiler_options`.
    pub compiler_options: Option<String>,
    /// `command_line_arguments`.
    pub command_line_arguments: Option<String>,
    /// `callback_url`.
    pub callback_url: Option<String>,
    /// `additional_files`, as given (base64).
    pub additional_files: Option<String>,
}

/// A submission, checked: what Judge0 echoes, and the domain's request.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Judge0's language id.
    pub language_id: u32,
    /// The program.
    pub source_code: Vec<u8>,
    /// stdin.
    pub stdin: Option<Vec<u8>>,
    /// The expected stdout.
    pub expected_output: Option<Vec<u8>>,
    /// The echoed settings.
    pub settings: Settings,
    /// The domain's request.
    pub request: JobRequest,
}

/// Collects a body's problems per field, as Rails' validations do (all of them at once).
#[derive(Default)]
struct Problems(BTreeMap<String, Vec<String>>);

impl Problems {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_string())
            .or_default()
            .push(message.into());
    }
}

/// A number Rails would cast: a JSON number or a numeric string.
fn number(v: &Option<Value>, field: &str, p: &mut Problems) -> Option<f64> {
    let n = match v.as_ref()? {
        Value::Null => return None,
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.trim().is_empty() => return None,
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    if n.is_none() {
        p.add(field, "is not a number");
    }
    n.filter(|n| n.is_finite())
}

/// A number within Judge0's bounds, or its default.
fn bounded(
    v: &Option<Value>,
    field: &str,
    default: f64,
    (min, max): (f64, f64),
    p: &mut Problems,
) -> f64 {
    let Some(n) = number(v, field, p) else {
        return default;
    };
    if n < min {
        p.add(
            field,
            format!("must be greater than or equal to {}", fmt_num(min)),
        );
    } else if n > max {
        p.add(
            field,
            format!("must be less than or equal to {}", fmt_num(max)),
        );
    }
    n
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// A flag Rails would cast: a JSON bool, or `"true"`/`"1"` and their opposites.
fn boolean(v: &Option<Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "true" | "1" | "t" | "yes"),
        Some(Value::Number(n)) => n.as_f64() == Some(1.0),
        _ => false,
    }
}

/// A text field's bytes: as given, or decoded from base64 (newlines and spaces of MIME style
/// allowed, padding optional).
fn text(v: Option<String>, field: &str, base64: bool, p: &mut Problems) -> Option<Vec<u8>> {
    let v = v?;
    if !base64 {
        return Some(v.into_bytes());
    }
    let compact: String = v.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let engine = base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    match engine.decode(compact) {
        Ok(b) => Some(b),
        Err(_) => {
            p.add(field, "is not valid base64");
            None
        }
    }
}

/// Judge0 strips these from compiler options and arguments (they would reach a shell there).
fn unshell(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '$' | '&' | ';' | '<' | '>' | '|' | '`'))
        .collect()
}

/// Checks a body with Judge0's messages and decodes it; `cfg` says what the face takes
/// (`[judge0]`) and how many files a job may have.
pub fn check(
    body: SubmissionRequest,
    catalog: &Catalog,
    base64: bool,
    cfg: &ServerConfig,
) -> Result<Checked, Judge0Error> {
    let mut p = Problems::default();
    let language_id = match number(&body.language_id, "language_id", &mut p) {
        None if !p.0.contains_key("language_id") => {
            p.add("language_id", "can't be blank");
            None
        }
        None => None,
        Some(n) => {
            let id = n as i64;
            match u32::try_from(id).ok().and_then(|id| language(catalog, id)) {
                Some(l) => Some(l),
                None => {
                    p.add(
                        "language_id",
                        format!("language with id {id} doesn't exist"),
                    );
                    None
                }
            }
        }
    };
    let source_code = text(body.source_code, "source_code", base64, &mut p);
    if source_code.as_ref().is_none_or(|s| s.is_empty()) && !p.0.contains_key("source_code") {
        p.add("source_code", "can't be blank");
    }
    let stdin = text(body.stdin, "stdin", base64, &mut p);
    let expected_output = text(body.expected_output, "expected_output", base64, &mut p);
    let settings = Settings {
        cpu_time_limit: bounded(
            &body.cpu_time_limit,
            "cpu_time_limit",
            5.0,
            (0.0, 15.0),
            &mut p,
        ),
        cpu_extra_time: bounded(
            &body.cpu_extra_time,
            "cpu_extra_time",
            1.0,
            (0.0, 5.0),
            &mut p,
        ),
        wall_time_limit: bounded(
            &body.wall_time_limit,
            "wall_time_limit",
            10.0,
            (1.0, 20.0),
            &mut p,
        ),
        memory_limit: bounded(
            &body.memory_limit,
            "memory_limit",
            128000.0,
            (2048.0, 512000.0),
            &mut p,
        ) as u64,
        stack_limit: bounded(
            &body.stack_limit,
            "stack_limit",
            64000.0,
            (0.0, 128000.0),
            &mut p,
        ) as u64,
        max_processes_and_or_threads: bounded(
            &body.max_processes_and_or_threads,
            "max_processes_and_or_threads",
            60.0,
            (1.0, 120.0),
            &mut p,
        ) as u64,
        per_process_time: boolean(&body.enable_per_process_and_thread_time_limit),
        per_process_memory: boolean(&body.enable_per_process_and_thread_memory_limit),
        max_file_size: bounded(
            &body.max_file_size,
            "max_file_size",
            1024.0,
            (0.0, 4096.0),
            &mut p,
        ) as u64,
        number_of_runs: bounded(
            &body.number_of_runs,
            "number_of_runs",
            1.0,
            (1.0, 20.0),
            &mut p,
        ) as u64,
        redirect_stderr_to_stdout: boolean(&body.redirect_stderr_to_stdout),
        compiler_options: body
            .compiler_options
            .map(|s| unshell(&s))
            .filter(|s| !s.trim().is_empty()),
        command_line_arguments: body
            .command_line_arguments
            .map(|s| unshell(&s))
            .filter(|s| !s.trim().is_empty()),
        callback_url: body.callback_url.filter(|s| !s.trim().is_empty()),
        additional_files: body
            .additional_files
            .map(|s| s.chars().filter(|c| !c.is_ascii_whitespace()).collect())
            .filter(|s: &String| !s.is_empty()),
    };
    // Judge0's refusals of what its configuration (`[judge0]`) does not allow.
    if settings.compiler_options.is_some() {
        let language = language_id.as_ref().map(|l| &l.2.language);
        if !cfg.judge0.compiler_options {
            p.add(
                "compiler_options",
                "setting compiler options is not allowed",
            );
        } else if language.is_some_and(|l| !l.is_compiled()) {
            p.add(
                "compiler_options",
                "setting compiler options is only allowed for compiled languages",
            );
        } else if let Some(l) = language.filter(|l| !l.takes_compile_options()) {
            p.add(
                "compiler_options",
                format!("setting compiler options is not allowed for {}", l.name),
            );
        }
    }
    if boolean(&body.enable_network) {
        p.add("enable_network", "enabling network is not allowed");
    }
    let extra_files = match &settings.additional_files {
        Some(_) if !cfg.judge0.additional_files => {
            p.add("additional_files", "additional files are not allowed");
            Vec::new()
        }
        // Always base64, whatever `base64_encoded` says.
        Some(b64) => match text(Some(b64.clone()), "additional_files", true, &mut p) {
            Some(zip) => {
                let taken = language_id
                    .as_ref()
                    .map(|l| vec![l.2.language.entry.clone()])
                    .unwrap_or_default();
                let max_bytes = cfg.judge0.max_extract_kb.saturating_mul(1000);
                // The source file is one of the job's files.
                let max_files = cfg.max_files.saturating_sub(1);
                super::files::extract(&zip, max_bytes, max_files, &taken).unwrap_or_else(|e| {
                    p.add("additional_files", e.to_string());
                    Vec::new()
                })
            }
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    if let Some(url) = &settings.callback_url {
        if !cfg.judge0.callbacks {
            p.add("callback_url", "callbacks are not allowed");
        } else if let Err(e) = super::callback::Target::parse(url) {
            p.add("callback_url", e.to_string());
        }
    }
    for (field, v) in [
        ("compiler_options", &settings.compiler_options),
        ("command_line_arguments", &settings.command_line_arguments),
    ] {
        if v.as_ref().is_some_and(|s| s.len() > 512) {
            p.add(field, "is too long (maximum is 512 characters)");
        }
    }
    if !p.0.is_empty() {
        return Err(Judge0Error::Fields(p.0));
    }
    let (language_id, _, found) =
        language_id.ok_or_else(|| Judge0Error::field("language_id", "can't be blank"))?;
    let source_code = source_code.unwrap_or_default();
    let limits = LimitRequest {
        // 0 is isolate's "no limit": Kiln keeps the language's default then.
        cpu_ms: (settings.cpu_time_limit > 0.0)
            .then(|| (settings.cpu_time_limit * 1000.0).ceil() as u64),
        wall_time_ms: Some((settings.wall_time_limit * 1000.0).ceil() as u64),
        memory_mb: Some(settings.memory_limit.div_ceil(1024)),
        pids: Some(settings.max_processes_and_or_threads),
        file_size_kb: (settings.max_file_size > 0).then_some(settings.max_file_size),
        ..LimitRequest::default()
    };
    let request = JobRequest {
        language: found.language.name.clone(),
        version: None,
        files: std::iter::once(FileInput {
            name: found.language.entry.clone(),
            content: source_code.clone(),
        })
        .chain(extra_files)
        .collect(),
        limits,
        collect_output: true,
        capture_artifacts: false,
        trace: None,
        stdin: Some(stdin.clone().unwrap_or_default()),
        args: settings
            .command_line_arguments
            .as_deref()
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        compile_options: settings
            .compiler_options
            .as_deref()
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        auto_start: true,
        // The bytes as written: Judge0 base64-encodes them exactly.
        output_encoding: OutputEncoding::Base64,
    };
    Ok(Checked {
        language_id,
        source_code,
        stdin,
        expected_output,
        settings,
        request,
    })
}
