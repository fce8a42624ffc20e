//! Auto-escalation: the server escalates what the policy says it must (a critical report at once;
//! an item not accepted at the town in time) by writing an `escalate` transition, authored by the
//! server's own actor, through the same ingest path and validation as any device's change.

use std::sync::Arc;
use std::time::Duration;

use automerge::ActorId;
use gridsync_core::doc::{self, Author, DocKind};
use gridsync_core::lifecycle::{Action, Level, Status};
use gridsync_core::org::Role;
use gridsync_core::policy::auto_escalation;
use gridsync_core::protocol::Outcome;
use gridsync_core::report::add_transition;

use crate::AppState;
use crate::ingest::Decoded;

/// One pass: escalates every report the rules say is due now. Returns how many were escalated.
pub async fn run_once(state: &Arc<AppState>) -> Result<usize, String> {
    let now = state.clock.now_ms();
    let s = state.clone();
    let rows = tokio::task::spawn_blocking(move || {
        s.store.reports_in(&[(Status::Open, Level::Grid), (Status::Escalated, Level::Town)])
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let policy = &state.config.policy;
    let actor_bytes = hex::decode(&state.system.actor).map_err(|e| e.to_string())?;
    let actor = ActorId::from(actor_bytes.as_slice());
    let mut escalated = 0;
    for row in rows {
        let Some(reason) =
            auto_escalation(&policy.auto, policy, row.status, row.level, row.urgency, row.status_since, now)
        else {
            continue;
        };
        // One report that cannot be read must not stop the pass for the county: it is logged and
        // skipped.
        let s = state.clone();
        let id = row.id.clone();
        let rec = match tokio::task::spawn_blocking(move || s.store.load_doc(&id)).await {
            Ok(Ok(Some(rec))) => rec,
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => {
                tracing::error!(doc = %row.id, error = %e, "auto-escalation could not read a report; skipped");
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut d = match doc::load(&rec.snapshot, actor.clone()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(doc = %row.id, error = %e, "a stored report is unreadable; auto-escalation skipped it");
                continue;
            }
        };
        let heads = d.get_heads();
        let author = Author { user: state.system.user.id.clone(), role: Role::System, at: now };
        let added = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            add_transition(&mut d, &author, Action::Escalate, &reason, None)
        }));
        if !matches!(added, Ok(Ok(_))) {
            tracing::warn!(doc = %row.id, "auto-escalation could not write to a report; skipped");
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
                tracing::error!(doc = %row.id, error = %e, "an auto-escalation could not be stored; skipped");
                continue;
            }
        };
        if verdicts.iter().all(|v| v.outcome == Outcome::Accepted) {
            escalated += 1;
            tracing::info!(doc = %row.id, from = %row.level, "auto-escalated");
        } else {
            tracing::warn!(doc = %row.id, "an auto-escalation was not accepted");
        }
    }
    Ok(escalated)
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
