//! Usage reported by balancers (SPEC §5 "Internal", §9): log records queued and stored in
//! batches by the log writer, usage totals of keys and credentials, credential bans, and
//! the realtime counters balancers keep on the bus.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ez_contract::bus_keys::{self, MasterCounter};
use ez_contract::report::{
    CredentialBan, CredentialUsageBatch, KeyUsageBatch, LogBatch, LogRecord, ReportError, ReportSink,
};
use ez_contract::time::now_unix;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::scheduler::Job;
use crate::state::AppState;
use crate::store::{BanOutcome, Store};
use crate::sync::RoutingChange;

/// Longest error message kept in a log record.
const MAX_ERROR_MESSAGE: usize = 1_000;
/// Longest free-text field otherwise (ids, model names, endpoints, addresses).
const MAX_TEXT: usize = 300;
/// Records or items one internal request may carry.
pub const MAX_BATCH_ITEMS: usize = 10_000;
/// Largest count one report item may carry (a balancer reports about a second of
/// traffic); totals far below `i64::MAX` can never overflow.
const MAX_REPORTED_COUNT: i64 = 1_000_000_000_000;
/// A rate entry older than this is stale: nobody is sending.
const RATE_FRESH_SECS: i64 = 5;

/// Writes the log batches balancers send. A batch is stored — in one transaction, in
/// statements of `batch_size` rows — before `/internal/logs` answers, so a control plane
/// that crashes right after has lost nothing (the balancer still holds what it was not
/// told is stored). The queue of SPEC §9 is the balancer's bounded report buffer; here
/// at most `capacity` records are being written at once, and a batch beyond is refused
/// whole with 503 so its sender keeps it and retries.
pub struct LogWriter {
    store: Store,
    capacity: usize,
    batch_size: usize,
    in_flight: AtomicUsize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum WriteRefused {
    /// Too many records are being written now.
    Busy,
    /// The database did not take them.
    Database(String),
}

impl LogWriter {
    pub fn new(store: Store, capacity: usize, batch_size: usize) -> LogWriter {
        LogWriter {
            store,
            capacity,
            batch_size: batch_size.max(1),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Stores all of `records`, or none of them.
    pub async fn write(&self, records: &[LogRecord]) -> Result<(), WriteRefused> {
        let n = records.len();
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (current + n <= self.capacity).then_some(current + n)
            })
            .is_ok();
        if !admitted {
            metrics::counter!("ezapi_log_batches_refused_total").increment(1);
            return Err(WriteRefused::Busy);
        }
        let result = self.store.insert_logs(records, self.batch_size).await;
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
        match result {
            Ok(()) => {
                metrics::counter!("ezapi_log_records_written_total").increment(n as u64);
                Ok(())
            }
            Err(e) => Err(WriteRefused::Database(e.to_string())),
        }
    }
}

/// Scheduler job: deletes log records older than the retention period.
pub struct LogRetention {
    pub store: Store,
    pub days: i64,
}

#[async_trait]
impl Job for LogRetention {
    fn name(&self) -> &'static str {
        "log_retention"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(3600)
    }

    async fn run_once(&self) -> anyhow::Result<()> {
        if self.days > 0 {
            let removed = self
                .store
                .delete_logs_before(now_unix() - self.days * 86_400)
                .await?;
            if removed > 0 {
                tracing::info!(removed, "old log records deleted");
            }
        }
        Ok(())
    }
}

fn check_len(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.len() > max {
        return Err(ApiError::invalid_field(field, format!("longer than {max} bytes")));
    }
    Ok(())
}

fn check_batch_size(len: usize) -> ApiResult<()> {
    if len > MAX_BATCH_ITEMS {
        return Err(ApiError::invalid_field(
            "items",
            format!("at most {MAX_BATCH_ITEMS} per request"),
        ));
    }
    Ok(())
}

fn check_record(record: &mut LogRecord) -> ApiResult<()> {
    for (field, value) in [
        ("request_id", &record.request_id),
        ("namespace", &record.namespace),
        ("public_model", &record.public_model),
        ("upstream_model", &record.upstream_model),
        ("endpoint", &record.endpoint),
    ] {
        check_len(field, value, MAX_TEXT)?;
    }
    for (field, value) in [
        ("error_code", &record.error_code),
        ("client_ip", &record.client_ip),
    ] {
        if let Some(value) = value {
            check_len(field, value, MAX_TEXT)?;
        }
    }
    if !(100..=599).contains(&record.status_code) {
        return Err(ApiError::invalid_field("status_code", "must be an HTTP status"));
    }
    let counts = [
        ("latency_ms", record.latency_ms),
        ("first_token_ms", record.first_token_ms.unwrap_or(0)),
        ("input_tokens", record.input_tokens),
        ("output_tokens", record.output_tokens),
        ("created_at", record.created_at),
    ];
    for (field, value) in counts {
        if value < 0 {
            return Err(ApiError::invalid_field(field, "must not be negative"));
        }
    }
    // A long upstream message is cut, not refused: the record matters more.
    if let Some(message) = &mut record.error_message
        && message.len() > MAX_ERROR_MESSAGE
    {
        let mut end = MAX_ERROR_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    Ok(())
}

/// `POST /internal/logs`: validates the whole batch, then stores it (or refuses it whole
/// with 503, so the balancer keeps it and retries).
pub async fn ingest_logs(state: &AppState, batch: LogBatch) -> ApiResult<usize> {
    check_batch_size(batch.items.len())?;
    let mut records = batch.items;
    for record in &mut records {
        check_record(record)?;
    }
    match state.log_writer.write(&records).await {
        Ok(()) => Ok(records.len()),
        Err(WriteRefused::Busy) => Err(ApiError::unavailable(
            "log_writer_busy",
            "too many log records are being written; retry later",
        )),
        Err(WriteRefused::Database(e)) => {
            tracing::error!(error = %e, "log records could not be stored");
            Err(ApiError::unavailable(
                "log_store_unavailable",
                "log records cannot be stored now; retry later",
            ))
        }
    }
}

/// `POST /internal/stats/flush`.
pub async fn ingest_key_usage(state: &AppState, batch: KeyUsageBatch) -> ApiResult<u64> {
    check_batch_size(batch.items.len())?;
    for item in &batch.items {
        if item.token_hash.len() != 64 || !item.token_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::invalid_field(
                "token_hash",
                "must be a SHA-256 hex digest",
            ));
        }
        if !(0..=MAX_REPORTED_COUNT).contains(&item.requests)
            || !(0..=MAX_REPORTED_COUNT).contains(&item.tokens)
            || item.last_accessed_at < 0
        {
            return Err(ApiError::invalid_field(
                "items",
                format!("counts must be between 0 and {MAX_REPORTED_COUNT}"),
            ));
        }
    }
    Ok(state.store.add_key_usage(&batch.items).await?)
}

/// `POST /internal/apikey-stats/flush`.
pub async fn ingest_credential_usage(state: &AppState, batch: CredentialUsageBatch) -> ApiResult<u64> {
    check_batch_size(batch.items.len())?;
    for item in &batch.items {
        if !(0..=MAX_REPORTED_COUNT).contains(&item.requests)
            || item.success_requests < 0
            || item.success_requests > item.requests
        {
            return Err(ApiError::invalid_field(
                "items",
                format!("counts must be between 0 and {MAX_REPORTED_COUNT}, and success_requests ≤ requests"),
            ));
        }
    }
    Ok(state.store.add_credential_usage(&batch.items).await?)
}

/// Longest ban a balancer may ask for.
const MAX_BAN_SECS: i64 = 30 * 86_400;

/// `POST /internal/apikey-bans`: persists the ban and syncs the credential to every
/// balancer.
pub async fn ban_credential(state: &AppState, ban: CredentialBan) -> ApiResult<()> {
    check_len("reason", &ban.reason, MAX_TEXT)?;
    let now = now_unix();
    if ban.ban_until <= now || ban.ban_until > now + MAX_BAN_SECS {
        return Err(ApiError::invalid_field(
            "ban_until",
            "must be in the future, at most 30 days ahead",
        ));
    }
    match state
        .store
        .ban_credential(ban.api_key_id, ban.ban_until, &ban.reason)
        .await?
    {
        BanOutcome::NotAllowed => Err(ApiError::conflict(
            "auto_ban_disabled",
            "this credential does not allow automatic bans",
        )),
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

/// The control plane as the report sink of a balancer in the same process (`ezapi
/// serve`): the same validation and storage as the HTTP endpoints, without the network.
pub struct InProcessReports {
    pub state: AppState,
}

fn report_error(e: ApiError) -> ReportError {
    if e.status.is_server_error() {
        ReportError::Unavailable(e.message)
    } else {
        ReportError::Rejected(format!("{}: {}", e.code, e.message))
    }
}

#[async_trait]
impl ReportSink for InProcessReports {
    async fn logs(&self, batch: &LogBatch) -> Result<(), ReportError> {
        ingest_logs(&self.state, batch.clone())
            .await
            .map(|_| ())
            .map_err(report_error)
    }

    async fn key_usage(&self, batch: &KeyUsageBatch) -> Result<(), ReportError> {
        ingest_key_usage(&self.state, batch.clone())
            .await
            .map(|_| ())
            .map_err(report_error)
    }

    async fn credential_usage(&self, batch: &CredentialUsageBatch) -> Result<(), ReportError> {
        ingest_credential_usage(&self.state, batch.clone())
            .await
            .map(|_| ())
            .map_err(report_error)
    }

    async fn ban(&self, ban: &CredentialBan) -> Result<(), ReportError> {
        ban_credential(&self.state, ban.clone())
            .await
            .map_err(report_error)
    }
}

/// Realtime figures of one master, from the counters balancers keep on the bus.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RealtimeStats {
    /// Requests since the counters started.
    pub requests: i64,
    /// Input + output tokens since the counters started.
    pub tokens: i64,
    /// Requests in the most recent second (0 when nothing was sent for a few seconds).
    pub qps: i64,
    /// The master's `global_qps` (0 = unlimited).
    pub limit: i64,
    /// Requests refused by the master's rate limit, by every balancer, since the
    /// counters started.
    pub blocked: i64,
    /// Unix seconds of the newest rate report; 0 when none.
    pub updated_at: i64,
}

/// Realtime figures of the whole system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SystemRealtime {
    pub requests: i64,
    pub tokens: i64,
    pub qps: i64,
    pub blocked: i64,
    /// Masters with traffic in the last few seconds.
    pub active_masters: i64,
    /// Masters that have counters at all.
    pub masters: i64,
}

fn parse_i64(value: Option<&String>) -> i64 {
    value.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A master's realtime stats; a bus that cannot answer is a 503.
pub async fn master_realtime(state: &AppState, master_id: i64) -> ApiResult<RealtimeStats> {
    let bus_error = |e: ez_bus::BusError| {
        tracing::warn!(error = %e, "realtime stats unavailable");
        ApiError::unavailable(
            "bus_unavailable",
            "realtime stats are unavailable: the bus does not answer",
        )
    };
    let counters = state
        .bus
        .get_values(&[
            bus_keys::master_stats(master_id, MasterCounter::Requests),
            bus_keys::master_stats(master_id, MasterCounter::Tokens),
        ])
        .await
        .map_err(bus_error)?;
    let rate = state
        .bus
        .hash_get_all(&bus_keys::master_rate(master_id))
        .await
        .map_err(bus_error)?;
    let updated_at = parse_i64(rate.get("updated_at"));
    let fresh = now_unix() - updated_at <= RATE_FRESH_SECS;
    Ok(RealtimeStats {
        requests: parse_i64(counters[0].as_ref()),
        tokens: parse_i64(counters[1].as_ref()),
        qps: if fresh { parse_i64(rate.get("qps")) } else { 0 },
        limit: parse_i64(rate.get("limit")),
        blocked: parse_i64(rate.get("blocked")),
        updated_at,
    })
}

/// Sums every master's realtime stats.
pub async fn system_realtime(state: &AppState) -> ApiResult<SystemRealtime> {
    let keys = state
        .bus
        .keys_with_prefix(bus_keys::MASTER_STATS_PREFIX)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "realtime stats unavailable");
            ApiError::unavailable(
                "bus_unavailable",
                "realtime stats are unavailable: the bus does not answer",
            )
        })?;
    let mut ids: Vec<i64> = keys
        .iter()
        .filter_map(|k| {
            k.strip_prefix(bus_keys::MASTER_STATS_PREFIX)?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut total = SystemRealtime {
        masters: ids.len() as i64,
        ..SystemRealtime::default()
    };
    for id in ids {
        let stats = master_realtime(state, id).await?;
        total.requests += stats.requests;
        total.tokens += stats.tokens;
        total.qps += stats.qps;
        total.blocked += stats.blocked;
        if stats.qps > 0 {
            total.active_masters += 1;
        }
    }
    Ok(total)
}
