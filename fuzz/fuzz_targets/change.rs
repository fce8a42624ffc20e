//! Fuzz target: one change from outside, through what the server does with it — decode, apply on a
//! report, materialize, validate, save and reload (a document that does not reload is refused, as
//! the server refuses it) — then read the reloaded document. A panic escaping core's guards, or a
//! reloaded document that reads differently from the one validated, is a crash.
//!
//! `GRIDSYNC_FUZZ_DUMP=FILE` writes the change bytes an input builds to FILE (to turn a crash into a
//! raw-change entry of `tests/data/automerge-crashers`).
//!
//! The first input byte chooses how the rest is used. Bit 4 set: the next byte picks one of the
//! base report's own changes (creation, note, title edit, escalation) and the rest patches its
//! body, three bytes a patch (16-bit offset, value), so mutations start from valid changes without
//! a seed corpus; bit 4 clear: the rest is the change. Bit 0 set wraps the body in a chunk header
//! with a valid checksum (bits 1–2: chunk type 0 document, 1 change, 2 compressed change), so
//! mutations reach past the checksum. Bit 3 applies the change to an empty document (a creation)
//! instead of the report.

#![no_main]

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use automerge::{ActorId, AutoCommit};
use gridsync_core::doc::{self, Author};
use gridsync_core::org::{Org, Principal, Role, Scope, demo_county};
use gridsync_core::report::{self, ReportView};
use gridsync_core::validate::{Writer, check_report};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

struct Base {
    org: Org,
    who: Principal,
    actors: BTreeSet<String>,
    doc: AutoCommit,
    view: ReportView,
    /// Raw bytes of the changes behind `doc` plus one more (a title edit and an escalation).
    changes: Vec<Vec<u8>>,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        // Automerge's panics are caught by core's guards and stay quiet; any other is reported
        // (a panic that escapes the guards aborts the run).
        std::panic::set_hook(Box::new(|info| {
            if info.location().is_some_and(|l| !l.file().contains("automerge")) {
                eprintln!("{info}");
            }
        }));
        let org = demo_county(20_240_601);
        let grid = org.grids[0].clone();
        let actor = ActorId::from([1u8; 16]);
        let author = Author { user: "worker".into(), role: Role::GridWorker, at: 1_000 };
        let mut d = report::create_report(
            actor.clone(),
            &author,
            &report::NewReport {
                id: uuid::Uuid::from_u128(1),
                grid: grid.id.clone(),
                town: grid.town.clone(),
                category: report::Category::Dispute,
                title: "fuzz".into(),
                description: "a report to fuzz against".into(),
                urgency: report::Urgency::Normal,
                location: report::Location::default(),
                parties: vec![],
            },
        )
        .expect("a report");
        report::add_note(&mut d, &author, "a note").expect("a note");
        let view = report::materialize_report(&d).expect("a view");
        let mut more = d.clone();
        let edit = report::ReportEdit { title: Some("新标题".into()), ..Default::default() };
        report::edit_report(&mut more, &author, &edit).expect("an edit");
        let action = gridsync_core::lifecycle::Action::Escalate;
        report::add_transition(&mut more, &author, action, "help", None).expect("a transition");
        let changes = more.get_changes(&[]).iter().map(|c| c.raw_bytes().to_vec()).collect();
        Base {
            org,
            who: Principal {
                user: "worker".into(),
                role: Role::GridWorker,
                scope: Scope::Grids(vec![grid.id]),
            },
            actors: [actor.to_hex_string()].into(),
            doc: d,
            view,
            changes,
        }
    })
}

/// The body of a chunk: after the magic, checksum, type byte and length.
fn body_of(raw: &[u8]) -> &[u8] {
    let mut at = 9;
    while raw.get(at).is_some_and(|b| b & 0x80 != 0) {
        at += 1;
    }
    raw.get(at + 1..).unwrap_or_default()
}

/// `body` as an Automerge chunk of `kind` with a valid checksum.
fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut header = vec![kind];
    let mut len = body.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        header.push(if len == 0 { byte } else { byte | 0x80 });
        if len == 0 {
            break;
        }
    }
    let sum = Sha256::new().chain_update(&header).chain_update(body).finalize();
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83];
    out.extend_from_slice(&sum[..4]);
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let b = base();
    let body = if mode & 16 == 16 {
        let Some((&k, patches)) = rest.split_first() else { return };
        let raw = &b.changes[k as usize % b.changes.len()];
        let mut bytes = if mode & 1 == 1 { body_of(raw).to_vec() } else { raw.clone() };
        for p in patches.chunks_exact(3) {
            if !bytes.is_empty() {
                let at = usize::from(u16::from_le_bytes([p[0], p[1]])) % bytes.len();
                bytes[at] = p[2];
            }
        }
        bytes
    } else {
        rest.to_vec()
    };
    let bytes = if mode & 1 == 1 { chunk((mode >> 1) & 3, &body) } else { body };
    if let Some(path) = std::env::var_os("GRIDSYNC_FUZZ_DUMP") {
        let _ = std::fs::write(path, &bytes);
    }
    let Ok(change) = doc::decode_change(&bytes) else { return };
    let creation = mode & 8 == 8;
    let (start, before) = if creation { (AutoCommit::new(), None) } else { (b.doc.clone(), Some(&b.view)) };
    let Ok(after) = doc::apply_changes_owned(start, vec![change]) else { return };
    let Ok(Ok(view)) = catch_unwind(AssertUnwindSafe(|| report::materialize_report(&after))) else { return };
    let writer = Writer { who: &b.who, actors: &b.actors };
    if check_report(&b.org, &writer, before, &view).is_err() {
        return;
    }
    // The server keeps what saves and reloads; anything else is refused (issue 9, item 1).
    let mut after = after;
    let Ok((_, reloaded)) = doc::save_and_reload(&mut after, ActorId::from([0u8; 16])) else { return };
    let again = catch_unwind(AssertUnwindSafe(|| report::materialize_report(&reloaded)))
        .expect("a reloaded document reads without panicking")
        .expect("a reloaded document reads");
    assert_eq!(again, view, "an accepted document reads the same after save and reload");
});
