//! `field sync` and the other calls to the server: one request per page, gzip both ways, retries
//! with backoff, and a response applied in one local transaction before the cursor moves.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use automerge::{AutoCommit, ChangeHash};
use base64::Engine;
use gridsync_core::doc::{self, DocKind};
use gridsync_core::output::{SyncAttempt, SyncFailure, SyncOutcome, SyncRefusal};
use gridsync_core::patrol::{PatrolEdit, TrackPoint, edit_patrol};
use gridsync_core::protocol::{Encoding, ErrorBody, Outcome, PushedChange, SyncRequest, SyncResponse};
use gridsync_core::report::{ReportView, add_note, materialize_report};
use rand::Rng;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::home::{
    Home, Materialized, Profile, add_inbox, load_in, materialize, put_doc, record_local, save_profile_in,
};
use crate::{lang, now_ms, tr};

/// Most changes sent in one request.
const PUSH_CHANGES: usize = 5_000;

/// Divides every duration of the link logic (target, deadlines) and multiplies the stall floor:
/// `GRIDSYNC_LINK_TIME_SCALE=10` makes a link ten times faster behave like the real one, so tests
/// can replay a 2G valley in a tenth of the time. 1 outside tests.
fn time_scale() -> f64 {
    static SCALE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *SCALE.get_or_init(|| {
        std::env::var("GRIDSYNC_LINK_TIME_SCALE")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 1.0)
            .unwrap_or(1.0)
    })
}

/// How long one request should take on the link as measured: long enough that latency is a small
/// share, short enough that a cut costs little and a page always lands on a 2G link.
const TARGET_SECS: f64 = 20.0;
/// The floor rate a request must keep up: below it, the request counts as stalled.
const STALL_FLOOR_BYTES_PER_SEC: u64 = 1_000;
/// What every request may take besides its bytes (connection set-up, the server's work).
const BASE_DEADLINE_SECS: u64 = 30;
/// Page budgets (decoded document bytes) and push sizes stay within these.
const MIN_PAGE_BYTES: u64 = 4 << 10;
const MAX_PAGE_BYTES: u64 = 4 << 20;
const MIN_PUSH_BYTES: u64 = 2 << 10;
const MAX_PUSH_BYTES: u64 = 2 << 20;

/// What the device knows of its link, kept between syncs: the rates it measured and the page and
/// push sizes that arrive in about [`TARGET_SECS`]. Starts pessimistic (a 2G valley) and grows.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct LinkEstimate {
    /// Wire bytes per second, server to device and device to server.
    pub down_rate: f64,
    pub up_rate: f64,
    /// Decoded bytes per wire byte (gzip and base64 together), for pages and pushes.
    pub down_ratio: f64,
    pub up_ratio: f64,
    /// The page budget to ask for and the push size to send next.
    pub page_bytes: u64,
    pub push_bytes: u64,
}

impl Default for LinkEstimate {
    fn default() -> Self {
        LinkEstimate {
            down_rate: 2_500.0,
            up_rate: 2_500.0,
            down_ratio: 1.5,
            up_ratio: 1.0,
            page_bytes: 64 << 10,
            push_bytes: 32 << 10,
        }
    }
}

impl LinkEstimate {
    /// Learns from a request that succeeded: `up`/`down` wire bytes, `raw_up`/`raw_down` decoded
    /// bytes, in `secs`. Sizes move toward what the link carries in [`TARGET_SECS`], at most
    /// doubling per request.
    fn learn(&mut self, up: u64, raw_up: u64, down: u64, raw_down: u64, secs: f64) {
        let secs = secs.max(0.05);
        let blend = |old: f64, new: f64| 0.5 * old + 0.5 * new;
        // Small transfers measure latency, not bandwidth: learn rates only from real loads.
        if down >= 8 << 10 {
            self.down_rate = blend(self.down_rate, down as f64 / secs);
        }
        if up >= 8 << 10 {
            self.up_rate = blend(self.up_rate, up as f64 / secs);
        }
        if down > 0 && raw_down > 0 {
            self.down_ratio = blend(self.down_ratio, raw_down as f64 / down as f64).clamp(0.5, 20.0);
        }
        if up > 0 && raw_up > 0 {
            self.up_ratio = blend(self.up_ratio, raw_up as f64 / up as f64).clamp(0.5, 20.0);
        }
        let target = TARGET_SECS / time_scale();
        let page = (self.down_rate * target * self.down_ratio) as u64;
        let push = (self.up_rate * target * self.up_ratio) as u64;
        self.page_bytes = page.min(self.page_bytes.saturating_mul(2)).clamp(MIN_PAGE_BYTES, MAX_PAGE_BYTES);
        self.push_bytes = push.min(self.push_bytes.saturating_mul(2)).clamp(MIN_PUSH_BYTES, MAX_PUSH_BYTES);
    }

    /// A request failed on the link: the next one is half as large.
    fn shrink(&mut self) {
        self.page_bytes = (self.page_bytes / 2).max(MIN_PAGE_BYTES);
        self.push_bytes = (self.push_bytes / 2).max(MIN_PUSH_BYTES);
        self.down_rate = (self.down_rate / 2.0).max(100.0);
        self.up_rate = (self.up_rate / 2.0).max(100.0);
    }

    /// How long a request of about `bytes` on the wire may take before it counts as stalled.
    fn deadline(bytes: u64) -> Duration {
        let secs = BASE_DEADLINE_SECS as f64 + bytes as f64 / STALL_FLOOR_BYTES_PER_SEC as f64;
        Duration::from_secs_f64(secs / time_scale())
    }
}

/// Most bytes an answer may inflate to: pages are budgeted far below this.
const MAX_ANSWER_BYTES: u64 = 256 << 20;

/// Why a call to the server failed, so callers can tell a person what to do.
#[derive(Debug, thiserror::Error)]
pub enum CallFailure {
    /// No answer after every retry: no signal, or the server is down.
    #[error("{message}")]
    Unreachable { message: String },
    /// The server kept answering with an error of its own (5xx, 429).
    #[error("{message}")]
    ServerTrouble { message: String },
    /// The server said no; trying again will not help.
    #[error("{message}")]
    Refused { status: u16, code: String, message: String },
}

impl CallFailure {
    /// The stable code `field sync --json` and `status` report.
    pub fn code(&self) -> &str {
        match self {
            CallFailure::Unreachable { .. } => "offline",
            CallFailure::ServerTrouble { .. } => "server_error",
            CallFailure::Refused { code, .. } if code == "revoked" => "revoked",
            CallFailure::Refused { code, .. } if code == "disk_full" => "server_disk_full",
            CallFailure::Refused { .. } => "refused",
        }
    }
}

/// A JSON-over-HTTP client for one server and token.
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
    retries: u32,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Where retries are reported while they wait (a spinner's line), else standard error.
    pub progress: Option<indicatif::ProgressBar>,
    /// The deadline of the next requests (default: the client's two minutes).
    pub deadline: Option<Duration>,
    /// Decoded bytes of the last request body and answer.
    pub raw_up: u64,
    pub raw_down: u64,
}

/// A failure worth retrying (network, 5xx) or not (the server said no).
enum CallError {
    Retry { why: String, server: bool },
    Final(CallFailure),
}

impl Client {
    pub fn new(base: &str, token: &str, retries: u32) -> Result<Client> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(120))
            // A link that resets connections gives nothing back to a pooled connection.
            .pool_max_idle_per_host(1)
            .gzip(false)
            .build()
            .context(tr!("无法初始化网络连接", "cannot set up the network client"))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            retries,
            bytes_up: 0,
            bytes_down: 0,
            progress: None,
            deadline: None,
            raw_up: 0,
            raw_down: 0,
        })
    }

    /// Says, while waiting, that a try failed and when the next one comes.
    fn tell_retry(&self, attempt: u32, max_tries: u32, why: &str, wait: Duration) {
        let line = tr!(
            "第 {n} 次连接失败（{why}），{secs} 秒后第 {next} 次重试（共 {max} 次）…",
            "try {n} failed ({why}); try {next} of {max} in {secs} s…",
            n = attempt + 1,
            next = attempt + 2,
            max = max_tries,
            secs = wait.as_secs_f64().ceil()
        );
        match &self.progress {
            Some(bar) => bar.set_message(line),
            None => eprintln!("{line}"),
        }
    }

    /// Sends a request (retrying network failures with exponential backoff and jitter).
    pub fn call<T: DeserializeOwned>(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let raw = body.map(serde_json::to_vec).transpose()?;
        let mut attempt = 0;
        loop {
            match self.once(method, path, raw.as_deref()) {
                Ok(bytes) => {
                    // An empty answer (204) reads as JSON null.
                    let bytes = if bytes.is_empty() { b"null".to_vec() } else { bytes };
                    return serde_json::from_slice(&bytes).with_context(|| {
                        tr!(
                            "看不懂服务器对 {path} 的回答",
                            "the server's answer to {path} was not understood"
                        )
                    });
                }
                Err(CallError::Final(e)) => return Err(e.into()),
                Err(CallError::Retry { why, server }) if attempt >= self.retries => {
                    let failure = if server {
                        CallFailure::ServerTrouble {
                            message: tr!(
                                "服务器 {} 暂时出错（{why}）",
                                "the server at {} is in trouble ({why})",
                                self.base
                            ),
                        }
                    } else {
                        CallFailure::Unreachable {
                            message: tr!(
                                "连不上服务器 {}（{why}）",
                                "could not reach the server at {} ({why})",
                                self.base
                            ),
                        }
                    };
                    return Err(failure.into());
                }
                Err(CallError::Retry { why, .. }) => {
                    let base = 500u64.saturating_mul(1 << attempt.min(5));
                    let jitter = rand::rng().random_range(0..=base / 2);
                    let wait = Duration::from_millis((base + jitter).min(10_000));
                    self.tell_retry(attempt, self.retries + 1, &why, wait);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
            }
        }
    }

    fn once(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>, CallError> {
        let local = |e: std::io::Error| CallError::Final(CallFailure::Unreachable { message: e.to_string() });
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(&url),
            _ => self.http.post(&url),
        }
        .bearer_auth(&self.token)
        .header("accept-encoding", "gzip");
        if let Some(d) = self.deadline {
            req = req.timeout(d);
        }
        self.raw_up = body.map_or(0, |b| b.len() as u64);
        if let Some(b) = body {
            req = req.header("content-type", "application/json");
            let sent = if b.len() > 1024 {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(b).map_err(local)?;
                req = req.header("content-encoding", "gzip");
                gz.finish().map_err(local)?
            } else {
                b.to_vec()
            };
            self.bytes_up += sent.len() as u64;
            req = req.body(sent);
        }
        let resp = req.send().map_err(|e| CallError::Retry { why: short_error(&e), server: false })?;
        let status = resp.status();
        let gzipped = resp
            .headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
        let wire = resp.bytes().map_err(|e| CallError::Retry { why: short_error(&e), server: false })?;
        self.bytes_down += wire.len() as u64;
        let bytes = if gzipped {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&wire[..])
                .take(MAX_ANSWER_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|_| CallError::Retry {
                    why: lang::pick("回答在途中损坏", "a damaged answer").into(),
                    server: false,
                })?;
            if out.len() as u64 > MAX_ANSWER_BYTES {
                // A page is a few MB at most: this is a bomb or a broken server, not data.
                return Err(CallError::Final(CallFailure::Refused {
                    status: status.as_u16(),
                    code: "answer_too_large".into(),
                    message: lang::pick(
                        "服务器的回答解压后过大，已拒收；请联系管理员",
                        "the server's answer inflates to too many bytes; refused; tell your administrator",
                    )
                    .into(),
                }));
            }
            out
        } else {
            wire.to_vec()
        };
        self.raw_down = bytes.len() as u64;
        if status.is_success() {
            return Ok(bytes);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => (e.code, e.message),
            Err(_) => (
                String::new(),
                lang::clean(&String::from_utf8_lossy(&bytes).chars().take(200).collect::<String>()),
            ),
        };
        if code == "disk_full" {
            // Not worth retrying in seconds: say it in words, with what is safe.
            return Err(CallError::Final(CallFailure::Refused {
                status: status.as_u16(),
                code,
                message: lang::pick(
                    "服务器磁盘已满：这次没有保存任何内容，你的工作仍保存在本机；请告诉管理员，稍后再运行 field sync",
                    "the server's disk is full: nothing was stored this time and your work stays saved on this device; tell your administrator and run field sync later",
                )
                .into(),
            }));
        }
        // Too slow a body (408) or too large a push (413) is the link's or the size's fault: the
        // sync loop halves the next request. A busy server (503) and a rate limit (429 but for a
        // quota) are worth a later try.
        if matches!(status.as_u16(), 408 | 413) {
            return Err(CallError::Retry {
                why: tr!("服务器回答 {status}", "the server answered {status}"),
                server: false,
            });
        }
        if code == "quota_exceeded" {
            return Err(CallError::Final(CallFailure::Refused {
                status: status.as_u16(),
                code,
                message: lang::pick(
                    "今天的次数已达上限（每天限额），请明天再试；你的工作仍保存在本机",
                    "today's limit is reached; try again tomorrow. Your work stays saved on this device",
                )
                .into(),
            }));
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(CallError::Retry {
                why: tr!("服务器回答 {status}", "the server answered {status}"),
                server: true,
            });
        }
        let words = match code.as_str() {
            "revoked" => lang::pick(
                "此账号已被管理员停用。未发送的工作仍在本机：请联系管理员，并用 field export --unsent 文件名 导出。",
                "this account was revoked by an administrator. Your unsent work stays on this device: ask your administrator, and export it with field export --unsent FILE.",
            )
            .to_string(),
            "unauthorized" => lang::pick(
                "服务器不认这台设备的令牌（可能已被注销或换了服务器），请联系管理员",
                "the server does not accept this device's token (revoked, or another server); ask your administrator",
            )
            .to_string(),
            _ => tr!("服务器拒绝了请求：{}", "the server refused: {}", lang::clean(&message)),
        };
        Err(CallError::Final(CallFailure::Refused { status: status.as_u16(), code, message: words }))
    }
}

fn short_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        lang::pick("连接超时", "the connection timed out").into()
    } else if e.is_connect() {
        lang::pick("没有连接", "no connection").into()
    } else {
        lang::pick("连接中断", "the connection broke").into()
    }
}

/// Turns buffered track points into compact chunks in their patrol documents (as local edits).
pub fn flush_track(home: &mut Home) -> Result<usize> {
    home.write(|tx, profile| {
        let mut st = tx.prepare("SELECT DISTINCT patrol_id FROM pending_track")?;
        let patrols: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let mut flushed = 0;
        for id in patrols {
            let mut st =
                tx.prepare("SELECT lat, lon, at FROM pending_track WHERE patrol_id = ?1 ORDER BY id")?;
            let points: Vec<TrackPoint> = st
                .query_map([&id], |r| Ok(TrackPoint { lat: r.get(0)?, lon: r.get(1)?, at: r.get(2)? }))?
                .collect::<Result<_, _>>()?;
            let Some((mut d, kind)) = load_in(tx, &id, &profile.actor_id()?)? else { continue };
            let before = d.get_heads();
            edit_patrol(&mut d, &crate::author(profile), &PatrolEdit::Track(points.clone()))
                .map_err(|e| anyhow!("{e}"))?;
            record_local(tx, &id, kind, &mut d, &before)?;
            tx.execute("DELETE FROM pending_track WHERE patrol_id = ?1", [&id])?;
            flushed += points.len();
        }
        Ok(flushed)
    })
}

/// Counts a Ctrl-C reads: what this sync has already stored for good.
static PAGES_STORED: AtomicU64 = AtomicU64::new(0);
static CHANGES_ACKED: AtomicU64 = AtomicU64::new(0);

/// On Ctrl-C, says what was saved and what was not, then stops. Every page is stored in one
/// transaction, so stopping between or inside them loses nothing already reported.
fn watch_interrupt(unsent_before: u64) {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT]) else { return };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let pages = PAGES_STORED.load(Ordering::SeqCst);
            let acked = CHANGES_ACKED.load(Ordering::SeqCst);
            let unsent = unsent_before.saturating_sub(acked);
            eprintln!(
                "\n{}",
                tr!(
                    "同步已中断。已完成的 {pages} 次往返都已保存，服务器已收到 {acked} 项修改；还有 {unsent} 项修改保存在本机，没有发送。下次运行 field sync 会接着做。",
                    "sync interrupted. The {pages} round trip(s) completed are saved, and the server has {acked} of your changes; {unsent} change(s) stay saved on this device, not sent. The next field sync carries on."
                )
            );
            std::process::exit(130);
        }
    });
}

/// Keeps what was learnt of the link for the next sync.
fn save_link(home: &mut Home, link: &LinkEstimate) -> Result<()> {
    home.write(|tx, p| save_profile_in(tx, &Profile { link: link.clone(), ..p.clone() }))
}

/// Holds the home's sync lock: two `field sync` on one home would send the same outbox twice.
fn sync_lock(home: &Home) -> Result<std::fs::File> {
    let path = home.dir.join("sync.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| tr!("无法创建 {}", "cannot create {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(CallFailure::Refused {
            status: 0,
            code: "busy".into(),
            message: tr!(
                "这台设备上已有一个 field sync 在运行；等它结束后再试",
                "another field sync is running on this device; wait for it to finish, then try again"
            ),
        }
        .into()),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).context(tr!("无法锁定 {}", "cannot lock {}", path.display()))
        }
    }
}

/// The stable code of a failed sync, for `--json` and `status`.
pub fn failure_code(e: &anyhow::Error) -> String {
    if let Some(f) = e.downcast_ref::<CallFailure>() {
        return match f {
            CallFailure::Refused { code, .. } if code == "busy" => "busy".into(),
            other => other.code().into(),
        };
    }
    if e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>().is_some_and(
            |s| matches!(s, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull),
        )
    }) {
        return "disk_full".into();
    }
    "local".into()
}

/// Pushes the outbox and pulls pages until the device is up to date. Returns what happened even
/// when it failed part way (pages stored before the failure stay stored).
pub fn sync(
    home: &mut Home,
    retries: u32,
    budget: Option<u64>,
    interactive: bool,
) -> (SyncOutcome, Result<()>) {
    let mut outcome = SyncOutcome::default();
    let result = sync_inner(home, retries, budget, interactive, &mut outcome);
    outcome.ok = result.is_ok();
    outcome.unsent = home.outbox_len().unwrap_or(0);
    if let Err(e) = &result {
        outcome.error = Some(SyncFailure { code: failure_code(e), message: format!("{e:#}") });
    }
    (outcome, result)
}

fn sync_inner(
    home: &mut Home,
    retries: u32,
    budget: Option<u64>,
    interactive: bool,
    outcome: &mut SyncOutcome,
) -> Result<()> {
    let _lock = sync_lock(home)?;
    flush_track(home)?;
    let profile = home.profile()?;
    if interactive {
        watch_interrupt(home.outbox_len()?);
    }
    // Retries are this loop's: after a failure the next request is smaller, not the same again.
    let mut client = Client::new(&profile.server, &profile.token, 0)?;
    let mut link = profile.link.clone();
    let mut clock_offset: Option<i64> = None;
    let mut cursor = profile.cursor;
    let mut sent: HashSet<String> = HashSet::new();
    client.progress = (interactive && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(200));
        b.set_message(lang::pick("正在同步…", "syncing…"));
        b
    });
    let result = (|| -> Result<()> {
        let mut failures = 0u32;
        loop {
            // While more of the outbox waits after this batch, push only (budget 0): the cursor
            // the server sees stays the one these changes were written against, so a transition
            // written offline is judged against what this device had been served, not against
            // what an earlier page of this same sync brought.
            let (hashes, changes, more_to_push) = outbox_batch(home, &sent, link.push_bytes)?;
            let page_bytes = if more_to_push { 0 } else { budget.unwrap_or(link.page_bytes) };
            let req = SyncRequest { cursor, changes, budget: Some(page_bytes) };
            let push_raw: u64 = req.changes.iter().map(|c| c.change.len() as u64).sum();
            // Expected wire bytes: the push after gzip, the page after gzip and base64.
            let expected =
                (push_raw as f64 / link.up_ratio) as u64 + (page_bytes as f64 / link.down_ratio) as u64;
            client.deadline = Some(LinkEstimate::deadline(expected));
            let (up0, down0) = (client.bytes_up, client.bytes_down);
            let started = std::time::Instant::now();
            let resp: SyncResponse = match client.call("POST", "/v1/sync", Some(&req)) {
                Ok(r) => r,
                Err(e)
                    if e.downcast_ref::<CallFailure>()
                        .is_some_and(|f| matches!(f.code(), "offline" | "server_error")) =>
                {
                    failures += 1;
                    if failures > retries {
                        save_link(home, &link)?;
                        return Err(e);
                    }
                    link.shrink();
                    let wait = Duration::from_millis(500u64.saturating_mul(1 << failures.min(4)).min(8_000));
                    client.tell_retry(failures - 1, retries + 1, &format!("{e}"), wait);
                    std::thread::sleep(wait);
                    continue;
                }
                Err(e) => return Err(e),
            };
            failures = 0;
            if resp.server_time > 0 {
                // The answer was written about half-way through the round trip.
                let half = started.elapsed().as_millis() as i64 / 2;
                clock_offset = Some(resp.server_time - (now_ms() - half));
            }
            link.learn(
                client.bytes_up - up0,
                client.raw_up,
                client.bytes_down - down0,
                client.raw_down,
                started.elapsed().as_secs_f64(),
            );
            outcome.round_trips += 1;
            outcome.pushed += hashes.len() as u64;
            sent.extend(hashes.iter().cloned());
            apply_response(home, &resp, &hashes, outcome)?;
            save_link(home, &link)?;
            cursor = resp.cursor;
            PAGES_STORED.fetch_add(1, Ordering::SeqCst);
            CHANGES_ACKED.store(outcome.accepted + outcome.duplicate + outcome.refused, Ordering::SeqCst);
            if let Some(b) = &client.progress {
                b.set_message(tr!(
                    "正在同步：已发送 {} 项，已收到 {} 份文档，{} 次往返",
                    "syncing: {} sent, {} documents received, {} round trips",
                    outcome.pushed,
                    outcome.pulled_documents,
                    outcome.round_trips
                ));
            }
            if !resp.has_more && next_outbox_batch(home, &sent, 1)?.0.is_empty() {
                return Ok(());
            }
        }
    })();
    if let Some(b) = client.progress.take() {
        b.finish_and_clear();
    }
    outcome.bytes_up = client.bytes_up;
    outcome.bytes_down = client.bytes_down;
    let attempt = SyncAttempt {
        at: now_ms(),
        ok: result.is_ok(),
        message: match &result {
            Ok(()) => tr!(
                "发送 {} 项（接收 {}，拒收 {}），收到 {} 份文档",
                "pushed {} (accepted {}, refused {}), pulled {} documents",
                outcome.pushed,
                outcome.accepted,
                outcome.refused,
                outcome.pulled_documents
            ),
            Err(e) => format!("{e:#}"),
        },
        code: result.as_ref().err().map(failure_code),
    };
    let revoked = attempt.code.as_deref() == Some("revoked");
    home.write(|tx, p| {
        let mut p = p.clone();
        if let Some(o) = clock_offset {
            p.clock_offset_ms = o;
        }
        if attempt.ok {
            p.last_success = Some(attempt.clone());
        } else {
            p.last_failure = Some(attempt.clone());
        }
        p.last_sync = Some(attempt);
        p.revoked |= revoked;
        save_profile_in(tx, &p)
    })?;
    match result {
        Err(e) if e.downcast_ref::<CallFailure>().is_some_and(|f| f.code() == "offline") => {
            Err(e.context(tr!(
                "你的工作已保存在本机；有信号时再运行 field sync",
                "your work is saved on this device; run field sync again when there is signal"
            )))
        }
        Err(e) if failure_code(&e) == "disk_full" => Err(e.context(tr!(
            "本机磁盘已满：请清理空间后再运行 field sync（已保存的工作不受影响）",
            "this device's disk is full: free some space, then run field sync again (saved work is safe)"
        ))),
        other => other,
    }
}

/// The next outbox changes not yet sent in this run, oldest first.
fn next_outbox_batch(
    home: &Home,
    sent: &HashSet<String>,
    max_bytes: u64,
) -> Result<(Vec<String>, Vec<PushedChange>)> {
    let (hashes, changes, _) = outbox_batch(home, sent, max_bytes)?;
    Ok((hashes, changes))
}

/// The next outbox batch, and whether unsent changes remain after it.
fn outbox_batch(
    home: &Home,
    sent: &HashSet<String>,
    max_bytes: u64,
) -> Result<(Vec<String>, Vec<PushedChange>, bool)> {
    let mut st = home.conn.prepare_cached("SELECT hash, doc_id, kind, bytes FROM outbox ORDER BY seq")?;
    let mut rows = st.query([])?;
    let (mut hashes, mut changes, mut bytes) = (Vec::new(), Vec::new(), 0usize);
    let b64 = base64::engine::general_purpose::STANDARD;
    while let Some(r) = rows.next()? {
        let hash: String = r.get(0)?;
        if sent.contains(&hash) {
            continue;
        }
        // A full batch: this unsent change is for the next one.
        if changes.len() >= PUSH_CHANGES {
            return Ok((hashes, changes, true));
        }
        let kind: String = r.get(2)?;
        let raw: Vec<u8> = r.get(3)?;
        // Always at least one change, so even the smallest push makes progress.
        if !changes.is_empty() && (bytes + raw.len()) as u64 > max_bytes {
            return Ok((hashes, changes, true));
        }
        bytes += raw.len();
        changes.push(PushedChange {
            doc: r.get(1)?,
            kind: DocKind::parse(&kind).ok_or_else(|| anyhow!("the outbox is damaged"))?,
            change: b64.encode(raw),
        });
        hashes.push(hash);
    }
    Ok((hashes, changes, false))
}

/// Applies one response in one transaction: acknowledgements, refusals, documents, then the cursor.
fn apply_response(
    home: &mut Home,
    resp: &SyncResponse,
    sent: &[String],
    summary: &mut SyncOutcome,
) -> Result<()> {
    if resp.verdicts.len() != sent.len() {
        bail!(tr!(
            "服务器对 {} 项修改给出了 {} 个结果；请再同步一次",
            "the server answered {} verdicts for {} changes; try again",
            sent.len(),
            resp.verdicts.len()
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let now = now_ms();
    home.write(|tx, profile| {
        let actor = profile.actor_id()?;
        // Documents holding a refused change are rebuilt without it and what was built on it: the
        // server will never accept those, and later edits must not depend on them.
        let mut refused_by_doc: BTreeMap<String, HashSet<ChangeHash>> = BTreeMap::new();
        for (v, hash) in resp.verdicts.iter().zip(sent) {
            if matches!(v.outcome, Outcome::Forbidden | Outcome::Malformed)
                && !retry_later(v)
                && let Some(h) = doc::parse_hash(hash)
            {
                refused_by_doc.entry(v.doc.clone().unwrap_or_default()).or_default().insert(h);
            }
        }
        // The new state of each touched document; `None`: nothing of it survives (its creation
        // was refused), so it goes.
        let mut docs: BTreeMap<String, Option<Pending>> = BTreeMap::new();
        let mut dependents: Vec<(String, ChangeHash)> = Vec::new();
        let mut replayed: Vec<(String, DocKind, automerge::Change)> = Vec::new();
        for (doc_id, bad) in &refused_by_doc {
            let Some((d, kind)) = load_in(tx, doc_id, &actor)? else { continue };
            let before = (kind == DocKind::Report).then(|| materialize_report(&d).ok()).flatten();
            let (mut rebuilt, dropped) = without(d, bad, &actor)?;
            dependents.extend(dropped.into_iter().map(|h| (doc_id.clone(), h)));
            if rebuilt.get_heads().is_empty() {
                docs.insert(doc_id.clone(), None);
                continue;
            }
            // Notes are never lost: the ones set aside with a refused edit are written again on
            // top of what the server holds (notes may be added whatever the report's state).
            if let Some(before) = before {
                let kept = materialize_report(&rebuilt).map_err(|e| anyhow!("{e}"))?.notes;
                let heads = rebuilt.get_heads();
                for n in before.notes.iter().filter(|n| n.author == profile.whoami.user && !kept.contains(n)) {
                    let author = doc::Author { user: n.author.clone(), role: n.role, at: n.at };
                    add_note(&mut rebuilt, &author, &n.text).map_err(|e| anyhow!("{e}"))?;
                    summary.notes_rewritten += 1;
                }
                replayed.extend(rebuilt.get_changes(&heads).into_iter().map(|c| (doc_id.clone(), kind, c)));
            }
            docs.insert(doc_id.clone(), Some(Pending::Doc(Box::new(rebuilt), kind)));
        }
        for u in &resp.docs {
            let bytes = b64.decode(&u.data).context("the server sent a damaged document")?;
            let local = match docs.remove(&u.doc) {
                Some(Some(Pending::Doc(d, kind))) => Some((*d, kind)),
                Some(Some(Pending::Snapshot(earlier, kind))) => {
                    // The same document twice in one page: merge into what came first.
                    let d = doc::load(&earlier, actor.clone()).map_err(|e| anyhow!("document {}: {e}", u.doc))?;
                    Some((d, kind))
                }
                Some(None) | None => load_in(tx, &u.doc, &actor)?,
            };
            let pending = match local {
                Some((mut d, kind)) => {
                    doc::load_incremental(&mut d, &bytes).map_err(|e| anyhow!("document {}: {e}", u.doc))?;
                    Pending::Doc(Box::new(d), kind)
                }
                None if u.encoding == Encoding::Changes => bail!(
                    "the server sent changes for a document this device does not have; run field sync again"
                ),
                // New here: loaded, checked and stored as received, on every core at once, below.
                None => Pending::Snapshot(bytes, u.kind),
            };
            summary.pulled_documents += 1;
            docs.insert(u.doc.clone(), Some(pending));
            let mut times = tx.prepare_cached(
                "INSERT OR REPLACE INTO server_times (doc, transition, at) VALUES (?1, ?2, ?3)",
            )?;
            if let Some(at) = u.received_at {
                times.execute(params![u.doc, "", at])?;
            }
            for (t, at) in &u.transitions_received {
                times.execute(params![u.doc, t, at])?;
            }
        }
        for (v, hash) in resp.verdicts.iter().zip(sent) {
            match v.outcome {
                Outcome::Accepted => summary.accepted += 1,
                Outcome::Duplicate => summary.duplicate += 1,
                Outcome::MissingDeps => {
                    summary.waiting += 1;
                    continue;
                }
                // Refused for today only: the change stays in the outbox for a later sync.
                _ if retry_later(v) => {
                    summary.waiting += 1;
                    continue;
                }
                Outcome::Forbidden | Outcome::Malformed => {
                    summary.refused += 1;
                    let code = v.code.clone().unwrap_or_else(|| "refused".into());
                    let message = v.message.clone().unwrap_or_default();
                    let doc_id = v.doc.clone().unwrap_or_default();
                    tx.execute(
                        "INSERT OR REPLACE INTO refusals (hash, doc_id, code, message, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![hash, doc_id, code, message, now],
                    )?;
                    summary.refusals.push(SyncRefusal { doc: doc_id, code, message });
                }
            }
            tx.prepare_cached("DELETE FROM outbox WHERE hash = ?1")?.execute([hash])?;
        }
        for (doc_id, h) in &dependents {
            let hash = doc::hash_hex(h);
            let message = "built on an edit the server refused; it was set aside too";
            tx.execute(
                "INSERT OR REPLACE INTO refusals (hash, doc_id, code, message, at) VALUES (?1, ?2, 'depends_on_refused', ?3, ?4)",
                params![hash, doc_id, message, now],
            )?;
            if tx.execute("DELETE FROM outbox WHERE hash = ?1", [&hash])? > 0 {
                summary.refused += 1;
                summary.refusals.push(SyncRefusal {
                    doc: doc_id.clone(),
                    code: "depends_on_refused".into(),
                    message: message.into(),
                });
            }
        }
        for (doc_id, kind, c) in &replayed {
            tx.execute(
                "INSERT OR IGNORE INTO outbox (hash, doc_id, kind, bytes) VALUES (?1, ?2, ?3, ?4)",
                params![doc::hash_hex(&c.hash()), doc_id, kind.as_str(), c.raw_bytes()],
            )?;
        }
        let mut active_patrol_removed = false;
        // The first sync of a device fills it; news starts after that.
        let news = profile.last_success.is_some();
        let (kept, gone): (Vec<_>, Vec<_>) = docs.into_iter().partition(|(_, state)| state.is_some());
        let pending: Vec<(String, Pending)> = kept.into_iter().filter_map(|(id, s)| Some((id, s?))).collect();
        for stored in materialize_all(pending, &actor)? {
            let (id, kind, bytes, m) = stored?;
            // A unit receives a report's parties only with the report dispatched to it (stored
            // earlier in this page or before).
            let report_units = match &m.report {
                Some(r) if profile.whoami.scope.unit().is_some() => tx
                    .query_row("SELECT view FROM docs WHERE id = ?1", [r], |r| r.get::<_, String>(0))
                    .optional()?
                    .and_then(|v| serde_json::from_str::<ReportView>(&v).ok())
                    .map(|v| v.units_ever().into_iter().map(str::to_string).collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            check_received(&profile.whoami.scope, &id, &m, &report_units)?;
            let old: Option<ReportView> = if news && kind == DocKind::Report {
                tx.query_row("SELECT view FROM docs WHERE id = ?1", [&id], |r| r.get::<_, String>(0))
                    .optional()?
                    .and_then(|v| serde_json::from_str(&v).ok())
            } else {
                None
            };
            put_doc(tx, &id, kind, &bytes, &m)?;
            if news && kind == DocKind::Report {
                let new: ReportView = serde_json::from_str(&m.json)?;
                for e in crate::inbox::entries(&profile.whoami, old.as_ref(), &new, now) {
                    summary.inbox.push(add_inbox(tx, e)?);
                }
            }
        }
        for (id, state) in gone {
            match state {
                Some(_) => {}
                None => {
                    // Nothing of it exists anywhere else: keep its text in the refusal so it can be
                    // filed again, then remove it and anything waiting on it.
                    let view: Option<String> = tx
                        .query_row("SELECT view FROM docs WHERE id = ?1", [&id], |r| r.get(0))
                        .optional()?;
                    let text = view
                        .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
                        .map(|v| {
                            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                            format!("{} {}", field("title"), field("description")).trim().to_string()
                        })
                        .unwrap_or_default();
                    tx.execute(
                        "INSERT OR REPLACE INTO refusals (hash, doc_id, code, message, at) VALUES (?1, ?1, 'removed', ?2, ?3)",
                        params![id, format!("removed from this device, as the server refused it: {text}"), now],
                    )?;
                    tx.execute("DELETE FROM docs WHERE id = ?1", [&id])?;
                    tx.execute("DELETE FROM outbox WHERE doc_id = ?1", [&id])?;
                    tx.execute("DELETE FROM pending_track WHERE patrol_id = ?1", [&id])?;
                    if profile.active_patrol.as_deref() == Some(id.as_str()) {
                        active_patrol_removed = true;
                    }
                }
            }
        }
        let active_patrol = if active_patrol_removed { None } else { profile.active_patrol.clone() };
        save_profile_in(tx, &Profile { cursor: resp.cursor, active_patrol, ..profile.clone() })?;
        Ok(())
    })?;
    Ok(())
}

/// A refusal that passes with time (a daily quota): keep the change and send it again later.
fn retry_later(v: &gridsync_core::protocol::Verdict) -> bool {
    v.code.as_deref() == Some("quota_exceeded")
}

/// A document as it came in a page, before it is stored.
enum Pending {
    /// Merged into (or rebuilt from) this device's copy.
    Doc(Box<AutoCommit>, DocKind),
    /// New to this device: the server's snapshot, stored as received once it loads.
    Snapshot(Vec<u8>, DocKind),
}

/// One document ready to store: id, kind, bytes, view.
type Stored = (String, DocKind, Vec<u8>, Materialized);

/// Loads, materializes and saves the documents of a page on every core: the page's cost is
/// mostly building views, and each document's is independent of the others'.
fn materialize_all(
    pending: Vec<(String, Pending)>,
    actor: &automerge::ActorId,
) -> Result<Vec<Result<Stored>>> {
    let work = |(id, p): (String, Pending)| -> Result<Stored> {
        match p {
            Pending::Doc(mut d, kind) => {
                let m = materialize(kind, &d)?;
                Ok((id, kind, d.save(), m))
            }
            Pending::Snapshot(bytes, kind) => {
                let d = doc::load(&bytes, actor.clone()).map_err(|e| anyhow!("document {id}: {e}"))?;
                let m = materialize(kind, &d)?;
                Ok((id, kind, bytes, m))
            }
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    if threads == 1 || pending.len() < 8 {
        return Ok(pending.into_iter().map(work).collect());
    }
    let per = pending.len().div_ceil(threads);
    let mut chunks: Vec<Vec<(String, Pending)>> = Vec::new();
    let mut rest = pending.into_iter().peekable();
    while rest.peek().is_some() {
        chunks.push(rest.by_ref().take(per).collect());
    }
    let out = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| scope.spawn(move || c.into_iter().map(work).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    let mut all = Vec::new();
    for part in out {
        all.extend(part.map_err(|_| anyhow!("a document could not be read; run field sync again"))?);
    }
    Ok(all)
}

/// A device does not take the server's word for where a document belongs: a document whose own
/// id is not the one it came under, or whose grid is outside this device's scope, stops the page
/// before anything of it is stored.
fn check_received(
    scope: &gridsync_core::org::Scope,
    id: &str,
    m: &Materialized,
    report_units: &[String],
) -> Result<()> {
    if m.id != id {
        bail!(tr!(
            "服务器发来的文档 {id} 内容与编号不符，已拒收（本页没有保存）；请联系管理员",
            "the server sent document {id} whose content names another id; refused (nothing of the page stored); tell your administrator"
        ));
    }
    let dispatched_to_me = scope.unit().is_some_and(|u| m.units.iter().chain(report_units).any(|x| x == u));
    if !scope.covers(&m.grid, &m.town) && !dispatched_to_me {
        bail!(tr!(
            "服务器发来了不在你管辖范围内的文档 {id}，已拒收（本页没有保存）；请联系管理员",
            "the server sent document {id}, outside your scope; refused (nothing of the page stored); tell your administrator"
        ));
    }
    Ok(())
}

/// Rebuilds `d` without the changes in `bad` and every change built on them. Returns the new
/// document and the hashes of the dependents it also left out.
fn without(
    mut d: AutoCommit,
    bad: &HashSet<ChangeHash>,
    actor: &automerge::ActorId,
) -> Result<(AutoCommit, Vec<ChangeHash>)> {
    let mut dropped: HashSet<ChangeHash> = bad.clone();
    let mut keep = Vec::new();
    let mut dependents = Vec::new();
    // Automerge lists changes in causal order, so a dependent always comes after what it builds on.
    for c in d.get_changes(&[]) {
        let h = c.hash();
        if dropped.contains(&h) {
            continue;
        }
        if c.deps().iter().any(|dep| dropped.contains(dep)) {
            dropped.insert(h);
            dependents.push(h);
        } else {
            keep.push(c);
        }
    }
    let rebuilt = doc::apply_changes_owned(AutoCommit::new().with_actor(actor.clone()), keep)
        .map_err(|e| anyhow!("could not set a refused edit aside: {e}"))?;
    Ok((rebuilt, dependents))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridsync_core::org::{Role, Scope, demo_county};
    use gridsync_core::protocol::{Verdict, WhoAmI};
    use gridsync_core::report::{Category, Location, NewReport, Urgency, create_report};

    fn home_with_profile() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).unwrap();
        let org = demo_county(1);
        let profile = Profile {
            server: "http://127.0.0.1:9".into(),
            device: "d".into(),
            token: "t".into(),
            actor: hex::encode([7u8; 16]),
            whoami: WhoAmI {
                user: "worker".into(),
                name: "王芳".into(),
                role: Role::GridWorker,
                scope: Scope::Grids(vec![org.grids[0].id.clone()]),
                device: None,
            },
            org,
            cursor: 0,
            last_sync: None,
            last_success: None,
            last_failure: None,
            revoked: false,
            server_id: String::new(),
            link: Default::default(),
            clock_offset_ms: 0,
            active_patrol: None,
            policy: Default::default(),
        };
        home.save_profile(&profile).unwrap();
        (dir, home)
    }

    fn refused(doc: &str, hash: &str) -> Verdict {
        Verdict {
            outcome: Outcome::Forbidden,
            doc: Some(doc.into()),
            hash: Some(hash.into()),
            code: Some("unknown_grid".into()),
            message: Some("grid G is not in the organisation".into()),
            missing: vec![],
        }
    }

    #[test]
    fn a_refused_creation_removes_the_document_and_everything_built_on_it() {
        let (_dir, mut home) = home_with_profile();
        let p = home.profile().unwrap();
        let id = uuid::Uuid::from_u128(5);
        let new = NewReport {
            anonymous: false,
            id,
            grid: p.org.grids[0].id.clone(),
            town: p.org.grids[0].town.clone(),
            category: Category::Other,
            title: "垃圾清运".into(),
            description: String::new(),
            urgency: Urgency::Normal,
            location: Location::default(),
            parties: vec![],
        };
        let mut d = create_report(p.actor_id().unwrap(), &crate::author(&p), &new).unwrap();
        home.create(&id.to_string(), DocKind::Report, &mut d).unwrap();
        home.edit(&id.to_string(), |d, p| {
            add_note(d, &crate::author(p), "on top").map_err(|e| anyhow!("{e}"))?;
            Ok(())
        })
        .unwrap();
        let (sent, _) = next_outbox_batch(&home, &HashSet::new(), u64::MAX).unwrap();
        assert_eq!(sent.len(), 2);
        let resp = SyncResponse {
            verdicts: vec![
                refused(&id.to_string(), &sent[0]),
                Verdict {
                    outcome: Outcome::MissingDeps,
                    code: None,
                    message: None,
                    ..refused(&id.to_string(), &sent[1])
                },
            ],
            docs: vec![],
            cursor: 3,
            has_more: false,
            server_time: 0,
        };
        // Only the creation is refused; the note on top can never land either.
        let mut summary = SyncOutcome::default();
        apply_response(&mut home, &resp, &sent, &mut summary).unwrap();
        assert_eq!(home.outbox_len().unwrap(), 0);
        assert!(home.list(DocKind::Report).unwrap().is_empty(), "nothing of the document survives");
        let refusals = home.refusals(Some(&id.to_string())).unwrap();
        assert_eq!(refusals.len(), 3, "the creation, the note on it, and the removal");
        let removed = refusals.iter().find(|r| r.code == "removed").unwrap();
        assert!(removed.message.contains("垃圾清运"), "its text is kept: {}", removed.message);
        assert_eq!(home.profile().unwrap().cursor, 3);
        // And the next sync has nothing stuck to send.
        assert!(next_outbox_batch(&home, &HashSet::new(), u64::MAX).unwrap().0.is_empty());
    }

    #[test]
    fn a_document_outside_the_scope_or_under_another_id_is_not_stored() {
        let (_dir, mut home) = home_with_profile();
        let p = home.profile().unwrap();
        let other = p.org.grids.iter().find(|g| g.id != p.org.grids[0].id).unwrap().clone();
        let id = uuid::Uuid::from_u128(9);
        let new = NewReport {
            anonymous: false,
            id,
            grid: other.id.clone(),
            town: other.town.clone(),
            category: Category::Other,
            title: "别的网格".into(),
            description: String::new(),
            urgency: Urgency::Normal,
            location: Location::default(),
            parties: vec![],
        };
        let author =
            doc::Author { user: "someone".into(), role: gridsync_core::org::Role::GridWorker, at: 1 };
        let mut d = create_report(automerge::ActorId::from([3u8; 16]), &author, &new).unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(d.save());
        let page = |doc: &str| SyncResponse {
            verdicts: vec![],
            docs: vec![gridsync_core::protocol::DocUpdate {
                doc: doc.into(),
                kind: DocKind::Report,
                encoding: Encoding::Snapshot,
                data: data.clone(),
                received_at: None,
                transitions_received: Default::default(),
            }],
            cursor: 5,
            has_more: false,
            server_time: 0,
        };
        let err =
            apply_response(&mut home, &page(&id.to_string()), &[], &mut SyncOutcome::default()).unwrap_err();
        assert!(
            err.to_string().contains("outside your scope") || err.to_string().contains("管辖范围"),
            "{err}"
        );
        let err =
            apply_response(&mut home, &page("another-id"), &[], &mut SyncOutcome::default()).unwrap_err();
        assert!(err.to_string().contains("another-id"), "{err}");
        assert!(home.list(DocKind::Report).unwrap().is_empty(), "nothing stored");
        assert_eq!(home.profile().unwrap().cursor, 0, "the cursor did not move");
    }

    #[test]
    fn a_refused_patrol_start_frees_the_device_to_start_another() {
        use gridsync_core::patrol::start_patrol;
        let (_dir, mut home) = home_with_profile();
        let p = home.profile().unwrap();
        let id = uuid::Uuid::from_u128(6).to_string();
        let grid = p.org.grids[0].clone();
        home.write(|tx, p| {
            let mut d = start_patrol(
                p.actor_id()?,
                &crate::author(p),
                uuid::Uuid::from_u128(6),
                &grid.id,
                &grid.town,
                &[],
            )
            .map_err(|e| anyhow!("{e}"))?;
            record_local(tx, &id, DocKind::Patrol, &mut d, &[])?;
            tx.execute(
                "INSERT INTO pending_track (patrol_id, lat, lon, at) VALUES (?1, 30.0, 114.0, 0)",
                [&id],
            )?;
            save_profile_in(tx, &Profile { active_patrol: Some(id.clone()), ..p.clone() })
        })
        .unwrap();
        let (sent, _) = next_outbox_batch(&home, &HashSet::new(), u64::MAX).unwrap();
        let resp = SyncResponse {
            verdicts: vec![refused(&id, &sent[0])],
            docs: vec![],
            cursor: 1,
            has_more: false,
            server_time: 0,
        };
        apply_response(&mut home, &resp, &sent, &mut SyncOutcome::default()).unwrap();
        assert_eq!(home.profile().unwrap().active_patrol, None);
        assert!(home.list(DocKind::Patrol).unwrap().is_empty());
        let waiting: i64 =
            home.conn.query_row("SELECT COUNT(*) FROM pending_track", [], |r| r.get(0)).unwrap();
        assert_eq!(waiting, 0);
    }
}
