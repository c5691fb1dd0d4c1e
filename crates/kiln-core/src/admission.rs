//! Admission: turning what a client asks for into a job that can run, or a clear refusal naming
//! the field and the reason. Language and version resolution, file names and sizes, arguments,
//! and the limits (the contract's clamped to the server's maxima, Kiln's own refused past them)
//! are decided here once, for every face.

use std::collections::HashSet;
use std::time::Duration;

use kiln_engine::files::check_relative;
use kiln_engine::LimitOverrides;
use kiln_lang::{Catalog, SourceFile};
use kiln_workload::run_limits;
use kiln_workload::workspace::CaptureLimits;
use serde::{Deserialize, Serialize};

use crate::job::{JobSpec, OutputEncoding};

/// One file of a request, its content decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInput {
    /// Its relative path.
    pub name: String,
    /// Its bytes.
    pub content: Vec<u8>,
}

/// The limits a client asks for, in the contract's units; unset ones keep the language's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitRequest {
    /// Wall-clock time, ms.
    pub wall_time_ms: Option<u64>,
    /// Time without output or input, ms.
    pub idle_ms: Option<u64>,
    /// CPU time, ms.
    pub cpu_ms: Option<u64>,
    /// Memory, MiB.
    pub memory_mb: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// Output kept, KiB.
    pub output_kb: Option<u64>,
    /// Largest file written, KiB (Kiln's).
    pub file_size_kb: Option<u64>,
    /// Open files per process (Kiln's).
    pub open_files: Option<u64>,
    /// Artifacts kept, most files.
    pub max_artifacts: Option<u64>,
    /// Artifacts kept, most bytes in all.
    pub max_artifact_bytes: Option<u64>,
}

/// A request for a job, as any face hands it to the domain.
#[derive(Debug, Clone, Default)]
pub struct JobRequest {
    /// A language name or alias.
    pub language: String,
    /// A version, or a prefix of one (`3.11`).
    pub version: Option<String>,
    /// Its files, in the order given.
    pub files: Vec<FileInput>,
    /// Its limits.
    pub limits: LimitRequest,
    /// Keep its output for reading once it is over.
    pub collect_output: bool,
    /// With `collect_output`, also keep the files its run creates or changes.
    pub capture_artifacts: bool,
    /// stdin, all given up front.
    pub stdin: Option<Vec<u8>>,
    /// Program arguments.
    pub args: Vec<String>,
    /// Extra compiler options, for a compiled language whose compile command takes them
    /// (`{options}` in its language file).
    pub compile_options: Vec<String>,
    /// Start without the start handshake.
    pub auto_start: bool,
    /// How its output is given to clients.
    pub output_encoding: OutputEncoding,
    /// The client's trace, if it sent one.
    pub trace: Option<crate::trace::TraceContext>,
}

/// The server's upper bounds for the limits clients ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct MaxLimits {
    /// Wall time, ms.
    pub wall_time_ms: u64,
    /// CPU time, ms.
    pub cpu_ms: u64,
    /// Idle time, ms.
    pub idle_ms: u64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Processes.
    pub pids: u64,
    /// Output, KiB.
    pub output_kb: u64,
    /// Largest file written, KiB.
    pub file_size_kb: u64,
    /// Open files per process.
    pub open_files: u64,
    /// Artifacts kept per job.
    pub max_artifacts: u64,
    /// Bytes of artifacts kept per job.
    pub max_artifact_bytes: u64,
}

impl Default for MaxLimits {
    fn default() -> Self {
        Self {
            wall_time_ms: 120_000,
            cpu_ms: 60_000,
            idle_ms: 120_000,
            memory_mb: 2048,
            pids: 256,
            output_kb: 16 << 10,
            file_size_kb: 1 << 20,
            open_files: 4096,
            max_artifacts: 100,
            max_artifact_bytes: 64 << 20,
        }
    }
}

/// What admission checks requests against.
#[derive(Debug, Clone)]
pub struct AdmissionRules {
    /// Most files per job.
    pub max_files: usize,
    /// Largest total of the files' bytes.
    pub max_files_bytes: usize,
    /// Longest file name, in characters.
    pub max_file_name_len: usize,
    /// Most program arguments.
    pub max_args: usize,
    /// Largest total of the arguments' bytes.
    pub max_args_bytes: usize,
    /// Upper bounds of the limits.
    pub max_limits: MaxLimits,
}

impl Default for AdmissionRules {
    fn default() -> Self {
        Self {
            max_files: 64,
            max_files_bytes: 8 << 20,
            max_file_name_len: 255,
            max_args: 1024,
            max_args_bytes: 64 << 10,
            max_limits: MaxLimits::default(),
        }
    }
}

/// One problem with a request: the field (dotted, `files.0.name`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A problem with `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Why a request is not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// Fields are wrong.
    #[error("invalid request: {}", .0.iter().map(|d| format!("{}: {}", d.path, d.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// No such language (or its toolchain is not installed).
    #[error("unknown language {0:?}")]
    UnknownLanguage(String),
    /// The language has no such version.
    #[error("unknown version {version:?} of {language}")]
    UnknownVersion {
        /// The language's name.
        language: String,
        /// The version asked for.
        version: String,
    },
    /// The files are larger than allowed.
    #[error("files total {bytes} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Their total.
        bytes: usize,
        /// The cap.
        max: usize,
    },
    /// The queue is full.
    #[error("queue full ({depth} jobs waiting, at most {cap})")]
    QueueFull {
        /// Jobs waiting.
        depth: usize,
        /// The cap.
        cap: usize,
    },
    /// The owner has as many jobs waiting as it may.
    #[error("{owner} has {waiting} jobs waiting, at most {cap}")]
    OwnerQueueFull {
        /// The token's name.
        owner: String,
        /// Its jobs waiting.
        waiting: usize,
        /// The cap.
        cap: usize,
    },
    /// The owner has as many jobs waiting for their start as it may.
    #[error("{owner} has {awaiting} jobs waiting for their start, at most {cap}")]
    OwnerAwaitingFull {
        /// The token's name.
        owner: String,
        /// Its jobs waiting for their start.
        awaiting: usize,
        /// The cap.
        cap: usize,
    },
    /// The owner's stored output is at its quota.
    #[error("{owner} keeps {stored} bytes of output; this job could add {needed}, over the {cap}-byte quota")]
    OwnerStorageFull {
        /// The token's name.
        owner: String,
        /// What it keeps (and has reserved) now.
        stored: u64,
        /// What the job may add.
        needed: u64,
        /// The quota.
        cap: u64,
    },
    /// The server's output storage is full.
    #[error("the server's output storage is full ({used} of {cap} bytes)")]
    StorageFull {
        /// Kept and reserved.
        used: u64,
        /// The quota.
        cap: u64,
    },
    /// The service is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Clamps a contract limit to its maximum (as the contract says: clamped, not refused).
fn clamp(v: Option<u64>, max: u64) -> Option<u64> {
    v.map(|v| v.min(max))
}

/// Checks a Kiln limit against its maximum: past it, a refusal naming the field.
fn bounded(v: Option<u64>, max: u64, field: &str, errors: &mut Vec<FieldError>) -> Option<u64> {
    match v {
        Some(v) if v > max => {
            errors.push(FieldError::new(
                format!("limits.{field}"),
                format!("must be at most {max}"),
            ));
            None
        }
        v => v,
    }
}

/// The overrides a request's limits make, after clamping and checks.
fn overrides(l: &LimitRequest, max: &MaxLimits, errors: &mut Vec<FieldError>) -> LimitOverrides {
    let ms = Duration::from_millis;
    LimitOverrides {
        wall_time: clamp(l.wall_time_ms, max.wall_time_ms).map(ms),
        cpu_time: clamp(l.cpu_ms, max.cpu_ms).map(ms),
        idle_time: clamp(l.idle_ms, max.idle_ms).map(ms),
        memory_bytes: clamp(l.memory_mb, max.memory_mb).map(|m| m.saturating_mul(1 << 20)),
        pids: clamp(l.pids, max.pids),
        output_bytes: clamp(l.output_kb, max.output_kb).map(|k| k.saturating_mul(1 << 10)),
        file_size_bytes: bounded(l.file_size_kb, max.file_size_kb, "fileSizeKb", errors)
            .map(|k| k.saturating_mul(1 << 10)),
        open_files: bounded(l.open_files, max.open_files, "openFiles", errors),
    }
}

/// The contract's defaults for what a collected run keeps of its files.
pub const DEFAULT_MAX_ARTIFACTS: u64 = 20;
/// See [`DEFAULT_MAX_ARTIFACTS`].
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 4 << 20;

/// What a collected run keeps of its files: what was asked for or the contract's defaults,
/// clamped to the server's maxima.
fn artifact_limits(l: &LimitRequest, max: &MaxLimits) -> CaptureLimits {
    let files = l.max_artifacts.unwrap_or(DEFAULT_MAX_ARTIFACTS);
    let bytes = l.max_artifact_bytes.unwrap_or(DEFAULT_MAX_ARTIFACT_BYTES);
    CaptureLimits {
        max_files: usize::try_from(files.min(max.max_artifacts)).unwrap_or(usize::MAX),
        max_bytes: bytes.min(max.max_artifact_bytes),
    }
}

fn check_files(rules: &AdmissionRules, files: &[FileInput], errors: &mut Vec<FieldError>) {
    if files.is_empty() {
        errors.push(FieldError::new("files", "must hold at least one file"));
    }
    check_file_names(rules, files, errors);
}

/// The count, names and layout of `files` (any number up to the maximum, none included).
pub(crate) fn check_file_names(
    rules: &AdmissionRules,
    files: &[FileInput],
    errors: &mut Vec<FieldError>,
) {
    if files.len() > rules.max_files {
        errors.push(FieldError::new(
            "files",
            format!("must hold at most {} files", rules.max_files),
        ));
    }
    let names: HashSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let mut seen = HashSet::new();
    for (i, f) in files.iter().enumerate() {
        let path = format!("files.{i}.name");
        let name = f.name.as_str();
        if name.chars().count() > rules.max_file_name_len {
            let max = rules.max_file_name_len;
            errors.push(FieldError::new(
                path,
                format!("must be at most {max} characters"),
            ));
            continue;
        }
        if let Err(problem) = check_relative(name) {
            errors.push(FieldError::new(path, problem.to_string()));
            continue;
        }
        if !seen.insert(name) {
            errors.push(FieldError::new(path, "is the same as an earlier file's"));
            continue;
        }
        // `a` and `a/b` cannot both be: one would be a file and a directory.
        let mut prefix = String::new();
        for component in name
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, dirs)| dirs)
        {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(component);
            if names.contains(prefix.as_str()) {
                errors.push(FieldError::new(
                    path.clone(),
                    format!("is inside {prefix:?}, which is a file"),
                ));
                break;
            }
        }
    }
}

/// Checks a list of arguments (the program's, or the compiler's extra options) under `field`.
fn check_args(rules: &AdmissionRules, field: &str, args: &[String], errors: &mut Vec<FieldError>) {
    if args.len() > rules.max_args {
        errors.push(FieldError::new(
            field,
            format!("must hold at most {} arguments", rules.max_args),
        ));
    }
    for (i, a) in args.iter().enumerate() {
        if a.contains('\0') {
            errors.push(FieldError::new(
                format!("{field}.{i}"),
                "must not contain a NUL character",
            ));
        }
    }
    let bytes: usize = args.iter().map(|a| a.len() + 1).sum();
    if bytes > rules.max_args_bytes {
        errors.push(FieldError::new(
            field,
            format!(
                "total {bytes} bytes, over the {}-byte limit",
                rules.max_args_bytes
            ),
        ));
    }
}

/// Checks `request` and resolves it against the catalog into what the job will run.
pub fn admit(
    rules: &AdmissionRules,
    catalog: &Catalog,
    request: JobRequest,
) -> Result<JobSpec, AdmissionError> {
    let mut errors = Vec::new();
    if request.language.is_empty() {
        errors.push(FieldError::new("language", "must not be empty"));
    }
    check_files(rules, &request.files, &mut errors);
    check_args(rules, "args", &request.args, &mut errors);
    check_args(
        rules,
        "compileOptions",
        &request.compile_options,
        &mut errors,
    );
    let overrides = overrides(&request.limits, &rules.max_limits, &mut errors);
    if !errors.is_empty() {
        return Err(AdmissionError::Invalid(errors));
    }
    let total: usize = request.files.iter().map(|f| f.content.len()).sum();
    if total > rules.max_files_bytes {
        return Err(AdmissionError::TooLarge {
            bytes: total,
            max: rules.max_files_bytes,
        });
    }
    let unknown = || AdmissionError::UnknownLanguage(request.language.clone());
    let found = catalog.find(&request.language).ok_or_else(unknown)?;
    let version = found.version.as_ref().map_err(|_| unknown())?;
    if let Some(want) = &request.version {
        let matches = version == want || version.starts_with(&format!("{want}."));
        if !matches {
            return Err(AdmissionError::UnknownVersion {
                language: found.language.name.clone(),
                version: want.clone(),
            });
        }
    }
    let language = found.language.clone();
    if !request.compile_options.is_empty() && !language.takes_compile_options() {
        return Err(AdmissionError::Invalid(vec![FieldError::new(
            "compileOptions",
            format!("{} takes no compiler options", language.name),
        )]));
    }
    let limits = run_limits(&language, &overrides);
    let mut files: Vec<SourceFile> = request
        .files
        .into_iter()
        .map(|f| SourceFile {
            name: f.name,
            content: f.content,
        })
        .collect();
    // The entry is the language's entry file when given, else the first file.
    if let Some(pos) = files.iter().position(|f| f.name == language.entry) {
        let entry = files.remove(pos);
        files.insert(0, entry);
    }
    Ok(JobSpec {
        version: version.clone(),
        language,
        files,
        args: request.args,
        compile_options: request.compile_options,
        limits,
        stdin: request.stdin,
        collect_output: request.collect_output,
        artifacts: (request.collect_output && request.capture_artifacts)
            .then(|| artifact_limits(&request.limits, &rules.max_limits)),
        auto_start: request.auto_start,
        output_encoding: request.output_encoding,
        trace: request.trace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> FileInput {
        FileInput {
            name: name.into(),
            content: Vec::new(),
        }
    }

    fn errors(files: Vec<FileInput>, args: Vec<String>, limits: LimitRequest) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let rules = AdmissionRules::default();
        check_files(&rules, &files, &mut errors);
        check_args(&rules, "args", &args, &mut errors);
        overrides(&limits, &rules.max_limits, &mut errors);
        errors
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            ("/etc/passwd", "relative"),
            ("../x", ".."),
            ("a/../../x", ".."),
            ("a\u{0}b", "NUL"),
            ("a\nb", "control"),
            ("a\u{1b}[2J", "control"),
            ("", "empty"),
        ];
        for (name, why) in cases {
            let e = errors(vec![file(name)], vec![], LimitRequest::default());
            assert_eq!(e[0].path, "files.0.name", "{name:?}");
            assert!(e[0].message.contains(why), "{name:?}: {}", e[0].message);
        }
        let e = errors(
            vec![file(&"a".repeat(256))],
            vec![],
            LimitRequest::default(),
        );
        assert!(e[0].message.contains("at most 255"), "{e:?}");
    }

    #[test]
    fn a_file_inside_another_file_and_a_nul_in_args_are_refused() {
        // Items 11 of the hardening pass: these were internal errors.
        let e = errors(
            vec![file("a"), file("a/b")],
            vec![],
            LimitRequest::default(),
        );
        assert_eq!(e[0].path, "files.1.name");
        assert!(e[0].message.contains("\"a\""), "{e:?}");
        let e = errors(
            vec![file("a/b"), file("a")],
            vec![],
            LimitRequest::default(),
        );
        assert_eq!(e[0].path, "files.0.name", "{e:?}");
        let e = errors(
            vec![file("a")],
            vec!["x\0y".into()],
            LimitRequest::default(),
        );
        assert_eq!(e[0].path, "args.0");
        let e = errors(
            vec![file("a")],
            vec!["x".repeat(200 << 10)],
            LimitRequest::default(),
        );
        assert_eq!(e[0].path, "args");
    }

    #[test]
    fn contract_limits_are_clamped_and_kilns_are_refused_past_their_maximum() {
        let mut e = Vec::new();
        let max = MaxLimits::default();
        let o = overrides(
            &LimitRequest {
                cpu_ms: Some(u64::MAX),
                memory_mb: Some(1 << 50),
                ..LimitRequest::default()
            },
            &max,
            &mut e,
        );
        assert!(e.is_empty());
        assert_eq!(o.cpu_time, Some(Duration::from_millis(max.cpu_ms)));
        assert_eq!(o.memory_bytes, Some(max.memory_mb << 20));
        // Item 5 of the hardening pass: 2^54 KiB wrapped to 0 bytes, 2^40 files failed the run.
        overrides(
            &LimitRequest {
                file_size_kb: Some(1 << 54),
                open_files: Some(1 << 40),
                ..LimitRequest::default()
            },
            &max,
            &mut e,
        );
        let paths: Vec<&str> = e.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["limits.fileSizeKb", "limits.openFiles"]);
    }
}
