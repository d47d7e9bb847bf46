//! The configuration as written by the operator, before validation. `Serialize` lists
//! the option names (see `known_options`), so the names live only here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub database: RawDatabase,
    pub redis: RawRedis,
    pub auth: RawAuth,
    pub internal: RawInternal,
    pub log: RawLog,
    pub sync_outbox: RawSyncOutbox,
    pub model_registry: RawModelRegistry,
    pub log_writer: RawLogWriter,
    pub balancer: RawBalancer,
    pub token_refresh: RawTokenRefresh,
    pub health_check: RawHealthCheck,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub balancer_listen: String,
    pub data_dir: String,
    pub trusted_proxies: Vec<String>,
    pub max_body_bytes: usize,
    pub shutdown_grace: DurationValue,
    pub header_read_timeout: DurationValue,
    pub body_read_timeout: DurationValue,
    pub keep_alive_idle: DurationValue,
    pub max_connections: usize,
    pub internal_listen: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: crate::DEFAULT_LISTEN.into(),
            balancer_listen: crate::DEFAULT_BALANCER_LISTEN.into(),
            data_dir: crate::DEFAULT_DATA_DIR.into(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 10 * 1024 * 1024,
            shutdown_grace: DurationValue::Text("30s".into()),
            header_read_timeout: DurationValue::Text("10s".into()),
            body_read_timeout: DurationValue::Text("30s".into()),
            // Longer than the 60 s idle timeout of common load balancers (AWS ALB, GCP),
            // so the balancer in front is the side that closes an idle connection; the
            // other way round it may reuse one this side is closing and see a reset.
            keep_alive_idle: DurationValue::Text("75s".into()),
            max_connections: 10_000,
            internal_listen: None,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDatabase {
    pub url: Option<String>,
    pub max_connections: u32,
}

impl Default for RawDatabase {
    fn default() -> Self {
        RawDatabase {
            url: None,
            max_connections: 10,
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRedis {
    pub url: Option<String>,
    pub key_prefix: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    #[serde(deserialize_with = "lossy_string")]
    pub admin_token: Option<String>,
    #[serde(deserialize_with = "lossy_string")]
    pub jwt_secret: Option<String>,
    pub jwt_ttl: DurationValue,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            admin_token: None,
            jwt_secret: None,
            jwt_ttl: DurationValue::Text("12h".into()),
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInternal {
    #[serde(deserialize_with = "lossy_string")]
    pub stats_token: Option<String>,
    pub allow_anonymous: bool,
    pub control_plane_url: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: String,
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: "console".into(),
        }
    }
}

/// A duration written as text (`30s`, `12h`, `1h 30m`) or as a number of seconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    pub fn to_duration(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Seconds(s) => Ok(Duration::from_secs(*s)),
            DurationValue::Text(t) => humantime::parse_duration(t.trim())
                .map_err(|e| format!("{t:?} is not a duration like 30s, 5m or 12h ({e})")),
        }
    }
}

/// Secrets may look like numbers (`EZ_INTERNAL__STATS_TOKEN=1234567890123456`), which
/// the environment provider would otherwise read as an integer.
fn lossy_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lossy {
        Text(String),
        Int(i128),
        Float(f64),
        Bool(bool),
    }
    Ok(Option::<Lossy>::deserialize(d)?.map(|v| match v {
        Lossy::Text(s) => s,
        Lossy::Int(i) => i.to_string(),
        Lossy::Float(f) => f.to_string(),
        Lossy::Bool(b) => b.to_string(),
    }))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSyncOutbox {
    pub interval: DurationValue,
    pub batch_size: i64,
    pub max_retries: i64,
    pub bus_check_interval: DurationValue,
}

impl Default for RawSyncOutbox {
    fn default() -> Self {
        RawSyncOutbox {
            interval: DurationValue::Text("5s".into()),
            batch_size: 100,
            max_retries: 10,
            bus_check_interval: DurationValue::Text("10s".into()),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTokenRefresh {
    pub enabled: bool,
    pub interval: DurationValue,
    pub refresh_before: DurationValue,
    pub max_concurrency: usize,
    pub claude_code_token_url: String,
    pub codex_token_url: String,
    pub gemini_cli_token_url: String,
    pub antigravity_token_url: String,
    pub google_token_url: String,
}

impl Default for RawTokenRefresh {
    fn default() -> Self {
        RawTokenRefresh {
            enabled: true,
            interval: DurationValue::Text("30s".into()),
            refresh_before: DurationValue::Text("10m".into()),
            max_concurrency: 8,
            claude_code_token_url: "https://console.anthropic.com/v1/oauth/token".into(),
            codex_token_url: "https://auth.openai.com/oauth/token".into(),
            gemini_cli_token_url: "https://oauth2.googleapis.com/token".into(),
            antigravity_token_url: "https://oauth2.googleapis.com/token".into(),
            google_token_url: "https://oauth2.googleapis.com/token".into(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealthCheck {
    pub interval: DurationValue,
    pub timeout: DurationValue,
}

impl Default for RawHealthCheck {
    fn default() -> Self {
        RawHealthCheck {
            interval: DurationValue::Text("5m".into()),
            timeout: DurationValue::Text("10s".into()),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawModelRegistry {
    pub refresh_every: DurationValue,
}

impl Default for RawModelRegistry {
    fn default() -> Self {
        RawModelRegistry {
            refresh_every: DurationValue::Text("10m".into()),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLogWriter {
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub retention_days: i64,
}

impl Default for RawLogWriter {
    fn default() -> Self {
        RawLogWriter {
            queue_capacity: 50_000,
            // Measured (`docs/measurements.md`): SQLite's cost per record grows with the
            // statement's size; PostgreSQL gains little beyond a few dozen rows.
            batch_size: 16,
            retention_days: 30,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBalancer {
    pub connect_timeout: DurationValue,
    pub first_byte_timeout: DurationValue,
    pub idle_timeout: DurationValue,
    pub total_timeout: DurationValue,
    pub max_failover_attempts: usize,
    pub ban_duration: DurationValue,
    pub ban_threshold: u32,
    pub ban_window: DurationValue,
    pub reconcile_interval: DurationValue,
    pub report_interval: DurationValue,
    pub report_buffer: usize,
    pub report_buffer_bytes: usize,
}

impl Default for RawBalancer {
    fn default() -> Self {
        RawBalancer {
            connect_timeout: DurationValue::Text("5s".into()),
            first_byte_timeout: DurationValue::Text("60s".into()),
            idle_timeout: DurationValue::Text("60s".into()),
            total_timeout: DurationValue::Text("10m".into()),
            max_failover_attempts: 3,
            ban_duration: DurationValue::Text("10m".into()),
            ban_threshold: 3,
            ban_window: DurationValue::Text("60s".into()),
            reconcile_interval: DurationValue::Text("5s".into()),
            report_interval: DurationValue::Text("1s".into()),
            report_buffer: 50_000,
            report_buffer_bytes: 64 * 1024 * 1024,
        }
    }
}
