//! Importing a revoked device's unsent work (`gridsync-server import-unsent FILE --as USER`).
//!
//! A revoked user's device keeps the work the server never acknowledged and can export it
//! ([`UnsentExport`], written by `field export --unsent FILE`). Its changes name the revoked user,
//! so they cannot be stored as they are: the work is re-written in the name of an active user.
//! For each document the exported snapshot is loaded under the panic guard and merged with the
//! server's copy; the difference is what the device had and the server lacks.
//!
//! - A document the server does not know (created offline, never sent) is created again with the
//!   same id and fields, authored by the new user, with the device's notes.
//! - A document the server knows gets only the device's new notes.
//!
//! Every imported note is prefixed `（转自 NAME 的设备）`. Transitions and field edits are not
//! replayed (they were the revoked person's decisions): they are listed for someone to redo by
//! hand. Everything is pushed through the normal ingest path from a device registered to the new
//! user (label `import`), so validation applies the new user's role and scope.

use std::sync::Arc;

use automerge::{ActorId, AutoCommit, Change};
use base64::Engine;
use gridsync_core::doc::{self, Author, DocKind};
use gridsync_core::parties::{PartiesView, create_parties, edit_parties};
use gridsync_core::patrol::{PatrolEdit, PatrolView, edit_patrol, start_patrol};
use gridsync_core::protocol::{Outcome, UNSENT_FORMAT, UnsentDocument, UnsentExport};
use gridsync_core::report::{NewReport, Party, ReportView, add_note, create_report};

use crate::AppState;
use crate::ingest::{Decoded, View, materialize};
use crate::store::{DeviceRecord, StoreError, UserRecord};
use crate::tokens;

/// The label of the device an import writes from.
pub const IMPORT_DEVICE_LABEL: &str = "import";

/// The prefix of every imported note: "(transferred from NAME's device)".
pub fn transfer_prefix(name: &str) -> String {
    format!("（转自 {name} 的设备）")
}

/// Why an import could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the file is not an export of unsent work (format {0:?}; expected {UNSENT_FORMAT:?})")]
    Format(String),
    #[error(
        "the file comes from another server (server id {file}; this server is {ours}): import it where it was exported from"
    )]
    OtherServer { file: String, ours: String },
    #[error("user {0} is revoked: import as an active user")]
    Revoked(String),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("the server could not store the work: {0}")]
    Ingest(String),
}

/// What happened to one document of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct DocImport {
    pub doc: String,
    pub kind: DocKind,
    /// The title the file gives, for people.
    pub title: String,
    /// The document was new to the server and was created in the new user's name.
    pub created: bool,
    /// Notes added in the new user's name.
    pub notes: usize,
    /// Refusals by validation, as (code, message), one per distinct code.
    pub refused: Vec<(String, String)>,
    /// The document in the file could not be read or does not fit the server's copy.
    pub error: Option<String>,
    /// What the unsent changes did that was not imported: redo by hand.
    pub not_imported: Vec<String>,
}

impl DocImport {
    fn new(d: &UnsentDocument) -> DocImport {
        DocImport {
            doc: d.doc.clone(),
            kind: d.kind,
            title: d.title.clone(),
            created: false,
            notes: 0,
            refused: vec![],
            error: None,
            not_imported: vec![],
        }
    }

    /// One line for the command's output.
    pub fn summary(&self) -> String {
        let what = if let Some(e) = &self.error {
            format!("not readable: {e}")
        } else {
            let mut parts = Vec::new();
            match (self.created, self.notes) {
                (true, 0) => parts.push(format!("imported: {} created", self.kind)),
                (true, n) => parts.push(format!("imported: {} created with {n} note(s)", self.kind)),
                (false, 0) => {}
                (false, n) => parts.push(format!("imported: {n} note(s)")),
            }
            for (code, message) in &self.refused {
                parts.push(format!("refused ({code}): {message}"));
            }
            if parts.is_empty() {
                parts.push("nothing to import".into());
            }
            parts.join("; ")
        };
        let mut line = format!("{} {} {:?}: {what}", self.kind, self.doc, self.title);
        if !self.not_imported.is_empty() {
            line.push_str(&format!("\n    not imported, redo by hand: {}", self.not_imported.join("; ")));
        }
        line
    }
}

/// Re-writes the unsent work of `export` in `user`'s name. Returns one entry per document.
pub async fn import_unsent(
    state: &Arc<AppState>,
    export: &UnsentExport,
    user: &UserRecord,
) -> Result<Vec<DocImport>, ImportError> {
    if export.format != UNSENT_FORMAT {
        return Err(ImportError::Format(export.format.chars().take(40).collect()));
    }
    if !export.server_id.is_empty() && export.server_id != state.server_id {
        return Err(ImportError::OtherServer {
            file: export.server_id.chars().take(40).collect(),
            ours: state.server_id.clone(),
        });
    }
    if user.revoked {
        return Err(ImportError::Revoked(user.id.clone()));
    }
    let now = state.clock.now_ms();
    let mut fresh = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut fresh);
    let actor = ActorId::from(fresh);
    let device = DeviceRecord {
        id: uuid::Uuid::now_v7().to_string(),
        actor: actor.to_hex_string(),
        user: user.clone(),
    };
    // The device's token is never shown: it exists so the import's changes have a registered
    // device and actor, like any other write.
    let token = tokens::new_token("gsd");
    state.store.add_device(
        &device.id,
        &user.id,
        IMPORT_DEVICE_LABEL,
        &device.actor,
        &tokens::hash(&token),
        now,
    )?;
    tracing::info!(device = %device.id, user = %user.id, documents = export.documents.len(), "importing unsent work");
    let mut out = Vec::with_capacity(export.documents.len());
    for d in &export.documents {
        out.push(import_doc(state, &device, &actor, export, d, now).await?);
    }
    Ok(out)
}

/// The changes to push for one document, each with what it carries ("create" or "note").
type Plan = Vec<(Change, &'static str)>;

async fn import_doc(
    state: &Arc<AppState>,
    device: &DeviceRecord,
    actor: &ActorId,
    export: &UnsentExport,
    d: &UnsentDocument,
    now: i64,
) -> Result<DocImport, ImportError> {
    let mut result = DocImport::new(d);
    let (server_doc, server_view, merged_view) = match read(state, actor, d) {
        Ok(x) => x,
        Err(e) => {
            result.error = Some(e);
            return Ok(result);
        }
    };
    let who = Author { user: device.user.id.clone(), role: device.user.role, at: now };
    let prefix = transfer_prefix(&export.name);
    let planned = match (server_doc, server_view.as_ref(), &merged_view) {
        (None, None, View::Report(v)) => new_report(actor, &who, &prefix, v, &mut result),
        (Some(sd), Some(View::Report(sv)), View::Report(v)) => {
            report_notes(sd, &who, &prefix, sv, v, &mut result)
        }
        (None, None, View::Patrol(p)) => new_patrol(actor, &who, p),
        (Some(_), Some(View::Patrol(sp)), View::Patrol(p)) => {
            patrol_differences(sp, p, &mut result);
            Ok(vec![])
        }
        (server, sv, View::Parties(p)) => match (server, sv) {
            (None, None) => new_parties(actor, &who, p, None),
            (Some(sd), Some(View::Parties(sp))) => new_parties(actor, &who, p, Some((sd, sp))),
            _ => Err("the server's copy and the file's disagree about the document's kind".to_string()),
        },
        _ => Err("the server's copy and the file's disagree about the document's kind".to_string()),
    };
    let plan = match planned {
        Ok(p) => p,
        Err(e) => {
            result.error = Some(e);
            return Ok(result);
        }
    };
    if plan.is_empty() {
        return Ok(result);
    }
    let labels: Vec<&str> = plan.iter().map(|(_, l)| *l).collect();
    let decoded =
        plan.into_iter().map(|(change, _)| Decoded { doc: d.doc.clone(), kind: d.kind, change }).collect();
    let verdicts = state.ingest.push(device.clone(), 0, decoded, now).await.map_err(ImportError::Ingest)?;
    for (v, label) in verdicts.iter().zip(labels) {
        match v.outcome {
            Outcome::Accepted | Outcome::Duplicate => match label {
                "create" => result.created = true,
                _ => result.notes += 1,
            },
            _ => {
                let code = v.code.clone().unwrap_or_else(|| "refused".into());
                if !result.refused.iter().any(|(c, _)| *c == code) {
                    result.refused.push((code, v.message.clone().unwrap_or_default()));
                }
            }
        }
    }
    Ok(result)
}

/// The server's copy (if any) and its view, and the view of the server's copy merged with the
/// file's snapshot and changes: what the device had.
fn read(
    state: &Arc<AppState>,
    actor: &ActorId,
    d: &UnsentDocument,
) -> Result<(Option<AutoCommit>, Option<View>, View), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if uuid::Uuid::parse_str(&d.doc).is_err() {
        return Err("the document id is not a UUID".into());
    }
    let snapshot = b64.decode(&d.snapshot).map_err(|_| "the snapshot is not valid base64".to_string())?;
    let changes = d
        .changes
        .iter()
        .map(|c| {
            let bytes = b64.decode(c).map_err(|_| "a change is not valid base64".to_string())?;
            doc::decode_change(&bytes).map_err(|e| format!("a change is unreadable: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The file's snapshot on its own must load: it is what the device held.
    doc::load(&snapshot, actor.clone()).map_err(|e| format!("the snapshot is unreadable: {e}"))?;
    let rec = state.store.load_doc(&d.doc).map_err(|e| {
        tracing::error!(error = %e, "loading a document failed");
        "the server could not read its copy".to_string()
    })?;
    let (server_doc, server_view) = match rec {
        Some(rec) => {
            if rec.kind != d.kind {
                return Err(format!("the server holds this document as a {}", rec.kind));
            }
            let sd =
                doc::load(&rec.snapshot, actor.clone()).map_err(|e| format!("the server's copy: {e}"))?;
            let view = materialize(rec.kind, &sd).map_err(|e| format!("the server's copy: {e}"))?;
            (Some(sd), Some(view))
        }
        None => (None, None),
    };
    let mut merged = server_doc.clone().unwrap_or_else(|| AutoCommit::new().with_actor(actor.clone()));
    doc::load_incremental(&mut merged, &snapshot).map_err(|e| format!("the snapshot does not merge: {e}"))?;
    doc::apply_changes(&mut merged, changes).map_err(|e| format!("the changes do not apply: {e}"))?;
    let view = materialize(d.kind, &merged).map_err(|e| format!("the device's copy: {e}"))?;
    let id = match &view {
        View::Report(r) => &r.id,
        View::Patrol(p) => &p.id,
        View::Parties(p) => &p.id,
    };
    if *id != d.doc {
        return Err("the document inside the file has another id".into());
    }
    Ok((server_doc, server_view, view))
}

fn at_or(at: i64, now: i64) -> i64 {
    if at > 0 { at } else { now }
}

/// A report the server never had: created again in the new user's name, with its notes.
fn new_report(
    actor: &ActorId,
    who: &Author,
    prefix: &str,
    v: &ReportView,
    result: &mut DocImport,
) -> Result<Plan, String> {
    let id = uuid::Uuid::parse_str(&v.id).map_err(|_| "the report id is not a UUID".to_string())?;
    let new = NewReport {
        anonymous: v.anonymous,
        id,
        grid: v.grid.clone(),
        town: v.town.clone(),
        category: v.category,
        title: v.title.clone(),
        description: v.description.clone(),
        urgency: v.urgency,
        location: v.location.clone(),
        parties: v.current_parties().into_iter().map(Party::from).collect(),
    };
    let created = Author { at: at_or(v.created_at, who.at), ..who.clone() };
    let mut d = create_report(actor.clone(), &created, &new).map_err(|e| e.to_string())?;
    let mut plan: Plan = d.get_changes(&[]).into_iter().map(|c| (c, "create")).collect();
    for n in &v.notes {
        let heads = d.get_heads();
        let by = Author { at: at_or(n.at, who.at), ..who.clone() };
        add_note(&mut d, &by, &format!("{prefix}{}", n.text)).map_err(|e| e.to_string())?;
        plan.extend(d.get_changes(&heads).into_iter().map(|c| (c, "note")));
    }
    report_differences(None, v, result);
    Ok(plan)
}

/// A report the server has: only the device's new notes, in the new user's name.
fn report_notes(
    mut d: AutoCommit,
    who: &Author,
    prefix: &str,
    server: &ReportView,
    v: &ReportView,
    result: &mut DocImport,
) -> Result<Plan, String> {
    let mut plan = Plan::new();
    for n in v.notes.iter().filter(|n| !server.notes.iter().any(|s| s.id == n.id)) {
        let text = format!("{prefix}{}", n.text);
        // Imported before (the same file twice): the re-written note is there already.
        if server.notes.iter().any(|s| s.text == text) {
            continue;
        }
        let heads = d.get_heads();
        let by = Author { at: at_or(n.at, who.at), ..who.clone() };
        add_note(&mut d, &by, &text).map_err(|e| e.to_string())?;
        plan.extend(d.get_changes(&heads).into_iter().map(|c| (c, "note")));
    }
    report_differences(Some(server), v, result);
    Ok(plan)
}

/// Lists what the device's copy has beyond the server's that an import does not carry over.
fn report_differences(server: Option<&ReportView>, v: &ReportView, result: &mut DocImport) {
    let out = &mut result.not_imported;
    let known = |id: &str| server.is_some_and(|s| s.transitions.iter().any(|t| t.id == id));
    for t in v.transitions.iter().filter(|t| !known(&t.id)) {
        out.push(format!("{} by {} ({} at {} level)", t.action, t.author, t.from, t.from_level));
    }
    if let Some(s) = server {
        for (what, differs) in [
            ("title", s.title != v.title),
            ("description", s.description != v.description),
            ("category", s.category != v.category),
            ("urgency", s.urgency != v.urgency),
            ("location", s.location != v.location),
            ("head count", s.head_count != v.head_count),
        ] {
            if differs {
                out.push(format!("edit of the {what}"));
            }
        }
        let new_parties = v.parties.iter().filter(|p| !s.parties.contains(p)).count();
        if new_parties > 0 {
            out.push(format!("{new_parties} part(y/ies) added"));
        }
    } else {
        if v.head_count.is_some_and(|n| n != v.parties.len() as i64) {
            out.push("the head count".into());
        }
        // A report of the layout before parties documents: its parties are not carried over
        // into the report (which no longer holds them); they are re-entered by hand.
        if !v.parties.is_empty() {
            out.push(format!(
                "{} part(y/ies) (re-enter with field report edit --party)",
                v.current_parties().len()
            ));
        }
    }
    let new_attachments =
        v.attachments.iter().filter(|a| server.is_none_or(|s| !s.attachments.contains(a))).count();
    if new_attachments > 0 {
        out.push(format!("{new_attachments} attachment(s)"));
    }
}

/// A patrol the server never had: started again in the new user's name with its whole record.
/// A parties document of the file: created in the new user's name with the file's current
/// parties, or, when the server has it, the parties it lacks appended.
fn new_parties(
    actor: &ActorId,
    who: &Author,
    p: &PartiesView,
    server: Option<(AutoCommit, &PartiesView)>,
) -> Result<Plan, String> {
    let current = || p.current_parties().into_iter().map(Party::from);
    match server {
        None => {
            let mut d = create_parties(
                actor.clone(),
                who,
                &p.report,
                &p.grid,
                &p.town,
                &current().collect::<Vec<_>>(),
            )
            .map_err(|e| e.to_string())?;
            Ok(d.get_changes(&[]).into_iter().map(|c| (c, "create")).collect())
        }
        Some((mut d, sp)) => {
            let known: Vec<Party> = sp.parties.iter().map(Party::from).collect();
            let missing: Vec<Party> = current().filter(|e| !known.contains(e)).collect();
            let heads = d.get_heads();
            edit_parties(&mut d, who, &missing, &[]).map_err(|e| e.to_string())?;
            Ok(d.get_changes(&heads).into_iter().map(|c| (c, "note")).collect())
        }
    }
}

fn new_patrol(actor: &ActorId, who: &Author, p: &PatrolView) -> Result<Plan, String> {
    let id = uuid::Uuid::parse_str(&p.id).map_err(|_| "the patrol id is not a UUID".to_string())?;
    let started = Author { at: at_or(p.started_at, who.at), ..who.clone() };
    let mut d = start_patrol(actor.clone(), &started, id, &p.grid, &p.town, &p.companions)
        .map_err(|e| e.to_string())?;
    let mut plan: Plan = d.get_changes(&[]).into_iter().map(|c| (c, "create")).collect();
    let mut edits: Vec<(i64, PatrolEdit)> = Vec::new();
    edits.extend(p.checkins.iter().map(|c| (c.at, PatrolEdit::CheckIn(c.clone()))));
    edits.extend(p.visits.iter().map(|v| (v.at, PatrolEdit::Visit(v.household.clone()))));
    edits.extend(p.findings.iter().map(|f| (started.at, PatrolEdit::Finding(f.clone()))));
    if !p.track.is_empty() {
        edits.push((started.at, PatrolEdit::Track(p.track.clone())));
    }
    if !p.narrative.is_empty() {
        edits.push((started.at, PatrolEdit::Narrative(p.narrative.clone())));
    }
    for (at, e) in edits {
        let heads = d.get_heads();
        let by = Author { at: at_or(at, who.at), ..who.clone() };
        edit_patrol(&mut d, &by, &e).map_err(|e| e.to_string())?;
        plan.extend(d.get_changes(&heads).into_iter().map(|c| (c, "create")));
    }
    if let Some(ended) = p.ended_at {
        let heads = d.get_heads();
        edit_patrol(&mut d, &Author { at: ended, ..who.clone() }, &PatrolEdit::End)
            .map_err(|e| e.to_string())?;
        plan.extend(d.get_changes(&heads).into_iter().map(|c| (c, "create")));
    }
    Ok(plan)
}

/// A patrol the server has stays its worker's: what the device added is listed, not imported.
fn patrol_differences(server: &PatrolView, p: &PatrolView, result: &mut DocImport) {
    let out = &mut result.not_imported;
    let extra = |a: usize, b: usize| a.saturating_sub(b);
    for (what, n) in [
        ("check-in(s)", extra(p.checkins.len(), server.checkins.len())),
        ("visit(s)", extra(p.visits.len(), server.visits.len())),
        ("finding(s)", extra(p.findings.len(), server.findings.len())),
        ("track point(s)", extra(p.track.len(), server.track.len())),
    ] {
        if n > 0 {
            out.push(format!("{n} {what} on {}'s patrol", server.worker));
        }
    }
    if p.narrative != server.narrative {
        out.push(format!("narrative on {}'s patrol", server.worker));
    }
    if p.ended_at.is_some() && server.ended_at.is_none() {
        out.push(format!("the end of {}'s patrol", server.worker));
    }
}
