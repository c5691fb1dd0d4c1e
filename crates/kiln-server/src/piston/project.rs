//! Piston to domain and back: an execute body (or `init`) checked with Piston's messages and
//! decoded into the domain's `JobRequest`, and a job's outcome projected to Piston's stages and
//! its `RE`/`SG`/`TO`/`OL`/`XX` statuses (Kiln's verdicts cross-walked to Piston's).

use base64::Engine as _;
use kiln_core::job::StageFacts;
use kiln_core::{FileInput, JobOutcome, JobRequest, LimitRequest, OutputEncoding, Verdict};
use kiln_engine::Status;
use kiln_lang::Catalog;

use super::wire::{PistonError, PistonExecute, PistonResult, PistonStage};

/// A submission, checked: the domain's request, and what Piston's answers echo.
#[derive(Debug)]
pub struct Submission {
    /// The domain's request.
    pub request: JobRequest,
    /// The language as asked for (for "runtime is unknown").
    pub language: String,
    /// The version as asked for.
    pub version: String,
}

impl Submission {
    /// "<lang>-<ver> runtime is unknown", Piston's answer to a language or version Kiln lacks.
    pub fn unknown(&self) -> PistonError {
        PistonError::bad(format!(
            "{}-{} runtime is unknown",
            crate::error::echo(&self.language),
            crate::error::echo(&self.version)
        ))
    }
}

/// A Piston semver selector as the domain's version prefix: `*` (or `x`) is any version, and
/// trailing wildcard parts (`3.x`, `3.10.*`) are dropped. Anything else is matched as given, so
/// a range Kiln cannot read (`^3`) is an unknown runtime rather than a guess.
pub fn version_prefix(selector: &str) -> Option<String> {
    let mut parts: Vec<&str> = selector.trim().split('.').collect();
    while parts
        .last()
        .is_some_and(|p| matches!(*p, "x" | "X" | "*" | ""))
    {
        parts.pop();
    }
    (!parts.is_empty()).then(|| parts.join("."))
}

/// A limit in Piston's sense: absent, `0` (Piston reads 0 as unset) and, where `negative_unset`,
/// a negative value (`-1`, unlimited: Kiln keeps the language's default then) are unset; any
/// other negative is refused.
fn limit(
    value: Option<f64>,
    field: &str,
    negative_unset: bool,
) -> Result<Option<u64>, PistonError> {
    match value {
        None => Ok(None),
        Some(0.0) => Ok(None),
        Some(v) if v < 0.0 && negative_unset => Ok(None),
        Some(v) if v < 0.0 => Err(PistonError::bad(format!("{field} must be non-negative"))),
        Some(v) => Ok(Some(v.ceil() as u64)),
    }
}

/// Checks a body with Piston's messages and decodes it. `live`: for the WebSocket, whose stdin
/// comes as messages (so `stdin` is ignored and the job's stdin stays open).
pub fn submission(
    body: PistonExecute,
    catalog: &Catalog,
    live: bool,
) -> Result<Submission, PistonError> {
    let language = body
        .language
        .ok_or_else(|| PistonError::bad("language is required as a string"))?;
    let version = body
        .version
        .ok_or_else(|| PistonError::bad("version is required as a string"))?;
    let files = body
        .files
        .ok_or_else(|| PistonError::bad("files is required as an array"))?;
    let mut sub = Submission {
        request: JobRequest::default(),
        language,
        version,
    };
    let Some(found) = catalog.find(&sub.language).filter(|d| d.available()) else {
        return Err(sub.unknown());
    };
    let entry = found.language.entry.clone();
    let mut decoded = Vec::with_capacity(files.len());
    let mut any_utf8 = false;
    for (i, f) in files.into_iter().enumerate() {
        let content = f.content.ok_or_else(|| {
            PistonError::bad(format!("files[{i}].content is required as a string"))
        })?;
        let content = match f.encoding.as_deref() {
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(content.trim())
                .map_err(|e| {
                    PistonError::bad(format!("files[{i}].content is not valid base64: {e}"))
                })?,
            Some("hex") => hex(content.trim())
                .ok_or_else(|| PistonError::bad(format!("files[{i}].content is not valid hex")))?,
            // Piston reads any other encoding as utf8.
            _ => {
                any_utf8 = true;
                content.into_bytes()
            }
        };
        // Piston names an unnamed file `file<i>.code`; the first one is the program, and Kiln's
        // toolchains find it by the language's entry name.
        let name = match f.name.filter(|n| !n.is_empty()) {
            Some(n) => n,
            None if i == 0 => entry.clone(),
            None => format!("file{i}.code"),
        };
        decoded.push(FileInput { name, content });
    }
    if !any_utf8 {
        return Err(PistonError::bad(
            "files must include at least one utf8 encoded file",
        ));
    }
    let limits = LimitRequest {
        wall_time_ms: limit(body.run_timeout, "run_timeout", false)?,
        cpu_ms: limit(body.run_cpu_time, "run_cpu_time", false)?,
        memory_mb: limit(body.run_memory_limit, "run_memory_limit", true)?
            .map(|bytes| bytes.div_ceil(1 << 20)),
        ..LimitRequest::default()
    };
    // Kiln's compile stage keeps the language's limits; Piston's own refusals still apply.
    limit(body.compile_timeout, "compile_timeout", false)?;
    limit(body.compile_cpu_time, "compile_cpu_time", false)?;
    let stdin = (!live).then(|| {
        // Piston ends stdin with a newline when it lacks one (an empty one too).
        let mut s = body.stdin.unwrap_or_default();
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s.into_bytes()
    });
    sub.request = JobRequest {
        language: sub.language.clone(),
        version: version_prefix(&sub.version),
        files: decoded,
        limits,
        collect_output: !live,
        capture_artifacts: false,
        trace: None,
        stdin,
        args: body.args.unwrap_or_default(),
        compile_options: Vec::new(),
        auto_start: true,
        output_encoding: OutputEncoding::Utf8,
    };
    Ok(sub)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a stage wrote, gathered from the job's events.
#[derive(Debug, Default, Clone)]
pub struct Written {
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
    /// Both, in the order written.
    pub output: String,
}

/// Piston's status, signal and message of a stage's verdict (the cross-walk of Kiln's verdicts).
fn status_of(f: &StageFacts) -> (Option<&'static str>, Option<String>, Option<String>) {
    let signal = f.signal.clone();
    let killed = || Some(signal.clone().unwrap_or_else(|| "SIGKILL".into()));
    match f.status {
        Status::Ok => (None, signal, None),
        Status::NonzeroExit | Status::CompileError => (
            Some("RE"),
            signal,
            Some(format!(
                "Exited with error status {}",
                f.exit_code.unwrap_or(1)
            )),
        ),
        Status::Signaled => {
            let name = signal.clone().unwrap_or_default();
            (
                Some("SG"),
                signal,
                Some(format!("Caught fatal signal {name}")),
            )
        }
        Status::TimeLimit => (Some("TO"), killed(), Some("Time limit exceeded".into())),
        Status::WallTimeLimit => (
            Some("TO"),
            killed(),
            Some("Time limit exceeded (wall clock)".into()),
        ),
        Status::IdleTimeLimit => (
            Some("TO"),
            killed(),
            Some("Time limit exceeded (no output and no input)".into()),
        ),
        // Piston has no status of its own for memory: the kernel's kill is a signal.
        Status::MemoryLimit => (Some("SG"), killed(), Some("Memory limit exceeded".into())),
        Status::OutputLimit => (Some("OL"), killed(), Some("output length exceeded".into())),
        Status::Killed => (Some("SG"), killed(), Some("Killed".into())),
        Status::InternalError => (
            Some("XX"),
            signal,
            Some(f.message.clone().unwrap_or_else(|| "internal error".into())),
        ),
    }
}

/// One stage as Piston shows it.
pub fn stage(f: &StageFacts, written: Written) -> PistonStage {
    let (status, signal, message) = status_of(f);
    PistonStage {
        stdout: written.stdout,
        stderr: written.stderr,
        output: written.output,
        code: f.exit_code,
        signal,
        message,
        status: status.map(String::from),
        cpu_time: f.cpu_ms,
        wall_time: f.wall_ms,
        memory: f.memory_bytes,
    }
}

/// A stage that never ran (the job was killed before its start, expired, or Kiln failed it).
fn unrun(o: &JobOutcome) -> PistonStage {
    let (status, signal) = match o.verdict {
        Verdict::Run(Status::Killed) => ("SG", Some("SIGKILL".to_string())),
        _ => ("XX", None),
    };
    PistonStage {
        stdout: String::new(),
        stderr: String::new(),
        output: String::new(),
        code: None,
        signal,
        message: Some(o.message.clone().unwrap_or_else(|| "did not run".into())),
        status: Some(status.into()),
        cpu_time: 0,
        wall_time: 0,
        memory: 0,
    }
}

/// A finished job as Piston's result. `compiled`: the language has a compile stage (Piston
/// shows `compile` exactly then); `run` is what the run stage wrote.
pub fn result(
    o: &JobOutcome,
    piston_language: &str,
    version: &str,
    compiled: bool,
    run: Written,
) -> PistonResult {
    let compile = compiled.then(|| match &o.compile {
        Some(facts) => {
            let out = o.compile_output.as_ref();
            stage(
                facts,
                Written {
                    stdout: out.map(|c| c.stdout.clone()).unwrap_or_default(),
                    stderr: out.map(|c| c.stderr.clone()).unwrap_or_default(),
                    output: out.map(|c| c.output.clone()).unwrap_or_default(),
                },
            )
        }
        None => unrun(o),
    });
    let run = match (&o.run, &compile) {
        (Some(facts), _) => stage(facts, run),
        // Piston's backward-compatible answer to a failed compile: `run` is its copy.
        (None, Some(c)) if o.compile.is_some() => c.clone(),
        _ => unrun(o),
    };
    PistonResult {
        language: piston_language.to_string(),
        version: version.to_string(),
        run,
        compile,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_become_prefixes() {
        assert_eq!(version_prefix("*"), None);
        assert_eq!(version_prefix("3.x"), Some("3".into()));
        assert_eq!(version_prefix("3.10.*"), Some("3.10".into()));
        assert_eq!(version_prefix("3.11.2"), Some("3.11.2".into()));
        assert_eq!(version_prefix("^3"), Some("^3".into()));
    }

    #[test]
    fn hex_decodes_pairs_only() {
        assert_eq!(hex("6869"), Some(b"hi".to_vec()));
        assert_eq!(hex("686"), None);
        assert_eq!(hex("zz"), None);
    }

    #[test]
    fn a_timed_out_stage_is_to_with_sigkill() {
        let f = StageFacts {
            status: Status::WallTimeLimit,
            exit_code: None,
            signal: None,
            cpu_ms: 1,
            wall_ms: 2,
            memory_bytes: 3,
            truncated: false,
            message: None,
        };
        let s = stage(&f, Written::default());
        assert_eq!(s.status.as_deref(), Some("TO"));
        assert_eq!(s.signal.as_deref(), Some("SIGKILL"));
    }
}
