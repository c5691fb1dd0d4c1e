//! What follows a submission after it is admitted: its further runs (`number_of_runs`), submitted
//! as jobs of the same caller while its runs are Accepted, and its callback (`callback_url`),
//! sent once the last run is over.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use kiln_core::JobId;
use serde_json::Value;

use super::project;
use super::store::{Entry, Store};
use super::view::{view_of_entry, written};
use crate::auth::Caller;
use crate::state::AppState;

/// A submission a task follows.
#[derive(Debug)]
pub struct Follow {
    /// The server.
    pub state: AppState,
    /// The submissions.
    pub store: Arc<Store>,
    /// Whose it is.
    pub caller: Caller,
    /// Its token (its first run's job id).
    pub token: String,
}

/// Runs submission `f.token` again (`again`: the request and how many runs in all) while its
/// runs are Accepted, says so on `settle` once the last is over, then calls back.
pub async fn follow(
    f: Follow,
    again: Option<(kiln_core::JobRequest, u64)>,
    settle: tokio::sync::watch::Sender<bool>,
    callback: Option<String>,
) {
    let mut last = JobId(f.token.clone());
    if let Some((request, wanted)) = again {
        for _ in 1..wanted {
            f.state.service.wait_finished(&last).await;
            // Judge0 stops at the first run that is not Accepted.
            if run_result(&f, &last).await.is_none_or(|r| r.status.id != 3) {
                break;
            }
            match f.state.service.submit(&f.caller.0, request.clone()) {
                Ok(id) => {
                    f.state.compat.judge0.fetch_add(1, Relaxed);
                    f.store.add_run(&f.token, id.0.clone());
                    last = id;
                }
                Err(e) => {
                    tracing::warn!(token = %f.token, error = %e, "judge0: a further run was refused; the runs end here");
                    break;
                }
            }
        }
    }
    f.state.service.wait_finished(&last).await;
    // The entry is copied before it is settled (deletable): the callback has it whatever a
    // client does next, with every run (they were all added before).
    let entry = f.store.get(&f.caller.0, &f.token);
    let _ = settle.send(true);
    if let (Some(url), Some(entry)) = (callback, entry) {
        call_back(&f, &url, entry).await;
    }
}

/// The projected result of run `job` of submission `f.token`, once it is over.
async fn run_result(f: &Follow, job: &JobId) -> Option<project::Finished> {
    let entry = f.store.get(&f.caller.0, &f.token)?;
    let record = f.state.service.record_of(&f.caller.0, job).await?;
    let outcome = record.outcome.as_ref()?;
    Some(project::finished(
        outcome,
        entry.checked.expected_output.as_deref(),
        entry.checked.settings.redirect_stderr_to_stdout,
        written(&f.state, job).await,
    ))
}

/// PUTs settled submission `f.token` (its `entry`), its default fields base64-encoded, to `url`
/// (checked when it was admitted).
async fn call_back(f: &Follow, url: &str, entry: Entry) {
    let Ok(target) = super::callback::Target::parse(url) else {
        return;
    };
    let (state, store, caller, token) = (&f.state, &f.store, &f.caller, &f.token);
    let fields = project::DEFAULT_FIELDS.to_vec();
    let view = view_of_entry(state, store, caller, token, entry, true, &fields, true).await;
    let Ok(view) = view else {
        tracing::warn!(%token, "judge0 callback: the submission's output is not UTF-8 JSON");
        return;
    };
    let body = bytes::Bytes::from(Value::Object(view).to_string());
    let cfg = &state.cfg.judge0;
    let timeout = std::time::Duration::from_millis(cfg.callback_timeout_ms);
    match super::callback::deliver(&target, body, cfg.callback_tries, timeout).await {
        Ok(status) => {
            tracing::info!(%token, host = %target.host, %status, "judge0 callback delivered")
        }
        Err(why) => {
            tracing::warn!(%token, host = %target.host, %why, "judge0 callback given up")
        }
    }
}
