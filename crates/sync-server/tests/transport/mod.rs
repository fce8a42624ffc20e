//! Transport and resource limits on real sockets: who may make the server read a body, how much,
//! how slowly, and how many connections and requests it holds at once (issue 9, items 2 and 14).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use gridsync_server::transport::Limits;

use super::*;

/// Like `start`, with a listen backlog that holds every socket the tests open: beyond the backlog
/// the kernel keeps half-open connections the server never sees, and could not close.
async fn start_backlog(
    h: &Harness,
) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4096).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let state = h.state.clone();
    let task = tokio::spawn(async move {
        gridsync_server::serve(listener, state, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (format!("http://{addr}"), tx, task)
}

fn harness_limits(limits: Limits) -> Harness {
    harness_with(Config { transport: limits, ..Config::default() })
}

/// Opens a socket and sends `head` (and `body`), leaving the request unfinished if the head says so.
async fn send(addr: &str, head: &str, body: &[u8]) -> TcpStream {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(body).await.unwrap();
    sock.flush().await.unwrap();
    sock
}

/// The status of the answer on `sock`, or None when nothing came before `deadline`.
async fn status(sock: &mut TcpStream, deadline: Instant) -> Option<u16> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    std::str::from_utf8(&got).ok()?.split(' ').nth(1)?.parse().ok()
}

/// Whether the server closed `sock` before `deadline` (whatever it sent first).
async fn closed(sock: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, data).unwrap();
    gz.finish().unwrap()
}

fn post_head(addr: &str, path: &str, token: Option<&str>, len: usize, gzip: bool) -> String {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n"
    );
    if let Some(t) = token {
        head.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    if gzip {
        head.push_str("content-encoding: gzip\r\n");
    }
    head + "\r\n"
}

async fn healthz(url: &str) -> bool {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    matches!(client.get(format!("{url}/healthz")).send().await, Ok(r) if r.status() == 200)
}

/// Item 2: gzip bodies inflating to ~31 MB, held open minus their last bytes, sent with no token to
/// `/v1/devices` and `/v1/sync` from 60 connections: each is answered 401 without its body being
/// read, and the server holds no body memory. With a token: an inflated sync body over the cap is
/// 413, a body that stops arriving is 408 once the body deadline passes, a body over the small cap
/// of other routes is 413; the memory comes back every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item2_strangers_cannot_make_the_server_hold_bodies_and_bodies_are_capped_inflated_and_timed() {
    let h = harness_limits(Limits { body_timeout: Duration::from_secs(2), ..Limits::default() });
    let (url, stop, task) = start(&h).await;
    let addr = url.trim_start_matches("http://").to_string();
    let w = h.device("worker", 1).await;
    let bomb = gzip(&vec![b' '; 31 << 20]);
    let held = &bomb[..bomb.len() - 16];

    let mut socks = Vec::new();
    for i in 0..60 {
        let path = if i % 2 == 0 { "/v1/devices" } else { "/v1/sync" };
        socks.push(send(&addr, &post_head(&addr, path, None, bomb.len(), true), held).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &mut socks {
        assert_eq!(status(s, deadline).await, Some(401), "answered without reading the body");
    }
    assert_eq!(h.state.intake.body_memory_in_use(), 0, "no stranger's body is held");
    for s in &mut socks {
        assert!(closed(s, deadline).await, "the connection of an unread body is closed");
    }

    // A device's sync body that inflates past the cap.
    let mut s = send(&addr, &post_head(&addr, "/v1/sync", Some(&w.token), bomb.len(), true), held).await;
    assert_eq!(status(&mut s, deadline).await, Some(413));
    // A device's body that stops arriving.
    let mut s =
        send(&addr, &post_head(&addr, "/v1/sync", Some(&w.token), 1_000, false), b"{\"cursor\"").await;
    assert_eq!(status(&mut s, deadline).await, Some(408));
    // Another route's body over its small cap, even from an admin.
    let big = vec![b' '; 200 << 10];
    let mut s =
        send(&addr, &post_head(&addr, "/v1/admin/users", Some(&h.token("admin")), big.len(), false), &big)
            .await;
    assert_eq!(status(&mut s, deadline).await, Some(413));
    assert_eq!(h.state.intake.body_memory_in_use(), 0, "every body's memory is given back");

    // The server goes on serving.
    assert!(healthz(&url).await);
    h.sync(&w, 0, vec![]).await;
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Item 2: requests handled at once are capped. With two slots held by bodies that drip, a third
/// request waits, then gets 503 busy; /healthz still answers; the slots free once those end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item2_requests_in_flight_are_capped_and_the_rest_are_told_busy() {
    let h = harness_limits(Limits {
        max_in_flight: 2,
        queue_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_secs(60),
        ..Limits::default()
    });
    let (url, stop, task) = start(&h).await;
    let addr = url.trim_start_matches("http://").to_string();
    let w = h.device("worker", 1).await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        slow.push(send(&addr, &post_head(&addr, "/v1/sync", Some(&w.token), 1_000, false), b"{").await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.state.intake.in_flight() < 2 {
        assert!(Instant::now() < deadline, "the slow requests never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = reqwest::Client::new();
    let r = client.get(format!("{url}/v1/whoami")).bearer_auth(&w.token).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "busy");
    assert!(healthz(&url).await, "/healthz is never queued");

    drop(slow);
    loop {
        let r = client.get(format!("{url}/v1/whoami")).bearer_auth(&w.token).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slots never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Item 14: 1,600 idle sockets, header-drip and body-drip sockets. /healthz keeps answering, and
/// the server closes every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item14_idle_header_drip_and_body_drip_sockets_are_closed_and_healthz_keeps_answering() {
    let h = harness_limits(Limits {
        max_connections: 256,
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(2),
        ..Limits::default()
    });
    let (url, stop, task) = start_backlog(&h).await;
    let addr = url.trim_start_matches("http://").to_string();
    let w = h.device("worker", 1).await;

    // Drippers: one byte every 200 ms, forever, until the server hangs up.
    let mut drippers = Vec::new();
    for i in 0..20 {
        let head = if i % 2 == 0 {
            format!("GET /v1/whoami HTTP/1.1\r\nhost: {addr}\r\n")
        } else {
            post_head(&addr, "/v1/sync", Some(&w.token), 100_000, false)
        };
        let addr = addr.clone();
        drippers.push(tokio::spawn(async move {
            let mut sock = TcpStream::connect(&addr).await.unwrap();
            if head.starts_with("POST") {
                sock.write_all(head.as_bytes()).await.unwrap();
            }
            let drip = if head.starts_with("POST") { b"{".repeat(100_000) } else { head.into_bytes() };
            let started = Instant::now();
            for b in drip.iter().cycle() {
                if sock.write_all(std::slice::from_ref(b)).await.is_err() {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if started.elapsed() > Duration::from_secs(120) {
                    break;
                }
            }
            started.elapsed()
        }));
    }

    // 1,600 idle sockets, 256 served at a time, the rest waiting in the backlog.
    let mut connects = Vec::new();
    for _ in 0..1_600 {
        let addr = addr.clone();
        connects.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await.ok()?.ok()
        }));
    }
    let mut idle = Vec::new();
    for c in connects {
        if let Some(s) = c.await.unwrap() {
            idle.push(s);
        }
    }
    assert_eq!(idle.len(), 1_600);

    let started = Instant::now();
    assert!(healthz(&url).await, "/healthz answered under {} idle sockets", idle.len());
    assert!(started.elapsed() < Duration::from_secs(60));

    let deadline = Instant::now() + Duration::from_secs(90);
    for s in &mut idle {
        assert!(closed(s, deadline).await, "an idle socket was left open");
    }
    for d in drippers {
        let lasted = d.await.unwrap();
        assert!(lasted < Duration::from_secs(60), "a drip connection lasted {lasted:?}");
    }
    assert!(healthz(&url).await);
    h.sync(&w, 0, vec![]).await;
    stop.send(()).unwrap();
    task.await.unwrap();
}
