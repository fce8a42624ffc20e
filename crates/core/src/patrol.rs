//! Patrol documents (巡查 / 走访): layout, local edits, compact track chunks, and `PatrolView`.

use automerge::{
    ActorId, AutoCommit, ChangeHash, ObjType, ROOT, ReadDoc, ScalarValue, ScalarValueRef, ValueRef,
    transaction::Transactable,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::doc::{
    ActorInfo, Author, DocError, Fields, commit, layout, list_at, list_maps, list_strs, opt_int,
    read_authors, register_author, req_str, text_at,
};
use crate::merge::{ResolvedConflict, Resolver};

/// Most points stored in one track chunk (one list entry, one bytes value).
pub const TRACK_CHUNK_POINTS: usize = 500;

/// One GPS fix. Coordinates are kept to 1e-6 degree (about 0.1 m).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrackPoint {
    pub lat: f64,
    pub lon: f64,
    /// Milliseconds since the epoch; stored to the second.
    pub at: i64,
}

/// A check-in at a named place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckIn {
    pub place: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub at: i64,
}

/// A household visited (走访).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Visit {
    pub household: String,
    pub at: i64,
}

/// The materialized patrol. Shape: `schemas/patrol-view.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatrolView {
    pub id: String,
    pub grid: String,
    pub town: String,
    pub worker: String,
    pub companions: Vec<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub checkins: Vec<CheckIn>,
    pub visits: Vec<Visit>,
    /// Ids of reports filed during the patrol.
    pub findings: Vec<String>,
    pub track: Vec<TrackPoint>,
    pub narrative: String,
    pub conflicts: Vec<ResolvedConflict>,
    pub authors: std::collections::BTreeMap<String, ActorInfo>,
}

/// Starts a patrol document.
pub fn start_patrol(
    actor: ActorId,
    author: &Author,
    id: uuid::Uuid,
    grid: &str,
    town: &str,
    companions: &[String],
) -> Result<AutoCommit, DocError> {
    let mut doc = AutoCommit::new().with_actor(actor);
    doc.put(ROOT, "kind", "patrol")?;
    doc.put(ROOT, "layout", 1)?;
    doc.put(ROOT, "id", id.to_string())?;
    doc.put(ROOT, "grid", grid)?;
    doc.put(ROOT, "town", town)?;
    doc.put(ROOT, "worker", author.user.as_str())?;
    doc.put(ROOT, "started_at", author.at)?;
    let list = doc.put_object(ROOT, "companions", ObjType::List)?;
    for (i, c) in companions.iter().enumerate() {
        doc.insert(&list, i, c.as_str())?;
    }
    for key in ["checkins", "visits", "findings", "track"] {
        doc.put_object(ROOT, key, ObjType::List)?;
    }
    doc.put_object(ROOT, "narrative", ObjType::Text)?;
    doc.put_object(ROOT, "authors", ObjType::Map)?;
    register_author(&mut doc, author)?;
    commit(&mut doc, author, "start patrol");
    Ok(doc)
}

/// One edit to a patrol; each call is one change.
#[derive(Debug, Clone, PartialEq)]
pub enum PatrolEdit {
    CheckIn(CheckIn),
    Visit(String),
    Finding(String),
    /// Appends points as compact chunks of at most [`TRACK_CHUNK_POINTS`].
    Track(Vec<TrackPoint>),
    /// Appends a paragraph to the narrative.
    Narrative(String),
    End,
}

/// Applies one patrol edit as one change.
pub fn edit_patrol(
    doc: &mut AutoCommit,
    author: &Author,
    edit: &PatrolEdit,
) -> Result<Option<ChangeHash>, DocError> {
    if opt_int(doc, &ROOT, "ended_at")?.is_some() && *edit != PatrolEdit::End {
        return Err(DocError::BadInput("this patrol has ended; start a new one".into()));
    }
    match edit {
        PatrolEdit::CheckIn(c) => {
            if c.place.trim().is_empty() {
                return Err(DocError::BadInput("a check-in needs a place".into()));
            }
            let list = list_at(doc, &ROOT, "checkins")?;
            let n = doc.length(&list);
            let obj = doc.insert_object(&list, n, ObjType::Map)?;
            doc.put(&obj, "place", c.place.as_str())?;
            if let (Some(lat), Some(lon)) = (c.lat, c.lon) {
                check_point(lat, lon)?;
                doc.put(&obj, "lat", lat)?;
                doc.put(&obj, "lon", lon)?;
            }
            doc.put(&obj, "at", c.at)?;
        }
        PatrolEdit::Visit(h) => {
            if h.trim().is_empty() {
                return Err(DocError::BadInput("a visit needs a household".into()));
            }
            let list = list_at(doc, &ROOT, "visits")?;
            let n = doc.length(&list);
            let obj = doc.insert_object(&list, n, ObjType::Map)?;
            doc.put(&obj, "household", h.as_str())?;
            doc.put(&obj, "at", author.at)?;
        }
        PatrolEdit::Finding(id) => {
            let list = list_at(doc, &ROOT, "findings")?;
            let n = doc.length(&list);
            doc.insert(&list, n, id.as_str())?;
        }
        PatrolEdit::Track(points) => {
            for p in points {
                check_point(p.lat, p.lon)?;
            }
            let list = list_at(doc, &ROOT, "track")?;
            for chunk in points.chunks(TRACK_CHUNK_POINTS) {
                let n = doc.length(&list);
                doc.insert(&list, n, ScalarValue::Bytes(encode_track(chunk)))?;
            }
        }
        PatrolEdit::Narrative(text) => {
            let narrative = crate::doc::obj_at(doc, &ROOT, "narrative", ObjType::Text)?;
            let len = doc.length(&narrative);
            let para = if len == 0 { text.clone() } else { format!("\n{text}") };
            doc.splice_text(&narrative, len, 0, &para)?;
        }
        PatrolEdit::End => {
            if opt_int(doc, &ROOT, "ended_at")?.is_some() {
                return Ok(None);
            }
            doc.put(ROOT, "ended_at", author.at)?;
        }
    }
    if doc.pending_ops() == 0 {
        return Ok(None);
    }
    register_author(doc, author)?;
    Ok(commit(doc, author, "patrol"))
}

fn check_point(lat: f64, lon: f64) -> Result<(), DocError> {
    if lat.is_finite() && lon.is_finite() && (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)
    {
        Ok(())
    } else {
        Err(DocError::BadInput(format!("{lat},{lon} is not a position on Earth")))
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes points as a version byte, a count, then zigzag varint deltas of
/// (lat·1e6, lon·1e6, seconds): a walking track costs about 6 bytes a point.
pub fn encode_track(points: &[TrackPoint]) -> Vec<u8> {
    let mut out = vec![1u8];
    put_varint(&mut out, points.len() as u64);
    let (mut plat, mut plon, mut pt) = (0i64, 0i64, 0i64);
    for p in points {
        let lat = (p.lat * 1e6).round() as i64;
        let lon = (p.lon * 1e6).round() as i64;
        let t = p.at.div_euclid(1000);
        for (v, prev) in [(lat, &mut plat), (lon, &mut plon), (t, &mut pt)] {
            put_varint(&mut out, zigzag(v.wrapping_sub(*prev)));
            *prev = v;
        }
    }
    out
}

/// Decodes a track chunk; refuses anything malformed.
pub fn decode_track(bytes: &[u8]) -> Result<Vec<TrackPoint>, DocError> {
    let bad = || layout("a track chunk is malformed");
    let mut pos = 0usize;
    let varint = |pos: &mut usize| -> Result<u64, DocError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes.get(*pos).ok_or_else(bad)?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad())
    };
    if bytes.first() != Some(&1) {
        return Err(bad());
    }
    pos += 1;
    let n = varint(&mut pos)? as usize;
    if n > TRACK_CHUNK_POINTS {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(n);
    let (mut lat, mut lon, mut t) = (0i64, 0i64, 0i64);
    for _ in 0..n {
        lat = lat.wrapping_add(unzigzag(varint(&mut pos)?));
        lon = lon.wrapping_add(unzigzag(varint(&mut pos)?));
        t = t.wrapping_add(unzigzag(varint(&mut pos)?));
        let p = TrackPoint { lat: lat as f64 / 1e6, lon: lon as f64 / 1e6, at: t.saturating_mul(1000) };
        check_point(p.lat, p.lon).map_err(|_| bad())?;
        out.push(p);
    }
    if pos != bytes.len() {
        return Err(bad());
    }
    Ok(out)
}

/// Materializes a patrol document. Pure and deterministic.
pub fn materialize_patrol(doc: &AutoCommit) -> Result<PatrolView, DocError> {
    if req_str(doc, &ROOT, "kind")? != "patrol" {
        return Err(layout("not a patrol document"));
    }
    let authors = read_authors(doc)?;
    let mut r = Resolver::new(doc, &authors);
    let ended_at = r.int(&ROOT, "ended_at", "ended_at")?;
    let companions = list_strs(doc, &list_at(doc, &ROOT, "companions")?)?;
    let checkins = list_maps(doc, &list_at(doc, &ROOT, "checkins")?)?
        .into_iter()
        .map(|c| {
            let c = Fields::read(doc, &c);
            Ok(CheckIn {
                place: c.req_str("place")?,
                lat: c.opt_f64("lat")?,
                lon: c.opt_f64("lon")?,
                at: c.opt_int("at")?.unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>, DocError>>()?;
    let visits = list_maps(doc, &list_at(doc, &ROOT, "visits")?)?
        .into_iter()
        .map(|v| {
            let v = Fields::read(doc, &v);
            Ok(Visit { household: v.req_str("household")?, at: v.opt_int("at")?.unwrap_or(0) })
        })
        .collect::<Result<Vec<_>, DocError>>()?;
    let findings = list_strs(doc, &list_at(doc, &ROOT, "findings")?)?;
    let track_list = list_at(doc, &ROOT, "track")?;
    let mut track = Vec::new();
    for item in doc.list_range(&track_list, ..) {
        match item.value {
            ValueRef::Scalar(ScalarValueRef::Bytes(b)) => track.extend(decode_track(&b)?),
            _ => return Err(layout("a track chunk should be bytes")),
        }
    }
    // Chunks can arrive out of time order (points buffered on the device, an imported file): the
    // view lists the track by time, ties broken by position, so every replica shows the same.
    track.sort_by(|a, b| a.at.cmp(&b.at).then(a.lat.total_cmp(&b.lat)).then(a.lon.total_cmp(&b.lon)));
    let conflicts = r.conflicts;
    Ok(PatrolView {
        id: req_str(doc, &ROOT, "id")?,
        grid: req_str(doc, &ROOT, "grid")?,
        town: req_str(doc, &ROOT, "town")?,
        worker: req_str(doc, &ROOT, "worker")?,
        companions,
        started_at: opt_int(doc, &ROOT, "started_at")?.unwrap_or(0),
        ended_at,
        checkins,
        visits,
        findings,
        track,
        narrative: text_at(doc, &ROOT, "narrative")?,
        conflicts,
        authors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_round_trips_and_is_compact() {
        let points: Vec<TrackPoint> = (0..200)
            .map(|i| TrackPoint {
                lat: 30.5 + i as f64 * 1e-5,
                lon: 114.25 - i as f64 * 2e-5,
                at: 1_700_000_000_000 + i * 15_000,
            })
            .collect();
        let bytes = encode_track(&points);
        assert!(bytes.len() < 200 * 8, "{} bytes", bytes.len());
        let back = decode_track(&bytes).unwrap();
        assert_eq!(back.len(), 200);
        for (a, b) in points.iter().zip(&back) {
            assert!((a.lat - b.lat).abs() < 1e-6 && (a.lon - b.lon).abs() < 1e-6);
            assert_eq!(a.at, b.at);
        }
    }

    #[test]
    fn malformed_track_chunks_are_refused() {
        let good = encode_track(&[TrackPoint { lat: 1.0, lon: 2.0, at: 3000 }]);
        assert!(decode_track(&good[..good.len() - 1]).is_err());
        assert!(decode_track(&[2, 0]).is_err());
        assert!(decode_track(&[1, 0xff, 0xff, 0xff]).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_track(&trailing).is_err());
        // A point off the planet.
        assert!(decode_track(&encode_track(&[TrackPoint { lat: 95.0, lon: 0.0, at: 0 }])).is_err());
    }
}
