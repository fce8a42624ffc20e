//! `gridsync-server`: serve sync, manage the organisation and users.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use gridsync_core::org::{Org, Role};
use gridsync_core::policy::Policy;
use gridsync_server::ingest::IngestConfig;
use gridsync_server::store::{SqliteStore, Store};
use gridsync_server::{AppState, Clock, Config, SystemClock, demo};

#[derive(Parser)]
#[command(name = "gridsync-server", version, about = "Gridsync sync server")]
struct Cli {
    /// Data directory (the SQLite database lives here).
    #[arg(long, global = true, env = "GRIDSYNC_DATA", default_value = "./gridsync-data")]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the sync API.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: String,
        /// On an empty data directory, load the demo county and create one user per role.
        #[arg(long)]
        demo: bool,
        /// Documents kept in memory.
        #[arg(long, default_value_t = 5_000)]
        cache_docs: usize,
        /// Deadline and auto-escalation policy (TOML; see docs/policy.toml). Default: built in.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// A year's public holidays and make-up workdays (TOML, e.g. docs/calendar-2026.toml),
        /// added to the policy's working calendar. Repeat for several years.
        #[arg(long, value_name = "FILE")]
        calendar: Vec<PathBuf>,
        /// Minutes a claim on a queue item lasts unless renewed.
        #[arg(long, default_value_t = 15)]
        lease_minutes: u32,
        /// Seconds between auto-escalation passes.
        #[arg(long, default_value_t = 30)]
        auto_every: u64,
        /// Open connections at most (lowered to fit the open-file limit); more wait to be accepted.
        #[arg(long, default_value_t = 1024)]
        max_connections: usize,
        /// Requests handled at once; more wait up to 10 seconds, then get 503 busy.
        #[arg(long, default_value_t = 512)]
        max_in_flight: usize,
        /// Estimated memory (MiB) the cached documents may hold, beside --cache-docs.
        #[arg(long, default_value_t = 512)]
        cache_mb: usize,
        /// New documents one device may create per county day (more: quota_exceeded).
        #[arg(long, default_value_t = 500)]
        docs_per_device_day: u32,
        /// Devices one user may register per county day (more: 429 quota_exceeded).
        #[arg(long, default_value_t = 10)]
        devices_per_user_day: u32,
        /// Refusals stored per device and county day for `admin devices`; more are only counted.
        #[arg(long, default_value_t = 1_000)]
        refusals_per_device_day: u32,
    },
    /// Manage the organisation.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Import a revoked device's unsent work (from `field export --unsent FILE`) in another user's name.
    ///
    /// The file's changes name the revoked user, so they are re-written as USER: a report or patrol
    /// the server never received is created again with the same id and fields, authored by USER,
    /// with the device's notes; on a document the server already has, only the device's new notes
    /// are added. Every imported note starts with （转自 NAME 的设备）. Transitions (escalate,
    /// resolve, …) and field edits are NOT replayed: they were the revoked person's decisions and
    /// are listed as "not imported, redo by hand". Everything is validated against USER's role and
    /// scope like any device's push, and refusals are printed. Stop the server first.
    ImportUnsent {
        /// The export file (JSON, schemas/unsent-export.schema.json).
        file: PathBuf,
        /// The active user the work is imported as: a user id, or a name only one active user has.
        #[arg(long = "as", value_name = "USER")]
        as_user: String,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Load an org file (JSON, see schemas/org.schema.json).
    Import { file: PathBuf },
    /// Load the demo county (8 towns, 507 villages, 942 grids).
    Demo,
    /// Print the loaded organisation as JSON.
    Show,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user and print their enrolment token.
    Add {
        #[arg(long)]
        name: String,
        /// grid_worker, grid_assistant, town_operator, county_operator or admin.
        #[arg(long)]
        role: String,
        /// Grid ids (comma-separated) for grid roles, a town id for town operators, 'county' otherwise.
        #[arg(long)]
        scope: String,
        /// A chosen user id (default: generated).
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a user; their devices stop syncing at once and their queue claims are freed.
    Revoke {
        /// A user id, or a name only one active user has.
        user: String,
    },
    /// List users.
    List,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "gridsync_server=info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Holds an exclusive lock on `DIR/server.lock` while a server runs or an import writes
/// documents: the running server caches documents, so nothing else may write them meanwhile.
fn lock_data_dir(dir: &std::path::Path, what: &str) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("server.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("a server is running on {} (or an import is): {what}", dir.display())
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

fn open_store(dir: &std::path::Path) -> Result<SqliteStore> {
    SqliteStore::open(dir).with_context(|| format!("cannot open the data directory {}", dir.display()))
}

fn load_org(store: &dyn Store, org: &Org) -> Result<()> {
    store.set_org(org)?;
    println!(
        "loaded {} towns, {} villages, {} grids, {} handling units",
        org.towns.len(),
        org.villages.len(),
        org.grids.len(),
        org.units.len()
    );
    println!("a running server reads the organisation at start: restart it to use this one");
    Ok(())
}

fn loaded_org(store: &dyn Store) -> Result<Org> {
    store.org()?.context(
        "no organisation is loaded: run 'gridsync-server org import FILE' or 'gridsync-server org demo', or start with --demo",
    )
}

fn try_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            demo,
            cache_docs,
            policy,
            calendar,
            lease_minutes,
            auto_every,
            max_connections,
            max_in_flight,
            cache_mb,
            docs_per_device_day,
            devices_per_user_day,
            refusals_per_device_day,
        } => {
            let policy = match policy {
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?;
                    Policy::from_toml(&text)
                        .map_err(|e| anyhow::anyhow!("{} is not a valid policy file: {e}", p.display()))?
                }
                None => Policy::default(),
            };
            let mut policy = policy;
            for file in &calendar {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let year = gridsync_core::policy::HolidayYear::from_toml(&text).map_err(|e| {
                    anyhow::anyhow!("{} is not a valid holiday calendar: {e}", file.display())
                })?;
                let Some(c) = policy.calendar.as_mut() else {
                    anyhow::bail!(
                        "{} lists holidays, but the policy counts no working hours: add a [calendar] section to the policy (see docs/policy.toml)",
                        file.display()
                    );
                };
                c.add_year(&year);
            }
            let config = Config {
                ingest: IngestConfig {
                    cache_docs,
                    cache_bytes: cache_mb.saturating_mul(1 << 20),
                    quotas: gridsync_server::quota::Quotas {
                        docs_per_device_day,
                        devices_per_user_day,
                        refusals_per_device_day,
                    },
                    ..IngestConfig::default()
                },
                policy,
                lease_minutes,
                transport: gridsync_server::transport::Limits {
                    max_connections,
                    max_in_flight,
                    ..Default::default()
                },
            };
            let _lock = lock_data_dir(&cli.data, "stop it before starting another one")?;
            serve(&cli.data, &listen, demo, config, auto_every)
        }
        Command::ImportUnsent { file, as_user } => import_unsent(&cli.data, &file, &as_user),
        Command::Org { command } => {
            let store = open_store(&cli.data)?;
            match command {
                OrgCommand::Import { file } => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    let org = Org::from_json(&text)
                        .with_context(|| format!("{} is not a valid org file", file.display()))?;
                    load_org(&store, &org)?;
                }
                OrgCommand::Demo => load_org(&store, &gridsync_core::org::demo_county(demo::DEMO_SEED))?,
                OrgCommand::Show => println!("{}", serde_json::to_string_pretty(&loaded_org(&store)?)?),
            }
            Ok(())
        }
        Command::User { command } => {
            let store = open_store(&cli.data)?;
            match command {
                UserCommand::Add { name, role, scope, id, json } => {
                    let org = loaded_org(&store)?;
                    let Some(role) = Role::parse(&role).filter(|r| *r != Role::System) else {
                        bail!(
                            "unknown role {role:?}: use grid_worker, grid_assistant, town_operator, county_operator or admin"
                        )
                    };
                    let same_name = gridsync_server::active_users_named(&store, &name)?;
                    if !same_name.is_empty() {
                        let ids: Vec<&str> = same_name.iter().map(|u| u.id.as_str()).collect();
                        eprintln!(
                            "warning: an active user already has this name ({}); the new user is created anyway. Name users by id when revoking or importing.",
                            ids.join(", ")
                        );
                    }
                    let u = gridsync_server::create_user(
                        &store,
                        &org,
                        SystemClock.now_ms(),
                        &name,
                        role,
                        &scope,
                        id.as_deref(),
                    )?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&u)?);
                    } else {
                        println!(
                            "created {} ({}, {}, scope {})",
                            u.user,
                            u.name,
                            u.role.as_str(),
                            u.scope.describe()
                        );
                        println!("token (shown once): {}", u.token);
                        println!("register a device: field init --server URL --token {}", u.token);
                    }
                }
                UserCommand::Revoke { user } => {
                    let u = gridsync_server::find_user(&store, &user, true)?;
                    store.revoke_user(&u.id, SystemClock.now_ms())?;
                    println!("revoked {} ({}); a running server refuses their devices at once", u.id, u.name);
                }
                UserCommand::List => {
                    let offset = loaded_org(&store).map(|o| o.utc_offset_ms()).unwrap_or(8 * 3_600_000);
                    for u in store.user_rows()? {
                        println!(
                            "{}\t{}\t{}\t{}{}",
                            u.user,
                            u.name,
                            u.role.as_str(),
                            u.scope.describe(),
                            match u.revoked_at {
                                Some(at) if at > 0 => {
                                    format!("\trevoked {}", gridsync_core::localtime::minute(at, offset))
                                }
                                Some(_) => "\trevoked".into(),
                                None => String::new(),
                            }
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

fn serve(
    dir: &std::path::Path,
    listen: &str,
    demo_mode: bool,
    config: Config,
    auto_every: u64,
) -> Result<()> {
    let store = open_store(dir)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (is another server running there?)"))?;
        let addr = listener.local_addr()?;
        let org = match store.org()? {
            Some(org) => {
                if demo_mode {
                    // Enrolment tokens are printed once, at first install: a terminal log or a
                    // screen share of every later start would hand them out again.
                    match demo::read_users(dir) {
                        Some(users) => eprintln!(
                            "--demo: the demo county is installed; its {} users and their `field init` lines are in {}",
                            users.len(),
                            dir.join("demo-users.json").display()
                        ),
                        None => eprintln!(
                            "--demo: the data directory already holds an organisation; leaving it as it is"
                        ),
                    }
                }
                org
            }
            None if demo_mode => {
                let (org, users) = demo::install(&store, clock.now_ms(), &format!("http://{addr}"))?;
                demo::write_users(dir, &users).context("cannot write demo-users.json")?;
                eprintln!("{}", demo::describe(&users));
                eprintln!("(also written to {})", dir.join("demo-users.json").display());
                org
            }
            None => loaded_org(&store)?,
        };
        let store: Arc<dyn Store> = Arc::new(store);
        let state = AppState::new(store, org, clock, config)?;
        gridsync_server::auto::spawn(state.clone(), std::time::Duration::from_secs(auto_every.max(1)));
        // The line tests and scripts wait for.
        println!("gridsync-server listening on http://{addr}");
        gridsync_server::serve(listener, state, gridsync_server::shutdown_signal())
            .await
            .context("the server failed")?;
        Ok(())
    })
}

fn import_unsent(dir: &std::path::Path, file: &std::path::Path, as_user: &str) -> Result<()> {
    let _lock = lock_data_dir(
        dir,
        "stop the server first: an import writes documents the running server keeps in memory",
    )?;
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let export: gridsync_core::protocol::UnsentExport = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an export of unsent work", file.display()))?;
    let store = open_store(dir)?;
    let org = loaded_org(&store)?;
    let user = gridsync_server::find_user(&store, as_user, true)?;
    let store: Arc<dyn Store> = Arc::new(store);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let results = runtime.block_on(async {
        let state = AppState::new(store, org, Arc::new(SystemClock), Config::default())?;
        gridsync_server::import::import_unsent(&state, &export, &user).await.map_err(anyhow::Error::from)
    })?;
    println!(
        "importing {} document(s) from {}'s device {} as {} ({}):",
        results.len(),
        export.name,
        export.device,
        user.id,
        user.name
    );
    for r in &results {
        println!("  {}", r.summary());
    }
    let refused = results.iter().filter(|r| !r.refused.is_empty() || r.error.is_some()).count();
    let redo = results.iter().filter(|r| !r.not_imported.is_empty()).count();
    println!(
        "{} imported, {refused} with refusals or errors, {redo} with work to redo by hand",
        results.iter().filter(|r| r.created || r.notes > 0).count()
    );
    Ok(())
}
