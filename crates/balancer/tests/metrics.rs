//! `/metrics` as an operator alerts on it: every family named `ezapi_…` and described,
//! the list of families pinned (a rename must be deliberate: dashboards and alerts use
//! the names), and the per-upstream-group families counting what the traffic did —
//! answers, a failover after an upstream 500, a ban, an unreachable upstream.
//!
//! One test: the recorder is process-wide, and the pinned list is compared with what
//! this process exposes.

mod support;

use std::collections::BTreeSet;

use ez_control_plane::testing::Backend;
use serde_json::json;
use support::Gateway;

/// Every metric family of the process (control plane, listener, middleware, balancer).
const FAMILIES: [&str; 26] = [
    "ezapi_balancer_log_buffer",
    "ezapi_balancer_log_records_dropped_total",
    "ezapi_balancer_rate_limit_local_total",
    "ezapi_balancer_report_failures_total",
    "ezapi_balancer_report_items_refused_total",
    "ezapi_bus_rebuilds_total",
    "ezapi_bus_sync_failures_total",
    "ezapi_http_accept_errors_total",
    "ezapi_http_connections_open",
    "ezapi_http_connections_refused_total",
    "ezapi_http_connections_timed_out_total",
    "ezapi_http_request_duration_seconds",
    "ezapi_http_requests_total",
    "ezapi_job_runs_total",
    "ezapi_log_batches_refused_total",
    "ezapi_log_records_rejected_total",
    "ezapi_token_refreshes_total",
    "ezapi_health_probes_total",
    "ezapi_log_records_written_total",
    "ezapi_upstream_bans_total",
    "ezapi_upstream_errors_total",
    "ezapi_upstream_failovers_total",
    "ezapi_upstream_first_byte_seconds",
    "ezapi_upstream_input_tokens_total",
    "ezapi_upstream_output_tokens_total",
    "ezapi_upstream_requests_total",
];

/// The value of the sample `name{labels…}` (labels as the exporter writes them, in
/// registration order); 0 when there is none.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// `(family, type)` of every `# TYPE` line.
fn families(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect()
}

#[test]
fn the_declared_families_are_pinned() {
    let declared: BTreeSet<&str> = ez_balancer::metrics::FAMILIES
        .into_iter()
        .chain(ez_control_plane::metrics::FAMILIES)
        .collect();
    let pinned: BTreeSet<&str> = FAMILIES.into_iter().collect();
    assert_eq!(
        declared, pinned,
        "a metric family was added, removed or renamed: update docs/metrics.md and this list"
    );
    assert_eq!(declared.len(), FAMILIES.len(), "each family is declared once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_groups_are_counted_and_every_family_is_described() {
    let gw = Gateway::start(Backend::Embedded).await;
    gw.add_route("m-good", &gw.upstream, &[("sk-upstream-mgood", 1)], "good", 1)
        .await;
    // The 500 is tried first almost surely; how often it was is read from the mock.
    gw.add_route(
        "m-fo",
        &gw.upstream,
        &[("sk-upstream-mdead", 100), ("sk-upstream-fogood", 1)],
        "failover",
        1,
    )
    .await;
    gw.add_route("m-ban", &gw.upstream, &[("sk-upstream-mdeny", 1)], "banned", 1)
        .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_base = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    gw.add_route(
        "m-closed",
        &closed_base,
        &[("sk-upstream-mclosed", 1)],
        "closed",
        1,
    )
    .await;
    let t = gw.add_tenant("acme", json!({}), json!({})).await;

    for _ in 0..2 {
        assert_eq!(gw.chat(&t.key, "good", false).await.0, 200);
    }
    for _ in 0..3 {
        assert_eq!(gw.chat(&t.key, "failover", false).await.0, 200);
    }
    assert_eq!(gw.chat(&t.key, "banned", false).await.0, 502);
    assert_eq!(gw.chat(&t.key, "closed", false).await.0, 502);
    let dead_tries = gw.mock.hits("sk-upstream-mdead") as f64;
    assert!(dead_tries >= 1.0, "the 500 was tried");

    let (status, _, text) = gw.call(reqwest::Method::GET, "/metrics", "", None).await;
    assert_eq!(status, 200);
    let value = |name: &str, labels: &str| sample(&text, name, labels);
    let requests = "ezapi_upstream_requests_total";
    assert_eq!(
        value(requests, r#"group="m-good",status_class="2xx""#),
        2.0,
        "{text}"
    );
    assert_eq!(value(requests, r#"group="m-good",status_class="5xx""#), 0.0);
    assert_eq!(value(requests, r#"group="m-fo",status_class="2xx""#), 3.0);
    assert_eq!(value(requests, r#"group="m-fo",status_class="5xx""#), dead_tries);
    assert_eq!(value(requests, r#"group="m-ban",status_class="4xx""#), 1.0);
    assert_eq!(value(requests, r#"group="m-closed",status_class="error""#), 1.0);
    let errors = "ezapi_upstream_errors_total";
    assert_eq!(
        value(errors, r#"group="m-closed",cause="connection_refused""#),
        1.0
    );
    assert_eq!(value(errors, r#"group="m-fo",cause="connection_refused""#), 0.0);
    let failovers = "ezapi_upstream_failovers_total";
    assert_eq!(value(failovers, r#"group="m-fo""#), dead_tries);
    assert_eq!(value(failovers, r#"group="m-ban""#), 0.0, "nothing else to try");
    assert_eq!(value(failovers, r#"group="m-good""#), 0.0);
    assert_eq!(value("ezapi_upstream_bans_total", r#"group="m-ban""#), 1.0);
    assert_eq!(value("ezapi_upstream_bans_total", r#"group="m-fo""#), 0.0);
    // The mock's non-streamed answers use 3 input and 2 output tokens.
    assert_eq!(
        value("ezapi_upstream_input_tokens_total", r#"group="m-good""#),
        6.0
    );
    assert_eq!(
        value("ezapi_upstream_output_tokens_total", r#"group="m-fo""#),
        6.0
    );
    assert_eq!(
        value("ezapi_upstream_first_byte_seconds_count", r#"group="m-fo""#),
        3.0 + dead_tries
    );
    assert!(
        text.contains(r#"ezapi_upstream_first_byte_seconds_bucket{group="m-good",le="300"} 2"#),
        "upstream latencies have buckets up to minutes:\n{text}"
    );

    let exposed = families(&text);
    for (family, kind) in [
        ("ezapi_upstream_requests_total", "counter"),
        ("ezapi_upstream_errors_total", "counter"),
        ("ezapi_upstream_first_byte_seconds", "histogram"),
        ("ezapi_upstream_input_tokens_total", "counter"),
        ("ezapi_upstream_output_tokens_total", "counter"),
        ("ezapi_upstream_failovers_total", "counter"),
        ("ezapi_upstream_bans_total", "counter"),
        ("ezapi_http_requests_total", "counter"),
    ] {
        assert!(
            exposed.contains(&(family, kind)),
            "# TYPE {family} {kind}:\n{text}"
        );
    }
    for (family, _) in &exposed {
        assert!(
            family.starts_with("ezapi_"),
            "{family}: every family is named ezapi_…"
        );
        assert!(FAMILIES.contains(family), "{family} is not declared");
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has no description"
        );
    }
    // Client-chosen names never become labels.
    for client_text in ["\"good\"", "\"failover\"", "acme"] {
        assert!(!text.contains(client_text), "{client_text} in:\n{text}");
    }
}
