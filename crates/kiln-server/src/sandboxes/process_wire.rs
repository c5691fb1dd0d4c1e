//! The bodies of the process routes, and how a process's events become SSE events and text.

use base64::Engine as _;
use kiln_core::sandbox::{LogChunk, ProcessEvent, ProcessInfo, ProcessRequest};
use kiln_engine::{Stream, TtySize};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::wire::ExecCommand;
use crate::coderunner::request::{Encoding, OutputEncodingName, Positive};
use crate::error::ApiError;

/// A terminal's size.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TtySizeWire {
    /// Rows, 1 to 1000.
    pub rows: u16,
    /// Columns, 1 to 1000.
    pub cols: u16,
}

impl TtySizeWire {
    /// The domain's size, checked.
    pub fn checked(self, field: &str) -> Result<TtySize, ApiError> {
        for (name, v) in [("rows", self.rows), ("cols", self.cols)] {
            if !(1..=1000).contains(&v) {
                return Err(ApiError::field(
                    format!("{field}.{name}"),
                    "must be 1 to 1000",
                ));
            }
        }
        Ok(TtySize {
            rows: self.rows,
            cols: self.cols,
        })
    }
}

/// `POST /v1/sandboxes/{id}/processes`: a command (`cmd` or `argv`) started in the background.
/// Its `stdin` is written first and stdin then stays open; `timeoutMs`, if given, ends it
/// (otherwise it lives as long as the sandbox).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StartProcess {
    /// A shell command line.
    pub cmd: Option<String>,
    /// A program and its arguments (looked up in `PATH`).
    pub argv: Option<Vec<String>>,
    /// Where it runs.
    pub cwd: Option<String>,
    /// Environment over the sandbox's.
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// Written to its stdin first (which then stays open).
    pub stdin: Option<String>,
    /// How long it may run, ms (default: as long as its sandbox).
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub timeout_ms: Option<Positive>,
    /// Run it on a terminal of this size (attach at `…/processes/{pid}/terminal`).
    pub tty: Option<TtySizeWire>,
}

impl StartProcess {
    /// The domain's request.
    pub fn into_domain(self) -> Result<ProcessRequest, ApiError> {
        let tty = self.tty.map(|t| t.checked("tty")).transpose()?;
        let command = ExecCommand {
            cmd: self.cmd,
            argv: self.argv,
            cwd: self.cwd,
            env: self.env,
            stdin: self.stdin,
            timeout_ms: self.timeout_ms,
            output_encoding: None,
        };
        let (exec, _) = command.into_domain()?;
        Ok(ProcessRequest { exec, tty })
    }
}

/// A process of a sandbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessWire {
    /// Its id in the sandbox (never reused): the `{pid}` of its routes.
    pub process_id: u64,
    /// Its pid inside the sandbox.
    pub pid: Option<i32>,
    /// What runs.
    pub argv: Vec<String>,
    /// Where.
    pub cwd: String,
    /// Whether it has a terminal.
    pub tty: bool,
    /// `running` or `exited`.
    pub state: String,
    /// Unix ms.
    pub started_at_ms: i64,
    /// Unix ms.
    pub ended_at_ms: Option<i64>,
    /// Once ended: `ok`, `nonzero_exit`, `signaled`, `killed` (by a kill call or its sandbox's
    /// end), `wall_time_limit` (its timeout), `memory_limit`, `internal_error`.
    pub status: Option<String>,
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<String>,
    /// CPU time, ms.
    pub cpu_ms: Option<u64>,
    /// Wall time, ms.
    pub wall_ms: Option<u64>,
    /// Peak memory, bytes.
    pub memory_bytes: Option<u64>,
    /// Bytes of output so far.
    pub output_bytes: u64,
    /// Of those, the oldest bytes that the log let go (it keeps the newest).
    pub output_dropped_bytes: u64,
}

/// A process as the wire shows it.
pub fn process(info: ProcessInfo) -> ProcessWire {
    let r = info.result.as_ref();
    ProcessWire {
        process_id: info.process_id,
        pid: info.pid,
        argv: info.argv,
        cwd: info.cwd,
        tty: info.tty,
        state: match info.state {
            kiln_core::sandbox::ProcessState::Running => "running".into(),
            kiln_core::sandbox::ProcessState::Exited => "exited".into(),
        },
        started_at_ms: info.started_at_ms,
        ended_at_ms: info.ended_at_ms,
        status: r.map(|r| r.status.as_str().to_string()),
        exit_code: r.and_then(|r| r.exit_code),
        signal: r.and_then(|r| r.signal.clone()),
        cpu_ms: r.map(|r| r.cpu_ms),
        wall_ms: r.map(|r| r.wall_ms),
        memory_bytes: r.map(|r| r.memory_bytes),
        output_bytes: info.output_bytes,
        output_dropped_bytes: info.output_dropped_bytes,
    }
}

/// `GET /v1/sandboxes/{id}/processes`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProcessList {
    /// Running ones and the last ended ones, oldest first.
    pub processes: Vec<ProcessWire>,
}

/// `POST …/processes/{pid}/stdin`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StdinWrite {
    /// Bytes to write (may be empty with `eof`).
    #[serde(default)]
    pub data: String,
    /// `utf8` (default) or `base64`.
    pub encoding: Option<Encoding>,
    /// Close stdin after writing.
    #[serde(default)]
    pub eof: bool,
}

impl StdinWrite {
    /// The bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, ApiError> {
        match self.encoding.unwrap_or_default() {
            Encoding::Utf8 => Ok(self.data.clone().into_bytes()),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&self.data)
                .map_err(|e| ApiError::field("data", format!("is not valid base64: {e}"))),
        }
    }
}

/// `POST …/processes/{pid}/signal`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// A name (`SIGTERM`, `TERM`) or a number.
    #[schema(value_type = String)]
    pub signal: serde_json::Value,
}

/// The signals a process may be sent, by name.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("WINCH", libc::SIGWINCH),
];

impl SignalRequest {
    /// The signal's number.
    pub fn number(&self) -> Result<i32, ApiError> {
        let bad = || {
            ApiError::field(
                "signal",
                "must be a signal name (SIGTERM, TERM, ...) or a number from 1 to 64",
            )
        };
        match &self.signal {
            serde_json::Value::Number(n) => n
                .as_i64()
                .filter(|n| (1..=64).contains(n))
                .map(|n| n as i32)
                .ok_or_else(bad),
            serde_json::Value::String(s) => {
                let name = s.strip_prefix("SIG").unwrap_or(s);
                SIGNALS
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| *v)
                    .ok_or_else(bad)
            }
            _ => Err(bad()),
        }
    }
}

/// `GET …/processes/{pid}/wait`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WaitQuery {
    /// How long to wait, ms (default 30000, at most 300000).
    pub timeout_ms: Option<u64>,
}

/// `GET …/processes/{pid}/logs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogsQuery {
    /// Stream as SSE: what is kept, then live, then the end.
    pub follow: Option<bool>,
    /// From this offset in the process's output (default 0: as far back as kept).
    pub offset: Option<u64>,
    /// `utf8` (default) or `base64`.
    pub encoding: Option<OutputEncodingName>,
}

/// `GET …/processes/{pid}/logs` without `follow`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessLogs {
    /// Its stdout (a terminal's output too), from the offset on.
    pub stdout: String,
    /// Its stderr, from the offset on.
    pub stderr: String,
    /// Bytes between the offset and what the log still keeps.
    pub skipped_bytes: u64,
    /// The offset to read from next.
    pub next_offset: u64,
    /// The process.
    pub process: ProcessWire,
}

/// Turns chunks into text, holding back a UTF-8 sequence cut at a chunk's end until the rest
/// of it comes (bytes that are not UTF-8 become U+FFFD).
#[derive(Debug, Default)]
pub struct TextDecoder {
    pending: [Vec<u8>; 2],
}

impl TextDecoder {
    /// The text of `data`, after what was held back of `stream`.
    pub fn text(&mut self, stream: Stream, data: &[u8]) -> String {
        let slot = &mut self.pending[usize::from(stream == Stream::Stderr)];
        let mut bytes = std::mem::take(slot);
        bytes.extend_from_slice(data);
        let cut = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            // An incomplete sequence at the very end waits for its rest.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => bytes.len(),
        };
        *slot = bytes.split_off(cut);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// What is still held back, at the end.
    pub fn finish(&mut self, stream: Stream) -> String {
        let slot = &mut self.pending[usize::from(stream == Stream::Stderr)];
        String::from_utf8_lossy(&std::mem::take(slot)).into_owned()
    }
}

/// Renders output in an encoding.
#[derive(Debug)]
pub struct OutputText {
    encoding: OutputEncodingName,
    decoder: TextDecoder,
}

impl OutputText {
    /// A renderer.
    pub fn new(encoding: OutputEncodingName) -> Self {
        Self {
            encoding,
            decoder: TextDecoder::default(),
        }
    }

    /// A chunk's text.
    pub fn chunk(&mut self, c: &LogChunk) -> String {
        match self.encoding {
            OutputEncodingName::Utf8 => self.decoder.text(c.stream, &c.data),
            OutputEncodingName::Base64 => base64::engine::general_purpose::STANDARD.encode(&c.data),
        }
    }

    /// The rest of `stream`'s text, at the end.
    pub fn finish(&mut self, stream: Stream) -> String {
        match self.encoding {
            OutputEncodingName::Utf8 => self.decoder.finish(stream),
            OutputEncodingName::Base64 => String::new(),
        }
    }
}

fn stream_name(stream: Stream) -> &'static str {
    match stream {
        Stream::Stderr => "stderr",
        Stream::Stdout | Stream::Compile => "stdout",
    }
}

/// The SSE events (name, JSON data) of one process event: `stdout` and `stderr` (`{data,
/// offset}`), `dropped` (`{bytes}`), then `exit` (the process) and `end`.
pub fn sse_events(event: ProcessEvent, text: &mut OutputText) -> Vec<(&'static str, String)> {
    match event {
        ProcessEvent::Output(c) => {
            let data = text.chunk(&c);
            if data.is_empty() {
                return Vec::new();
            }
            let body = serde_json::json!({"data": data, "offset": c.offset});
            vec![(stream_name(c.stream), body.to_string())]
        }
        ProcessEvent::Skipped(bytes) => {
            vec![("dropped", serde_json::json!({ "bytes": bytes }).to_string())]
        }
        ProcessEvent::Exited(info) => {
            let mut out = Vec::new();
            for stream in [Stream::Stdout, Stream::Stderr] {
                let rest = text.finish(stream);
                if !rest.is_empty() {
                    let body = serde_json::json!({"data": rest, "offset": info.output_bytes});
                    out.push((stream_name(stream), body.to_string()));
                }
            }
            let wire = serde_json::to_string(&process(info)).unwrap_or_else(|_| "{}".into());
            out.push(("exit", wire));
            out.push(("end", "{}".into()));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_between_chunks_comes_out_whole() {
        let mut d = TextDecoder::default();
        let euro = "€".as_bytes();
        assert_eq!(d.text(Stream::Stdout, &[b'a', euro[0]]), "a");
        assert_eq!(d.text(Stream::Stderr, b"x"), "x");
        assert_eq!(d.text(Stream::Stdout, &euro[1..]), "€");
        assert_eq!(d.text(Stream::Stdout, &[0xff, b'b']), "\u{fffd}b");
        assert_eq!(d.text(Stream::Stdout, &[euro[0]]), "");
        assert_eq!(d.finish(Stream::Stdout), "\u{fffd}");
    }

    #[test]
    fn signals_are_named_or_numbered() {
        let sig = |v: serde_json::Value| SignalRequest { signal: v }.number().ok();
        assert_eq!(sig("SIGTERM".into()), Some(libc::SIGTERM));
        assert_eq!(sig("int".into()), Some(libc::SIGINT));
        assert_eq!(sig(9.into()), Some(9));
        assert_eq!(sig(0.into()), None);
        assert_eq!(sig("SIGNOPE".into()), None);
        assert_eq!(sig(true.into()), None);
    }
}
