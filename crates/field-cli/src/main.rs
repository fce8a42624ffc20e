//! `field`: the offline-first client for grid workers, hub operators and admins.

mod admin;
mod export;
mod home;
mod inbox;
mod lang;
mod patrol;
mod report;
mod show;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{CommandFactory, Parser, Subcommand};
use gridsync_core::doc::Author;
use gridsync_core::protocol::{DeviceRegistered, DeviceRegistration, ServerInfo};

use crate::home::{Home, Profile, save_profile_in};

#[derive(Parser)]
#[command(name = "field", version, about = "Gridsync field client: work offline, sync when there is signal")]
struct Cli {
    /// Where this device keeps its data (default: $GRIDSYNC_HOME, else the platform data folder).
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    /// Language of messages and tables: zh (default) or en; else GRIDSYNC_LANG or an English LANG.
    #[arg(long, global = true)]
    lang: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register this device with the server (needs signal once); on a set-up device, --server
    /// alone moves it to the server's new address.
    Init {
        /// The server's address, http://… or https://….
        #[arg(long)]
        server: String,
        /// The enrolment token an admin gave you (better: GRIDSYNC_TOKEN, or '-' to read it from
        /// standard input, so it stays out of the shell history).
        #[arg(long, env = "GRIDSYNC_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A name for this device that admins will see.
        #[arg(long, default_value = "field device")]
        label: String,
    },
    /// Who this device belongs to.
    Whoami {
        /// Print JSON (schemas/whoami.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// What waits to be sent (per report), the last good sync and the last failure, refusals.
    Status {
        /// Print JSON (schemas/device-state.schema.json).
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
        /// Print JSON (schemas/sync-outcome.schema.json), on failure too.
        #[arg(long)]
        json: bool,
        /// How many times to retry a broken connection.
        #[arg(long, default_value_t = 5)]
        retries: u32,
        /// Most bytes of documents per page (the server caps it).
        #[arg(long, hide = true)]
        page_bytes: Option<u64>,
    },
    /// What syncs brought for you: returned reports, decisions set aside, items resolved, closed,
    /// supervised or reminded, escalated away or new in your queue. Shows the new ones once;
    /// --all the history.
    Inbox {
        /// The whole history, not only what you have not seen.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        paging: crate::show::Paging,
        /// Print JSON (schemas/inbox.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Write this device's unsent work to a file, for an admin to import under another account
    /// (gridsync-server import-unsent FILE --as USER) when this account was revoked.
    Export {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        unsent: PathBuf,
    },
    /// Sync state of devices and documents (admins).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Print shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
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
        eprintln!(
            "field: {}: {msg}",
            tr!(
                "内部错误中止了这条命令（之前已保存的工作是安全的）",
                "an internal error stopped this command (work saved before it is safe)"
            )
        );
    }));
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Quiet>() => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("field: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The device's clock, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    // Tests set a device clock that is off (a phone set a year wrong) without touching the
    // machine's clock.
    clock + device_clock_skew_ms()
}

fn device_clock_skew_ms() -> i64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var("GRIDSYNC_DEVICE_CLOCK_SKEW_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
    })
}

/// The server's "now" as this device best knows it: its clock corrected by the offset learnt at
/// the last sync. Deadlines, lights and the times new edits carry use it.
pub fn server_now(p: &Profile) -> i64 {
    now_ms() + p.clock_offset_ms
}

/// The author of a local edit made now.
pub fn author(p: &Profile) -> Author {
    Author { user: p.whoami.user.clone(), role: p.whoami.role, at: server_now(p) }
}

fn try_main() -> Result<()> {
    let cli = Cli::parse();
    lang::choose(cli.lang.as_deref()).map_err(|e| anyhow!(e))?;
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "field", &mut std::io::stdout());
        return Ok(());
    }
    let dir = home::resolve_dir(cli.home);
    if !matches!(cli.command, Command::Init { .. }) && !dir.join("field.sqlite3").exists() {
        bail!(
            "{}",
            tr!(
                "这台设备还没有设置（数据目录：{}）。请运行：field init --server URL --token TOKEN",
                "this device is not set up yet (home: {}). Run: field init --server URL --token TOKEN",
                dir.display()
            )
        );
    }
    let mut home = Home::open(&dir)?;
    if home.has_profile()? {
        lang::set_utc_offset_ms(home.profile()?.org.utc_offset_ms());
    }
    match cli.command {
        Command::Init { server, token, label } => init(&mut home, &server, token.as_deref(), &label),
        Command::Whoami { json } => {
            let p = home.profile()?;
            if json {
                return show::json(&p.whoami);
            }
            println!(
                "{}",
                tr!(
                    "{}（{}），{}，范围：{}；设备 {}，服务器 {}",
                    "{} ({}), {} — scope {} — device {} on {}",
                    lang::clean(&p.whoami.name),
                    p.whoami.user,
                    lang::role(p.whoami.role),
                    p.whoami.scope.describe(),
                    p.device,
                    p.server
                )
            );
            Ok(())
        }
        Command::Status { json, clear_refused } => {
            if clear_refused {
                let n = home.write(|tx, _| Ok(tx.execute("DELETE FROM refusals", [])?))?;
                println!("{}", tr!("已清除 {n} 条拒收记录", "cleared {n} refusal(s)"));
                return Ok(());
            }
            show::status(&home.device_state()?, json)
        }
        Command::Report(c) => report::run(&mut home, c),
        Command::Patrol(c) => patrol::run(&mut home, c),
        Command::Queue(c) => report::run_queue(&mut home, c),
        Command::Sync { json, retries, page_bytes } => {
            let (outcome, result) = sync::sync(&mut home, retries, page_bytes, !json);
            // What this sync brought is shown now (as text or JSON): the inbox keeps it as seen.
            let shown: Vec<i64> = outcome.inbox.iter().map(|e| e.id).collect();
            home.mark_seen(&shown)?;
            if json {
                show::json(&outcome)?;
                // The JSON says what failed; the exit status says that something did.
                return result.map_err(|_| anyhow::Error::new(Quiet));
            }
            if result.is_ok() || outcome.round_trips > 0 {
                show::sync_outcome(&outcome, false)?;
            }
            result
        }
        Command::Inbox { all, paging, json } => {
            let limit = paging.limit.unwrap_or(if json { usize::MAX >> 1 } else { 50 });
            let entries = home.inbox(all, limit, paging.offset)?;
            show::inbox(&entries, json)?;
            let unseen: Vec<i64> = entries.iter().filter(|e| !e.seen).map(|e| e.id).collect();
            home.mark_seen(&unseen)
        }
        Command::Export { unsent } => export::unsent(&home, &unsent),
        Command::Admin(c) => admin::run(&mut home, c),
        Command::Completions { .. } => Ok(()),
    }
}

/// An error already reported (as JSON on standard output): exit 1 without another message.
#[derive(Debug)]
struct Quiet;

impl std::fmt::Display for Quiet {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

impl std::error::Error for Quiet {}

/// The token: the flag or GRIDSYNC_TOKEN, or standard input for `-`.
fn read_token(given: Option<&str>) -> Result<String> {
    let token = match given {
        Some("-") => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context(tr!("读不到令牌", "cannot read the token"))?;
            line
        }
        Some(t) => t.to_string(),
        None => bail!(
            "{}",
            tr!(
                "需要管理员给你的令牌：--token -（从标准输入读取）或环境变量 GRIDSYNC_TOKEN",
                "the token an admin gave you is needed: --token - (read from standard input) or GRIDSYNC_TOKEN"
            )
        ),
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("{}", tr!("令牌是空的", "the token is empty"));
    }
    Ok(token)
}

fn init(home: &mut Home, server: &str, token: Option<&str>, label: &str) -> Result<()> {
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        bail!(
            "{}",
            tr!(
                "服务器地址必须以 http:// 或 https:// 开头（收到的是 {:?}）",
                "the server address must start with http:// or https:// (got {:?})",
                lang::clean(server)
            )
        );
    }
    if home.has_profile()? {
        return move_server(home, server);
    }
    let token = read_token(token)?;
    let label = label.trim();
    if label.chars().count() > gridsync_core::validate::MAX_LABEL_CHARS {
        bail!(
            "{}",
            tr!(
                "设备名称最多 {} 个字",
                "a device label has at most {} characters",
                gridsync_core::validate::MAX_LABEL_CHARS
            )
        );
    }
    // A fresh actor for a fresh store: never reuse one, or the server would see duplicate sequences.
    let mut actor = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut actor);
    let actor_hex = hex::encode(actor);
    let mut client = sync::Client::new(server, &token, 2)?;
    let reg: DeviceRegistered = client
        .call(
            "POST",
            "/v1/devices",
            Some(&DeviceRegistration { actor: actor_hex.clone(), label: label.to_string() }),
        )
        .context(tr!("无法注册这台设备", "could not register this device"))?;
    let p = Profile {
        server: server.trim_end_matches('/').to_string(),
        device: reg.device,
        token: reg.token,
        actor: actor_hex,
        whoami: reg.whoami,
        org: reg.org,
        cursor: 0,
        last_sync: None,
        last_success: None,
        last_failure: None,
        revoked: false,
        server_id: reg.server_id,
        link: Default::default(),
        clock_offset_ms: 0,
        active_patrol: None,
        policy: reg.policy,
    };
    home.save_profile(&p)?;
    lang::set_utc_offset_ms(p.org.utc_offset_ms());
    println!(
        "{}",
        tr!(
            "这台设备已设置给 {}（{}，{}）。数据目录：{}",
            "This device is set up for {} ({}, {}). Data: {}",
            lang::clean(&p.whoami.name),
            p.whoami.user,
            lang::role(p.whoami.role),
            home.dir.display()
        )
    );
    Ok(())
}

/// `field init --server NEW` on a set-up home: follow the same server to its new address, keeping
/// every document and the outbox; refuse when the address answers as another server.
fn move_server(home: &mut Home, server: &str) -> Result<()> {
    let p = home.profile()?;
    let server = server.trim_end_matches('/').to_string();
    if server == p.server {
        println!("{}", tr!("这台设备已经连接 {}", "this device already syncs with {}", server));
        return Ok(());
    }
    let mut client = sync::Client::new(&server, &p.token, 2)?;
    let info: ServerInfo = client.call("GET", "/v1/server", None::<&()>).context(tr!(
        "新地址 {} 没有回答",
        "the new address {} did not answer",
        server
    ))?;
    // A device token is known only to the server that issued it: the server must say it is ours.
    let me: gridsync_core::protocol::WhoAmI = client.call("GET", "/v1/whoami", None::<&()>).map_err(|_| {
        anyhow!(tr!(
            "{} 是另一台服务器（不认识这台设备），数据保持不变。换服务器请用新的数据目录：field --home 新目录 init …",
            "{} is another server (it does not know this device); nothing changed. For another server use a new home: field --home DIR init …",
            server
        ))
    })?;
    let same_id = p.server_id.is_empty() || p.server_id == info.server_id;
    if !same_id || me.device.as_deref() != Some(p.device.as_str()) {
        bail!(
            "{}",
            tr!(
                "{} 是另一台服务器，数据保持不变。换服务器请用新的数据目录：field --home 新目录 init …",
                "{} is another server; nothing changed. For another server use a new home: field --home DIR init …",
                server
            )
        );
    }
    home.write(|tx, p| {
        save_profile_in(
            tx,
            &Profile { server: server.clone(), server_id: info.server_id.clone(), ..p.clone() },
        )
    })?;
    println!(
        "{}",
        tr!(
            "服务器已迁到 {}，本机数据全部保留；运行 field sync 继续同步",
            "the server moved to {}; everything on this device is kept. Run field sync to carry on",
            server
        )
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
        return Err(anyhow!(tr!(
            "当事人要有名字：--party 姓名 或 --party 姓名:电话",
            "a party needs a name: --party NAME or --party NAME:CONTACT"
        )));
    }
    Ok(gridsync_core::report::Party { name: name.to_string(), contact })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and every flag says what it is for in `--help`.
    #[test]
    fn every_command_and_flag_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} --{}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(name.clone());
                }
                walk(sub, &name, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "field", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
