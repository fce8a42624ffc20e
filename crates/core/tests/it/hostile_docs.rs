//! Hostile documents (issue 9): changes automerge accepts but Gridsync must not — poisoned saves,
//! compression bombs, replaced containers, rewritten personal data, squatted transition ids,
//! unknown layouts — each refused in core, where client and server share the check.

use std::collections::BTreeSet;
use std::io::Write;

use automerge::{ActorId, AutoCommit, ObjType, ROOT, ReadDoc, transaction::Transactable};
use gridsync_core::doc::{self, Author, DocKind};
use gridsync_core::inflate::{self, InflateError, MAX_INFLATED_BYTES};
use gridsync_core::lifecycle::{Action, Level, Status, Transition};
use gridsync_core::org::{Principal, Role, Scope, demo_county};
use gridsync_core::report::*;
use gridsync_core::validate::{Writer, check_parties, check_report, check_transition_id};

fn actor(n: u8) -> ActorId {
    ActorId::from([n; 16])
}

fn worker(at: i64) -> Author {
    Author { user: "worker".into(), role: Role::GridWorker, at }
}

fn report(grid: &str, town: &str) -> AutoCommit {
    create_report(
        actor(1),
        &worker(1_000),
        &NewReport {
            anonymous: false,
            id: uuid::Uuid::from_u128(7),
            grid: grid.into(),
            town: town.into(),
            category: Category::Dispute,
            title: "x".into(),
            description: "a wall".into(),
            urgency: Urgency::Normal,
            location: Location::default(),
            parties: vec![],
        },
    )
    .unwrap()
}

/// The last change of `d`, its raw bytes with every `from` replaced by `to` (same length).
fn respelled(d: &mut AutoCommit, from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut bytes = d.get_last_local_change().unwrap().raw_bytes().to_vec();
    let at = bytes.windows(from.len()).position(|w| w == from).expect("the key is in the change");
    bytes[at..at + from.len()].copy_from_slice(to);
    bytes
}

#[test]
fn a_change_that_writes_another_key_over_an_existing_op_is_caught_by_save_and_reload() {
    crate::hostile::quiet_panics();
    let mut d = report("G1", "T1");
    let base = d.save();
    edit_report(&mut d, &worker(2_000), &ReportEdit { title: Some("y".into()), ..Default::default() })
        .unwrap();
    // The op now writes `thtle` while naming the op that set `title` as its predecessor.
    let poisoned = respelled(&mut d, b"title", b"thtle");
    let change = doc::decode_change(&poisoned).unwrap();
    let mut target = doc::load(&base, actor(9)).unwrap();
    let applied = doc::apply_changes(&mut target, vec![change]);
    // Automerge 0.12 accepts it in memory (measured); what it saves panics the loader, caught.
    assert!(applied.is_ok(), "automerge accepts the poisoned change");
    assert!(
        doc::save_and_reload(&mut target, actor(9)).is_err(),
        "a poisoned document must fail the save-and-reload check"
    );
    // The check passes an honest document.
    let mut honest = doc::load(&base, actor(9)).unwrap();
    assert!(doc::save_and_reload(&mut honest, actor(9)).is_ok());
}

fn deflate(zeros: usize) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..zeros >> 20 {
        e.write_all(&block).unwrap();
    }
    e.finish().unwrap()
}

fn uleb(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, kind];
    uleb(data.len() as u64, &mut out);
    out.extend_from_slice(data);
    out
}

#[test]
fn compressed_bombs_are_refused_before_automerge_inflates_them() {
    // 64 MiB of zeros deflate to about 64 KB; automerge would inflate all of it (a 1 GiB one
    // cost the server 3 GB). The check stops at the cap, counting, never allocating the output.
    let bomb = deflate(64 << 20);
    assert!(bomb.len() < 1_000_000, "{} bytes", bomb.len());
    let change_bomb = chunk(2, &bomb);
    assert_eq!(inflate::check(&change_bomb), Err(InflateError::TooLarge { max: MAX_INFLATED_BYTES }));
    // A pushed change must be a plain chunk: compressed ones are refused without inflating.
    assert!(matches!(
        doc::decode_change(&change_bomb),
        Err(doc::DocError::Refused(InflateError::NotAPlainChange))
    ));
    assert!(doc::load(&change_bomb, actor(9)).is_err());
    let mut d = report("G1", "T1");
    let heads = d.get_heads();
    assert!(doc::load_incremental(&mut d, &change_bomb).is_err());
    assert_eq!(d.get_heads(), heads, "the target is untouched");

    // A document chunk whose one column is a deflated bomb.
    let mut data = vec![0u8, 0u8]; // no actors, no heads
    uleb(1, &mut data); // one change column
    uleb((1 << 4) | 0b1000, &mut data); // deflated
    uleb(bomb.len() as u64, &mut data);
    uleb(0, &mut data); // no op columns
    data.extend_from_slice(&bomb);
    let doc_bomb = chunk(0, &data);
    assert_eq!(inflate::check(&doc_bomb), Err(InflateError::TooLarge { max: MAX_INFLATED_BYTES }));
    assert!(doc::load(&doc_bomb, actor(9)).is_err());
    // Bundles are never sent by Gridsync and are refused from outside.
    assert_eq!(inflate::check(&chunk(3, &[])), Err(InflateError::UnknownChunk(3)));
}

#[test]
fn ordinary_documents_with_compressed_columns_still_load_and_changes_still_decode() {
    let mut d = report("G1", "T1");
    for i in 0..200 {
        add_note(&mut d, &worker(2_000 + i), &"巡查记录 ".repeat(20)).unwrap();
    }
    let saved = d.save();
    assert!(inflate::check(&saved).is_ok());
    let back = doc::load(&saved, actor(9)).unwrap();
    assert_eq!(materialize_report(&back).unwrap().notes.len(), 200);
    let raw: Vec<u8> = d.get_changes(&[]).iter().flat_map(|c| c.raw_bytes().to_vec()).collect();
    assert!(inflate::check(&raw).is_ok());
    for c in d.get_changes(&[]) {
        doc::decode_change(c.raw_bytes()).unwrap();
    }
}

#[test]
fn replacing_a_list_with_an_identical_copy_changes_its_container() {
    let mut d = report("G1", "T1");
    add_note(&mut d, &worker(2_000), "one").unwrap();
    let before = doc::containers(&d, DocKind::Report);
    assert!(before.iter().all(|(_, id)| id.is_some()), "{before:?}");
    // A new, identical notes list: same view, different object.
    let old = materialize_report(&d).unwrap().notes;
    let list = d.put_object(ROOT, "notes", ObjType::List).unwrap();
    for (i, n) in old.iter().enumerate() {
        let o = d.insert_object(&list, i, ObjType::Map).unwrap();
        d.put(&o, "id", n.id.as_str()).unwrap();
        d.put(&o, "author", n.author.as_str()).unwrap();
        d.put(&o, "role", n.role.as_str()).unwrap();
        d.put(&o, "at", n.at).unwrap();
        d.put(&o, "text", n.text.as_str()).unwrap();
    }
    d.commit();
    assert_eq!(materialize_report(&d).unwrap().notes, old, "the view cannot tell");
    let after = doc::containers(&d, DocKind::Report);
    let changed: Vec<_> = before.iter().zip(&after).filter(|(a, b)| a != b).map(|(a, _)| a.0).collect();
    assert_eq!(changed, ["notes"]);
}

fn principal_worker(org: &gridsync_core::org::Org) -> (Principal, String, String) {
    let g = org.grids[0].clone();
    (
        Principal { user: "worker".into(), role: Role::GridWorker, scope: Scope::Grids(vec![g.id.clone()]) },
        g.id,
        g.town,
    )
}

#[test]
fn parties_and_attachments_are_append_only_and_a_correction_is_a_new_entry() {
    use gridsync_core::parties::{create_parties, edit_parties, materialize_parties};
    let org = demo_county(5);
    let (who, grid, town) = principal_worker(&org);
    let actors: BTreeSet<String> = [actor(1).to_hex_string()].into();
    let w = Writer { who: &who, actors: &actors };
    let mut d = report(&grid, &town);
    let att =
        Attachment { sha256: "a".repeat(64), mime: "image/jpeg".into(), size: 10, name: "p.jpg".into() };
    add_attachment(&mut d, &worker(1_500), &att).unwrap();
    let before = materialize_report(&d).unwrap();
    let report_id = uuid::Uuid::from_u128(7).to_string();
    let zhang = Party { name: "张三".into(), contact: Some("13800000000".into()) };
    let p = create_parties(actor(1), &worker(1_100), &report_id, &grid, &town, &[zhang]).unwrap();
    let parties_before = materialize_parties(&p).unwrap();
    assert_eq!(check_parties(&org, &w, None, &parties_before), Ok(()));
    let people = |d: &AutoCommit| d.get(ROOT, "people").unwrap().unwrap().1;
    let refused = |write: &dyn Fn(&mut AutoCommit)| {
        let mut x = p.clone();
        write(&mut x);
        x.commit();
        let after = materialize_parties(&x).unwrap();
        check_parties(&org, &w, Some(&parties_before), &after).map_err(|r| r.code())
    };
    // A phone number changed in place, a party removed, an attachment removed: refused.
    let changed_phone = refused(&|x| {
        let p = x.get(people(x), 0).unwrap().unwrap().1;
        x.put(&p, "contact", "13900000000").unwrap();
    });
    assert_eq!(changed_phone, Err("history_rewritten"));
    assert_eq!(refused(&|x| x.delete(people(x), 0).unwrap()), Err("history_rewritten"));
    let mut x = d.clone();
    let list = x.get(ROOT, "attachments").unwrap().unwrap().1;
    x.delete(&list, 0).unwrap();
    x.commit();
    let after = materialize_report(&x).unwrap();
    assert_eq!(
        check_report(&org, &Default::default(), &w, Some(&before), &after).map_err(|r| r.code()),
        Err("history_rewritten")
    );
    // The correction: a new entry; the old one stays in the history.
    let mut x = p.clone();
    let first = parties_before.parties[0].id.clone();
    let fix = Party { name: "张三".into(), contact: Some("13900000000".into()) };
    edit_parties(&mut x, &worker(2_000), &[], &[(first, fix)]).unwrap();
    let after = materialize_parties(&x).unwrap();
    assert_eq!(check_parties(&org, &w, Some(&parties_before), &after), Ok(()));
    assert_eq!((after.parties.len(), after.current_parties().len()), (2, 1));
}

#[test]
fn negative_head_counts_are_refused() {
    let org = demo_county(5);
    let (who, grid, town) = principal_worker(&org);
    let actors: BTreeSet<String> = [actor(1).to_hex_string()].into();
    let w = Writer { who: &who, actors: &actors };
    let d = report(&grid, &town);
    let before = materialize_report(&d).unwrap();
    let mut x = d.clone();
    // The local edit refuses it before writing…
    assert!(
        edit_report(&mut x, &worker(2_000), &ReportEdit { head_count: Some(-5), ..Default::default() })
            .is_err()
    );
    // …and validation refuses it when a forged client writes it anyway.
    let parties = x.get(ROOT, "parties").unwrap().unwrap().1;
    x.put(&parties, "head_count", -5i64).unwrap();
    x.commit();
    let after = materialize_report(&x).unwrap();
    assert_eq!(
        check_report(&org, &Default::default(), &w, Some(&before), &after).map_err(|r| r.code()),
        Err("malformed")
    );
}

#[test]
fn unknown_layout_versions_and_root_keys_are_refused() {
    let d = report("G1", "T1");
    assert!(doc::check_layout(&d, DocKind::Report).is_ok());
    let mut x = d.clone();
    x.put(ROOT, "layout", 99i64).unwrap();
    assert!(doc::check_layout(&x, DocKind::Report).is_err());
    let mut x = d.clone();
    x.put(ROOT, "13800000000", "x").unwrap();
    let e = doc::check_layout(&x, DocKind::Report).unwrap_err().to_string();
    assert!(!e.contains("13800000000"), "{e}");
    let mut x = d.clone();
    x.delete(ROOT, "layout").unwrap();
    assert!(doc::check_layout(&x, DocKind::Report).is_err());
}

#[test]
fn layout_errors_never_repeat_the_value_they_refuse() {
    let mut d = report("G1", "T1");
    d.put(ROOT, "urgency", "13812345678").unwrap();
    let e = materialize_report(&d).unwrap_err().to_string();
    assert!(!e.contains("13812345678"), "{e}");
    let mut d = report("G1", "T1");
    let authors = d.get(ROOT, "authors").unwrap().unwrap().1;
    d.put(&authors, "13812345678", "not a map").unwrap();
    assert!(!materialize_report(&d).unwrap_err().to_string().contains("13812345678"));
    let mut d = report("G1", "T1");
    d.put(ROOT, "kind", "13812345678").unwrap();
    assert!(!doc::doc_kind(&d).unwrap_err().to_string().contains("13812345678"));
}

#[test]
fn a_transition_id_must_name_the_actor_of_its_change() {
    let t = |id: &str| Transition {
        id: id.into(),
        parent: String::new(),
        action: Action::Escalate,
        author: "worker".into(),
        role: Role::GridWorker,
        from: Status::Open,
        from_level: Level::Grid,
        to: Status::Escalated,
        to_level: Level::Town,
        reason: String::new(),
        dept: None,
        units: Vec::new(),
        at: 0,
        applied: false,
    };
    let me = actor(1).to_hex_string();
    let operator = actor(3).to_hex_string();
    assert!(check_transition_id(&t(&format!("{me}/2")), &me).is_ok());
    assert!(check_transition_id(&t(&format!("{operator}/2")), &me).is_err(), "squatting another actor's id");
    for bad in [format!("{me}/"), format!("{me}/x"), format!("{me}2"), "2".to_string(), format!("{me}/1/2")] {
        assert!(check_transition_id(&t(&bad), &me).is_err(), "{bad}");
    }
}
