//! Property tests: replicas editing one report offline, with random, partial and duplicated
//! delivery, end with identical views; merging is commutative, associative and idempotent.

use automerge::{ActorId, AutoCommit, Change};
use gridsync_core::doc::{self, Author};
use gridsync_core::lifecycle::Action;
use gridsync_core::org::Role;
use gridsync_core::report::*;
use proptest::prelude::*;

const ROLES: [(&str, Role); 5] = [
    ("worker", Role::GridWorker),
    ("assistant", Role::GridAssistant),
    ("townop", Role::TownOperator),
    ("countyop", Role::CountyOperator),
    ("worker2", Role::GridWorker),
];

#[derive(Debug, Clone)]
enum Op {
    Title(usize, u8),
    Urgency(usize, u8),
    Address(usize, u8),
    Describe(usize, u8),
    Note(usize, u8),
    Transition(usize, u8),
    /// A dispatch to one or both handling units.
    Dispatch(usize, u8),
    /// A closed-loop record: a unit's sign or reply, a check (a failed one with its rework), a visit.
    Record(usize, u8),
    /// Deliver some of `from`'s changes to `to`: a subset chosen by `mask`, in shuffled order,
    /// some twice.
    Deliver {
        from: usize,
        to: usize,
        mask: u64,
        dup: bool,
    },
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    let r = 0..n;
    prop_oneof![
        (r.clone(), any::<u8>()).prop_map(|(i, v)| Op::Title(i, v)),
        (r.clone(), any::<u8>()).prop_map(|(i, v)| Op::Urgency(i, v)),
        (r.clone(), any::<u8>()).prop_map(|(i, v)| Op::Address(i, v)),
        (r.clone(), any::<u8>()).prop_map(|(i, v)| Op::Describe(i, v)),
        (r.clone(), any::<u8>()).prop_map(|(i, v)| Op::Note(i, v)),
        (r.clone(), any::<u8>()).prop_map(|(i, v)| Op::Transition(i, v)),
        (r.clone(), any::<u8>()).prop_map(|(i, v)| Op::Dispatch(i, v)),
        (r.clone(), any::<u8>()).prop_map(|(i, v)| Op::Record(i, v)),
        (r.clone(), r, any::<u64>(), any::<bool>()).prop_map(|(from, to, mask, dup)| Op::Deliver {
            from,
            to,
            mask,
            dup
        }),
    ]
}

fn author(i: usize, clock: i64) -> Author {
    let (user, role) = ROLES[i];
    // Wall clocks deliberately disagree between devices.
    Author { user: user.into(), role, at: clock * 1000 + (i as i64 * 7919 % 13) * 100_000 }
}

fn start(n: usize) -> Vec<AutoCommit> {
    let new = NewReport {
        anonymous: false,
        id: uuid::Uuid::from_u128(9),
        grid: "G1".into(),
        town: "T1".into(),
        category: Category::Safety,
        title: "start".into(),
        description: "abc".into(),
        urgency: Urgency::Normal,
        location: Location::default(),
        parties: vec![],
    };
    let mut first = create_report(ActorId::from([1u8; 16]), &author(0, 0), &new).unwrap();
    let saved = first.save();
    (0..n).map(|i| doc::load(&saved, ActorId::from([i as u8 + 1; 16])).unwrap()).collect()
}

fn run(docs: &mut [AutoCommit], ops: &[Op]) {
    for (clock, o) in ops.iter().enumerate() {
        let clock = clock as i64 + 1;
        match *o {
            Op::Title(i, v) => {
                let _ = edit_report(
                    &mut docs[i],
                    &author(i, clock),
                    &ReportEdit { title: Some(format!("t{v}")), ..Default::default() },
                );
            }
            Op::Urgency(i, v) => {
                let u = [Urgency::Low, Urgency::Normal, Urgency::High, Urgency::Critical][v as usize % 4];
                let _ = edit_report(
                    &mut docs[i],
                    &author(i, clock),
                    &ReportEdit { urgency: Some(u), ..Default::default() },
                );
            }
            Op::Address(i, v) => {
                let _ = edit_report(
                    &mut docs[i],
                    &author(i, clock),
                    &ReportEdit { address: Some(format!("a{v}")), ..Default::default() },
                );
            }
            Op::Describe(i, v) => {
                let d = materialize_report(&docs[i]).unwrap().description;
                let at = v as usize % (d.chars().count() + 1);
                let mut s: String = d.chars().take(at).collect();
                s.push(char::from(b'a' + v % 26));
                s.extend(d.chars().skip(at));
                let _ = edit_report(
                    &mut docs[i],
                    &author(i, clock),
                    &ReportEdit { description: Some(s), ..Default::default() },
                );
            }
            Op::Note(i, v) => {
                let _ = add_note(&mut docs[i], &author(i, clock), &format!("n{v}"));
            }
            Op::Transition(i, v) => {
                // Mostly an action legal from this replica's state, so runs reach the hub's and
                // the units' steps; sometimes any action (an illegal one is refused locally).
                let view = materialize_report(&docs[i]).unwrap();
                let legal: Vec<Action> =
                    Action::ALL.into_iter().filter(|a| a.target(view.status, view.level).is_some()).collect();
                // Three times in four the step that moves the loop on (while dispatched: leave it to
                // the units' records); else any legal action, sometimes any action at all.
                use gridsync_core::lifecycle::Status as S;
                let forward = match view.status {
                    S::Open => Some(Action::Escalate),
                    S::Escalated => Some(Action::Accept),
                    S::Accepted => Some(Action::Dispatch),
                    S::Resolved => Some(if v % 2 == 0 { Action::Close } else { Action::Rework }),
                    _ => None,
                };
                if view.status == S::Dispatched && v % 4 != 0 {
                    continue;
                }
                let a = match (forward, v % 8) {
                    (Some(f), 1..=5) => f,
                    (_, 0) => Action::ALL[v as usize % Action::ALL.len()],
                    _ if legal.is_empty() => Action::ALL[v as usize % Action::ALL.len()],
                    _ => legal[v as usize % legal.len()],
                };
                let _ = match a {
                    Action::Dispatch => {
                        let units =
                            [vec!["U1".to_string()], vec!["U2".into()], vec!["U1".into(), "U2".into()]];
                        dispatch_to_units(
                            &mut docs[i],
                            &author(i, clock),
                            "",
                            &units[v as usize % 3],
                            "units",
                        )
                    }
                    _ => add_transition(&mut docs[i], &author(i, clock), a, "", None),
                };
            }
            Op::Dispatch(i, v) => {
                let units: Vec<String> = match v % 3 {
                    0 => vec!["U1".into()],
                    1 => vec!["U2".into()],
                    _ => vec!["U1".into(), "U2".into()],
                };
                let _ = dispatch_to_units(&mut docs[i], &author(i, clock), "", &units, "units");
            }
            Op::Record(i, v) => {
                // What fits this replica's state: a live unit's reply or sign while dispatched, a
                // check (a failed one with its rework) or a visit once resolved.
                let who = author(i, clock);
                let view = materialize_report(&docs[i]).unwrap();
                let live = view.live_units().to_vec();
                let unit = live.get(v as usize % live.len().max(1)).cloned().unwrap_or_else(|| "U1".into());
                let _ = match (view.status, v % 4) {
                    (gridsync_core::lifecycle::Status::Dispatched, 3) => {
                        add_record(&mut docs[i], &who, Record::Sign, "ok", Some(&unit), None)
                    }
                    (gridsync_core::lifecycle::Status::Dispatched, _) => {
                        add_record(&mut docs[i], &who, Record::Reply, "done", Some(&unit), None)
                    }
                    (_, 0) => add_record(&mut docs[i], &who, Record::Verify, "ok", None, Some("pass")),
                    (_, 1) => add_record(&mut docs[i], &who, Record::Verify, "no", None, Some("fail"))
                        .and_then(|_| {
                            add_transition(&mut docs[i], &who, Action::Rework, "no", None).map(Some)
                        }),
                    _ => add_record(&mut docs[i], &who, Record::Visit, "ok", None, Some("satisfied")),
                };
            }
            Op::Deliver { from, to, mask, dup } => {
                if from == to {
                    continue;
                }
                let mut changes: Vec<Change> = docs[from]
                    .get_changes(&[])
                    .into_iter()
                    .enumerate()
                    .filter(|(k, _)| mask >> (k % 64) & 1 == 1)
                    .map(|(_, c)| c)
                    .collect();
                changes.reverse();
                if dup {
                    changes.extend(changes.clone());
                }
                doc::apply_changes(&mut docs[to], changes).unwrap();
            }
        }
    }
}

fn view_bytes(d: &AutoCommit) -> Vec<u8> {
    serde_json::to_vec(&materialize_report(d).unwrap()).unwrap()
}

fn merge_into(target: &mut AutoCommit, source: &mut AutoCommit) {
    let changes = source.get_changes(&[]);
    doc::apply_changes(target, changes).unwrap();
}

/// Full delivery in a ring, twice: afterwards every replica holds every change.
fn deliver_everything(docs: &mut [AutoCommit]) {
    let n = docs.len();
    for _ in 0..2 {
        for i in 0..n {
            let changes = docs[i].get_changes(&[]);
            doc::apply_changes(&mut docs[(i + 1) % n], changes).unwrap();
        }
    }
}

fn heads(d: &mut AutoCommit) -> Vec<automerge::ChangeHash> {
    let mut h = d.get_heads();
    h.sort();
    h
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replicas_with_the_same_changes_have_identical_views(
        n in 2usize..=5,
        ops in proptest::collection::vec(op(5), 1..40),
    ) {
        let ops: Vec<Op> = ops.into_iter().map(|o| clamp(o, n)).collect();
        let mut docs = start(n);
        run(&mut docs, &ops);
        // Whoever already holds the same changes already shows the same bytes.
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = docs.split_at_mut(j);
                if heads(&mut a[i]) == heads(&mut b[0]) && a[i].get_missing_deps(&[]).is_empty() && b[0].get_missing_deps(&[]).is_empty() {
                    prop_assert_eq!(view_bytes(&a[i]), view_bytes(&b[0]));
                }
            }
        }
        // Full delivery in a ring, twice: everyone converges.
        deliver_everything(&mut docs);
        let first = view_bytes(&docs[0]);
        for d in &docs[1..] {
            prop_assert_eq!(&view_bytes(d), &first);
        }
    }

    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        ops in proptest::collection::vec(op(3), 1..30),
    ) {
        // Only local edits: three diverged replicas.
        let ops: Vec<Op> = ops.into_iter().filter(|o| !matches!(o, Op::Deliver { .. })).collect();
        let mut docs = start(3);
        run(&mut docs, &ops);
        let [a, b, c] = <[AutoCommit; 3]>::try_from(docs).unwrap();

        // a ∪ b == b ∪ a
        let (mut ab, mut b1) = (a.clone(), b.clone());
        merge_into(&mut ab, &mut b1);
        let (mut ba, mut a1) = (b.clone(), a.clone());
        merge_into(&mut ba, &mut a1);
        prop_assert_eq!(view_bytes(&ab), view_bytes(&ba));

        // (a ∪ b) ∪ c == a ∪ (b ∪ c)
        let mut left = ab.clone();
        merge_into(&mut left, &mut c.clone());
        let mut bc = b.clone();
        merge_into(&mut bc, &mut c.clone());
        let mut right = a.clone();
        merge_into(&mut right, &mut bc);
        prop_assert_eq!(view_bytes(&left), view_bytes(&right));

        // x ∪ x == x, and applying the same changes again changes nothing.
        let before = view_bytes(&left);
        let mut again = left.clone();
        merge_into(&mut left, &mut again);
        prop_assert_eq!(view_bytes(&left), before);
    }
}

/// Operations of the closed loop only (lifecycle steps, dispatches, records, deliveries), so runs
/// reach units' replies, settlement, checks, visits and closes often.
fn loop_op(n: usize) -> impl Strategy<Value = Op> {
    let r = 0..n;
    prop_oneof![
        4 => (r.clone(), any::<u8>()).prop_map(|(i, v)| Op::Transition(i, v)),
        4 => (r.clone(), any::<u8>()).prop_map(|(i, v)| Op::Record(i, v)),
        2 => (r.clone(), r, any::<u64>(), any::<bool>())
            .prop_map(|(from, to, mask, dup)| Op::Deliver { from, to, mask, dup }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Issue 11: units' replies, checks, visits, reworks and closes, delivered in any order and
    /// subset, fold to the same view everywhere once everyone holds everything.
    #[test]
    fn the_closed_loop_converges_in_any_delivery_order(
        n in 2usize..=3,
        ops in proptest::collection::vec(loop_op(3), 10..60),
    ) {
        let ops: Vec<Op> = ops.into_iter().map(|o| clamp(o, n)).collect();
        let mut docs = start(n);
        run(&mut docs, &ops);
        deliver_everything(&mut docs);
        let first = view_bytes(&docs[0]);
        for d in &docs[1..] {
            prop_assert_eq!(&view_bytes(d), &first);
        }
    }
}

fn clamp(o: Op, n: usize) -> Op {
    match o {
        Op::Title(i, v) => Op::Title(i % n, v),
        Op::Urgency(i, v) => Op::Urgency(i % n, v),
        Op::Address(i, v) => Op::Address(i % n, v),
        Op::Describe(i, v) => Op::Describe(i % n, v),
        Op::Note(i, v) => Op::Note(i % n, v),
        Op::Transition(i, v) => Op::Transition(i % n, v),
        Op::Dispatch(i, v) => Op::Dispatch(i % n, v),
        Op::Record(i, v) => Op::Record(i % n, v),
        Op::Deliver { from, to, mask, dup } => Op::Deliver { from: from % n, to: to % n, mask, dup },
    }
}
