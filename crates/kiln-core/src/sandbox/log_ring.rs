//! A background process's output: a bounded ring of chunks, each with its stream and its offset in
//! everything the process ever wrote, so a reader that comes back later (or keeps up live) picks up
//! where it stopped and learns how many bytes the ring let go in between.

use std::collections::VecDeque;

use kiln_engine::Stream;

/// One chunk of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Where it came from (`Stdout` also for a terminal's output).
    pub stream: Stream,
    /// Its first byte's offset in all of the process's output.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// What a reader gets from [`LogRing::read_from`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogRead {
    /// Bytes between the reader's offset and the oldest chunk kept, let go of meanwhile.
    pub skipped: u64,
    /// The chunks from there on.
    pub chunks: Vec<LogChunk>,
    /// The offset to read from next time.
    pub next: u64,
}

/// The ring.
#[derive(Debug)]
pub struct LogRing {
    cap: usize,
    held: usize,
    chunks: VecDeque<LogChunk>,
    /// Everything ever written.
    end: u64,
}

impl LogRing {
    /// A ring that keeps the newest `cap` bytes (at least the newest chunk, cut to `cap`).
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            held: 0,
            chunks: VecDeque::new(),
            end: 0,
        }
    }

    /// Appends a chunk, letting go of the oldest ones past the cap.
    pub fn push(&mut self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let offset = self.end;
        self.end += data.len() as u64;
        let keep = if data.len() > self.cap {
            &data[data.len() - self.cap..]
        } else {
            data
        };
        let offset = offset + (data.len() - keep.len()) as u64;
        self.held += keep.len();
        self.chunks.push_back(LogChunk {
            stream,
            offset,
            data: keep.to_vec(),
        });
        while self.held > self.cap {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.held -= old.data.len();
        }
    }

    /// Everything ever written, in bytes.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The offset of the oldest byte kept.
    pub fn start(&self) -> u64 {
        self.chunks.front().map_or(self.end, |c| c.offset)
    }

    /// The chunks from `offset` on (the first one cut to start there).
    pub fn read_from(&self, offset: u64) -> LogRead {
        let start = self.start();
        let from = offset.max(start).min(self.end);
        let chunks = self
            .chunks
            .iter()
            .filter(|c| c.offset + c.data.len() as u64 > from)
            .map(|c| {
                let cut = from.saturating_sub(c.offset) as usize;
                LogChunk {
                    stream: c.stream,
                    offset: c.offset + cut as u64,
                    data: c.data[cut..].to_vec(),
                }
            })
            .collect();
        LogRead {
            skipped: from.saturating_sub(offset),
            chunks,
            next: self.end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_resumes_at_its_offset_and_learns_what_was_let_go() {
        let mut ring = LogRing::new(10);
        ring.push(Stream::Stdout, b"hello ");
        ring.push(Stream::Stderr, b"err");
        let all = ring.read_from(0);
        assert_eq!(all.skipped, 0);
        assert_eq!(all.next, 9);
        assert_eq!(all.chunks.len(), 2);
        assert_eq!(ring.read_from(7).chunks[0].data, b"rr");
        ring.push(Stream::Stdout, b"world");
        // 14 bytes written, 10 kept: "hello " went as a whole chunk.
        assert_eq!(ring.start(), 6);
        let late = ring.read_from(0);
        assert_eq!(late.skipped, 6);
        assert_eq!(late.chunks[0].data, b"err");
        assert_eq!(late.next, 14);
        assert!(ring.read_from(14).chunks.is_empty());
    }

    #[test]
    fn a_chunk_larger_than_the_ring_keeps_its_tail() {
        let mut ring = LogRing::new(4);
        ring.push(Stream::Stdout, b"abcdefgh");
        let r = ring.read_from(0);
        assert_eq!(r.skipped, 4);
        assert_eq!(r.chunks[0].data, b"efgh");
        assert_eq!(r.chunks[0].offset, 4);
    }
}
