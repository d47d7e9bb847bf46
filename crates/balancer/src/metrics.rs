//! The balancer's metric families (documented in `docs/metrics.md`): their names, their
//! descriptions, and the per-upstream-group handles the request path counts with.
//!
//! Labels are bounded by the operator's configuration — the provider group's name, a
//! status class, a failure cause — never by what clients send (model names), nor by
//! keys or tenants. The handles of each group are registered once, when the snapshot's
//! routing part loads ([`GroupMetrics::for_groups`]); a request only increments atomics.
//! Handles taken before a recorder is installed count nothing, so a process installs
//! its recorder before it loads the first snapshot (the routing part is reloaded, and
//! the handles taken again, on every reconcile interval anyway).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ez_contract::routing::ProviderSnapshot;
use metrics::{Counter, Histogram, Unit, describe_counter, describe_gauge, describe_histogram};

use crate::upstream_failure::FailureCause;

pub const LOG_RECORDS_DROPPED: &str = "ezapi_balancer_log_records_dropped_total";
pub const REPORT_ITEMS_REFUSED: &str = "ezapi_balancer_report_items_refused_total";
pub const REPORT_FAILURES: &str = "ezapi_balancer_report_failures_total";
pub const LOG_BUFFER: &str = "ezapi_balancer_log_buffer";
pub const RATE_LIMIT_LOCAL: &str = "ezapi_balancer_rate_limit_local_total";
pub const UPSTREAM_REQUESTS: &str = "ezapi_upstream_requests_total";
pub const UPSTREAM_ERRORS: &str = "ezapi_upstream_errors_total";
pub const UPSTREAM_FIRST_BYTE: &str = "ezapi_upstream_first_byte_seconds";
pub const UPSTREAM_INPUT_TOKENS: &str = "ezapi_upstream_input_tokens_total";
pub const UPSTREAM_OUTPUT_TOKENS: &str = "ezapi_upstream_output_tokens_total";
pub const UPSTREAM_FAILOVERS: &str = "ezapi_upstream_failovers_total";
pub const UPSTREAM_BANS: &str = "ezapi_upstream_bans_total";

/// Every family the balancer exposes. A test pins this list: renaming a family breaks
/// operators' dashboards and alerts, so it must be deliberate.
pub const FAMILIES: [&str; 12] = [
    LOG_RECORDS_DROPPED,
    REPORT_ITEMS_REFUSED,
    REPORT_FAILURES,
    LOG_BUFFER,
    RATE_LIMIT_LOCAL,
    UPSTREAM_REQUESTS,
    UPSTREAM_ERRORS,
    UPSTREAM_FIRST_BYTE,
    UPSTREAM_INPUT_TOKENS,
    UPSTREAM_OUTPUT_TOKENS,
    UPSTREAM_FAILOVERS,
    UPSTREAM_BANS,
];

/// Registers the description (`# HELP`) of every family with the installed recorder.
/// Idempotent; call it after the recorder is installed.
pub fn describe() {
    describe_counter!(
        LOG_RECORDS_DROPPED,
        "Log records dropped because the report buffer was full"
    );
    describe_counter!(
        REPORT_ITEMS_REFUSED,
        "Report items the control plane refused as malformed, by report (logs, key_usage, credential_usage, ban)"
    );
    describe_counter!(
        REPORT_FAILURES,
        "Report deliveries to the control plane that failed (retried later)"
    );
    describe_gauge!(
        LOG_BUFFER,
        "Log records waiting for delivery to the control plane"
    );
    describe_counter!(
        RATE_LIMIT_LOCAL,
        "Rate-limit checks counted by this balancer alone because the bus could not count them"
    );
    describe_counter!(
        UPSTREAM_REQUESTS,
        "Requests sent to upstreams (each failover attempt counts), by provider group and outcome: status_class 2xx, 3xx, 4xx, 5xx, or error when no HTTP answer came"
    );
    describe_counter!(
        UPSTREAM_ERRORS,
        "Upstream requests that got no HTTP answer, by provider group and cause"
    );
    describe_histogram!(
        UPSTREAM_FIRST_BYTE,
        Unit::Seconds,
        "Time from sending a request to an upstream (connecting included) to its response headers, by provider group"
    );
    describe_counter!(
        UPSTREAM_INPUT_TOKENS,
        "Input (prompt) tokens of answered requests, by provider group"
    );
    describe_counter!(
        UPSTREAM_OUTPUT_TOKENS,
        "Output (completion) tokens of answered requests, by provider group"
    );
    describe_counter!(
        UPSTREAM_FAILOVERS,
        "Failed upstream attempts after which another credential was tried, by the failed credential's provider group"
    );
    describe_counter!(
        UPSTREAM_BANS,
        "Credentials this balancer banned after an upstream refusal, by provider group"
    );
}

/// The outcome classes of `ezapi_upstream_requests_total`, in the order of
/// [`GroupMetrics::requests`].
const STATUS_CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];
const NO_ANSWER: usize = 4;

/// The counters of one provider group, registered once per snapshot load.
pub struct GroupMetrics {
    /// By [`STATUS_CLASSES`].
    requests: [Counter; STATUS_CLASSES.len()],
    /// By [`FailureCause::ALL`].
    errors: [Counter; FailureCause::ALL.len()],
    first_byte: Histogram,
    input_tokens: Counter,
    output_tokens: Counter,
    failovers: Counter,
    bans: Counter,
}

impl std::fmt::Debug for GroupMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupMetrics")
    }
}

impl GroupMetrics {
    /// Registers the handles of the group labelled `group`.
    pub fn register(group: &str) -> GroupMetrics {
        let group = group.to_owned();
        let label = |name: &'static str| metrics::counter!(name, "group" => group.clone());
        GroupMetrics {
            requests: STATUS_CLASSES.map(|class| {
                metrics::counter!(UPSTREAM_REQUESTS, "group" => group.clone(), "status_class" => class)
            }),
            errors: FailureCause::ALL.map(|cause| {
                metrics::counter!(UPSTREAM_ERRORS, "group" => group.clone(), "cause" => cause.label())
            }),
            first_byte: metrics::histogram!(UPSTREAM_FIRST_BYTE, "group" => group.clone()),
            input_tokens: label(UPSTREAM_INPUT_TOKENS),
            output_tokens: label(UPSTREAM_OUTPUT_TOKENS),
            failovers: label(UPSTREAM_FAILOVERS),
            bans: label(UPSTREAM_BANS),
        }
    }

    /// The handles of every provider group the credentials of `providers` belong to,
    /// by group id.
    pub fn for_groups(providers: &HashMap<i64, ProviderSnapshot>) -> HashMap<i64, Arc<GroupMetrics>> {
        let mut groups = HashMap::new();
        for provider in providers.values() {
            groups
                .entry(provider.group_id)
                .or_insert_with(|| Arc::new(GroupMetrics::register(group_name(provider))));
        }
        groups
    }

    /// The upstream answered with `status` after `elapsed`.
    pub fn answered(&self, status: u16, elapsed: Duration) {
        let class = match status {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            500..=599 => 3,
            _ => NO_ANSWER,
        };
        self.requests[class].increment(1);
        self.first_byte.record(elapsed.as_secs_f64());
    }

    /// The upstream gave no HTTP answer.
    pub fn failed(&self, cause: FailureCause) {
        self.requests[NO_ANSWER].increment(1);
        self.errors[cause as usize].increment(1);
    }

    /// Another credential is tried after a failed attempt on this group.
    pub fn failed_over(&self) {
        self.failovers.increment(1);
    }

    pub fn banned(&self) {
        self.bans.increment(1);
    }

    /// The usage of an answered request (negative counts, which no upstream sends, are
    /// not counted).
    pub fn tokens(&self, input: i64, output: i64) {
        self.input_tokens.increment(u64::try_from(input).unwrap_or(0));
        self.output_tokens.increment(u64::try_from(output).unwrap_or(0));
    }
}

/// The name of the provider group `provider` belongs to: its snapshot name is
/// `{group name}#{credential id}`; group names are unique.
pub fn group_name(provider: &ProviderSnapshot) -> &str {
    provider
        .name
        .rsplit_once('#')
        .map_or(provider.name.as_str(), |(group, _)| group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_is_named_by_the_credentials_snapshot_name() {
        let mut provider: ProviderSnapshot = serde_json::from_value(serde_json::json!({
            "id": 7, "name": "azure#eu#7", "type": "azure", "base_url": "", "api_key": "",
            "google_project": "", "google_location": "", "group_id": 3, "group": "default",
            "models": [], "status": "active", "auto_ban": true, "weight": 1, "ban_until": 0,
            "ban_reason": "", "access_token": "", "refresh_token": "", "expires_at": 0,
            "account_id": "", "project_id": "", "static_headers": {}, "headers_profile": ""
        }))
        .unwrap();
        assert_eq!(group_name(&provider), "azure#eu");
        provider.name = "plain".into();
        assert_eq!(group_name(&provider), "plain");
    }

    #[test]
    fn failure_causes_index_their_counters() {
        for (i, cause) in FailureCause::ALL.into_iter().enumerate() {
            assert_eq!(cause as usize, i, "{cause:?}");
        }
    }
}
