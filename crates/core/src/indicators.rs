//! Supervision indicators (监督考核) computed from report views: a pure function of the reports,
//! the deadline policy and the time of asking.
//!
//! Definitions, over the reports created in the period (cancelled ones are counted, then left out of
//! every rate):
//! - handled (处置): the first applied `resolve` or `self_resolve`. Its deadline is creation plus the
//!   `resolve` limit for a report settled in its grid, or plus `accept + dispatch + resolve` once it
//!   was escalated. A report is *due for handling* when it was handled or its deadline has passed.
//! - closed (结案): the applied `close`; its deadline is the handling deadline plus the `close`
//!   limit. A report is *due for closure* when it is closed or that deadline has passed.
//! - 自办自结率 self-resolved share = reports settled in the grid by its own worker / reports. A
//!   grid item settled on the spot by an operator is 代结 (`resolved_on_behalf`), counted apart.
//! - 提级 taken over: town items a county operator took over (`take_over`).
//! - 按期处置率 on-time handling = handled by the deadline / due for handling.
//! - 结案率 closure rate = closed / due for closure (published bulletins: e.g. 911 ÷ 972).
//! - 按期结案率 on-time closure = closed by the deadline / (due for closure − deferred); this version
//!   has no extension (延期) action, so deferred is 0.
//! - 返工率 rework rate = reports with an applied `rework` / due for closure.
//! - median minutes from escalation to acceptance, and from creation to closure.
//! - overdue now: unfinished reports past their handling deadline unhandled, or past their closure
//!   deadline unclosed.
//!
//! Times come from the transitions' `at` (the acting device's clock).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::lifecycle::{Action, Level, Status};
use crate::org::Role;
use crate::policy::Policy;
use crate::report::{Category, Record, ReportView, order_units};

/// The indicators for one period and place. Rates are `None` when their denominator is zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Indicators {
    pub reports: u64,
    pub cancelled: u64,
    pub by_category: BTreeMap<Category, u64>,
    pub by_level: BTreeMap<Level, u64>,
    pub self_resolved: u64,
    /// 代结: grid items settled on the spot by an operator, not the grid's worker.
    #[serde(default)]
    pub resolved_on_behalf: u64,
    /// 提级办理: town items a county operator took over.
    #[serde(default)]
    pub taken_over: u64,
    pub escalated: u64,
    pub handled: u64,
    pub handled_on_time: u64,
    pub due_for_handling: u64,
    pub closed: u64,
    pub closed_on_time: u64,
    pub due_for_closure: u64,
    pub deferred: u64,
    pub reworked: u64,
    pub overdue_now: u64,
    /// 自办自结率
    pub self_resolved_share: Option<f64>,
    /// 按期处置率
    pub on_time_handling_rate: Option<f64>,
    /// 结案率
    pub closure_rate: Option<f64>,
    /// 按期结案率
    pub on_time_closure_rate: Option<f64>,
    /// 返工率
    pub rework_rate: Option<f64>,
    pub median_minutes_to_accept: Option<f64>,
    pub median_minutes_to_close: Option<f64>,
}

fn rate(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

fn minutes(limit: Option<u32>) -> u32 {
    limit.unwrap_or(0)
}

/// Computes the indicators over `reports` created in `[from, to)` (milliseconds), as of `now`.
pub fn compute(reports: &[ReportView], policy: &Policy, now: i64, from: i64, to: i64) -> Indicators {
    let mut out = Indicators {
        reports: 0,
        cancelled: 0,
        by_category: BTreeMap::new(),
        by_level: BTreeMap::new(),
        self_resolved: 0,
        resolved_on_behalf: 0,
        taken_over: 0,
        escalated: 0,
        handled: 0,
        handled_on_time: 0,
        due_for_handling: 0,
        closed: 0,
        closed_on_time: 0,
        due_for_closure: 0,
        deferred: 0,
        reworked: 0,
        overdue_now: 0,
        self_resolved_share: None,
        on_time_handling_rate: None,
        closure_rate: None,
        on_time_closure_rate: None,
        rework_rate: None,
        median_minutes_to_accept: None,
        median_minutes_to_close: None,
    };
    let (mut to_accept, mut to_close) = (Vec::new(), Vec::new());
    for r in reports.iter().filter(|r| r.created_at >= from && r.created_at < to) {
        *out.by_category.entry(r.category).or_default() += 1;
        *out.by_level.entry(r.level).or_default() += 1;
        if r.status == Status::Cancelled {
            out.cancelled += 1;
            continue;
        }
        out.reports += 1;
        let applied: Vec<_> = r.transitions.iter().filter(|t| t.applied).collect();
        let first = |a: Action| applied.iter().find(|t| t.action == a).map(|t| t.at);
        let escalated_at = first(Action::Escalate);
        let self_resolved = applied.iter().find(|t| t.action == Action::SelfResolve);
        let handled_at =
            applied.iter().find(|t| matches!(t.action, Action::Resolve | Action::SelfResolve)).map(|t| t.at);
        let closed_at = first(Action::Close);
        match self_resolved.map(|t| t.role) {
            Some(Role::GridWorker) => out.self_resolved += 1,
            Some(_) => out.resolved_on_behalf += 1,
            None => {}
        }
        if applied.iter().any(|t| t.action == Action::TakeOver) {
            out.taken_over += 1;
        }
        if escalated_at.is_some() {
            out.escalated += 1;
        }
        if applied.iter().any(|t| t.action == Action::Rework) {
            out.reworked += 1;
        }
        if let (Some(e), Some(a)) = (escalated_at, first(Action::Accept)) {
            to_accept.push((a - e) as f64 / 60_000.0);
        }
        let u = r.urgency;
        let steps: &[&str] =
            if escalated_at.is_some() { &["accept", "dispatch", "resolve"] } else { &["resolve"] };
        let handle_minutes: u32 = steps.iter().map(|s| minutes(policy.limit_minutes(s, u))).sum();
        let handle_due = policy.after(u, r.created_at, handle_minutes);
        let close_due = policy.after(u, handle_due, minutes(policy.limit_minutes("close", u)));
        if let Some(h) = handled_at {
            out.handled += 1;
            if h <= handle_due {
                out.handled_on_time += 1;
            }
        }
        if handled_at.is_some() || handle_due <= now {
            out.due_for_handling += 1;
        }
        if let Some(c) = closed_at {
            out.closed += 1;
            to_close.push((c - r.created_at) as f64 / 60_000.0);
            if c <= close_due {
                out.closed_on_time += 1;
            }
        }
        if closed_at.is_some() || close_due <= now {
            out.due_for_closure += 1;
        }
        let finished = r.status == Status::Closed;
        if !finished && ((handled_at.is_none() && handle_due < now) || close_due < now) {
            out.overdue_now += 1;
        }
    }
    out.self_resolved_share = rate(out.self_resolved, out.reports);
    out.on_time_handling_rate = rate(out.handled_on_time, out.due_for_handling);
    out.closure_rate = rate(out.closed, out.due_for_closure);
    out.on_time_closure_rate = rate(out.closed_on_time, out.due_for_closure.saturating_sub(out.deferred));
    out.rework_rate = rate(out.reworked, out.due_for_closure);
    out.median_minutes_to_accept = median(to_accept);
    out.median_minutes_to_close = median(to_close);
    out
}

/// A handling unit's indicators (乡呼县应 assessment), over the orders (dispatches and reworks)
/// that named it, in reports created in the period. Rates are `None` when their denominator is 0.
///
/// - on-time signing = orders signed within the policy's `sign` limit of the order / orders;
/// - on-time completion = orders the unit replied to within the `resolve` limit / orders;
/// - return rate = orders the unit handed back (the lead unit answers for a return) / orders;
/// - rework rate = orders sent back after the unit's result (a `rework` on them) / orders;
/// - satisfaction = (satisfied + basically satisfied) / visits that reached the resident
///   (`unreachable` left out), over visits on its orders;
/// - verification pass rate = passing checks / checks, on its orders;
/// - extension rate = orders with an approved extension (延期) / orders; an approved extension
///   moves the reply's deadline to its new date.
///
/// Order times are when the server received the transition (as for [`compute`]); sign and reply
/// times are the records' own `at` (the device's clock, corrected by the server offset it learnt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UnitIndicators {
    pub unit: String,
    pub orders: u64,
    pub signed: u64,
    pub signed_on_time: u64,
    pub replied: u64,
    pub replied_on_time: u64,
    pub returned: u64,
    pub reworked: u64,
    /// Orders with an approved extension (延期).
    pub extended: u64,
    pub visits: u64,
    pub visits_reached: u64,
    pub satisfied: u64,
    pub checks: u64,
    pub checks_passed: u64,
    /// 按期签收率
    pub on_time_signing_rate: Option<f64>,
    /// 按期办结率
    pub on_time_completion_rate: Option<f64>,
    /// 退件率
    pub return_rate: Option<f64>,
    /// 返工率
    pub rework_rate: Option<f64>,
    /// 延期率
    pub extension_rate: Option<f64>,
    /// 满意率
    pub satisfaction_rate: Option<f64>,
    /// 核查通过率
    pub verification_pass_rate: Option<f64>,
}

impl UnitIndicators {
    fn new(unit: &str) -> Self {
        UnitIndicators {
            unit: unit.to_string(),
            orders: 0,
            signed: 0,
            signed_on_time: 0,
            replied: 0,
            replied_on_time: 0,
            returned: 0,
            reworked: 0,
            extended: 0,
            visits: 0,
            visits_reached: 0,
            satisfied: 0,
            checks: 0,
            checks_passed: 0,
            on_time_signing_rate: None,
            on_time_completion_rate: None,
            return_rate: None,
            rework_rate: None,
            extension_rate: None,
            satisfaction_rate: None,
            verification_pass_rate: None,
        }
    }
}

/// Computes every unit's indicators over `reports` created in `[from, to)`, sorted by unit id.
pub fn by_unit(reports: &[ReportView], policy: &Policy, from: i64, to: i64) -> Vec<UnitIndicators> {
    let mut out: BTreeMap<String, UnitIndicators> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.created_at >= from && r.created_at < to) {
        let u = r.urgency;
        let units_of = order_units(&r.transitions);
        for order in r.transitions.iter().filter(|t| t.applied && t.to == Status::Dispatched) {
            let units = units_of.get(order.id.as_str()).copied().unwrap_or_default();
            let records = |rec: Record| {
                r.notes
                    .iter()
                    .filter(move |n| n.record == Some(rec) && n.order.as_deref() == Some(order.id.as_str()))
            };
            let sign_due = policy.after(u, order.at, minutes(policy.limit_minutes("sign", u)));
            // An approved extension moves the reply's deadline.
            let extended = crate::report::extension_state(&r.notes, &order.id).1;
            let reply_due = policy
                .after(u, order.at, minutes(policy.limit_minutes("resolve", u)))
                .max(extended.unwrap_or(i64::MIN));
            let after =
                |k: Action| r.transitions.iter().any(|t| t.applied && t.action == k && t.parent == order.id);
            for (i, unit) in units.iter().enumerate() {
                let e = out.entry(unit.clone()).or_insert_with(|| UnitIndicators::new(unit));
                e.orders += 1;
                let by_unit = |rec: Record| {
                    records(rec).filter(|n| n.unit.as_deref() == Some(unit.as_str())).map(|n| n.at).min()
                };
                if let Some(at) = by_unit(Record::Sign) {
                    e.signed += 1;
                    e.signed_on_time += u64::from(at <= sign_due);
                }
                if let Some(at) = by_unit(Record::Reply) {
                    e.replied += 1;
                    e.replied_on_time += u64::from(at <= reply_due);
                }
                // The lead unit answers for a return (牵头负全责).
                e.returned += u64::from(i == 0 && after(Action::HandBack));
                e.reworked += u64::from(after(Action::Rework));
                e.extended += u64::from(extended.is_some());
                for v in records(Record::Visit).filter(|v| v.result.as_deref() != Some("not_applicable")) {
                    e.visits += 1;
                    if v.result.as_deref() != Some("unreachable") {
                        e.visits_reached += 1;
                    }
                    if matches!(v.result.as_deref(), Some("satisfied" | "basically_satisfied")) {
                        e.satisfied += 1;
                    }
                }
                for c in records(Record::Verify) {
                    e.checks += 1;
                    e.checks_passed += u64::from(c.result.as_deref() == Some("pass"));
                }
            }
        }
    }
    out.into_values()
        .map(|mut e| {
            e.on_time_signing_rate = rate(e.signed_on_time, e.orders);
            e.on_time_completion_rate = rate(e.replied_on_time, e.orders);
            e.return_rate = rate(e.returned, e.orders);
            e.rework_rate = rate(e.reworked, e.orders);
            e.extension_rate = rate(e.extended, e.orders);
            e.satisfaction_rate = rate(e.satisfied, e.visits_reached);
            e.verification_pass_rate = rate(e.checks_passed, e.checks);
            e
        })
        .collect()
}

/// The indicators of each place or person: reports grouped by `key` (town, grid or reporter).
pub fn grouped(
    reports: &[ReportView],
    policy: &Policy,
    now: i64,
    from: i64,
    to: i64,
    key: impl Fn(&ReportView) -> String,
) -> Vec<(String, Indicators)> {
    let mut groups: BTreeMap<String, Vec<ReportView>> = BTreeMap::new();
    for r in reports {
        groups.entry(key(r)).or_default().push(r.clone());
    }
    groups
        .into_iter()
        .map(|(k, rs)| (k, compute(&rs, policy, now, from, to)))
        .filter(|(_, i)| i.reports + i.cancelled > 0)
        .collect()
}

/// Indicators broken down (`GET /v1/admin/stats?by=…`, `field admin stats --by`): `groups` for a
/// town, grid or worker (reporter) breakdown, `units` for handling units; the other is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IndicatorsBy {
    /// `town`, `village`, `grid`, `worker`, `category` or `unit`.
    pub by: String,
    pub groups: Vec<IndicatorsGroup>,
    pub units: Vec<UnitIndicators>,
}

/// Indicators as CSV for the monthly bulletin: a header line, then one line per row (`key` first,
/// then every count and rate by name; maps such as `by_category` are left out). Rates are
/// fractions with up to four decimals; absent rates are empty cells.
pub fn to_csv(key_name: &str, rows: &[(String, serde_json::Value)]) -> String {
    let columns: Vec<String> = rows
        .first()
        .and_then(|(_, v)| v.as_object())
        .map(|o| o.iter().filter(|(_, x)| !x.is_object() && !x.is_array()).map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let cell = |s: &str| {
        if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
    };
    let mut out = String::new();
    out.push_str(
        &std::iter::once(key_name.to_string()).chain(columns.iter().cloned()).collect::<Vec<_>>().join(","),
    );
    out.push('\n');
    for (key, v) in rows {
        let mut line = vec![cell(key)];
        for c in &columns {
            line.push(match v.get(c) {
                Some(serde_json::Value::Number(n)) if n.is_f64() => {
                    format!("{:.4}", n.as_f64().unwrap_or(0.0))
                        .trim_end_matches('0')
                        .trim_end_matches('.')
                        .to_string()
                }
                Some(serde_json::Value::Null) | None => String::new(),
                Some(serde_json::Value::String(s)) => cell(s),
                Some(x) => x.to_string(),
            });
        }
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// One place's or person's indicators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IndicatorsGroup {
    /// The town or grid id, or the reporter's user id.
    pub key: String,
    pub indicators: Indicators,
}

#[cfg(test)]
mod csv_tests {
    #[test]
    fn csv_has_a_header_a_line_per_row_quotes_and_empty_absent_rates() {
        let rows = vec![
            ("T01".to_string(), serde_json::json!({"closed": 3, "closure_rate": 0.75, "by_level": {}})),
            ("a,b".to_string(), serde_json::json!({"closed": 0, "closure_rate": null, "by_level": {}})),
        ];
        let csv = super::to_csv("town", &rows);
        assert_eq!(csv, "town,closed,closure_rate\nT01,3,0.75\n\"a,b\",0,\n");
    }
}
