//! What every Gridsync document shares: its kind, the author registry, typed reads of the
//! Automerge layout, committing a local edit, and loading or applying outside bytes without panics.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{
    ActorId, AutoCommit, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, ScalarValueRef,
    Value, ValueRef,
    transaction::{CommitOptions, Transactable},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::org::Role;

/// The kinds of document a device writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    Report,
    Patrol,
    /// A report's parties (names and contacts), served only to the roles that need them.
    Parties,
}

crate::lifecycle::str_enum!(DocKind { Report = "report", Patrol = "patrol", Parties = "parties" });

/// Errors reading, writing or decoding a document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocError {
    #[error("the document does not have the expected layout: {0}")]
    Layout(String),
    #[error("automerge refused the bytes: {0}")]
    Automerge(String),
    #[error("the bytes crashed the decoder and were refused: {0}")]
    Panicked(String),
    #[error("{action} is not possible while the report is {status} at {level} level")]
    IllegalTransition { action: String, status: String, level: String },
    #[error("{0}")]
    BadInput(String),
    #[error("the bytes were refused before decoding: {0}")]
    Refused(#[from] crate::inflate::InflateError),
}

impl From<automerge::AutomergeError> for DocError {
    fn from(e: automerge::AutomergeError) -> Self {
        DocError::Automerge(e.to_string())
    }
}

/// Who makes a local edit, and when (milliseconds since the epoch, from the caller's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub user: String,
    pub role: Role,
    pub at: i64,
}

/// The user and role behind an Automerge actor, as the document records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct ActorInfo {
    pub user: String,
    pub role: Role,
}

/// Actor id (hex) → who writes with it. Every device registers its actor on its first edit.
pub type Authors = BTreeMap<String, ActorInfo>;

pub(crate) const AUTHORS: &str = "authors";

/// Makes sure the document names the current actor's author; part of the next commit.
pub(crate) fn register_author(doc: &mut AutoCommit, author: &Author) -> Result<(), DocError> {
    let actor = doc.get_actor().to_hex_string();
    let authors = map_at(doc, &ROOT, AUTHORS)?;
    if doc.get(&authors, actor.as_str())?.is_none() {
        let entry = doc.put_object(&authors, actor.as_str(), ObjType::Map)?;
        doc.put(&entry, "user", author.user.as_str())?;
        doc.put(&entry, "role", author.role.as_str())?;
    }
    Ok(())
}

pub(crate) fn read_authors(doc: &AutoCommit) -> Result<Authors, DocError> {
    let authors = map_at(doc, &ROOT, AUTHORS)?;
    let mut out = Authors::new();
    for key in doc.keys(&authors) {
        // The key is whatever a writer put there: errors never repeat it.
        let entry = map_at(doc, &authors, &key).map_err(|_| layout("an author entry is not a map"))?;
        let entry = Fields::read(doc, &entry);
        let user = entry.req_str("user")?;
        let role = entry.req_str("role")?;
        let role = Role::parse(&role).ok_or_else(|| layout("an author entry names an unknown role"))?;
        out.insert(key, ActorInfo { user, role });
    }
    Ok(out)
}

/// Commits pending operations as one change stamped with the author's clock (seconds).
pub(crate) fn commit(doc: &mut AutoCommit, author: &Author, message: &str) -> Option<ChangeHash> {
    doc.commit_with(CommitOptions::default().with_message(message).with_time(author.at / 1000))
}

/// The type of a scalar, for layout errors: never its value, which may be personal data.
pub(crate) fn scalar_type(v: &ScalarValue) -> &'static str {
    match v {
        ScalarValue::Bytes(_) => "bytes",
        ScalarValue::Str(_) => "text",
        ScalarValue::Int(_) | ScalarValue::Uint(_) => "an integer",
        ScalarValue::F64(_) => "a float",
        ScalarValue::Counter(_) => "a counter",
        ScalarValue::Timestamp(_) => "a timestamp",
        ScalarValue::Boolean(_) => "a boolean",
        ScalarValue::Unknown { .. } => "an unknown type",
        ScalarValue::Null => "null",
    }
}

pub(crate) fn layout(msg: impl Into<String>) -> DocError {
    DocError::Layout(msg.into())
}

/// The object at `key` in `obj`, which must be of `ty`.
pub(crate) fn obj_at(doc: &AutoCommit, obj: &ObjId, key: &str, ty: ObjType) -> Result<ObjId, DocError> {
    match doc.get(obj, key)? {
        Some((Value::Object(t), id)) if t == ty => Ok(id),
        Some(_) => Err(layout(format!("{key} is not a {ty:?}"))),
        None => Err(layout(format!("{key} is missing"))),
    }
}

pub(crate) fn map_at(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<ObjId, DocError> {
    obj_at(doc, obj, key, ObjType::Map)
}

pub(crate) fn list_at(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<ObjId, DocError> {
    obj_at(doc, obj, key, ObjType::List)
}

pub(crate) fn scalar(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<Option<ScalarValue>, DocError> {
    scalar_of(key, doc.get(obj, key)?.map(|(v, _)| v))
}

fn scalar_of(key: &str, v: Option<Value<'_>>) -> Result<Option<ScalarValue>, DocError> {
    match v {
        Some(Value::Scalar(s)) => Ok(Some(s.into_owned())),
        Some(Value::Object(_)) => Err(layout(format!("{key} should be a value, not an object"))),
        None => Ok(None),
    }
}

fn str_of(key: &str, v: Option<ScalarValue>) -> Result<Option<String>, DocError> {
    match v {
        Some(ScalarValue::Str(s)) => Ok(Some(s.to_string())),
        Some(ScalarValue::Null) | None => Ok(None),
        Some(other) => Err(layout(format!("{key} should be text, found {}", scalar_type(&other)))),
    }
}

fn int_of(key: &str, v: Option<ScalarValue>) -> Result<Option<i64>, DocError> {
    match v {
        Some(ScalarValue::Int(i)) | Some(ScalarValue::Timestamp(i)) => Ok(Some(i)),
        Some(ScalarValue::Uint(u)) => {
            i64::try_from(u).map(Some).map_err(|_| layout(format!("{key} is out of range")))
        }
        Some(ScalarValue::Null) | None => Ok(None),
        Some(other) => Err(layout(format!("{key} should be a number, found {}", scalar_type(&other)))),
    }
}

fn f64_of(key: &str, v: Option<ScalarValue>) -> Result<Option<f64>, DocError> {
    match v {
        Some(ScalarValue::F64(f)) if f.is_finite() => Ok(Some(f)),
        Some(ScalarValue::Int(i)) => Ok(Some(i as f64)),
        Some(ScalarValue::Null) | None => Ok(None),
        Some(other) => Err(layout(format!("{key} should be a finite number, found {}", scalar_type(&other)))),
    }
}

pub(crate) fn opt_str(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<Option<String>, DocError> {
    str_of(key, scalar(doc, obj, key)?)
}

pub(crate) fn req_str(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<String, DocError> {
    opt_str(doc, obj, key)?.ok_or_else(|| layout(format!("{key} is missing")))
}

pub(crate) fn opt_int(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<Option<i64>, DocError> {
    int_of(key, scalar(doc, obj, key)?)
}

/// A boolean at `key`; absent is `false`.
pub(crate) fn opt_bool(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<bool, DocError> {
    match scalar(doc, obj, key)? {
        None => Ok(false),
        Some(ScalarValue::Boolean(b)) => Ok(b),
        Some(v) => Err(layout(format!("{key} is {}, not a boolean", scalar_type(&v)))),
    }
}

/// The visible fields of one map, read in a single pass. Automerge seeks afresh for every `get`;
/// a view reads most keys of every note and transition, so this is how entries are read. Each key
/// shows the value `get` would show (the same winner among concurrent writes).
pub(crate) struct Fields(Vec<(String, Value<'static>)>);

impl Fields {
    pub(crate) fn read(doc: &AutoCommit, obj: &ObjId) -> Fields {
        Fields(doc.map_range(obj, ..).map(|item| (item.key.into_owned(), item.value.into_value())).collect())
    }

    fn scalar(&self, key: &str) -> Result<Option<ScalarValue>, DocError> {
        scalar_of(key, self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<String>, DocError> {
        str_of(key, self.scalar(key)?)
    }

    pub(crate) fn req_str(&self, key: &str) -> Result<String, DocError> {
        self.opt_str(key)?.ok_or_else(|| layout(format!("{key} is missing")))
    }

    pub(crate) fn opt_int(&self, key: &str) -> Result<Option<i64>, DocError> {
        int_of(key, self.scalar(key)?)
    }

    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>, DocError> {
        f64_of(key, self.scalar(key)?)
    }
}

pub(crate) fn text_at(doc: &AutoCommit, obj: &ObjId, key: &str) -> Result<String, DocError> {
    let id = obj_at(doc, obj, key, ObjType::Text)?;
    Ok(doc.text(&id)?)
}

/// The maps of a list, in list order.
pub(crate) fn list_maps(doc: &AutoCommit, list: &ObjId) -> Result<Vec<ObjId>, DocError> {
    doc.list_range(list, ..)
        .map(|item| match item.value {
            ValueRef::Object(ObjType::Map) => Ok(item.id()),
            _ => Err(layout("a list entry should be a map")),
        })
        .collect()
}

/// The strings of a list, in list order.
pub(crate) fn list_strs(doc: &AutoCommit, list: &ObjId) -> Result<Vec<String>, DocError> {
    doc.list_range(list, ..)
        .map(|item| match item.value {
            ValueRef::Scalar(ScalarValueRef::Str(s)) => Ok(s.into_owned()),
            _ => Err(layout("a list entry should be text")),
        })
        .collect()
}

/// Reads the `kind` of a document.
pub fn doc_kind(doc: &AutoCommit) -> Result<DocKind, DocError> {
    let kind = req_str(doc, &ROOT, "kind")?;
    DocKind::parse(&kind).ok_or_else(|| layout("the document kind is not report or patrol"))
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Loads a saved document from outside bytes: an error, never a panic.
pub fn load(bytes: &[u8], actor: ActorId) -> Result<AutoCommit, DocError> {
    crate::inflate::check(bytes)?;
    let doc =
        catch_unwind(|| AutoCommit::load(bytes)).map_err(|p| DocError::Panicked(panic_message(p)))??;
    Ok(doc.with_actor(actor))
}

/// Decodes one raw change from outside bytes: an error, never a panic.
pub fn decode_change(bytes: &[u8]) -> Result<Change, DocError> {
    crate::inflate::check_change(bytes)?;
    let owned = bytes.to_vec();
    catch_unwind(move || Change::from_bytes(owned))
        .map_err(|p| DocError::Panicked(panic_message(p)))?
        .map_err(|e| DocError::Automerge(e.to_string()))
}

/// Runs `merge` on `doc` under a panic guard and returns the merged document; on an error or a
/// panic inside automerge the document is dropped.
fn merge_owned<T>(
    mut doc: AutoCommit,
    merge: impl FnOnce(&mut AutoCommit) -> Result<T, automerge::AutomergeError>,
) -> Result<AutoCommit, DocError> {
    let result = catch_unwind(AssertUnwindSafe(move || {
        merge(&mut doc).map(|_| {
            // Force the op set to settle now, inside the guard, so a latent fault surfaces here.
            doc.get_heads();
            doc
        })
    }));
    match result {
        Ok(Ok(doc)) => Ok(doc),
        Ok(Err(e)) => Err(e.into()),
        Err(p) => Err(DocError::Panicked(panic_message(p))),
    }
}

/// Runs `merge` on a copy of `doc`; on success the copy replaces `doc`, otherwise `doc` stays.
fn merge_guarded<T>(
    doc: &mut AutoCommit,
    merge: impl FnOnce(&mut AutoCommit) -> Result<T, automerge::AutomergeError>,
) -> Result<(), DocError> {
    *doc = merge_owned(doc.clone(), merge)?;
    Ok(())
}

/// Applies outside changes to a document the caller can do without (a copy it made): no further
/// copy is taken, and on an error or a panic the document is gone. Never panics.
pub fn apply_changes_owned(doc: AutoCommit, changes: Vec<Change>) -> Result<AutoCommit, DocError> {
    merge_owned(doc, move |d| d.apply_changes(changes))
}

/// Applies outside changes to `doc`, all or nothing, never panicking.
pub fn apply_changes(doc: &mut AutoCommit, changes: Vec<Change>) -> Result<(), DocError> {
    merge_guarded(doc, move |d| d.apply_changes(changes))
}

/// Merges saved or incremental bytes (a snapshot, or concatenated raw changes) into `doc`, all or
/// nothing, never panicking.
pub fn load_incremental(doc: &mut AutoCommit, bytes: &[u8]) -> Result<(), DocError> {
    crate::inflate::check(bytes)?;
    merge_guarded(doc, |d| d.load_incremental(bytes))
}

/// Hex of a change hash, the form used on the wire.
pub fn hash_hex(h: &ChangeHash) -> String {
    hex::encode(h.0)
}

/// Parses a change hash from hex.
pub fn parse_hash(s: &str) -> Option<ChangeHash> {
    let bytes = hex::decode(s).ok()?;
    ChangeHash::try_from(bytes.as_slice()).ok()
}

/// The layout version every document carries; another version is refused.
pub const LAYOUT: i64 = 1;

const REPORT_KEYS: &[&str] = &[
    "kind",
    "layout",
    "id",
    "grid",
    "town",
    "reporter",
    "created_at",
    "category",
    "title",
    "description",
    "urgency",
    "anonymous",
    "location",
    "parties",
    "notes",
    "attachments",
    "transitions",
    "authors",
];
const PATROL_KEYS: &[&str] = &[
    "kind",
    "layout",
    "id",
    "grid",
    "town",
    "worker",
    "started_at",
    "ended_at",
    "companions",
    "checkins",
    "visits",
    "findings",
    "track",
    "narrative",
    "authors",
];

const PARTIES_KEYS: &[&str] = &["kind", "layout", "id", "report", "grid", "town", "people", "authors"];

/// The document's layout version must be [`LAYOUT`] and its root may hold only the keys of its
/// kind's layout. The error never repeats a key or a value: they may be anything.
pub fn check_layout(doc: &AutoCommit, kind: DocKind) -> Result<(), DocError> {
    if opt_int(doc, &ROOT, "layout")? != Some(LAYOUT) {
        return Err(layout(format!("the layout version must be {LAYOUT}")));
    }
    let known = match kind {
        DocKind::Report => REPORT_KEYS,
        DocKind::Patrol => PATROL_KEYS,
        DocKind::Parties => PARTIES_KEYS,
    };
    if doc.keys(&ROOT).any(|k| !known.contains(&k.as_str())) {
        return Err(layout("the document has a key its layout does not define"));
    }
    Ok(())
}

/// The containers a document creates once and only ever appends to or edits inside: the object
/// (and so the Automerge op) behind each, in a fixed order. A change that replaces one with a new
/// object — even an identical copy — would silently drop every concurrent write into the old one.
pub fn containers(doc: &AutoCommit, kind: DocKind) -> Vec<(&'static str, Option<ObjId>)> {
    let at = |obj: &ObjId, key: &str| match doc.get(obj, key) {
        Ok(Some((Value::Object(_), id))) => Some(id),
        _ => None,
    };
    match kind {
        DocKind::Report => {
            let parties = at(&ROOT, "parties");
            let people = parties.as_ref().and_then(|p| at(p, "people"));
            let mut out: Vec<(&'static str, Option<ObjId>)> =
                ["description", "location", "notes", "attachments", "transitions", AUTHORS]
                    .into_iter()
                    .map(|k| (k, at(&ROOT, k)))
                    .collect();
            out.push(("parties", parties));
            out.push(("parties.people", people));
            out
        }
        DocKind::Patrol => ["companions", "checkins", "visits", "findings", "track", "narrative", AUTHORS]
            .into_iter()
            .map(|k| (k, at(&ROOT, k)))
            .collect(),
        DocKind::Parties => ["people", AUTHORS].into_iter().map(|k| (k, at(&ROOT, k))).collect(),
    }
}

/// Saves `doc` and loads the saved bytes again, both under the panic guard: what the server
/// stores must be what it (and every device) can read back. Returns the saved bytes and the
/// reloaded document (read with `actor`). The columns are saved without DEFLATE: compressing
/// each column was an eighth of the writer's time, and the HTTP layer's gzip compresses a page of
/// plain columns better than a page of separately deflated ones.
pub fn save_and_reload(doc: &mut AutoCommit, actor: ActorId) -> Result<(Vec<u8>, AutoCommit), DocError> {
    let saved = catch_unwind(AssertUnwindSafe(|| doc.save_nocompress()))
        .map_err(|p| DocError::Panicked(panic_message(p)))?;
    let back = load(&saved, actor)?;
    Ok((saved, back))
}
