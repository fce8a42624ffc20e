//! Write validation: whether the difference between a document before and after some changes is
//! allowed for the author's role and scope. The server checks every push with it; the client checks
//! before it writes, so a grid worker is told at once instead of at the next sync.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::doc::Authors;
use crate::lifecycle::{Action, Level, Status, Transition};
use crate::org::{Org, Principal, Role};
use crate::parties::PartiesView;
use crate::patrol::PatrolView;
use crate::policy::{CloseNeed, ClosedLoop};
use crate::report::{Note, PartyEntry, Record, ReportView, SUPERVISION_LEVELS, VISIT_RESULTS};

/// Why a write was refused. `code()` is the stable name on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Refusal {
    /// Where the document is stays unsaid: a device learns nothing about documents outside its scope.
    #[error("the document is outside your scope")]
    OutOfScope,
    #[error("the grid is not in the organisation")]
    UnknownGrid { grid: String },
    #[error("the grid belongs to another town than the one the document names")]
    WrongTown { grid: String, expected: String, given: String },
    #[error("{field} is fixed when the document is created and cannot change")]
    ImmutableField { field: String },
    #[error("the role {role} cannot {what}")]
    RoleCannot { role: String, what: String },
    #[error("{what} must be written in your own name ({user})")]
    NotYourName { what: String, user: String },
    #[error("existing {what} cannot be changed or removed")]
    HistoryRewritten { what: String },
    #[error("{action} is not allowed from {from} at {level} level for {role}")]
    TransitionNotAllowed { action: String, from: String, level: String, role: String },
    #[error("a transition does not follow from the transition it names as its parent")]
    TransitionOutOfOrder { id: String },
    #[error("a transition does not follow the latest transition its author's copy held")]
    TransitionNotFromLatest { id: String },
    #[error("a dispatch must name the department it goes to")]
    NoDepartment,
    #[error("{record} is not allowed here: {why}")]
    RecordNotAllowed { record: String, why: String },
    #[error(
        "a reopen needs the reason and comes within the county's reopen window (30 days by default) of the close"
    )]
    ReopenNotAllowed,
    #[error("the report cannot be closed yet; missing: {missing}")]
    CloseRequirementsUnmet { missing: String },
    #[error("this report's live order is not your unit's (it was never sent to you, or it has ended)")]
    NotYourOrder,
    #[error("the dispatch names a handling unit the organisation does not have")]
    UnknownUnit,
    #[error("the dispatch names a handling unit that does not serve this report's town")]
    UnitOutOfReach,
    #[error("the dispatch names the same handling unit twice")]
    DuplicateUnit,
    #[error("a report holds at most {max} {what}")]
    TooMany { what: String, max: usize },
    #[error("{name} holds this item in the queue; ask them, or wait until their claim runs out")]
    ClaimedByAnother { name: String },
    #[error("{action} needs its reason")]
    ReasonRequired { action: String },
    #[error("parties (names and contacts) go in the report's parties document, not in the report")]
    PartiesInReport,
    #[error("the report is {status}; only notes can be added")]
    ReportFinished { status: String },
    #[error("the document layout is invalid: {message}")]
    Malformed { message: String },
    /// The value itself is never repeated: it may be personal data.
    #[error("{field} is longer than {max} characters; shorten it")]
    TooLong { field: String, max: usize },
    #[error(
        "a contact must be a mainland Chinese phone number: a mobile number of 11 digits starting with 1 (a +86 or 86 prefix, spaces and dashes are fine), or a landline with its area code, such as 010-12345678 or 0571-8765432"
    )]
    BadContact,
    #[error(
        "the position is not inside the county's bounds (or not a position on Earth); check the latitude and longitude"
    )]
    OutsideCounty,
    /// A time a device wrote is more than a day ahead of the server's clock. The value is not
    /// repeated.
    #[error(
        "{field} carries a time more than a day ahead of the server's clock; check the device's date and time"
    )]
    ImplausibleTime { field: String },
}

impl Refusal {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::OutOfScope => "out_of_scope",
            Refusal::UnknownGrid { .. } => "unknown_grid",
            Refusal::WrongTown { .. } => "wrong_town",
            Refusal::ImmutableField { .. } => "immutable_field",
            Refusal::RoleCannot { .. } => "role_cannot",
            Refusal::NotYourName { .. } => "not_your_name",
            Refusal::HistoryRewritten { .. } => "history_rewritten",
            Refusal::TransitionNotAllowed { .. } => "transition_not_allowed",
            Refusal::TransitionOutOfOrder { .. } => "transition_out_of_order",
            Refusal::TransitionNotFromLatest { .. } => "transition_not_from_latest",
            Refusal::NoDepartment => "no_department",
            Refusal::UnknownUnit => "unknown_unit",
            Refusal::NotYourOrder => "not_your_order",
            Refusal::RecordNotAllowed { .. } => "record_not_allowed",
            Refusal::CloseRequirementsUnmet { .. } => "close_requirements_unmet",
            Refusal::ReopenNotAllowed => "reopen_not_allowed",
            Refusal::UnitOutOfReach => "unit_out_of_reach",
            Refusal::DuplicateUnit => "duplicate_unit",
            Refusal::TooMany { .. } => "too_many",
            Refusal::ClaimedByAnother { .. } => "claimed",
            Refusal::ReportFinished { .. } => "report_finished",
            Refusal::PartiesInReport => "parties_in_report",
            Refusal::ReasonRequired { .. } => "reason_required",
            Refusal::Malformed { .. } => "malformed",
            Refusal::TooLong { .. } => "too_long",
            Refusal::BadContact => "bad_contact",
            Refusal::OutsideCounty => "outside_county",
            Refusal::ImplausibleTime { .. } => "implausible_time",
        }
    }
}

/// Most characters (Unicode scalar values, not bytes) in the texts people type. The server refuses
/// longer new values with [`Refusal::TooLong`]; the client checks the same before it writes.
pub mod limits {
    /// A report's title.
    pub const MAX_TITLE_CHARS: usize = 200;
    /// The reason given with a transition (escalate, resolve, reject, …).
    pub const MAX_REASON_CHARS: usize = 1_000;
    /// One note.
    pub const MAX_NOTE_CHARS: usize = 4_000;
    /// A report's description; also a patrol's whole narrative.
    pub const MAX_DESCRIPTION_CHARS: usize = 20_000;
    /// A device label.
    pub const MAX_LABEL_CHARS: usize = 64;
    /// A person's name: parties, users, patrol companions.
    pub const MAX_NAME_CHARS: usize = 64;
    /// An address; also a check-in place and a visited household.
    pub const MAX_ADDRESS_CHARS: usize = 200;
    /// The department a report is dispatched to.
    pub const MAX_DEPT_CHARS: usize = 64;
    /// An id written into a document by hand (a patrol's findings name report ids).
    pub const MAX_ID_CHARS: usize = 64;
}

pub use limits::*;

/// Most handling units (lead plus assisting) one dispatch may name.
pub const MAX_DISPATCH_UNITS: usize = 10;

/// Most people a report's head count may name.
pub const MAX_HEAD_COUNT: i64 = 100_000;

/// How far ahead of the server's clock a device's time may be (clock drift, time zones set wrong).
pub const MAX_AHEAD_MS: i64 = 86_400_000;

/// Refuses device-written times that are new in `after` and more than a day ahead of the server's
/// clock `now` (a phone set to next month). Times in the past are accepted, however old: a device
/// offline for months writes old times, and deadlines and indicators count from the server's
/// receive times, so a wrong past time misleads no one; the view keeps what the device said.
pub fn check_times(before: Option<&ReportView>, after: &ReportView, now: i64) -> Result<(), Refusal> {
    let bad = |t: i64| t > now.saturating_add(MAX_AHEAD_MS);
    if before.is_none() && bad(after.created_at) {
        return Err(Refusal::ImplausibleTime { field: "created_at".into() });
    }
    let known_notes: BTreeSet<&str> =
        before.map(|b| b.notes.iter().map(|n| n.id.as_str()).collect()).unwrap_or_default();
    if after.notes.iter().any(|n| !known_notes.contains(n.id.as_str()) && bad(n.at)) {
        return Err(Refusal::ImplausibleTime { field: "a note's time".into() });
    }
    let known: BTreeSet<&str> =
        before.map(|b| b.transitions.iter().map(|t| t.id.as_str()).collect()).unwrap_or_default();
    if after.transitions.iter().any(|t| !known.contains(t.id.as_str()) && bad(t.at)) {
        return Err(Refusal::ImplausibleTime { field: "a transition's time".into() });
    }
    Ok(())
}

/// Refuses `value` when it has more than `max_chars` characters. The refusal names `field` and the
/// limit, never the value.
pub fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), Refusal> {
    // Counting stops one past the limit: a huge value costs no more than a short one.
    if value.chars().take(max_chars.saturating_add(1)).count() > max_chars {
        return Err(Refusal::TooLong { field: field.into(), max: max_chars });
    }
    Ok(())
}

/// Accepts a mainland Chinese phone number: a mobile (11 digits starting with 1, second digit 3–9,
/// optionally prefixed +86 or 86; spaces and dashes anywhere are ignored) or a landline (area code
/// 0 plus 2–3 digits, then 7–8 digits; optionally one '-' between them). Refuses anything else with
/// [`Refusal::BadContact`], whose message never repeats the value.
pub fn check_contact(contact: &str) -> Result<(), Refusal> {
    if contact.chars().count() > 32 {
        return Err(Refusal::BadContact);
    }
    let compact: String = contact.chars().filter(|c| !c.is_whitespace()).collect();
    if is_mobile(&compact) || is_landline(&compact) { Ok(()) } else { Err(Refusal::BadContact) }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_mobile(s: &str) -> bool {
    let digits: String = s.chars().filter(|&c| c != '-').collect();
    let number = digits
        .strip_prefix("+86")
        .or_else(|| digits.strip_prefix("86").filter(|rest| rest.len() == 11))
        .unwrap_or(&digits);
    let b = number.as_bytes();
    number.len() == 11 && all_digits(number) && b[0] == b'1' && (b'3'..=b'9').contains(&b[1])
}

fn is_landline(s: &str) -> bool {
    let area_ok = |a: &str| {
        (3..=4).contains(&a.len()) && all_digits(a) && a.starts_with('0') && !a[1..].starts_with('0')
    };
    let local_ok = |l: &str| (7..=8).contains(&l.len()) && all_digits(l) && !l.starts_with('0');
    match s.split_once('-') {
        Some((area, local)) => area_ok(area) && local_ok(local),
        // Without a dash any split into an area code and a local number will do.
        None => all_digits(s) && (3..=4).any(|n| s.len() > n && area_ok(&s[..n]) && local_ok(&s[n..])),
    }
}

/// Refuses a position that is not finite, not on Earth, or outside the county's bounding box (when
/// the county has one) with [`Refusal::OutsideCounty`].
pub fn check_location(org: &Org, lat: f64, lon: f64) -> Result<(), Refusal> {
    let on_earth = lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon);
    if on_earth && org.contains_point(lat, lon) { Ok(()) } else { Err(Refusal::OutsideCounty) }
}

/// A position of which either coordinate may be missing: both present are checked against the
/// county; one alone must still be a finite coordinate on Earth.
fn check_partial_location(org: &Org, lat: Option<f64>, lon: Option<f64>) -> Result<(), Refusal> {
    match (lat, lon) {
        (Some(lat), Some(lon)) => check_location(org, lat, lon),
        (Some(lat), None) if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) => {
            Err(Refusal::OutsideCounty)
        }
        (None, Some(lon)) if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) => {
            Err(Refusal::OutsideCounty)
        }
        _ => Ok(()),
    }
}

/// The entries of `after` that `before` does not hold (as a multiset), in `after`'s order. Unlike
/// [`appended`] this never refuses: it only finds what is new.
fn added<'a, T, K: Ord>(before: &[T], after: &'a [T], key: impl Fn(&T) -> K) -> Vec<&'a T> {
    let mut counts: std::collections::BTreeMap<K, usize> = std::collections::BTreeMap::new();
    for b in before {
        *counts.entry(key(b)).or_default() += 1;
    }
    after
        .iter()
        .filter(|a| match counts.get_mut(&key(a)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect()
}

/// Lengths, contacts and positions of what a report write adds or changes. Values already stored
/// are not checked again, so an old value over a newer limit never blocks an unrelated edit.
fn check_report_values(org: &Org, before: Option<&ReportView>, after: &ReportView) -> Result<(), Refusal> {
    fn changed(before: Option<&ReportView>, differs: impl FnOnce(&ReportView) -> bool) -> bool {
        before.is_none_or(differs)
    }
    if changed(before, |b| b.title != after.title) {
        check_text("the title", &after.title, MAX_TITLE_CHARS)?;
    }
    if changed(before, |b| b.description != after.description) {
        check_text("the description", &after.description, MAX_DESCRIPTION_CHARS)?;
    }
    if changed(before, |b| b.location.address != after.location.address)
        && let Some(a) = &after.location.address
    {
        check_text("the address", a, MAX_ADDRESS_CHARS)?;
    }
    if changed(before, |b| b.location.lat != after.location.lat || b.location.lon != after.location.lon) {
        check_partial_location(org, after.location.lat, after.location.lon)?;
    }
    if changed(before, |b| b.head_count != after.head_count)
        && after.head_count.is_some_and(|n| !(0..=MAX_HEAD_COUNT).contains(&n))
    {
        return Err(Refusal::Malformed {
            message: format!("the head count must be between 0 and {MAX_HEAD_COUNT}"),
        });
    }
    let no_notes = Vec::new();
    for n in added(before.map_or(&no_notes, |b| &b.notes), &after.notes, |n| n.id.clone()) {
        check_text("a note", &n.text, MAX_NOTE_CHARS)?;
    }
    let no_ts = Vec::new();
    for t in added(before.map_or(&no_ts, |b| &b.transitions), &after.transitions, |t| t.id.clone()) {
        check_text("the reason", &t.reason, MAX_REASON_CHARS)?;
        if let Some(d) = &t.dept {
            check_text("the department", d, MAX_DEPT_CHARS)?;
        }
    }
    Ok(())
}

/// Lengths and positions of what a patrol write adds or changes.
fn check_patrol_values(org: &Org, before: Option<&PatrolView>, after: &PatrolView) -> Result<(), Refusal> {
    let b = before;
    let none_s: Vec<String> = Vec::new();
    for c in added(b.map_or(&none_s, |b| &b.companions), &after.companions, Clone::clone) {
        check_text("a companion's name", c, MAX_NAME_CHARS)?;
    }
    for f in added(b.map_or(&none_s, |b| &b.findings), &after.findings, Clone::clone) {
        check_text("a finding", f, MAX_ID_CHARS)?;
    }
    let none_c = Vec::new();
    let checkin_key = |c: &crate::patrol::CheckIn| {
        (c.place.clone(), c.lat.map(f64::to_bits), c.lon.map(f64::to_bits), c.at)
    };
    for c in added(b.map_or(&none_c, |b| &b.checkins), &after.checkins, checkin_key) {
        check_text("a check-in place", &c.place, MAX_ADDRESS_CHARS)?;
        check_partial_location(org, c.lat, c.lon)?;
    }
    let none_v = Vec::new();
    for v in added(b.map_or(&none_v, |b| &b.visits), &after.visits, |v| (v.household.clone(), v.at)) {
        check_text("a household", &v.household, MAX_ADDRESS_CHARS)?;
    }
    let none_t = Vec::new();
    let point_key = |p: &crate::patrol::TrackPoint| (p.lat.to_bits(), p.lon.to_bits(), p.at);
    for p in added(b.map_or(&none_t, |b| &b.track), &after.track, point_key) {
        check_location(org, p.lat, p.lon)?;
    }
    if b.is_none_or(|b| b.narrative != after.narrative) {
        check_text("the narrative", &after.narrative, MAX_DESCRIPTION_CHARS)?;
    }
    Ok(())
}

/// The writer of a batch of changes: a principal and the Automerge actors of its device.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    pub who: &'a Principal,
    /// Actor ids (hex) registered to the pushing device.
    pub actors: &'a BTreeSet<String>,
}

fn role_cannot(role: Role, what: &str) -> Refusal {
    Refusal::RoleCannot { role: role.as_str().into(), what: what.into() }
}

/// The grid and town must exist, match each other, and be in the writer's scope.
fn check_place(org: &Org, who: &Principal, grid: &str, town: &str) -> Result<(), Refusal> {
    let expected = org.town_of(grid).ok_or_else(|| Refusal::UnknownGrid { grid: grid.into() })?;
    if expected != town {
        return Err(Refusal::WrongTown { grid: grid.into(), expected: expected.into(), given: town.into() });
    }
    if !who.scope.covers(grid, town) {
        return Err(Refusal::OutOfScope);
    }
    Ok(())
}

/// New author entries may only register the writer's own actors, in the writer's name and role.
fn check_authors(before: Option<&Authors>, after: &Authors, w: &Writer<'_>) -> Result<(), Refusal> {
    if let Some(before) = before {
        for (actor, info) in before {
            if after.get(actor) != Some(info) {
                return Err(Refusal::HistoryRewritten { what: "author entries".into() });
            }
        }
    }
    for (actor, info) in after {
        if before.is_some_and(|b| b.contains_key(actor)) {
            continue;
        }
        if !w.actors.contains(actor) || info.user != w.who.user || info.role != w.who.role {
            return Err(Refusal::NotYourName { what: "an author entry".into(), user: w.who.user.clone() });
        }
    }
    Ok(())
}

/// A writer must be on record under `authors` (in its first change, or before): otherwise its
/// values would silently lose every authority-ranked merge as an unknown writer's. Checked after
/// every other rule, so a write that breaks one of those is told which.
fn check_registered(after: &Authors, w: &Writer<'_>) -> Result<(), Refusal> {
    if !w.actors.iter().any(|a| after.contains_key(a)) {
        return Err(Refusal::NotYourName {
            what: "your first change to a document (register your actor under authors)".into(),
            user: w.who.user.clone(),
        });
    }
    Ok(())
}

/// Every entry of `before` must still be in `after`; returns the entries `after` adds.
fn appended<'a, T: PartialEq>(before: &[T], after: &'a [T], what: &str) -> Result<Vec<&'a T>, Refusal> {
    let mut used = vec![false; after.len()];
    for b in before {
        let slot = after.iter().enumerate().position(|(i, a)| !used[i] && a == b);
        match slot {
            Some(i) => used[i] = true,
            None => return Err(Refusal::HistoryRewritten { what: what.into() }),
        }
    }
    Ok(after.iter().zip(used).filter(|(_, u)| !u).map(|(a, _)| a).collect())
}

/// Transitions compared without the fold's `applied` flag, which is derived, not written.
fn recorded(ts: &[Transition]) -> Vec<Transition> {
    ts.iter().map(|t| Transition { applied: false, ..t.clone() }).collect()
}

/// Bounds on a report's lists: far above real use, low enough that no push can make a report
/// expensive to check or to fold.
pub const MAX_TRANSITIONS: usize = 500;
pub const MAX_NOTES: usize = 5_000;
pub const MAX_PARTIES: usize = 500;
pub const MAX_ATTACHMENTS: usize = 500;

/// Checks a report write: `before` is `None` when the changes create the report.
pub fn check_report(
    org: &Org,
    rules: &ClosedLoop,
    w: &Writer<'_>,
    before: Option<&ReportView>,
    after: &ReportView,
) -> Result<(), Refusal> {
    check_report_rules(org, rules, w, before, after)?;
    check_registered(&after.authors, w)
}

fn check_report_rules(
    org: &Org,
    rules: &ClosedLoop,
    w: &Writer<'_>,
    before: Option<&ReportView>,
    after: &ReportView,
) -> Result<(), Refusal> {
    for (what, len, max) in [
        ("transitions", after.transitions.len(), MAX_TRANSITIONS),
        ("notes", after.notes.len(), MAX_NOTES),
        ("parties", after.parties.len(), MAX_PARTIES),
        ("attachments", after.attachments.len(), MAX_ATTACHMENTS),
    ] {
        if len > max {
            return Err(Refusal::TooMany { what: what.into(), max });
        }
    }
    let who = w.who;
    if who.role == Role::System && before.is_none() {
        return Err(role_cannot(who.role, "create reports"));
    }
    match who.scope.unit() {
        // A handling unit writes only into a report whose live order is its own; it never
        // creates one.
        Some(unit) => {
            if !before.is_some_and(|b| b.live_units().iter().any(|u| u == unit)) {
                return Err(Refusal::NotYourOrder);
            }
        }
        None => check_place(org, who, &after.grid, &after.town)?,
    }
    check_authors(before.map(|b| &b.authors), &after.authors, w)?;
    match before {
        None => {
            if after.reporter != who.user {
                return Err(Refusal::NotYourName { what: "the reporter".into(), user: who.user.clone() });
            }
        }
        Some(b) => {
            let fixed = [
                ("id", b.id == after.id),
                ("grid", b.grid == after.grid),
                ("town", b.town == after.town),
                ("reporter", b.reporter == after.reporter),
                ("created_at", b.created_at == after.created_at),
                ("anonymous", b.anonymous == after.anonymous),
            ];
            check_fixed(&fixed)?;
            let fields_changed = b.title != after.title
                || b.description != after.description
                || b.category != after.category
                || b.urgency != after.urgency
                || b.location != after.location
                || b.parties != after.parties
                || b.head_count != after.head_count
                || b.attachments != after.attachments;
            if fields_changed {
                if matches!(who.role, Role::System | Role::UnitHandler) {
                    return Err(role_cannot(who.role, "edit report fields"));
                }
                if matches!(b.status, Status::Closed | Status::Cancelled) {
                    return Err(Refusal::ReportFinished { status: b.status.to_string() });
                }
            }
        }
    }
    // Personal data is append-only: a party or an attachment once recorded stays as it was. A
    // correction is a new entry; the old one stays in the history. New parties go in the parties
    // document, which only the roles that need them receive; older reports keep theirs.
    if let Some(b) = before {
        appended(&b.parties, &after.parties, "parties")?;
        appended(&b.attachments, &after.attachments, "attachments")?;
    }
    if after.parties.len() > before.map_or(0, |b| b.parties.len()) {
        return Err(Refusal::PartiesInReport);
    }
    let no_notes = Vec::new();
    let new_notes = appended(before.map_or(&no_notes, |b| &b.notes), &after.notes, "notes")?;
    for n in new_notes {
        if n.author != who.user || n.role != who.role {
            return Err(Refusal::NotYourName { what: "a note".into(), user: who.user.clone() });
        }
        if let Some(record) = n.record {
            check_record(who, before, n, record)?;
        }
    }
    let before_ts = before.map(|b| recorded(&b.transitions)).unwrap_or_default();
    let after_ts = recorded(&after.transitions);
    let new_ts = appended(&before_ts, &after_ts, "transitions")?;
    let ids: BTreeSet<&str> = after_ts.iter().map(|t| t.id.as_str()).collect();
    if ids.len() != after_ts.len() {
        return Err(Refusal::HistoryRewritten { what: "transition ids".into() });
    }
    // Orders every named unit has replied to left the report resolved (see `fold_with`).
    let settled = crate::report::settled_orders(&after.transitions, &after.notes);
    for t in new_ts {
        check_transition(who, t, &after_ts, &settled)?;
        check_units(org, &after.town, t)?;
        check_loop(rules, who, t, after)?;
    }
    check_report_values(org, before, after)
}

/// A closed-loop record is written by the right person about the report's current order: a unit
/// signs for and replies to its live order; the grid's worker checks a result reached above the
/// grid; an operator records the return visit.
fn check_record(
    who: &Principal,
    before: Option<&ReportView>,
    n: &Note,
    record: Record,
) -> Result<(), Refusal> {
    let no = |why: &str| Refusal::RecordNotAllowed { record: record.as_str().into(), why: why.into() };
    let Some(b) = before else { return Err(no("the report does not exist yet")) };
    if n.order.as_deref() != Some(b.tip.as_str()) {
        return Err(no("it is not about the report's current step (sync, then record it again)"));
    }
    match record {
        Record::Sign | Record::Reply => {
            if who.role != Role::UnitHandler || n.unit.as_deref() != who.scope.unit() {
                return Err(no("only the handling unit of the order signs and replies, in its own name"));
            }
            if record == Record::Reply && n.text.trim().is_empty() {
                return Err(no("a reply states the result"));
            }
        }
        Record::Verify => {
            if who.role != Role::GridWorker {
                return Err(no("the grid's worker checks the result"));
            }
            if b.status != Status::Resolved || b.level == Level::Grid {
                return Err(no("only a result reached above the grid is checked"));
            }
            if !matches!(n.result.as_deref(), Some("pass" | "fail")) {
                return Err(no("a check is pass or fail"));
            }
        }
        Record::Extend => {
            if who.role != Role::UnitHandler || b.status != Status::Dispatched {
                return Err(no("the handling unit asks for more time on its live order"));
            }
            let order_at = b.transitions.iter().find(|t| t.id == b.tip).map_or(0, |t| t.at);
            if n.until.is_none_or(|u| u <= order_at) || n.text.trim().is_empty() {
                return Err(no("an extension names a later deadline and the reason"));
            }
        }
        Record::Extension => {
            if !matches!(who.role, Role::TownOperator | Role::CountyOperator) {
                return Err(no("the dispatcher decides extensions"));
            }
            if crate::report::extension_state(&b.notes, &b.tip).0.is_none() {
                return Err(no("no extension is waiting for a decision"));
            }
            if !matches!(n.result.as_deref(), Some("approve" | "deny")) {
                return Err(no("an extension is approved or denied"));
            }
        }
        Record::Waive => {
            if who.role != Role::CountyOperator {
                return Err(no("a county operator waives the grid's check"));
            }
            if b.status != Status::Resolved || b.level == Level::Grid || n.text.trim().is_empty() {
                return Err(no("a waiver is for a result reached above the grid, with the reason"));
            }
        }
        Record::Review => {
            if !matches!(who.role, Role::TownOperator | Role::CountyOperator) {
                return Err(no("the town reviews a grid's own settlement"));
            }
            if b.status != Status::Resolved || b.level != Level::Grid {
                return Err(no("only a settlement made in the grid is reviewed"));
            }
            if !matches!(n.result.as_deref(), Some("confirm" | "return")) {
                return Err(no("a review confirms or returns"));
            }
        }
        Record::Supervise => {
            if !matches!(who.role, Role::CountyOperator | Role::System) {
                return Err(no("the county supervises (督办)"));
            }
            if matches!(b.status, Status::Closed | Status::Cancelled) {
                return Err(no("a finished report is not supervised"));
            }
            if !n.result.as_deref().is_some_and(|r| SUPERVISION_LEVELS.contains(&r))
                || n.text.trim().is_empty()
            {
                return Err(no("a supervision order is yellow or red, with what it asks"));
            }
        }
        Record::Answer => {
            if b.open_supervision().is_none() {
                return Err(no("no supervision order waits for an answer"));
            }
            let holder = match b.level {
                Level::Grid => who.role == Role::GridWorker,
                Level::Town => who.role == Role::TownOperator,
                Level::County => who.role == Role::CountyOperator,
            } || (who.role == Role::UnitHandler
                && who.scope.unit().is_some_and(|u| b.live_units().iter().any(|l| l == u)));
            if !holder || n.text.trim().is_empty() {
                return Err(no("the holder of the step answers the supervision, in words"));
            }
        }
        Record::Remind => {
            if who.role != Role::System || n.text.trim().is_empty() {
                return Err(no("reminders are the server's"));
            }
        }
        Record::Visit => {
            if !matches!(who.role, Role::TownOperator | Role::CountyOperator) {
                return Err(no("the hub records return visits"));
            }
            if !matches!(b.status, Status::Resolved | Status::Closed) {
                return Err(no("a return visit follows the result"));
            }
            if !n.result.as_deref().is_some_and(|r| VISIT_RESULTS.contains(&r)) {
                return Err(no("a visit's result is satisfied, basically_satisfied, unsatisfied, \
                     unreachable or not_applicable"));
            }
            if n.result.as_deref() == Some("not_applicable") && !b.anonymous {
                return Err(no("only an anonymous report has nobody to call back"));
            }
        }
    }
    Ok(())
}

/// The closed loop's gates on transitions: a result reached above the grid closes only after the
/// grid's check passed and the resident was called back (an unsatisfied visit needs the close's
/// written explanation); a grid worker's rework follows their own failed check.
fn check_loop(
    rules: &ClosedLoop,
    who: &Principal,
    t: &Transition,
    after: &ReportView,
) -> Result<(), Refusal> {
    if needs_reason(t.action, t.from_level) && t.reason.trim().is_empty() {
        return Err(Refusal::ReasonRequired { action: t.action.as_str().into() });
    }
    if t.action == Action::Close {
        check_close(after, &t.parent, t.from_level, &t.reason, rules.close_needs(after.category))?;
    }
    if t.action == Action::Reopen {
        let closed_at = after.transitions.iter().find(|p| p.id == t.parent).map_or(0, |p| p.at);
        if t.reason.trim().is_empty() || t.at.saturating_sub(closed_at) > rules.reopen_within_ms() {
            return Err(Refusal::ReopenNotAllowed);
        }
    }
    if t.action == Action::Rework
        && who.role == Role::GridWorker
        && !after
            .records_on(&t.parent, Record::Verify)
            .any(|n| n.result.as_deref() == Some("fail") && n.author == who.user)
    {
        return Err(role_cannot(who.role, "send a result back without a failed check"));
    }
    Ok(())
}

/// Whether `action` taken at `level` must cite its reason: a deliberate call upward from the
/// town, the county's return of it, a take-over (a reopen has its own rule, `reopen_not_allowed`).
pub fn needs_reason(action: Action, level: Level) -> bool {
    matches!(
        (action, level),
        (Action::Escalate, Level::Town | Level::County) | (Action::Reject, Level::County)
    ) || action == Action::TakeOver
}

/// What a close of a result reached above the grid still lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseGap {
    /// The grid's check failed: the report must be reworked first.
    FailedCheck,
    /// No passing check and no county operator's waiver.
    Check,
    /// No return visit.
    Visit,
    /// Every visit was unsatisfied and the close gives no written explanation.
    Explanation,
}

impl CloseGap {
    /// The gap in words (English, as the server's refusal message says it).
    pub fn describe(self) -> &'static str {
        match self {
            CloseGap::FailedCheck => "a passing check (the grid's check failed: rework first)",
            CloseGap::Check => "the grid's check (field report verify), or a county operator's waiver",
            CloseGap::Visit => "a return visit (field queue visit)",
            CloseGap::Explanation => "a written explanation for closing over an unsatisfied visit (--note)",
        }
    }
}

/// What a report resolved by `order` at `level` lacks to close with `reason` (the client's
/// pre-check and the server's rule), given what its category `needs` (the policy): above the
/// grid, the grid's check passed and a return visit is recorded, and an unsatisfied visit needs a
/// written explanation. A county operator's waiver (with its reason) stands in for the check; a
/// failed check never does, whatever the category needs.
pub fn close_gaps(
    v: &ReportView,
    order: &str,
    level: Level,
    reason: &str,
    needs: &[CloseNeed],
) -> Vec<CloseGap> {
    let mut missing = Vec::new();
    if level == Level::Grid {
        return missing;
    }
    if v.records_on(order, Record::Verify).any(|n| n.result.as_deref() == Some("fail")) {
        missing.push(CloseGap::FailedCheck);
    } else if needs.contains(&CloseNeed::Check)
        && !v.records_on(order, Record::Verify).any(|n| n.result.as_deref() == Some("pass"))
        && v.records_on(order, Record::Waive).next().is_none()
    {
        missing.push(CloseGap::Check);
    }
    let visits: Vec<&Note> = v.records_on(order, Record::Visit).collect();
    if !needs.contains(&CloseNeed::Visit) {
        return missing;
    }
    if visits.is_empty() {
        missing.push(CloseGap::Visit);
    } else if visits.iter().all(|n| n.result.as_deref() == Some("unsatisfied")) && reason.trim().is_empty() {
        missing.push(CloseGap::Explanation);
    }
    missing
}

/// [`close_gaps`] as a refusal.
pub fn check_close(
    v: &ReportView,
    order: &str,
    level: Level,
    reason: &str,
    needs: &[CloseNeed],
) -> Result<(), Refusal> {
    let gaps = close_gaps(v, order, level, reason, needs);
    if gaps.is_empty() {
        return Ok(());
    }
    let missing = gaps.iter().map(|g| g.describe()).collect::<Vec<_>>().join("; ");
    Err(Refusal::CloseRequirementsUnmet { missing })
}

/// The handling units a dispatch names exist, serve the report's town, and appear once each.
fn check_units(org: &Org, town: &str, t: &Transition) -> Result<(), Refusal> {
    if !t.units.is_empty() && t.action != Action::Dispatch {
        return Err(Refusal::Malformed { message: "only a dispatch names handling units".into() });
    }
    if t.units.len() > MAX_DISPATCH_UNITS {
        return Err(Refusal::TooMany {
            what: "handling units in one dispatch".into(),
            max: MAX_DISPATCH_UNITS,
        });
    }
    let mut seen = BTreeSet::new();
    for id in &t.units {
        let unit = org.unit(id).ok_or(Refusal::UnknownUnit)?;
        if !org.unit_serves(unit, town) {
            return Err(Refusal::UnitOutOfReach);
        }
        if !seen.insert(id.as_str()) {
            return Err(Refusal::DuplicateUnit);
        }
    }
    Ok(())
}

fn check_transition(
    who: &Principal,
    t: &Transition,
    all: &[Transition],
    settled: &BTreeSet<String>,
) -> Result<(), Refusal> {
    if t.author != who.user || t.role != who.role {
        return Err(Refusal::NotYourName { what: "a transition".into(), user: who.user.clone() });
    }
    let not_allowed = || Refusal::TransitionNotAllowed {
        action: t.action.to_string(),
        from: t.from.to_string(),
        level: t.from_level.to_string(),
        role: who.role.as_str().into(),
    };
    if t.action.target(t.from, t.from_level) != Some((t.to, t.to_level))
        || !t.action.allowed_for(who.role, t.from_level)
    {
        return Err(not_allowed());
    }
    if t.action == Action::Dispatch && t.dept.as_deref().is_none_or(|d| d.trim().is_empty()) {
        return Err(Refusal::NoDepartment);
    }
    let parent_state = if t.parent.is_empty() {
        Some((Status::Open, Level::Grid))
    } else {
        all.iter().find(|p| p.id == t.parent).map(|p| match settled.contains(&p.id) {
            true => (Status::Resolved, p.to_level),
            false => (p.to, p.to_level),
        })
    };
    if parent_state != Some((t.from, t.from_level)) {
        return Err(Refusal::TransitionOutOfOrder { id: t.id.clone() });
    }
    Ok(())
}

/// Fields fixed at creation, each with whether it kept its value.
fn check_fixed(fixed: &[(&str, bool)]) -> Result<(), Refusal> {
    match fixed.iter().find(|(_, same)| !same) {
        Some((field, _)) => Err(Refusal::ImmutableField { field: (*field).into() }),
        None => Ok(()),
    }
}

/// Names, contacts and corrections a parties write adds.
fn check_new_parties(before: &[PartyEntry], after: &[PartyEntry]) -> Result<(), Refusal> {
    for p in added(before, after, |p| p.clone()) {
        check_text("a party's name", &p.name, MAX_NAME_CHARS)?;
        // A correction names an entry recorded before it, never itself or a later one.
        if let Some(old) = &p.supersedes {
            let earlier = after.iter().take_while(|e| e.id != p.id).any(|e| &e.id == old);
            if !earlier {
                return Err(Refusal::Malformed {
                    message: "a party correction must name an earlier party entry".into(),
                });
            }
        }
        if let Some(c) = &p.contact {
            check_contact(c)?;
        }
    }
    Ok(())
}

/// Checks a write to a report's parties document: the grid's worker and the hubs record parties,
/// in their scope; a volunteer assistant, a handling unit and the server never do (they never
/// hold contacts). Entries are append-only; corrections are new entries.
pub fn check_parties(
    org: &Org,
    w: &Writer<'_>,
    before: Option<&PartiesView>,
    after: &PartiesView,
) -> Result<(), Refusal> {
    let who = w.who;
    if matches!(who.role, Role::GridAssistant | Role::UnitHandler | Role::System) {
        return Err(role_cannot(who.role, "record parties' names and contacts"));
    }
    if after.parties.len() > MAX_PARTIES {
        return Err(Refusal::TooMany { what: "parties".into(), max: MAX_PARTIES });
    }
    check_place(org, who, &after.grid, &after.town)?;
    check_authors(before.map(|b| &b.authors), &after.authors, w)?;
    match before {
        None => {
            if crate::parties::parties_id(&after.report).as_deref() != Some(after.id.as_str()) {
                return Err(Refusal::Malformed {
                    message: "a parties document's id is derived from its report's id".into(),
                });
            }
        }
        Some(b) => {
            let fixed = [
                ("id", b.id == after.id),
                ("report", b.report == after.report),
                ("grid", b.grid == after.grid),
                ("town", b.town == after.town),
            ];
            check_fixed(&fixed)?;
            appended(&b.parties, &after.parties, "parties")?;
        }
    }
    check_new_parties(before.map_or(&[][..], |b| &b.parties), &after.parties)?;
    check_registered(&after.authors, w)
}

/// A new transition must start from what its author's copy had folded to when it was written
/// (`seen`: the report as of the change's dependencies, `None` before the report existed): naming
/// an older parent would let a device rewrite history it had already seen.
pub fn check_transition_seen(t: &Transition, seen: Option<&ReportView>) -> Result<(), Refusal> {
    let (tip, status, level) = match seen {
        Some(v) => (v.tip.as_str(), v.status, v.level),
        None => ("", Status::Open, Level::Grid),
    };
    if t.parent != tip || t.from != status || t.from_level != level {
        return Err(Refusal::TransitionNotFromLatest { id: t.id.clone() });
    }
    Ok(())
}

/// Checks a patrol write: only the patrol's own worker writes it, inside their scope.
pub fn check_patrol(
    org: &Org,
    w: &Writer<'_>,
    before: Option<&PatrolView>,
    after: &PatrolView,
) -> Result<(), Refusal> {
    check_patrol_rules(org, w, before, after)?;
    check_registered(&after.authors, w)
}

fn check_patrol_rules(
    org: &Org,
    w: &Writer<'_>,
    before: Option<&PatrolView>,
    after: &PatrolView,
) -> Result<(), Refusal> {
    let who = w.who;
    if !matches!(who.role, Role::GridWorker | Role::GridAssistant) {
        return Err(role_cannot(who.role, "write patrols"));
    }
    check_place(org, who, &after.grid, &after.town)?;
    check_authors(before.map(|b| &b.authors), &after.authors, w)?;
    if after.worker != who.user {
        return Err(Refusal::NotYourName { what: "a patrol".into(), user: who.user.clone() });
    }
    if let Some(b) = before {
        let fixed = [
            ("id", b.id == after.id),
            ("grid", b.grid == after.grid),
            ("town", b.town == after.town),
            ("worker", b.worker == after.worker),
            ("started_at", b.started_at == after.started_at),
        ];
        check_fixed(&fixed)?;
        appended(&b.checkins, &after.checkins, "check-ins")?;
        appended(&b.visits, &after.visits, "visits")?;
        appended(&b.findings, &after.findings, "findings")?;
        if after.track.len() < b.track.len() {
            return Err(Refusal::HistoryRewritten { what: "the track".into() });
        }
    }
    check_patrol_values(org, before, after)
}

/// Whether `who` may take `action` on a report at `level` in (`grid`, `town`): the client's
/// pre-check before writing, with the same answer the server will give.
pub fn check_action(
    org: &Org,
    who: &Principal,
    action: Action,
    level: Level,
    grid: &str,
    town: &str,
) -> Result<(), Refusal> {
    // A unit's reach is the live order, which the caller checks on the report itself.
    if who.scope.unit().is_none() {
        check_place(org, who, grid, town)?;
    }
    if !action.allowed_for(who.role, level) {
        return Err(role_cannot(who.role, &format!("{action} a report at {level} level")));
    }
    Ok(())
}

/// Most transitions one change may add (a device writes one per change).
pub const MAX_TRANSITIONS_PER_CHANGE: usize = 4;
/// Most transitions one push may add to one report.
pub const MAX_TRANSITIONS_PER_PUSH: usize = 64;
/// Most of one author's transitions a report may hold that the fold did not apply (lost forks
/// and their branches): past it, that author's new transitions are refused, so forged forks
/// cannot fill the report's transition cap and lock the hub out.
pub const MAX_DISCARDED_PER_AUTHOR: usize = 32;
/// Most changes of one document in one push (a client sends at most 5,000 per request).
pub const MAX_CHANGES_PER_DOC_PER_PUSH: usize = 5_000;

/// A transition's id must be `<actor of the change that wrote it>/<n>`: no one can take an id
/// another device will write, nor an id that names another actor.
pub fn check_transition_id(t: &Transition, change_actor_hex: &str) -> Result<(), Refusal> {
    let ok =
        t.id.strip_prefix(change_actor_hex)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|n| !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(Refusal::Malformed {
            message: "a transition's id must be the actor of its change, '/', and a number".into(),
        })
    }
}

/// Refuses a write when `user` holds more than [`MAX_DISCARDED_PER_AUTHOR`] transitions the fold
/// did not apply.
pub fn check_discarded(after: &ReportView, user: &str) -> Result<(), Refusal> {
    let discarded = after.transitions.iter().filter(|t| !t.applied && t.author == user).count();
    if discarded > MAX_DISCARDED_PER_AUTHOR {
        return Err(Refusal::TooMany {
            what: "discarded transitions by one author".into(),
            max: MAX_DISCARDED_PER_AUTHOR,
        });
    }
    Ok(())
}
