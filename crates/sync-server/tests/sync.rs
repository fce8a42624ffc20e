//! Server tests: the router through `oneshot`, and real sockets on port 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use automerge::{ActorId, AutoCommit};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use gridsync_core::doc::{self, Author, DocKind};
use gridsync_core::lifecycle::{Action, Level, Status};
use gridsync_core::org::{Org, Role};
use gridsync_core::protocol::{DeviceRegistered, Encoding, Outcome, PushedChange, SyncRequest, SyncResponse};
use gridsync_core::report::*;
use gridsync_server::store::{SqliteStore, Store};
use gridsync_server::{AppState, Clock, Config, app, demo};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

mod hostile;
mod limits;
mod transport;

struct FixedClock(AtomicI64);
impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Harness {
    state: Arc<AppState>,
    /// The server's clock: tests move it instead of sleeping.
    clock: Arc<FixedClock>,
    org: Org,
    users: Vec<demo::DemoUser>,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    harness_with(Config::default())
}

fn harness_with(config: Config) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let (org, users) = demo::install(&store, 1_000, "http://test").unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let clock = Arc::new(FixedClock(AtomicI64::new(1_700_000_000_000)));
    let state = AppState::new(store, org.clone(), clock.clone(), config).unwrap();
    Harness { state, clock, org, users, _dir: dir }
}

/// A registered device: its token, actor and user.
#[derive(Clone)]
struct Device {
    token: String,
    actor: ActorId,
    user: String,
    role: Role,
    grid: String,
    town: String,
}

impl Harness {
    fn token(&self, user: &str) -> String {
        self.users.iter().find(|u| u.user == user).unwrap().token.clone()
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app(self.state.clone()).oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json =
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, json)
    }

    async fn device(&self, user: &str, n: u8) -> Device {
        let actor = ActorId::from([n; 16]);
        let body = serde_json::json!({ "actor": actor.to_hex_string(), "label": format!("{user}'s phone") });
        let (status, json) =
            self.call("POST", "/v1/devices", Some(&self.token(user)), body.to_string().into_bytes()).await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        let reg: DeviceRegistered = serde_json::from_value(json).unwrap();
        // A unit handler covers no place; its device is given the first grid for test reports.
        let grid = self
            .org
            .grids
            .iter()
            .find(|g| reg.whoami.scope.covers(&g.id, &g.town))
            .unwrap_or(&self.org.grids[0]);
        Device {
            token: reg.token,
            actor,
            user: reg.whoami.user,
            role: reg.whoami.role,
            grid: grid.id.clone(),
            town: grid.town.clone(),
        }
    }

    async fn sync(&self, d: &Device, cursor: u64, changes: Vec<PushedChange>) -> SyncResponse {
        let req = SyncRequest { cursor, changes, budget: None };
        let (status, json) =
            self.call("POST", "/v1/sync", Some(&d.token), serde_json::to_vec(&req).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        serde_json::from_value(json).unwrap()
    }
}

fn author(d: &Device, at: i64) -> Author {
    Author { user: d.user.clone(), role: d.role, at }
}

fn new_report(d: &Device, id: u128, title: &str) -> AutoCommit {
    create_report(
        d.actor.clone(),
        &author(d, 1_000),
        &NewReport {
            anonymous: false,
            id: uuid::Uuid::from_u128(id),
            grid: d.grid.clone(),
            town: d.town.clone(),
            category: Category::Dispute,
            title: title.into(),
            description: "desc".into(),
            urgency: Urgency::Normal,
            location: Location::default(),
            parties: vec![],
        },
    )
    .unwrap()
}

fn push_all(id: u128, d: &mut AutoCommit) -> Vec<PushedChange> {
    d.get_changes(&[])
        .iter()
        .map(|c| PushedChange {
            doc: uuid::Uuid::from_u128(id).to_string(),
            kind: DocKind::Report,
            change: base64::engine::general_purpose::STANDARD.encode(c.raw_bytes()),
        })
        .collect()
}

/// Applies a response's documents to a local set of replicas.
fn absorb(local: &mut std::collections::BTreeMap<String, AutoCommit>, resp: &SyncResponse, actor: &ActorId) {
    for u in &resp.docs {
        let bytes = base64::engine::general_purpose::STANDARD.decode(&u.data).unwrap();
        match local.get_mut(&u.doc) {
            Some(d) => doc::load_incremental(d, &bytes).unwrap(),
            None => {
                assert_eq!(u.encoding, Encoding::Snapshot, "a new document comes as a snapshot");
                local.insert(u.doc.clone(), doc::load(&bytes, actor.clone()).unwrap());
            }
        }
    }
}

/// Writes a transition map by hand, as a forged client could, and returns the change.
fn forge_transition(
    d: &mut AutoCommit,
    by: &Device,
    action: Action,
    parent: &str,
    from: (Status, Level),
    to: (Status, Level),
) -> automerge::Change {
    use automerge::{ObjType, ROOT, ReadDoc, transaction::Transactable};
    let heads = d.get_heads();
    let list = d.get(ROOT, "transitions").unwrap().unwrap().1;
    let n = d.length(&list);
    let o = d.insert_object(&list, n, ObjType::Map).unwrap();
    for (k, v) in [
        ("id", format!("{}/{n}", by.actor.to_hex_string())),
        ("parent", parent.to_string()),
        ("action", action.to_string()),
        ("author", by.user.clone()),
        ("role", by.role.as_str().to_string()),
        ("from", from.0.to_string()),
        ("from_level", from.1.to_string()),
        ("to", to.0.to_string()),
        ("to_level", to.1.to_string()),
        ("reason", String::new()),
    ] {
        d.put(&o, k, v).unwrap();
    }
    d.put(&o, "at", 1i64).unwrap();
    d.commit();
    let mut changes = d.get_changes(&heads);
    assert_eq!(changes.len(), 1);
    changes.remove(0)
}

fn push_one(id: u128, c: &automerge::Change) -> Vec<PushedChange> {
    vec![PushedChange {
        doc: uuid::Uuid::from_u128(id).to_string(),
        kind: DocKind::Report,
        change: base64::engine::general_purpose::STANDARD.encode(c.raw_bytes()),
    }]
}

/// Changes of the parties document `pid` as pushed.
fn parties_pushed(pid: &str, changes: &[automerge::Change]) -> Vec<PushedChange> {
    changes
        .iter()
        .map(|c| PushedChange {
            doc: pid.to_string(),
            kind: DocKind::Parties,
            change: base64::engine::general_purpose::STANDARD.encode(c.raw_bytes()),
        })
        .collect()
}

fn outcomes(r: &SyncResponse) -> Vec<Outcome> {
    r.verdicts.iter().map(|v| v.outcome).collect()
}

#[tokio::test]
async fn push_then_retry_is_idempotent_and_others_in_scope_receive_it() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let a = h.device("assistant", 2).await;
    let mut doc = new_report(&w, 1, "wall");
    add_note(&mut doc, &author(&w, 2_000), "first visit").unwrap();
    let push = push_all(1, &mut doc);
    let r1 = h.sync(&w, 0, push.clone()).await;
    assert_eq!(outcomes(&r1), [Outcome::Accepted, Outcome::Accepted]);
    // The pusher does not get its own changes back.
    assert!(r1.docs.is_empty());
    let r2 = h.sync(&w, r1.cursor, push).await;
    assert_eq!(outcomes(&r2), [Outcome::Duplicate, Outcome::Duplicate]);
    assert!(r2.docs.is_empty());

    let ra = h.sync(&a, 0, vec![]).await;
    assert_eq!(ra.docs.len(), 1);
    assert!(!ra.has_more);
    let mut local = Default::default();
    absorb(&mut local, &ra, &a.actor);
    let view = materialize_report(&local[&uuid::Uuid::from_u128(1).to_string()]).unwrap();
    assert_eq!(view, materialize_report(&doc).unwrap());
    // Nothing new: an empty page and the same cursor.
    let again = h.sync(&a, ra.cursor, vec![]).await;
    assert!(again.docs.is_empty() && again.verdicts.is_empty());
    assert_eq!(again.cursor, ra.cursor);
}

#[tokio::test]
async fn a_device_that_holds_a_document_receives_only_the_new_changes() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let op = h.device("townop", 3).await;
    let mut doc = new_report(&w, 1, "wall");
    let r = h.sync(&w, 0, push_all(1, &mut doc)).await;
    let ro = h.sync(&op, 0, vec![]).await;
    let mut local = Default::default();
    absorb(&mut local, &ro, &op.actor);
    let heads = doc.get_heads();
    add_note(&mut doc, &author(&w, 3_000), "later").unwrap();
    let new: Vec<_> = doc.get_changes(&heads);
    assert_eq!(new.len(), 1);
    let push = vec![PushedChange {
        doc: uuid::Uuid::from_u128(1).to_string(),
        kind: DocKind::Report,
        change: base64::engine::general_purpose::STANDARD.encode(new[0].raw_bytes()),
    }];
    h.sync(&w, r.cursor, push).await;
    let ro2 = h.sync(&op, ro.cursor, vec![]).await;
    assert_eq!(ro2.docs.len(), 1);
    assert_eq!(ro2.docs[0].encoding, Encoding::Changes);
    absorb(&mut local, &ro2, &op.actor);
    assert_eq!(materialize_report(&local[&uuid::Uuid::from_u128(1).to_string()]).unwrap().notes.len(), 1);
}

#[tokio::test]
async fn scope_isolation_nothing_from_another_grid_or_town_is_returned() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let w2 = h.device("worker2", 5).await;
    let op = h.device("townop", 3).await;
    let county = h.device("countyop", 4).await;
    // A town operator of another town.
    let other_town = h.org.towns.iter().find(|t| t.id != w.town).unwrap().id.clone();
    let created =
        gridsync_server::add_user(&h.state, "其他", Role::TownOperator, &other_town, Some("town2")).unwrap();
    let mut h2 = h;
    h2.users.push(demo::DemoUser {
        user: "town2".into(),
        name: "其他".into(),
        role: Role::TownOperator,
        scope: other_town,
        token: created.token,
        init: String::new(),
    });
    let h = h2;
    let op2 = h.device("town2", 6).await;

    let a = h.device("assistant", 2).await;
    let mut mine = new_report(&w, 1, "in grid 1");
    h.sync(&w, 0, push_all(1, &mut mine)).await;
    let mut theirs = new_report(&w2, 2, "in grid 2");
    h.sync(&w2, 0, push_all(2, &mut theirs)).await;
    // The hub files one in grid 2 too, so worker2 has something to receive.
    let hub_in_grid2 = Device { grid: w2.grid.clone(), ..op.clone() };
    let mut hub = new_report(&hub_in_grid2, 3, "hub report in grid 2");
    let r = h.sync(&op, 0, push_all(3, &mut hub)).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted]);

    let docs = |r: &SyncResponse| r.docs.iter().map(|d| d.doc.clone()).collect::<Vec<_>>();
    let id = |n: u128| uuid::Uuid::from_u128(n).to_string();
    assert_eq!(docs(&h.sync(&a, 0, vec![]).await), [id(1)]);
    // worker2 gets the hub's report in its grid; its own it already has; grid 1's never.
    assert_eq!(docs(&h.sync(&w2, 0, vec![]).await), [id(3)]);
    assert_eq!(docs(&h.sync(&op, 0, vec![]).await), [id(1), id(2)]);
    assert_eq!(docs(&h.sync(&county, 0, vec![]).await), [id(1), id(2), id(3)]);
    assert!(docs(&h.sync(&op2, 0, vec![]).await).is_empty());
}

#[tokio::test]
async fn forbidden_changes_are_refused_while_the_rest_of_the_batch_lands() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let w2 = h.device("worker2", 5).await;
    let mut mine = new_report(&w, 1, "mine");
    let r = h.sync(&w, 0, push_all(1, &mut mine)).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted]);

    // worker2 edits worker's report (out of scope) and creates its own in the same request.
    let mut stolen = doc::load(&mine.save(), w2.actor.clone()).unwrap();
    let heads = stolen.get_heads();
    edit_report(
        &mut stolen,
        &author(&w2, 2_000),
        &ReportEdit { title: Some("mine now".into()), ..Default::default() },
    )
    .unwrap();
    let bad = stolen.get_changes(&heads);
    let mut own = new_report(&w2, 2, "own");
    let mut push = push_all(2, &mut own);
    push.insert(
        0,
        PushedChange {
            doc: uuid::Uuid::from_u128(1).to_string(),
            kind: DocKind::Report,
            change: base64::engine::general_purpose::STANDARD.encode(bad[0].raw_bytes()),
        },
    );
    let r = h.sync(&w2, 0, push).await;
    assert_eq!(outcomes(&r), [Outcome::Forbidden, Outcome::Accepted]);
    assert_eq!(r.verdicts[0].code.as_deref(), Some("out_of_scope"));
    assert!(r.verdicts[0].message.as_deref().unwrap().contains("outside your scope"));

    // A worker may not accept an escalation: a forged transition is refused, the note beside it lands.
    let mut esc = mine.clone();
    add_transition(&mut esc, &author(&w, 3_000), Action::Escalate, "help", None).unwrap();
    let tip = materialize_report(&esc).unwrap().tip;
    let forged = forge_transition(
        &mut esc,
        &w,
        Action::Accept,
        &tip,
        (Status::Escalated, Level::Town),
        (Status::Accepted, Level::Town),
    );
    let mut all = push_all(1, &mut esc);
    all.retain(|p| {
        let b = base64::engine::general_purpose::STANDARD.decode(&p.change).unwrap();
        doc::decode_change(&b).unwrap().hash() != forged.hash()
    });
    all.push(PushedChange {
        doc: uuid::Uuid::from_u128(1).to_string(),
        kind: DocKind::Report,
        change: base64::engine::general_purpose::STANDARD.encode(forged.raw_bytes()),
    });
    let r = h.sync(&w, 0, all).await;
    assert_eq!(outcomes(&r), [Outcome::Duplicate, Outcome::Accepted, Outcome::Forbidden]);
    assert_eq!(r.verdicts[2].code.as_deref(), Some("transition_not_allowed"));
    let (_, docs) = h.call("GET", "/v1/admin/documents", Some(&h.token("admin")), vec![]).await;
    let row =
        docs.as_array().unwrap().iter().find(|d| d["doc"] == uuid::Uuid::from_u128(1).to_string()).unwrap();
    assert_eq!(row["status"], "escalated");

    // Admins see the refusals per device.
    let (status, devices) = h.call("GET", "/v1/admin/devices", Some(&h.token("admin")), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let d2 = devices.as_array().unwrap().iter().find(|d| d["user"] == "worker2").unwrap();
    assert_eq!(d2["refused"], 1);
    assert!(d2["last_error"].as_str().unwrap().starts_with("out_of_scope"));
    // And non-admins do not.
    let (status, _) = h.call("GET", "/v1/admin/devices", Some(&w.token), vec![]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn missing_dependencies_are_named_and_the_change_lands_once_they_arrive() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let mut d = new_report(&w, 1, "x");
    add_note(&mut d, &author(&w, 2_000), "n").unwrap();
    let push = push_all(1, &mut d);
    let r = h.sync(&w, 0, vec![push[1].clone()]).await;
    assert_eq!(outcomes(&r), [Outcome::MissingDeps]);
    let first_hash =
        doc::decode_change(&base64::engine::general_purpose::STANDARD.decode(&push[0].change).unwrap())
            .unwrap()
            .hash();
    assert_eq!(r.verdicts[0].missing, [doc::hash_hex(&first_hash)]);
    // Out of order within one request is fine.
    let r = h.sync(&w, 0, vec![push[1].clone(), push[0].clone()]).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted, Outcome::Accepted]);
}

#[tokio::test]
async fn an_actor_not_registered_to_the_device_is_refused() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let imposter = Device { actor: ActorId::from([99u8; 16]), ..w.clone() };
    let mut d = new_report(&imposter, 1, "x");
    let r = h.sync(&w, 0, push_all(1, &mut d)).await;
    assert_eq!(outcomes(&r), [Outcome::Forbidden]);
    assert_eq!(r.verdicts[0].code.as_deref(), Some("actor_not_registered"));
}

#[tokio::test]
async fn pages_respect_the_budget_and_the_cursor_resumes_without_gaps_or_repeats() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let op = h.device("townop", 3).await;
    let mut cursor = 0;
    for i in 0..30u128 {
        let mut d = new_report(&w, 100 + i, &format!("report {i}"));
        cursor = h.sync(&w, cursor, push_all(100 + i, &mut d)).await.cursor;
    }
    let mut seen = Vec::new();
    let (mut cursor, mut pages) = (0, 0);
    loop {
        let req = SyncRequest { cursor, changes: vec![], budget: Some(2_000) };
        let (_, json) = h.call("POST", "/v1/sync", Some(&op.token), serde_json::to_vec(&req).unwrap()).await;
        let r: SyncResponse = serde_json::from_value(json).unwrap();
        pages += 1;
        seen.extend(r.docs.iter().map(|d| d.doc.clone()));
        cursor = r.cursor;
        if !r.has_more {
            break;
        }
        assert!(pages < 100);
    }
    assert!(pages > 3, "a small budget should take several pages, took {pages}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 30);
    assert_eq!(seen.len(), 30, "no document repeated across pages");
}

#[tokio::test]
async fn hostile_input_gets_4xx_json_and_the_server_keeps_serving() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let a = h.device("assistant", 2).await;
    let mut d = new_report(&w, 1, "kept");
    h.sync(&w, 0, push_all(1, &mut d)).await;

    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/automerge-crashers");
    let mut inputs: Vec<Vec<u8>> =
        std::fs::read_dir(&dir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    assert!(inputs.len() >= 16);
    let mut seed = 1u64;
    for n in 0..200usize {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        inputs.push((0..(n % 97)).map(|i| (seed >> (i % 56)) as u8).collect());
    }
    // Automerge's own panics (caught by the guard) are expected; a failing assertion still prints.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.location().is_some_and(|l| !l.file().starts_with('/') && !l.file().contains("automerge")) {
            default(info);
        }
    }));
    for bytes in &inputs {
        let push = vec![PushedChange {
            doc: uuid::Uuid::from_u128(1).to_string(),
            kind: DocKind::Report,
            change: base64::engine::general_purpose::STANDARD.encode(bytes),
        }];
        let body = serde_json::to_vec(&SyncRequest { cursor: 0, changes: push, budget: None }).unwrap();
        let (status, json) = h.call("POST", "/v1/sync", Some(&w.token), body).await;
        // Either refused outright, or answered with a per-change verdict that is not "accepted".
        if status == StatusCode::OK {
            let r: SyncResponse = serde_json::from_value(json).unwrap();
            assert!(r.verdicts.iter().all(|v| v.outcome != Outcome::Accepted), "garbage accepted");
        } else {
            assert!(status.is_client_error(), "{status}");
            assert!(json["code"].is_string() && json["message"].is_string(), "{json}");
        }
        // Raw garbage as the body itself.
        let (status, json) = h.call("POST", "/v1/sync", Some(&w.token), bytes.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
        assert_eq!(json["code"], "bad_json");
    }
    let _ = std::panic::take_hook();
    let bad_b64 = br#"{"cursor":0,"changes":[{"doc":"00000000-0000-0000-0000-000000000001","kind":"report","change":"!!"}]}"#;
    let (status, json) = h.call("POST", "/v1/sync", Some(&w.token), bad_b64.to_vec()).await;
    assert_eq!((status, json["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("malformed_change")));
    let (status, _) = h.call("POST", "/v1/sync", Some("nonsense"), b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, json) =
        h.call("POST", "/v1/sync", Some(&w.token), vec![b' '; gridsync_server::MAX_BODY_BYTES + 10]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");

    // Still serving, and the stored document still loads and reads.
    let r = h.sync(&a, 0, vec![]).await;
    let mut local = Default::default();
    absorb(&mut local, &r, &a.actor);
    assert_eq!(materialize_report(&local[&uuid::Uuid::from_u128(1).to_string()]).unwrap().title, "kept");
}

#[tokio::test]
async fn concurrent_offline_edits_merge_on_the_server_and_the_conflicts_are_listed() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let a = h.device("assistant", 2).await;
    let mut d = new_report(&w, 1, "x");
    let c0 = h.sync(&w, 0, push_all(1, &mut d)).await.cursor;
    let mut local_a = Default::default();
    let ra = h.sync(&a, 0, vec![]).await;
    absorb(&mut local_a, &ra, &a.actor);
    let id = uuid::Uuid::from_u128(1).to_string();
    let mut da: AutoCommit = local_a.remove(&id).unwrap();
    add_transition(&mut d, &author(&w, 5_000), Action::SelfResolve, "done", None).unwrap();
    add_transition(&mut da, &author(&a, 4_000), Action::Escalate, "hub please", None).unwrap();
    h.sync(&w, c0, push_all(1, &mut d)).await;
    let r = h.sync(&a, ra.cursor, push_all(1, &mut da)).await;
    assert!(outcomes(&r).contains(&Outcome::Accepted));
    let (_, docs) =
        h.call("GET", "/v1/admin/documents?conflicts=true", Some(&h.token("admin")), vec![]).await;
    let docs = docs.as_array().unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["status"], Status::Escalated.as_str());
    assert_eq!(docs[0]["conflicts"][0]["rule"], "transition_precedence");
}

#[tokio::test]
async fn health_metrics_openapi_and_errors_are_json() {
    let h = harness();
    let (s, _) = h.call("GET", "/healthz", None, vec![]).await;
    assert_eq!(s, StatusCode::OK);
    // Readiness is separate: it checks that a write can land (free disk, a writable database).
    let (s, body) = h.call("GET", "/readyz", None, vec![]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let w = h.device("worker", 1).await;
    h.sync(&w, 0, vec![]).await;
    let (s, m) = h.call("GET", "/metrics", None, vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let m = m.as_str().unwrap();
    assert!(m.contains("gridsync_sync_seconds_count 1"), "{m}");
    assert!(m.contains("gridsync_http_requests_total{route=\"/v1/sync\",status=\"200\"} 1"), "{m}");
    let (s, e) = h.call("GET", "/v1/nowhere", None, vec![]).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (s, e) = h.call("GET", "/v1/queue?all=maybe", Some(&h.token("townop")), vec![]).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{e}");
    let (_, m) = h.call("GET", "/metrics", None, vec![]).await;
    let m = m.as_str().unwrap();
    assert!(m.contains("route=\"unmatched\",status=\"404\""), "unknown paths share one label: {m}");
    assert!(m.contains("route=\"/v1/queue\",status=\"400\""), "{m}");
    let (s, o) = h.call("GET", "/openapi.json", None, vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(o["components"]["schemas"]["sync-request"].is_object());
    let (s, e) = h
        .call("POST", "/v1/devices", Some(&h.token("worker")), b"{\"actor\":\"xyz\",\"label\":\"\"}".to_vec())
        .await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_actor")));
    // A revoked user's devices stop at once.
    let (s, _) = h.call("POST", "/v1/admin/users/worker/revoke", Some(&h.token("admin")), vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let req = serde_json::to_vec(&SyncRequest { cursor: 0, changes: vec![], budget: None }).unwrap();
    let (s, e) = h.call("POST", "/v1/sync", Some(&w.token), req).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("revoked")));
}

// ------------------------------------------------------------------ real sockets

async fn start(h: &Harness) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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

#[tokio::test]
async fn real_socket_resume_after_a_dropped_response_loses_and_duplicates_nothing() {
    use tokio::io::AsyncWriteExt;
    let h = harness();
    let (url, stop, task) = start(&h).await;
    let w = h.device("worker", 1).await;
    let mut d = new_report(&w, 1, "over a flaky link");
    add_note(&mut d, &author(&w, 2_000), "n1").unwrap();
    let push = push_all(1, &mut d);
    let body = serde_json::to_vec(&SyncRequest { cursor: 0, changes: push.clone(), budget: None }).unwrap();

    // Send the request and hang up before reading the answer.
    let addr = url.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/sync HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        w.token,
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&body).await.unwrap();
    sock.flush().await.unwrap();
    drop(sock);

    // Retry over a fresh connection until the server has the changes: each retry is harmless.
    let client = reqwest::Client::new();
    let mut outcomes_seen = Vec::new();
    for _ in 0..50 {
        let r: SyncResponse = client
            .post(format!("{url}/v1/sync"))
            .bearer_auth(&w.token)
            .json(&SyncRequest { cursor: 0, changes: push.clone(), budget: None })
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        outcomes_seen = outcomes(&r);
        if outcomes_seen.iter().all(|o| *o == Outcome::Duplicate) {
            break;
        }
        assert!(outcomes_seen.iter().all(|o| matches!(o, Outcome::Accepted | Outcome::Duplicate)));
    }
    assert!(outcomes_seen.iter().all(|o| matches!(o, Outcome::Accepted | Outcome::Duplicate)));
    let (_, docs) = h.call("GET", "/v1/admin/documents", Some(&h.token("admin")), vec![]).await;
    assert_eq!(docs[0]["changes"], 2, "each change stored exactly once: {docs}");

    // Compressed both ways: a gzip request body is understood, and a large answer comes gzipped.
    let op = h.device("townop", 3).await;
    let raw = serde_json::to_vec(&SyncRequest { cursor: 0, changes: vec![], budget: None }).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let resp = client
        .post(format!("{url}/v1/sync"))
        .bearer_auth(&op.token)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["gridsync-protocol"], "1");
    let r: SyncResponse = resp.json().await.unwrap();
    assert_eq!(r.docs.len(), 1);

    stop.send(()).unwrap();
    task.await.unwrap();
}

// ------------------------------------------------------------------ the escalation queue

impl Harness {
    fn advance(&self, ms: i64) {
        self.clock.0.fetch_add(ms, Ordering::Relaxed);
    }

    async fn add_town_operator(&mut self, id: &str) {
        let town = self.users.iter().find(|u| u.user == "townop").unwrap().scope.clone();
        let created =
            gridsync_server::add_user(&self.state, id, Role::TownOperator, &town, Some(id)).unwrap();
        self.users.push(demo::DemoUser {
            user: id.into(),
            name: id.into(),
            role: Role::TownOperator,
            scope: town,
            token: created.token,
            init: String::new(),
        });
    }

    /// The server's stored view of a report.
    async fn stored(&self, id: u128) -> ReportView {
        let views = self.state.store.report_views(&gridsync_core::org::Scope::County).unwrap();
        let id = uuid::Uuid::from_u128(id).to_string();
        views.iter().map(|v| serde_json::from_str::<ReportView>(v).unwrap()).find(|v| v.id == id).unwrap()
    }
}

async fn escalated_report(h: &Harness, w: &Device, id: u128, urgency: Urgency) {
    let mut d = new_report(w, id, "needs the hub");
    edit_report(&mut d, &author(w, 1_500), &ReportEdit { urgency: Some(urgency), ..Default::default() })
        .unwrap();
    add_transition(&mut d, &author(w, 2_000), Action::Escalate, "help", None).unwrap();
    let r = h.sync(w, 0, push_all(id, &mut d)).await;
    assert!(outcomes(&r).iter().all(|o| *o == Outcome::Accepted));
}

#[tokio::test]
async fn two_operators_claiming_one_item_one_wins_and_the_other_is_told_who() {
    let mut h = harness();
    h.add_town_operator("townop2").await;
    let w = h.device("worker", 1).await;
    escalated_report(&h, &w, 1, Urgency::Normal).await;
    let doc = uuid::Uuid::from_u128(1).to_string();
    let path = format!("/v1/queue/{doc}/claim");
    let (t1, t2) = (h.token("townop"), h.token("townop2"));
    let (a, b) =
        tokio::join!(h.call("POST", &path, Some(&t1), vec![]), h.call("POST", &path, Some(&t2), vec![]));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT], "{a:?} {b:?}");
    let (winner, loser) = if a.0 == StatusCode::OK { (&t1, &t2) } else { (&t2, &t1) };
    let (won, lost) = if a.0 == StatusCode::OK { (&a.1, &b.1) } else { (&b.1, &a.1) };
    assert_eq!(lost["code"], "claimed");
    assert!(lost["message"].as_str().unwrap().contains(won["name"].as_str().unwrap()), "{lost}");

    // The holder renews; the other still cannot take it.
    h.advance(10 * 60_000);
    let (s, renewed) = h.call("POST", &path, Some(winner), vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(renewed["expires_at"].as_i64() > won["expires_at"].as_i64());
    h.advance(14 * 60_000);
    assert_eq!(h.call("POST", &path, Some(loser), vec![]).await.0, StatusCode::CONFLICT);
    // An expired lease frees the item.
    h.advance(2 * 60_000);
    let (s, taken) = h.call("POST", &path, Some(loser), vec![]).await;
    assert_eq!(s, StatusCode::OK, "{taken}");
    // Release hands it back at once.
    assert_eq!(
        h.call("POST", &format!("/v1/queue/{doc}/release"), Some(loser), vec![]).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(h.call("POST", &path, Some(winner), vec![]).await.0, StatusCode::OK);

    // Grid workers have no queue; a report not escalated is not in it.
    assert_eq!(h.call("POST", &path, Some(&w.token), vec![]).await.0, StatusCode::FORBIDDEN);
    let mut open = new_report(&w, 2, "still in the grid");
    h.sync(&w, 0, push_all(2, &mut open)).await;
    let (s, e) =
        h.call("POST", &format!("/v1/queue/{}/claim", uuid::Uuid::from_u128(2)), Some(&t1), vec![]).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_in_queue")));
}

#[tokio::test]
async fn the_queue_shows_server_deadlines_with_lights() {
    let h = harness();
    let w = h.device("worker", 1).await;
    escalated_report(&h, &w, 1, Urgency::Normal).await;
    escalated_report(&h, &w, 2, Urgency::High).await;
    let t = h.token("townop");
    // One is already accepted: it left the queue, and shows only among the items in hand.
    escalated_report(&h, &w, 3, Urgency::Low).await;
    let op = h.device("townop", 3).await;
    let mut local = Default::default();
    absorb(&mut local, &h.sync(&op, 0, vec![]).await, &op.actor);
    let id3 = uuid::Uuid::from_u128(3).to_string();
    let mut d3 = local.remove(&id3).unwrap();
    let heads = d3.get_heads();
    add_transition(&mut d3, &author(&op, 3_000), Action::Accept, "", None).unwrap();
    let accept: Vec<_> = d3
        .get_changes(&heads)
        .iter()
        .map(|c| PushedChange {
            doc: id3.clone(),
            kind: DocKind::Report,
            change: base64::engine::general_purpose::STANDARD.encode(c.raw_bytes()),
        })
        .collect();
    assert_eq!(outcomes(&h.sync(&op, 0, accept).await), [Outcome::Accepted]);
    let (_, all) = h.call("GET", "/v1/queue?all=true", Some(&t), vec![]).await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert!(all.as_array().unwrap().iter().any(|e| e["doc"] == id3.as_str() && e["step"] == "dispatch"));

    let (s, q) = h.call("GET", "/v1/queue", Some(&t), vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let q = q.as_array().unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!(q[0]["urgency"], "high", "most urgent first");
    assert_eq!(q[1]["step"], "accept");
    assert_eq!(q[1]["due"].as_i64().unwrap() - q[1]["since"].as_i64().unwrap(), 60 * 60_000);
    assert_eq!(q[1]["light"], "green");
    h.advance(50 * 60_000);
    let (_, q) = h.call("GET", "/v1/queue", Some(&t), vec![]).await;
    assert_eq!((q[0]["light"].as_str(), q[1]["light"].as_str()), (Some("red"), Some("yellow")));
    // The county has nothing yet; grid workers have no queue.
    let (_, cq) = h.call("GET", "/v1/queue", Some(&h.token("countyop")), vec![]).await;
    assert_eq!(cq.as_array().unwrap().len(), 0);
    assert_eq!(h.call("GET", "/v1/queue", Some(&w.token), vec![]).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn auto_escalation_runs_on_an_injected_clock_and_writes_server_transitions() {
    // The county's choice: unaccepted items move up (off by default, see the next test).
    let mut config = Config::default();
    config.policy.auto.unaccepted_to_county = true;
    // Escalations only here; reminders and supervision have their own test.
    (config.policy.auto.remind_overdue, config.policy.auto.supervise_after_days) = (false, 0);
    let h = harness_with(config);
    let w = h.device("worker", 1).await;
    let a = h.device("assistant", 2).await;
    // A critical report, still open in its grid.
    let mut d = new_report(&w, 1, "gas leak");
    edit_report(
        &mut d,
        &author(&w, 1_500),
        &ReportEdit { urgency: Some(Urgency::Critical), ..Default::default() },
    )
    .unwrap();
    // And a normal one, escalated but never accepted.
    let mut n = new_report(&w, 2, "blocked drain");
    h.sync(&w, 0, push_all(1, &mut d)).await;
    h.sync(&w, 0, push_all(2, &mut n)).await;
    escalated_report(&h, &w, 3, Urgency::Normal).await;

    assert_eq!(gridsync_server::auto::run_once(&h.state).await.unwrap(), 1);
    let v = h.stored(1).await;
    assert_eq!((v.status, v.level), (Status::Escalated, Level::Town));
    let t = v.transitions.iter().find(|t| t.applied).unwrap();
    assert_eq!((t.author.as_str(), t.role), ("system", Role::System));
    assert!(t.reason.contains("critical"));
    // Nothing twice.
    assert_eq!(gridsync_server::auto::run_once(&h.state).await.unwrap(), 0);

    // Devices see the server's transition after sync.
    let mut local = Default::default();
    absorb(&mut local, &h.sync(&a, 0, vec![]).await, &a.actor);
    let seen = materialize_report(&local[&uuid::Uuid::from_u128(1).to_string()]).unwrap();
    assert_eq!(seen.status, Status::Escalated);

    // Not accepted within the accept limit (normal: 60 min; critical: 15 min) → the county.
    h.advance(14 * 60_000);
    assert_eq!(gridsync_server::auto::run_once(&h.state).await.unwrap(), 0);
    h.advance(2 * 60_000);
    assert_eq!(
        gridsync_server::auto::run_once(&h.state).await.unwrap(),
        1,
        "the critical one, after 15 minutes"
    );
    assert_eq!(h.stored(1).await.level, Level::County);
    assert_eq!(h.stored(3).await.level, Level::Town);
    h.advance(45 * 60_000);
    assert_eq!(
        gridsync_server::auto::run_once(&h.state).await.unwrap(),
        1,
        "the normal one, after 60 minutes"
    );
    assert_eq!(h.stored(3).await.level, Level::County);
    assert_eq!(h.stored(2).await.status, Status::Open, "a normal open report stays with its grid");
    assert_eq!(gridsync_server::auto::run_once(&h.state).await.unwrap(), 0);
}

/// Issue 12 item 1: by default ownership never changes on a timer — an item the town has not
/// accepted in time stays at the town, red in its queue, with the server's reminder (催办) and,
/// two days on, its supervision order (督办), which the town answers; the county supervises by
/// hand too.
#[tokio::test]
async fn by_default_an_overdue_town_item_stays_at_the_town_red_in_its_queue() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let op = h.device("townop", 3).await;
    let county = h.device("countyop", 4).await;
    escalated_report(&h, &w, 3, Urgency::Normal).await;
    let queue = |user: &'static str| {
        let h = &h;
        async move { h.call("GET", "/v1/queue", Some(&h.token(user)), vec![]).await.1 }
    };
    // An hour in, due: nothing yet.
    h.advance(60 * 60_000);
    assert_eq!(gridsync_server::auto::run_once(&h.state).await.unwrap(), 0);
    // Past the limit: one reminder (催办), once; the item stays at the town, red.
    h.advance(2 * 60 * 60_000);
    assert_eq!(gridsync_server::auto::run_once(&h.state).await.unwrap(), 1);
    assert_eq!(gridsync_server::auto::run_once(&h.state).await.unwrap(), 0, "once");
    let v = h.stored(3).await;
    assert_eq!((v.status, v.level), (Status::Escalated, Level::Town));
    assert!(v.reminded());
    let q = queue("townop").await;
    assert_eq!((q[0]["step"].as_str(), q[0]["light"].as_str()), (Some("accept"), Some("red")), "{q}");
    assert_eq!(q[0]["reminded"], true);
    // Two days past the limit (no working calendar: calendar days): the server's yellow
    // supervision order (督办), once; still at the town.
    h.advance(2 * 24 * 60 * 60_000);
    assert_eq!(gridsync_server::auto::run_once(&h.state).await.unwrap(), 1);
    assert_eq!(gridsync_server::auto::run_once(&h.state).await.unwrap(), 0);
    let v = h.stored(3).await;
    assert_eq!(v.level, Level::Town, "ownership never changes on a timer");
    let s = v.open_supervision().unwrap();
    assert_eq!((s.role, s.result.as_deref()), (Role::System, Some("yellow")));
    assert_eq!(queue("townop").await[0]["supervision"], "yellow");
    // The holder answers; a grid worker cannot answer for the town.
    let key = uuid::Uuid::from_u128(3).to_string();
    let mut local = Default::default();
    absorb(&mut local, &h.sync(&op, 0, vec![]).await, &op.actor);
    let mut d = local.remove(&key).unwrap();
    let mut wd = doc::load(&d.save(), w.actor.clone()).unwrap();
    let heads = wd.get_heads();
    add_record_until(&mut wd, &author(&w, 9_000), Record::Answer, "我来答", None, None, None).unwrap();
    let r = h.sync(&w, 0, push_one(3, &wd.get_changes(&heads)[0])).await;
    assert_eq!(r.verdicts[0].code.as_deref(), Some("record_not_allowed"), "{:?}", r.verdicts);
    let heads = d.get_heads();
    add_record_until(&mut d, &author(&op, 9_000), Record::Answer, "今天上午受理", None, None, None).unwrap();
    let r = h.sync(&op, 0, push_one(3, &d.get_changes(&heads)[0])).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted], "{:?}", r.verdicts);
    assert!(queue("townop").await[0].get("supervision").is_none());
    // The county issues a red order by hand; a town operator cannot.
    let mut c = Default::default();
    absorb(&mut c, &h.sync(&county, 0, vec![]).await, &county.actor);
    let mut cd = c.remove(&key).unwrap();
    let heads = cd.get_heads();
    add_record_until(
        &mut cd,
        &author(&county, 9_500),
        Record::Supervise,
        "立即受理",
        None,
        Some("red"),
        None,
    )
    .unwrap();
    let r = h.sync(&county, 0, push_one(3, &cd.get_changes(&heads)[0])).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted], "{:?}", r.verdicts);
    assert_eq!(queue("townop").await[0]["supervision"], "red");
    let heads = d.get_heads();
    add_record_until(&mut d, &author(&op, 9_600), Record::Supervise, "自己督办自己", None, Some("red"), None)
        .unwrap();
    let r = h.sync(&op, 0, push_one(3, &d.get_changes(&heads)[0])).await;
    assert_eq!(r.verdicts[0].code.as_deref(), Some("record_not_allowed"), "{:?}", r.verdicts);
}

#[tokio::test]
async fn indicators_cover_the_callers_scope() {
    let h = harness();
    let w = h.device("worker", 1).await;
    escalated_report(&h, &w, 1, Urgency::Normal).await;
    let (s, i) = h.call("GET", "/v1/admin/stats", Some(&h.token("admin")), vec![]).await;
    assert_eq!(s, StatusCode::OK, "{i}");
    assert_eq!((i["reports"].as_u64(), i["escalated"].as_u64()), (Some(1), Some(1)));
    let (_, i) = h.call("GET", "/v1/admin/stats?from=0&to=1", Some(&h.token("admin")), vec![]).await;
    assert_eq!(i["reports"], 0);
    let (s, i) = h.call("GET", "/v1/admin/stats", Some(&h.token("townop")), vec![]).await;
    assert_eq!((s, i["reports"].as_u64()), (StatusCode::OK, Some(1)));
    let (s, _) = h.call("GET", "/v1/admin/stats?town=T08", Some(&h.token("townop")), vec![]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(h.call("GET", "/v1/admin/stats", Some(&w.token), vec![]).await.0, StatusCode::FORBIDDEN);
}

/// Pulls with a tiny budget (one document a page) until done, absorbing every page.
async fn pull_all(
    h: &Harness,
    d: &Device,
    mut cursor: u64,
    local: &mut std::collections::BTreeMap<String, AutoCommit>,
) -> u64 {
    for _ in 0..500 {
        let req = SyncRequest { cursor, changes: vec![], budget: Some(1) };
        let (status, json) =
            h.call("POST", "/v1/sync", Some(&d.token), serde_json::to_vec(&req).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let r: SyncResponse = serde_json::from_value(json).unwrap();
        assert!(r.cursor >= cursor, "the cursor never goes back");
        absorb(local, &r, &d.actor);
        cursor = r.cursor;
        if !r.has_more {
            return cursor;
        }
    }
    panic!("paging did not finish");
}

#[tokio::test]
async fn small_pages_over_interleaved_updates_skip_nothing() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let op = h.device("townop", 3).await;
    // The operator already holds the first documents.
    let mut ids: Vec<u128> = (0..4).collect();
    let mut docs: Vec<AutoCommit> = ids.iter().map(|&i| new_report(&w, i, &format!("r{i}"))).collect();
    let mut wc = 0;
    for (i, d) in docs.iter_mut().enumerate() {
        wc = h.sync(&w, wc, push_all(i as u128, d)).await.cursor;
    }
    let mut held = Default::default();
    let op_cursor = pull_all(&h, &op, 0, &mut held).await;
    // Then interleaved: old documents edited, new ones created in between, one change per push.
    for round in 0..6u128 {
        for i in 0..docs.len() {
            if (i as u128 + round).is_multiple_of(3) {
                let heads = docs[i].get_heads();
                add_note(&mut docs[i], &author(&w, 10_000 + round as i64), &format!("n{round}")).unwrap();
                let change = docs[i].get_changes(&heads);
                let push = vec![PushedChange {
                    doc: uuid::Uuid::from_u128(ids[i]).to_string(),
                    kind: DocKind::Report,
                    change: base64::engine::general_purpose::STANDARD.encode(change[0].raw_bytes()),
                }];
                let r = h.sync(&w, wc, push).await;
                assert_eq!(outcomes(&r), [Outcome::Accepted]);
                wc = r.cursor;
            }
        }
        let id = 100 + round;
        let mut d = new_report(&w, id, &format!("new {round}"));
        wc = h.sync(&w, wc, push_all(id, &mut d)).await.cursor;
        docs.push(d);
        ids.push(id);
    }
    // The device that held some documents, and a brand-new one, both end with everything.
    let op2 = h.device("countyop", 4).await;
    let mut fresh = Default::default();
    pull_all(&h, &op, op_cursor, &mut held).await;
    pull_all(&h, &op2, 0, &mut fresh).await;
    for (k, id) in ids.iter().enumerate() {
        let want = materialize_report(&docs[k]).unwrap();
        let key = uuid::Uuid::from_u128(*id).to_string();
        assert_eq!(materialize_report(&held[&key]).unwrap(), want, "held copy of {id}");
        assert_eq!(materialize_report(&fresh[&key]).unwrap(), want, "fresh copy of {id}");
    }
}

#[tokio::test]
async fn a_transition_naming_an_older_parent_than_its_author_had_seen_is_refused() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let op = h.device("townop", 3).await;
    let county = h.device("countyop", 4).await;
    escalated_report(&h, &w, 1, Urgency::Normal).await;
    let key = uuid::Uuid::from_u128(1).to_string();
    // The town accepts; the county takes it over.
    let mut town = Default::default();
    absorb(&mut town, &h.sync(&op, 0, vec![]).await, &op.actor);
    let mut d = town.remove(&key).unwrap();
    let heads = d.get_heads();
    add_transition(&mut d, &author(&op, 3_000), Action::Accept, "", None).unwrap();
    let accept_tip = materialize_report(&d).unwrap().tip;
    let r = h.sync(&op, 0, push_one(1, &d.get_changes(&heads)[0])).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted]);
    let mut c = Default::default();
    absorb(&mut c, &h.sync(&county, 0, vec![]).await, &county.actor);
    let mut cd = c.remove(&key).unwrap();
    let heads = cd.get_heads();
    add_transition(&mut cd, &author(&county, 4_000), Action::TakeOver, "the county takes it", None).unwrap();
    assert_eq!(
        outcomes(&h.sync(&county, 0, push_one(1, &cd.get_changes(&heads)[0])).await),
        [Outcome::Accepted]
    );

    // The town operator has seen that, yet writes a resolve as if straight after its accept.
    let mut local = std::collections::BTreeMap::from([(key.clone(), d)]);
    absorb(&mut local, &h.sync(&op, 0, vec![]).await, &op.actor);
    let mut d = local.remove(&key).unwrap();
    assert_eq!(materialize_report(&d).unwrap().level, Level::County);
    let forged = forge_transition(
        &mut d,
        &op,
        Action::Resolve,
        &accept_tip,
        (Status::Accepted, Level::Town),
        (Status::Resolved, Level::Town),
    );
    let r = h.sync(&op, 0, push_one(1, &forged)).await;
    assert_eq!(outcomes(&r), [Outcome::Forbidden]);
    assert_eq!(r.verdicts[0].code.as_deref(), Some("transition_not_from_latest"));
    assert_eq!(h.stored(1).await.level, Level::County);
}

#[tokio::test]
async fn a_change_pushed_under_another_documents_id_is_refused_and_spoils_nothing() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let mut d = new_report(&w, 1, "mine");
    let push = push_all(1, &mut d);
    assert_eq!(outcomes(&h.sync(&w, 0, push.clone()).await), [Outcome::Accepted]);
    // The same creation change again under a second id, in a request with a good change beside it.
    let mut other = new_report(&w, 2, "other");
    let mut bad = push.clone();
    bad[0].doc = uuid::Uuid::from_u128(3).to_string();
    bad.extend(push_all(2, &mut other));
    let r = h.sync(&w, 0, bad).await;
    assert_eq!(outcomes(&r), [Outcome::Forbidden, Outcome::Accepted]);
    assert_eq!(r.verdicts[0].code.as_deref(), Some("malformed"));
    let (_, docs) = h.call("GET", "/v1/admin/documents", Some(&h.token("admin")), vec![]).await;
    assert_eq!(docs.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn while_one_operator_holds_a_claim_the_others_hub_steps_are_refused() {
    let mut h = harness();
    h.add_town_operator("townop2").await;
    let w = h.device("worker", 1).await;
    let op1 = h.device("townop", 3).await;
    let op2 = h.device("townop2", 6).await;
    escalated_report(&h, &w, 1, Urgency::Normal).await;
    let doc = uuid::Uuid::from_u128(1).to_string();
    let (s, _) = h.call("POST", &format!("/v1/queue/{doc}/claim"), Some(&op1.token), vec![]).await;
    assert_eq!(s, StatusCode::OK);
    // Releasing someone else's claim is refused, in words.
    let (s, e) = h.call("POST", &format!("/v1/queue/{doc}/release"), Some(&op2.token), vec![]).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::CONFLICT, Some("not_holder")));

    let accept_by = |d: &Device| {
        let d = d.clone();
        let h = &h;
        async move {
            let mut local = Default::default();
            absorb(&mut local, &h.sync(&d, 0, vec![]).await, &d.actor);
            let mut doc = local.remove(&uuid::Uuid::from_u128(1).to_string()).unwrap();
            let heads = doc.get_heads();
            add_transition(&mut doc, &author(&d, 5_000), Action::Accept, "", None).unwrap();
            h.sync(&d, 0, push_one(1, &doc.get_changes(&heads)[0])).await
        }
    };
    let r = accept_by(&op2).await;
    assert_eq!(outcomes(&r), [Outcome::Forbidden]);
    assert_eq!(r.verdicts[0].code.as_deref(), Some("claimed"));
    assert!(r.verdicts[0].message.as_deref().unwrap().contains("townop"), "{:?}", r.verdicts[0]);
    assert_eq!(outcomes(&accept_by(&op1).await), [Outcome::Accepted]);
    assert_eq!(h.stored(1).await.status, Status::Accepted);
}

#[tokio::test]
async fn a_cursor_ahead_of_the_server_is_refused() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let req = SyncRequest { cursor: 99_999, changes: vec![], budget: None };
    let (s, e) = h.call("POST", "/v1/sync", Some(&w.token), serde_json::to_vec(&req).unwrap()).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_cursor")), "{e}");
}

// ------------------------------------------------------------------ revocation, identity, import

#[tokio::test]
async fn a_revoked_device_is_told_so_every_attempt_is_counted_and_the_user_stays_listed() {
    use gridsync_core::protocol::{DeviceStatus, UserRow};
    let h = harness();
    let w = h.device("worker", 1).await;
    h.sync(&w, 0, vec![]).await;
    let admin = h.token("admin");
    let (s, _) = h.call("POST", "/v1/admin/users/worker/revoke", Some(&admin), vec![]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let now = h.clock.now_ms();
    let req = serde_json::to_vec(&SyncRequest { cursor: 0, changes: vec![], budget: None }).unwrap();
    for _ in 0..2 {
        let (s, e) = h.call("POST", "/v1/sync", Some(&w.token), req.clone()).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert_eq!(e["code"], "revoked");
        assert_eq!(e["message"], gridsync_server::api::REVOKED_MESSAGE);
    }
    h.clock.0.fetch_add(5_000, Ordering::Relaxed);
    let (s, e) = h.call("GET", "/v1/whoami", Some(&w.token), vec![]).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("revoked")), "any authenticated route");
    // The user token too; an unknown token is still 401.
    let (s, e) = h.call("GET", "/v1/whoami", Some(&h.token("worker")), vec![]).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("revoked")));
    let body = serde_json::json!({ "actor": "ab".repeat(16), "label": "new phone" }).to_string();
    let (s, e) = h.call("POST", "/v1/devices", Some(&h.token("worker")), body.into_bytes()).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::FORBIDDEN, Some("revoked")));
    let (s, e) = h.call("GET", "/v1/whoami", Some("gsd_nobody"), vec![]).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthenticated")));

    let (s, devices) = h.call("GET", "/v1/admin/devices", Some(&admin), vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let devices: Vec<DeviceStatus> = serde_json::from_value(devices).unwrap();
    let d = devices.iter().find(|d| d.user == "worker").unwrap();
    assert!(d.revoked);
    assert_eq!(d.refused_attempts, 3, "two syncs and a whoami");
    assert_eq!(d.last_refused_at, Some(now + 5_000));

    let (s, users) = h.call("GET", "/v1/admin/users", Some(&admin), vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let users: Vec<UserRow> = serde_json::from_value(users).unwrap();
    assert_eq!(users.len(), 8, "revoked users are listed too");
    let worker = users.iter().find(|u| u.user == "worker").unwrap();
    assert_eq!(worker.revoked_at, Some(now));
    assert!(users.iter().filter(|u| u.user != "worker").all(|u| u.revoked_at.is_none()));
}

#[tokio::test]
async fn revoking_frees_the_users_claims() {
    let h = harness();
    let w = h.device("worker", 1).await;
    escalated_report(&h, &w, 1, Urgency::Normal).await;
    let doc = uuid::Uuid::from_u128(1).to_string();
    let (s, _) = h.call("POST", &format!("/v1/queue/{doc}/claim"), Some(&h.token("townop")), vec![]).await;
    assert_eq!(s, StatusCode::OK);
    h.state.store.revoke_user("townop", h.clock.now_ms()).unwrap();
    assert_eq!(h.state.store.claim_on(&doc, h.clock.now_ms()).unwrap(), None);
}

#[tokio::test]
async fn the_server_says_who_it_is_without_a_token_and_at_registration() {
    use gridsync_core::protocol::ServerInfo;
    let h = harness();
    let (s, info) = h.call("GET", "/v1/server", None, vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let info: ServerInfo = serde_json::from_value(info).unwrap();
    assert_eq!(info.server_id, h.state.server_id);
    assert!(uuid::Uuid::parse_str(&info.server_id).is_ok());
    assert_eq!(info.protocol, gridsync_core::protocol::PROTOCOL_VERSION);
    assert_eq!(info.county, h.org.county.name);
    let body = serde_json::json!({ "actor": "cd".repeat(16), "label": "phone" }).to_string();
    let (s, reg) = h.call("POST", "/v1/devices", Some(&h.token("worker")), body.into_bytes()).await;
    assert_eq!(s, StatusCode::CREATED);
    let reg: DeviceRegistered = serde_json::from_value(reg).unwrap();
    assert_eq!(reg.server_id, info.server_id);
    assert_eq!(reg.org.county.bbox, h.org.county.bbox, "the device gets the county's bounds");
    // Labels follow the core limit.
    let long = serde_json::json!({ "actor": "ef".repeat(16), "label": "机".repeat(65) }).to_string();
    let (s, e) = h.call("POST", "/v1/devices", Some(&h.token("worker")), long.into_bytes()).await;
    assert_eq!((s, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("too_long")));
    // The OpenAPI document has the route, and every schema it names exists.
    let (_, o) = h.call("GET", "/openapi.json", None, vec![]).await;
    assert_eq!(o["paths"]["/v1/server"]["get"]["security"], serde_json::json!([]));
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("$ref", Value::String(r)) if r.starts_with("#/components/") => out.push(r.clone()),
                        _ => refs(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&o["paths"], &mut all);
    assert!(all.contains(&"#/components/schemas/server-info".to_string()));
    for r in all {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(o["components"]["schemas"][name].is_object(), "{r} is not in the document");
    }
}

#[tokio::test]
async fn users_are_found_by_id_or_by_a_name_only_one_active_user_has() {
    use gridsync_server::{UserError, add_user, find_user};
    let h = harness();
    let store = &*h.state.store;
    assert_eq!(find_user(store, "worker2", true).unwrap().name, "赵敏");
    assert_eq!(find_user(store, "赵敏", true).unwrap().id, "worker2");
    let grid = h.org.grids[0].id.clone();
    add_user(&h.state, "赵敏", Role::GridWorker, &grid, Some("zhao2")).unwrap();
    match find_user(store, "赵敏", true) {
        Err(UserError::Ambiguous { ids, .. }) => assert_eq!(ids, ["worker2", "zhao2"]),
        other => panic!("{other:?}"),
    }
    assert!(find_user(store, "nobody", true).is_err());
    store.revoke_user("zhao2", 1).unwrap();
    assert_eq!(find_user(store, "赵敏", true).unwrap().id, "worker2", "revoked users do not count");
    assert!(matches!(find_user(store, "zhao2", true), Err(UserError::Revoked(_))));
}

#[test]
fn the_user_commands_revoke_by_unique_name_refuse_ambiguous_names_and_warn_on_repeated_names() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridsync-server"))
            .arg("--data")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(run(&["org", "demo"]).0);
    let org = gridsync_core::org::demo_county(demo::DEMO_SEED);
    let grid = org.grids[0].id.as_str();
    let add = |name: &str, id: &str| {
        run(&["user", "add", "--name", name, "--role", "grid_worker", "--scope", grid, "--id", id])
    };
    let (ok, _, err) = add("周杰", "zhou1");
    assert!(ok && !err.contains("warning"), "{err}");
    let (ok, _, err) = add("周杰", "zhou2");
    assert!(ok, "a repeated name still creates the user: {err}");
    assert!(err.contains("warning") && err.contains("zhou1"), "{err}");
    assert!(add("吴刚", "wu1").0);
    let (ok, _, err) = run(&["user", "revoke", "周杰"]);
    assert!(!ok);
    assert!(err.contains("zhou1") && err.contains("zhou2"), "the error lists the ids: {err}");
    let (ok, out, err) = run(&["user", "revoke", "吴刚"]);
    assert!(ok, "{err}");
    assert!(out.contains("wu1"), "{out}");
    let (ok, out, _) = run(&["user", "revoke", "zhou2"]);
    assert!(ok && out.contains("zhou2"));
    let (_, list, _) = run(&["user", "list"]);
    assert!(list.lines().any(|l| l.starts_with("wu1") && l.contains("revoked")), "{list}");
    // With zhou2 revoked, the name is unique again.
    let (ok, out, err) = run(&["user", "revoke", "周杰"]);
    assert!(ok && out.contains("zhou1"), "{out}{err}");

    // import-unsent: an active user only, and never beside a running server.
    let file = dir.path().join("unsent.json");
    let export = serde_json::json!({ "format": "gridsync-unsent/1", "exported_at": 1, "server_id": "",
        "user": "zhou1", "name": "周杰", "device": "d", "documents": [] });
    std::fs::write(&file, export.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let (ok, _, err) = run(&["import-unsent", file, "--as", "zhou1"]);
    assert!(!ok && err.contains("revoked"), "{err}");
    let (ok, out, err) = run(&["import-unsent", file, "--as", "worker"]);
    assert!(!ok, "no such user: {out}");
    assert!(err.contains("worker"), "{err}");
    assert!(add("郑爽", "zheng1").0);
    let (ok, out, err) = run(&["import-unsent", file, "--as", "郑爽"]);
    assert!(ok, "{err}");
    assert!(out.contains("0 document(s)") && out.contains("zheng1"), "{out}");
    let lock = std::fs::File::open(dir.path().join("server.lock")).unwrap();
    lock.lock().unwrap();
    let (ok, _, err) = run(&["import-unsent", file, "--as", "zheng1"]);
    assert!(!ok && err.contains("stop the server"), "{err}");
    drop(lock);
}

/// The export a revoked device would write: each document's unsent changes and whole snapshot.
fn unsent_export(
    h: &Harness,
    docs: Vec<(u128, &mut AutoCommit, Vec<automerge::ChangeHash>)>,
) -> gridsync_core::protocol::UnsentExport {
    use gridsync_core::protocol::{UNSENT_FORMAT, UnsentDocument, UnsentExport};
    let b64 = base64::engine::general_purpose::STANDARD;
    UnsentExport {
        format: UNSENT_FORMAT.into(),
        exported_at: 5_000,
        server_id: h.state.server_id.clone(),
        user: "worker".into(),
        name: "王芳".into(),
        device: "the-old-phone".into(),
        documents: docs
            .into_iter()
            .map(|(id, d, sent)| UnsentDocument {
                doc: uuid::Uuid::from_u128(id).to_string(),
                kind: DocKind::Report,
                title: materialize_report(d).unwrap().title,
                changes: d.get_changes(&sent).iter().map(|c| b64.encode(c.raw_bytes())).collect(),
                snapshot: b64.encode(d.save()),
            })
            .collect(),
    }
}

fn stored_report(h: &Harness, id: u128) -> ReportView {
    let rec = h.state.store.load_doc(&uuid::Uuid::from_u128(id).to_string()).unwrap().unwrap();
    materialize_report(&doc::load(&rec.snapshot, ActorId::from([0u8; 16])).unwrap()).unwrap()
}

#[tokio::test]
async fn unsent_work_of_a_revoked_device_is_imported_in_another_users_name() {
    use gridsync_server::import::import_unsent;
    use gridsync_server::{add_user, find_user};
    let h = harness();
    let grid = h.org.grids[0].id.clone();
    add_user(&h.state, "孙丽", Role::GridWorker, &grid, Some("worker3")).unwrap();
    let w = h.device("worker", 1).await;
    // Report 1 reached the server; then, offline: a note on it, and a new report 2 with a note and
    // an escalation.
    let mut sent = new_report(&w, 1, "围墙纠纷");
    h.sync(&w, 0, push_all(1, &mut sent)).await;
    let sent_heads = sent.get_heads();
    add_note(&mut sent, &author(&w, 3_000), "到场调解").unwrap();
    let mut fresh = new_report(&w, 2, "路灯损坏");
    add_note(&mut fresh, &author(&w, 4_000), "已拍照").unwrap();
    add_transition(&mut fresh, &author(&w, 4_500), Action::Escalate, "需要镇里协调", None).unwrap();
    h.state.store.revoke_user("worker", h.clock.now_ms()).unwrap();
    let export = unsent_export(&h, vec![(1, &mut sent, sent_heads), (2, &mut fresh, vec![])]);

    // A worker of another grid cannot take it: the usual refusal, nothing stored.
    let outsider = find_user(&*h.state.store, "worker2", true).unwrap();
    let results = import_unsent(&h.state, &export, &outsider).await.unwrap();
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(r.refused.first().map(|(c, _)| c.as_str()), Some("out_of_scope"), "{}", r.summary());
        assert!(!r.created && r.notes == 0);
    }
    assert!(h.state.store.load_doc(&uuid::Uuid::from_u128(2).to_string()).unwrap().is_none());

    // A worker of the same grid can.
    let heir = find_user(&*h.state.store, "孙丽", true).unwrap();
    let results = import_unsent(&h.state, &export, &heir).await.unwrap();
    let (one, two) = (&results[0], &results[1]);
    assert!(one.refused.is_empty() && one.error.is_none(), "{}", one.summary());
    assert_eq!((one.created, one.notes), (false, 1));
    assert!(one.not_imported.is_empty(), "{:?}", one.not_imported);
    assert!(two.refused.is_empty() && two.error.is_none(), "{}", two.summary());
    assert_eq!((two.created, two.notes), (true, 1));
    assert!(two.not_imported.iter().any(|n| n.starts_with("escalate")), "{:?}", two.not_imported);
    assert!(two.summary().contains("imported: report created with 1 note(s)"), "{}", two.summary());
    assert!(two.summary().contains("not imported, redo by hand: escalate"), "{}", two.summary());
    assert!(results[0].summary().contains("imported: 1 note(s)"), "{}", results[0].summary());

    let v1 = stored_report(&h, 1);
    assert_eq!(v1.reporter, "worker", "an existing report keeps its reporter");
    let note = v1.notes.last().unwrap();
    assert_eq!((note.author.as_str(), note.role), ("worker3", Role::GridWorker));
    assert_eq!(note.text, "（转自 王芳 的设备）到场调解");
    let v2 = stored_report(&h, 2);
    let device_view = materialize_report(&fresh).unwrap();
    assert_eq!(v2.reporter, "worker3");
    // Party entries are re-created under the heir's actor: same people, new entry ids.
    let people = |v: &ReportView| v.current_parties().into_iter().map(Party::from).collect::<Vec<_>>();
    assert_eq!(people(&v2), people(&device_view));
    assert_eq!(
        (&v2.title, &v2.description, v2.category, v2.urgency, &v2.location, &v2.grid, &v2.town),
        (
            &device_view.title,
            &device_view.description,
            device_view.category,
            device_view.urgency,
            &device_view.location,
            &device_view.grid,
            &device_view.town
        )
    );
    assert_eq!(v2.created_at, device_view.created_at);
    assert_eq!((v2.status, v2.level), (Status::Open, Level::Grid), "the escalation is not replayed");
    assert_eq!(v2.notes.len(), 1);
    assert_eq!(v2.notes[0].author, "worker3");
    assert_eq!(v2.notes[0].text, "（转自 王芳 的设备）已拍照");
    assert!(v2.authors.values().all(|a| a.user == "worker3"), "nothing in the revoked user's name");

    // The same file again adds nothing.
    let again = import_unsent(&h.state, &export, &heir).await.unwrap();
    assert!(again.iter().all(|r| !r.created && r.notes == 0 && r.refused.is_empty()), "{again:?}");
    assert_eq!(stored_report(&h, 1).notes.len(), 1);
    assert_eq!(stored_report(&h, 2).notes.len(), 1);

    // Devices in scope receive the imported work like any other.
    let a = h.device("assistant", 2).await;
    let page = h.sync(&a, 0, vec![]).await;
    assert_eq!(page.docs.len(), 2);

    // A file from another server, or of another format, is refused whole.
    let mut other = export.clone();
    other.server_id = "another".into();
    assert!(import_unsent(&h.state, &other, &heir).await.is_err());
    let mut other = export;
    other.format = "zip".into();
    assert!(import_unsent(&h.state, &other, &heir).await.is_err());
}

#[test]
fn a_full_disk_is_answered_503_disk_full_in_words() {
    use axum::response::IntoResponse;
    let full = rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error { code: rusqlite::ErrorCode::DiskFull, extended_code: 13 },
        Some("database or disk is full".into()),
    );
    let e = gridsync_server::store::StoreError::Sqlite(full).classify();
    assert!(matches!(e, gridsync_server::store::StoreError::DiskFull(_)), "{e}");
    let resp = gridsync_server::api::ApiError::from(e).into_response();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = futures_body(resp);
    assert_eq!(body["code"], "disk_full");
    assert!(body["message"].as_str().unwrap().contains("disk is full"), "{body}");
}

fn futures_body(resp: axum::response::Response) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let bytes = rt.block_on(http_body_util::BodyExt::collect(resp.into_body())).unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_body_not_declared_json_is_answered_415_after_the_token_is_checked() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let send = |content_type: Option<&'static str>, token: Option<String>| {
        let mut req = Request::builder().method("POST").uri("/v1/sync");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        app(h.state.clone()).oneshot(req.body(Body::from(r#"{"cursor":0}"#)).unwrap())
    };
    let resp = send(Some("text/plain"), Some(w.token.clone())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["code"], "unsupported_media_type");
    assert_eq!(send(None, Some(w.token.clone())).await.unwrap().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A stranger is told to authenticate first, whatever the body.
    assert_eq!(send(Some("text/plain"), None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // Parameters are fine.
    let ok = send(Some("application/json; charset=utf-8"), Some(w.token.clone())).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

/// Issue 11: a dispatch names real handling units of the organisation.
#[tokio::test]
async fn a_dispatch_names_known_units_serving_the_town_each_once() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let op = h.device("townop", 3).await;
    let mut d = new_report(&w, 1, "围墙纠纷");
    add_transition(&mut d, &author(&w, 2_000), Action::Escalate, "需要镇里协调", None).unwrap();
    assert_eq!(outcomes(&h.sync(&w, 0, push_all(1, &mut d)).await), [Outcome::Accepted; 2]);
    let mut hub = doc::load(&d.save(), op.actor.clone()).unwrap();
    add_transition(&mut hub, &author(&op, 3_000), Action::Accept, "", None).unwrap();
    let heads = hub.get_heads();
    assert_eq!(outcomes(&h.sync(&op, 0, push_all(1, &mut hub)).await)[2..], [Outcome::Accepted]);
    let town = w.town.clone();
    let other_town = h.org.towns.iter().find(|t| t.id != town).unwrap().id.clone();
    let attempts: [(Vec<String>, &str); 3] = [
        (vec!["C01-NOPE".into()], "unknown_unit"),
        (vec![format!("{other_town}-PCS")], "unit_out_of_reach"),
        (vec![format!("{town}-PCS"), format!("{town}-PCS")], "duplicate_unit"),
    ];
    for (units, code) in attempts {
        let mut x = hub.fork();
        x.set_actor(op.actor.clone());
        dispatch_to_units(&mut x, &author(&op, 4_000), "", &units, "派出所").unwrap();
        let r = h.sync(&op, 0, push_one(1, &x.get_changes(&heads)[0])).await;
        assert_eq!(r.verdicts[0].code.as_deref(), Some(code), "{units:?}: {:?}", r.verdicts);
    }
    // The town's police station leads, the county's law enforcement bureau assists.
    let units = vec![format!("{town}-PCS"), "C01-ZF".to_string()];
    dispatch_to_units(&mut hub, &author(&op, 4_000), "", &units, "派出所（牵头）、县综合执法局（协办）")
        .unwrap();
    let r = h.sync(&op, 0, push_one(1, &hub.get_changes(&heads)[0])).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted], "{:?}", r.verdicts);
    let v = stored_report(&h, 1);
    assert_eq!(v.status, Status::Dispatched);
    let t = v.transitions.last().unwrap();
    assert_eq!(t.units, units);
    assert_eq!(t.dept.as_deref(), Some("派出所（牵头）、县综合执法局（协办）"));
}

/// Issue 11 item 2: a unit handler's devices receive exactly the reports dispatched to the unit,
/// whole, and write into one only while its order is live.
#[tokio::test]
async fn a_unit_receives_only_what_is_dispatched_to_it_and_writes_only_while_the_order_is_live() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let op = h.device("townop", 3).await;
    let police = h.device("police", 7).await;
    let enforcer = h.device("enforcer", 8).await;
    assert_eq!(police.role, Role::UnitHandler);
    // Two reports escalated and accepted; only the first is dispatched, to the town's police.
    let mut docs = Vec::new();
    for id in [1u128, 2] {
        let mut d = new_report(&w, id, "围墙纠纷");
        add_transition(&mut d, &author(&w, 2_000), Action::Escalate, "需要镇里协调", None).unwrap();
        h.sync(&w, 0, push_all(id, &mut d)).await;
        let mut hub = doc::load(&d.save(), op.actor.clone()).unwrap();
        add_transition(&mut hub, &author(&op, 3_000), Action::Accept, "", None).unwrap();
        h.sync(&op, 0, push_all(id, &mut hub)).await;
        docs.push(hub);
    }
    let before = h.sync(&police, 0, vec![]).await;
    assert!(before.docs.is_empty(), "nothing is the unit's yet");
    let cursor = before.cursor;
    let heads = docs[0].get_heads();
    let units = vec![format!("{}-PCS", w.town)];
    dispatch_to_units(&mut docs[0], &author(&op, 4_000), "", &units, "派出所（牵头）").unwrap();
    let r = h.sync(&op, 0, push_one(1, &docs[0].get_changes(&heads)[0])).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted], "{:?}", r.verdicts);

    // The police device, already past the report's creation, gets it whole; the county
    // enforcement bureau's device gets nothing.
    let page = h.sync(&police, cursor, vec![]).await;
    assert_eq!(page.docs.len(), 1, "exactly the dispatched report");
    assert_eq!(
        page.docs[0].encoding,
        Encoding::Snapshot,
        "a report new to the unit comes whole, with its history"
    );
    let mut held = doc::load(
        &base64::engine::general_purpose::STANDARD.decode(&page.docs[0].data).unwrap(),
        police.actor.clone(),
    )
    .unwrap();
    assert_eq!(materialize_report(&held).unwrap().status, Status::Dispatched);
    assert!(h.sync(&enforcer, 0, vec![]).await.docs.is_empty());
    // The server's queue: the unit's is its live order, waiting for its result; the enforcement
    // bureau's is empty; a grid's own settlement waits in the town's queue for its review.
    let queue = |user: &'static str| {
        let h = &h;
        async move {
            let (status, json) = h.call("GET", "/v1/queue", Some(&h.token(user)), vec![]).await;
            assert_eq!(status, StatusCode::OK, "{json}");
            serde_json::from_value::<Vec<gridsync_core::protocol::QueueEntry>>(json).unwrap()
        }
    };
    let q = queue("police").await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(
        (q[0].doc.as_str(), q[0].step.as_str()),
        (uuid::Uuid::from_u128(1).to_string().as_str(), "resolve")
    );
    assert!(queue("enforcer").await.is_empty());
    let mut own = new_report(&w, 3, "小事自办");
    add_transition(&mut own, &author(&w, 2_500), Action::SelfResolve, "已当场处理", None).unwrap();
    h.sync(&w, 0, push_all(3, &mut own)).await;
    let q = queue("townop").await;
    let review: Vec<&gridsync_core::protocol::QueueEntry> = q.iter().filter(|e| e.step == "review").collect();
    assert_eq!(review.len(), 1, "{q:?}");
    assert_eq!(review[0].doc, uuid::Uuid::from_u128(3).to_string());

    // While the order is live: a note is accepted, a field edit is not.
    let heads = held.get_heads();
    add_note(&mut held, &author(&police, 5_000), "已签收，明日上门").unwrap();
    let r = h.sync(&police, page.cursor, push_one(1, &held.get_changes(&heads)[0])).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted], "{:?}", r.verdicts);
    let mut edit = held.fork();
    edit.set_actor(police.actor.clone());
    let eh = edit.get_heads();
    edit_report(
        &mut edit,
        &author(&police, 5_100),
        &ReportEdit { title: Some("改标题".into()), ..Default::default() },
    )
    .unwrap();
    let r = h.sync(&police, page.cursor, push_one(1, &edit.get_changes(&eh)[0])).await;
    assert_eq!(r.verdicts[0].code.as_deref(), Some("role_cannot"), "{:?}", r.verdicts);
    // A report never dispatched to the unit is out of its scope.
    let mut other = doc::load(&docs[1].save(), police.actor.clone()).unwrap();
    let oh = other.get_heads();
    add_note(&mut other, &author(&police, 5_200), "x").unwrap();
    let r = h.sync(&police, page.cursor, push_one(2, &other.get_changes(&oh)[0])).await;
    assert_eq!(r.verdicts[0].code.as_deref(), Some("out_of_scope"), "{:?}", r.verdicts);

    // The unit returns the misrouted order (退办): back at the hub's dispatch step.
    let heads = held.get_heads();
    add_transition(&mut held, &author(&police, 6_000), Action::HandBack, "不属于治安案件", None).unwrap();
    let r = h.sync(&police, page.cursor, push_one(1, &held.get_changes(&heads)[0])).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted], "{:?}", r.verdicts);
    let v = stored_report(&h, 1);
    assert_eq!((v.status, v.level), (Status::Accepted, Level::Town));
    // The order has ended: the unit keeps what it was sent but writes no more.
    let heads = held.get_heads();
    add_note(&mut held, &author(&police, 7_000), "补充").unwrap();
    let r = h.sync(&police, page.cursor, push_one(1, &held.get_changes(&heads)[0])).await;
    assert_eq!(r.verdicts[0].code.as_deref(), Some("not_your_order"), "{:?}", r.verdicts);
}

/// Issue 11 item 6: closing a result reached above the grid needs the grid's check (or a county
/// operator's waiver) and a return visit; the wrong people cannot record them.
#[tokio::test]
async fn the_close_gate_takes_a_check_or_a_county_waiver_and_a_visit() {
    let h = harness();
    let w = h.device("worker", 1).await;
    let op = h.device("townop", 3).await;
    let county = h.device("countyop", 4).await;
    let mut d = new_report(&w, 1, "路灯");
    add_transition(&mut d, &author(&w, 2_000), Action::Escalate, "", None).unwrap();
    h.sync(&w, 0, push_all(1, &mut d)).await;
    let mut hub = doc::load(&d.save(), op.actor.clone()).unwrap();
    add_transition(&mut hub, &author(&op, 3_000), Action::Accept, "", None).unwrap();
    add_transition(&mut hub, &author(&op, 3_100), Action::Resolve, "已修复", None).unwrap();
    let r = h.sync(&op, 0, push_all(1, &mut hub)).await;
    assert!(
        outcomes(&r).iter().all(|o| matches!(o, Outcome::Accepted | Outcome::Duplicate)),
        "{:?}",
        r.verdicts
    );
    let push = |x: &mut AutoCommit, heads: &[automerge::ChangeHash]| push_one(1, &x.get_changes(heads)[0]);
    // Close at once: refused, naming what is missing.
    let mut x = hub.fork();
    x.set_actor(op.actor.clone());
    let heads = x.get_heads();
    add_transition(&mut x, &author(&op, 4_000), Action::Close, "", None).unwrap();
    let r = h.sync(&op, 0, push(&mut x, &heads)).await;
    assert_eq!(r.verdicts[0].code.as_deref(), Some("close_requirements_unmet"), "{:?}", r.verdicts);
    let message = r.verdicts[0].message.clone().unwrap();
    assert!(message.contains("check") && message.contains("visit"), "{message}");
    // The town cannot waive the check, nor can the worker record a visit.
    let mut x = hub.fork();
    x.set_actor(op.actor.clone());
    let heads = x.get_heads();
    add_record(&mut x, &author(&op, 4_100), Record::Waive, "不需要", None, None).unwrap();
    assert_eq!(
        h.sync(&op, 0, push(&mut x, &heads)).await.verdicts[0].code.as_deref(),
        Some("record_not_allowed")
    );
    let mut x = doc::load(&hub.save(), w.actor.clone()).unwrap();
    let heads = x.get_heads();
    add_record(&mut x, &author(&w, 4_200), Record::Visit, "满意", None, Some("satisfied")).unwrap();
    assert_eq!(
        h.sync(&w, 0, push(&mut x, &heads)).await.verdicts[0].code.as_deref(),
        Some("record_not_allowed")
    );
    // The county waives the check; the hub records a visit and closes.
    let mut c = doc::load(&hub.save(), county.actor.clone()).unwrap();
    let heads = c.get_heads();
    add_record(&mut c, &author(&county, 4_300), Record::Waive, "设施已由供电公司验收", None, None).unwrap();
    assert_eq!(outcomes(&h.sync(&county, 0, push(&mut c, &heads)).await), [Outcome::Accepted]);
    doc::apply_changes(&mut hub, c.get_changes(&heads)).unwrap();
    let heads = hub.get_heads();
    add_record(&mut hub, &author(&op, 4_400), Record::Visit, "满意", None, Some("satisfied")).unwrap();
    add_transition(&mut hub, &author(&op, 4_500), Action::Close, "办结", None).unwrap();
    let r = h.sync(&op, 0, pushed_changes(1, hub.get_changes(&heads))).await;
    assert_eq!(outcomes(&r), [Outcome::Accepted; 2], "{:?}", r.verdicts);
    assert_eq!(stored_report(&h, 1).status, Status::Closed);
}

fn pushed_changes(id: u128, changes: Vec<automerge::Change>) -> Vec<PushedChange> {
    changes.iter().flat_map(|c| push_one(id, c)).collect()
}

/// Issue 11 item 2 / issue 12 item 4: parties' names and contacts travel in the report's parties
/// document, which the server serves to the grid's worker and the hubs, to a dispatched unit only
/// when the report's category needs them (policy `closed_loop.unit_parties`), and never to a grid
/// assistant, whose pages and store never hold a contact.
#[tokio::test]
async fn parties_reach_only_the_roles_that_need_them() {
    use gridsync_core::parties::{create_parties, parties_id};
    let h = harness();
    let w = h.device("worker", 1).await;
    let assistant = h.device("assistant", 2).await;
    let op = h.device("townop", 3).await;
    let police = h.device("police", 7).await;
    let contact = "13812345678";
    let mut reports = Vec::new();
    // Report 1 is a dispute (its unit needs the parties), report 2 sanitation (it does not).
    for (id, category) in [(1u128, Category::Dispute), (2, Category::Sanitation)] {
        let mut d = new_report(&w, id, "围墙纠纷");
        edit_report(
            &mut d,
            &author(&w, 1_200),
            &ReportEdit { category: Some(category), ..Default::default() },
        )
        .unwrap();
        add_transition(&mut d, &author(&w, 2_000), Action::Escalate, "需要镇里协调", None).unwrap();
        let rid = uuid::Uuid::from_u128(id).to_string();
        let pid = parties_id(&rid).unwrap();
        let zhang = Party { name: "张三".into(), contact: Some(contact.into()) };
        let mut p =
            create_parties(w.actor.clone(), &author(&w, 1_100), &rid, &w.grid, &w.town, &[zhang]).unwrap();
        let mut changes = push_all(id, &mut d);
        changes.extend(parties_pushed(&pid, &p.get_changes(&[])));
        let r = h.sync(&w, 0, changes).await;
        assert!(r.verdicts.iter().all(|v| v.outcome == Outcome::Accepted), "{:?}", r.verdicts);
        reports.push((d, pid));
    }
    let kinds = |r: &SyncResponse| r.docs.iter().map(|d| d.kind).collect::<Vec<_>>();
    let holds_contact = |r: &SyncResponse| {
        r.docs.iter().any(|d| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(&d.data).unwrap();
            bytes.windows(contact.len()).any(|w| w == contact.as_bytes())
        }) || serde_json::to_string(r).unwrap().contains(contact)
    };
    // The assistant gets both reports and no parties, and nothing on the wire holds the contact.
    let a = h.sync(&assistant, 0, vec![]).await;
    assert_eq!(kinds(&a), [DocKind::Report, DocKind::Report]);
    assert!(!holds_contact(&a), "an assistant's page holds no contact");
    // The town's hub gets reports and parties.
    let t = h.sync(&op, 0, vec![]).await;
    assert_eq!(t.docs.iter().filter(|d| d.kind == DocKind::Parties).count(), 2);
    assert!(holds_contact(&t));
    // Both are dispatched to the town's police: only the dispute's parties follow.
    let cursor = h.sync(&police, 0, vec![]).await.cursor;
    for (i, (d, _)) in reports.iter_mut().enumerate() {
        let id = i as u128 + 1;
        let mut hub = doc::load(&d.save(), op.actor.clone()).unwrap();
        add_transition(&mut hub, &author(&op, 3_000), Action::Accept, "", None).unwrap();
        let units = vec![format!("{}-PCS", w.town)];
        dispatch_to_units(&mut hub, &author(&op, 4_000), "", &units, "派出所").unwrap();
        let r = h.sync(&op, 0, push_all(id, &mut hub)).await;
        assert!(r.verdicts.iter().all(|v| v.outcome != Outcome::Forbidden), "{:?}", r.verdicts);
    }
    let u = h.sync(&police, cursor, vec![]).await;
    let got: Vec<(DocKind, String)> = u.docs.iter().map(|d| (d.kind, d.doc.clone())).collect();
    let dispute_parties = reports[0].1.clone();
    assert!(got.contains(&(DocKind::Parties, dispute_parties.clone())), "{got:?}");
    assert!(
        !got.iter().any(|(_, id)| id == &reports[1].1),
        "a sanitation report's parties stay out: {got:?}"
    );
    assert_eq!(got.iter().filter(|(k, _)| *k == DocKind::Report).count(), 2);
    let parties_entry = u.docs.iter().find(|d| d.doc == dispute_parties).unwrap();
    assert_eq!(parties_entry.encoding, Encoding::Snapshot, "it enters the unit's scope whole");
    // The assistant, syncing on, still gets no parties; nor can it write any.
    let again = h.sync(&assistant, a.cursor, vec![]).await;
    assert!(again.docs.iter().all(|d| d.kind == DocKind::Report) && !holds_contact(&again));
    let mine = uuid::Uuid::from_u128(9).to_string();
    let mut p =
        create_parties(assistant.actor.clone(), &author(&assistant, 5_000), &mine, &w.grid, &w.town, &[])
            .unwrap();
    let pushed = parties_pushed(&parties_id(&mine).unwrap(), &p.get_changes(&[]));
    let r = h.sync(&assistant, again.cursor, pushed).await;
    assert_eq!(r.verdicts[0].code.as_deref(), Some("role_cannot"), "{:?}", r.verdicts);
}
