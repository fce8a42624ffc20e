//! `field report …` and `field queue …`: creating and editing reports offline, and the hub's queue.

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use gridsync_core::doc::DocKind;
use gridsync_core::lifecycle::{Action, Level, Status};
use gridsync_core::org::{Org, Principal, Role};
use gridsync_core::parties::{create_parties, edit_parties, materialize_parties, parties_id};
use gridsync_core::protocol::QueueEntry;
use gridsync_core::report::{
    Category, Location, NewReport, Party, Record, ReportEdit, ReportView, Urgency, VISIT_RESULTS, add_note,
    add_record_until, add_transition, create_report, dispatch_to_units, edit_report, following_head_count,
};
use gridsync_core::validate::check_action;

use crate::home::{self, Home};
use crate::{author, lang, parse_party, show, tr};
use gridsync_core::validate;

#[derive(Subcommand)]
pub enum ReportCommand {
    /// File a new report; prints its id.
    New {
        /// dispute, request, suggestion, public_security, fire, safety, sanitation, other (or the Chinese label, e.g. 矛盾纠纷).
        #[arg(long)]
        category: String,
        /// A short title (at most 200 characters).
        #[arg(long)]
        title: String,
        /// What happened, in full.
        #[arg(long, default_value = "", conflicts_with = "description_file")]
        description: String,
        /// Read the description from a file ('-' for standard input).
        #[arg(long, value_name = "FILE")]
        description_file: Option<std::path::PathBuf>,
        /// low (低), normal (一般), high (急) or critical (紧急).
        #[arg(long, default_value = "normal")]
        urgency: String,
        /// Latitude, decimal degrees (with --lon); must lie in the county.
        #[arg(long, allow_negative_numbers = true)]
        lat: Option<f64>,
        /// Longitude, decimal degrees (with --lat).
        #[arg(long, allow_negative_numbers = true)]
        lon: Option<f64>,
        /// Where it happened, in words.
        #[arg(long)]
        address: Option<String>,
        /// A party to a dispute: NAME or NAME:CONTACT (repeat for several).
        #[arg(long)]
        party: Vec<String>,
        /// The resident asked not to be named (匿名): nobody is called back after the result.
        #[arg(long)]
        anonymous: bool,
        /// The grid (needed only when you cover several).
        #[arg(long)]
        grid: Option<String>,
    },
    /// List reports on this device, newest first.
    List {
        /// Only this status: open, escalated, accepted, dispatched, resolved, closed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only this level: grid, town or county.
        #[arg(long)]
        level: Option<String>,
        /// Only this category (code or Chinese label).
        #[arg(long)]
        category: Option<String>,
        #[command(flatten)]
        paging: crate::show::Paging,
        /// Print JSON (schemas/report-list.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Everything about one report.
    Show {
        /// The id, or any 4 or more of its characters (the short id in lists).
        id: String,
        /// Print JSON (schemas/report-view.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Change a report's fields.
    Edit(EditArgs),
    /// Add a note.
    Note {
        /// The report's id (or part of it).
        id: String,
        /// The note; or use --file.
        #[arg(required_unless_present = "file")]
        text: Option<String>,
        /// Read the note from a file ('-' for standard input).
        #[arg(long, value_name = "FILE", conflicts_with = "text")]
        file: Option<std::path::PathBuf>,
    },
    /// Settle it on the spot (自办自结).
    Resolve {
        /// The report's id (or part of it).
        id: String,
        /// How it was settled.
        #[arg(long)]
        note: String,
    },
    /// Check on site a result reached above the grid (核查): --ok, or --fail to send it back to
    /// the same unit (返工) with your note.
    Verify {
        /// The report's id (or part of it).
        id: String,
        /// The result holds.
        #[arg(long, conflicts_with = "fail", required_unless_present = "fail")]
        ok: bool,
        /// The result does not hold: it goes back for rework.
        #[arg(long)]
        fail: bool,
        /// What you found.
        #[arg(long)]
        note: String,
    },
    /// Hand it one level up (上报): from the grid to the town hub; from the town to the county.
    Escalate {
        /// The report's id (or part of it).
        id: String,
        /// Why the grid cannot settle it.
        #[arg(long)]
        reason: String,
    },
    /// Withdraw a report filed by mistake.
    Cancel {
        /// The report's id (or part of it).
        id: String,
        /// Why it is withdrawn.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Args)]
pub struct EditArgs {
    /// The report's id (or part of it).
    id: String,
    /// A new title (at most 200 characters).
    #[arg(long)]
    title: Option<String>,
    /// A new description.
    #[arg(long, conflicts_with = "description_file")]
    description: Option<String>,
    /// Read the new description from a file ('-' for standard input).
    #[arg(long, value_name = "FILE")]
    description_file: Option<std::path::PathBuf>,
    /// A new category (code or Chinese label).
    #[arg(long)]
    category: Option<String>,
    /// A new urgency: low, normal, high or critical.
    #[arg(long)]
    urgency: Option<String>,
    /// New latitude (with --lon).
    #[arg(long, allow_negative_numbers = true)]
    lat: Option<f64>,
    /// New longitude (with --lat).
    #[arg(long, allow_negative_numbers = true)]
    lon: Option<f64>,
    /// A new address.
    #[arg(long)]
    address: Option<String>,
    /// Add a party: NAME or NAME:CONTACT (repeat for several). Parties are never removed.
    #[arg(long)]
    party: Vec<String>,
    /// Correct a party: N=NAME or N=NAME:CONTACT, N as numbered by `field report show`. The old
    /// entry stays in the history, marked as corrected.
    #[arg(long, value_name = "N=NAME[:CONTACT]")]
    correct_party: Vec<String>,
    /// How many people are involved, when it differs from the parties listed.
    #[arg(long)]
    head_count: Option<i64>,
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Escalated reports waiting at your level, most urgent and oldest first, with deadlines.
    List {
        /// Also the reports in hand (accepted, dispatched, resolved), with their next step's deadline.
        #[arg(long)]
        all: bool,
        /// Ask the server (needs signal): its clock, and who holds a claim on each item.
        #[arg(long)]
        server: bool,
        #[command(flatten)]
        paging: crate::show::Paging,
        /// Print JSON (schemas/queue.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Claim it so no other operator works it at the same time (needs the server; renew by claiming again).
    Claim {
        /// The report's id (or part of it).
        id: String,
    },
    /// Give up your claim.
    Release {
        /// The report's id (or part of it).
        id: String,
    },
    /// Take it on (受理).
    Accept {
        /// The report's id (or part of it).
        id: String,
        /// A remark to go with it.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Refuse it (不予受理); it goes back down.
    Reject {
        /// The report's id (or part of it).
        id: String,
        /// Why it is refused.
        #[arg(long)]
        reason: String,
    },
    /// County operators: take a town item over (提级办理), with the reason; it is then the
    /// county's to accept, dispatch and close.
    #[command(name = "take-over")]
    TakeOver {
        /// The report's id (or part of it).
        id: String,
        /// Why the county takes it.
        #[arg(long)]
        reason: String,
    },
    /// Send it to handling units (派遣, 乡呼县应): a lead unit and any assisting units.
    Dispatch {
        /// The report's id (or part of it).
        id: String,
        /// The lead unit (牵头单位), by id or name, e.g. 派出所 (this town's) or 县公安局.
        #[arg(long, required_unless_present = "to")]
        lead: Option<String>,
        /// An assisting unit (协办单位), by id or name (repeat for several).
        #[arg(long, requires = "lead")]
        assist: Vec<String>,
        /// A department written out in words, for an organisation without a unit list.
        #[arg(long, conflicts_with = "lead")]
        to: Option<String>,
    },
    /// The handling unit returns a misrouted order to the hub, with its reasons (退办 / 回退).
    #[command(alias = "return")]
    HandBack {
        /// The report's id (or part of it).
        id: String,
        /// Why it is handed back.
        #[arg(long)]
        reason: String,
    },
    /// Mark it handled (处置).
    Resolve {
        /// The report's id (or part of it).
        id: String,
        /// How it was handled.
        #[arg(long)]
        note: String,
    },
    /// A failed check: back to the department (返工).
    Rework {
        /// The report's id (or part of it).
        id: String,
        /// What the check found.
        #[arg(long)]
        reason: String,
    },
    /// Hand it one level up: from the town to the county (县应); from a grid to the town.
    Escalate {
        /// The report's id (or part of it).
        id: String,
        /// Why it goes up.
        #[arg(long)]
        reason: String,
    },
    /// Close it after the check and return visit (结案).
    Close {
        /// The report's id (or part of it).
        id: String,
        /// A closing remark.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// A handling unit signs for its order (签收).
    Sign {
        /// The report's id (or part of it).
        id: String,
    },
    /// A handling unit replies with its result (办理反馈); the report is resolved when the lead
    /// and every assisting unit have replied.
    Reply {
        /// The report's id (or part of it).
        id: String,
        /// What was done.
        #[arg(long)]
        result: String,
    },
    /// Review a grid's own settlement (审核): --confirm, or --return it to the grid with a reason.
    Review {
        /// The report's id (or part of it).
        id: String,
        /// The settlement stands.
        #[arg(long, conflicts_with = "send_back", required_unless_present = "send_back")]
        confirm: bool,
        /// Send it back to the grid to handle again.
        #[arg(long = "return")]
        send_back: bool,
        /// Why (required with --return).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reopen a closed report when a later visit finds the problem back (重新办理), within 30 days.
    Reopen {
        /// The report's id (or part of it).
        id: String,
        /// What the later visit found.
        #[arg(long)]
        reason: String,
    },
    /// Waive the grid's check of a result (免核查), county operators only, with the reason.
    Waive {
        /// The report's id (or part of it).
        id: String,
        /// Why no on-site check is needed.
        #[arg(long)]
        reason: String,
    },
    /// County operators: a supervision order (督办) on the current step, which its holder must
    /// answer; ownership does not change.
    Supervise {
        /// The report's id (or part of it).
        id: String,
        /// yellow (黄牌) or red (红牌).
        #[arg(long, default_value = "yellow")]
        level: String,
        /// What the county asks.
        #[arg(long)]
        note: String,
    },
    /// The holder of the step answers a supervision order (督办回复).
    Answer {
        /// The report's id (or part of it).
        id: String,
        /// What has been done and when it will be finished.
        #[arg(long)]
        note: String,
    },
    /// A handling unit asks for more time (延期申请): the dispatcher approves or denies it.
    Extend {
        /// The report's id (or part of it).
        id: String,
        /// The new deadline: the end of this day (YYYY-MM-DD, local time).
        #[arg(long)]
        until: String,
        /// Why more time is needed.
        #[arg(long)]
        reason: String,
    },
    /// Approve or deny a unit's extension request (延期审批).
    Extension {
        /// The report's id (or part of it).
        id: String,
        /// Approve: the new deadline holds.
        #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
        approve: bool,
        /// Deny: the old deadline stands.
        #[arg(long)]
        deny: bool,
        /// A remark.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Record the return visit (回访): satisfied, basically_satisfied, unsatisfied or unreachable.
    Visit {
        /// The report's id (or part of it).
        id: String,
        /// satisfied | basically_satisfied | unsatisfied | unreachable | not_applicable (anonymous reports only)
        /// (or 满意, 基本满意, 不满意, 联系不上, 无需回访).
        #[arg(long)]
        result: String,
        /// What the resident said.
        #[arg(long, default_value = "")]
        note: String,
    },
}

fn parse_category(s: &str) -> Result<Category> {
    Category::parse_any(s).ok_or_else(|| {
        let all: Vec<String> =
            Category::ALL.iter().map(|c| format!("{} ({})", c.as_str(), c.label_zh())).collect();
        anyhow!(tr!(
            "没有“{}”这个类别；可用：{}",
            "unknown category {:?}; use one of: {}",
            lang::cell(s, 20),
            all.join(", ")
        ))
    })
}

/// Reads a text from a file, or from standard input for `-`.
pub fn read_text(path: &std::path::Path) -> Result<String> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| anyhow!(tr!("读不到标准输入：{e}", "cannot read standard input: {e}")))?;
    } else {
        text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!(tr!("读不到 {}：{e}", "cannot read {}: {e}", path.display())))?;
    }
    Ok(text.trim_end().to_string())
}

/// Refuses a text over its limit before anything is written, in words.
pub fn check_len(what_zh: &str, what_en: &str, value: &str, max: usize) -> Result<()> {
    if validate::check_text(what_en, value, max).is_err() {
        bail!(
            "{}",
            tr!(
                "{what_zh}太长：最多 {max} 个字（现在 {} 个字）",
                "{what_en} is too long: at most {max} characters (it has {})",
                value.chars().count()
            )
        );
    }
    Ok(())
}

/// Checks a position against the county before it is written.
pub fn check_position(org: &gridsync_core::org::Org, lat: f64, lon: f64) -> Result<()> {
    if validate::check_location(org, lat, lon).is_err() {
        bail!(
            "{}",
            tr!(
                "位置 {lat},{lon} 不在本县范围内：请检查纬度（--lat）和经度（--lon）是否写反或写错",
                "{lat},{lon} is not inside the county: check the latitude (--lat) and longitude (--lon)"
            )
        );
    }
    Ok(())
}

/// Checks a party's name and contact before they are written.
pub fn check_party(p: &gridsync_core::report::Party) -> Result<()> {
    check_len("当事人姓名", "a party's name", &p.name, validate::MAX_NAME_CHARS)?;
    if let Some(c) = &p.contact
        && validate::check_contact(c).is_err()
    {
        bail!(
            "{}",
            tr!(
                "{} 的联系电话格式不对：手机号 11 位（以 1 开头），座机带区号（如 0571-8765432）",
                "the contact number of {} is not a phone number: 11-digit mobile (starting with 1) or a landline with its area code (0571-8765432)",
                lang::clean(&p.name)
            )
        );
    }
    Ok(())
}

fn parse_urgency(s: &str) -> Result<Urgency> {
    let u = match s.trim() {
        "低" | "不急" => Some(Urgency::Low),
        "一般" | "普通" => Some(Urgency::Normal),
        "高" | "较急" | "急" => Some(Urgency::High),
        "紧急" | "特急" => Some(Urgency::Critical),
        other => Urgency::parse(&other.to_lowercase()),
    };
    u.ok_or_else(|| {
        anyhow!(tr!(
            "没有“{}”这个紧急程度；可用：低（low）、一般（normal）、急（high）、紧急（critical）",
            "unknown urgency {:?}; use low (低), normal (一般), high (急) or critical (紧急)",
            lang::cell(s, 20)
        ))
    })
}

fn principal(home: &Home) -> Result<Principal> {
    let p = home.profile()?;
    Ok(Principal { user: p.whoami.user, role: p.whoami.role, scope: p.whoami.scope })
}

/// Loads a report, applies `f`, and stores the result with its new changes in the outbox.
fn with_report<T>(
    home: &mut Home,
    given: &str,
    f: impl FnOnce(&mut automerge::AutoCommit, &ReportView) -> Result<T>,
) -> Result<(String, T)> {
    let id = home.resolve_id(DocKind::Report, given)?;
    let out = home.edit(&id, |d, _| {
        let view = gridsync_core::report::materialize_report(d)
            .map_err(|e| anyhow!(tr!("事件 {id} 已损坏：{e}", "report {id} is damaged: {e}")))?;
        f(d, &view)
    })?;
    Ok((id, out))
}

/// Takes a lifecycle action after checking, offline, that the server will allow it.
/// Where a dispatch goes.
enum Routing<'a> {
    /// Not a dispatch, or a department in words.
    Free(Option<&'a str>),
    /// Handling units of the organisation, as the person named them: the lead, then assisting.
    Units(Vec<&'a str>),
}

/// The unit ids and the words people read for a dispatch to `named` units of a `town` report.
fn resolve_units(org: &Org, town: &str, named: &[&str]) -> Result<(Vec<String>, String)> {
    let mut ids: Vec<String> = Vec::new();
    let mut words = Vec::new();
    for (i, text) in named.iter().enumerate() {
        let Some(unit) = org.find_unit(text, town) else {
            let known: Vec<&str> =
                org.units.iter().filter(|u| org.unit_serves(u, town)).map(|u| u.name.as_str()).collect();
            bail!(
                "{}",
                tr!(
                    "找不到承办单位“{}”。本镇可派遣的单位：{}",
                    "no handling unit \"{}\" here. Units serving this town: {}",
                    lang::clean(text),
                    if known.is_empty() {
                        lang::pick(
                            "（组织中没有单位名单，请用 --to 写明部门）",
                            "(the organisation lists none; use --to)",
                        )
                        .to_string()
                    } else {
                        known.join("、")
                    }
                )
            );
        };
        if ids.contains(&unit.id) {
            bail!("{}", tr!("“{}”写了两次", "\"{}\" is named twice", unit.name));
        }
        ids.push(unit.id.clone());
        let role = if i == 0 { lang::pick("牵头", "lead") } else { lang::pick("协办", "assisting") };
        words.push(format!("{}（{role}）", unit.name));
    }
    Ok((ids, words.join("、")))
}

fn act(home: &mut Home, given: &str, action: Action, reason: &str, routing: Routing<'_>) -> Result<()> {
    check_len("理由", "the reason", reason, validate::MAX_REASON_CHARS)?;
    if let Routing::Free(Some(d)) = routing {
        check_len("承办部门", "the department", d, validate::MAX_DEPT_CHARS)?;
    }
    let profile = home.profile()?;
    let who = principal(home)?;
    let org = profile.org.clone();
    let (id, (from, to)) = with_report(home, given, |d, view| {
        if let Some((to, to_level)) = action.target(view.status, view.level) {
            check_action(&org, &who, action, view.level, &view.grid, &view.town).map_err(|r| {
                anyhow!(tr!(
                    "你不能办理这一步：{}",
                    "you cannot do that: {}",
                    lang::refusal_text(r.code(), &r.to_string())
                ))
            })?;
            if validate::needs_reason(action, view.level) && reason.trim().is_empty() {
                bail!(
                    "{}",
                    tr!(
                        "“{}”要写明理由：加上 --reason \"…\"",
                        "{} needs its reason: add --reason \"…\"",
                        lang::action(action)
                    )
                );
            }
            if action == Action::Close {
                let needs = profile.policy.closed_loop.close_needs(view.category);
                let gaps = validate::close_gaps(view, &view.tip, view.level, reason, needs);
                if !gaps.is_empty() {
                    let words: Vec<&str> = gaps.iter().map(|g| lang::close_gap(*g)).collect();
                    bail!(
                        "{}",
                        tr!(
                            "还不能结案，还缺：{}",
                            "cannot close yet, missing: {}",
                            words.join(lang::pick("；", "; "))
                        )
                    );
                }
            }
            match &routing {
                Routing::Free(dept) => {
                    add_transition(d, &author(&profile), action, reason, *dept)
                        .map_err(|e| anyhow!("{e}"))?;
                }
                Routing::Units(named) => {
                    let (ids, words) = resolve_units(&org, &view.town, named)?;
                    dispatch_to_units(d, &author(&profile), reason, &ids, &words)
                        .map_err(|e| anyhow!("{e}"))?;
                }
            }
            Ok(((view.status, view.level), (to, to_level)))
        } else {
            let finished = if matches!(view.status, Status::Closed | Status::Cancelled) {
                lang::pick("，已办结", " and finished")
            } else {
                ""
            };
            bail!(
                "{}",
                tr!(
                    "这份事件现在是“{status}”（{level}）{finished}，不能{action}",
                    "cannot do \"{action}\" on this report: it is {status} at {level} level{finished}",
                    status = lang::status(view.status),
                    level = lang::level(view.level),
                    finished = finished,
                    action = lang::action(action)
                )
            )
        }
    })?;
    println!(
        "{}",
        tr!(
            "{} {}：{}（{}）→ {}（{}）。已保存，下次 field sync 时发送",
            "{} {}: {} @ {} → {} @ {} (saved; it is sent at the next 'field sync')",
            lang::action(action),
            short(&id),
            lang::status(from.0),
            lang::level(from.1),
            lang::status(to.0),
            lang::level(to.1)
        )
    );
    Ok(())
}

/// The short form of an id shown in tables: its last 8 characters, the random part of a UUIDv7
/// (the first ones are a timestamp, the same for everything made within a minute).
pub fn short(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

pub fn run(home: &mut Home, c: ReportCommand) -> Result<()> {
    home.profile()?;
    match c {
        ReportCommand::New {
            category,
            title,
            description,
            description_file,
            urgency,
            lat,
            lon,
            address,
            party,
            anonymous,
            grid,
        } => {
            let profile = home.profile()?;
            crate::home::refuse_if_revoked(&profile)?;
            if profile.whoami.role == Role::Admin {
                bail!(
                    "{}",
                    tr!(
                        "系统管理员不上报事件；请用网格员或综治中心的设备",
                        "admins do not file reports; use a grid worker's or an operator's device"
                    )
                );
            }
            let description = match description_file {
                Some(f) => read_text(&f)?,
                None => description,
            };
            let title = title.trim().to_string();
            if title.is_empty() {
                bail!("{}", tr!("标题不能为空", "the title cannot be empty"));
            }
            check_len("标题", "the title", &title, validate::MAX_TITLE_CHARS)?;
            check_len("描述", "the description", &description, validate::MAX_DESCRIPTION_CHARS)?;
            if let Some(a) = &address {
                check_len("地址", "the address", a, validate::MAX_ADDRESS_CHARS)?;
            }
            let category = parse_category(&category)?;
            let urgency = parse_urgency(&urgency)?;
            match (lat, lon) {
                (Some(a), Some(o)) => check_position(&profile.org, a, o)?,
                (None, None) => {}
                _ => bail!(
                    "{}",
                    tr!("--lat 和 --lon 要一起给，或都不给", "give both --lat and --lon, or neither")
                ),
            }
            let grids: Vec<&gridsync_core::org::Grid> = profile.org.grids.iter().collect();
            let grid = match grid {
                Some(g) => grids.iter().find(|x| x.id == g).copied().ok_or_else(|| {
                    anyhow!(tr!(
                        "网格 {} 不归你管；你的网格：{}",
                        "grid {} is not one of yours; yours: {}",
                        lang::cell(&g, 30),
                        ids(&grids)
                    ))
                })?,
                None if grids.len() == 1 => grids[0],
                None => bail!(
                    "{}",
                    tr!(
                        "你负责多个网格；请用 --grid 指明（可选：{}）",
                        "you cover several grids; say which with --grid (one of: {})",
                        ids(&grids)
                    )
                ),
            };
            let parties = party.iter().map(|p| parse_party(p)).collect::<Result<Vec<_>>>()?;
            for p in &parties {
                check_party(p)?;
            }
            let id = uuid::Uuid::now_v7();
            let new = NewReport {
                anonymous,
                id,
                grid: grid.id.clone(),
                town: grid.town.clone(),
                category,
                title,
                description,
                urgency,
                location: Location { lat, lon, address },
                parties,
            };
            if !new.parties.is_empty() {
                refuse_parties_for_assistant(profile.whoami.role)?;
            }
            let mut d =
                create_report(profile.actor_id()?, &author(&profile), &new).map_err(|e| anyhow!("{e}"))?;
            let id = id.to_string();
            home.write(|tx, profile| {
                home::refuse_if_revoked(profile)?;
                home::record_local(tx, &id, DocKind::Report, &mut d, &[])?;
                if !new.parties.is_empty() {
                    let pid = parties_id(&id).ok_or_else(|| anyhow!("the report id is not a UUID"))?;
                    let mut p = create_parties(
                        profile.actor_id()?,
                        &author(profile),
                        &id,
                        &new.grid,
                        &new.town,
                        &new.parties,
                    )
                    .map_err(|e| anyhow!("{e}"))?;
                    home::record_local(tx, &pid, DocKind::Parties, &mut p, &[])?;
                }
                Ok(())
            })?;
            println!("{id}");
            Ok(())
        }
        ReportCommand::List { status, level, category, paging, json } => {
            let status = status
                .map(|s| {
                    Status::parse(&s).ok_or_else(|| {
                        anyhow!(tr!(
                            "没有“{}”这个状态；可用：open（待处置）、escalated（已上报）、accepted（已受理）、dispatched（已派遣）、resolved（已处置）、closed（已结案）、cancelled（已撤销）",
                            "unknown status {:?}; use open, escalated, accepted, dispatched, resolved, closed or cancelled",
                            lang::cell(&s, 20)
                        ))
                    })
                })
                .transpose()?;
            let level = level
                .map(|s| {
                    Level::parse(&s).ok_or_else(|| {
                        anyhow!(tr!(
                            "没有“{}”这个层级；可用：grid（网格）、town（镇）、county（县）",
                            "unknown level {:?}; use grid, town or county",
                            lang::cell(&s, 20)
                        ))
                    })
                })
                .transpose()?;
            let category = category.map(|c| parse_category(&c)).transpose()?;
            let views: Vec<ReportView> = home
                .report_views()?
                .into_iter()
                .filter(|v| status.is_none_or(|s| v.status == s))
                .filter(|v| level.is_none_or(|l| v.level == l))
                .filter(|v| category.is_none_or(|c| v.category == c))
                .collect();
            show::report_list(&show::page(views, paging, json, 100), json)
        }
        ReportCommand::Show { id, json } => {
            let id = home.resolve_id(DocKind::Report, &id)?;
            let row = home
                .view_of(&id)?
                .ok_or_else(|| anyhow!(tr!("事件 {id} 不在本机", "report {id} is not on this device")))?;
            let mut view: ReportView = serde_json::from_str(&row)?;
            // The parties live in their own document, on the devices that may hold them.
            if let Some(p) = parties_id(&id).map(|pid| home.view_of(&pid)).transpose()?.flatten() {
                let p: gridsync_core::parties::PartiesView = serde_json::from_str(&p)?;
                view.parties = p.parties;
                view.corrected_parties = p.corrected_parties;
            }
            show::report(&view, &home.refusals(Some(&id))?, json)
        }
        ReportCommand::Edit(a) => {
            let profile = home.profile()?;
            let description = match a.description_file {
                Some(f) => Some(read_text(&f)?),
                None => a.description,
            };
            if let Some(t) = &a.title {
                if t.trim().is_empty() {
                    bail!("{}", tr!("标题不能为空", "the title cannot be empty"));
                }
                check_len("标题", "the title", t, validate::MAX_TITLE_CHARS)?;
            }
            if let Some(d) = &description {
                check_len("描述", "the description", d, validate::MAX_DESCRIPTION_CHARS)?;
            }
            if let Some(x) = &a.address {
                check_len("地址", "the address", x, validate::MAX_ADDRESS_CHARS)?;
            }
            match (a.lat, a.lon) {
                (Some(la), Some(lo)) => check_position(&profile.org, la, lo)?,
                (None, None) => {}
                _ => bail!(
                    "{}",
                    tr!("--lat 和 --lon 要一起给，或都不给", "give both --lat and --lon, or neither")
                ),
            }
            if a.head_count.is_some_and(|n| !(0..=100_000).contains(&n)) {
                bail!(
                    "{}",
                    tr!("涉及人数要在 0 到 100000 之间", "the head count must be between 0 and 100000")
                );
            }
            let add_parties: Vec<_> = a.party.iter().map(|p| parse_party(p)).collect::<Result<_>>()?;
            for p in &add_parties {
                check_party(p)?;
            }
            let mut corrections = Vec::new();
            for c in &a.correct_party {
                let bad = || {
                    anyhow::anyhow!(
                        "{}",
                        tr!(
                            "--correct-party 要写成 序号=姓名 或 序号=姓名:电话，序号见 field report show",
                            "--correct-party takes N=NAME or N=NAME:CONTACT, N as numbered by field report show"
                        )
                    )
                };
                let (n, p) = c.split_once('=').ok_or_else(bad)?;
                let n: usize = n.trim().parse().map_err(|_| bad())?;
                let p = parse_party(p)?;
                check_party(&p)?;
                corrections.push((n, p));
            }
            if !(add_parties.is_empty() && corrections.is_empty()) {
                refuse_parties_for_assistant(profile.whoami.role)?;
            }
            let mut edit = ReportEdit {
                title: a.title,
                description,
                category: a.category.map(|c| parse_category(&c)).transpose()?,
                urgency: a.urgency.map(|u| parse_urgency(&u)).transpose()?,
                lat: a.lat,
                lon: a.lon,
                address: a.address,
                head_count: a.head_count,
            };
            let id = home.resolve_id(DocKind::Report, &a.id)?;
            let changed = home.write(|tx, profile| {
                home::refuse_if_revoked(profile)?;
                let actor = profile.actor_id()?;
                let (mut d, _) = home::load_in(tx, &id, &actor)?
                    .ok_or_else(|| anyhow!(tr!("事件 {id} 不在本机", "report {id} is not on this device")))?;
                let view = gridsync_core::report::materialize_report(&d)
                    .map_err(|e| anyhow!(tr!("事件 {id} 已损坏：{e}", "report {id} is damaged: {e}")))?;
                if matches!(view.status, Status::Closed | Status::Cancelled) {
                    bail!(
                        "{}",
                        tr!(
                            "这份事件{}，只能追加备注",
                            "this report is {}; only notes can be added now",
                            lang::status(view.status)
                        )
                    );
                }
                let mut parties_changed = false;
                if !(add_parties.is_empty() && corrections.is_empty()) {
                    // The parties live in their own document; a report of the older layout that
                    // holds its parties itself gets one, starting from its current parties.
                    let pid = parties_id(&id).ok_or_else(|| anyhow!("the report id is not a UUID"))?;
                    let (mut p, before) = match home::load_in(tx, &pid, &actor)? {
                        Some((mut p, _)) => {
                            let heads = p.get_heads();
                            (p, heads)
                        }
                        None => {
                            let legacy: Vec<Party> =
                                view.current_parties().into_iter().map(Party::from).collect();
                            let p = create_parties(
                                actor.clone(),
                                &author(profile),
                                &id,
                                &view.grid,
                                &view.town,
                                &legacy,
                            )
                            .map_err(|e| anyhow!("{e}"))?;
                            (p, Vec::new())
                        }
                    };
                    let pv = materialize_parties(&p).map_err(|e| anyhow!("{e}"))?;
                    let current = pv.current_parties();
                    let mut correct = Vec::new();
                    for (n, party) in &corrections {
                        let Some(old) = n.checked_sub(1).and_then(|i| current.get(i)) else {
                            bail!(
                                "{}",
                                tr!(
                                    "没有第 {n} 位当事人（现有 {} 位，见 field report show）",
                                    "there is no party {n} (there are {}; see field report show)",
                                    current.len()
                                )
                            );
                        };
                        correct.push((old.id.clone(), party.clone()));
                    }
                    let count_before = current.len() as i64;
                    let count = edit_parties(&mut p, &author(profile), &add_parties, &correct)
                        .map_err(|e| anyhow!("{e}"))?
                        .unwrap_or(count_before);
                    if edit.head_count.is_none() {
                        edit.head_count = following_head_count(view.head_count, count_before, count);
                    }
                    home::record_local(tx, &pid, DocKind::Parties, &mut p, &before)?;
                    parties_changed = true;
                }
                let before = d.get_heads();
                let changed =
                    edit_report(&mut d, &author(profile), &edit).map_err(|e| anyhow!("{e}"))?.is_some();
                home::record_local(tx, &id, DocKind::Report, &mut d, &before)?;
                Ok(changed || parties_changed)
            })?;
            if changed {
                println!(
                    "{}",
                    tr!(
                        "已修改 {}（已保存，下次 field sync 时发送）",
                        "edited {} (saved; it is sent at the next 'field sync')",
                        short(&id)
                    )
                );
            } else {
                println!("{}", tr!("{} 没有变化", "nothing changed in {}", short(&id)));
            }
            Ok(())
        }
        ReportCommand::Note { id, text, file } => {
            let text = match file {
                Some(f) => read_text(&f)?,
                None => text.unwrap_or_default(),
            };
            if text.trim().is_empty() {
                bail!("{}", tr!("备注不能为空", "the note is empty"));
            }
            check_len("备注", "the note", &text, validate::MAX_NOTE_CHARS)?;
            let profile = home.profile()?;
            let (id, _) = with_report(home, &id, |d, _| {
                add_note(d, &author(&profile), &text).map_err(|e| anyhow!("{e}"))
            })?;
            println!("{}", tr!("已给 {} 添加备注（已保存）", "note added to {} (saved)", short(&id)));
            Ok(())
        }
        ReportCommand::Resolve { id, note } => {
            act(home, &id, Action::SelfResolve, &note, Routing::Free(None))
        }
        ReportCommand::Verify { id, ok, note, .. } => {
            record(home, &id, Record::Verify, &note, Some(if ok { "pass" } else { "fail" }), None)?;
            if !ok {
                act(home, &id, Action::Rework, &note, Routing::Free(None))?;
            }
            Ok(())
        }
        ReportCommand::Escalate { id, reason } => {
            act(home, &id, Action::Escalate, &reason, Routing::Free(None))
        }
        ReportCommand::Cancel { id, reason } => act(home, &id, Action::Cancel, &reason, Routing::Free(None)),
    }
}

/// A volunteer grid assistant never holds parties' names and contacts: refused before writing.
fn refuse_parties_for_assistant(role: Role) -> Result<()> {
    if role == Role::GridAssistant {
        bail!(
            "{}",
            tr!(
                "网格协管员不记录当事人的姓名和电话；请把当事人情况告诉网格员，由网格员补记",
                "grid assistants do not record parties' names and contacts; tell the grid worker, who adds them"
            )
        );
    }
    Ok(())
}

fn ids(grids: &[&gridsync_core::org::Grid]) -> String {
    grids.iter().map(|g| g.id.as_str()).collect::<Vec<_>>().join(", ")
}

/// The queue as this device sees it, offline: escalated reports at the operator's level, and with
/// `all` the reports in hand there too.
pub fn queue_items(home: &Home, all: bool, now: i64) -> Result<Vec<QueueEntry>> {
    let profile = home.profile()?;
    let role = profile.whoami.role;
    // A handling unit's queue is its live orders; a hub's, what waits at its level.
    let unit = profile.whoami.scope.unit().map(str::to_string);
    let levels: &[Level] = match role {
        Role::TownOperator => &[Level::Town],
        Role::CountyOperator => &[Level::County],
        Role::Admin => &[Level::Town, Level::County],
        Role::UnitHandler => &[],
        _ => bail!(
            "{}",
            tr!(
                "队列是给镇、县综治中心和承办单位工作人员用的",
                "the queue is for town and county operators and handling units"
            )
        ),
    };
    let policy = &profile.policy;
    let mut items: Vec<QueueEntry> = home
        .report_views()?
        .into_iter()
        .filter(|v| match &unit {
            Some(u) => v.live_units().contains(u),
            // A grid's own settlement waits for the town's review (审核).
            None if v.awaits_review() => role == Role::TownOperator || role == Role::Admin,
            None => levels.contains(&v.level) && (all || v.status == Status::Escalated),
        })
        .filter_map(|v| {
            // Server receive times when the pages carried them (a device's clock may be far off),
            // else what the writing device said.
            let times = home.server_times(&v.id).unwrap_or_default();
            let since = match v.transitions.iter().rfind(|t| t.applied) {
                Some(t) => times.get(&t.id).copied().unwrap_or(t.at),
                None => times.get("").copied().unwrap_or(v.created_at),
            };
            let (step, due) = policy.next_step(&v, since)?;
            Some(QueueEntry {
                light: policy.light(v.urgency, since, due, now),
                claim: None,
                supervision: v.open_supervision().and_then(|n| n.result.clone()),
                reminded: v.reminded(),
                doc: v.id,
                town: v.town,
                title: v.title,
                category: v.category,
                urgency: v.urgency,
                status: v.status,
                level: v.level,
                grid: v.grid,
                step: step.to_string(),
                since,
                due,
            })
        })
        .collect();
    items.sort_by(|a, b| b.urgency.cmp(&a.urgency).then(a.since.cmp(&b.since)).then(a.doc.cmp(&b.doc)));
    Ok(items)
}

pub fn run_queue(home: &mut Home, c: QueueCommand) -> Result<()> {
    match c {
        QueueCommand::List { all, server, paging, json } if server => {
            let p = home.profile()?;
            let mut client = crate::sync::Client::new(&p.server, &p.token, 2)?;
            let path = if all { "/v1/queue?all=true" } else { "/v1/queue" };
            let items: Vec<QueueEntry> = client.call("GET", path, None::<&()>)?;
            let items = show::page(items, paging, json, 100);
            show::queue(&items, crate::server_now(&p), json)
        }
        QueueCommand::List { all, paging, json, .. } => {
            let now = crate::server_now(&home.profile()?);
            let items: Vec<QueueEntry> = show::page(queue_items(home, all, now)?, paging, json, 100);
            show::queue(&items, now, json)
        }
        QueueCommand::Claim { id } => {
            let id = home.resolve_id(DocKind::Report, &id)?;
            let p = home.profile()?;
            let mut client = crate::sync::Client::new(&p.server, &p.token, 2)?;
            let c: gridsync_core::protocol::Claim =
                client.call("POST", &format!("/v1/queue/{id}/claim"), None::<&()>)?;
            println!(
                "{}",
                tr!(
                    "你已认领 {}，到 {} 为止（再次认领可续期）",
                    "you hold {} until {} (claim again to renew)",
                    short(&id),
                    show::when(c.expires_at)
                )
            );
            Ok(())
        }
        QueueCommand::Release { id } => {
            let id = home.resolve_id(DocKind::Report, &id)?;
            let p = home.profile()?;
            let mut client = crate::sync::Client::new(&p.server, &p.token, 2)?;
            let _: serde_json::Value =
                client.call("POST", &format!("/v1/queue/{id}/release"), None::<&()>)?;
            println!("{}", tr!("已放弃认领 {}", "released {}", short(&id)));
            Ok(())
        }
        QueueCommand::Accept { id, note } => act(home, &id, Action::Accept, &note, Routing::Free(None)),
        QueueCommand::Reject { id, reason } => act(home, &id, Action::Reject, &reason, Routing::Free(None)),
        QueueCommand::TakeOver { id, reason } => {
            act(home, &id, Action::TakeOver, &reason, Routing::Free(None))
        }
        QueueCommand::Dispatch { id, lead, assist, to } => {
            let routing = match &lead {
                Some(l) => Routing::Units(
                    std::iter::once(l.as_str()).chain(assist.iter().map(String::as_str)).collect(),
                ),
                None => Routing::Free(to.as_deref()),
            };
            act(home, &id, Action::Dispatch, "", routing)
        }
        QueueCommand::HandBack { id, reason } => {
            act(home, &id, Action::HandBack, &reason, Routing::Free(None))
        }
        QueueCommand::Resolve { id, note } => act(home, &id, Action::Resolve, &note, Routing::Free(None)),
        QueueCommand::Rework { id, reason } => act(home, &id, Action::Rework, &reason, Routing::Free(None)),
        QueueCommand::Escalate { id, reason } => {
            act(home, &id, Action::Escalate, &reason, Routing::Free(None))
        }
        QueueCommand::Close { id, note } => act(home, &id, Action::Close, &note, Routing::Free(None)),
        QueueCommand::Sign { id } => record(home, &id, Record::Sign, "已签收", None, None),
        QueueCommand::Reply { id, result } => record(home, &id, Record::Reply, &result, None, None),
        QueueCommand::Reopen { id, reason } => act(home, &id, Action::Reopen, &reason, Routing::Free(None)),
        QueueCommand::Waive { id, reason } => record(home, &id, Record::Waive, &reason, None, None),
        QueueCommand::Supervise { id, level, note } => {
            let level = match level.trim() {
                "黄" | "黄牌" => "yellow",
                "红" | "红牌" => "red",
                l => l,
            };
            if !gridsync_core::report::SUPERVISION_LEVELS.contains(&level) {
                bail!("{}", tr!("督办级别写 yellow（黄牌）或 red（红牌）", "the level is yellow or red"));
            }
            record(home, &id, Record::Supervise, &note, Some(level), None)
        }
        QueueCommand::Answer { id, note } => record(home, &id, Record::Answer, &note, None, None),
        QueueCommand::Review { id, confirm, reason, .. } => {
            if confirm {
                let text = if reason.trim().is_empty() { "审核通过".to_string() } else { reason };
                return record(home, &id, Record::Review, &text, Some("confirm"), None);
            }
            if reason.trim().is_empty() {
                bail!("{}", tr!("退回要写明理由：--reason", "say why it goes back: --reason"));
            }
            record(home, &id, Record::Review, &reason, Some("return"), None)?;
            act(home, &id, Action::Rework, &reason, Routing::Free(None))
        }
        QueueCommand::Extend { id, until, reason } => {
            let start = crate::lang::local_day_start(&until).ok_or_else(|| {
                anyhow!(tr!(
                    "“{}”不是日期，应写成 2026-12-31",
                    "{:?} is not a date like 2026-12-31",
                    lang::cell(&until, 20)
                ))
            })?;
            record(home, &id, Record::Extend, &reason, None, Some(start + 86_400_000 - 1))
        }
        QueueCommand::Extension { id, approve, note, .. } => {
            let (result, words) =
                if approve { ("approve", "同意延期") } else { ("deny", "不同意延期") };
            let text = if note.trim().is_empty() { words.to_string() } else { note };
            record(home, &id, Record::Extension, &text, Some(result), None)
        }
        QueueCommand::Visit { id, result, note } => {
            let result = match result.trim() {
                "满意" => "satisfied",
                "基本满意" => "basically_satisfied",
                "不满意" => "unsatisfied",
                "联系不上" | "无法联系" => "unreachable",
                "无需回访" | "不适用" => "not_applicable",
                r => r,
            }
            .to_string();
            if !VISIT_RESULTS.contains(&result.as_str()) {
                bail!(
                    "{}",
                    tr!(
                        "回访结果要写 满意、基本满意、不满意、联系不上，匿名事件写 无需回访",
                        "the visit's result is satisfied, basically_satisfied, unsatisfied or unreachable \
                         (not_applicable for an anonymous report)"
                    )
                );
            }
            let text = if note.trim().is_empty() { result.clone() } else { note };
            record(home, &id, Record::Visit, &text, Some(&result), None)
        }
    }
}

/// Writes a closed-loop record (sign, reply, check, visit) about the report's current order,
/// checked first as the server will check it.
fn record(
    home: &mut Home,
    given: &str,
    rec: Record,
    text: &str,
    result: Option<&str>,
    until: Option<i64>,
) -> Result<()> {
    check_len("内容", "the text", text, validate::MAX_NOTE_CHARS)?;
    if text.trim().is_empty() {
        bail!("{}", tr!("内容不能为空", "the text is empty"));
    }
    let profile = home.profile()?;
    let unit = profile.whoami.scope.unit().map(str::to_string);
    let (id, _) = with_report(home, given, |d, view| {
        let mine = unit.as_ref().is_some_and(|u| view.live_units().contains(u));
        let fits = match rec {
            Record::Sign | Record::Reply | Record::Extend => mine,
            Record::Extension => {
                view.status == Status::Dispatched
                    && gridsync_core::report::extension_state(&view.notes, &view.tip).0.is_some()
            }
            Record::Verify => view.status == Status::Resolved && view.level != Level::Grid,
            Record::Visit if result == Some("not_applicable") && !view.anonymous => bail!(
                "{}",
                tr!(
                    "这份事件不是匿名反映的，要回访当事人；只有匿名事件才能记“无需回访”",
                    "this report is not anonymous: call the resident back; only an anonymous report is marked not_applicable"
                )
            ),
            Record::Visit => matches!(view.status, Status::Resolved | Status::Closed),
            Record::Review => view.awaits_review(),
            Record::Waive => view.status == Status::Resolved && view.level != Level::Grid,
            Record::Supervise => !matches!(view.status, Status::Closed | Status::Cancelled),
            Record::Answer => view.open_supervision().is_some(),
            Record::Remind => false,
        };
        if !fits {
            bail!(
                "{}",
                tr!(
                    "这份事件现在是“{}”（{}），不能{}",
                    "this report is {} at {} level; cannot {} now",
                    lang::status(view.status),
                    lang::level(view.level),
                    lang::record(rec)
                )
            );
        }
        let unit =
            matches!(rec, Record::Sign | Record::Reply | Record::Extend).then_some(unit.as_deref()).flatten();
        add_record_until(d, &author(&profile), rec, text, unit, result, until).map_err(|e| anyhow!("{e}"))
    })?;
    println!(
        "{}",
        tr!(
            "已记录{}：{}（已保存，下次 field sync 时发送）",
            "recorded {}: {} (saved; it is sent at the next 'field sync')",
            lang::record(rec),
            short(&id)
        )
    );
    Ok(())
}
