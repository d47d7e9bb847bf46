//! Usage reported by balancers (SPEC §5 "Internal", §9): log records checked, repaired and
//! stored in batches by the log writer, usage totals of keys and credentials, credential
//! health (last use and failure, usage windows and their cooling) as the API shows it and
//! summed up in the stats summary, credential bans, and the realtime counters balancers
//! keep on the bus.
//!
//! Every report is checked here ([`ingest`]); what went wrong is an [`IngestError`] that
//! says whether sending the same report again can help. It becomes an HTTP answer in
//! `crate::error` and a [`ez_contract::report::ReportError`] in [`in_process`].

pub mod apikey_stats;
pub mod credential_health;
mod in_process;
mod ingest;
mod log_writer;
mod realtime;

pub use in_process::InProcessReports;
pub use ingest::{
    IngestError, LogIngest, MAX_BATCH_ITEMS, ban_credential, ingest_credential_usage, ingest_key_usage,
    ingest_logs,
};
pub use log_writer::{LogRetention, LogWriter, WriteRefused};
pub use realtime::{RealtimeStats, SystemRealtime, master_realtime, system_realtime};
