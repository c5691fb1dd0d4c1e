//! What happens to a job, in order: its stages, its output and its one outcome. Each face projects
//! these events to its own wire shapes (the code-runner channel events, SSE); the event log keeps
//! them in order and replays them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::job::{ArtifactInfo, JobOutcome};

/// A job's stage, as its events announce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Admitted, waiting for its start or a run slot.
    Queued,
    /// Compiling.
    Compiling,
    /// Running.
    Running,
}

/// Which output a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// The program's stdout.
    Stdout,
    /// The program's stderr.
    Stderr,
    /// The compiler's output (stdout and stderr as written).
    Compile,
}

impl OutputStream {
    /// Every stream, in the order of their numbers.
    pub const ALL: [OutputStream; 3] = [
        OutputStream::Stdout,
        OutputStream::Stderr,
        OutputStream::Compile,
    ];

    fn number(self) -> u8 {
        match self {
            OutputStream::Stdout => 0,
            OutputStream::Stderr => 1,
            OutputStream::Compile => 2,
        }
    }

    fn from_number(n: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.number() == n)
    }
}

/// One thing that happened to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// It moved to a stage.
    Stage(Stage),
    /// A chunk of output: raw bytes, `seq` counting the stream's chunks from 0.
    Output {
        /// The stream.
        stream: OutputStream,
        /// The chunk's number in its stream.
        seq: u64,
        /// The bytes, as the program wrote them.
        bytes: Bytes,
    },
    /// A file the run created or changed, kept as an artifact (all of them come after the
    /// output and before `Finished`).
    Artifact(ArtifactInfo),
    /// How it ended; always the last event, exactly once.
    Finished(Box<JobOutcome>),
}

impl JobEvent {
    /// Bytes it holds in memory, roughly (what the output budget counts).
    pub fn size(&self) -> usize {
        match self {
            JobEvent::Output { bytes, .. } => bytes.len() + 32,
            JobEvent::Stage(_) => 16,
            JobEvent::Artifact(a) => a.name.len() + 64,
            JobEvent::Finished(_) => 512,
        }
    }
}

/// An event with its position in the job's log (0, 1, 2, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Its position.
    pub position: u64,
    /// The event.
    pub event: JobEvent,
}

/// Why a stored record could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("event log record at byte {offset}: {reason}")]
pub struct DecodeError {
    /// Where in the file.
    pub offset: usize,
    /// What was wrong.
    pub reason: String,
}

const KIND_STAGE: u8 = 1;
const KIND_OUTPUT: u8 = 2;
const KIND_FINISHED: u8 = 3;
const KIND_ARTIFACT: u8 = 4;

impl EventRecord {
    /// Appends the record's stored form to `out`: `len: u32 LE`, `kind: u8`, `position: u64 LE`,
    /// then the body (a stage or an outcome as JSON; for output, `stream: u8`, `seq: u64 LE` and
    /// the raw bytes). Output stays binary: no escaping, no base64.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        match &self.event {
            JobEvent::Stage(stage) => {
                out.push(KIND_STAGE);
                out.extend_from_slice(&self.position.to_le_bytes());
                out.extend_from_slice(&serde_json::to_vec(stage).unwrap_or_default());
            }
            JobEvent::Output { stream, seq, bytes } => {
                out.push(KIND_OUTPUT);
                out.extend_from_slice(&self.position.to_le_bytes());
                out.push(stream.number());
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(bytes);
            }
            JobEvent::Artifact(artifact) => {
                out.push(KIND_ARTIFACT);
                out.extend_from_slice(&self.position.to_le_bytes());
                out.extend_from_slice(&serde_json::to_vec(artifact).unwrap_or_default());
            }
            JobEvent::Finished(outcome) => {
                out.push(KIND_FINISHED);
                out.extend_from_slice(&self.position.to_le_bytes());
                out.extend_from_slice(&serde_json::to_vec(outcome).unwrap_or_default());
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Decodes the records of a stored log. A torn last record (the service died while writing
    /// it) ends the list instead of failing it.
    pub fn decode_all(data: &[u8]) -> Result<Vec<EventRecord>, DecodeError> {
        let mut records = Vec::new();
        let mut offset = 0;
        while offset + 4 <= data.len() {
            let len = u32::from_le_bytes(data[offset..offset + 4].try_into().expect("4 bytes"));
            let body_start = offset + 4;
            let Some(body) = data.get(body_start..body_start + len as usize) else {
                break;
            };
            records.push(Self::decode(body, offset)?);
            offset = body_start + len as usize;
        }
        Ok(records)
    }

    fn decode(body: &[u8], offset: usize) -> Result<EventRecord, DecodeError> {
        let bad = |reason: &str| DecodeError {
            offset,
            reason: reason.to_string(),
        };
        if body.len() < 9 {
            return Err(bad("shorter than its header"));
        }
        let kind = body[0];
        let position = u64::from_le_bytes(body[1..9].try_into().expect("8 bytes"));
        let rest = &body[9..];
        let event = match kind {
            KIND_STAGE => JobEvent::Stage(
                serde_json::from_slice(rest).map_err(|e| bad(&format!("stage: {e}")))?,
            ),
            KIND_OUTPUT => {
                if rest.len() < 9 {
                    return Err(bad("output shorter than its header"));
                }
                let stream = OutputStream::from_number(rest[0]).ok_or_else(|| bad("stream"))?;
                let seq = u64::from_le_bytes(rest[1..9].try_into().expect("8 bytes"));
                JobEvent::Output {
                    stream,
                    seq,
                    bytes: Bytes::copy_from_slice(&rest[9..]),
                }
            }
            KIND_FINISHED => JobEvent::Finished(Box::new(
                serde_json::from_slice(rest).map_err(|e| bad(&format!("outcome: {e}")))?,
            )),
            KIND_ARTIFACT => JobEvent::Artifact(
                serde_json::from_slice(rest).map_err(|e| bad(&format!("artifact: {e}")))?,
            ),
            _ => return Err(bad("unknown kind")),
        };
        Ok(EventRecord { position, event })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobOutcome, Verdict};

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let records = vec![
            EventRecord {
                position: 0,
                event: JobEvent::Stage(Stage::Running),
            },
            EventRecord {
                position: 1,
                event: JobEvent::Output {
                    stream: OutputStream::Stderr,
                    seq: 7,
                    bytes: Bytes::from_static(&[0, 255, b'x']),
                },
            },
            EventRecord {
                position: 2,
                event: JobEvent::Finished(Box::new(JobOutcome::unrun(Verdict::Expired, "late"))),
            },
        ];
        let mut data = Vec::new();
        for r in &records {
            r.encode(&mut data);
        }
        assert_eq!(EventRecord::decode_all(&data).unwrap(), records);
        data.truncate(data.len() - 3);
        assert_eq!(EventRecord::decode_all(&data).unwrap(), records[..2]);
    }
}
