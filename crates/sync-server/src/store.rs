//! Durable storage: the `Store` trait the server is written against, and its embedded SQLite
//! implementation (WAL, versioned migrations, one writer plus a pool of readers).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gridsync_core::doc::DocKind;
use gridsync_core::lifecycle::{Level, Status};
use gridsync_core::org::{Org, Role, Scope};
use gridsync_core::parties::parties_id;
use gridsync_core::protocol::{Claim, DeviceStatus, DocumentStatus, UserRow};
use gridsync_core::report::Urgency;
use rusqlite::{Connection, OptionalExtension, params};

/// Storage errors. Callers above the store turn these into 500s without leaking details.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// The disk holding the data directory is full (or nearly): writes fail until space is freed.
    #[error("the disk is full: {0}")]
    DiskFull(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// SQLite's "database or disk is full" as [`StoreError::DiskFull`]; other errors unchanged.
    pub fn classify(self) -> StoreError {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, m))
                if f.code == rusqlite::ErrorCode::DiskFull =>
            {
                StoreError::DiskFull(m.unwrap_or_else(|| "database or disk is full".into()))
            }
            other => other,
        }
    }

    /// A constraint one write broke (as opposed to a busy or failing database).
    pub fn is_constraint(&self) -> bool {
        matches!(self, StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation)
    }
}

/// A user as stored; the token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    pub revoked: bool,
}

/// A registered device, with its user.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    pub id: String,
    pub actor: String,
    pub user: UserRecord,
}

/// A stored document as the writer loads it: its kind and compacted snapshot.
#[derive(Debug, Clone)]
pub struct DocRecord {
    pub kind: DocKind,
    pub snapshot: Vec<u8>,
}

/// One document's accepted changes in a group commit, with its new state.
#[derive(Debug, Clone)]
pub struct DocWrite {
    pub id: String,
    pub kind: DocKind,
    pub grid: String,
    pub town: String,
    pub snapshot: Vec<u8>,
    pub heads: Vec<String>,
    /// (hash, raw bytes, pushing device or None for the server) in application order.
    pub changes: Vec<(Vec<u8>, Vec<u8>, Option<String>)>,
    pub view_json: String,
    pub conflicts_json: String,
    pub status: Option<Status>,
    pub level: Option<Level>,
    pub urgency: Option<Urgency>,
    /// Holds parties' names and contacts: never served to a grid assistant.
    pub private: bool,
    /// A report whose dispatched units also read its parties document (policy, by category).
    pub units_read_parties: bool,
    /// Server time of the group commit: becomes `status_since` when status or level changed.
    pub at: i64,
}

/// When the server received a document and each of its lifecycle transitions (server clock).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceivedTimes {
    pub created: Option<i64>,
    pub transitions: BTreeMap<String, i64>,
}

/// The ids of a view's transitions, read without the rest of the view.
#[derive(serde::Deserialize)]
struct TransitionIds {
    #[serde(default)]
    transitions: Vec<IdOnly>,
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    applied: bool,
    #[serde(default)]
    units: Vec<String>,
}

/// A report as the queue and auto-escalation see it.
#[derive(Debug, Clone)]
pub struct WorkRow {
    pub id: String,
    pub grid: String,
    pub town: String,
    pub status: Status,
    pub level: Level,
    pub urgency: Urgency,
    /// Server time the report entered its current status and level.
    pub status_since: i64,
    pub view_json: String,
}

/// What a sync did to a device's counters.
#[derive(Debug, Clone, Default)]
pub struct DeviceActivity {
    pub device: String,
    pub cursor: u64,
    pub pushed: u64,
    pub refused: u64,
    /// (doc, hash, code, message) of each refusal.
    pub refusals: Vec<(String, Option<String>, String, String)>,
    pub at: i64,
}

/// One document of a page, with what the device lacks of it.
#[derive(Debug, Clone)]
pub struct PageEntry {
    pub id: String,
    pub kind: DocKind,
    /// `true`: `data` is a whole snapshot; `false`: concatenated raw changes.
    pub snapshot: bool,
    pub data: Vec<u8>,
}

/// A page of documents for a device, and the cursor it may store once it has stored them.
#[derive(Debug, Clone)]
pub struct Page {
    pub entries: Vec<PageEntry>,
    pub cursor: u64,
    pub has_more: bool,
}

/// The storage interface. SQLite is the default; a PostgreSQL backend would implement the same.
pub trait Store: Send + Sync + 'static {
    /// Whether the store can take writes now: enough free disk, and the database lockable for
    /// writing. `GET /readyz` answers from it.
    fn ready(&self) -> StoreResult<()>;
    fn org(&self) -> StoreResult<Option<Org>>;
    fn set_org(&self, org: &Org) -> StoreResult<()>;
    fn add_user(&self, user: &UserRecord, token_hash: &[u8], at: i64) -> StoreResult<()>;
    /// Revokes a user (the first revocation time is kept) and drops their queue claims.
    fn revoke_user(&self, id: &str, at: i64) -> StoreResult<()>;
    fn users(&self) -> StoreResult<Vec<UserRecord>>;
    /// Every user, revoked ones included, with creation and revocation times.
    fn user_rows(&self) -> StoreResult<Vec<UserRow>>;
    /// Counts a request refused because the device's user is revoked.
    fn record_refused_attempt(&self, device: &str, at: i64) -> StoreResult<()>;
    /// The server's identity, made once when the data directory was first opened.
    fn server_id(&self) -> StoreResult<String>;
    fn user_by_token(&self, token_hash: &[u8]) -> StoreResult<Option<UserRecord>>;
    fn add_device(
        &self,
        id: &str,
        user: &str,
        label: &str,
        actor: &str,
        token_hash: &[u8],
        at: i64,
    ) -> StoreResult<()>;
    fn device_by_token(&self, token_hash: &[u8]) -> StoreResult<Option<DeviceRecord>>;
    fn load_doc(&self, id: &str) -> StoreResult<Option<DocRecord>>;
    /// Writes a group of documents and device activity in one transaction.
    fn commit_group(&self, docs: &[DocWrite], activity: &[DeviceActivity]) -> StoreResult<()>;
    /// Server receive times of documents: creation (`docs.created_at`) and each transition.
    fn received_times(&self, docs: &[String]) -> StoreResult<BTreeMap<String, ReceivedTimes>>;
    /// The next page for `device` after `cursor`: documents in `scope` with changes after the
    /// cursor, at most `limit_docs` and about `budget` bytes (at least one document). After storing
    /// it the device holds every in-scope change up to the returned cursor. Without `private`
    /// (grid assistants) documents holding parties' names and contacts are not in scope.
    #[allow(clippy::too_many_arguments)]
    fn page(
        &self,
        scope: &Scope,
        private: bool,
        cursor: u64,
        device: &str,
        limit_docs: usize,
        budget: u64,
    ) -> StoreResult<Page>;
    fn head_seq(&self) -> StoreResult<u64>;
    fn device_statuses(&self) -> StoreResult<Vec<DeviceStatus>>;
    fn document_statuses(&self, only_conflicted: bool) -> StoreResult<Vec<DocumentStatus>>;
    /// Materialized report views (JSON) in scope, for server-side queries.
    fn report_views(&self, scope: &Scope) -> StoreResult<Vec<String>>;
    /// Reports whose (status, level) is one of `states`.
    fn reports_in(&self, states: &[(Status, Level)]) -> StoreResult<Vec<WorkRow>>;
    /// The server's own Automerge actor; stores `fresh` the first time.
    fn server_actor(&self, fresh: &str) -> StoreResult<String>;
    /// Takes or renews the lease on `doc` for `user` unless another holds an unexpired one;
    /// returns whoever holds it afterwards.
    fn claim(&self, doc: &str, user: &str, name: &str, now: i64, lease_ms: i64) -> StoreResult<Claim>;
    /// Drops `user`'s claim on `doc`; `false` when they held none.
    fn release(&self, doc: &str, user: &str) -> StoreResult<bool>;
    /// The unexpired claim on `doc`, if any.
    fn claim_on(&self, doc: &str, now: i64) -> StoreResult<Option<Claim>>;
    /// Unexpired claims.
    fn claims(&self, now: i64) -> StoreResult<Vec<Claim>>;
    /// Documents `device` created at or after `since` (server time).
    fn docs_created_since(&self, device: &str, since: i64) -> StoreResult<u32>;
    /// Refusals stored for `device` at or after `since`.
    fn refusals_since(&self, device: &str, since: i64) -> StoreResult<u32>;
    /// Devices `user` registered at or after `since`.
    fn devices_registered_since(&self, user: &str, since: i64) -> StoreResult<u32>;
    /// What `device` has acknowledged holding of `doc`: the highest cursor it has sent (`cursor`
    /// or an earlier one) and the hashes of the document's changes up to it.
    fn acknowledged_changes(&self, doc: &str, device: &str, cursor: u64) -> StoreResult<(u64, Vec<Vec<u8>>)>;
}

const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE org (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT NOT NULL);
     CREATE TABLE users (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, scope TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE, created_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
     CREATE TABLE devices (
        id TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id), label TEXT NOT NULL,
        actor TEXT NOT NULL UNIQUE, token_hash BLOB NOT NULL UNIQUE, registered_at INTEGER NOT NULL,
        last_seen INTEGER, cursor INTEGER NOT NULL DEFAULT 0, pushed INTEGER NOT NULL DEFAULT 0,
        refused INTEGER NOT NULL DEFAULT 0, last_error TEXT);
     CREATE TABLE docs (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, grid TEXT NOT NULL, town TEXT NOT NULL,
        snapshot BLOB NOT NULL, created_seq INTEGER NOT NULL, updated_seq INTEGER NOT NULL,
        change_count INTEGER NOT NULL, heads TEXT NOT NULL, view TEXT NOT NULL,
        conflicts TEXT NOT NULL, conflict_count INTEGER NOT NULL, status TEXT, level TEXT);
     CREATE INDEX docs_updated ON docs(updated_seq);
     CREATE INDEX docs_town_updated ON docs(town, updated_seq);
     CREATE INDEX docs_grid_updated ON docs(grid, updated_seq);
     CREATE TABLE changes (
        seq INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, hash BLOB NOT NULL UNIQUE,
        device_id TEXT, bytes BLOB NOT NULL);
     CREATE INDEX changes_doc_seq ON changes(doc_id, seq);
     CREATE TABLE refusals (
        id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, doc_id TEXT NOT NULL, hash TEXT,
        code TEXT NOT NULL, message TEXT NOT NULL, at INTEGER NOT NULL);",
    // 2: the escalation queue — urgency and when the status last changed (server clock), claims,
    // and server metadata (its own Automerge actor).
    "ALTER TABLE docs ADD COLUMN urgency TEXT;
     ALTER TABLE docs ADD COLUMN status_since INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX docs_status_level ON docs(status, level);
     CREATE TABLE claims (
        doc_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, name TEXT NOT NULL, expires_at INTEGER NOT NULL);
     CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 3: revocation times, refused attempts of revoked devices (the server's identity lives in meta).
    "ALTER TABLE users ADD COLUMN revoked_at INTEGER;
     ALTER TABLE devices ADD COLUMN refused_attempts INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE devices ADD COLUMN last_refused_at INTEGER;",
    // 4: quotas per device and day — who created a document and when (server clock), and indexes
    // to count a day's documents, refusals and registrations.
    "ALTER TABLE docs ADD COLUMN created_by TEXT;
     ALTER TABLE docs ADD COLUMN created_at INTEGER;
     CREATE INDEX docs_created_by ON docs(created_by, created_at);
     CREATE INDEX refusals_device_at ON refusals(device_id, at);
     CREATE INDEX devices_user_registered ON devices(user_id, registered_at);",
    // 5: when the server received each lifecycle transition (its clock, not the device's): pages
    // carry these, and indicators count from them.
    "CREATE TABLE received (
        doc_id TEXT NOT NULL, transition TEXT NOT NULL, at INTEGER NOT NULL,
        PRIMARY KEY (doc_id, transition)) WITHOUT ROWID;",
    // 6: the reports dispatched to each handling unit, and the sequence number from which the
    // unit reads each (before it, the unit's devices never held the report: they get it whole).
    "CREATE TABLE unit_docs (
        unit TEXT NOT NULL, doc_id TEXT NOT NULL, since_seq INTEGER NOT NULL,
        PRIMARY KEY (unit, doc_id)) WITHOUT ROWID;",
    // 7: documents holding parties' names and contacts (parties documents, and reports of the
    // layout before them that hold their parties themselves): never served to grid assistants.
    "ALTER TABLE docs ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
     UPDATE docs SET private = 1
      WHERE kind = 'report' AND json_array_length(json_extract(view, '$.parties')) > 0;",
];

/// The embedded SQLite store in a data directory.
pub struct SqliteStore {
    path: PathBuf,
    /// The one connection that writes; SQLite allows one writer at a time anyway.
    writer: Mutex<Connection>,
    /// Idle read connections; WAL lets them read while the writer writes.
    readers: Mutex<Vec<Connection>>,
}

fn open(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk (WAL fsync'd) before the server answers, so an acknowledged change
    // survives a power cut, after which the device has already dropped it. Group commit keeps the
    // fsyncs few (BENCHMARKS.md has the cost).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir` and runs pending migrations.
    pub fn open(dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("gridsync.sqlite3");
        let mut conn = open(&path)?;
        // Documents hold personal data: the database is readable by the server's user only.
        #[cfg(unix)]
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| StoreError::Corrupt(format!("cannot restrict {}: {e}", path.display())))?;
        migrate(&mut conn)?;
        // The server's identity: random, made once, kept for the life of the data directory.
        let mut bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let fresh = uuid::Builder::from_random_bytes(bytes).into_uuid().to_string();
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('server_id', ?1)", [fresh])?;
        Ok(SqliteStore { path, writer: Mutex::new(conn), readers: Mutex::new(Vec::new()) })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let conn = match self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            Some(c) => c,
            None => open(&self.path)?,
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 16 {
            pool.push(conn);
        }
        out
    }

    fn write<T>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }
}

/// Below this much free disk the server says it is not ready (writes would soon fail).
pub const MIN_FREE_BYTES: u64 = 64 << 20;

/// Free bytes for unprivileged writers on the file system holding `dir`.
fn free_bytes(dir: &Path) -> StoreResult<u64> {
    let st = rustix::fs::statvfs(dir)
        .map_err(|e| StoreError::Corrupt(format!("cannot read free space of {}: {e}", dir.display())))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(0);
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the data directory is at schema version {version}, newer than this server ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, String, bool)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, i64>(4)? != 0))
}

fn to_user(
    (id, name, role, scope, revoked): (String, String, String, String, bool),
) -> StoreResult<UserRecord> {
    let role = Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?;
    let scope = serde_json::from_str(&scope).map_err(|e| StoreError::Corrupt(format!("scope: {e}")))?;
    Ok(UserRecord { id, name, role, scope, revoked })
}

/// An SQL condition on `docs` (grid, town) for a scope, with its parameters numbered from `first`.
fn scope_filter(scope: &Scope, first: usize) -> (String, Vec<rusqlite::types::Value>) {
    match scope {
        Scope::County => (String::new(), vec![]),
        Scope::Town(t) => (format!("AND town = ?{first}"), vec![t.clone().into()]),
        Scope::Unit(u) => (
            format!("AND id IN (SELECT doc_id FROM unit_docs WHERE unit = ?{first})"),
            vec![u.clone().into()],
        ),
        Scope::Grids(grids) => (
            format!(
                "AND grid IN ({})",
                (0..grids.len()).map(|i| format!("?{}", i + first)).collect::<Vec<_>>().join(",")
            ),
            grids.iter().map(|g| g.clone().into()).collect(),
        ),
    }
}

fn kind_of(s: &str) -> StoreResult<DocKind> {
    DocKind::parse(s).ok_or_else(|| StoreError::Corrupt(format!("document kind {s:?}")))
}

impl Store for SqliteStore {
    fn ready(&self) -> StoreResult<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let free = free_bytes(dir)?;
        if free < MIN_FREE_BYTES {
            return Err(StoreError::DiskFull(format!(
                "{} MiB free under the data directory, below the {} MiB writes need",
                free >> 20,
                MIN_FREE_BYTES >> 20
            )));
        }
        self.write(|c| {
            c.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
            Ok(())
        })
    }

    fn org(&self) -> StoreResult<Option<Org>> {
        self.read(|c| {
            let json: Option<String> = c
                .prepare_cached("SELECT json FROM org WHERE id = 1")?
                .query_row([], |r| r.get(0))
                .optional()?;
            json.map(|j| serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(format!("org: {e}"))))
                .transpose()
        })
    }

    fn set_org(&self, org: &Org) -> StoreResult<()> {
        let json = serde_json::to_string(org).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write(|c| {
            c.execute("INSERT INTO org (id, json) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET json = excluded.json", [json])?;
            Ok(())
        })
    }

    fn add_user(&self, user: &UserRecord, token_hash: &[u8], at: i64) -> StoreResult<()> {
        let scope = serde_json::to_string(&user.scope).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write(|c| {
            let n = c.execute(
                "INSERT INTO users (id, name, role, scope, token_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO NOTHING",
                params![user.id, user.name, user.role.as_str(), scope, token_hash, at],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("a user with id {:?} already exists", user.id)));
            }
            Ok(())
        })
    }

    fn revoke_user(&self, id: &str, at: i64) -> StoreResult<()> {
        self.write(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE users SET revoked = 1, revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, at],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("no user {id:?}")));
            }
            tx.execute("DELETE FROM claims WHERE user_id = ?1", [id])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn user_rows(&self) -> StoreResult<Vec<UserRow>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, name, role, scope, revoked, created_at, revoked_at FROM users ORDER BY id",
            )?;
            let rows = st
                .query_map([], |r| Ok((user_from_row(r)?, r.get::<_, i64>(5)?, r.get::<_, Option<i64>>(6)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(u, created_at, revoked_at)| {
                    let u = to_user(u)?;
                    // Users revoked before revocation times were kept show 0: revoked, time unknown.
                    let revoked_at = if u.revoked { Some(revoked_at.unwrap_or(0)) } else { None };
                    Ok(UserRow {
                        user: u.id,
                        name: u.name,
                        role: u.role,
                        scope: u.scope,
                        created_at,
                        revoked_at,
                    })
                })
                .collect()
        })
    }

    fn record_refused_attempt(&self, device: &str, at: i64) -> StoreResult<()> {
        self.write(|c| {
            c.execute(
                "UPDATE devices SET refused_attempts = refused_attempts + 1, last_refused_at = ?2 WHERE id = ?1",
                params![device, at],
            )?;
            Ok(())
        })
    }

    fn server_id(&self) -> StoreResult<String> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT value FROM meta WHERE key = 'server_id'")?
                .query_row([], |r| r.get(0))?)
        })
    }

    fn users(&self) -> StoreResult<Vec<UserRecord>> {
        self.read(|c| {
            let mut st = c.prepare("SELECT id, name, role, scope, revoked FROM users ORDER BY id")?;
            let rows = st.query_map([], user_from_row)?.collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(to_user).collect()
        })
    }

    fn user_by_token(&self, token_hash: &[u8]) -> StoreResult<Option<UserRecord>> {
        self.read(|c| {
            c.prepare_cached("SELECT id, name, role, scope, revoked FROM users WHERE token_hash = ?1")?
                .query_row([token_hash], user_from_row)
                .optional()?
                .map(to_user)
                .transpose()
        })
    }

    fn add_device(
        &self,
        id: &str,
        user: &str,
        label: &str,
        actor: &str,
        token_hash: &[u8],
        at: i64,
    ) -> StoreResult<()> {
        self.write(|c| {
            let taken: bool =
                c.prepare_cached("SELECT EXISTS(SELECT 1 FROM devices WHERE actor = ?1)")?.query_row( [actor], |r| r.get(0))?;
            if taken {
                return Err(StoreError::Conflict(
                    "that actor id is already registered; a device must make a fresh one".into(),
                ));
            }
            c.execute(
                "INSERT INTO devices (id, user_id, label, actor, token_hash, registered_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, user, label, actor, token_hash, at],
            )?;
            Ok(())
        })
    }

    fn device_by_token(&self, token_hash: &[u8]) -> StoreResult<Option<DeviceRecord>> {
        self.read(|c| {
            let row = c
                .prepare_cached(
                    "SELECT d.id, d.actor, u.id, u.name, u.role, u.scope, u.revoked
                     FROM devices d JOIN users u ON u.id = d.user_id WHERE d.token_hash = ?1",
                )?
                .query_row([token_hash], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get::<_, i64>(6)? != 0),
                    ))
                })
                .optional()?;
            row.map(|(id, actor, u)| Ok(DeviceRecord { id, actor, user: to_user(u)? })).transpose()
        })
    }

    fn load_doc(&self, id: &str) -> StoreResult<Option<DocRecord>> {
        self.read(|c| {
            let row: Option<(String, Vec<u8>)> = c
                .prepare_cached("SELECT kind, snapshot FROM docs WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            row.map(|(kind, snapshot)| Ok(DocRecord { kind: kind_of(&kind)?, snapshot })).transpose()
        })
    }

    fn commit_group(&self, docs: &[DocWrite], activity: &[DeviceActivity]) -> StoreResult<()> {
        self.write(|c| {
            let tx = c.transaction()?;
            {
                let mut ins = tx.prepare_cached("INSERT INTO changes (doc_id, hash, device_id, bytes) VALUES (?1, ?2, ?3, ?4)")?;
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO docs (id, kind, grid, town, snapshot, created_seq, updated_seq, change_count, heads,
                                       view, conflicts, conflict_count, status, level, urgency, status_since,
                                       created_by, created_at, private)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?15, ?17)
                     ON CONFLICT(id) DO UPDATE SET snapshot = excluded.snapshot, updated_seq = excluded.updated_seq,
                        private = MAX(docs.private, excluded.private),
                        change_count = docs.change_count + excluded.change_count, heads = excluded.heads,
                        view = excluded.view, conflicts = excluded.conflicts,
                        conflict_count = excluded.conflict_count, status = excluded.status, level = excluded.level,
                        urgency = excluded.urgency,
                        status_since = CASE WHEN docs.status IS excluded.status AND docs.level IS excluded.level
                                            THEN docs.status_since ELSE excluded.status_since END",
                )?;
                for d in docs {
                    let mut first = None;
                    let mut last = 0i64;
                    for (hash, bytes, device) in &d.changes {
                        ins.execute(params![d.id, hash, device, bytes])?;
                        last = tx.last_insert_rowid();
                        first.get_or_insert(last);
                    }
                    let Some(first) = first else { continue };
                    let conflict_count = serde_json::from_str::<Vec<serde_json::Value>>(&d.conflicts_json)
                        .map(|v| v.len())
                        .unwrap_or(0) as i64;
                    upsert.execute(params![
                        d.id,
                        d.kind.as_str(),
                        d.grid,
                        d.town,
                        d.snapshot,
                        first,
                        d.changes.len() as i64,
                        d.heads.join(","),
                        d.view_json,
                        d.conflicts_json,
                        conflict_count,
                        d.status.map(|s| s.as_str()),
                        d.level.map(|l| l.as_str()),
                        d.urgency.map(|u| u.as_str()),
                        d.at,
                        // Kept only when the row is new: the device whose change created it.
                        d.changes[0].2,
                        d.private,
                    ])?;
                    if last != first {
                        tx.prepare_cached("UPDATE docs SET updated_seq = ?2 WHERE id = ?1")?
                            .execute(params![d.id, last])?;
                    }
                    // The first time the server sees a transition is when it received it.
                    if d.kind == DocKind::Report
                        && let Ok(ids) = serde_json::from_str::<TransitionIds>(&d.view_json)
                    {
                        let mut rec = tx.prepare_cached(
                            "INSERT OR IGNORE INTO received (doc_id, transition, at) VALUES (?1, ?2, ?3)",
                        )?;
                        let mut unit_doc = tx.prepare_cached(
                            "INSERT OR IGNORE INTO unit_docs (unit, doc_id, since_seq) VALUES (?1, ?2, ?3)",
                        )?;
                        for t in ids.transitions {
                            rec.execute(params![d.id, t.id, d.at])?;
                            if t.applied && t.action == "dispatch" {
                                let parties = d.units_read_parties.then(|| parties_id(&d.id)).flatten();
                                for unit in &t.units {
                                    unit_doc.execute(params![unit, d.id, first])?;
                                    if let Some(p) = &parties {
                                        unit_doc.execute(params![unit, p, first])?;
                                    }
                                }
                            }
                        }
                    }
                }
                let mut dev = tx.prepare_cached(
                    "UPDATE devices SET last_seen = ?2, cursor = MAX(cursor, ?3), pushed = pushed + ?4, refused = refused + ?5,
                        last_error = COALESCE(?6, last_error) WHERE id = ?1",
                )?;
                let mut refusal = tx.prepare_cached(
                    "INSERT INTO refusals (device_id, doc_id, hash, code, message, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for a in activity {
                    let last_error = a.refusals.last().map(|(doc, _, code, msg)| format!("{code} on {doc}: {msg}"));
                    dev.execute(params![a.device, a.at, a.cursor as i64, a.pushed as i64, a.refused as i64, last_error])?;
                    for (doc, hash, code, msg) in &a.refusals {
                        refusal.execute(params![a.device, doc, hash, code, msg, a.at])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn received_times(&self, docs: &[String]) -> StoreResult<BTreeMap<String, ReceivedTimes>> {
        self.read(|c| {
            let mut out: BTreeMap<String, ReceivedTimes> = BTreeMap::new();
            let mut created = c.prepare_cached("SELECT created_at FROM docs WHERE id = ?1")?;
            let mut trans = c.prepare_cached("SELECT transition, at FROM received WHERE doc_id = ?1")?;
            for id in docs {
                let at: Option<Option<i64>> = created.query_row([id], |r| r.get(0)).optional()?;
                let times: Vec<(String, i64)> =
                    trans.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
                out.insert(
                    id.clone(),
                    ReceivedTimes { created: at.flatten(), transitions: times.into_iter().collect() },
                );
            }
            Ok(out)
        })
    }

    fn page(
        &self,
        scope: &Scope,
        private: bool,
        cursor: u64,
        device: &str,
        limit_docs: usize,
        budget: u64,
    ) -> StoreResult<Page> {
        self.read(|c| {
            let tx = c.unchecked_transaction()?;
            let head: i64 = tx.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM changes")?.query_row( [], |r| r.get(0))?;
            let cur = cursor as i64;
            // Documents in scope with changes after the cursor, ordered by their *first* change after
            // the cursor. Cutting the list anywhere then leaves out only documents whose pending
            // changes all come after the first left-out one: the cursor can move up to just before it.
            // Ids and sizes first: no document's bytes are read unless they go into the page.
            // A unit's document also enters its scope at the commit that dispatched it to the unit
            // (`unit_docs.since_seq`), even when the document itself did not change then (a
            // report's parties document): it counts from there.
            let (filter, mut args) = scope_filter(scope, 3);
            let (entered_or, entered_first) = match scope {
                Scope::Unit(_) => (
                    "OR id IN (SELECT doc_id FROM unit_docs WHERE unit = ?3 AND since_seq > ?1)",
                    "(SELECT since_seq FROM unit_docs WHERE unit = ?3 AND doc_id = docs.id AND since_seq > ?1),",
                ),
                _ => ("", "NULL,"),
            };
            let private = if private { "" } else { "AND private = 0" };
            let sql = format!(
                "SELECT id, kind, created_seq, length(snapshot),
                        CASE WHEN created_seq > ?1 THEN created_seq
                             ELSE COALESCE({entered_first}
                                  (SELECT MIN(seq) FROM changes WHERE doc_id = docs.id AND seq > ?1)) END AS first
                 FROM docs WHERE (updated_seq > ?1 {entered_or}) {filter} {private} ORDER BY first, id LIMIT ?2"
            );
            let mut params: Vec<rusqlite::types::Value> = vec![cur.into(), ((limit_docs + 1) as i64).into()];
            params.append(&mut args);
            let mut st = tx.prepare_cached(&sql)?;
            let rows: Vec<(String, String, i64, i64, i64)> = st
                .query_map(rusqlite::params_from_iter(params), |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut sizes_st = tx.prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(length(bytes)), 0) FROM changes
                 WHERE doc_id = ?1 AND seq > ?2 AND (device_id IS NULL OR device_id != ?3)",
            )?;
            let mut changes_st = tx.prepare_cached(
                "SELECT bytes FROM changes WHERE doc_id = ?1 AND seq > ?2 AND (device_id IS NULL OR device_id != ?3) ORDER BY seq",
            )?;
            let mut snapshot_st = tx.prepare_cached("SELECT snapshot FROM docs WHERE id = ?1")?;
            let mut since_st = tx.prepare_cached("SELECT since_seq FROM unit_docs WHERE unit = ?1 AND doc_id = ?2")?;
            let mut entries = Vec::new();
            let mut used = 0u64;
            let mut first_left_out = None;
            for (i, (id, kind, created_seq, snapshot_len, first)) in rows.into_iter().enumerate() {
                if i == limit_docs {
                    first_left_out = Some(first);
                    break;
                }
                let (others, changes_size): (i64, i64) =
                    sizes_st.query_row(params![id, cur, device], |r| Ok((r.get(0)?, r.get(1)?)))?;
                // A report dispatched to a unit after the cursor is new to the unit's device.
                let entered = match scope {
                    Scope::Unit(u) => since_st.query_row(params![u, id], |r| r.get::<_, i64>(0))? > cur,
                    _ => false,
                };
                if others == 0 && !entered {
                    // Only the device's own changes: it has them all already.
                    continue;
                }
                // A document new to the device comes whole; so does one whose missing changes
                // would weigh more than its compacted snapshot.
                let snap = created_seq > cur || entered || changes_size >= snapshot_len;
                let size = if snap { snapshot_len } else { changes_size } as u64;
                if !entries.is_empty() && used + size > budget {
                    first_left_out = Some(first);
                    break;
                }
                used += size;
                let data = if snap {
                    snapshot_st.query_row([&id], |r| r.get::<_, Vec<u8>>(0))?
                } else {
                    changes_st
                        .query_map(params![id, cur, device], |r| r.get::<_, Vec<u8>>(0))?
                        .collect::<Result<Vec<_>, _>>()?
                        .concat()
                };
                entries.push(PageEntry { id, kind: kind_of(&kind)?, snapshot: snap, data });
            }
            let (cursor, has_more) = match first_left_out {
                Some(first) => ((first - 1).max(cur) as u64, true),
                None => (head.max(cur) as u64, false),
            };
            Ok(Page { entries, cursor, has_more })
        })
    }

    fn head_seq(&self) -> StoreResult<u64> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM changes")?
                .query_row([], |r| r.get::<_, i64>(0))? as u64)
        })
    }

    fn device_statuses(&self) -> StoreResult<Vec<DeviceStatus>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT d.id, d.label, u.id, u.name, u.role, d.registered_at, d.last_seen, d.cursor, d.pushed,
                        d.refused, d.last_error, u.revoked, u.scope, d.refused_attempts, d.last_refused_at
                 FROM devices d JOIN users u ON u.id = d.user_id ORDER BY d.last_seen IS NULL, d.last_seen DESC, d.id",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(12)?,
                    DeviceStatus {
                        device: r.get(0)?,
                        label: r.get(1)?,
                        user: r.get(2)?,
                        name: r.get(3)?,
                        role: Role::GridWorker,
                        registered_at: r.get(5)?,
                        last_seen: r.get(6)?,
                        cursor: r.get::<_, i64>(7)? as u64,
                        lag: 0,
                        pushed: r.get::<_, i64>(8)? as u64,
                        refused: r.get::<_, i64>(9)? as u64,
                        last_error: r.get(10)?,
                        revoked: r.get::<_, i64>(11)? != 0,
                        refused_attempts: r.get::<_, i64>(13)? as u64,
                        last_refused_at: r.get(14)?,
                    },
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (role, scope, mut d) = row?;
                d.role = Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?;
                let scope: Scope =
                    serde_json::from_str(&scope).map_err(|e| StoreError::Corrupt(format!("scope: {e}")))?;
                // Behind = changes in its scope, by others, after the cursor it last confirmed.
                let (filter, mut args) = scope_filter(&scope, 3);
                let sql = format!(
                    "SELECT COUNT(*) FROM changes c JOIN docs ON docs.id = c.doc_id
                     WHERE c.seq > ?1 AND (c.device_id IS NULL OR c.device_id != ?2) {filter}"
                );
                let mut params: Vec<rusqlite::types::Value> = vec![(d.cursor as i64).into(), d.device.clone().into()];
                params.append(&mut args);
                d.lag = c.query_row(&sql, rusqlite::params_from_iter(params), |r| r.get::<_, i64>(0))? as u64;
                out.push(d);
            }
            Ok(out)
        })
    }

    fn document_statuses(&self, only_conflicted: bool) -> StoreResult<Vec<DocumentStatus>> {
        self.read(|c| {
            let filter = if only_conflicted { "WHERE conflict_count > 0" } else { "" };
            let mut st = c.prepare(&format!(
                "SELECT id, kind, grid, town, heads, change_count, conflicts, status, level,
                        COALESCE(json_extract(view, '$.title'), '') FROM docs {filter}
                 ORDER BY updated_seq DESC"
            ))?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, String>(9)?,
                ))
            })?;
            rows.map(|row| {
                let (doc, kind, grid, town, heads, changes, conflicts, status, level, title) = row?;
                Ok(DocumentStatus {
                    doc,
                    title,
                    kind: kind_of(&kind)?,
                    grid,
                    town,
                    heads: heads.split(',').filter(|h| !h.is_empty()).map(String::from).collect(),
                    changes: changes as u64,
                    conflicts: serde_json::from_str(&conflicts)
                        .map_err(|e| StoreError::Corrupt(format!("conflicts: {e}")))?,
                    status: status.as_deref().and_then(Status::parse),
                    level: level.as_deref().and_then(Level::parse),
                })
            })
            .collect()
        })
    }

    fn report_views(&self, scope: &Scope) -> StoreResult<Vec<String>> {
        self.read(|c| {
            let (filter, args) = scope_filter(scope, 1);
            let mut st = c.prepare(&format!(
                "SELECT view FROM docs WHERE kind = 'report' {filter} ORDER BY created_seq"
            ))?;
            let rows = st.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn reports_in(&self, states: &[(Status, Level)]) -> StoreResult<Vec<WorkRow>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, grid, town, status, level, urgency, status_since, view FROM docs
                 WHERE kind = 'report' AND status = ?1 AND level = ?2 ORDER BY status_since, id",
            )?;
            let mut out = Vec::new();
            for (status, level) in states {
                let rows = st.query_map(params![status.as_str(), level.as_str()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, String>(7)?,
                    ))
                })?;
                for row in rows {
                    let (id, grid, town, urgency, status_since, view_json) = row?;
                    let urgency = urgency
                        .as_deref()
                        .and_then(Urgency::parse)
                        .ok_or_else(|| StoreError::Corrupt(format!("urgency of {id}")))?;
                    out.push(WorkRow {
                        id,
                        grid,
                        town,
                        status: *status,
                        level: *level,
                        urgency,
                        status_since,
                        view_json,
                    });
                }
            }
            Ok(out)
        })
    }

    fn server_actor(&self, fresh: &str) -> StoreResult<String> {
        self.write(|c| {
            c.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('server_actor', ?1)", [fresh])?;
            Ok(c.prepare_cached("SELECT value FROM meta WHERE key = 'server_actor'")?
                .query_row([], |r| r.get(0))?)
        })
    }

    fn claim(&self, doc: &str, user: &str, name: &str, now: i64, lease_ms: i64) -> StoreResult<Claim> {
        self.write(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO claims (doc_id, user_id, name, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(doc_id) DO UPDATE SET user_id = excluded.user_id, name = excluded.name,
                    expires_at = excluded.expires_at
                 WHERE claims.expires_at <= ?5 OR claims.user_id = excluded.user_id",
                params![doc, user, name, now + lease_ms, now],
            )?;
            let claim = tx
                .prepare_cached("SELECT doc_id, user_id, name, expires_at FROM claims WHERE doc_id = ?1")?
                .query_row([doc], |r| {
                    Ok(Claim { doc: r.get(0)?, user: r.get(1)?, name: r.get(2)?, expires_at: r.get(3)? })
                })?;
            tx.commit()?;
            Ok(claim)
        })
    }

    fn release(&self, doc: &str, user: &str) -> StoreResult<bool> {
        self.write(|c| {
            Ok(c.execute("DELETE FROM claims WHERE doc_id = ?1 AND user_id = ?2", params![doc, user])? > 0)
        })
    }

    fn claim_on(&self, doc: &str, now: i64) -> StoreResult<Option<Claim>> {
        self.read(|c| {
            Ok(c.prepare_cached(
                "SELECT doc_id, user_id, name, expires_at FROM claims WHERE doc_id = ?1 AND expires_at > ?2",
            )?
            .query_row(params![doc, now], |r| {
                Ok(Claim { doc: r.get(0)?, user: r.get(1)?, name: r.get(2)?, expires_at: r.get(3)? })
            })
            .optional()?)
        })
    }

    fn acknowledged_changes(&self, doc: &str, device: &str, cursor: u64) -> StoreResult<(u64, Vec<Vec<u8>>)> {
        self.read(|c| {
            let stored: Option<i64> = c
                .prepare_cached("SELECT cursor FROM devices WHERE id = ?1")?
                .query_row([device], |r| r.get(0))
                .optional()?;
            let upto = cursor.max(stored.unwrap_or(0).max(0) as u64);
            let mut st = c.prepare_cached("SELECT hash FROM changes WHERE doc_id = ?1 AND seq <= ?2")?;
            let hashes = st
                .query_map(params![doc, upto as i64], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((upto, hashes))
        })
    }

    fn docs_created_since(&self, device: &str, since: i64) -> StoreResult<u32> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT COUNT(*) FROM docs WHERE created_by = ?1 AND created_at >= ?2")?
                .query_row(params![device, since], |r| r.get(0))?)
        })
    }

    fn refusals_since(&self, device: &str, since: i64) -> StoreResult<u32> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT COUNT(*) FROM refusals WHERE device_id = ?1 AND at >= ?2")?
                .query_row(params![device, since], |r| r.get(0))?)
        })
    }

    fn devices_registered_since(&self, user: &str, since: i64) -> StoreResult<u32> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT COUNT(*) FROM devices WHERE user_id = ?1 AND registered_at >= ?2")?
                .query_row(params![user, since], |r| r.get(0))?)
        })
    }

    fn claims(&self, now: i64) -> StoreResult<Vec<Claim>> {
        self.read(|c| {
            let mut st =
                c.prepare("SELECT doc_id, user_id, name, expires_at FROM claims WHERE expires_at > ?1")?;
            let rows = st.query_map([now], |r| {
                Ok(Claim { doc: r.get(0)?, user: r.get(1)?, name: r.get(2)?, expires_at: r.get(3)? })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_reopen_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        s.set_org(&gridsync_core::org::demo_county(1)).unwrap();
        drop(s);
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.org().unwrap().unwrap().grids.len(), 942);
        let v: i64 = s.read(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?)).unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let id = s.server_id().unwrap();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        drop(s);
        assert_eq!(SqliteStore::open(dir.path()).unwrap().server_id().unwrap(), id, "made once, kept");
    }

    #[test]
    fn a_newer_schema_is_refused_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let c = Connection::open(dir.path().join("gridsync.sqlite3")).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(SqliteStore::open(dir.path()), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn users_and_devices_are_found_by_token_hash_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let u = UserRecord {
            id: "u1".into(),
            name: "Li".into(),
            role: Role::GridWorker,
            scope: Scope::Grids(vec!["G1".into()]),
            revoked: false,
        };
        s.add_user(&u, b"hash-u", 1).unwrap();
        assert!(matches!(s.add_user(&u, b"hash-2", 1), Err(StoreError::Conflict(_))));
        assert_eq!(s.user_by_token(b"hash-u").unwrap(), Some(u.clone()));
        assert_eq!(s.user_by_token(b"nope").unwrap(), None);
        s.add_device("d1", "u1", "phone", "aa", b"hash-d", 2).unwrap();
        assert!(matches!(
            s.add_device("d2", "u1", "phone", "aa", b"hash-e", 2),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.device_by_token(b"hash-d").unwrap().unwrap().user, u);
        s.claim("doc", "u1", "Li", 5, 1_000).unwrap();
        s.revoke_user("u1", 7).unwrap();
        s.revoke_user("u1", 9).unwrap();
        assert!(s.device_by_token(b"hash-d").unwrap().unwrap().user.revoked);
        assert_eq!(s.user_rows().unwrap()[0].revoked_at, Some(7), "the first revocation time is kept");
        assert_eq!(s.claim_on("doc", 6).unwrap(), None, "revoking frees the user's claims");
        s.record_refused_attempt("d1", 11).unwrap();
        s.record_refused_attempt("d1", 12).unwrap();
        let d = s.device_statuses().unwrap().remove(0);
        assert_eq!((d.refused_attempts, d.last_refused_at), (2, Some(12)));
    }
}
