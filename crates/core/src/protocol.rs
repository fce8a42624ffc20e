//! The wire protocol between devices and the server: request and response bodies of `/v1/*`.
//! Described for integrators in docs/protocol.md; JSON Schemas in `schemas/`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::doc::DocKind;
use crate::lifecycle::{Level, Status};
use crate::org::{Org, Role, Scope};

/// Bumped on incompatible changes; every answer carries it in the `gridsync-protocol` header.
pub const PROTOCOL_VERSION: u32 = 1;

/// `POST /v1/sync` request: what the device holds and what it has not had acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// The last server sequence the device has stored (0 for a new device).
    pub cursor: u64,
    /// The device's outbox: raw Automerge changes the server has not acknowledged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<PushedChange>,
    /// Most bytes of document data wanted in this response; the server caps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
}

/// One raw Automerge change for one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushedChange {
    /// Document id (a UUID).
    pub doc: String,
    pub kind: DocKind,
    /// The change's bytes (`Change::raw_bytes`), standard base64.
    pub change: String,
}

/// What the server did with a pushed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Stored; it will be served to the other devices in scope.
    Accepted,
    /// Already known: a retry. Treat as acknowledged.
    Duplicate,
    /// Refused by validation. Do not retry; `code` and `message` say why.
    Forbidden,
    /// Its dependencies are unknown to the server (`missing`); push them first, then retry.
    MissingDeps,
    /// Not a decodable change for that document. Do not retry.
    Malformed,
}

/// The verdict on one pushed change. Verdicts are in request order, one per pushed change; to keep
/// answers small, `accepted` and `duplicate` carry only the outcome, the others name the document
/// and the change hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Verdict {
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// The change hash (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `missing_deps`: hashes the server lacks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// How a document's data in a response is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// A compacted Automerge `save()`: the whole document.
    Snapshot,
    /// Concatenated raw changes the device lacks; load them incrementally.
    Changes,
}

/// New data for one document in scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DocUpdate {
    pub doc: String,
    pub kind: DocKind,
    pub encoding: Encoding,
    /// Standard base64 of the bytes.
    pub data: String,
    /// When the server received the document's first change (server clock, ms): deadlines and
    /// indicators count from here, not from the device's `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<i64>,
    /// When the server received each lifecycle transition (transition id → server ms).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub transitions_received: std::collections::BTreeMap<String, i64>,
}

/// `POST /v1/sync` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncResponse {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<Verdict>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docs: Vec<DocUpdate>,
    /// Store the docs first, then this cursor; send it next time.
    pub cursor: u64,
    /// More pages wait: sync again (with an empty outbox) right away.
    pub has_more: bool,
    /// The server's clock when it answered (ms since the epoch): a device learns its own clock's
    /// offset from it. 0 from servers before it was sent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub server_time: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// `POST /v1/devices` request, authenticated by a user token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceRegistration {
    /// The device's Automerge actor id, hex (16 random bytes made on the device).
    pub actor: String,
    /// A label for admins ("Li Wei's phone").
    pub label: String,
}

/// `POST /v1/devices` response: the device token for every later call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceRegistered {
    pub device: String,
    pub token: String,
    pub whoami: WhoAmI,
    /// The part of the organisation in the device's scope.
    pub org: Org,
    /// The server's deadline policy, so the device's offline queue shows the same deadlines.
    pub policy: crate::policy::Policy,
    /// The server's identity (see [`ServerInfo`]); empty from servers that predate it.
    #[serde(default)]
    pub server_id: String,
}

/// `GET /v1/server` (no token): which server this is. A device moved to a new address checks that
/// `server_id` is the one it registered with before it syncs there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServerInfo {
    /// A random UUID made once, when the server's data directory was first set up.
    pub server_id: String,
    /// [`PROTOCOL_VERSION`] of the server.
    pub protocol: u32,
    /// The county's name.
    pub county: String,
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WhoAmI {
    pub user: String,
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// Every error answer: `{ "code", "message" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// `GET /v1/admin/devices`: one row per device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceStatus {
    pub device: String,
    pub label: String,
    pub user: String,
    pub name: String,
    pub role: Role,
    pub registered_at: i64,
    pub last_seen: Option<i64>,
    /// The cursor the device last confirmed (sent in a sync).
    pub cursor: u64,
    /// Changes in the device's scope, by others, after that cursor: what it has not yet confirmed
    /// storing. Right after a sync it counts what that sync delivered, until the next one confirms.
    pub lag: u64,
    pub pushed: u64,
    pub refused: u64,
    pub last_error: Option<String>,
    pub revoked: bool,
    /// Requests refused because the device's user was revoked.
    #[serde(default)]
    pub refused_attempts: u64,
    /// When the last of those came (ms, server clock).
    #[serde(default)]
    pub last_refused_at: Option<i64>,
}

/// `GET /v1/admin/users`: one row per user, revoked users included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserRow {
    pub user: String,
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    /// When the user was created, ms since the epoch (server clock).
    #[serde(default)]
    pub created_at: i64,
    /// When the user was revoked (ms), `None` while active.
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

/// `GET /v1/admin/documents`: one row per document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DocumentStatus {
    pub doc: String,
    /// The report's title (empty for patrols).
    #[serde(default)]
    pub title: String,
    pub kind: DocKind,
    pub grid: String,
    pub town: String,
    pub heads: Vec<String>,
    pub changes: u64,
    pub conflicts: Vec<crate::merge::ResolvedConflict>,
    pub status: Option<Status>,
    pub level: Option<Level>,
}

/// `POST /v1/admin/users` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    /// `county`, a town id, or comma-separated grid ids.
    pub scope: String,
}

/// A created user and their enrolment token (shown once; stored hashed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserCreated {
    pub user: String,
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    pub token: String,
}

/// A lease on a queue item: while it runs, only its holder works the item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Claim {
    pub doc: String,
    pub user: String,
    pub name: String,
    /// Milliseconds since the epoch (server clock).
    pub expires_at: i64,
}

/// `GET /v1/queue`: one item a hub has to act on, with its server-side deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QueueEntry {
    pub doc: String,
    pub title: String,
    pub category: crate::report::Category,
    pub urgency: crate::report::Urgency,
    pub status: Status,
    pub level: Level,
    pub grid: String,
    pub town: String,
    /// The step the item waits for: accept, dispatch, resolve or close.
    pub step: String,
    /// When the server saw the item enter its current status (ms).
    pub since: i64,
    pub due: i64,
    pub light: crate::policy::Light,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// An unanswered supervision order (督办) on the step: `yellow` or `red`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervision: Option<String>,
    /// The server's reminder (催办) went out: the step is past its limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reminded: bool,
}

/// The `format` of an [`UnsentExport`] file.
pub const UNSENT_FORMAT: &str = "gridsync-unsent/1";

/// `field export --unsent FILE`: the work a device holds that its server never acknowledged, for
/// an administrator to import in another user's name (`gridsync-server import-unsent`) when the
/// device's user was revoked. Contains personal data: handle it like the device itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsentExport {
    /// [`UNSENT_FORMAT`].
    pub format: String,
    /// Milliseconds since the epoch (device clock).
    pub exported_at: i64,
    /// The server the device was registered with ([`ServerInfo::server_id`]).
    pub server_id: String,
    /// The device's user id and name.
    pub user: String,
    pub name: String,
    /// The device id.
    pub device: String,
    pub documents: Vec<UnsentDocument>,
}

/// One document with unsent changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsentDocument {
    /// Document id (a UUID).
    pub doc: String,
    pub kind: DocKind,
    /// The report's title (or a patrol's description) as the device shows it, for people.
    pub title: String,
    /// Standard base64 of each unsent Automerge change (`Change::raw_bytes`), oldest first.
    pub changes: Vec<String>,
    /// Standard base64 of the device's whole document (`save()`).
    pub snapshot: String,
}
