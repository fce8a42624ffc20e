//! JSON Schemas of everything that crosses a boundary, generated from the Rust types; the files in
//! `schemas/` are these, and a test fails when they go stale.

use schemars::{JsonSchema, schema_for};

use crate::{org, patrol, protocol, report};

fn render<T: JsonSchema>() -> String {
    let mut text = serde_json::to_string_pretty(&schema_for!(T)).expect("a schema serializes");
    text.push('\n');
    text
}

/// (file name, schema text) for every boundary type.
pub fn all() -> Vec<(&'static str, String)> {
    vec![
        ("org.schema.json", render::<org::Org>()),
        ("report-view.schema.json", render::<report::ReportView>()),
        ("patrol-view.schema.json", render::<patrol::PatrolView>()),
        ("parties-view.schema.json", render::<crate::parties::PartiesView>()),
        ("sync-request.schema.json", render::<protocol::SyncRequest>()),
        ("sync-response.schema.json", render::<protocol::SyncResponse>()),
        ("device-registration.schema.json", render::<protocol::DeviceRegistration>()),
        ("device-registered.schema.json", render::<protocol::DeviceRegistered>()),
        ("whoami.schema.json", render::<protocol::WhoAmI>()),
        ("error.schema.json", render::<protocol::ErrorBody>()),
        ("device-status.schema.json", render::<Vec<protocol::DeviceStatus>>()),
        ("document-status.schema.json", render::<Vec<protocol::DocumentStatus>>()),
        ("new-user.schema.json", render::<protocol::NewUser>()),
        ("user-created.schema.json", render::<protocol::UserCreated>()),
        ("claim.schema.json", render::<protocol::Claim>()),
        ("queue.schema.json", render::<Vec<protocol::QueueEntry>>()),
        ("indicators.schema.json", render::<crate::indicators::Indicators>()),
        ("indicators-by.schema.json", render::<crate::indicators::IndicatorsBy>()),
        ("policy.schema.json", render::<crate::policy::Policy>()),
        ("report-list.schema.json", render::<Vec<report::ReportView>>()),
        ("patrol-list.schema.json", render::<Vec<patrol::PatrolView>>()),
        ("device-state.schema.json", render::<crate::output::DeviceState>()),
        ("sync-outcome.schema.json", render::<crate::output::SyncOutcome>()),
        ("inbox.schema.json", render::<Vec<crate::output::InboxEntry>>()),
        ("user-list.schema.json", render::<Vec<protocol::UserRow>>()),
        ("server-info.schema.json", render::<protocol::ServerInfo>()),
        ("unsent-export.schema.json", render::<protocol::UnsentExport>()),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Regenerate with `UPDATE_SCHEMAS=1 cargo test -p gridsync-core schema`.
    #[test]
    fn committed_schemas_are_current() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
        let mut stale = Vec::new();
        for (name, text) in super::all() {
            let path = dir.join(name);
            if update {
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(name);
            }
        }
        assert!(
            stale.is_empty(),
            "stale schemas {stale:?}: run UPDATE_SCHEMAS=1 cargo test -p gridsync-core schema"
        );
    }
}
