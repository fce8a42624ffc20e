//! Ingest: the single writer. Pushed changes from concurrent syncs queue here; the writer thread
//! takes every queued push at once, decodes, orders, applies and validates each document's changes
//! on a copy, and commits the whole group in one transaction (group commit) before anyone is
//! answered. Hot documents stay in a bounded in-memory cache.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use automerge::{ActorId, AutoCommit, Change, ChangeHash};
use base64::Engine;
use gridsync_core::doc::{self, DocKind, hash_hex};
use gridsync_core::lifecycle::{Level, Status};
use gridsync_core::org::{Org, Principal, Role};
use gridsync_core::parties::{PartiesView, materialize_parties};
use gridsync_core::patrol::{PatrolView, materialize_patrol};
use gridsync_core::policy::ClosedLoop;
use gridsync_core::protocol::{Claim, Outcome, PushedChange, Verdict};
use gridsync_core::report::{ReportView, materialize_report, transition_origins};
use gridsync_core::validate::{
    MAX_CHANGES_PER_DOC_PER_PUSH, MAX_TRANSITIONS_PER_CHANGE, MAX_TRANSITIONS_PER_PUSH, Refusal, Writer,
    check_discarded, check_parties, check_patrol, check_report, check_transition_id,
};
use tokio::sync::{mpsc, oneshot};

use crate::cache::{DocCache, weight_of_snapshot};
use crate::metrics::Metrics;
use crate::quota::{self, DayCounts, Quotas};
use crate::store::{DeviceActivity, DeviceRecord, DocWrite, Store, StoreError};

/// The actor the server reads documents with; it never writes with it (and no device may
/// register it).
pub fn reader_actor() -> ActorId {
    ActorId::from([0u8; 16])
}

/// A document's materialized view, of either kind.
#[derive(Debug, Clone)]
pub enum View {
    Report(Box<ReportView>),
    Patrol(Box<PatrolView>),
    Parties(Box<PartiesView>),
}

impl View {
    fn place(&self) -> (&str, &str) {
        match self {
            View::Report(r) => (&r.grid, &r.town),
            View::Patrol(p) => (&p.grid, &p.town),
            View::Parties(p) => (&p.grid, &p.town),
        }
    }
}

/// Materializes under a panic guard: a document that makes the reader panic is refused, not fatal.
pub fn materialize(kind: DocKind, d: &AutoCommit) -> Result<View, String> {
    let out = catch_unwind(AssertUnwindSafe(|| match kind {
        DocKind::Report => materialize_report(d).map(|v| View::Report(Box::new(v))),
        DocKind::Patrol => materialize_patrol(d).map(|v| View::Patrol(Box::new(v))),
        DocKind::Parties => materialize_parties(d).map(|v| View::Parties(Box::new(v))),
    }));
    match out {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the document could not be read".into()),
    }
}

/// What a change's author had folded the report to: (tip, status, level) and the ids of the
/// transitions it held; `None` before the report existed.
type SeenState = Option<(String, Status, Level, HashSet<String>)>;

/// The checks of one document in one push, with what they remember between trials.
struct DocCtx<'a> {
    org: &'a Org,
    rules: &'a ClosedLoop,
    writer: &'a Writer<'a>,
    doc_id: &'a str,
    kind: DocKind,
    claim: Option<&'a Claim>,
    /// Transitions the report held before this push.
    base_transitions: usize,
    /// What the author had seen, per distinct dependency set: computed once per set, however many
    /// transitions or trials need it.
    seen: HashMap<Vec<ChangeHash>, SeenState>,
    trials: &'a AtomicU64,
    /// Where to ask what the pushing device has acknowledged holding.
    store: &'a dyn Store,
    device: &'a str,
    /// The cursor the device sent with this push.
    cursor: u64,
    /// The server's clock for this push: device times more than a day ahead of it are refused.
    now: i64,
    /// Ids of the report's transitions the device had acknowledged holding (its cursor), once
    /// asked.
    served: Option<HashSet<String>>,
}

/// The ids of the transitions in `doc` as of `hashes` (a set of its changes).
fn transitions_at(doc: &AutoCommit, hashes: &[ChangeHash]) -> Result<HashSet<String>, Refusal> {
    let malformed = |m: &str| Refusal::Malformed { message: m.to_string() };
    let mut copy = doc.clone();
    let at = catch_unwind(AssertUnwindSafe(|| copy.fork_at(hashes)))
        .map_err(|_| malformed("the report could not be read as the device holds it"))?
        .map_err(|e| malformed(&e.to_string()))?;
    match materialize(DocKind::Report, &at).map_err(|e| malformed(&e))? {
        View::Report(v) => Ok(v.transitions.into_iter().map(|t| t.id).collect()),
        _ => Err(malformed("the document changed kind")),
    }
}

/// The transitions of the report the pushing device has acknowledged holding: every change of
/// the document up to the highest cursor the device has sent (this one or an earlier one).
fn served_transitions(ctx: &mut DocCtx<'_>, doc: &AutoCommit) -> Result<HashSet<String>, Refusal> {
    if let Some(s) = &ctx.served {
        return Ok(s.clone());
    }
    let (_, raw) = ctx.store.acknowledged_changes(ctx.doc_id, ctx.device, ctx.cursor).map_err(|e| {
        tracing::error!(error = %e, "reading what a device holds failed");
        Refusal::Malformed { message: "the server could not check this transition; try again".into() }
    })?;
    let hashes: Vec<ChangeHash> =
        raw.iter().filter_map(|h| ChangeHash::try_from(h.as_slice()).ok()).collect();
    let served = if hashes.is_empty() { HashSet::new() } else { transitions_at(doc, &hashes)? };
    ctx.served = Some(served.clone());
    Ok(served)
}

/// Transitions the changes add must each be written by the change's own actor under an id of the
/// form `<actor>/<n>`, at most [`MAX_TRANSITIONS_PER_CHANGE`] per change and
/// [`MAX_TRANSITIONS_PER_PUSH`] per report and push, and follow the tip their author's copy held:
/// the report as of the dependencies of the change that wrote the transition. No author may hold
/// more than a few discarded forks. And while another operator holds a claim on the report, hub
/// steps by anyone else are refused.
fn check_parents(
    ctx: &mut DocCtx<'_>,
    doc: &AutoCommit,
    before: Option<&View>,
    after: &View,
    changes: &[Change],
) -> Result<(), Refusal> {
    let View::Report(after) = after else { return Ok(()) };
    let known: HashSet<&str> = match before {
        Some(View::Report(b)) => b.transitions.iter().map(|t| t.id.as_str()).collect(),
        _ => HashSet::new(),
    };
    let new: Vec<_> = after.transitions.iter().filter(|t| !known.contains(t.id.as_str())).collect();
    if new.is_empty() {
        return Ok(());
    }
    if after.transitions.len().saturating_sub(ctx.base_transitions) > MAX_TRANSITIONS_PER_PUSH {
        return Err(Refusal::TooMany {
            what: "new transitions in one push".into(),
            max: MAX_TRANSITIONS_PER_PUSH,
        });
    }
    let malformed = |m: &str| Refusal::Malformed { message: m.to_string() };
    let origins = transition_origins(doc).map_err(|e| malformed(&e.to_string()))?;
    let mut per_change: HashMap<usize, usize> = HashMap::new();
    for t in new {
        let (counter, actor) =
            origins.get(&t.id).ok_or_else(|| malformed("a transition without an origin"))?;
        let (index, change) = changes
            .iter()
            .enumerate()
            .find(|(_, c)| {
                let start = c.start_op().get();
                c.actor_id() == actor && (start..start + c.len() as u64).contains(counter)
            })
            .ok_or_else(|| malformed("a transition not written by these changes"))?;
        let n = per_change.entry(index).or_default();
        *n += 1;
        if *n > MAX_TRANSITIONS_PER_CHANGE {
            return Err(Refusal::TooMany {
                what: "transitions in one change".into(),
                max: MAX_TRANSITIONS_PER_CHANGE,
            });
        }
        check_transition_id(t, &change.actor_id().to_hex_string())?;
        let mut deps = change.deps().to_vec();
        deps.sort();
        let seen = match ctx.seen.get(&deps) {
            Some(s) => s.clone(),
            None => {
                let s = if deps.is_empty() {
                    None
                } else {
                    let mut copy = doc.clone();
                    let at = catch_unwind(AssertUnwindSafe(|| copy.fork_at(&deps)))
                        .map_err(|_| malformed("the report could not be read at the change's dependencies"))?
                        .map_err(|e| malformed(&e.to_string()))?;
                    let v = match materialize(DocKind::Report, &at).map_err(|e| malformed(&e))? {
                        View::Report(v) => v,
                        _ => return Err(malformed("the document changed kind")),
                    };
                    Some((v.tip, v.status, v.level, v.transitions.into_iter().map(|t| t.id).collect()))
                };
                ctx.seen.insert(deps, s.clone());
                s
            }
        };
        let (tip, status, level, held) =
            seen.unwrap_or((String::new(), Status::Open, Level::Grid, HashSet::new()));
        if t.parent != tip || t.from != status || t.from_level != level {
            return Err(Refusal::TransitionNotFromLatest { id: t.id.clone() });
        }
        // A transition must also build on every transition the server has already given this
        // device (up to its cursor), not only on the dependencies the device declares.
        if served_transitions(ctx, doc)?.iter().any(|id| !held.contains(id)) {
            return Err(Refusal::TransitionNotFromLatest { id: t.id.clone() });
        }
        if let Some(c) = ctx.claim
            && c.user != t.author
            && matches!(t.role, Role::TownOperator | Role::CountyOperator | Role::Admin)
        {
            return Err(Refusal::ClaimedByAnother { name: format!("{} ({})", c.name, c.user) });
        }
    }
    check_discarded(after, &ctx.writer.who.user)
}

fn check(
    org: &Org,
    rules: &ClosedLoop,
    w: &Writer<'_>,
    doc_id: &str,
    before: Option<&View>,
    after: &View,
) -> Result<(), Refusal> {
    let id = match after {
        View::Report(r) => &r.id,
        View::Patrol(p) => &p.id,
        View::Parties(p) => &p.id,
    };
    if id != doc_id {
        return Err(Refusal::Malformed {
            message: "the document's id is not the id it was pushed under".into(),
        });
    }
    check_view_size(before, after)?;
    match (before, after) {
        (None, View::Report(a)) => check_report(org, rules, w, None, a),
        (Some(View::Report(b)), View::Report(a)) => check_report(org, rules, w, Some(b), a),
        (None, View::Patrol(a)) => check_patrol(org, w, None, a),
        (Some(View::Patrol(b)), View::Patrol(a)) => check_patrol(org, w, Some(b), a),
        (None, View::Parties(a)) => check_parties(org, w, None, a),
        (Some(View::Parties(b)), View::Parties(a)) => check_parties(org, w, Some(b), a),
        _ => Err(Refusal::Malformed { message: "the document changed kind".into() }),
    }
}

/// A document as the writer holds it.
struct Cached {
    doc: AutoCommit,
    kind: DocKind,
    view: View,
}

/// One device's push, waiting for the writer.
struct PushJob {
    device: DeviceRecord,
    cursor: u64,
    changes: Vec<Decoded>,
    at: i64,
    reply: oneshot::Sender<Result<Vec<Verdict>, String>>,
}

/// A pushed change the HTTP layer has already decoded and probed.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub doc: String,
    pub kind: DocKind,
    pub change: Change,
}

/// Why a pushed change was refused before reaching the writer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("change {index} (document {doc}): {message}")]
pub struct DecodeError {
    pub index: usize,
    pub doc: String,
    pub message: String,
}

/// Decodes a push: document ids, base64, change bytes. A change without dependencies is also
/// applied to an empty document under a panic guard, so bytes that crash automerge are refused
/// here, before anything from the request is stored.
pub fn decode(changes: Vec<PushedChange>) -> Result<Vec<Decoded>, DecodeError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    changes
        .into_iter()
        .enumerate()
        .map(|(index, p)| {
            let fail = |message: String| DecodeError { index, doc: p.doc.clone(), message };
            if uuid::Uuid::parse_str(&p.doc).is_err() {
                return Err(fail("the document id is not a UUID".into()));
            }
            let bytes = b64.decode(&p.change).map_err(|_| fail("the change is not valid base64".into()))?;
            let change = doc::decode_change(&bytes).map_err(|e| fail(e.to_string()))?;
            if change.deps().is_empty() {
                let probe = AutoCommit::new().with_actor(reader_actor());
                doc::apply_changes_owned(probe, vec![change.clone()]).map_err(|e| fail(e.to_string()))?;
            }
            Ok(Decoded { doc: p.doc, kind: p.kind, change })
        })
        .collect()
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<PushJob>,
    trials: Arc<AtomicU64>,
}

/// Tuning for the writer.
#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    /// Documents kept in memory.
    pub cache_docs: usize,
    /// Estimated bytes those documents may hold in memory ([`weight_of_snapshot`]).
    pub cache_bytes: usize,
    /// Documents and stored refusals per device and day, devices per user and day.
    pub quotas: Quotas,
    /// Most pushes committed in one transaction.
    pub max_group: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig { cache_docs: 5_000, cache_bytes: 512 << 20, max_group: 512, quotas: Quotas::default() }
    }
}

impl Ingest {
    /// Starts the writer thread. It stops when every `Ingest` handle is dropped.
    pub fn start(
        store: Arc<dyn Store>,
        org: Arc<RwLock<Org>>,
        metrics: Arc<Metrics>,
        config: IngestConfig,
        rules: ClosedLoop,
    ) -> Ingest {
        let (tx, rx) = mpsc::channel(4096);
        let trials = Arc::new(AtomicU64::new(0));
        std::thread::Builder::new()
            .name("gridsync-ingest".into())
            .spawn({
                let trials = trials.clone();
                move || WriterLoop::new(store, org, metrics, config, rules, trials).run(rx)
            })
            .expect("spawn the ingest thread");
        Ingest { tx, trials }
    }

    /// How many times the writer applied and checked a run of changes on a copy of a document
    /// (one per clean push of a document; a few more per bad change): the work a push costs.
    pub fn trials(&self) -> u64 {
        self.trials.load(Ordering::Relaxed)
    }

    /// Validates and stores a device's changes; records its cursor and activity. Returns one verdict
    /// per pushed change, in order, once the group holding it is durably committed.
    pub async fn push(
        &self,
        device: DeviceRecord,
        cursor: u64,
        changes: Vec<Decoded>,
        at: i64,
    ) -> Result<Vec<Verdict>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(PushJob { device, cursor, changes, at, reply })
            .await
            .map_err(|_| "the writer has stopped".to_string())?;
        rx.await.map_err(|_| "the writer has stopped".to_string())?
    }
}

struct WriterLoop {
    store: Arc<dyn Store>,
    org: Arc<RwLock<Org>>,
    metrics: Arc<Metrics>,
    /// The policy's closed-loop rules (what a close needs, the reopen window).
    rules: Arc<ClosedLoop>,
    /// Committed documents, most recently used kept.
    cache: DocCache<Cached>,
    quotas: Quotas,
    /// Documents each device created today (county day), loaded from the store once a day.
    docs_today: DayCounts,
    /// Refusals stored for each device today.
    refusals_today: DayCounts,
    /// A document the gate just found missing from the store, so `process_doc`'s lookup of it does
    /// not ask again. Set and cleared by the gate, consumed by `ensure_cached`; never outlives the
    /// batch it was found for (the store only changes at commit).
    absent: Option<String>,
    /// Documents changed by the group being processed: not committed yet, so not in `cache`.
    staged: BTreeMap<String, Staged>,
    max_group: usize,
    trials: Arc<AtomicU64>,
}

/// A document changed in the current group, with the changes to append to the log.
struct Staged {
    cached: Cached,
    /// (hash, raw bytes, pushing device) in application order.
    changes: Vec<(Vec<u8>, Vec<u8>, Option<String>)>,
    /// The saved document, as checked to load back.
    snapshot: Vec<u8>,
}

fn verdict(doc: &str, hash: Option<&ChangeHash>, outcome: Outcome) -> Verdict {
    Verdict {
        doc: Some(doc.to_string()),
        hash: hash.map(hash_hex),
        outcome,
        code: None,
        message: None,
        missing: vec![],
    }
}

fn refused(
    doc: &str,
    hash: Option<&ChangeHash>,
    outcome: Outcome,
    code: &str,
    message: impl Into<String>,
) -> Verdict {
    Verdict {
        code: Some(code.into()),
        message: Some(truncate(message.into())),
        ..verdict(doc, hash, outcome)
    }
}

/// Most characters of a refusal message: a message names a field and a limit, never a value, but
/// an error from below may be long.
pub const MAX_MESSAGE_CHARS: usize = 300;
/// Most refusals of one push stored for `admin devices`; the verdicts still answer every change.
pub const MAX_STORED_REFUSALS_PER_PUSH: usize = 20;

fn truncate(mut message: String) -> String {
    if let Some((at, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(at);
        message.push('…');
    }
    message
}

/// Changes of one document from one push, decoded, with their positions in the request.
struct DocBatch {
    kind: DocKind,
    items: Vec<(usize, Change)>,
}

/// One document as a push is checked against it: the document, its view (`None` before it
/// exists) and its saved bytes (what is stored if the push is accepted).
struct DocState {
    doc: AutoCommit,
    view: Option<View>,
    snapshot: Vec<u8>,
}

/// A refusal: outcome, code and message.
type Refused = (Outcome, String, String);

/// Applies `changes` to `base` and checks the result: it must save, load back and materialize
/// under the panic guard (the reloaded copy is what is kept, so memory never holds a document the
/// store could not give back), keep its layout and its append-only containers, and pass
/// validation.
fn try_apply(
    ctx: &mut DocCtx<'_>,
    base: AutoCommit,
    before: Option<&View>,
    changes: &[Change],
) -> Result<DocState, Refused> {
    let malformed = |m: &str| (Outcome::Malformed, "bad_change".to_string(), m.to_string());
    let forbid = |r: Refusal| (Outcome::Forbidden, r.code().to_string(), r.to_string());
    ctx.trials.fetch_add(1, Ordering::Relaxed);
    let before_containers = before.map(|_| doc::containers(&base, ctx.kind));
    let mut trial =
        doc::apply_changes_owned(base, changes.to_vec()).map_err(|e| malformed(&e.to_string()))?;
    let (snapshot, back) = doc::save_and_reload(&mut trial, reader_actor())
        .map_err(|_| malformed("the document with this change could not be saved and read back"))?;
    drop(trial);
    doc::check_layout(&back, ctx.kind).map_err(|e| forbid(Refusal::Malformed { message: e.to_string() }))?;
    let after = materialize(ctx.kind, &back).map_err(|e| forbid(Refusal::Malformed { message: e }))?;
    if let Some(b) = before_containers {
        let a = doc::containers(&back, ctx.kind);
        if let Some(((name, _), _)) = b.iter().zip(&a).find(|((_, x), (_, y))| x != y) {
            return Err(forbid(Refusal::HistoryRewritten {
                what: format!("the {name} container (replaced with a new object)"),
            }));
        }
    }
    check(ctx.org, ctx.rules, ctx.writer, ctx.doc_id, before, &after).map_err(forbid)?;
    if let View::Report(a) = &after {
        let b = match before {
            Some(View::Report(b)) => Some(&**b),
            _ => None,
        };
        gridsync_core::validate::check_times(b, a, ctx.now).map_err(forbid)?;
    }
    check_parents(ctx, &back, before, &after, changes).map_err(forbid)?;
    Ok(DocState { doc: back, view: Some(after), snapshot })
}

/// Accepts what it can of `items` (in causal order) onto `state` by bisection: the whole run if
/// it passes, else each half in turn; a single change that fails is refused, and every change
/// that builds on a refused one is refused with it.
fn settle(
    ctx: &mut DocCtx<'_>,
    state: &mut DocState,
    items: Vec<(usize, Change)>,
    bad: &mut HashSet<ChangeHash>,
    ok: &mut Vec<(usize, Change)>,
    out: &mut Vec<(usize, Verdict)>,
) {
    let mut live = Vec::with_capacity(items.len());
    for (i, ch) in items {
        let h = ch.hash();
        if ch.deps().iter().any(|d| bad.contains(d)) {
            bad.insert(h);
            let v = refused(
                ctx.doc_id,
                Some(&h),
                Outcome::Forbidden,
                "depends_on_refused",
                "it builds on a refused change",
            );
            out.push((i, v));
        } else {
            live.push((i, ch));
        }
    }
    if live.is_empty() {
        return;
    }
    let changes: Vec<Change> = live.iter().map(|(_, c)| c.clone()).collect();
    match try_apply(ctx, state.doc.clone(), state.view.as_ref(), &changes) {
        Ok(next) => {
            *state = next;
            ok.extend(live);
        }
        Err((outcome, code, message)) if live.len() == 1 => {
            let (i, ch) = live.remove(0);
            let h = ch.hash();
            bad.insert(h);
            out.push((i, refused(ctx.doc_id, Some(&h), outcome, &code, message)));
        }
        Err(_) => {
            let second = live.split_off(live.len() / 2);
            settle(ctx, state, live, bad, ok, out);
            settle(ctx, state, second, bad, ok, out);
        }
    }
}

/// Whether a scope reads a document: by its place, or, for a handling unit, because the report
/// was dispatched to the unit.
pub fn readable(scope: &gridsync_core::org::Scope, view: &View) -> bool {
    let (grid, town) = view.place();
    scope.covers(grid, town)
        || match (scope.unit(), view) {
            (Some(unit), View::Report(r)) => r.units_ever().contains(&unit),
            _ => false,
        }
}

/// Why a document could not be looked up.
enum Unreadable {
    /// The store failed: the push is answered with an error and retried.
    Store(String),
    /// The stored bytes do not load or materialize.
    Document,
}

impl WriterLoop {
    fn new(
        store: Arc<dyn Store>,
        org: Arc<RwLock<Org>>,
        metrics: Arc<Metrics>,
        config: IngestConfig,
        rules: ClosedLoop,
        trials: Arc<AtomicU64>,
    ) -> Self {
        WriterLoop {
            rules: Arc::new(rules),
            store,
            org,
            metrics,
            cache: DocCache::new(config.cache_docs, config.cache_bytes),
            quotas: config.quotas,
            docs_today: DayCounts::default(),
            refusals_today: DayCounts::default(),
            absent: None,
            staged: BTreeMap::new(),
            max_group: config.max_group.max(1),
            trials,
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<PushJob>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < self.max_group {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            // A bug here must not stop the writer for good: the jobs of a group that panicked are
            // dropped (their callers get an error and retry), staged state is discarded, and the
            // cache still holds only committed documents.
            if catch_unwind(AssertUnwindSafe(|| self.group(jobs))).is_err() {
                tracing::error!("a group of pushes failed unexpectedly; its devices will retry");
                self.staged.clear();
            }
        }
    }

    fn group(&mut self, jobs: Vec<PushJob>) {
        self.absent = None;
        let org = self.org.clone();
        let org = org.read().unwrap_or_else(|p| p.into_inner());
        let mut results = Vec::with_capacity(jobs.len());
        let mut activity = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let r = self.process(&org, job);
            if let Ok(verdicts) = &r {
                activity.push(DeviceActivity {
                    device: job.device.id.clone(),
                    cursor: job.cursor,
                    pushed: verdicts.iter().filter(|v| v.outcome == Outcome::Accepted).count() as u64,
                    refused: verdicts
                        .iter()
                        .filter(|v| matches!(v.outcome, Outcome::Forbidden | Outcome::Malformed))
                        .count() as u64,
                    refusals: verdicts
                        .iter()
                        .filter(|v| matches!(v.outcome, Outcome::Forbidden | Outcome::Malformed))
                        .take(MAX_STORED_REFUSALS_PER_PUSH)
                        .map(|v| {
                            (
                                v.doc.clone().unwrap_or_default(),
                                v.hash.clone(),
                                v.code.clone().unwrap_or_default(),
                                v.message.clone().unwrap_or_default(),
                            )
                        })
                        .collect(),
                    at: job.at,
                });
            }
            results.push(r);
        }
        self.limit_stored_refusals(org.county.utc_offset_minutes, &mut activity);
        let now = jobs.iter().map(|j| j.at).max().unwrap_or(0);
        let mut staged = std::mem::take(&mut self.staged);
        let mut writes = Vec::with_capacity(staged.len());
        for (id, st) in staged.iter_mut() {
            let (id, changes, c) = (id.clone(), std::mem::take(&mut st.changes), &mut st.cached);
            let snapshot = std::mem::take(&mut st.snapshot);
            let (grid, town) = c.view.place();
            let (grid, town) = (grid.to_string(), town.to_string());
            let (view_json, conflicts_json, status, level, urgency) = match &c.view {
                View::Report(r) => (
                    serde_json::to_string(r).unwrap_or_default(),
                    serde_json::to_string(&r.conflicts).unwrap_or_else(|_| "[]".into()),
                    Some(r.status),
                    Some(r.level),
                    Some(r.urgency),
                ),
                View::Patrol(p) => (
                    serde_json::to_string(p).unwrap_or_default(),
                    serde_json::to_string(&p.conflicts).unwrap_or_else(|_| "[]".into()),
                    None,
                    None,
                    None,
                ),
                View::Parties(p) => {
                    (serde_json::to_string(p).unwrap_or_default(), "[]".into(), None, None, None)
                }
            };
            // Personal data: a parties document, or a report of an older layout holding its
            // parties itself. A report's dispatched units read its parties document when its
            // category needs them (policy).
            let (private, units_read_parties) = match &c.view {
                View::Report(r) => (!r.parties.is_empty(), self.rules.unit_sees_parties(r.category)),
                View::Patrol(_) => (false, false),
                View::Parties(_) => (true, false),
            };
            writes.push(DocWrite {
                id,
                kind: c.kind,
                grid,
                town,
                snapshot,
                heads: c.doc.get_heads().iter().map(hash_hex).collect(),
                changes,
                view_json,
                conflicts_json,
                status,
                level,
                urgency,
                private,
                units_read_parties,
                at: now,
            });
        }
        let weights: BTreeMap<String, usize> =
            writes.iter().map(|w| (w.id.clone(), weight_of_snapshot(w.snapshot.len()))).collect();
        let committed = self.store.commit_group(&writes, &activity);
        if committed.as_ref().is_err_and(StoreError::is_constraint) && jobs.len() > 1 {
            // One push can sink a whole group (a constraint it alone breaks): commit each push on
            // its own so only that one fails. Nothing of this group reached the cache.
            tracing::warn!(pushes = jobs.len(), "a group commit failed; committing its pushes one by one");
            for job in jobs {
                self.group(vec![job]);
            }
            return;
        }
        match &committed {
            // The cache keeps the committed versions; the staged ones are dropped.
            Err(e) => tracing::error!(error = %e, "a commit failed; the push is answered with an error"),
            Ok(()) => {
                self.metrics.group_commit(jobs.len());
                for (id, s) in staged {
                    let weight = weights.get(&id).copied().unwrap_or_default();
                    self.cache.put(id, s.cached, weight);
                }
                self.metrics
                    .cached_documents
                    .store(self.cache.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        for (job, r) in jobs.into_iter().zip(results) {
            let answer = match (&committed, r) {
                (Ok(()), Ok(verdicts)) => {
                    for v in &verdicts {
                        self.metrics.verdict(v);
                    }
                    Ok(verdicts)
                }
                (Err(_), _) => Err("the server could not store the changes; try again".to_string()),
                (Ok(()), Err(e)) => Err(e),
            };
            let _ = job.reply.send(answer);
        }
    }

    /// The latest state of a document: staged in this group, cached, or loaded from the store.
    fn lookup(&mut self, id: &str) -> Result<Option<(AutoCommit, DocKind, View)>, Unreadable> {
        if let Some(s) = self.staged.get(id) {
            return Ok(Some((s.cached.doc.clone(), s.cached.kind, s.cached.view.clone())));
        }
        if !self.ensure_cached(id)? {
            return Ok(None);
        }
        Ok(self.cache.get(id).map(|c| (c.doc.clone(), c.kind, c.view.clone())))
    }

    /// Loads a document into the cache; `Ok(false)` when the server does not have it. Stored bytes
    /// are read under the same guard and caps as pushed ones.
    fn ensure_cached(&mut self, id: &str) -> Result<bool, Unreadable> {
        if self.cache.contains(id) {
            return Ok(true);
        }
        if self.absent.as_deref() == Some(id) {
            self.absent = None;
            return Ok(false);
        }
        let rec = self.store.load_doc(id).map_err(|e: StoreError| {
            tracing::error!(error = %e, "loading a document failed");
            Unreadable::Store("the server could not read a document; try again".to_string())
        })?;
        let Some(rec) = rec else { return Ok(false) };
        let loaded = doc::load(&rec.snapshot, reader_actor())
            .map_err(|e| e.to_string())
            .and_then(|d| materialize(rec.kind, &d).map(|view| (d, view)));
        let (d, view) = loaded.map_err(|e| {
            tracing::error!(doc = %id, error = %e, "a stored document is unreadable");
            Unreadable::Document
        })?;
        let weight = weight_of_snapshot(rec.snapshot.len());
        self.cache.put(id.to_string(), Cached { doc: d, kind: rec.kind, view }, weight);
        Ok(true)
    }

    fn process(&mut self, org: &Org, job: &PushJob) -> Result<Vec<Verdict>, String> {
        let mut verdicts: Vec<Option<Verdict>> = vec![None; job.changes.len()];
        let mut batches: BTreeMap<String, DocBatch> = BTreeMap::new();
        for (i, d) in job.changes.iter().enumerate() {
            let b = batches.entry(d.doc.clone()).or_insert(DocBatch { kind: d.kind, items: vec![] });
            if b.kind == d.kind {
                b.items.push((i, d.change.clone()));
            } else {
                verdicts[i] = Some(refused(
                    &d.doc,
                    Some(&d.change.hash()),
                    Outcome::Malformed,
                    "kind_mismatch",
                    "changes of one document disagree about its kind",
                ));
            }
        }
        let who = Principal {
            user: job.device.user.id.clone(),
            role: job.device.user.role,
            scope: job.device.user.scope.clone(),
        };
        let actors: BTreeSet<String> = [job.device.actor.clone()].into();
        let writer = Writer { who: &who, actors: &actors };
        for (doc_id, batch) in batches {
            let new_doc = match self.gate(org, &writer, &job.device.id, &doc_id, &batch, job.at) {
                Gate::Refused(refusals) => {
                    for (i, v) in refusals {
                        verdicts[i] = Some(v);
                    }
                    continue;
                }
                Gate::New => true,
                Gate::Known => false,
            };
            // A new document counts once toward the day's quota, however many of its changes land.
            let mut counted = !new_doc;
            for (i, v) in self.process_doc(org, &writer, job, &doc_id, batch)? {
                if !counted && v.outcome == Outcome::Accepted {
                    let day = quota::day_start(job.at, org.county.utc_offset_minutes);
                    self.docs_today.add(&job.device.id, day);
                    counted = true;
                }
                verdicts[i] = Some(v);
            }
        }
        Ok(verdicts.into_iter().map(|v| v.expect("every change has a verdict")).collect())
    }

    fn process_doc(
        &mut self,
        org: &Org,
        writer: &Writer<'_>,
        job: &PushJob,
        doc_id: &str,
        batch: DocBatch,
    ) -> Result<Vec<(usize, Verdict)>, String> {
        let (device, cursor, now) = (job.device.id.as_str(), job.cursor, job.at);
        let mut out = Vec::new();
        let looked_up = match self.lookup(doc_id) {
            Ok(l) => l,
            Err(Unreadable::Store(e)) => return Err(e),
            Err(Unreadable::Document) => {
                // A document stored before its bytes were checked, and unreadable now: its changes
                // wait on the device (nothing is lost), the rest of the push goes on.
                for (i, ch) in batch.items {
                    out.push((
                        i,
                        Verdict {
                            code: Some("document_unreadable".into()),
                            message: Some(
                                "the server cannot read its copy of this document; keep the change, an administrator has been told".into(),
                            ),
                            ..verdict(doc_id, Some(&ch.hash()), Outcome::MissingDeps)
                        },
                    ));
                }
                return Ok(out);
            }
        };
        let (mut current, before): (AutoCommit, Option<View>) = match looked_up {
            Some((_, kind, _)) if kind != batch.kind => {
                for (i, ch) in batch.items {
                    out.push((
                        i,
                        refused(
                            doc_id,
                            Some(&ch.hash()),
                            Outcome::Malformed,
                            "kind_mismatch",
                            "the document is of another kind",
                        ),
                    ));
                }
                return Ok(out);
            }
            Some((d, _, view)) => (d, Some(view)),
            None => (AutoCommit::new().with_actor(reader_actor()), None),
        };
        // Duplicates, the actor check, and the cap on changes per document.
        let mut seen = HashSet::new();
        let mut pending = Vec::new();
        for (i, ch) in batch.items {
            let h = ch.hash();
            if current.get_change_by_hash(&h).is_some() || !seen.insert(h) {
                out.push((i, verdict(doc_id, Some(&h), Outcome::Duplicate)));
            } else if !writer.actors.contains(&ch.actor_id().to_hex_string()) {
                out.push((
                    i,
                    refused(
                        doc_id,
                        Some(&h),
                        Outcome::Forbidden,
                        "actor_not_registered",
                        "the change was written with an actor id not registered to this device",
                    ),
                ));
            } else if pending.len() >= MAX_CHANGES_PER_DOC_PER_PUSH {
                let r = Refusal::TooMany {
                    what: "changes to one document in one push".into(),
                    max: MAX_CHANGES_PER_DOC_PER_PUSH,
                };
                out.push((i, refused(doc_id, Some(&h), Outcome::Forbidden, r.code(), r.to_string())));
            } else {
                pending.push((i, ch));
            }
        }
        // Causal order: a change is ready when all its dependencies are known or ready before it.
        let mut known: HashSet<ChangeHash> = HashSet::new();
        let mut ready = Vec::new();
        loop {
            let before_len = pending.len();
            let mut rest = Vec::new();
            for (i, ch) in pending {
                let deps_ok =
                    ch.deps().iter().all(|d| known.contains(d) || current.get_change_by_hash(d).is_some());
                if deps_ok {
                    known.insert(ch.hash());
                    ready.push((i, ch));
                } else {
                    rest.push((i, ch));
                }
            }
            pending = rest;
            if pending.is_empty() || pending.len() == before_len {
                break;
            }
        }
        for (i, ch) in pending {
            let missing: Vec<String> = ch
                .deps()
                .iter()
                .filter(|d| !known.contains(d) && current.get_change_by_hash(d).is_none())
                .map(hash_hex)
                .collect();
            out.push((
                i,
                Verdict {
                    code: Some("missing_deps".into()),
                    message: Some("push the changes it depends on first".into()),
                    missing,
                    ..verdict(doc_id, Some(&ch.hash()), Outcome::MissingDeps)
                },
            ));
        }
        if ready.is_empty() {
            return Ok(out);
        }
        // Claims bind operators only (their transitions are in their own name), so only their
        // pushes need to read one.
        let operator = matches!(writer.who.role, Role::TownOperator | Role::CountyOperator | Role::Admin);
        let claim = if operator && batch.kind == DocKind::Report {
            self.store.claim_on(doc_id, now).map_err(|e| {
                tracing::error!(error = %e, "reading a claim failed");
                "the server could not read the queue; try again".to_string()
            })?
        } else {
            None
        };
        let base_transitions = match &before {
            Some(View::Report(r)) => r.transitions.len(),
            _ => 0,
        };
        let trials = self.trials.clone();
        let store = self.store.clone();
        let rules = self.rules.clone();
        let mut ctx = DocCtx {
            org,
            rules: &rules,
            writer,
            doc_id,
            kind: batch.kind,
            claim: claim.as_ref(),
            base_transitions,
            seen: HashMap::new(),
            trials: &trials,
            store: store.as_ref(),
            device,
            cursor,
            now,
            served: None,
        };
        // Fast path: the whole batch at once, on the copy `lookup` made. Otherwise bisection: a bad
        // change among n costs about 2·log2(n) trials, not n.
        let all_changes: Vec<Change> = ready.iter().map(|(_, c)| c.clone()).collect();
        let base = std::mem::replace(&mut current, AutoCommit::new());
        let (accepted, state) = match try_apply(&mut ctx, base, before.as_ref(), &all_changes) {
            Ok(state) => (ready, state),
            Err((outcome, code, message)) if ready.len() == 1 => {
                let h = ready[0].1.hash();
                out.push((ready[0].0, refused(doc_id, Some(&h), outcome, &code, message)));
                return Ok(out);
            }
            Err(_) => {
                let base = match self.lookup(doc_id) {
                    Ok(Some((d, _, _))) => d,
                    Ok(None) => AutoCommit::new().with_actor(reader_actor()),
                    Err(Unreadable::Store(e)) => return Err(e),
                    Err(Unreadable::Document) => return Err("a document became unreadable".into()),
                };
                let mut state = DocState { doc: base, view: before.clone(), snapshot: Vec::new() };
                let mut ok = Vec::new();
                let mut bad = HashSet::new();
                // The whole run just failed: start from its halves.
                let mut first = ready;
                let second = first.split_off(first.len() / 2);
                settle(&mut ctx, &mut state, first, &mut bad, &mut ok, &mut out);
                settle(&mut ctx, &mut state, second, &mut bad, &mut ok, &mut out);
                if ok.is_empty() {
                    return Ok(out);
                }
                (ok, state)
            }
        };
        let Some(final_view) = state.view else { return Ok(out) };
        let mut changes = self.staged.remove(doc_id).map(|s| s.changes).unwrap_or_default();
        for (i, ch) in &accepted {
            out.push((*i, verdict(doc_id, Some(&ch.hash()), Outcome::Accepted)));
            changes.push((ch.hash().0.to_vec(), ch.raw_bytes().to_vec(), Some(device.to_string())));
        }
        let cached = Cached { doc: state.doc, kind: batch.kind, view: final_view };
        self.staged.insert(doc_id.to_string(), Staged { cached, changes, snapshot: state.snapshot });
        Ok(out)
    }
}

/// What [`WriterLoop::gate`] decided about one document's changes in a push.
enum Gate {
    /// Answered without applying anything.
    Refused(Vec<(usize, Verdict)>),
    /// A document the server does not have: the changes would create it.
    New,
    Known,
}

/// A change may not leave a document's view over [`quota::MAX_VIEW_BYTES`] of JSON (unless it
/// was already there: an old document keeps taking small edits).
fn check_view_size(before: Option<&View>, after: &View) -> Result<(), Refusal> {
    fn size(v: &View) -> usize {
        match v {
            View::Report(r) => quota::json_len(r),
            View::Patrol(p) => quota::json_len(p),
            View::Parties(p) => quota::json_len(p),
        }
    }
    let grown = size(after);
    if grown > quota::MAX_VIEW_BYTES && before.is_none_or(|b| grown > size(b)) {
        return Err(Refusal::TooMany { what: "bytes of content".into(), max: quota::MAX_VIEW_BYTES });
    }
    Ok(())
}

impl WriterLoop {
    /// Refusals decided before a document's changes are applied. A document outside the pusher's
    /// scope is answered `out_of_scope` whatever the changes say (or `missing_deps`, as for a
    /// document the server does not have, when they depend on changes not in the push), so a push
    /// tells nothing about another grid's documents. A new document beyond the device's daily
    /// quota is refused `quota_exceeded`.
    fn gate(
        &mut self,
        org: &Org,
        writer: &Writer<'_>,
        device: &str,
        doc_id: &str,
        batch: &DocBatch,
        at: i64,
    ) -> Gate {
        self.absent = None;
        let held = match self.staged.get_mut(doc_id) {
            Some(s) => Some(&mut s.cached),
            None => match self.ensure_cached(doc_id) {
                Ok(true) => self.cache.get_mut(doc_id),
                Ok(false) => {
                    self.absent = Some(doc_id.to_string());
                    None
                }
                // Unreadable: process_doc answers for it.
                Err(_) => return Gate::Known,
            },
        };
        // Dependencies count as present when pushed alongside or already in the document: a
        // device that holds a foreign document's changes learns nothing new from the answer.
        let mut present: HashSet<ChangeHash> = batch.items.iter().map(|(_, c)| c.hash()).collect();
        let place = match held {
            Some(c) if readable(&writer.who.scope, &c.view) => return Gate::Known,
            Some(c) => {
                for (_, ch) in &batch.items {
                    for d in ch.deps() {
                        if c.doc.get_change_by_hash(d).is_some() {
                            present.insert(*d);
                        }
                    }
                }
                Some(())
            }
            None => None,
        };
        let refuse_all = |code: &str, message: String| {
            let in_push = &present;
            let verdicts = batch
                .items
                .iter()
                .map(|(i, ch)| {
                    let missing: Vec<String> =
                        ch.deps().iter().filter(|d| !in_push.contains(d)).map(hash_hex).collect();
                    let v = if missing.is_empty() {
                        refused(doc_id, Some(&ch.hash()), Outcome::Forbidden, code, message.clone())
                    } else {
                        Verdict {
                            code: Some("missing_deps".into()),
                            message: Some("push the changes it depends on first".into()),
                            missing,
                            ..verdict(doc_id, Some(&ch.hash()), Outcome::MissingDeps)
                        }
                    };
                    (*i, v)
                })
                .collect();
            Gate::Refused(verdicts)
        };
        match place {
            Some(()) => refuse_all(Refusal::OutOfScope.code(), Refusal::OutOfScope.to_string()),
            None => {
                let day = quota::day_start(at, org.county.utc_offset_minutes);
                let store = &self.store;
                let made = self.docs_today.get(device, day, |since| {
                    store.docs_created_since(device, since).unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "counting a device's documents failed");
                        0
                    })
                });
                if made < self.quotas.docs_per_device_day {
                    return Gate::New;
                }
                let limit = self.quotas.docs_per_device_day;
                match refuse_all(
                    "quota_exceeded",
                    format!(
                        "this device created {limit} documents today, the most a day allows; try again tomorrow"
                    ),
                ) {
                    // A quota refusal depends on nothing: every change of the batch gets it.
                    Gate::Refused(v) => Gate::Refused(
                        v.into_iter()
                            .map(|(i, v)| (i, Verdict { outcome: Outcome::Forbidden, missing: vec![], ..v }))
                            .collect(),
                    ),
                    other => other,
                }
            }
        }
    }

    /// Keeps at most the daily quota of refusal rows per device; the rest are only counted.
    fn limit_stored_refusals(&mut self, utc_offset_minutes: i32, activity: &mut [DeviceActivity]) {
        let limit = self.quotas.refusals_per_device_day;
        for a in activity.iter_mut().filter(|a| !a.refusals.is_empty()) {
            let day = quota::day_start(a.at, utc_offset_minutes);
            let store = &self.store;
            let stored = self.refusals_today.get(&a.device, day, |since| {
                store.refusals_since(&a.device, since).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "counting a device's refusals failed");
                    0
                })
            });
            let room = limit.saturating_sub(stored) as usize;
            a.refusals.truncate(room);
            for _ in 0..a.refusals.len() {
                self.refusals_today.add(&a.device, day);
            }
        }
    }
}
