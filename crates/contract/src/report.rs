//! What balancers report to the control plane (SPEC §5 "Internal"): log records, usage
//! per child key and per credential, and credential bans. The wire shapes of
//! `/internal/*`, shared by the sender (balancer) and the receiver (CP).

use serde::{Deserialize, Serialize};

/// One proxied request (SPEC §3 `LogRecord`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogRecord {
    pub request_id: String,
    pub master_id: i64,
    pub key_id: i64,
    pub namespace: String,
    pub public_model: String,
    /// Empty when no upstream was reached.
    #[serde(default)]
    pub upstream_model: String,
    #[serde(default)]
    pub group_id: Option<i64>,
    #[serde(default)]
    pub api_key_id: Option<i64>,
    /// The ingress route, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    /// The status the client received (499 when it went away first).
    pub status_code: u16,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    pub latency_ms: i64,
    #[serde(default)]
    pub first_token_ms: Option<i64>,
    #[serde(default)]
    pub input_tokens: i64,
    #[serde(default)]
    pub output_tokens: i64,
    #[serde(default)]
    pub client_ip: Option<String>,
    pub stream: bool,
    /// Unix seconds when the request arrived.
    pub created_at: i64,
}

/// `POST /internal/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogBatch {
    pub items: Vec<LogRecord>,
}

/// Usage of one child key since the last flush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyUsage {
    /// SHA-256 hex of the key.
    pub token_hash: String,
    pub requests: i64,
    pub tokens: i64,
    /// Unix seconds.
    pub last_accessed_at: i64,
}

/// `POST /internal/stats/flush`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyUsageBatch {
    pub items: Vec<KeyUsage>,
}

/// Use of one upstream credential since the last flush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialUsage {
    pub api_key_id: i64,
    pub requests: i64,
    pub success_requests: i64,
}

/// `POST /internal/apikey-stats/flush`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialUsageBatch {
    pub items: Vec<CredentialUsage>,
}

/// `POST /internal/apikey-bans`: a balancer banned a credential with `auto_ban` after the
/// upstream refused it (401/403/quota exhausted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialBan {
    pub api_key_id: i64,
    /// Unix seconds until which the credential is not used.
    pub ban_until: i64,
    /// Why, for the operator: e.g. `upstream 401`, `quota exhausted`.
    pub reason: String,
}

/// Why a report was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Worth sending again later (control plane unreachable, busy, database down).
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    /// Refused for what it is; sending it again cannot help.
    #[error("report rejected: {0}")]
    Rejected(String),
}

/// Where a balancer delivers its reports: the control plane's `/internal/*` endpoints
/// over HTTP (`ezapi balancer`), or the control plane itself in the same process
/// (`ezapi serve`). Both take the same shapes and answer the same way.
#[async_trait::async_trait]
pub trait ReportSink: Send + Sync + 'static {
    async fn logs(&self, batch: &LogBatch) -> Result<(), ReportError>;
    async fn key_usage(&self, batch: &KeyUsageBatch) -> Result<(), ReportError>;
    async fn credential_usage(&self, batch: &CredentialUsageBatch) -> Result<(), ReportError>;
    async fn ban(&self, ban: &CredentialBan) -> Result<(), ReportError>;
}
