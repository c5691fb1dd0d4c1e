//! Job records in SQLite: every state transition and every result (with its expiry) is written, so
//! a restarted server still answers for its jobs, and a job that was running when the process died
//! is marked `error` with a reason instead of staying `running` forever.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::wire::JobState;

/// A database error, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("job store: {what}: {source}")]
pub struct StoreError {
    what: &'static str,
    #[source]
    source: rusqlite::Error,
}

fn ctx(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError { what, source }
}

/// One job's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The job id.
    pub id: String,
    /// The name of the token that created it.
    pub owner: String,
    /// Language name.
    pub language: String,
    /// Toolchain version.
    pub version: String,
    /// State.
    pub state: JobState,
    /// Last change, ms since the epoch.
    pub updated_at_ms: i64,
    /// When the record may be deleted (set once the job is over).
    pub expires_at_ms: Option<i64>,
    /// The RunResult as JSON, for jobs that collected their output.
    pub output: Option<String>,
    /// Why it ended in `error`.
    pub error: Option<String>,
}

/// The job database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(ctx("open"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS jobs (
                 id TEXT PRIMARY KEY,
                 owner TEXT NOT NULL,
                 language TEXT NOT NULL,
                 version TEXT NOT NULL,
                 state TEXT NOT NULL,
                 updated_at_ms INTEGER NOT NULL,
                 expires_at_ms INTEGER,
                 output TEXT,
                 error TEXT
             );
             CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(expires_at_ms);",
        )
        .map_err(ctx("create schema"))?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Marks every job that was not over when the last server stopped as `error`. Returns how many.
    pub fn recover(&self, now_ms: i64, expires_at_ms: i64) -> Result<usize, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        conn.execute(
            "UPDATE jobs SET state = 'error', updated_at_ms = ?1, expires_at_ms = ?2,
                 error = 'the server stopped while the job was ' || state
             WHERE state IN ('queued', 'starting', 'running')",
            params![now_ms, expires_at_ms],
        )
        .map_err(ctx("recover unfinished jobs"))
    }

    /// Writes a record (insert or replace).
    pub fn put(&self, r: &JobRecord) -> Result<(), StoreError> {
        let conn = self.conn.lock().expect("store lock");
        conn.execute(
            "INSERT INTO jobs (id, owner, language, version, state, updated_at_ms, expires_at_ms, output, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state, updated_at_ms = excluded.updated_at_ms,
                 expires_at_ms = excluded.expires_at_ms, output = excluded.output, error = excluded.error",
            params![
                r.id,
                r.owner,
                r.language,
                r.version,
                r.state.as_str(),
                r.updated_at_ms,
                r.expires_at_ms,
                r.output,
                r.error
            ],
        )
        .map_err(ctx("write job"))?;
        Ok(())
    }

    /// Reads a record that has not expired.
    pub fn get(&self, id: &str, now_ms: i64) -> Result<Option<JobRecord>, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        conn.query_row(
            "SELECT id, owner, language, version, state, updated_at_ms, expires_at_ms, output, error
             FROM jobs WHERE id = ?1 AND (expires_at_ms IS NULL OR expires_at_ms > ?2)",
            params![id, now_ms],
            |row| {
                let state: String = row.get(4)?;
                Ok(JobRecord {
                    id: row.get(0)?,
                    owner: row.get(1)?,
                    language: row.get(2)?,
                    version: row.get(3)?,
                    state: JobState::parse(&state).unwrap_or(JobState::Error),
                    updated_at_ms: row.get(5)?,
                    expires_at_ms: row.get(6)?,
                    output: row.get(7)?,
                    error: row.get(8)?,
                })
            },
        )
        .optional()
        .map_err(ctx("read job"))
    }

    /// Deletes expired records. Returns how many.
    pub fn purge_expired(&self, now_ms: i64) -> Result<usize, StoreError> {
        let conn = self.conn.lock().expect("store lock");
        conn.execute(
            "DELETE FROM jobs WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1",
            params![now_ms],
        )
        .map_err(ctx("purge expired jobs"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, state: JobState) -> JobRecord {
        JobRecord {
            id: id.into(),
            owner: "default".into(),
            language: "python".into(),
            version: "3.11.2".into(),
            state,
            updated_at_ms: 1,
            expires_at_ms: None,
            output: None,
            error: None,
        }
    }

    #[test]
    fn records_survive_reopening_and_unfinished_jobs_become_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        {
            let store = Store::open(&path).unwrap();
            store.put(&record("a", JobState::Running)).unwrap();
            store.put(&record("b", JobState::Queued)).unwrap();
            let mut done = record("c", JobState::Done);
            done.output = Some("{}".into());
            done.expires_at_ms = Some(10_000);
            store.put(&done).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.recover(5, 9_000).unwrap(), 2);
        let a = store.get("a", 6).unwrap().unwrap();
        assert_eq!(a.state, JobState::Error);
        assert!(a.error.unwrap().contains("running"));
        assert_eq!(
            store.get("c", 6).unwrap().unwrap().output.as_deref(),
            Some("{}")
        );
        // Expired records are gone for readers, then for good.
        assert!(store.get("c", 10_001).unwrap().is_none());
        assert_eq!(store.purge_expired(10_001).unwrap(), 3);
        assert!(store.get("a", 1).unwrap().is_none());
    }
}
