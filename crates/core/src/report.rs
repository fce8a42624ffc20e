//! Report documents (网格事件): the Automerge layout, the local edits a device makes, and the
//! materialized `ReportView` every replica computes identically from the same changes.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{ActorId, AutoCommit, ChangeHash, ObjType, ROOT, ReadDoc, transaction::Transactable};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::doc::{
    ActorInfo, Author, DocError, Fields, commit, layout, list_at, list_maps, map_at, obj_at, opt_bool,
    opt_int, read_authors, register_author, req_str, text_at,
};
use crate::lifecycle::{Action, Level, Status, Transition, fold_with, str_enum};
use crate::merge::{ResolvedConflict, Resolver, Rule, lifecycle_conflicts, object_conflict};
use crate::org::Role;

/// Layout version written into every report.
pub const REPORT_LAYOUT: i64 = 1;

/// Grid event categories in use in the county.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Dispute,
    Request,
    Suggestion,
    PublicSecurity,
    Fire,
    Safety,
    Sanitation,
    Other,
}

str_enum!(Category {
    Dispute = "dispute",
    Request = "request",
    Suggestion = "suggestion",
    PublicSecurity = "public_security",
    Fire = "fire",
    Safety = "safety",
    Sanitation = "sanitation",
    Other = "other",
});

impl Category {
    pub const ALL: [Category; 8] = [
        Category::Dispute,
        Category::Request,
        Category::Suggestion,
        Category::PublicSecurity,
        Category::Fire,
        Category::Safety,
        Category::Sanitation,
        Category::Other,
    ];

    pub fn label_zh(self) -> &'static str {
        match self {
            Category::Dispute => "矛盾纠纷",
            Category::Request => "群众诉求",
            Category::Suggestion => "群众意见建议",
            Category::PublicSecurity => "治安隐患",
            Category::Fire => "消防隐患",
            Category::Safety => "安全隐患",
            Category::Sanitation => "环境卫生",
            Category::Other => "其他",
        }
    }

    pub fn label_en(self) -> &'static str {
        match self {
            Category::Dispute => "dispute",
            Category::Request => "resident's request",
            Category::Suggestion => "suggestion",
            Category::PublicSecurity => "public-security hazard",
            Category::Fire => "fire hazard",
            Category::Safety => "safety hazard",
            Category::Sanitation => "sanitation and environment",
            Category::Other => "other",
        }
    }

    /// Accepts the code, the English label or the Chinese label.
    pub fn parse_any(s: &str) -> Option<Category> {
        let s = s.trim();
        Category::parse(&s.to_lowercase().replace(['-', ' '], "_"))
            .or_else(|| Category::ALL.into_iter().find(|c| c.label_zh() == s || c.label_en() == s))
    }
}

/// How urgent a report is; ordered so that `max` is the most urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Low,
    Normal,
    High,
    Critical,
}

str_enum!(Urgency { Low = "low", Normal = "normal", High = "high", Critical = "critical" });

/// Where it happened.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Location {
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub address: Option<String>,
}

/// A party to a dispute. Personal data: it stays inside the report's scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct Party {
    pub name: String,
    pub contact: Option<String>,
}

/// A party as the view lists it: every entry ever recorded, in list order. Entries are never
/// changed or removed; a correction is a new entry naming the one it `supersedes`, and the view's
/// `corrected_parties` lists the ids of entries a later one replaced (their data stays in the
/// history, inside the report's scope).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct PartyEntry {
    /// The entry's own id: the Automerge id of its map (`<counter>@<actor hex>`), the same on
    /// every replica.
    pub id: String,
    pub name: String,
    pub contact: Option<String>,
    /// The id of the entry this one corrects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
}

/// A note: append-only, every device's notes are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Note {
    pub id: String,
    pub author: String,
    pub role: Role,
    pub at: i64,
    pub text: String,
    /// A closed-loop record rather than a plain note: a unit's signing or reply, the grid's
    /// check, the hub's return visit. Kept in the notes list, append-only like every note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
    /// The handling unit a sign or reply is from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The order the record is about: the id of the transition that was the report's tip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// A check's `pass`/`fail`; a visit's `satisfied`, `basically_satisfied`, `unsatisfied` or
    /// `unreachable`; an extension decision's `approve`/`deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// An extension request's new deadline (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
}

/// The closed-loop records (闭环): 签收, 办理反馈, 核查, 回访.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// 签收: a handling unit signs for its order.
    Sign,
    /// 办理反馈: a handling unit replies with its result.
    Reply,
    /// 核查: the grid checks the result on site (`pass` or `fail`).
    Verify,
    /// 回访: the hub calls the resident back.
    Visit,
    /// 延期申请: a handling unit asks for more time on its order (`until`).
    Extend,
    /// 延期审批: the dispatcher approves or denies the request (`approve`/`deny`).
    Extension,
    /// 审核: the town reviews a grid's own settlement (`confirm`, or `return` with a rework).
    Review,
    /// 免核查: a county operator waives the grid's check, with the reason.
    Waive,
    /// 督办: a supervision order on the current step (`yellow` or `red`), by a county operator,
    /// or by the server when a step stays overdue; the holder must answer it.
    Supervise,
    /// 督办回复: the holder of the step answers the supervision.
    Answer,
    /// 催办: the server's reminder that a step is past its limit.
    Remind,
}

str_enum!(Record {
    Sign = "sign",
    Reply = "reply",
    Verify = "verify",
    Visit = "visit",
    Extend = "extend",
    Extension = "extension",
    Review = "review",
    Waive = "waive",
    Supervise = "supervise",
    Answer = "answer",
    Remind = "remind",
});

/// The levels of a supervision order.
pub const SUPERVISION_LEVELS: [&str; 2] = ["yellow", "red"];

/// The results a return visit may record.
/// `not_applicable` is for anonymous reports only: nobody to call back.
pub const VISIT_RESULTS: [&str; 5] =
    ["satisfied", "basically_satisfied", "unsatisfied", "unreachable", "not_applicable"];

/// A file attached to a report; the bytes travel separately, addressed by their hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Attachment {
    /// SHA-256 of the content, hex.
    pub sha256: String,
    pub mime: String,
    pub size: u64,
    pub name: String,
}

/// What a device fills in to create a report.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReport {
    /// UUIDv7 made on the device.
    pub id: uuid::Uuid,
    pub grid: String,
    pub town: String,
    pub category: Category,
    pub title: String,
    pub description: String,
    pub urgency: Urgency,
    pub location: Location,
    pub parties: Vec<Party>,
    /// The resident asked not to be named (匿名): nobody is called back (the visit is
    /// `not_applicable`). Fixed at creation.
    pub anonymous: bool,
}

/// The fields an edit may change; `None` leaves a field alone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportEdit {
    pub title: Option<String>,
    pub description: Option<String>,
    pub category: Option<Category>,
    pub urgency: Option<Urgency>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub address: Option<String>,
    /// How many people are involved; parties themselves live in the parties document
    /// ([`crate::parties`]), and [`following_head_count`] keeps the count in step with them.
    pub head_count: Option<i64>,
}

/// The head count after the parties went from `before` to `after` current entries: it follows
/// the parties until someone sets it by hand (`count` differs from `before`).
pub fn following_head_count(count: Option<i64>, before: i64, after: i64) -> Option<i64> {
    let follows = count.is_none() || (count == Some(before) && after != before);
    follows.then_some(after)
}

/// The materialized report: identical, byte for byte when serialized, on every replica holding the
/// same changes. Shape: `schemas/report-view.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReportView {
    pub id: String,
    pub grid: String,
    pub town: String,
    pub reporter: String,
    pub created_at: i64,
    pub category: Category,
    pub category_zh: String,
    pub title: String,
    pub description: String,
    pub urgency: Urgency,
    pub location: Location,
    /// Reported anonymously (匿名): the return visit is `not_applicable`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
    pub parties: Vec<PartyEntry>,
    /// Ids of party entries a later entry corrects (see [`PartyEntry`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrected_parties: Vec<String>,
    pub head_count: Option<i64>,
    pub notes: Vec<Note>,
    pub attachments: Vec<Attachment>,
    pub status: Status,
    pub level: Level,
    /// Id of the last applied transition: the parent of the next one.
    pub tip: String,
    /// Every recorded transition in document order; `applied` says which the fold kept.
    pub transitions: Vec<Transition>,
    pub conflicts: Vec<ResolvedConflict>,
    pub authors: BTreeMap<String, ActorInfo>,
}

fn check_coords(lat: Option<f64>, lon: Option<f64>) -> Result<(), DocError> {
    if let Some(lat) = lat
        && !(lat.is_finite() && (-90.0..=90.0).contains(&lat))
    {
        return Err(DocError::BadInput(format!("latitude {lat} is not between -90 and 90")));
    }
    if let Some(lon) = lon
        && !(lon.is_finite() && (-180.0..=180.0).contains(&lon))
    {
        return Err(DocError::BadInput(format!("longitude {lon} is not between -180 and 180")));
    }
    Ok(())
}

/// Creates a report document written by `actor`. Returns the document with one change.
pub fn create_report(actor: ActorId, author: &Author, new: &NewReport) -> Result<AutoCommit, DocError> {
    if new.title.trim().is_empty() {
        return Err(DocError::BadInput("a report needs a title".into()));
    }
    check_coords(new.location.lat, new.location.lon)?;
    let mut doc = AutoCommit::new().with_actor(actor);
    doc.put(ROOT, "kind", "report")?;
    doc.put(ROOT, "layout", REPORT_LAYOUT)?;
    doc.put(ROOT, "id", new.id.to_string())?;
    doc.put(ROOT, "grid", new.grid.as_str())?;
    doc.put(ROOT, "town", new.town.as_str())?;
    doc.put(ROOT, "reporter", author.user.as_str())?;
    doc.put(ROOT, "created_at", author.at)?;
    doc.put(ROOT, "category", new.category.as_str())?;
    doc.put(ROOT, "title", new.title.as_str())?;
    let text = doc.put_object(ROOT, "description", ObjType::Text)?;
    doc.splice_text(&text, 0, 0, &new.description)?;
    doc.put(ROOT, "urgency", new.urgency.as_str())?;
    if new.anonymous {
        doc.put(ROOT, "anonymous", true)?;
    }
    let loc = doc.put_object(ROOT, "location", ObjType::Map)?;
    if let Some(lat) = new.location.lat {
        doc.put(&loc, "lat", lat)?;
    }
    if let Some(lon) = new.location.lon {
        doc.put(&loc, "lon", lon)?;
    }
    if let Some(a) = &new.location.address {
        doc.put(&loc, "address", a.as_str())?;
    }
    // The parties themselves go into the report's parties document (`crate::parties`); the
    // report keeps the (empty) list of older layouts and the head count.
    let parties = doc.put_object(ROOT, "parties", ObjType::Map)?;
    doc.put_object(&parties, "people", ObjType::List)?;
    if !new.parties.is_empty() {
        doc.put(&parties, "head_count", new.parties.len() as i64)?;
    }
    doc.put_object(ROOT, "notes", ObjType::List)?;
    doc.put_object(ROOT, "attachments", ObjType::List)?;
    doc.put_object(ROOT, "transitions", ObjType::List)?;
    doc.put_object(ROOT, "authors", ObjType::Map)?;
    register_author(&mut doc, author)?;
    commit(&mut doc, author, "create report");
    Ok(doc)
}

pub(crate) fn push_party(
    doc: &mut AutoCommit,
    people: &automerge::ObjId,
    p: &Party,
    supersedes: Option<&str>,
) -> Result<(), DocError> {
    let at = doc.length(people);
    let obj = doc.insert_object(people, at, ObjType::Map)?;
    doc.put(&obj, "name", p.name.as_str())?;
    if let Some(c) = &p.contact {
        doc.put(&obj, "contact", c.as_str())?;
    }
    if let Some(old) = supersedes {
        doc.put(&obj, "supersedes", old)?;
    }
    Ok(())
}

/// The id a party entry is known by: its map's Automerge id.
pub(crate) fn entry_id(obj: &automerge::ObjId) -> String {
    match obj {
        automerge::ObjId::Id(counter, actor, _) => format!("{counter}@{actor}"),
        automerge::ObjId::Root => String::new(),
    }
}

/// The extension requested and not yet decided, and the deadline last approved, on `order`,
/// reading its records in list order (deterministic on every replica).
pub fn extension_state(notes: &[Note], order: &str) -> (Option<i64>, Option<i64>) {
    let (mut pending, mut approved) = (None, None);
    for n in notes.iter().filter(|n| n.order.as_deref() == Some(order)) {
        match (n.record, n.result.as_deref()) {
            (Some(Record::Extend), _) => pending = n.until,
            (Some(Record::Extension), Some("approve")) if pending.is_some() => approved = pending.take(),
            (Some(Record::Extension), _) => pending = None,
            _ => {}
        }
    }
    (pending, approved)
}

impl ReportView {
    /// The closed-loop records of one kind about step `order`, in list order.
    pub fn records_on<'a>(&'a self, order: &'a str, record: Record) -> impl Iterator<Item = &'a Note> {
        self.notes.iter().filter(move |n| n.record == Some(record) && n.order.as_deref() == Some(order))
    }

    /// Whether the grid settled this report itself (自办自结) and the town has not reviewed that
    /// settlement yet: it waits in the town's queue at step `review`.
    pub fn awaits_review(&self) -> bool {
        self.status == Status::Resolved
            && self.level == Level::Grid
            && self.records_on(&self.tip, Record::Review).next().is_none()
    }

    /// The supervision order (督办) on the current step nobody has answered yet, if any.
    pub fn open_supervision(&self) -> Option<&Note> {
        // The last supervision or answer on the step decides: an answer closes every order before it.
        self.notes
            .iter()
            .rfind(|n| {
                matches!(n.record, Some(Record::Supervise | Record::Answer))
                    && n.order.as_deref() == Some(self.tip.as_str())
            })
            .filter(|n| n.record == Some(Record::Supervise))
    }

    /// Whether the step's reminder (催办) was written already.
    pub fn reminded(&self) -> bool {
        self.records_on(&self.tip, Record::Remind).next().is_some()
    }

    /// The deadline approved by an extension (延期) of the live order, if any.
    pub fn extended_until(&self) -> Option<i64> {
        (self.status == Status::Dispatched).then(|| extension_state(&self.notes, &self.tip).1).flatten()
    }

    /// The handling units of the live order: the units of the last applied dispatch while the
    /// report is dispatched, else none. Only these may write into the report (notes, a return).
    pub fn live_units(&self) -> &[String] {
        if self.status != Status::Dispatched {
            return &[];
        }
        self.transitions
            .iter()
            .rev()
            .find(|t| t.applied && t.action == Action::Dispatch)
            .map_or(&[], |t| t.units.as_slice())
    }

    /// Every handling unit an applied dispatch ever named: the units that may read the report
    /// (its whole history; a unit keeps what it was sent).
    pub fn units_ever(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .transitions
            .iter()
            .filter(|t| t.applied && t.action == Action::Dispatch)
            .flat_map(|t| t.units.iter().map(String::as_str))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The parties no later entry corrects, in list order.
    pub fn current_parties(&self) -> Vec<&PartyEntry> {
        self.parties.iter().filter(|p| !self.corrected_parties.contains(&p.id)).collect()
    }
}

impl From<&PartyEntry> for Party {
    fn from(p: &PartyEntry) -> Party {
        Party { name: p.name.clone(), contact: p.contact.clone() }
    }
}

/// The orders every unit they named has replied to (see [`fold_with`]). An order is a transition
/// that left the report `dispatched`: a dispatch (its units) or a rework (the units of the
/// nearest dispatch above it).
pub fn settled_orders(transitions: &[Transition], notes: &[Note]) -> BTreeSet<String> {
    let replied: BTreeSet<(&str, &str)> = notes
        .iter()
        .filter(|n| n.record == Some(Record::Reply))
        .filter_map(|n| Some((n.order.as_deref()?, n.unit.as_deref()?)))
        .collect();
    order_units(transitions)
        .into_iter()
        .filter(|(order, units)| {
            !units.is_empty() && units.iter().all(|u| replied.contains(&(*order, u.as_str())))
        })
        .map(|(order, _)| order.to_string())
        .collect()
}

/// The units each order named, by order id: an order is a transition that left the report
/// `dispatched`; a dispatch names its own units, a rework those of the nearest dispatch above it.
/// Transitions are looked up by id once, and each walk is bounded (a forged cycle ends it), so a
/// report holding its maximum of forged transitions costs no more than a few thousand lookups.
pub fn order_units<'a>(transitions: &'a [Transition]) -> BTreeMap<&'a str, &'a [String]> {
    let by_id: BTreeMap<&str, &'a Transition> = transitions.iter().map(|t| (t.id.as_str(), t)).collect();
    let units = |t: &'a Transition| -> &'a [String] {
        let mut cur = t;
        for _ in 0..=transitions.len() {
            if cur.action == Action::Dispatch {
                return cur.units.as_slice();
            }
            match by_id.get(cur.parent.as_str()) {
                Some(p) => cur = p,
                None => break,
            }
        }
        &[]
    };
    transitions.iter().filter(|t| t.to == Status::Dispatched).map(|t| (t.id.as_str(), units(t))).collect()
}

/// The orders a failed check (核查不通过) sent back: a close on them never applies.
pub fn failed_orders(notes: &[Note]) -> BTreeSet<String> {
    notes
        .iter()
        .filter(|n| n.record == Some(Record::Verify) && n.result.as_deref() == Some("fail"))
        .filter_map(|n| n.order.clone())
        .collect()
}

/// Records a closed-loop step (sign, reply, check, visit) about the report's current order.
pub fn add_record(
    doc: &mut AutoCommit,
    author: &Author,
    record: Record,
    text: &str,
    unit: Option<&str>,
    result: Option<&str>,
) -> Result<Option<ChangeHash>, DocError> {
    add_record_until(doc, author, record, text, unit, result, None)
}

/// [`add_record`] with an extension request's new deadline.
pub fn add_record_until(
    doc: &mut AutoCommit,
    author: &Author,
    record: Record,
    text: &str,
    unit: Option<&str>,
    result: Option<&str>,
    until: Option<i64>,
) -> Result<Option<ChangeHash>, DocError> {
    let v = materialize_report(doc)?;
    let obj = push_note(doc, author, text)?;
    doc.put(&obj, "record", record.as_str())?;
    doc.put(&obj, "order", v.tip.as_str())?;
    if let Some(u) = unit {
        doc.put(&obj, "unit", u)?;
    }
    if let Some(r) = result {
        doc.put(&obj, "result", r)?;
    }
    if let Some(u) = until {
        doc.put(&obj, "until", u)?;
    }
    finish(doc, author, record.as_str())
}

/// How many party entries no later entry corrects.
pub(crate) fn current_party_count(doc: &AutoCommit, people: &automerge::ObjId) -> Result<i64, DocError> {
    let mut ids = Vec::new();
    let mut replaced = Vec::new();
    for obj in list_maps(doc, people)? {
        ids.push(entry_id(&obj));
        if let Some(old) = Fields::read(doc, &obj).opt_str("supersedes")? {
            replaced.push(old);
        }
    }
    Ok(ids.iter().filter(|id| !replaced.contains(id)).count() as i64)
}

/// The party entries of a `people` list, in list order.
pub(crate) fn read_people(doc: &AutoCommit, people: &automerge::ObjId) -> Result<Vec<PartyEntry>, DocError> {
    list_maps(doc, people)?
        .into_iter()
        .map(|p| {
            let id = entry_id(&p);
            let p = Fields::read(doc, &p);
            Ok(PartyEntry {
                id,
                name: p.req_str("name")?,
                contact: p.opt_str("contact")?,
                supersedes: p.opt_str("supersedes")?,
            })
        })
        .collect()
}

/// The ids of entries a later entry supersedes.
pub fn corrected_parties(parties: &[PartyEntry]) -> Vec<String> {
    let mut out: Vec<String> = parties.iter().filter_map(|p| p.supersedes.clone()).collect();
    out.sort();
    out.dedup();
    out
}

/// Applies a field edit as one change. `Ok(None)` when nothing actually changed.
pub fn edit_report(
    doc: &mut AutoCommit,
    author: &Author,
    edit: &ReportEdit,
) -> Result<Option<ChangeHash>, DocError> {
    check_coords(edit.lat, edit.lon)?;
    let max = crate::validate::MAX_HEAD_COUNT;
    if edit.head_count.is_some_and(|n| !(0..=max).contains(&n)) {
        return Err(DocError::BadInput(format!("the head count must be between 0 and {max}")));
    }
    if let Some(t) = &edit.title {
        if t.trim().is_empty() {
            return Err(DocError::BadInput("the title cannot be empty".into()));
        }
        doc.put(ROOT, "title", t.as_str())?;
    }
    if let Some(d) = &edit.description {
        let text = obj_at(doc, &ROOT, "description", ObjType::Text)?;
        doc.update_text(&text, d)?;
    }
    if let Some(c) = edit.category {
        doc.put(ROOT, "category", c.as_str())?;
    }
    if let Some(u) = edit.urgency {
        doc.put(ROOT, "urgency", u.as_str())?;
    }
    let loc = map_at(doc, &ROOT, "location")?;
    if let Some(lat) = edit.lat {
        doc.put(&loc, "lat", lat)?;
    }
    if let Some(lon) = edit.lon {
        doc.put(&loc, "lon", lon)?;
    }
    if let Some(a) = &edit.address {
        doc.put(&loc, "address", a.as_str())?;
    }
    if let Some(n) = edit.head_count {
        let parties = map_at(doc, &ROOT, "parties")?;
        doc.put(&parties, "head_count", n)?;
    }
    finish(doc, author, "edit report")
}

/// Commits what is pending (with the author registered), or nothing when no op was made.
fn finish(doc: &mut AutoCommit, author: &Author, message: &str) -> Result<Option<ChangeHash>, DocError> {
    if doc.pending_ops() == 0 {
        return Ok(None);
    }
    register_author(doc, author)?;
    Ok(commit(doc, author, message))
}

/// Appends a note.
pub fn add_note(doc: &mut AutoCommit, author: &Author, text: &str) -> Result<Option<ChangeHash>, DocError> {
    if text.trim().is_empty() {
        return Err(DocError::BadInput("a note cannot be empty".into()));
    }
    push_note(doc, author, text)?;
    finish(doc, author, "note")
}

/// Appends a note entry (id, author, role, time, text) and returns its map.
fn push_note(doc: &mut AutoCommit, author: &Author, text: &str) -> Result<automerge::ObjId, DocError> {
    let notes = list_at(doc, &ROOT, "notes")?;
    let n = doc.length(&notes);
    let id = format!("{}/{}", doc.get_actor().to_hex_string(), n);
    let obj = doc.insert_object(&notes, n, ObjType::Map)?;
    doc.put(&obj, "id", id)?;
    doc.put(&obj, "author", author.user.as_str())?;
    doc.put(&obj, "role", author.role.as_str())?;
    doc.put(&obj, "at", author.at)?;
    doc.put(&obj, "text", text)?;
    Ok(obj)
}

/// Records an attachment's metadata.
pub fn add_attachment(
    doc: &mut AutoCommit,
    author: &Author,
    a: &Attachment,
) -> Result<Option<ChangeHash>, DocError> {
    if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DocError::BadInput("an attachment hash must be 64 hex digits (SHA-256)".into()));
    }
    let list = list_at(doc, &ROOT, "attachments")?;
    let n = doc.length(&list);
    let obj = doc.insert_object(&list, n, ObjType::Map)?;
    doc.put(&obj, "sha256", a.sha256.as_str())?;
    doc.put(&obj, "mime", a.mime.as_str())?;
    doc.put(&obj, "size", a.size as i64)?;
    doc.put(&obj, "name", a.name.as_str())?;
    finish(doc, author, "attachment")
}

/// Appends a lifecycle transition taken from the state this replica currently folds to.
pub fn add_transition(
    doc: &mut AutoCommit,
    author: &Author,
    action: Action,
    reason: &str,
    dept: Option<&str>,
) -> Result<ChangeHash, DocError> {
    write_transition(doc, author, action, reason, dept, &[])
}

/// Dispatches a report to handling units (乡呼县应): `units` are unit ids, the lead unit first,
/// then the assisting ones; `names` is how people read them (kept as the transition's `dept`).
pub fn dispatch_to_units(
    doc: &mut AutoCommit,
    author: &Author,
    reason: &str,
    units: &[String],
    names: &str,
) -> Result<ChangeHash, DocError> {
    if units.is_empty() {
        return Err(DocError::BadInput("name the lead unit".into()));
    }
    if units.iter().any(|u| u.is_empty() || u.contains(',')) {
        return Err(DocError::BadInput("a unit id is empty or holds a comma".into()));
    }
    write_transition(doc, author, Action::Dispatch, reason, Some(names), units)
}

fn write_transition(
    doc: &mut AutoCommit,
    author: &Author,
    action: Action,
    reason: &str,
    dept: Option<&str>,
    units: &[String],
) -> Result<ChangeHash, DocError> {
    if action == Action::Dispatch && dept.is_none_or(|d| d.trim().is_empty()) {
        return Err(DocError::BadInput("say which department it goes to: --to DEPT (e.g. 城管办)".into()));
    }
    let state = materialize_report(doc)?;
    let Some((to, to_level)) = action.target(state.status, state.level) else {
        return Err(DocError::IllegalTransition {
            action: action.to_string(),
            status: state.status.to_string(),
            level: state.level.to_string(),
        });
    };
    let list = list_at(doc, &ROOT, "transitions")?;
    let n = doc.length(&list);
    let obj = doc.insert_object(&list, n, ObjType::Map)?;
    doc.put(&obj, "id", format!("{}/{}", doc.get_actor().to_hex_string(), n))?;
    doc.put(&obj, "parent", state.tip.as_str())?;
    doc.put(&obj, "action", action.as_str())?;
    doc.put(&obj, "author", author.user.as_str())?;
    doc.put(&obj, "role", author.role.as_str())?;
    doc.put(&obj, "from", state.status.as_str())?;
    doc.put(&obj, "from_level", state.level.as_str())?;
    doc.put(&obj, "to", to.as_str())?;
    doc.put(&obj, "to_level", to_level.as_str())?;
    doc.put(&obj, "reason", reason)?;
    if let Some(d) = dept {
        doc.put(&obj, "dept", d)?;
    }
    if !units.is_empty() {
        doc.put(&obj, "units", units.join(","))?;
    }
    doc.put(&obj, "at", author.at)?;
    finish(doc, author, action.as_str())?.ok_or_else(|| layout("the transition made no change"))
}

fn parse_field<T>(value: String, what: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, DocError> {
    parse(&value).ok_or_else(|| layout(format!("{what} is not one of the known values")))
}

fn read_transitions(doc: &AutoCommit) -> Result<Vec<Transition>, DocError> {
    let list = list_at(doc, &ROOT, "transitions")?;
    list_maps(doc, &list)?
        .into_iter()
        .map(|t| {
            let t = Fields::read(doc, &t);
            Ok(Transition {
                id: t.req_str("id")?,
                parent: t.req_str("parent")?,
                action: parse_field(t.req_str("action")?, "action", Action::parse)?,
                author: t.req_str("author")?,
                role: parse_field(t.req_str("role")?, "role", Role::parse)?,
                from: parse_field(t.req_str("from")?, "status", Status::parse)?,
                from_level: parse_field(t.req_str("from_level")?, "level", Level::parse)?,
                to: parse_field(t.req_str("to")?, "status", Status::parse)?,
                to_level: parse_field(t.req_str("to_level")?, "level", Level::parse)?,
                reason: t.opt_str("reason")?.unwrap_or_default(),
                dept: t.opt_str("dept")?,
                units: t
                    .opt_str("units")?
                    .map(|u| u.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect())
                    .unwrap_or_default(),
                at: t.opt_int("at")?.unwrap_or(0),
                applied: false,
            })
        })
        .collect()
}

/// Materializes a report document into its view. Pure and deterministic.
pub fn materialize_report(doc: &AutoCommit) -> Result<ReportView, DocError> {
    if req_str(doc, &ROOT, "kind")? != "report" {
        return Err(layout("not a report document"));
    }
    let authors = read_authors(doc)?;
    let mut r = Resolver::new(doc, &authors);
    let lww = Rule::LwwAuthority;
    let category =
        r.string(&ROOT, "category", "category", lww)?.ok_or_else(|| layout("category is missing"))?;
    let category = parse_field(category, "category", Category::parse)?;
    let title = r.string(&ROOT, "title", "title", lww)?.unwrap_or_default();
    let urgency = r
        .string(&ROOT, "urgency", "urgency", Rule::UrgencyMax)?
        .ok_or_else(|| layout("urgency is missing"))?;
    let urgency = parse_field(urgency, "urgency", Urgency::parse)?;
    for key in ["location", "parties", "description", "notes", "attachments", "transitions"] {
        object_conflict(doc, &ROOT, key, &authors, &mut r.conflicts)?;
    }
    let loc = map_at(doc, &ROOT, "location")?;
    let location = Location {
        lat: r.number(&loc, "lat", "location.lat")?,
        lon: r.number(&loc, "lon", "location.lon")?,
        address: r.string(&loc, "address", "location.address", lww)?,
    };
    let parties_obj = map_at(doc, &ROOT, "parties")?;
    let people = list_at(doc, &parties_obj, "people")?;
    let parties = read_people(doc, &people)?;
    let head_count = r.int(&parties_obj, "head_count", "parties.head_count")?;
    let mut conflicts = r.conflicts;
    let notes_obj = list_at(doc, &ROOT, "notes")?;
    let notes = list_maps(doc, &notes_obj)?
        .into_iter()
        .map(|n| {
            let n = Fields::read(doc, &n);
            Ok(Note {
                id: n.req_str("id")?,
                author: n.req_str("author")?,
                role: parse_field(n.req_str("role")?, "role", Role::parse)?,
                at: n.opt_int("at")?.unwrap_or(0),
                text: n.req_str("text")?,
                record: n.opt_str("record")?.map(|r| parse_field(r, "record", Record::parse)).transpose()?,
                unit: n.opt_str("unit")?,
                order: n.opt_str("order")?,
                result: n.opt_str("result")?,
                until: n.opt_int("until")?,
            })
        })
        .collect::<Result<Vec<_>, DocError>>()?;
    let att_obj = list_at(doc, &ROOT, "attachments")?;
    let attachments = list_maps(doc, &att_obj)?
        .into_iter()
        .map(|a| {
            let a = Fields::read(doc, &a);
            Ok(Attachment {
                sha256: a.req_str("sha256")?,
                mime: a.req_str("mime")?,
                size: a.opt_int("size")?.unwrap_or(0).max(0) as u64,
                name: a.opt_str("name")?.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, DocError>>()?;
    let mut transitions = read_transitions(doc)?;
    let settled = settled_orders(&transitions, &notes);
    let folded = fold_with(&transitions, &settled, &failed_orders(&notes));
    for t in &mut transitions {
        t.applied = folded.applied.contains(&t.id);
    }
    lifecycle_conflicts(&folded, &transitions, &mut conflicts);
    Ok(ReportView {
        id: req_str(doc, &ROOT, "id")?,
        grid: req_str(doc, &ROOT, "grid")?,
        town: req_str(doc, &ROOT, "town")?,
        reporter: req_str(doc, &ROOT, "reporter")?,
        created_at: opt_int(doc, &ROOT, "created_at")?.unwrap_or(0),
        category,
        category_zh: category.label_zh().to_string(),
        title,
        description: text_at(doc, &ROOT, "description")?,
        urgency,
        location,
        anonymous: opt_bool(doc, &ROOT, "anonymous")?,
        corrected_parties: corrected_parties(&parties),
        parties,
        head_count,
        notes,
        attachments,
        status: folded.status,
        level: folded.level,
        tip: folded.tip,
        transitions,
        conflicts,
        authors,
    })
}

/// Where each recorded transition was written: its id → the (Lamport counter, actor) of the op that
/// created its map. The server uses it to find the change behind a transition.
pub fn transition_origins(doc: &AutoCommit) -> Result<BTreeMap<String, (u64, ActorId)>, DocError> {
    let list = list_at(doc, &ROOT, "transitions")?;
    let mut out = BTreeMap::new();
    for obj in list_maps(doc, &list)? {
        if let automerge::ObjId::Id(counter, actor, _) = &obj {
            out.insert(req_str(doc, &obj, "id")?, (*counter, actor.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parties_stay_out_of_the_report_and_the_head_count_follows_them_until_set_by_hand() {
        let author = Author { user: "w".into(), role: Role::GridWorker, at: 1 };
        let new = NewReport {
            anonymous: false,
            id: uuid::Uuid::from_u128(1),
            grid: "G".into(),
            town: "T".into(),
            category: Category::Dispute,
            title: "t".into(),
            description: String::new(),
            urgency: Urgency::Normal,
            location: Location::default(),
            parties: vec![Party { name: "张三".into(), contact: Some("13800000000".into()) }],
        };
        let d = create_report(ActorId::from([1u8; 16]), &author, &new).unwrap();
        let v = materialize_report(&d).unwrap();
        assert_eq!((v.parties.len(), v.head_count), (0, Some(1)), "the name is not in the report");
        assert_eq!(following_head_count(Some(1), 1, 2), Some(2), "follows the list");
        assert_eq!(following_head_count(None, 0, 1), Some(1));
        assert_eq!(following_head_count(Some(10), 2, 3), None, "a count set by hand stays");
        assert_eq!(following_head_count(Some(2), 2, 2), None, "a correction changes nothing");
    }
}
