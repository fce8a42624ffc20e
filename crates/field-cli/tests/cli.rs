//! The `field` binary without a server: first-run guidance and input errors a grid worker can act on.

use std::process::Command;

fn field(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    // No locale at all: the default language, Chinese.
    Command::new(env!("CARGO_BIN_EXE_field"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("GRIDSYNC_LANG")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .env_remove("LANG")
        .output()
        .unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_unset_device_says_how_to_set_it_up() {
    let home = tempfile::tempdir().unwrap();
    for args in [&["status"][..], &["report", "list"], &["sync"]] {
        let o = field(home.path(), args);
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(e.contains("还没有设置") && e.contains("field init --server URL --token TOKEN"), "{e}");
        assert!(!e.contains("panicked") && !e.contains("Error {"), "no debug output: {e}");
    }
}

#[test]
fn init_refuses_bad_addresses_and_unreachable_servers_in_words() {
    let home = tempfile::tempdir().unwrap();
    let o = field(home.path(), &["init", "--server", "ftp://example", "--token", "t"]);
    assert!(stderr(&o).contains("必须以 http://"), "{}", stderr(&o));
    let o = field(home.path(), &["init", "--server", "http://127.0.0.1:9", "--token", "t"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("连不上服务器"), "{}", stderr(&o));
    // Nothing half-written: the home is still unset.
    let o = field(home.path(), &["status"]);
    assert!(stderr(&o).contains("还没有设置"));
}

#[test]
fn english_is_there_on_request() {
    let home = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_field"))
        .arg("--home")
        .arg(home.path())
        .args(["--lang", "en", "status"])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("not set up yet"), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_field"))
        .arg("--home")
        .arg(home.path())
        .arg("status")
        .env("LANG", "en_US.UTF-8")
        .env_remove("GRIDSYNC_LANG")
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .output()
        .unwrap();
    assert!(stderr(&o).contains("not set up yet"), "an English LANG: {}", stderr(&o));
    let o = field(home.path(), &["--lang", "fr", "status"]);
    assert!(!o.status.success() && stderr(&o).contains("zh"), "{}", stderr(&o));
}

#[test]
fn completions_are_printed() {
    let home = tempfile::tempdir().unwrap();
    let o = field(home.path(), &["completions", "bash"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("field"));
}
