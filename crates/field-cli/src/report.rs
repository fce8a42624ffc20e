//! `field report …` and `field queue …`: creating and editing reports offline, and the hub's queue.

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use gridsync_core::doc::DocKind;
use gridsync_core::lifecycle::{Action, Level, Status};
use gridsync_core::org::{Principal, Role};
use gridsync_core::policy::pending_step;
use gridsync_core::protocol::QueueEntry;
use gridsync_core::report::{
    Category, Location, NewReport, ReportEdit, ReportView, Urgency, add_note, add_transition, create_report,
    edit_report,
};
use gridsync_core::validate::check_action;

use crate::home::Home;
use crate::{author, now_ms, parse_party, show};

#[derive(Subcommand)]
pub enum ReportCommand {
    /// File a new report; prints its id.
    New {
        /// dispute, request, suggestion, public_security, fire, safety, sanitation, other (or the Chinese label).
        #[arg(long)]
        category: String,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        /// low, normal, high or critical.
        #[arg(long, default_value = "normal")]
        urgency: String,
        #[arg(long, allow_negative_numbers = true)]
        lat: Option<f64>,
        #[arg(long, allow_negative_numbers = true)]
        lon: Option<f64>,
        #[arg(long)]
        address: Option<String>,
        /// A party to a dispute: NAME or NAME:CONTACT (repeat for several).
        #[arg(long)]
        party: Vec<String>,
        /// The grid (needed only when you cover several).
        #[arg(long)]
        grid: Option<String>,
    },
    /// List reports on this device.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        level: Option<String>,
        #[arg(long)]
        category: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Everything about one report.
    Show {
        /// The id, or its first characters.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a report's fields.
    Edit(EditArgs),
    /// Add a note.
    Note { id: String, text: String },
    /// Settle it on the spot (自办自结).
    Resolve {
        id: String,
        #[arg(long)]
        note: String,
    },
    /// Hand it one level up (上报): from the grid to the town hub; from the town to the county.
    Escalate {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Withdraw a report filed by mistake.
    Cancel {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Args)]
pub struct EditArgs {
    id: String,
    #[arg(long)]
    title: Option<String>,
    #[arg(long)]
    description: Option<String>,
    #[arg(long)]
    category: Option<String>,
    #[arg(long)]
    urgency: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    lat: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    lon: Option<f64>,
    #[arg(long)]
    address: Option<String>,
    #[arg(long)]
    party: Vec<String>,
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
        #[arg(long)]
        json: bool,
    },
    /// Claim it so no other operator works it at the same time (needs the server; renew by claiming again).
    Claim { id: String },
    /// Give up your claim.
    Release { id: String },
    /// Take it on (受理).
    Accept {
        id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Refuse it (不予受理); it goes back down.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Send it to a department (派遣).
    Dispatch {
        id: String,
        /// The department that handles it, e.g. 城管办 or 派出所.
        #[arg(long)]
        to: String,
    },
    /// The department hands back a wrong dispatch (退办).
    HandBack {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Mark it handled (处置).
    Resolve {
        id: String,
        #[arg(long)]
        note: String,
    },
    /// A failed check: back to the department (返工).
    Rework {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Hand it one level up: from the town to the county (县应); from a grid to the town.
    Escalate {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Close it after the check and return visit (结案).
    Close {
        id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
}

fn parse_category(s: &str) -> Result<Category> {
    Category::parse_any(s).ok_or_else(|| {
        let all: Vec<String> =
            Category::ALL.iter().map(|c| format!("{} ({})", c.as_str(), c.label_zh())).collect();
        anyhow!("unknown category {s:?}; use one of: {}", all.join(", "))
    })
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
        anyhow!("unknown urgency {s:?}; use low (低), normal (一般), high (急) or critical (紧急)")
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
        let view = gridsync_core::report::materialize_report(d).map_err(|e| anyhow!("report {id}: {e}"))?;
        f(d, &view)
    })?;
    Ok((id, out))
}

/// Takes a lifecycle action after checking, offline, that the server will allow it.
fn act(home: &mut Home, given: &str, action: Action, reason: &str, dept: Option<&str>) -> Result<()> {
    let profile = home.profile()?;
    let who = principal(home)?;
    let org = profile.org.clone();
    let (id, (from, to)) = with_report(home, given, |d, view| {
        if let Some((to, to_level)) = action.target(view.status, view.level) {
            check_action(&org, &who, action, view.level, &view.grid, &view.town)
                .map_err(|r| anyhow!("you cannot do that: {r}"))?;
            add_transition(d, &author(&profile), action, reason, dept).map_err(|e| anyhow!("{e}"))?;
            Ok(((view.status, view.level), (to, to_level)))
        } else {
            bail!(
                "cannot {} this report: it is {} at {} level{}",
                action.as_str().replace('_', " "),
                view.status,
                view.level,
                match view.status {
                    Status::Closed | Status::Cancelled => " and finished",
                    _ => "",
                }
            )
        }
    })?;
    println!(
        "{} {}: {} @ {} → {} @ {} (saved; it is sent at the next 'field sync')",
        action,
        short(&id),
        from.0,
        from.1,
        to.0,
        to.1
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
        ReportCommand::New { category, title, description, urgency, lat, lon, address, party, grid } => {
            let profile = home.profile()?;
            if profile.whoami.role == Role::Admin {
                bail!("admins do not file reports; use a grid worker's or an operator's device");
            }
            let category = parse_category(&category)?;
            let urgency = parse_urgency(&urgency)?;
            if lat.is_some() != lon.is_some() {
                bail!("give both --lat and --lon, or neither");
            }
            let grids: Vec<&gridsync_core::org::Grid> = profile.org.grids.iter().collect();
            let grid = match grid {
                Some(g) => grids
                    .iter()
                    .find(|x| x.id == g)
                    .copied()
                    .ok_or_else(|| anyhow!("grid {g} is not one of yours; yours: {}", ids(&grids)))?,
                None if grids.len() == 1 => grids[0],
                None => bail!("you cover several grids; say which with --grid (one of: {})", ids(&grids)),
            };
            let parties = party.iter().map(|p| parse_party(p)).collect::<Result<Vec<_>>>()?;
            let id = uuid::Uuid::now_v7();
            let new = NewReport {
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
            let mut d =
                create_report(profile.actor_id()?, &author(&profile), &new).map_err(|e| anyhow!("{e}"))?;
            home.create(&id.to_string(), DocKind::Report, &mut d)?;
            println!("{id}");
            Ok(())
        }
        ReportCommand::List { status, level, category, json } => {
            let status = status
                .map(|s| {
                    Status::parse(&s).ok_or_else(|| {
                        anyhow!("unknown status {s:?}; use open, escalated, accepted, dispatched, resolved, closed or cancelled")
                    })
                })
                .transpose()?;
            let level = level
                .map(|s| {
                    Level::parse(&s).ok_or_else(|| anyhow!("unknown level {s:?}; use grid, town or county"))
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
            show::report_list(&views, json)
        }
        ReportCommand::Show { id, json } => {
            let id = home.resolve_id(DocKind::Report, &id)?;
            let row = home
                .list(DocKind::Report)?
                .into_iter()
                .find(|r| r.id == id)
                .ok_or_else(|| anyhow!("gone"))?;
            let view: ReportView = serde_json::from_str(&row.view)?;
            show::report(&view, &home.refusals(Some(&id))?, json)
        }
        ReportCommand::Edit(a) => {
            let profile = home.profile()?;
            let edit = ReportEdit {
                title: a.title,
                description: a.description,
                category: a.category.map(|c| parse_category(&c)).transpose()?,
                urgency: a.urgency.map(|u| parse_urgency(&u)).transpose()?,
                lat: a.lat,
                lon: a.lon,
                address: a.address,
                add_parties: a.party.iter().map(|p| parse_party(p)).collect::<Result<_>>()?,
                head_count: a.head_count,
            };
            let (id, changed) = with_report(home, &a.id, |d, view| {
                if matches!(view.status, Status::Closed | Status::Cancelled) {
                    bail!("this report is {}; only notes can be added now", view.status);
                }
                Ok(edit_report(d, &author(&profile), &edit).map_err(|e| anyhow!("{e}"))?.is_some())
            })?;
            if changed {
                println!("edited {} (saved; it is sent at the next 'field sync')", short(&id));
            } else {
                println!("nothing changed in {}", short(&id));
            }
            Ok(())
        }
        ReportCommand::Note { id, text } => {
            let profile = home.profile()?;
            let (id, _) = with_report(home, &id, |d, _| {
                add_note(d, &author(&profile), &text).map_err(|e| anyhow!("{e}"))
            })?;
            println!("note added to {} (saved)", short(&id));
            Ok(())
        }
        ReportCommand::Resolve { id, note } => act(home, &id, Action::SelfResolve, &note, None),
        ReportCommand::Escalate { id, reason } => act(home, &id, Action::Escalate, &reason, None),
        ReportCommand::Cancel { id, reason } => act(home, &id, Action::Cancel, &reason, None),
    }
}

fn ids(grids: &[&gridsync_core::org::Grid]) -> String {
    grids.iter().map(|g| g.id.as_str()).collect::<Vec<_>>().join(", ")
}

/// The queue as this device sees it, offline: escalated reports at the operator's level, and with
/// `all` the reports in hand there too.
pub fn queue_items(home: &Home, all: bool, now: i64) -> Result<Vec<QueueEntry>> {
    let profile = home.profile()?;
    let role = profile.whoami.role;
    let levels: &[Level] = match role {
        Role::TownOperator => &[Level::Town],
        Role::CountyOperator => &[Level::County],
        Role::Admin => &[Level::Town, Level::County],
        _ => bail!("the queue is for town and county operators"),
    };
    let policy = &profile.policy;
    let mut items: Vec<QueueEntry> = home
        .report_views()?
        .into_iter()
        .filter(|v| levels.contains(&v.level))
        .filter(|v| all || v.status == Status::Escalated)
        .filter_map(|v| {
            let step = pending_step(v.status)?;
            let since =
                v.transitions.iter().filter(|t| t.applied).map(|t| t.at).next_back().unwrap_or(v.created_at);
            let due = policy.deadline(v.status, v.urgency, since)?;
            Some(QueueEntry {
                light: policy.light(v.urgency, since, due, now),
                claim: None,
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
        QueueCommand::List { all, server, json } if server => {
            let p = home.profile()?;
            let mut client = crate::sync::Client::new(&p.server, &p.token, 2)?;
            let path = if all { "/v1/queue?all=true" } else { "/v1/queue" };
            let items: Vec<QueueEntry> = client.call("GET", path, None::<&()>)?;
            show::queue(&items, now_ms(), json)
        }
        QueueCommand::List { all, json, .. } => {
            show::queue(&queue_items(home, all, now_ms())?, now_ms(), json)
        }
        QueueCommand::Claim { id } => {
            let id = home.resolve_id(DocKind::Report, &id)?;
            let p = home.profile()?;
            let mut client = crate::sync::Client::new(&p.server, &p.token, 2)?;
            let c: gridsync_core::protocol::Claim =
                client.call("POST", &format!("/v1/queue/{id}/claim"), None::<&()>)?;
            println!("you hold {} until {} (claim again to renew)", short(&id), show::when(c.expires_at));
            Ok(())
        }
        QueueCommand::Release { id } => {
            let id = home.resolve_id(DocKind::Report, &id)?;
            let p = home.profile()?;
            let mut client = crate::sync::Client::new(&p.server, &p.token, 2)?;
            let _: serde_json::Value =
                client.call("POST", &format!("/v1/queue/{id}/release"), None::<&()>)?;
            println!("released {}", short(&id));
            Ok(())
        }
        QueueCommand::Accept { id, note } => act(home, &id, Action::Accept, &note, None),
        QueueCommand::Reject { id, reason } => act(home, &id, Action::Reject, &reason, None),
        QueueCommand::Dispatch { id, to } => act(home, &id, Action::Dispatch, "", Some(&to)),
        QueueCommand::HandBack { id, reason } => act(home, &id, Action::HandBack, &reason, None),
        QueueCommand::Resolve { id, note } => act(home, &id, Action::Resolve, &note, None),
        QueueCommand::Rework { id, reason } => act(home, &id, Action::Rework, &reason, None),
        QueueCommand::Escalate { id, reason } => act(home, &id, Action::Escalate, &reason, None),
        QueueCommand::Close { id, note } => act(home, &id, Action::Close, &note, None),
    }
}
