//! The first hour of a real user, end to end: what a sync changed for each person (inbox), honest
//! sync state (retry progress, Ctrl-C, one sync per home, JSON on failure), bounded and tidy input
//! and output, human output in Chinese with local times, and every `--json` output against its
//! schema in `schemas/`.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gridsync_e2e::{Device, Server};
use serde_json::Value;

fn report(d: &Device, title: &str) -> String {
    d.ok(&["report", "new", "--category", "dispute", "--title", title, "--lat", "30.5", "--lon", "114.25"])
        .trim()
        .to_string()
}

fn kinds(entries: &Value) -> Vec<String> {
    entries.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect()
}

#[test]
fn each_person_is_told_what_a_sync_changed_for_them_once_and_the_inbox_keeps_it() {
    let server = Server::start();
    let worker = server.device("worker");
    let assistant = server.device("assistant");
    let hub = server.device("townop");
    for d in [&worker, &assistant, &hub] {
        d.sync();
    }

    // A new item in the hub's queue.
    let id = report(&worker, "楼道堆放杂物");
    worker.ok(&["report", "escalate", &id, "--reason", "需要物业配合"]);
    worker.sync();
    let s = hub.sync();
    assert_eq!(kinds(&s["inbox"]), ["new_in_queue"], "{s}");
    assert_eq!(s["inbox"][0]["doc"], id.as_str());
    assert_eq!(s["inbox"][0]["by"], "worker");

    // The hub refuses it: back to the grid.
    hub.ok(&["queue", "reject", &id, "--reason", "属于网格自治范围"]);
    hub.sync();
    let s = worker.sync();
    assert_eq!(kinds(&s["inbox"]), ["returned_to_grid"], "{s}");
    assert!(s["inbox"][0]["detail"].as_str().unwrap().contains("属于网格自治范围"), "{s}");

    // Worker and assistant act at once: the escalation wins, the worker's self-resolve is set
    // aside by the lifecycle's precedence, and the worker is told by whom.
    assistant.sync();
    worker.ok(&["report", "resolve", &id, "--note", "已清理"]);
    assistant.ok(&["report", "escalate", &id, "--reason", "物业不配合"]);
    worker.sync();
    assistant.sync();
    let s = worker.sync();
    assert!(kinds(&s["inbox"]).contains(&"decision_set_aside".to_string()), "{s}");

    // The hub resolves: the worker hears of it, in words, after a plain `field sync`.
    hub.sync();
    hub.ok(&["queue", "accept", &id]);
    hub.ok(&["queue", "dispatch", &id, "--to", "城管办"]);
    hub.ok(&["queue", "resolve", &id, "--note", "已协调物业清运"]);
    hub.sync();
    let out = worker.ok(&["sync"]);
    assert!(out.contains("与你有关的变化") && out.contains("已处置"), "{out}");
    // Shown once: nothing unseen left, but the history keeps every entry.
    let unseen = worker.json(&["inbox", "--json"]);
    assert_eq!(unseen.as_array().unwrap().len(), 0, "{unseen}");
    let all = worker.json(&["inbox", "--all", "--json"]);
    let all_kinds = kinds(&all);
    for k in ["returned_to_grid", "decision_set_aside", "resolved"] {
        assert!(all_kinds.contains(&k.to_string()), "{k} missing from {all_kinds:?}");
    }
    assert!(all.as_array().unwrap().iter().all(|e| e["seen"] == true));
    let paged = worker.json(&["inbox", "--all", "--limit", "1", "--json"]);
    assert_eq!(paged.as_array().unwrap().len(), 1);
    assert_eq!(paged[0]["kind"], "resolved", "newest first");
}

#[test]
fn a_failing_sync_shows_its_retries_reports_json_and_keeps_the_last_success() {
    let server = Server::start();
    let worker = server.device("worker");
    report(&worker, "井盖缺失");
    worker.sync();
    report(&worker, "路灯不亮");
    drop(server);

    let out = worker.run(&["sync", "--retries", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("第 1 次连接失败") && err.contains("秒后第 2 次重试"),
        "progress while retrying: {err}"
    );
    assert!(err.contains("你的工作已保存在本机"), "{err}");

    // --json prints JSON on failure too, and exits non-zero.
    let out = worker.run(&["sync", "--json", "--retries", "0"]);
    assert!(!out.status.success());
    let j: Value = serde_json::from_slice(&out.stdout).expect("JSON on failure");
    assert_eq!(j["ok"], false);
    assert_eq!(j["error"]["code"], "offline");
    assert_eq!(j["unsent"], 1);

    // Status keeps the last success beside the last failure, and names the unsent work in words.
    let st = worker.json(&["status", "--json"]);
    assert_eq!(st["last_success"]["ok"], true);
    assert_eq!(st["last_failure"]["code"], "offline");
    assert_eq!(st["pending"][0]["title"], "路灯不亮");
    let text = worker.ok(&["status"]);
    assert!(
        text.contains("上次成功同步") && text.contains("上次失败") && text.contains("路灯不亮"),
        "{text}"
    );
    assert!(!text.contains("cursor") && !text.contains("游标"), "{text}");
}

/// A server that accepts connections and never answers: a sync hangs in its first request.
fn stalled_server() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

/// Points a set-up home at another address by rewriting its stored profile (the test's stand-in
/// for a network that swallows requests).
fn point_at(d: &Device, url: &str) {
    let db = rusqlite::Connection::open(d.home.path().join("field.sqlite3")).unwrap();
    let json: String = db.query_row("SELECT json FROM profile", [], |r| r.get(0)).unwrap();
    let mut profile: Value = serde_json::from_str(&json).unwrap();
    profile["server"] = Value::String(url.to_string());
    db.execute("UPDATE profile SET json = ?1", [profile.to_string()]).unwrap();
}

/// Accepts one connection, or fails the test after 30 s.
fn accept_within(l: &TcpListener) -> std::net::TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match l.accept() {
            Ok((s, _)) => return s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("field never connected: {e}"),
        }
    }
}

#[test]
fn ctrl_c_says_what_was_saved_and_a_second_sync_on_the_same_home_is_told_one_is_running() {
    let server = Server::start();
    let worker = server.device("worker");
    report(&worker, "占道经营");
    report(&worker, "噪音扰民");
    let (listener, url) = stalled_server();
    point_at(&worker, &url);

    let mut first = worker.command(&["sync", "--retries", "0"]).stderr(Stdio::piped()).spawn().unwrap();
    // Wait until its request is in flight.
    let held = accept_within(&listener);
    let second = worker.run(&["sync", "--retries", "0"]);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("已有一个 field sync 在运行"), "{err}");

    let killed = std::process::Command::new("kill").args(["-INT", &first.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut err = String::new();
    first.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("同步已中断") && err.contains("2 项修改保存在本机"), "{err}");
    drop(held);
    // Nothing was lost: both reports still wait to be sent.
    assert_eq!(worker.json(&["status", "--json"])["pending_changes"], 2);
}

#[test]
fn input_is_bounded_checked_and_lists_page() {
    let server = Server::start();
    let worker = server.device("worker");
    let admin = server.device("admin");

    let long = "长".repeat(201);
    let err = worker.fails(&["report", "new", "--category", "other", "--title", &long]);
    assert!(err.contains("标题太长") && err.contains("200"), "{err}");
    let err = worker.fails(&[
        "report",
        "new",
        "--category",
        "other",
        "--title",
        "t",
        "--lat",
        "40.0",
        "--lon",
        "116.4",
    ]);
    assert!(err.contains("不在本县范围内"), "{err}");
    let err =
        worker.fails(&["report", "new", "--category", "dispute", "--title", "t", "--party", "张三:12345"]);
    assert!(err.contains("联系电话格式不对"), "{err}");

    // A long description from standard input.
    let text = "第一段。\n第二段，很长的说明。".repeat(50);
    let mut child = worker
        .command(&["report", "new", "--category", "other", "--title", "长描述", "--description-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let v = worker.json(&["report", "show", &id, "--json"]);
    assert_eq!(v["description"], text.trim_end());

    // The head count follows the parties unless set by hand.
    let d = worker
        .ok(&["report", "new", "--category", "dispute", "--title", "纠纷", "--party", "张三:13800000000"])
        .trim()
        .to_string();
    worker.ok(&["report", "edit", &d, "--party", "李四:0571-87654321"]);
    assert_eq!(worker.json(&["report", "show", &d, "--json"])["head_count"], 2);

    // Lists page, newest first, and tables cut long cells.
    for i in 0..5 {
        report(&worker, &format!("第{i}件"));
    }
    let page = worker.json(&["report", "list", "--limit", "2", "--offset", "1", "--json"]);
    let titles: Vec<&str> = page.as_array().unwrap().iter().map(|r| r["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["第3件", "第2件"]);
    let wide = "很长的标题".repeat(20);
    report(&worker, &wide);
    let table = worker.ok(&["report", "list", "--limit", "1"]);
    assert!(table.contains('…') && !table.contains(&wide), "{table}");

    // The same GPX twice, the same finding twice: nothing added the second time.
    worker.ok(&["patrol", "start"]);
    let gpx = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        gpx.path(),
        r#"<gpx><trk><trkseg><trkpt lat="30.5" lon="114.25"><time>2026-11-26T08:30:00Z</time></trkpt><trkpt lat="30.51" lon="114.26"><time>2026-11-26T08:31:00Z</time></trkpt></trkseg></trk></gpx>"#,
    )
    .unwrap();
    let path = gpx.path().to_str().unwrap();
    assert!(worker.ok(&["patrol", "import", path]).contains("导入 2 个轨迹点"));
    assert!(worker.ok(&["patrol", "import", path]).contains("导入 0 个轨迹点"));
    worker.ok(&["patrol", "finding", &d]);
    assert!(worker.ok(&["patrol", "finding", &d]).contains("已经关联过"));
    worker.ok(&["patrol", "end"]);
    let p = worker.json(&["patrol", "list", "--json"])[0].clone();
    assert_eq!(p["track"].as_array().unwrap().len(), 2);
    assert_eq!(p["findings"].as_array().unwrap().len(), 1);

    // Admin documents filter by grid and show titles.
    worker.sync();
    let grid = v["grid"].as_str().unwrap().to_string();
    let rows = admin.json(&["admin", "documents", "--grid", &grid, "--json"]);
    assert!(rows.as_array().unwrap().iter().all(|r| r["grid"] == grid.as_str()));
    assert!(rows.as_array().unwrap().iter().any(|r| r["title"] == "长描述"));
    assert_eq!(
        admin.json(&["admin", "documents", "--grid", "no-such-grid", "--json"]).as_array().unwrap().len(),
        0
    );
    let table = admin.ok(&["admin", "documents", "--limit", "3"]);
    assert!(table.contains("标题"), "{table}");
}

#[test]
fn human_output_is_chinese_local_time_without_internal_identifiers() {
    let server = Server::start();
    let worker = server.device("worker");
    let assistant = server.device("assistant");
    let hub = server.device("townop");
    let id = report(&worker, "围墙纠纷");
    worker.sync();
    assistant.sync();
    worker.ok(&["report", "resolve", &id, "--note", "已调解"]);
    assistant.ok(&["report", "escalate", &id, "--reason", "需要镇里协调"]);
    worker.ok(&["report", "edit", &id, "--urgency", "low"]);
    assistant.ok(&["report", "edit", &id, "--urgency", "high"]);
    worker.sync();
    assistant.sync();
    worker.sync();
    hub.sync();
    hub.ok(&["queue", "accept", &id]);
    hub.ok(&["queue", "dispatch", &id, "--to", "城管办"]);
    hub.ok(&["queue", "hand-back", &id, "--reason", "不属于本部门"]);
    for d in [&worker, &hub] {
        let text = d.ok(&["report", "show", &id]);
        for internal in [
            "self_resolve",
            "hand_back",
            "escalated",
            "dispatched",
            "lww_authority",
            "urgency_max",
            "transition_precedence",
            "grid_worker",
            "town_operator",
            "critical",
        ] {
            assert!(!text.contains(internal), "{internal:?} shown to a person:\n{text}");
        }
        let chars: Vec<char> = text.chars().collect();
        assert!(
            !chars.windows(3).any(|w| w[0].is_ascii_digit() && w[1].is_ascii_digit() && w[2] == 'Z'),
            "a time with a zone letter:\n{text}"
        );
        assert!(text.contains("自办自结") && text.contains("上报"), "{text}");
    }
    let hub_text = hub.ok(&["report", "show", &id]);
    assert!(hub_text.contains("退办"), "{hub_text}");
    // Times are Beijing time: the creation time shown is the UTC time plus eight hours.
    let v = worker.json(&["report", "show", &id, "--json"]);
    let created = v["created_at"].as_i64().unwrap();
    let text = worker.ok(&["report", "show", &id]);
    let local = gridsync_core::localtime::minute(created, 8 * 3_600_000);
    assert!(text.contains(&local), "{local} missing:\n{text}");
    // English on request.
    let en = worker.ok(&["--lang", "en", "report", "show", &id]);
    assert!(en.contains("category:") && en.contains("settled on the spot"), "{en}");
}

/// Validates `value` against `schemas/NAME`.
fn conforms(name: &str, value: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas").join(name);
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"));
    let errors: Vec<String> = validator.iter_errors(value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{value}");
}

#[test]
fn every_json_output_matches_its_schema() {
    let server = Server::start();
    let worker = server.device("worker");
    let hub = server.device("townop");
    let admin = server.device("admin");
    let id = worker
        .ok(&["report", "new", "--category", "dispute", "--title", "纠纷", "--party", "张三:13800000000"])
        .trim()
        .to_string();
    worker.ok(&["report", "escalate", &id, "--reason", "需要协调"]);
    worker.ok(&["patrol", "start"]);
    worker.ok(&["patrol", "track", "--lat", "30.5", "--lon", "114.25"]);
    worker.ok(&["patrol", "end"]);
    conforms("sync-outcome.schema.json", &worker.sync());
    hub.sync();
    conforms("sync-outcome.schema.json", &hub.sync());
    conforms("whoami.schema.json", &worker.json(&["whoami", "--json"]));
    conforms("device-state.schema.json", &worker.json(&["status", "--json"]));
    conforms("report-list.schema.json", &worker.json(&["report", "list", "--json"]));
    conforms("report-view.schema.json", &worker.json(&["report", "show", &id, "--json"]));
    conforms("patrol-list.schema.json", &worker.json(&["patrol", "list", "--json"]));
    let pid = worker.json(&["patrol", "list", "--json"])[0]["id"].as_str().unwrap().to_string();
    conforms("patrol-view.schema.json", &worker.json(&["patrol", "show", &pid, "--json"]));
    conforms("inbox.schema.json", &hub.json(&["inbox", "--all", "--json"]));
    conforms("queue.schema.json", &hub.json(&["queue", "list", "--json"]));
    conforms("queue.schema.json", &hub.json(&["queue", "list", "--server", "--json"]));
    conforms("indicators.schema.json", &admin.json(&["admin", "stats", "--json"]));
    conforms("device-status.schema.json", &admin.json(&["admin", "devices", "--json"]));
    conforms("document-status.schema.json", &admin.json(&["admin", "documents", "--json"]));
    conforms("document-status.schema.json", &admin.json(&["admin", "conflicts", "--json"]));
    conforms("user-list.schema.json", &admin.json(&["admin", "user", "list", "--json"]));
    conforms(
        "user-created.schema.json",
        &admin.json(&[
            "admin",
            "user",
            "add",
            "--name",
            "赵六",
            "--role",
            "county_operator",
            "--scope",
            "county",
            "--json",
        ]),
    );
    // One shape per field: a scope is always an object.
    for u in admin.json(&["admin", "user", "list", "--json"]).as_array().unwrap() {
        assert!(u["scope"].is_object(), "{u}");
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let server = Server::start();
    let worker = server.device("worker");
    for i in 0..30 {
        report(&worker, &format!("第{i}件"));
    }
    let mut child =
        worker.command(&["report", "list"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_device_follows_its_server_to_a_new_address_but_not_to_another_server() {
    let mut server = Server::start();
    let worker = server.device("worker");
    report(&worker, "搬迁前");
    worker.sync();
    report(&worker, "搬迁中");
    let old = server.url.clone();
    server.restart();
    assert_ne!(old, server.url);
    let out = worker.ok(&["init", "--server", &server.url]);
    assert!(out.contains("本机数据全部保留"), "{out}");
    let s = worker.sync();
    assert_eq!(s["accepted"], 1, "the unsent report reaches the server at its new address: {s}");
    assert_eq!(worker.json(&["report", "list", "--json"]).as_array().unwrap().len(), 2);

    let other = Server::start();
    let err = worker.fails(&["init", "--server", &other.url]);
    assert!(err.contains("另一台服务器") && err.contains("数据保持不变"), "{err}");
    assert_eq!(worker.json(&["status", "--json"])["server"], server.url.as_str());
    assert_eq!(worker.json(&["report", "list", "--json"]).as_array().unwrap().len(), 2);
}

#[test]
fn a_revoked_account_says_so_refuses_new_work_and_its_unsent_work_moves_to_a_colleague() {
    let mut server = Server::start();
    let worker = server.device("worker");
    let admin = server.device("admin");
    let grid = worker.json(&["whoami", "--json"])["scope"]["grids"][0].as_str().unwrap().to_string();
    let successor = admin.json(&[
        "admin",
        "user",
        "add",
        "--name",
        "接任网格员",
        "--role",
        "grid_worker",
        "--scope",
        &grid,
        "--json",
    ]);
    let synced = report(&worker, "已同步的事件");
    worker.sync();
    report(&worker, "未发送的事件");
    worker.ok(&["report", "note", &synced, "补充说明"]);
    admin.ok(&["admin", "user", "revoke", "worker"]);

    // Plain words, not "wait for signal".
    let err = worker.fails(&["sync", "--retries", "0"]);
    assert!(err.contains("已被管理员停用") && err.contains("field export --unsent"), "{err}");
    assert!(!err.contains("有信号时"), "{err}");
    let st = worker.json(&["status", "--json"]);
    assert_eq!(st["revoked"], true);
    assert_eq!(st["last_failure"]["code"], "revoked");
    let err = worker.fails(&["report", "new", "--category", "other", "--title", "新工作"]);
    assert!(err.contains("已被管理员停用"), "{err}");
    assert!(worker.ok(&["status"]).contains("此账号已被管理员停用"));

    // Admins see the revoked user and the refused attempt.
    let users = admin.json(&["admin", "user", "list", "--json"]);
    let row = users.as_array().unwrap().iter().find(|u| u["user"] == "worker").unwrap();
    assert!(row["revoked_at"].is_i64(), "{row}");
    let devices = admin.json(&["admin", "devices", "--json"]);
    let dev = devices.as_array().unwrap().iter().find(|d| d["user"] == "worker").unwrap();
    assert!(dev["refused_attempts"].as_u64().unwrap() >= 1, "{dev}");

    // The unsent work is exported and imported under the colleague of the same grid.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unsent.json");
    let out = worker.ok(&["export", "--unsent", file.to_str().unwrap()]);
    assert!(out.contains("import-unsent"), "{out}");
    let export: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    conforms("unsent-export.schema.json", &export);
    assert_eq!(export["documents"].as_array().unwrap().len(), 2);
    let user = successor["user"].as_str().unwrap();
    // Imports run on a stopped server (it keeps documents in memory while it runs).
    let out = server.admin_command(&["import-unsent", file.to_str().unwrap(), "--as", user]);
    assert!(!out.status.success(), "refused while the server runs");
    server.stop();
    let out = server.admin_command(&["import-unsent", file.to_str().unwrap(), "--as", user]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    server.start_again();

    let colleague = Device::new("successor");
    let token = successor["token"].as_str().unwrap();
    colleague.ok(&["init", "--server", &server.url, "--token", token]);
    colleague.sync();
    let titles: Vec<String> = colleague
        .json(&["report", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_string())
        .collect();
    assert!(titles.contains(&"未发送的事件".to_string()), "{titles:?}");
    let notes = colleague.json(&["report", "show", &synced, "--json"])["notes"].clone();
    assert!(
        notes.as_array().unwrap().iter().any(|n| n["text"].as_str().unwrap().contains("补充说明")),
        "{notes}"
    );
}

#[test]
fn a_device_clock_a_year_off_changes_neither_the_queue_light_nor_the_indicators() {
    let server = Server::start();
    let skew = (-365 * 86_400_000i64).to_string();
    let worker = server.device_via("worker", &server.url, &[("GRIDSYNC_DEVICE_CLOCK_SKEW_MS", &skew)]);
    let hub = server.device("townop");
    let admin = server.device("admin");
    hub.sync();
    // Offline since it was set up, the worker's clock says last year.
    let id = report(&worker, "路灯不亮");
    worker.ok(&["report", "escalate", &id, "--reason", "需要更换"]);
    worker.sync();
    hub.sync();
    let offline = hub.json(&["queue", "list", "--json"]);
    let online = hub.json(&["queue", "list", "--server", "--json"]);
    assert_eq!(offline[0]["light"], "green", "the offline queue counts from the server's receipt: {offline}");
    assert_eq!(offline[0]["light"], online[0]["light"]);
    let gap = (offline[0]["since"].as_i64().unwrap() - online[0]["since"].as_i64().unwrap()).abs();
    assert!(gap < 60_000, "offline and server queues agree on when it arrived: {offline} {online}");
    // What the worker said stays visible: the report's own time is last year's.
    let v = hub.json(&["report", "show", &id, "--json"]);
    assert!(v["created_at"].as_i64().unwrap() < online[0]["since"].as_i64().unwrap() - 300 * 86_400_000);

    hub.ok(&["queue", "accept", &id]);
    hub.sync();
    let stats = admin.json(&["admin", "stats", "--json"]);
    let median = stats["median_minutes_to_accept"].as_f64().unwrap();
    assert!(median < 60.0, "server times, not the device's: {median} minutes to accept");

    // After a sync the worker knows its clock's offset: a new note carries the server's time.
    worker.ok(&["report", "note", &id, "已更换"]);
    let notes = worker.json(&["report", "show", &id, "--json"])["notes"].clone();
    let at = notes.as_array().unwrap().last().unwrap()["at"].as_i64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((at - now).abs() < 60_000, "a corrected time, not last year's: {at} vs {now}");
}

#[test]
fn terminal_escapes_written_by_others_are_shown_harmless() {
    let server = Server::start();
    let worker = server.device_via("worker", &server.url, &[]);
    let hub = server.device("townop");
    let admin = server.device("admin");
    let evil = "\u{1b}]0;owned\u{7}\u{1b}[2J清屏";
    let id = report(&worker, evil);
    worker.ok(&["report", "escalate", &id, "--reason", "\u{1b}[31m红色"]);
    worker.sync();
    hub.sync();
    for out in [
        hub.ok(&["queue", "list"]),
        hub.ok(&["report", "list"]),
        hub.ok(&["report", "show", &id]),
        admin.ok(&["admin", "documents"]),
    ] {
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{7}'),
            "a control character reached the terminal:\n{out}"
        );
        assert!(out.contains("清屏") || out.contains("红色") || out.contains('…'), "{out}");
    }
    // JSON keeps the value as written (programs escape it themselves).
    assert_eq!(hub.json(&["report", "show", &id, "--json"])["title"], evil);
}

#[test]
fn the_home_is_private_and_the_token_stays_out_of_the_command_line() {
    let server = Server::start();
    let d = gridsync_e2e::Device::new("worker");
    let mut init = d.command(&["init", "--server", &server.url]);
    init.env("GRIDSYNC_TOKEN", server.token("worker"));
    let out = init.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.home.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the home holds a token and personal data");
    let db = std::fs::metadata(d.home.path().join("field.sqlite3")).unwrap().permissions().mode() & 0o777;
    assert_eq!(db, 0o600);
    // From standard input, too.
    let d2 = gridsync_e2e::Device::new("townop");
    let mut child = d2
        .command(&["init", "--server", &server.url, "--token", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{}\n", server.token("townop")).as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d2.json(&["whoami", "--json"])["user"], "townop");
}

#[test]
fn a_long_outbox_pushes_before_it_pulls_so_an_offline_step_is_judged_against_what_the_device_had() {
    let server = Server::start();
    let worker = server.device("worker");
    let assistant = server.device("assistant");
    let id = report(&worker, "井盖破损");
    worker.sync();
    assistant.sync();
    // Offline for weeks: a long outbox, then the worker settles the report on the spot…
    gridsync_e2e::offline_work(&worker, 300, 3, "积压");
    worker.ok(&["report", "resolve", &id, "--note", "已更换井盖"]);
    // …while the assistant, online, escalates it.
    assistant.ok(&["report", "escalate", &id, "--reason", "需要市政维修"]);
    assistant.sync();
    let s = worker.sync();
    assert!(s["round_trips"].as_u64().unwrap() > 1, "the outbox took several requests: {s}");
    assert_eq!(s["refused"], 0, "the offline step was concurrent, not stale: {s}");
    assert_eq!(s["accepted"], 1_201, "{s}");
    // Both steps are on record; the lifecycle's precedence keeps the escalation.
    let v = worker.json(&["report", "show", &id, "--json"]);
    assert_eq!(v["status"], "escalated");
    assert_eq!(v["transitions"].as_array().unwrap().len(), 2);
}

#[test]
fn a_daily_quota_keeps_the_work_for_tomorrow_instead_of_dropping_it() {
    let server = Server::start();
    let worker = server.device("worker");
    gridsync_e2e::offline_work(&worker, 501, 0, "配额");
    let s = worker.sync();
    assert_eq!((s["accepted"].as_u64(), s["refused"].as_u64()), (Some(500), Some(0)), "{s}");
    assert_eq!(s["waiting"], 1, "{s}");
    let st = worker.json(&["status", "--json"]);
    assert_eq!(st["pending_changes"], 1, "the 501st report waits on the device: {st}");
    assert_eq!(worker.json(&["report", "list", "--json"]).as_array().unwrap().len(), 501);
}

#[test]
fn demo_enrolment_tokens_are_printed_at_first_install_only() {
    let data = tempfile::tempdir().unwrap();
    let start = || {
        let mut child = std::process::Command::new(gridsync_e2e::bin_dir().join("gridsync-server"))
            .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
            .unwrap();
        assert!(line.contains("listening on"), "{line}");
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = start();
    assert!(first.contains("gsu_"), "the first install prints the tokens: {first}");
    let again = start();
    assert!(!again.contains("gsu_"), "a later start does not: {again}");
    assert!(again.contains("demo-users.json"), "{again}");
}
