//! A run's output as its job's events: small writes gathered into chunks that end on character
//! boundaries, each stream numbered from 0, stages in between, with the log's backpressure
//! reaching the runner.

use std::sync::Arc;

use bytes::Bytes;
use kiln_engine::{OutputSink, Phase, SinkWait, Stream};

use crate::control::LiveJob;
use crate::event::{JobEvent, OutputStream, Stage};
use crate::job::JobState;
use crate::service::JobService;

/// The largest chunk of an output event.
pub const CHUNK_BYTES: usize = 8 * 1024;
/// Bytes a job's log is charged for each event beyond its payload, in the storage quotas.
pub(crate) const EVENT_OVERHEAD: u64 = 32;

/// Turns a run's output into the job's events: small writes are gathered (until a chunk is full,
/// or the runner's next clock tick) so a program writing a byte at a time makes events of many
/// bytes. Chunks end on UTF-8 character boundaries where the output is UTF-8 (a character split
/// by a write waits for its other bytes), so each chunk is text on its own; the bytes are kept as
/// written. Each stream's chunks are numbered from 0.
pub(crate) struct JobSink<'a> {
    service: &'a JobService,
    job: &'a Arc<LiveJob>,
    pending: [Vec<u8>; 3],
    seqs: [u64; 3],
    /// Bytes of events made so far, as the storage quotas count them.
    pub(crate) bytes: u64,
}

/// The length of the longest prefix of `buf` that does not end inside a UTF-8 character.
fn utf8_cut(buf: &[u8]) -> usize {
    let len = buf.len();
    for back in 1..=3.min(len) {
        let b = buf[len - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue;
        }
        let width = match b {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return len,
        };
        return if width > back { len - back } else { len };
    }
    len
}

impl<'a> JobSink<'a> {
    pub(crate) fn new(service: &'a JobService, job: &'a Arc<LiveJob>) -> Self {
        Self {
            service,
            job,
            pending: [Vec::new(), Vec::new(), Vec::new()],
            seqs: [0; 3],
            bytes: 0,
        }
    }

    fn emit(&mut self, i: usize, bytes: Bytes) {
        let seq = self.seqs[i];
        self.seqs[i] += 1;
        self.bytes += bytes.len() as u64 + EVENT_OVERHEAD;
        let event = JobEvent::Output {
            stream: OutputStream::ALL[i],
            seq,
            bytes,
        };
        let _ = self.service.log().append(&self.job.id, event);
    }

    /// Emits what stream `i` holds; unless `all`, a character still missing bytes stays.
    fn flush_stream(&mut self, i: usize, all: bool) {
        let cut = if all {
            self.pending[i].len()
        } else {
            utf8_cut(&self.pending[i])
        };
        if cut == 0 {
            return;
        }
        let rest = self.pending[i].split_off(cut);
        let bytes = Bytes::from(std::mem::replace(&mut self.pending[i], rest));
        self.emit(i, bytes);
    }

    pub(crate) fn flush_all(&mut self) {
        for i in 0..3 {
            self.flush_stream(i, true);
        }
    }
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::Compile => 2,
    }
}

impl OutputSink for JobSink<'_> {
    fn output(&mut self, stream: Stream, chunk: &[u8]) {
        let i = index(stream);
        let mut rest = chunk;
        while !rest.is_empty() {
            let room = CHUNK_BYTES - self.pending[i].len();
            let take = room.min(rest.len());
            self.pending[i].extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending[i].len() == CHUNK_BYTES {
                self.flush_stream(i, false);
            }
        }
    }

    fn flush(&mut self) {
        for i in 0..3 {
            self.flush_stream(i, false);
        }
    }

    fn ready(&mut self) -> Option<SinkWait> {
        self.service.log().ready()
    }

    fn stage(&mut self, stage: Phase) {
        // Whatever the compiler left unfinished belongs to it.
        self.flush_all();
        self.service.set_state(self.job, JobState::Running);
        let stage = match stage {
            Phase::Compiling => Stage::Compiling,
            Phase::Running => Stage::Running,
        };
        let _ = self
            .service
            .log()
            .append(&self.job.id, JobEvent::Stage(stage));
    }
}

#[cfg(test)]
mod tests {
    use super::utf8_cut;

    #[test]
    fn chunks_are_cut_before_a_split_character() {
        let text = "a✓日🙂".as_bytes();
        for end in 0..=text.len() {
            let cut = utf8_cut(&text[..end]);
            assert!(std::str::from_utf8(&text[..cut]).is_ok(), "{end}");
            assert!(end - cut < 4, "{end}");
        }
        // Bytes that are not UTF-8 at all are not held back.
        assert_eq!(utf8_cut(&[0xff, 0xfe]), 2);
        assert_eq!(utf8_cut(&[b'a', 0xe2, 0x9c]), 1);
    }
}
