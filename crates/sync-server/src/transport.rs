//! Transport limits: the accept loop (a connection cap, header and idle timeouts, a write-stall
//! timeout), the cap on requests handled at once, and request-body intake (per-route caps, a cap on
//! inflated gzip bodies, a body deadline that grows with what has arrived, one memory budget shared
//! by every body being read).
//!
//! Handlers authenticate first and only then read a body through [`read_body`]: a stranger's bytes
//! are never buffered.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::api::ApiError;

/// How much the server lets any one client, and all of them together, hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most (further ones wait in the kernel's backlog). Lowered at start to
    /// leave room under the process's open-file limit.
    pub max_connections: usize,
    /// A connection must send a request's whole header within this long, and an idle kept-alive
    /// connection is closed after it: idle and header-drip sockets do not stay open.
    pub header_timeout: Duration,
    /// A request body must arrive within this long plus one second per `min_body_rate` bytes
    /// received (body drip, or a link slower than that on average): `408 too_slow`.
    pub body_timeout: Duration,
    /// Bytes a second a body must average once `body_timeout` has passed.
    pub min_body_rate: usize,
    /// A write the client does not read for this long closes the connection (slow readers).
    pub write_timeout: Duration,
    /// Requests handled at once (`/healthz` is not counted); more wait for a slot.
    pub max_in_flight: usize,
    /// How long a request waits for a slot, or for body memory, before `503 busy`.
    pub queue_timeout: Duration,
    /// Bytes of request bodies held in memory at once, all requests together.
    pub body_memory: usize,
    /// Largest `POST /v1/sync` body, after gzip inflation.
    pub sync_body_bytes: usize,
    /// Largest body of every other route, after gzip inflation.
    pub small_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            min_body_rate: 1024,
            write_timeout: Duration::from_secs(60),
            max_in_flight: 512,
            queue_timeout: Duration::from_secs(10),
            body_memory: 256 << 20,
            sync_body_bytes: crate::MAX_BODY_BYTES,
            small_body_bytes: 64 << 10,
        }
    }
}

/// The shared counters behind [`Limits`]: request slots and body memory.
pub struct Intake {
    limits: Limits,
    slots: Arc<Semaphore>,
    /// Body memory in KiB units.
    memory: Arc<Semaphore>,
    memory_kib: usize,
}

impl Intake {
    pub fn new(limits: Limits) -> Intake {
        let kib = (limits.body_memory / 1024).clamp(1, Semaphore::MAX_PERMITS);
        Intake {
            slots: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            memory: Arc::new(Semaphore::new(kib)),
            memory_kib: kib,
            limits,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes of request bodies held right now (KiB granularity).
    pub fn body_memory_in_use(&self) -> usize {
        (self.memory_kib - self.memory.available_permits()) * 1024
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.limits.max_in_flight.max(1) - self.slots.available_permits()
    }
}

fn busy() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "the server is busy; try again in a few seconds")
}

/// A request body read whole; the memory it holds is counted until it is dropped.
pub struct BodyBytes {
    pub bytes: Bytes,
    _memory: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for BodyBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

fn too_large(cap: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the request body is over {cap} bytes"))
}

/// Reads a (gzip-decoded) body of at most `cap` bytes within the body deadline, counting it against
/// the shared body memory. Call it only after the caller is authenticated.
pub async fn read_body(intake: &Intake, body: Body, cap: usize) -> Result<BodyBytes, ApiError> {
    let started = Instant::now();
    let rate = intake.limits.min_body_rate.max(1) as u64;
    let mut body = body;
    let mut buf: Vec<u8> = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut held_kib = 0usize;
    loop {
        // The grace period, then a second per `rate` bytes received (decoded bytes: a gzip body
        // gets more time, never less).
        let deadline = started
            + intake.limits.body_timeout
            + Duration::from_millis((buf.len() as u64).saturating_mul(1000) / rate);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "too_slow",
                    format!(
                        "the request body arrived too slowly (it must arrive within {} seconds plus one second per {} bytes); send smaller requests",
                        intake.limits.body_timeout.as_secs(),
                        rate
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(body_error(&e, cap)),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() > cap {
            return Err(too_large(cap));
        }
        let need = (buf.len() + data.len()).div_ceil(1024);
        if need > held_kib {
            let more = u32::try_from(need - held_kib).map_err(|_| too_large(cap))?;
            let wait = deadline.min(Instant::now() + intake.limits.queue_timeout);
            let permit = tokio::time::timeout_at(wait, intake.memory.clone().acquire_many_owned(more))
                .await
                .map_err(|_| busy())?
                .map_err(|_| busy())?;
            match &mut held {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            held_kib = need;
        }
        buf.extend_from_slice(&data);
    }
    Ok(BodyBytes { bytes: Bytes::from(buf), _memory: held })
}

/// A body that failed while being read: over a limit somewhere below, or not valid gzip.
fn body_error(e: &axum::Error, cap: usize) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return too_large(cap);
        }
        source = s.source();
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_body",
        "the request body could not be read (is its gzip valid?)",
    )
}

/// Middleware: at most `max_in_flight` requests are handled at once; the rest wait for a slot up
/// to `queue_timeout`, then get `503 busy`. `/healthz` always answers.
pub async fn in_flight(
    state: axum::extract::State<Arc<crate::AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let intake = &state.intake;
    let slot = tokio::time::timeout(intake.limits.queue_timeout, intake.slots.clone().acquire_owned()).await;
    match slot {
        Ok(Ok(_slot)) => next.run(req).await,
        _ => {
            let mut resp = busy().into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            resp
        }
    }
}

/// The open-file limit of this process, when it can be read (Linux).
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The connection cap actually used: the configured one, leaving room under the open-file limit for
/// the database, logs and the listener.
pub fn connection_cap(configured: usize) -> usize {
    match open_file_limit() {
        Some(files) => configured.min(files.saturating_sub(128).max(files / 2)).max(1),
        None => configured.max(1),
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish (for up
/// to 30 seconds).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cap = connection_cap(limits.max_connections);
    let connections = Arc::new(Semaphore::new(cap));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(64 << 10);
    let service = TowerToHyperService::new(app);
    tokio::pin!(shutdown);
    loop {
        // At the cap, new connections wait in the kernel's backlog and cost this process nothing.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.expect("the connection semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted: wait a
                    // little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(StallGuard::new(stream, limits.write_timeout));
        let conn = graceful.watch(http.serve_connection(io, service.clone()));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "a connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still open after 30 seconds were dropped at shutdown");
    }
    Ok(())
}

/// A socket whose writes fail once the peer has read nothing for `timeout`.
struct StallGuard {
    inner: TcpStream,
    timeout: Duration,
    /// Armed while a write waits on the peer; reset by progress.
    stall: Option<Pin<Box<Sleep>>>,
}

impl StallGuard {
    fn new(inner: TcpStream, timeout: Duration) -> Self {
        StallGuard { inner, timeout, stall: None }
    }

    /// Called when a write is pending: errors once the stall outlives the timeout.
    fn pending_write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let timeout = self.timeout;
        let sleep = self.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client stopped reading"))
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending_write(cx).map(Err),
            done => {
                self.stall = None;
                done
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending_write(cx).map(Err),
            done => {
                self.stall = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending_write(cx).map(Err),
            done => {
                self.stall = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
