//! A report's parties (当事人: names and contacts) in a document of their own, so that the server
//! can serve them only to the roles that need them: the grid's worker, the hubs, and a dispatched
//! handling unit when the report's category needs it (policy `closed_loop.unit_parties`).
//! A volunteer assistant, and a unit whose work does not need them, never hold them.
//!
//! The document's id is derived from the report's (the same UUID with version 8), so any device
//! holding a report knows where its parties live without a lookup.

use automerge::{ActorId, AutoCommit, ObjType, ROOT, transaction::Transactable};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::doc::{
    ActorInfo, Author, DocError, LAYOUT, commit, layout, list_at, list_maps, read_authors, register_author,
    req_str,
};
use crate::report::{
    Party, PartyEntry, corrected_parties, current_party_count, entry_id, push_party, read_people,
};

/// The id of the parties document of report `report` (a UUID): the same bits with version 8, so
/// it never equals a device-made (version 7) report or patrol id. `None` if `report` is not a UUID.
pub fn parties_id(report: &str) -> Option<String> {
    let id = uuid::Uuid::parse_str(report).ok()?;
    let mut bytes = *id.as_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    Some(uuid::Uuid::from_bytes(bytes).to_string())
}

/// The parties of one report as a device sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PartiesView {
    /// This document's id ([`parties_id`] of `report`).
    pub id: String,
    /// The report they belong to.
    pub report: String,
    /// The report's grid and town (the document's scope, fixed at creation).
    pub grid: String,
    pub town: String,
    /// Every entry ever recorded, in list order; corrections are new entries (see [`PartyEntry`]).
    pub parties: Vec<PartyEntry>,
    /// Ids of entries a later entry corrects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrected_parties: Vec<String>,
    pub authors: std::collections::BTreeMap<String, ActorInfo>,
}

impl PartiesView {
    /// The parties no later entry corrects, in list order.
    pub fn current_parties(&self) -> Vec<&PartyEntry> {
        self.parties.iter().filter(|p| !self.corrected_parties.contains(&p.id)).collect()
    }
}

/// Creates the parties document of `report` (in `grid` of `town`) with `parties`, as one change.
pub fn create_parties(
    actor: ActorId,
    author: &Author,
    report: &str,
    grid: &str,
    town: &str,
    parties: &[Party],
) -> Result<AutoCommit, DocError> {
    let id = parties_id(report).ok_or_else(|| DocError::BadInput("the report id is not a UUID".into()))?;
    let mut doc = AutoCommit::new().with_actor(actor);
    doc.put(ROOT, "kind", "parties")?;
    doc.put(ROOT, "layout", LAYOUT)?;
    doc.put(ROOT, "id", id)?;
    doc.put(ROOT, "report", report)?;
    doc.put(ROOT, "grid", grid)?;
    doc.put(ROOT, "town", town)?;
    let people = doc.put_object(ROOT, "people", ObjType::List)?;
    for p in parties {
        push_party(&mut doc, &people, p, None)?;
    }
    doc.put_object(ROOT, "authors", ObjType::Map)?;
    register_author(&mut doc, author)?;
    commit(&mut doc, author, "record parties");
    Ok(doc)
}

/// Appends parties and corrections (`(id of the entry corrected, the corrected party)`) as one
/// change. Returns how many parties are current afterwards, or `None` when nothing was added.
pub fn edit_parties(
    doc: &mut AutoCommit,
    author: &Author,
    add: &[Party],
    correct: &[(String, Party)],
) -> Result<Option<i64>, DocError> {
    if add.is_empty() && correct.is_empty() {
        return Ok(None);
    }
    let people = list_at(doc, &ROOT, "people")?;
    let ids: Vec<String> = list_maps(doc, &people)?.iter().map(entry_id).collect();
    for p in add {
        push_party(doc, &people, p, None)?;
    }
    for (old, p) in correct {
        if !ids.contains(old) {
            return Err(DocError::BadInput("there is no such party to correct".into()));
        }
        push_party(doc, &people, p, Some(old))?;
    }
    register_author(doc, author)?;
    commit(doc, author, "edit parties");
    Ok(Some(current_party_count(doc, &people)?))
}

/// Reads a parties document.
pub fn materialize_parties(doc: &AutoCommit) -> Result<PartiesView, DocError> {
    if req_str(doc, &ROOT, "kind")? != "parties" {
        return Err(layout("not a parties document"));
    }
    let people = list_at(doc, &ROOT, "people")?;
    let parties = read_people(doc, &people)?;
    Ok(PartiesView {
        id: req_str(doc, &ROOT, "id")?,
        report: req_str(doc, &ROOT, "report")?,
        grid: req_str(doc, &ROOT, "grid")?,
        town: req_str(doc, &ROOT, "town")?,
        corrected_parties: corrected_parties(&parties),
        parties,
        authors: read_authors(doc)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::org::Role;

    fn party(name: &str) -> Party {
        Party { name: name.into(), contact: Some("13800000000".into()) }
    }

    #[test]
    fn the_parties_id_is_derived_and_distinct_from_the_report_id() {
        let report = "0190f3a2-7b1c-7def-8abc-0123456789ab";
        let id = parties_id(report).unwrap();
        assert_eq!(id, "0190f3a2-7b1c-8def-8abc-0123456789ab");
        assert_ne!(id, report);
        assert_eq!(parties_id(report), Some(id), "the same on every device");
        assert_eq!(parties_id("not a uuid"), None);
    }

    #[test]
    fn corrections_replace_an_entry_and_the_count_follows() {
        let author = Author { user: "w".into(), role: Role::GridWorker, at: 1_000 };
        let report = "0190f3a2-7b1c-7def-8abc-0123456789ab";
        let mut d =
            create_parties(ActorId::from([1; 16]), &author, report, "G1", "T1", &[party("张三")]).unwrap();
        let first = materialize_parties(&d).unwrap().parties[0].id.clone();
        let fix = Party { name: "张三".into(), contact: Some("13900000000".into()) };
        assert_eq!(
            edit_parties(&mut d, &author, &[party("李四")], &[(first.clone(), fix)]).unwrap(),
            Some(2)
        );
        let v = materialize_parties(&d).unwrap();
        assert_eq!(v.parties.len(), 3, "the corrected entry stays in the history");
        assert_eq!(v.corrected_parties, vec![first]);
        let current: Vec<_> = v.current_parties().iter().map(|p| p.contact.clone().unwrap()).collect();
        assert_eq!(current, ["13800000000", "13900000000"]);
        assert_eq!((v.report.as_str(), v.grid.as_str()), (report, "G1"));
        assert!(edit_parties(&mut d, &author, &[], &[("9@00".into(), party("王五"))]).is_err());
        assert_eq!(edit_parties(&mut d, &author, &[], &[]).unwrap(), None);
    }
}
