//! `field`: the offline-first client for grid workers, hub operators and admins.

mod admin;
mod home;
mod patrol;
mod report;
mod show;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{CommandFactory, Parser, Subcommand};
use gridsync_core::doc::Author;
use gridsync_core::protocol::{DeviceRegistered, DeviceRegistration};

use crate::home::{Home, Profile};

#[derive(Parser)]
#[command(name = "field", version, about = "Gridsync field client: work offline, sync when there is signal")]
struct Cli {
    /// Where this device keeps its data (default: $GRIDSYNC_HOME, else the platform data folder).
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register this device with the server (needs signal once).
    Init {
        #[arg(long)]
        server: String,
        /// The token an admin gave you.
        #[arg(long)]
        token: String,
        /// A name for this device that admins will see.
        #[arg(long, default_value = "field device")]
        label: String,
    },
    /// Who this device belongs to.
    Whoami {
        #[arg(long)]
        json: bool,
    },
    /// What waits to be sent, the last sync, refused changes.
    Status {
        #[arg(long)]
        json: bool,
        /// You have read the refusals: stop listing them (the reports keep their history).
        #[arg(long)]
        clear_refused: bool,
    },
    /// Reports (网格事件).
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Patrols (巡查).
    #[command(subcommand)]
    Patrol(patrol::PatrolCommand),
    /// The hub's queue of escalated reports.
    #[command(subcommand)]
    Queue(report::QueueCommand),
    /// Send your work and receive others' (needs signal).
    Sync {
        #[arg(long)]
        json: bool,
        /// How many times to retry a broken connection.
        #[arg(long, default_value_t = 5)]
        retries: u32,
        /// Most bytes of documents per page (the server caps it).
        #[arg(long, hide = true)]
        page_bytes: Option<u64>,
    },
    /// Sync state of devices and documents (admins).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    // Output piped into `head` and closed early is not an error worth a stack trace; any other
    // panic is reported in words, without Rust debug output.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        eprintln!("field: an internal error stopped this command (work saved before it is safe): {msg}");
    }));
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("field: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The device's clock, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The author of a local edit made now.
pub fn author(p: &Profile) -> Author {
    Author { user: p.whoami.user.clone(), role: p.whoami.role, at: now_ms() }
}

fn try_main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "field", &mut std::io::stdout());
        return Ok(());
    }
    let dir = home::resolve_dir(cli.home);
    if !matches!(cli.command, Command::Init { .. }) && !dir.join("field.sqlite3").exists() {
        bail!(
            "this device is not set up yet (home: {}). Run: field init --server URL --token TOKEN",
            dir.display()
        );
    }
    let mut home = Home::open(&dir)?;
    match cli.command {
        Command::Init { server, token, label } => init(&mut home, &server, &token, &label),
        Command::Whoami { json } => {
            let p = home.profile()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p.whoami)?);
            } else {
                println!(
                    "{} ({}), {} — scope {} — device {} on {}",
                    p.whoami.name,
                    p.whoami.user,
                    p.whoami.role.as_str(),
                    p.whoami.scope.describe(),
                    p.device,
                    p.server
                );
            }
            Ok(())
        }
        Command::Status { json, clear_refused } => {
            if clear_refused {
                let n = home.write(|tx, _| Ok(tx.execute("DELETE FROM refusals", [])?))?;
                println!("cleared {n} refusal(s)");
                return Ok(());
            }
            show::status(&home, json)
        }
        Command::Report(c) => report::run(&mut home, c),
        Command::Patrol(c) => patrol::run(&mut home, c),
        Command::Queue(c) => report::run_queue(&mut home, c),
        Command::Sync { json, retries, page_bytes } => {
            let s = sync::sync(&mut home, retries, page_bytes)?;
            show::sync_summary(&s, json)
        }
        Command::Admin(c) => admin::run(&mut home, c),
        Command::Completions { .. } => Ok(()),
    }
}

fn init(home: &mut Home, server: &str, token: &str, label: &str) -> Result<()> {
    if home.has_profile()? {
        let p = home.profile()?;
        bail!(
            "this home ({}) is already set up for {} on {}. Use another --home for another device.",
            home.dir.display(),
            p.whoami.user,
            p.server
        );
    }
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        bail!("the server address must start with http:// or https:// (got {server:?})");
    }
    // A fresh actor for a fresh store: never reuse one, or the server would see duplicate sequences.
    let mut actor = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut actor);
    let actor_hex = hex::encode(actor);
    let mut client = sync::Client::new(server, token, 2)?;
    let reg: DeviceRegistered = client
        .call(
            "POST",
            "/v1/devices",
            Some(&DeviceRegistration { actor: actor_hex.clone(), label: label.to_string() }),
        )
        .context("could not register this device")?;
    let p = Profile {
        server: server.trim_end_matches('/').to_string(),
        device: reg.device,
        token: reg.token,
        actor: actor_hex,
        whoami: reg.whoami,
        org: reg.org,
        cursor: 0,
        last_sync: None,
        active_patrol: None,
        policy: reg.policy,
    };
    home.save_profile(&p)?;
    println!(
        "This device is set up for {} ({}, {}). Data: {}",
        p.whoami.name,
        p.whoami.user,
        p.whoami.role.as_str(),
        home.dir.display()
    );
    Ok(())
}

/// Parses `NAME[:CONTACT]`.
pub fn parse_party(s: &str) -> Result<gridsync_core::report::Party> {
    // A Chinese keyboard types the full-width colon.
    let (name, contact) = match s.split_once([':', '：']) {
        Some((n, c)) => (n.trim(), Some(c.trim().to_string()).filter(|c| !c.is_empty())),
        None => (s.trim(), None),
    };
    if name.is_empty() {
        return Err(anyhow!("a party needs a name: --party NAME or --party NAME:CONTACT"));
    }
    Ok(gridsync_core::report::Party { name: name.to_string(), contact })
}
