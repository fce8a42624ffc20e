//! The demo county: the survey's shape, plus one user per role, with the `field init` lines to paste.

use std::path::Path;

use gridsync_core::org::{Org, Role, demo_county};
use serde::{Deserialize, Serialize};

use crate::store::Store;
use crate::{UserError, create_user};

/// The seed the demo county is generated from.
pub const DEMO_SEED: u64 = 2026;

/// One demo user, as written to `DIR/demo-users.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoUser {
    pub user: String,
    pub name: String,
    pub role: Role,
    pub scope: String,
    pub token: String,
    /// The exact command that registers a device for this user.
    pub init: String,
}

/// Loads the demo county into an empty store and creates its users.
pub fn install(store: &dyn Store, now_ms: i64, server_url: &str) -> Result<(Org, Vec<DemoUser>), UserError> {
    let org = demo_county(DEMO_SEED);
    store.set_org(&org)?;
    let grid = &org.grids[0];
    let other = org.grids.iter().find(|g| g.town == grid.town && g.id != grid.id).unwrap_or(grid);
    let police = format!("{}-PCS", grid.town);
    let people: [(&str, &str, Role, &str); 8] = [
        ("worker", "王芳", Role::GridWorker, &grid.id),
        ("assistant", "李强", Role::GridAssistant, &grid.id),
        ("worker2", "赵敏", Role::GridWorker, &other.id),
        ("townop", "陈静", Role::TownOperator, &grid.town),
        ("countyop", "刘洋", Role::CountyOperator, "county"),
        ("admin", "系统管理员", Role::Admin, "county"),
        ("police", "周涛", Role::UnitHandler, &police),
        ("enforcer", "吴刚", Role::UnitHandler, "C01-ZF"),
    ];
    let mut users = Vec::new();
    for (id, name, role, scope) in people {
        let created = create_user(store, &org, now_ms, name, role, scope, Some(id))?;
        users.push(DemoUser {
            init: format!("field init --server {server_url} --token {} --home ./field-{id}", created.token),
            user: created.user,
            name: created.name,
            role,
            scope: scope.to_string(),
            token: created.token,
        });
    }
    Ok((org, users))
}

/// Writes the demo users next to the data.
pub fn write_users(dir: &Path, users: &[DemoUser]) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(users).map_err(std::io::Error::other)?;
    let path = dir.join("demo-users.json");
    std::fs::write(&path, text + "\n")?;
    // It holds enrolment tokens.
    #[cfg(unix)]
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}

/// Reads the demo users written by an earlier start, if any.
pub fn read_users(dir: &Path) -> Option<Vec<DemoUser>> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("demo-users.json")).ok()?).ok()
}

/// The lines printed at start.
pub fn describe(users: &[DemoUser]) -> String {
    let mut out = String::from("Demo users (one per role). Register a field device for one of them with:\n");
    for u in users {
        out.push_str(&format!(
            "\n  # {} {} ({}, scope {})\n  {}\n",
            u.user,
            u.name,
            u.role.as_str(),
            u.scope,
            u.init
        ));
    }
    out
}
