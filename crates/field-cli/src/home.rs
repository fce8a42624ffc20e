//! The device's local store: one SQLite file holding the profile, every document (Automerge bytes
//! plus its materialized view), the outbox of unacknowledged changes, refusals and buffered track
//! points. Every command's write is one transaction, so a crash loses nothing it reported saved.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use automerge::{ActorId, AutoCommit, ChangeHash};
use gridsync_core::doc::{self, DocKind, hash_hex};
use gridsync_core::org::Org;
use gridsync_core::output::{
    DeviceState, InboxEntry, InboxKind, PendingDocument, RefusalRecord, SyncAttempt,
};
use gridsync_core::parties::materialize_parties;
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
    /// The last sync attempt, whatever its outcome.
    pub last_sync: Option<SyncAttempt>,
    #[serde(default)]
    pub last_success: Option<SyncAttempt>,
    #[serde(default)]
    pub last_failure: Option<SyncAttempt>,
    /// The server said the account is revoked: no new work, no sync; export is still possible.
    #[serde(default)]
    pub revoked: bool,
    /// The server's identity (from registration), to recognise it at a new address.
    #[serde(default)]
    pub server_id: String,
    /// What the last syncs measured of the link, to size the next pages and pushes.
    #[serde(default)]
    pub link: crate::sync::LinkEstimate,
    /// Server clock minus this device's clock, learnt at the last sync (ms).
    #[serde(default)]
    pub clock_offset_ms: i64,
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

/// One document as listed locally: its view.
#[derive(Debug, Clone)]
pub struct DocRow {
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

const MIGRATIONS: &[&str] = &[
    "
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
",
    "
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY, at INTEGER NOT NULL, kind TEXT NOT NULL, doc TEXT NOT NULL,
        title TEXT NOT NULL, by_user TEXT, detail TEXT NOT NULL, seen INTEGER NOT NULL DEFAULT 0);
",
    "
    CREATE TABLE server_times (
        doc TEXT NOT NULL, transition TEXT NOT NULL, at INTEGER NOT NULL,
        PRIMARY KEY (doc, transition)) WITHOUT ROWID;
",
];

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
            .with_context(|| crate::tr!("无法创建文件夹 {}", "cannot create the folder {}", dir.display()))?;
        // The home holds the device token and personal data: its owner's only.
        #[cfg(unix)]
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .with_context(|| crate::tr!("无法设置 {} 的权限", "cannot restrict {}", dir.display()))?;
        let path = dir.join("field.sqlite3");
        let mut conn = Connection::open(&path).with_context(|| {
            crate::tr!("打不开 {} 里的本机数据", "cannot open the local store in {}", dir.display())
        })?;
        // The store holds the device token and personal data: readable by its owner only.
        #[cfg(unix)]
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .with_context(|| crate::tr!("无法设置 {} 的权限", "cannot restrict {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a command that said "saved" survives a power cut, not only a crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(0);
        if version > MIGRATIONS.len() {
            bail!(
                "{}",
                crate::tr!(
                    "本机数据是更新版本的 field 写的；请升级 field",
                    "this local store was written by a newer version of field; update field"
                )
            );
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
            refuse_if_revoked(profile)?;
            let (mut d, kind) = load_in(tx, id, &profile.actor_id()?)?.ok_or_else(|| {
                anyhow!(crate::tr!("文档 {id} 不在本机", "document {id} is not on this device"))
            })?;
            let before = d.get_heads();
            let out = f(&mut d, profile)?;
            record_local(tx, id, kind, &mut d, &before)?;
            Ok(out)
        })
    }

    /// Stores a new document written here, with its changes in the outbox.
    #[cfg(test)]
    pub fn create(&mut self, id: &str, kind: DocKind, d: &mut AutoCommit) -> Result<()> {
        self.write(|tx, profile| {
            refuse_if_revoked(profile)?;
            record_local(tx, id, kind, d, &[])
        })
    }

    /// The stored view (JSON) of one document, if this device holds it.
    pub fn view_of(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT view FROM docs WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    }

    /// Documents of a kind, newest first.
    pub fn list(&self, kind: DocKind) -> Result<Vec<DocRow>> {
        let mut st = self.conn.prepare("SELECT view FROM docs WHERE kind = ?1 ORDER BY sort_key DESC, id")?;
        let rows = st.query_map([kind.as_str()], |r| Ok(DocRow { view: r.get(0)? }))?;
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
        let what_zh = match kind {
            DocKind::Report => "事件",
            DocKind::Patrol => "巡查",
            DocKind::Parties => "当事人",
        };
        if given.chars().count() < 4 {
            bail!(
                "{}",
                crate::tr!(
                    "{what_zh}编号至少要给 4 个字符（field {what} list 里的短编号就可以）",
                    "give at least 4 characters of the {what} id (the short id in 'field {what} list' works)"
                )
            );
        }
        if !given.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            bail!(
                "{}",
                crate::tr!("编号只含字母、数字和短横线", "an id has only letters, digits and dashes")
            );
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
            0 => bail!(
                "{}",
                crate::tr!(
                    "本机没有编号为 {given} 的{what_zh}；field {what} list 可以列出",
                    "no {what} with id {given} on this device; 'field {what} list' shows them"
                )
            ),
            1 => Ok(ids.into_iter().next().unwrap_or_default()),
            _ => bail!(
                "{}",
                crate::tr!(
                    "{given} 对应多份{what_zh}（{}）；请多给几位编号",
                    "{given} matches several {what}s ({}); give more of the id",
                    ids.join(", ")
                )
            ),
        }
    }

    /// When the server received a report (key `""`) and each of its transitions, as pages said.
    pub fn server_times(&self, doc: &str) -> Result<std::collections::BTreeMap<String, i64>> {
        let mut st = self.conn.prepare_cached("SELECT transition, at FROM server_times WHERE doc = ?1")?;
        let rows = st.query_map([doc], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Unsent work per document, oldest first.
    pub fn pending_documents(&self) -> Result<Vec<PendingDocument>> {
        let mut st = self.conn.prepare(
            "SELECT o.doc_id, o.kind, COUNT(*), d.view FROM outbox o LEFT JOIN docs d ON d.id = o.doc_id
             GROUP BY o.doc_id ORDER BY MIN(o.seq)",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (doc, kind, n, view) = row?;
            let kind = DocKind::parse(&kind).ok_or_else(|| anyhow!("the outbox is damaged"))?;
            let view: serde_json::Value =
                view.and_then(|v| serde_json::from_str(&v).ok()).unwrap_or(serde_json::Value::Null);
            let title = match kind {
                DocKind::Report => view["title"].as_str().unwrap_or_default().to_string(),
                DocKind::Patrol => view["started_at"]
                    .as_i64()
                    .map(|t| crate::tr!("{} 开始的巡查", "patrol started {}", crate::lang::when(t)))
                    .unwrap_or_default(),
                DocKind::Parties => crate::tr!("事件的当事人", "a report's parties"),
            };
            out.push(PendingDocument { doc, kind, title, changes: n as u64 });
        }
        Ok(out)
    }

    /// Everything `field status` shows.
    pub fn device_state(&self) -> Result<DeviceState> {
        let p = self.profile()?;
        let pending_track_points: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM pending_track", [], |r| r.get(0))?;
        let inbox_unread: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM inbox WHERE seen = 0", [], |r| r.get(0))?;
        Ok(DeviceState {
            user: p.whoami.user.clone(),
            name: p.whoami.name.clone(),
            role: p.whoami.role,
            server: p.server.clone(),
            device: p.device.clone(),
            pending_changes: self.outbox_len()?,
            pending_track_points: pending_track_points as u64,
            pending: self.pending_documents()?,
            last_attempt: p.last_sync.clone(),
            last_success: p.last_success.clone(),
            last_failure: p.last_failure.clone(),
            active_patrol: p.active_patrol.clone(),
            refused: self
                .refusals(None)?
                .into_iter()
                .map(|r| RefusalRecord {
                    doc: r.doc,
                    hash: r.hash,
                    code: r.code,
                    message: r.message,
                    at: r.at,
                })
                .collect(),
            revoked: p.revoked,
            inbox_unread: inbox_unread as u64,
        })
    }

    /// Inbox entries, newest first: only the unseen ones unless `all`; `limit`/`offset` page them.
    pub fn inbox(&self, all: bool, limit: usize, offset: usize) -> Result<Vec<InboxEntry>> {
        let mut st = self.conn.prepare(
            "SELECT id, at, kind, doc, title, by_user, detail, seen FROM inbox WHERE ?1 OR seen = 0
             ORDER BY id DESC LIMIT ?2 OFFSET ?3",
        )?;
        let rows = st.query_map(params![all, limit as i64, offset as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, bool>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, at, kind, doc, title, by, detail, seen) = row?;
            let kind: InboxKind = serde_json::from_value(serde_json::Value::String(kind))
                .map_err(|_| anyhow!("the inbox is damaged"))?;
            out.push(InboxEntry { id, at, kind, doc, title, by, detail, seen });
        }
        Ok(out)
    }

    /// Marks inbox entries as shown.
    pub fn mark_seen(&mut self, ids: &[i64]) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for id in ids {
            tx.execute("UPDATE inbox SET seen = 1 WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(())
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

/// New work on a revoked account's device could never be sent: say so before anything is written.
pub fn refuse_if_revoked(p: &Profile) -> Result<()> {
    if p.revoked {
        bail!(
            "{}",
            crate::tr!(
                "此账号已被管理员停用，本机不能再记录新工作。已有的未发送工作可用 field export --unsent 文件名 导出，交给管理员导入到新账号。",
                "this account was revoked by an administrator, so this device records no new work. Export the unsent work with field export --unsent FILE for your administrator to import under another account."
            )
        );
    }
    Ok(())
}

fn profile_in(conn: &Connection, dir: &Path) -> Result<Profile> {
    let json: Option<String> =
        conn.query_row("SELECT json FROM profile WHERE id = 1", [], |r| r.get(0)).optional()?;
    let json = json.ok_or_else(|| {
        anyhow!(crate::tr!(
            "这台设备还没有设置（数据目录：{}）。请运行：field init --server URL --token TOKEN",
            "this device is not set up yet (home: {}). Run: field init --server URL --token TOKEN",
            dir.display()
        ))
    })?;
    serde_json::from_str(&json).context(crate::tr!("本机保存的设置已损坏", "the stored profile is damaged"))
}

/// Loads a document for editing with this device's actor.
pub fn load_in(conn: &Connection, id: &str, actor: &ActorId) -> Result<Option<(AutoCommit, DocKind)>> {
    let row: Option<(Vec<u8>, String)> = conn
        .prepare_cached("SELECT bytes, kind FROM docs WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((bytes, kind)) = row else { return Ok(None) };
    let d = doc::load(&bytes, actor.clone()).map_err(|e| {
        anyhow!(crate::tr!("本机的文档 {id} 已损坏：{e}", "document {id} is damaged locally: {e}"))
    })?;
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

/// Adds an inbox entry (inside the caller's transaction) and returns it.
pub fn add_inbox(conn: &Connection, mut e: InboxEntry) -> Result<InboxEntry> {
    let kind = serde_json::to_value(e.kind)?;
    conn.execute(
        "INSERT INTO inbox (at, kind, doc, title, by_user, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![e.at, kind.as_str().unwrap_or_default(), e.doc, e.title, e.by, e.detail],
    )?;
    e.id = conn.last_insert_rowid();
    Ok(e)
}

pub fn save_profile_in(conn: &Connection, p: &Profile) -> Result<()> {
    let json = serde_json::to_string(p)?;
    conn.execute(
        "INSERT INTO profile (id, json) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET json = excluded.json",
        [json],
    )?;
    Ok(())
}

/// A document's view as stored: its JSON, the key lists sort by (creation time), and where the
/// document says it belongs.
pub struct Materialized {
    pub json: String,
    pub sort_key: i64,
    pub id: String,
    pub grid: String,
    pub town: String,
    /// Handling units an applied dispatch of the report named (empty for patrols).
    pub units: Vec<String>,
    /// For a parties document: the report it belongs to.
    pub report: Option<String>,
}

/// The view of a document.
pub fn materialize(kind: DocKind, d: &AutoCommit) -> Result<Materialized> {
    Ok(match kind {
        DocKind::Report => {
            let v: ReportView = materialize_report(d).map_err(|e| anyhow!("{e}"))?;
            Materialized {
                units: v.units_ever().into_iter().map(str::to_string).collect(),
                report: None,
                json: serde_json::to_string(&v)?,
                sort_key: v.created_at,
                id: v.id,
                grid: v.grid,
                town: v.town,
            }
        }
        DocKind::Patrol => {
            let v: PatrolView = materialize_patrol(d).map_err(|e| anyhow!("{e}"))?;
            Materialized {
                units: Vec::new(),
                report: None,
                json: serde_json::to_string(&v)?,
                sort_key: v.started_at,
                id: v.id,
                grid: v.grid,
                town: v.town,
            }
        }
        DocKind::Parties => {
            let v = materialize_parties(d).map_err(|e| anyhow!("{e}"))?;
            Materialized {
                units: Vec::new(),
                report: Some(v.report.clone()),
                json: serde_json::to_string(&v)?,
                sort_key: 0,
                id: v.id,
                grid: v.grid,
                town: v.town,
            }
        }
    })
}

/// Writes a document's bytes and view (inside the caller's transaction).
pub fn put_doc(conn: &Connection, id: &str, kind: DocKind, bytes: &[u8], m: &Materialized) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO docs (id, kind, bytes, view, sort_key) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(id) DO UPDATE SET bytes = excluded.bytes, view = excluded.view, sort_key = excluded.sort_key",
    )?
    .execute(params![id, kind.as_str(), bytes, m.json, m.sort_key])?;
    Ok(())
}

/// Writes a document and its view (inside the caller's transaction); returns the view's JSON.
pub fn store_doc(conn: &Connection, id: &str, kind: DocKind, d: &mut AutoCommit) -> Result<String> {
    let m = materialize(kind, d)?;
    put_doc(conn, id, kind, &d.save(), &m)?;
    Ok(m.json)
}
