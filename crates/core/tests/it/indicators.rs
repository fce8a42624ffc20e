//! Indicators on a generated data set whose answers are worked out by hand.

use automerge::ActorId;
use gridsync_core::doc::Author;
use gridsync_core::indicators::compute;
use gridsync_core::lifecycle::{Action, Level};
use gridsync_core::org::Role;
use gridsync_core::policy::Policy;
use gridsync_core::report::*;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn report(n: u128, created: i64, steps: &[(Action, i64)]) -> ReportView {
    let worker = |at| Author { user: "w".into(), role: Role::GridWorker, at };
    let op = |at| Author { user: "op".into(), role: Role::TownOperator, at };
    let mut d = create_report(
        ActorId::from([1u8; 16]),
        &worker(created),
        &NewReport {
            anonymous: false,
            id: uuid::Uuid::from_u128(n),
            grid: "G".into(),
            town: "T".into(),
            category: if n.is_multiple_of(2) { Category::Dispute } else { Category::Fire },
            title: format!("r{n}"),
            description: String::new(),
            urgency: Urgency::Normal,
            location: Location::default(),
            parties: vec![],
        },
    )
    .unwrap();
    for &(a, at) in steps {
        let who = match a {
            Action::SelfResolve | Action::Escalate | Action::Cancel => worker(at),
            _ => op(at),
        };
        add_transition(&mut d, &who, a, "", (a == Action::Dispatch).then_some("城管办")).unwrap();
    }
    materialize_report(&d).unwrap()
}

#[test]
fn indicators_match_hand_worked_answers() {
    use Action::*;
    let reports = vec![
        report(1, 0, &[(SelfResolve, HOUR), (Close, 2 * HOUR)]),
        report(2, 0, &[(SelfResolve, 8 * DAY), (Close, 9 * DAY)]),
        report(
            3,
            0,
            &[
                (Escalate, 10 * MIN),
                (Accept, 40 * MIN),
                (Dispatch, HOUR),
                (Resolve, 2 * DAY),
                (Rework, 2 * DAY + HOUR),
                (Resolve, 3 * DAY),
                (Close, 4 * DAY),
            ],
        ),
        report(4, 0, &[(Escalate, 10 * MIN), (Accept, 100 * MIN)]),
        report(5, 11 * DAY, &[]),
        report(6, 0, &[(Cancel, MIN)]),
        report(7, -DAY, &[(SelfResolve, 0)]),
    ];
    let i = compute(&reports, &Policy::default(), 12 * DAY, 0, 30 * DAY);
    assert_eq!((i.reports, i.cancelled), (5, 1));
    assert_eq!(i.by_category.values().sum::<u64>(), 6);
    assert_eq!(i.by_level[&Level::Grid], 4);
    assert_eq!(i.by_level[&Level::Town], 2);
    assert_eq!((i.self_resolved, i.escalated), (2, 2));
    assert_eq!(i.self_resolved_share, Some(0.4));
    assert_eq!((i.handled, i.handled_on_time, i.due_for_handling), (3, 2, 4));
    assert_eq!(i.on_time_handling_rate, Some(0.5));
    assert_eq!((i.closed, i.closed_on_time, i.due_for_closure, i.deferred), (3, 3, 4, 0));
    // 结案率 = closed ÷ due for closure (as bulletins count it: 911 ÷ 972), here 3 ÷ 4.
    assert_eq!(i.closure_rate, Some(0.75));
    assert_eq!(i.on_time_closure_rate, Some(0.75));
    assert_eq!((i.reworked, i.rework_rate), (1, Some(0.25)));
    assert_eq!(i.median_minutes_to_accept, Some(60.0));
    assert_eq!(i.median_minutes_to_close, Some(4.0 * 24.0 * 60.0));
    assert_eq!(i.overdue_now, 1);

    assert_eq!((i.resolved_on_behalf, i.taken_over), (0, 0));

    // Issue 12: a town operator's on-the-spot settling of a grid item is 代结, not the grid's
    // 自办自结; a county take-over is counted.
    let mut by_op = report(8, 0, &[]);
    let op = Author { user: "op".into(), role: Role::TownOperator, at: HOUR };
    by_op.transitions.push(gridsync_core::lifecycle::Transition {
        id: "op/0".into(),
        parent: String::new(),
        action: SelfResolve,
        author: op.user.clone(),
        role: op.role,
        from: gridsync_core::lifecycle::Status::Open,
        from_level: Level::Grid,
        to: gridsync_core::lifecycle::Status::Resolved,
        to_level: Level::Grid,
        reason: String::new(),
        at: HOUR,
        dept: None,
        units: vec![],
        applied: true,
    });
    let mut taken = report(9, 0, &[(Escalate, MIN)]);
    let mut t = taken.transitions[0].clone();
    (t.id, t.action, t.role, t.at) = ("c/0".into(), TakeOver, Role::CountyOperator, 2 * MIN);
    taken.transitions.push(t);
    let j = compute(&[by_op, taken], &Policy::default(), 12 * DAY, 0, 30 * DAY);
    assert_eq!((j.self_resolved, j.resolved_on_behalf, j.taken_over), (0, 1, 1));

    // An empty period has no rates rather than zeros.
    let empty = compute(&reports, &Policy::default(), 12 * DAY, 100 * DAY, 200 * DAY);
    assert_eq!(empty.reports, 0);
    assert_eq!(empty.closure_rate, None);
}

/// Issue 11 item 9: per-unit indicators on a hand-worked data set (default policy, no calendar:
/// signing due 2 h after the order, the reply 7 days after).
#[test]
fn unit_indicators_match_hand_worked_answers() {
    use gridsync_core::indicators::by_unit;
    let who = |user: &str, role: Role, at: i64| Author { user: user.into(), role, at };
    let worker = |at| who("w", Role::GridWorker, at);
    let op = |at| who("op", Role::TownOperator, at);
    let (p, z) = ("T-PCS".to_string(), "C01-ZF".to_string());
    let unit = |u: &str, at| who(if u == "T-PCS" { "police" } else { "enforcer" }, Role::UnitHandler, at);
    let t0 = 1_000 * DAY;
    let new = |n: u128| {
        let mut d = create_report(
            ActorId::from([n as u8; 16]),
            &worker(t0),
            &NewReport {
                anonymous: false,
                id: uuid::Uuid::from_u128(n),
                grid: "G".into(),
                town: "T".into(),
                category: Category::Dispute,
                title: format!("r{n}"),
                description: String::new(),
                urgency: Urgency::Normal,
                location: Location::default(),
                parties: vec![],
            },
        )
        .unwrap();
        add_transition(&mut d, &worker(t0 + MIN), Action::Escalate, "", None).unwrap();
        add_transition(&mut d, &op(t0 + 2 * MIN), Action::Accept, "", None).unwrap();
        d
    };
    let reply = |d: &mut automerge::AutoCommit, u: &str, at: i64| {
        add_record(d, &unit(u, at), Record::Reply, "done", Some(u), None).unwrap();
    };
    let sign = |d: &mut automerge::AutoCommit, u: &str, at: i64| {
        add_record(d, &unit(u, at), Record::Sign, "ok", Some(u), None).unwrap();
    };

    // Report A: P leads, Z assists. P signs in 1 h, Z in 3 h (late); P replies in a day, Z in 8 days
    // (late). The grid's check fails: rework; both reply again at once; the check passes; visit
    // satisfied; closed.
    let mut a = new(1);
    let d = t0 + HOUR;
    dispatch_to_units(&mut a, &op(d), "", &[p.clone(), z.clone()], "P、Z").unwrap();
    sign(&mut a, &p, d + HOUR);
    sign(&mut a, &z, d + 3 * HOUR);
    reply(&mut a, &p, d + DAY);
    reply(&mut a, &z, d + 8 * DAY);
    assert_eq!(materialize_report(&a).unwrap().status, gridsync_core::lifecycle::Status::Resolved);
    add_record(&mut a, &worker(d + 9 * DAY), Record::Verify, "no", None, Some("fail")).unwrap();
    add_transition(&mut a, &worker(d + 9 * DAY), Action::Rework, "no", None).unwrap();
    let rw = d + 9 * DAY;
    reply(&mut a, &p, rw + HOUR);
    reply(&mut a, &z, rw + HOUR);
    add_record(&mut a, &worker(rw + 2 * HOUR), Record::Verify, "ok", None, Some("pass")).unwrap();
    add_record(&mut a, &op(rw + 3 * HOUR), Record::Visit, "ok", None, Some("satisfied")).unwrap();
    add_transition(&mut a, &op(rw + 4 * HOUR), Action::Close, "", None).unwrap();

    // Report B: P alone, returns it; then Z alone signs and replies on time; the check passes; the
    // resident is unreachable once, then unsatisfied.
    let mut b = new(2);
    dispatch_to_units(&mut b, &op(d), "", std::slice::from_ref(&p), "P").unwrap();
    add_transition(&mut b, &unit(&p, d + HOUR), Action::HandBack, "not ours", None).unwrap();
    dispatch_to_units(&mut b, &op(d + 2 * HOUR), "", std::slice::from_ref(&z), "Z").unwrap();
    sign(&mut b, &z, d + 3 * HOUR);
    // Z asks for 20 days (denied), then 30 (approved), then replies on day 25: on time.
    let ask = |b: &mut automerge::AutoCommit, days: i64, at: i64| {
        add_record_until(b, &unit(&z, at), Record::Extend, "need time", Some(&z), None, Some(d + days * DAY))
            .unwrap();
    };
    ask(&mut b, 20, d + DAY);
    add_record(&mut b, &op(d + DAY + HOUR), Record::Extension, "no", None, Some("deny")).unwrap();
    assert_eq!(materialize_report(&b).unwrap().extended_until(), None);
    ask(&mut b, 30, d + 2 * DAY);
    add_record(&mut b, &op(d + 2 * DAY + HOUR), Record::Extension, "ok", None, Some("approve")).unwrap();
    assert_eq!(materialize_report(&b).unwrap().extended_until(), Some(d + 30 * DAY));
    reply(&mut b, &z, d + 25 * DAY);
    add_record(&mut b, &worker(d + 3 * DAY), Record::Verify, "ok", None, Some("pass")).unwrap();
    add_record(&mut b, &op(d + 4 * DAY), Record::Visit, "-", None, Some("unreachable")).unwrap();
    add_record(&mut b, &op(d + 5 * DAY), Record::Visit, "no", None, Some("unsatisfied")).unwrap();

    let views = [materialize_report(&a).unwrap(), materialize_report(&b).unwrap()];
    let got = by_unit(&views, &Policy::default(), 0, i64::MAX);
    assert_eq!(got.iter().map(|u| u.unit.as_str()).collect::<Vec<_>>(), ["C01-ZF", "T-PCS"]);
    let (zf, pcs) = (&got[0], &got[1]);
    // P: orders A-dispatch, A-rework, B-dispatch-1.
    assert_eq!((pcs.orders, pcs.signed, pcs.signed_on_time), (3, 1, 1));
    assert_eq!((pcs.replied, pcs.replied_on_time, pcs.returned, pcs.reworked), (2, 2, 1, 1));
    assert_eq!(
        (pcs.visits, pcs.visits_reached, pcs.satisfied, pcs.checks, pcs.checks_passed),
        (1, 1, 1, 2, 1)
    );
    assert_eq!(pcs.return_rate, Some(1.0 / 3.0));
    assert_eq!(pcs.satisfaction_rate, Some(1.0));
    assert_eq!(pcs.verification_pass_rate, Some(0.5));
    // Z: orders A-dispatch, A-rework, B-dispatch-2.
    assert_eq!((zf.orders, zf.signed, zf.signed_on_time), (3, 2, 1));
    assert_eq!((zf.replied, zf.replied_on_time, zf.returned, zf.reworked), (3, 2, 0, 1));
    assert_eq!((zf.visits, zf.visits_reached, zf.satisfied, zf.checks, zf.checks_passed), (3, 2, 1, 3, 2));
    assert_eq!(zf.on_time_signing_rate, Some(1.0 / 3.0));
    assert_eq!(zf.on_time_completion_rate, Some(2.0 / 3.0));
    assert_eq!(zf.satisfaction_rate, Some(0.5), "unreachable is left out");
    assert_eq!(zf.rework_rate, Some(1.0 / 3.0));
    assert_eq!((zf.extended, pcs.extended), (1, 0));
    assert_eq!(zf.extension_rate, Some(1.0 / 3.0));
}
