//! Table tests: one case per merge rule and per validation rule, allowed and refused.

use std::collections::BTreeSet;

use automerge::{ActorId, AutoCommit, ObjType, ROOT, ReadDoc, transaction::Transactable};
use gridsync_core::doc::{self, Author};
use gridsync_core::lifecycle::{Action, Level, Status};
use gridsync_core::merge::Rule;
use gridsync_core::org::{Org, Principal, Role, Scope, demo_county};
use gridsync_core::patrol::{PatrolEdit, TrackPoint, edit_patrol, materialize_patrol, start_patrol};
use gridsync_core::policy::{CloseNeed, ClosedLoop};
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
        anonymous: false,
        id: uuid::Uuid::from_u128(42),
        grid: grid.into(),
        town: town.into(),
        category: Category::Dispute,
        title: "Boundary wall dispute".into(),
        description: "Two households argue over a wall.".into(),
        urgency: Urgency::Normal,
        location: Location { lat: Some(30.1), lon: Some(114.2), address: Some("东村3组".into()) },
        parties: vec![],
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
    check_under(&ClosedLoop::default(), c, n, doc, write)
}

/// [`check`] under the closed-loop rules of a county's policy.
fn check_under(
    rules: &ClosedLoop,
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
    check_report(&c.org, rules, &w, before.as_ref(), &after)
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
            "a party written into the report itself (it reaches assistants)",
            "parties_in_report",
            check(&c, WORKER, Some(&base), party_in_report("李四", "13912345678")),
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

// ---------------------------------------------------------------- input limits, contacts, positions

#[test]
fn text_limits_count_characters_and_never_echo_the_value() {
    use gridsync_core::validate::{MAX_TITLE_CHARS, check_text};
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "ok"),
        ("exactly the limit", "a".repeat(MAX_TITLE_CHARS), "ok"),
        ("the limit in Chinese (3 bytes each)", "网".repeat(MAX_TITLE_CHARS), "ok"),
        ("one over", "a".repeat(MAX_TITLE_CHARS + 1), "too_long"),
        ("one over in Chinese", "网".repeat(MAX_TITLE_CHARS + 1), "too_long"),
        ("far over", "秘".repeat(100_000), "too_long"),
    ];
    for (name, value, want) in cases {
        let got = check_text("the title", &value, MAX_TITLE_CHARS);
        assert_eq!(code(got.clone()), want, "{name}");
        if let Err(e) = got {
            assert_eq!(e, Refusal::TooLong { field: "the title".into(), max: MAX_TITLE_CHARS });
            let msg = e.to_string();
            assert!(msg.contains("the title") && msg.contains("200"), "{msg}");
            assert!(!msg.contains("aaaa"), "{msg}");
            assert!(!msg.contains('网') && !msg.contains('秘'), "{msg}");
        }
    }
}

#[test]
fn contacts_table() {
    use gridsync_core::validate::check_contact;
    let allowed = [
        "13800000000",
        "138 0000 0000",
        "138-0000-0000",
        "+8613800000000",
        "+86 138 0000 0000",
        "8613912345678",
        "19912345678",
        "010-12345678",
        "0571-8765432",
        "0571-87654321",
        "01012345678",
        "057187654321",
        "021 6123 4567",
    ];
    for c in allowed {
        assert_eq!(check_contact(c), Ok(()), "{c} should be accepted");
    }
    let refused = [
        "",
        "138",
        "1380000000",
        "138000000001",
        "12800000000",
        "23800000000",
        "+1 415 555 0100",
        "+8612345678901",
        "010-123456",
        "010-123456789",
        "10-12345678",
        "0010-1234567",
        "010-01234567",
        "zhangsan@example.com",
        "１３８００００００００",
        "call 13800000000",
    ];
    for c in refused {
        let got = check_contact(c);
        assert_eq!(got, Err(Refusal::BadContact), "{c:?} should be refused");
        // One fixed message for every refused value: nothing of the value is echoed.
        assert_eq!(got.unwrap_err().to_string(), Refusal::BadContact.to_string());
    }
    assert!(!Refusal::BadContact.to_string().contains("zhangsan"));
    assert_eq!(Refusal::BadContact.code(), "bad_contact");
}

#[test]
fn locations_table() {
    use gridsync_core::org::BBox;
    use gridsync_core::validate::check_location;
    let org = demo_county(5);
    let mut unbounded = org.clone();
    unbounded.county.bbox = None;
    let cases: [(&str, &Org, f64, f64, &str); 9] = [
        ("inside", &org, 30.5, 114.25, "ok"),
        ("on the edge", &org, org.county.bbox.unwrap().min_lat, 114.0, "ok"),
        ("Beijing", &org, 39.9, 116.4, "outside_county"),
        ("just east", &org, 30.0, 114.56, "outside_county"),
        ("NaN", &org, f64::NAN, 114.0, "outside_county"),
        ("infinite", &org, 30.0, f64::NEG_INFINITY, "outside_county"),
        ("no box: anywhere on Earth", &unbounded, -33.9, 151.2, "ok"),
        ("no box: off the planet", &unbounded, 91.0, 0.0, "outside_county"),
        ("no box: NaN", &unbounded, 0.0, f64::NAN, "outside_county"),
    ];
    for (name, o, lat, lon, want) in cases {
        assert_eq!(code(check_location(o, lat, lon)), want, "{name}");
    }
    let _ = BBox { min_lat: 0.0, min_lon: 0.0, max_lat: 1.0, max_lon: 1.0 };
}

#[test]
fn report_values_are_checked_when_new_or_changed_only() {
    use gridsync_core::validate::{
        MAX_ADDRESS_CHARS, MAX_DEPT_CHARS, MAX_DESCRIPTION_CHARS, MAX_NOTE_CHARS, MAX_REASON_CHARS,
        MAX_TITLE_CHARS,
    };
    let c = case();
    let base = created(&c);
    // A report stored before the limits existed: every value is now out of bounds.
    let mut old = new_report(&c.g1, &c.t1);
    old.title = "t".repeat(MAX_TITLE_CHARS + 5);
    old.description = "d".repeat(MAX_DESCRIPTION_CHARS + 5);
    old.location = Location { lat: Some(39.9), lon: Some(116.4), address: Some("a".repeat(300)) };
    old.parties = vec![Party { name: "n".repeat(100), contact: Some("138".into()) }];
    let legacy = create_report(actor(WORKER), &author(WORKER, 1_000), &old).unwrap();
    let mut escalated = base.clone();
    add_transition(&mut escalated, &author(WORKER, 2_000), Action::Escalate, "", None).unwrap();
    let mut accepted = escalated.clone();
    accepted.set_actor(actor(TOWN_OP));
    add_transition(&mut accepted, &author(TOWN_OP, 2_500), Action::Accept, "", None).unwrap();

    let create_with = |f: fn(&mut NewReport)| {
        let c = &c;
        move |d: &mut AutoCommit| {
            let mut r = new_report(&c.g1, &c.t1);
            f(&mut r);
            *d = create_report(d.get_actor().clone(), &author(WORKER, 1), &r).unwrap();
        }
    };
    let edit_with = |e: ReportEdit| {
        move |d: &mut AutoCommit| {
            edit_report(d, &author(WORKER, 2), &e).unwrap();
        }
    };
    let cases: Vec<(&str, &str, Result<(), Refusal>)> = vec![
        ("create: all within limits", "ok", check(&c, WORKER, None, create_with(|_| {}))),
        (
            "create: title at the limit",
            "ok",
            check(&c, WORKER, None, create_with(|r| r.title = "题".repeat(MAX_TITLE_CHARS))),
        ),
        (
            "create: title over",
            "too_long",
            check(&c, WORKER, None, create_with(|r| r.title = "题".repeat(MAX_TITLE_CHARS + 1))),
        ),
        (
            "create: description over",
            "too_long",
            check(&c, WORKER, None, create_with(|r| r.description = "x".repeat(MAX_DESCRIPTION_CHARS + 1))),
        ),
        (
            "create: address over",
            "too_long",
            check(
                &c,
                WORKER,
                None,
                create_with(|r| r.location.address = Some("址".repeat(MAX_ADDRESS_CHARS + 1))),
            ),
        ),
        (
            "create: outside the county",
            "outside_county",
            check(&c, WORKER, None, create_with(|r| r.location.lat = Some(39.9))),
        ),
        ("create: latitude alone", "ok", check(&c, WORKER, None, create_with(|r| r.location.lon = None))),
        (
            "edit: title over",
            "too_long",
            check(
                &c,
                WORKER,
                Some(&base),
                edit_with(ReportEdit { title: Some("t".repeat(MAX_TITLE_CHARS + 1)), ..Default::default() }),
            ),
        ),
        (
            "edit: position outside",
            "outside_county",
            check(
                &c,
                WORKER,
                Some(&base),
                edit_with(ReportEdit { lat: Some(39.9), lon: Some(116.4), ..Default::default() }),
            ),
        ),
        (
            "edit: position inside",
            "ok",
            check(
                &c,
                WORKER,
                Some(&base),
                edit_with(ReportEdit { lat: Some(30.2), lon: Some(114.1), ..Default::default() }),
            ),
        ),
        (
            "note at the limit",
            "ok",
            check(&c, WORKER, Some(&base), |d| {
                add_note(d, &author(WORKER, 2), &"记".repeat(MAX_NOTE_CHARS)).unwrap();
            }),
        ),
        (
            "note over",
            "too_long",
            check(&c, WORKER, Some(&base), |d| {
                add_note(d, &author(WORKER, 2), &"记".repeat(MAX_NOTE_CHARS + 1)).unwrap();
            }),
        ),
        (
            "reason over",
            "too_long",
            check(&c, WORKER, Some(&base), |d| {
                add_transition(
                    d,
                    &author(WORKER, 2),
                    Action::Escalate,
                    &"r".repeat(MAX_REASON_CHARS + 1),
                    None,
                )
                .unwrap();
            }),
        ),
        (
            "department over",
            "too_long",
            check(&c, TOWN_OP, Some(&accepted), |d| {
                add_transition(
                    d,
                    &author(TOWN_OP, 3),
                    Action::Dispatch,
                    "",
                    Some(&"部".repeat(MAX_DEPT_CHARS + 1)),
                )
                .unwrap();
            }),
        ),
        (
            "department at the limit",
            "ok",
            check(&c, TOWN_OP, Some(&accepted), |d| {
                add_transition(
                    d,
                    &author(TOWN_OP, 3),
                    Action::Dispatch,
                    "",
                    Some(&"部".repeat(MAX_DEPT_CHARS)),
                )
                .unwrap();
            }),
        ),
        // Stored values over today's limits do not block other edits.
        (
            "legacy: a note",
            "ok",
            check(&c, WORKER, Some(&legacy), |d| {
                add_note(d, &author(WORKER, 2), "到场").unwrap();
            }),
        ),
        (
            "legacy: urgency",
            "ok",
            check(
                &c,
                WORKER,
                Some(&legacy),
                edit_with(ReportEdit { urgency: Some(Urgency::High), ..Default::default() }),
            ),
        ),
        (
            "legacy: a party added beside its own (new parties go in the parties document)",
            "parties_in_report",
            check(&c, WORKER, Some(&legacy), party_in_report("王五", "13912345678")),
        ),
        (
            "legacy: the title, still too long",
            "too_long",
            check(
                &c,
                WORKER,
                Some(&legacy),
                edit_with(ReportEdit { title: Some("t".repeat(MAX_TITLE_CHARS + 1)), ..Default::default() }),
            ),
        ),
        (
            "legacy: the title, shortened",
            "ok",
            check(
                &c,
                WORKER,
                Some(&legacy),
                edit_with(ReportEdit { title: Some("围墙".into()), ..Default::default() }),
            ),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, want, got) in cases {
        if code(got.clone()) != want {
            wrong.push(format!("{name}: want {want}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn patrol_values_are_checked_when_new() {
    use gridsync_core::patrol::{CheckIn, PatrolView};
    use gridsync_core::validate::{MAX_ADDRESS_CHARS, MAX_DESCRIPTION_CHARS};
    let c = case();
    let who = principal(WORKER, &c);
    let actors: BTreeSet<String> = [actor(WORKER).to_hex_string()].into();
    let w = Writer { who: &who, actors: &actors };
    let p = start_patrol(actor(WORKER), &author(WORKER, 1_000), uuid::Uuid::from_u128(8), &c.g1, &c.t1, &[])
        .unwrap();
    let run = |before: &AutoCommit, e: PatrolEdit| {
        let mut after = before.clone();
        edit_patrol(&mut after, &author(WORKER, 2_000), &e).unwrap();
        let b: PatrolView = materialize_patrol(before).unwrap();
        check_patrol(&c.org, &w, Some(&b), &materialize_patrol(&after).unwrap())
    };
    let checkin = |place: String, lat: f64, lon: f64| {
        PatrolEdit::CheckIn(CheckIn { place, lat: Some(lat), lon: Some(lon), at: 1_500 })
    };
    let point = |lat: f64, lon: f64| TrackPoint { lat, lon, at: 3_000 };
    let mut strayed = p.clone();
    // A point stored before the county had a box.
    edit_patrol(&mut strayed, &author(WORKER, 1_500), &PatrolEdit::Track(vec![point(39.9, 116.4)])).unwrap();
    let cases: Vec<(&str, &str, Result<(), Refusal>)> = vec![
        ("check-in inside", "ok", run(&p, checkin("村委会".into(), 30.5, 114.25))),
        ("check-in outside", "outside_county", run(&p, checkin("村委会".into(), 31.5, 114.25))),
        (
            "check-in place over",
            "too_long",
            run(&p, checkin("村".repeat(MAX_ADDRESS_CHARS + 1), 30.5, 114.25)),
        ),
        ("track inside", "ok", run(&p, PatrolEdit::Track(vec![point(30.5, 114.25), point(30.51, 114.26)]))),
        (
            "track with one point outside",
            "outside_county",
            run(&p, PatrolEdit::Track(vec![point(30.5, 114.25), point(0.0, 0.0)])),
        ),
        (
            "a stored stray point blocks nothing",
            "ok",
            run(&strayed, PatrolEdit::Track(vec![point(30.5, 114.25)])),
        ),
        ("household over", "too_long", run(&p, PatrolEdit::Visit("户".repeat(MAX_ADDRESS_CHARS + 1)))),
        (
            "narrative over",
            "too_long",
            run(&p, PatrolEdit::Narrative("述".repeat(MAX_DESCRIPTION_CHARS + 1))),
        ),
        ("narrative within", "ok", run(&p, PatrolEdit::Narrative("巡查正常".into()))),
    ];
    let mut wrong = Vec::new();
    for (name, want, got) in cases {
        if code(got.clone()) != want {
            wrong.push(format!("{name}: want {want}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_writer_that_never_registers_its_actor_under_authors_is_refused() {
    let c = case();
    let doc = created(&c);
    // The hub edits the title with raw Automerge operations, without an `authors` entry.
    let r = check(&c, TOWN_OP, Some(&doc), |d| {
        d.put(ROOT, "title", "改过的标题").unwrap();
        d.commit();
    });
    assert_eq!(code(r), "not_your_name");
    // The same edit through core (which registers the actor) is fine.
    let r = check(&c, TOWN_OP, Some(&doc), |d| {
        edit_report(d, &author(TOWN_OP, 2_000), &edit(Some("改过的标题"), None)).unwrap();
    });
    assert_eq!(code(r), "ok");
}

#[test]
fn device_times_more_than_a_day_ahead_of_the_server_are_refused_old_ones_are_not() {
    use gridsync_core::validate::check_times;
    let c = case();
    let now = 1_800_000_000_000;
    let doc = created(&c);
    let v = view(&doc);
    // The creation was written at 1,000 ms: long ago, but possible (an old, offline device).
    assert_eq!(code(check_times(None, &v, now)), "ok");
    assert_eq!(code(check_times(None, &v, 0)), "ok", "a day of slack");
    assert_eq!(code(check_times(None, &v, 1_000 - 2 * 86_400_000)), "implausible_time");
    // A note written "next month" is refused; the same note a minute ahead is fine.
    let mut later = doc.clone();
    add_note(&mut later, &author(WORKER, now + 30 * 86_400_000), "下个月的备注").unwrap();
    assert_eq!(code(check_times(Some(&v), &view(&later), now)), "implausible_time");
    let mut soon = doc.clone();
    add_note(&mut soon, &author(WORKER, now + 60_000), "一分钟后").unwrap();
    assert_eq!(code(check_times(Some(&v), &view(&soon), now)), "ok");
}

/// Issue 11: every unit's reply is kept and resolves the report only when all are in; a close
/// concurrent with a failed check never wins, in any merge order.
#[test]
fn unit_replies_resolve_together_and_a_failed_check_beats_a_concurrent_close() {
    let (mut w, _) = replicas(&[]);
    add_transition(&mut w, &author(WORKER, 2_000), Action::Escalate, "", None).unwrap();
    let mut hub = doc::load(&w.save(), actor(TOWN_OP)).unwrap();
    add_transition(&mut hub, &author(TOWN_OP, 3_000), Action::Accept, "", None).unwrap();
    let units = vec!["T1-PCS".to_string(), "C01-ZF".to_string()];
    dispatch_to_units(&mut hub, &author(TOWN_OP, 4_000), "", &units, "派出所、执法局").unwrap();
    let order = view(&hub).tip.clone();
    // Two unit devices reply concurrently.
    let unit = |n: u8, who: &str| Author {
        user: who.into(),
        role: gridsync_core::org::Role::UnitHandler,
        at: 5_000 + n as i64,
    };
    let mut police = doc::load(&hub.save(), actor(7)).unwrap();
    let mut enforcer = doc::load(&hub.save(), actor(8)).unwrap();
    add_record(&mut police, &unit(7, "police"), Record::Reply, "已调解", Some("T1-PCS"), None).unwrap();
    assert_eq!(view(&police).status, Status::Dispatched, "one of two units has replied");
    add_record(&mut enforcer, &unit(8, "enforcer"), Record::Reply, "已清理", Some("C01-ZF"), None).unwrap();
    sync(&mut police, &mut enforcer);
    sync(&mut hub, &mut police);
    let v = view(&hub);
    assert_eq!((v.status, v.level, v.tip.as_str()), (Status::Resolved, Level::Town, order.as_str()));
    assert_eq!(v.notes.iter().filter(|n| n.record == Some(Record::Reply)).count(), 2);
    assert_eq!(v, view(&police));
    // The worker checks (pass), the hub visits; then, concurrently, the worker's second device
    // fails the check and sends it back while the hub closes.
    sync(&mut w, &mut hub);
    add_record(&mut w, &author(WORKER, 6_000), Record::Verify, "好了", None, Some("pass")).unwrap();
    sync(&mut hub, &mut w);
    add_record(&mut hub, &author(TOWN_OP, 6_500), Record::Visit, "满意", None, Some("satisfied")).unwrap();
    let mut second = doc::load(&w.save(), actor(9)).unwrap();
    add_record(&mut second, &author(WORKER, 7_000), Record::Verify, "又坏了", None, Some("fail")).unwrap();
    add_transition(&mut second, &author(WORKER, 7_001), Action::Rework, "又坏了", None).unwrap();
    add_transition(&mut hub, &author(TOWN_OP, 7_000), Action::Close, "办结", None).unwrap();
    assert_eq!(view(&hub).status, Status::Closed, "the hub's copy closes");
    let mut a = hub.fork();
    let mut b = second.fork();
    sync(&mut a, &mut second);
    sync(&mut b, &mut hub);
    let (va, vb) = (view(&a), view(&b));
    assert_eq!(va, vb, "every replica converges");
    assert_eq!(va.status, Status::Dispatched, "the failed check wins: back to the units");
    assert_eq!(va.live_units(), units.as_slice());
}

/// Issue 11 item 6: the hub reopens a closed report within 30 days, with a reason; a grid's own
/// settlement goes back to the grid.
#[test]
fn a_closed_report_reopens_within_thirty_days_with_a_reason() {
    let c = case();
    let mut closed = created(&c);
    add_transition(&mut closed, &author(WORKER, 2_000), Action::SelfResolve, "", None).unwrap();
    closed.set_actor(actor(TOWN_OP));
    add_transition(&mut closed, &author(TOWN_OP, 3_000), Action::Close, "", None).unwrap();
    let day = 86_400_000;
    let reopen = |n: u8, at: i64, reason: &'static str| {
        move |d: &mut AutoCommit| {
            add_transition(d, &author(n, at), Action::Reopen, reason, None).unwrap();
        }
    };
    assert_eq!(code(check(&c, TOWN_OP, Some(&closed), reopen(TOWN_OP, 3_000 + 10 * day, "问题复现"))), "ok");
    assert_eq!(
        code(check(&c, TOWN_OP, Some(&closed), reopen(TOWN_OP, 3_000 + 31 * day, "问题复现"))),
        "reopen_not_allowed"
    );
    assert_eq!(
        code(check(&c, TOWN_OP, Some(&closed), reopen(TOWN_OP, 3_000 + day, ""))),
        "reopen_not_allowed"
    );
    assert_eq!(
        code(check(&c, WORKER, Some(&closed), reopen(WORKER, 3_000 + day, "问题复现"))),
        "transition_not_allowed"
    );
    let mut again = closed.clone();
    add_transition(&mut again, &author(TOWN_OP, 3_000 + day), Action::Reopen, "问题复现", None).unwrap();
    assert_eq!((view(&again).status, view(&again).level), (Status::Open, Level::Grid));
}

/// A write that puts a party into the report document itself (the layout before parties
/// documents).
fn party_in_report(name: &'static str, contact: &'static str) -> impl FnOnce(&mut AutoCommit) {
    move |d: &mut AutoCommit| {
        let parties = d.get(automerge::ROOT, "parties").unwrap().unwrap().1;
        let people = d.get(&parties, "people").unwrap().unwrap().1;
        let at = d.length(&people);
        let e = d.insert_object(&people, at, automerge::ObjType::Map).unwrap();
        d.put(&e, "name", name).unwrap();
        d.put(&e, "contact", contact).unwrap();
        d.commit();
    }
}

/// A report resolved at the town by the hub itself, anonymous or not, of `category`.
fn resolved_at_town(c: &Case, category: Category, anonymous: bool) -> AutoCommit {
    let new = NewReport { category, anonymous, ..new_report(&c.g1, &c.t1) };
    let mut d = create_report(actor(WORKER), &author(WORKER, 1_000), &new).unwrap();
    add_transition(&mut d, &author(WORKER, 2_000), Action::Escalate, "", None).unwrap();
    d.set_actor(actor(TOWN_OP));
    add_transition(&mut d, &author(TOWN_OP, 3_000), Action::Accept, "", None).unwrap();
    add_transition(&mut d, &author(TOWN_OP, 4_000), Action::Resolve, "已处理", None).unwrap();
    d
}

/// Issue 11 item 6: which close requirements apply is the policy's, per category; an anonymous
/// report's visit is `not_applicable` (and only an anonymous report's); the reopen window is the
/// policy's too.
#[test]
fn close_requirements_and_the_reopen_window_follow_the_policy() {
    let c = case();
    let close = |d: &mut AutoCommit| {
        add_transition(d, &author(TOWN_OP, 9_000), Action::Close, "", None).unwrap();
    };
    let visit = |result: &'static str| {
        move |d: &mut AutoCommit| {
            add_record(d, &author(TOWN_OP, 8_000), Record::Visit, "回访", None, Some(result)).unwrap();
        }
    };
    let rules = ClosedLoop::default();
    // A sanitation result needs the check and the visit (the default).
    let sanitation = resolved_at_town(&c, Category::Sanitation, false);
    assert_eq!(code(check(&c, TOWN_OP, Some(&sanitation), close)), "close_requirements_unmet");
    // A suggestion needs only the visit (the shipped policy's per-category entry).
    assert_eq!(rules.close_needs(Category::Suggestion), [CloseNeed::Visit]);
    let mut suggestion = resolved_at_town(&c, Category::Suggestion, false);
    assert_eq!(code(check(&c, TOWN_OP, Some(&suggestion), close)), "close_requirements_unmet");
    visit("satisfied")(&mut suggestion);
    assert_eq!(code(check(&c, TOWN_OP, Some(&suggestion), close)), "ok", "no check needed");
    // A county that lists nothing for sanitation closes it at once.
    let lax = ClosedLoop {
        close_needs_by_category: [(Category::Sanitation, vec![])].into(),
        reopen_within_days: 7,
        ..ClosedLoop::default()
    };
    assert_eq!(code(check_under(&lax, &c, TOWN_OP, Some(&sanitation), close)), "ok");
    // not_applicable: refused on a named report, accepted (and enough) on an anonymous one.
    let mut named = resolved_at_town(&c, Category::Suggestion, false);
    assert_eq!(code(check(&c, TOWN_OP, Some(&named), visit("not_applicable"))), "record_not_allowed");
    visit("unreachable")(&mut named);
    let mut anonymous = resolved_at_town(&c, Category::Suggestion, true);
    assert!(materialize_report(&anonymous).unwrap().anonymous);
    assert_eq!(code(check(&c, TOWN_OP, Some(&anonymous), visit("not_applicable"))), "ok");
    visit("not_applicable")(&mut anonymous);
    assert_eq!(code(check(&c, TOWN_OP, Some(&anonymous), close)), "ok");
    // The reopen window is the policy's: 10 days is inside the default 30, outside a county's 7.
    close(&mut anonymous);
    let reopen = |d: &mut AutoCommit| {
        add_transition(d, &author(TOWN_OP, 9_000 + 10 * 86_400_000), Action::Reopen, "问题复现", None)
            .unwrap();
    };
    assert_eq!(code(check(&c, TOWN_OP, Some(&anonymous), reopen)), "ok");
    assert_eq!(code(check_under(&lax, &c, TOWN_OP, Some(&anonymous), reopen)), "reopen_not_allowed");
}

/// Parties live in their own document: the grid's worker and the hubs write it in their scope,
/// an assistant, a unit and the server never do; names and contacts are checked; the list is
/// bounded; the id is the report's, derived.
#[test]
fn the_parties_document_is_written_only_by_those_who_may_hold_it() {
    use gridsync_core::parties::{create_parties, edit_parties, materialize_parties, parties_id};
    use gridsync_core::validate::check_parties;
    let c = case();
    let report = uuid::Uuid::from_u128(42).to_string();
    let zhang = Party { name: "张三".into(), contact: Some("13800000000".into()) };
    let doc = |n: u8, grid: &str, town: &str, parties: &[Party]| {
        create_parties(actor(n), &author(n, 1_000), &report, grid, town, parties).unwrap()
    };
    let run = |n: u8, before: Option<&AutoCommit>, after: &AutoCommit| {
        let who = principal(n, &c);
        let actors: BTreeSet<String> = [actor(n).to_hex_string()].into();
        let w = Writer { who: &who, actors: &actors };
        let before = before.map(|b| materialize_parties(b).unwrap());
        code(check_parties(&c.org, &w, before.as_ref(), &materialize_parties(after).unwrap()))
    };
    let base = doc(WORKER, &c.g1, &c.t1, std::slice::from_ref(&zhang));
    assert_eq!(run(WORKER, None, &base), "ok");
    assert_eq!(run(TOWN_OP, None, &doc(TOWN_OP, &c.g1, &c.t1, &[])), "ok");
    assert_eq!(run(ASSISTANT, None, &doc(ASSISTANT, &c.g1, &c.t1, &[])), "role_cannot");
    assert_eq!(run(WORKER, None, &doc(WORKER, &c.g_other_town, &c.t2, &[])), "out_of_scope");
    let edit = |n: u8, add: Vec<Party>| {
        let mut d = doc::load(&base.clone().save(), actor(n)).unwrap();
        edit_parties(&mut d, &author(n, 2_000), &add, &[]).unwrap();
        run(n, Some(&base), &d)
    };
    let li = |contact: &str| Party { name: "李四".into(), contact: Some(contact.into()) };
    assert_eq!(edit(WORKER, vec![li("not a phone")]), "bad_contact");
    assert_eq!(edit(WORKER, vec![li("027-87654321")]), "ok", "a landline");
    assert_eq!(edit(WORKER, vec![Party { name: "王五".into(), contact: None }]), "ok", "no contact");
    assert_eq!(
        edit(
            WORKER,
            vec![Party { name: "名".repeat(gridsync_core::validate::MAX_NAME_CHARS + 1), contact: None }]
        ),
        "too_long"
    );
    let bad = Party { name: "赵六".into(), contact: Some("12345".into()) };
    assert_eq!(
        run(WORKER, None, &doc(WORKER, &c.g1, &c.t1, &[bad])),
        "bad_contact",
        "checked at creation too"
    );
    assert_eq!(edit(ASSISTANT, vec![li("13912345678")]), "role_cannot");
    let many = (0..501).map(|i| Party { name: format!("p{i}"), contact: None }).collect();
    assert_eq!(edit(WORKER, many), "too_many");
    assert_eq!(parties_id(&report).unwrap(), materialize_parties(&base).unwrap().id);
}
