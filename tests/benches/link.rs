//! Field syncs over a throttled link, in real time: a day, a week and 50 days of offline work
//! pushed, and a town operator's first sync of a 1,000-report town, at 50 kbit/s / 300 ms and
//! 20 kbit/s / 600 ms. Prints the rows of BENCHMARKS.md's field table.
//!
//!     cargo build --release --bins && cargo bench -p gridsync-e2e --bench link
//!
//! The real `gridsync-server` and `field` binaries (release) run on loopback behind the
//! throttling proxy of `gridsync_e2e`; wall time is what the person waits for `field sync`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use gridsync_e2e::{Link, Server, offline_work, throttle};

struct Row {
    link: &'static str,
    work: String,
    wall: f64,
    bytes: u64,
    round_trips: u64,
    connections: u64,
}

fn main() {
    let links = [
        ("50 kbit/s, 300 ms RTT", Link { bytes_per_sec: 6_250, one_way_ms: 150, cut_after: None }),
        ("20 kbit/s, 600 ms RTT", Link { bytes_per_sec: 2_500, one_way_ms: 300, cut_after: None }),
    ];
    // Reports × notes: each report is its creation and its notes (10 changes a report).
    let pushes =
        [("a day (70 changes)", 7, 9), ("a week (490 changes)", 49, 9), ("50 days (3,400 changes)", 340, 9)];
    let mut rows = Vec::new();
    for (name, link) in links {
        for (work, reports, notes) in pushes {
            let server = Server::start();
            let proxy = throttle(&server.url, link);
            let worker = server.device_via("worker", &proxy.url, &[]);
            offline_work(&worker, reports, notes, "积压的工作");
            let (bytes0, conns0) =
                (proxy.carried.load(Ordering::SeqCst), proxy.connections.load(Ordering::SeqCst));
            let started = Instant::now();
            let s = worker.json(&["sync", "--json", "--retries", "20"]);
            assert_eq!(s["ok"], true, "{s}");
            rows.push(Row {
                link: name,
                work: work.to_string(),
                wall: started.elapsed().as_secs_f64(),
                bytes: proxy.carried.load(Ordering::SeqCst) - bytes0,
                round_trips: s["round_trips"].as_u64().unwrap_or(0),
                connections: proxy.connections.load(Ordering::SeqCst) - conns0,
            });
            eprintln!("done: {name}, {work}");
        }
        // A town operator's first sync: 1,000 reports (creation + 5 notes each) in the town.
        let server = Server::start();
        // Two devices: one device may create at most 500 documents a day.
        for part in ["上午", "下午"] {
            let worker = server.device("worker");
            offline_work(&worker, 500, 5, part);
            worker.json(&["sync", "--json"]);
        }
        let proxy = throttle(&server.url, link);
        let started = Instant::now();
        let hub = server.device_via("townop", &proxy.url, &[]);
        let s = hub.json(&["sync", "--json", "--retries", "20"]);
        assert_eq!(s["ok"], true, "{s}");
        rows.push(Row {
            link: name,
            work: "town bootstrap, 1,000 reports (init + sync)".into(),
            wall: started.elapsed().as_secs_f64(),
            bytes: proxy.carried.load(Ordering::SeqCst),
            round_trips: s["round_trips"].as_u64().unwrap_or(0) + 1,
            connections: proxy.connections.load(Ordering::SeqCst),
        });
        eprintln!("done: {name}, bootstrap");
    }
    println!("| link | work | wall | bytes on the link | round trips | connections |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} s | {} B | {} | {} |",
            r.link, r.work, r.wall, r.bytes, r.round_trips, r.connections
        );
    }
}
