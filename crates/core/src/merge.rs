//! Deterministic merge rules on top of Automerge's convergence: which of several concurrent
//! values a view shows, and the record of what each rule discarded. The table is docs/merge-rules.md.

use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::doc::{Authors, DocError, layout, scalar_type};
use crate::lifecycle::Folded;

/// The rules, by the names that appear in views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Scalars: the writer with more authority wins (operator over worker over assistant), then the
    /// later write in causal (Lamport) order, then the actor id. No wall clock.
    LwwAuthority,
    /// Urgency never goes down by accident: of concurrent values the most urgent wins.
    UrgencyMax,
    /// Concurrent lifecycle transitions: precedence, see `lifecycle::fold`.
    TransitionPrecedence,
}

/// A concurrent write the view shows alongside the value a rule kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResolvedConflict {
    /// The field, e.g. `title`, `location.address` or `lifecycle`.
    pub field: String,
    pub rule: Rule,
    pub kept: serde_json::Value,
    /// User who wrote the kept value (when the document names them).
    pub kept_by: Option<String>,
    pub discarded: Vec<DiscardedValue>,
}

/// One value a rule did not keep, and who wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DiscardedValue {
    pub value: serde_json::Value,
    pub by: Option<String>,
}

/// A scalar written concurrently with others, with what the rules rank it by.
struct Candidate {
    value: ScalarValue,
    authority: u8,
    counter: u64,
    actor: Vec<u8>,
    by: Option<String>,
}

fn candidates(
    doc: &AutoCommit,
    obj: &ObjId,
    key: &str,
    authors: &Authors,
) -> Result<Vec<Candidate>, DocError> {
    let mut out = Vec::new();
    for (value, id) in doc.get_all(obj, key)? {
        let Value::Scalar(value) = value else {
            return Err(layout(format!("{key} should be a value, not an object")));
        };
        let (counter, actor) = match &id {
            automerge::ObjId::Id(counter, actor, _) => (*counter, actor.clone()),
            automerge::ObjId::Root => (0, automerge::ActorId::from([0u8; 16])),
        };
        let info = authors.get(&actor.to_hex_string());
        out.push(Candidate {
            value: value.into_owned(),
            authority: info.map_or(0, |i| i.role.authority()),
            counter,
            actor: actor.to_bytes().to_vec(),
            by: info.map(|i| i.user.clone()),
        });
    }
    Ok(out)
}

/// Reads values through the merge rules, collecting the conflicts it resolves.
pub(crate) struct Resolver<'a> {
    pub doc: &'a AutoCommit,
    pub authors: &'a Authors,
    pub conflicts: Vec<ResolvedConflict>,
}

impl<'a> Resolver<'a> {
    pub fn new(doc: &'a AutoCommit, authors: &'a Authors) -> Self {
        Resolver { doc, authors, conflicts: Vec::new() }
    }

    /// Picks the value of `obj[key]` by `rule`, recording a conflict when concurrent values existed.
    pub fn scalar(
        &mut self,
        obj: &ObjId,
        key: &str,
        field: &str,
        rule: Rule,
    ) -> Result<Option<ScalarValue>, DocError> {
        let mut cands = candidates(self.doc, obj, key, self.authors)?;
        if cands.len() <= 1 {
            return Ok(cands.pop().map(|c| c.value));
        }
        let key_of = |c: &Candidate| {
            let first = if rule == Rule::UrgencyMax { urgency_rank(&c.value) } else { 0 };
            (first, c.authority, c.counter, c.actor.clone())
        };
        cands.sort_by_key(|c| std::cmp::Reverse(key_of(c)));
        let kept = cands.remove(0);
        self.conflicts.push(ResolvedConflict {
            field: field.to_string(),
            rule,
            kept: scalar_json(&kept.value),
            kept_by: kept.by.clone(),
            discarded: cands
                .into_iter()
                .map(|c| DiscardedValue { value: scalar_json(&c.value), by: c.by })
                .collect(),
        });
        Ok(Some(kept.value))
    }

    /// A text scalar through `rule`.
    pub fn string(
        &mut self,
        obj: &ObjId,
        key: &str,
        field: &str,
        rule: Rule,
    ) -> Result<Option<String>, DocError> {
        match self.scalar(obj, key, field, rule)? {
            Some(ScalarValue::Str(s)) => Ok(Some(s.to_string())),
            Some(ScalarValue::Null) | None => Ok(None),
            Some(other) => Err(layout(format!("{field} should be text, found {}", scalar_type(&other)))),
        }
    }

    /// A finite number through last-writer-wins.
    pub fn number(&mut self, obj: &ObjId, key: &str, field: &str) -> Result<Option<f64>, DocError> {
        match self.scalar(obj, key, field, Rule::LwwAuthority)? {
            Some(ScalarValue::F64(f)) if f.is_finite() => Ok(Some(f)),
            Some(ScalarValue::Int(i)) => Ok(Some(i as f64)),
            Some(ScalarValue::Null) | None => Ok(None),
            Some(other) => {
                Err(layout(format!("{field} should be a finite number, found {}", scalar_type(&other))))
            }
        }
    }

    /// An integer through last-writer-wins.
    pub fn int(&mut self, obj: &ObjId, key: &str, field: &str) -> Result<Option<i64>, DocError> {
        match self.scalar(obj, key, field, Rule::LwwAuthority)? {
            Some(ScalarValue::Int(i)) | Some(ScalarValue::Timestamp(i)) => Ok(Some(i)),
            Some(ScalarValue::Uint(u)) => Ok(i64::try_from(u).ok()),
            Some(ScalarValue::Null) | None => Ok(None),
            Some(other) => Err(layout(format!("{field} should be a number, found {}", scalar_type(&other)))),
        }
    }
}

/// Urgency order for `UrgencyMax`: unknown values rank lowest.
fn urgency_rank(v: &ScalarValue) -> u8 {
    match v {
        ScalarValue::Str(s) => match s.as_str() {
            "low" => 1,
            "normal" => 2,
            "high" => 3,
            "critical" => 4,
            _ => 0,
        },
        _ => 0,
    }
}

/// The JSON form of a scalar, as it appears in conflicts.
pub(crate) fn scalar_json(v: &ScalarValue) -> serde_json::Value {
    match v {
        ScalarValue::Str(s) => serde_json::Value::String(s.to_string()),
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => (*i).into(),
        ScalarValue::Uint(u) => (*u).into(),
        ScalarValue::F64(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
        ScalarValue::Boolean(b) => (*b).into(),
        ScalarValue::Null => serde_json::Value::Null,
        other => serde_json::Value::String(other.to_string()),
    }
}

/// Objects written concurrently under one key (two devices both creating `location`, say) keep
/// only Automerge's winner; surface that too so nothing disappears silently.
pub(crate) fn object_conflict(
    doc: &AutoCommit,
    obj: &ObjId,
    key: &str,
    authors: &Authors,
    conflicts: &mut Vec<ResolvedConflict>,
) -> Result<(), DocError> {
    let all = doc.get_all(obj, key)?;
    if all.len() > 1
        && all.iter().all(|(v, _)| matches!(v, Value::Object(ObjType::Map | ObjType::List | ObjType::Text)))
    {
        let by = |id: &ObjId| match id {
            ObjId::Id(_, actor, _) => authors.get(&actor.to_hex_string()).map(|i| i.user.clone()),
            ObjId::Root => None,
        };
        let winner = doc.get(obj, key)?.map(|(_, id)| id);
        conflicts.push(ResolvedConflict {
            field: key.to_string(),
            rule: Rule::LwwAuthority,
            kept: serde_json::Value::String("object".into()),
            kept_by: winner.as_ref().and_then(by),
            discarded: all
                .iter()
                .filter(|(_, id)| Some(id) != winner.as_ref())
                .map(|(_, id)| DiscardedValue { value: "object".into(), by: by(id) })
                .collect(),
        });
    }
    Ok(())
}

/// Conflicts for the forks of a lifecycle fold.
pub(crate) fn lifecycle_conflicts(
    fold: &Folded,
    transitions: &[crate::lifecycle::Transition],
    conflicts: &mut Vec<ResolvedConflict>,
) {
    let find = |id: &str| transitions.iter().find(|t| t.id == id);
    let describe = |t: &crate::lifecycle::Transition| serde_json::json!({ "action": t.action, "to": t.to, "level": t.to_level, "id": t.id });
    for fork in &fold.forks {
        let winner = find(&fork.winner);
        conflicts.push(ResolvedConflict {
            field: "lifecycle".into(),
            rule: Rule::TransitionPrecedence,
            kept: winner.map_or(serde_json::Value::Null, describe),
            kept_by: winner.map(|t| t.author.clone()),
            discarded: fork
                .discarded
                .iter()
                .filter_map(|id| find(id))
                .map(|t| DiscardedValue { value: describe(t), by: Some(t.author.clone()) })
                .collect(),
        });
    }
}
