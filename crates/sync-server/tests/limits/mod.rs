//! Size caps, budgets, scope answers and quotas (issue 9, items 6, 13, 16 and 18): the harm each
//! item describes does not happen, and the data of everyone else survives.

use gridsync_server::ingest::IngestConfig;
use gridsync_server::quota::{MAX_CHANGE_BYTES, MAX_VIEW_BYTES, Quotas};

use super::*;

fn harness_ingest(ingest: IngestConfig) -> Harness {
    harness_with(Config { ingest, ..Config::default() })
}

fn quotas(q: Quotas) -> IngestConfig {
    IngestConfig { quotas: q, ..IngestConfig::default() }
}

fn codes(r: &SyncResponse) -> Vec<String> {
    r.verdicts.iter().map(|v| v.code.clone().unwrap_or_else(|| format!("{:?}", v.outcome))).collect()
}

/// The database of a harness, opened beside the server (WAL allows it).
fn db(h: &Harness) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(h._dir.path().join("gridsync.sqlite3")).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c
}

/// Peak resident memory of a process (Linux), in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 =
        status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A user of another town (the demo users all share one town).
fn user_of_another_town(h: &mut Harness, id: &str, role: Role) -> String {
    let home = &h.org.grids[0].town;
    let far = h.org.grids.iter().find(|g| &g.town != home).unwrap().clone();
    let scope = if role == Role::TownOperator { far.town.clone() } else { far.id.clone() };
    let created = gridsync_server::add_user(&h.state, id, role, &scope, Some(id)).unwrap();
    h.users.push(demo::DemoUser {
        user: id.into(),
        name: id.into(),
        role,
        scope,
        token: created.token,
        init: String::new(),
    });
    id.into()
}

/// Item 13: 2,000 documents of 192 KiB each in a county device's scope, asked for with budget 1:
/// one document comes back, and the server does not read the others' bytes to send it (the old
/// page read every snapshot first: +375 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item13_a_page_reads_document_bytes_only_up_to_its_budget() {
    let h = harness_ingest(quotas(Quotas { docs_per_device_day: 10_000, ..Quotas::default() }));
    let w = h.device("worker", 1).await;
    let mut push = Vec::new();
    for id in 1..=2_000u128 {
        push.extend(push_all(id, &mut new_report(&w, id, "budget")));
    }
    let r = h.sync(&w, 0, push).await;
    assert!(outcomes(&r).iter().all(|o| *o == Outcome::Accepted));
    // Heavy snapshots, straight in the database: a page never parses them.
    db(&h).execute("UPDATE docs SET snapshot = zeroblob(196608)", []).unwrap();

    let admin = h.device("admin", 9).await;

    // The real server on that data, alone in its process, so its peak memory is its own.
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_gridsync-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(h._dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line)
        .unwrap();
    let url = line.trim().strip_prefix("gridsync-server listening on ").unwrap().to_string();
    let client = reqwest::Client::new();
    let page = |budget| {
        client
            .post(format!("{url}/v1/sync"))
            .bearer_auth(&admin.token)
            .json(&SyncRequest { cursor: 0, changes: vec![], budget: Some(budget) })
            .send()
    };
    let r = client.get(format!("{url}/v1/whoami")).bearer_auth(&admin.token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let before = peak_rss(server.id());
    for _ in 0..3 {
        let r: SyncResponse = page(1).await.unwrap().json().await.unwrap();
        assert_eq!(r.docs.len(), 1);
        assert!(r.has_more);
    }
    let after = peak_rss(server.id());
    server.kill().unwrap();
    server.wait().unwrap();
    if let (Some(before), Some(after)) = (before, after) {
        let grown = after.saturating_sub(before);
        assert!(grown < 64 << 20, "a budget-1 page raised the server's peak memory by {} MiB", grown >> 20);
    }
}

/// Item 6: a change over the size cap is refused by itself (never decoded) while the rest of the
/// push lands; a change that would take a report's view over its cap is refused; the hot-document
/// cache stays under its byte budget, and documents pushed out of it are still served whole.
#[tokio::test]
async fn item6_changes_and_views_are_capped_and_the_cache_is_bounded_in_bytes() {
    let h = harness_ingest(IngestConfig { cache_bytes: 300 << 10, ..IngestConfig::default() });
    let w = h.device("worker", 1).await;
    let a = h.device("assistant", 2).await;

    // A title of 100,000 characters: one change of ~300 KB, behind a small report.
    let mut d = new_report(&w, 1, "kept");
    let mut push = push_all(1, &mut d);
    let heads = d.get_heads();
    automerge::transaction::Transactable::put(&mut d, automerge::ROOT, "title", "长".repeat(100_000))
        .unwrap();
    d.commit();
    let big = d.get_changes(&heads);
    assert!(big[0].raw_bytes().len() > MAX_CHANGE_BYTES);
    push.extend(push_one(1, &big[0]));
    let mut other = new_report(&w, 2, "also kept");
    push.extend(push_all(2, &mut other));
    let r = h.sync(&w, 0, push).await;
    assert_eq!(codes(&r), ["Accepted", "too_large", "Accepted"]);
    assert_eq!(r.verdicts[1].doc.as_deref(), Some(uuid::Uuid::from_u128(1).to_string().as_str()));

    // Notes of 4,000 characters (12 KB of JSON each) until the view would pass its cap.
    let mut d = new_report(&w, 3, "long history");
    let mut push = push_all(3, &mut d);
    let notes = MAX_VIEW_BYTES / 12_000 + 2;
    for n in 0..notes {
        let heads = d.get_heads();
        add_note(&mut d, &author(&w, 3_000 + n as i64), &"记".repeat(4_000)).unwrap();
        push.extend(d.get_changes(&heads).iter().flat_map(|c| push_one(3, c)));
    }
    let r = h.sync(&w, 0, push).await;
    let refused: Vec<_> = r.verdicts.iter().filter(|v| v.outcome != Outcome::Accepted).collect();
    assert!(!refused.is_empty(), "the view cap held");
    assert!(
        refused
            .iter()
            .all(|v| v.code.as_deref().is_some_and(|c| c == "too_many" || c == "depends_on_refused"))
    );
    let stored = serde_json::to_vec(&h.stored(3).await).unwrap();
    assert!(stored.len() <= MAX_VIEW_BYTES, "stored view {} bytes", stored.len());

    // 40 more documents through a cache of 300 KiB (each weighs at least 16 KiB): bounded, and
    // every document still reaches a device whole.
    let mut push = Vec::new();
    for id in 10..50u128 {
        push.extend(push_all(id, &mut new_report(&w, id, "cached")));
    }
    h.sync(&w, 0, push).await;
    let cached = h.state.metrics.cached_documents.load(Ordering::Relaxed);
    assert!(cached <= (300 << 10) / (16 << 10), "{cached} documents cached");
    let mut local = Default::default();
    let cursor = pull_all(&h, &a, 0, &mut local).await;
    assert_eq!(local.len(), 43);
    assert_eq!(materialize_report(&local[&uuid::Uuid::from_u128(1).to_string()]).unwrap().title, "kept");
    // A new note on a document pushed out of the cache lands on the stored copy.
    let mut d = local.remove(&uuid::Uuid::from_u128(10).to_string()).unwrap();
    d.set_actor(a.actor.clone());
    let heads = d.get_heads();
    add_note(&mut d, &author(&a, 9_000), "later").unwrap();
    let r = h.sync(&a, cursor, d.get_changes(&heads).iter().flat_map(|c| push_one(10, c)).collect()).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted]);
}

/// Item 16: whatever a device pushes under the id of another grid's document, the answer is the
/// one a new document in that grid gets (`out_of_scope`), or `missing_deps` as for an unknown
/// document; the foreign document is untouched. Claim and release on another town's item answer
/// `not_in_queue`, never naming the holder.
#[tokio::test]
async fn item16_foreign_ids_answer_out_of_scope_uniformly_and_claims_name_no_one_outside_the_queue() {
    let mut h = harness();
    let far = user_of_another_town(&mut h, "farworker", Role::GridWorker);
    let w = h.device("worker", 1).await;
    let x = h.device(&far, 5).await;
    escalated_report(&h, &w, 1, Urgency::Normal).await;
    let foreign = uuid::Uuid::from_u128(1).to_string();

    // What a fresh id answers for a report created in that grid.
    let mut there = create_report(
        x.actor.clone(),
        &author(&x, 1_000),
        &NewReport {
            anonymous: false,
            id: uuid::Uuid::from_u128(7),
            grid: w.grid.clone(),
            town: w.town.clone(),
            category: Category::Dispute,
            title: "t".into(),
            description: String::new(),
            urgency: Urgency::Normal,
            location: Location::default(),
            parties: vec![],
        },
    )
    .unwrap();
    let r = h.sync(&x, 0, push_all(7, &mut there)).await;
    let fresh = (r.verdicts[0].code.clone(), r.verdicts[0].message.clone());
    assert_eq!(fresh.0.as_deref(), Some("out_of_scope"));

    // Under the foreign id: a report in the attacker's own grid (was immutable_field), a patrol
    // (was kind_mismatch), and the same report as above.
    let mut own = new_report(&x, 1, "squat");
    let mut patrol = gridsync_core::patrol::start_patrol(
        x.actor.clone(),
        &author(&x, 1_000),
        uuid::Uuid::from_u128(1),
        &x.grid,
        &x.town,
        &[],
    )
    .unwrap();
    let mut push = push_all(1, &mut own);
    push.extend(push_all(1, &mut patrol).into_iter().map(|p| PushedChange { kind: DocKind::Patrol, ..p }));
    push.extend(push_all(1, &mut there));
    let r = h.sync(&x, 0, push.clone()).await;
    // The patrol's kind disagrees with the report's inside the push itself (same for any id).
    for (v, p) in r.verdicts.iter().zip(&push) {
        if p.kind == DocKind::Report {
            assert_eq!((v.code.clone(), v.message.clone()), fresh, "{v:?}");
        }
    }
    // A change built on changes the device does not have: missing_deps, as for an unknown id.
    let heads = own.get_heads();
    add_note(&mut own, &author(&x, 2_000), "n").unwrap();
    let later = own.get_changes(&heads);
    let r = h.sync(&x, 0, push_one(1, &later[0])).await;
    assert_eq!(outcomes(&r), [Outcome::MissingDeps]);
    let r2 = h.sync(&x, 0, push_one(99, &later[0])).await;
    assert_eq!(outcomes(&r2), [Outcome::MissingDeps]);
    assert_eq!(h.stored(1).await.title, "needs the hub", "the foreign report is untouched");

    // Claims: the home town's operator holds it; another town's operator learns nothing.
    let farop = user_of_another_town(&mut h, "farop", Role::TownOperator);
    let (s, _) =
        h.call("POST", &format!("/v1/queue/{foreign}/claim"), Some(&h.token("townop")), vec![]).await;
    assert_eq!(s, StatusCode::OK);
    for path in ["claim", "release"] {
        let (s, e) =
            h.call("POST", &format!("/v1/queue/{foreign}/{path}"), Some(&h.token(&farop)), vec![]).await;
        assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_in_queue")), "{path}: {e}");
        assert!(!e.to_string().contains("townop") && !e.to_string().contains("陈静"), "{e}");
        let (s2, e2) = h
            .call(
                "POST",
                &format!("/v1/queue/{}/{path}", uuid::Uuid::from_u128(99)),
                Some(&h.token(&farop)),
                vec![],
            )
            .await;
        assert_eq!((s2, &e2), (s, &e), "an unknown id answers the same");
    }
    // A colleague of the same town is told who holds it.
    h.add_town_operator("townop2").await;
    let (s, e) =
        h.call("POST", &format!("/v1/queue/{foreign}/release"), Some(&h.token("townop2")), vec![]).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("not_holder")));
}

/// Item 18: per device and day, new documents and stored refusals are capped, and so are a user's
/// device registrations; edits to existing documents go on, and the next day the quotas reset.
#[tokio::test]
async fn item18_documents_devices_and_stored_refusals_have_daily_quotas() {
    let h = harness_ingest(quotas(Quotas {
        docs_per_device_day: 3,
        devices_per_user_day: 2,
        refusals_per_device_day: 2,
    }));
    let w = h.device("worker", 1).await;
    let mut push = Vec::new();
    let mut docs = Vec::new();
    for id in 1..=4u128 {
        let mut d = new_report(&w, id, "quota");
        push.extend(push_all(id, &mut d));
        docs.push(d);
    }
    let r = h.sync(&w, 0, push).await;
    assert_eq!(codes(&r), ["Accepted", "Accepted", "Accepted", "quota_exceeded"]);
    // Notes on existing documents are not new documents.
    let heads = docs[0].get_heads();
    add_note(&mut docs[0], &author(&w, 5_000), "still working").unwrap();
    let r = h.sync(&w, 0, docs[0].get_changes(&heads).iter().flat_map(|c| push_one(1, c)).collect()).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted]);

    // A second device (the user's second today), then a third: refused.
    let w2 = h.device("worker", 2).await;
    let body = serde_json::json!({ "actor": ActorId::from([3u8; 16]).to_hex_string(), "label": "third" });
    let (s, e) = h.call("POST", "/v1/devices", Some(&h.token("worker")), body.to_string().into_bytes()).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("quota_exceeded")));

    // Five refused changes (written with an actor not registered to the device): all counted,
    // two stored.
    let mut push = Vec::new();
    let stranger = Device { actor: ActorId::from([9u8; 16]), ..w2.clone() };
    for id in 20..25u128 {
        push.extend(push_all(id, &mut new_report(&stranger, id, "not mine")));
    }
    let r = h.sync(&w2, 0, push).await;
    assert!(r.verdicts.iter().all(|v| v.outcome == Outcome::Forbidden), "{:?}", codes(&r));
    let (_, devices) = h.call("GET", "/v1/admin/devices", Some(&h.token("admin")), vec![]).await;
    let row =
        devices.as_array().unwrap().iter().find(|d| d["label"] == "worker's phone" && d["refused"] == 5);
    assert!(row.is_some(), "{devices}");
    let most: i64 = db(&h)
        .query_row("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM refusals GROUP BY device_id)", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(most, 2, "stored refusals are capped; the rest are counted");

    // The next day everything resets.
    h.advance(86_400_000);
    let r = h.sync(&w, 0, push_all(4, &mut docs[3])).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted]);
    let (s, _) = h.call("POST", "/v1/devices", Some(&h.token("worker")), body.to_string().into_bytes()).await;
    assert_eq!(s, StatusCode::CREATED);
}
