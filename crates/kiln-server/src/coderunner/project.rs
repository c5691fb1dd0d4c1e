//! Domain to wire: a job's record as the contract's status, its events as the contract's channel
//! events (and Kiln's `usage`), its outcome as a `result` and a RunResult.

use base64::Engine as _;
use kiln_core::job::StageFacts;
use kiln_core::{
    EventRecord, JobEvent, JobOutcome, JobRecord, OutputEncoding, OutputStream, Verdict,
};
use kiln_engine::Status;
use serde_json::json;

use super::wire::{
    ArtifactWire, CompileResultWire, JobStatus, ResultEvent, StageUsage, UsageEvent,
};
use crate::links::Links;

/// What artifact URLs are made with: the signer, their base, the job and their expiry (Unix
/// seconds).
#[derive(Debug, Clone, Copy)]
pub struct UrlContext<'a> {
    /// The signer.
    pub links: &'a Links,
    /// The URLs' base.
    pub base: &'a str,
    /// The job.
    pub job: &'a kiln_core::JobId,
    /// When they expire.
    pub expires: u64,
}

impl UrlContext<'_> {
    /// The expiry of a job's artifact URLs: its record's, or for a job not yet over, what its
    /// record's will be at the latest.
    pub fn expiry_of(record_expires_ms: Option<i64>, ttl: std::time::Duration) -> u64 {
        match record_expires_ms {
            Some(ms) => u64::try_from(ms / 1000).unwrap_or(0),
            None => crate::links::now_secs().saturating_add(ttl.as_secs()),
        }
    }
}

/// An artifact as the contract's `Artifact`, with its signed URL.
pub fn artifact(a: &kiln_core::job::ArtifactInfo, cx: &UrlContext<'_>) -> ArtifactWire {
    ArtifactWire {
        name: a.name.clone(),
        mime_type: a.mime_type.clone(),
        bytes: a.bytes,
        url: cx.links.artifact_url(cx.base, cx.job, a, cx.expires),
    }
}

/// `private-run-<jobId>`.
pub fn channel_of(id: &str) -> String {
    format!("private-run-{id}")
}

/// The job id of a `private-run-<jobId>` channel.
pub fn job_of_channel(channel: &str) -> Option<&str> {
    channel
        .strip_prefix("private-run-")
        .filter(|id| !id.is_empty())
}

/// The contract's status body.
pub fn status(r: &JobRecord) -> JobStatus {
    JobStatus {
        job_id: r.id.to_string(),
        channel: channel_of(r.id.as_str()),
        language: r.language.clone(),
        version: r.version.clone(),
        state: r.state.into(),
        updated_at_ms: r.updated_at_ms,
    }
}

/// The event name of an output stream.
pub fn stream_event(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
        OutputStream::Compile => "compile_output",
    }
}

/// Output bytes as the job's clients get them. Chunks end on character boundaries when the
/// output is UTF-8 (the job's sink cuts them so), so each converts on its own.
pub fn text(bytes: &[u8], encoding: OutputEncoding) -> std::borrow::Cow<'_, str> {
    match encoding {
        OutputEncoding::Utf8 => String::from_utf8_lossy(bytes),
        OutputEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into(),
    }
}

/// The payload of an output event.
#[derive(serde::Serialize)]
struct Chunk<'a> {
    chunk: &'a str,
    seq: u64,
}

/// A payload's JSON text. The wire types hold only strings, numbers and options of them.
fn encode<T: serde::Serialize>(payload: &T) -> String {
    serde_json::to_string(payload).expect("wire payloads always serialise")
}

/// One domain event as the channel's wire events (`name`, the payload's JSON text): a stage, a
/// chunk, or the end (`usage` then `result`). The text is made once per event and reader; every
/// subscriber of a job pays this for each chunk, so output goes straight from its bytes to JSON.
pub fn events(
    record: &EventRecord,
    encoding: OutputEncoding,
    urls: &UrlContext<'_>,
) -> Vec<(&'static str, String)> {
    match &record.event {
        JobEvent::Stage(stage) => vec![("stage", json!({ "phase": stage }).to_string())],
        JobEvent::Output { stream, seq, bytes } => {
            let chunk = Chunk {
                chunk: &text(bytes, encoding),
                seq: *seq,
            };
            vec![(stream_event(*stream), encode(&chunk))]
        }
        JobEvent::Artifact(a) => vec![("artifact", encode(&artifact(a, urls)))],
        JobEvent::Finished(outcome) => vec![
            ("usage", encode(&usage(outcome))),
            ("result", encode(&result(outcome))),
        ],
    }
}

/// The `result` event of an outcome.
pub fn result(o: &JobOutcome) -> ResultEvent {
    let run = o.run.as_ref();
    let status = match o.verdict {
        Verdict::Run(s) => Some(s),
        Verdict::Expired => None,
    };
    ResultEvent {
        exit_code: o.exit_code(),
        signal: run.and_then(|r| r.signal.clone()),
        timed_out: matches!(status, Some(Status::TimeLimit | Status::WallTimeLimit)),
        idle_timed_out: status == Some(Status::IdleTimeLimit),
        truncated: run.is_some_and(|r| r.truncated),
        duration_ms: run.map_or(0, |r| r.wall_ms),
    }
}

fn stage_usage(s: &StageFacts) -> StageUsage {
    StageUsage {
        status: s.status.as_str().into(),
        cpu_ms: s.cpu_ms,
        wall_ms: s.wall_ms,
        memory_bytes: s.memory_bytes,
    }
}

/// Kiln's `usage` event of an outcome.
pub fn usage(o: &JobOutcome) -> UsageEvent {
    let run = o.run.as_ref();
    UsageEvent {
        status: o.verdict.as_str().into(),
        cpu_ms: run.map_or(0, |r| r.cpu_ms),
        wall_ms: run.map_or(0, |r| r.wall_ms),
        memory_bytes: run.map_or(0, |r| r.memory_bytes),
        compile: o.compile.as_ref().map(stage_usage),
        message: o
            .message
            .clone()
            .or_else(|| run.and_then(|r| r.message.clone())),
    }
}

/// The compile stage of a RunResult.
pub fn compile(o: &JobOutcome) -> Option<CompileResultWire> {
    let facts = o.compile.as_ref()?;
    let out = o.compile_output.as_ref();
    Some(CompileResultWire {
        exit_code: facts.exit_code,
        signal: facts.signal.clone(),
        stdout: out.map(|c| c.stdout.clone()).unwrap_or_default(),
        stderr: out.map(|c| c.stderr.clone()).unwrap_or_default(),
        output: out.map(|c| c.output.clone()).unwrap_or_default(),
        duration_ms: facts.wall_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::Stage;
    use serde_json::Value;

    fn with_urls<T>(f: impl FnOnce(&UrlContext<'_>) -> T) -> T {
        let links = Links::new(b"k", None, "http://kiln");
        let job = kiln_core::JobId("j".into());
        f(&UrlContext {
            links: &links,
            base: "http://kiln",
            job: &job,
            expires: 9,
        })
    }

    /// The events with their payloads parsed back.
    fn parsed(record: &EventRecord, encoding: OutputEncoding) -> Vec<(&'static str, Value)> {
        with_urls(|u| events(record, encoding, u))
            .into_iter()
            .map(|(name, text)| (name, serde_json::from_str(&text).unwrap()))
            .collect()
    }

    #[test]
    fn output_is_text_or_base64_and_the_end_is_usage_then_result() {
        let chunk = EventRecord {
            position: 1,
            event: JobEvent::Output {
                stream: OutputStream::Compile,
                seq: 3,
                bytes: bytes::Bytes::from_static(&[0xff, b'a']),
            },
        };
        assert_eq!(
            parsed(&chunk, OutputEncoding::Utf8),
            [("compile_output", json!({"chunk": "\u{fffd}a", "seq": 3}))]
        );
        assert_eq!(
            parsed(&chunk, OutputEncoding::Base64),
            [("compile_output", json!({"chunk": "/2E=", "seq": 3}))]
        );
        let stage = EventRecord {
            position: 0,
            event: JobEvent::Stage(Stage::Running),
        };
        assert_eq!(
            parsed(&stage, OutputEncoding::Utf8),
            [("stage", json!({"phase": "running"}))]
        );
        let end = EventRecord {
            position: 2,
            event: JobEvent::Finished(Box::new(JobOutcome::unrun(Verdict::Expired, "late"))),
        };
        let names: Vec<&str> = with_urls(|u| events(&end, OutputEncoding::Utf8, u))
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(names, ["usage", "result"]);
        assert_eq!(
            usage(&JobOutcome::unrun(Verdict::Expired, "late")).status,
            "expired"
        );
        assert_eq!(job_of_channel("private-run-abc"), Some("abc"));
        assert_eq!(job_of_channel("private-run-"), None);
        assert_eq!(job_of_channel("private-other"), None);
    }
}
