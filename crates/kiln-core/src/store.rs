//! Job records: every state change and every outcome is kept, so a restarted service still
//! answers for its jobs, and a job that was running when the process died ends as `error` with a
//! reason instead of staying `running` forever. [`JobStore`] is what the service needs of it;
//! [`SqliteStore`] keeps it in a SQLite file, writing on a thread of its own and reading on
//! blocking threads, never on the async ones.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use crate::job::{JobId, JobOutcome, JobRecord, JobState, OutputEncoding, Verdict};

/// A store error, with what was being done.
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

/// Where job records live.
#[async_trait]
pub trait JobStore: Send + Sync + std::fmt::Debug {
    /// Records a job's new state (in order with its earlier ones); never waits.
    fn put(&self, record: &JobRecord);

    /// A record that has not expired.
    async fn get(&self, id: &JobId, now_ms: i64) -> Result<Option<JobRecord>, StoreError>;

    /// Ends every job a previous process left unfinished as `error`; returns them.
    async fn recover(&self, now_ms: i64, expires_at_ms: i64) -> Result<Vec<JobId>, StoreError>;

    /// Deletes the expired records; returns their ids (whose logs go too).
    async fn purge_expired(&self, now_ms: i64) -> Result<Vec<JobId>, StoreError>;

    /// Bytes of stored logs per owner, over the records that have not expired.
    async fn stored_bytes(&self, now_ms: i64) -> Result<HashMap<String, u64>, StoreError>;

    /// Waits until every `put` so far is written.
    async fn flush(&self);
}

enum Write {
    Put(Box<JobRecord>),
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// The job records in a SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    read: Arc<Mutex<Connection>>,
    writes: std::sync::mpsc::Sender<Write>,
}

const SCHEMA: &str = "PRAGMA journal_mode = WAL;
     PRAGMA synchronous = NORMAL;
     PRAGMA busy_timeout = 5000;
     CREATE TABLE IF NOT EXISTS job_records (
         id TEXT PRIMARY KEY,
         owner TEXT NOT NULL,
         language TEXT NOT NULL,
         version TEXT NOT NULL,
         state TEXT NOT NULL,
         updated_at_ms INTEGER NOT NULL,
         expires_at_ms INTEGER,
         collect_output INTEGER NOT NULL,
         output_encoding TEXT NOT NULL,
         outcome TEXT,
         log_bytes INTEGER NOT NULL
     );
     CREATE INDEX IF NOT EXISTS job_records_expiry ON job_records(expires_at_ms);";

fn put(conn: &Connection, r: &JobRecord) -> Result<(), StoreError> {
    let outcome = r
        .outcome
        .as_ref()
        .and_then(|o| serde_json::to_string(o).ok());
    conn.execute(
        "INSERT INTO job_records (id, owner, language, version, state, updated_at_ms, expires_at_ms,
             collect_output, outcome, log_bytes, output_encoding)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(id) DO UPDATE SET state = excluded.state,
             updated_at_ms = excluded.updated_at_ms, expires_at_ms = excluded.expires_at_ms,
             outcome = excluded.outcome, log_bytes = excluded.log_bytes",
        params![
            r.id.as_str(),
            r.owner,
            r.language,
            r.version,
            r.state.as_str(),
            r.updated_at_ms,
            r.expires_at_ms,
            r.collect_output,
            outcome,
            r.log_bytes as i64,
            r.output_encoding.as_str(),
        ],
    )
    .map_err(ctx("write job"))?;
    Ok(())
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    let state: String = row.get(4)?;
    let outcome: Option<String> = row.get(8)?;
    let log_bytes: i64 = row.get(9)?;
    let encoding: String = row.get(10)?;
    Ok(JobRecord {
        id: JobId(row.get(0)?),
        owner: row.get(1)?,
        language: row.get(2)?,
        version: row.get(3)?,
        state: JobState::parse(&state).unwrap_or(JobState::Error),
        updated_at_ms: row.get(5)?,
        expires_at_ms: row.get(6)?,
        collect_output: row.get(7)?,
        output_encoding: if encoding == "base64" {
            OutputEncoding::Base64
        } else {
            OutputEncoding::Utf8
        },
        outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
        log_bytes: log_bytes.max(0) as u64,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(ctx("open"))?;
        conn.execute_batch(SCHEMA).map_err(ctx("create schema"))?;
        let read = Connection::open(path).map_err(ctx("open for reading"))?;
        read.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(ctx("set the busy timeout"))?;
        let (writes, rx) = std::sync::mpsc::channel::<Write>();
        // One writer keeps the records in the order the transitions happened.
        std::thread::Builder::new()
            .name("kiln-store".into())
            .spawn(move || {
                for write in rx {
                    match write {
                        Write::Put(record) => {
                            if let Err(e) = put(&conn, &record) {
                                tracing::error!(error = %e, job = %record.id, "could not record a job");
                            }
                        }
                        Write::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .map_err(|e| StoreError {
                what: "start the writer thread",
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Self {
            read: Arc::new(Mutex::new(read)),
            writes,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.read.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock().expect("store lock")))
            .await
            .map_err(|e| StoreError {
                what: "run a query",
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    fn put(&self, record: &JobRecord) {
        let _ = self.writes.send(Write::Put(Box::new(record.clone())));
    }

    async fn get(&self, id: &JobId, now_ms: i64) -> Result<Option<JobRecord>, StoreError> {
        let id = id.clone();
        self.blocking(move |conn| {
            conn.query_row(
                "SELECT id, owner, language, version, state, updated_at_ms, expires_at_ms,
                     collect_output, outcome, log_bytes, output_encoding
                 FROM job_records WHERE id = ?1 AND (expires_at_ms IS NULL OR expires_at_ms > ?2)",
                params![id.as_str(), now_ms],
                row_to_record,
            )
            .optional()
            .map_err(ctx("read job"))
        })
        .await
    }

    async fn recover(&self, now_ms: i64, expires_at_ms: i64) -> Result<Vec<JobId>, StoreError> {
        self.flush().await;
        let unfinished = self
            .blocking(|conn| {
                let mut stmt = conn
                    .prepare(
                        "SELECT id, owner, language, version, state, updated_at_ms, expires_at_ms,
                             collect_output, outcome, log_bytes, output_encoding
                         FROM job_records WHERE state IN ('queued', 'starting', 'running')",
                    )
                    .map_err(ctx("find unfinished jobs"))?;
                let rows = stmt
                    .query_map([], row_to_record)
                    .map_err(ctx("find unfinished jobs"))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(ctx("find unfinished jobs"))
            })
            .await?;
        let mut ids = Vec::new();
        for mut r in unfinished {
            let was = r.state;
            r.state = JobState::Error;
            r.updated_at_ms = now_ms;
            r.expires_at_ms = Some(expires_at_ms);
            r.outcome = Some(JobOutcome::unrun(
                Verdict::Run(kiln_engine::Status::InternalError),
                format!("the server stopped while the job was {}", was.as_str()),
            ));
            ids.push(r.id.clone());
            self.put(&r);
        }
        self.flush().await;
        Ok(ids)
    }

    async fn purge_expired(&self, now_ms: i64) -> Result<Vec<JobId>, StoreError> {
        self.flush().await;
        self.blocking(move |conn| {
            let mut stmt = conn
                .prepare("SELECT id FROM job_records WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1")
                .map_err(ctx("find expired jobs"))?;
            let ids = stmt
                .query_map(params![now_ms], |row| row.get::<_, String>(0))
                .map_err(ctx("find expired jobs"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(ctx("find expired jobs"))?;
            conn.execute(
                "DELETE FROM job_records WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1",
                params![now_ms],
            )
            .map_err(ctx("purge expired jobs"))?;
            Ok(ids.into_iter().map(JobId).collect())
        })
        .await
    }

    async fn stored_bytes(&self, now_ms: i64) -> Result<HashMap<String, u64>, StoreError> {
        self.blocking(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT owner, SUM(log_bytes) FROM job_records
                     WHERE expires_at_ms IS NULL OR expires_at_ms > ?1 GROUP BY owner",
                )
                .map_err(ctx("sum stored output"))?;
            let rows = stmt
                .query_map(params![now_ms], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(ctx("sum stored output"))?;
            let mut out = HashMap::new();
            for row in rows {
                let (owner, bytes) = row.map_err(ctx("sum stored output"))?;
                out.insert(owner, bytes.max(0) as u64);
            }
            Ok(out)
        })
        .await
    }

    async fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let _ = self.writes.send(Write::Flush(tx));
        let _ = tokio::task::spawn_blocking(move || rx.recv()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, state: JobState) -> JobRecord {
        JobRecord {
            id: JobId(id.into()),
            owner: "default".into(),
            language: "python".into(),
            version: "3.11.2".into(),
            state,
            updated_at_ms: 1,
            expires_at_ms: None,
            collect_output: true,
            output_encoding: OutputEncoding::Utf8,
            outcome: None,
            log_bytes: 10,
        }
    }

    #[tokio::test]
    async fn records_survive_reopening_and_unfinished_jobs_become_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.put(&record("a", JobState::Running));
            store.put(&record("b", JobState::Queued));
            let mut done = record("c", JobState::Done);
            done.outcome = Some(JobOutcome::unrun(Verdict::Expired, "x"));
            done.expires_at_ms = Some(10_000);
            store.put(&done);
            store.flush().await;
        }
        let store = SqliteStore::open(&path).unwrap();
        let recovered = store.recover(5, 9_000).await.unwrap();
        assert_eq!(recovered.len(), 2);
        let a = store.get(&JobId("a".into()), 6).await.unwrap().unwrap();
        assert_eq!(a.state, JobState::Error);
        assert!(a.error().unwrap().contains("running"), "{a:?}");
        let c = store.get(&JobId("c".into()), 6).await.unwrap().unwrap();
        assert_eq!(c.outcome.unwrap().verdict, Verdict::Expired);
        assert_eq!(store.stored_bytes(6).await.unwrap()["default"], 30);
        // Expired records are gone for readers, then for good.
        assert!(store
            .get(&JobId("c".into()), 10_001)
            .await
            .unwrap()
            .is_none());
        assert_eq!(store.purge_expired(10_001).await.unwrap().len(), 3);
        assert!(store.get(&JobId("a".into()), 1).await.unwrap().is_none());
    }
}
