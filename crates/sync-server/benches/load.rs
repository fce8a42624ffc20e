//! Load generator: starts the real `gridsync-server` (release) on loopback, simulates field devices
//! and reports throughput, latency, bytes on the wire and the server's peak RSS.
//!
//! `cargo bench -p gridsync-server --bench load -- --help` lists the options, e.g.
//! `-- --devices 500 --concurrency 50 --duration 300` (a morning wave, then five sustained minutes).
//!
//! Workloads: *morning wave* (every device pushes a day of work — 5 new reports with 10 edits each
//! and a patrol with 200 track points — then pulls), *no-op poll* (devices already in sync; exact
//! HTTP/1.1 bytes both ways over a raw socket), *bootstrap* (a new town operator device pulls a town
//! holding N reports).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::{ActorId, AutoCommit};
use base64::Engine;
use gridsync_core::doc::{Author, DocKind};
use gridsync_core::org::Role;
use gridsync_core::patrol::{CheckIn, PatrolEdit, TrackPoint, edit_patrol, start_patrol};
use gridsync_core::protocol::{
    DeviceRegistered, Outcome, PushedChange, SyncRequest, SyncResponse, UserCreated,
};
use gridsync_core::report::*;
use tokio::sync::Semaphore;

/// Load generator for the Gridsync server: a morning wave, no-op polls, a town bootstrap, and
/// optionally a sustained run.
#[derive(clap::Parser)]
#[command(name = "load", about)]
struct Args {
    /// Field devices (grid workers; more devices than grids puts several workers in a grid).
    #[arg(long, default_value_t = 500)]
    devices: usize,
    /// Reports seeded in one town before a new town operator device bootstraps (0: skip).
    #[arg(long, default_value_t = 5_000)]
    bootstrap_reports: usize,
    /// Devices syncing at the same time.
    #[arg(long, default_value_t = 500)]
    concurrency: usize,
    /// After the wave, keep every device syncing (a note, then a pull) for this many seconds.
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// Seconds each device waits between syncs in the sustained run.
    #[arg(long, default_value_t = 5)]
    interval: u64,
    /// Arguments cargo bench passes on (ignored).
    #[arg(long, hide = true)]
    bench: bool,
}

fn args() -> Args {
    <Args as clap::Parser>::parse()
}

struct Server {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

fn start_server() -> (Server, String) {
    let bin = env!("CARGO_BIN_EXE_gridsync-server");
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(bin).args(args).arg("--data").arg(data.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["org", "demo"]);
    let admin: UserCreated = serde_json::from_str(&run(&[
        "user",
        "add",
        "--name",
        "bench admin",
        "--role",
        "admin",
        "--scope",
        "county",
        "--json",
    ]))
    .unwrap();
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("gridsync-server listening on ").unwrap().to_string();
    (Server { child, url, _data: data }, admin.token)
}

#[derive(Clone)]
struct Device {
    token: String,
    actor: ActorId,
    user: String,
    role: Role,
    grid: String,
    town: String,
    cursor: u64,
}

/// One JSON POST, gzip both ways like `field`. Errors come back as words, counted by the caller.
async fn post<T: serde::Serialize, R: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &T,
) -> Result<(R, u64, u64), String> {
    let raw = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let (sent, encoded) = if raw.len() > 1024 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).map_err(|e| e.to_string())?;
        let b = gz.finish().map_err(|e| e.to_string())?;
        (b.len() as u64, Some(b))
    } else {
        (raw.len() as u64, None)
    };
    let mut req = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip");
    req = match encoded {
        Some(b) => req.header("content-encoding", "gzip").body(b),
        None => req.body(raw),
    };
    let resp = req.send().await.map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let gz = resp.headers().get("content-encoding").is_some_and(|v| v == "gzip");
    let wire = resp.bytes().await.map_err(|e| format!("read: {e}"))?;
    let body = if gz {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&wire[..]).read_to_end(&mut out).map_err(|e| format!("gzip: {e}"))?;
        out
    } else {
        wire.to_vec()
    };
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).chars().take(200).collect::<String>()
        ));
    }
    let parsed = serde_json::from_slice(&body).map_err(|e| format!("answer: {e}"))?;
    Ok((parsed, sent, wire.len() as u64))
}

fn author(d: &Device, at: i64) -> Author {
    Author { user: d.user.clone(), role: d.role, at }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn pushed(doc: &str, kind: DocKind, d: &mut AutoCommit) -> Vec<PushedChange> {
    d.get_changes(&[])
        .iter()
        .map(|c| PushedChange { doc: doc.into(), kind, change: b64(c.raw_bytes()) })
        .collect()
}

/// When the simulated work starts: an hour before now, so the server (which refuses device times
/// far ahead of its clock) takes every change.
fn work_start() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    now as i64 - 3_600_000
}

/// A day of work: 5 reports with 10 edits each, and a patrol with 200 track points.
fn day_of_work(d: &Device, n: u64) -> Vec<PushedChange> {
    let mut out = Vec::new();
    let t0 = work_start();
    for r in 0..5u64 {
        let id = uuid::Uuid::from_u64_pair(n, r);
        let mut doc = create_report(
            d.actor.clone(),
            &author(d, t0),
            &NewReport {
                anonymous: false,
                id,
                grid: d.grid.clone(),
                town: d.town.clone(),
                category: Category::ALL[(r as usize) % 8],
                title: format!("隐患 {n}-{r}"),
                description: "巡查中发现的问题，需要处理。".into(),
                urgency: Urgency::Normal,
                location: Location { lat: Some(30.5), lon: Some(114.3), address: Some("3组".into()) },
                parties: vec![],
            },
        )
        .unwrap();
        for e in 0..10i64 {
            let a = author(d, t0 + 60_000 * (e + 1));
            match e % 3 {
                0 => {
                    add_note(&mut doc, &a, &format!("第{e}次跟进")).unwrap();
                }
                1 => {
                    edit_report(
                        &mut doc,
                        &a,
                        &ReportEdit { title: Some(format!("隐患 {n}-{r} ({e})")), ..Default::default() },
                    )
                    .unwrap();
                }
                _ => {
                    let u = [Urgency::Low, Urgency::Normal, Urgency::High][(e as usize / 3) % 3];
                    edit_report(&mut doc, &a, &ReportEdit { urgency: Some(u), ..Default::default() })
                        .unwrap();
                }
            }
        }
        out.extend(pushed(&id.to_string(), DocKind::Report, &mut doc));
    }
    let pid = uuid::Uuid::from_u64_pair(n, 99);
    let mut p = start_patrol(d.actor.clone(), &author(d, t0), pid, &d.grid, &d.town, &[]).unwrap();
    let a = author(d, t0 + 1000);
    edit_patrol(
        &mut p,
        &a,
        &PatrolEdit::CheckIn(CheckIn {
            place: "村委会".into(), lat: Some(30.5), lon: Some(114.3), at: t0
        }),
    )
    .unwrap();
    let track: Vec<TrackPoint> = (0..200)
        .map(|i| TrackPoint {
            lat: 30.5 + f64::from(i) * 1e-4,
            lon: 114.3 + f64::from(i) * 5e-5,
            at: t0 + i64::from(i) * 15_000,
        })
        .collect();
    edit_patrol(&mut p, &a, &PatrolEdit::Track(track)).unwrap();
    edit_patrol(&mut p, &a, &PatrolEdit::Visit("3组12号".into())).unwrap();
    edit_patrol(&mut p, &author(d, t0 + 8 * 3_600_000), &PatrolEdit::End).unwrap();
    out.extend(pushed(&pid.to_string(), DocKind::Patrol, &mut p));
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn register(
    client: &reqwest::Client,
    url: &str,
    admin: &str,
    grid: &gridsync_core::org::Grid,
    role: Role,
    scope: &str,
    i: usize,
) -> Device {
    let (u, _, _): (UserCreated, _, _) = post(
        client,
        &format!("{url}/v1/admin/users"),
        admin,
        &serde_json::json!({ "name": format!("bench {i}"), "role": role, "scope": scope }),
    )
    .await
    .expect("create a bench user");
    let mut actor = [0u8; 16];
    actor[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    actor[8] = role as u8 + 1;
    let actor = ActorId::from(actor);
    let (reg, _, _): (DeviceRegistered, _, _) = post(
        client,
        &format!("{url}/v1/devices"),
        &u.token,
        &serde_json::json!({ "actor": actor.to_hex_string(), "label": "bench" }),
    )
    .await
    .expect("register a bench device");
    Device {
        token: reg.token,
        actor,
        user: u.user,
        role,
        grid: grid.id.clone(),
        town: grid.town.clone(),
        cursor: 0,
    }
}

/// A no-op sync over a raw socket: exact HTTP/1.1 bytes written and read.
fn raw_noop(url: &str, d: &Device) -> (usize, usize) {
    let addr = url.trim_start_matches("http://");
    let body = serde_json::to_vec(&SyncRequest { cursor: d.cursor, changes: vec![], budget: None }).unwrap();
    let req = format!(
        "POST /v1/sync HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\naccept-encoding: gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        d.token,
        body.len()
    );
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"has_more\":false"), "{text}");
    (req.len() + body.len(), resp.len())
}

/// Every device syncs every `interval` seconds (a note on one of its reports, then a pull) for
/// `duration` seconds: latency percentiles, throughput and errors of a steady day.
async fn sustained(client: &reqwest::Client, url: &str, devices: &[Device], a: &Args) {
    let sem = Arc::new(Semaphore::new(a.concurrency));
    let until = Instant::now() + Duration::from_secs(a.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, d) in devices.iter().cloned().enumerate() {
        let (client, url, sem, interval) = (client.clone(), url.to_string(), sem.clone(), a.interval);
        // The device's own copy of its first report (as pushed in the wave), to write notes on.
        let id = uuid::Uuid::from_u64_pair(i as u64, 0).to_string();
        let b64e = base64::engine::general_purpose::STANDARD;
        let mine: Vec<automerge::Change> = day_of_work(&d, i as u64)
            .into_iter()
            .filter(|c| c.doc == id)
            .filter_map(|c| b64e.decode(&c.change).ok())
            .filter_map(|b| automerge::Change::from_bytes(b).ok())
            .collect();
        let mut doc = AutoCommit::new().with_actor(d.actor.clone());
        doc.apply_changes(mine).expect("the device's own report");
        tasks.push(tokio::spawn(async move {
            // Spread the devices over the interval.
            let offset = Duration::from_millis((i as u64 * 7_919) % (interval.max(1) * 1_000));
            tokio::time::sleep(offset).await;
            let (mut lat, mut errors, mut cursor, mut round) = (Vec::new(), Vec::new(), d.cursor, 0i64);
            while Instant::now() < until {
                round += 1;
                let heads = doc.get_heads();
                let _ = add_note(&mut doc, &author(&d, 1_800_100_000_000 + round), "巡查跟进");
                let changes: Vec<PushedChange> = doc
                    .get_changes(&heads)
                    .iter()
                    .map(|c| PushedChange {
                        doc: id.clone(),
                        kind: DocKind::Report,
                        change: b64(c.raw_bytes()),
                    })
                    .collect();
                let req = SyncRequest { cursor, changes, budget: None };
                let permit = sem.acquire().await;
                let t = Instant::now();
                match post::<_, SyncResponse>(&client, &format!("{url}/v1/sync"), &d.token, &req).await {
                    Ok((r, _, _)) => {
                        lat.push(t.elapsed().as_secs_f64());
                        cursor = r.cursor;
                    }
                    Err(e) => errors.push(e),
                }
                drop(permit);
                tokio::time::sleep(Duration::from_secs(interval)).await;
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors.extend(e);
    }
    let wall = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!("\n## sustained ({} s, every device every {} s)", a.duration, a.interval);
    println!(
        "syncs {}  syncs/s {:.0}  latency p50 {:.1} ms  p99 {:.1} ms  errors {}",
        lat.len(),
        lat.len() as f64 / wall,
        percentile(&lat, 0.5) * 1e3,
        percentile(&lat, 0.99) * 1e3,
        errors.len()
    );
    for e in errors.iter().take(3) {
        println!("  e.g. {e}");
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let (server, admin) = start_server();
    let url = server.url.clone();
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).gzip(false).build().unwrap();
    let org = gridsync_core::org::demo_county(gridsync_server::demo::DEMO_SEED);
    println!(
        "# Gridsync load generator: {} devices, bootstrap of {} reports",
        a.devices, a.bootstrap_reports
    );

    // Devices: one grid worker per grid.
    let mut devices = Vec::with_capacity(a.devices);
    for i in 0..a.devices {
        let g = &org.grids[i % org.grids.len()];
        devices.push(register(&client, &url, &admin, g, Role::GridWorker, &g.id, i).await);
    }
    let outboxes: Vec<Vec<PushedChange>> =
        devices.iter().enumerate().map(|(i, d)| day_of_work(d, i as u64)).collect();
    let total_changes: usize = outboxes.iter().map(Vec::len).sum();

    // Morning wave.
    let sem = Arc::new(Semaphore::new(a.concurrency));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (d, outbox) in devices.iter().cloned().zip(outboxes) {
        let (client, url, sem) = (client.clone(), url.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let mut lat = Vec::new();
            let (mut up, mut down, mut accepted, mut cursor, mut errors) = (0, 0, 0, 0, Vec::new());
            let mut changes = outbox;
            loop {
                let t = Instant::now();
                let req = SyncRequest { cursor, changes: std::mem::take(&mut changes), budget: None };
                match post::<_, SyncResponse>(&client, &format!("{url}/v1/sync"), &d.token, &req).await {
                    Ok((r, u, dn)) => {
                        lat.push(t.elapsed().as_secs_f64());
                        up += u;
                        down += dn;
                        accepted += r.verdicts.iter().filter(|v| v.outcome == Outcome::Accepted).count();
                        cursor = r.cursor;
                        if !r.has_more {
                            break;
                        }
                    }
                    Err(e) => {
                        errors.push(e);
                        break;
                    }
                }
            }
            (lat, up, down, accepted, cursor, errors)
        }));
    }
    let mut lat = Vec::new();
    let (mut up, mut down, mut accepted) = (0u64, 0u64, 0usize);
    let mut errors = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let (l, u, dn, acc, cursor, errs) = t.await.unwrap();
        lat.extend(l);
        up += u;
        down += dn;
        accepted += acc;
        errors.extend(errs);
        devices[i].cursor = cursor;
    }
    let wave = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    println!("\n## morning wave");
    println!("devices {}  changes {}  wall {:.2} s", a.devices, total_changes, wave);
    println!("accepted {accepted} of {total_changes}; failed syncs {}", errors.len());
    for e in errors.iter().take(3) {
        println!("  e.g. {e}");
    }
    println!("accepted changes/s {:.0}  syncs/s {:.0}", accepted as f64 / wave, lat.len() as f64 / wave);
    println!("latency p50 {:.1} ms  p99 {:.1} ms", percentile(&lat, 0.5) * 1e3, percentile(&lat, 0.99) * 1e3);
    println!(
        "bodies on the wire per device: up {:.0} B, down {:.0} B",
        up as f64 / a.devices as f64,
        down as f64 / a.devices as f64
    );

    if a.duration > 0 {
        sustained(&client, &url, &devices, &a).await;
    }

    // No-op poll.
    let n = a.devices.min(200);
    let started = Instant::now();
    let mut sizes = Vec::new();
    for d in devices.iter().take(n) {
        sizes.push(raw_noop(&url, d));
    }
    let noop = started.elapsed().as_secs_f64();
    let max_up = sizes.iter().map(|s| s.0).max().unwrap_or(0);
    let max_down = sizes.iter().map(|s| s.1).max().unwrap_or(0);
    println!("\n## no-op poll ({n} devices, sequential, new connection each)");
    println!("one round trip; HTTP bytes per sync: request {max_up} B, response {max_down} B (max)");
    println!("syncs/s {:.0} (including TCP connect)", n as f64 / noop);

    if a.bootstrap_reports == 0 {
        println!("\n## server\npeak RSS {:.1} MiB", server.peak_rss_kib() as f64 / 1024.0);
        return;
    }
    // Bootstrap: fill one town with reports from its grid workers, then a new town operator pulls.
    let town = &org.towns[0].id;
    let grids: Vec<_> = org.grids.iter().filter(|g| &g.town == town).collect();
    let mut pushers = Vec::new();
    // At most 400 new reports per device: under the server's 500 a device and day.
    for (k, g) in grids.iter().take(a.bootstrap_reports.div_ceil(400).max(8)).enumerate() {
        pushers.push(register(&client, &url, &admin, g, Role::GridWorker, &g.id, 100_000 + k).await);
    }
    let mut snapshot_bytes = 0usize;
    let per = a.bootstrap_reports.div_ceil(pushers.len());
    for (k, d) in pushers.iter().enumerate() {
        let mut batch = Vec::new();
        for r in 0..per.min(a.bootstrap_reports.saturating_sub(k * per)) {
            let id = uuid::Uuid::from_u64_pair(1_000_000 + k as u64, r as u64);
            let mut doc = create_report(
                d.actor.clone(),
                &author(d, work_start()),
                &NewReport {
                    anonymous: false,
                    id,
                    grid: d.grid.clone(),
                    town: d.town.clone(),
                    category: Category::Sanitation,
                    title: format!("环境卫生 {k}-{r}"),
                    description: "垃圾堆放，需要清理。".into(),
                    urgency: Urgency::Normal,
                    location: Location::default(),
                    parties: vec![],
                },
            )
            .unwrap();
            for e in 0..3 {
                add_note(&mut doc, &author(d, 1_800_000_060_000 + e), "已通知保洁").unwrap();
            }
            snapshot_bytes += doc.save().len();
            batch.extend(pushed(&id.to_string(), DocKind::Report, &mut doc));
            if batch.len() >= 8_000 {
                let req = SyncRequest { cursor: 0, changes: std::mem::take(&mut batch), budget: Some(1) };
                let _: (SyncResponse, _, _) =
                    post(&client, &format!("{url}/v1/sync"), &d.token, &req).await.expect("seed a town");
            }
        }
        let req = SyncRequest { cursor: 0, changes: batch, budget: Some(1) };
        let _: (SyncResponse, _, _) =
            post(&client, &format!("{url}/v1/sync"), &d.token, &req).await.expect("seed a town");
    }
    let op = register(&client, &url, &admin, grids[0], Role::TownOperator, town, 200_000).await;
    let started = Instant::now();
    let (mut cursor, mut docs, mut pages, mut wire, mut compacted) = (0u64, 0usize, 0usize, 0u64, 0usize);
    loop {
        let req = SyncRequest { cursor, changes: vec![], budget: None };
        let (r, u, dn): (SyncResponse, _, _) =
            post(&client, &format!("{url}/v1/sync"), &op.token, &req).await.expect("a bootstrap page");
        // The device would store them: load each, as a client must.
        for d in &r.docs {
            let bytes = base64::engine::general_purpose::STANDARD.decode(&d.data).unwrap();
            let mut doc = gridsync_core::doc::load(&bytes, op.actor.clone()).unwrap();
            compacted += doc.save().len();
        }
        docs += r.docs.len();
        pages += 1;
        wire += u + dn;
        cursor = r.cursor;
        if !r.has_more {
            break;
        }
    }
    let boot = started.elapsed().as_secs_f64();
    println!("\n## bootstrap (new town operator device, town {town})");
    println!(
        "documents {docs} ({} seeded reports, {} B of snapshots, plus the morning wave's in this town) in {pages} pages, {boot:.2} s",
        a.bootstrap_reports, snapshot_bytes
    );
    println!(
        "bytes on the wire {wire} = {:.2}x the {compacted} B of compacted snapshots (save()) of the documents received",
        wire as f64 / compacted as f64
    );
    println!("\n## server");
    println!("peak RSS {:.1} MiB", server.peak_rss_kib() as f64 / 1024.0);
    let metrics = client.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let metric = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or("?")
            .to_string()
    };
    println!(
        "group commits {} for {} pushes (every sync, even a no-op, records the device's cursor through the writer)",
        metric("gridsync_group_commits_total"),
        metric("gridsync_grouped_pushes_total")
    );
    drop(server);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
