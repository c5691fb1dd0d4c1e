//! A finished job's RunResult as a streamed body: the result's fields, then stdout and stderr read
//! from the job's event log chunk by chunk (memory or disk), escaped as they go. A 16 MiB output
//! is never one 16 MiB string in the server, however many clients read one at once.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use base64::Engine as _;
use futures_util::StreamExt;
use kiln_core::{JobEvent, JobOutcome, JobRecord, JobService, OutputEncoding, OutputStream};
use serde_json::Value;
use tokio::sync::mpsc;

use super::project;
use super::wire::ArtifactWire;

/// Bytes gathered before a piece of the body is sent.
const PIECE: usize = 64 << 10;

/// The body of a RunResult for `record` (which is over), with its `artifacts` and `extra` fields
/// after it (`/v1/run` adds `jobId` and `usage`).
pub fn run_result(
    service: Arc<JobService>,
    record: JobRecord,
    artifacts: Vec<ArtifactWire>,
    extra: serde_json::Map<String, Value>,
) -> Body {
    let (tx, mut rx) = mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        let _ = write(&service, &record, artifacts, extra, &tx).await;
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>))
    });
    Body::from_stream(stream)
}

/// Sends pieces of at least [`PIECE`] bytes.
struct Writer<'a> {
    tx: &'a mpsc::Sender<Bytes>,
    buf: String,
}

impl Writer<'_> {
    async fn push(&mut self, s: &str) -> Result<(), ()> {
        self.buf.push_str(s);
        if self.buf.len() >= PIECE {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.send(piece).await.map_err(|_| ())
    }
}

/// A JSON string's inside (no quotes).
fn escaped(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted[1..quoted.len().saturating_sub(1).max(1)].to_string()
}

/// Writes one stream's output as the inside of a JSON string.
async fn write_stream(
    service: &JobService,
    record: &JobRecord,
    which: OutputStream,
    w: &mut Writer<'_>,
) -> Result<(), ()> {
    let mut events = service.events(&record.id, 0);
    // Base64 is of the whole output: bytes that do not fill a group of three wait for the next.
    let mut carry: Vec<u8> = Vec::new();
    while let Some(event) = events.next().await {
        let JobEvent::Output { stream, bytes, .. } = &event.event else {
            continue;
        };
        if *stream != which {
            continue;
        }
        match record.output_encoding {
            OutputEncoding::Utf8 => w.push(&escaped(&String::from_utf8_lossy(bytes))).await?,
            OutputEncoding::Base64 => {
                carry.extend_from_slice(bytes);
                let whole = carry.len() / 3 * 3;
                let text = base64::engine::general_purpose::STANDARD.encode(&carry[..whole]);
                carry.drain(..whole);
                w.push(&text).await?;
            }
        }
    }
    if !carry.is_empty() {
        let text = base64::engine::general_purpose::STANDARD.encode(&carry);
        w.push(&text).await?;
    }
    Ok(())
}

fn field(out: &mut String, name: &str, value: &impl serde::Serialize) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".into()));
    out.push(',');
}

async fn write(
    service: &JobService,
    record: &JobRecord,
    artifacts: Vec<ArtifactWire>,
    extra: serde_json::Map<String, Value>,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), ()> {
    let outcome = record.outcome.clone().unwrap_or_else(|| {
        JobOutcome::unrun(
            kiln_core::Verdict::Run(kiln_engine::Status::InternalError),
            "no outcome",
        )
    });
    let mut w = Writer {
        tx,
        buf: String::with_capacity(PIECE),
    };
    // The result's fields first, as the contract's RunResult serialises them.
    let result = serde_json::to_value(project::result(&outcome)).unwrap_or(Value::Null);
    let mut head = String::from("{");
    if let Value::Object(map) = result {
        for (k, v) in map {
            field(&mut head, &k, &v);
        }
    }
    head.push_str("\"stdout\":\"");
    w.push(&head).await?;
    write_stream(service, record, OutputStream::Stdout, &mut w).await?;
    w.push("\",\"stderr\":\"").await?;
    write_stream(service, record, OutputStream::Stderr, &mut w).await?;
    let mut tail = String::from("\",");
    if let Some(compile) = project::compile(&outcome) {
        field(&mut tail, "compile", &compile);
    }
    field(&mut tail, "artifacts", &artifacts);
    field(
        &mut tail,
        "artifactsTruncated",
        &outcome.artifacts_truncated,
    );
    tail.pop();
    for (k, v) in extra {
        tail.push(',');
        tail.push_str(&serde_json::to_string(&k).unwrap_or_default());
        tail.push(':');
        tail.push_str(&v.to_string());
    }
    tail.push('}');
    w.push(&tail).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn escaping_keeps_the_inside_of_the_string() {
        assert_eq!(escaped("a\"b\n"), "a\\\"b\\n");
        assert_eq!(escaped(""), "");
    }
}
