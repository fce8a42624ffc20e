//! End-to-end test harness: starts the real `gridsync-server` on a free port with the demo county
//! and runs the real `field` binary in temporary homes, one per device.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// The directory holding the workspace's built binaries (next to this test executable).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    for name in ["gridsync-server", "field"] {
        assert!(
            dir.join(name).exists(),
            "{} is missing: run the tests with `cargo test --workspace`, which builds it",
            dir.join(name).display()
        );
    }
    dir
}

/// A running server, killed when dropped.
pub struct Server {
    pub url: String,
    pub data: tempfile::TempDir,
    child: Child,
}

impl Server {
    /// Starts `gridsync-server serve --demo` on a free loopback port.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// The same, with extra `serve` arguments.
    pub fn start_with(extra: &[&str]) -> Server {
        let data = tempfile::tempdir().expect("a temp dir");
        let (url, child) = spawn(data.path(), extra);
        Server { url, data, child }
    }

    /// Stops the server and starts it again on the same data, at a new address.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the server (its data stays), e.g. for `gridsync-server import-unsent`.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a stopped server again on the same data, at a new address.
    pub fn start_again(&mut self) {
        let (url, child) = spawn(self.data.path(), &[]);
        self.url = url;
        self.child = child;
    }

    /// Runs a `gridsync-server` command (not `serve`) on this server's data directory.
    pub fn admin_command(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("gridsync-server"))
            .arg("--data")
            .arg(self.data.path())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run gridsync-server")
    }

    /// The enrolment token of a demo user (`worker`, `assistant`, `worker2`, `townop`, `countyop`, `admin`).
    pub fn token(&self, user: &str) -> String {
        let text =
            std::fs::read_to_string(self.data.path().join("demo-users.json")).expect("demo-users.json");
        let users: Value = serde_json::from_str(&text).expect("demo users JSON");
        users
            .as_array()
            .and_then(|a| a.iter().find(|u| u["user"] == user))
            .and_then(|u| u["token"].as_str())
            .unwrap_or_else(|| panic!("no demo user {user}"))
            .to_string()
    }

    /// Registers a new device for a demo user.
    pub fn device(&self, user: &str) -> Device {
        let d = Device { home: tempfile::tempdir().expect("a temp dir"), name: user.to_string() };
        d.ok(&["init", "--server", &self.url, "--token", &self.token(user), "--label", user]);
        d
    }
}

/// Starts `gridsync-server serve --demo` on `data` and a free port; returns its URL.
fn spawn(data: &Path, extra: &[&str]) -> (String, Child) {
    let mut child = Command::new(bin_dir().join("gridsync-server"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gridsync-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("the server's first line");
    let url = line
        .trim()
        .strip_prefix("gridsync-server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
        .to_string();
    (url, child)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One field device: a home directory.
pub struct Device {
    pub home: tempfile::TempDir,
    pub name: String,
}

impl Device {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_dir().join("field"));
        // Human output in the default language, Chinese, whatever the machine's locale.
        c.arg("--home").arg(self.home.path()).args(args).env("GRIDSYNC_LANG", "zh");
        c
    }

    /// Runs `field ARGS`; on failure, panics with the command, its output and the home.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run field")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            panic!(
                "field {} failed on {} ({}):\n--- stdout\n{}\n--- stderr\n{}",
                args.join(" "),
                self.name,
                self.home.path().display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command expected to fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "field {} should have failed on {}", args.join(" "), self.name);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("field {} printed no JSON ({e}):\n{text}", args.join(" ")))
    }

    /// `field sync --json`.
    pub fn sync(&self) -> Value {
        self.json(&["sync", "--json", "--retries", "1"])
    }
}
