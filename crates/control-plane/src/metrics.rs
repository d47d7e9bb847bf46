//! The control plane's metric families (documented in `docs/metrics.md`) — its own and
//! those of the HTTP listener and middleware, which `ezapi balancer` serves with too —
//! and their descriptions. Every family is named `ezapi_…`.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub const HTTP_REQUESTS: &str = "ezapi_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "ezapi_http_request_duration_seconds";
pub const HTTP_CONNECTIONS_OPEN: &str = "ezapi_http_connections_open";
pub const HTTP_CONNECTIONS_REFUSED: &str = "ezapi_http_connections_refused_total";
pub const HTTP_CONNECTIONS_TIMED_OUT: &str = "ezapi_http_connections_timed_out_total";
pub const HTTP_ACCEPT_ERRORS: &str = "ezapi_http_accept_errors_total";
pub const BUS_SYNC_FAILURES: &str = "ezapi_bus_sync_failures_total";
pub const BUS_REBUILDS: &str = "ezapi_bus_rebuilds_total";
pub const JOB_RUNS: &str = "ezapi_job_runs_total";
pub const LOG_BATCHES_REFUSED: &str = "ezapi_log_batches_refused_total";
pub const LOG_RECORDS_WRITTEN: &str = "ezapi_log_records_written_total";
pub const LOG_RECORDS_REJECTED: &str = "ezapi_log_records_rejected_total";
pub const TOKEN_REFRESHES: &str = "ezapi_token_refreshes_total";
pub const HEALTH_PROBES: &str = "ezapi_health_probes_total";

/// Every family the control plane, its listener and its middleware expose. A test pins
/// this list: renaming a family breaks operators' dashboards and alerts, so it must be
/// deliberate.
pub const FAMILIES: [&str; 14] = [
    HTTP_REQUESTS,
    HTTP_REQUEST_DURATION,
    HTTP_CONNECTIONS_OPEN,
    HTTP_CONNECTIONS_REFUSED,
    HTTP_CONNECTIONS_TIMED_OUT,
    HTTP_ACCEPT_ERRORS,
    BUS_SYNC_FAILURES,
    BUS_REBUILDS,
    JOB_RUNS,
    LOG_BATCHES_REFUSED,
    LOG_RECORDS_WRITTEN,
    LOG_RECORDS_REJECTED,
    TOKEN_REFRESHES,
    HEALTH_PROBES,
];

/// Registers the description (`# HELP`) of every family with the installed recorder
/// (done by `middleware::install_recorder`). Idempotent.
pub fn describe() {
    describe_counter!(
        HEALTH_PROBES,
        "Active probes of disabled or banned credentials (a group's health_check), by outcome (recovered, failed, skipped)"
    );
    describe_counter!(
        TOKEN_REFRESHES,
        "Subscription credentials' token refreshes, by provider and outcome (refreshed, skipped, revoked, failed)"
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, matched route and status"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request (to the response head; a streamed body may go on), by method, matched route and status"
    );
    describe_gauge!(HTTP_CONNECTIONS_OPEN, "Client connections open, by listener");
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "Client connections closed at once because server.max_connections were open, by listener"
    );
    describe_counter!(
        HTTP_CONNECTIONS_TIMED_OUT,
        "Client connections closed because they waited too long, by listener and what they were waiting for"
    );
    describe_counter!(
        HTTP_ACCEPT_ERRORS,
        "Errors accepting a connection (out of file descriptors or memory), by listener"
    );
    describe_counter!(
        BUS_SYNC_FAILURES,
        "Config bus writes that failed (the change waits in the sync outbox)"
    );
    describe_counter!(
        BUS_REBUILDS,
        "Full rebuilds of a config bus that lost its data or missed changes"
    );
    describe_counter!(
        JOB_RUNS,
        "Runs of the control plane's periodic jobs, by job and outcome (ok, error, panic, cancelled)"
    );
    describe_counter!(
        LOG_BATCHES_REFUSED,
        "Log batches refused because the log writer's queue was full (the balancer sends them again)"
    );
    describe_counter!(LOG_RECORDS_WRITTEN, "Log records stored");
    describe_counter!(
        LOG_RECORDS_REJECTED,
        "Log records dropped as unstorable, by reason"
    );
}
