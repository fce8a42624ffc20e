//! What the commands print: tables and details for people, the schema'd JSON for programs.

use anyhow::Result;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use gridsync_core::patrol::PatrolView;
use gridsync_core::policy::Light;
use gridsync_core::report::ReportView;
use serde::Serialize;

use crate::home::{Home, Refusal};
use gridsync_core::protocol::QueueEntry;

use crate::report::short;
use crate::sync::SyncSummary;

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    t
}

pub fn json<T: Serialize + ?Sized>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A local time stamp, in UTC, to the minute.
pub fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}Z", rem / 3600, rem % 3600 / 60)
}

/// A value a merge rule kept or set aside, in words: a lifecycle step as "escalate → escalated @ town".
pub fn describe_value(v: &serde_json::Value) -> String {
    match (v.get("action"), v.get("to"), v.get("level")) {
        (Some(a), Some(t), Some(l)) => {
            format!(
                "{} → {} @ {}",
                a.as_str().unwrap_or("?"),
                t.as_str().unwrap_or("?"),
                l.as_str().unwrap_or("?")
            )
        }
        _ => match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    }
}

/// How long, in words, for overdue and remaining times.
fn span(ms: i64) -> String {
    let m = ms.abs() / 60_000;
    if m < 60 {
        format!("{m}m")
    } else if m < 48 * 60 {
        format!("{}h{:02}m", m / 60, m % 60)
    } else {
        format!("{}d{}h", m / 1440, m % 1440 / 60)
    }
}

pub fn status(home: &Home, as_json: bool) -> Result<()> {
    let p = home.profile()?;
    let pending = home.outbox_len()?;
    let refusals = home.refusals(None)?;
    let waiting_points: i64 = home.conn.query_row("SELECT COUNT(*) FROM pending_track", [], |r| r.get(0))?;
    if as_json {
        return json(&serde_json::json!({
            "user": p.whoami.user,
            "role": p.whoami.role,
            "server": p.server,
            "device": p.device,
            "cursor": p.cursor,
            "pending_changes": pending,
            "pending_track_points": waiting_points,
            "last_sync": p.last_sync,
            "active_patrol": p.active_patrol,
            "refused": refusals,
        }));
    }
    println!("{} ({}) on {}", p.whoami.name, p.whoami.role.as_str(), p.server);
    println!(
        "waiting to be sent: {pending} change(s){}",
        if waiting_points > 0 { format!(", {waiting_points} track point(s)") } else { String::new() }
    );
    match &p.last_sync {
        Some(s) => {
            println!("last sync: {} — {} — {}", when(s.at), if s.ok { "ok" } else { "FAILED" }, s.message)
        }
        None => println!("last sync: never (run: field sync)"),
    }
    println!("cursor: {}", p.cursor);
    if let Some(a) = &p.active_patrol {
        println!("patrol under way: {}", short(a));
    }
    if !refusals.is_empty() {
        println!(
            "\nrefused by the server — these edits were not accepted; do not repeat them, check with your hub:"
        );
        for r in &refusals {
            println!("  report {}: {} ({})", short(&r.doc), r.message, r.code);
        }
        println!("(once read: field status --clear-refused)");
    }
    Ok(())
}

pub fn sync_summary(s: &SyncSummary, as_json: bool) -> Result<()> {
    if as_json {
        return json(s);
    }
    println!(
        "sent {} change(s): {} accepted, {} already there, {} refused{}; received {} document(s); {} round trip(s), {} bytes up, {} bytes down",
        s.pushed,
        s.accepted,
        s.duplicate,
        s.refused,
        if s.waiting > 0 { format!(", {} waiting for earlier changes", s.waiting) } else { String::new() },
        s.pulled_documents,
        s.round_trips,
        s.bytes_up,
        s.bytes_down
    );
    for (doc, code, message) in &s.refusals {
        println!("  refused on report {}: {message} ({code})", short(doc));
    }
    if s.notes_rewritten > 0 {
        println!("  {} of your notes built on a refused edit were kept and sent again", s.notes_rewritten);
    }
    Ok(())
}

pub fn report_list(views: &[ReportView], as_json: bool) -> Result<()> {
    if as_json {
        return json(views);
    }
    if views.is_empty() {
        println!("no reports on this device");
        return Ok(());
    }
    let mut t = table(&["id", "created", "category", "urgency", "status", "level", "title"]);
    for v in views {
        t.add_row(vec![
            short(&v.id).to_string(),
            when(v.created_at),
            format!("{} {}", v.category_zh, v.category.as_str()),
            v.urgency.to_string(),
            v.status.to_string(),
            v.level.to_string(),
            v.title.clone(),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub fn report(v: &ReportView, refusals: &[Refusal], as_json: bool) -> Result<()> {
    if as_json {
        if refusals.is_empty() {
            return json(v);
        }
        let mut value = serde_json::to_value(v)?;
        value["refused"] = serde_json::to_value(refusals)?;
        return json(&value);
    }
    println!("{}  [{}]", v.title, v.id);
    println!(
        "category: {} ({})   urgency: {}   status: {} at {} level",
        v.category_zh,
        v.category.as_str(),
        v.urgency,
        v.status,
        v.level
    );
    println!("grid: {} ({})   reported by {} at {}", v.grid, v.town, v.reporter, when(v.created_at));
    let loc = &v.location;
    if loc.lat.is_some() || loc.address.is_some() {
        let pos = match (loc.lat, loc.lon) {
            (Some(a), Some(o)) => format!("{a:.6},{o:.6} "),
            _ => String::new(),
        };
        println!("location: {}", format!("{pos}{}", loc.address.as_deref().unwrap_or("")).trim_end());
    }
    if !v.parties.is_empty() {
        let people: Vec<String> = v
            .parties
            .iter()
            .map(|p| match &p.contact {
                Some(c) => format!("{} ({c})", p.name),
                None => p.name.clone(),
            })
            .collect();
        println!(
            "parties: {}{}",
            people.join(", "),
            v.head_count.map(|n| format!("; people involved: {n}")).unwrap_or_default()
        );
    }
    if !v.description.is_empty() {
        println!("\n{}", v.description);
    }
    if !v.notes.is_empty() {
        println!("\nnotes:");
        for n in &v.notes {
            println!("  {} {} ({}): {}", when(n.at), n.author, n.role.as_str(), n.text);
        }
    }
    if !v.transitions.is_empty() {
        println!("\nhistory:");
        for t in &v.transitions {
            let mark = if t.applied { " " } else { "x" };
            let dept = t.dept.as_ref().map(|d| format!(" to {d}")).unwrap_or_default();
            let reason = if t.reason.is_empty() { String::new() } else { format!(" — {}", t.reason) };
            println!(
                "  {mark} {} {} by {}{dept}: {} @ {} → {} @ {}{reason}",
                when(t.at),
                t.action,
                t.author,
                t.from,
                t.from_level,
                t.to,
                t.to_level
            );
        }
    }
    if !v.conflicts.is_empty() {
        println!("\nconcurrent edits resolved:");
        for c in &v.conflicts {
            let lost: Vec<String> = c
                .discarded
                .iter()
                .map(|d| format!("{} by {}", describe_value(&d.value), d.by.as_deref().unwrap_or("?")))
                .collect();
            println!(
                "  {}: kept {} by {}; set aside {} (rule {})",
                c.field,
                describe_value(&c.kept),
                c.kept_by.as_deref().unwrap_or("?"),
                lost.join(", "),
                serde_json::to_value(c.rule)?.as_str().unwrap_or("")
            );
        }
    }
    if !refusals.is_empty() {
        println!("\n! the server refused edits to this report:");
        for r in refusals {
            println!("  {} ({})", r.message, r.code);
        }
    }
    Ok(())
}

pub fn queue(items: &[QueueEntry], now: i64, as_json: bool) -> Result<()> {
    if as_json {
        return json(items);
    }
    if items.is_empty() {
        println!("the queue is empty");
        return Ok(());
    }
    let mut t =
        table(&["light", "id", "urgency", "waiting for", "since", "due", "grid", "title", "claimed by"]);
    for i in items {
        let light = match i.light {
            Light::Green => "green",
            Light::Yellow => "YELLOW",
            Light::Red => "RED",
        };
        let due = if i.due < now {
            format!("overdue {}", span(now - i.due))
        } else {
            format!("in {}", span(i.due - now))
        };
        t.add_row(vec![
            light.to_string(),
            short(&i.doc).to_string(),
            i.urgency.to_string(),
            i.step.clone(),
            when(i.since),
            due,
            i.grid.clone(),
            i.title.clone(),
            i.claim.as_ref().map(|c| format!("{} until {}", c.name, when(c.expires_at))).unwrap_or_default(),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub fn patrol_list(views: &[PatrolView], as_json: bool) -> Result<()> {
    if as_json {
        return json(views);
    }
    if views.is_empty() {
        println!("no patrols on this device");
        return Ok(());
    }
    let mut t = table(&["id", "started", "ended", "check-ins", "visits", "track points"]);
    for v in views {
        t.add_row(vec![
            short(&v.id).to_string(),
            when(v.started_at),
            v.ended_at.map(when).unwrap_or_else(|| "under way".into()),
            v.checkins.len().to_string(),
            v.visits.len().to_string(),
            v.track.len().to_string(),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub fn patrol(v: &PatrolView, as_json: bool) -> Result<()> {
    if as_json {
        return json(v);
    }
    println!("patrol {} by {} in grid {}", v.id, v.worker, v.grid);
    println!(
        "started {}; {}",
        when(v.started_at),
        v.ended_at.map(|e| format!("ended {}", when(e))).unwrap_or_else(|| "under way".into())
    );
    if !v.companions.is_empty() {
        println!("with: {}", v.companions.join(", "));
    }
    for c in &v.checkins {
        println!("  check-in {} at {}", when(c.at), c.place);
    }
    for h in &v.visits {
        println!("  visited {} at {}", h.household, when(h.at));
    }
    println!("track: {} point(s); findings: {}", v.track.len(), v.findings.len());
    if !v.narrative.is_empty() {
        println!("\n{}", v.narrative);
    }
    Ok(())
}

pub fn indicators(i: &gridsync_core::indicators::Indicators) -> Result<()> {
    let pct = |r: Option<f64>| r.map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "—".into());
    let mins = |m: Option<f64>| m.map(|m| span((m * 60_000.0) as i64)).unwrap_or_else(|| "—".into());
    let mut t = table(&["indicator", "value", "of"]);
    t.add_row(vec![
        "reports".to_string(),
        i.reports.to_string(),
        format!("{} cancelled left out", i.cancelled),
    ]);
    t.add_row(vec![
        "自办自结率 self-resolved".into(),
        pct(i.self_resolved_share),
        format!("{} / {}", i.self_resolved, i.reports),
    ]);
    t.add_row(vec![
        "按期处置率 handled on time".into(),
        pct(i.on_time_handling_rate),
        format!("{} / {} due", i.handled_on_time, i.due_for_handling),
    ]);
    t.add_row(vec!["结案率 closed".into(), pct(i.closure_rate), format!("{} / {}", i.closed, i.reports)]);
    t.add_row(vec![
        "按期结案率 closed on time".into(),
        pct(i.on_time_closure_rate),
        format!("{} / ({} due − {} deferred)", i.closed_on_time, i.due_for_closure, i.deferred),
    ]);
    t.add_row(vec![
        "返工率 rework".into(),
        pct(i.rework_rate),
        format!("{} / {} due", i.reworked, i.due_for_closure),
    ]);
    t.add_row(vec!["median time to accept".into(), mins(i.median_minutes_to_accept), String::new()]);
    t.add_row(vec!["median time to close".into(), mins(i.median_minutes_to_close), String::new()]);
    t.add_row(vec!["overdue now".into(), i.overdue_now.to_string(), String::new()]);
    println!("{t}");
    let cats: Vec<String> = i.by_category.iter().map(|(c, n)| format!("{} {n}", c.label_zh())).collect();
    let levels: Vec<String> = i.by_level.iter().map(|(l, n)| format!("{l} {n}")).collect();
    println!("by category: {}\nby level: {}", cats.join(", "), levels.join(", "));
    Ok(())
}
