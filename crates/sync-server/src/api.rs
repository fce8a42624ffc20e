//! The HTTP API: routes, authentication, the JSON error type, and the handlers.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use std::collections::BTreeMap;

use gridsync_core::doc::DocKind;
use gridsync_core::indicators;
use gridsync_core::lifecycle::{Level, Status};
use gridsync_core::org::{Org, Role, Scope};
use gridsync_core::protocol::{
    Claim, DeviceRegistered, DeviceRegistration, DocUpdate, Encoding, ErrorBody, NewUser, Outcome,
    PROTOCOL_VERSION, QueueEntry, ServerInfo, SyncRequest, SyncResponse, Verdict, WhoAmI,
};
use gridsync_core::report::ReportView;
use serde::Deserialize;

use crate::AppState;
use crate::quota;
use crate::store::{DeviceRecord, Page, StoreError, UserRecord, WorkRow};
use crate::tokens;

/// An error answer: a status and `{ code, message }`. Internal details are logged, never sent.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{context}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the server had a problem; try again later")
    }
}

/// What a device is told when the server's disk is full: the words "disk full", and that its
/// work is safe where it is.
pub const DISK_FULL_MESSAGE: &str = "the server's disk is full: nothing from this request was stored, and your work stays on your device; try again later";

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e.classify() {
            StoreError::DiskFull(why) => {
                tracing::error!(%why, "disk full");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "disk_full", DISK_FULL_MESSAGE)
            }
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            other => ApiError::internal("storage failed", other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { code: self.code.to_string(), message: self.message })).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Most changes one sync may push; a device with more sends several requests.
pub const MAX_CHANGES_PER_SYNC: usize = 20_000;
/// Response data budget when the device does not ask for one, and the most it may ask for.
pub const DEFAULT_PAGE_BYTES: u64 = 1 << 20;
pub const MAX_PAGE_BYTES: u64 = 8 << 20;
/// Most documents considered for one page.
pub const MAX_PAGE_DOCS: usize = 2_000;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .route("/v1/server", get(server_info))
        .route("/v1/devices", post(register_device))
        .route("/v1/whoami", get(whoami))
        .route("/v1/sync", post(sync))
        .route("/v1/admin/devices", get(admin_devices))
        .route("/v1/admin/documents", get(admin_documents))
        .route("/v1/admin/users", get(admin_users).post(admin_add_user))
        .route("/v1/admin/users/{id}/revoke", post(admin_revoke_user))
        .route("/v1/admin/stats", get(admin_stats))
        .route("/v1/queue", get(queue))
        .route("/v1/queue/{doc}/claim", post(claim))
        .route("/v1/queue/{doc}/release", post(release))
}

/// Readiness, apart from liveness (`/healthz`): 200 only when a write can land now (free disk,
/// the database lockable for writing); 503 `disk_full` or `unavailable` otherwise, so a load
/// balancer stops sending pushes to a server that would fail them.
async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.ready()).await {
        Ok(Ok(())) => "ready\n".into_response(),
        Ok(Err(e)) => match e.classify() {
            StoreError::DiskFull(why) => {
                tracing::warn!(%why, "not ready");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "disk_full", "the server's disk is full")
                    .into_response()
            }
            other => {
                tracing::warn!(error = %other, "not ready");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database cannot take writes now",
                )
                .into_response()
            }
        },
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "readiness check failed")
            .into_response(),
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send your token as 'Authorization: Bearer TOKEN'",
            )
        })
}

fn unknown_token() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "this token is not known to the server")
}

/// What a revoked user's device is told, on every authenticated route.
pub const REVOKED_MESSAGE: &str = "this account was revoked by an administrator; your unsent work stays on this device: ask your administrator, and export it with field export --unsent FILE";

fn revoked() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "revoked", REVOKED_MESSAGE)
}

/// Refuses a revoked user's device, counting the attempt against the device (for the admin's
/// device list) before answering 403 `revoked`.
async fn refuse_revoked_device(s: &Arc<AppState>, device: String) -> ApiError {
    let at = s.clock.now_ms();
    tracing::info!(device = %device, "a revoked user's device was refused");
    if let Err(e) = blocking(s, move |s| Ok(s.store.record_refused_attempt(&device, at)?)).await {
        tracing::warn!(error = ?e, "recording a refused attempt failed");
    }
    revoked()
}

/// Runs a blocking store call off the async threads.
async fn blocking<T: Send + 'static>(
    s: &Arc<AppState>,
    f: impl FnOnce(&AppState) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| ApiError::internal("a blocking task failed", e))?
}

async fn device_auth(s: &Arc<AppState>, headers: &HeaderMap) -> ApiResult<DeviceRecord> {
    let hash = tokens::hash(bearer(headers)?);
    let d = blocking(s, move |s| Ok(s.store.device_by_token(&hash)?)).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this is not a device token; run 'field init' to register the device",
        )
    })?;
    if d.user.revoked {
        return Err(refuse_revoked_device(s, d.id).await);
    }
    Ok(d)
}

/// A user token, or a device token standing for its user.
async fn user_auth(s: &Arc<AppState>, headers: &HeaderMap) -> ApiResult<(UserRecord, Option<String>)> {
    let hash = tokens::hash(bearer(headers)?);
    let found = blocking(s, move |s| {
        if let Some(u) = s.store.user_by_token(&hash)? {
            return Ok(Some((u, None)));
        }
        Ok(s.store.device_by_token(&hash)?.map(|d| (d.user, Some(d.id))))
    })
    .await?
    .ok_or_else(unknown_token)?;
    if found.0.revoked {
        return Err(match found.1 {
            Some(device) => refuse_revoked_device(s, device).await,
            None => revoked(),
        });
    }
    Ok(found)
}

async fn admin_auth(s: &Arc<AppState>, headers: &HeaderMap) -> ApiResult<UserRecord> {
    let (u, _) = user_auth(s, headers).await?;
    if u.role != Role::Admin {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only an admin can do this"));
    }
    Ok(u)
}

/// Reads a body of a route other than sync (small), after the caller is authenticated.
async fn small_body(s: &AppState, body: Body) -> ApiResult<crate::transport::BodyBytes> {
    crate::transport::read_body(&s.intake, body, s.intake.limits().small_body_bytes).await
}

/// A body must be declared JSON (`content-type: application/json`, parameters allowed): anything
/// else is answered 415 before the body is read.
fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    let declared = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = declared.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as JSON, with content-type: application/json",
    ))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("the request body is not valid: {e}")))
}

/// The part of the organisation a scope covers.
pub fn org_for_scope(org: &Org, scope: &Scope) -> Org {
    let grids: Vec<_> = org.grids.iter().filter(|g| scope.covers(&g.id, &g.town)).cloned().collect();
    let villages = org.villages.iter().filter(|v| grids.iter().any(|g| g.village == v.id)).cloned().collect();
    let towns: Vec<_> = org.towns.iter().filter(|t| grids.iter().any(|g| g.town == t.id)).cloned().collect();
    let units = org
        .units
        .iter()
        .filter(|u| {
            u.town.as_ref().is_none_or(|t| towns.iter().any(|x: &gridsync_core::org::Town| &x.id == t))
        })
        .cloned()
        .collect();
    Org { county: org.county.clone(), towns, villages, grids, units }
}

fn whoami_of(u: &UserRecord, device: Option<String>) -> WhoAmI {
    WhoAmI { user: u.id.clone(), name: u.name.clone(), role: u.role, scope: u.scope.clone(), device }
}

async fn register_device(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let hash = tokens::hash(bearer(&headers)?);
    let user = blocking(&s, move |s| Ok(s.store.user_by_token(&hash)?)).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "register a device with the user token an admin gave you",
        )
    })?;
    if user.revoked {
        return Err(revoked());
    }
    require_json(&headers)?;
    let reg: DeviceRegistration = parse_json(&small_body(&s, body).await?)?;
    if reg.actor.len() != 32 || !reg.actor.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return Err(ApiError::bad_request("bad_actor", "the actor id must be 32 lowercase hex digits"));
    }
    // The server's own actors are never a device's: its edits would rank as the server's.
    if reg.actor == s.system.actor || reg.actor == crate::ingest::reader_actor().to_hex_string() {
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", "this actor id is already registered"));
    }
    gridsync_core::validate::check_text(
        "the device label",
        &reg.label,
        gridsync_core::validate::MAX_LABEL_CHARS,
    )
    .map_err(|r| ApiError::bad_request(r.code(), r.to_string()))?;
    let at = s.clock.now_ms();
    let limit = s.config.ingest.quotas.devices_per_user_day;
    let offset = s.org.read().unwrap_or_else(|p| p.into_inner()).county.utc_offset_minutes;
    let since = quota::day_start(at, offset);
    let user_id = user.id.clone();
    let today = blocking(&s, move |s| Ok(s.store.devices_registered_since(&user_id, since)?)).await?;
    if today >= limit {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            format!(
                "this user registered {limit} devices today, the most a day allows; try again tomorrow or ask an administrator"
            ),
        ));
    }
    let device = uuid::Uuid::now_v7().to_string();
    let token = tokens::new_token("gsd");
    {
        let (device, token_hash, user_id) = (device.clone(), tokens::hash(&token), user.id.clone());
        blocking(&s, move |s| {
            Ok(s.store.add_device(&device, &user_id, &reg.label, &reg.actor, &token_hash, at)?)
        })
        .await?;
    }
    let org = org_for_scope(&s.org.read().unwrap_or_else(|p| p.into_inner()), &user.scope);
    tracing::info!(device = %device, user = %user.id, "device registered");
    Ok((
        StatusCode::CREATED,
        Json(DeviceRegistered {
            device: device.clone(),
            token,
            whoami: whoami_of(&user, Some(device)),
            org,
            policy: s.config.policy.clone(),
            server_id: s.server_id.clone(),
        }),
    )
        .into_response())
}

/// `GET /v1/server`: which server this is; no token needed.
async fn server_info(State(s): State<Arc<AppState>>) -> Json<ServerInfo> {
    let county = s.org.read().unwrap_or_else(|p| p.into_inner()).county.name.clone();
    Json(ServerInfo { server_id: s.server_id.clone(), protocol: PROTOCOL_VERSION, county })
}

async fn whoami(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Json<WhoAmI>> {
    let (u, device) = user_auth(&s, &headers).await?;
    Ok(Json(whoami_of(&u, device)))
}

async fn sync(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    let started = Instant::now();
    let device = device_auth(&s, &headers).await?;
    require_json(&headers)?;
    let body = crate::transport::read_body(&s.intake, body, s.intake.limits().sync_body_bytes).await?;
    let req: SyncRequest = parse_json(&body)?;
    if req.changes.len() > MAX_CHANGES_PER_SYNC {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_changes",
            format!("push at most {MAX_CHANGES_PER_SYNC} changes per sync"),
        ));
    }
    let head = blocking(&s, |s| Ok(s.store.head_seq()?)).await?;
    if req.cursor > head {
        return Err(ApiError::bad_request(
            "bad_cursor",
            format!(
                "the device's cursor {} is ahead of this server ({head}): its data does not come from this server; set it up again in a new home with field init",
                req.cursor
            ),
        ));
    }
    // A change over the size cap is refused by itself, never decoded; the rest go on.
    let max_b64 = quota::MAX_CHANGE_BYTES.div_ceil(3) * 4;
    let (oversize, changes): (Vec<_>, Vec<_>) =
        req.changes.into_iter().enumerate().partition(|(_, p)| p.change.len() > max_b64);
    let (positions, changes): (Vec<usize>, Vec<_>) = changes.into_iter().unzip();
    let decoded = tokio::task::spawn_blocking(move || crate::ingest::decode(changes))
        .await
        .map_err(|e| ApiError::internal("decoding a push", e))?
        .map_err(|e| {
            let index = positions.get(e.index).copied().unwrap_or(e.index);
            let message = format!("change {index} (document {}): {}", e.doc, e.message);
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "malformed_change", message)
        })?;
    let at = s.clock.now_ms();
    let mut verdicts = s.ingest.push(device.clone(), req.cursor, decoded, at).await.map_err(|m| {
        // The writer reports SQLite's own words for a full disk.
        if m.contains("disk is full") || m.contains("disk full") {
            tracing::error!(why = %m, "disk full");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "disk_full", DISK_FULL_MESSAGE)
        } else {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
        }
    })?;
    for (i, p) in oversize {
        verdicts.insert(
            i,
            Verdict {
                doc: Some(p.doc),
                hash: None,
                outcome: Outcome::Forbidden,
                code: Some("too_large".into()),
                message: Some(format!(
                    "the change is over {} bytes; write the edit as several smaller ones",
                    quota::MAX_CHANGE_BYTES
                )),
                missing: vec![],
            },
        );
    }
    // Budget 0: verdicts only. A device pushing an outbox over several requests asks for no
    // documents until the last one, so the cursor it shows the server is the one its changes were
    // written against (a transition must build on what the device had been served).
    let verdicts_only = req.budget == Some(0);
    let budget = req.budget.unwrap_or(DEFAULT_PAGE_BYTES).clamp(1, MAX_PAGE_BYTES);
    let cursor = req.cursor;
    let (page, mut times) = blocking(&s, move |s| {
        if verdicts_only {
            let has_more = s.store.head_seq()? > cursor;
            return Ok((Page { entries: vec![], cursor, has_more }, Default::default()));
        }
        let private = device.user.role != Role::GridAssistant;
        let page = s.store.page(&device.user.scope, private, cursor, &device.id, MAX_PAGE_DOCS, budget)?;
        // Server receive times travel with the documents: offline queues and deadlines count
        // from the server's clock, not from a device's.
        let reports: Vec<String> =
            page.entries.iter().filter(|e| e.kind == DocKind::Report).map(|e| e.id.clone()).collect();
        let times = s.store.received_times(&reports)?;
        Ok((page, times))
    })
    .await?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let docs = page
        .entries
        .into_iter()
        .map(|e| {
            let t = times.remove(&e.id).unwrap_or_default();
            DocUpdate {
                doc: e.id,
                kind: e.kind,
                encoding: if e.snapshot { Encoding::Snapshot } else { Encoding::Changes },
                data: b64.encode(e.data),
                received_at: t.created,
                transitions_received: t.transitions,
            }
        })
        .collect();
    let (cursor, has_more) = (page.cursor, page.has_more);
    let verdicts = verdicts
        .into_iter()
        .map(|v| match v.outcome {
            // Position says which change; the rest would only cost bytes.
            Outcome::Accepted | Outcome::Duplicate => Verdict { doc: None, hash: None, ..v },
            _ => v,
        })
        .collect();
    let resp = SyncResponse { verdicts, docs, cursor, has_more, server_time: s.clock.now_ms() };
    let out = serde_json::to_vec(&resp).map_err(|e| ApiError::internal("encoding a response", e))?;
    s.metrics.bytes(body.len() as u64, out.len() as u64);
    s.metrics.sync_latency(started.elapsed().as_secs_f64());
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

async fn admin_devices(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Response> {
    admin_auth(&s, &headers).await?;
    let rows = blocking(&s, |s| Ok(s.store.device_statuses()?)).await?;
    Ok(Json(rows).into_response())
}

#[derive(Deserialize)]
struct DocumentsQuery {
    #[serde(default)]
    conflicts: bool,
}

async fn admin_documents(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<DocumentsQuery>,
) -> ApiResult<Response> {
    admin_auth(&s, &headers).await?;
    let rows = blocking(&s, move |s| Ok(s.store.document_statuses(q.conflicts)?)).await?;
    Ok(Json(rows).into_response())
}

async fn admin_users(State(s): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Response> {
    admin_auth(&s, &headers).await?;
    let rows = blocking(&s, |s| Ok(s.store.user_rows()?)).await?;
    Ok(Json(rows).into_response())
}

async fn admin_add_user(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    admin_auth(&s, &headers).await?;
    require_json(&headers)?;
    let req: NewUser = parse_json(&small_body(&s, body).await?)?;
    let created = crate::add_user(&s, &req.name, req.role, &req.scope, None)
        .map_err(|e| ApiError::bad_request("bad_user", e.to_string()))?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn admin_revoke_user(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let me = admin_auth(&s, &headers).await?;
    if me.id == id {
        return Err(ApiError::bad_request("revoke_self", "you cannot revoke yourself; ask another admin"));
    }
    let at = s.clock.now_ms();
    blocking(&s, move |s| Ok(s.store.revoke_user(&id, at)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The levels whose queue a role works.
fn queue_levels(role: Role) -> ApiResult<&'static [Level]> {
    match role {
        Role::TownOperator => Ok(&[Level::Town]),
        Role::CountyOperator => Ok(&[Level::County]),
        Role::Admin => Ok(&[Level::Town, Level::County]),
        Role::UnitHandler => Ok(&[]),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the queue is for town and county operators and handling units",
        )),
    }
}

/// Reports at `levels` in `scope` that are escalated (the queue proper) or, with `in_hand`, also
/// accepted, dispatched or resolved there (a later step is due).
fn queue_rows(s: &AppState, scope: &Scope, levels: &[Level], in_hand: bool) -> ApiResult<Vec<WorkRow>> {
    let statuses: &[Status] = if in_hand {
        &[Status::Escalated, Status::Accepted, Status::Dispatched, Status::Resolved]
    } else {
        &[Status::Escalated]
    };
    let states: Vec<(Status, Level)> =
        levels.iter().flat_map(|&l| statuses.iter().map(move |&st| (st, l))).collect();
    Ok(s.store.reports_in(&states)?.into_iter().filter(|r| scope.covers(&r.grid, &r.town)).collect())
}

#[derive(Deserialize)]
struct QueueQuery {
    /// Also the items in hand (accepted, dispatched, resolved), each with its next step's deadline.
    #[serde(default)]
    all: bool,
}

async fn queue(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<QueueQuery>,
) -> ApiResult<Response> {
    let (u, _) = user_auth(&s, &headers).await?;
    let levels = queue_levels(u.role)?;
    let now = s.clock.now_ms();
    let entries = blocking(&s, move |s| {
        let claims: BTreeMap<String, Claim> =
            s.store.claims(now)?.into_iter().map(|c| (c.doc.clone(), c)).collect();
        let policy = &s.config.policy;
        let mut out = Vec::new();
        // A handling unit's queue is its live orders; a town's also holds the grids' own
        // settlements waiting for its review (审核).
        let mut rows = match u.scope.unit() {
            Some(_) => s
                .store
                .reports_in(&[(Status::Dispatched, Level::Town), (Status::Dispatched, Level::County)])?,
            None => queue_rows(s, &u.scope, levels, q.all)?,
        };
        if matches!(u.role, Role::TownOperator | Role::Admin) {
            rows.extend(
                s.store
                    .reports_in(&[(Status::Resolved, Level::Grid)])?
                    .into_iter()
                    .filter(|r| u.scope.covers(&r.grid, &r.town)),
            );
        }
        for r in rows {
            let view: ReportView =
                serde_json::from_str(&r.view_json).map_err(|e| ApiError::internal("a stored view", e))?;
            if let Some(unit) = u.scope.unit()
                && !view.live_units().iter().any(|x| x == unit)
            {
                continue;
            }
            if r.level == Level::Grid && !view.awaits_review() {
                continue;
            }
            let Some((step, due)) = policy.next_step(&view, r.status_since) else { continue };
            out.push(QueueEntry {
                claim: claims.get(&r.id).cloned(),
                supervision: view.open_supervision().and_then(|n| n.result.clone()),
                reminded: view.reminded(),
                doc: r.id,
                title: view.title,
                category: view.category,
                urgency: r.urgency,
                status: r.status,
                level: r.level,
                grid: r.grid,
                town: r.town,
                step: step.to_string(),
                since: r.status_since,
                due,
                light: policy.light(r.urgency, r.status_since, due, now),
            });
        }
        out.sort_by(|a, b| b.urgency.cmp(&a.urgency).then(a.since.cmp(&b.since)).then(a.doc.cmp(&b.doc)));
        Ok(out)
    })
    .await?;
    Ok(Json(entries).into_response())
}

fn not_in_queue() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_in_queue",
        "no such item in your queue (it may have been handled already; sync and look again)",
    )
}

async fn claim(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(doc): Path<String>,
) -> ApiResult<Response> {
    let (u, _) = user_auth(&s, &headers).await?;
    let levels = queue_levels(u.role)?;
    let now = s.clock.now_ms();
    let lease = i64::from(s.config.lease_minutes) * 60_000;
    let claim = blocking(&s, move |s| {
        let in_queue = queue_rows(s, &u.scope, levels, true)?.into_iter().any(|r| r.id == doc);
        if !in_queue {
            return Err(not_in_queue());
        }
        Ok((s.store.claim(&doc, &u.id, &u.name, now, lease)?, u.id))
    })
    .await?;
    let (claim, me) = claim;
    if claim.user != me {
        let minutes = ((claim.expires_at - now).max(0) + 59_999) / 60_000;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "claimed",
            format!("{} ({}) holds this item for {minutes} more minute(s)", claim.name, claim.user),
        ));
    }
    Ok(Json(claim).into_response())
}

async fn release(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(doc): Path<String>,
) -> ApiResult<Response> {
    let (u, _) = user_auth(&s, &headers).await?;
    let levels = queue_levels(u.role)?;
    let now = s.clock.now_ms();
    let holder = blocking(&s, move |s| {
        if s.store.release(&doc, &u.id)? {
            return Ok(None);
        }
        // Someone else's claim is named only on an item of the caller's own queue: anything else
        // is answered as if it did not exist.
        if !queue_rows(s, &u.scope, levels, true)?.into_iter().any(|r| r.id == doc) {
            return Err(not_in_queue());
        }
        Ok(s.store.claim_on(&doc, now)?)
    })
    .await?;
    if let Some(c) = holder {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_holder",
            format!("you hold no claim on this item; {} ({}) does", c.name, c.user),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct StatsQuery {
    town: Option<String>,
    /// Milliseconds since the epoch, inclusive.
    from: Option<i64>,
    /// Milliseconds since the epoch, exclusive.
    to: Option<i64>,
    /// A breakdown: `town`, `grid`, `worker` or `unit`.
    by: Option<String>,
}

async fn admin_stats(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<StatsQuery>,
) -> ApiResult<Response> {
    let (u, _) = user_auth(&s, &headers).await?;
    let scope = match (u.role, &q.town) {
        (Role::Admin | Role::CountyOperator, Some(t)) => Scope::Town(t.clone()),
        (Role::Admin | Role::CountyOperator, None) => Scope::County,
        (Role::TownOperator, None) => u.scope.clone(),
        (Role::TownOperator, Some(t)) if u.scope == Scope::Town(t.clone()) => u.scope.clone(),
        _ => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "indicators cover your own scope only",
            ));
        }
    };
    if let Scope::Town(t) = &scope
        && s.org.read().unwrap_or_else(|p| p.into_inner()).town(t).is_none()
    {
        return Err(ApiError::bad_request(
            "unknown_town",
            format!("there is no town {t:?}; towns are named by id, e.g. T01"),
        ));
    }
    let now = s.clock.now_ms();
    let out = blocking(&s, move |s| {
        let mut views = s
            .store
            .report_views(&scope)?
            .iter()
            .map(|v| serde_json::from_str::<ReportView>(v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::internal("a stored view", e))?;
        // Indicators count server time: when the server received each report and each step, not
        // what a device's clock said (a device set a year off would skew every median).
        let ids: Vec<String> = views.iter().map(|v| v.id.clone()).collect();
        let times = s.store.received_times(&ids)?;
        for v in &mut views {
            if let Some(t) = times.get(&v.id) {
                v.created_at = t.created.unwrap_or(v.created_at);
                for tr in &mut v.transitions {
                    tr.at = t.transitions.get(&tr.id).copied().unwrap_or(tr.at);
                }
            }
        }
        let (from, to) = (q.from.unwrap_or(i64::MIN), q.to.unwrap_or(i64::MAX));
        let policy = &s.config.policy;
        let by = |by: &str, groups, units| indicators::IndicatorsBy { by: by.into(), groups, units };
        let villages: BTreeMap<String, String> = s
            .org
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .grids
            .iter()
            .map(|g| (g.id.clone(), g.village.clone()))
            .collect();
        let group = |key: &dyn Fn(&ReportView) -> String| {
            indicators::grouped(&views, policy, now, from, to, key)
                .into_iter()
                .map(|(key, indicators)| indicators::IndicatorsGroup { key, indicators })
                .collect()
        };
        match q.by.as_deref() {
            None => serde_json::to_value(indicators::compute(&views, policy, now, from, to)),
            Some("unit") => {
                serde_json::to_value(by("unit", vec![], indicators::by_unit(&views, policy, from, to)))
            }
            Some("town") => serde_json::to_value(by("town", group(&|r| r.town.clone()), vec![])),
            Some("village") => serde_json::to_value(by(
                "village",
                group(&|r| villages.get(&r.grid).cloned().unwrap_or_default()),
                vec![],
            )),
            Some("grid") => serde_json::to_value(by("grid", group(&|r| r.grid.clone()), vec![])),
            Some("worker") => serde_json::to_value(by("worker", group(&|r| r.reporter.clone()), vec![])),
            Some("category") => {
                serde_json::to_value(by("category", group(&|r| r.category.as_str().to_string()), vec![]))
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "bad_query",
                    "by is one of town, village, grid, worker, category, unit",
                ));
            }
        }
        .map_err(|e| ApiError::internal("indicators", e))
    })
    .await?;
    Ok(Json(out).into_response())
}
