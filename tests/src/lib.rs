//! End-to-end test harness: starts the real `gridsync-server` on a free port with the demo county,
//! runs the real `field` binary in temporary homes, one per device, and puts a throttled link
//! (rate, latency, cuts) between them when a test asks for one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridsync_core::automerge::{ActorId, AutoCommit};
use gridsync_core::doc::{Author, hash_hex};
use gridsync_core::lifecycle::Action;
use gridsync_core::org::Role;
use gridsync_core::report::{
    Category, Location, NewReport, ReportEdit, Urgency, add_note, add_transition, create_report, edit_report,
    materialize_report,
};
use serde_json::Value;

/// The directory holding the workspace's built binaries (next to this test executable).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    for name in ["gridsync-server", "field"] {
        assert!(
            dir.join(name).exists(),
            "{} is missing: run the tests with `cargo test --workspace`, which builds it",
            dir.join(name).display()
        );
    }
    dir
}

/// A running server, killed when dropped.
pub struct Server {
    pub url: String,
    pub data: tempfile::TempDir,
    child: Child,
}

impl Server {
    /// Starts `gridsync-server serve --demo` on a free loopback port.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// The same, with extra `serve` arguments.
    pub fn start_with(extra: &[&str]) -> Server {
        let data = tempfile::tempdir().expect("a temp dir");
        let (url, child) = spawn(data.path(), extra);
        Server { url, data, child }
    }

    /// The server's process id (for CPU readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server and starts it again on the same data, at a new address.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the server (its data stays), e.g. for `gridsync-server import-unsent`.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a stopped server again on the same data, at a new address.
    pub fn start_again(&mut self) {
        let (url, child) = spawn(self.data.path(), &[]);
        self.url = url;
        self.child = child;
    }

    /// Runs a `gridsync-server` command (not `serve`) on this server's data directory.
    pub fn admin_command(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("gridsync-server"))
            .arg("--data")
            .arg(self.data.path())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run gridsync-server")
    }

    /// The enrolment token of a demo user (`worker`, `assistant`, `worker2`, `townop`, `countyop`, `admin`).
    pub fn token(&self, user: &str) -> String {
        let text =
            std::fs::read_to_string(self.data.path().join("demo-users.json")).expect("demo-users.json");
        let users: Value = serde_json::from_str(&text).expect("demo users JSON");
        users
            .as_array()
            .and_then(|a| a.iter().find(|u| u["user"] == user))
            .and_then(|u| u["token"].as_str())
            .unwrap_or_else(|| panic!("no demo user {user}"))
            .to_string()
    }

    /// Registers a new device for a demo user.
    pub fn device(&self, user: &str) -> Device {
        self.device_via(user, &self.url, &[])
    }

    /// Registers a new device for a demo user that reaches the server at `url` (a throttled
    /// link, say), with extra environment for every `field` run.
    pub fn device_via(&self, user: &str, url: &str, env: &[(&str, &str)]) -> Device {
        let mut d = Device::new(user);
        d.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        d.ok(&["init", "--server", url, "--token", &self.token(user), "--label", user]);
        d
    }
}

/// Starts `gridsync-server serve --demo` on `data` and a free port; returns its URL.
fn spawn(data: &Path, extra: &[&str]) -> (String, Child) {
    let mut child = Command::new(bin_dir().join("gridsync-server"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gridsync-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("the server's first line");
    let url = line
        .trim()
        .strip_prefix("gridsync-server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
        .to_string();
    (url, child)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One field device: a home directory.
pub struct Device {
    pub home: tempfile::TempDir,
    pub name: String,
    /// Environment for every `field` run on this device.
    pub env: Vec<(String, String)>,
}

impl Device {
    /// A device not yet set up.
    pub fn new(name: &str) -> Device {
        Device { home: tempfile::tempdir().expect("a temp dir"), name: name.to_string(), env: Vec::new() }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("field"));
        // Human output in the default language, Chinese, whatever the machine's locale.
        c.arg("--home").arg(self.home.path()).args(args).env("GRIDSYNC_LANG", "zh");
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs `field ARGS`; on failure, panics with the command, its output and the home.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run field")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            panic!(
                "field {} failed on {} ({}):\n--- stdout\n{}\n--- stderr\n{}",
                args.join(" "),
                self.name,
                self.home.path().display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command expected to fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "field {} should have failed on {}", args.join(" "), self.name);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("field {} printed no JSON ({e}):\n{text}", args.join(" ")))
    }

    /// `field sync --json`.
    pub fn sync(&self) -> Value {
        self.json(&["sync", "--json", "--retries", "1"])
    }
}

/// A network link between devices and the server, as a TCP proxy on loopback: a rate shared by
/// every connection in each direction, a one-way latency, and connections cut after some bytes.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub bytes_per_sec: u64,
    pub one_way_ms: u64,
    /// Close a connection (both ways) once this many bytes crossed it.
    pub cut_after: Option<u64>,
}

/// A running link: devices use `url`; it counts the bytes it carried.
pub struct Throttle {
    pub url: String,
    pub carried: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Starts a link in front of `upstream` (an `http://host:port` URL).
pub fn throttle(upstream: &str, link: Link) -> Throttle {
    let target = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the link");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let carried = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // One schedule per direction: the next instant the link is free to send.
    let lanes = [Arc::new(Mutex::new(Instant::now())), Arc::new(Mutex::new(Instant::now()))];
    let (c, n, s) = (carried.clone(), connections.clone(), stop.clone());
    std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((down, _)) => {
                    let Ok(up) = TcpStream::connect(&target) else { continue };
                    n.fetch_add(1, Ordering::SeqCst);
                    let _ = down.set_nonblocking(false);
                    let on_conn = Arc::new(AtomicU64::new(0));
                    for (from, to, lane) in [
                        (down.try_clone(), up.try_clone(), lanes[0].clone()),
                        (up.try_clone(), down.try_clone(), lanes[1].clone()),
                    ] {
                        let (Ok(from), Ok(to)) = (from, to) else { continue };
                        pump(from, to, lane, link, on_conn.clone(), c.clone());
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Throttle { url, carried, connections, stop }
}

/// Moves bytes one way: a reader stamps each chunk with the time it arrives (after the bytes
/// before it, at the link's rate, plus the latency); a writer delivers it then.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    lane: Arc<Mutex<Instant>>,
    link: Link,
    on_conn: Arc<AtomicU64>,
    carried: Arc<AtomicU64>,
) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let closer = to.try_clone().ok();
    let reader_side = from.try_clone().ok();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let total = on_conn.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            let n = match link.cut_after {
                Some(cut) if total > cut => n.saturating_sub((total - cut) as usize),
                _ => n,
            };
            let at = {
                let mut free = lane.lock().expect("lane");
                let start = (*free).max(Instant::now());
                *free = start + Duration::from_secs_f64(n as f64 / link.bytes_per_sec as f64);
                *free + Duration::from_millis(link.one_way_ms)
            };
            carried.fetch_add(n as u64, Ordering::SeqCst);
            if tx.send((at, buf[..n].to_vec())).is_err() {
                break;
            }
            if link.cut_after.is_some_and(|cut| total > cut) {
                break;
            }
        }
        drop(tx);
    });
    std::thread::spawn(move || {
        for (at, bytes) in rx {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        // The reader ended (closed, or cut): close both ways, like a link that drops.
        if let Some(c) = closer {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(r) = reader_side {
            let _ = r.shutdown(Shutdown::Both);
        }
    });
}

/// Writes `reports` reports with `notes` notes each into a device's store, as `field` would have
/// recorded them offline (documents, views and outbox): long offline work without thousands of
/// process starts.
pub fn offline_work(d: &Device, reports: usize, notes: usize, title: &str) {
    write_offline(d, reports, title, |doc, author| {
        for n in 0..notes {
            let a = Author { at: author.at + 1_000 * (n as i64 + 1), ..author.clone() };
            add_note(doc, &a, &format!("第{n}次回访：已与村委联系，清运车预计明天上午到，居民情绪稳定。"))
                .unwrap();
        }
    });
}

/// Writes `reports` reports shaped like a county's real ones: created, then a 100-character
/// description, 5 notes of about 60 characters, an urgency raise, a title edit and an escalation
/// (10 changes each).
pub fn county_reports(d: &Device, reports: usize, title: &str) {
    write_offline(d, reports, title, |doc, author| {
        let at = |k: i64| Author { at: author.at + 60_000 * k, ..author.clone() };
        let description = "村民反映村口垃圾收集点连续三天未清运，垃圾外溢到路面，天气转热后异味明显，影响周边十余户居民出行和生活，希望尽快协调清运车辆并增设垃圾桶。";
        edit_report(doc, &at(1), &ReportEdit { description: Some(description.into()), ..Default::default() })
            .unwrap();
        for n in 0..5 {
            let note = format!(
                "第{n}次跟进：已电话联系村委会和保洁公司负责人，对方答复今天下午安排车辆到场清运，明早复查现场情况。"
            );
            add_note(doc, &at(2 + n), &note).unwrap();
        }
        edit_report(doc, &at(8), &ReportEdit { urgency: Some(Urgency::High), ..Default::default() }).unwrap();
        let new_title = format!("{title}（已核实）");
        edit_report(doc, &at(9), &ReportEdit { title: Some(new_title), ..Default::default() }).unwrap();
        add_transition(doc, &at(10), Action::Escalate, "村里协调不了清运车辆，需要镇里统筹", None).unwrap();
    });
}

/// Writes `reports` new reports into a device's store as `field` records offline work; `more`
/// adds each report's later changes.
fn write_offline(d: &Device, reports: usize, title: &str, more: impl Fn(&mut AutoCommit, &Author)) {
    let db = rusqlite::Connection::open(d.home.path().join("field.sqlite3")).unwrap();
    let profile: Value = serde_json::from_str(
        &db.query_row("SELECT json FROM profile", [], |r| r.get::<_, String>(0)).unwrap(),
    )
    .unwrap();
    let actor_bytes = hex::decode(profile["actor"].as_str().unwrap()).unwrap();
    let actor = ActorId::from(actor_bytes.as_slice());
    let actor_bits = actor_bytes.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b)) & !0xFFFF_FFFF;
    let user = profile["whoami"]["user"].as_str().unwrap().to_string();
    let grid = &profile["org"]["grids"][0];
    let (grid_id, town) = (grid["id"].as_str().unwrap(), grid["town"].as_str().unwrap());
    let tx = db.unchecked_transaction().unwrap();
    let base = 1_796_000_000_000i64;
    for r in 0..reports {
        let author = Author { user: user.clone(), role: Role::GridWorker, at: base + r as i64 * 60_000 };
        let new = NewReport {
            anonymous: false,
            // Unique per device: its actor's bytes, plus the report's number.
            id: gridsync_core::uuid::Uuid::from_u128(actor_bits.wrapping_add(r as u128)),
            grid: grid_id.into(),
            town: town.into(),
            category: Category::Sanitation,
            title: format!("{title} {r}"),
            description: "村口垃圾点满溢，周边有异味，需要清运车辆。".repeat(3),
            urgency: Urgency::Normal,
            location: Location { lat: Some(30.2), lon: Some(114.2), address: Some("三组路口".into()) },
            parties: vec![],
        };
        let mut doc = create_report(actor.clone(), &author, &new).unwrap();
        more(&mut doc, &author);
        let id = new.id.to_string();
        for c in doc.get_changes(&[]) {
            db.execute(
                "INSERT INTO outbox (hash, doc_id, kind, bytes) VALUES (?1, ?2, 'report', ?3)",
                rusqlite::params![hash_hex(&c.hash()), id, c.raw_bytes()],
            )
            .unwrap();
        }
        let view = materialize_report(&doc).unwrap();
        db.execute(
            "INSERT INTO docs (id, kind, bytes, view, sort_key) VALUES (?1, 'report', ?2, ?3, ?4)",
            rusqlite::params![id, doc.save(), serde_json::to_string(&view).unwrap(), view.created_at],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}
