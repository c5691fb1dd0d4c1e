//! The submissions of the Judge0 face, kept in memory by token: what was submitted (Judge0
//! echoes source, stdin, expected output and limits, which the job service does not keep) and,
//! once read, the projected result. The job's record and log stay the service's; an entry lives
//! as long as the job's result (the service's `result_ttl`), and at most [`MAX_ENTRIES`] holding
//! at most [`MAX_BYTES`] are kept, the oldest dropped first, so a token is answered 404 once
//! either is gone or the server restarts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::project::{Checked, Finished};

/// How many submissions are kept at most.
pub const MAX_ENTRIES: usize = 10_000;

/// How many bytes of submitted text (source, stdin, expected output, additional files) are kept
/// at most, all submissions together.
pub const MAX_BYTES: usize = 512 << 20;

/// One submission.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The token's name that made it (only it may read it).
    pub owner: String,
    /// What was submitted (shared: every read of the submission clones its entry).
    pub checked: Arc<Checked>,
    /// Its language's Judge0 name.
    pub language_name: String,
    /// When it was made, ms since the epoch.
    pub created_at_ms: i64,
    /// When it may be dropped, ms since the epoch.
    pub expires_at_ms: i64,
    /// Its result, once it is over and was read (projected once).
    pub finished: Option<(i64, Finished)>,
    /// Its further runs (`number_of_runs`).
    pub runs: Runs,
}

/// The runs of a submission after its first (whose job's id is the token).
#[derive(Debug, Clone)]
pub struct Runs {
    /// The further runs' job ids, in order.
    pub extra: Vec<String>,
    /// True once no further run will start and the last one is over (at once for one run).
    pub settled: tokio::sync::watch::Receiver<bool>,
}

impl Entry {
    /// The bytes of submitted text it holds.
    fn bytes(&self) -> usize {
        let c = &self.checked;
        c.source_code.len()
            + c.stdin.as_ref().map_or(0, Vec::len)
            + c.expected_output.as_ref().map_or(0, Vec::len)
            + c.settings.additional_files.as_ref().map_or(0, String::len)
    }
}

/// The submissions, by token, with their order of arrival and the bytes they hold.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<(HashMap<String, Entry>, VecDeque<String>, usize)>,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for Store {
    fn default() -> Self {
        Self::with_bounds(MAX_ENTRIES, MAX_BYTES)
    }
}

impl Store {
    /// A store of at most `max_entries` submissions holding at most `max_bytes`.
    pub fn with_bounds(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::default(),
            max_entries,
            max_bytes,
        }
    }

    /// Keeps `entry` under `token`, first dropping what expired and, over the bound, the oldest.
    pub fn insert(&self, token: String, entry: Entry) {
        let Ok(mut g) = self.inner.lock() else { return };
        let (map, order, bytes) = &mut *g;
        let now = entry.created_at_ms;
        let adding = entry.bytes();
        while let Some(front) = order.front() {
            let expired = map.get(front).is_none_or(|e| e.expires_at_ms <= now);
            if !expired && order.len() < self.max_entries && *bytes + adding <= self.max_bytes {
                break;
            }
            if let Some(t) = order.pop_front() {
                if let Some(e) = map.remove(&t) {
                    *bytes -= e.bytes();
                }
            }
        }
        *bytes += adding;
        order.push_back(token.clone());
        map.insert(token, entry);
    }

    /// `owner`'s submission `token`.
    pub fn get(&self, owner: &str, token: &str) -> Option<Entry> {
        let g = self.inner.lock().ok()?;
        g.0.get(token).filter(|e| e.owner == owner).cloned()
    }

    /// Whether `owner`'s submission `token` has settled its runs.
    pub fn settled(&self, owner: &str, token: &str) -> Option<bool> {
        let g = self.inner.lock().ok()?;
        let e = g.0.get(token).filter(|e| e.owner == owner)?;
        let settled = *e.runs.settled.borrow();
        Some(settled)
    }

    /// Adds a further run's job to `token`.
    pub fn add_run(&self, token: &str, job: String) {
        if let Ok(mut g) = self.inner.lock() {
            if let Some(e) = g.0.get_mut(token) {
                e.runs.extra.push(job);
            }
        }
    }

    /// Records the result of `token`.
    pub fn finish(&self, token: &str, finished: (i64, Finished)) {
        if let Ok(mut g) = self.inner.lock() {
            if let Some(e) = g.0.get_mut(token) {
                e.finished = Some(finished);
            }
        }
    }

    /// Drops `owner`'s submission `token`.
    pub fn remove(&self, owner: &str, token: &str) -> bool {
        let Ok(mut g) = self.inner.lock() else {
            return false;
        };
        let (map, order, bytes) = &mut *g;
        if map.get(token).is_some_and(|e| e.owner == owner) {
            if let Some(e) = map.remove(token) {
                *bytes -= e.bytes();
            }
            order.retain(|t| t != token);
            return true;
        }
        false
    }

    /// `owner`'s tokens, newest first.
    pub fn tokens_of(&self, owner: &str) -> Vec<String> {
        let Ok(g) = self.inner.lock() else {
            return Vec::new();
        };
        g.1.iter()
            .rev()
            .filter(|t| g.0.get(*t).is_some_and(|e| e.owner == owner))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::{Checked, Settings};
    use super::*;

    fn entry(owner: &str, source_bytes: usize, created_at_ms: i64) -> Entry {
        let settings = Settings {
            cpu_time_limit: 5.0,
            cpu_extra_time: 1.0,
            wall_time_limit: 10.0,
            memory_limit: 128_000,
            stack_limit: 64_000,
            max_processes_and_or_threads: 60,
            per_process_time: false,
            per_process_memory: false,
            max_file_size: 1024,
            number_of_runs: 1,
            redirect_stderr_to_stdout: false,
            compiler_options: None,
            command_line_arguments: None,
            callback_url: None,
            additional_files: None,
        };
        Entry {
            owner: owner.into(),
            checked: Arc::new(Checked {
                language_id: 71,
                source_code: vec![b'x'; source_bytes],
                stdin: None,
                expected_output: None,
                settings,
                request: kiln_core::JobRequest::default(),
            }),
            language_name: "Python".into(),
            created_at_ms,
            expires_at_ms: created_at_ms + 60_000,
            finished: None,
            runs: Runs {
                extra: Vec::new(),
                settled: tokio::sync::watch::channel(true).1,
            },
        }
    }

    #[test]
    fn the_oldest_go_first_past_either_bound() {
        let store = Store::with_bounds(3, 100);
        for (n, t) in ["a", "b", "c"].iter().enumerate() {
            store.insert((*t).into(), entry("ci", 40, n as i64));
        }
        // 120 bytes would be over 100: only the newest two of the three are kept.
        assert!(store.get("ci", "a").is_none());
        assert_eq!(store.tokens_of("ci"), ["c", "b"]);
        store.insert("d".into(), entry("ci", 10, 3));
        store.insert("e".into(), entry("ci", 10, 4));
        // Four would be over three entries.
        assert_eq!(store.tokens_of("ci"), ["e", "d", "c"]);
        assert!(store.remove("ci", "c"));
        store.insert("f".into(), entry("ci", 80, 5));
        assert_eq!(store.tokens_of("ci"), ["f", "e", "d"]);
        // Another token sees none of them, and cannot remove them.
        assert!(store.get("other", "f").is_none());
        assert!(!store.remove("other", "f"));
    }
}
