//! The log writer: stores the log batches balancers send, bounded in how many records it
//! writes at once; and the retention job that deletes old records.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ez_contract::report::LogRecord;
use ez_contract::time::now_unix;

use crate::scheduler::Job;
use crate::store::{LogInsert, Store, StoreError};

/// Writes the log batches balancers send. A batch is stored — in one transaction, in
/// statements of `rows_per_statement` rows — before `/internal/logs` answers, so a
/// control plane that crashes right after has lost nothing (the balancer still holds what
/// it was not told is stored). The queue of SPEC §9 is the balancer's bounded report
/// buffer; here at most `capacity` records are being written at once, and a batch beyond
/// is refused whole with 503 so its sender keeps it and retries.
pub struct LogWriter {
    store: Store,
    capacity: usize,
    rows_per_statement: usize,
    in_flight: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteRefused {
    /// Too many records are being written now.
    #[error("too many log records are being written")]
    Busy,
    /// The database did not take them (it is down, busy or unreachable).
    #[error(transparent)]
    Database(#[from] StoreError),
}

impl LogWriter {
    pub fn new(store: Store, capacity: usize, rows_per_statement: usize) -> LogWriter {
        LogWriter {
            store,
            capacity,
            rows_per_statement: rows_per_statement.max(1),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Stores `records`; a record the database refuses is dropped and counted in the
    /// outcome, never failing the others.
    pub async fn write(&self, records: &[LogRecord]) -> Result<LogInsert, WriteRefused> {
        let n = records.len();
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (current + n <= self.capacity).then_some(current + n)
            })
            .is_ok();
        if !admitted {
            metrics::counter!(crate::metrics::LOG_BATCHES_REFUSED).increment(1);
            return Err(WriteRefused::Busy);
        }
        let result = self.store.insert_logs(records, self.rows_per_statement).await;
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
        let outcome = result?;
        metrics::counter!(crate::metrics::LOG_RECORDS_WRITTEN).increment(outcome.stored as u64);
        Ok(outcome)
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
