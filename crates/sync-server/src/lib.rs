//! Gridsync sync server.
//!
//! - [`api`]: routes, authentication, JSON errors, handlers.
//! - [`auto`]: auto-escalation, written into reports as the server's own transitions.
//! - [`ingest`]: the single writer: validation, application, group commit.
//! - [`cache`]: the writer's hot-document cache, bounded in documents and in bytes.
//! - [`quota`]: per device and day quotas, and the size caps of a change and a view.
//! - [`store`]: the `Store` trait and its embedded SQLite implementation.
//! - [`metrics`]: Prometheus counters and histogram.
//! - [`tokens`]: bearer tokens, stored hashed.
//! - [`openapi`]: the OpenAPI document.
//! - [`demo`]: the demo county with one user per role.
//! - [`import`]: re-writing a revoked device's unsent work in another user's name.
//! - [`transport`]: connection cap and timeouts, request slots, body caps and the body deadline.

pub mod api;
pub mod auto;
pub mod cache;
pub mod demo;
pub mod import;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod quota;
pub mod store;
pub mod tokens;
pub mod transport;

use std::future::Future;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::response::IntoResponse;
use gridsync_core::org::{Org, Role};
use gridsync_core::protocol::UserCreated;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::{CompressionLayer, predicate::SizeAbove};
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::ingest::{Ingest, IngestConfig};
use crate::metrics::Metrics;
use crate::store::{DeviceRecord, Store, StoreError, UserRecord};
use gridsync_core::policy::Policy;

/// Where the server's time comes from; tests pass a fixed clock.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The machine's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// How a server runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub ingest: IngestConfig,
    /// Deadlines and auto-escalation rules.
    pub policy: Policy,
    /// How long a claim on a queue item lasts unless renewed.
    pub lease_minutes: u32,
    /// Connections, timeouts, request slots and body caps.
    pub transport: transport::Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ingest: IngestConfig::default(),
            policy: Policy::default(),
            lease_minutes: 15,
            transport: transport::Limits::default(),
        }
    }
}

/// Everything a request handler reaches.
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// The organisation, read on every push for validation.
    pub org: Arc<RwLock<Org>>,
    pub ingest: Ingest,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub config: Config,
    /// The server's own device: it writes auto-escalations with its own Automerge actor.
    pub system: DeviceRecord,
    /// The server's identity (a UUID made once with the data directory), sent by `GET /v1/server`.
    pub server_id: String,
    /// Request slots and body memory shared by every request.
    pub intake: transport::Intake,
}

impl AppState {
    /// Builds the state and starts the writer thread.
    pub fn new(
        store: Arc<dyn Store>,
        org: Org,
        clock: Arc<dyn Clock>,
        config: Config,
    ) -> Result<Arc<AppState>, StoreError> {
        let mut fresh = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut fresh);
        let actor = store.server_actor(&hex::encode(fresh))?;
        let server_id = store.server_id()?;
        let system = DeviceRecord {
            id: "server".into(),
            actor,
            user: UserRecord {
                id: "system".into(),
                name: "Gridsync server".into(),
                role: Role::System,
                scope: gridsync_core::org::Scope::County,
                revoked: false,
            },
        };
        let org = Arc::new(RwLock::new(org));
        let metrics = Arc::new(Metrics::default());
        let rules = config.policy.closed_loop.clone();
        let ingest = Ingest::start(store.clone(), org.clone(), metrics.clone(), config.ingest, rules);
        let intake = transport::Intake::new(config.transport.clone());
        Ok(Arc::new(AppState { store, org, ingest, metrics, clock, config, system, server_id, intake }))
    }
}

/// Largest `POST /v1/sync` body by default, after gzip inflation ([`transport::Limits`]).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// The router with its middleware: panics become 500s, bodies are gzip-decoded and -encoded, at most
/// `max_in_flight` requests are handled at once, a body on the wire is at most the sync cap.
pub fn app(state: Arc<AppState>) -> Router {
    let metrics = state.metrics.clone();
    let limits = state.config.transport.clone();
    api::routes()
        .with_state(state.clone())
        .layer(axum::extract::DefaultBodyLimit::max(limits.small_body_bytes))
        .layer(RequestDecompressionLayer::new())
        // Small answers (a no-op sync) would grow under gzip: compress only above 256 bytes.
        .layer(CompressionLayer::new().compress_when(SizeAbove::new(256)))
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let metrics = metrics.clone();
            async move {
                // The route template, never the raw path: ids in paths would grow the label set.
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or("unmatched", |m| m.as_str())
                    .to_string();
                let resp = next.run(req).await;
                metrics.request(&route, resp.status().as_u16());
                resp
            }
        }))
        .layer(axum::middleware::from_fn_with_state(state, transport::in_flight))
        .layer(CatchPanicLayer::custom(|_| {
            api::ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server had a problem; try again later",
            )
            .into_response()
        }))
        .layer(RequestBodyLimitLayer::new(limits.sync_body_bytes))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(TraceLayer::new_for_http())
}

/// Every answer carries the protocol version; every error answer is JSON `{code, message}`, also
/// those made by extractors and layers (a bad query string, an unknown path, a body over the limit).
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    let mut resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let body = std::mem::take(resp.body_mut());
        let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text).trim().to_string();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            s if s.is_server_error() => "internal",
            _ => "bad_request",
        };
        let message =
            if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
        resp = (status, axum::Json(gridsync_core::protocol::ErrorBody { code: code.into(), message }))
            .into_response();
    }
    resp.headers_mut()
        .insert("gridsync-protocol", HeaderValue::from(gridsync_core::protocol::PROTOCOL_VERSION));
    resp
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish; connections are capped
/// and timed out as `config.transport` says.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.config.transport.clone();
    transport::serve(listener, app(state), &limits, shutdown).await
}

/// Why a user could not be created or found.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Scope(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no user has the id or name {0:?}")]
    NotFound(String),
    #[error("several users are named {name:?}: {}; name one by its id", ids.join(", "))]
    Ambiguous { name: String, ids: Vec<String> },
    #[error("user {0} is revoked")]
    Revoked(String),
}

/// Finds a user by id, or else by a name exactly one user has. With `active_only`, revoked users
/// are neither matched by name nor returned.
pub fn find_user(store: &dyn Store, id_or_name: &str, active_only: bool) -> Result<UserRecord, UserError> {
    let users = store.users()?;
    let wanted = id_or_name.trim();
    if let Some(u) = users.iter().find(|u| u.id == wanted) {
        if active_only && u.revoked {
            return Err(UserError::Revoked(u.id.clone()));
        }
        return Ok(u.clone());
    }
    let mut named: Vec<&UserRecord> =
        users.iter().filter(|u| u.name == wanted && !(active_only && u.revoked)).collect();
    match named.len() {
        0 if active_only && users.iter().any(|u| u.name == wanted) => {
            Err(UserError::Revoked(format!("named {wanted:?}")))
        }
        0 => Err(UserError::NotFound(wanted.to_string())),
        1 => Ok(named.remove(0).clone()),
        _ => Err(UserError::Ambiguous {
            name: wanted.to_string(),
            ids: named.iter().map(|u| u.id.clone()).collect(),
        }),
    }
}

/// Active users who already have `name` (the `user add` command warns about them).
pub fn active_users_named(store: &dyn Store, name: &str) -> Result<Vec<UserRecord>, StoreError> {
    Ok(store.users()?.into_iter().filter(|u| !u.revoked && u.name == name.trim()).collect())
}

/// Creates a user with a fresh enrolment token (returned once, stored hashed).
pub fn add_user(
    state: &AppState,
    name: &str,
    role: Role,
    scope: &str,
    id: Option<&str>,
) -> Result<UserCreated, UserError> {
    let org = state.org.read().unwrap_or_else(|p| p.into_inner()).clone();
    create_user(&*state.store, &org, state.clock.now_ms(), name, role, scope, id)
}

/// [`add_user`] without a running server (the `user add` command).
pub fn create_user(
    store: &dyn Store,
    org: &Org,
    now_ms: i64,
    name: &str,
    role: Role,
    scope: &str,
    id: Option<&str>,
) -> Result<UserCreated, UserError> {
    if role == Role::System {
        return Err(UserError::Scope("the system role belongs to the server itself".into()));
    }
    if name.trim().is_empty() {
        return Err(UserError::Scope("a user needs a name".into()));
    }
    gridsync_core::validate::check_text("the name", name, gridsync_core::validate::MAX_NAME_CHARS)
        .map_err(|r| UserError::Scope(r.to_string()))?;
    let scope = org.parse_scope(role, scope).map_err(UserError::Scope)?;
    let id = match id {
        Some(i) => i.to_string(),
        None => format!("u-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]),
    };
    let token = tokens::new_token("gsu");
    let user =
        UserRecord { id: id.clone(), name: name.to_string(), role, scope: scope.clone(), revoked: false };
    store.add_user(&user, &tokens::hash(&token), now_ms)?;
    Ok(UserCreated { user: id, name: name.to_string(), role, scope, token })
}

/// A future that resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
