//! Judge0 to domain and back: Judge0's language ids for Kiln's languages, the `fields` list, a
//! submission's check (in [`super::check`]), and a job's record projected to a Judge0 submission (its status ids, seconds as decimal strings, KB,
//! MIME-style base64, `null` for empty output, millisecond `Z` timestamps, the `fields` filter).

use base64::Engine as _;
use kiln_core::job::StageFacts;
use kiln_core::{JobOutcome, JobState, Verdict};
use kiln_engine::Status;
use kiln_lang::{Catalog, Detected};
use serde_json::{Map, Value};

use super::wire::{Judge0Error, Judge0Status};

/// The Judge0 languages the host has: id, name, and Kiln's language, sorted by name as Judge0
/// sorts them. The ids are data of the language files (`[compat] judge0`); several ids of one
/// language (Judge0 listed each GCC it had) all run Kiln's one toolchain, so the Python SDK's
/// aliases (`CPP` is 52) resolve.
pub fn languages(catalog: &Catalog) -> Vec<(u32, String, &Detected)> {
    let mut list: Vec<_> = catalog
        .available()
        .flat_map(|d| {
            let version = d.version.as_deref().unwrap_or_default();
            d.language
                .compat
                .judge0
                .iter()
                .map(move |(id, name)| (*id, name.replace("{}", version), d))
        })
        .collect();
    list.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    list
}

/// The host's language of a Judge0 id.
pub fn language(catalog: &Catalog, id: u32) -> Option<(u32, String, &Detected)> {
    languages(catalog).into_iter().find(|l| l.0 == id)
}

/// Judge0's fourteen statuses.
pub const STATUSES: [Judge0Status; 14] = [
    st(1, "In Queue"),
    st(2, "Processing"),
    st(3, "Accepted"),
    st(4, "Wrong Answer"),
    st(5, "Time Limit Exceeded"),
    st(6, "Compilation Error"),
    st(7, "Runtime Error (SIGSEGV)"),
    st(8, "Runtime Error (SIGXFSZ)"),
    st(9, "Runtime Error (SIGFPE)"),
    st(10, "Runtime Error (SIGABRT)"),
    st(11, "Runtime Error (NZEC)"),
    st(12, "Runtime Error (Other)"),
    st(13, "Internal Error"),
    st(14, "Exec Format Error"),
];

const fn st(id: u8, description: &'static str) -> Judge0Status {
    Judge0Status { id, description }
}

fn status(id: u8) -> Judge0Status {
    STATUSES[usize::from(id.clamp(1, 14)) - 1]
}

/// Every attribute, in Judge0's column order (`fields=*`).
pub const ALL_FIELDS: &[&str] = &[
    "source_code",
    "language_id",
    "stdin",
    "expected_output",
    "stdout",
    "status_id",
    "created_at",
    "finished_at",
    "time",
    "memory",
    "stderr",
    "token",
    "number_of_runs",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "compile_output",
    "exit_code",
    "exit_signal",
    "message",
    "wall_time",
    "compiler_options",
    "command_line_arguments",
    "redirect_stderr_to_stdout",
    "callback_url",
    "additional_files",
    "enable_network",
    "status",
    "language",
];

/// Judge0's default fields.
pub const DEFAULT_FIELDS: &[&str] = &[
    "token",
    "time",
    "memory",
    "stdout",
    "stderr",
    "compile_output",
    "message",
    "status",
];

/// The fields a `fields` parameter asks for; an unknown one is Judge0's 400.
pub fn fields(param: Option<&str>) -> Result<Vec<&'static str>, Judge0Error> {
    let Some(param) = param.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(DEFAULT_FIELDS.to_vec());
    };
    if param == "*" {
        return Ok(ALL_FIELDS.to_vec());
    }
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for f in param.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match ALL_FIELDS.iter().find(|a| **a == f) {
            Some(a) => out.push(*a),
            None => bad.push(crate::error::echo(f).to_string()),
        }
    }
    if !bad.is_empty() {
        return Err(Judge0Error::bad(format!(
            "invalid fields: [{}]",
            bad.join(", ")
        )));
    }
    Ok(out)
}

pub use super::check::{check, Checked, Settings};

/// Judge0's comparison: each line without trailing whitespace, then the whole trimmed.
pub fn same_output(expected: &[u8], got: &[u8]) -> bool {
    fn norm(b: &[u8]) -> String {
        let ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\0');
        String::from_utf8_lossy(b)
            .split('\n')
            .map(|l| l.trim_end_matches(ws))
            .collect::<Vec<_>>()
            .join("\n")
            .trim_matches(ws)
            .to_string()
    }
    norm(expected) == norm(got)
}

/// A signal's number from its name.
pub fn signal_number(name: &str) -> Option<i32> {
    const NAMES: &[(&str, i32)] = &[
        ("SIGHUP", 1),
        ("SIGINT", 2),
        ("SIGQUIT", 3),
        ("SIGILL", 4),
        ("SIGTRAP", 5),
        ("SIGABRT", 6),
        ("SIGBUS", 7),
        ("SIGFPE", 8),
        ("SIGKILL", 9),
        ("SIGUSR1", 10),
        ("SIGSEGV", 11),
        ("SIGUSR2", 12),
        ("SIGPIPE", 13),
        ("SIGALRM", 14),
        ("SIGTERM", 15),
        ("SIGXCPU", 24),
        ("SIGXFSZ", 25),
        ("SIGSYS", 31),
    ];
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// What the run stage wrote, as bytes.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// stdout.
    pub stdout: Vec<u8>,
    /// stderr.
    pub stderr: Vec<u8>,
    /// Both, in the order written.
    pub both: Vec<u8>,
}

/// A finished submission's result fields.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Its status.
    pub status: Judge0Status,
    /// stdout (both streams with `redirect_stderr_to_stdout`).
    pub stdout: Vec<u8>,
    /// stderr.
    pub stderr: Vec<u8>,
    /// What the compiler printed.
    pub compile_output: Vec<u8>,
    /// isolate's words for how it ended.
    pub message: Option<String>,
    /// CPU seconds of the run.
    pub time: Option<f64>,
    /// Wall seconds of the run.
    pub wall_time: Option<f64>,
    /// Peak memory of the run, KB.
    pub memory: Option<u64>,
    /// The run's exit code.
    pub exit_code: Option<i32>,
    /// The signal that ended the run.
    pub exit_signal: Option<i32>,
}

/// The status, message and signal of a run stage (the cross-walk of Kiln's verdicts to
/// Judge0's ids). Kiln's memory verdict has no Judge0 status: the kernel's kill is
/// `Runtime Error (Other)` with signal 9, as Judge0 reports it.
fn run_status(
    f: &StageFacts,
    expected: Option<&[u8]>,
    stdout: &[u8],
) -> (u8, Option<String>, Option<i32>) {
    let sig = f.signal.as_deref().and_then(signal_number);
    match f.status {
        Status::Ok => match expected {
            Some(e) if !same_output(e, stdout) => (4, None, None),
            _ => (3, None, None),
        },
        Status::NonzeroExit | Status::CompileError => (
            11,
            Some(format!(
                "Exited with error status {}",
                f.exit_code.unwrap_or(1)
            )),
            None,
        ),
        Status::Signaled => {
            let id = match sig {
                Some(11) => 7,
                Some(25) => 8,
                Some(8) => 9,
                Some(6) => 10,
                _ => 12,
            };
            (
                id,
                Some(format!("Caught fatal signal {}", sig.unwrap_or(0))),
                sig,
            )
        }
        Status::TimeLimit => (5, Some("Time limit exceeded".into()), Some(9)),
        Status::WallTimeLimit | Status::IdleTimeLimit => {
            (5, Some("Time limit exceeded (wall clock)".into()), Some(9))
        }
        Status::MemoryLimit => (12, Some("Memory limit exceeded".into()), Some(9)),
        // Judge0's output goes to a file under its size limit: the kernel's SIGXFSZ.
        Status::OutputLimit => (8, Some("Output limit exceeded".into()), Some(25)),
        Status::Killed => (12, Some("Killed".into()), Some(9)),
        Status::InternalError => (
            13,
            Some(f.message.clone().unwrap_or_else(|| "internal error".into())),
            None,
        ),
    }
}

/// A finished job as Judge0's result fields.
pub fn finished(o: &JobOutcome, expected: Option<&[u8]>, redirect: bool, w: Written) -> Finished {
    let compile_output = o
        .compile_output
        .as_ref()
        .map(|c| c.output.clone().into_bytes())
        .unwrap_or_default();
    let stdout = if redirect { w.both } else { w.stdout };
    let stderr = if redirect { Vec::new() } else { w.stderr };
    let mut out = Finished {
        status: status(13),
        stdout,
        stderr,
        compile_output,
        message: None,
        time: None,
        wall_time: None,
        memory: None,
        exit_code: None,
        exit_signal: None,
    };
    let compile_failed = o.compile.as_ref().is_some_and(|c| c.status != Status::Ok);
    match (&o.run, o.verdict) {
        (Some(f), _) => {
            let (id, message, signal) = run_status(f, expected, &out.stdout);
            out.status = status(id);
            out.message = message;
            out.exit_signal = signal;
            // isolate's meta has no exit code after a signal; Judge0 reports 0 then.
            out.exit_code = Some(f.exit_code.unwrap_or(0));
            out.time = Some(f.cpu_ms as f64 / 1000.0);
            out.wall_time = Some(f.wall_ms as f64 / 1000.0);
            out.memory = Some(f.memory_bytes / 1024);
        }
        (None, Verdict::Run(Status::InternalError)) | (None, Verdict::Expired) => {
            out.message = o.message.clone();
        }
        (None, _) if compile_failed => {
            out.status = status(6);
            if o.compile
                .as_ref()
                .is_some_and(|c| matches!(c.status, Status::TimeLimit | Status::WallTimeLimit))
            {
                out.compile_output
                    .extend_from_slice(b"Compilation time limit exceeded.");
            }
        }
        (None, Verdict::Run(Status::CompileError)) => out.status = status(6),
        (None, _) => {
            out.status = status(13);
            out.message = o.message.clone();
        }
    }
    out
}

/// The status of a job not over yet.
/// The result of several runs of one submission (`number_of_runs`), in order: the last one's,
/// with time, wall time and memory averaged over them all, as Judge0 reports them.
pub fn combined(mut runs: Vec<Finished>) -> Option<Finished> {
    fn mean<T: Copy + Into<f64>>(xs: impl Iterator<Item = Option<T>>) -> Option<f64> {
        let xs: Vec<f64> = xs.flatten().map(Into::into).collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
    }
    let time = mean(runs.iter().map(|r| r.time));
    let wall_time = mean(runs.iter().map(|r| r.wall_time));
    let memory = mean(runs.iter().map(|r| r.memory.map(|m| m as f64)));
    let mut last = runs.pop()?;
    last.time = time;
    last.wall_time = wall_time;
    last.memory = memory.map(|m| m.round() as u64);
    Some(last)
}

/// The pending status of a job in `state`.
pub fn pending(state: JobState) -> Judge0Status {
    match state {
        JobState::Queued => status(1),
        _ => status(2),
    }
}

/// Ms since the epoch as `2024-04-03T05:40:51.306Z`.
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds as Judge0's decimal string (`"0.012"`, `"5.0"`).
pub fn decimal(s: f64) -> String {
    let t = format!("{s:.3}");
    let t = t.trim_end_matches('0');
    if t.ends_with('.') {
        format!("{t}0")
    } else {
        t.to_string()
    }
}

/// Bytes as Ruby's `Base64.encode64`: a newline after every 60 characters and at the end.
pub fn mime_base64(b: &[u8]) -> String {
    let flat = base64::engine::general_purpose::STANDARD.encode(b);
    let mut out = String::with_capacity(flat.len() + flat.len() / 60 + 1);
    for chunk in flat.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// A text field: `null` when absent or empty, base64 when asked, else UTF-8 (`Err` when it is
/// not, Judge0's cue to ask for base64).
fn text_value(b: Option<&[u8]>, base64: bool) -> Result<Value, ()> {
    match b {
        None => Ok(Value::Null),
        Some([]) => Ok(Value::Null),
        Some(b) if base64 => Ok(Value::String(mime_base64(b))),
        Some(b) => std::str::from_utf8(b)
            .map(|s| Value::String(s.to_string()))
            .map_err(|_| ()),
    }
}

/// The message of a submission whose text is not UTF-8, without `base64_encoded=true`.
pub const NOT_UTF8: &str = "some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true query parameter";

/// Everything a submission's view is made of.
#[derive(Debug)]
pub struct View<'a> {
    /// Its token.
    pub token: &'a str,
    /// What was submitted.
    pub checked: &'a Checked,
    /// Its language's Judge0 name.
    pub language_name: String,
    /// When it was made, ms.
    pub created_at_ms: i64,
    /// When it ended, ms, and how.
    pub finished: Option<(i64, Finished)>,
    /// Its status while it is not over.
    pub pending: Judge0Status,
}

/// A submission's `fields`, as Judge0 serializes them. `Err` carries [`NOT_UTF8`].
pub fn render(
    v: &View<'_>,
    fields: &[&str],
    base64: bool,
) -> Result<Map<String, Value>, Judge0Error> {
    let s = &v.checked.settings;
    let f = v.finished.as_ref().map(|(_, f)| f);
    let status = f.map_or(v.pending, |f| f.status);
    let utf8 = |r: Result<Value, ()>| r.map_err(|()| Judge0Error::bad(NOT_UTF8));
    let mut m = Map::new();
    for field in fields {
        let value = match *field {
            "source_code" => utf8(text_value(Some(&v.checked.source_code), base64))?,
            "language_id" => v.checked.language_id.into(),
            "stdin" => utf8(text_value(v.checked.stdin.as_deref(), base64))?,
            "expected_output" => utf8(text_value(v.checked.expected_output.as_deref(), base64))?,
            "stdout" => utf8(text_value(f.map(|f| f.stdout.as_slice()), base64))?,
            "stderr" => utf8(text_value(f.map(|f| f.stderr.as_slice()), base64))?,
            "compile_output" => utf8(text_value(f.map(|f| f.compile_output.as_slice()), base64))?,
            "message" => utf8(text_value(
                f.and_then(|f| f.message.as_deref()).map(str::as_bytes),
                base64,
            ))?,
            "status_id" => status.id.into(),
            "status" => serde_json::to_value(status).unwrap_or(Value::Null),
            "language" => serde_json::json!({"id": v.checked.language_id, "name": v.language_name}),
            "created_at" => timestamp(v.created_at_ms).into(),
            "finished_at" => v.finished.as_ref().map(|(ms, _)| timestamp(*ms)).into(),
            "time" => f.and_then(|f| f.time).map(decimal).into(),
            "wall_time" => f.and_then(|f| f.wall_time).map(decimal).into(),
            "memory" => f.and_then(|f| f.memory).into(),
            "exit_code" => f.and_then(|f| f.exit_code).into(),
            "exit_signal" => f.and_then(|f| f.exit_signal).into(),
            "token" => v.token.into(),
            "number_of_runs" => s.number_of_runs.into(),
            "cpu_time_limit" => decimal(s.cpu_time_limit).into(),
            "cpu_extra_time" => decimal(s.cpu_extra_time).into(),
            "wall_time_limit" => decimal(s.wall_time_limit).into(),
            "memory_limit" => s.memory_limit.into(),
            "stack_limit" => s.stack_limit.into(),
            "max_processes_and_or_threads" => s.max_processes_and_or_threads.into(),
            "enable_per_process_and_thread_time_limit" => s.per_process_time.into(),
            "enable_per_process_and_thread_memory_limit" => s.per_process_memory.into(),
            "max_file_size" => s.max_file_size.into(),
            "compiler_options" => s.compiler_options.clone().into(),
            "command_line_arguments" => s.command_line_arguments.clone().into(),
            "redirect_stderr_to_stdout" => s.redirect_stderr_to_stdout.into(),
            "callback_url" => s.callback_url.clone().into(),
            "additional_files" => s.additional_files.clone().into(),
            "enable_network" => false.into(),
            _ => continue,
        };
        m.insert((*field).to_string(), value);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_compare_as_judge0_does() {
        assert!(same_output(b"hello\n", b"hello"));
        assert!(same_output(b"a  \nb\n\n", b"a\nb"));
        assert!(same_output(b"\n a", b" a\n"));
        assert!(!same_output(b"a b", b"a  b"));
        assert!(!same_output(b"a\n\nb", b"a\nb"));
    }

    #[test]
    fn serialization_quirks() {
        assert_eq!(timestamp(1_712_122_851_306), "2024-04-03T05:40:51.306Z");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(decimal(0.001), "0.001");
        assert_eq!(decimal(5.0), "5.0");
        assert_eq!(decimal(0.12), "0.12");
        assert_eq!(mime_base64(b"hello, Judge0\n"), "aGVsbG8sIEp1ZGdlMAo=\n");
        let long = mime_base64(&[b'x'; 100]);
        assert_eq!(long.lines().next().unwrap().len(), 60);
        assert!(long.ends_with('\n'));
    }

    #[test]
    fn fields_are_checked() {
        assert_eq!(fields(None).unwrap(), DEFAULT_FIELDS);
        assert_eq!(fields(Some("*")).unwrap().len(), ALL_FIELDS.len());
        assert_eq!(
            fields(Some("stdout, time")).unwrap(),
            vec!["stdout", "time"]
        );
        assert!(fields(Some("stdout,x,y")).is_err());
    }
}
