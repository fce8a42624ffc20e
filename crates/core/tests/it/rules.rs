//! Table tests: one case per merge rule and per validation rule, allowed and refused.

use std::collections::BTreeSet;

use automerge::{ActorId, AutoCommit, ObjType, ROOT, ReadDoc, transaction::Transactable};
use gridsync_core::doc::{self, Author};
use gridsync_core::lifecycle::{Action, Level, Status};
use gridsync_core::merge::Rule;
use gridsync_core::org::{Org, Principal, Role, Scope, demo_county};
use gridsync_core::patrol::{PatrolEdit, TrackPoint, edit_patrol, materialize_patrol, start_patrol};
use gridsync_core::report::*;
use gridsync_core::validate::{Refusal, Writer, check_patrol, check_report};

const WORKER: u8 = 1;
const ASSISTANT: u8 = 2;
const TOWN_OP: u8 = 3;

fn actor(n: u8) -> ActorId {
    ActorId::from([n; 16])
}

fn author(n: u8, at: i64) -> Author {
    let (user, role) = match n {
        WORKER => ("worker", Role::GridWorker),
        ASSISTANT => ("assistant", Role::GridAssistant),
        TOWN_OP => ("townop", Role::TownOperator),
        4 => ("countyop", Role::CountyOperator),
        _ => ("other-worker", Role::GridWorker),
    };
    Author { user: user.into(), role, at }
}

fn new_report(grid: &str, town: &str) -> NewReport {
    NewReport {
        id: uuid::Uuid::from_u128(42),
        grid: grid.into(),
        town: town.into(),
        category: Category::Dispute,
        title: "Boundary wall dispute".into(),
        description: "Two households argue over a wall.".into(),
        urgency: Urgency::Normal,
        location: Location { lat: Some(30.1), lon: Some(114.2), address: Some("东村3组".into()) },
        parties: vec![Party { name: "张三".into(), contact: Some("138".into()) }],
    }
}

/// A report created by the worker, and a replica of it for each of `others`.
fn replicas(others: &[u8]) -> (AutoCommit, Vec<AutoCommit>) {
    let mut base = create_report(actor(WORKER), &author(WORKER, 1_000), &new_report("G1", "T1")).unwrap();
    let copies = others
        .iter()
        .map(|&n| {
            let bytes = base.save();
            doc::load(&bytes, actor(n)).unwrap()
        })
        .collect();
    (base, copies)
}

fn sync(a: &mut AutoCommit, b: &mut AutoCommit) {
    let from_a = a.get_changes(&[]);
    let from_b = b.get_changes(&[]);
    doc::apply_changes(b, from_a).unwrap();
    doc::apply_changes(a, from_b).unwrap();
}

fn view(d: &AutoCommit) -> ReportView {
    materialize_report(d).unwrap()
}

fn edit(title: Option<&str>, urgency: Option<Urgency>) -> ReportEdit {
    ReportEdit { title: title.map(Into::into), urgency, ..Default::default() }
}

// ---------------------------------------------------------------- merge rules

#[test]
fn lww_authority_hub_edit_beats_concurrent_worker_edit_in_any_order() {
    for worker_first in [true, false] {
        let (mut w, mut r) = replicas(&[TOWN_OP]);
        let mut op = r.pop().unwrap();
        // The worker edits twice (higher Lamport counter), the operator once.
        edit_report(&mut w, &author(WORKER, 2_000), &edit(Some("worker 1"), None)).unwrap();
        edit_report(&mut w, &author(WORKER, 3_000), &edit(Some("worker 2"), None)).unwrap();
        edit_report(&mut op, &author(TOWN_OP, 2_500), &edit(Some("hub title"), None)).unwrap();
        if worker_first {
            sync(&mut w, &mut op)
        } else {
            sync(&mut op, &mut w)
        }
        let (vw, vo) = (view(&w), view(&op));
        assert_eq!(vw, vo);
        assert_eq!(vw.title, "hub title");
        let c = vw.conflicts.iter().find(|c| c.field == "title").expect("conflict recorded");
        assert_eq!(c.rule, Rule::LwwAuthority);
        assert_eq!(c.kept_by.as_deref(), Some("townop"));
        assert_eq!(c.discarded[0].value, "worker 2");
        assert_eq!(c.discarded[0].by.as_deref(), Some("worker"));
    }
}

#[test]
fn lww_authority_same_role_later_causal_write_wins_not_wall_clock() {
    let (mut w, mut r) = replicas(&[9]);
    let mut other = r.pop().unwrap();
    // Both are grid workers. The other's clock is far ahead, but the worker's write comes later in
    // causal (Lamport) order because it made more edits: the wall clock does not decide.
    edit_report(&mut other, &author(9, 9_999_999), &edit(Some("fast clock"), None)).unwrap();
    edit_report(&mut w, &author(WORKER, 2_000), &edit(Some("w1"), None)).unwrap();
    edit_report(&mut w, &author(WORKER, 2_001), &edit(Some("w2"), None)).unwrap();
    sync(&mut w, &mut other);
    let v = view(&w);
    assert_eq!(v.title, "w2");
    assert_eq!(v, view(&other));
    let c = v.conflicts.iter().find(|c| c.field == "title").unwrap();
    assert_eq!(c.discarded[0].value, "fast clock");
    assert_eq!(c.discarded[0].by.as_deref(), Some("other-worker"));
}

#[test]
fn urgency_max_does_not_go_down_by_accident() {
    let (mut w, mut r) = replicas(&[TOWN_OP]);
    let mut op = r.pop().unwrap();
    // The hub (more authority) lowers it while the worker raises it: the higher one wins.
    edit_report(&mut op, &author(TOWN_OP, 2_000), &edit(None, Some(Urgency::Low))).unwrap();
    edit_report(&mut w, &author(WORKER, 2_000), &edit(None, Some(Urgency::Critical))).unwrap();
    sync(&mut w, &mut op);
    let v = view(&w);
    assert_eq!(v.urgency, Urgency::Critical);
    let c = v.conflicts.iter().find(|c| c.field == "urgency").unwrap();
    assert_eq!(c.rule, Rule::UrgencyMax);
    assert_eq!(c.discarded[0].value, "low");
    assert_eq!(view(&op), v);

    // A deliberate lowering after seeing the value is not a conflict and stands.
    edit_report(&mut op, &author(TOWN_OP, 3_000), &edit(None, Some(Urgency::Normal))).unwrap();
    sync(&mut w, &mut op);
    let v = view(&w);
    assert_eq!(v.urgency, Urgency::Normal);
    assert!(v.conflicts.iter().all(|c| c.field != "urgency"));
}

#[test]
fn every_devices_notes_are_kept_and_text_merges_characterwise() {
    let (mut w, mut r) = replicas(&[ASSISTANT, TOWN_OP]);
    let mut op = r.pop().unwrap();
    let mut a = r.pop().unwrap();
    add_note(&mut w, &author(WORKER, 2_000), "worker note").unwrap();
    add_note(&mut a, &author(ASSISTANT, 2_000), "assistant note").unwrap();
    add_note(&mut op, &author(TOWN_OP, 2_000), "hub note").unwrap();
    let base = "Two households argue over a wall.";
    let d1 = ReportEdit { description: Some(format!("URGENT: {base}")), ..Default::default() };
    let d2 = ReportEdit { description: Some(format!("{base} Police called.")), ..Default::default() };
    edit_report(&mut w, &author(WORKER, 2_100), &d1).unwrap();
    edit_report(&mut a, &author(ASSISTANT, 2_100), &d2).unwrap();
    sync(&mut w, &mut a);
    sync(&mut a, &mut op);
    sync(&mut w, &mut op);
    let v = view(&w);
    assert_eq!(v, view(&a));
    assert_eq!(v, view(&op));
    let mut texts: Vec<&str> = v.notes.iter().map(|n| n.text.as_str()).collect();
    texts.sort();
    assert_eq!(texts, ["assistant note", "hub note", "worker note"]);
    assert_eq!(v.description, format!("URGENT: {base} Police called."));
}

#[test]
fn transition_precedence_escalation_survives_a_concurrent_self_resolve() {
    let (mut w, mut r) = replicas(&[ASSISTANT]);
    let mut a = r.pop().unwrap();
    add_transition(&mut w, &author(WORKER, 2_000), Action::SelfResolve, "settled", None).unwrap();
    add_transition(&mut a, &author(ASSISTANT, 1_500), Action::Escalate, "needs the hub", None).unwrap();
    sync(&mut w, &mut a);
    let v = view(&w);
    assert_eq!(v, view(&a));
    assert_eq!((v.status, v.level), (Status::Escalated, Level::Town));
    let c = v.conflicts.iter().find(|c| c.field == "lifecycle").unwrap();
    assert_eq!(c.rule, Rule::TransitionPrecedence);
    assert_eq!(c.kept_by.as_deref(), Some("assistant"));
    assert_eq!(c.discarded[0].by.as_deref(), Some("worker"));
    assert_eq!(v.transitions.iter().filter(|t| t.applied).count(), 1);
    // The next transition follows the winner.
    add_transition(&mut w, &author(TOWN_OP, 3_000), Action::Accept, "", None).unwrap();
    assert_eq!(view(&w).status, Status::Accepted);
}

#[test]
fn transition_precedence_a_closed_report_is_not_reopened() {
    let (mut w, mut r) = replicas(&[ASSISTANT]);
    let mut a = r.pop().unwrap();
    add_transition(&mut w, &author(WORKER, 2_000), Action::SelfResolve, "settled", None).unwrap();
    let mut op = doc::load(&w.save(), actor(TOWN_OP)).unwrap();
    add_transition(&mut op, &author(TOWN_OP, 2_500), Action::Close, "checked", None).unwrap();
    add_transition(&mut a, &author(ASSISTANT, 2_000), Action::Escalate, "", None).unwrap();
    sync(&mut op, &mut a);
    sync(&mut w, &mut a);
    let v = view(&w);
    assert_eq!(v.status, Status::Closed);
    assert_eq!(v, view(&a));
    assert_eq!(v, view(&op));
    // And nothing can be taken from closed.
    assert!(add_transition(&mut w, &author(TOWN_OP, 3_000), Action::Escalate, "", None).is_err());
}

// ---------------------------------------------------------------- validation

struct Case {
    org: Org,
    g1: String,
    t1: String,
    g_other_town: String,
    t2: String,
}

fn case() -> Case {
    let org = demo_county(5);
    let g1 = org.grids[0].clone();
    let other = org.grids.iter().find(|g| g.town != g1.town).unwrap().clone();
    Case { g1: g1.id, t1: g1.town, g_other_town: other.id, t2: other.town, org }
}

fn principal(n: u8, c: &Case) -> Principal {
    let a = author(n, 0);
    let scope = match a.role {
        Role::GridWorker if n == WORKER => Scope::Grids(vec![c.g1.clone()]),
        Role::GridWorker => Scope::Grids(vec![c.g_other_town.clone()]),
        Role::GridAssistant => Scope::Grids(vec![c.g1.clone()]),
        Role::TownOperator => Scope::Town(c.t1.clone()),
        _ => Scope::County,
    };
    Principal { user: a.user, role: a.role, scope }
}

/// Runs `write` on a copy of `doc` as device `n` and validates the difference.
fn check(
    c: &Case,
    n: u8,
    doc: Option<&AutoCommit>,
    write: impl FnOnce(&mut AutoCommit),
) -> Result<(), Refusal> {
    let who = principal(n, c);
    let actors: BTreeSet<String> = [actor(n).to_hex_string()].into();
    let w = Writer { who: &who, actors: &actors };
    let mut after = match doc {
        Some(d) => doc::load(&d.clone().save(), actor(n)).unwrap(),
        None => AutoCommit::new().with_actor(actor(n)),
    };
    let before = doc.map(|d| materialize_report(d).unwrap());
    write(&mut after);
    let after = materialize_report(&after).map_err(|e| Refusal::Malformed { message: e.to_string() })?;
    check_report(&c.org, &w, before.as_ref(), &after)
}

fn created(c: &Case) -> AutoCommit {
    create_report(actor(WORKER), &author(WORKER, 1_000), &new_report(&c.g1, &c.t1)).unwrap()
}

fn code(r: Result<(), Refusal>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(e) => e.code(),
    }
}

/// Writes a transition map directly, bypassing the local fold (what a forged client could send).
fn forge_transition(
    d: &mut AutoCommit,
    who: &Author,
    action: Action,
    from: (Status, Level),
    to: (Status, Level),
    parent: &str,
) {
    let list = match d.get(ROOT, "transitions").unwrap() {
        Some((_, id)) => id,
        None => unreachable!(),
    };
    let n = d.length(&list);
    let o = d.insert_object(&list, n, ObjType::Map).unwrap();
    for (k, v) in [
        ("id", format!("{}/{n}", d.get_actor().to_hex_string())),
        ("parent", parent.to_string()),
        ("action", action.to_string()),
        ("author", who.user.clone()),
        ("role", who.role.as_str().to_string()),
        ("from", from.0.to_string()),
        ("from_level", from.1.to_string()),
        ("to", to.0.to_string()),
        ("to_level", to.1.to_string()),
        ("reason", String::new()),
    ] {
        d.put(&o, k, v).unwrap();
    }
    d.put(&o, "at", 5i64).unwrap();
    let authors = d.get(ROOT, "authors").unwrap().unwrap().1;
    if d.get(&authors, d.get_actor().to_hex_string()).unwrap().is_none() {
        let e = d.put_object(&authors, d.get_actor().to_hex_string(), ObjType::Map).unwrap();
        d.put(&e, "user", who.user.as_str()).unwrap();
        d.put(&e, "role", who.role.as_str()).unwrap();
    }
    d.commit();
}

#[test]
fn validation_table() {
    let c = case();
    let base = created(&c);
    let open = (Status::Open, Level::Grid);
    let mut escalated = base.clone();
    add_transition(&mut escalated, &author(WORKER, 2_000), Action::Escalate, "", None).unwrap();
    let mut resolved = base.clone();
    add_transition(&mut resolved, &author(WORKER, 2_000), Action::SelfResolve, "", None).unwrap();
    let mut closed = resolved.clone();
    closed.set_actor(actor(TOWN_OP));
    add_transition(&mut closed, &author(TOWN_OP, 3_000), Action::Close, "", None).unwrap();
    let esc_tip = view(&escalated).tip;
    let mut accepted = escalated.clone();
    accepted.set_actor(actor(TOWN_OP));
    add_transition(&mut accepted, &author(TOWN_OP, 2_500), Action::Accept, "", None).unwrap();
    let acc_tip = view(&accepted).tip;
    let res_tip = view(&resolved).tip;

    let nr = |g: &str, t: &str| new_report(g, t);
    let create_as = |n: u8, r: NewReport| {
        move |d: &mut AutoCommit| {
            let a = d.get_actor().clone();
            *d = create_report(a, &author(n, 1), &r).unwrap();
        }
    };
    let cases: Vec<(&str, &'static str, Result<(), Refusal>)> = vec![
        ("worker creates in own grid", "ok", check(&c, WORKER, None, create_as(WORKER, nr(&c.g1, &c.t1)))),
        (
            "worker creates in another grid",
            "out_of_scope",
            check(&c, WORKER, None, create_as(WORKER, nr(&c.g_other_town, &c.t2))),
        ),
        (
            "report names the wrong town",
            "wrong_town",
            check(&c, WORKER, None, create_as(WORKER, nr(&c.g1, &c.t2))),
        ),
        ("unknown grid", "unknown_grid", check(&c, WORKER, None, create_as(WORKER, nr("G-nowhere", &c.t1)))),
        (
            "report in someone else's name",
            "not_your_name",
            check(&c, WORKER, None, create_as(ASSISTANT, nr(&c.g1, &c.t1))),
        ),
        (
            "town operator creates in own town",
            "ok",
            check(&c, TOWN_OP, None, create_as(TOWN_OP, nr(&c.g1, &c.t1))),
        ),
        (
            "worker edits title",
            "ok",
            check(&c, WORKER, Some(&base), |d| {
                edit_report(d, &author(WORKER, 2), &edit(Some("new"), None)).unwrap();
            }),
        ),
        (
            "assistant raises urgency",
            "ok",
            check(&c, ASSISTANT, Some(&base), |d| {
                edit_report(d, &author(ASSISTANT, 2), &edit(None, Some(Urgency::High))).unwrap();
            }),
        ),
        (
            "town operator edits",
            "ok",
            check(&c, TOWN_OP, Some(&base), |d| {
                edit_report(d, &author(TOWN_OP, 2), &edit(Some("hub"), None)).unwrap();
            }),
        ),
        (
            "worker of another grid edits",
            "out_of_scope",
            check(&c, 9, Some(&base), |d| {
                edit_report(d, &author(9, 2), &edit(Some("x"), None)).unwrap();
            }),
        ),
        (
            "moving to another grid",
            "immutable_field",
            check(&c, TOWN_OP, Some(&base), |d| {
                d.put(
                    ROOT,
                    "grid",
                    c.org.grids.iter().find(|g| g.town == c.t1 && g.id != c.g1).unwrap().id.as_str(),
                )
                .unwrap();
                d.commit();
            }),
        ),
        (
            "changing the reporter",
            "immutable_field",
            check(&c, WORKER, Some(&base), |d| {
                d.put(ROOT, "reporter", "someone").unwrap();
                d.commit();
            }),
        ),
        (
            "worker adds a note",
            "ok",
            check(&c, WORKER, Some(&base), |d| {
                add_note(d, &author(WORKER, 2), "n").unwrap();
            }),
        ),
        (
            "note in another's name",
            "not_your_name",
            check(&c, WORKER, Some(&base), |d| {
                add_note(d, &author(TOWN_OP, 2), "n").unwrap();
            }),
        ),
        (
            "deleting a note",
            "history_rewritten",
            check(
                &c,
                WORKER,
                Some(&{
                    let mut b = base.clone();
                    add_note(&mut b, &author(WORKER, 2), "n").unwrap();
                    b
                }),
                |d| {
                    let notes = d.get(ROOT, "notes").unwrap().unwrap().1;
                    d.delete(&notes, 0usize).unwrap();
                    d.commit();
                },
            ),
        ),
        (
            "worker self-resolves",
            "ok",
            check(&c, WORKER, Some(&base), |d| {
                add_transition(d, &author(WORKER, 2), Action::SelfResolve, "", None).unwrap();
            }),
        ),
        (
            "assistant escalates",
            "ok",
            check(&c, ASSISTANT, Some(&base), |d| {
                add_transition(d, &author(ASSISTANT, 2), Action::Escalate, "", None).unwrap();
            }),
        ),
        (
            "assistant cancels",
            "transition_not_allowed",
            check(&c, ASSISTANT, Some(&base), |d| {
                add_transition(d, &author(ASSISTANT, 2), Action::Cancel, "", None).unwrap();
            }),
        ),
        (
            "worker accepts (forged)",
            "transition_not_allowed",
            check(&c, WORKER, Some(&escalated), |d| {
                forge_transition(
                    d,
                    &author(WORKER, 2),
                    Action::Accept,
                    (Status::Escalated, Level::Town),
                    (Status::Accepted, Level::Town),
                    &esc_tip,
                )
            }),
        ),
        (
            "worker closes (forged)",
            "transition_not_allowed",
            check(&c, WORKER, Some(&resolved), |d| {
                forge_transition(
                    d,
                    &author(WORKER, 2),
                    Action::Close,
                    (Status::Resolved, Level::Grid),
                    (Status::Closed, Level::Grid),
                    &res_tip,
                )
            }),
        ),
        (
            "town operator accepts",
            "ok",
            check(&c, TOWN_OP, Some(&escalated), |d| {
                add_transition(d, &author(TOWN_OP, 2), Action::Accept, "", None).unwrap();
            }),
        ),
        (
            "town operator closes",
            "ok",
            check(&c, TOWN_OP, Some(&resolved), |d| {
                add_transition(d, &author(TOWN_OP, 2), Action::Close, "", None).unwrap();
            }),
        ),
        (
            "dispatch without a department (forged)",
            "no_department",
            check(&c, TOWN_OP, Some(&accepted), |d| {
                forge_transition(
                    d,
                    &author(TOWN_OP, 2),
                    Action::Dispatch,
                    (Status::Accepted, Level::Town),
                    (Status::Dispatched, Level::Town),
                    &acc_tip,
                )
            }),
        ),
        (
            "a report with more parties than any dispute has",
            "too_many",
            check(&c, WORKER, Some(&base), |d| {
                let many = (0..501).map(|i| Party { name: format!("p{i}"), contact: None }).collect();
                edit_report(d, &author(WORKER, 2), &ReportEdit { add_parties: many, ..Default::default() })
                    .unwrap();
            }),
        ),
        (
            "dispatch to a department",
            "ok",
            check(&c, TOWN_OP, Some(&accepted), |d| {
                add_transition(d, &author(TOWN_OP, 2), Action::Dispatch, "", Some("城管办")).unwrap();
            }),
        ),
        (
            "transition from a state its parent never reached",
            "transition_out_of_order",
            check(&c, TOWN_OP, Some(&base), |d| {
                forge_transition(
                    d,
                    &author(TOWN_OP, 2),
                    Action::Accept,
                    (Status::Escalated, Level::Town),
                    (Status::Accepted, Level::Town),
                    "",
                )
            }),
        ),
        (
            "transition with a lying target",
            "transition_not_allowed",
            check(&c, WORKER, Some(&base), |d| {
                forge_transition(
                    d,
                    &author(WORKER, 2),
                    Action::Escalate,
                    open,
                    (Status::Escalated, Level::County),
                    "",
                )
            }),
        ),
        (
            "editing a closed report",
            "report_finished",
            check(&c, WORKER, Some(&closed), |d| {
                edit_report(d, &author(WORKER, 2), &edit(Some("late"), None)).unwrap();
            }),
        ),
        (
            "noting a closed report",
            "ok",
            check(&c, WORKER, Some(&closed), |d| {
                add_note(d, &author(WORKER, 2), "thanks").unwrap();
            }),
        ),
        (
            "registering another device's actor",
            "not_your_name",
            check(&c, WORKER, Some(&base), |d| {
                let a = d.get(ROOT, "authors").unwrap().unwrap().1;
                let e = d.put_object(&a, actor(77).to_hex_string(), ObjType::Map).unwrap();
                d.put(&e, "user", "worker").unwrap();
                d.put(&e, "role", "grid_worker").unwrap();
                d.commit();
            }),
        ),
        (
            "breaking the layout",
            "malformed",
            check(&c, WORKER, Some(&base), |d| {
                d.put(ROOT, "notes", 5).unwrap();
                d.commit();
            }),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, want, got) in cases {
        let got_code = code(got.clone());
        if got_code != want {
            wrong.push(format!("{name}: want {want}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn patrol_validation_table() {
    let c = case();
    let worker = principal(WORKER, &c);
    let start = |n: u8| {
        start_patrol(actor(n), &author(n, 1_000), uuid::Uuid::from_u128(7), &c.g1, &c.t1, &["李四".into()])
            .unwrap()
    };
    let run = |n: u8, before: Option<&AutoCommit>, after: &AutoCommit| {
        let who = principal(n, &c);
        let actors: BTreeSet<String> = [actor(n).to_hex_string()].into();
        let b = before.map(|d| materialize_patrol(d).unwrap());
        check_patrol(
            &c.org,
            &Writer { who: &who, actors: &actors },
            b.as_ref(),
            &materialize_patrol(after).unwrap(),
        )
    };
    let p = start(WORKER);
    assert_eq!(run(WORKER, None, &p), Ok(()));
    assert_eq!(worker.user, "worker");
    let mut tracked = p.clone();
    let pts: Vec<TrackPoint> =
        (0..3).map(|i| TrackPoint { lat: 30.0, lon: 114.0 + i as f64 * 1e-4, at: i * 1000 }).collect();
    edit_patrol(&mut tracked, &author(WORKER, 2_000), &PatrolEdit::Track(pts)).unwrap();
    assert_eq!(run(WORKER, Some(&p), &tracked), Ok(()));
    assert_eq!(code(run(TOWN_OP, None, &start(TOWN_OP))), "role_cannot");
    assert_eq!(code(run(ASSISTANT, None, &p)), "not_your_name");
    let mut ended = tracked.clone();
    edit_patrol(&mut ended, &author(WORKER, 3_000), &PatrolEdit::End).unwrap();
    assert!(edit_patrol(&mut ended, &author(WORKER, 3_001), &PatrolEdit::Visit("5号".into())).is_err());
}
