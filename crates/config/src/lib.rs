//! ezapi configuration (SPEC §2).
//!
//! Layers, later wins: built-in defaults → TOML file (`--config`, or `ezapi.toml` when
//! present) → `EZ_` environment variables with `__` between section and option
//! (`EZ_DATABASE__URL`; `EZ_LOG_LEVEL` is accepted as the short form of
//! `EZ_LOG__LEVEL`) → command-line flags. Unknown options are rejected, named as the
//! operator wrote them (the variable, or the key in the file) with the nearest option;
//! values are validated once, here, into [`Config`], which the rest of the code trusts.
//! Every error names the option.

mod env;
mod raw;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ez_contract::SecretToken;
use ez_contract::redact::MaskedUrl;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;

pub use env::{EnvProblem, RenameReason, env_name};
pub use raw::RawConfig;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "ezapi.toml";
/// `server.listen` when nothing is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// `server.balancer_listen` when nothing is configured.
pub const DEFAULT_BALANCER_LISTEN: &str = "127.0.0.1:8081";
/// `server.data_dir` when nothing is configured.
pub const DEFAULT_DATA_DIR: &str = "./data";
const SECRET_VARS: [(&str, &str); 3] = [
    ("EZ_AUTH__ADMIN_TOKEN", "auth.admin_token"),
    ("EZ_AUTH__JWT_SECRET", "auth.jwt_secret"),
    ("EZ_INTERNAL__STATS_TOKEN", "internal.stats_token"),
];
const MIN_REPORT_BUFFER_BYTES: usize = 1024 * 1024;
const MAX_REPORT_BUFFER_BYTES: usize = 16 * 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Parse(String),
    #[error("invalid value for {option} ({}): {reason}", env_name(.option))]
    Invalid { option: &'static str, reason: String },
    /// `EZ_` variables that would not be read as the operator meant.
    #[error("{}", render_env_problems(.0))]
    Environment(Vec<EnvProblem>),
}

fn render_env_problems(problems: &[EnvProblem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let mut text = String::from("these environment variables are not read as written:");
            for problem in many {
                text.push_str("\n  ");
                text.push_str(&problem.to_string());
            }
            text
        }
    }
}

fn invalid(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub internal: InternalConfig,
    pub log: LogConfig,
    pub sync_outbox: SyncOutboxConfig,
    pub model_registry: ModelRegistryConfig,
    pub log_writer: LogWriterConfig,
    pub balancer: BalancerConfig,
    pub token_refresh: TokenRefreshConfig,
    pub health_check: HealthCheckConfig,
}

/// The refresh of subscription credentials' OAuth access tokens before they expire.
#[derive(Debug, Clone)]
pub struct TokenRefreshConfig {
    pub enabled: bool,
    /// How often credentials are checked.
    pub interval: Duration,
    /// A token expiring within this time is refreshed.
    pub refresh_before: Duration,
    /// Refreshes in flight at once.
    pub max_concurrency: usize,
    pub claude_code_token_url: String,
    pub codex_token_url: String,
    pub gemini_cli_token_url: String,
    pub antigravity_token_url: String,
    /// Where Vertex service-account keys are exchanged for access tokens.
    pub google_token_url: String,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub balancer_listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Peers whose `X-Forwarded-For` is believed when deciding the client IP.
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// A request head must arrive within this time, counted from the connection's
    /// accept, or on a kept-alive connection from the first byte of the next request.
    pub header_read_timeout: Duration,
    /// The whole request body must arrive within this time after its head (else 408).
    pub body_read_timeout: Duration,
    /// How long a connection may wait for its next request once the previous answer
    /// is complete.
    pub keep_alive_idle: Duration,
    /// Connections served at once, per listener; beyond, new ones are closed at once.
    pub max_connections: usize,
    /// A separate address for `/internal/*`, which then leaves the public listener.
    pub internal_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

/// `Debug` masks the URL's password (see the impls below).
#[derive(Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub kind: DatabaseKind,
    pub max_connections: u32,
}

#[derive(Clone)]
pub struct RedisConfig {
    pub url: Option<String>,
    /// Prepended to every bus key and channel (several deployments on one Redis).
    pub key_prefix: String,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub admin_token: Option<SecretToken>,
    pub jwt_secret: Option<SecretToken>,
    pub jwt_ttl: Duration,
}

#[derive(Clone)]
pub struct InternalConfig {
    pub stats_token: Option<SecretToken>,
    pub allow_anonymous: bool,
    pub control_plane_url: Option<String>,
}

// The URLs below may carry credentials (`postgres://user:password@…`,
// `redis://:password@…`): `Debug` shows them masked, so a logged `Config` leaks nothing.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &MaskedUrl(&self.url))
            .field("kind", &self.kind)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_deref().map(MaskedUrl))
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl std::fmt::Debug for InternalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalConfig")
            .field("stats_token", &self.stats_token)
            .field("allow_anonymous", &self.allow_anonymous)
            .field(
                "control_plane_url",
                &self.control_plane_url.as_deref().map(MaskedUrl),
            )
            .finish()
    }
}

/// Retries of failed bus writes, and the check for a bus that lost its data.
#[derive(Debug, Clone)]
pub struct SyncOutboxConfig {
    /// How often due entries are retried.
    pub interval: Duration,
    /// Entries retried per run.
    pub batch_size: i64,
    /// Failed retries after which an entry is `dead`.
    pub max_retries: i64,
    /// How often the CP checks that the bus still holds its data (and rebuilds it if not).
    pub bus_check_interval: Duration,
}

/// The active probe of disabled or banned credentials in groups that ask for it (the
/// group's `health_check`).
#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    /// How often the probe runs.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
}

/// The model registry's periodic republication of `meta:models`.
#[derive(Debug, Clone)]
pub struct ModelRegistryConfig {
    pub refresh_every: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Console,
    Json,
}

/// The control plane's log writer (SPEC §9): balancers' batches are stored before they
/// are acknowledged; at most `queue_capacity` records are written at once (a batch beyond
/// is refused with 503 and resent); `retention_days` = 0 keeps them forever.
#[derive(Debug, Clone)]
pub struct LogWriterConfig {
    pub queue_capacity: usize,
    /// Rows per INSERT statement (1–1000).
    pub batch_size: usize,
    pub retention_days: i64,
}

/// Deadlines and limits of the data plane (SPEC §2 `balancer`).
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// TCP/TLS connection to an upstream.
    pub connect_timeout: Duration,
    /// From sending the request to the upstream's response headers.
    pub first_byte_timeout: Duration,
    /// Longest silence between two chunks of a response body.
    pub idle_timeout: Duration,
    /// Whole request, from arrival to the last byte.
    pub total_timeout: Duration,
    /// Credentials tried per request, the first included.
    pub max_failover_attempts: usize,
    /// How long an auto-banned credential rests.
    pub ban_duration: Duration,
    /// Ambiguous refusals of one credential (a 401/402/403 that names no cause) within
    /// `ban_window` that ban it; unmistakable ones (an invalid key) ban at once.
    pub ban_threshold: u32,
    /// The sliding window in which `ban_threshold` ambiguous refusals ban a credential.
    pub ban_window: Duration,
    /// Full re-read of the snapshot, in case a refresh event was missed.
    pub reconcile_interval: Duration,
    /// How often usage, logs and counters are shipped.
    pub report_interval: Duration,
    /// Log records held while the control plane is unreachable; beyond, they are
    /// dropped and counted.
    pub report_buffer: usize,
    /// The same buffer's bound in bytes (records are counted by the size of their text).
    pub report_buffer_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Config {
    /// Loads the configuration from `file` (or `ezapi.toml` when present) and the process
    /// environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with(file, &[])
    }

    /// [`Config::load`], then `overrides` (`("server.listen", "localhost:9000")`, from
    /// command-line flags) over everything else.
    pub fn load_with(file: Option<&Path>, overrides: &[(&str, &str)]) -> Result<Config, ConfigError> {
        // Names that are not UTF-8 cannot be ours (ours are ASCII); skip them.
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())));
        let problems = env::check(vars);
        if !problems.is_empty() {
            return Err(ConfigError::Environment(problems));
        }
        let mut figment = Figment::new();
        match file {
            Some(path) if !path.is_file() => {
                return Err(ConfigError::File {
                    path: path.to_owned(),
                    reason: "not found".into(),
                });
            }
            Some(path) => figment = figment.merge(Toml::file(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE));
            }
            None => {}
        }
        figment = figment.merge(env_provider_short()).merge(env_provider());
        // The environment provider reads values that look like numbers as numbers, which
        // would mangle a numeric-looking secret; take secrets verbatim instead.
        for (var, key) in SECRET_VARS {
            if let Ok(value) = std::env::var(var) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        for (key, value) in overrides {
            figment = figment.merge(Serialized::default(key, value));
        }
        Config::from_figment(figment)
    }

    /// Validates what `figment` holds. Exposed for tests and embedding.
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|e| ConfigError::Parse(describe(e)))?;
        raw.validate()
    }

    /// The configuration `ezapi serve` runs with when nothing is configured.
    pub fn defaults() -> Config {
        RawConfig::default()
            .validate()
            .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"))
    }
}

/// `EZ_SECTION__OPTION`.
fn env_provider() -> Env {
    // Only `SECTION__OPTION` names are configuration: other `EZ_` variables (such as
    // `EZ_TEST_DATABASE_URL`) are ignored, while a misspelt section or option is an error.
    Env::prefixed("EZ_")
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

fn env_provider_short() -> Env {
    Env::raw()
        .only(&[env::SHORT_LOG_LEVEL])
        .map(|_| "log.level".into())
}

/// figment's errors in the operator's words: the variable or the file's key, not
/// figment's `default.server.listn` with its provider's name in backticks.
fn describe(errors: figment::Error) -> String {
    let known = env::known_options();
    let options: Vec<String> = known
        .iter()
        .map(|(section, option)| format!("{section}.{option}"))
        .collect();
    let mut sections: Vec<String> = known.into_iter().map(|(section, _)| section).collect();
    sections.dedup();
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let from_env = e.metadata.as_ref().is_some_and(|m| m.name.contains("environment"));
            let file = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .and_then(|s| s.file_path())
                .map(|p| p.display().to_string());
            if key.is_empty() {
                // Not about one option: the file as a whole (a TOML syntax error).
                return match &file {
                    Some(file) => format!("{file}: {}", e.kind),
                    None => e.kind.to_string(),
                };
            }
            let place = match (&file, from_env) {
                (Some(file), _) => format!("{key} in {file}"),
                (None, true) => format!("{} ({key})", env_name(&key)),
                (None, false) => key.clone(),
            };
            match &e.kind {
                figment::error::Kind::UnknownField(..) if e.path.len() == 1 => {
                    let place = place.replacen(&key, &format!("[{key}]"), 1);
                    match env::closest(&key, &sections) {
                        Some(section) => format!("{place} is not a section; did you mean [{section}]?"),
                        None => format!("{place} is not a section (the options are listed in the README under Configuration)"),
                    }
                }
                figment::error::Kind::UnknownField(..) => {
                    match env::closest(&key, &options) {
                        Some(option) => format!("{place} is not an option; did you mean {option}?"),
                        None => format!("{place} is not an option (the options are listed in the README under Configuration)"),
                    }
                }
                figment::error::Kind::InvalidType(found, expected) => {
                    format!("invalid value for {place}: found {found}, expected {}", in_words(expected))
                }
                kind => format!("invalid value for {place}: {kind}"),
            }
        })
        .collect();
    lines.join("\n")
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let server = &self.server;
        let listen = parse_addr("server.listen", &server.listen)?;
        let balancer_listen = parse_addr("server.balancer_listen", &server.balancer_listen)?;
        if server.data_dir.trim().is_empty() {
            return Err(invalid("server.data_dir", "must not be empty"));
        }
        let data_dir = PathBuf::from(&server.data_dir);
        let trusted_proxies = server
            .trusted_proxies
            .iter()
            .map(|s| parse_net(s).map_err(|reason| invalid("server.trusted_proxies", reason)))
            .collect::<Result<_, _>>()?;
        if server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        let shutdown_grace = parse_duration("server.shutdown_grace", &server.shutdown_grace)?;
        let header_read_timeout =
            positive_duration("server.header_read_timeout", &server.header_read_timeout)?;
        let body_read_timeout = positive_duration("server.body_read_timeout", &server.body_read_timeout)?;
        let keep_alive_idle = positive_duration("server.keep_alive_idle", &server.keep_alive_idle)?;
        if !(1..=1_000_000).contains(&server.max_connections) {
            return Err(invalid("server.max_connections", "must be between 1 and 1000000"));
        }
        let internal_listen = match server.internal_listen.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(value) => {
                let addr = parse_addr("server.internal_listen", value)?;
                // Port 0 asks the system for a free port, so equal texts still differ.
                if addr == listen && addr.port() != 0 {
                    return Err(invalid(
                        "server.internal_listen",
                        "must differ from server.listen (it takes /internal/* off that address)",
                    ));
                }
                Some(addr)
            }
        };

        let (url, kind) = match self.database.url.as_deref().map(str::trim) {
            None | Some("") => {
                let path = data_dir.join("ezapi.db");
                (
                    format!("sqlite://{}?mode=rwc", path.display()),
                    DatabaseKind::Sqlite,
                )
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                (url.to_owned(), DatabaseKind::Postgres)
            }
            // Create the file when missing, like the default does, unless the URL says
            // otherwise (`mode=ro`, `mode=rw`).
            Some(url) if url.starts_with("sqlite:") && !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                (format!("{url}{sep}mode=rwc"), DatabaseKind::Sqlite)
            }
            Some(url) if url.starts_with("sqlite:") => (url.to_owned(), DatabaseKind::Sqlite),
            Some(_) => {
                return Err(invalid(
                    "database.url",
                    "must be a postgres:// or sqlite: URL (leave it unset for the SQLite file in the data dir)",
                ));
            }
        };
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }

        let redis_url = match self.redis.url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url)
                if ["redis://", "rediss://", "redis+unix://", "unix://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme)) =>
            {
                Some(url.to_owned())
            }
            Some(_) => return Err(invalid("redis.url", "must be a redis:// or rediss:// URL")),
        };

        let admin_token = secret("auth.admin_token", self.auth.admin_token, 16)?;
        let jwt_secret = secret("auth.jwt_secret", self.auth.jwt_secret, 32)?;
        let jwt_ttl = parse_duration("auth.jwt_ttl", &self.auth.jwt_ttl)?;
        if jwt_ttl < Duration::from_secs(60) {
            return Err(invalid("auth.jwt_ttl", "must be at least 1m"));
        }

        let stats_token = secret("internal.stats_token", self.internal.stats_token, 16)?;
        let control_plane_url = match self.internal.control_plane_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(url.trim_end_matches('/').to_owned())
            }
            Some(_) => {
                return Err(invalid(
                    "internal.control_plane_url",
                    "must be an http:// or https:// URL",
                ));
            }
        };

        let level = self.log.level.trim().to_owned();
        tracing_subscriber::EnvFilter::try_new(&level)
            .map_err(|e| invalid("log.level", format!("{e} (use e.g. info, debug, warn)")))?;
        let format = match self.log.format.trim().to_ascii_lowercase().as_str() {
            "console" => LogFormat::Console,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid("log.format", format!("{other:?} is not console or json")));
            }
        };

        let outbox = &self.sync_outbox;
        let sync_outbox = SyncOutboxConfig {
            interval: positive_duration("sync_outbox.interval", &outbox.interval)?,
            batch_size: match outbox.batch_size {
                1..=10_000 => outbox.batch_size,
                _ => return Err(invalid("sync_outbox.batch_size", "must be between 1 and 10000")),
            },
            max_retries: match outbox.max_retries {
                1..=1_000 => outbox.max_retries,
                _ => return Err(invalid("sync_outbox.max_retries", "must be between 1 and 1000")),
            },
            bus_check_interval: positive_duration(
                "sync_outbox.bus_check_interval",
                &outbox.bus_check_interval,
            )?,
        };

        let tr = &self.token_refresh;
        let token_url = |option: &'static str, url: &str| -> Result<String, ConfigError> {
            if url.starts_with("https://") || url.starts_with("http://") {
                Ok(url.to_owned())
            } else {
                Err(invalid(option, "must be an http(s) URL"))
            }
        };
        let token_refresh = TokenRefreshConfig {
            enabled: tr.enabled,
            interval: positive_duration("token_refresh.interval", &tr.interval)?,
            refresh_before: positive_duration("token_refresh.refresh_before", &tr.refresh_before)?,
            max_concurrency: match tr.max_concurrency {
                1..=256 => tr.max_concurrency,
                _ => {
                    return Err(invalid(
                        "token_refresh.max_concurrency",
                        "must be between 1 and 256",
                    ));
                }
            },
            claude_code_token_url: token_url(
                "token_refresh.claude_code_token_url",
                &tr.claude_code_token_url,
            )?,
            codex_token_url: token_url("token_refresh.codex_token_url", &tr.codex_token_url)?,
            gemini_cli_token_url: token_url("token_refresh.gemini_cli_token_url", &tr.gemini_cli_token_url)?,
            antigravity_token_url: token_url(
                "token_refresh.antigravity_token_url",
                &tr.antigravity_token_url,
            )?,
            google_token_url: token_url("token_refresh.google_token_url", &tr.google_token_url)?,
        };

        let health_check = HealthCheckConfig {
            interval: positive_duration("health_check.interval", &self.health_check.interval)?,
            timeout: positive_duration("health_check.timeout", &self.health_check.timeout)?,
        };

        let model_registry = ModelRegistryConfig {
            refresh_every: positive_duration(
                "model_registry.refresh_every",
                &self.model_registry.refresh_every,
            )?,
        };

        let lw = &self.log_writer;
        let log_writer = LogWriterConfig {
            queue_capacity: match lw.queue_capacity {
                100..=10_000_000 => lw.queue_capacity,
                _ => {
                    return Err(invalid(
                        "log_writer.queue_capacity",
                        "must be between 100 and 10000000",
                    ));
                }
            },
            batch_size: match lw.batch_size {
                1..=1_000 => lw.batch_size,
                _ => return Err(invalid("log_writer.batch_size", "must be between 1 and 1000")),
            },
            retention_days: match lw.retention_days {
                0..=36_500 => lw.retention_days,
                _ => {
                    return Err(invalid(
                        "log_writer.retention_days",
                        "must be between 0 (keep forever) and 36500",
                    ));
                }
            },
        };

        let b = &self.balancer;
        let balancer = BalancerConfig {
            connect_timeout: positive_duration("balancer.connect_timeout", &b.connect_timeout)?,
            first_byte_timeout: positive_duration("balancer.first_byte_timeout", &b.first_byte_timeout)?,
            idle_timeout: positive_duration("balancer.idle_timeout", &b.idle_timeout)?,
            total_timeout: positive_duration("balancer.total_timeout", &b.total_timeout)?,
            max_failover_attempts: match b.max_failover_attempts {
                1..=20 => b.max_failover_attempts,
                _ => {
                    return Err(invalid(
                        "balancer.max_failover_attempts",
                        "must be between 1 and 20",
                    ));
                }
            },
            ban_duration: positive_duration("balancer.ban_duration", &b.ban_duration)?,
            ban_threshold: match b.ban_threshold {
                1..=1_000 => b.ban_threshold,
                _ => return Err(invalid("balancer.ban_threshold", "must be between 1 and 1000")),
            },
            ban_window: match parse_duration("balancer.ban_window", &b.ban_window)? {
                w if w >= Duration::from_secs(1) && w <= Duration::from_secs(86_400) => w,
                _ => return Err(invalid("balancer.ban_window", "must be between 1s and 24h")),
            },
            reconcile_interval: positive_duration("balancer.reconcile_interval", &b.reconcile_interval)?,
            report_interval: positive_duration("balancer.report_interval", &b.report_interval)?,
            report_buffer: match b.report_buffer {
                100..=10_000_000 => b.report_buffer,
                _ => {
                    return Err(invalid(
                        "balancer.report_buffer",
                        "must be between 100 and 10000000",
                    ));
                }
            },
            report_buffer_bytes: match b.report_buffer_bytes {
                MIN_REPORT_BUFFER_BYTES..=MAX_REPORT_BUFFER_BYTES => b.report_buffer_bytes,
                _ => {
                    return Err(invalid(
                        "balancer.report_buffer_bytes",
                        format!("must be between {MIN_REPORT_BUFFER_BYTES} and {MAX_REPORT_BUFFER_BYTES}"),
                    ));
                }
            },
        };

        Ok(Config {
            token_refresh,
            health_check,
            log_writer,
            balancer,
            sync_outbox,
            model_registry,
            server: ServerConfig {
                listen,
                balancer_listen,
                data_dir,
                trusted_proxies,
                max_body_bytes: server.max_body_bytes,
                shutdown_grace,
                header_read_timeout,
                body_read_timeout,
                keep_alive_idle,
                max_connections: server.max_connections,
                internal_listen,
            },
            database: DatabaseConfig {
                url,
                kind,
                max_connections: self.database.max_connections,
            },
            redis: RedisConfig {
                url: redis_url,
                key_prefix: self.redis.key_prefix,
            },
            auth: AuthConfig {
                admin_token,
                jwt_secret,
                jwt_ttl,
            },
            internal: InternalConfig {
                stats_token,
                allow_anonymous: self.internal.allow_anonymous,
                control_plane_url,
            },
            log: LogConfig { level, format },
        })
    }
}

/// serde's name of an expected type, as an operator would say it.
fn in_words(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "a boolean" => "true or false",
        other => other,
    }
}

/// `HOST:PORT`; a host name (`localhost`) is resolved here, once, preferring IPv4 (so
/// `localhost` is 127.0.0.1, as most clients try it).
fn parse_addr(option: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let value = value.trim();
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let example = "an address like 127.0.0.1:8080 or localhost:8080";
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(invalid(
            option,
            format!("{value:?} is not {example} (the port is missing)"),
        ));
    };
    let Ok(port) = port.parse::<u16>() else {
        return Err(invalid(option, format!("{value:?} is not {example}")));
    };
    if host.is_empty() {
        return Err(invalid(
            option,
            format!(
                "{value:?} has no host: write 0.0.0.0:{port} for every interface, or 127.0.0.1:{port} for this machine only"
            ),
        ));
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
        return Err(invalid(option, format!("{value:?} is not {example}")));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| invalid(option, format!("cannot resolve {host:?}: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| invalid(option, format!("{host:?} has no address")))
}

fn positive_duration(option: &'static str, value: &raw::DurationValue) -> Result<Duration, ConfigError> {
    let duration = parse_duration(option, value)?;
    if duration < Duration::from_millis(10) {
        return Err(invalid(option, "must be at least 10ms"));
    }
    Ok(duration)
}

fn parse_duration(option: &'static str, value: &raw::DurationValue) -> Result<Duration, ConfigError> {
    value.to_duration().map_err(|reason| invalid(option, reason))
}

/// Accepts a CIDR (`10.0.0.0/8`) or a single address (`10.1.2.3`).
pub fn parse_net(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| format!("{value:?} is not an IP address or CIDR"))
}

fn secret(
    option: &'static str,
    value: Option<String>,
    min_len: usize,
) -> Result<Option<SecretToken>, ConfigError> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) if v.trim().chars().count() < min_len => {
            Err(invalid(option, format!("must be at least {min_len} characters")))
        }
        Some(v) => Ok(Some(SecretToken::from_plaintext(v.trim()))),
    }
}

#[cfg(test)]
mod tests;
