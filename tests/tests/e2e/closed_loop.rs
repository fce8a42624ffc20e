//! The closed loop end to end: a worker's offline report is escalated, the town hub claims, accepts,
//! dispatches and resolves it, the worker sees the outcome, the hub closes it; concurrent claims.

use gridsync_e2e::{Device, Server};

fn town_operator(server: &Server, admin: &Device, name: &str) -> Device {
    let created = admin.json(&[
        "admin",
        "user",
        "add",
        "--name",
        name,
        "--role",
        "town_operator",
        "--scope",
        &town_of_demo(server),
        "--json",
    ]);
    let token = created["token"].as_str().unwrap().to_string();
    let d = Device::new(name);
    d.ok(&["init", "--server", &server.url, "--token", &token]);
    d
}

fn town_of_demo(server: &Server) -> String {
    let text = std::fs::read_to_string(server.data.path().join("demo-users.json")).unwrap();
    let users: serde_json::Value = serde_json::from_str(&text).unwrap();
    users.as_array().unwrap().iter().find(|u| u["user"] == "townop").unwrap()["scope"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn report_to_closure_through_the_town_hub() {
    let server = Server::start();
    let worker = server.device("worker");
    let hub = server.device("townop");
    let admin = server.device("admin");

    // Offline: the worker files and escalates.
    let id = worker
        .ok(&["report", "new", "--category", "public_security", "--title", "路灯损坏", "--urgency", "high"])
        .trim()
        .to_string();
    worker.ok(&["report", "escalate", &id, "--reason", "需要镇里派人维修"]);
    assert_eq!(worker.json(&["status", "--json"])["pending_changes"], 2);
    worker.sync();

    // The hub sees it in its queue, offline after one sync.
    hub.sync();
    let q = hub.json(&["queue", "list", "--json"]);
    assert_eq!(q.as_array().unwrap().len(), 1);
    assert_eq!(q[0]["doc"], id.as_str());
    assert_eq!(q[0]["step"], "accept");
    assert_eq!(q[0]["light"], "green");
    let table = hub.ok(&["queue", "list"]);
    assert!(table.contains("路灯损坏") && table.contains("待受理"), "{table}");

    let claimed = hub.ok(&["queue", "claim", &id[..8]]);
    assert!(claimed.contains("你已认领"), "{claimed}");
    hub.ok(&["queue", "accept", &id[..8]]);
    // Handling units of the organisation, by the names people use (乡呼县应).
    let err = hub.fails(&["queue", "dispatch", &id[..8], "--lead", "城管办"]);
    assert!(err.contains("找不到承办单位") && err.contains("派出所"), "{err}");
    let err = hub.fails(&["queue", "dispatch", &id[..8], "--lead", "派出所", "--assist", "派出所"]);
    assert!(err.contains("写了两次"), "{err}");
    hub.ok(&["queue", "dispatch", &id[..8], "--lead", "派出所", "--assist", "县综合执法局"]);
    hub.ok(&["queue", "resolve", &id[..8], "--note", "已更换灯泡"]);
    // A worker cannot close it; the local check says so before anything is written.
    worker.sync();
    hub.sync();

    // The worker sees the outcome after sync.
    worker.sync();
    let v = worker.json(&["report", "show", &id, "--json"]);
    assert_eq!(v["status"], "resolved");
    assert_eq!(v["level"], "town");
    let actions: Vec<&str> =
        v["transitions"].as_array().unwrap().iter().map(|t| t["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["escalate", "accept", "dispatch", "resolve"]);
    assert_eq!(v["transitions"][1]["dept"], serde_json::Value::Null);
    let dept = v["transitions"][2]["dept"].as_str().unwrap();
    assert!(dept.ends_with("派出所（牵头）、县综合执法局（协办）"), "{dept}");
    let units = &v["transitions"][2]["units"];
    assert_eq!(units[1], "C01-ZF", "{units}");
    assert!(units[0].as_str().unwrap().ends_with("-PCS"), "{units}");
    let err = worker.fails(&["queue", "close", &id]);
    assert!(err.contains("你不能办理这一步") && err.contains("你的角色不能做这项操作"), "{err}");

    // Three checks, two reviews, one call back: not closed before the grid's check and a visit.
    hub.sync();
    let err = hub.fails(&["queue", "close", &id[..8]]);
    assert!(err.contains("还不能结案") && err.contains("网格员核查") && err.contains("回访"), "{err}");
    worker.ok(&["report", "verify", &id, "--ok", "--note", "路灯已亮"]);
    worker.sync();
    hub.sync();
    let err = hub.fails(&["queue", "close", &id[..8]]);
    assert!(err.contains("回访") && !err.contains("网格员核查"), "{err}");
    hub.ok(&["queue", "visit", &id[..8], "--result", "满意", "--note", "居民满意"]);
    hub.ok(&["queue", "close", &id[..8], "--note", "回访满意"]);
    hub.sync();
    worker.sync();
    assert_eq!(worker.json(&["report", "show", &id, "--json"])["status"], "closed");
    assert_eq!(hub.json(&["queue", "list", "--json"]).as_array().unwrap().len(), 0);
    // A closed report takes no more edits.
    let err = worker.fails(&["report", "edit", &id, "--title", "x"]);
    assert!(err.contains("已结案") && err.contains("只能追加备注"), "{err}");

    // The indicators count it.
    let stats = admin.json(&["admin", "stats", "--json"]);
    assert_eq!(stats["reports"], 1);
    assert_eq!(stats["closed"], 1);
    assert_eq!(stats["escalated"], 1);
    assert_eq!(stats["closure_rate"], 1.0);
    let text = admin.ok(&["admin", "stats"]);
    assert!(text.contains("按期结案率"), "{text}");
}

#[test]
fn concurrent_claims_one_operator_wins_the_other_is_told_who_holds_it() {
    let server = Server::start();
    let worker = server.device("worker");
    let admin = server.device("admin");
    let hub1 = server.device("townop");
    let hub2 = town_operator(&server, &admin, "周丽");
    let id =
        worker.ok(&["report", "new", "--category", "fire", "--title", "消防通道堵塞"]).trim().to_string();
    worker.ok(&["report", "escalate", &id, "--reason", "商户占道"]);
    worker.sync();
    hub1.sync();
    hub2.sync();
    let mut a = hub1
        .command(&["queue", "claim", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut b = hub2
        .command(&["queue", "claim", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (sa, sb) = (a.wait().unwrap(), b.wait().unwrap());
    assert!(sa.success() != sb.success(), "exactly one claim succeeds");
    let loser = if sa.success() { &mut b } else { &mut a };
    let mut err = String::new();
    std::io::Read::read_to_string(loser.stderr.as_mut().unwrap(), &mut err).unwrap();
    let winner_name = if sa.success() { "陈静" } else { "周丽" };
    assert!(err.contains(winner_name) && err.contains("holds this item"), "{err}");
    // Both see who holds it when they ask the server.
    let q = hub2.json(&["queue", "list", "--server", "--json"]);
    assert_eq!(q[0]["claim"]["name"], winner_name);
    // The other one's accept is refused at sync and the report flagged on their device.
    let other = if sa.success() { &hub2 } else { &hub1 };
    other.ok(&["queue", "accept", &id]);
    let s = other.sync();
    assert_eq!(s["refused"], 1, "{s}");
    assert_eq!(s["refusals"][0]["code"], "claimed");
    assert_eq!(other.json(&["report", "show", &id, "--json"])["status"], "escalated");
}

#[test]
fn the_servers_policy_file_sets_the_deadlines_devices_show_offline() {
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/policy.toml")).unwrap();
    // Accepting a normal report may take two hours under this policy.
    let policy = shipped.replacen("normal = 60", "normal = 120", 1);
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy).unwrap();
    let server = Server::start_with(&["--policy", path.to_str().unwrap()]);
    let worker = server.device("worker");
    let hub = server.device("townop");
    let id = worker.ok(&["report", "new", "--category", "request", "--title", "路面坑洼"]).trim().to_string();
    worker.ok(&["report", "escalate", &id, "--reason", "需要维修"]);
    worker.sync();
    hub.sync();
    let q = hub.json(&["queue", "list", "--json"]);
    let (since, due) = (q[0]["since"].as_i64().unwrap(), q[0]["due"].as_i64().unwrap());
    assert_eq!(due - since, 120 * 60_000, "{q}");
    let sq = hub.json(&["queue", "list", "--server", "--json"]);
    assert_eq!(sq[0]["due"].as_i64().unwrap() - sq[0]["since"].as_i64().unwrap(), 120 * 60_000);
}

/// Issue 11: the town calls, the unit answers (乡呼县应) — a unit handler's device receives
/// exactly the reports dispatched to its unit and returns a misrouted one to the hub.
#[test]
fn a_unit_device_receives_only_its_orders_and_returns_a_misrouted_one() {
    let server = Server::start();
    let worker = server.device("worker");
    let hub = server.device("townop");
    let police = server.device("police");
    let enforcer = server.device("enforcer");
    let mut ids = Vec::new();
    for title in ["邻里噪音", "占道经营"] {
        let id = worker
            .ok(&["report", "new", "--category", "dispute", "--title", title, "--party", "王五:13912345678"])
            .trim()
            .to_string();
        worker.ok(&["report", "escalate", &id, "--reason", "需要镇里协调"]);
        ids.push(id);
    }
    worker.sync();
    hub.sync();
    for id in &ids {
        hub.ok(&["queue", "accept", id]);
    }
    hub.ok(&["queue", "dispatch", &ids[0], "--lead", "派出所"]);
    hub.sync();

    police.sync();
    let list = police.json(&["report", "list", "--json"]);
    let got: Vec<&str> = list.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(got, [ids[0].as_str()], "only the report dispatched to the police station");
    let v = police.json(&["report", "show", &ids[0], "--json"]);
    assert_eq!(v["status"], "dispatched");
    assert_eq!(v["transitions"].as_array().unwrap().len(), 3, "whole, with its history: {v}");
    // A dispute's parties follow the order to the unit (the policy's closed_loop.unit_parties).
    assert_eq!(v["parties"][0]["contact"], "13912345678", "{v}");
    enforcer.sync();
    assert_eq!(enforcer.json(&["report", "list", "--json"]).as_array().unwrap().len(), 0);

    // Its queue is its live order, waiting for the unit's result, with the deadline.
    let q = police.json(&["queue", "list", "--json"]);
    assert_eq!(q.as_array().unwrap().len(), 1, "{q}");
    assert_eq!((q[0]["doc"].as_str(), q[0]["step"].as_str()), (Some(ids[0].as_str()), Some("resolve")));
    police.ok(&["report", "note", &ids[0], "已联系双方"]);
    police.ok(&["queue", "return", &ids[0], "--reason", "属于城管职责，请改派"]);
    police.sync();
    hub.sync();
    let v = hub.json(&["report", "show", &ids[0], "--json"]);
    assert_eq!(v["status"], "accepted", "back at the hub, to dispatch again: {v}");
    assert_eq!(v["notes"].as_array().unwrap().len(), 1);
    let q = hub.json(&["queue", "list", "--all", "--json"]);
    let item = q.as_array().unwrap().iter().find(|e| e["doc"] == ids[0].as_str()).unwrap();
    assert_eq!(item["step"], "dispatch", "{item}");
    // The order has ended: the unit's next note is refused by the server and set aside.
    police.ok(&["report", "note", &ids[0], "补充说明"]);
    let out = police.sync();
    assert_eq!(out["refused"], 1, "{out}");
    assert_eq!(police.json(&["queue", "list", "--json"]).as_array().unwrap().len(), 0, "no live order");
}

/// Issue 11: lead and assisting units both reply before the report is resolved; a failed check
/// sends it back to the same units; after a passing check and a visit the hub closes it.
#[test]
fn units_reply_the_grid_checks_the_hub_calls_back_and_closes() {
    let server = Server::start();
    let worker = server.device("worker");
    let hub = server.device("townop");
    let police = server.device("police");
    let enforcer = server.device("enforcer");
    let id = worker.ok(&["report", "new", "--category", "dispute", "--title", "占道纠纷"]).trim().to_string();
    worker.ok(&["report", "escalate", &id, "--reason", "需要派出所和执法队"]);
    worker.sync();
    hub.sync();
    hub.ok(&["queue", "accept", &id]);
    hub.ok(&["queue", "dispatch", &id, "--lead", "派出所", "--assist", "县综合执法局"]);
    hub.sync();
    police.sync();
    enforcer.sync();
    police.ok(&["queue", "sign", &id]);
    // 延期: the unit asks, the dispatcher approves, the unit's deadline moves.
    let err = hub.fails(&["queue", "extension", &id, "--approve"]);
    assert!(err.contains("不能延期审批"), "nothing asked yet: {err}");
    police.ok(&["queue", "extend", &id, "--until", "2099-12-31", "--reason", "需协调多方"]);
    police.sync();
    hub.sync();
    hub.ok(&["queue", "extension", &id, "--approve"]);
    hub.sync();
    police.sync();
    let q = police.json(&["queue", "list", "--json"]);
    let due = q[0]["due"].as_i64().unwrap();
    assert!(due > 4_000_000_000_000, "the approved date is the deadline: {q}");
    police.ok(&["queue", "reply", &id, "--result", "已调解，双方签字"]);
    police.sync();
    hub.sync();
    let status =
        |d: &Device| d.json(&["report", "show", &id, "--json"])["status"].as_str().unwrap().to_string();
    assert_eq!(status(&hub), "dispatched", "the assisting unit has not replied yet");
    enforcer.ok(&["queue", "reply", &id, "--result", "已清理占道物品"]);
    enforcer.sync();
    hub.sync();
    assert_eq!(status(&hub), "resolved", "lead and assisting units have replied");
    let err = enforcer.fails(&["queue", "reply", &id, "--result", "再补一句"]);
    assert!(err.contains("不能办理反馈"), "the order has ended: {err}");

    // The grid's check fails: back to the same units.
    worker.sync();
    worker.ok(&["report", "verify", &id, "--fail", "--note", "摊位又摆回来了"]);
    worker.sync();
    hub.sync();
    assert_eq!(status(&hub), "dispatched");
    police.sync();
    enforcer.sync();
    assert_eq!(police.json(&["queue", "list", "--json"]).as_array().unwrap().len(), 1, "rework");
    police.ok(&["queue", "reply", &id, "--result", "再次调解"]);
    enforcer.ok(&["queue", "reply", &id, "--result", "已取缔摊位"]);
    police.sync();
    enforcer.sync();
    worker.sync();
    assert_eq!(status(&worker), "resolved");
    worker.ok(&["report", "verify", &id, "--ok", "--note", "已恢复通行"]);
    worker.sync();
    hub.sync();
    hub.ok(&["queue", "visit", &id, "--result", "satisfied"]);
    hub.ok(&["queue", "close", &id, "--note", "办结"]);
    hub.sync();
    worker.sync();
    let v = worker.json(&["report", "show", &id, "--json"]);
    assert_eq!(v["status"], "closed", "{v}");
    let records: Vec<&str> =
        v["notes"].as_array().unwrap().iter().filter_map(|n| n["record"].as_str()).collect();
    assert_eq!(records.iter().filter(|r| **r == "reply").count(), 4, "every reply is kept: {records:?}");
    assert_eq!(records.iter().filter(|r| **r == "verify").count(), 2);
    assert_eq!(records.iter().filter(|r| **r == "visit").count(), 1);

    // Indicators per unit (item 9): the police station had two orders (the dispatch and the
    // rework), replied to both, one check failed and one passed, one satisfied visit.
    let admin = server.device("admin");
    let by = admin.json(&["admin", "stats", "--by", "unit", "--json"]);
    let units = by["units"].as_array().unwrap();
    let pcs = units.iter().find(|u| u["unit"].as_str().unwrap().ends_with("-PCS")).unwrap();
    assert_eq!(
        (pcs["orders"].as_u64(), pcs["replied"].as_u64(), pcs["signed"].as_u64()),
        (Some(2), Some(2), Some(1))
    );
    assert_eq!((pcs["checks"].as_u64(), pcs["checks_passed"].as_u64()), (Some(2), Some(1)));
    assert_eq!(pcs["satisfaction_rate"], 1.0);
    assert_eq!(pcs["verification_pass_rate"], 0.5);
    let zf = units.iter().find(|u| u["unit"] == "C01-ZF").unwrap();
    assert_eq!(zf["orders"], 2);
    let table = admin.ok(&["admin", "stats", "--by", "unit"]);
    assert!(
        table.contains("按期签收率") && table.contains("派出所") && table.contains("县综合执法局"),
        "{table}"
    );
    let towns = admin.json(&["admin", "stats", "--by", "town", "--json"]);
    assert_eq!(towns["groups"].as_array().unwrap().len(), 1, "{towns}");
    assert_eq!(towns["groups"][0]["indicators"]["closed"], 1);
    // A later visit finds the problem back: the hub reopens it, back at its dispatch step.
    hub.ok(&["queue", "visit", &id, "--result", "不满意", "--note", "摊位又回来了"]);
    hub.ok(&["queue", "reopen", &id, "--reason", "回访发现问题复现"]);
    let v = hub.json(&["report", "show", &id, "--json"]);
    assert_eq!((v["status"].as_str(), v["level"].as_str()), (Some("accepted"), Some("town")), "{v}");
    let q = hub.json(&["queue", "list", "--all", "--json"]);
    assert!(q.as_array().unwrap().iter().any(|e| e["doc"] == id.as_str() && e["step"] == "dispatch"), "{q}");
    hub.sync();
    worker.sync();
    assert_eq!(
        worker.json(&["report", "show", &id, "--json"])["status"],
        "accepted",
        "the server took the reopen"
    );
}

/// Issue 11 item 7: a grid's own settlement waits for the town's review; confirmed, it leaves the
/// queue; returned, the grid handles it again.
#[test]
fn the_town_reviews_what_the_grid_settled_itself() {
    let server = Server::start();
    let worker = server.device("worker");
    let hub = server.device("townop");
    let mut ids = Vec::new();
    for title in ["井盖松动", "路面积水"] {
        let id = worker.ok(&["report", "new", "--category", "safety", "--title", title]).trim().to_string();
        worker.ok(&["report", "resolve", &id, "--note", "已现场处理"]);
        ids.push(id);
    }
    worker.sync();
    hub.sync();
    let q = hub.json(&["queue", "list", "--json"]);
    let steps: Vec<&str> = q.as_array().unwrap().iter().map(|e| e["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["review", "review"], "{q}");
    assert!(hub.ok(&["queue", "list"]).contains("待审核"));
    let err = hub.fails(&["queue", "review", &ids[1], "--return"]);
    assert!(err.contains("--reason"), "{err}");
    hub.ok(&["queue", "review", &ids[0], "--confirm"]);
    hub.ok(&["queue", "review", &ids[1], "--return", "--reason", "积水未排净"]);
    assert_eq!(hub.json(&["queue", "list", "--json"]).as_array().unwrap().len(), 0);
    hub.sync();
    worker.sync();
    let back = worker.json(&["report", "show", &ids[1], "--json"]);
    assert_eq!((back["status"].as_str(), back["level"].as_str()), (Some("open"), Some("grid")), "{back}");
    let kept = worker.json(&["report", "show", &ids[0], "--json"]);
    assert_eq!(kept["status"], "resolved");
    // The returned one can be settled again, and waits for review again.
    worker.ok(&["report", "resolve", &ids[1], "--note", "已排净"]);
    worker.sync();
    hub.sync();
    let q = hub.json(&["queue", "list", "--json"]);
    assert_eq!(q.as_array().unwrap().len(), 1, "{q}");
    assert_eq!(q[0]["doc"], ids[1].as_str());
}

/// Issue 12: the county supervises (督办) a late town item instead of taking it away; the town
/// hears of it in its inbox and queue and answers; taking it over is a deliberate, reasoned step.
#[test]
fn the_county_supervises_the_town_answers_and_a_take_over_is_deliberate() {
    let server = Server::start();
    let worker = server.device("worker");
    let assistant = server.device("assistant");
    let hub = server.device("townop");
    let county = server.device("countyop");
    // A volunteer escalates but does not settle.
    let id =
        assistant.ok(&["report", "new", "--category", "safety", "--title", "井盖缺失"]).trim().to_string();
    let refused = assistant.fails(&["report", "resolve", &id, "--note", "已处理"]);
    assert!(refused.contains("不能"), "an assistant does not self-resolve: {refused}");
    assistant.ok(&["report", "escalate", &id, "--reason", "需要镇里处理"]);
    assistant.sync();
    worker.sync();
    hub.sync();
    county.sync();
    county.ok(&["queue", "supervise", &id, "--level", "red", "--note", "今天内受理"]);
    let s = county.sync();
    assert_eq!(s["refused"], 0, "{s}");
    let s = hub.sync();
    assert_eq!(s["inbox"][0]["kind"], "supervised", "the sync tells the town at once: {s}");
    let inbox = hub.ok(&["inbox", "--all"]);
    assert!(inbox.contains("红牌督办") && inbox.contains("今天内受理"), "{inbox}");
    let q = hub.json(&["queue", "list", "--json"]);
    assert_eq!(q[0]["supervision"], "red", "{q}");
    assert!(hub.ok(&["queue", "list"]).contains("红牌督办"));
    hub.ok(&["queue", "answer", &id, "--note", "已安排人员上午到场"]);
    hub.sync();
    assert!(hub.json(&["queue", "list", "--json"])[0].get("supervision").is_none());
    // The county cannot work the town's item without taking it over, with a reason.
    assert!(county.fails(&["queue", "accept", &id]).contains("不能"));
    assert!(county.fails(&["queue", "take-over", &id, "--reason", ""]).contains("理由"));
    county.ok(&["queue", "take-over", &id, "--reason", "涉及多个乡镇，县里统一处理"]);
    county.sync();
    let v = county.json(&["report", "show", &id, "--json"]);
    assert_eq!((v["status"].as_str(), v["level"].as_str()), (Some("accepted"), Some("county")), "{v}");
}
