//! The report lifecycle: statuses, levels, the actions that move between them, who may take each,
//! and the deterministic fold of (possibly concurrent) transitions into one status and level.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::org::Role;

/// Where a report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    Escalated,
    Accepted,
    Dispatched,
    Resolved,
    Closed,
    Cancelled,
}

/// Which tier holds a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Grid,
    Town,
    County,
}

macro_rules! str_enum {
    ($ty:ty { $($variant:ident = $text:literal),* $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$variant),)* _ => None }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use str_enum;

str_enum!(Status {
    Open = "open",
    Escalated = "escalated",
    Accepted = "accepted",
    Dispatched = "dispatched",
    Resolved = "resolved",
    Closed = "closed",
    Cancelled = "cancelled",
});
str_enum!(Level { Grid = "grid", Town = "town", County = "county" });

impl Level {
    pub fn up(self) -> Option<Level> {
        match self {
            Level::Grid => Some(Level::Town),
            Level::Town => Some(Level::County),
            Level::County => None,
        }
    }
}

/// A lifecycle step. Each has fixed sources and one target; see [`Action::target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// 自办自结: the grid settles it on the spot.
    SelfResolve,
    /// 上报 / 分级移送: hand it one level up.
    Escalate,
    /// Withdraw a report filed by mistake.
    Cancel,
    /// 受理: the hub takes it on.
    Accept,
    /// 不予受理: the hub refuses it; back to the grid.
    Reject,
    /// 派遣 / 分流: send it to a department.
    Dispatch,
    /// 退办: the department hands back a wrong dispatch.
    HandBack,
    /// 处置: the hub (or its department) settles it.
    Resolve,
    /// 返工: a failed check sends it back to the department.
    Rework,
    /// 结案: checked, called back, closed.
    Close,
    /// 重启: a later visit finds the problem back; the hub reopens a closed report (within
    /// the policy's `closed_loop.reopen_within_days` of the close), back to its own handling.
    Reopen,
    /// 提级办理: a county operator takes a town item over, with the reason; counted.
    TakeOver,
}

str_enum!(Action {
    SelfResolve = "self_resolve",
    Escalate = "escalate",
    Cancel = "cancel",
    Accept = "accept",
    Reject = "reject",
    Dispatch = "dispatch",
    HandBack = "hand_back",
    Resolve = "resolve",
    Rework = "rework",
    Close = "close",
    Reopen = "reopen",
    TakeOver = "take_over",
});

impl Action {
    pub const ALL: [Action; 12] = [
        Action::SelfResolve,
        Action::Escalate,
        Action::Cancel,
        Action::Accept,
        Action::Reject,
        Action::Dispatch,
        Action::HandBack,
        Action::Resolve,
        Action::Rework,
        Action::Close,
        Action::Reopen,
        Action::TakeOver,
    ];

    /// Where this action leads from `(status, level)`, or `None` when it cannot be taken there.
    pub fn target(self, status: Status, level: Level) -> Option<(Status, Level)> {
        use Level::*;
        use Status::*;
        match (self, status, level) {
            (Action::SelfResolve, Open, Grid) => Some((Resolved, Grid)),
            (Action::Cancel, Open, Grid) => Some((Cancelled, Grid)),
            (Action::Escalate, Open, Grid) => Some((Escalated, Town)),
            (Action::Escalate, Escalated | Accepted | Dispatched, Town) => Some((Escalated, County)),
            (Action::Accept, Escalated, Town | County) => Some((Accepted, level)),
            (Action::Reject, Escalated, Town) => Some((Open, Grid)),
            // The county returns a call to the town's accept step: nobody at the town accepted it.
            (Action::Reject, Escalated, County) => Some((Escalated, Town)),
            (Action::TakeOver, Escalated | Accepted, Town) => Some((Accepted, County)),
            (Action::Dispatch, Accepted, Town | County) => Some((Dispatched, level)),
            (Action::HandBack, Dispatched, Town | County) => Some((Accepted, level)),
            (Action::Resolve, Accepted | Dispatched, Town | County) => Some((Resolved, level)),
            (Action::Rework, Resolved, Town | County) => Some((Dispatched, level)),
            // The town's review sends a grid's own settlement back to the grid (reopened there).
            (Action::Rework, Resolved, Grid) => Some((Open, Grid)),
            (Action::Close, Resolved, _) => Some((Closed, level)),
            // Reopened: a town or county item goes back to the hub's dispatch step, a grid's own
            // back to the grid.
            (Action::Reopen, Closed, Town | County) => Some((Accepted, level)),
            (Action::Reopen, Closed, Grid) => Some((Open, Grid)),
            _ => None,
        }
    }

    /// Whether `role` may take this action on a report at `level` (scope is checked elsewhere).
    pub fn allowed_for(self, role: Role, level: Level) -> bool {
        match role {
            // A worker's own failed check sends a result reached above the grid back (返工);
            // validation asks for the check.
            Role::GridWorker => {
                (matches!(self, Action::SelfResolve | Action::Escalate | Action::Cancel)
                    && level == Level::Grid)
                    || (self == Action::Rework && level != Level::Grid)
            }
            // A volunteer records and escalates; settling is the worker's (自办自结).
            Role::GridAssistant => self == Action::Escalate && level == Level::Grid,
            // A town hub works the reports at grid and town level (its settling of a grid item
            // is 代结, counted apart); it escalates to the county but does not act on what the
            // county holds.
            Role::TownOperator => {
                level != Level::County && !matches!(self, Action::Cancel | Action::TakeOver)
            }
            // The county works what it holds; a town item only after taking it over (提级).
            Role::CountyOperator => match level {
                Level::County => !matches!(self, Action::Cancel | Action::TakeOver),
                Level::Town => self == Action::TakeOver,
                Level::Grid => false,
            },
            // Admins manage users, devices and the organisation; they do not handle cases (a
            // person with both jobs holds two accounts).
            Role::Admin => false,
            // The server only auto-escalates.
            Role::System => self == Action::Escalate,
            // A handling unit returns a misrouted order (退办); only while the order is its own,
            // which validation checks against the live dispatch.
            Role::UnitHandler => self == Action::HandBack && level != Level::Grid,
        }
    }

    /// Precedence among concurrent transitions: the higher wins. See docs/merge-rules.md.
    pub fn precedence(self) -> u8 {
        match self {
            Action::Close => 100,
            Action::Escalate => 90,
            Action::TakeOver => 85,
            Action::Dispatch => 70,
            Action::Accept => 60,
            Action::Resolve => 50,
            Action::SelfResolve => 45,
            Action::Rework => 40,
            Action::Reopen => 20,
            Action::HandBack => 35,
            Action::Reject => 30,
            Action::Cancel => 10,
        }
    }
}

/// One recorded lifecycle transition, as stored in the report document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Transition {
    /// `<actor hex>/<n>`: unique per document; made from the author's actor and list length.
    pub id: String,
    /// The transition the author saw as the latest one, or `""` for the first.
    pub parent: String,
    pub action: Action,
    pub author: String,
    pub role: Role,
    pub from: Status,
    pub from_level: Level,
    pub to: Status,
    pub to_level: Level,
    pub reason: String,
    /// Department, for dispatches: the handling units' names as people read them (older reports
    /// hold a free-text department here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dept: Option<String>,
    /// Handling units of a dispatch, by id: the lead unit (牵头) first, then the assisting units
    /// (协办). Empty for free-text dispatches and every other action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<String>,
    /// Milliseconds since the epoch on the author's clock (advisory).
    pub at: i64,
    /// Whether the fold applied it (false: lost to a concurrent transition, see conflicts).
    pub applied: bool,
}

/// The fold of a report's transitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    pub status: Status,
    pub level: Level,
    /// The id of the last applied transition (`""` when none): the parent of the next one.
    pub tip: String,
    /// Ids of the applied transitions, in order.
    pub applied: Vec<String>,
    /// For each fork point: the winning transition id and the discarded ones (with their subtrees).
    pub forks: Vec<Fork>,
}

/// A place where concurrent transitions competed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    pub winner: String,
    pub discarded: Vec<String>,
}

/// Folds transitions into status and level.
///
/// Transitions form a tree through `parent`. From the root, among the children of the current tip
/// that are legal from the current state, the branch with the highest precedence anywhere in its
/// subtree wins (a closed branch is never silently reopened; an escalation beats a concurrent
/// self-resolve), then the branch that progressed further (the hub's accept and dispatch are not
/// undone by a late duplicate escalation), then the child's own precedence, then the higher target
/// level, then the earlier wall clock, author and id as final tie-breaks. Losing branches are
/// recorded as forks.
pub fn fold(transitions: &[Transition]) -> Folded {
    fold_with(transitions, &BTreeSet::new(), &BTreeSet::new())
}

/// [`fold`], knowing the closed loop's records: an order (a dispatch or rework) in `settled` —
/// every unit it named has replied — leaves the report `resolved` rather than `dispatched`; a
/// `close` on an order in `failed` — the grid's check failed — is never applied, whatever its
/// precedence, so a close concurrent with a failed check cannot win on any replica.
pub fn fold_with(
    transitions: &[Transition],
    settled: &BTreeSet<String>,
    failed: &BTreeSet<String>,
) -> Folded {
    let mut children: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, t) in transitions.iter().enumerate() {
        children.entry(t.parent.as_str()).or_default().push(i);
    }
    let branch = branches(transitions, &children);
    let mut status = Status::Open;
    let mut level = Level::Grid;
    let mut tip = String::new();
    let mut applied = Vec::new();
    let mut forks = Vec::new();
    let mut visited = BTreeSet::new();
    while let Some(kids) = children.get(tip.as_str()) {
        let legal: Vec<usize> = kids
            .iter()
            .copied()
            .filter(|&i| {
                let t = &transitions[i];
                t.from == status
                    && t.from_level == level
                    && t.action.target(status, level) == Some((t.to, t.to_level))
                    && !visited.contains(&t.id)
                    && !(t.action == Action::Close && failed.contains(&t.parent))
            })
            .collect();
        let Some(&winner) = legal.iter().max_by(|&&a, &&b| {
            let key = |i: usize| {
                let t = &transitions[i];
                let (rank, depth) = branch[i];
                (
                    rank,
                    depth,
                    t.action.precedence(),
                    t.to_level,
                    std::cmp::Reverse(t.at),
                    std::cmp::Reverse(&t.author),
                    std::cmp::Reverse(&t.id),
                )
            };
            key(a).cmp(&key(b))
        }) else {
            // Children exist but none is legal here: they are discarded.
            forks.push(Fork {
                winner: String::new(),
                discarded: kids.iter().map(|&i| transitions[i].id.clone()).collect(),
            });
            break;
        };
        let w = &transitions[winner];
        let discarded: Vec<String> =
            kids.iter().filter(|&&i| i != winner).map(|&i| transitions[i].id.clone()).collect();
        if !discarded.is_empty() {
            forks.push(Fork { winner: w.id.clone(), discarded });
        }
        visited.insert(w.id.clone());
        status = if w.to == Status::Dispatched && settled.contains(&w.id) { Status::Resolved } else { w.to };
        level = w.to_level;
        tip = w.id.clone();
        applied.push(w.id.clone());
    }
    Folded { status, level, tip, applied, forks }
}

/// For every transition: the highest precedence anywhere in its subtree, and how long the
/// subtree's longest chain is (how far that branch progressed). Iterative (post-order with an
/// explicit stack), so a forged document with a very long chain cannot exhaust the call stack; a
/// forged cycle is cut where it closes.
fn branches(transitions: &[Transition], children: &BTreeMap<&str, Vec<usize>>) -> Vec<(u8, usize)> {
    const NEW: u8 = 0;
    const OPEN: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; transitions.len()];
    let mut out: Vec<(u8, usize)> = transitions.iter().map(|t| (t.action.precedence(), 1)).collect();
    for start in 0..transitions.len() {
        if state[start] != NEW {
            continue;
        }
        let mut stack = vec![(start, false)];
        while let Some((i, expanded)) = stack.pop() {
            let kids = children.get(transitions[i].id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            if expanded {
                let mut best = (transitions[i].action.precedence(), 1);
                for &c in kids {
                    if state[c] == DONE {
                        best = (best.0.max(out[c].0), best.1.max(out[c].1 + 1));
                    }
                }
                out[i] = best;
                state[i] = DONE;
                continue;
            }
            if state[i] != NEW {
                continue;
            }
            state[i] = OPEN;
            stack.push((i, true));
            stack.extend(kids.iter().filter(|&&c| state[c] == NEW).map(|&c| (c, false)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, parent: &str, action: Action, from: (Status, Level), at: i64) -> Transition {
        let (to, to_level) = action.target(from.0, from.1).expect("legal in test");
        Transition {
            id: id.into(),
            parent: parent.into(),
            action,
            author: format!("user-{id}"),
            role: Role::GridWorker,
            from: from.0,
            from_level: from.1,
            to,
            to_level,
            reason: String::new(),
            dept: None,
            units: Vec::new(),
            at,
            applied: false,
        }
    }
    const OPEN: (Status, Level) = (Status::Open, Level::Grid);

    #[test]
    fn a_chain_folds_in_order() {
        let ts = [
            t("a", "", Action::Escalate, OPEN, 1),
            t("b", "a", Action::Accept, (Status::Escalated, Level::Town), 2),
            t("c", "b", Action::Dispatch, (Status::Accepted, Level::Town), 3),
        ];
        let f = fold(&ts);
        assert_eq!((f.status, f.level), (Status::Dispatched, Level::Town));
        assert_eq!(f.applied, ["a", "b", "c"]);
        assert!(f.forks.is_empty());
    }

    #[test]
    fn escalation_beats_a_concurrent_self_resolve_whatever_the_clock() {
        for (resolve_at, escalate_at) in [(1, 2), (2, 1)] {
            let ts = [
                t("r", "", Action::SelfResolve, OPEN, resolve_at),
                t("e", "", Action::Escalate, OPEN, escalate_at),
            ];
            let f = fold(&ts);
            assert_eq!((f.status, f.level), (Status::Escalated, Level::Town));
            assert_eq!(f.forks, [Fork { winner: "e".into(), discarded: vec!["r".into()] }]);
        }
    }

    #[test]
    fn a_closed_branch_is_not_reopened_by_a_concurrent_one() {
        let resolved = (Status::Resolved, Level::Grid);
        let ts = [
            t("r", "", Action::SelfResolve, OPEN, 1),
            t("c", "r", Action::Close, resolved, 2),
            t("e", "", Action::Escalate, OPEN, 3),
        ];
        let f = fold(&ts);
        assert_eq!(f.status, Status::Closed);
        assert_eq!(f.forks[0].discarded, ["e"]);
    }

    #[test]
    fn equal_precedence_falls_back_to_earlier_clock_then_author() {
        let esc = (Status::Escalated, Level::Town);
        let e = t("e", "", Action::Escalate, OPEN, 0);
        let x = t("x", "e", Action::Accept, esc, 5);
        let y = t("y", "e", Action::Accept, esc, 4);
        assert_eq!(fold(&[e.clone(), x.clone(), y.clone()]).applied, ["e", "y"]);
        // Same clock: author "user-x" sorts before "user-y" and wins.
        let y5 = Transition { at: 5, ..y };
        assert_eq!(fold(&[e, y5, x]).applied, ["e", "x"]);
    }

    #[test]
    fn a_late_duplicate_escalation_does_not_undo_the_hubs_work_whatever_its_clock() {
        let esc = (Status::Escalated, Level::Town);
        let acc = (Status::Accepted, Level::Town);
        let ts = [
            t("late", "", Action::Escalate, OPEN, 1), // earlier clock, synced later
            t("e", "", Action::Escalate, OPEN, 5),
            t("a", "e", Action::Accept, esc, 6),
            t("d", "a", Action::Dispatch, acc, 7),
        ];
        let f = fold(&ts);
        assert_eq!(f.applied, ["e", "a", "d"]);
        assert_eq!(f.forks[0].discarded, ["late"]);
    }

    #[test]
    fn illegal_or_orphan_transitions_are_not_applied() {
        let mut bad = t("b", "", Action::Close, (Status::Resolved, Level::Grid), 1);
        bad.from = Status::Open; // claims to close an open report
        let orphan = t("o", "missing", Action::Escalate, OPEN, 1);
        let f = fold(&[bad, orphan]);
        assert_eq!((f.status, f.level), (Status::Open, Level::Grid));
        assert!(f.applied.is_empty());
    }

    #[test]
    fn a_forged_cycle_terminates() {
        let mut a = t("a", "b", Action::Escalate, OPEN, 1);
        let b = t("b", "a", Action::Escalate, OPEN, 1);
        a.parent = "b".into();
        let f = fold(&[a, b]);
        assert!(f.applied.is_empty());
    }

    #[test]
    fn a_forged_chain_of_a_hundred_thousand_transitions_folds_without_deep_recursion() {
        // Alternating accept / hand_back keeps the chain legal however long it is.
        let esc = (Status::Escalated, Level::Town);
        let acc = (Status::Accepted, Level::Town);
        let dis = (Status::Dispatched, Level::Town);
        let mut ts = vec![t("n0", "", Action::Escalate, OPEN, 0), t("n1", "n0", Action::Accept, esc, 0)];
        for k in 2..100_000 {
            let (a, from) = if k % 2 == 0 { (Action::Dispatch, acc) } else { (Action::HandBack, dis) };
            ts.push(t(&format!("n{k}"), &format!("n{}", k - 1), a, from, 0));
        }
        ts.push(t("rival", "", Action::Escalate, OPEN, 0));
        let f = fold(&ts);
        assert_eq!(f.applied.len(), 100_000);
        assert_eq!(f.forks[0].discarded, ["rival"]);
    }

    #[test]
    fn transition_table_and_roles() {
        use Action::*;
        // (action, from status, from level) -> target; None where the table has no arrow.
        type Row = (Action, Status, Level, Option<(Status, Level)>);
        let cases: &[Row] = &[
            (SelfResolve, Status::Open, Level::Grid, Some((Status::Resolved, Level::Grid))),
            (SelfResolve, Status::Escalated, Level::Town, None),
            (Escalate, Status::Open, Level::Grid, Some((Status::Escalated, Level::Town))),
            (Escalate, Status::Accepted, Level::Town, Some((Status::Escalated, Level::County))),
            (Escalate, Status::Escalated, Level::County, None),
            (Accept, Status::Escalated, Level::Town, Some((Status::Accepted, Level::Town))),
            (Accept, Status::Open, Level::Grid, None),
            (Reject, Status::Escalated, Level::Town, Some((Status::Open, Level::Grid))),
            // The county returns a call to the town's accept step, not as accepted.
            (Reject, Status::Escalated, Level::County, Some((Status::Escalated, Level::Town))),
            (TakeOver, Status::Accepted, Level::Town, Some((Status::Accepted, Level::County))),
            (TakeOver, Status::Escalated, Level::Town, Some((Status::Accepted, Level::County))),
            (TakeOver, Status::Dispatched, Level::Town, None),
            (TakeOver, Status::Open, Level::Grid, None),
            (Dispatch, Status::Accepted, Level::Town, Some((Status::Dispatched, Level::Town))),
            (HandBack, Status::Dispatched, Level::Town, Some((Status::Accepted, Level::Town))),
            (Resolve, Status::Dispatched, Level::County, Some((Status::Resolved, Level::County))),
            (Rework, Status::Resolved, Level::Town, Some((Status::Dispatched, Level::Town))),
            // The town's review returns a grid's own settlement to the grid.
            (Rework, Status::Resolved, Level::Grid, Some((Status::Open, Level::Grid))),
            (Close, Status::Resolved, Level::Grid, Some((Status::Closed, Level::Grid))),
            (Close, Status::Closed, Level::Grid, None),
            (Cancel, Status::Open, Level::Grid, Some((Status::Cancelled, Level::Grid))),
            (Cancel, Status::Closed, Level::Grid, None),
        ];
        for &(a, s, l, want) in cases {
            assert_eq!(a.target(s, l), want, "{a} from {s}@{l}");
        }
        // Nothing leaves cancelled; only a reopen leaves closed.
        for a in Action::ALL {
            for l in [Level::Grid, Level::Town, Level::County] {
                assert_eq!(a.target(Status::Closed, l).is_some(), a == Reopen);
                assert_eq!(a.target(Status::Cancelled, l), None);
            }
        }
        assert_eq!(Reopen.target(Status::Closed, Level::Town), Some((Status::Accepted, Level::Town)));
        assert_eq!(Reopen.target(Status::Closed, Level::Grid), Some((Status::Open, Level::Grid)));
        let roles: &[(Role, Action, Level, bool)] = &[
            (Role::GridWorker, SelfResolve, Level::Grid, true),
            (Role::GridWorker, Escalate, Level::Grid, true),
            (Role::GridWorker, Accept, Level::Town, false),
            (Role::GridWorker, Dispatch, Level::Town, false),
            (Role::GridWorker, Close, Level::Grid, false),
            // Issue 12: a volunteer records and escalates but does not settle.
            (Role::GridAssistant, SelfResolve, Level::Grid, false),
            (Role::GridAssistant, Escalate, Level::Grid, true),
            (Role::GridAssistant, Cancel, Level::Grid, false),
            (Role::TownOperator, Accept, Level::Town, true),
            (Role::TownOperator, Close, Level::Grid, true),
            (Role::TownOperator, Accept, Level::County, false),
            (Role::CountyOperator, Accept, Level::County, true),
            (Role::CountyOperator, Cancel, Level::Grid, false),
            // The county works a town item only after taking it over.
            (Role::CountyOperator, Accept, Level::Town, false),
            (Role::CountyOperator, Resolve, Level::Town, false),
            (Role::CountyOperator, TakeOver, Level::Town, true),
            (Role::TownOperator, TakeOver, Level::Town, false),
            // Admins do not handle cases.
            (Role::Admin, Resolve, Level::Town, false),
            (Role::Admin, Close, Level::County, false),
            (Role::Admin, SelfResolve, Level::Grid, false),
            (Role::System, Escalate, Level::Town, true),
            (Role::System, Accept, Level::Town, false),
        ];
        for &(r, a, l, ok) in roles {
            assert_eq!(a.allowed_for(r, l), ok, "{r:?} {a} at {l}");
        }
    }
}
