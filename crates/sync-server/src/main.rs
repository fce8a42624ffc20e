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
        /// Minutes a claim on a queue item lasts unless renewed.
        #[arg(long, default_value_t = 15)]
        lease_minutes: u32,
        /// Seconds between auto-escalation passes.
        #[arg(long, default_value_t = 30)]
        auto_every: u64,
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
    /// Revoke a user; their devices stop syncing at once.
    Revoke { user: String },
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

fn open_store(dir: &std::path::Path) -> Result<SqliteStore> {
    SqliteStore::open(dir).with_context(|| format!("cannot open the data directory {}", dir.display()))
}

fn load_org(store: &dyn Store, org: &Org) -> Result<()> {
    store.set_org(org)?;
    println!("loaded {} towns, {} villages, {} grids", org.towns.len(), org.villages.len(), org.grids.len());
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
        Command::Serve { listen, demo, cache_docs, policy, lease_minutes, auto_every } => {
            let policy = match policy {
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?;
                    Policy::from_toml(&text)
                        .map_err(|e| anyhow::anyhow!("{} is not a valid policy file: {e}", p.display()))?
                }
                None => Policy::default(),
            };
            let config = Config {
                ingest: IngestConfig { cache_docs, ..IngestConfig::default() },
                policy,
                lease_minutes,
            };
            serve(&cli.data, &listen, demo, config, auto_every)
        }
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
                    store.revoke_user(&user, SystemClock.now_ms())?;
                    println!("revoked {user}");
                }
                UserCommand::List => {
                    for u in store.users()? {
                        println!(
                            "{}\t{}\t{}\t{}{}",
                            u.id,
                            u.name,
                            u.role.as_str(),
                            u.scope.describe(),
                            if u.revoked { "\trevoked" } else { "" }
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
                    match demo::read_users(dir) {
                        Some(users) => eprintln!("{}", demo::describe(&users)),
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
