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
    assert_eq!(i.closure_rate, Some(0.6));
    assert_eq!(i.on_time_closure_rate, Some(0.75));
    assert_eq!((i.reworked, i.rework_rate), (1, Some(0.25)));
    assert_eq!(i.median_minutes_to_accept, Some(60.0));
    assert_eq!(i.median_minutes_to_close, Some(4.0 * 24.0 * 60.0));
    assert_eq!(i.overdue_now, 1);

    // An empty period has no rates rather than zeros.
    let empty = compute(&reports, &Policy::default(), 12 * DAY, 100 * DAY, 200 * DAY);
    assert_eq!(empty.reports, 0);
    assert_eq!(empty.closure_rate, None);
}
