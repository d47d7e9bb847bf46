//! Checking and storing what balancers report. A log record is repaired where it can be
//! (control characters out, text cut to its limit) and dropped — counted, never failing
//! its batch — where it cannot; usage totals, credential health and bans are taken whole
//! or refused.

use ez_contract::report::{
    CredentialBan, CredentialUsage, CredentialUsageBatch, KeyUsageBatch, LogBatch, LogRecord, limits,
};
use ez_contract::time::now_unix;

use super::log_writer::WriteRefused;
use crate::state::AppState;
use crate::store::{BanOutcome, StoreError};
use crate::sync::RoutingChange;

/// Records or items one internal request may carry.
pub const MAX_BATCH_ITEMS: usize = 10_000;
/// Largest count one report item may carry (a balancer reports about a second of
/// traffic); totals far below `i64::MAX` can never overflow.
const MAX_REPORTED_COUNT: i64 = 1_000_000_000_000;
/// Longest ban a balancer may ask for.
const MAX_BAN_SECS: i64 = 30 * 86_400;
/// Longest reason of a ban.
const MAX_BAN_REASON: usize = 300;
/// Longest cooling a usage window may announce: the longest windows last a week (the
/// balancer caps coolings there by its own clock), plus a day for a balancer clock ahead
/// of this one.
const MAX_COOLING_SECS: i64 = 8 * 86_400;

/// Why a report was not taken. [`IngestError::is_retryable`] tells the sender whether
/// the same report may succeed later; `crate::error` maps it to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A field breaks its rules: the report is wrong and stays wrong.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("this credential does not allow automatic bans")]
    AutoBanDisabled,
    /// Too many log records are being written now.
    #[error("too many log records are being written; retry later")]
    Busy,
    /// The database refused a value of the report: it would refuse it again.
    #[error("the database refused the report: {0}")]
    Refused(#[source] StoreError),
    /// The database cannot take anything now (down, unreachable, overloaded).
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] StoreError),
}

impl IngestError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> IngestError {
        IngestError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// Whether sending the same report again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, IngestError::Busy | IngestError::Unavailable(_))
    }

    fn from_store(state: &AppState, err: StoreError) -> IngestError {
        match err {
            StoreError::NotFound(what) => IngestError::NotFound(what),
            e if e.is_refused_value(state.store.kind()) => IngestError::Refused(e),
            e => IngestError::Unavailable(e),
        }
    }
}

/// What became of a log batch: every record is stored or rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogIngest {
    pub stored: usize,
    pub rejected: usize,
}

/// Why a log record was dropped: the label of `ezapi_log_records_rejected_total`
/// (a fixed set, so the metric stays small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    /// `status_code` outside 100–599.
    InvalidStatus,
    /// A count, duration or time below zero.
    NegativeValue,
    /// The database refused a value that got past the checks.
    DatabaseRefused,
}

impl Rejection {
    const ALL: [Rejection; 3] = [
        Rejection::InvalidStatus,
        Rejection::NegativeValue,
        Rejection::DatabaseRefused,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejection::InvalidStatus => "invalid_status",
            Rejection::NegativeValue => "negative_value",
            Rejection::DatabaseRefused => "database_refused",
        }
    }
}

/// What cannot be repaired in a record (after [`LogRecord::sanitise`]).
fn check_record(record: &LogRecord) -> Result<(), Rejection> {
    if !(100..=599).contains(&record.status_code) {
        return Err(Rejection::InvalidStatus);
    }
    let values = [
        record.latency_ms,
        record.first_token_ms.unwrap_or(0),
        record.input_tokens,
        record.output_tokens,
        record.created_at,
    ];
    if values.iter().any(|v| *v < 0) {
        return Err(Rejection::NegativeValue);
    }
    Ok(())
}

fn check_batch_size(len: usize) -> Result<(), IngestError> {
    if len > MAX_BATCH_ITEMS {
        return Err(IngestError::invalid(
            "items",
            format!("at most {MAX_BATCH_ITEMS} per request"),
        ));
    }
    Ok(())
}

/// `POST /internal/logs`: repairs every record, drops (and counts) those that cannot be
/// stored, stores the rest. Only a failure of the database as a whole refuses the batch
/// (retryable); a defect of single records never does.
pub async fn ingest_logs(state: &AppState, batch: LogBatch) -> Result<LogIngest, IngestError> {
    check_batch_size(batch.items.len())?;
    let mut rejected = [0usize; Rejection::ALL.len()];
    let mut records = Vec::with_capacity(batch.items.len());
    for mut record in batch.items {
        record.sanitise();
        match check_record(&record) {
            Ok(()) => records.push(record),
            Err(why) => rejected[why as usize] += 1,
        }
    }
    let outcome = match state.log_writer.write(&records).await {
        Ok(outcome) => outcome,
        Err(WriteRefused::Busy) => return Err(IngestError::Busy),
        Err(WriteRefused::Database(e)) => return Err(IngestError::from_store(state, e)),
    };
    rejected[Rejection::DatabaseRefused as usize] += outcome.refused;
    let total_rejected: usize = rejected.iter().sum();
    if total_rejected > 0 {
        for why in Rejection::ALL {
            let n = rejected[why as usize];
            if n > 0 {
                metrics::counter!(crate::metrics::LOG_RECORDS_REJECTED, "reason" => why.label())
                    .increment(n as u64);
            }
        }
        // Counts only: a record's content may carry what a client typed.
        tracing::warn!(
            stored = outcome.stored,
            rejected = total_rejected,
            invalid_status = rejected[Rejection::InvalidStatus as usize],
            negative_value = rejected[Rejection::NegativeValue as usize],
            database_refused = rejected[Rejection::DatabaseRefused as usize],
            "log records dropped: they cannot be stored"
        );
    }
    Ok(LogIngest {
        stored: outcome.stored,
        rejected: total_rejected,
    })
}

/// `POST /internal/stats/flush`.
pub async fn ingest_key_usage(state: &AppState, batch: KeyUsageBatch) -> Result<u64, IngestError> {
    check_batch_size(batch.items.len())?;
    for item in &batch.items {
        if item.token_hash.len() != 64 || !item.token_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IngestError::invalid("token_hash", "must be a SHA-256 hex digest"));
        }
        if !(0..=MAX_REPORTED_COUNT).contains(&item.requests)
            || !(0..=MAX_REPORTED_COUNT).contains(&item.tokens)
            || item.last_accessed_at < 0
        {
            return Err(IngestError::invalid(
                "items",
                format!("counts must be between 0 and {MAX_REPORTED_COUNT}"),
            ));
        }
    }
    state
        .store
        .add_key_usage(&batch.items)
        .await
        .map_err(|e| IngestError::from_store(state, e))
}

/// `POST /internal/apikey-stats/flush`: adds the counts, keeps each credential's newest
/// use, failure and usage window, and syncs the credentials whose cooling started, moved
/// or ended (only those: a report that changes no cooling writes nothing to the bus).
pub async fn ingest_credential_usage(
    state: &AppState,
    mut batch: CredentialUsageBatch,
) -> Result<u64, IngestError> {
    check_batch_size(batch.items.len())?;
    let now = now_unix();
    for item in &mut batch.items {
        check_credential_usage(item, now)?;
        // A balancer whose clock runs ahead must not pin these in the future: a later
        // report could never move them again.
        item.last_used_at = item.last_used_at.min(now);
        if let Some(window) = &mut item.window {
            window.observed_at = window.observed_at.min(now);
        }
    }
    let outcome = state
        .store
        .add_credential_usage(&batch.items, now)
        .await
        .map_err(|e| IngestError::from_store(state, e))?;
    if !outcome.cooling_changed.is_empty() {
        tracing::info!(credentials = ?outcome.cooling_changed, "credential cooling changed; syncing");
        state
            .sync
            .routing_changed(RoutingChange {
                credentials: outcome.cooling_changed,
                ..Default::default()
            })
            .await;
    }
    Ok(outcome.updated)
}

/// A credential report is taken whole or refused: counts within bounds, texts as stored
/// (no repair: they are short and made by the gateway, so a bad one is a bug to see).
fn check_credential_usage(item: &CredentialUsage, now: i64) -> Result<(), IngestError> {
    if !(0..=MAX_REPORTED_COUNT).contains(&item.requests)
        || item.success_requests < 0
        || item.success_requests > item.requests
    {
        return Err(IngestError::invalid(
            "items",
            format!("counts must be between 0 and {MAX_REPORTED_COUNT}, and success_requests ≤ requests"),
        ));
    }
    if item.last_used_at < 0 {
        return Err(IngestError::invalid("last_used_at", "Unix seconds; 0 = none"));
    }
    if let Some(error) = &item.last_error {
        check_text("last_error", error, limits::LAST_ERROR)?;
    }
    let Some(window) = &item.window else {
        return Ok(());
    };
    check_text("window.name", &window.name, limits::WINDOW_NAME)?;
    // Also false for NaN and the infinities.
    if window.used_percent.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
        return Err(IngestError::invalid(
            "window.used_percent",
            "must be between 0 and 100",
        ));
    }
    let times = [
        window.resets_at.unwrap_or(0),
        window.cooling_until.unwrap_or(0),
        window.observed_at,
    ];
    if times.iter().any(|t| *t < 0) {
        return Err(IngestError::invalid("window", "times are Unix seconds"));
    }
    if window.cooling_until.is_some_and(|t| t > now + MAX_COOLING_SECS) {
        return Err(IngestError::invalid(
            "window.cooling_until",
            "at most 8 days ahead",
        ));
    }
    Ok(())
}

/// A reported text: present means non-empty, at most `max` bytes, no control characters.
fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), IngestError> {
    if value.is_empty() {
        return Err(IngestError::invalid(field, "must not be empty; leave it out"));
    }
    if value.len() > max {
        return Err(IngestError::invalid(field, format!("longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(IngestError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// `POST /internal/apikey-bans`: persists the ban and syncs the credential to every
/// balancer.
pub async fn ban_credential(state: &AppState, ban: CredentialBan) -> Result<(), IngestError> {
    if ban.reason.len() > MAX_BAN_REASON {
        return Err(IngestError::invalid(
            "reason",
            format!("longer than {MAX_BAN_REASON} bytes"),
        ));
    }
    if ban.reason.chars().any(char::is_control) {
        return Err(IngestError::invalid(
            "reason",
            "must not contain control characters",
        ));
    }
    let now = now_unix();
    if ban.ban_until <= now || ban.ban_until > now + MAX_BAN_SECS {
        return Err(IngestError::invalid(
            "ban_until",
            "must be in the future, at most 30 days ahead",
        ));
    }
    let outcome = state
        .store
        .ban_credential(ban.api_key_id, ban.ban_until, &ban.reason)
        .await
        .map_err(|e| IngestError::from_store(state, e))?;
    match outcome {
        BanOutcome::NotAllowed => Err(IngestError::AutoBanDisabled),
        BanOutcome::Banned { .. } => {
            tracing::warn!(
                credential = ban.api_key_id,
                until = ban.ban_until,
                reason = %ban.reason,
                "credential auto-banned by a balancer"
            );
            state
                .sync
                .routing_changed(RoutingChange {
                    credentials: vec![ban.api_key_id],
                    ..Default::default()
                })
                .await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LogRecord {
        LogRecord {
            status_code: 200,
            ..LogRecord::default()
        }
    }

    #[test]
    fn only_what_cannot_be_repaired_is_rejected() {
        assert_eq!(check_record(&record()), Ok(()));
        for status in [0, 99, 600, 999] {
            let r = LogRecord {
                status_code: status,
                ..record()
            };
            assert_eq!(check_record(&r), Err(Rejection::InvalidStatus), "{status}");
        }
        let negatives = [
            LogRecord {
                latency_ms: -1,
                ..record()
            },
            LogRecord {
                first_token_ms: Some(-1),
                ..record()
            },
            LogRecord {
                input_tokens: -1,
                ..record()
            },
            LogRecord {
                output_tokens: -1,
                ..record()
            },
            LogRecord {
                created_at: -1,
                ..record()
            },
        ];
        for r in negatives {
            assert_eq!(check_record(&r), Err(Rejection::NegativeValue), "{r:?}");
        }
        // Text of any length or content is repaired by sanitising, not rejected.
        let mut long = LogRecord {
            public_model: format!("m\u{0}{}", "x".repeat(5_000)),
            ..record()
        };
        long.sanitise();
        assert_eq!(check_record(&long), Ok(()));
        assert_eq!(long.public_model.len(), limits::MODEL);
    }

    #[test]
    fn retryable_is_only_what_time_can_fix() {
        assert!(IngestError::Busy.is_retryable());
        assert!(IngestError::Unavailable(StoreError::Database(sqlx::Error::PoolTimedOut)).is_retryable());
        assert!(!IngestError::invalid("items", "too many").is_retryable());
        assert!(!IngestError::NotFound("api key").is_retryable());
        assert!(!IngestError::AutoBanDisabled.is_retryable());
        assert!(!IngestError::Refused(StoreError::Corrupt("x".into())).is_retryable());
    }
}
