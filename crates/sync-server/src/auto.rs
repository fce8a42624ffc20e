//! The server's own writes, on its clock: escalations the policy asks for (a critical report at
//! once; with the county's choice, an item not accepted at the town in time), a reminder (催办)
//! when a step passes its limit and a supervision order (督办) when it stays late — authored by the
//! server's own actor, through the same ingest path and validation as any device's change.
//! Ownership never changes on a timer unless the county turned `unaccepted_to_county` on.

use std::sync::Arc;
use std::time::Duration;

use automerge::ActorId;
use gridsync_core::doc::{self, Author, DocKind};
use gridsync_core::lifecycle::{Action, Level, Status};
use gridsync_core::org::Role;
use gridsync_core::policy::{AutoWrite, auto_escalation, auto_write};
use gridsync_core::protocol::Outcome;
use gridsync_core::report::{Record, ReportView, add_record_until, add_transition};

use crate::AppState;
use crate::ingest::Decoded;

/// Every state in which a step is due: what the pass looks at.
const WAITING: [(Status, Level); 10] = [
    (Status::Open, Level::Grid),
    (Status::Resolved, Level::Grid),
    (Status::Escalated, Level::Town),
    (Status::Accepted, Level::Town),
    (Status::Dispatched, Level::Town),
    (Status::Resolved, Level::Town),
    (Status::Escalated, Level::County),
    (Status::Accepted, Level::County),
    (Status::Dispatched, Level::County),
    (Status::Resolved, Level::County),
];

/// One pass: writes what the policy asks for now (escalations, reminders, supervision orders).
/// Returns how many reports were written to.
pub async fn run_once(state: &Arc<AppState>) -> Result<usize, String> {
    let now = state.clock.now_ms();
    let s = state.clone();
    let rows = tokio::task::spawn_blocking(move || s.store.reports_in(&WAITING))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let policy = &state.config.policy;
    let actor_bytes = hex::decode(&state.system.actor).map_err(|e| e.to_string())?;
    let actor = ActorId::from(actor_bytes.as_slice());
    let mut written = 0;
    for row in rows {
        // Cheap first: a step not yet due (and no escalation rule) needs no view.
        let escalation =
            auto_escalation(&policy.auto, policy, row.status, row.level, row.urgency, row.status_since, now);
        let late = policy.deadline(row.status, row.urgency, row.status_since).is_none_or(|due| now > due);
        if escalation.is_none() && !late && row.status != Status::Resolved {
            continue;
        }
        let Ok(view) = serde_json::from_str::<ReportView>(&row.view_json) else {
            tracing::error!(doc = %row.id, "a stored report view is unreadable; the pass skipped it");
            continue;
        };
        let Some(write) = auto_write(policy, &view, row.status_since, now) else { continue };
        // One report that cannot be read must not stop the pass for the county: it is logged and
        // skipped.
        let s = state.clone();
        let id = row.id.clone();
        let rec = match tokio::task::spawn_blocking(move || s.store.load_doc(&id)).await {
            Ok(Ok(Some(rec))) => rec,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                tracing::error!(doc = %row.id, error = %e, "the server's pass could not read a report; skipped");
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut d = match doc::load(&rec.snapshot, actor.clone()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(doc = %row.id, error = %e, "a stored report is unreadable; the server's pass skipped it");
                continue;
            }
        };
        let heads = d.get_heads();
        let author = Author { user: state.system.user.id.clone(), role: Role::System, at: now };
        let added = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &write {
            AutoWrite::Escalate(reason) => {
                add_transition(&mut d, &author, Action::Escalate, reason, None).map(Some)
            }
            AutoWrite::Remind(text) => {
                add_record_until(&mut d, &author, Record::Remind, text, None, None, None)
            }
            AutoWrite::Supervise(text) => {
                add_record_until(&mut d, &author, Record::Supervise, text, None, Some("yellow"), None)
            }
        }));
        if !matches!(added, Ok(Ok(_))) {
            tracing::warn!(doc = %row.id, "the server could not write to a report; skipped");
            continue;
        }
        let changes: Vec<Decoded> = d
            .get_changes(&heads)
            .into_iter()
            .map(|change| Decoded { doc: row.id.clone(), kind: DocKind::Report, change })
            .collect();
        let verdicts = match state.ingest.push(state.system.clone(), 0, changes, now).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(doc = %row.id, error = %e, "the server's write could not be stored; skipped");
                continue;
            }
        };
        if verdicts.iter().all(|v| v.outcome == Outcome::Accepted) {
            written += 1;
            tracing::info!(doc = %row.id, from = %row.level, what = ?write, "written by the server");
        } else {
            tracing::warn!(doc = %row.id, "the server's own write was not accepted");
        }
    }
    Ok(written)
}

/// Runs [`run_once`] every `every` until the server stops.
pub fn spawn(state: Arc<AppState>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = run_once(&state).await {
                tracing::error!(error = %e, "auto-escalation pass failed");
            }
        }
    })
}
