//! `field admin …`: what admins see of sync state (devices, conflicts) and user management.

use anyhow::{Result, bail};
use clap::Subcommand;
use gridsync_core::org::Role;
use gridsync_core::protocol::{DeviceStatus, DocumentStatus, NewUser, UserCreated, UserRow};

use crate::home::Home;
use crate::report::short;
use crate::show::{self, describe_value, when};
use crate::sync::Client;
use crate::{lang, tr};

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Every device: user, last seen, how far behind, refused changes, last error.
    Devices {
        /// Print JSON (schemas/device-status.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Documents with concurrent edits the merge rules resolved, and which rule chose.
    Conflicts {
        /// Print JSON (schemas/document-status.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Every document: kind, grid, status, change count, conflicts.
    Documents {
        /// Only this grid.
        #[arg(long)]
        grid: Option<String>,
        /// Only this town.
        #[arg(long)]
        town: Option<String>,
        /// Only documents with resolved conflicts.
        #[arg(long)]
        conflicts: bool,
        #[command(flatten)]
        paging: crate::show::Paging,
        /// Print JSON (schemas/document-status.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Supervision indicators: 自办自结率, 按期处置率, 结案率, 按期结案率, 返工率, times, overdue.
    Stats {
        /// Only this town.
        #[arg(long)]
        town: Option<String>,
        /// First day, YYYY-MM-DD, from local midnight (the organisation's time zone).
        #[arg(long)]
        from: Option<String>,
        /// Last day, YYYY-MM-DD, included, to local midnight after it.
        #[arg(long)]
        to: Option<String>,
        /// A row per town, grid, worker or handling unit (unit: 按期签收率, 按期办结率, 退件率, 返工率,
        /// 满意率, 核查通过率).
        #[arg(long, value_parser = ["town", "village", "grid", "worker", "category", "unit"])]
        by: Option<String>,
        /// Print JSON (schemas/indicators.schema.json; with --by, indicators-by.schema.json).
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV for the monthly bulletin (a line per row of --by; definitions in
        /// docs/indicators.md).
        #[arg(long)]
        csv: bool,
    },
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user; prints their enrolment token.
    Add {
        /// The person's name.
        #[arg(long)]
        name: String,
        /// grid_worker, grid_assistant, town_operator, county_operator or admin.
        #[arg(long)]
        role: String,
        /// Grid ids (comma-separated), a town id, or 'county'.
        #[arg(long)]
        scope: String,
        /// Print JSON (schemas/user-created.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Revoke a user: their devices stop syncing.
    Revoke {
        /// The user's id.
        user: String,
    },
    /// List users (ids, names, roles, scopes), revoked ones included.
    List {
        /// Print JSON (schemas/user-list.schema.json).
        #[arg(long)]
        json: bool,
    },
}

/// Local midnight starting a day given as YYYY-MM-DD.
fn day_start(s: &str) -> Result<i64> {
    crate::lang::local_day_start(s).ok_or_else(|| {
        anyhow::anyhow!(tr!(
            "“{}”不是日期，应写成 2026-11-26",
            "{:?} is not a date like 2026-11-26",
            crate::lang::cell(s, 20)
        ))
    })
}

pub fn run(home: &mut Home, c: AdminCommand) -> Result<()> {
    let p = home.profile()?;
    if let AdminCommand::Stats { town, from, to, by, json, csv } = &c {
        if !p.whoami.role.is_operator() {
            bail!("{}", tr!("指标只给综治中心工作人员和管理员看", "indicators are for operators and admins"));
        }
        if let (Some(f), Some(t)) = (from, to)
            && day_start(f)? > day_start(t)?
        {
            bail!("{}", tr!("--from {f} 晚于 --to {t}", "--from {f} comes after --to {t}"));
        }
        let mut query = Vec::new();
        if let Some(t) = town {
            query.push(format!("town={t}"));
        }
        if let Some(f) = from {
            query.push(format!("from={}", day_start(f)?));
        }
        if let Some(t) = to {
            query.push(format!("to={}", day_start(t)? + 86_400_000));
        }
        if let Some(b) = by {
            query.push(format!("by={b}"));
        }
        let mut client = Client::new(&p.server, &p.token, 2)?;
        let path = format!("/v1/admin/stats{}{}", if query.is_empty() { "" } else { "?" }, query.join("&"));
        if by.is_some() {
            let b: gridsync_core::indicators::IndicatorsBy = client.call("GET", &path, None::<&()>)?;
            if *csv {
                let rows: Vec<(String, serde_json::Value)> = if b.by == "unit" {
                    b.units
                        .iter()
                        .map(|u| Ok((u.unit.clone(), serde_json::to_value(u)?)))
                        .collect::<Result<_>>()?
                } else {
                    b.groups
                        .iter()
                        .map(|g| Ok((g.key.clone(), serde_json::to_value(&g.indicators)?)))
                        .collect::<Result<_>>()?
                };
                print!("{}", gridsync_core::indicators::to_csv(&b.by, &rows));
                return Ok(());
            }
            return if *json { show::json(&b) } else { show::indicators_by(&b, &p.org) };
        }
        let i: gridsync_core::indicators::Indicators = client.call("GET", &path, None::<&()>)?;
        if *csv {
            let scope = town.clone().unwrap_or_else(|| p.org.county.name.clone());
            print!("{}", gridsync_core::indicators::to_csv("scope", &[(scope, serde_json::to_value(&i)?)]));
            return Ok(());
        }
        return if *json { show::json(&i) } else { show::indicators(&i) };
    }
    if p.whoami.role != Role::Admin {
        bail!(
            "{}",
            tr!(
                "管理命令要用系统管理员的设备（这台属于{}）",
                "admin commands need an admin's device (this one belongs to a {})",
                lang::role(p.whoami.role)
            )
        );
    }
    let mut client = Client::new(&p.server, &p.token, 2)?;
    let en = lang::en();
    match c {
        AdminCommand::Devices { json } => {
            let rows: Vec<DeviceStatus> = client.call("GET", "/v1/admin/devices", None::<&()>)?;
            if json {
                return show::json(&rows);
            }
            let header: &[&str] = if en {
                &[
                    "device",
                    "user",
                    "role",
                    "last seen",
                    "behind",
                    "pushed",
                    "refused",
                    "tries after revoke",
                    "last error",
                ]
            } else {
                &["设备", "用户", "角色", "最后同步", "落后", "已推送", "拒收", "停用后尝试", "最近错误"]
            };
            let mut t = show::table(header);
            for d in &rows {
                let revoked = if d.revoked { lang::pick("（已停用）", " (revoked)") } else { "" };
                t.add_row(vec![
                    format!("{} {}", short(&d.device), lang::cell(&d.label, 16)),
                    format!("{} {}{revoked}", d.user, lang::cell(&d.name, 12)),
                    lang::role(d.role).to_string(),
                    d.last_seen.map(when).unwrap_or_else(|| lang::pick("从未", "never").into()),
                    d.lag.to_string(),
                    d.pushed.to_string(),
                    d.refused.to_string(),
                    match d.last_refused_at {
                        Some(at) if d.refused_attempts > 0 => {
                            format!("{} ({})", d.refused_attempts, when(at))
                        }
                        _ => String::new(),
                    },
                    lang::cell(d.last_error.as_deref().unwrap_or_default(), 40),
                ]);
            }
            println!("{t}");
        }
        AdminCommand::Conflicts { json } => {
            let rows: Vec<DocumentStatus> =
                client.call("GET", "/v1/admin/documents?conflicts=true", None::<&()>)?;
            if json {
                return show::json(&rows);
            }
            if rows.is_empty() {
                println!("{}", tr!("没有需要合并规则处理的同时修改", "no document has resolved conflicts"));
                return Ok(());
            }
            let header: &[&str] = if en {
                &["document", "grid", "status", "field", "kept", "set aside", "rule"]
            } else {
                &["文档", "网格", "状态", "字段", "保留", "搁置", "规则"]
            };
            let mut t = show::table(header);
            for d in &rows {
                for c in &d.conflicts {
                    let lost: Vec<String> = c
                        .discarded
                        .iter()
                        .map(|x| {
                            let by = lang::clean(x.by.as_deref().unwrap_or("?"));
                            tr!("{}（{by}）", "{} by {by}", describe_value(&x.value))
                        })
                        .collect();
                    let kept_by = lang::clean(c.kept_by.as_deref().unwrap_or("?"));
                    t.add_row(vec![
                        short(&d.doc).to_string(),
                        d.grid.clone(),
                        d.status.map(|s| lang::status(s).to_string()).unwrap_or_default(),
                        show::field_name(&c.field),
                        lang::cell(&tr!("{}（{kept_by}）", "{} by {kept_by}", describe_value(&c.kept)), 30),
                        lang::cell(&lost.join("; "), 30),
                        lang::rule(c.rule).to_string(),
                    ]);
                }
            }
            println!("{t}");
        }
        AdminCommand::Documents { grid, town, conflicts, paging, json } => {
            let path = if conflicts { "/v1/admin/documents?conflicts=true" } else { "/v1/admin/documents" };
            let rows: Vec<DocumentStatus> = client.call("GET", path, None::<&()>)?;
            let rows: Vec<DocumentStatus> = rows
                .into_iter()
                .filter(|d| grid.as_ref().is_none_or(|g| &d.grid == g))
                .filter(|d| town.as_ref().is_none_or(|t| &d.town == t))
                .collect();
            let rows = show::page(rows, paging, json, 100);
            if json {
                return show::json(&rows);
            }
            if rows.is_empty() {
                println!("{}", tr!("没有符合条件的文档", "no documents match"));
                return Ok(());
            }
            let header: &[&str] = if en {
                &["document", "kind", "grid", "title", "status", "level", "changes", "conflicts"]
            } else {
                &["文档", "类型", "网格", "标题", "状态", "层级", "修改数", "冲突"]
            };
            let mut t = show::table(header);
            for d in &rows {
                t.add_row(vec![
                    short(&d.doc).to_string(),
                    match d.kind {
                        gridsync_core::doc::DocKind::Report => lang::pick("事件", "report"),
                        gridsync_core::doc::DocKind::Patrol => lang::pick("巡查", "patrol"),
                        gridsync_core::doc::DocKind::Parties => lang::pick("当事人", "parties"),
                    }
                    .to_string(),
                    d.grid.clone(),
                    lang::cell(&d.title, 24),
                    d.status.map(|s| lang::status(s).to_string()).unwrap_or_default(),
                    d.level.map(|l| lang::level(l).to_string()).unwrap_or_default(),
                    d.changes.to_string(),
                    d.conflicts.len().to_string(),
                ]);
            }
            println!("{t}");
        }
        AdminCommand::Stats { .. } => unreachable!("answered above"),
        AdminCommand::User(UserCommand::Add { name, role, scope, json }) => {
            let Some(role) = Role::parse(&role).filter(|r| *r != Role::System) else {
                bail!(
                    "{}",
                    tr!(
                        "没有“{}”这个角色：可用 grid_worker（网格员）、grid_assistant（协管员）、town_operator（镇综治中心）、county_operator（县综治中心）、admin（系统管理员）",
                        "unknown role {:?}: use grid_worker, grid_assistant, town_operator, county_operator or admin",
                        lang::cell(&role, 20)
                    )
                );
            };
            crate::report::check_len("姓名", "the name", &name, gridsync_core::validate::MAX_NAME_CHARS)?;
            let u: UserCreated =
                client.call("POST", "/v1/admin/users", Some(&NewUser { name, role, scope }))?;
            if json {
                return show::json(&u);
            }
            println!(
                "{}",
                tr!(
                    "已创建 {}（{}，{}，范围 {}）",
                    "created {} ({}, {}, scope {})",
                    u.user,
                    lang::clean(&u.name),
                    lang::role(u.role),
                    u.scope.describe()
                )
            );
            println!("{}", tr!("令牌（只显示这一次）：{}", "token (shown once): {}", u.token));
            println!(
                "{}",
                tr!(
                    "在他的设备上注册：GRIDSYNC_TOKEN={} field init --server {}",
                    "register their device: GRIDSYNC_TOKEN={} field init --server {}",
                    u.token,
                    p.server
                )
            );
        }
        AdminCommand::User(UserCommand::List { json }) => {
            let users: Vec<UserRow> = client.call("GET", "/v1/admin/users", None::<&()>)?;
            if json {
                return show::json(&users);
            }
            let header: &[&str] = if en {
                &["user", "name", "role", "scope", "revoked"]
            } else {
                &["用户", "姓名", "角色", "范围", "停用"]
            };
            let mut t = show::table(header);
            for u in &users {
                t.add_row(vec![
                    u.user.clone(),
                    lang::cell(&u.name, 16),
                    lang::role(u.role).to_string(),
                    lang::cell(&u.scope.describe(), 30),
                    u.revoked_at.map(when).unwrap_or_default(),
                ]);
            }
            println!("{t}");
        }
        AdminCommand::User(UserCommand::Revoke { user }) => {
            let _: serde_json::Value =
                client.call("POST", &format!("/v1/admin/users/{user}/revoke"), None::<&()>)?;
            println!(
                "{}",
                tr!("已停用 {user}；他的设备不能再同步", "revoked {user}; their devices stop syncing")
            );
        }
    }
    Ok(())
}
