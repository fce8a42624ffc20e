//! The device's local store: one SQLite file holding the profile, every document (Automerge bytes
//! plus its materialized view), the outbox of unacknowledged changes, refusals and buffered track
//! points. Every command's write is one transaction, so a crash loses nothing it reported saved.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use automerge::{ActorId, AutoCommit, ChangeHash};
use gridsync_core::doc::{self, DocKind, hash_hex};
use gridsync_core::org::Org;
use gridsync_core::patrol::{PatrolView, materialize_patrol};
use gridsync_core::protocol::WhoAmI;
use gridsync_core::report::{ReportView, materialize_report};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// Who this device is and where it syncs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub server: String,
    pub device: String,
    pub token: String,
    /// The device's Automerge actor (hex): made at `init`, never reused.
    pub actor: String,
    pub whoami: WhoAmI,
    /// The part of the organisation in this device's scope.
    pub org: Org,
    /// The last server sequence stored here.
    pub cursor: u64,
    pub last_sync: Option<SyncRecord>,
    /// The patrol `field patrol …` commands act on.
    pub active_patrol: Option<String>,
    /// The server's deadline policy as of registration (profiles from before it use the default).
    #[serde(default)]
    pub policy: gridsync_core::policy::Policy,
}

impl Profile {
    pub fn actor_id(&self) -> Result<ActorId> {
        let bytes = hex::decode(&self.actor).context("the stored actor id is damaged")?;
        Ok(ActorId::from(bytes.as_slice()))
    }
}

/// What the last `field sync` did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncRecord {
    pub at: i64,
    pub ok: bool,
    pub message: String,
}

/// One document as listed locally.
#[derive(Debug, Clone)]
pub struct DocRow {
    pub id: String,
    pub view: String,
}

/// A change the server refused, kept so the worker can see why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    pub doc: String,
    pub hash: String,
    pub code: String,
    pub message: String,
    pub at: i64,
}

const MIGRATIONS: &[&str] = &["
    CREATE TABLE profile (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT NOT NULL);
    CREATE TABLE docs (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, bytes BLOB NOT NULL, view TEXT NOT NULL,
        sort_key INTEGER NOT NULL);
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, kind TEXT NOT NULL,
        bytes BLOB NOT NULL);
    CREATE TABLE refusals (
        hash TEXT PRIMARY KEY, doc_id TEXT NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL,
        at INTEGER NOT NULL);
    CREATE TABLE pending_track (
        id INTEGER PRIMARY KEY, patrol_id TEXT NOT NULL, lat REAL NOT NULL, lon REAL NOT NULL,
        at INTEGER NOT NULL);
"];

/// The local store in a home directory.
pub struct Home {
    pub dir: PathBuf,
    pub conn: Connection,
}

/// The home directory: `--home`, else `$GRIDSYNC_HOME`, else the platform data directory.
pub fn resolve_dir(flag: Option<PathBuf>) -> PathBuf {
    if let Some(d) = flag {
        return d;
    }
    if let Some(d) = std::env::var_os("GRIDSYNC_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("gridsync");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/gridsync"),
        None => PathBuf::from(".gridsync"),
    }
}

impl Home {
    /// Opens (creating) the store.
    pub fn open(dir: &Path) -> Result<Home> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        let path = dir.join("field.sqlite3");
        let mut conn = Connection::open(&path)
            .with_context(|| format!("cannot open the local store in {}", dir.display()))?;
        // The store holds the device token and personal data: readable by its owner only.
        #[cfg(unix)]
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a command that said "saved" survives a power cut, not only a crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(0);
        if version > MIGRATIONS.len() {
            bail!("this local store was written by a newer version of field; update field");
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Home { dir: dir.to_path_buf(), conn })
    }

    pub fn has_profile(&self) -> Result<bool> {
        Ok(self.conn.query_row("SELECT EXISTS(SELECT 1 FROM profile)", [], |r| r.get(0))?)
    }

    pub fn profile(&self) -> Result<Profile> {
        profile_in(&self.conn, &self.dir)
    }

    pub fn save_profile(&self, p: &Profile) -> Result<()> {
        save_profile_in(&self.conn, p)
    }

    /// Runs `f` in one IMMEDIATE transaction: it holds the write lock from the first read, so no
    /// other `field` process (a sync, say) can change what it read before it writes.
    pub fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>, &Profile) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let profile = profile_in(&tx, &self.dir)?;
        let out = f(&tx, &profile)?;
        tx.commit()?;
        Ok(out)
    }

    /// Loads a document, lets `f` edit it, and stores it with its new changes in the outbox, in one
    /// transaction.
    pub fn edit<T>(&mut self, id: &str, f: impl FnOnce(&mut AutoCommit, &Profile) -> Result<T>) -> Result<T> {
        self.write(|tx, profile| {
            let (mut d, kind) = load_in(tx, id, &profile.actor_id()?)?
                .ok_or_else(|| anyhow!("document {id} is not on this device"))?;
            let before = d.get_heads();
            let out = f(&mut d, profile)?;
            record_local(tx, id, kind, &mut d, &before)?;
            Ok(out)
        })
    }

    /// Stores a new document written here, with its changes in the outbox.
    pub fn create(&mut self, id: &str, kind: DocKind, d: &mut AutoCommit) -> Result<()> {
        self.write(|tx, _| record_local(tx, id, kind, d, &[]))
    }

    /// Documents of a kind, newest first.
    pub fn list(&self, kind: DocKind) -> Result<Vec<DocRow>> {
        let mut st =
            self.conn.prepare("SELECT id, view FROM docs WHERE kind = ?1 ORDER BY sort_key DESC, id")?;
        let rows = st.query_map([kind.as_str()], |r| Ok(DocRow { id: r.get(0)?, view: r.get(1)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn report_views(&self) -> Result<Vec<ReportView>> {
        self.list(DocKind::Report)?
            .into_iter()
            .map(|r| serde_json::from_str(&r.view).context("a stored report view is damaged"))
            .collect()
    }

    /// Finds a document by its id or any unique part of it (at least 4 characters): the short ids
    /// tables show are the id's last characters.
    pub fn resolve_id(&self, kind: DocKind, given: &str) -> Result<String> {
        let given = given.trim().to_lowercase();
        let what = kind.as_str();
        if given.len() < 4 {
            bail!("give at least 4 characters of the {what} id (the short id in 'field {what} list' works)");
        }
        if given.contains(['%', '_']) {
            bail!("an id has only letters, digits and dashes");
        }
        let mut st = self
            .conn
            .prepare("SELECT id FROM docs WHERE kind = ?1 AND instr(id, ?2) > 0 ORDER BY id LIMIT 6")?;
        let ids: Vec<String> =
            st.query_map(params![kind.as_str(), given], |r| r.get(0))?.collect::<Result<_, _>>()?;
        if let Some(exact) = ids.iter().find(|i| **i == given) {
            return Ok(exact.clone());
        }
        match ids.len() {
            0 => bail!("no {what} with id {given} on this device; 'field {what} list' shows them"),
            1 => Ok(ids.into_iter().next().unwrap_or_default()),
            _ => bail!("{given} matches several {what}s ({}); give more of the id", ids.join(", ")),
        }
    }

    pub fn outbox_len(&self) -> Result<u64> {
        Ok(self.conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))? as u64)
    }

    pub fn refusals(&self, doc: Option<&str>) -> Result<Vec<Refusal>> {
        let mut st = self.conn.prepare(
            "SELECT doc_id, hash, code, message, at FROM refusals WHERE ?1 IS NULL OR doc_id = ?1 ORDER BY at, hash",
        )?;
        let rows = st.query_map([doc], |r| {
            Ok(Refusal {
                doc: r.get(0)?,
                hash: r.get(1)?,
                code: r.get(2)?,
                message: r.get(3)?,
                at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn profile_in(conn: &Connection, dir: &Path) -> Result<Profile> {
    let json: Option<String> =
        conn.query_row("SELECT json FROM profile WHERE id = 1", [], |r| r.get(0)).optional()?;
    let json = json.ok_or_else(|| {
        anyhow!(
            "this device is not set up yet (home: {}). Run: field init --server URL --token TOKEN",
            dir.display()
        )
    })?;
    serde_json::from_str(&json).context("the stored profile is damaged")
}

/// Loads a document for editing with this device's actor.
pub fn load_in(conn: &Connection, id: &str, actor: &ActorId) -> Result<Option<(AutoCommit, DocKind)>> {
    let row: Option<(Vec<u8>, String)> = conn
        .query_row("SELECT bytes, kind FROM docs WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((bytes, kind)) = row else { return Ok(None) };
    let d = doc::load(&bytes, actor.clone()).map_err(|e| anyhow!("document {id} is damaged locally: {e}"))?;
    Ok(Some((d, DocKind::parse(&kind).ok_or_else(|| anyhow!("document {id} has an unknown kind"))?)))
}

/// Stores a document and queues its changes since `before` for the server.
pub fn record_local(
    conn: &Connection,
    id: &str,
    kind: DocKind,
    d: &mut AutoCommit,
    before: &[ChangeHash],
) -> Result<()> {
    let changes = d.get_changes(before);
    store_doc(conn, id, kind, d)?;
    let mut ins = conn
        .prepare_cached("INSERT OR IGNORE INTO outbox (hash, doc_id, kind, bytes) VALUES (?1, ?2, ?3, ?4)")?;
    for c in &changes {
        ins.execute(params![hash_hex(&c.hash()), id, kind.as_str(), c.raw_bytes()])?;
    }
    Ok(())
}

pub fn save_profile_in(conn: &Connection, p: &Profile) -> Result<()> {
    let json = serde_json::to_string(p)?;
    conn.execute(
        "INSERT INTO profile (id, json) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET json = excluded.json",
        [json],
    )?;
    Ok(())
}

/// The view of a document as JSON, and the key lists sort by (creation time).
pub fn view_json(kind: DocKind, d: &AutoCommit) -> Result<(String, i64)> {
    Ok(match kind {
        DocKind::Report => {
            let v: ReportView = materialize_report(d).map_err(|e| anyhow!("{e}"))?;
            (serde_json::to_string(&v)?, v.created_at)
        }
        DocKind::Patrol => {
            let v: PatrolView = materialize_patrol(d).map_err(|e| anyhow!("{e}"))?;
            (serde_json::to_string(&v)?, v.started_at)
        }
    })
}

/// Writes a document and its view (inside the caller's transaction).
pub fn store_doc(conn: &Connection, id: &str, kind: DocKind, d: &mut AutoCommit) -> Result<()> {
    let (view, sort_key) = view_json(kind, d)?;
    conn.execute(
        "INSERT INTO docs (id, kind, bytes, view, sort_key) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(id) DO UPDATE SET bytes = excluded.bytes, view = excluded.view, sort_key = excluded.sort_key",
        params![id, kind.as_str(), d.save(), view, sort_key],
    )?;
    Ok(())
}
