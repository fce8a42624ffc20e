//! A new town operator's first `field sync` of 5,000 reports shaped like a county's real ones
//! (created, a 100-character description, 5 notes of ~60 characters, an urgency raise, a title
//! edit and an escalation: 10 changes each), end to end through the real `field` binary: what the
//! person waits for, with the client's and the server's CPU, bytes and requests.
//!
//!     cargo build --release --bins && cargo bench -p gridsync-e2e --bench bootstrap [-- REPORTS]
//!
//! The server is the real `gridsync-server` (release) on loopback; `field` runs under
//! `/usr/bin/time` for its CPU; the server's CPU comes from /proc.

use std::time::Instant;

use gridsync_e2e::{Server, county_reports};

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let reports: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5_000);
    let server = Server::start();
    // Worker devices fill the town: one device may create 500 documents a day.
    let mut left = reports;
    let mut n = 0;
    while left > 0 {
        let part = left.min(500);
        let worker = server.device("worker");
        county_reports(&worker, part, &format!("垃圾清运 {n}"));
        let s = worker.json(&["sync", "--json", "--retries", "5"]);
        assert_eq!(s["accepted"].as_u64(), Some(part as u64 * 10), "{s}");
        left -= part;
        n += 1;
    }
    let hub = server.device("townop");
    let server_cpu = cpu_secs(server.pid());
    let started = Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%U %S %M"])
        .arg(gridsync_e2e::bin_dir().join("field"))
        .arg("--home")
        .arg(hub.home.path())
        .args(["sync", "--json"])
        .output()
        .expect("run field sync under /usr/bin/time");
    let wall = started.elapsed().as_secs_f64();
    let server_cpu = cpu_secs(server.pid()) - server_cpu;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let times: Vec<f64> =
        stderr.lines().last().unwrap_or("").split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let listed = hub.json(&["report", "list", "--json"]).as_array().map_or(0, Vec::len);
    assert_eq!(listed, reports, "every report stored");
    // BOOTSTRAP_PERF=FILE: a second new device's bootstrap under `perf record`, for the profile.
    if let Ok(file) = std::env::var("BOOTSTRAP_PERF") {
        let again = server.device("townop");
        let status = std::process::Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "2000", "--call-graph", "dwarf", "-o", &file])
            .arg(gridsync_e2e::bin_dir().join("field"))
            .arg("--home")
            .arg(again.home.path())
            .args(["sync", "--json"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("perf record");
        assert!(status.success());
    }
    println!(
        "| documents | wall | requests | bytes down | bytes up | client CPU | client peak RSS | server CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.2} s | {} | {} B | {} B | {:.2} s | {:.0} MiB | {:.2} s |",
        s["pulled_documents"],
        wall,
        s["round_trips"],
        s["bytes_down"],
        s["bytes_up"],
        times.first().unwrap_or(&0.0) + times.get(1).unwrap_or(&0.0),
        times.get(2).unwrap_or(&0.0) / 1024.0,
        server_cpu
    );
}
