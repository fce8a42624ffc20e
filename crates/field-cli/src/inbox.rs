//! The inbox: what a sync changed for the person using the device, worked out by comparing each
//! report before and after the page was applied. Shown once after `field sync`, kept for `field inbox`.

use gridsync_core::lifecycle::{Action, Level, Status, Transition};
use gridsync_core::org::Role;
use gridsync_core::output::{InboxEntry, InboxKind};
use gridsync_core::protocol::WhoAmI;
use gridsync_core::report::{Record, ReportView};

use crate::lang;
use crate::tr;

/// The level whose queue an operator works.
fn queue_level(role: Role) -> Option<Level> {
    match role {
        Role::TownOperator => Some(Level::Town),
        Role::CountyOperator => Some(Level::County),
        _ => None,
    }
}

fn is_grid_role(role: Role) -> bool {
    matches!(role, Role::GridWorker | Role::GridAssistant)
}

/// The last applied transition that is new in `new` (not in `old`): who moved the report.
fn newest_step<'a>(old: Option<&ReportView>, new: &'a ReportView) -> Option<&'a Transition> {
    new.transitions
        .iter()
        .rev()
        .filter(|t| t.applied)
        .find(|t| old.is_none_or(|o| !o.transitions.iter().any(|x| x.id == t.id)))
}

fn describe(t: &Transition) -> String {
    let reason = if t.reason.is_empty() { String::new() } else { format!("：{}", t.reason) };
    let dept = t.dept.as_ref().map(|d| tr!(" 至 {}", " to {}", d)).unwrap_or_default();
    format!("{}{dept}{reason}", lang::action(t.action))
}

/// What changed in one report for `me`, between the copy the device held (`old`) and the one it
/// now holds. Changes `me` made are not news.
pub fn entries(me: &WhoAmI, old: Option<&ReportView>, new: &ReportView, now: i64) -> Vec<InboxEntry> {
    let mut out = Vec::new();
    let entry = |kind: InboxKind, by: Option<&str>, detail: String| InboxEntry {
        id: 0,
        at: now,
        kind,
        doc: new.id.clone(),
        title: new.title.clone(),
        by: by.map(str::to_string),
        detail,
        seen: false,
    };
    let step = newest_step(old, new).filter(|t| t.author != me.user);
    let moved = old.is_none_or(|o| (o.status, o.level) != (new.status, new.level));

    // My steps that the fold now sets aside, in favour of someone else's.
    for t in new.transitions.iter().filter(|t| t.author == me.user && !t.applied) {
        let was_applied = old.is_none_or(|o| o.transitions.iter().any(|x| x.id == t.id && x.applied));
        if was_applied {
            let winner = newest_step(None, new).filter(|w| w.author != me.user);
            out.push(entry(
                InboxKind::DecisionSetAside,
                winner.map(|w| w.author.as_str()),
                tr!(
                    "你的“{}”与别人同时办理，按规则未生效；现在是 {}（{}）",
                    "your step \"{}\" crossed with another and was set aside; the report is now {} at {} level",
                    lang::action(t.action),
                    lang::status(new.status),
                    lang::level(new.level)
                ),
            ));
        }
    }
    // My values that a merge rule set aside (new conflicts only).
    for c in &new.conflicts {
        if c.field == "lifecycle" || old.is_some_and(|o| o.conflicts.contains(c)) {
            continue;
        }
        if c.discarded.iter().any(|d| d.by.as_deref() == Some(me.user.as_str())) {
            out.push(entry(
                InboxKind::DecisionSetAside,
                c.kept_by.as_deref(),
                tr!(
                    "你对“{}”的修改被搁置，保留的是 {}。规则：{}",
                    "your edit of {} was set aside for {}. Rule: {}",
                    crate::show::field_name(&c.field),
                    crate::show::describe_value(&c.kept),
                    lang::rule(c.rule)
                ),
            ));
        }
    }
    // Supervision and reminders on an item I hold (its level's hub, or a unit of its live order).
    let holds = match new.level {
        Level::Grid => me.role == Role::GridWorker && me.scope.covers(&new.grid, &new.town),
        level => queue_level(me.role) == Some(level),
    } || me.scope.unit().is_some_and(|u| new.live_units().iter().any(|l| l == u));
    if holds {
        let known = |id: &str| old.is_some_and(|o| o.notes.iter().any(|n| n.id == id));
        for n in new.notes.iter().filter(|n| !known(&n.id) && n.author != me.user) {
            let words = match (n.record, n.result.as_deref()) {
                (Some(Record::Supervise), Some("red")) => lang::pick("红牌督办", "RED supervision order"),
                (Some(Record::Supervise), _) => lang::pick("黄牌督办", "yellow supervision order"),
                (Some(Record::Remind), _) => lang::pick("催办", "reminder"),
                _ => continue,
            };
            let by = (n.role != Role::System).then_some(n.author.as_str());
            out.push(entry(InboxKind::Supervised, by, format!("{words}：{}", n.text)));
        }
    }
    let Some(step) = step else { return out };
    if !moved {
        return out;
    }
    let mine = new.reporter == me.user || (is_grid_role(me.role) && me.scope.covers(&new.grid, &new.town));
    let by = Some(step.author.as_str());
    let was_grid = old.is_some_and(|o| o.level == Level::Grid);
    if is_grid_role(me.role)
        && mine
        && new.level == Level::Grid
        && old.is_some()
        && !was_grid
        && matches!(new.status, Status::Open)
    {
        out.push(entry(InboxKind::ReturnedToGrid, by, describe(step)));
    }
    if mine || queue_level(me.role).is_some_and(|l| old.is_some_and(|o| o.level == l)) {
        match new.status {
            Status::Resolved if step.action != Action::SelfResolve || !mine => {
                out.push(entry(InboxKind::Resolved, by, describe(step)))
            }
            Status::Closed => out.push(entry(InboxKind::Closed, by, describe(step))),
            _ => {}
        }
    }
    if let Some(level) = queue_level(me.role) {
        let was_here =
            old.is_some_and(|o| o.level == level && !matches!(o.status, Status::Closed | Status::Cancelled));
        if was_here && new.level > level {
            let who = if step.role == Role::System {
                lang::pick("（超时自动上报）", " (automatically, on a deadline)").to_string()
            } else {
                String::new()
            };
            out.push(entry(InboxKind::EscalatedAway, by, format!("{}{who}", describe(step))));
        } else if new.level == level && new.status == Status::Escalated {
            out.push(entry(InboxKind::NewInQueue, by, describe(step)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridsync_core::org::Scope;
    use gridsync_core::report::{Category, Location, Urgency};

    fn view(status: Status, level: Level, transitions: Vec<Transition>) -> ReportView {
        ReportView {
            id: "r1".into(),
            grid: "G1".into(),
            town: "T1".into(),
            reporter: "worker".into(),
            created_at: 0,
            anonymous: false,
            category: Category::Other,
            category_zh: "其他".into(),
            title: "河道垃圾".into(),
            description: String::new(),
            urgency: Urgency::Normal,
            location: Location::default(),
            parties: vec![],
            corrected_parties: vec![],
            head_count: None,
            notes: vec![],
            attachments: vec![],
            status,
            level,
            tip: String::new(),
            transitions,
            conflicts: vec![],
            authors: Default::default(),
        }
    }

    fn step(
        id: &str,
        action: Action,
        author: &str,
        role: Role,
        to: (Status, Level),
        applied: bool,
    ) -> Transition {
        Transition {
            id: id.into(),
            parent: String::new(),
            action,
            author: author.into(),
            role,
            from: Status::Open,
            from_level: Level::Grid,
            to: to.0,
            to_level: to.1,
            reason: String::new(),
            dept: None,
            units: Vec::new(),
            at: 0,
            applied,
        }
    }

    fn me(user: &str, role: Role, scope: Scope) -> WhoAmI {
        WhoAmI { user: user.into(), name: user.into(), role, scope, device: None }
    }

    #[test]
    fn an_item_escalated_away_by_the_server_is_news_for_the_town_hub() {
        let hub = me("townop", Role::TownOperator, Scope::Town("T1".into()));
        let up =
            step("w/1", Action::Escalate, "worker", Role::GridWorker, (Status::Escalated, Level::Town), true);
        let old = view(Status::Escalated, Level::Town, vec![up.clone()]);
        let auto =
            step("s/1", Action::Escalate, "system", Role::System, (Status::Escalated, Level::County), true);
        let new = view(Status::Escalated, Level::County, vec![up, auto]);
        let e = entries(&hub, Some(&old), &new, 5);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].kind, InboxKind::EscalatedAway);
        assert_eq!(e[0].by.as_deref(), Some("system"));
        // And nothing for the county's queue when the county has not seen it yet? It is new there.
        let county = me("countyop", Role::CountyOperator, Scope::County);
        assert_eq!(entries(&county, None, &new, 5)[0].kind, InboxKind::NewInQueue);
    }

    #[test]
    fn own_steps_are_not_news() {
        let worker = me("worker", Role::GridWorker, Scope::Grids(vec!["G1".into()]));
        let up =
            step("w/1", Action::Escalate, "worker", Role::GridWorker, (Status::Escalated, Level::Town), true);
        let old = view(Status::Open, Level::Grid, vec![]);
        let new = view(Status::Escalated, Level::Town, vec![up]);
        assert!(entries(&worker, Some(&old), &new, 5).is_empty());
    }
}
