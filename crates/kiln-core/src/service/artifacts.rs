//! A job's artifacts: the files its run left, stored as objects, announced as events, listed in
//! its outcome and counted against its owner's stored-output quotas as they are kept.

use super::JobService;
use crate::control::LiveJob;
use crate::event::JobEvent;
use crate::job::{now_ms, ArtifactInfo, JobId, JobOutcome};
use crate::sink::EVENT_OVERHEAD;
use kiln_workload::workspace::Captured;

impl JobService {
    /// Takes `bytes` more of `owner`'s stored-output quotas for a live job (its artifacts, which
    /// admission does not reserve: most runs write none); false if they would pass a quota.
    pub(super) fn reserve_more(&self, id: &JobId, owner: &str, bytes: u64) -> bool {
        let mut q = self.quotas.lock().expect("quotas lock");
        let stored = q.stored.get(owner).copied().unwrap_or(0);
        if stored.saturating_add(bytes) > self.cfg.owner_storage_bytes
            || q.stored_total.saturating_add(bytes) > self.cfg.storage_bytes
        {
            return false;
        }
        q.store(owner, bytes as i64);
        *self
            .reserved
            .lock()
            .expect("reserved lock")
            .entry(id.clone())
            .or_default() += bytes;
        true
    }

    /// Stores a run's captured files, announces each with an `Artifact` event and lists them in
    /// `outcome`; returns the bytes they take. A file that would pass the owner's stored-output
    /// quota, or that the store refuses, is left out (and the list marked truncated).
    pub(super) async fn keep_artifacts(
        &self,
        job: &LiveJob,
        captured: Captured,
        outcome: &mut JobOutcome,
    ) -> u64 {
        outcome.artifacts_truncated = captured.truncated;
        let mut kept = Vec::new();
        for file in captured.files {
            if !self.reserve_more(
                &job.id,
                &job.owner,
                file.content.len() as u64 + EVENT_OVERHEAD,
            ) {
                outcome.artifacts_truncated = true;
                continue;
            }
            let info = ArtifactInfo {
                index: kept.len() as u32,
                mime_type: crate::artifacts::mime_type(&file.name, &file.content),
                bytes: file.content.len() as u64,
                name: file.name,
            };
            kept.push((info, bytes::Bytes::from(file.content)));
        }
        // Stored side by side; announced in their order once stored.
        let stores = kept.iter().map(|(info, bytes)| {
            let key = info.key(&job.id);
            async move { self.objects.put(&key, bytes.clone()).await }
        });
        let results = futures_util::future::join_all(stores).await;
        let mut stored = 0u64;
        for ((info, _), result) in kept.into_iter().zip(results) {
            if let Err(e) = result {
                tracing::error!(job = %job.id, error = %e, "storing an artifact");
                outcome.artifacts_truncated = true;
                continue;
            }
            stored += info.bytes + EVENT_OVERHEAD;
            let _ = self.log.append(&job.id, JobEvent::Artifact(info.clone()));
            outcome.artifacts.push(info);
        }
        stored
    }

    /// The bytes of artifact `index` of job `id`, if its record (which `owner` need not own: a
    /// signed URL is the caller's right to it) lists it.
    pub async fn artifact(
        &self,
        id: &JobId,
        index: u32,
    ) -> Option<(ArtifactInfo, u64, crate::objects::ObjectStream)> {
        let record = match self.live.get(id) {
            Some(job) => Some(self.snapshot(&job)),
            None => self.store.get(id, now_ms()).await.ok().flatten(),
        }?;
        let info = record
            .outcome?
            .artifacts
            .into_iter()
            .find(|a| a.index == index)?;
        // Streamed from the store: a reader holds a chunk of it, never the whole file.
        match self.objects.open(&info.key(id)).await {
            Ok(Some((size, chunks))) => Some((info, size, chunks)),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(job = %id, error = %e, "reading an artifact");
                None
            }
        }
    }
}
