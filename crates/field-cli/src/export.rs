//! `field export --unsent FILE`: the work this device holds that the server never acknowledged,
//! written as one JSON file (`UnsentExport`) an admin imports under another account.

use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use gridsync_core::doc::DocKind;
use gridsync_core::protocol::{UnsentDocument, UnsentExport};
use rusqlite::params;

use crate::home::Home;
use crate::{now_ms, tr};

pub fn unsent(home: &Home, file: &Path) -> Result<()> {
    let p = home.profile()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let pending = home.pending_documents()?;
    let track_points: i64 = home.conn.query_row("SELECT COUNT(*) FROM pending_track", [], |r| r.get(0))?;
    if pending.is_empty() {
        println!("{}", tr!("没有未发送的工作，不需要导出", "there is no unsent work to export"));
        if track_points > 0 {
            println!(
                "{}",
                tr!(
                    "（另有 {track_points} 个轨迹点尚未打包；先结束巡查再导出）",
                    "({track_points} track point(s) are not packed yet; end the patrol, then export)"
                )
            );
        }
        return Ok(());
    }
    let mut documents = Vec::new();
    for doc in &pending {
        let mut st = home.conn.prepare("SELECT bytes FROM outbox WHERE doc_id = ?1 ORDER BY seq")?;
        let changes: Vec<String> = st
            .query_map(params![doc.doc], |r| r.get::<_, Vec<u8>>(0))?
            .map(|b| b.map(|b| b64.encode(b)))
            .collect::<Result<_, _>>()?;
        let snapshot: Option<Vec<u8>> =
            home.conn.query_row("SELECT bytes FROM docs WHERE id = ?1", [&doc.doc], |r| r.get(0)).ok();
        let Some(snapshot) = snapshot else { continue };
        documents.push(UnsentDocument {
            doc: doc.doc.clone(),
            kind: doc.kind,
            title: doc.title.clone(),
            changes,
            snapshot: b64.encode(snapshot),
        });
    }
    let export = UnsentExport {
        format: "gridsync-unsent/1".into(),
        exported_at: now_ms(),
        server_id: p.server_id.clone(),
        user: p.whoami.user.clone(),
        name: p.whoami.name.clone(),
        device: p.device.clone(),
        documents,
    };
    if file.exists() {
        bail!(
            "{}",
            tr!("{} 已存在；请换一个文件名", "{} exists already; choose another file name", file.display())
        );
    }
    let text = serde_json::to_string_pretty(&export)?;
    std::fs::write(file, text).with_context(|| tr!("无法写入 {}", "cannot write {}", file.display()))?;
    let reports = export.documents.iter().filter(|d| d.kind == DocKind::Report).count();
    let changes: usize = export.documents.iter().map(|d| d.changes.len()).sum();
    println!(
        "{}",
        tr!(
            "已把 {} 份文档（其中事件 {reports} 份）的 {changes} 项未发送修改写入 {}。请交给管理员：gridsync-server import-unsent {} --as 新账号",
            "wrote {} document(s) ({reports} report(s)) with {changes} unsent change(s) to {}. Give it to your administrator: gridsync-server import-unsent {} --as USER",
            export.documents.len(),
            file.display(),
            file.display()
        )
    );
    Ok(())
}
