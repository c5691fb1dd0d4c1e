//! A submission as Judge0 shows it: its record and log read from the job service, its runs
//! projected once (and kept in the store), then rendered with the asked fields.

use futures_util::StreamExt;
use kiln_core::{JobEvent, JobId, OutputStream};
use serde_json::{Map, Value};

use super::project::{self, View, Written};
use super::store::{Entry, Store};
use super::wire::Judge0Error;
use crate::auth::Caller;
use crate::state::AppState;

/// What the run stage of a finished job wrote, from its event log.
pub(super) async fn written(state: &AppState, id: &JobId) -> Written {
    let mut w = Written::default();
    let mut events = state.service.events(id, 0);
    while let Some(e) = events.next().await {
        if let JobEvent::Output { stream, bytes, .. } = &e.event {
            match stream {
                OutputStream::Stdout => w.stdout.extend_from_slice(bytes),
                OutputStream::Stderr => w.stderr.extend_from_slice(bytes),
                OutputStream::Compile => continue,
            }
            w.both.extend_from_slice(bytes);
        }
    }
    w
}

/// `owner`'s submission `token` as Judge0 shows it, or `None` when unknown or expired.
pub(super) async fn view_of(
    state: &AppState,
    store: &Store,
    caller: &Caller,
    token: &str,
    fields: &[&str],
    base64: bool,
) -> Option<Result<Map<String, Value>, Judge0Error>> {
    // Settled before the copy: an entry copied after its runs settled lists all of them.
    let settled = store.settled(&caller.0, token)?;
    let entry = store.get(&caller.0, token)?;
    Some(view_of_entry(state, store, caller, token, entry, settled, fields, base64).await)
}

/// `entry` (submission `token`, whose runs are `settled` or not) as Judge0 shows it; its result
/// is projected once and kept in `store` while the submission is there.
#[expect(
    clippy::too_many_arguments,
    reason = "one view: who, which, what, and how to render it"
)]
pub(super) async fn view_of_entry(
    state: &AppState,
    store: &Store,
    caller: &Caller,
    token: &str,
    mut entry: Entry,
    settled: bool,
    fields: &[&str],
    base64: bool,
) -> Result<Map<String, Value>, Judge0Error> {
    let id = JobId(token.to_string());
    let record = state.service.record_of(&caller.0, &id).await;
    let mut pending = record
        .as_ref()
        .map_or(project::STATUSES[12], |r| project::pending(r.state));
    let first_over = record.as_ref().is_some_and(|r| r.state.is_final());
    if entry.finished.is_none() && settled && first_over {
        let mut outcomes = vec![(id, record)];
        for job in entry.runs.extra.iter().map(|j| JobId(j.clone())) {
            let r = state.service.record_of(&caller.0, &job).await;
            outcomes.push((job, r));
        }
        let mut runs = Vec::with_capacity(outcomes.len());
        let mut finished_at = 0;
        for (job, r) in &outcomes {
            // A run without its outcome (lost, or purged) makes the whole an internal error,
            // never the result of the runs before it.
            let Some((o, at)) = r
                .as_ref()
                .and_then(|r| Some((r.outcome.as_ref()?, r.updated_at_ms)))
            else {
                runs.clear();
                break;
            };
            finished_at = at;
            runs.push(project::finished(
                o,
                entry.checked.expected_output.as_deref(),
                entry.checked.settings.redirect_stderr_to_stdout,
                written(state, job).await,
            ));
        }
        match project::combined(runs) {
            Some(f) => {
                let done = (finished_at, f);
                store.finish(token, done.clone());
                entry.finished = Some(done);
            }
            None => pending = project::STATUSES[12],
        }
    } else if entry.finished.is_none() && first_over {
        // Its first run is over; further ones (or its callback) are on their way.
        pending = project::STATUSES[1];
    }
    let view = View {
        token,
        checked: &entry.checked,
        language_name: entry.language_name.clone(),
        created_at_ms: entry.created_at_ms,
        finished: entry.finished.clone(),
        pending,
    };
    project::render(&view, fields, base64)
}
