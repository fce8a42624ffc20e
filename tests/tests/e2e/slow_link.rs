//! A 2G valley between the devices and the server: every sync makes progress at 20 kbit/s with
//! 600 ms round trips, and on a link that resets every connection after 20 KB. The link is a
//! throttling proxy (`gridsync_e2e::throttle`); the valley is replayed ten times faster, with
//! the client's link logic told so (`GRIDSYNC_LINK_TIME_SCALE=10`), so sizes, page counts and
//! retries are those of the real link while the test takes a tenth of the time.

use gridsync_core::automerge::ActorId;
use gridsync_core::doc::{Author, hash_hex};
use gridsync_core::org::Role;
use gridsync_core::report::{
    Category, Location, NewReport, Urgency, add_note, create_report, materialize_report,
};
use gridsync_e2e::{Device, Link, Server, throttle};
use serde_json::Value;

const SCALE: u64 = 10;
const ENV: &[(&str, &str)] = &[("GRIDSYNC_LINK_TIME_SCALE", "10")];

/// 20 kbit/s, 600 ms round trips.
fn valley() -> Link {
    Link { bytes_per_sec: 2_500 * SCALE, one_way_ms: 300 / SCALE, cut_after: None }
}

/// Writes `reports` reports with `notes` notes each into a device's store, as `field` would have
/// recorded them offline (documents, views and outbox): long offline work without thousands of
/// process starts.
fn offline_work(d: &Device, reports: usize, notes: usize, title: &str) {
    let db = rusqlite::Connection::open(d.home.path().join("field.sqlite3")).unwrap();
    let profile: Value = serde_json::from_str(
        &db.query_row("SELECT json FROM profile", [], |r| r.get::<_, String>(0)).unwrap(),
    )
    .unwrap();
    let actor = ActorId::from(hex::decode(profile["actor"].as_str().unwrap()).unwrap().as_slice());
    let user = profile["whoami"]["user"].as_str().unwrap().to_string();
    let grid = &profile["org"]["grids"][0];
    let (grid_id, town) = (grid["id"].as_str().unwrap(), grid["town"].as_str().unwrap());
    let tx = db.unchecked_transaction().unwrap();
    let base = 1_796_000_000_000i64;
    for r in 0..reports {
        let author = Author { user: user.clone(), role: Role::GridWorker, at: base + r as i64 * 60_000 };
        let new = NewReport {
            id: gridsync_core::uuid::Uuid::from_u128(0x1000_0000 + r as u128),
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
        for n in 0..notes {
            let a = Author { at: author.at + 1_000 * (n as i64 + 1), ..author.clone() };
            add_note(
                &mut doc,
                &a,
                &format!("第{n}次回访：已与村委联系，清运车预计明天上午到，居民情绪稳定。"),
            )
            .unwrap();
        }
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

#[test]
fn a_town_of_a_thousand_reports_bootstraps_over_a_2g_valley() {
    let server = Server::start();
    let worker = server.device("worker");
    offline_work(&worker, 1_000, 5, "垃圾满溢");
    let s = worker.sync();
    assert_eq!(s["accepted"], 6_000, "{s}");

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
