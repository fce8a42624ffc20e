//! Hostile devices (issue 9, the document side): crafted changes built here in Rust, each pushed
//! through the real router, and what must hold afterwards — others keep syncing, the work a push
//! costs stays bounded, data survives.

use automerge::{Change, ObjType, ROOT, ReadDoc, transaction::Transactable};

use super::*;

/// Silences automerge's own panics inside the server's guard; assertion failures still print.
fn quiet_panics() {
    if std::env::var_os("SHOW_PANICS").is_some() {
        return;
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let ours =
            info.location().is_some_and(|l| !l.file().starts_with('/') && !l.file().contains("automerge"));
        if ours {
            default(info);
        }
    }));
}

/// A crafted edit, applied to a device's copy.
type Write = Box<dyn Fn(&mut AutoCommit)>;

fn pushed(id: u128, changes: &[Change]) -> Vec<PushedChange> {
    changes
        .iter()
        .map(|c| PushedChange {
            doc: uuid::Uuid::from_u128(id).to_string(),
            kind: DocKind::Report,
            change: base64::engine::general_purpose::STANDARD.encode(c.raw_bytes()),
        })
        .collect()
}

fn raw_pushed(id: u128, bytes: &[u8]) -> PushedChange {
    PushedChange {
        doc: uuid::Uuid::from_u128(id).to_string(),
        kind: DocKind::Report,
        change: base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

/// The changes `d` made since `heads`.
fn since(d: &mut AutoCommit, heads: &[automerge::ChangeHash]) -> Vec<Change> {
    d.get_changes(heads)
}

fn codes(r: &SyncResponse) -> Vec<String> {
    r.verdicts.iter().map(|v| v.code.clone().unwrap_or_else(|| format!("{:?}", v.outcome))).collect()
}

/// A report created and pushed by `w`; returns the device's copy and the response cursor.
async fn pushed_report(h: &Harness, w: &Device, id: u128) -> AutoCommit {
    let mut d = new_report(w, id, "wall");
    let r = h.sync(w, 0, push_all(id, &mut d)).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted]);
    d
}

/// A copy of `d` as another device holds it.
fn replica(d: &mut AutoCommit, by: &Device) -> AutoCommit {
    doc::load(&d.save(), by.actor.clone()).unwrap()
}

/// A title edit whose op writes the key `thtle` while replacing the op that set `title`.
fn poisoned_title_edit(d: &mut AutoCommit, w: &Device) -> Vec<u8> {
    edit_report(d, &author(w, 2_000), &ReportEdit { title: Some("y".into()), ..Default::default() }).unwrap();
    let mut bytes = d.get_last_local_change().unwrap().raw_bytes().to_vec();
    let at = bytes.windows(5).position(|x| x == b"title").unwrap();
    bytes[at..at + 5].copy_from_slice(b"thtle");
    bytes
}

// ---------------------------------------------------------------- 1: poisoned documents

#[tokio::test]
async fn item1_a_change_whose_document_cannot_be_reloaded_is_refused_and_everyone_keeps_syncing() {
    quiet_panics();
    let h = harness();
    let w = h.device("worker", 1).await;
    let mut d = pushed_report(&h, &w, 1).await;
    let poison = poisoned_title_edit(&mut d, &w);
    let r = h.sync(&w, 0, vec![raw_pushed(1, &poison)]).await;
    assert_eq!(outcomes(&r), [Outcome::Malformed], "{:?}", r.verdicts);
    // Every device in scope still reads the document from scratch…
    for (user, n) in [("assistant", 2), ("townop", 3), ("admin", 4)] {
        let dev = h.device(user, n).await;
        let page = h.sync(&dev, 0, vec![]).await;
        let mut local = Default::default();
        absorb(&mut local, &page, &dev.actor);
        assert_eq!(materialize_report(&local[&uuid::Uuid::from_u128(1).to_string()]).unwrap().title, "wall");
    }
    // …and the report still takes honest changes.
    let mut honest = new_report(&w, 1, "wall");
    let heads = honest.get_heads();
    add_note(&mut honest, &author(&w, 3_000), "still here").unwrap();
    let r = h.sync(&w, 0, pushed(1, &since(&mut honest, &heads))).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted]);
    assert_eq!(h.stored(1).await.notes.len(), 1);
}

#[tokio::test]
async fn item1_an_unreadable_stored_document_is_skipped_by_auto_escalation_and_does_not_sink_other_pushes() {
    use gridsync_server::store::DocWrite;
    quiet_panics();
    let h = harness();
    let w = h.device("worker", 1).await;
    // A critical report stored before these checks existed whose bytes no longer load (a known
    // automerge load crasher stands in for it), written straight into the store.
    let mut bad = new_report(&w, 1, "wall");
    let mut mem = new_report(&w, 1, "wall");
    edit_report(
        &mut mem,
        &author(&w, 1_500),
        &ReportEdit { urgency: Some(Urgency::Critical), ..Default::default() },
    )
    .unwrap();
    let crasher = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/automerge-crashers/47_AutoCommit__load_mutated_fixcsum_save.bin");
    let unreadable = std::fs::read(crasher).unwrap();
    let view = materialize_report(&mem).unwrap();
    let write = DocWrite {
        id: uuid::Uuid::from_u128(1).to_string(),
        kind: DocKind::Report,
        grid: w.grid.clone(),
        town: w.town.clone(),
        snapshot: unreadable,
        heads: mem.get_heads().iter().map(doc::hash_hex).collect(),
        changes: mem
            .get_changes(&[])
            .iter()
            .map(|c| (c.hash().0.to_vec(), c.raw_bytes().to_vec(), None))
            .collect(),
        view_json: serde_json::to_string(&view).unwrap(),
        conflicts_json: "[]".into(),
        status: Some(Status::Open),
        level: Some(Level::Grid),
        private: false,
        units_read_parties: false,
        urgency: Some(Urgency::Critical),
        at: 1,
    };
    h.state.store.commit_group(&[write], &[]).unwrap();
    assert!(
        doc::load(
            &h.state.store.load_doc(&uuid::Uuid::from_u128(1).to_string()).unwrap().unwrap().snapshot,
            w.actor.clone()
        )
        .is_err()
    );
    // A good critical report beside it.
    let mut good = new_report(&w, 2, "gas");
    edit_report(
        &mut good,
        &author(&w, 1_500),
        &ReportEdit { urgency: Some(Urgency::Critical), ..Default::default() },
    )
    .unwrap();
    h.sync(&w, 0, push_all(2, &mut good)).await;
    assert_eq!(
        gridsync_server::auto::run_once(&h.state).await.unwrap(),
        1,
        "the pass goes on past the bad one"
    );
    assert_eq!(h.stored(2).await.status, Status::Escalated);
    // A push touching the unreadable report and another: the other lands, the first waits.
    let heads = bad.get_heads();
    add_note(&mut bad, &author(&w, 4_000), "note").unwrap();
    let mut third = new_report(&w, 3, "drain");
    let mut changes = pushed(1, &since(&mut bad, &heads));
    changes.extend(push_all(3, &mut third));
    let r = h.sync(&w, 0, changes).await;
    assert_eq!(outcomes(&r), [Outcome::MissingDeps, Outcome::Accepted]);
    assert_eq!(r.verdicts[0].code.as_deref(), Some("document_unreadable"));
}

// ---------------------------------------------------------------- 3: compression bombs

#[tokio::test]
async fn item3_a_compressed_change_chunk_is_refused_before_it_is_inflated() {
    use std::io::Write;
    let h = harness();
    let w = h.device("worker", 1).await;
    // 64 MiB of zeros in a deflate-compressed change chunk (type 2).
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..64 {
        e.write_all(&block).unwrap();
    }
    let data = e.finish().unwrap();
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut n = data.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        chunk.push(if n == 0 { b } else { b | 0x80 });
        if n == 0 {
            break;
        }
    }
    chunk.extend_from_slice(&data);
    let req = SyncRequest { cursor: 0, changes: vec![raw_pushed(1, &chunk)], budget: None };
    let (status, json) = h.call("POST", "/v1/sync", Some(&w.token), serde_json::to_vec(&req).unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    // The server goes on.
    pushed_report(&h, &w, 2).await;
}

// ---------------------------------------------------------------- 4: one change stalls everyone

/// Writes `n` transition maps into `d` without committing, each an escalate from the start.
fn forks(d: &mut AutoCommit, by: &Device, n: usize) {
    let list = d.get(ROOT, "transitions").unwrap().unwrap().1;
    for _ in 0..n {
        let i = d.length(&list);
        let o = d.insert_object(&list, i, ObjType::Map).unwrap();
        for (k, v) in [
            ("id", format!("{}/{i}", by.actor.to_hex_string())),
            ("parent", String::new()),
            ("action", "escalate".into()),
            ("author", by.user.clone()),
            ("role", by.role.as_str().to_string()),
            ("from", "open".into()),
            ("from_level", "grid".into()),
            ("to", "escalated".into()),
            ("to_level", "town".into()),
            ("reason", String::new()),
        ] {
            d.put(&o, k, v).unwrap();
        }
        d.put(&o, "at", 1i64).unwrap();
    }
    // A forger registers its actor like any writer (an unregistered writer is refused outright).
    let authors = d.get(ROOT, "authors").unwrap().unwrap().1;
    let me = by.actor.to_hex_string();
    if d.get(&authors, &me).unwrap().is_none() {
        let e = d.put_object(&authors, &me, ObjType::Map).unwrap();
        d.put(&e, "user", by.user.as_str()).unwrap();
        d.put(&e, "role", by.role.as_str()).unwrap();
    }
    d.commit();
}

#[tokio::test]
async fn item4_a_change_with_hundreds_of_forks_is_refused_after_one_check() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let mut d = pushed_report(&h, &w, 1).await;
    for i in 0..200 {
        edit_report(
            &mut d,
            &author(&w, 2_000 + i),
            &ReportEdit { description: Some(format!("text {i}")), ..Default::default() },
        )
        .unwrap();
    }
    let r = h.sync(&w, 0, push_all(1, &mut d)).await;
    assert!(outcomes(&r).iter().all(|o| matches!(o, Outcome::Accepted | Outcome::Duplicate)));
    let heads = d.get_heads();
    forks(&mut d, &w, 499);
    let before = h.state.ingest.trials();
    let r = h.sync(&w, 0, pushed(1, &since(&mut d, &heads))).await;
    assert_eq!(codes(&r), ["too_many"]);
    // One trial: the fork check stops at the cap instead of reading the report 499 times.
    assert_eq!(h.state.ingest.trials() - before, 1);
    // Others keep syncing.
    let a = h.device("assistant", 2).await;
    let mut x = new_report(&a, 2, "drain");
    assert_eq!(outcomes(&h.sync(&a, 0, push_all(2, &mut x)).await), [Outcome::Accepted]);
}

// ---------------------------------------------------------------- 5: quadratic fallback

#[tokio::test]
async fn item5_one_bad_change_among_many_is_found_by_bisection_and_changes_per_document_are_capped() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let a = h.device("assistant", 2).await;
    let mut d = new_report(&w, 1, "wall");
    for i in 0..1_500 {
        add_note(&mut d, &author(&w, 2_000 + i), "n").unwrap();
    }
    // The last one is written in the assistant's name.
    add_note(&mut d, &author(&a, 9_000), "forged").unwrap();
    let before = h.state.ingest.trials();
    let r = h.sync(&w, 0, push_all(1, &mut d)).await;
    let o = outcomes(&r);
    assert_eq!(o.iter().filter(|o| **o == Outcome::Accepted).count(), 1_501);
    assert_eq!(r.verdicts.last().unwrap().code.as_deref(), Some("not_your_name"));
    let trials = h.state.ingest.trials() - before;
    // One change at a time would be 1,502 trials; bisection needs about 2·log2(n).
    assert!(trials <= 2 * 11 + 2, "{trials} trials");
    assert_eq!(h.stored(1).await.notes.len(), 1_500);

    // More than 5,000 changes of one document in one push: the excess is refused, the rest lands.
    let w2 = h.device("worker", 3).await;
    let mut p = new_report(&w2, 2, "many");
    for i in 0..5_000 {
        add_note(&mut p, &author(&w2, 2_000 + i), "n").unwrap();
    }
    let r = h.sync(&w2, 0, push_all(2, &mut p)).await;
    let mut seen_codes = codes(&r);
    seen_codes.dedup();
    assert_eq!(outcomes(&r).iter().filter(|o| **o == Outcome::Accepted).count(), 5_000, "{seen_codes:?}");
    assert_eq!(r.verdicts.last().unwrap().code.as_deref(), Some("too_many"));
}

// ---------------------------------------------------------------- 7: silent erasure

#[tokio::test]
async fn item7_replacing_the_notes_or_transitions_list_with_a_copy_is_refused_and_concurrent_work_survives() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let a = h.device("assistant", 2).await;
    let op = h.device("townop", 3).await;
    let mut d = new_report(&w, 1, "wall");
    add_note(&mut d, &author(&w, 1_500), "first").unwrap();
    add_transition(&mut d, &author(&w, 2_000), Action::Escalate, "help", None).unwrap();
    h.sync(&w, 0, push_all(1, &mut d)).await;
    let mut hub = replica(&mut d, &op);
    // The assistant replaces each list with an identical copy (a new object).
    for key in ["notes", "transitions"] {
        let mut asst = replica(&mut d, &a);
        let heads = asst.get_heads();
        let view = materialize_report(&asst).unwrap();
        let list = asst.put_object(ROOT, key, ObjType::List).unwrap();
        if key == "notes" {
            for (i, n) in view.notes.iter().enumerate() {
                let o = asst.insert_object(&list, i, ObjType::Map).unwrap();
                for (k, v) in [("id", &n.id), ("author", &n.author), ("text", &n.text)] {
                    asst.put(&o, k, v.as_str()).unwrap();
                }
                asst.put(&o, "role", n.role.as_str()).unwrap();
                asst.put(&o, "at", n.at).unwrap();
            }
        } else {
            for (i, t) in view.transitions.iter().enumerate() {
                let o = asst.insert_object(&list, i, ObjType::Map).unwrap();
                for (k, v) in [
                    ("id", t.id.clone()),
                    ("parent", t.parent.clone()),
                    ("action", t.action.to_string()),
                    ("author", t.author.clone()),
                    ("role", t.role.as_str().into()),
                    ("from", t.from.to_string()),
                    ("from_level", t.from_level.to_string()),
                    ("to", t.to.to_string()),
                    ("to_level", t.to_level.to_string()),
                    ("reason", t.reason.clone()),
                ] {
                    asst.put(&o, k, v).unwrap();
                }
                asst.put(&o, "at", t.at).unwrap();
            }
        }
        asst.commit();
        assert_eq!(materialize_report(&asst).unwrap().notes, view.notes, "the view cannot tell");
        let r = h.sync(&a, 0, pushed(1, &since(&mut asst, &heads))).await;
        assert_eq!(codes(&r), ["history_rewritten"], "{key}");
    }
    // The hub's concurrent offline accept and note land and stay.
    let heads = hub.get_heads();
    add_transition(&mut hub, &author(&op, 3_000), Action::Accept, "ok", None).unwrap();
    add_note(&mut hub, &author(&op, 3_100), "on it").unwrap();
    let r = h.sync(&op, 0, pushed(1, &since(&mut hub, &heads))).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted, Outcome::Accepted]);
    let v = h.stored(1).await;
    assert_eq!(v.status, Status::Accepted);
    assert_eq!(v.notes.len(), 2);
}

// ---------------------------------------------------------------- 9: personal data

async fn stored_parties(h: &Harness, pid: &str) -> gridsync_core::parties::PartiesView {
    let rec = h.state.store.load_doc(pid).unwrap().unwrap();
    let d = doc::load(&rec.snapshot, automerge::ActorId::random()).unwrap();
    gridsync_core::parties::materialize_parties(&d).unwrap()
}

#[tokio::test]
async fn item9_parties_and_attachments_are_append_only_and_corrections_are_new_entries() {
    use gridsync_core::parties::{create_parties, edit_parties, parties_id};
    let h = harness();
    let w = h.device("worker", 1).await;
    let mut d = new_report(&w, 1, "wall");
    let att = Attachment { sha256: "b".repeat(64), mime: "image/jpeg".into(), size: 1, name: "a.jpg".into() };
    add_attachment(&mut d, &author(&w, 1_200), &att).unwrap();
    h.sync(&w, 0, push_all(1, &mut d)).await;
    // The parties live in their own document, next to the report.
    let report = uuid::Uuid::from_u128(1).to_string();
    let pid = parties_id(&report).unwrap();
    let zhang = Party { name: "张三".into(), contact: Some("13800000000".into()) };
    let mut p =
        create_parties(w.actor.clone(), &author(&w, 1_100), &report, &w.grid, &w.town, &[zhang]).unwrap();
    let r = h.sync(&w, 0, parties_pushed(&pid, &p.get_changes(&[]))).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted]);
    // A party written into the report itself is refused: the report reaches assistants.
    let mut x = replica(&mut d, &w);
    let heads = x.get_heads();
    let report_people = {
        let parties = x.get(ROOT, "parties").unwrap().unwrap().1;
        x.get(&parties, "people").unwrap().unwrap().1
    };
    let entry = x.insert_object(&report_people, 0, ObjType::Map).unwrap();
    x.put(&entry, "name", "李四").unwrap();
    x.commit();
    let r = h.sync(&w, 0, pushed(1, &since(&mut x, &heads))).await;
    assert_eq!(codes(&r), ["parties_in_report"]);
    let people = |d: &AutoCommit| d.get(ROOT, "people").unwrap().unwrap().1;
    let attempts: Vec<(&str, Write)> = vec![
        (
            "a phone changed in place",
            Box::new(move |x: &mut AutoCommit| {
                let entry = x.get(people(x), 0).unwrap().unwrap().1;
                x.put(&entry, "contact", "13900000000").unwrap();
            }),
        ),
        ("a party removed", Box::new(move |x: &mut AutoCommit| x.delete(people(x), 0).unwrap())),
    ];
    for (what, write) in attempts {
        let mut x = replica(&mut p, &w);
        let heads = x.get_heads();
        write(&mut x);
        x.commit();
        let r = h.sync(&w, 0, parties_pushed(&pid, &since(&mut x, &heads))).await;
        assert_eq!(codes(&r), ["history_rewritten"], "{what}");
    }
    let mut x = replica(&mut d, &w);
    let heads = x.get_heads();
    let l = x.get(ROOT, "attachments").unwrap().unwrap().1;
    x.delete(&l, 0).unwrap();
    x.commit();
    let r = h.sync(&w, 0, pushed(1, &since(&mut x, &heads))).await;
    assert_eq!(codes(&r), ["history_rewritten"], "an attachment removed");
    // A correction is a new entry naming the one it supersedes; the old one stays in the history.
    let heads = p.get_heads();
    let first = stored_parties(&h, &pid).await.parties[0].id.clone();
    let fix = Party { name: "张三".into(), contact: Some("13900000000".into()) };
    assert_eq!(edit_parties(&mut p, &author(&w, 3_000), &[], &[(first.clone(), fix)]).unwrap(), Some(1));
    let r = h.sync(&w, 0, parties_pushed(&pid, &since(&mut p, &heads))).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted]);
    let v = stored_parties(&h, &pid).await;
    assert_eq!(v.parties.len(), 2, "both entries are kept");
    assert_eq!(v.parties[1].supersedes.as_deref(), Some(first.as_str()));
    assert_eq!(v.corrected_parties, vec![first]);
    let current = v.current_parties();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].contact.as_deref(), Some("13900000000"));
    assert_eq!(h.stored(1).await.attachments.len(), 1);
    // A correction must name an earlier entry: not a made-up id, not itself.
    let mut x = replica(&mut p, &w);
    let heads = x.get_heads();
    let people_obj = people(&x);
    let entry = x.insert_object(&people_obj, 2, automerge::ObjType::Map).unwrap();
    x.put(&entry, "name", "李四").unwrap();
    x.put(&entry, "supersedes", "99@abcdef").unwrap();
    x.commit();
    let r = h.sync(&w, 0, parties_pushed(&pid, &since(&mut x, &heads))).await;
    assert_eq!(codes(&r), ["malformed"]);
    assert_eq!(stored_parties(&h, &pid).await.parties.len(), 2);
    // A parties document under another report's derived id is refused.
    let other = uuid::Uuid::from_u128(2).to_string();
    let mut q = create_parties(w.actor.clone(), &author(&w, 1_100), &other, &w.grid, &w.town, &[]).unwrap();
    let r = h.sync(&w, 0, parties_pushed(&pid.replace('1', "3"), &q.get_changes(&[]))).await;
    assert_eq!(codes(&r), ["malformed"]);
}

// ---------------------------------------------------------------- 10: hub blocked for good

#[tokio::test]
async fn item10_squatted_transition_ids_and_forged_forks_cannot_lock_the_hub_out() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let op = h.device("townop", 3).await;
    let mut d = new_report(&w, 1, "wall");
    let created = d.get_heads();
    add_transition(&mut d, &author(&w, 2_000), Action::Escalate, "help", None).unwrap();
    h.sync(&w, 0, push_all(1, &mut d)).await;
    // The worker squats the id the operator's next transition will take.
    let mut squat = replica(&mut d, &w);
    let c = forge_transition(
        &mut squat,
        &w,
        Action::Escalate,
        "",
        (Status::Open, Level::Grid),
        (Status::Escalated, Level::Town),
    );
    let mut forged = c.raw_bytes().to_vec();
    let mine = format!("{}/1", w.actor.to_hex_string());
    let theirs = format!("{}/1", op.actor.to_hex_string());
    let at = forged.windows(mine.len()).position(|x| x == mine.as_bytes()).unwrap();
    forged[at..at + mine.len()].copy_from_slice(theirs.as_bytes());
    let r = h.sync(&w, 0, vec![raw_pushed(1, &forged)]).await;
    assert_eq!(codes(&r), ["malformed"]);
    // Forks from the creation state by the same user on many devices: past the cap, refused.
    let mut refused = 0;
    for k in 0..9u8 {
        let dev = h.device("worker", 20 + k).await;
        let mut f = doc::load(&d.save(), dev.actor.clone()).unwrap().fork_at(&created).unwrap();
        f.set_actor(dev.actor.clone());
        let heads = f.get_heads();
        forks(&mut f, &dev, 4);
        let r = h.sync(&dev, 0, pushed(1, &since(&mut f, &heads))).await;
        if codes(&r) == ["too_many"] {
            refused += 1;
        } else {
            assert_eq!(outcomes(&r), [Outcome::Accepted], "{:?}", r.verdicts);
        }
    }
    assert!(refused >= 1, "forks past the per-author cap are refused");
    // The hub still accepts, under its own id.
    let mut hub = doc::load(
        &h.state.store.load_doc(&uuid::Uuid::from_u128(1).to_string()).unwrap().unwrap().snapshot,
        op.actor.clone(),
    )
    .unwrap();
    let heads = hub.get_heads();
    add_transition(&mut hub, &author(&op, 5_000), Action::Accept, "ok", None).unwrap();
    let r = h.sync(&op, 0, pushed(1, &since(&mut hub, &heads))).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted], "{:?}", r.verdicts);
    assert_eq!(h.stored(1).await.status, Status::Accepted);
}

// ---------------------------------------------------------------- 11: impersonating the server

#[tokio::test]
async fn item11_the_servers_own_actors_cannot_be_registered_by_a_device() {
    let h = harness();
    for actor in [h.state.system.actor.clone(), "0".repeat(32)] {
        let body = serde_json::json!({ "actor": actor, "label": "phone" });
        let (status, json) =
            h.call("POST", "/v1/devices", Some(&h.token("worker")), body.to_string().into_bytes()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{json}");
    }
    // An ordinary actor still registers.
    h.device("worker", 1).await;
}

// ---------------------------------------------------------------- 12: refusals echo values

#[tokio::test]
async fn item12_refusals_never_echo_values_messages_are_short_and_stored_refusals_are_capped() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let mut d = pushed_report(&h, &w, 1).await;
    let heads = d.get_heads();
    d.put(ROOT, "urgency", "13812345678").unwrap();
    d.commit();
    let r = h.sync(&w, 0, pushed(1, &since(&mut d, &heads))).await;
    assert_eq!(outcomes(&r), [Outcome::Forbidden]);
    let msg = r.verdicts[0].message.clone().unwrap();
    assert!(!msg.contains("13812345678") && msg.chars().count() <= 301, "{msg}");
    // Forty refused reports in one push (another grid): every verdict, at most 20 stored rows.
    let other = h.org.grids.iter().find(|g| g.id != w.grid && g.town == w.town).unwrap().clone();
    let mut changes = Vec::new();
    for i in 0..40u128 {
        let mut x = create_report(
            w.actor.clone(),
            &author(&w, 1_000),
            &NewReport {
                anonymous: false,
                id: uuid::Uuid::from_u128(100 + i),
                grid: other.id.clone(),
                town: other.town.clone(),
                category: Category::Other,
                title: "x".into(),
                description: String::new(),
                urgency: Urgency::Normal,
                location: Location::default(),
                parties: vec![],
            },
        )
        .unwrap();
        changes.extend(push_all(100 + i, &mut x));
    }
    let r = h.sync(&w, 0, changes).await;
    assert_eq!(r.verdicts.len(), 40);
    assert!(codes(&r).iter().all(|c| c == "out_of_scope"));
    let db = rusqlite::Connection::open(h._dir.path().join("gridsync.sqlite3")).unwrap();
    let stored: i64 = db.query_row("SELECT COUNT(*) FROM refusals", [], |r| r.get(0)).unwrap();
    assert!(stored <= 21, "{stored} refusal rows");
    let leaked: i64 = db
        .query_row("SELECT COUNT(*) FROM refusals WHERE message LIKE '%13812345678%'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(leaked, 0);
    let (_, devices) = h.call("GET", "/v1/admin/devices", Some(&h.token("admin")), vec![]).await;
    assert!(!devices.to_string().contains("13812345678"));
}

// ---------------------------------------------------------------- 20: layouts

#[tokio::test]
async fn item20_unknown_layouts_unknown_root_keys_and_negative_head_counts_are_refused() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let mut d = pushed_report(&h, &w, 1).await;
    let writes: Vec<(&str, Write)> = vec![
        ("layout 99", Box::new(|x: &mut AutoCommit| x.put(ROOT, "layout", 99i64).unwrap())),
        ("an unknown root key", Box::new(|x: &mut AutoCommit| x.put(ROOT, "extra", "x").unwrap())),
        (
            "a negative head count",
            Box::new(|x: &mut AutoCommit| {
                let p = x.get(ROOT, "parties").unwrap().unwrap().1;
                x.put(&p, "head_count", -3i64).unwrap();
            }),
        ),
    ];
    for (what, write) in writes {
        let mut x = replica(&mut d, &w);
        let heads = x.get_heads();
        write(&mut x);
        x.commit();
        let r = h.sync(&w, 0, pushed(1, &since(&mut x, &heads))).await;
        assert_eq!(codes(&r), ["malformed"], "{what}");
    }
    // A new report of another layout version is refused too.
    let mut v2 = new_report(&w, 2, "v2");
    v2.put(ROOT, "layout", 2i64).unwrap();
    v2.commit();
    let r = h.sync(&w, 0, push_all(2, &mut v2)).await;
    assert!(codes(&r).iter().any(|c| c == "malformed"), "{:?}", r.verdicts);
}

// ---------------------------------------------------------------- 8: forks from old dependencies

#[tokio::test]
async fn item8_a_transition_must_build_on_every_transition_the_device_has_acknowledged() {
    let mut h = harness();
    h.add_town_operator("townop2").await;
    h.add_town_operator("townop3").await;
    let w = h.device("worker", 1).await;
    let op = h.device("townop", 3).await;
    let mut d = new_report(&w, 1, "wall");
    add_transition(&mut d, &author(&w, 2_000), Action::Escalate, "help", None).unwrap();
    h.sync(&w, 0, push_all(1, &mut d)).await;
    // Device C (townop3) takes the escalated report and goes offline.
    let c = h.device("townop3", 5).await;
    let page_c = h.sync(&c, 0, vec![]).await;
    let mut local_c = Default::default();
    absorb(&mut local_c, &page_c, &c.actor);
    // The town hands it to the county.
    let mut hub = replica(&mut d, &op);
    let escalated_at_town = hub.get_heads();
    let heads = hub.get_heads();
    add_transition(&mut hub, &author(&op, 3_000), Action::Escalate, "county", None).unwrap();
    let r = h.sync(&op, 0, pushed(1, &since(&mut hub, &heads))).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted]);
    // Device B (townop2) syncs and so holds the county escalation…
    let b = h.device("townop2", 4).await;
    let page = h.sync(&b, 0, vec![]).await;
    h.sync(&b, page.cursor, vec![]).await; // acknowledges it
    // …then builds accept → resolve → close on the state before it, and claims cursor 0.
    let mut forged = doc::load(&hub.save(), b.actor.clone()).unwrap().fork_at(&escalated_at_town).unwrap();
    forged.set_actor(b.actor.clone());
    let heads = forged.get_heads();
    for (i, a) in [Action::Accept, Action::Resolve, Action::Close].into_iter().enumerate() {
        add_transition(&mut forged, &author(&b, 4_000 + i as i64), a, "done", None).unwrap();
    }
    let r = h.sync(&b, 0, pushed(1, &since(&mut forged, &heads))).await;
    assert_eq!(codes(&r), ["transition_not_from_latest", "depends_on_refused", "depends_on_refused"]);
    let v = h.stored(1).await;
    assert_eq!((v.status, v.level), (Status::Escalated, Level::County), "the county's branch stands");
    // Device C really was offline: its concurrent accept, built on what it held, is accepted and
    // left to the merge rules (the escalation to the county outranks it).
    let mut dc = local_c.remove(&uuid::Uuid::from_u128(1).to_string()).unwrap();
    let heads = dc.get_heads();
    add_transition(&mut dc, &author(&c, 5_000), Action::Accept, "mine", None).unwrap();
    let r = h.sync(&c, page_c.cursor, pushed(1, &since(&mut dc, &heads))).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted], "{:?}", r.verdicts);
    assert_eq!(h.stored(1).await.level, Level::County);
}
