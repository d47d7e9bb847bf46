//! Everything a balancer reports, off the request path (SPEC §6 step 9): a request ends
//! by handing its outcome to [`Reporter::record`] (a short lock, no I/O); a background
//! task ships, every interval, the realtime counters to the bus and the log records,
//! usage totals and bans to the control plane. The log buffer is bounded in records and
//! in bytes: when the control plane is away longer than it holds, the oldest records are
//! dropped and counted (`ezapi_balancer_log_records_dropped_total`). Whatever could not
//! be delivered is kept for the next round; what the control plane refuses as malformed
//! is isolated and dropped alone (`delivery`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ez_bus::{BusWrite, ConfigBus};
use ez_contract::bus_keys::{self, KeyCounter, MasterCounter};
use ez_contract::report::{
    CredentialBan, CredentialUsage, CredentialUsageBatch, KeyUsage, KeyUsageBatch, LogBatch, LogRecord,
    MAX_BATCH_ITEMS, QuotaWindow, ReportError, ReportSink,
};
use ez_contract::time::now_unix;
use tokio::sync::watch;

use tokio::task::JoinHandle;

use crate::delivery::{self, Delivery};
use crate::snapshot::TokenKey;

/// Log records per delivery.
const LOG_BATCH: usize = 1_000;
/// Bytes of log records (as [`LogRecord::approx_size`] counts them) per delivery: well
/// below any control plane's body limit (`server.max_body_bytes`, 10 MiB by default).
const LOG_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// The byte bound of [`Reporter::new`]'s buffer.
pub const DEFAULT_BUFFER_BYTES: usize = 64 * 1024 * 1024;

/// The end of one request, as the reporter needs it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub record: LogRecord,
    /// The child key's digest (for `key:stats:*` and the key's usage totals); hex-encoded
    /// only when shipped.
    pub token_hash: TokenKey,
}

#[derive(Debug, Default, Clone, Copy)]
struct KeyTotals {
    requests: i64,
    tokens: i64,
    last_access: i64,
}

#[derive(Debug, Default, Clone, Copy)]
struct MasterTotals {
    requests: i64,
    tokens: i64,
    /// Refused by the rate limit.
    blocked: i64,
    /// Requests in the newest rate window, as counted on the bus (limited masters).
    window_count: i64,
    limit: i64,
}

#[derive(Debug, Default, Clone)]
struct CredentialTotals {
    requests: i64,
    success: i64,
    /// Unix second of the newest attempt.
    last_used: i64,
    /// The newest failed attempt's cause (the gateway's words).
    last_error: Option<String>,
    /// The newest usage window the upstream announced.
    window: Option<QuotaWindow>,
}

impl CredentialTotals {
    /// Adds `newer`'s counts; its newest facts win.
    fn absorb(&mut self, newer: CredentialTotals) {
        self.requests += newer.requests;
        self.success += newer.success;
        self.last_used = self.last_used.max(newer.last_used);
        if newer.last_error.is_some() {
            self.last_error = newer.last_error;
        }
        if newer.window.is_some() {
            self.window = newer.window;
        }
    }
}

/// Log records waiting for delivery, bounded in records and bytes (oldest dropped).
#[derive(Default)]
struct LogBuffer {
    records: VecDeque<(LogRecord, usize)>,
    bytes: usize,
}

impl LogBuffer {
    fn push_back(&mut self, record: LogRecord) {
        let size = record.approx_size();
        self.bytes += size;
        self.records.push_back((record, size));
    }

    /// Puts records that could not be delivered back in front, in their order.
    fn push_front_all(&mut self, records: Vec<LogRecord>) {
        for record in records.into_iter().rev() {
            let size = record.approx_size();
            self.bytes += size;
            self.records.push_front((record, size));
        }
    }

    /// Up to `max_records` records and about `max_bytes`, oldest first.
    fn take(&mut self, max_records: usize, max_bytes: usize) -> Vec<LogRecord> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < max_records
            && let Some((_, size)) = self.records.front()
        {
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            let Some((record, size)) = self.records.pop_front() else {
                break;
            };
            bytes += size;
            self.bytes -= size;
            out.push(record);
        }
        out
    }

    /// Drops the oldest records until both bounds hold; returns how many went.
    fn trim(&mut self, max_records: usize, max_bytes: usize) -> u64 {
        let mut dropped = 0;
        while self.records.len() > max_records || (self.bytes > max_bytes && self.records.len() > 1) {
            let Some((_, size)) = self.records.pop_front() else {
                break;
            };
            self.bytes -= size;
            dropped += 1;
        }
        dropped
    }
}

#[derive(Default)]
struct Pending {
    logs: LogBuffer,
    keys: HashMap<TokenKey, KeyTotals>,
    credentials: HashMap<i64, CredentialTotals>,
    bans: Vec<CredentialBan>,
}

impl Pending {
    fn merge_back(
        &mut self,
        keys: HashMap<TokenKey, KeyTotals>,
        credentials: HashMap<i64, CredentialTotals>,
    ) {
        for (hash, t) in keys {
            let e = self.keys.entry(hash).or_default();
            e.requests += t.requests;
            e.tokens += t.tokens;
            e.last_access = e.last_access.max(t.last_access);
        }
        for (id, older) in credentials {
            // What was kept is older than what came meanwhile.
            let e = self.credentials.entry(id).or_default();
            let newer = std::mem::replace(e, older);
            e.absorb(newer);
        }
    }
}

pub struct Reporter {
    pending: Mutex<Pending>,
    /// Bus counters not yet written (kept apart: the bus and the CP fail separately).
    counters: Mutex<(HashMap<TokenKey, KeyTotals>, HashMap<i64, MasterTotals>)>,
    capacity: usize,
    capacity_bytes: usize,
    dropped: AtomicU64,
    refused: AtomicU64,
    sink: Arc<dyn ReportSink>,
    bus: Arc<dyn ConfigBus>,
}

impl Reporter {
    /// A reporter holding at most `capacity` log records (and [`DEFAULT_BUFFER_BYTES`]).
    pub fn new(sink: Arc<dyn ReportSink>, bus: Arc<dyn ConfigBus>, capacity: usize) -> Arc<Reporter> {
        Reporter::bounded(sink, bus, capacity, DEFAULT_BUFFER_BYTES)
    }

    /// A reporter holding at most `capacity` log records and `capacity_bytes` of them.
    pub fn bounded(
        sink: Arc<dyn ReportSink>,
        bus: Arc<dyn ConfigBus>,
        capacity: usize,
        capacity_bytes: usize,
    ) -> Arc<Reporter> {
        Arc::new(Reporter {
            pending: Mutex::new(Pending::default()),
            counters: Mutex::new(Default::default()),
            capacity: capacity.max(1),
            capacity_bytes: capacity_bytes.max(1),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            sink,
            bus,
        })
    }

    /// Where reports go: the control plane.
    pub fn sink(&self) -> &Arc<dyn ReportSink> {
        &self.sink
    }

    /// Report items the control plane refused as malformed (dropped one by one).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Bytes of log records waiting for delivery (as [`LogRecord::approx_size`] counts).
    pub fn buffered_bytes(&self) -> usize {
        self.lock().logs.bytes
    }

    fn count_dropped(&self, n: u64) {
        if n > 0 {
            self.dropped.fetch_add(n, Ordering::Relaxed);
            metrics::counter!(crate::metrics::LOG_RECORDS_DROPPED).increment(n);
        }
    }

    fn count_refused(&self, what: &'static str, n: usize) {
        if n > 0 {
            self.refused.fetch_add(n as u64, Ordering::Relaxed);
            metrics::counter!(crate::metrics::REPORT_ITEMS_REFUSED, "report" => what).increment(n as u64);
        }
    }

    /// Log records dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Log records waiting for delivery.
    pub fn buffered(&self) -> usize {
        self.lock().logs.records.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the outcome of one request. Never blocks on I/O.
    pub fn record(&self, outcome: Outcome) {
        let r = &outcome.record;
        let tokens = r.input_tokens + r.output_tokens;
        {
            let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
            let key = counters.0.entry(outcome.token_hash).or_default();
            key.requests += 1;
            key.tokens += tokens;
            key.last_access = key.last_access.max(r.created_at);
            let master = counters.1.entry(r.master_id).or_default();
            master.requests += 1;
            master.tokens += tokens;
        }
        let mut pending = self.lock();
        let key = pending.keys.entry(outcome.token_hash).or_default();
        key.requests += 1;
        key.tokens += tokens;
        key.last_access = key.last_access.max(r.created_at);
        if let Some(id) = r.api_key_id {
            let credential = pending.credentials.entry(id).or_default();
            credential.requests += 1;
            credential.last_used = credential.last_used.max(r.created_at);
            if r.status_code < 400 && r.error_code.is_none() {
                credential.success += 1;
            }
        }
        pending.logs.push_back(outcome.record);
        let dropped = pending.logs.trim(self.capacity, self.capacity_bytes);
        drop(pending);
        self.count_dropped(dropped);
    }

    /// What the rate limiter saw for a master: the shared window's count, the limit, and
    /// whether this request was refused.
    pub fn note_rate(&self, master_id: i64, window_count: i64, limit: i64, blocked: bool) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let master = counters.1.entry(master_id).or_default();
        master.window_count = master.window_count.max(window_count);
        master.limit = limit;
        if blocked {
            master.blocked += 1;
        }
    }

    /// A credential tried for a request that then went to another one: it failed, for
    /// `why` (the gateway's words: a cause class, never upstream text).
    pub fn note_failed_attempt(&self, credential_id: i64, why: &str) {
        let mut pending = self.lock();
        let credential = pending.credentials.entry(credential_id).or_default();
        credential.requests += 1;
        credential.last_used = credential.last_used.max(now_unix());
        let mut why = why.to_owned();
        ez_contract::report::clean_text(&mut why, ez_contract::report::limits::LAST_ERROR);
        if !why.is_empty() {
            credential.last_error = Some(why);
        }
    }

    /// The newest usage window `credential_id`'s upstream announced.
    pub fn note_window(&self, credential_id: i64, window: QuotaWindow) {
        self.lock().credentials.entry(credential_id).or_default().window = Some(window);
    }

    /// Queues a ban for the control plane (which persists it and syncs every balancer).
    pub fn ban(&self, ban: CredentialBan) {
        self.lock().bans.push(ban);
    }

    /// Runs [`Reporter::flush`] every `every` until `stop`, then once more.
    ///
    /// The bus counters and the control plane's reports run as two loops, so a control
    /// plane that hangs does not freeze the realtime counters (and a bus outage does not
    /// hold back logs).
    pub fn spawn(self: &Arc<Self>, every: Duration, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let counters = {
            let reporter = self.clone();
            let mut stop = stop.clone();
            async move {
                loop {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        () = tokio::time::sleep(every) => {}
                    }
                    reporter.flush_counters(every).await;
                }
                reporter.flush_counters(every).await;
            }
        };
        let reports = {
            let reporter = self.clone();
            let mut stop = stop;
            async move {
                loop {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        () = tokio::time::sleep(every) => {}
                    }
                    reporter.flush_reports().await;
                }
                reporter.flush_reports().await;
            }
        };
        tokio::spawn(async move {
            tokio::join!(counters, reports);
        })
    }

    /// One delivery round: counters to the bus, then bans, usage and logs to the CP.
    pub async fn flush(&self, interval: Duration) {
        self.flush_counters(interval).await;
        self.flush_reports().await;
    }

    async fn flush_counters(&self, interval: Duration) {
        let (keys, masters) = {
            let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut *counters)
        };
        if keys.is_empty() && masters.is_empty() {
            return;
        }
        let now = now_unix();
        let secs = interval.as_secs_f64().max(0.001);
        let mut writes = Vec::with_capacity(keys.len() * 3 + masters.len() * 3);
        for (hash, t) in &keys {
            let hash = hex::encode(hash);
            writes.push(BusWrite::IncrBy {
                key: bus_keys::key_stats(&hash, KeyCounter::Requests),
                by: t.requests,
            });
            writes.push(BusWrite::IncrBy {
                key: bus_keys::key_stats(&hash, KeyCounter::Tokens),
                by: t.tokens,
            });
            writes.push(BusWrite::SetValue {
                key: bus_keys::key_stats(&hash, KeyCounter::LastAccess),
                value: t.last_access.to_string(),
            });
        }
        for (id, t) in &masters {
            if t.requests > 0 || t.tokens > 0 {
                writes.push(BusWrite::IncrBy {
                    key: bus_keys::master_stats(*id, MasterCounter::Requests),
                    by: t.requests,
                });
                writes.push(BusWrite::IncrBy {
                    key: bus_keys::master_stats(*id, MasterCounter::Tokens),
                    by: t.tokens,
                });
            }
            // Limited masters: the shared window's count is the qps of all balancers;
            // otherwise this balancer's own rate over the interval.
            let qps = if t.limit > 0 {
                t.window_count
            } else {
                (t.requests as f64 / secs).round() as i64
            };
            writes.push(BusWrite::SetFields {
                key: bus_keys::master_rate(*id),
                fields: vec![
                    ("qps".into(), qps.to_string()),
                    ("limit".into(), t.limit.to_string()),
                    ("updated_at".into(), now.to_string()),
                ],
            });
            // Refusals of every balancer add up.
            if t.blocked > 0 {
                writes.push(BusWrite::IncrField {
                    key: bus_keys::master_rate(*id),
                    field: "blocked".into(),
                    by: t.blocked,
                });
            }
        }
        if let Err(e) = self.bus.apply(writes).await {
            tracing::warn!(error = %e, "realtime counters not written; keeping them for the next round");
            let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
            for (hash, t) in keys {
                let e = counters.0.entry(hash).or_default();
                e.requests += t.requests;
                e.tokens += t.tokens;
                e.last_access = e.last_access.max(t.last_access);
            }
            for (id, t) in masters {
                let e = counters.1.entry(id).or_default();
                e.requests += t.requests;
                e.tokens += t.tokens;
                e.blocked += t.blocked;
                e.window_count = e.window_count.max(t.window_count);
                e.limit = t.limit;
            }
        }
    }

    async fn flush_reports(&self) {
        self.deliver_reports().await;
        metrics::gauge!(crate::metrics::LOG_BUFFER).set(self.buffered() as f64);
    }

    async fn deliver_reports(&self) {
        let (bans, keys, credentials) = {
            let mut pending = self.lock();
            (
                std::mem::take(&mut pending.bans),
                std::mem::take(&mut pending.keys),
                std::mem::take(&mut pending.credentials),
            )
        };
        let mut unavailable = false;
        let mut kept_bans = Vec::new();
        for ban in bans {
            if unavailable {
                kept_bans.push(ban);
                continue;
            }
            match self.sink.ban(&ban).await {
                Ok(()) => {}
                Err(ReportError::Rejected(reason)) => {
                    self.count_refused("ban", 1);
                    tracing::warn!(credential = ban.api_key_id, %reason, "the control plane refused a ban");
                }
                Err(e @ ReportError::Unavailable(_)) => {
                    note_failure(&e);
                    unavailable = true;
                    kept_bans.push(ban);
                }
            }
        }
        let mut keys_back = HashMap::new();
        if !keys.is_empty() {
            if unavailable {
                keys_back = keys;
            } else {
                let pieces = delivery::pieces(keys.into_iter().collect(), MAX_BATCH_ITEMS, usize::MAX, |_| 0);
                let outcome = delivery::deliver(pieces, |piece: Vec<(TokenKey, KeyTotals)>| async move {
                    let batch = KeyUsageBatch {
                        items: piece.iter().map(key_usage).collect(),
                    };
                    self.sink.key_usage(&batch).await.map_err(|e| (e, piece))
                })
                .await;
                if let Some(rest) = self.settle("key_usage", outcome) {
                    unavailable = true;
                    keys_back = rest.into_iter().collect();
                }
            }
        }
        let mut credentials_back = HashMap::new();
        if !credentials.is_empty() {
            if unavailable {
                credentials_back = credentials;
            } else {
                let pieces = delivery::pieces(
                    credentials.into_iter().collect(),
                    MAX_BATCH_ITEMS,
                    usize::MAX,
                    |_| 0,
                );
                let outcome = delivery::deliver(pieces, |piece: Vec<(i64, CredentialTotals)>| async move {
                    let batch = CredentialUsageBatch {
                        items: piece.iter().map(credential_usage).collect(),
                    };
                    self.sink.credential_usage(&batch).await.map_err(|e| (e, piece))
                })
                .await;
                if let Some(rest) = self.settle("credential_usage", outcome) {
                    unavailable = true;
                    credentials_back = rest.into_iter().collect();
                }
            }
        }
        {
            let mut pending = self.lock();
            kept_bans.append(&mut pending.bans);
            pending.bans = kept_bans;
            pending.merge_back(keys_back, credentials_back);
        }
        while !unavailable {
            let batch = self.lock().logs.take(LOG_BATCH, LOG_BATCH_BYTES);
            if batch.is_empty() {
                break;
            }
            let pieces = VecDeque::from([batch]);
            let outcome = delivery::deliver(pieces, |items: Vec<LogRecord>| async move {
                let batch = LogBatch { items };
                self.sink.logs(&batch).await.map_err(|e| (e, batch.items))
            })
            .await;
            if let Some(rest) = self.settle("logs", outcome) {
                unavailable = true;
                let mut pending = self.lock();
                pending.logs.push_front_all(rest);
                let dropped = pending.logs.trim(self.capacity, self.capacity_bytes);
                drop(pending);
                self.count_dropped(dropped);
            }
        }
    }

    /// Counts what a delivery had refused; returns what is left to send again when the
    /// control plane became unavailable.
    fn settle<T>(&self, what: &'static str, outcome: Delivery<T>) -> Option<Vec<T>> {
        self.count_refused(what, outcome.refused);
        let (e, rest) = outcome.unavailable?;
        note_failure(&e);
        Some(rest)
    }
}

fn key_usage((hash, t): &(TokenKey, KeyTotals)) -> KeyUsage {
    KeyUsage {
        token_hash: hex::encode(hash),
        requests: t.requests,
        tokens: t.tokens,
        last_accessed_at: t.last_access,
    }
}

fn credential_usage((id, t): &(i64, CredentialTotals)) -> CredentialUsage {
    CredentialUsage {
        api_key_id: *id,
        requests: t.requests,
        success_requests: t.success,
        last_used_at: t.last_used,
        last_error: t.last_error.clone(),
        window: t.window.clone(),
    }
}

fn note_failure(e: &ReportError) {
    metrics::counter!(crate::metrics::REPORT_FAILURES).increment(1);
    tracing::warn!(error = %e, "report not delivered");
}
