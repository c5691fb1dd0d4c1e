//! The contract's request bodies, typed (with Kiln's extensions), and their decoding into the
//! domain's request: file contents from base64, the limits' positive integers. What a field must
//! mean (a relative name, a known language, a limit in range) is the domain's admission to say.

use base64::Engine as _;
use kiln_core::trace::TraceContext;
use kiln_core::{FileInput as DomainFile, JobRequest, LimitRequest, OutputEncoding};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use crate::error::{ApiError, Detail};

/// An integer of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positive(pub u64);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        if n == 0 {
            return Err(serde::de::Error::custom("must be an integer of at least 1"));
        }
        Ok(Positive(n))
    }
}

/// How a file's content is given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The text itself.
    #[default]
    Utf8,
    /// Base64 of the bytes.
    Base64,
}

/// The only network a job may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkName {
    /// A loopback of its own.
    None,
}

/// A file of a job.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileInput {
    /// A relative path (1–255 characters, no `..`, no NUL or other control character, no file
    /// and directory of the same name).
    pub name: String,
    /// The content (exactly one of `content` and `ref`).
    pub content: Option<String>,
    /// `utf8` (default) or `base64`; ignored with `ref`.
    pub encoding: Option<Encoding>,
    /// `sha256:<hex>` of a blob this token uploaded (`POST /v1/blobs/check`), whose bytes are
    /// the file's.
    #[serde(rename = "ref")]
    #[schema(rename = "ref", pattern = "^sha256:[a-f0-9]{64}$")]
    pub reference: Option<String>,
    /// The blob's bytes, once resolved.
    #[serde(skip)]
    #[schema(ignore)]
    pub resolved: Option<bytes::Bytes>,
}

/// Limits a job may ask for, merged over the language's defaults: the contract's are clamped to
/// the server's maxima, Kiln's (`fileSizeKb`, `openFiles`) refused past them.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsOverride {
    /// Wall-clock time, ms.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub wall_time_ms: Option<Positive>,
    /// No output and no input for this long ends the run, ms.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub idle_ms: Option<Positive>,
    /// CPU time, ms.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub cpu_ms: Option<Positive>,
    /// Memory, MiB.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub memory_mb: Option<Positive>,
    /// Processes and threads.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub pids: Option<Positive>,
    /// stdout plus stderr kept, KiB.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub output_kb: Option<Positive>,
    /// Kiln: largest file written, KiB.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub file_size_kb: Option<Positive>,
    /// Kiln: open files per process.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub open_files: Option<Positive>,
    /// Kiln: only `none`.
    pub network: Option<NetworkName>,
    /// With `collectOutput`: the most files kept as artifacts (default 20, at most the
    /// server's `max_limits.max_artifacts`); past it `artifactsTruncated`.
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub max_artifacts: Option<Positive>,
    /// With `collectOutput`: the most bytes kept as artifacts, all files together (default
    /// 4 MiB, at most the server's `max_limits.max_artifact_bytes`).
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub max_artifact_bytes: Option<Positive>,
}

/// `POST /v1/execute` and `POST /v1/run`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecuteRequest {
    /// A language name or alias from `GET /v1/languages`.
    pub language: String,
    /// A version, or its prefix (`3.11`).
    pub version: Option<String>,
    /// The files; the language's entry file (or else the first) runs.
    pub files: Vec<FileInput>,
    /// Limits.
    pub limits: Option<LimitsOverride>,
    /// Keep stdout, stderr and the files the run creates or changes in its working directory
    /// (its artifacts) for `GET /v1/jobs/{id}/output`.
    pub collect_output: Option<bool>,
    /// Kiln: all of stdin, given up front (then closed).
    pub stdin: Option<String>,
    /// Kiln: program arguments.
    pub args: Option<Vec<String>>,
    /// Kiln: start without waiting for `POST /start`.
    pub auto_start: Option<bool>,
    /// Kiln: `utf8` (the default: bytes that are not UTF-8 become U+FFFD) or `base64` (the exact
    /// bytes) for the output in results and events.
    pub output_encoding: Option<OutputEncodingName>,
    /// The W3C trace context the job belongs to (the contract's JobSpec field; a `traceparent`
    /// header does the same and wins).
    pub traceparent: Option<String>,
    /// W3C `tracestate`, with `traceparent`.
    pub tracestate: Option<String>,
}

/// How output is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputEncodingName {
    /// Text.
    Utf8,
    /// Base64 of the bytes.
    Base64,
}

/// `POST /v1/jobs/{id}/stdin`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinRequest {
    /// The bytes to write (as text).
    pub chunk: String,
}

/// `POST /v1/channel-auth` (JSON or form-encoded).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChannelAuthRequest {
    /// The socket's id, `<digits>.<digits>`.
    #[schema(required = true, value_type = String)]
    pub socket_id: Option<String>,
    /// `private-run-<jobId>`.
    #[schema(required = true, value_type = String)]
    pub channel_name: Option<String>,
}

impl ExecuteRequest {
    /// The domain's request: contents decoded, limits unwrapped; `trace` (from the request's
    /// headers) over the body's own.
    pub fn into_domain(
        self,
        auto_start: bool,
        trace: Option<TraceContext>,
    ) -> Result<JobRequest, ApiError> {
        let trace = match (trace, &self.traceparent) {
            (Some(t), _) => Some(t),
            (None, Some(tp)) => Some(
                TraceContext::parse(tp, self.tracestate.as_deref())
                    .map_err(|m| ApiError::field("traceparent", m))?,
            ),
            (None, None) => None,
        };
        let files = decode_files(self.files, "files")?;
        let l = self.limits.unwrap_or_default();
        let get = |p: Option<Positive>| p.map(|p| p.0);
        Ok(JobRequest {
            language: self.language,
            version: self.version,
            files,
            limits: LimitRequest {
                wall_time_ms: get(l.wall_time_ms),
                idle_ms: get(l.idle_ms),
                cpu_ms: get(l.cpu_ms),
                memory_mb: get(l.memory_mb),
                pids: get(l.pids),
                output_kb: get(l.output_kb),
                file_size_kb: get(l.file_size_kb),
                open_files: get(l.open_files),
                max_artifacts: get(l.max_artifacts),
                max_artifact_bytes: get(l.max_artifact_bytes),
            },
            collect_output: self.collect_output.unwrap_or(false),
            // The contract captures files with collectOutput; `/v1/run` collects output always,
            // files only when asked.
            capture_artifacts: self.collect_output.unwrap_or(false),
            stdin: self.stdin.map(String::into_bytes),
            args: self.args.unwrap_or_default(),
            compile_options: Vec::new(),
            auto_start: auto_start || self.auto_start.unwrap_or(false),
            output_encoding: match self.output_encoding {
                Some(OutputEncodingName::Base64) => OutputEncoding::Base64,
                _ => OutputEncoding::Utf8,
            },
            trace,
        })
    }
}

/// Decodes the files of a request (contents from base64 where asked).
pub fn decode_files(files: Vec<FileInput>, field: &str) -> Result<Vec<DomainFile>, ApiError> {
    let mut details = Vec::new();
    let mut out = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let at = |name: &str| format!("{field}.{i}.{name}");
        if let Some(bytes) = f.resolved {
            out.push(DomainFile {
                name: f.name,
                content: Vec::from(bytes),
            });
            continue;
        }
        if f.reference.is_some() {
            details.push(Detail {
                path: at("ref"),
                message: "was not resolved to a blob".into(),
            });
            continue;
        }
        let Some(content) = f.content else {
            details.push(Detail {
                path: at("content"),
                message: "is required".into(),
            });
            continue;
        };
        let content = match f.encoding.unwrap_or_default() {
            Encoding::Utf8 => content.into_bytes(),
            Encoding::Base64 => match base64::engine::general_purpose::STANDARD.decode(content) {
                Ok(bytes) => bytes,
                Err(e) => {
                    details.push(Detail {
                        path: at("content"),
                        message: format!("is not valid base64: {e}"),
                    });
                    continue;
                }
            },
        };
        out.push(DomainFile {
            name: f.name,
            content,
        });
    }
    if details.is_empty() {
        Ok(out)
    } else {
        Err(ApiError::invalid(details))
    }
}
