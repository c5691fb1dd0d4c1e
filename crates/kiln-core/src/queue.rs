//! The run queue: jobs that may start, waiting for a run slot. [`JobQueue`] is what the service
//! needs of it; [`FairQueue`] keeps it in this process and takes owners in turn, so one token's
//! hundred jobs do not hold back another token's one.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::job::JobId;

/// Jobs waiting for a run slot.
#[async_trait]
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    /// Adds `owner`'s job at the end of its owner's line.
    fn push(&self, owner: &str, job: JobId);

    /// The next job, waiting for one; `None` once closed and empty.
    async fn pop(&self) -> Option<JobId>;

    /// Takes a job out of the queue (it was killed while waiting). Whether it was there.
    fn remove(&self, job: &JobId) -> bool;

    /// Jobs waiting.
    fn len(&self) -> usize;

    /// Whether no job waits.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// No more jobs: `pop` returns what is left, then `None`.
    fn close(&self);
}

#[derive(Debug, Default)]
struct Lines {
    /// Each owner's jobs, oldest first.
    by_owner: HashMap<String, VecDeque<JobId>>,
    /// Owners with jobs, in the order they are served.
    turn: VecDeque<String>,
    len: usize,
    closed: bool,
}

/// An in-process queue that serves owners round-robin, each owner's jobs in order.
#[derive(Debug, Default)]
pub struct FairQueue {
    lines: Mutex<Lines>,
    pushed: Notify,
}

impl FairQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl JobQueue for FairQueue {
    fn push(&self, owner: &str, job: JobId) {
        let mut lines = self.lines.lock().expect("queue lock");
        let line = lines.by_owner.entry(owner.to_string()).or_default();
        let was_empty = line.is_empty();
        line.push_back(job);
        if was_empty {
            lines.turn.push_back(owner.to_string());
        }
        lines.len += 1;
        drop(lines);
        self.pushed.notify_one();
    }

    async fn pop(&self) -> Option<JobId> {
        loop {
            let pushed = self.pushed.notified();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            {
                let mut lines = self.lines.lock().expect("queue lock");
                if let Some(owner) = lines.turn.pop_front() {
                    let line = lines
                        .by_owner
                        .get_mut(&owner)
                        .expect("an owner in turn has a line");
                    let job = line.pop_front().expect("an owner in turn has a job");
                    if line.is_empty() {
                        lines.by_owner.remove(&owner);
                    } else {
                        lines.turn.push_back(owner);
                    }
                    lines.len -= 1;
                    let more = lines.len > 0;
                    drop(lines);
                    if more {
                        // Another worker may be waiting for what is left.
                        self.pushed.notify_one();
                    }
                    return Some(job);
                }
                if lines.closed {
                    return None;
                }
            }
            pushed.await;
        }
    }

    fn remove(&self, job: &JobId) -> bool {
        let mut lines = self.lines.lock().expect("queue lock");
        let mut emptied = None;
        let mut found = false;
        for (owner, line) in lines.by_owner.iter_mut() {
            if let Some(pos) = line.iter().position(|j| j == job) {
                line.remove(pos);
                found = true;
                if line.is_empty() {
                    emptied = Some(owner.clone());
                }
                break;
            }
        }
        if found {
            lines.len -= 1;
        }
        if let Some(owner) = emptied {
            lines.by_owner.remove(&owner);
            lines.turn.retain(|o| *o != owner);
        }
        found
    }

    fn len(&self) -> usize {
        self.lines.lock().expect("queue lock").len
    }

    fn close(&self) {
        self.lines.lock().expect("queue lock").closed = true;
        self.pushed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn owners_are_served_in_turn() {
        let q = FairQueue::new();
        let ids: Vec<JobId> = (0..5).map(|_| JobId::new()).collect();
        for id in &ids[..4] {
            q.push("flood", id.clone());
        }
        q.push("other", ids[4].clone());
        assert_eq!(q.len(), 5);
        assert_eq!(q.pop().await.unwrap(), ids[0]);
        // The other owner's one job comes second, not fifth.
        assert_eq!(q.pop().await.unwrap(), ids[4]);
        assert!(q.remove(&ids[2]));
        assert!(!q.remove(&ids[2]));
        assert_eq!(q.pop().await.unwrap(), ids[1]);
        assert_eq!(q.pop().await.unwrap(), ids[3]);
        assert!(q.is_empty());
        q.close();
        assert_eq!(q.pop().await, None);
    }

    #[tokio::test]
    async fn a_waiting_worker_gets_the_next_push() {
        let q = std::sync::Arc::new(FairQueue::new());
        let worker = {
            let q = q.clone();
            tokio::spawn(async move { q.pop().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let id = JobId::new();
        q.push("a", id.clone());
        assert_eq!(worker.await.unwrap(), Some(id));
    }
}
