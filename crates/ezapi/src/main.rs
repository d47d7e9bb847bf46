//! `ezapi`: the ez-api gateway binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ez_config::{Config, LogFormat};
use ez_control_plane::ControlPlane;
use ez_control_plane::listener::ListenerSettings;
use tracing_subscriber::EnvFilter;

/// mimalloc: the proxy allocates many short-lived buffers per request; glibc's malloc was
/// a quarter of the balancer's CPU and fragmented its heap (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ezapi",
    version,
    about = "ez-api: an LLM API gateway (control plane + balancer)"
)]
struct Cli {
    /// TOML configuration file (default: ./ezapi.toml when present). Environment
    /// variables `EZ_SECTION__OPTION` override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// All-in-one gateway on one port: SQLite file in the data dir and the in-memory bus
    /// unless `database.url` / `redis.url` say otherwise. Needs nothing installed.
    #[command(after_help = control_plane_help(true))]
    Serve {
        #[command(flatten)]
        listen: Listen,
    },
    /// The control plane of a split deployment: admin/master/internal API, database
    /// owner, writes the config bus (needs `redis.url`; balancers share that Redis).
    #[command(after_help = control_plane_help(false))]
    ControlPlane {
        #[command(flatten)]
        listen: Listen,
    },
    /// The data plane of a split deployment: the OpenAI-compatible proxy on
    /// `server.balancer_listen`, reading the config bus from Redis (`redis.url`) and
    /// reporting to the control plane (`internal.control_plane_url`). Never touches the
    /// database.
    #[command(after_help = balancer_help())]
    Balancer {
        #[arg(long, value_name = "HOST:PORT", help = format!(
            "Address to serve on (overrides EZ_SERVER__BALANCER_LISTEN and server.balancer_listen) [default: {}]",
            ez_config::DEFAULT_BALANCER_LISTEN
        ))]
        listen: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the whole configuration as one JSON document (backup, config-as-code).
    /// Upstream secrets are left out unless --include-secrets is given.
    Export {
        /// Include upstream API keys and OAuth tokens.
        #[arg(long)]
        include_secrets: bool,
        /// Write to this file instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Import a configuration document (as written by `export`). Idempotent; the whole
    /// document is validated before anything is written.
    Import {
        /// The JSON document.
        file: PathBuf,
        /// What to do with entities that exist already.
        #[arg(long, value_enum, default_value_t = Policy::Skip)]
        policy: Policy,
        /// Only report what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Subscription credentials.
    Credentials {
        #[command(subcommand)]
        action: CredentialsCommand,
    },
}

#[derive(Subcommand)]
enum CredentialsCommand {
    /// Import the credential files the official tools write — Claude Code
    /// `.credentials.json`, Codex `auth.json`, Gemini CLI `oauth_creds.json`, Antigravity's
    /// — and CLIProxyAPI's per-account files into a subscription group. Each file is
    /// recognised by its content; a file of an account the group has already updates that
    /// credential. Prints a JSON report: created, updated or refused (with the reason) per file.
    Import {
        /// The subscription group's name.
        #[arg(long)]
        group: String,
        /// The credential files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `--listen` of the commands that serve on `server.listen`.
#[derive(clap::Args)]
struct Listen {
    #[arg(long, value_name = "HOST:PORT", help = format!(
        "Address to serve on (overrides EZ_SERVER__LISTEN and server.listen) [default: {}]",
        ez_config::DEFAULT_LISTEN
    ))]
    listen: Option<String>,
}

/// The main options of `serve` and `control-plane`, by the names operators set.
fn control_plane_help(serve: bool) -> String {
    let mut help = format!(
        "Configuration: flags, then EZ_ environment variables, then the file (--config, else\n\
         ./ezapi.toml when present), then defaults. The main options:\n\
         \x20 --listen, EZ_SERVER__LISTEN   address to serve on [default: {listen}]\n\
         \x20 EZ_SERVER__DATA_DIR           directory of the SQLite database [default: {data_dir}]\n\
         \x20 EZ_DATABASE__URL              postgres://USER:PASSWORD@HOST/DB to use PostgreSQL\n\
         \x20                               [default: SQLite file ezapi.db in the data directory]\n",
        listen = ez_config::DEFAULT_LISTEN,
        data_dir = ez_config::DEFAULT_DATA_DIR,
    );
    help.push_str(if serve {
        "  EZ_REDIS__URL                 redis://HOST:PORT for the config bus [default: in-memory]\n"
    } else {
        "  EZ_REDIS__URL                 redis://HOST:PORT of the config bus balancers read [required]\n"
    });
    help.push_str(
        "  EZ_AUTH__ADMIN_TOKEN          the admin token [default: generated at the first start,\n\
         \x20                               printed once, its digest stored in the database]\n\
         \x20 EZ_LOG__LEVEL                 error, warn, info, debug or trace [default: info]\n\
         Every option is EZ_<SECTION>__<OPTION>; all are listed in the README under Configuration.",
    );
    help
}

fn balancer_help() -> String {
    format!(
        "Configuration: flags, then EZ_ environment variables, then the file (--config, else\n\
         ./ezapi.toml when present), then defaults. The main options:\n\
         \x20 --listen, EZ_SERVER__BALANCER_LISTEN  address to serve on [default: {listen}]\n\
         \x20 EZ_REDIS__URL                         redis://HOST:PORT of the config bus [required]\n\
         \x20 EZ_INTERNAL__CONTROL_PLANE_URL        where logs and usage go, http://HOST:PORT [required]\n\
         \x20 EZ_INTERNAL__STATS_TOKEN              the control plane's internal.stats_token\n\
         Every option is EZ_<SECTION>__<OPTION>; all are listed in the README under Configuration.",
        listen = ez_config::DEFAULT_BALANCER_LISTEN,
    )
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Policy {
    Skip,
    Overwrite,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides: Vec<(&str, &str)> = match &cli.command {
        Command::Serve { listen } | Command::ControlPlane { listen } => listen
            .listen
            .as_deref()
            .map(|addr| ("server.listen", addr))
            .into_iter()
            .collect(),
        Command::Balancer { listen } => listen
            .as_deref()
            .map(|addr| ("server.balancer_listen", addr))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    let config = match Config::load_with(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ezapi: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ezapi: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log_format = config.log.format;
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        // Said once: as a log record where logs are read by machines, else as a line.
        Err(e) => {
            match log_format {
                LogFormat::Json => tracing::error!("{e:#}"),
                LogFormat::Console => eprintln!("ezapi: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Console => builder.init(),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            let store = ez_control_plane::open_store(&config).await?;
            store.close().await;
            println!("migrations are up to date");
            Ok(())
        }
        Command::Serve { .. } => serve_control_plane(config, true).await,
        Command::Balancer { .. } => serve_balancer(config).await,
        Command::Export {
            include_secrets,
            output,
        } => {
            let store = ez_control_plane::open_store(&config).await?;
            let doc = ez_control_plane::config_doc::export(&store, include_secrets)
                .await
                .map_err(|e| anyhow::anyhow!("export failed: {e}"))?;
            let json = serde_json::to_string_pretty(&doc).context("encoding the document")?;
            match output {
                Some(path) => write_private(&path, &(json + "\n"))
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{json}"),
            }
            store.close().await;
            Ok(())
        }
        Command::Import {
            file,
            policy,
            dry_run,
        } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let doc: ez_control_plane::config_doc::ConfigDocument =
                ez_control_plane::api::parse_document(text.as_bytes())
                    .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.message))?;
            let store = ez_control_plane::open_store(&config).await?;
            let bus = ez_control_plane::open_bus(&config).await?;
            let cp = ControlPlane::build(&config, store.clone(), bus).await?;
            // stderr: standard output carries the JSON report.
            if let Some(token) = &cp.generated_admin_token {
                eprintln!(
                    "ezapi generated an admin token (shown only this once; store it now): {}",
                    token.expose()
                );
            }
            let policy = match policy {
                Policy::Skip => ez_control_plane::config_doc::ConflictPolicy::Skip,
                Policy::Overwrite => ez_control_plane::config_doc::ConflictPolicy::Overwrite,
            };
            let report = ez_control_plane::config_doc::import(&cp.state, doc, policy, dry_run)
                .await
                .map_err(|e| anyhow::anyhow!("import refused: {e}"))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).context("encoding the report")?
            );
            if !dry_run && config.redis.url.is_none() {
                eprintln!(
                    "note: no redis.url is configured; a running `ezapi serve` picks the import up at its next restart or on POST /admin/sync"
                );
            }
            store.close().await;
            Ok(())
        }
        Command::Credentials {
            action: CredentialsCommand::Import { group, files },
        } => import_credentials(&config, &group, &files).await,
        Command::ControlPlane { .. } => {
            if config.redis.url.is_none() {
                anyhow::bail!(
                    "`ezapi control-plane` needs `redis.url` (EZ_REDIS__URL): balancers read the config bus from Redis; use `ezapi serve` for a single process"
                );
            }
            serve_control_plane(config, false).await
        }
    }
}

/// `ezapi credentials import`: the files read (each up to the import's size limit) and
/// imported through the same code as `POST /admin/api-keys/import`.
async fn import_credentials(config: &Config, group: &str, paths: &[PathBuf]) -> anyhow::Result<()> {
    use ez_control_plane::credential_import::{self, ImportFile, ImportRequest, MAX_FILE, MAX_FILES};
    let store = ez_control_plane::open_store(config).await?;
    let groups = store.all_groups().await?;
    let Some(found) = groups.iter().find(|g| g.name == group) else {
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        anyhow::bail!("no provider group {group:?} (groups: {})", names.join(", "));
    };
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let mut content = Vec::new();
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // One byte over the limit is enough to know the file is refused.
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_FILE as u64 + 1), &mut content)
            .with_context(|| format!("reading {}", path.display()))?;
        let content = String::from_utf8(content).unwrap_or_else(|_| String::from("(not UTF-8 text)"));
        files.push(ImportFile {
            name: path.display().to_string(),
            content,
        });
    }
    let bus = ez_control_plane::open_bus(config).await?;
    let cp = ControlPlane::build(config, store.clone(), bus).await?;
    let mut reports = Vec::new();
    while !files.is_empty() {
        let batch: Vec<ImportFile> = files.drain(..files.len().min(MAX_FILES)).collect();
        let request = ImportRequest {
            group_id: found.id,
            files: batch,
        };
        let report = credential_import::import(&cp.state, request)
            .await
            .map_err(|e| anyhow::anyhow!("import refused: {e}"))?;
        eprintln!(
            "{}: {} created, {} updated, {} refused",
            found.name, report.created, report.updated, report.refused
        );
        reports.push(report);
    }
    let json = match reports.as_slice() {
        [one] => serde_json::to_string_pretty(one),
        many => serde_json::to_string_pretty(many),
    };
    println!("{}", json.context("encoding the report")?);
    if config.redis.url.is_none() {
        eprintln!(
            "note: no redis.url is configured; a running `ezapi serve` picks the credentials up at its next restart or on POST /admin/sync"
        );
    }
    store.close().await;
    Ok(())
}

/// Runs the control plane, and with `with_balancer` (`ezapi serve`) the data plane's
/// routes in the same process, reading the same bus and reporting to this control plane
/// directly.
async fn serve_control_plane(config: Config, with_balancer: bool) -> anyhow::Result<()> {
    warn_about_anonymous_internal_access(&config);
    let open_file_limit = ez_control_plane::listener::raise_open_file_limit();
    // The addresses are taken before anything is stored: on a first start the admin token
    // is generated and stored below, and shown only then, so a start that cannot serve
    // must stop before it (the next start then generates and shows one).
    let internal_listener = match config.server.internal_listen {
        Some(addr) => Some(bind(addr, "server.internal_listen", false).await?),
        None => None,
    };
    let public_listener = bind(config.server.listen, "server.listen", true).await?;
    let store = ez_control_plane::open_store(&config).await?;
    let bus = ez_control_plane::open_bus(&config).await?;
    let cp = ControlPlane::build(&config, store.clone(), bus.clone()).await?;
    print_generated_admin_token(&cp);
    let (data_plane_stop, data_plane_stopped) = tokio::sync::watch::channel(false);
    let (extra_routes, data_plane) = if with_balancer {
        let (state, tasks) = start_data_plane(&config, bus, cp.report_sink(), data_plane_stopped).await?;
        (ez_balancer::router(state), Some(tasks))
    } else {
        (axum::Router::new(), None)
    };
    let jobs = cp.scheduler().start();
    let listeners = 1 + usize::from(internal_listener.is_some());
    let mut servers = Vec::new();
    // Logged before the public address, which tests and scripts wait for.
    if let (Some(listener), Some(app)) = (internal_listener, cp.internal_router()) {
        let settings = listener_settings("internal", &config, open_file_limit, listeners);
        tracing::info!(addr = %listener.local_addr().context("reading the bound address")?, "ezapi internal listening");
        servers.push(Listening {
            listener,
            app,
            settings,
        });
    }
    let settings = listener_settings("public", &config, open_file_limit, listeners);
    let listener = public_listener;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, database = ?store.kind(), bus = cp.state.bus.kind(), "ezapi listening");
    servers.push(Listening {
        listener,
        app: cp.router_with(extra_routes),
        settings,
    });
    let stopping = serve_until_signal(servers).await?;
    // The data plane delivers its last reports before the control plane's jobs stop.
    let _ = data_plane_stop.send(true);
    if let Some(tasks) = data_plane {
        tasks.finish(stopping + config.server.shutdown_grace).await;
    }
    jobs.shutdown().await;
    cp.state.sync.drain().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// `internal.allow_anonymous` opens `/internal/*` to whoever reaches it; said at every
/// start so it is not left on by accident.
fn warn_about_anonymous_internal_access(config: &Config) {
    if !config.internal.allow_anonymous {
        return;
    }
    if config.internal.stats_token.is_some() {
        tracing::warn!(
            "internal.allow_anonymous = true has no effect: internal.stats_token is set, and /internal/* requires it"
        );
        return;
    }
    let addr = config.server.internal_listen.unwrap_or(config.server.listen);
    tracing::warn!(
        %addr,
        "internal.allow_anonymous = true: /internal/* takes requests without X-Internal-Token, so anyone who can reach {addr} can write request logs and usage and ban upstream credentials; set internal.stats_token, or at least serve /internal/* on a private address (server.internal_listen)"
    );
}

/// The balancer's background tasks: snapshot updater and reporter.
struct DataPlaneTasks {
    updater: tokio::task::JoinHandle<()>,
    reporter_task: tokio::task::JoinHandle<()>,
    reporter: std::sync::Arc<ez_balancer::Reporter>,
}

/// The least time the last delivery gets, even when draining took the whole grace.
const LAST_DELIVERY_MIN: std::time::Duration = std::time::Duration::from_secs(1);

impl DataPlaneTasks {
    /// Waits for the tasks to stop (told by their `stop` channel): the reporter delivers
    /// what it holds, within `deadline` (the end of `server.shutdown_grace`). What it
    /// could not deliver by then is said, not silently lost.
    async fn finish(self, deadline: tokio::time::Instant) {
        let _ = self.updater.await;
        let deadline = deadline.max(tokio::time::Instant::now() + LAST_DELIVERY_MIN);
        if tokio::time::timeout_at(deadline, self.reporter_task)
            .await
            .is_err()
        {
            tracing::warn!(
                undelivered_logs = self.reporter.buffered(),
                "the shutdown grace ended before every log record reached the control plane"
            );
        } else if self.reporter.buffered() > 0 {
            tracing::warn!(
                undelivered_logs = self.reporter.buffered(),
                "the control plane did not take every log record before the shutdown"
            );
        } else {
            tracing::info!("every log record was delivered");
        }
    }
}

/// Loads the snapshot, starts its updater and the reporter; both stop (the reporter
/// after a last delivery) when `stop` turns true.
async fn start_data_plane(
    config: &Config,
    bus: std::sync::Arc<dyn ez_bus::ConfigBus>,
    sink: std::sync::Arc<dyn ez_contract::report::ReportSink>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(ez_balancer::BalancerState, DataPlaneTasks)> {
    let b = &config.balancer;
    let cache = ez_balancer::SnapshotCache::new(bus.clone());
    if let Err(e) = cache.refresh().await {
        tracing::warn!(error = %e, "initial snapshot load failed; the updater retries");
    }
    let updater = cache.spawn_updater(b.reconcile_interval, stop.clone());
    let reporter = ez_balancer::Reporter::bounded(sink, bus, b.report_buffer, b.report_buffer_bytes);
    let reporter_task = reporter.spawn(b.report_interval, stop);
    let settings = ez_balancer::ProxySettings::from_config(config);
    let state = ez_balancer::BalancerState::new(cache, settings, reporter.clone())
        .context("building the upstream HTTP client")?;
    Ok((
        state,
        DataPlaneTasks {
            updater,
            reporter_task,
            reporter,
        },
    ))
}

/// A bound listener and what it serves.
struct Listening {
    listener: tokio::net::TcpListener,
    app: axum::Router,
    settings: ListenerSettings,
}

/// Listens on `addr`, the value of `option` (which `--listen` also sets when
/// `has_flag`); a failure says what to change.
async fn bind(
    addr: std::net::SocketAddr,
    option: &str,
    has_flag: bool,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!(bind_error(addr, option, has_flag, &e)))
}

fn bind_error(addr: std::net::SocketAddr, option: &str, has_flag: bool, e: &std::io::Error) -> String {
    let env = ez_config::env_name(option);
    let set = if has_flag {
        format!("{env} / --listen")
    } else {
        env
    };
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!("{addr} is in use; stop the other process or set {set}")
        }
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{addr} is not an address of this machine; set {set} to one of its addresses, or 0.0.0.0:{} for all of them",
            addr.port()
        ),
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => format!(
            "listening on {addr} needs privileges (port {} is below 1024); set {set} to a port above 1023",
            addr.port()
        ),
        _ => format!("cannot listen on {addr} ({e}); set {set}"),
    }
}

/// The `server.*` limits of one of `listeners` listeners, `max_connections` lowered to
/// what the open-file limit allows (with a warning).
fn listener_settings(
    name: &'static str,
    config: &Config,
    open_file_limit: Option<u64>,
    listeners: usize,
) -> ListenerSettings {
    let mut settings = ListenerSettings::from_config(name, &config.server);
    if let Some(configured) = settings.fit_open_file_limit(open_file_limit, listeners) {
        tracing::warn!(
            listener = name,
            configured,
            using = settings.max_connections,
            open_file_limit,
            "server.max_connections is more than the open-file limit allows (half of it is kept for database, Redis and upstream connections); raise the limit (ulimit -n, systemd LimitNOFILE=) to serve more connections"
        );
    }
    settings
}

/// Serves every listener until SIGINT/SIGTERM, then lets each drain its in-flight
/// requests for up to `server.shutdown_grace`; returns when the signal came.
async fn serve_until_signal(servers: Vec<Listening>) -> anyhow::Result<tokio::time::Instant> {
    let grace = servers
        .first()
        .map_or(std::time::Duration::ZERO, |s| s.settings.shutdown_grace);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = servers
        .into_iter()
        .map(|s| {
            let mut stop = stop_rx.clone();
            tokio::spawn(ez_control_plane::listener::serve_with(
                s.listener,
                s.app,
                s.settings,
                async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                },
            ))
        })
        .collect();
    shutdown_signal().await;
    let stopping = tokio::time::Instant::now();
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining in-flight requests"
    );
    let _ = stop_tx.send(true);
    for task in tasks {
        task.await.context("server task")?.context("serving HTTP")?;
    }
    Ok(stopping)
}

/// `ezapi balancer`: the proxy alone, fed by the bus, reporting to the control plane
/// over HTTP.
async fn serve_balancer(config: Config) -> anyhow::Result<()> {
    let open_file_limit = ez_control_plane::listener::raise_open_file_limit();
    let Some(redis_url) = &config.redis.url else {
        anyhow::bail!(
            "`ezapi balancer` needs `redis.url` (EZ_REDIS__URL): it reads the config bus the control plane writes"
        );
    };
    let Some(control_plane_url) = &config.internal.control_plane_url else {
        anyhow::bail!(
            "`ezapi balancer` needs `internal.control_plane_url` (EZ_INTERNAL__CONTROL_PLANE_URL): it reports usage and bans to the control plane"
        );
    };
    let listener = bind(config.server.balancer_listen, "server.balancer_listen", true).await?;
    let redis = ez_bus::RedisBus::connect(redis_url, config.redis.key_prefix.clone())
        .await
        .context("configuring Redis (redis.url)")?;
    if redis
        .check_server()
        .await
        .context("checking Redis (redis.url)")?
        .is_none()
    {
        tracing::error!("Redis (redis.url) is not reachable; serving from no snapshot until it answers");
    }
    let bus: std::sync::Arc<dyn ez_bus::ConfigBus> = std::sync::Arc::new(redis);
    let sink = ez_balancer::sink::HttpSink::new(
        control_plane_url,
        config
            .internal
            .stats_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
    )
    .context("building the control plane client")?;
    // Before the first snapshot load, which takes the per-group metric handles.
    let metrics = ez_control_plane::middleware::install_recorder();
    // Histogram samples pile up until drained; without a control plane's scheduler in
    // the process, this is the job that drains them between scrapes.
    let mut upkeep = ez_control_plane::scheduler::Scheduler::new();
    upkeep.add(std::sync::Arc::new(ez_control_plane::middleware::MetricsUpkeep {
        handle: metrics.clone(),
    }));
    let upkeep = upkeep.start();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (state, tasks) = start_data_plane(&config, bus, std::sync::Arc::new(sink), stopped).await?;
    let app = ez_balancer::proxy::standalone_router(state).route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { metrics.render() }
        }),
    );
    let app = ez_control_plane::middleware::apply_with(
        app,
        ez_control_plane::middleware::RequestLimits::from_config(&config.server),
    );
    let settings = listener_settings("balancer", &config, open_file_limit, 1);
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, control_plane = %ez_contract::redact::mask_url(control_plane_url), "ezapi balancer listening");
    let stopping = serve_until_signal(vec![Listening {
        listener,
        app,
        settings,
    }])
    .await?;
    let _ = stop.send(true);
    tasks.finish(stopping + config.server.shutdown_grace).await;
    upkeep.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Printed once, to the terminal only: the database keeps just the token's digest.
fn print_generated_admin_token(cp: &ControlPlane) {
    if let Some(token) = &cp.generated_admin_token {
        println!();
        println!("  ezapi generated an admin token (shown only this once; store it now):");
        println!();
        println!("    {}", token.expose());
        println!();
        println!("  Use it as: Authorization: Bearer <admin token>");
        println!();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Writes an export readable by its owner only: it holds key digests and, with
/// `--include-secrets`, upstream credentials. `0600` also when the file already existed.
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(contents.as_bytes())
}
