//! What balancers report to the control plane (SPEC §5 "Internal"): log records, usage
//! per child key and per credential, and credential bans. The wire shapes of
//! `/internal/*`, shared by the sender (balancer) and the receiver (CP).

use serde::{Deserialize, Serialize};

/// One proxied request (SPEC §3 `LogRecord`). Fields a control plane does not know are
/// ignored rather than refused: a balancer upgraded before its control plane sends
/// fields the older one lacks, and its records must still be stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The wire format of the upstream that answered (`openai_chat`,
    /// `anthropic_messages`, …; see `docs/formats.md`); empty when none was reached. It
    /// differs from the ingress route's format when the request was translated.
    #[serde(default)]
    pub upstream_format: String,
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
    /// The upstream's final usage block never arrived (the client went away mid-stream,
    /// or the stream broke): `output_tokens` is counted from the streamed text instead.
    #[serde(default)]
    pub usage_estimated: bool,
    #[serde(default)]
    pub client_ip: Option<String>,
    pub stream: bool,
    /// Unix seconds when the request arrived.
    pub created_at: i64,
}

/// Records or items one `/internal/*` request may carry (the control plane refuses more).
pub const MAX_BATCH_ITEMS: usize = 10_000;

/// Byte limits of a log record's text fields (after [`LogRecord::sanitise`]). Values
/// beyond are cut on a character boundary; the balancer cuts before it buffers a record
/// and the control plane again before it stores one.
pub mod limits {
    pub const REQUEST_ID: usize = 128;
    pub const NAMESPACE: usize = 128;
    pub const MODEL: usize = 256;
    pub const ENDPOINT: usize = 128;
    pub const ERROR_CODE: usize = 64;
    pub const ERROR_MESSAGE: usize = 1_000;
    pub const CLIENT_IP: usize = 64;
    /// A credential's `last_error` ([`super::CredentialUsage`]).
    pub const LAST_ERROR: usize = 256;
    /// A usage window's name ([`super::QuotaWindow`]).
    pub const WINDOW_NAME: usize = 32;
}

/// `value` without control characters (NUL included: PostgreSQL refuses it in text),
/// cut to at most `max` bytes on a character boundary. Allocates only when it changes.
pub fn clean_text(value: &mut String, max: usize) {
    if value.chars().any(char::is_control) {
        value.retain(|c| !c.is_control());
    }
    if value.len() > max {
        let mut end = max;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        // What was cut must not stay allocated behind a short value.
        value.shrink_to_fit();
    }
}

/// A copy of `value` made fit for a log record (see [`clean_text`]) that never copies
/// more than `max` bytes of it, however long it is.
pub fn clean_copy(value: &str, max: usize) -> String {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let mut copy = value[..end].to_owned();
    clean_text(&mut copy, max);
    copy
}

impl LogRecord {
    /// Makes every text field fit to store: control characters removed, each cut to its
    /// limit in [`limits`]. Idempotent.
    pub fn sanitise(&mut self) {
        clean_text(&mut self.request_id, limits::REQUEST_ID);
        clean_text(&mut self.namespace, limits::NAMESPACE);
        clean_text(&mut self.public_model, limits::MODEL);
        clean_text(&mut self.upstream_model, limits::MODEL);
        clean_text(&mut self.endpoint, limits::ENDPOINT);
        clean_text(&mut self.upstream_format, limits::ENDPOINT);
        if let Some(code) = &mut self.error_code {
            clean_text(code, limits::ERROR_CODE);
        }
        if let Some(message) = &mut self.error_message {
            clean_text(message, limits::ERROR_MESSAGE);
        }
        if let Some(ip) = &mut self.client_ip {
            clean_text(ip, limits::CLIENT_IP);
        }
    }

    /// Roughly the bytes this record holds (its text fields plus a fixed part): what a
    /// buffer bounded in bytes counts.
    pub fn approx_size(&self) -> usize {
        // Field names, numbers and JSON punctuation of the wire form.
        const FIXED: usize = 400;
        FIXED
            + self.request_id.len()
            + self.namespace.len()
            + self.public_model.len()
            + self.upstream_model.len()
            + self.endpoint.len()
            + self.upstream_format.len()
            + self.error_code.as_ref().map_or(0, String::len)
            + self.error_message.as_ref().map_or(0, String::len)
            + self.client_ip.as_ref().map_or(0, String::len)
    }
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialUsage {
    pub api_key_id: i64,
    pub requests: i64,
    pub success_requests: i64,
    /// Unix second of the newest attempt on the credential in this report; 0 = none.
    #[serde(default)]
    pub last_used_at: i64,
    /// The newest failed attempt's cause, as the gateway words it (e.g. `upstream 401:
    /// authentication_error`, `connection refused`; never upstream text), at most
    /// [`limits::LAST_ERROR`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The newest usage window the upstream announced for the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<QuotaWindow>,
}

/// A usage window an upstream announced for a credential (Anthropic's unified rate-limit
/// headers, Codex's usage-limit headers, a Gemini `RESOURCE_EXHAUSTED` with retry info):
/// routing state, never a ban. While `cooling_until` is in the future the credential is
/// skipped; it comes back by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaWindow {
    /// The provider's name of the window (`5h`, `7d`, `primary`, `secondary`,
    /// `per_minute`, …), at most [`limits::WINDOW_NAME`] bytes.
    pub name: String,
    /// Percent of the window used (0–100), when the provider says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_percent: Option<f64>,
    /// Unix second the window resets, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<i64>,
    /// Unix second until which the credential is skipped (the window is exhausted);
    /// absent while it has room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooling_until: Option<i64>,
    /// Unix second the balancer saw it.
    pub observed_at: i64,
}

/// `POST /internal/apikey-stats/flush`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// `POST /internal/apikeys/{id}/refresh`: a balancer met a 401 with a subscription
/// credential's access token and asks for a new one now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// [`token_fingerprint`] of the access token the upstream refused: when the stored
    /// token is another one, somebody refreshed it already and it is used as is.
    pub token_fingerprint: String,
}

/// What a refresh asked for by a balancer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RefreshOutcome {
    /// A new access token is stored and synced: retry with it.
    Refreshed,
    /// The stored token is not the one refused (refreshed meanwhile): retry with it.
    Current,
    /// The refresh token is revoked: the credential is disabled.
    Revoked,
    /// The token endpoint failed, or another refresh held the credential too long.
    Failed,
    /// The credential has no refresh token, or is not of a subscription type, or token
    /// refresh is disabled on the control plane.
    NotRefreshable,
}

impl RefreshOutcome {
    /// Whether the credential may now hold a token other than the refused one.
    pub fn renewed(self) -> bool {
        matches!(self, RefreshOutcome::Refreshed | RefreshOutcome::Current)
    }
}

/// `POST /internal/apikeys/{id}/refresh`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshAnswer {
    pub outcome: RefreshOutcome,
}

/// Names an access token without revealing it: the first 16 hex digits of its SHA-256.
pub fn token_fingerprint(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(token.as_bytes());
    hex::encode(&digest[..8])
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
    /// Asks the control plane to refresh credential `id`'s access token now (single
    /// flight across control planes); answers once the outcome is stored and synced.
    async fn refresh(&self, id: i64, request: &RefreshRequest) -> Result<RefreshOutcome, ReportError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitising_removes_control_characters_and_cuts_on_char_boundaries() {
        let mut record = LogRecord {
            request_id: "id\u{0}\r\n-1".into(),
            namespace: "é".repeat(100),
            public_model: "gpt\u{0}-4o\u{7f}\u{85}".into(),
            error_message: Some("x".repeat(5_000)),
            client_ip: Some("10.0.0.1".into()),
            ..LogRecord::default()
        };
        record.sanitise();
        assert_eq!(record.request_id, "id-1");
        assert_eq!(record.public_model, "gpt-4o");
        // 2-byte characters: 128 bytes is 64 of them.
        assert_eq!(record.namespace, "é".repeat(64));
        assert_eq!(
            record.error_message.as_deref().map(str::len),
            Some(limits::ERROR_MESSAGE)
        );
        assert_eq!(record.client_ip.as_deref(), Some("10.0.0.1"));
        let again = record.clone();
        record.sanitise();
        assert_eq!(record, again);
    }

    #[test]
    fn records_of_a_newer_balancer_are_read() {
        let record: LogRecord = serde_json::from_value(serde_json::json!({
            "request_id": "r", "master_id": 1, "key_id": 2, "namespace": "default",
            "public_model": "m", "endpoint": "/v1/chat/completions", "status_code": 200,
            "latency_ms": 3, "stream": false, "created_at": 4, "a_field_of_tomorrow": true
        }))
        .expect("unknown fields are ignored");
        assert_eq!((record.key_id, record.status_code), (2, 200));
    }

    #[test]
    fn a_clean_copy_reads_no_further_than_its_limit() {
        let huge = "n".repeat(400_000);
        assert_eq!(clean_copy(&huge, limits::NAMESPACE).len(), limits::NAMESPACE);
        assert_eq!(clean_copy("ab\u{0}c", 10), "abc");
        assert_eq!(clean_copy("ééé", 5), "éé");
    }
}
