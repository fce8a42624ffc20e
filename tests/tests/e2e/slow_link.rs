//! A 2G valley between the devices and the server: every sync makes progress at 20 kbit/s with
//! 600 ms round trips, and on a link that resets every connection after 20 KB. The link is a
//! throttling proxy (`gridsync_e2e::throttle`); the valley is replayed ten times faster, with
//! the client's link logic told so (`GRIDSYNC_LINK_TIME_SCALE=10`), so sizes, page counts and
//! retries are those of the real link while the test takes a tenth of the time.

use gridsync_e2e::{Link, Server, offline_work, throttle};

const SCALE: u64 = 10;
const ENV: &[(&str, &str)] = &[("GRIDSYNC_LINK_TIME_SCALE", "10")];

/// 20 kbit/s, 600 ms round trips.
fn valley() -> Link {
    Link { bytes_per_sec: 2_500 * SCALE, one_way_ms: 300 / SCALE, cut_after: None }
}

#[test]
fn a_town_of_a_thousand_reports_bootstraps_over_a_2g_valley() {
    let server = Server::start();
    // Two of the worker's devices: one device may create at most 500 documents a day.
    for part in ["上午", "下午"] {
        let worker = server.device("worker");
        offline_work(&worker, 500, 5, part);
        let s = worker.sync();
        assert_eq!(s["accepted"], 3_000, "{s}");
    }

    let link = throttle(&server.url, valley());
    let hub = server.device_via("townop", &link.url, ENV);
    let s = hub.sync();
    assert_eq!(s["ok"], true, "{s}");
    assert_eq!(hub.json(&["report", "list", "--json"]).as_array().unwrap().len(), 1_000);
    let pages = s["round_trips"].as_u64().unwrap();
    assert!(pages >= 4, "a 2G valley takes several smaller pages, not one: {s}");
    // Every page was sized to the link: no request took the whole budget of bytes at once.
    let per_page = s["bytes_down"].as_u64().unwrap() / pages;
    assert!(per_page < 200_000, "pages of {per_page} bytes on a 20 kbit/s link: {s}");
}

#[test]
fn fifty_days_of_offline_work_pushes_over_a_2g_valley() {
    let server = Server::start();
    let link = throttle(&server.url, valley());
    let worker = server.device_via("worker", &link.url, ENV);
    offline_work(&worker, 340, 9, "50天的工作");
    assert_eq!(worker.json(&["status", "--json"])["pending_changes"], 3_400);
    let s = worker.sync();
    assert_eq!(s["ok"], true, "{s}");
    assert_eq!(s["accepted"], 3_400, "{s}");
    assert!(s["round_trips"].as_u64().unwrap() >= 4, "the push went in link-sized parts: {s}");
    assert_eq!(worker.json(&["status", "--json"])["pending_changes"], 0);
}

#[test]
fn a_link_that_resets_every_connection_after_20_kb_still_completes() {
    let server = Server::start();
    let cut = Link { bytes_per_sec: 1_000_000, one_way_ms: 1, cut_after: Some(20_000) };
    let link = throttle(&server.url, cut);
    let worker = server.device_via("worker", &link.url, ENV);
    offline_work(&worker, 150, 3, "断线");
    let s = worker.json(&["sync", "--json", "--retries", "8"]);
    assert_eq!(s["ok"], true, "{s}");
    assert_eq!(s["accepted"], 600, "{s}");
    let hub = server.device_via("townop", &link.url, ENV);
    let s = hub.json(&["sync", "--json", "--retries", "8"]);
    assert_eq!(s["ok"], true, "{s}");
    assert_eq!(hub.json(&["report", "list", "--json"]).as_array().unwrap().len(), 150);
}
