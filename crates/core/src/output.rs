//! What `field … --json` prints that is not a protocol body: the device's state, a sync's result
//! and the inbox. Integrators code against `schemas/` generated from these types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::doc::DocKind;
use crate::org::Role;

/// One `field sync` attempt as the device remembers it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct SyncAttempt {
    /// Milliseconds since the epoch (device clock).
    pub at: i64,
    pub ok: bool,
    /// What happened, in the words shown to the person.
    pub message: String,
    /// A stable code for failures: `offline`, `server_error`, `refused`, `revoked`,
    /// `disk_full` (this device's disk), `server_disk_full`, `busy`, `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Work on one document that the server has not acknowledged yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PendingDocument {
    pub doc: String,
    pub kind: DocKind,
    /// The report's title or the patrol's start, for people.
    pub title: String,
    /// Changes waiting to be sent.
    pub changes: u64,
}

/// A change the server refused, kept on the device so the person can see why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RefusalRecord {
    pub doc: String,
    pub hash: String,
    pub code: String,
    pub message: String,
    pub at: i64,
}

/// `field status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeviceState {
    pub user: String,
    pub name: String,
    pub role: Role,
    pub server: String,
    pub device: String,
    pub pending_changes: u64,
    pub pending_track_points: u64,
    /// The unsent work, per document.
    pub pending: Vec<PendingDocument>,
    pub last_attempt: Option<SyncAttempt>,
    pub last_success: Option<SyncAttempt>,
    pub last_failure: Option<SyncAttempt>,
    pub active_patrol: Option<String>,
    pub refused: Vec<RefusalRecord>,
    /// The server said this account was revoked: new work is refused on this device.
    pub revoked: bool,
    /// Inbox entries not yet shown.
    pub inbox_unread: u64,
}

/// What a sync brought that concerns the person using the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InboxKind {
    /// A report of my grid came back down to the grid (refused or returned by the hub).
    ReturnedToGrid,
    /// A step or value I wrote was set aside by a merge rule in favour of someone else's.
    DecisionSetAside,
    /// A report I filed or hold was resolved above me.
    Resolved,
    /// A report I filed or hold was closed.
    Closed,
    /// An item left my queue because it was escalated onwards (by a person or automatically).
    EscalatedAway,
    /// A new item waits in my queue.
    NewInQueue,
    /// An item I hold was supervised (督办) or reminded (催办): answer it.
    Supervised,
}

/// One inbox entry (`field inbox --json` prints an array of these; `field sync --json` the new ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InboxEntry {
    pub id: i64,
    /// When the device received it (ms since the epoch).
    pub at: i64,
    pub kind: InboxKind,
    pub doc: String,
    pub title: String,
    /// Who did it (user id), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Details in words.
    pub detail: String,
    /// Already shown once.
    pub seen: bool,
}

/// A change the server refused in this sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncRefusal {
    pub doc: String,
    pub code: String,
    pub message: String,
}

/// Why a sync stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncFailure {
    /// See [`SyncAttempt::code`].
    pub code: String,
    pub message: String,
}

/// `field sync --json`: printed on success and on failure.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct SyncOutcome {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SyncFailure>,
    pub pushed: u64,
    pub accepted: u64,
    pub duplicate: u64,
    pub refused: u64,
    /// Changes the server holds back until earlier ones arrive.
    pub waiting: u64,
    pub pulled_documents: u64,
    pub round_trips: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Changes still waiting on this device after this sync.
    pub unsent: u64,
    pub refusals: Vec<SyncRefusal>,
    /// Own notes that had been built on a refused edit, written again on top of the server's copy.
    pub notes_rewritten: u64,
    /// What this sync brought for the person (also kept in the inbox).
    pub inbox: Vec<InboxEntry>,
}
