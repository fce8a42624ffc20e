//! Gridsync core: the domain and everything about documents that every replica must agree on.
//!
//! Pure: no IO, no clock, no randomness. Times, ids and actor ids are passed in.
//!
//! - [`org`]: county → towns → villages → grids; roles and scopes; the demo county.
//! - [`doc`]: shared document plumbing; loading and applying outside bytes without panics.
//! - [`inflate`]: caps on what compressed outside bytes inflate to, checked before automerge.
//! - [`localtime`]: the organisation's civil time (dates and minutes people read).
//! - [`indicators`]: supervision indicators (自办自结率, 按期结案率, …) from report views.
//! - [`report`]: report documents, local edits, `ReportView`.
//! - [`patrol`]: patrol documents, compact tracks, `PatrolView`.
//! - [`policy`]: deadlines per step and urgency, and the green/yellow/red light.
//! - [`lifecycle`]: statuses, levels, actions, and the fold of concurrent transitions.
//! - [`merge`]: the deterministic rules that pick among concurrent values.
//! - [`validate`]: whether a write is allowed for its author's role and scope.
//! - [`protocol`]: request and response bodies of the sync protocol.
//! - [`output`]: what `field … --json` prints besides protocol bodies (state, sync, inbox).
//! - [`schema`]: JSON Schemas generated from the types above.

pub mod doc;
pub mod indicators;
pub mod inflate;
pub mod lifecycle;
pub mod localtime;
pub mod merge;
pub mod org;
pub mod output;
pub mod parties;
pub mod patrol;
pub mod policy;
pub mod protocol;
pub mod report;
pub mod schema;
pub mod validate;

pub use automerge;
pub use uuid;
