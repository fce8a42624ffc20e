//! `field admin …`: what admins see of sync state (devices, conflicts) and user management.

use anyhow::{Result, bail};
use clap::Subcommand;
use gridsync_core::org::Role;
use gridsync_core::protocol::{DeviceStatus, DocumentStatus, NewUser, UserCreated};

use crate::home::Home;
use crate::report::short;
use crate::show::{self, describe_value, when};
use crate::sync::Client;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Every device: user, last seen, how far behind, refused changes, last error.
    Devices {
        #[arg(long)]
        json: bool,
    },
    /// Documents with concurrent edits the merge rules resolved, and which rule chose.
    Conflicts {
        #[arg(long)]
        json: bool,
    },
    /// Every document: kind, grid, status, change count, heads.
    Documents {
        #[arg(long)]
        json: bool,
    },
    /// Supervision indicators: 自办自结率, 按期处置率, 结案率, 按期结案率, 返工率, times, overdue.
    Stats {
        /// Only this town.
        #[arg(long)]
        town: Option<String>,
        /// First day, YYYY-MM-DD (UTC).
        #[arg(long)]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (UTC), included.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user; prints their enrolment token.
    Add {
        #[arg(long)]
        name: String,
        /// grid_worker, grid_assistant, town_operator, county_operator or admin.
        #[arg(long)]
        role: String,
        /// Grid ids (comma-separated), a town id, or 'county'.
        #[arg(long)]
        scope: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a user: their devices stop syncing.
    Revoke { user: String },
    /// List users (ids, names, roles, scopes).
    List {
        #[arg(long)]
        json: bool,
    },
}

/// Milliseconds at the start of a UTC day given as YYYY-MM-DD.
fn day_start(s: &str) -> Result<i64> {
    crate::patrol::parse_time(&format!("{}T00:00:00Z", s.trim()))
        .ok_or_else(|| anyhow::anyhow!("{s:?} is not a date like 2026-11-26"))
}

pub fn run(home: &mut Home, c: AdminCommand) -> Result<()> {
    let p = home.profile()?;
    if let AdminCommand::Stats { town, from, to, json } = &c {
        if !p.whoami.role.is_operator() {
            bail!("indicators are for operators and admins");
        }
        if let (Some(f), Some(t)) = (from, to)
            && day_start(f)? > day_start(t)?
        {
            bail!("--from {f} comes after --to {t}");
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
        let mut client = Client::new(&p.server, &p.token, 2)?;
        let path = format!("/v1/admin/stats{}{}", if query.is_empty() { "" } else { "?" }, query.join("&"));
        let i: gridsync_core::indicators::Indicators = client.call("GET", &path, None::<&()>)?;
        return if *json { show::json(&i) } else { show::indicators(&i) };
    }
    if p.whoami.role != Role::Admin {
        bail!("admin commands need an admin's device (this one belongs to a {})", p.whoami.role.as_str());
    }
    let mut client = Client::new(&p.server, &p.token, 2)?;
    match c {
        AdminCommand::Devices { json } => {
            let rows: Vec<DeviceStatus> = client.call("GET", "/v1/admin/devices", None::<&()>)?;
            if json {
                return show::json(&rows);
            }
            let mut t = show::table(&[
                "device",
                "user",
                "role",
                "last seen",
                "behind",
                "pushed",
                "refused",
                "last error",
            ]);
            for d in &rows {
                t.add_row(vec![
                    format!("{} {}", short(&d.device), d.label),
                    format!("{} {}{}", d.user, d.name, if d.revoked { " (revoked)" } else { "" }),
                    d.role.as_str().to_string(),
                    d.last_seen.map(when).unwrap_or_else(|| "never".into()),
                    d.lag.to_string(),
                    d.pushed.to_string(),
                    d.refused.to_string(),
                    d.last_error.clone().unwrap_or_default(),
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
                println!("no document has resolved conflicts");
            }
            let mut t = show::table(&["document", "grid", "status", "field", "kept", "set aside", "rule"]);
            for d in &rows {
                for c in &d.conflicts {
                    let lost: Vec<String> = c
                        .discarded
                        .iter()
                        .map(|x| {
                            format!("{} by {}", describe_value(&x.value), x.by.as_deref().unwrap_or("?"))
                        })
                        .collect();
                    t.add_row(vec![
                        short(&d.doc).to_string(),
                        d.grid.clone(),
                        d.status.map(|s| s.to_string()).unwrap_or_default(),
                        c.field.clone(),
                        format!("{} by {}", describe_value(&c.kept), c.kept_by.as_deref().unwrap_or("?")),
                        lost.join("; "),
                        serde_json::to_value(c.rule)?.as_str().unwrap_or("").to_string(),
                    ]);
                }
            }
            if !rows.is_empty() {
                println!("{t}");
            }
        }
        AdminCommand::Documents { json } => {
            let rows: Vec<DocumentStatus> = client.call("GET", "/v1/admin/documents", None::<&()>)?;
            if json {
                return show::json(&rows);
            }
            let mut t = show::table(&["document", "kind", "grid", "status", "level", "changes", "conflicts"]);
            for d in &rows {
                t.add_row(vec![
                    short(&d.doc).to_string(),
                    d.kind.to_string(),
                    d.grid.clone(),
                    d.status.map(|s| s.to_string()).unwrap_or_default(),
                    d.level.map(|l| l.to_string()).unwrap_or_default(),
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
                    "unknown role {role:?}: use grid_worker, grid_assistant, town_operator, county_operator or admin"
                );
            };
            let u: UserCreated =
                client.call("POST", "/v1/admin/users", Some(&NewUser { name, role, scope }))?;
            if json {
                return show::json(&u);
            }
            println!("created {} ({}, {}, scope {})", u.user, u.name, u.role.as_str(), u.scope.describe());
            println!("token (shown once): {}", u.token);
            println!("register their device: field init --server {} --token {}", p.server, u.token);
        }
        AdminCommand::User(UserCommand::List { json }) => {
            let users: Vec<gridsync_core::protocol::WhoAmI> =
                client.call("GET", "/v1/admin/users", None::<&()>)?;
            if json {
                return show::json(&users);
            }
            let mut t = show::table(&["user", "name", "role", "scope"]);
            for u in &users {
                t.add_row(vec![
                    u.user.clone(),
                    u.name.clone(),
                    u.role.as_str().to_string(),
                    u.scope.describe(),
                ]);
            }
            println!("{t}");
        }
        AdminCommand::User(UserCommand::Revoke { user }) => {
            let _: serde_json::Value =
                client.call("POST", &format!("/v1/admin/users/{user}/revoke"), None::<&()>)?;
            println!("revoked {user}; their devices stop syncing");
        }
    }
    Ok(())
}
