//! Everything a balancer reports, off the request path (SPEC §6 step 9): a request ends
//! by handing its outcome to [`Reporter::record`] (a short lock, no I/O); a background
//! task ships, every interval, the realtime counters to the bus and the log records,
//! usage totals and bans to the control plane. The log buffer is bounded: when the
//! control plane is away longer than it holds, the oldest records are dropped and
//! counted (`ezapi_balancer_log_records_dropped_total`). Whatever could not be delivered
//! is kept for the next round.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ez_bus::{BusWrite, ConfigBus};
use ez_contract::bus_keys::{self, KeyCounter, MasterCounter};
use ez_contract::report::{
    CredentialBan, CredentialUsage, CredentialUsageBatch, KeyUsage, KeyUsageBatch, LogBatch, LogRecord,
    ReportError, ReportSink,
};
use ez_contract::time::now_unix;
use tokio::sync::watch;

use crate::snapshot::TokenKey;
use tokio::task::JoinHandle;

/// Log records per delivery.
const LOG_BATCH: usize = 1_000;

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

#[derive(Debug, Default, Clone, Copy)]
struct CredentialTotals {
    requests: i64,
    success: i64,
}

#[derive(Default)]
struct Pending {
    logs: VecDeque<LogRecord>,
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
        for (id, t) in credentials {
            let e = self.credentials.entry(id).or_default();
            e.requests += t.requests;
            e.success += t.success;
        }
    }
}

pub struct Reporter {
    pending: Mutex<Pending>,
    /// Bus counters not yet written (kept apart: the bus and the CP fail separately).
    counters: Mutex<(HashMap<TokenKey, KeyTotals>, HashMap<i64, MasterTotals>)>,
    capacity: usize,
    dropped: AtomicU64,
    sink: Arc<dyn ReportSink>,
    bus: Arc<dyn ConfigBus>,
}

impl Reporter {
    pub fn new(sink: Arc<dyn ReportSink>, bus: Arc<dyn ConfigBus>, capacity: usize) -> Arc<Reporter> {
        Arc::new(Reporter {
            pending: Mutex::new(Pending::default()),
            counters: Mutex::new(Default::default()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            sink,
            bus,
        })
    }

    /// Log records dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Log records waiting for delivery.
    pub fn buffered(&self) -> usize {
        self.lock().logs.len()
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
            if r.status_code < 400 && r.error_code.is_none() {
                credential.success += 1;
            }
        }
        if pending.logs.len() >= self.capacity {
            pending.logs.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ezapi_balancer_log_records_dropped_total").increment(1);
        }
        pending.logs.push_back(outcome.record);
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

    /// A credential tried for a request that then went to another one (it failed).
    pub fn note_failed_attempt(&self, credential_id: i64) {
        self.lock().credentials.entry(credential_id).or_default().requests += 1;
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
        metrics::gauge!("ezapi_balancer_log_buffer").set(self.buffered() as f64);
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
                    tracing::warn!(credential = ban.api_key_id, %reason, "the control plane refused a ban");
                }
                Err(e @ ReportError::Unavailable(_)) => {
                    note_failure(&e);
                    unavailable = true;
                    kept_bans.push(ban);
                }
            }
        }
        let key_batch = KeyUsageBatch {
            items: keys
                .iter()
                .map(|(hash, t)| KeyUsage {
                    token_hash: hex::encode(hash),
                    requests: t.requests,
                    tokens: t.tokens,
                    last_accessed_at: t.last_access,
                })
                .collect(),
        };
        let credential_batch = CredentialUsageBatch {
            items: credentials
                .iter()
                .map(|(id, t)| CredentialUsage {
                    api_key_id: *id,
                    requests: t.requests,
                    success_requests: t.success,
                })
                .collect(),
        };
        let mut keys_back = HashMap::new();
        let mut credentials_back = HashMap::new();
        if !key_batch.items.is_empty() {
            if unavailable {
                keys_back = keys;
            } else if let Err(e) = self.sink.key_usage(&key_batch).await {
                note_failure(&e);
                if matches!(e, ReportError::Unavailable(_)) {
                    unavailable = true;
                    keys_back = keys;
                }
            }
        }
        if !credential_batch.items.is_empty() {
            if unavailable {
                credentials_back = credentials;
            } else if let Err(e) = self.sink.credential_usage(&credential_batch).await {
                note_failure(&e);
                if matches!(e, ReportError::Unavailable(_)) {
                    unavailable = true;
                    credentials_back = credentials;
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
            let batch: Vec<LogRecord> = {
                let mut pending = self.lock();
                let n = pending.logs.len().min(LOG_BATCH);
                pending.logs.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            let batch = LogBatch { items: batch };
            match self.sink.logs(&batch).await {
                Ok(()) => {}
                Err(e @ ReportError::Rejected(_)) => {
                    // A batch the CP refuses as malformed would be refused forever.
                    note_failure(&e);
                    self.dropped
                        .fetch_add(batch.items.len() as u64, Ordering::Relaxed);
                    metrics::counter!("ezapi_balancer_log_records_dropped_total")
                        .increment(batch.items.len() as u64);
                }
                Err(e @ ReportError::Unavailable(_)) => {
                    note_failure(&e);
                    unavailable = true;
                    let mut pending = self.lock();
                    for record in batch.items.into_iter().rev() {
                        pending.logs.push_front(record);
                    }
                    while pending.logs.len() > self.capacity {
                        pending.logs.pop_front();
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("ezapi_balancer_log_records_dropped_total").increment(1);
                    }
                }
            }
        }
    }
}

fn note_failure(e: &ReportError) {
    metrics::counter!("ezapi_balancer_report_failures_total").increment(1);
    tracing::warn!(error = %e, "report not delivered");
}
