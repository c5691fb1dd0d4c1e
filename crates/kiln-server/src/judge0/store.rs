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
#[derive(Debug, Default)]
pub struct Store {
    inner: Mutex<(HashMap<String, Entry>, VecDeque<String>, usize)>,
}

impl Store {
    /// Keeps `entry` under `token`, first dropping what expired and, over the bound, the oldest.
    pub fn insert(&self, token: String, entry: Entry) {
        let Ok(mut g) = self.inner.lock() else { return };
        let (map, order, bytes) = &mut *g;
        let now = entry.created_at_ms;
        let adding = entry.bytes();
        while let Some(front) = order.front() {
            let expired = map.get(front).is_none_or(|e| e.expires_at_ms <= now);
            if !expired && order.len() < MAX_ENTRIES && *bytes + adding <= MAX_BYTES {
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
