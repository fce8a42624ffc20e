//! What the commands print: tables and details for people, the schema'd JSON for programs.

use anyhow::Result;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use gridsync_core::patrol::PatrolView;
use gridsync_core::policy::Light;
use gridsync_core::report::ReportView;
use serde::Serialize;

use gridsync_core::doc::DocKind;
use gridsync_core::output::{DeviceState, InboxEntry, InboxKind, SyncAttempt, SyncOutcome};
use gridsync_core::protocol::QueueEntry;

use crate::home::Refusal;
use crate::lang;
use crate::report::short;
use crate::tr;

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    t
}

pub fn json<T: Serialize + ?Sized>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub use crate::lang::when;

/// A value a merge rule kept or set aside, in words: a lifecycle step as "上报 → 已上报 @ 镇（街道）".
pub fn describe_value(v: &serde_json::Value) -> String {
    use gridsync_core::lifecycle::{Action, Level, Status};
    let word = |k: &str| v.get(k).and_then(|x| x.as_str());
    match (word("action"), word("to"), word("level")) {
        (Some(a), Some(t), Some(l)) => format!(
            "{} → {} @ {}",
            Action::parse(a).map(lang::action).unwrap_or("?"),
            Status::parse(t).map(lang::status).unwrap_or("?"),
            Level::parse(l).map(lang::level).unwrap_or("?"),
        ),
        _ => match v {
            serde_json::Value::String(s) => match gridsync_core::report::Urgency::parse(s) {
                Some(u) => lang::urgency(u).to_string(),
                None => lang::clean(s),
            },
            other => lang::clean(&other.to_string()),
        },
    }
}

/// How long, in words, for overdue and remaining times.
fn span(ms: i64) -> String {
    let m = ms.abs() / 60_000;
    if m < 60 {
        tr!("{m} 分钟", "{m}m")
    } else if m < 48 * 60 {
        tr!("{} 小时 {} 分", "{}h{:02}m", m / 60, m % 60)
    } else {
        tr!("{} 天 {} 小时", "{}d{}h", m / 1440, m % 1440 / 60)
    }
}

/// `--limit` and `--offset` of every list command.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Paging {
    /// Most entries to list, newest first (default: a screenful in a table, all with --json).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Entries to skip first (for the next page).
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
}

/// One page of a list: `limit` items after `offset`; without `--limit`, tables show `default`
/// items (and say how to see the rest) while JSON gets everything.
pub fn page<T>(items: Vec<T>, paging: Paging, json: bool, default: usize) -> Vec<T> {
    let Paging { limit, offset } = paging;
    let total = items.len();
    let limit = limit.unwrap_or(if json { usize::MAX } else { default });
    let shown: Vec<T> = items.into_iter().skip(offset).take(limit).collect();
    let rest = total.saturating_sub(offset + shown.len());
    if !json && rest > 0 {
        eprintln!(
            "{}",
            tr!(
                "（还有 {rest} 条没有显示；用 --offset {} 看下一页）",
                "({rest} more not shown; --offset {} shows the next page)",
                offset + shown.len()
            )
        );
    }
    shown
}

/// How much text a table cell shows.
const CELL: usize = 24;

fn attempt_line(a: &SyncAttempt) -> String {
    if a.ok {
        tr!("{} 成功：{}", "{} ok: {}", when(a.at), a.message)
    } else {
        tr!("{} 失败：{}", "{} FAILED: {}", when(a.at), a.message)
    }
}

pub fn status(state: &DeviceState, as_json: bool) -> Result<()> {
    if as_json {
        return json(state);
    }
    println!(
        "{}",
        tr!(
            "{}（{}），服务器 {}",
            "{} ({}) on {}",
            lang::clean(&state.name),
            lang::role(state.role),
            state.server
        )
    );
    if state.revoked {
        println!(
            "{}",
            tr!(
                "！此账号已被管理员停用：本机不能再同步或记录新工作。未发送的工作仍在本机，可用 field export --unsent 文件名 导出交给管理员。",
                "! This account was revoked by an administrator: this device can no longer sync or record new work. Unsent work stays here; export it for your administrator with field export --unsent FILE."
            )
        );
    }
    match &state.last_success {
        Some(s) => println!("{}", tr!("上次成功同步：{}", "last successful sync: {}", attempt_line(s))),
        None => {
            println!("{}", tr!("还没有成功同步过（运行：field sync）", "never synced yet (run: field sync)"))
        }
    }
    if let Some(f) = &state.last_failure
        && state.last_success.as_ref().is_none_or(|s| f.at > s.at)
    {
        println!("{}", tr!("上次失败：{}", "last failure: {}", attempt_line(f)));
    }
    if state.pending.is_empty() && state.pending_track_points == 0 {
        println!("{}", tr!("所有工作都已发送到服务器。", "all your work has reached the server."));
    } else {
        println!("{}", tr!("等待发送（已保存在本机）：", "waiting to be sent (saved on this device):"));
        for p in &state.pending {
            let what = match p.kind {
                DocKind::Report => lang::pick("事件", "report"),
                DocKind::Patrol => lang::pick("巡查", "patrol"),
                DocKind::Parties => lang::pick("当事人", "parties"),
            };
            println!(
                "  {}",
                tr!(
                    "{what}“{}”（{}）：{} 项修改",
                    "{what} \"{}\" ({}): {} change(s)",
                    lang::cell(&p.title, 40),
                    short(&p.doc),
                    p.changes
                )
            );
        }
        if state.pending_track_points > 0 {
            println!("  {}", tr!("巡查轨迹点 {} 个", "{} track point(s)", state.pending_track_points));
        }
    }
    if let Some(a) = &state.active_patrol {
        println!("{}", tr!("进行中的巡查：{}", "patrol under way: {}", short(a)));
    }
    if state.inbox_unread > 0 {
        println!(
            "{}",
            tr!("收件箱有 {} 条新消息：field inbox", "{} new in your inbox: field inbox", state.inbox_unread)
        );
    }
    if !state.refused.is_empty() {
        println!(
            "\n{}",
            tr!(
                "被服务器拒收的修改（不要重复这些操作，请联系镇综治中心）：",
                "refused by the server — these edits were not accepted; do not repeat them, check with your hub:"
            )
        );
        for r in &state.refused {
            println!(
                "  {}",
                tr!(
                    "事件 {}：{}",
                    "report {}: {}",
                    short(&r.doc),
                    lang::refusal_text(&r.code, &lang::clean(&r.message))
                )
            );
        }
        println!(
            "{}",
            tr!("（看过后：field status --clear-refused）", "(once read: field status --clear-refused)")
        );
    }
    Ok(())
}

/// Prints a sync's outcome: counts, refusals, and the new inbox entries.
pub fn sync_outcome(s: &SyncOutcome, as_json: bool) -> Result<()> {
    if as_json {
        return json(s);
    }
    let mut line = tr!(
        "发送 {} 项修改：{} 项已接收，{} 项服务器已有，{} 项被拒收",
        "sent {} change(s): {} accepted, {} already there, {} refused",
        s.pushed,
        s.accepted,
        s.duplicate,
        s.refused
    );
    if s.waiting > 0 {
        line += &tr!("，{} 项等待更早的修改", ", {} waiting for earlier changes", s.waiting);
    }
    line += &tr!(
        "；收到 {} 份文档；{} 次往返，上行 {} 字节，下行 {} 字节",
        "; received {} document(s); {} round trip(s), {} bytes up, {} bytes down",
        s.pulled_documents,
        s.round_trips,
        s.bytes_up,
        s.bytes_down
    );
    println!("{line}");
    for r in &s.refusals {
        println!(
            "  {}",
            tr!(
                "事件 {} 的修改被拒收：{}",
                "refused on report {}: {}",
                short(&r.doc),
                lang::refusal_text(&r.code, &r.message)
            )
        );
    }
    if s.notes_rewritten > 0 {
        println!(
            "  {}",
            tr!(
                "你写在被拒修改之上的 {} 条备注已保留并重新发送",
                "{} of your notes built on a refused edit were kept and sent again",
                s.notes_rewritten
            )
        );
    }
    if !s.inbox.is_empty() {
        println!("\n{}", tr!("与你有关的变化：", "what changed for you:"));
        inbox_lines(&s.inbox);
    }
    Ok(())
}

fn inbox_lines(entries: &[InboxEntry]) {
    for e in entries {
        let kind = match e.kind {
            InboxKind::ReturnedToGrid => lang::pick("退回网格", "returned to your grid"),
            InboxKind::DecisionSetAside => {
                lang::pick("你的操作被合并规则搁置", "your decision was set aside")
            }
            InboxKind::Resolved => lang::pick("已处置", "resolved"),
            InboxKind::Closed => lang::pick("已结案", "closed"),
            InboxKind::EscalatedAway => {
                lang::pick("已移出你的队列（上报）", "escalated away from your queue")
            }
            InboxKind::NewInQueue => lang::pick("队列新事项", "new in your queue"),
            InboxKind::Supervised => lang::pick("督办催办", "supervision"),
        };
        let by = e.by.as_deref().map(|b| tr!("（{}）", " (by {})", lang::clean(b))).unwrap_or_default();
        println!(
            "  {} [{kind}] {}“{}”{by}：{}",
            when(e.at),
            short(&e.doc),
            lang::cell(&e.title, 40),
            lang::clean(&e.detail)
        );
    }
}

pub fn inbox(entries: &[InboxEntry], as_json: bool) -> Result<()> {
    if as_json {
        return json(entries);
    }
    if entries.is_empty() {
        println!("{}", tr!("收件箱是空的", "the inbox is empty"));
        return Ok(());
    }
    inbox_lines(entries);
    Ok(())
}

pub fn report_list(views: &[ReportView], as_json: bool) -> Result<()> {
    if as_json {
        return json(views);
    }
    if views.is_empty() {
        println!("{}", tr!("本机没有事件", "no reports on this device"));
        return Ok(());
    }
    let header: &[&str] = if lang::en() {
        &["id", "created", "category", "urgency", "status", "level", "title"]
    } else {
        &["编号", "上报时间", "类别", "紧急程度", "状态", "层级", "标题"]
    };
    let mut t = table(header);
    for v in views {
        t.add_row(vec![
            short(&v.id).to_string(),
            when(v.created_at),
            lang::category(v.category).to_string(),
            lang::urgency(v.urgency).to_string(),
            lang::status(v.status).to_string(),
            lang::level(v.level).to_string(),
            lang::cell(&v.title, CELL),
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
    println!("{}  [{}]", lang::clean(&v.title), v.id);
    println!(
        "{}",
        tr!(
            "类别：{}   紧急程度：{}   状态：{}（{}）",
            "category: {}   urgency: {}   status: {} at {} level",
            lang::category(v.category),
            lang::urgency(v.urgency),
            lang::status(v.status),
            lang::level(v.level)
        )
    );
    println!(
        "{}",
        tr!(
            "网格：{}（{}）   上报人：{}   时间：{}",
            "grid: {} ({})   reported by {} at {}",
            v.grid,
            v.town,
            lang::clean(&v.reporter),
            when(v.created_at)
        )
    );
    let loc = &v.location;
    if loc.lat.is_some() || loc.address.is_some() {
        let pos = match (loc.lat, loc.lon) {
            (Some(a), Some(o)) => format!("{a:.6},{o:.6} "),
            _ => String::new(),
        };
        let place = format!("{pos}{}", lang::clean(loc.address.as_deref().unwrap_or("")));
        println!("{}", tr!("位置：{}", "location: {}", place.trim_end()));
    }
    if v.anonymous {
        println!("{}", tr!("反映人：匿名（不回访）", "reported anonymously (no return visit)"));
    }
    if !v.parties.is_empty() {
        let people: Vec<String> = v
            .current_parties()
            .iter()
            .enumerate()
            .map(|(i, p)| match &p.contact {
                Some(c) => format!("{}. {}（{}）", i + 1, lang::clean(&p.name), lang::clean(c)),
                None => format!("{}. {}", i + 1, lang::clean(&p.name)),
            })
            .collect();
        let count = v.head_count.map(|n| tr!("；涉及 {n} 人", "; people involved: {n}")).unwrap_or_default();
        println!("{}", tr!("当事人：{}{count}", "parties: {}{count}", people.join("，")));
        if !v.corrected_parties.is_empty() {
            let n = v.corrected_parties.len();
            println!(
                "{}",
                tr!(
                    "（另有 {n} 条当事人记录已更正，旧记录留在历史中）",
                    "({n} party entries were corrected; the old entries stay in the history)"
                )
            );
        }
    } else if let Some(n) = v.head_count {
        println!(
            "{}",
            tr!("涉及 {n} 人（当事人信息不在本机）", "people involved: {n} (parties are not on this device)")
        );
    }
    if !v.description.is_empty() {
        println!("\n{}", lang::clean(&v.description));
    }
    if !v.notes.is_empty() {
        println!("\n{}", tr!("备注：", "notes:"));
        for n in &v.notes {
            println!(
                "  {} {}（{}）：{}",
                when(n.at),
                lang::clean(&n.author),
                lang::role(n.role),
                lang::clean(&n.text)
            );
        }
    }
    if !v.transitions.is_empty() {
        println!("\n{}", tr!("办理经过：", "history:"));
        for t in &v.transitions {
            let mark = if t.applied { " " } else { "x" };
            let dept = t.dept.as_ref().map(|d| tr!(" 至 {}", " to {}", lang::clean(d))).unwrap_or_default();
            let reason =
                if t.reason.is_empty() { String::new() } else { format!(" — {}", lang::clean(&t.reason)) };
            println!(
                "  {mark} {} {}{dept}（{}）：{} @ {} → {} @ {}{reason}",
                when(t.at),
                lang::action(t.action),
                lang::clean(&t.author),
                lang::status(t.from),
                lang::level(t.from_level),
                lang::status(t.to),
                lang::level(t.to_level)
            );
        }
        if v.transitions.iter().any(|t| !t.applied) {
            println!(
                "  {}",
                tr!(
                    "（x：与别人同时办理，按规则未生效，记录在案）",
                    "(x: crossed with another step and set aside by the rules; kept on record)"
                )
            );
        }
    }
    if !v.conflicts.is_empty() {
        println!("\n{}", tr!("同时修改的处理结果：", "concurrent edits resolved:"));
        for c in &v.conflicts {
            let lost: Vec<String> = c
                .discarded
                .iter()
                .map(|d| {
                    let by = lang::clean(d.by.as_deref().unwrap_or("?"));
                    tr!("{}（{by}）", "{} by {by}", describe_value(&d.value))
                })
                .collect();
            let field = field_name(&c.field);
            let kept_by = lang::clean(c.kept_by.as_deref().unwrap_or("?"));
            println!(
                "  {}",
                tr!(
                    "{field}：保留 {}（{kept_by}），搁置 {}。规则：{}",
                    "{field}: kept {} by {kept_by}; set aside {}. Rule: {}",
                    describe_value(&c.kept),
                    lost.join("，"),
                    lang::rule(c.rule)
                )
            );
        }
    }
    if !refusals.is_empty() {
        println!(
            "\n{}",
            tr!("！服务器拒收了对这份事件的修改：", "! the server refused edits to this report:")
        );
        for r in refusals {
            println!("  {}", lang::refusal_text(&r.code, &lang::clean(&r.message)));
        }
    }
    Ok(())
}

/// A document field's name for people.
pub fn field_name(f: &str) -> String {
    let zh = match f {
        "title" => "标题",
        "description" => "描述",
        "urgency" => "紧急程度",
        "category" => "类别",
        "lifecycle" => "办理环节",
        "head_count" => "涉及人数",
        "location.address" => "地址",
        "location.lat" | "location.lon" => "位置",
        _ => return f.replace(['_', '.'], " "),
    };
    if lang::en() { f.replace(['_', '.'], " ") } else { zh.to_string() }
}

pub fn queue(items: &[QueueEntry], now: i64, as_json: bool) -> Result<()> {
    if as_json {
        return json(items);
    }
    if items.is_empty() {
        println!("{}", tr!("队列是空的", "the queue is empty"));
        return Ok(());
    }
    let header: &[&str] = if lang::en() {
        &["light", "id", "urgency", "waiting for", "since", "due", "grid", "title", "claimed by"]
    } else {
        &["灯", "编号", "紧急程度", "当前环节", "开始于", "期限", "网格", "标题", "认领人"]
    };
    let mut t = table(header);
    for i in items {
        let light = match i.light {
            Light::Green => lang::pick("绿", "green"),
            Light::Yellow => lang::pick("黄", "YELLOW"),
            Light::Red => lang::pick("红", "RED"),
        };
        let due = if i.due < now {
            tr!("已超期 {}", "overdue {}", span(now - i.due))
        } else {
            tr!("剩余 {}", "in {}", span(i.due - now))
        };
        t.add_row(vec![
            light.to_string(),
            short(&i.doc).to_string(),
            lang::urgency(i.urgency).to_string(),
            match i.supervision.as_deref() {
                Some("red") => tr!("{}（红牌督办）", "{} (RED supervision)", lang::step(&i.step)),
                Some(_) => tr!("{}（黄牌督办）", "{} (yellow supervision)", lang::step(&i.step)),
                None if i.reminded => tr!("{}（已催办）", "{} (reminded)", lang::step(&i.step)),
                None => lang::step(&i.step),
            },
            when(i.since),
            due,
            i.grid.clone(),
            lang::cell(&i.title, CELL),
            i.claim
                .as_ref()
                .map(|c| tr!("{} 至 {}", "{} until {}", lang::cell(&c.name, 12), when(c.expires_at)))
                .unwrap_or_default(),
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
        println!("{}", tr!("本机没有巡查记录", "no patrols on this device"));
        return Ok(());
    }
    let header: &[&str] = if lang::en() {
        &["id", "started", "ended", "check-ins", "visits", "track points"]
    } else {
        &["编号", "开始", "结束", "打卡", "走访", "轨迹点"]
    };
    let mut t = table(header);
    for v in views {
        t.add_row(vec![
            short(&v.id).to_string(),
            when(v.started_at),
            v.ended_at.map(when).unwrap_or_else(|| lang::pick("进行中", "under way").into()),
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
    println!(
        "{}",
        tr!(
            "巡查 {}，网格员 {}，网格 {}",
            "patrol {} by {} in grid {}",
            v.id,
            lang::clean(&v.worker),
            v.grid
        )
    );
    let end = v
        .ended_at
        .map(|e| tr!("结束于 {}", "ended {}", when(e)))
        .unwrap_or_else(|| lang::pick("进行中", "under way").into());
    println!("{}", tr!("开始于 {}；{end}", "started {}; {end}", when(v.started_at)));
    if !v.companions.is_empty() {
        let with: Vec<String> = v.companions.iter().map(|c| lang::clean(c)).collect();
        println!("{}", tr!("同行：{}", "with: {}", with.join("，")));
    }
    for c in &v.checkins {
        println!("  {}", tr!("打卡 {} 于 {}", "check-in {} at {}", when(c.at), lang::clean(&c.place)));
    }
    for h in &v.visits {
        println!("  {}", tr!("走访 {} 于 {}", "visited {} at {}", lang::clean(&h.household), when(h.at)));
    }
    println!(
        "{}",
        tr!(
            "轨迹点 {} 个；发现事件 {} 件",
            "track: {} point(s); findings: {}",
            v.track.len(),
            v.findings.len()
        )
    );
    if !v.narrative.is_empty() {
        println!("\n{}", lang::clean(&v.narrative));
    }
    Ok(())
}

pub fn indicators(i: &gridsync_core::indicators::Indicators) -> Result<()> {
    let pct = |r: Option<f64>| r.map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "—".into());
    let mins = |m: Option<f64>| m.map(|m| span((m * 60_000.0) as i64)).unwrap_or_else(|| "—".into());
    let header: &[&str] =
        if lang::en() { &["indicator", "value", "of"] } else { &["指标", "数值", "计算"] };
    let mut t = table(header);
    let row = |t: &mut Table, zh: &str, en: &str, value: String, of: String| {
        t.add_row(vec![if lang::en() { format!("{zh} {en}") } else { zh.to_string() }, value, of]);
    };
    row(
        &mut t,
        "事件总数",
        "reports",
        i.reports.to_string(),
        tr!("不含已撤销 {} 件", "{} cancelled left out", i.cancelled),
    );
    row(
        &mut t,
        "自办自结率",
        "self-resolved",
        pct(i.self_resolved_share),
        format!("{} / {}", i.self_resolved, i.reports),
    );
    row(
        &mut t,
        "按期处置率",
        "handled on time",
        pct(i.on_time_handling_rate),
        tr!("{} / 应处置 {}", "{} / {} due", i.handled_on_time, i.due_for_handling),
    );
    row(&mut t, "结案率", "closed", pct(i.closure_rate), format!("{} / {}", i.closed, i.reports));
    row(
        &mut t,
        "按期结案率",
        "closed on time",
        pct(i.on_time_closure_rate),
        tr!(
            "{} / （应结案 {} − 延期 {}）",
            "{} / ({} due − {} deferred)",
            i.closed_on_time,
            i.due_for_closure,
            i.deferred
        ),
    );
    row(
        &mut t,
        "返工率",
        "rework",
        pct(i.rework_rate),
        tr!("{} / 应结案 {}", "{} / {} due", i.reworked, i.due_for_closure),
    );
    row(&mut t, "受理用时中位数", "median time to accept", mins(i.median_minutes_to_accept), String::new());
    row(&mut t, "结案用时中位数", "median time to close", mins(i.median_minutes_to_close), String::new());
    row(&mut t, "当前超期", "overdue now", i.overdue_now.to_string(), String::new());
    println!("{t}");
    let cats: Vec<String> =
        i.by_category.iter().map(|(c, n)| format!("{} {n}", lang::category(*c))).collect();
    let levels: Vec<String> = i.by_level.iter().map(|(l, n)| format!("{} {n}", lang::level(*l))).collect();
    println!(
        "{}",
        tr!("按类别：{}\n按层级：{}", "by category: {}\nby level: {}", cats.join("，"), levels.join("，"))
    );
    Ok(())
}

/// A breakdown of the indicators: one row per town, grid, worker or handling unit.
pub fn indicators_by(
    b: &gridsync_core::indicators::IndicatorsBy,
    org: &gridsync_core::org::Org,
) -> Result<()> {
    let pct = |r: Option<f64>| r.map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "—".into());
    if b.by == "unit" {
        let header: &[&str] = if lang::en() {
            &[
                "unit",
                "orders",
                "signed on time",
                "done on time",
                "returned",
                "reworked",
                "satisfied",
                "checks passed",
            ]
        } else {
            &["承办单位", "派单", "按期签收率", "按期办结率", "退件率", "返工率", "满意率", "核查通过率"]
        };
        let mut t = table(header);
        for u in &b.units {
            let name = org.unit(&u.unit).map_or(u.unit.clone(), |x| x.name.clone());
            t.add_row(vec![
                lang::cell(&name, 24),
                u.orders.to_string(),
                pct(u.on_time_signing_rate),
                pct(u.on_time_completion_rate),
                pct(u.return_rate),
                pct(u.rework_rate),
                pct(u.extension_rate),
                pct(u.satisfaction_rate),
                pct(u.verification_pass_rate),
            ]);
        }
        println!("{t}");
        return Ok(());
    }
    let first: &str = match (b.by.as_str(), lang::en()) {
        ("town", false) => "镇（街道）",
        ("grid", false) => "网格",
        (_, false) => "网格员",
        (by, true) => by,
    };
    let header: Vec<&str> = if lang::en() {
        vec![first, "reports", "self-resolved", "handled on time", "closed", "closed on time", "overdue now"]
    } else {
        vec![first, "事件", "自办自结率", "按期处置率", "结案率", "按期结案率", "当前超期"]
    };
    let mut t = table(&header);
    for g in &b.groups {
        let i = &g.indicators;
        let name = match b.by.as_str() {
            "town" => org.town(&g.key).map_or(g.key.clone(), |x| x.name.clone()),
            "grid" => org.grid(&g.key).map_or(g.key.clone(), |x| x.name.clone()),
            _ => g.key.clone(),
        };
        t.add_row(vec![
            lang::cell(&name, 24),
            i.reports.to_string(),
            pct(i.self_resolved_share),
            pct(i.on_time_handling_rate),
            pct(i.closure_rate),
            pct(i.on_time_closure_rate),
            i.overdue_now.to_string(),
        ]);
    }
    println!("{t}");
    Ok(())
}
