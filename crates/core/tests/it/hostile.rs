//! Hostile bytes: the known automerge crashers and thousands of mutated inputs give errors, never a
//! panic escaping core.

use std::path::PathBuf;

use automerge::ActorId;
use gridsync_core::doc::{self, Author};
use gridsync_core::org::Role;
use gridsync_core::report::*;

fn base_doc() -> automerge::AutoCommit {
    let author = Author { user: "w".into(), role: Role::GridWorker, at: 1_000 };
    let mut d = create_report(
        ActorId::from([1u8; 16]),
        &author,
        &NewReport {
            anonymous: false,
            id: uuid::Uuid::from_u128(1),
            grid: "G1".into(),
            town: "T1".into(),
            category: Category::Fire,
            title: "t".into(),
            description: "d".into(),
            urgency: Urgency::High,
            location: Location::default(),
            parties: vec![],
        },
    )
    .unwrap();
    for i in 0..5 {
        add_note(&mut d, &Author { at: 2_000 + i, ..author.clone() }, "note").unwrap();
    }
    d
}

/// Feeds `bytes` through every entry point that takes outside bytes. Returns how many accepted.
fn feed(bytes: &[u8]) -> usize {
    let mut ok = 0;
    if let Ok(d) = doc::load(bytes, ActorId::from([9u8; 16])) {
        ok += 1;
        let _ = materialize_report(&d);
    }
    let mut d = base_doc();
    if doc::load_incremental(&mut d, bytes).is_ok() {
        ok += 1;
        let _ = materialize_report(&d);
    }
    if let Ok(change) = doc::decode_change(bytes) {
        let mut d = base_doc();
        if doc::apply_changes(&mut d, vec![change]).is_ok() {
            ok += 1;
            let _ = materialize_report(&d);
        }
    }
    ok
}

/// The crasher corpus, kept in the repository (`tests/data/automerge-crashers`).
pub fn crashers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/automerge-crashers")
}

/// Silences the panics automerge raises inside core's guard (expected, and thousands of them),
/// while a failing assertion of the test itself still prints its reason. `SHOW_PANICS=1` shows all.
pub(crate) fn quiet_panics() {
    if std::env::var_os("SHOW_PANICS").is_some() {
        return;
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Workspace files have relative paths; automerge's, its dependencies' and std's do not.
        let ours =
            info.location().is_some_and(|l| !l.file().starts_with('/') && !l.file().contains("automerge"));
        if ours {
            default(info);
        }
    }));
}

#[test]
fn known_crashers_are_errors() {
    quiet_panics();
    let dir = crashers_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the crasher corpus {} cannot be read: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 16, "expected the crasher corpus, found {}", files.len());
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        feed(&bytes);
    }
    // A document that went through all of that is still usable.
    let mut d = base_doc();
    assert_eq!(materialize_report(&d).unwrap().notes.len(), 5);
    assert!(!d.save().is_empty());
}

#[test]
fn a_crasher_leaves_the_target_document_untouched() {
    quiet_panics();
    let dir = crashers_dir();
    let mut refused = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        let mut d = base_doc();
        let before = d.get_heads();
        if doc::load_incremental(&mut d, &bytes).is_err() {
            refused += 1;
            assert_eq!(d.get_heads(), before);
        }
        if let Ok(c) = doc::decode_change(&bytes) {
            let mut d = base_doc();
            if doc::apply_changes(&mut d, vec![c]).is_err() {
                refused += 1;
                assert_eq!(d.get_heads(), before);
            }
        }
    }
    assert!(refused > 0, "the crasher corpus should be refused somewhere");
}

/// splitmix64, so the mutations are the same on every run.
fn rng(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn thousands_of_mutated_truncated_and_random_inputs_are_contained() {
    quiet_panics();
    let mut d = base_doc();
    let saved = d.save();
    let change = d.get_changes(&[])[0].raw_bytes().to_vec();
    let mut seed = 7u64;
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for src in [&saved, &change] {
        for len in 0..src.len() {
            inputs.push(src[..len].to_vec());
        }
        for _ in 0..1_500 {
            let mut m = src.clone();
            for _ in 0..=(rng(&mut seed) % 4) {
                let i = (rng(&mut seed) as usize) % m.len();
                m[i] = rng(&mut seed) as u8;
            }
            inputs.push(m);
        }
    }
    for _ in 0..500 {
        let n = (rng(&mut seed) % 300) as usize;
        inputs.push((0..n).map(|_| rng(&mut seed) as u8).collect());
    }
    assert!(inputs.len() > 3_000);
    let mut accepted = 0;
    for i in &inputs {
        accepted += feed(i);
    }
    // The untouched inputs are among them, so some are accepted: the harness is really feeding.
    assert!(accepted > 0);
    assert!(feed(&saved) >= 2);
    assert_eq!(feed(&change), 3);
}
