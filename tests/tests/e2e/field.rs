//! End to end: the real server and several real field devices, offline edits, syncs in different
//! orders, a killed client, and a day's work in one sync.

use gridsync_e2e::{Device, Server};
use serde_json::Value;

fn new_report(d: &Device, title: &str) -> String {
    d.ok(&[
        "report",
        "new",
        "--category",
        "dispute",
        "--title",
        title,
        "--description",
        "两户因围墙争执",
        "--party",
        "张三:13800000000",
        "--lat",
        "30.5",
        "--lon",
        "114.25",
    ])
    .trim()
    .to_string()
}

fn show(d: &Device, id: &str) -> Value {
    d.json(&["report", "show", id, "--json"])
}

#[test]
fn three_devices_edit_offline_in_conflict_and_converge_to_one_view() {
    let server = Server::start();
    let worker = server.device("worker");
    let assistant = server.device("assistant");
    let hub = server.device("townop");
    let id = new_report(&worker, "邻里纠纷");
    worker.sync();
    assistant.sync();
    hub.sync();

    // All three offline: conflicting title, description, urgency, notes, and a self-resolve racing
    // an escalation.
    worker.ok(&["report", "edit", &id, "--title", "围墙纠纷（王）", "--urgency", "low"]);
    worker.ok(&["report", "edit", &id, "--description", "两户因围墙争执，已到场"]);
    worker.ok(&["report", "note", &id, "到场调解"]);
    worker.ok(&["report", "resolve", &id, "--note", "双方同意"]);
    assistant.ok(&["report", "edit", &id, "--title", "围墙纠纷（李）", "--urgency", "critical"]);
    assistant.ok(&["report", "edit", &id, "--description", "紧急：两户因围墙争执"]);
    assistant.ok(&["report", "note", &id, "一方情绪激动"]);
    assistant.ok(&["report", "escalate", &id, "--reason", "需要镇里协调"]);
    hub.ok(&["report", "edit", &id, "--title", "围墙纠纷（镇）"]);
    hub.ok(&["report", "note", &id, "镇里已知悉"]);

    // Different orders.
    assistant.sync();
    hub.sync();
    worker.sync();
    assistant.sync();
    hub.sync();

    let mut views: Vec<Value> = [&worker, &assistant, &hub].iter().map(|d| show(d, &id)).collect();
    // The parties travel in their own document: the worker and the hub hold them, the assistant
    // (a volunteer) does not. Everything else is one view.
    assert_eq!(views[0]["parties"][0]["contact"], "13800000000");
    assert_eq!(views[0]["parties"], views[2]["parties"]);
    assert_eq!(views[1]["parties"], serde_json::json!([]), "the assistant holds no parties");
    // Not in its store either: no file of the assistant's home holds the phone number.
    for entry in std::fs::read_dir(assistant.home.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(11).any(|w| w == b"13800000000"), "{} holds a contact", path.display());
        }
    }
    for v in &mut views {
        v["parties"] = Value::Null;
    }
    assert_eq!(views[0], views[1]);
    assert_eq!(views[1], views[2]);
    let v = &views[0];
    assert_eq!(v["title"], "围墙纠纷（镇）", "the hub's title wins by authority");
    assert_eq!(v["urgency"], "critical", "urgency does not go down by accident");
    assert_eq!(v["status"], "escalated", "the escalation is not lost to the self-resolve");
    assert_eq!(v["level"], "town");
    assert_eq!(v["notes"].as_array().unwrap().len(), 3, "every device's notes are kept");
    let desc = v["description"].as_str().unwrap();
    assert!(desc.contains("紧急") && desc.contains("已到场"), "text merges characterwise: {desc}");
    let rules: Vec<(&str, &str)> = v["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["field"].as_str().unwrap(), c["rule"].as_str().unwrap()))
        .collect();
    for want in
        [("title", "lww_authority"), ("urgency", "urgency_max"), ("lifecycle", "transition_precedence")]
    {
        assert!(rules.contains(&want), "{want:?} missing from {rules:?}");
    }
    // The human view says the same.
    let text = hub.ok(&["report", "show", &id[..8]]);
    assert!(text.contains("同时修改的处理结果") && text.contains("按办理环节的先后规则"), "{text}");

    // An admin sees the document among those with resolved conflicts.
    let admin = server.device("admin");
    let conflicts = admin.json(&["admin", "conflicts", "--json"]);
    assert_eq!(conflicts[0]["doc"], id.as_str());
}

#[test]
fn a_worker_of_another_grid_never_receives_the_report() {
    let server = Server::start();
    let worker = server.device("worker");
    let other = server.device("worker2");
    let hub = server.device("townop");
    let id = new_report(&worker, "只在本网格");
    worker.sync();
    hub.sync();
    let s = other.sync();
    assert_eq!(s["pulled_documents"], 0);
    let list = other.json(&["report", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 0);
    let err = other.fails(&["report", "show", &id]);
    assert!(err.contains("本机没有编号为"), "{err}");
    // The hub of the town does receive it.
    assert_eq!(hub.json(&["report", "list", "--json"]).as_array().unwrap().len(), 1);
    // And worker2 cannot write into it even by hand: it never learns it exists.
    let status = other.json(&["status", "--json"]);
    assert_eq!(status["pending_changes"], 0);
}

#[test]
fn killing_the_client_mid_sync_loses_and_duplicates_nothing() {
    let server = Server::start();
    let worker = server.device("worker");
    let hub = server.device("townop");
    let admin = server.device("admin");
    let mut ids = Vec::new();
    let mut expected_changes = 0;
    for round in 0..4u64 {
        for i in 0..40 {
            ids.push(new_report(&worker, &format!("report {round}-{i}")));
            expected_changes += 1;
        }
        let id = ids.last().unwrap().clone();
        worker.ok(&["report", "note", &id, "n"]);
        expected_changes += 1;
        // Start a sync and kill -9 it after a while: at a different point each round.
        let mut child = worker.command(&["sync", "--retries", "1"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(15 + 60 * round));
        let _ = child.kill();
        let _ = child.wait();
    }
    // Resume: everything goes through exactly once.
    let s = worker.sync();
    assert_eq!(s["refused"], 0, "{s}");
    assert_eq!(worker.json(&["status", "--json"])["pending_changes"], 0);
    let (docs, parties): (Vec<Value>, Vec<Value>) =
        admin_documents(&admin).into_iter().partition(|d| d["kind"] == "report");
    assert_eq!(docs.len(), ids.len());
    assert_eq!(parties.len(), ids.len(), "each report's parties document, once");
    assert!(parties.iter().all(|d| d["kind"] == "parties" && d["changes"] == 1));
    let stored: u64 = docs.iter().map(|d| d["changes"].as_u64().unwrap()).sum();
    assert_eq!(stored, expected_changes, "each change stored exactly once");
    hub.sync();
    let listed = hub.json(&["report", "list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), ids.len());
}

fn admin_documents(admin: &Device) -> Vec<Value> {
    admin.json(&["admin", "documents", "--json"]).as_array().unwrap().clone()
}

#[test]
fn a_working_day_offline_syncs_in_one_field_sync() {
    let server = Server::start();
    let worker = server.device("worker");
    let hub = server.device("townop");
    worker.ok(&["patrol", "start", "--companion", "李强"]);
    worker.ok(&["patrol", "checkin", "--place", "村委会", "--lat", "30.5", "--lon", "114.25"]);
    for i in 0..200 {
        let lat = format!("{:.6}", 30.5 + f64::from(i) * 0.0001);
        let lon = format!("{:.6}", 114.25 + f64::from(i) * 0.00005);
        worker.ok(&["patrol", "track", "--lat", &lat, "--lon", &lon]);
    }
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = new_report(&worker, &format!("隐患 {i}"));
        worker.ok(&["patrol", "finding", &id]);
        ids.push(id);
    }
    for (k, id) in ids.iter().cycle().take(30).enumerate() {
        match k % 3 {
            0 => worker.ok(&["report", "edit", id, "--title", &format!("隐患（更新 {k}）")]),
            1 => worker.ok(&["report", "note", id, &format!("第 {k} 次回访")]),
            _ => worker.ok(&["report", "edit", id, "--urgency", "high"]),
        };
    }
    worker.ok(&["patrol", "visit", "--household", "3组12号"]);
    worker.ok(&["patrol", "note", "全天巡查，发现隐患10处"]);
    worker.ok(&["patrol", "end"]);

    let s = worker.sync();
    assert_eq!(s["round_trips"], 1, "one request/response: {s}");
    assert_eq!(s["refused"], 0, "{s}");
    assert_eq!(s["accepted"], s["pushed"]);
    assert_eq!(worker.json(&["status", "--json"])["pending_changes"], 0);

    hub.sync();
    let patrols = hub.json(&["patrol", "list", "--json"]);
    let p = &patrols[0];
    assert_eq!(p["track"].as_array().unwrap().len(), 200);
    assert_eq!(p["findings"].as_array().unwrap().len(), 10);
    assert!(p["ended_at"].is_i64());
    assert_eq!(hub.json(&["report", "list", "--json"]).as_array().unwrap().len(), 10);
}

#[test]
fn an_edit_refused_by_the_server_is_reported_set_aside_and_later_work_still_syncs() {
    let server = Server::start();
    let worker = server.device("worker");
    let hub = server.device("townop");
    let id = new_report(&worker, "垃圾堆放");
    worker.ok(&["report", "resolve", &id, "--note", "已清理"]);
    worker.sync();
    hub.sync();
    // The hub closes it while the worker, offline, still edits the title and notes on top of that.
    hub.ok(&["queue", "close", &id, "--note", "核查通过"]);
    hub.sync();
    worker.ok(&["report", "edit", &id, "--title", "垃圾堆放（补充）"]);
    worker.ok(&["report", "note", &id, "居民表示满意"]);
    let s = worker.sync();
    assert_eq!(s["refused"], 2, "the edit, and the note built on it: {s}");
    let codes: Vec<&str> =
        s["refusals"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert!(codes.contains(&"report_finished") && codes.contains(&"depends_on_refused"), "{codes:?}");
    // The worker is told, in status and on the report.
    let status = worker.ok(&["status"]);
    assert!(status.contains("被服务器拒收的修改") && status.contains("事件已办结，只能追加备注"), "{status}");
    let shown = worker.ok(&["report", "show", &id]);
    assert!(shown.contains("服务器拒收了对这份事件的修改"), "{shown}");
    // The local copy no longer carries the refused edit; the note was not lost but sent again.
    assert_eq!(s["notes_rewritten"], 1, "{s}");
    assert_eq!(worker.json(&["status", "--json"])["pending_changes"], 0);
    let mut v = worker.json(&["report", "show", &id, "--json"]);
    assert_eq!(v["refused"].as_array().unwrap().len(), 2, "the report is flagged on this device");
    v.as_object_mut().unwrap().remove("refused");
    assert_eq!(v["title"], "垃圾堆放");
    assert_eq!(v["status"], "closed");
    hub.sync();
    assert_eq!(hub.json(&["report", "show", &id, "--json"]), v, "the worker's copy matches the hub's");
    let cleared = worker.ok(&["status", "--clear-refused"]);
    assert!(cleared.contains("已清除 2 条"), "{cleared}");
    assert_eq!(worker.json(&["status", "--json"])["refused"].as_array().unwrap().len(), 0);
    // Later work on the same report is not stuck behind the refused change.
    worker.ok(&["report", "note", &id, "回访完成"]);
    let s = worker.sync();
    assert_eq!(
        (s["accepted"].as_u64(), s["waiting"].as_u64(), s["refused"].as_u64()),
        (Some(1), Some(0), Some(0)),
        "{s}"
    );
    hub.sync();
    let notes = hub.json(&["report", "show", &id, "--json"])["notes"].as_array().unwrap().clone();
    assert_eq!(notes.last().unwrap()["text"], "回访完成");
}

#[test]
fn a_party_correction_is_a_new_entry_that_the_hub_sees_and_the_old_one_stays_in_history() {
    let server = Server::start();
    let worker = server.device("worker");
    let hub = server.device("townop");
    let id = new_report(&worker, "电话记错了");
    let err = worker.fails(&["report", "edit", &id, "--correct-party", "2=张三:13900000000"]);
    assert!(err.contains("没有第 2 位当事人"), "{err}");
    let err = worker.fails(&["report", "edit", &id, "--correct-party", "张三"]);
    assert!(err.contains("序号=姓名"), "{err}");
    worker.ok(&["report", "edit", &id, "--correct-party", "1=张三:13900000000"]);
    worker.sync();
    hub.sync();
    let v = show(&hub, &id);
    let parties = v["parties"].as_array().unwrap();
    assert_eq!(parties.len(), 2, "the old entry is kept: {v}");
    assert_eq!(parties[1]["supersedes"], parties[0]["id"]);
    assert_eq!(v["corrected_parties"], serde_json::json!([parties[0]["id"]]));
    assert_eq!(v["head_count"], 1, "a correction is not another person");
    let text = hub.ok(&["report", "show", &id]);
    assert!(text.contains("1. 张三（13900000000）"), "{text}");
    assert!(!text.contains("13800000000"), "the corrected number is not shown as current: {text}");
    assert!(text.contains("1 条当事人记录已更正"), "{text}");
}
